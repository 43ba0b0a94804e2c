//! A joiner catches up on a state of 100,000 keys through a streamed snapshot
//! (the leader's log has been compacted past the start).

mod common;

use common::cluster::{api, eventually};
use common::{TestNode, install_crypto, manifest};

const KEYS: usize = 100_000;
const PER_REQUEST: usize = 64;

/// Writes 64 keys per request in one `kv.atomic` (one log entry).
const FILL: &str = "return function(req)\n  local base = tonumber(req.params.base)\n  local ops = {}\n  for i = 0, 63 do ops[#ops + 1] = {op = 'set', key = string.format('k/%06d', base + i), value = base + i} end\n  kv.atomic(ops)\n  return {status = 201, json = {ok = true}}\nend";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_catches_up_on_100k_keys_through_a_snapshot() {
    install_crypto();
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    // Snapshot every 100 entries and keep no log behind the snapshot.
    nodes[0].extra_args = vec![
        "--snapshot-logs-since-last".into(),
        "100".into(),
        "--logs-kept-after-snapshot".into(),
        "0".into(),
    ];
    nodes[0].start().await;
    let key = nodes[0].admin_key();
    let first = api(&nodes[0], &key);
    let (status, body) = first
        .deploy(
            "big",
            &[
                (
                    "picloud.toml",
                    &manifest("big", &[("POST", "/fill/:base", "fill.lua")]),
                ),
                ("fill.lua", FILL),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let bases: Vec<usize> = (0..KEYS).step_by(PER_REQUEST).collect();
    let chunks: Vec<Vec<usize>> = bases
        .chunks(bases.len().div_ceil(8))
        .map(<[usize]>::to_vec)
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let api = first.with_key(None);
        tasks.push(tokio::spawn(async move {
            for base in chunk {
                let (status, body) = api.call("POST", &format!("/big/fill/{base}"), None).await;
                assert_eq!(status, 201, "fill {base}: {body}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("filler");
    }

    // The joiner arrives after the log was compacted: it needs the snapshot.
    let token = nodes[0].cli(&["cluster", "token"]).ok().trim().to_string();
    let join = format!("127.0.0.1:{}", nodes[0].peer_port);
    nodes[1].extra_args = vec!["--join".into(), join, "--join-token".into(), token];
    nodes[1].start().await;
    let joiner = api(&nodes[1], &key);
    let last = format!(
        "/_/api/v1/apps/big/kv/k/{:06}?consistency=stale",
        bases.last().copied().unwrap_or(0) + PER_REQUEST - 1
    );
    eventually("the joiner has the last key", || {
        let joiner = joiner.clone();
        let last = last.clone();
        async move { joiner.get(&last).await.0 == 200 }
    })
    .await;

    // Every key is there on the joiner (local reads, paged).
    let mut count = 0usize;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/_/api/v1/apps/big/kv?prefix=k/&limit=1000&consistency=stale".to_string();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", cursor.replace('/', "%2F")));
        }
        let (status, page) = joiner.get(&path).await;
        assert_eq!(status, 200, "{page}");
        count += page["items"].as_array().map_or(0, Vec::len);
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(count, bases.len() * PER_REQUEST);
    assert!(count >= KEYS);
    // It caught up through a snapshot: one was installed in its data dir.
    let snapshots = std::fs::read_dir(nodes[1].data_dir.join("raft/snapshots"))
        .map(|entries| entries.flatten().count())
        .unwrap_or(0);
    let listing = |dir: &std::path::Path| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ls -la {}/raft {}/raft/snapshots 2>&1",
                dir.display(),
                dir.display()
            ))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    assert!(
        snapshots > 0,
        "the joiner holds an installed snapshot\njoiner:\n{}\nleader:\n{}\nleader log:\n{}",
        listing(&nodes[1].data_dir),
        listing(&nodes[0].data_dir),
        nodes[0]
            .log()
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
