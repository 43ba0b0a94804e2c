//! `BlockStore`: this node's blocks on disk.
//!
//! ```text
//!  <data-dir>/blocks/<hh>/<64 hex>      one file per block; hh = the hash's first byte (256 dirs)
//!  <data-dir>/blocks/tmp/<n>.part       a block being written (emptied at start)
//!
//!  put: exists? ─yes─▶ touch (mtime now) ─▶ durable
//!        └no─▶ admit_bytes ─▶ gather the chunks ─▶ hash ok? ─▶ tmp/<n>.part ─▶ sync_data ─▶ rename ─▶ fsync <hh> ─▶ durable
//! ```
//!
//! (`put_hashed`, an upload's replica on its own node, skips "hash ok?":
//! the uploader hashed those very bytes.)
//!
//! A block is never visible under its final name before all its bytes are
//! durable and hash to that name: a crash, a hash mismatch or a full disk
//! leaves at most a temp file, removed on the spot or at the next start.
//! Identical content is stored once: a put of a block already here only
//! refreshes its modification time, which GC's grace is measured from (so a
//! block an upload is about to reference again is not collected under it).
//! A put and a GC removal of the same hash hold the hash's lock, so they
//! never interleave.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use picloud_storage::files::BlockHash;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::disk::{DiskFull, DiskGuard};
use crate::transport::TransportError;

/// The store's directory under the data dir.
pub const BLOCKS_DIR: &str = "blocks";
/// Temp files of blocks being written, under [`BLOCKS_DIR`].
const TMP_DIR: &str = "tmp";
/// Temp files end so; anything else in `tmp/` is left alone.
const TEMP_SUFFIX: &str = ".part";

/// Why a block was not stored or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    DiskFull(#[from] DiskFull),
    /// The bytes do not hash to the block's name (nothing was kept).
    #[error("the bytes hash to {}, not to the block's name", super::hex8(actual))]
    Corrupt { actual: BlockHash },
    /// The source sent a different number of bytes than announced.
    #[error("expected {expected} bytes, received {received}")]
    Length { expected: u64, received: u64 },
    /// The source of the bytes failed (a peer's stream).
    #[error("block source: {0}")]
    Source(#[from] TransportError),
    #[error("block storage: {0}")]
    Io(#[from] std::io::Error),
}

/// The blocks on this node's disk.
pub struct BlockStore {
    root: PathBuf,
    /// `root` held open: cached reads resolve `<hh>/<hex>` from it rather
    /// than walking the whole path each time.
    root_dir: std::os::fd::OwnedFd,
    disk: Arc<DiskGuard>,
    /// Hashes a put or a removal is working on.
    locked: Mutex<HashSet<BlockHash>>,
    unlocked: Notify,
    next_temp: AtomicU64,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// A hash's lock; released on drop.
struct HashLock<'a> {
    store: &'a BlockStore,
    hash: BlockHash,
}

impl Drop for HashLock<'_> {
    fn drop(&mut self) {
        self.store
            .locked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.hash);
        self.store.unlocked.notify_waiters();
    }
}

/// A temp file, removed on drop unless it was renamed into place.
struct Temp {
    path: PathBuf,
    kept: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Lowercase hex of a whole hash: a block's file name.
pub fn hex(hash: &BlockHash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut name = String::with_capacity(2 * hash.len());
    for byte in hash {
        name.push(char::from(DIGITS[usize::from(byte >> 4)]));
        name.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    name
}

/// The hash a block file's name spells, if it is one.
pub fn parse_hex(name: &str) -> Option<BlockHash> {
    if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hash = [0u8; 32];
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(name.get(2 * index..2 * index + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// Whether an I/O error says the disk (or the user's quota) is full.
fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

impl BlockStore {
    /// Opens (creating) `<data_dir>/blocks`, its 256 shard dirs and an
    /// empty `tmp/`: temp files left by a crash are removed.
    pub fn open(data_dir: &Path, disk: Arc<DiskGuard>) -> std::io::Result<BlockStore> {
        let root = data_dir.join(BLOCKS_DIR);
        let tmp = root.join(TMP_DIR);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        for shard in 0..=u8::MAX {
            std::fs::create_dir_all(root.join(format!("{shard:02x}")))?;
        }
        let root_dir = rustix::fs::open(
            &root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(BlockStore {
            root,
            root_dir,
            disk,
            locked: Mutex::new(HashSet::new()),
            unlocked: Notify::new(),
            next_temp: AtomicU64::new(0),
        })
    }

    /// The store's root (`<data-dir>/blocks`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn shard_dir(&self, hash: &BlockHash) -> PathBuf {
        self.root.join(&hex(hash)[..2])
    }

    fn path(&self, hash: &BlockHash) -> PathBuf {
        let name = hex(hash);
        let mut path = self.root.join(&name[..2]);
        path.push(name);
        path
    }

    async fn lock(&self, hash: BlockHash) -> HashLock<'_> {
        loop {
            let unlocked = {
                let mut locked = self.locked.lock().unwrap_or_else(|e| e.into_inner());
                if locked.insert(hash) {
                    return HashLock { store: self, hash };
                }
                // Registered before the set's lock is released, so the
                // holder's release cannot be missed.
                self.unlocked.notified()
            };
            unlocked.await;
        }
    }

    /// Whether this node holds `hash` (a stat, no read).
    pub fn has(&self, hash: &BlockHash) -> bool {
        self.path(hash).is_file()
    }

    /// Stores a block whose bytes are all in memory.
    pub async fn put_bytes(&self, hash: BlockHash, bytes: Bytes) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        self.store(hash, len, futures::stream::iter([Ok(bytes)]), Check::Hash)
            .await
    }

    /// Stores a block this process hashed to `hash` itself, from these very
    /// bytes (an upload's local replica): the hash is not taken again.
    pub async fn put_hashed(&self, hash: BlockHash, bytes: Bytes) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        self.store(
            hash,
            len,
            futures::stream::iter([Ok(bytes)]),
            Check::Trusted,
        )
        .await
    }

    /// Stores the block `hash` of `len` bytes from `chunks`, durably; a
    /// block already here is touched and the chunks are drained unread into
    /// nothing (the sender's bytes are on the wire either way).
    ///
    /// The chunks are gathered as they arrive (no copy: a block is at most
    /// `BLOCK_BYTES`) and then hashed, written, synced and renamed in ONE
    /// blocking task: an async file would cost a blocking-pool hand-off per
    /// write, which measured as most of an upload's CPU.
    pub async fn put<S>(&self, hash: BlockHash, len: u64, chunks: S) -> Result<(), StoreError>
    where
        S: Stream<Item = Result<Bytes, StoreError>> + Unpin,
    {
        self.store(hash, len, chunks, Check::Hash).await
    }

    async fn store<S>(
        &self,
        hash: BlockHash,
        len: u64,
        mut chunks: S,
        check: Check,
    ) -> Result<(), StoreError>
    where
        S: Stream<Item = Result<Bytes, StoreError>> + Unpin,
    {
        let _lock = self.lock(hash).await;
        let path = self.path(&hash);
        if touch(&path)? {
            let mut received = 0u64;
            while let Some(chunk) = chunks.next().await {
                received += chunk?.len() as u64;
            }
            if received != len {
                return Err(StoreError::Length {
                    expected: len,
                    received,
                });
            }
            return Ok(());
        }
        let _admission = self.disk.admit_bytes(len)?;
        let mut gathered = Vec::new();
        let mut received = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            received += chunk.len() as u64;
            if received > len {
                return Err(StoreError::Length {
                    expected: len,
                    received,
                });
            }
            gathered.push(chunk);
        }
        if received != len {
            return Err(StoreError::Length {
                expected: len,
                received,
            });
        }
        let number = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = Temp {
            path: self
                .root
                .join(TMP_DIR)
                .join(format!("{number}-{}{TEMP_SUFFIX}", rand::random::<u32>())),
            kept: false,
        };
        let shard = self.shard_dir(&hash);
        let written = tokio::task::spawn_blocking(move || {
            write_block(temp, &gathered, hash, check, &path, &shard)
        })
        .await
        .map_err(std::io::Error::other)?;
        match written {
            Ok(()) => Ok(()),
            Err(WriteError::Corrupt { actual }) => Err(StoreError::Corrupt { actual }),
            Err(WriteError::Io(error)) if is_disk_full(&error) => {
                Err(StoreError::DiskFull(DiskFull {
                    available_bytes: self.disk.available_bytes().unwrap_or(0),
                    reserve_bytes: self.disk.reserve_bytes(),
                }))
            }
            Err(WriteError::Io(error)) => Err(StoreError::Io(error)),
        }
    }

    /// The block `hash` opened for reading, with its first `first` bytes
    /// from `offset` (fewer when the block ends sooner); `None` when this
    /// node does not hold it.
    ///
    /// A block whose path and pages are in the kernel's caches (the usual
    /// case for a block read again) is opened and read right here, without
    /// ever waiting on the disk: a hand-off to the blocking pool is most of
    /// a small download's cost. Anything that would wait (an SD card read)
    /// goes to the blocking pool: open, size and the first read there in
    /// one task.
    pub async fn open_block(
        &self,
        hash: &BlockHash,
        offset: u64,
        first: usize,
    ) -> std::io::Result<Option<(OpenBlock, Bytes)>> {
        let name = hex(hash);
        let relative = format!("{}/{name}", &name[..2]);
        if let Some(cached) = open_cached(&self.root_dir, &relative, offset, first) {
            return Ok(cached);
        }
        let path = self.root.join(relative);
        tokio::task::spawn_blocking(move || {
            let file = match std::fs::File::open(path) {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(error),
            };
            let len = file.metadata()?.len();
            let want = (len.saturating_sub(offset)).min(first as u64) as usize;
            let bytes = read_at(&file, offset, want)?;
            Ok(Some((
                OpenBlock {
                    file: Arc::new(file),
                    len,
                },
                bytes,
            )))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Deletes this node's copy of `hash` when `still_garbage` (called
    /// under the hash's lock) says so; returns whether a file was deleted.
    pub async fn remove(
        &self,
        hash: BlockHash,
        still_garbage: impl FnOnce() -> bool,
    ) -> std::io::Result<bool> {
        let _lock = self.lock(hash).await;
        if !still_garbage() {
            return Ok(false);
        }
        match tokio::fs::remove_file(self.path(&hash)).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The blocks of shard `shard` with their modification times.
    pub fn list_shard(&self, shard: u8) -> std::io::Result<Vec<(BlockHash, SystemTime)>> {
        let mut blocks = Vec::new();
        for entry in std::fs::read_dir(self.root.join(format!("{shard:02x}")))? {
            let entry = entry?;
            let Some(hash) = entry.file_name().to_str().and_then(parse_hex) else {
                continue;
            };
            blocks.push((hash, entry.metadata()?.modified()?));
        }
        blocks.sort();
        Ok(blocks)
    }

    /// Removes temp files older than `older_than`; returns how many.
    pub fn remove_stale_temp(&self, older_than: Duration) -> std::io::Result<u64> {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in std::fs::read_dir(self.root.join(TMP_DIR))? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                continue;
            }
            let modified = entry.metadata()?.modified()?;
            if now.duration_since(modified).unwrap_or_default() >= older_than {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(removed)
    }
}

/// Why writing a block file failed.
enum WriteError {
    Corrupt { actual: BlockHash },
    Io(std::io::Error),
}

impl From<std::io::Error> for WriteError {
    fn from(error: std::io::Error) -> Self {
        WriteError::Io(error)
    }
}

/// Writes `chunks` to `temp` while hashing them, checks the hash is
/// `hash`, syncs the data, renames the file to `path` and syncs `shard`
/// (the rename is durable only once its directory is). A failure leaves no
/// file under `path` (`temp` removes itself unless kept).
/// Whether a block's bytes are hashed before they are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// From a peer or the disk: kept only if they hash to the name.
    Hash,
    /// Hashed by this process from these very bytes.
    Trusted,
}

fn write_block(
    mut temp: Temp,
    chunks: &[Bytes],
    hash: BlockHash,
    check: Check,
    path: &Path,
    shard: &Path,
) -> Result<(), WriteError> {
    use std::io::Write;
    if check == Check::Hash {
        let mut hasher = Sha256::new();
        for chunk in chunks {
            hasher.update(chunk);
        }
        let actual: BlockHash = hasher.finalize().into();
        if actual != hash {
            return Err(WriteError::Corrupt { actual });
        }
    }
    let mut file = std::fs::File::create(&temp.path)?;
    for chunk in chunks {
        file.write_all(chunk)?;
    }
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temp.path, path)?;
    temp.kept = true;
    std::fs::File::open(shard)?.sync_all()?;
    Ok(())
}

/// Sets `path`'s modification time to now; `false` when it does not exist.
fn touch(path: &Path) -> std::io::Result<bool> {
    match std::fs::File::options().write(true).open(path) {
        Ok(file) => {
            file.set_modified(SystemTime::now())?;
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// A block file open for reading at any offset.
pub struct OpenBlock {
    file: Arc<std::fs::File>,
    /// The block's length in bytes.
    pub len: u64,
}

impl OpenBlock {
    /// Up to `max` bytes at `offset` (fewer only at the block's end), in one
    /// blocking task.
    pub async fn read(&self, offset: u64, max: usize) -> std::io::Result<Bytes> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || read_at(&file, offset, max))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// [`BlockStore::open_block`] from the kernel's caches alone: `relative`
/// (under the store's `root`) resolved from the dentry cache (`RESOLVE_CACHED`) and the bytes from the
/// page cache (`RWF_NOWAIT`). `None` when any step would wait for the disk
/// (or the kernel cannot promise it would not): the caller takes the
/// blocking path, which also reports any error.
fn open_cached(
    root: &std::os::fd::OwnedFd,
    relative: &str,
    offset: u64,
    first: usize,
) -> Option<Option<(OpenBlock, Bytes)>> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use rustix::io::{Errno, ReadWriteFlags};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::CACHED | ResolveFlags::BENEATH;
    let file = match rustix::fs::openat2(root, relative, flags, Mode::empty(), resolve) {
        Ok(fd) => std::fs::File::from(fd),
        Err(Errno::NOENT) => return Some(None),
        Err(_) => return None,
    };
    let len = file.metadata().ok()?.len();
    let want = (len.saturating_sub(offset)).min(first as u64) as usize;
    let mut buffer = vec![0; want];
    let mut filled = 0;
    while filled < want {
        let mut slices = [std::io::IoSliceMut::new(&mut buffer[filled..])];
        let at = offset + filled as u64;
        match rustix::io::preadv2(&file, &mut slices, at, ReadWriteFlags::NOWAIT) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    buffer.truncate(filled);
    let block = OpenBlock {
        file: Arc::new(file),
        len,
    };
    Some(Some((block, Bytes::from(buffer))))
}

/// Up to `max` bytes of `file` at `offset`; fewer only at its end. Read
/// into the buffer's spare capacity: nothing is zeroed first.
fn read_at(file: &std::fs::File, offset: u64, max: usize) -> std::io::Result<Bytes> {
    let mut buffer = Vec::with_capacity(max);
    while buffer.len() < max {
        let at = offset + buffer.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buffer), at) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
    // The spare capacity may exceed `max`.
    buffer.truncate(max);
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fill: u8, len: usize) -> (BlockHash, Bytes) {
        let bytes = Bytes::from(vec![fill; len]);
        (Sha256::digest(&bytes).into(), bytes)
    }

    fn store(dir: &Path, reserve: u64) -> BlockStore {
        BlockStore::open(dir, Arc::new(DiskGuard::new(dir, reserve))).expect("open")
    }

    fn temp_files(store: &BlockStore) -> usize {
        std::fs::read_dir(store.root().join(TMP_DIR))
            .expect("tmp")
            .count()
    }

    #[tokio::test]
    async fn a_block_is_stored_once_and_a_second_put_only_touches_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path(), 0);
        let (hash, bytes) = block(7, 1000);
        assert!(!store.has(&hash));
        store.put_bytes(hash, bytes.clone()).await.expect("put");
        assert!(store.has(&hash));
        let path = store.path(&hash);
        assert_eq!(std::fs::read(&path).expect("read"), bytes.to_vec());
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_modified(old)
            .expect("age it");

        store.put_bytes(hash, bytes.clone()).await.expect("dedupe");
        let listed = store.list_shard(hash[0]).expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, hash);
        assert!(
            listed[0].1 > old + Duration::from_secs(1800),
            "the second put refreshed the mtime"
        );
        assert_eq!(temp_files(&store), 0);
        // Read back from an offset, the first bytes with the open.
        let (block, first) = store
            .open_block(&hash, 10, 100)
            .await
            .expect("open")
            .expect("held");
        assert_eq!(block.len, 1000);
        assert_eq!(first, bytes.slice(10..110));
        assert_eq!(
            block.read(110, 4096).await.expect("read"),
            bytes.slice(110..)
        );
        assert!(block.read(1000, 10).await.expect("at the end").is_empty());
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_their_hash_are_never_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path(), 0);
        let (hash, _) = block(1, 100);
        let (_, other) = block(2, 100);
        let error = store.put_bytes(hash, other).await.expect_err("corrupt");
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(!store.has(&hash));
        assert_eq!(temp_files(&store), 0);
        // Too few bytes for the announced length.
        let (hash, bytes) = block(3, 100);
        let short = futures::stream::iter([Ok(bytes.slice(..50))]);
        let error = store.put(hash, 100, short).await.expect_err("short");
        assert!(
            matches!(
                error,
                StoreError::Length {
                    expected: 100,
                    received: 50
                }
            ),
            "{error}"
        );
        assert!(!store.has(&hash));
        assert_eq!(temp_files(&store), 0);
    }

    #[tokio::test]
    async fn temp_files_are_cleared_at_start_and_stale_ones_on_demand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_dir = dir.path().join(BLOCKS_DIR).join(TMP_DIR);
        std::fs::create_dir_all(&store_dir).expect("mkdir");
        std::fs::write(store_dir.join("crashed.part"), b"half").expect("write");
        let opened = store(dir.path(), 0);
        assert_eq!(temp_files(&opened), 0, "a crash's temp file is gone");

        std::fs::write(store_dir.join("aborted.part"), b"half").expect("write");
        assert_eq!(
            opened
                .remove_stale_temp(Duration::from_secs(3600))
                .expect("sweep"),
            0,
            "a fresh temp file may still be written"
        );
        assert_eq!(opened.remove_stale_temp(Duration::ZERO).expect("sweep"), 1);
        assert_eq!(temp_files(&opened), 0);
    }

    #[tokio::test]
    async fn a_full_disk_refuses_the_block_before_writing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = DiskGuard::new(dir.path(), 1)
            .available_bytes()
            .expect("statvfs");
        // A reserve of all the free space but 64 KiB leaves no room for a
        // 4 MiB block (unless another program frees 4 MiB meanwhile).
        let store = store(dir.path(), free.saturating_sub(64 * 1024));
        let (hash, bytes) = block(9, 4 << 20);
        let error = store.put_bytes(hash, bytes).await.expect_err("full");
        assert!(matches!(error, StoreError::DiskFull(_)), "{error}");
        assert!(!store.has(&hash));
        assert_eq!(temp_files(&store), 0);
    }

    #[tokio::test]
    async fn a_block_reads_the_same_from_the_page_cache_and_from_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path(), 0);
        let bytes = Bytes::from((0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let hash: BlockHash = Sha256::digest(&bytes).into();
        store.put_bytes(hash, bytes.clone()).await.expect("put");
        for evicted in [false, true] {
            if evicted {
                // The block is synced, so its pages are clean: the kernel
                // drops them, and the next read has to go to the disk.
                let file = std::fs::File::open(store.path(&hash)).expect("open");
                rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
            }
            let (block, first) = store
                .open_block(&hash, 5, 200_000)
                .await
                .expect("open")
                .expect("held");
            assert_eq!(block.len, 300_000, "evicted: {evicted}");
            assert_eq!(first, bytes.slice(5..200_005), "evicted: {evicted}");
            let rest = block.read(200_005, 200_000).await.expect("read");
            assert_eq!(rest, bytes.slice(200_005..), "evicted: {evicted}");
        }
        let missing = [7; 32];
        assert!(
            store
                .open_block(&missing, 0, 10)
                .await
                .expect("open")
                .is_none()
        );
    }

    #[tokio::test]
    async fn removal_asks_under_the_lock_and_reports_what_it_did() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path(), 0);
        let (hash, bytes) = block(4, 10);
        store.put_bytes(hash, bytes).await.expect("put");
        assert!(!store.remove(hash, || false).await.expect("kept"));
        assert!(store.has(&hash));
        assert!(store.remove(hash, || true).await.expect("removed"));
        assert!(!store.has(&hash));
        assert!(!store.remove(hash, || true).await.expect("already gone"));
    }

    #[test]
    fn names_round_trip_through_hex() {
        let hash = [0xab; 32];
        assert_eq!(parse_hex(&hex(&hash)), Some(hash));
        let mut counting = [0u8; 32];
        for (index, byte) in counting.iter_mut().enumerate() {
            *byte = (index * 8 + 1) as u8;
        }
        assert_eq!(
            hex(&counting),
            "0109111921293139414951596169717981899199a1a9b1b9c1c9d1d9e1e9f1f9"
        );
        assert_eq!(parse_hex("ab"), None);
        assert_eq!(parse_hex(&"zz".repeat(32)), None);
    }
}
