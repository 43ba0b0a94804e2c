//! Serving apps: `/<app>/<route path>` runs the matching script.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use picloud_actors::AppRequest;
use picloud_actors::app::AppName;
use picloud_actors::error::AppError;
use picloud_lua_sdk::Code;

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

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| picloud_actors::app::routes::percent_decode(&s.replace('+', " "));
        out.insert(decode(key), decode(value));
    }
    out
}

pub async fn serve_app(State(gateway): State<Gateway>, request: Request) -> Response {
    match serve(gateway, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve(gateway: Gateway, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let (app, rest) = split_app(path)
        .ok_or_else(|| Error::new(Code::NotFound, "no app named in the path; use /<app>/..."))?;
    if app == "_" {
        return Err(Error::new(
            Code::NotFound,
            format!("no system endpoint at {path}"),
        ));
    }
    // The name is checked once, here; a malformed one names no app.
    let Ok(name) = AppName::parse(app) else {
        return Err(Error::new(
            Code::AppNotFound,
            format!("app {app} not found"),
        ));
    };
    let headers = parts
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_ascii_lowercase(),
                value.to_str().ok()?.to_string(),
            ))
        })
        .collect();
    // The body first, the in-flight permit after: a client trickling its
    // body holds only its connection and the bytes it has sent.
    let (body, _body_permit) = gateway
        .receive_body(body, gateway.config.http_body_bytes_max)
        .await?;
    let _permit = gateway.admit(app, client_ip(&parts.extensions))?;
    let app_request = AppRequest {
        method: parts.method.as_str().to_string(),
        path: rest.to_string(),
        query: parse_query(parts.uri.query()),
        headers,
        body: body.to_vec(),
    };
    let response = match gateway.apps.invoke(&name, app_request.clone()).await {
        // This node may not have applied a deploy committed through another
        // node yet: catch up with the leader once, then ask again.
        Err(AppError::AppNotFound { .. } | AppError::NotDeployed { .. }) => {
            gateway.node.read_barrier().await?;
            let _ = gateway.apps.reload(&name).await;
            gateway.apps.invoke(&name, app_request).await?
        }
        other => other?,
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
            ));
        };
        builder = builder.header(name, value);
    }
    builder
        .body(Body::from(response.body))
        .map_err(|e| Error::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
