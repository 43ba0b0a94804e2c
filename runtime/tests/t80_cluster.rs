//! Three real `picloud` processes join into one cluster; apps are served and
//! written through any node; the leader is killed with `kill -9` and writes
//! resume through the survivors with nothing acknowledged lost; the killed
//! node restarts and catches up.

mod common;

use std::time::Duration;

use common::cluster::{
    all_keys, api, deploy_dur, eventually, leader_index, start_three, write_all,
};
use common::{TestNode, examples_dir, install_crypto};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_serve_any_app_and_survive_losing_the_leader() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    // Node 2 joins through node 1, node 3 through node 2 (any member works);
    // all three become voters (the leader promotes caught-up learners in pairs).
    let (key, token) = start_three(&mut nodes).await;
    let first = api(&nodes[0], &key);
    let status = nodes[1].cli_with_key(&key, &["cluster", "status"]).ok();
    assert!(
        status.contains("healthy: 1 more failure(s) tolerated")
            && status.contains("lag")
            && status.matches("  ok").count() == 3,
        "{status}"
    );

    // Asked through a follower, the status is the leader's view: every
    // member's applied index and when it last answered the leader.
    let (_, through_follower) = api(&nodes[2], &key).get("/_/api/v1/cluster/status").await;
    let members = through_follower["nodes"].as_array().expect("nodes");
    assert_eq!(members.len(), 3, "{through_follower}");
    assert!(
        members
            .iter()
            .all(|n| n["applied_index"].is_u64() && n["last_contact_ms"].is_u64()),
        "{through_follower}"
    );

    // A deploy and 1,000 writes through node 2 are readable through node 3.
    let second = api(&nodes[1], &key);
    let third = api(&nodes[2], &key);
    let hello = examples_dir().join("hello");
    nodes[1]
        .cli_with_key(&key, &["deploy", hello.to_str().expect("utf-8")])
        .ok();
    deploy_dur(&second).await;
    assert_eq!(
        third.with_key(None).get("/hello/greet/pi").await,
        (200, json!({"hello": "pi", "count": 1}))
    );
    let acked = write_all(&second, 0..1_000).await;
    assert_eq!(acked.len(), 1_000);
    let seen = all_keys(&third).await;
    assert_eq!(
        seen.len(),
        1_000,
        "every write through node 2 is readable through node 3"
    );

    // Kill the leader for real; writes resume through the survivors.
    let leader_index = leader_index(&nodes, &first).await;
    nodes[leader_index].kill();
    let survivor = (0..3).find(|i| *i != leader_index).expect("a survivor");
    let other = (0..3)
        .find(|i| *i != leader_index && *i != survivor)
        .expect("another survivor");
    let through = api(&nodes[survivor], &key);
    // Measured, not asserted (speed belongs in bench/): kill → first acked write.
    let killed_at = tokio::time::Instant::now();
    let mut first_ack = None;
    for attempt in 0..200 {
        let (status, _) = through
            .with_key(None)
            .call("POST", "/dur/put/1000", None)
            .await;
        if status == 201 {
            first_ack = Some(killed_at.elapsed());
            break;
        }
        assert!(attempt < 199, "no write succeeded after the leader died");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "failover: first acknowledged write {:?} after kill -9 of the leader",
        first_ack
    );
    let mut acked_after = write_all(&through, 1_000..1_300).await;
    acked_after.sort_unstable();
    let read_back = all_keys(&api(&nodes[other], &key)).await;
    for n in acked.iter().chain(&acked_after) {
        assert!(
            read_back.contains(n),
            "acknowledged write {n} lost after the leader died"
        );
    }

    // The killed node restarts (same data dir, no --join) and catches up.
    nodes[leader_index].extra_args.clear();
    nodes[leader_index].start().await;
    let restarted = api(&nodes[leader_index], &key);
    eventually("the restarted node catches up", || {
        let restarted = restarted.clone();
        async move {
            let (status, body) = restarted
                .get("/_/api/v1/apps/dur/kv/k/1299?consistency=stale")
                .await;
            status == 200 && body["value"] == 1299
        }
    })
    .await;

    // cluster remove: stop a follower for good and remove it; it no longer
    // counts toward quorum (writes go on with the two left).
    let (_, status) = restarted.get("/_/api/v1/cluster/status").await;
    let leader = status["leader"].as_u64().expect("a leader");
    let peer_ports: Vec<u16> = nodes.iter().map(|node| node.peer_port).collect();
    let member_id = |index: usize, status: &serde_json::Value| {
        status["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["peer"] == format!("127.0.0.1:{}", peer_ports[index]))
            .and_then(|n| n["id"].as_u64())
    };
    let gone = (0..3)
        .find(|i| member_id(*i, &status) != Some(leader))
        .expect("a follower");
    let gone_id = member_id(gone, &status).expect("its id");
    let keeper = (0..3).find(|i| *i != gone).expect("a node that stays");
    nodes[gone].kill();
    let removed = nodes[keeper]
        .cli_with_key(&key, &["cluster", "remove", &gone_id.to_string()])
        .ok();
    assert!(
        removed.contains(&format!("removed node {gone_id}")),
        "{removed}"
    );
    let keeper_api = api(&nodes[keeper], &key);
    eventually("the removed node leaves the membership", || {
        let keeper_api = keeper_api.clone();
        async move {
            let (_, body) = keeper_api.get("/_/api/v1/cluster/status").await;
            let ids: Vec<u64> = body["nodes"]
                .as_array()
                .map(|nodes| nodes.iter().filter_map(|n| n["id"].as_u64()).collect())
                .unwrap_or_default();
            ids.len() == 2 && !ids.contains(&gone_id)
        }
    })
    .await;
    assert_eq!(write_all(&keeper_api, 2_000..2_050).await.len(), 50);
    let again = nodes[keeper].cli_with_key(&key, &["cluster", "remove", &gone_id.to_string()]);
    assert!(
        !again.success && again.stderr.contains("node_not_found"),
        "{}",
        again.stderr
    );

    // Restarted with its old data dir, the removed node is refused by the
    // members (its certificate is still of this CA) and disturbs nothing.
    nodes[gone].extra_args.clear();
    nodes[gone].spawn();
    let refused = format!("node {gone_id} was removed from the cluster");
    eventually("the members refuse the removed node", || {
        let seen = nodes[keeper].log().contains(&refused);
        async move { seen }
    })
    .await;
    assert_eq!(write_all(&keeper_api, 2_050..2_100).await.len(), 50);
    nodes[gone].kill();

    // Its data dir wiped, the node rejoins, but never under its old id.
    std::fs::remove_dir_all(&nodes[gone].data_dir).expect("wipe the data dir");
    let join = format!("127.0.0.1:{}", nodes[keeper].peer_port);
    nodes[gone].extra_args = vec!["--join".into(), join, "--join-token".into(), token.clone()];
    nodes[gone].start().await;
    eventually("three voters again, with a new id", || {
        let keeper_api = keeper_api.clone();
        async move {
            let (_, body) = keeper_api.get("/_/api/v1/cluster/status").await;
            let nodes = body["nodes"].as_array().cloned().unwrap_or_default();
            let ids: Vec<u64> = nodes.iter().filter_map(|n| n["id"].as_u64()).collect();
            nodes.len() == 3
                && !ids.contains(&gone_id)
                && nodes
                    .iter()
                    .all(|n| n["role"] == "leader" || n["role"] == "follower")
        }
    })
    .await;
}
