//! Batch entries: one result per inner command, rejections that leave no
//! trace, and an entry interrupted at any backend batch that resumes to the
//! same state and results.

use openraft::{CommittedLeaderId, LogId};

use super::BatchProgress;
use crate::apply::apply;
use crate::apply::tests::{
    CrashAfter, Fixture, batch_keys, cas, dump, incr, kv_cmd, rejected, set,
};
use crate::backend::{BULK_DELETE_BATCH_KEYS, Backend, Keyspace, WriteBatch};
use crate::codec;
use crate::command::{ApplyError, Command, CommandResult, KvOp, KvOpResult, VersionDeploy};
use crate::keys::{self, StoredValue};

#[test]
fn batch_applies_in_order_with_one_result_each() {
    let mut f = Fixture::new();
    f.create("app");
    f.set("app", "c", "1", None);
    let result = f.run(Command::Batch(vec![
        kv_cmd("app", incr("n", 1)),
        kv_cmd("app", incr("n", 1)),
        kv_cmd("app", set("s", "\"x\"", None)),
        kv_cmd("app", cas("s", Some("\"x\""), Some("\"y\""))),
        Command::AppCreate {
            app: "new".into(),
            now_ms: 3,
        },
        kv_cmd("new", set("k", "true", None)),
        Command::Deploy(VersionDeploy {
            app: "new".into(),
            bundle: b"b1".to_vec(),
            now_ms: 4,
            versions_keep: 1,
            triggers: None,
            indexes: None,
            create_app: true,
        }),
        Command::Deploy(VersionDeploy {
            app: "new".into(),
            bundle: b"b2".to_vec(),
            now_ms: 4,
            versions_keep: 1,
            triggers: None,
            indexes: None,
            create_app: true,
        }),
        kv_cmd("app", KvOp::Delete { key: "c".into() }),
    ]));
    assert_eq!(
        result,
        CommandResult::Batch(vec![
            CommandResult::Kv(KvOpResult::Incr { value: 1 }),
            CommandResult::Kv(KvOpResult::Incr { value: 2 }),
            CommandResult::Kv(KvOpResult::Set),
            CommandResult::Kv(KvOpResult::Cas { swapped: true }),
            CommandResult::Done,
            CommandResult::Kv(KvOpResult::Set),
            CommandResult::Deployed { version: 1 },
            CommandResult::Deployed { version: 2 },
            CommandResult::Kv(KvOpResult::Deleted { existed: true }),
        ])
    );
    assert_eq!(f.get("app", "n", 0).as_deref(), Some("2"));
    assert_eq!(f.get("app", "s", 0).as_deref(), Some("\"y\""));
    assert_eq!(f.get("app", "c", 0), None);
    assert_eq!(f.get("new", "k", 0).as_deref(), Some("true"));
    // Later deploys in a batch see earlier ones (versions_keep = 1).
    assert_eq!(f.versions("new"), [2]);
    // One entry, one applied index; no progress left behind.
    assert_eq!(f.reader.last_applied_index().expect("index"), Some(3));
    assert_eq!(batch_keys(f.backend.as_ref()), 0);
    // An empty batch is fine and still advances the index.
    assert_eq!(f.run(Command::Batch(vec![])), CommandResult::Batch(vec![]));
    assert_eq!(f.reader.last_applied_index().expect("index"), Some(4));
}

#[test]
fn rejected_inner_commands_leave_no_trace_and_do_not_stop_others() {
    let mut f = Fixture::new();
    f.create("app");
    f.set("app", "s", "\"text\"", None);
    let result = f.run(Command::Batch(vec![
        kv_cmd("app", set("a", "1", None)),
        // Rejected: a KvAtomic whose first op would have written.
        Command::KvAtomic {
            app: "app".into(),
            ops: vec![set("b", "1", None), incr("s", 1)],
            now_ms: 0,
        },
        kv_cmd("ghost", set("k", "1", None)),
        Command::Batch(vec![kv_cmd("app", set("nested", "1", None))]),
        Command::AppCreate {
            app: "app".into(),
            now_ms: 9,
        },
        kv_cmd("app", incr("a", 1)),
    ]));
    assert_eq!(
        result,
        CommandResult::Batch(vec![
            CommandResult::Kv(KvOpResult::Set),
            rejected(ApplyError::NotANumber { key: "s".into() }),
            rejected(ApplyError::AppNotFound {
                app: "ghost".into()
            }),
            rejected(ApplyError::NestedBatch),
            rejected(ApplyError::AppExists { app: "app".into() }),
            CommandResult::Kv(KvOpResult::Incr { value: 2 }),
        ])
    );
    assert_eq!(f.get("app", "a", 0).as_deref(), Some("2"));
    assert_eq!(f.get("app", "b", 0), None);
    assert_eq!(f.get("app", "nested", 0), None);
    assert_eq!(f.get("app", "s", 0).as_deref(), Some("\"text\""));
    assert_eq!(f.reader.app("ghost").expect("app"), None);
    assert_eq!(
        f.reader.app("app").expect("app").expect("app").created_ms,
        1
    );
    assert_eq!(
        ApplyError::NestedBatch.to_string(),
        "a batch may not contain a batch"
    );
}

/// A batch entry interrupted at every possible point and re-applied (as
/// openraft does after a restart: last-applied did not move) ends in
/// exactly the state and results of an uninterrupted apply: no inner
/// command runs twice, none is lost.
#[test]
fn batch_interrupted_anywhere_resumes_to_the_same_state_and_results() {
    let prepare = || {
        let mut f = Fixture::new();
        f.create("app");
        f.create("big");
        f.set("big", "k", "1", None);
        let mut batch = WriteBatch::new();
        for i in 0..(BULK_DELETE_BATCH_KEYS + 5) {
            let stored = StoredValue {
                value: b"1".to_vec(),
                expires_at_ms: None,
            };
            batch.insert(
                Keyspace::Kv,
                keys::kv_key("big", &format!("k{i:05}")),
                codec::encode(&stored).expect("encode"),
            );
        }
        f.backend.apply_batch(batch).expect("batch");
        f
    };
    let entry = Command::Batch(vec![
        kv_cmd("app", incr("n", 1)),
        kv_cmd("ghost", set("k", "1", None)),
        kv_cmd("app", incr("n", 1)),
        // Deletes kv data in several batches of its own.
        Command::AppDelete {
            app: "big".into(),
            revoke_keys: false,
        },
        Command::Deploy(VersionDeploy {
            app: "app".into(),
            bundle: b"code".to_vec(),
            now_ms: 5,
            versions_keep: 2,
            triggers: None,
            indexes: None,
            create_app: true,
        }),
        kv_cmd("app", incr("n", 10)),
    ]);

    let mut reference = prepare();
    let expected = reference.run(entry.clone());
    let expected_state = dump(reference.backend.as_ref());
    assert_eq!(
        expected,
        CommandResult::Batch(vec![
            CommandResult::Kv(KvOpResult::Incr { value: 1 }),
            rejected(ApplyError::AppNotFound {
                app: "ghost".into()
            }),
            CommandResult::Kv(KvOpResult::Incr { value: 2 }),
            CommandResult::Done,
            CommandResult::Deployed { version: 1 },
            CommandResult::Kv(KvOpResult::Incr { value: 12 }),
        ])
    );

    let mut crash_points = 0;
    for budget in 0.. {
        let f = prepare();
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), f.index + 1);
        let crashing = CrashAfter {
            inner: f.backend.clone(),
            budget: budget.into(),
        };
        match apply(&crashing, &log_id, &entry) {
            Ok(result) => {
                // Enough budget to finish: the uninterrupted case.
                assert_eq!(result, expected);
                break;
            }
            Err(_) => crash_points += 1,
        }
        assert_eq!(
            f.reader.last_applied_index().expect("index"),
            Some(f.index),
            "budget {budget}: a half-applied entry is not applied"
        );
        // Restart: the same entry is applied again.
        let resumed = apply(f.backend.as_ref(), &log_id, &entry).expect("re-apply");
        assert_eq!(resumed, expected, "budget {budget}");
        assert_eq!(dump(f.backend.as_ref()), expected_state, "budget {budget}");
        assert_eq!(batch_keys(f.backend.as_ref()), 0);
    }
    // One batch per inner command, AppDelete's bulk deletions and the
    // final one: every one of them was a crash point.
    assert!(crash_points >= 8, "{crash_points} crash points");
}

#[test]
fn stale_batch_progress_is_ignored_and_cleared() {
    let mut f = Fixture::new();
    f.create("app");
    let stale = BatchProgress {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 99),
        done: 1,
    };
    f.backend
        .insert(
            Keyspace::Meta,
            keys::META_BATCH_PROGRESS,
            &codec::encode(&stale).expect("encode"),
        )
        .expect("insert");
    f.backend
        .insert(Keyspace::Meta, &keys::batch_result_key(5), b"junk")
        .expect("insert");
    let result = f.run(Command::Batch(vec![kv_cmd("app", incr("n", 1))]));
    assert_eq!(
        result,
        CommandResult::Batch(vec![CommandResult::Kv(KvOpResult::Incr { value: 1 })])
    );
    assert_eq!(batch_keys(f.backend.as_ref()), 0);
}

/// Two AllocateNodeId in one batch entry, interrupted anywhere and
/// re-applied, still yield two different ids (the first is not rerun):
/// applied at once (one backend batch, the only crash point), and on the
/// per-command path (a `Rollback` in the entry forces it).
#[test]
fn interrupted_batch_never_allocates_an_id_twice() {
    let at_once = Command::Batch(vec![
        Command::AllocateNodeId { now_ms: 1 },
        Command::AllocateNodeId { now_ms: 1 },
    ]);
    let expected = CommandResult::Batch(vec![
        CommandResult::NodeIdAllocated { id: 2 },
        CommandResult::NodeIdAllocated { id: 3 },
    ]);
    check_interrupted_allocations(&at_once, &expected, 1);
    let per_command = Command::Batch(vec![
        Command::AllocateNodeId { now_ms: 1 },
        Command::Rollback {
            app: "ghost".into(),
            to_version: None,
            now_ms: 1,
        },
        Command::AllocateNodeId { now_ms: 1 },
    ]);
    let expected = CommandResult::Batch(vec![
        CommandResult::NodeIdAllocated { id: 2 },
        rejected(ApplyError::AppNotFound {
            app: "ghost".into(),
        }),
        CommandResult::NodeIdAllocated { id: 3 },
    ]);
    check_interrupted_allocations(&per_command, &expected, 4);
}

fn check_interrupted_allocations(entry: &Command, expected: &CommandResult, crash_points: usize) {
    let entry = entry.clone();
    let expected = expected.clone();
    for budget in 0..crash_points {
        let mut f = Fixture::new();
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
        let crashing = CrashAfter {
            inner: f.backend.clone(),
            budget: budget.into(),
        };
        assert!(
            apply(&crashing, &log_id, &entry).is_err(),
            "budget {budget}"
        );
        f.index = 0;
        assert_eq!(f.run(entry.clone()), expected, "budget {budget}");
        assert_eq!(f.reader.next_node_id().expect("next"), 4);
    }
    // With one more backend batch allowed, nothing crashes: those were
    // all the crash points.
    let f = Fixture::new();
    let crashing = CrashAfter {
        inner: f.backend.clone(),
        budget: crash_points.into(),
    };
    let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
    assert_eq!(apply(&crashing, &log_id, &entry).expect("apply"), expected);
}
