//! What the tests of every area share: a [`Fixture`] that applies commands
//! at increasing log indexes, small command builders, and [`CrashAfter`],
//! which fails backend batches past a budget like a crash would. Plus the
//! tests of the dispatch itself (which commands changed an app).

use std::sync::Arc;

use openraft::{CommittedLeaderId, LogId};

use super::{apply, changed_app, changed_apps};
use crate::backend::{
    Backend, BackendError, KeyValue, Keyspace, ScanItem, SledBackend, SledOptions, WriteBatch,
};
use crate::command::{ApplyError, Command, CommandResult, KvOp, KvOpResult, VersionDeploy};
use crate::keys;
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
            triggers: None,
            indexes: None,
            create_app: true,
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
        triggers: None,
        indexes: None,
        create_app: true,
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
    let deploy = |triggers: Option<TriggerSet>, indexes: Option<Vec<IndexDef>>| {
        Command::Deploy(VersionDeploy {
            app: "shop".into(),
            bundle: b"code".to_vec(),
            now_ms: 1,
            versions_keep: 10,
            triggers,
            indexes,
            create_app: true,
        })
    };
    let with_indexes = deploy(Some(TriggerSet::default()), Some(built.clone()));
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
    let result = run_from_log(&mut f, deploy(None, None), 4);
    assert_eq!(result, CommandResult::Deployed { version: 2 });
    assert_eq!(f.reader.trigger_set("shop").expect("triggers"), None);
    assert_eq!(f.reader.indexes("shop").expect("indexes"), built);

    // DeployApp (index 14): the trigger set is stored, the indexes stay.
    let triggers = TriggerSet {
        outbox_max: 7,
        ..TriggerSet::default()
    };
    let result = run_from_log(&mut f, deploy(Some(triggers.clone()), None), 14);
    assert_eq!(result, CommandResult::Deployed { version: 3 });
    assert_eq!(
        f.reader.trigger_set("shop").expect("triggers"),
        Some(triggers)
    );
    assert_eq!(f.reader.indexes("shop").expect("indexes"), built);

    // What a deploy written today with no indexes does instead.
    let current = deploy(Some(TriggerSet::default()), Some(vec![]));
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
