//! Serving apps: `/<app>/<route path>` runs the matching script (or serves a
//! file of the app's `public/` when no route matches a GET or HEAD).
//!
//! Every app request has a request id: the client's `x-request-id` when it is
//! a sane token, otherwise a fresh one. It is handed to the script (in
//! `req.headers["x-request-id"]`), written with any failure into the app's
//! log, and returned as the `x-request-id` response header.
//!
//! A script's failure is answered without its internals (file, line, error
//! text), which would tell any caller how the app is built: the client gets
//! the code and the request id, the app's log has the rest. An app opts in to
//! full messages with `[app] expose_errors = true`; unset, a `--dev` node
//! exposes them. The codes treated this way are [`HIDDEN_CODES`].
//!
//! Cross-origin requests follow the app's `[cors]` (`cors.rs`): the node
//! answers preflights itself, and every response to an allowed origin
//! carries the allow headers.
//!
//! Bodies: a body sent with a JSON content type (`application/json`, any
//! `+json`) that does not parse is refused 400 `invalid_json` before the
//! script runs; `req.json` is filled whenever a body parses, whatever its
//! content type (see `picloud_lua_sdk::is_json_content_type`).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picloud_actors::AppRequest;
use picloud_actors::app::AppName;
use picloud_actors::error::AppError;
use picloud_lua_sdk::{Code, is_json_content_type};
use serde_json::json;

use super::cors::{Cors, cors_for};
use super::{ApiError, Gateway, client_ip};
use crate::gateway::error::ApiError as Error;

/// Splits `/hello/greet/pi` into (`hello`, `/greet/pi`).
fn split_app(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.strip_prefix('/')?;
    let (app, rest) = match trimmed.find('/') {
        Some(at) => (&trimmed[..at], &trimmed[at..]),
        None => (trimmed, "/"),
    };
    (!app.is_empty()).then_some((app, rest))
}

/// The app a request is for and the route path inside it: the app whose
/// domain the request's host is (then the whole path is the route path),
/// else the first path segment (`/<app>/<route path>`). `/_/...` paths
/// name no app on any host.
fn target(gateway: &Gateway, parts: &axum::http::request::Parts) -> Option<(String, String)> {
    let path = parts.uri.path();
    let system = path == "/_" || path.starts_with("/_/");
    if !system
        && let Some(app) =
            request_host(parts).and_then(|host| gateway.apps.domains().app_for_host(host))
    {
        return Some((app, path.to_string()));
    }
    split_app(path).map(|(app, rest)| (app.to_string(), rest.to_string()))
}

/// The host a request asked for: `X-Forwarded-Host` from a trusted proxy,
/// else `Host`, else the URI's authority (HTTP/2).
fn request_host(parts: &axum::http::request::Parts) -> Option<&str> {
    if let Some(host) = parts
        .extensions
        .get::<super::proxy::Forwarded>()
        .and_then(|forwarded| forwarded.host.as_deref())
    {
        return Some(host);
    }
    parts
        .headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| parts.uri.authority().map(|authority| authority.as_str()))
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| picloud_actors::app::routes::percent_decode(&s.replace('+', " "));
        out.insert(decode(key), decode(value));
    }
    out
}

/// The response header (and request header accepted from clients) that
/// carries a request's id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest client-chosen request id accepted; a longer or odd one is
/// replaced by a fresh id (it is written into logs and echoed back).
pub const REQUEST_ID_BYTES_MAX: usize = 64;

/// Codes whose messages carry a script's internals: its file, line and
/// error text (`script_error`), or where and how it ran out of its budget
/// or memory. Clients get these codes and statuses with a generic message
/// unless the app exposes errors. `invalid_response` keeps its message: it
/// is the server's own description of the returned value's shape (no file,
/// line or script text), and an app author debugging a response needs it.
pub const HIDDEN_CODES: [Code; 3] = [Code::ScriptError, Code::ScriptTimeout, Code::ScriptMemory];

/// The client's request id when it is 1 to [`REQUEST_ID_BYTES_MAX`] bytes
/// of letters, digits, `-`, `_`, `.` or `:`; otherwise a fresh random one.
fn request_id(headers: &axum::http::HeaderMap) -> String {
    let sane = |id: &str| {
        !id.is_empty()
            && id.len() <= REQUEST_ID_BYTES_MAX
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    };
    match headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        Some(id) if sane(id) => id.to_string(),
        _ => format!("{:016x}", rand::random::<u64>()),
    }
}

pub async fn serve_app(State(gateway): State<Gateway>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let target = target(&gateway, &parts);
    let app = target.as_ref().map(|(app, _)| app.clone());
    let response = respond(&gateway, Request::from_parts(parts, body), target).await;
    // Counted once answered (not once the body is sent); only apps that
    // exist get series (`stats.rs`).
    if let Some(app) = app {
        gateway
            .http_stats
            .record(&app, response.status(), started.elapsed(), || {
                gateway
                    .node
                    .reader()
                    .app(&app)
                    .is_ok_and(|record| record.is_some())
            });
    }
    response
}

async fn respond(
    gateway: &Gateway,
    request: Request,
    target: Option<(String, String)>,
) -> Response {
    let request_id = request_id(request.headers());
    // Cross-origin requests (with `Origin`) of an app with `[cors]`: a
    // preflight is answered here before any script runs; any other response
    // gets the allow headers after it is made (after `serve`, which loads an
    // app a lagging node has not applied yet).
    let cross_origin = request
        .headers()
        .contains_key(header::ORIGIN)
        .then_some(target.as_ref())
        .flatten()
        .and_then(|(app, _)| AppName::parse(app).ok())
        .map(|app| (app, request.method().clone(), request.headers().clone()));
    if let Some((app, method, headers)) = &cross_origin
        && method == Method::OPTIONS
        && let Cors::Preflight(cors) = cors_for(gateway, app, method, headers).await
    {
        let mut response = Cors::preflight_response(cors);
        set_request_id(&mut response, request_id);
        return response;
    }
    let mut response = match serve(gateway.clone(), request, target, &request_id).await {
        Ok(response) => response,
        Err(Failure::Script(error)) => error.into_response(),
        Err(Failure::Api(error)) => error.into_response(),
    };
    if let Some((app, method, headers)) = &cross_origin {
        cors_for(gateway, app, method, headers)
            .await
            .decorate(&mut response);
    }
    set_request_id(&mut response, request_id);
    response
}

fn set_request_id(response: &mut Response, request_id: String) {
    // The id is checked above: it is always a valid header value.
    if let Ok(value) = HeaderValue::try_from(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
}

/// Why an app request failed: a script failure, answered with its request
/// id, or any other error.
enum Failure {
    Script(ScriptFailure),
    Api(ApiError),
}

impl<E: Into<ApiError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Api(error.into())
    }
}

/// A failure with one of the [`HIDDEN_CODES`]: `{"error": {"code",
/// "message", "request_id"}}`, the message generic unless exposed.
struct ScriptFailure {
    error: ApiError,
    request_id: String,
}

impl IntoResponse for ScriptFailure {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.error.code.as_str(),
            "message": self.error.message,
            "request_id": self.request_id,
        }});
        (self.error.status, axum::Json(body)).into_response()
    }
}

/// Shapes an invocation's failure for the client: hidden codes lose their
/// message unless `expose` (the full error is already in the app's log).
fn script_failure(error: AppError, expose: bool, request_id: &str) -> Failure {
    let mut error = ApiError::from(error);
    if !HIDDEN_CODES.contains(&error.code) {
        return Failure::Api(error);
    }
    if !expose {
        error.message = format!("the script failed; see the app's log (request id {request_id})");
    }
    Failure::Script(ScriptFailure {
        error,
        request_id: request_id.to_string(),
    })
}

async fn serve(
    gateway: Gateway,
    request: Request,
    target: Option<(String, String)>,
    request_id: &str,
) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let (app, rest) = target
        .ok_or_else(|| Error::new(Code::NotFound, "no app named in the path; use /<app>/..."))?;
    let app = app.as_str();
    if app == "_" {
        return Err(Error::new(Code::NotFound, format!("no system endpoint at {path}")).into());
    }
    // The name is checked once, here; a malformed one names no app.
    let Ok(name) = AppName::parse(app) else {
        return Err(Error::new(Code::AppNotFound, format!("app {app} not found")).into());
    };
    let mut headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_ascii_lowercase(),
                value.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    headers.insert(REQUEST_ID_HEADER.to_string(), request_id.to_string());
    // The body first, the in-flight permit after: a client trickling its
    // body holds only its connection and the bytes it has sent.
    let (body, _body_permit) = gateway
        .receive_body(body, gateway.config.http_body_bytes_max)
        .await?;
    if !body.is_empty()
        && headers
            .get("content-type")
            .is_some_and(|content_type| is_json_content_type(content_type))
        && let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
    {
        return Err(Error::new(
            Code::InvalidJson,
            format!("the body is sent as JSON but does not parse: {error}"),
        )
        .into());
    }
    let _permit = gateway.admit(app, client_ip(&parts.extensions))?;
    let app_request = AppRequest {
        method: parts.method.as_str().to_string(),
        path: rest,
        query: parse_query(parts.uri.query()),
        headers,
        body: body.to_vec(),
        request_id: request_id.to_string(),
    };
    let result = match gateway.apps.invoke(&name, app_request.clone()).await {
        // This node may not have applied a deploy committed through another
        // node yet: catch up with the leader once, then ask again.
        Err(AppError::AppNotFound { .. } | AppError::NotDeployed { .. }) => {
            gateway.node.read_barrier().await?;
            let _ = gateway.apps.reload(&name).await;
            gateway.apps.invoke(&name, app_request).await
        }
        other => other,
    };
    let response = match result {
        Ok(response) => response,
        Err(error @ AppError::Invoke(_)) => {
            // The app's own choice wins; unset, a --dev node shows all.
            let expose = match gateway.apps.runtime(name.as_str()).await {
                Ok(runtime) => runtime.expose_errors.unwrap_or(gateway.config.dev),
                Err(_) => gateway.config.dev,
            };
            return Err(script_failure(error, expose, request_id));
        }
        Err(other) => return Err(other.into()),
    };
    let status = StatusCode::from_u16(response.status)
        .map_err(|_| Error::internal(format!("script returned bad status {}", response.status)))?;
    let mut builder = Response::builder().status(status);
    for (name, value) in &response.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            return Err(Error::new(
                Code::InvalidResponse,
                format!("script returned an invalid header {name:?}"),
            )
            .into());
        };
        builder = builder.header(name, value);
    }
    Ok(builder
        .body(Body::from(response.body))
        .map_err(|e| Error::internal(e.to_string()))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_request_ids_are_kept_and_others_replaced() {
        let with = |id: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(id).expect("value"));
            request_id(&headers)
        };
        assert_eq!(with("abc-1.2_3:4"), "abc-1.2_3:4");
        for odd in ["", "a b", "x\"y", &"a".repeat(REQUEST_ID_BYTES_MAX + 1)] {
            let fresh = with(odd);
            assert!(fresh != odd && fresh.len() == 16, "{odd:?} gave {fresh:?}");
        }
        assert_eq!(request_id(&axum::http::HeaderMap::new()).len(), 16);
    }

    #[test]
    fn paths_split_into_app_and_route() {
        assert_eq!(split_app("/hello/greet/pi"), Some(("hello", "/greet/pi")));
        assert_eq!(split_app("/hello"), Some(("hello", "/")));
        assert_eq!(split_app("/"), None);
        let query = parse_query(Some("a=1&b=x+y&c=%2F&flag"));
        assert_eq!(query["b"], "x y");
        assert_eq!(query["c"], "/");
        assert_eq!(query["flag"], "");
    }
}
