//! Kv writes: set/delete/incr/cas and their rejections, expiry, JSON
//! equality for `cas`, all-or-nothing `KvAtomic`, and paging what they
//! stored.

use super::json_equal;
use crate::apply::tests::{Fixture, cas, incr, rejected, set};
use crate::command::{ApplyError, Command, CommandResult, KvOp, KvOpResult};
use crate::records::KvPage;

#[test]
fn set_get_delete_and_applied_index() {
    let mut f = Fixture::new();
    f.create("app");
    f.set("app", "k", "\"v\"", None);
    assert_eq!(f.get("app", "k", 0).as_deref(), Some("\"v\""));
    let deleted = f.kv("app", KvOp::Delete { key: "k".into() }, 0);
    assert_eq!(
        deleted,
        CommandResult::Kv(KvOpResult::Deleted { existed: true })
    );
    let again = f.kv("app", KvOp::Delete { key: "k".into() }, 0);
    assert_eq!(
        again,
        CommandResult::Kv(KvOpResult::Deleted { existed: false })
    );
    assert_eq!(f.get("app", "k", 0), None);
    assert_eq!(f.reader.last_applied_index().expect("index"), Some(4));
}

#[test]
fn kv_on_missing_app_is_rejected_and_writes_nothing_but_the_index() {
    let mut f = Fixture::new();
    let result = f.kv("ghost", set("k", "1", None), 0);
    assert_eq!(
        result,
        rejected(ApplyError::AppNotFound {
            app: "ghost".into()
        })
    );
    assert_eq!(f.get("ghost", "k", 0), None);
    assert_eq!(f.reader.last_applied_index().expect("index"), Some(1));
}

#[test]
fn expired_values_count_as_absent() {
    let mut f = Fixture::new();
    f.create("app");
    f.set("app", "t", "7", Some(100));
    assert_eq!(f.get("app", "t", 99).as_deref(), Some("7"));
    assert_eq!(f.get("app", "t", 100), None);
    // Incr on an expired value starts from 0 and drops the old expiry.
    assert_eq!(
        f.kv("app", incr("t", 2), 100),
        CommandResult::Kv(KvOpResult::Incr { value: 2 })
    );
    assert_eq!(f.get("app", "t", 5_000).as_deref(), Some("2"));
    // Cas "expected absent" succeeds on an expired value.
    f.set("app", "c", "1", Some(50));
    assert_eq!(
        f.kv("app", cas("c", None, Some("9")), 60),
        CommandResult::Kv(KvOpResult::Cas { swapped: true })
    );
    assert_eq!(f.get("app", "c", 1_000).as_deref(), Some("9"));
    // Deleting an expired value reports it did not exist.
    f.set("app", "d", "1", Some(50));
    assert_eq!(
        f.kv("app", KvOp::Delete { key: "d".into() }, 60),
        CommandResult::Kv(KvOpResult::Deleted { existed: false })
    );
}

#[test]
fn incr_on_integers_only() {
    let mut f = Fixture::new();
    f.create("app");
    assert_eq!(
        f.kv("app", incr("n", 5), 0),
        CommandResult::Kv(KvOpResult::Incr { value: 5 })
    );
    assert_eq!(
        f.kv("app", incr("n", -7), 0),
        CommandResult::Kv(KvOpResult::Incr { value: -2 })
    );
    assert_eq!(f.get("app", "n", 0).as_deref(), Some("-2"));
    for not_integer in ["\"5\"", "1.5", "3.0", "[1]", "true", "not json"] {
        f.set("app", "x", not_integer, None);
        assert_eq!(
            f.kv("app", incr("x", 1), 0),
            rejected(ApplyError::NotANumber { key: "x".into() }),
            "{not_integer}"
        );
        assert_eq!(f.get("app", "x", 0).as_deref(), Some(not_integer));
    }
    f.set("app", "big", &i64::MAX.to_string(), None);
    assert_eq!(
        f.kv("app", incr("big", 1), 0),
        rejected(ApplyError::IncrOverflow { key: "big".into() })
    );
}

#[test]
fn incr_keeps_the_expiry() {
    let mut f = Fixture::new();
    f.create("app");
    f.set("app", "n", "1", Some(1_000));
    assert_eq!(
        f.kv("app", incr("n", 1), 10),
        CommandResult::Kv(KvOpResult::Incr { value: 2 })
    );
    assert_eq!(f.get("app", "n", 999).as_deref(), Some("2"));
    assert_eq!(f.get("app", "n", 1_000), None);
}

#[test]
fn cas_compares_json_with_numbers_by_value() {
    let mut f = Fixture::new();
    f.create("app");
    f.set("app", "k", "1.0", None);
    let swapped = CommandResult::Kv(KvOpResult::Cas { swapped: true });
    let not_swapped = CommandResult::Kv(KvOpResult::Cas { swapped: false });
    assert_eq!(
        f.kv("app", cas("k", Some("1"), Some("{ \"a\": [1.0, 2] }")), 0),
        swapped
    );
    assert_eq!(
        f.kv("app", cas("k", Some("{\"a\":[1,2.0]}"), Some("3")), 0),
        swapped
    );
    assert_eq!(f.kv("app", cas("k", Some("4"), Some("5")), 0), not_swapped);
    assert_eq!(f.kv("app", cas("k", None, Some("5")), 0), not_swapped);
    assert_eq!(f.get("app", "k", 0).as_deref(), Some("3"));
    assert_eq!(f.kv("app", cas("k", Some("3"), None), 0), swapped);
    assert_eq!(f.get("app", "k", 0), None);
    assert_eq!(f.kv("app", cas("k", Some("3"), Some("1")), 0), not_swapped);
    assert_eq!(f.kv("app", cas("k", None, Some("\"s\"")), 0), swapped);
    assert_eq!(f.kv("app", cas("k", Some("\"t\""), None), 0), not_swapped);
}

#[test]
fn json_equality_edge_cases() {
    assert!(json_equal(b"1", b"1.0"));
    assert!(json_equal(b"-0", b"0"));
    assert!(json_equal(b"{\"a\":1,\"b\":2}", b"{\"b\":2.0,\"a\":1}"));
    assert!(!json_equal(b"{\"a\":1}", b"{\"a\":1,\"b\":2}"));
    assert!(!json_equal(b"1", b"\"1\""));
    assert!(!json_equal(b"18446744073709551615", b"-1"));
    assert!(json_equal(b"not json", b"not json"));
    assert!(!json_equal(b"not json", b"other"));
}

#[test]
fn kv_atomic_is_all_or_nothing() {
    let mut f = Fixture::new();
    f.create("app");
    f.set("app", "c", "1", None);
    f.set("app", "s", "\"text\"", None);

    let failed_cas = f.run(Command::KvAtomic {
        app: "app".into(),
        ops: vec![
            set("a", "1", None),
            incr("b", 1),
            cas("c", Some("9"), Some("2")),
        ],
        now_ms: 0,
    });
    assert_eq!(
        failed_cas,
        rejected(ApplyError::AtomicCasFailed {
            index: 2,
            key: "c".into()
        })
    );
    assert_eq!(f.get("app", "a", 0), None);
    assert_eq!(f.get("app", "b", 0), None);

    let not_a_number = f.run(Command::KvAtomic {
        app: "app".into(),
        ops: vec![set("a", "1", None), incr("s", 1)],
        now_ms: 0,
    });
    assert_eq!(
        not_a_number,
        rejected(ApplyError::NotANumber { key: "s".into() })
    );
    assert_eq!(f.get("app", "a", 0), None);

    // Later ops see earlier ones inside one command.
    let ok = f.run(Command::KvAtomic {
        app: "app".into(),
        ops: vec![
            set("x", "1", None),
            incr("x", 2),
            cas("c", Some("1.0"), Some("2")),
            KvOp::Delete { key: "s".into() },
        ],
        now_ms: 0,
    });
    assert_eq!(
        ok,
        CommandResult::KvAtomic(vec![
            KvOpResult::Set,
            KvOpResult::Incr { value: 3 },
            KvOpResult::Cas { swapped: true },
            KvOpResult::Deleted { existed: true },
        ])
    );
    assert_eq!(f.get("app", "x", 0).as_deref(), Some("3"));
    assert_eq!(f.get("app", "c", 0).as_deref(), Some("2"));
    assert_eq!(f.get("app", "s", 0), None);
}

#[test]
fn kv_list_pages_in_byte_order_and_skips_expired() {
    let mut f = Fixture::new();
    f.create("app");
    f.create("other");
    for key in ["p/a", "p/b", "p/c", "p/d", "q/a", "p"] {
        f.set("app", key, "1", None);
    }
    f.set("app", "p/bb", "1", Some(5));
    f.set("other", "p/z", "1", None);
    let keys = |page: &KvPage| {
        page.items
            .iter()
            .map(|(key, _)| key.clone())
            .collect::<Vec<_>>()
    };

    let first = f
        .reader
        .kv_list("app", "p/", None, 2, usize::MAX, 10)
        .expect("list");
    assert_eq!(keys(&first), ["p/a", "p/b"]);
    assert_eq!(first.cursor.as_deref(), Some("p/b"));
    let second = f
        .reader
        .kv_list("app", "p/", first.cursor.as_deref(), 2, usize::MAX, 10)
        .expect("list");
    assert_eq!(keys(&second), ["p/c", "p/d"]);
    assert_eq!(second.cursor, None, "nothing with the prefix follows p/d");
    let after_last = f
        .reader
        .kv_list("app", "p/", Some("p/d"), 2, usize::MAX, 10)
        .expect("list");
    assert_eq!(after_last, KvPage::default());
    // Not expired yet: p/bb shows up.
    let all = f
        .reader
        .kv_list("app", "p/", None, 100, usize::MAX, 1)
        .expect("list");
    assert_eq!(keys(&all), ["p/a", "p/b", "p/bb", "p/c", "p/d"]);
    assert_eq!(all.cursor, None);
    let everything = f
        .reader
        .kv_list("app", "", None, 100, usize::MAX, 10)
        .expect("list");
    assert_eq!(keys(&everything), ["p", "p/a", "p/b", "p/c", "p/d", "q/a"]);
    assert_eq!(
        f.reader
            .kv_list("app", "p/", None, 0, usize::MAX, 10)
            .expect("list"),
        KvPage::default()
    );
    assert_eq!(
        keys(
            &f.reader
                .kv_list("app", "p/", Some("a"), 1, usize::MAX, 10)
                .expect("list")
        ),
        ["p/a"]
    );
}

#[test]
fn kv_list_pages_are_bounded_by_bytes_and_always_progress() {
    let mut f = Fixture::new();
    f.create("app");
    for key in ["a", "b", "c"] {
        f.set("app", key, "\"123456789\"", None); // 11 bytes of JSON
    }
    f.set("app", "d", &format!("\"{}\"", "x".repeat(100)), None);
    f.set("app", "e", "1", None);
    let keys = |page: &KvPage| {
        page.items
            .iter()
            .map(|(key, _)| key.clone())
            .collect::<Vec<_>>()
    };
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let page = f
            .reader
            .kv_list("app", "", after.as_deref(), 100, 25, 10)
            .expect("list");
        let total: usize = page.items.iter().map(|(_, value)| value.len()).sum();
        assert!(
            page.items.len() == 1 || total <= 25,
            "page {:?} holds {total} bytes",
            keys(&page)
        );
        pages.push(keys(&page));
        match page.cursor {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    // Two small values fit in 25 bytes, the third does not; the 102-byte
    // value exceeds the bound alone and still comes back, on its own.
    assert_eq!(pages, vec![vec!["a", "b"], vec!["c"], vec!["d"], vec!["e"]]);
}
