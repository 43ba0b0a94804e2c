//! A point-in-time view of the state for backups, read while applies go on.
//!
//! sled's iterators are not point-in-time views. Instead of pausing applies
//! for the whole scan (as the openraft snapshot does, see `state_machine`),
//! a view keeps the *old value* of every key written after it opened and
//! before the scan reached it, and the scan reads those instead of sled's:
//!
//! ```text
//!  open (between two entries): applied id A, membership; scan position = start
//!  write of key k:   k ahead of the position and not kept yet? keep its value
//!                    as of A (absent = None), then write. Under the view lock.
//!  scan step:        next key n from sled; kept keys in (position, n) are
//!                    emitted from their kept value (keys deleted since A);
//!                    n itself from its kept value if kept (skipped if None:
//!                    inserted since A), else from sled; position = n.
//! ```
//!
//! Every write goes through [`Versioned`], the backend the state machine
//! writes with, and takes the view lock (uncontended when no view is open).
//! A write of a key at or behind the position needs nothing kept: the scan
//! has emitted it already. The kept values are bounded by the limit given at
//! open ([`VIEW_KEPT_BYTES_MAX`] by default); past it, or when a snapshot
//! install replaces the state, the view breaks and its scan fails with the
//! reason: a backup is refused, never silently inconsistent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::{LogId, StoredMembership};

use crate::backend::{Backend, BackendError, BatchOp, KeyValue, Keyspace, ScanItem, WriteBatch};
use crate::error::StorageError;
use crate::types::{NodeId, NodeInfo};

/// The default cap on the old values a view keeps for keys written during
/// its scan (key and value bytes). Writes past it break the view.
pub const VIEW_KEPT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Bytes counted per kept key on top of its key and value (map overhead).
const KEPT_ENTRY_OVERHEAD_BYTES: u64 = 64;

/// What the state machine and the views share: the entry gate (held while
/// one log entry applies, so a view opens between entries) and the open
/// view, if any.
#[derive(Default)]
pub(crate) struct ViewGate {
    entry: Mutex<()>,
    view: Mutex<Option<Open>>,
    next_id: AtomicU64,
}

impl ViewGate {
    /// Held by the state machine while it applies one entry or installs a
    /// snapshot.
    pub(crate) fn entry(&self) -> MutexGuard<'_, ()> {
        lock(&self.entry)
    }

    fn view(&self) -> MutexGuard<'_, Option<Open>> {
        lock(&self.view)
    }
}

/// A poisoned lock only means a panic elsewhere; the data under it stays
/// consistent (every change is a single assignment or map operation).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The open view's bookkeeping.
struct Open {
    id: u64,
    /// Keyspaces before `done` (in `Keyspace::STATE_DATA` order) are
    /// scanned; in keyspace `done`, keys up to `last` (inclusive) are.
    done: usize,
    last: Option<Vec<u8>>,
    /// The values at the view of keys written since, ahead of the scan.
    kept: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>,
    kept_bytes: u64,
    limit: u64,
    broken: Option<String>,
}

impl Open {
    fn ahead(&self, index: usize, key: &[u8]) -> bool {
        index > self.done
            || (index == self.done && self.last.as_deref().is_none_or(|last| key > last))
    }

    /// Keeps the value of `key` at the view before it is written, when the
    /// scan has not reached it yet.
    fn keep(
        &mut self,
        inner: &dyn Backend,
        keyspace: Keyspace,
        key: &[u8],
    ) -> Result<(), BackendError> {
        if self.broken.is_some() {
            return Ok(());
        }
        let Some(index) = state_index(keyspace) else {
            return Ok(());
        };
        if !self.ahead(index, key) || self.kept.contains_key(&(index, key.to_vec())) {
            return Ok(());
        }
        let old = inner.get(keyspace, key)?;
        self.kept_bytes += kept_bytes(key, old.as_deref());
        if self.kept_bytes > self.limit {
            self.break_with(format!(
                "writes during the backup changed more than {} MiB the backup had not read yet",
                self.limit / (1024 * 1024)
            ));
            return Ok(());
        }
        self.kept.insert((index, key.to_vec()), old);
        Ok(())
    }

    fn break_with(&mut self, reason: String) {
        self.broken = Some(reason);
        self.kept = BTreeMap::new();
        self.kept_bytes = 0;
    }
}

/// What one kept key counts against the limit.
fn kept_bytes(key: &[u8], old: Option<&[u8]>) -> u64 {
    key.len() as u64 + old.map_or(0, |value| value.len() as u64) + KEPT_ENTRY_OVERHEAD_BYTES
}

fn state_index(keyspace: Keyspace) -> Option<usize> {
    Keyspace::STATE_DATA.iter().position(|k| *k == keyspace)
}

/// The backend the state machine writes through: `inner`, plus the old
/// values an open view needs.
pub(crate) struct Versioned {
    inner: Arc<dyn Backend>,
    gate: Arc<ViewGate>,
}

impl Versioned {
    pub(crate) fn new(inner: Arc<dyn Backend>, gate: Arc<ViewGate>) -> Versioned {
        Versioned { inner, gate }
    }
}

impl Backend for Versioned {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(keyspace, key)
    }

    fn insert(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        let mut view = self.gate.view();
        if let Some(open) = view.as_mut() {
            open.keep(self.inner.as_ref(), keyspace, key)?;
        }
        self.inner.insert(keyspace, key, value)
    }

    fn remove(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), BackendError> {
        let mut view = self.gate.view();
        if let Some(open) = view.as_mut() {
            open.keep(self.inner.as_ref(), keyspace, key)?;
        }
        self.inner.remove(keyspace, key)
    }

    fn scan<'a>(
        &'a self,
        keyspace: Keyspace,
        prefix: &[u8],
        start: &[u8],
    ) -> Box<dyn Iterator<Item = ScanItem> + 'a> {
        self.inner.scan(keyspace, prefix, start)
    }

    fn last(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Option<KeyValue>, BackendError> {
        self.inner.last(keyspace, prefix)
    }

    fn apply_batch(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let mut view = self.gate.view();
        if let Some(open) = view.as_mut() {
            for op in batch.ops() {
                let (BatchOp::Insert { keyspace, key, .. } | BatchOp::Remove { keyspace, key }) =
                    op;
                open.keep(self.inner.as_ref(), *keyspace, key)?;
            }
        }
        self.inner.apply_batch(batch)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.inner.flush()
    }

    fn size_on_disk_bytes(&self) -> Result<u64, BackendError> {
        self.inner.size_on_disk_bytes()
    }

    /// Replacing a whole keyspace (a snapshot install) breaks an open view:
    /// keeping every old value would be unbounded.
    fn clear_keyspace(&self, keyspace: Keyspace) -> Result<(), BackendError> {
        if state_index(keyspace).is_some()
            && let Some(open) = self.gate.view().as_mut()
        {
            open.break_with("this node installed a snapshot from the leader meanwhile".to_string());
        }
        self.inner.clear_keyspace(keyspace)
    }
}

/// A view of the whole state as of one applied log id (see the module doc).
/// One at a time per node; closed when dropped.
pub struct StateView {
    gate: Arc<ViewGate>,
    backend: Arc<dyn Backend>,
    id: u64,
    /// The last entry applied at the view, and the membership then.
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, NodeInfo>,
}

/// Why a view could not open or its scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("another backup is reading this node's state")]
    Busy,
    /// Writes during the scan kept too much, or the state was replaced.
    #[error("{0}")]
    Broken(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl From<BackendError> for ViewError {
    fn from(error: BackendError) -> ViewError {
        ViewError::Storage(error.into())
    }
}

impl StateView {
    /// Opens a view between two entries. `read_meta` reads the applied id
    /// and membership while no entry applies.
    pub(crate) fn open(
        gate: Arc<ViewGate>,
        backend: Arc<dyn Backend>,
        kept_bytes_max: u64,
        read_meta: impl FnOnce(
            &dyn Backend,
        ) -> Result<
            (Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>),
            StorageError,
        >,
    ) -> Result<StateView, ViewError> {
        let _entry = gate.entry();
        let mut view = gate.view();
        if view.is_some() {
            return Err(ViewError::Busy);
        }
        let (last_applied, membership) = read_meta(backend.as_ref())?;
        let id = gate.next_id.fetch_add(1, Ordering::Relaxed);
        *view = Some(Open {
            id,
            done: 0,
            last: None,
            kept: BTreeMap::new(),
            kept_bytes: 0,
            limit: kept_bytes_max,
            broken: None,
        });
        drop(view);
        Ok(StateView {
            gate: gate.clone(),
            backend,
            id,
            last_applied,
            membership,
        })
    }

    /// Calls `emit` with every record of the state as of the view, keyspace
    /// by keyspace in `Keyspace::STATE_DATA` order, keys ascending. `emit`
    /// runs without the view lock held (it may block on a slow reader; the
    /// writes meanwhile only keep old values). Blocking.
    pub fn scan<E>(
        &self,
        mut emit: impl FnMut(Keyspace, &[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), ScanError<E>> {
        let mut out: Vec<KeyValue> = Vec::new();
        for (index, keyspace) in Keyspace::STATE_DATA.into_iter().enumerate() {
            let mut records = self.backend.scan(keyspace, &[], &[]);
            loop {
                let finished = {
                    let mut view = self.gate.view();
                    let open = view
                        .as_mut()
                        .filter(|open| open.id == self.id)
                        .ok_or_else(|| ScanError::View(ViewError::Busy))?;
                    if let Some(reason) = &open.broken {
                        return Err(ScanError::View(ViewError::Broken(reason.clone())));
                    }
                    let next = records
                        .next()
                        .transpose()
                        .map_err(|e| ScanError::View(e.into()))?;
                    step(open, index, next, &mut out)
                };
                for (key, value) in out.drain(..) {
                    emit(keyspace, &key, &value).map_err(ScanError::Emit)?;
                }
                if finished {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// One scan step in keyspace `index` with sled's next record (`None` at the
/// keyspace's end): moves what to emit into `out` and advances the
/// position. Returns whether the keyspace is finished.
fn step(open: &mut Open, index: usize, next: Option<KeyValue>, out: &mut Vec<KeyValue>) -> bool {
    // Kept keys before `next`: the scan passes them now. Those with a value
    // were deleted since the view (sled no longer has them).
    let upper = next.as_ref().map(|(key, _)| key.as_slice());
    while let Some(entry) = open.kept.first_entry() {
        let (kept_index, kept_key) = entry.key();
        if *kept_index != index || upper.is_some_and(|upper| kept_key.as_slice() >= upper) {
            break;
        }
        let ((_, key), old) = entry.remove_entry();
        open.kept_bytes = open
            .kept_bytes
            .saturating_sub(kept_bytes(&key, old.as_deref()));
        if let Some(value) = old {
            out.push((key, value));
        }
    }
    match next {
        Some((key, value)) => {
            match open.kept.remove(&(index, key.clone())) {
                Some(old) => {
                    open.kept_bytes = open
                        .kept_bytes
                        .saturating_sub(kept_bytes(&key, old.as_deref()));
                    if let Some(old) = old {
                        out.push((key.clone(), old));
                    }
                }
                None => out.push((key.clone(), value)),
            }
            open.done = index;
            open.last = Some(key);
            false
        }
        None => {
            open.done = index + 1;
            open.last = None;
            true
        }
    }
}

/// Why [`StateView::scan`] stopped.
#[derive(Debug)]
pub enum ScanError<E> {
    View(ViewError),
    /// `emit` failed.
    Emit(E),
}

impl Drop for StateView {
    fn drop(&mut self) {
        let mut view = self.gate.view();
        if view.as_ref().is_some_and(|open| open.id == self.id) {
            *view = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::backend::{SledBackend, SledOptions};

    type Model = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

    const KEYSPACES: [Keyspace; 3] = [Keyspace::Kv, Keyspace::Docs, Keyspace::Files];

    struct Fixture {
        _dir: tempfile::TempDir,
        inner: Arc<dyn Backend>,
        gate: Arc<ViewGate>,
        versioned: Versioned,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn Backend> = Arc::new(
            SledBackend::open(
                &dir.path().join("db"),
                SledOptions {
                    cache_capacity_bytes: 1 << 20,
                },
            )
            .expect("open"),
        );
        let gate = Arc::new(ViewGate::default());
        let versioned = Versioned::new(inner.clone(), gate.clone());
        Fixture {
            _dir: dir,
            inner,
            gate,
            versioned,
        }
    }

    fn open(fixture: &Fixture, limit: u64) -> Result<StateView, ViewError> {
        StateView::open(fixture.gate.clone(), fixture.inner.clone(), limit, |_| {
            Ok((None, StoredMembership::default()))
        })
    }

    fn key(rng: &mut StdRng) -> Vec<u8> {
        format!("k{:03}", rng.random_range(0..200)).into_bytes()
    }

    /// One random write through the versioned backend, mirrored in `model`.
    fn random_write(rng: &mut StdRng, backend: &dyn Backend, model: &mut Model) {
        let keyspace = KEYSPACES[rng.random_range(0..KEYSPACES.len())];
        match rng.random_range(0..4) {
            0 => {
                let key = key(rng);
                backend.remove(keyspace, &key).expect("remove");
                model.remove(&(keyspace.id(), key));
            }
            1 => {
                let mut batch = WriteBatch::new();
                for _ in 0..rng.random_range(1..6) {
                    let key = key(rng);
                    if rng.random_bool(0.3) {
                        batch.remove(keyspace, key.clone());
                        model.remove(&(keyspace.id(), key));
                    } else {
                        let value = rng.random::<u64>().to_be_bytes().to_vec();
                        batch.insert(keyspace, key.clone(), value.clone());
                        model.insert((keyspace.id(), key), value);
                    }
                }
                backend.apply_batch(batch).expect("batch");
            }
            _ => {
                let key = key(rng);
                let value = rng.random::<u64>().to_be_bytes().to_vec();
                backend.insert(keyspace, &key, &value).expect("insert");
                model.insert((keyspace.id(), key), value);
            }
        }
    }

    fn in_scan_order(model: &Model) -> Vec<(Keyspace, Vec<u8>, Vec<u8>)> {
        let mut records = Vec::new();
        for keyspace in Keyspace::STATE_DATA {
            for ((id, key), value) in model {
                if *id == keyspace.id() {
                    records.push((keyspace, key.clone(), value.clone()));
                }
            }
        }
        records
    }

    /// Writes between every two records the scan emits (inserts, updates,
    /// deletes, batches, in keyspaces before, at and after the scan's
    /// position): the scan still yields exactly the state at the view.
    #[test]
    fn the_scan_sees_the_state_at_the_view_whatever_is_written_during_it() {
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let fixture = fixture();
            let mut model = Model::new();
            for _ in 0..150 {
                random_write(&mut rng, &fixture.versioned, &mut model);
            }
            let at_view = in_scan_order(&model);
            let view = open(&fixture, VIEW_KEPT_BYTES_MAX).expect("view");
            let mut seen = Vec::new();
            view.scan(|keyspace, key, value| {
                seen.push((keyspace, key.to_vec(), value.to_vec()));
                for _ in 0..rng.random_range(0..4) {
                    random_write(&mut rng, &fixture.versioned, &mut model);
                }
                Ok::<(), ()>(())
            })
            .expect("scan");
            assert_eq!(seen, at_view, "seed {seed}");
            drop(view);
            // The writes all landed, and the next view sees them.
            let view = open(&fixture, VIEW_KEPT_BYTES_MAX).expect("second view");
            let mut now = Vec::new();
            view.scan(|keyspace, key, value| {
                now.push((keyspace, key.to_vec(), value.to_vec()));
                Ok::<(), ()>(())
            })
            .expect("scan");
            assert_eq!(now, in_scan_order(&model), "seed {seed}");
        }
    }

    /// The same with a real writer thread racing the scan.
    #[test]
    fn a_concurrent_writer_does_not_change_what_the_scan_yields() {
        let fixture = Arc::new(fixture());
        let mut rng = StdRng::seed_from_u64(7);
        let mut model = Model::new();
        for _ in 0..2000 {
            random_write(&mut rng, &fixture.versioned, &mut model);
        }
        let at_view = in_scan_order(&model);
        let view = open(&fixture, VIEW_KEPT_BYTES_MAX).expect("view");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (fixture, stop) = (fixture.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(8);
                let mut model = Model::new();
                let mut writes = 0u32;
                while !stop.load(Ordering::Relaxed) && writes < 200_000 {
                    random_write(&mut rng, &fixture.versioned, &mut model);
                    writes += 1;
                }
                writes
            })
        };
        let mut seen = Vec::new();
        view.scan(|keyspace, key, value| {
            seen.push((keyspace, key.to_vec(), value.to_vec()));
            std::thread::yield_now();
            Ok::<(), ()>(())
        })
        .expect("scan");
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().expect("writer");
        assert!(writes > 0);
        assert_eq!(seen, at_view);
    }

    #[test]
    fn writes_past_the_limit_break_the_view_with_a_reason() {
        let fixture = fixture();
        for n in 0..10u32 {
            let key = format!("k{n}");
            fixture
                .versioned
                .insert(Keyspace::Kv, key.as_bytes(), &[0u8; 1000])
                .expect("insert");
        }
        let view = open(&fixture, 4 * 1024).expect("view");
        let result = view.scan(|_, _, _| {
            // Rewriting every key ahead keeps ~10 KB of old values.
            for n in 0..10u32 {
                let key = format!("k{n}");
                fixture
                    .versioned
                    .insert(Keyspace::Kv, key.as_bytes(), &[1u8; 1000])
                    .expect("insert");
            }
            Ok::<(), ()>(())
        });
        match result {
            Err(ScanError::View(ViewError::Broken(reason))) => {
                assert!(reason.contains("changed more than"), "{reason}")
            }
            other => panic!("expected a broken view, got {other:?}"),
        }
    }

    #[test]
    fn a_snapshot_install_breaks_the_view() {
        let fixture = fixture();
        fixture
            .versioned
            .insert(Keyspace::Kv, b"a", b"1")
            .expect("insert");
        fixture
            .versioned
            .insert(Keyspace::Kv, b"b", b"2")
            .expect("insert");
        let view = open(&fixture, VIEW_KEPT_BYTES_MAX).expect("view");
        let result = view.scan(|_, _, _| fixture.versioned.clear_keyspace(Keyspace::Kv));
        assert!(
            matches!(result, Err(ScanError::View(ViewError::Broken(ref reason))) if reason.contains("snapshot")),
            "{result:?}"
        );
    }

    #[test]
    fn one_view_at_a_time_and_dropping_it_closes_it() {
        let fixture = fixture();
        let view = open(&fixture, VIEW_KEPT_BYTES_MAX).expect("view");
        assert!(matches!(
            open(&fixture, VIEW_KEPT_BYTES_MAX),
            Err(ViewError::Busy)
        ));
        drop(view);
        let again = open(&fixture, VIEW_KEPT_BYTES_MAX).expect("a new view after the drop");
        // With no view open, writes keep nothing.
        drop(again);
        fixture
            .versioned
            .insert(Keyspace::Kv, b"x", b"1")
            .expect("insert");
        assert!(fixture.gate.view().is_none());
    }
}
