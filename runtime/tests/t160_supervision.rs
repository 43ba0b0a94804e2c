//! Every long-running duty of a node is a supervised actor: panicked through
//! the test-only fault switch (`POST /_/api/v1/faults/{name}`, compiled into
//! test builds only) while work is pending, it is restarted with backoff,
//! counted in `picloud_actor_restarts_total{actor="..."}`, and the pending
//! work completes. A trigger run that panics fails that run (retried like
//! any error) and frees its slot.

mod common;

use common::cluster::eventually;
use common::{Api, TestNode, install_crypto};
use serde_json::Value;

const MANIFEST: &str = r#"
name = "sup"

[[route]]
method = "GET"
path = "/hi"
script = "hi.lua"

[[route]]
method = "POST"
path = "/put/:n"
script = "put.lua"

[[trigger]]
kind = "kv"
match = "in/*"
on = ["set"]
script = "on_in.lua"
attempts = 3
backoff_ms = 20

[[trigger]]
kind = "cron"
name = "tick"
schedule = "@every 1s"
script = "tick.lua"
"#;

const HI: &str = "return function(req) return 'hi v1' end";
const PUT: &str = "return function(req)\n  kv.set('in/' .. req.params.n, tonumber(req.params.n))\n  return {status=201, json={ok=true}}\nend";
// Records the attempt that completed, so a panicked first attempt shows.
const ON_IN: &str = "return function(event, ctx)\n  kv.set('out/' .. event.key, ctx.attempt)\nend";
const TICK: &str = "return function(event, ctx)\n  kv.incr('ticks')\nend";

async fn deploy(api: &Api, hi: &str) {
    let (status, body) = api
        .deploy(
            "sup",
            &[
                ("picloud.toml", MANIFEST),
                ("hi.lua", hi),
                ("put.lua", PUT),
                ("on_in.lua", ON_IN),
                ("tick.lua", TICK),
            ],
        )
        .await;
    assert_eq!(status, 200, "deploy: {body}");
}

/// `picloud_actor_restarts_total{actor="<actor>"}` on `api`'s node.
async fn restarts(api: &Api, actor: &str) -> u64 {
    metric(
        api,
        &format!("picloud_actor_restarts_total{{actor=\"{actor}\"}}"),
    )
    .await
}

async fn metric(api: &Api, series: &str) -> u64 {
    let (status, text) = api.get("/_/metrics").await;
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

async fn arm(api: &Api, fault: &str) {
    let (status, body) = api
        .call("POST", &format!("/_/api/v1/faults/{fault}"), None)
        .await;
    assert_eq!(status, 204, "arming {fault}: {body}");
}

/// The JSON value of kv `key` of app `sup`, or `Null`.
async fn kv(api: &Api, key: &str) -> Value {
    let (status, body) = api.get(&format!("/_/api/v1/apps/sup/kv/{key}")).await;
    match status {
        200 => body["value"].clone(),
        404 => Value::Null,
        other => panic!("kv get {key}: {other} {body}"),
    }
}

async fn put(api: &Api, n: u64) {
    let (status, body) = api.call("POST", &format!("/sup/put/{n}"), None).await;
    assert_eq!(status, 201, "put {n}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_duty_restarts_after_a_panic_and_finishes_its_work() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let api = node.client();
    deploy(&api, HI).await;

    // The write batcher panics holding a write it took off its queue; that
    // write and the ones queued behind it complete after the restart.
    arm(&api, "batcher").await;
    let writes: Vec<_> = (0..8u64)
        .map(|n| {
            let api = api.clone();
            tokio::spawn(async move { put(&api, n).await })
        })
        .collect();
    for write in writes {
        write.await.expect("write task");
    }
    assert_eq!(restarts(&api, "batcher").await, 1, "{}", node.log());
    // ... and each of those writes' trigger runs completed.
    for n in 0..8u64 {
        let key = format!("out/in/{n}");
        eventually(&key, || {
            let api = api.clone();
            let key = key.clone();
            async move { kv(&api, &key).await.is_number() }
        })
        .await;
    }

    // The dispatcher panics at its next scan; the run fired meanwhile is
    // claimed and completed by the restarted one.
    arm(&api, "triggers").await;
    put(&api, 100).await;
    eventually("run after a dispatcher restart", || {
        let api = api.clone();
        async move { kv(&api, "out/in/100").await == 1 }
    })
    .await;
    assert_eq!(restarts(&api, "triggers").await, 1);

    // A run that panics fails (attempt 1), frees its slot and is retried:
    // attempt 2 completes.
    // Named for this trigger's script: the cron tick's runs must not take it.
    arm(&api, "trigger_run/on_in.lua").await;
    put(&api, 200).await;
    eventually("a panicked run retried", || {
        let api = api.clone();
        async move { kv(&api, "out/in/200").await == 2 }
    })
    .await;
    eventually("the panicked run's slot freed", || {
        let api = api.clone();
        async move { metric(&api, "picloud_trigger_runs_inflight").await == 0 }
    })
    .await;
    assert!(metric(&api, "picloud_trigger_runs_failed_total").await >= 1);

    // The cron scheduler panics and keeps firing after its restart.
    arm(&api, "cron").await;
    eventually("cron scheduler restarted", || {
        let api = api.clone();
        async move { restarts(&api, "cron").await == 1 }
    })
    .await;
    let ticks = kv(&api, "ticks").await.as_u64().unwrap_or(0);
    eventually("cron fires after the restart", || {
        let api = api.clone();
        async move { kv(&api, "ticks").await.as_u64().unwrap_or(0) >= ticks + 2 }
    })
    .await;

    // The HTTP accept loop panics after handing off a connection; the
    // requests that arrive meanwhile wait in the listener's backlog and are
    // served by the restarted loop.
    arm(&api, "http_accept").await;
    for _ in 0..5 {
        // A fresh connection each time, so each goes through accept.
        let fresh = Api {
            http: reqwest::Client::new(),
            ..api.clone()
        };
        let (status, body) = fresh.get("/sup/hi").await;
        assert_eq!((status, body.as_str()), (200, Some("hi v1")));
    }
    assert_eq!(restarts(&api, "http_accept").await, 1);

    // The applied-change feed panics on the next change; after its restart a
    // deploy still reaches the app's actor.
    arm(&api, "app_events").await;
    deploy(&api, "return function(req) return 'hi v2' end").await;
    eventually("app_events restarted", || {
        let api = api.clone();
        async move { restarts(&api, "app_events").await == 1 }
    })
    .await;
    deploy(&api, "return function(req) return 'hi v3' end").await;
    let (status, body) = api.get("/sup/hi").await;
    assert_eq!((status, body.as_str()), (200, Some("hi v3")));

    // An app's own actor: restarted, and the app keeps serving.
    arm(&api, "app/sup").await;
    eventually("app actor restarted", || {
        let api = api.clone();
        async move { restarts(&api, "app").await == 1 }
    })
    .await;
    let (status, body) = api.get("/sup/hi").await;
    assert_eq!((status, body.as_str()), (200, Some("hi v3")));

    assert!(
        node.log().contains("duty panicked; restarting"),
        "a restart is logged with the duty's name"
    );
    node.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_switch_needs_the_admin_key() {
    // Test builds only (a release build has no such route; `.ci/run` checks
    // that the release feature set lacks `fault-injection`). Even there,
    // only an admin may arm a fault.
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let anonymous = node.client().with_key(None);
    let (status, body) = anonymous
        .call("POST", "/_/api/v1/faults/batcher", None)
        .await;
    assert_eq!(status, 401, "{body}");
    // Nothing was armed: writes go through without a restart.
    let api = node.client();
    deploy(&api, HI).await;
    put(&api, 1).await;
    assert_eq!(restarts(&api, "batcher").await, 0);
    node.terminate();
}
