//! `DutySupervisor`: runs each long-running duty of the node (write batcher,
//! peer accept loop, membership upkeep, the leader's cron and trigger
//! duties, the HTTP accept loop, the applied-change feed) as a ractor actor,
//! and restarts it with backoff when it panics.
//!
//! ```text
//!   Duties::supervise(duty) ──▶ DutySupervisor ──spawn_linked──▶ DutyActor ──Run──▶ duty.start().await
//!                                     ▲                                 │ panic
//!                                     └──── ActorFailed (logged, counted in
//!                                           picloud_actor_restarts_total{actor}) ──(backoff)──▶ spawn again
//! ```
//!
//! A duty keeps its pending work in state it shares with every run (see
//! `picloud_cluster::duty`), so the restarted run resumes it. A run that
//! returns (Raft stopped, the listener closed) ends the duty for good.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use picloud_cluster::Duty;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

use crate::config::ActorLimits;

/// Restarts after a panic, by actor name (`app` for app actors), for
/// `/_/metrics`. Names are a fixed handful, so the map stays tiny.
#[derive(Debug, Default)]
pub struct ActorRestarts {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl ActorRestarts {
    pub fn record(&self, actor: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(actor)
            .or_default() += 1;
    }

    /// Every actor name that restarted at least once, with its count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, count)| (*name, *count))
            .collect()
    }

    pub fn count(&self, actor: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(actor)
            .copied()
            .unwrap_or(0)
    }
}

/// The wait before restart number `failures` (1 for the first): doubling
/// from `restart_backoff_initial_ms` up to `restart_backoff_max_ms`.
pub fn restart_delay(limits: &ActorLimits, failures: u32) -> Duration {
    let delay_ms = limits
        .restart_backoff_initial_ms
        .saturating_mul(1u64 << failures.saturating_sub(1).min(16))
        .min(limits.restart_backoff_max_ms);
    Duration::from_millis(delay_ms)
}

/// One duty as an actor: its single message runs the loop inside `handle`,
/// where ractor turns a panic into `ActorFailed` for the supervisor.
struct DutyActor;

struct RunDuty;

impl Actor for DutyActor {
    type Msg = RunDuty;
    type State = Duty;
    type Arguments = Duty;

    async fn pre_start(
        &self,
        myself: ActorRef<RunDuty>,
        duty: Duty,
    ) -> Result<Duty, ActorProcessingErr> {
        myself.cast(RunDuty)?;
        Ok(duty)
    }

    async fn handle(
        &self,
        myself: ActorRef<RunDuty>,
        _message: RunDuty,
        duty: &mut Duty,
    ) -> Result<(), ActorProcessingErr> {
        duty.start().await;
        tracing::debug!(duty = duty.name(), "duty finished");
        myself.stop(None);
        Ok(())
    }
}

pub enum DutiesMsg {
    /// Start supervising `duty`.
    Supervise(Duty),
    /// Start a duty again after its backoff.
    Restart(Duty),
    /// Kill every duty and stop (node shutdown). A duty's loop never returns
    /// to its mailbox, so it is killed rather than asked to stop.
    Stop,
}

struct Running {
    duty: Duty,
    started: Instant,
    actor: ActorRef<RunDuty>,
}

pub struct DutiesState {
    limits: Arc<ActorLimits>,
    restarts: Arc<ActorRestarts>,
    running: HashMap<ActorId, Running>,
    /// Consecutive failures by duty name, for the backoff.
    failures: HashMap<&'static str, u32>,
}

impl DutiesState {
    async fn spawn(&mut self, myself: &ActorRef<DutiesMsg>, duty: Duty) {
        match DutyActor::spawn_linked(None, DutyActor, duty.clone(), myself.get_cell()).await {
            Ok((actor, _join)) => {
                self.running.insert(
                    actor.get_id(),
                    Running {
                        duty,
                        started: Instant::now(),
                        actor,
                    },
                );
            }
            // Only a name clash or a stopped supervisor gets here; try again
            // after the longest backoff rather than lose the duty.
            Err(error) => {
                tracing::error!(duty = duty.name(), %error, "cannot start a duty; retrying");
                let delay = Duration::from_millis(self.limits.restart_backoff_max_ms);
                myself.send_after(delay, move || DutiesMsg::Restart(duty));
            }
        }
    }
}

pub struct DutySupervisor;

impl Actor for DutySupervisor {
    type Msg = DutiesMsg;
    type State = DutiesState;
    type Arguments = (Arc<ActorLimits>, Arc<ActorRestarts>);

    async fn pre_start(
        &self,
        _myself: ActorRef<DutiesMsg>,
        (limits, restarts): (Arc<ActorLimits>, Arc<ActorRestarts>),
    ) -> Result<DutiesState, ActorProcessingErr> {
        Ok(DutiesState {
            limits,
            restarts,
            running: HashMap::new(),
            failures: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<DutiesMsg>,
        message: DutiesMsg,
        state: &mut DutiesState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DutiesMsg::Supervise(duty) | DutiesMsg::Restart(duty) => {
                state.spawn(&myself, duty).await;
            }
            DutiesMsg::Stop => {
                for (_, running) in state.running.drain() {
                    running.actor.kill();
                }
                myself.stop(None);
            }
        }
        Ok(())
    }

    // The default supervisor stops itself when a child fails; this one
    // restarts the child and keeps going.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<DutiesMsg>,
        event: SupervisionEvent,
        state: &mut DutiesState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(Running { duty, started, .. }) = state.running.remove(&cell.get_id())
                else {
                    return Ok(());
                };
                let name = duty.name();
                // A run that lasted longer than the longest backoff was
                // healthy: its failure starts the backoff over.
                let healthy_for = Duration::from_millis(state.limits.restart_backoff_max_ms);
                let failures = state.failures.entry(name).or_insert(0);
                *failures = if started.elapsed() > healthy_for {
                    1
                } else {
                    failures.saturating_add(1)
                };
                let delay = restart_delay(&state.limits, *failures);
                state.restarts.record(name);
                tracing::error!(
                    actor = name,
                    %error,
                    delay_ms = delay.as_millis() as u64,
                    "duty panicked; restarting"
                );
                myself.send_after(delay, move || DutiesMsg::Restart(duty));
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.running.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

/// The handle on this node's duty supervisor.
#[derive(Clone)]
pub struct Duties {
    supervisor: ActorRef<DutiesMsg>,
    restarts: Arc<ActorRestarts>,
}

impl Duties {
    /// Starts the supervisor; `restarts` is shared with the app supervisor
    /// so `/_/metrics` shows every actor's restarts in one place.
    pub async fn start(
        limits: Arc<ActorLimits>,
        restarts: Arc<ActorRestarts>,
    ) -> Result<Duties, ractor::SpawnErr> {
        let (supervisor, _join) =
            DutySupervisor::spawn(None, DutySupervisor, (limits, restarts.clone())).await?;
        Ok(Duties {
            supervisor,
            restarts,
        })
    }

    /// Runs `duty` under this supervisor from now on.
    pub fn supervise(&self, duty: Duty) {
        if let Err(error) = self.supervisor.cast(DutiesMsg::Supervise(duty)) {
            tracing::error!(%error, "the duty supervisor is gone");
        }
    }

    pub fn restarts(&self) -> &Arc<ActorRestarts> {
        &self.restarts
    }

    /// Stops every duty (node shutdown).
    pub fn stop(&self) {
        let _ = self.supervisor.cast(DutiesMsg::Stop);
    }
}
