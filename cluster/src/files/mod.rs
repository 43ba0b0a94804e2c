//! Files' content: 1 MiB content-addressed blocks stored outside the Raft
//! log under `<data-dir>/blocks/`, each on the members rendezvous hashing
//! places it on, moved between nodes over QUIC `Blocks` streams.
//!
//! The metadata (a `FilePut` command) is the layers above's business: they
//! call [`Files::upload`] with the body, then propose the metadata with the
//! returned block list. Nothing here reads the state machine except to
//! know the membership.
//!
//! ```text
//!  upload(body) ──▶ upload.rs: 1 MiB blocks ──▶ place() ──▶ store.rs (self) / remote.rs Put (peers), majority acks
//!  read(range)  ──▶ download.rs: store.rs file (local) / remote.rs Get (a member holding it)
//!  peers' Blocks streams ──▶ serve.rs (BlockService): Put, Get, Has, Pull, Drop
//! ```
//!
//! # Layout
//!
//! - `placement`: `place` (rendezvous hashing over the members) and
//!   `acks_needed` (pure).
//! - `store`: `BlockStore`, the blocks on this node's disk (temp, verify,
//!   fsync, rename; dedupe by touch; per-hash locks; full disk).
//! - `remote`: `Remote`, block requests to other members (per-peer stream
//!   cap, timeouts) and `PeerError`.
//! - `serve`: the receiving side of `Blocks` streams (`BlockService` for `Files`).
//! - `upload`: `Files::upload`'s body → blocks → replicas.
//! - `download`: `Files::read`'s range → bytes, local or remote.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use picloud_storage::NodeId;
use picloud_storage::files::BlockHash;

use crate::config::FilesConfig;
use crate::disk::{DiskFull, DiskGuard};
use crate::transport::PeerConnections;

mod download;
pub mod placement;
mod remote;
mod serve;
pub mod store;
mod upload;

pub use remote::PeerError;
pub use store::{BlockStore, StoreError};

/// What an upload stored: the content's SHA-256 and size, and either its
/// bytes (at most `INLINE_BYTES_MAX`) or its block list, every block
/// durable on a majority of its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub size: u64,
    pub sha256: [u8; 32],
    pub inline: Option<Vec<u8>>,
    pub blocks: Vec<BlockHash>,
}

/// Why a block operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// This node's or a replica's disk is below its reserve.
    #[error("disk full on node {node}: {full:?}")]
    DiskFull { node: NodeId, full: DiskFull },
    /// Too few of a block's replicas acknowledged it durable.
    #[error("block {}: {acked} of {needed} replicas acknowledged it", hex8(hash))]
    ReplicasUnavailable {
        hash: BlockHash,
        acked: usize,
        needed: usize,
    },
    /// No reachable member holds the block.
    #[error("no reachable node holds block {}", hex8(hash))]
    BlockUnavailable { hash: BlockHash },
    /// The body is over the upload's byte limit.
    #[error("the upload is over {max} bytes")]
    TooLarge { max: u64 },
    /// Reading the body failed (the client went away, or sent too little).
    #[error("reading the upload: {0}")]
    Body(std::io::Error),
    /// A block operation took longer than `files_block_timeout_ms`, or the
    /// upload longer than `files_upload_duration_max_ms`.
    #[error("a block operation timed out")]
    Timeout,
    /// Local block storage failed.
    #[error("block storage: {0}")]
    Io(std::io::Error),
}

/// The first 8 hex digits of a hash, for messages.
pub fn hex8(hash: &BlockHash) -> String {
    hash[..4].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The members blocks are placed over, with their peer addresses (this
/// node included): voters and learners of this node's Raft membership,
/// less nodes removed for good.
pub type MembersFn = Arc<dyn Fn() -> BTreeMap<NodeId, String> + Send + Sync>;

/// The node's block store and its links to the other members' stores.
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Files {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    id: NodeId,
    store: BlockStore,
    remote: remote::Remote,
    members: MembersFn,
    config: FilesConfig,
    repair_pending: AtomicU64,
}

impl Shared {
    fn block_timeout(&self) -> Duration {
        Duration::from_millis(self.config.files_block_timeout_ms)
    }

    fn placed(&self, hash: &BlockHash) -> Vec<NodeId> {
        let members: BTreeSet<NodeId> = (self.members)().into_keys().collect();
        placement::place(hash, &members, placement::REPLICAS_MAX)
    }

    fn address(&self, node: NodeId) -> Result<String, FilesError> {
        (self.members)()
            .remove(&node)
            .ok_or_else(|| peer_error(PeerError::NotMember { node }))
    }
}

/// A peer's failure as a `FilesError`: timeouts and full disks keep their
/// variants, the rest is an I/O error carrying the typed cause.
fn peer_error(error: PeerError) -> FilesError {
    match error {
        PeerError::Timeout { .. } => FilesError::Timeout,
        PeerError::Refused {
            node,
            refusal:
                crate::transport::BlockRefusal::DiskFull {
                    available_bytes,
                    reserve_bytes,
                },
        } => FilesError::DiskFull {
            node,
            full: DiskFull {
                available_bytes,
                reserve_bytes,
            },
        },
        other => FilesError::Io(std::io::Error::other(other)),
    }
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files")
            .field("node", &self.shared.id)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

impl Files {
    /// Opens this node's block store under `data_dir` (see `store`) and
    /// links it to the other members through `connections`.
    pub fn open(
        data_dir: &Path,
        id: NodeId,
        disk: Arc<DiskGuard>,
        connections: PeerConnections,
        members: MembersFn,
        config: FilesConfig,
    ) -> std::io::Result<Files> {
        let store = BlockStore::open(data_dir, disk)?;
        let remote = remote::Remote::new(
            connections,
            config.files_block_streams_per_peer_max,
            Duration::from_millis(config.files_block_timeout_ms),
        );
        Ok(Files {
            shared: Arc::new(Shared {
                id,
                store,
                remote,
                members,
                config,
                repair_pending: AtomicU64::new(0),
            }),
        })
    }

    /// This node's block store.
    pub fn store(&self) -> &BlockStore {
        &self.shared.store
    }

    /// The settings the files were opened with.
    pub fn config(&self) -> &FilesConfig {
        &self.shared.config
    }

    /// Block streams this node has open to `node` now.
    pub fn streams_open(&self, node: NodeId) -> usize {
        self.shared.remote.streams_open(node)
    }

    /// The last full repair pass's count of missing copies.
    pub fn repair_pending(&self) -> u64 {
        self.shared.repair_pending.load(Ordering::Relaxed)
    }

    /// Stores `body` as blocks on their replicas and returns what the
    /// metadata needs. At most `bytes_max` bytes are read; more fails with
    /// `TooLarge` at once. The whole upload is bounded by
    /// `files_upload_duration_max_ms` (`Timeout`).
    pub async fn upload<S>(&self, body: S, bytes_max: u64) -> Result<Uploaded, FilesError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let limit = Duration::from_millis(self.shared.config.files_upload_duration_max_ms);
        tokio::time::timeout(limit, self.shared.upload(body, bytes_max))
            .await
            .unwrap_or(Err(FilesError::Timeout))
    }

    /// The bytes `range` of a file of `size` bytes made of `blocks`, read
    /// locally where this node holds a block, else streamed from a member
    /// that does.
    pub fn read(
        &self,
        blocks: Arc<[BlockHash]>,
        size: u64,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes, FilesError>> {
        self.shared.read(blocks, size, range)
    }

    /// Which of `hashes` `node` holds (this node answers from its disk).
    pub async fn has(&self, node: NodeId, hashes: &[BlockHash]) -> Result<Vec<bool>, FilesError> {
        if node == self.shared.id {
            return Ok(hashes
                .iter()
                .map(|hash| self.shared.store.has(hash))
                .collect());
        }
        let addr = self.shared.address(node)?;
        let mut held = Vec::with_capacity(hashes.len());
        for page in hashes.chunks(crate::transport::blocks::HAS_HASHES_MAX) {
            let answer = self
                .shared
                .remote
                .has(node, &addr, page.to_vec())
                .await
                .map_err(peer_error)?;
            held.extend(answer);
        }
        Ok(held)
    }

    /// Asks `target` to fetch `hash` from one of `sources` and store it.
    pub async fn pull(
        &self,
        target: NodeId,
        hash: BlockHash,
        sources: Vec<NodeId>,
    ) -> Result<(), FilesError> {
        if target == self.shared.id {
            return match self.shared.fetch(hash, &sources).await {
                Ok(()) => Ok(()),
                Err(StoreError::DiskFull(full)) => Err(FilesError::DiskFull { node: target, full }),
                Err(StoreError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                    Err(FilesError::BlockUnavailable { hash })
                }
                Err(error) => Err(FilesError::Io(std::io::Error::other(error))),
            };
        }
        let addr = self.shared.address(target)?;
        match self.shared.remote.pull(target, &addr, hash, sources).await {
            Ok(()) => Ok(()),
            Err(PeerError::Refused {
                refusal: crate::transport::BlockRefusal::NotFound,
                ..
            }) => Err(FilesError::BlockUnavailable { hash }),
            Err(error) => Err(peer_error(error)),
        }
    }

    /// Asks `node` to delete its copy of `hash` (an over-replicated copy).
    /// Refused (an error) while `node`'s own view places the block on it.
    pub async fn drop_block(&self, node: NodeId, hash: BlockHash) -> Result<(), FilesError> {
        if node == self.shared.id {
            return self
                .shared
                .drop_local(hash)
                .await
                .map_err(|refusal| peer_error(PeerError::Refused { node, refusal }));
        }
        let addr = self.shared.address(node)?;
        self.shared
            .remote
            .drop_block(node, &addr, hash)
            .await
            .map_err(peer_error)
    }

    /// The members blocks are placed over (voters and learners of this
    /// node's Raft membership, less removed nodes).
    pub fn members(&self) -> BTreeSet<NodeId> {
        (self.shared.members)().into_keys().collect()
    }

    /// The blocks of one of the 256 shards of this node's store, with
    /// their modification times (GC's grace is measured from them).
    pub fn local_blocks_shard(&self, shard: u8) -> std::io::Result<Vec<(BlockHash, SystemTime)>> {
        self.shared.store.list_shard(shard)
    }

    /// Deletes this node's copy of `hash` when `still_garbage` (called under
    /// the block's lock) says so; returns whether it did.
    pub async fn remove_local(
        &self,
        hash: BlockHash,
        still_garbage: impl FnOnce() -> bool + Send,
    ) -> std::io::Result<bool> {
        self.shared.store.remove(hash, still_garbage).await
    }

    /// Temp files (`blocks/tmp/*.part`) of aborted block writes older than
    /// `older_than` are removed; returns how many.
    pub fn remove_stale_temp(&self, older_than: Duration) -> std::io::Result<u64> {
        self.shared.store.remove_stale_temp(older_than)
    }

    /// Blocks the last full repair pass found missing from a replica
    /// (`files_repair_pending` in `cluster status`).
    pub fn set_repair_pending(&self, missing: u64) {
        self.shared.repair_pending.store(missing, Ordering::Relaxed);
    }
}
