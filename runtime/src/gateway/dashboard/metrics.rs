//! The metrics page: small charts of this node's figures over the last
//! minutes (requests, errors, script time, Raft commit latency, trigger
//! runs, Raft entries applied), drawn here as inline SVG, no chart library.
//!
//! ```text
//!  dashboard_sampler duty ── every SAMPLE_INTERVAL_MS ──▶ sample(gateway) ─▶ Ring (SAMPLES_MAX, oldest dropped)
//!  GET /metrics ─▶ Ring snapshot ─▶ series (counter → rate per second) ─▶ <svg>
//! ```
//!
//! The figures are this node's alone (each node samples itself); another
//! node's page shows its own. A figure that could not be read (or, for the
//! commit latency, had no writes in the interval) is `None` in a [`Sample`]
//! and drawn as "no data".

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use maud::{Markup, html};
use picloud_actors::host::now_ms;

use super::layout;
use super::{PageResult, Session};
use crate::gateway::Gateway;
use crate::gateway::stats::AppMetrics;

/// How often the sampler reads the figures.
pub const SAMPLE_INTERVAL_MS: u64 = 5_000;
/// Most samples kept: 120 × 5 s is the last 10 minutes.
pub const SAMPLES_MAX: usize = 120;
/// How often the page, with JavaScript on, redraws its charts.
pub const PAGE_REFRESH_MS: u64 = 5_000;

/// This node's figures at one moment. Counters (`*_total`) only grow
/// while the node runs; the charts draw their rate between samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    /// App requests answered (`picloud_http_requests_total`, every app).
    pub http_requests_total: Option<u64>,
    /// Of those, answered with a 5xx status.
    pub http_errors_total: Option<u64>,
    /// Milliseconds spent running scripts.
    pub script_time_ms_total: Option<u64>,
    /// The mean Raft commit latency (propose to applied here) of the writes
    /// since the sample before, in ms; `None` when there were none.
    pub raft_commit_latency_ms: Option<f64>,
    /// Writes this node has timed from propose to applied, and their total
    /// seconds (the running sums the mean above is taken from).
    pub raft_commits_total: u64,
    pub raft_commit_seconds_total: f64,
    pub trigger_runs_completed_total: Option<u64>,
    pub trigger_runs_failed_total: Option<u64>,
    /// The last Raft log index applied here.
    pub raft_applied_index: Option<u64>,
}

/// This node's figures now.
///
/// The figures come from the node's metrics snapshot (the one `/_/metrics`
/// prints): request and error counts and script time summed over the apps,
/// and the Raft commit latency as the mean of the writes since `before`.
pub fn sample(gateway: &Gateway, before: Option<&Sample>) -> Sample {
    let triggers = &gateway.triggers;
    let snapshot = gateway.metrics_snapshot().ok();
    let sum = |figure: fn(&AppMetrics) -> u64| {
        snapshot
            .as_ref()
            .map(|snapshot| snapshot.apps.iter().map(figure).sum())
    };
    let commit = snapshot.as_ref().map(|snapshot| &snapshot.raft_commit);
    let (commits, commit_seconds) = commit.map_or((0, 0.0), |c| (c.count, c.sum_seconds));
    let raft_commit_latency_ms = before.and_then(|before| {
        let writes = commits.checked_sub(before.raft_commits_total)?;
        (writes > 0)
            .then(|| (commit_seconds - before.raft_commit_seconds_total) * 1_000.0 / writes as f64)
    });
    Sample {
        at_ms: now_ms(),
        http_requests_total: sum(|app| app.requests.iter().sum()),
        http_errors_total: sum(|app| app.requests[3]),
        script_time_ms_total: sum(|app| (app.script_seconds * 1_000.0) as u64),
        raft_commit_latency_ms,
        raft_commits_total: commits,
        raft_commit_seconds_total: commit_seconds,
        trigger_runs_completed_total: Some(triggers.runs_completed.load(Ordering::Relaxed)),
        trigger_runs_failed_total: Some(triggers.runs_failed.load(Ordering::Relaxed)),
        raft_applied_index: gateway.node.status().applied_index,
    }
}

/// The last `capacity` samples, oldest first.
#[derive(Debug)]
pub struct Ring {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            samples: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// Adds `sample`, dropping the oldest when full.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn to_vec(&self) -> Vec<Sample> {
        self.samples.iter().cloned().collect()
    }
}

/// The gateway's samples, shared by the sampler and the page.
#[derive(Debug)]
pub struct Samples(Mutex<Ring>);

impl Default for Samples {
    fn default() -> Self {
        Samples(Mutex::new(Ring::new(SAMPLES_MAX)))
    }
}

impl Samples {
    pub fn record(&self, sample: Sample) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sample);
    }

    /// The newest sample.
    pub fn last(&self) -> Option<Sample> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .samples
            .back()
            .cloned()
    }

    pub fn snapshot(&self) -> Vec<Sample> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).to_vec()
    }
}

/// The sampler: one sample at once, then one every [`SAMPLE_INTERVAL_MS`].
/// Run as the supervised duty `dashboard_sampler` (see `serve.rs`).
pub async fn run(gateway: Gateway) {
    let mut ticks = tokio::time::interval(Duration::from_millis(SAMPLE_INTERVAL_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let before = gateway.samples.last();
        gateway.samples.record(sample(&gateway, before.as_ref()));
    }
}

/// One chart's points: (time in ms, value).
pub type Series = Vec<(u64, f64)>;

/// The rate per second of a counter between consecutive samples that both
/// have it (a counter that went down, a restart, gives no point).
pub fn rate(samples: &[Sample], counter: impl Fn(&Sample) -> Option<u64>) -> Series {
    samples
        .windows(2)
        .filter_map(|pair| {
            let (a, b) = (&pair[0], &pair[1]);
            let (from, to) = (counter(a)?, counter(b)?);
            let elapsed_ms = b.at_ms.checked_sub(a.at_ms).filter(|ms| *ms > 0)?;
            let delta = to.checked_sub(from)?;
            Some((b.at_ms, delta as f64 * 1000.0 / elapsed_ms as f64))
        })
        .collect()
}

/// A gauge's value at each sample that has it.
pub fn gauge(samples: &[Sample], value: impl Fn(&Sample) -> Option<f64>) -> Series {
    samples
        .iter()
        .filter_map(|sample| Some((sample.at_ms, value(sample)?)))
        .collect()
}

const CHART_WIDTH: f64 = 320.0;
const CHART_HEIGHT: f64 = 96.0;
const CHART_TOP: f64 = 14.0;

/// A number as a chart labels it.
fn figure(value: f64) -> String {
    if value >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// One chart as inline SVG: the series over the window ending `now_ms`,
/// its latest and highest value; "no data" when the figure is not
/// measured, "collecting…" before it has two points.
pub fn chart(
    id: &str,
    title: &str,
    unit: &str,
    series: &Series,
    measured: bool,
    now_ms: u64,
) -> Markup {
    let window_ms = SAMPLE_INTERVAL_MS * SAMPLES_MAX as u64;
    let start_ms = now_ms.saturating_sub(window_ms);
    let max = series.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let points: Vec<String> = series
        .iter()
        .filter(|(at, _)| *at >= start_ms)
        .map(|(at, value)| {
            let x = (at - start_ms) as f64 / window_ms as f64 * CHART_WIDTH;
            let y = CHART_HEIGHT - value / top * (CHART_HEIGHT - CHART_TOP);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let latest = series.last().map(|(_, v)| *v);
    let label = match (measured, latest) {
        (false, _) => format!("{title}: no data"),
        (true, None) => format!("{title}: collecting"),
        (true, Some(latest)) => format!(
            "{title}: now {} {unit}, highest {} {unit} in the last {} minutes",
            figure(latest),
            figure(max),
            window_ms / 60_000
        ),
    };
    html! {
        figure.chart #(id) data-measured=(measured) {
            figcaption {
                strong { (title) }
                " "
                @match (measured, latest) {
                    (false, _) => span.muted { "no data" },
                    (true, None) => span.muted { "collecting…" },
                    (true, Some(latest)) => span.latest { (figure(latest)) " " (unit) },
                }
            }
            svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(label)
                viewBox={ "0 0 " (CHART_WIDTH) " " (CHART_HEIGHT) } width=(CHART_WIDTH) height=(CHART_HEIGHT) {
                line.axis x1="0" y1=(CHART_HEIGHT) x2=(CHART_WIDTH) y2=(CHART_HEIGHT) {}
                @if measured && points.len() >= 2 {
                    text.scale x="2" y="10" { "max " (figure(max)) }
                    polyline.series points=(points.join(" ")) {}
                } @else if measured && points.len() == 1 {
                    text.scale x="2" y="10" { (figure(max)) }
                    circle.series cx=(points[0].split(',').next().unwrap_or("0")) cy=(points[0].split(',').nth(1).unwrap_or("0")) r="2" {}
                } @else {
                    text.empty x=(CHART_WIDTH / 2.0) y=(CHART_HEIGHT / 2.0) text-anchor="middle" {
                        @if measured { "collecting…" } @else { "no data" }
                    }
                }
            }
        }
    }
}

/// `GET /metrics`: any signed-in caller (node totals only, no app's own
/// figures, like the cluster page).
pub async fn overview(State(gateway): State<Gateway>, session: Session) -> PageResult {
    let samples = gateway.samples.snapshot();
    let now = now_ms();
    let node = gateway.node.id();
    let has = |field: fn(&Sample) -> bool| samples.iter().any(field);
    let charts = [
        (
            "chart-requests",
            "Requests",
            "/s",
            rate(&samples, |s| s.http_requests_total),
            has(|s| s.http_requests_total.is_some()),
        ),
        (
            "chart-errors",
            "Errors (5xx)",
            "/s",
            rate(&samples, |s| s.http_errors_total),
            has(|s| s.http_errors_total.is_some()),
        ),
        (
            "chart-script-time",
            "Script time",
            "ms/s",
            rate(&samples, |s| s.script_time_ms_total),
            has(|s| s.script_time_ms_total.is_some()),
        ),
        (
            "chart-raft-commit",
            "Raft commit latency",
            "ms",
            gauge(&samples, |s| s.raft_commit_latency_ms),
            has(|s| s.raft_commit_latency_ms.is_some()),
        ),
        (
            "chart-trigger-runs",
            "Trigger runs",
            "/s",
            rate(&samples, |s| s.trigger_runs_completed_total),
            has(|s| s.trigger_runs_completed_total.is_some()),
        ),
        (
            "chart-trigger-failures",
            "Trigger failures",
            "/s",
            rate(&samples, |s| s.trigger_runs_failed_total),
            has(|s| s.trigger_runs_failed_total.is_some()),
        ),
        (
            "chart-raft-applied",
            "Raft entries applied",
            "/s",
            rate(&samples, |s| s.raft_applied_index),
            has(|s| s.raft_applied_index.is_some()),
        ),
    ];
    let body = html! {
        h1 { "Metrics" }
        p {
            "Node " (node) "'s own figures (each node samples itself), every "
            (SAMPLE_INTERVAL_MS / 1000) " s over the last " (SAMPLE_INTERVAL_MS * SAMPLES_MAX as u64 / 60_000)
            " minutes; " (samples.len()) " samples so far. The whole set is at "
            code { "/_/metrics" } " (admin key)."
        }
        div.charts #charts data-refresh-ms=(PAGE_REFRESH_MS) {
            @for (id, title, unit, series, measured) in &charts {
                (chart(id, title, unit, series, *measured, now))
            }
        }
    };
    Ok(layout::ok("Metrics", &session, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, requests: Option<u64>) -> Sample {
        Sample {
            at_ms: ms,
            http_requests_total: requests,
            ..Sample::default()
        }
    }

    #[test]
    fn the_ring_keeps_the_last_samples() {
        let mut ring = Ring::new(3);
        assert!(ring.to_vec().is_empty());
        for ms in 1..=5 {
            ring.push(at(ms, None));
        }
        let kept: Vec<u64> = ring.to_vec().iter().map(|s| s.at_ms).collect();
        assert_eq!(kept, vec![3, 4, 5], "oldest dropped first");
        let mut one = Ring::new(0);
        one.push(at(1, None));
        one.push(at(2, None));
        assert_eq!(one.to_vec().len(), 1, "a capacity of 0 keeps one");
        let samples = Samples::default();
        for ms in 0..(SAMPLES_MAX as u64 * 3) {
            samples.record(at(ms, None));
        }
        assert_eq!(samples.snapshot().len(), SAMPLES_MAX, "bounded");
    }

    #[test]
    fn counters_become_rates() {
        let samples = [
            at(0, Some(10)),
            at(5_000, Some(60)),
            at(10_000, None),
            at(15_000, Some(100)),
            at(20_000, Some(5)),
            at(25_000, Some(30)),
        ];
        assert_eq!(
            rate(&samples, |s| s.http_requests_total),
            vec![(5_000, 10.0), (25_000, 5.0)],
            "gaps and a restart give no point"
        );
        assert_eq!(rate(&samples[..1], |s| s.http_requests_total), vec![]);
    }

    #[test]
    fn charts_say_no_data_or_draw_a_line() {
        let none = chart("c", "Requests", "/s", &vec![], false, 1_000_000).into_string();
        assert!(none.contains("<svg") && none.contains("no data"), "{none}");
        let series = vec![(990_000, 1.0), (995_000, 4.0), (1_000_000, 2.0)];
        let drawn = chart("c", "Requests", "/s", &series, true, 1_000_000).into_string();
        assert!(drawn.contains("<polyline"), "{drawn}");
        assert!(drawn.contains("now 2 /s, highest 4 /s"), "{drawn}");
        assert!(
            drawn.contains("320.0,"),
            "the latest point at the right edge: {drawn}"
        );
    }
}
