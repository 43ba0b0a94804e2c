//! Files' content: 1 MiB content-addressed blocks stored outside the Raft
//! log under `<data-dir>/blocks/`, each on the members rendezvous hashing
//! places it on, moved between nodes over QUIC `Blocks` streams.
//!
//! The metadata (a `FilePut` command) is the layers above's business: they
//! call [`Files::upload`] with the body, then propose the metadata with the
//! returned block list. Nothing here reads the state machine except to
//! know the membership.
//!
//! SKELETON (lead, issue 14): the signatures are final, the bodies are
//! part B's.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use picloud_storage::NodeId;
use picloud_storage::files::BlockHash;

use crate::disk::DiskFull;

pub mod placement;

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

/// The node's block store and its links to the other members' stores.
pub struct Files {
    _todo: (),
}

impl Files {
    /// Placeholder constructor until part B builds the store.
    pub(crate) fn skeleton() -> Files {
        Files { _todo: () }
    }

    /// Stores `body` as blocks on their replicas and returns what the
    /// metadata needs. At most `bytes_max` bytes are read; more fails with
    /// `TooLarge` at once.
    pub async fn upload<S>(&self, body: S, bytes_max: u64) -> Result<Uploaded, FilesError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let _ = (body, bytes_max);
        todo!("part B")
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
        let _ = (blocks, size, range);
        todo!("part B")
    }

    /// Which of `hashes` `node` holds (this node answers from its disk).
    pub async fn has(&self, node: NodeId, hashes: &[BlockHash]) -> Result<Vec<bool>, FilesError> {
        let _ = (node, hashes);
        todo!("part B")
    }

    /// Asks `target` to fetch `hash` from one of `sources` and store it.
    pub async fn pull(
        &self,
        target: NodeId,
        hash: BlockHash,
        sources: Vec<NodeId>,
    ) -> Result<(), FilesError> {
        let _ = (target, hash, sources);
        todo!("part B")
    }

    /// Asks `node` to delete its copy of `hash` (an over-replicated copy).
    pub async fn drop_block(&self, node: NodeId, hash: BlockHash) -> Result<(), FilesError> {
        let _ = (node, hash);
        todo!("part B")
    }

    /// The members blocks are placed over (voters and learners of this
    /// node's Raft membership).
    pub fn members(&self) -> BTreeSet<NodeId> {
        todo!("part B")
    }

    /// The blocks of one of the 256 shards of this node's store, with
    /// their modification times (GC's grace is measured from them).
    pub fn local_blocks_shard(&self, shard: u8) -> std::io::Result<Vec<(BlockHash, SystemTime)>> {
        let _ = shard;
        todo!("part B")
    }

    /// Deletes this node's copy of `hash` when `still_garbage` (called under
    /// the block's lock) says so; returns whether it did.
    pub async fn remove_local(
        &self,
        hash: BlockHash,
        still_garbage: impl FnOnce() -> bool + Send,
    ) -> std::io::Result<bool> {
        let _ = (hash, still_garbage);
        todo!("part B")
    }

    /// Temp files (`blocks/tmp/*.part`) of aborted block writes older than
    /// `older_than` are removed; returns how many.
    pub fn remove_stale_temp(&self, older_than: std::time::Duration) -> std::io::Result<u64> {
        let _ = older_than;
        todo!("part B")
    }

    /// Blocks the last full repair pass found missing from a replica
    /// (`files_repair_pending` in `cluster status`).
    pub fn set_repair_pending(&self, missing: u64) {
        let _ = missing;
        todo!("part B")
    }
}
