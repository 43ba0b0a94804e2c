//! A script's mail: checked against the limits before anything is written
//! ([`check`]), and built into a MIME message when it is sent ([`build`]).
//! Both are pure.

use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use picloud_lua_sdk::Code;
use picloud_lua_sdk::host::{HostError, OutgoingEmail};
use picloud_storage::email::{EmailAttachment, EmailMessage};
use sha2::{Digest, Sha256};

/// The longest subject, in bytes.
pub const SUBJECT_BYTES_MAX: usize = 998;
/// The longest attachment file name, in bytes.
pub const FILENAME_BYTES_MAX: usize = 255;
/// The most attachments one message may carry.
pub const ATTACHMENTS_MAX: usize = 100;
/// The content type of an attachment that names none.
const OCTET_STREAM: &str = "application/octet-stream";

/// The bounds on one outgoing message, from the node's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmailLimits {
    /// Bodies, attachments and header fields together.
    pub bytes_max: usize,
    /// To, cc and bcc together.
    pub recipients_max: usize,
}

fn invalid(message: impl Into<String>) -> HostError {
    HostError::new(Code::EmailInvalid, message)
}

/// One mailbox (`a@b.c` or `Name <a@b.c>`), with no line break in it (a
/// header injection).
fn mailbox(field: &str, value: &str) -> Result<Mailbox, HostError> {
    if value.contains(['\r', '\n']) {
        return Err(invalid(format!(
            "email.send: {field} contains a line break"
        )));
    }
    value.parse::<Mailbox>().map_err(|error| {
        invalid(format!(
            "email.send: {field} {value:?} is not an address: {error}"
        ))
    })
}

/// Checks the node's `mail_from` setting (at boot).
pub fn check_mail_from(mail_from: &str) -> Result<(), HostError> {
    mailbox("mail_from", mail_from).map(|_| ())
}

fn header_text(field: &str, value: &str, bytes_max: usize) -> Result<(), HostError> {
    if value.contains(['\r', '\n']) {
        return Err(invalid(format!(
            "email.send: {field} contains a line break"
        )));
    }
    if value.len() > bytes_max {
        return Err(invalid(format!(
            "email.send: {field} is {} bytes; at most {bytes_max} are allowed",
            value.len()
        )));
    }
    Ok(())
}

fn domain_of(mailbox: &Mailbox) -> &str {
    mailbox.email.domain()
}

/// Checks a script's mail and turns it into what the log stores. A
/// script's own `from` must be on the domain of the node's `mail_from`
/// (so an app cannot send as anyone); the display name is free.
pub fn check(
    email: OutgoingEmail,
    mail_from: &str,
    limits: EmailLimits,
) -> Result<EmailMessage, HostError> {
    let default_from = mailbox("mail_from", mail_from)?;
    let from = match email.from {
        None => mail_from.to_string(),
        Some(from) => {
            let parsed = mailbox("from", &from)?;
            if !domain_of(&parsed).eq_ignore_ascii_case(domain_of(&default_from)) {
                return Err(invalid(format!(
                    "email.send: from {from:?} must be an address at {} (the node's mail_from domain)",
                    domain_of(&default_from)
                )));
            }
            from
        }
    };
    for (field, list) in [("to", &email.to), ("cc", &email.cc), ("bcc", &email.bcc)] {
        for address in list.iter() {
            mailbox(field, address)?;
        }
    }
    if let Some(reply_to) = &email.reply_to {
        mailbox("reply_to", reply_to)?;
    }
    let recipients = email.to.len() + email.cc.len() + email.bcc.len();
    if recipients == 0 {
        return Err(invalid("email.send: no recipient (to, cc or bcc)"));
    }
    if recipients > limits.recipients_max {
        return Err(HostError::new(
            Code::EmailTooLarge,
            format!(
                "email.send: {recipients} recipients; at most {} are allowed (email_recipients_max)",
                limits.recipients_max
            ),
        ));
    }
    header_text("subject", &email.subject, SUBJECT_BYTES_MAX)?;
    if email.text.is_none() && email.html.is_none() {
        return Err(invalid("email.send: give text, html or both"));
    }
    if email.attachments.len() > ATTACHMENTS_MAX {
        return Err(invalid(format!(
            "email.send: {} attachments; at most {ATTACHMENTS_MAX} are allowed",
            email.attachments.len()
        )));
    }
    let mut attachments = Vec::with_capacity(email.attachments.len());
    for attachment in email.attachments {
        if attachment.filename.is_empty() {
            return Err(invalid("email.send: an attachment has no filename"));
        }
        header_text(
            "attachment filename",
            &attachment.filename,
            FILENAME_BYTES_MAX,
        )?;
        let content_type = attachment
            .content_type
            .unwrap_or_else(|| OCTET_STREAM.to_string());
        if content_type.contains(['\r', '\n']) || ContentType::parse(&content_type).is_err() {
            return Err(invalid(format!(
                "email.send: attachment content_type {content_type:?} is not a media type"
            )));
        }
        attachments.push(EmailAttachment {
            filename: attachment.filename,
            content_type,
            data: attachment.data,
        });
    }
    let message = EmailMessage {
        from,
        to: email.to,
        cc: email.cc,
        bcc: email.bcc,
        reply_to: email.reply_to,
        subject: email.subject,
        text: email.text,
        html: email.html,
        attachments,
    };
    let bytes = message.size_bytes();
    if bytes > limits.bytes_max {
        return Err(HostError::new(
            Code::EmailTooLarge,
            format!(
                "email.send: the message is {bytes} bytes; at most {} are allowed (email_bytes_max)",
                limits.bytes_max
            ),
        ));
    }
    Ok(message)
}

/// The Message-ID of the mail of `delivery_id`: the same for every attempt
/// of one outbox entry, so a receiver recognises a retry.
pub fn message_id(delivery_id: &str, mail_from: &str) -> String {
    let digest = Sha256::digest(delivery_id.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    let domain = mail_from
        .parse::<Mailbox>()
        .map(|mailbox| mailbox.email.domain().to_string())
        .unwrap_or_else(|_| "picloud.invalid".to_string());
    format!("<{}@{domain}>", &hex[..32])
}

/// The MIME message: text and html as `multipart/alternative`, attachments
/// around it in `multipart/mixed`; a lone body is a single part. Bcc
/// recipients are in the envelope only (lettre drops the header).
pub fn build(
    delivery_id: &str,
    message: &EmailMessage,
    mail_from: &str,
) -> Result<Message, HostError> {
    let mut builder = Message::builder()
        .from(mailbox("from", &message.from)?)
        .subject(message.subject.clone())
        .message_id(Some(message_id(delivery_id, mail_from)));
    for to in &message.to {
        builder = builder.to(mailbox("to", to)?);
    }
    for cc in &message.cc {
        builder = builder.cc(mailbox("cc", cc)?);
    }
    for bcc in &message.bcc {
        builder = builder.bcc(mailbox("bcc", bcc)?);
    }
    if let Some(reply_to) = &message.reply_to {
        builder = builder.reply_to(mailbox("reply_to", reply_to)?);
    }
    let body = match (&message.text, &message.html) {
        (Some(text), Some(html)) => Body::Multi(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        )),
        (Some(text), None) => Body::Single(SinglePart::plain(text.clone())),
        (None, Some(html)) => Body::Single(SinglePart::html(html.clone())),
        (None, None) => Body::Single(SinglePart::plain(String::new())),
    };
    let built = if message.attachments.is_empty() {
        match body {
            Body::Multi(multi) => builder.multipart(multi),
            Body::Single(single) => builder.singlepart(single),
        }
    } else {
        let mut mixed = match body {
            Body::Multi(multi) => MultiPart::mixed().multipart(multi),
            Body::Single(single) => MultiPart::mixed().singlepart(single),
        };
        for attachment in &message.attachments {
            let content_type = ContentType::parse(&attachment.content_type)
                .map_err(|_| invalid("an attachment's content type is not a media type"))?;
            mixed = mixed.singlepart(
                Attachment::new(attachment.filename.clone())
                    .body(attachment.data.clone(), content_type),
            );
        }
        builder.multipart(mixed)
    };
    built.map_err(|error| invalid(format!("email.send: {error}")))
}

enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

#[cfg(test)]
mod tests {
    use picloud_lua_sdk::host::OutgoingAttachment;

    use super::*;

    const FROM: &str = "PiCloud <noreply@example.org>";
    const LIMITS: EmailLimits = EmailLimits {
        bytes_max: 1_000,
        recipients_max: 3,
    };

    fn mail() -> OutgoingEmail {
        OutgoingEmail {
            to: vec!["Ann <ann@example.com>".into()],
            subject: "Hello".into(),
            text: Some("hi".into()),
            ..OutgoingEmail::default()
        }
    }

    fn code_of(email: OutgoingEmail) -> Option<Code> {
        check(email, FROM, LIMITS).err().map(|error| error.code)
    }

    #[test]
    fn email_check_table() {
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("u{i}@example.com"))
                .collect::<Vec<_>>()
        };
        let cases: Vec<(&str, OutgoingEmail, Option<Code>)> = vec![
            ("plain", mail(), None),
            (
                "display names",
                OutgoingEmail {
                    cc: vec!["\"B, C\" <b@x.org>".into()],
                    ..mail()
                },
                None,
            ),
            (
                "own from on the domain",
                OutgoingEmail {
                    from: Some("Shop <shop@example.org>".into()),
                    ..mail()
                },
                None,
            ),
            (
                "from on another domain",
                OutgoingEmail {
                    from: Some("ceo@bank.com".into()),
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
            (
                "bad address",
                OutgoingEmail {
                    to: vec!["not an address".into()],
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
            (
                "no recipient",
                OutgoingEmail {
                    to: vec![],
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
            (
                "bcc only",
                OutgoingEmail {
                    to: vec![],
                    bcc: vec!["b@x.org".into()],
                    ..mail()
                },
                None,
            ),
            (
                "header injection in subject",
                OutgoingEmail {
                    subject: "hi\r\nBcc: all@x.org".into(),
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
            (
                "header injection in address",
                OutgoingEmail {
                    to: vec!["a@x.org\nBcc: b@x.org".into()],
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
            (
                "subject too long",
                OutgoingEmail {
                    subject: "s".repeat(SUBJECT_BYTES_MAX + 1),
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
            (
                "no body",
                OutgoingEmail {
                    text: None,
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
            (
                "html only",
                OutgoingEmail {
                    text: None,
                    html: Some("<p>hi</p>".into()),
                    ..mail()
                },
                None,
            ),
            (
                "too many recipients",
                OutgoingEmail {
                    to: many(2),
                    cc: many(2),
                    ..mail()
                },
                Some(Code::EmailTooLarge),
            ),
            (
                "too large",
                OutgoingEmail {
                    text: Some("x".repeat(1_000)),
                    ..mail()
                },
                Some(Code::EmailTooLarge),
            ),
            (
                "attachment without name",
                OutgoingEmail {
                    attachments: vec![OutgoingAttachment {
                        filename: String::new(),
                        content_type: None,
                        data: vec![1],
                    }],
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
            (
                "attachment name too long",
                OutgoingEmail {
                    attachments: vec![OutgoingAttachment {
                        filename: "f".repeat(FILENAME_BYTES_MAX + 1),
                        content_type: None,
                        data: vec![1],
                    }],
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
            (
                "attachment bad type",
                OutgoingEmail {
                    attachments: vec![OutgoingAttachment {
                        filename: "a.bin".into(),
                        content_type: Some("nope".into()),
                        data: vec![1],
                    }],
                    ..mail()
                },
                Some(Code::EmailInvalid),
            ),
        ];
        for (name, email, expected) in cases {
            assert_eq!(code_of(email), expected, "{name}");
        }
        let checked = check(mail(), FROM, LIMITS).expect("valid");
        assert_eq!(checked.from, FROM, "from defaults to mail_from");
    }

    fn built_text(email: OutgoingEmail) -> String {
        let message = check(email, FROM, LIMITS).expect("valid");
        let built = build("shop/7", &message, FROM).expect("build");
        String::from_utf8(built.formatted()).expect("utf-8")
    }

    #[test]
    fn email_mime_structure() {
        let single = built_text(mail());
        assert!(single.contains("Content-Type: text/plain"), "{single}");
        assert!(!single.contains("multipart"), "{single}");
        let both = built_text(OutgoingEmail {
            html: Some("<b>hi</b>".into()),
            ..mail()
        });
        assert!(both.contains("multipart/alternative"), "{both}");
        assert!(!both.contains("multipart/mixed"), "{both}");
        let attached = built_text(OutgoingEmail {
            html: Some("<b>hi</b>".into()),
            bcc: vec!["secret@x.org".into()],
            attachments: vec![OutgoingAttachment {
                filename: "r.pdf".into(),
                content_type: Some("application/pdf".into()),
                data: b"%PDF".to_vec(),
            }],
            ..mail()
        });
        let mixed = attached.find("multipart/mixed").expect("mixed");
        let alternative = attached.find("multipart/alternative").expect("alternative");
        assert!(
            mixed < alternative,
            "the alternative sits inside the mixed part"
        );
        assert!(attached.contains("filename=\"r.pdf\""), "{attached}");
        assert!(!attached.contains("secret@x.org"), "bcc is not a header");
        let id = message_id("shop/7", FROM);
        assert!(
            attached.contains(&format!("Message-ID: {id}")),
            "{attached}"
        );
    }

    #[test]
    fn email_message_id_is_stable_per_delivery() {
        let id = message_id("shop/7", FROM);
        assert_eq!(id, message_id("shop/7", FROM));
        assert_ne!(id, message_id("shop/8", FROM));
        assert!(
            id.ends_with("@example.org>") && id.len() == 1 + 32 + 1 + 11 + 1,
            "{id}"
        );
    }
}
