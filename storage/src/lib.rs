//! PiCloud's replicated data model and its storage on disk.
//!
//! This crate owns what the cluster agrees on: the [`command::Command`]s that
//! make up the Raft log, the deterministic `apply` that turns them into state,
//! and the openraft log store and state machine that keep both on sled.
//! It never touches the network, actors or a clock: time arrives inside commands.
//!
//! # Layout
//!
//! - `command`: the commands and their results (the log's vocabulary), one
//!   shape per operation; `command/wire.rs` (private) is how they are
//!   encoded in the log: every shape ever written, legacy ones upcast at
//!   decode.
//! - `records`: plain records readers get back.
//! - `node`: `NodeId` and `NodeInfo`, what names a cluster member.
//! - `types`: the openraft type configuration (`TypeConfig`; re-exports
//!   `NodeId`, `NodeInfo`).
//! - `codec`: the one bincode configuration, with size limits for decoding.
//! - `backend`: the `Backend` trait sled sits behind, and `SledBackend`.
//! - `keys` (private): how records are laid out as backend keys, per app.
//! - `apply/`: the deterministic state transition over a `Backend`, one file
//!   per area (kv, apps, keys, cluster records, triggers, secrets, docs; its
//!   own `//!` lists them), each with its tests beside it.
//! - `triggers`: trigger sets, outbox entries and dead letters as stored,
//!   and the retry backoff.
//! - `glob`: the key patterns of kv, pub/sub, files and email triggers.
//! - `inbound_mail`: a message the SMTP listener accepted (`InboundMail`),
//!   parsed, with big attachments referenced by file path.
//! - `docs`: documents, their indexes, and the planner and executor of
//!   `docs.find` / `docs.count`; `query`: the query language they run.
//! - `state`: `StateReader`, the read side (kv get/list, documents, apps,
//!   deploys, triggers, secrets, libs, keys, files and block references,
//!   cluster records: node ids, join secret, cluster CA).
//! - `log_store`: `LogStore` (openraft `RaftLogStorage`), one group-commit flusher.
//! - `state_machine`: `StateMachine` (openraft `RaftStateMachine`), streamed snapshots.
//! - `topics`: durable pub/sub as stored: topic records, positions
//!   (`<epoch>-<seq>`), the retention rule and `PublishedEvent`.
//! - `files`: files as stored: the metadata record (`FileRecord`), path
//!   rules (`validate_path`), block size, the limits a `FilePut` carries
//!   (content lives in blocks outside the log, kept by the cluster crate).
//! - `email`: outbound mail as the log carries it (`EmailCommand`, the
//!   reserved `@email` trigger of its outbox entries) and dev-mode
//!   captured mail.
//! - `users`: end users, sessions (by token hash) and single-use tokens
//!   as stored, `UsersCommand` (the inner enum of `Command::Users`), and
//!   the email and role rules.
//! - `operators`: the people who run PiCloud: the reserved users namespace
//!   of their accounts, admin flags and app memberships with a `Role`,
//!   `OperatorsCommand` (the inner enum of `Command::Operators`).
//! - `secret_box`: sealing secret values under the master key (`Keyring`).
//! - `secrets`: secret limits, name rules and the stored record (values
//!   arrive sealed by `secret_box`; storage never sees a plaintext).
//! - `snapshot` (private): the snapshot file format, written and read record by record.
//! - `restore`: what a backup needs from storage: the blocks a snapshot's
//!   files use, a snapshot written as a new one-node cluster's state, and
//!   the first start after that (`finish_restore`).
//! - `error`: `StorageError`.
//!
//! Modules import each other without cycles (`use crate::` edges point one
//! way): what several need sits in the lowest module that needs it (`node`
//! under `command`, `apply/txn.rs` and `apply/outbox.rs` under the areas).
//!
//! On disk, [`open`] keeps three things under its directory: `log/` (the Raft
//! log's sled database), `state/` (the state's sled database) and
//! `snapshots/` (the current snapshot file). Two databases, so the log's
//! flusher and the state machine never flush one sled database concurrently.
//!
//! ```text
//!  cluster ──append──▶ LogStore ──(one flusher: fsync, then ack all waiters)
//!          ──apply───▶ StateMachine ──apply::apply(cmd)──▶ Backend (sled) ◀── StateReader
//!                            └── AppliedEvent (broadcast) ──▶ actors reload apps, stop revoked sessions
//! ```

pub mod apply;
pub mod backend;
pub mod codec;
pub mod command;
pub mod docs;
pub mod email;
mod error;
pub mod files;
pub mod glob;
pub mod inbound_mail;
mod keys;
pub mod log_store;
pub mod node;
pub mod operators;
pub mod query;
pub mod records;
pub mod restore;
pub mod secret_box;
pub mod secrets;
mod snapshot;
pub mod state;
pub mod state_machine;
pub mod state_view;
pub mod topics;
pub mod triggers;
pub mod types;
pub mod users;

use std::path::Path;
use std::sync::Arc;

pub use command::{
    ApplyError, Command, CommandResult, DeployParts, DocOp, DocOpResult, KvOp, KvOpResult,
    RunPublish, VersionDeploy,
};
pub use error::StorageError;
pub use log_store::LogStore;
pub use records::{
    AppRecord, AppliedEvent, DeployRecord, KeyRecord, KvPage, LibRecord, LibVersion,
};
pub use state::StateReader;
pub use state_machine::StateMachine;
pub use types::{NodeId, NodeInfo, TypeConfig};

use backend::{SledBackend, SledOptions};

/// Storage limits. Validated by the caller's config; sane defaults for a Pi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// sled's page cache, split between the two databases: a quarter for the
    /// log (read back mostly while recent), the rest for the state.
    pub cache_capacity_bytes: u64,
    /// How many `AppliedEvent`s a slow subscriber may fall behind before it
    /// sees `Lagged` (and must reload every app).
    pub events_capacity: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            cache_capacity_bytes: 32 * 1024 * 1024,
            events_capacity: 1024,
        }
    }
}

/// Everything [`open`] returns: hand `log_store` and `state_machine` to
/// `openraft::Raft::new`, keep `reader` for reads.
pub struct Storage {
    pub log_store: LogStore,
    pub state_machine: StateMachine,
    pub reader: StateReader,
}

/// Opens (or creates) storage under `dir`. Blocking: it opens two sled
/// databases and may re-install the current snapshot after a crash.
/// Starts the log's flusher thread; no tokio runtime is needed.
pub fn open(dir: &Path, options: &StorageOptions) -> Result<Storage, StorageError> {
    std::fs::create_dir_all(dir).map_err(StorageError::io("create storage dir", dir))?;
    let log_cache_bytes = options.cache_capacity_bytes / 4;
    let state_cache_bytes = options.cache_capacity_bytes - log_cache_bytes;
    let log_store = LogStore::open(&dir.join("log"), log_cache_bytes)?;
    let state_backend: Arc<dyn backend::Backend> = Arc::new(SledBackend::open(
        &dir.join("state"),
        SledOptions {
            cache_capacity_bytes: state_cache_bytes,
        },
    )?);
    // A zero capacity would make tokio panic; one is the smallest useful.
    let (events, _) = tokio::sync::broadcast::channel(options.events_capacity.max(1));
    let reader = StateReader::new(state_backend.clone(), events.clone());
    let views = reader.view_gate();
    let versioned = Arc::new(state_view::Versioned::new(state_backend, views.clone()));
    let state_machine = StateMachine::open(
        versioned,
        views,
        &dir.join("snapshots"),
        events,
        reader.published_sender(),
    )?;
    Ok(Storage {
        log_store,
        state_machine,
        reader,
    })
}
