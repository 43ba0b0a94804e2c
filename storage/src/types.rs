//! The openraft type configuration.
//!
//! It lives here, not in `cluster`, because the log store and state machine
//! implement openraft's storage traits for this exact configuration; `cluster`
//! re-exports it.

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResult};

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

openraft::declare_raft_types!(
    /// PiCloud's one Raft group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);
