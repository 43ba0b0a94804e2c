//! Signing in and out: the login page (an operator's email and password, or
//! an API key), its double-submit CSRF cookie, and logout. The cookie and
//! CSRF design is in `session.rs`.

use axum::extract::{Query, Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use picloud_actors::users::flows::FlowError;
use picloud_lua_sdk::Code;
use serde::Deserialize;

use super::layout;
use super::session::{
    CSRF_FIELD, Empty, LOGIN_CSRF_COOKIE, SESSION_COOKIE, cookie, cookie_safe, csrf_failed,
    csrf_matches, hex, is_https, parse_form, read_form, sanitize_next, set_cookie,
};
use super::{BASE, PageError, PageResult, Posted};
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, Gateway, client_ip};

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    flash: Option<String>,
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    next: Option<String>,
}

/// A fresh random token for the login form's double-submit cookie.
fn login_nonce() -> String {
    hex(&rand::random::<[u8; 32]>())
}

/// The login page: its double-submit token is the cookie's when the browser
/// has one, else a new one set with the page.
fn render_login(
    parts: &Parts,
    status: StatusCode,
    next: &str,
    error: Option<&ApiError>,
    flash: Option<&str>,
) -> Response {
    let existing = cookie(&parts.headers, LOGIN_CSRF_COOKIE).filter(|value| cookie_safe(value));
    let nonce = existing.map_or_else(login_nonce, str::to_string);
    let body = html! {
        h1 { "Sign in to PiCloud" }
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        @if let Some(error) = error { (layout::error_box(error)) }
        section aria-labelledby="password-login" {
            h2 id="password-login" { "Operator" }
            form method="post" action={ (BASE) "/login" } {
                input type="hidden" name=(CSRF_FIELD) value=(nonce);
                input type="hidden" name="next" value=(next);
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        }
        section aria-labelledby="key-login" {
            h2 id="key-login" { "API key" }
            form method="post" action={ (BASE) "/login/key" } {
                input type="hidden" name=(CSRF_FIELD) value=(nonce);
                input type="hidden" name="next" value=(next);
                label for="key" { "API key" }
                input id="key" name="key" type="password" autocomplete="off" required;
                button type="submit" { "Sign in with key" }
            }
        }
    };
    let mut response = layout::respond(status, layout::page("Sign in", None, body));
    if existing.is_none() {
        let cookie = set_cookie(LOGIN_CSRF_COOKIE, Some(&nonce), is_https(parts));
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

pub async fn login_page(request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let query: LoginQuery = Query::try_from_uri(&parts.uri)
        .map(|Query(query)| query)
        .unwrap_or(LoginQuery {
            next: None,
            flash: None,
        });
    let next = sanitize_next(query.next.as_deref());
    let flash = query.flash.as_deref().and_then(layout::flash_text);
    render_login(&parts, StatusCode::OK, &next, None, flash)
}

/// Checks the login form's double-submit token: the field must equal the
/// cookie, which only a page of this origin could have set.
fn check_login_csrf(parts: &Parts, csrf: &str) -> Result<(), PageError> {
    let cookie = cookie(&parts.headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if csrf_matches(cookie, csrf) {
        Ok(())
    } else {
        Err(csrf_failed())
    }
}

/// Signed in: the session cookie set, the login cookie cleared, 303 to `next`.
fn signed_in(parts: &Parts, credential: &str, next: &str) -> PageResult {
    let secure = is_https(parts);
    let mut response = Redirect::to(next).into_response();
    for cookie in [
        set_cookie(SESSION_COOKIE, Some(credential), secure),
        set_cookie(LOGIN_CSRF_COOKIE, None, secure),
    ] {
        let value = HeaderValue::from_str(&cookie)
            .map_err(|_| ApiError::internal("a credential is not a valid cookie value"))?;
        response.headers_mut().append(SET_COOKIE, value);
    }
    Ok(response)
}

/// Email and password of an operator, under the login rate limits.
pub async fn login(State(gateway): State<Gateway>, request: Request) -> PageResult {
    let (parts, body) = request.into_parts();
    let (bytes, csrf) = read_form(body).await?;
    check_login_csrf(&parts, &csrf)?;
    let form: PasswordForm = parse_form(&bytes)?;
    let next = sanitize_next(form.next.as_deref());
    let client = client_ip(&parts.extensions);
    match gateway
        .operators
        .login(client, &form.email, form.password)
        .await
    {
        Ok(login) => {
            let token = login["token"].as_str().unwrap_or_default();
            signed_in(&parts, token, &next)
        }
        Err(FlowError::Refused(error)) => {
            let error = ApiError::from(error);
            Ok(render_login(
                &parts,
                error.status,
                &next,
                Some(&error),
                None,
            ))
        }
        Err(FlowError::RateLimited { retry_after_ms }) => {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            let error = ApiError::new(
                Code::RateLimited,
                format!("too many attempts; retry in {secs} s"),
            );
            let mut response = render_login(&parts, error.status, &next, Some(&error), None);
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
            Ok(response)
        }
    }
}

/// An API key, checked as the admin API checks a `Bearer` key.
pub async fn login_key(State(gateway): State<Gateway>, request: Request) -> PageResult {
    let (parts, body) = request.into_parts();
    let (bytes, csrf) = read_form(body).await?;
    check_login_csrf(&parts, &csrf)?;
    let form: KeyForm = parse_form(&bytes)?;
    let next = sanitize_next(form.next.as_deref());
    let key = form.key.trim();
    let refused = |message: &str| {
        let error = ApiError::unauthorized(message);
        Ok(render_login(
            &parts,
            error.status,
            &next,
            Some(&error),
            None,
        ))
    };
    if !cookie_safe(key) {
        return refused("invalid or revoked API key");
    }
    match Caller::from_credential(key, &gateway).await {
        Ok(_) => signed_in(&parts, key, &next),
        Err(error) if matches!(error.code, Code::Unauthorized | Code::SessionInvalid) => {
            refused(&error.message)
        }
        Err(error) => Err(error.into()),
    }
}

/// Ends an operator's session (a key stays valid: only its cookie goes)
/// and clears the cookie.
pub async fn logout(State(gateway): State<Gateway>, posted: Posted<Empty>) -> PageResult {
    let session = posted.session;
    if session
        .credential()
        .starts_with(picloud_actors::operators::SESSION_PREFIX)
    {
        gateway.operators.logout(session.credential()).await?;
    }
    let mut response = Redirect::to(&format!("{BASE}/login?flash=logged-out")).into_response();
    let cookie = set_cookie(SESSION_COOKIE, None, session.secure);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    Ok(response)
}
