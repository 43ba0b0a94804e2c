//! Mail received by PiCloud's SMTP listener, as the log carries it: one
//! [`InboundMail`] per message accepted at `DATA`, whose apply queues a run
//! of every matching `email` trigger of each recipient's app (see
//! `apply/inbound_mail.rs`).
//!
//! The message arrives parsed (the listener runs the MIME parser, so
//! `apply` never parses untrusted bytes) and without big blobs: an
//! attachment over [`ATTACHMENT_INLINE_BYTES_MAX`] is stored as a file of
//! the app first and referenced here by its path.

use serde::{Deserialize, Serialize};

/// The largest attachment carried inside the log (and the trigger's event);
/// a larger one is stored as a file and referenced by path.
pub const ATTACHMENT_INLINE_BYTES_MAX: u64 = 1024 * 1024;

/// One accepted message for one or more recipients of one app.
///
/// One app per message keeps the command all-or-nothing (a full outbox
/// rejects it whole, so the sender's retry duplicates nothing): the
/// listener answers a recipient of a second app with 452, which SMTP
/// clients retry in a transaction of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMail {
    pub app: String,
    /// The envelope recipients the listener resolved to `app`.
    pub recipients: Vec<MailRecipient>,
    pub message: InboundMessage,
    pub now_ms: u64,
}

/// One `RCPT TO` address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailRecipient {
    /// The address as accepted, lower-cased (`support@shop.example.org`).
    pub address: String,
    /// The part the app's `email` triggers match: the address's local part
    /// for `<local>@<app>.<mail-domain>`, the whole address for an alias.
    pub local: String,
}

/// A parsed message: what `ctx.event` of an `email` trigger run shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The `Message-ID` header (or one the listener made up when absent).
    pub message_id: String,
    /// The `From` header's first address (the envelope sender when absent).
    pub from: String,
    /// The `To` header's addresses.
    pub to: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Every header in order, name as written, value decoded to text.
    pub headers: Vec<(String, String)>,
    pub attachments: Vec<MailAttachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAttachment {
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub body: AttachmentBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachmentBody {
    /// At most [`ATTACHMENT_INLINE_BYTES_MAX`] bytes.
    Inline(Vec<u8>),
    /// A file of the recipient's app, stored before the command was proposed.
    File { path: String },
}

impl InboundMail {
    /// About how many bytes the command carries (for the batcher's bound
    /// and the disk reserve): the bodies and attachments dominate.
    pub fn payload_bytes(&self) -> usize {
        let message = &self.message;
        let headers: usize = message
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        let attachments: usize = message
            .attachments
            .iter()
            .map(|attachment| match &attachment.body {
                AttachmentBody::Inline(bytes) => bytes.len(),
                AttachmentBody::File { path } => path.len(),
            })
            .sum();
        self.app.len()
            + self
                .recipients
                .iter()
                .map(|recipient| recipient.address.len() + recipient.local.len())
                .sum::<usize>()
            + message.subject.len()
            + message.text.as_ref().map_or(0, String::len)
            + message.html.as_ref().map_or(0, String::len)
            + headers
            + attachments
    }
}
