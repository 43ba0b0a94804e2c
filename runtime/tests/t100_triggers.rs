//! Triggers on a 3-node cluster of real processes: kv writes matching a
//! trigger produce exactly one completed run each (the run's own writes
//! counted with `kv.incr`), even when the leader is killed with `kill -9`
//! in the middle; a script that always fails is dead-lettered after its
//! attempts and the app's `dead_letter` trigger runs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::cluster::{api, eventually, leader_index, start_three};
use common::{Api, TestNode, install_crypto};
use serde_json::Value;

const MANIFEST: &str = r#"
name = "trig"

[[route]]
method = "POST"
path = "/order/:n"
script = "order.lua"

[[trigger]]
kind = "kv"
match = "orders/*"
on = ["set"]
script = "on_order.lua"

[[trigger]]
kind = "kv"
match = "poison/*"
script = "poison.lua"
attempts = 2
backoff_ms = 20

[[trigger]]
kind = "dead_letter"
script = "alert.lua"
"#;

// Set-if-absent, so a write retried after an unknown outcome cannot fire
// the trigger twice for one order.
const ORDER: &str = "return function(req)\n  kv.cas('orders/' .. req.params.n, nil, tonumber(req.params.n))\n  return {status=201, json={ok=true}}\nend";
const ON_ORDER: &str = "return function(event, ctx)\n  assert(event.kind == 'kv' and event.op == 'set' and event.old == nil and type(event.new) == 'number', 'unexpected event')\n  kv.incr('runs')\n  kv.set('done/' .. event.key, ctx.attempt)\nend";
const POISON: &str = "return function(event, ctx)\n  error('cannot handle ' .. event.key)\nend";
const ALERT: &str = "return function(event, ctx)\n  kv.set('alert/' .. event.delivery_id, {code = event.code, error = event.error})\nend";

/// Deploys app `trig` with `manifest` and its scripts (`poison.lua` as given).
async fn deploy_trig(api: &Api, manifest: &str, poison: &str) {
    let (status, body) = api
        .deploy(
            "trig",
            &[
                ("picloud.toml", manifest),
                ("order.lua", ORDER),
                ("on_order.lua", ON_ORDER),
                ("poison.lua", poison),
                ("alert.lua", ALERT),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Places orders `range` through `apis` (round robin) with 8 clients,
/// retrying while there is no leader; returns how many were acknowledged.
async fn place_orders(apis: Vec<Api>, range: std::ops::Range<usize>) -> usize {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let apis = Arc::new(apis);
    let mut tasks = Vec::new();
    for client in 0..8 {
        let next = next.clone();
        let apis = apis.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= end {
                    return acked;
                }
                for attempt in 0..100 {
                    let api = &apis[(client + attempt) % apis.len()];
                    let sent = api
                        .http
                        .post(format!("{}/trig/order/{n}", api.base))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    if matches!(&sent, Ok(response) if response.status() == 201) {
                        acked += 1;
                        break;
                    }
                    assert!(attempt < 99, "order {n} never acknowledged");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let mut acked = 0;
    for task in tasks {
        acked += task.await.expect("client");
    }
    acked
}

/// Keys under `prefix` in app `trig`, read through `api`.
async fn count_keys(api: &Api, prefix: &str) -> usize {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/_/api/v1/apps/trig/kv?prefix={prefix}&limit=500");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", cursor.replace('/', "%2F")));
        }
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        count += page["items"].as_array().map_or(0, Vec::len);
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return count,
        }
    }
}

async fn kv_value(api: &Api, key: &str) -> Value {
    let (status, body) = api.get(&format!("/_/api/v1/apps/trig/kv/{key}")).await;
    if status == 200 {
        body["value"].clone()
    } else {
        Value::Null
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matching_write_runs_its_trigger_exactly_once_across_a_leader_kill() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    let (key, _token) = start_three(&mut nodes).await;
    deploy_trig(&api(&nodes[1], &key), MANIFEST, POISON).await;

    // 250 orders through the followers and the leader alike.
    let all: Vec<Api> = nodes.iter().map(|node| api(node, &key)).collect();
    assert_eq!(place_orders(all.clone(), 0..250).await, 250);

    // Kill the leader while runs are still pending, then 250 more orders
    // through the survivors.
    let victim = leader_index(&nodes, &all[0]).await;
    let (_, app) = all[victim].get("/_/api/v1/apps/trig").await;
    let runs_before_kill = kv_value(&all[victim], "runs").await;
    nodes[victim].kill();
    eprintln!(
        "killed the leader with {} runs pending and {runs_before_kill} done",
        app["trigger_backlog"]
    );
    let survivors: Vec<Api> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| api(&nodes[i], &key))
        .collect();
    assert_eq!(place_orders(survivors.clone(), 250..500).await, 250);

    // Exactly 500 runs completed: each order's run committed its writes
    // once, whatever the kill interrupted.
    let through = survivors[0].clone();
    eventually("every run completed", || {
        let through = through.clone();
        async move {
            let (_, app) = through.get("/_/api/v1/apps/trig").await;
            app["trigger_backlog"] == 0 && kv_value(&through, "runs").await == 500
        }
    })
    .await;
    assert_eq!(count_keys(&through, "done/").await, 500);
    assert_eq!(count_keys(&through, "orders/").await, 500);
    // The backlog shows in `cluster status` and `/_/metrics`.
    let (_, status) = through.get("/_/api/v1/cluster/status").await;
    assert_eq!(status["trigger_backlog"], 0, "{status}");
    let metrics = through
        .http
        .get(format!("{}/_/metrics", through.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("picloud_trigger_backlog{app=\"trig\"} 0")
            && metrics.contains("picloud_trigger_runs_completed_total"),
        "{metrics}"
    );

    // The killed node comes back and agrees.
    nodes[victim].extra_args.clear();
    nodes[victim].start().await;
    let back = api(&nodes[victim], &key);
    eventually("the restarted node caught up", || {
        let back = back.clone();
        async move { kv_value(&back, "runs").await == 500 }
    })
    .await;
    assert_eq!(kv_value(&through, "runs").await, 500);

    // A script that always fails: two attempts, then a dead letter, and the
    // dead_letter trigger records it with the error text.
    let (status, body) = through
        .call(
            "PUT",
            "/_/api/v1/apps/trig/kv/poison/1",
            Some(b"1".to_vec()),
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    eventually("the failing run was dead-lettered and alerted", || {
        let through = through.clone();
        async move { count_keys(&through, "alert/").await == 1 }
    })
    .await;
    let (_, page) = through
        .get("/_/api/v1/apps/trig/kv?prefix=alert/&limit=10")
        .await;
    let alert = &page["items"][0]["value"];
    assert_eq!(alert["code"], "failed", "{page}");
    assert!(
        alert["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot handle poison/1")),
        "{page}"
    );

    // `picloud dead-letters`: list and show it (both attempts, the error),
    // fix the script, retry: the run completes and leaves the table.
    let node = &nodes[(victim + 1) % 3];
    let listed = node
        .cli_with_key(&key, &["--json", "dead-letters", "list", "trig"])
        .ok();
    let listed: Value = serde_json::from_str(&listed).expect("json");
    let letters = listed["items"].as_array().expect("items");
    assert_eq!(letters.len(), 1, "{listed}");
    assert_eq!(letters[0]["trigger"], "poison");
    let id = letters[0]["id"].as_u64().expect("id").to_string();
    let shown = node
        .cli_with_key(&key, &["dead-letters", "show", "trig", &id])
        .ok();
    let shown: Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(
        shown["attempts"].as_array().map(Vec::len),
        Some(2),
        "{shown}"
    );
    assert_eq!(shown["event"]["key"], "poison/1", "{shown}");
    assert!(
        shown["attempts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot handle poison/1")),
        "{shown}"
    );
    let fixed = "return function(event, ctx)\n  kv.set('fixed/' .. event.key, ctx.attempt)\nend";
    deploy_trig(&through, MANIFEST, fixed).await;
    node.cli_with_key(&key, &["dead-letters", "retry", "trig", &id])
        .ok();
    eventually("the retried run completed", || {
        let through = through.clone();
        async move { kv_value(&through, "fixed/poison/1").await == 1 }
    })
    .await;
    let listed = node
        .cli_with_key(&key, &["--json", "dead-letters", "list", "trig"])
        .ok();
    let listed: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    let missing = node.cli_with_key(&key, &["dead-letters", "delete", "trig", &id]);
    assert!(
        !missing.success && missing.stderr.contains("dead_letter_not_found"),
        "{}",
        missing.stderr
    );

    // A redeploy that drops a trigger dead-letters its pending runs with
    // `trigger_removed`: a failing run waiting out a long backoff, here.
    let slow_retry = MANIFEST.replace("backoff_ms = 20", "backoff_ms = 600000");
    deploy_trig(&through, &slow_retry, POISON).await;
    let (status, _) = through
        .call(
            "PUT",
            "/_/api/v1/apps/trig/kv/poison/2",
            Some(b"2".to_vec()),
        )
        .await;
    assert!(status == 200 || status == 204);
    let without_poison = slow_retry
        .split("[[trigger]]")
        .filter(|part| !part.contains("poison.lua"))
        .collect::<Vec<_>>()
        .join("[[trigger]]");
    // poison.lua stays in the bundle, unused.
    deploy_trig(&through, &without_poison, POISON).await;
    eventually("the dropped trigger's run was dead-lettered", || {
        let through = through.clone();
        async move {
            let (_, page) = through.get("/_/api/v1/apps/trig/dead-letters").await;
            page["items"].as_array().is_some_and(|items| {
                items.iter().any(|letter| {
                    letter["code"] == "trigger_removed" && letter["event"]["key"] == "poison/2"
                })
            })
        }
    })
    .await;
    // The dead_letter trigger hears of it too, and nothing stays pending.
    eventually("the alert about the removed trigger ran", || {
        let through = through.clone();
        async move {
            let (_, app) = through.get("/_/api/v1/apps/trig").await;
            let (_, page) = through
                .get("/_/api/v1/apps/trig/kv?prefix=alert/&limit=10")
                .await;
            app["trigger_backlog"] == 0
                && page["items"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .any(|item| item["value"]["code"] == "trigger_removed")
                })
        }
    })
    .await;
}

const CRON_MANIFEST: &str = r#"
name = "tick"

[[trigger]]
kind = "cron"
name = "skip"
schedule = "@every 1s"
script = "tick.lua"

[[trigger]]
kind = "cron"
name = "once"
schedule = "@every 1s"
misfire = "fire_once"
script = "tick.lua"
"#;

// One key per (trigger, slot) and a counter per trigger: a slot run twice
// would make the counter exceed the keys.
const TICK: &str = "return function(event, ctx)\n  kv.incr('count/' .. ctx.trigger)\n  kv.set('slot/' .. ctx.trigger .. '/' .. event.scheduled_ms, ctx.delivery_id)\nend";

async fn tick_state(api: &Api, trigger: &str) -> (u64, Vec<u64>) {
    let (_, count) = api
        .get(&format!("/_/api/v1/apps/tick/kv/count/{trigger}"))
        .await;
    let (status, page) = api
        .get(&format!(
            "/_/api/v1/apps/tick/kv?prefix=slot/{trigger}/&limit=1000"
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    let slots = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            item["key"]
                .as_str()
                .and_then(|key| key.rsplit('/').next())
                .and_then(|slot| slot.parse().ok())
                .expect("a slot key")
        })
        .collect();
    (count["value"].as_u64().unwrap_or(0), slots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_slots_fire_once_each_across_a_leader_kill() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    // A slot older than 100 ms is missed, so the outage below misses some:
    // `skip` drops them, `fire_once` runs the latest one late.
    for node in &mut nodes {
        node.extra_env
            .push(("PICLOUD_TRIGGER_MISFIRE_GRACE_MS".into(), "100".into()));
    }
    let (key, _token) = start_three(&mut nodes).await;
    let first = api(&nodes[0], &key);
    let (status, body) = first
        .deploy(
            "tick",
            &[("picloud.toml", CRON_MANIFEST), ("tick.lua", TICK)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("a few slots fired", || {
        let first = first.clone();
        async move { tick_state(&first, "skip").await.0 >= 3 }
    })
    .await;

    // Kill the leader; the next leader rebuilds the schedule from the
    // replicated last fired slots.
    let victim = leader_index(&nodes, &first).await;
    let (_, before) = tick_state(&api(&nodes[(victim + 1) % 3], &key), "skip").await;
    let last_before = before.iter().copied().max().unwrap_or(0);
    nodes[victim].kill();
    // A failover can be quick enough to miss no slot; pausing the third node
    // too leaves no quorum, so no leader fires for the outage's length
    // (longer than two slots): some slots are surely missed.
    let paused = (victim + 2) % 3;
    nodes[paused].signal("STOP");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    nodes[paused].signal("CONT");
    let survivor = api(&nodes[(victim + 1) % 3], &key);
    // Twenty seconds of slots in all, the kill about a quarter of the way in.
    eventually("slots fire again after the failover", || {
        let survivor = survivor.clone();
        async move {
            let (_, slots) = tick_state(&survivor, "skip").await;
            slots
                .iter()
                .filter(|slot| **slot > last_before + 2_000)
                .count()
                >= 14
        }
    })
    .await;

    let mut missing = Vec::new();
    for trigger in ["skip", "once"] {
        let (count, slots) = tick_state(&survivor, trigger).await;
        // Each run wrote its slot's key once and counted once: no slot ran
        // twice, not even across the kill.
        assert_eq!(count, slots.len() as u64, "{trigger}: {slots:?}");
        assert!(slots.iter().all(|slot| slot % 1_000 == 0), "{slots:?}");
        let (first, last) = (slots[0], slots[slots.len() - 1]);
        let gaps: Vec<u64> = (first / 1_000..=last / 1_000)
            .map(|second| second * 1_000)
            .filter(|slot| !slots.contains(slot))
            .collect();
        eprintln!("{trigger}: {count} runs, missed slots {gaps:?}");
        missing.push(gaps);
    }
    // A redeploy without the cron triggers stops their schedules.
    let (status, body) = survivor
        .deploy(
            "tick",
            &[("picloud.toml", "name = \"tick\"\n"), ("tick.lua", TICK)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let stopped = tick_state(&survivor, "skip").await.0;
    // Absence cannot be polled for: watch two and a half periods pass.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(tick_state(&survivor, "skip").await.0, stopped);

    // The failover missed slots; `fire_once` ran one of them late, `skip` none.
    assert!(!missing[0].is_empty(), "the kill should have missed a slot");
    assert!(
        missing[1].len() < missing[0].len(),
        "fire_once caught up: skip missed {:?}, fire_once missed {:?}",
        missing[0],
        missing[1]
    );
}

/// A full outbox refuses the write that would overflow it, with 503
/// `outbox_full`, through a script and through the admin API, and loses
/// nothing already queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_writes_with_503_outbox_full() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let key = node.admin_key();
    let admin = api(&node, &key);
    // Runs fail and wait a long backoff, so they stay queued.
    let manifest = "name = \"full\"\n[[route]]\nmethod = \"POST\"\npath = \"/put/:n\"\nscript = \"put.lua\"\n[[trigger]]\nkind = \"kv\"\nmatch = \"q/*\"\nscript = \"stuck.lua\"\nbackoff_ms = 600000\n[triggers]\noutbox_max = 2\n";
    let put = "return function(req)\n  kv.set('q/' .. req.params.n, 1)\n  return {status=201, json={ok=true}}\nend";
    let stuck = "return function(event, ctx)\n  error('not today')\nend";
    let (status, body) = admin
        .deploy(
            "full",
            &[
                ("picloud.toml", manifest),
                ("put.lua", put),
                ("stuck.lua", stuck),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let anonymous = admin.with_key(None);
    for n in 0..2 {
        assert_eq!(
            anonymous
                .call("POST", &format!("/full/put/{n}"), None)
                .await
                .0,
            201
        );
    }
    let (status, body) = anonymous.call("POST", "/full/put/2", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "outbox_full", "{body}");
    let (status, body) = admin
        .call("PUT", "/_/api/v1/apps/full/kv/q/3", Some(b"1".to_vec()))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "outbox_full", "{body}");
    // The refused writes did not apply; the queued runs are still there.
    assert_eq!(admin.get("/_/api/v1/apps/full/kv/q/2").await.0, 404);
    assert_eq!(
        admin.get("/_/api/v1/apps/full").await.1["trigger_backlog"],
        2
    );
    // Keys no trigger matches are not affected.
    let (status, _) = admin
        .call("PUT", "/_/api/v1/apps/full/kv/other", Some(b"1".to_vec()))
        .await;
    assert!(status == 200 || status == 204);
}
