//! Outbound mail: checking what a script sends, building the MIME message,
//! and sending it to the relay with lettre (or, with no relay, capturing it).
//!
//! ```text
//!  email.send{..} ─▶ NodeHost ─▶ check (pure) ─▶ EmailCommand::Send ─▶ outbox (@email)
//!                                      (no relay: EmailCommand::Capture ─▶ Keyspace::Mail)
//!  dispatcher (leader) ─▶ Mailer::deliver ─▶ build (pure) ─▶ SMTP relay
//!        Sent ─▶ CompleteRun · Transient (4xx, network, timeout) ─▶ FailRun · Permanent (5xx) ─▶ Bounce
//! ```
//!
//! # Layout
//!
//! - `mod.rs` (this file): [`MailSettings`], the [`Mailer`] (transport,
//!   in-flight bound, timeout) and [`classify`], the pure decision between a
//!   retry and a bounce.
//! - `message.rs`: [`check`] (a script's mail against the limits, into the
//!   stored [`EmailMessage`]), [`build`] (the MIME message) and
//!   [`message_id`].
//!
//! A retry of one outbox entry carries the same Message-ID (derived from its
//! delivery id), so a receiver can tell a second copy from a new mail: a
//! leader that dies between the relay's 250 and `CompleteRun` makes the next
//! leader send again, never zero times.

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use picloud_cluster::Node;
use picloud_lua_sdk::{HostError, OutgoingEmail};
use picloud_storage::email::{EmailCommand, EmailMessage, EmailRetry};
use picloud_storage::{Command, CommandResult};
use tokio::sync::Semaphore;

mod message;

use crate::error::{apply_host_error, cluster_host_error, unexpected};
// The clock `host::now_ms` reads, from below `host`.
use crate::files::now_ms;

pub use message::{EmailLimits, build, check, check_mail_from, message_id};

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required), port 587 usually.
    Starttls,
    /// TLS from the first byte (SMTPS), port 465 usually.
    Tls,
    /// No encryption: only for a relay on loopback or a trusted network.
    None,
}

/// The relay mail goes out through.
#[derive(Clone)]
pub struct SmtpRelay {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Username and password; the password never appears in logs or `Debug`.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field(
                "username",
                &self.credentials.as_ref().map(|(user, _)| user.as_str()),
            )
            .finish()
    }
}

/// Everything the node's mail needs, from its settings.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `None`: dev mode, mail is captured instead of sent.
    pub relay: Option<SmtpRelay>,
    /// The default `from` (and the domain a script's own `from` must use).
    pub mail_from: String,
    pub limits: EmailLimits,
    /// One send's deadline (connect, dialogue and data).
    pub timeout_ms: u64,
    /// Sends talking to the relay at once on this node.
    pub sends_inflight_max: usize,
    /// Captured mails kept per app in dev mode.
    pub captured_max: u32,
    /// How often a queued mail is tried before it is dead-lettered.
    pub retry: EmailRetry,
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The relay accepted it (2xx).
    Sent,
    /// Try again later: a 4xx reply, a network error or a timeout.
    Transient(String),
    /// The relay refused it for good (5xx): the reply, for the dead letter.
    Permanent(String),
}

/// The pure decision on a failed send: a 5xx reply is permanent, anything
/// else (4xx, no reply at all: connect errors, timeouts, TLS) is transient.
pub fn classify(reply_code: Option<u16>, detail: String) -> Delivery {
    match reply_code {
        Some(500..=599) => Delivery::Permanent(detail),
        _ => Delivery::Transient(detail),
    }
}

/// The node's mailer: the relay transport (pooled connections) and the
/// bound on sends in flight.
pub struct Mailer {
    settings: MailSettings,
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    inflight: Arc<Semaphore>,
}

/// A relay setting lettre refuses (a TLS parameter error).
#[derive(Debug, thiserror::Error)]
#[error("smtp relay {host}: {source}")]
pub struct RelayError {
    host: String,
    #[source]
    source: lettre::transport::smtp::Error,
}

impl Mailer {
    pub fn new(settings: MailSettings) -> Result<Mailer, RelayError> {
        let transport = match &settings.relay {
            None => None,
            Some(relay) => {
                Some(
                    transport(relay, settings.timeout_ms).map_err(|source| RelayError {
                        host: relay.host.clone(),
                        source,
                    })?,
                )
            }
        };
        Ok(Mailer {
            inflight: Arc::new(Semaphore::new(settings.sends_inflight_max.max(1))),
            settings,
            transport,
        })
    }

    pub fn settings(&self) -> &MailSettings {
        &self.settings
    }

    /// Whether mail is captured (no relay) rather than sent.
    pub fn captures(&self) -> bool {
        self.transport.is_none()
    }

    /// Checks `email` of `app`, then queues it in the outbox (or, with no
    /// relay, captures it): what `email.send` and the auth flows' mails do.
    /// The id is the delivery id `<app>/<n>`.
    pub async fn queue(
        &self,
        node: &Node,
        app: &str,
        email: OutgoingEmail,
    ) -> Result<String, HostError> {
        let settings = &self.settings;
        let message = check(email, &settings.mail_from, settings.limits)?;
        let command = if self.captures() {
            EmailCommand::Capture {
                app: app.to_string(),
                message: Box::new(message),
                captured_max: settings.captured_max,
                now_ms: now_ms(),
            }
        } else {
            EmailCommand::Send {
                app: app.to_string(),
                message: Box::new(message),
                retry: settings.retry,
                now_ms: now_ms(),
            }
        };
        let result = node
            .write(Command::Email(command))
            .await
            .map_err(cluster_host_error)?;
        match result {
            CommandResult::TriggerFired { id: Some(id) } => {
                Ok(picloud_storage::triggers::delivery_id(app, id))
            }
            CommandResult::Rejected(error) => Err(apply_host_error(error)),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one queued mail, `delivery_id` naming its outbox entry.
    pub async fn deliver(&self, delivery_id: &str, message: &EmailMessage) -> Delivery {
        let Some(transport) = &self.transport else {
            return Delivery::Transient("no smtp relay is configured on this node".into());
        };
        let built = match build(delivery_id, message, &self.settings.mail_from) {
            Ok(built) => built,
            // A message that cannot be built will never be: bounce it.
            Err(error) => return Delivery::Permanent(error.message),
        };
        let Ok(_permit) = self.inflight.acquire().await else {
            return Delivery::Transient("the mailer is shutting down".into());
        };
        let deadline = Duration::from_millis(self.settings.timeout_ms.max(1));
        match tokio::time::timeout(deadline, transport.send(built)).await {
            Ok(Ok(_response)) => Delivery::Sent,
            Ok(Err(error)) => {
                let code = error
                    .status()
                    .and_then(|code| code.to_string().parse::<u16>().ok());
                classify(code, error.to_string())
            }
            Err(_elapsed) => Delivery::Transient(format!(
                "the relay did not finish within smtp_timeout_ms = {}",
                self.settings.timeout_ms
            )),
        }
    }
}

fn transport(
    relay: &SmtpRelay,
    timeout_ms: u64,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, lettre::transport::smtp::Error> {
    let tls = match relay.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(TlsParameters::new(relay.host.clone())?),
        SmtpTls::Tls => Tls::Wrapper(TlsParameters::new(relay.host.clone())?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(relay.host.as_str())
        .port(relay.port)
        .tls(tls)
        .timeout(Some(Duration::from_millis(timeout_ms.max(1))));
    if let Some((user, password)) = &relay.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_replies_classify_as_retry_or_bounce() {
        let cases = [
            (Some(550), true),
            (Some(552), true),
            (Some(554), true),
            (Some(421), false),
            (Some(451), false),
            (Some(452), false),
            (None, false),
        ];
        for (code, permanent) in cases {
            let delivery = classify(code, "reply".into());
            assert_eq!(
                matches!(delivery, Delivery::Permanent(_)),
                permanent,
                "{code:?}"
            );
        }
    }

    #[test]
    fn email_relay_debug_hides_the_password() {
        let relay = SmtpRelay {
            host: "h".into(),
            port: 25,
            tls: SmtpTls::None,
            credentials: Some(("user".into(), "hunter2".into())),
        };
        assert!(!format!("{relay:?}").contains("hunter2"));
    }
}
