//! Issue 10, the operator's side: text a script wrote reaches the operator's
//! terminal escaped (no escape sequence, no forged log line), and API keys
//! are bound to their app (deleting an app revokes its keys; only an admin
//! creates apps).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, TestNode, install_crypto, manifest};
use serde_json::{Value, json};

/// A clipboard write (OSC 52, ended by BEL), a colour change (CSI), an
/// 8-bit CSI (a C1 control, UTF-8 encoded), DEL, and a newline followed by
/// what looks like a second log line.
const HOSTILE_LUA: &str = r#""osc\27]52;c;cHduZWQ=\7 csi\27[31m c1\u{9B}2J del\127 nl\n2026-12-07 00:00:00Z ERROR forged""#;

/// How the CLI shows the start of the hostile text.
const HOSTILE_SHOWN: &str = "osc\\x1b]52;c;cHduZWQ=\\x07 csi\\x1b[31m c1\\u{9b}2J del\\x7f nl\\n";

const ESC_MANIFEST_TRIGGERS: &str = r#"
[[trigger]]
kind = "kv"
match = "boom/*"
script = "boom.lua"
attempts = 1
backoff_ms = 10
"#;

/// Fails unless `output` is free of terminal controls: no C0 control but
/// the CLI's own newlines and column tabs, no DEL, no C1 control.
fn assert_terminal_safe(what: &str, output: &str) {
    let bad: Vec<char> = output
        .chars()
        .filter(|&c| {
            (c.is_ascii_control() && c != '\n' && c != '\t') || ('\u{80}'..='\u{9f}').contains(&c)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what} printed raw controls {bad:?}:\n{output}"
    );
    // The forged "log line" stays inside the line that carries it.
    for line in output.lines() {
        assert!(
            !line.starts_with("2026-12-07 00:00:00Z"),
            "{what} printed a forged line: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_output_escapes_what_scripts_wrote() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    let app_manifest = manifest("esc", &[("POST", "/write", "write.lua")]) + ESC_MANIFEST_TRIGGERS;
    let write = format!(
        "local hostile = {HOSTILE_LUA}\nreturn function(req)\n  log.info(hostile)\n  kv.set('hostile', hostile)\n  kv.set('boom/1', 1)\n  return {{json={{ok=true}}}}\nend"
    );
    let boom =
        format!("local hostile = {HOSTILE_LUA}\nreturn function(event)\n  error(hostile)\nend");
    let (status, body) = admin
        .deploy(
            "esc",
            &[
                ("picloud.toml", &app_manifest),
                ("write.lua", &write),
                ("boom.lua", &boom),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin
        .with_key(None)
        .post_json("/esc/write", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");

    // The run fails once and is dead-lettered with the script's error text.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, page) = admin.get("/_/api/v1/apps/esc/dead-letters").await;
        if page["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Text is shown journalctl-style; kv values are printed as JSON (as the
    // CLI always has), whose escapes are just as inert; `--json` stays JSON.
    let as_json = "osc\\u001b]52;c;cHduZWQ=\\u0007 csi\\u001b[31m c1\\u009b2J del\\u007f nl\\n";
    let cases: [(&str, &[&str], &str); 8] = [
        ("logs", &["logs", "esc"], HOSTILE_SHOWN),
        ("logs --json", &["--json", "logs", "esc"], as_json),
        ("kv get", &["kv", "get", "esc", "hostile"], as_json),
        (
            "kv get --json",
            &["--json", "kv", "get", "esc", "hostile"],
            as_json,
        ),
        ("kv list", &["kv", "list", "esc"], as_json),
        (
            "dead-letters list",
            &["dead-letters", "list", "esc"],
            HOSTILE_SHOWN,
        ),
        (
            "dead-letters list --json",
            &["--json", "dead-letters", "list", "esc"],
            as_json,
        ),
        ("keys list", &["keys", "list"], ""),
    ];
    for (what, args, shown) in cases {
        let output = node.cli(args).ok();
        assert_terminal_safe(what, &output);
        assert!(output.contains(shown), "{what}:\n{output}");
        if what.contains("--json") {
            let value: Value = serde_json::from_str(&output).expect("--json output is JSON");
            assert!(
                value.to_string().contains("\\u001b]52;c;"),
                "{what}: {value}"
            );
        }
    }
    // The dead letter's error is shown escaped on its own row.
    let listed = node.cli(&["dead-letters", "list", "esc"]).ok();
    assert_eq!(listed.lines().count(), 1, "{listed}");

    // `logs --follow` escapes lines as they arrive.
    let mut follow = Command::new(BIN)
        .args(["logs", "esc", "--follow"])
        .env("PICLOUD_URL", node.url())
        .env("PICLOUD_KEY", node.admin_key())
        .env("PICLOUD_CREDENTIALS", dir.path().join("none.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn logs --follow");
    let stdout = follow.stdout.take().expect("stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains("forged") {
        // The stream may not be open yet: write again until a line arrives.
        let (status, _) = admin
            .with_key(None)
            .post_json("/esc/write", &json!({}))
            .await;
        assert_eq!(status, 200);
        if let Ok(line) = received.recv_timeout(Duration::from_millis(500)) {
            seen.push_str(&line);
            seen.push('\n');
        }
        assert!(Instant::now() < deadline, "--follow printed nothing");
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_terminal_safe("logs --follow", &seen);
    assert!(seen.contains(HOSTILE_SHOWN), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_die_with_their_app_and_only_admins_create_apps() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    let files = |app: &str| {
        (
            manifest(app, &[("GET", "/hi", "hi.lua")]),
            "return function() return {json={hi=true}} end".to_string(),
        )
    };
    let deploy_as = |key: String, app: &'static str| {
        let api = admin.with_key(Some(&key));
        let (manifest, script) = files(app);
        async move {
            api.deploy(app, &[("picloud.toml", &manifest), ("hi.lua", &script)])
                .await
        }
    };
    let create_key = |scope: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .post_json("/_/api/v1/keys", &json!({"scope": scope, "name": "ci"}))
                .await
        }
    };

    // A scoped key needs an existing app: no key can wait for a name.
    let (status, body) = create_key("deploy:ghost").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("app_not_found")),
        "{body}"
    );

    let (status, _) = admin
        .post_json("/_/api/v1/apps", &json!({"name": "shop"}))
        .await;
    assert_eq!(status, 201);
    let (status, created) = create_key("deploy:shop").await;
    assert_eq!(status, 201, "{created}");
    let shop_key = created["key"].as_str().expect("key").to_string();
    let shop_key_id = created["id"].as_str().expect("id").to_string();
    let (status, body) = deploy_as(shop_key.clone(), "shop").await;
    assert_eq!(status, 200, "the key deploys its own app: {body}");

    // Only an admin creates apps: the shop key cannot create `ghost` by
    // deploying to it, and nothing named ghost appears.
    let (status, body) = deploy_as(shop_key.clone(), "ghost").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden")),
        "{body}"
    );
    let (status, _) = admin.get("/_/api/v1/apps/ghost").await;
    assert_eq!(status, 404);

    // Deleting shop revokes its key in the same step...
    let (status, body) = admin.call("DELETE", "/_/api/v1/apps/shop", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keys_revoked"], 1, "{body}");
    let listed = node.cli(&["keys", "list"]).ok();
    assert!(!listed.contains(&shop_key_id), "{listed}");
    // ...so when someone re-creates the name, the old key does not reach it.
    let (status, _) = admin
        .post_json("/_/api/v1/apps", &json!({"name": "shop"}))
        .await;
    assert_eq!(status, 201);
    let (status, body) = deploy_as(shop_key.clone(), "shop").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized")),
        "{body}"
    );
    let (status, deploys) = admin.get("/_/api/v1/apps/shop/deploys").await;
    assert_eq!(status, 200);
    assert_eq!(deploys["deploys"], json!([]), "{deploys}");

    // The CLI says what a delete revoked.
    let (status, _) = create_key("read:shop").await;
    assert_eq!(status, 201);
    let deleted = node.cli(&["apps", "delete", "shop"]).ok();
    assert!(deleted.contains("revoked its 1 key(s)"), "{deleted}");

    // An admin key still creates an app by deploying to a new name.
    let (status, body) = deploy_as(node.admin_key(), "fresh").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = admin.get("/_/api/v1/apps/fresh").await;
    assert_eq!(status, 200);
}
