//! Cluster operations with real processes: a rolling restart loses nothing and
//! keeps serving; bad joiners (wrong secret, another cluster's CA) are refused
//! with clear messages while the cluster keeps serving.

mod common;

use std::collections::BTreeSet;

use common::cluster::{all_keys, api, deploy_dur, eventually, start_three, write_all};
use common::{TestNode, install_crypto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_serving_and_loses_nothing() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    let (key, _token) = start_three(&mut nodes).await;
    deploy_dur(&api(&nodes[0], &key)).await;

    let mut acked: BTreeSet<u64> = BTreeSet::new();
    for round in 0..3 {
        // SIGTERM one node; requests through the others keep succeeding
        // (bounded retry while an election runs).
        assert!(
            nodes[round].terminate(),
            "clean exit on SIGTERM; log:\n{}",
            nodes[round].log()
        );
        let through = api(&nodes[(round + 1) % 3], &key);
        let start = 1_000 * (round + 1);
        acked.extend(write_all(&through, start..start + 100).await);
        // Started again (same data dir, no --join), it catches up.
        nodes[round].extra_args.clear();
        nodes[round].start().await;
        let back = api(&nodes[round], &key);
        let last = (start + 99).to_string();
        eventually("the restarted node catches up", || {
            let back = back.clone();
            let last = last.clone();
            async move {
                let (status, body) = back
                    .get(&format!("/_/api/v1/apps/dur/kv/k/{last}?consistency=stale"))
                    .await;
                status == 200 && body["value"].as_u64().map(|v| v.to_string()) == Some(last)
            }
        })
        .await;
    }
    assert_eq!(acked.len(), 300);
    for node in &nodes {
        let seen = all_keys(&api(node, &key)).await;
        let missing: Vec<_> = acked.difference(&seen).collect();
        assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_joiners_are_refused_and_the_cluster_keeps_serving() {
    install_crypto();
    let dirs: Vec<_> = (0..5)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    nodes[0].start().await;
    let key = nodes[0].admin_key();
    let token = nodes[0].cli(&["cluster", "token"]).ok().trim().to_string();
    let join = format!("127.0.0.1:{}", nodes[0].peer_port);

    // A token with the right CA hash but a wrong secret.
    let (prefix, _secret) = token.rsplit_once('.').expect("token shape");
    let wrong = format!("{prefix}.{}", "A".repeat(43));
    nodes[1].extra_args = vec!["--join".into(), join.clone(), "--join-token".into(), wrong];
    assert!(
        !nodes[1].start_expecting_exit(),
        "a wrong secret must not join"
    );
    assert!(
        nodes[1].log().contains("secret is wrong"),
        "joiner log:\n{}",
        nodes[1].log()
    );
    assert!(
        nodes[0].log().contains("refused a join"),
        "member log:\n{}",
        nodes[0].log()
    );

    // Another cluster's token: the joiner refuses this cluster's CA before it
    // sends anything secret.
    nodes[2].start().await;
    let foreign = nodes[2].cli(&["cluster", "token"]).ok().trim().to_string();
    nodes[3].extra_args = vec![
        "--join".into(),
        join.clone(),
        "--join-token".into(),
        foreign,
    ];
    assert!(
        !nodes[3].start_expecting_exit(),
        "a foreign token must not join"
    );
    assert!(
        nodes[3]
            .log()
            .contains("is not part of the cluster this token belongs to")
            && nodes[3].log().contains("the secret was not sent"),
        "joiner log:\n{}",
        nodes[3].log()
    );

    // A malformed token is refused before any network traffic.
    nodes[4].extra_args = vec![
        "--join".into(),
        join,
        "--join-token".into(),
        "not-a-token".into(),
    ];
    assert!(!nodes[4].start_expecting_exit());
    assert!(
        nodes[4].log().contains("join token"),
        "joiner log:\n{}",
        nodes[4].log()
    );

    // Through all of it the cluster kept serving, still one member.
    let first = api(&nodes[0], &key);
    let (status, body) = first.get("/_/api/v1/cluster/status").await;
    assert_eq!(
        (status, body["nodes"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{body}"
    );
    nodes[0].cli(&["apps", "create", "still"]).ok();
}
