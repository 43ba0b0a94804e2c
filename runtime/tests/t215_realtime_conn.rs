//! The lean connection path of realtime streams (`gateway/stream_conn.rs`)
//! through a real `picloud` process and raw TCP: heads split across writes,
//! too large, with a body or pipelined bytes; methods and preflights that go
//! the hyper way; CORS and token errors through the same router; clients
//! that go away, never read, or trickle their head; and node shutdown.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Api, TestNode, install_crypto};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const HEADER_TIMEOUT_MS: u64 = 1_000;
const IDLE_TIMEOUT_MS: u64 = 2_000;
const ORIGIN: &str = "https://app.example.org";

const MANIFEST: &str = r#"
name = "lean"

[cors]
origins = ["https://app.example.org"]

[[route]]
method = "POST"
path = "/pub"
script = "pub.lua"

[[topic]]
name = "live/*"
auth = "public"

[[topic]]
name = "secret/*"
"#;

const PUB: &str = r#"
return function(req)
  pubsub.publish(req.query.topic, req.json)
  return { json = { ok = true } }
end
"#;

fn stream_request(topic: &str, extra: &str) -> String {
    format!("GET /_/realtime/lean/{topic} HTTP/1.1\r\nhost: x\r\n{extra}\r\n")
}

async fn connect(node: &TestNode) -> TcpStream {
    TcpStream::connect(("127.0.0.1", node.http_port))
        .await
        .expect("connect")
}

/// A response head (lowercased) and the body bytes read with it.
async fn read_head(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buffer = Vec::new();
    let read = async {
        loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                return at + 4;
            }
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await.expect("read a head");
            assert!(read > 0, "closed before a response head");
            buffer.extend_from_slice(&chunk[..read]);
        }
    };
    let end = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response head within 10 s");
    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .expect("a status");
    (status, head, buffer[end..].to_vec())
}

/// Everything until the server closes (bounded), after `already`.
async fn read_to_close(stream: &mut TcpStream, mut already: Vec<u8>, within: Duration) -> String {
    let _ = tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => already.extend_from_slice(&chunk[..read]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&already).into_owned()
}

/// Sends `request` on a fresh connection: the status, head and the JSON
/// body of a refusal (the connection is closed after it).
async fn refused(node: &TestNode, request: &[u8]) -> (u16, String, Value) {
    let mut stream = connect(node).await;
    stream.write_all(request).await.expect("send");
    let (status, head, rest) = read_head(&mut stream).await;
    let body = read_to_close(&mut stream, rest, Duration::from_secs(5)).await;
    assert!(
        head.contains("connection: close"),
        "not the realtime path: {head}"
    );
    assert_eq!(
        body.matches("HTTP/1.1").count(),
        0,
        "a second answer: {body}"
    );
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, head, json)
}

/// Reads the stream until `needle` shows up (10 s at most).
async fn read_until(stream: &mut TcpStream, seen: &mut String, needle: &str) {
    let read = async {
        while !seen.contains(needle) {
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await.expect("read the stream");
            assert!(read > 0, "stream closed before {needle:?}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} within 10 s: {seen}"));
}

async fn subscribers(admin: &Api) -> u64 {
    let (_, metrics) = admin.get("/_/metrics").await;
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("picloud_realtime_subscribers "))
        .and_then(|count| count.trim().parse().ok())
        .expect("the subscriber gauge")
}

async fn wait_subscribers(admin: &Api, expected: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let count = subscribers(admin).await;
        if count == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} subscribers, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(api: &Api, topic: &str, message: &Value) {
    let (status, body) = api
        .post_json(&format!("/lean/pub?topic={topic}"), message)
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn realtime_streams_are_served_on_a_lean_connection_with_the_usual_limits() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_env = vec![
        (
            "PICLOUD_HTTP_HEADER_TIMEOUT_MS".into(),
            HEADER_TIMEOUT_MS.to_string(),
        ),
        (
            "PICLOUD_HTTP_IDLE_TIMEOUT_MS".into(),
            IDLE_TIMEOUT_MS.to_string(),
        ),
        ("PICLOUD_REALTIME_BUFFER_MAX".into(), "4".into()),
    ];
    node.start().await;
    let admin = node.client();
    let (status, body) = admin
        .deploy("lean", &[("picloud.toml", MANIFEST), ("pub.lua", PUB)])
        .await;
    assert_eq!(status, 200, "{body}");
    let public = admin.with_key(None);

    // A head split across several writes is put together, and the stream
    // runs on a dedicated connection (`connection: close`, chunked).
    let mut stream = connect(&node).await;
    let request = stream_request("live/a", &format!("origin: {ORIGIN}\r\n"));
    for part in request.as_bytes().chunks(20) {
        stream.write_all(part).await.expect("send a part");
        // Separate segments, so the server reads the head in pieces.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (status, head, rest) = read_head(&mut stream).await;
    assert_eq!(status, 200, "{head}");
    for expected in [
        "connection: close",
        "transfer-encoding: chunked",
        "content-type: text/event-stream",
        "access-control-allow-origin: https://app.example.org",
    ] {
        assert!(head.contains(expected), "{expected} missing: {head}");
    }
    let mut seen = String::from_utf8_lossy(&rest).into_owned();
    read_until(&mut stream, &mut seen, ": connected").await;
    publish(&public, "live/a", &json!({"n": 1})).await;
    read_until(&mut stream, &mut seen, "data: {\"n\":1}").await;
    // A client that goes away releases its subscription.
    assert_eq!(subscribers(&admin).await, 1);
    drop(stream);
    wait_subscribers(&admin, 0, Duration::from_secs(5)).await;

    // Refusals on the lean path: JSON errors with registry codes.
    let huge = stream_request("live/a", &format!("x: {}\r\n", "v".repeat(70 * 1024)));
    let (status, _, body) = refused(&node, huge.as_bytes()).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(body["error"]["code"], "head_too_large", "{body}");
    let many: String = (0..101).map(|n| format!("h{n}: v\r\n")).collect();
    let (status, _, body) = refused(&node, stream_request("live/a", &many).as_bytes()).await;
    assert_eq!(status, 431, "{body}");
    let with_body = stream_request("live/a", "content-length: 5\r\n") + "hello";
    let (status, _, body) = refused(&node, with_body.as_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    let chunked = stream_request("live/a", "transfer-encoding: chunked\r\n") + "0\r\n\r\n";
    let (status, _, body) = refused(&node, chunked.as_bytes()).await;
    assert_eq!(status, 400, "{body}");
    // A pipelined request after the stream's head is not served.
    let pipelined = stream_request("live/a", "") + "GET /_/health HTTP/1.1\r\nhost: x\r\n\r\n";
    let (status, _, body) = refused(&node, pipelined.as_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("follow the head")),
        "{body}"
    );
    let (status, _, body) = refused(&node, b"GET /_/realtime/lean/a b HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, 400, "{body}");
    // Errors of the router itself come back as on every path.
    let (status, head, body) = refused(
        &node,
        stream_request("secret/x", &format!("origin: {ORIGIN}\r\n")).as_bytes(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "token_invalid", "{body}");
    assert!(head.contains("access-control-allow-origin"), "{head}");
    let (status, _, body) = refused(&node, stream_request("nope/x", "").as_bytes()).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "topic_not_found", "{body}");
    assert_eq!(subscribers(&admin).await, 0, "a refused request subscribed");

    // Other methods go the hyper way: a POST gets the usual 405, and a
    // preflight is answered (neither closes its connection).
    let mut stream = connect(&node).await;
    stream
        .write_all(b"POST /_/realtime/lean/live/a HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await
        .expect("send");
    let (status, head, _) = read_head(&mut stream).await;
    assert_eq!(status, 405, "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let mut stream = connect(&node).await;
    let preflight = format!(
        "OPTIONS /_/realtime/lean/live/a HTTP/1.1\r\nhost: x\r\norigin: {ORIGIN}\r\n\
         access-control-request-method: GET\r\naccess-control-request-headers: last-event-id\r\n\r\n"
    );
    stream.write_all(preflight.as_bytes()).await.expect("send");
    let (status, head, _) = read_head(&mut stream).await;
    assert!((200..300).contains(&status), "{head}");
    assert!(
        head.contains("access-control-allow-origin: https://app.example.org"),
        "{head}"
    );
    drop(stream);

    // A head trickling in is cut by the header timeout.
    let mut stream = connect(&node).await;
    let started = Instant::now();
    stream
        .write_all(b"GET /_/realtime/lean/live/a HTTP/1.1\r\n")
        .await
        .expect("send");
    let closed = async {
        let mut chunk = [0u8; 64];
        loop {
            tokio::select! {
                read = stream.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    let _ = stream.write_all(b"x").await;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("a trickling head was never cut");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(HEADER_TIMEOUT_MS - 50)
            && elapsed < Duration::from_millis(HEADER_TIMEOUT_MS + 2_000),
        "{elapsed:?}"
    );

    // A client that never reads: it overflows, its blocked write is given
    // up after the idle timeout, and the subscription is released while
    // the client still has not read a byte. The node keeps serving.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .expect("bind");
    let mut stuck = socket
        .connect(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            node.http_port,
        ))
        .await
        .expect("connect");
    stuck
        .write_all(stream_request("live/stuck", "").as_bytes())
        .await
        .expect("send");
    wait_subscribers(&admin, 1, Duration::from_secs(5)).await;
    let pad = "y".repeat(60 * 1024);
    for n in 0..100 {
        publish(&public, "live/stuck", &json!({"n": n, "pad": pad})).await;
    }
    let (status, _) = public.get("/_/health").await;
    assert_eq!(status, 200);
    wait_subscribers(
        &admin,
        0,
        Duration::from_millis(IDLE_TIMEOUT_MS * 2 + 5_000),
    )
    .await;
    drop(stuck);

    // Shutdown ends an open stream promptly, with the last chunk.
    let mut stream = connect(&node).await;
    stream
        .write_all(stream_request("live/end", "").as_bytes())
        .await
        .expect("send");
    let (status, _, rest) = read_head(&mut stream).await;
    assert_eq!(status, 200);
    let mut seen = String::from_utf8_lossy(&rest).into_owned();
    read_until(&mut stream, &mut seen, ": connected").await;
    let started = Instant::now();
    let stopping = tokio::task::spawn_blocking(move || node.terminate());
    let tail = read_to_close(&mut stream, Vec::new(), Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(tail.ends_with("0\r\n\r\n"), "no last chunk: {tail:?}");
    assert!(
        stopping.await.expect("join"),
        "a clean exit with a stream open"
    );
}
