//! The cluster certificate authority: one self-signed ECDSA P-256 CA per cluster
//! that signs every node's certificate.
//!
//! Everything here is pure (key generation, signing, PEM in and out) apart from
//! [`ClusterCa::store`] / [`ClusterCa::load`] and their [`NodeCertificate`]
//! counterparts, which read and write PEM files in a directory.
//!
//! Why a private CA and not per-node pinning: a cluster grows and shrinks, and a
//! node must accept a peer it has never seen (a fresh joiner) as long as the
//! cluster vouched for it. Signing by one CA is that vouching; the node id lives
//! in the certificate's common name so a peer's identity comes out of the
//! verified handshake, not out of anything the peer says later.

use std::path::{Path, PathBuf};

use picloud_storage::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::cert_name::{self, node_common_name};

/// File name of the CA certificate inside the directory given to [`ClusterCa::store`].
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of a node's certificate inside the directory given to [`NodeCertificate::store`].
pub const NODE_CERT_FILE: &str = "node.pem";
/// File name of a node's private key (mode 0600).
pub const NODE_KEY_FILE: &str = "node.key";

/// The DNS name every node certificate carries and every peer connection asks
/// for. Nodes are reached by addresses that change (DHCP on a Pi), so a peer's
/// identity is its CA signature plus the node id in its common name; the TLS
/// server name is only a constant the verifier can check.
pub const CLUSTER_SERVER_NAME: &str = "picloud-cluster";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("certificate generation: {source}")]
    Generate { source: rcgen::Error },
    #[error("certificate name {name:?} is neither an IP address nor a DNS name")]
    BadName { name: String },
}

fn io_error(path: &Path, source: std::io::Error) -> CaError {
    CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn invalid(path: &Path, message: impl ToString) -> CaError {
    CaError::Invalid {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn generate_error(source: rcgen::Error) -> CaError {
    CaError::Generate { source }
}

/// The cluster's CA: its certificate and the key that signs node certificates.
///
/// Every member holds the key (it arrives with the join grant) so that a joiner
/// can be admitted through any member, as the issue asks. A member's compromise
/// already exposes all replicated data, so sharing the key adds no new exposure.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ClusterCa")
            .field("ca_hash", &self.ca_hash())
            .finish_non_exhaustive()
    }
}

/// The CA's parameters are a function of its key, so [`ClusterCa::load`] can
/// rebuild the issuer from `ca.key` alone. The common name carries a digest of
/// the public key: two clusters' CAs then have different names, and a
/// certificate from the wrong cluster fails as "unknown issuer" instead of the
/// vaguer "bad signature".
fn ca_params(key: &KeyPair) -> CertificateParams {
    let digest = hex(&Sha256::digest(key.public_key_raw()));
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("PiCloud cluster CA {}", &digest[..16]),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl ClusterCa {
    /// Creates a new self-signed CA with a fresh ECDSA P-256 key.
    pub fn create() -> Result<ClusterCa, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_error)?;
        let params = ca_params(&key);
        let cert = params.self_signed(&key).map_err(generate_error)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Rebuilds a CA from its PEM certificate and key (what [`ClusterCa::store`]
    /// writes, or what a join grant carries). Checks that they belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, CaError> {
        Self::from_pem_at(cert_pem, key_pem, Path::new("<pem>"))
    }

    fn from_pem_at(cert_pem: &str, key_pem: &str, origin: &Path) -> Result<ClusterCa, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid(origin, e))?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(invalid(origin, "the CA key is not ECDSA P-256"));
        }
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(origin, format!("CA certificate PEM: {e}")))?;
        let params = ca_params(&key);
        let expected_name = params
            .distinguished_name
            .get(&DnType::CommonName)
            .and_then(|value| match value {
                rcgen::DnValue::Utf8String(s) => Some(s.clone()),
                _ => None,
            });
        let actual_name = cert_name::common_name(&cert_der).map_err(|e| invalid(origin, e))?;
        if expected_name.as_deref() != Some(actual_name.as_str()) {
            return Err(invalid(
                origin,
                format!("the CA certificate ({actual_name}) does not belong to this key"),
            ));
        }
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`, each durably.
    pub fn store(&self, dir: &Path) -> Result<(), CaError> {
        write_durably(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_durably(
            &dir.join(CA_KEY_FILE),
            self.issuer.key().serialize_pem().as_bytes(),
            0o600,
        )
    }

    /// Reads the CA that [`ClusterCa::store`] wrote into `dir`.
    pub fn load(dir: &Path) -> Result<ClusterCa, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| io_error(&cert_path, e))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| io_error(&key_path, e))?;
        Self::from_pem_at(&cert_pem, &key_pem, dir)
    }

    /// Whether `dir` holds a stored CA (both files).
    pub fn exists(dir: &Path) -> bool {
        dir.join(CA_CERT_FILE).is_file() && dir.join(CA_KEY_FILE).is_file()
    }

    /// SHA-256 of the CA certificate's DER, lower-case hex: what a join token pins.
    pub fn ca_hash(&self) -> String {
        ca_hash_of(&self.cert_der)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA key as PEM, for the join grant (see the type's docs for why members share it).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a certificate for node `node_id` with a fresh key, valid for
    /// `names` (IP addresses or DNS names), `localhost` and [`CLUSTER_SERVER_NAME`],
    /// usable both as a TLS server and as a TLS client.
    pub fn issue_node_cert(
        &self,
        node_id: NodeId,
        names: &[String],
    ) -> Result<NodeCertificate, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_error)?;
        let mut all_names: Vec<String> = Vec::with_capacity(names.len() + 2);
        for name in names
            .iter()
            .map(String::as_str)
            .chain(["localhost", CLUSTER_SERVER_NAME])
        {
            if !all_names.iter().any(|n| n == name) {
                all_names.push(name.to_string());
            }
        }
        // `CertificateParams::new` turns IP literals into IP SANs and the rest
        // into DNS SANs, accepting any ASCII; check DNS syntax here so a typo
        // fails now with the culprit named, not later as an unverifiable peer.
        for name in &all_names {
            let is_ip = name.parse::<std::net::IpAddr>().is_ok();
            if !is_ip && DnsName::try_from(name.as_str()).is_err() {
                return Err(CaError::BadName { name: name.clone() });
            }
        }
        let mut params = CertificateParams::new(all_names).map_err(generate_error)?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, node_common_name(node_id));
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        // A random positive serial: re-issuing for the same node id (a
        // certificate renewal) must not produce a duplicate serial.
        let mut serial: [u8; 16] = rand::random();
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate_error)?;
        Ok(NodeCertificate {
            node_id,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A node's certificate and private key, as PEM.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeCertificate {
    pub node_id: NodeId,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("NodeCertificate")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl NodeCertificate {
    /// Builds a node certificate from PEM, taking the node id from the certificate's common name.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<NodeCertificate, CaError> {
        Self::from_pem_at(cert_pem, key_pem, Path::new("<pem>"))
    }

    fn from_pem_at(
        cert_pem: &str,
        key_pem: &str,
        origin: &Path,
    ) -> Result<NodeCertificate, CaError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid(origin, format!("node certificate PEM: {e}")))?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| invalid(origin, format!("node key PEM: {e}")))?;
        let node_id = cert_name::node_id_of(&der).map_err(|e| invalid(origin, e))?;
        Ok(NodeCertificate {
            node_id,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// Writes `node.pem` and `node.key` (mode 0600) into `dir`, each durably.
    pub fn store(&self, dir: &Path) -> Result<(), CaError> {
        write_durably(&dir.join(NODE_CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_durably(&dir.join(NODE_KEY_FILE), self.key_pem.as_bytes(), 0o600)
    }

    /// Reads what [`NodeCertificate::store`] wrote into `dir`.
    pub fn load(dir: &Path) -> Result<NodeCertificate, CaError> {
        let cert_path = dir.join(NODE_CERT_FILE);
        let key_path = dir.join(NODE_KEY_FILE);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| io_error(&cert_path, e))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| io_error(&key_path, e))?;
        Self::from_pem_at(&cert_pem, &key_pem, dir)
    }

    pub(crate) fn cert_der(&self) -> Result<CertificateDer<'static>, CaError> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| invalid(Path::new("<node certificate>"), e))
    }

    pub(crate) fn key_der(&self) -> Result<PrivateKeyDer<'static>, CaError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| invalid(Path::new("<node key>"), e))
    }
}

/// SHA-256 of a certificate's DER, lower-case hex.
pub fn ca_hash_of(cert_der: &[u8]) -> String {
    hex(&Sha256::digest(cert_der))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Writes `bytes` to `path` through a temp file created with `mode`, fsyncs
/// it, renames it into place and fsyncs the directory, so a crash leaves
/// either the old file or the new one, and a key is never world-readable even
/// for a moment.
fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_round_trips_through_files_with_a_private_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::create().expect("create");
        ca.store(dir.path()).expect("store");
        assert!(ClusterCa::exists(dir.path()));
        let mode = |name: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.path().join(name))
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        let loaded = ClusterCa::load(dir.path()).expect("load");
        assert_eq!(loaded.ca_hash(), ca.ca_hash());
        assert_eq!(loaded.ca_hash().len(), 64);
        // The loaded CA still signs certificates that carry the node id.
        let cert = loaded
            .issue_node_cert(7, &["10.0.0.7".into(), "pi7.lan".into()])
            .expect("issue");
        assert_eq!(cert.node_id, 7);
        let der = cert.cert_der().expect("der");
        assert_eq!(cert_name::node_id_of(&der).expect("node id"), 7);
    }

    #[test]
    fn a_key_from_another_ca_is_refused_on_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ClusterCa::create().expect("create");
        let b = ClusterCa::create().expect("create");
        assert_ne!(a.ca_hash(), b.ca_hash());
        let err = ClusterCa::from_pem(a.cert_pem(), &b.key_pem()).expect_err("mismatch");
        assert!(err.to_string().contains("does not belong"), "{err}");
        a.store(dir.path()).expect("store");
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).expect("remove");
        assert!(matches!(
            ClusterCa::load(dir.path()),
            Err(CaError::Io { .. })
        ));
    }

    #[test]
    fn node_certificates_round_trip_and_bad_names_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::create().expect("create");
        let cert = ca.issue_node_cert(3, &[]).expect("issue");
        cert.store(dir.path()).expect("store");
        let loaded = NodeCertificate::load(dir.path()).expect("load");
        assert_eq!(loaded, cert);
        let err = ca
            .issue_node_cert(3, &["not a name!".into()])
            .expect_err("bad name");
        assert!(err.to_string().contains("not a name!"), "{err}");
    }
}
