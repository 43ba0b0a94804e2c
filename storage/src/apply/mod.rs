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
//!
//! # Layout
//!
//! One file per area; each has its tests beside it (`<area>/tests.rs`).
//!
//! - `mod.rs` (this file): [`apply`], the dispatch `match` from a command to
//!   its area (one arm per operation: legacy log shapes were upcast when
//!   the entry was decoded, see `crate::command`), `Command::Batch` entries
//!   (at once, or resumable command by command), and which commands changed
//!   an app ([`changed_apps`]).
//! - `kv`: kv ops, alone or all-or-nothing, and the kv triggers they fire.
//! - `apps`: apps, deploys, versions, rollbacks and shared libraries.
//! - `keys`: API keys, and binding scoped keys to the app they name.
//! - `cluster`: cluster records: node ids, registrations and removals, the
//!   join secret, the cluster CA.
//! - `triggers`: cron fires, claims, run outcomes, retries, dead letters,
//!   and runs of triggers a deploy removed.
//! - `secrets`: sealed secret values and their re-keying.
//! - `docs`: document writes and the indexes kept in step with them.
//! - `email`: outbound mail queued in the outbox (reserved trigger
//!   `@email`), bounced mail buried at once, dev-mode captured mail.
//! - `files`: file metadata records, block reference counts, per-app
//!   usage and quotas, and the `files` triggers they fire.
//! - `inbound_mail`: mail the SMTP listener accepted, queued to the
//!   app's `email` triggers.
//! - `topics`: durable pub/sub messages (stored, trimmed to the topic's
//!   retention) and the apps' sealed realtime signing keys.
//! - `users`: end users, their sessions and single-use tokens.
//! - `operators`: operators' admin flags and app memberships.
//! - `outbox`: queueing, removing and burying runs, shared by every write
//!   that fires a trigger (below `kv`, `docs` and `triggers`).
//! - `txn`: `Txn`, a command's pending writes, read back and committed as
//!   one batch with the last-applied id (below every area).
//! - `tests.rs`: the shared `Fixture`, the `CrashAfter` fault injector, and
//!   the tests of this file.
//!
//! Imports point one way: this file uses the areas, areas use `outbox` and
//! `txn` (and `apps` uses `triggers`, `docs` and `keys`; `triggers` uses
//! `kv`, `docs` and `topics`), and nothing uses this file.

use std::collections::BTreeMap;

use openraft::LogId;

use crate::backend::{Backend, Keyspace, WriteBatch, delete_prefix};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::command::{ApplyError, Command, CommandResult, VersionDeploy};
use crate::error::StorageError;
use crate::keys::{META_BATCH_PREFIX, META_BATCH_PROGRESS, batch_result_key};
use crate::node::NodeId;

mod apps;
mod cluster;
mod docs;
mod email;
mod files;
mod inbound_mail;
mod keys;
mod kv;
mod operators;
mod outbox;
mod secrets;
mod topics;
mod triggers;
mod txn;
mod users;

#[cfg(test)]
mod tests;

pub(crate) use cluster::next_node_id;
pub(crate) use topics::decode_record as decode_topic_record;
pub use topics::published_events;
pub(crate) use txn::put_last_applied;
use txn::{PendingWrites, Txn, batch_of};
pub use users::revoked_sessions;

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
        Command::Kv { app, op, now_ms } => kv::kv(txn, app, op, *now_ms)?,
        Command::KvAtomic { app, ops, now_ms } => kv::kv_atomic(txn, app, ops, *now_ms)?,
        Command::AppCreate { app, now_ms } => apps::app_create(txn, app, *now_ms)?,
        Command::AppDelete { app, revoke_keys } => apps::app_delete(txn, app, *revoke_keys)?,
        Command::Deploy(deploy) => apps::deploy(txn, deploy)?,
        Command::Rollback {
            app,
            to_version,
            now_ms,
        } => apps::rollback(txn, app, *to_version, *now_ms)?,
        Command::KeyCreate {
            id,
            name,
            scope,
            secret_hash,
            now_ms,
            scoped_app_must_exist,
        } => {
            let must_exist = *scoped_app_must_exist;
            keys::key_create(txn, id, name, scope, secret_hash, *now_ms, must_exist)?
        }
        Command::KeyRevoke { id } => keys::key_revoke(txn, id)?,
        Command::AllocateNodeId { now_ms: _ } => cluster::allocate_node_id(txn)?,
        Command::SetJoinSecret { secret, now_ms } => {
            cluster::set_join_secret(txn, secret, *now_ms)?
        }
        Command::RemoveNode { id, now_ms } => cluster::remove_node(txn, *id, *now_ms)?,
        Command::SetClusterCa { cert_pem, key_pem } => {
            cluster::set_cluster_ca(txn, cert_pem, key_pem)?
        }
        Command::RegisterNode { id, node } => cluster::register_node(txn, *id, node)?,
        Command::FireCron {
            app,
            trigger,
            slot_ms,
            now_ms,
        } => triggers::fire_cron(txn, app, trigger, *slot_ms, *now_ms)?,
        Command::ClaimRuns {
            app,
            ids,
            term,
            node,
            now_ms,
            reclaim_after_ms,
        } => triggers::claim_runs(txn, app, ids, *term, *node, *now_ms, *reclaim_after_ms)?,
        Command::CompleteRun {
            app,
            id,
            term,
            claim_ms,
            ops,
            docs,
            publishes,
            now_ms,
        } => {
            let writes = (ops.as_slice(), docs.as_slice(), publishes.as_slice());
            triggers::complete_run(txn, app, *id, (*term, *claim_ms), writes, *now_ms)?
        }
        Command::FailRun {
            app,
            id,
            term,
            claim_ms,
            error,
            now_ms,
        } => triggers::fail_run(txn, app, *id, (*term, *claim_ms), error, *now_ms)?,
        Command::RetryDeadLetter { app, id, now_ms } => {
            triggers::retry_dead_letter(txn, app, *id, *now_ms)?
        }
        Command::DeleteDeadLetter { app, id } => triggers::delete_dead_letter(txn, app, *id)?,
        Command::Docs { app, ops, now_ms } => docs::docs_write(txn, app, ops, *now_ms)?,
        Command::SecretSet {
            app,
            name,
            sealed,
            now_ms,
        } => secrets::secret_set(txn, app, name, sealed, *now_ms)?,
        Command::SecretDelete { app, name } => secrets::secret_delete(txn, app, name)?,
        Command::SecretsRekey { secrets } => secrets::secrets_rekey(txn, secrets)?,
        Command::PublishLib {
            name,
            files,
            now_ms,
            versions_keep,
        } => apps::publish_lib(txn, name, files, *now_ms, *versions_keep)?,
        Command::Publish {
            app,
            topic,
            message,
            retain,
            now_ms,
        } => topics::publish(txn, app, topic, message, *retain, *now_ms)?,
        Command::RealtimeKeySet {
            app,
            sealed,
            only_if_absent,
        } => topics::realtime_key_set(txn, app, sealed, *only_if_absent)?,
        Command::RealtimeKeyRekey { app, old, new } => {
            topics::realtime_key_rekey(txn, app, old, new)?
        }
        Command::FilePut {
            app,
            path,
            size,
            content_type,
            sha256,
            blocks,
            inline,
            limits,
            depth,
            now_ms,
        } => files::file_put(
            txn,
            files::FilePut {
                app,
                path,
                size: *size,
                content_type,
                sha256,
                blocks,
                inline: inline.as_deref(),
                limits,
                depth: *depth,
                now_ms: *now_ms,
            },
        )?,
        Command::FileDelete {
            app,
            path,
            depth,
            now_ms,
        } => files::file_delete(txn, app, path, *depth, *now_ms)?,
        Command::Email(command) => email::email(txn, command)?,
        Command::InboundMail(mail) => inbound_mail::inbound_mail(txn, mail)?,
        Command::Users(command) => users::users(txn, command)?,
        Command::Operators(command) => operators::operators(txn, command)?,
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
        | Command::SecretSet { .. }
        | Command::SecretDelete { .. }
        | Command::SecretsRekey { .. }
        | Command::PublishLib { .. }
        | Command::Publish { .. }
        | Command::RealtimeKeySet { .. }
        | Command::RealtimeKeyRekey { .. }
        | Command::FilePut { .. }
        | Command::FileDelete { .. }
        | Command::Email(_) => true,
        Command::InboundMail(_) => true,
        Command::Users(_) => true,
        Command::Operators(_) => true,
        // Scans (deploy versions, an app's kv data, its outbox) and bulk
        // deletes go to the backend; a nested batch is rejected by `run_in`
        // either way.
        Command::AppDelete { .. }
        | Command::Deploy(_)
        | Command::Rollback { .. }
        | Command::Batch(_) => false,
    }
}

/// The app whose served code or existence `command` changed, if it did.
/// The state machine broadcasts an `AppliedEvent::AppChanged` for it.
pub fn changed_app<'a>(command: &'a Command, result: &CommandResult) -> Option<&'a str> {
    if matches!(result, CommandResult::Rejected(_)) {
        return None;
    }
    match command {
        Command::AppCreate { app, .. }
        | Command::AppDelete { app, .. }
        | Command::Deploy(VersionDeploy { app, .. })
        | Command::Rollback { app, .. } => Some(app),
        Command::FireCron { .. }
        | Command::ClaimRuns { .. }
        | Command::CompleteRun { .. }
        | Command::FailRun { .. }
        | Command::RetryDeadLetter { .. }
        | Command::DeleteDeadLetter { .. }
        | Command::Docs { .. }
        | Command::PublishLib { .. }
        | Command::Kv { .. }
        | Command::KvAtomic { .. }
        | Command::KeyCreate { .. }
        | Command::KeyRevoke { .. }
        | Command::AllocateNodeId { .. }
        | Command::SetJoinSecret { .. }
        | Command::RemoveNode { .. }
        | Command::SetClusterCa { .. }
        | Command::RegisterNode { .. }
        | Command::SecretSet { .. }
        | Command::SecretDelete { .. }
        | Command::SecretsRekey { .. }
        | Command::Publish { .. }
        | Command::RealtimeKeySet { .. }
        | Command::RealtimeKeyRekey { .. }
        | Command::FilePut { .. }
        | Command::FileDelete { .. }
        | Command::Email(_)
        | Command::InboundMail(_)
        | Command::Users(_)
        | Command::Operators(_)
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
/// applied and their results stored under [`batch_result_key`].
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
            META_BATCH_PROGRESS.to_vec(),
            codec::encode(&progress).map_err(StorageError::codec("batch progress"))?,
        );
        batch.insert(
            Keyspace::Meta,
            batch_result_key(index as u64),
            codec::encode(&result).map_err(StorageError::codec("batch result"))?,
        );
        backend.apply_batch(batch)?;
        results.push(result);
    }
    let mut batch = WriteBatch::new();
    for index in 0..commands.len() {
        batch.remove(Keyspace::Meta, batch_result_key(index as u64));
    }
    batch.remove(Keyspace::Meta, META_BATCH_PROGRESS.to_vec());
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
    let Some(bytes) = backend.get(Keyspace::Meta, META_BATCH_PROGRESS)? else {
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
            .get(Keyspace::Meta, &batch_result_key(index))?
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
    delete_prefix(backend, Keyspace::Meta, META_BATCH_PREFIX)?;
    Ok(())
}
