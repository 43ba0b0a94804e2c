//! Files over HTTP on every node: the signed-URL endpoint
//! `/_/files/<app>/<path>?m=&exp=&sig=...`, and the streaming both it and the
//! admin API's file routes (`admin/files.rs`) share.
//!
//! ```text
//!   GET|HEAD  check_url ─▶ download permit ─▶ stat ─▶ If-None-Match? 304
//!             ─▶ Range? (parse_range) 206 | 416 ─▶ FileService::open ─▶ streamed body
//!                (the permit lives in the body until the last byte is sent)
//!   PUT       check_url ─▶ upload permit ─▶ Content-Length over the limit? 413
//!             ─▶ FileService::put_stream(body as a stream) ─▶ 200 + stat
//!   OPTIONS   the app's [cors] preflight, so a browser page can PUT
//! ```
//!
//! These routes never buffer a body: they sit outside the admin API's
//! `shed_load` (which receives the whole body first) and take their own
//! permits (`files_uploads_inflight_max`, `files_downloads_inflight_max`;
//! none free is 503 `overloaded`). Their bodies are timed by
//! `files_body_timeout_ms` and `files_body_rate_bytes_min` (`server.rs`
//! picks the timing by [`is_file_route`]).

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use picloud_actors::app::public::etag_matches;
use picloud_actors::files::FileService;
use picloud_lua_sdk::{Code, FileStat, UrlMethod};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::cors::with_cors;
use super::{ApiError, Gateway};

/// The prefix of the signed-URL endpoint.
pub const SIGNED_PREFIX: &str = "/_/files/";

/// The node's file service and the permits of its streamed routes.
pub struct FileGate {
    pub service: FileService,
    uploads: Arc<Semaphore>,
    downloads: Arc<Semaphore>,
}

impl FileGate {
    pub fn new(service: FileService) -> FileGate {
        let config = service.config();
        FileGate {
            uploads: Arc::new(Semaphore::new(config.files_uploads_inflight_max)),
            downloads: Arc::new(Semaphore::new(config.files_downloads_inflight_max)),
            service,
        }
    }

    /// Uploads being received now (for `/_/metrics`).
    pub fn uploads_inflight(&self) -> usize {
        self.service
            .config()
            .files_uploads_inflight_max
            .saturating_sub(self.uploads.available_permits())
    }

    /// Downloads being served now (for `/_/metrics`).
    pub fn downloads_inflight(&self) -> usize {
        self.service
            .config()
            .files_downloads_inflight_max
            .saturating_sub(self.downloads.available_permits())
    }

    fn upload_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.uploads.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                Code::Overloaded,
                format!(
                    "{} uploads are in flight on this node (files_uploads_inflight_max); retry shortly",
                    self.service.config().files_uploads_inflight_max
                ),
            )
        })
    }

    fn download_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.downloads.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                Code::Overloaded,
                format!(
                    "{} downloads are in flight on this node (files_downloads_inflight_max); retry shortly",
                    self.service.config().files_downloads_inflight_max
                ),
            )
        })
    }
}

/// Whether `path` is a file route whose body gets the files' timing: the
/// signed endpoint and `/_/api/v1/apps/<app>/files/<path>`.
pub fn is_file_route(path: &str) -> bool {
    if path.starts_with(SIGNED_PREFIX) {
        return true;
    }
    let Some(rest) = path.strip_prefix("/_/api/v1/apps/") else {
        return false;
    };
    rest.split_once('/')
        .is_some_and(|(_, tail)| tail.starts_with("files/"))
}

/// What a `Range` header asks of a file of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range, or one this server ignores (several ranges, another unit,
    /// a malformed header; RFC 9110 lets a server answer those whole).
    Whole,
    /// One satisfiable range, end exclusive.
    Partial(Range<u64>),
    /// The range starts past the end (or asks for the last 0 bytes).
    Unsatisfiable,
}

/// Parses a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`)
/// against a file of `size` bytes. Pure.
pub fn parse_range(value: &str, size: u64) -> RangeAnswer {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let number = |text: &str| -> Option<u64> {
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    };
    match (first.is_empty(), last.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match number(last) {
            None => RangeAnswer::Whole,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if size == 0 => RangeAnswer::Unsatisfiable,
            Some(suffix) => RangeAnswer::Partial(size.saturating_sub(suffix)..size),
        },
        // `a-`: from a to the end.
        (false, true) => match number(first) {
            None => RangeAnswer::Whole,
            Some(start) if start >= size => RangeAnswer::Unsatisfiable,
            Some(start) => RangeAnswer::Partial(start..size),
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    RangeAnswer::Unsatisfiable
                } else {
                    RangeAnswer::Partial(start..end.saturating_add(1).min(size))
                }
            }
            _ => RangeAnswer::Whole,
        },
        (true, true) => RangeAnswer::Whole,
    }
}

/// A file's stat as the API answers it.
pub fn stat_json(stat: &FileStat) -> Value {
    json!({
        "path": stat.path,
        "size": stat.size,
        "content_type": stat.content_type,
        "etag": stat.etag,
        "updated_ms": stat.updated_ms,
    })
}

fn not_found(app: &str, path: &str) -> ApiError {
    ApiError::new(
        Code::FileNotFound,
        format!("app {app} has no file {path:?}"),
    )
}

/// The headers every answer about a file carries.
fn file_headers(headers: &mut HeaderMap, stat: &FileStat) {
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::ETAG, &stat.etag);
    set(header::CONTENT_TYPE, &stat.content_type);
    set(header::ACCEPT_RANGES, "bytes");
    set(header::CACHE_CONTROL, "private, max-age=0");
    let modified = UNIX_EPOCH + Duration::from_millis(stat.updated_ms);
    set(header::LAST_MODIFIED, &httpdate::fmt_http_date(modified));
}

/// Answers a GET or HEAD of a file: 200 whole, 206 one range, 304 when
/// `If-None-Match` names its ETag, 416 when the range is past the end.
pub async fn download(
    gateway: &Gateway,
    app: &str,
    path: &str,
    request: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let files = &gateway.files;
    let permit = files.download_permit()?;
    let text = |name| {
        request
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    let range_header = text(header::RANGE);
    // One read barrier per download: the file is opened with the range the
    // header names when it does not depend on the size (`a-b`, `a-`), and
    // its stat comes with it. Only a suffix range (`-n`), a range past the
    // end, or a file replaced meanwhile needs a second look.
    let mut hint = range_header.and_then(size_free_range);
    for _ in 0..2 {
        let opened = match files.service.open(app, path, hint.clone()).await {
            Ok(Some(opened)) => opened,
            Ok(None) => return Err(not_found(app, path)),
            Err(error) if error.code == Code::RangeNotSatisfiable => {
                let stat = files
                    .service
                    .stat(app, path)
                    .await?
                    .ok_or_else(|| not_found(app, path))?;
                return Ok(unsatisfiable(stat.size));
            }
            Err(error) => return Err(error.into()),
        };
        let stat = &opened.stat;
        if text(header::IF_NONE_MATCH).is_some_and(|value| etag_matches(value, &stat.etag)) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            file_headers(response.headers_mut(), stat);
            return Ok(response);
        }
        let range = match range_header.map(|value| parse_range(value, stat.size)) {
            None | Some(RangeAnswer::Whole) => None,
            Some(RangeAnswer::Partial(range)) => Some(range),
            Some(RangeAnswer::Unsatisfiable) => return Ok(unsatisfiable(stat.size)),
        };
        if head {
            return Ok(head_response(stat, range));
        }
        if opened.range != range.clone().unwrap_or(0..stat.size) {
            // A suffix range (or a file whose size changed under a range):
            // open again with the range resolved against this size.
            hint = range;
            continue;
        }
        return body_response(opened, range.is_some(), permit).await;
    }
    Err(ApiError::new(
        Code::FileUnavailable,
        format!("file {path:?} of app {app} changed while it was opened; retry"),
    ))
}

/// The range of a `Range` header that needs no file size (`a-b`, `a-`; the
/// file service clamps its end), `None` for the rest (whole, suffix,
/// several ranges or malformed: resolved once the size is known).
fn size_free_range(value: &str) -> Option<Range<u64>> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.starts_with('-') {
        return None;
    }
    match parse_range(value, u64::MAX) {
        RangeAnswer::Partial(range) => Some(range),
        RangeAnswer::Whole | RangeAnswer::Unsatisfiable => None,
    }
}

/// 416 with `Content-Range: bytes */size`, as RFC 9110 asks.
fn unsatisfiable(size: u64) -> Response {
    let mut response = ApiError::new(
        Code::RangeNotSatisfiable,
        format!("the range starts past the end of the file ({size} bytes)"),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

fn partial_headers(response: &mut Response, range: &Range<u64>, size: u64) {
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    if let Ok(value) = HeaderValue::from_str(&format!(
        "bytes {}-{}/{size}",
        range.start,
        range.end.saturating_sub(1)
    )) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
}

fn head_response(stat: &FileStat, range: Option<Range<u64>>) -> Response {
    let mut response = Response::new(Body::empty());
    file_headers(response.headers_mut(), stat);
    let length = range
        .as_ref()
        .map_or(stat.size, |range| range.end - range.start);
    if let Some(range) = &range {
        partial_headers(&mut response, range, stat.size);
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// The streamed answer. The first chunk is awaited before the headers go
/// out, so a file no reachable node holds is a clean 503
/// `file_unavailable` rather than a cut body; a failure later can only cut
/// the body (the client sees a short read, never wrong bytes).
async fn body_response(
    opened: picloud_actors::files::FileDownload,
    partial: bool,
    permit: OwnedSemaphorePermit,
) -> Result<Response, ApiError> {
    let picloud_actors::files::FileDownload {
        stat,
        range,
        mut body,
    } = opened;
    let first = match body.next().await {
        Some(Ok(chunk)) => Some(chunk),
        Some(Err(error)) => return Err(error.into()),
        None => None,
    };
    let length = range.end.saturating_sub(range.start);
    let whole = first
        .as_ref()
        .is_some_and(|first| first.len() as u64 == length);
    let mut response = if whole {
        // A small file (or range) came whole with its first read: a full
        // body goes out with its headers in one write.
        drop(permit);
        Response::new(Body::from(first.unwrap_or_default()))
    } else {
        let rest = body.map(move |chunk| {
            // The download's permit is held while the body streams.
            let _held = &permit;
            chunk.map_err(std::io::Error::other)
        });
        Response::new(Body::from_stream(
            futures::stream::iter(first.map(Ok)).chain(rest),
        ))
    };
    file_headers(response.headers_mut(), &stat);
    if partial {
        partial_headers(&mut response, &range, stat.size);
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}

/// Why an upload's body failed, seen by the stream the file service reads
/// (the service only sees an I/O error; the client deserves the reason).
type BodyFailure = Arc<Mutex<Option<ApiError>>>;

/// The request body as the stream `put_stream` reads: chunks counted, a
/// body that ends short of its `Content-Length` (or breaks off) fails with
/// `upload_incomplete`, one too slow with `body_timeout`.
fn upload_stream(
    body: Body,
    announced: Option<u64>,
    failure: BodyFailure,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin {
    let record = move |error: ApiError| {
        let text = error.message.clone();
        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, text)
    };
    let state = (body.into_data_stream(), 0u64, false, record);
    Box::pin(futures::stream::unfold(
        state,
        move |(mut body, mut received, done, record)| async move {
            if done {
                return None;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    received += chunk.len() as u64;
                    Some((Ok(chunk), (body, received, false, record)))
                }
                Some(Err(error)) => {
                    let api = match super::body::classify(&error) {
                        timeout @ super::body::BodyError::Timeout { .. } => timeout.into(),
                        other => ApiError::new(
                            Code::UploadIncomplete,
                            format!("the upload broke off after {received} bytes: {other}"),
                        ),
                    };
                    Some((Err(record(api)), (body, received, true, record)))
                }
                None => match announced {
                    Some(length) if received < length => {
                        let api = ApiError::new(
                            Code::UploadIncomplete,
                            format!(
                                "the upload ended after {received} of the {length} bytes its Content-Length announced; nothing was stored"
                            ),
                        );
                        Some((Err(record(api)), (body, received, true, record)))
                    }
                    _ => None,
                },
            }
        },
    ))
}

/// Receives a PUT body into `path` of `app`. `bytes_max` is a signed URL's
/// limit (the node's `file_bytes_max` always applies); `content_type` the
/// type to store (the request's, or the one a URL was signed for).
pub async fn upload(
    gateway: &Gateway,
    app: &str,
    path: &str,
    request: &HeaderMap,
    body: Body,
    bytes_max: Option<u64>,
    content_type: Option<String>,
) -> Result<Response, ApiError> {
    let files = &gateway.files;
    let _permit = files.upload_permit()?;
    let file_bytes_max = files.service.config().file_bytes_max;
    let limit = bytes_max.map_or(file_bytes_max, |max| max.min(file_bytes_max));
    let announced = match request.get(header::CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::new(Code::BadBody, "Content-Length is not a number"))?,
        ),
    };
    // Refused before any byte is read (a client sending `Expect:
    // 100-continue` never sends the body at all).
    if let Some(length) = announced
        && length > limit
    {
        return Err(too_large(
            length,
            limit,
            bytes_max.is_some_and(|max| max < file_bytes_max),
        ));
    }
    let failure = BodyFailure::default();
    let stream = upload_stream(body, announced, failure.clone());
    match files
        .service
        .put_stream(app, path, content_type, stream, bytes_max)
        .await
    {
        Ok(stat) => Ok(Json(stat_json(&stat)).into_response()),
        Err(error) => {
            let body_failed = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
            Err(body_failed.unwrap_or_else(|| error.into()))
        }
    }
}

fn too_large(length: u64, limit: u64, by_url: bool) -> ApiError {
    let setting = if by_url {
        "the signed URL's max_bytes"
    } else {
        "file_bytes_max"
    };
    ApiError::new(
        Code::FileTooLarge,
        format!("the upload announces {length} bytes; at most {limit} are allowed ({setting})"),
    )
}

/// `/_/files/<app>/<path>?...` on every node: GET and HEAD with a GET URL,
/// PUT with a PUT URL, OPTIONS for the app's CORS preflight. Errors carry
/// the CORS headers too, so a page can read their codes.
pub async fn signed(
    State(gateway): State<Gateway>,
    Path((app, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    with_cors(&gateway, &app, &method, &headers, || async {
        serve_signed(&gateway, &app, &path, &method, &headers, &uri, body)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    })
    .await
}

async fn serve_signed(
    gateway: &Gateway,
    app: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let grant = gateway
        .files
        .service
        .check_url(app, path, uri.query().unwrap_or(""), method.as_str())
        .await?;
    match (grant.method, method) {
        (UrlMethod::Get, &Method::GET) => download(gateway, app, path, headers, false).await,
        (UrlMethod::Get, &Method::HEAD) => download(gateway, app, path, headers, true).await,
        (UrlMethod::Put, &Method::PUT) => {
            let sent = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            let content_type = match grant.content_type {
                Some(signed) if sent.as_deref() != Some(signed.as_str()) => {
                    return Err(ApiError::new(
                        Code::UrlInvalid,
                        format!(
                            "this URL was signed for Content-Type {signed:?}, the request sends {:?}",
                            sent.unwrap_or_default()
                        ),
                    ));
                }
                Some(signed) => Some(signed),
                None => sent,
            };
            upload(
                gateway,
                app,
                path,
                headers,
                body,
                grant.max_bytes,
                content_type,
            )
            .await
        }
        // `check_url` refuses a method the URL was not signed for; this is
        // the same answer should it ever let one through.
        (signed, _) => Err(ApiError::new(
            Code::UrlInvalid,
            format!("this URL was signed for {signed:?}, not {method}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ranges_that_need_no_size_open_the_file_at_once() {
        let cases: &[(&str, Option<Range<u64>>)] = &[
            ("bytes=0-0", Some(0..1)),
            ("bytes=5-9", Some(5..10)),
            ("bytes=7-", Some(7..u64::MAX)),
            ("bytes=-100", None),
            ("bytes=0-1,4-5", None),
            ("items=0-1", None),
            ("bytes=9-5", None),
            ("bytes=x-", None),
        ];
        for (value, expected) in cases {
            assert_eq!(&size_free_range(value), expected, "{value}");
        }
    }

    #[test]
    fn ranges_resolve_against_the_file_size() {
        use RangeAnswer::{Partial, Unsatisfiable, Whole};
        let mib = 1u64 << 20;
        let size = 50 * mib;
        for (header, size, expected) in [
            ("bytes=0-0", size, Partial(0..1)),
            ("bytes=0-99", size, Partial(0..100)),
            // Across the first block edge.
            ("bytes=1048575-1048576", size, Partial(mib - 1..mib + 1)),
            ("bytes=-100", size, Partial(size - 100..size)),
            ("bytes=52428700-", size, Partial(52_428_700..size)),
            // An end past the file is clamped to it.
            ("bytes=10-999999999999", 100, Partial(10..100)),
            ("bytes=-500", 100, Partial(0..100)),
            (" bytes=5-9 ", 100, Partial(5..10)),
            // Past the end.
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=100-200", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=0-0", 0, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            // Several ranges, other units and malformed values: whole.
            ("bytes=0-1,5-6", 100, Whole),
            ("items=0-1", 100, Whole),
            ("bytes=5-1", 100, Whole),
            ("bytes=-", 100, Whole),
            ("bytes=a-b", 100, Whole),
            ("bytes=+1-2", 100, Whole),
            ("bytes=1", 100, Whole),
            ("", 100, Whole),
        ] {
            assert_eq!(parse_range(header, size), expected, "{header:?} of {size}");
        }
    }

    /// Collects what the file service would read from `body` announced as
    /// `announced` bytes: the bytes, whether it ended in an error, and the
    /// code the client would get.
    async fn read_upload(body: Body, announced: Option<u64>) -> (Vec<u8>, bool, Option<Code>) {
        let failure = BodyFailure::default();
        let mut stream = upload_stream(body, announced, failure.clone());
        let mut bytes = Vec::new();
        let mut failed = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(_) => failed = true,
            }
        }
        let code = failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|error| error.code);
        (bytes, failed, code)
    }

    #[tokio::test]
    async fn an_upload_short_of_its_length_or_broken_off_is_incomplete() {
        let (bytes, failed, code) = read_upload(Body::from("0123456789"), Some(10)).await;
        assert_eq!(
            (bytes.as_slice(), failed, code),
            (&b"0123456789"[..], false, None)
        );
        // Chunked (no length): whatever arrived is the file.
        let (_, failed, _) = read_upload(Body::from("0123"), None).await;
        assert!(!failed);
        let (bytes, failed, code) = read_upload(Body::from("01234"), Some(10)).await;
        assert_eq!((bytes.len(), failed), (5, true));
        assert_eq!(code, Some(Code::UploadIncomplete));
        let broken = futures::stream::iter([
            Ok(Bytes::from_static(b"01")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let (bytes, failed, code) = read_upload(Body::from_stream(broken), None).await;
        assert_eq!(
            (bytes.len(), failed, code),
            (2, true, Some(Code::UploadIncomplete))
        );
    }

    #[tokio::test]
    async fn a_too_slow_upload_is_a_body_timeout() {
        use std::time::Duration;

        use crate::gateway::body::{BodyTiming, TimedBody};
        let stalled = futures::stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
            Bytes::from_static(b"0123"),
        ))])
        .chain(futures::stream::pending());
        let timing = BodyTiming {
            timeout: Duration::from_millis(50),
            rate_bytes_min: 0,
            grace: Duration::from_millis(50),
        };
        let body = Body::new(TimedBody::new(
            http_body_util::StreamBody::new(stalled),
            timing,
        ));
        let (bytes, failed, code) = read_upload(body, Some(100)).await;
        assert_eq!(
            (bytes.len(), failed, code),
            (4, true, Some(Code::BodyTimeout))
        );
    }

    #[test]
    fn file_routes_are_the_signed_endpoint_and_the_admin_file_paths() {
        for (path, expected) in [
            ("/_/files/shop/a.jpg", true),
            ("/_/api/v1/apps/shop/files/a/b.jpg", true),
            ("/_/api/v1/apps/shop/files", false),
            ("/_/api/v1/apps/shop/kv/files/x", false),
            ("/_/api/v1/apps/shop/file-urls", false),
            ("/shop/files/x", false),
            ("/_/api/v1/keys", false),
        ] {
            assert_eq!(is_file_route(path), expected, "{path}");
        }
    }
}
