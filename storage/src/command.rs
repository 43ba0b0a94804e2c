//! Commands: the only way replicated state changes.
//!
//! Every write in PiCloud becomes one `Command`, encoded with bincode into one
//! openraft log entry and applied by [`crate::state_machine`] on every replica.
//! A command carries everything `apply` needs that is not already in the state:
//! the proposer's clock (`now_ms`) and any randomness (key ids, secrets hashes),
//! so that `apply` is a pure function of (state, command).
//!
//! Values that come from Lua or the admin API are stored as JSON text (`Vec<u8>`),
//! never as a dynamic serde type: bincode cannot decode `serde_json::Value`.
//!
//! # The log's one shape
//!
//! The log on disk holds commands encoded by variant position, so an encoded
//! variant can never change its meaning, move or go: when an operation grew
//! (a deploy that also carries triggers, then indexes; a run that also wrote
//! documents; an app delete that also revokes its keys), a new variant was
//! appended and the old one stayed, for the entries already written.
//!
//! Those variants live in one private place, `command/wire.rs`: the wire
//! enum lists every variant ever written, at its index, and is the only
//! thing (de)serialized. [`Command`], which the rest of the code builds and
//! `apply` matches, has ONE shape per operation. Decoding upcasts a legacy
//! shape to the current one with the fields that keep its old meaning
//! (`CompleteRun` gets an empty `docs` list, `AppDelete` gets
//! `revoke_keys: false`, an old `Deploy` carries [`DeployParts::Bundle`]);
//! encoding writes the wire variant that says exactly what the command
//! holds, which is the variant writers produced before the upcast existed,
//! and every command has one.
//!
//! The rule for the next change of an operation's shape: add the wire
//! variant at the end of the wire enum, extend the current shape so the old
//! variants decode into it unchanged in meaning, and add the pair to
//! `wire::tests::legacy_shapes_decode_to_the_current_shape`.

use serde::{Deserialize, Serialize};

use crate::docs::IndexDef;
use crate::email::EmailCommand;
use crate::files::{BlockHash, FileLimits};
use crate::inbound_mail::InboundMail;
use crate::node::{NodeId, NodeInfo};
use crate::operators::{OperatorsCommand, OperatorsError, OperatorsResult};
use crate::triggers::TriggerSet;
use crate::users::{UsersCommand, UsersError, UsersResult};

mod wire;

/// One replicated write.
///
/// Encoded through the wire enum (see the module comment): one variant here
/// may have several encodings, so a new field or variant also needs a wire
/// variant appended, never a change to an existing one.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// One kv operation in one app. Fails with `AppNotFound` if the app does
    /// not exist (so a deleted app's data cannot be recreated by a late write).
    Kv { app: String, op: KvOp, now_ms: u64 },
    /// Several kv operations in one app, applied all-or-nothing in one log entry.
    /// If any `Cas` fails or any `Incr` hits a non-number, none of the ops apply.
    /// Fails with `AppNotFound` if the app does not exist.
    KvAtomic {
        app: String,
        ops: Vec<KvOp>,
        now_ms: u64,
    },
    /// Creates an empty app (no version yet). Fails with `AppExists` if present.
    AppCreate { app: String, now_ms: u64 },
    /// Deletes an app with all its data (kv, documents, deploys, triggers,
    /// runs, dead letters, secrets). Fails with `AppNotFound`.
    ///
    /// With `revoke_keys`, every API key scoped to the app (`deploy:<app>`,
    /// `read:<app>`, see [`crate::records::scoped_app`]) is revoked in the
    /// same entry, so a key never outlives the app it was made for: an app
    /// re-created under the same name starts with no keys. Result
    /// `AppDeleted`. Without it (entries written before keys were bound to
    /// apps) keys are left alone and the result is `Done`.
    AppDelete { app: String, revoke_keys: bool },
    /// Stores a new deploy bundle as the next version of an app and makes it
    /// active. Result `Deployed`. See [`VersionDeploy`].
    Deploy(VersionDeploy),
    /// Makes an earlier version active again: `to_version = None` means the
    /// version before the active one.
    Rollback {
        app: String,
        to_version: Option<u64>,
        now_ms: u64,
    },
    /// Stores an API key. `secret_hash` is SHA-256 of the secret; the secret
    /// itself never enters the log. Result `Done`; rejected with `KeyExists`.
    ///
    /// With `scoped_app_must_exist`, it is also rejected with `AppNotFound`
    /// when the scope names an app (`deploy:<app>`, `read:<app>`) that does
    /// not exist, so a scoped key always belongs to one existing app and
    /// (with `AppDelete { revoke_keys: true }`) dies with it. Entries written
    /// before keys were bound to apps decode with it `false`.
    KeyCreate {
        id: String,
        name: String,
        scope: String,
        secret_hash: Vec<u8>,
        now_ms: u64,
        scoped_app_must_exist: bool,
    },
    /// Revokes (deletes) an API key. Fails with `KeyNotFound`.
    KeyRevoke { id: String },
    /// Several independent commands in ONE log entry, so that many client
    /// writes cost one Raft append and one log fsync (openraft 0.9 flushes
    /// the log once per entry on the leader).
    ///
    /// Each inner command has exactly the semantics it has alone. They are
    /// applied in order, each seeing the effects of the ones before it (two
    /// `Incr` of one key yield 1 then 2). An inner command that is rejected
    /// changes nothing and does not affect the others: unlike `KvAtomic`, a
    /// batch is not all-or-nothing as a unit of meaning. It is all-or-nothing
    /// with respect to a crash: after a restart the entry is either wholly
    /// applied or resumed where it stopped (see `apply`), never half-visible
    /// as "applied". An inner `Batch` is rejected with
    /// [`ApplyError::NestedBatch`]. The result is [`CommandResult::Batch`].
    Batch(Vec<Command>),
    /// Allocates a node id for a joining node. Result:
    /// [`CommandResult::NodeIdAllocated`]. Ids come from a counter in the
    /// state that starts at 2 (node 1 is the node that bootstrapped the
    /// cluster) and only grows: every allocation returns a larger id than
    /// the one before, and an id is never handed out twice, nor one that
    /// [`Command::RemoveNode`] recorded as removed. The counter travels in
    /// snapshots, so an install never moves it back. Never rejected.
    /// `now_ms` is the proposer's clock (kept for the record, unused).
    AllocateNodeId { now_ms: u64 },
    /// Sets the cluster's join-token secret. It travels in the log so that
    /// every member can check a joiner's token and print the token
    /// (`picloud cluster token`), sealed under the secrets master key by the
    /// cluster layer (`picloud_cluster::sealed`); a record written before
    /// sealing holds the plain 32 bytes and still reads.
    /// Replacing it rotates the join token: tokens carrying the old secret
    /// stop working. Never rejected; result `Done`.
    SetJoinSecret { secret: Vec<u8>, now_ms: u64 },
    /// Records node `id` as removed for good, so a node that lost its data
    /// dir cannot rejoin under its old id and the id is never allocated
    /// again. It does not change Raft membership (openraft's
    /// `change_membership` does that); the cluster layer does both.
    /// Removing an id already removed is a no-op (the first `now_ms` is
    /// kept). Never rejected; result `Done`.
    RemoveNode { id: NodeId, now_ms: u64 },
    /// Stores the cluster CA (certificate PEM and private key), so any
    /// member can sign the certificate of a joining node. Setting it again
    /// replaces it. Never rejected; result `Done`.
    ///
    /// The key is sealed under the secrets master key by the cluster layer
    /// before it is proposed (`key_pem` then holds `picloud-sealed/1:` and
    /// base64, see `picloud_cluster::sealed`), so the log and snapshots hold
    /// ciphertext only; a record written before sealing holds the plain PEM.
    SetClusterCa { cert_pem: String, key_pem: String },
    /// Records that node `id` was admitted (by whichever member answered its
    /// join) with these addresses. The leader's membership task adds
    /// registered nodes that are not members yet as learners, so any member
    /// can admit a joiner. Ignored for a removed id. Never rejected; `Done`.
    RegisterNode { id: NodeId, node: NodeInfo },
    /// The leader's scheduler fired cron trigger `trigger` for `slot_ms`:
    /// one outbox entry, unless that slot or a later one already fired.
    /// Result `TriggerFired`; rejected with `TriggerNotFound`.
    FireCron {
        app: String,
        trigger: String,
        slot_ms: u64,
        now_ms: u64,
    },
    /// The dispatcher of the leader of `term` claims pending runs: each entry
    /// that is due and unclaimed, claimed under a lower term, or claimed
    /// longer ago than `reclaim_after_ms`. Result `RunsClaimed` (the ids
    /// claimed now, with the claim time `now_ms`).
    ClaimRuns {
        app: String,
        ids: Vec<u64>,
        term: u64,
        node: NodeId,
        now_ms: u64,
        reclaim_after_ms: u64,
    },
    /// A claimed run finished: its kv writes, then its document writes,
    /// then its durable pub/sub messages (all-or-nothing; their own
    /// triggers fire one level deeper) and its removal, in one entry, only
    /// if the claim `(term, claim_ms)` still stands (else `StaleClaim`).
    /// Writes that are rejected count as a failed attempt. Result `Run`
    /// (`CompletedPublished` with the messages' positions when it
    /// published).
    CompleteRun {
        app: String,
        id: u64,
        term: u64,
        claim_ms: u64,
        ops: Vec<KvOp>,
        docs: Vec<DocOp>,
        publishes: Vec<RunPublish>,
        now_ms: u64,
    },
    /// A claimed run failed with `error`: retried after the trigger's backoff,
    /// or dead-lettered once it has failed `attempts_max` times. Guarded like
    /// `CompleteRun`. Result `Run`.
    FailRun {
        app: String,
        id: u64,
        term: u64,
        claim_ms: u64,
        error: String,
        now_ms: u64,
    },
    /// Puts dead letter `id` back in the outbox with a fresh attempt budget.
    /// Result `Done`; rejected with `DeadLetterNotFound`, `TriggerNotFound`
    /// (its trigger is gone) or `OutboxFull`.
    RetryDeadLetter { app: String, id: u64, now_ms: u64 },
    /// Deletes dead letter `id`. Result `Done`; rejected with `DeadLetterNotFound`.
    DeleteDeadLetter { app: String, id: u64 },
    /// Document writes in one app, all-or-nothing: indexes are kept in step
    /// and docs triggers fire. Result `Docs`; rejected with `AppNotFound`,
    /// `DocExists`, `UniqueViolation`, `DocTooLarge`, `InvalidDocument`,
    /// `IndexValueTooLarge` or `OutboxFull`.
    Docs {
        app: String,
        ops: Vec<DocOp>,
        now_ms: u64,
    },
    /// Stores secret `name` of `app`: `sealed` is the value already sealed
    /// by the proposer under its master key (`secret_box`), so no plaintext
    /// ever enters the log. Replaces an existing value. Result `Done`;
    /// rejected with `AppNotFound`, or `SecretsFull` for a new name past
    /// [`crate::secrets::SECRETS_PER_APP_MAX`].
    SecretSet {
        app: String,
        name: String,
        sealed: Vec<u8>,
        now_ms: u64,
    },
    /// Deletes secret `name` of `app`. Result `Done`; rejected with
    /// `AppNotFound` or `SecretNotFound`.
    SecretDelete { app: String, name: String },
    /// Secrets re-sealed under a new master key (`picloud secrets
    /// rotate-key`). Each replaces the stored value only while that is still
    /// exactly `old`: a `SecretSet` or `SecretDelete` applied since the
    /// proposer read it wins. Never rejected; result `SecretsRekeyed`.
    SecretsRekey { secrets: Vec<SecretRekey> },
    /// Stores `files` (opaque to storage; the runtime encodes them) as the
    /// next version of shared library `name` (1, 2, ...; never reused) and
    /// keeps the newest `versions_keep`. Never rejected; result `LibPublished`.
    PublishLib {
        name: String,
        files: Vec<u8>,
        now_ms: u64,
        versions_keep: u32,
    },
    /// A durable pub/sub message: `message` (JSON text) becomes the next
    /// message of `topic` of `app`, and the topic keeps its newest `retain`
    /// messages (the proposer read `retain` from the app's current
    /// manifest, so apply stays a function of the command). Result
    /// `Published` with the message's position; rejected with
    /// `AppNotFound`.
    Publish {
        app: String,
        topic: String,
        message: Vec<u8>,
        retain: u64,
        now_ms: u64,
    },
    /// Stores `app`'s realtime signing key, `sealed` by the proposer under
    /// its master key (the key is random, drawn by the proposer, never in
    /// apply). With `only_if_absent`, an existing key is kept (the first
    /// token of an app creates it; two nodes racing agree on the one that
    /// applied first); without, it is replaced (rotation). Result `Done`;
    /// rejected with `AppNotFound`.
    RealtimeKeySet {
        app: String,
        sealed: Vec<u8>,
        only_if_absent: bool,
    },
    /// `app`'s realtime signing key re-sealed under a new master key
    /// (`picloud secrets rotate-key`): the same key, so tokens signed before
    /// stay valid. It replaces the stored bytes only while they are still
    /// exactly `old`, so a `realtime rotate-key` (or an app delete) applied
    /// since the proposer read them wins. Never rejected; result
    /// `SecretsRekeyed` (`rekeyed` 1, or `changed` 1 when it lost the race).
    RealtimeKeyRekey {
        app: String,
        old: Vec<u8>,
        new: Vec<u8>,
    },
    /// Stores the metadata of a file whose blocks are already durable on a
    /// majority of their replicas (or whose bytes are `inline`), replacing
    /// a file at `path`. Checked against `limits` (carried by the command,
    /// read by the proposer from its settings). Block reference counts are
    /// kept over every app, so identical content is stored once. Fires the
    /// app's `files` triggers. Result `FileWritten`; rejected with
    /// `AppNotFound`, `InvalidPath`, `FileTooLarge`, `QuotaExceeded`,
    /// `InvalidFile` (size, inline bytes and block list disagree) or
    /// `OutboxFull`.
    FilePut {
        app: String,
        path: String,
        size: u64,
        content_type: String,
        sha256: [u8; 32],
        blocks: Vec<BlockHash>,
        inline: Option<Vec<u8>>,
        limits: FileLimits,
        /// The chain depth of the `files` trigger runs this write fires:
        /// 1 for a write outside a trigger run, the run's depth + 1 for a
        /// write a run makes (so `chain_depth_max` ends a loop of runs that
        /// write the files they watch).
        depth: u32,
        now_ms: u64,
    },
    /// Deletes the file at `path` (its blocks are collected once no file
    /// references them). Fires the app's `files` triggers when it existed.
    /// Result `FileDeleted`; rejected with `AppNotFound` or `OutboxFull`.
    FileDelete {
        app: String,
        path: String,
        /// As in `FilePut`.
        depth: u32,
        now_ms: u64,
    },
    /// Outbound mail: a send queued in the outbox, a bounce, or a dev-mode
    /// capture (see [`crate::email`]).
    Email(EmailCommand),
    /// A message the SMTP listener accepted: queues a run of each of the
    /// app's `email` triggers matching a recipient. Result `MailDelivered`
    /// (`runs` 0 when the app or its matching triggers went since `RCPT`);
    /// rejected with `OutboxFull` (nothing queued, the sender hears 451).
    /// Boxed: a message is far larger than the other commands' fields.
    InboundMail(Box<InboundMail>),
    /// End users, sessions and single-use tokens (see `crate::users`).
    /// Rejected with `AppNotFound` or `ApplyError::Users`.
    Users(UsersCommand),
    /// Operators' admin flags and app memberships (see
    /// `crate::operators`). Rejected with `AppNotFound` or
    /// `ApplyError::Operators`.
    Operators(OperatorsCommand),
}

/// A deploy: `bundle` (opaque to storage; the runtime encodes it) becomes
/// the next version of `app` and its active one. Keeps at most
/// `versions_keep` versions (the oldest inactive ones are dropped). Result
/// `Deployed`.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionDeploy {
    pub app: String,
    pub bundle: Vec<u8>,
    pub now_ms: u64,
    pub versions_keep: u32,
    pub parts: DeployParts,
}

/// What a deploy carries besides its bundle. Every deploy written today is
/// `Full`; the other two are how entries written before deploys carried
/// triggers (`Bundle`) or indexes (`WithTriggers`) decode, keeping what they
/// meant then.
#[derive(Debug, Clone, PartialEq)]
pub enum DeployParts {
    /// No trigger set is stored for the version (it reads as none), the
    /// built indexes are left as they are, and a missing app is created.
    Bundle,
    /// The version's triggers (as in `Full`); the built indexes are left as
    /// they are, and a missing app is created.
    WithTriggers(TriggerSet),
    Full {
        /// The version's triggers, stored with it (a rollback brings them
        /// back) and made the app's active set atomically: pending runs of a
        /// trigger the new set no longer has are dead-lettered with
        /// `trigger_removed`.
        triggers: TriggerSet,
        /// The version's document indexes: indexes the app's built set
        /// lacks are built from the existing documents, indexes it no longer
        /// has are dropped, all in this entry. A unique index the existing
        /// documents violate rejects the whole deploy (`UniqueViolation`).
        indexes: Vec<IndexDef>,
        /// Whether a missing app is created. `false` (for callers that may
        /// deploy to an app but not create one, like a `deploy:<app>` key)
        /// rejects the deploy with `AppNotFound` instead; deciding it in
        /// `apply` closes the race with a concurrent delete.
        create_app: bool,
    },
}

impl Command {
    /// Whether the command only removes data, so it may run on a node whose
    /// disk is below its reserve (see `picloud_cluster::disk`): deleting is how an
    /// operator makes room. A batch qualifies when every command in it does.
    pub fn only_removes(&self) -> bool {
        match self {
            Command::AppDelete { .. }
            | Command::KeyRevoke { .. }
            | Command::DeleteDeadLetter { .. }
            | Command::SecretDelete { .. }
            | Command::FileDelete { .. }
            | Command::RemoveNode { .. } => true,
            Command::Users(users) => matches!(
                users,
                UsersCommand::Delete { .. }
                    | UsersCommand::Logout { .. }
                    | UsersCommand::LogoutAll { .. }
            ),
            Command::Operators(operators) => matches!(
                operators,
                OperatorsCommand::Remove { .. } | OperatorsCommand::MemberRemove { .. }
            ),
            Command::Kv { op, .. } => matches!(op, KvOp::Delete { .. }),
            Command::KvAtomic { ops, .. } => ops.iter().all(|op| matches!(op, KvOp::Delete { .. })),
            Command::Docs { ops, .. } => ops.iter().all(|op| matches!(op, DocOp::Delete { .. })),
            Command::Batch(commands) => commands.iter().all(Command::only_removes),
            _ => false,
        }
    }
}

/// One document write. Documents are JSON object text; apply sets `_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DocOp {
    /// Fails with `DocExists` if the id is taken.
    Insert {
        collection: String,
        id: String,
        doc: Vec<u8>,
    },
    /// Merges `patch` (a JSON merge patch: `null` removes a field).
    Update {
        collection: String,
        id: String,
        patch: Vec<u8>,
    },
    Replace {
        collection: String,
        id: String,
        doc: Vec<u8>,
    },
    Delete {
        collection: String,
        id: String,
    },
}

impl DocOp {
    pub fn collection(&self) -> &str {
        match self {
            DocOp::Insert { collection, .. }
            | DocOp::Update { collection, .. }
            | DocOp::Replace { collection, .. }
            | DocOp::Delete { collection, .. } => collection,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            DocOp::Insert { id, .. }
            | DocOp::Update { id, .. }
            | DocOp::Replace { id, .. }
            | DocOp::Delete { id, .. } => id,
        }
    }
}

/// What one [`DocOp`] did. `found`/`existed` is false when the document was
/// absent (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocOpResult {
    Inserted,
    Updated { found: bool },
    Replaced { found: bool },
    Deleted { existed: bool },
}

/// One durable message a trigger run published (`Command::CompleteRun`),
/// with the retention its topic had when the run published it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPublish {
    pub topic: String,
    pub message: Vec<u8>,
    pub retain: u64,
}

/// One re-sealed secret of [`Command::SecretsRekey`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretRekey {
    pub app: String,
    pub name: String,
    /// The sealed value the proposer read (and re-sealed).
    pub old: Vec<u8>,
    /// The same plaintext sealed under the proposer's current key.
    pub new: Vec<u8>,
}

/// One kv operation. `value`s are JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvOp {
    Set {
        key: String,
        value: Vec<u8>,
        /// Absolute expiry on the proposer's clock; `None` = never.
        expires_at_ms: Option<u64>,
    },
    Delete {
        key: String,
    },
    /// Adds `by` to an integer value (absent or expired counts as 0).
    /// Fails with `NotANumber` if the current value is not an integer, and
    /// with `IncrOverflow` if the sum does not fit an `i64`.
    /// Keeps the existing expiry.
    Incr {
        key: String,
        by: i64,
    },
    /// Swaps when the current value equals `expected` (JSON equality, numbers
    /// compared by value so `1` equals `1.0`). `expected = None` means "absent".
    /// `new = None` deletes; a swapped-in value has no expiry. A failed compare
    /// is not an error: the result says `swapped: false`.
    Cas {
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
}

/// What applying a command produced. Deterministic, like `apply` itself.
/// Append-only like the log's wire enum (results are stored and sent
/// encoded): a variant keeps its index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum CommandResult {
    /// Membership and blank entries, and commands with nothing to report.
    #[default]
    Done,
    Kv(KvOpResult),
    KvAtomic(Vec<KvOpResult>),
    Deployed {
        version: u64,
    },
    RolledBack {
        version: u64,
    },
    /// A command that was rejected by `apply` (state unchanged).
    Rejected(ApplyError),
    /// The results of a [`Command::Batch`]: one per inner command, in the
    /// same order. A rejected inner command has `Rejected` here; the batch
    /// itself is never rejected as a whole.
    Batch(Vec<CommandResult>),
    /// The id [`Command::AllocateNodeId`] allocated.
    NodeIdAllocated {
        id: NodeId,
    },
    /// [`Command::FireCron`]: the outbox entry created, or `None` when the
    /// slot had already fired.
    TriggerFired {
        id: Option<u64>,
    },
    /// [`Command::ClaimRuns`]: the entries claimed now.
    RunsClaimed {
        ids: Vec<u64>,
        claim_ms: u64,
    },
    /// [`Command::CompleteRun`] / [`Command::FailRun`].
    Run(RunOutcome),
    /// [`Command::Docs`]: one result per op.
    Docs(Vec<DocOpResult>),
    /// [`Command::SecretsRekey`]: how many values were replaced, and how
    /// many were skipped because they changed (or went) since the proposer
    /// read them.
    SecretsRekeyed {
        rekeyed: u64,
        changed: u64,
    },
    /// [`Command::PublishLib`]: the version it stored.
    LibPublished {
        version: u64,
    },
    /// [`Command::AppDelete`] with `revoke_keys`: how many API keys it
    /// revoked.
    AppDeleted {
        keys_revoked: u64,
    },
    /// [`Command::Publish`]: the stored message's position.
    Published {
        epoch: u64,
        seq: u64,
    },
    /// [`Command::FilePut`]: whether the path held no file before.
    FileWritten {
        created: bool,
    },
    /// [`Command::FileDelete`]: whether a file was there.
    FileDeleted {
        existed: bool,
    },
    /// [`Command::InboundMail`]: the trigger runs queued.
    MailDelivered {
        runs: u32,
    },
    /// [`Command::Users`].
    Users(UsersResult),
    /// [`Command::Operators`].
    Operators(OperatorsResult),
}

/// What became of a run reported done or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    /// Its writes are applied and it left the outbox.
    Completed,
    /// It failed and is due again at `not_before_ms`.
    WillRetry { not_before_ms: u64 },
    /// It failed for the last time (or its writes were rejected on the last
    /// attempt) and is now a dead letter.
    DeadLettered { code: String },
    /// Like `Completed`, for a run that published durable messages: their
    /// positions `(epoch, seq)`, in the order published.
    CompletedPublished { positions: Vec<(u64, u64)> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvOpResult {
    Set,
    Deleted { existed: bool },
    Incr { value: i64 },
    Cas { swapped: bool },
}

/// Deterministic rejections. Each maps to one stable error code above this
/// crate (`picloud_actors::error::apply_code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("app {app} not found")]
    AppNotFound { app: String },
    #[error("app {app} already exists")]
    AppExists { app: String },
    #[error("app {app} has no version {version}")]
    VersionNotFound { app: String, version: u64 },
    #[error("app {app} has no earlier version to roll back to")]
    NoEarlierVersion { app: String },
    #[error("key {key} does not hold an integer")]
    NotANumber { key: String },
    /// `Incr` would leave the `i64` range.
    #[error("incrementing key {key} overflows a 64-bit integer")]
    IncrOverflow { key: String },
    #[error("api key {id} not found")]
    KeyNotFound { id: String },
    #[error("api key {id} already exists")]
    KeyExists { id: String },
    /// `KvAtomic` aborted because op `index` (a `Cas`) did not match.
    #[error("atomic op {index} (cas on {key}) did not match; nothing was written")]
    AtomicCasFailed { index: usize, key: String },
    /// A `Command::Batch` inside a `Command::Batch` (only one level exists).
    #[error("a batch may not contain a batch")]
    NestedBatch,
    /// The write would add a pending trigger run beyond the app's bound.
    #[error("app {app} has {max} pending trigger runs, its outbox_max; the write was not applied")]
    OutboxFull { app: String, max: u32 },
    #[error("app {app} has no trigger {trigger} (of that kind)")]
    TriggerNotFound { app: String, trigger: String },
    /// A run reported by a dispatcher whose claim was superseded (a newer
    /// leader claimed it, or it is gone): its result is ignored.
    #[error("run {app}/{id} is not claimed by the reporter any more")]
    StaleClaim { app: String, id: u64 },
    #[error("app {app} has no dead letter {id}")]
    DeadLetterNotFound { app: String, id: u64 },
    #[error("collection {collection} already holds a document with id {id}")]
    DocExists { collection: String, id: String },
    /// The write would give a unique index's values to a second document.
    #[error("unique index {index} on {collection}: document {existing} already has these values")]
    UniqueViolation {
        index: String,
        collection: String,
        existing: String,
    },
    #[error("document {collection}/{id} would be {bytes} bytes; the limit is {max}")]
    DocTooLarge {
        collection: String,
        id: String,
        bytes: u64,
        max: u64,
    },
    #[error("document {collection}/{id}: {message}")]
    InvalidDocument {
        collection: String,
        id: String,
        message: String,
    },
    #[error("index {index}: field {field} holds a string longer than {max} bytes")]
    IndexValueTooLarge {
        index: String,
        field: String,
        max: u64,
    },
    #[error("app {app} has no secret {name}")]
    SecretNotFound { app: String, name: String },
    #[error("app {app} already has {max} secrets, the most an app may have")]
    SecretsFull { app: String, max: u32 },
    #[error("invalid file path {path:?}: {message}")]
    InvalidPath { path: String, message: String },
    #[error("the file is {size} bytes; at most {max} are allowed")]
    FileTooLarge { size: u64, max: u64 },
    /// `limit` is `"bytes"` or `"files"`.
    #[error("app {app} would hold more than {max} file {limit}")]
    QuotaExceeded {
        app: String,
        limit: String,
        max: u64,
    },
    #[error("file {path:?} is inconsistent: {message}")]
    InvalidFile { path: String, message: String },
    #[error("{0}")]
    Users(UsersError),
    #[error("{0}")]
    Operators(OperatorsError),
}
