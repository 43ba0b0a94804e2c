//! Outbound mail: queueing a send as an outbox entry of the reserved
//! trigger [`EMAIL_TRIGGER`], burying a bounced one at once, and capturing
//! mail in dev mode (the newest `captured_max` per app are kept).

use super::outbox::{bury, enqueue_run, unqueue_run};
use super::triggers::claimed_entry;
use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace};
use crate::command::{ApplyError, CommandResult, RunOutcome};
use crate::email::{
    BOUNCED, CHAIN_DEPTH_MAX_DEFAULT, CaptureSeq, CapturedMail, EMAIL_TRIGGER, EmailCommand,
    EmailMessage, EmailRetry, OUTBOX_MAX_DEFAULT,
};
use crate::error::StorageError;
use crate::keys;
use crate::triggers::{Attempt, TriggerEvent, TriggerSet};

pub(super) fn email<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    command: &EmailCommand,
) -> Result<Outcome, StorageError> {
    match command {
        EmailCommand::Send {
            app,
            message,
            retry,
            now_ms,
        } => send(txn, app, message, *retry, *now_ms),
        EmailCommand::Bounce {
            app,
            id,
            term,
            claim_ms,
            reply,
            now_ms,
        } => bounce(txn, app, *id, (*term, *claim_ms), reply, *now_ms),
        EmailCommand::Capture {
            app,
            message,
            captured_max,
            now_ms,
        } => capture(txn, app, message, *captured_max, *now_ms),
    }
}

/// The trigger set whose bounds (outbox, chain depth) and `dead_letter`
/// triggers apply to the app's mail.
fn bounds_of<B: Backend + ?Sized>(txn: &Txn<'_, B>, app: &str) -> Result<TriggerSet, StorageError> {
    Ok(txn.active_triggers(app)?.unwrap_or(TriggerSet {
        triggers: Vec::new(),
        chain_depth_max: CHAIN_DEPTH_MAX_DEFAULT,
        outbox_max: OUTBOX_MAX_DEFAULT,
    }))
}

fn send<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    message: &EmailMessage,
    retry: EmailRetry,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    if txn.app(app)?.is_none() {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    }
    let set = bounds_of(txn, app)?;
    let event = TriggerEvent::Email {
        message: message.clone(),
        retry,
    };
    // Depth 1: a delivery runs no script, so it never lengthens a chain.
    Ok(
        enqueue_run(txn, app, &set, EMAIL_TRIGGER, event, 1, now_ms)?
            .map(|id| CommandResult::TriggerFired { id: Some(id) }),
    )
}

fn bounce<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: u64,
    claim: (u64, u64),
    reply: &str,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let mut entry = match claimed_entry(txn, app, id, claim)? {
        Ok(entry) => entry,
        Err(rejection) => return Ok(Err(rejection)),
    };
    entry.attempts.push(Attempt {
        at_ms: now_ms,
        error: reply.to_string(),
    });
    entry.claim = None;
    let set = bounds_of(txn, app)?;
    unqueue_run(txn, app, id)?;
    bury(txn, app, &set, entry, BOUNCED, reply.to_string(), now_ms)?;
    Ok(Ok(CommandResult::Run(RunOutcome::DeadLettered {
        code: BOUNCED.into(),
    })))
}

fn capture<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    message: &EmailMessage,
    captured_max: u32,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    if txn.app(app)?.is_none() {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    }
    let seq_key = keys::capture_seq_key(app);
    let mut seq: CaptureSeq = txn
        .get_decoded(Keyspace::Mail, &seq_key, "capture seq")?
        .unwrap_or(CaptureSeq { first: 1, next: 1 });
    let id = seq.next.max(1);
    let mail = CapturedMail {
        id,
        captured_ms: now_ms,
        message: message.clone(),
    };
    txn.put_encoded(
        Keyspace::Mail,
        keys::captured_mail_key(app, id),
        &mail,
        "captured mail",
    )?;
    seq.next = id + 1;
    // Keep the newest `captured_max` (at least the one just captured).
    let keep = u64::from(captured_max.max(1));
    while seq.next - seq.first > keep {
        txn.delete(Keyspace::Mail, keys::captured_mail_key(app, seq.first));
        seq.first += 1;
    }
    txn.put_encoded(Keyspace::Mail, seq_key, &seq, "capture seq")?;
    Ok(Ok(CommandResult::TriggerFired { id: Some(id) }))
}

#[cfg(test)]
mod tests;
