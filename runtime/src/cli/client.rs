//! A small admin API client and the saved login.

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
    pub url: Option<String>,
    pub key: Option<String>,
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
    base: String,
    key: String,
}

impl Client {
    pub fn new(url: &str, key: &str) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Client {
            http,
            base: url.trim_end_matches('/').to_string(),
            key: key.to_string(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/_/api/v1{}", self.base, path)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.key)
    }

    /// Sends a request and returns the JSON body, or the server's error.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let response = request
            .send()
            .await
            .map_err(|e| CliError::new(format!("cannot reach {}: {e}", self.base)))?;
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

    /// Opens a streaming GET (for `--follow`), failing on a non-2xx status.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, CliError> {
        let response = self
            .request(reqwest::Method::GET, path)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| CliError::new(format!("cannot reach {}: {e}", self.base)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(CliError::from_response(status, &body, "request failed"))
    }
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
