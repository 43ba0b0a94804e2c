//! Helpers for tests that run several `picloud` processes as one cluster.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{Api, TestNode, manifest};

pub const PUT: &str = "return function(req)\n  kv.set('k/' .. req.params.n, tonumber(req.params.n))\n  return {status=201, json={ok=true}}\nend";

pub fn api(node: &TestNode, key: &str) -> Api {
    Api {
        http: reqwest::Client::new(),
        base: node.url(),
        key: Some(key.to_string()),
    }
}

/// Polls until `probe` holds, bounded.
pub async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every `k/<n>` key of app `dur`, read through `api` (linearizable).
pub async fn all_keys(api: &Api) -> BTreeSet<u64> {
    all_values(api, "dur", "k/").await
}

/// The integer values of every key under `prefix` in `app`, read through
/// `api` (linearizable).
pub async fn all_values(api: &Api, app: &str, prefix: &str) -> BTreeSet<u64> {
    let mut found = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/_/api/v1/apps/{app}/kv?prefix={prefix}&limit=500");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", cursor.replace('/', "%2F")));
        }
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            found.insert(item["value"].as_u64().expect("value"));
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return found,
        }
    }
}

/// Writes `range` through `api` with 8 clients, retrying a failed write (503
/// while there is no leader) a bounded number of times; returns the acked ones.
pub async fn write_all(api: &Api, range: std::ops::Range<usize>) -> Vec<u64> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = api.with_key(None);
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return acked;
                }
                for attempt in 0..40 {
                    let (status, body) = api.call("POST", &format!("/dur/put/{n}"), None).await;
                    if status == 201 {
                        acked.push(n as u64);
                        break;
                    }
                    assert!(
                        status == 503 || status == 504 || status == 500,
                        "write {n}: {status} {body}"
                    );
                    assert!(attempt < 39, "write {n} never succeeded: {body}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("writer"));
    }
    acked
}

/// Starts a three-node cluster (node 2 joins through node 1, node 3 through
/// node 2) and waits until all three are voters. Returns the admin key and
/// the join token.
pub async fn start_three(nodes: &mut [TestNode]) -> (String, String) {
    nodes[0].start().await;
    let key = nodes[0].admin_key();
    let token = nodes[0].cli(&["cluster", "token"]).ok().trim().to_string();
    for index in 1..3 {
        let join = nodes[index - 1].peer_addr();
        nodes[index].extra_args = vec!["--join".into(), join, "--join-token".into(), token.clone()];
        nodes[index].start().await;
    }
    let first = api(&nodes[0], &key);
    eventually("three voters", || {
        let first = first.clone();
        async move {
            let (status, body) = first.get("/_/api/v1/cluster/status").await;
            let roles: Vec<String> = body["nodes"]
                .as_array()
                .map(|nodes| {
                    nodes
                        .iter()
                        .filter_map(|n| n["role"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            status == 200
                && roles.len() == 3
                && roles.iter().filter(|r| *r == "leader").count() == 1
                && roles.iter().filter(|r| *r == "follower").count() == 2
        }
    })
    .await;
    (key, token)
}

/// The id `cluster status` (through `api`) gives the node at `peer`.
pub async fn node_id(api: &Api, peer: &str) -> u64 {
    let (_, status) = api.get("/_/api/v1/cluster/status").await;
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|node| node["peer"] == peer)
        .and_then(|node| node["id"].as_u64())
        .expect("the node's id")
}

/// Deploys the `dur` app (`POST /dur/put/:n` stores `k/<n> = n`) through `api`.
pub async fn deploy_dur(api: &Api) {
    let (status, body) = api
        .deploy(
            "dur",
            &[
                (
                    "picloud.toml",
                    &manifest("dur", &[("POST", "/put/:n", "put.lua")]),
                ),
                ("put.lua", PUT),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The index in `nodes` of the node the cluster reports as leader (asked
/// through `api`).
pub async fn leader_index(nodes: &[TestNode], api: &Api) -> usize {
    let (_, status) = api.get("/_/api/v1/cluster/status").await;
    let leader = status["leader"].as_u64().expect("a leader");
    let leader_peer = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == leader)
        .and_then(|n| n["peer"].as_str())
        .expect("the leader's peer address")
        .to_string();
    nodes
        .iter()
        .position(|node| node.peer_addr() == leader_peer)
        .expect("leader among the nodes")
}
