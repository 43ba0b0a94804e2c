//! `/_/metrics`: Prometheus text exposition (admin key). Each gauge or
//! counter is one row of the table in [`metrics`], so adding one is one row;
//! the per-app series and histograms are read from one
//! [`MetricsSnapshot`](crate::gateway::stats::MetricsSnapshot).

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::triggers::trigger_backlog;
use picloud_cluster::histogram::HistogramSnapshot;

use crate::gateway::auth::Caller;
use crate::gateway::stats::{MetricsSnapshot, STATUS_CLASSES};
use crate::gateway::{ApiError, Gateway};

/// `/_/metrics`: Prometheus text exposition (admin key).
#[utoipa::path(
    get,
    path = "/_/metrics",
    tag = "cluster",
    responses((status = 200, description = "Prometheus text exposition (version 0.0.4).", content_type = "text/plain")),
)]
pub async fn metrics(State(gateway): State<Gateway>, caller: Caller) -> Result<Response, ApiError> {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering;
    caller.require_admin()?;
    let snapshot = gateway.metrics_snapshot()?;
    let status = gateway.node.status();
    let disk = gateway.node.disk();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# HELP picloud_trigger_backlog Trigger runs pending, per app."
    );
    let _ = writeln!(text, "# TYPE picloud_trigger_backlog gauge");
    for (app, pending) in trigger_backlog(&gateway)? {
        let _ = writeln!(text, "picloud_trigger_backlog{{app=\"{app}\"}} {pending}");
    }
    let stats = &gateway.triggers;
    for (name, help, kind, value) in [
        (
            "picloud_trigger_runs_inflight",
            "Trigger runs executing on this node.",
            "gauge",
            stats.runs_inflight.load(Ordering::Relaxed),
        ),
        (
            "picloud_trigger_runs_completed_total",
            "Trigger runs this node completed.",
            "counter",
            stats.runs_completed.load(Ordering::Relaxed),
        ),
        (
            "picloud_trigger_runs_failed_total",
            "Trigger runs this node reported failed.",
            "counter",
            stats.runs_failed.load(Ordering::Relaxed),
        ),
        (
            "picloud_raft_is_leader",
            "1 on the Raft leader.",
            "gauge",
            u64::from(status.role.is_leader()),
        ),
        (
            "picloud_raft_term",
            "Current Raft term.",
            "gauge",
            status.term,
        ),
        (
            "picloud_raft_applied_index",
            "Last log index applied here.",
            "gauge",
            status.applied_index.unwrap_or(0),
        ),
        (
            "picloud_raft_log_entries",
            "Entries in this node's Raft log not yet purged into a snapshot.",
            "gauge",
            snapshot.raft_log_entries,
        ),
        (
            "picloud_http_requests_uncounted_total",
            "App requests not counted per app: metrics_apps_max apps already had series.",
            "counter",
            snapshot.requests_uncounted,
        ),
        (
            "picloud_disk_available_bytes",
            "Free bytes on the data dir's disk (writes fail with disk_full below the reserve).",
            "gauge",
            disk.available_bytes().unwrap_or(0),
        ),
        (
            "picloud_disk_reserve_bytes",
            "The data disk's free-space reserve (disk_reserve_bytes).",
            "gauge",
            disk.reserve_bytes(),
        ),
        (
            "picloud_files_uploads_inflight",
            "File uploads being received on this node (files_uploads_inflight_max).",
            "gauge",
            gateway.files.uploads_inflight() as u64,
        ),
        (
            "picloud_files_downloads_inflight",
            "File downloads being served from this node (files_downloads_inflight_max).",
            "gauge",
            gateway.files.downloads_inflight() as u64,
        ),
        (
            "picloud_files_repair_pending",
            "Block copies missing from their replicas at the end of the repair duty's last full pass (the leader's figure; 0 elsewhere).",
            "gauge",
            gateway.node.files().repair_pending(),
        ),
        (
            "picloud_files_gc_removed_total",
            "Unreferenced blocks this node's GC removed since it started.",
            "counter",
            gateway.files.service.gc_removed_total(),
        ),
    ] {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP picloud_actor_restarts_total Restarts of a supervised actor after a panic.\n\
         # TYPE picloud_actor_restarts_total counter"
    );
    for (actor, restarts) in &snapshot.actor_restarts {
        let _ = writeln!(
            text,
            "picloud_actor_restarts_total{{actor=\"{actor}\"}} {restarts}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP picloud_realtime_subscribers Realtime (SSE) subscribers on this node.\n\
         # TYPE picloud_realtime_subscribers gauge\n\
         picloud_realtime_subscribers {}\n\
         # HELP picloud_pubsub_dropped_total Ephemeral pub/sub frames dropped (a peer's full queue or this node's full inbox).\n\
         # TYPE picloud_pubsub_dropped_total counter\n\
         picloud_pubsub_dropped_total {}",
        gateway.realtime.subscriber_count(),
        gateway.node.pubsub().dropped()
    );
    per_app(&mut text, &snapshot);
    histogram(
        &mut text,
        "picloud_raft_commit_seconds",
        Some(
            "From proposing a write on this node to it being applied here (forwarded writes included).",
        ),
        "",
        &snapshot.raft_commit,
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

/// The per-app series: requests per status class, latency, script time.
fn per_app(text: &mut String, snapshot: &MetricsSnapshot) {
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "# HELP picloud_http_requests_total App requests answered by this node, per app and status class.\n\
         # TYPE picloud_http_requests_total counter"
    );
    for app in &snapshot.apps {
        for (class, count) in STATUS_CLASSES.iter().zip(app.requests) {
            let _ = writeln!(
                text,
                "picloud_http_requests_total{{app=\"{}\",class=\"{class}\"}} {count}",
                app.app
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP picloud_http_request_duration_seconds Time from an app request's arrival to its response, per app.\n\
         # TYPE picloud_http_request_duration_seconds histogram"
    );
    for app in &snapshot.apps {
        histogram(
            text,
            "picloud_http_request_duration_seconds",
            None,
            &format!("app=\"{}\"", app.app),
            &app.duration,
        );
    }
    let _ = writeln!(
        text,
        "# HELP picloud_script_seconds_total Seconds an app's scripts (routes and trigger runs) spent on a script thread here.\n\
         # TYPE picloud_script_seconds_total counter"
    );
    for app in &snapshot.apps {
        let _ = writeln!(
            text,
            "picloud_script_seconds_total{{app=\"{}\"}} {}",
            app.app, app.script_seconds
        );
    }
}

/// One Prometheus histogram: cumulative `_bucket`s, `_sum`, `_count`;
/// `labels` (`app="x"`, or empty) on each; the HELP and TYPE lines when
/// `help` is given (a labelled family prints them once, before its first).
fn histogram(
    text: &mut String,
    name: &str,
    help: Option<&str>,
    labels: &str,
    histogram: &HistogramSnapshot,
) {
    use std::fmt::Write as _;
    if let Some(help) = help {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} histogram");
    }
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, count) in &histogram.buckets {
        let le = if bound.is_infinite() {
            "+Inf".to_string()
        } else {
            bound.to_string()
        };
        let _ = writeln!(text, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}");
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(text, "{name}_sum{braces} {}", histogram.sum_seconds);
    let _ = writeln!(text, "{name}_count{braces} {}", histogram.count);
}
