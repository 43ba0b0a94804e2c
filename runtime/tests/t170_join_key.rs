//! The join path as an operator follows the README: no secrets master key is
//! configured anywhere. Node 1 generates its key file; nodes 2 and 3 join
//! with none and receive the cluster's key over the join channel, stored in
//! `secret.key` (0600) before use, so a secret set through node 1 reads
//! through nodes 2 and 3 and `cluster status` shows one key id on every
//! node. The key is in no other file of any data dir (log, state, snapshot).
//! A joiner started with another key is refused, naming both key ids. A
//! join to an address where nothing listens retries with a line per attempt
//! and gives up after `--join-timeout-ms`, exiting non-zero.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::cluster::{api, eventually};
use common::data_dir::{files_containing, key_id, key_text, snapshot_files};
use common::{TestNode, free_port, install_crypto, manifest};
use picloud_cluster::transport::{ClusterCa, JoinToken};
use sha2::{Digest, Sha256};

const SECRET_VALUE: &str = "joined_nodes_read_this_4c1e";

const GET: &str = "return function(req)\n  return {json={value=secrets.get('TOKEN')}}\nend";
const PUT: &str = "return function(req)\n  kv.set(req.params.key, 1)\n  return {status = 201, json = {ok = true}}\nend";

/// The base64 key lines of a `secret.key` file (comments dropped).
fn key_lines(node: &TestNode) -> Vec<String> {
    std::fs::read_to_string(node.data_dir.join("secret.key"))
        .expect("secret.key")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The public id of a base64 key, as nodes report it.
fn id_of(key_base64: &str) -> String {
    let bytes = STANDARD.decode(key_base64).expect("base64 key");
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Waits (bounded) for a node spawned to fail to exit; its exit success and
/// how long it ran.
fn wait_for_exit(node: &mut TestNode, bound: Duration) -> (bool, Duration) {
    let started = Instant::now();
    let child = node.child.as_mut().expect("spawned");
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            node.child = None;
            return (status.success(), started.elapsed());
        }
        assert!(
            started.elapsed() < bound,
            "still running after {bound:?}; log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn read_secret(node: &TestNode) -> (u16, serde_json::Value) {
    api(node, "").with_key(None).get("/vault/get").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_receive_the_key_and_a_foreign_key_is_refused() {
    install_crypto();
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    for node in &mut nodes {
        node.extra_env = vec![("PICLOUD_SNAPSHOT_LOGS_SINCE_LAST".into(), "100".into())];
    }
    nodes[0].start().await;
    let first_keys = key_lines(&nodes[0]);
    assert_eq!(first_keys.len(), 1, "node 1 generated one key");
    let cluster_key_id = id_of(&first_keys[0]);
    let admin_key = nodes[0].admin_key();
    let token = nodes[0].cli(&["cluster", "token"]).ok().trim().to_string();
    let first = api(&nodes[0], &admin_key);
    let (status, body) = first
        .deploy(
            "vault",
            &[
                (
                    "picloud.toml",
                    &manifest(
                        "vault",
                        &[("GET", "/get", "get.lua"), ("POST", "/put/:key", "put.lua")],
                    ),
                ),
                ("get.lua", GET),
                ("put.lua", PUT),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = first
        .call(
            "PUT",
            "/_/api/v1/apps/vault/secrets/TOKEN",
            Some(SECRET_VALUE.as_bytes().to_vec()),
        )
        .await;
    assert!(status < 300, "{status} {body}");

    let join_args = vec![
        "--join".to_string(),
        nodes[0].peer_addr(),
        "--join-token".to_string(),
        token.clone(),
    ];
    for node in &mut nodes[1..3] {
        node.extra_args = join_args.clone();
        node.start().await;
    }

    // The secret set through node 1 reads through nodes 2 and 3.
    for node in &nodes[1..3] {
        eventually("the secret reads through a joined node", || async {
            let (status, body) = read_secret(node).await;
            status == 200 && body["value"] == SECRET_VALUE
        })
        .await;
        let mode = std::fs::metadata(node.data_dir.join("secret.key"))
            .expect("secret.key on the joiner")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "secret.key is private");
        assert_eq!(key_lines(node), first_keys, "the joiner holds node 1's key");
        assert!(
            node.log().contains("received from the cluster at join"),
            "{}",
            node.log()
        );
        assert!(!node.log().contains("generated a new secrets master key"));
    }

    // Cluster status through a joiner: every node's key id, no mismatch.
    let joiner = api(&nodes[1], &admin_key);
    eventually("three members, each reporting the cluster's key id", || {
        let joiner = joiner.clone();
        let cluster_key_id = cluster_key_id.clone();
        async move {
            let (status, body) = joiner.get("/_/api/v1/cluster/status").await;
            let nodes = body["nodes"].as_array().cloned().unwrap_or_default();
            status == 200
                && nodes.len() == 3
                && nodes.iter().all(|n| n["key_id"] == cluster_key_id.as_str())
                && body["key_mismatch"] == false
        }
    })
    .await;
    let printed = nodes[2]
        .cli_with_key(&admin_key, &["cluster", "status"])
        .ok();
    assert!(
        printed.contains(&format!("node 3 {cluster_key_id}")) && !printed.contains("WARNING"),
        "{printed}"
    );

    // Enough entries for a snapshot on every member, then: the key is in
    // no file but the key files (the grep finds it there: the control).
    for i in 0..150 {
        let (status, body) = first
            .with_key(None)
            .call("POST", &format!("/vault/put/k{i}"), None)
            .await;
        assert_eq!(status, 201, "{body}");
    }
    for node in &nodes[..3] {
        eventually("a snapshot file", || async { snapshot_files(node) > 0 }).await;
    }
    let key_bytes = STANDARD.decode(&first_keys[0]).expect("key");
    for node in &nodes[..3] {
        for needle in [&key_bytes[..], first_keys[0].as_bytes()] {
            let found = files_containing(&node.data_dir, needle, &[]);
            let key_file = node.data_dir.join("secret.key").display().to_string();
            if needle == first_keys[0].as_bytes() {
                assert!(found.contains(&key_file), "the control: {found:?}");
            }
            let elsewhere: Vec<_> = found.into_iter().filter(|f| *f != key_file).collect();
            assert_eq!(elsewhere, Vec::<String>::new(), "the master key elsewhere");
        }
    }
    // openraft's stale-message WARNs are not shown to the operator.
    for node in &nodes[..3] {
        assert!(!node.log().contains("vote changed"), "{}", node.log());
    }

    // A joiner with another key is refused, naming both ids, and exits.
    nodes[3].extra_args = join_args;
    nodes[3]
        .extra_env
        .push(("PICLOUD_SECRET_KEY".into(), key_text(0xE2)));
    nodes[3].spawn();
    let (success, _) = wait_for_exit(&mut nodes[3], Duration::from_secs(60));
    let log = nodes[3].log();
    assert!(!success, "{log}");
    assert!(
        log.contains(&key_id(0xE2)) && log.contains(&cluster_key_id),
        "both key ids named: {log}"
    );
    assert!(!nodes[3].data_dir.join("node.json").exists(), "{log}");
    for node in &mut nodes {
        node.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_to_a_silent_address_retries_then_gives_up() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    // Nothing listens on this port (UDP has no refusal: only silence).
    let silent = format!("127.0.0.1:{}", free_port());
    let token = JoinToken::generate(&ClusterCa::create().expect("ca").ca_hash()).encode();
    node.extra_args = vec![
        "--join".into(),
        silent.clone(),
        "--join-token".into(),
        token,
        "--join-timeout-ms".into(),
        "2000".into(),
    ];
    node.spawn();
    let (success, ran) = wait_for_exit(&mut node, Duration::from_secs(20));
    let log = node.log();
    assert!(!success, "{log}");
    assert!(ran < Duration::from_secs(10), "gave up in {ran:?}: {log}");
    let retries = log
        .lines()
        .filter(|line| line.contains(&format!("join through {silent} failed (attempt")))
        .count();
    assert!(retries >= 1, "a line per retry naming the address: {log}");
    assert!(
        log.contains(&format!(
            "gave up joining the cluster through {silent} after 2000 ms"
        )),
        "{log}"
    );
}
