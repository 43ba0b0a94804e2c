//! `LogStore`: the Raft log and vote on their own sled database, made durable
//! by ONE flusher thread doing group commit.
//!
//! ```text
//!  append(entries, cb) ─┬─ insert entries (readable at once) ─────────────┐
//!  save_vote(v) ────────┤                                                 │
//!                       └─ queue waiter ─▶ flusher thread: take every      │
//!                                          queued waiter, flush ONCE, ◀───┘
//!                                          ack them all
//! ```
//!
//! openraft calls `append` once per client write, so fsync-per-append caps
//! throughput at a few thousand writes/s. Here a flush covers every append
//! queued while the previous flush ran, and concurrent writers share fsyncs.
//! A waiter is queued only after its writes are in sled, and a sled flush
//! makes every earlier write durable, so acking after the flush is correct.
//! Only the flusher ever flushes this database (sled 0.34 can deadlock under
//! concurrent flushes), and sled's own periodic flush thread is disabled.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, Vote};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{
    BULK_DELETE_BATCH_KEYS, Backend, Keyspace, SledBackend, SledOptions, WriteBatch,
};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::error::StorageError;
use crate::keys;
use crate::types::{NodeId, TypeConfig};

/// How many waiters may queue for the flusher before `append` waits.
pub const FLUSH_QUEUE_CAPACITY: usize = 4096;

/// Called once the writes before it are durable (or the flush failed).
type FlushWaiter = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

type RaftStorageError = openraft::StorageError<NodeId>;

/// The Raft log. Clones share one database and one flusher.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    /// `None` only while dropping.
    flusher: Option<mpsc::Sender<FlushWaiter>>,
    flushes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    /// Closes the queue and waits for the flusher's last flush, so a dropped
    /// store has released the database (and its file lock) when drop returns.
    fn drop(&mut self) {
        self.flusher = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("log flusher thread panicked");
        }
    }
}

impl LogStore {
    /// Opens (or creates) the log database at `path` and starts its flusher
    /// thread, which ends when the last clone of the store is dropped.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<LogStore, StorageError> {
        let backend = Arc::new(SledBackend::open(
            path,
            SledOptions {
                cache_capacity_bytes,
            },
        )?);
        LogStore::with_backend(backend)
    }

    /// A log store over any backend. Nothing else may write to or flush
    /// `backend`: the store's flusher must be its only flusher.
    pub fn with_backend(backend: Arc<dyn Backend>) -> Result<LogStore, StorageError> {
        let (flusher, queue) = mpsc::channel(FLUSH_QUEUE_CAPACITY);
        let flushes = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("picloud-log-flusher".into())
            .spawn({
                let backend = backend.clone();
                let flushes = flushes.clone();
                move || run_flusher(backend, queue, flushes)
            })
            .map_err(StorageError::io("spawn log flusher", ""))?;
        let store = LogStore {
            inner: Arc::new(Inner {
                backend,
                flusher: Some(flusher),
                flushes,
                thread: Some(thread),
            }),
        };
        store.remove_purged_leftovers()?;
        Ok(store)
    }

    /// How many flushes (fsyncs) the flusher has done. For tests and metrics.
    pub fn flush_count(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    /// Makes every write so far durable, through the flusher.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.queue_waiter(Box::new(move |result| {
            // The receiver is gone only if the caller stopped waiting.
            let _ = tx.send(result);
        }))
        .await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(StorageError::Io {
                operation: "flush log",
                path: Default::default(),
                source,
            }),
            Err(_) => Err(StorageError::FlusherStopped),
        }
    }

    /// Bytes the log database takes on disk.
    pub fn size_on_disk_bytes(&self) -> Result<u64, StorageError> {
        Ok(self.inner.backend.size_on_disk_bytes()?)
    }

    async fn queue_waiter(&self, waiter: FlushWaiter) -> Result<(), StorageError> {
        let flusher = self
            .inner
            .flusher
            .as_ref()
            .ok_or(StorageError::FlusherStopped)?;
        flusher
            .send(waiter)
            .await
            .map_err(|_| StorageError::FlusherStopped)
    }

    /// Writes `entries` (readable at once) and calls `waiter` once durable.
    pub(crate) async fn append_with_waiter<I>(
        &self,
        entries: I,
        waiter: FlushWaiter,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
    {
        let mut records = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(StorageError::codec("log entry"))?;
            records.push((keys::log_key(entry.log_id.index).to_vec(), bytes));
        }
        if let [(key, bytes)] = &records[..] {
            // One entry (the common case: openraft appends each client entry
            // on its own) needs no atomic batch, which costs sled two extra
            // waited io-buffer writes.
            self.inner.backend.insert(Keyspace::Log, key, bytes)?;
        } else {
            let mut batch = WriteBatch::new();
            for (key, bytes) in records {
                batch.insert(Keyspace::Log, key, bytes);
            }
            self.inner.backend.apply_batch(batch)?;
        }
        self.queue_waiter(waiter).await
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StorageError> {
        match self.inner.backend.get(Keyspace::LogMeta, key)? {
            Some(bytes) => Ok(Some(
                codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec(what))?,
            )),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        what: &'static str,
    ) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(StorageError::codec(what))?;
        Ok(self.inner.backend.insert(Keyspace::LogMeta, key, &bytes)?)
    }

    fn entries(
        &self,
        start: u64,
        end: Option<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let mut entries = Vec::new();
        for item in self
            .inner
            .backend
            .scan(Keyspace::Log, &[], &keys::log_key(start))
        {
            let (key, bytes) = item?;
            let index = keys::index_of_log_key(&key).ok_or(StorageError::Corrupt {
                what: "log key",
                detail: format!("{} bytes", key.len()),
            })?;
            if end.is_some_and(|end| index >= end) {
                break;
            }
            entries.push(
                codec::decode(&bytes, STORED_BYTES_MAX)
                    .map_err(StorageError::codec("log entry"))?,
            );
        }
        Ok(entries)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.read_meta(keys::LOG_META_LAST_PURGED, "last purged log id")?;
        let last_entry = match self.inner.backend.last(Keyspace::Log, &[])? {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = codec::decode(&bytes, STORED_BYTES_MAX)
                    .map_err(StorageError::codec("log entry"))?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState {
            last_log_id: last_entry.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    /// Removes entries at or after `log_id.index` in one atomic batch, so no
    /// hole can appear (only uncommitted entries are truncated: few).
    fn truncate_since(&self, index: u64) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        for item in self
            .inner
            .backend
            .scan(Keyspace::Log, &[], &keys::log_key(index))
        {
            let (key, _) = item?;
            batch.remove(Keyspace::Log, key);
        }
        Ok(self.inner.backend.apply_batch(batch)?)
    }

    /// Records `log_id` as purged, then removes entries up to it from the
    /// front in bounded batches: removing a prefix never leaves a hole, and
    /// leftovers after a crash are removed at the next open.
    fn purge_upto(&self, log_id: &LogId<NodeId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        let bytes = codec::encode(log_id).map_err(StorageError::codec("last purged log id"))?;
        batch.insert(
            Keyspace::LogMeta,
            keys::LOG_META_LAST_PURGED.to_vec(),
            bytes,
        );
        self.remove_upto(log_id.index, batch)
    }

    fn remove_purged_leftovers(&self) -> Result<(), StorageError> {
        let last_purged: Option<LogId<NodeId>> =
            self.read_meta(keys::LOG_META_LAST_PURGED, "last purged log id")?;
        match last_purged {
            Some(log_id) => self.remove_upto(log_id.index, WriteBatch::new()),
            None => Ok(()),
        }
    }

    fn remove_upto(&self, index: u64, mut batch: WriteBatch) -> Result<(), StorageError> {
        loop {
            let mut done = true;
            for item in self.inner.backend.scan(Keyspace::Log, &[], &[]) {
                let (key, _) = item?;
                let at = keys::index_of_log_key(&key).ok_or(StorageError::Corrupt {
                    what: "log key",
                    detail: format!("{} bytes", key.len()),
                })?;
                if at > index {
                    break;
                }
                if batch.len() >= BULK_DELETE_BATCH_KEYS {
                    done = false;
                    break;
                }
                batch.remove(Keyspace::Log, key);
            }
            self.inner.backend.apply_batch(std::mem::take(&mut batch))?;
            if done {
                return Ok(());
            }
        }
    }
}

/// The flusher: wait for one waiter, take every other queued one, flush once,
/// ack all. Runs on its own thread because a sled flush blocks on fsync.
fn run_flusher(
    backend: Arc<dyn Backend>,
    mut queue: mpsc::Receiver<FlushWaiter>,
    flushes: Arc<AtomicU64>,
) {
    let mut waiters: Vec<FlushWaiter> = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        waiters.push(first);
        while waiters.len() < FLUSH_QUEUE_CAPACITY {
            match queue.try_recv() {
                Ok(waiter) => waiters.push(waiter),
                Err(_) => break,
            }
        }
        let result = backend.flush();
        flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = &result {
            tracing::error!(%error, waiters = waiters.len(), "log flush failed");
        }
        for waiter in waiters.drain(..) {
            waiter(match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(std::io::Error::other(error.to_string())),
            });
        }
    }
}

fn start_and_end<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(start) => *start,
        Bound::Excluded(start) => start.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(end) => end.checked_add(1),
        Bound::Excluded(end) => Some(*end),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, RaftStorageError> {
        let (start, end) = start_and_end(&range);
        self.entries(start, end)
            .map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        self.log_state()
            .map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftStorageError> {
        let write = async {
            self.write_meta(keys::LOG_META_VOTE, vote, "vote")?;
            // The vote must be durable before we answer anyone with it.
            self.flush().await
        };
        write
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftStorageError> {
        self.read_meta(keys::LOG_META_VOTE, "vote")
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Read))
    }

    /// Not flushed on its own: the next append's flush makes it durable, and
    /// a stale committed id after a crash only means re-applying less.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), RaftStorageError> {
        self.write_meta(keys::LOG_META_COMMITTED, &committed, "committed log id")
            .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, RaftStorageError> {
        let committed: Option<Option<LogId<NodeId>>> = self
            .read_meta(keys::LOG_META_COMMITTED, "committed log id")
            .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_with_waiter(
            entries,
            Box::new(move |result| callback.log_io_completed(result)),
        )
        .await
        .map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftStorageError> {
        self.truncate_since(log_id.index)
            .map_err(|e| e.into_raft(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftStorageError> {
        self.purge_upto(&log_id)
            .map_err(|e| e.into_raft(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    use crate::command::Command;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::AppDelete {
                app: format!("app-{index}"),
                revoke_keys: false,
            }),
        }
    }

    /// 64 concurrent writers, each appending one entry and waiting for its
    /// ack, must share flushes: that is where write throughput comes from.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(&dir.path().join("log"), 1 << 20).expect("open");
        const WRITERS: u64 = 64;
        const ROUNDS: u64 = 5;
        let before = store.flush_count();
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let (tx, rx) = oneshot::channel();
                    store
                        .append_with_waiter(
                            [entry(1 + round * WRITERS + writer)],
                            Box::new(move |result| {
                                let _ = tx.send(result);
                            }),
                        )
                        .await
                        .expect("append");
                    rx.await.expect("acked").expect("flushed");
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
        let flushes = store.flush_count() - before;
        let appends = WRITERS * ROUNDS;
        eprintln!("group commit: {appends} appends acked after {flushes} flushes");
        assert!(
            flushes * 4 <= appends,
            "{flushes} flushes for {appends} appends: group commit is not grouping"
        );
        let mut reader = store.clone();
        let entries = reader.try_get_log_entries(1..=appends).await.expect("read");
        assert_eq!(entries.len() as u64, appends);
    }

    #[tokio::test]
    async fn vote_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let vote = Vote::new(3, 2);
        let committed = Some(LogId::new(CommittedLeaderId::new(3, 2), 9));
        {
            let mut store = LogStore::open(&path, 1 << 20).expect("open");
            store.save_vote(&vote).await.expect("vote");
            store.save_committed(committed).await.expect("committed");
            store.flush().await.expect("flush");
        }
        // Dropping the store joined its flusher, so the database is closed.
        let mut store = LogStore::open(&path, 1 << 20).expect("reopen");
        assert_eq!(store.read_vote().await.expect("vote"), Some(vote));
        assert_eq!(store.read_committed().await.expect("committed"), committed);
    }
}
