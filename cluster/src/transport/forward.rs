//! Forwarding: a follower sends writes and read-index requests to the leader
//! over `Forward` streams, one request per stream.
//!
//! ```text
//!  follower                                           leader
//!  ForwardClient ──Forward stream: ForwardRequest ──▶ serve_raft_with(.., Some(handler))
//!     (PeerConnections, shared with QuicNetwork)         └─▶ ForwardHandler::write / read_index
//!                ◀── ForwardReply ───────────────────     (RaftForwardHandler: client_write / get_read_log_id)
//!  wait_applied(raft, log_index) ─▶ local read sees the write (read-your-writes / linearizable read)
//! ```
//!
//! A write is acknowledged only after the leader committed and applied it;
//! the reply carries the entry's log index, and the follower then waits
//! ([`wait_applied`]) until it has applied that index itself, so a read of
//! local state right after sees the write. A read-index reply is the log
//! index a linearizable read must wait for (the leader confirmed its
//! leadership with a quorum first).
//!
//! What a failure says about a write (see [`ForwardCallError::not_applied`]):
//! `NotLeader`, `NoLeader`, an unreachable leader or a request too large to
//! send mean the write was not applied, so it may be sent again (to the
//! leader named, or after an election). A timeout or a connection lost after
//! the request was sent leave the outcome unknown: the write may still apply.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use openraft::Raft;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::metrics::WaitError;
use picloud_storage::{Command, CommandResult, NodeId, TypeConfig};
use serde::{Deserialize, Serialize};

use super::endpoint::{PeerConnection, StreamKind, TransportError};
use super::frame::FrameError;
use super::peers::{Exchange, PeerConnections};
use super::raft_rpc::RaftRpcError;
use crate::error::ClusterError;
use crate::status::ClusterStatus;

/// What a follower asks the leader on a `Forward` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Propose this command; answer once it is committed and applied on the leader.
    Write(Command),
    /// Confirm leadership and answer the log index a linearizable read must wait for.
    ReadIndex,
    /// The cluster as the leader sees it (`picloud cluster status` through a follower).
    Status,
    /// The id of the called node's secrets master key (any member answers),
    /// so `cluster status` shows every node's and flags a mismatch.
    KeyId,
    /// The called node's recent log lines of `app` from position `from_seq`
    /// on (at most `limit`; any member answers, see `super::logs`).
    Logs {
        app: String,
        from_seq: u64,
        limit: u32,
    },
}

/// The leader's one answer on a `Forward` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ForwardReply {
    /// The write is committed; `result` is what `apply` produced, `log_index`
    /// the entry that carries it.
    Written {
        result: CommandResult,
        log_index: u64,
    },
    /// A read started now is linearizable once local state has applied `index`.
    ReadIndex {
        index: u64,
    },
    Failed(ForwardError),
    Status(ClusterStatus),
    /// The called node's current master key id; `None` when it has none.
    KeyId(Option<String>),
    /// The called node's log lines of the app asked.
    Logs(super::logs::PeerLogs),
}

/// Why the leader side could not serve a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// This node does not lead; `leader` is the one it knows of, if any.
    /// The write was not proposed.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// No leader is known (an election is under way), or this node could not
    /// confirm its leadership with a quorum. The write was not proposed.
    #[error("no leader")]
    NoLeader,
    /// The request did not finish in time on the leader; a write may still apply.
    #[error("the leader did not finish the request in time")]
    Timeout,
    /// Raft stopped on the leader, or failed otherwise.
    #[error("the leader cannot serve the request: {message}")]
    Unavailable { message: String },
    /// The leader's data disk is below its reserve: the write was not
    /// proposed (see `crate::disk`).
    #[error(
        "the leader's data disk has {available_bytes} bytes free, below its reserve of {reserve_bytes} bytes"
    )]
    DiskFull {
        available_bytes: u64,
        reserve_bytes: u64,
    },
}

/// A boxed future, so [`ForwardHandler`] stays object-safe.
pub type ForwardFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ForwardError>> + Send + 'a>>;

/// The leader side of forwarding: what `serve_raft_with` hands forwarded requests to.
pub trait ForwardHandler: Send + Sync {
    /// Proposes `command`; resolves once it is committed and applied here,
    /// with its result and log index.
    fn write(&self, command: Command) -> ForwardFuture<'_, (CommandResult, u64)>;

    /// Confirms leadership with a quorum and returns the log index a
    /// linearizable read must wait for.
    fn read_index(&self) -> ForwardFuture<'_, u64>;

    /// The cluster as this node (the leader) sees it. Not served by default.
    fn status(&self) -> ForwardFuture<'_, ClusterStatus> {
        Box::pin(async {
            Err(ForwardError::Unavailable {
                message: "cluster status is not served here".into(),
            })
        })
    }

    /// This node's secrets master key id, if it has a key. None by default.
    fn key_id(&self) -> Option<String> {
        None
    }

    /// What answers `Logs` requests; `None` (the default) refuses them.
    fn logs(&self) -> Option<&dyn super::logs::LogSource> {
        None
    }

    /// Where `PubSub` streams from peers go; `None` (the default) refuses them.
    fn pubsub(&self) -> Option<&super::pubsub::PubSubLinks> {
        None
    }

    /// What serves `Blocks` streams from peers; `None` (the default) refuses them.
    fn blocks(&self) -> Option<&dyn super::blocks::BlockService> {
        None
    }
}

/// [`ForwardHandler`] straight over openraft: one `client_write` per
/// forwarded write (no batching), `get_read_log_id` for read-index.
#[derive(Clone)]
pub struct RaftForwardHandler {
    raft: Raft<TypeConfig>,
}

impl RaftForwardHandler {
    pub fn new(raft: Raft<TypeConfig>) -> RaftForwardHandler {
        RaftForwardHandler { raft }
    }

    /// `ForwardToLeader` as seen here: another known leader → `NotLeader`;
    /// no leader, or this node itself (leadership in transition) → `NoLeader`.
    fn redirect(&self, leader: Option<NodeId>) -> ForwardError {
        let this_node = self.raft.metrics().borrow().id;
        match leader {
            Some(leader) if leader != this_node => ForwardError::NotLeader {
                leader: Some(leader),
            },
            _ => ForwardError::NoLeader,
        }
    }
}

impl std::fmt::Debug for RaftForwardHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftForwardHandler").finish_non_exhaustive()
    }
}

impl ForwardHandler for RaftForwardHandler {
    fn write(&self, command: Command) -> ForwardFuture<'_, (CommandResult, u64)> {
        Box::pin(async move {
            match self.raft.client_write(command).await {
                Ok(response) => Ok((response.data, response.log_id.index)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    Err(self.redirect(forward.leader_id))
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                    Err(ForwardError::Unavailable {
                        message: error.to_string(),
                    })
                }
                Err(RaftError::Fatal(fatal)) => Err(ForwardError::Unavailable {
                    message: fatal.to_string(),
                }),
            }
        })
    }

    fn read_index(&self) -> ForwardFuture<'_, u64> {
        Box::pin(async move {
            match self.raft.get_read_log_id().await {
                // `None` only before the first log entry: nothing to wait for.
                Ok((read_log_id, _applied)) => Ok(read_log_id.map_or(0, |log_id| log_id.index)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                    Err(self.redirect(forward.leader_id))
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                    Err(ForwardError::NoLeader)
                }
                Err(RaftError::Fatal(fatal)) => Err(ForwardError::Unavailable {
                    message: fatal.to_string(),
                }),
            }
        })
    }
}

/// Why a forwarded request got no useful answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardCallError {
    /// No connection to the leader could be made in time: nothing was sent.
    #[error("forward to node {leader}: {source}")]
    Unreachable {
        leader: NodeId,
        source: RaftRpcError,
    },
    /// The request does not fit in one frame: nothing was sent.
    #[error("forward to node {leader}: the request is too large: {source}")]
    TooLarge {
        leader: NodeId,
        source: TransportError,
    },
    /// The exchange failed on the connection; a write may or may not apply.
    #[error("forward to node {leader}: {source}")]
    Transport {
        leader: NodeId,
        source: TransportError,
    },
    /// The leader finished the stream without an answer; a write may or may not apply.
    #[error("node {leader} finished the forward stream without an answer")]
    NoAnswer { leader: NodeId },
    /// No answer within the client's timeout; a write may or may not apply.
    #[error("forward to node {leader}: no answer within {waited_ms} ms")]
    Timeout { leader: NodeId, waited_ms: u64 },
    /// The leader answered something that does not fit the request.
    #[error("node {leader} answered {reply} to a {request} request")]
    UnexpectedReply {
        leader: NodeId,
        request: &'static str,
        reply: String,
    },
    /// The leader answered with an error.
    #[error("node {leader}: {error}")]
    Refused { leader: NodeId, error: ForwardError },
}

impl ForwardCallError {
    /// Whether the request certainly did not take effect (a write may be
    /// sent again without applying twice).
    pub fn not_applied(&self) -> bool {
        match self {
            ForwardCallError::Unreachable { .. } | ForwardCallError::TooLarge { .. } => true,
            ForwardCallError::Refused { error, .. } => {
                matches!(
                    error,
                    ForwardError::NotLeader { .. }
                        | ForwardError::NoLeader
                        | ForwardError::DiskFull { .. }
                )
            }
            _ => false,
        }
    }

    /// What a forwarded write's failure tells its caller, once the failures
    /// that certainly did not apply were retried: a lost connection or a
    /// stream finished without an answer leave the outcome unknown
    /// ([`ClusterError::OutcomeUnknown`]); a request that ran out of time
    /// stays a [`ClusterError::Timeout`] of `waited_ms`.
    pub fn write_error(&self, waited_ms: u64) -> ClusterError {
        match self {
            ForwardCallError::Transport { leader, source } => ClusterError::OutcomeUnknown {
                leader: *leader,
                reason: format!("the connection failed after the request was sent: {source}"),
            },
            ForwardCallError::NoAnswer { leader } => ClusterError::OutcomeUnknown {
                leader: *leader,
                reason: "the leader finished the stream without an answer".into(),
            },
            _ => ClusterError::Timeout {
                operation: if self.not_applied() {
                    "forwarded write (not applied)"
                } else {
                    "forwarded write (outcome unknown)"
                },
                waited_ms,
            },
        }
    }

    /// The leader the called node named, when it answered `NotLeader`.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            ForwardCallError::Refused {
                error: ForwardError::NotLeader { leader },
                ..
            } => *leader,
            _ => None,
        }
    }
}

/// Sends forwarded requests to the leader over the shared member connections.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct ForwardClient {
    connections: PeerConnections,
    timeout: Duration,
}

impl ForwardClient {
    /// A client over `connections` (share the Raft network's pool:
    /// [`super::QuicNetwork::connections`]); each request, dial included,
    /// is bounded by `timeout`.
    pub fn new(connections: PeerConnections, timeout: Duration) -> ForwardClient {
        ForwardClient {
            connections,
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` to node `leader` at `peer` (`host:port`) on a stream
    /// of its own and returns the answer, within the client's timeout.
    pub async fn call(
        &self,
        leader: NodeId,
        peer: &str,
        request: &ForwardRequest,
    ) -> Result<ForwardReply, ForwardCallError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let connection = self
            .connections
            .connection(leader, peer, self.timeout)
            .await
            .map_err(|source| ForwardCallError::Unreachable { leader, source })?;
        match tokio::time::timeout_at(deadline, exchange(connection, request)).await {
            Ok(reply) => reply,
            Err(_) => Err(ForwardCallError::Timeout {
                leader,
                waited_ms: self.timeout.as_millis() as u64,
            }),
        }
    }

    /// Forwards a write to the leader; returns its result and log index once
    /// the leader has committed and applied it. Follow with [`wait_applied`]
    /// for read-your-writes on this node.
    pub async fn write_via(
        &self,
        leader: NodeId,
        peer: &str,
        command: Command,
    ) -> Result<(CommandResult, u64), ForwardCallError> {
        match self
            .call(leader, peer, &ForwardRequest::Write(command))
            .await?
        {
            ForwardReply::Written { result, log_index } => Ok((result, log_index)),
            ForwardReply::Failed(error) => Err(ForwardCallError::Refused { leader, error }),
            other => Err(ForwardCallError::UnexpectedReply {
                leader,
                request: "write",
                reply: format!("{other:?}"),
            }),
        }
    }

    /// Asks the leader for the read index. Follow with [`wait_applied`]; a
    /// local read after that is linearizable.
    pub async fn read_index_via(
        &self,
        leader: NodeId,
        peer: &str,
    ) -> Result<u64, ForwardCallError> {
        match self.call(leader, peer, &ForwardRequest::ReadIndex).await? {
            ForwardReply::ReadIndex { index } => Ok(index),
            ForwardReply::Failed(error) => Err(ForwardCallError::Refused { leader, error }),
            other => Err(ForwardCallError::UnexpectedReply {
                leader,
                request: "read-index",
                reply: format!("{other:?}"),
            }),
        }
    }
}

/// One request, one answer, on a fresh `Forward` stream. Dropped before the
/// answer (timeout), the stream is reset, not finished.
async fn exchange(
    connection: PeerConnection,
    request: &ForwardRequest,
) -> Result<ForwardReply, ForwardCallError> {
    let leader = connection.peer_node_id();
    let transport = |source| ForwardCallError::Transport { leader, source };
    let stream = connection
        .open(StreamKind::Forward)
        .await
        .map_err(transport)?;
    let mut exchange = Exchange::new(stream);
    if let Err(error) = exchange.stream.send(request).await {
        if let TransportError::Frame {
            source: FrameError::TooLarge { .. },
            ..
        } = &error
        {
            return Err(ForwardCallError::TooLarge {
                leader,
                source: error,
            });
        }
        return Err(transport(error));
    }
    exchange.stream.finish().map_err(transport)?;
    let reply = exchange
        .stream
        .recv::<ForwardReply>()
        .await
        .map_err(transport)?;
    exchange.complete = true;
    reply.ok_or(ForwardCallError::NoAnswer { leader })
}

/// Waits (at most `timeout`) until `raft` has applied log index `index`, e.g.
/// the index of a forwarded write or a read index.
pub async fn wait_applied(
    raft: &Raft<TypeConfig>,
    index: u64,
    timeout: Duration,
) -> Result<(), ClusterError> {
    match raft
        .wait(Some(timeout))
        .applied_index_at_least(Some(index), format!("apply log index {index}"))
        .await
    {
        Ok(_) => Ok(()),
        Err(WaitError::Timeout(..)) => Err(ClusterError::Timeout {
            operation: "local apply",
            waited_ms: timeout.as_millis() as u64,
        }),
        Err(WaitError::ShuttingDown) => Err(ClusterError::Stopped {
            message: "raft is shutting down".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picloud_storage::codec;
    use picloud_storage::{KvOp, KvOpResult};

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        value: &T,
    ) {
        let bytes = codec::encode(value).expect("encode");
        let back: T = codec::decode(&bytes, 1 << 20).expect("decode");
        assert_eq!(&back, value);
    }

    #[test]
    fn forward_messages_round_trip_through_the_codec() {
        round_trip(&ForwardRequest::Write(Command::Kv {
            app: "a".into(),
            op: KvOp::Set {
                key: "k".into(),
                value: b"v".to_vec(),
                expires_at_ms: None,
            },
            now_ms: 1,
        }));
        round_trip(&ForwardRequest::ReadIndex);
        round_trip(&ForwardReply::Written {
            result: CommandResult::Kv(KvOpResult::Set),
            log_index: 42,
        });
        round_trip(&ForwardReply::ReadIndex { index: 7 });
        for error in [
            ForwardError::NotLeader { leader: Some(3) },
            ForwardError::NotLeader { leader: None },
            ForwardError::NoLeader,
            ForwardError::Timeout,
            ForwardError::Unavailable {
                message: "stopped".into(),
            },
            ForwardError::DiskFull {
                available_bytes: 1,
                reserve_bytes: 2,
            },
        ] {
            round_trip(&ForwardReply::Failed(error));
        }
    }

    #[test]
    fn only_refusals_before_proposing_count_as_not_applied() {
        let refused = |error| ForwardCallError::Refused { leader: 1, error };
        assert!(refused(ForwardError::NotLeader { leader: Some(2) }).not_applied());
        assert_eq!(
            refused(ForwardError::NotLeader { leader: Some(2) }).leader_hint(),
            Some(2)
        );
        assert!(refused(ForwardError::NoLeader).not_applied());
        let disk_full = ForwardError::DiskFull {
            available_bytes: 1,
            reserve_bytes: 2,
        };
        assert!(refused(disk_full).not_applied());
        assert!(!refused(ForwardError::Timeout).not_applied());
        assert!(
            !ForwardCallError::Timeout {
                leader: 1,
                waited_ms: 5
            }
            .not_applied()
        );
        assert!(!ForwardCallError::NoAnswer { leader: 1 }.not_applied());
    }

    /// A write whose answer never came is `outcome_unknown`, never a
    /// timeout of 0 ms; one that ran out of time stays a timeout.
    #[test]
    fn a_lost_answer_leaves_the_outcome_unknown() {
        let lost = ForwardCallError::Transport {
            leader: 2,
            source: TransportError::ConnectionLost {
                peer: 2,
                reason: "closed by peer".into(),
            },
        };
        for error in [lost, ForwardCallError::NoAnswer { leader: 2 }] {
            let cluster = error.write_error(5_000);
            assert!(
                matches!(cluster, ClusterError::OutcomeUnknown { leader: 2, .. }),
                "{cluster:?}"
            );
            assert!(cluster.to_string().contains("may or may not have applied"));
        }
        let slow = ForwardCallError::Timeout {
            leader: 2,
            waited_ms: 5_000,
        };
        assert!(matches!(
            slow.write_error(5_000),
            ClusterError::Timeout {
                waited_ms: 5_000,
                ..
            }
        ));
    }
}
