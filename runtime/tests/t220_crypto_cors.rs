//! Issue 13's crypto helpers and CORS on a real `picloud` process.
//!
//! * Webhooks: routes verify a Stripe-style (`Stripe-Signature: t=...,v1=hex`)
//!   and a GitHub-style (`X-Hub-Signature-256: sha256=hex`) signature with
//!   `crypto.hmac_sha256` and `crypto.equal` under a key from `secrets.get`.
//!   The test signs with its own HMAC (over `sha2`), so the Lua side is
//!   checked against an independent implementation: good signatures pass,
//!   tampered bodies, wrong keys and stale timestamps are refused.
//! * CORS: preflights answered by the node before any script runs (allowed
//!   and refused), allow headers on route, static-file and error responses
//!   for an allowed origin only, nothing at all for an app without `[cors]`,
//!   and `credentials = true` with `"*"` refused at deploy.

mod common;

use base64::Engine;
use common::{Api, TestNode, install_crypto};
use reqwest::header::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// HMAC-SHA256 (RFC 2104), written here independently of the SDK's.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block_key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|byte| format!("{byte:02x}")).collect()
}

const STRIPE_SECRET: &str = "whsec_test_4f1c2a9e";
const GITHUB_SECRET: &str = "gh-hook-secret-77";

const HOOKS_MANIFEST: &str = r#"name = "hooks"
[[route]]
method = "POST"
path = "/stripe"
script = "stripe.lua"
[[route]]
method = "POST"
path = "/github"
script = "github.lua"
"#;

/// Stripe's scheme: `t` is the signing time, `v1` the hex HMAC of
/// `t .. "." .. body`; a signature older than the tolerance is refused
/// (replay protection).
const STRIPE_SCRIPT: &str = r#"local TOLERANCE_S = 300
return function(req)
  local secret = secrets.get("STRIPE_SECRET")
  local header = req.headers["stripe-signature"] or ""
  local t, v1
  for key, value in header:gmatch("([^,=]+)=([^,]*)") do
    if key == "t" then t = value elseif key == "v1" then v1 = value end
  end
  if not (t and v1 and tonumber(t)) then
    return { status = 400, json = { error = "malformed" } }
  end
  if math.abs(time.now() - tonumber(t)) > TOLERANCE_S then
    return { status = 401, json = { error = "stale" } }
  end
  local expected = crypto.hmac_sha256(secret, t .. "." .. req.body)
  if not crypto.equal(expected, v1) then
    return { status = 401, json = { error = "bad signature" } }
  end
  return { json = { ok = true, type = json.decode(req.body).type } }
end"#;

/// GitHub's scheme: `sha256=` and the hex HMAC of the body.
const GITHUB_SCRIPT: &str = r#"return function(req)
  local expected = "sha256=" .. crypto.hmac_sha256(secrets.get("GITHUB_SECRET"), req.body)
  if not crypto.equal(expected, req.headers["x-hub-signature-256"] or "") then
    return { status = 401, json = { error = "bad signature" } }
  end
  return { json = { ok = true, action = json.decode(req.body).action } }
end"#;

async fn set_secret(node: &TestNode, app: &str, name: &str, value: &str) {
    let response = reqwest::Client::new()
        .put(format!("{}/_/api/v1/apps/{app}/secrets/{name}", node.url()))
        .bearer_auth(node.admin_key())
        .body(value.to_string())
        .send()
        .await
        .expect("set secret");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

async fn post(url: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_verify_stripe_and_github_webhook_signatures() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    let (status, body) = admin
        .deploy(
            "hooks",
            &[
                ("picloud.toml", HOOKS_MANIFEST),
                ("stripe.lua", STRIPE_SCRIPT),
                ("github.lua", GITHUB_SCRIPT),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    set_secret(&node, "hooks", "STRIPE_SECRET", STRIPE_SECRET).await;
    set_secret(&node, "hooks", "GITHUB_SECRET", GITHUB_SECRET).await;

    let stripe_url = format!("{}/hooks/stripe", node.url());
    let payload = r#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    let stripe_header = |t: u64, key: &str, body: &str| {
        let signature = hmac_sha256_hex(key.as_bytes(), format!("{t}.{body}").as_bytes());
        vec![("stripe-signature", format!("t={t},v1={signature}"))]
    };
    let now = unix_now_s();
    let (status, body) = post(
        &stripe_url,
        &stripe_header(now, STRIPE_SECRET, payload),
        payload,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "payment_intent.succeeded");
    let tampered = payload.replace("evt_1", "evt_2");
    let stripe_refusals = [
        // Signed for another body.
        (
            stripe_header(now, STRIPE_SECRET, payload),
            tampered.as_str(),
            "bad signature",
        ),
        // Signed with another key.
        (
            stripe_header(now, "whsec_guess", payload),
            payload,
            "bad signature",
        ),
        // Correctly signed an hour ago: a replay.
        (
            stripe_header(now - 3600, STRIPE_SECRET, payload),
            payload,
            "stale",
        ),
        (
            vec![("stripe-signature", "v1=abc".to_string())],
            payload,
            "malformed",
        ),
    ];
    for (headers, body_sent, expected) in stripe_refusals {
        let (status, body) = post(&stripe_url, &headers, body_sent).await;
        assert!(
            matches!(status, 400 | 401) && body["error"] == expected,
            "{headers:?}: {status} {body}"
        );
    }

    let github_url = format!("{}/hooks/github", node.url());
    let event = r#"{"action":"opened","number":7}"#;
    let github_header = |key: &str, body: &str| {
        vec![(
            "x-hub-signature-256",
            format!(
                "sha256={}",
                hmac_sha256_hex(key.as_bytes(), body.as_bytes())
            ),
        )]
    };
    let (status, body) = post(&github_url, &github_header(GITHUB_SECRET, event), event).await;
    assert_eq!(
        (status, &body["action"]),
        (200, &Value::from("opened")),
        "{body}"
    );
    for (headers, body_sent) in [
        (github_header(GITHUB_SECRET, event), event.replace("7", "8")),
        (github_header(STRIPE_SECRET, event), event.to_string()),
        (Vec::new(), event.to_string()),
    ] {
        let (status, body) = post(&github_url, &headers, &body_sent).await;
        assert_eq!(status, 401, "{headers:?}: {body}");
    }
}

const APP_ORIGIN: &str = "https://app.example.org";
const OTHER_ORIGIN: &str = "https://evil.example";

/// App `api` with `[cors]`: `PUT /item` counts its runs in kv, `GET /runs`
/// reads the count, `public/index.html` is a static file.
const API_MANIFEST: &str = r#"name = "api"
[cors]
origins = ["https://app.example.org"]
headers = ["content-type", "x-trace"]
max_age = 120
[[route]]
method = "PUT"
path = "/item"
script = "item.lua"
[[route]]
method = "GET"
path = "/runs"
script = "runs.lua"
"#;

async fn send(url: &str, method: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new().request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap_or_default())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn no_cors_allow_headers(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .all(|name| !name.as_str().starts_with("access-control-allow"))
}

async fn deploy(admin: &Api, app: &str, files: &[(&str, &str)]) {
    let (status, body) = admin.deploy(app, files).await;
    assert_eq!(status, 200, "deploying {app}: {body}");
}

/// Deploys `files` plus `public/index.html` (public files travel as base64).
async fn deploy_with_public(admin: &Api, app: &str, files: &[(&str, &str)]) {
    let files: serde_json::Map<String, Value> = files
        .iter()
        .map(|(path, text)| (path.to_string(), Value::from(*text)))
        .collect();
    let index = base64::engine::general_purpose::STANDARD.encode("<h1>api</h1>");
    let (status, body) = admin
        .post_json(
            &format!("/_/api/v1/apps/{app}/deploys"),
            &serde_json::json!({ "files": files, "public": { "index.html": index } }),
        )
        .await;
    assert_eq!(status, 200, "deploying {app}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_allow_headers_follow_the_manifest() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    deploy_with_public(
        &admin,
        "api",
        &[
            ("picloud.toml", API_MANIFEST),
            (
                "item.lua",
                "return function() return { json = { runs = kv.incr('runs', 1) } } end",
            ),
            (
                "runs.lua",
                "return function() return { json = { runs = kv.get('runs') or 0 } } end",
            ),
        ],
    )
    .await;
    deploy(
        &admin,
        "plain",
        &[
            (
                "picloud.toml",
                "name = \"plain\"\n[[route]]\nmethod = \"GET\"\npath = \"/hello\"\nscript = \"hello.lua\"\n",
            ),
            ("hello.lua", "return function() return 'hi' end"),
        ],
    )
    .await;
    let url = |path: &str| format!("{}{path}", node.url());

    // An allowed preflight, answered by the node.
    let (status, headers, _) = send(
        &url("/api/item"),
        "OPTIONS",
        &[
            ("origin", APP_ORIGIN),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "Content-Type, X-Trace"),
        ],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert!(
        header(&headers, "access-control-allow-methods").is_some_and(|m| m.contains("PUT")),
        "{headers:?}"
    );
    assert_eq!(
        header(&headers, "access-control-allow-headers"),
        Some("content-type, x-trace")
    );
    assert_eq!(header(&headers, "access-control-max-age"), Some("120"));
    assert!(header(&headers, "vary").is_some_and(|v| v.contains("Origin")));
    assert!(header(&headers, "x-request-id").is_some());

    // Refused preflights: another origin, a header not listed, a method not
    // listed. No allow header, so the browser refuses.
    for request in [
        vec![
            ("origin", OTHER_ORIGIN),
            ("access-control-request-method", "PUT"),
        ],
        vec![
            ("origin", APP_ORIGIN),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-secret"),
        ],
        vec![
            ("origin", APP_ORIGIN),
            ("access-control-request-method", "OPTIONS"),
        ],
    ] {
        let (status, headers, _) = send(&url("/api/item"), "OPTIONS", &request).await;
        assert_eq!(status, 204, "{request:?}");
        assert!(no_cors_allow_headers(&headers), "{request:?}: {headers:?}");
    }
    // No preflight ran the script.
    let (_, _, runs) = send(&url("/api/runs"), "GET", &[]).await;
    assert_eq!(runs, r#"{"runs":0}"#);

    // Actual responses from the allowed origin: a route, a static file and
    // an error all carry the echoed origin, so a page can read each.
    for (method, path, status_expected) in [
        ("PUT", "/api/item", 200),
        ("GET", "/api/index.html", 200),
        ("GET", "/api/nowhere", 404),
    ] {
        let (status, headers, body) = send(&url(path), method, &[("origin", APP_ORIGIN)]).await;
        assert_eq!(status, status_expected, "{path}: {body}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some(APP_ORIGIN),
            "{path}"
        );
        assert_eq!(
            header(&headers, "access-control-expose-headers"),
            Some("x-request-id"),
            "{path}"
        );
        assert!(
            header(&headers, "vary").is_some_and(|v| v.contains("Origin")),
            "{path}"
        );
    }
    let (_, _, runs) = send(&url("/api/runs"), "GET", &[]).await;
    assert_eq!(runs, r#"{"runs":1}"#, "the one actual PUT ran the script");
    // Another origin gets the answer (the server cannot stop the request)
    // but no allow header, so its page cannot read it.
    let (status, headers, _) = send(&url("/api/runs"), "GET", &[("origin", OTHER_ORIGIN)]).await;
    assert_eq!(status, 200);
    assert!(no_cors_allow_headers(&headers), "{headers:?}");
    assert!(header(&headers, "vary").is_some_and(|v| v.contains("Origin")));

    // An app without [cors]: no CORS headers at all, and its OPTIONS
    // requests are its own (`/hello` answers GET only: 405 from the app).
    let (status, headers, _) = send(&url("/plain/hello"), "GET", &[("origin", APP_ORIGIN)]).await;
    assert_eq!(status, 200);
    assert!(no_cors_allow_headers(&headers), "{headers:?}");
    assert!(header(&headers, "vary").is_none(), "{headers:?}");
    let (status, headers, _) = send(
        &url("/plain/hello"),
        "OPTIONS",
        &[
            ("origin", APP_ORIGIN),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(status, 405);
    assert!(no_cors_allow_headers(&headers), "{headers:?}");

    // A manifest browsers would refuse is refused at deploy.
    let (status, body) = admin
        .deploy(
            "open",
            &[(
                "picloud.toml",
                "name = \"open\"\n[cors]\norigins = [\"*\"]\ncredentials = true\n",
            )],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("[cors] credentials = true"), "{body}");
}

/// The realtime stream of an app follows the app's `[cors]` like its routes:
/// a browser's reconnect sends `Last-Event-ID`, which makes it preflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_streams_follow_the_apps_cors() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    deploy(
        &admin,
        "live",
        &[(
            "picloud.toml",
            "name = \"live\"\n[cors]\norigins = [\"https://app.example.org\"]\n\
             [[topic]]\nname = \"news/*\"\nauth = \"public\"\nretain = 10\n",
        )],
    )
    .await;
    let url = |path: &str| format!("{}{path}", node.url());

    let (status, headers, _) = send(
        &url("/_/realtime/live/news/a"),
        "OPTIONS",
        &[
            ("origin", APP_ORIGIN),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "last-event-id"),
        ],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert!(
        header(&headers, "access-control-allow-headers")
            .is_some_and(|v| v.to_ascii_lowercase().contains("last-event-id")),
        "{headers:?}"
    );

    // The stream itself carries the allow header (read the head only).
    let response = reqwest::Client::new()
        .get(url("/_/realtime/live/news/a"))
        .header("origin", APP_ORIGIN)
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        header(response.headers(), "content-type"),
        Some("text/event-stream")
    );
    drop(response);

    // An error before the stream starts: the page can read its code.
    let (status, headers, body) = send(
        &url("/_/realtime/live/sports/a"),
        "GET",
        &[("origin", APP_ORIGIN)],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("topic_not_found"), "{body}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(APP_ORIGIN)
    );

    // Another origin: the preflight is answered without any allow header.
    let (status, headers, _) = send(
        &url("/_/realtime/live/news/a"),
        "OPTIONS",
        &[
            ("origin", OTHER_ORIGIN),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(status, 204);
    assert!(no_cors_allow_headers(&headers), "{headers:?}");
}
