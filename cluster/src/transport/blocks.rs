//! The `Blocks` stream kind: file blocks between members, one request per
//! stream.
//!
//! ```text
//!  sender                                               receiver (serve_peers → BlockService)
//!  Put { hash, len } + len raw bytes          ──▶  temp file, hashed, fsynced, renamed ──▶ Durable | Refused
//!  Get { hash, offset, len }                  ──▶  Sending { len } + len raw bytes     | Refused(NotFound)
//!  Has { hashes ≤ HAS_HASHES_MAX }            ──▶  Has(Vec<bool>)
//!  Pull { hash, sources }                     ──▶  the receiver Gets it from a source, stores it ──▶ Durable | Refused
//!  Drop { hash }                              ──▶  Durable (deleted) | Refused(Placed)
//! ```
//!
//! Header frames are bincode messages of at most [`BLOCK_FRAME_BYTES_MAX`];
//! a block's content goes raw after its header and is read in pieces of at
//! most [`BLOCK_CHUNK_BYTES_MAX`], so a peer that claims a 1 MiB block and
//! sends ten bytes costs no more than one piece. A length over `BLOCK_BYTES`
//! is a protocol violation (disconnect).
//!
//! Block streams never take the permits Raft needs: the server gives a
//! `Blocks` stream's shared per-connection permit back as soon as it has read
//! the kind byte and serves it under a permit of its own (at most
//! [`BlockService::streams_per_peer_max`] per connection; a stream waiting
//! longer than the service's timeout for one is reset with
//! `stream_code::BUSY`). Senders hold the same number per peer, so an
//! honest peer never waits. Block streams also send at a lower priority than
//! Raft's on the same connection.
//!
//! The transport only carries the messages; the store and what each request
//! does are `crate::files`' (it implements [`BlockService`]).

use std::future::Future;
use std::pin::Pin;

use picloud_storage::NodeId;
use picloud_storage::files::BlockHash;
use serde::{Deserialize, Serialize};

use super::endpoint::PeerStream;

/// Largest header frame on a `Blocks` stream (a `Has` of 1,024 hashes is
/// about 32 KiB).
pub const BLOCK_FRAME_BYTES_MAX: u32 = 64 * 1024;
/// Most hashes one `Has` request asks about.
pub const HAS_HASHES_MAX: usize = 1024;
/// Most source nodes a `Pull` names (more than any placement has replicas).
pub const PULL_SOURCES_MAX: usize = 64;
/// Largest piece of raw block bytes read (or sent) at once.
pub const BLOCK_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// The send priority of block streams: below Raft's (0), so appends and
/// heartbeats on the same connection go first.
pub const BLOCK_STREAM_PRIORITY: i32 = -1;

/// One request on a `Blocks` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockRequest {
    /// Store this block; `len` raw bytes follow the header.
    Put { hash: BlockHash, len: u32 },
    /// Send at most `len` bytes of the block from `offset`: the answer's
    /// `Sending { len }` says how many follow (fewer at the block's end).
    Get {
        hash: BlockHash,
        offset: u32,
        len: u32,
    },
    /// Which of these blocks the receiver holds.
    Has { hashes: Vec<BlockHash> },
    /// Fetch the block from one of `sources` (in order) and store it here.
    Pull {
        hash: BlockHash,
        sources: Vec<NodeId>,
    },
    /// Delete the receiver's copy: refused while the receiver's own view of
    /// the membership places the block on it.
    Drop { hash: BlockHash },
}

/// The one answer to a [`BlockRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockReply {
    /// The block is durable here (stored, already held, or pulled), or was
    /// dropped.
    Durable,
    /// `len` raw bytes of the block follow.
    Sending {
        len: u32,
    },
    /// For each hash asked, whether the receiver holds it.
    Has(Vec<bool>),
    Refused(BlockRefusal),
}

/// Why a block request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BlockRefusal {
    /// The receiver's data disk is below its reserve.
    #[error("disk full: {available_bytes} bytes free, reserve {reserve_bytes}")]
    DiskFull {
        available_bytes: u64,
        reserve_bytes: u64,
    },
    /// The receiver does not hold the block (or, for a pull, no source did).
    #[error("block not found")]
    NotFound,
    /// The bytes sent (or pulled) do not hash to the block's name.
    #[error("the bytes do not match the block's hash")]
    Corrupt,
    /// The receiver's own placement puts the block on it: not dropped.
    #[error("the block is placed on this node")]
    Placed,
    /// The receiver's block store failed.
    #[error("block storage failed: {message}")]
    Storage { message: String },
}

/// What serves `Blocks` streams on a node (the node's `Files`).
pub trait BlockService: Send + Sync {
    /// `Blocks` streams served at once per connection.
    fn streams_per_peer_max(&self) -> usize;

    /// How long a stream waits for a free slot before it is refused with
    /// `stream_code::BUSY`.
    fn busy_wait(&self) -> std::time::Duration;

    /// Serves one `Blocks` stream (its one request) to the end.
    fn serve(&self, stream: PeerStream) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Whether a request's sizes are within the protocol's limits; one that is
/// not is a protocol violation (the sender is disconnected).
pub fn request_in_limits(request: &BlockRequest, block_bytes_max: u64) -> bool {
    match request {
        BlockRequest::Put { len, .. } => u64::from(*len) <= block_bytes_max,
        BlockRequest::Get { offset, len, .. } => {
            u64::from(*offset) <= block_bytes_max && u64::from(*len) <= block_bytes_max
        }
        BlockRequest::Has { hashes } => hashes.len() <= HAS_HASHES_MAX,
        BlockRequest::Pull { sources, .. } => sources.len() <= PULL_SOURCES_MAX,
        BlockRequest::Drop { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picloud_storage::codec;
    use picloud_storage::files::BLOCK_BYTES;

    #[test]
    fn requests_and_replies_round_trip_and_the_largest_header_fits_a_frame() {
        let requests = [
            BlockRequest::Put {
                hash: [1; 32],
                len: BLOCK_BYTES as u32,
            },
            BlockRequest::Get {
                hash: [2; 32],
                offset: 7,
                len: 9,
            },
            BlockRequest::Has {
                hashes: vec![[3; 32]; HAS_HASHES_MAX],
            },
            BlockRequest::Pull {
                hash: [4; 32],
                sources: vec![u64::MAX; PULL_SOURCES_MAX],
            },
            BlockRequest::Drop { hash: [5; 32] },
        ];
        for request in requests {
            let bytes = codec::encode(&request).expect("encode");
            assert!(
                bytes.len() <= BLOCK_FRAME_BYTES_MAX as usize,
                "{} bytes",
                bytes.len()
            );
            let back: BlockRequest =
                codec::decode(&bytes, u64::from(BLOCK_FRAME_BYTES_MAX)).expect("decode");
            assert_eq!(back, request);
            assert!(request_in_limits(&request, BLOCK_BYTES));
        }
        let replies = [
            BlockReply::Durable,
            BlockReply::Sending { len: 3 },
            BlockReply::Has(vec![true, false]),
            BlockReply::Refused(BlockRefusal::DiskFull {
                available_bytes: 1,
                reserve_bytes: 2,
            }),
            BlockReply::Refused(BlockRefusal::Storage {
                message: "eio".into(),
            }),
        ];
        for reply in replies {
            let bytes = codec::encode(&reply).expect("encode");
            let back: BlockReply = codec::decode(&bytes, 1024).expect("decode");
            assert_eq!(back, reply);
        }
    }

    #[test]
    fn oversized_requests_are_out_of_limits() {
        let over = [
            BlockRequest::Put {
                hash: [0; 32],
                len: BLOCK_BYTES as u32 + 1,
            },
            BlockRequest::Get {
                hash: [0; 32],
                offset: BLOCK_BYTES as u32 + 1,
                len: 1,
            },
            BlockRequest::Has {
                hashes: vec![[0; 32]; HAS_HASHES_MAX + 1],
            },
            BlockRequest::Pull {
                hash: [0; 32],
                sources: vec![1; PULL_SOURCES_MAX + 1],
            },
        ];
        for request in over {
            assert!(!request_in_limits(&request, BLOCK_BYTES), "{request:?}");
        }
    }
}
