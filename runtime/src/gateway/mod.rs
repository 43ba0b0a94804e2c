//! The HTTP gateway: app routes, the admin API and health.
//!
//! ```text
//!   /_/health            no key: liveness (200 while the process serves)
//!   /_/ready             no key: readiness (quorum, leader, caught up)  → health.rs
//!   /_/metrics           Prometheus text (admin key)
//!   /_/realtime/<app>/<topic>  SSE of a topic (token or public)  → realtime.rs
//!   /_/auth/<app>/<flow> end users: signup, login, verify, reset, invites → end_users.rs
//!   /_/files/<app>/<path>?sig=  a file by signed URL (GET, HEAD, PUT) → files.rs
//!   /_/api/v1/apps/<app>/files/<path>  a file, streamed (Bearer key) → admin/files.rs
//!   /_/api/v1/...        admin API (Bearer key, scopes)      → admin/ (one file per resource)
//!   /_/dashboard/...     HTML pages (session cookie, CSRF)   → dashboard/ (one file per page group)
//!   /<app>/<route path>  the app's scripts                   → apps.rs
//! ```
//!
//! `server.rs` accepts connections and bounds what a client can hold open
//! (connection caps, header, idle and body timeouts). A request's body is
//! received first (`body.rs`: timed, and charged to a node-wide byte budget),
//! and only then does it take an in-flight permit (`admission.rs`: the node's
//! pool with a share per app and per client address); when none is free the
//! answer is 503 `overloaded` at once rather than a queue. `/_/health` and
//! `/_/ready` take no permit. File bodies are the exception: they stream
//! (never buffered), under their own permits and body timing (`files.rs`).
//!
//! # Layout
//! - `server.rs`: accept loop, connection caps, hyper HTTP/1 + HTTP/2 setup
//! - `stream_conn.rs`: realtime stream requests served without hyper (a
//!   lean connection for long-lived subscribers)
//! - `body.rs`: body timeouts and the buffered-bytes budget
//! - `admission.rs`: in-flight permits and their shares
//! - `proxy.rs`: `--trusted-proxies`, the forwarded client and host
//! - `cors.rs`: an app's `[cors]` on its requests (preflights, allow
//!   headers), for every endpoint serving app URLs
//! - `apps.rs`: app requests; `admin/`: the admin API, one route table in
//!   `admin/mod.rs` and one file per resource
//! - `health.rs`: `/_/health` and `/_/ready`
//! - `realtime.rs`: `/_/realtime/<app>/<topic>`, Server-Sent Events
//! - `end_users.rs`: `/_/auth/<app>/<flow>`, the built-in JSON auth flows
//! - `files.rs`: `/_/files/<app>/<path>` (signed URLs), `Range`, ETags and
//!   the streamed upload and download the admin file routes share
//! - `stats.rs`: per-app request counts and latency, and `MetricsSnapshot`
//!   (this node's figures for `/_/metrics` and the dashboard)
//! - `faults.rs`: the test-only fault switch route (absent from release builds)
//! - `dashboard/`: the server-rendered dashboard (login, apps, an app and
//!   its history, logs and dead letters, the cluster, metrics), over the
//!   same callers and checks as the admin API
//! - `auth.rs`: callers (a key or an operator session), the scope matrix's
//!   check of every admin route (`enforce`); `error.rs`: errors to statuses and codes

pub mod admin;
pub mod admission;
pub mod body;
pub mod cors;
pub mod proxy;
pub mod server;
pub mod stream_conn;

use picloud_actors::dispatcher::DispatcherStats;
pub mod apps;
pub mod auth;
pub mod dashboard;
pub mod end_users;
pub mod error;
pub mod faults;
pub mod files;
pub mod health;
pub mod realtime;
pub mod stats;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use picloud_actors::files::FileService;
use picloud_actors::operators::OperatorService;
use picloud_actors::realtime::Realtime;
use picloud_actors::users::UserService;
use picloud_actors::{ActorLimits, ActorRestarts, Apps, CpuShares, LogBook};
use picloud_cluster::Node;
use picloud_lua_sdk::Code;
use serde::de::DeserializeOwned;

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
    /// Restarts after a panic, per actor, for `/_/metrics`.
    pub restarts: Arc<ActorRestarts>,
    /// When each API key last authenticated on this node (`keys list`).
    pub key_uses: auth::KeyUses,
    /// This node's realtime: topics with subscribers, signing keys.
    pub realtime: Realtime,
    /// This node's files and the permits of the streamed file routes.
    pub files: files::FileGate,
    /// This node's end users (the admin API's `users` routes).
    pub users: UserService,
    /// Operators: their sessions authenticate admin requests.
    pub operators: OperatorService,
    /// Requests and latency per app (`stats.rs`).
    pub http_stats: stats::HttpStats,
    /// The apps' CPU gates, which measure their script time.
    pub shares: Arc<CpuShares>,
    /// The dashboard's recent samples of this node's figures (its metrics
    /// page), filled by the `dashboard_sampler` duty.
    pub samples: dashboard::metrics::Samples,
    admission: admission::Admission,
    bodies: body::BodyBudget,
}

impl Gateway {
    pub fn new(
        node: Node,
        apps: Apps,
        logs: LogBook,
        config: Arc<ServeConfig>,
        limits: Arc<ActorLimits>,
        counters: Counters,
        secret_keys: Arc<SecretKeys>,
    ) -> Gateway {
        Gateway(Arc::new(Shared {
            realtime: counters.realtime,
            files: files::FileGate::new(counters.files),
            users: counters.users,
            operators: counters.operators,
            triggers: counters.triggers,
            restarts: counters.restarts,
            shares: counters.shares,
            http_stats: stats::HttpStats::new(config.metrics_apps_max),
            key_uses: auth::KeyUses::default(),
            samples: dashboard::metrics::Samples::default(),
            secret_keys,
            admission: admission::Admission::new(
                config.http_inflight_max,
                config.http_inflight_per_app_max,
                config.http_inflight_per_client_max,
            ),
            bodies: body::BodyBudget::new(config.http_body_buffered_bytes_max),
            node,
            apps,
            logs,
            config,
            limits,
        }))
    }
}

/// The node's counters `/_/metrics` reports, kept by the layers below
/// (realtime keeps its subscriber count, and serves `/_/realtime`).
pub struct Counters {
    pub triggers: Arc<DispatcherStats>,
    pub restarts: Arc<ActorRestarts>,
    pub realtime: Realtime,
    pub files: FileService,
    pub users: UserService,
    pub operators: OperatorService,
    pub shares: Arc<CpuShares>,
}

pub fn router(gateway: Gateway) -> Router {
    let router = Router::new();
    // Test builds only (the `fault-injection` feature): arm a duty's fault.
    let router = if picloud_cluster::duty::FAULTS_ENABLED {
        router.route("/_/api/v1/faults/{*name}", axum::routing::post(faults::arm))
    } else {
        router
    };
    router
        .route("/_/health", get(health::health))
        .route("/_/ready", get(health::ready))
        .route("/_/metrics", get(admin::metrics::metrics))
        .route(
            "/_/auth/{app}/{action}",
            on(
                MethodFilter::GET
                    .or(MethodFilter::POST)
                    .or(MethodFilter::OPTIONS),
                end_users::flow,
            ),
        )
        .route(
            "/_/realtime/{app}/{*topic}",
            get(realtime::subscribe).options(realtime::subscribe),
        )
        // File bodies stream: these routes must not sit behind `shed_load`,
        // which receives a whole body before the handler runs.
        .route(
            "/_/files/{app}/{*path}",
            on(
                MethodFilter::GET
                    .or(MethodFilter::HEAD)
                    .or(MethodFilter::PUT)
                    .or(MethodFilter::OPTIONS),
                files::signed,
            ),
        )
        .route(
            "/_/api/v1/apps/{app}/files/{*path}",
            on(
                MethodFilter::GET
                    .or(MethodFilter::HEAD)
                    .or(MethodFilter::PUT)
                    .or(MethodFilter::DELETE),
                admin::files::file,
            ),
        )
        // The dashboard's pages and forms: admitted like the admin API.
        .nest(
            dashboard::BASE,
            dashboard::router().layer(middleware::from_fn_with_state(gateway.clone(), shed_load)),
        )
        .nest(
            "/_/api/v1",
            admin::router(gateway.clone())
                .layer(middleware::from_fn_with_state(gateway.clone(), shed_load)),
        )
        // App requests take their in-flight permit inside the handler: a
        // middleware layer costs ~6% of the plain route's throughput.
        .fallback(apps::serve_app)
        .with_state(gateway)
}

impl Gateway {
    /// Takes an in-flight permit for `app` (or [`admission::ADMIN_SHARE`])
    /// and `client`, or fails with 503 `overloaded`.
    pub fn admit(&self, app: &str, client: IpAddr) -> Result<admission::Admitted<'_>, ApiError> {
        Ok(self.admission.admit(app, client)?)
    }

    /// Receives a request body of at most `limit` bytes under the body
    /// budget; the permit holds its bytes until the request is answered.
    pub async fn receive_body(
        &self,
        body: Body,
        limit: usize,
    ) -> Result<(Bytes, body::BodyPermit<'_>), ApiError> {
        Ok(self.bodies.receive(body, limit).await?)
    }
}

/// The client's address, as the server recorded it on the request: the
/// forwarded client when a trusted proxy sent it (`proxy.rs`), else the
/// peer (the unspecified address when a request did not come through
/// `server.rs`).
pub fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    if let Some(forwarded) = extensions.get::<proxy::Forwarded>() {
        return server::client_address(forwarded.client);
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| {
            server::client_address(info.0.ip())
        })
}

/// Admits an admin API request: its body is received first (up to the
/// largest any admin route takes; each handler then applies its own limit),
/// then it takes a permit of the admin share.
async fn shed_load(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limit = gateway
        .config
        .http_body_bytes_max
        .max(gateway.config.deploy_bytes_max);
    let (bytes, _body_permit) = match gateway.receive_body(body, limit).await {
        Ok(received) => received,
        Err(error) => return error.into_response(),
    };
    let _permit = match gateway.admit(admission::ADMIN_SHARE, client_ip(&parts.extensions)) {
        Ok(permit) => permit,
        Err(error) => return error.into_response(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
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
                ApiError::new(
                    Code::InvalidQuery,
                    format!("query parameter {path}: {}", error.into_inner()),
                )
            })
    }
}

/// Reads a body up to `limit` bytes; more is 413 `body_too_large`, a client
/// too slow is 408 `body_timeout`.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
            || error.to_string().contains("length limit");
        if too_large {
            body::BodyError::TooLarge { limit }.into()
        } else {
            body::classify(&error).into()
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
                Err(ApiError::new(
                    Code::InvalidJson,
                    format!("request body is not valid JSON: {inner}"),
                ))
            } else if path == "." {
                Err(ApiError::new(Code::InvalidField, inner.to_string()))
            } else {
                Err(ApiError::new(
                    Code::InvalidField,
                    format!("{path}: {inner}"),
                ))
            }
        }
    }
}
