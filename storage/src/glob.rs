//! Key patterns of kv triggers (`match = "orders/*"`): `*` matches any run of
//! characters (`/` included, so `orders/*` covers every key under `orders/`),
//! `?` exactly one character, anything else itself. Deterministic and linear
//! in practice (one backtrack point: the last `*`), so `apply` can run it on
//! every write.

/// Whether `key` matches `pattern`.
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let key: Vec<char> = key.chars().collect();
    let (mut p, mut k) = (0, 0);
    // Where the last `*` was, and the key position it is matching up to.
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, k));
                p += 1;
            }
            Some('?') => {
                p += 1;
                k += 1;
            }
            Some(c) if *c == key[k] => {
                p += 1;
                k += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((star_p, star_k)) => {
                    p = star_p + 1;
                    k = star_k + 1;
                    star = Some((star_p, star_k + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::key_matches;

    #[test]
    fn stars_questions_and_literals() {
        let cases = [
            ("orders/*", "orders/1", true),
            ("orders/*", "orders/2024/11/7", true),
            ("orders/*", "orders/", true),
            ("orders/*", "order/1", false),
            ("orders/*", "orders", false),
            ("*", "", true),
            ("*", "anything/at/all", true),
            ("", "", true),
            ("", "a", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*/done", "jobs/7/done", true),
            ("*/done", "jobs/7/done/not", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("users/*/email", "users/ann/email", true),
            ("users/*/email", "users/ann/name", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("ünï*", "ünïcode", true),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(
                key_matches(pattern, key),
                expected,
                "{pattern:?} vs {key:?}"
            );
        }
    }

    /// Many stars against a long key that almost matches: with exponential
    /// backtracking this would not finish; with one backtrack point it is
    /// quadratic at worst.
    #[test]
    fn many_stars_against_a_long_near_miss() {
        let key = "a".repeat(512);
        assert!(!key_matches("*a*a*a*a*a*a*a*a*b", &key));
        assert!(key_matches("*a*a*a*a*a*a*a*a*", &key));
    }
}
