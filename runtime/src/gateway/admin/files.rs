//! An app's files: `PUT|GET|HEAD|DELETE /apps/{app}/files/{*path}`
//! (streamed, registered outside `shed_load` by `gateway::router`), the
//! list `GET /apps/{app}/files?prefix=&limit=&cursor=`, and
//! `POST /apps/{app}/file-urls` which signs a URL (`picloud files url`).
//!
//! Reads need `read:<app>` (or deploy, admin), writes `deploy:<app>` (or
//! admin); signing a PUT URL is a write, a GET URL a read.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use picloud_lua_sdk::{Code, FileUrlOptions, UrlMethod};
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::{page_limit, require_app};
use crate::gateway::auth::Caller;
use crate::gateway::files::{download, stat_json, upload};
use crate::gateway::{ApiError, ApiQuery, Gateway, admission, client_ip, parse_json, read_body};

/// Most files one list page holds.
pub const FILES_LIST_LIMIT_MAX: usize = 1_000;

/// Largest body of `POST /file-urls` (a few short fields), in bytes.
const SIGN_BODY_BYTES_MAX: usize = 8 * 1024;

/// The streamed file route: the body (upload) or the response (download)
/// flows through without being buffered.
#[utoipa::path(
    method(get, head, put, delete),
    path = "/_/api/v1/apps/{app}/files/{path}",
    tag = "files",
    params(("app" = String, Path, description = "The app's name."), ("path" = String, Path, description = "A file's path (may contain `/`).")),
    request_body(content = Vec<u8>, description = "`PUT` only: the file's bytes, streamed.", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "`GET`/`HEAD`: the file (honours `Range`, `If-None-Match`); `PUT`/`DELETE`: done.", content_type = "application/octet-stream"),
        (status = 206, description = "`GET` with `Range`: part of the file."),
        (status = 304, description = "`GET` with a matching `If-None-Match`."),
    ),
)]
pub async fn file(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Body,
) -> Response {
    serve(
        &gateway,
        &caller,
        &app,
        &path,
        &method,
        &headers,
        &extensions,
        body,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    gateway: &Gateway,
    caller: &Caller,
    app: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    body: Body,
) -> Result<Response, ApiError> {
    match *method {
        Method::GET | Method::HEAD => {
            caller.require_read(app)?;
            require_app(gateway, app)?;
            download(gateway, app, path, headers, *method == Method::HEAD).await
        }
        Method::PUT => {
            caller.require_write(app)?;
            require_app(gateway, app)?;
            let content_type = headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            upload(gateway, app, path, headers, body, None, content_type).await
        }
        Method::DELETE => {
            caller.require_write(app)?;
            require_app(gateway, app)?;
            // No body: an admin request like any other, under its share.
            let _permit = gateway.admit(admission::ADMIN_SHARE, client_ip(extensions))?;
            let existed = gateway.files.service.delete(app, path).await?;
            Ok(Json(json!({"path": path, "deleted": existed})).into_response())
        }
        _ => Err(ApiError::new(
            Code::MethodNotAllowed,
            format!("{method} is not a method of /files/ (PUT, GET, HEAD, DELETE)"),
        )),
    }
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
}

/// A page of the app's files under `prefix`, in path order.
#[utoipa::path(
    get,
    path = "/apps/{app}/files",
    tag = "files",
    params(("app" = String, Path, description = "The app's name."), ListOptions),
    responses((status = 200, description = "A page of the app's files.")),
)]
pub(super) async fn list(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    ApiQuery(options): ApiQuery<ListOptions>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let limit = page_limit(options.limit, FILES_LIST_LIMIT_MAX, "")?;
    let page = gateway
        .files
        .service
        .list(
            &app,
            options.prefix.as_deref().unwrap_or(""),
            limit,
            options.cursor,
        )
        .await?;
    let files: Vec<Value> = page.files.iter().map(stat_json).collect();
    Ok(Json(json!({"files": files, "cursor": page.cursor})))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    path: String,
    /// `GET` (default) or `PUT`.
    #[serde(default)]
    method: Option<String>,
    /// Seconds the URL stays valid (the service's default and maximum apply).
    #[serde(default)]
    ttl: Option<f64>,
    #[serde(default)]
    max_bytes: Option<u64>,
    #[serde(default)]
    content_type: Option<String>,
}

/// Signs a file URL: `{"url": "/_/files/<app>/<path>?..."}` (no host: the
/// caller knows which node it talks to).
#[utoipa::path(
    post,
    path = "/apps/{app}/file-urls",
    tag = "files",
    params(("app" = String, Path, description = "The app's name.")),
    request_body = SignRequest,
    responses((status = 200, description = "A signed URL.")),
)]
pub(super) async fn sign(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: SignRequest = parse_json(&read_body(body, SIGN_BODY_BYTES_MAX).await?)?;
    let method = match request
        .method
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("GET") => {
            caller.require_read(&app)?;
            UrlMethod::Get
        }
        Some("PUT") => {
            caller.require_write(&app)?;
            UrlMethod::Put
        }
        Some(other) => {
            return Err(ApiError::new(
                Code::InvalidField,
                format!("method: expected GET or PUT, got {other:?}"),
            ));
        }
    };
    require_app(&gateway, &app)?;
    let url = gateway
        .files
        .service
        .sign_url(
            &app,
            &request.path,
            FileUrlOptions {
                ttl_secs: request.ttl,
                method,
                content_type: request.content_type,
                max_bytes: request.max_bytes,
            },
        )
        .await?;
    Ok(Json(json!({"url": url})))
}
