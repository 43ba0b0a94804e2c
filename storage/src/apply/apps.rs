//! Apps and their code: create and delete an app, deploy a version (with
//! its triggers and document indexes), roll back, publish a shared library.

use super::docs;
use super::files::delete_app_files;
use super::keys::revoke_scoped_keys;
use super::triggers::swap_triggers;
use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace, delete_prefix};
use crate::command::{ApplyError, CommandResult, DeployParts, VersionDeploy};
use crate::error::StorageError;
use crate::keys;
use crate::records::{AppRecord, DeployRecord, LibRecord, LibVersion};
use crate::triggers::TriggerSet;

impl<B: Backend + ?Sized> Txn<'_, B> {
    /// Versions deployed for `app` that exist in the backend, ascending.
    pub(super) fn deployed_versions(&self, app: &str) -> Result<Vec<u64>, StorageError> {
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

pub(super) fn app_create<B: Backend + ?Sized>(
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

/// `Command::AppDelete`: the app and all its data; with `revoke_keys`, the
/// API keys scoped to it too (see `keys`).
pub(super) fn app_delete<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    revoke_keys: bool,
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
    // and so do its secrets and its topics' history. Documents and their index entries are
    // unbounded too.
    for keyspace in [
        Keyspace::Triggers,
        Keyspace::Outbox,
        Keyspace::DeadLetters,
        Keyspace::Docs,
        Keyspace::DocIndex,
        Keyspace::Secrets,
        Keyspace::Topics,
        Keyspace::Mail,
        Keyspace::Users,
        Keyspace::Sessions,
        Keyspace::Operators,
    ] {
        delete_prefix(txn.backend, keyspace, &prefix)?;
    }
    // Files release the blocks they reference, which other apps may share:
    // bounded batches that keep records and references in step.
    delete_app_files(txn, app)?;
    // Deploys are bounded by `versions_keep`: they go in the final batch.
    for version in txn.deployed_versions(app)? {
        txn.delete(Keyspace::Deploys, keys::deploy_key(app, version));
        txn.delete(Keyspace::Bundles, keys::deploy_key(app, version));
    }
    txn.delete(Keyspace::Apps, app.as_bytes().to_vec());
    if !revoke_keys {
        return Ok(Ok(CommandResult::Done));
    }
    let keys_revoked = revoke_scoped_keys(txn, app)?;
    Ok(Ok(CommandResult::AppDeleted { keys_revoked }))
}

/// `Command::Deploy`: the bundle becomes the next, active version; the
/// version's triggers (when it carries them) become the active set, and its
/// indexes (when it carries them) the built ones.
pub(super) fn deploy<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    deploy: &VersionDeploy,
) -> Result<Outcome, StorageError> {
    let (app, now_ms) = (deploy.app.as_str(), deploy.now_ms);
    let (triggers, indexes, create_app) = match &deploy.parts {
        DeployParts::Bundle => (None, None, true),
        DeployParts::WithTriggers(triggers) => (Some(triggers), None, true),
        DeployParts::Full {
            triggers,
            indexes,
            create_app,
        } => (Some(triggers), Some(indexes), *create_app),
    };
    if !create_app && txn.app(app)?.is_none() {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    }
    let before = txn.active_triggers(app)?;
    let version = add_version(txn, app, &deploy.bundle, now_ms, deploy.versions_keep)?;
    if let Some(triggers) = triggers {
        txn.put_encoded(
            Keyspace::Triggers,
            keys::trigger_set_key(app, version),
            triggers,
            "trigger set",
        )?;
    }
    swap_triggers(txn, app, before.as_ref(), triggers, now_ms)?;
    if let Some(indexes) = indexes {
        txn.put_encoded(
            Keyspace::Triggers,
            crate::docs::index_set_key(app, version),
            indexes,
            "index set",
        )?;
        if let Err(rejection) = docs::switch_indexes(txn, app, indexes)? {
            return Ok(Err(rejection));
        }
    }
    Ok(Ok(CommandResult::Deployed { version }))
}

/// Stores `bundle` as the next version of `app` (created when missing) and
/// makes it the active one, then prunes to the newest `versions_keep`.
fn add_version<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    bundle: &[u8],
    now_ms: u64,
    versions_keep: u32,
) -> Result<u64, StorageError> {
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
    Ok(version)
}

pub(super) fn rollback<B: Backend + ?Sized>(
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
    let indexes = docs::version_indexes(txn, app, target)?;
    if let Err(rejection) = docs::switch_indexes(txn, app, &indexes)? {
        return Ok(Err(rejection));
    }
    Ok(Ok(CommandResult::RolledBack { version: target }))
}

/// Shared libraries keep their versions in their record, so publishing
/// reads nothing but that record (no scan).
pub(super) fn publish_lib<B: Backend + ?Sized>(
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

#[cfg(test)]
mod tests;
