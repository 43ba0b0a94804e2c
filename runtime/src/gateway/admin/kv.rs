//! An app's kv store: get, put, delete and list (`/apps/{app}/kv[/{key}]`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use picloud_actors::host::now_ms;
use picloud_lua_sdk::Code;
use picloud_storage::{Command, CommandResult, KvOp, KvOpResult};
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::{accepted, barrier, page_limit, require_app};
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, ApiQuery, Gateway, parse_json, read_body};

pub(crate) fn check_key(gateway: &Gateway, key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > gateway.limits.kv_key_bytes_max {
        return Err(ApiError::new(
            Code::InvalidKey,
            format!(
                "kv keys must be 1 to {} bytes (kv_key_bytes_max)",
                gateway.limits.kv_key_bytes_max
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadOptions {
    #[serde(default)]
    consistency: Option<String>,
}

#[utoipa::path(
    get,
    path = "/apps/{app}/kv/{key}",
    tag = "kv",
    params(("app" = String, Path, description = "The app's name."), ("key" = String, Path, description = "A kv key (may contain `/`)."), ReadOptions),
    responses((status = 200, description = "The value.")),
)]
pub(super) async fn kv_get(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, key)): Path<(String, String)>,
    ApiQuery(options): ApiQuery<ReadOptions>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    check_key(&gateway, &key)?;
    barrier(&gateway, options.consistency.as_deref()).await?;
    let bytes = gateway
        .node
        .reader()
        .kv_get(&app, &key, now_ms())?
        .ok_or_else(|| ApiError::new(Code::KeyNotFound, format!("app {app} has no key {key:?}")))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("stored value is not JSON: {e}")))?;
    Ok(Json(json!({"key": key, "value": value})))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct PutOptions {
    #[serde(default)]
    ttl: Option<f64>,
}

pub(super) async fn kv_write(
    gateway: &Gateway,
    app: &str,
    op: KvOp,
) -> Result<KvOpResult, ApiError> {
    let result = accepted(
        gateway
            .node
            .write(Command::Kv {
                app: app.to_string(),
                op,
                now_ms: now_ms(),
            })
            .await?,
    )?;
    match result {
        CommandResult::Kv(result) => Ok(result),
        other => Err(ApiError::internal(format!(
            "unexpected kv result {other:?}"
        ))),
    }
}

/// Stores `value` at `key` (the caller may write, the app exists and the
/// key is checked): the value's size and the TTL are checked here, for the
/// admin API and the dashboard's kv browser alike.
pub(crate) async fn put(
    gateway: &Gateway,
    app: &str,
    key: &str,
    value: &Value,
    ttl: Option<f64>,
) -> Result<(), ApiError> {
    let encoded = serde_json::to_vec(value).map_err(|e| ApiError::internal(e.to_string()))?;
    if encoded.len() > gateway.limits.kv_value_bytes_max {
        return Err(ApiError::new(
            Code::ValueTooLarge,
            format!(
                "value is {} bytes; the limit is {} (kv_value_bytes_max)",
                encoded.len(),
                gateway.limits.kv_value_bytes_max
            ),
        ));
    }
    let expires_at_ms = match ttl {
        None => None,
        Some(ttl) if ttl.is_finite() && ttl > 0.0 => Some(now_ms() + (ttl * 1000.0) as u64),
        Some(ttl) => {
            return Err(ApiError::new(
                Code::InvalidField,
                format!("ttl: must be a positive number of seconds, got {ttl}"),
            ));
        }
    };
    kv_write(
        gateway,
        app,
        KvOp::Set {
            key: key.to_string(),
            value: encoded,
            expires_at_ms,
        },
    )
    .await?;
    Ok(())
}

/// Deletes `key`; whether it existed.
pub(crate) async fn remove(gateway: &Gateway, app: &str, key: &str) -> Result<bool, ApiError> {
    let result = kv_write(
        gateway,
        app,
        KvOp::Delete {
            key: key.to_string(),
        },
    )
    .await?;
    Ok(matches!(result, KvOpResult::Deleted { existed: true }))
}

#[utoipa::path(
    put,
    path = "/apps/{app}/kv/{key}",
    tag = "kv",
    params(("app" = String, Path, description = "The app's name."), ("key" = String, Path, description = "A kv key (may contain `/`)."), PutOptions),
    request_body(content = serde_json::Value, description = "Any JSON value.", content_type = "application/json"),
    responses((status = 200, description = "The value is stored.")),
)]
pub(super) async fn kv_put(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, key)): Path<(String, String)>,
    ApiQuery(options): ApiQuery<PutOptions>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    check_key(&gateway, &key)?;
    let bytes = read_body(body, gateway.config.http_body_bytes_max).await?;
    let value: Value = parse_json(&bytes)?;
    put(&gateway, &app, &key, &value, options.ttl).await?;
    Ok(Json(json!({"key": key, "value": value})))
}

#[utoipa::path(
    delete,
    path = "/apps/{app}/kv/{key}",
    tag = "kv",
    params(("app" = String, Path, description = "The app's name."), ("key" = String, Path, description = "A kv key (may contain `/`).")),
    responses((status = 200, description = "The key is deleted.")),
)]
pub(super) async fn kv_delete(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    check_key(&gateway, &key)?;
    let existed = remove(&gateway, &app, &key).await?;
    Ok(Json(json!({"key": key, "deleted": existed})))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListOptions {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

#[utoipa::path(
    get,
    path = "/apps/{app}/kv",
    tag = "kv",
    params(("app" = String, Path, description = "The app's name."), ListOptions),
    responses((status = 200, description = "A page of keys and values.")),
)]
pub(super) async fn kv_list(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    ApiQuery(options): ApiQuery<ListOptions>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let limit = page_limit(
        options.limit,
        gateway.limits.kv_list_limit_max,
        " (kv_list_limit_max)",
    )?;
    barrier(&gateway, options.consistency.as_deref()).await?;
    let page = gateway.node.reader().kv_list(
        &app,
        options.prefix.as_deref().unwrap_or(""),
        options.cursor.as_deref(),
        limit,
        gateway.limits.read_page_bytes_max,
        now_ms(),
    )?;
    let items = page
        .items
        .iter()
        .map(|(key, bytes)| {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::internal(format!("stored value is not JSON: {e}")))?;
            Ok(json!({"key": key, "value": value}))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(json!({"items": items, "cursor": page.cursor})))
}
