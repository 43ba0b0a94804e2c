use super::super::tests::{CrashAfter, Fixture};
use crate::backend::{Backend, Keyspace};
use crate::command::{ApplyError, Command, CommandResult, DeployParts, VersionDeploy};
use crate::files::{BLOCK_BYTES, BlockHash, FileLimits, FilesUsage, INLINE_BYTES_MAX};
use crate::triggers::{TriggerDef, TriggerDefKind, TriggerEvent, TriggerSet};

const LIMITS: FileLimits = FileLimits {
    file_bytes_max: 1 << 30,
    app_bytes_max: 1 << 40,
    app_files_max: 1_000,
};

fn hash(n: u8) -> BlockHash {
    [n; 32]
}

/// A `FilePut` of a consistent file: inline when `size` allows, else one
/// block per MiB named `blocks`.
fn put_command(app: &str, path: &str, size: u64, blocks: &[u8], limits: FileLimits) -> Command {
    let inline = (size <= INLINE_BYTES_MAX).then(|| vec![b'x'; size as usize]);
    Command::FilePut {
        app: app.into(),
        path: path.into(),
        size,
        content_type: "image/png".into(),
        sha256: [size as u8; 32],
        blocks: blocks.iter().map(|n| hash(*n)).collect(),
        inline,
        limits,
        depth: 1,
        now_ms: 100,
    }
}

fn put(f: &mut Fixture, app: &str, path: &str, size: u64, blocks: &[u8]) -> CommandResult {
    f.run(put_command(app, path, size, blocks, LIMITS))
}

fn delete(f: &mut Fixture, app: &str, path: &str) -> CommandResult {
    f.run(Command::FileDelete {
        app: app.into(),
        path: path.into(),
        depth: 1,
        now_ms: 200,
    })
}

fn refs(f: &Fixture, n: u8) -> u64 {
    f.reader.block_refs(&hash(n)).expect("refs")
}

fn usage(f: &Fixture, app: &str) -> FilesUsage {
    f.reader.files_usage(app).expect("usage")
}

fn rejected(error: ApplyError) -> CommandResult {
    CommandResult::Rejected(error)
}

/// Every `FileIndex` row left, to prove nothing leaks.
fn index_rows(f: &Fixture) -> usize {
    f.backend.scan(Keyspace::FileIndex, &[], &[]).count()
}

#[test]
fn put_overwrite_and_delete_keep_records_refcounts_and_usage_in_step() {
    let mut f = Fixture::new();
    f.create("a");
    let two_mib = 2 * BLOCK_BYTES;
    assert_eq!(
        put(&mut f, "a", "p/1.bin", two_mib, &[1, 2]),
        CommandResult::FileWritten { created: true }
    );
    let record = f.reader.file("a", "p/1.bin").expect("file").expect("some");
    assert_eq!(
        (record.size, record.blocks, record.inline.as_ref()),
        (two_mib, 2, None)
    );
    assert_eq!((record.created_ms, record.updated_ms), (100, 100));
    assert_eq!(
        f.reader.file_blocks("a", "p/1.bin").expect("blocks"),
        vec![hash(1), hash(2)]
    );
    assert_eq!((refs(&f, 1), refs(&f, 2)), (1, 1));
    assert_eq!(
        usage(&f, "a"),
        FilesUsage {
            bytes: two_mib,
            files: 1
        }
    );

    // An overwrite keeps `created_ms`, moves the references and counts the
    // difference in size (a block repeated inside one file counts twice).
    let mut overwrite = put_command("a", "p/1.bin", 3 * BLOCK_BYTES, &[2, 3, 3], LIMITS);
    if let Command::FilePut { now_ms, .. } = &mut overwrite {
        *now_ms = 150;
    }
    assert_eq!(
        f.run(overwrite),
        CommandResult::FileWritten { created: false }
    );
    let record = f.reader.file("a", "p/1.bin").expect("file").expect("some");
    assert_eq!((record.created_ms, record.updated_ms), (100, 150));
    assert_eq!((refs(&f, 1), refs(&f, 2), refs(&f, 3)), (0, 1, 2));
    assert_eq!(
        usage(&f, "a"),
        FilesUsage {
            bytes: 3 * BLOCK_BYTES,
            files: 1
        }
    );

    // An overwrite with an inline file drops the block list.
    assert_eq!(
        put(&mut f, "a", "p/1.bin", 10, &[]),
        CommandResult::FileWritten { created: false }
    );
    assert!(
        f.reader
            .file_blocks("a", "p/1.bin")
            .expect("blocks")
            .is_empty()
    );
    let record = f.reader.file("a", "p/1.bin").expect("file").expect("some");
    assert_eq!(record.inline, Some(vec![b'x'; 10]));
    assert_eq!((refs(&f, 2), refs(&f, 3)), (0, 0));

    assert_eq!(
        delete(&mut f, "a", "p/1.bin"),
        CommandResult::FileDeleted { existed: true }
    );
    assert_eq!(
        delete(&mut f, "a", "p/1.bin"),
        CommandResult::FileDeleted { existed: false }
    );
    assert_eq!(f.reader.file("a", "p/1.bin").expect("file"), None);
    assert_eq!(usage(&f, "a"), FilesUsage::default());
    assert_eq!(index_rows(&f), 0, "no block list, reference or usage left");
}

#[test]
fn identical_content_in_two_apps_shares_rows_and_app_delete_releases_its_share() {
    let mut f = Fixture::new();
    f.create("a");
    f.create("b");
    put(&mut f, "a", "x", 2 * BLOCK_BYTES, &[1, 2]);
    put(&mut f, "a", "y", BLOCK_BYTES, &[1]);
    put(&mut f, "b", "x", 2 * BLOCK_BYTES, &[1, 2]);
    assert_eq!((refs(&f, 1), refs(&f, 2)), (3, 2));
    assert_eq!(
        f.reader.blocks_page(None, 10).expect("page"),
        vec![hash(1), hash(2)],
        "one row per distinct block"
    );

    assert_eq!(
        f.run(Command::AppDelete {
            app: "a".into(),
            revoke_keys: false,
        }),
        CommandResult::Done
    );
    assert_eq!((refs(&f, 1), refs(&f, 2)), (1, 1));
    assert_eq!(f.reader.files_list("a", "", None, 10).expect("list"), []);
    assert_eq!(usage(&f, "a"), FilesUsage::default());
    assert!(f.reader.file_blocks("a", "x").expect("blocks").is_empty());
    assert!(f.reader.file("b", "x").expect("file").is_some());

    f.run(Command::AppDelete {
        app: "b".into(),
        revoke_keys: false,
    });
    assert_eq!(index_rows(&f), 0);
    assert_eq!(f.backend.scan(Keyspace::Files, &[], &[]).count(), 0);
}

/// An app with more files than one bulk batch removes, all on block 7,
/// which another app shares.
fn many_files() -> Fixture {
    let mut f = Fixture::new();
    f.create("a");
    f.create("b");
    let limits = FileLimits {
        app_files_max: u64::MAX,
        ..LIMITS
    };
    for n in 0..crate::backend::BULK_DELETE_BATCH_KEYS + 5 {
        let path = format!("f/{n:05}");
        f.run(put_command("a", &path, BLOCK_BYTES, &[7], limits));
    }
    put(&mut f, "b", "shared", BLOCK_BYTES, &[7]);
    f
}

/// `AppDelete` of an app with many files, interrupted at any backend batch
/// and applied again (a restart), releases each of its references exactly
/// once.
#[test]
fn app_delete_of_many_files_interrupted_anywhere_releases_every_reference_once() {
    let entry = Command::AppDelete {
        app: "a".into(),
        revoke_keys: false,
    };
    let mut crash_points = 0;
    for budget in 0.. {
        let f = many_files();
        assert_eq!(
            refs(&f, 7),
            crate::backend::BULK_DELETE_BATCH_KEYS as u64 + 6
        );
        let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), f.index + 1);
        let crashing = CrashAfter {
            inner: f.backend.clone(),
            budget: budget.into(),
        };
        if super::super::apply(&crashing, &log_id, &entry).is_ok() {
            break;
        }
        crash_points += 1;
        let resumed = super::super::apply(f.backend.as_ref(), &log_id, &entry).expect("re-apply");
        assert_eq!(resumed, CommandResult::Done, "budget {budget}");
        assert_eq!(
            refs(&f, 7),
            1,
            "budget {budget}: only b's reference is left"
        );
        assert_eq!(f.reader.files_list("a", "", None, 10).expect("list"), []);
        assert_eq!(usage(&f, "a"), FilesUsage::default());
        assert_eq!(
            f.backend.scan(Keyspace::FileIndex, b"l", b"l").count(),
            1,
            "budget {budget}: only b's block list is left"
        );
    }
    assert!(crash_points >= 2, "{crash_points} crash points");
}

#[test]
fn every_rejection_leaves_no_trace() {
    let mut f = Fixture::new();
    f.create("a");
    let consistent = put_command("a", "ok", 2 * BLOCK_BYTES, &[1, 2], LIMITS);
    let with = |change: &dyn Fn(&mut Command)| {
        let mut command = consistent.clone();
        change(&mut command);
        command
    };
    let invalid_file = |path: &str| ApplyError::InvalidFile {
        path: path.into(),
        message: String::new(),
    };
    let cases: Vec<(&str, Command, ApplyError)> = vec![
        (
            "no such app",
            put_command("nope", "x", 1, &[], LIMITS),
            ApplyError::AppNotFound { app: "nope".into() },
        ),
        (
            "absolute path",
            put_command("a", "/x", 1, &[], LIMITS),
            ApplyError::InvalidPath {
                path: "/x".into(),
                message: "the path starts with '/'".into(),
            },
        ),
        (
            "dot segment",
            put_command("a", "a/../b", 1, &[], LIMITS),
            ApplyError::InvalidPath {
                path: "a/../b".into(),
                message: "the path holds a '.' or '..' segment".into(),
            },
        ),
        (
            "inline bytes for a block file",
            with(&|c| {
                if let Command::FilePut { inline, .. } = c {
                    *inline = Some(vec![0; 4]);
                }
            }),
            invalid_file("ok"),
        ),
        (
            "no inline bytes for a small file",
            with(&|c| {
                if let Command::FilePut { size, blocks, .. } = c {
                    *size = 10;
                    blocks.clear();
                }
            }),
            invalid_file("ok"),
        ),
        (
            "inline length differs from size",
            with(&|c| {
                if let Command::FilePut {
                    size,
                    blocks,
                    inline,
                    ..
                } = c
                {
                    *size = 10;
                    blocks.clear();
                    *inline = Some(vec![0; 9]);
                }
            }),
            invalid_file("ok"),
        ),
        (
            "block count differs from size",
            with(&|c| {
                if let Command::FilePut { blocks, .. } = c {
                    blocks.push(hash(3));
                }
            }),
            invalid_file("ok"),
        ),
        (
            "content type too long",
            with(&|c| {
                if let Command::FilePut { content_type, .. } = c {
                    *content_type = "a".repeat(256);
                }
            }),
            invalid_file("ok"),
        ),
        (
            "file too large",
            put_command(
                "a",
                "ok",
                2 * BLOCK_BYTES,
                &[1, 2],
                FileLimits {
                    file_bytes_max: BLOCK_BYTES,
                    ..LIMITS
                },
            ),
            ApplyError::FileTooLarge {
                size: 2 * BLOCK_BYTES,
                max: BLOCK_BYTES,
            },
        ),
    ];
    for (case, command, expected) in cases {
        let result = f.run(command);
        // InvalidFile messages are prose: compare the variant and path only.
        match (&result, &expected) {
            (
                CommandResult::Rejected(ApplyError::InvalidFile { path, message }),
                ApplyError::InvalidFile { path: want, .. },
            ) => assert!(path == want && !message.is_empty(), "{case}: {result:?}"),
            _ => assert_eq!(result, rejected(expected), "{case}"),
        }
        assert_eq!(index_rows(&f), 0, "{case}");
        assert_eq!(
            f.backend.scan(Keyspace::Files, &[], &[]).count(),
            0,
            "{case}"
        );
    }
    assert_eq!(
        delete(&mut f, "nope", "x"),
        rejected(ApplyError::AppNotFound { app: "nope".into() })
    );
}

#[test]
fn quotas_count_bytes_and_files_and_an_overwrite_counts_the_difference() {
    let mut f = Fixture::new();
    f.create("a");
    let limits = FileLimits {
        file_bytes_max: 1 << 30,
        app_bytes_max: 3 * BLOCK_BYTES,
        app_files_max: 2,
    };
    let put_limited = |f: &mut Fixture, path: &str, mib: u64| {
        let blocks: Vec<u8> = (0..mib as u8).collect();
        f.run(put_command("a", path, mib * BLOCK_BYTES, &blocks, limits))
    };
    assert_eq!(
        put_limited(&mut f, "one", 2),
        CommandResult::FileWritten { created: true }
    );
    let bytes_quota = rejected(ApplyError::QuotaExceeded {
        app: "a".into(),
        limit: "bytes".into(),
        max: 3 * BLOCK_BYTES,
    });
    assert_eq!(put_limited(&mut f, "two", 2), bytes_quota);
    // Overwriting "one" with 3 MiB adds only 1 MiB: within the quota.
    assert_eq!(
        put_limited(&mut f, "one", 3),
        CommandResult::FileWritten { created: false }
    );
    assert_eq!(put_limited(&mut f, "one", 4), bytes_quota);
    // Shrinking is fine; a second file fits, a third does not.
    assert_eq!(
        put_limited(&mut f, "one", 1),
        CommandResult::FileWritten { created: false }
    );
    assert_eq!(
        put_limited(&mut f, "two", 1),
        CommandResult::FileWritten { created: true }
    );
    assert_eq!(
        f.run(put_command("a", "three", 1, &[], limits)),
        rejected(ApplyError::QuotaExceeded {
            app: "a".into(),
            limit: "files".into(),
            max: 2,
        })
    );
    // Overwriting an existing file at the file count limit is fine.
    assert_eq!(
        f.run(put_command("a", "two", 1, &[], limits)),
        CommandResult::FileWritten { created: false }
    );
    // A lowered quota still lets the app shrink a file.
    let lowered = FileLimits {
        app_bytes_max: 1,
        ..limits
    };
    assert_eq!(
        f.run(put_command("a", "one", 100, &[], lowered)),
        CommandResult::FileWritten { created: false }
    );
    assert_eq!(
        usage(&f, "a"),
        FilesUsage {
            bytes: 101,
            files: 2
        }
    );
}

/// A files trigger on `pattern` firing on `put`/`delete` as given, with a
/// small outbox.
fn deploy_files_trigger(f: &mut Fixture, pattern: &str, on_put: bool, on_delete: bool) {
    let triggers = TriggerSet {
        triggers: vec![TriggerDef {
            name: "on_file".into(),
            script: "on_file.lua".into(),
            kind: TriggerDefKind::Files {
                pattern: pattern.into(),
                on_put,
                on_delete,
            },
            attempts_max: 3,
            backoff_ms: 100,
        }],
        chain_depth_max: 8,
        outbox_max: 2,
    };
    let result = f.run(Command::Deploy(VersionDeploy {
        app: "a".into(),
        bundle: b"code".to_vec(),
        now_ms: 1,
        versions_keep: 5,
        parts: DeployParts::Full {
            triggers,
            indexes: vec![],
            create_app: true,
        },
    }));
    assert!(
        matches!(result, CommandResult::Deployed { .. }),
        "{result:?}"
    );
}

fn events(f: &Fixture) -> Vec<TriggerEvent> {
    let entries = f.reader.outbox("a", 0, 100).expect("outbox");
    entries
        .into_iter()
        .map(|entry| {
            assert_eq!(entry.depth, 1);
            entry.event
        })
        .collect()
}

#[test]
fn files_triggers_fire_once_on_put_and_on_delete_of_a_matching_path() {
    let mut f = Fixture::new();
    deploy_files_trigger(&mut f, "uploads/*", true, true);
    put(&mut f, "a", "uploads/cat.png", 10, &[]);
    put(&mut f, "a", "other/dog.png", 10, &[]);
    delete(&mut f, "a", "other/dog.png");
    delete(&mut f, "a", "uploads/none.png");
    delete(&mut f, "a", "uploads/cat.png");
    let etag = format!("\"{}\"", "0a".repeat(32));
    let event = |op: &str| TriggerEvent::Files {
        path: "uploads/cat.png".into(),
        op: op.into(),
        size: 10,
        etag: etag.clone(),
        content_type: "image/png".into(),
    };
    assert_eq!(events(&f), vec![event("put"), event("delete")]);
}

#[test]
fn files_triggers_follow_their_operations() {
    for (on_put, on_delete, expected) in [(true, false, &["put"][..]), (false, true, &["delete"])] {
        let mut f = Fixture::new();
        deploy_files_trigger(&mut f, "*", on_put, on_delete);
        put(&mut f, "a", "x", 1, &[]);
        delete(&mut f, "a", "x");
        let ops: Vec<String> = events(&f)
            .into_iter()
            .filter_map(|event| match event {
                TriggerEvent::Files { op, .. } => Some(op),
                _ => None,
            })
            .collect();
        assert_eq!(ops, expected, "on_put {on_put} on_delete {on_delete}");
    }
}

#[test]
fn a_full_outbox_rejects_the_whole_put_and_delete() {
    let mut f = Fixture::new();
    deploy_files_trigger(&mut f, "*", true, true);
    put(&mut f, "a", "one", BLOCK_BYTES, &[1]);
    put(&mut f, "a", "two", BLOCK_BYTES, &[2]);
    let full = rejected(ApplyError::OutboxFull {
        app: "a".into(),
        max: 2,
    });
    assert_eq!(put(&mut f, "a", "three", BLOCK_BYTES, &[3]), full);
    assert_eq!(f.reader.file("a", "three").expect("file"), None);
    assert_eq!(refs(&f, 3), 0);
    assert_eq!(delete(&mut f, "a", "one"), full);
    assert!(f.reader.file("a", "one").expect("file").is_some());
    assert_eq!(refs(&f, 1), 1);
    assert_eq!(
        usage(&f, "a"),
        FilesUsage {
            bytes: 2 * BLOCK_BYTES,
            files: 2
        }
    );
}

#[test]
fn files_list_pages_by_prefix_and_cursor_in_path_order() {
    let mut f = Fixture::new();
    f.create("a");
    f.create("ab");
    for path in ["p/c", "p/a", "p/b", "q/a", "p", "p/a/deep"] {
        put(&mut f, "a", path, 1, &[]);
    }
    put(&mut f, "ab", "p/z", 1, &[]);
    let paths = |page: Vec<(String, crate::files::FileRecord)>| -> Vec<String> {
        page.into_iter().map(|(path, _)| path).collect()
    };
    let list = |prefix: &str, after: Option<&str>, limit: usize| {
        paths(
            f.reader
                .files_list("a", prefix, after, limit)
                .expect("list"),
        )
    };
    assert_eq!(list("p/", None, 10), ["p/a", "p/a/deep", "p/b", "p/c"]);
    assert_eq!(list("p/", None, 2), ["p/a", "p/a/deep"]);
    assert_eq!(list("p/", Some("p/a/deep"), 2), ["p/b", "p/c"]);
    assert_eq!(list("p/", Some("p/c"), 2), Vec::<String>::new());
    assert_eq!(list("", None, 100).len(), 6, "other apps are not listed");
    assert_eq!(list("", Some("p/b"), 100), ["p/c", "q/a"]);
    assert_eq!(list("x", None, 10), Vec::<String>::new());
    assert_eq!(list("", None, 0), Vec::<String>::new());
}

#[test]
fn blocks_page_walks_every_referenced_block_in_hash_order() {
    let mut f = Fixture::new();
    f.create("a");
    let blocks: Vec<u8> = (1..=5).rev().collect();
    put(&mut f, "a", "x", 5 * BLOCK_BYTES, &blocks);
    put(&mut f, "a", "y", BLOCK_BYTES, &[3]);
    let mut seen = Vec::new();
    let mut after: Option<BlockHash> = None;
    loop {
        let page = f.reader.blocks_page(after.as_ref(), 2).expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last().copied() else {
            break;
        };
        seen.extend(page);
        after = Some(last);
    }
    assert_eq!(seen, (1..=5).map(hash).collect::<Vec<_>>());
}
