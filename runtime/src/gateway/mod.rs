//! The HTTP gateway: app routes, the admin API and health.
//!
//! ```text
//!   /_/health            no key
//!   /_/metrics           Prometheus text (admin key)
//!   /_/api/v1/...        admin API (Bearer key, scopes)      → admin.rs
//!   /_/api/v1/.../secrets  app secrets, key rotation          → secrets.rs
//!   /_/api/v1/libs...    shared libraries                    → libs.rs
//!   /<app>/<route path>  the app's scripts                   → apps.rs
//! ```
//!
//! Every request takes a permit from one semaphore (`http_inflight_max`); when
//! none is free the answer is 503 `overloaded` at once rather than a queue.

pub mod admin;

use picloud_actors::dispatcher::DispatcherStats;
pub mod apps;
pub mod auth;
pub mod docs;
pub mod error;
pub mod libs;
pub mod secrets;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use picloud_actors::{ActorLimits, Apps, LogBook};
use picloud_cluster::Node;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::config::ServeConfig;
use crate::secret_key::SecretKeys;
pub use error::ApiError;

/// What every handler shares. One `Arc`, so the per-request clones axum makes
/// of its state cost one atomic increment, not one per field.
#[derive(Clone)]
pub struct Gateway(Arc<Shared>);

impl std::ops::Deref for Gateway {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub node: Node,
    pub apps: Apps,
    pub logs: LogBook,
    pub config: Arc<ServeConfig>,
    pub limits: Arc<ActorLimits>,
    /// This node's trigger dispatcher counters.
    pub triggers: Arc<DispatcherStats>,
    /// This node's secrets master keys.
    pub secret_keys: Arc<SecretKeys>,
    inflight: Semaphore,
}

impl Gateway {
    pub fn new(
        node: Node,
        apps: Apps,
        logs: LogBook,
        config: Arc<ServeConfig>,
        limits: Arc<ActorLimits>,
        triggers: Arc<DispatcherStats>,
        secret_keys: Arc<SecretKeys>,
    ) -> Gateway {
        Gateway(Arc::new(Shared {
            triggers,
            secret_keys,
            inflight: Semaphore::new(config.http_inflight_max),
            node,
            apps,
            logs,
            config,
            limits,
        }))
    }
}

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/_/health", get(health))
        .route("/_/metrics", get(admin::metrics))
        .nest(
            "/_/api/v1",
            admin::router()
                .merge(secrets::router())
                .layer(middleware::from_fn_with_state(gateway.clone(), shed_load)),
        )
        // App requests take their in-flight permit inside the handler: a
        // middleware layer costs ~6% of the plain route's throughput.
        .fallback(apps::serve_app)
        .with_state(gateway)
}

impl Gateway {
    /// Takes an in-flight permit, or fails with 503 `overloaded`.
    pub fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.inflight.try_acquire().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "{} requests are in flight (http_inflight_max); retry shortly",
                    self.config.http_inflight_max
                ),
            )
        })
    }
}

/// Admits an admin API request (see [`Gateway::admit`]).
async fn shed_load(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let _permit = match gateway.admit() {
        Ok(permit) => permit,
        Err(error) => return error.into_response(),
    };
    next.run(request).await
}

async fn health(State(gateway): State<Gateway>) -> Response {
    let status = gateway.node.status();
    axum::Json(serde_json::json!({
        "status": "ok",
        "node_id": status.id,
        "role": status.role,
        "leader": status.leader,
        "applied_index": status.applied_index,
    }))
    .into_response()
}

/// `Query<T>` whose rejection is a JSON 400 `invalid_query` naming the field.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                ApiError::bad_request(
                    "invalid_query",
                    format!("query parameter {path}: {}", error.into_inner()),
                )
            })
    }
}

/// Reads a body up to `limit` bytes; more is 413 `body_too_large`.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
            || error.to_string().contains("length limit");
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body exceeds {limit} bytes"),
            )
        } else {
            ApiError::bad_request("bad_body", format!("reading request body: {error}"))
        }
    })
}

/// Parses a JSON body into `T`; errors name the field (`name: invalid type ...`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    match parsed {
        Ok(value) => Ok(value),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::bad_request(
                    "invalid_json",
                    format!("request body is not valid JSON: {inner}"),
                ))
            } else if path == "." {
                Err(ApiError::bad_request("invalid_field", inner.to_string()))
            } else {
                Err(ApiError::bad_request(
                    "invalid_field",
                    format!("{path}: {inner}"),
                ))
            }
        }
    }
}
