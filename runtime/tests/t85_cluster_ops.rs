//! Cluster operations with real processes: a rolling restart loses nothing and
//! keeps serving; bad joiners (wrong secret, another cluster's CA) are refused
//! with clear messages while the cluster keeps serving; bad peers (a
//! certificate of another CA, malformed frames) are refused and logged.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::cluster::{all_keys, api, deploy_dur, eventually, start_three, write_all};
use common::{TestNode, install_crypto};
use picloud_cluster::transport::{ClusterCa, PeerEndpoint, StreamKind, TransportError};

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

/// Polls (bounded) until `node`'s log contains `needle`.
async fn log_shows(node: &TestNode, needle: &str) {
    eventually(&format!("the node logs {needle:?}"), || async {
        node.log().contains(needle)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_refused_with_a_log_line_and_the_cluster_keeps_serving() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let key = node.admin_key();
    let member: SocketAddr = node.peer_addr().parse().expect("peer address");
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
    // The test plays other processes: it reads the cluster CA the node keeps
    // in its data dir (as every member does) to trust the node, or to sign a
    // certificate that is a member's in all but behaviour.
    let cluster_ca = ClusterCa::load(&node.data_dir.join("tls")).expect("the cluster CA");

    // A certificate from another CA: refused in the handshake, logged.
    let other_ca = ClusterCa::create().expect("another CA");
    let foreign = other_ca
        .issue_node_cert(8, &[])
        .expect("foreign certificate");
    let impostor = PeerEndpoint::bind(any_port, &cluster_ca, &foreign).expect("bind");
    let refused = impostor
        .connect(member)
        .await
        .expect_err("a certificate of another CA must be refused");
    assert!(
        matches!(refused, TransportError::Refused { .. }),
        "{refused}"
    );
    log_shows(&node, "refused a cluster connection").await;
    assert!(node.log().contains("UnknownIssuer"), "{}", node.log());

    // Malformed frames from a peer with a valid certificate: each disconnects
    // the sender with the reason in the log.
    let liar_cert = cluster_ca.issue_node_cert(77, &[]).expect("certificate");
    let liar = PeerEndpoint::bind(any_port, &cluster_ca, &liar_cert).expect("bind");

    // A length prefix over the frame limit (nothing of that size is read).
    let connection = liar.connect(member).await.expect("connect");
    let stream = connection.open(StreamKind::RaftAppend).await.expect("open");
    let (mut send, _recv) = stream.into_parts();
    send.write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("write");
    let reason = connection.closed().await;
    assert!(reason.contains("over the limit"), "{reason}");
    log_shows(&node, "disconnecting peer: protocol violation").await;
    assert!(node.log().contains("over the limit"), "{}", node.log());

    // A well-sized frame of garbage where a vote request belongs.
    let connection = liar.connect(member).await.expect("connect");
    let stream = connection.open(StreamKind::RaftVote).await.expect("open");
    let (mut send, _recv) = stream.into_parts();
    let garbage = [0xffu8; 24];
    send.write_all(&(garbage.len() as u32).to_be_bytes())
        .await
        .expect("write");
    send.write_all(&garbage).await.expect("write");
    let reason = connection.closed().await;
    assert!(reason.to_lowercase().contains("decode"), "{reason}");

    // Through all of it the node kept serving: a write and a read.
    let admin = api(&node, &key);
    node.cli(&["apps", "create", "still"]).ok();
    let (status, body) = admin
        .call(
            "PUT",
            "/_/api/v1/apps/still/kv/alive",
            Some(b"true".to_vec()),
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    assert_eq!(
        admin.get("/_/api/v1/apps/still/kv/alive").await.1["value"],
        true
    );
}
