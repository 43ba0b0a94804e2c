//! Signed file URLs: what `files.url` hands out and `/_/files/` checks.
//!
//! ```text
//! /_/files/<app>/<percent-encoded path>?m=GET|PUT&exp=<ms>[&max=<bytes>][&ct=<type>]&sig=<b64url>
//!   sig = base64url(HMAC-SHA256(app signing key,
//!         "pf1\n" + m + "\n" + app + "\n" + path + "\n" + exp + "\n" + max + "\n" + ct))
//! ```
//!
//! The key is the app's realtime signing key: the `pf1` prefix keeps the
//! signed messages disjoint from realtime tokens (which sign `"v1." +
//! payload`), so neither can be passed off as the other, and rotating the
//! key (`picloud realtime rotate-key`) invalidates file URLs too. Every
//! field but `ct` is digits, a method or a name that holds no newline, and
//! `ct` comes last, so the message is unambiguous.
//!
//! A `GET` URL allows `GET` and `HEAD`, a `PUT` URL only `PUT`: the method
//! is under the signature, so using another is `url_invalid`, as is any
//! change to the path, the expiry or the limits. Checks run in this order:
//! shape, signature, method, expiry (`url_expired`). Pure: the key and the
//! clock are passed in.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use picloud_lua_sdk::UrlMethod;
use subtle::ConstantTimeEq as _;

use super::UrlGrant;
use crate::realtime::token::hmac_sha256;

/// Where the gateway serves signed file URLs.
pub const URL_PREFIX: &str = "/_/files/";

/// How long a URL lives when `files.url` names no ttl (1 hour).
pub const URL_TTL_SECS_DEFAULT: u64 = 60 * 60;

/// The longest a URL may live (7 days, as S3's presigned URLs); a longer
/// ttl is refused with `invalid_ttl`.
pub const URL_TTL_SECS_MAX: u64 = 7 * 24 * 60 * 60;

/// The longest query string checked, in bytes (a 255-byte content type
/// encoded three times over still fits).
pub const URL_QUERY_BYTES_MAX: usize = 2048;

/// The domain-separation prefix of the signed message.
const DOMAIN: &str = "pf1";

/// What a URL is signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlClaims {
    pub method: UrlMethod,
    /// Expiry in milliseconds since the Unix epoch.
    pub exp_ms: u64,
    /// A PUT URL's byte limit.
    pub max_bytes: Option<u64>,
    /// A PUT URL's required `Content-Type`.
    pub content_type: Option<String>,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Malformed, tampered with, signed with another key, or used with
    /// another method than it was signed for (`url_invalid`).
    Invalid(&'static str),
    /// Its expiry has passed (`url_expired`).
    Expired { exp_ms: u64 },
}

fn method_name(method: UrlMethod) -> &'static str {
    match method {
        UrlMethod::Get => "GET",
        UrlMethod::Put => "PUT",
    }
}

/// The bytes the signature covers.
fn message(app: &str, path: &str, claims: &UrlClaims) -> Vec<u8> {
    let max = claims
        .max_bytes
        .map(|max| max.to_string())
        .unwrap_or_default();
    let content_type = claims.content_type.as_deref().unwrap_or("");
    format!(
        "{DOMAIN}\n{}\n{app}\n{path}\n{}\n{max}\n{content_type}",
        method_name(claims.method),
        claims.exp_ms
    )
    .into_bytes()
}

/// The signed URL (a path and query, no host: the node cannot know the
/// name clients reach it by) for `path` of `app`.
pub fn sign(key: &[u8], app: &str, path: &str, claims: &UrlClaims) -> String {
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(key, &message(app, path, claims)));
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("m", method_name(claims.method));
    query.append_pair("exp", &claims.exp_ms.to_string());
    if let Some(max) = claims.max_bytes {
        query.append_pair("max", &max.to_string());
    }
    if let Some(content_type) = &claims.content_type {
        query.append_pair("ct", content_type);
    }
    query.append_pair("sig", &signature);
    format!("{URL_PREFIX}{app}/{}?{}", encode_path(path), query.finish())
}

/// Checks `query` (the raw query string) of a URL for `path` of `app`,
/// used with the HTTP `method`, against `key` at `now_ms`.
pub fn verify(
    key: &[u8],
    app: &str,
    path: &str,
    query: &str,
    method: &str,
    now_ms: u64,
) -> Result<UrlGrant, UrlError> {
    let (claims, signature) = parse_query(query)?;
    let expected = hmac_sha256(key, &message(app, path, &claims));
    // Constant time: a byte-by-byte compare would leak the signature.
    if !bool::from(expected.as_slice().ct_eq(&signature)) {
        return Err(UrlError::Invalid("bad signature"));
    }
    let allowed = match claims.method {
        UrlMethod::Get => method == "GET" || method == "HEAD",
        UrlMethod::Put => method == "PUT",
    };
    if !allowed {
        return Err(UrlError::Invalid(match claims.method {
            UrlMethod::Get => "the URL was signed for GET and HEAD",
            UrlMethod::Put => "the URL was signed for PUT",
        }));
    }
    if claims.exp_ms <= now_ms {
        return Err(UrlError::Expired {
            exp_ms: claims.exp_ms,
        });
    }
    Ok(UrlGrant {
        method: claims.method,
        max_bytes: claims.max_bytes,
        content_type: claims.content_type,
    })
}

/// The claims and the signature of a query; parameters other than ours are
/// ignored (a cache-busting `?v=` must not break a URL), ours may appear
/// once.
fn parse_query(query: &str) -> Result<(UrlClaims, Vec<u8>), UrlError> {
    if query.len() > URL_QUERY_BYTES_MAX {
        return Err(UrlError::Invalid("the query string is too long"));
    }
    let mut method = None;
    let mut exp = None;
    let mut max = None;
    let mut content_type = None;
    let mut signature = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "m" => &mut method,
            "exp" => &mut exp,
            "max" => &mut max,
            "ct" => &mut content_type,
            "sig" => &mut signature,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(UrlError::Invalid("a parameter appears twice"));
        }
    }
    let method = match method.as_deref() {
        Some("GET") => UrlMethod::Get,
        Some("PUT") => UrlMethod::Put,
        _ => return Err(UrlError::Invalid("m must be GET or PUT")),
    };
    let exp_ms = exp
        .as_deref()
        .and_then(parse_digits)
        .ok_or(UrlError::Invalid("exp is not a number of milliseconds"))?;
    let max_bytes = match max.as_deref() {
        None => None,
        Some(max) => Some(parse_digits(max).ok_or(UrlError::Invalid("max is not a number"))?),
    };
    if content_type
        .as_deref()
        .is_some_and(|ct| ct.chars().any(char::is_control))
    {
        return Err(UrlError::Invalid("ct holds a control character"));
    }
    let signature = signature
        .and_then(|sig| URL_SAFE_NO_PAD.decode(sig).ok())
        .ok_or(UrlError::Invalid("sig is missing or not base64url"))?;
    Ok((
        UrlClaims {
            method,
            exp_ms,
            max_bytes,
            content_type,
        },
        signature,
    ))
}

/// A decimal number of ASCII digits only (no sign, no spaces): the signed
/// text is rebuilt from the number, so a lax parse would let two spellings
/// share one signature.
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `path` as a URL path: every byte but the unreserved ones (RFC 3986:
/// `A-Z a-z 0-9 - . _ ~`) and `/` is `%XX`, so spaces, `?`, `#`, `%` and
/// any UTF-8 survive a trip through clients and proxies.
pub fn encode_path(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

/// The path a URL path encodes (`%XX` decoded; `+` stays a plus, as in
/// paths); `None` for a bad escape or bytes that are not UTF-8.
pub fn decode_path(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const NOW_MS: u64 = 1_700_000_000_000;

    fn get(exp_ms: u64) -> UrlClaims {
        UrlClaims {
            method: UrlMethod::Get,
            exp_ms,
            max_bytes: None,
            content_type: None,
        }
    }

    fn put(exp_ms: u64) -> UrlClaims {
        UrlClaims {
            method: UrlMethod::Put,
            exp_ms,
            max_bytes: Some(1024),
            content_type: Some("image/png".into()),
        }
    }

    /// The query string of a signed URL.
    fn query_of(url: &str) -> &str {
        url.split_once('?').map(|(_, query)| query).unwrap_or("")
    }

    /// The URL with `param`'s value replaced by `value`.
    fn with_param(url: &str, param: &str, value: &str) -> String {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name == param => format!("{name}={value}"),
                _ => pair.to_string(),
            })
            .collect();
        format!("{base}?{}", query.join("&"))
    }

    #[test]
    fn a_url_has_the_documented_shape() {
        let url = sign(&KEY, "shop", "photos/a b.png", &put(NOW_MS + 1));
        assert!(
            url.starts_with("/_/files/shop/photos/a%20b.png?m=PUT&exp=1700000000001&max=1024&ct=image%2Fpng&sig="),
            "{url}"
        );
        let sig = url.rsplit_once("sig=").map(|(_, sig)| sig).unwrap_or("");
        assert_eq!(URL_SAFE_NO_PAD.decode(sig).map(|s| s.len()), Ok(32));
    }

    #[test]
    fn urls_verify_only_for_their_path_method_key_and_time() {
        let get_url = sign(&KEY, "shop", "a/b.txt", &get(NOW_MS + 1_000));
        let put_url = sign(&KEY, "shop", "a/b.txt", &put(NOW_MS + 1_000));
        let expired = sign(&KEY, "shop", "a/b.txt", &get(NOW_MS));
        let grant_get = Ok(UrlGrant {
            method: UrlMethod::Get,
            max_bytes: None,
            content_type: None,
        });
        let grant_put = Ok(UrlGrant {
            method: UrlMethod::Put,
            max_bytes: Some(1024),
            content_type: Some("image/png".into()),
        });
        let invalid = |url: &str, app: &str, path: &str, method: &str, key: &[u8]| {
            matches!(
                verify(key, app, path, query_of(url), method, NOW_MS),
                Err(UrlError::Invalid(_))
            )
        };
        let check = |url: &str, method: &str| {
            verify(&KEY, "shop", "a/b.txt", query_of(url), method, NOW_MS)
        };
        // The method table: GET URL → GET/HEAD, PUT URL → PUT.
        assert_eq!(check(&get_url, "GET"), grant_get);
        assert_eq!(check(&get_url, "HEAD"), grant_get);
        assert_eq!(check(&put_url, "PUT"), grant_put);
        for (url, method) in [
            (&get_url, "PUT"),
            (&get_url, "DELETE"),
            (&put_url, "GET"),
            (&put_url, "HEAD"),
            (&put_url, "POST"),
        ] {
            assert!(
                invalid(url, "shop", "a/b.txt", method, &KEY),
                "{method} {url}"
            );
        }
        // Expired (the expiry itself is already past).
        assert_eq!(
            check(&expired, "GET"),
            Err(UrlError::Expired { exp_ms: NOW_MS })
        );
        // Another app, path or key.
        assert!(invalid(&get_url, "other", "a/b.txt", "GET", &KEY));
        assert!(invalid(&get_url, "shop", "a/c.txt", "GET", &KEY));
        assert!(invalid(&get_url, "shop", "a/b.txt", "GET", &[8; 32]));
        // Every signed parameter changed by one character, or stripped.
        let tampered = [
            with_param(&put_url, "exp", &(NOW_MS + 1_001).to_string()),
            with_param(&put_url, "max", "1025"),
            with_param(&put_url, "ct", "image%2Fjpeg"),
            with_param(&put_url, "m", "GET"),
            put_url.replace("&max=1024", ""),
            put_url.replace("&ct=image%2Fpng", ""),
            put_url.replace("sig=", "sig=A"),
            {
                let mut url = put_url.clone();
                let last = url.pop().unwrap_or('A');
                url.push(if last == 'A' { 'B' } else { 'A' });
                url
            },
        ];
        for url in &tampered {
            assert!(
                matches!(check(url, "PUT"), Err(UrlError::Invalid(_))),
                "{url}"
            );
        }
        // An expired URL with a forged expiry is invalid, not expired.
        assert!(invalid(
            &with_param(&expired, "exp", &(NOW_MS + 1).to_string()),
            "shop",
            "a/b.txt",
            "GET",
            &KEY
        ));
        // Malformed queries.
        for query in [
            "",
            "m=GET",
            "m=GET&exp=1&sig=%%%",
            "m=GET&m=GET&exp=1&sig=AA",
            "m=POST&exp=1&sig=AA",
            "m=GET&exp=+1&sig=AA",
            "m=GET&exp=-1&sig=AA",
            "m=GET&exp=99999999999999999999999&sig=AA",
        ] {
            assert!(
                matches!(
                    verify(&KEY, "shop", "a/b.txt", query, "GET", NOW_MS),
                    Err(UrlError::Invalid(_))
                ),
                "{query}"
            );
        }
        let long = format!(
            "{}&x={}",
            query_of(&get_url),
            "y".repeat(URL_QUERY_BYTES_MAX)
        );
        assert!(matches!(
            verify(&KEY, "shop", "a/b.txt", &long, "GET", NOW_MS),
            Err(UrlError::Invalid(_))
        ));
        // Parameters other than ours are ignored.
        let busted = format!("{}&v=3", query_of(&get_url));
        assert_eq!(
            verify(&KEY, "shop", "a/b.txt", &busted, "GET", NOW_MS),
            grant_get
        );
    }

    #[test]
    fn file_urls_are_not_realtime_tokens() {
        // The same key signs both; neither message can be the other's.
        let url = sign(&KEY, "shop", "a", &get(NOW_MS + 1));
        let token = crate::realtime::token::sign(
            &KEY,
            crate::realtime::token::Claims {
                app: "shop".into(),
                topic: "a".into(),
                exp: NOW_MS + 1,
                sub: None,
                kid: String::new(),
            },
        );
        let token_sig = token.rsplit('.').next().unwrap_or("");
        let forged = with_param(&url, "sig", token_sig);
        assert!(matches!(
            verify(&KEY, "shop", "a", query_of(&forged), "GET", NOW_MS),
            Err(UrlError::Invalid(_))
        ));
    }

    #[test]
    fn every_valid_path_round_trips_through_the_url() {
        let paths = [
            "a",
            "photos/2026/cat.jpg",
            "with space/and..dots.txt",
            "what?#frag%20&x=1+2",
            "ünïcode/файл 📷.txt",
            "~tilde_-./x",
            "semi;colon,comma'quote\"<>[]{}|\\^`",
        ];
        for path in paths {
            assert_eq!(picloud_storage::files::validate_path(path), Ok(()));
            let url = sign(&KEY, "shop", path, &get(NOW_MS + 1));
            let encoded = url
                .strip_prefix("/_/files/shop/")
                .and_then(|rest| rest.split_once('?'))
                .map(|(encoded, _)| encoded)
                .unwrap_or("");
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~/%".contains(&b)),
                "{encoded}"
            );
            assert_eq!(decode_path(encoded).as_deref(), Some(path), "{encoded}");
            assert!(verify(&KEY, "shop", path, query_of(&url), "GET", NOW_MS).is_ok());
        }
        assert_eq!(decode_path("a%2"), None);
        assert_eq!(decode_path("a%zz"), None);
        assert_eq!(decode_path("a%+f"), None);
        assert_eq!(decode_path("%ff"), None);
        assert_eq!(decode_path("a+b").as_deref(), Some("a+b"));
    }
}
