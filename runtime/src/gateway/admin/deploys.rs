//! Deploys: list an app's versions, deploy a bundle (checked here before it
//! is proposed) and roll back (`/apps/{app}/deploys`, `/apps/{app}/rollback`).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use picloud_actors::app::{Bundle, MANIFEST_FILE, Manifest};
use picloud_actors::host::now_ms;
use picloud_lua_sdk::{
    AtomicOp, AtomicResult, Code, Consistency, Host, HostError, HostFuture, KvListPage, LogLevel,
};
use picloud_storage::command::{DeployParts, VersionDeploy};
use picloud_storage::operators::Role;
use picloud_storage::{Command, CommandResult};
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::{accepted, check_app_name, existing_app_name};
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, Gateway, parse_json, read_body};

#[utoipa::path(
    get,
    path = "/apps/{app}/deploys",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name.")),
    responses((status = 200, description = "The app's versions.")),
)]
pub(super) async fn list_deploys(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    let reader = gateway.node.reader();
    let record = reader
        .app(&app)?
        .ok_or_else(|| ApiError::new(Code::AppNotFound, format!("app {app} not found")))?;
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
            Code::UnavailableAtLoad,
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

#[utoipa::path(
    post,
    path = "/apps/{app}/deploys",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name.")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, description = "The new version.")),
)]
pub(super) async fn deploy(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let name = check_app_name(&app)?;
    caller.require_write(&app)?;
    // Only an admin creates apps, here by deploying to a new name. A scoped
    // key is told before its bundle is checked; a deploy without
    // `create_app` decides again in `apply`, where a concurrent delete is
    // ordered.
    let may_create = caller.is_admin();
    let existed = gateway.node.reader().app(&app)?.is_some();
    if !may_create && !existed {
        return Err(ApiError::new(
            Code::AppNotFound,
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
    let invalid = |message: String| ApiError::new(Code::InvalidDeploy, message);
    let checked = bundle.check().map_err(|e| invalid(e.message))?;
    bundle.imports = checked.imports.clone();
    let imports = json!(checked.imports);
    if checked.manifest.name != app {
        return Err(invalid(format!(
            "picloud.toml: name is {:?} but the deploy is for app {app:?}",
            checked.manifest.name
        )));
    }
    // The operator's bound on history per topic (the manifest's own check
    // is the absolute maximum).
    let retain_max = gateway.config.topic_retain_max;
    if let Some((index, topic)) =
        (checked.manifest.topics.iter().enumerate()).find(|(_, topic)| topic.retain > retain_max)
    {
        return Err(invalid(format!(
            "picloud.toml: topic {} ({:?}): retain = {} is above this cluster's topic_retain_max ({retain_max})",
            index + 1,
            topic.pattern,
            topic.retain
        )));
    }
    // An alias reaches one app: checked against this node's state (two
    // deploys racing for one alias are not caught; the listener then
    // delivers to the first app by name).
    let reader = gateway.node.reader();
    if let Some((alias, owner)) = checked.manifest.mail_aliases.iter().find_map(|alias| {
        crate::smtp::recipients::alias_owner(reader, alias, Some(&app)).map(|owner| (alias, owner))
    }) {
        return Err(invalid(format!(
            "picloud.toml: [mail] alias {alias:?} already belongs to app {owner:?}"
        )));
    }
    // A domain is served by one app: checked against this node's domain
    // map, like the aliases above (two deploys racing through different
    // nodes are not caught; the map then gives the domain to the first
    // app by name, on every node alike).
    if let Some((domain, owner)) = checked.manifest.domains.iter().find_map(|domain| {
        (gateway.apps.domains().owner(domain, &app)).map(|owner| (domain, owner))
    }) {
        return Err(ApiError::new(
            Code::DomainTaken,
            format!("picloud.toml: domain {domain:?} already belongs to app {owner:?}"),
        ));
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
    // An operator who creates an app by deploying to a new name owns it,
    // as with `POST /apps` (the first version marks a new app).
    if let Some(operator) = caller.operator()
        && !existed
        && version == 1
    {
        gateway
            .operators
            .member_set_id(&app, &operator.id, Role::Owner)
            .await?;
    }
    gateway.apps.reload(&name).await?;
    Ok(Json(
        json!({"app": app, "version": version, "imports": imports}),
    ))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    #[serde(default)]
    to: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/apps/{app}/rollback",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name.")),
    request_body = RollbackRequest,
    responses((status = 200, description = "The version now current.")),
)]
pub(super) async fn rollback(
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
    let version = rollback_to(&gateway, &caller, &app, request.to).await?;
    Ok(Json(json!({"app": app, "version": version})))
}

/// Makes version `to` (or the one before the active one) `app`'s active
/// version and reloads it here; answers the version now active. Shared by
/// the admin API and the dashboard.
pub(crate) async fn rollback_to(
    gateway: &Gateway,
    caller: &Caller,
    app: &str,
    to: Option<u64>,
) -> Result<u64, ApiError> {
    caller.require_write(app)?;
    let result = accepted(
        gateway
            .node
            .write(Command::Rollback {
                app: app.to_string(),
                to_version: to,
                now_ms: now_ms(),
            })
            .await?,
    )?;
    let CommandResult::RolledBack { version } = result else {
        return Err(ApiError::internal(format!(
            "unexpected rollback result {result:?}"
        )));
    };
    gateway.apps.reload(&existing_app_name(app)?).await?;
    Ok(version)
}
