//! Operators in the admin API: logging in and out, setting a password with
//! a setup token, and the cluster admins' list of operators.
//!
//! ```text
//!  POST   /login          {email, password} → {token: "pcs_…", operator}   public
//!  POST   /logout         ends the calling operator's session               any caller
//!  POST   /admins/setup   {token, password} → {id}                         public
//!  GET    /admins         {operators: [{id, email, admin, apps, …}]}        admin
//!  POST   /admins         {email, admin?} → 201 {id, email, admin, setup_token, expires_ms}
//!  DELETE /admins/{email} {removed} (memberships and sessions end)          admin
//! ```
//!
//! Login answers `invalid_credentials` for an unknown email and a wrong
//! password alike (one argon2id hash is spent either way), under the end
//! users' login limits (per account and client address: 429 `rate_limited`
//! with `Retry-After`). Setup uses the token up and sets the password in one
//! entry, so a refused password leaves the token usable.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::gateway::auth::{Caller, Principal};
use crate::gateway::end_users::{FlowFailure, LoginRequest};
use crate::gateway::{ApiError, Gateway, client_ip, parse_json, read_body};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetupRequest {
    token: String,
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    email: String,
    #[serde(default)]
    admin: bool,
}

#[utoipa::path(
    post,
    path = "/login",
    tag = "operators",
    request_body = crate::gateway::end_users::LoginRequest,
    responses((status = 200, description = "An operator session `{token, email, expires_ms}`.")),
)]
pub(super) async fn login(
    State(gateway): State<Gateway>,
    request: Request,
) -> Result<Json<Value>, FlowFailure> {
    let client = client_ip(request.extensions());
    let body = request.into_body();
    let request: LoginRequest =
        parse_json(&read_body(body, gateway.config.http_body_bytes_max).await?)?;
    Ok(Json(
        gateway
            .operators
            .login(client, &request.email, request.password)
            .await?,
    ))
}

/// Ends the caller's session; a key has none (`logged_out: false`).
#[utoipa::path(
    post,
    path = "/logout",
    tag = "operators",
    responses((status = 200, description = "The session is ended.")),
)]
pub(super) async fn logout(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let ended = match &caller.principal {
        Principal::Operator { session, .. } => gateway.operators.logout(session).await?,
        Principal::Key { .. } => false,
    };
    Ok(Json(json!({ "logged_out": ended })))
}

#[utoipa::path(
    post,
    path = "/admins/setup",
    tag = "operators",
    request_body = SetupRequest,
    responses((status = 200, description = "The password is set.")),
)]
pub(super) async fn setup(
    State(gateway): State<Gateway>,
    body: Body,
) -> Result<Json<Value>, FlowFailure> {
    let request: SetupRequest =
        parse_json(&read_body(body, gateway.config.http_body_bytes_max).await?)?;
    let id = gateway
        .operators
        .setup(&request.token, request.password)
        .await?;
    Ok(Json(json!({ "id": id })))
}

#[utoipa::path(
    get,
    path = "/admins",
    tag = "operators",
    responses((status = 200, description = "The operators.")),
)]
pub(super) async fn list(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(gateway.operators.list().await?))
}

#[utoipa::path(
    post,
    path = "/admins",
    tag = "operators",
    request_body = AddRequest,
    responses((status = 201, description = "The operator and a setup token.")),
)]
pub(super) async fn add(
    State(gateway): State<Gateway>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let request: AddRequest =
        parse_json(&read_body(body, gateway.config.http_body_bytes_max).await?)?;
    let added = gateway.operators.add(&request.email, request.admin).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": added.id,
            "email": picloud_storage::users::normalize_email(&request.email),
            "admin": request.admin,
            "setup_token": added.setup_token,
            "expires_ms": added.expires_ms,
        })),
    ))
}

#[utoipa::path(
    delete,
    path = "/admins/{email}",
    tag = "operators",
    params(("email" = String, Path, description = "An operator's email.")),
    responses((status = 200, description = "The operator is removed.")),
)]
pub(super) async fn remove(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(email): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    gateway.operators.remove(&email).await?;
    Ok(Json(json!({ "removed": email })))
}
