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
//! - `duty`: `Duty`, a named restartable loop (batcher, peers, membership)
//!   that `Node::start` returns for the caller's supervisor, and the
//!   test-only fault switch (`fault-injection` feature).
//! - `disk`: the data disk's free-space reserve every write is checked
//!   against (`DiskGuard`; below it, `ClusterError::DiskFull`).
//! - `batcher`: many client writes → one `Command::Batch` log entry (openraft 0.9
//!   flushes once per append on the leader, so batching is where write throughput comes from).
//! - `node`: `Node`, boot (initialise a one-voter cluster on first start, create
//!   the cluster CA and this node's certificate, bind the QUIC endpoint, serve
//!   Raft RPCs and forwarded requests on it), write, read barrier, status, shutdown.
//! - `identity`: the node's persistent identity in the data dir.
//! - `membership`: the leader promotes caught-up learners, keeping voters odd.
//! - `error`: `ClusterError`, split into retryable (`NoLeader`, `Timeout`) and fatal.
//! - `transport`: the QUIC transport (cluster CA, join token, frames, mutual-TLS endpoint, join handshake),
//!   openraft's network over it (`QuicNetwork`, `serve_raft`) and forwarding of writes and
//!   read-index requests to the leader (`ForwardClient`, `ForwardHandler`). `Node` runs
//!   Raft on `QuicNetwork` and serves `serve_raft_with`; joining and follower-side
//!   forwarding are not wired yet.
//!
//! ```text
//!   actors/runtime ──write(cmd)──▶ Node ──client_write──▶ openraft ──append──▶ LogStore (group commit)
//!                                   │                          └──apply──▶ StateMachine
//!                 ◀── CommandResult ┘ (after apply on this node: read-your-writes)
//! ```

pub mod batcher;
pub mod boot;
pub mod config;
pub mod disk;
pub mod duty;
pub mod error;
pub mod identity;
pub mod membership;
pub mod node;
pub mod proposer;
pub mod sealed;
pub mod status;
pub mod transport;

pub use boot::JoinTarget;
pub use config::ClusterConfig;
pub use duty::{Duty, arm_fault, fault_point};
pub use error::ClusterError;
pub use node::Node;
pub use picloud_storage::{NodeId, NodeInfo, TypeConfig};
pub use status::{ClusterStatus, MemberRole, MemberStatus, NodeStatus, Role, cluster_status};
