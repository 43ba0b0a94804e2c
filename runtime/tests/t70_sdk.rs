//! The Lua SDK against a real node: every kv call (through Raft and the node's
//! `Host`), TTL expiry, error codes and limits, request and response shapes.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestNode, install_crypto};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_call_works_through_the_node() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/sdk");
    node.cli(&["deploy", app.to_str().expect("utf-8")]).ok();
    let api = node.client().with_key(None);

    let (status, out) = api.call("POST", "/sdk/kv", None).await;
    assert_eq!(status, 200, "{out}");
    let doc = json!({"name": "pi", "tags": ["a", "b"], "n": 1.5, "ok": true});
    assert_eq!(out["get"], doc);
    assert_eq!(out["stale"], doc);
    assert_eq!(out["missing"], true);
    assert_eq!(
        (out["incr1"].clone(), out["incr2"].clone()),
        (json!(5), json!(6))
    );
    assert_eq!(
        (
            out["cas_absent"].clone(),
            out["cas_wrong"].clone(),
            out["cas_right"].clone()
        ),
        (json!(true), json!(false), json!(true))
    );
    assert_eq!(out["slot"], "second");
    assert_eq!(out["cas_number"], true, "6 equals 6.0 for cas");
    assert_eq!(
        (out["deleted"].clone(), out["deleted_again"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(out["pages"], json!([2, 2, 1, true]));
    assert_eq!(out["first_key"], "list/1");
    assert_eq!(out["atomic"].as_array().map(Vec::len), Some(4), "{out}");
    assert_eq!(out["a1"], "y");
    assert_eq!(out["atomic_failed"], true, "{out}");
    assert_eq!(out["a3"], true, "a failed atomic writes nothing");
    assert_eq!(out["json"], 3);
    assert_eq!(out["time_ok"], true);
    // The writes are real: visible through the admin API and the log line is kept.
    assert_eq!(node.cli(&["kv", "get", "sdk", "counter"]).ok().trim(), "10");
    assert!(node.cli(&["logs", "sdk"]).ok().contains("sdk run done"));

    let (status, out) = api.get("/sdk/errors").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out,
        json!({
            "incr": "not_a_number",
            "long_key": "key_too_large",
            "big_value": "value_too_large",
            "big_page": "invalid_limit",
            "nil_value": true,
        })
    );

    let (status, body) = api
        .call(
            "POST",
            "/sdk/echo/a/b%20c?x=1&y=two",
            Some(br#"{"k":[1,2]}"#.to_vec()),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/echo/a/b%20c");
    assert_eq!(body["rest"], "a/b%20c");
    assert_eq!(body["query"], json!({"x": "1", "y": "two"}));
    assert_eq!(body["json"], json!({"k": [1, 2]}));
    assert_eq!(body["body"], r#"{"k":[1,2]}"#);
    let response = reqwest::Client::new()
        .get(format!("{}/sdk/echo/x", node.url()))
        .header("x-test", "hello")
        .send()
        .await
        .expect("echo");
    assert_eq!(response.headers()["x-echo"], "yes");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["header"], "hello");

    // TTL: present at once, gone once the second has passed (polled, bounded).
    assert_eq!(api.get("/sdk/ttl/session?set=1").await.0, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen_present = false;
    loop {
        let (_, body) = api.get("/sdk/ttl/session").await;
        if body["present"] == true {
            seen_present = true;
        } else {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ttl never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen_present, "the value was readable before it expired");
    let expired = node.cli(&["kv", "get", "sdk", "session"]);
    assert!(!expired.success && expired.stderr.contains("key_not_found"));
}
