//! An app's members, the operators with a role in it.
//!
//! ```text
//!  GET    /apps/{app}/members           {members: [{id, email, role}]}   read
//!  PUT    /apps/{app}/members/{email}   {role} → {app, email, role}      owner
//!  DELETE /apps/{app}/members/{email}   {removed}                        owner
//! ```
//!
//! Roles: `owner` (a developer who also manages members and may delete the
//! app), `developer` (what a `deploy:<app>` key may do), `viewer` (what a
//! `read:<app>` key may do). The last owner cannot be removed or demoted
//! (409 `last_owner`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use picloud_lua_sdk::Code;
use picloud_storage::operators::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::require_app;
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, Gateway, parse_json, read_body};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetRequest {
    role: String,
}

/// A role's name as a [`Role`], or 400 `invalid_role`.
pub(crate) fn parse_role(text: &str) -> Result<Role, ApiError> {
    text.parse()
        .map_err(|error: picloud_storage::operators::RoleError| {
            ApiError::new(Code::InvalidRole, error.to_string())
        })
}

#[utoipa::path(
    get,
    path = "/apps/{app}/members",
    tag = "members",
    params(("app" = String, Path, description = "The app's name.")),
    responses((status = 200, description = "The app's members.")),
)]
pub(super) async fn list(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    Ok(Json(gateway.operators.members(&app).await?))
}

#[utoipa::path(
    put,
    path = "/apps/{app}/members/{email}",
    tag = "members",
    params(("app" = String, Path, description = "The app's name."), ("email" = String, Path, description = "An operator's email.")),
    request_body = SetRequest,
    responses((status = 200, description = "The member's role is set.")),
)]
pub(super) async fn set(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, email)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.require_owner(&app)?;
    require_app(&gateway, &app)?;
    let request: SetRequest =
        parse_json(&read_body(body, gateway.config.http_body_bytes_max).await?)?;
    let role = parse_role(&request.role)?;
    gateway.operators.member_set(&app, &email, role).await?;
    Ok(Json(
        json!({"app": app, "email": email, "role": role.to_string()}),
    ))
}

#[utoipa::path(
    delete,
    path = "/apps/{app}/members/{email}",
    tag = "members",
    params(("app" = String, Path, description = "The app's name."), ("email" = String, Path, description = "An operator's email.")),
    responses((status = 200, description = "The member is removed.")),
)]
pub(super) async fn remove(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, email)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_owner(&app)?;
    require_app(&gateway, &app)?;
    let removed = gateway.operators.member_remove(&app, &email).await?;
    Ok(Json(json!({ "removed": removed })))
}
