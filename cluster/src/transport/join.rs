//! The join handshake: how a node without a certificate gets one.
//!
//! ```text
//!   joiner                                              member
//!     │── QUIC, ALPN picloud-join/1, no client cert ───────▶│
//!     │◀─ server chain [node cert, CA cert] ────────────────│
//!     │  verify: sha256(CA cert) == token.ca_hash, and the node cert chains to it
//!     │── JoinRequest { secret, node addresses, names,     │
//!     │                 key_id: Some(id) | None } ─────────▶│  secret compared in constant time
//!     │                                                     │  key id compared with the member's (KeyMismatch)
//!     │                                                     │  allocate(node id)  (the Raft log, later)
//!     │◀─ JoinResponse::Granted { node cert+key, CA,        │
//!     │        master_keys (only when key_id was None) } ───│  or Refused { reason }
//! ```
//!
//! The joiner verifies the CA inside the TLS handshake, before it sends
//! anything, so the secret only ever goes to a member of the cluster the token
//! names. The request is "CSR-free": the member generates the joiner's key and
//! returns it inside the encrypted connection, which keeps the joiner free of
//! any certificate code. The grant also carries the CA key, so every member
//! can admit the next joiner (see `ClusterCa`).
//!
//! The secrets master keys travel the same way: a joiner configured with no
//! key sends `key_id: None` and receives the cluster's current and previous
//! keys in the grant, over this channel only (they never enter the Raft
//! log, where the CA key and the join secret are sealed under them). A
//! joiner configured with a key sends its id, and a member holding another
//! key refuses it, naming both ids, before any node id is allocated.
//!
//! [`answer_join`] takes the id allocation as a callback so `Node` can
//! allocate ids through the Raft log (never reused) without this module
//! knowing about Raft.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use picloud_storage::secret_box::{Keyring, MasterKey};
use picloud_storage::{NodeId, NodeInfo};
use serde::{Deserialize, Serialize};

use super::ca::{CLUSTER_SERVER_NAME, CaError, ClusterCa, NodeCertificate, ca_hash_of};
use super::endpoint::{JoinConnection, close_code, describe_close};
use super::frame::{self, FrameError};
use super::tls;
use super::token::{JoinToken, SECRET_BYTES, secrets_equal};

/// Largest join request or response frame. The exchange is a few KiB and the
/// requester is not yet trusted, so the limit is far below member frames.
pub const JOIN_FRAME_BYTES_MAX: u32 = 64 * 1024;
/// Most certificate names a joiner may ask for.
pub const JOIN_NAMES_MAX: usize = 16;
/// Longest certificate name (a DNS name's maximum length).
pub const JOIN_NAME_BYTES_MAX: usize = 253;

/// What the joiner sends once it has verified the cluster's CA.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub secret: [u8; SECRET_BYTES],
    /// The joiner's HTTP and peer addresses, for the membership entry.
    pub node: NodeInfo,
    /// IP addresses or DNS names to put in the joiner's certificate.
    pub names: Vec<String>,
    /// The id of the secrets master key the joiner was started with; `None`
    /// asks for the cluster's keys in the grant.
    pub key_id: Option<String>,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JoinRequest")
            .field("node", &self.node)
            .field("names", &self.names)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why a member refused a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JoinRefusal {
    #[error("the join token's secret is wrong")]
    WrongSecret,
    #[error("the join request is invalid: {message}")]
    BadRequest { message: String },
    /// The member could not admit the node now (no leader, say); retry later.
    #[error("the cluster cannot admit a node now: {message}")]
    Unavailable { message: String },
    /// The joiner was started with a secrets master key that is not the
    /// cluster's: it could open none of the cluster's secrets.
    #[error(
        "this node's secrets master key (id {joiner_key_id}) is not the cluster's (id {cluster_key_id}): start it with the cluster's key, or with no key configured to receive the cluster's key at join"
    )]
    KeyMismatch {
        joiner_key_id: String,
        cluster_key_id: String,
    },
    /// The joiner asked for the cluster's master keys and this member holds none.
    #[error(
        "this member has no secrets master key to hand over; configure the joiner with the cluster's key"
    )]
    NoMasterKey,
}

impl JoinRefusal {
    /// Whether asking again (the same or another member) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, JoinRefusal::Unavailable { .. })
    }
}

/// The member's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JoinResponse {
    Granted(JoinGrant),
    Refused(JoinRefusal),
}

/// Everything a joiner needs to become a member.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinGrant {
    pub node_cert: NodeCertificate,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// The cluster's secrets master keys, when the joiner asked for them.
    pub master_keys: Option<GrantedKeys>,
}

/// The cluster's secrets master keys as a grant carries them (raw bytes;
/// never printed).
#[derive(Clone, Serialize, Deserialize)]
pub struct GrantedKeys {
    pub current: [u8; 32],
    pub previous: Vec<[u8; 32]>,
}

impl GrantedKeys {
    pub fn from_keyring(keyring: &Keyring) -> GrantedKeys {
        GrantedKeys {
            current: *keyring.current().bytes(),
            previous: keyring.previous().iter().map(|key| *key.bytes()).collect(),
        }
    }

    pub fn into_keyring(self) -> Keyring {
        Keyring::new(
            MasterKey::from_bytes(self.current),
            self.previous
                .into_iter()
                .map(MasterKey::from_bytes)
                .collect(),
        )
    }
}

impl std::fmt::Debug for GrantedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: the bytes are the keys.
        f.debug_struct("GrantedKeys")
            .field("current", &MasterKey::from_bytes(self.current).id_hex())
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl std::fmt::Debug for JoinGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinGrant")
            .field("node_id", &self.node_cert.node_id)
            .finish_non_exhaustive()
    }
}

/// What [`answer_join`] did, for the caller's log and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    Granted {
        node_id: NodeId,
        node: NodeInfo,
    },
    Refused {
        remote: SocketAddr,
        refusal: JoinRefusal,
    },
}

/// How long a joiner waits for its closed join connection to drain.
const JOIN_CLOSE_WAIT_MS: u64 = 500;

/// Most previous master keys a grant may carry (a joiner refuses more).
pub const GRANTED_PREVIOUS_KEYS_MAX: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The server is not a member of the token's cluster; the secret was not sent.
    #[error(
        "{addr} is not part of the cluster this token belongs to (CA hash {ca_hash}); the secret was not sent"
    )]
    CaMismatch { addr: SocketAddr, ca_hash: String },
    #[error("join handshake with {addr} failed: {reason}")]
    Handshake { addr: SocketAddr, reason: String },
    #[error("{addr} refused the join: {refusal}")]
    Refused {
        addr: SocketAddr,
        refusal: JoinRefusal,
    },
    #[error("join with {addr} did not finish within {waited_ms} ms")]
    Timeout { addr: SocketAddr, waited_ms: u64 },
    #[error("join with {addr}: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
    #[error("join with {addr}: the grant is unusable: {reason}")]
    BadGrant { addr: SocketAddr, reason: String },
    #[error("join setup: {message}")]
    Setup { message: String },
    #[error("issuing the certificate: {0}")]
    Certificate(#[from] CaError),
}

impl JoinError {
    /// Whether another attempt may succeed: the member was unreachable, slow,
    /// busy or without a leader. A wrong token, a foreign cluster, a key
    /// mismatch or a bad grant stay wrong however often it is asked.
    pub fn is_retryable(&self) -> bool {
        match self {
            JoinError::Handshake { .. }
            | JoinError::Timeout { .. }
            | JoinError::Protocol { .. } => true,
            JoinError::Refused { refusal, .. } => refusal.is_retryable(),
            JoinError::CaMismatch { .. }
            | JoinError::BadGrant { .. }
            | JoinError::Setup { .. }
            | JoinError::Certificate(_) => false,
        }
    }
}

/// A joined node's new identity, checked against the token.
#[derive(Debug)]
pub struct Joined {
    pub node_id: NodeId,
    pub ca: ClusterCa,
    pub node_cert: NodeCertificate,
    /// The cluster's master keys, when the request asked for them.
    pub master_keys: Option<Keyring>,
}

/// What one join attempt sends besides the token.
#[derive(Debug, Clone)]
pub struct JoinAsk {
    pub node: NodeInfo,
    pub names: Vec<String>,
    /// See [`JoinRequest::key_id`].
    pub key_id: Option<String>,
}

/// Asks the member at `server` to admit this node, once. Binds a temporary
/// client-only UDP socket; the node binds its real endpoint with the result.
/// The QUIC handshake is bounded by `connect_timeout_ms`, the whole attempt
/// by `timeout_ms`.
pub async fn join(
    server: SocketAddr,
    token: &JoinToken,
    ask: JoinAsk,
    connect_timeout_ms: u64,
    timeout_ms: u64,
) -> Result<Joined, JoinError> {
    let attempt = join_once(server, token, ask, connect_timeout_ms);
    tokio::time::timeout(Duration::from_millis(timeout_ms), attempt)
        .await
        .map_err(|_| JoinError::Timeout {
            addr: server,
            waited_ms: timeout_ms,
        })?
}

async fn join_once(
    server: SocketAddr,
    token: &JoinToken,
    ask: JoinAsk,
    connect_timeout_ms: u64,
) -> Result<Joined, JoinError> {
    let setup = |message: String| JoinError::Setup { message };
    let (tls_config, ca_mismatch) = tls::join_client_config(&token.ca_hash).map_err(setup)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls_config))
        .map_err(|e| setup(e.to_string()))?;
    let client_config = quinn::ClientConfig::new(Arc::new(crypto));
    let local: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let endpoint = quinn::Endpoint::client(local).map_err(|e| setup(e.to_string()))?;
    let result = async {
        let connecting = endpoint
            .connect_with(client_config, server, CLUSTER_SERVER_NAME)
            .map_err(|e| setup(e.to_string()))?;
        let connected =
            tokio::time::timeout(Duration::from_millis(connect_timeout_ms), connecting).await;
        let Ok(connected) = connected else {
            return Err(JoinError::Handshake {
                addr: server,
                reason: format!("no answer within {connect_timeout_ms} ms"),
            });
        };
        let connection = match connected {
            Ok(connection) => connection,
            Err(_) if ca_mismatch.load(Ordering::SeqCst) => {
                return Err(JoinError::CaMismatch {
                    addr: server,
                    ca_hash: token.ca_hash.clone(),
                });
            }
            Err(e) => {
                return Err(JoinError::Handshake {
                    addr: server,
                    reason: describe_close(&e),
                });
            }
        };
        let exchange = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            let request = JoinRequest {
                secret: token.secret,
                node: ask.node,
                names: ask.names,
                key_id: ask.key_id.clone(),
            };
            frame::write_message(&mut send, &request, JOIN_FRAME_BYTES_MAX)
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            frame::read_message::<_, JoinResponse>(&mut recv, JOIN_FRAME_BYTES_MAX)
                .await
                .map_err(|e| match e {
                    FrameError::Io(_) => connection
                        .close_reason()
                        .map(|c| describe_close(&c))
                        .unwrap_or_else(|| e.to_string()),
                    other => other.to_string(),
                })?
                .ok_or_else(|| "the server sent no answer".to_string())
        };
        let response = exchange.await.map_err(|reason| JoinError::Protocol {
            addr: server,
            reason,
        });
        // Closing tells the member it may drop its side; the answer is read.
        connection.close(close_code::DONE.into(), b"join done");
        match response? {
            JoinResponse::Refused(refusal) => Err(JoinError::Refused {
                addr: server,
                refusal,
            }),
            JoinResponse::Granted(grant) => check_grant(server, token, grant, ask.key_id.is_none()),
        }
    }
    .await;
    // Lets the close reach the member, bounded. A handshake that got no
    // answer has nothing to deliver, and would hold the endpoint until
    // QUIC's idle timeout: the next attempt should not wait for it.
    if !matches!(result, Err(JoinError::Handshake { .. })) {
        let _ = tokio::time::timeout(
            Duration::from_millis(JOIN_CLOSE_WAIT_MS),
            endpoint.wait_idle(),
        )
        .await;
    }
    result
}

/// The joiner's checks on a grant: the CA is the token's, the key fits it,
/// the node certificate parses and names a node, and the master keys are
/// there when they were asked for (`keys_asked`).
fn check_grant(
    server: SocketAddr,
    token: &JoinToken,
    grant: JoinGrant,
    keys_asked: bool,
) -> Result<Joined, JoinError> {
    let bad = |reason: String| JoinError::BadGrant {
        addr: server,
        reason,
    };
    let ca = ClusterCa::from_pem(&grant.ca_cert_pem, &grant.ca_key_pem)
        .map_err(|e| bad(e.to_string()))?;
    if ca_hash_of(ca.cert_der()) != token.ca_hash {
        return Err(bad("the granted CA is not the token's CA".into()));
    }
    let node_cert = NodeCertificate::from_pem(&grant.node_cert.cert_pem, &grant.node_cert.key_pem)
        .map_err(|e| bad(e.to_string()))?;
    if node_cert.node_id != grant.node_cert.node_id {
        return Err(bad(format!(
            "the certificate names node {} but the grant says node {}",
            node_cert.node_id, grant.node_cert.node_id
        )));
    }
    let master_keys = match (keys_asked, grant.master_keys) {
        (true, None) => {
            return Err(bad(
                "the cluster's secrets master keys were asked for and not sent".into(),
            ));
        }
        (_, Some(keys)) if keys.previous.len() > GRANTED_PREVIOUS_KEYS_MAX => {
            return Err(bad(format!(
                "{} previous master keys; at most {GRANTED_PREVIOUS_KEYS_MAX}",
                keys.previous.len()
            )));
        }
        // Keys not asked for are not taken: this node keeps its own.
        (false, _) => None,
        (true, Some(keys)) => Some(keys.into_keyring()),
    };
    Ok(Joined {
        node_id: node_cert.node_id,
        ca,
        node_cert,
        master_keys,
    })
}

/// The member's check of the joiner's master key against its own, after the
/// secret was checked: `Ok(Some(keys))` when the joiner asked for the keys.
/// A member without keys (lower-layer tests) admits joiners that bring their
/// own. Pure, so the rules are unit-tested.
pub fn check_join_key(
    member_keys: Option<&Keyring>,
    request: &JoinRequest,
) -> Result<Option<GrantedKeys>, JoinRefusal> {
    match (&request.key_id, member_keys) {
        (Some(joiner), Some(keys)) if *joiner != keys.current().id_hex() => {
            Err(JoinRefusal::KeyMismatch {
                joiner_key_id: joiner.clone(),
                cluster_key_id: keys.current().id_hex(),
            })
        }
        (Some(_), _) => Ok(None),
        (None, Some(keys)) => Ok(Some(GrantedKeys::from_keyring(keys))),
        (None, None) => Err(JoinRefusal::NoMasterKey),
    }
}

/// Checks a join request before anything is allocated: the secret (constant
/// time) first, then the requested names. Pure, so the rules are unit-tested.
pub fn check_join_request(
    expected_secret: &[u8; SECRET_BYTES],
    request: &JoinRequest,
) -> Result<(), JoinRefusal> {
    if !secrets_equal(expected_secret, &request.secret) {
        return Err(JoinRefusal::WrongSecret);
    }
    if request.names.len() > JOIN_NAMES_MAX {
        return Err(JoinRefusal::BadRequest {
            message: format!(
                "{} certificate names; at most {JOIN_NAMES_MAX}",
                request.names.len()
            ),
        });
    }
    if let Some(name) = request
        .names
        .iter()
        .find(|n| n.is_empty() || n.len() > JOIN_NAME_BYTES_MAX)
    {
        return Err(JoinRefusal::BadRequest {
            message: format!("certificate name {name:?} is empty or too long"),
        });
    }
    Ok(())
}

/// Serves one join connection: reads the request, checks the secret and the
/// joiner's master key against `master_keys`, asks `allocate` for a node id,
/// issues the certificate and answers (with the master keys when asked).
///
/// `Ok` reports what was decided (granted or refused); `Err` is a join that
/// broke off (timeout, garbage, lost connection). The connection is closed
/// either way. Time is bounded by `timeout_ms` apart from `allocate`, which
/// the caller bounds (it goes through Raft).
pub async fn answer_join<F, Fut>(
    join: JoinConnection,
    ca: &ClusterCa,
    secret: &[u8; SECRET_BYTES],
    master_keys: Option<&Keyring>,
    timeout_ms: u64,
    allocate: F,
) -> Result<JoinOutcome, JoinError>
where
    F: FnOnce(&JoinRequest) -> Fut,
    Fut: Future<Output = Result<NodeId, String>>,
{
    let connection = join.connection;
    let remote = connection.remote_address();
    let timeout = Duration::from_millis(timeout_ms);
    let protocol = |reason: String| JoinError::Protocol {
        addr: remote,
        reason,
    };
    let read_request = async {
        let (send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(|e| describe_close(&e))?;
        let request = frame::read_message::<_, JoinRequest>(&mut recv, JOIN_FRAME_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the joiner sent no request".to_string())?;
        Ok::<_, String>((send, request))
    };
    let (mut send, request) = match tokio::time::timeout(timeout, read_request).await {
        Err(_) => {
            connection.close(close_code::PROTOCOL_VIOLATION.into(), b"join timed out");
            return Err(JoinError::Timeout {
                addr: remote,
                waited_ms: timeout_ms,
            });
        }
        Ok(Err(reason)) => {
            tracing::warn!(%remote, %reason, "refused a join: bad request");
            connection.close(close_code::PROTOCOL_VIOLATION.into(), reason.as_bytes());
            return Err(protocol(reason));
        }
        Ok(Ok(read)) => read,
    };

    let checked =
        check_join_request(secret, &request).and_then(|()| check_join_key(master_keys, &request));
    let decision = match checked {
        Err(refusal) => Err(refusal),
        Ok(granted_keys) => match allocate(&request).await {
            Err(message) => Err(JoinRefusal::Unavailable { message }),
            Ok(node_id) => match ca.issue_node_cert(node_id, &request.names) {
                Ok(node_cert) => Ok(JoinGrant {
                    node_cert,
                    ca_cert_pem: ca.cert_pem().to_string(),
                    ca_key_pem: ca.key_pem(),
                    master_keys: granted_keys,
                }),
                Err(e) => Err(JoinRefusal::BadRequest {
                    message: e.to_string(),
                }),
            },
        },
    };
    let (response, outcome) = match decision {
        Ok(grant) => {
            let node_id = grant.node_cert.node_id;
            tracing::info!(%remote, node_id, "admitted a joining node");
            (
                JoinResponse::Granted(grant),
                JoinOutcome::Granted {
                    node_id,
                    node: request.node.clone(),
                },
            )
        }
        Err(refusal) => {
            tracing::warn!(%remote, %refusal, "refused a join");
            (
                JoinResponse::Refused(refusal.clone()),
                JoinOutcome::Refused { remote, refusal },
            )
        }
    };
    let answer = async {
        frame::write_message(&mut send, &response, JOIN_FRAME_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        // Closing now could discard the answer in flight; the joiner closes
        // once it has read it.
        connection.closed().await;
        Ok::<_, String>(())
    };
    let answered = tokio::time::timeout(timeout, answer).await;
    let code = match outcome {
        JoinOutcome::Granted { .. } => close_code::DONE,
        JoinOutcome::Refused { .. } => close_code::JOIN_REFUSED,
    };
    connection.close(code.into(), b"join answered");
    match answered {
        Err(_) => Err(JoinError::Timeout {
            addr: remote,
            waited_ms: timeout_ms,
        }),
        Ok(Err(reason)) => Err(protocol(reason)),
        Ok(Ok(())) => Ok(outcome),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(secret: [u8; SECRET_BYTES], names: Vec<String>) -> JoinRequest {
        JoinRequest {
            secret,
            node: NodeInfo::default(),
            names,
            key_id: None,
        }
    }

    #[test]
    fn join_requests_are_checked_secret_first() {
        let secret = [7u8; SECRET_BYTES];
        let cases: Vec<(JoinRequest, Result<(), JoinRefusal>)> = vec![
            (request(secret, vec!["10.0.0.2".into()]), Ok(())),
            (
                request([8u8; SECRET_BYTES], vec!["x".repeat(1000)]),
                Err(JoinRefusal::WrongSecret),
            ),
            (
                request(secret, vec!["a".into(); JOIN_NAMES_MAX + 1]),
                Err(JoinRefusal::BadRequest {
                    message: format!("17 certificate names; at most {JOIN_NAMES_MAX}"),
                }),
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(
                check_join_request(&secret, &request),
                expected,
                "{request:?}"
            );
        }
        assert!(matches!(
            check_join_request(&secret, &request(secret, vec![String::new()])),
            Err(JoinRefusal::BadRequest { .. })
        ));
    }

    #[test]
    fn the_joiners_key_is_checked_against_the_members() {
        let ring = |byte: u8, previous: Vec<u8>| {
            Keyring::new(
                MasterKey::from_bytes([byte; 32]),
                previous
                    .into_iter()
                    .map(|b| MasterKey::from_bytes([b; 32]))
                    .collect(),
            )
        };
        let id = |byte: u8| MasterKey::from_bytes([byte; 32]).id_hex();
        let mut asks = request([1; SECRET_BYTES], vec![]);
        let member = ring(1, vec![2]);
        // No key configured: the member's current and previous keys go along.
        let granted = check_join_key(Some(&member), &asks)
            .expect("granted")
            .expect("keys");
        let received = granted.clone().into_keyring();
        assert_eq!(received.current().id_hex(), id(1));
        assert_eq!(received.previous_ids(), vec![id(2)]);
        assert!(!format!("{granted:?}").contains("1, 1, 1"), "{granted:?}");
        assert_eq!(
            check_join_key(None, &asks).map(|k| k.is_some()),
            Err(JoinRefusal::NoMasterKey)
        );
        // The same key: admitted, and no keys are sent.
        asks.key_id = Some(id(1));
        assert!(matches!(check_join_key(Some(&member), &asks), Ok(None)));
        // Another key (even the member's previous one): refused, naming both.
        asks.key_id = Some(id(2));
        let refusal = check_join_key(Some(&member), &asks).expect_err("mismatch");
        let message = refusal.to_string();
        assert!(
            message.contains(&id(1)) && message.contains(&id(2)),
            "{message}"
        );
        assert!(!refusal.is_retryable());
    }

    #[test]
    fn a_request_never_prints_its_secret() {
        let printed = format!("{:?}", request([0xab; SECRET_BYTES], vec![]));
        assert!(!printed.contains("171"), "{printed}");
    }
}
