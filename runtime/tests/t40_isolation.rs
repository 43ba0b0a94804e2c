//! Hostile scripts end with their own JSON error and never affect another app:
//! runaway loops (plain, inside pcall, inside coroutines), a backtracking
//! pattern, memory bombs, deep recursion and plain errors, while a well-behaved app keeps answering.

mod common;

use common::{TestNode, deploy_routes, install_crypto, manifest};
use serde_json::json;

const HOSTILE: &[(&str, &str, &str)] = &[
    ("loop", "while true do end", "script_timeout"),
    (
        "pattern",
        "local s = string.rep('a', 30000) local x = s:find('.-.-.-.-b')",
        "script_timeout",
    ),
    (
        "pcall_loop",
        "while true do pcall(function() while true do end end) end",
        "script_timeout",
    ),
    (
        "coroutine_loop",
        "coroutine.wrap(function() while true do end end)()",
        "script_timeout",
    ),
    (
        "bomb",
        "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end",
        "script_memory",
    ),
    (
        "pcall_bomb",
        "while true do pcall(function() local s = string.rep('x', 1e9) end) end",
        "script_memory",
    ),
    (
        "recurse",
        "local function f(n) return f(n + 1) + 1 end local x = f(1)",
        "script_error",
    ),
    ("error", "error('this script is broken')", "script_error"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scripts_fail_alone() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    // Small budgets keep the test quick; they are the same code paths as the defaults.
    node.extra_args = vec![
        "--script-timeout-ms".into(),
        "4000".into(),
        "--script-instructions-max".into(),
        "20000000".into(),
        "--script-memory-bytes-max".into(),
        "8388608".into(),
    ];
    node.start().await;
    let admin = node.client();

    let bad: Vec<(String, String)> = HOSTILE
        .iter()
        .map(|(name, body, _)| {
            (
                name.to_string(),
                format!("return function(req)\n{body}\nreturn 'survived'\nend"),
            )
        })
        .collect();
    deploy_routes(&admin, "bad", &bad).await;
    let good = vec![(
        "ok".to_string(),
        "return function(req) return {json={ok=true, n=kv.incr('calls', 1)}} end".to_string(),
    )];
    deploy_routes(&admin, "good", &good).await;

    // Every hostile route, twice, all at once, while the good app is called in a loop.
    let mut hostile = Vec::new();
    for round in 0..2 {
        for (name, _, code) in HOSTILE {
            let api = admin.with_key(None);
            hostile.push(tokio::spawn(async move {
                let (status, body) = api.get(&format!("/bad/{name}")).await;
                (round, *name, *code, status, body)
            }));
        }
    }
    let good_api = admin.with_key(None);
    let good_calls = tokio::spawn(async move {
        let mut answered = 0u64;
        for n in 1..=40u64 {
            let (status, body) = good_api.get("/good/ok").await;
            assert_eq!((status, body), (200, json!({"ok": true, "n": n})));
            answered += 1;
        }
        answered
    });
    for task in hostile {
        let (round, name, code, status, body) = task.await.expect("hostile call");
        assert_eq!(
            body["error"]["code"], code,
            "{name} round {round}: {status} {body}"
        );
        let expected_status = if code == "script_timeout" { 504 } else { 500 };
        assert_eq!(status, expected_status, "{name}: {body}");
    }
    assert_eq!(good_calls.await.expect("good calls"), 40);

    // The hostile app itself still serves a fresh request correctly
    // afterwards; the client is told the request id, not the script's text.
    let (status, body) = admin.get("/bad/error").await;
    assert_eq!(status, 500);
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        !message.contains("this script is broken") && message.contains("request id"),
        "{body}"
    );
    // Each failure is in the app's own log with its code, for its author to find.
    let app_log = node.cli(&["logs", "bad", "--limit", "100"]).ok();
    assert!(
        app_log.contains("this script is broken (script_error)"),
        "{app_log}"
    );
    assert!(
        app_log.contains("(script_timeout)") && app_log.contains("(script_memory)"),
        "{app_log}"
    );
    let log = node.log();
    assert!(!log.contains("panicked"), "no panic in the node: {log}");
}

/// One slow invocation does not hold up others of the same app: the fast
/// request is answered while the slow one is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_invocation_does_not_block_its_app() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    // The slow handler spins until a key appears (or its budget ends it): it
    // is still running for as long as the test wants, without timing guesses.
    let slow = "return function(req)\n  while kv.get('release', {consistency='stale'}) == nil do end\n  return 'slow done'\nend";
    let fast = "return function(req) return 'fast' end";
    let release = "return function(req) kv.set('release', true) return 'released' end";
    let (status, body) = admin
        .deploy(
            "mixed",
            &[
                (
                    "picloud.toml",
                    &manifest(
                        "mixed",
                        &[
                            ("GET", "/slow", "slow.lua"),
                            ("GET", "/fast", "fast.lua"),
                            ("POST", "/release", "release.lua"),
                        ],
                    ),
                ),
                ("slow.lua", slow),
                ("fast.lua", fast),
                ("release.lua", release),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let api = admin.with_key(None);
    let slow_api = api.clone();
    let slow_call = tokio::spawn(async move { slow_api.get("/mixed/slow").await });
    for _ in 0..20 {
        assert_eq!(
            api.get("/mixed/fast").await,
            (200, serde_json::Value::String("fast".into()))
        );
    }
    assert!(
        !slow_call.is_finished(),
        "the slow call was still running while fast calls were answered"
    );
    assert_eq!(api.call("POST", "/mixed/release", None).await.0, 200);
    let (status, body) = slow_call.await.expect("slow call");
    assert_eq!(
        (status, body),
        (200, serde_json::Value::String("slow done".into()))
    );
}
