//! The offline side of a backup: [`verify`] reads the whole file and checks
//! its structure, every block's hash and the trailing SHA-256; [`restore`]
//! verifies first, then writes the state (`storage::restore`) and the
//! blocks into an empty data dir as a new one-node cluster.
//!
//! ```text
//!  restore(FILE, DIR): DIR empty? ─▶ verify(FILE) ─▶ DIR/raft (state, log meta, marker)
//!                      ─▶ DIR/blocks (each block: temp, fsync, rename)
//!  picloud serve --data-dir DIR: a first start (new CA, node 1) over the restored state
//! ```

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use picloud_storage::files::{BLOCK_BYTES, BlockHash};
use sha2::{Digest, Sha256};

use super::{
    BackupError, BackupHeader, FORMAT_VERSION, HEADER_BYTES_MAX, MAGIC, SECTION_BLOCK, SECTION_END,
    SECTION_SNAPSHOT,
};
use crate::disk::DiskGuard;
use crate::files::BlockStore;
use crate::node::FIRST_NODE_ID;

/// The read buffer of both passes over a backup file.
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// A backup that read back whole and intact.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: BackupHeader,
    /// Where the snapshot starts in the file, and its length.
    pub snapshot_offset: u64,
    pub snapshot_len: u64,
    pub blocks: u64,
    pub bytes: u64,
}

/// Reads the file, hashing every byte, and remembers where it is.
struct Input {
    reader: BufReader<File>,
    path: PathBuf,
    hash: Sha256,
    position: u64,
}

impl Input {
    fn corrupt(&self, detail: impl Into<String>) -> BackupError {
        BackupError::Corrupt {
            path: self.path.display().to_string(),
            detail: detail.into(),
        }
    }

    /// Reads exactly `buffer.len()` bytes without hashing them; a short
    /// file is corrupt, not an I/O error.
    fn read_raw(&mut self, buffer: &mut [u8]) -> Result<(), BackupError> {
        match self.reader.read_exact(buffer) {
            Ok(()) => {
                self.position += buffer.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.corrupt(format!(
                "it ends at byte {}, inside a record: truncated",
                self.position
            ))),
            Err(e) => Err(BackupError::io(&self.path)(e)),
        }
    }

    fn read(&mut self, buffer: &mut [u8]) -> Result<(), BackupError> {
        self.read_raw(buffer)?;
        self.hash.update(&*buffer);
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, BackupError> {
        let mut bytes = [0u8; 1];
        self.read(&mut bytes)?;
        Ok(bytes[0])
    }

    fn u32(&mut self) -> Result<u32, BackupError> {
        let mut bytes = [0u8; 4];
        self.read(&mut bytes)?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn u64(&mut self) -> Result<u64, BackupError> {
        let mut bytes = [0u8; 8];
        self.read(&mut bytes)?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// Hashes `length` bytes without keeping them.
    fn skip(&mut self, mut length: u64) -> Result<(), BackupError> {
        let mut buffer = vec![0u8; READ_BUFFER_BYTES];
        while length > 0 {
            let want = length.min(buffer.len() as u64) as usize;
            self.read(&mut buffer[..want])?;
            length -= want as u64;
        }
        Ok(())
    }
}

fn open(path: &Path) -> Result<Input, BackupError> {
    let file = File::open(path).map_err(BackupError::io(path))?;
    Ok(Input {
        reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
        path: path.to_path_buf(),
        hash: Sha256::new(),
        position: 0,
    })
}

/// Reads the header (after the magic) and the snapshot section's head.
fn read_head(input: &mut Input) -> Result<(BackupHeader, u64), BackupError> {
    let mut magic = [0u8; 8];
    input.read(&mut magic)?;
    if &magic != MAGIC {
        return Err(input.corrupt("it does not start with PICBACK1"));
    }
    let header_len = input.u32()?;
    if header_len > HEADER_BYTES_MAX {
        return Err(input.corrupt(format!("a header of {header_len} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    input.read(&mut header)?;
    let header: BackupHeader = serde_json::from_slice(&header)
        .map_err(|e| input.corrupt(format!("an unreadable header: {e}")))?;
    if header.format != FORMAT_VERSION {
        return Err(input.corrupt(format!(
            "format {}; this picloud reads format {FORMAT_VERSION}",
            header.format
        )));
    }
    if input.u8()? != SECTION_SNAPSHOT {
        return Err(input.corrupt("no snapshot after the header"));
    }
    let snapshot_len = input.u64()?;
    Ok((header, snapshot_len))
}

/// Reads one block section's head and bytes (after its tag), checking the
/// bytes against the hash.
fn read_block(input: &mut Input) -> Result<(BlockHash, Vec<u8>), BackupError> {
    let mut hash = [0u8; 32];
    input.read(&mut hash)?;
    let length = input.u32()?;
    if u64::from(length) > BLOCK_BYTES {
        return Err(input.corrupt(format!("a block of {length} bytes")));
    }
    let mut bytes = vec![0u8; length as usize];
    input.read(&mut bytes)?;
    if Sha256::digest(&bytes).as_slice() != hash {
        return Err(input.corrupt(format!(
            "block {} does not match its hash",
            crate::files::hex8(&hash)
        )));
    }
    Ok((hash, bytes))
}

/// Reads the whole backup at `path` and checks it: structure, block
/// hashes, block count and the trailing SHA-256, and nothing after it.
/// Blocking (run it on the blocking pool).
pub fn verify(path: &Path) -> Result<Verified, BackupError> {
    let mut input = open(path)?;
    let (header, snapshot_len) = read_head(&mut input)?;
    let snapshot_offset = input.position;
    input.skip(snapshot_len)?;
    let mut blocks = 0u64;
    loop {
        match input.u8()? {
            SECTION_BLOCK => {
                read_block(&mut input)?;
                blocks += 1;
            }
            SECTION_END => break,
            tag => return Err(input.corrupt(format!("an unknown section tag {tag}"))),
        }
    }
    let count = input.u64()?;
    let digest = std::mem::take(&mut input.hash).finalize();
    let mut stored = [0u8; 32];
    input.read_raw(&mut stored)?;
    if count != blocks || digest.as_slice() != stored {
        return Err(input.corrupt("its checksum does not match: damaged"));
    }
    let mut extra = [0u8; 1];
    match input.reader.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return Err(input.corrupt("bytes after its end")),
        Err(e) => return Err(BackupError::io(path)(e)),
    }
    if !header.files && blocks > 0 {
        return Err(input.corrupt("blocks in a backup made without files"));
    }
    Ok(Verified {
        header,
        snapshot_offset,
        snapshot_len,
        blocks,
        bytes: input.position,
    })
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub verified: Verified,
    /// The restored node's id (a new cluster's first node).
    pub node_id: picloud_storage::NodeId,
    pub apps: usize,
}

/// Restores the backup at `path` into `data_dir` (absent or empty) as a new
/// one-node cluster: verifies the whole file first, so a damaged one
/// leaves `data_dir` untouched. `cache_capacity_bytes` is the state
/// database's page cache while it is written.
pub async fn restore(
    path: &Path,
    data_dir: &Path,
    cache_capacity_bytes: u64,
) -> Result<RestoreReport, BackupError> {
    if let Ok(mut entries) = std::fs::read_dir(data_dir)
        && entries.next().is_some()
    {
        return Err(BackupError::NotEmpty {
            dir: data_dir.display().to_string(),
        });
    }
    let verified = blocking({
        let path = path.to_path_buf();
        move || verify(&path)
    })
    .await?;

    std::fs::create_dir_all(data_dir).map_err(BackupError::io(data_dir))?;
    let restored = blocking({
        let (path, raft_dir) = (path.to_path_buf(), data_dir.join("raft"));
        let (offset, length) = (verified.snapshot_offset, verified.snapshot_len);
        move || {
            picloud_storage::restore::restore_state(
                &raft_dir,
                &path,
                offset,
                length,
                FIRST_NODE_ID,
                cache_capacity_bytes,
            )
            .map_err(BackupError::from)
        }
    })
    .await?;

    if verified.blocks > 0 {
        restore_blocks(path, data_dir, &verified).await?;
    }
    Ok(RestoreReport {
        verified,
        node_id: FIRST_NODE_ID,
        apps: restored.apps,
    })
}

/// The second pass: every block section into the data dir's block store.
async fn restore_blocks(
    path: &Path,
    data_dir: &Path,
    verified: &Verified,
) -> Result<(), BackupError> {
    // No reserve: the restore writes what the backup holds, or fails.
    let disk = Arc::new(DiskGuard::new(data_dir, 0));
    let store = BlockStore::open(data_dir, disk).map_err(BackupError::io(data_dir))?;
    let mut input = open(path)?;
    let start = verified.snapshot_offset + verified.snapshot_len;
    input
        .reader
        .seek(SeekFrom::Start(start))
        .map_err(BackupError::io(path))?;
    input.position = start;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(BlockHash, Vec<u8>)>(2);
    let count = verified.blocks;
    let reading = tokio::task::spawn_blocking(move || -> Result<(), BackupError> {
        for _ in 0..count {
            if input.u8()? != SECTION_BLOCK {
                return Err(input.corrupt("changed since it was verified"));
            }
            let block = read_block(&mut input)?;
            if tx.blocking_send(block).is_err() {
                break;
            }
        }
        Ok(())
    });
    while let Some((hash, bytes)) = rx.recv().await {
        store
            .put_bytes(hash, Bytes::from(bytes))
            .await
            .map_err(|source| BackupError::Block {
                hash: crate::files::hex8(&hash),
                source,
            })?;
    }
    reading
        .await
        .map_err(|e| BackupError::Task(e.to_string()))?
}

async fn blocking<T, F>(work: F) -> Result<T, BackupError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, BackupError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackupError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::super::write::{block_head, end_bytes, head_bytes};
    use super::*;

    /// A small backup: a header, a stand-in snapshot and two blocks.
    fn backup_bytes() -> Vec<u8> {
        let header = BackupHeader {
            format: FORMAT_VERSION,
            created_ms: 1,
            node_id: 2,
            voters: vec![1, 2, 3],
            last_log_index: 42,
            last_log_term: 3,
            files: true,
            version: "test".to_string(),
        };
        let snapshot = b"PICSNAP1 stand-in bytes".to_vec();
        let mut file = head_bytes(&header, snapshot.len() as u64).expect("head");
        file.extend_from_slice(&snapshot);
        for content in [b"first block".to_vec(), vec![7u8; 300]] {
            let hash: BlockHash = Sha256::digest(&content).into();
            file.extend_from_slice(&block_head(&hash, content.len() as u64));
            file.extend_from_slice(&content);
        }
        let hash = Sha256::new_with_prefix(&file);
        let end = end_bytes(2, hash);
        file.extend_from_slice(&end);
        file
    }

    fn verify_bytes(bytes: &[u8]) -> Result<Verified, BackupError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.picbak");
        std::fs::write(&path, bytes).expect("write");
        verify(&path)
    }

    #[test]
    fn a_whole_backup_verifies() {
        let bytes = backup_bytes();
        let verified = verify_bytes(&bytes).expect("verify");
        assert_eq!(verified.blocks, 2);
        assert_eq!(verified.bytes, bytes.len() as u64);
        assert_eq!(verified.header.last_log_index, 42);
        assert_eq!(verified.snapshot_len, 23);
    }

    /// Every cut and every flipped bit is refused as incomplete, never
    /// read as a smaller backup.
    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = backup_bytes();
        for length in 0..bytes.len() {
            match verify_bytes(&bytes[..length]) {
                Err(BackupError::Corrupt { .. }) => {}
                other => panic!("cut at {length}: {other:?}"),
            }
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            match verify_bytes(&damaged) {
                Err(BackupError::Corrupt { .. }) => {}
                other => panic!("flip at {at}: {other:?}"),
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            verify_bytes(&longer),
            Err(BackupError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn a_restore_refuses_a_dir_that_is_not_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.picbak");
        std::fs::write(&path, backup_bytes()).expect("write");
        let target = dir.path().join("data");
        std::fs::create_dir_all(&target).expect("mkdir");
        std::fs::write(target.join("x"), b"x").expect("write");
        assert!(matches!(
            restore(&path, &target, 1 << 20).await,
            Err(BackupError::NotEmpty { .. })
        ));
    }
}
