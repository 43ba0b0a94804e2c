//! An app's live logs: the recent lines of every node merged by time,
//! drawn here (it works with JavaScript off), then new lines appended in
//! the page by `dashboard.js` from a server-sent event stream that the
//! session cookie authenticates.
//!
//! ```text
//!  GET /apps/{app}/logs       cluster_recent (a member that does not answer
//!                             in time is listed as unavailable, not waited for)
//!  GET /apps/{app}/logs/live  text/event-stream: the admin API's follow
//!                             (`log`, `unavailable`, `lagged` events); the page
//!                             skips lines it already has (node, seq) and keeps
//!                             the last LOG_LINES_SHOWN_MAX
//! ```

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use maud::html;
use picloud_actors::logs::cluster_recent;
use picloud_lua_sdk::Code;
use tokio::sync::Semaphore;

use super::app::record;
use super::layout;
use super::{BASE, PageError, PageResult, Session};
use crate::gateway::{ApiError, Gateway, admin};

/// Most lines the page shows, drawn or appended (older ones are dropped).
pub const LOG_LINES_SHOWN_MAX: usize = 500;
/// Most live log streams this node serves to dashboards at once (each holds
/// a subscription here and a poll of every other member).
pub const LIVE_LOG_STREAMS_MAX: usize = 64;
/// How often an idle stream sends a comment, so proxies keep it open.
const KEEP_ALIVE_S: u64 = 15;

fn streams() -> Arc<Semaphore> {
    static STREAMS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    STREAMS
        .get_or_init(|| Arc::new(Semaphore::new(LIVE_LOG_STREAMS_MAX)))
        .clone()
}

/// `GET /apps/{app}/logs`: needs read.
pub async fn recent(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
) -> PageResult {
    session.caller.require_read(&app)?;
    record(&gateway, &app)?;
    let limit = LOG_LINES_SHOWN_MAX.min(gateway.limits.logs.lines_per_app_max);
    let local = gateway.logs.recent(&app, limit);
    let recent = cluster_recent(&gateway.node, local, &app, limit).await;
    let body = html! {
        h1 { (app) }
        (layout::app_nav(&app, "Logs"))
        h2 { "Live logs" }
        p.muted {
            "Every node's recent lines of this app, oldest first; new lines appear as they are logged "
            "(with JavaScript on; reload otherwise). The page keeps the last " (limit) "."
        }
        div #log-status role="status" aria-live="polite" {
            @for node in &recent.unavailable {
                p.error data-unavailable=(node) { "Node " (node) " did not answer: its lines are missing." }
            }
        }
        @if recent.lines.is_empty() {
            p.muted #no-lines { "No lines yet." }
        }
        ol.log #log-lines data-live={ (BASE) "/apps/" (app) "/logs/live" } data-lines-max=(limit) {
            @for line in &recent.lines {
                li data-key={ (line.node) ":" (line.seq) } data-level=(line.level) {
                    time data-ts-ms=(line.ts_ms) { (layout::time(line.ts_ms)) }
                    " " span.node { "node " (line.node) }
                    " " span.level { (line.level) }
                    " " span.message { (line.message) }
                }
            }
        }
    };
    Ok(layout::ok(&format!("{app} logs"), &session, body))
}

/// `GET /apps/{app}/logs/live`: needs read; at most
/// [`LIVE_LOG_STREAMS_MAX`] at once on this node (503 `overloaded` past it).
pub async fn live(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
) -> Result<Response, PageError> {
    session.caller.require_read(&app)?;
    record(&gateway, &app)?;
    let permit = streams().try_acquire_owned().map_err(|_| {
        ApiError::new(
            Code::Overloaded,
            format!("{LIVE_LOG_STREAMS_MAX} live log streams are open on this node (LIVE_LOG_STREAMS_MAX); retry shortly"),
        )
    })?;
    let limit = LOG_LINES_SHOWN_MAX.min(gateway.limits.logs.lines_per_app_max);
    let events = admin::logs::follow(&gateway, &app, limit)
        .await
        .map(move |event| {
            // The permit lives as long as the stream.
            let _held = &permit;
            Ok::<_, Infallible>(admin::logs::sse_event(&event))
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(KEEP_ALIVE_S)))
        .into_response())
}
