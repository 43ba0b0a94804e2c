//! Every case of the hostile catalogue (`lua-sdk/tests/hostile.toml`), run
//! against the real binary under a 3 GiB address-space limit (`ulimit -v`),
//! each while another app is measured:
//!
//! * every hostile request ends with the catalogue's code, within the
//!   script timeout plus a small margin (the wall clock holds);
//! * the other app's p99 latency during the attack stays within 5x its idle
//!   p99 (idle p99 below [`IDLE_P99_FLOOR`] counts as the floor: a few
//!   hundred microseconds of loopback HTTP are mostly scheduler noise);
//! * `/_/health` answers every probe within 100 ms;
//! * the node never dies, and serves normally afterwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestNode, deploy_routes, install_crypto};
use serde::Deserialize;

/// The catalogue, shared with the sandbox's own tests.
const CATALOGUE: &str = include_str!("../../lua-sdk/tests/hostile.toml");

/// The script timeout the node runs with here.
const TIMEOUT_MS: u64 = 1_000;
/// How late a hostile request may end after its timeout, measured at the
/// client (HTTP, queueing for the app's share of script threads, the debug
/// build) — the issue's "timeout + 100 ms" measured end to end.
const LATE_MS_MAX: u64 = 250;
/// Concurrent clients hammering each hostile route.
const ATTACKERS: usize = 4;
/// Hostile requests each attacker sends at least; a case that ends quickly
/// is repeated until the other app has been measured [`BENIGN_SAMPLES_MIN`]
/// times, up to [`ATTACK_REQUESTS_MAX`] requests. Every loop here is bounded
/// in count and time.
const ATTACK_REQUESTS_MIN: usize = 2;
const ATTACK_REQUESTS_MAX: usize = 400;
/// Requests to the other app measured during each attack, at least: its p99
/// is then the third-slowest, not the slowest.
const BENIGN_SAMPLES_MIN: usize = 300;
const ATTACK_DURATION_MAX: Duration = Duration::from_secs(20);
const IDLE_P99_FLOOR: Duration = Duration::from_millis(3);
const HEALTH_LATENCY_MAX: Duration = Duration::from_millis(100);
/// 3 GiB, as in the issue: a Pi-sized budget a node must survive every case in.
const ADDRESS_SPACE_BYTES_MAX: u64 = 3 << 30;

#[derive(Deserialize)]
struct Catalogue {
    case: Vec<Case>,
}

#[derive(Deserialize, Clone)]
struct Case {
    name: String,
    script: String,
    /// An error code, or `ok` for a handler that must simply finish.
    expect: String,
    /// A longer timeout than [`TIMEOUT_MS`] the case needs (its limit must
    /// be reached before the wall clock); such cases run on a second node.
    timeout_ms: Option<u64>,
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let rank = ((samples.len() as f64) * p).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Sequential requests to the benign route until `stop`, with their latencies.
async fn benign_latencies(
    url: String,
    stop: Arc<AtomicBool>,
    at_least: usize,
    measured: Arc<AtomicUsize>,
) -> Vec<Duration> {
    let http = reqwest::Client::new();
    let mut samples = Vec::new();
    let deadline = Instant::now() + ATTACK_DURATION_MAX;
    while (samples.len() < at_least || !stop.load(Ordering::Relaxed)) && Instant::now() < deadline {
        let started = Instant::now();
        let response = http.get(&url).send().await.expect("benign request");
        assert_eq!(response.status(), 200, "the benign app failed");
        let _ = response.bytes().await;
        samples.push(started.elapsed());
        measured.store(samples.len(), Ordering::Relaxed);
    }
    samples
}

/// `/_/health` every 20 ms until `stop`; the slowest answer.
async fn health_worst(url: String, stop: Arc<AtomicBool>) -> Duration {
    let http = reqwest::Client::new();
    let mut worst = Duration::ZERO;
    let deadline = Instant::now() + ATTACK_DURATION_MAX;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let started = Instant::now();
        let response = http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("health answers");
        assert_eq!(response.status(), 200);
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_hostile_case_slows_another_app_or_kills_the_node() {
    install_crypto();
    let catalogue: Catalogue = toml::from_str(CATALOGUE).expect("hostile.toml parses");
    let mut groups: std::collections::BTreeMap<u64, Vec<Case>> = Default::default();
    for case in catalogue.case {
        let timeout_ms = case.timeout_ms.unwrap_or(TIMEOUT_MS).max(TIMEOUT_MS);
        groups.entry(timeout_ms).or_default().push(case);
    }
    let mut failures = Vec::new();
    for (timeout_ms, cases) in groups {
        failures.extend(attack_one_node(&cases, timeout_ms).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Deploys `cases` as one app on a fresh node with `timeout_ms`, runs each
/// case's attack in turn while measuring another app; what went wrong.
async fn attack_one_node(cases: &[Case], timeout_ms: u64) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.address_space_bytes_max = Some(ADDRESS_SPACE_BYTES_MAX);
    node.extra_args = vec!["--script-timeout-ms".into(), timeout_ms.to_string()];
    node.start().await;
    let admin = node.client();
    let bad: Vec<(String, String)> = cases
        .iter()
        .map(|case| {
            (
                case.name.clone(),
                // As lua-sdk/tests/hostile.rs wraps it: the body is line 2.
                format!("return function(req)\n{}\nend", case.script),
            )
        })
        .collect();
    deploy_routes(&admin, "bad", &bad).await;
    let good = vec![(
        "ok".to_string(),
        "return function(req) return {json={ok=true, seen=kv.get('seen')}} end".to_string(),
    )];
    deploy_routes(&admin, "good", &good).await;

    let good_url = format!("{}/good/ok", node.url());
    let health_url = format!("{}/_/health", node.url());
    // Warm up, then the idle baseline.
    let stopped = || Arc::new(AtomicBool::new(true));
    let _ = benign_latencies(good_url.clone(), stopped(), 50, Arc::default()).await;
    let mut idle = benign_latencies(good_url.clone(), stopped(), 300, Arc::default()).await;
    let idle_p99 = percentile(&mut idle, 0.99);
    let allowed_p99 = idle_p99.max(IDLE_P99_FLOOR) * 5;
    println!(
        "timeout {timeout_ms} ms: idle p99 {idle_p99:?}; allowed under attack {allowed_p99:?}"
    );

    let mut failures = Vec::new();
    for case in cases {
        let stop = Arc::new(AtomicBool::new(false));
        let measured = Arc::new(AtomicUsize::new(0));
        let benign = tokio::spawn(benign_latencies(
            good_url.clone(),
            stop.clone(),
            BENIGN_SAMPLES_MIN,
            measured.clone(),
        ));
        let health = tokio::spawn(health_worst(health_url.clone(), stop.clone()));
        let mut attackers = Vec::new();
        for _ in 0..ATTACKERS {
            let url = format!("{}/bad/{}", node.url(), case.name);
            let measured = measured.clone();
            attackers.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut outcomes = Vec::new();
                let deadline = Instant::now() + ATTACK_DURATION_MAX;
                while (outcomes.len() < ATTACK_REQUESTS_MIN
                    || measured.load(Ordering::Relaxed) < BENIGN_SAMPLES_MIN)
                    && outcomes.len() < ATTACK_REQUESTS_MAX
                    && Instant::now() < deadline
                {
                    let started = Instant::now();
                    let response = http
                        .get(&url)
                        .timeout(ATTACK_DURATION_MAX)
                        .send()
                        .await
                        .expect("the node answers the hostile request");
                    let status = response.status().as_u16();
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
                    outcomes.push((status, code, started.elapsed(), body));
                }
                outcomes
            }));
        }
        let mut outcomes = Vec::new();
        for attacker in attackers {
            outcomes.extend(attacker.await.expect("attacker"));
        }
        stop.store(true, Ordering::Relaxed);
        let mut during = benign.await.expect("benign");
        let health_worst = health.await.expect("health");
        let during_p99 = percentile(&mut during, 0.99);
        let slowest = outcomes
            .iter()
            .map(|(_, _, elapsed, _)| *elapsed)
            .max()
            .unwrap_or_default();
        println!(
            "{:<24} benign p99 {:>10?} ({} requests), health worst {:>10?}, hostile slowest {:>10?}",
            case.name,
            during_p99,
            during.len(),
            health_worst,
            slowest
        );
        for (status, code, elapsed, body) in &outcomes {
            let as_expected = match case.expect.as_str() {
                "ok" => *status == 200,
                expected => code == expected,
            };
            if !as_expected {
                failures.push(format!(
                    "{}: expected {}, got {status} {body}",
                    case.name, case.expect
                ));
            }
            if *elapsed > Duration::from_millis(timeout_ms + LATE_MS_MAX) {
                failures.push(format!(
                    "{}: a hostile request took {elapsed:?} (timeout {timeout_ms} ms)",
                    case.name
                ));
            }
        }
        if during_p99 > allowed_p99 {
            failures.push(format!(
                "{}: the other app's p99 was {during_p99:?} (idle {idle_p99:?})",
                case.name
            ));
        }
        if health_worst > HEALTH_LATENCY_MAX {
            failures.push(format!("{}: /_/health took {health_worst:?}", case.name));
        }
        if let Some(child) = node.child.as_mut() {
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "the node died during {}; log:\n{}",
                case.name,
                node.log()
            );
        }
    }
    // The node still serves normally, and never logged a panic or an abort.
    let (status, body) = admin.get("/good/ok").await;
    assert_eq!(status, 200, "{body}");
    let log = node.log();
    if log.contains("panicked") || log.contains("memory allocation") {
        failures.push(format!("the node logged a panic or an abort:\n{log}"));
    }
    failures
}

const CRON_APP: &str = r#"name = "spin"
[[route]]
method = "GET"
path = "/ok"
script = "ok.lua"

[[trigger]]
kind = "cron"
schedule = "@every 1s"
script = "spin.lua"
attempts = 2
backoff_ms = 20
"#;

/// A trigger that never finishes (a C loop the budget must see) is ended by
/// its timeout each time, retried and dead-lettered like any failure; the
/// node keeps answering meanwhile, and after a kill -9 it serves the admin
/// API again (so an operator can act) while the same trigger keeps firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_that_always_times_out_is_dead_lettered_and_never_stops_the_node() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.address_space_bytes_max = Some(ADDRESS_SPACE_BYTES_MAX);
    node.extra_args = vec!["--script-timeout-ms".into(), "500".into()];
    node.start().await;
    let admin = node.client();
    let spin = "return function(event, ctx)\n  table.remove(setmetatable({}, {__len = function() return 2^62 end}), 1)\nend";
    let (status, body) = admin
        .deploy(
            "spin",
            &[
                ("picloud.toml", CRON_APP),
                ("spin.lua", spin),
                ("ok.lua", "return function(req) return 'ok' end"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let dead_letters = |api: common::Api| async move {
        let (status, page) = api.get("/_/api/v1/apps/spin/dead-letters").await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().cloned().unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let letters = loop {
        let letters = dead_letters(admin.clone()).await;
        if !letters.is_empty() {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter; log:\n{}",
            node.log()
        );
        let started = Instant::now();
        let (status, _) = admin.get("/_/health").await;
        assert_eq!(status, 200);
        assert!(started.elapsed() < HEALTH_LATENCY_MAX * 5, "health slow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let letter = letters[0].to_string();
    assert!(
        letter.contains("script_timeout") || letter.contains("timeout"),
        "{letter}"
    );

    // Restart while the trigger keeps firing: the admin API answers, and the
    // operator can delete the app.
    node.kill();
    node.start().await;
    let admin = node.client();
    let (status, body) = admin.get("/_/api/v1/apps").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.get("/spin/ok").await;
    assert_eq!((status, body.as_str()), (200, Some("ok")), "{body}");
    let (status, body) = admin.call("DELETE", "/_/api/v1/apps/spin", None).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    if let Some(child) = node.child.as_mut() {
        assert!(child.try_wait().expect("try_wait").is_none(), "node died");
    }
}

const PAGES_APP: &str = r#"name = "pages"
[[route]]
method = "POST"
path = "/fill/:n"
script = "fill.lua"

[[route]]
method = "GET"
path = "/walk/:what"
script = "walk.lua"
"#;

const FILL: &str = r#"return function(req)
  local n = tonumber(req.params.n)
  local blob = string.rep("x", 200 * 1024)
  kv.set("big/" .. string.format("%03d", n), blob)
  docs.insert("big", {_id = string.format("d%03d", n), blob = blob})
  return "ok"
end"#;

// Walks every page of a kv listing or a docs query asked for with the
// largest limit, and reports the largest page it was given.
const WALK: &str = r#"return function(req)
  local cursor, pages, total, largest = nil, 0, 0, 0
  repeat
    local page
    if req.params.what == "kv" then
      page = kv.list({prefix = "big/", limit = 1000, cursor = cursor})
    else
      page = docs.find("big", {}, {limit = 1000, cursor = cursor})
    end
    pages = pages + 1
    total = total + #page.items
    if #page.items > largest then largest = #page.items end
    cursor = page.cursor
  until cursor == nil or pages > 100
  return {json = {pages = pages, total = total, largest = largest}}
end"#;

/// `kv.list` and `docs.find` pages are cut by stored bytes
/// (`--read-page-bytes-max`), not only by count: a page asked for with
/// `limit = 1000` over values of 200 KiB holds a handful of them, a cursor
/// leads to the rest, and nothing is lost or repeated. (The issue's case: a
/// page of 1,000 values of 256 KiB took a node from 0.6 to 4.6 GB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_docs_pages_are_bounded_by_bytes() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.address_space_bytes_max = Some(ADDRESS_SPACE_BYTES_MAX);
    node.start().await;
    let admin = node.client();
    let (status, body) = admin
        .deploy(
            "pages",
            &[
                ("picloud.toml", PAGES_APP),
                ("fill.lua", FILL),
                ("walk.lua", WALK),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    const VALUES: u64 = 24;
    for n in 0..VALUES {
        let (status, body) = admin.call("POST", &format!("/pages/fill/{n}"), None).await;
        assert_eq!(status, 200, "{body}");
    }
    // 1 MiB pages of ~200 KiB values: at most 5 whole values and the one
    // that crossed the bound is left for the next page.
    for what in ["kv", "docs"] {
        let (status, walk) = admin.get(&format!("/pages/walk/{what}")).await;
        assert_eq!(status, 200, "{walk}");
        assert_eq!(walk["total"], VALUES, "{what}: {walk}");
        let largest = walk["largest"].as_u64().expect("largest");
        assert!((1..=5).contains(&largest), "{what}: {walk}");
        assert!(
            walk["pages"].as_u64().expect("pages") >= VALUES / 5,
            "{what}: {walk}"
        );
    }
    // The admin API's listing is cut the same way.
    let (status, page) = admin
        .get("/_/api/v1/apps/pages/kv?prefix=big/&limit=1000")
        .await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().map_or(0, Vec::len);
    assert!(
        (1..=5).contains(&items) && page["cursor"].is_string(),
        "{items} items"
    );
}
