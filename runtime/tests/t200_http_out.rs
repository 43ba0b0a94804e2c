//! Outbound HTTP (`http.*` in Lua) through a real `picloud` process: the SSRF
//! guard refuses every spelling of a refused address, names resolved by a
//! test DNS stub, and redirects into refused space, with nothing connecting;
//! DNS rebinding never reaches the second address; requests and responses
//! round-trip; timeouts, byte limits and the per-app and per-node slots
//! hold; a slow upstream does not hold up the app's other requests; a
//! trigger run's request goes out with its delivery id; bad settings stop
//! the boot.
//!
//! All traffic goes to loopback: the upstreams and the DNS stub listen on
//! 127.0.0.0/8. Targets in other ranges (private, link-local, multicast, ...)
//! are tried from a node inside a network namespace of its own that has only
//! a loopback, so even a broken guard could send nothing anywhere.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Api, BIN, TestNode, install_crypto, run};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A minimal HTTP/1.1 upstream: one request per connection (`connection:
/// close`, so every request is a new connection and a new resolution),
/// counting accepted connections.
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    /// `/slow` requests that have arrived.
    slow_started: Arc<AtomicUsize>,
    /// Every request's headers, with its path as `:path`.
    requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl Upstream {
    async fn start(ip: &str, port: u16) -> Upstream {
        let listener = TcpListener::bind((ip, port)).await.expect("bind upstream");
        let upstream = Upstream {
            addr: listener.local_addr().expect("upstream address"),
            accepts: Arc::default(),
            slow_started: Arc::default(),
            requests: Arc::default(),
        };
        let served = upstream.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                served.accepts.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, served.clone()));
            }
        });
        upstream
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, upstream: Upstream) {
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let Ok(read) = stream.read(&mut chunk).await else {
            return;
        };
        if read == 0 || buffer.len() > 64 * 1024 {
            return;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if buffer[0] == 0x16 {
            // A TLS ClientHello: hang up, as a plain-HTTP server would.
            return;
        }
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_string();
    let target = request_line.next().unwrap_or("").to_string();
    let mut headers: HashMap<String, String> = HashMap::new();
    for line in lines.filter(|line| !line.is_empty()) {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            headers
                .entry(name)
                .and_modify(|earlier| *earlier = format!("{earlier}, {value}"))
                .or_insert(value);
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => body.extend_from_slice(&chunk[..read]),
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut recorded = headers.clone();
    recorded.insert(":path".into(), path.to_string());
    upstream.requests.lock().expect("requests").push(recorded);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .to_string()
    };
    let number = |name: &str| param(name).parse::<usize>().unwrap_or(0);
    let response: Vec<u8> = match path {
        "/echo" => {
            let echoed = json!({
                "method": method,
                "path": path,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            })
            .to_string();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-multi: a\r\nx-multi: b\r\n\
                 set-cookie: a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\nset-cookie: b=2\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{echoed}",
                echoed.len()
            )
            .into_bytes()
        }
        "/text" => {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
                .to_vec()
        }
        "/slow" => {
            upstream.slow_started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(number("ms") as u64)).await;
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow".to_vec()
        }
        "/big" => {
            let bytes = number("bytes");
            let mut response =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\nconnection: close\r\n\r\n")
                    .into_bytes();
            response.resize(response.len() + bytes, b'x');
            response
        }
        "/stream" => {
            // No content-length: the body runs to the end of the connection,
            // so only the client's running count can stop it.
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
                .await;
            let chunk = vec![b'y'; 16 * 1024];
            for _ in 0..number("bytes") / chunk.len() {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            return;
        }
        "/redirect" => format!(
            "HTTP/1.1 302 Found\r\nlocation: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            param("to")
        )
        .into_bytes(),
        _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// A DNS stub on loopback: answers A queries from a table (each name's
/// answers are handed out in order, the last one repeated), AAAA queries
/// with no addresses, unknown names with NXDOMAIN; counts A queries.
#[derive(Clone)]
struct DnsStub {
    addr: SocketAddr,
    answers: Arc<Mutex<HashMap<String, VecDeque<Ipv4Addr>>>>,
    a_queries: Arc<Mutex<HashMap<String, usize>>>,
}

impl DnsStub {
    async fn start(answers: &[(&str, &[Ipv4Addr])]) -> DnsStub {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS stub");
        let stub = DnsStub {
            addr: socket.local_addr().expect("stub address"),
            answers: Arc::new(Mutex::new(
                answers
                    .iter()
                    .map(|(name, ips)| (name.to_string(), ips.iter().copied().collect()))
                    .collect(),
            )),
            a_queries: Arc::default(),
        };
        let serving = stub.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            while let Ok((length, from)) = socket.recv_from(&mut buffer).await {
                if let Some(reply) = serving.reply(&buffer[..length]) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        stub
    }

    fn reply(&self, query: &[u8]) -> Option<Vec<u8>> {
        // The question: labels from byte 12, then type and class.
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let length = usize::from(*query.get(at)?);
            at += 1;
            if length == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(query.get(at..at + length)?).to_ascii_lowercase());
            at += length;
        }
        let question_end = at + 4;
        let record_type = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
        let name = labels.join(".");
        let mut answers = Vec::new();
        let known = {
            let mut table = self.answers.lock().expect("answers");
            match table.get_mut(&name) {
                Some(queue) => {
                    if record_type == 1 {
                        *self
                            .a_queries
                            .lock()
                            .expect("queries")
                            .entry(name.clone())
                            .or_default() += 1;
                        let ip = if queue.len() > 1 {
                            queue.pop_front()
                        } else {
                            queue.front().copied()
                        };
                        answers.extend(ip);
                    }
                    true
                }
                None => false,
            }
        };
        let mut reply = query.get(..question_end)?.to_vec();
        reply[2] = 0x81; // response, recursion desired
        reply[3] = if known { 0x80 } else { 0x83 }; // recursion available; NXDOMAIN
        reply[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        reply[8..12].fill(0);
        for ip in answers {
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
            reply.extend_from_slice(&ip.octets());
        }
        Some(reply)
    }

    fn a_queries(&self, name: &str) -> usize {
        self.a_queries
            .lock()
            .expect("queries")
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

/// A node with the test app deployed and these extra flags.
async fn node_with(dir: &Path, args: &[String]) -> (TestNode, Api) {
    let mut node = TestNode::new(dir);
    node.extra_args = args.to_vec();
    node.start().await;
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/http_out");
    node.cli(&["deploy", app.to_str().expect("utf-8")]).ok();
    let api = node.client().with_key(None);
    (node, api)
}

/// Runs `spec` through the app's `call.lua`.
async fn call(api: &Api, spec: Value) -> Value {
    let (status, out) = api.post_json("/httpout/call", &spec).await;
    assert_eq!(status, 200, "{spec}: {out}");
    out
}

fn error_of(out: &Value) -> &str {
    out["error"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bypass_is_refused_and_nothing_connects() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed = Upstream::start("127.0.0.1", 0).await;
    let refused = Upstream::start("127.0.0.1", 0).await;
    let refused_v6 = match TcpListener::bind("[::1]:0").await {
        Ok(probe) => {
            let port = probe.local_addr().expect("address").port();
            drop(probe);
            Some(Upstream::start("::1", port).await)
        }
        Err(_) => None,
    };
    let dns = DnsStub::start(&[("loop.test", &[Ipv4Addr::LOCALHOST])]).await;
    let (_node, api) = node_with(
        dir.path(),
        &[
            format!("--http-out-allow={}", allowed.addr),
            format!("--http-out-dns={}", dns.addr),
        ],
    )
    .await;
    let r = refused.addr.port();
    let r6 = refused_v6.as_ref().map_or(r, |u| u.addr.port());
    let redirect = |to: &str| allowed.url(&format!("/redirect?to={to}"));
    let rows: Vec<(String, &str)> = vec![
        (format!("http://127.0.0.1:{r}/"), "loopback"),
        (format!("http://2130706433:{r}/"), "loopback"),
        (format!("http://0x7f000001:{r}/"), "loopback"),
        (format!("http://0177.0.0.1:{r}/"), "loopback"),
        (format!("http://127.1:{r}/"), "loopback"),
        (format!("http://127.0.0.2:{r}/"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{r}/"), "loopback"),
        (format!("http://[::ffff:7f00:1]:{r}/"), "loopback"),
        (format!("http://[::127.0.0.1]:{r}/"), "loopback"),
        (format!("http://[64:ff9b::127.0.0.1]:{r}/"), "loopback"),
        (format!("http://[::1]:{r6}/"), "loopback"),
        (format!("http://localhost:{r}/"), "loopback"),
        (format!("http://localhost.:{r}/"), "loopback"),
        (format!("http://LocalHost:{r}/"), "loopback"),
        (format!("http://api.localhost:{r}/"), "loopback"),
        (format!("http://loop.test:{r}/"), "loopback"),
        (format!("http://loop.test.:{r}/"), "loopback"),
        (format!("http://0.0.0.0:{r}/"), "unspecified"),
        (format!("http://0:{r}/"), "unspecified"),
        (format!("http://[::]:{r6}/"), "unspecified"),
        (redirect(&format!("http://127.0.0.1:{r}/")), "loopback"),
        (redirect(&format!("http://2130706433:{r}/")), "loopback"),
        (redirect(&format!("http://loop.test:{r}/")), "loopback"),
        ("file:///etc/passwd".into(), "scheme"),
        (format!("ftp://127.0.0.1:{r}/"), "scheme"),
    ];
    for (url, class) in &rows {
        let out = call(
            &api,
            json!({"via": "get", "url": url, "options": {"redirects": 1, "timeout_ms": 2000}}),
        )
        .await;
        let error = error_of(&out);
        assert!(error.starts_with("http_blocked: "), "{url}: {out}");
        assert!(error.contains(class), "{url}: {error} should name {class}");
    }
    assert_eq!(refused.accepts(), 0, "a refused target was connected to");
    if let Some(v6) = &refused_v6 {
        assert_eq!(v6.accepts(), 0, "[::1] was connected to");
    }
    let redirect_rows = rows
        .iter()
        .filter(|(url, _)| url.contains("/redirect?"))
        .count();
    assert_eq!(
        allowed.accepts(),
        redirect_rows,
        "each redirect row reaches the allowed listener once"
    );

    // Positive control: the same node reaches the allowed listener, and a
    // redirect within it is followed.
    let out = call(
        &api,
        json!({"via": "get", "url": redirect(&allowed.url("/text")), "options": {"redirects": 1}}),
    )
    .await;
    assert_eq!(
        (out["status"].clone(), out["body"].clone()),
        (json!(200), json!("hello")),
        "{out}"
    );

    // A name the DNS server does not know fails as DNS, not as the guard.
    let out = call(&api, json!({"via": "get", "url": "http://unknown.test/"})).await;
    let error = error_of(&out);
    assert!(
        error.starts_with("http_failed: ") && error.contains("no addresses"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_never_reaches_the_second_address() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Upstream::start("127.0.0.2", 0).await;
    let port = first.addr.port();
    let second = Upstream::start("127.0.0.3", port).await;
    let dns = DnsStub::start(&[(
        "rebind.test",
        &[Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
    )])
    .await;
    let (_node, api) = node_with(
        dir.path(),
        &[
            format!("--http-out-allow=127.0.0.2:{port}"),
            format!("--http-out-dns={}", dns.addr),
            "--http-out-per-node-max=1".into(),
        ],
    )
    .await;
    let url = format!("http://rebind.test:{port}/text");

    // The first answer is allowed: one lookup, one connection, to it.
    let out = call(&api, json!({"via": "get", "url": url})).await;
    assert_eq!(out["body"], "hello", "{out}");
    assert_eq!(
        dns.a_queries("rebind.test"),
        1,
        "one resolution per connection"
    );
    assert_eq!(first.accepts(), 1);

    // The name now points at 127.0.0.3: checked again, refused, never dialled.
    let out = call(&api, json!({"via": "get", "url": url})).await;
    let error = error_of(&out);
    assert!(error.starts_with("http_blocked: "), "{out}");
    assert!(error.contains("127.0.0.3"), "{error}");
    assert_eq!(dns.a_queries("rebind.test"), 2);
    assert_eq!(
        second.accepts(),
        0,
        "a connection reached the rebound address"
    );
    assert_eq!(first.accepts(), 1);

    // The node's slots: one request in flight, the next fails at once.
    let slow = {
        let (api, url) = (api.clone(), format!("http://{}/slow?ms=1500", first.addr));
        tokio::spawn(async move { call(&api, json!({"via": "get", "url": url})).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.slow_started.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let out = call(
        &api,
        json!({"via": "get", "url": format!("http://{}/text", first.addr)}),
    )
    .await;
    let error = error_of(&out);
    assert!(
        error.starts_with("http_busy: ") && error.contains("node"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "not queued"
    );
    assert_eq!(slow.await.expect("slow request")["body"], "slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_round_trip_within_their_limits() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = Upstream::start("127.0.0.1", 0).await;
    let (node, api) = node_with(
        dir.path(),
        &[
            format!("--http-out-allow={}", upstream.addr),
            "--script-timeout-ms=2500".into(),
            "--http-out-response-bytes-max=100000".into(),
            "--http-out-request-bytes-max=1000".into(),
            "--http-out-per-app-max=2".into(),
        ],
    )
    .await;
    let echo = upstream.url("/echo");

    // GET with headers both ways; the response's JSON is decoded.
    let out = call(
        &api,
        json!({"via": "get", "url": echo, "options": {"headers": {"X-Test": "1", "x-list": ["a", "b"]}}}),
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["json"]["method"], "GET");
    assert_eq!(out["json"]["headers"]["x-test"], "1");
    assert!(
        out["json"]["headers"]["user-agent"]
            .as_str()
            .is_some_and(|agent| agent.starts_with("PiCloud/")),
        "{out}"
    );
    assert_eq!(out["json"]["headers"]["x-list"], "a, b");
    assert_eq!(out["headers"]["content-type"], "application/json");
    assert_eq!(out["headers"]["x-multi"], "a, b");
    assert_eq!(
        out["headers"]["set-cookie"],
        "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\nb=2"
    );

    // POST a string body, then a table sent as JSON.
    let out = call(
        &api,
        json!({"via": "post", "url": echo, "body": "plain body", "options": {"headers": {"content-type": "text/plain"}}}),
    )
    .await;
    assert_eq!(
        (
            out["json"]["method"].clone(),
            out["json"]["body"].clone(),
            out["json"]["headers"]["content-type"].clone()
        ),
        (json!("POST"), json!("plain body"), json!("text/plain")),
        "{out}"
    );
    let out = call(
        &api,
        json!({"via": "post", "url": echo, "body": {"a": 1, "list": [1, 2]}}),
    )
    .await;
    assert_eq!(
        out["json"]["headers"]["content-type"], "application/json",
        "{out}"
    );
    let sent: Value =
        serde_json::from_str(out["json"]["body"].as_str().unwrap_or("")).expect("JSON body");
    assert_eq!(sent, json!({"a": 1, "list": [1, 2]}));
    let out = call(
        &api,
        json!({"via": "request", "options": {"method": "put", "url": echo, "json": {"k": "v"}}}),
    )
    .await;
    assert_eq!(out["json"]["method"], "PUT", "{out}");
    let out = call(
        &api,
        json!({"via": "get", "url": echo, "options": {"headers": {"User-Agent": "mine/1"}}}),
    )
    .await;
    assert_eq!(out["json"]["headers"]["user-agent"], "mine/1", "{out}");

    // A non-JSON response: the body, no json.
    let out = call(&api, json!({"via": "get", "url": upstream.url("/text")})).await;
    assert_eq!(
        (out["body"].clone(), out["json"].clone()),
        (json!("hello"), Value::Null),
        "{out}"
    );

    // Redirects are not followed unless asked.
    let to_text = upstream.url(&format!("/redirect?to={}", upstream.url("/text")));
    let out = call(&api, json!({"via": "get", "url": to_text})).await;
    assert_eq!(out["status"], 302, "{out}");

    // Timeout, byte limits, a timeout over the maximum.
    let started = Instant::now();
    let out = call(
        &api,
        json!({"via": "get", "url": upstream.url("/slow?ms=5000"), "options": {"timeout_ms": 300}}),
    )
    .await;
    assert!(error_of(&out).starts_with("http_timeout: "), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for path in ["/big?bytes=200000", "/stream?bytes=2000000"] {
        let out = call(&api, json!({"via": "get", "url": upstream.url(path)})).await;
        assert!(
            error_of(&out).starts_with("http_too_large: "),
            "{path}: {out}"
        );
    }
    let out = call(
        &api,
        json!({"via": "get", "url": upstream.url("/big?bytes=100000")}),
    )
    .await;
    assert_eq!(
        out["body"].as_str().map(str::len),
        Some(100_000),
        "at the limit is fine"
    );
    let out = call(
        &api,
        json!({"via": "post", "url": echo, "body": "z".repeat(1001)}),
    )
    .await;
    assert!(error_of(&out).starts_with("http_too_large: "), "{out}");
    // The invocation's wall clock bounds a request with a longer timeout.
    let started = Instant::now();
    let (status, out) = api
        .post_json(
            "/httpout/call",
            &json!({"via": "get", "url": upstream.url("/slow?ms=10000"), "options": {"timeout_ms": 10000}}),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}: {status} {out}",
        started.elapsed()
    );
    assert!(
        status == 504 || error_of(&out).starts_with("http_timeout: "),
        "{status} {out}"
    );
    let out = call(
        &api,
        json!({"via": "get", "url": echo, "options": {"timeout_ms": 60001}}),
    )
    .await;
    assert!(error_of(&out).starts_with("invalid_field: "), "{out}");

    // https to a plain-HTTP listener: the TLS handshake fails, named.
    let out = call(
        &api,
        json!({"via": "get", "url": format!("https://{}/text", upstream.addr)}),
    )
    .await;
    assert!(error_of(&out).starts_with("http_failed: "), "{out}");

    // A trigger run's request goes out (not buffered with its writes),
    // carrying the run's delivery id; the run commits the answer's status.
    let admin = node.client();
    let (status, body) = api
        .call(
            "PUT",
            "/httpout/hook/h1",
            Some(json!({"url": echo}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = admin
            .get("/_/api/v1/apps/httpout/kv?prefix=notified/")
            .await;
        if page["items"][0]["value"] == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the trigger's request never completed: {page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys: Vec<String> = upstream
        .requests
        .lock()
        .expect("requests")
        .iter()
        .filter_map(|request| request.get("idempotency-key").cloned())
        .collect();
    assert!(
        keys.len() == 1 && !keys[0].is_empty(),
        "one request with the delivery id: {keys:?}"
    );

    // Argument mistakes are the script's, at its line.
    for (options, says) in [
        (
            json!({"url": echo, "redirects": 6}),
            "redirects must be an integer from 0 to 5",
        ),
        (
            json!({"url": echo, "body": "a", "json": {"b": 1}}),
            "give body or json, not both",
        ),
        (
            json!({"url": echo, "timeout_ms": 0}),
            "timeout_ms must be a positive number",
        ),
        (json!({"url": 5}), "url must be a string"),
        (
            json!({"url": echo, "headers": {"content-length": "5"}}),
            "invalid_field: ",
        ),
        (json!({"url": "http://exa mple.com/"}), "invalid_field: "),
    ] {
        let out = call(&api, json!({"via": "request", "options": options})).await;
        assert!(error_of(&out).contains(says), "{options}: {out}");
    }

    // A slow upstream holds one of the app's slots, not its other requests.
    let slow = |ms: u64| {
        let (api, url) = (api.clone(), upstream.url(&format!("/slow?ms={ms}")));
        tokio::spawn(async move { call(&api, json!({"via": "get", "url": url})).await })
    };
    let wait_slow_started = |count: usize| {
        let upstream = upstream.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while upstream.slow_started.load(Ordering::SeqCst) < count {
                assert!(
                    Instant::now() < deadline,
                    "slow request {count} never arrived"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let before = upstream.slow_started.load(Ordering::SeqCst);
    let first = slow(1500);
    wait_slow_started(before + 1).await;
    let out = call(&api, json!({"via": "get", "url": upstream.url("/text")})).await;
    assert_eq!(out["body"], "hello", "{out}");
    assert!(
        !first.is_finished(),
        "the fast request answered while the slow one waits"
    );
    let second = slow(1500);
    wait_slow_started(before + 2).await;
    let out = call(&api, json!({"via": "get", "url": upstream.url("/text")})).await;
    assert!(error_of(&out).starts_with("http_busy: "), "{out}");
    for task in [first, second] {
        let out = task.await.expect("slow request");
        assert_eq!(out["body"], "slow", "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_allow_entry_or_dns_server_stops_the_boot_naming_it() {
    for (flag, named) in [
        ("--http-out-allow=10.0.0.5:9000,10.0.0.7", "10.0.0.7"),
        ("--http-out-allow=192.168.1.5/24", "192.168.1.5/24"),
        ("--http-out-dns=resolver.local", "resolver.local"),
        ("--http-out-timeout-ms=70000", "http_out_timeout_ms"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = TestNode::new(dir.path());
        node.extra_args = vec![flag.to_string()];
        assert!(!node.start_expecting_exit(), "{flag} was accepted");
        assert!(node.log().contains(named), "{flag}: {}", node.log());
    }
}

/// A network namespace with only its loopback up, deleted on drop: whatever
/// a process inside it sends to another address goes nowhere.
struct EmptyNetns {
    name: String,
}

impl EmptyNetns {
    fn create() -> Result<EmptyNetns, String> {
        let name = format!("pc200n{}", std::process::id());
        // A namespace left by a killed run with this pid is replaced.
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])?;
        let netns = EmptyNetns { name };
        run(
            "ip",
            &[
                "netns",
                "exec",
                &netns.name,
                "ip",
                "link",
                "set",
                "lo",
                "up",
            ],
        )?;
        Ok(netns)
    }

    /// `program args` inside the namespace.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args);
        command
    }

    /// POSTs `body` to `url` from inside the namespace; the answer's JSON.
    fn post_json(&self, url: &str, body: &Value) -> Value {
        let output = self
            .command(
                "curl",
                &[
                    "-sS",
                    "-H",
                    "content-type: application/json",
                    "--data-binary",
                    &body.to_string(),
                    url,
                ],
            )
            .output()
            .expect("curl in the namespace");
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{url}: {}", String::from_utf8_lossy(&output.stderr)))
    }
}

impl Drop for EmptyNetns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_refused_ranges_are_refused_from_an_empty_namespace() {
    let netns = match EmptyNetns::create() {
        Ok(netns) => netns,
        Err(why) => {
            eprintln!("skipped: needs root and iproute2 for a network namespace ({why})");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.netns = Some(netns.name.clone());
    // The node's own gateway is the allowed target: its redirect route sends
    // the redirects, and it answers the positive control.
    node.extra_args = vec![format!("--http-out-allow=127.0.0.1:{}", node.http_port)];
    node.spawn();
    let base = node.url();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = netns
            .command("curl", &["-fsS", &format!("{base}/_/health")])
            .output()
            .expect("curl in the namespace");
        let body: Value = serde_json::from_slice(&health.stdout).unwrap_or(Value::Null);
        if body["leader"].is_u64() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node never healthy: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/http_out");
    let deploy = netns
        .command(BIN, &["deploy", app.to_str().expect("utf-8")])
        .env("PICLOUD_URL", &base)
        .env("PICLOUD_KEY", node.admin_key())
        .env("PICLOUD_CREDENTIALS", dir.path().join("credentials.toml"))
        .output()
        .expect("deploy in the namespace");
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );

    let redirect = |to: &str| format!("{base}/httpout/redirect?to={to}");
    let rows: Vec<(String, &str)> = vec![
        ("http://10.0.0.1/".into(), "private"),
        ("http://10.255.255.254:8080/".into(), "private"),
        ("http://100.64.0.1/".into(), "shared_address_space"),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "link_local",
        ),
        ("http://172.16.0.1/".into(), "private"),
        ("http://172.31.255.1/".into(), "private"),
        ("http://192.0.0.1/".into(), "ietf_protocol"),
        ("http://192.168.0.1/".into(), "private"),
        ("http://198.18.0.1/".into(), "benchmarking"),
        ("http://224.0.0.1/".into(), "multicast"),
        ("http://240.0.0.1/".into(), "reserved"),
        ("http://255.255.255.255/".into(), "broadcast"),
        ("http://[fc00::1]/".into(), "unique_local"),
        ("http://[fd12:3456::1]/".into(), "unique_local"),
        ("http://[fe80::1]/".into(), "link_local"),
        ("http://[ff02::1]/".into(), "multicast"),
        ("http://[::ffff:169.254.169.254]/".into(), "link_local"),
        ("http://[::ffff:10.0.0.1]/".into(), "private"),
        ("http://[::10.0.0.1]/".into(), "private"),
        ("http://[64:ff9b::a9fe:a9fe]/".into(), "link_local"),
        ("http://[64:ff9b::192.168.0.1]/".into(), "private"),
        ("http://0xa9fea9fe/".into(), "link_local"),
        ("http://2852039166/".into(), "link_local"),
        ("http://012.0.0.1/".into(), "private"),
        (
            redirect("http://169.254.169.254/latest/meta-data/"),
            "link_local",
        ),
        (redirect("http://10.0.0.1/"), "private"),
    ];
    let call_url = format!("{base}/httpout/call");
    for (url, class) in &rows {
        let out = netns.post_json(
            &call_url,
            &json!({"via": "get", "url": url, "options": {"redirects": 1, "timeout_ms": 2000}}),
        );
        let error = error_of(&out);
        assert!(error.starts_with("http_blocked: "), "{url}: {out}");
        assert!(error.contains(class), "{url}: {error} should name {class}");
    }
    // Positive control: the allowed target answers through the same path.
    let out = netns.post_json(
        &call_url,
        &json!({"via": "get", "url": format!("{base}/_/health")}),
    );
    assert_eq!(out["status"], 200, "{out}");
}
