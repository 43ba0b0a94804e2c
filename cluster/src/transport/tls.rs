//! rustls configuration for the transport: mutual TLS between members and a
//! CA-pinning verifier for joiners. Reading a node id out of a verified
//! certificate is `cert_name`'s.
//!
//! Every builder gets the ring provider passed explicitly
//! (`builder_with_provider`) instead of relying on a process-wide default: the
//! binary also installs ring as the default for reqwest, and passing it here
//! means the transport neither needs that nor can end up with a second provider.
//!
//! ```text
//!   member ──ALPN picloud-peer/1, client cert──▶ member   both sides verify against the cluster CA
//!   joiner ──ALPN picloud-join/1, no cert──────▶ member   joiner pins the CA by its hash first
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, SignatureScheme};

use super::ca::{ClusterCa, NodeCertificate, ca_hash_of};

/// ALPN of member-to-member connections (mutual TLS).
pub const PEER_ALPN: &[u8] = b"picloud-peer/1";
/// ALPN of the join handshake (server-authenticated only).
pub const JOIN_ALPN: &[u8] = b"picloud-join/1";

/// The one crypto provider the transport uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(context: &str, error: impl std::fmt::Display) -> String {
    format!("{context}: {error}")
}

fn roots_with(ca_der: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca_der.clone())
        .map_err(|e| tls_error("cluster CA as trust anchor", e))?;
    Ok(Arc::new(roots))
}

/// The server side: presents `node_cert` (with the CA cert as chain, so a
/// joiner can pin it) and verifies any client certificate against the CA.
///
/// A client certificate is optional at the TLS layer only because the join
/// handshake arrives without one; the endpoint refuses a peer-ALPN connection
/// that presented none right after the handshake (see `endpoint`). A presented
/// certificate from another CA fails the handshake itself.
pub fn server_config(
    ca: &ClusterCa,
    node_cert: &NodeCertificate,
) -> Result<rustls::ServerConfig, String> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots_with(ca.cert_der())?, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_error("client verifier", e))?;
    let chain = vec![
        node_cert.cert_der().map_err(|e| e.to_string())?,
        ca.cert_der().clone(),
    ];
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("server protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, node_cert.key_der().map_err(|e| e.to_string())?)
        .map_err(|e| tls_error("server certificate", e))?;
    config.alpn_protocols = vec![PEER_ALPN.to_vec(), JOIN_ALPN.to_vec()];
    Ok(config)
}

/// The client side of a member connection: verifies the server against the CA
/// and presents `node_cert`.
pub fn peer_client_config(
    ca: &ClusterCa,
    node_cert: &NodeCertificate,
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(roots_with(ca.cert_der())?, provider.clone())
            .build()
            .map_err(|e| tls_error("server verifier", e))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("client protocol versions", e))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(
            vec![node_cert.cert_der().map_err(|e| e.to_string())?],
            node_cert.key_der().map_err(|e| e.to_string())?,
        )
        .map_err(|e| tls_error("client certificate", e))?;
    config.alpn_protocols = vec![PEER_ALPN.to_vec()];
    Ok(config)
}

/// The client side of a join: no client certificate, and a server verifier
/// that accepts only a chain whose CA hashes to `ca_hash`. The flag turns true
/// when a server's chain had no such CA, so the joiner can report exactly that.
pub fn join_client_config(
    ca_hash: &str,
) -> Result<(rustls::ClientConfig, Arc<AtomicBool>), String> {
    let provider = provider();
    let ca_mismatch = Arc::new(AtomicBool::new(false));
    let verifier = Arc::new(PinnedCaVerifier {
        ca_hash: ca_hash.to_string(),
        provider: provider.clone(),
        ca_mismatch: ca_mismatch.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("client protocol versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![JOIN_ALPN.to_vec()];
    Ok((config, ca_mismatch))
}

/// Verifies a server for a joiner that knows only the CA's hash (from the
/// token). The server sends its CA certificate in the chain; this verifier
/// finds the certificate whose SHA-256 is the pinned hash, and only then runs
/// the ordinary WebPKI verification with that certificate as the trust anchor.
/// Until this succeeds the joiner has sent nothing but a ClientHello, so a
/// server of another cluster (or an impostor) never sees the token's secret.
#[derive(Debug)]
struct PinnedCaVerifier {
    ca_hash: String,
    provider: Arc<CryptoProvider>,
    ca_mismatch: Arc<AtomicBool>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|cert| ca_hash_of(cert) == self.ca_hash)
        else {
            self.ca_mismatch.store(true, Ordering::SeqCst);
            return Err(rustls::Error::General(format!(
                "the server's cluster CA does not match the join token's CA hash {}",
                self.ca_hash
            )));
        };
        let roots = roots_with(&ca.clone().into_owned()).map_err(rustls::Error::General)?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(tls_error("server verifier", e)))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build_with_the_ring_provider() {
        let ca = ClusterCa::create().expect("ca");
        let cert = ca.issue_node_cert(1, &[]).expect("issue");
        server_config(&ca, &cert).expect("server config");
        peer_client_config(&ca, &cert).expect("client config");
        join_client_config(&ca.ca_hash()).expect("join config");
    }
}
