//! The QUIC transport between PiCloud nodes: one UDP port per node, mutual TLS
//! under a cluster CA, length-prefixed frames on typed streams, and the join
//! handshake that hands a new node its certificate.
//!
//! The transport proper (`ca` … `join`) knows node ids and addresses but
//! nothing of Raft. The `raft_*` modules put openraft's network on top of it,
//! and `forward` carries a follower's writes and read-index requests to the
//! leader; the join flow and forwarding in `Node` build on these.
//!
//! # Layout
//!
//! - `ca`: `ClusterCa` (create, store/load as PEM, issue node certificates) and
//!   `NodeCertificate`. Pure apart from file I/O.
//! - `cert_name`: the node id in a certificate's common name
//!   (`picloud-node-<id>`), read out of DER; used by `ca` and `tls` alike.
//! - `token`: `JoinToken` (`pct1.<CA hash>.<secret>`), parse errors, constant-time
//!   secret comparison.
//! - `frame`: u32 big-endian length + payload, with a limit and no allocation
//!   of a claimed size; bincode messages through `picloud_storage::codec`.
//! - `tls`: rustls configs (ring provider passed explicitly), the CA-pinning
//!   verifier for joiners.
//! - `endpoint`: `PeerEndpoint` (bind, connect, accept), `PeerConnection`,
//!   `PeerStream`, `StreamKind`, `TransportError`; the `removed` watch a
//!   member's `REMOVED` close sets.
//! - `contacts`: `Contacts`, when each member was last heard from in either
//!   direction (the endpoint's; for reachability in status and writes).
//! - `join`: the join exchange: `join` (joiner side, one attempt) and
//!   `answer_join` (member side, node id allocation as a callback); the
//!   secrets master keys handed to a joiner configured without one.
//! - `raft_rpc`: the Raft RPC messages on the wire, `RaftRpcConfig` (limits,
//!   timeouts) and `RaftRpcError` (also what a dial returns).
//! - `peers`: `PeerConnections`, the pool of outgoing member connections (one
//!   per target, one dial at a time), shared by `QuicNetwork` and `ForwardClient`.
//! - `raft_network`: `QuicNetwork` (openraft `RaftNetworkFactory`) and `QuicClient`
//!   (`RaftNetwork`): connections from the pool, snapshots streamed from the file.
//! - `raft_server`: `serve_peers` (the node's restartable `peers` duty) and
//!   `serve_raft` / `serve_raft_with`, the receiving side: append, vote,
//!   snapshot into a file from the state machine, then `install_full_snapshot`;
//!   forwarded requests to a `ForwardHandler`, joins to a `JoinHandler`.
//! - `pubsub`: `PubSubLinks`, ephemeral publishes and subscriber interest
//!   between members on long-lived `PubSub` streams (bounded queues, drops counted).
//! - `blocks`: the `Blocks` stream kind's messages (`BlockRequest`,
//!   `BlockReply`), their limits, and `BlockService`, what serves them (the
//!   node's `Files`); block streams have permits of their own.
//! - `logs`: `PeerLogLine` / `PeerLogs`, a member's recent log lines of an
//!   app as `ForwardRequest::Logs` carries them, and `LogSource`, what
//!   answers them (the app runtime's log book).
//! - `forward`: forwarding writes and read-index requests from a follower to the
//!   leader: wire messages, `ForwardHandler` (leader side, `RaftForwardHandler` over
//!   openraft), `ForwardClient` (follower side), `wait_applied`.
//!
//! ```text
//!   PeerEndpoint (UDP :7070) ── picloud-peer/1, mutual TLS ── PeerConnection ── PeerStream per request
//!         │                                                     kinds: RaftAppend, RaftVote, Snapshot, Forward, PubSub, Blocks
//!         └──────────────── picloud-join/1, server-auth only ── JoinConnection ── answer_join
//! ```

pub mod blocks;
pub mod ca;
pub mod cert_name;
pub mod contacts;
pub mod endpoint;
pub mod forward;
pub mod frame;
pub mod join;
pub mod logs;
pub mod peers;
pub mod pubsub;
pub mod raft_network;
pub mod raft_rpc;
pub mod raft_server;
pub mod tls;
pub mod token;

pub use blocks::{BlockRefusal, BlockReply, BlockRequest, BlockService};
pub use ca::{CaError, ClusterCa, NodeCertificate};
pub use contacts::Contacts;
pub use endpoint::{
    EndpointConfig, Incoming, JoinConnection, PeerConnection, PeerEndpoint, PeerStream, Refusals,
    StreamKind, TransportError,
};
pub use forward::{
    ForwardCallError, ForwardClient, ForwardError, ForwardFuture, ForwardHandler, ForwardReply,
    ForwardRequest, RaftForwardHandler, wait_applied,
};
pub use frame::{FRAME_BYTES_MAX, FrameError};
pub use join::{
    GrantedKeys, JoinAsk, JoinError, JoinGrant, JoinOutcome, JoinRefusal, JoinRequest, Joined,
    answer_join, check_join_key, join,
};
pub use peers::PeerConnections;
pub use pubsub::{PubSubFrame, PubSubLinks};
pub use raft_network::{QuicClient, QuicNetwork};
pub use raft_rpc::{RaftRpcConfig, RaftRpcError, SnapshotAnswer, SnapshotOffer};
pub use raft_server::{JoinHandler, serve_peers, serve_raft, serve_raft_with};
pub use token::{JoinToken, TokenError};
