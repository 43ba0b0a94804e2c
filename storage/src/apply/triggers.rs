//! Trigger runs: cron fires, claims, a run's completion (its writes, in the
//! entry that removes it) or failure (retry after backoff, or a dead
//! letter), dead letters retried or deleted, and the dead-lettering of runs
//! whose trigger a deploy or rollback removed.

use super::kv::kv_ops_atomic;
use super::outbox::{bury, enqueue_run, reserve_outbox_slot, unqueue_run};
use super::txn::{Outcome, Txn};
use super::{docs, topics};
use crate::backend::{Backend, Keyspace};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::command::{ApplyError, CommandResult, KvOp, RunOutcome, RunPublish};
use crate::email::EMAIL_TRIGGER;
use crate::error::StorageError;
use crate::keys;
use crate::node::NodeId;
use crate::triggers::{
    Attempt, Claim, DeadLetter, OutboxEntry, TriggerDef, TriggerDefKind, TriggerEvent, TriggerSet,
    dead_code, retry_delay_ms,
};

/// The active trigger set changed from `before` to `after`: pending runs of
/// triggers `after` lacks are dead-lettered (`trigger_removed`) and their
/// cron state is dropped. Scans the backend (not pending writes): runs are
/// only ever created by other log entries.
pub(super) fn swap_triggers<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    before: Option<&TriggerSet>,
    after: Option<&TriggerSet>,
    now_ms: u64,
) -> Result<(), StorageError> {
    let Some(before) = before else {
        return Ok(());
    };
    let empty = TriggerSet::default();
    let after = after.unwrap_or(&empty);
    let kept = |name: &str| after.triggers.iter().any(|def| def.name == name);
    let removed: Vec<&str> = before
        .triggers
        .iter()
        .map(|def| def.name.as_str())
        .filter(|name| !kept(name))
        .collect();
    if removed.is_empty() {
        return Ok(());
    }
    for name in &removed {
        txn.delete(Keyspace::Triggers, keys::fired_key(app, name));
    }
    let prefix = keys::app_prefix(app);
    let mut orphans = Vec::new();
    for item in txn.backend.scan(Keyspace::Outbox, &prefix, &prefix) {
        let (_, bytes) = item?;
        let entry: OutboxEntry =
            codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("outbox entry"))?;
        if removed.contains(&entry.trigger.as_str()) {
            orphans.push(entry);
        }
    }
    for entry in orphans {
        unqueue_run(txn, app, entry.id)?;
        let error = format!(
            "trigger {} was removed by a deploy or rollback",
            entry.trigger
        );
        bury(
            txn,
            app,
            after,
            entry,
            dead_code::TRIGGER_REMOVED,
            error,
            now_ms,
        )?;
    }
    Ok(())
}

pub(super) fn fire_cron<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    trigger: &str,
    slot_ms: u64,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let not_found = || {
        Ok(Err(ApplyError::TriggerNotFound {
            app: app.into(),
            trigger: trigger.into(),
        }))
    };
    let Some(set) = txn.active_triggers(app)? else {
        return not_found();
    };
    let is_cron =
        |def: &TriggerDef| def.name == trigger && matches!(def.kind, TriggerDefKind::Cron { .. });
    if !set.triggers.iter().any(is_cron) {
        return not_found();
    }
    let fired_key = keys::fired_key(app, trigger);
    let last: Option<u64> = txn.get_decoded(Keyspace::Triggers, &fired_key, "fired slot")?;
    if last.is_some_and(|last| last >= slot_ms) {
        return Ok(Ok(CommandResult::TriggerFired { id: None }));
    }
    txn.put_encoded(Keyspace::Triggers, fired_key, &slot_ms, "fired slot")?;
    let event = TriggerEvent::Cron { slot_ms };
    Ok(enqueue_run(txn, app, &set, trigger, event, 1, now_ms)?
        .map(|id| CommandResult::TriggerFired { id: Some(id) }))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn claim_runs<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    ids: &[u64],
    term: u64,
    node: NodeId,
    now_ms: u64,
    reclaim_after_ms: u64,
) -> Result<Outcome, StorageError> {
    let mut claimed = Vec::new();
    for &id in ids {
        let Some(mut entry) = txn.outbox_entry(app, id)? else {
            continue;
        };
        let free = match &entry.claim {
            None => true,
            Some(claim) => {
                claim.term < term || now_ms.saturating_sub(claim.at_ms) >= reclaim_after_ms
            }
        };
        if !free || entry.not_before_ms > now_ms {
            continue;
        }
        entry.claim = Some(Claim {
            term,
            node,
            at_ms: now_ms,
        });
        txn.put_run(app, &entry)?;
        claimed.push(id);
    }
    Ok(Ok(CommandResult::RunsClaimed {
        ids: claimed,
        claim_ms: now_ms,
    }))
}

/// The entry of run `id` if `claim` (term, claim time) still holds it.
pub(super) fn claimed_entry<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    app: &str,
    id: u64,
    (term, claim_ms): (u64, u64),
) -> Result<Result<OutboxEntry, ApplyError>, StorageError> {
    match txn.outbox_entry(app, id)? {
        Some(entry)
            if entry
                .claim
                .as_ref()
                .is_some_and(|claim| claim.term == term && claim.at_ms == claim_ms) =>
        {
            Ok(Ok(entry))
        }
        _ => Ok(Err(ApplyError::StaleClaim {
            app: app.into(),
            id,
        })),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn complete_run<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
    claim: (u64, u64),
    (ops, docs, publishes): (&[KvOp], &[crate::command::DocOp], &[RunPublish]),
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let entry = match claimed_entry(txn, app, id, claim)? {
        Ok(entry) => entry,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let set = txn.active_triggers(app)?.unwrap_or_default();
    // Nothing is written yet in this command's transaction, so a rejected
    // set of writes is undone by clearing it.
    debug_assert!(txn.writes.is_empty());
    let depth = entry.depth + 1;
    let mut applied = kv_ops_atomic(txn, app, ops, now_ms, Some(&set), depth)?.map(|_| ());
    if applied.is_ok() && !docs.is_empty() {
        applied = docs::doc_ops(txn, app, docs, Some(&set), depth, now_ms)?.map(|_| ());
    }
    let mut positions = Vec::with_capacity(publishes.len());
    for publish in publishes {
        if applied.is_err() {
            break;
        }
        let (topic, message, retain) = (&publish.topic, &publish.message, publish.retain);
        match topics::store(
            txn,
            app,
            topic,
            message,
            retain,
            (Some(&set), depth),
            now_ms,
        )? {
            Ok(position) => positions.push(position),
            Err(rejection) => applied = Err(rejection),
        }
    }
    match applied {
        Ok(()) => {
            unqueue_run(txn, app, id)?;
            let outcome = if publishes.is_empty() {
                RunOutcome::Completed
            } else {
                RunOutcome::CompletedPublished { positions }
            };
            Ok(Ok(CommandResult::Run(outcome)))
        }
        Err(rejection) => {
            txn.writes.clear();
            let error = format!("the run's writes were rejected: {rejection}");
            record_failure(txn, app, &set, entry, error, now_ms).map(Ok)
        }
    }
}

pub(super) fn fail_run<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
    claim: (u64, u64),
    error: &str,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let entry = match claimed_entry(txn, app, id, claim)? {
        Ok(entry) => entry,
        Err(rejection) => return Ok(Err(rejection)),
    };
    let set = txn.active_triggers(app)?.unwrap_or_default();
    record_failure(txn, app, &set, entry, error.to_string(), now_ms).map(Ok)
}

/// One more failed attempt: retry after the trigger's backoff, or bury.
pub(super) fn record_failure<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    set: &TriggerSet,
    mut entry: OutboxEntry,
    error: String,
    now_ms: u64,
) -> Result<CommandResult, StorageError> {
    entry.attempts.push(Attempt {
        at_ms: now_ms,
        error: error.clone(),
    });
    entry.claim = None;
    // Mail carries its own retry policy; scripts' triggers have theirs in
    // the deployed set.
    let policy = match &entry.event {
        TriggerEvent::Email { retry, .. } if entry.trigger == EMAIL_TRIGGER => {
            Some((retry.attempts_max, retry.backoff_ms))
        }
        _ => set
            .triggers
            .iter()
            .find(|def| def.name == entry.trigger)
            .map(|def| (def.attempts_max, def.backoff_ms)),
    };
    let Some((attempts_max, backoff_ms)) = policy else {
        unqueue_run(txn, app, entry.id)?;
        let error = format!("{error} (trigger {} is gone)", entry.trigger);
        bury(
            txn,
            app,
            set,
            entry,
            dead_code::TRIGGER_REMOVED,
            error,
            now_ms,
        )?;
        return Ok(CommandResult::Run(RunOutcome::DeadLettered {
            code: dead_code::TRIGGER_REMOVED.into(),
        }));
    };
    let failures = u32::try_from(entry.attempts.len()).unwrap_or(u32::MAX);
    if failures >= attempts_max {
        unqueue_run(txn, app, entry.id)?;
        bury(txn, app, set, entry, dead_code::FAILED, error, now_ms)?;
        return Ok(CommandResult::Run(RunOutcome::DeadLettered {
            code: dead_code::FAILED.into(),
        }));
    }
    entry.not_before_ms = now_ms.saturating_add(retry_delay_ms(backoff_ms, failures));
    let not_before_ms = entry.not_before_ms;
    txn.put_run(app, &entry)?;
    Ok(CommandResult::Run(RunOutcome::WillRetry { not_before_ms }))
}

pub(super) fn retry_dead_letter<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let key = keys::run_key(app, id);
    let Some(letter) = txn.get_decoded::<DeadLetter>(Keyspace::DeadLetters, &key, "dead letter")?
    else {
        return Ok(Err(ApplyError::DeadLetterNotFound {
            app: app.into(),
            id,
        }));
    };
    let set = txn.active_triggers(app)?.unwrap_or_default();
    if letter.entry.trigger != EMAIL_TRIGGER
        && !set
            .triggers
            .iter()
            .any(|def| def.name == letter.entry.trigger)
    {
        return Ok(Err(ApplyError::TriggerNotFound {
            app: app.into(),
            trigger: letter.entry.trigger,
        }));
    }
    if let Err(full) = reserve_outbox_slot(txn, app, &set)? {
        return Ok(Err(full));
    }
    let mut entry = letter.entry;
    entry.attempts.clear();
    entry.claim = None;
    entry.not_before_ms = now_ms;
    entry.depth = entry.depth.min(set.chain_depth_max);
    txn.delete(Keyspace::DeadLetters, key);
    txn.put_run(app, &entry)?;
    Ok(Ok(CommandResult::Done))
}

pub(super) fn delete_dead_letter<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
) -> Result<Outcome, StorageError> {
    let key = keys::run_key(app, id);
    if txn.get(Keyspace::DeadLetters, &key)?.is_none() {
        return Ok(Err(ApplyError::DeadLetterNotFound {
            app: app.into(),
            id,
        }));
    }
    txn.delete(Keyspace::DeadLetters, key);
    Ok(Ok(CommandResult::Done))
}

#[cfg(test)]
mod tests;
