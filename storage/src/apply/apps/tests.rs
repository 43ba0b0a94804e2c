//! Apps and their code: create and delete (all of an app's data, however
//! large, and nothing of another app's), deploy versions that are never
//! reused and pruned oldest first, roll back; and `PublishLib`: versions
//! count up, are never reused after pruning, and the files of kept versions
//! read back exactly.

use crate::apply::tests::{Fixture, rejected};
use crate::backend::{BULK_DELETE_BATCH_KEYS, Backend, Keyspace, WriteBatch};
use crate::codec;
use crate::command::{ApplyError, Command, CommandResult};
use crate::keys::{self, StoredValue};

fn publish(f: &mut Fixture, name: &str, files: &str, now_ms: u64) -> CommandResult {
    f.run(Command::PublishLib {
        name: name.into(),
        files: files.as_bytes().to_vec(),
        now_ms,
        versions_keep: 2,
    })
}

#[test]
fn versions_count_up_prune_and_never_repeat() {
    let mut f = Fixture::new();
    for (version, files) in [(1, "one"), (2, "two"), (3, "three")] {
        assert_eq!(
            publish(&mut f, "mathx", files, version * 10),
            CommandResult::LibPublished { version }
        );
    }
    assert_eq!(
        publish(&mut f, "other", "x", 5),
        CommandResult::LibPublished { version: 1 }
    );
    let libs = f.reader.libs().expect("libs");
    assert_eq!(
        libs.iter().map(|lib| lib.name.as_str()).collect::<Vec<_>>(),
        ["mathx", "other"]
    );
    let mathx = &libs[0];
    assert_eq!(mathx.latest_version, 3);
    assert_eq!(
        mathx
            .versions
            .iter()
            .map(|v| (v.version, v.created_ms, v.files_bytes))
            .collect::<Vec<_>>(),
        [(2, 20, 3), (3, 30, 5)]
    );
    assert_eq!(f.reader.lib_files("mathx", 1).expect("read"), None);
    assert_eq!(
        f.reader.lib_files("mathx", 3).expect("read"),
        Some(b"three".to_vec())
    );
    assert_eq!(f.reader.lib_files("mathx", 9).expect("read"), None);
}

#[test]
fn publish_runs_inside_a_batch() {
    let mut f = Fixture::new();
    let result = f.run(Command::Batch(vec![
        Command::PublishLib {
            name: "a".into(),
            files: b"1".to_vec(),
            now_ms: 1,
            versions_keep: 5,
        },
        Command::PublishLib {
            name: "a".into(),
            files: b"2".to_vec(),
            now_ms: 2,
            versions_keep: 5,
        },
    ]));
    assert_eq!(
        result,
        CommandResult::Batch(vec![
            CommandResult::LibPublished { version: 1 },
            CommandResult::LibPublished { version: 2 },
        ])
    );
    assert_eq!(
        f.reader.lib_files("a", 2).expect("read"),
        Some(b"2".to_vec())
    );
}

#[test]
fn deploy_allocates_versions_prunes_and_rolls_back() {
    let mut f = Fixture::new();
    // Deploy creates the app.
    assert_eq!(
        f.deploy("app", "v1", 2),
        CommandResult::Deployed { version: 1 }
    );
    let record = f.reader.app("app").expect("app").expect("created");
    assert_eq!(
        (
            record.active_version,
            record.latest_version,
            record.created_ms
        ),
        (Some(1), 1, 10)
    );
    assert_eq!(
        f.deploy("app", "v2", 2),
        CommandResult::Deployed { version: 2 }
    );
    assert_eq!(
        f.deploy("app", "v3", 2),
        CommandResult::Deployed { version: 3 }
    );
    assert_eq!(f.versions("app"), [2, 3]);
    assert_eq!(f.reader.bundle("app", 1).expect("bundle"), None);
    assert_eq!(
        f.reader.bundle("app", 3).expect("bundle"),
        Some(b"v3".to_vec())
    );
    assert_eq!(f.reader.deploys("app").expect("deploys")[1].bundle_bytes, 2);

    assert_eq!(
        f.rollback("app", None),
        CommandResult::RolledBack { version: 2 }
    );
    assert_eq!(
        f.rollback("app", None),
        rejected(ApplyError::NoEarlierVersion { app: "app".into() })
    );
    assert_eq!(
        f.rollback("app", Some(1)),
        rejected(ApplyError::VersionNotFound {
            app: "app".into(),
            version: 1
        })
    );
    assert_eq!(
        f.rollback("app", Some(3)),
        CommandResult::RolledBack { version: 3 }
    );
    assert_eq!(
        f.reader
            .app("app")
            .expect("app")
            .expect("app")
            .active_version,
        Some(3)
    );

    // Versions are never reused, even after pruning.
    assert_eq!(
        f.deploy("app", "v4", 2),
        CommandResult::Deployed { version: 4 }
    );
    assert_eq!(f.versions("app"), [3, 4]);
    // versions_keep = 0 still keeps the active version.
    assert_eq!(
        f.deploy("app", "v5", 0),
        CommandResult::Deployed { version: 5 }
    );
    assert_eq!(f.versions("app"), [5]);
    let record = f.reader.app("app").expect("app").expect("app");
    assert_eq!((record.active_version, record.latest_version), (Some(5), 5));
    assert_eq!(
        f.rollback("app", None),
        rejected(ApplyError::NoEarlierVersion { app: "app".into() })
    );
    assert_eq!(
        f.rollback("ghost", None),
        rejected(ApplyError::AppNotFound {
            app: "ghost".into()
        })
    );
}

#[test]
fn rollback_then_deploy_prunes_oldest_first() {
    let mut f = Fixture::new();
    for _ in 0..4 {
        f.deploy("app", "b", 10);
    }
    assert_eq!(
        f.rollback("app", Some(1)),
        CommandResult::RolledBack { version: 1 }
    );
    assert_eq!(
        f.deploy("app", "b", 3),
        CommandResult::Deployed { version: 5 }
    );
    assert_eq!(f.versions("app"), [3, 4, 5]);
}

#[test]
fn app_create_and_delete() {
    let mut f = Fixture::new();
    f.create("app");
    assert_eq!(
        f.run(Command::AppCreate {
            app: "app".into(),
            now_ms: 2
        }),
        rejected(ApplyError::AppExists { app: "app".into() })
    );
    let record = f.reader.app("app").expect("app").expect("app");
    assert_eq!((record.active_version, record.latest_version), (None, 0));
    assert_eq!(
        f.run(Command::AppDelete {
            app: "app".into(),
            revoke_keys: false
        }),
        CommandResult::Done
    );
    assert_eq!(f.reader.app("app").expect("app"), None);
    assert_eq!(
        f.run(Command::AppDelete {
            app: "app".into(),
            revoke_keys: false
        }),
        rejected(ApplyError::AppNotFound { app: "app".into() })
    );
}

#[test]
fn app_delete_removes_only_that_app_even_when_large() {
    let mut f = Fixture::new();
    f.create("a");
    f.create("a/b");
    f.create("ab");
    // Names chosen so a naive "app + '/' + key" encoding would collide.
    f.set("a", "b/c", "\"of a\"", None);
    f.set("a/b", "c", "\"of a/b\"", None);
    f.set("ab", "", "\"of ab\"", None);
    assert_eq!(f.get("a", "b/c", 0).as_deref(), Some("\"of a\""));
    assert_eq!(f.get("a/b", "c", 0).as_deref(), Some("\"of a/b\""));
    assert_eq!(f.get("a", "b", 0), None);
    let many = (BULK_DELETE_BATCH_KEYS * 2 + 10) as u64;
    let mut batch = WriteBatch::new();
    for i in 0..many {
        let stored = StoredValue {
            value: b"1".to_vec(),
            expires_at_ms: None,
        };
        batch.insert(
            Keyspace::Kv,
            keys::kv_key("a", &format!("k{i:05}")),
            codec::encode(&stored).expect("encode"),
        );
    }
    f.backend.apply_batch(batch).expect("batch");
    f.deploy("a", "bundle", 3);
    f.deploy("a/b", "bundle", 3);

    assert_eq!(
        f.run(Command::AppDelete {
            app: "a".into(),
            revoke_keys: false
        }),
        CommandResult::Done
    );
    assert_eq!(
        f.reader
            .kv_list("a", "", None, 10, usize::MAX, 0)
            .expect("list")
            .items,
        vec![]
    );
    assert_eq!(f.reader.deploys("a").expect("deploys"), vec![]);
    assert_eq!(f.reader.bundle("a", 1).expect("bundle"), None);
    assert_eq!(f.get("a/b", "c", 0).as_deref(), Some("\"of a/b\""));
    assert_eq!(f.get("ab", "", 0).as_deref(), Some("\"of ab\""));
    assert_eq!(f.versions("a/b"), [1]);
    let names: Vec<_> = f
        .reader
        .apps()
        .expect("apps")
        .into_iter()
        .map(|app| app.name)
        .collect();
    assert_eq!(names, ["a/b", "ab"]);

    // A recreated app starts empty, and its versions start over.
    f.create("a");
    assert_eq!(f.get("a", "b/c", 0), None);
    assert_eq!(
        f.deploy("a", "bundle", 3),
        CommandResult::Deployed { version: 1 }
    );
}
