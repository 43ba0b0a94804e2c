//! The cluster's own secrets in the log: the CA private key and the join
//! secret travel sealed under the secrets master key (storage's
//! `secret_box`, the same sealing as app secrets), so the log, every
//! snapshot and every member's state hold ciphertext only.
//!
//! The commands are the ones that carried them in the clear
//! (`SetClusterCa`, `SetJoinSecret`) with sealed bytes inside, so the log
//! format does not change and a data dir written before sealing still
//! starts: a record that is not sealed is read as it is.
//!
//! ```text
//!   CA key:      SetClusterCa.key_pem = "picloud-sealed/1:" ‖ base64(sealed)   (plain: "-----BEGIN …")
//!   join secret: SetJoinSecret.secret = sealed bytes                          (plain: exactly 32 bytes)
//!   sealed = secret_box::seal(app "", name "cluster_ca_key" | "join_secret")
//! ```
//!
//! No app can be named "" (app names are checked at the edge), so a sealed
//! cluster secret never opens as an app's secret or the other way round.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use picloud_storage::secret_box::{Keyring, NONCE_BYTES, SecretBoxError};

use crate::transport::token::SECRET_BYTES;

/// What a sealed CA key starts with inside `SetClusterCa.key_pem`.
pub const SEALED_KEY_PREFIX: &str = "picloud-sealed/1:";

/// The "app" the cluster's secrets are sealed under: no app has this name.
const CLUSTER_SCOPE: &str = "";
const CA_KEY_NAME: &str = "cluster_ca_key";
const JOIN_SECRET_NAME: &str = "join_secret";

/// Why a cluster secret in the log does not open here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Sealed under a master key this node does not hold, or damaged.
    #[error("cannot open the cluster's {what}: {source}")]
    Open {
        what: &'static str,
        source: SecretBoxError,
    },
    /// Opened, but not the shape the record must have.
    #[error("the cluster's {what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// This node was started without the secrets master key.
    #[error("this node has no secrets master key to seal or open the cluster's {what}")]
    NoKey { what: &'static str },
}

impl SealError {
    /// Sealed under a master key this node does not hold (the layers above
    /// answer `secret_key_mismatch`, as for app secrets).
    pub fn is_wrong_key(&self) -> bool {
        matches!(
            self,
            SealError::Open {
                source: SecretBoxError::WrongKey { .. },
                ..
            }
        )
    }
}

const CA_KEY: &str = "CA private key";
const JOIN_SECRET: &str = "join secret";

/// The keyring, or `NoKey` naming what it was needed for.
fn held<'a>(keyring: Option<&'a Keyring>, what: &'static str) -> Result<&'a Keyring, SealError> {
    keyring.ok_or(SealError::NoKey { what })
}

/// Seals the CA private key (PEM) for `SetClusterCa.key_pem`.
pub fn seal_ca_key(keyring: Option<&Keyring>, key_pem: &str) -> Result<String, SealError> {
    let sealed = held(keyring, CA_KEY)?.current().seal(
        CLUSTER_SCOPE,
        CA_KEY_NAME,
        key_pem.as_bytes(),
        rand::random::<[u8; NONCE_BYTES]>(),
    );
    Ok(format!("{SEALED_KEY_PREFIX}{}", STANDARD.encode(sealed)))
}

/// The CA private key (PEM) from what `SetClusterCa.key_pem` holds: sealed,
/// or the plain PEM an older node stored.
pub fn open_ca_key(keyring: Option<&Keyring>, stored: &str) -> Result<String, SealError> {
    let Some(encoded) = stored.strip_prefix(SEALED_KEY_PREFIX) else {
        return Ok(stored.to_string());
    };
    let malformed = |reason: String| SealError::Malformed {
        what: CA_KEY,
        reason,
    };
    let sealed = STANDARD
        .decode(encoded)
        .map_err(|e| malformed(format!("not base64: {e}")))?;
    let plain = held(keyring, CA_KEY)?
        .open(CLUSTER_SCOPE, CA_KEY_NAME, &sealed)
        .map_err(|source| SealError::Open {
            what: CA_KEY,
            source,
        })?;
    String::from_utf8(plain).map_err(|_| malformed("not UTF-8".to_string()))
}

/// Seals the join secret for `SetJoinSecret.secret`.
pub fn seal_join_secret(
    keyring: Option<&Keyring>,
    secret: &[u8; SECRET_BYTES],
) -> Result<Vec<u8>, SealError> {
    Ok(held(keyring, JOIN_SECRET)?.current().seal(
        CLUSTER_SCOPE,
        JOIN_SECRET_NAME,
        secret,
        rand::random::<[u8; NONCE_BYTES]>(),
    ))
}

/// The join secret from what `SetJoinSecret.secret` holds: sealed, or the
/// plain 32 bytes an older node stored (a sealed value is always longer).
pub fn open_join_secret(
    keyring: Option<&Keyring>,
    stored: &[u8],
) -> Result<[u8; SECRET_BYTES], SealError> {
    let plain = if stored.len() == SECRET_BYTES {
        stored.to_vec()
    } else {
        held(keyring, JOIN_SECRET)?
            .open(CLUSTER_SCOPE, JOIN_SECRET_NAME, stored)
            .map_err(|source| SealError::Open {
                what: JOIN_SECRET,
                source,
            })?
    };
    plain
        .as_slice()
        .try_into()
        .map_err(|_| SealError::Malformed {
            what: JOIN_SECRET,
            reason: format!("{} bytes, not {SECRET_BYTES}", plain.len()),
        })
}

#[cfg(test)]
mod tests {
    use picloud_storage::secret_box::MasterKey;

    use super::*;

    fn ring(byte: u8) -> Keyring {
        Keyring::new(MasterKey::from_bytes([byte; 32]), vec![])
    }

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

    #[test]
    fn the_ca_key_is_sealed_and_opens_with_the_same_key_only() {
        let sealed = seal_ca_key(Some(&ring(1)), PEM).expect("seal");
        assert!(sealed.starts_with(SEALED_KEY_PREFIX));
        assert!(
            !sealed.contains("MIGHAgEAMBMGByqGSM49"),
            "no PEM body inside"
        );
        assert_eq!(open_ca_key(Some(&ring(1)), &sealed).as_deref(), Ok(PEM));
        let wrong = open_ca_key(Some(&ring(2)), &sealed).expect_err("wrong key");
        assert!(wrong.is_wrong_key(), "{wrong:?}");
        let message = wrong.to_string();
        for id in [
            MasterKey::from_bytes([1; 32]).id_hex(),
            MasterKey::from_bytes([2; 32]).id_hex(),
        ] {
            assert!(message.contains(&id), "{message}");
        }
        // A keyring that still holds the sealing key as a previous one opens it.
        let rotated = Keyring::new(
            MasterKey::from_bytes([2; 32]),
            vec![MasterKey::from_bytes([1; 32])],
        );
        assert_eq!(open_ca_key(Some(&rotated), &sealed).as_deref(), Ok(PEM));
    }

    #[test]
    fn the_join_secret_is_sealed_and_opens_with_the_same_key_only() {
        let secret = [7u8; SECRET_BYTES];
        let sealed = seal_join_secret(Some(&ring(1)), &secret).expect("seal");
        assert_ne!(sealed.len(), SECRET_BYTES);
        assert!(!sealed.windows(SECRET_BYTES).any(|w| w == secret));
        assert_eq!(open_join_secret(Some(&ring(1)), &sealed), Ok(secret));
        assert!(
            open_join_secret(Some(&ring(2)), &sealed)
                .expect_err("wrong key")
                .is_wrong_key()
        );
        // Sealed for one name, it does not open as the other.
        let as_ca = format!("{SEALED_KEY_PREFIX}{}", STANDARD.encode(&sealed));
        let other = open_ca_key(Some(&ring(1)), &as_ca).expect_err("other name");
        assert!(
            matches!(
                other,
                SealError::Open {
                    source: SecretBoxError::Corrupt,
                    ..
                }
            ),
            "{other:?}"
        );
    }

    #[test]
    fn records_from_before_sealing_read_as_they_are() {
        assert_eq!(open_ca_key(Some(&ring(1)), PEM).as_deref(), Ok(PEM));
        assert_eq!(
            open_join_secret(Some(&ring(1)), &[9u8; SECRET_BYTES]),
            Ok([9u8; SECRET_BYTES])
        );
        assert!(matches!(
            open_ca_key(Some(&ring(1)), &format!("{SEALED_KEY_PREFIX}***")),
            Err(SealError::Malformed { .. })
        ));
        // Without a master key, old plain records still read; sealed ones say why not.
        assert_eq!(open_ca_key(None, PEM).as_deref(), Ok(PEM));
        let sealed = seal_ca_key(Some(&ring(1)), PEM).expect("seal");
        assert!(matches!(
            open_ca_key(None, &sealed),
            Err(SealError::NoKey { .. })
        ));
    }
}
