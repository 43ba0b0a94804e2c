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
//! - `config`: `ClusterConfig`, Raft timings, limits and the secrets master
//!   keys, with their defaults.
//! - `boot`: `plan_boot`, the pure boot decision (restart, first start, join,
//!   refuse) from the data dir's identity, TLS files and `--join`;
//!   `JoinTarget` (with `JoinKeys`: the joiner's master key, or how to keep
//!   the cluster's keys the join hands over).
//! - `node`: `Node`: start (carries out the boot plan, opens storage, binds
//!   the QUIC endpoint, starts Raft, initialises a one-voter cluster on a
//!   first start), write, read barrier, cluster secrets and the join token,
//!   status and readiness, the `removed` watch, shutdown; the member's side of joins (`NodeJoins`) and of
//!   forwarding (`NodeForwardHandler`).
//! - `read_batch`: linearizable reads on the leader: `ReadLease` (no round
//!   for half an election timeout after a confirmed check) and `ReadBatches`
//!   (one leadership check per round, never one that began before them).
//! - `proposer`: `Proposer`, the one path a write takes into Raft: proposed
//!   here when this node leads, forwarded to the leader when another does;
//!   failed at once without a reachable quorum.
//! - `batcher`: many client writes → one `Command::Batch` log entry (openraft 0.9
//!   flushes once per append on the leader, so batching is where write throughput comes from).
//! - `duty`: `Duty`, a named restartable loop (the batcher and the peer
//!   accept loop, which `Node::start` returns for the caller's supervisor;
//!   the layers above build theirs the same way), and the test-only fault
//!   switch (`fault-injection` feature).
//! - `membership`: what the leader's membership duty (in `actors`) plans
//!   from (`MembershipView`, `Node::membership_view`) and the changes it
//!   makes (`MembershipChange`, `Node::change_membership`).
//! - `status`: `NodeStatus`, `ClusterStatus`, `MemberStatus`, the `Role` and
//!   `MemberRole` enums, `cluster_status` (pure, from Raft metrics and when
//!   each member was last heard from: reachability and quorum),
//!   `readiness` (`/_/ready`) and `apply_key_ids` (each member's master key
//!   id, a mismatch flagged).
//! - `sealed`: the cluster CA key and the join secret sealed under the
//!   secrets master key before they enter the log (plain records from older
//!   nodes still read).
//! - `disk`: the data disk's free-space reserve every write is checked
//!   against (`DiskGuard`; below it, `ClusterError::DiskFull`).
//! - `files`: files' content as blocks outside the log (`Files`: upload to
//!   the replicas placed by rendezvous hashing, read locally or from a
//!   replica, `Has`/`Pull`/`Drop` for repair, the local store for GC).
//! - `histogram`: `Histogram`, fixed-bucket latency histograms in atomics
//!   (Raft commit latency; the gateway's request latency).
//! - `identity`: the node's persistent identity in the data dir.
//! - `backup`: the backup file format (`PICBACK1`), the node's streamed
//!   side (`prepare`: read barrier, then an openraft snapshot at or after
//!   the applied index; blocks fetched from the members holding them) and
//!   the offline `verify` and `restore` (a new one-node cluster).
//! - `error`: `ClusterError`, split into retryable (`NoLeader`, `NoQuorum`, `Timeout`) and fatal.
//! - `transport`: the QUIC transport (cluster CA, join token, frames, mutual-TLS endpoint, join handshake),
//!   openraft's network over it (`QuicNetwork`, `serve_peers`) and forwarding of writes and
//!   read-index requests to the leader (`ForwardClient`, `ForwardHandler`). A new
//!   node joins through any member (`--join`); a follower forwards writes and
//!   read-index requests to the leader.
//!
//! Modules depend downwards only (`.ci/import-cycles` lists any circle):
//! `node` → `boot`, `batcher` → `proposer` → `transport` → `status`.
//!
//! ```text
//!   actors/runtime ──write(cmd)──▶ Node ──client_write──▶ openraft ──append──▶ LogStore (group commit)
//!                                   │                          └──apply──▶ StateMachine
//!                 ◀── CommandResult ┘ (after apply on this node: read-your-writes)
//! ```

pub mod backup;
pub mod batcher;
pub mod boot;
pub mod config;
pub mod disk;
pub mod duty;
pub mod error;
pub mod files;
pub mod histogram;
pub mod identity;
pub mod membership;
pub mod node;
pub mod proposer;
pub mod read_batch;
pub mod sealed;
pub mod status;
pub mod transport;

pub use boot::{JoinKeys, JoinTarget};
pub use config::{ClusterConfig, FilesConfig};
pub use duty::{Duty, arm_fault, fault_point};
pub use error::ClusterError;
pub use files::{Files, FilesError, Uploaded};
pub use node::{MemberLogsRequest, Node};
pub use picloud_storage::{NodeId, NodeInfo, TypeConfig};
pub use status::{ClusterStatus, MemberRole, MemberStatus, NodeStatus, Role, cluster_status};
