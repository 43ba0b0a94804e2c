//! Rate limits of the auth flows, per node: failed logins per account and
//! per client address, then a temporary lockout; sign-ups and reset
//! requests per client address.
//!
//! The decisions are pure ([`Rule::check`], [`Rule::record`]) over an
//! [`Entry`] and `now`; [`Limiter`] keeps the entries of one kind in a map
//! with a bound ([`Limiter::new`]'s `tracked_max`), so an attacker cycling
//! through addresses costs bounded memory. Each node counts on its own: a
//! client spreading attempts over N nodes gets up to N times the budget
//! (said in the README).

use std::collections::HashMap;
use std::sync::Mutex;

/// One limit: at most `count_max` events per `window_ms`; reaching it locks
/// the key for `lockout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub count_max: u32,
    pub window_ms: u64,
    pub lockout_ms: u64,
}

/// What a key has done lately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// When the current window began.
    pub window_start_ms: u64,
    /// Events in the current window.
    pub count: u32,
    /// Locked until then (0: not locked).
    pub locked_until_ms: u64,
}

impl Entry {
    /// Whether the entry no longer says anything at `now` (its window is
    /// over and it is not locked): such entries are dropped first.
    fn stale(&self, rule: &Rule, now_ms: u64) -> bool {
        self.locked_until_ms <= now_ms
            && now_ms.saturating_sub(self.window_start_ms) >= rule.window_ms
    }
}

impl Rule {
    /// `Err(retry_after_ms)` while the key is locked out.
    pub fn check(&self, entry: Option<&Entry>, now_ms: u64) -> Result<(), u64> {
        match entry {
            Some(entry) if entry.locked_until_ms > now_ms => Err(entry.locked_until_ms - now_ms),
            _ => Ok(()),
        }
    }

    /// The entry after one more event at `now`: counted in the current
    /// window (a new one when the last is over), and locked for
    /// `lockout_ms` once the count reaches `count_max`.
    pub fn record(&self, entry: Option<Entry>, now_ms: u64) -> Entry {
        let mut entry = entry.unwrap_or(Entry {
            window_start_ms: now_ms,
            count: 0,
            locked_until_ms: 0,
        });
        if now_ms.saturating_sub(entry.window_start_ms) >= self.window_ms {
            entry.window_start_ms = now_ms;
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        if entry.count >= self.count_max {
            entry.locked_until_ms = now_ms.saturating_add(self.lockout_ms);
            // A fresh budget once the lockout is over.
            entry.count = 0;
            entry.window_start_ms = entry.locked_until_ms;
        }
        entry
    }
}

/// The entries of one kind of limit on this node, at most `tracked_max`.
pub struct Limiter {
    rule: Rule,
    tracked_max: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Limiter {
    pub fn new(rule: Rule, tracked_max: usize) -> Limiter {
        Limiter {
            rule,
            tracked_max: tracked_max.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after_ms)` while `key` is locked out.
    pub fn check(&self, key: &str, now_ms: u64) -> Result<(), u64> {
        self.rule.check(self.entries().get(key), now_ms)
    }

    /// Counts one event of `key`.
    pub fn record(&self, key: &str, now_ms: u64) {
        let mut entries = self.entries();
        let old = entries.get(key).copied();
        if old.is_none() && entries.len() >= self.tracked_max {
            make_room(&mut entries, &self.rule, now_ms);
        }
        let entry = self.rule.record(old, now_ms);
        entries.insert(key.to_string(), entry);
    }

    /// Counts one event of `key` and answers whether it was allowed: the
    /// limit for requests that always count (sign-ups, reset requests).
    pub fn admit(&self, key: &str, now_ms: u64) -> Result<(), u64> {
        self.check(key, now_ms)?;
        self.record(key, now_ms);
        Ok(())
    }

    /// Forgets `key` (a successful login clears its account's failures).
    pub fn clear(&self, key: &str) {
        self.entries().remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees one slot: drops the stale entries, and if none was, the unlocked
/// entry with the oldest window (a locked one is kept, so flooding the map
/// cannot lift a lockout unless every entry is locked).
fn make_room(entries: &mut HashMap<String, Entry>, rule: &Rule, now_ms: u64) {
    let before = entries.len();
    entries.retain(|_, entry| !entry.stale(rule, now_ms));
    if entries.len() < before {
        return;
    }
    let oldest = entries
        .iter()
        .filter(|(_, entry)| entry.locked_until_ms <= now_ms)
        .min_by_key(|(_, entry)| entry.window_start_ms)
        .or_else(|| {
            entries
                .iter()
                .min_by_key(|(_, entry)| entry.locked_until_ms)
        })
        .map(|(key, _)| key.clone());
    if let Some(key) = oldest {
        entries.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        count_max: 3,
        window_ms: 1_000,
        lockout_ms: 5_000,
    };

    /// Three failures in a window lock the key for the lockout, after which
    /// it has a fresh budget; failures spread over windows never lock.
    #[test]
    fn failures_in_a_window_lock_then_recover() {
        let mut entry = None;
        for now in [0, 10, 20] {
            assert_eq!(RULE.check(entry.as_ref(), now), Ok(()));
            entry = Some(RULE.record(entry, now));
        }
        assert_eq!(RULE.check(entry.as_ref(), 20), Err(5_000));
        assert_eq!(RULE.check(entry.as_ref(), 5_019), Err(1));
        assert_eq!(RULE.check(entry.as_ref(), 5_020), Ok(()));
        entry = Some(RULE.record(entry, 5_020));
        assert_eq!(entry.map(|entry| entry.count), Some(1));

        let mut spread = None;
        for now in [0, 600, 1_200, 1_800, 2_400, 3_000] {
            spread = Some(RULE.record(spread, now));
            assert_eq!(RULE.check(spread.as_ref(), now), Ok(()), "at {now}");
        }
    }

    #[test]
    fn admit_counts_every_request_and_refuses_past_the_limit() {
        let limiter = Limiter::new(RULE, 10);
        assert_eq!(limiter.admit("ip", 0), Ok(()));
        assert_eq!(limiter.admit("ip", 1), Ok(()));
        assert_eq!(limiter.admit("ip", 2), Ok(()));
        assert_eq!(limiter.admit("ip", 3), Err(4_999));
        assert_eq!(limiter.admit("other", 3), Ok(()));
        limiter.clear("ip");
        assert_eq!(limiter.admit("ip", 4), Ok(()));
    }

    /// The map never holds more than its bound; stale entries go first,
    /// then unlocked ones, and a lockout survives a flood of new keys.
    #[test]
    fn the_map_is_bounded_and_keeps_lockouts() {
        let limiter = Limiter::new(RULE, 4);
        for _ in 0..3 {
            limiter.record("victim", 0);
        }
        assert!(limiter.check("victim", 1).is_err());
        for n in 0..100 {
            limiter.record(&format!("flood{n}"), 10 + n);
            assert!(limiter.len() <= 4);
        }
        assert!(limiter.check("victim", 200).is_err(), "lockout kept");
    }
}
