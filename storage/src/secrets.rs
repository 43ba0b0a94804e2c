//! App secrets in the replicated state: their limits, name rules and stored
//! record. Values are sealed by the proposing node (`secret_box`) before
//! they become a [`crate::Command::SecretSet`]; storage only ever holds, logs
//! and snapshots the sealed bytes.

use serde::{Deserialize, Serialize};

/// The longest secret name, in bytes.
pub const SECRET_NAME_BYTES_MAX: usize = 128;
/// The largest secret value (plaintext), in bytes.
pub const SECRET_VALUE_BYTES_MAX: usize = 64 * 1024;
/// The most secrets one app may hold.
pub const SECRETS_PER_APP_MAX: u32 = 1_000;

/// A secret as stored: the sealed value and when it was last set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub sealed: Vec<u8>,
    pub updated_ms: u64,
}

/// Checks a secret name: 1 to [`SECRET_NAME_BYTES_MAX`] bytes of ASCII
/// letters, digits, `_`, `-` and `.`, starting with a letter or `_` (so
/// names read like environment variables and never need URL escaping).
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > SECRET_NAME_BYTES_MAX {
        return Err(format!(
            "secret names are 1 to {SECRET_NAME_BYTES_MAX} bytes, got {}",
            name.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let first_ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !name.chars().all(allowed) {
        return Err(format!(
            "secret name {name:?} must start with a letter or _ and hold only letters, digits, _, - and ."
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in [
            "STRIPE_KEY",
            "_x",
            "a.b-c_9",
            &"a".repeat(SECRET_NAME_BYTES_MAX),
        ] {
            assert_eq!(validate_secret_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "9lives",
            "-x",
            "a b",
            "a/b",
            "é",
            "a\0",
            &"a".repeat(SECRET_NAME_BYTES_MAX + 1),
        ] {
            assert!(validate_secret_name(bad).is_err(), "{bad:?}");
        }
    }
}
