//! Kv writes: one op or several all-or-nothing, and the outbox entries of
//! the kv triggers a write fires.

use super::outbox::enqueue_run;
use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace};
use crate::command::{ApplyError, CommandResult, KvOp, KvOpResult};
use crate::error::StorageError;
use crate::keys::{self, StoredValue};
use crate::triggers::{TriggerEvent, TriggerSet};

impl<B: Backend + ?Sized> Txn<'_, B> {
    /// The value of `key` in `app`, or `None` when absent or expired at `now_ms`.
    pub(super) fn live_value(
        &self,
        app: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<StoredValue>, StorageError> {
        let stored: Option<StoredValue> =
            self.get_decoded(Keyspace::Kv, &keys::kv_key(app, key), "kv value")?;
        Ok(stored.filter(|value| value.is_live(now_ms)))
    }
}

pub(super) fn kv<B: Backend + ?Sized>(
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

pub(super) fn kv_atomic<B: Backend + ?Sized>(
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
pub(super) fn kv_ops_atomic<B: Backend + ?Sized>(
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
pub(super) fn kv_op_firing<B: Backend + ?Sized>(
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

pub(super) fn kv_op<B: Backend + ?Sized>(
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
pub(super) fn parse_integer(bytes: &[u8]) -> Option<i64> {
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

#[cfg(test)]
mod tests;
