//! The physical limit of logins: argon2id verifications per second with the
//! parameters `users.login` uses (argon2 0.6 defaults, OWASP's m=19456 KiB,
//! t=2, p=1), on `threads` threads for `seconds`, each thread computing into
//! memory it keeps (the cheapest way argon2 can run: no allocation, page
//! faults or zeroing per call). `bench/auth.sh` prints PiCloud's logins/s
//! against it.
//!
//! Usage: argon2-rate [seconds=10] [threads=cores]

use std::time::{Duration, Instant};

use argon2::{Argon2, Block, Params, PasswordHasher};

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let threads: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let password = "correct horse battery staple";
    // The same calls `users.login` makes (actors/src/users/password.rs).
    let salt = b"sixteen-byte-slt";
    let mut expected = [0u8; 32];
    Argon2::default()
        .hash_password_into(password.as_bytes(), salt, &mut expected)
        .expect("hash");
    // The PHC string is what a login reads; it is parsed per verification.
    let phc = Argon2::default()
        .hash_password(password.as_bytes())
        .expect("hash")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let phc = phc.as_str();
                scope.spawn(move || {
                    let mut blocks = vec![Block::default(); Params::default().block_count()];
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        let parsed = argon2::PasswordHash::new(phc).expect("phc");
                        assert!(parsed.hash.is_some());
                        let mut out = [0u8; 32];
                        Argon2::default()
                            .hash_password_into_with_memory(
                                password.as_bytes(),
                                salt,
                                &mut out,
                                &mut blocks,
                            )
                            .expect("verify");
                        assert_eq!(out, expected);
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("worker"))
            .collect()
    });
    let total: u64 = counts.iter().sum();
    let rate = total as f64 / started.elapsed().as_secs_f64();
    println!("argon2id verifies/s {rate:.1} threads {threads}");
}
