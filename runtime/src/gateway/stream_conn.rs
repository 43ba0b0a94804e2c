//! A lean connection path for realtime streams: `GET /_/realtime/...` over
//! plain HTTP/1 is served without hyper.
//!
//! A subscriber's connection lives for hours and only receives small
//! frames, but hyper keeps an 8 KiB read buffer and an 8 KiB write buffer
//! for a connection's whole life: most of an idle subscriber's memory. Here
//! the head is read into a small buffer that is freed once parsed, the
//! request goes through the SAME axum router as every other request
//! (routing, tokens, CORS, JSON errors, the realtime handler), and the
//! response body's frames are written as chunks straight to the socket.
//!
//! ```text
//!   peek "GET /_/realtime/" ─▶ read head (≤ 64 KiB, ≤ 100 headers, header timeout)
//!     malformed → 400 bad_request, too large → 431 head_too_large,
//!     a body or bytes after the head → 400 bad_request   (all: connection: close)
//!   ─▶ router.call ─▶ head written ─▶ frames as chunks ─▶ last chunk
//!        ends on: body end, client EOF (or bytes), node closing,
//!                 a write with no progress for http_idle_timeout_ms
//! ```
//!
//! The connection serves exactly one request and is answered with
//! `connection: close`. Anything else (another method or path, fewer bytes
//! than the prefix in the first read, HTTP/2) goes the hyper way.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version, header,
};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use hyper::body::Buf;
use picloud_lua_sdk::Code;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower_service::Service;

use super::ApiError;

/// The first bytes of a request this path serves.
pub const STREAM_PREFIX: &[u8] = b"GET /_/realtime/";

/// Header lines a head may hold (hyper's default, so both paths agree).
pub const HEADERS_MAX: usize = 100;

/// The head buffer's first size; it doubles up to the head limit. Most
/// subscribe heads (a browser's EventSource with a token) fit in one read.
const HEAD_BUFFER_BYTES_INITIAL: usize = 1024;

/// Bytes read (and dropped) from a refused client after its error answer,
/// so the close does not reset the connection before the answer is read.
const LINGER_BYTES_MAX: usize = 64 * 1024;

/// The connection's limits, from the server's.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// The largest head, in bytes.
    pub head_bytes_max: usize,
    /// From accept to the end of the head.
    pub header_timeout: Duration,
    /// A write with no progress this long ends the connection.
    pub stall_timeout: Duration,
    /// How long the final answer may take once the node is closing.
    pub close_grace: Duration,
}

/// What the first bytes of a connection say about it.
pub fn is_stream_prefix(peeked: &[u8]) -> bool {
    peeked.len() >= STREAM_PREFIX.len() && peeked.starts_with(STREAM_PREFIX)
}

/// A complete, acceptable request head.
#[derive(Debug)]
pub struct Head {
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// Bytes of the head, including the blank line.
    pub length: usize,
}

/// Why a head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is over {bytes_max} bytes or {HEADERS_MAX} header lines")]
    TooLarge { bytes_max: usize },
    #[error("the request head is malformed: {reason}")]
    Malformed { reason: String },
    #[error("a realtime stream request has no body (content-length or transfer-encoding)")]
    HasBody,
    #[error("bytes follow the head of a realtime stream request; its connection serves one stream")]
    Pipelined,
}

impl HeadError {
    fn code(&self) -> Code {
        match self {
            HeadError::TooLarge { .. } => Code::HeadTooLarge,
            _ => Code::BadRequest,
        }
    }
}

/// Parses `bytes` (everything read so far): `Ok(None)` while the head is
/// incomplete and under `bytes_max`. Only a body-less `GET` of HTTP/1.x
/// with nothing after its head is accepted.
pub fn parse_head(bytes: &[u8], bytes_max: usize) -> Result<Option<Head>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut slots);
    let length = match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) if length <= bytes_max => length,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooLarge { bytes_max });
        }
        Ok(httparse::Status::Partial) if bytes.len() >= bytes_max => {
            return Err(HeadError::TooLarge { bytes_max });
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => {
            return Err(HeadError::Malformed {
                reason: error.to_string(),
            });
        }
    };
    let malformed = |reason: &str| HeadError::Malformed {
        reason: reason.to_string(),
    };
    if request.method != Some("GET") {
        return Err(malformed("only GET is served here"));
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let uri: Uri = request
        .path
        .unwrap_or_default()
        .parse()
        .map_err(|_| malformed("the request target is not a URI"))?;
    if uri.scheme().is_some() || !uri.path().starts_with('/') {
        return Err(malformed("the request target must be a path"));
    }
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| malformed("a header name is invalid"))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| malformed("a header value is invalid"))?;
        headers.append(name, value);
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|value| value.as_bytes().trim_ascii() != b"0");
    if has_body {
        return Err(HeadError::HasBody);
    }
    if bytes.len() > length {
        return Err(HeadError::Pipelined);
    }
    Ok(Some(Head {
        uri,
        version,
        headers,
        length,
    }))
}

/// Serves one realtime request on `stream`, whose first bytes were
/// [`STREAM_PREFIX`]. `accepted` is when the connection was accepted: the
/// head must be complete within the header timeout from then.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut router: Router,
    limits: StreamLimits,
    accepted: Instant,
    mut closing: watch::Receiver<bool>,
) {
    let deadline = accepted + limits.header_timeout;
    let head = tokio::select! {
        head = tokio::time::timeout_at(deadline, read_head(&mut stream, limits.head_bytes_max)) => head,
        _ = closing.wait_for(|closing| *closing) => return,
    };
    let head = match head {
        Err(_) => {
            tracing::debug!(%peer, "closing a realtime connection whose head took too long");
            return;
        }
        Ok(Err(ReadError::Closed)) => return,
        Ok(Err(ReadError::Refused(error))) => {
            tracing::debug!(%peer, %error, "refusing a realtime request");
            let response = ApiError::new(error.code(), error.to_string()).into_response();
            let head_sent = write_response(
                &mut stream,
                response,
                Version::HTTP_11,
                limits,
                &mut closing,
            )
            .await;
            if head_sent {
                linger(&mut stream, limits.close_grace).await;
            }
            return;
        }
        Ok(Ok(head)) => head,
    };
    let version = head.version;
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = head.uri;
    *request.version_mut() = version;
    *request.headers_mut() = head.headers;
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = match router.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    write_response(&mut stream, response, version, limits, &mut closing).await;
}

enum ReadError {
    /// The client closed (or reset) before its head was complete.
    Closed,
    Refused(HeadError),
}

/// Reads until the head is complete; the buffer is dropped on return.
async fn read_head(stream: &mut TcpStream, bytes_max: usize) -> Result<Head, ReadError> {
    let mut buffer: Vec<u8> = Vec::with_capacity(HEAD_BUFFER_BYTES_INITIAL.min(bytes_max));
    loop {
        if buffer.len() == buffer.capacity() {
            let room = bytes_max.saturating_sub(buffer.len());
            buffer.reserve(buffer.capacity().min(room).max(1));
        }
        // Never read past the limit: one byte over is enough to refuse.
        let room = (bytes_max + 1).saturating_sub(buffer.len());
        let read = (&mut *stream)
            .take(room as u64)
            .read_buf(&mut buffer)
            .await
            .map_err(|_| ReadError::Closed)?;
        if read == 0 {
            return Err(ReadError::Closed);
        }
        if let Some(head) = parse_head(&buffer, bytes_max).map_err(ReadError::Refused)? {
            debug_assert_eq!(head.length, buffer.len());
            return Ok(head);
        }
    }
}

/// Writes `response` as the connection's only answer, then closes.
/// Returns whether the head went out.
async fn write_response(
    stream: &mut TcpStream,
    response: Response<Body>,
    version: Version,
    limits: StreamLimits,
    closing: &mut watch::Receiver<bool>,
) -> bool {
    let (parts, mut body) = response.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .or_else(|| body.size_hint().exact());
    // HTTP/1.0 has no chunks: the close ends the body.
    let chunked = length.is_none() && version == Version::HTTP_11;
    {
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(parts.status.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(
            parts
                .status
                .canonical_reason()
                .unwrap_or("Unknown")
                .as_bytes(),
        );
        head.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if is_framing_header(name) {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if let Some(length) = length {
            head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
        } else if chunked {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        head.extend_from_slice(b"connection: close\r\n\r\n");
        if write_all(stream, &mut head.as_slice(), limits.stall_timeout)
            .await
            .is_err()
        {
            return false;
        }
    }
    drop(parts);
    // A stream (no length) watches its read half for the client going
    // away; its connection never carries another request. A sized answer
    // (an error) is written whatever the client still sends.
    let watch_client = length.is_none();
    let mut probe = [0u8; 1];
    let finished = loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            read = stream.read(&mut probe), if watch_client => {
                if let Ok(read @ 1..) = read {
                    tracing::debug!(read, "a realtime client sent bytes on its stream; closing");
                }
                return true;
            }
            _ = closing.wait_for(|closing| *closing) => break false,
        };
        let mut data = match frame {
            None => break true,
            Some(Err(error)) => {
                tracing::debug!(%error, "a realtime response body failed");
                return true;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers and empty frames carry nothing to send here.
                _ => continue,
            },
        };
        let written = if chunked {
            let size = format!("{:x}\r\n", data.len());
            let mut chunk = Buf::chain(Buf::chain(size.as_bytes(), data), &b"\r\n"[..]);
            write_all(stream, &mut chunk, limits.stall_timeout).await
        } else {
            write_all(stream, &mut data, limits.stall_timeout).await
        };
        if written.is_err() {
            return true;
        }
    };
    // The body ended (or the node closes): end the chunked body properly.
    // On closing the wait is shorter, so shutdown is never held up.
    drop(body);
    let stall = if finished {
        limits.stall_timeout
    } else {
        limits.close_grace
    };
    if chunked {
        let _ = write_all(stream, &mut &b"0\r\n\r\n"[..], stall).await;
    }
    let _ = tokio::time::timeout(limits.close_grace, stream.shutdown()).await;
    true
}

/// Headers this path writes itself: the connection is closed after one
/// answer, and its body framing follows from the body.
fn is_framing_header(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_LENGTH
        || name == "keep-alive"
}

/// Writes all of `buf`, failing when one write makes no progress within
/// `stall` (a client that stopped reading must not pin the task and the
/// frames it holds, as on the hyper path's `Close::Stalled`).
async fn write_all(
    stream: &mut TcpStream,
    buf: &mut impl Buf,
    stall: Duration,
) -> std::io::Result<()> {
    while buf.has_remaining() {
        let mut slices = [IoSlice::new(&[]); 4];
        let count = buf.chunks_vectored(&mut slices);
        let written = tokio::time::timeout(stall, stream.write_vectored(&slices[..count]))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf.advance(written);
    }
    Ok(())
}

/// After an error answer: stop writing, then read (and drop) what the
/// client still sends for a moment, so closing with unread bytes does not
/// reset the connection before the client has read the answer.
async fn linger(stream: &mut TcpStream, grace: Duration) {
    let _ = tokio::time::timeout(grace, stream.shutdown()).await;
    let drain = async {
        let mut scratch = [0u8; 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = tokio::time::timeout(grace, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn parse(text: &str) -> Result<Option<Head>, HeadError> {
        parse_head(text.as_bytes(), MAX)
    }

    #[test]
    fn heads_are_accepted_or_refused_as_a_stream_request_needs() {
        let ok = "GET /_/realtime/a/t?token=x HTTP/1.1\r\nhost: h\r\nlast-event-id: 1-2\r\n\r\n";
        let head = parse(ok).expect("valid").expect("complete");
        assert_eq!(head.uri, "/_/realtime/a/t?token=x");
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["last-event-id"], "1-2");
        assert_eq!(head.length, ok.len());
        // Every prefix of a valid head is incomplete, not an error.
        for end in 0..ok.len() {
            assert!(matches!(parse(&ok[..end]), Ok(None)), "prefix {end}");
        }
        // What became of a head, in a word, so the table reads as one.
        let outcome = |text: &str| match parse(text) {
            Ok(Some(head)) if head.version == Version::HTTP_10 => "ok 1.0",
            Ok(Some(_)) => "ok",
            Ok(None) => "incomplete",
            Err(HeadError::HasBody) => "has body",
            Err(HeadError::Pipelined) => "pipelined",
            Err(HeadError::Malformed { .. }) => "malformed",
            Err(HeadError::TooLarge { .. }) => "too large",
        };
        let table = [
            ("GET /_/realtime/a/t HTTP/1.0\r\n\r\n", "ok 1.0"),
            (
                "GET /_/realtime/a/t HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
                "ok",
            ),
            (
                "GET /_/realtime/a/t HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
                "has body",
            ),
            (
                "GET /_/realtime/a/t HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
                "has body",
            ),
            (
                "GET /_/realtime/a/t HTTP/1.1\r\n\r\nGET /_/health HTTP/1.1\r\n\r\n",
                "pipelined",
            ),
            (
                "GET /_/realtime/a/t HTTP/1.1\r\nbad header\r\n\r\n",
                "malformed",
            ),
            ("GET http://x/_/realtime/a/t HTTP/1.1\r\n\r\n", "malformed"),
            ("POST /_/realtime/a/t HTTP/1.1\r\n\r\n", "malformed"),
            ("\u{1}\r\n\r\n", "malformed"),
            ("GET /_/realtime/a/t HTTP/2.0\r\n\r\n", "malformed"),
        ];
        for (text, expected) in table {
            assert_eq!(outcome(text), expected, "{text:?}");
        }
    }

    #[test]
    fn heads_over_the_byte_or_header_limit_are_too_large() {
        let long = format!(
            "GET /_/realtime/a/t HTTP/1.1\r\nx: {}\r\n\r\n",
            "v".repeat(MAX)
        );
        assert_eq!(
            parse(&long).err(),
            Some(HeadError::TooLarge { bytes_max: MAX })
        );
        // Incomplete but already at the limit: no more bytes will help.
        assert_eq!(
            parse(&long[..MAX]).err(),
            Some(HeadError::TooLarge { bytes_max: MAX })
        );
        let many: String = (0..=HEADERS_MAX).map(|n| format!("h{n}: v\r\n")).collect();
        let text = format!("GET /_/realtime/a/t HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_head(text.as_bytes(), 64 * 1024).err(),
            Some(HeadError::TooLarge {
                bytes_max: 64 * 1024
            })
        );
        assert_eq!(HeadError::TooLarge { bytes_max: 1 }.code().status(), 431);
        assert_eq!(HeadError::HasBody.code().status(), 400);
    }

    #[test]
    fn only_the_realtime_get_prefix_takes_this_path() {
        assert!(is_stream_prefix(b"GET /_/realtime/app/topic HTTP/1.1"));
        assert!(
            !is_stream_prefix(b"GET /_/realtime"),
            "too few bytes to decide"
        );
        assert!(!is_stream_prefix(b"OPTIONS /_/realtime/app/topic"));
        assert!(!is_stream_prefix(b"GET /_/health HTTP/1.1\r\n"));
        assert!(!is_stream_prefix(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    }
}
