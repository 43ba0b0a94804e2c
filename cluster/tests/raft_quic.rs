//! openraft over the QUIC transport: real `Raft` instances in one process,
//! each with its own sled storage in a temp dir and its own `PeerEndpoint` on
//! 127.0.0.1 (port 0), certificates from one test CA.
//!
//! Every wait is on Raft metrics (`raft.wait(..)`) or a future, bounded by a
//! deadline; nothing sleeps to synchronise.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::{WAIT, addr};
use openraft::{Raft, ServerState, SnapshotPolicy};
use picloud_cluster::transport::{ClusterCa, PeerEndpoint, QuicNetwork, RaftRpcConfig, serve_raft};
use picloud_cluster::{NodeId, NodeInfo, TypeConfig};
use picloud_storage::{Command, CommandResult, KvOp, StateReader, StorageOptions};
use tempfile::TempDir;

const APP: &str = "app";

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("the test finished within 120 s")
}

/// One Raft member with its storage, endpoint and RPC server.
struct Member {
    id: NodeId,
    raft: Raft<TypeConfig>,
    reader: StateReader,
    endpoint: Arc<PeerEndpoint>,
    server: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Member {
    fn info(&self) -> NodeInfo {
        NodeInfo {
            http: String::new(),
            peer: addr(&self.endpoint).to_string(),
        }
    }

    /// Stops Raft and the endpoint, as a dying node would.
    async fn stop(&self) {
        self.raft.shutdown().await.expect("raft shut down");
        self.endpoint.close();
        self.server.abort();
    }
}

fn raft_config(snapshot_policy: SnapshotPolicy, logs_kept: u64) -> Arc<openraft::Config> {
    Arc::new(
        openraft::Config {
            cluster_name: "picloud-test".into(),
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy,
            max_in_snapshot_log_to_keep: logs_kept,
            ..Default::default()
        }
        .validate()
        .expect("valid raft config"),
    )
}

async fn start_member(
    ca: &ClusterCa,
    id: NodeId,
    config: Arc<openraft::Config>,
    rpc: RaftRpcConfig,
) -> Member {
    let cert = ca
        .issue_node_cert(id, &["127.0.0.1".into()])
        .expect("issue node cert");
    let endpoint = Arc::new(
        PeerEndpoint::bind("127.0.0.1:0".parse().expect("addr"), ca, &cert).expect("bind"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let storage =
        picloud_storage::open(&dir.path().join("raft"), &StorageOptions::default()).expect("open");
    let network = QuicNetwork::new(endpoint.clone(), rpc.clone());
    let raft = Raft::new(
        id,
        config,
        network,
        storage.log_store,
        storage.state_machine,
    )
    .await
    .expect("raft");
    let server = tokio::spawn(serve_raft(endpoint.clone(), raft.clone(), rpc));
    Member {
        id,
        raft,
        reader: storage.reader,
        endpoint,
        server,
        _dir: dir,
    }
}

/// Starts members `ids` and initialises them as one cluster of voters.
async fn start_cluster(
    ca: &ClusterCa,
    ids: &[NodeId],
    config: Arc<openraft::Config>,
    rpc: &RaftRpcConfig,
) -> Vec<Member> {
    let mut members = Vec::new();
    for id in ids {
        members.push(start_member(ca, *id, config.clone(), rpc.clone()).await);
    }
    let voters: BTreeMap<NodeId, NodeInfo> = members.iter().map(|m| (m.id, m.info())).collect();
    members[0]
        .raft
        .initialize(voters)
        .await
        .expect("initialize");
    members
}

/// Waits until every member agrees on one leader other than `not`.
async fn wait_for_leader(members: &[&Member], not: Option<NodeId>) -> NodeId {
    let rafts: Vec<(NodeId, &Raft<TypeConfig>)> = members.iter().map(|m| (m.id, &m.raft)).collect();
    common::wait_for_leader(&rafts, not).await
}

fn member<'a>(members: &'a [&'a Member], id: NodeId) -> &'a Member {
    members
        .iter()
        .find(|m| m.id == id)
        .expect("member with that id")
}

fn value(i: usize, size: usize) -> Vec<u8> {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(size.max(value.len()), b'x');
    value
}

/// Proposes `command` and returns its result and log index (once applied on the leader).
async fn write(raft: &Raft<TypeConfig>, command: Command) -> (CommandResult, u64) {
    let response = raft.client_write(command).await.expect("client write");
    (response.data, response.log_id.index)
}

async fn create_app(leader: &Member) {
    let (result, _) = write(
        &leader.raft,
        Command::AppCreate {
            app: APP.into(),
            now_ms: 1,
        },
    )
    .await;
    assert!(
        !matches!(result, CommandResult::Rejected(_)),
        "app created: {result:?}"
    );
}

/// Writes keys `range` through `leader`, each value `size` bytes; returns
/// the log index of the last write.
async fn write_keys(leader: &Member, range: std::ops::Range<usize>, size: usize) -> u64 {
    let mut last_index = 0;
    for i in range {
        let (result, index) = write(
            &leader.raft,
            Command::Kv {
                app: APP.into(),
                op: KvOp::Set {
                    key: format!("k{i}"),
                    value: value(i, size),
                    expires_at_ms: None,
                },
                now_ms: 2,
            },
        )
        .await;
        assert!(
            !matches!(result, CommandResult::Rejected(_)),
            "write {i}: {result:?}"
        );
        last_index = index;
    }
    last_index
}

/// Waits until every member applied log index `applied` (a write's index:
/// the leader's own metrics may trail its acknowledged writes), then checks
/// that each one's state holds keys `range`.
async fn assert_replicated(
    applied: u64,
    members: &[&Member],
    range: std::ops::Range<usize>,
    size: usize,
) {
    for member in members {
        member
            .raft
            .wait(Some(WAIT))
            .applied_index_at_least(
                Some(applied),
                format!("node {} applies {applied}", member.id),
            )
            .await
            .expect("applied within the deadline");
        for i in range.clone() {
            let got = member
                .reader
                .kv_get(APP, &format!("k{i}"), 3)
                .expect("read");
            assert_eq!(got, Some(value(i, size)), "node {} holds k{i}", member.id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_over_quic_and_survive_the_loss_of_the_leader() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let rpc = RaftRpcConfig::default();
        let config = raft_config(SnapshotPolicy::LogsSinceLast(20_000), 1_000);
        let members = start_cluster(&ca, &[1, 2, 3], config, &rpc).await;
        let all: Vec<&Member> = members.iter().collect();

        let leader_id = wait_for_leader(&all, None).await;
        let leader = member(&all, leader_id);
        create_app(leader).await;
        let last = write_keys(leader, 0..200, 16).await;
        assert_replicated(last, &all, 0..200, 16).await;

        // The leader dies: Raft stops and its endpoint closes.
        leader.stop().await;
        let survivors: Vec<&Member> = all.iter().copied().filter(|m| m.id != leader_id).collect();
        let new_leader_id = wait_for_leader(&survivors, Some(leader_id)).await;
        assert_ne!(new_leader_id, leader_id);
        let new_leader = member(&survivors, new_leader_id);
        let last = write_keys(new_leader, 200..250, 16).await;
        assert_replicated(last, &survivors, 0..250, 16).await;

        for member in survivors {
            member.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_after_log_compaction_receives_the_snapshot_over_quic() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        // Small chunks, so the snapshot crosses the wire as many frames.
        let rpc = RaftRpcConfig {
            snapshot_chunk_bytes: 16 * 1024,
            ..RaftRpcConfig::default()
        };
        let config = raft_config(SnapshotPolicy::LogsSinceLast(50), 0);
        let members = start_cluster(&ca, &[1, 2, 3], config.clone(), &rpc).await;
        let voters: Vec<&Member> = members.iter().collect();
        let leader_id = wait_for_leader(&voters, None).await;
        let leader = member(&voters, leader_id);

        // 300 entries of 1 KiB: several snapshots, and a log purged behind them.
        create_app(leader).await;
        let last = write_keys(leader, 0..300, 1024).await;
        assert_replicated(last, &voters, 0..300, 1024).await;
        let purged = leader
            .raft
            .wait(Some(WAIT))
            .metrics(
                |m| m.purged.is_some_and(|purged| purged.index >= 250),
                "the leader purged its log behind a snapshot",
            )
            .await
            .expect("log purged")
            .purged
            .expect("purged log id");

        // The learner can only catch up from the snapshot: the log it would
        // need starts after `purged`.
        let learner = start_member(&ca, 4, config, rpc.clone()).await;
        leader
            .raft
            .add_learner(learner.id, learner.info(), true)
            .await
            .expect("add learner");
        let mut everyone = voters.clone();
        everyone.push(&learner);
        assert_replicated(last, &everyone, 0..300, 1024).await;
        let metrics = learner.raft.metrics().borrow().clone();
        let snapshot = metrics.snapshot.expect("the learner installed a snapshot");
        assert!(
            snapshot.index >= purged.index,
            "the learner's snapshot ({snapshot}) covers the purged log ({purged})"
        );
        assert_eq!(metrics.state, ServerState::Learner);

        // And it keeps following the log after the snapshot.
        let last = write_keys(leader, 300..320, 1024).await;
        assert_replicated(last, &everyone, 0..320, 1024).await;

        for member in everyone {
            member.stop().await;
        }
    })
    .await;
}

/// What openraft sees when an RPC fails: a wrong or dead peer is
/// `Unreachable` (openraft backs off), a broken exchange on a live
/// connection is a `NetworkError` and the next RPC re-dials; a member that
/// claims another node's vote is disconnected; unsupported stream kinds are
/// refused without hurting the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_failures_map_to_unreachable_or_network_errors_and_reconnect() {
    use openraft::Vote;
    use openraft::error::RPCError;
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::VoteRequest;
    use picloud_cluster::transport::StreamKind;

    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let rpc = RaftRpcConfig::default();
        let config = raft_config(SnapshotPolicy::LogsSinceLast(20_000), 1_000);
        let server = start_member(&ca, 1, config, rpc.clone()).await;
        let cert = ca.issue_node_cert(2, &["127.0.0.1".into()]).expect("cert");
        let caller = Arc::new(
            PeerEndpoint::bind("127.0.0.1:0".parse().expect("addr"), &ca, &cert).expect("bind"),
        );
        let mut network = QuicNetwork::new(caller.clone(), rpc);
        let option = || RPCOption::new(Duration::from_millis(2_000));

        let mut to_server = network.new_client(1, &server.info()).await;
        let granted = to_server
            .vote(VoteRequest::new(Vote::new(1, 2), None), option())
            .await
            .expect("a vote round trip");
        assert_eq!(granted.vote.leader_id().voted_for(), Some(2));

        // Node 2 asks for votes as node 3: disconnected, reported as a network error.
        let impostor = to_server
            .vote(VoteRequest::new(Vote::new(2, 3), None), option())
            .await
            .expect_err("an impostor vote is refused");
        assert!(matches!(impostor, RPCError::Network(_)), "{impostor:?}");
        // The next RPC dials a new connection.
        to_server
            .vote(VoteRequest::new(Vote::new(3, 2), None), option())
            .await
            .expect("a vote on a new connection");

        // A stream kind the server does not serve yet is reset; the
        // connection keeps working.
        let connection = caller
            .connect_to(addr(&server.endpoint), 1)
            .await
            .expect("connect");
        let mut forward = connection.open(StreamKind::Forward).await.expect("open");
        forward.send_frame(b"write").await.ok();
        let _ = forward.finish();
        assert!(
            !matches!(forward.recv_frame().await, Ok(Some(_))),
            "no answer on an unsupported stream"
        );
        to_server
            .vote(VoteRequest::new(Vote::new(4, 2), None), option())
            .await
            .expect("votes still work");

        // Node 1's address, announced as node 3: refused by `connect_to`.
        let mut wrong_node = network.new_client(3, &server.info()).await;
        let error = wrong_node
            .vote(VoteRequest::new(Vote::new(5, 2), None), option())
            .await
            .expect_err("the wrong node is refused");
        assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");

        // Nobody listens here: unreachable within the RPC's deadline.
        let nobody = NodeInfo {
            http: String::new(),
            peer: "127.0.0.1:9".into(),
        };
        let mut dead = network.new_client(5, &nobody).await;
        let error = dead
            .vote(VoteRequest::new(Vote::new(6, 2), None), option())
            .await
            .expect_err("nobody answers");
        assert!(matches!(error, RPCError::Unreachable(_)), "{error:?}");

        network.close_all();
        caller.close();
        server.stop().await;
    })
    .await;
}

/// A restarted member keeps the promise its earlier self made to a leader
/// (no vote for anyone within a leader lease of hearing from it), which the
/// leader's read lease rests on: it answers no vote before `votes_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_answers_no_vote_before_votes_after() {
    use openraft::Vote;
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::VoteRequest;

    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let after = tokio::time::Instant::now() + Duration::from_millis(400);
        let rpc = RaftRpcConfig {
            votes_after: Some(after),
            ..RaftRpcConfig::default()
        };
        let config = raft_config(SnapshotPolicy::LogsSinceLast(20_000), 1_000);
        let server = start_member(&ca, 1, config, rpc).await;
        let cert = ca.issue_node_cert(2, &["127.0.0.1".into()]).expect("cert");
        let caller = Arc::new(
            PeerEndpoint::bind("127.0.0.1:0".parse().expect("addr"), &ca, &cert).expect("bind"),
        );
        let mut network = QuicNetwork::new(caller.clone(), RaftRpcConfig::default());
        let mut to_server = network.new_client(1, &server.info()).await;
        let granted = to_server
            .vote(
                VoteRequest::new(Vote::new(1, 2), None),
                RPCOption::new(Duration::from_millis(5_000)),
            )
            .await
            .expect("a vote round trip");
        assert!(
            tokio::time::Instant::now() >= after,
            "the vote was answered before votes_after"
        );
        assert_eq!(granted.vote.leader_id().voted_for(), Some(2));
        network.close_all();
        caller.close();
        server.stop().await;
    })
    .await;
}
