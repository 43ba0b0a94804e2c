//! The narrow key-value interface storage needs, and its sled implementation.
//!
//! Everything above this module (apply, the reader, the log store, snapshots)
//! talks to a [`Backend`]; only [`SledBackend`] knows sled exists, so the
//! engine can be swapped (sled's memory and disk growth is a known risk) and
//! no sled type leaks out of this crate.
//!
//! A backend holds several [`Keyspace`]s. Keys are ordered bytewise inside a
//! keyspace. [`Backend::apply_batch`] is atomic across keyspaces: after a
//! crash either all of a batch is there or none of it, and batches are
//! recovered in order (a prefix of the batches written).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A separate ordered key space inside one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Keyspace {
    /// State-machine bookkeeping: last applied log id, membership.
    Meta = 0,
    /// Kv values, keyed by app (length-prefixed) then key.
    Kv = 1,
    /// App records, keyed by app name.
    Apps = 2,
    /// Deploy records, keyed by app (length-prefixed) then version (big endian).
    Deploys = 3,
    /// Deploy bundles, keyed like `Deploys`.
    Bundles = 4,
    /// API key records, keyed by id.
    Keys = 5,
    /// Cluster-wide records: the node id counter, removed node ids, the
    /// join secret's hash and the cluster CA (see `keys`).
    Cluster = 6,
    /// Trigger sets per app version, last fired cron slots, outbox counters
    /// (see `keys`).
    Triggers = 7,
    /// Pending trigger runs, keyed by app then id (big endian).
    Outbox = 8,
    /// Dead-lettered trigger runs, keyed like `Outbox`.
    DeadLetters = 9,
    /// Documents, keyed by app, collection, id (see `docs`).
    Docs = 10,
    /// Document index entries (see `docs`).
    DocIndex = 11,
    /// App secrets (sealed values and update times) and per-app secret
    /// counts, keyed by app (see `keys::secret_key`).
    Secrets = 12,
    /// Shared-library records ([`crate::records::LibRecord`]), keyed by name.
    Libs = 13,
    /// Shared-library files of one version, keyed like `Deploys` (name, version).
    LibFiles = 14,
    /// Durable pub/sub: per app, each topic's position record, its retained
    /// messages by sequence number, and the app's sealed realtime signing
    /// key (see `keys::topic_*`).
    Topics = 15,
    /// Raft log entries, keyed by index (big endian).
    Log = 16,
    /// Raft log bookkeeping: vote, committed, last purged.
    LogMeta = 17,
    /// File records ([`crate::files::FileRecord`]), per app, keyed by path.
    Files = 18,
    /// Files' block lists, block reference counts (over every app) and
    /// per-app usage (see `keys::file_*`).
    FileIndex = 19,
    /// Email: messages captured in dev mode (no relay), per app, keyed by id.
    Mail = 20,
    /// End users: user records, the email index and roles, per app.
    Users = 21,
    /// End users' sessions and single-use tokens (verification, reset,
    /// invitation), stored by the hash of the token.
    Sessions = 22,
    /// The people who run PiCloud: operator accounts' cluster flags and
    /// app memberships with their roles (see `operators`).
    Operators = 23,
}

impl Keyspace {
    /// The keyspaces that make up replicated state (what a snapshot carries).
    /// `Meta` is not among them: a snapshot's meta travels separately.
    pub const STATE_DATA: [Keyspace; 21] = [
        Keyspace::Kv,
        Keyspace::Apps,
        Keyspace::Deploys,
        Keyspace::Bundles,
        Keyspace::Keys,
        Keyspace::Cluster,
        Keyspace::Triggers,
        Keyspace::Outbox,
        Keyspace::DeadLetters,
        Keyspace::Docs,
        Keyspace::DocIndex,
        Keyspace::Secrets,
        Keyspace::Libs,
        Keyspace::LibFiles,
        Keyspace::Topics,
        Keyspace::Files,
        Keyspace::FileIndex,
        Keyspace::Mail,
        Keyspace::Users,
        Keyspace::Sessions,
        Keyspace::Operators,
    ];

    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Keyspace> {
        [
            Keyspace::Meta,
            Keyspace::Kv,
            Keyspace::Apps,
            Keyspace::Deploys,
            Keyspace::Bundles,
            Keyspace::Keys,
            Keyspace::Cluster,
            Keyspace::Triggers,
            Keyspace::Outbox,
            Keyspace::DeadLetters,
            Keyspace::Docs,
            Keyspace::DocIndex,
            Keyspace::Secrets,
            Keyspace::Libs,
            Keyspace::LibFiles,
            Keyspace::Topics,
            Keyspace::Log,
            Keyspace::LogMeta,
            Keyspace::Files,
            Keyspace::FileIndex,
            Keyspace::Mail,
            Keyspace::Users,
            Keyspace::Sessions,
            Keyspace::Operators,
        ]
        .into_iter()
        .find(|keyspace| keyspace.id() == id)
    }
}

/// An engine failure (I/O, corruption). Carries the engine's message.
#[derive(Debug, thiserror::Error)]
#[error("{operation} in {keyspace:?}: {message}")]
pub struct BackendError {
    pub operation: &'static str,
    pub keyspace: Option<Keyspace>,
    pub message: String,
}

/// One write of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOp {
    Insert {
        keyspace: Keyspace,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Remove {
        keyspace: Keyspace,
        key: Vec<u8>,
    },
}

/// Writes applied all-or-nothing, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn insert(&mut self, keyspace: Keyspace, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Insert {
            keyspace,
            key,
            value,
        });
    }

    pub fn remove(&mut self, keyspace: Keyspace, key: Vec<u8>) {
        self.ops.push(BatchOp::Remove { keyspace, key });
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }
}

/// A `(key, value)` pair; keys are relative to their keyspace.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One item of a scan.
pub type ScanItem = Result<KeyValue, BackendError>;

/// How many removals [`Backend::clear_keyspace`] and other bulk deletions put
/// in one batch, so deleting a large range never builds an unbounded list.
pub const BULK_DELETE_BATCH_KEYS: usize = 1024;

/// The storage engine interface.
pub trait Backend: Send + Sync + 'static {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    fn insert(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), BackendError>;

    fn remove(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), BackendError>;

    /// Keys that start with `prefix` and are `>= start`, ascending. A `start`
    /// below `prefix` means "from the first key with the prefix".
    fn scan<'a>(
        &'a self,
        keyspace: Keyspace,
        prefix: &[u8],
        start: &[u8],
    ) -> Box<dyn Iterator<Item = ScanItem> + 'a>;

    /// The greatest key starting with `prefix`, with its value.
    fn last(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Option<KeyValue>, BackendError>;

    /// Applies every write of `batch` atomically.
    fn apply_batch(&self, batch: WriteBatch) -> Result<(), BackendError>;

    /// Makes every write so far durable. Implementations serialise concurrent
    /// callers (sled 0.34 can deadlock under concurrent flushes).
    fn flush(&self) -> Result<(), BackendError>;

    /// Bytes the backend takes on disk (for metrics: sled's growth is a known risk).
    fn size_on_disk_bytes(&self) -> Result<u64, BackendError>;

    /// Removes every key of `keyspace`, in batches of
    /// [`BULK_DELETE_BATCH_KEYS`]. Not atomic as a whole.
    fn clear_keyspace(&self, keyspace: Keyspace) -> Result<(), BackendError> {
        delete_prefix(self, keyspace, &[]).map(|_| ())
    }
}

/// Deletes every key of `keyspace` starting with `prefix`, in batches of
/// [`BULK_DELETE_BATCH_KEYS`], so memory stays bounded however many keys
/// match. Returns how many keys were removed. Not atomic as a whole.
pub fn delete_prefix<B: Backend + ?Sized>(
    backend: &B,
    keyspace: Keyspace,
    prefix: &[u8],
) -> Result<u64, BackendError> {
    let mut removed = 0u64;
    loop {
        let mut batch = WriteBatch::new();
        for item in backend
            .scan(keyspace, prefix, prefix)
            .take(BULK_DELETE_BATCH_KEYS)
        {
            let (key, _) = item?;
            batch.remove(keyspace, key);
        }
        if batch.is_empty() {
            return Ok(removed);
        }
        removed += batch.len() as u64;
        backend.apply_batch(batch)?;
    }
}

/// The sled backend: one sled database, one tree, keyspaces as a one-byte
/// key prefix. A single tree makes every batch atomic without sled
/// transactions.
pub struct SledBackend {
    db: sled::Db,
    tree: sled::Tree,
    /// sled's data file, opened again so a flush can `fdatasync` it: sled
    /// 0.34's own `flush` only calls `sync_file_range` on Linux, which
    /// neither flushes the drive's write cache nor persists a grown file's
    /// size (only sled's periodic flush thread, disabled here, fsyncs).
    data_file: std::fs::File,
    /// The database directory (holds `db`, `conf` and `blobs/`).
    dir: PathBuf,
    /// Serialises flushes (concurrent flushes of one sled database can
    /// deadlock) and holds what they track between calls.
    flush_lock: Mutex<FlushState>,
    flushes: AtomicU64,
    blob_files_synced: AtomicU64,
}

/// What [`SledBackend::flush`] remembers between flushes.
#[derive(Debug, Default)]
struct FlushState {
    /// Blob files (by number) fsynced by earlier flushes and still present.
    /// A set, not a high-water mark: blob numbers are reserved in order but
    /// each file is created when its reservation is filled, so a lower
    /// number can appear after a higher one was seen.
    synced_blobs: BTreeSet<u64>,
    /// Whether the database directory itself was fsynced since open (sled
    /// creates `db`, `conf` and `blobs/` in it without syncing it).
    dir_synced: bool,
}

/// Options for [`SledBackend::open`].
#[derive(Debug, Clone, Copy)]
pub struct SledOptions {
    pub cache_capacity_bytes: u64,
}

impl SledBackend {
    /// Opens (or creates) the database at `path`. sled's own periodic flush
    /// thread is disabled: every flush goes through [`Backend::flush`], so
    /// there is only one flusher per database.
    pub fn open(path: &Path, options: SledOptions) -> Result<SledBackend, BackendError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|e| engine_error("open", None, e))?;
        let tree = db
            .open_tree("picloud")
            .map_err(|e| engine_error("open tree", None, e))?;
        let data_path = path.join("db");
        let data_file = std::fs::File::open(&data_path).map_err(|e| BackendError {
            operation: "open data file",
            keyspace: None,
            message: format!("{}: {e}", data_path.display()),
        })?;
        Ok(SledBackend {
            db,
            tree,
            data_file,
            dir: path.to_path_buf(),
            flush_lock: Mutex::new(FlushState::default()),
            flushes: AtomicU64::new(0),
            blob_files_synced: AtomicU64::new(0),
        })
    }

    /// How many flushes this backend has done since it was opened.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// How many sled blob files flushes have fsynced since open.
    pub fn blob_files_synced(&self) -> u64 {
        self.blob_files_synced.load(Ordering::Relaxed)
    }

    /// The blob files sled has written, by number (see [`Backend::flush`]
    /// for [`SledBackend`]).
    fn list_blob_files(&self) -> Result<Vec<(u64, PathBuf)>, BackendError> {
        let blob_dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(path_error("list blob dir", &blob_dir, e)),
        };
        let mut blobs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| path_error("list blob dir", &blob_dir, e))?;
            // Names that are not numbers are not sled's blobs.
            if let Some(number) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
            {
                blobs.push((number, entry.path()));
            }
        }
        Ok(blobs)
    }

    /// fsyncs the blobs of `listed` that no earlier flush synced, then the
    /// blob directory, and remembers `listed` as the synced set.
    fn sync_blob_files(
        &self,
        state: &mut FlushState,
        listed: Vec<(u64, PathBuf)>,
    ) -> Result<(), BackendError> {
        if !state.dir_synced {
            sync_dir(&self.dir).map_err(|e| path_error("sync db dir", &self.dir, e))?;
            state.dir_synced = true;
        }
        let mut synced_any = false;
        for (number, path) in &listed {
            if state.synced_blobs.contains(number) {
                continue;
            }
            match std::fs::File::open(path).and_then(|file| file.sync_all()) {
                Ok(()) => {
                    self.blob_files_synced.fetch_add(1, Ordering::Relaxed);
                    synced_any = true;
                }
                // Removed by sled since the listing (its value was replaced
                // or collected): nothing left to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(path_error("sync blob file", path, e)),
            }
        }
        if synced_any {
            // The new files' names must be durable too.
            let blob_dir = self.dir.join("blobs");
            sync_dir(&blob_dir).map_err(|e| path_error("sync blob dir", &blob_dir, e))?;
        }
        // Only what still exists is remembered: the set stays as small as
        // the blob directory.
        state.synced_blobs = listed.into_iter().map(|(number, _)| number).collect();
        Ok(())
    }
}

/// fsyncs a directory, making the names in it durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn path_error(operation: &'static str, path: &Path, error: std::io::Error) -> BackendError {
    BackendError {
        operation,
        keyspace: None,
        message: format!("{}: {error}", path.display()),
    }
}

fn engine_error(
    operation: &'static str,
    keyspace: Option<Keyspace>,
    error: sled::Error,
) -> BackendError {
    BackendError {
        operation,
        keyspace,
        message: error.to_string(),
    }
}

fn full_key(keyspace: Keyspace, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(key.len() + 1);
    full.push(keyspace.id());
    full.extend_from_slice(key);
    full
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when there is none (the prefix is all `0xff`).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut successor = prefix.to_vec();
    while let Some(last) = successor.pop() {
        if last < u8::MAX {
            successor.push(last + 1);
            return Some(successor);
        }
    }
    None
}

impl Backend for SledBackend {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.tree
            .get(full_key(keyspace, key))
            .map(|value| value.map(|v| v.to_vec()))
            .map_err(|e| engine_error("get", Some(keyspace), e))
    }

    fn insert(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.tree
            .insert(full_key(keyspace, key), value)
            .map(|_| ())
            .map_err(|e| engine_error("insert", Some(keyspace), e))
    }

    fn remove(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), BackendError> {
        self.tree
            .remove(full_key(keyspace, key))
            .map(|_| ())
            .map_err(|e| engine_error("remove", Some(keyspace), e))
    }

    fn scan<'a>(
        &'a self,
        keyspace: Keyspace,
        prefix: &[u8],
        start: &[u8],
    ) -> Box<dyn Iterator<Item = ScanItem> + 'a> {
        let full_prefix = full_key(keyspace, prefix);
        let from = if start > prefix {
            full_key(keyspace, start)
        } else {
            full_prefix.clone()
        };
        // The keyspace byte is below 0xff, so the prefix always has a successor.
        let iter = match prefix_successor(&full_prefix) {
            Some(end) if from < end => self.tree.range(from..end),
            Some(_) => return Box::new(std::iter::empty()),
            None => self.tree.range(from..),
        };
        Box::new(iter.map(move |item| match item {
            Ok((key, value)) => Ok((key[1..].to_vec(), value.to_vec())),
            Err(e) => Err(engine_error("scan", Some(keyspace), e)),
        }))
    }

    fn last(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Option<KeyValue>, BackendError> {
        let full_prefix = full_key(keyspace, prefix);
        let last = match prefix_successor(&full_prefix) {
            Some(end) => self.tree.range(full_prefix..end).next_back(),
            None => self.tree.range(full_prefix..).next_back(),
        };
        match last {
            None => Ok(None),
            Some(Ok((key, value))) => Ok(Some((key[1..].to_vec(), value.to_vec()))),
            Some(Err(e)) => Err(engine_error("last", Some(keyspace), e)),
        }
    }

    fn apply_batch(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let mut sled_batch = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Insert {
                    keyspace,
                    key,
                    value,
                } => sled_batch.insert(full_key(keyspace, &key), value),
                BatchOp::Remove { keyspace, key } => sled_batch.remove(full_key(keyspace, &key)),
            }
        }
        self.tree
            .apply_batch(sled_batch)
            .map_err(|e| engine_error("apply batch", None, e))
    }

    fn flush(&self) -> Result<(), BackendError> {
        // A poisoned lock only means another flush panicked; flushing again
        // is safe (the synced-blob set only changes after a full sync).
        let mut state = self
            .flush_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.flushes.fetch_add(1, Ordering::Relaxed);
        // sled 0.34.7 never fsyncs its blob files. A page fragment too large
        // for a quarter segment (`segment_size / MINIMUM_ITEMS_PER_SEGMENT -
        // SEG_HEADER_LEN`, ~128 KiB with the default 512 KiB segments:
        // `pagecache/logger.rs`, `over_blob_threshold`) is written by
        // `pagecache/iobuf.rs` `encapsulate` -> `pagecache/blob_io.rs`
        // `write_blob` to its own file `<db dir>/blobs/<lsn>`
        // (`Config::blob_path`: the reservation's log sequence number in
        // decimal; `create_new`, then crc, kind byte and data, never synced).
        // Only a pointer to it goes into the log that sled's flush syncs.
        //
        // The blobs are listed BEFORE sled's flush: a file listed now belongs
        // to a reservation made before the flush began, and sled's flush
        // waits for every such reservation to complete, so once it returns
        // the listed files are whole and can be synced. Files created later
        // (maybe still being written) are left for the next flush, which
        // finds them as new. Every write that returned before this flush
        // began had already created its blob file, so it is covered.
        //
        // Listing reads every name (cheap: only large values become blobs);
        // only files not synced before are fsynced. A crash before the blob
        // sync below can leave a durable pointer to a missing blob (sled's
        // recovery skips it: `LogRead::DanglingBlob`, `pagecache/iterator.rs`)
        // or to a torn one (the crc fails and recovery stops there, as at a
        // torn log tail); either way only writes this flush has not yet
        // acknowledged are lost.
        let listed = self.list_blob_files()?;
        self.db
            .flush()
            .map_err(|e| engine_error("flush", None, e))?;
        self.data_file.sync_data().map_err(|e| BackendError {
            operation: "sync data file",
            keyspace: None,
            message: e.to_string(),
        })?;
        self.sync_blob_files(&mut state, listed)
    }

    fn size_on_disk_bytes(&self) -> Result<u64, BackendError> {
        self.db
            .size_on_disk()
            .map_err(|e| engine_error("size on disk", None, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, SledBackend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = SledBackend::open(
            &dir.path().join("db"),
            SledOptions {
                cache_capacity_bytes: 1 << 20,
            },
        )
        .expect("open");
        (dir, backend)
    }

    #[test]
    fn keyspaces_are_separate_and_scans_respect_prefix_and_start() {
        let (_dir, backend) = open();
        let mut batch = WriteBatch::new();
        for key in ["a1", "a2", "a3", "b1"] {
            batch.insert(Keyspace::Kv, key.as_bytes().to_vec(), b"v".to_vec());
        }
        batch.insert(Keyspace::Apps, b"a1".to_vec(), b"other".to_vec());
        backend.apply_batch(batch).expect("batch");

        let keys = |prefix: &str, start: &str| -> Vec<String> {
            backend
                .scan(Keyspace::Kv, prefix.as_bytes(), start.as_bytes())
                .map(|item| String::from_utf8(item.expect("scan").0).expect("utf8"))
                .collect()
        };
        assert_eq!(keys("a", ""), ["a1", "a2", "a3"]);
        assert_eq!(keys("a", "a2"), ["a2", "a3"]);
        assert_eq!(keys("a", "b"), Vec::<String>::new());
        assert_eq!(keys("", ""), ["a1", "a2", "a3", "b1"]);
        assert_eq!(
            backend.get(Keyspace::Apps, b"a1").expect("get"),
            Some(b"other".to_vec())
        );
        assert_eq!(
            backend
                .last(Keyspace::Kv, b"a")
                .expect("last")
                .map(|kv| kv.0),
            Some(b"a3".to_vec())
        );
        assert_eq!(backend.last(Keyspace::Keys, b"").expect("last"), None);
    }

    #[test]
    fn delete_prefix_removes_more_than_one_batch() {
        let (_dir, backend) = open();
        let total = BULK_DELETE_BATCH_KEYS * 2 + 7;
        for i in 0..total {
            backend
                .insert(Keyspace::Kv, format!("x{i:06}").as_bytes(), b"v")
                .expect("insert");
        }
        backend.insert(Keyspace::Kv, b"y", b"v").expect("insert");
        let removed = delete_prefix(&backend, Keyspace::Kv, b"x").expect("delete");
        assert_eq!(removed, total as u64);
        let left: Vec<_> = backend.scan(Keyspace::Kv, b"", b"").collect();
        assert_eq!(left.len(), 1);
    }

    /// sled puts values over ~128 KiB in `blobs/<lsn>` files it never
    /// syncs: every flush must fsync the ones that are new, and only those.
    #[test]
    fn flush_syncs_new_blob_files_only() {
        let (dir, backend) = open();
        let blob_dir = dir.path().join("db").join("blobs");
        let count_blobs = || std::fs::read_dir(&blob_dir).expect("blob dir").count();
        // Small values stay inline: nothing to sync.
        backend
            .insert(Keyspace::Log, b"small", b"v")
            .expect("insert");
        backend.flush().expect("flush");
        assert_eq!(count_blobs(), 0);
        assert_eq!(backend.blob_files_synced(), 0);

        let big = vec![7u8; 1 << 20];
        backend
            .insert(Keyspace::Log, b"big-1", &big)
            .expect("insert");
        let blobs = count_blobs();
        assert!(blobs >= 1, "a 1 MiB value is a blob file");
        backend.flush().expect("flush");
        assert_eq!(backend.blob_files_synced(), blobs as u64);

        // Nothing new: nothing synced again.
        backend.flush().expect("flush");
        assert_eq!(backend.blob_files_synced(), blobs as u64);

        let mut batch = WriteBatch::new();
        batch.insert(Keyspace::Log, b"big-2".to_vec(), vec![8u8; 1 << 20]);
        batch.insert(Keyspace::Log, b"big-3".to_vec(), vec![9u8; 300 << 10]);
        backend.apply_batch(batch).expect("batch");
        let new_blobs = count_blobs() - blobs;
        assert!(new_blobs >= 2, "two more blob files");
        backend.flush().expect("flush");
        assert_eq!(backend.blob_files_synced(), (blobs + new_blobs) as u64);
        assert_eq!(
            backend.get(Keyspace::Log, b"big-1").expect("get"),
            Some(big)
        );
    }

    #[test]
    fn prefix_successor_handles_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
    }
}
