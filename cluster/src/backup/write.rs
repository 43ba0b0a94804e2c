//! The node's side of a backup: open a point-in-time view of the state
//! ([`prepare`]), then stream the file through a bounded channel
//! ([`PreparedBackup::spawn`]) in one pass over the state.
//!
//! ```text
//!  prepare: read barrier ─▶ state view at the entry applied last (applies go on) ─▶ header
//!  spawn:   header, meta ─▶ records from the view (blocking thread: scan, frame,
//!           BLAKE3, collect the files' blocks) ─▶ blocks (Files::read: local or from
//!           a member holding each) ─▶ end      ──▶ channel (8 chunks of 256 KiB) ──▶ HTTP body
//! ```
//!
//! Nothing is written on the node: no snapshot file, no fsync. Memory stays
//! bounded: at most [`BACKUP_CHUNKS_IN_FLIGHT`] chunks wait in the channel,
//! the view keeps at most its limit of old values, and the block list (one
//! entry per distinct block) is the only thing that grows with the state.
//! A failure after the first byte (the view broke, a block no reachable
//! node holds, a disk error) ends the stream with an error, so the client
//! sees a cut body and keeps no file.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use picloud_storage::files::BlockHash;
use picloud_storage::restore::BlockCollector;
use picloud_storage::state_view::{ScanError, StateView};
use tokio::sync::mpsc;

use super::{
    BackupHeader, FORMAT_VERSION, MAGIC, SECTION_BLOCK, SECTION_END, SECTION_META, SECTION_RECORD,
    StateMeta,
};
use crate::error::ClusterError;
use crate::node::Node;

/// Bytes sent at once (the records are framed into chunks of this size).
pub const BACKUP_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks that may wait for a slow client before the scan pauses.
pub const BACKUP_CHUNKS_IN_FLIGHT: usize = 8;

/// A view taken for a backup, ready to stream.
pub struct PreparedBackup {
    header: BackupHeader,
    view: StateView,
    files: Option<crate::files::Files>,
}

/// Opens the backup's view on `node` (see `Node::backup_view`); the view
/// keeps at most `kept_bytes_max` of old values while it is read.
pub async fn prepare(
    node: &Node,
    include_files: bool,
    now_ms: u64,
    kept_bytes_max: u64,
) -> Result<PreparedBackup, ClusterError> {
    let view = node.backup_view(kept_bytes_max).await?;
    let last = view.last_applied.unwrap_or_default();
    let header = BackupHeader {
        format: FORMAT_VERSION,
        created_ms: now_ms,
        node_id: node.id(),
        voters: view.membership.membership().voter_ids().collect(),
        last_log_index: last.index,
        last_log_term: last.leader_id.term,
        files: include_files,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok(PreparedBackup {
        header,
        view,
        files: include_files.then(|| node.files().as_ref().clone()),
    })
}

impl PreparedBackup {
    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// Starts streaming the backup; the receiver yields its bytes, or an
    /// error that must end the response without its end (a cut body). The
    /// task stops when the receiver is dropped.
    ///
    /// Not supervised on purpose: the task lives as long as one response.
    /// If it panics, its sender drops and the body ends without the
    /// trailer, which the CLI refuses (no FILE written): the same outcome
    /// as a node dying mid-backup, and nothing to restart.
    pub fn spawn(self) -> mpsc::Receiver<Result<Bytes, std::io::Error>> {
        let (tx, rx) = mpsc::channel(BACKUP_CHUNKS_IN_FLIGHT);
        tokio::spawn(async move {
            let failed = tx.clone();
            if let Err(Stop::Failed(message)) = self.write(tx).await {
                tracing::warn!(%message, "backup failed part-way; the client gets a cut body");
                let _ = failed.send(Err(std::io::Error::other(message))).await;
            }
        });
        rx
    }

    async fn write(self, tx: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Result<(), Stop> {
        let PreparedBackup {
            header,
            view,
            files,
        } = self;
        let with_files = files.is_some();
        // The scan blocks (sled); the view closes when this thread drops it.
        let (mut out, records, blocks) = tokio::task::spawn_blocking(move || {
            let mut out = Out::new(tx);
            let (records, blocks) = write_records(&header, &view, with_files, &mut out)?;
            out.flush_blocking()?;
            Ok::<_, Stop>((out, records, blocks))
        })
        .await
        .map_err(|e| Stop::Failed(e.to_string()))??;

        let mut block_count = 0u64;
        if let Some(files) = &files {
            for (hash, length) in blocks {
                send_block(&mut out, files, hash, length).await?;
                block_count += 1;
            }
        }
        let end = end_bytes(records, block_count, std::mem::take(&mut out.hash));
        out.tx
            .send(Ok(Bytes::from(end)))
            .await
            .map_err(|_| Stop::ClientGone)
    }
}

/// The head, the meta and every record of the view; returns the record
/// count and, when `with_files`, the blocks the state's files use. Blocking.
fn write_records(
    header: &BackupHeader,
    view: &StateView,
    with_files: bool,
    out: &mut Out,
) -> Result<(u64, Vec<(BlockHash, u64)>), Stop> {
    let head = head_bytes(header).map_err(|e| Stop::Failed(e.to_string()))?;
    out.push(&head)?;
    let meta = StateMeta {
        last_applied: view.last_applied,
        membership: view.membership.clone(),
    };
    let meta = meta_bytes(&meta).map_err(|e| Stop::Failed(e.to_string()))?;
    out.push(&meta)?;

    let mut collector = with_files.then(BlockCollector::new);
    let mut count = 0u64;
    let scanned = view.scan(|keyspace, key, value| {
        if let Some(collector) = collector.as_mut() {
            collector
                .record(keyspace, key, value)
                .map_err(|e| Stop::Failed(format!("listing the files' blocks: {e}")))?;
        }
        let (key_len, value_len) = (frame_length(key.len())?, frame_length(value.len())?);
        out.push(&[SECTION_RECORD, keyspace.id()])?;
        out.push(&key_len.to_be_bytes())?;
        out.push(key)?;
        out.push(&value_len.to_be_bytes())?;
        out.push(value)?;
        count += 1;
        Ok(())
    });
    match scanned {
        Ok(()) => Ok((
            count,
            collector.map(BlockCollector::finish).unwrap_or_default(),
        )),
        Err(ScanError::Emit(stop)) => Err(stop),
        Err(ScanError::View(error)) => Err(Stop::Failed(format!(
            "reading the state at index {}: {error}",
            header.last_log_index
        ))),
    }
}

fn frame_length(length: usize) -> Result<u32, Stop> {
    u32::try_from(length).map_err(|_| Stop::Failed(format!("a record of {length} bytes")))
}

/// The file's head: magic and header.
pub(super) fn head_bytes(header: &BackupHeader) -> Result<Vec<u8>, serde_json::Error> {
    let header = serde_json::to_vec(header)?;
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&(header.len() as u32).to_be_bytes());
    head.extend_from_slice(&header);
    Ok(head)
}

/// The meta section: the state's applied id and membership.
pub(super) fn meta_bytes(meta: &StateMeta) -> Result<Vec<u8>, picloud_storage::codec::CodecError> {
    let encoded = picloud_storage::codec::encode(meta)?;
    let mut bytes = vec![SECTION_META];
    bytes.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&encoded);
    Ok(bytes)
}

/// A block section's head (its bytes follow).
pub(super) fn block_head(hash: &BlockHash, length: u64) -> Vec<u8> {
    let mut head = vec![SECTION_BLOCK];
    head.extend_from_slice(hash);
    head.extend_from_slice(&(length as u32).to_be_bytes());
    head
}

/// The end: its tag and the counts (all hashed), then the BLAKE3 digest of
/// every byte before the digest.
pub(super) fn end_bytes(records: u64, blocks: u64, mut hash: blake3::Hasher) -> Vec<u8> {
    let mut end = vec![SECTION_END];
    end.extend_from_slice(&records.to_be_bytes());
    end.extend_from_slice(&blocks.to_be_bytes());
    hash.update(&end);
    end.extend_from_slice(hash.finalize().as_bytes());
    end
}

async fn send_block(
    out: &mut Out,
    files: &crate::files::Files,
    hash: BlockHash,
    length: u64,
) -> Result<(), Stop> {
    out.send(Bytes::from(block_head(&hash, length))).await?;
    let mut stream = files.read(Arc::from([hash]), length, 0..length);
    let mut sent = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Stop::Failed(format!("block {}: {e}", crate::files::hex8(&hash))))?;
        sent += chunk.len() as u64;
        out.send(chunk).await?;
    }
    if sent != length {
        return Err(Stop::Failed(format!(
            "block {}: {sent} of {length} bytes",
            crate::files::hex8(&hash)
        )));
    }
    Ok(())
}

/// Why the stream stopped early.
enum Stop {
    /// The receiver was dropped (the client went away): nothing to tell.
    ClientGone,
    Failed(String),
}

/// The channel, the running hash of every byte sent into it, and the chunk
/// being filled by the records.
struct Out {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    hash: blake3::Hasher,
    chunk: Vec<u8>,
}

impl Out {
    fn new(tx: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Out {
        Out {
            tx,
            hash: blake3::Hasher::new(),
            chunk: Vec::with_capacity(BACKUP_CHUNK_BYTES),
        }
    }

    /// Appends to the chunk, sending each full one (blocks while the
    /// channel is full: call it off the runtime).
    fn push(&mut self, mut bytes: &[u8]) -> Result<(), Stop> {
        while !bytes.is_empty() {
            let room = BACKUP_CHUNK_BYTES - self.chunk.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.chunk.extend_from_slice(now);
            bytes = rest;
            if self.chunk.len() == BACKUP_CHUNK_BYTES {
                self.flush_blocking()?;
            }
        }
        Ok(())
    }

    fn flush_blocking(&mut self) -> Result<(), Stop> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(BACKUP_CHUNK_BYTES));
        self.hash.update(&chunk);
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| Stop::ClientGone)
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), Stop> {
        self.hash.update(&bytes);
        self.tx.send(Ok(bytes)).await.map_err(|_| Stop::ClientGone)
    }
}
