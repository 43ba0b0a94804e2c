//! What an HTTP client of an app sees: how bodies become `req.json`, request
//! ids and script failures without internals, and `public/` static files
//! deployed through the CLI with `.picloudignore`.

mod common;

use common::{TestNode, install_crypto};
use serde_json::{Value, json};

const ECHO_MANIFEST: &str = r#"name = "echo"
[[route]]
method = "POST"
path = "/json"
script = "json.lua"
[[route]]
method = "GET"
path = "/boom"
script = "boom.lua"
"#;

/// Answers what the handler saw: `req.json` (or the string `"nil"`) and
/// how many times it ran, so a refused request is seen not to run it.
const JSON_SCRIPT: &str = r#"return function(req)
  local runs = kv.incr("runs", 1)
  local seen = req.json
  if seen == nil then seen = "nil" end
  return { json = { seen = seen, runs = runs, id = req.headers["x-request-id"] } }
end"#;

const BOOM_SCRIPT: &str = "return function(req)\n  error('secret sauce at line two')\nend";

/// One raw request: status, headers and body bytes.
async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = http.request(method, url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

/// A conditional GET with `If-None-Match: etag`.
async fn revalidate(
    http: &reqwest::Client,
    url: &str,
    etag: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    send(http, "GET", url, &[("if-none-match", etag)], Vec::new()).await
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_request_ids_and_script_errors() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    let exposed_manifest = format!(
        "{}[app]\nexpose_errors = true\n",
        ECHO_MANIFEST.replace("name = \"echo\"", "name = \"open\"")
    );
    for (app, manifest) in [("echo", ECHO_MANIFEST), ("open", exposed_manifest.as_str())] {
        let files = [
            ("picloud.toml", manifest),
            ("json.lua", JSON_SCRIPT),
            ("boom.lua", BOOM_SCRIPT),
        ];
        let (status, body) = admin.deploy(app, &files).await;
        assert_eq!(status, 200, "{app}: {body}");
    }
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", node.url());

    // Item 9, the rule: req.json whenever the body parses, whatever the
    // content type; a JSON content type with a body that does not parse is
    // 400 invalid_json and the script does not run.
    let cases: [(Option<&str>, &[u8], u16, Value); 7] = [
        (
            Some("application/json"),
            br#"{"a":1}"#,
            200,
            json!({"a": 1}),
        ),
        (None, br#"{"a":2}"#, 200, json!({"a": 2})),
        (Some("text/plain"), br#"{"a":3}"#, 200, json!({"a": 3})),
        (
            Some("application/x-www-form-urlencoded"),
            b"[4]",
            200,
            json!([4]),
        ),
        (Some("text/plain"), b"not json", 200, json!("nil")),
        (
            Some("application/json"),
            b"{broken",
            400,
            json!("invalid_json"),
        ),
        (
            Some("application/problem+json; charset=utf-8"),
            b"nope",
            400,
            json!("invalid_json"),
        ),
    ];
    let mut runs = 0;
    for (content_type, body, status, expected) in cases {
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| ("content-type", t))
            .into_iter()
            .collect();
        let (got, _, answer) =
            send(&http, "POST", &url("/echo/json"), &headers, body.to_vec()).await;
        let answer = json_of(&answer);
        assert_eq!(got, status, "{content_type:?}: {answer}");
        if status == 200 {
            runs += 1;
            assert_eq!(answer["seen"], expected, "{content_type:?}");
            assert_eq!(
                answer["runs"], runs,
                "the script ran once per accepted request"
            );
        } else {
            assert_eq!(
                answer["error"]["code"], expected,
                "{content_type:?}: {answer}"
            );
        }
    }
    let (_, stored) = admin.get("/_/api/v1/apps/echo/kv/runs").await;
    assert_eq!(
        stored["value"], runs,
        "refused bodies never reached the script"
    );

    // Item 10: a request id on every answer; a sane incoming one is kept
    // (and handed to the script), an odd one replaced.
    let (_, headers, body) = send(
        &http,
        "POST",
        &url("/echo/json"),
        &[("x-request-id", "abc-123")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(headers["x-request-id"], "abc-123");
    assert_eq!(json_of(&body)["id"], "abc-123");
    let odd = "has spaces and is far too long ".repeat(4);
    let (_, headers, _) = send(
        &http,
        "POST",
        &url("/echo/json"),
        &[("x-request-id", odd.as_str())],
        b"{}".to_vec(),
    )
    .await;
    let fresh = headers["x-request-id"].to_str().expect("ascii");
    assert!(!fresh.is_empty() && fresh != odd, "{fresh}");

    // An uncaught error: the client gets the code and the request id, not
    // the file, line or text; the app's log has all of it with the id.
    let (status, headers, body) = send(&http, "GET", &url("/echo/boom"), &[], Vec::new()).await;
    let body = json_of(&body);
    assert_eq!(status, 500, "{body}");
    let id = headers["x-request-id"].to_str().expect("ascii").to_string();
    assert_eq!(body["error"]["code"], "script_error");
    assert_eq!(body["error"]["request_id"], id.as_str());
    assert_eq!(
        body["error"]["message"],
        format!("the script failed; see the app's log (request id {id})").as_str()
    );
    let text = body.to_string();
    assert!(
        !text.contains("boom.lua") && !text.contains("secret sauce"),
        "{text}"
    );
    let log = node.cli(&["logs", "echo", "--limit", "10"]).ok();
    assert!(
        log.lines().any(|line| line.contains("secret sauce")
            && line.contains("boom.lua")
            && line.contains(&id)),
        "{log}"
    );

    // An app that opts in shows its errors.
    let (status, _, body) = send(&http, "GET", &url("/open/boom"), &[], Vec::new()).await;
    let body = json_of(&body);
    assert_eq!(status, 500);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("boom.lua:2:") && message.contains("secret sauce"),
        "{body}"
    );
    assert!(body["error"]["request_id"].is_string(), "{body}");

    // Other errors carry the id header too.
    let (status, headers, _) = send(&http, "GET", &url("/echo/nowhere"), &[], Vec::new()).await;
    assert_eq!(status, 404);
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_node_exposes_script_errors_by_default() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = vec!["--dev".into()];
    node.start().await;
    let files = [
        ("picloud.toml", ECHO_MANIFEST),
        ("json.lua", JSON_SCRIPT),
        ("boom.lua", BOOM_SCRIPT),
    ];
    let (status, body) = node.client().deploy("echo", &files).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = node.client().with_key(None).get("/echo/boom").await;
    assert_eq!(status, 500);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("secret sauce"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_files_and_picloudignore_through_the_cli() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let app = dir.path().join("site");
    std::fs::create_dir_all(app.join("public/img")).expect("mkdir");
    std::fs::create_dir_all(app.join("drafts")).expect("mkdir");
    std::fs::write(
        app.join("picloud.toml"),
        "name = \"site\"\n[[route]]\nmethod = \"GET\"\npath = \"/api\"\nscript = \"api.lua\"\n",
    )
    .expect("write");
    std::fs::write(app.join("api.lua"), "return function() return 'api' end").expect("write");
    // Every byte value, so a text round trip anywhere would show.
    let logo: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    std::fs::write(app.join("public/img/logo.png"), &logo).expect("write");
    std::fs::write(app.join("public/index.html"), "<h1>hi</h1>").expect("write");
    std::fs::write(app.join("public/art.psd"), [0u8, 1, 2]).expect("write");
    std::fs::write(app.join("drafts/big.bin"), [0xffu8; 64]).expect("write");

    // A binary file outside public/ blocks the deploy, named, with the way out.
    let refused = node.cli(&["deploy", app.to_str().expect("utf-8")]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("big.bin")
            && refused.stderr.contains("public/")
            && refused.stderr.contains(".picloudignore"),
        "{}",
        refused.stderr
    );
    std::fs::write(
        app.join(".picloudignore"),
        "# not part of the app\ndrafts/\n*.psd\n",
    )
    .expect("write");
    let out = node.cli(&["deploy", app.to_str().expect("utf-8")]).ok();
    assert!(out.contains("version 1"), "{out}");

    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", node.url());
    let (status, headers, body) =
        send(&http, "GET", &url("/site/img/logo.png"), &[], Vec::new()).await;
    assert_eq!(status, 200);
    assert_eq!(body, logo, "served byte for byte");
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["cache-control"], "public, no-cache");
    let etag = headers["etag"].to_str().expect("ascii").to_string();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    let (status, headers, body) = revalidate(&http, &url("/site/img/logo.png"), &etag).await;
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(headers["etag"], etag.as_str());
    let (status, headers, body) =
        send(&http, "HEAD", &url("/site/img/logo.png"), &[], Vec::new()).await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(headers["content-length"], "3000");
    let (status, headers, body) = send(&http, "GET", &url("/site/"), &[], Vec::new()).await;
    assert_eq!((status, body.as_slice()), (200, b"<h1>hi</h1>".as_slice()));
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    // Routes win; ignored files were never sent; files answer GET and HEAD only.
    let (status, _, body) = send(&http, "GET", &url("/site/api"), &[], Vec::new()).await;
    assert_eq!((status, body.as_slice()), (200, b"api".as_slice()));
    for path in [
        "/site/art.psd",
        "/site/drafts/big.bin",
        "/site/img/nope.png",
    ] {
        let (status, _, _) = send(&http, "GET", &url(path), &[], Vec::new()).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, _) = send(&http, "POST", &url("/site/index.html"), &[], Vec::new()).await;
    assert_eq!(status, 404);

    // A redeploy with a changed file changes its ETag: the old one no longer matches.
    std::fs::write(app.join("public/img/logo.png"), b"new").expect("write");
    node.cli(&["deploy", app.to_str().expect("utf-8")]).ok();
    let (status, headers, body) = revalidate(&http, &url("/site/img/logo.png"), &etag).await;
    assert_eq!((status, body.as_slice()), (200, b"new".as_slice()));
    assert_ne!(headers["etag"], etag.as_str());
}
