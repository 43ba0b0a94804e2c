//! `GET /_/realtime/<app>/<topic>`: Server-Sent Events of a topic, on every
//! node.
//!
//! ```text
//!   check: app ─▶ topic name ─▶ [[topic]] of the current version ─▶ token (auth = "token")
//!                                                                 └▶ session (+ role) (auth = "session")
//!   then:  Realtime::subscribe(after = Last-Event-ID | ?last_event_id=)
//!   body:  ": connected"  then per event
//!            id: <epoch>-<seq>        (durable messages only)
//!            data: <message JSON>
//!          "event: reset"    the asked position is older than the oldest kept
//!          "event: overflow" this subscriber fell a whole buffer behind: closed
//!          ": heartbeat"     every realtime_heartbeat_ms
//!          "event: revoked"  (auth = "session") the session ended or lost
//!                            the role: the stream ends after it
//! ```
//!
//! Both kinds of token come as `Authorization: Bearer <token>` or, since a
//! browser's EventSource cannot set headers, `?token=<token>`; the topic's
//! `auth` says which kind it is. A session-auth stream re-verifies its
//! session every `RECHECK_MS` (a map lookup on this node: revocations
//! reach it through the session actors), so a logout, a password change,
//! a deleted user or a removed role ends the stream within about a second.
//!
//! Everything before the stream starts answers the usual JSON errors
//! (`topic_not_found`, `token_*`, `realtime_full`, ...). The stream ends
//! when the client goes away (the body is dropped, and with it the
//! subscription) and when the node shuts down (`Realtime::shutdown` ends
//! every subscription). No permit of the in-flight pool is held: the
//! realtime limits bound subscribers instead.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use picloud_actors::app::{AppName, TopicAuth, find_topic, validate_topic_name};
use picloud_actors::host::now_ms;
use picloud_actors::realtime::token::{self, TokenError};
use picloud_actors::realtime::{Event, Subscription};
use picloud_actors::users::sessions::RECHECK_MS;
use picloud_actors::users::{AuthPolicy, UserService};
use picloud_lua_sdk::Code;
use picloud_storage::topics::Position;
use serde_json::Value;

use super::cors::with_cors;
use super::{ApiError, Gateway};

/// The endpoint, for `GET` and `OPTIONS`: the app's `[cors]` applies here
/// as to its routes (`cors.rs`), so a page of another origin can subscribe —
/// a browser's reconnect sends `Last-Event-ID`, which makes it preflight.
/// Errors before the stream starts carry the CORS headers too, so the page
/// can read their codes.
pub async fn subscribe(
    State(gateway): State<Gateway>,
    Path((app, topic)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    with_cors(&gateway, &app, &method, &headers, || async {
        open_stream(&gateway, &app, &topic, &headers, &uri)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    })
    .await
}

async fn open_stream(
    gateway: &Gateway,
    app: &str,
    topic: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let query: HashMap<String, String> = uri
        .query()
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    validate_topic_name(topic).map_err(|message| {
        ApiError::new(Code::InvalidTopic, format!("topic {topic:?}: {message}"))
    })?;
    let app_name = AppName::parse(app)
        .map_err(|_| ApiError::new(Code::AppNotFound, format!("app {app} not found")))?;
    let runtime = gateway.apps.runtime(app_name.as_str()).await?;
    let spec = find_topic(runtime.topics(), topic).ok_or_else(|| {
        ApiError::new(
            Code::TopicNotFound,
            format!("no [[topic]] of app {app} matches {topic:?}"),
        )
    })?;
    let gate = match spec.auth {
        TopicAuth::Public => None,
        TopicAuth::Token => {
            check_token(gateway, app, topic, headers, &query).await?;
            None
        }
        TopicAuth::Session => {
            let token = presented_token(headers, &query).ok_or_else(|| {
                ApiError::new(
                    Code::SessionInvalid,
                    format!(
                        "topic {topic} needs a session token (Authorization: Bearer or ?token=)"
                    ),
                )
            })?;
            let gate = SessionGate {
                users: gateway.users.clone(),
                app: app.to_string(),
                token: token.to_string(),
                role: spec.role.clone(),
                policy: runtime.auth().clone(),
            };
            gate.check().await?;
            Some(gate)
        }
    };
    let asked = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .or(query.get("last_event_id").map(String::as_str))
        .filter(|text| !text.is_empty())
        // An id this node cannot read is treated as one from another
        // history: the client gets a reset, never a silent gap.
        .map(|text| Position::parse(text).unwrap_or(Position { epoch: 0, seq: 0 }));
    let subscription = gateway.realtime.subscribe(app, topic, asked).await?;
    let heartbeat = Duration::from_millis(gateway.config.realtime_heartbeat_ms);
    let mut response = Body::from_stream(sse_stream(subscription, heartbeat, gate)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The token from `Authorization: Bearer` or `?token=` (browsers'
/// EventSource cannot set headers).
fn presented_token<'a>(
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
) -> Option<&'a str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    bearer.or(query.get("token").map(String::as_str))
}

/// Whether `user` (as `users.verify` answers) may read a topic that
/// requires `role` (none: any user).
fn admits(user: &Value, role: Option<&str>) -> bool {
    let Some(role) = role else { return true };
    user.get("roles")
        .and_then(Value::as_array)
        .is_some_and(|roles| roles.iter().any(|held| held.as_str() == Some(role)))
}

/// What a session-auth subscription is checked against, at the start and
/// every `RECHECK_MS` while it streams.
struct SessionGate {
    users: UserService,
    app: String,
    token: String,
    role: Option<String>,
    policy: AuthPolicy,
}

impl SessionGate {
    /// 401 `session_invalid` without a live session, 403 `forbidden`
    /// without the topic's role.
    async fn check(&self) -> Result<(), ApiError> {
        let user = self
            .users
            .verify(&self.app, &self.token, self.policy.clone())
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    Code::SessionInvalid,
                    "the session is unknown, expired or revoked; log in again",
                )
            })?;
        if !admits(&user, self.role.as_deref()) {
            return Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "this topic needs the role {:?}",
                    self.role.as_deref().unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }
}

/// Checks the realtime token of a token-auth topic.
async fn check_token(
    gateway: &Gateway,
    app: &str,
    topic: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let Some(token) = presented_token(headers, query) else {
        return Err(ApiError::new(
            Code::TokenInvalid,
            format!("topic {topic} needs a realtime token (Authorization: Bearer or ?token=)"),
        ));
    };
    let key = gateway.realtime.signing_key(app, false).await?;
    token::verify(&key, token, app, topic, now_ms())
        .map(|_| ())
        .map_err(|error| match error {
            TokenError::Invalid(why) => ApiError::new(Code::TokenInvalid, why),
            TokenError::Expired { exp } => ApiError::new(
                Code::TokenExpired,
                format!("the token expired at {exp} ms; ask the app for a new one"),
            ),
            TokenError::WrongTopic { topic: issued } => ApiError::new(
                Code::TokenWrongTopic,
                format!("the token is for topic {issued:?}, not {topic:?}"),
            ),
        })
}

/// The SSE text of one event.
pub fn sse_frame(event: &Event) -> Bytes {
    match event {
        Event::Reset => Bytes::from_static(b"event: reset\ndata: {}\n\n"),
        Event::Overflow => Bytes::from_static(b"event: overflow\ndata: {}\n\n"),
        Event::Message { id, data } => {
            let mut text = Vec::with_capacity(data.len() + 48);
            if let Some(id) = id {
                text.extend_from_slice(format!("id: {id}\n").as_bytes());
            }
            text.extend_from_slice(b"data: ");
            text.extend_from_slice(data);
            text.extend_from_slice(b"\n\n");
            Bytes::from(text)
        }
    }
}

/// The last frame of a session-auth stream whose session ended.
const REVOKED_FRAME: &[u8] = b"event: revoked\ndata: {}\n\n";

struct StreamState {
    subscription: Subscription,
    heartbeat: tokio::time::Interval,
    /// With `gate`: when the session is checked again.
    recheck: tokio::time::Interval,
    gate: Option<SessionGate>,
    started: bool,
    done: bool,
}

fn sse_stream(
    subscription: Subscription,
    heartbeat: Duration,
    gate: Option<SessionGate>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    let mut interval = tokio::time::interval(heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recheck = tokio::time::interval(Duration::from_millis(RECHECK_MS));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = StreamState {
        subscription,
        heartbeat: interval,
        recheck,
        gate,
        started: false,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        if !state.started {
            state.started = true;
            // The first tick fires at once: skip it.
            state.heartbeat.reset();
            state.recheck.reset();
            return Some((Ok(Bytes::from_static(b": connected\n\n")), state));
        }
        loop {
            tokio::select! {
                event = state.subscription.next() => {
                    let event = event?;
                    state.done = event == Event::Overflow;
                    state.heartbeat.reset();
                    return Some((Ok(sse_frame(&event)), state));
                }
                _ = state.heartbeat.tick() => {
                    return Some((Ok(Bytes::from_static(b": heartbeat\n\n")), state));
                }
                _ = state.recheck.tick(), if state.gate.is_some() => {
                    let revoked = match &state.gate {
                        Some(gate) => gate.check().await.is_err(),
                        None => false,
                    };
                    if revoked {
                        state.done = true;
                        return Some((Ok(Bytes::from_static(REVOKED_FRAME)), state));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_sse_text() {
        let message = Event::Message {
            id: Some(Position { epoch: 2, seq: 9 }),
            data: b"{\"a\":1}".as_slice().into(),
        };
        assert_eq!(&sse_frame(&message)[..], b"id: 2-9\ndata: {\"a\":1}\n\n");
        let ephemeral = Event::Message {
            id: None,
            data: b"1".as_slice().into(),
        };
        assert_eq!(&sse_frame(&ephemeral)[..], b"data: 1\n\n");
        assert_eq!(&sse_frame(&Event::Reset)[..], b"event: reset\ndata: {}\n\n");
    }

    #[test]
    fn a_role_topic_admits_only_users_holding_the_role() {
        let user = serde_json::json!({ "id": "u", "roles": ["staff", "x"] });
        assert!(admits(&user, None));
        assert!(admits(&user, Some("staff")));
        assert!(!admits(&user, Some("admin")));
        assert!(!admits(&serde_json::json!({ "id": "u" }), Some("staff")));
    }
}
