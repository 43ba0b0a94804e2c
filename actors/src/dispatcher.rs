//! The trigger dispatcher: on the leader, claims due runs from the outbox
//! under the current term, runs each run's script with a [`RunHost`], and
//! commits `CompleteRun` (with the run's buffered writes) or `FailRun`.
//!
//! ```text
//!  outbox (replicated) ──scan──▶ ClaimRuns{ids, term} ──▶ run script (RunHost buffers writes)
//!        ▲                                                   │
//!        └──── CompleteRun{ops} | FailRun{error} ◀───────────┘   (guarded by the claim in apply)
//! ```
//!
//! A leader that dies mid-run leaves its claims behind; the next leader (a
//! higher term) claims them again and re-runs them, and `apply` rejects the
//! old claimer's late report. Runs are bounded per node (`runs_inflight_max`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use picloud_cluster::Node;
use picloud_lua_sdk::Vm;
use picloud_storage::triggers::{OutboxEntry, TriggerEvent, delivery_id};
use picloud_storage::{ApplyError, Command, CommandResult};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::app::Bundle;
use crate::config::ActorLimits;
use crate::cpu::CpuShares;
use crate::host::{NodeHost, now_ms};
use crate::run_host::RunHost;

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
    /// Idle VMs kept per app version for trigger runs.
    pub vms_per_app_max: usize,
}

impl Default for DispatchLimits {
    fn default() -> Self {
        DispatchLimits {
            runs_inflight_max: 64,
            scan_batch_max: 256,
            idle_scan_ms: 50,
            busy_scan_ms: 2,
            reclaim_after_ms: 60_000,
            vms_per_app_max: 8,
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

type VmKey = (String, u64);

/// A VM for trigger runs and the host whose write buffer it fills.
type RunVm = (Vm, Arc<RunHost>);

/// Idle trigger VMs per (app, version), each with its own run host.
#[derive(Default)]
struct VmCache {
    idle: Mutex<HashMap<VmKey, Vec<RunVm>>>,
}

struct Shared {
    node: Node,
    host: Arc<NodeHost>,
    limits: Arc<ActorLimits>,
    dispatch: DispatchLimits,
    vms: VmCache,
    /// Runs executing on this node (by app and id), so a scan does not claim
    /// them again while they run.
    running: Mutex<HashSet<(String, u64)>>,
    permits: Arc<Semaphore>,
    stats: Arc<DispatcherStats>,
    shares: Arc<CpuShares>,
}

/// Starts the dispatcher on the current runtime (run it where scripts run,
/// not where Raft runs). It runs until the process ends.
pub fn spawn(
    node: Node,
    host: Arc<NodeHost>,
    limits: Arc<ActorLimits>,
    dispatch: DispatchLimits,
    stats: Arc<DispatcherStats>,
    shares: Arc<CpuShares>,
) {
    let shared = Arc::new(Shared {
        stats,
        shares,
        permits: Arc::new(Semaphore::new(dispatch.runs_inflight_max.max(1))),
        node,
        host,
        limits,
        dispatch,
        vms: VmCache::default(),
        running: Mutex::new(HashSet::new()),
    });
    tokio::spawn(async move {
        loop {
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
    });
}

/// One pass over every app's outbox; whether anything was claimed.
async fn scan(shared: &Arc<Shared>) -> Result<bool, String> {
    let status = shared.node.status();
    if status.role != "leader" {
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
        let ids: Vec<u64> = {
            let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .iter()
                .filter(|entry| entry.not_before_ms <= now)
                .filter(|entry| !running.contains(&(app.clone(), entry.id)))
                .filter(|entry| match &entry.claim {
                    None => true,
                    Some(claim) => {
                        claim.term < term
                            || now.saturating_sub(claim.at_ms) >= shared.dispatch.reclaim_after_ms
                    }
                })
                .map(|entry| entry.id)
                .take(free)
                .collect()
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
            shared
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((app.clone(), entry.id));
            let shared = shared.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let id = entry.id;
                shared.stats.runs_inflight.fetch_add(1, Ordering::Relaxed);
                run(&shared, &app, entry, term, claim_ms).await;
                shared.stats.runs_inflight.fetch_sub(1, Ordering::Relaxed);
                shared
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(app, id));
                drop(permit);
            });
        }
    }
    Ok(claimed_any)
}

/// Runs one claimed entry and reports the outcome through the log.
async fn run(shared: &Arc<Shared>, app: &str, entry: OutboxEntry, term: u64, claim_ms: u64) {
    let id = entry.id;
    // The run shares its app's CPU share with the app's requests.
    let deadline = tokio::time::Instant::now() + shared.limits.invocation_deadline();
    let outcome = shared
        .shares
        .run(app, deadline, execute(shared, app, &entry))
        .await
        .unwrap_or_else(|timeout| Err(format!("{timeout} (script_timeout)")));
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

/// Runs the entry's script; its buffered writes on success, the error text
/// (as the script author should read it) on failure.
async fn execute(
    shared: &Arc<Shared>,
    app: &str,
    entry: &OutboxEntry,
) -> Result<crate::run_host::RunWrites, String> {
    let reader = shared.node.reader();
    let record = reader
        .app(app)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("app {app} is gone"))?;
    let version = record
        .active_version
        .ok_or_else(|| format!("app {app} has no deployed version"))?;
    let set = reader
        .trigger_set(app)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let trigger = set
        .triggers
        .iter()
        .find(|def| def.name == entry.trigger)
        .ok_or_else(|| format!("trigger {} is not in the deployed version", entry.trigger))?;
    let (vm, run_host) = take_vm(shared, app, version)?;
    run_host.take_writes();
    let event = event_json(&entry.event);
    let ctx = json!({
        "app": app,
        "trigger": entry.trigger,
        "delivery_id": delivery_id(app, entry.id),
        "attempt": entry.attempts.len() + 1,
    });
    let outcome = vm.invoke_event(&trigger.script, &event, &ctx).await;
    let writes = run_host.take_writes();
    if vm.is_reusable() {
        give_back_vm(shared, app, version, vm, run_host);
    }
    outcome.map(|()| writes).map_err(|error| error.to_string())
}

fn take_vm(shared: &Arc<Shared>, app: &str, version: u64) -> Result<RunVm, String> {
    let key = (app.to_string(), version);
    if let Some(found) = shared
        .vms
        .idle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&key)
        .and_then(Vec::pop)
    {
        return Ok(found);
    }
    let bytes = shared
        .node
        .reader()
        .bundle(app, version)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("app {app} version {version} has no bundle"))?;
    let checked = Bundle::decode(&bytes)
        .and_then(|bundle| bundle.check())
        .map_err(|e| e.message)?;
    let run_host = Arc::new(RunHost::new(shared.host.clone()));
    let vm = crate::pool::off_workers(|| {
        Vm::with_modules(
            app,
            &checked.scripts,
            checked.modules.clone(),
            run_host.clone(),
            shared.limits.sandbox,
        )
    })
    .map_err(|e| e.to_string())?;
    Ok((vm, run_host))
}

fn give_back_vm(shared: &Arc<Shared>, app: &str, version: u64, vm: Vm, host: Arc<RunHost>) {
    let mut idle = shared.vms.idle.lock().unwrap_or_else(|e| e.into_inner());
    // Older versions' VMs are of no more use.
    idle.retain(|(other, other_version), _| other != app || *other_version == version);
    let slot = idle.entry((app.to_string(), version)).or_default();
    if slot.len() < shared.dispatch.vms_per_app_max {
        slot.push((vm, host));
    }
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
    }
}
