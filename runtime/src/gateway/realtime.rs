//! `GET /_/realtime/<app>/<topic>`: Server-Sent Events of a topic, on every
//! node.
//!
//! ```text
//!   check: app ─▶ topic name ─▶ [[topic]] of the current version ─▶ token (auth = "token")
//!   then:  Realtime::subscribe(after = Last-Event-ID | ?last_event_id=)
//!   body:  ": connected"  then per event
//!            id: <epoch>-<seq>        (durable messages only)
//!            data: <message JSON>
//!          "event: reset"    the asked position is older than the oldest kept
//!          "event: overflow" this subscriber fell a whole buffer behind: closed
//!          ": heartbeat"     every realtime_heartbeat_ms
//! ```
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
use picloud_lua_sdk::Code;
use picloud_storage::topics::Position;

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
    if spec.auth == TopicAuth::Token {
        check_token(gateway, app, topic, headers, &query).await?;
    }
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
    let mut response = Body::from_stream(sse_stream(subscription, heartbeat)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Checks the token from `Authorization: Bearer` or `?token=` (browsers'
/// EventSource cannot set headers).
async fn check_token(
    gateway: &Gateway,
    app: &str,
    topic: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(token) = bearer.or(query.get("token").map(String::as_str)) else {
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

struct StreamState {
    subscription: Subscription,
    heartbeat: tokio::time::Interval,
    started: bool,
    done: bool,
}

fn sse_stream(
    subscription: Subscription,
    heartbeat: Duration,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    let mut interval = tokio::time::interval(heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = StreamState {
        subscription,
        heartbeat: interval,
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
            return Some((Ok(Bytes::from_static(b": connected\n\n")), state));
        }
        tokio::select! {
            event = state.subscription.next() => {
                let event = event?;
                state.done = event == Event::Overflow;
                state.heartbeat.reset();
                Some((Ok(sse_frame(&event)), state))
            }
            _ = state.heartbeat.tick() => Some((Ok(Bytes::from_static(b": heartbeat\n\n")), state)),
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
}
