//! The openraft type configuration.
//!
//! It lives here, not in `cluster`, because the log store and state machine
//! implement openraft's storage traits for this exact configuration; `cluster`
//! re-exports it.

use crate::command::{Command, CommandResult};
pub use crate::node::{NodeId, NodeInfo};

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
