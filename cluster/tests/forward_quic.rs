//! Forwarding over QUIC: three real Raft nodes in one process, each with its
//! own sled storage in a temp dir, its own `PeerEndpoint` on 127.0.0.1 and a
//! `serve_raft_with` server that hands `Forward` streams to a
//! `RaftForwardHandler`. Followers reach the leader with a `ForwardClient`
//! over the same connection pool as their Raft network.
//!
//! Every wait is on Raft metrics or a future, bounded by a deadline; nothing
//! sleeps to synchronise.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{WAIT, addr};
use openraft::Raft;
use picloud_cluster::transport::{
    ClusterCa, ForwardCallError, ForwardClient, ForwardError, ForwardFuture, ForwardHandler,
    PeerEndpoint, QuicNetwork, RaftForwardHandler, RaftRpcConfig, serve_raft_with, wait_applied,
};
use picloud_cluster::{ClusterError, NodeId, NodeInfo, TypeConfig};
use picloud_storage::{Command, CommandResult, KvOp, StateReader, StorageOptions};
use tempfile::TempDir;
use tokio::time::Instant;

const APP: &str = "app";
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("the test finished within 120 s")
}

/// One Raft member with its storage, endpoint, RPC server and forwarding client.
struct Member {
    id: NodeId,
    raft: Raft<TypeConfig>,
    reader: StateReader,
    endpoint: Arc<PeerEndpoint>,
    network: QuicNetwork,
    forward: ForwardClient,
    server: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Member {
    fn info(&self) -> NodeInfo {
        NodeInfo {
            http: String::new(),
            peer: self.peer(),
        }
    }

    fn peer(&self) -> String {
        addr(&self.endpoint).to_string()
    }

    /// Stops Raft and the endpoint, as a dying node would.
    async fn stop(&self) {
        self.raft.shutdown().await.expect("raft shut down");
        self.network.close_all();
        self.endpoint.close();
        self.server.abort();
    }
}

fn raft_config() -> Arc<openraft::Config> {
    Arc::new(
        openraft::Config {
            cluster_name: "picloud-test".into(),
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..Default::default()
        }
        .validate()
        .expect("valid raft config"),
    )
}

async fn start_member(ca: &ClusterCa, id: NodeId, rpc: RaftRpcConfig) -> Member {
    start_member_with(ca, id, rpc, |raft| Arc::new(RaftForwardHandler::new(raft))).await
}

async fn start_member_with(
    ca: &ClusterCa,
    id: NodeId,
    rpc: RaftRpcConfig,
    handler: impl FnOnce(Raft<TypeConfig>) -> Arc<dyn ForwardHandler>,
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
    let forward = ForwardClient::new(network.connections().clone(), FORWARD_TIMEOUT);
    let raft = Raft::new(
        id,
        raft_config(),
        network.clone(),
        storage.log_store,
        storage.state_machine,
    )
    .await
    .expect("raft");
    let handler = handler(raft.clone());
    let server = tokio::spawn(serve_raft_with(
        endpoint.clone(),
        raft.clone(),
        rpc,
        Some(handler),
    ));
    Member {
        id,
        raft,
        reader: storage.reader,
        endpoint,
        network,
        forward,
        server,
        _dir: dir,
    }
}

/// Starts members 1, 2, 3 as one cluster of voters.
async fn start_cluster(ca: &ClusterCa) -> Vec<Member> {
    let rpc = RaftRpcConfig::default();
    let mut members = Vec::new();
    for id in [1, 2, 3] {
        members.push(start_member(ca, id, rpc.clone()).await);
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

fn member<'a>(members: &[&'a Member], id: NodeId) -> &'a Member {
    members
        .iter()
        .copied()
        .find(|m| m.id == id)
        .expect("member with that id")
}

fn followers<'a>(members: &[&'a Member], leader: NodeId) -> Vec<&'a Member> {
    members.iter().copied().filter(|m| m.id != leader).collect()
}

fn value(i: usize) -> Vec<u8> {
    format!("\"value-{i}\"").into_bytes()
}

fn set(i: usize) -> Command {
    Command::Kv {
        app: APP.into(),
        op: KvOp::Set {
            key: format!("k{i}"),
            value: value(i),
            expires_at_ms: None,
        },
        now_ms: 2,
    }
}

fn create_app() -> Command {
    Command::AppCreate {
        app: APP.into(),
        now_ms: 1,
    }
}

fn read(member: &Member, i: usize) -> Option<Vec<u8>> {
    member
        .reader
        .kv_get(APP, &format!("k{i}"), 3)
        .expect("local read")
}

/// Forwards `command` from `from` to `leader`, waits until `from` applied it,
/// and returns the result and log index.
async fn forward_write(from: &Member, leader: &Member, command: Command) -> (CommandResult, u64) {
    let (result, index) = from
        .forward
        .write_via(leader.id, &leader.peer(), command)
        .await
        .expect("forwarded write");
    assert!(
        !matches!(result, CommandResult::Rejected(_)),
        "write applied: {result:?}"
    );
    wait_applied(&from.raft, index, WAIT)
        .await
        .expect("the follower applies the forwarded write");
    (result, index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_forwarded_from_a_follower_are_readable_there_right_after() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let members = start_cluster(&ca).await;
        let all: Vec<&Member> = members.iter().collect();
        let leader_id = wait_for_leader(&all, None).await;
        let leader = member(&all, leader_id);
        let follower = followers(&all, leader_id)[0];

        let (_, mut previous) = forward_write(follower, leader, create_app()).await;
        for i in 0..200 {
            let (result, index) = forward_write(follower, leader, set(i)).await;
            assert_eq!(
                result,
                CommandResult::Kv(picloud_storage::KvOpResult::Set),
                "write {i}"
            );
            assert!(index > previous, "log indexes grow: {index} > {previous}");
            previous = index;
            // Read-your-writes: local state on the follower, no further wait.
            assert_eq!(read(follower, i), Some(value(i)), "follower reads k{i}");
        }
        // The leader holds them too.
        for i in [0, 99, 199] {
            assert_eq!(read(leader, i), Some(value(i)), "leader holds k{i}");
        }

        for member in all {
            member.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_index_from_the_leader_makes_a_follower_read_linearizable() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let members = start_cluster(&ca).await;
        let all: Vec<&Member> = members.iter().collect();
        let leader_id = wait_for_leader(&all, None).await;
        let leader = member(&all, leader_id);

        leader
            .raft
            .client_write(create_app())
            .await
            .expect("create app");
        for follower in followers(&all, leader_id) {
            for i in 0..20 {
                // Acknowledged by the leader (committed and applied there) ...
                let written = leader.raft.client_write(set(i)).await.expect("write");
                // ... then a read through the follower must see it.
                let index = follower
                    .forward
                    .read_index_via(leader_id, &leader.peer())
                    .await
                    .expect("read index");
                assert!(
                    index >= written.log_id.index,
                    "the read index {index} covers the write at {}",
                    written.log_id.index
                );
                wait_applied(&follower.raft, index, WAIT)
                    .await
                    .expect("the follower applies up to the read index");
                assert_eq!(
                    read(follower, i),
                    Some(value(i)),
                    "node {} reads k{i}",
                    follower.id
                );
            }
        }

        for member in all {
            member.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_to_a_node_that_does_not_lead_names_the_leader() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let members = start_cluster(&ca).await;
        let all: Vec<&Member> = members.iter().collect();
        let leader_id = wait_for_leader(&all, None).await;
        let leader = member(&all, leader_id);
        let others = followers(&all, leader_id);
        let (from, not_leader) = (others[0], others[1]);

        let error = from
            .forward
            .write_via(not_leader.id, &not_leader.peer(), create_app())
            .await
            .expect_err("a follower does not take writes");
        assert!(
            matches!(
                &error,
                ForwardCallError::Refused {
                    leader,
                    error: ForwardError::NotLeader { leader: Some(actual) },
                } if *leader == not_leader.id && *actual == leader_id
            ),
            "{error:?}"
        );
        assert!(error.not_applied());
        assert_eq!(error.leader_hint(), Some(leader_id));

        let error = from
            .forward
            .read_index_via(not_leader.id, &not_leader.peer())
            .await
            .expect_err("a follower does not answer read-index");
        assert_eq!(error.leader_hint(), Some(leader_id), "{error:?}");

        // The refused write was not applied anywhere; sent to the leader it is.
        let (_, index) = forward_write(from, leader, create_app()).await;
        wait_applied(&not_leader.raft, index, WAIT)
            .await
            .expect("replicated");
        forward_write(from, leader, set(1)).await;
        assert_eq!(read(from, 1), Some(value(1)));

        for member in all {
            member.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_to_a_dead_leader_fails_in_time_and_the_new_leader_takes_over() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let members = start_cluster(&ca).await;
        let all: Vec<&Member> = members.iter().collect();
        let leader_id = wait_for_leader(&all, None).await;
        let leader = member(&all, leader_id);
        let survivors = followers(&all, leader_id);
        let from = survivors[0];

        forward_write(from, leader, create_app()).await;
        forward_write(from, leader, set(0)).await;

        leader.stop().await;

        // The dead leader: a transport failure (no answer from it), within the timeout.
        let timeout = Duration::from_secs(2);
        let client = ForwardClient::new(from.network.connections().clone(), timeout);
        for attempt in 0..2 {
            let started = Instant::now();
            let error = client
                .write_via(leader_id, &leader.peer(), set(1))
                .await
                .expect_err("the dead leader does not answer");
            let took = started.elapsed();
            assert!(
                !matches!(error, ForwardCallError::Refused { .. }),
                "attempt {attempt}: {error:?}"
            );
            assert!(
                took <= timeout + Duration::from_millis(500),
                "attempt {attempt} failed within the timeout: took {took:?} ({error})"
            );
        }

        // A leader that vanished without closing anything (kill -9, a cut
        // cable): its address swallows packets. Node 9 there is unreachable
        // within the timeout.
        let black_hole = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a silent socket");
        let silent = black_hole.local_addr().expect("addr").to_string();
        let started = Instant::now();
        let error = client
            .read_index_via(9, &silent)
            .await
            .expect_err("nobody answers");
        let took = started.elapsed();
        assert!(
            matches!(error, ForwardCallError::Unreachable { leader: 9, .. }),
            "{error:?}"
        );
        assert!(error.not_applied());
        assert!(
            took <= timeout + Duration::from_millis(500),
            "failed within the timeout: took {took:?}"
        );

        // Forwarding to the new leader works, from whichever survivor follows it.
        let new_leader_id = wait_for_leader(&survivors, Some(leader_id)).await;
        assert_ne!(new_leader_id, leader_id);
        let new_leader = member(&survivors, new_leader_id);
        let follower = followers(&survivors, new_leader_id)[0];
        for i in 1..20 {
            forward_write(follower, new_leader, set(i)).await;
            assert_eq!(read(follower, i), Some(value(i)));
        }
        assert_eq!(
            read(follower, 0),
            Some(value(0)),
            "the earlier write survived"
        );
        let index = follower
            .forward
            .read_index_via(new_leader_id, &new_leader.peer())
            .await
            .expect("read index from the new leader");
        wait_applied(&follower.raft, index, WAIT)
            .await
            .expect("applied");

        for member in survivors {
            member.stop().await;
        }
    })
    .await;
}

/// A handler that never finishes, as on a leader that lost its quorum.
struct Stuck;

impl ForwardHandler for Stuck {
    fn write(&self, _command: Command) -> ForwardFuture<'_, (CommandResult, u64)> {
        Box::pin(std::future::pending())
    }

    fn read_index(&self) -> ForwardFuture<'_, u64> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_does_not_answer_is_a_timeout_on_either_side() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        // The server gives up after 300 ms and answers `Timeout`.
        let quick = RaftRpcConfig {
            forward_timeout_ms: 300,
            ..RaftRpcConfig::default()
        };
        let first = start_member_with(&ca, 1, quick, |_| Arc::new(Stuck)).await;
        let caller = start_member(&ca, 2, RaftRpcConfig::default()).await;
        let error = caller
            .forward
            .write_via(first.id, &first.peer(), create_app())
            .await
            .expect_err("the write does not finish");
        assert!(
            matches!(
                error,
                ForwardCallError::Refused {
                    error: ForwardError::Timeout,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!error.not_applied(), "a timed-out write may still apply");

        // A server that waits longer than the client: the client's own timeout.
        let patient = RaftRpcConfig {
            forward_timeout_ms: 60_000,
            ..RaftRpcConfig::default()
        };
        let server = start_member_with(&ca, 3, patient, |_| Arc::new(Stuck)).await;
        let timeout = Duration::from_millis(500);
        let client = ForwardClient::new(caller.network.connections().clone(), timeout);
        let connection = caller
            .network
            .connections()
            .connection(server.id, &server.peer(), WAIT)
            .await
            .expect("connect");
        let started = Instant::now();
        let error = client
            .read_index_via(server.id, &server.peer())
            .await
            .expect_err("no answer");
        assert!(
            matches!(error, ForwardCallError::Timeout { leader: 3, .. }),
            "{error:?}"
        );
        assert!(started.elapsed() <= timeout + Duration::from_millis(500));

        // The cancelled stream was reset, not cut off mid-frame: the server
        // did not disconnect us, and the next request times out the same way.
        let error = client
            .read_index_via(server.id, &server.peer())
            .await
            .expect_err("no answer");
        assert!(
            matches!(error, ForwardCallError::Timeout { leader: 3, .. }),
            "{error:?}"
        );
        assert!(
            !connection.is_closed(),
            "the shared connection survived both cancelled requests"
        );
        for member in [&first, &caller, &server] {
            member.stop().await;
        }
    })
    .await;
}

/// A leader that drops every connection once it holds the write: the
/// request was sent, and no answer will ever come.
struct HangsUp(Arc<OnceLock<Arc<PeerEndpoint>>>);

impl ForwardHandler for HangsUp {
    fn write(&self, _command: Command) -> ForwardFuture<'_, (CommandResult, u64)> {
        if let Some(endpoint) = self.0.get() {
            endpoint.close();
        }
        Box::pin(std::future::pending())
    }

    fn read_index(&self) -> ForwardFuture<'_, u64> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_never_comes_has_an_unknown_outcome() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let endpoint = Arc::new(OnceLock::new());
        let handler = HangsUp(endpoint.clone());
        let first =
            start_member_with(&ca, 1, RaftRpcConfig::default(), |_| Arc::new(handler)).await;
        assert!(endpoint.set(first.endpoint.clone()).is_ok());
        let caller = start_member(&ca, 2, RaftRpcConfig::default()).await;
        let started = Instant::now();
        let error = caller
            .forward
            .write_via(first.id, &first.peer(), create_app())
            .await
            .expect_err("no answer");
        assert!(
            started.elapsed() < FORWARD_TIMEOUT,
            "the lost connection is seen when it happens, not at the timeout: {error:?}"
        );
        assert!(!error.not_applied(), "{error:?}");
        // What `Node::write` reports: outcome_unknown, not a timeout.
        let reported = error.write_error(FORWARD_TIMEOUT.as_millis() as u64);
        assert!(
            matches!(reported, ClusterError::OutcomeUnknown { leader: 1, .. }),
            "{reported:?}"
        );
        caller.stop().await;
        first.server.abort();
    })
    .await;
}
