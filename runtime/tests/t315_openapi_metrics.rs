//! Issue 16's operator surface on a real node: the OpenAPI document
//! (`GET /_/api/v1/openapi.json`, public) and the `/_/metrics` additions:
//! requests per app and status class, latency per app, script time, Raft
//! commit latency and log size, actor restarts. The counts are checked to
//! move by exactly the requests sent.

mod common;

use std::collections::BTreeMap;

use common::cluster::eventually;
use common::{Api, TestNode, install_crypto};
use serde_json::Value;

const MANIFEST: &str = r#"
name = "meter"

[[route]]
method = "GET"
path = "/ok"
script = "ok.lua"

[[route]]
method = "GET"
path = "/moved"
script = "moved.lua"

[[route]]
method = "GET"
path = "/teapot"
script = "teapot.lua"

[[route]]
method = "GET"
path = "/boom"
script = "boom.lua"

[[trigger]]
kind = "kv"
match = "jobs/*"
script = "job.lua"
"#;

const OK: &str = "return function(req)\n  return {json = {ok = true}}\nend";
const MOVED: &str =
    "return function(req)\n  return {status = 302, headers = {location = '/meter/ok'}}\nend";
const TEAPOT: &str = "return function(req)\n  return {status = 418, json = {short = 'stout'}}\nend";
const BOOM: &str = "return function(req)\n  error('boom')\nend";
const JOB: &str = "return function(event, ctx)\n  local n = 0\n  for i = 1, 20000 do n = n + i end\n  kv.set('done/' .. event.key, n)\nend";

/// `/_/metrics` as `series → value` (`name{labels}` as printed).
async fn scrape(api: &Api) -> BTreeMap<String, f64> {
    let response = api
        .http
        .get(format!("{}/_/metrics", api.base))
        .bearer_auth(api.key.as_deref().expect("admin key"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            (
                series.to_string(),
                value.parse::<f64>().unwrap_or_else(|_| panic!("{line}")),
            )
        })
        .collect()
}

fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from /_/metrics"))
}

fn requests(metrics: &BTreeMap<String, f64>, class: &str) -> f64 {
    value(
        metrics,
        &format!("picloud_http_requests_total{{app=\"meter\",class=\"{class}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_and_metrics() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let api = node.client();

    // The document: public (no key), OpenAPI 3.1, the same bytes each time.
    let url = format!("{}/_/api/v1/openapi.json", node.url());
    let first = reqwest::get(&url).await.expect("openapi");
    assert_eq!(first.status(), 200);
    assert!(
        first.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("application/json")
    );
    let bytes = first.bytes().await.expect("body");
    let document: Value = serde_json::from_slice(&bytes).expect("the document parses");
    let version = document["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1"), "{version}");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() > 40, "{} paths", paths.len());
    for path in [
        "/_/api/v1/apps/{app}/kv/{key}",
        "/_/metrics",
        "/_/api/v1/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    assert!(paths["/_/api/v1/apps/{app}/files/{path}"]["head"].is_object());
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let again = reqwest::get(&url)
        .await
        .expect("openapi")
        .bytes()
        .await
        .expect("body");
    assert_eq!(bytes, again);

    // An app with a route per status class and a kv trigger.
    let (status, body) = api
        .deploy(
            "meter",
            &[
                ("picloud.toml", MANIFEST),
                ("ok.lua", OK),
                ("moved.lua", MOVED),
                ("teapot.lua", TEAPOT),
                ("boom.lua", BOOM),
                ("job.lua", JOB),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = scrape(&api).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let sent = [
        ("/meter/ok", 200, 5),
        ("/meter/moved", 302, 2),
        ("/meter/teapot", 418, 3),
        ("/meter/no-such-route", 404, 1),
        ("/meter/boom", 500, 2),
        ("/ghost/ok", 404, 2),
    ];
    for (path, expected, times) in sent {
        for _ in 0..times {
            let response = http
                .get(format!("{}{path}", node.url()))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status().as_u16(), expected, "{path}");
        }
    }
    let after = scrape(&api).await;
    for (class, moved) in [("2xx", 5.0), ("3xx", 2.0), ("4xx", 4.0), ("5xx", 2.0)] {
        assert_eq!(
            requests(&after, class) - requests(&before, class),
            moved,
            "class {class}"
        );
    }
    let count = |metrics: &BTreeMap<String, f64>| {
        value(
            metrics,
            "picloud_http_request_duration_seconds_count{app=\"meter\"}",
        )
    };
    assert_eq!(count(&after) - count(&before), 13.0);
    assert_eq!(
        value(
            &after,
            "picloud_http_request_duration_seconds_bucket{app=\"meter\",le=\"+Inf\"}"
        ),
        count(&after)
    );
    assert!(
        value(
            &after,
            "picloud_http_request_duration_seconds_sum{app=\"meter\"}"
        ) > 0.0
    );
    assert!(
        !after.keys().any(|series| series.contains("app=\"ghost\"")),
        "no series for an app that does not exist"
    );
    let script = |metrics: &BTreeMap<String, f64>| {
        value(metrics, "picloud_script_seconds_total{app=\"meter\"}")
    };
    assert!(script(&after) > script(&before), "the routes ran scripts");

    // A trigger run (fired by an admin kv write: no route runs) adds script
    // time; the write is a Raft commit proposed on this node.
    let completed = value(&after, "picloud_trigger_runs_completed_total");
    let commits = value(&after, "picloud_raft_commit_seconds_count");
    let (status, body) = api
        .call("PUT", "/_/api/v1/apps/meter/kv/jobs/1", Some(b"1".to_vec()))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the trigger run completes", || {
        let api = api.clone();
        async move {
            let metrics = scrape(&api).await;
            value(&metrics, "picloud_trigger_runs_completed_total") > completed
        }
    })
    .await;
    let triggered = scrape(&api).await;
    assert!(
        script(&triggered) > script(&after),
        "the trigger run's script time is counted"
    );
    for class in ["2xx", "3xx", "4xx", "5xx"] {
        assert_eq!(requests(&triggered, class), requests(&after, class));
    }
    assert!(value(&triggered, "picloud_raft_commit_seconds_count") > commits);
    assert_eq!(
        value(
            &triggered,
            "picloud_raft_commit_seconds_bucket{le=\"+Inf\"}"
        ),
        value(&triggered, "picloud_raft_commit_seconds_count")
    );
    assert!(value(&triggered, "picloud_raft_commit_seconds_sum") > 0.0);
    let entries = value(&triggered, "picloud_raft_log_entries");
    let applied = value(&triggered, "picloud_raft_applied_index");
    assert!(
        entries >= 1.0 && entries <= applied + 1.0,
        "{entries} entries, applied {applied}"
    );

    // Deleting the app drops its series.
    let (status, body) = api.call("DELETE", "/_/api/v1/apps/meter", None).await;
    assert_eq!(status, 200, "{body}");
    let deleted = scrape(&api).await;
    assert!(
        !deleted
            .keys()
            .any(|series| series.contains("app=\"meter\"")),
        "the deleted app's series are gone"
    );

    // Restarts per actor are exported (the family is always described).
    let text = api.get("/_/metrics").await.1;
    let text = text.as_str().expect("text");
    assert!(text.contains("# TYPE picloud_actor_restarts_total counter"));
}
