//! Files' blocks over QUIC: several members in one process, each with its
//! own `PeerEndpoint` on 127.0.0.1, its own block store in a temp dir and
//! the node's real peer server (`serve_raft_with`) handing `Blocks` streams
//! to its `Files`. Raft itself is never initialised: blocks do not go
//! through the log, and each member's view of the membership is a map the
//! test sets.
//!
//! Every wait is on a future bounded by a deadline; nothing sleeps to
//! synchronise.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::addr;
use futures::{StreamExt, TryStreamExt};
use openraft::Raft;
use picloud_cluster::disk::DiskGuard;
use picloud_cluster::files::MembersFn;
use picloud_cluster::files::placement::{REPLICAS_MAX, place};
use picloud_cluster::transport::{
    BlockReply, BlockRequest, BlockService, ClusterCa, ForwardError, ForwardFuture, ForwardHandler,
    ForwardReply, ForwardRequest, PeerEndpoint, QuicNetwork, RaftRpcConfig, StreamKind,
    serve_raft_with,
};
use picloud_cluster::{Files, FilesConfig, FilesError, NodeId, TypeConfig, Uploaded};
use picloud_storage::files::{BLOCK_BYTES, BlockHash};
use picloud_storage::{Command, CommandResult, StorageOptions};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("the test finished within 120 s")
}

/// Serves only `Blocks` streams.
struct BlocksOnly {
    files: Files,
}

impl ForwardHandler for BlocksOnly {
    fn write(&self, _command: Command) -> ForwardFuture<'_, (CommandResult, u64)> {
        Box::pin(async { Err(ForwardError::NoLeader) })
    }

    fn read_index(&self) -> ForwardFuture<'_, u64> {
        Box::pin(async { Err(ForwardError::NoLeader) })
    }

    fn blocks(&self) -> Option<&dyn BlockService> {
        Some(&self.files)
    }
}

struct Member {
    id: NodeId,
    files: Files,
    endpoint: Arc<PeerEndpoint>,
    network: QuicNetwork,
    raft: Raft<TypeConfig>,
    server: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Member {
    /// Stops serving, as a node killed with -9 would (its peers still list it).
    async fn stop(&self) {
        self.server.abort();
        self.network.close_all();
        self.endpoint.close();
        let _ = self.raft.shutdown().await;
    }
}

/// Members 1..=n, each seeing all n as the membership.
async fn start(n: u64, config: FilesConfig) -> Vec<Member> {
    start_under(&ClusterCa::create().expect("ca"), n, config, &[]).await
}

/// [`start`] under `ca`, the members in `full` with a disk reserve no disk
/// can meet (every block refused as `disk_full`).
async fn start_under(ca: &ClusterCa, n: u64, config: FilesConfig, full: &[NodeId]) -> Vec<Member> {
    let view: Arc<Mutex<BTreeMap<NodeId, String>>> = Arc::default();
    let mut members = Vec::new();
    for id in 1..=n {
        let cert = ca
            .issue_node_cert(id, &["127.0.0.1".into()])
            .expect("issue node cert");
        let endpoint = Arc::new(
            PeerEndpoint::bind("127.0.0.1:0".parse().expect("addr"), ca, &cert).expect("bind"),
        );
        view.lock()
            .expect("view")
            .insert(id, addr(&endpoint).to_string());
        let dir = tempfile::tempdir().expect("temp dir");
        let rpc = RaftRpcConfig::default();
        let network = QuicNetwork::new(endpoint.clone(), rpc.clone());
        let members_of: MembersFn = {
            let view = view.clone();
            Arc::new(move || view.lock().expect("view").clone())
        };
        let files = Files::open(
            dir.path(),
            id,
            Arc::new(DiskGuard::new(
                dir.path(),
                if full.contains(&id) { u64::MAX } else { 0 },
            )),
            network.connections().clone(),
            members_of,
            config.clone(),
        )
        .expect("open files");
        let storage = picloud_storage::open(&dir.path().join("raft"), &StorageOptions::default())
            .expect("open storage");
        let raft = Raft::new(
            id,
            Arc::new(openraft::Config::default().validate().expect("config")),
            network.clone(),
            storage.log_store,
            storage.state_machine,
        )
        .await
        .expect("raft");
        let handler = Arc::new(BlocksOnly {
            files: files.clone(),
        });
        let server = tokio::spawn(serve_raft_with(
            endpoint.clone(),
            raft.clone(),
            rpc,
            Some(handler as Arc<dyn ForwardHandler>),
        ));
        members.push(Member {
            id,
            files,
            endpoint,
            network,
            raft,
            server,
            _dir: dir,
        });
    }
    members
}

fn config() -> FilesConfig {
    FilesConfig {
        files_block_timeout_ms: 5_000,
        ..FilesConfig::default()
    }
}

/// `len` bytes that differ from block to block (no two blocks dedupe).
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed ^ (i >> 20) as u8)
        .collect()
}

fn body(bytes: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin {
    // Pieces of 100 KiB, so blocks straddle the body's chunks.
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(100 * 1024)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    futures::stream::iter(chunks)
}

/// The members placed for `hash` among members 1..=n, and one that is not.
fn placed_and_outsider(hash: &BlockHash, n: u64) -> (Vec<NodeId>, NodeId) {
    let ids: BTreeSet<NodeId> = (1..=n).collect();
    let placed = place(hash, &ids, REPLICAS_MAX);
    let outsider = ids
        .iter()
        .copied()
        .find(|id| !placed.contains(id))
        .expect("one node is not placed");
    (placed, outsider)
}

async fn upload(files: &Files, data: &[u8]) -> Uploaded {
    files.upload(body(data), 1 << 30).await.expect("upload")
}

async fn read(
    files: &Files,
    blocks: &[BlockHash],
    size: u64,
    range: std::ops::Range<u64>,
) -> Result<Vec<u8>, FilesError> {
    let chunks: Vec<Bytes> = files
        .read(Arc::from(blocks), size, range)
        .try_collect()
        .await?;
    Ok(chunks.concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_through_one_node_lands_on_every_replica_and_reads_back_through_each() {
    bounded(async {
        let members = start(3, config()).await;
        let data = payload(5 * BLOCK_BYTES as usize + 12_345, 1);
        let uploaded = upload(&members[0].files, &data).await;
        assert_eq!(uploaded.size, data.len() as u64);
        assert_eq!(uploaded.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        assert!(uploaded.inline.is_none());
        assert_eq!(uploaded.blocks.len(), 6);
        // Three members: every block on all three, durable on disk.
        for member in &members {
            for hash in &uploaded.blocks {
                assert!(
                    member.files.store().has(hash),
                    "node {} lacks a block",
                    member.id
                );
            }
            let held = members[0]
                .files
                .has(member.id, &uploaded.blocks)
                .await
                .expect("has");
            assert!(held.iter().all(|held| *held));
        }
        for member in &members {
            let back = read(
                &member.files,
                &uploaded.blocks,
                uploaded.size,
                0..uploaded.size,
            )
            .await
            .expect("read");
            assert!(back == data, "node {} read other bytes", member.id);
        }
        // A small body stays inline: no blocks anywhere.
        let small = members[1]
            .files
            .upload(body(b"hello"), 1 << 30)
            .await
            .expect("small upload");
        assert_eq!(small.inline.as_deref(), Some(&b"hello"[..]));
        assert!(small.blocks.is_empty());
        // Over the limit: refused.
        let over = members[0].files.upload(body(&data), 1_000_000).await;
        assert!(
            matches!(over, Err(FilesError::TooLarge { max: 1_000_000 })),
            "{over:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_block_streams_it_from_a_replica_across_block_edges() {
    bounded(async {
        let members = start(4, config()).await;
        let data = payload(3 * BLOCK_BYTES as usize, 2);
        let uploaded = upload(&members[0].files, &data).await;
        // Four members, three replicas: find a node that lacks block 0 and
        // make it lack block 1 too.
        let (_, outsider) = placed_and_outsider(&uploaded.blocks[0], 4);
        let reader = &members[outsider as usize - 1];
        assert!(!reader.files.store().has(&uploaded.blocks[0]));
        reader
            .files
            .remove_local(uploaded.blocks[1], || true)
            .await
            .expect("remove");
        let edge = BLOCK_BYTES - 10..BLOCK_BYTES + 10;
        let back = read(&reader.files, &uploaded.blocks, uploaded.size, edge.clone())
            .await
            .expect("range read");
        assert_eq!(back, data[edge.start as usize..edge.end as usize]);
        let whole = read(
            &reader.files,
            &uploaded.blocks,
            uploaded.size,
            0..uploaded.size,
        )
        .await
        .expect("whole read");
        assert!(whole == data);
        // Reads never copied the blocks here.
        assert!(!reader.files.store().has(&uploaded.blocks[0]));
        // A block no member holds: unavailable, not wrong bytes.
        let missing = [[9u8; 32]];
        let error = read(&reader.files, &missing, 100, 0..100)
            .await
            .expect_err("no source");
        assert!(
            matches!(error, FilesError::BlockUnavailable { .. }),
            "{error}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_needs_a_majority_of_each_blocks_replicas() {
    bounded(async {
        let members = start(3, config()).await;
        members[2].stop().await;
        let data = payload(2 * BLOCK_BYTES as usize + 1, 3);
        let uploaded = members[0]
            .files
            .upload(body(&data), 1 << 30)
            .await
            .expect("two of three replicas are enough");
        let back = read(
            &members[1].files,
            &uploaded.blocks,
            uploaded.size,
            0..uploaded.size,
        )
        .await
        .expect("read through the other live node");
        assert!(back == data);

        members[1].stop().await;
        let error = members[0]
            .files
            .upload(body(&payload(2 * BLOCK_BYTES as usize, 4)), 1 << 30)
            .await
            .expect_err("one of three is not a majority");
        assert!(
            matches!(error, FilesError::ReplicasUnavailable { acked, needed: 2, .. } if acked < 2),
            "{error}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_is_pulled_to_a_node_and_dropped_only_where_it_is_not_placed() {
    bounded(async {
        let members = start(4, config()).await;
        let data = payload(BLOCK_BYTES as usize, 5);
        let uploaded = upload(&members[0].files, &data).await;
        let hash = uploaded.blocks[0];
        let (placed, outsider) = placed_and_outsider(&hash, 4);
        // Node 1 asks the outsider to pull the block from the placed nodes.
        members[0]
            .files
            .pull(outsider, hash, placed.clone())
            .await
            .expect("pull");
        assert!(members[outsider as usize - 1].files.store().has(&hash));
        // A placed node refuses to drop its copy; the outsider drops its own.
        let error = members[0]
            .files
            .drop_block(placed[0], hash)
            .await
            .expect_err("placed");
        assert!(matches!(error, FilesError::Io(_)), "{error}");
        assert!(members[placed[0] as usize - 1].files.store().has(&hash));
        members[0]
            .files
            .drop_block(outsider, hash)
            .await
            .expect("drop");
        assert!(!members[outsider as usize - 1].files.store().has(&hash));
        // A pull with no source holding the block is unavailable.
        let error = members[0]
            .files
            .pull(outsider, [7; 32], placed)
            .await
            .expect_err("nobody holds it");
        assert!(
            matches!(error, FilesError::BlockUnavailable { .. }),
            "{error}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_streams_to_one_peer_stay_within_the_cap() {
    bounded(async {
        let cap = 2;
        let members = start(
            4,
            FilesConfig {
                files_block_streams_per_peer_max: cap,
                ..config()
            },
        )
        .await;
        let data = payload(BLOCK_BYTES as usize, 6);
        let uploaded = upload(&members[0].files, &data).await;
        let (placed, outsider) = placed_and_outsider(&uploaded.blocks[0], 4);
        let reader = &members[outsider as usize - 1];
        let source = placed[0];
        // Twelve reads at once, all from the first placed node.
        let reads = futures::stream::iter(0..12)
            .map(|_| {
                read(
                    &reader.files,
                    &uploaded.blocks,
                    uploaded.size,
                    0..uploaded.size,
                )
            })
            .buffer_unordered(12)
            .collect::<Vec<_>>();
        tokio::pin!(reads);
        let mut most = 0;
        let results = loop {
            tokio::select! {
                results = &mut reads => break results,
                _ = tokio::task::yield_now() => {
                    most = most.max(reader.files.streams_open(source));
                }
            }
        };
        for result in results {
            assert!(result.expect("read") == data);
        }
        assert!(most <= cap, "{most} streams open to one peer, cap {cap}");
        assert!(most >= 1, "the reads went to the peer");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_streams_over_the_cap_never_hold_the_permits_raft_needs() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let cap = 2;
        let block_timeout = Duration::from_secs(3);
        let members = start_under(
            &ca,
            1,
            FilesConfig {
                files_block_streams_per_peer_max: cap,
                files_block_timeout_ms: block_timeout.as_millis() as u64,
                ..config()
            },
            &[],
        )
        .await;
        let cert = ca
            .issue_node_cert(9, &["127.0.0.1".into()])
            .expect("issue node cert");
        let client =
            PeerEndpoint::bind("127.0.0.1:0".parse().expect("addr"), &ca, &cert).expect("bind");
        let connection = client
            .connect_to(addr(&members[0].endpoint), 1)
            .await
            .expect("connect");
        // More block streams than the connection's 32 shared permits, none
        // sending its request yet: with block streams under the shared
        // permits, Raft's next stream would wait behind them.
        let mut streams = Vec::new();
        for _ in 0..40 {
            streams.push(connection.open(StreamKind::Blocks).await.expect("open"));
        }
        let started = tokio::time::Instant::now();
        let mut forward = connection.open(StreamKind::Forward).await.expect("open");
        forward
            .send(&ForwardRequest::ReadIndex)
            .await
            .expect("send");
        let reply: Option<ForwardReply> = forward.recv().await.expect("reply");
        assert_eq!(reply, Some(ForwardReply::Failed(ForwardError::NoLeader)));
        assert!(
            started.elapsed() < block_timeout / 2,
            "a forwarded request waited {:?} behind block streams",
            started.elapsed()
        );
        // The streams over the cap are reset once they waited the block
        // timeout for a slot; the `cap` served ones still wait for their
        // request (up to twice the block timeout), and then answer it.
        let outcomes = futures::future::join_all(streams.iter_mut().map(|stream| {
            tokio::time::timeout(block_timeout * 3 / 2, stream.recv::<BlockReply>())
        }))
        .await;
        let refused = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Ok(Err(_))))
            .count();
        let waiting: Vec<usize> = (0..outcomes.len())
            .filter(|index| outcomes[*index].is_err())
            .collect();
        assert_eq!((refused, waiting.len()), (40 - cap, cap));
        for index in waiting {
            let stream = &mut streams[index];
            stream
                .send(&BlockRequest::Has {
                    hashes: vec![[1; 32]],
                })
                .await
                .expect("send");
            let reply: Option<BlockReply> = stream.recv().await.expect("reply");
            assert_eq!(reply, Some(BlockReply::Has(vec![false])));
        }
        client.close();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_moves_on_from_a_dead_replica_to_a_live_one() {
    bounded(async {
        let members = start(4, config()).await;
        let data = payload(4 * BLOCK_BYTES as usize, 7);
        let uploaded = upload(&members[0].files, &data).await;
        let (placed, outsider) = placed_and_outsider(&uploaded.blocks[0], 4);
        // The first source the outsider would ask for block 0 dies.
        let first = placed[0];
        members[first as usize - 1].stop().await;
        let reader = &members[outsider as usize - 1];
        let back = read(
            &reader.files,
            &uploaded.blocks,
            uploaded.size,
            0..uploaded.size,
        )
        .await
        .expect("read from the live replicas");
        assert!(back == data);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_full_disks_fail_the_upload_as_disk_full() {
    bounded(async {
        let ca = ClusterCa::create().expect("ca");
        let members = start_under(&ca, 3, config(), &[3]).await;
        // One full replica of three: the other two are a majority.
        let data = payload(BLOCK_BYTES as usize + 1, 8);
        let uploaded = upload(&members[0].files, &data).await;
        assert!(!members[2].files.store().has(&uploaded.blocks[0]));

        let members = start_under(&ca, 3, config(), &[2, 3]).await;
        let error = members[0]
            .files
            .upload(body(&data), 1 << 30)
            .await
            .expect_err("two full replicas of three");
        assert!(
            matches!(error, FilesError::DiskFull { node, .. } if node == 2 || node == 3),
            "{error}"
        );
        for member in &members[1..] {
            let temp = member
                .files
                .store()
                .root()
                .join("tmp")
                .read_dir()
                .expect("tmp")
                .count();
            assert_eq!(temp, 0, "node {} kept a temp file", member.id);
        }
    })
    .await;
}
