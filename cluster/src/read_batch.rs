//! Linearizable reads on the leader: a read lease, and shared leadership
//! checks when the lease has run out.
//!
//! A linearizable read waits for a check that the leader still leads (a
//! heartbeat round to a quorum) and for the state to reach the index that
//! check returned. Every check costs a network round, so:
//!
//! - **The lease.** A confirmed check that began at `t` proves no other
//!   leader can be elected before `t + election_timeout_max`: openraft's
//!   followers refuse to vote for that long after they last heard from their
//!   leader (its `leader_lease`), and a restarted member refuses votes for as
//!   long after it starts (`RaftRpcConfig::votes_after`), so what it promised
//!   before a crash still holds. Until then every acknowledged write is in
//!   this leader's applied state (a write is acknowledged only after the
//!   leader applied it; the check itself waited for the writes of earlier
//!   terms), and a read needs no round of its own. [`ReadLease`] keeps half
//!   that window: the rest is margin for clocks running at different rates
//!   and for the time between the check and the read.
//! - **Shared rounds.** Without a lease, a read joins the next round that
//!   has not started yet: one round serves every read that arrived before
//!   it began, and a read never uses a round that began before it arrived
//!   (that round could not see writes the read must see).
//!
//! ```text
//!   reads ─▶ lease held? ─yes─▶ read now
//!              └no─▶ in flight? ─no─▶ start a round now ──────────────▶ await it
//!                                └yes─▶ join `next` (starts when the one in flight ends)
//!   confirmed round that began at t ─▶ lease until t + span
//! ```
//!
//! Rounds are shared futures: whoever awaits one drives it, so a round whose
//! waiters all went away is never left holding the others up. A round
//! answers `false` when its check failed; each of its reads then checks on
//! its own, with the caller's full error handling.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Round = Shared<BoxFuture<'static, bool>>;

#[derive(Default)]
struct State {
    /// Numbers rounds, so a round knows whether it is still the one named.
    last_id: u64,
    /// The round whose check is running (or about to), if any.
    in_flight: Option<(u64, Round)>,
    /// The round the reads arriving now join: it starts once `in_flight`
    /// ends.
    next: Option<(u64, Round)>,
}

/// The rounds of one node's leadership checks.
#[derive(Clone, Default)]
pub struct ReadBatches {
    state: Arc<Mutex<State>>,
}

impl ReadBatches {
    /// Waits for a round of `check` that starts after this call, shared
    /// with the reads arriving meanwhile; `check` answers whether leadership
    /// was confirmed and the state caught up with it.
    pub async fn confirm<F, Fut>(&self, check: F) -> bool
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let round = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.last_id += 1;
            let id = state.last_id;
            match (&state.in_flight, &state.next) {
                (None, _) => {
                    let round = self.round(id, None, check);
                    state.in_flight = Some((id, round.clone()));
                    state.next = None;
                    round
                }
                (Some(_), Some((_, next))) => next.clone(),
                (Some((_, current)), None) => {
                    let round = self.round(id, Some(current.clone()), check);
                    state.next = Some((id, round.clone()));
                    round
                }
            }
        };
        round.await
    }

    /// Round `id`: after `previous` (if any) ends, it becomes the round in
    /// flight (later reads join a new `next`), runs `check`, and clears
    /// itself.
    fn round<F, Fut>(&self, id: u64, previous: Option<Round>, check: F) -> Round
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let state = self.state.clone();
        async move {
            if let Some(previous) = previous {
                previous.await;
            }
            {
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                if state.next.as_ref().is_some_and(|(next, _)| *next == id) {
                    state.in_flight = state.next.take();
                }
            }
            let confirmed = check().await;
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            if state
                .in_flight
                .as_ref()
                .is_some_and(|(current, _)| *current == id)
            {
                state.in_flight = None;
            }
            confirmed
        }
        .boxed()
        .shared()
    }
}

/// A leader's read lease: the term it was granted in and when it ends.
#[derive(Debug)]
pub struct ReadLease {
    span: Duration,
    held: Mutex<Option<(u64, Instant)>>,
}

impl ReadLease {
    /// A lease of half of `election_timeout_max` (see the module docs).
    pub fn new(election_timeout_max: Duration) -> ReadLease {
        ReadLease {
            span: election_timeout_max / 2,
            held: Mutex::new(None),
        }
    }

    /// Whether a leader of `term` may read its local state as of `now`
    /// without a round.
    pub fn holds(&self, term: u64, now: Instant) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.is_some_and(|(held_term, until)| held_term == term && now < until)
    }

    /// Records a check confirmed by a quorum that began at `began` while
    /// this node led in `term`. A later term replaces the lease; an earlier
    /// check never shortens it.
    pub fn extend(&self, term: u64, began: Instant) {
        let until = began + self.span;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        *held = match *held {
            Some((held_term, held_until)) if held_term == term => {
                Some((term, held_until.max(until)))
            }
            Some((held_term, _)) if held_term > term => *held,
            _ => Some((term, until)),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use super::*;

    /// A check that counts its starts and ends only when released.
    fn gated(
        started: &Arc<AtomicUsize>,
        release: &Arc<Notify>,
    ) -> impl Future<Output = bool> + use<> {
        let (started, release) = (started.clone(), release.clone());
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            true
        }
    }

    #[tokio::test]
    async fn reads_arriving_during_a_round_share_the_next_one() {
        let batches = ReadBatches::default();
        let started = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let mut reads = tokio::task::JoinSet::new();
        let (b, s, r) = (batches.clone(), started.clone(), release.clone());
        reads.spawn(async move { b.confirm(move || gated(&s, &r)).await });
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Ten reads arrive while the first round runs: none may use it.
        for _ in 0..10 {
            let (b, s, r) = (batches.clone(), started.clone(), release.clone());
            reads.spawn(async move { b.confirm(move || gated(&s, &r)).await });
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(started.load(Ordering::SeqCst), 1, "the next round waits");
        release.notify_one();
        while started.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        let mut answers = 0;
        while let Some(answer) = reads.join_next().await {
            assert!(answer.expect("read"));
            answers += 1;
        }
        assert_eq!(answers, 11);
        assert_eq!(
            started.load(Ordering::SeqCst),
            2,
            "eleven reads, two rounds"
        );
    }

    #[tokio::test]
    async fn a_round_whose_reads_went_away_does_not_block_later_ones() {
        let batches = ReadBatches::default();
        let started = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let (s, r) = (started.clone(), release.clone());
        // A read that gives up while its round runs.
        let abandoned = batches.confirm(move || gated(&s, &r));
        let _ = tokio::time::timeout(std::time::Duration::from_millis(20), abandoned).await;
        // A later read drives the abandoned round to its end, then its own.
        let (b, s, r) = (batches.clone(), started.clone(), release.clone());
        let mut later = tokio::task::JoinSet::new();
        later.spawn(async move { b.confirm(move || gated(&s, &r)).await });
        while started.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        while started.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        let answer = later.join_next().await.expect("later read");
        assert!(answer.expect("later read"));
    }

    #[tokio::test]
    async fn a_failed_round_tells_its_reads() {
        let batches = ReadBatches::default();
        assert!(!batches.confirm(|| async { false }).await);
        assert!(batches.confirm(|| async { true }).await);
    }

    #[test]
    fn a_lease_holds_for_half_the_election_timeout_in_its_own_term() {
        let lease = ReadLease::new(Duration::from_millis(600));
        let t = Instant::now();
        assert!(!lease.holds(3, t), "no lease before a confirmed check");
        lease.extend(3, t);
        assert!(lease.holds(3, t + Duration::from_millis(299)));
        assert!(!lease.holds(3, t + Duration::from_millis(300)), "it ends");
        assert!(!lease.holds(4, t), "another term holds nothing");
    }

    #[test]
    fn an_older_check_never_shortens_a_lease_and_a_newer_term_replaces_it() {
        let lease = ReadLease::new(Duration::from_millis(600));
        let t = Instant::now();
        lease.extend(3, t + Duration::from_millis(100));
        lease.extend(3, t);
        assert!(lease.holds(3, t + Duration::from_millis(399)));
        // A check confirmed in an earlier term is ignored.
        lease.extend(2, t + Duration::from_millis(200));
        assert!(lease.holds(3, t + Duration::from_millis(399)));
        assert!(!lease.holds(2, t + Duration::from_millis(201)));
        lease.extend(5, t);
        assert!(!lease.holds(3, t + Duration::from_millis(1)));
        assert!(lease.holds(5, t + Duration::from_millis(1)));
    }
}
