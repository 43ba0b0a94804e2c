//! CORS at the gateway: an app's `[cors]` applied to its requests through
//! the pure [`picloud_actors::app::cors::answer`].
//!
//! Every endpoint that serves an app's URLs calls [`cors_for`] the same
//! way — app routes and static files (`apps.rs`), the realtime stream
//! (`GET /_/realtime/<app>/<topic>`, `realtime.rs`) and signed file URLs
//! (`/_/files/<app>/<path>`, `files.rs`), the last two through [`with_cors`]:
//! a [`Cors::Preflight`] is answered with [`Cors::preflight_response`]
//! before anything else, and every other response goes through
//! [`Cors::decorate`] (errors included, so a page can read their codes).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use picloud_actors::app::AppName;
use picloud_actors::app::cors::{CorsAnswer, CorsHeader, CorsRequest, answer};
use picloud_actors::error::AppError;

use super::Gateway;

/// What the gateway does about CORS for one request of an app.
#[derive(Debug)]
pub enum Cors {
    /// The app has no `[cors]`, or the request names no origin: nothing.
    None,
    /// A preflight the node answers itself; no script runs.
    Preflight(Vec<CorsHeader>),
    /// Headers to add to the response once it is made.
    Actual(Vec<CorsHeader>),
}

/// Decides CORS for a request of `app` with `method` and `headers`. A
/// request without `Origin` costs nothing more than the header lookup. A
/// preflight for an app this node has not loaded yet waits for the node to
/// catch up with the leader once (a deploy committed through another node),
/// like app requests do.
pub async fn cors_for(
    gateway: &Gateway,
    app: &AppName,
    method: &Method,
    headers: &HeaderMap,
) -> Cors {
    let text = |name: HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let request = CorsRequest {
        method: method.as_str(),
        origin: text(header::ORIGIN),
        request_method: text(header::ACCESS_CONTROL_REQUEST_METHOD),
        request_headers: text(header::ACCESS_CONTROL_REQUEST_HEADERS),
    };
    if request.origin.is_none() {
        return Cors::None;
    }
    let runtime = match gateway.apps.runtime(app.as_str()).await {
        Err(AppError::AppNotFound { .. } | AppError::NotDeployed { .. })
            if request.is_preflight() =>
        {
            if gateway.node.read_barrier().await.is_err() {
                return Cors::None;
            }
            let _ = gateway.apps.reload(app).await;
            gateway.apps.runtime(app.as_str()).await
        }
        other => other,
    };
    let Some(policy) = runtime.ok().and_then(|runtime| runtime.cors.clone()) else {
        return Cors::None;
    };
    match answer(&policy, &request) {
        CorsAnswer::Preflight { headers, .. } => Cors::Preflight(headers),
        CorsAnswer::Actual { headers } => Cors::Actual(headers),
    }
}

impl Cors {
    /// The node's answer to a preflight: `204` with the headers (no
    /// `Access-Control-Allow-*` when refused; the browser then refuses).
    pub fn preflight_response(headers: Vec<CorsHeader>) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        add(&mut response, headers);
        response
    }

    /// Adds the headers of [`Cors::Actual`] to a response.
    pub fn decorate(self, response: &mut Response) {
        if let Cors::Actual(headers) = self {
            add(response, headers);
        }
    }
}

/// Serves a node endpoint of `app`'s URLs (realtime streams, signed file
/// URLs) under the app's `[cors]`: a preflight is answered here, a plain
/// `OPTIONS` is 405, anything else is `serve`'s response (errors included)
/// with the CORS headers added, so a page can read their codes.
pub async fn with_cors<F, Fut>(
    gateway: &Gateway,
    app: &str,
    method: &Method,
    headers: &HeaderMap,
    serve: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let cors = match AppName::parse(app) {
        Ok(name) => cors_for(gateway, &name, method, headers).await,
        Err(_) => Cors::None,
    };
    let cors = match cors {
        Cors::Preflight(allowed) => return Cors::preflight_response(allowed),
        other => other,
    };
    let mut response = if *method == Method::OPTIONS {
        axum::response::IntoResponse::into_response(super::ApiError::new(
            picloud_lua_sdk::Code::MethodNotAllowed,
            "OPTIONS here answers CORS preflights only (with Origin and Access-Control-Request-Method)",
        ))
    } else {
        serve().await
    };
    cors.decorate(&mut response);
    response
}

/// Sets the headers; `Vary` is appended so a script's own stays.
fn add(response: &mut Response, headers: Vec<CorsHeader>) {
    let map = response.headers_mut();
    for (name, value) in headers {
        let Ok(value) = HeaderValue::try_from(value) else {
            continue;
        };
        let name = HeaderName::from_static(name);
        if name == header::VARY {
            map.append(name, value);
        } else {
            map.insert(name, value);
        }
    }
}
