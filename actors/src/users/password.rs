//! Passwords: the policy (a pure function), and [`HashPool`], which runs
//! argon2id hashes and verifications on its own `concurrency` OS threads
//! (`picloud-hash`) at a lowered priority (`nice`), behind a queue of at
//! most `queue_max` waiting jobs; past that a caller gets `auth_busy` (503)
//! at once instead of piling up. Own threads, not tokio's blocking pool: a
//! login storm then fills at most `concurrency` cores, and the kernel runs
//! the HTTP, Raft and storage threads (nice 0) first even on those, so
//! another app's plain routes keep their latency.
//!
//! ```text
//!   hash/verify ──try_send──▶ sync_channel(queue_max) ──▶ picloud-hash × concurrency (nice)
//!        ▲   full: auth_busy                                   │
//!        └──────────────────── oneshot (the result) ◀──────────┘
//! ```
//!
//! Parameters: argon2 0.6's defaults, which are OWASP's (argon2id,
//! m = 19456 KiB, t = 2, p = 1). Verification reads the parameters from the
//! stored PHC string, so raising them later keeps old hashes valid.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use std::cell::RefCell;

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, Version};
use picloud_lua_sdk::{Code, HostError};
use subtle::ConstantTimeEq as _;
use tokio::sync::{OnceCell, oneshot};

use crate::priority::{idle_this_thread, lower_this_thread_priority};

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

/// One hash or verification, with where its answer goes.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The bounded argon2id pool (see the module comment). Cheap to clone; the
/// threads end when the last clone is dropped (the queue's sender closes).
#[derive(Clone)]
pub struct HashPool {
    /// The queue the threads take jobs from: `queue_max` waiting at most.
    jobs: SyncSender<Job>,
    /// A hash of a fixed password, verified against when a login names no
    /// user, so the answer takes as long as for a wrong password.
    dummy: Arc<OnceCell<String>>,
}

/// How the hash threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashPriority {
    /// Their nice value (0: unchanged).
    pub nice: i32,
    /// `SCHED_IDLE`: they run only when no other thread wants the core.
    pub idle: bool,
}

/// Why the pool could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start a password hash thread: {0}")]
pub struct HashPoolError(#[from] std::io::Error);

impl HashPool {
    /// Starts `concurrency` (at least one) threads at `priority`.
    pub fn new(
        concurrency: usize,
        queue_max: usize,
        priority: HashPriority,
    ) -> Result<HashPool, HashPoolError> {
        let (jobs, queue) = sync_channel::<Job>(queue_max);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..concurrency.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("picloud-hash-{index}"))
                .spawn(move || {
                    lower_this_thread_priority(priority.nice);
                    if priority.idle {
                        idle_this_thread();
                    }
                    run_jobs(&queue);
                })?;
        }
        Ok(HashPool {
            jobs,
            dummy: Arc::new(OnceCell::new()),
        })
    }

    /// Runs `work` on a pool thread once one is free, or `auth_busy` when
    /// the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HostError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have gone (its request dropped): nobody to tell.
            let _ = answer.send(work());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(HostError::new(
                    Code::AuthBusy,
                    "too many password hashes are queued on this node",
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(HostError::new(Code::Unavailable, "the hash pool is closed"));
            }
        }
        answered
            .await
            .map_err(|_| HostError::new(Code::Internal, "a password hash thread stopped mid-job"))
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
            BLOCKS.with_borrow_mut(|blocks| verify_into(password.as_bytes(), &hash, blocks))
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

thread_local! {
    /// A pool thread's argon2 memory (19 MiB with the default parameters),
    /// kept between verifications: allocating it per call costs a fresh
    /// mapping, a page fault and a zeroed page for every 4 KiB, about a
    /// sixth of a login's CPU. Grows to the largest parameters seen.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Whether `password` matches the PHC string `phc`, computing into
/// `blocks` (what `PasswordVerifier::verify_password` does, without its
/// allocation). The parameters come from the string; the outputs are
/// compared in constant time. A malformed string matches nothing.
fn verify_into(password: &[u8], phc: &str, blocks: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let count = params.block_count();
    if blocks.len() < count {
        blocks.resize(count, Block::default());
    }
    let mut output = [0u8; 64];
    let Some(output) = output.get_mut(..expected.len()) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(password, salt, output, &mut blocks[..count])
        .is_err()
    {
        return false;
    }
    bool::from(output.ct_eq(expected.as_bytes()))
}

/// A pool thread's loop: one job at a time until the pool is dropped. A job
/// that panics (argon2 does not, but a panic must not shrink the pool) is
/// caught; its caller sees its answer dropped.
fn run_jobs(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(|poison| poison.into_inner());
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a password hash job panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    /// Threads at the default priority.
    const NORMAL: HashPriority = HashPriority {
        nice: 0,
        idle: false,
    };

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
        let pool = HashPool::new(2, 2, NORMAL).expect("pool");
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

    /// Verifying into kept memory answers what argon2's own verifier
    /// answers, for hashes of other parameters too (the memory grows and
    /// shrinks in use between them), and refuses malformed strings.
    #[test]
    fn kept_memory_verifies_like_argon2() {
        use argon2::PasswordVerifier as _;
        let small = Params::new(1024, 1, 1, None).expect("params");
        let hashes = [
            Argon2::default()
                .hash_password(b"pw-one-two")
                .expect("hash")
                .to_string(),
            Argon2::new(Algorithm::Argon2id, Version::V0x13, small.clone())
                .hash_password(b"pw-one-two")
                .expect("hash")
                .to_string(),
            Argon2::new(Algorithm::Argon2i, Version::V0x10, small)
                .hash_password(b"pw-one-two")
                .expect("hash")
                .to_string(),
        ];
        let mut blocks = Vec::new();
        for hash in hashes.iter().chain(hashes.iter().rev()) {
            for password in [&b"pw-one-two"[..], b"pw-one-twO", b""] {
                let expected = Argon2::default()
                    .verify_password(password, hash.as_str())
                    .is_ok();
                assert_eq!(
                    verify_into(password, hash, &mut blocks),
                    expected,
                    "{hash} {password:?}"
                );
            }
        }
        assert!(blocks.len() >= 19456, "the memory is kept");
        for malformed in [
            "",
            "$argon2id$",
            "plain text",
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ",
        ] {
            assert!(!verify_into(b"x", malformed, &mut blocks), "{malformed}");
        }
    }

    /// Occupies one pool thread until the returned sender is dropped or
    /// sent to; resolves once the job is running.
    async fn hold_a_thread(
        pool: &HashPool,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let pool = pool.clone();
        let job = tokio::spawn(async move {
            pool.run(move || {
                let _ = started.send(());
                let _ = released.recv();
            })
            .await
            .expect("the held job runs");
        });
        running.await.expect("the held job started");
        (release, job)
    }

    /// With every thread busy and the queue full, the next caller is
    /// refused at once with `auth_busy` rather than waiting; once a thread
    /// frees, hashing works again.
    #[tokio::test]
    async fn past_the_queue_callers_get_auth_busy() {
        let pool = HashPool::new(1, 1, NORMAL).expect("pool");
        let (release, held) = hold_a_thread(&pool).await;
        // One may wait in the queue (its first poll enqueues it)...
        let mut queued = Box::pin(pool.hash("correct horse".into()));
        assert!(futures::poll!(&mut queued).is_pending());
        // ...and the next is refused at once.
        let busy = pool.run(|| ()).await.expect_err("busy");
        assert_eq!(busy.code, Code::AuthBusy);
        drop(release);
        held.await.expect("held job");
        assert!(queued.await.is_ok(), "the queued hash ran");
        assert!(pool.hash("correct horse".into()).await.is_ok());
    }

    /// At most `concurrency` jobs run at once, however many are queued.
    #[tokio::test]
    async fn at_most_concurrency_jobs_run_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = HashPool::new(2, 16, NORMAL).expect("pool");
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut jobs = Vec::new();
        for _ in 0..8 {
            let (running, most) = (running.clone(), most.clone());
            jobs.push(pool.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for job in futures::future::join_all(jobs).await {
            job.expect("job");
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    /// The pool's threads run below the default priority, so hashing
    /// yields the cores to the HTTP, Raft and storage threads.
    #[tokio::test]
    async fn pool_threads_run_at_the_lowered_priority() {
        let pool = HashPool::new(
            1,
            1,
            HashPriority {
                nice: 7,
                idle: false,
            },
        )
        .expect("pool");
        let nice = pool
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .expect("job")
            .expect("getpriority");
        assert!(nice >= 7, "nice {nice}");
        let idle = HashPool::new(
            1,
            1,
            HashPriority {
                nice: 0,
                idle: true,
            },
        )
        .expect("pool");
        let policy = idle
            .run(thread_priority::unix::thread_schedule_policy)
            .await
            .expect("job")
            .expect("policy");
        assert_eq!(
            policy,
            thread_priority::unix::ThreadSchedulePolicy::Normal(
                thread_priority::unix::NormalThreadSchedulePolicy::Idle
            )
        );
    }
}
