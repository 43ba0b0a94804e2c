//! The Raft RPC messages on the wire, and the limits both sides share.
//!
//! Every message is one frame encoded with the project's bincode codec
//! (`picloud_storage::codec`, through the stream's frame helpers). openraft's
//! request and response types derive serde (feature `serde`) and use only
//! plain structs and externally tagged enums, which bincode can decode.
//!
//! One request per stream: a stream is opened, the request sent, our side
//! finished, and the one reply read. openraft cancels an RPC that outlives its
//! timeout by dropping the future; with one stream per request a cancelled
//! RPC costs only its own stream, never the framing of the next request.
//!
//! ```text
//!  RaftAppend:  AppendEntriesRequest ─▶            ◀─ AppendReply  (Result<AppendEntriesResponse, RaftError>)
//!  RaftVote:    VoteRequest          ─▶            ◀─ VoteReply    (Result<VoteResponse, RaftError>)
//!  Snapshot:    SnapshotOffer        ─▶            ◀─ SnapshotAnswer::Send   (or ::Done at once: stale leader)
//!               raw chunk frames (≤ snapshot_chunk_bytes each) … finish ─▶
//!                                                  ◀─ SnapshotAnswer::Done(Result<SnapshotResponse, Fatal>)
//! ```

use std::time::Duration;

use openraft::error::{Fatal, RaftError};
use openraft::raft::{AppendEntriesResponse, SnapshotResponse, VoteResponse};
use openraft::{SnapshotMeta, Vote};
use picloud_storage::{NodeId, NodeInfo};
use serde::{Deserialize, Serialize};

use super::endpoint::{StreamKind, TransportError};

/// What a follower answers to an append (heartbeats included).
pub type AppendReply = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;

/// What a node answers to a vote request.
pub type VoteReply = Result<VoteResponse<NodeId>, RaftError<NodeId>>;

/// What a node answers once a snapshot is installed (or refused): openraft's
/// `install_full_snapshot` fails only with `Fatal` (the receiver stopped).
pub type SnapshotReply = Result<SnapshotResponse<NodeId>, Fatal<NodeId>>;

/// The first frame of a snapshot stream: which snapshot, under which leader
/// vote, and how many bytes of file follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOffer {
    pub vote: Vote<NodeId>,
    pub meta: SnapshotMeta<NodeId, NodeInfo>,
    /// The file's exact length; the receiver refuses more and treats fewer as a cut-off transfer.
    pub size_bytes: u64,
}

/// The receiver's answers on a snapshot stream.
// One or two of these per snapshot transfer: boxing the large variant would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotAnswer {
    /// Send the file.
    Send,
    /// The outcome: installed, or refused because the receiver has seen a
    /// higher vote (then sent right after the offer, before any file bytes).
    Done(SnapshotReply),
}

/// Limits and timeouts of the Raft RPCs, for both the client ([`super::QuicNetwork`])
/// and the server ([`super::serve_raft`]). Each has a default fit for a Pi.
#[derive(Debug, Clone)]
pub struct RaftRpcConfig {
    /// Bytes of snapshot file per frame. A sender holds one chunk in memory,
    /// and so does a receiver; must stay under the endpoint's frame limit.
    pub snapshot_chunk_bytes: usize,
    /// The whole snapshot transfer, from dial to the receiver's install, must
    /// finish within this. openraft's own `install_snapshot_timeout` (200 ms by
    /// default) is meant for one chunk of its built-in chunked transfer and is
    /// far too short for streaming and installing a whole state.
    pub snapshot_timeout_ms: u64,
    /// A snapshot transfer that makes no progress (no chunk accepted, no
    /// answer) for this long is abandoned, long before `snapshot_timeout_ms`.
    pub snapshot_stall_timeout_ms: u64,
    /// Server side: streams served at once on one connection. Further streams
    /// wait (QUIC flow control holds them at the peer) until one finishes.
    pub streams_per_connection_max: usize,
    /// Server side: a peer that opens a stream has this long to send its request.
    pub request_timeout_ms: u64,
    /// Server side: a forwarded write or read-index request is answered
    /// `Timeout` if the local handler has not finished within this (a write
    /// may still apply afterwards). Keep it below the forwarding client's timeout.
    pub forward_timeout_ms: u64,
    /// Server side: vote requests wait until this instant before they are
    /// answered. A node sets it to its start plus `election_timeout_max`:
    /// openraft forgets when it last heard from a leader when it restarts,
    /// and would otherwise grant a vote its earlier self promised a leader
    /// it would not (that promise is what the leader's read lease rests on,
    /// see `crate::read_batch`). `None`: answered at once.
    pub votes_after: Option<tokio::time::Instant>,
}

impl Default for RaftRpcConfig {
    fn default() -> Self {
        RaftRpcConfig {
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_timeout_ms: 10 * 60 * 1000,
            snapshot_stall_timeout_ms: 30_000,
            streams_per_connection_max: 32,
            request_timeout_ms: 10_000,
            forward_timeout_ms: 10_000,
            votes_after: None,
        }
    }
}

impl RaftRpcConfig {
    pub fn snapshot_timeout(&self) -> Duration {
        Duration::from_millis(self.snapshot_timeout_ms)
    }

    pub fn snapshot_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.snapshot_stall_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn forward_timeout(&self) -> Duration {
        Duration::from_millis(self.forward_timeout_ms)
    }

    /// The chunk size actually used: at least one byte (a zero would never
    /// make progress).
    pub fn chunk_bytes(&self) -> usize {
        self.snapshot_chunk_bytes.max(1)
    }
}

/// Why a Raft RPC did not get an answer. The dial variants (`BadAddress`,
/// `Dial`, `DialPending`, `DialTask`) are also what [`PeerConnections`] returns.
#[derive(Debug, thiserror::Error)]
pub enum RaftRpcError {
    #[error("node {target}: peer address {peer:?} does not resolve: {reason}")]
    BadAddress {
        target: NodeId,
        peer: String,
        reason: String,
    },
    #[error("dial node {target} at {peer}: {source}")]
    Dial {
        target: NodeId,
        peer: String,
        source: TransportError,
    },
    #[error("node {target} at {peer}: still connecting after {waited_ms} ms")]
    DialPending {
        target: NodeId,
        peer: String,
        waited_ms: u64,
    },
    #[error("node {target}: the dial task failed: {reason}")]
    DialTask { target: NodeId, reason: String },
    #[error("node {target}: {source}")]
    Transport {
        target: NodeId,
        source: TransportError,
    },
    #[error("node {target} finished the {kind:?} stream without an answer")]
    NoAnswer { target: NodeId, kind: StreamKind },
    #[error("node {target}: {what} made no progress for {waited_ms} ms")]
    Stalled {
        target: NodeId,
        what: &'static str,
        waited_ms: u64,
    },
    #[error("node {target} answered a snapshot offer out of turn: {answer}")]
    UnexpectedAnswer { target: NodeId, answer: String },
    #[error("chunked snapshot transfer is not used by this network (full_snapshot streams)")]
    ChunkedSnapshotUnused,
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, StoredMembership};
    use picloud_storage::codec;
    use picloud_storage::{Command, KvOp, TypeConfig};

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        value: &T,
    ) {
        let bytes = codec::encode(value).expect("encode");
        let back: T = codec::decode(&bytes, 1 << 20).expect("decode");
        assert_eq!(&back, value);
    }

    #[test]
    fn raft_messages_round_trip_through_the_codec() {
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 7);
        let append = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id),
            leader_commit: Some(log_id),
            entries: vec![Entry {
                log_id: LogId::new(CommittedLeaderId::new(3, 1), 8),
                payload: EntryPayload::Normal(Command::Kv {
                    app: "a".into(),
                    op: KvOp::Delete { key: "k".into() },
                    now_ms: 1,
                }),
            }],
        };
        let bytes = codec::encode(&append).expect("encode");
        let back: AppendEntriesRequest<TypeConfig> =
            codec::decode(&bytes, 1 << 20).expect("decode");
        assert_eq!(back.entries.len(), 1);
        assert_eq!(back.vote, append.vote);
        assert_eq!(back.prev_log_id, append.prev_log_id);

        round_trip(&VoteRequest::new(Vote::new(4, 2), Some(log_id)));
        let vote_reply: VoteReply = Ok(VoteResponse::new(Vote::new(4, 2), Some(log_id), true));
        round_trip(&vote_reply);
        let refused: AppendReply = Err(RaftError::Fatal(Fatal::Stopped));
        round_trip(&refused);
        let conflict: AppendReply = Ok(AppendEntriesResponse::Conflict);
        round_trip(&conflict);
        round_trip(&SnapshotOffer {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-7-1".into(),
            },
            size_bytes: 1234,
        });
        round_trip(&SnapshotAnswer::Done(Ok(SnapshotResponse::new(Vote::new(
            5, 2,
        )))));
        round_trip(&SnapshotAnswer::Send);
    }
}
