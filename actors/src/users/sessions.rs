//! This node's live sessions as the `users.verify` hot path sees them: a
//! map from token hash to the answer each session's `SessionActor`
//! published ([`Published`]), and the pure decisions the actors and the
//! hot path make (`check`, [`plan_tick`], [`plan_evictions`]).
//!
//! A verify never waits on an actor: it reads the published answer, trusts
//! it for at most [`RECHECK_MS`] after the actor last checked the rows,
//! and stores the time of use in the entry (an atomic, no message), which
//! the actor reads at its next tick to decide whether to recheck, refresh
//! or stop. A session not published here (or stale) is read from the
//! node's state by the caller and handed to the `SessionSupervisor`
//! ([`Sessions::publish`]), which starts its actor.
//!
//! The decisions are pure functions of (entry, now): a cached answer is
//! trusted for at most [`RECHECK_MS`] (the backstop bound on how late a
//! revocation takes effect here when its applied event was missed); an
//! actor stops when its session expires or sits idle for `idle_ms`; a
//! refresh of the sliding expiry is asked for at most once per
//! `refresh_ms`; and at `live_max` the least recently used are evicted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use picloud_storage::users::{SessionsRevoked, TokenHash};
use ractor::ActorRef;
use serde_json::Value;

/// How long a published answer is trusted after its rows were last read:
/// the bound on how late a revocation takes effect on this node even when
/// its applied event never arrives.
pub const RECHECK_MS: u64 = 1_000;

/// One live session's answer, published by its actor.
#[derive(Debug)]
pub struct Published {
    pub app: Arc<str>,
    pub user_id: String,
    /// The user as scripts see it (no hash).
    pub user: Value,
    expires_ms: AtomicU64,
    /// When the session and user rows were last read.
    checked_ms: u64,
    /// When a verify last used it (stored by the hot path).
    seen_ms: AtomicU64,
}

impl Published {
    pub fn new(
        app: Arc<str>,
        user_id: String,
        user: Value,
        expires_ms: u64,
        now_ms: u64,
    ) -> Published {
        Published {
            app,
            user_id,
            user,
            expires_ms: AtomicU64::new(expires_ms),
            checked_ms: now_ms,
            seen_ms: AtomicU64::new(now_ms),
        }
    }

    /// The same answer re-read at `now_ms`, keeping the last use.
    pub fn rechecked(&self, user: Value, expires_ms: u64, now_ms: u64) -> Published {
        let republished = Published::new(
            self.app.clone(),
            self.user_id.clone(),
            user,
            expires_ms.max(self.expires_ms()),
            now_ms,
        );
        republished.seen_ms.store(self.seen_ms(), Ordering::Relaxed);
        republished
    }

    pub fn expires_ms(&self) -> u64 {
        self.expires_ms.load(Ordering::Relaxed)
    }

    /// Extends the expiry this node answers with (after asking for the
    /// same extension in the log).
    pub fn extend(&self, expires_ms: u64) {
        self.expires_ms.fetch_max(expires_ms, Ordering::Relaxed);
    }

    pub fn checked_ms(&self) -> u64 {
        self.checked_ms
    }

    pub fn seen_ms(&self) -> u64 {
        self.seen_ms.load(Ordering::Relaxed)
    }
}

/// What a verify should do for a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Answer from the published entry.
    Hit(Value),
    /// Read the rows (not live here, or the answer is stale).
    Load,
    /// Expired: answer "no session".
    Expired,
}

/// How a verify at `now_ms` treats an entry checked at `checked_ms` and
/// expiring at `expires_ms` (the hot path's whole decision).
pub fn check_entry(expires_ms: u64, checked_ms: u64, now_ms: u64) -> Check {
    if now_ms >= expires_ms {
        Check::Expired
    } else if now_ms.saturating_sub(checked_ms) >= RECHECK_MS {
        Check::Load
    } else {
        Check::Hit(Value::Null)
    }
}

/// The bounds of this node's live sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub live_max: usize,
    pub idle_ms: u64,
    pub refresh_ms: u64,
}

/// Why an actor stops itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Expired,
    Idle,
}

/// What a session actor does at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickPlan {
    Stop(StopReason),
    Keep {
        /// Re-read the rows: used since they were last read.
        recheck: bool,
        /// Ask the batcher to extend the expiry to `seen + ttl`.
        refresh: bool,
    },
}

/// The tick of a session last used at `seen_ms`, rows read at
/// `checked_ms`, expiry last extended (in the log) at `refreshed_ms`.
pub fn plan_tick(
    limits: &SessionLimits,
    seen_ms: u64,
    checked_ms: u64,
    refreshed_ms: u64,
    expires_ms: u64,
    now_ms: u64,
) -> TickPlan {
    if now_ms >= expires_ms {
        return TickPlan::Stop(StopReason::Expired);
    }
    if now_ms.saturating_sub(seen_ms) >= limits.idle_ms {
        return TickPlan::Stop(StopReason::Idle);
    }
    TickPlan::Keep {
        recheck: seen_ms > checked_ms,
        refresh: seen_ms.saturating_sub(refreshed_ms) >= limits.refresh_ms,
    }
}

/// The sessions to evict so one more fits under `live_max`, least recently
/// used first: at least one past the bound, and then a hundredth of the
/// bound at once, so a node at its bound scans its sessions once per
/// hundred new ones instead of once per new one.
pub fn plan_evictions(mut live: Vec<(TokenHash, u64)>, live_max: usize) -> Vec<TokenHash> {
    if live.len() < live_max {
        return Vec::new();
    }
    let over = live.len() + 1 - live_max;
    let count = over.max(live_max / 100).min(live.len());
    if count == 0 {
        return Vec::new();
    }
    live.select_nth_unstable_by_key(count - 1, |(_, seen_ms)| *seen_ms);
    live.truncate(count);
    live.into_iter().map(|(hash, _)| hash).collect()
}

/// What the `SessionSupervisor` (`session_actor`) is told; defined here,
/// beside the map it keeps, so this module needs nothing of the actors'.
pub enum SupervisorMsg {
    /// Publish a session read from the state and start its actor.
    Start {
        hash: TokenHash,
        entry: Arc<Published>,
        refreshed_ms: u64,
        ttl_ms: u64,
    },
    /// Logged out through this node.
    Stop { hash: TokenHash },
    /// All of a user's sessions ended through this node.
    StopUser { app: String, id: String },
    /// An applied command revoked sessions (on any node).
    Revoked(SessionsRevoked),
    /// The event feed lagged: stop every session (they start again on use).
    StopAll,
}

type Entries = HashMap<TokenHash, Arc<Published>>;

/// The live sessions of this node. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    limits: SessionLimits,
    entries: Arc<RwLock<Entries>>,
    /// The supervisor while the `sessions` duty runs; without it nothing is
    /// cached and every verify reads the rows.
    supervisor: Arc<RwLock<Option<ActorRef<SupervisorMsg>>>>,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            limits,
            entries: Arc::new(RwLock::new(HashMap::new())),
            supervisor: Arc::new(RwLock::new(None)),
        }
    }

    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    // A panic while holding a lock leaves plain data: keep serving.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn supervisor(&self) -> Option<ActorRef<SupervisorMsg>> {
        self.supervisor
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    pub(super) fn set_supervisor(&self, supervisor: Option<ActorRef<SupervisorMsg>>) {
        *self
            .supervisor
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = supervisor;
    }

    /// How a verify of `hash` for `app` at `now_ms` is answered.
    pub fn check(&self, app: &str, hash: &TokenHash, now_ms: u64) -> Check {
        let entries = self.read();
        let Some(entry) = entries.get(hash).filter(|entry| &*entry.app == app) else {
            return Check::Load;
        };
        match check_entry(entry.expires_ms(), entry.checked_ms, now_ms) {
            Check::Hit(_) => {
                entry.seen_ms.fetch_max(now_ms, Ordering::Relaxed);
                Check::Hit(entry.user.clone())
            }
            other => other,
        }
    }

    /// A session just read from the state (or created by a login): replaces
    /// a live entry at once, or asks the supervisor to start its actor.
    pub fn publish(&self, hash: TokenHash, entry: Published, refreshed_ms: u64, ttl_ms: u64) {
        let entry = Arc::new(entry);
        {
            let mut entries = self.write();
            if let Some(live) = entries.get_mut(&hash)
                && live.app == entry.app
            {
                *live = entry;
                return;
            }
        }
        if let Some(supervisor) = self.supervisor() {
            // A stopped supervisor only means this one is not cached.
            let _ = supervisor.cast(SupervisorMsg::Start {
                hash,
                entry,
                refreshed_ms,
                ttl_ms,
            });
        }
    }

    /// The entry of `hash`, if live.
    pub(super) fn get(&self, hash: &TokenHash) -> Option<Arc<Published>> {
        self.read().get(hash).cloned()
    }

    /// Publishes `entry` for `hash` (the supervisor, starting its actor,
    /// and the actor after a recheck).
    pub(super) fn insert(&self, hash: TokenHash, entry: Arc<Published>) {
        self.write().insert(hash, entry);
    }

    /// Unpublishes `hash` (its actor stopped, or it was revoked).
    pub(super) fn unpublish(&self, hash: &TokenHash) {
        self.write().remove(hash);
    }

    /// Unpublishes everything (the supervisor stopped).
    pub(super) fn clear(&self) {
        self.write().clear();
    }

    /// The last use of every live session, for [`plan_evictions`].
    pub(super) fn seen(&self) -> Vec<(TokenHash, u64)> {
        self.read()
            .iter()
            .map(|(hash, entry)| (*hash, entry.seen_ms()))
            .collect()
    }

    /// Ends one session here at once (logged out through this node; other
    /// nodes hear the applied `Logout`).
    pub fn remove(&self, hash: &TokenHash) {
        // Only a published session has an actor to stop: a verify of an
        // unknown token must not cost the supervisor a message.
        if self.write().remove(hash).is_none() {
            return;
        }
        if let Some(supervisor) = self.supervisor() {
            let _ = supervisor.cast(SupervisorMsg::Stop { hash: *hash });
        }
    }

    /// Ends every session of user `user_id` of `app` here at once.
    pub fn remove_user(&self, app: &str, user_id: &str) {
        let removed = {
            let mut entries = self.write();
            let before = entries.len();
            entries.retain(|_, entry| !(&*entry.app == app && entry.user_id == user_id));
            before != entries.len()
        };
        if !removed {
            return;
        }
        if let Some(supervisor) = self.supervisor() {
            let _ = supervisor.cast(SupervisorMsg::StopUser {
                app: app.into(),
                id: user_id.into(),
            });
        }
    }

    /// How many sessions are published on this node.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SessionLimits = SessionLimits {
        live_max: 2,
        idle_ms: 10_000,
        refresh_ms: 60_000,
    };

    #[test]
    fn a_published_answer_is_trusted_for_a_second_then_reloaded() {
        let cases = [
            // (expires, checked, now, expected)
            (100_000, 0, 0, Check::Hit(Value::Null)),
            (100_000, 0, RECHECK_MS - 1, Check::Hit(Value::Null)),
            // Past the recheck bound the rows are read again: a revocation
            // whose event was missed is seen within a second.
            (100_000, 0, RECHECK_MS, Check::Load),
            (50, 0, 50, Check::Expired),
            (50, 0, 49, Check::Hit(Value::Null)),
        ];
        for (expires, checked, now, expected) in cases {
            assert_eq!(check_entry(expires, checked, now), expected, "now {now}");
        }
    }

    #[test]
    fn the_hot_path_reads_only_its_apps_live_entry_and_notes_the_use() {
        let sessions = Sessions::new(LIMITS);
        assert_eq!(sessions.check("a", &[1; 32], 0), Check::Load);
        let user = serde_json::json!({ "id": "u1" });
        sessions.insert(
            [1; 32],
            Arc::new(Published::new(
                "a".into(),
                "u1".into(),
                user.clone(),
                100_000,
                0,
            )),
        );
        assert_eq!(sessions.check("a", &[1; 32], 500), Check::Hit(user));
        assert_eq!(sessions.get(&[1; 32]).map(|e| e.seen_ms()), Some(500));
        // Another app never sees it.
        assert_eq!(sessions.check("b", &[1; 32], 500), Check::Load);
        sessions.remove_user("a", "u1");
        assert!(
            sessions.is_empty(),
            "logout_all unpublishes the user's sessions"
        );
    }

    #[test]
    fn tick_plans() {
        let cases = [
            // (seen, checked, refreshed, expires, now, plan)
            (
                0,
                0,
                0,
                100_000,
                1_000,
                TickPlan::Keep {
                    recheck: false,
                    refresh: false,
                },
            ),
            (
                900,
                0,
                0,
                100_000,
                1_000,
                TickPlan::Keep {
                    recheck: true,
                    refresh: false,
                },
            ),
            (
                60_500,
                60_000,
                0,
                100_000,
                61_000,
                TickPlan::Keep {
                    recheck: true,
                    refresh: true,
                },
            ),
            // The refresh is asked once: `refreshed` moves to `seen`.
            (
                60_500,
                60_500,
                60_500,
                200_000,
                62_000,
                TickPlan::Keep {
                    recheck: false,
                    refresh: false,
                },
            ),
            (0, 0, 0, 100_000, 10_000, TickPlan::Stop(StopReason::Idle)),
            (
                9_000,
                0,
                0,
                9_500,
                9_500,
                TickPlan::Stop(StopReason::Expired),
            ),
        ];
        for (seen, checked, refreshed, expires, now, plan) in cases {
            assert_eq!(
                plan_tick(&LIMITS, seen, checked, refreshed, expires, now),
                plan,
                "seen {seen} now {now}"
            );
        }
    }

    #[test]
    fn evictions_take_the_least_recently_used() {
        let live = |n: u8| {
            (0..n)
                .map(|i| ([i; 32], 100 - u64::from(i)))
                .collect::<Vec<_>>()
        };
        assert!(plan_evictions(live(1), 2).is_empty(), "room left");
        assert_eq!(plan_evictions(live(2), 2), vec![[1; 32]]);
        // Shrunk bound: enough go to fit one more (the newest stays).
        let mut gone = plan_evictions(live(5), 2);
        gone.sort();
        assert_eq!(gone, vec![[1; 32], [2; 32], [3; 32], [4; 32]]);
        // A large bound evicts a hundredth at once.
        let many: Vec<_> = (0..200u32)
            .map(|i| {
                let mut hash = [0u8; 32];
                hash[..4].copy_from_slice(&i.to_be_bytes());
                (hash, u64::from(i))
            })
            .collect();
        let gone = plan_evictions(many, 200);
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|hash| hash[3] < 2), "the two oldest");
    }
}
