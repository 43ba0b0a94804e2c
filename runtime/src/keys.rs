//! API keys: their format, hashing and scopes.
//!
//! A key reads `pck_<id>_<secret>`. Only the id and SHA-256 of the secret enter
//! the replicated state; the secret is shown once, at creation. SHA-256 (not
//! argon2) is right here: secrets are 256 random bits, so there is nothing to
//! brute-force, and every request checks a key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use picloud_actors::app::{AppNameError, validate_app_name};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "pck_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
/// The shortest `PICLOUD_ADMIN_KEY` accepted, in characters.
const ADMIN_KEY_CHARS_MIN: usize = 16;
/// The longest `PICLOUD_ADMIN_KEY` accepted, in characters.
const ADMIN_KEY_CHARS_MAX: usize = 256;

/// Why a scope text is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error(transparent)]
    AppName(#[from] AppNameError),
    #[error("scope {text:?} is not one of admin, deploy:<app>, read:<app>")]
    Unknown { text: String },
}

/// Why a `PICLOUD_ADMIN_KEY` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminKeyError {
    #[error("PICLOUD_ADMIN_KEY must be at least {ADMIN_KEY_CHARS_MIN} characters")]
    TooShort,
    #[error("PICLOUD_ADMIN_KEY must be one word of at most {ADMIN_KEY_CHARS_MAX} characters")]
    NotOneWord,
}

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Admin,
    /// Deploy, roll back, read and write kv, read logs of one app.
    Deploy(String),
    /// Read deploys, kv and logs of one app.
    Read(String),
}

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, ScopeError> {
        let app_scope = |app: &str| -> Result<String, ScopeError> {
            validate_app_name(app)?;
            Ok(app.to_string())
        };
        if text == "admin" {
            Ok(Scope::Admin)
        } else if let Some(app) = text.strip_prefix("deploy:") {
            Ok(Scope::Deploy(app_scope(app)?))
        } else if let Some(app) = text.strip_prefix("read:") {
            Ok(Scope::Read(app_scope(app)?))
        } else {
            Err(ScopeError::Unknown {
                text: text.to_string(),
            })
        }
    }

    /// May this key read `app`?
    pub fn can_read(&self, app: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Deploy(own) | Scope::Read(own) => own == app,
        }
    }

    /// May this key change `app` (deploy, rollback, kv writes)?
    pub fn can_write(&self, app: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Deploy(own) => own == app,
            Scope::Read(_) => false,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Scope::Admin)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Admin => write!(f, "admin"),
            Scope::Deploy(app) => write!(f, "deploy:{app}"),
            Scope::Read(app) => write!(f, "read:{app}"),
        }
    }
}

/// A key as handed to its owner, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub id: String,
    pub token: String,
    pub secret_hash: Vec<u8>,
}

pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Makes a fresh random key.
pub fn generate() -> NewKey {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let token = format!("{PREFIX}{id}_{secret}");
    NewKey {
        secret_hash: hash_secret(&secret),
        id,
        token,
    }
}

/// Splits a presented token into its id and secret; `None` if it is not one of ours.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == ID_BYTES * 2 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && !secret.is_empty() && secret.len() <= 128).then_some((id, secret))
}

/// Builds a key from an operator-chosen token (`PICLOUD_ADMIN_KEY`). A value in
/// our own format keeps its id; any other non-empty value is accepted as the
/// secret under a fixed id, so a key from a password manager works as-is.
pub fn from_token(token: &str) -> Result<NewKey, AdminKeyError> {
    let token = token.trim();
    if token.len() < ADMIN_KEY_CHARS_MIN {
        return Err(AdminKeyError::TooShort);
    }
    if token.contains(char::is_whitespace) || token.len() > ADMIN_KEY_CHARS_MAX {
        return Err(AdminKeyError::NotOneWord);
    }
    let (id, secret) = match parse_token(token) {
        Some((id, secret)) => (id.to_string(), secret),
        None => (ADMIN_ENV_KEY_ID.to_string(), token),
    };
    Ok(NewKey {
        id,
        token: token.to_string(),
        secret_hash: hash_secret(secret),
    })
}

/// The id under which a `PICLOUD_ADMIN_KEY` of a foreign format is stored.
pub const ADMIN_ENV_KEY_ID: &str = "000000000000";

/// Looks a presented token up: `(id, secret)` to check against the stored hash.
pub fn lookup_parts(token: &str) -> (String, String) {
    match parse_token(token) {
        Some((id, secret)) => (id.to_string(), secret.to_string()),
        None => (ADMIN_ENV_KEY_ID.to_string(), token.to_string()),
    }
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn secret_matches(secret: &str, stored_hash: &[u8]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let key = generate();
        let (id, secret) = parse_token(&key.token).expect("our format");
        assert_eq!(id, key.id);
        assert!(secret_matches(secret, &key.secret_hash));
        assert!(!secret_matches("nope", &key.secret_hash));
        assert_ne!(generate().token, key.token);
    }

    #[test]
    fn foreign_admin_tokens_are_accepted_under_the_fixed_id() {
        let key = from_token("correct-horse-battery-staple").expect("long enough");
        assert_eq!(key.id, ADMIN_ENV_KEY_ID);
        let (id, secret) = lookup_parts("correct-horse-battery-staple");
        assert_eq!(id, ADMIN_ENV_KEY_ID);
        assert!(secret_matches(&secret, &key.secret_hash));
        assert_eq!(
            from_token("short").map(|key| key.id),
            Err(AdminKeyError::TooShort)
        );
        assert_eq!(
            AdminKeyError::TooShort.to_string(),
            "PICLOUD_ADMIN_KEY must be at least 16 characters"
        );
    }

    #[test]
    fn scopes_parse_and_grant() {
        assert_eq!(Scope::parse("admin"), Ok(Scope::Admin));
        let deploy = Scope::parse("deploy:hello").expect("valid");
        assert!(deploy.can_write("hello") && deploy.can_read("hello"));
        assert!(!deploy.can_read("other"));
        let read = Scope::parse("read:hello").expect("valid");
        assert!(read.can_read("hello") && !read.can_write("hello"));
        assert!(matches!(
            Scope::parse("root"),
            Err(ScopeError::Unknown { .. })
        ));
        assert!(matches!(
            Scope::parse("deploy:Bad App"),
            Err(ScopeError::AppName(_))
        ));
    }
}
