//! [`Txn`]: one command's writes, read back before they are committed, and
//! `Command::Batch` entries built from several commands' writes.
//!
//! A `Txn` collects a command's writes in memory (a `BTreeMap`, so the batch
//! is the same on every replica) and reads through them, so later ops of one
//! command see earlier ones. A batch entry whose commands all read through
//! their `Txn` is ONE backend batch; one holding a command that scans the
//! backend is applied command by command behind a progress marker (see
//! [`apply_batch_entry`]).

use std::collections::BTreeMap;

use openraft::LogId;

use super::{put_last_applied, reads_only_through_txn, run_in, run_one};
use crate::backend::{Backend, Keyspace, WriteBatch, delete_prefix};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::command::{Command, CommandResult};
use crate::error::StorageError;
use crate::keys;
use crate::records::AppRecord;
use crate::types::NodeId;

/// Reads through pending writes, so later ops of one command see earlier ones.
pub(super) struct Txn<'a, B: ?Sized> {
    pub(super) backend: &'a B,
    /// Writes of earlier commands of the same entry, not in the backend yet.
    below: Option<&'a PendingWrites>,
    /// `None` = removed. Ordered so the batch is the same on every replica.
    pub(super) writes: PendingWrites,
}

/// Writes not yet committed: `None` = removed.
pub(super) type PendingWrites = BTreeMap<(Keyspace, Vec<u8>), Option<Vec<u8>>>;

/// The backend batch of `writes` (in key order, the same on every replica).
pub(super) fn batch_of(writes: PendingWrites) -> WriteBatch {
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
    pub(super) fn new(backend: &'a B) -> Self {
        Txn {
            backend,
            below: None,
            writes: BTreeMap::new(),
        }
    }

    /// A transaction that reads through `below` before the backend.
    pub(super) fn over(backend: &'a B, below: &'a PendingWrites) -> Self {
        Txn {
            backend,
            below: Some(below),
            writes: BTreeMap::new(),
        }
    }

    pub(super) fn get(
        &self,
        keyspace: Keyspace,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let key = (keyspace, key.to_vec());
        if let Some(pending) = self.writes.get(&key) {
            return Ok(pending.clone());
        }
        if let Some(pending) = self.below.and_then(|below| below.get(&key)) {
            return Ok(pending.clone());
        }
        Ok(self.backend.get(keyspace, &key.1)?)
    }

    pub(super) fn get_decoded<T: serde::de::DeserializeOwned>(
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

    pub(super) fn put(&mut self, keyspace: Keyspace, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert((keyspace, key), Some(value));
    }

    pub(super) fn put_encoded<T: serde::Serialize>(
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

    pub(super) fn delete(&mut self, keyspace: Keyspace, key: Vec<u8>) {
        self.writes.insert((keyspace, key), None);
    }

    pub(super) fn into_batch(self) -> WriteBatch {
        batch_of(self.writes)
    }

    pub(super) fn app(&self, app: &str) -> Result<Option<AppRecord>, StorageError> {
        self.get_decoded(Keyspace::Apps, app.as_bytes(), "app record")
    }

    pub(super) fn put_app(&mut self, record: &AppRecord) -> Result<(), StorageError> {
        self.put_encoded(
            Keyspace::Apps,
            record.name.as_bytes().to_vec(),
            record,
            "app record",
        )
    }

    pub(super) fn u64_at(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        what: &'static str,
    ) -> Result<u64, StorageError> {
        Ok(self.get_decoded::<u64>(keyspace, key, what)?.unwrap_or(0))
    }
}

/// Applies a batch entry whose commands all read through their `Txn` as ONE
/// atomic backend batch (with the last-applied id): each inner command runs
/// over the writes of the ones before it. One batch per entry instead of one
/// per inner command is most of the replicated write throughput (sled waits
/// for two io-buffer writes per batch, on every replica).
pub(super) fn apply_batch_entry_at_once<B: Backend + ?Sized>(
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
pub(super) fn apply_batch_entry<B: Backend + ?Sized>(
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
pub(super) fn resume_batch<B: Backend + ?Sized>(
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

#[cfg(test)]
mod tests;
