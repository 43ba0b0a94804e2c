//! Another member's log lines of an app, asked on a `Forward` stream
//! (`ForwardRequest::Logs`), so `picloud logs APP` through one node shows the
//! lines of every node.
//!
//! Logs stay node-local (they are diagnostics and never go through Raft);
//! this module only carries a member's recent lines on request. The cluster
//! crate knows nothing of the app runtime's log book: the node answers
//! through a [`LogSource`] the runtime hands it once it has one.

use serde::{Deserialize, Serialize};

/// Most lines one member sends in one answer, whatever the asker's limit:
/// it bounds the reply frame.
pub const PEER_LOG_LINES_MAX: usize = 1_000;

/// One log line of an app as a member sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLogLine {
    /// Position in the sending node's log of the app.
    pub seq: u64,
    pub ts_ms: u64,
    pub level: String,
    pub message: String,
}

/// A member's answer: its lines from the asked position on (the last
/// `limit` of them), and the position its next line will have, from which a
/// follower asks next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLogs {
    pub lines: Vec<PeerLogLine>,
    pub next_seq: u64,
}

/// What answers `ForwardRequest::Logs` on this node (the app runtime's log book).
pub trait LogSource: Send + Sync {
    /// The last `limit` lines of `app` whose position is at least
    /// `from_seq`, oldest first, and the position of the next line.
    fn lines(&self, app: &str, from_seq: u64, limit: usize) -> PeerLogs;
}
