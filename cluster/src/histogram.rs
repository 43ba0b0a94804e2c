//! `Histogram`: a latency histogram with fixed buckets, kept in atomics so
//! recording costs a few relaxed increments and no lock. The node's Raft
//! commit latency is one (`Node::commit_seconds`); the gateway keeps one
//! per app for its request latency. `/_/metrics` prints them as Prometheus
//! histograms (cumulative `_bucket{le=..}`, `_sum`, `_count`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the buckets, in seconds (a last `+Inf` bucket is
/// implied): from a fast kv read on a Pi to a slow fsync on an SD card.
pub const BUCKETS_SECONDS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Counts of observations per bucket, their sum and their number.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound of [`BUCKETS_SECONDS`] and above
    /// the previous one (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative,
    /// ending with `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl HistogramSnapshot {
    /// The mean observation in seconds (0 when there is none).
    pub fn mean_seconds(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_seconds / self.count as f64
        }
    }
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let buckets = BUCKETS_SECONDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            // The buckets' total: `+Inf` must equal `_count`.
            count: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let histogram = Histogram::default();
        histogram.record(Duration::from_micros(500));
        histogram.record(Duration::from_millis(1));
        histogram.record(Duration::from_millis(30));
        histogram.record(Duration::from_secs(9));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets[0], (0.001, 2));
        assert_eq!(snapshot.buckets[4], (0.025, 2));
        assert_eq!(snapshot.buckets[5], (0.05, 3));
        assert_eq!(snapshot.buckets[9], (5.0, 3));
        assert_eq!(snapshot.buckets[10], (f64::INFINITY, 4));
        assert!((snapshot.sum_seconds - 9.0315).abs() < 1e-9);
    }
}
