//! `Remote`: this node's side of block requests to other members, over
//! pooled connections, at most `files_block_streams_per_peer_max` streams
//! per peer at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use picloud_storage::NodeId;
use picloud_storage::files::BlockHash;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::store::StoreError;
use crate::transport::blocks::{
    BLOCK_CHUNK_BYTES_MAX, BLOCK_FRAME_BYTES_MAX, BLOCK_STREAM_PRIORITY, BlockRefusal, BlockReply,
    BlockRequest,
};
use crate::transport::peers::Exchange;
use crate::transport::{PeerConnections, PeerStream, RaftRpcError, StreamKind, TransportError};

/// Why a block request to another member failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The node is not in this node's view of the membership.
    #[error("node {node} is not a member")]
    NotMember { node: NodeId },
    #[error(transparent)]
    Dial(#[from] RaftRpcError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("node {node} refused: {refusal}")]
    Refused { node: NodeId, refusal: BlockRefusal },
    /// The peer answered out of protocol (or not at all).
    #[error("node {node} answered {answer} to a {request} request")]
    Unexpected {
        node: NodeId,
        request: &'static str,
        answer: String,
    },
    #[error("node {node} did not finish a {request} request within {waited_ms} ms")]
    Timeout {
        node: NodeId,
        request: &'static str,
        waited_ms: u64,
    },
}

/// One block request in progress: its stream and the peer permit it holds.
/// Dropped before it completed, the stream is reset (see `Exchange`).
pub(crate) struct BlockCall {
    exchange: Exchange,
    _permit: OwnedSemaphorePermit,
}

impl BlockCall {
    pub(crate) fn stream(&mut self) -> &mut PeerStream {
        &mut self.exchange.stream
    }

    /// Marks the exchange complete and finishes our side.
    fn complete(mut self) {
        self.exchange.complete = true;
        let _ = self.exchange.stream.finish();
    }

    /// The call's raw bytes (`len` of them, after a `Sending` reply) as a
    /// stream of pieces, each within `stall` of the last. The call is
    /// complete once they all came.
    pub(crate) fn into_chunks(
        self,
        len: u64,
        stall: Duration,
    ) -> BoxStream<'static, Result<Bytes, StoreError>> {
        Box::pin(futures::stream::unfold(
            Some((self, len)),
            move |state| async move {
                let (mut call, remaining) = state?;
                if remaining == 0 {
                    call.complete();
                    return None;
                }
                match raw_chunk(call.stream(), remaining, stall).await {
                    Ok(chunk) => {
                        let left = remaining.saturating_sub(chunk.len() as u64);
                        if left == 0 {
                            // Complete as soon as the last byte is in, so
                            // a reader that stops here does not reset it.
                            call.complete();
                            return Some((Ok(chunk), None));
                        }
                        Some((Ok(chunk), Some((call, left))))
                    }
                    Err(error) => Some((Err(error), None)),
                }
            },
        ))
    }
}

/// The next piece of at most `remaining` raw bytes, within `stall`; a
/// stream that ends first is a length error.
pub(crate) async fn raw_chunk(
    stream: &mut PeerStream,
    remaining: u64,
    stall: Duration,
) -> Result<Bytes, StoreError> {
    let max = remaining.min(BLOCK_CHUNK_BYTES_MAX as u64) as usize;
    match tokio::time::timeout(stall, stream.recv_raw(max)).await {
        Ok(Ok(Some(chunk))) => Ok(chunk),
        Ok(Ok(None)) => Err(StoreError::Length {
            expected: remaining,
            received: 0,
        }),
        Ok(Err(error)) => Err(StoreError::Source(error)),
        Err(_) => Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "block bytes stalled",
        ))),
    }
}

/// Block requests to other members.
pub(crate) struct Remote {
    connections: PeerConnections,
    /// One semaphore per peer: the streams this node has open to it.
    permits: Mutex<HashMap<NodeId, Arc<Semaphore>>>,
    streams_per_peer_max: usize,
    timeout: Duration,
}

impl Remote {
    pub(crate) fn new(
        connections: PeerConnections,
        streams_per_peer_max: usize,
        timeout: Duration,
    ) -> Remote {
        Remote {
            connections,
            permits: Mutex::new(HashMap::new()),
            streams_per_peer_max: streams_per_peer_max.max(1),
            timeout,
        }
    }

    fn semaphore(&self, node: NodeId) -> Arc<Semaphore> {
        let mut permits = self.permits.lock().unwrap_or_else(|e| e.into_inner());
        permits
            .entry(node)
            .or_insert_with(|| Arc::new(Semaphore::new(self.streams_per_peer_max)))
            .clone()
    }

    /// Streams to `node` in use now (for tests of the per-peer cap).
    pub(crate) fn streams_open(&self, node: NodeId) -> usize {
        self.streams_per_peer_max - self.semaphore(node).available_permits()
    }

    /// Opens a block stream to `node` at `addr` and sends `request`.
    async fn call(
        &self,
        node: NodeId,
        addr: &str,
        request: &BlockRequest,
    ) -> Result<BlockCall, PeerError> {
        let permit = self
            .semaphore(node)
            .acquire_owned()
            .await
            .map_err(|_| PeerError::NotMember { node })?;
        let connection = self
            .connections
            .connection(node, addr, self.timeout)
            .await?;
        let stream = connection.open(StreamKind::Blocks).await?;
        stream.set_priority(BLOCK_STREAM_PRIORITY);
        let mut call = BlockCall {
            exchange: Exchange::new(stream),
            _permit: permit,
        };
        call.stream().send(request).await?;
        Ok(call)
    }

    /// Runs `operation` within `limit`, or `Timeout`.
    async fn within<T>(
        &self,
        node: NodeId,
        request: &'static str,
        limit: Duration,
        operation: impl Future<Output = Result<T, PeerError>>,
    ) -> Result<T, PeerError> {
        tokio::time::timeout(limit, operation)
            .await
            .unwrap_or(Err(PeerError::Timeout {
                node,
                request,
                waited_ms: limit.as_millis() as u64,
            }))
    }

    /// Stores `bytes` as block `hash` on `node`.
    pub(crate) async fn put(
        &self,
        node: NodeId,
        addr: &str,
        hash: BlockHash,
        bytes: Bytes,
    ) -> Result<(), PeerError> {
        self.within(node, "put", self.timeout, async {
            let request = BlockRequest::Put {
                hash,
                len: bytes.len() as u32,
            };
            let mut call = self.call(node, addr, &request).await?;
            // A receiver that refuses early may stop reading: its answer
            // still says why, so read it even if the bytes did not all go.
            let sent = call.stream().send_raw(bytes).await;
            let reply = reply(&mut call, node, "put").await;
            match (reply, sent) {
                (Ok(BlockReply::Durable), _) => {
                    call.complete();
                    Ok(())
                }
                (Ok(other), _) => Err(refused(node, "put", other)),
                (Err(_), Err(error)) => Err(error.into()),
                (Err(error), Ok(())) => Err(error),
            }
        })
        .await
    }

    /// Asks `node` for at most `len` bytes of `hash` from `offset`; the
    /// call then carries the announced number of raw bytes.
    pub(crate) async fn get(
        &self,
        node: NodeId,
        addr: &str,
        hash: BlockHash,
        offset: u32,
        len: u32,
    ) -> Result<(BlockCall, u32), PeerError> {
        self.within(node, "get", self.timeout, async {
            let request = BlockRequest::Get { hash, offset, len };
            let mut call = self.call(node, addr, &request).await?;
            match reply(&mut call, node, "get").await? {
                BlockReply::Sending { len: sending } if sending <= len => Ok((call, sending)),
                other => Err(refused(node, "get", other)),
            }
        })
        .await
    }

    /// Which of `hashes` (at most `HAS_HASHES_MAX`) `node` holds.
    pub(crate) async fn has(
        &self,
        node: NodeId,
        addr: &str,
        hashes: Vec<BlockHash>,
    ) -> Result<Vec<bool>, PeerError> {
        let asked = hashes.len();
        self.within(node, "has", self.timeout, async {
            let mut call = self.call(node, addr, &BlockRequest::Has { hashes }).await?;
            match reply(&mut call, node, "has").await? {
                BlockReply::Has(held) if held.len() == asked => {
                    call.complete();
                    Ok(held)
                }
                other => Err(refused(node, "has", other)),
            }
        })
        .await
    }

    /// Asks `node` to fetch `hash` from one of `sources` and store it. The
    /// target fetches within its own block timeout, so this waits twice that.
    pub(crate) async fn pull(
        &self,
        node: NodeId,
        addr: &str,
        hash: BlockHash,
        sources: Vec<NodeId>,
    ) -> Result<(), PeerError> {
        let request = BlockRequest::Pull { hash, sources };
        self.durable(node, addr, "pull", 2 * self.timeout, request)
            .await
    }

    /// Asks `node` to delete its copy of `hash`.
    pub(crate) async fn drop_block(
        &self,
        node: NodeId,
        addr: &str,
        hash: BlockHash,
    ) -> Result<(), PeerError> {
        let request = BlockRequest::Drop { hash };
        self.durable(node, addr, "drop", self.timeout, request)
            .await
    }

    /// Sends `request` and expects `Durable` within `limit`.
    async fn durable(
        &self,
        node: NodeId,
        addr: &str,
        name: &'static str,
        limit: Duration,
        request: BlockRequest,
    ) -> Result<(), PeerError> {
        self.within(node, name, limit, async {
            let mut call = self.call(node, addr, &request).await?;
            match reply(&mut call, node, name).await? {
                BlockReply::Durable => {
                    call.complete();
                    Ok(())
                }
                other => Err(refused(node, name, other)),
            }
        })
        .await
    }
}

/// The call's one reply frame.
async fn reply(
    call: &mut BlockCall,
    node: NodeId,
    request: &'static str,
) -> Result<BlockReply, PeerError> {
    match call.stream().recv_limited(BLOCK_FRAME_BYTES_MAX).await? {
        Some(reply) => Ok(reply),
        None => Err(PeerError::Unexpected {
            node,
            request,
            answer: "nothing".into(),
        }),
    }
}

/// A reply other than the one expected: the peer's refusal, or out of protocol.
fn refused(node: NodeId, request: &'static str, reply: BlockReply) -> PeerError {
    match reply {
        BlockReply::Refused(refusal) => PeerError::Refused { node, refusal },
        other => PeerError::Unexpected {
            node,
            request,
            answer: format!("{other:?}"),
        },
    }
}
