//! Cluster errors. Retryable ones (`NoLeader`, `Timeout`) are kept apart from
//! fatal ones so the gateway can answer 503 for the first and 500 for the rest.

use picloud_storage::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No leader was known within the configured wait.
    #[error("no leader elected within {waited_ms} ms")]
    NoLeader { waited_ms: u64 },
    /// A majority of the voters cannot be reached from this node (it knows
    /// no leader, or it leads but its followers are silent): a write could
    /// not commit, so it fails at once instead of waiting out its timeout.
    /// Retryable: the same code as `NoLeader` (`no_leader`) for clients.
    #[error("no quorum: {}; writes resume when a majority of voters is back", crate::status::describe_unreachable(unreachable, *voters))]
    NoQuorum {
        voters: usize,
        unreachable: Vec<NodeId>,
    },
    /// Another node leads; writes must go there (forwarding arrives with the QUIC transport).
    #[error("node {leader} is the leader and could not be reached from this node")]
    NotLeader { leader: NodeId },
    /// The write or read did not finish in time; it may still apply.
    #[error("{operation} did not finish within {waited_ms} ms")]
    Timeout {
        operation: &'static str,
        waited_ms: u64,
    },
    /// A forwarded write reached the leader's connection but its answer never
    /// came (the connection was lost, or the leader changed, after the request
    /// was sent): unlike [`ClusterError::Timeout`] this says the write may or
    /// may not have applied, and sending it again may apply it twice.
    #[error("forwarded write to node {leader}: {reason}; the write may or may not have applied")]
    OutcomeUnknown { leader: NodeId, reason: String },
    /// The node is shutting down or Raft stopped.
    #[error("raft stopped: {message}")]
    Stopped { message: String },
    #[error("storage: {0}")]
    Storage(#[from] picloud_storage::StorageError),
    #[error("identity file {path}: {message}")]
    Identity { path: String, message: String },
    /// The files' block store (`<data-dir>/blocks`) could not be opened.
    #[error("block store {path}: {source}")]
    BlockStore {
        path: String,
        source: std::io::Error,
    },
    #[error("raft: {message}")]
    Raft { message: String },
    /// The QUIC endpoint or the node's TLS identity could not be set up.
    #[error("peer transport: {message}")]
    Transport { message: String },
    /// Another backup is reading this node's state (one at a time).
    #[error("another backup is reading this node's state; retry when it ends")]
    BackupBusy,
    /// The write queue stayed full; shed load rather than queue without bound.
    #[error("the write queue is full (write_queue_max); retry shortly")]
    Overloaded,
    /// This node's (or the leader's) data disk is below its free-space
    /// reserve; the write was not proposed. Not retryable until space is freed.
    #[error(transparent)]
    DiskFull(#[from] crate::disk::DiskFull),
    /// A cluster secret in the log (CA key, join secret) does not open with
    /// this node's secrets master key; `SealError::code` names it
    /// (`secret_key_mismatch` for a wrong key).
    #[error(transparent)]
    ClusterSecret(#[from] crate::sealed::SealError),
}

impl ClusterError {
    /// A copy for every writer of a failed batch (`StorageError` is not
    /// `Clone`, so non-retryable errors are carried by their message).
    pub fn duplicate(&self) -> ClusterError {
        match self {
            ClusterError::NoLeader { waited_ms } => ClusterError::NoLeader {
                waited_ms: *waited_ms,
            },
            ClusterError::NoQuorum {
                voters,
                unreachable,
            } => ClusterError::NoQuorum {
                voters: *voters,
                unreachable: unreachable.clone(),
            },
            ClusterError::NotLeader { leader } => ClusterError::NotLeader { leader: *leader },
            ClusterError::Timeout {
                operation,
                waited_ms,
            } => ClusterError::Timeout {
                operation,
                waited_ms: *waited_ms,
            },
            ClusterError::OutcomeUnknown { leader, reason } => ClusterError::OutcomeUnknown {
                leader: *leader,
                reason: reason.clone(),
            },
            ClusterError::Stopped { message } => ClusterError::Stopped {
                message: message.clone(),
            },
            ClusterError::DiskFull(full) => ClusterError::DiskFull(*full),
            other => ClusterError::Raft {
                message: other.to_string(),
            },
        }
    }

    /// The write queue was full for longer than the write timeout.
    pub fn overloaded() -> ClusterError {
        ClusterError::Overloaded
    }

    /// Whether the caller may retry the same request later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::NoLeader { .. }
                | ClusterError::NoQuorum { .. }
                | ClusterError::NotLeader { .. }
                | ClusterError::Timeout { .. }
                | ClusterError::Overloaded
        )
    }
}
