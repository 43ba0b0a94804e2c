//! What the tests of every area share: a [`Fixture`] that applies commands
//! at increasing log indexes, small command builders, and [`CrashAfter`],
//! which fails backend batches past a budget like a crash would. Plus the
//! tests of `mod.rs` itself: which commands changed an app; batch entries
//! (one result per inner command, rejections that leave no trace, an entry
//! interrupted at any backend batch resumes to the same state and results);
//! and legacy log entries applied as they always were.

use std::sync::Arc;

use openraft::{CommittedLeaderId, LogId};

use super::{BatchProgress, apply, changed_app, changed_apps};
use crate::backend::{
    BULK_DELETE_BATCH_KEYS, Backend, BackendError, KeyValue, Keyspace, ScanItem, SledBackend,
    SledOptions, WriteBatch,
};
use crate::codec;
use crate::command::{
    ApplyError, Command, CommandResult, DeployParts, KvOp, KvOpResult, VersionDeploy,
};
use crate::keys::{self, StoredValue};
use crate::state::StateReader;

/// A state backend in a temp dir, and `apply` at increasing log indexes
/// (shared by the tests of every area).
pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) backend: Arc<SledBackend>,
    pub(super) reader: StateReader,
    pub(super) index: u64,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Arc::new(
            SledBackend::open(
                &dir.path().join("state"),
                SledOptions {
                    cache_capacity_bytes: 4 << 20,
                },
            )
            .expect("open"),
        );
        let reader = StateReader::new(backend.clone(), tokio::sync::broadcast::channel(4).0);
        Fixture {
            _dir: dir,
            backend,
            reader,
            index: 0,
        }
    }

    pub(super) fn run(&mut self, command: Command) -> CommandResult {
        self.index += 1;
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), self.index);
        apply(self.backend.as_ref(), &log_id, &command).expect("apply")
    }

    pub(super) fn create(&mut self, app: &str) {
        let result = self.run(Command::AppCreate {
            app: app.into(),
            now_ms: 1,
        });
        assert_eq!(result, CommandResult::Done);
    }

    pub(super) fn kv(&mut self, app: &str, op: KvOp, now_ms: u64) -> CommandResult {
        self.run(Command::Kv {
            app: app.into(),
            op,
            now_ms,
        })
    }

    pub(super) fn set(&mut self, app: &str, key: &str, value: &str, expires_at_ms: Option<u64>) {
        let result = self.kv(app, set(key, value, expires_at_ms), 0);
        assert_eq!(result, CommandResult::Kv(KvOpResult::Set));
    }

    pub(super) fn get(&self, app: &str, key: &str, now_ms: u64) -> Option<String> {
        self.reader
            .kv_get(app, key, now_ms)
            .expect("get")
            .map(|value| String::from_utf8(value).expect("utf8"))
    }

    pub(super) fn deploy(&mut self, app: &str, bundle: &str, versions_keep: u32) -> CommandResult {
        self.run(Command::Deploy(VersionDeploy {
            app: app.into(),
            bundle: bundle.as_bytes().to_vec(),
            now_ms: 10,
            versions_keep,
            parts: DeployParts::Bundle,
        }))
    }

    pub(super) fn rollback(&mut self, app: &str, to_version: Option<u64>) -> CommandResult {
        self.run(Command::Rollback {
            app: app.into(),
            to_version,
            now_ms: 10,
        })
    }

    pub(super) fn versions(&self, app: &str) -> Vec<u64> {
        let deploys = self.reader.deploys(app).expect("deploys");
        deploys.iter().map(|deploy| deploy.version).collect()
    }
}

pub(super) fn set(key: &str, value: &str, expires_at_ms: Option<u64>) -> KvOp {
    KvOp::Set {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        expires_at_ms,
    }
}

pub(super) fn incr(key: &str, by: i64) -> KvOp {
    KvOp::Incr {
        key: key.into(),
        by,
    }
}

pub(super) fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> KvOp {
    KvOp::Cas {
        key: key.into(),
        expected: expected.map(|e| e.as_bytes().to_vec()),
        new: new.map(|n| n.as_bytes().to_vec()),
    }
}

pub(super) fn rejected(error: ApplyError) -> CommandResult {
    CommandResult::Rejected(error)
}

pub(super) fn kv_cmd(app: &str, op: KvOp) -> Command {
    Command::Kv {
        app: app.into(),
        op,
        now_ms: 0,
    }
}

/// Every key of the state and of `Meta`, for comparing two backends.
pub(super) fn dump(backend: &dyn Backend) -> Vec<(Keyspace, KeyValue)> {
    let mut out = Vec::new();
    for keyspace in Keyspace::STATE_DATA.into_iter().chain([Keyspace::Meta]) {
        for item in backend.scan(keyspace, b"", b"") {
            out.push((keyspace, item.expect("scan")));
        }
    }
    out
}

pub(super) fn batch_keys(backend: &dyn Backend) -> usize {
    backend
        .scan(Keyspace::Meta, keys::META_BATCH_PREFIX, b"")
        .count()
}

/// Fails every `apply_batch` after the first `budget`: what is on disk
/// after a crash is a prefix of the batches written, exactly as here.
pub(super) struct CrashAfter {
    pub(super) inner: Arc<SledBackend>,
    pub(super) budget: std::sync::atomic::AtomicUsize,
}

impl Backend for CrashAfter {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(keyspace, key)
    }
    fn insert(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.inner.insert(keyspace, key, value)
    }
    fn remove(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), BackendError> {
        self.inner.remove(keyspace, key)
    }
    fn scan<'a>(
        &'a self,
        keyspace: Keyspace,
        prefix: &[u8],
        start: &[u8],
    ) -> Box<dyn Iterator<Item = ScanItem> + 'a> {
        self.inner.scan(keyspace, prefix, start)
    }
    fn last(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Option<KeyValue>, BackendError> {
        self.inner.last(keyspace, prefix)
    }
    fn apply_batch(&self, batch: WriteBatch) -> Result<(), BackendError> {
        use std::sync::atomic::Ordering;
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 {
            return Err(BackendError {
                operation: "apply batch",
                keyspace: None,
                message: "simulated crash".into(),
            });
        }
        self.budget.store(left - 1, Ordering::SeqCst);
        self.inner.apply_batch(batch)
    }
    fn flush(&self) -> Result<(), BackendError> {
        self.inner.flush()
    }
    fn size_on_disk_bytes(&self) -> Result<u64, BackendError> {
        self.inner.size_on_disk_bytes()
    }
}

#[test]
fn changed_apps_lists_accepted_inner_app_commands() {
    let batch = Command::Batch(vec![
        Command::AppCreate {
            app: "a".into(),
            now_ms: 0,
        },
        kv_cmd("a", incr("n", 1)),
        Command::AppDelete {
            app: "b".into(),
            revoke_keys: false,
        },
        Command::Rollback {
            app: "c".into(),
            to_version: None,
            now_ms: 0,
        },
    ]);
    let result = CommandResult::Batch(vec![
        CommandResult::Done,
        CommandResult::Kv(KvOpResult::Incr { value: 1 }),
        rejected(ApplyError::AppNotFound { app: "b".into() }),
        CommandResult::RolledBack { version: 1 },
    ]);
    assert_eq!(changed_apps(&batch, &result), ["a", "c"]);
    let create = Command::AppCreate {
        app: "x".into(),
        now_ms: 0,
    };
    assert_eq!(changed_apps(&create, &CommandResult::Done), ["x"]);
    assert!(changed_apps(&batch, &CommandResult::Done).is_empty());
}

#[test]
fn changed_app_only_for_accepted_app_commands() {
    let deploy = Command::Deploy(VersionDeploy {
        app: "a".into(),
        bundle: vec![],
        now_ms: 0,
        versions_keep: 1,
        parts: DeployParts::Bundle,
    });
    assert_eq!(
        changed_app(&deploy, &CommandResult::Deployed { version: 1 }),
        Some("a")
    );
    let rejection = CommandResult::Rejected(ApplyError::AppNotFound { app: "a".into() });
    assert_eq!(changed_app(&deploy, &rejection), None);
    let kv = Command::Kv {
        app: "a".into(),
        op: KvOp::Delete { key: "k".into() },
        now_ms: 0,
    };
    assert_eq!(changed_app(&kv, &CommandResult::Done), None);
}

/// Runs `command` the way a follower applies an entry written long ago:
/// encoded (into the legacy variant `wire_index`, which is what writers of
/// the time produced), decoded, then applied.
fn run_from_log(f: &mut Fixture, command: Command, wire_index: u8) -> CommandResult {
    let bytes = crate::codec::encode(&command).expect("encode");
    assert_eq!(bytes[0], wire_index, "{command:?}");
    let decoded: Command =
        crate::codec::decode(&bytes, crate::codec::STORED_BYTES_MAX).expect("decode");
    assert_eq!(decoded, command);
    f.run(decoded)
}

/// Entries in each legacy shape decode to the current shape and apply as
/// they did before the upcast: a `Deploy` or `DeployApp` leaves the built
/// indexes alone (a deploy carrying an empty index list drops them), only
/// `DeployApp` stores a trigger set, a `KeyCreate` does not look for the app
/// its scope names, and an `AppDelete` keeps the app's keys and says `Done`.
#[test]
fn legacy_entries_decode_and_apply_as_they_always_did() {
    use crate::command::DocOp;
    use crate::docs::IndexDef;
    use crate::triggers::TriggerSet;
    let mut f = Fixture::new();
    let built = vec![IndexDef {
        name: "by_x".into(),
        collection: "c".into(),
        fields: vec!["x".into()],
        unique: true,
    }];
    let deploy = |parts: DeployParts| {
        Command::Deploy(VersionDeploy {
            app: "shop".into(),
            bundle: b"code".to_vec(),
            now_ms: 1,
            versions_keep: 10,
            parts,
        })
    };
    let full = |indexes: Vec<IndexDef>| DeployParts::Full {
        triggers: TriggerSet::default(),
        indexes,
        create_app: true,
    };
    let with_indexes = deploy(full(built.clone()));
    assert_eq!(
        run_from_log(&mut f, with_indexes, 22),
        CommandResult::Deployed { version: 1 }
    );
    let insert = Command::Docs {
        app: "shop".into(),
        ops: vec![DocOp::Insert {
            collection: "c".into(),
            id: "1".into(),
            doc: b"{\"x\":1}".to_vec(),
        }],
        now_ms: 2,
    };
    assert!(matches!(f.run(insert), CommandResult::Docs(_)));

    // Deploy (index 4): no trigger set, the built indexes stay.
    let result = run_from_log(&mut f, deploy(DeployParts::Bundle), 4);
    assert_eq!(result, CommandResult::Deployed { version: 2 });
    assert_eq!(f.reader.trigger_set("shop").expect("triggers"), None);
    assert_eq!(f.reader.indexes("shop").expect("indexes"), built);

    // DeployApp (index 14): the trigger set is stored, the indexes stay.
    let triggers = TriggerSet {
        outbox_max: 7,
        ..TriggerSet::default()
    };
    let result = run_from_log(
        &mut f,
        deploy(DeployParts::WithTriggers(triggers.clone())),
        14,
    );
    assert_eq!(result, CommandResult::Deployed { version: 3 });
    assert_eq!(
        f.reader.trigger_set("shop").expect("triggers"),
        Some(triggers)
    );
    assert_eq!(f.reader.indexes("shop").expect("indexes"), built);

    // What a deploy written today with no indexes does instead.
    let current = deploy(full(vec![]));
    assert_eq!(
        run_from_log(&mut f, current, 22),
        CommandResult::Deployed { version: 4 }
    );
    assert_eq!(f.reader.indexes("shop").expect("indexes"), vec![]);

    // KeyCreate (index 6): a key scoped to a missing app is stored.
    let key = |id: &str, scope: &str, scoped_app_must_exist| Command::KeyCreate {
        id: id.into(),
        name: id.into(),
        scope: scope.into(),
        secret_hash: vec![1],
        now_ms: 3,
        scoped_app_must_exist,
    };
    let result = run_from_log(&mut f, key("old", "deploy:ghost", false), 6);
    assert_eq!(result, CommandResult::Done);
    let result = run_from_log(&mut f, key("new", "deploy:ghost", true), 29);
    assert_eq!(
        result,
        rejected(ApplyError::AppNotFound {
            app: "ghost".into()
        })
    );
    let result = run_from_log(&mut f, key("shop-key", "deploy:shop", true), 29);
    assert_eq!(result, CommandResult::Done);

    // AppDelete (index 3): the app goes, its key stays, the result is Done.
    let delete = Command::AppDelete {
        app: "shop".into(),
        revoke_keys: false,
    };
    assert_eq!(run_from_log(&mut f, delete, 3), CommandResult::Done);
    assert_eq!(f.reader.app("shop").expect("app"), None);
    assert!(f.reader.key("shop-key").expect("key").is_some());
}

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
            parts: DeployParts::Bundle,
        }),
        Command::Deploy(VersionDeploy {
            app: "new".into(),
            bundle: b"b2".to_vec(),
            now_ms: 4,
            versions_keep: 1,
            parts: DeployParts::Bundle,
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
            parts: DeployParts::Bundle,
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
