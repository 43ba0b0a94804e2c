//! Files: a `FilePut` stores a file's metadata record (its content is in
//! blocks outside the log), keeps the per-block reference counts over
//! every app and the app's usage, and fires the app's `files` triggers; a
//! `FileDelete` undoes it. `AppDelete` drops an app's files through
//! [`delete_app_files`].
//!
//! Every read goes through the [`Txn`], so file commands batch with the
//! others of an entry. The rows (keys in `crate::keys`):
//!
//! ```text
//!  Files      app + path        → FileRecord
//!  FileIndex  "l" + app + path  → block hashes, concatenated (non-inline files)
//!             "r" + hash        → u64 references over every app (row gone at 0)
//!             "u" + app         → FilesUsage
//! ```

use super::outbox::enqueue_run;
use super::txn::{Outcome, Txn};
use crate::backend::{BULK_DELETE_BATCH_KEYS, Backend, Keyspace};
use crate::command::{ApplyError, CommandResult};
use crate::error::StorageError;
use crate::files::{
    BlockHash, CONTENT_TYPE_BYTES_MAX, FileLimits, FileRecord, FilesUsage, INLINE_BYTES_MAX,
    block_count, validate_path,
};
use crate::keys;
use crate::records::AppRecord;
use crate::triggers::TriggerEvent;

/// The fields of a [`crate::command::Command::FilePut`], borrowed.
pub(super) struct FilePut<'a> {
    pub app: &'a str,
    pub path: &'a str,
    pub size: u64,
    pub content_type: &'a str,
    pub sha256: &'a [u8; 32],
    pub blocks: &'a [BlockHash],
    pub inline: Option<&'a [u8]>,
    pub limits: &'a FileLimits,
    pub depth: u32,
    pub now_ms: u64,
}

pub(super) fn file_put<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    put: FilePut<'_>,
) -> Result<Outcome, StorageError> {
    let app = put.app;
    let Some(app_record) = txn.app(app)? else {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    };
    if let Err(error) = validate_path(put.path) {
        return Ok(Err(ApplyError::InvalidPath {
            path: put.path.into(),
            message: error.to_string(),
        }));
    }
    if let Some(message) = inconsistency(&put) {
        return Ok(Err(ApplyError::InvalidFile {
            path: put.path.into(),
            message,
        }));
    }
    if put.size > put.limits.file_bytes_max {
        return Ok(Err(ApplyError::FileTooLarge {
            size: put.size,
            max: put.limits.file_bytes_max,
        }));
    }
    let record_key = keys::file_key(app, put.path);
    let old: Option<FileRecord> = txn.get_decoded(Keyspace::Files, &record_key, "file record")?;
    let usage = usage(txn, app)?;
    let after = FilesUsage {
        bytes: usage
            .bytes
            .saturating_sub(old.as_ref().map_or(0, |old| old.size))
            .saturating_add(put.size),
        files: usage.files.saturating_add(u64::from(old.is_none())),
    };
    // A put that does not grow the usage is always allowed, so an app over
    // a quota that was lowered can still shrink or replace its files.
    if after.bytes > put.limits.app_bytes_max && after.bytes > usage.bytes {
        return Ok(Err(quota(app, "bytes", put.limits.app_bytes_max)));
    }
    if after.files > put.limits.app_files_max && after.files > usage.files {
        return Ok(Err(quota(app, "files", put.limits.app_files_max)));
    }
    let record = FileRecord {
        size: put.size,
        content_type: put.content_type.into(),
        sha256: *put.sha256,
        created_ms: old.as_ref().map_or(put.now_ms, |old| old.created_ms),
        updated_ms: put.now_ms,
        inline: put.inline.map(<[u8]>::to_vec),
        blocks: block_count(put.size),
    };
    txn.put_encoded(Keyspace::Files, record_key, &record, "file record")?;
    // Reference the new blocks before releasing the old ones, so a block
    // both lists hold never passes through zero.
    for hash in put.blocks {
        add_ref(txn, hash, 1)?;
    }
    let blocks_key = keys::file_blocks_key(app, put.path);
    for hash in block_list(txn, &blocks_key)? {
        add_ref(txn, &hash, -1)?;
    }
    if put.blocks.is_empty() {
        txn.delete(Keyspace::FileIndex, blocks_key);
    } else {
        txn.put(Keyspace::FileIndex, blocks_key, put.blocks.concat());
    }
    set_usage(txn, app, after)?;
    let event = (put.path, "put", &record);
    if let Err(rejection) = fire(txn, &app_record, event, put.depth, put.now_ms)? {
        return Ok(Err(rejection));
    }
    Ok(Ok(CommandResult::FileWritten {
        created: old.is_none(),
    }))
}

pub(super) fn file_delete<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    path: &str,
    depth: u32,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let Some(app_record) = txn.app(app)? else {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    };
    let record_key = keys::file_key(app, path);
    let Some(old) = txn.get_decoded::<FileRecord>(Keyspace::Files, &record_key, "file record")?
    else {
        return Ok(Ok(CommandResult::FileDeleted { existed: false }));
    };
    remove_file(txn, app, path, &old)?;
    let usage = usage(txn, app)?;
    set_usage(
        txn,
        app,
        FilesUsage {
            bytes: usage.bytes.saturating_sub(old.size),
            files: usage.files.saturating_sub(1),
        },
    )?;
    if let Err(rejection) = fire(txn, &app_record, (path, "delete", &old), depth, now_ms)? {
        return Ok(Err(rejection));
    }
    Ok(Ok(CommandResult::FileDeleted { existed: true }))
}

/// Drops every file of `app` (on `AppDelete`, which already takes the slow
/// path): records and block lists go, their blocks are released, and the
/// usage row goes in `txn` (the final batch). An app may hold many files,
/// so they are removed in bounded batches committed straight to the
/// backend, each removing its files' records together with their
/// references: a crash between batches leaves every remaining file fully
/// counted, and the re-applied `AppDelete` finishes the rest.
pub(super) fn delete_app_files<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
) -> Result<(), StorageError> {
    let prefix = keys::app_prefix(app);
    loop {
        let mut chunk = Txn::new(txn.backend);
        let mut removed = 0usize;
        for item in txn
            .backend
            .scan(Keyspace::Files, &prefix, &prefix)
            .take(BULK_DELETE_BATCH_KEYS)
        {
            let (key, value) = item?;
            let (path, record) = keys::file_row(&prefix, &key, &value)?;
            remove_file(&mut chunk, app, &path, &record)?;
            removed += 1;
        }
        if removed == 0 {
            break;
        }
        txn.backend.apply_batch(chunk.into_batch())?;
    }
    txn.delete(Keyspace::FileIndex, keys::files_usage_key(app));
    Ok(())
}

/// Removes the record and block list of the file at `path` (`record`) and
/// releases its blocks.
fn remove_file<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    path: &str,
    record: &FileRecord,
) -> Result<(), StorageError> {
    if record.inline.is_none() {
        let blocks_key = keys::file_blocks_key(app, path);
        for hash in block_list(txn, &blocks_key)? {
            add_ref(txn, &hash, -1)?;
        }
        txn.delete(Keyspace::FileIndex, blocks_key);
    }
    txn.delete(Keyspace::Files, keys::file_key(app, path));
    Ok(())
}

/// Why a put's size, inline bytes, block list and content type disagree.
fn inconsistency(put: &FilePut<'_>) -> Option<String> {
    let inline_expected = put.size <= INLINE_BYTES_MAX;
    match put.inline {
        Some(_) if !inline_expected => {
            return Some(format!(
                "a file of {} bytes is stored in blocks, not inline",
                put.size
            ));
        }
        None if inline_expected => {
            return Some(format!(
                "a file of {} bytes is stored inline, without blocks",
                put.size
            ));
        }
        Some(bytes) if bytes.len() as u64 != put.size => {
            return Some(format!(
                "{} inline bytes for a file of {} bytes",
                bytes.len(),
                put.size
            ));
        }
        _ => {}
    }
    let expected = block_count(put.size);
    if put.blocks.len() as u64 != u64::from(expected) {
        return Some(format!(
            "{} blocks for a file of {} bytes (expected {expected})",
            put.blocks.len(),
            put.size
        ));
    }
    if put.content_type.len() > CONTENT_TYPE_BYTES_MAX {
        return Some(format!(
            "the content type is {} bytes; at most {CONTENT_TYPE_BYTES_MAX} are allowed",
            put.content_type.len()
        ));
    }
    None
}

fn quota(app: &str, limit: &str, max: u64) -> ApplyError {
    ApplyError::QuotaExceeded {
        app: app.into(),
        limit: limit.into(),
        max,
    }
}

/// The block list stored at `key` (empty when absent).
fn block_list<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    key: &[u8],
) -> Result<Vec<BlockHash>, StorageError> {
    match txn.get(Keyspace::FileIndex, key)? {
        Some(bytes) => keys::block_list_of(&bytes),
        None => Ok(Vec::new()),
    }
}

/// Adds `delta` (+1 or -1) to the references of `hash`; a count reaching
/// zero removes the row (the block is then garbage once its grace passed).
fn add_ref<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    hash: &BlockHash,
    delta: i8,
) -> Result<(), StorageError> {
    let key = keys::block_refs_key(hash);
    let refs = txn.u64_at(Keyspace::FileIndex, &key, "block references")?;
    let refs = if delta >= 0 {
        refs.saturating_add(1)
    } else {
        // Every release matches an earlier reference; a missing one means
        // the counts are already wrong, and wrapping would make it worse.
        debug_assert!(refs > 0, "block references underflow");
        refs.saturating_sub(1)
    };
    if refs == 0 {
        txn.delete(Keyspace::FileIndex, key);
    } else {
        txn.put_encoded(Keyspace::FileIndex, key, &refs, "block references")?;
    }
    Ok(())
}

fn usage<B: Backend + ?Sized>(txn: &Txn<'_, B>, app: &str) -> Result<FilesUsage, StorageError> {
    Ok(txn
        .get_decoded(
            Keyspace::FileIndex,
            &keys::files_usage_key(app),
            "files usage",
        )?
        .unwrap_or_default())
}

fn set_usage<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    usage: FilesUsage,
) -> Result<(), StorageError> {
    let key = keys::files_usage_key(app);
    if usage == FilesUsage::default() {
        txn.delete(Keyspace::FileIndex, key);
        return Ok(());
    }
    txn.put_encoded(Keyspace::FileIndex, key, &usage, "files usage")
}

/// Queues a run of each of the app's files triggers matching the event's
/// path and op (`put`/`delete`, with the stored file's `record`), at the
/// write's `depth` (past `chain_depth_max` the run becomes a dead letter,
/// as for kv writes), exactly like pub/sub triggers; a full outbox rejects
/// the write.
fn fire<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app_record: &AppRecord,
    (path, op, record): (&str, &str, &FileRecord),
    depth: u32,
    now_ms: u64,
) -> Result<Result<(), ApplyError>, StorageError> {
    let app = app_record.name.as_str();
    let Some(set) = txn.triggers_of(app_record)? else {
        return Ok(Ok(()));
    };
    let fired: Vec<String> = set
        .files_triggers_on(path, op)
        .map(str::to_string)
        .collect();
    for trigger in fired {
        let event = TriggerEvent::Files {
            path: path.into(),
            op: op.into(),
            size: record.size,
            etag: record.etag(),
            content_type: record.content_type.clone(),
        };
        if let Err(rejection) = enqueue_run(txn, app, &set, &trigger, event, depth, now_ms)? {
            return Ok(Err(rejection));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests;
