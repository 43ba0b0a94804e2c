//! An app's log lines, recent or followed as server-sent events
//! (`/apps/{app}/logs`).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::checks::require_app;
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, ApiQuery, Gateway};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogOptions {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    follow: Option<bool>,
}

pub(super) async fn logs(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    ApiQuery(options): ApiQuery<LogOptions>,
) -> Result<Response, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let limit = options
        .limit
        .unwrap_or(100)
        .min(gateway.limits.logs.lines_per_app_max);
    if options.follow.unwrap_or(false) {
        let (backlog, receiver) = gateway.logs.follow(&app, limit);
        return Ok(Sse::new(follow_stream(backlog, receiver))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    }
    let lines = gateway.logs.recent(&app, limit);
    Ok(Json(json!({"app": app, "lines": lines})).into_response())
}

fn follow_stream(
    backlog: Vec<picloud_actors::LogLine>,
    receiver: tokio::sync::broadcast::Receiver<picloud_actors::LogLine>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let line_event = |line: &picloud_actors::LogLine| {
        Event::default()
            .id(line.seq.to_string())
            .event("log")
            .data(serde_json::to_string(line).unwrap_or_default())
    };
    let backlog = futures::stream::iter(backlog.into_iter().map(move |line| Ok(line_event(&line))));
    let live = futures::stream::unfold(receiver, move |mut receiver| async move {
        match receiver.recv().await {
            Ok(line) => Some((Ok(line_event(&line)), receiver)),
            Err(RecvError::Lagged(skipped)) => {
                let event = Event::default().event("lagged").data(skipped.to_string());
                Some((Ok(event), receiver))
            }
            Err(RecvError::Closed) => None,
        }
    });
    futures::StreamExt::chain(backlog, live)
}
