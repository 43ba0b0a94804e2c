//! `PeerEndpoint`: one quinn endpoint (one UDP socket) per node, both server
//! and client, with mutual TLS against the cluster CA.
//!
//! ```text
//!   bind ──▶ accept task ──(per incoming, ≤ handshakes_in_flight_max)──▶ handshake task
//!                                   │ peer ALPN + CA-signed client cert ──▶ Incoming::Peer
//!                                   │ join ALPN (no cert needed)         ──▶ Incoming::Join
//!                                   └ anything else: closed, counted in `refusals`, logged
//!   accept() ◀── bounded queue (accept_queue_max) ◀──┘
//! ```
//!
//! Handshakes run in their own tasks so a slow or hostile client never holds
//! up `accept()` for the others. The server confirms an accepted member
//! connection with one byte on a uni stream: in TLS 1.3 the client finishes
//! its handshake before the server has checked the client certificate, so
//! without that confirmation a refused client would only learn of the refusal
//! at its first request. With it, `connect()` either returns a connection the
//! server accepted or a clear error.
//!
//! Every bidi stream starts with a [`StreamKind`] byte. Raft appends, votes,
//! snapshots, forwarded writes, pub/sub and file blocks each open their own
//! streams, so a big snapshot or block never sits in front of a heartbeat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use picloud_storage::NodeId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};

use super::ca::{CLUSTER_SERVER_NAME, ClusterCa, NodeCertificate};
use super::cert_name;
use super::contacts::Contacts;
use super::frame::{self, FRAME_BYTES_MAX, FrameError};
use super::tls::{self, JOIN_ALPN, PEER_ALPN};

/// Application close codes this transport uses (QUIC `CONNECTION_CLOSE`).
pub mod close_code {
    /// An orderly close (shutdown).
    pub const DONE: u32 = 0;
    /// A member connection without a client certificate.
    pub const CLIENT_CERT_REQUIRED: u32 = 1;
    /// The peer broke the framing, sent an unknown stream kind or undecodable bytes.
    pub const PROTOCOL_VIOLATION: u32 = 2;
    /// The join secret did not match.
    pub const JOIN_REFUSED: u32 = 3;
    /// The certificate does not name a node (`picloud-node-<id>`).
    pub const BAD_IDENTITY: u32 = 4;
    /// The certificate names a node that was removed from the cluster.
    pub const REMOVED: u32 = 5;
}

/// Stream error codes (QUIC `RESET_STREAM` / `STOP_SENDING`): one stream
/// abandoned, the connection unaffected.
pub mod stream_code {
    /// The sender gave up on the request (its timeout fired, or it was cancelled).
    pub const CANCELLED: u32 = 1;
    /// The receiver does not serve this stream kind (yet).
    pub const UNSUPPORTED: u32 = 2;
    /// The receiver has as many streams of this kind from the sender as it
    /// serves at once (`Blocks`: `files_block_streams_per_peer_max`).
    pub const BUSY: u32 = 3;
    /// A block operation stalled past `files_block_timeout_ms`.
    pub const TIMED_OUT: u32 = 4;
}

/// The byte a server sends on its first uni stream to confirm a member connection.
const ACCEPTED_BYTE: u8 = 0xac;

/// `EndpointConfig::send_window_bytes` by default: four 1 MiB file blocks
/// in flight per connection, still several round trips of a LAN at
/// gigabit speed (a snapshot's frames fit as well).
pub const SEND_WINDOW_BYTES_DEFAULT: u64 = 4 * 1024 * 1024;

/// Limits and timings of an endpoint. Each has a default fit for a Pi.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Largest frame payload accepted on member streams.
    pub frame_bytes_max: u32,
    /// How long a handshake (including the server's confirmation) may take.
    pub handshake_timeout_ms: u64,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout_ms: u64,
    /// Keep-alive pings so an idle member connection stays open.
    pub keep_alive_ms: u64,
    /// The round trip assumed before one is measured (sets the first
    /// handshake retransmission).
    pub initial_rtt_ms: u64,
    /// Handshakes served at once; further connection attempts are refused.
    pub handshakes_in_flight_max: usize,
    /// Accepted connections waiting for `accept()`.
    pub accept_queue_max: usize,
    /// Bytes one connection may have sent and not yet acknowledged, over
    /// all its streams (quinn's default is 10 MB). File blocks go out at
    /// link speed to every replica at once: this bounds what an upload
    /// buffers per peer, so a 500 MiB upload stays within its memory budget.
    pub send_window_bytes: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            frame_bytes_max: FRAME_BYTES_MAX,
            handshake_timeout_ms: 5_000,
            // A peer killed with -9 sends no close: its connection is only
            // known dead after the idle timeout, and every RPC on it stalls
            // until then (measured: 21–26 s failovers with 30 s). Keep-alives
            // hold live connections open, so a short timeout costs nothing.
            idle_timeout_ms: 3_000,
            keep_alive_ms: 1_000,
            initial_rtt_ms: 50,
            handshakes_in_flight_max: 64,
            accept_queue_max: 64,
            send_window_bytes: SEND_WINDOW_BYTES_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS configuration: {message}")]
    Config { message: String },
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    /// The TLS handshake failed (e.g. the server's certificate is not from our CA).
    #[error("handshake with {addr} failed: {reason}")]
    Handshake { addr: SocketAddr, reason: String },
    /// The server closed the connection after the handshake (e.g. it refused our certificate).
    #[error("{addr} refused the connection: {reason}")]
    Refused { addr: SocketAddr, reason: String },
    #[error("{operation} with {addr} did not finish within {waited_ms} ms")]
    Timeout {
        operation: &'static str,
        addr: SocketAddr,
        waited_ms: u64,
    },
    #[error("{addr} is node {actual}, not node {expected}")]
    UnexpectedPeer {
        addr: SocketAddr,
        expected: NodeId,
        actual: NodeId,
    },
    #[error("{addr}: {reason}")]
    BadIdentity { addr: SocketAddr, reason: String },
    #[error("connection to node {peer} lost: {reason}")]
    ConnectionLost { peer: NodeId, reason: String },
    #[error("node {peer} opened a stream of unknown kind {byte:#04x}")]
    UnknownStreamKind { peer: NodeId, byte: u8 },
    #[error("node {peer}: {source}")]
    Frame { peer: NodeId, source: FrameError },
}

/// What a stream carries; sent as the first byte of every bidi stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StreamKind {
    RaftAppend = 1,
    RaftVote = 2,
    Snapshot = 3,
    Forward = 4,
    PubSub = 5,
    /// File blocks (`transport::blocks`): one request per stream.
    Blocks = 6,
}

impl StreamKind {
    pub const ALL: [StreamKind; 6] = [
        StreamKind::RaftAppend,
        StreamKind::RaftVote,
        StreamKind::Snapshot,
        StreamKind::Forward,
        StreamKind::PubSub,
        StreamKind::Blocks,
    ];

    pub fn from_byte(byte: u8) -> Option<StreamKind> {
        StreamKind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }
}

/// Connections the endpoint refused since it was bound, and why the last one was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    pub total: u64,
    pub last_reason: Option<String>,
}

/// An accepted connection.
#[derive(Debug)]
pub enum Incoming {
    /// A member, authenticated by a CA-signed certificate.
    Peer(PeerConnection),
    /// A joiner without a certificate; serve it with `join::answer_join`.
    Join(JoinConnection),
}

/// A connection on the join ALPN, not yet trusted with anything.
#[derive(Debug)]
pub struct JoinConnection {
    pub(crate) connection: quinn::Connection,
}

impl JoinConnection {
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }
}

/// The node's QUIC endpoint. Cheap to share behind an `Arc`.
pub struct PeerEndpoint {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    node_id: NodeId,
    config: EndpointConfig,
    incoming: Mutex<mpsc::Receiver<Incoming>>,
    refusals: watch::Receiver<Refusals>,
    /// When each member was last heard from, in either direction.
    contacts: Contacts,
    /// Set (with the member's words) once a member closed a connection of
    /// ours with [`close_code::REMOVED`]: this node was removed from the
    /// cluster and must stop.
    removed: Arc<watch::Sender<Option<String>>>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PeerEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerEndpoint")
            .field("node_id", &self.node_id)
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

fn transport_config(
    config: &EndpointConfig,
) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms))
        .map_err(|e| TransportError::Config {
            message: format!("idle_timeout_ms: {e}"),
        })?;
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(Some(Duration::from_millis(config.keep_alive_ms)));
    // Members share a LAN: start from a LAN round trip, not quinn's 333 ms
    // Internet guess, so a handshake packet to a node that is just coming
    // back (a restart) is retransmitted within ~150 ms instead of ~1 s, and
    // the leader reaches the restarted node before it times out.
    transport.initial_rtt(Duration::from_millis(config.initial_rtt_ms));
    transport.send_window(config.send_window_bytes);
    Ok(Arc::new(transport))
}

fn config_error(message: impl ToString) -> TransportError {
    TransportError::Config {
        message: message.to_string(),
    }
}

impl PeerEndpoint {
    /// Binds `addr` (port 0 picks one) with the default [`EndpointConfig`].
    pub fn bind(
        addr: SocketAddr,
        ca: &ClusterCa,
        node_cert: &NodeCertificate,
    ) -> Result<PeerEndpoint, TransportError> {
        Self::bind_with(addr, ca, node_cert, EndpointConfig::default())
    }

    /// Binds `addr` and starts accepting. Must run inside a tokio runtime.
    pub fn bind_with(
        addr: SocketAddr,
        ca: &ClusterCa,
        node_cert: &NodeCertificate,
        config: EndpointConfig,
    ) -> Result<PeerEndpoint, TransportError> {
        let transport = transport_config(&config)?;
        let server_tls = tls::server_config(ca, node_cert).map_err(config_error)?;
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server_tls))
            .map_err(config_error)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config.transport_config(transport.clone());
        let client_tls = tls::peer_client_config(ca, node_cert).map_err(config_error)?;
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(client_tls))
            .map_err(config_error)?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(transport);

        let endpoint = quinn::Endpoint::server(server_config, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        let (queue, incoming) = mpsc::channel(config.accept_queue_max.max(1));
        let (refusals_tx, refusals) = watch::channel(Refusals::default());
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            queue,
            Arc::new(refusals_tx),
            config.clone(),
        ));
        Ok(PeerEndpoint {
            endpoint,
            client_config,
            node_id: node_cert.node_id,
            config,
            incoming: Mutex::new(incoming),
            refusals,
            contacts: Contacts::default(),
            removed: Arc::new(watch::channel(None).0),
            accept_task,
        })
    }

    /// This node's id (from its own certificate).
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        let addr = self.endpoint.local_addr();
        addr.map_err(|source| TransportError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })
    }

    /// A watch of refused connections, for status output and tests.
    pub fn refusals(&self) -> watch::Receiver<Refusals> {
        self.refusals.clone()
    }

    /// When each member was last heard from (the Raft client and server both record).
    pub fn contacts(&self) -> &Contacts {
        &self.contacts
    }

    /// A watch that turns `Some(reason)` once a member told this node it was
    /// removed from the cluster (see [`close_code::REMOVED`]).
    pub fn removed(&self) -> watch::Receiver<Option<String>> {
        self.removed.subscribe()
    }

    /// Marks this node removed, e.g. when its own replicated state says so at start.
    pub fn mark_removed(&self, reason: String) {
        self.removed.send_replace(Some(reason));
    }

    /// The next accepted connection; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        self.incoming.lock().await.recv().await
    }

    /// Connects to the member at `addr`, whichever node it is.
    pub async fn connect(&self, addr: SocketAddr) -> Result<PeerConnection, TransportError> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), addr, CLUSTER_SERVER_NAME)
            .map_err(|e| TransportError::Connect {
                addr,
                message: e.to_string(),
            })?;
        let timeout = Duration::from_millis(self.config.handshake_timeout_ms);
        let timed_out = || TransportError::Timeout {
            operation: "handshake",
            addr,
            waited_ms: self.config.handshake_timeout_ms,
        };
        let connection = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| TransportError::Handshake {
                addr,
                reason: describe_close(&e),
            })?;
        let peer = match peer_node_id(&connection) {
            Ok(peer) => peer,
            Err(reason) => {
                connection.close(close_code::BAD_IDENTITY.into(), reason.as_bytes());
                return Err(TransportError::BadIdentity { addr, reason });
            }
        };
        // Wait for the server's confirmation that it accepted our certificate.
        let confirmation = async {
            let mut uni = connection.accept_uni().await?;
            let mut byte = [0u8; 1];
            uni.read_exact(&mut byte)
                .await
                .map_err(|_| quinn::ConnectionError::LocallyClosed)?;
            Ok::<u8, quinn::ConnectionError>(byte[0])
        };
        match tokio::time::timeout(timeout, confirmation).await {
            Err(_) => {
                connection.close(close_code::DONE.into(), b"handshake timeout");
                Err(timed_out())
            }
            Ok(Err(e)) => {
                let closed = connection.close_reason().unwrap_or(e);
                note_removal(&self.removed, &closed);
                Err(TransportError::Refused {
                    addr,
                    reason: describe_close(&closed),
                })
            }
            Ok(Ok(ACCEPTED_BYTE)) => {
                // A member refuses a removed node only after the handshake
                // (it must read the certificate first), so the refusal
                // arrives as the close of a connection that looked fine.
                let watched = connection.clone();
                let removed = self.removed.clone();
                tokio::spawn(async move {
                    note_removal(&removed, &watched.closed().await);
                });
                Ok(PeerConnection {
                    connection,
                    peer,
                    frame_bytes_max: self.config.frame_bytes_max,
                })
            }
            Ok(Ok(other)) => {
                connection.close(close_code::PROTOCOL_VIOLATION.into(), b"bad confirmation");
                Err(TransportError::Refused {
                    addr,
                    reason: format!("unexpected confirmation byte {other:#04x}"),
                })
            }
        }
    }

    /// Connects to `addr` and checks that it is node `expected`: a stale
    /// address that now belongs to another node is an error, not a silent
    /// conversation with the wrong peer.
    pub async fn connect_to(
        &self,
        addr: SocketAddr,
        expected: NodeId,
    ) -> Result<PeerConnection, TransportError> {
        let connection = self.connect(addr).await?;
        if connection.peer != expected {
            connection.close(close_code::BAD_IDENTITY, "unexpected node id");
            return Err(TransportError::UnexpectedPeer {
                addr,
                expected,
                actual: connection.peer,
            });
        }
        Ok(connection)
    }

    /// Closes every connection and stops accepting; `accept()` then returns `None`.
    pub fn close(&self) {
        self.endpoint.close(close_code::DONE.into(), b"shutdown");
        self.accept_task.abort();
    }

    /// Waits until every connection has been closed and its close acknowledged
    /// (or timed out), so a restart can rebind the port cleanly.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

impl Drop for PeerEndpoint {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    queue: mpsc::Sender<Incoming>,
    refusals: Arc<watch::Sender<Refusals>>,
    config: EndpointConfig,
) {
    let handshakes = Arc::new(Semaphore::new(config.handshakes_in_flight_max.max(1)));
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            // Shed instead of queueing without bound; the client retries.
            incoming.refuse();
            refuse(&refusals, remote, "too many handshakes in flight".into());
            continue;
        };
        let queue = queue.clone();
        let refusals = refusals.clone();
        let config = config.clone();
        tokio::spawn(async move {
            match handshake(incoming, &config).await {
                Ok(accepted) => {
                    // Held until the connection is queued, so a full queue
                    // also throttles handshakes.
                    let _ = queue.send(accepted).await;
                }
                Err(reason) => refuse(&refusals, remote, reason),
            }
            drop(permit);
        });
    }
}

fn refuse(refusals: &watch::Sender<Refusals>, remote: SocketAddr, reason: String) {
    tracing::warn!(%remote, %reason, "refused a cluster connection");
    refusals.send_modify(|r| {
        r.total += 1;
        r.last_reason = Some(reason);
    });
}

/// The server side of one connection attempt: TLS, then the ALPN decides
/// between a member (which must have presented a CA-signed certificate naming
/// a node) and a joiner.
async fn handshake(incoming: quinn::Incoming, config: &EndpointConfig) -> Result<Incoming, String> {
    let timeout = Duration::from_millis(config.handshake_timeout_ms);
    let connecting = incoming.accept().map_err(|e| describe_close(&e))?;
    let connection = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake failed: {}", describe_close(&e)))?;
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match alpn.as_deref() {
        Some(JOIN_ALPN) => Ok(Incoming::Join(JoinConnection { connection })),
        Some(PEER_ALPN) => {
            if connection.peer_identity().is_none() {
                let reason = "client certificate required";
                connection.close(close_code::CLIENT_CERT_REQUIRED.into(), reason.as_bytes());
                return Err(reason.into());
            }
            let peer = match peer_node_id(&connection) {
                Ok(peer) => peer,
                Err(reason) => {
                    connection.close(close_code::BAD_IDENTITY.into(), reason.as_bytes());
                    return Err(reason);
                }
            };
            let confirm = async {
                let mut uni = connection.open_uni().await.map_err(|e| e.to_string())?;
                uni.write_all(&[ACCEPTED_BYTE])
                    .await
                    .map_err(|e| e.to_string())?;
                uni.finish().map_err(|e| e.to_string())
            };
            tokio::time::timeout(timeout, confirm)
                .await
                .map_err(|_| "confirmation timed out".to_string())?
                .map_err(|e| format!("confirmation to node {peer}: {e}"))?;
            Ok(Incoming::Peer(PeerConnection {
                connection,
                peer,
                frame_bytes_max: config.frame_bytes_max,
            }))
        }
        other => {
            // rustls refuses a handshake without a common ALPN, so this is unreachable
            // in practice; still refuse rather than guess.
            let reason = format!("unexpected ALPN {other:?}");
            connection.close(close_code::PROTOCOL_VIOLATION.into(), reason.as_bytes());
            Err(reason)
        }
    }
}

/// The node id in the peer's verified certificate.
fn peer_node_id(connection: &quinn::Connection) -> Result<NodeId, String> {
    let certs = connection
        .peer_identity()
        .and_then(|identity| {
            identity
                .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or("the peer presented no certificate")?;
    let leaf = certs.first().ok_or("the peer presented no certificate")?;
    cert_name::node_id_of(leaf)
}

/// Records the member's reason when it closed a connection with
/// [`close_code::REMOVED`]; any other close is none of this watch's business.
fn note_removal(removed: &watch::Sender<Option<String>>, closed: &quinn::ConnectionError) {
    if let quinn::ConnectionError::ApplicationClosed(close) = closed
        && close.error_code == close_code::REMOVED.into()
    {
        let reason = String::from_utf8_lossy(&close.reason).into_owned();
        removed.send_if_modified(|current| {
            // The first member's words are kept: every member says the same.
            if current.is_some() {
                return false;
            }
            *current = Some(reason);
            true
        });
    }
}

/// A readable reason for a closed connection, including the peer's close reason text.
pub(crate) fn describe_close(error: &quinn::ConnectionError) -> String {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => format!(
            "closed by peer (code {}): {}",
            close.error_code,
            String::from_utf8_lossy(&close.reason)
        ),
        quinn::ConnectionError::ConnectionClosed(close) => format!(
            "closed by peer ({}): {}",
            close.error_code,
            String::from_utf8_lossy(&close.reason)
        ),
        other => other.to_string(),
    }
}

/// An authenticated connection to another member.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    connection: quinn::Connection,
    peer: NodeId,
    frame_bytes_max: u32,
}

impl PeerConnection {
    /// The peer's node id, from its verified certificate.
    pub fn peer_node_id(&self) -> NodeId {
        self.peer
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    fn lost(&self, error: &quinn::ConnectionError) -> TransportError {
        TransportError::ConnectionLost {
            peer: self.peer,
            reason: describe_close(error),
        }
    }

    /// Opens a bidi stream of `kind`.
    pub async fn open(&self, kind: StreamKind) -> Result<PeerStream, TransportError> {
        let (mut send, recv) = self.connection.open_bi().await.map_err(|e| self.lost(&e))?;
        // The kind byte also makes the stream visible to the peer right away
        // (QUIC announces a stream only when data is sent on it).
        send.write_all(&[kind as u8])
            .await
            .map_err(|e| TransportError::ConnectionLost {
                peer: self.peer,
                reason: e.to_string(),
            })?;
        Ok(self.stream(kind, send, recv))
    }

    /// The next stream the peer opened. An unknown kind byte closes the connection.
    pub async fn accept_stream(&self) -> Result<PeerStream, TransportError> {
        let (send, mut recv) = self
            .connection
            .accept_bi()
            .await
            .map_err(|e| self.lost(&e))?;
        let mut byte = [0u8; 1];
        recv.read_exact(&mut byte).await.map_err(|e| {
            let source = FrameError::Truncated {
                expected: 1,
                received: 0,
            };
            tracing::debug!(peer = self.peer, error = %e, "stream ended before its kind byte");
            TransportError::Frame {
                peer: self.peer,
                source,
            }
        })?;
        match StreamKind::from_byte(byte[0]) {
            Some(kind) => Ok(self.stream(kind, send, recv)),
            None => {
                self.close_for_violation("unknown stream kind");
                Err(TransportError::UnknownStreamKind {
                    peer: self.peer,
                    byte: byte[0],
                })
            }
        }
    }

    fn stream(
        &self,
        kind: StreamKind,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> PeerStream {
        PeerStream {
            kind,
            send,
            recv,
            connection: self.clone(),
        }
    }

    /// QUIC ACK frames received on this connection so far: any live peer
    /// acknowledges what it receives within milliseconds.
    pub fn acks_received(&self) -> u64 {
        self.connection.stats().frame_rx.acks
    }

    /// Disconnects a peer that broke the protocol; logged with the reason.
    pub fn close_for_violation(&self, reason: &str) {
        tracing::warn!(peer = self.peer, remote = %self.remote_address(), %reason, "disconnecting peer: protocol violation");
        self.connection
            .close(close_code::PROTOCOL_VIOLATION.into(), reason.as_bytes());
    }

    pub fn close(&self, code: u32, reason: &str) {
        self.connection.close(code.into(), reason.as_bytes());
    }

    /// Whether the connection is closed (by either side, or lost): a cached
    /// connection is re-dialled rather than reused once this is true.
    pub fn is_closed(&self) -> bool {
        self.connection.close_reason().is_some()
    }

    /// Resolves when the connection is closed, with the reason.
    pub async fn closed(&self) -> String {
        describe_close(&self.connection.closed().await)
    }
}

/// One bidi stream of a known kind, speaking frames.
///
/// A frame the peer gets wrong (too large, cut short, undecodable) closes the
/// whole connection: a peer that sends garbage is disconnected, not believed.
#[derive(Debug)]
pub struct PeerStream {
    kind: StreamKind,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    connection: PeerConnection,
}

impl PeerStream {
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    pub fn peer_node_id(&self) -> NodeId {
        self.connection.peer
    }

    /// The connection this stream belongs to (e.g. to disconnect a peer whose
    /// well-framed request breaks the protocol).
    pub fn connection(&self) -> &PeerConnection {
        &self.connection
    }

    fn frame_error(&self, source: FrameError) -> TransportError {
        if source.is_protocol_violation() {
            self.connection.close_for_violation(&source.to_string());
        }
        TransportError::Frame {
            peer: self.connection.peer,
            source,
        }
    }

    /// Sends one raw frame.
    pub async fn send_frame(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        frame::write_frame(&mut self.send, payload, self.connection.frame_bytes_max)
            .await
            .map_err(|source| TransportError::Frame {
                peer: self.connection.peer,
                source,
            })
    }

    /// Receives one raw frame; `None` when the peer finished its side.
    pub async fn recv_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        let max = self.connection.frame_bytes_max;
        match frame::read_frame(&mut self.recv, max).await {
            Ok(frame) => Ok(frame),
            Err(source) => Err(self.frame_error(source)),
        }
    }

    /// Sends `value` encoded with the project's codec as one frame.
    pub async fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TransportError> {
        frame::write_message(&mut self.send, value, self.connection.frame_bytes_max)
            .await
            .map_err(|source| TransportError::Frame {
                peer: self.connection.peer,
                source,
            })
    }

    /// Receives one frame and decodes it; `None` when the peer finished its side.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, TransportError> {
        let max = self.connection.frame_bytes_max;
        match frame::read_message(&mut self.recv, max).await {
            Ok(value) => Ok(value),
            Err(source) => Err(self.frame_error(source)),
        }
    }

    /// [`PeerStream::recv`] with a tighter frame limit than the
    /// connection's (block headers are small; see `transport::blocks`).
    pub async fn recv_limited<T: DeserializeOwned>(
        &mut self,
        max: u32,
    ) -> Result<Option<T>, TransportError> {
        match frame::read_message(&mut self.recv, max.min(self.connection.frame_bytes_max)).await {
            Ok(value) => Ok(value),
            Err(source) => Err(self.frame_error(source)),
        }
    }

    /// Finishes our side of the stream (the peer's next read returns `None`).
    pub fn finish(&mut self) -> Result<(), TransportError> {
        self.send
            .finish()
            .map_err(|e| TransportError::ConnectionLost {
                peer: self.connection.peer,
                reason: e.to_string(),
            })
    }

    /// Abandons the stream in both directions with `code` (see [`stream_code`]).
    /// The peer's next read fails with a reset, which it treats as a cancelled
    /// request; merely dropping a half-written stream would finish it, and the
    /// peer would see a cut-off frame and disconnect us for a protocol violation.
    pub fn reset(&mut self, code: u32) {
        // Either half may already be closed (finished, or reset by the peer): fine.
        let _ = self.send.reset(code.into());
        let _ = self.recv.stop(code.into());
    }

    /// Sets the send priority of this stream against the connection's
    /// others (higher goes first; default 0). File blocks go below Raft.
    pub fn set_priority(&self, priority: i32) {
        // Only fails on a stream already closed, whose priority is moot.
        let _ = self.send.set_priority(priority);
    }

    /// Sends raw bytes (not a frame), e.g. a block's content after its
    /// header frame. `Bytes` go to quinn without a copy.
    pub async fn send_raw(&mut self, bytes: bytes::Bytes) -> Result<(), TransportError> {
        self.send
            .write_chunk(bytes)
            .await
            .map_err(|e| TransportError::ConnectionLost {
                peer: self.connection.peer,
                reason: e.to_string(),
            })
    }

    /// Receives at most `max` raw bytes, as they arrived (no copy); `None`
    /// once the peer finished its side.
    pub async fn recv_raw(&mut self, max: usize) -> Result<Option<bytes::Bytes>, TransportError> {
        match self.recv.read_chunk(max, true).await {
            Ok(chunk) => Ok(chunk.map(|chunk| chunk.bytes)),
            Err(e) => Err(TransportError::ConnectionLost {
                peer: self.connection.peer,
                reason: e.to_string(),
            }),
        }
    }

    /// The raw quinn halves, for streaming (e.g. a snapshot file with `tokio::io::copy`).
    pub fn into_parts(self) -> (quinn::SendStream, quinn::RecvStream) {
        (self.send, self.recv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_kinds_round_trip_through_their_byte() {
        for kind in StreamKind::ALL {
            assert_eq!(StreamKind::from_byte(kind as u8), Some(kind));
        }
        assert_eq!(StreamKind::from_byte(0), None);
        assert_eq!(StreamKind::from_byte(0xff), None);
    }
}
