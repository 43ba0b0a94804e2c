//! Hostile HTTP clients and hostile response headers against a real node on
//! loopback: slow heads, slow bodies, a connection flood from one address,
//! h2c with many streams, response smuggling through framing headers, and
//! 100k response headers.
//!
//! During every client attack another client's p99 latency (sequential
//! requests to a benign app) stays within 5x its idle p99 — an idle p99
//! below [`P99_FLOOR`] counts as the floor, since a loopback round trip on
//! a shared CI core is noise below it — and `/_/health` answers on a fresh
//! connection within [`HEALTH_WITHIN`]. Attackers connect from other
//! loopback addresses (127.0.x.y) so the per-client caps apply to them and
//! not to the measuring client.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Api, TestNode, install_crypto, manifest};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Requests per latency sample.
const SAMPLES: usize = 200;
/// An idle p99 below this counts as this much.
const P99_FLOOR: Duration = Duration::from_millis(2);
/// How much slower the p99 may get during an attack.
const P99_FACTOR: u32 = 5;
/// Health must answer within this during every attack.
const HEALTH_WITHIN: Duration = Duration::from_millis(100);

/// The node's flags: low timeouts so the test is quick.
const HEADER_TIMEOUT_MS: u64 = 1_000;
const BODY_TIMEOUT_MS: u64 = 4_000;
const IDLE_TIMEOUT_MS: u64 = 2_000;
const CONNECTIONS_PER_CLIENT: usize = 64;
const H2_STREAMS: u32 = 20;

/// The tests run one at a time: a flood in one would skew the other's latencies.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BENIGN: &str = "return function(req) return 'benign' end";
/// Sets the header named by `?h=` to `?v=` (default "0"), with a body that is
/// itself an HTTP response, as a smuggler would.
const HOSTILE: &str = r#"return function(req)
  return { headers = { [req.query.h] = req.query.v or "0" },
           body = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nhacked" }
end"#;
/// A response far larger than the socket buffers between node and client
/// (one request: pipelined ones would also meet hyper's header timer).
const BIG_BYTES: usize = 6 * 1024 * 1024;
const BIG: &str = "return function(req) return string.rep(string.rep('x', 1024 * 1024), 6) end";
const MANY_HEADERS: &str = r#"return function(req)
  local h = {}
  for i = 1, 100000 do h["x-" .. i] = "v" end
  return { headers = h, body = "many" }
end"#;

fn loopback(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, c, d))
}

/// The test process opens a few thousand sockets; a soft limit of 1,024 is common.
fn raise_own_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

async fn connect_from(ip: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(to).await
}

/// Reads one HTTP/1.1 response (head and a content-length body) off `stream`.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(length);
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Whether the server has closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Measures the benign app's latency from 127.0.0.1 and health on fresh connections.
struct Probe {
    client: reqwest::Client,
    url: String,
    addr: SocketAddr,
    admin: Api,
}

impl Probe {
    fn new(node: &TestNode) -> Probe {
        let client = reqwest::Client::builder()
            .local_address(loopback(0, 1))
            // Shorter than the node's header timeout, so a pooled connection
            // is never reused just as the node closes it.
            .pool_idle_timeout(Duration::from_millis(300))
            .build()
            .expect("client");
        Probe {
            client,
            url: format!("{}/benign/ping", node.url()),
            addr: format!("127.0.0.1:{}", node.http_port)
                .parse()
                .expect("addr"),
            admin: node.client(),
        }
    }

    async fn p99(&self) -> Duration {
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let started = Instant::now();
            let response = self.client.get(&self.url).send().await.expect("probe");
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.expect("probe body"), "benign");
            samples.push(started.elapsed());
        }
        samples.sort();
        samples[SAMPLES * 99 / 100 - 1]
    }

    /// `/_/health` on a fresh connection; returns how long it took.
    async fn health(&self) -> Duration {
        let started = Instant::now();
        let mut stream = connect_from(loopback(0, 1), self.addr)
            .await
            .expect("health connect");
        stream
            .write_all(b"GET /_/health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("health write");
        let (status, _) = read_response(&mut stream).await.expect("health answer");
        assert_eq!(status, 200);
        started.elapsed()
    }

    /// Asserts the benign app, health and the admin API keep answering
    /// during an attack, against the idle p99.
    async fn assert_unharmed(&self, attack: &str, idle_p99: Duration) {
        let health = self.health().await;
        let p99 = self.p99().await;
        let (status, body) = self.admin.get("/_/api/v1/apps").await;
        assert_eq!(status, 200, "{attack}: admin API {body}");
        let allowed = idle_p99.max(P99_FLOOR) * P99_FACTOR;
        println!(
            "{attack}: p99 {p99:?} (idle {idle_p99:?}, allowed {allowed:?}), health {health:?}"
        );
        assert!(p99 <= allowed, "{attack}: p99 {p99:?} > {allowed:?}");
        assert!(health <= HEALTH_WITHIN, "{attack}: health took {health:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_and_headers_do_not_take_the_node_down() {
    let _serial = SERIAL.lock().await;
    install_crypto();
    raise_own_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = [
        ("--http-header-timeout-ms", HEADER_TIMEOUT_MS.to_string()),
        ("--http-body-timeout-ms", BODY_TIMEOUT_MS.to_string()),
        // Slow enough that the body timeout, not the rate, cuts these bodies
        // (the rate is covered by body.rs's unit tests with a paused clock).
        ("--http-body-rate-bytes-min", "1".to_string()),
        ("--http-idle-timeout-ms", IDLE_TIMEOUT_MS.to_string()),
        (
            "--http-connections-per-client-max",
            CONNECTIONS_PER_CLIENT.to_string(),
        ),
        ("--http2-max-concurrent-streams", H2_STREAMS.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    node.start().await;
    let admin = node.client();
    let (status, body) = admin
        .deploy(
            "benign",
            &[
                (
                    "picloud.toml",
                    &manifest("benign", &[("GET", "/ping", "ping.lua")]),
                ),
                ("ping.lua", BENIGN),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hostile_routes = [
        ("GET", "/h", "h.lua"),
        ("GET", "/many", "many.lua"),
        ("GET", "/big", "big.lua"),
    ];
    let (status, body) = admin
        .deploy(
            "hostile",
            &[
                ("picloud.toml", &manifest("hostile", &hostile_routes)),
                ("h.lua", HOSTILE),
                ("many.lua", MANY_HEADERS),
                ("big.lua", BIG),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let probe = Probe::new(&node);
    probe.p99().await; // Warm the VM pool and the connection.
    let idle_p99 = probe.p99().await;
    let addr = probe.addr;

    slow_heads(&probe, addr, idle_p99).await;
    let reader = slow_reader_start(addr).await;
    slow_bodies(&probe, addr, idle_p99).await;
    slow_reader_check(reader).await;
    slow_download(addr).await;
    connection_flood(&probe, &node, addr, idle_p99).await;
    h2c_streams(&probe, &node, idle_p99).await;
    smuggling_and_framing_headers(&node, addr).await;
    assert!(
        !node.log().contains("panicked"),
        "the node panicked:\n{}",
        node.log()
    );
}

/// 2,000 half-sent request heads: the node keeps answering others, and
/// closes every half-open connection after its header timeout.
async fn slow_heads(probe: &Probe, addr: SocketAddr, idle_p99: Duration) {
    let mut open = Vec::new();
    for n in 0..2_000u32 {
        // 50 per address, under the per-client cap.
        let ip = loopback(2, 1 + (n / 50) as u8);
        let mut stream = connect_from(ip, addr).await.expect("slow head connect");
        stream
            .write_all(b"GET /benign/ping HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .expect("half a head");
        open.push(stream);
    }
    let opened = Instant::now();
    probe.assert_unharmed("slow heads", idle_p99).await;
    let limit = Duration::from_millis(HEADER_TIMEOUT_MS) * 3;
    for stream in &mut open {
        let left = limit.saturating_sub(opened.elapsed());
        assert!(
            closed_within(stream, left).await,
            "a half-sent head was still open after {limit:?}"
        );
    }
}

/// 1,100 POSTs announcing 1 MB and sending 10 bytes, to an app and to the
/// admin API: others keep answering, and each slow body ends in 408 `body_timeout`.
async fn slow_bodies(probe: &Probe, addr: SocketAddr, idle_p99: Duration) {
    let mut open = Vec::new();
    for n in 0..1_100u32 {
        let ip = loopback(3, 1 + (n / 50) as u8);
        let mut stream = connect_from(ip, addr).await.expect("slow body connect");
        let path = if n % 2 == 0 {
            "/benign/ping"
        } else {
            "/_/api/v1/apps"
        };
        stream
            .write_all(
                format!(
                    "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n0123456789"
                )
                .as_bytes(),
            )
            .await
            .expect("slow body");
        open.push(stream);
    }
    let opened = Instant::now();
    probe.assert_unharmed("slow bodies", idle_p99).await;
    let limit = Duration::from_millis(BODY_TIMEOUT_MS) * 2;
    for stream in &mut open {
        let left = limit.saturating_sub(opened.elapsed());
        let answer = tokio::time::timeout(left, read_response(stream))
            .await
            .expect("a slow body was never cut");
        let (status, body) = answer.expect("an answer, not a bare close");
        assert_eq!(status, 408, "{body}");
        assert!(body.contains("body_timeout"), "{body}");
    }
}

/// Asks for a large response and does not read it.
async fn slow_reader_start(addr: SocketAddr) -> (TcpStream, Instant) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    socket
        .bind(SocketAddr::new(loopback(7, 1), 0))
        .expect("bind");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /hostile/big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("requests");
    (stream, Instant::now())
}

/// The node dropped the connection of a client that stopped reading once
/// its writes made no progress for the idle timeout (noticed within twice
/// that): reading now ends early instead of receiving the whole response.
async fn slow_reader_check((mut stream, started): (TcpStream, Instant)) {
    let dropped_by = started + Duration::from_millis(IDLE_TIMEOUT_MS * 2 + 1_000);
    tokio::time::sleep_until(dropped_by.into()).await;
    let mut received = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let read_all = async {
        let mut head = vec![0u8; 16];
        stream.read_exact(&mut head).await.expect("a response");
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => received += read,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("the stalled connection was closed");
    assert!(
        received < BIG_BYTES,
        "a client that stopped reading still got all {received} bytes"
    );
}

/// A client that reads a large response slowly, but steadily, for longer
/// than the header timeout gets all of it.
async fn slow_download(addr: SocketAddr) {
    let mut stream = connect_from(loopback(7, 2), addr).await.expect("connect");
    stream
        .write_all(b"GET /hostile/big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("request");
    let started = Instant::now();
    let mut received = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    // Head and body: the body is the last BIG_BYTES bytes.
    while received < BIG_BYTES {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => received += read,
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(
        received >= BIG_BYTES,
        "a steady reader got only {received} bytes in {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() > Duration::from_millis(HEADER_TIMEOUT_MS),
        "the download was too quick to show anything: {:?}",
        started.elapsed()
    );
}

/// 300 connections from one address: at most the per-client cap stay open,
/// the rest are closed at once; others are unaffected; the address can
/// connect again once its connections are gone.
async fn connection_flood(probe: &Probe, node: &TestNode, addr: SocketAddr, idle_p99: Duration) {
    let flooder = loopback(4, 1);
    let mut open = Vec::new();
    let started = Instant::now();
    for _ in 0..300 {
        open.push(connect_from(flooder, addr).await.expect("flood connect"));
    }
    // The connections over the cap are closed at accept, well before the
    // header timeout could close the admitted ones.
    let mut refused = 0;
    while started.elapsed() < Duration::from_millis(HEADER_TIMEOUT_MS * 8 / 10) {
        let checks = open
            .iter_mut()
            .map(|stream| closed_within(stream, Duration::from_millis(20)));
        refused = futures::future::join_all(checks)
            .await
            .into_iter()
            .filter(|closed| *closed)
            .count();
        if refused >= 300 - CONNECTIONS_PER_CLIENT {
            break;
        }
    }
    assert!(
        refused >= 300 - CONNECTIONS_PER_CLIENT,
        "only {refused} of 300 were refused within {:?}",
        started.elapsed()
    );
    probe.assert_unharmed("connection flood", idle_p99).await;
    // Refusals are logged, at most once a second rather than once each.
    let logged = node.log().matches("HTTP connection refused").count();
    assert!(
        (1..=10).contains(&logged),
        "{logged} refusal lines for 236 refusals"
    );
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = connect_from(flooder, addr).await.expect("connect");
        stream
            .write_all(b"GET /benign/ping HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        if let Some((200, body)) = read_response(&mut stream).await {
            assert_eq!(body, "benign");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flooder was never let back in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 6 h2c connections x 200 streams of slow bodies: others keep answering,
/// and the slow streams end in 408 `body_timeout`.
async fn h2c_streams(probe: &Probe, node: &TestNode, idle_p99: Duration) {
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..6u8 {
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .local_address(loopback(5, 1 + connection))
            .build()
            .expect("h2 client");
        for _ in 0..200 {
            let client = client.clone();
            let url = format!("{}/benign/ping", node.url());
            tasks.spawn(async move {
                let body = futures::stream::iter([Ok::<_, std::io::Error>("0123456789")])
                    .chain(futures::stream::pending());
                let response = client
                    .post(url)
                    .header("content-length", "1000000")
                    .body(reqwest::Body::wrap_stream(body))
                    .send()
                    .await;
                match response {
                    Ok(response) => Some(response.status().as_u16()),
                    Err(_) => None,
                }
            });
        }
    }
    // Let the streams open before measuring.
    tokio::time::sleep(Duration::from_millis(200)).await;
    probe.assert_unharmed("h2c streams", idle_p99).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(BODY_TIMEOUT_MS) * 3;
    let mut timed_out = 0;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        if joined.expect("h2 task") == Some(408) {
            timed_out += 1;
        }
        if timed_out >= H2_STREAMS as usize {
            break;
        }
    }
    assert!(
        timed_out >= H2_STREAMS as usize,
        "only {timed_out} h2 streams ended in 408"
    );
    tasks.abort_all();
}

/// A script setting a framing header cannot smuggle a response onto a
/// keep-alive connection: it gets 500 `invalid_response` naming the header,
/// logged in the app's log, and the next request on the same connection
/// gets its own answer. 100k headers are refused the same way.
async fn smuggling_and_framing_headers(node: &TestNode, addr: SocketAddr) {
    let forbidden = [
        ("content-length", "0"),
        ("transfer-encoding", "chunked"),
        ("connection", "close"),
        ("keep-alive", "timeout=5"),
        ("upgrade", "websocket"),
        ("te", "trailers"),
        ("trailer", "x-a"),
        ("proxy-authenticate", "Basic"),
    ];
    for (name, value) in forbidden {
        let mut stream = connect_from(loopback(0, 1), addr).await.expect("connect");
        stream
            .write_all(
                format!("GET /hostile/h?h={name}&v={value} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes(),
            )
            .await
            .expect("hostile request");
        let (status, body) = read_response(&mut stream).await.expect("hostile answer");
        assert_eq!(status, 500, "{name}: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(body["error"]["code"], "invalid_response", "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(name), "{name}: {message}");
        stream
            .write_all(b"GET /benign/ping HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("benign request");
        let (status, body) = read_response(&mut stream)
            .await
            .expect("the benign answer on the same connection");
        assert_eq!((status, body.as_str()), (200, "benign"), "after {name}");
    }
    let (status, body) = node.client().with_key(None).get("/hostile/many").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "invalid_response", "{body}");
    // Every refusal is in the app's own log, with its code and header.
    let (status, logs) = node
        .client()
        .get("/_/api/v1/apps/hostile/logs?limit=100")
        .await;
    assert_eq!(status, 200, "{logs}");
    let logs = logs.to_string();
    for (name, _) in forbidden {
        assert!(
            logs.contains(name) && logs.contains("invalid_response"),
            "{name} missing from the app log: {logs}"
        );
    }
    assert!(logs.contains("more than 100 headers"), "{logs}");
}

/// A node started under the common 1,024 file-descriptor limit keeps its
/// connections below it: 2,000 half-sent heads from one address are mostly
/// refused at accept, the node never runs out of descriptors ("Too many open
/// files"), and health keeps answering on fresh connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_fd_limit_caps_connections_below_it() {
    let _serial = SERIAL.lock().await;
    raise_own_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = common::free_port();
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // The shell lowers the limit (soft and hard) for the node alone.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(common::BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--http", &format!("127.0.0.1:{http_port}")])
        .args(["--peer", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--http-header-timeout-ms", "2000"])
        .env_remove("PICLOUD_ADMIN_KEY")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn picloud");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
    let health = || async move {
        let started = Instant::now();
        let mut stream = connect_from(loopback(0, 1), addr).await.ok()?;
        stream
            .write_all(b"GET /_/health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .ok()?;
        let (status, _) = read_response(&mut stream).await?;
        (status == 200).then(|| started.elapsed())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while health().await.is_none() {
        assert!(Instant::now() < deadline, "node did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let node_log = || without_ansi(&std::fs::read_to_string(&log_path).unwrap_or_default());
    assert!(
        node_log().contains("connections_max=768"),
        "1,024 descriptors minus the reserve of 256: {}",
        node_log()
    );

    let mut open = Vec::new();
    for _ in 0..2_000 {
        // The node closes the refused ones; the connect itself still succeeds.
        if let Ok(mut stream) = connect_from(loopback(6, 1), addr).await {
            let _ = stream
                .write_all(b"GET /_/health HTTP/1.1\r\nx-slow: ")
                .await;
            open.push(stream);
        }
    }
    for _ in 0..10 {
        let took = health().await.expect("health during the flood");
        assert!(took <= HEALTH_WITHIN, "health took {took:?}");
    }
    drop(open);
    let log = node_log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("HTTP connection refused"), "{log}");
}

/// The node's log with its colour escapes removed.
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the escape (`ESC [ ... m`).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
