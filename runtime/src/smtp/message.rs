//! A received message's MIME, parsed with `mail-parser` (never by hand)
//! into what an `email` trigger run sees. Attachments up to
//! [`ATTACHMENT_INLINE_BYTES_MAX`] stay inline; larger ones come back
//! apart ([`Parsed::stored`]) for the listener to store as files of the
//! app before it proposes the message, under [`attachment_path`].

use mail_parser::{MessageParser, MimeHeaders, PartType};
use picloud_storage::inbound_mail::{
    ATTACHMENT_INLINE_BYTES_MAX, AttachmentBody, InboundMessage, MailAttachment,
};
use sha2::{Digest, Sha256};

/// The longest attachment file name kept (a longer one is cut, on a
/// character boundary), in bytes.
const FILENAME_BYTES_MAX: usize = 128;

/// A message ready to propose, and the large attachments to store first.
pub struct Parsed {
    /// Large attachments already reference their path here.
    pub message: InboundMessage,
    /// (path, content type, bytes) of each attachment to store as a file.
    pub stored: Vec<(String, String, Vec<u8>)>,
}

/// Parses `raw`; `None` when it is not a message at all. `envelope_from`
/// stands in for a missing `From`; a missing `Message-ID` is made from
/// the message's hash, so a re-sent copy has the same one.
pub fn parse(raw: &[u8], envelope_from: &str) -> Option<Parsed> {
    let message = MessageParser::default().parse(raw)?;
    let hash = Sha256::digest(raw);
    let message_id = match message.message_id() {
        Some(id) => format!("<{id}>"),
        None => format!("<{}@picloud>", hex(&hash[..16])),
    };
    let addresses = |address: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        address
            .map(|address| {
                address
                    .iter()
                    .filter_map(|addr| addr.address().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let from = addresses(message.from())
        .into_iter()
        .next()
        .unwrap_or_else(|| envelope_from.to_string());
    // mail-parser offers a text part as html (and the reverse) when the
    // other is missing; the event shows only what the sender wrote.
    let body_of = |ids: &[u32], html: bool| {
        let part = message.parts.get(*ids.first()? as usize)?;
        match (&part.body, html) {
            (PartType::Text(text), false) | (PartType::Html(text), true) => Some(text.to_string()),
            _ => None,
        }
    };
    let text = body_of(&message.text_body, false);
    let html = body_of(&message.html_body, true);
    let headers = message
        .headers_raw()
        .map(|(name, value)| (name.to_string(), value.trim().to_string()))
        .collect();
    let folder = attachment_folder(&message_id);
    let mut attachments = Vec::new();
    let mut stored = Vec::new();
    for (index, part) in message.attachments().enumerate() {
        let filename = part
            .attachment_name()
            .map(clean_filename)
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("attachment-{}", index + 1));
        let content_type = part.content_type().map_or_else(
            || "application/octet-stream".to_string(),
            |kind| match kind.subtype() {
                Some(subtype) => format!("{}/{subtype}", kind.ctype()),
                None => kind.ctype().to_string(),
            },
        );
        let contents = part.contents();
        let size = contents.len() as u64;
        let body = if size <= ATTACHMENT_INLINE_BYTES_MAX {
            AttachmentBody::Inline(contents.to_vec())
        } else {
            // The index keeps two attachments of one name apart.
            let path = format!("{folder}/{}-{filename}", index + 1);
            stored.push((path.clone(), content_type.clone(), contents.to_vec()));
            AttachmentBody::File { path }
        };
        attachments.push(MailAttachment {
            filename,
            content_type,
            size,
            body,
        });
    }
    Some(Parsed {
        message: InboundMessage {
            message_id,
            from,
            to: addresses(message.to()),
            subject: message.subject().unwrap_or_default().to_string(),
            text,
            html,
            headers,
            attachments,
        },
        stored,
    })
}

/// `mail/<first 16 bytes of SHA-256(Message-ID), hex>`: where a message's
/// large attachments are stored in the app's files. A retried delivery of
/// the same message overwrites the same paths.
pub fn attachment_folder(message_id: &str) -> String {
    format!("mail/{}", hex(&Sha256::digest(message_id.as_bytes())[..16]))
}

/// A file name safe as one path segment: no `/`, `\`, control characters
/// or leading dots, at most [`FILENAME_BYTES_MAX`] bytes.
fn clean_filename(name: &str) -> String {
    let mut clean = String::new();
    for c in name.chars() {
        let c = if c == '/' || c == '\\' || c.is_control() {
            '_'
        } else {
            c
        };
        if clean.len() + c.len_utf8() > FILENAME_BYTES_MAX {
            break;
        }
        clean.push(c);
    }
    clean.trim_start_matches('.').to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_message_becomes_text_html_headers_and_attachments() {
        let big = "QUJD".repeat(300_000); // 900,000 bytes decoded
        let huge = "QUJD".repeat(500_000); // 1,500,000 bytes decoded
        let raw = format!(
            "From: Bob <bob@sender.org>\r\nTo: orders@shop.m, x@shop.m\r\nSubject: Order\r\n\
             Message-ID: <42@sender.org>\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
             --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"../a.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{big}\r\n\
             --b\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=\"big.png\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{huge}\r\n--b--\r\n"
        );
        let parsed = parse(raw.as_bytes(), "envelope@x").expect("parses");
        let message = parsed.message;
        assert_eq!(message.message_id, "<42@sender.org>");
        assert_eq!(message.from, "bob@sender.org");
        assert_eq!(message.to, vec!["orders@shop.m", "x@shop.m"]);
        assert_eq!(message.subject, "Order");
        assert_eq!(message.text.as_deref().map(str::trim_end), Some("hello"));
        assert_eq!(message.html, None, "no html part was sent");
        assert!(
            message
                .headers
                .contains(&("Subject".to_string(), "Order".to_string()))
        );
        assert_eq!(message.attachments.len(), 2);
        let small = &message.attachments[0];
        assert_eq!(
            (
                small.filename.as_str(),
                small.content_type.as_str(),
                small.size
            ),
            ("_a.pdf", "application/pdf", 900_000)
        );
        assert!(
            matches!(&small.body, AttachmentBody::Inline(bytes) if bytes.starts_with(b"ABCABC"))
        );
        let large = &message.attachments[1];
        let folder = attachment_folder("<42@sender.org>");
        assert_eq!(large.size, 1_500_000);
        assert_eq!(
            large.body,
            AttachmentBody::File {
                path: format!("{folder}/2-big.png")
            }
        );
        assert_eq!(parsed.stored.len(), 1);
        assert_eq!(parsed.stored[0].0, format!("{folder}/2-big.png"));
        assert_eq!(parsed.stored[0].2.len(), 1_500_000);
    }

    #[test]
    fn a_bare_message_gets_the_envelope_sender_and_a_stable_id() {
        let raw = b"Subject: hi\r\n\r\n<p>x</p>\r\n";
        let first = parse(raw, "env@x").expect("parses").message;
        assert_eq!(first.from, "env@x");
        assert!(first.message_id.ends_with("@picloud>"));
        assert_eq!(
            parse(raw, "env@x").expect("again").message.message_id,
            first.message_id
        );
        assert!(first.attachments.is_empty());
    }
}
