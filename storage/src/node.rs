//! What identifies a cluster member: its id and its addresses.
//!
//! These sit below everything else in the crate (commands, errors, trigger
//! claims and the openraft type configuration all name a node), so they
//! live on their own: `types` builds on `command`, and `command` only needs
//! these two.

use serde::{Deserialize, Serialize};

/// A node's id in the cluster. Allocated from the log, never reused.
pub type NodeId = u64;

/// What the cluster knows about a node's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The HTTP gateway address (`host:port`).
    pub http: String,
    /// The QUIC peer address (`host:port`).
    pub peer: String,
}
