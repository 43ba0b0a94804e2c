//! A node's duties resume their pending work after a panic: each test arms
//! the test-only fault switch (`fault-injection`, on for this crate's tests)
//! and runs the node's duties (and the membership duty) under the real
//! `DutySupervisor`, which restarts a panicked run with backoff and counts it.
//!
//! - `batcher`: writes queued while the batcher panics are all applied.
//! - `membership`: a node admitted while the leader's membership run panics
//!   (between planning "add it as a learner" and doing it) is added.
//! - `peers`: after the accept loop panics, connections waiting in the
//!   endpoint's queue and new ones (a follower's forwarded write) are served.
//!
//! The fault switch is process-wide, so the tests take turns (`FAULTS`).

use std::sync::Arc;
use std::time::Duration;

use picloud_actors::{ActorLimits, ActorRestarts, Duties};
use picloud_cluster::{ClusterConfig, JoinKeys, JoinTarget, Node, NodeInfo, arm_fault};
use picloud_storage::secret_box::{Keyring, MasterKey};
use picloud_storage::{Command, CommandResult, NodeId, StorageOptions};

/// One test at a time arms faults: a fault point of another test's node
/// would otherwise take the panic.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a condition may take to come true.
const WAIT: Duration = Duration::from_secs(20);

/// A loopback address with a UDP port nobody holds right now.
fn free_peer_addr() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").to_string()
}

fn config() -> ClusterConfig {
    ClusterConfig {
        secret_keys: Some(Arc::new(Keyring::new(
            MasterKey::from_bytes([5; 32]),
            vec![],
        ))),
        ..ClusterConfig::default()
    }
}

/// Starts a node whose duties (and membership duty) run under a duty
/// supervisor counting into `restarts`.
async fn start(
    dir: &std::path::Path,
    join: Option<JoinTarget>,
    restarts: &Arc<ActorRestarts>,
) -> Node {
    let (node, duties) = Node::start_with(
        dir,
        NodeInfo {
            http: "127.0.0.1:0".into(),
            peer: free_peer_addr(),
        },
        config(),
        &StorageOptions::default(),
        join,
    )
    .await
    .expect("node starts");
    let supervisor = Duties::start(Arc::new(ActorLimits::default()), restarts.clone())
        .await
        .expect("duty supervisor");
    for duty in duties {
        supervisor.supervise(duty);
    }
    supervisor.supervise(picloud_actors::membership::duty(node.clone()));
    node
}

/// Polls `condition` until it holds, for at most [`WAIT`].
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn allocate(node: &Node) -> NodeId {
    match node.write(Command::AllocateNodeId { now_ms: 0 }).await {
        Ok(CommandResult::NodeIdAllocated { id }) => id,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_while_the_batcher_panics_are_applied() {
    let _faults = FAULTS.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let restarts = Arc::new(ActorRestarts::default());
    let node = start(dir.path(), None, &restarts).await;
    until("a leader", || node.status().role.is_leader()).await;
    assert!(arm_fault("batcher"), "the fault switch is compiled in");
    let writes: Vec<_> = (0..8)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { allocate(&node).await })
        })
        .collect();
    let mut ids = Vec::new();
    for write in writes {
        ids.push(write.await.expect("writer"));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "every queued write applied once: {ids:?}");
    assert_eq!(restarts.count("batcher"), 1);
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_is_added_and_served_after_membership_and_peers_panic() {
    let _faults = FAULTS.lock().await;
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let (first_restarts, joiner_restarts) = (
        Arc::new(ActorRestarts::default()),
        Arc::new(ActorRestarts::default()),
    );
    let first = start(dirs[0].path(), None, &first_restarts).await;
    until("a leader", || first.status().role.is_leader()).await;
    first.ensure_cluster_secrets(0).await.expect("secrets");
    let token = first.join_token().expect("token").expect("a token");
    let first_peer = first.status().nodes[&first.id()].peer.clone();

    // The leader's membership run panics between planning "add the joiner
    // as a learner" and doing it; the accept loop panics once it has taken
    // the join connection, before the next.
    assert!(arm_fault("membership") && arm_fault("peers"));
    let joiner = start(
        dirs[1].path(),
        Some(JoinTarget {
            addr: first_peer.parse().expect("peer addr"),
            token,
            timeout_ms: 30_000,
            keys: JoinKeys::Configured {
                key_id: MasterKey::from_bytes([5; 32]).id_hex(),
            },
        }),
        &joiner_restarts,
    )
    .await;
    let joiner_id = joiner.id();
    until("the joiner is a learner", || {
        first.status().nodes.contains_key(&joiner_id) && joiner.status().leader == Some(first.id())
    })
    .await;
    assert_eq!(first_restarts.count("membership"), 1);
    assert_eq!(
        first_restarts.count("peers") + joiner_restarts.count("peers"),
        1
    );

    // The joiner's write is forwarded to the leader over a new connection,
    // which the leader's restarted accept loop serves.
    let id = allocate(&joiner).await;
    assert!(id > joiner_id, "{id}");
    joiner.shutdown().await.expect("shutdown");
    first.shutdown().await.expect("shutdown");
}
