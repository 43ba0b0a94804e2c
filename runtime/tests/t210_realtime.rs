//! Pub/sub and realtime through real `picloud` processes: durable publish,
//! resume by `Last-Event-ID` with no gap and no repeat, reset past the
//! retained history, overflow of a subscriber that never reads, heartbeats,
//! tokens (bad, expired, other topic, other app, rotated key), undeclared
//! topics and oversized messages, `pubsub` triggers; then three nodes, where a durable
//! subscriber whose node is killed resumes on another node.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::cluster::{api, start_three};
use common::{Api, TestNode, install_crypto};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One Server-Sent Event as a client sees it (`event` is "message" unless
/// named; comments come as event "comment").
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// A small SSE reader: the stream is parsed by a task into a channel.
struct Sse {
    events: mpsc::UnboundedReceiver<SseEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses SSE text: complete events are taken off the front of `buffer`.
fn parse_events(buffer: &mut String) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut event = SseEvent {
            event: "message".into(),
            id: None,
            data: String::new(),
        };
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                event.event = "comment".into();
                event.data = comment.trim().to_string();
            } else if let Some(name) = line.strip_prefix("event: ") {
                event.event = name.to_string();
            } else if let Some(id) = line.strip_prefix("id: ") {
                event.id = Some(id.to_string());
            } else if let Some(data) = line.strip_prefix("data: ") {
                event.data = data.to_string();
            }
        }
        events.push(event);
    }
    events
}

/// Opens `GET url` as an event stream; a refusal comes back as its status
/// and JSON body.
async fn open(url: &str, headers: &[(&str, &str)]) -> Result<Sse, (u16, Value)> {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("realtime request");
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.json().await.unwrap_or(Value::Null);
        return Err((status, body));
    }
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            for event in parse_events(&mut buffer) {
                if tx.send(event).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(SseEvent {
            event: "closed".into(),
            id: None,
            data: String::new(),
        });
    });
    let mut sse = Sse { events, task };
    let first = sse.next().await;
    assert_eq!(first.data, "connected", "{first:?}");
    Ok(sse)
}

/// [`open`], retried while the node has not applied the app's deploy yet
/// (a deploy through another node reaches this one a moment later).
async fn open_when_deployed(url: &str, headers: &[(&str, &str)]) -> Sse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open(url, headers).await {
            Ok(sse) => return sse,
            Err((404, body))
                if body["error"]["code"] == "app_not_found" && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(refused) => panic!("{url}: {refused:?}"),
        }
    }
}

impl Sse {
    /// The next event that is not a heartbeat, within 10 s.
    async fn next(&mut self) -> SseEvent {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), self.events.recv())
                .await
                .expect("an event within 10 s")
                .expect("stream task alive");
            if event.event != "comment" || event.data != "heartbeat" {
                return event;
            }
        }
    }

    /// The next `count` messages' data.
    async fn messages(&mut self, count: usize) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while out.len() < count {
            out.push(self.next().await);
        }
        out
    }
}

async fn publish(api: &Api, topic: &str, message: &Value, durable: bool) -> (u16, Value) {
    let durable = if durable { "&durable=1" } else { "" };
    api.post_json(&format!("/rt/pub?topic={topic}{durable}"), message)
        .await
}

async fn publish_durable(api: &Api, topic: &str, message: &Value) -> String {
    let (status, body) = publish(api, topic, message, true).await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().expect("id").to_string()
}

async fn token(api: &Api, app: &str, topic: &str, ttl: Option<&str>) -> String {
    let ttl = ttl.map(|ttl| format!("&ttl={ttl}")).unwrap_or_default();
    let (status, body) = api.get(&format!("/{app}/token?topic={topic}{ttl}")).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().expect("token").to_string()
}

/// The test app's files, `picloud.toml` first.
fn app_files() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/realtime");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("app dir")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&path).expect("app file"))
        })
        .collect();
    files.sort_by_key(|(name, _)| name != "picloud.toml");
    files
}

async fn deploy(api: &Api, app: &str) {
    let files = app_files();
    let manifest = files[0]
        .1
        .replace("name = \"rt\"", &format!("name = \"{app}\""));
    let mut refs: Vec<(&str, &str)> = vec![("picloud.toml", manifest.as_str())];
    refs.extend(
        files[1..]
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str())),
    );
    let (status, body) = api.deploy(app, &refs).await;
    assert_eq!(status, 200, "deploying {app}: {body}");
}

fn seq_of(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("seq")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_node_durable_resume_reset_overflow_heartbeat_tokens_and_limits() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = vec![
        "--realtime-heartbeat-ms".into(),
        "200".into(),
        "--realtime-buffer-max".into(),
        "4".into(),
    ];
    node.start().await;
    let admin = node.client().with_key(Some(&node.admin_key()));
    deploy(&admin, "rt").await;
    deploy(&admin, "rt2").await;
    let public = admin.with_key(None);
    let base = node.url();

    // Errors before the stream: undeclared topic, bad name, missing app.
    for (path, status, code) in [
        ("/_/realtime/rt/nope", 404, "topic_not_found"),
        ("/_/realtime/rt/chat//x", 400, "invalid_topic"),
        ("/_/realtime/nosuchapp/feed", 404, "app_not_found"),
        ("/_/realtime/rt/chat/1", 401, "token_invalid"),
    ] {
        let refused = open(&format!("{base}{path}"), &[]).await.err();
        let (got, body) = refused.expect("refused");
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    // Publishing: undeclared topic, oversized message, durable on an
    // ephemeral-only topic.
    let (status, body) = publish(&public, "nope", &json!(1), false).await;
    assert!(
        status == 400
            && body["error"]
                .as_str()
                .unwrap_or("")
                .contains("topic_not_found"),
        "{body}"
    );
    let big = json!("x".repeat(70 * 1024));
    let (status, body) = publish(&public, "feed", &big, true).await;
    assert!(
        status == 400
            && body["error"]
                .as_str()
                .unwrap_or("")
                .contains("message_too_large"),
        "{body}"
    );
    // A deploy asking more history than the node allows names the topic.
    let greedy = "name = \"greedy\"\n[[topic]]\nname = \"t/*\"\nretain = 100001\n";
    let (status, body) = admin.deploy("greedy", &[("picloud.toml", greedy)]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_deploy")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("\"t/*\""),
        "{body}"
    );
    let (status, body) = publish(&public, "live/1", &json!(1), true).await;
    assert!(
        status == 400
            && body["error"]
                .as_str()
                .unwrap_or("")
                .contains("invalid_topic"),
        "{body}"
    );

    // Tokens: a good one works, by header and by query.
    let good = token(&public, "rt", "chat/1", None).await;
    let url = format!("{base}/_/realtime/rt/chat/1");
    let bearer = format!("Bearer {good}");
    let mut by_header = open(&url, &[("authorization", &bearer)])
        .await
        .expect("token by header");
    let mut by_query = open(&format!("{url}?token={good}"), &[])
        .await
        .expect("token by query");
    let first = publish_durable(&public, "chat/1", &json!({"n": 1})).await;
    for sse in [&mut by_header, &mut by_query] {
        let event = sse.next().await;
        assert_eq!(
            (event.id.as_deref(), event.data.as_str()),
            (Some(first.as_str()), r#"{"n":1}"#)
        );
    }
    // Expired, other topic, other app, garbage.
    let expired = token(&public, "rt", "chat/1", Some("0.001")).await;
    let other_topic = token(&public, "rt", "chat/2", None).await;
    let other_app = token(&public, "rt2", "chat/1", None).await;
    for (token, status, code) in [
        (expired.as_str(), 401, "token_expired"),
        (other_topic.as_str(), 403, "token_wrong_topic"),
        (other_app.as_str(), 401, "token_invalid"),
        ("v1.garbage.garbage", 401, "token_invalid"),
    ] {
        let (got, body) = open(&format!("{url}?token={token}"), &[])
            .await
            .err()
            .expect("refused");
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    // Rotation: the old token is refused, a new one works.
    node.cli_with_key(&node.admin_key(), &["realtime", "rotate-key", "rt"])
        .ok();
    let (got, body) = open(&format!("{url}?token={good}"), &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (401, Some("token_invalid")),
        "{body}"
    );
    let fresh = token(&public, "rt", "chat/1", None).await;
    drop(
        open(&format!("{url}?token={fresh}"), &[])
            .await
            .expect("new token"),
    );

    // Resume: history after the asked id, then live, no gap, no repeat.
    let feed = format!("{base}/_/realtime/rt/feed");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(publish_durable(&public, "feed", &json!(n)).await);
    }
    let mut resumed = open(&feed, &[("last-event-id", &ids[1])])
        .await
        .expect("resume");
    let history = resumed.messages(3).await;
    assert_eq!(
        history
            .iter()
            .map(|e| e.id.clone().expect("id"))
            .collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    let live = publish_durable(&public, "feed", &json!(5)).await;
    assert_eq!(resumed.next().await.id, Some(live.clone()));
    // The same by query parameter.
    let mut by_param = open(&format!("{feed}?last_event_id={}", ids[3]), &[])
        .await
        .expect("resume");
    let got: Vec<_> = by_param
        .messages(2)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(got, vec![Some(ids[4].clone()), Some(live.clone())]);

    // The seam under load: subscribers resume while publishes continue;
    // each sees a contiguous run of positions up to the last one.
    let publisher = {
        let public = public.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            for n in 0..60 {
                last = publish_durable(&public, "feed", &json!({"load": n})).await;
            }
            last
        })
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(
            open(&feed, &[("last-event-id", &live)])
                .await
                .expect("resume"),
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let last = publisher.await.expect("publisher");
    for stream in &mut streams {
        let mut expected = seq_of(&live) + 1;
        loop {
            let event = stream.next().await;
            let id = event.id.expect("durable id");
            assert_eq!(seq_of(&id), expected, "a gap or a repeat at the seam");
            expected += 1;
            if id == last {
                break;
            }
        }
    }
    drop(streams);

    // The pubsub trigger on "feed" ran once per durable message (66 so
    // far: 6, then 60 under load), with the topic, the message and its id.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, seen) = public.get("/rt/seen").await;
        assert_eq!(status, 200, "{seen}");
        if seen["runs"] == json!(66) {
            // Runs execute concurrently: the last one recorded is any of
            // them, with its own message and id (load n is message n + 7).
            let event = &seen["last"];
            assert_eq!(
                (&event["kind"], &event["topic"]),
                (&json!("pubsub"), &json!("feed"))
            );
            let id = event["id"].as_str().expect("id");
            assert_eq!(id.split('-').next(), last.split('-').next(), "{event}");
            assert_eq!(json!(seq_of(id) - 7), event["message"]["load"], "{event}");
            break;
        }
        assert!(
            seen["runs"].as_u64().unwrap_or(0) < 66,
            "a message ran twice: {seen}"
        );
        assert!(Instant::now() < deadline, "trigger runs missing: {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Reset: chat/* keeps 5; an id older than that gets `reset`, then the
    // oldest kept onwards.
    let chat = format!("{url}?token={fresh}");
    let mut chat_ids = Vec::new();
    for n in 0..8 {
        chat_ids.push(publish_durable(&public, "chat/1", &json!(n)).await);
    }
    let mut reset = open(&chat, &[("last-event-id", &first)])
        .await
        .expect("reset");
    assert_eq!(reset.next().await.event, "reset");
    let kept: Vec<_> = reset
        .messages(5)
        .await
        .into_iter()
        .map(|e| e.id.expect("id"))
        .collect();
    assert_eq!(kept, chat_ids[3..].to_vec());
    // An id of another history (epoch) is a reset too.
    let mut other_epoch = open(&chat, &[("last-event-id", "999-1")])
        .await
        .expect("reset");
    assert_eq!(other_epoch.next().await.event, "reset");

    // Heartbeats keep an idle stream alive.
    let mut idle = open(&format!("{base}/_/realtime/rt/live/quiet"), &[])
        .await
        .expect("idle");
    let beat = tokio::time::timeout(Duration::from_secs(5), idle.events.recv()).await;
    assert_eq!(beat.expect("heartbeat").expect("event").data, "heartbeat");

    // A subscriber that never reads: it overflows and is closed; a reading
    // one gets every message, and publishing never waits for the slow one.
    let mut stuck = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).expect("connect");
    write!(
        stuck,
        "GET /_/realtime/rt/live/x HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let mut reader = open(&format!("{base}/_/realtime/rt/live/x"), &[])
        .await
        .expect("reader");
    // Wait until both are subscribed (the stuck one answered its headers).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let chunk = "y".repeat(60 * 1024);
    let started = Instant::now();
    let mut received = 0;
    for n in 0..200 {
        let (status, body) =
            publish(&public, "live/x", &json!({"n": n, "pad": chunk}), false).await;
        assert_eq!(status, 200, "{body}");
        // The reading subscriber keeps up (its buffer is small too).
        while let Ok(event) = reader.events.try_recv() {
            if event.event == "message" {
                received += 1;
            }
        }
    }
    while received < 200 {
        let event = reader.next().await;
        assert_eq!(event.event, "message", "the reader was never cut off");
        received += 1;
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut text = Vec::new();
    let _ = stuck.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("event: overflow"),
        "the stuck subscriber was not told it overflowed"
    );

    // Clients that go away leave nothing behind: the node's subscriber
    // count returns to zero.
    drop((
        stuck,
        reader,
        idle,
        reset,
        other_epoch,
        by_header,
        by_query,
        resumed,
        by_param,
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = admin.get("/_/metrics").await;
        let text = metrics.as_str().unwrap_or_default().to_string();
        if text.contains("picloud_realtime_subscribers 0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "subscribers left behind:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Shutdown ends open streams, so the node stops promptly and cleanly.
    let mut open_stream = open(&feed, &[]).await.expect("subscribe");
    let started = Instant::now();
    assert!(node.terminate(), "a clean exit with a stream open");
    assert_eq!(open_stream.next().await.event, "closed");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_a_durable_subscriber_resumes_on_another_node_after_kill_9() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    let (key, _) = start_three(&mut nodes).await;
    let first = api(&nodes[0], &key);
    deploy(&first, "rt").await;
    let through_a = first.with_key(None);
    let urls: Vec<String> = nodes
        .iter()
        .map(|node| format!("{}/_/realtime/rt/feed", node.url()))
        .collect();

    // A subscriber on node B; publishes through node A continue in the
    // background while B is killed.
    let mut on_b = open_when_deployed(&urls[1], &[]).await;
    drop(open_when_deployed(&urls[2], &[]).await);
    let publisher = {
        let through_a = through_a.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..80 {
                ids.push(publish_durable(&through_a, "feed", &json!({"n": n})).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ids
        })
    };
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 20 {
        let event = on_b.next().await;
        seen.push(event.id.expect("durable id"));
    }
    nodes[1].kill();
    // What was buffered before the kill may still arrive; then it closes.
    loop {
        let event = on_b.next().await;
        match event.event.as_str() {
            "closed" => break,
            _ => seen.push(event.id.expect("durable id")),
        }
    }
    let last = seen.last().cloned().expect("some seen");
    let mut on_c = open(&urls[2], &[("last-event-id", &last)])
        .await
        .expect("resume on C");
    let ids = publisher.await.expect("publisher");
    while seen.last() != ids.last() {
        let event = on_c.next().await;
        seen.push(event.id.expect("durable id"));
    }
    assert_eq!(seen, ids, "every durable message exactly once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_an_ephemeral_publish_through_a_reaches_a_b_and_c() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    let (key, _) = start_three(&mut nodes).await;
    let first = api(&nodes[0], &key);
    deploy(&first, "rt").await;
    let through_a = first.with_key(None);
    let mut subscribers = Vec::new();
    for node in &nodes {
        for _ in 0..2 {
            let url = format!("{}/_/realtime/rt/live/room", node.url());
            subscribers.push(open_when_deployed(&url, &[]).await);
        }
    }
    // Interest reaches the other nodes asynchronously: publish until every
    // subscriber has seen a message, then check ten more arrive everywhere,
    // in order, once each.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut warm = vec![false; subscribers.len()];
    let mut n = 0;
    while !warm.iter().all(|w| *w) {
        assert!(
            Instant::now() < deadline,
            "interest never reached every node: {warm:?}"
        );
        let (status, body) = publish(&through_a, "live/room", &json!({"warm": n}), false).await;
        assert_eq!(status, 200, "{body}");
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (index, sse) in subscribers.iter_mut().enumerate() {
            while let Ok(event) = sse.events.try_recv() {
                if event.event == "message" {
                    warm[index] = true;
                }
            }
        }
    }
    for n in 0..10 {
        let (status, body) = publish(&through_a, "live/room", &json!({"n": n}), false).await;
        assert_eq!(status, 200, "{body}");
    }
    for sse in &mut subscribers {
        let mut got = Vec::new();
        while got.len() < 10 {
            let event = sse.next().await;
            assert_eq!(event.id, None, "ephemeral messages carry no id");
            if event.data.contains("warm") {
                continue;
            }
            got.push(event.data);
        }
        let expected: Vec<String> = (0..10).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
        assert_eq!(got, expected);
    }
    // The fan-out drops nothing on an idle cluster.
    let (status, metrics) = first.get("/_/metrics").await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("picloud_pubsub_dropped_total 0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_and_topic_limits_refuse_with_their_codes() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = [
        "--realtime-subscribers-per-app-max",
        "3",
        "--realtime-topics-per-app-max",
        "2",
    ]
    .map(String::from)
    .to_vec();
    node.start().await;
    let admin = node.client().with_key(Some(&node.admin_key()));
    deploy(&admin, "rt").await;
    let url = |topic: &str| format!("{}/_/realtime/rt/{topic}", node.url());
    let a = open(&url("live/a"), &[]).await.expect("first topic");
    let b = open(&url("live/b"), &[]).await.expect("second topic");
    let (status, body) = open(&url("live/c"), &[])
        .await
        .err()
        .expect("a third topic");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("topics_full")),
        "{body}"
    );
    let a2 = open(&url("live/a"), &[]).await.expect("same topic");
    let (status, body) = open(&url("live/b"), &[])
        .await
        .err()
        .expect("a fourth subscriber");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("realtime_full")),
        "{body}"
    );
    // Leaving frees the room (the topic and the subscriber).
    drop((a, a2));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open(&url("live/c"), &[]).await {
            Ok(_) => break,
            Err(refused) => assert!(Instant::now() < deadline, "room never freed: {refused:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_run_publishes_durably_once_with_its_commit() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client().with_key(Some(&node.admin_key()));
    deploy(&admin, "rt").await;
    let public = admin.with_key(None);
    let mut said = open(&format!("{}/_/realtime/rt/said", node.url()), &[])
        .await
        .expect("subscribe");
    for n in 0..5 {
        let (status, body) = public.post_json(&format!("/rt/say?n={n}"), &json!(n)).await;
        assert_eq!(status, 200, "{body}");
    }
    // Runs execute concurrently: the five messages arrive in commit order,
    // with contiguous positions, one per write.
    let events = said.messages(5).await;
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| seq_of(e.id.as_deref().expect("id")))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let mut keys: Vec<String> = events
        .iter()
        .map(|e| {
            let data: Value = serde_json::from_str(&e.data).expect("json");
            assert_eq!(
                data["value"],
                json!(
                    data["key"].as_str().expect("key")[4..]
                        .parse::<u64>()
                        .expect("n")
                )
            );
            data["key"].as_str().expect("key").to_string()
        })
        .collect();
    keys.sort();
    assert_eq!(keys, (0..5).map(|n| format!("say/{n}")).collect::<Vec<_>>());
    // Nothing more arrives (no run published twice).
    let extra = tokio::time::timeout(Duration::from_millis(500), said.events.recv()).await;
    assert!(
        extra.is_err()
            || extra
                .as_ref()
                .is_ok_and(|e| e.as_ref().is_some_and(|e| e.event == "comment")),
        "{extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_topic_actors_and_feed_are_restarted_without_losing_messages() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client().with_key(Some(&node.admin_key()));
    deploy(&admin, "rt").await;
    let public = admin.with_key(None);
    let url = format!("{}/_/realtime/rt/live/f", node.url());
    let mut before = open(&url, &[]).await.expect("subscribe");
    let (status, body) = admin
        .call("POST", "/_/api/v1/faults/topic_actor", None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = publish(&public, "live/f", &json!(1), false).await;
    assert_eq!(status, 200, "{body}");
    // The actor failed on that message: its subscriber's stream ends.
    assert_eq!(before.next().await.event, "closed");
    let series = "picloud_actor_restarts_total{actor=\"topic\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = admin.get("/_/metrics").await;
        let text = metrics.as_str().unwrap_or_default().to_string();
        if text.contains(series) {
            break;
        }
        assert!(Instant::now() < deadline, "restart not counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Subscribing again starts a fresh actor that delivers.
    let mut after = open(&url, &[]).await.expect("subscribe again");
    let (status, body) = publish(&public, "live/f", &json!(2), false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(after.next().await.data, "2");

    // The durable feed fails while carrying a message: its restarted run
    // has every topic actor read what it missed, so the message arrives
    // without waiting for the next one.
    let mut feed = open(&format!("{}/_/realtime/rt/feed", node.url()), &[])
        .await
        .expect("subscribe");
    let (status, body) = admin
        .call("POST", "/_/api/v1/faults/topic_feed", None)
        .await;
    assert_eq!(status, 204, "{body}");
    let id = publish_durable(&public, "feed", &json!("lost?")).await;
    let event = feed.next().await;
    assert_eq!(
        (event.id.as_deref(), event.data.as_str()),
        (Some(id.as_str()), "\"lost?\"")
    );
}
