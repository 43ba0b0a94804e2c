//! The admin API under `/_/api/v1/`. One section per resource: apps, deploys,
//! kv, logs, keys. Every handler authenticates with [`Caller`] and checks the
//! scope before it reads or proposes anything.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use picloud_actors::app::{Bundle, MANIFEST_FILE, Manifest, validate_app_name};
use picloud_actors::host::now_ms;
use picloud_lua_sdk::{
    AtomicOp, AtomicResult, Consistency, Host, HostError, HostFuture, KvListPage, LogLevel,
};
use picloud_storage::command::{DeployParts, VersionDeploy};
use picloud_storage::{Command, CommandResult, KvOp, KvOpResult};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::auth::Caller;
use super::{ApiError, ApiQuery, Gateway, parse_json, read_body};
use crate::keys::{self, Scope};

pub fn router() -> Router<Gateway> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/apps", get(list_apps).post(create_app))
        .route("/apps/{app}", get(get_app).delete(delete_app))
        .route("/apps/{app}/deploys", get(list_deploys).post(deploy))
        .route("/apps/{app}/rollback", post(rollback))
        .route("/apps/{app}/kv", get(kv_list))
        .route(
            "/apps/{app}/kv/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        )
        .route("/apps/{app}/logs", get(logs))
        .route("/apps/{app}/dead-letters", get(dead_letters_list))
        .route(
            "/apps/{app}/dead-letters/{id}",
            get(dead_letter_show).delete(dead_letter_delete),
        )
        .route(
            "/apps/{app}/dead-letters/{id}/retry",
            post(dead_letter_retry),
        )
        .route("/libs", get(super::libs::list))
        .route("/libs/{name}", post(super::libs::publish))
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{id}", axum::routing::delete(revoke_key))
        .route("/cluster/status", get(cluster_status))
        .route("/cluster/token", get(cluster_token))
        .route("/cluster/nodes/{id}", axum::routing::delete(remove_node))
        .merge(super::docs::routes())
        .fallback(api_not_found)
}

async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!("no admin API endpoint at {}", uri.path()),
    )
}

fn check_app_name(app: &str) -> Result<(), ApiError> {
    validate_app_name(app).map_err(|message| ApiError::bad_request("invalid_app_name", message))
}

/// Turns a deterministic rejection into its API error; passes other results on.
pub(super) fn accepted(result: CommandResult) -> Result<CommandResult, ApiError> {
    match result {
        CommandResult::Rejected(error) => Err(error.into()),
        other => Ok(other),
    }
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"key_id": caller.key_id, "scope": caller.scope.to_string()}))
}

// ---- apps ----

fn app_json(record: &picloud_storage::AppRecord) -> Value {
    json!({
        "name": record.name,
        "created_ms": record.created_ms,
        "active_version": record.active_version,
        "latest_version": record.latest_version,
    })
}

async fn list_apps(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let apps: Vec<Value> = gateway
        .node
        .reader()
        .apps()?
        .iter()
        .filter(|record| caller.scope.can_read(&record.name))
        .map(app_json)
        .collect();
    Ok(Json(json!({ "apps": apps })))
}

async fn get_app(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    let record = gateway
        .node
        .reader()
        .app(&app)?
        .ok_or_else(|| ApiError::not_found("app_not_found", format!("app {app} not found")))?;
    let mut body = app_json(&record);
    // Trigger runs pending on this node's copy of the state.
    body["trigger_backlog"] = json!(gateway.node.reader().outbox_len(&app)?);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    name: String,
}

async fn create_app(
    State(gateway): State<Gateway>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let request: CreateApp =
        parse_json(&read_body(body, gateway.config.http_body_bytes_max).await?)?;
    check_app_name(&request.name)?;
    accepted(
        gateway
            .node
            .write(Command::AppCreate {
                app: request.name.clone(),
                now_ms: now_ms(),
            })
            .await?,
    )?;
    let record = gateway.node.reader().app(&request.name)?;
    let body = record
        .as_ref()
        .map(app_json)
        .unwrap_or(json!({"name": request.name}));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn delete_app(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    // The app's scoped keys go in the same log entry: a key is for one app,
    // not for whoever re-creates its name.
    let result = accepted(
        gateway
            .node
            .write(Command::AppDelete {
                app: app.clone(),
                revoke_keys: true,
            })
            .await?,
    )?;
    let keys_revoked = match result {
        CommandResult::AppDeleted { keys_revoked } => keys_revoked,
        _ => 0,
    };
    gateway.apps.reload(&app).await?;
    gateway.logs.forget(&app);
    Ok(Json(json!({"deleted": app, "keys_revoked": keys_revoked})))
}

// ---- deploys ----

async fn list_deploys(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    let reader = gateway.node.reader();
    let record = reader
        .app(&app)?
        .ok_or_else(|| ApiError::not_found("app_not_found", format!("app {app} not found")))?;
    let deploys: Vec<Value> = reader
        .deploys(&app)?
        .iter()
        .map(|deploy| {
            // What each version imports and which library versions it embeds.
            let bundle = reader
                .bundle(&app, deploy.version)
                .ok()
                .flatten()
                .and_then(|bytes| Bundle::decode(&bytes).ok())
                .unwrap_or_default();
            let libs: serde_json::Map<String, Value> = bundle
                .libs
                .iter()
                .map(|(name, lib)| (name.clone(), json!(lib.version)))
                .collect();
            json!({
                "version": deploy.version,
                "created_ms": deploy.created_ms,
                "bundle_bytes": deploy.bundle_bytes,
                "active": record.active_version == Some(deploy.version),
                "imports": bundle.imports,
                "libs": libs,
            })
        })
        .collect();
    Ok(Json(
        json!({"app": app, "active_version": record.active_version, "deploys": deploys}),
    ))
}

/// A host for deploy-time checks: scripts' top level runs with no services.
struct LoadCheckHost;

fn no_services<'a, T: Send + 'a>() -> HostFuture<'a, T> {
    Box::pin(async {
        Err(HostError::new(
            "unavailable_at_load",
            "services cannot be called while a script loads; call them inside the handler",
        ))
    })
}

impl Host for LoadCheckHost {
    fn kv_get<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Consistency,
    ) -> HostFuture<'a, Option<Value>> {
        no_services()
    }
    fn kv_set<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Value,
        _: Option<f64>,
    ) -> HostFuture<'a, ()> {
        no_services()
    }
    fn kv_delete<'a>(&'a self, _: &'a str, _: &'a str) -> HostFuture<'a, bool> {
        no_services()
    }
    fn kv_incr<'a>(&'a self, _: &'a str, _: &'a str, _: i64) -> HostFuture<'a, i64> {
        no_services()
    }
    fn kv_cas<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Option<Value>,
        _: Option<Value>,
    ) -> HostFuture<'a, bool> {
        no_services()
    }
    fn kv_list<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: usize,
        _: Option<String>,
    ) -> HostFuture<'a, KvListPage> {
        no_services()
    }
    fn kv_atomic<'a>(&'a self, _: &'a str, _: Vec<AtomicOp>) -> HostFuture<'a, Vec<AtomicResult>> {
        no_services()
    }
    fn log(&self, _: &str, _: LogLevel, _: String) {}
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

async fn deploy(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    check_app_name(&app)?;
    caller.require_write(&app)?;
    // Only an admin creates apps, here by deploying to a new name. A scoped
    // key is told before its bundle is checked; a deploy without
    // `create_app` decides again in `apply`, where a concurrent delete is
    // ordered.
    let may_create = caller.scope.is_admin();
    if !may_create && gateway.node.reader().app(&app)?.is_none() {
        return Err(ApiError::not_found(
            "app_not_found",
            format!("app {app} does not exist; only an admin key creates apps"),
        ));
    }
    let bytes = read_body(body, gateway.config.deploy_bytes_max).await?;
    let mut bundle: Bundle = parse_json(&bytes)?;
    // Pinned libraries are embedded from the replicated state, and the
    // import graph is recomputed: neither is taken from the client.
    let pins = bundle
        .files
        .get(MANIFEST_FILE)
        .and_then(|text| Manifest::parse(text).ok())
        .map(|manifest| manifest.libs)
        .unwrap_or_default();
    bundle.libs = super::libs::resolve(&gateway, &pins).await?;
    let invalid = |message: String| ApiError::bad_request("invalid_deploy", message);
    let checked = bundle.check().map_err(|e| invalid(e.message))?;
    bundle.imports = checked.imports.clone();
    let imports = json!(checked.imports);
    if checked.manifest.name != app {
        return Err(invalid(format!(
            "picloud.toml: name is {:?} but the deploy is for app {app:?}",
            checked.manifest.name
        )));
    }
    let triggers = checked.manifest.trigger_set();
    let indexes = checked.manifest.indexes.clone();
    // Loading runs scripts' top level: keep it off the async workers.
    let limits = gateway.limits.sandbox;
    let app_for_check = app.clone();
    tokio::task::spawn_blocking(move || {
        checked.check_loads(&app_for_check, Arc::new(LoadCheckHost), limits)
    })
    .await
    .map_err(|e| ApiError::internal(format!("deploy check panicked: {e}")))?
    .map_err(|e| invalid(e.message))?;
    let deploy = VersionDeploy {
        app: app.clone(),
        bundle: bundle.encode(),
        now_ms: now_ms(),
        versions_keep: gateway.config.deploy_versions_kept,
        parts: DeployParts::Full {
            triggers,
            indexes,
            create_app: may_create,
        },
    };
    let result = accepted(gateway.node.write(Command::Deploy(deploy)).await?)?;
    let CommandResult::Deployed { version } = result else {
        return Err(ApiError::internal(format!(
            "unexpected deploy result {result:?}"
        )));
    };
    gateway.apps.reload(&app).await?;
    Ok(Json(
        json!({"app": app, "version": version, "imports": imports}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    #[serde(default)]
    to: Option<u64>,
}

async fn rollback(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.require_write(&app)?;
    let bytes = read_body(body, gateway.config.http_body_bytes_max).await?;
    let request: RollbackRequest = if bytes.is_empty() {
        RollbackRequest::default()
    } else {
        parse_json(&bytes)?
    };
    let result = accepted(
        gateway
            .node
            .write(Command::Rollback {
                app: app.clone(),
                to_version: request.to,
                now_ms: now_ms(),
            })
            .await?,
    )?;
    let CommandResult::RolledBack { version } = result else {
        return Err(ApiError::internal(format!(
            "unexpected rollback result {result:?}"
        )));
    };
    gateway.apps.reload(&app).await?;
    Ok(Json(json!({"app": app, "version": version})))
}

// ---- kv ----

pub(super) fn require_app(gateway: &Gateway, app: &str) -> Result<(), ApiError> {
    if gateway.node.reader().app(app)?.is_none() {
        return Err(ApiError::not_found(
            "app_not_found",
            format!("app {app} not found"),
        ));
    }
    Ok(())
}

fn check_key(gateway: &Gateway, key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > gateway.limits.kv_key_bytes_max {
        return Err(ApiError::bad_request(
            "invalid_key",
            format!(
                "kv keys must be 1 to {} bytes (kv_key_bytes_max)",
                gateway.limits.kv_key_bytes_max
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadOptions {
    #[serde(default)]
    consistency: Option<String>,
}

/// A page size from the query (default 100), checked against `max`.
fn page_limit(limit: Option<usize>, max: usize, setting: &str) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("limit: must be 1 to {max}{setting}"),
        ));
    }
    Ok(limit)
}

pub(super) async fn barrier(gateway: &Gateway, consistency: Option<&str>) -> Result<(), ApiError> {
    match consistency {
        None | Some("linearizable") => Ok(gateway.node.read_barrier().await?),
        Some("stale") => Ok(()),
        Some(other) => Err(ApiError::bad_request(
            "invalid_field",
            format!("consistency: expected linearizable or stale, got {other:?}"),
        )),
    }
}

async fn kv_get(
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
        .ok_or_else(|| {
            ApiError::not_found("key_not_found", format!("app {app} has no key {key:?}"))
        })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("stored value is not JSON: {e}")))?;
    Ok(Json(json!({"key": key, "value": value})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutOptions {
    #[serde(default)]
    ttl: Option<f64>,
}

async fn kv_write(gateway: &Gateway, app: &str, op: KvOp) -> Result<KvOpResult, ApiError> {
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

async fn kv_put(
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
    let encoded = serde_json::to_vec(&value).map_err(|e| ApiError::internal(e.to_string()))?;
    if encoded.len() > gateway.limits.kv_value_bytes_max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!(
                "value is {} bytes; the limit is {} (kv_value_bytes_max)",
                encoded.len(),
                gateway.limits.kv_value_bytes_max
            ),
        ));
    }
    let expires_at_ms = match options.ttl {
        None => None,
        Some(ttl) if ttl.is_finite() && ttl > 0.0 => Some(now_ms() + (ttl * 1000.0) as u64),
        Some(ttl) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("ttl: must be a positive number of seconds, got {ttl}"),
            ));
        }
    };
    kv_write(
        &gateway,
        &app,
        KvOp::Set {
            key: key.clone(),
            value: encoded,
            expires_at_ms,
        },
    )
    .await?;
    Ok(Json(json!({"key": key, "value": value})))
}

async fn kv_delete(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    check_key(&gateway, &key)?;
    let result = kv_write(&gateway, &app, KvOp::Delete { key: key.clone() }).await?;
    let existed = matches!(result, KvOpResult::Deleted { existed: true });
    Ok(Json(json!({"key": key, "deleted": existed})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListOptions {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

async fn kv_list(
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

// ---- logs ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogOptions {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    follow: Option<bool>,
}

async fn logs(
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

// ---- keys ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    scope: String,
    #[serde(default)]
    name: Option<String>,
}

async fn create_key(
    State(gateway): State<Gateway>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let request: CreateKey =
        parse_json(&read_body(body, gateway.config.http_body_bytes_max).await?)?;
    let scope = Scope::parse(&request.scope)
        .map_err(|message| ApiError::bad_request("invalid_field", format!("scope: {message}")))?;
    let name = request.name.unwrap_or_default();
    if name.len() > 128 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "name: at most 128 characters",
        ));
    }
    // A name is a label for people: control characters only hide or forge.
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
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

async fn list_keys(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let keys: Vec<Value> = gateway
        .node
        .reader()
        .keys()?
        .iter()
        .map(|key| {
            json!({"id": key.id, "name": key.name, "scope": key.scope, "created_ms": key.created_ms})
        })
        .collect();
    Ok(Json(json!({"keys": keys})))
}

async fn revoke_key(
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
            StatusCode::CONFLICT,
            "last_admin_key",
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

// ---- cluster ----

/// Every member as this node sees it. Any valid key may look.
async fn cluster_status(
    State(gateway): State<Gateway>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut status = json!(gateway.node.cluster_status().await);
    status["trigger_backlog"] = json!(
        trigger_backlog(&gateway)?
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>()
    );
    status["secrets"] = gateway.secret_keys.status_json();
    Ok(Json(status))
}

/// The join token for new nodes. Admin only: it admits a machine to the cluster.
async fn cluster_token(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let token = gateway.node.join_token()?.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the cluster has no join secret yet; retry in a moment",
        )
    })?;
    Ok(Json(json!({ "token": token })))
}

/// Removes a node for good (`picloud cluster remove ID`): it leaves the
/// membership (so it no longer counts toward quorum) and its id is never
/// given out again. The leader cannot remove itself.
async fn remove_node(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad_request("invalid_field", format!("id: {id:?} is not a node id"))
    })?;
    let status = gateway.node.status();
    if !status.nodes.contains_key(&id) {
        return Err(ApiError::not_found(
            "node_not_found",
            format!("node {id} is not a member of this cluster"),
        ));
    }
    if status.leader == Some(id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "is_leader",
            format!(
                "node {id} is the leader; stop it first so another node takes over, then remove it"
            ),
        ));
    }
    accepted(
        gateway
            .node
            .write(Command::RemoveNode {
                id,
                now_ms: now_ms(),
            })
            .await?,
    )?;
    Ok(Json(json!({ "removed": id })))
}

// ---- dead letters ----

/// Most dead letters one list page returns.
const DEAD_LETTERS_PAGE_MAX: usize = 1_000;

fn dead_letter_json(app: &str, letter: &picloud_storage::triggers::DeadLetter) -> Value {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterPage {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn dead_letters_list(
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

async fn dead_letter_show(
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
            ApiError::not_found(
                "dead_letter_not_found",
                format!("app {app} has no dead letter {id}"),
            )
        })?;
    Ok(Json(dead_letter_json(&app, &letter)))
}

async fn dead_letter_retry(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = dead_letter_id(&id)?;
    caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    accepted(
        gateway
            .node
            .write(Command::RetryDeadLetter {
                app: app.clone(),
                id,
                now_ms: now_ms(),
            })
            .await?,
    )?;
    Ok(Json(json!({"app": app, "retried": id})))
}

async fn dead_letter_delete(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = dead_letter_id(&id)?;
    caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    accepted(
        gateway
            .node
            .write(Command::DeleteDeadLetter {
                app: app.clone(),
                id,
            })
            .await?,
    )?;
    Ok(Json(json!({"app": app, "deleted": id})))
}

fn dead_letter_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_field",
            format!("id: expected a dead letter id (a number), got {text:?}"),
        )
    })
}

/// Pending trigger runs per app with any, in this node's state.
fn trigger_backlog(gateway: &Gateway) -> Result<Vec<(String, u64)>, ApiError> {
    let reader = gateway.node.reader();
    let mut backlog = Vec::new();
    for app in reader.apps()? {
        let pending = reader.outbox_len(&app.name)?;
        backlog.push((app.name, pending));
    }
    Ok(backlog)
}

/// `/_/metrics`: Prometheus text exposition (admin key).
pub async fn metrics(State(gateway): State<Gateway>, caller: Caller) -> Result<Response, ApiError> {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering;
    caller.require_admin()?;
    let status = gateway.node.status();
    let disk = gateway.node.disk();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# HELP picloud_trigger_backlog Trigger runs pending, per app."
    );
    let _ = writeln!(text, "# TYPE picloud_trigger_backlog gauge");
    for (app, pending) in trigger_backlog(&gateway)? {
        let _ = writeln!(text, "picloud_trigger_backlog{{app=\"{app}\"}} {pending}");
    }
    let stats = &gateway.triggers;
    for (name, help, kind, value) in [
        (
            "picloud_trigger_runs_inflight",
            "Trigger runs executing on this node.",
            "gauge",
            stats.runs_inflight.load(Ordering::Relaxed),
        ),
        (
            "picloud_trigger_runs_completed_total",
            "Trigger runs this node completed.",
            "counter",
            stats.runs_completed.load(Ordering::Relaxed),
        ),
        (
            "picloud_trigger_runs_failed_total",
            "Trigger runs this node reported failed.",
            "counter",
            stats.runs_failed.load(Ordering::Relaxed),
        ),
        (
            "picloud_raft_is_leader",
            "1 on the Raft leader.",
            "gauge",
            u64::from(status.role == "leader"),
        ),
        (
            "picloud_raft_term",
            "Current Raft term.",
            "gauge",
            status.term,
        ),
        (
            "picloud_raft_applied_index",
            "Last log index applied here.",
            "gauge",
            status.applied_index.unwrap_or(0),
        ),
        (
            "picloud_disk_available_bytes",
            "Free bytes on the data dir's disk (writes fail with disk_full below the reserve).",
            "gauge",
            disk.available_bytes().unwrap_or(0),
        ),
        (
            "picloud_disk_reserve_bytes",
            "The data disk's free-space reserve (disk_reserve_bytes).",
            "gauge",
            disk.reserve_bytes(),
        ),
    ] {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}
