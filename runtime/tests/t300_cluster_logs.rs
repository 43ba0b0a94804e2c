//! Issue 16: cluster-wide logs on 3 real nodes. A route logs a distinct line
//! on each node; `picloud logs APP` through one node shows all three with
//! the node each was logged on, in time order. After node 3 is killed with
//! SIGKILL the answer still comes back promptly, with node 3 reported
//! unavailable (JSON and a warning on the CLI's stderr); and a follow through
//! node 1 receives a line logged through node 2.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{api, eventually, node_id, start_three};
use common::{Api, TestNode, install_crypto, manifest};
use futures::StreamExt;
use serde_json::Value;

const APP: &str = "chatty";
const SAY: &str = "return function(req)\n  log.info('said ' .. req.params.word)\n  return {status=200, json={ok=true}}\nend";

/// The answer of `GET /apps/chatty/logs` within the bound a down member
/// may cost (one member wait, plus slack for a loaded machine).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

async fn say(node: &TestNode, word: &str) {
    let url = format!("{}/{APP}/say/{word}", node.url());
    let response = reqwest::get(&url).await.expect("GET say");
    assert_eq!(response.status().as_u16(), 200, "{url}");
}

/// The merged lines through `api` as `(node, message)`, and the unavailable nodes.
async fn merged(api: &Api) -> (Vec<(u64, String)>, Vec<u64>) {
    let (status, body) = api.get(&format!("/_/api/v1/apps/{APP}/logs")).await;
    assert_eq!(status, 200, "{body}");
    let lines = body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| {
            (
                line["node"].as_u64().expect("node"),
                line["message"].as_str().expect("message").to_string(),
            )
        })
        .collect();
    let unavailable = body["unavailable"]
        .as_array()
        .expect("unavailable")
        .iter()
        .map(|node| node.as_u64().expect("node id"))
        .collect();
    (lines, unavailable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_merge_every_node_and_report_a_dead_one() {
    install_crypto();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    let (key, _) = start_three(&mut nodes).await;
    let first = api(&nodes[0], &key);
    let manifest_text = manifest(APP, &[("GET", "/say/:word", "say.lua")]);
    let (status, body) = first
        .deploy(APP, &[("picloud.toml", &manifest_text), ("say.lua", SAY)])
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(node_id(&first, &node.peer_addr()).await);
    }
    // Every node serves the app once the deploy applied there.
    for node in &nodes {
        let url = format!("{}/{APP}/say/ready", node.url());
        eventually("the app served on every node", || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200)
            }
        })
        .await;
    }

    for (index, node) in nodes.iter().enumerate() {
        say(node, &format!("from-{index}")).await;
    }
    let (lines, unavailable) = merged(&api(&nodes[1], &key)).await;
    assert!(unavailable.is_empty(), "{unavailable:?}");
    let said: Vec<(u64, String)> = lines
        .into_iter()
        .filter(|(_, message)| message.starts_with("said from-"))
        .collect();
    let expected: Vec<(u64, String)> = (0..3)
        .map(|index| (ids[index], format!("said from-{index}")))
        .collect();
    assert_eq!(
        said, expected,
        "every node's line, tagged and in time order"
    );
    let printed = nodes[1].cli_with_key(&key, &["logs", APP]).ok();
    assert!(
        printed.contains(&format!("node-{} info  said from-2", ids[2])),
        "{printed}"
    );

    nodes[2].kill();
    let started = Instant::now();
    let (lines, unavailable) = merged(&first).await;
    assert!(started.elapsed() < ANSWER_WITHIN, "{:?}", started.elapsed());
    assert_eq!(unavailable, vec![ids[2]]);
    assert!(lines.iter().any(|(node, _)| *node == ids[1]), "{lines:?}");
    let printed = nodes[0].cli_with_key(&key, &["logs", APP]);
    assert!(printed.success, "{}", printed.stderr);
    assert!(
        printed
            .stderr
            .contains(&format!("warning: node {} did not answer", ids[2])),
        "{}",
        printed.stderr
    );

    // Follow through node 1; a line logged through node 2 arrives.
    let response = first
        .http
        .get(format!(
            "{}/_/api/v1/apps/{APP}/logs?follow=true&limit=1",
            nodes[0].url()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .expect("follow");
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    // The dead node is reported at once, before any live line.
    let reported = format!("event: unavailable\ndata: {{\"node\":{}}}", ids[2]);
    let wanted = "said live-from-1";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said_live = false;
    while !(text.contains(wanted) && text.contains(&reported)) {
        assert!(Instant::now() < deadline, "follow saw only: {text}");
        if !said_live && text.contains(&reported) {
            say(&nodes[1], "live-from-1").await;
            said_live = true;
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk"))),
            Ok(None) => panic!("follow ended: {text}"),
            Err(_) => {}
        }
    }
    let line: Value = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|line| line["message"] == wanted)
        .expect("the followed line");
    assert_eq!(line["node"].as_u64(), Some(ids[1]));
}
