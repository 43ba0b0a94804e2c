//! A cluster that tells the truth when it loses its quorum, and a removed
//! node that stops. Real `picloud` processes, killed for real:
//!
//! - 3 nodes, 2 killed: the survivor's `cluster status` says there is no
//!   quorum and names the two unreachable voters, `failures_tolerated` is 0,
//!   `/_/ready` is 503 `not_ready` while `/_/health` stays 200; a script's
//!   write fails with 503 `no_leader` well before the script's own timeout,
//!   and a script that wraps it in `pcall` reads the code; the two come
//!   back and the survivor is ready again.
//! - A node removed while it was down, restarted with its old data dir,
//!   logs one ERROR saying what to do and exits non-zero.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{api, eventually, leader_index, start_three};
use common::{Api, TestNode, install_crypto, manifest};
use serde_json::Value;

/// The scripts' wall-clock budget (`script_timeout_ms`'s default): a write
/// without a quorum must fail well within it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(5);

/// An uncaught write, and the same write caught with `pcall`.
const WRITE: &str = "return function(req)\n  kv.set('k', 1)\n  return {json={ok=true}}\nend";
const CAUGHT: &str = "return function(req)\n  local ok, err = pcall(kv.set, 'k', 2)\n  return {json={ok=ok, err=tostring(err)}}\nend";

/// Each member's id, by its index in `nodes` (matched on the peer address).
fn member_ids(nodes: &[TestNode], status: &Value) -> Vec<u64> {
    nodes
        .iter()
        .map(|node| {
            status["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .find(|n| n["peer"] == node.peer_addr().as_str())
                .and_then(|n| n["id"].as_u64())
                .expect("every node is a member")
        })
        .collect()
}

/// A running three-voter cluster: its dirs (kept alive), nodes and admin key.
async fn three_voters() -> (Vec<tempfile::TempDir>, Vec<TestNode>, String) {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    let (key, _token) = start_three(&mut nodes).await;
    (dirs, nodes, key)
}

/// Waits (bounded) for `node`'s process to exit on its own.
async fn wait_for_exit(node: &mut TestNode) -> std::process::ExitStatus {
    let mut child = node.child.take().expect("a running node");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(exit) = child.try_wait().expect("try_wait") {
            return exit;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the removed node kept running; log:\n{}", node.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each member's id by index, the leader's index, and a follower's index.
async fn roles(nodes: &[TestNode], key: &str) -> (Vec<u64>, usize, usize) {
    let first = api(&nodes[0], key);
    let (_, status) = first.get("/_/api/v1/cluster/status").await;
    let ids = member_ids(nodes, &status);
    let leader = leader_index(nodes, &first).await;
    let follower = (0..3).rev().find(|i| *i != leader).expect("a follower");
    (ids, leader, follower)
}

/// The removed node's log (since its last start) has exactly one ERROR
/// line saying what happened and what to do.
fn assert_one_removal_error(log: &str, id: u64) {
    let message =
        format!("node {id} was removed from the cluster; wipe its data dir and join again");
    let errors = log
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains(&message))
        .count();
    assert_eq!(errors, 1, "log:\n{log}");
}

async fn ready(node: &TestNode) -> (u16, Value) {
    Api {
        http: reqwest::Client::new(),
        base: node.url(),
        key: None,
    }
    .get("/_/ready")
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_and_a_follower_down_the_survivor_says_no_quorum_and_fails_writes_fast() {
    two_of_three_down(Survivor::Follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_followers_down_the_leader_says_no_quorum_and_fails_writes_fast() {
    two_of_three_down(Survivor::Leader).await;
}

/// Which node is left when two of three are killed: a follower (it becomes
/// a candidate and knows no leader) or the leader (openraft keeps it in
/// office; only its silent followers tell it the quorum is gone).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Survivor {
    Follower,
    Leader,
}

async fn two_of_three_down(survivor_is: Survivor) {
    let (_dirs, mut nodes, key) = three_voters().await;
    let first = api(&nodes[0], &key);
    let files = [
        (
            "picloud.toml",
            manifest(
                "q",
                &[("POST", "/w", "w.lua"), ("POST", "/caught", "caught.lua")],
            ),
        ),
        ("w.lua", WRITE.to_string()),
        ("caught.lua", CAUGHT.to_string()),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let (status, body) = first.deploy("q", &files).await;
    assert_eq!(status, 200, "{body}");
    for node in &nodes {
        eventually("every node ready", || async { ready(node).await.0 == 200 }).await;
    }

    let (_, status) = first.get("/_/api/v1/cluster/status").await;
    let ids = member_ids(&nodes, &status);
    let leader = leader_index(&nodes, &first).await;
    let survivor = match survivor_is {
        Survivor::Leader => leader,
        Survivor::Follower => (0..3).find(|i| *i != leader).expect("a follower"),
    };
    let killed: Vec<usize> = (0..3).filter(|i| *i != survivor).collect();
    for index in &killed {
        nodes[*index].kill();
    }
    let mut down: Vec<u64> = killed.iter().map(|index| ids[*index]).collect();
    down.sort_unstable();

    let survivor_api = api(&nodes[survivor], &key);
    eventually("the survivor reports no quorum", || {
        let survivor_api = survivor_api.clone();
        async move {
            let (_, body) = survivor_api.get("/_/api/v1/cluster/status").await;
            body["quorum"] == false
        }
    })
    .await;
    let json: Value = serde_json::from_str(
        &nodes[survivor]
            .cli_with_key(&key, &["--json", "cluster", "status"])
            .ok(),
    )
    .expect("status JSON");
    let expected_leader = match survivor_is {
        Survivor::Leader => Value::from(ids[survivor]),
        Survivor::Follower => Value::Null,
    };
    assert_eq!(json["leader"], expected_leader, "{json}");
    assert_eq!(json["failures_tolerated"], 0, "{json}");
    assert_eq!(
        json["voters_unreachable"],
        serde_json::json!(down),
        "{json}"
    );
    for node in json["nodes"].as_array().expect("nodes") {
        let id = node["id"].as_u64().expect("id");
        assert_eq!(node["reachable"], !down.contains(&id), "{json}");
    }
    let text = nodes[survivor]
        .cli_with_key(&key, &["cluster", "status"])
        .ok();
    let expected = format!(
        "quorum: NO — 2 of 3 voters unreachable ({}, {})",
        down[0], down[1]
    );
    assert!(text.contains(&expected), "{text}");
    assert!(!text.contains("healthy"), "{text}");

    // Liveness stays up; readiness says why not.
    let (status, body) = ready(&nodes[survivor]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no quorum")),
        "{body}"
    );
    let (status, body) = survivor_api.with_key(None).get("/_/health").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("ok")),
        "{body}"
    );

    // A script's write fails with no_leader, long before the script's timeout.
    let app = survivor_api.with_key(None);
    let started = Instant::now();
    let (status, body) = app.call("POST", "/q/w", None).await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "no_leader", "{body}");
    assert!(took < SCRIPT_TIMEOUT / 2, "took {took:?}: {body}");
    // ... and a script that catches it reads the code.
    let started = Instant::now();
    let (status, body) = app.call("POST", "/q/caught", None).await;
    assert!(started.elapsed() < SCRIPT_TIMEOUT / 2, "{body}");
    assert_eq!((status, &body["ok"]), (200, &Value::Bool(false)), "{body}");
    assert!(
        body["err"]
            .as_str()
            .is_some_and(|e| e.starts_with("no_leader")),
        "{body}"
    );

    // The two come back: the survivor is ready again and writes go through.
    for index in &killed {
        nodes[*index].start().await;
    }
    eventually("the survivor is ready again", || async {
        ready(&nodes[survivor]).await.0 == 200
    })
    .await;
    eventually("a quorum again, one failure tolerated", || {
        let survivor_api = survivor_api.clone();
        async move {
            let (_, status) = survivor_api.get("/_/api/v1/cluster/status").await;
            status["quorum"] == true && status["failures_tolerated"] == 1
        }
    })
    .await;
    // The restarted nodes can still cause an election (the survivor's term
    // grew while it was alone), so a write may race it and get one of the
    // retryable codes; it must go through once the election settles, and
    // nothing else may come back.
    eventually("a write through the survivor goes through", || {
        let app = app.clone();
        async move {
            let (status, body) = app.call("POST", "/q/w", None).await;
            let code = body["error"]["code"].as_str().unwrap_or_default();
            assert!(
                status == 200
                    || (status == 503 && ["no_leader", "outcome_unknown"].contains(&code)),
                "{status} {body}"
            );
            status == 200
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_restarted_with_its_data_dir_logs_one_error_and_exits() {
    let (_dirs, mut nodes, key) = three_voters().await;
    let (ids, _leader, gone) = roles(&nodes, &key).await;
    let keeper = (0..3).find(|i| *i != gone).expect("a node that stays");
    let gone_id = ids[gone];
    assert!(nodes[gone].terminate(), "a clean stop");
    nodes[keeper]
        .cli_with_key(&key, &["cluster", "remove", &gone_id.to_string()])
        .ok();
    let keeper_api = api(&nodes[keeper], &key);
    eventually("the removed node leaves the membership", || {
        let keeper_api = keeper_api.clone();
        async move {
            let (_, body) = keeper_api.get("/_/api/v1/cluster/status").await;
            body["nodes"].as_array().is_some_and(|n| n.len() == 2)
        }
    })
    .await;

    // Restarted with its old data dir (its log still lists it as a voter),
    // it dials the members, they refuse it as removed, and it stops.
    let log_before = nodes[gone].log().len();
    nodes[gone].spawn();
    let exit = wait_for_exit(&mut nodes[gone]).await;
    let log = nodes[gone].log()[log_before..].to_string();
    assert!(!exit.success(), "exit {exit}; log:\n{log}");
    assert_one_removal_error(&log, gone_id);
    assert_eq!(
        log.lines().filter(|line| line.contains("ERROR")).count(),
        1,
        "one ERROR line, not a chain of them; log:\n{log}"
    );
    // The two left are ready.
    let (status, _) = keeper_api.get("/_/ready").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_removed_from_the_cluster_stops_with_one_error() {
    let (_dirs, mut nodes, key) = three_voters().await;
    let (ids, leader, gone) = roles(&nodes, &key).await;
    let log_before = nodes[gone].log().len();
    nodes[leader]
        .cli_with_key(&key, &["cluster", "remove", &ids[gone].to_string()])
        .ok();
    let exit = wait_for_exit(&mut nodes[gone]).await;
    let log = nodes[gone].log()[log_before..].to_string();
    assert!(!exit.success(), "exit {exit}; log:\n{log}");
    assert_one_removal_error(&log, ids[gone]);
}
