//! This node's live sessions: what `users.verify` answers from without
//! touching the log. A session enters on login or on its first verify here
//! and leaves when it is revoked, expires, sits idle for `session_idle_ms`
//! (the `sessions_idle` duty, `UserService::idle_duty`),
//! or is the least recently seen one when `sessions_live_max` are live.
//!
//! The decisions are pure functions of (entry, now) ([`Sessions::check`]):
//! a cached answer is trusted for at most [`RECHECK_MS`], after which the
//! caller re-reads the session and user rows from this node's applied state
//! (a revocation applied anywhere reaches every node's state, so it takes
//! effect here within that second plus replication); and a refresh of the
//! sliding expiry is written at most once per `session_refresh_ms`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use picloud_storage::users::TokenHash;
use serde_json::Value;

/// How long a cached answer is trusted before the rows are read again: the
/// bound on how late a revocation takes effect on this node.
pub const RECHECK_MS: u64 = 1_000;

/// One live session on this node.
#[derive(Debug, Clone)]
struct Entry {
    app: Arc<str>,
    user_id: String,
    /// The user as scripts see it (no hash).
    user: Value,
    expires_ms: u64,
    checked_ms: u64,
    seen_ms: u64,
    refreshed_ms: u64,
}

/// What a verify should do for a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Answer from the cache; `refresh` says a sliding-expiry refresh is
    /// due (the entry already counts it as written).
    Hit { user: Value, refresh: bool },
    /// Read the rows (not cached here, or the cached answer is stale).
    Load,
    /// Expired: answer "no session".
    Expired,
}

/// The bounds of the cache.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub live_max: usize,
    pub idle_ms: u64,
    pub refresh_ms: u64,
}

/// The live sessions of this node. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    limits: SessionLimits,
    entries: Arc<Mutex<HashMap<TokenHash, Entry>>>,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            limits,
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Entry>> {
        // A panic while holding the lock leaves plain data: keep serving.
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Decides how to answer a verify of `hash` for `app` at `now_ms`.
    pub fn check(&self, app: &str, hash: &TokenHash, now_ms: u64) -> Check {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(hash) else {
            return Check::Load;
        };
        if &*entry.app != app {
            return Check::Load;
        }
        if now_ms >= entry.expires_ms {
            entries.remove(hash);
            return Check::Expired;
        }
        if now_ms.saturating_sub(entry.checked_ms) >= RECHECK_MS {
            return Check::Load;
        }
        entry.seen_ms = now_ms;
        let refresh = now_ms.saturating_sub(entry.refreshed_ms) >= self.limits.refresh_ms;
        if refresh {
            entry.refreshed_ms = now_ms;
        }
        Check::Hit {
            user: entry.user.clone(),
            refresh,
        }
    }

    /// Caches a session just read from the state (or created by a login),
    /// stopping idle ones and, at the bound, the least recently seen.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        app: &str,
        hash: TokenHash,
        user_id: String,
        user: Value,
        expires_ms: u64,
        refreshed_ms: u64,
        now_ms: u64,
    ) {
        let mut entries = self.lock();
        if !entries.contains_key(&hash) && entries.len() >= self.limits.live_max {
            drop_idle(&mut entries, now_ms, self.limits.idle_ms);
            while entries.len() >= self.limits.live_max.max(1) {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.seen_ms)
                    .map(|(hash, _)| *hash);
                match oldest {
                    Some(oldest) => entries.remove(&oldest),
                    None => break,
                };
            }
        }
        entries.insert(
            hash,
            Entry {
                app: app.into(),
                user_id,
                user,
                expires_ms,
                checked_ms: now_ms,
                seen_ms: now_ms,
                refreshed_ms,
            },
        );
    }

    /// Forgets one session (logged out or found revoked).
    pub fn remove(&self, hash: &TokenHash) {
        self.lock().remove(hash);
    }

    /// Forgets every session of user `user_id` of `app` (logout_all, a
    /// password change, a delete made through this node: other nodes learn
    /// it at their next recheck).
    pub fn remove_user(&self, app: &str, user_id: &str) {
        self.lock()
            .retain(|_, entry| !(&*entry.app == app && entry.user_id == user_id));
    }

    /// Drops sessions idle for `idle_ms` (the `sessions_idle` duty).
    pub fn stop_idle(&self, now_ms: u64) {
        drop_idle(&mut self.lock(), now_ms, self.limits.idle_ms);
    }

    /// How many sessions are live on this node.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes the entries unused for `idle_ms` at `now_ms`.
fn drop_idle(entries: &mut HashMap<TokenHash, Entry>, now_ms: u64, idle_ms: u64) {
    entries.retain(|_, entry| now_ms.saturating_sub(entry.seen_ms) < idle_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SessionLimits = SessionLimits {
        live_max: 2,
        idle_ms: 10_000,
        refresh_ms: 60_000,
    };

    fn user(n: u8) -> Value {
        serde_json::json!({ "id": format!("u{n}") })
    }

    #[test]
    fn a_cached_session_answers_until_it_is_stale_then_reloads() {
        let sessions = Sessions::new(LIMITS);
        assert_eq!(sessions.check("a", &[1; 32], 0), Check::Load);
        sessions.insert("a", [1; 32], "u1".into(), user(1), 100_000, 0, 0);
        assert_eq!(
            sessions.check("a", &[1; 32], 500),
            Check::Hit {
                user: user(1),
                refresh: false
            }
        );
        // Another app never sees it.
        assert_eq!(sessions.check("b", &[1; 32], 500), Check::Load);
        // Past the recheck bound the rows are read again: a revocation
        // applied meanwhile is seen within a second.
        assert_eq!(sessions.check("a", &[1; 32], RECHECK_MS), Check::Load);
    }

    #[test]
    fn refreshes_are_due_once_per_refresh_interval() {
        let sessions = Sessions::new(LIMITS);
        sessions.insert("a", [1; 32], "u1".into(), user(1), 1_000_000, 0, 59_500);
        let hit = |now| match sessions.check("a", &[1; 32], now) {
            Check::Hit { refresh, .. } => refresh,
            other => panic!("expected a hit, got {other:?}"),
        };
        assert!(hit(60_000));
        assert!(!hit(60_100), "the refresh is counted once");
    }

    #[test]
    fn expiry_revocation_idle_and_the_live_bound() {
        let sessions = Sessions::new(LIMITS);
        sessions.insert("a", [1; 32], "u1".into(), user(1), 50, 0, 0);
        assert_eq!(sessions.check("a", &[1; 32], 50), Check::Expired);
        assert!(sessions.is_empty());

        sessions.insert("a", [1; 32], "u1".into(), user(1), 100_000, 0, 0);
        sessions.insert("a", [2; 32], "u1".into(), user(1), 100_000, 0, 10);
        sessions.remove_user("a", "u1");
        assert!(
            sessions.is_empty(),
            "logout_all forgets every session of the user"
        );

        sessions.insert("a", [1; 32], "u1".into(), user(1), 100_000, 0, 0);
        sessions.insert("a", [2; 32], "u2".into(), user(2), 100_000, 0, 5);
        // At the bound, the least recently seen session is stopped.
        sessions.insert("a", [3; 32], "u3".into(), user(3), 100_000, 0, 6);
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions.check("a", &[1; 32], 7), Check::Load);
        sessions.stop_idle(10_006);
        assert!(sessions.is_empty(), "idle sessions are stopped");
    }
}
