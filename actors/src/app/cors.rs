//! `[cors]`: which other origins' browser pages may call an app, and
//! [`answer`], the one pure function that decides every cross-origin request
//! (a preflight the node answers itself, or the headers an actual response
//! gets). The gateway's app routes and static files call it through
//! `runtime/src/gateway/cors.rs`; the realtime and files endpoints use the
//! same function, so one `[cors]` governs every URL of an app.
//!
//! ```toml
//! [cors]
//! origins = ["https://app.example.org"]   # or ["*"] for a public API
//! methods = ["GET", "POST"]                # default: GET HEAD POST PUT PATCH DELETE
//! headers = ["content-type", "x-token"]    # default: content-type authorization last-event-id
//! max_age = 600                            # seconds a browser may cache a preflight
//! credentials = false                      # cookies / HTTP auth; never with "*"
//! ```
//!
//! The allowed origin is always echoed (with `Vary: Origin`), never `*`, so a
//! shared cache cannot hand one origin's answer to another, and every
//! response exposes `x-request-id` to the page (error reports quote it).
//! A refused preflight is answered `204` without any `Access-Control-Allow-*`
//! header, as browsers expect: the browser then blocks the request itself.

use serde::Deserialize;

/// Most entries in `origins`.
pub const CORS_ORIGINS_MAX: usize = 64;
/// Most entries in `headers`.
pub const CORS_HEADERS_MAX: usize = 64;
/// Longest origin accepted in `origins`, in bytes.
pub const CORS_ORIGIN_BYTES_MAX: usize = 256;
/// The longest `max_age`, in seconds (a day); browsers cap it lower anyway
/// (Chromium at two hours).
pub const CORS_MAX_AGE_S_MAX: u32 = 86_400;
/// `max_age` unless the manifest sets it.
pub const CORS_MAX_AGE_S_DEFAULT: u32 = 600;
/// `methods` unless the manifest sets them.
pub const CORS_METHODS_DEFAULT: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
/// `headers` unless the manifest sets them: JSON bodies, bearer tokens and
/// the resume header of realtime streams.
pub const CORS_HEADERS_DEFAULT: [&str; 3] = ["content-type", "authorization", "last-event-id"];
/// Response headers every allowed origin may read.
pub const CORS_EXPOSED_HEADERS: &str = "x-request-id";
/// Most request headers one preflight may ask for; more is refused.
pub const CORS_REQUESTED_HEADERS_MAX: usize = 64;

/// Methods a `[cors] methods` entry may name.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// `[cors]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    origins: Vec<String>,
    methods: Option<Vec<String>>,
    headers: Option<Vec<String>>,
    max_age: Option<u32>,
    credentials: Option<bool>,
}

/// A checked `[cors]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// `None` for `"*"`; otherwise the allowed origins, lower case.
    pub origins: Option<Vec<String>>,
    /// Upper case.
    pub methods: Vec<String>,
    /// `None` for `"*"` (any header); otherwise lower case.
    pub headers: Option<Vec<String>>,
    pub max_age_s: u32,
    pub credentials: bool,
}

impl CorsPolicy {
    /// Checks the section; the message names the field (the manifest adds
    /// `[cors]`).
    pub(super) fn check(raw: RawCors) -> Result<CorsPolicy, String> {
        let any_origin = raw.origins.iter().any(|origin| origin == "*");
        let origins = if any_origin {
            if raw.origins.len() != 1 {
                return Err("origins: \"*\" must be the only entry".into());
            }
            None
        } else {
            if raw.origins.is_empty() || raw.origins.len() > CORS_ORIGINS_MAX {
                return Err(format!(
                    "origins must list 1 to {CORS_ORIGINS_MAX} origins, or [\"*\"]"
                ));
            }
            let mut origins = Vec::with_capacity(raw.origins.len());
            for origin in &raw.origins {
                origins.push(check_origin(origin)?);
            }
            Some(origins)
        };
        let credentials = raw.credentials.unwrap_or(false);
        if credentials && origins.is_none() {
            return Err(
                "credentials = true cannot go with origins = [\"*\"] (browsers refuse it): list the origins"
                    .into(),
            );
        }
        let methods = match raw.methods {
            None => CORS_METHODS_DEFAULT.map(String::from).to_vec(),
            Some(methods) => {
                if methods.is_empty() {
                    return Err("methods must list at least one method".into());
                }
                let mut checked = Vec::with_capacity(methods.len());
                for method in methods {
                    let upper = method.to_ascii_uppercase();
                    if !METHODS.contains(&upper.as_str()) {
                        return Err(format!(
                            "methods: {method:?} is not one of {}",
                            METHODS.join(", ")
                        ));
                    }
                    if !checked.contains(&upper) {
                        checked.push(upper);
                    }
                }
                checked
            }
        };
        let headers = match raw.headers {
            None => Some(CORS_HEADERS_DEFAULT.map(String::from).to_vec()),
            Some(headers) if headers.len() == 1 && headers[0] == "*" => None,
            Some(headers) => {
                if headers.len() > CORS_HEADERS_MAX {
                    return Err(format!("headers: at most {CORS_HEADERS_MAX} entries"));
                }
                let mut checked = Vec::with_capacity(headers.len());
                for header in headers {
                    if header.is_empty() || header.len() > 128 || !header.bytes().all(is_token_byte)
                    {
                        return Err(format!(
                            "headers: {header:?} is not a header name (or use [\"*\"] alone)"
                        ));
                    }
                    checked.push(header.to_ascii_lowercase());
                }
                Some(checked)
            }
        };
        let max_age_s = raw.max_age.unwrap_or(CORS_MAX_AGE_S_DEFAULT);
        if max_age_s > CORS_MAX_AGE_S_MAX {
            return Err(format!(
                "max_age = {max_age_s} must be 0-{CORS_MAX_AGE_S_MAX} seconds"
            ));
        }
        Ok(CorsPolicy {
            origins,
            methods,
            headers,
            max_age_s,
            credentials,
        })
    }

    fn allows_origin(&self, origin: &str) -> bool {
        match &self.origins {
            None => true,
            Some(origins) => origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
        }
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, no path, no
/// trailing slash, no user info.
fn check_origin(origin: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "origins: {origin:?} {why} (write it as a browser sends it, like \"https://app.example.org\" or \"http://localhost:3000\")"
        ))
    };
    if origin.len() > CORS_ORIGIN_BYTES_MAX {
        return bad(&format!("is longer than {CORS_ORIGIN_BYTES_MAX} bytes"));
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return bad("has no scheme");
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return bad("has an invalid scheme");
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return bad("is not just a scheme, host and port");
    }
    if let Some((_, port)) = rest.rsplit_once(':')
        && !rest.ends_with(']')
        && (port.is_empty() || port.parse::<u16>().is_err())
    {
        return bad("has an invalid port");
    }
    Ok(origin.to_ascii_lowercase())
}

/// RFC 9110 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// What [`answer`] needs of a request: its method and CORS headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct CorsRequest<'a> {
    pub method: &'a str,
    /// `Origin`.
    pub origin: Option<&'a str>,
    /// `Access-Control-Request-Method`.
    pub request_method: Option<&'a str>,
    /// `Access-Control-Request-Headers` (comma-separated).
    pub request_headers: Option<&'a str>,
}

impl CorsRequest<'_> {
    /// An `OPTIONS` request with `Origin` and
    /// `Access-Control-Request-Method`: the browser asking before the real
    /// request. Any other `OPTIONS` is an ordinary request for the app.
    pub fn is_preflight(&self) -> bool {
        self.method.eq_ignore_ascii_case("OPTIONS")
            && self.origin.is_some()
            && self.request_method.is_some()
    }
}

/// A response header to set (`Vary` to append to).
pub type CorsHeader = (&'static str, String);

/// What to do with a request of an app that has `[cors]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsAnswer {
    /// A preflight: the node answers `204` with these headers, without
    /// running a script. `allowed` is false when the origin, method or a
    /// requested header is not allowed (then no `Access-Control-Allow-*`).
    Preflight {
        allowed: bool,
        headers: Vec<CorsHeader>,
    },
    /// Any other request: serve it, then add these headers to its response
    /// (whatever its status, so a page can read the JSON error too).
    Actual { headers: Vec<CorsHeader> },
}

/// Decides a request under `policy`: pure, so the gateway, the realtime
/// stream and the files endpoint answer alike and a table tests it.
pub fn answer(policy: &CorsPolicy, request: &CorsRequest<'_>) -> CorsAnswer {
    if request.is_preflight() {
        return preflight(policy, request);
    }
    let mut headers = vec![("vary", "Origin".to_string())];
    if let Some(origin) = request.origin
        && policy.allows_origin(origin)
    {
        headers.extend(allow_origin(policy, origin));
        headers.push((
            "access-control-expose-headers",
            CORS_EXPOSED_HEADERS.to_string(),
        ));
    }
    CorsAnswer::Actual { headers }
}

fn preflight(policy: &CorsPolicy, request: &CorsRequest<'_>) -> CorsAnswer {
    let mut headers = vec![(
        "vary",
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".to_string(),
    )];
    let refused = |headers| CorsAnswer::Preflight {
        allowed: false,
        headers,
    };
    let (Some(origin), Some(method)) = (request.origin, request.request_method) else {
        return refused(headers);
    };
    if !policy.allows_origin(origin) || !policy.methods.iter().any(|allowed| allowed == method) {
        return refused(headers);
    }
    let requested: Vec<String> = request
        .request_headers
        .unwrap_or("")
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    let header_allowed = |name: &String| match &policy.headers {
        None => name.bytes().all(is_token_byte),
        Some(listed) => listed.contains(name),
    };
    if requested.len() > CORS_REQUESTED_HEADERS_MAX || !requested.iter().all(header_allowed) {
        return refused(headers);
    }
    headers.extend(allow_origin(policy, origin));
    headers.push(("access-control-allow-methods", policy.methods.join(", ")));
    if !requested.is_empty() {
        headers.push(("access-control-allow-headers", requested.join(", ")));
    }
    headers.push(("access-control-max-age", policy.max_age_s.to_string()));
    CorsAnswer::Preflight {
        allowed: true,
        headers,
    }
}

/// `Access-Control-Allow-Origin` (echoed) and, when the app allows it,
/// `Access-Control-Allow-Credentials`.
fn allow_origin(policy: &CorsPolicy, origin: &str) -> Vec<CorsHeader> {
    let mut headers = vec![("access-control-allow-origin", origin.to_string())];
    if policy.credentials {
        headers.push(("access-control-allow-credentials", "true".to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> Result<CorsPolicy, String> {
        let raw: RawCors = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        CorsPolicy::check(raw)
    }

    fn header<'a>(headers: &'a [CorsHeader], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    const APP_ORIGIN: &str = "https://app.example.org";

    #[test]
    fn deploy_checks_name_the_problem() {
        let cases = [
            ("origins = []", "origins must list 1 to"),
            (
                "origins = [\"*\", \"https://a.org\"]",
                "must be the only entry",
            ),
            ("origins = [\"app.example.org\"]", "has no scheme"),
            (
                "origins = [\"https://a.org/\"]",
                "not just a scheme, host and port",
            ),
            ("origins = [\"https://a.org:http\"]", "invalid port"),
            (
                "origins = [\"*\"]\ncredentials = true",
                "credentials = true cannot go with",
            ),
            (
                "origins = [\"*\"]\nmethods = [\"FETCH\"]",
                "\"FETCH\" is not one of",
            ),
            ("origins = [\"*\"]\nmethods = []", "at least one method"),
            (
                "origins = [\"*\"]\nheaders = [\"x y\"]",
                "is not a header name",
            ),
            ("origins = [\"*\"]\nmax_age = 100000", "max_age = 100000"),
            ("origins = [\"*\"]\nallow = true", "unknown field"),
        ];
        for (text, expected) in cases {
            let error = policy(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        let checked = policy(
            "origins = [\"HTTPS://App.Example.org\", \"http://[::1]:8080\"]\nmethods = [\"get\", \"GET\"]\nheaders = [\"X-Token\"]\ncredentials = true",
        )
        .expect("valid");
        assert_eq!(
            checked.origins,
            Some(vec![
                APP_ORIGIN.to_string(),
                "http://[::1]:8080".to_string()
            ])
        );
        assert_eq!(checked.methods, vec!["GET"]);
        assert_eq!(checked.headers, Some(vec!["x-token".to_string()]));
        assert_eq!(checked.max_age_s, CORS_MAX_AGE_S_DEFAULT);
    }

    #[test]
    fn answers_table() {
        let listed = policy(&format!("origins = [\"{APP_ORIGIN}\"]")).expect("valid");
        let any = policy("origins = [\"*\"]\nheaders = [\"*\"]\nmax_age = 60").expect("valid");
        let with_credentials =
            policy(&format!("origins = [\"{APP_ORIGIN}\"]\ncredentials = true")).expect("valid");
        let get = |origin| CorsRequest {
            method: "GET",
            origin,
            ..CorsRequest::default()
        };
        let pre = |origin, method, headers| CorsRequest {
            method: "OPTIONS",
            origin: Some(origin),
            request_method: Some(method),
            request_headers: headers,
        };
        // (policy, request, preflight?, allowed origin echoed, other expected headers)
        let evil = "https://evil.example";
        type Case<'a> = (
            &'a CorsPolicy,
            CorsRequest<'a>,
            Option<bool>,
            Option<&'a str>,
            Vec<(&'a str, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            // An actual request from the allowed origin gets it echoed.
            (
                &listed,
                get(Some(APP_ORIGIN)),
                None,
                Some(APP_ORIGIN),
                vec![
                    ("access-control-expose-headers", "x-request-id"),
                    ("vary", "Origin"),
                ],
            ),
            // Origins compare without case, as hosts do.
            (
                &listed,
                get(Some("https://APP.example.org")),
                None,
                Some("https://APP.example.org"),
                vec![],
            ),
            // Another origin, or none: no allow header, still Vary.
            (
                &listed,
                get(Some(evil)),
                None,
                None,
                vec![("vary", "Origin")],
            ),
            (&listed, get(None), None, None, vec![("vary", "Origin")]),
            (&any, get(Some(evil)), None, Some(evil), vec![]),
            (
                &with_credentials,
                get(Some(APP_ORIGIN)),
                None,
                Some(APP_ORIGIN),
                vec![("access-control-allow-credentials", "true")],
            ),
            // Preflights.
            (
                &listed,
                pre(APP_ORIGIN, "PUT", Some("Content-Type, Authorization")),
                Some(true),
                Some(APP_ORIGIN),
                vec![
                    (
                        "access-control-allow-methods",
                        "GET, HEAD, POST, PUT, PATCH, DELETE",
                    ),
                    (
                        "access-control-allow-headers",
                        "content-type, authorization",
                    ),
                    ("access-control-max-age", "600"),
                ],
            ),
            (&listed, pre(evil, "GET", None), Some(false), None, vec![]),
            (
                &listed,
                pre(APP_ORIGIN, "OPTIONS", None),
                Some(false),
                None,
                vec![],
            ),
            (
                &listed,
                pre(APP_ORIGIN, "GET", Some("x-secret")),
                Some(false),
                None,
                vec![],
            ),
            (
                &any,
                pre(evil, "DELETE", Some("x-anything")),
                Some(true),
                Some(evil),
                vec![
                    ("access-control-allow-headers", "x-anything"),
                    ("access-control-max-age", "60"),
                ],
            ),
            // OPTIONS without Access-Control-Request-Method is the app's own.
            (
                &listed,
                CorsRequest {
                    method: "OPTIONS",
                    origin: Some(APP_ORIGIN),
                    ..CorsRequest::default()
                },
                None,
                Some(APP_ORIGIN),
                vec![],
            ),
        ];
        for (number, (policy, request, preflight, echoed, expected)) in
            cases.into_iter().enumerate()
        {
            let (is_preflight, allowed, headers) = match answer(policy, &request) {
                CorsAnswer::Preflight { allowed, headers } => (Some(allowed), allowed, headers),
                CorsAnswer::Actual { headers } => (None, true, headers),
            };
            assert_eq!(is_preflight, preflight, "case {number}");
            assert_eq!(
                header(&headers, "access-control-allow-origin"),
                echoed,
                "case {number}: {headers:?}"
            );
            if !allowed {
                assert!(
                    headers
                        .iter()
                        .all(|(name, _)| !name.starts_with("access-control-allow")),
                    "case {number}: {headers:?}"
                );
            }
            assert!(header(&headers, "vary").is_some(), "case {number}");
            for (name, value) in expected {
                assert_eq!(header(&headers, name), Some(value), "case {number}: {name}");
            }
        }
    }
}
