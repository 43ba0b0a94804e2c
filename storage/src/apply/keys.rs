//! API keys: create and revoke, and the commands that bind a key to the
//! app it was made for: deleting an app revokes its scoped keys in the same
//! entry, and a scoped key can only be created for an app that exists.
//! Together they make a `deploy:<app>` or `read:<app>` key belong to one app
//! instance: when the app is deleted and someone re-creates the name, the
//! old key is gone.
//!
//! Why revoke rather than store an app instance id in the key: a key record
//! and its scope string keep their format (no migration of stored records,
//! no change to what `picloud keys list` shows), the revocation is visible
//! (`keys list` no longer lists the key), and the decision is one
//! deterministic step of `apply`, so every replica makes it.

use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::command::{ApplyError, CommandResult};
use crate::error::StorageError;
use crate::records::{KeyRecord, scoped_app};

/// Revokes every key whose scope names `app` (for `AppDelete` with
/// `revoke_keys`) and says how many. Keys are few (an operator makes them
/// by hand), so one scan of them is cheap.
pub(super) fn revoke_scoped_keys<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
) -> Result<u64, StorageError> {
    let mut revoked = Vec::new();
    for item in txn.backend.scan(Keyspace::Keys, &[], &[]) {
        let (id, bytes) = item?;
        let record: KeyRecord =
            codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("key record"))?;
        if scoped_app(&record.scope) == Some(app) {
            revoked.push(id);
        }
    }
    let keys_revoked = revoked.len() as u64;
    for id in revoked {
        txn.delete(Keyspace::Keys, id);
    }
    Ok(keys_revoked)
}

/// `KeyCreate`'s check when `scoped_app_must_exist`: `AppNotFound` when `scope` names an app
/// (`deploy:<app>`, `read:<app>`) that does not exist.
fn missing_scoped_app<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    scope: &str,
) -> Result<Option<ApplyError>, StorageError> {
    match scoped_app(scope) {
        Some(app) if txn.app(app)?.is_none() => {
            Ok(Some(ApplyError::AppNotFound { app: app.into() }))
        }
        _ => Ok(None),
    }
}

/// `Command::KeyCreate`.
pub(super) fn key_create<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: &str,
    name: &str,
    scope: &str,
    secret_hash: &[u8],
    now_ms: u64,
    scoped_app_must_exist: bool,
) -> Result<Outcome, StorageError> {
    if scoped_app_must_exist && let Some(rejection) = missing_scoped_app(txn, scope)? {
        return Ok(Err(rejection));
    }
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

pub(super) fn key_revoke<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: &str,
) -> Result<Outcome, StorageError> {
    if txn.get(Keyspace::Keys, id.as_bytes())?.is_none() {
        return Ok(Err(ApplyError::KeyNotFound { id: id.into() }));
    }
    txn.delete(Keyspace::Keys, id.as_bytes().to_vec());
    Ok(Ok(CommandResult::Done))
}

#[cfg(test)]
mod tests;
