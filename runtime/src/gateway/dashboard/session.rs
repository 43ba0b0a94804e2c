//! Dashboard sessions: the cookie that carries a credential, the CSRF token
//! derived from it, and the extractors every page and form goes through
//! ([`Session`], [`Posted`]). The login and logout handlers are in
//! `login.rs` (they draw pages; this file draws none).
//!
//! ```text
//!  login form ──(double-submit cookie picloud_login_csrf == field csrf)──▶
//!    email + password ─▶ OperatorService::login (its rate limits) ─▶ pcs_… ┐
//!    API key ─────────▶ Caller::from_credential ─────────────────▶ pck_… ┴▶
//!  Set-Cookie: picloud_session=<credential>; HttpOnly; SameSite=Strict;
//!              Path=/_/dashboard[; Secure]
//!  every page: cookie ─▶ Caller::from_credential (the admin API's check)
//!  every POST: field csrf == hex(SHA-256("picloud-dashboard-csrf\0" ‖ credential)),
//!              compared in constant time before anything else
//! ```
//!
//! The CSRF token is a pure function of the credential, so it validates on
//! every node of the cluster (a browser behind a load balancer) with no
//! shared state, and a page on another origin cannot compute it: the
//! credential is in an `HttpOnly` cookie it cannot read. The login form has
//! no credential yet; it is protected against login CSRF (an attacker
//! logging the victim into the attacker's account) by a random
//! double-submit cookie, which `SameSite=Strict` keeps off cross-site posts.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use axum::http::request::Parts;
use picloud_lua_sdk::Code;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{BASE, PageError};
use crate::gateway::auth::{Caller, Principal};
use crate::gateway::{ApiError, Gateway, read_body};

/// The cookie holding the caller's credential (an operator session token or
/// an API key).
pub const SESSION_COOKIE: &str = "picloud_session";
/// The login form's double-submit cookie.
pub const LOGIN_CSRF_COOKIE: &str = "picloud_login_csrf";
/// The form field every POST carries its CSRF token in.
pub const CSRF_FIELD: &str = "csrf";
/// Most bytes of a posted dashboard form (the forms hold names, an email,
/// a password or a key: a few hundred bytes).
pub const FORM_BYTES_MAX: usize = 16 * 1024;
/// Longest `next=` path kept across a login.
pub const NEXT_BYTES_MAX: usize = 1024;
/// Longest credential a cookie may carry (keys and session tokens are
/// under 100 bytes).
pub const CREDENTIAL_BYTES_MAX: usize = 512;

/// The CSRF token of forms shown to the holder of `credential`.
pub fn csrf_token(credential: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"picloud-dashboard-csrf\0");
    hash.update(credential.as_bytes());
    hex(&hash.finalize())
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether a posted token is the expected one, in time independent of
/// where they differ.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Whether a credential may go into a cookie as is: keys and session tokens
/// are `pck_`/`pcs_` and URL-safe characters. Anything else is not one.
pub(super) fn cookie_safe(credential: &str) -> bool {
    !credential.is_empty()
        && credential.len() <= CREDENTIAL_BYTES_MAX
        && credential
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A `Set-Cookie` value scoped to the dashboard; `Secure` when the browser
/// reached us over TLS. `value: None` clears the cookie.
pub fn set_cookie(name: &str, value: Option<&str>, secure: bool) -> String {
    let mut cookie = match value {
        Some(value) => format!("{name}={value}"),
        None => format!("{name}=; Max-Age=0"),
    };
    cookie.push_str("; HttpOnly; SameSite=Strict; Path=");
    cookie.push_str(BASE);
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Whether the browser's connection was TLS: a trusted proxy (the only
/// peer whose `X-Forwarded-*` headers survive `server.rs`) said
/// `X-Forwarded-Proto: https`.
pub fn is_https(parts: &Parts) -> bool {
    parts
        .extensions
        .get::<crate::gateway::proxy::Forwarded>()
        .is_some()
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// Where to go after login: a dashboard path of this origin, or the apps
/// page. Anything that could leave the dashboard (`//host`, `/\host`, a
/// scheme, another path) is dropped.
pub fn sanitize_next(next: Option<&str>) -> String {
    let fallback = format!("{BASE}/apps");
    let Some(next) = next else {
        return fallback;
    };
    let local = next.len() <= NEXT_BYTES_MAX
        && (next == BASE || next.starts_with(&format!("{BASE}/")))
        && !next.contains("//")
        && !next.contains('\\')
        && !next
            .bytes()
            .any(|byte| byte.is_ascii_control() || byte == b' ')
        && !next.starts_with(&format!("{BASE}/login"));
    if local { next.to_string() } else { fallback }
}

/// The path and query of a request, as `next=` for the login page (the
/// URI before `nest` stripped the dashboard's prefix).
fn next_of(parts: &Parts) -> String {
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    uri.path_and_query()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| BASE.to_string())
}

/// A signed-in dashboard user: the caller its cookie names, and the CSRF
/// token its forms carry.
#[derive(Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    /// Whether cookies set for this session get `Secure`.
    pub secure: bool,
    credential: String,
}

impl Session {
    /// Resolves `credential` with the admin API's own check; an unknown,
    /// expired or revoked one sends the browser to the login page.
    async fn resolve(
        parts: &Parts,
        gateway: &Gateway,
        credential: &str,
        next: String,
    ) -> Result<Session, PageError> {
        if !cookie_safe(credential) {
            return Err(PageError::Login { next });
        }
        match Caller::from_credential(credential, gateway).await {
            Ok(caller) => Ok(Session {
                caller,
                csrf: csrf_token(credential),
                secure: is_https(parts),
                credential: credential.to_string(),
            }),
            Err(error) if matches!(error.code, Code::Unauthorized | Code::SessionInvalid) => {
                Err(PageError::Login { next })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The credential the cookie holds (to end an operator's session).
    pub(super) fn credential(&self) -> &str {
        &self.credential
    }

    /// Who is signed in, for the page header.
    pub fn who(&self) -> String {
        match &self.caller.principal {
            Principal::Operator { operator, .. } => operator.email.clone(),
            Principal::Key { id, .. } => format!("key {id}"),
        }
    }
}

impl FromRequestParts<Gateway> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, PageError> {
        let next = next_of(parts);
        let Some(credential) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(PageError::Login { next });
        };
        let credential = credential.to_string();
        Session::resolve(parts, gateway, &credential, next).await
    }
}

/// A posted form of a signed-in user: the CSRF token is checked first
/// (a pure comparison, before the credential is even looked up), then the
/// session, then the form is parsed into `T`.
pub struct Posted<T> {
    pub session: Session,
    pub form: T,
}

/// Reads a form body under [`FORM_BYTES_MAX`] and its `csrf` field.
pub(super) async fn read_form(body: Body) -> Result<(axum::body::Bytes, String), PageError> {
    let bytes = read_body(body, FORM_BYTES_MAX).await?;
    let csrf = form_urlencoded::parse(&bytes)
        .find(|(key, _)| key == CSRF_FIELD)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    Ok((bytes, csrf))
}

pub(super) fn csrf_failed() -> PageError {
    PageError::Api(ApiError::new(
        Code::CsrfFailed,
        "the form's CSRF token is missing or wrong; reload the page and submit again",
    ))
}

/// Parses a form into `T`; a field of the wrong shape is 400 `invalid_field`.
pub(super) fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PageError> {
    serde_urlencoded::from_bytes(bytes).map_err(|error| {
        PageError::Api(ApiError::new(Code::InvalidField, format!("form: {error}")))
    })
}

impl<T: DeserializeOwned> FromRequest<Gateway> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, gateway: &Gateway) -> Result<Self, PageError> {
        let (parts, body) = request.into_parts();
        let (bytes, csrf) = read_form(body).await?;
        let credential = cookie(&parts.headers, SESSION_COOKIE).unwrap_or_default();
        if !csrf_matches(&csrf_token(credential), &csrf) || credential.is_empty() {
            return Err(csrf_failed());
        }
        let credential = credential.to_string();
        let next = format!("{BASE}/apps");
        let session = Session::resolve(&parts, gateway, &credential, next).await?;
        let form = parse_form(&bytes)?;
        Ok(Posted { session, form })
    }
}

/// A posted form bigger than [`FORM_BYTES_MAX`] allows (a kv value, a
/// secret), up to `bytes_max`: read from the body of a signed-in
/// [`Session`], its CSRF field checked, then parsed into `T`.
pub async fn form_up_to<T: DeserializeOwned>(
    session: &Session,
    body: Body,
    bytes_max: usize,
) -> Result<T, PageError> {
    let bytes = read_body(body, bytes_max).await?;
    let csrf = form_urlencoded::parse(&bytes)
        .find(|(key, _)| key == CSRF_FIELD)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !csrf_matches(&session.csrf, &csrf) {
        return Err(csrf_failed());
    }
    parse_form(&bytes)
}

/// A form with no fields but its CSRF token.
#[derive(Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn csrf_tokens_are_derived_and_checked() {
        let token = csrf_token("pcs_abc");
        assert_eq!(token.len(), 64);
        assert_eq!(token, csrf_token("pcs_abc"), "the same on every node");
        assert_ne!(token, csrf_token("pcs_abd"));
        assert!(csrf_matches(&token, &token));
        for wrong in [
            "",
            "x",
            &token[..63],
            &format!("{token}0"),
            &csrf_token("pcs_abd"),
        ] {
            assert!(!csrf_matches(&token, wrong), "{wrong:?}");
        }
        assert!(!csrf_matches("", ""), "no cookie, no token: refused");
    }

    #[test]
    fn cookies_are_http_only_strict_and_scoped() {
        assert_eq!(
            set_cookie(SESSION_COOKIE, Some("pcs_x"), false),
            "picloud_session=pcs_x; HttpOnly; SameSite=Strict; Path=/_/dashboard"
        );
        assert_eq!(
            set_cookie(SESSION_COOKIE, Some("pcs_x"), true),
            "picloud_session=pcs_x; HttpOnly; SameSite=Strict; Path=/_/dashboard; Secure"
        );
        assert_eq!(
            set_cookie(SESSION_COOKIE, None, false),
            "picloud_session=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/_/dashboard"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; picloud_session=pck_k_s ; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("pck_k_s"));
        assert_eq!(cookie(&headers, "c"), None);
        assert!(cookie_safe("pck_abc-DEF.1"));
        for bad in ["", "a;b", "a b", "a\"b", "a,b", "é"] {
            assert!(!cookie_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn next_stays_inside_the_dashboard() {
        let apps = "/_/dashboard/apps";
        for (next, expected) in [
            (None, apps),
            (Some("/_/dashboard/apps/shop"), "/_/dashboard/apps/shop"),
            (Some("/_/dashboard/cluster?x=1"), "/_/dashboard/cluster?x=1"),
            (Some("/_/dashboard"), "/_/dashboard"),
            (Some("https://evil.example/"), apps),
            (Some("//evil.example/_/dashboard/"), apps),
            (Some("/_/dashboard//evil.example"), apps),
            (Some("/_/dashboard/\\evil"), apps),
            (Some("/_/dashboardx"), apps),
            (Some("/_/api/v1/apps"), apps),
            (Some("/_/dashboard/login?next=/x"), apps),
            (Some("/_/dashboard/a\nb"), apps),
            (Some(""), apps),
        ] {
            assert_eq!(sanitize_next(next), expected, "{next:?}");
        }
        let long = format!("/_/dashboard/{}", "a".repeat(NEXT_BYTES_MAX));
        assert_eq!(sanitize_next(Some(&long)), apps);
    }
}
