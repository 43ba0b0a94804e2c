//! The uploader: a body stream → 1 MiB blocks, each sent to every replica
//! rendezvous hashing places it on, the upload going on once a majority of
//! each block's replicas answered durable.
//!
//! ```text
//!  body ──chunks──▶ block buffer (1 MiB) ──freeze──▶ place(hash, members) ──▶ one send per replica (JoinSet)
//!    │ SHA-256 of the file and of the block, one blocking task                  │ self: local store (not hashed again)
//!    └ over bytes_max: TooLarge                                                  └ peer: Put over QUIC
//!  waits while `files_upload_blocks_inflight_max` blocks lack their majority, or twice that have a send running
//! ```
//!
//! Memory per upload is the filling buffer plus the blocks with a send
//! still running (shared `Bytes`, never copied per replica): at most
//! 1 + 2 × `files_upload_blocks_inflight_max` MiB. A replica that fails once
//! is not sent the upload's later blocks (a dead node would otherwise cost a
//! timeout per block); the repair duty fills it in later. The sends still
//! running when the last block has its majority are awaited up to the block
//! timeout, then dropped with the upload (the `JoinSet` aborts them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use picloud_storage::NodeId;
use picloud_storage::files::{BLOCK_BYTES, BlockHash, INLINE_BYTES_MAX};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use super::placement::{REPLICAS_MAX, acks_needed, place};
use super::remote::PeerError;
use super::store::StoreError;
use super::{FilesError, Shared, Uploaded};
use crate::disk::DiskFull;
use crate::transport::BlockRefusal;

/// Why one replica did not take a block.
#[derive(Debug, thiserror::Error)]
enum ReplicaError {
    #[error(transparent)]
    Local(#[from] StoreError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The replica failed an earlier block of this upload (for a full
    /// disk, the one it reported).
    #[error("the replica failed an earlier block of this upload")]
    FailedBefore(Option<DiskFull>),
}

impl ReplicaError {
    fn disk_full(&self) -> Option<DiskFull> {
        match self {
            ReplicaError::Local(StoreError::DiskFull(full)) => Some(*full),
            ReplicaError::Peer(PeerError::Refused {
                refusal:
                    BlockRefusal::DiskFull {
                        available_bytes,
                        reserve_bytes,
                    },
                ..
            }) => Some(DiskFull {
                available_bytes: *available_bytes,
                reserve_bytes: *reserve_bytes,
            }),
            ReplicaError::FailedBefore(full) => *full,
            _ => None,
        }
    }
}

/// One block's sends.
struct BlockSends {
    hash: BlockHash,
    replicas: usize,
    needed: usize,
    acked: usize,
    finished: usize,
    disk_full: Option<(NodeId, DiskFull)>,
}

type SendOutcome = (usize, NodeId, Result<(), ReplicaError>);

/// The sends of one upload: owned by it, aborted when it is dropped.
struct Sends {
    shared: Arc<Shared>,
    members: BTreeMap<NodeId, String>,
    member_ids: BTreeSet<NodeId>,
    tasks: JoinSet<SendOutcome>,
    blocks: Vec<BlockSends>,
    /// Replicas that failed a send of this upload (with the full disk they
    /// reported): not sent to again.
    failed: HashMap<NodeId, Option<DiskFull>>,
    /// Blocks short of their majority.
    short: usize,
    /// Blocks with a send still running.
    open: usize,
}

impl Sends {
    /// Sends block `bytes` (hash `hash`) to its replicas, then waits while
    /// too many blocks are in flight.
    async fn send(&mut self, hash: BlockHash, bytes: Bytes) -> Result<(), FilesError> {
        let index = self.blocks.len();
        let placed = place(&hash, &self.member_ids, REPLICAS_MAX);
        let needed = acks_needed(placed.len());
        if placed.is_empty() {
            // No membership known yet (a node still joining): nowhere to put it.
            return Err(FilesError::ReplicasUnavailable {
                hash,
                acked: 0,
                needed,
            });
        }
        self.blocks.push(BlockSends {
            hash,
            replicas: placed.len(),
            needed,
            acked: 0,
            finished: 0,
            disk_full: None,
        });
        self.short += 1;
        self.open += 1;
        for node in placed {
            if let Some(full) = self.failed.get(&node) {
                let full = *full;
                self.record(index, node, Err(ReplicaError::FailedBefore(full)))?;
                continue;
            }
            let shared = self.shared.clone();
            let bytes = bytes.clone();
            let addr = self.members.get(&node).cloned().unwrap_or_default();
            self.tasks.spawn(async move {
                let result = if node == shared.id {
                    // Hashed above from these very bytes: not hashed again.
                    shared
                        .store
                        .put_hashed(hash, bytes)
                        .await
                        .map_err(ReplicaError::from)
                } else {
                    shared
                        .remote
                        .put(node, &addr, hash, bytes)
                        .await
                        .map_err(ReplicaError::from)
                };
                (index, node, result)
            });
        }
        let inflight_max = self.shared.config.files_upload_blocks_inflight_max.max(1);
        while self.short >= inflight_max || self.open > 2 * inflight_max {
            self.next().await?;
        }
        Ok(())
    }

    /// Waits for one send to finish and records it.
    async fn next(&mut self) -> Result<(), FilesError> {
        match self.tasks.join_next().await {
            Some(Ok((index, node, result))) => self.record(index, node, result),
            // A send task that panicked: its block cannot be told apart, so
            // the upload fails rather than guess which block lacks a copy.
            Some(Err(error)) => Err(FilesError::Io(std::io::Error::other(error))),
            // Every block short of its majority has a send running, so this
            // is unreachable while the counts are right; never spin on it.
            None => Err(FilesError::Timeout),
        }
    }

    fn record(
        &mut self,
        index: usize,
        node: NodeId,
        result: Result<(), ReplicaError>,
    ) -> Result<(), FilesError> {
        let Some(block) = self.blocks.get_mut(index) else {
            return Ok(());
        };
        block.finished += 1;
        match result {
            Ok(()) => {
                block.acked += 1;
                if block.acked == block.needed {
                    self.short -= 1;
                }
            }
            Err(error) => {
                tracing::debug!(node, block = %super::hex8(&block.hash), %error, "a replica did not take a block");
                let full = error.disk_full();
                if let Some(full) = full {
                    block.disk_full = Some((node, full));
                }
                self.failed.insert(node, full);
            }
        }
        if block.finished == block.replicas {
            self.open -= 1;
        }
        let running = block.replicas - block.finished;
        if block.acked < block.needed && block.acked + running < block.needed {
            if let Some((node, full)) = block.disk_full {
                return Err(FilesError::DiskFull { node, full });
            }
            return Err(FilesError::ReplicasUnavailable {
                hash: block.hash,
                acked: block.acked,
                needed: block.needed,
            });
        }
        Ok(())
    }

    /// Waits until every block has its majority, then gives the slower
    /// replicas up to one block timeout to finish.
    async fn finish(mut self) -> Result<(), FilesError> {
        while self.short > 0 {
            self.next().await?;
        }
        let limit = self.shared.block_timeout();
        let _ = tokio::time::timeout(limit, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    }
}

impl Shared {
    pub(crate) async fn upload<S>(
        self: &Arc<Self>,
        mut body: S,
        bytes_max: u64,
    ) -> Result<Uploaded, FilesError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let members = (self.members)();
        let mut sends = Sends {
            shared: self.clone(),
            member_ids: members.keys().copied().collect(),
            members,
            tasks: JoinSet::new(),
            blocks: Vec::new(),
            failed: HashMap::new(),
            short: 0,
            open: 0,
        };
        // The file's hash moves into each block's hashing task and back: both
        // hashes of a block are taken there, one after the other, while its
        // megabyte is in the CPU's cache.
        let mut file_hash = Sha256::new();
        let mut size = 0u64;
        let mut block = BytesMut::new();
        let mut hashes = Vec::new();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(FilesError::Body)?;
            size += chunk.len() as u64;
            if size > bytes_max {
                return Err(FilesError::TooLarge { max: bytes_max });
            }
            while !chunk.is_empty() {
                if block.is_empty() {
                    block.reserve(BLOCK_BYTES as usize);
                }
                let take = chunk.len().min(BLOCK_BYTES as usize - block.len());
                block.extend_from_slice(&chunk.split_to(take));
                if block.len() == BLOCK_BYTES as usize {
                    let full = block.split().freeze();
                    let hash;
                    (file_hash, hash) = hash_block(file_hash, full.clone()).await?;
                    hashes.push(hash);
                    sends.send(hash, full).await?;
                }
            }
        }
        if size <= INLINE_BYTES_MAX {
            file_hash.update(&block);
            return Ok(Uploaded {
                size,
                sha256: file_hash.finalize().into(),
                inline: Some(block.to_vec()),
                blocks: Vec::new(),
            });
        }
        if !block.is_empty() {
            let last = block.split().freeze();
            let hash;
            (file_hash, hash) = hash_block(file_hash, last.clone()).await?;
            hashes.push(hash);
            sends.send(hash, last).await?;
        }
        let sha256: [u8; 32] = file_hash.finalize().into();
        sends.finish().await?;
        Ok(Uploaded {
            size,
            sha256,
            inline: None,
            blocks: hashes,
        })
    }
}

/// `file` carried over `bytes`, and the block's own SHA-256, on the
/// blocking pool: a megabyte takes milliseconds on a Pi without SHA
/// extensions, too long to hold an async worker.
async fn hash_block(mut file: Sha256, bytes: Bytes) -> Result<(Sha256, BlockHash), FilesError> {
    tokio::task::spawn_blocking(move || {
        file.update(&bytes);
        (file, Sha256::digest(&bytes).into())
    })
    .await
    .map_err(|error| FilesError::Io(std::io::Error::other(error)))
}
