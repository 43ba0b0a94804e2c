//! The join handshake: how a node without a certificate gets one.
//!
//! ```text
//!   joiner                                              member
//!     │── QUIC, ALPN picloud-join/1, no client cert ───────▶│
//!     │◀─ server chain [node cert, CA cert] ────────────────│
//!     │  verify: sha256(CA cert) == token.ca_hash, and the node cert chains to it
//!     │── JoinRequest { secret, node addresses, names } ───▶│  secret compared in constant time
//!     │                                                     │  allocate(node id)  (the Raft log, later)
//!     │◀─ JoinResponse::Granted { node cert+key, CA } ──────│  or Refused { reason }
//! ```
//!
//! The joiner verifies the CA inside the TLS handshake, before it sends
//! anything, so the secret only ever goes to a member of the cluster the token
//! names. The request is "CSR-free": the member generates the joiner's key and
//! returns it inside the encrypted connection, which keeps the joiner free of
//! any certificate code. The grant also carries the CA key, so every member
//! can admit the next joiner (see `ClusterCa`).
//!
//! [`answer_join`] takes the id allocation as a callback so `Node` can
//! allocate ids through the Raft log (never reused) without this module
//! knowing about Raft.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JoinRequest")
            .field("node", &self.node)
            .field("names", &self.names)
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

/// A joined node's new identity, checked against the token.
#[derive(Debug)]
pub struct Joined {
    pub node_id: NodeId,
    pub ca: ClusterCa,
    pub node_cert: NodeCertificate,
}

/// Asks the member at `server` to admit this node. Binds a temporary
/// client-only UDP socket; the node binds its real endpoint with the result.
pub async fn join(
    server: SocketAddr,
    token: &JoinToken,
    node: NodeInfo,
    names: Vec<String>,
    timeout_ms: u64,
) -> Result<Joined, JoinError> {
    let attempt = join_once(server, token, node, names);
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
    node: NodeInfo,
    names: Vec<String>,
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
        let connection = match connecting.await {
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
                node,
                names,
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
            JoinResponse::Granted(grant) => check_grant(server, token, grant),
        }
    }
    .await;
    endpoint.wait_idle().await;
    result
}

/// The joiner's checks on a grant: the CA is the token's, the key fits it,
/// and the node certificate parses and names a node.
fn check_grant(
    server: SocketAddr,
    token: &JoinToken,
    grant: JoinGrant,
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
    Ok(Joined {
        node_id: node_cert.node_id,
        ca,
        node_cert,
    })
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

/// Serves one join connection: reads the request, checks the secret, asks
/// `allocate` for a node id, issues the certificate and answers.
///
/// `Ok` reports what was decided (granted or refused); `Err` is a join that
/// broke off (timeout, garbage, lost connection). The connection is closed
/// either way. Time is bounded by `timeout_ms` apart from `allocate`, which
/// the caller bounds (it goes through Raft).
pub async fn answer_join<F, Fut>(
    join: JoinConnection,
    ca: &ClusterCa,
    secret: &[u8; SECRET_BYTES],
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

    let decision = match check_join_request(secret, &request) {
        Err(refusal) => Err(refusal),
        Ok(()) => match allocate(&request).await {
            Err(message) => Err(JoinRefusal::Unavailable { message }),
            Ok(node_id) => match ca.issue_node_cert(node_id, &request.names) {
                Ok(node_cert) => Ok(JoinGrant {
                    node_cert,
                    ca_cert_pem: ca.cert_pem().to_string(),
                    ca_key_pem: ca.key_pem(),
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
    fn a_request_never_prints_its_secret() {
        let printed = format!("{:?}", request([0xab; SECRET_BYTES], vec![]));
        assert!(!printed.contains("171"), "{printed}");
    }
}
