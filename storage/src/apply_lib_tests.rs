//! `apply` of `PublishLib`: versions count up, are never reused after
//! pruning, and the files of kept versions read back exactly.

use super::tests::Fixture;
use crate::command::{Command, CommandResult};

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
