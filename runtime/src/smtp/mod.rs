//! PiCloud's own SMTP listener (`--smtp-listen`): mail to
//! `<anything>@<app>.<mail-domain>` (or an app's `[mail] aliases`) fires
//! the app's `email` triggers. Every node listens; any node accepts.
//!
//! ```text
//!  client ─▶ accept (≤ smtp_connections_max, else 421) ─▶ session (planner)
//!     RCPT ─▶ recipients::resolve (local state; unknown → read barrier, again)
//!          ─▶ 250 | 550 | 452 | 450 (cannot catch up)
//!     DATA ─▶ MessageBuffer (≤ mail_bytes_max, else 552) ─▶ message::parse
//!          ─▶ big attachments ─▶ FileService (files of the app)
//!          ─▶ Node::write(InboundMail) ─▶ committed: 250 | otherwise 451
//! ```
//!
//! `250` after `DATA` means the message is in the log: its trigger runs go
//! through the outbox like every other trigger. A failure before the commit
//! is `451`, so the sender retries; a commit whose answer was lost is also
//! `451`, so a message can arrive twice (same `message_id`), never zero times.
//!
//! # Layout
//!
//! - `mod.rs` (this file): the accept loop and one connection's I/O.
//! - `session`: the pure protocol planner and the `DATA` buffer.
//! - `recipients`: address → app.
//! - `message`: MIME → the event's message, large attachments set apart.

pub mod message;
pub mod recipients;
pub mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use picloud_actors::files::FileService;
use picloud_cluster::Node;
use picloud_storage::inbound_mail::{InboundMail, MailRecipient};
use picloud_storage::state::StateReader;
use picloud_storage::{Command, CommandResult};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use session::{
    DataLine, Delivery, Envelope, MessageBuffer, Next, Reply, Resolution, Session, SessionLimits,
};

/// The listener's settings (from `ServeConfig`, validated at boot).
#[derive(Clone)]
pub struct SmtpConfig {
    pub mail_domain: String,
    /// The name the listener greets with.
    pub host: String,
    pub limits: SessionLimits,
    /// Wait for each command line.
    pub command_timeout: Duration,
    /// Wait for a whole message after `354`.
    pub data_timeout: Duration,
    pub connections_max: usize,
    /// Open connections from one client address.
    pub connections_per_ip_max: usize,
    /// The certificate STARTTLS uses, when one is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The listener: bound at start (a busy port fails the start), served by
/// the `smtp_accept` duty.
#[derive(Clone)]
pub struct SmtpServer {
    listener: Arc<TcpListener>,
    node: Node,
    files: FileService,
    config: Arc<SmtpConfig>,
    connections: Arc<Semaphore>,
    per_ip: PerIp,
}

/// Open connections per client address, so one sender cannot hold every
/// slot. Holds at most `connections_max` addresses (an entry lives only
/// while one of its connections does).
#[derive(Clone, Default)]
struct PerIp(Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>);

/// One counted connection of an address; uncounted when dropped.
struct PerIpSlot {
    per_ip: PerIp,
    ip: IpAddr,
}

impl PerIp {
    fn acquire(&self, ip: IpAddr, max: usize) -> Option<PerIpSlot> {
        let mut open = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PerIpSlot {
            per_ip: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// How long a `RCPT` for an address this node does not know waits for a
/// read barrier (the app may have been deployed on a node ahead of this
/// one); past it the answer is 450, which senders retry.
const RECIPIENT_RECHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client was silent past the timeout")]
    Timeout,
    #[error("the client closed the connection in the middle of a message")]
    ClosedInData,
}

/// Longest command line kept, in bytes (RFC 5321 allows 512; the rest is
/// slack for long addresses); a longer one is refused with 500.
pub const COMMAND_LINE_BYTES_MAX: usize = 1024;
/// Failed commands in one session before it is closed with 421.
pub const SESSION_ERRORS_MAX: u32 = 10;

/// One line as read: whole (its line ending included), too long (the rest
/// was read and dropped), or the end of the stream.
enum Line {
    Whole(Vec<u8>),
    TooLong { bytes: u64 },
    Eof,
}

impl SmtpServer {
    pub async fn bind(
        address: SocketAddr,
        node: Node,
        files: FileService,
        config: SmtpConfig,
    ) -> std::io::Result<SmtpServer> {
        let listener = TcpListener::bind(address).await?;
        Ok(SmtpServer {
            listener: Arc::new(listener),
            node,
            files,
            connections: Arc::new(Semaphore::new(config.connections_max)),
            per_ip: PerIp::default(),
            config: Arc::new(config),
        })
    }

    /// Accepts connections until dropped; the connections live in a
    /// `JoinSet` this future owns, so a restart of the duty ends them.
    pub async fn accept_loop(self) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!(%error, "smtp accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                        // Best effort, never waiting on a client we refuse.
                        let _ = stream.try_write(b"421 4.3.2 too many connections; try again later\r\n");
                        continue;
                    };
                    let Some(slot) = self.per_ip.acquire(peer.ip(), self.config.connections_per_ip_max) else {
                        let _ = stream.try_write(b"421 4.3.2 too many connections from your address; try again later\r\n");
                        continue;
                    };
                    let server = self.clone();
                    connections.spawn(async move {
                        if let Err(error) = server.connection(stream).await {
                            tracing::debug!(%peer, %error, "smtp connection ended");
                        }
                        drop((permit, slot));
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }

    async fn connection(&self, stream: TcpStream) -> Result<(), ConnectionError> {
        let tls = self.config.tls.clone();
        let mut session = Session::new(&self.config.host, self.config.limits, tls.is_some());
        let mut stream = BufReader::new(stream);
        stream.write_all(&session.greeting().to_wire()).await?;
        let Some(plain) = self.serve(&mut session, stream).await? else {
            return Ok(());
        };
        let Some(acceptor) = tls else {
            return Ok(());
        };
        let encrypted = tokio::time::timeout(self.config.command_timeout, acceptor.accept(plain))
            .await
            .map_err(|_| ConnectionError::Timeout)??;
        // After the handshake the planner refuses a second STARTTLS.
        self.serve(&mut session, BufReader::new(encrypted)).await?;
        Ok(())
    }

    /// Runs commands until the session closes (`None`) or asks for
    /// STARTTLS (the bare stream back; bytes the client sent early are
    /// dropped with the buffer, as RFC 3207 requires).
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        session: &mut Session,
        mut stream: BufReader<S>,
    ) -> Result<Option<S>, ConnectionError> {
        let reader = self.node.reader().clone();
        let domain = self.config.mail_domain.clone();
        loop {
            let line = tokio::time::timeout(
                self.config.command_timeout,
                read_line(&mut stream, COMMAND_LINE_BYTES_MAX),
            )
            .await
            .map_err(|_| ConnectionError::Timeout)??;
            let (reply, next) = match line {
                Line::Eof => return Ok(None),
                Line::TooLong { .. } => session.line_too_long(),
                Line::Whole(line) => {
                    let line = trim_line_ending(&line);
                    let mut unknown = false;
                    let answer = session.command(line, &mut |address| {
                        let found = recipients::resolve(&reader, &domain, address);
                        unknown = found == Resolution::Unknown;
                        found
                    });
                    if unknown {
                        // This node may be behind a deploy that added the
                        // app or its trigger: catch up and look again (an
                        // unknown recipient changes nothing in the session,
                        // so the command can run twice).
                        self.recheck(session, line, &reader, &domain).await
                    } else {
                        answer
                    }
                }
            };
            stream.write_all(&reply.to_wire()).await?;
            match next {
                Next::Command => {}
                Next::Close => {
                    stream.flush().await?;
                    return Ok(None);
                }
                Next::StartTls => return Ok(Some(stream.into_inner())),
                Next::Data => {
                    let delivery = self.data(session, &mut stream).await?;
                    let (reply, _) = session.message_end(delivery);
                    stream.write_all(&reply.to_wire()).await?;
                }
            }
        }
    }

    /// Answers a `RCPT` whose address this node's state did not know, once
    /// the state caught up with the leader's; 450 when it cannot catch up.
    async fn recheck(
        &self,
        session: &mut Session,
        line: &[u8],
        reader: &StateReader,
        domain: &str,
    ) -> (Reply, Next) {
        let caught_up = tokio::time::timeout(RECIPIENT_RECHECK_TIMEOUT, self.node.read_barrier())
            .await
            .is_ok_and(|barrier| barrier.is_ok());
        session.command(line, &mut |address| {
            if caught_up {
                recipients::resolve(reader, domain, address)
            } else {
                Resolution::Unavailable
            }
        })
    }

    /// Reads the message after `354` and delivers it.
    async fn data<S: AsyncRead + Unpin>(
        &self,
        session: &Session,
        stream: &mut BufReader<S>,
    ) -> Result<Delivery, ConnectionError> {
        let deadline = tokio::time::Instant::now() + self.config.data_timeout;
        let mut buffer = MessageBuffer::new(self.config.limits.message_bytes_max);
        loop {
            // A line may be as long as the room left (and its `.` and
            // CRLF): past that the message is too large anyway, and what
            // is read beyond it is only counted.
            let room = usize::try_from(buffer.room()).unwrap_or(usize::MAX);
            let line = tokio::time::timeout_at(deadline, read_line(stream, room.saturating_add(3)))
                .await
                .map_err(|_| ConnectionError::Timeout)??;
            match line {
                Line::Eof => return Err(ConnectionError::ClosedInData),
                Line::TooLong { bytes } => buffer.skipped(bytes),
                Line::Whole(line) => {
                    if buffer.push_line(&line) == DataLine::End {
                        break;
                    }
                }
            }
        }
        let Some(raw) = buffer.finish() else {
            return Ok(Delivery::TooLarge);
        };
        let Some(envelope) = session.envelope() else {
            return Ok(Delivery::NotCommitted);
        };
        Ok(self.deliver(envelope, raw).await)
    }

    /// Parses, stores the large attachments, and commits the message.
    async fn deliver(&self, envelope: &Envelope, raw: Vec<u8>) -> Delivery {
        let from = envelope.from.clone();
        // Parsing up to `mail_bytes_max` is CPU work: off the async workers.
        let parsed = tokio::task::spawn_blocking(move || message::parse(&raw, &from)).await;
        let Ok(Some(parsed)) = parsed else {
            return Delivery::Malformed;
        };
        for (path, content_type, bytes) in parsed.stored {
            let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
            let stored = self
                .files
                .put_stream(&envelope.app, &path, Some(content_type), body, None)
                .await;
            if let Err(error) = stored {
                tracing::warn!(app = %envelope.app, %path, %error, "storing a mail attachment failed");
                return Delivery::NotCommitted;
            }
        }
        let command = Command::InboundMail(Box::new(InboundMail {
            app: envelope.app.clone(),
            recipients: envelope
                .recipients
                .iter()
                .map(|recipient| MailRecipient {
                    address: recipient.address.clone(),
                    local: recipient.local.clone(),
                })
                .collect(),
            message: parsed.message,
            now_ms: picloud_actors::host::now_ms(),
        }));
        match self.node.write(command).await {
            Ok(CommandResult::MailDelivered { runs: 0 }) => Delivery::NoTrigger,
            Ok(CommandResult::MailDelivered { .. }) => Delivery::Committed,
            Ok(other) => {
                tracing::warn!(app = %envelope.app, result = ?other, "inbound mail not queued");
                Delivery::NotCommitted
            }
            Err(error) => {
                tracing::warn!(app = %envelope.app, %error, "inbound mail not committed");
                Delivery::NotCommitted
            }
        }
    }
}

/// Reads one line, keeping at most `bytes_max` of it.
async fn read_line<S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
    bytes_max: usize,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut dropped: u64 = 0;
    loop {
        let buffer = stream.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(Line::Eof);
        }
        let (taken, ended) = match buffer.iter().position(|byte| *byte == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len(), false),
        };
        if dropped == 0 && line.len() + taken <= bytes_max {
            line.extend_from_slice(&buffer[..taken]);
        } else {
            dropped = dropped.saturating_add((line.len() + taken) as u64);
            line = Vec::new();
        }
        stream.consume(taken);
        if ended {
            return Ok(if dropped > 0 {
                Line::TooLong { bytes: dropped }
            } else {
                Line::Whole(line)
            });
        }
    }
}

fn trim_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The STARTTLS acceptor from PEM files (rustls with the ring provider
/// the process installed at start).
pub fn tls_acceptor(
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("reading smtp_tls_cert {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing smtp_tls_cert {}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading smtp_tls_key {}", key_path.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("smtp_tls_cert and smtp_tls_key do not make a certificate")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::{Line, PerIp, read_line, trim_line_ending};
    use std::net::{IpAddr, Ipv4Addr};
    use tokio::io::BufReader;

    /// An address holds at most its share of connections; closing one
    /// frees its slot, and another address is not affected.
    #[test]
    fn connections_are_capped_per_address() {
        let per_ip = PerIp::default();
        let one = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let two = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let first = per_ip.acquire(one, 2).expect("first");
        let _second = per_ip.acquire(one, 2).expect("second");
        assert!(per_ip.acquire(one, 2).is_none(), "third from one address");
        assert!(per_ip.acquire(two, 2).is_some(), "another address");
        drop(first);
        assert!(per_ip.acquire(one, 2).is_some(), "a slot came back");
    }

    /// Lines come whole up to the cap; a longer one is read to its end and
    /// only counted, so the next line is intact; the stream's end is `Eof`.
    #[tokio::test]
    async fn lines_are_capped_without_losing_the_next_one() {
        let input: &[u8] = b"EHLO a\r\nMAIL FROM:<a-very-long-address@x>\r\nQUIT\r\n";
        // A tiny buffer makes the long line span several reads.
        let mut stream = BufReader::with_capacity(4, input);
        let Line::Whole(first) = read_line(&mut stream, 16).await.expect("read") else {
            panic!("first line whole");
        };
        assert_eq!(trim_line_ending(&first), b"EHLO a");
        let Line::TooLong { bytes } = read_line(&mut stream, 16).await.expect("read") else {
            panic!("second line too long");
        };
        assert_eq!(bytes, 35);
        let Line::Whole(third) = read_line(&mut stream, 16).await.expect("read") else {
            panic!("third line whole");
        };
        assert_eq!(trim_line_ending(&third), b"QUIT");
        assert!(matches!(read_line(&mut stream, 16).await, Ok(Line::Eof)));
    }
}
