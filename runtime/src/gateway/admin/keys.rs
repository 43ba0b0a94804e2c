//! API keys: who am I, create, list and revoke (`/whoami`, `/keys`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use picloud_actors::host::now_ms;
use picloud_lua_sdk::Code;
use picloud_storage::Command;
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::accepted;
use crate::gateway::auth::{Caller, Principal};
use crate::gateway::{ApiError, Gateway, parse_json, read_body};
use crate::keys::{self, Scope};

/// The key (`key_id`, `scope`) or operator (`operator`) calling.
#[utoipa::path(
    get,
    path = "/whoami",
    tag = "keys",
    responses((status = 200, description = "The caller: its key or operator and scopes.")),
)]
pub(super) async fn whoami(caller: Caller) -> Json<Value> {
    match &caller.principal {
        Principal::Key { id, scope } => Json(json!({"key_id": id, "scope": scope.to_string()})),
        Principal::Operator { operator, .. } => Json(json!({
            "operator": {"id": operator.id, "email": operator.email, "admin": operator.admin},
        })),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    scope: String,
    #[serde(default)]
    name: Option<String>,
}

#[utoipa::path(
    post,
    path = "/keys",
    tag = "keys",
    request_body = CreateKey,
    responses((status = 201, description = "The new key, with its secret (shown once).")),
)]
pub(super) async fn create_key(
    State(gateway): State<Gateway>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let request: CreateKey =
        parse_json(&read_body(body, gateway.config.http_body_bytes_max).await?)?;
    let scope = Scope::parse(&request.scope)
        .map_err(|message| ApiError::new(Code::InvalidField, format!("scope: {message}")))?;
    let name = request.name.unwrap_or_default();
    if name.len() > 128 {
        return Err(ApiError::new(
            Code::InvalidField,
            "name: at most 128 characters",
        ));
    }
    // A name is a label for people: control characters only hide or forge.
    if name.chars().any(char::is_control) {
        return Err(ApiError::new(
            Code::InvalidField,
            "name: control characters are not allowed",
        ));
    }
    let key = keys::generate();
    // `scoped_app_must_exist`: a scoped key for an app that does not exist is
    // refused (404 app_not_found), so it cannot wait for someone to create
    // that name; deleting the app revokes it.
    accepted(
        gateway
            .node
            .write(Command::KeyCreate {
                id: key.id.clone(),
                name: name.clone(),
                scope: scope.to_string(),
                secret_hash: key.secret_hash.clone(),
                now_ms: now_ms(),
                scoped_app_must_exist: true,
            })
            .await?,
    )?;
    let body = json!({"id": key.id, "key": key.token, "scope": scope.to_string(), "name": name});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    responses((status = 200, description = "The API keys (never their secrets).")),
)]
pub(super) async fn list_keys(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let stored = gateway.node.reader().keys()?;
    let ids: Vec<&str> = stored.iter().map(|key| key.id.as_str()).collect();
    let last_used = gateway.key_uses.last_used(&ids);
    let keys: Vec<Value> = stored
        .iter()
        .map(|key| {
            json!({
                "id": key.id,
                "name": key.name,
                "scope": key.scope,
                "created_ms": key.created_ms,
                // On the node answering, since it started (not replicated).
                "last_used_ms": last_used.get(&key.id),
            })
        })
        .collect();
    Ok(Json(json!({"keys": keys})))
}

#[utoipa::path(
    delete,
    path = "/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The key is revoked.")),
)]
pub(super) async fn revoke_key(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    // Revoking the last admin key would lock every operator out for good.
    let keys = gateway.node.reader().keys()?;
    let is_admin = |key: &picloud_storage::KeyRecord| key.scope == "admin";
    if keys.iter().any(|key| key.id == id && is_admin(key))
        && keys.iter().filter(|key| is_admin(key)).count() == 1
    {
        return Err(ApiError::new(
            Code::LastAdminKey,
            format!("key {id} is the last admin key; create another admin key first"),
        ));
    }
    accepted(
        gateway
            .node
            .write(Command::KeyRevoke { id: id.clone() })
            .await?,
    )?;
    Ok(Json(json!({"revoked": id})))
}
