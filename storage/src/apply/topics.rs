//! Durable pub/sub: a `Publish` stores the message as the topic's next one
//! and trims the topic to its retention ([`trim_range`]); the app's
//! realtime signing key arrives sealed (`RealtimeKeySet`). A durable
//! message fires the app's `pubsub` triggers whose pattern matches its topic.

use std::sync::Arc;

use super::outbox::enqueue_run;
use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::command::{ApplyError, Command, CommandResult, RunOutcome};
use crate::error::StorageError;
use crate::keys;
use crate::topics::{Position, PublishedEvent, TopicRecord, trim_range};
use crate::triggers::{TriggerEvent, TriggerSet};

pub(super) fn publish<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    topic: &str,
    message: &[u8],
    retain: u64,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    if txn.app(app)?.is_none() {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    }
    let triggers = txn.active_triggers(app)?;
    Ok(store(
        txn,
        app,
        topic,
        message,
        retain,
        (triggers.as_ref(), 1),
        now_ms,
    )?
    .map(|(epoch, seq)| CommandResult::Published { epoch, seq }))
}

/// Stores `message` as the next message of `topic` (the app exists), trims
/// the topic to `retain`, and queues a run of each of `triggers`' pubsub
/// triggers matching the topic at chain `depth`; the message's position.
pub(super) fn store<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    topic: &str,
    message: &[u8],
    retain: u64,
    (triggers, depth): (Option<&TriggerSet>, u32),
    now_ms: u64,
) -> Result<Result<(u64, u64), ApplyError>, StorageError> {
    let record_key = keys::topic_record_key(app, topic);
    let mut record = match txn.get_decoded::<TopicRecord>(Keyspace::Topics, &record_key, "topic")? {
        Some(record) => record,
        None => TopicRecord {
            epoch: next_epoch(txn)?,
            last_seq: 0,
            oldest_seq: 1,
        },
    };
    record.last_seq = record.last_seq.saturating_add(1);
    txn.put(
        Keyspace::Topics,
        keys::topic_message_key(app, topic, record.last_seq),
        message.to_vec(),
    );
    let trimmed = trim_range(record.oldest_seq, record.last_seq, retain.max(1));
    for seq in trimmed.clone() {
        txn.delete(Keyspace::Topics, keys::topic_message_key(app, topic, seq));
    }
    record.oldest_seq = record.oldest_seq.max(trimmed.end);
    txn.put_encoded(Keyspace::Topics, record_key, &record, "topic")?;
    // Pub/sub triggers: one outbox entry each, in this entry, exactly like
    // kv triggers (a full outbox rejects the publish).
    if let Some(set) = triggers {
        let fired: Vec<String> = set.pubsub_triggers_on(topic).map(str::to_string).collect();
        for trigger in fired {
            let event = TriggerEvent::Pubsub {
                topic: topic.to_string(),
                message: message.to_vec(),
                epoch: record.epoch,
                seq: record.last_seq,
            };
            if let Err(rejection) = enqueue_run(txn, app, set, &trigger, event, depth, now_ms)? {
                return Ok(Err(rejection));
            }
        }
    }
    Ok(Ok((record.epoch, record.last_seq)))
}

/// Hands out the next topic epoch from the cluster-wide counter.
fn next_epoch<B: Backend + ?Sized>(txn: &mut Txn<'_, B>) -> Result<u64, StorageError> {
    let epoch: u64 = txn
        .get_decoded(
            Keyspace::Cluster,
            keys::CLUSTER_NEXT_TOPIC_EPOCH,
            "topic epoch",
        )?
        .unwrap_or(1);
    txn.put_encoded(
        Keyspace::Cluster,
        keys::CLUSTER_NEXT_TOPIC_EPOCH.to_vec(),
        &epoch.saturating_add(1),
        "topic epoch",
    )?;
    Ok(epoch)
}

pub(super) fn realtime_key_set<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    sealed: &[u8],
    only_if_absent: bool,
) -> Result<Outcome, StorageError> {
    if txn.app(app)?.is_none() {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    }
    let key = keys::realtime_key_key(app);
    if only_if_absent && txn.get(Keyspace::Topics, &key)?.is_some() {
        return Ok(Ok(CommandResult::Done));
    }
    txn.put(Keyspace::Topics, key, sealed.to_vec());
    Ok(Ok(CommandResult::Done))
}

/// Swaps `app`'s sealed signing key from `old` to `new` (the same key
/// re-sealed) only while the stored bytes are still `old`.
pub(super) fn realtime_key_rekey<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    old: &[u8],
    new: &[u8],
) -> Result<Outcome, StorageError> {
    let key = keys::realtime_key_key(app);
    let current = txn.get(Keyspace::Topics, &key)?;
    let swapped = current.as_deref() == Some(old);
    if swapped {
        txn.put(Keyspace::Topics, key, new.to_vec());
    }
    Ok(Ok(CommandResult::SecretsRekeyed {
        rekeyed: u64::from(swapped),
        changed: u64::from(!swapped),
    }))
}

/// The durable messages `command` stored (inner commands of a batch
/// included), for the state machine to announce after the entry applied.
pub fn published_events(command: &Command, result: &CommandResult) -> Vec<PublishedEvent> {
    match (command, result) {
        (Command::Batch(commands), CommandResult::Batch(results)) => commands
            .iter()
            .zip(results)
            .flat_map(|(command, result)| published_events(command, result))
            .collect(),
        (
            Command::Publish {
                app,
                topic,
                message,
                ..
            },
            CommandResult::Published { epoch, seq },
        ) => vec![PublishedEvent {
            app: app.clone(),
            topic: topic.clone(),
            position: Position {
                epoch: *epoch,
                seq: *seq,
            },
            message: Arc::from(message.as_slice()),
        }],
        (
            Command::CompleteRun { app, publishes, .. },
            CommandResult::Run(RunOutcome::CompletedPublished { positions }),
        ) => publishes
            .iter()
            .zip(positions)
            .map(|(publish, (epoch, seq))| PublishedEvent {
                app: app.clone(),
                topic: publish.topic.clone(),
                position: Position {
                    epoch: *epoch,
                    seq: *seq,
                },
                message: Arc::from(publish.message.as_slice()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Decodes a stored topic record (for the read side).
pub(crate) fn decode_record(bytes: &[u8]) -> Result<TopicRecord, StorageError> {
    codec::decode(bytes, STORED_BYTES_MAX).map_err(StorageError::codec("topic"))
}

#[cfg(test)]
mod tests;
