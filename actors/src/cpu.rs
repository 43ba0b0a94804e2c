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
//! ```text
//!   invocation future ──poll──▶ acquire app permit (FIFO) ──▶ poll inner ──▶ release
//!                                 │ none free: Pending, woken when one is
//! ```
//!
//! With `per_app` below the number of script threads, an app whose scripts
//! burn CPU (hostile or just heavy) runs on at most `per_app` threads; the
//! others stay free for other apps, whose requests then start at once instead
//! of queueing behind the heavy app's time slices. Handlers hand their thread
//! back every `YIELD_INSTRUCTIONS_INTERVAL` instructions, which also gives
//! the permit to the app's next waiting invocation (tokio's semaphore is
//! fair), so one app's invocations share its cores in turn.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// The per-app CPU gates of one node.
#[derive(Debug)]
pub struct CpuShares {
    per_app: usize,
    gates: Mutex<HashMap<String, Weak<Semaphore>>>,
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

    /// The gate of `app`, shared by every invocation of it that is running.
    /// Gates live only while something holds them, so the map stays as small
    /// as the set of apps running now.
    fn gate(&self, app: &str) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get(app).and_then(Weak::upgrade) {
            return gate;
        }
        gates.retain(|_, gate| gate.strong_count() > 0);
        let gate = Arc::new(Semaphore::new(self.per_app));
        gates.insert(app.to_string(), Arc::downgrade(&gate));
        gate
    }

    /// `invocation`, polled only while it holds one of `app`'s permits.
    pub fn run<F: Future>(&self, app: &str, invocation: F) -> CpuGated<F> {
        CpuGated {
            invocation: Box::pin(invocation),
            gate: self.gate(app),
            waiting: None,
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// See [`CpuShares::run`].
pub struct CpuGated<F> {
    invocation: Pin<Box<F>>,
    gate: Arc<Semaphore>,
    /// A queued request for a permit, kept across polls so the invocation
    /// keeps its place in the gate's FIFO queue.
    waiting: Option<Acquire>,
}

impl<F: Future> Future for CpuGated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let permit = match this.waiting.as_mut() {
            Some(waiting) => match waiting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => {
                    this.waiting = None;
                    permit.ok()
                }
            },
            None => match this.gate.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let mut waiting: Acquire = Box::pin(this.gate.clone().acquire_owned());
                    match waiting.as_mut().poll(cx) {
                        Poll::Pending => {
                            this.waiting = Some(waiting);
                            return Poll::Pending;
                        }
                        Poll::Ready(permit) => permit.ok(),
                    }
                }
            },
        };
        let outcome = this.invocation.as_mut().poll(cx);
        drop(permit);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A future that is "on the CPU" for `polls` polls, yielding in between,
    /// and records how many such futures of its app are polled at once.
    struct Spin {
        polls: usize,
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Future for Spin {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.running.fetch_sub(1, Ordering::SeqCst);
            if self.polls == 0 {
                return Poll::Ready(());
            }
            self.polls -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_app_never_runs_on_more_threads_than_its_share() {
        let shares = Arc::new(CpuShares::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let other_most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let spin = Spin {
                polls: 5,
                running: running.clone(),
                most: most.clone(),
            };
            let shares = shares.clone();
            tasks.push(tokio::spawn(async move { shares.run("heavy", spin).await }));
        }
        // Another app is not held back by the heavy one's share.
        let other = Spin {
            polls: 0,
            running: Arc::new(AtomicUsize::new(0)),
            most: other_most.clone(),
        };
        shares.run("other", other).await;
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "heavy ran at most 2 at once"
        );
        assert_eq!(other_most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn gates_of_idle_apps_are_forgotten() {
        let shares = CpuShares::new(1);
        let held = shares.gate("a");
        assert!(Arc::ptr_eq(&held, &shares.gate("a")));
        drop(held);
        let _b = shares.gate("b");
        let gates = shares.gates.lock().expect("lock");
        assert!(
            !gates.contains_key("a"),
            "a's gate went with its last holder"
        );
    }
}
