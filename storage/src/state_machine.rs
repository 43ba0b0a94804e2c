//! `StateMachine`: openraft's state machine over the state database, with
//! streamed snapshots.
//!
//! The state lives in its own sled database (`<dir>/state`), separate from
//! the log (`<dir>/log`), so the log's flusher and this task never flush the
//! same database concurrently. `apply` does not fsync: the log is durable,
//! and after a crash openraft re-applies from the persisted last-applied id.
//! The state is flushed every [`STATE_FLUSH_EVERY_ENTRIES`] entries (bounding
//! that replay), before a snapshot is reported (openraft purges the log
//! after a snapshot, so the state must be at least as durable), and after an
//! install.
//!
//! Snapshots are files under `<dir>/snapshots/`. `current.snap` is the one
//! snapshot kept; a new one is written to a `.tmp` file, fsynced and renamed
//! over it, which also deletes the old one (open handles keep reading it).
//!
//! Consistency choice: sled iterators are not point-in-time views, so the
//! snapshot file is written inside `get_snapshot_builder`, which openraft
//! calls on the state-machine task: no `apply` can interleave with the scan.
//! The price is that applies wait while a snapshot is written; the builder
//! handed to openraft only returns the finished file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    StoredMembership,
};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::broadcast;

use crate::apply;
use crate::backend::{Backend, WriteBatch};
use crate::command::CommandResult;
use crate::error::StorageError;
use crate::records::AppliedEvent;
use crate::snapshot::{self, Meta};
use crate::state::read_last_applied;
use crate::state_view::ViewGate;
use crate::topics::PublishedEvent;
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// The state is flushed at least this often (in applied entries).
pub const STATE_FLUSH_EVERY_ENTRIES: u64 = 10_000;

const CURRENT_SNAPSHOT_FILE: &str = "current.snap";

type RaftStorageError = openraft::StorageError<NodeId>;

pub struct StateMachine {
    /// Writes go through `state_view::Versioned`, which keeps what an open
    /// backup view needs.
    backend: Arc<dyn Backend>,
    /// Held while one entry applies or a snapshot installs: backup views
    /// open between entries.
    views: Arc<ViewGate>,
    events: broadcast::Sender<AppliedEvent>,
    /// Durable pub/sub messages, announced after their entry applied.
    published: broadcast::Sender<PublishedEvent>,
    snapshot_dir: PathBuf,
    /// The meta of `current.snap`, if there is one.
    current: Option<Meta>,
    /// Names temp files and snapshot ids uniquely within this process.
    next_file_id: u64,
    applied_since_flush: u64,
}

impl StateMachine {
    /// Opens the snapshot directory over `backend`. Leftover temp files are
    /// removed; if the current snapshot is ahead of the state (a crash
    /// during an install), it is installed again before returning.
    pub(crate) fn open(
        backend: Arc<dyn Backend>,
        views: Arc<ViewGate>,
        snapshot_dir: &Path,
        events: broadcast::Sender<AppliedEvent>,
        published: broadcast::Sender<PublishedEvent>,
    ) -> Result<StateMachine, StorageError> {
        std::fs::create_dir_all(snapshot_dir)
            .map_err(StorageError::io("create snapshot dir", snapshot_dir))?;
        remove_temp_files(snapshot_dir)?;
        let current_path = snapshot_dir.join(CURRENT_SNAPSHOT_FILE);
        let current = if current_path.exists() {
            Some(snapshot::read_meta(&current_path)?)
        } else {
            None
        };
        if let Some(meta) = &current {
            let last_applied = read_last_applied(backend.as_ref())?;
            if meta.last_log_id > last_applied {
                tracing::warn!(
                    snapshot = %meta,
                    "state is behind its snapshot (interrupted install); installing it again"
                );
                snapshot::verify_file(&current_path)?;
                snapshot::install_file(backend.as_ref(), &current_path)?;
            }
        }
        Ok(StateMachine {
            backend,
            views,
            events,
            published,
            snapshot_dir: snapshot_dir.to_path_buf(),
            current,
            next_file_id: 1,
            applied_since_flush: 0,
        })
    }

    fn current_path(&self) -> PathBuf {
        self.snapshot_dir.join(CURRENT_SNAPSHOT_FILE)
    }

    fn temp_path(&mut self, kind: &str) -> (u64, PathBuf) {
        let id = self.next_file_id;
        self.next_file_id += 1;
        (id, self.snapshot_dir.join(format!("{kind}-{id}.tmp")))
    }

    fn membership(&self) -> Result<StoredMembership<NodeId, NodeInfo>, StorageError> {
        crate::state::read_membership(self.backend.as_ref())
    }

    /// Runs `work` on the blocking pool (file I/O and fsync) while this task
    /// waits, so nothing else touches the state meanwhile.
    async fn blocking<T, F>(&self, task: &'static str, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T, StorageError> + Send + 'static,
    {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || work(backend.as_ref()))
            .await
            .map_err(|e| StorageError::TaskFailed {
                task,
                detail: e.to_string(),
            })?
    }

    fn apply_one(&mut self, entry: Entry<TypeConfig>) -> Result<CommandResult, StorageError> {
        let log_id = entry.log_id;
        match entry.payload {
            EntryPayload::Blank => {
                let mut batch = WriteBatch::new();
                apply::put_last_applied(&mut batch, &log_id)?;
                self.backend.apply_batch(batch)?;
                Ok(CommandResult::Done)
            }
            EntryPayload::Membership(membership) => {
                let mut batch = WriteBatch::new();
                let stored = StoredMembership::new(Some(log_id), membership);
                snapshot::write_applied_meta(&mut batch, Some(&log_id), &stored)?;
                self.backend.apply_batch(batch)?;
                Ok(CommandResult::Done)
            }
            EntryPayload::Normal(command) => {
                let result = apply::apply(self.backend.as_ref(), &log_id, &command)?;
                // One event per accepted app-changing command, inner ones of
                // a batch included. No receiver is fine: nobody is serving
                // apps yet.
                for app in apply::changed_apps(&command, &result) {
                    let _ = self.events.send(AppliedEvent::AppChanged {
                        app: app.to_string(),
                    });
                }
                for revoked in apply::revoked_sessions(&command, &result) {
                    let _ = self.events.send(AppliedEvent::SessionsRevoked(revoked));
                }
                for event in apply::published_events(&command, &result) {
                    let _ = self.published.send(event);
                }
                Ok(result)
            }
        }
    }

    /// Writes a snapshot of the current state and makes it the current one.
    async fn build(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let last_log_id = read_last_applied(self.backend.as_ref())?;
        let last_membership = self.membership()?;
        let (file_id, temp_path) = self.temp_path("build");
        let snapshot_id = match &last_log_id {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id.term, log_id.index, file_id),
            None => format!("none-{file_id}"),
        };
        let meta = Meta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let current_path = self.current_path();
        let snapshot_dir = self.snapshot_dir.clone();
        let file_meta = meta.clone();
        self.blocking("build snapshot", move |backend| {
            snapshot::write_file(backend, &temp_path, &file_meta)?;
            // The log is purged up to the snapshot next: the state must be
            // durable at least that far first.
            backend.flush()?;
            replace_file(&temp_path, &current_path, &snapshot_dir)
        })
        .await?;
        self.applied_since_flush = 0;
        self.current = Some(meta.clone());
        let path = self.current_path();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(StorageError::io("open snapshot", path))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }

    async fn install(
        &mut self,
        meta: &Meta,
        mut data: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        // Copy the received data into our own file first: the handle may not
        // be the one `begin_receiving_snapshot` gave out, and the copy becomes
        // the current snapshot.
        let (_, temp_path) = self.temp_path("install");
        data.flush()
            .await
            .map_err(StorageError::io("flush received snapshot", &temp_path))?;
        data.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(StorageError::io("seek received snapshot", &temp_path))?;
        let mut copy = tokio::fs::File::create_new(&temp_path)
            .await
            .map_err(StorageError::io("create snapshot", &temp_path))?;
        tokio::io::copy(&mut *data, &mut copy)
            .await
            .map_err(StorageError::io("copy snapshot", &temp_path))?;
        copy.sync_all()
            .await
            .map_err(StorageError::io("sync snapshot", &temp_path))?;
        drop(copy);
        drop(data);

        let current_path = self.current_path();
        let snapshot_dir = self.snapshot_dir.clone();
        let expected = meta.clone();
        let views = self.views.clone();
        let changed_apps = self
            .blocking("install snapshot", move |backend| {
                let _entry = views.entry();
                let file_meta = snapshot::verify_file(&temp_path)?;
                if file_meta.last_log_id != expected.last_log_id
                    || file_meta.last_membership != expected.last_membership
                {
                    return Err(StorageError::Corrupt {
                        what: "received snapshot",
                        detail: format!("file holds {file_meta}, expected {expected}"),
                    });
                }
                // Current first: if the install below is interrupted, opening
                // finds the state behind this snapshot and installs it again.
                replace_file(&temp_path, &current_path, &snapshot_dir)?;
                let apps = snapshot::install_file(backend, &current_path)?;
                remove_temp_files(&snapshot_dir)?;
                Ok(apps)
            })
            .await?;
        self.applied_since_flush = 0;
        self.current = Some(meta.clone());
        for app in changed_apps {
            let _ = self.events.send(AppliedEvent::AppChanged { app });
        }
        Ok(())
    }
}

/// Renames `from` over `to` and fsyncs the directory so the rename is durable.
fn replace_file(from: &Path, to: &Path, dir: &Path) -> Result<(), StorageError> {
    std::fs::rename(from, to).map_err(StorageError::io("rename snapshot", to))?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(StorageError::io("sync snapshot dir", dir))
}

fn remove_temp_files(dir: &Path) -> Result<(), StorageError> {
    let entries = std::fs::read_dir(dir).map_err(StorageError::io("list snapshot dir", dir))?;
    for entry in entries {
        let path = entry
            .map_err(StorageError::io("list snapshot dir", dir))?
            .path();
        if path.extension().is_some_and(|extension| extension == "tmp") {
            std::fs::remove_file(&path).map_err(StorageError::io("remove temp snapshot", &path))?;
        }
    }
    Ok(())
}

/// Hands openraft a snapshot already written by `get_snapshot_builder`.
pub struct SnapshotBuilder {
    built: Option<Result<Snapshot<TypeConfig>, StorageError>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let built = self
            .built
            .take()
            .unwrap_or(Err(StorageError::SnapshotBuilderUsed));
        built.map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>), RaftStorageError> {
        let read = || -> Result<_, StorageError> {
            Ok((
                read_last_applied(self.backend.as_ref())?,
                self.membership()?,
            ))
        };
        read().map_err(|e| e.into_raft(ErrorSubject::StateMachine, ErrorVerb::Read))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let result = {
                let views = self.views.clone();
                let _entry = views.entry();
                self.apply_one(entry)
            }
            .map_err(|e| e.into_raft(ErrorSubject::Apply(log_id), ErrorVerb::Write))?;
            results.push(result);
            self.applied_since_flush += 1;
        }
        if self.applied_since_flush >= STATE_FLUSH_EVERY_ENTRIES {
            self.blocking("flush state", |backend| Ok(backend.flush()?))
                .await
                .map_err(|e| e.into_raft(ErrorSubject::StateMachine, ErrorVerb::Write))?;
            self.applied_since_flush = 0;
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Built here, on the state-machine task, for a consistent view.
        SnapshotBuilder {
            built: Some(self.build().await),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, RaftStorageError> {
        let (_, path) = self.temp_path("receive");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(StorageError::io("create snapshot", path))
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), RaftStorageError> {
        self.install(meta, snapshot).await.map_err(|e| {
            e.into_raft(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        })
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let Some(meta) = self.current.clone() else {
            return Ok(None);
        };
        let path = self.current_path();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(StorageError::io("open snapshot", path))
            .map_err(|e| {
                e.into_raft(
                    ErrorSubject::Snapshot(Some(meta.signature())),
                    ErrorVerb::Read,
                )
            })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}
