//! The outbox every trigger run passes through: reading an app's active
//! trigger set, queueing a run (within the app's `outbox_max`, or straight
//! to its dead letters past the chain depth bound), taking one out, and
//! burying one as a dead letter (which queues the app's `dead_letter`
//! triggers). Kv and document writes queue runs here; `triggers` moves them.

use super::txn::Txn;
use crate::backend::{Backend, Keyspace};
use crate::command::ApplyError;
use crate::error::StorageError;
use crate::keys;
use crate::records::AppRecord;
use crate::triggers::{
    DeadLetter, OutboxEntry, TriggerDefKind, TriggerEvent, TriggerSet, dead_code,
};

impl<B: Backend + ?Sized> Txn<'_, B> {
    /// The trigger set of `app`'s active version (`None`: no app, no
    /// version, or a version deployed without triggers).
    pub(super) fn active_triggers(&self, app: &str) -> Result<Option<TriggerSet>, StorageError> {
        match self.app(app)? {
            Some(record) => self.triggers_of(&record),
            None => Ok(None),
        }
    }

    /// The trigger set of the app's active version, from its record (the
    /// kv hot path has the record already).
    pub(super) fn triggers_of(
        &self,
        record: &AppRecord,
    ) -> Result<Option<TriggerSet>, StorageError> {
        let Some(version) = record.active_version else {
            return Ok(None);
        };
        self.get_decoded(
            Keyspace::Triggers,
            &keys::trigger_set_key(&record.name, version),
            "trigger set",
        )
    }

    /// Writes `entry` as run `entry.id` of `app` in the outbox.
    pub(super) fn put_run(&mut self, app: &str, entry: &OutboxEntry) -> Result<(), StorageError> {
        self.put_encoded(
            Keyspace::Outbox,
            keys::run_key(app, entry.id),
            entry,
            "outbox entry",
        )
    }

    pub(super) fn outbox_entry(
        &self,
        app: &str,
        id: u64,
    ) -> Result<Option<OutboxEntry>, StorageError> {
        self.get_decoded(Keyspace::Outbox, &keys::run_key(app, id), "outbox entry")
    }
}

/// Adds a run of `trigger` to `app`'s outbox (or, past the chain depth
/// bound, straight to its dead letters as `trigger_loop`) and returns its
/// id. Rejected with `OutboxFull` when the app's outbox is at its bound.
pub(super) fn enqueue_run<B: Backend + ?Sized>(
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
pub(super) fn reserve_outbox_slot<B: Backend + ?Sized>(
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
pub(super) fn unqueue_run<B: Backend + ?Sized>(
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
pub(super) fn bury<B: Backend + ?Sized>(
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
