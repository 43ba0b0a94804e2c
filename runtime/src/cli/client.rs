//! A small admin API client and the saved login.
//!
//! A client knows every node URL it was given (`--url A,B,C`, `PICLOUD_URL`,
//! or the list `picloud login` saved) and sends each request to the first
//! node that accepts a connection, saying on stderr which ones it skipped.
//! Only a connection that was never made fails over: once a request has
//! reached a server, its answer (or its loss) is final, so a write is never
//! sent twice.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use picloud_lua_sdk::Code;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A failed command: what to print and that the exit status is non-zero.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    /// The server's error code, when it answered with one this CLI knows
    /// (parsed with the registry: a command reacts to a [`Code`], never to
    /// code text).
    pub code: Option<Code>,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: None,
        }
    }

    /// The server's error answer: `{"error":{"code","message"}}` with its
    /// status. A code this CLI does not know (a newer server) is printed as
    /// sent; a body without one is `http_error`.
    fn from_response(status: reqwest::StatusCode, body: &Value, fallback: &str) -> CliError {
        let text = body["error"]["code"].as_str().unwrap_or("http_error");
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| fallback.to_string());
        CliError {
            message: format!("{message} ({text}, HTTP {})", status.as_u16()),
            code: text.parse::<Code>().ok(),
        }
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(error: E) -> Self {
        CliError::new(error.to_string())
    }
}

/// What `picloud login` saves.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// Every node URL given at login, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The one URL files written before `urls` existed hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub key: Option<String>,
}

impl Credentials {
    /// The saved node URLs as one comma list (the `--url` form), if any.
    pub fn url_list(&self) -> Option<String> {
        if self.urls.is_empty() {
            return self.url.clone();
        }
        Some(self.urls.join(","))
    }
}

/// How long the CLI waits for one node to accept a connection before it
/// calls that node unreachable and tries the next, in milliseconds.
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Parses a `--url` value: one or more node URLs separated by commas, each
/// with its scheme. Returns them normalised, without a trailing `/`.
pub fn parse_urls(text: &str) -> Result<Vec<String>, CliError> {
    let mut urls = Vec::new();
    for url in text.split(',').map(str::trim).filter(|url| !url.is_empty()) {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(CliError::new(format!(
                "the URL {url} has no scheme: write http://{url} (https:// only behind a TLS proxy)"
            )));
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| CliError::new(format!("the URL {url} is not valid: {e}")))?;
        urls.push(parsed.as_str().trim_end_matches('/').to_string());
    }
    if urls.is_empty() {
        return Err(CliError::new(
            "no node URL: pass --url http://HOST:PORT (a comma list for several nodes)",
        ));
    }
    Ok(urls)
}

/// Whether `error` means the request never reached a server: no connection
/// was made (refused, timed out, name not resolved), so another node may be
/// tried without sending anything twice.
fn is_unreachable(error: &reqwest::Error) -> bool {
    error.is_connect()
}

/// One line saying why `base` could not be reached and what to check.
fn unreachable_text(base: &str, error: &reqwest::Error) -> String {
    let mut chain = String::new();
    let mut refused = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        chain.push_str(&cause.to_string());
        chain.push(' ');
        source = cause.source();
    }
    let chain = chain.to_lowercase();
    if refused || chain.contains("connection refused") {
        format!(
            "cannot reach {base}: connection refused (is `picloud serve` running there, and is that its --http address?)"
        )
    } else if error.is_timeout() || chain.contains("timed out") {
        format!(
            "cannot reach {base}: no connection within {CONNECT_TIMEOUT_MS} ms (is the host up, and does a firewall let the port through?)"
        )
    } else if chain.contains("dns") || chain.contains("resolve") {
        format!(
            "cannot reach {base}: the host name does not resolve (check the spelling of the URL)"
        )
    } else {
        format!("cannot reach {base}: {}", chain.trim())
    }
}

/// `$PICLOUD_CREDENTIALS`, else `$XDG_CONFIG_HOME/picloud/credentials.toml`,
/// else `~/.config/picloud/credentials.toml`.
pub fn credentials_path() -> PathBuf {
    if let Ok(path) = std::env::var("PICLOUD_CREDENTIALS") {
        return PathBuf::from(path);
    }
    let base = std::env::var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|_| PathBuf::from("."));
    base.join("picloud").join("credentials.toml")
}

pub fn load_credentials() -> Credentials {
    std::fs::read_to_string(credentials_path())
        .ok()
        .and_then(|text| toml::from_str(&text).ok())
        .unwrap_or_default()
}

pub fn save_credentials(credentials: &Credentials) -> Result<PathBuf, CliError> {
    let path = credentials_path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let text = toml::to_string(credentials).map_err(|e| CliError::new(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(text.as_bytes())?;
    Ok(path)
}

pub struct Client {
    http: reqwest::Client,
    /// Node URLs in the order they are tried; never empty.
    bases: Vec<String>,
    key: String,
}

impl Client {
    /// A client for the nodes of `urls` (a comma list, see [`parse_urls`]).
    pub fn new(urls: &str, key: &str) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_millis(CONNECT_TIMEOUT_MS))
            .build()?;
        Ok(Client {
            http,
            bases: parse_urls(urls)?,
            key: key.to_string(),
        })
    }

    /// The node URLs this client tries, in order.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_/api/v1{}", self.bases[0], path)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.key)
    }

    /// Sends a request built by [`Client::request`] to the first node that
    /// accepts a connection. Each node skipped gets one line on stderr; when
    /// none can be reached the error names each and what to check.
    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        let request = request.build()?;
        // The request was built against the first URL; the same path goes to the others.
        let suffix = request
            .url()
            .as_str()
            .strip_prefix(self.bases[0].as_str())
            .unwrap_or_default()
            .to_string();
        let mut failures = Vec::new();
        for (index, base) in self.bases.iter().enumerate() {
            let attempt = if index == 0 {
                request.try_clone()
            } else {
                let url = reqwest::Url::parse(&format!("{base}{suffix}"))?;
                request.try_clone().map(|mut attempt| {
                    *attempt.url_mut() = url;
                    attempt
                })
            };
            // Every body the CLI sends is bytes, so this clone always exists.
            let Some(attempt) = attempt else {
                return Err(CliError::new("this request cannot be repeated"));
            };
            match self.http.execute(attempt).await {
                Ok(response) => return Ok(response),
                Err(error) if is_unreachable(&error) => {
                    let text = unreachable_text(base, &error);
                    if let Some(next) = self.bases.get(index + 1) {
                        eprintln!("picloud: {text}; trying {next}");
                    }
                    failures.push(text);
                }
                // The request reached a server: its fate is unknown, so it
                // is not sent again elsewhere.
                Err(error) => {
                    return Err(CliError::new(format!(
                        "{base} took the request but gave no answer ({error}): check that node's log; a write may have applied"
                    )));
                }
            }
        }
        Err(CliError::new(match failures.as_slice() {
            [one] => one.clone(),
            _ => format!("no node could be reached: {}", failures.join("; ")),
        }))
    }

    /// Sends a request and returns the JSON body, or the server's error.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let response = self.execute(request).await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status.is_success() {
            return Ok(body);
        }
        Err(CliError::from_response(
            status,
            &body,
            &format!("HTTP {status}"),
        ))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    /// Sends a request (failing over like [`Client::send`]) and returns the
    /// response unread, for a body to stream; a non-2xx status is the
    /// server's error.
    pub async fn response(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        let response = self.execute(request).await?;
        ok_response(response).await
    }

    /// The first node of the list that answers `/_/health`, for a request
    /// that cannot be repeated on another node (a streamed upload) or that
    /// must name the node it used (a signed URL).
    pub async fn reachable_base(&self) -> Result<&str, CliError> {
        let mut failures = Vec::new();
        for (index, base) in self.bases.iter().enumerate() {
            match self.http.get(format!("{base}/_/health")).send().await {
                Ok(_) => return Ok(base),
                Err(error) => {
                    let text = unreachable_text(base, &error);
                    if let Some(next) = self.bases.get(index + 1) {
                        eprintln!("picloud: {text}; trying {next}");
                    }
                    failures.push(text);
                }
            }
        }
        Err(CliError::new(format!(
            "no node could be reached: {}",
            failures.join("; ")
        )))
    }

    /// A request to the admin API of `base` only (no failover).
    pub fn request_to(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{base}/_/api/v1{path}"))
            .bearer_auth(&self.key)
    }

    /// Sends a request built by [`Client::request_to`] once; a non-2xx
    /// status is the server's error.
    pub async fn response_once(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        let response = request.send().await.map_err(|error| {
            CliError::new(format!(
                "the node took the request but gave no complete answer ({error}); nothing is stored unless `picloud files ls` shows it"
            ))
        })?;
        ok_response(response).await
    }

    /// Opens a streaming GET (for `--follow`), failing on a non-2xx status.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, CliError> {
        let response = self
            .execute(
                self.request(reqwest::Method::GET, path)
                    .header("accept", "text/event-stream"),
            )
            .await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(CliError::from_response(status, &body, "request failed"))
    }
}

/// The response when its status is a success, else the server's error.
async fn ok_response(response: reqwest::Response) -> Result<reqwest::Response, CliError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Err(CliError::from_response(
        status,
        &body,
        &format!("HTTP {status}"),
    ))
}

/// Percent-encodes a kv key for a URL path (keys may hold `/`, spaces, ...).
pub fn encode_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn urls_are_a_comma_list_with_schemes() {
        let urls = parse_urls(" http://a:1/ , https://b:2,,").expect("valid");
        assert_eq!(urls, vec!["http://a:1", "https://b:2"]);
        let error = parse_urls("http://a:1,b:2").expect_err("no scheme");
        assert!(
            error
                .message
                .contains("b:2 has no scheme: write http://b:2"),
            "{}",
            error.message
        );
        assert!(parse_urls(" , ").is_err());
        // Older credential files hold one `url`; newer ones a list.
        let old: Credentials = toml::from_str("url = \"http://a:1\"\nkey = \"k\"").expect("old");
        assert_eq!(old.url_list().as_deref(), Some("http://a:1"));
        let new = Credentials {
            urls: vec!["http://a:1".into(), "http://b:2".into()],
            ..Credentials::default()
        };
        assert_eq!(new.url_list().as_deref(), Some("http://a:1,http://b:2"));
    }

    #[test]
    fn server_codes_are_parsed_with_the_registry() {
        let busy = json!({"error": {"code": "no_leader", "message": "no leader yet"}});
        let error =
            CliError::from_response(reqwest::StatusCode::SERVICE_UNAVAILABLE, &busy, "unused");
        assert_eq!(error.code, Some(Code::NoLeader));
        assert_eq!(error.message, "no leader yet (no_leader, HTTP 503)");
        // A code from a newer server is shown as sent, and not acted on.
        let newer = json!({"error": {"code": "from_a_newer_server", "message": "m"}});
        let error = CliError::from_response(reqwest::StatusCode::CONFLICT, &newer, "unused");
        assert_eq!(error.code, None);
        assert_eq!(error.message, "m (from_a_newer_server, HTTP 409)");
        let bare =
            CliError::from_response(reqwest::StatusCode::BAD_GATEWAY, &Value::Null, "HTTP 502");
        assert_eq!(bare.message, "HTTP 502 (http_error, HTTP 502)");
    }
}
