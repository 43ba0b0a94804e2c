//! In-flight admission: which requests may run now.
//!
//! A request takes its permit only once its head is parsed and its body has
//! arrived (see `body.rs`), so slow clients never hold one. Besides the
//! node-wide pool (`http_inflight_max`), one app (the admin API counts as
//! one) and one client address each hold at most a share of it, so neither a
//! flood on one app nor one client can take every permit. Any refusal is 503
//! `overloaded` at once, never a queue.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The share of the in-flight pool the admin API counts against (no app can
/// be named `_`).
pub const ADMIN_SHARE: &str = "_";

/// Which limit refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{limit} requests are in flight (http_inflight_max); retry shortly")]
    Node { limit: usize },
    #[error("{limit} requests to {app} are in flight (http_inflight_per_app_max); retry shortly")]
    App { app: String, limit: usize },
    #[error(
        "{limit} requests from {client} are in flight (http_inflight_per_client_max); retry shortly"
    )]
    Client { client: IpAddr, limit: usize },
}

/// The in-flight limits.
pub struct Admission {
    inflight: Semaphore,
    inflight_max: usize,
    apps: Shares<String>,
    clients: Shares<IpAddr>,
}

/// Held while a request runs; dropping it frees every share it took.
pub struct Admitted<'a> {
    _permit: SemaphorePermit<'a>,
    _app: ShareGuard<'a, String>,
    _client: ShareGuard<'a, IpAddr>,
}

impl Admission {
    /// Shares above the pool are clamped to it.
    pub fn new(inflight_max: usize, per_app_max: usize, per_client_max: usize) -> Self {
        Admission {
            inflight: Semaphore::new(inflight_max),
            inflight_max,
            apps: Shares::new(per_app_max.min(inflight_max)),
            clients: Shares::new(per_client_max.min(inflight_max)),
        }
    }

    /// Admits a request to `app` (or [`ADMIN_SHARE`]) from `client`.
    pub fn admit(&self, app: &str, client: IpAddr) -> Result<Admitted<'_>, Refusal> {
        let permit = self.inflight.try_acquire().map_err(|_| Refusal::Node {
            limit: self.inflight_max,
        })?;
        let app_guard = self.apps.take(app).ok_or_else(|| Refusal::App {
            app: app.to_string(),
            limit: self.apps.max,
        })?;
        let client_guard = self.clients.take(&client).ok_or(Refusal::Client {
            client,
            limit: self.clients.max,
        })?;
        Ok(Admitted {
            _permit: permit,
            _app: app_guard,
            _client: client_guard,
        })
    }
}

/// Counts per key, each at most `max`. Keys at zero are removed so that
/// requests naming random apps cannot grow the map.
struct Shares<K> {
    counts: Mutex<HashMap<K, usize>>,
    max: usize,
}

struct ShareGuard<'a, K: Hash + Eq> {
    shares: &'a Shares<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> Shares<K> {
    fn new(max: usize) -> Self {
        Shares {
            counts: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn take<Q>(&self, key: &Q) -> Option<ShareGuard<'_, K>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        match counts.get_mut(key) {
            Some(count) if *count >= self.max => return None,
            Some(count) => *count += 1,
            None => {
                counts.insert(key.to_owned(), 1);
            }
        }
        Some(ShareGuard {
            shares: self,
            key: key.to_owned(),
        })
    }
}

impl<K: Hash + Eq> Drop for ShareGuard<'_, K> {
    fn drop(&mut self) {
        let mut counts = self.shares.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn one_app_or_client_cannot_take_every_permit() {
        let admission = Admission::new(5, 2, 3);
        let first = admission.admit("shop", A).expect("1");
        let _second = admission.admit("shop", B).expect("2");
        assert!(matches!(
            admission.admit("shop", A),
            Err(Refusal::App { limit: 2, .. })
        ));
        let _third = admission.admit(ADMIN_SHARE, A).expect("admin");
        let _fourth = admission.admit("blog", A).expect("4");
        assert!(matches!(
            admission.admit("wiki", A),
            Err(Refusal::Client { limit: 3, .. })
        ));
        let _fifth = admission.admit("blog", B).expect("other client");
        assert!(matches!(
            admission.admit("wiki", B),
            Err(Refusal::Node { limit: 5 })
        ));
        drop(first);
        admission
            .admit("shop", B)
            .expect("a freed share is reusable");
    }

    #[test]
    fn idle_keys_are_forgotten_and_shares_are_clamped() {
        let admission = Admission::new(1, 10, 10);
        assert_eq!(admission.apps.max, 1);
        for n in 0..100 {
            let _admitted = admission.admit(&format!("app{n}"), A).expect("free");
        }
        assert!(admission.apps.counts.lock().expect("lock").is_empty());
        assert!(admission.clients.counts.lock().expect("lock").is_empty());
    }
}
