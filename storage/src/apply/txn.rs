//! [`Txn`]: one command's writes, kept in memory and read back before they
//! are committed, so later ops of one command see earlier ones; committed
//! as one backend batch (a `BTreeMap`, so the batch is the same on every
//! replica) together with the new last-applied log id.
//!
//! Every area of `apply` works on a `Txn`; this module depends on none of
//! them.

use std::collections::BTreeMap;

use openraft::LogId;

use crate::backend::{Backend, Keyspace, WriteBatch};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::command::{ApplyError, CommandResult};
use crate::error::StorageError;
use crate::keys;
use crate::node::NodeId;
use crate::records::AppRecord;

/// A command's outcome: `Err` is a deterministic rejection.
pub(super) type Outcome = Result<CommandResult, ApplyError>;

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

/// Adds the last-applied log id to `batch`.
pub(crate) fn put_last_applied(
    batch: &mut WriteBatch,
    log_id: &LogId<NodeId>,
) -> Result<(), StorageError> {
    let bytes = codec::encode(log_id).map_err(StorageError::codec("last applied log id"))?;
    batch.insert(Keyspace::Meta, keys::META_LAST_APPLIED.to_vec(), bytes);
    Ok(())
}
