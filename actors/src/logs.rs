//! Per-app log lines kept on this node: a bounded ring for `logs APP` and a
//! broadcast channel for `logs APP --follow`.
//!
//! Logs are node-local and not replicated: they are diagnostics, and putting
//! them on the Raft log would cost an fsync per `log.info`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use picloud_lua_sdk::LogLevel;
use serde::Serialize;
use tokio::sync::broadcast;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Position in this node's log of the app; increases by one per line.
    pub seq: u64,
    pub ts_ms: u64,
    pub level: &'static str,
    pub message: String,
}

#[derive(Debug)]
struct AppLog {
    next_seq: u64,
    lines: VecDeque<LogLine>,
    follow: broadcast::Sender<LogLine>,
}

/// Bounds of the log book.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Lines kept per app; older lines are dropped.
    pub lines_per_app_max: usize,
    /// Bytes kept of one line; longer messages are cut and marked.
    pub line_bytes_max: usize,
    /// Lines a slow `--follow` reader may fall behind before it skips ahead.
    pub follow_buffer_lines: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            lines_per_app_max: 1_000,
            line_bytes_max: 4_096,
            follow_buffer_lines: 256,
        }
    }
}

/// The log lines of every app on this node.
#[derive(Debug, Clone)]
pub struct LogBook {
    apps: Arc<Mutex<HashMap<String, AppLog>>>,
    limits: LogLimits,
}

impl LogBook {
    pub fn new(limits: LogLimits) -> LogBook {
        LogBook {
            apps: Arc::new(Mutex::new(HashMap::new())),
            limits,
        }
    }

    fn with_app<T>(&self, app: &str, f: impl FnOnce(&mut AppLog) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-push; the ring
        // is still structurally sound, so keep using it.
        let mut apps = self
            .apps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let entry = apps.entry(app.to_string()).or_insert_with(|| AppLog {
            next_seq: 1,
            lines: VecDeque::new(),
            follow: broadcast::channel(self.limits.follow_buffer_lines.max(1)).0,
        });
        f(entry)
    }

    pub fn push(&self, app: &str, level: LogLevel, mut message: String, ts_ms: u64) {
        if message.len() > self.limits.line_bytes_max {
            let mut cut = self.limits.line_bytes_max;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …[truncated]");
        }
        let lines_max = self.limits.lines_per_app_max;
        self.with_app(app, |log| {
            let line = LogLine {
                seq: log.next_seq,
                ts_ms,
                level: level.as_str(),
                message,
            };
            log.next_seq += 1;
            if log.lines.len() >= lines_max {
                log.lines.pop_front();
            }
            log.lines.push_back(line.clone());
            // No follower is not an error.
            let _ = log.follow.send(line);
        });
    }

    /// The last `limit` lines of `app`, oldest first.
    pub fn recent(&self, app: &str, limit: usize) -> Vec<LogLine> {
        self.with_app(app, |log| {
            let skip = log.lines.len().saturating_sub(limit);
            log.lines.iter().skip(skip).cloned().collect()
        })
    }

    /// Recent lines plus a receiver for every later one, taken under one lock so
    /// no line falls between the two.
    pub fn follow(&self, app: &str, limit: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        self.with_app(app, |log| {
            let skip = log.lines.len().saturating_sub(limit);
            (
                log.lines.iter().skip(skip).cloned().collect(),
                log.follow.subscribe(),
            )
        })
    }

    /// Forgets an app's lines (after the app is deleted).
    pub fn forget(&self, app: &str) {
        let mut apps = self
            .apps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        apps.remove(app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_follow_sees_new_lines() {
        let book = LogBook::new(LogLimits {
            lines_per_app_max: 3,
            line_bytes_max: 8,
            follow_buffer_lines: 4,
        });
        for n in 0..5 {
            book.push("a", LogLevel::Info, format!("line {n}"), n);
        }
        let recent = book.recent("a", 10);
        assert_eq!(
            recent.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let (backlog, mut rx) = book.follow("a", 1);
        assert_eq!(backlog.len(), 1);
        book.push("a", LogLevel::Warn, "a very long message".into(), 9);
        let line = rx.try_recv().expect("followed line");
        assert_eq!(line.level, "warn");
        assert!(line.message.starts_with("a very l") && line.message.ends_with("[truncated]"));
        assert!(book.recent("b", 10).is_empty());
    }
}
