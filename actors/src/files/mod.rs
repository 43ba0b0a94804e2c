//! Files for scripts, the gateway and the CLI: `FileService` turns a body
//! into blocks on their replicas (`picloud_cluster::Files`) and then a
//! `FilePut` in the log; it reads metadata after a read barrier and streams
//! blocks back; it signs and checks file URLs with the app's signing key.
//!
//! ```text
//!  put_stream: path, type, app, quota pre-check ─▶ Files::upload (blocks on
//!              a majority of their replicas) ─▶ Node::write(FilePut) ─▶ stat
//!  stat/open/list: read_barrier ─▶ reader.file / files_list ─▶ Files::read
//! ```
//!
//! Nothing is visible until `FilePut` commits, so an upload that fails
//! half-way (a short body, a timeout, a replica gone) leaves only orphan
//! blocks, which GC collects after its grace.
//!
//! # Layout
//!
//! - `mod.rs`: [`FileService`], the stat and range rules, and the codes of
//!   [`FilesError`] ([`files_host_error`]).
//! - `url`: signed URLs, pure (sign, verify, path encoding).
//! - `repair`: `plan_repair` (pure) and the leader's `files_repair` duty.
//! - `gc`: the `files_gc` duty of every node.

use std::io::ErrorKind;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use picloud_cluster::{FilesConfig, FilesError, Node};
use picloud_lua_sdk::{
    Code, FileData, FileListPage, FileStat, FileUrlOptions, HostError, UrlMethod,
};
use picloud_storage::files::{
    BlockHash, CONTENT_TYPE_BYTES_MAX, DEFAULT_CONTENT_TYPE, FileLimits, FileRecord,
    PATH_BYTES_MAX, validate_path,
};
use picloud_storage::{Command, CommandResult};

use crate::error::{apply_host_error, cluster_host_error, storage_error, unexpected};
use crate::realtime::Realtime;

pub mod gc;
pub mod repair;
pub mod url;

pub use gc::gc_duty;
pub use repair::repair_duty;

/// The most files one `list` page holds (`files.list{limit=}`, the admin
/// API's `limit`).
pub const FILES_LIST_LIMIT_MAX: usize = 1_000;

/// How often a read retries when the file is replaced between reading its
/// record and its block list (each try is two local reads).
const LOCATE_ATTEMPTS_MAX: usize = 3;

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

/// A file's record and its block list (empty when inline), read together.
type Located = (FileRecord, Arc<[BlockHash]>);

/// Counters of this node's file service, for `/_/metrics`.
#[derive(Debug, Default)]
struct FilesStats {
    /// Block files GC removed since start.
    gc_removed: AtomicU64,
}

/// This node's file service.
#[derive(Clone)]
pub struct FileService {
    node: Node,
    realtime: Realtime,
    config: Arc<FilesConfig>,
    stats: Arc<FilesStats>,
    /// The chain depth of the `files` trigger runs this service's writes
    /// fire (1; a trigger run's writes go through [`FileService::in_chain`]).
    depth: u32,
}

impl FileService {
    pub fn new(node: Node, realtime: Realtime, config: FilesConfig) -> FileService {
        FileService {
            node,
            realtime,
            config: Arc::new(config),
            stats: Arc::default(),
            depth: 1,
        }
    }

    /// This service for the writes of a trigger run at `run_depth`: the
    /// `files` triggers they fire run at `run_depth + 1`, so a run that
    /// writes the files it watches ends at `chain_depth_max` (a dead
    /// letter), as kv and document writes do.
    pub fn in_chain(&self, run_depth: u32) -> FileService {
        FileService {
            depth: run_depth.saturating_add(1),
            ..self.clone()
        }
    }

    /// The settings this service runs with.
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    /// Block files this node's GC removed since it started
    /// (`picloud_files_gc_removed_total`).
    pub fn gc_removed_total(&self) -> u64 {
        self.stats.gc_removed.load(Ordering::Relaxed)
    }

    /// Stores `body` at `path` of `app`: blocks to their replicas, then the
    /// metadata through the log. `bytes_max` (a signed URL's) tightens
    /// `file_bytes_max`. Nothing is visible unless the whole body arrived.
    ///
    /// A body that ends before the length its sender announced must end
    /// with an `Err` of kind [`ErrorKind::UnexpectedEof`] (the gateway,
    /// which knows `Content-Length`, makes it): that is `upload_incomplete`.
    /// Kind `TimedOut` (a body too slow for the gateway's timing) is
    /// `body_timeout`; any other body error `bad_body`. The whole upload
    /// must commit within `files_upload_duration_max_ms` (else `timeout`,
    /// nothing proposed), which is what lets GC's grace be safe.
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
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.files_upload_duration_max_ms);
        check_path(path)?;
        let content_type = content_type_or_default(content_type)?;
        let limits = FileLimits {
            file_bytes_max: self.config.file_bytes_max,
            app_bytes_max: self.config.files_bytes_per_app_max,
            app_files_max: self.config.files_per_app_max,
        };
        let room = self.room(app, path, &limits)?;
        let file_max = limits.file_bytes_max.min(bytes_max.unwrap_or(u64::MAX));
        let upload = self.node.files().upload(body, file_max.min(room));
        let uploaded = match tokio::time::timeout_at(deadline, upload).await {
            Ok(Ok(uploaded)) => uploaded,
            Ok(Err(FilesError::TooLarge { .. })) if room < file_max => {
                return Err(quota_exceeded(app, "bytes", limits.app_bytes_max));
            }
            Ok(Err(error)) => return Err(files_host_error(error)),
            Err(_) => return Err(upload_timeout(&self.config)),
        };
        // The cap is what makes GC's grace safe: past it, blocks GC may
        // already have judged unreferenced must not be committed.
        if tokio::time::Instant::now() >= deadline {
            return Err(upload_timeout(&self.config));
        }
        let now = now_ms();
        let stat = FileStat {
            path: path.to_string(),
            size: uploaded.size,
            content_type: content_type.clone(),
            etag: etag(&uploaded.sha256),
            updated_ms: now,
        };
        let result = self
            .node
            .write(Command::FilePut {
                app: app.to_string(),
                path: path.to_string(),
                size: uploaded.size,
                content_type,
                sha256: uploaded.sha256,
                blocks: uploaded.blocks,
                inline: uploaded.inline,
                limits,
                depth: self.depth,
                now_ms: now,
            })
            .await
            .map_err(cluster_host_error)?;
        match result {
            CommandResult::FileWritten { .. } => Ok(stat),
            CommandResult::Rejected(error) => Err(apply_host_error(error)),
            other => Err(unexpected(&other)),
        }
    }

    /// The bytes an upload to `path` of `app` may take before the app's
    /// quota is hit, from local (possibly stale) state: a cheap check that
    /// stops a hopeless upload before its blocks are stored. Apply checks
    /// the quota again, authoritatively. Fails at once with `app_not_found`
    /// or, for a new file of an app at its file count, `quota_exceeded`.
    fn room(&self, app: &str, path: &str, limits: &FileLimits) -> Result<u64, HostError> {
        let reader = self.node.reader();
        if reader.app(app).map_err(storage_error)?.is_none() {
            return Err(HostError::new(
                Code::AppNotFound,
                format!("app {app} not found"),
            ));
        }
        let usage = reader.files_usage(app).map_err(storage_error)?;
        let replaced = reader
            .file(app, path)
            .map_err(storage_error)?
            .map(|r| r.size);
        if replaced.is_none() && usage.files >= limits.app_files_max {
            return Err(quota_exceeded(app, "files", limits.app_files_max));
        }
        let used = usage.bytes.saturating_sub(replaced.unwrap_or(0));
        Ok(limits.app_bytes_max.saturating_sub(used))
    }

    /// The file's stat (linearizable, like `kv.get`), or `None`.
    pub async fn stat(&self, app: &str, path: &str) -> Result<Option<FileStat>, HostError> {
        check_path(path)?;
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        let record = self.node.reader().file(app, path).map_err(storage_error)?;
        Ok(record.map(|record| stat_of(path, &record)))
    }

    /// The file's bytes in `range` (whole when `None`), or `None` when there
    /// is no file. A range that starts at or past the end (or is empty)
    /// fails with `range_not_satisfiable`; its end is clamped to the size,
    /// so `start..u64::MAX` is "from `start` to the end". A suffix range
    /// (`bytes=-n`) needs the size: resolve it against [`FileService::stat`].
    pub async fn open(
        &self,
        app: &str,
        path: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<FileDownload>, HostError> {
        check_path(path)?;
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        let mut served = 0..0;
        let located = self.locate(app, path, |record| {
            served = served_range(record.size, range.clone()).ok_or_else(|| {
                HostError::new(
                    Code::RangeNotSatisfiable,
                    format!(
                        "the file is {} bytes; the range is past its end",
                        record.size
                    ),
                )
            })?;
            Ok(())
        })?;
        let Some((record, blocks)) = located else {
            return Ok(None);
        };
        let body = self.body(&record, blocks, served.clone());
        Ok(Some(FileDownload {
            stat: stat_of(path, &record),
            range: served,
            body,
        }))
    }

    /// `files.get`: the whole file, or `None`; over `bytes_max` fails with
    /// `file_too_large` before a block is read.
    pub async fn get_whole(
        &self,
        app: &str,
        path: &str,
        bytes_max: u64,
    ) -> Result<Option<FileData>, HostError> {
        check_path(path)?;
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        let located = self.locate(app, path, |record| {
            if record.size > bytes_max {
                return Err(HostError::new(
                    Code::FileTooLarge,
                    format!(
                        "{path} is {} bytes; files.get reads at most {bytes_max} \
                         (file_inline_read_max): stream it through files.url",
                        record.size
                    ),
                ));
            }
            Ok(())
        })?;
        let Some((record, blocks)) = located else {
            return Ok(None);
        };
        let size = record.size;
        let chunks: Vec<Bytes> = self
            .body(&record, blocks, 0..size)
            .map_err(files_host_error)
            .try_collect()
            .await?;
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        for chunk in chunks {
            data.extend_from_slice(&chunk);
        }
        Ok(Some(FileData {
            stat: stat_of(path, &record),
            data,
        }))
    }

    /// The record and block list of the file at `path` (after the caller's
    /// read barrier), with `check` run on the record before the block list
    /// is read. The two are separate reads: if the file was replaced in
    /// between, they are read again.
    fn locate(
        &self,
        app: &str,
        path: &str,
        mut check: impl FnMut(&FileRecord) -> Result<(), HostError>,
    ) -> Result<Option<Located>, HostError> {
        let reader = self.node.reader();
        for _ in 0..LOCATE_ATTEMPTS_MAX {
            let Some(record) = reader.file(app, path).map_err(storage_error)? else {
                return Ok(None);
            };
            check(&record)?;
            if record.inline.is_some() {
                return Ok(Some((record, Arc::from([]))));
            }
            let blocks = reader.file_blocks(app, path).map_err(storage_error)?;
            let again = reader.file(app, path).map_err(storage_error)?;
            match again {
                None => return Ok(None),
                Some(again)
                    if again.sha256 == record.sha256
                        && again.size == record.size
                        && blocks.len() == record.blocks as usize =>
                {
                    return Ok(Some((record, blocks.into())));
                }
                Some(_) => continue,
            }
        }
        Err(HostError::new(
            Code::Unavailable,
            format!("{path} kept changing while it was read; retry"),
        ))
    }

    /// The bytes `range` (already checked against the size) of a file.
    fn body(
        &self,
        record: &FileRecord,
        blocks: Arc<[BlockHash]>,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes, FilesError>> {
        match &record.inline {
            Some(inline) => {
                let start = usize::try_from(range.start).unwrap_or(usize::MAX);
                let end = usize::try_from(range.end).unwrap_or(usize::MAX);
                let bytes = Bytes::copy_from_slice(inline.get(start..end).unwrap_or(&[]));
                futures::stream::once(std::future::ready(Ok(bytes))).boxed()
            }
            None => self.node.files().read(blocks, record.size, range),
        }
    }

    /// Deletes the file; whether it existed.
    pub async fn delete(&self, app: &str, path: &str) -> Result<bool, HostError> {
        check_path(path)?;
        let result = self
            .node
            .write(Command::FileDelete {
                app: app.to_string(),
                path: path.to_string(),
                depth: self.depth,
                now_ms: now_ms(),
            })
            .await
            .map_err(cluster_host_error)?;
        match result {
            CommandResult::FileDeleted { existed } => Ok(existed),
            CommandResult::Rejected(error) => Err(apply_host_error(error)),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of `app`'s files under `prefix`, in path order; `limit` is 1
    /// to [`FILES_LIST_LIMIT_MAX`]. The cursor (base64url of the page's
    /// last path) is `None` on the last page.
    pub async fn list(
        &self,
        app: &str,
        prefix: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<FileListPage, HostError> {
        if limit == 0 || limit > FILES_LIST_LIMIT_MAX {
            return Err(HostError::new(
                Code::InvalidLimit,
                format!("files.list limit must be 1 to {FILES_LIST_LIMIT_MAX}, got {limit}"),
            ));
        }
        if prefix.len() > PATH_BYTES_MAX {
            return Err(HostError::new(
                Code::InvalidPath,
                format!(
                    "the prefix is {} bytes; paths have at most {PATH_BYTES_MAX}",
                    prefix.len()
                ),
            ));
        }
        let after = cursor.as_deref().map(decode_cursor).transpose()?;
        self.node.read_barrier().await.map_err(cluster_host_error)?;
        // One more than asked tells whether another page follows, so the
        // last page carries no cursor.
        let mut rows = self
            .node
            .reader()
            .files_list(app, prefix, after.as_deref(), limit + 1)
            .map_err(storage_error)?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let cursor = match rows.last() {
            Some((path, _)) if more => Some(URL_SAFE_NO_PAD.encode(path)),
            _ => None,
        };
        Ok(FileListPage {
            files: rows
                .iter()
                .map(|(path, record)| stat_of(path, record))
                .collect(),
            cursor,
        })
    }

    /// A signed URL (`/_/files/<app>/<path>?...`, no host). The ttl is
    /// [`url::URL_TTL_SECS_DEFAULT`] when absent and at most
    /// [`url::URL_TTL_SECS_MAX`] (else `invalid_ttl`); `max_bytes` and
    /// `content_type` belong to PUT URLs (on a GET URL: `invalid_field`).
    /// The app's signing key is created on first use, as for realtime
    /// tokens.
    pub async fn sign_url(
        &self,
        app: &str,
        path: &str,
        options: FileUrlOptions,
    ) -> Result<String, HostError> {
        check_path(path)?;
        let ttl_ms = url_ttl_ms(options.ttl_secs)?;
        let content_type = match options.method {
            UrlMethod::Get if options.max_bytes.is_some() || options.content_type.is_some() => {
                return Err(HostError::new(
                    Code::InvalidField,
                    "files.url: max_bytes and content_type apply to PUT URLs only",
                ));
            }
            UrlMethod::Get => None,
            UrlMethod::Put => options
                .content_type
                .map(|ct| content_type_or_default(Some(ct)))
                .transpose()?,
        };
        let key = self.realtime.signing_key(app, true).await?;
        let claims = url::UrlClaims {
            method: options.method,
            exp_ms: now_ms().saturating_add(ttl_ms),
            max_bytes: options.max_bytes,
            content_type,
        };
        Ok(url::sign(&key, app, path, &claims))
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
        check_path(path)?;
        let key = match self.realtime.signing_key(app, false).await {
            Ok(key) => key,
            // No key yet: the app never signed anything.
            Err(error) if error.code == Code::TokenInvalid => {
                return Err(HostError::new(
                    Code::UrlInvalid,
                    format!("app {app} has signed no file URLs"),
                ));
            }
            Err(error) => return Err(error),
        };
        url::verify(&key, app, path, query, method, now_ms()).map_err(|error| match error {
            url::UrlError::Invalid(why) => {
                HostError::new(Code::UrlInvalid, format!("signed file URL: {why}"))
            }
            url::UrlError::Expired { exp_ms } => HostError::new(
                Code::UrlExpired,
                format!("the signed file URL expired at {exp_ms} ms"),
            ),
        })
    }
}

/// The code a script or client sees for a block failure. `TooLarge` is
/// `file_too_large` (the caller tells a quota apart, it knows the room).
pub fn files_host_error(error: FilesError) -> HostError {
    let code = match &error {
        FilesError::DiskFull { .. } => Code::DiskFull,
        FilesError::ReplicasUnavailable { .. } => Code::ReplicasUnavailable,
        FilesError::BlockUnavailable { .. } => Code::FileUnavailable,
        FilesError::TooLarge { .. } => Code::FileTooLarge,
        FilesError::Body(body) => match body.kind() {
            ErrorKind::UnexpectedEof => Code::UploadIncomplete,
            ErrorKind::TimedOut => Code::BodyTimeout,
            _ => Code::BadBody,
        },
        FilesError::Timeout => Code::Timeout,
        FilesError::Io(_) => Code::Storage,
    };
    HostError::new(code, error.to_string())
}

fn check_path(path: &str) -> Result<(), HostError> {
    validate_path(path)
        .map_err(|error| HostError::new(Code::InvalidPath, format!("file path {path:?}: {error}")))
}

fn quota_exceeded(app: &str, limit: &str, max: u64) -> HostError {
    let setting = match limit {
        "files" => "files_per_app_max",
        _ => "files_bytes_per_app_max",
    };
    HostError::new(
        Code::QuotaExceeded,
        format!("app {app} would hold more than {max} {limit} of files ({setting})"),
    )
}

fn upload_timeout(config: &FilesConfig) -> HostError {
    HostError::new(
        Code::Timeout,
        format!(
            "the upload took longer than {} ms (files_upload_duration_max_ms); nothing was stored",
            config.files_upload_duration_max_ms
        ),
    )
}

/// A content type as stored: [`DEFAULT_CONTENT_TYPE`] when absent; else at
/// most [`CONTENT_TYPE_BYTES_MAX`] bytes of printable ASCII (it is served
/// as a header) shaped `type/subtype[; parameters]` with RFC 9110 tokens
/// (`invalid_field` otherwise).
pub fn content_type_or_default(content_type: Option<String>) -> Result<String, HostError> {
    let Some(content_type) = content_type else {
        return Ok(DEFAULT_CONTENT_TYPE.to_string());
    };
    let invalid = |why: &str| {
        HostError::new(
            Code::InvalidField,
            format!("content_type {content_type:?}: {why}"),
        )
    };
    if content_type.len() > CONTENT_TYPE_BYTES_MAX {
        return Err(invalid(&format!(
            "longer than {CONTENT_TYPE_BYTES_MAX} bytes"
        )));
    }
    if !content_type.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid("not printable ASCII"));
    }
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let is_token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, subtype)) if is_token(kind) && is_token(subtype) => Ok(content_type),
        _ => Err(invalid("not shaped type/subtype")),
    }
}

/// The ttl of a signed URL in milliseconds.
fn url_ttl_ms(ttl_secs: Option<f64>) -> Result<u64, HostError> {
    match ttl_secs {
        None => Ok(url::URL_TTL_SECS_DEFAULT * 1000),
        Some(ttl) if ttl.is_finite() && ttl > 0.0 && ttl <= url::URL_TTL_SECS_MAX as f64 => {
            Ok((ttl * 1000.0) as u64)
        }
        Some(ttl) => Err(HostError::new(
            Code::InvalidTtl,
            format!(
                "files.url: ttl must be a positive number of seconds up to {} (7 days), got {ttl}",
                url::URL_TTL_SECS_MAX
            ),
        )),
    }
}

/// The range served for `requested` of a file of `size` bytes: the whole
/// file for none; `None` when it starts at or past the end or is empty;
/// its end clamped to the size.
pub fn served_range(size: u64, requested: Option<Range<u64>>) -> Option<Range<u64>> {
    match requested {
        None => Some(0..size),
        Some(range) if range.start < size && range.start < range.end => {
            Some(range.start..range.end.min(size))
        }
        Some(_) => None,
    }
}

/// Milliseconds since the Unix epoch: the clock of `host::now_ms`, read
/// here directly because `host` imports this module.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0)
}

/// A list cursor's path.
fn decode_cursor(cursor: &str) -> Result<String, HostError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| HostError::new(Code::InvalidCursor, "files.list: the cursor is not one"))
}

/// The strong entity tag of content with this SHA-256 (the same text as
/// `FileRecord::etag`, without a record).
pub fn etag(sha256: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tag = String::with_capacity(66);
    tag.push('"');
    for byte in sha256 {
        tag.push(char::from(HEX[usize::from(byte >> 4)]));
        tag.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    tag.push('"');
    tag
}

/// A record as scripts and clients see it.
fn stat_of(path: &str, record: &FileRecord) -> FileStat {
    FileStat {
        path: path.to_string(),
        size: record.size,
        content_type: record.content_type.clone(),
        etag: etag(&record.sha256),
        updated_ms: record.updated_ms,
    }
}

#[cfg(test)]
mod tests;
