//! The state machine through openraft's traits: events, snapshots built on
//! one store and installed on another, recovery at open.

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder};
use picloud_storage::files::FileLimits;
use picloud_storage::{
    AppliedEvent, Command, CommandResult, DeployParts, KvOp, NodeInfo, StateReader, Storage,
    StorageOptions, TypeConfig, VersionDeploy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn open(dir: &std::path::Path) -> Storage {
    let options = StorageOptions {
        cache_capacity_bytes: 8 << 20,
        events_capacity: 16,
    };
    picloud_storage::open(dir, &options).expect("open storage")
}

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn normal(index: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(command),
    }
}

fn membership(index: u64) -> Entry<TypeConfig> {
    let mut nodes = BTreeMap::new();
    nodes.insert(
        1,
        NodeInfo {
            http: "127.0.0.1:8080".into(),
            peer: "127.0.0.1:9090".into(),
        },
    );
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes)),
    }
}

/// Entries that build a state worth snapshotting: two apps, thousands of
/// keys (some expiring), deploys and API keys. Returns the next free index.
fn populate() -> (Vec<Entry<TypeConfig>>, u64) {
    let mut entries = vec![membership(1)];
    let mut index = 2;
    let mut push = |command: Command, entries: &mut Vec<Entry<TypeConfig>>| {
        entries.push(normal(index, command));
        index += 1;
    };
    for app in ["shop", "blog"] {
        push(
            Command::AppCreate {
                app: app.into(),
                now_ms: 1,
            },
            &mut entries,
        );
        for version in 0..3 {
            push(
                Command::Deploy(VersionDeploy {
                    app: app.into(),
                    bundle: format!("{app} bundle {version}").into_bytes(),
                    now_ms: 2,
                    versions_keep: 2,
                    parts: DeployParts::Bundle,
                }),
                &mut entries,
            );
        }
    }
    for i in 0..3000u64 {
        let app = if i % 3 == 0 { "blog" } else { "shop" };
        push(
            Command::Kv {
                app: app.into(),
                op: KvOp::Set {
                    key: format!("key/{i:05}"),
                    value: format!("{{\"n\":{i}}}").into_bytes(),
                    expires_at_ms: (i % 10 == 0).then_some(1_000),
                },
                now_ms: 5,
            },
            &mut entries,
        );
    }
    // Durable pub/sub history (trimmed to 5) and a realtime signing key.
    for n in 0..8 {
        push(
            Command::Publish {
                app: "shop".into(),
                topic: "orders/new".into(),
                message: format!("{{\"n\":{n}}}").into_bytes(),
                retain: 5,
                now_ms: 5,
            },
            &mut entries,
        );
    }
    // Files: one inline, two sharing a block (same content in two apps).
    let limits = FileLimits {
        file_bytes_max: 1 << 30,
        app_bytes_max: 1 << 40,
        app_files_max: 1000,
    };
    for (app, path, size, inline, blocks) in [
        ("shop", "logo.txt", 5, Some(b"hello".to_vec()), vec![]),
        (
            "shop",
            "big/a.bin",
            2 << 20,
            None,
            vec![[1u8; 32], [2u8; 32]],
        ),
        ("blog", "copy.bin", 1 << 20, None, vec![[1u8; 32]]),
    ] {
        push(
            Command::FilePut {
                app: app.into(),
                path: path.into(),
                size,
                content_type: "application/octet-stream".into(),
                sha256: [9; 32],
                blocks,
                inline,
                limits,
                depth: 1,
                now_ms: 5,
            },
            &mut entries,
        );
    }
    push(
        Command::RealtimeKeySet {
            app: "shop".into(),
            sealed: vec![6; 40],
            only_if_absent: true,
        },
        &mut entries,
    );
    push(
        Command::KeyCreate {
            id: "key-1".into(),
            name: "ci".into(),
            scope: "admin".into(),
            secret_hash: vec![7; 32],
            now_ms: 3,
            scoped_app_must_exist: false,
        },
        &mut entries,
    );
    // Cluster records: ids 2, 3 and 4 allocated, 3 removed, a join secret
    // and the cluster CA.
    for _ in 0..3 {
        push(Command::AllocateNodeId { now_ms: 4 }, &mut entries);
    }
    push(Command::RemoveNode { id: 3, now_ms: 4 }, &mut entries);
    push(
        Command::SetJoinSecret {
            secret: vec![8; 32],
            now_ms: 4,
        },
        &mut entries,
    );
    push(
        Command::SetClusterCa {
            cert_pem: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n".into(),
        },
        &mut entries,
    );
    (entries, index)
}

/// Everything a reader can see, for comparing two states.
fn dump(reader: &StateReader, now_ms: u64) -> String {
    let mut out = String::new();
    let apps = reader.apps().expect("apps");
    out.push_str(&format!("{apps:?}\n{:?}\n", reader.keys().expect("keys")));
    for app in &apps {
        let deploys = reader.deploys(&app.name).expect("deploys");
        for deploy in &deploys {
            let bundle = reader.bundle(&app.name, deploy.version).expect("bundle");
            out.push_str(&format!("{deploy:?} {bundle:?}\n"));
        }
        out.push_str(&format!(
            "{:?} {:?}\n",
            reader
                .topic_read(&app.name, "orders/new", 0, 100)
                .expect("topic"),
            reader.realtime_key(&app.name).expect("realtime key"),
        ));
        for (path, record) in reader.files_list(&app.name, "", None, 100).expect("files") {
            out.push_str(&format!(
                "file {path} {record:?} {:?}\n",
                reader.file_blocks(&app.name, &path).expect("blocks")
            ));
        }
        out.push_str(&format!(
            "{:?}\n",
            reader.files_usage(&app.name).expect("usage")
        ));
        let mut after: Option<String> = None;
        loop {
            let page = reader
                .kv_list(&app.name, "", after.as_deref(), 500, usize::MAX, now_ms)
                .expect("list");
            for (key, value) in &page.items {
                out.push_str(&format!(
                    "{} {key} {}\n",
                    app.name,
                    String::from_utf8_lossy(value)
                ));
            }
            match page.cursor {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
    }
    out.push_str(&format!(
        "next node id {}\nremoved {:?}\njoin secret {:?}\nca {:?}\n",
        reader.next_node_id().expect("next node id"),
        reader.removed_nodes().expect("removed nodes"),
        reader.join_secret().expect("join secret"),
        reader.cluster_ca().expect("cluster ca"),
    ));
    for hash in reader.blocks_page(None, 100).expect("blocks page") {
        out.push_str(&format!(
            "block {hash:?} {}\n",
            reader.block_refs(&hash).expect("refs")
        ));
    }
    out.push_str(&format!(
        "applied {:?}\n",
        reader.last_applied_index().expect("index")
    ));
    out
}

async fn copy_in_chunks(from: &mut tokio::fs::File, to: &mut tokio::fs::File) {
    // What openraft's chunked transfer does: write chunks into the handle
    // `begin_receiving_snapshot` returned, then hand it to install.
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = from.read(&mut chunk).await.expect("read snapshot");
        if read == 0 {
            break;
        }
        to.write_all(&chunk[..read]).await.expect("write chunk");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reports_results_and_app_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut storage = open(dir.path());
    let mut events = storage.reader.subscribe();
    let results = storage
        .state_machine
        .apply(vec![
            membership(1),
            normal(
                2,
                Command::Deploy(VersionDeploy {
                    app: "a".into(),
                    bundle: b"x".to_vec(),
                    now_ms: 1,
                    versions_keep: 3,
                    parts: DeployParts::Bundle,
                }),
            ),
            normal(
                3,
                Command::Kv {
                    app: "a".into(),
                    op: KvOp::Incr {
                        key: "n".into(),
                        by: 2,
                    },
                    now_ms: 1,
                },
            ),
            normal(
                4,
                Command::AppDelete {
                    app: "missing".into(),
                    revoke_keys: false,
                },
            ),
        ])
        .await
        .expect("apply");
    assert_eq!(results[1], CommandResult::Deployed { version: 1 });
    assert_eq!(
        results[2],
        CommandResult::Kv(picloud_storage::KvOpResult::Incr { value: 2 })
    );
    assert!(matches!(results[3], CommandResult::Rejected(_)));
    assert_eq!(
        events.try_recv().expect("deploy event"),
        AppliedEvent::AppChanged { app: "a".into() }
    );
    assert!(
        events.try_recv().is_err(),
        "a rejected delete sends no event"
    );
    let (applied, membership) = storage.state_machine.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(4)));
    assert_eq!(membership.log_id(), &Some(log_id(1)));
    assert_eq!(storage.reader.last_applied_index().expect("index"), Some(4));
}

/// A `Command::Batch` entry through openraft's `apply`: one result per
/// inner command, one applied index, one event per app-changing inner
/// command, and the state survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_entry_applies_every_inner_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut storage = open(dir.path());
    let mut events = storage.reader.subscribe();
    let incr = |key: &str| Command::Kv {
        app: "a".into(),
        op: KvOp::Incr {
            key: key.into(),
            by: 1,
        },
        now_ms: 1,
    };
    let results = storage
        .state_machine
        .apply(vec![
            membership(1),
            normal(
                2,
                Command::Batch(vec![
                    Command::AppCreate {
                        app: "a".into(),
                        now_ms: 1,
                    },
                    incr("n"),
                    incr("n"),
                    Command::AppDelete {
                        app: "missing".into(),
                        revoke_keys: false,
                    },
                    Command::Batch(vec![]),
                    Command::Deploy(VersionDeploy {
                        app: "b".into(),
                        bundle: b"x".to_vec(),
                        now_ms: 1,
                        versions_keep: 3,
                        parts: DeployParts::Bundle,
                    }),
                ]),
            ),
            normal(3, incr("n")),
        ])
        .await
        .expect("apply");
    let CommandResult::Batch(inner) = &results[1] else {
        panic!("a batch entry yields a batch result: {:?}", results[1]);
    };
    assert_eq!(inner.len(), 6);
    assert_eq!(inner[0], CommandResult::Done);
    assert_eq!(
        inner[1..3],
        [
            CommandResult::Kv(picloud_storage::KvOpResult::Incr { value: 1 }),
            CommandResult::Kv(picloud_storage::KvOpResult::Incr { value: 2 }),
        ]
    );
    assert!(matches!(inner[3], CommandResult::Rejected(_)));
    assert_eq!(
        inner[4],
        CommandResult::Rejected(picloud_storage::ApplyError::NestedBatch)
    );
    assert_eq!(inner[5], CommandResult::Deployed { version: 1 });
    assert_eq!(
        results[2],
        CommandResult::Kv(picloud_storage::KvOpResult::Incr { value: 3 })
    );
    for app in ["a", "b"] {
        assert_eq!(
            events.try_recv().expect("event"),
            AppliedEvent::AppChanged { app: app.into() }
        );
    }
    assert!(events.try_recv().is_err(), "no event for rejected commands");
    let (applied, _) = storage.state_machine.applied_state().await.expect("state");
    assert_eq!(applied, Some(log_id(3)));

    drop(storage);
    let storage = open(dir.path());
    assert_eq!(
        storage.reader.kv_get("a", "n", 1).expect("get"),
        Some(b"3".to_vec())
    );
    assert_eq!(
        storage.reader.bundle("b", 1).expect("bundle"),
        Some(b"x".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_round_trip_between_stores() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(leader_dir.path());
    let (entries, next_index) = populate();
    leader.state_machine.apply(entries).await.expect("apply");
    let expected = dump(&leader.reader, 10);
    assert!(expected.contains("file big/a.bin"), "{expected}");
    assert!(
        expected.contains(&format!("block {:?} 2", [1u8; 32])),
        "{expected}"
    );
    assert_eq!(leader.reader.next_node_id().expect("next"), 5);
    assert_eq!(leader.reader.removed_nodes().expect("removed"), [3]);
    assert!(leader.reader.cluster_ca().expect("ca").is_some());

    let built: Snapshot<TypeConfig> = leader
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(built.meta.last_log_id, Some(log_id(next_index - 1)));
    // Applying after the build does not change the built snapshot.
    leader
        .state_machine
        .apply(vec![normal(
            next_index,
            Command::AppDelete {
                app: "shop".into(),
                revoke_keys: false,
            },
        )])
        .await
        .expect("apply after build");

    let follower_dir = tempfile::tempdir().expect("tempdir");
    let mut follower = open(follower_dir.path());
    // The follower had state of its own; install replaces all of it.
    follower
        .state_machine
        .apply(vec![
            membership(1),
            normal(
                2,
                Command::AppCreate {
                    app: "stale".into(),
                    now_ms: 0,
                },
            ),
            normal(3, Command::AllocateNodeId { now_ms: 0 }),
            normal(4, Command::RemoveNode { id: 42, now_ms: 0 }),
            normal(
                5,
                Command::SetJoinSecret {
                    secret: vec![1; 32],
                    now_ms: 0,
                },
            ),
        ])
        .await
        .expect("apply");
    let mut events = follower.reader.subscribe();

    let mut current = leader
        .state_machine
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("a snapshot exists");
    assert_eq!(current.meta, built.meta);
    let mut receiving = follower
        .state_machine
        .begin_receiving_snapshot()
        .await
        .expect("begin");
    copy_in_chunks(&mut current.snapshot, &mut receiving).await;
    follower
        .state_machine
        .install_snapshot(&current.meta, receiving)
        .await
        .expect("install");

    assert_eq!(dump(&follower.reader, 10), expected);
    // The cluster records are the leader's, the follower's own are gone.
    assert_eq!(follower.reader.next_node_id().expect("next"), 5);
    assert_eq!(follower.reader.removed_nodes().expect("removed"), [3]);
    assert!(!follower.reader.is_removed(42).expect("is removed"));
    assert_eq!(
        follower.reader.join_secret().expect("secret"),
        Some(vec![8; 32])
    );
    // Expired keys are in the snapshot too, and expire the same way.
    assert_eq!(
        follower
            .reader
            .kv_get("blog", "key/00000", 999)
            .expect("get"),
        Some(b"{\"n\":0}".to_vec())
    );
    let (applied, membership) = follower.state_machine.applied_state().await.expect("state");
    assert_eq!(applied, built.meta.last_log_id);
    assert_eq!(&membership, &built.meta.last_membership);
    let follower_current = follower
        .state_machine
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("installed snapshot is current");
    assert_eq!(follower_current.meta, built.meta);

    let mut changed = BTreeSet::new();
    while let Ok(AppliedEvent::AppChanged { app }) = events.try_recv() {
        changed.insert(app);
    }
    assert_eq!(
        changed,
        BTreeSet::from(["blog".to_string(), "shop".into(), "stale".into()])
    );

    // Installed state survives a restart and keeps applying.
    drop(follower);
    let mut follower = open(follower_dir.path());
    assert_eq!(dump(&follower.reader, 10), expected);
    follower
        .state_machine
        .apply(vec![normal(
            next_index,
            Command::AppDelete {
                app: "shop".into(),
                revoke_keys: false,
            },
        )])
        .await
        .expect("apply after install");
    assert_eq!(follower.reader.app("shop").expect("app"), None);
    assert_eq!(dump(&follower.reader, 10), dump(&leader.reader, 10));
    // Ids keep growing after an install, on both, and agree.
    let allocate = vec![normal(
        next_index + 1,
        Command::AllocateNodeId { now_ms: 11 },
    )];
    for storage in [&mut leader, &mut follower] {
        let results = storage
            .state_machine
            .apply(allocate.clone())
            .await
            .expect("allocate after install");
        assert_eq!(results, [CommandResult::NodeIdAllocated { id: 5 }]);
    }
    assert_eq!(dump(&follower.reader, 10), dump(&leader.reader, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_snapshot_is_rejected_and_state_kept() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(leader_dir.path());
    let (entries, _) = populate();
    leader.state_machine.apply(entries).await.expect("apply");
    let snapshot = leader
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let mut bytes = Vec::new();
    let mut file = snapshot.snapshot;
    file.read_to_end(&mut bytes).await.expect("read");

    let follower_dir = tempfile::tempdir().expect("tempdir");
    let mut follower = open(follower_dir.path());
    follower
        .state_machine
        .apply(vec![
            membership(1),
            normal(
                2,
                Command::AppCreate {
                    app: "mine".into(),
                    now_ms: 0,
                },
            ),
        ])
        .await
        .expect("apply");
    let before = dump(&follower.reader, 10);

    for damage in ["flip", "truncate"] {
        let mut damaged = bytes.clone();
        match damage {
            "flip" => {
                let middle = damaged.len() / 2;
                damaged[middle] ^= 0x55;
            }
            _ => damaged.truncate(damaged.len() - 5),
        }
        let mut receiving = follower
            .state_machine
            .begin_receiving_snapshot()
            .await
            .expect("begin");
        receiving.write_all(&damaged).await.expect("write");
        let result = follower
            .state_machine
            .install_snapshot(&snapshot.meta, receiving)
            .await;
        assert!(
            result.is_err(),
            "{damage}: damaged snapshot must not install"
        );
        assert_eq!(
            dump(&follower.reader, 10),
            before,
            "{damage}: state untouched"
        );
        assert!(
            follower
                .state_machine
                .get_current_snapshot()
                .await
                .expect("current")
                .is_none()
        );
    }
}

/// A crash after the new snapshot became current but before the install
/// finished leaves a state behind its snapshot: opening installs it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reinstalls_a_snapshot_the_state_is_behind() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = open(leader_dir.path());
    let (entries, _) = populate();
    leader.state_machine.apply(entries).await.expect("apply");
    let snapshot = leader
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let expected = dump(&leader.reader, 10);

    let crashed_dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(crashed_dir.path().join("snapshots")).expect("mkdir");
    let mut bytes = Vec::new();
    let mut file = snapshot.snapshot;
    file.read_to_end(&mut bytes).await.expect("read");
    std::fs::write(crashed_dir.path().join("snapshots/current.snap"), bytes).expect("write");
    std::fs::write(crashed_dir.path().join("snapshots/receive-7.tmp"), b"junk").expect("write");

    let mut reopened = open(crashed_dir.path());
    assert_eq!(dump(&reopened.reader, 10), expected);
    let current = reopened
        .state_machine
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("snapshot");
    assert_eq!(current.meta, snapshot.meta);
    assert!(!crashed_dir.path().join("snapshots/receive-7.tmp").exists());
}
