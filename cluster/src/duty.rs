//! `Duty`: a long-running loop of a node (the write batcher, the peer
//! accept loop, membership upkeep, the leader's trigger duties, the HTTP
//! accept loop) described so a supervisor can run it and run it again.
//!
//! A duty keeps everything it needs to resume in shared state it owns (its
//! queue receiver, its listener), never in the stack of one run: after a
//! panic the supervisor (`actors::duties`) calls [`Duty::start`] again and
//! the new run picks up the work the old one left pending. A duty's future
//! returns only when its work is over for good (Raft stopped, the endpoint
//! closed); the supervisor then lets it end.
//!
//! The fault switch ([`fault_point`], [`arm_fault`]) exists for the tests
//! that prove a restart resumes the work: it is compiled in only with the
//! `fault-injection` feature, which test builds turn on (as a
//! dev-dependency feature) and a release build does not.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What [`Duty::start`] returns: one run of the loop.
pub type DutyRun = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A named, restartable loop.
#[derive(Clone)]
pub struct Duty {
    name: &'static str,
    start: Arc<dyn Fn() -> DutyRun + Send + Sync>,
}

impl Duty {
    /// `name` labels logs and `picloud_actor_restarts_total{actor=name}`;
    /// `start` begins one run of the loop from the duty's shared state.
    pub fn new<F, Fut>(name: &'static str, start: F) -> Duty
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Duty {
            name,
            start: Arc::new(move || Box::pin(start())),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// One run of the loop.
    pub fn start(&self) -> DutyRun {
        (self.start)()
    }

    /// The same duty, each run executed on `runtime` (e.g. the script
    /// runtime) while the supervisor waits on its own. A panic there is
    /// re-raised here, so the supervisor sees it; when the waiting side is
    /// dropped (the duty's actor killed at shutdown) the run is aborted, so
    /// no loop outlives its actor.
    pub fn on(self, runtime: tokio::runtime::Handle) -> Duty {
        let inner = self.start;
        Duty {
            name: self.name,
            start: Arc::new(move || {
                let mut run = AbortOnDrop(runtime.spawn(inner()));
                Box::pin(async move {
                    if let Err(error) = (&mut run.0).await
                        && error.is_panic()
                    {
                        std::panic::resume_unwind(error.into_panic());
                    }
                })
            }),
        }
    }

    /// Runs the duty on the current runtime with nobody to restart it: for
    /// tests of a lower layer that have no supervisor.
    pub fn detach(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.start())
    }
}

/// Aborts a run on another runtime when its waiter goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for Duty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Duty").field("name", &self.name).finish()
    }
}

/// Whether this build has the test-only fault switch.
pub const FAULTS_ENABLED: bool = cfg!(feature = "fault-injection");

/// Called by a duty where a panic would leave work pending; panics once for
/// each time [`arm_fault`] armed `name`. Compiles to nothing without the
/// `fault-injection` feature.
#[inline]
pub fn fault_point(name: &str) {
    #[cfg(feature = "fault-injection")]
    if faults::take(name) {
        panic!("fault injected into {name} (test-only fault switch)");
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}

/// Arms one panic at the next [`fault_point`] named `name`; `false` when
/// this build has no fault switch.
pub fn arm_fault(name: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        faults::arm(name);
        true
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = name;
        false
    }
}

#[cfg(feature = "fault-injection")]
mod faults {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    /// Armed panics by fault point name (a handful in any test).
    fn armed() -> &'static Mutex<HashMap<String, u32>> {
        static ARMED: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
        ARMED.get_or_init(Default::default)
    }

    pub(super) fn arm(name: &str) {
        *armed()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default() += 1;
    }

    pub(super) fn take(name: &str) -> bool {
        let mut armed = armed().lock().unwrap_or_else(|e| e.into_inner());
        match armed.get_mut(name) {
            Some(count) if *count > 0 => {
                *count -= 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_duty_starts_a_fresh_run_each_time() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let duty = Duty::new("counter", move || {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        });
        duty.start().await;
        duty.clone().start().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(duty.name(), "counter");
    }

    #[tokio::test]
    async fn a_run_on_another_runtime_ends_with_its_waiter() {
        let other = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        let ended_tx = Arc::new(std::sync::Mutex::new(Some(ended_tx)));
        let duty = Duty::new("forever", move || {
            // Dropped (and so sent) when the run is aborted.
            let guard = ended_tx.lock().expect("lock").take();
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }
        })
        .on(other.handle().clone());
        let waiter = tokio::spawn(duty.start());
        tokio::task::yield_now().await;
        waiter.abort();
        // The run on the other runtime was aborted with its waiter.
        tokio::time::timeout(std::time::Duration::from_secs(10), ended_rx)
            .await
            .expect("the run ended")
            .expect_err("the sender was dropped, not used");
        other.shutdown_background();
    }

    #[tokio::test]
    async fn a_panic_on_another_runtime_reaches_the_caller() {
        let other = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        let duty = Duty::new("boom", || async { panic!("boom") }).on(other.handle().clone());
        let outcome = tokio::spawn(duty.start()).await;
        assert!(outcome.is_err_and(|e| e.is_panic()));
        other.shutdown_background();
    }
}
