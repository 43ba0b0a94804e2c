//! Triggers: an app's dead letters (list, show, retry, delete) and the
//! trigger backlog the cluster status and metrics report.

use axum::Json;
use axum::extract::{Path, State};
use picloud_actors::host::now_ms;
use picloud_lua_sdk::Code;
use picloud_storage::Command;
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::{accepted, page_limit, require_app};
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, ApiQuery, Gateway};

/// Most dead letters one list page returns.
const DEAD_LETTERS_PAGE_MAX: usize = 1_000;

pub(crate) fn dead_letter_json(app: &str, letter: &picloud_storage::triggers::DeadLetter) -> Value {
    let event = picloud_actors::dispatcher::event_json(&letter.entry.event);
    json!({
        "id": letter.entry.id,
        "delivery_id": picloud_storage::triggers::delivery_id(app, letter.entry.id),
        "trigger": letter.entry.trigger,
        "code": letter.code,
        "error": letter.error,
        "event": event,
        "depth": letter.entry.depth,
        "attempts": letter
            .entry
            .attempts
            .iter()
            .map(|attempt| json!({"at_ms": attempt.at_ms, "error": attempt.error}))
            .collect::<Vec<_>>(),
        "dead_ms": letter.dead_ms,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadLetterPage {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/apps/{app}/dead-letters",
    tag = "triggers",
    params(("app" = String, Path, description = "The app's name."), DeadLetterPage),
    responses((status = 200, description = "A page of dead letters.")),
)]
pub(super) async fn dead_letters_list(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    ApiQuery(page): ApiQuery<DeadLetterPage>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let limit = page_limit(page.limit, DEAD_LETTERS_PAGE_MAX, "")?;
    gateway.node.read_barrier().await?;
    let letters = gateway
        .node
        .reader()
        .dead_letters(&app, page.after.unwrap_or(0), limit + 1)?;
    let more = letters.len() > limit;
    let items: Vec<Value> = letters
        .iter()
        .take(limit)
        .map(|letter| dead_letter_json(&app, letter))
        .collect();
    let cursor = if more {
        letters.get(limit - 1).map(|letter| letter.entry.id)
    } else {
        None
    };
    Ok(Json(json!({"items": items, "cursor": cursor})))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/dead-letters/{id}",
    tag = "triggers",
    params(("app" = String, Path, description = "The app's name."), ("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The dead letter.")),
)]
pub(super) async fn dead_letter_show(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = dead_letter_id(&id)?;
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    gateway.node.read_barrier().await?;
    let letter = gateway
        .node
        .reader()
        .dead_letter(&app, id)?
        .ok_or_else(|| {
            ApiError::new(
                Code::DeadLetterNotFound,
                format!("app {app} has no dead letter {id}"),
            )
        })?;
    Ok(Json(dead_letter_json(&app, &letter)))
}

#[utoipa::path(
    post,
    path = "/apps/{app}/dead-letters/{id}/retry",
    tag = "triggers",
    params(("app" = String, Path, description = "The app's name."), ("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The run is queued again.")),
)]
pub(super) async fn dead_letter_retry(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = dead_letter_id(&id)?;
    retry(&gateway, &caller, &app, id).await?;
    Ok(Json(json!({"app": app, "retried": id})))
}

/// Puts dead letter `id` of `app` back in the outbox (needs write). Shared
/// by the admin API and the dashboard.
pub(crate) async fn retry(
    gateway: &Gateway,
    caller: &Caller,
    app: &str,
    id: u64,
) -> Result<(), ApiError> {
    caller.require_write(app)?;
    require_app(gateway, app)?;
    accepted(
        gateway
            .node
            .write(Command::RetryDeadLetter {
                app: app.to_string(),
                id,
                now_ms: now_ms(),
            })
            .await?,
    )?;
    Ok(())
}

#[utoipa::path(
    delete,
    path = "/apps/{app}/dead-letters/{id}",
    tag = "triggers",
    params(("app" = String, Path, description = "The app's name."), ("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The dead letter is deleted.")),
)]
pub(super) async fn dead_letter_delete(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = dead_letter_id(&id)?;
    delete(&gateway, &caller, &app, id).await?;
    Ok(Json(json!({"app": app, "deleted": id})))
}

/// Deletes dead letter `id` of `app` (needs write). Shared by the admin
/// API and the dashboard.
pub(crate) async fn delete(
    gateway: &Gateway,
    caller: &Caller,
    app: &str,
    id: u64,
) -> Result<(), ApiError> {
    caller.require_write(app)?;
    require_app(gateway, app)?;
    accepted(
        gateway
            .node
            .write(Command::DeleteDeadLetter {
                app: app.to_string(),
                id,
            })
            .await?,
    )?;
    Ok(())
}

pub(crate) fn dead_letter_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            Code::InvalidField,
            format!("id: expected a dead letter id (a number), got {text:?}"),
        )
    })
}

/// Pending trigger runs per app with any, in this node's state.
pub(crate) fn trigger_backlog(gateway: &Gateway) -> Result<Vec<(String, u64)>, ApiError> {
    let reader = gateway.node.reader();
    let mut backlog = Vec::new();
    for app in reader.apps()? {
        let pending = reader.outbox_len(&app.name)?;
        backlog.push((app.name, pending));
    }
    Ok(backlog)
}
