//! PiCloud's replicated data model and its storage on disk.
//!
//! This crate owns what the cluster agrees on: the [`command::Command`]s that
//! make up the Raft log, the deterministic `apply` that turns them into state,
//! and the openraft log store and state machine that keep both on sled.
//! It never touches the network, actors or a clock: time arrives inside commands.
//!
//! # Layout
//!
//! - `command`: the commands and their results (the log's vocabulary).
//! - `records`: plain records readers get back.
//! - `types`: the openraft type configuration (`TypeConfig`, `NodeId`, `NodeInfo`).
//! - `codec`: the one bincode configuration, with size limits for decoding.
//! - `backend`: the `Backend` trait sled sits behind, and `SledBackend`.
//! - `apply`: the deterministic state transition over a `Backend`.
//! - `state`: `StateReader`, the read side (kv get/list, apps, deploys, keys).
//! - `log_store`: `LogStore` (openraft `RaftLogStorage`), one group-commit flusher.
//! - `state_machine`: `StateMachine` (openraft `RaftStateMachine`), streamed snapshots.
//!
//! ```text
//!  cluster ──append──▶ LogStore ──(one flusher: fsync, then ack all waiters)
//!          ──apply───▶ StateMachine ──apply::apply(cmd)──▶ Backend (sled) ◀── StateReader
//!                            └── AppliedEvent (broadcast) ──▶ actors reload apps
//! ```

pub mod command;
pub mod records;
pub mod types;

pub use command::{ApplyError, Command, CommandResult, KvOp, KvOpResult};
pub use records::{AppRecord, AppliedEvent, DeployRecord, KeyRecord, KvPage};
pub use types::{NodeId, NodeInfo, TypeConfig};
