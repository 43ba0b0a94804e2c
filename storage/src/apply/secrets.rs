//! Secrets: values arrive sealed (storage never sees a plaintext), at most
//! [`SECRETS_PER_APP_MAX`] per app; re-keying swaps each value only where it
//! is still the one the proposer re-sealed.

use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace};
use crate::command::{ApplyError, CommandResult, SecretRekey};
use crate::error::StorageError;
use crate::keys;
use crate::secrets::{SECRETS_PER_APP_MAX, SecretRecord};

pub(super) fn secret_set<B: Backend + ?Sized>(
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

pub(super) fn secret_delete<B: Backend + ?Sized>(
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
pub(super) fn secrets_rekey<B: Backend + ?Sized>(
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
mod tests;
