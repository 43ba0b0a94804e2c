//! Shared libraries in the admin API: publish a version, list them, and
//! resolve an app's `[libs]` pins at deploy.
//!
//! ```text
//! POST /_/api/v1/libs/{name}  {"files": {"init.lua": "..."}}  admin → 201 {name, version}
//! GET  /_/api/v1/libs                                          any key → names, versions, times
//! deploy: [libs] mathx = 2 ──read barrier──▶ LibFiles of mathx v2 ──▶ bundle.libs (embedded)
//! ```

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use picloud_actors::app::PinnedLib;
use picloud_actors::app::libs::{LIB_VERSIONS_KEPT, LibFiles, validate_lib_name};
use picloud_actors::host::now_ms;
use picloud_lua_sdk::Code;
use picloud_storage::{Command, CommandResult};
use serde_json::{Value, json};

use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, Gateway, parse_json, read_body};

#[utoipa::path(
    post,
    path = "/libs/{name}",
    tag = "libs",
    params(("name" = String, Path, description = "The item's name.")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 201, description = "The published version.")),
)]
pub(super) async fn publish(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    validate_lib_name(&name).map_err(|e| ApiError::new(Code::InvalidLibName, e))?;
    let lib: LibFiles = parse_json(&read_body(body, gateway.config.deploy_bytes_max).await?)?;
    lib.check(&name)
        .map_err(|e| ApiError::new(Code::InvalidLib, e.message))?;
    let result = gateway
        .node
        .write(Command::PublishLib {
            name: name.clone(),
            files: lib.encode(),
            now_ms: now_ms(),
            versions_keep: LIB_VERSIONS_KEPT,
        })
        .await?;
    let CommandResult::LibPublished { version } = result else {
        return Err(ApiError::internal(format!(
            "unexpected publish result {result:?}"
        )));
    };
    let body = json!({"name": name, "version": version, "files": lib.files.len()});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(
    get,
    path = "/libs",
    tag = "libs",
    responses((status = 200, description = "The shared libraries and their versions.")),
)]
pub(super) async fn list(
    State(gateway): State<Gateway>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let libs: Vec<Value> = gateway
        .node
        .reader()
        .libs()?
        .iter()
        .map(|lib| {
            let versions: Vec<Value> = lib
                .versions
                .iter()
                .map(|v| json!({"version": v.version, "created_ms": v.created_ms, "bytes": v.files_bytes}))
                .collect();
            json!({"name": lib.name, "latest_version": lib.latest_version, "versions": versions})
        })
        .collect();
    Ok(Json(json!({ "libs": libs })))
}

/// The files of every pinned library version, read after a read barrier so
/// a version just published through another node is found. A missing
/// version is 400 `lib_not_found`.
pub(super) async fn resolve(
    gateway: &Gateway,
    pins: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, PinnedLib>, ApiError> {
    if pins.is_empty() {
        return Ok(BTreeMap::new());
    }
    gateway.node.read_barrier().await?;
    let reader = gateway.node.reader();
    let mut resolved = BTreeMap::new();
    for (name, &version) in pins {
        let Some(bytes) = reader.lib_files(name, version)? else {
            let kept: Vec<String> = reader
                .libs()?
                .into_iter()
                .filter(|lib| &lib.name == name)
                .flat_map(|lib| lib.versions)
                .map(|v| v.version.to_string())
                .collect();
            let known = if kept.is_empty() {
                "it was never published".to_string()
            } else {
                format!("versions kept: {}", kept.join(", "))
            };
            return Err(ApiError::new(
                Code::LibNotFound,
                format!(
                    "picloud.toml: [libs] {name} = {version}: library {name} has no version {version} ({known})"
                ),
            ));
        };
        let files = LibFiles::decode(&bytes)
            .map_err(|e| ApiError::internal(format!("stored library {name} v{version}: {e}")))?
            .files;
        resolved.insert(name.clone(), PinnedLib { version, files });
    }
    Ok(resolved)
}
