//! The deterministic state transition: `apply(state, log id, command)`.
//!
//! `apply` reads the current state through a [`Backend`], computes every
//! write the command makes in memory ([`Txn`]), and commits those writes
//! together with the new last-applied log id in ONE atomic batch. After a
//! crash the state is therefore always "everything up to some log index",
//! and openraft re-applies the rest from the log.
//!
//! Nothing here reads a clock or draws randomness: time is the command's
//! `now_ms`. A rejected command (see [`ApplyError`]) writes nothing but the
//! last-applied log id.
//!
//! The one exception to "one batch per entry" is `AppDelete`: an app may
//! hold millions of kv keys, so its kv data is deleted in bounded batches
//! first and the app record (with the last-applied id) goes last. If a crash
//! interrupts it, the app record is still there and the re-applied entry
//! finishes the job with the same result.
//!
//! A `Command::Batch` entry is normally one atomic batch too: each inner
//! command runs in a `Txn` layered over the writes of the ones before it. An
//! entry holding a command that reads the backend directly (`AppDelete`,
//! `Deploy`, `Rollback`: they scan) takes the slow path instead: each inner
//! command commits its own atomic batch together with a progress marker
//! `(log id, inner commands done)` and its result, in `Meta`; a last batch
//! sets the last-applied id and removes the marker. A restart in between
//! re-applies the entry, which skips the inner commands the marker counts
//! (see `apply_batch_entry`).

use std::collections::BTreeMap;

use openraft::LogId;

use crate::backend::{Backend, Keyspace, WriteBatch, delete_prefix};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::command::{
    ApplyError, Command, CommandResult, KvOp, KvOpResult, RunOutcome, SecretRekey, VersionDeploy,
};
use crate::error::StorageError;
use crate::keys::{self, StoredValue};
use crate::records::{AppRecord, DeployRecord, KeyRecord, LibRecord, LibVersion};
use crate::secrets::{SECRETS_PER_APP_MAX, SecretRecord};
use crate::triggers::{
    Attempt, Claim, DeadLetter, OutboxEntry, TriggerDef, TriggerDefKind, TriggerEvent, TriggerSet,
    dead_code, retry_delay_ms,
};
use crate::types::NodeId;

#[path = "apply_docs.rs"]
mod docs_apply;
#[path = "apply_keys.rs"]
mod keys_apply;

/// Applies `command` as the entry at `log_id`, committing its writes and the
/// new last-applied id atomically. `Err` is an engine failure (fatal);
/// deterministic rejections come back as `Ok(CommandResult::Rejected(..))`.
/// A [`Command::Batch`] is applied as described in the module comment.
pub fn apply<B: Backend + ?Sized>(
    backend: &B,
    log_id: &LogId<NodeId>,
    command: &Command,
) -> Result<CommandResult, StorageError> {
    if let Command::Batch(commands) = command {
        return apply_batch_entry(backend, log_id, commands);
    }
    let (result, mut batch) = run_one(backend, command)?;
    put_last_applied(&mut batch, log_id)?;
    backend.apply_batch(batch)?;
    Ok(result)
}

/// Runs one (non-batch) command: its result and the writes to commit. A
/// `Batch` here is an inner batch and is rejected with `NestedBatch`.
fn run_one<B: Backend + ?Sized>(
    backend: &B,
    command: &Command,
) -> Result<(CommandResult, WriteBatch), StorageError> {
    let mut txn = Txn::new(backend);
    let result = run_in(&mut txn, command)?;
    Ok((result, txn.into_batch()))
}

/// Runs one (non-batch) command in `txn`; a rejected command leaves no
/// writes in it.
fn run_in<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    command: &Command,
) -> Result<CommandResult, StorageError> {
    let outcome = match command {
        Command::Kv { app, op, now_ms } => kv(txn, app, op, *now_ms)?,
        Command::KvAtomic { app, ops, now_ms } => kv_atomic(txn, app, ops, *now_ms)?,
        Command::AppCreate { app, now_ms } => app_create(txn, app, *now_ms)?,
        Command::AppDelete { app } => app_delete(txn, app)?,
        Command::Deploy {
            app,
            bundle,
            now_ms,
            versions_keep,
        } => deploy_app(txn, app, bundle, *now_ms, *versions_keep, None)?,
        Command::Rollback {
            app,
            to_version,
            now_ms,
        } => rollback(txn, app, *to_version, *now_ms)?,
        Command::KeyCreate {
            id,
            name,
            scope,
            secret_hash,
            now_ms,
        } => key_create(txn, id, name, scope, secret_hash, *now_ms)?,
        Command::KeyRevoke { id } => key_revoke(txn, id)?,
        Command::AllocateNodeId { now_ms: _ } => allocate_node_id(txn)?,
        Command::SetJoinSecret { secret, now_ms } => set_join_secret(txn, secret, *now_ms)?,
        Command::RemoveNode { id, now_ms } => remove_node(txn, *id, *now_ms)?,
        Command::SetClusterCa { cert_pem, key_pem } => set_cluster_ca(txn, cert_pem, key_pem)?,
        Command::RegisterNode { id, node } => register_node(txn, *id, node)?,
        Command::DeployApp {
            app,
            bundle,
            now_ms,
            versions_keep,
            triggers,
        } => deploy_app(txn, app, bundle, *now_ms, *versions_keep, Some(triggers))?,
        Command::FireCron {
            app,
            trigger,
            slot_ms,
            now_ms,
        } => fire_cron(txn, app, trigger, *slot_ms, *now_ms)?,
        Command::ClaimRuns {
            app,
            ids,
            term,
            node,
            now_ms,
            reclaim_after_ms,
        } => claim_runs(txn, app, ids, *term, *node, *now_ms, *reclaim_after_ms)?,
        Command::CompleteRun {
            app,
            id,
            term,
            claim_ms,
            ops,
            now_ms,
        } => complete_run(txn, app, *id, (*term, *claim_ms), ops, &[], *now_ms)?,
        Command::CompleteRunWithDocs {
            app,
            id,
            term,
            claim_ms,
            ops,
            docs,
            now_ms,
        } => complete_run(txn, app, *id, (*term, *claim_ms), ops, docs, *now_ms)?,
        Command::FailRun {
            app,
            id,
            term,
            claim_ms,
            error,
            now_ms,
        } => fail_run(txn, app, *id, (*term, *claim_ms), error, *now_ms)?,
        Command::RetryDeadLetter { app, id, now_ms } => retry_dead_letter(txn, app, *id, *now_ms)?,
        Command::DeleteDeadLetter { app, id } => delete_dead_letter(txn, app, *id)?,
        Command::Docs { app, ops, now_ms } => docs_apply::docs_write(txn, app, ops, *now_ms)?,
        Command::DeployVersion {
            app,
            bundle,
            now_ms,
            versions_keep,
            triggers,
            indexes,
        } => deploy_version(txn, app, bundle, *now_ms, *versions_keep, triggers, indexes)?,
        Command::SecretSet {
            app,
            name,
            sealed,
            now_ms,
        } => secret_set(txn, app, name, sealed, *now_ms)?,
        Command::SecretDelete { app, name } => secret_delete(txn, app, name)?,
        Command::SecretsRekey { secrets } => secrets_rekey(txn, secrets)?,
        Command::PublishLib {
            name,
            files,
            now_ms,
            versions_keep,
        } => publish_lib(txn, name, files, *now_ms, *versions_keep)?,
        Command::AppDeleteWithKeys { app } => keys_apply::app_delete_with_keys(txn, app)?,
        Command::KeyCreateForApp {
            id,
            name,
            scope,
            secret_hash,
            now_ms,
        } => match keys_apply::missing_scoped_app(txn, scope)? {
            Some(rejection) => Err(rejection),
            None => key_create(txn, id, name, scope, secret_hash, *now_ms)?,
        },
        Command::DeployExistingVersion(deploy) => {
            if txn.app(&deploy.app)?.is_none() {
                Err(ApplyError::AppNotFound {
                    app: deploy.app.clone(),
                })
            } else {
                let d = deploy;
                let (app, bundle) = (&d.app, &d.bundle);
                deploy_version(
                    txn,
                    app,
                    bundle,
                    d.now_ms,
                    d.versions_keep,
                    &d.triggers,
                    &d.indexes,
                )?
            }
        }
        Command::Batch(_) => Err(ApplyError::NestedBatch),
    };
    let result = match outcome {
        Ok(result) => result,
        Err(rejection) => {
            // A rejected command changes nothing (but the applied index).
            txn.writes.clear();
            CommandResult::Rejected(rejection)
        }
    };
    Ok(result)
}

/// Whether `command` reads state only through its `Txn` (so it may run over
/// the pending writes of earlier commands of the same entry). Exhaustive on
/// purpose: a new command must decide.
fn reads_only_through_txn(command: &Command) -> bool {
    match command {
        Command::Kv { .. }
        | Command::KvAtomic { .. }
        | Command::AppCreate { .. }
        | Command::KeyCreate { .. }
        | Command::KeyRevoke { .. }
        | Command::AllocateNodeId { .. }
        | Command::SetJoinSecret { .. }
        | Command::RemoveNode { .. }
        | Command::SetClusterCa { .. }
        | Command::RegisterNode { .. }
        | Command::FireCron { .. }
        | Command::ClaimRuns { .. }
        | Command::CompleteRun { .. }
        | Command::FailRun { .. }
        | Command::RetryDeadLetter { .. }
        | Command::DeleteDeadLetter { .. }
        | Command::Docs { .. }
        | Command::CompleteRunWithDocs { .. }
        | Command::SecretSet { .. }
        | Command::SecretDelete { .. }
        | Command::SecretsRekey { .. }
        | Command::PublishLib { .. }
        | Command::KeyCreateForApp { .. } => true,
        // Scans (deploy versions, an app's kv data, its outbox) and bulk
        // deletes go to the backend; a nested batch is rejected by `run_in`
        // either way.
        Command::AppDelete { .. }
        | Command::AppDeleteWithKeys { .. }
        | Command::DeployExistingVersion { .. }
        | Command::Deploy { .. }
        | Command::DeployApp { .. }
        | Command::DeployVersion { .. }
        | Command::Rollback { .. }
        | Command::Batch(_) => false,
    }
}

/// Applies a batch entry whose commands all read through their `Txn` as ONE
/// atomic backend batch (with the last-applied id): each inner command runs
/// over the writes of the ones before it. One batch per entry instead of one
/// per inner command is most of the replicated write throughput (sled waits
/// for two io-buffer writes per batch, on every replica).
fn apply_batch_entry_at_once<B: Backend + ?Sized>(
    backend: &B,
    log_id: &LogId<NodeId>,
    commands: &[Command],
) -> Result<CommandResult, StorageError> {
    let mut pending: PendingWrites = BTreeMap::new();
    let mut results = Vec::with_capacity(commands.len());
    for command in commands {
        let mut txn = Txn::over(backend, &pending);
        let result = run_in(&mut txn, command)?;
        let writes = std::mem::take(&mut txn.writes);
        pending.extend(writes);
        results.push(result);
    }
    let mut batch = batch_of(pending);
    put_last_applied(&mut batch, log_id)?;
    backend.apply_batch(batch)?;
    Ok(CommandResult::Batch(results))
}

/// How far the batch entry `log_id` got: inner commands `0..done` are
/// applied and their results stored under [`keys::batch_result_key`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct BatchProgress {
    log_id: LogId<NodeId>,
    done: u64,
}

/// Applies a `Command::Batch` entry: at once when it can (see
/// [`apply_batch_entry_at_once`]); otherwise one atomic backend batch per
/// inner command, each also recording the progress marker and that command's
/// result, then one last batch that sets last-applied and clears them.
///
/// Why not always one backend batch for the whole entry (an overlay over all
/// inner writes)? Because `apply` is not a pure overlay: `AppDelete` deletes an
/// app's kv data in bounded batches straight to the backend before its
/// final batch (an app may hold millions of keys), and `Deploy`/`Rollback`
/// scan deploys in the backend, not in pending writes. Applying inner
/// commands one by one reuses each command's existing, tested behaviour
/// (including `AppDelete`'s own crash handling) unchanged; the marker makes
/// the entry resumable. After a crash the state is a prefix of the batches
/// written, so the marker says exactly which inner commands are in it; the
/// re-applied entry skips those (returning their stored results) and
/// continues. Last-applied moves only when the whole entry is done, so
/// openraft never considers a half-applied entry applied.
fn apply_batch_entry<B: Backend + ?Sized>(
    backend: &B,
    log_id: &LogId<NodeId>,
    commands: &[Command],
) -> Result<CommandResult, StorageError> {
    let mut results = resume_batch(backend, log_id)?;
    let done = results.len();
    if done == 0 && commands.iter().all(reads_only_through_txn) {
        return apply_batch_entry_at_once(backend, log_id, commands);
    }
    if done > commands.len() {
        return Err(StorageError::Corrupt {
            what: "batch progress",
            detail: format!(
                "entry {log_id} has {} commands but {done} are marked done",
                commands.len()
            ),
        });
    }
    for (index, command) in commands.iter().enumerate().skip(done) {
        let (result, mut batch) = run_one(backend, command)?;
        let progress = BatchProgress {
            log_id: *log_id,
            done: index as u64 + 1,
        };
        batch.insert(
            Keyspace::Meta,
            keys::META_BATCH_PROGRESS.to_vec(),
            codec::encode(&progress).map_err(StorageError::codec("batch progress"))?,
        );
        batch.insert(
            Keyspace::Meta,
            keys::batch_result_key(index as u64),
            codec::encode(&result).map_err(StorageError::codec("batch result"))?,
        );
        backend.apply_batch(batch)?;
        results.push(result);
    }
    let mut batch = WriteBatch::new();
    for index in 0..commands.len() {
        batch.remove(Keyspace::Meta, keys::batch_result_key(index as u64));
    }
    batch.remove(Keyspace::Meta, keys::META_BATCH_PROGRESS.to_vec());
    put_last_applied(&mut batch, log_id)?;
    backend.apply_batch(batch)?;
    Ok(CommandResult::Batch(results))
}

/// The stored results of the inner commands of entry `log_id` already
/// applied (empty when it was not started). A marker left by another entry
/// can only be stale (that entry was superseded by a snapshot install,
/// which clears markers too): it is dropped.
fn resume_batch<B: Backend + ?Sized>(
    backend: &B,
    log_id: &LogId<NodeId>,
) -> Result<Vec<CommandResult>, StorageError> {
    let Some(bytes) = backend.get(Keyspace::Meta, keys::META_BATCH_PROGRESS)? else {
        return Ok(Vec::new());
    };
    let progress: BatchProgress =
        codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("batch progress"))?;
    if progress.log_id != *log_id {
        tracing::warn!(
            stale = %progress.log_id,
            applying = %log_id,
            "dropping a stale batch progress marker"
        );
        clear_batch_progress(backend)?;
        return Ok(Vec::new());
    }
    tracing::info!(
        entry = %log_id,
        done = progress.done,
        "resuming a batch entry interrupted by a restart"
    );
    let mut results = Vec::new();
    for index in 0..progress.done {
        let bytes = backend
            .get(Keyspace::Meta, &keys::batch_result_key(index))?
            .ok_or_else(|| StorageError::Corrupt {
                what: "batch progress",
                detail: format!("entry {log_id}: no stored result for command {index}"),
            })?;
        results.push(
            codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("batch result"))?,
        );
    }
    Ok(results)
}

/// Removes any batch progress marker and stored inner results.
pub(crate) fn clear_batch_progress<B: Backend + ?Sized>(backend: &B) -> Result<(), StorageError> {
    delete_prefix(backend, Keyspace::Meta, keys::META_BATCH_PREFIX)?;
    Ok(())
}

/// The app whose served code or existence `command` changed, if it did.
/// The state machine broadcasts an `AppliedEvent::AppChanged` for it.
pub fn changed_app<'a>(command: &'a Command, result: &CommandResult) -> Option<&'a str> {
    if matches!(result, CommandResult::Rejected(_)) {
        return None;
    }
    match command {
        Command::AppCreate { app, .. }
        | Command::AppDelete { app }
        | Command::AppDeleteWithKeys { app }
        | Command::DeployExistingVersion(VersionDeploy { app, .. })
        | Command::Deploy { app, .. }
        | Command::DeployApp { app, .. }
        | Command::DeployVersion { app, .. }
        | Command::Rollback { app, .. } => Some(app),
        Command::FireCron { .. }
        | Command::ClaimRuns { .. }
        | Command::CompleteRun { .. }
        | Command::FailRun { .. }
        | Command::RetryDeadLetter { .. }
        | Command::DeleteDeadLetter { .. }
        | Command::Docs { .. }
        | Command::CompleteRunWithDocs { .. }
        | Command::PublishLib { .. }
        | Command::Kv { .. }
        | Command::KvAtomic { .. }
        | Command::KeyCreate { .. }
        | Command::KeyCreateForApp { .. }
        | Command::KeyRevoke { .. }
        | Command::AllocateNodeId { .. }
        | Command::SetJoinSecret { .. }
        | Command::RemoveNode { .. }
        | Command::SetClusterCa { .. }
        | Command::RegisterNode { .. }
        | Command::SecretSet { .. }
        | Command::SecretDelete { .. }
        | Command::SecretsRekey { .. }
        | Command::Batch(_) => None,
    }
}

/// Every app whose served code or existence `command` changed, in order
/// (with repeats): for a `Batch`, those of its accepted inner commands.
pub fn changed_apps<'a>(command: &'a Command, result: &CommandResult) -> Vec<&'a str> {
    match (command, result) {
        (Command::Batch(commands), CommandResult::Batch(results)) => commands
            .iter()
            .zip(results)
            .filter_map(|(command, result)| changed_app(command, result))
            .collect(),
        _ => changed_app(command, result).into_iter().collect(),
    }
}

/// Adds the last-applied log id to `batch`.
pub(crate) fn put_last_applied(
    batch: &mut WriteBatch,
    log_id: &LogId<NodeId>,
) -> Result<(), StorageError> {
    let bytes = codec::encode(log_id).map_err(StorageError::codec("last applied log id"))?;
    batch.insert(Keyspace::Meta, keys::META_LAST_APPLIED.to_vec(), bytes);
    Ok(())
}

/// A command's outcome: `Err` is a deterministic rejection.
type Outcome = Result<CommandResult, ApplyError>;

/// Reads through pending writes, so later ops of one command see earlier ones.
struct Txn<'a, B: ?Sized> {
    backend: &'a B,
    /// Writes of earlier commands of the same entry, not in the backend yet.
    below: Option<&'a PendingWrites>,
    /// `None` = removed. Ordered so the batch is the same on every replica.
    writes: PendingWrites,
}

/// Writes not yet committed: `None` = removed.
type PendingWrites = BTreeMap<(Keyspace, Vec<u8>), Option<Vec<u8>>>;

/// The backend batch of `writes` (in key order, the same on every replica).
fn batch_of(writes: PendingWrites) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for ((keyspace, key), value) in writes {
        match value {
            Some(value) => batch.insert(keyspace, key, value),
            None => batch.remove(keyspace, key),
        }
    }
    batch
}

impl<'a, B: Backend + ?Sized> Txn<'a, B> {
    fn new(backend: &'a B) -> Self {
        Txn {
            backend,
            below: None,
            writes: BTreeMap::new(),
        }
    }

    /// A transaction that reads through `below` before the backend.
    fn over(backend: &'a B, below: &'a PendingWrites) -> Self {
        Txn {
            backend,
            below: Some(below),
            writes: BTreeMap::new(),
        }
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let key = (keyspace, key.to_vec());
        if let Some(pending) = self.writes.get(&key) {
            return Ok(pending.clone());
        }
        if let Some(pending) = self.below.and_then(|below| below.get(&key)) {
            return Ok(pending.clone());
        }
        Ok(self.backend.get(keyspace, &key.1)?)
    }

    fn get_decoded<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StorageError> {
        match self.get(keyspace, key)? {
            Some(bytes) => Ok(Some(
                codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec(what))?,
            )),
            None => Ok(None),
        }
    }

    fn put(&mut self, keyspace: Keyspace, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert((keyspace, key), Some(value));
    }

    fn put_encoded<T: serde::Serialize>(
        &mut self,
        keyspace: Keyspace,
        key: Vec<u8>,
        value: &T,
        what: &'static str,
    ) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(StorageError::codec(what))?;
        self.put(keyspace, key, bytes);
        Ok(())
    }

    fn delete(&mut self, keyspace: Keyspace, key: Vec<u8>) {
        self.writes.insert((keyspace, key), None);
    }

    fn into_batch(self) -> WriteBatch {
        batch_of(self.writes)
    }

    fn app(&self, app: &str) -> Result<Option<AppRecord>, StorageError> {
        self.get_decoded(Keyspace::Apps, app.as_bytes(), "app record")
    }

    fn put_app(&mut self, record: &AppRecord) -> Result<(), StorageError> {
        self.put_encoded(
            Keyspace::Apps,
            record.name.as_bytes().to_vec(),
            record,
            "app record",
        )
    }

    /// The value of `key` in `app`, or `None` when absent or expired at `now_ms`.
    fn live_value(
        &self,
        app: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<StoredValue>, StorageError> {
        let stored: Option<StoredValue> =
            self.get_decoded(Keyspace::Kv, &keys::kv_key(app, key), "kv value")?;
        Ok(stored.filter(|value| value.is_live(now_ms)))
    }

    /// Versions deployed for `app` that exist in the backend, ascending.
    /// The trigger set of `app`'s active version (`None`: no app, no
    /// version, or a version deployed without triggers).
    fn active_triggers(&self, app: &str) -> Result<Option<TriggerSet>, StorageError> {
        match self.app(app)? {
            Some(record) => self.triggers_of(&record),
            None => Ok(None),
        }
    }

    /// The trigger set of the app's active version, from its record (the
    /// kv hot path has the record already).
    fn triggers_of(&self, record: &AppRecord) -> Result<Option<TriggerSet>, StorageError> {
        let Some(version) = record.active_version else {
            return Ok(None);
        };
        self.get_decoded(
            Keyspace::Triggers,
            &keys::trigger_set_key(&record.name, version),
            "trigger set",
        )
    }

    fn u64_at(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        what: &'static str,
    ) -> Result<u64, StorageError> {
        Ok(self.get_decoded::<u64>(keyspace, key, what)?.unwrap_or(0))
    }

    /// Writes `entry` as run `entry.id` of `app` in the outbox.
    fn put_run(&mut self, app: &str, entry: &OutboxEntry) -> Result<(), StorageError> {
        self.put_encoded(
            Keyspace::Outbox,
            keys::run_key(app, entry.id),
            entry,
            "outbox entry",
        )
    }

    fn outbox_entry(&self, app: &str, id: u64) -> Result<Option<OutboxEntry>, StorageError> {
        self.get_decoded(Keyspace::Outbox, &keys::run_key(app, id), "outbox entry")
    }

    fn deployed_versions(&self, app: &str) -> Result<Vec<u64>, StorageError> {
        let prefix = keys::app_prefix(app);
        let mut versions = Vec::new();
        for item in self.backend.scan(Keyspace::Deploys, &prefix, &prefix) {
            let (key, _) = item?;
            let version = keys::version_of_deploy_key(&key).ok_or(StorageError::Corrupt {
                what: "deploy key",
                detail: format!("{} bytes", key.len()),
            })?;
            versions.push(version);
        }
        Ok(versions)
    }
}

fn kv<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    op: &KvOp,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let Some(record) = txn.app(app)? else {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    };
    let triggers = txn.triggers_of(&record)?;
    Ok(kv_op_firing(txn, app, op, now_ms, triggers.as_ref(), 1)?.map(CommandResult::Kv))
}

fn kv_atomic<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    ops: &[KvOp],
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let Some(record) = txn.app(app)? else {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    };
    let triggers = txn.triggers_of(&record)?;
    Ok(kv_ops_atomic(txn, app, ops, now_ms, triggers.as_ref(), 1)?.map(CommandResult::KvAtomic))
}

/// `ops` all-or-nothing (the caller clears the writes on a rejection); the
/// writes fire `triggers` with runs of chain depth `depth`.
fn kv_ops_atomic<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    ops: &[KvOp],
    now_ms: u64,
    triggers: Option<&TriggerSet>,
    depth: u32,
) -> Result<Result<Vec<KvOpResult>, ApplyError>, StorageError> {
    let mut results = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let result = match kv_op_firing(txn, app, op, now_ms, triggers, depth)? {
            Ok(result) => result,
            Err(rejection) => return Ok(Err(rejection)),
        };
        if let (KvOp::Cas { key, .. }, KvOpResult::Cas { swapped: false }) = (op, &result) {
            return Ok(Err(ApplyError::AtomicCasFailed {
                index,
                key: key.clone(),
            }));
        }
        results.push(result);
    }
    Ok(Ok(results))
}

/// One kv op, then an outbox entry for every kv trigger it fires: a write
/// that changed the key (a set, an existing key deleted, an increment, a
/// swap) and matches a trigger's pattern and operations.
fn kv_op_firing<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    op: &KvOp,
    now_ms: u64,
    triggers: Option<&TriggerSet>,
    depth: u32,
) -> Result<Result<KvOpResult, ApplyError>, StorageError> {
    let key = match op {
        KvOp::Set { key, .. }
        | KvOp::Delete { key }
        | KvOp::Incr { key, .. }
        | KvOp::Cas { key, .. } => key,
    };
    let Some(set) = triggers.filter(|set| set.kv_triggers_on(key).next().is_some()) else {
        return kv_op(txn, app, op, now_ms);
    };
    let old = txn.live_value(app, key, now_ms)?.map(|stored| stored.value);
    let result = match kv_op(txn, app, op, now_ms)? {
        Ok(result) => result,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let changed = match &result {
        KvOpResult::Set | KvOpResult::Incr { .. } => true,
        KvOpResult::Deleted { existed } => *existed,
        KvOpResult::Cas { swapped } => *swapped,
    };
    if !changed {
        return Ok(Ok(result));
    }
    let new = txn.live_value(app, key, now_ms)?.map(|stored| stored.value);
    let fired: Vec<String> = set
        .kv_triggers_on(key)
        .filter(|(_, on_set, on_delete)| if new.is_some() { *on_set } else { *on_delete })
        .map(|(name, _, _)| name.to_string())
        .collect();
    for trigger in fired {
        let event = TriggerEvent::Kv {
            key: key.clone(),
            old: old.clone(),
            new: new.clone(),
        };
        if let Err(rejection) = enqueue_run(txn, app, set, &trigger, event, depth, now_ms)? {
            return Ok(Err(rejection));
        }
    }
    Ok(Ok(result))
}

fn kv_op<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    op: &KvOp,
    now_ms: u64,
) -> Result<Result<KvOpResult, ApplyError>, StorageError> {
    match op {
        KvOp::Set {
            key,
            value,
            expires_at_ms,
        } => {
            let stored = StoredValue {
                value: value.clone(),
                expires_at_ms: *expires_at_ms,
            };
            txn.put_encoded(Keyspace::Kv, keys::kv_key(app, key), &stored, "kv value")?;
            Ok(Ok(KvOpResult::Set))
        }
        KvOp::Delete { key } => {
            let existed = txn.live_value(app, key, now_ms)?.is_some();
            // An expired value is removed too: it is garbage either way.
            txn.delete(Keyspace::Kv, keys::kv_key(app, key));
            Ok(Ok(KvOpResult::Deleted { existed }))
        }
        KvOp::Incr { key, by } => {
            let current = txn.live_value(app, key, now_ms)?;
            let (number, expires_at_ms) = match &current {
                Some(stored) => match parse_integer(&stored.value) {
                    Some(number) => (number, stored.expires_at_ms),
                    None => return Ok(Err(ApplyError::NotANumber { key: key.clone() })),
                },
                None => (0, None),
            };
            let Some(value) = number.checked_add(*by) else {
                return Ok(Err(ApplyError::IncrOverflow { key: key.clone() }));
            };
            let stored = StoredValue {
                value: value.to_string().into_bytes(),
                expires_at_ms,
            };
            txn.put_encoded(Keyspace::Kv, keys::kv_key(app, key), &stored, "kv value")?;
            Ok(Ok(KvOpResult::Incr { value }))
        }
        KvOp::Cas { key, expected, new } => {
            let current = txn.live_value(app, key, now_ms)?;
            let matches = match (expected, &current) {
                (None, None) => true,
                (Some(expected), Some(current)) => json_equal(expected, &current.value),
                _ => false,
            };
            if !matches {
                return Ok(Ok(KvOpResult::Cas { swapped: false }));
            }
            match new {
                // A swapped-in value never expires: Cas carries no expiry.
                Some(new) => {
                    let stored = StoredValue {
                        value: new.clone(),
                        expires_at_ms: None,
                    };
                    txn.put_encoded(Keyspace::Kv, keys::kv_key(app, key), &stored, "kv value")?;
                }
                None => txn.delete(Keyspace::Kv, keys::kv_key(app, key)),
            }
            Ok(Ok(KvOpResult::Cas { swapped: true }))
        }
    }
}

/// The value as an `i64` if it is JSON integer text (`3`, not `3.0` or `"3"`).
fn parse_integer(bytes: &[u8]) -> Option<i64> {
    match serde_json::from_slice::<serde_json::Value>(bytes).ok()? {
        serde_json::Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`). Bytes
/// that are not both JSON compare bytewise.
pub(crate) fn json_equal(a: &[u8], b: &[u8]) -> bool {
    match (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => crate::query::equal(&a, &b),
        _ => a == b,
    }
}

fn app_create<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    if txn.app(app)?.is_some() {
        return Ok(Err(ApplyError::AppExists { app: app.into() }));
    }
    txn.put_app(&AppRecord {
        name: app.into(),
        created_ms: now_ms,
        active_version: None,
        latest_version: 0,
    })?;
    Ok(Ok(CommandResult::Done))
}

fn app_delete<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
) -> Result<Outcome, StorageError> {
    if txn.app(app)?.is_none() {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    }
    let prefix = keys::app_prefix(app);
    // Kv data can be huge: delete it in bounded batches before the final
    // batch (see the module comment for why this is crash-safe).
    delete_prefix(txn.backend, Keyspace::Kv, &prefix)?;
    // Trigger state, pending runs and dead letters go with it (bounded by
    // the outbox bound, but dead letters are not: bulk-deleted as well),
    // and so do its secrets. Documents and their index entries are
    // unbounded too.
    for keyspace in [
        Keyspace::Triggers,
        Keyspace::Outbox,
        Keyspace::DeadLetters,
        Keyspace::Docs,
        Keyspace::DocIndex,
        Keyspace::Secrets,
    ] {
        delete_prefix(txn.backend, keyspace, &prefix)?;
    }
    // Deploys are bounded by `versions_keep`: they go in the final batch.
    for version in txn.deployed_versions(app)? {
        txn.delete(Keyspace::Deploys, keys::deploy_key(app, version));
        txn.delete(Keyspace::Bundles, keys::deploy_key(app, version));
    }
    txn.delete(Keyspace::Apps, app.as_bytes().to_vec());
    Ok(Ok(CommandResult::Done))
}

fn deploy<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    bundle: &[u8],
    now_ms: u64,
    versions_keep: u32,
) -> Result<Outcome, StorageError> {
    let mut record = txn.app(app)?.unwrap_or_else(|| AppRecord {
        name: app.into(),
        created_ms: now_ms,
        active_version: None,
        latest_version: 0,
    });
    let version = record.latest_version + 1;
    let mut versions = txn.deployed_versions(app)?;
    versions.push(version);

    txn.put_encoded(
        Keyspace::Deploys,
        keys::deploy_key(app, version),
        &DeployRecord {
            version,
            created_ms: now_ms,
            bundle_bytes: bundle.len() as u64,
        },
        "deploy record",
    )?;
    txn.put(
        Keyspace::Bundles,
        keys::deploy_key(app, version),
        bundle.to_vec(),
    );
    record.latest_version = version;
    record.active_version = Some(version);
    txn.put_app(&record)?;

    // Keep the newest `versions_keep` (at least the new, active one).
    let keep = usize::try_from(versions_keep.max(1)).unwrap_or(usize::MAX);
    let prune_count = versions.len().saturating_sub(keep);
    for &old in versions.iter().take(prune_count) {
        if Some(old) != record.active_version {
            txn.delete(Keyspace::Deploys, keys::deploy_key(app, old));
            txn.delete(Keyspace::Bundles, keys::deploy_key(app, old));
            txn.delete(Keyspace::Triggers, keys::trigger_set_key(app, old));
            txn.delete(Keyspace::Triggers, crate::docs::index_set_key(app, old));
        }
    }
    Ok(Ok(CommandResult::Deployed { version }))
}

fn rollback<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    to_version: Option<u64>,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let Some(mut record) = txn.app(app)? else {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    };
    let versions = txn.deployed_versions(app)?;
    let target = match to_version {
        Some(version) => {
            if !versions.contains(&version) {
                return Ok(Err(ApplyError::VersionNotFound {
                    app: app.into(),
                    version,
                }));
            }
            version
        }
        None => {
            let below_active = record.active_version.and_then(|active| {
                versions
                    .iter()
                    .copied()
                    .filter(|version| *version < active)
                    .max()
            });
            match below_active {
                Some(version) => version,
                None => return Ok(Err(ApplyError::NoEarlierVersion { app: app.into() })),
            }
        }
    };
    let before = txn.active_triggers(app)?;
    record.active_version = Some(target);
    txn.put_app(&record)?;
    let after: Option<TriggerSet> = txn.get_decoded(
        Keyspace::Triggers,
        &keys::trigger_set_key(app, target),
        "trigger set",
    )?;
    swap_triggers(txn, app, before.as_ref(), after.as_ref(), now_ms)?;
    let indexes = docs_apply::version_indexes(txn, app, target)?;
    if let Err(rejection) = docs_apply::switch_indexes(txn, app, &indexes)? {
        return Ok(Err(rejection));
    }
    Ok(Ok(CommandResult::RolledBack { version: target }))
}

/// Shared libraries keep their versions in their record, so publishing
/// reads nothing but that record (no scan).
fn publish_lib<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    name: &str,
    files: &[u8],
    now_ms: u64,
    versions_keep: u32,
) -> Result<Outcome, StorageError> {
    let mut record = txn
        .get_decoded(Keyspace::Libs, name.as_bytes(), "lib record")?
        .unwrap_or_else(|| LibRecord {
            name: name.into(),
            latest_version: 0,
            versions: Vec::new(),
        });
    let version = record.latest_version + 1;
    record.latest_version = version;
    record.versions.push(LibVersion {
        version,
        created_ms: now_ms,
        files_bytes: files.len() as u64,
    });
    txn.put(
        Keyspace::LibFiles,
        keys::deploy_key(name, version),
        files.to_vec(),
    );
    let keep = usize::try_from(versions_keep.max(1)).unwrap_or(usize::MAX);
    let prune_count = record.versions.len().saturating_sub(keep);
    for old in record.versions.drain(..prune_count) {
        txn.delete(Keyspace::LibFiles, keys::deploy_key(name, old.version));
    }
    txn.put_encoded(
        Keyspace::Libs,
        name.as_bytes().to_vec(),
        &record,
        "lib record",
    )?;
    Ok(Ok(CommandResult::LibPublished { version }))
}

fn key_create<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: &str,
    name: &str,
    scope: &str,
    secret_hash: &[u8],
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    if txn.get(Keyspace::Keys, id.as_bytes())?.is_some() {
        return Ok(Err(ApplyError::KeyExists { id: id.into() }));
    }
    let record = KeyRecord {
        id: id.into(),
        name: name.into(),
        scope: scope.into(),
        secret_hash: secret_hash.to_vec(),
        created_ms: now_ms,
    };
    txn.put_encoded(
        Keyspace::Keys,
        id.as_bytes().to_vec(),
        &record,
        "key record",
    )?;
    Ok(Ok(CommandResult::Done))
}

fn key_revoke<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: &str,
) -> Result<Outcome, StorageError> {
    if txn.get(Keyspace::Keys, id.as_bytes())?.is_none() {
        return Ok(Err(ApplyError::KeyNotFound { id: id.into() }));
    }
    txn.delete(Keyspace::Keys, id.as_bytes().to_vec());
    Ok(Ok(CommandResult::Done))
}

/// The id the next `AllocateNodeId` hands out, reading `Cluster` keys with
/// `get`: the stored counter (at least [`keys::FIRST_ALLOCATED_NODE_ID`]),
/// moved past any id recorded as removed.
pub(crate) fn next_node_id(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, StorageError>,
) -> Result<NodeId, StorageError> {
    let stored: NodeId = match get(keys::CLUSTER_NEXT_NODE_ID)? {
        Some(bytes) => {
            codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("next node id"))?
        }
        None => keys::FIRST_ALLOCATED_NODE_ID,
    };
    let mut id = stored.max(keys::FIRST_ALLOCATED_NODE_ID);
    while get(&keys::removed_node_key(id))?.is_some() {
        id = id.checked_add(1).ok_or_else(node_ids_exhausted)?;
    }
    Ok(id)
}

/// 2^64 ids cannot be allocated one log entry at a time: a counter this
/// high is damage, not use.
fn node_ids_exhausted() -> StorageError {
    StorageError::Corrupt {
        what: "next node id",
        detail: "the node id counter is at its maximum".into(),
    }
}

fn allocate_node_id<B: Backend + ?Sized>(txn: &mut Txn<'_, B>) -> Result<Outcome, StorageError> {
    let id = next_node_id(|key| txn.get(Keyspace::Cluster, key))?;
    let next = id.checked_add(1).ok_or_else(node_ids_exhausted)?;
    txn.put_encoded(
        Keyspace::Cluster,
        keys::CLUSTER_NEXT_NODE_ID.to_vec(),
        &next,
        "next node id",
    )?;
    Ok(Ok(CommandResult::NodeIdAllocated { id }))
}

fn set_join_secret<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    secret: &[u8],
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let record = keys::JoinSecretRecord {
        secret: secret.to_vec(),
        set_ms: now_ms,
    };
    txn.put_encoded(
        Keyspace::Cluster,
        keys::CLUSTER_JOIN_SECRET.to_vec(),
        &record,
        "join secret",
    )?;
    Ok(Ok(CommandResult::Done))
}

fn remove_node<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: NodeId,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let key = keys::removed_node_key(id);
    // Removed once is removed for good: the first removal's time stays.
    if txn.get(Keyspace::Cluster, &key)?.is_none() {
        txn.put_encoded(Keyspace::Cluster, key, &now_ms, "removed node")?;
    }
    Ok(Ok(CommandResult::Done))
}

fn register_node<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: NodeId,
    node: &crate::types::NodeInfo,
) -> Result<Outcome, StorageError> {
    // A removed id stays out for good, even if a late registration arrives.
    if txn
        .get(Keyspace::Cluster, &keys::removed_node_key(id))?
        .is_none()
    {
        txn.put_encoded(
            Keyspace::Cluster,
            keys::registered_node_key(id),
            node,
            "registered node",
        )?;
    }
    Ok(Ok(CommandResult::Done))
}

fn set_cluster_ca<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Outcome, StorageError> {
    let record = keys::ClusterCaRecord {
        cert_pem: cert_pem.into(),
        key_pem: key_pem.into(),
    };
    txn.put_encoded(
        Keyspace::Cluster,
        keys::CLUSTER_CA.to_vec(),
        &record,
        "cluster ca",
    )?;
    Ok(Ok(CommandResult::Done))
}

/// Adds a run of `trigger` to `app`'s outbox (or, past the chain depth
/// bound, straight to its dead letters as `trigger_loop`) and returns its
/// id. Rejected with `OutboxFull` when the app's outbox is at its bound.
fn enqueue_run<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    set: &TriggerSet,
    trigger: &str,
    event: TriggerEvent,
    depth: u32,
    now_ms: u64,
) -> Result<Result<u64, ApplyError>, StorageError> {
    let next_key = keys::outbox_next_id_key(app);
    let id = txn
        .u64_at(Keyspace::Triggers, &next_key, "outbox id")?
        .max(1);
    txn.put_encoded(Keyspace::Triggers, next_key, &(id + 1), "outbox id")?;
    let entry = OutboxEntry {
        id,
        trigger: trigger.to_string(),
        event,
        depth,
        created_ms: now_ms,
        attempts: Vec::new(),
        not_before_ms: now_ms,
        claim: None,
    };
    if depth > set.chain_depth_max {
        let error = format!(
            "a chain of {depth} trigger runs exceeds chain_depth_max = {}",
            set.chain_depth_max
        );
        bury(txn, app, set, entry, dead_code::TRIGGER_LOOP, error, now_ms)?;
        return Ok(Ok(id));
    }
    if let Err(full) = reserve_outbox_slot(txn, app, set)? {
        return Ok(Err(full));
    }
    txn.put_run(app, &entry)?;
    Ok(Ok(id))
}

/// Counts one more pending run of `app`, or refuses with `OutboxFull`.
fn reserve_outbox_slot<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    set: &TriggerSet,
) -> Result<Result<(), ApplyError>, StorageError> {
    let count_key = keys::outbox_count_key(app);
    let count = txn.u64_at(Keyspace::Triggers, &count_key, "outbox count")?;
    if count >= u64::from(set.outbox_max) {
        return Ok(Err(ApplyError::OutboxFull {
            app: app.into(),
            max: set.outbox_max,
        }));
    }
    txn.put_encoded(Keyspace::Triggers, count_key, &(count + 1), "outbox count")?;
    Ok(Ok(()))
}

/// Removes run `id` from the outbox (and its count).
fn unqueue_run<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
) -> Result<(), StorageError> {
    txn.delete(Keyspace::Outbox, keys::run_key(app, id));
    let count_key = keys::outbox_count_key(app);
    let count = txn.u64_at(Keyspace::Triggers, &count_key, "outbox count")?;
    txn.put_encoded(
        Keyspace::Triggers,
        count_key,
        &count.saturating_sub(1),
        "outbox count",
    )
}

/// Stores `entry` as a dead letter and, unless it is itself a run of a
/// `dead_letter` trigger, queues a run of each of the app's `dead_letter`
/// triggers (skipped when the outbox is full: the dead letter stays).
fn bury<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    set: &TriggerSet,
    entry: OutboxEntry,
    code: &str,
    error: String,
    now_ms: u64,
) -> Result<(), StorageError> {
    let from_dead_letter_trigger = set
        .triggers
        .iter()
        .any(|def| def.name == entry.trigger && def.kind == TriggerDefKind::DeadLetter);
    let event = TriggerEvent::DeadLetter {
        trigger: entry.trigger.clone(),
        delivery_id: crate::triggers::delivery_id(app, entry.id),
        code: code.to_string(),
        error: error.clone(),
    };
    let id = entry.id;
    let letter = DeadLetter {
        entry,
        code: code.to_string(),
        error,
        dead_ms: now_ms,
    };
    txn.put_encoded(
        Keyspace::DeadLetters,
        keys::run_key(app, id),
        &letter,
        "dead letter",
    )?;
    if from_dead_letter_trigger {
        return Ok(());
    }
    let watchers: Vec<String> = set
        .triggers
        .iter()
        .filter(|def| def.kind == TriggerDefKind::DeadLetter)
        .map(|def| def.name.clone())
        .collect();
    for watcher in watchers {
        // Depth 1: an alert about a failure starts a chain of its own.
        let _full = enqueue_run(txn, app, set, &watcher, event.clone(), 1, now_ms)?;
    }
    Ok(())
}

fn deploy_app<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    bundle: &[u8],
    now_ms: u64,
    versions_keep: u32,
    triggers: Option<&TriggerSet>,
) -> Result<Outcome, StorageError> {
    let before = txn.active_triggers(app)?;
    let outcome = deploy(txn, app, bundle, now_ms, versions_keep)?;
    let Ok(CommandResult::Deployed { version }) = &outcome else {
        return Ok(outcome);
    };
    if let Some(triggers) = triggers {
        txn.put_encoded(
            Keyspace::Triggers,
            keys::trigger_set_key(app, *version),
            triggers,
            "trigger set",
        )?;
    }
    swap_triggers(txn, app, before.as_ref(), triggers, now_ms)?;
    Ok(outcome)
}

/// `DeployApp`, then the version's index set becomes the built one.
#[allow(clippy::too_many_arguments)]
fn deploy_version<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    bundle: &[u8],
    now_ms: u64,
    versions_keep: u32,
    triggers: &TriggerSet,
    indexes: &[crate::docs::IndexDef],
) -> Result<Outcome, StorageError> {
    let outcome = deploy_app(txn, app, bundle, now_ms, versions_keep, Some(triggers))?;
    let Ok(CommandResult::Deployed { version }) = &outcome else {
        return Ok(outcome);
    };
    txn.put_encoded(
        Keyspace::Triggers,
        crate::docs::index_set_key(app, *version),
        &indexes.to_vec(),
        "index set",
    )?;
    if let Err(rejection) = docs_apply::switch_indexes(txn, app, indexes)? {
        return Ok(Err(rejection));
    }
    Ok(outcome)
}

/// The active trigger set changed from `before` to `after`: pending runs of
/// triggers `after` lacks are dead-lettered (`trigger_removed`) and their
/// cron state is dropped. Scans the backend (not pending writes): runs are
/// only ever created by other log entries.
fn swap_triggers<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    before: Option<&TriggerSet>,
    after: Option<&TriggerSet>,
    now_ms: u64,
) -> Result<(), StorageError> {
    let Some(before) = before else {
        return Ok(());
    };
    let empty = TriggerSet::default();
    let after = after.unwrap_or(&empty);
    let kept = |name: &str| after.triggers.iter().any(|def| def.name == name);
    let removed: Vec<&str> = before
        .triggers
        .iter()
        .map(|def| def.name.as_str())
        .filter(|name| !kept(name))
        .collect();
    if removed.is_empty() {
        return Ok(());
    }
    for name in &removed {
        txn.delete(Keyspace::Triggers, keys::fired_key(app, name));
    }
    let prefix = keys::app_prefix(app);
    let mut orphans = Vec::new();
    for item in txn.backend.scan(Keyspace::Outbox, &prefix, &prefix) {
        let (_, bytes) = item?;
        let entry: OutboxEntry =
            codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("outbox entry"))?;
        if removed.contains(&entry.trigger.as_str()) {
            orphans.push(entry);
        }
    }
    for entry in orphans {
        unqueue_run(txn, app, entry.id)?;
        let error = format!(
            "trigger {} was removed by a deploy or rollback",
            entry.trigger
        );
        bury(
            txn,
            app,
            after,
            entry,
            dead_code::TRIGGER_REMOVED,
            error,
            now_ms,
        )?;
    }
    Ok(())
}

fn fire_cron<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    trigger: &str,
    slot_ms: u64,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let not_found = || {
        Ok(Err(ApplyError::TriggerNotFound {
            app: app.into(),
            trigger: trigger.into(),
        }))
    };
    let Some(set) = txn.active_triggers(app)? else {
        return not_found();
    };
    let is_cron =
        |def: &TriggerDef| def.name == trigger && matches!(def.kind, TriggerDefKind::Cron { .. });
    if !set.triggers.iter().any(is_cron) {
        return not_found();
    }
    let fired_key = keys::fired_key(app, trigger);
    let last: Option<u64> = txn.get_decoded(Keyspace::Triggers, &fired_key, "fired slot")?;
    if last.is_some_and(|last| last >= slot_ms) {
        return Ok(Ok(CommandResult::TriggerFired { id: None }));
    }
    txn.put_encoded(Keyspace::Triggers, fired_key, &slot_ms, "fired slot")?;
    let event = TriggerEvent::Cron { slot_ms };
    Ok(enqueue_run(txn, app, &set, trigger, event, 1, now_ms)?
        .map(|id| CommandResult::TriggerFired { id: Some(id) }))
}

#[allow(clippy::too_many_arguments)]
fn claim_runs<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    ids: &[u64],
    term: u64,
    node: NodeId,
    now_ms: u64,
    reclaim_after_ms: u64,
) -> Result<Outcome, StorageError> {
    let mut claimed = Vec::new();
    for &id in ids {
        let Some(mut entry) = txn.outbox_entry(app, id)? else {
            continue;
        };
        let free = match &entry.claim {
            None => true,
            Some(claim) => {
                claim.term < term || now_ms.saturating_sub(claim.at_ms) >= reclaim_after_ms
            }
        };
        if !free || entry.not_before_ms > now_ms {
            continue;
        }
        entry.claim = Some(Claim {
            term,
            node,
            at_ms: now_ms,
        });
        txn.put_run(app, &entry)?;
        claimed.push(id);
    }
    Ok(Ok(CommandResult::RunsClaimed {
        ids: claimed,
        claim_ms: now_ms,
    }))
}

/// The entry of run `id` if `claim` (term, claim time) still holds it.
fn claimed_entry<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    app: &str,
    id: u64,
    (term, claim_ms): (u64, u64),
) -> Result<Result<OutboxEntry, ApplyError>, StorageError> {
    match txn.outbox_entry(app, id)? {
        Some(entry)
            if entry
                .claim
                .as_ref()
                .is_some_and(|claim| claim.term == term && claim.at_ms == claim_ms) =>
        {
            Ok(Ok(entry))
        }
        _ => Ok(Err(ApplyError::StaleClaim {
            app: app.into(),
            id,
        })),
    }
}

#[allow(clippy::too_many_arguments)]
fn complete_run<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
    claim: (u64, u64),
    ops: &[KvOp],
    docs: &[crate::command::DocOp],
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let entry = match claimed_entry(txn, app, id, claim)? {
        Ok(entry) => entry,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let set = txn.active_triggers(app)?.unwrap_or_default();
    // Nothing is written yet in this command's transaction, so a rejected
    // set of writes is undone by clearing it.
    debug_assert!(txn.writes.is_empty());
    let depth = entry.depth + 1;
    let mut applied = kv_ops_atomic(txn, app, ops, now_ms, Some(&set), depth)?.map(|_| ());
    if applied.is_ok() && !docs.is_empty() {
        applied = docs_apply::doc_ops(txn, app, docs, Some(&set), depth, now_ms)?.map(|_| ());
    }
    match applied {
        Ok(()) => {
            unqueue_run(txn, app, id)?;
            Ok(Ok(CommandResult::Run(RunOutcome::Completed)))
        }
        Err(rejection) => {
            txn.writes.clear();
            let error = format!("the run's writes were rejected: {rejection}");
            record_failure(txn, app, &set, entry, error, now_ms).map(Ok)
        }
    }
}

fn fail_run<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
    claim: (u64, u64),
    error: &str,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let entry = match claimed_entry(txn, app, id, claim)? {
        Ok(entry) => entry,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let set = txn.active_triggers(app)?.unwrap_or_default();
    record_failure(txn, app, &set, entry, error.to_string(), now_ms).map(Ok)
}

/// One more failed attempt: retry after the trigger's backoff, or bury.
fn record_failure<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    set: &TriggerSet,
    mut entry: OutboxEntry,
    error: String,
    now_ms: u64,
) -> Result<CommandResult, StorageError> {
    entry.attempts.push(Attempt {
        at_ms: now_ms,
        error: error.clone(),
    });
    entry.claim = None;
    let Some(def) = set.triggers.iter().find(|def| def.name == entry.trigger) else {
        unqueue_run(txn, app, entry.id)?;
        let error = format!("{error} (trigger {} is gone)", entry.trigger);
        bury(
            txn,
            app,
            set,
            entry,
            dead_code::TRIGGER_REMOVED,
            error,
            now_ms,
        )?;
        return Ok(CommandResult::Run(RunOutcome::DeadLettered {
            code: dead_code::TRIGGER_REMOVED.into(),
        }));
    };
    let failures = u32::try_from(entry.attempts.len()).unwrap_or(u32::MAX);
    if failures >= def.attempts_max {
        unqueue_run(txn, app, entry.id)?;
        bury(txn, app, set, entry, dead_code::FAILED, error, now_ms)?;
        return Ok(CommandResult::Run(RunOutcome::DeadLettered {
            code: dead_code::FAILED.into(),
        }));
    }
    entry.not_before_ms = now_ms.saturating_add(retry_delay_ms(def.backoff_ms, failures));
    let not_before_ms = entry.not_before_ms;
    txn.put_run(app, &entry)?;
    Ok(CommandResult::Run(RunOutcome::WillRetry { not_before_ms }))
}

fn retry_dead_letter<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let key = keys::run_key(app, id);
    let Some(letter) = txn.get_decoded::<DeadLetter>(Keyspace::DeadLetters, &key, "dead letter")?
    else {
        return Ok(Err(ApplyError::DeadLetterNotFound {
            app: app.into(),
            id,
        }));
    };
    let set = txn.active_triggers(app)?.unwrap_or_default();
    if !set
        .triggers
        .iter()
        .any(|def| def.name == letter.entry.trigger)
    {
        return Ok(Err(ApplyError::TriggerNotFound {
            app: app.into(),
            trigger: letter.entry.trigger,
        }));
    }
    if let Err(full) = reserve_outbox_slot(txn, app, &set)? {
        return Ok(Err(full));
    }
    let mut entry = letter.entry;
    entry.attempts.clear();
    entry.claim = None;
    entry.not_before_ms = now_ms;
    entry.depth = entry.depth.min(set.chain_depth_max);
    txn.delete(Keyspace::DeadLetters, key);
    txn.put_run(app, &entry)?;
    Ok(Ok(CommandResult::Done))
}

fn delete_dead_letter<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
) -> Result<Outcome, StorageError> {
    let key = keys::run_key(app, id);
    if txn.get(Keyspace::DeadLetters, &key)?.is_none() {
        return Ok(Err(ApplyError::DeadLetterNotFound {
            app: app.into(),
            id,
        }));
    }
    txn.delete(Keyspace::DeadLetters, key);
    Ok(Ok(CommandResult::Done))
}

fn secret_set<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    name: &str,
    sealed: &[u8],
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    if txn.app(app)?.is_none() {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    }
    let key = keys::secret_key(app, name);
    if txn.get(Keyspace::Secrets, &key)?.is_none() {
        let count_key = keys::secret_count_key(app);
        let count: u32 = txn
            .get_decoded(Keyspace::Secrets, &count_key, "secret count")?
            .unwrap_or(0);
        if count >= SECRETS_PER_APP_MAX {
            return Ok(Err(ApplyError::SecretsFull {
                app: app.into(),
                max: SECRETS_PER_APP_MAX,
            }));
        }
        txn.put_encoded(Keyspace::Secrets, count_key, &(count + 1), "secret count")?;
    }
    let record = SecretRecord {
        sealed: sealed.to_vec(),
        updated_ms: now_ms,
    };
    txn.put_encoded(Keyspace::Secrets, key, &record, "secret")?;
    Ok(Ok(CommandResult::Done))
}

fn secret_delete<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    name: &str,
) -> Result<Outcome, StorageError> {
    if txn.app(app)?.is_none() {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    }
    let key = keys::secret_key(app, name);
    if txn.get(Keyspace::Secrets, &key)?.is_none() {
        return Ok(Err(ApplyError::SecretNotFound {
            app: app.into(),
            name: name.into(),
        }));
    }
    txn.delete(Keyspace::Secrets, key);
    let count_key = keys::secret_count_key(app);
    let count: u32 = txn
        .get_decoded(Keyspace::Secrets, &count_key, "secret count")?
        .unwrap_or(0);
    txn.put_encoded(
        Keyspace::Secrets,
        count_key,
        &count.saturating_sub(1),
        "secret count",
    )?;
    Ok(Ok(CommandResult::Done))
}

/// Swaps each re-sealed value in only where the stored one is still the
/// value that was re-sealed (a compare-and-swap per secret).
fn secrets_rekey<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    secrets: &[SecretRekey],
) -> Result<Outcome, StorageError> {
    let (mut rekeyed, mut changed) = (0u64, 0u64);
    for secret in secrets {
        let key = keys::secret_key(&secret.app, &secret.name);
        match txn.get_decoded::<SecretRecord>(Keyspace::Secrets, &key, "secret")? {
            Some(mut record) if record.sealed == secret.old => {
                record.sealed = secret.new.clone();
                txn.put_encoded(Keyspace::Secrets, key, &record, "secret")?;
                rekeyed += 1;
            }
            _ => changed += 1,
        }
    }
    Ok(Ok(CommandResult::SecretsRekeyed { rekeyed, changed }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::CommittedLeaderId;

    use super::*;
    use crate::backend::{
        BULK_DELETE_BATCH_KEYS, BackendError, KeyValue, ScanItem, SledBackend, SledOptions,
    };
    use crate::records::KvPage;
    use crate::state::StateReader;

    /// A state backend in a temp dir, and `apply` at increasing log indexes
    /// (shared with `trigger_tests`).
    pub(super) struct Fixture {
        _dir: tempfile::TempDir,
        pub(super) backend: Arc<SledBackend>,
        pub(super) reader: StateReader,
        pub(super) index: u64,
    }

    impl Fixture {
        pub(super) fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let backend = Arc::new(
                SledBackend::open(
                    &dir.path().join("state"),
                    SledOptions {
                        cache_capacity_bytes: 4 << 20,
                    },
                )
                .expect("open"),
            );
            let reader = StateReader::new(backend.clone(), tokio::sync::broadcast::channel(4).0);
            Fixture {
                _dir: dir,
                backend,
                reader,
                index: 0,
            }
        }

        pub(super) fn run(&mut self, command: Command) -> CommandResult {
            self.index += 1;
            let log_id = LogId::new(CommittedLeaderId::new(1, 1), self.index);
            apply(self.backend.as_ref(), &log_id, &command).expect("apply")
        }

        fn create(&mut self, app: &str) {
            let result = self.run(Command::AppCreate {
                app: app.into(),
                now_ms: 1,
            });
            assert_eq!(result, CommandResult::Done);
        }

        fn kv(&mut self, app: &str, op: KvOp, now_ms: u64) -> CommandResult {
            self.run(Command::Kv {
                app: app.into(),
                op,
                now_ms,
            })
        }

        fn set(&mut self, app: &str, key: &str, value: &str, expires_at_ms: Option<u64>) {
            let result = self.kv(app, set(key, value, expires_at_ms), 0);
            assert_eq!(result, CommandResult::Kv(KvOpResult::Set));
        }

        fn get(&self, app: &str, key: &str, now_ms: u64) -> Option<String> {
            self.reader
                .kv_get(app, key, now_ms)
                .expect("get")
                .map(|value| String::from_utf8(value).expect("utf8"))
        }

        fn deploy(&mut self, app: &str, bundle: &str, versions_keep: u32) -> CommandResult {
            self.run(Command::Deploy {
                app: app.into(),
                bundle: bundle.as_bytes().to_vec(),
                now_ms: 10,
                versions_keep,
            })
        }

        fn rollback(&mut self, app: &str, to_version: Option<u64>) -> CommandResult {
            self.run(Command::Rollback {
                app: app.into(),
                to_version,
                now_ms: 10,
            })
        }

        fn versions(&self, app: &str) -> Vec<u64> {
            let deploys = self.reader.deploys(app).expect("deploys");
            deploys.iter().map(|deploy| deploy.version).collect()
        }
    }

    fn set(key: &str, value: &str, expires_at_ms: Option<u64>) -> KvOp {
        KvOp::Set {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            expires_at_ms,
        }
    }

    fn incr(key: &str, by: i64) -> KvOp {
        KvOp::Incr {
            key: key.into(),
            by,
        }
    }

    fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> KvOp {
        KvOp::Cas {
            key: key.into(),
            expected: expected.map(|e| e.as_bytes().to_vec()),
            new: new.map(|n| n.as_bytes().to_vec()),
        }
    }

    fn rejected(error: ApplyError) -> CommandResult {
        CommandResult::Rejected(error)
    }

    #[test]
    fn set_get_delete_and_applied_index() {
        let mut f = Fixture::new();
        f.create("app");
        f.set("app", "k", "\"v\"", None);
        assert_eq!(f.get("app", "k", 0).as_deref(), Some("\"v\""));
        let deleted = f.kv("app", KvOp::Delete { key: "k".into() }, 0);
        assert_eq!(
            deleted,
            CommandResult::Kv(KvOpResult::Deleted { existed: true })
        );
        let again = f.kv("app", KvOp::Delete { key: "k".into() }, 0);
        assert_eq!(
            again,
            CommandResult::Kv(KvOpResult::Deleted { existed: false })
        );
        assert_eq!(f.get("app", "k", 0), None);
        assert_eq!(f.reader.last_applied_index().expect("index"), Some(4));
    }

    #[test]
    fn kv_on_missing_app_is_rejected_and_writes_nothing_but_the_index() {
        let mut f = Fixture::new();
        let result = f.kv("ghost", set("k", "1", None), 0);
        assert_eq!(
            result,
            rejected(ApplyError::AppNotFound {
                app: "ghost".into()
            })
        );
        assert_eq!(f.get("ghost", "k", 0), None);
        assert_eq!(f.reader.last_applied_index().expect("index"), Some(1));
    }

    #[test]
    fn expired_values_count_as_absent() {
        let mut f = Fixture::new();
        f.create("app");
        f.set("app", "t", "7", Some(100));
        assert_eq!(f.get("app", "t", 99).as_deref(), Some("7"));
        assert_eq!(f.get("app", "t", 100), None);
        // Incr on an expired value starts from 0 and drops the old expiry.
        assert_eq!(
            f.kv("app", incr("t", 2), 100),
            CommandResult::Kv(KvOpResult::Incr { value: 2 })
        );
        assert_eq!(f.get("app", "t", 5_000).as_deref(), Some("2"));
        // Cas "expected absent" succeeds on an expired value.
        f.set("app", "c", "1", Some(50));
        assert_eq!(
            f.kv("app", cas("c", None, Some("9")), 60),
            CommandResult::Kv(KvOpResult::Cas { swapped: true })
        );
        assert_eq!(f.get("app", "c", 1_000).as_deref(), Some("9"));
        // Deleting an expired value reports it did not exist.
        f.set("app", "d", "1", Some(50));
        assert_eq!(
            f.kv("app", KvOp::Delete { key: "d".into() }, 60),
            CommandResult::Kv(KvOpResult::Deleted { existed: false })
        );
    }

    #[test]
    fn incr_on_integers_only() {
        let mut f = Fixture::new();
        f.create("app");
        assert_eq!(
            f.kv("app", incr("n", 5), 0),
            CommandResult::Kv(KvOpResult::Incr { value: 5 })
        );
        assert_eq!(
            f.kv("app", incr("n", -7), 0),
            CommandResult::Kv(KvOpResult::Incr { value: -2 })
        );
        assert_eq!(f.get("app", "n", 0).as_deref(), Some("-2"));
        for not_integer in ["\"5\"", "1.5", "3.0", "[1]", "true", "not json"] {
            f.set("app", "x", not_integer, None);
            assert_eq!(
                f.kv("app", incr("x", 1), 0),
                rejected(ApplyError::NotANumber { key: "x".into() }),
                "{not_integer}"
            );
            assert_eq!(f.get("app", "x", 0).as_deref(), Some(not_integer));
        }
        f.set("app", "big", &i64::MAX.to_string(), None);
        assert_eq!(
            f.kv("app", incr("big", 1), 0),
            rejected(ApplyError::IncrOverflow { key: "big".into() })
        );
    }

    #[test]
    fn incr_keeps_the_expiry() {
        let mut f = Fixture::new();
        f.create("app");
        f.set("app", "n", "1", Some(1_000));
        assert_eq!(
            f.kv("app", incr("n", 1), 10),
            CommandResult::Kv(KvOpResult::Incr { value: 2 })
        );
        assert_eq!(f.get("app", "n", 999).as_deref(), Some("2"));
        assert_eq!(f.get("app", "n", 1_000), None);
    }

    #[test]
    fn cas_compares_json_with_numbers_by_value() {
        let mut f = Fixture::new();
        f.create("app");
        f.set("app", "k", "1.0", None);
        let swapped = CommandResult::Kv(KvOpResult::Cas { swapped: true });
        let not_swapped = CommandResult::Kv(KvOpResult::Cas { swapped: false });
        assert_eq!(
            f.kv("app", cas("k", Some("1"), Some("{ \"a\": [1.0, 2] }")), 0),
            swapped
        );
        assert_eq!(
            f.kv("app", cas("k", Some("{\"a\":[1,2.0]}"), Some("3")), 0),
            swapped
        );
        assert_eq!(f.kv("app", cas("k", Some("4"), Some("5")), 0), not_swapped);
        assert_eq!(f.kv("app", cas("k", None, Some("5")), 0), not_swapped);
        assert_eq!(f.get("app", "k", 0).as_deref(), Some("3"));
        assert_eq!(f.kv("app", cas("k", Some("3"), None), 0), swapped);
        assert_eq!(f.get("app", "k", 0), None);
        assert_eq!(f.kv("app", cas("k", Some("3"), Some("1")), 0), not_swapped);
        assert_eq!(f.kv("app", cas("k", None, Some("\"s\"")), 0), swapped);
        assert_eq!(f.kv("app", cas("k", Some("\"t\""), None), 0), not_swapped);
    }

    #[test]
    fn json_equality_edge_cases() {
        assert!(json_equal(b"1", b"1.0"));
        assert!(json_equal(b"-0", b"0"));
        assert!(json_equal(b"{\"a\":1,\"b\":2}", b"{\"b\":2.0,\"a\":1}"));
        assert!(!json_equal(b"{\"a\":1}", b"{\"a\":1,\"b\":2}"));
        assert!(!json_equal(b"1", b"\"1\""));
        assert!(!json_equal(b"18446744073709551615", b"-1"));
        assert!(json_equal(b"not json", b"not json"));
        assert!(!json_equal(b"not json", b"other"));
    }

    #[test]
    fn kv_atomic_is_all_or_nothing() {
        let mut f = Fixture::new();
        f.create("app");
        f.set("app", "c", "1", None);
        f.set("app", "s", "\"text\"", None);

        let failed_cas = f.run(Command::KvAtomic {
            app: "app".into(),
            ops: vec![
                set("a", "1", None),
                incr("b", 1),
                cas("c", Some("9"), Some("2")),
            ],
            now_ms: 0,
        });
        assert_eq!(
            failed_cas,
            rejected(ApplyError::AtomicCasFailed {
                index: 2,
                key: "c".into()
            })
        );
        assert_eq!(f.get("app", "a", 0), None);
        assert_eq!(f.get("app", "b", 0), None);

        let not_a_number = f.run(Command::KvAtomic {
            app: "app".into(),
            ops: vec![set("a", "1", None), incr("s", 1)],
            now_ms: 0,
        });
        assert_eq!(
            not_a_number,
            rejected(ApplyError::NotANumber { key: "s".into() })
        );
        assert_eq!(f.get("app", "a", 0), None);

        // Later ops see earlier ones inside one command.
        let ok = f.run(Command::KvAtomic {
            app: "app".into(),
            ops: vec![
                set("x", "1", None),
                incr("x", 2),
                cas("c", Some("1.0"), Some("2")),
                KvOp::Delete { key: "s".into() },
            ],
            now_ms: 0,
        });
        assert_eq!(
            ok,
            CommandResult::KvAtomic(vec![
                KvOpResult::Set,
                KvOpResult::Incr { value: 3 },
                KvOpResult::Cas { swapped: true },
                KvOpResult::Deleted { existed: true },
            ])
        );
        assert_eq!(f.get("app", "x", 0).as_deref(), Some("3"));
        assert_eq!(f.get("app", "c", 0).as_deref(), Some("2"));
        assert_eq!(f.get("app", "s", 0), None);
    }

    #[test]
    fn deploy_allocates_versions_prunes_and_rolls_back() {
        let mut f = Fixture::new();
        // Deploy creates the app.
        assert_eq!(
            f.deploy("app", "v1", 2),
            CommandResult::Deployed { version: 1 }
        );
        let record = f.reader.app("app").expect("app").expect("created");
        assert_eq!(
            (
                record.active_version,
                record.latest_version,
                record.created_ms
            ),
            (Some(1), 1, 10)
        );
        assert_eq!(
            f.deploy("app", "v2", 2),
            CommandResult::Deployed { version: 2 }
        );
        assert_eq!(
            f.deploy("app", "v3", 2),
            CommandResult::Deployed { version: 3 }
        );
        assert_eq!(f.versions("app"), [2, 3]);
        assert_eq!(f.reader.bundle("app", 1).expect("bundle"), None);
        assert_eq!(
            f.reader.bundle("app", 3).expect("bundle"),
            Some(b"v3".to_vec())
        );
        assert_eq!(f.reader.deploys("app").expect("deploys")[1].bundle_bytes, 2);

        assert_eq!(
            f.rollback("app", None),
            CommandResult::RolledBack { version: 2 }
        );
        assert_eq!(
            f.rollback("app", None),
            rejected(ApplyError::NoEarlierVersion { app: "app".into() })
        );
        assert_eq!(
            f.rollback("app", Some(1)),
            rejected(ApplyError::VersionNotFound {
                app: "app".into(),
                version: 1
            })
        );
        assert_eq!(
            f.rollback("app", Some(3)),
            CommandResult::RolledBack { version: 3 }
        );
        assert_eq!(
            f.reader
                .app("app")
                .expect("app")
                .expect("app")
                .active_version,
            Some(3)
        );

        // Versions are never reused, even after pruning.
        assert_eq!(
            f.deploy("app", "v4", 2),
            CommandResult::Deployed { version: 4 }
        );
        assert_eq!(f.versions("app"), [3, 4]);
        // versions_keep = 0 still keeps the active version.
        assert_eq!(
            f.deploy("app", "v5", 0),
            CommandResult::Deployed { version: 5 }
        );
        assert_eq!(f.versions("app"), [5]);
        let record = f.reader.app("app").expect("app").expect("app");
        assert_eq!((record.active_version, record.latest_version), (Some(5), 5));
        assert_eq!(
            f.rollback("app", None),
            rejected(ApplyError::NoEarlierVersion { app: "app".into() })
        );
        assert_eq!(
            f.rollback("ghost", None),
            rejected(ApplyError::AppNotFound {
                app: "ghost".into()
            })
        );
    }

    #[test]
    fn rollback_then_deploy_prunes_oldest_first() {
        let mut f = Fixture::new();
        for _ in 0..4 {
            f.deploy("app", "b", 10);
        }
        assert_eq!(
            f.rollback("app", Some(1)),
            CommandResult::RolledBack { version: 1 }
        );
        assert_eq!(
            f.deploy("app", "b", 3),
            CommandResult::Deployed { version: 5 }
        );
        assert_eq!(f.versions("app"), [3, 4, 5]);
    }

    #[test]
    fn app_create_and_delete() {
        let mut f = Fixture::new();
        f.create("app");
        assert_eq!(
            f.run(Command::AppCreate {
                app: "app".into(),
                now_ms: 2
            }),
            rejected(ApplyError::AppExists { app: "app".into() })
        );
        let record = f.reader.app("app").expect("app").expect("app");
        assert_eq!((record.active_version, record.latest_version), (None, 0));
        assert_eq!(
            f.run(Command::AppDelete { app: "app".into() }),
            CommandResult::Done
        );
        assert_eq!(f.reader.app("app").expect("app"), None);
        assert_eq!(
            f.run(Command::AppDelete { app: "app".into() }),
            rejected(ApplyError::AppNotFound { app: "app".into() })
        );
    }

    #[test]
    fn app_delete_removes_only_that_app_even_when_large() {
        let mut f = Fixture::new();
        f.create("a");
        f.create("a/b");
        f.create("ab");
        // Names chosen so a naive "app + '/' + key" encoding would collide.
        f.set("a", "b/c", "\"of a\"", None);
        f.set("a/b", "c", "\"of a/b\"", None);
        f.set("ab", "", "\"of ab\"", None);
        assert_eq!(f.get("a", "b/c", 0).as_deref(), Some("\"of a\""));
        assert_eq!(f.get("a/b", "c", 0).as_deref(), Some("\"of a/b\""));
        assert_eq!(f.get("a", "b", 0), None);
        let many = (BULK_DELETE_BATCH_KEYS * 2 + 10) as u64;
        let mut batch = WriteBatch::new();
        for i in 0..many {
            let stored = StoredValue {
                value: b"1".to_vec(),
                expires_at_ms: None,
            };
            batch.insert(
                Keyspace::Kv,
                keys::kv_key("a", &format!("k{i:05}")),
                codec::encode(&stored).expect("encode"),
            );
        }
        f.backend.apply_batch(batch).expect("batch");
        f.deploy("a", "bundle", 3);
        f.deploy("a/b", "bundle", 3);

        assert_eq!(
            f.run(Command::AppDelete { app: "a".into() }),
            CommandResult::Done
        );
        assert_eq!(
            f.reader
                .kv_list("a", "", None, 10, usize::MAX, 0)
                .expect("list")
                .items,
            vec![]
        );
        assert_eq!(f.reader.deploys("a").expect("deploys"), vec![]);
        assert_eq!(f.reader.bundle("a", 1).expect("bundle"), None);
        assert_eq!(f.get("a/b", "c", 0).as_deref(), Some("\"of a/b\""));
        assert_eq!(f.get("ab", "", 0).as_deref(), Some("\"of ab\""));
        assert_eq!(f.versions("a/b"), [1]);
        let names: Vec<_> = f
            .reader
            .apps()
            .expect("apps")
            .into_iter()
            .map(|app| app.name)
            .collect();
        assert_eq!(names, ["a/b", "ab"]);

        // A recreated app starts empty, and its versions start over.
        f.create("a");
        assert_eq!(f.get("a", "b/c", 0), None);
        assert_eq!(
            f.deploy("a", "bundle", 3),
            CommandResult::Deployed { version: 1 }
        );
    }

    #[test]
    fn kv_list_pages_in_byte_order_and_skips_expired() {
        let mut f = Fixture::new();
        f.create("app");
        f.create("other");
        for key in ["p/a", "p/b", "p/c", "p/d", "q/a", "p"] {
            f.set("app", key, "1", None);
        }
        f.set("app", "p/bb", "1", Some(5));
        f.set("other", "p/z", "1", None);
        let keys = |page: &KvPage| {
            page.items
                .iter()
                .map(|(key, _)| key.clone())
                .collect::<Vec<_>>()
        };

        let first = f
            .reader
            .kv_list("app", "p/", None, 2, usize::MAX, 10)
            .expect("list");
        assert_eq!(keys(&first), ["p/a", "p/b"]);
        assert_eq!(first.cursor.as_deref(), Some("p/b"));
        let second = f
            .reader
            .kv_list("app", "p/", first.cursor.as_deref(), 2, usize::MAX, 10)
            .expect("list");
        assert_eq!(keys(&second), ["p/c", "p/d"]);
        assert_eq!(second.cursor, None, "nothing with the prefix follows p/d");
        let after_last = f
            .reader
            .kv_list("app", "p/", Some("p/d"), 2, usize::MAX, 10)
            .expect("list");
        assert_eq!(after_last, KvPage::default());
        // Not expired yet: p/bb shows up.
        let all = f
            .reader
            .kv_list("app", "p/", None, 100, usize::MAX, 1)
            .expect("list");
        assert_eq!(keys(&all), ["p/a", "p/b", "p/bb", "p/c", "p/d"]);
        assert_eq!(all.cursor, None);
        let everything = f
            .reader
            .kv_list("app", "", None, 100, usize::MAX, 10)
            .expect("list");
        assert_eq!(keys(&everything), ["p", "p/a", "p/b", "p/c", "p/d", "q/a"]);
        assert_eq!(
            f.reader
                .kv_list("app", "p/", None, 0, usize::MAX, 10)
                .expect("list"),
            KvPage::default()
        );
        assert_eq!(
            keys(
                &f.reader
                    .kv_list("app", "p/", Some("a"), 1, usize::MAX, 10)
                    .expect("list")
            ),
            ["p/a"]
        );
    }

    #[test]
    fn kv_list_pages_are_bounded_by_bytes_and_always_progress() {
        let mut f = Fixture::new();
        f.create("app");
        for key in ["a", "b", "c"] {
            f.set("app", key, "\"123456789\"", None); // 11 bytes of JSON
        }
        f.set("app", "d", &format!("\"{}\"", "x".repeat(100)), None);
        f.set("app", "e", "1", None);
        let keys = |page: &KvPage| {
            page.items
                .iter()
                .map(|(key, _)| key.clone())
                .collect::<Vec<_>>()
        };
        let mut after: Option<String> = None;
        let mut pages = Vec::new();
        loop {
            let page = f
                .reader
                .kv_list("app", "", after.as_deref(), 100, 25, 10)
                .expect("list");
            let total: usize = page.items.iter().map(|(_, value)| value.len()).sum();
            assert!(
                page.items.len() == 1 || total <= 25,
                "page {:?} holds {total} bytes",
                keys(&page)
            );
            pages.push(keys(&page));
            match page.cursor {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        // Two small values fit in 25 bytes, the third does not; the 102-byte
        // value exceeds the bound alone and still comes back, on its own.
        assert_eq!(pages, vec![vec!["a", "b"], vec!["c"], vec!["d"], vec!["e"]]);
    }

    #[test]
    fn api_keys_create_and_revoke() {
        let mut f = Fixture::new();
        let create = |id: &str| Command::KeyCreate {
            id: id.into(),
            name: "ci".into(),
            scope: "deploy".into(),
            secret_hash: vec![1, 2, 3],
            now_ms: 42,
        };
        assert_eq!(f.run(create("k1")), CommandResult::Done);
        assert_eq!(
            f.run(create("k1")),
            rejected(ApplyError::KeyExists { id: "k1".into() })
        );
        assert_eq!(f.run(create("k2")), CommandResult::Done);
        let record = f.reader.key("k1").expect("key").expect("present");
        assert_eq!(
            (
                record.name.as_str(),
                record.scope.as_str(),
                record.created_ms
            ),
            ("ci", "deploy", 42)
        );
        assert_eq!(record.secret_hash, [1, 2, 3]);
        assert_eq!(f.reader.keys().expect("keys").len(), 2);
        assert_eq!(
            f.run(Command::KeyRevoke { id: "k1".into() }),
            CommandResult::Done
        );
        assert_eq!(f.reader.key("k1").expect("key"), None);
        assert_eq!(
            f.run(Command::KeyRevoke { id: "k1".into() }),
            rejected(ApplyError::KeyNotFound { id: "k1".into() })
        );
    }

    fn allocate(f: &mut Fixture) -> NodeId {
        match f.run(Command::AllocateNodeId { now_ms: 5 }) {
            CommandResult::NodeIdAllocated { id } => id,
            other => panic!("AllocateNodeId yields an id: {other:?}"),
        }
    }

    fn remove(id: NodeId) -> Command {
        Command::RemoveNode { id, now_ms: 6 }
    }

    #[test]
    fn node_ids_start_at_two_and_only_grow() {
        let mut f = Fixture::new();
        assert_eq!(f.reader.next_node_id().expect("next"), 2);
        assert_eq!(allocate(&mut f), 2);
        assert_eq!(allocate(&mut f), 3);
        assert_eq!(f.reader.next_node_id().expect("next"), 4);
        // Removing an allocated id never gives it back.
        assert_eq!(f.run(remove(3)), CommandResult::Done);
        assert_eq!(f.run(remove(2)), CommandResult::Done);
        assert_eq!(allocate(&mut f), 4);
        // An id removed before it was allocated is skipped, not handed out.
        assert_eq!(f.run(remove(5)), CommandResult::Done);
        assert_eq!(f.run(remove(6)), CommandResult::Done);
        assert_eq!(f.reader.next_node_id().expect("next"), 7);
        assert_eq!(allocate(&mut f), 7);
        assert_eq!(allocate(&mut f), 8);
        assert!(!f.reader.removed_nodes().expect("removed").contains(&8));
    }

    #[test]
    fn node_id_counter_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        // sled's flusher thread lets go of the file lock a moment after the
        // last handle is dropped: poll (bounded) until a reopen gets it.
        let open = || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let options = SledOptions {
                    cache_capacity_bytes: 1 << 20,
                };
                match SledBackend::open(&path, options) {
                    Ok(backend) => return Arc::new(backend),
                    Err(error)
                        if error.message.contains("could not acquire lock")
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(error) => panic!("open: {error:?}"),
                }
            }
        };
        let log_id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
        let allocate_at = |backend: &SledBackend, index| {
            apply(
                backend,
                &log_id(index),
                &Command::AllocateNodeId { now_ms: 0 },
            )
            .expect("apply")
        };
        let backend = open();
        assert_eq!(
            allocate_at(backend.as_ref(), 1),
            CommandResult::NodeIdAllocated { id: 2 }
        );
        apply(backend.as_ref(), &log_id(2), &remove(2)).expect("apply");
        backend.flush().expect("flush");
        drop(backend);
        let backend = open();
        assert_eq!(
            allocate_at(backend.as_ref(), 3),
            CommandResult::NodeIdAllocated { id: 3 }
        );
        let reader = StateReader::new(backend, tokio::sync::broadcast::channel(1).0);
        assert_eq!(reader.removed_nodes().expect("removed"), [2]);
    }

    #[test]
    fn registered_nodes_exclude_removed_ones() {
        let mut f = Fixture::new();
        let info = |port: u16| crate::types::NodeInfo {
            http: format!("127.0.0.1:{port}"),
            peer: format!("127.0.0.1:{}", port + 1),
        };
        for id in [3, 2] {
            let node = info(8000 + id as u16 * 10);
            assert_eq!(
                f.run(Command::RegisterNode { id, node }),
                CommandResult::Done
            );
        }
        let ids = |f: &Fixture| -> Vec<NodeId> {
            f.reader
                .registered_nodes()
                .expect("registered")
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        assert_eq!(ids(&f), [2, 3]);
        assert_eq!(
            f.reader.registered_nodes().expect("registered")[0].1,
            info(8020)
        );
        f.run(remove(3));
        assert_eq!(ids(&f), [2], "a removed node is no longer registered");
        // A late registration of a removed id is ignored.
        f.run(Command::RegisterNode {
            id: 3,
            node: info(9000),
        });
        assert_eq!(ids(&f), [2]);
    }

    #[test]
    fn removed_nodes_are_a_set_ordered_by_id() {
        let mut f = Fixture::new();
        assert_eq!(
            f.reader.removed_nodes().expect("removed"),
            Vec::<NodeId>::new()
        );
        assert!(!f.reader.is_removed(1).expect("is removed"));
        for id in [300, 1, 3, 300] {
            assert_eq!(f.run(remove(id)), CommandResult::Done);
        }
        assert_eq!(f.reader.removed_nodes().expect("removed"), [1, 3, 300]);
        assert!(f.reader.is_removed(1).expect("is removed"));
        assert!(f.reader.is_removed(300).expect("is removed"));
        assert!(!f.reader.is_removed(2).expect("is removed"));
        // Removing again keeps the first removal's record.
        let first = f
            .backend
            .get(Keyspace::Cluster, &keys::removed_node_key(300))
            .expect("get");
        f.run(Command::RemoveNode {
            id: 300,
            now_ms: 99,
        });
        assert_eq!(
            f.backend
                .get(Keyspace::Cluster, &keys::removed_node_key(300))
                .expect("get"),
            first
        );
    }

    #[test]
    fn join_secret_is_set_and_replaced() {
        let mut f = Fixture::new();
        assert_eq!(f.reader.join_secret().expect("secret"), None);
        let set = |hash: u8| Command::SetJoinSecret {
            secret: vec![hash; 32],
            now_ms: 1,
        };
        assert_eq!(f.run(set(1)), CommandResult::Done);
        assert_eq!(f.reader.join_secret().expect("secret"), Some(vec![1; 32]));
        // Rotation: the new hash replaces the old one.
        assert_eq!(f.run(set(2)), CommandResult::Done);
        assert_eq!(f.reader.join_secret().expect("secret"), Some(vec![2; 32]));
    }

    #[test]
    fn cluster_ca_round_trips() {
        let mut f = Fixture::new();
        assert_eq!(f.reader.cluster_ca().expect("ca"), None);
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            f.run(Command::SetClusterCa {
                cert_pem: cert.into(),
                key_pem: key.into(),
            }),
            CommandResult::Done
        );
        assert_eq!(
            f.reader.cluster_ca().expect("ca"),
            Some((cert.to_string(), key.to_string()))
        );
        f.run(Command::SetClusterCa {
            cert_pem: "cert 2".into(),
            key_pem: "key 2".into(),
        });
        assert_eq!(
            f.reader.cluster_ca().expect("ca"),
            Some(("cert 2".to_string(), "key 2".to_string()))
        );
    }

    #[test]
    fn cluster_commands_work_inside_a_batch() {
        let mut f = Fixture::new();
        let result = f.run(Command::Batch(vec![
            Command::AllocateNodeId { now_ms: 1 },
            remove(3),
            Command::AllocateNodeId { now_ms: 1 },
            Command::SetJoinSecret {
                secret: vec![9; 32],
                now_ms: 1,
            },
            Command::SetClusterCa {
                cert_pem: "cert".into(),
                key_pem: "key".into(),
            },
        ]));
        assert_eq!(
            result,
            CommandResult::Batch(vec![
                CommandResult::NodeIdAllocated { id: 2 },
                CommandResult::Done,
                // 3 was removed by the command before: skipped.
                CommandResult::NodeIdAllocated { id: 4 },
                CommandResult::Done,
                CommandResult::Done,
            ])
        );
        assert_eq!(
            f.run(Command::Batch(vec![
                Command::AllocateNodeId { now_ms: 2 },
                Command::AllocateNodeId { now_ms: 2 },
            ])),
            CommandResult::Batch(vec![
                CommandResult::NodeIdAllocated { id: 5 },
                CommandResult::NodeIdAllocated { id: 6 },
            ])
        );
        assert_eq!(f.reader.removed_nodes().expect("removed"), [3]);
        assert_eq!(f.reader.join_secret().expect("secret"), Some(vec![9; 32]));
        assert_eq!(
            f.reader.cluster_ca().expect("ca"),
            Some(("cert".to_string(), "key".to_string()))
        );
        assert_eq!(batch_keys(f.backend.as_ref()), 0);
        // None of them changes an app.
        let commands = vec![
            Command::AllocateNodeId { now_ms: 0 },
            Command::SetJoinSecret {
                secret: vec![],
                now_ms: 0,
            },
            remove(9),
            Command::SetClusterCa {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
        ];
        let results = vec![CommandResult::Done; commands.len()];
        assert!(changed_apps(&Command::Batch(commands), &CommandResult::Batch(results)).is_empty());
    }

    /// Two AllocateNodeId in one batch entry, interrupted anywhere and
    /// re-applied, still yield two different ids (the first is not rerun):
    /// applied at once (one backend batch, the only crash point), and on the
    /// per-command path (a `Rollback` in the entry forces it).
    #[test]
    fn interrupted_batch_never_allocates_an_id_twice() {
        let at_once = Command::Batch(vec![
            Command::AllocateNodeId { now_ms: 1 },
            Command::AllocateNodeId { now_ms: 1 },
        ]);
        let expected = CommandResult::Batch(vec![
            CommandResult::NodeIdAllocated { id: 2 },
            CommandResult::NodeIdAllocated { id: 3 },
        ]);
        check_interrupted_allocations(&at_once, &expected, 1);
        let per_command = Command::Batch(vec![
            Command::AllocateNodeId { now_ms: 1 },
            Command::Rollback {
                app: "ghost".into(),
                to_version: None,
                now_ms: 1,
            },
            Command::AllocateNodeId { now_ms: 1 },
        ]);
        let expected = CommandResult::Batch(vec![
            CommandResult::NodeIdAllocated { id: 2 },
            rejected(ApplyError::AppNotFound {
                app: "ghost".into(),
            }),
            CommandResult::NodeIdAllocated { id: 3 },
        ]);
        check_interrupted_allocations(&per_command, &expected, 4);
    }

    fn check_interrupted_allocations(
        entry: &Command,
        expected: &CommandResult,
        crash_points: usize,
    ) {
        let entry = entry.clone();
        let expected = expected.clone();
        for budget in 0..crash_points {
            let mut f = Fixture::new();
            let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
            let crashing = CrashAfter {
                inner: f.backend.clone(),
                budget: budget.into(),
            };
            assert!(
                apply(&crashing, &log_id, &entry).is_err(),
                "budget {budget}"
            );
            f.index = 0;
            assert_eq!(f.run(entry.clone()), expected, "budget {budget}");
            assert_eq!(f.reader.next_node_id().expect("next"), 4);
        }
        // With one more backend batch allowed, nothing crashes: those were
        // all the crash points.
        let f = Fixture::new();
        let crashing = CrashAfter {
            inner: f.backend.clone(),
            budget: crash_points.into(),
        };
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
        assert_eq!(apply(&crashing, &log_id, &entry).expect("apply"), expected);
    }

    fn kv_cmd(app: &str, op: KvOp) -> Command {
        Command::Kv {
            app: app.into(),
            op,
            now_ms: 0,
        }
    }

    /// Every key of the state and of `Meta`, for comparing two backends.
    fn dump(backend: &dyn Backend) -> Vec<(Keyspace, KeyValue)> {
        let mut out = Vec::new();
        for keyspace in Keyspace::STATE_DATA.into_iter().chain([Keyspace::Meta]) {
            for item in backend.scan(keyspace, b"", b"") {
                out.push((keyspace, item.expect("scan")));
            }
        }
        out
    }

    fn batch_keys(backend: &dyn Backend) -> usize {
        backend
            .scan(Keyspace::Meta, keys::META_BATCH_PREFIX, b"")
            .count()
    }

    #[test]
    fn batch_applies_in_order_with_one_result_each() {
        let mut f = Fixture::new();
        f.create("app");
        f.set("app", "c", "1", None);
        let result = f.run(Command::Batch(vec![
            kv_cmd("app", incr("n", 1)),
            kv_cmd("app", incr("n", 1)),
            kv_cmd("app", set("s", "\"x\"", None)),
            kv_cmd("app", cas("s", Some("\"x\""), Some("\"y\""))),
            Command::AppCreate {
                app: "new".into(),
                now_ms: 3,
            },
            kv_cmd("new", set("k", "true", None)),
            Command::Deploy {
                app: "new".into(),
                bundle: b"b1".to_vec(),
                now_ms: 4,
                versions_keep: 1,
            },
            Command::Deploy {
                app: "new".into(),
                bundle: b"b2".to_vec(),
                now_ms: 4,
                versions_keep: 1,
            },
            kv_cmd("app", KvOp::Delete { key: "c".into() }),
        ]));
        assert_eq!(
            result,
            CommandResult::Batch(vec![
                CommandResult::Kv(KvOpResult::Incr { value: 1 }),
                CommandResult::Kv(KvOpResult::Incr { value: 2 }),
                CommandResult::Kv(KvOpResult::Set),
                CommandResult::Kv(KvOpResult::Cas { swapped: true }),
                CommandResult::Done,
                CommandResult::Kv(KvOpResult::Set),
                CommandResult::Deployed { version: 1 },
                CommandResult::Deployed { version: 2 },
                CommandResult::Kv(KvOpResult::Deleted { existed: true }),
            ])
        );
        assert_eq!(f.get("app", "n", 0).as_deref(), Some("2"));
        assert_eq!(f.get("app", "s", 0).as_deref(), Some("\"y\""));
        assert_eq!(f.get("app", "c", 0), None);
        assert_eq!(f.get("new", "k", 0).as_deref(), Some("true"));
        // Later deploys in a batch see earlier ones (versions_keep = 1).
        assert_eq!(f.versions("new"), [2]);
        // One entry, one applied index; no progress left behind.
        assert_eq!(f.reader.last_applied_index().expect("index"), Some(3));
        assert_eq!(batch_keys(f.backend.as_ref()), 0);
        // An empty batch is fine and still advances the index.
        assert_eq!(f.run(Command::Batch(vec![])), CommandResult::Batch(vec![]));
        assert_eq!(f.reader.last_applied_index().expect("index"), Some(4));
    }

    #[test]
    fn rejected_inner_commands_leave_no_trace_and_do_not_stop_others() {
        let mut f = Fixture::new();
        f.create("app");
        f.set("app", "s", "\"text\"", None);
        let result = f.run(Command::Batch(vec![
            kv_cmd("app", set("a", "1", None)),
            // Rejected: a KvAtomic whose first op would have written.
            Command::KvAtomic {
                app: "app".into(),
                ops: vec![set("b", "1", None), incr("s", 1)],
                now_ms: 0,
            },
            kv_cmd("ghost", set("k", "1", None)),
            Command::Batch(vec![kv_cmd("app", set("nested", "1", None))]),
            Command::AppCreate {
                app: "app".into(),
                now_ms: 9,
            },
            kv_cmd("app", incr("a", 1)),
        ]));
        assert_eq!(
            result,
            CommandResult::Batch(vec![
                CommandResult::Kv(KvOpResult::Set),
                rejected(ApplyError::NotANumber { key: "s".into() }),
                rejected(ApplyError::AppNotFound {
                    app: "ghost".into()
                }),
                rejected(ApplyError::NestedBatch),
                rejected(ApplyError::AppExists { app: "app".into() }),
                CommandResult::Kv(KvOpResult::Incr { value: 2 }),
            ])
        );
        assert_eq!(f.get("app", "a", 0).as_deref(), Some("2"));
        assert_eq!(f.get("app", "b", 0), None);
        assert_eq!(f.get("app", "nested", 0), None);
        assert_eq!(f.get("app", "s", 0).as_deref(), Some("\"text\""));
        assert_eq!(f.reader.app("ghost").expect("app"), None);
        assert_eq!(
            f.reader.app("app").expect("app").expect("app").created_ms,
            1
        );
        assert_eq!(
            ApplyError::NestedBatch.to_string(),
            "a batch may not contain a batch"
        );
    }

    #[test]
    fn changed_apps_lists_accepted_inner_app_commands() {
        let batch = Command::Batch(vec![
            Command::AppCreate {
                app: "a".into(),
                now_ms: 0,
            },
            kv_cmd("a", incr("n", 1)),
            Command::AppDelete { app: "b".into() },
            Command::Rollback {
                app: "c".into(),
                to_version: None,
                now_ms: 0,
            },
        ]);
        let result = CommandResult::Batch(vec![
            CommandResult::Done,
            CommandResult::Kv(KvOpResult::Incr { value: 1 }),
            rejected(ApplyError::AppNotFound { app: "b".into() }),
            CommandResult::RolledBack { version: 1 },
        ]);
        assert_eq!(changed_apps(&batch, &result), ["a", "c"]);
        let create = Command::AppCreate {
            app: "x".into(),
            now_ms: 0,
        };
        assert_eq!(changed_apps(&create, &CommandResult::Done), ["x"]);
        assert!(changed_apps(&batch, &CommandResult::Done).is_empty());
    }

    /// Fails every `apply_batch` after the first `budget`: what is on disk
    /// after a crash is a prefix of the batches written, exactly as here.
    struct CrashAfter {
        inner: Arc<SledBackend>,
        budget: std::sync::atomic::AtomicUsize,
    }

    impl Backend for CrashAfter {
        fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
            self.inner.get(keyspace, key)
        }
        fn insert(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
            self.inner.insert(keyspace, key, value)
        }
        fn remove(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), BackendError> {
            self.inner.remove(keyspace, key)
        }
        fn scan<'a>(
            &'a self,
            keyspace: Keyspace,
            prefix: &[u8],
            start: &[u8],
        ) -> Box<dyn Iterator<Item = ScanItem> + 'a> {
            self.inner.scan(keyspace, prefix, start)
        }
        fn last(
            &self,
            keyspace: Keyspace,
            prefix: &[u8],
        ) -> Result<Option<KeyValue>, BackendError> {
            self.inner.last(keyspace, prefix)
        }
        fn apply_batch(&self, batch: WriteBatch) -> Result<(), BackendError> {
            use std::sync::atomic::Ordering;
            let left = self.budget.load(Ordering::SeqCst);
            if left == 0 {
                return Err(BackendError {
                    operation: "apply batch",
                    keyspace: None,
                    message: "simulated crash".into(),
                });
            }
            self.budget.store(left - 1, Ordering::SeqCst);
            self.inner.apply_batch(batch)
        }
        fn flush(&self) -> Result<(), BackendError> {
            self.inner.flush()
        }
        fn size_on_disk_bytes(&self) -> Result<u64, BackendError> {
            self.inner.size_on_disk_bytes()
        }
    }

    /// A batch entry interrupted at every possible point and re-applied (as
    /// openraft does after a restart: last-applied did not move) ends in
    /// exactly the state and results of an uninterrupted apply: no inner
    /// command runs twice, none is lost.
    #[test]
    fn batch_interrupted_anywhere_resumes_to_the_same_state_and_results() {
        let prepare = || {
            let mut f = Fixture::new();
            f.create("app");
            f.create("big");
            f.set("big", "k", "1", None);
            let mut batch = WriteBatch::new();
            for i in 0..(BULK_DELETE_BATCH_KEYS + 5) {
                let stored = StoredValue {
                    value: b"1".to_vec(),
                    expires_at_ms: None,
                };
                batch.insert(
                    Keyspace::Kv,
                    keys::kv_key("big", &format!("k{i:05}")),
                    codec::encode(&stored).expect("encode"),
                );
            }
            f.backend.apply_batch(batch).expect("batch");
            f
        };
        let entry = Command::Batch(vec![
            kv_cmd("app", incr("n", 1)),
            kv_cmd("ghost", set("k", "1", None)),
            kv_cmd("app", incr("n", 1)),
            // Deletes kv data in several batches of its own.
            Command::AppDelete { app: "big".into() },
            Command::Deploy {
                app: "app".into(),
                bundle: b"code".to_vec(),
                now_ms: 5,
                versions_keep: 2,
            },
            kv_cmd("app", incr("n", 10)),
        ]);

        let mut reference = prepare();
        let expected = reference.run(entry.clone());
        let expected_state = dump(reference.backend.as_ref());
        assert_eq!(
            expected,
            CommandResult::Batch(vec![
                CommandResult::Kv(KvOpResult::Incr { value: 1 }),
                rejected(ApplyError::AppNotFound {
                    app: "ghost".into()
                }),
                CommandResult::Kv(KvOpResult::Incr { value: 2 }),
                CommandResult::Done,
                CommandResult::Deployed { version: 1 },
                CommandResult::Kv(KvOpResult::Incr { value: 12 }),
            ])
        );

        let mut crash_points = 0;
        for budget in 0.. {
            let f = prepare();
            let log_id = LogId::new(CommittedLeaderId::new(1, 1), f.index + 1);
            let crashing = CrashAfter {
                inner: f.backend.clone(),
                budget: budget.into(),
            };
            match apply(&crashing, &log_id, &entry) {
                Ok(result) => {
                    // Enough budget to finish: the uninterrupted case.
                    assert_eq!(result, expected);
                    break;
                }
                Err(_) => crash_points += 1,
            }
            assert_eq!(
                f.reader.last_applied_index().expect("index"),
                Some(f.index),
                "budget {budget}: a half-applied entry is not applied"
            );
            // Restart: the same entry is applied again.
            let resumed = apply(f.backend.as_ref(), &log_id, &entry).expect("re-apply");
            assert_eq!(resumed, expected, "budget {budget}");
            assert_eq!(dump(f.backend.as_ref()), expected_state, "budget {budget}");
            assert_eq!(batch_keys(f.backend.as_ref()), 0);
        }
        // One batch per inner command, AppDelete's bulk deletions and the
        // final one: every one of them was a crash point.
        assert!(crash_points >= 8, "{crash_points} crash points");
    }

    #[test]
    fn stale_batch_progress_is_ignored_and_cleared() {
        let mut f = Fixture::new();
        f.create("app");
        let stale = BatchProgress {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 99),
            done: 1,
        };
        f.backend
            .insert(
                Keyspace::Meta,
                keys::META_BATCH_PROGRESS,
                &codec::encode(&stale).expect("encode"),
            )
            .expect("insert");
        f.backend
            .insert(Keyspace::Meta, &keys::batch_result_key(5), b"junk")
            .expect("insert");
        let result = f.run(Command::Batch(vec![kv_cmd("app", incr("n", 1))]));
        assert_eq!(
            result,
            CommandResult::Batch(vec![CommandResult::Kv(KvOpResult::Incr { value: 1 })])
        );
        assert_eq!(batch_keys(f.backend.as_ref()), 0);
    }

    #[test]
    fn changed_app_only_for_accepted_app_commands() {
        let deploy = Command::Deploy {
            app: "a".into(),
            bundle: vec![],
            now_ms: 0,
            versions_keep: 1,
        };
        assert_eq!(
            changed_app(&deploy, &CommandResult::Deployed { version: 1 }),
            Some("a")
        );
        let rejection = CommandResult::Rejected(ApplyError::AppNotFound { app: "a".into() });
        assert_eq!(changed_app(&deploy, &rejection), None);
        let kv = Command::Kv {
            app: "a".into(),
            op: KvOp::Delete { key: "k".into() },
            now_ms: 0,
        };
        assert_eq!(changed_app(&kv, &CommandResult::Done), None);
    }
}

#[cfg(test)]
#[path = "apply_docs_tests.rs"]
mod docs_tests;

#[cfg(test)]
#[path = "apply_trigger_tests.rs"]
mod trigger_tests;

#[cfg(test)]
#[path = "apply_secret_tests.rs"]
mod secret_tests;

#[cfg(test)]
#[path = "apply_lib_tests.rs"]
mod lib_tests;

#[cfg(test)]
#[path = "apply_key_tests.rs"]
mod key_tests;
