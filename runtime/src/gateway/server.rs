//! The HTTP server: our own accept loop over hyper's HTTP/1 + HTTP/2
//! connection driver, so the node bounds what clients can hold.
//!
//! ```text
//!   accept ─▶ connection caps (total below the fd limit, per client address)
//!          │    over a cap: closed at once, a warning at most once a second
//!          ▼
//!   peek: "GET /_/realtime/" ─▶ stream_conn.rs (one stream, no hyper)
//!          ▼ anything else
//!   hyper auto (HTTP/1.1 or h2c by preface)
//!     HTTP/2: http2_max_concurrent_streams, keep-alive pings
//!     both:   a watchdog closes a connection whose head (or first request)
//!             takes longer than http_header_timeout_ms, or that has had no
//!             request in flight and no traffic for http_idle_timeout_ms,
//!             and drops one whose writes have made no progress that long
//!             (a client that stopped reading)
//!          ▼
//!   each request: TimedBody (body.rs) ─▶ axum router
//!     (file routes, /_/files/ and /_/api/v1/apps/*/files/, get the
//!     files_body_* timing instead of http_body_*)
//! ```

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

use super::body::{BodyTiming, TimedBody};
use super::proxy::{TrustedProxies, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::stream_conn::{self, StreamLimits};
use crate::config::ServeConfig;

/// File descriptors kept for everything but HTTP connections: storage files,
/// QUIC sockets, log files, outgoing connections.
pub const FD_RESERVE: u64 = 256;

/// How long a closing connection may take to finish its answer (a GOAWAY
/// exchange, a response in flight) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long the loop pauses after an accept error that is not one
/// connection's fault (EMFILE, ENFILE, ENOBUFS), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Largest HTTP/1 read buffer, which bounds a request head, in bytes (hyper's
/// default is ~400 KiB per connection). The realtime path's head has the
/// same bound.
const H1_BUFFER_BYTES_MAX: usize = 64 * 1024;

/// Largest HTTP/2 header list of one request, in bytes (h2's default is 16 MiB).
const H2_HEADER_LIST_BYTES_MAX: u32 = 64 * 1024;

/// At most one warning per kind of refusal in this period.
const WARN_PERIOD_MS: u64 = 1_000;

/// The server's limits, resolved from the config and the fd limit.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body: BodyTiming,
    /// The file routes' body timing (`files_body_timeout_ms`,
    /// `files_body_rate_bytes_min`): a 500 MiB upload is not a slow client.
    pub files_body: BodyTiming,
    pub connections_max: usize,
    pub connections_per_client_max: usize,
    pub h2_streams_max: u32,
    /// `--trusted-proxies`: whose `X-Forwarded-*` headers are believed
    /// (`proxy.rs`).
    pub trusted_proxies: Arc<TrustedProxies>,
}

impl ServerLimits {
    /// `connections_max` is the configured cap kept below `fd_soft_limit`
    /// minus [`FD_RESERVE`] (half the limit when it is tiny).
    pub fn new(config: &ServeConfig, fd_soft_limit: Option<u64>) -> ServerLimits {
        let header_timeout = Duration::from_millis(config.http_header_timeout_ms);
        let fd_room = fd_soft_limit.map_or(u64::MAX, |soft| {
            if soft > FD_RESERVE * 2 {
                soft - FD_RESERVE
            } else {
                soft / 2
            }
        });
        let connections_max = (config.http_connections_max as u64).min(fd_room.max(1)) as usize;
        ServerLimits {
            header_timeout,
            idle_timeout: Duration::from_millis(config.http_idle_timeout_ms),
            body: BodyTiming {
                timeout: Duration::from_millis(config.http_body_timeout_ms),
                rate_bytes_min: config.http_body_rate_bytes_min,
                grace: header_timeout,
            },
            files_body: BodyTiming {
                timeout: Duration::from_millis(config.files_body_timeout_ms),
                rate_bytes_min: config.files_body_rate_bytes_min,
                grace: header_timeout,
            },
            connections_max,
            connections_per_client_max: config.http_connections_per_client_max,
            h2_streams_max: config.http2_max_concurrent_streams,
            // Validated at boot (`ServeConfig::validate`); a list that did
            // not parse trusts no proxy.
            trusted_proxies: Arc::new(config.trusted_proxies().unwrap_or_default()),
        }
    }
}

/// Raises the file-descriptor soft limit to the hard limit (through rustix's
/// safe `setrlimit`) and returns the soft limit now in force, if known.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = ?limit.current, to = ?limit.maximum, "raised the file-descriptor limit");
                return limit.maximum;
            }
            Err(error) => tracing::warn!(%error, "cannot raise the file-descriptor limit"),
        }
    }
    limit.current
}

/// The HTTP server's state, shared by every run of its accept loop: the
/// loop is a supervised duty (`http_accept`), and a run restarted after a
/// panic keeps the listener (connections wait in its backlog meanwhile) and
/// the open connections, which never belong to one run.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Arc<ServerLimits>,
    caps: Arc<ConnectionCaps>,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    closing: watch::Sender<bool>,
    connections: std::sync::Mutex<JoinSet<()>>,
    stop: watch::Receiver<bool>,
    shed_warning: RateLimited,
    accept_warning: RateLimited,
}

impl HttpServer {
    /// Takes over `listener`; call inside the runtime that will serve it.
    /// The accept loop ends when `stop` turns true.
    pub fn new(
        listener: std::net::TcpListener,
        router: Router,
        limits: ServerLimits,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Arc<HttpServer>> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(
            connections_max = limits.connections_max,
            per_client = limits.connections_per_client_max,
            "HTTP connection caps"
        );
        Ok(Arc::new(HttpServer {
            listener,
            router,
            caps: Arc::new(ConnectionCaps::new(
                limits.connections_max,
                limits.connections_per_client_max,
            )),
            builder: Arc::new(connection_builder(&limits)),
            limits: Arc::new(limits),
            closing: watch::channel(false).0,
            connections: std::sync::Mutex::new(JoinSet::new()),
            stop,
            shed_warning: RateLimited::default(),
            accept_warning: RateLimited::default(),
        }))
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts connections until told to stop.
    pub async fn accept_loop(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        loop {
            picloud_cluster::fault_point("http_accept");
            let accepted = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                accepted = self.listener.accept() => accepted,
            };
            while self.connections().try_join_next().is_some() {}
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    if let Some(suppressed) = self.accept_warning.allow() {
                        tracing::warn!(%error, suppressed, "accepting HTTP connections failed; pausing");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let client = client_address(peer.ip());
            let Some(slot) = self.caps.admit(client) else {
                if let Some(suppressed) = self.shed_warning.allow() {
                    tracing::warn!(
                        %client,
                        suppressed,
                        open = self.caps.open.load(Ordering::Relaxed),
                        "HTTP connection refused: over http_connections_max or http_connections_per_client_max"
                    );
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = serve_connection(
                stream,
                peer,
                slot,
                self.router.clone(),
                self.builder.clone(),
                self.limits.clone(),
                self.closing.subscribe(),
            );
            self.connections().spawn(connection);
        }
    }

    /// After the accept loop stopped: asks every connection to close and
    /// waits until they have.
    pub async fn drain(&self) {
        let _ = self.closing.send(true);
        let mut connections = std::mem::take(&mut *self.connections());
        while connections.join_next().await.is_some() {}
    }
}

fn connection_builder(
    limits: &ServerLimits,
) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The head timeout is the watchdog's (see `Activity`).
        .header_read_timeout(None)
        .max_buf_size(H1_BUFFER_BYTES_MAX)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_streams_max)
        .max_header_list_size(H2_HEADER_LIST_BYTES_MAX)
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(limits.header_timeout);
    builder
}

/// The address a client is counted under: IPv4 (also IPv4-mapped IPv6) as
/// is, IPv6 by its /64, since one host commonly holds a whole /64 and could
/// otherwise open a fresh address per connection.
pub fn client_address(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Errors of one connection attempt: the listener itself is fine.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

/// Serves one connection while it holds `_slot`: a realtime stream request
/// on the lean path (`stream_conn.rs`), anything else through hyper.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    _slot: ConnectionSlot,
    router: Router,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    limits: Arc<ServerLimits>,
    mut closing: watch::Receiver<bool>,
) {
    let accepted = Instant::now();
    let mut peeked = [0u8; stream_conn::STREAM_PREFIX.len()];
    // A client that sends nothing gets the header timeout, as on hyper's path.
    let peek = tokio::select! {
        peek = tokio::time::timeout(limits.header_timeout, stream.peek(&mut peeked)) => peek,
        _ = closing.wait_for(|closing| *closing) => return,
    };
    match peek {
        Ok(Ok(read)) if read > 0 => {
            if stream_conn::is_stream_prefix(&peeked[..read]) {
                let stream_limits = StreamLimits {
                    head_bytes_max: H1_BUFFER_BYTES_MAX,
                    header_timeout: limits.header_timeout,
                    stall_timeout: limits.idle_timeout,
                    close_grace: CLOSE_GRACE,
                };
                stream_conn::serve(stream, peer, router, stream_limits, accepted, closing).await;
                return;
            }
        }
        _ => return,
    }
    // Boxed: hyper's connection future is large, and the task of a stream
    // connection should not carry its size.
    Box::pin(serve_http(stream, peer, router, builder, limits, closing)).await;
}

/// Records what a trusted proxy forwarded (the client, the host) on the
/// request, or removes the `X-Forwarded-*` headers an untrusted peer sent,
/// so that nothing after this point can be fooled by them.
fn forward<B>(request: &mut hyper::Request<B>, peer: SocketAddr, trusted: &TrustedProxies) {
    match super::proxy::forwarded(peer.ip(), request.headers(), trusted) {
        Some(forwarded) => {
            request.extensions_mut().insert(forwarded);
        }
        None => {
            let headers = request.headers_mut();
            for name in [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST] {
                headers.remove(name);
            }
        }
    }
}

/// Serves a connection through hyper (HTTP/1.1 keep-alive or HTTP/2).
async fn serve_http(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    limits: Arc<ServerLimits>,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let (timing, files_timing) = (limits.body, limits.files_body);
    let service = {
        let activity = activity.clone();
        let trusted = limits.trusted_proxies.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let guard = activity.enter();
            request.extensions_mut().insert(ConnectInfo(peer));
            forward(&mut request, peer, &trusted);
            let timing = if super::files::is_file_route(request.uri().path()) {
                files_timing
            } else {
                timing
            };
            let request = request.map(|body| TimedBody::new(body, timing));
            let mut router = router.clone();
            async move {
                let response = match router.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| GuardedBody {
                    inner: body,
                    _guard: guard,
                }))
            }
        })
    };
    let io = WatchedIo {
        inner: stream,
        activity: activity.clone(),
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let close = tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
            return;
        }
        close = activity.watch(limits.header_timeout, limits.idle_timeout) => Some(close),
        _ = closing.wait_for(|closing| *closing) => None,
    };
    match close {
        Some(Close::Idle) => {
            // Nothing is in flight: a client that does not take part in the
            // close (no GOAWAY answer, a half-sent head) is dropped soon.
            tracing::debug!(%peer, "closing an idle HTTP connection");
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
        }
        Some(Close::Stalled) => {
            // The client stopped reading: a graceful close would wait on
            // the same full socket, so the connection is dropped now.
            tracing::debug!(%peer, "dropping an HTTP connection whose client stopped reading");
        }
        None => {
            // Shutting down: requests in flight finish; `serve.rs` bounds the wait.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// No request in flight for the timeout.
    Idle,
    /// A write has made no progress for the timeout (the client stopped
    /// reading a response).
    Stalled,
}

/// The connection's socket, recording when a write last could not proceed.
struct WatchedIo {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl WatchedIo {
    fn record(&self, poll: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match &poll {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(Ok(written)) if *written > 0 => self.activity.write_progressed(),
            Poll::Ready(_) => {}
        }
        poll
    }
}

impl tokio::io::AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let filled = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > filled {
            self.activity.read_progressed();
        }
        poll
    }
}

impl tokio::io::AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection is doing, for its watchdog. Requests, reads and writes
/// only touch atomics: the watchdog polls (at least once per timeout) rather
/// than being woken per request, which would cost a task wake-up each.
///
/// The head timeout is ours, not hyper's: hyper arms its head timer as soon
/// as a response is queued, so a large response still draining to a slow but
/// reading client would be cut after the header timeout.
struct Activity {
    /// Requests whose response body has not been dropped yet.
    inflight: AtomicUsize,
    /// When the connection last became idle ([`connection_clock_ms`]).
    idle_since_ms: AtomicU64,
    served_any: AtomicBool,
    /// 1 + when the first byte arrived while no request was in flight (a
    /// head in progress), or 0.
    head_since_ms: AtomicU64,
    /// When a write last went through.
    write_progress_ms: AtomicU64,
    /// 1 + when a write last found the socket full, or 0 once a write
    /// has gone through since.
    write_blocked_since_ms: AtomicU64,
}

struct RequestGuard {
    activity: Arc<Activity>,
}

impl Activity {
    fn new() -> Self {
        let now = connection_clock_ms();
        Activity {
            inflight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now),
            served_any: AtomicBool::new(false),
            head_since_ms: AtomicU64::new(0),
            write_progress_ms: AtomicU64::new(now),
            write_blocked_since_ms: AtomicU64::new(0),
        }
    }

    fn enter(self: &Arc<Self>) -> RequestGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        if !self.served_any.load(Ordering::Relaxed) {
            self.served_any.store(true, Ordering::Release);
        }
        self.head_since_ms.store(0, Ordering::Release);
        RequestGuard {
            activity: self.clone(),
        }
    }

    /// Bytes arrived. Only those read while no request is in flight start a
    /// head; a body's bytes are timed by `TimedBody`.
    fn read_progressed(&self) {
        if self.inflight.load(Ordering::Relaxed) == 0
            && self.head_since_ms.load(Ordering::Relaxed) == 0
        {
            self.head_since_ms
                .store(connection_clock_ms() + 1, Ordering::Release);
        }
    }

    fn write_blocked(&self) {
        if self.write_blocked_since_ms.load(Ordering::Relaxed) == 0 {
            self.write_blocked_since_ms
                .store(connection_clock_ms() + 1, Ordering::Relaxed);
        }
    }

    fn write_progressed(&self) {
        self.write_progress_ms
            .store(connection_clock_ms(), Ordering::Relaxed);
        if self.write_blocked_since_ms.load(Ordering::Relaxed) != 0 {
            self.write_blocked_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Returns once the connection should close:
    /// - [`Close::Stalled`]: its writes have been blocked for the idle
    ///   timeout (noticed within twice that while a request runs);
    /// - [`Close::Idle`]: no request in flight and a head begun longer than
    ///   the header timeout ago, or nothing read or written for the header
    ///   timeout (before the first request) or the idle timeout (after).
    async fn watch(&self, header_timeout: Duration, idle_timeout: Duration) -> Close {
        loop {
            let now_ms = connection_clock_ms();
            let since = |ms: u64| Duration::from_millis(now_ms.saturating_sub(ms));
            let blocked_for = match self.write_blocked_since_ms.load(Ordering::Relaxed) {
                0 => Duration::ZERO,
                plus_one => since(plus_one - 1),
            };
            if blocked_for >= idle_timeout {
                return Close::Stalled;
            }
            let stall_check = idle_timeout - blocked_for;
            if self.inflight.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(stall_check).await;
                continue;
            }
            let idle_since_ms = self.idle_since_ms.load(Ordering::Acquire);
            let (elapsed, limit) = match self.head_since_ms.load(Ordering::Acquire) {
                0 => {
                    let last_ms = idle_since_ms.max(self.write_progress_ms.load(Ordering::Relaxed));
                    let limit = if self.served_any.load(Ordering::Acquire) {
                        idle_timeout
                    } else {
                        header_timeout
                    };
                    (since(last_ms), limit)
                }
                plus_one => (since(plus_one - 1), header_timeout),
            };
            if elapsed >= limit {
                if self.inflight.load(Ordering::Acquire) == 0
                    && self.idle_since_ms.load(Ordering::Acquire) == idle_since_ms
                {
                    return Close::Idle;
                }
                continue;
            }
            let next_check = (limit - elapsed).min(stall_check);
            tokio::time::sleep(next_check.max(Duration::from_millis(1))).await;
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.activity;
        if activity.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.head_since_ms.store(0, Ordering::Release);
            activity
                .idle_since_ms
                .store(connection_clock_ms(), Ordering::Release);
        }
    }
}

/// A response body that keeps its request counted as in flight until it has
/// been sent (or dropped): a streaming answer (log follow) is not idle.
struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections, in total and per client address.
struct ConnectionCaps {
    open: AtomicUsize,
    max: usize,
    per_client_max: usize,
    per_client: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
struct ConnectionSlot {
    caps: Arc<ConnectionCaps>,
    client: IpAddr,
}

impl ConnectionCaps {
    fn new(max: usize, per_client_max: usize) -> Self {
        ConnectionCaps {
            open: AtomicUsize::new(0),
            max,
            per_client_max,
            per_client: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn admit(self: &Arc<Self>, client: IpAddr) -> Option<ConnectionSlot> {
        let mut per_client = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_client.entry(client).or_insert(0);
        if *count >= self.per_client_max || self.open.load(Ordering::Acquire) >= self.max {
            if *count == 0 {
                per_client.remove(&client);
            }
            return None;
        }
        *count += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionSlot {
            caps: self.clone(),
            client,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_client = self
            .caps
            .per_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
        self.caps.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Allows one event per [`WARN_PERIOD_MS`], counting the ones it swallows.
#[derive(Default)]
struct RateLimited {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimited {
    /// `Some(swallowed since the last allowed one)` when this one may be logged.
    fn allow(&self) -> Option<u64> {
        // Shifted by one period so that the very first event (at clock 0,
        // with `last_ms` 0) is allowed.
        let now = connection_clock_ms() + WARN_PERIOD_MS;
        let last = self.last_ms.load(Ordering::Acquire);
        if now >= last + WARN_PERIOD_MS
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Milliseconds on a monotonic clock shared by the server's bookkeeping.
fn connection_clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_total_and_per_client() {
        let caps = Arc::new(ConnectionCaps::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = caps.admit(a).expect("1");
        let _second = caps.admit(a).expect("2");
        assert!(caps.admit(a).is_none(), "per-client cap");
        let _third = caps.admit(b).expect("3");
        assert!(caps.admit(b).is_none(), "total cap");
        drop(first);
        assert!(
            caps.admit(a).is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn clients_are_counted_by_ipv4_address_or_ipv6_prefix() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        assert_eq!(client_address(ip("10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(client_address(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(
            client_address(ip("2001:db8:1:2:aaaa::1")),
            client_address(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_address(ip("2001:db8:1:2::1")),
            client_address(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn warnings_are_rate_limited() {
        let limited = RateLimited::default();
        assert_eq!(limited.allow(), Some(0));
        assert_eq!(limited.allow(), None);
        assert_eq!(limited.allow(), None);
        assert_eq!(limited.suppressed.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_times_out_and_a_busy_one_does_not() {
        let started = Instant::now();
        let activity = Arc::new(Activity::new());
        let header = Duration::from_millis(100);
        let idle = Duration::from_millis(300);
        // No request at all: the header timeout. (The activity clock counts
        // whole milliseconds, so the close may come up to one early.)
        assert_eq!(activity.watch(header, idle).await, Close::Idle);
        let elapsed = started.elapsed();
        let earliest = header - Duration::from_millis(2);
        assert!((earliest..idle).contains(&elapsed), "{elapsed:?}");
        // A request in flight keeps it open however long it runs.
        let guard = activity.enter();
        let watchdog = activity.watch(header, idle);
        tokio::pin!(watchdog);
        assert!(
            tokio::time::timeout(idle * 2, watchdog.as_mut())
                .await
                .is_err()
        );
        // Once it is done, the idle timeout applies. The clock starts before
        // the drop: the idle time is counted from the drop, so a clock
        // started after it could see the close a fraction early.
        let before = Instant::now();
        drop(guard);
        assert_eq!(watchdog.await, Close::Idle);
        let elapsed = before.elapsed();
        // The activity clock counts whole milliseconds.
        let earliest = idle - Duration::from_millis(2);
        assert!((earliest..idle * 3).contains(&elapsed), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_slow_head_gets_the_header_timeout_and_a_draining_response_is_not_idle() {
        let header = Duration::from_millis(100);
        let idle = Duration::from_millis(400);
        let activity = Arc::new(Activity::new());
        drop(activity.enter());
        // A head begun after a request: the header timeout, not the idle one.
        let before = Instant::now();
        activity.read_progressed();
        assert_eq!(activity.watch(header, idle).await, Close::Idle);
        let elapsed = before.elapsed();
        // The activity clock counts whole milliseconds.
        let earliest = header - Duration::from_millis(2);
        assert!((earliest..idle).contains(&elapsed), "{elapsed:?}");
        // A response still draining to a client that reads keeps it open.
        let activity = Arc::new(Activity::new());
        drop(activity.enter());
        let writer = {
            let activity = activity.clone();
            tokio::spawn(async move {
                loop {
                    activity.write_progressed();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        assert!(
            tokio::time::timeout(idle * 2, activity.watch(header, idle))
                .await
                .is_err()
        );
        writer.abort();
    }

    #[tokio::test]
    async fn a_connection_whose_writes_stall_is_closed_and_one_that_writes_is_not() {
        let activity = Arc::new(Activity::new());
        let _guard = activity.enter();
        let idle = Duration::from_millis(200);
        // Writes keep going through: a long response is not a stall.
        let writer = {
            let activity = activity.clone();
            tokio::spawn(async move {
                loop {
                    activity.write_blocked();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    activity.write_progressed();
                }
            })
        };
        assert!(
            tokio::time::timeout(idle * 3, activity.watch(idle, idle))
                .await
                .is_err()
        );
        writer.abort();
        let _ = writer.await;
        activity.write_progressed();
        let before = Instant::now();
        activity.write_blocked();
        assert_eq!(activity.watch(idle, idle).await, Close::Stalled);
        let elapsed = before.elapsed();
        // The clock counts whole milliseconds.
        let earliest = idle - Duration::from_millis(2);
        assert!((earliest..idle * 3).contains(&elapsed), "{elapsed:?}");
    }
}
