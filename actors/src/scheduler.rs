//! The cron scheduler: on the leader, proposes `FireCron{trigger, slot}` for
//! every due slot of every deployed cron trigger. `apply` ignores a slot at
//! or before the trigger's last fired one, so two leaders (an old one that
//! has not noticed yet) can never fire a slot twice.
//!
//! The schedule is rebuilt from replicated state on every pass: the last
//! fired slot (or, for a trigger that never fired, its deploy time) and the
//! trigger's misfire policy decide what is due (see [`crate::cron`]). A slot
//! more than `misfire_grace_ms` old is missed: `skip` drops it, `fire_once`
//! fires the latest missed one once.

use std::collections::HashMap;
use std::time::Duration;

use picloud_cluster::Node;
use picloud_storage::triggers::TriggerDefKind;
use picloud_storage::{Command, CommandResult};

use crate::cron::{Misfire, Schedule};
use crate::host::now_ms;

/// Parsed schedules kept between passes.
const PARSED_SCHEDULES_MAX: usize = 4_096;

/// Timings of the scheduler, each with its default.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleLimits {
    /// Longest sleep between passes (picks up deploys and leadership).
    pub pass_max_ms: u64,
    /// A slot older than this when the scheduler gets to it is missed.
    pub misfire_grace_ms: u64,
}

impl Default for ScheduleLimits {
    fn default() -> Self {
        ScheduleLimits {
            pass_max_ms: 250,
            misfire_grace_ms: 1_000,
        }
    }
}

/// Starts the scheduler on the current runtime; it runs until the process ends.
pub fn spawn(node: Node, limits: ScheduleLimits) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Parsed schedules by (app, trigger, schedule, timezone).
        let mut parsed: HashMap<(String, String, String, String), Schedule> = HashMap::new();
        loop {
            let wait = match pass(&node, &limits, &mut parsed).await {
                Ok(Some(next_ms)) => next_ms.saturating_sub(now_ms()).min(limits.pass_max_ms),
                Ok(None) => limits.pass_max_ms,
                Err(error) => {
                    tracing::warn!(%error, "cron scheduler pass failed");
                    limits.pass_max_ms
                }
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    })
}

/// Fires what is due; returns the earliest next slot, if any.
async fn pass(
    node: &Node,
    limits: &ScheduleLimits,
    parsed: &mut HashMap<(String, String, String, String), Schedule>,
) -> Result<Option<u64>, String> {
    if !node.status().role.is_leader() {
        return Ok(None);
    }
    let reader = node.reader();
    let mut earliest: Option<u64> = None;
    for app in reader.apps().map_err(|e| e.to_string())? {
        let Some(version) = app.active_version else {
            continue;
        };
        let Some(set) = reader.trigger_set(&app.name).map_err(|e| e.to_string())? else {
            continue;
        };
        // Read only for apps that have a cron trigger.
        let mut deployed_ms: Option<u64> = None;
        for trigger in &set.triggers {
            let TriggerDefKind::Cron {
                schedule,
                timezone,
                fire_once,
            } = &trigger.kind
            else {
                continue;
            };
            let key = (
                app.name.clone(),
                trigger.name.clone(),
                schedule.clone(),
                timezone.clone(),
            );
            if !parsed.contains_key(&key) {
                let schedule = Schedule::parse(schedule, timezone).map_err(|e| e.to_string())?;
                parsed.insert(key.clone(), schedule);
            }
            let Some(schedule) = parsed.get(&key) else {
                continue;
            };
            let last = match reader
                .last_fired(&app.name, &trigger.name)
                .map_err(|e| e.to_string())?
            {
                Some(last) => last,
                None => match deployed_ms {
                    Some(ms) => ms,
                    None => {
                        let ms = reader
                            .deploys(&app.name)
                            .map_err(|e| e.to_string())?
                            .into_iter()
                            .find(|deploy| deploy.version == version)
                            .map_or(0, |deploy| deploy.created_ms);
                        *deployed_ms.insert(ms)
                    }
                },
            };
            let misfire = if *fire_once {
                Misfire::FireOnce
            } else {
                Misfire::Skip
            };
            let now = now_ms();
            let due = schedule.due(
                last as i64,
                now as i64,
                limits.misfire_grace_ms as i64,
                misfire,
            );
            if due.skipped > 0 {
                tracing::info!(
                    app = app.name,
                    trigger = trigger.name,
                    skipped = due.skipped,
                    ?misfire,
                    "cron slots missed"
                );
            }
            let mut fired_up_to = last as i64;
            for slot in due.fire {
                let command = Command::FireCron {
                    app: app.name.clone(),
                    trigger: trigger.name.clone(),
                    slot_ms: slot as u64,
                    now_ms: now_ms(),
                };
                match node.write(command).await {
                    Ok(CommandResult::TriggerFired { .. }) => fired_up_to = slot,
                    Ok(other) => tracing::warn!(
                        app = app.name,
                        trigger = trigger.name,
                        ?other,
                        "cron fire refused"
                    ),
                    Err(error) => {
                        return Err(format!("firing {}/{}: {error}", app.name, trigger.name));
                    }
                }
            }
            let next = schedule
                .next_after(fired_up_to.max(now as i64))
                .map(|slot| slot as u64);
            earliest = match (earliest, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    // Redeploys with new schedules leave old entries behind: start over
    // rather than grow without bound.
    if parsed.len() > PARSED_SCHEDULES_MAX {
        parsed.clear();
    }
    Ok(earliest)
}
