//! The leader's `files_repair` duty copies every block to a member that
//! joins after the blocks were written (one member: one replica; two
//! members: both hold every block), over real QUIC between two nodes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use picloud_actors::ActorRestarts;
use picloud_actors::config::RealtimeLimits;
use picloud_actors::files::{FileService, repair_duty};
use picloud_actors::realtime::Realtime;
use picloud_cluster::{ClusterConfig, FilesConfig, JoinKeys, JoinTarget, Node, NodeInfo};
use picloud_storage::files::BLOCK_BYTES;
use picloud_storage::secret_box::{Keyring, MasterKey};
use picloud_storage::{Command, CommandResult, StorageOptions};

/// How long a condition may take to come true.
const WAIT: Duration = Duration::from_secs(30);

/// A loopback address with a UDP port nobody holds right now.
fn free_peer_addr() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").to_string()
}

fn keys() -> Arc<Keyring> {
    Arc::new(Keyring::new(MasterKey::from_bytes([5; 32]), vec![]))
}

fn config() -> ClusterConfig {
    ClusterConfig {
        secret_keys: Some(keys()),
        files: FilesConfig {
            files_repair_interval_ms: 200,
            ..FilesConfig::default()
        },
        ..ClusterConfig::default()
    }
}

async fn start(dir: &std::path::Path, join: Option<JoinTarget>) -> Node {
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
    for duty in duties {
        duty.detach();
    }
    picloud_actors::membership::duty(node.clone()).detach();
    node
}

/// Polls `condition` until it holds, for at most [`WAIT`].
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `node` stores `hash` in its own blocks dir.
fn holds(node: &Node, hash: &[u8; 32]) -> bool {
    node.files()
        .local_blocks_shard(hash[0])
        .map(|shard| shard.iter().any(|(held, _)| held == hash))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_receives_every_block_it_is_placed_on() {
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let first = start(dirs[0].path(), None).await;
    until("a leader", || first.status().role.is_leader()).await;
    first.ensure_cluster_secrets(0).await.expect("secrets");
    let created = first
        .write(Command::AppCreate {
            app: "shop".into(),
            now_ms: 1,
        })
        .await
        .expect("app");
    assert!(
        !matches!(created, CommandResult::Rejected(_)),
        "{created:?}"
    );
    let realtime = Realtime::start(
        first.clone(),
        Some(keys()),
        RealtimeLimits::default(),
        Arc::new(ActorRestarts::default()),
    )
    .await
    .expect("realtime");
    let service = FileService::new(first.clone(), realtime, config().files);

    // Alone, the first node holds the only replica of each block.
    let data: Vec<u8> = (0..(2 * BLOCK_BYTES + 7))
        .map(|i| (i % 251) as u8)
        .collect();
    let body = futures::stream::iter(
        data.chunks(1 << 16)
            .map(|chunk| Ok::<_, std::io::Error>(Bytes::copy_from_slice(chunk)))
            .collect::<Vec<_>>(),
    );
    service
        .put_stream("shop", "big.bin", None, body, None)
        .await
        .expect("put");
    let blocks = first
        .reader()
        .file_blocks("shop", "big.bin")
        .expect("block list");
    assert_eq!(blocks.len(), 3);
    assert!(blocks.iter().all(|hash| holds(&first, hash)));

    repair_duty(service.clone()).detach();
    let token = first.join_token().expect("token").expect("a token");
    let first_peer = first.status().nodes[&first.id()].peer.clone();
    let second = start(
        dirs[1].path(),
        Some(JoinTarget {
            addr: first_peer.parse().expect("peer addr"),
            token,
            timeout_ms: 30_000,
            keys: JoinKeys::Configured {
                key_id: MasterKey::from_bytes([5; 32]).id_hex(),
            },
        }),
    )
    .await;
    let second_id = second.id();
    until("the joiner is a member", || {
        first.files().members().contains(&second_id)
    })
    .await;
    // Two members: placement names both for every block, so repair copies
    // each one over; the first keeps its own.
    until("every block is on the joiner", || {
        blocks.iter().all(|hash| holds(&second, hash))
    })
    .await;
    assert!(blocks.iter().all(|hash| holds(&first, hash)));
}
