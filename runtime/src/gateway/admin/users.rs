//! An app's end users in the admin API: the same `UserService` scripts
//! reach through `users.*`, so the rules (normalised emails, the password
//! policy, roles) and the view (never the password hash) are the same.
//!
//! ```text
//!  GET    /apps/{app}/users?cursor=&limit=   {users: [...], cursor?}   read scope
//!  POST   /apps/{app}/users                  {email, password, data?, roles?} → 201 the user
//!  GET    /apps/{app}/users/{id}             the user (404 user_not_found)
//!  DELETE /apps/{app}/users/{id}             {deleted} (its sessions end)
//!  POST   /apps/{app}/users/{id}/roles       {add?: [..], remove?: [..]} → the user
//!  POST   /apps/{app}/users/invite           {email, roles?} → 201 {email, roles, expires_ms, link}
//! ```
//!
//! An invitation is mailed with the app's `[auth.templates.invite]`, like
//! `users.invite` from a script.
//!
//! Writes need the app's write scope (or a developer or owner of the app;
//! reads, any member: see `routes.rs`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use picloud_lua_sdk::{Code, UserPatchArgs};
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::require_app;
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, ApiQuery, Gateway, parse_json, read_body};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    email: String,
    password: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    email: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RolesRequest {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

pub(crate) fn user_not_found(id: &str) -> ApiError {
    ApiError::new(Code::UserNotFound, format!("user {id} not found"))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/users",
    tag = "users",
    params(("app" = String, Path, description = "The app's name."), ListQuery),
    responses((status = 200, description = "A page of the app's end users.")),
)]
pub(super) async fn list(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    Ok(Json(
        gateway.users.list(&app, query.cursor, query.limit).await?,
    ))
}

/// The body of a write to an existing app's users, once the caller may write.
async fn write_request<T: serde::de::DeserializeOwned>(
    gateway: &Gateway,
    caller: &Caller,
    app: &str,
    body: Body,
) -> Result<T, ApiError> {
    caller.require_write(app)?;
    require_app(gateway, app)?;
    parse_json(&read_body(body, gateway.config.http_body_bytes_max).await?)
}

#[utoipa::path(
    post,
    path = "/apps/{app}/users",
    tag = "users",
    params(("app" = String, Path, description = "The app's name.")),
    request_body = CreateRequest,
    responses((status = 201, description = "The user.")),
)]
pub(super) async fn create(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: CreateRequest = write_request(&gateway, &caller, &app, body).await?;
    // The app's `[auth]` (its `password_min`), as for a script's create; an
    // app with no deployed version has none, so the node's policy.
    let policy = crate::gateway::end_users::policy(&gateway, &app)
        .await
        .unwrap_or_default();
    let user = gateway
        .users
        .create(
            &app,
            &request.email,
            request.password,
            &request.data,
            &request.roles,
            policy,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(
    post,
    path = "/apps/{app}/users/invite",
    tag = "users",
    params(("app" = String, Path, description = "The app's name.")),
    request_body = InviteRequest,
    responses((status = 201, description = "The invitation.")),
)]
pub(super) async fn invite(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: InviteRequest = write_request(&gateway, &caller, &app, body).await?;
    let invitation = invite_email(&gateway, &app, &request.email, &request.roles).await?;
    Ok((StatusCode::CREATED, Json(invitation)))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/users/{id}",
    tag = "users",
    params(("app" = String, Path, description = "The app's name."), ("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The user.")),
)]
pub(super) async fn show(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    match gateway.users.get(&app, &id).await? {
        Some(user) => Ok(Json(user)),
        None => Err(user_not_found(&id)),
    }
}

#[utoipa::path(
    delete,
    path = "/apps/{app}/users/{id}",
    tag = "users",
    params(("app" = String, Path, description = "The app's name."), ("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The user is deleted.")),
)]
pub(super) async fn delete(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let deleted = gateway.users.delete(&app, &id).await?;
    Ok(Json(json!({ "deleted": deleted })))
}

/// Adds then removes roles, as one update of the role set.
#[utoipa::path(
    post,
    path = "/apps/{app}/users/{id}/roles",
    tag = "users",
    params(("app" = String, Path, description = "The app's name."), ("id" = String, Path, description = "The item's id.")),
    request_body = RolesRequest,
    responses((status = 200, description = "The user's roles.")),
)]
pub(super) async fn roles(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let bytes = read_body(body, gateway.config.http_body_bytes_max).await?;
    let request: RolesRequest = parse_json(&bytes)?;
    Ok(Json(
        change_roles(&gateway, &app, &id, request.add, &request.remove).await?,
    ))
}

/// Adds `add` then removes `remove` from user `id`'s roles, as one update
/// of the role set (the caller may write); the updated user.
pub(crate) async fn change_roles(
    gateway: &Gateway,
    app: &str,
    id: &str,
    add: Vec<String>,
    remove: &[String],
) -> Result<Value, ApiError> {
    let user = gateway
        .users
        .get(app, id)
        .await?
        .ok_or_else(|| user_not_found(id))?;
    let mut roles: Vec<String> = user["roles"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .filter_map(|role| role.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    roles.extend(add);
    roles.retain(|role| !remove.contains(role));
    let patch = UserPatchArgs {
        roles: Some(roles),
        ..UserPatchArgs::default()
    };
    Ok(gateway.users.update(app, id, patch).await?)
}

/// Invites `email` with `roles` under the app's `[auth]` (the caller may
/// write): the invitation (email, roles, expiry, link).
pub(crate) async fn invite_email(
    gateway: &Gateway,
    app: &str,
    email: &str,
    roles: &[String],
) -> Result<Value, ApiError> {
    let policy = crate::gateway::end_users::policy(gateway, app).await?;
    Ok(gateway.users.invite(app, email, roles, &policy).await?)
}
