//! The node's side of a backup: take the snapshot ([`prepare`]), then
//! stream the file through a bounded channel ([`PreparedBackup::spawn`]).
//!
//! ```text
//!  prepare: read barrier ─▶ openraft snapshot at/after the applied index ─▶ header
//!  spawn:   header ─▶ snapshot file in 256 KiB reads ─▶ blocks (Files::read: local
//!           or from a member holding each) ─▶ trailer      ──▶ channel (8 chunks) ──▶ HTTP body
//! ```
//!
//! Memory stays bounded: at most [`BACKUP_CHUNKS_IN_FLIGHT`] chunks wait in
//! the channel, and the block list (one entry per distinct block) is the
//! only thing that grows with the state. A failure after the first byte
//! (a block no reachable node holds, a disk error) ends the stream with an
//! error, so the client sees a cut body and keeps no file.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use picloud_storage::files::BlockHash;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{BackupHeader, FORMAT_VERSION, MAGIC, SECTION_BLOCK, SECTION_END, SECTION_SNAPSHOT};
use crate::error::ClusterError;
use crate::node::Node;

/// Bytes of the snapshot file read (and sent) at once.
pub const BACKUP_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks that may wait for a slow client before the reader pauses.
pub const BACKUP_CHUNKS_IN_FLIGHT: usize = 8;

/// A snapshot taken for a backup, ready to stream.
pub struct PreparedBackup {
    header: BackupHeader,
    snapshot: Arc<File>,
    snapshot_len: u64,
    files: Option<crate::files::Files>,
}

/// Takes the backup's snapshot on `node` (see `Node::snapshot_for_backup`),
/// waiting at most `snapshot_timeout` for it to be built.
pub async fn prepare(
    node: &Node,
    include_files: bool,
    now_ms: u64,
    snapshot_timeout: Duration,
) -> Result<PreparedBackup, ClusterError> {
    let (meta, file) = node.snapshot_for_backup(snapshot_timeout).await?;
    let file = file.into_std().await;
    let snapshot_len = file
        .metadata()
        .map_err(|source| {
            ClusterError::Storage(picloud_storage::StorageError::Io {
                operation: "stat backup snapshot",
                path: PathBuf::new(),
                source,
            })
        })?
        .len();
    let last = meta.last_log_id.unwrap_or_default();
    let header = BackupHeader {
        format: FORMAT_VERSION,
        created_ms: now_ms,
        node_id: node.id(),
        voters: meta.last_membership.membership().voter_ids().collect(),
        last_log_index: last.index,
        last_log_term: last.leader_id.term,
        files: include_files,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok(PreparedBackup {
        header,
        snapshot: Arc::new(file),
        snapshot_len,
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
    /// If it panics, its sender drops and the body ends without the SHA-256
    /// trailer, which the CLI refuses (no FILE written): the same outcome
    /// as a node dying mid-backup, and nothing to restart.
    pub fn spawn(self) -> mpsc::Receiver<Result<Bytes, std::io::Error>> {
        let (tx, rx) = mpsc::channel(BACKUP_CHUNKS_IN_FLIGHT);
        tokio::spawn(async move {
            let mut out = Out {
                tx,
                hash: Sha256::new(),
            };
            if let Err(error) = self.write(&mut out).await {
                match error {
                    Stop::ClientGone => {}
                    Stop::Failed(message) => {
                        tracing::warn!(%message, "backup failed part-way; the client gets a cut body");
                        let _ = out.tx.send(Err(std::io::Error::other(message))).await;
                    }
                }
            }
        });
        rx
    }

    async fn write(self, out: &mut Out) -> Result<(), Stop> {
        let head =
            head_bytes(&self.header, self.snapshot_len).map_err(|e| Stop::Failed(e.to_string()))?;
        out.send(Bytes::from(head)).await?;

        let mut offset = 0u64;
        while offset < self.snapshot_len {
            let want = (self.snapshot_len - offset).min(BACKUP_CHUNK_BYTES as u64) as usize;
            let file = self.snapshot.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                let mut chunk = vec![0u8; want];
                file.read_exact_at(&mut chunk, offset).map(|()| chunk)
            })
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?
            .map_err(|e| Stop::Failed(format!("reading the snapshot: {e}")))?;
            offset += chunk.len() as u64;
            out.send(Bytes::from(chunk)).await?;
        }

        let mut block_count = 0u64;
        if let Some(files) = &self.files {
            let file = self.snapshot.clone();
            let blocks = tokio::task::spawn_blocking(move || {
                let label = PathBuf::from("backup snapshot");
                picloud_storage::restore::snapshot_blocks(Box::new(At { file, offset: 0 }), &label)
            })
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?
            .map_err(|e| Stop::Failed(format!("listing the snapshot's blocks: {e}")))?;
            for (hash, length) in blocks {
                send_block(out, files, hash, length).await?;
                block_count += 1;
            }
        }

        let end = end_bytes(block_count, std::mem::take(&mut out.hash));
        out.tx
            .send(Ok(Bytes::from(end)))
            .await
            .map_err(|_| Stop::ClientGone)
    }
}

/// The file's head: magic, header, and the snapshot section's head.
pub(super) fn head_bytes(
    header: &BackupHeader,
    snapshot_len: u64,
) -> Result<Vec<u8>, serde_json::Error> {
    let header = serde_json::to_vec(header)?;
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&(header.len() as u32).to_be_bytes());
    head.extend_from_slice(&header);
    head.push(SECTION_SNAPSHOT);
    head.extend_from_slice(&snapshot_len.to_be_bytes());
    Ok(head)
}

/// A block section's head (its bytes follow).
pub(super) fn block_head(hash: &BlockHash, length: u64) -> Vec<u8> {
    let mut head = vec![SECTION_BLOCK];
    head.extend_from_slice(hash);
    head.extend_from_slice(&(length as u32).to_be_bytes());
    head
}

/// The end: its tag and the block count (both hashed), then the digest of
/// every byte before the digest.
pub(super) fn end_bytes(block_count: u64, mut hash: Sha256) -> Vec<u8> {
    let mut end = vec![SECTION_END];
    end.extend_from_slice(&block_count.to_be_bytes());
    hash.update(&end);
    end.extend_from_slice(&hash.finalize());
    end
}

async fn send_block(
    out: &mut Out,
    files: &crate::files::Files,
    hash: BlockHash,
    length: u64,
) -> Result<(), Stop> {
    let head = block_head(&hash, length);
    out.send(Bytes::from(head)).await?;
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

/// The channel, and the running hash of every byte sent into it.
struct Out {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    hash: Sha256,
}

impl Out {
    async fn send(&mut self, bytes: Bytes) -> Result<(), Stop> {
        self.hash.update(&bytes);
        self.tx.send(Ok(bytes)).await.map_err(|_| Stop::ClientGone)
    }
}

/// Reads a shared file from its own position (`pread`), so the block scan
/// never disturbs anyone else's reads of the same file.
struct At {
    file: Arc<File>,
    offset: u64,
}

impl Read for At {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}
