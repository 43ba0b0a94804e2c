//! The receiving side of `Blocks` streams: what a member does with another
//! member's block request (see `transport::blocks` for the messages).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use picloud_storage::NodeId;
use picloud_storage::files::{BLOCK_BYTES, BlockHash};

use super::remote::{PeerError, raw_chunk};
use super::store::StoreError;
use super::{Files, Shared};
use crate::transport::blocks::{
    BLOCK_CHUNK_BYTES_MAX, BLOCK_FRAME_BYTES_MAX, BLOCK_STREAM_PRIORITY, BlockRefusal, BlockReply,
    BlockRequest, BlockService, request_in_limits,
};
use crate::transport::endpoint::stream_code;
use crate::transport::{PeerStream, TransportError};

/// Why a block stream was abandoned (the peer sees it reset).
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("reading a block: {0}")]
    Io(#[from] std::io::Error),
    #[error("a block request over the protocol's limits")]
    OverLimits,
}

impl BlockService for Files {
    fn streams_per_peer_max(&self) -> usize {
        self.shared.config.files_block_streams_per_peer_max
    }

    fn busy_wait(&self) -> Duration {
        self.shared.block_timeout()
    }

    fn serve(&self, stream: PeerStream) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.shared.serve(stream))
    }
}

/// What a store outcome answers.
pub(crate) fn reply_of(outcome: Result<(), StoreError>) -> BlockReply {
    match outcome {
        Ok(()) => BlockReply::Durable,
        Err(error) => BlockReply::Refused(refusal_of(error)),
    }
}

fn refusal_of(error: StoreError) -> BlockRefusal {
    match error {
        StoreError::DiskFull(full) => BlockRefusal::DiskFull {
            available_bytes: full.available_bytes,
            reserve_bytes: full.reserve_bytes,
        },
        StoreError::Corrupt { .. } | StoreError::Length { .. } => BlockRefusal::Corrupt,
        StoreError::Source(error) => BlockRefusal::Storage {
            message: error.to_string(),
        },
        StoreError::Io(error) if error.kind() == std::io::ErrorKind::NotFound => {
            BlockRefusal::NotFound
        }
        StoreError::Io(error) => BlockRefusal::Storage {
            message: error.to_string(),
        },
    }
}

impl Shared {
    /// Serves one `Blocks` stream. The whole request gets twice the block
    /// timeout: a pull's own fetch from a source takes up to one.
    async fn serve(&self, mut stream: PeerStream) {
        let peer = stream.peer_node_id();
        // A `Get`'s bytes go below Raft's frames on this side too.
        stream.set_priority(BLOCK_STREAM_PRIORITY);
        let limit = 2 * self.block_timeout();
        match tokio::time::timeout(limit, self.serve_request(&mut stream)).await {
            Ok(Ok(())) => {
                let _ = stream.finish();
            }
            Ok(Err(ServeError::OverLimits)) => {
                stream
                    .connection()
                    .close_for_violation("a block request over the protocol's limits");
            }
            Ok(Err(error)) => {
                tracing::debug!(peer, %error, "block request abandoned");
                stream.reset(stream_code::CANCELLED);
            }
            Err(_) => {
                tracing::debug!(
                    peer,
                    waited_ms = limit.as_millis() as u64,
                    "block request not finished in time"
                );
                stream.reset(stream_code::TIMED_OUT);
            }
        }
    }

    async fn serve_request(&self, stream: &mut PeerStream) -> Result<(), ServeError> {
        let Some(request) = stream
            .recv_limited::<BlockRequest>(BLOCK_FRAME_BYTES_MAX)
            .await?
        else {
            return Ok(());
        };
        if !request_in_limits(&request, BLOCK_BYTES) {
            return Err(ServeError::OverLimits);
        }
        let stall = self.block_timeout();
        let reply = match request {
            BlockRequest::Put { hash, len } => {
                let len = u64::from(len);
                let chunks = Box::pin(futures::stream::unfold(
                    (&mut *stream, len),
                    move |(stream, remaining)| async move {
                        if remaining == 0 {
                            return None;
                        }
                        match raw_chunk(stream, remaining, stall).await {
                            Ok(chunk) => {
                                let left = remaining - chunk.len() as u64;
                                Some((Ok(chunk), (stream, left)))
                            }
                            Err(error) => Some((Err(error), (stream, 0))),
                        }
                    },
                ));
                reply_of(self.store.put(hash, len, chunks).await)
            }
            BlockRequest::Get { hash, offset, len } => {
                return self.send_block(stream, hash, offset, len).await;
            }
            BlockRequest::Has { hashes } => {
                BlockReply::Has(hashes.iter().map(|hash| self.store.has(hash)).collect())
            }
            BlockRequest::Pull { hash, sources } => reply_of(self.fetch(hash, &sources).await),
            BlockRequest::Drop { hash } => match self.drop_local(hash).await {
                Ok(()) => BlockReply::Durable,
                Err(refusal) => BlockReply::Refused(refusal),
            },
        };
        stream.send(&reply).await?;
        Ok(())
    }

    /// Answers a `Get`: `Sending { len }` and the bytes, or `NotFound`.
    async fn send_block(
        &self,
        stream: &mut PeerStream,
        hash: BlockHash,
        offset: u32,
        len: u32,
    ) -> Result<(), ServeError> {
        let offset = u64::from(offset);
        let first = (len as usize).min(BLOCK_CHUNK_BYTES_MAX);
        let (block, mut first) = match self.store.open_block(&hash, offset, first).await {
            Ok(Some((block, first))) if offset <= block.len => (block, Some(first)),
            Ok(_) => {
                stream
                    .send(&BlockReply::Refused(BlockRefusal::NotFound))
                    .await?;
                return Ok(());
            }
            Err(error) => {
                let refusal = BlockRefusal::Storage {
                    message: error.to_string(),
                };
                stream.send(&BlockReply::Refused(refusal)).await?;
                return Ok(());
            }
        };
        let sending = u64::from(len).min(block.len - offset);
        stream
            .send(&BlockReply::Sending {
                len: sending as u32,
            })
            .await?;
        let (mut at, mut remaining) = (offset, sending);
        while remaining > 0 {
            let max = remaining.min(BLOCK_CHUNK_BYTES_MAX as u64) as usize;
            let chunk = match first.take() {
                Some(first) => first,
                None => block.read(at, max).await?,
            };
            if chunk.is_empty() {
                // The file is shorter than its length said: never send fewer
                // bytes than announced under a clean finish.
                return Err(ServeError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "block file shorter than announced",
                )));
            }
            at += chunk.len() as u64;
            remaining -= chunk.len() as u64;
            stream.send_raw(chunk).await?;
        }
        Ok(())
    }

    /// Fetches `hash` from the first of `sources` that has it and stores it
    /// here; a block already here is done.
    pub(crate) async fn fetch(
        &self,
        hash: BlockHash,
        sources: &[NodeId],
    ) -> Result<(), StoreError> {
        if self.store.has(&hash) {
            return Ok(());
        }
        let members = (self.members)();
        let mut last = None;
        for source in sources.iter().filter(|source| **source != self.id) {
            let Some(addr) = members.get(source) else {
                continue;
            };
            let (call, len) = match self
                .remote
                .get(*source, addr, hash, 0, BLOCK_BYTES as u32)
                .await
            {
                Ok(found) => found,
                Err(error) => {
                    tracing::debug!(source, %error, "block source failed");
                    last = Some(error);
                    continue;
                }
            };
            let chunks = call.into_chunks(u64::from(len), self.block_timeout());
            match self.store.put(hash, u64::from(len), chunks).await {
                Ok(()) => return Ok(()),
                Err(StoreError::DiskFull(full)) => return Err(StoreError::DiskFull(full)),
                Err(error) => {
                    tracing::debug!(source, %error, "block from a source not stored");
                }
            }
        }
        Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            match last {
                Some(PeerError::Refused { .. }) | None => "no source holds the block".to_string(),
                Some(error) => format!("no source gave the block: {error}"),
            },
        )))
    }

    /// Deletes this node's copy of `hash`, unless its own view of the
    /// membership places the block here.
    pub(crate) async fn drop_local(&self, hash: BlockHash) -> Result<(), BlockRefusal> {
        if self.placed(&hash).contains(&self.id) {
            return Err(BlockRefusal::Placed);
        }
        self.store
            .remove(hash, || true)
            .await
            .map(|_| ())
            .map_err(|error| BlockRefusal::Storage {
                message: error.to_string(),
            })
    }
}
