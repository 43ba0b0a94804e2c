//! Apps: list, show, create and delete (`/apps`, `/apps/{app}`). Creating
//! one needs admin; the operator who creates it becomes its owner, and an
//! owner may delete it.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use picloud_actors::host::now_ms;
use picloud_lua_sdk::Code;
use picloud_storage::operators::Role;
use picloud_storage::{Command, CommandResult};
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::{accepted, check_app_name, existing_app_name};
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, Gateway, parse_json, read_body};

/// An app as the API shows it; `domains` are its active version's, as this
/// node's domain map has them.
fn app_json(gateway: &Gateway, record: &picloud_storage::AppRecord) -> Value {
    json!({
        "name": record.name,
        "created_ms": record.created_ms,
        "active_version": record.active_version,
        "latest_version": record.latest_version,
        "domains": gateway.apps.domains().declared(&record.name),
    })
}

#[utoipa::path(
    get,
    path = "/apps",
    tag = "apps",
    responses((status = 200, description = "The apps the caller may read.")),
)]
pub(super) async fn list_apps(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut apps: Vec<Value> = Vec::new();
    for record in gateway.node.reader().apps()? {
        if caller.may_read(&record.name)? {
            apps.push(app_json(&gateway, &record));
        }
    }
    Ok(Json(json!({ "apps": apps })))
}

#[utoipa::path(
    get,
    path = "/apps/{app}",
    tag = "apps",
    params(("app" = String, Path, description = "The app's name.")),
    responses((status = 200, description = "The app and its current version.")),
)]
pub(super) async fn get_app(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    let record = gateway
        .node
        .reader()
        .app(&app)?
        .ok_or_else(|| ApiError::new(Code::AppNotFound, format!("app {app} not found")))?;
    let mut body = app_json(&gateway, &record);
    // Trigger runs pending on this node's copy of the state.
    body["trigger_backlog"] = json!(gateway.node.reader().outbox_len(&app)?);
    Ok(Json(body))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    name: String,
}

#[utoipa::path(
    post,
    path = "/apps",
    tag = "apps",
    request_body = CreateApp,
    responses((status = 201, description = "The app is created.")),
)]
pub(super) async fn create_app(
    State(gateway): State<Gateway>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let request: CreateApp =
        parse_json(&read_body(body, gateway.config.http_body_bytes_max).await?)?;
    create(&gateway, &caller, &request.name).await?;
    let record = gateway.node.reader().app(&request.name)?;
    let body = record
        .as_ref()
        .map(|record| app_json(&gateway, record))
        .unwrap_or(json!({"name": request.name}));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Creates app `name` (admin only); an operator who creates it owns it.
/// Shared by the admin API and the dashboard.
pub(crate) async fn create(gateway: &Gateway, caller: &Caller, name: &str) -> Result<(), ApiError> {
    caller.require_admin()?;
    check_app_name(name)?;
    accepted(
        gateway
            .node
            .write(Command::AppCreate {
                app: name.to_string(),
                now_ms: now_ms(),
            })
            .await?,
    )?;
    // An operator who creates an app owns it (an admin key has no account
    // to make a member).
    if let Some(operator) = caller.operator() {
        gateway
            .operators
            .member_set_id(name, &operator.id, Role::Owner)
            .await?;
    }
    Ok(())
}

#[utoipa::path(
    delete,
    path = "/apps/{app}",
    tag = "apps",
    params(("app" = String, Path, description = "The app's name.")),
    responses((status = 200, description = "The app is deleted.")),
)]
pub(super) async fn delete_app(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let keys_revoked = delete(&gateway, &caller, &app).await?;
    Ok(Json(json!({"deleted": app, "keys_revoked": keys_revoked})))
}

/// Deletes `app` (an owner's), with its scoped keys; answers how many keys
/// were revoked. Shared by the admin API and the dashboard.
pub(crate) async fn delete(gateway: &Gateway, caller: &Caller, app: &str) -> Result<u64, ApiError> {
    caller.require_owner(app)?;
    // The app's scoped keys go in the same log entry: a key is for one app,
    // not for whoever re-creates its name.
    let result = accepted(
        gateway
            .node
            .write(Command::AppDelete {
                app: app.to_string(),
                revoke_keys: true,
            })
            .await?,
    )?;
    let keys_revoked = match result {
        CommandResult::AppDeleted { keys_revoked } => keys_revoked,
        _ => 0,
    };
    gateway.apps.reload(&existing_app_name(app)?).await?;
    gateway.logs.forget(app);
    Ok(keys_revoked)
}
