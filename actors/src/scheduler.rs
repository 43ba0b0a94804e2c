//! The cron scheduler: on the leader, proposes `FireCron{trigger, slot}` for
//! every due slot of every deployed cron trigger. `apply` ignores a slot at
//! or before the trigger's last fired one, so two leaders (an old one that
//! has not noticed yet) can never fire a slot twice.
//!
//! The decision is [`plan_cron`], a pure function of (the deployed cron
//! triggers with their last fired slot, now, limits) → fires; the duty
//! ([`duty`], supervised as `cron`) only reads state, calls it and proposes.
//! The schedule is rebuilt from replicated state on every pass: the last
//! fired slot (or, for a trigger that never fired, its deploy time) and the
//! trigger's misfire policy decide what is due (see [`crate::cron`]). A slot
//! more than `misfire_grace_ms` old is missed: `skip` drops it, `fire_once`
//! fires the latest missed one once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use picloud_cluster::{Duty, Node};
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

/// One deployed cron trigger as the planner sees it.
#[derive(Debug, Clone)]
pub struct CronView<'a> {
    pub app: &'a str,
    pub trigger: &'a str,
    pub schedule: &'a Schedule,
    pub misfire: Misfire,
    /// The last fired slot, or the deploy time of a trigger never fired.
    pub last_ms: u64,
}

/// One slot to fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronFire {
    pub app: String,
    pub trigger: String,
    pub slot_ms: u64,
}

/// What a pass does: the fires in order, the slots it let go, and when the
/// next slot of any trigger is due.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CronPlan {
    pub fires: Vec<CronFire>,
    /// (app, trigger, slots missed) for every trigger that missed some.
    pub missed: Vec<(String, String, u64)>,
    pub next_ms: Option<u64>,
}

/// The pure decision of a scheduler pass.
pub fn plan_cron(triggers: &[CronView<'_>], now_ms: u64, limits: &ScheduleLimits) -> CronPlan {
    let mut plan = CronPlan::default();
    for view in triggers {
        let due = view.schedule.due(
            view.last_ms as i64,
            now_ms as i64,
            limits.misfire_grace_ms as i64,
            view.misfire,
        );
        if due.skipped > 0 {
            plan.missed
                .push((view.app.to_string(), view.trigger.to_string(), due.skipped));
        }
        let fired_up_to = due.fire.last().copied().unwrap_or(view.last_ms as i64);
        plan.fires.extend(due.fire.into_iter().map(|slot| CronFire {
            app: view.app.to_string(),
            trigger: view.trigger.to_string(),
            slot_ms: slot as u64,
        }));
        let next = view
            .schedule
            .next_after(fired_up_to.max(now_ms as i64))
            .map(|slot| slot as u64);
        plan.next_ms = match (plan.next_ms, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    plan
}

/// Parsed schedules by (app, trigger, schedule, timezone), kept across
/// passes and across restarts of the duty.
type ParsedSchedules = HashMap<(String, String, String, String), Schedule>;

/// The scheduler as a supervised duty (`cron`). It runs on the current
/// runtime: it only proposes fires.
pub fn duty(node: Node, limits: ScheduleLimits) -> Duty {
    let parsed: Arc<Mutex<ParsedSchedules>> = Arc::default();
    Duty::new("cron", move || run(node.clone(), limits, parsed.clone()))
}

async fn run(node: Node, limits: ScheduleLimits, parsed: Arc<Mutex<ParsedSchedules>>) {
    loop {
        picloud_cluster::fault_point("cron");
        let wait = match pass(&node, &limits, &parsed).await {
            Ok(Some(next_ms)) => next_ms.saturating_sub(now_ms()).min(limits.pass_max_ms),
            Ok(None) => limits.pass_max_ms,
            Err(error) => {
                tracing::warn!(%error, "cron scheduler pass failed");
                limits.pass_max_ms
            }
        };
        tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
    }
}

/// One deployed cron trigger read from state, before planning.
struct CronTrigger {
    app: String,
    trigger: String,
    key: (String, String, String, String),
    misfire: Misfire,
    last_ms: u64,
}

/// Reads what the planner needs, plans, and proposes the fires; returns the
/// earliest next slot, if any.
async fn pass(
    node: &Node,
    limits: &ScheduleLimits,
    parsed: &Mutex<ParsedSchedules>,
) -> Result<Option<u64>, String> {
    if !node.status().role.is_leader() {
        return Ok(None);
    }
    let triggers = cron_triggers(node)?;
    let plan = {
        let mut parsed = parsed.lock().unwrap_or_else(|e| e.into_inner());
        // Redeploys with new schedules leave old entries behind: start over
        // rather than grow without bound.
        if parsed.len() > PARSED_SCHEDULES_MAX {
            parsed.clear();
        }
        for trigger in &triggers {
            if !parsed.contains_key(&trigger.key) {
                let (_, _, expr, timezone) = &trigger.key;
                let schedule = Schedule::parse(expr, timezone).map_err(|e| e.to_string())?;
                parsed.insert(trigger.key.clone(), schedule);
            }
        }
        let views: Vec<CronView<'_>> = triggers
            .iter()
            .filter_map(|trigger| {
                Some(CronView {
                    app: &trigger.app,
                    trigger: &trigger.trigger,
                    schedule: parsed.get(&trigger.key)?,
                    misfire: trigger.misfire,
                    last_ms: trigger.last_ms,
                })
            })
            .collect();
        plan_cron(&views, now_ms(), limits)
    };
    for (app, trigger, skipped) in &plan.missed {
        tracing::info!(app, trigger, skipped, "cron slots missed");
    }
    for fire in plan.fires {
        let command = Command::FireCron {
            app: fire.app.clone(),
            trigger: fire.trigger.clone(),
            slot_ms: fire.slot_ms,
            now_ms: now_ms(),
        };
        match node.write(command).await {
            Ok(CommandResult::TriggerFired { .. }) => {}
            Ok(other) => tracing::warn!(
                app = fire.app,
                trigger = fire.trigger,
                ?other,
                "cron fire refused"
            ),
            Err(error) => {
                return Err(format!("firing {}/{}: {error}", fire.app, fire.trigger));
            }
        }
    }
    Ok(plan.next_ms)
}

/// Every deployed cron trigger with its last fired slot (or deploy time).
fn cron_triggers(node: &Node) -> Result<Vec<CronTrigger>, String> {
    let reader = node.reader();
    let mut found = Vec::new();
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
            let last_ms = match reader
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
            found.push(CronTrigger {
                app: app.name.clone(),
                trigger: trigger.name.clone(),
                key: (
                    app.name.clone(),
                    trigger.name.clone(),
                    schedule.clone(),
                    timezone.clone(),
                ),
                misfire: if *fire_once {
                    Misfire::FireOnce
                } else {
                    Misfire::Skip
                },
                last_ms,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        text.parse::<jiff::Timestamp>()
            .expect("timestamp")
            .as_millisecond() as u64
    }

    fn fires(plan: &CronPlan) -> Vec<(&str, u64)> {
        plan.fires
            .iter()
            .map(|fire| (fire.trigger.as_str(), fire.slot_ms))
            .collect()
    }

    /// (case, triggers, now, expected fires, expected next slot)
    type Case<'a> = (
        &'a str,
        Vec<CronView<'a>>,
        u64,
        Vec<(&'a str, u64)>,
        Option<u64>,
    );

    const LIMITS: ScheduleLimits = ScheduleLimits {
        pass_max_ms: 250,
        misfire_grace_ms: 1_000,
    };

    #[test]
    fn due_slots_fire_in_order_and_the_next_slot_is_the_earliest() {
        let every_second = Schedule::parse("@every 1s", "UTC").expect("parse");
        let every_five = Schedule::parse("@every 5s", "UTC").expect("parse");
        let view = |trigger, schedule, last_ms| CronView {
            app: "a",
            trigger,
            schedule,
            misfire: Misfire::Skip,
            last_ms,
        };
        let cases: Vec<Case<'_>> = vec![
            (
                "nothing due",
                vec![view("s", &every_second, 10_000)],
                10_500,
                vec![],
                Some(11_000),
            ),
            (
                "one due on time",
                vec![view("s", &every_second, 10_000)],
                11_200,
                vec![("s", 11_000)],
                Some(12_000),
            ),
            (
                "two triggers, the earliest next wins",
                vec![
                    view("s", &every_second, 10_000),
                    view("f", &every_five, 10_000),
                ],
                11_100,
                vec![("s", 11_000)],
                Some(12_000),
            ),
            (
                "a slow trigger due, a fast one not",
                vec![
                    view("s", &every_second, 15_000),
                    view("f", &every_five, 10_000),
                ],
                15_400,
                vec![("f", 15_000)],
                Some(16_000),
            ),
            ("no triggers", vec![], 1_000, vec![], None),
        ];
        for (case, triggers, now, expected, next) in cases {
            let plan = plan_cron(&triggers, now, &LIMITS);
            assert_eq!(fires(&plan), expected, "{case}");
            assert_eq!(plan.next_ms, next, "{case}");
        }
    }

    #[test]
    fn misfire_grace_decides_between_skip_and_fire_once() {
        let every_second = Schedule::parse("@every 1s", "UTC").expect("parse");
        let view = |misfire| CronView {
            app: "a",
            trigger: "t",
            schedule: &every_second,
            misfire,
            last_ms: 10_000,
        };
        // Back at 14.3 s after firing 10 s: 11, 12, 13 are older than the
        // grace; 14 is on time.
        let skip = plan_cron(&[view(Misfire::Skip)], 14_300, &LIMITS);
        assert_eq!(fires(&skip), [("t", 14_000)]);
        assert_eq!(skip.missed, [("a".to_string(), "t".to_string(), 3)]);
        let once = plan_cron(&[view(Misfire::FireOnce)], 14_300, &LIMITS);
        assert_eq!(fires(&once), [("t", 13_000), ("t", 14_000)]);
        assert_eq!(once.missed, [("a".to_string(), "t".to_string(), 2)]);
        // Within the grace nothing is missed.
        let on_time = plan_cron(&[view(Misfire::Skip)], 11_900, &LIMITS);
        assert_eq!(fires(&on_time), [("t", 11_000)]);
        assert!(on_time.missed.is_empty());
        // A wider grace turns the missed slots into on-time ones.
        let wide = ScheduleLimits {
            misfire_grace_ms: 10_000,
            ..LIMITS
        };
        let caught_up = plan_cron(&[view(Misfire::Skip)], 14_300, &wide);
        assert_eq!(
            fires(&caught_up),
            [("t", 11_000), ("t", 12_000), ("t", 13_000), ("t", 14_000)]
        );
    }

    #[test]
    fn a_new_leader_fires_only_after_the_last_fired_slot() {
        // The old leader fired 12 s and died; the new one plans at 12.5 s
        // from the replicated last slot and fires nothing twice.
        let every_second = Schedule::parse("@every 1s", "UTC").expect("parse");
        let view = CronView {
            app: "a",
            trigger: "t",
            schedule: &every_second,
            misfire: Misfire::Skip,
            last_ms: 12_000,
        };
        let plan = plan_cron(std::slice::from_ref(&view), 12_500, &LIMITS);
        assert!(plan.fires.is_empty());
        assert_eq!(plan.next_ms, Some(13_000));
        let plan = plan_cron(&[view], 13_050, &LIMITS);
        assert_eq!(fires(&plan), [("t", 13_000)]);
    }

    #[test]
    fn dst_changes_fire_each_wall_clock_time_once() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST. "30 2 * * *"
        // has no 02:30 that day; it runs once at the jump (01:00 UTC).
        let nightly = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("parse");
        let view = CronView {
            app: "a",
            trigger: "nightly",
            schedule: &nightly,
            misfire: Misfire::Skip,
            last_ms: ms("2026-03-28T01:30:00Z"),
        };
        let plan = plan_cron(
            std::slice::from_ref(&view),
            ms("2026-03-29T01:00:00.200Z"),
            &LIMITS,
        );
        assert_eq!(fires(&plan), [("nightly", ms("2026-03-29T01:00:00Z"))]);
        // Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30
        // happens twice on the wall clock and fires once (the first).
        let view = CronView {
            last_ms: ms("2026-10-24T00:30:00Z"),
            ..view
        };
        let first = plan_cron(
            std::slice::from_ref(&view),
            ms("2026-10-25T00:30:00.100Z"),
            &LIMITS,
        );
        assert_eq!(fires(&first), [("nightly", ms("2026-10-25T00:30:00Z"))]);
        let view = CronView {
            last_ms: ms("2026-10-25T00:30:00Z"),
            ..view
        };
        let second = plan_cron(
            std::slice::from_ref(&view),
            ms("2026-10-25T01:30:00.100Z"),
            &LIMITS,
        );
        assert!(second.fires.is_empty(), "{second:?}");
        assert_eq!(second.next_ms, Some(ms("2026-10-26T01:30:00Z")));
    }
}
