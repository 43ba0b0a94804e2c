//! Sealing app secrets before they enter the Raft log.
//!
//! XChaCha20-Poly1305 under the cluster's master key, a fresh 24-byte nonce
//! per value (the caller draws it: this crate takes no randomness), and the
//! app and secret name bound as associated data, so a sealed value moved to
//! another app or name does not open. A sealed value names the key it was
//! sealed with (the first 8 bytes of the key's SHA-256), so a node with the
//! wrong master key says so instead of returning garbage.
//!
//! ```text
//! sealed = version (1) ‖ key id (8) ‖ nonce (24) ‖ ciphertext ‖ tag (16)
//! aad    = "picloud-secret/1" ‖ 0 ‖ app ‖ 0 ‖ name
//! ```

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const KEY_ID_BYTES: usize = 8;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 24;
const HEADER_BYTES: usize = 1 + KEY_ID_BYTES + NONCE_BYTES;
const TAG_BYTES: usize = 16;

/// The cluster's 32-byte master key.
#[derive(Clone)]
pub struct MasterKey {
    key: [u8; 32],
    id: [u8; KEY_ID_BYTES],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "MasterKey({})", self.id_hex())
    }
}

/// Why a sealed value did not open (its code is
/// `picloud_actors::error::secret_code`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretBoxError {
    #[error(
        "the secret was sealed with master key {sealed_with}, this node has {have}: start it with the cluster's PICLOUD_SECRET_KEY"
    )]
    WrongKey { sealed_with: String, have: String },
    #[error("the sealed secret is damaged or was moved to another app or name")]
    Corrupt,
    #[error("unknown sealed secret format {0}")]
    Version(u8),
}

impl MasterKey {
    pub fn from_bytes(key: [u8; 32]) -> MasterKey {
        let digest = Sha256::digest(key);
        let mut id = [0u8; KEY_ID_BYTES];
        id.copy_from_slice(&digest[..KEY_ID_BYTES]);
        MasterKey { key, id }
    }

    /// The key itself: only for writing the key file and for handing the
    /// cluster's keys to a joining node inside the join's TLS channel.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The key's public identifier (hex of the first 8 bytes of its SHA-256).
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// Seals `plaintext` as secret `name` of `app`. `nonce` must never repeat
    /// under this key (draw 24 random bytes per call).
    pub fn seal(
        &self,
        app: &str,
        name: &str,
        plaintext: &[u8],
        nonce: [u8; NONCE_BYTES],
    ) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.key).into());
        let aad = associated_data(app, name);
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Encryption fails only for inputs beyond 256 GiB.
            .unwrap_or_default();
        let mut sealed = Vec::with_capacity(HEADER_BYTES + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&self.id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens what [`MasterKey::seal`] made for the same app and name.
    pub fn open(&self, app: &str, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        if sealed.len() < HEADER_BYTES + TAG_BYTES {
            return Err(SecretBoxError::Corrupt);
        }
        if sealed[0] != VERSION {
            return Err(SecretBoxError::Version(sealed[0]));
        }
        let key_id = &sealed[1..1 + KEY_ID_BYTES];
        if key_id != self.id {
            return Err(SecretBoxError::WrongKey {
                sealed_with: hex(key_id),
                have: self.id_hex(),
            });
        }
        let nonce = XNonce::from_slice(&sealed[1 + KEY_ID_BYTES..HEADER_BYTES]);
        let cipher = XChaCha20Poly1305::new((&self.key).into());
        let aad = associated_data(app, name);
        cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[HEADER_BYTES..],
                    aad: &aad,
                },
            )
            .map_err(|_| SecretBoxError::Corrupt)
    }
}

/// The master keys a node holds: the current one seals, and each key opens
/// what it sealed, so values sealed under a previous key stay readable until
/// `picloud secrets rotate-key` re-seals them.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Keyring {
        Keyring { current, previous }
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    pub fn previous(&self) -> &[MasterKey] {
        &self.previous
    }

    /// Every key held, the current one first.
    fn keys(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }

    /// Whether this ring holds the key with id `key_id` (hex).
    pub fn holds(&self, key_id: &str) -> bool {
        self.keys().any(|key| key.id_hex() == key_id)
    }

    /// The ids of the previous keys, in order.
    pub fn previous_ids(&self) -> Vec<String> {
        self.previous.iter().map(MasterKey::id_hex).collect()
    }

    /// Opens `sealed` with whichever held key sealed it; `WrongKey` (naming
    /// every key this node holds) when it holds none of them.
    pub fn open(&self, app: &str, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        let Some(sealed_with) = sealed_key_id(sealed) else {
            return self.current.open(app, name, sealed);
        };
        let key = self.keys().find(|key| key.id_hex() == sealed_with);
        match key {
            Some(key) => key.open(app, name, sealed),
            None => Err(SecretBoxError::WrongKey {
                sealed_with,
                have: self.describe(),
            }),
        }
    }

    /// `"<current id>"`, or `"<current id> (previous: <id>, ...)"`.
    pub fn describe(&self) -> String {
        if self.previous.is_empty() {
            return self.current.id_hex();
        }
        format!(
            "{} (previous: {})",
            self.current.id_hex(),
            self.previous_ids().join(", ")
        )
    }
}

/// The id of the key `sealed` names (hex), if it is long enough to name one.
pub fn sealed_key_id(sealed: &[u8]) -> Option<String> {
    sealed.get(1..1 + KEY_ID_BYTES).map(hex)
}

fn associated_data(app: &str, name: &str) -> Vec<u8> {
    let mut aad = b"picloud-secret/1\0".to_vec();
    aad.extend_from_slice(app.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAINTEXT: &[u8] = b"sk_live_do_not_leak_4242";

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    #[test]
    fn sealed_values_open_for_the_same_app_and_name_only() {
        let master = key(7);
        let sealed = master.seal("shop", "stripe", PLAINTEXT, [1; NONCE_BYTES]);
        assert_eq!(
            master.open("shop", "stripe", &sealed).as_deref(),
            Ok(PLAINTEXT)
        );
        // The plaintext is nowhere in the sealed bytes.
        assert!(!sealed.windows(PLAINTEXT.len()).any(|w| w == PLAINTEXT));
        // Bound to app and name (including the split between them).
        assert_eq!(
            master.open("shop2", "stripe", &sealed),
            Err(SecretBoxError::Corrupt)
        );
        assert_eq!(
            master.open("shop", "stripe2", &sealed),
            Err(SecretBoxError::Corrupt)
        );
        assert_eq!(
            master.open("shops", "tripe", &sealed),
            Err(SecretBoxError::Corrupt)
        );
    }

    #[test]
    fn the_wrong_key_is_named_not_decrypted() {
        let sealed = key(7).seal("shop", "stripe", PLAINTEXT, [1; NONCE_BYTES]);
        match key(8).open("shop", "stripe", &sealed) {
            Err(SecretBoxError::WrongKey { sealed_with, have }) => {
                assert_eq!(sealed_with, key(7).id_hex());
                assert_eq!(have, key(8).id_hex());
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !format!("{:?}", key(7)).contains("0707"),
            "Debug hides the key"
        );
    }

    #[test]
    fn tampering_and_truncation_are_detected() {
        let master = key(7);
        let sealed = master.seal("shop", "stripe", PLAINTEXT, [2; NONCE_BYTES]);
        for index in [HEADER_BYTES, sealed.len() - 1, 1 + KEY_ID_BYTES] {
            let mut bad = sealed.clone();
            bad[index] ^= 1;
            assert_eq!(
                master.open("shop", "stripe", &bad),
                Err(SecretBoxError::Corrupt),
                "byte {index}"
            );
        }
        assert_eq!(
            master.open("shop", "stripe", &sealed[..20]),
            Err(SecretBoxError::Corrupt)
        );
        let mut version = sealed.clone();
        version[0] = 9;
        assert_eq!(
            master.open("shop", "stripe", &version),
            Err(SecretBoxError::Version(9))
        );
    }

    #[test]
    fn a_keyring_opens_with_the_key_that_sealed() {
        let old = key(7).seal("shop", "stripe", PLAINTEXT, [1; NONCE_BYTES]);
        let new = key(8).seal("shop", "stripe", PLAINTEXT, [2; NONCE_BYTES]);
        let ring = Keyring::new(key(8), vec![key(7)]);
        assert_eq!(ring.open("shop", "stripe", &old).as_deref(), Ok(PLAINTEXT));
        assert_eq!(ring.open("shop", "stripe", &new).as_deref(), Ok(PLAINTEXT));
        assert_eq!(sealed_key_id(&old), Some(key(7).id_hex()));
        let only_new = Keyring::new(key(8), vec![]);
        match only_new.open("shop", "stripe", &old) {
            Err(SecretBoxError::WrongKey { sealed_with, have }) => {
                assert_eq!(sealed_with, key(7).id_hex());
                assert_eq!(have, key(8).id_hex());
            }
            other => panic!("{other:?}"),
        }
        assert!(ring.describe().contains(&key(7).id_hex()));
    }

    #[test]
    fn nonces_make_equal_values_differ() {
        let master = key(7);
        let a = master.seal("shop", "k", PLAINTEXT, [1; NONCE_BYTES]);
        let b = master.seal("shop", "k", PLAINTEXT, [2; NONCE_BYTES]);
        assert_ne!(a, b);
        assert_eq!(master.open("shop", "k", &b).as_deref(), Ok(PLAINTEXT));
    }
}
