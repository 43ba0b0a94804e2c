//! A write forwarded to a leader that stops answering (SIGSTOP) while the
//! cluster elects another: the follower cannot know whether the write
//! applied, and says so with its own code, `outcome_unknown` (503), and words
//! ("may or may not have applied"), not a timeout of "0 ms".

mod common;

use common::cluster::{api, deploy_dur, eventually, leader_index, start_three};
use common::{TestNode, install_crypto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_cut_off_by_a_leader_change_is_outcome_unknown() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<TestNode> = (0..3)
        .map(|i| {
            let home = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&home).expect("node dir");
            TestNode::new(&home)
        })
        .collect();
    let (key, _token) = start_three(&mut nodes).await;
    let first = api(&nodes[0], &key);
    deploy_dur(&first).await;

    let leader = leader_index(&nodes, &first).await;
    let follower = (leader + 1) % 3;
    let through = api(&nodes[follower], &key);
    // The follower still forwards to the leader it knows; the leader is
    // frozen with the write in flight, and the other two elect a new one.
    nodes[leader].signal("STOP");
    let (status, body) = through.call("POST", "/dur/put/7", None).await;
    nodes[leader].signal("CONT");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "outcome_unknown", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("may or may not have applied"), "{message}");
    assert!(!message.contains("within 0 ms"), "{message}");

    // The cluster goes on: a retried write succeeds through the same node.
    eventually("writes through the follower again", || {
        let through = through.clone();
        async move { through.call("POST", "/dur/put/8", None).await.0 == 201 }
    })
    .await;
    for node in &mut nodes {
        node.terminate();
    }
}
