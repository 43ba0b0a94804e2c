//! PiCloud's cluster layer: one openraft group and the way writes and reads go through it.
//!
//! `cluster` turns the storage crate's log store and state machine into a running
//! Raft node and gives the layers above three verbs: [`Node::write`] (propose a
//! command and wait until it is applied here), [`Node::read_barrier`] (wait until
//! a linearizable read may be served from local state) and [`Node::reader`]
//! (the local state). It never touches Lua or HTTP.
//!
//! # Layout
//!
//! - `config`: `ClusterConfig`, Raft timings and limits with their defaults.
//! - `batcher`: many client writes → one `Command::Batch` log entry (openraft 0.9
//!   flushes once per append on the leader, so batching is where write throughput comes from).
//! - `node`: `Node`, boot (initialise a one-voter cluster on first start), write,
//!   read barrier, status, shutdown.
//! - `network`: the openraft network factory. Single-node clusters never send an
//!   RPC; the QUIC transport (join, forwarding) plugs in here.
//! - `identity`: the node's persistent identity in the data dir.
//! - `error`: `ClusterError`, split into retryable (`NoLeader`, `Timeout`) and fatal.
//! - `transport`: the QUIC transport (cluster CA, join token, frames, mutual-TLS endpoint, join handshake),
//!   openraft's network over it (`QuicNetwork`, `serve_raft`) and forwarding of writes and
//!   read-index requests to the leader (`ForwardClient`, `ForwardHandler`); not wired into `Node` yet.
//!
//! ```text
//!   actors/runtime ──write(cmd)──▶ Node ──client_write──▶ openraft ──append──▶ LogStore (group commit)
//!                                   │                          └──apply──▶ StateMachine
//!                 ◀── CommandResult ┘ (after apply on this node: read-your-writes)
//! ```

pub mod batcher;
pub mod config;
pub mod error;
pub mod identity;
pub mod network;
pub mod node;
pub mod transport;

pub use config::ClusterConfig;
pub use error::ClusterError;
pub use node::{Node, NodeStatus};
pub use picloud_storage::{NodeId, NodeInfo, TypeConfig};
