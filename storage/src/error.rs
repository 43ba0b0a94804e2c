//! Storage errors: what went wrong, with the context to find it.
//!
//! These are fatal to the caller (I/O, corruption): deterministic rejections
//! of a command are not errors here but [`crate::ApplyError`] inside the
//! command's result.

use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::backend::BackendError;
use crate::codec::CodecError;
use crate::node::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage engine: {source}")]
    Backend {
        #[from]
        source: BackendError,
    },
    #[error("{what}: {source}")]
    Codec {
        what: &'static str,
        source: CodecError,
    },
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Stored bytes that cannot be what storage wrote.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The log flusher thread is gone (its database failed or it panicked).
    #[error("log flusher stopped")]
    FlusherStopped,
    /// A blocking-pool task (snapshot I/O, flush) panicked or was cancelled.
    #[error("{task} task failed: {detail}")]
    TaskFailed { task: &'static str, detail: String },
    /// `build_snapshot` was called twice on one builder.
    #[error("snapshot builder already used")]
    SnapshotBuilderUsed,
}

impl StorageError {
    pub(crate) fn codec(what: &'static str) -> impl FnOnce(CodecError) -> StorageError {
        move |source| StorageError::Codec { what, source }
    }

    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io {
            operation,
            path,
            source,
        }
    }

    /// Converts into openraft's error, which stops Raft on this node.
    pub fn into_raft(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> openraft::StorageError<NodeId> {
        openraft::StorageError::IO {
            source: StorageIOError::new(subject, verb, AnyError::new(&self)),
        }
    }
}
