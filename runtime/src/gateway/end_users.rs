//! The built-in auth flows of an app's end users over HTTP: JSON in, JSON
//! out, errors `{"error":{"code","message"}}`. The decisions live in
//! `picloud_actors::users::flows`; this file reads requests and writes
//! answers.
//!
//! ```text
//!  POST /_/auth/<app>/signup          {email, password, data?} → 201 {token, user}
//!                                     (verify_email: 201 {email, verification: "sent"})
//!  POST /_/auth/<app>/login           {email, password}        → {token, user}
//!  POST /_/auth/<app>/logout          Bearer                   → {logged_out}
//!  GET  /_/auth/<app>/me              Bearer                   → the user
//!  POST /_/auth/<app>/verify          {token}                  → the user (verified)
//!  GET  /_/auth/<app>/verify?token=   the mailed link          → the same
//!  POST /_/auth/<app>/request-reset   {email}                  → 202 (the same for every email)
//!  POST /_/auth/<app>/reset           {token, password}        → {reset: true}
//!  POST /_/auth/<app>/accept-invite   {token, password}        → 201 {token, user}
//! ```
//!
//! Bodies are at most [`AUTH_BODY_BYTES_MAX`]; each request takes the
//! app's in-flight permit like an app route, and the app's `[cors]` applies.
//! A rate limit answers 429 `rate_limited` with `Retry-After` in seconds.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use picloud_actors::AppError;
use picloud_actors::app::AppName;
use picloud_actors::users::AuthPolicy;
use picloud_actors::users::flows::{FlowAnswer, FlowError};
use picloud_lua_sdk::Code;
use serde::Deserialize;
use serde_json::Value;

use super::cors::with_cors;
use super::{ApiError, Gateway, client_ip, parse_json};

/// The largest body an auth flow takes, in bytes: an email, a password
/// (at most 256 bytes), a token and a sign-up's `data` (which the node
/// bounds again by `auth_user_data_bytes_max`).
pub const AUTH_BODY_BYTES_MAX: usize = 32 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignupRequest {
    email: String,
    password: String,
    #[serde(default)]
    data: Value,
}

/// `{email, password}`: an end user's login, and an operator's.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    pub(crate) email: String,
    pub(crate) password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailRequest {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    token: String,
    password: String,
}

/// A flow's failure as an HTTP answer (`Retry-After` on a rate limit).
pub(crate) enum FlowFailure {
    Api(ApiError),
    RateLimited { retry_after_ms: u64 },
}

impl From<ApiError> for FlowFailure {
    fn from(error: ApiError) -> Self {
        FlowFailure::Api(error)
    }
}

impl From<picloud_lua_sdk::HostError> for FlowFailure {
    fn from(error: picloud_lua_sdk::HostError) -> Self {
        FlowFailure::Api(error.into())
    }
}

impl From<FlowError> for FlowFailure {
    fn from(error: FlowError) -> Self {
        match error {
            FlowError::Refused(error) => error.into(),
            FlowError::RateLimited { retry_after_ms } => {
                FlowFailure::RateLimited { retry_after_ms }
            }
        }
    }
}

impl IntoResponse for FlowFailure {
    fn into_response(self) -> Response {
        match self {
            FlowFailure::Api(error) => error.into_response(),
            FlowFailure::RateLimited { retry_after_ms } => {
                let secs = retry_after_ms.div_ceil(1000).max(1);
                let mut response = ApiError::new(
                    Code::RateLimited,
                    format!("too many attempts; retry in {secs} s"),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                response
            }
        }
    }
}

/// Every `/_/auth/<app>/<action>` request.
pub async fn flow(
    State(gateway): State<Gateway>,
    Path((app, action)): Path<(String, String)>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let headers = request.headers().clone();
    with_cors(&gateway, &app, &method, &headers, || async {
        match serve(&gateway, &app, &action, request).await {
            Ok(response) => response,
            Err(failure) => failure.into_response(),
        }
    })
    .await
}

async fn serve(
    gateway: &Gateway,
    app: &str,
    action: &str,
    request: Request,
) -> Result<Response, FlowFailure> {
    let (parts, body) = request.into_parts();
    let client = client_ip(&parts.extensions);
    // A malformed name names no app: refused before it takes anything.
    AppName::parse(app)
        .map_err(|_| ApiError::new(Code::AppNotFound, format!("app {app} not found")))?;
    let (bytes, _body_permit) = gateway.receive_body(body, AUTH_BODY_BYTES_MAX).await?;
    let _permit = gateway.admit(app, client)?;
    let policy = policy(gateway, app).await?;
    let users = &gateway.users;
    let ok = |body: Value| Ok(axum::Json(body).into_response());
    match (&parts.method, action) {
        (&Method::POST, "signup") => {
            let request: SignupRequest = parse_json(&bytes)?;
            let answer = users
                .signup(
                    app,
                    client,
                    &request.email,
                    request.password,
                    &request.data,
                    &policy,
                )
                .await?;
            Ok(answered(answer))
        }
        (&Method::POST, "login") => {
            let request: LoginRequest = parse_json(&bytes)?;
            ok(users
                .login_flow(app, client, &request.email, request.password, &policy)
                .await?)
        }
        (&Method::POST, "logout") => {
            let token = bearer(&parts.headers)?;
            let existed = users.logout(app, token).await?;
            ok(serde_json::json!({ "logged_out": existed }))
        }
        (&Method::GET, "me") => ok(users.me(app, bearer(&parts.headers)?, &policy).await?),
        (&Method::POST, "verify") => {
            let request: TokenRequest = parse_json(&bytes)?;
            ok(users.verify_email(app, &request.token).await?)
        }
        // The link in the verification mail, opened by a mail client.
        (&Method::GET, "verify") => {
            let token = query_token(parts.uri.query())?;
            ok(users.verify_email(app, &token).await?)
        }
        (&Method::POST, "request-reset") => {
            let request: EmailRequest = parse_json(&bytes)?;
            let body = users
                .request_reset(app, client, &request.email, &policy)
                .await?;
            Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
        }
        (&Method::POST, "reset") => {
            let request: PasswordRequest = parse_json(&bytes)?;
            ok(users
                .reset_password(app, &request.token, request.password, &policy)
                .await?)
        }
        (&Method::POST, "accept-invite") => {
            let request: PasswordRequest = parse_json(&bytes)?;
            let session = users
                .accept_invite(app, &request.token, request.password, &policy)
                .await?;
            Ok(answered(FlowAnswer {
                created: true,
                body: session,
            }))
        }
        (_, known) if ACTIONS.contains(&known) => Err(ApiError::new(
            Code::MethodNotAllowed,
            format!("{} is not served at /_/auth/{app}/{known}", parts.method),
        )
        .into()),
        _ => Err(ApiError::new(
            Code::NotFound,
            format!("no auth flow {action:?}; use one of {}", ACTIONS.join(", ")),
        )
        .into()),
    }
}

/// The flows served under `/_/auth/<app>/`.
const ACTIONS: [&str; 8] = [
    "signup",
    "login",
    "logout",
    "me",
    "verify",
    "request-reset",
    "reset",
    "accept-invite",
];

fn answered(answer: FlowAnswer) -> Response {
    let status = if answer.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(answer.body)).into_response()
}

/// The app's `[auth]`, loading the app first when this node has not applied
/// its deploy yet.
pub(crate) async fn policy(gateway: &Gateway, app: &str) -> Result<AuthPolicy, ApiError> {
    let name = AppName::parse(app)
        .map_err(|_| ApiError::new(Code::AppNotFound, format!("app {app} not found")))?;
    let runtime = match gateway.apps.runtime(name.as_str()).await {
        Err(AppError::AppNotFound { .. } | AppError::NotDeployed { .. }) => {
            gateway.node.read_barrier().await?;
            let _ = gateway.apps.reload(&name).await;
            gateway.apps.runtime(name.as_str()).await
        }
        other => other,
    }?;
    Ok(runtime.auth().clone())
}

/// The session token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                Code::SessionInvalid,
                "send the session token as Authorization: Bearer <token>",
            )
        })
}

/// `token` of a query string.
fn query_token(query: Option<&str>) -> Result<String, ApiError> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, token)| token.into_owned())
        .ok_or_else(|| ApiError::new(Code::AuthTokenInvalid, "the link has no token"))
}
