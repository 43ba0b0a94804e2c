//! [`Outbound`]: the node's HTTP client for scripts, behind the guard.
//!
//! ```text
//!   http.request ─▶ slots (app, node: try, no queue) ─▶ per hop:
//!     url::Url::parse ─▶ guard::target
//!       IP literal ─▶ guard::check(ip:port) ─────────────────────┐
//!       name ─▶ client for (scheme, host, port)                  │
//!                 └ its GuardedResolver: resolve (system or       │
//!                   --http-out-dns), guard::check EVERY address,  │
//!                   hand reqwest only those ──────────────────────┤
//!                                                                 ▼
//!            reqwest connects to a checked address; body streamed up
//!            to the byte limit; a 3xx with hops left ─▶ next hop
//! ```
//!
//! reqwest's resolver is told only a name, not the port, and exact allow
//! entries (`10.0.0.5:9000`) need the port. So there is one reqwest client
//! per (scheme, host, port), each with a resolver that knows its port; the
//! clients are cached (bounded) so connections are pooled per target as
//! usual. Resolution happens once per new connection, inside the connect:
//! the addresses checked are the ones reqwest dials, and a name that later
//! resolves elsewhere (DNS rebinding) is checked again before any connect.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use picloud_lua_sdk::{Code, HostError, OutboundRequest, OutboundResponse};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use super::dns;
use super::guard::{self, AllowList, Refusal, Target};

/// Default of `--http-out-timeout-ms`.
pub const TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default of `--http-out-timeout-max-ms`.
pub const TIMEOUT_MS_MAX_DEFAULT: u64 = 60_000;
/// Default of `--http-out-response-bytes-max` (5 MiB).
pub const RESPONSE_BYTES_MAX_DEFAULT: usize = 5 * 1024 * 1024;
/// Default of `--http-out-request-bytes-max` (1 MiB).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default of `--http-out-per-app-max`.
pub const PER_APP_MAX_DEFAULT: usize = 16;
/// Default of `--http-out-per-node-max`.
pub const PER_NODE_MAX_DEFAULT: usize = 256;
/// reqwest clients kept (one per scheme, host and port reached). Past it
/// the cache is emptied: live requests keep their client, later ones
/// build new ones, so the only cost is fresh connections.
const CLIENTS_MAX: usize = 256;
/// Idle pooled connections kept per target.
const IDLE_CONNECTIONS_PER_TARGET_MAX: usize = 64;
/// The `user-agent` of a request whose script sets none.
const USER_AGENT: &str = concat!("PiCloud/", env!("CARGO_PKG_VERSION"));

/// The limits and settings of outbound HTTP (flags `--http-out-*`).
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Timeout of a request that gives no `timeout_ms`, in milliseconds.
    pub timeout_ms_default: u64,
    /// Largest `timeout_ms` a script may give, in milliseconds.
    pub timeout_ms_max: u64,
    /// Largest response body read, in bytes (`http_too_large` past it).
    pub response_bytes_max: usize,
    /// Largest request body sent, in bytes (`http_too_large` past it).
    pub request_bytes_max: usize,
    /// Requests one app may have in flight on this node (`http_busy` past it).
    pub per_app_max: usize,
    /// Requests in flight on this node (`http_busy` past it).
    pub per_node_max: usize,
    /// Private targets the operator opened.
    pub allow: AllowList,
    /// The DNS server names are resolved with (`None`: the system resolver).
    pub dns: Option<SocketAddr>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            timeout_ms_default: TIMEOUT_MS_DEFAULT,
            timeout_ms_max: TIMEOUT_MS_MAX_DEFAULT,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            per_app_max: PER_APP_MAX_DEFAULT,
            per_node_max: PER_NODE_MAX_DEFAULT,
            allow: AllowList::default(),
            dns: None,
        }
    }
}

/// The node's outbound HTTP: limits, guard and pooled clients.
pub struct Outbound {
    config: Arc<OutboundConfig>,
    node_slots: Arc<Semaphore>,
    /// Per-app slots; one entry per app that ever made a request (apps are
    /// few and deployed by the operator, so the map stays small).
    app_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    clients: Mutex<HashMap<ClientKey, reqwest::Client>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    https: bool,
    host: String,
    port: u16,
}

impl Outbound {
    pub fn new(config: OutboundConfig) -> Outbound {
        Outbound {
            node_slots: Arc::new(Semaphore::new(config.per_node_max)),
            config: Arc::new(config),
            app_slots: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Runs one script request: limits, then every hop through the guard.
    pub async fn request(
        &self,
        app: &str,
        request: OutboundRequest,
    ) -> Result<OutboundResponse, HostError> {
        let timeout = self.timeout(&request)?;
        let deadline = Instant::now() + timeout;
        if request.body.len() > self.config.request_bytes_max {
            return Err(HostError::new(
                Code::HttpTooLarge,
                format!(
                    "request body is {} bytes; the limit is {} (http_out_request_bytes_max)",
                    request.body.len(),
                    self.config.request_bytes_max
                ),
            ));
        }
        let _slots = self.slots(app)?;
        let exchange = self.exchange(request);
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(HostError::new(
                Code::HttpTimeout,
                format!("no complete response within {} ms", timeout.as_millis()),
            )),
        }
    }

    /// The smaller of the script's (or the default) timeout and what the
    /// invocation has left.
    fn timeout(&self, request: &OutboundRequest) -> Result<Duration, HostError> {
        let timeout_ms = request.timeout_ms.unwrap_or(self.config.timeout_ms_default);
        if timeout_ms == 0 || timeout_ms > self.config.timeout_ms_max {
            return Err(HostError::new(
                Code::InvalidField,
                format!(
                    "timeout_ms = {timeout_ms} is out of range (1 to {}, http_out_timeout_max_ms)",
                    self.config.timeout_ms_max
                ),
            ));
        }
        Ok(Duration::from_millis(timeout_ms).min(request.time_left))
    }

    /// An app slot and a node slot, or `http_busy` at once.
    fn slots(&self, app: &str) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), HostError> {
        let app_semaphore = {
            let mut slots = self.app_slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .entry(app.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_app_max)))
                .clone()
        };
        let app_slot = app_semaphore.try_acquire_owned().map_err(|_| {
            HostError::new(
                Code::HttpBusy,
                format!(
                    "app {app} has {} outbound requests in flight (http_out_per_app_max)",
                    self.config.per_app_max
                ),
            )
        })?;
        let node_slot = self.node_slots.clone().try_acquire_owned().map_err(|_| {
            HostError::new(
                Code::HttpBusy,
                format!(
                    "this node has {} outbound requests in flight (http_out_per_node_max)",
                    self.config.per_node_max
                ),
            )
        })?;
        Ok((app_slot, node_slot))
    }

    async fn exchange(&self, request: OutboundRequest) -> Result<OutboundResponse, HostError> {
        let mut url = Url::parse(&request.url).map_err(|error| {
            HostError::new(
                Code::InvalidField,
                format!("url {:?} is not a valid URL: {error}", request.url),
            )
        })?;
        let mut method = Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            HostError::new(
                Code::InvalidField,
                format!("method {:?} is not a valid HTTP method", request.method),
            )
        })?;
        let mut headers = header_map(&request.headers)?;
        let mut body = request.body;
        let mut hops_left = request.redirects;
        loop {
            let client = self.client_for(&url)?;
            let mut builder = client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            // No body at all (not an empty one): a GET then carries no
            // `content-length: 0`, which some servers refuse.
            if !body.is_empty() {
                builder = builder.body(body.clone());
            }
            let mut response = builder.send().await.map_err(send_error)?;
            let status = response.status();
            let location = response.headers().get(reqwest::header::LOCATION).cloned();
            if let (true, Some(location)) = (status.is_redirection() && hops_left > 0, location) {
                hops_left -= 1;
                let next = location
                    .to_str()
                    .ok()
                    .and_then(|location| url.join(location).ok())
                    .ok_or_else(|| {
                        HostError::new(
                            Code::HttpFailed,
                            format!("redirect from {url} has an invalid Location"),
                        )
                    })?;
                redirect(&mut method, &mut body, &mut headers, status, &url, &next);
                url = next;
                continue;
            }
            return read_response(&mut response, self.config.response_bytes_max).await;
        }
    }

    /// The client for `url`'s target, after the guard passed an IP literal.
    fn client_for(&self, url: &Url) -> Result<reqwest::Client, HostError> {
        let target = guard::target(url).map_err(blocked)?;
        let (host, port) = match &target {
            Target::Ip(addr) => {
                guard::check(*addr, &self.config.allow).map_err(blocked)?;
                (addr.ip().to_string(), addr.port())
            }
            Target::Name { host, port } => (host.clone(), *port),
        };
        let key = ClientKey {
            https: url.scheme() == "https",
            host,
            port,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        if clients.len() >= CLIENTS_MAX {
            clients.clear();
        }
        let resolver = GuardedResolver {
            port: key.port,
            config: self.config.clone(),
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(resolver))
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_TARGET_MAX)
            // Some APIs (GitHub's) refuse requests without one; a script's
            // own `user-agent` header replaces it.
            .user_agent(USER_AGENT)
            .build()
            .map_err(|error| HostError::new(Code::HttpFailed, error.to_string()))?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

fn blocked(refusal: Refusal) -> HostError {
    HostError::new(Code::HttpBlocked, refusal.to_string())
}

/// Header names a script may not set: the client frames the message and
/// manages the connection itself, and a script-chosen framing header could
/// smuggle a second request to the upstream.
const FORBIDDEN_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, HostError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let invalid =
            |what: &str| HostError::new(Code::InvalidField, format!("header {name:?}: {what}"));
        let header =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("invalid name"))?;
        if FORBIDDEN_HEADERS.contains(&header.as_str()) {
            return Err(invalid("set by the client, not by scripts"));
        }
        let value = HeaderValue::from_str(value).map_err(|_| invalid("invalid value"))?;
        map.append(header, value);
    }
    Ok(map)
}

/// The next hop's request, as browsers do it: 303 (and 301/302 after a
/// POST) become a GET without a body; credentials are not sent to another
/// origin.
fn redirect(
    method: &mut Method,
    body: &mut Vec<u8>,
    headers: &mut HeaderMap,
    status: StatusCode,
    from: &Url,
    to: &Url,
) {
    let to_get = status == StatusCode::SEE_OTHER
        || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
            && *method == Method::POST);
    if to_get {
        if *method != Method::HEAD {
            *method = Method::GET;
        }
        body.clear();
        headers.remove(reqwest::header::CONTENT_TYPE);
    }
    if from.origin() != to.origin() {
        headers.remove(reqwest::header::AUTHORIZATION);
        headers.remove(reqwest::header::COOKIE);
        headers.remove(reqwest::header::PROXY_AUTHORIZATION);
    }
}

/// The response, its body read chunk by chunk and refused past `bytes_max`
/// (never buffered beyond it).
async fn read_response(
    response: &mut reqwest::Response,
    bytes_max: usize,
) -> Result<OutboundResponse, HostError> {
    let too_large = || {
        HostError::new(
            Code::HttpTooLarge,
            format!("response body is over {bytes_max} bytes (http_out_response_bytes_max)"),
        )
    };
    if response
        .content_length()
        .is_some_and(|length| length > bytes_max as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(send_error)? {
        if body.len() + chunk.len() > bytes_max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(OutboundResponse {
        status: response.status().as_u16(),
        headers,
        body,
    })
}

/// A reqwest failure as the script sees it: the guard's refusal (raised by
/// the resolver, found in the error's sources) is `http_blocked`; the rest
/// is `http_failed` with every cause.
fn send_error(error: reqwest::Error) -> HostError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut causes = Vec::new();
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return blocked(refusal.clone());
        }
        let text = cause.to_string();
        if !causes.iter().any(|seen: &String| seen.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    let code = if error.is_timeout() {
        Code::HttpTimeout
    } else {
        Code::HttpFailed
    };
    HostError::new(code, causes.join(": "))
}

/// reqwest's resolver for one target port: resolves the name, checks every
/// address with the guard, and gives reqwest only checked addresses.
struct GuardedResolver {
    port: u16,
    config: Arc<OutboundConfig>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (port, config) = (self.port, self.config.clone());
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<IpAddr> = match config.dns {
                Some(server) => dns::lookup(server, &host).await?,
                None => tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .map(|addr| addr.ip())
                    .collect(),
            };
            let addrs = checked(&host, port, &addresses, &config.allow)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Every address of `host` as a socket address, or the first refusal: a
/// name with one refused address is refused whole, since which address a
/// connection ends up using (fallback, happy eyeballs, the resolver's
/// order) is not the script's to choose.
fn checked(
    host: &str,
    port: u16,
    addresses: &[IpAddr],
    allow: &AllowList,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    if addresses.is_empty() {
        return Err(format!("{host} has no addresses").into());
    }
    addresses
        .iter()
        .map(|ip| {
            let addr = SocketAddr::new(*ip, port);
            match guard::check(addr, allow) {
                Ok(()) => Ok(addr),
                Err(Refusal::Address { class, target }) => Err(Refusal::Address {
                    class,
                    target: format!("{host} ({target})"),
                }
                .into()),
                Err(other) => Err(other.into()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_any_refused_address_is_refused_whole() {
        let allow = AllowList::parse("127.0.0.2:8080").expect("valid list");
        let ip = |text: &str| text.parse::<IpAddr>().expect("test address");
        let ok = checked("api.test", 8080, &[ip("8.8.8.8"), ip("127.0.0.2")], &allow)
            .expect("public and allowed");
        assert_eq!(ok.len(), 2);
        let refused = checked("api.test", 8080, &[ip("8.8.8.8"), ip("127.0.0.1")], &allow)
            .expect_err("one loopback address");
        assert_eq!(
            refused.to_string(),
            "api.test (127.0.0.1:8080) is a loopback address"
        );
        assert!(checked("api.test", 8080, &[], &allow).is_err());
    }

    #[test]
    fn redirects_drop_the_body_and_credentials_as_browsers_do() {
        let from = Url::parse("http://a.test/").expect("test URL");
        let other = Url::parse("http://b.test/").expect("test URL");
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            HeaderValue::from_static("x"),
        );
        let (mut method, mut body) = (Method::POST, b"data".to_vec());
        redirect(
            &mut method,
            &mut body,
            &mut headers,
            StatusCode::TEMPORARY_REDIRECT,
            &from,
            &from,
        );
        assert_eq!(
            (method.clone(), body.len()),
            (Method::POST, 4),
            "307 keeps both"
        );
        assert!(headers.contains_key(reqwest::header::AUTHORIZATION));
        redirect(
            &mut method,
            &mut body,
            &mut headers,
            StatusCode::FOUND,
            &from,
            &other,
        );
        assert_eq!((method, body.len()), (Method::GET, 0));
        assert!(!headers.contains_key(reqwest::header::AUTHORIZATION));
    }

    #[test]
    fn scripts_cannot_set_framing_headers() {
        for name in ["Content-Length", "transfer-encoding", "Host", "connection"] {
            let error = header_map(&[(name.to_string(), "1".to_string())]).expect_err(name);
            assert_eq!(error.code, Code::InvalidField);
        }
        let map = header_map(&[
            ("x-a".to_string(), "1".to_string()),
            ("X-A".to_string(), "2".to_string()),
        ])
        .expect("valid headers");
        assert_eq!(map.get_all("x-a").iter().count(), 2);
    }
}
