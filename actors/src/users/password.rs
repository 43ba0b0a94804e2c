//! Passwords: the policy (a pure function), and [`HashPool`], which runs
//! argon2id hashes and verifications on tokio's blocking pool behind two
//! bounds: at most `concurrency` at once (so logins never take every core
//! from the other routes) and at most `queue_max` more waiting; past that a
//! caller gets `auth_busy` (503) at once instead of piling up.
//!
//! Parameters: argon2 0.6's defaults, which are OWASP's (argon2id,
//! m = 19456 KiB, t = 2, p = 1). Verification reads the parameters from the
//! stored PHC string, so raising them later keeps old hashes valid.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use picloud_lua_sdk::{Code, HostError};
use tokio::sync::{OnceCell, Semaphore};

/// The shortest password accepted (OWASP's minimum for a password alone).
pub const PASSWORD_CHARS_MIN: usize = 8;

/// The longest password accepted, in bytes: argon2 takes any length, but a
/// bound keeps one request from hashing megabytes.
pub const PASSWORD_BYTES_MAX: usize = 256;

/// Commonly used passwords of at least [`PASSWORD_CHARS_MIN`] characters
/// (shorter ones fail the length rule anyway), from the top of SecLists'
/// `Passwords/Common-Credentials/10-million-password-list-top-1000.txt`,
/// lower-cased: 60 entries. The check is case-insensitive.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "12345678",
    "123456789",
    "1234567890",
    "baseball",
    "football",
    "qwertyuiop",
    "1qaz2wsx",
    "password1",
    "password123",
    "iloveyou",
    "sunshine",
    "princess",
    "superman",
    "trustno1",
    "00000000",
    "11111111",
    "88888888",
    "12341234",
    "123123123",
    "987654321",
    "qwerty123",
    "q1w2e3r4",
    "q1w2e3r4t5",
    "zaq12wsx",
    "letmein1",
    "welcome1",
    "passw0rd",
    "starwars",
    "whatever",
    "michelle",
    "jennifer",
    "computer",
    "corvette",
    "mercedes",
    "mustang1",
    "internet",
    "samantha",
    "asdfghjkl",
    "abcd1234",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "qazwsxedc",
    "asdf1234",
    "aaaaaaaa",
    "chocolate",
    "butterfly",
    "liverpool",
    "pokemon1",
    "blink182",
    "master12",
    "changeme",
    "administrator",
    "admin123",
    "welcome123",
    "iloveyou1",
    "football1",
    "baseball1",
    "monkey123",
    "dragon123",
];

/// Why a password is refused (all `password_weak`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordWeak {
    #[error("the password needs at least {min} characters")]
    TooShort { min: usize },
    #[error("the password may hold at most {max} bytes")]
    TooLong { max: usize },
    #[error("the password is a commonly used one")]
    Common,
}

impl From<PasswordWeak> for HostError {
    fn from(error: PasswordWeak) -> HostError {
        HostError::new(Code::PasswordWeak, error.to_string())
    }
}

/// Whether `password` may be set, for an app whose minimum is `min_chars`
/// (never below [`PASSWORD_CHARS_MIN`]).
pub fn check_password(password: &str, min_chars: usize) -> Result<(), PasswordWeak> {
    let min = min_chars.max(PASSWORD_CHARS_MIN);
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(PasswordWeak::TooLong {
            max: PASSWORD_BYTES_MAX,
        });
    }
    if password.chars().count() < min {
        return Err(PasswordWeak::TooShort { min });
    }
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS.contains(&lower.as_str()) {
        return Err(PasswordWeak::Common);
    }
    Ok(())
}

/// The bounded argon2id pool (see the module comment). Cheap to clone.
#[derive(Clone)]
pub struct HashPool {
    /// Hashes running at once.
    running: Arc<Semaphore>,
    /// Hashes running or waiting: `concurrency + queue_max` permits.
    admitted: Arc<Semaphore>,
    /// A hash of a fixed password, verified against when a login names no
    /// user, so the answer takes as long as for a wrong password.
    dummy: Arc<OnceCell<String>>,
}

impl HashPool {
    pub fn new(concurrency: usize, queue_max: usize) -> HashPool {
        let concurrency = concurrency.max(1);
        HashPool {
            running: Arc::new(Semaphore::new(concurrency)),
            admitted: Arc::new(Semaphore::new(concurrency.saturating_add(queue_max))),
            dummy: Arc::new(OnceCell::new()),
        }
    }

    /// Runs `work` on the blocking pool once a slot frees, or `auth_busy`
    /// when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HostError> {
        let _admitted = self.admitted.clone().try_acquire_owned().map_err(|_| {
            HostError::new(
                Code::AuthBusy,
                "too many password hashes are queued on this node",
            )
        })?;
        let _running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HostError::new(Code::Unavailable, "the hash pool is closed"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| HostError::new(Code::Internal, format!("password hash task: {error}")))
    }

    /// The PHC string of `password` under a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, HostError> {
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
        })
        .await?
        .map_err(|error| HostError::new(Code::Internal, format!("argon2: {error}")))
    }

    /// Whether `password` matches the PHC string `hash` (argon2 compares
    /// the outputs in constant time).
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, HostError> {
        self.run(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
    }

    /// Spends one verification on the dummy hash and answers `false`: what
    /// a login for an unknown email does, so its timing matches a wrong
    /// password's.
    pub async fn verify_dummy(&self, password: String) -> Result<bool, HostError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| self.hash("picloud-dummy-password".into()))
            .await?
            .clone();
        self.verify(password, dummy).await?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy_table() {
        let table: &[(&str, usize, Result<(), PasswordWeak>)] = &[
            ("correct horse", 8, Ok(())),
            ("short", 8, Err(PasswordWeak::TooShort { min: 8 })),
            ("seven77", 8, Err(PasswordWeak::TooShort { min: 8 })),
            // An app may raise the minimum, never lower it.
            ("tenletters", 12, Err(PasswordWeak::TooShort { min: 12 })),
            ("abc1234", 4, Err(PasswordWeak::TooShort { min: 8 })),
            ("Password123", 8, Err(PasswordWeak::Common)),
            ("QWERTYUIOP", 8, Err(PasswordWeak::Common)),
            ("ünïcödé!", 8, Ok(())),
        ];
        for (password, min, expected) in table {
            assert_eq!(check_password(password, *min), *expected, "{password:?}");
        }
        let long = "x".repeat(PASSWORD_BYTES_MAX + 1);
        assert_eq!(
            check_password(&long, 8),
            Err(PasswordWeak::TooLong {
                max: PASSWORD_BYTES_MAX
            })
        );
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let pool = HashPool::new(2, 2);
        let hash = pool.hash("correct horse".into()).await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            pool.verify("correct horse".into(), hash.clone())
                .await
                .expect("verify")
        );
        assert!(
            !pool
                .verify("wrong horse!".into(), hash)
                .await
                .expect("verify")
        );
        assert!(!pool.verify_dummy("anything".into()).await.expect("dummy"));
    }

    /// With one hash running and no queue, the next caller is refused at
    /// once with `auth_busy` rather than waiting.
    #[tokio::test]
    async fn a_full_queue_answers_auth_busy() {
        let pool = HashPool::new(1, 0);
        let held = pool
            .admitted
            .clone()
            .try_acquire_owned()
            .expect("the one slot");
        let error = pool.hash("correct horse".into()).await.expect_err("busy");
        assert_eq!(error.code, Code::AuthBusy);
        drop(held);
        assert!(pool.hash("correct horse".into()).await.is_ok());
    }
}
