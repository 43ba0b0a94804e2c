//! An app's log lines from every node, recent or followed as server-sent
//! events (`/apps/{app}/logs`). Each line carries the node it was logged on;
//! members that do not answer in time are listed in `unavailable` (or sent
//! as an `unavailable` event when following), never waited for.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use picloud_actors::FollowEvent;
use picloud_actors::logs::{cluster_recent, follow_local, follow_member};
use serde::Deserialize;
use serde_json::json;

use super::checks::require_app;
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, ApiQuery, Gateway};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct LogOptions {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    follow: Option<bool>,
}

pub(crate) type Events = Pin<Box<dyn Stream<Item = FollowEvent> + Send>>;

#[utoipa::path(
    get,
    path = "/apps/{app}/logs",
    tag = "logs",
    params(("app" = String, Path, description = "The app's name."), LogOptions),
    responses((status = 200, description = "Recent log lines (JSON), or a stream of them with `follow=true`.")),
)]
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
    let node = &gateway.node;
    if options.follow.unwrap_or(false) {
        let events = follow(&gateway, &app, limit)
            .await
            .map(|event| Ok::<_, Infallible>(sse_event(&event)));
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    }
    let recent = cluster_recent(node, gateway.logs.recent(&app, limit), &app, limit).await;
    Ok(Json(json!({
        "app": app,
        "lines": recent.lines,
        "unavailable": recent.unavailable,
    }))
    .into_response())
}

/// `app`'s last `limit` lines on every member, then every new one as it is
/// logged, each member's in its own order; a member that stops answering
/// is one `Unavailable` event, never waited for. Shared by the admin API
/// and the dashboard.
pub(crate) async fn follow(gateway: &Gateway, app: &str, limit: usize) -> Events {
    let node = &gateway.node;
    // Subscribe before asking the others, so no line of this node falls
    // between the backlog and the live stream.
    let (backlog, receiver) = gateway.logs.follow(app, limit);
    let recent = cluster_recent(node, backlog, app, limit).await;
    let mut first: Vec<FollowEvent> = recent
        .unavailable
        .iter()
        .map(|member| FollowEvent::Unavailable(*member))
        .collect();
    first.extend(recent.lines.into_iter().map(FollowEvent::Line));
    let mut live: Vec<Events> = vec![Box::pin(follow_local(node.id(), receiver))];
    for (member, peer, next_seq) in recent.answered {
        live.push(Box::pin(follow_member(
            node.clone(),
            member,
            peer,
            app.to_string(),
            next_seq,
        )));
    }
    Box::pin(futures::stream::iter(first).chain(futures::stream::select_all(live)))
}

/// A follow event on the wire: `log` (a line as JSON), `unavailable`
/// (`{"node"}`: that member's lines stop) or `lagged` (`{"node","skipped"}`).
pub(crate) fn sse_event(event: &FollowEvent) -> Event {
    match event {
        FollowEvent::Line(line) => Event::default()
            .event("log")
            .data(serde_json::to_string(line).unwrap_or_default()),
        FollowEvent::Unavailable(node) => Event::default()
            .event("unavailable")
            .data(json!({"node": node}).to_string()),
        FollowEvent::Lagged { node, skipped } => Event::default()
            .event("lagged")
            .data(json!({"node": node, "skipped": skipped}).to_string()),
    }
}
