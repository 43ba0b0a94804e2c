//! Issue 14: signed file URLs, as a browser-like client uses them. A PUT
//! URL takes an upload from curl (`-T` with a length, and chunked from a
//! pipe) and a GET URL serves it back; an expired URL is 403 `url_expired`;
//! one character changed in the signature, path, expiry or size limit is
//! 403 `url_invalid`, as is a URL used with the other method or another
//! Content-Type than it was signed for; a body over the URL's `max_bytes` is
//! 413; the app's CORS preflight is answered so a page can PUT.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::cluster::eventually;
use common::files::{random_bytes, sha256_hex, signed_url};
use common::{TestNode, install_crypto};
use serde_json::{Value, json};

const MANIFEST: &str = r#"name = "media"
[cors]
origins = ["https://app.example.org"]
headers = ["content-type"]
[[route]]
method = "GET"
path = "/ping"
script = "ping.lua"
"#;

const PING: &str = "return function(req)\n  return {status=200, json={ok=true}}\nend";

/// A refused request: what it tries, method, URL, headers, body, and the
/// expected status and code.
type Refusal<'a> = (
    &'a str,
    &'a str,
    String,
    &'a [(&'a str, &'a str)],
    Option<Vec<u8>>,
    u16,
    &'a str,
);

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// One request: status, headers and body (JSON when it parses).
async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, reqwest::header::HeaderMap, Value, Vec<u8>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new().request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body").to_vec();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value, bytes)
}

/// `url` with query parameter `name`'s value changed by `change`.
fn with_param(url: &str, name: &str, change: impl Fn(&str) -> String) -> String {
    let mut parsed = reqwest::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(key, value)| {
            let value = if key == name {
                change(&value)
            } else {
                value.into_owned()
            };
            (key.into_owned(), value)
        })
        .collect();
    assert!(
        pairs.iter().any(|(key, _)| key == name),
        "{url} has no {name}"
    );
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// `curl -T` of `bytes`: from a file (Content-Length) or from a pipe
/// (chunked). Returns the status and the body.
fn curl_put(url: &str, bytes: &[u8], chunked: bool, dir: &std::path::Path) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "-o", "-", "-w", "\n%{http_code}"]);
    let mut child = if chunked {
        command
            .args(["-T", "-", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl")
    } else {
        let file = dir.join("upload.bin");
        std::fs::write(&file, bytes).expect("write upload");
        command
            .arg("-T")
            .arg(&file)
            .arg(url)
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl")
    };
    if chunked {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(bytes).expect("pipe to curl");
    }
    let output = child.wait_with_output().expect("curl output");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_upload_download_and_refuse_what_they_were_not_signed_for() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let api = node.client();
    let (status, body) = api
        .deploy("media", &[("picloud.toml", MANIFEST), ("ping.lua", PING)])
        .await;
    assert_eq!(status, 200, "{body}");

    // Uploads with curl: a file (Content-Length) and a pipe (chunked).
    let payload = random_bytes(3 * 1024 * 1024 + 17, 1);
    for (path, chunked) in [("up/length.bin", false), ("up/chunked.bin", true)] {
        let put = signed_url(&api, &node, "media", json!({"path": path, "method": "PUT"})).await;
        let (status, text) = curl_put(&put, &payload, chunked, dir.path());
        assert_eq!(status, 200, "{path}: {text}");
        let stored: Value = serde_json::from_str(&text).expect("stat JSON");
        assert_eq!(stored["size"], payload.len() as u64, "{text}");
        let get = signed_url(&api, &node, "media", json!({"path": path})).await;
        let (status, headers, _, bytes) = send("GET", &get, &[], None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(sha256_hex(&bytes), sha256_hex(&payload), "{path}");
        assert_eq!(headers["etag"], stored["etag"].as_str().expect("etag"));
    }

    // Every refusal, as a table: (what, method, url, headers, body, status, code).
    let get = signed_url(&api, &node, "media", json!({"path": "up/length.bin"})).await;
    let put = signed_url(
        &api,
        &node,
        "media",
        json!({"path": "up/small.bin", "method": "PUT", "max_bytes": 1000, "content_type": "image/png"}),
    )
    .await;
    let flip = |text: &str| {
        let mut chars: Vec<char> = text.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let plus_one = |text: &str| (text.parse::<u64>().expect("number") + 1).to_string();
    let png = [("content-type", "image/png")];
    let cases: Vec<Refusal> = vec![
        (
            "unsigned",
            "GET",
            node.url() + "/_/files/media/up/length.bin",
            &[],
            None,
            403,
            "url_invalid",
        ),
        (
            "sig changed",
            "GET",
            with_param(&get, "sig", flip),
            &[],
            None,
            403,
            "url_invalid",
        ),
        (
            "exp changed",
            "GET",
            with_param(&get, "exp", plus_one),
            &[],
            None,
            403,
            "url_invalid",
        ),
        (
            "path changed",
            "GET",
            get.replace("up/length.bin", "up/chunked.bin"),
            &[],
            None,
            403,
            "url_invalid",
        ),
        (
            "max changed",
            "PUT",
            with_param(&put, "max", plus_one),
            &png,
            Some(vec![1; 10]),
            403,
            "url_invalid",
        ),
        (
            "PUT on a GET URL",
            "PUT",
            get.clone(),
            &[],
            Some(vec![1; 10]),
            403,
            "url_invalid",
        ),
        (
            "GET on a PUT URL",
            "GET",
            put.clone(),
            &[],
            None,
            403,
            "url_invalid",
        ),
        (
            "other Content-Type",
            "PUT",
            put.clone(),
            &[("content-type", "text/plain")],
            Some(vec![1; 10]),
            403,
            "url_invalid",
        ),
        (
            "over max_bytes",
            "PUT",
            put.clone(),
            &png,
            Some(vec![1; 1001]),
            413,
            "file_too_large",
        ),
    ];
    for (what, method, url, headers, body, status, expected) in cases {
        let (got, _, answer, _) = send(method, &url, headers, body).await;
        assert_eq!((got, code(&answer)), (status, expected), "{what}: {answer}");
    }
    // Nothing was stored by the refused uploads; the right type is taken.
    let (status, _) = api.get("/_/api/v1/apps/media/files?prefix=up/small").await;
    assert_eq!(status, 200);
    let (status, _, answer, _) = send("PUT", &put, &png, Some(vec![7; 1000])).await;
    assert_eq!(status, 200, "{answer}");
    let small = signed_url(&api, &node, "media", json!({"path": "up/small.bin"})).await;
    let (status, headers, _, bytes) = send("GET", &small, &[], None).await;
    assert_eq!((status, bytes.len()), (200, 1000));
    assert_eq!(headers["content-type"], "image/png");

    // A browser page of the app's origin may PUT: the preflight is answered.
    let (status, headers, _, _) = send(
        "OPTIONS",
        &put,
        &[
            ("origin", "https://app.example.org"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.org"
    );
    // And the answer itself carries the CORS headers, errors included.
    let (status, headers, _, _) = send(
        "GET",
        &with_param(&get, "sig", flip),
        &[("origin", "https://app.example.org")],
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.org"
    );

    // A URL past its expiry is url_expired (polled: the expiry is 1 s out).
    let short = signed_url(
        &api,
        &node,
        "media",
        json!({"path": "up/length.bin", "ttl": 1}),
    )
    .await;
    eventually("the 1 s URL expires", || {
        let short = short.clone();
        async move {
            let (status, _, answer, _) = send("GET", &short, &[], None).await;
            assert!(
                status == 200 || (status == 403 && code(&answer) == "url_expired"),
                "{status} {answer}"
            );
            status == 403
        }
    })
    .await;
}

/// The streamed routes check the key, the app and the announced size from
/// the request head alone: a 2 GiB upload announced to a node whose files
/// are at most 1 GiB is refused before a byte of body is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_routes_refuse_from_the_head_before_any_body_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let api = node.client();
    let (status, body) = api
        .deploy("media", &[("picloud.toml", MANIFEST), ("ping.lua", PING)])
        .await;
    assert_eq!(status, 200, "{body}");
    let key = node.admin_key();
    for (what, app, auth, status, expected) in [
        ("no key", "media", String::new(), 401, "unauthorized"),
        (
            "no such app",
            "nope",
            format!("authorization: Bearer {key}\r\n"),
            404,
            "app_not_found",
        ),
        (
            "over file_bytes_max",
            "media",
            format!("authorization: Bearer {key}\r\n"),
            413,
            "file_too_large",
        ),
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", node.http_port))
            .await
            .expect("connect");
        let head = format!(
            "PUT /_/api/v1/apps/{app}/files/big.bin HTTP/1.1\r\nhost: localhost\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n",
            2u64 << 30
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut answer),
        )
        .await
        .expect("answered without the body")
        .expect("read");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {text}"
        );
        assert!(text.contains(&format!("\"{expected}\"")), "{what}: {text}");
    }
    // A plain OPTIONS (no preflight) on a signed URL is 405.
    let (status, _, answer, _) = send(
        "OPTIONS",
        &format!("{}/_/files/media/x", node.url()),
        &[],
        None,
    )
    .await;
    assert_eq!((status, code(&answer)), (405, "method_not_allowed"));
}
