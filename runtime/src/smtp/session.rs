//! The SMTP session planner: a pure state machine from a command line (and
//! the answers the shell looks up for it) to the reply and what the shell
//! does next. No sockets, clocks or storage: the listener (`super`) reads
//! lines, asks [`Session::command`], writes the reply, and follows
//! [`Next`]; the tests drive it with plain byte strings.
//!
//! ```text
//!  connect ─▶ 220 ─▶ EHLO/HELO ─▶ MAIL FROM ─▶ RCPT TO (1..n) ─▶ DATA ─▶ 354
//!                       ▲  STARTTLS (220, then back to "not greeted")   │
//!                       └──────── RSET / end of message ◀───────────────┘
//! ```

/// One SMTP reply: a code and its text lines (multi-line for `EHLO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// The reply as it goes on the wire (`250-a\r\n250 b\r\n`).
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (index, line) in self.lines.iter().enumerate() {
            let separator = if index == last { ' ' } else { '-' };
            out.push_str(&format!("{}{separator}{line}\r\n", self.code));
        }
        out.into_bytes()
    }
}

/// What the shell does after writing the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read the next command line.
    Command,
    /// Read the message (up to `.` alone on a line), then call
    /// [`Session::message_end`].
    Data,
    /// Run the TLS handshake, then read commands again.
    StartTls,
    /// Close the connection.
    Close,
}

/// Where an envelope recipient goes, as the shell looked it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// An app with an `email` trigger for this recipient. `local` is what
    /// its triggers match (the local part, or the alias address).
    App { app: String, local: String },
    /// No app takes mail for this address.
    Unknown,
    /// This node cannot tell right now (it could not catch up with the
    /// cluster): the sender should retry.
    Unavailable,
}

/// A recipient the session accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub address: String,
    pub local: String,
}

/// The bounds a session enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Recipients of one message; more get 452.
    pub recipients_max: usize,
    /// Largest message (as sent, before dot-unstuffing); more get 552.
    pub message_bytes_max: u64,
    /// Commands that failed (5xx for a bad command) before the session
    /// is closed with 421.
    pub errors_max: u32,
}

/// The envelope of a message ready for `DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: String,
    pub app: String,
    pub recipients: Vec<Accepted>,
}

/// What became of a message the shell read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Committed to the log with at least one trigger run queued.
    Committed,
    /// The app or its matching triggers went since `RCPT` (nothing queued).
    NoTrigger,
    /// Longer than `message_bytes_max` (the shell stopped keeping it).
    TooLarge,
    /// Not parseable as a message.
    Malformed,
    /// Not committed (no leader, full outbox, disk full, a file store
    /// failed): the sender should try again later.
    NotCommitted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Connected (or just after STARTTLS): needs EHLO/HELO.
    Fresh,
    Greeted,
    /// `MAIL FROM` accepted; recipients so far (all of `app` once one is in).
    Mail {
        from: String,
        app: Option<String>,
        recipients: Vec<Accepted>,
    },
    /// `354` sent; the shell is reading the message.
    Data(Envelope),
}

/// One connection's SMTP state.
#[derive(Debug)]
pub struct Session {
    host: String,
    limits: SessionLimits,
    /// Whether the listener has a certificate (STARTTLS is offered).
    tls_available: bool,
    /// Whether the connection is already encrypted.
    tls: bool,
    phase: Phase,
    errors: u32,
}

impl Session {
    pub fn new(host: &str, limits: SessionLimits, tls_available: bool) -> Session {
        Session {
            host: host.to_string(),
            limits,
            tls_available,
            tls: false,
            phase: Phase::Fresh,
            errors: 0,
        }
    }

    /// The greeting sent when a client connects.
    pub fn greeting(&self) -> Reply {
        Reply::new(220, format!("{} PiCloud ESMTP ready", self.host))
    }

    /// The reply to a line longer than the listener reads (the rest of the
    /// line was discarded).
    pub fn line_too_long(&mut self) -> (Reply, Next) {
        self.error(Reply::new(500, "5.5.6 line too long"))
    }

    /// Handles one command line (without its CRLF). `resolve` looks a
    /// `RCPT TO` address (lower-cased) up; it is called for nothing else.
    pub fn command(
        &mut self,
        line: &[u8],
        resolve: &mut dyn FnMut(&str) -> Resolution,
    ) -> (Reply, Next) {
        let Ok(line) = std::str::from_utf8(line) else {
            return self.error(Reply::new(500, "5.5.2 command is not text"));
        };
        let (verb, argument) = match line.split_once(' ') {
            Some((verb, argument)) => (verb, argument.trim()),
            None => (line.trim(), ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if argument.is_empty() => {
                self.error(Reply::new(501, "5.5.4 a domain or address is required"))
            }
            "EHLO" => {
                self.phase = Phase::Greeted;
                let mut lines = vec![
                    format!("{} greets {argument}", self.host),
                    format!("SIZE {}", self.limits.message_bytes_max),
                    "8BITMIME".to_string(),
                    "ENHANCEDSTATUSCODES".to_string(),
                ];
                if self.tls_available && !self.tls {
                    lines.push("STARTTLS".to_string());
                }
                (Reply { code: 250, lines }, Next::Command)
            }
            "HELO" => {
                self.phase = Phase::Greeted;
                (Reply::new(250, self.host.clone()), Next::Command)
            }
            "STARTTLS" => self.starttls(argument),
            "MAIL" => self.mail(argument),
            "RCPT" => self.rcpt(argument, resolve),
            "DATA" => self.data(argument),
            "RSET" => {
                if self.phase != Phase::Fresh {
                    self.phase = Phase::Greeted;
                }
                (Reply::new(250, "2.0.0 OK"), Next::Command)
            }
            "NOOP" => (Reply::new(250, "2.0.0 OK"), Next::Command),
            "QUIT" => (
                Reply::new(221, format!("2.0.0 {} closing", self.host)),
                Next::Close,
            ),
            "VRFY" => (
                Reply::new(252, "2.1.5 cannot verify; send mail to find out"),
                Next::Command,
            ),
            _ => self.error(Reply::new(500, "5.5.2 command not recognised")),
        }
    }

    /// The envelope of the message being read (during [`Next::Data`]).
    pub fn envelope(&self) -> Option<&Envelope> {
        match &self.phase {
            Phase::Data(envelope) => Some(envelope),
            _ => None,
        }
    }

    /// The reply once the shell read (and tried to deliver) the message;
    /// the transaction ends either way.
    pub fn message_end(&mut self, delivery: Delivery) -> (Reply, Next) {
        self.phase = Phase::Greeted;
        let reply = match delivery {
            Delivery::Committed => Reply::new(250, "2.0.0 message accepted"),
            Delivery::NoTrigger => Reply::new(550, "5.1.1 the recipient no longer takes mail"),
            Delivery::TooLarge => Reply::new(
                552,
                format!(
                    "5.3.4 message larger than {} bytes",
                    self.limits.message_bytes_max
                ),
            ),
            Delivery::Malformed => Reply::new(554, "5.6.0 message could not be parsed"),
            Delivery::NotCommitted => Reply::new(451, "4.3.0 not stored; try again later"),
        };
        (reply, Next::Command)
    }

    fn starttls(&mut self, argument: &str) -> (Reply, Next) {
        if !argument.is_empty() {
            return self.error(Reply::new(501, "5.5.4 STARTTLS takes no argument"));
        }
        if !self.tls_available {
            return self.error(Reply::new(502, "5.5.1 STARTTLS is not offered"));
        }
        if self.tls {
            return self.error(Reply::new(503, "5.5.1 already encrypted"));
        }
        // RFC 3207: everything learnt before the handshake is forgotten.
        self.tls = true;
        self.phase = Phase::Fresh;
        (Reply::new(220, "2.0.0 ready to start TLS"), Next::StartTls)
    }

    fn mail(&mut self, argument: &str) -> (Reply, Next) {
        match self.phase {
            Phase::Fresh => return self.error(Reply::new(503, "5.5.1 say EHLO first")),
            Phase::Greeted => {}
            _ => return self.error(Reply::new(503, "5.5.1 a message is already under way")),
        }
        let Some((from, parameters)) = path_argument(argument, "FROM:") else {
            return self.error(Reply::new(501, "5.5.4 syntax: MAIL FROM:<address>"));
        };
        for parameter in parameters.split_ascii_whitespace() {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            if name.eq_ignore_ascii_case("SIZE") {
                let Ok(size) = value.parse::<u64>() else {
                    return self.error(Reply::new(501, "5.5.4 SIZE must be a number"));
                };
                if size > self.limits.message_bytes_max {
                    let max = self.limits.message_bytes_max;
                    return (
                        Reply::new(552, format!("5.3.4 message larger than {max} bytes")),
                        Next::Command,
                    );
                }
            }
        }
        self.phase = Phase::Mail {
            from: from.to_string(),
            app: None,
            recipients: Vec::new(),
        };
        (Reply::new(250, "2.1.0 sender OK"), Next::Command)
    }

    fn rcpt(
        &mut self,
        argument: &str,
        resolve: &mut dyn FnMut(&str) -> Resolution,
    ) -> (Reply, Next) {
        let recipients_max = self.limits.recipients_max;
        let Phase::Mail {
            app, recipients, ..
        } = &mut self.phase
        else {
            return self.error(Reply::new(503, "5.5.1 MAIL FROM first"));
        };
        if recipients.len() >= recipients_max {
            return (
                Reply::new(452, format!("4.5.3 at most {recipients_max} recipients")),
                Next::Command,
            );
        }
        let address = match path_argument(argument, "TO:") {
            Some((address, _)) if !address.is_empty() => address.to_ascii_lowercase(),
            _ => return self.error(Reply::new(501, "5.5.4 syntax: RCPT TO:<address>")),
        };
        match resolve(&address) {
            Resolution::Unknown => (
                Reply::new(550, format!("5.1.1 <{address}>: no such recipient")),
                Next::Command,
            ),
            Resolution::Unavailable => (
                Reply::new(
                    450,
                    format!("4.4.3 <{address}>: cannot check this recipient now; try again later"),
                ),
                Next::Command,
            ),
            // One app per message keeps its delivery all-or-nothing; a
            // client sends the others in a later transaction.
            Resolution::App { app: found, .. } if app.as_ref().is_some_and(|app| *app != found) => {
                (
                    Reply::new(
                        452,
                        "4.5.3 one app per message; send again for this recipient",
                    ),
                    Next::Command,
                )
            }
            Resolution::App { app: found, local } => {
                *app = Some(found);
                if !recipients.iter().any(|known| known.address == address) {
                    recipients.push(Accepted { address, local });
                }
                (Reply::new(250, "2.1.5 recipient OK"), Next::Command)
            }
        }
    }

    fn data(&mut self, argument: &str) -> (Reply, Next) {
        if !argument.is_empty() {
            return self.error(Reply::new(501, "5.5.4 DATA takes no argument"));
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Greeted);
        match phase {
            Phase::Mail {
                from,
                app: Some(app),
                recipients,
            } => {
                self.phase = Phase::Data(Envelope {
                    from,
                    app,
                    recipients,
                });
                (
                    Reply::new(354, "end the message with <CRLF>.<CRLF>"),
                    Next::Data,
                )
            }
            Phase::Mail { .. } => {
                self.phase = phase;
                self.error(Reply::new(554, "5.5.1 no valid recipients"))
            }
            other => {
                self.phase = other;
                self.error(Reply::new(503, "5.5.1 MAIL FROM and RCPT TO first"))
            }
        }
    }

    /// A failed command: its reply, or 421 and close once there were too many.
    fn error(&mut self, reply: Reply) -> (Reply, Next) {
        self.errors = self.errors.saturating_add(1);
        if self.errors > self.limits.errors_max {
            return (
                Reply::new(421, "4.7.0 too many errors; closing"),
                Next::Close,
            );
        }
        (reply, Next::Command)
    }
}

/// The message of a `DATA` command as its lines arrive: dot-unstuffed,
/// kept up to `bytes_max` and only counted past it (so a huge message
/// costs no memory; the shell still reads to its end to answer 552).
#[derive(Debug)]
pub struct MessageBuffer {
    bytes: Vec<u8>,
    bytes_max: u64,
    seen: u64,
}

/// Whether the message went on or ended with this line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLine {
    More,
    End,
}

impl MessageBuffer {
    pub fn new(bytes_max: u64) -> MessageBuffer {
        MessageBuffer {
            bytes: Vec::new(),
            bytes_max,
            seen: 0,
        }
    }

    /// Takes one line as read, its line ending included.
    pub fn push_line(&mut self, line: &[u8]) -> DataLine {
        if line == b".\r\n" || line == b".\n" || line == b"." {
            return DataLine::End;
        }
        let line = line.strip_prefix(b".").unwrap_or(line);
        self.seen = self.seen.saturating_add(line.len() as u64);
        if self.seen > self.bytes_max {
            // Past the bound nothing is kept, and what was is let go.
            self.bytes = Vec::new();
        } else {
            self.bytes.extend_from_slice(line);
        }
        DataLine::More
    }

    /// The bytes the message may still grow by.
    pub fn room(&self) -> u64 {
        self.bytes_max.saturating_sub(self.seen)
    }

    /// Notes bytes of an over-long line that were read and dropped.
    pub fn skipped(&mut self, bytes: u64) {
        self.seen = self.seen.saturating_add(bytes);
        if self.seen > self.bytes_max {
            self.bytes = Vec::new();
        }
    }

    /// The message, or `None` when it was larger than `bytes_max`.
    pub fn finish(self) -> Option<Vec<u8>> {
        (self.seen <= self.bytes_max).then_some(self.bytes)
    }
}

/// `FROM:<a@b> PARAMS` → (`a@b`, `PARAMS`); the keyword is case-blind and
/// a space after the colon is tolerated. `<>` (a bounce) is an empty path.
fn path_argument<'a>(argument: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = argument.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = argument[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let (path, parameters) = rest.split_once('>')?;
    if path.contains(['<', ' ']) {
        return None;
    }
    Some((path, parameters.trim()))
}

#[cfg(test)]
mod tests;
