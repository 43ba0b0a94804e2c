//! Outbound mail as the log carries it: the message a script sent
//! ([`EmailMessage`]), the commands that queue, bounce or capture it
//! ([`EmailCommand`], one `Command::Email` variant of the log), and mail
//! captured in dev mode ([`CapturedMail`], in `Keyspace::Mail`).
//!
//! A send is never made inside the request that asks for it:
//!
//! ```text
//!  email.send ──▶ EmailCommand::Send ──apply──▶ outbox entry (trigger "@email", TriggerEvent::Email)
//!  leader's dispatcher ──SMTP──▶ relay
//!     250            ──▶ CompleteRun (no writes)
//!     4xx / network  ──▶ FailRun (backoff, attempts_max, then dead letter "failed")
//!     5xx            ──▶ EmailCommand::Bounce (dead letter "bounced" at once, the reply as error)
//!  no relay (dev)    ──▶ EmailCommand::Capture ──apply──▶ Keyspace::Mail (newest captured_max kept)
//! ```
//!
//! Addresses and sizes are checked by the proposer (the SDK and the actors
//! crate); apply trusts the message's shape and only decides queueing.

use serde::{Deserialize, Serialize};

/// The trigger name of outbox entries that deliver mail. A manifest trigger
/// name is letters, digits, `-` and `_` only, so no declared trigger can
/// take it (and a deploy can never remove it).
pub const EMAIL_TRIGGER: &str = "@email";

/// Why a mail was dead-lettered at once: the relay refused it for good
/// (an SMTP 5xx reply, carried as the dead letter's error).
pub const BOUNCED: &str = "bounced";

/// The chain depth bound used for an app whose active version has no
/// trigger set (the manifest default).
pub const CHAIN_DEPTH_MAX_DEFAULT: u32 = 8;
/// The outbox bound used for an app whose active version has no trigger
/// set (the manifest default).
pub const OUTBOX_MAX_DEFAULT: u32 = 10_000;

/// One message as a script sent it. Addresses are RFC 5322 mailboxes
/// (`a@b.c` or `Name <a@b.c>`), checked before the command is proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailMessage {
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<EmailAttachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailAttachment {
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// How often a queued mail is tried, read by the proposer from its
/// settings and carried in the outbox entry (manifest triggers carry theirs
/// in the trigger set; mail has no declared trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRetry {
    /// Sends of one message, the first included, before it is dead-lettered.
    pub attempts_max: u32,
    /// Wait before the first retry, doubled for each later one.
    pub backoff_ms: u64,
}

/// The mail commands, one `Command::Email` variant in the log; this enum is
/// append-only like the log's (bincode encodes a variant by position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailCommand {
    /// Queues `message` for delivery: one outbox entry of trigger
    /// [`EMAIL_TRIGGER`]. Result `TriggerFired { id }` (the entry; the
    /// delivery id is `<app>/<id>`); rejected with `AppNotFound` or
    /// `OutboxFull`.
    Send {
        app: String,
        /// Boxed: a message is large, and commands travel by value.
        message: Box<EmailMessage>,
        retry: EmailRetry,
        now_ms: u64,
    },
    /// The relay refused the mail of claimed run `id` for good: it is
    /// dead-lettered at once as [`BOUNCED`] with `reply` as its error.
    /// Guarded by the claim like `CompleteRun`. Result `Run`.
    Bounce {
        app: String,
        id: u64,
        term: u64,
        claim_ms: u64,
        reply: String,
        now_ms: u64,
    },
    /// Dev mode (no relay): keeps `message` in the app's captured mail,
    /// dropping the oldest past `captured_max`. Result `TriggerFired { id }`
    /// (the captured mail's id); rejected with `AppNotFound`.
    Capture {
        app: String,
        /// Boxed like `Send`'s.
        message: Box<EmailMessage>,
        captured_max: u32,
        now_ms: u64,
    },
}

impl EmailCommand {
    /// The payload size the batcher weighs the command by.
    pub fn payload_bytes(&self) -> usize {
        match self {
            EmailCommand::Send { app, message, .. }
            | EmailCommand::Capture { app, message, .. } => app.len() + message.size_bytes(),
            EmailCommand::Bounce { app, reply, .. } => app.len() + reply.len(),
        }
    }
}

impl EmailMessage {
    /// The bytes of every field together: what `email_bytes_max` bounds.
    pub fn size_bytes(&self) -> usize {
        let addresses = |list: &[String]| list.iter().map(String::len).sum::<usize>();
        self.from.len()
            + addresses(&self.to)
            + addresses(&self.cc)
            + addresses(&self.bcc)
            + self.reply_to.as_ref().map_or(0, String::len)
            + self.subject.len()
            + self.text.as_ref().map_or(0, String::len)
            + self.html.as_ref().map_or(0, String::len)
            + self
                .attachments
                .iter()
                .map(|a| a.filename.len() + a.content_type.len() + a.data.len())
                .sum::<usize>()
    }

    /// Every recipient: to, cc and bcc.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        self.to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .map(String::as_str)
    }
}

/// A mail captured in dev mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedMail {
    pub id: u64,
    pub captured_ms: u64,
    pub message: EmailMessage,
}

/// The ids of an app's captured mail still kept: `first..next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CaptureSeq {
    pub first: u64,
    pub next: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::{STORED_BYTES_MAX, decode, encode};

    pub(crate) fn message() -> EmailMessage {
        EmailMessage {
            from: "f@x".into(),
            to: vec!["t@x".into()],
            cc: vec![],
            bcc: vec!["b@x".into()],
            reply_to: None,
            subject: "s".into(),
            text: Some("t".into()),
            html: None,
            attachments: vec![EmailAttachment {
                filename: "a".into(),
                content_type: "c".into(),
                data: vec![1],
            }],
        }
    }

    pub(crate) fn send() -> EmailCommand {
        EmailCommand::Send {
            app: "a".into(),
            message: Box::new(message()),
            retry: EmailRetry {
                attempts_max: 3,
                backoff_ms: 4,
            },
            now_ms: 5,
        }
    }

    /// The inner enum is in the log too (inside `Command::Email`): each
    /// variant keeps its index and its fields' order.
    #[test]
    fn email_commands_encode_as_the_log_holds_them() {
        let commands = [
            send(),
            EmailCommand::Bounce {
                app: "a".into(),
                id: 1,
                term: 2,
                claim_ms: 3,
                reply: "550".into(),
                now_ms: 4,
            },
            EmailCommand::Capture {
                app: "a".into(),
                message: Box::new(message()),
                captured_max: 6,
                now_ms: 7,
            },
        ];
        let golden = [
            "0001610366407801037440780001036240780001730101740001016101630101030405",
            "0101610102030335353004",
            "02016103664078010374407800010362407800017301017400010161016301010607",
        ];
        for (index, (command, golden)) in commands.into_iter().zip(golden).enumerate() {
            let bytes = encode(&command).expect("encode");
            let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            assert_eq!(hex, golden, "email variant {index}");
            let decoded: EmailCommand = decode(&bytes, STORED_BYTES_MAX).expect("decode");
            assert_eq!(decoded, command);
        }
    }

    #[test]
    fn email_size_counts_every_field() {
        assert_eq!(message().size_bytes(), 3 + 3 + 3 + 1 + 1 + 1 + 1 + 1);
        let message = message();
        let recipients: Vec<&str> = message.recipients().collect();
        assert_eq!(recipients, ["t@x", "b@x"]);
    }
}
