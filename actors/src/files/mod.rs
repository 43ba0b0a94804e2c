//! Files for scripts, the gateway and the CLI: `FileService` turns a body
//! into blocks on their replicas (`picloud_cluster::Files`) and then a
//! `FilePut` in the log; it reads metadata after a read barrier and streams
//! blocks back; it signs and checks file URLs with the app's signing key.
//!
//! SKELETON (lead, issue 14): the signatures are final, the bodies are
//! part C's.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use picloud_cluster::{FilesConfig, FilesError, Node};
use picloud_lua_sdk::{FileListPage, FileStat, FileUrlOptions, HostError, UrlMethod};

use crate::realtime::Realtime;

/// What a valid signed URL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlGrant {
    pub method: UrlMethod,
    /// A PUT URL's `max_bytes`.
    pub max_bytes: Option<u64>,
    /// A PUT URL's required `Content-Type`.
    pub content_type: Option<String>,
}

/// A download: the file's stat, the range served (the whole file when no
/// range was asked), and its bytes.
pub struct FileDownload {
    pub stat: FileStat,
    pub range: Range<u64>,
    pub body: BoxStream<'static, Result<Bytes, FilesError>>,
}

/// This node's file service.
#[derive(Clone)]
pub struct FileService {
    node: Node,
    realtime: Realtime,
    config: Arc<FilesConfig>,
}

impl FileService {
    pub fn new(node: Node, realtime: Realtime, config: FilesConfig) -> FileService {
        FileService {
            node,
            realtime,
            config: Arc::new(config),
        }
    }

    /// The settings this service runs with.
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    /// Stores `body` at `path` of `app`: blocks to their replicas, then the
    /// metadata through the log. `bytes_max` (a signed URL's) tightens
    /// `file_bytes_max`. Nothing is visible unless the whole body arrived.
    pub async fn put_stream<S>(
        &self,
        app: &str,
        path: &str,
        content_type: Option<String>,
        body: S,
        bytes_max: Option<u64>,
    ) -> Result<FileStat, HostError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
    {
        let _ = (app, path, content_type, body, bytes_max, &self.node);
        todo!("part C")
    }

    /// The file's stat (linearizable, like `kv.get`), or `None`.
    pub async fn stat(&self, app: &str, path: &str) -> Result<Option<FileStat>, HostError> {
        let _ = (app, path);
        todo!("part C")
    }

    /// The file's bytes in `range` (whole when `None`), or `None` when there
    /// is no file. A range past the end fails with `range_not_satisfiable`.
    pub async fn open(
        &self,
        app: &str,
        path: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<FileDownload>, HostError> {
        let _ = (app, path, range);
        todo!("part C")
    }

    /// Deletes the file; whether it existed.
    pub async fn delete(&self, app: &str, path: &str) -> Result<bool, HostError> {
        let _ = (app, path);
        todo!("part C")
    }

    /// A page of `app`'s files under `prefix`.
    pub async fn list(
        &self,
        app: &str,
        prefix: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<FileListPage, HostError> {
        let _ = (app, prefix, limit, cursor);
        todo!("part C")
    }

    /// A signed URL (`/_/files/<app>/<path>?...`, no host).
    pub async fn sign_url(
        &self,
        app: &str,
        path: &str,
        options: FileUrlOptions,
    ) -> Result<String, HostError> {
        let _ = (app, path, options, &self.realtime);
        todo!("part C")
    }

    /// Checks a signed URL's query for `method` (`GET`, `HEAD`, `PUT`) on
    /// `path` of `app`: `url_invalid` or `url_expired` when it does not hold.
    pub async fn check_url(
        &self,
        app: &str,
        path: &str,
        query: &str,
        method: &str,
    ) -> Result<UrlGrant, HostError> {
        let _ = (app, path, query, method);
        todo!("part C")
    }
}

/// The leader's repair duty: re-replicates blocks whose replica set changed
/// and reports `files_repair_pending`. SKELETON: part C fills it; until
/// then it idles.
pub fn repair_duty(service: FileService) -> picloud_cluster::Duty {
    picloud_cluster::Duty::new("files_repair", move || {
        let _service = service.clone();
        std::future::pending::<()>()
    })
}

/// This node's block GC duty: removes blocks no file references once they
/// are older than the grace, and stale upload temp files. SKELETON: part C
/// fills it; until then it idles.
pub fn gc_duty(service: FileService) -> picloud_cluster::Duty {
    picloud_cluster::Duty::new("files_gc", move || {
        let _service = service.clone();
        std::future::pending::<()>()
    })
}
