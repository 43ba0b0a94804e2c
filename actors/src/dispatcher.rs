//! The trigger dispatcher: on the leader, claims due runs from the outbox
//! under the current term, runs each run's script in its app's runtime (a VM
//! of the app's pool, its writes buffered by the VM's [`RunHost`] layer),
//! and commits `CompleteRun` (with the run's buffered writes) or `FailRun`.
//! An `@email` entry runs no script: the node's `Mailer` sends it, and
//! `mail_report` turns the relay's answer into `CompleteRun`, `FailRun`
//! or an immediate `Bounce` (see `crate::email`).
//!
//! ```text
//!  outbox (replicated) ──scan──▶ plan_claims ──▶ ClaimRuns{ids, term} ──▶ AppRuntime::run_event
//!        ▲                                                                  │
//!        └──── CompleteRun{ops, docs, publishes} | FailRun{error} ◀────────────────────┘ (guarded by the claim in apply)
//! ```
//!
//! Which runs to claim is [`plan_claims`], a pure function of (the app's
//! outbox, what runs here, term, now, free slots, limits); the duty
//! ([`duty`], supervised as `triggers`) reads state, calls it and proposes.
//! A leader that dies mid-run leaves its claims behind; the next leader (a
//! higher term) claims them again and re-runs them, and `apply` rejects the
//! old claimer's late report. Runs are bounded per node (`runs_inflight_max`).
//! A run that panics is reported failed (retried, then dead-lettered) and
//! frees its slot.
//!
//! [`RunHost`]: crate::run_host::RunHost

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use picloud_cluster::{Duty, Node};
use picloud_storage::email::EmailCommand;
use picloud_storage::triggers::{OutboxEntry, TriggerEvent, delivery_id};
use picloud_storage::{ApplyError, Command, CommandResult};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ActorLimits;
use crate::cpu::CpuShares;
use crate::email::{Delivery, Mailer};
use crate::host::now_ms;
use crate::run_host::RunWrites;
use crate::supervisor::Apps;

/// Bounds and timings of the dispatcher, each with its default.
#[derive(Debug, Clone, Copy)]
pub struct DispatchLimits {
    /// Trigger runs executing at once on this node.
    pub runs_inflight_max: usize,
    /// Runs examined per app per scan.
    pub scan_batch_max: usize,
    /// Pause between scans when the last one found nothing to do.
    pub idle_scan_ms: u64,
    /// Pause between scans while there is work.
    pub busy_scan_ms: u64,
    /// A claim older than this may be taken again by the same term (a run
    /// whose dispatcher lost track of it).
    pub reclaim_after_ms: u64,
}

impl Default for DispatchLimits {
    fn default() -> Self {
        DispatchLimits {
            runs_inflight_max: 64,
            scan_batch_max: 256,
            idle_scan_ms: 50,
            busy_scan_ms: 2,
            reclaim_after_ms: 60_000,
        }
    }
}

/// Counters of this node's dispatcher, for `/_/metrics`.
#[derive(Debug, Default)]
pub struct DispatcherStats {
    /// Runs executing now.
    pub runs_inflight: AtomicU64,
    /// Runs this node completed (their writes committed).
    pub runs_completed: AtomicU64,
    /// Runs this node reported failed (retried or dead-lettered).
    pub runs_failed: AtomicU64,
}

/// The pure decision of a scan for one app: the outbox entries to claim
/// now, in outbox order. An entry is claimable when it is due
/// (`not_before_ms`, the retry backoff), not running on this node, and
/// unclaimed, claimed under an older term (its leader is gone), or claimed
/// longer than `reclaim_after_ms` ago (its run was lost). At most `free`.
pub fn plan_claims(
    entries: &[OutboxEntry],
    running: &dyn Fn(u64) -> bool,
    term: u64,
    now_ms: u64,
    free: usize,
    reclaim_after_ms: u64,
) -> Vec<u64> {
    entries
        .iter()
        .filter(|entry| entry.not_before_ms <= now_ms)
        .filter(|entry| !running(entry.id))
        .filter(|entry| match &entry.claim {
            None => true,
            Some(claim) => {
                claim.term < term || now_ms.saturating_sub(claim.at_ms) >= reclaim_after_ms
            }
        })
        .map(|entry| entry.id)
        .take(free)
        .collect()
}

struct Shared {
    node: Node,
    apps: Apps,
    limits: Arc<ActorLimits>,
    dispatch: DispatchLimits,
    /// Runs executing on this node (by app and id), so a scan does not claim
    /// them again while they run.
    running: Mutex<HashSet<(String, u64)>>,
    permits: Arc<Semaphore>,
    stats: Arc<DispatcherStats>,
    shares: Arc<CpuShares>,
    /// Delivers `@email` entries (`None`: they fail and are retried, so a
    /// node without a relay leaves them to one that has).
    mailer: Option<Arc<Mailer>>,
}

/// The dispatcher as a supervised duty (`triggers`). Give it the script
/// runtime ([`Duty::on`]): runs execute scripts there, like requests. What
/// runs survives a restart of the duty (the running set and the slots are
/// shared), so a restarted scan never claims a run twice.
pub fn duty(
    node: Node,
    apps: Apps,
    limits: Arc<ActorLimits>,
    dispatch: DispatchLimits,
    stats: Arc<DispatcherStats>,
    shares: Arc<CpuShares>,
    mailer: Option<Arc<Mailer>>,
) -> Duty {
    let shared = Arc::new(Shared {
        mailer,
        stats,
        shares,
        permits: Arc::new(Semaphore::new(dispatch.runs_inflight_max.max(1))),
        node,
        apps,
        limits,
        dispatch,
        running: Mutex::new(HashSet::new()),
    });
    Duty::new("triggers", move || scan_forever(shared.clone()))
}

async fn scan_forever(shared: Arc<Shared>) {
    loop {
        picloud_cluster::fault_point("triggers");
        let busy = match scan(&shared).await {
            Ok(busy) => busy,
            Err(error) => {
                tracing::warn!(%error, "trigger dispatcher scan failed");
                false
            }
        };
        let pause = if busy {
            shared.dispatch.busy_scan_ms
        } else {
            shared.dispatch.idle_scan_ms
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// One pass over every app's outbox; whether anything was claimed.
async fn scan(shared: &Arc<Shared>) -> Result<bool, String> {
    let status = shared.node.status();
    if !status.role.is_leader() {
        return Ok(false);
    }
    let term = status.term;
    let reader = shared.node.reader();
    let mut claimed_any = false;
    for app in reader.apps().map_err(|e| e.to_string())? {
        let app = app.name;
        if reader.outbox_len(&app).map_err(|e| e.to_string())? == 0 {
            continue;
        }
        let free = shared.permits.available_permits();
        if free == 0 {
            return Ok(true);
        }
        let now = now_ms();
        let entries = reader
            .outbox(&app, 0, shared.dispatch.scan_batch_max)
            .map_err(|e| e.to_string())?;
        let ids = {
            let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
            // One app's runs at once: at most its VM pool, so a claimed run
            // waits for a VM only behind the app's requests.
            let app_running = running.iter().filter(|(other, _)| *other == app).count();
            let free = free.min(
                shared
                    .limits
                    .vm_pool_size_max
                    .max(1)
                    .saturating_sub(app_running),
            );
            let is_running = |id: u64| running.contains(&(app.clone(), id));
            plan_claims(
                &entries,
                &is_running,
                term,
                now,
                free,
                shared.dispatch.reclaim_after_ms,
            )
        };
        if ids.is_empty() {
            continue;
        }
        let claim = Command::ClaimRuns {
            app: app.clone(),
            ids,
            term,
            node: shared.node.id(),
            now_ms: now,
            reclaim_after_ms: shared.dispatch.reclaim_after_ms,
        };
        let (ids, claim_ms) = match shared.node.write(claim).await {
            Ok(CommandResult::RunsClaimed { ids, claim_ms }) => (ids, claim_ms),
            Ok(other) => return Err(format!("unexpected claim result {other:?}")),
            Err(error) => return Err(format!("claiming runs of {app}: {error}")),
        };
        for entry in entries.into_iter().filter(|entry| ids.contains(&entry.id)) {
            let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
                // Claimed but no slot: the claim lapses (reclaim_after_ms)
                // or the next term takes it; normally unreachable (take(free)).
                break;
            };
            claimed_any = true;
            let slot = RunSlot::take(shared, &app, entry.id, permit);
            let shared = shared.clone();
            let app = app.clone();
            tokio::spawn(async move {
                run(&shared, &app, entry, term, claim_ms).await;
                drop(slot);
            });
        }
    }
    Ok(claimed_any)
}

/// A run's place on this node: its permit, its entry in the running set and
/// the in-flight count, all given back when the slot drops — also when the
/// run's task unwinds from a panic.
struct RunSlot {
    shared: Arc<Shared>,
    key: (String, u64),
    _permit: OwnedSemaphorePermit,
}

impl RunSlot {
    fn take(shared: &Arc<Shared>, app: &str, id: u64, permit: OwnedSemaphorePermit) -> RunSlot {
        let key = (app.to_string(), id);
        shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        shared.stats.runs_inflight.fetch_add(1, Ordering::Relaxed);
        RunSlot {
            shared: shared.clone(),
            key,
            _permit: permit,
        }
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        self.shared
            .stats
            .runs_inflight
            .fetch_sub(1, Ordering::Relaxed);
        self.shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// Runs one claimed entry and reports the outcome through the log.
async fn run(shared: &Arc<Shared>, app: &str, entry: OutboxEntry, term: u64, claim_ms: u64) {
    if let TriggerEvent::Email { message, .. } = &entry.event {
        let delivery = match &shared.mailer {
            Some(mailer) => mailer.deliver(&delivery_id(app, entry.id), message).await,
            None => Delivery::Transient("this node has no mailer".into()),
        };
        let report = mail_report(app, entry.id, (term, claim_ms), delivery, now_ms());
        report_run(shared, app, entry.id, report).await;
        return;
    }
    let id = entry.id;
    // The run shares its app's CPU share with the app's requests.
    let deadline = tokio::time::Instant::now() + shared.limits.invocation_deadline();
    let execution = AssertUnwindSafe(execute(shared, app, &entry)).catch_unwind();
    let outcome = match shared.shares.run(app, deadline, execution).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_panic)) => {
            tracing::error!(app, id, "a trigger run panicked; it is reported failed");
            Err("the run ended abnormally (internal error); it will be retried".to_string())
        }
        Err(timeout) => Err(format!("{timeout} (script_timeout)")),
    };
    let counter = match &outcome {
        Ok(_) => &shared.stats.runs_completed,
        Err(_) => &shared.stats.runs_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let report = match outcome {
        Ok(writes) => Command::CompleteRun {
            app: app.to_string(),
            id,
            term,
            claim_ms,
            ops: writes.kv,
            docs: writes.docs,
            publishes: writes.publishes,
            now_ms: now_ms(),
        },
        Err(error) => Command::FailRun {
            app: app.to_string(),
            id,
            term,
            claim_ms,
            error,
            now_ms: now_ms(),
        },
    };
    report_run(shared, app, id, report).await;
}

/// The report of a mail's delivery: sent → `CompleteRun` with no writes,
/// a transient failure → `FailRun` (backoff, then a dead letter), a
/// permanent one → `Bounce` (a dead letter at once, with the reply).
fn mail_report(
    app: &str,
    id: u64,
    (term, claim_ms): (u64, u64),
    delivery: Delivery,
    now_ms: u64,
) -> Command {
    match delivery {
        Delivery::Sent => Command::CompleteRun {
            app: app.to_string(),
            id,
            term,
            claim_ms,
            ops: Vec::new(),
            docs: Vec::new(),
            publishes: Vec::new(),
            now_ms,
        },
        Delivery::Transient(error) => Command::FailRun {
            app: app.to_string(),
            id,
            term,
            claim_ms,
            error,
            now_ms,
        },
        Delivery::Permanent(reply) => Command::Email(EmailCommand::Bounce {
            app: app.to_string(),
            id,
            term,
            claim_ms,
            reply,
            now_ms,
        }),
    }
}

/// Proposes a run's report; a stale claim means a newer leader took it.
async fn report_run(shared: &Arc<Shared>, app: &str, id: u64, report: Command) {
    match shared.node.write(report).await {
        Ok(CommandResult::Run(outcome)) => {
            tracing::debug!(app, id, ?outcome, "trigger run reported");
        }
        Ok(CommandResult::Rejected(ApplyError::StaleClaim { .. })) => {
            tracing::info!(
                app,
                id,
                "trigger run superseded by a newer claim; its result is dropped"
            );
        }
        Ok(other) => tracing::warn!(app, id, ?other, "unexpected trigger report result"),
        // Not reported: the claim stays; the next term (or the reclaim
        // timeout) runs it again. Its writes were not applied.
        Err(error) => tracing::warn!(app, id, %error, "could not report a trigger run"),
    }
}

/// Runs the entry's script in its app's runtime; its buffered writes on
/// success, the error text (as the script author should read it) on failure.
async fn execute(
    shared: &Arc<Shared>,
    app: &str,
    entry: &OutboxEntry,
) -> Result<RunWrites, String> {
    let set = shared
        .node
        .reader()
        .trigger_set(app)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let trigger = set
        .triggers
        .iter()
        .find(|def| def.name == entry.trigger)
        .ok_or_else(|| format!("trigger {} is not in the deployed version", entry.trigger))?;
    let runtime = shared.apps.runtime(app).await.map_err(|e| e.to_string())?;
    let event = event_json(&entry.event);
    let ctx = json!({
        "app": app,
        "trigger": entry.trigger,
        "delivery_id": delivery_id(app, entry.id),
        "attempt": entry.attempts.len() + 1,
    });
    runtime
        .run_event(&trigger.script, &event, &ctx, entry.depth)
        .await
        .map_err(|error| match error {
            crate::error::AppError::Invoke(error) => error.to_string(),
            other => other.to_string(),
        })
}

/// The `event` table a trigger script receives (also how the admin API
/// shows a dead letter's event).
pub fn event_json(event: &TriggerEvent) -> Value {
    // An absent value is left out (nil in Lua), not JSON null.
    let value = |bytes: &Option<Vec<u8>>| {
        bytes
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
    };
    let with_values = |mut event: Value, old: &Option<Vec<u8>>, new: &Option<Vec<u8>>| {
        if let Some(old) = value(old) {
            event["old"] = old;
        }
        if let Some(new) = value(new) {
            event["new"] = new;
        }
        event
    };
    match event {
        TriggerEvent::Kv { key, old, new } => with_values(
            json!({
                "kind": "kv",
                "key": key,
                "op": if new.is_some() { "set" } else { "delete" },
            }),
            old,
            new,
        ),
        TriggerEvent::Docs {
            collection,
            id,
            op,
            old,
            new,
        } => with_values(
            json!({"kind": "docs", "collection": collection, "id": id, "op": op}),
            old,
            new,
        ),
        TriggerEvent::Cron { slot_ms } => json!({
            "kind": "cron",
            "scheduled_ms": slot_ms,
        }),
        TriggerEvent::Pubsub {
            topic,
            message,
            epoch,
            seq,
        } => {
            let mut event = json!({
                "kind": "pubsub",
                "topic": topic,
                "id": format!("{epoch}-{seq}"),
            });
            if let Ok(message) = serde_json::from_slice::<Value>(message) {
                event["message"] = message;
            }
            event
        }
        TriggerEvent::Files {
            path,
            op,
            size,
            etag,
            content_type,
        } => json!({
            "kind": "files",
            "op": op,
            "path": path,
            "size": size,
            "etag": etag,
            "content_type": content_type,
        }),
        TriggerEvent::EmailReceived { recipient, message } => email_event_json(recipient, message),
        TriggerEvent::DeadLetter {
            trigger,
            delivery_id,
            code,
            error,
        } => json!({
            "kind": "dead_letter",
            "trigger": trigger,
            "delivery_id": delivery_id,
            "code": code,
            "error": error,
        }),
        // What the dead-letters API shows of a mail: its envelope and
        // subject, not its bodies or attachments.
        TriggerEvent::Email { message, .. } => json!({
            "kind": "email",
            "from": message.from,
            "to": message.to,
            "cc": message.cc,
            "bcc": message.bcc,
            "subject": message.subject,
            "attachments": message.attachments.len(),
        }),
    }
}

/// The `event` of an `email` trigger run. Attachments carry `data`
/// (base64, `encoding = "base64"`: JSON strings cannot hold arbitrary
/// bytes; `base64.decode` gives them back) or, for one stored as a file,
/// its `path`. An absent text or html part is left out (nil in Lua).
fn email_event_json(
    recipient: &str,
    message: &picloud_storage::inbound_mail::InboundMessage,
) -> Value {
    use base64::Engine as _;
    use picloud_storage::inbound_mail::AttachmentBody;
    let attachments: Vec<Value> = message
        .attachments
        .iter()
        .map(|attachment| {
            let mut value = json!({
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.size,
            });
            match &attachment.body {
                AttachmentBody::Inline(bytes) => {
                    value["data"] = base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .into();
                    value["encoding"] = "base64".into();
                }
                AttachmentBody::File { path } => value["path"] = path.as_str().into(),
            }
            value
        })
        .collect();
    let headers: Vec<Value> = message
        .headers
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let mut event = json!({
        "kind": "email",
        "recipient": recipient,
        "message_id": message.message_id,
        "from": message.from,
        "to": message.to,
        "subject": message.subject,
        "headers": headers,
        "attachments": attachments,
    });
    if let Some(text) = &message.text {
        event["text"] = text.as_str().into();
    }
    if let Some(html) = &message.html {
        event["html"] = html.as_str().into();
    }
    event
}

#[cfg(test)]
mod tests {
    use picloud_storage::triggers::Claim;

    use super::*;

    #[test]
    fn email_delivery_reports_complete_fail_or_bounce() {
        let report = |delivery| mail_report("shop", 7, (3, 40), delivery, 50);
        assert!(matches!(
            report(Delivery::Sent),
            Command::CompleteRun { id: 7, term: 3, claim_ms: 40, ref ops, .. } if ops.is_empty()
        ));
        assert!(matches!(
            report(Delivery::Transient("451 later".into())),
            Command::FailRun { ref error, .. } if error == "451 later"
        ));
        assert!(matches!(
            report(Delivery::Permanent("550 no".into())),
            Command::Email(EmailCommand::Bounce { ref reply, id: 7, .. }) if reply == "550 no"
        ));
    }

    const RECLAIM_MS: u64 = 60_000;

    /// (case, outbox, running, term, now, free slots, expected ids)
    type Case<'a> = (
        &'a str,
        Vec<OutboxEntry>,
        &'a dyn Fn(u64) -> bool,
        u64,
        u64,
        usize,
        Vec<u64>,
    );

    fn entry(id: u64, not_before_ms: u64, claim: Option<(u64, u64)>) -> OutboxEntry {
        OutboxEntry {
            id,
            trigger: "t".to_string(),
            event: TriggerEvent::Cron { slot_ms: 0 },
            depth: 1,
            created_ms: 0,
            attempts: Vec::new(),
            not_before_ms,
            claim: claim.map(|(term, at_ms)| Claim {
                term,
                node: 1,
                at_ms,
            }),
        }
    }

    #[test]
    fn claims_follow_term_backoff_running_and_the_slot_cap() {
        let nothing_runs = |_: u64| false;
        let two_runs = |id: u64| id == 2;
        let cases: Vec<Case<'_>> = vec![
            (
                "unclaimed and due",
                vec![entry(1, 0, None), entry(2, 0, None)],
                &nothing_runs,
                3,
                1_000,
                8,
                vec![1, 2],
            ),
            (
                "retry backoff not over",
                vec![entry(1, 5_000, None), entry(2, 0, None)],
                &nothing_runs,
                3,
                1_000,
                8,
                vec![2],
            ),
            (
                "backoff over at exactly not_before",
                vec![entry(1, 1_000, None)],
                &nothing_runs,
                3,
                1_000,
                8,
                vec![1],
            ),
            (
                "running here is never claimed twice",
                vec![entry(1, 0, None), entry(2, 0, None)],
                &two_runs,
                3,
                1_000,
                8,
                vec![1],
            ),
            (
                "claimed this term, recently: someone runs it",
                vec![entry(1, 0, Some((3, 900)))],
                &nothing_runs,
                3,
                1_000,
                8,
                vec![],
            ),
            (
                "leader change mid-run: an older term's claim is taken over",
                vec![entry(1, 0, Some((2, 900)))],
                &nothing_runs,
                3,
                1_000,
                8,
                vec![1],
            ),
            (
                "reclaim after reclaim_after_ms in the same term",
                vec![entry(1, 0, Some((3, 1_000)))],
                &nothing_runs,
                3,
                1_000 + RECLAIM_MS,
                8,
                vec![1],
            ),
            (
                "one ms before the reclaim time: still held",
                vec![entry(1, 0, Some((3, 1_000)))],
                &nothing_runs,
                3,
                RECLAIM_MS + 999,
                8,
                vec![],
            ),
            (
                "the in-flight cap takes the oldest first",
                vec![entry(1, 0, None), entry(2, 0, None), entry(3, 0, None)],
                &nothing_runs,
                3,
                1_000,
                2,
                vec![1, 2],
            ),
            (
                "no free slot, no claim",
                vec![entry(1, 0, None)],
                &nothing_runs,
                3,
                1_000,
                0,
                vec![],
            ),
        ];
        for (case, outbox, running, term, now, free, expected) in cases {
            assert_eq!(
                plan_claims(&outbox, running, term, now, free, RECLAIM_MS),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn an_email_event_carries_small_attachments_as_base64_and_large_ones_by_path() {
        use picloud_storage::inbound_mail::{AttachmentBody, InboundMessage, MailAttachment};
        let attachment = |filename: &str, body| MailAttachment {
            filename: filename.into(),
            content_type: "text/plain".into(),
            size: 2,
            body,
        };
        let event = TriggerEvent::EmailReceived {
            recipient: "orders@shop.example.org".into(),
            message: InboundMessage {
                message_id: "<1@x>".into(),
                from: "bob@x".into(),
                to: vec!["orders@shop.example.org".into()],
                subject: "hi".into(),
                text: Some("hello".into()),
                html: None,
                headers: vec![("Subject".into(), "hi".into())],
                attachments: vec![
                    attachment("a.txt", AttachmentBody::Inline(b"hi".to_vec())),
                    attachment(
                        "b.txt",
                        AttachmentBody::File {
                            path: "mail/x/2-b.txt".into(),
                        },
                    ),
                ],
            },
        };
        assert_eq!(
            event_json(&event),
            json!({
                "kind": "email",
                "recipient": "orders@shop.example.org",
                "message_id": "<1@x>",
                "from": "bob@x",
                "to": ["orders@shop.example.org"],
                "subject": "hi",
                "text": "hello",
                "headers": [{"name": "Subject", "value": "hi"}],
                "attachments": [
                    {"filename": "a.txt", "content_type": "text/plain", "size": 2,
                     "data": "aGk=", "encoding": "base64"},
                    {"filename": "b.txt", "content_type": "text/plain", "size": 2,
                     "path": "mail/x/2-b.txt"},
                ],
            })
        );
    }

    #[test]
    fn a_files_event_reaches_the_script_with_its_stat() {
        let event = TriggerEvent::Files {
            path: "uploads/cat.png".into(),
            op: "put".into(),
            size: 5,
            etag: "\"ab\"".into(),
            content_type: "image/png".into(),
        };
        assert_eq!(
            event_json(&event),
            json!({
                "kind": "files",
                "op": "put",
                "path": "uploads/cat.png",
                "size": 5,
                "etag": "\"ab\"",
                "content_type": "image/png",
            })
        );
    }
}
