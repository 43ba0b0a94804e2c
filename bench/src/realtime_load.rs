//! `realtime-load`: the load generator of `bench/realtime.sh`.
//!
//! It measures publish → receive latency of an ephemeral fan-out the same way
//! for PiCloud (Server-Sent Events from `/_/realtime/...`, publishes through an
//! app route calling `pubsub.publish`) and for a NATS cluster (the text
//! protocol over TCP), so the two numbers are comparable: each message carries
//! its send time in microseconds since the Unix epoch, taken just before the
//! publisher writes it, and each subscriber subtracts it from its receive time
//! (client and servers share one machine and one clock).
//!
//! Both clients are written against raw TCP on purpose: a bench client must
//! cost the same per message on both sides, and 1,000–5,000 connections must
//! fit in one small process.
//!
//! ```text
//! realtime-load sse  --subs H:P,H:P,H:P --path /_/realtime/APP/TOPIC --publish H:P,... --publish-path /APP/pub
//!                    [--n 1000] [--rate 100] [--secs 10]
//! realtime-load nats --subs H:P,H:P,H:P --publish H:P,... --subject bench.t [--n 1000] [--rate 100] [--secs 10]
//! realtime-load idle --subs H:P --path /_/realtime/APP/TOPIC --n 5000 [--hold-secs 30]
//! ```
//!
//! `sse` and `nats` print one line: `received N/M p50 X ms p99 Y ms max Z ms`
//! (M = publishes × subscribers). `idle` prints `connected N` once every
//! subscription has its response headers, then holds them for `--hold-secs`
//! (the script reads the server's RSS meanwhile).
//!
//! Every loop is bounded: connecting (30 s), the warm-up (until every
//! subscriber has seen one message, at most 15 s), the measured window
//! (`--secs`), and the drain after it (2 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Longest time to open every subscription.
const CONNECT_WINDOW: Duration = Duration::from_secs(30);
/// Longest warm-up: publishing until every subscriber has seen a message.
const WARMUP_WINDOW: Duration = Duration::from_secs(15);
/// How long subscribers keep reading after the last measured publish.
const DRAIN: Duration = Duration::from_secs(2);
/// Largest subscriber count accepted (the bench's own bound).
const SUBSCRIBERS_MAX: usize = 20_000;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[derive(Debug)]
struct Args {
    mode: String,
    subs: Vec<String>,
    path: String,
    publish: Vec<String>,
    publish_path: String,
    subject: String,
    n: usize,
    rate: u64,
    secs: u64,
    hold_secs: u64,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut argv = std::env::args().skip(1);
    let mode = argv
        .next()
        .ok_or("usage: realtime-load sse|nats|idle [options]")?;
    let mut args = Args {
        mode,
        subs: Vec::new(),
        path: String::new(),
        publish: Vec::new(),
        publish_path: String::new(),
        subject: "bench.t".into(),
        n: 1000,
        rate: 100,
        secs: 10,
        hold_secs: 30,
    };
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let list = || value.split(',').map(str::to_string).collect::<Vec<_>>();
        match flag.as_str() {
            "--subs" => args.subs = list(),
            "--path" => args.path = value.clone(),
            "--publish" => args.publish = list(),
            "--publish-path" => args.publish_path = value.clone(),
            "--subject" => args.subject = value.clone(),
            "--n" => args.n = value.parse()?,
            "--rate" => args.rate = value.parse()?,
            "--secs" => args.secs = value.parse()?,
            "--hold-secs" => args.hold_secs = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.subs.is_empty() {
        return Err("--subs is required".into());
    }
    if args.n == 0 || args.n > SUBSCRIBERS_MAX {
        return Err(format!("--n must be 1..={SUBSCRIBERS_MAX}").into());
    }
    if args.rate == 0 || args.rate > 10_000 {
        return Err("--rate must be 1..=10000".into());
    }
    Ok(args)
}

/// What every subscriber shares: how many are connected, how many have seen
/// at least one message (the warm-up's end), and the measured window.
#[derive(Default)]
struct Shared {
    warmed: AtomicUsize,
    connected: AtomicUsize,
    /// Messages sent at or after this time (µs) are measured; 0 = warm-up.
    measure_from_us: AtomicU64,
    /// Messages sent after this time are not measured (the drain).
    measure_until_us: AtomicU64,
}

/// One subscriber's latencies (µs), read by the driver at the end. Its own
/// lock, so recording a message never waits for another subscriber.
type Latencies = Arc<std::sync::Mutex<Vec<u64>>>;

impl Shared {
    /// Records one received message whose send time is `sent_us`.
    fn received(&self, sent_us: u64, first: &mut bool, latencies: &Latencies) {
        if *first {
            *first = false;
            self.warmed.fetch_add(1, Ordering::Relaxed);
        }
        let from = self.measure_from_us.load(Ordering::Relaxed);
        let until = self.measure_until_us.load(Ordering::Relaxed);
        if from != 0 && sent_us >= from && (until == 0 || sent_us <= until) {
            let latency = now_us().saturating_sub(sent_us);
            if let Ok(mut list) = latencies.lock() {
                list.push(latency);
            }
        }
    }
}

/// The send time in a message: the first run of digits after `"t":` (SSE
/// JSON) or the whole payload (NATS).
fn sent_time(text: &str) -> Option<u64> {
    let start = text.find("\"t\":").map(|i| i + 4).unwrap_or(0);
    let digits: String = text[start..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------- SSE ----

/// Reads an HTTP/1.1 response head; returns the status and whether the body
/// is chunked.
async fn read_head(reader: &mut BufReader<TcpStream>) -> Result<(u16, bool), BoxError> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .ok_or("no status line")?
        .parse()?;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err("connection closed in the head".into());
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            return Ok((status, chunked));
        }
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
}

/// Feeds the body of a (possibly chunked) response to `on_line`, one SSE
/// line at a time.
struct BodyLines {
    chunked: bool,
    /// Bytes left in the current chunk (chunked bodies only).
    left: usize,
    pending: Vec<u8>,
}

impl BodyLines {
    async fn next_line(
        &mut self,
        reader: &mut BufReader<TcpStream>,
    ) -> Result<Option<String>, BoxError> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            if !self.chunked {
                let mut buf = [0u8; 4096];
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    return Ok(None);
                }
                self.pending.extend_from_slice(&buf[..n]);
                continue;
            }
            if self.left == 0 {
                let mut size = String::new();
                if reader.read_line(&mut size).await? == 0 {
                    return Ok(None);
                }
                let size = size.trim();
                if size.is_empty() {
                    // The CRLF that ends the previous chunk.
                    continue;
                }
                let hex = size.split(';').next().unwrap_or("0");
                self.left = usize::from_str_radix(hex, 16)?;
                if self.left == 0 {
                    return Ok(None);
                }
            }
            let mut buf = vec![0u8; self.left.min(4096)];
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.left -= n;
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// Opens one SSE subscription and returns the reader positioned at its body.
async fn sse_open(addr: &str, path: &str) -> Result<(BufReader<TcpStream>, BodyLines), BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes()).await?;
    let (status, chunked) = read_head(&mut reader).await?;
    if status != 200 {
        return Err(format!("{addr}{path}: status {status}").into());
    }
    Ok((
        reader,
        BodyLines {
            chunked,
            left: 0,
            pending: Vec::new(),
        },
    ))
}

async fn sse_subscriber(
    addr: String,
    path: String,
    shared: Arc<Shared>,
    latencies: Latencies,
) -> Result<(), BoxError> {
    let (mut reader, mut body) = sse_open(&addr, &path).await?;
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut first = true;
    while let Some(line) = body.next_line(&mut reader).await? {
        if let Some(data) = line.strip_prefix("data:") {
            if let Some(sent) = sent_time(data) {
                shared.received(sent, &mut first, &latencies);
            }
        } else if line.starts_with("event: overflow") {
            return Err("overflow".into());
        }
    }
    Ok(())
}

/// One keep-alive connection that POSTs `{"t": <now µs>}` to `path`.
struct HttpPublisher {
    reader: BufReader<TcpStream>,
    addr: String,
    path: String,
}

impl HttpPublisher {
    async fn connect(addr: &str, path: &str) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpPublisher {
            reader: BufReader::new(stream),
            addr: addr.to_string(),
            path: path.to_string(),
        })
    }

    async fn publish(&mut self) -> Result<(), BoxError> {
        let body = format!("{{\"t\":{}}}", now_us());
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            self.path,
            self.addr,
            body.len(),
            body
        );
        self.reader.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let status = line.split_whitespace().nth(1).unwrap_or("?").to_string();
        let mut length = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                return Err("publisher connection closed".into());
            }
            let trimmed = line.trim_end().to_ascii_lowercase();
            if trimmed.is_empty() {
                break;
            }
            if let Some(value) = trimmed.strip_prefix("content-length:") {
                length = value.trim().parse()?;
            }
        }
        let mut rest = vec![0u8; length];
        self.reader.read_exact(&mut rest).await?;
        if status != "200" {
            return Err(format!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&rest)
            )
            .into());
        }
        Ok(())
    }
}

// --------------------------------------------------------------- NATS ----

async fn nats_connect(addr: &str) -> Result<BufReader<TcpStream>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    let mut info = String::new();
    reader.read_line(&mut info).await?;
    if !info.starts_with("INFO") {
        return Err(format!("{addr}: not a NATS server ({info:?})").into());
    }
    reader
        .get_mut()
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        .await?;
    Ok(reader)
}

/// Sends PING and waits for PONG: the server has handled everything before it.
async fn nats_flush(reader: &mut BufReader<TcpStream>) -> Result<(), BoxError> {
    reader.get_mut().write_all(b"PING\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err("NATS connection closed".into());
        }
        if line.starts_with("PONG") {
            return Ok(());
        }
    }
}

async fn nats_subscriber(
    addr: String,
    subject: String,
    shared: Arc<Shared>,
    latencies: Latencies,
) -> Result<(), BoxError> {
    let mut reader = nats_connect(&addr).await?;
    reader
        .get_mut()
        .write_all(format!("SUB {subject} 1\r\n").as_bytes())
        .await?;
    nats_flush(&mut reader).await?;
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut first = true;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            break;
        }
        if line.starts_with("PING") {
            reader.get_mut().write_all(b"PONG\r\n").await?;
        } else if line.starts_with("MSG") {
            let size: usize = line
                .split_whitespace()
                .last()
                .ok_or("MSG without size")?
                .parse()?;
            let mut payload = vec![0u8; size + 2];
            reader.read_exact(&mut payload).await?;
            let text = String::from_utf8_lossy(&payload[..size]);
            if let Some(sent) = sent_time(&text) {
                shared.received(sent, &mut first, &latencies);
            }
        }
    }
    Ok(())
}

// -------------------------------------------------------------- driver ----

/// A publisher of either kind.
enum Publisher {
    Http(HttpPublisher),
    Nats(BufReader<TcpStream>, String),
}

impl Publisher {
    async fn publish(&mut self) -> Result<(), BoxError> {
        match self {
            Publisher::Http(http) => http.publish().await,
            Publisher::Nats(reader, subject) => {
                let body = format!("{{\"t\":{}}}", now_us());
                let frame = format!("PUB {subject} {}\r\n{body}\r\n", body.len());
                reader.get_mut().write_all(frame.as_bytes()).await?;
                Ok(())
            }
        }
    }
}

/// Publishes at `rate` per second in all, round-robin over `publishers`,
/// until `deadline` or (when `stop_when_warm`) every subscriber has a
/// message. Returns how many were published.
async fn publish_loop(
    publishers: &mut [Publisher],
    rate: u64,
    deadline: Instant,
    warm: Option<(&Shared, usize)>,
) -> Result<u64, BoxError> {
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        if let Some((shared, n)) = warm
            && shared.warmed.load(Ordering::Relaxed) >= n
        {
            break;
        }
        ticker.tick().await;
        let index = (sent as usize) % publishers.len();
        publishers[index].publish().await?;
        sent += 1;
    }
    Ok(sent)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

async fn run_fanout(args: Args) -> Result<(), BoxError> {
    let shared = Arc::new(Shared::default());
    let mut tasks = Vec::with_capacity(args.n);
    let mut all_latencies = Vec::with_capacity(args.n);
    for i in 0..args.n {
        let addr = args.subs[i % args.subs.len()].clone();
        let shared = shared.clone();
        let latencies = Latencies::default();
        all_latencies.push(latencies.clone());
        let task = if args.mode == "sse" {
            let path = args.path.clone();
            tokio::spawn(sse_subscriber(addr, path, shared, latencies))
        } else {
            let subject = args.subject.clone();
            tokio::spawn(nats_subscriber(addr, subject, shared, latencies))
        };
        tasks.push(task);
    }
    let start = Instant::now();
    while shared.connected.load(Ordering::Relaxed) < args.n {
        if start.elapsed() > CONNECT_WINDOW {
            return Err(format!(
                "only {}/{} subscribers connected in {CONNECT_WINDOW:?}",
                shared.connected.load(Ordering::Relaxed),
                args.n
            )
            .into());
        }
        if let Some(failed) = tasks.iter().position(|t| t.is_finished()) {
            let task = tasks.swap_remove(failed);
            return Err(format!("a subscriber failed: {:?}", task.await?).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut publishers = Vec::new();
    for addr in &args.publish {
        publishers.push(if args.mode == "sse" {
            Publisher::Http(HttpPublisher::connect(addr, &args.publish_path).await?)
        } else {
            let mut reader = nats_connect(addr).await?;
            nats_flush(&mut reader).await?;
            Publisher::Nats(reader, args.subject.clone())
        });
    }
    if publishers.is_empty() {
        return Err("--publish is required".into());
    }

    // Warm-up: interest has reached every node once every subscriber saw one.
    publish_loop(
        &mut publishers,
        args.rate,
        Instant::now() + WARMUP_WINDOW,
        Some((&shared, args.n)),
    )
    .await?;
    let warmed = shared.warmed.load(Ordering::Relaxed);
    if warmed < args.n {
        return Err(format!(
            "only {warmed}/{} subscribers received a warm-up message",
            args.n
        )
        .into());
    }

    shared.measure_from_us.store(now_us(), Ordering::Relaxed);
    let sent = publish_loop(
        &mut publishers,
        args.rate,
        Instant::now() + Duration::from_secs(args.secs),
        None,
    )
    .await?;
    shared.measure_until_us.store(now_us(), Ordering::Relaxed);
    tokio::time::sleep(DRAIN).await;
    for task in &tasks {
        task.abort();
    }
    let mut latencies: Vec<u64> = all_latencies
        .iter()
        .flat_map(|list| list.lock().map(|l| l.clone()).unwrap_or_default())
        .collect();
    latencies.sort_unstable();
    let expected = sent as usize * args.n;
    println!(
        "received {}/{} p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        latencies.len(),
        expected,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    Ok(())
}

/// Opens `n` subscriptions, prints `connected N`, holds them.
async fn run_idle(args: Args) -> Result<(), BoxError> {
    let mut open = Vec::with_capacity(args.n);
    let start = Instant::now();
    for i in 0..args.n {
        let addr = &args.subs[i % args.subs.len()];
        let left = CONNECT_WINDOW.saturating_sub(start.elapsed());
        let opened = timeout(left, sse_open(addr, &args.path))
            .await
            .map_err(|_| {
                format!(
                    "only {i}/{} subscriptions opened in {CONNECT_WINDOW:?}",
                    args.n
                )
            })??;
        open.push(opened);
    }
    println!("connected {}", open.len());
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    drop(open);
    Ok(())
}

#[tokio::main]
async fn main() {
    let result = match parse_args() {
        Ok(args) if args.mode == "idle" => run_idle(args).await,
        Ok(args) if args.mode == "sse" || args.mode == "nats" => run_fanout(args).await,
        Ok(args) => Err(format!("unknown mode {:?}", args.mode).into()),
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        eprintln!("realtime-load: {error}");
        std::process::exit(1);
    }
}
