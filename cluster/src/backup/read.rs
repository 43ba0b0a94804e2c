//! The offline side of a backup: [`restore`] reads the file once, writing
//! the state (`storage::restore::Restorer`) and the blocks into an empty
//! data dir as it goes, and checks its structure, every block's hash, the
//! counts and the trailing BLAKE3; if anything fails it removes what it
//! wrote. [`verify`] is the same read without writing.
//!
//! ```text
//!  restore(FILE, DIR): DIR empty? ─▶ DIR/restoring (marker) ─▶ one pass over FILE:
//!                        records ─▶ DIR/raft/state     blocks ─▶ DIR/blocks (temp, fsync, rename)
//!                      ─▶ end checks ─▶ Restorer::finish (applied id, log meta, DIR/raft/restored)
//!                      ─▶ remove DIR/restoring.   Any failure: DIR emptied again.
//!  picloud serve --data-dir DIR: refuses a DIR with `restoring` (an interrupted
//!  restore); else a first start (new CA, node 1) over the restored state
//! ```

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use picloud_storage::backend::Keyspace;
use picloud_storage::codec::STORED_BYTES_MAX;
use picloud_storage::files::{BLOCK_BYTES, BlockHash};
use picloud_storage::restore::{RESTORING_MARKER_FILE, Restorer};
use sha2::{Digest, Sha256};

use super::{
    BackupError, BackupHeader, FORMAT_VERSION, HEADER_BYTES_MAX, MAGIC, META_BYTES_MAX,
    SECTION_BLOCK, SECTION_END, SECTION_META, SECTION_RECORD, StateMeta,
};
use crate::disk::DiskGuard;
use crate::files::BlockStore;
use crate::node::FIRST_NODE_ID;

/// The read buffer of the pass over a backup file.
const READ_BUFFER_BYTES: usize = 1024 * 1024;
/// Blocks read ahead of the block store's writes.
const BLOCKS_IN_FLIGHT: usize = 2;
const DIGEST_BYTES: u64 = 32;

/// A backup that read back whole and intact.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: BackupHeader,
    pub records: u64,
    pub blocks: u64,
    pub bytes: u64,
}

/// The file, hashing every byte it yields before the trailing digest
/// (whose offset the file's length tells), however far ahead it is read.
struct Hashing {
    file: File,
    hash: blake3::Hasher,
    read: u64,
    hashed_up_to: u64,
}

impl Read for Hashing {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.file.read(buffer)?;
        let hashable = self.hashed_up_to.saturating_sub(self.read).min(read as u64) as usize;
        self.hash.update(&buffer[..hashable]);
        self.read += read as u64;
        Ok(read)
    }
}

/// Reads the file and remembers where it is.
struct Input {
    reader: BufReader<Hashing>,
    path: PathBuf,
    position: u64,
    length: u64,
}

impl Input {
    fn corrupt(&self, detail: impl Into<String>) -> BackupError {
        BackupError::Corrupt {
            path: self.path.display().to_string(),
            detail: detail.into(),
        }
    }

    /// Reads exactly `buffer.len()` bytes; a short file is corrupt, not an
    /// I/O error.
    fn read(&mut self, buffer: &mut [u8]) -> Result<(), BackupError> {
        match self.reader.read_exact(buffer) {
            Ok(()) => {
                self.position += buffer.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.corrupt(format!(
                "it ends at byte {}, inside a record: truncated",
                self.length
            ))),
            Err(e) => Err(BackupError::io(&self.path)(e)),
        }
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

    /// `length` bytes, refused over `max` (a damaged length must not
    /// allocate gigabytes) or past the digest.
    fn bytes(&mut self, length: u32, max: u64, what: &str) -> Result<Vec<u8>, BackupError> {
        if u64::from(length) > max || self.position + u64::from(length) > self.length {
            return Err(self.corrupt(format!(
                "{what} of {length} bytes at byte {}",
                self.position
            )));
        }
        let mut bytes = vec![0u8; length as usize];
        self.read(&mut bytes)?;
        Ok(bytes)
    }

    /// The BLAKE3 of every byte before the digest; call at the digest.
    fn digest(&self) -> blake3::Hash {
        self.reader.get_ref().hash.finalize()
    }
}

fn open(path: &Path) -> Result<Input, BackupError> {
    let file = File::open(path).map_err(BackupError::io(path))?;
    let length = file.metadata().map_err(BackupError::io(path))?.len();
    Ok(Input {
        reader: BufReader::with_capacity(
            READ_BUFFER_BYTES,
            Hashing {
                file,
                hash: blake3::Hasher::new(),
                read: 0,
                hashed_up_to: length.saturating_sub(DIGEST_BYTES),
            },
        ),
        path: path.to_path_buf(),
        position: 0,
        length,
    })
}

/// Reads the header (after the magic) and the meta section.
fn read_head(input: &mut Input) -> Result<(BackupHeader, StateMeta), BackupError> {
    let mut magic = [0u8; 8];
    input.read(&mut magic)?;
    if &magic != MAGIC {
        return Err(input.corrupt("it does not start with PICBACK1"));
    }
    let header_len = input.u32()?;
    let header = input.bytes(header_len, HEADER_BYTES_MAX.into(), "a header")?;
    let header: BackupHeader = serde_json::from_slice(&header)
        .map_err(|e| input.corrupt(format!("an unreadable header: {e}")))?;
    if header.format != FORMAT_VERSION {
        return Err(input.corrupt(format!(
            "format {}; this picloud reads format {FORMAT_VERSION}",
            header.format
        )));
    }
    if input.u8()? != SECTION_META {
        return Err(input.corrupt("no meta section after the header"));
    }
    let meta_len = input.u32()?;
    let meta = input.bytes(meta_len, META_BYTES_MAX.into(), "a meta section")?;
    let meta: StateMeta = picloud_storage::codec::decode(&meta, META_BYTES_MAX.into())
        .map_err(|e| input.corrupt(format!("an unreadable meta section: {e}")))?;
    Ok((header, meta))
}

/// Reads one block section's head and bytes (after its tag), checking the
/// bytes against the hash.
fn read_block(input: &mut Input) -> Result<(BlockHash, Vec<u8>), BackupError> {
    let mut hash = [0u8; 32];
    input.read(&mut hash)?;
    let length = input.u32()?;
    let bytes = input.bytes(length, BLOCK_BYTES, "a block")?;
    if Sha256::digest(&bytes).as_slice() != hash {
        return Err(input.corrupt(format!(
            "block {} does not match its hash",
            crate::files::hex8(&hash)
        )));
    }
    Ok((hash, bytes))
}

/// Where the pass puts what it reads.
trait Sink {
    fn record(
        &mut self,
        keyspace: Keyspace,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), BackupError>;
    fn block(&mut self, hash: BlockHash, bytes: Vec<u8>) -> Result<(), BackupError>;
}

/// The one pass: structure, block hashes, counts, the trailing BLAKE3 and
/// nothing after it; every record and block goes to `sink` as it is read.
fn read_all(input: &mut Input, sink: &mut dyn Sink) -> Result<(Verified, StateMeta), BackupError> {
    let (header, meta) = read_head(input)?;
    let (mut records, mut blocks) = (0u64, 0u64);
    let mut tag = input.u8()?;
    while tag == SECTION_RECORD {
        let id = input.u8()?;
        let keyspace = Keyspace::from_id(id)
            .filter(|keyspace| Keyspace::STATE_DATA.contains(keyspace))
            .ok_or_else(|| input.corrupt(format!("a record of unknown keyspace {id}")))?;
        let key_len = input.u32()?;
        let key = input.bytes(key_len, STORED_BYTES_MAX, "a key")?;
        let value_len = input.u32()?;
        let value = input.bytes(value_len, STORED_BYTES_MAX, "a value")?;
        sink.record(keyspace, key, value)?;
        records += 1;
        tag = input.u8()?;
    }
    while tag == SECTION_BLOCK {
        let (hash, bytes) = read_block(input)?;
        sink.block(hash, bytes)?;
        blocks += 1;
        tag = input.u8()?;
    }
    if tag != SECTION_END {
        return Err(input.corrupt(format!(
            "an unexpected section tag {tag} at byte {}",
            input.position - 1
        )));
    }
    let record_count = input.u64()?;
    let block_count = input.u64()?;
    if input.position + DIGEST_BYTES != input.length {
        return Err(
            input.corrupt("its end is not where its length says: damaged or with bytes after it")
        );
    }
    let digest = input.digest();
    let mut stored = [0u8; 32];
    input.read(&mut stored)?;
    if record_count != records || block_count != blocks || digest.as_bytes() != &stored {
        return Err(input.corrupt("its checksum does not match: damaged"));
    }
    if !header.files && blocks > 0 {
        return Err(input.corrupt("blocks in a backup made without files"));
    }
    Ok((
        Verified {
            header,
            records,
            blocks,
            bytes: input.position,
        },
        meta,
    ))
}

/// Reads the whole backup at `path` and checks it (see [`read_all`])
/// without writing anything. Blocking (run it on the blocking pool).
pub fn verify(path: &Path) -> Result<Verified, BackupError> {
    struct Nothing;
    impl Sink for Nothing {
        fn record(&mut self, _: Keyspace, _: Vec<u8>, _: Vec<u8>) -> Result<(), BackupError> {
            Ok(())
        }
        fn block(&mut self, _: BlockHash, _: Vec<u8>) -> Result<(), BackupError> {
            Ok(())
        }
    }
    read_all(&mut open(path)?, &mut Nothing).map(|(verified, _)| verified)
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
/// one-node cluster, in one pass over the file; a damaged or truncated file
/// (or any other failure) leaves `data_dir` as it was (absent or empty). While it runs,
/// `data_dir` holds the `restoring` marker, so an interrupted restore is
/// never started as a node. `cache_capacity_bytes` is the state database's
/// page cache while it is written.
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
    // Opened first: a missing file must not leave a marker behind.
    let input = open(path)?;
    let created = !data_dir.exists();
    std::fs::create_dir_all(data_dir).map_err(BackupError::io(data_dir))?;
    let marker = data_dir.join(RESTORING_MARKER_FILE);
    std::fs::write(&marker, b"").map_err(BackupError::io(&marker))?;
    sync_dir(data_dir)?;
    match restore_into(input, data_dir, cache_capacity_bytes).await {
        Ok(report) => {
            std::fs::remove_file(&marker).map_err(BackupError::io(&marker))?;
            sync_dir(data_dir)?;
            Ok(report)
        }
        Err(error) => {
            let cleaned = if created {
                std::fs::remove_dir_all(data_dir)
            } else {
                empty_dir(data_dir)
            };
            if let Err(cleanup) = cleaned {
                tracing::warn!(dir = %data_dir.display(), %cleanup, "could not remove a failed restore's files");
            }
            Err(error)
        }
    }
}

async fn restore_into(
    mut input: Input,
    data_dir: &Path,
    cache_capacity_bytes: u64,
) -> Result<RestoreReport, BackupError> {
    // No reserve: the restore writes what the backup holds, or fails.
    let disk = Arc::new(DiskGuard::new(data_dir, 0));
    let store = BlockStore::open(data_dir, disk).map_err(BackupError::io(data_dir))?;
    let raft_dir = data_dir.join("raft");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(BlockHash, Vec<u8>)>(BLOCKS_IN_FLIGHT);
    let reading = tokio::task::spawn_blocking(move || {
        struct Writing {
            restorer: Restorer,
            blocks: tokio::sync::mpsc::Sender<(BlockHash, Vec<u8>)>,
        }
        impl Sink for Writing {
            fn record(
                &mut self,
                keyspace: Keyspace,
                key: Vec<u8>,
                value: Vec<u8>,
            ) -> Result<(), BackupError> {
                Ok(self.restorer.record(keyspace, key, value)?)
            }
            fn block(&mut self, hash: BlockHash, bytes: Vec<u8>) -> Result<(), BackupError> {
                self.blocks
                    .blocking_send((hash, bytes))
                    .map_err(|_| BackupError::Task("the block writer stopped".to_string()))
            }
        }
        let mut sink = Writing {
            restorer: Restorer::create(&raft_dir, FIRST_NODE_ID, cache_capacity_bytes)?,
            blocks: tx,
        };
        let (verified, meta) = read_all(&mut input, &mut sink)?;
        Ok::<_, BackupError>((verified, meta, sink.restorer))
    });
    let mut stored = Ok(());
    while let Some((hash, bytes)) = rx.recv().await {
        if let Err(source) = store.put_bytes(hash, Bytes::from(bytes)).await {
            stored = Err(BackupError::Block {
                hash: crate::files::hex8(&hash),
                source,
            });
            // Dropping the receiver stops the reader at its next block.
            break;
        }
    }
    drop(rx);
    let read = reading
        .await
        .map_err(|e| BackupError::Task(e.to_string()))?;
    stored?;
    let (verified, meta, restorer) = read?;
    // The file checked whole: only now does the dir become a node's storage.
    let restored = blocking(move || Ok(restorer.finish(meta.last_applied)?)).await?;
    Ok(RestoreReport {
        verified,
        node_id: FIRST_NODE_ID,
        apps: restored.apps,
    })
}

/// Removes everything in `dir` (a failed restore's files: it was empty).
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(BackupError::io(dir))
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
    use super::super::write::{block_head, end_bytes, head_bytes, meta_bytes};
    use super::*;

    /// A small backup: a header, the meta, three records (an app and two
    /// kv values) and two blocks.
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
        let mut file = head_bytes(&header).expect("head");
        let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 42);
        let meta = StateMeta {
            last_applied: Some(log_id),
            membership: openraft::StoredMembership::default(),
        };
        file.extend_from_slice(&meta_bytes(&meta).expect("meta"));
        let records: [(Keyspace, &[u8], &[u8]); 3] = [
            (Keyspace::Kv, b"shop\0a", b"1"),
            (Keyspace::Kv, b"shop\0b", b"22"),
            (Keyspace::Apps, b"shop", b"app record"),
        ];
        for (keyspace, key, value) in records {
            file.extend_from_slice(&[SECTION_RECORD, keyspace.id()]);
            file.extend_from_slice(&(key.len() as u32).to_be_bytes());
            file.extend_from_slice(key);
            file.extend_from_slice(&(value.len() as u32).to_be_bytes());
            file.extend_from_slice(value);
        }
        for content in [b"first block".to_vec(), vec![7u8; 300]] {
            let hash: BlockHash = Sha256::digest(&content).into();
            file.extend_from_slice(&block_head(&hash, content.len() as u64));
            file.extend_from_slice(&content);
        }
        let mut hash = blake3::Hasher::new();
        hash.update(&file);
        let end = end_bytes(3, 2, hash);
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
        assert_eq!(verified.records, 3);
        assert_eq!(verified.bytes, bytes.len() as u64);
        assert_eq!(verified.header.last_log_index, 42);
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

    #[tokio::test]
    async fn a_restore_writes_the_state_and_blocks_and_leaves_no_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.picbak");
        std::fs::write(&path, backup_bytes()).expect("write");
        let target = dir.path().join("data");
        let report = restore(&path, &target, 1 << 20).await.expect("restore");
        assert_eq!(
            (report.verified.records, report.verified.blocks, report.apps),
            (3, 2, 1)
        );
        assert!(!target.join(RESTORING_MARKER_FILE).exists());
        assert!(
            target
                .join("raft")
                .join(picloud_storage::restore::RESTORED_MARKER_FILE)
                .exists()
        );
        let state = picloud_storage::backend::SledBackend::open(
            &target.join("raft").join("state"),
            picloud_storage::backend::SledOptions {
                cache_capacity_bytes: 1 << 20,
            },
        )
        .expect("open");
        use picloud_storage::backend::Backend;
        assert_eq!(
            state.get(Keyspace::Kv, b"shop\0b").expect("get"),
            Some(b"22".to_vec())
        );
    }

    /// A damaged file is found out only at its end, after records and
    /// blocks were written: the dir is as it was again.
    #[tokio::test]
    async fn a_failed_restore_leaves_the_dir_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.picbak");
        let mut bytes = backup_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let target = dir.path().join("data");
        assert!(matches!(
            restore(&path, &target, 1 << 20).await,
            Err(BackupError::Corrupt { .. })
        ));
        assert!(!target.exists(), "a failed restore left the dir it made");
        std::fs::create_dir_all(&target).expect("mkdir");
        assert!(matches!(
            restore(&path, &target, 1 << 20).await,
            Err(BackupError::Corrupt { .. })
        ));
        let left: Vec<_> = std::fs::read_dir(&target).expect("dir").collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
