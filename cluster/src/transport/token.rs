//! The join token: what an operator copies from one node to a joiner.
//!
//! `pct1.<base64url CA hash>.<base64url secret>` — one line with no characters
//! a shell or a terminal would mangle. The CA hash lets the joiner verify the
//! cluster before it reveals anything; the secret proves to the cluster that
//! the joiner was invited.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// The version tag every token starts with; a future format gets a new tag.
pub const TOKEN_PREFIX: &str = "pct1";
/// The secret's length in bytes.
pub const SECRET_BYTES: usize = 32;
/// SHA-256 digest length in bytes (the CA hash).
const CA_HASH_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a join token starts with {TOKEN_PREFIX:?}.; this one starts with {found:?}")]
    WrongPrefix { found: String },
    #[error("a join token has three parts separated by '.'; this one has {parts}")]
    WrongShape { parts: usize },
    #[error("the token's {part} is not base64url")]
    NotBase64 { part: &'static str },
    #[error("the token's {part} is {found} bytes; it must be {expected}")]
    WrongLength {
        part: &'static str,
        found: usize,
        expected: usize,
    },
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA certificate's DER, 64 lower-case hex digits
    /// (as `ClusterCa::ca_hash` returns; [`JoinToken::encode`] needs exactly that).
    pub ca_hash: String,
    pub secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    /// A token for the CA with hash `ca_hash` and a fresh random secret.
    pub fn generate(ca_hash: &str) -> JoinToken {
        JoinToken {
            ca_hash: ca_hash.to_string(),
            secret: rand::random(),
        }
    }

    /// The token as one copy-pasteable line.
    pub fn encode(&self) -> String {
        let hash = hex_decode(&self.ca_hash).unwrap_or_default();
        format!(
            "{TOKEN_PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(hash),
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }

    /// Parses what [`JoinToken::encode`] produced (surrounding whitespace allowed,
    /// since tokens get pasted).
    pub fn parse(text: &str) -> Result<JoinToken, TokenError> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        if parts.first() != Some(&TOKEN_PREFIX) {
            let found: String = parts.first().unwrap_or(&"").chars().take(16).collect();
            return Err(TokenError::WrongPrefix { found });
        }
        if parts.len() != 3 {
            return Err(TokenError::WrongShape { parts: parts.len() });
        }
        let hash = decode_part(parts[1], "CA hash", CA_HASH_BYTES)?;
        let secret = decode_part(parts[2], "secret", SECRET_BYTES)?;
        let mut secret_bytes = [0u8; SECRET_BYTES];
        secret_bytes.copy_from_slice(&secret);
        Ok(JoinToken {
            ca_hash: hex_encode(&hash),
            secret: secret_bytes,
        })
    }

    /// Whether `presented` is this token's secret, in constant time.
    pub fn secret_matches(&self, presented: &[u8]) -> bool {
        secrets_equal(&self.secret, presented)
    }
}

/// Compares two secrets in time that does not depend on where they differ, so
/// a remote joiner cannot learn a secret byte by byte from response times.
/// Different lengths compare unequal (the length is not secret).
pub fn secrets_equal(expected: &[u8], presented: &[u8]) -> bool {
    expected.ct_eq(presented).into()
}

fn decode_part(part: &str, name: &'static str, expected: usize) -> Result<Vec<u8>, TokenError> {
    // Reject before decoding anything absurdly long (a pasted file, say).
    if part.len() > expected * 2 {
        return Err(TokenError::WrongLength {
            part: name,
            found: part.len() * 3 / 4,
            expected,
        });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::NotBase64 { part: name })?;
    if bytes.len() != expected {
        return Err(TokenError::WrongLength {
            part: name,
            found: bytes.len(),
            expected,
        });
    }
    Ok(bytes)
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken::generate(&"ab".repeat(32))
    }

    #[test]
    fn tokens_round_trip_as_one_shell_safe_line() {
        let token = token();
        let text = token.encode();
        assert!(text.starts_with("pct1."));
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
            "{text}"
        );
        assert_eq!(JoinToken::parse(&format!("  {text}\n")), Ok(token.clone()));
        assert!(!format!("{token:?}").contains(&URL_SAFE_NO_PAD.encode(token.secret)));
    }

    #[test]
    fn malformed_tokens_get_a_clear_error() {
        let good = token().encode();
        let parts: Vec<&str> = good.split('.').collect();
        let cases: Vec<(String, TokenError)> = vec![
            (
                good.replacen("pct1", "pct2", 1),
                TokenError::WrongPrefix {
                    found: "pct2".into(),
                },
            ),
            (String::new(), TokenError::WrongPrefix { found: "".into() }),
            (
                format!("pct1.{}", parts[1]),
                TokenError::WrongShape { parts: 2 },
            ),
            (format!("{good}.x"), TokenError::WrongShape { parts: 4 }),
            (
                format!("pct1.{}.{}", parts[1], "!!"),
                TokenError::NotBase64 { part: "secret" },
            ),
            (
                format!("pct1.{}.{}", "AAAA", parts[2]),
                TokenError::WrongLength {
                    part: "CA hash",
                    found: 3,
                    expected: 32,
                },
            ),
            (
                format!("pct1.{}.{}", parts[1], "A".repeat(1000)),
                TokenError::WrongLength {
                    part: "secret",
                    found: 750,
                    expected: 32,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(JoinToken::parse(&text), Err(expected), "{text}");
        }
    }

    #[test]
    fn secret_comparison() {
        let token = token();
        assert!(token.secret_matches(&token.secret));
        let mut other = token.secret;
        other[31] ^= 1;
        assert!(!token.secret_matches(&other));
        assert!(!token.secret_matches(&token.secret[..31]));
        assert!(!secrets_equal(b"", b"x"));
    }
}
