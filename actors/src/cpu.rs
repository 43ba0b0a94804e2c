//! `CpuShares`: how many of the node's cores one app's scripts may occupy at
//! once.
//!
//! Every invocation of an app (a request's handler or a trigger run) is a
//! future on the script runtime. [`CpuShares::run`] polls it only while it
//! holds one of its app's permits, and gives the permit back as soon as the
//! poll returns. A permit is therefore held exactly while the app's Lua (or
//! its VM construction) is on a CPU: an invocation waiting for a kv write, a
//! free VM or its next turn holds none.
//!
//! Every poll takes a permit, even an ordinary request's single poll of tens
//! of microseconds: one poll can run long without yielding (a C call, a
//! value conversion in Rust), so letting first polls through ungated let
//! four concurrent hostile requests occupy every script thread for 1.5 s
//! (tried: `t45_hostile_load` failed). The price on the plain route is in
//! `docs/performance.md`.
//!
//! ```text
//!   invocation future ──poll──▶ acquire app permit (FIFO) ──▶ poll inner ──▶ release
//!                                 │ none free: Pending, woken when one is
//! ```
//!
//! With `per_app` below the number of script threads, an app whose scripts
//! burn CPU (hostile or just heavy) runs on at most `per_app` threads; the
//! others stay free for other apps, whose requests then start at once instead
//! of queueing behind the heavy app's time slices.
//!
//! The gate also measures: the time each poll of an app's invocation takes
//! is added to the app's script time (`picloud_script_seconds_total`), the
//! time its Lua (and the host calls' synchronous parts) spent on a script
//! thread, for requests and trigger runs alike. Handlers hand their thread
//! back every `YIELD_INSTRUCTIONS_INTERVAL` instructions, which also gives
//! the permit to the app's next waiting invocation (tokio's semaphore is
//! fair), so one app's invocations share its cores in turn.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The per-app CPU gates of one node.
#[derive(Debug)]
pub struct CpuShares {
    per_app: usize,
    gates: Mutex<HashMap<String, AppGate>>,
}

/// One app's gate (alive while an invocation holds it) and its script time
/// (kept until [`CpuShares::retain_apps`] drops a deleted app).
#[derive(Debug)]
struct AppGate {
    gate: Weak<Semaphore>,
    script_nanos: Arc<AtomicU64>,
}

impl CpuShares {
    /// `per_app`: script threads one app may occupy at once (at least 1).
    pub fn new(per_app: usize) -> CpuShares {
        CpuShares {
            per_app: per_app.max(1),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// Threads one app may occupy at once.
    pub fn per_app(&self) -> usize {
        self.per_app
    }

    /// The gate of `app`, shared by every invocation of it that is running,
    /// and its script time counter. Gates live only while something holds
    /// them; an app's entry stays (for its script time) until
    /// [`CpuShares::retain_apps`] drops it, so the map is as large as the set
    /// of apps that ran here.
    fn gate(&self, app: &str) -> (Arc<Semaphore>, Arc<AtomicU64>) {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let entry = gates.entry(app.to_string()).or_insert_with(|| AppGate {
            gate: Weak::new(),
            script_nanos: Arc::default(),
        });
        let gate = entry.gate.upgrade().unwrap_or_else(|| {
            let gate = Arc::new(Semaphore::new(self.per_app));
            entry.gate = Arc::downgrade(&gate);
            gate
        });
        (gate, entry.script_nanos.clone())
    }

    /// Seconds each app's invocations spent being polled on a script thread
    /// since this node started (or since the app was first run here).
    pub fn script_seconds(&self) -> Vec<(String, f64)> {
        let gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let mut seconds: Vec<(String, f64)> = gates
            .iter()
            .map(|(app, entry)| {
                let nanos = entry.script_nanos.load(Ordering::Relaxed);
                (app.clone(), nanos as f64 / 1e9)
            })
            .collect();
        seconds.sort_by(|a, b| a.0.cmp(&b.0));
        seconds
    }

    /// Forgets the script time of every app `keep` refuses (deleted apps).
    pub fn retain_apps(&self, keep: impl Fn(&str) -> bool) {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.retain(|app, entry| keep(app) || entry.gate.strong_count() > 0);
    }

    /// `invocation`, polled only while it holds one of `app`'s permits. It fails with [`CpuShareTimeout`] if it is
    /// still waiting for a permit at `deadline`: queueing behind its own
    /// app's heavy invocations counts against a request's time.
    pub fn run<F: Future>(
        &self,
        app: &str,
        deadline: tokio::time::Instant,
        invocation: F,
    ) -> CpuGated<F> {
        let (gate, script_nanos) = self.gate(app);
        CpuGated {
            invocation: Box::pin(invocation),
            gate,
            script_nanos,
            deadline,
            waiting: None,
        }
    }
}

/// An invocation was still waiting for its app's CPU share at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("waited for the app's share of script threads (app_script_threads) until the deadline")]
pub struct CpuShareTimeout;

/// A permit, none (the gate closed, which it never does), or the deadline.
type Acquire =
    Pin<Box<dyn Future<Output = Result<Option<OwnedSemaphorePermit>, CpuShareTimeout>> + Send>>;

fn acquire(gate: Arc<Semaphore>, deadline: tokio::time::Instant) -> Acquire {
    Box::pin(async move {
        match tokio::time::timeout_at(deadline, gate.acquire_owned()).await {
            Ok(permit) => Ok(permit.ok()),
            Err(_elapsed) => Err(CpuShareTimeout),
        }
    })
}

/// See [`CpuShares::run`].
pub struct CpuGated<F> {
    invocation: Pin<Box<F>>,
    gate: Arc<Semaphore>,
    /// The app's script time, which every poll adds to.
    script_nanos: Arc<AtomicU64>,
    deadline: tokio::time::Instant,
    /// A queued request for a permit, kept across polls so the invocation
    /// keeps its place in the gate's FIFO queue.
    waiting: Option<Acquire>,
}

impl<F: Future> Future for CpuGated<F> {
    type Output = Result<F::Output, CpuShareTimeout>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let free = match this.waiting {
            None => this.gate.clone().try_acquire_owned().ok(),
            Some(_) => None,
        };
        let permit = match free {
            Some(permit) => Some(permit),
            None => {
                // The timer exists only on this path: an invocation that
                // finds a permit free costs none.
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| acquire(this.gate.clone(), this.deadline));
                match waiting.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(timeout)) => {
                        this.waiting = None;
                        return Poll::Ready(Err(timeout));
                    }
                    Poll::Ready(Ok(permit)) => {
                        this.waiting = None;
                        permit
                    }
                }
            }
        };
        let started = Instant::now();
        let outcome = this.invocation.as_mut().poll(cx);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        this.script_nanos.fetch_add(nanos, Ordering::Relaxed);
        drop(permit);
        outcome.map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A future that is "on the CPU" for 1 ms a poll, yielding in between,
    /// and records how many such futures of its app are polled at once.
    struct Spin {
        polls: usize,
        done: usize,
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Future for Spin {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.done += 1;
            if self.done > self.polls {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn spin(polls: usize, running: &Arc<AtomicUsize>, most: &Arc<AtomicUsize>) -> Spin {
        Spin {
            polls,
            done: 0,
            running: running.clone(),
            most: most.clone(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_heavy_app_never_runs_on_more_threads_than_its_share() {
        let shares = Arc::new(CpuShares::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (shares, spin) = (shares.clone(), spin(5, &running, &most));
            tasks.push(tokio::spawn(async move {
                shares.run("heavy", far(), spin).await.expect("no deadline")
            }));
        }
        // Another app is not held back by the heavy one's share.
        let (other_running, other_most) = (Arc::default(), Arc::default());
        shares
            .run("other", far(), spin(2, &other_running, &other_most))
            .await
            .expect("no deadline");
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "heavy ran at most 2 at once"
        );
        assert_eq!(other_most.load(Ordering::SeqCst), 1);
        // Each poll sleeps 1 ms on its thread: 8 invocations of 6 polls.
        let seconds = shares.script_seconds();
        assert_eq!(seconds[0].0, "heavy");
        assert!(seconds[0].1 >= 0.048, "heavy: {seconds:?}");
        assert!(
            seconds[1].1 >= 0.003 && seconds[1].1 < seconds[0].1,
            "{seconds:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_heavy_invocation_waiting_past_its_deadline_times_out() {
        let shares = CpuShares::new(1);
        let (gate, _) = shares.gate("app");
        let _held = gate.clone().try_acquire_owned().expect("permit");
        let (running, most) = (Arc::default(), Arc::default());
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_millis(100);
        let outcome = shares.run("app", deadline, spin(3, &running, &most)).await;
        assert_eq!(outcome, Err(CpuShareTimeout));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            most.load(Ordering::SeqCst),
            0,
            "never ran past its free time"
        );
    }

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn gates_of_idle_apps_are_renewed_and_deleted_apps_forgotten() {
        let shares = CpuShares::new(1);
        let (held, _) = shares.gate("a");
        assert!(Arc::ptr_eq(&held, &shares.gate("a").0));
        drop(held);
        let (renewed, _) = shares.gate("a");
        assert_eq!(renewed.available_permits(), 1);
        drop(renewed);
        let _b = shares.gate("b");
        shares.retain_apps(|app| app == "b");
        let apps: Vec<String> = shares
            .script_seconds()
            .into_iter()
            .map(|(app, _)| app)
            .collect();
        assert_eq!(apps, ["b"], "a was deleted");
    }
}
