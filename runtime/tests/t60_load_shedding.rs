//! Bounded everywhere: a full node sheds with 503 `overloaded`, a full app pool
//! with 503 `app_busy`, and both recover the moment load goes away.

mod common;

use std::time::Duration;

use common::{Api, TestNode, install_crypto, manifest};
use serde_json::Value;
use tokio::task::JoinHandle;

/// Spins until `release` is set, so a test holds a request open as long as it
/// wants without guessing at timings.
const HOLD: &str = "return function(req)\n  while kv.get('release', {consistency='stale'}) == nil do end\n  return 'held'\nend";
const QUICK: &str = "return function(req) return 'quick' end";
const RELEASE: &str = "return function(req) kv.set('release', true) return 'released' end";

async fn deploy_hold_app(node: &TestNode) {
    let (status, body) = node
        .client()
        .deploy(
            "shed",
            &[
                (
                    "picloud.toml",
                    &manifest(
                        "shed",
                        &[
                            ("GET", "/hold", "hold.lua"),
                            ("GET", "/quick", "quick.lua"),
                            ("POST", "/release", "release.lua"),
                        ],
                    ),
                ),
                ("hold.lua", HOLD),
                ("quick.lua", QUICK),
                ("release.lua", RELEASE),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Starts a held request and returns it once quick requests are being shed
/// with `code`. A probe can win the contested slot first, and then the hold
/// itself is shed: it is started again until it is the one holding.
async fn hold_until_shed(api: &Api, code: &str) -> JoinHandle<(u16, Value)> {
    let spawn_hold = || {
        let api = api.clone();
        tokio::spawn(async move { api.get("/shed/hold").await })
    };
    let mut held = spawn_hold();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api.get("/shed/quick").await;
        if status == 503 && body["error"]["code"] == code && !held.is_finished() {
            return held;
        }
        if held.is_finished() {
            let (status, body) = held.await.expect("hold call");
            assert_eq!(
                (status, body["error"]["code"].clone()),
                (503, Value::from(code))
            );
            held = spawn_hold();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hold never got the slot"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_sheds_with_overloaded() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = vec![
        "--http-inflight-max".into(),
        "1".into(),
        "--script-timeout-ms".into(),
        "3000".into(),
    ];
    node.start().await;
    deploy_hold_app(&node).await;
    let api = node.client().with_key(None);
    let held = hold_until_shed(&api, "overloaded").await;
    let (status, body) = node.client().get("/_/api/v1/apps").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, Value::from("overloaded"))
    );
    // Health needs no permit: operators can still see the node.
    assert_eq!(api.get("/_/health").await.0, 200);
    // The hold cannot be released (that needs a slot too); it ends at its
    // wall-clock limit, and the node serves again at once.
    let (status, body) = held.await.expect("held call");
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (504, Value::from("script_timeout"))
    );
    assert_eq!(api.get("/shed/quick").await, (200, Value::from("quick")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_app_pool_answers_app_busy_and_recovers() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = vec![
        "--vm-pool-size-max".into(),
        "1".into(),
        "--vm-wait-ms".into(),
        "50".into(),
    ];
    node.start().await;
    deploy_hold_app(&node).await;
    let api = node.client().with_key(None);
    let held = hold_until_shed(&api, "app_busy").await;
    // Another app is not affected by this app's full pool.
    let (status, body) = node
        .client()
        .deploy(
            "other",
            &[
                (
                    "picloud.toml",
                    &manifest("other", &[("GET", "/q", "q.lua")]),
                ),
                ("q.lua", QUICK),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.get("/other/q").await, (200, Value::from("quick")));
    // Release the hold through the admin API (no app VM needed), then the app serves again.
    let (status, body) = node
        .client()
        .call(
            "PUT",
            "/_/api/v1/apps/shed/kv/release",
            Some(b"true".to_vec()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(held.await.expect("held call"), (200, Value::from("held")));
    assert_eq!(api.get("/shed/quick").await, (200, Value::from("quick")));
}
