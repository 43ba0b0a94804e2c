//! The QUIC transport between PiCloud nodes: one UDP port per node, mutual TLS
//! under a cluster CA, length-prefixed frames on typed streams, and the join
//! handshake that hands a new node its certificate.
//!
//! This module is self-contained: it knows node ids and addresses but nothing
//! of Raft. The openraft network, write forwarding and the join flow in `Node`
//! build on it.
//!
//! # Layout
//!
//! - `ca`: `ClusterCa` (create, store/load as PEM, issue node certificates) and
//!   `NodeCertificate`. Pure apart from file I/O.
//! - `token`: `JoinToken` (`pct1.<CA hash>.<secret>`), parse errors, constant-time
//!   secret comparison.
//! - `frame`: u32 big-endian length + payload, with a limit and no allocation
//!   of a claimed size; bincode messages through `picloud_storage::codec`.
//! - `tls`: rustls configs (ring provider passed explicitly), the CA-pinning
//!   verifier for joiners, the node id out of a certificate's common name.
//! - `endpoint`: `PeerEndpoint` (bind, connect, accept), `PeerConnection`,
//!   `PeerStream`, `StreamKind`, `TransportError`.
//! - `join`: the join exchange: `join` (joiner side) and `answer_join` (member
//!   side, node id allocation as a callback).
//!
//! ```text
//!   PeerEndpoint (UDP :7070) ── picloud-peer/1, mutual TLS ── PeerConnection ── PeerStream per request
//!         │                                                     kinds: RaftAppend, RaftVote, Snapshot, Forward, PubSub
//!         └──────────────── picloud-join/1, server-auth only ── JoinConnection ── answer_join
//! ```

pub mod ca;
pub mod endpoint;
pub mod frame;
pub mod join;
pub mod tls;
pub mod token;

pub use ca::{CaError, ClusterCa, NodeCertificate};
pub use endpoint::{
    EndpointConfig, Incoming, JoinConnection, PeerConnection, PeerEndpoint, PeerStream, Refusals,
    StreamKind, TransportError,
};
pub use frame::{FRAME_BYTES_MAX, FrameError};
pub use join::{
    JoinError, JoinGrant, JoinOutcome, JoinRefusal, JoinRequest, Joined, answer_join, join,
};
pub use token::{JoinToken, TokenError};
