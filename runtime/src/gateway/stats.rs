//! This node's figures for `/_/metrics` and the dashboard: HTTP requests
//! and latency per app (counted here, in the app request path), script time
//! per app (counted by the CPU gate in `actors`), Raft commit latency and
//! log size (`cluster::Node`), actor restarts. [`Gateway::metrics_snapshot`]
//! reads them all at once as a [`MetricsSnapshot`].
//!
//! Recording costs a read lock on a map (uncontended: writers only add an
//! app's first request or prune deleted apps) and a few relaxed atomic
//! increments. Memory is bounded: an app gets series only once a request
//! found it existing, deleted apps are dropped at each snapshot, and at most
//! `metrics_apps_max` apps have series (requests to any more are not
//! counted per app, only in [`HttpStats::uncounted`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use picloud_cluster::histogram::{Histogram, HistogramSnapshot};

use super::{ApiError, Gateway};

/// The status classes counted, in `picloud_http_requests_total`'s `class`.
pub const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Requests and latency of one app on this node.
#[derive(Debug, Default)]
struct AppHttp {
    /// Responses per [`STATUS_CLASSES`] entry.
    classes: [AtomicU64; 4],
    duration: Histogram,
}

/// Per-app HTTP counters of one node.
#[derive(Debug)]
pub struct HttpStats {
    apps_max: usize,
    apps: RwLock<HashMap<String, Arc<AppHttp>>>,
    uncounted: AtomicU64,
}

impl HttpStats {
    /// `apps_max`: most apps with series (`metrics_apps_max`).
    pub fn new(apps_max: usize) -> HttpStats {
        HttpStats {
            apps_max,
            apps: RwLock::new(HashMap::new()),
            uncounted: AtomicU64::new(0),
        }
    }

    /// Counts one answered request of `app`. `exists` is asked only on an
    /// app's first request (or while the cap is reached), so requests to
    /// apps that do not exist make no series.
    pub fn record(
        &self,
        app: &str,
        status: StatusCode,
        elapsed: Duration,
        exists: impl FnOnce() -> bool,
    ) {
        let Some(class) = class_of(status) else {
            return;
        };
        let known = self
            .apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned();
        let entry = match known {
            Some(entry) => entry,
            None => {
                if !exists() {
                    return;
                }
                let mut apps = self.apps.write().unwrap_or_else(|e| e.into_inner());
                if apps.len() >= self.apps_max && !apps.contains_key(app) {
                    self.uncounted.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                apps.entry(app.to_string()).or_default().clone()
            }
        };
        entry.classes[class].fetch_add(1, Ordering::Relaxed);
        entry.duration.record(elapsed);
    }

    /// Requests to existing apps not counted per app because
    /// `metrics_apps_max` apps already had series.
    pub fn uncounted(&self) -> u64 {
        self.uncounted.load(Ordering::Relaxed)
    }

    /// Drops the series of every app not in `apps` (deleted ones).
    fn retain(&self, apps: &BTreeSet<String>) {
        self.apps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|app, _| apps.contains(app));
    }

    fn get(&self, app: &str) -> Option<Arc<AppHttp>> {
        self.apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
    }
}

/// The index in [`STATUS_CLASSES`] of `status`; `None` for 1xx.
fn class_of(status: StatusCode) -> Option<usize> {
    match status.as_u16() {
        200..=299 => Some(0),
        300..=399 => Some(1),
        400..=499 => Some(2),
        500.. => Some(3),
        _ => None,
    }
}

/// One app's figures on this node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppMetrics {
    pub app: String,
    /// Responses per [`STATUS_CLASSES`] entry (`[2xx, 3xx, 4xx, 5xx]`).
    pub requests: [u64; 4],
    /// Time from a request's arrival at the gateway to its response.
    pub duration: HistogramSnapshot,
    /// Seconds the app's scripts (routes and trigger runs) spent on a script
    /// thread here.
    pub script_seconds: f64,
}

/// Everything `/_/metrics` adds for issue 16, read at one moment: what the
/// dashboard's metrics overview draws (requests, errors, script time, Raft
/// commit latency). Counters are since this node started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Every existing app, by name (apps with no request and no script time
    /// here have zeros).
    pub apps: Vec<AppMetrics>,
    /// Requests to existing apps past `metrics_apps_max` apps.
    pub requests_uncounted: u64,
    /// From proposing a write on this node to it being applied here.
    pub raft_commit: HistogramSnapshot,
    /// Entries in this node's Raft log not yet purged.
    pub raft_log_entries: u64,
    /// Restarts after a panic, per actor (those that restarted at least once).
    pub actor_restarts: Vec<(&'static str, u64)>,
}

impl Gateway {
    /// Reads this node's figures (see [`MetricsSnapshot`]), and drops the
    /// series of apps deleted since the last call.
    pub fn metrics_snapshot(&self) -> Result<MetricsSnapshot, ApiError> {
        let names: BTreeSet<String> = self
            .node
            .reader()
            .apps()?
            .into_iter()
            .map(|record| record.name)
            .collect();
        self.http_stats.retain(&names);
        self.shares.retain_apps(|app| names.contains(app));
        let script: HashMap<String, f64> = self.shares.script_seconds().into_iter().collect();
        let apps = names
            .iter()
            .map(|app| {
                let http = self.http_stats.get(app);
                let requests = http.as_ref().map_or([0; 4], |http| {
                    std::array::from_fn(|class| http.classes[class].load(Ordering::Relaxed))
                });
                AppMetrics {
                    app: app.clone(),
                    requests,
                    duration: http.map_or_else(
                        || Histogram::default().snapshot(),
                        |http| http.duration.snapshot(),
                    ),
                    script_seconds: script.get(app).copied().unwrap_or(0.0),
                }
            })
            .collect();
        Ok(MetricsSnapshot {
            apps,
            requests_uncounted: self.http_stats.uncounted(),
            raft_commit: self.node.commit_seconds(),
            raft_log_entries: self.node.log_entries(),
            actor_restarts: self.restarts.snapshot(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_class_for_existing_apps_up_to_the_cap() {
        let stats = HttpStats::new(2);
        let ms = Duration::from_millis;
        stats.record("a", StatusCode::OK, ms(1), || true);
        stats.record("a", StatusCode::NOT_FOUND, ms(2), || unreachable!("known"));
        stats.record("a", StatusCode::BAD_GATEWAY, ms(3), || {
            unreachable!("known")
        });
        stats.record("a", StatusCode::SWITCHING_PROTOCOLS, ms(3), || true);
        stats.record("ghost", StatusCode::NOT_FOUND, ms(1), || false);
        stats.record("b", StatusCode::FOUND, ms(1), || true);
        stats.record("c", StatusCode::OK, ms(1), || true);
        let a = stats.get("a").expect("a has series");
        let counts: Vec<u64> = a
            .classes
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [1, 0, 1, 1]);
        assert_eq!(a.duration.snapshot().count, 3);
        assert!(stats.get("ghost").is_none(), "no series for a missing app");
        assert!(stats.get("c").is_none(), "past the cap");
        assert_eq!(stats.uncounted(), 1);
        stats.retain(&BTreeSet::from(["b".to_string()]));
        assert!(stats.get("a").is_none(), "a was deleted");
        stats.record("c", StatusCode::OK, ms(1), || true);
        assert!(stats.get("c").is_some(), "room again");
    }
}
