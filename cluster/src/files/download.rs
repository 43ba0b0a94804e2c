//! The reader: a byte range of a file as a stream, block by block, from this
//! node's store where it holds a block, else from a member that does.
//!
//! ```text
//!  range ──▶ for each block it overlaps:
//!              local file?  ──yes──▶ 256 KiB reads from the offset (the first with the open)
//!                └no──▶ placed members, then the others: Get { offset, len } ──▶ bytes forwarded as they arrive
//! ```
//!
//! Nothing buffers a whole block: QUIC's flow control is the buffer. A
//! source that fails before the first byte of its block is replaced by the
//! next; one that fails after ends the stream with an error, so a reader
//! sees a cut body, never wrong bytes.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use picloud_storage::NodeId;
use picloud_storage::files::{BLOCK_BYTES, BlockHash};

use super::placement::{REPLICAS_MAX, place};
use super::store::{OpenBlock, StoreError};
use super::{FilesError, Shared};

/// Bytes read from a local block file at once.
pub const LOCAL_READ_BYTES: usize = 256 * 1024;

/// Where the current block's bytes come from.
enum Source {
    Local {
        block: OpenBlock,
        /// The bytes read with the open, until handed out.
        first: Option<Bytes>,
        /// Where the next read starts in the block, and the bytes still owed.
        offset: u64,
        remaining: u64,
    },
    Remote {
        chunks: BoxStream<'static, Result<Bytes, StoreError>>,
        first: Option<Bytes>,
    },
}

/// A read in progress.
struct Reader {
    shared: Arc<Shared>,
    blocks: Arc<[BlockHash]>,
    size: u64,
    /// The next byte to produce, and the end of the range.
    position: u64,
    end: u64,
    source: Option<Source>,
    /// Bytes the current source still owes.
    owed: u64,
    /// Members that failed this read before: tried last for later blocks,
    /// so a dead replica costs one connection timeout per read, not one
    /// per block.
    failed: HashSet<NodeId>,
}

impl Shared {
    pub(crate) fn read(
        self: &Arc<Self>,
        blocks: Arc<[BlockHash]>,
        size: u64,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes, FilesError>> {
        let end = range.end.min(size);
        let reader = Reader {
            shared: self.clone(),
            blocks,
            size,
            position: range.start.min(end),
            end,
            source: None,
            owed: 0,
            failed: HashSet::new(),
        };
        futures::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match reader.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
                Ok(None) => None,
                // An error ends the stream.
                Err(error) => Some((Err(error), None)),
            }
        })
        .boxed()
    }
}

impl Reader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, FilesError> {
        loop {
            if self.source.is_some() && self.owed > 0 {
                let chunk = self.pull_source().await?;
                let len = chunk.len() as u64;
                if len == 0 || len > self.owed {
                    return Err(FilesError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a block source sent the wrong number of bytes",
                    )));
                }
                self.owed -= len;
                self.position += len;
                return Ok(Some(chunk));
            }
            self.source = None;
            if self.position >= self.end {
                return Ok(None);
            }
            let index = (self.position / BLOCK_BYTES) as usize;
            let Some(hash) = self.blocks.get(index).copied() else {
                return Err(FilesError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the range is past the file's block list",
                )));
            };
            let block_start = index as u64 * BLOCK_BYTES;
            let block_len = (self.size - block_start).min(BLOCK_BYTES);
            let offset = self.position - block_start;
            let len = (block_len - offset).min(self.end - self.position);
            let source = self
                .shared
                .open_source(hash, offset, len, &mut self.failed)
                .await?;
            self.source = Some(source);
            self.owed = len;
        }
    }

    async fn pull_source(&mut self) -> Result<Bytes, FilesError> {
        let stall = self.shared.block_timeout();
        match self.source.as_mut() {
            Some(Source::Local {
                block,
                first,
                offset,
                remaining,
            }) => {
                let chunk = match first.take() {
                    Some(first) => first,
                    None => {
                        let max = (*remaining).min(LOCAL_READ_BYTES as u64) as usize;
                        block.read(*offset, max).await.map_err(FilesError::Io)?
                    }
                };
                *offset += chunk.len() as u64;
                *remaining -= chunk.len() as u64;
                Ok(chunk)
            }
            Some(Source::Remote { chunks, first }) => {
                if let Some(first) = first.take() {
                    return Ok(first);
                }
                match tokio::time::timeout(stall, chunks.next()).await {
                    Ok(Some(Ok(chunk))) => Ok(chunk),
                    Ok(Some(Err(error))) => Err(store_error(error)),
                    Ok(None) => Ok(Bytes::new()),
                    Err(_) => Err(FilesError::Timeout),
                }
            }
            None => Ok(Bytes::new()),
        }
    }
}

impl Shared {
    /// The block's bytes `offset..offset + len` from here or another member.
    async fn open_source(
        &self,
        hash: BlockHash,
        offset: u64,
        len: u64,
        failed: &mut HashSet<NodeId>,
    ) -> Result<Source, FilesError> {
        let first = len.min(LOCAL_READ_BYTES as u64) as usize;
        match self.store.open_block(&hash, offset, first).await {
            Ok(Some((block, bytes))) if block.len >= offset + len => {
                return Ok(Source::Local {
                    block,
                    offset,
                    first: Some(bytes),
                    remaining: len,
                });
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(block = %super::hex8(&hash), %error, "local block unreadable; reading it from a replica");
            }
        }
        let members = (self.members)();
        let mut order = sources(&hash, &members.keys().copied().collect(), self.id);
        // Stable: the placed order is kept among the healthy and the failed.
        order.sort_by_key(|node| failed.contains(node));
        for node in order {
            let Some(addr) = members.get(&node) else {
                continue;
            };
            match self.remote_source(node, addr, hash, offset, len).await {
                Ok(source) => {
                    failed.remove(&node);
                    return Ok(source);
                }
                Err(error) => {
                    failed.insert(node);
                    tracing::debug!(node, block = %super::hex8(&hash), %error, "block source failed before its first byte");
                }
            }
        }
        Err(FilesError::BlockUnavailable { hash })
    }

    /// A source on `node`, up to and including its first byte (a failure
    /// until then moves on to the next node).
    async fn remote_source(
        &self,
        node: NodeId,
        addr: &str,
        hash: BlockHash,
        offset: u64,
        len: u64,
    ) -> Result<Source, FilesError> {
        let (call, sending) = self
            .remote
            .get(node, addr, hash, offset as u32, len as u32)
            .await
            .map_err(|error| FilesError::Io(std::io::Error::other(error)))?;
        if u64::from(sending) != len {
            return Err(FilesError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the source holds a shorter block",
            )));
        }
        let stall = self.block_timeout();
        let mut chunks = call.into_chunks(len, stall);
        let first = first_chunk(&mut chunks, stall).await?;
        Ok(Source::Remote {
            chunks,
            first: Some(first),
        })
    }
}

async fn first_chunk(
    chunks: &mut BoxStream<'static, Result<Bytes, StoreError>>,
    stall: Duration,
) -> Result<Bytes, FilesError> {
    match tokio::time::timeout(stall, chunks.next()).await {
        Ok(Some(Ok(chunk))) if !chunk.is_empty() => Ok(chunk),
        Ok(Some(Err(error))) => Err(store_error(error)),
        Ok(_) => Err(FilesError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the source sent nothing",
        ))),
        Err(_) => Err(FilesError::Timeout),
    }
}

fn store_error(error: StoreError) -> FilesError {
    match error {
        StoreError::Io(error) => FilesError::Io(error),
        other => FilesError::Io(std::io::Error::other(other)),
    }
}

/// Where to look for a block: its placed members first, then the others
/// (a copy may still sit on a node placement no longer names), never self.
pub(crate) fn sources(
    hash: &BlockHash,
    members: &std::collections::BTreeSet<NodeId>,
    this_node: NodeId,
) -> Vec<NodeId> {
    let mut order = place(hash, members, REPLICAS_MAX);
    let others: Vec<NodeId> = members
        .iter()
        .filter(|id| !order.contains(id))
        .copied()
        .collect();
    order.extend(others);
    order.retain(|id| *id != this_node);
    order
}
