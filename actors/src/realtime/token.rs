//! Realtime tokens: what `realtime.token` signs and the SSE endpoint checks.
//!
//! ```text
//! v1.<payload>.<signature>
//!   payload   = base64url(JSON {"app","topic","exp","sub","kid"})   (no padding)
//!   signature = base64url(HMAC-SHA256(app signing key, "v1." + payload))
//! ```
//!
//! `exp` is the expiry in milliseconds since the Unix epoch; `sub` the
//! subject the script named (or null); `kid` the first 8 bytes (hex) of
//! SHA-256 of the signing key, so a token signed before a rotation is
//! recognised as such and refused (`token_invalid`). Pure: the key and the
//! clock are passed in.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const VERSION: &str = "v1";
/// The longest token accepted, in bytes (a 200-byte topic and a long
/// subject fit comfortably).
pub const TOKEN_BYTES_MAX: usize = 4096;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub app: String,
    pub topic: String,
    pub exp: u64,
    pub sub: Option<String>,
    pub kid: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token, a bad signature, another app's or another key's.
    Invalid(&'static str),
    Expired {
        exp: u64,
    },
    WrongTopic {
        topic: String,
    },
}

/// The key id of a signing key: the first 8 bytes of its SHA-256, in hex.
pub fn key_id(key: &[u8]) -> String {
    Sha256::digest(key)[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// HMAC-SHA256 (RFC 2104) over SHA-256 with a 64-byte block.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    mac(key, message).finalize().into_bytes().into()
}

/// The HMAC-SHA256 state over `message` (keys of any length are valid).
fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(message);
    mac
}

/// Signs `claims` (its `kid` is set from `key`).
pub fn sign(key: &[u8], mut claims: Claims) -> String {
    claims.kid = key_id(key);
    let json = serde_json::to_vec(&claims).unwrap_or_default();
    let signed = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(json));
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(key, signed.as_bytes()));
    format!("{signed}.{signature}")
}

/// Checks `token` for `topic` of `app` with `key` at `now_ms`.
pub fn verify(
    key: &[u8],
    token: &str,
    app: &str,
    topic: &str,
    now_ms: u64,
) -> Result<Claims, TokenError> {
    if token.len() > TOKEN_BYTES_MAX {
        return Err(TokenError::Invalid("the token is too long"));
    }
    let mut parts = token.split('.');
    let (Some(version), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid("not a realtime token"));
    };
    if version != VERSION {
        return Err(TokenError::Invalid("unknown token version"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Invalid("the signature is not base64url"))?;
    // Constant time (the hmac crate compares through `subtle`): a
    // byte-by-byte compare would leak the signature.
    let same = mac(key, format!("{version}.{payload}").as_bytes())
        .verify_slice(&signature)
        .is_ok();
    let claims: Option<Claims> = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok());
    let Some(claims) = claims else {
        return Err(TokenError::Invalid("the payload is not a token's"));
    };
    if claims.app != app {
        return Err(TokenError::Invalid("the token is for another app"));
    }
    if !same {
        return Err(if claims.kid != key_id(key) {
            TokenError::Invalid("the token was signed with a key that was rotated away")
        } else {
            TokenError::Invalid("bad signature")
        });
    }
    if claims.exp <= now_ms {
        return Err(TokenError::Expired { exp: claims.exp });
    }
    if claims.topic != topic {
        return Err(TokenError::WrongTopic {
            topic: claims.topic,
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 and test case 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            app: "a".into(),
            topic: "chat/1".into(),
            exp,
            sub: Some("u1".into()),
            kid: String::new(),
        }
    }

    #[test]
    fn a_token_verifies_only_for_its_app_topic_key_and_time() {
        let key = [7u8; 32];
        let token = sign(&key, claims(1_000));
        let ok = verify(&key, &token, "a", "chat/1", 999).expect("valid");
        assert_eq!(ok.sub.as_deref(), Some("u1"));
        assert_eq!(ok.kid, key_id(&key));
        assert_eq!(
            verify(&key, &token, "a", "chat/1", 1_000),
            Err(TokenError::Expired { exp: 1_000 })
        );
        assert_eq!(
            verify(&key, &token, "a", "chat/2", 1),
            Err(TokenError::WrongTopic {
                topic: "chat/1".into()
            })
        );
        assert!(matches!(
            verify(&key, &token, "b", "chat/1", 1),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            verify(&[8u8; 32], &token, "a", "chat/1", 1),
            Err(TokenError::Invalid(m)) if m.contains("rotated")
        ));
        // A forged payload with the old signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                exp: u64::MAX,
                kid: key_id(&key),
                ..claims(0)
            })
            .expect("json"),
        );
        parts[1] = &forged;
        assert_eq!(
            verify(&key, &parts.join("."), "a", "chat/1", 1),
            Err(TokenError::Invalid("bad signature"))
        );
        for junk in ["", "v1", "v1.x.y", "v2.a.b", "v1.a.b.c", &"x".repeat(5000)] {
            assert!(matches!(
                verify(&key, junk, "a", "chat/1", 1),
                Err(TokenError::Invalid(_))
            ));
        }
    }
}
