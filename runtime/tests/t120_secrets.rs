//! Secrets on a real `picloud` process: set through the CLI (value on
//! stdin), read by a script, listed without values; the plaintext is in no
//! file of the data dir (log, state, snapshot) and not in the node's output;
//! a node with the wrong master key says so instead of returning garbage;
//! rotation to a new key; bad input gets stable codes.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::cluster::eventually;
use common::data_dir::{files_containing, key_id, key_text, snapshot_files};
use common::{Api, CliOutput, TestNode, install_crypto, manifest};
use serde_json::Value;

const PLAINTEXT: &str = "sk_live_PLAINTEXT_7f3a9c_do_not_leak";
/// Written as a kv value: the positive control that the grep finds what is
/// stored in the clear.
const KV_MARKER: &str = "kv_marker_in_the_clear_51d0";

const GET: &str = "return function(req)\n  local value = secrets.get(req.params.name)\n  if value == nil then return {status=404, json={missing=true}} end\n  return {json={value=value}}\nend";

/// Runs the CLI against `node` as its admin with `stdin` piped in.
fn cli_stdin(node: &TestNode, args: &[&str], stdin: &[u8]) -> CliOutput {
    node.cli_with_key_stdin(&node.admin_key(), args, stdin)
}

async fn get_secret(node: &TestNode, name: &str) -> (u16, Value) {
    let api = node.client().with_key(None);
    api.get(&format!("/vault/get/{name}")).await
}

/// Deploys app `vault`: `GET /vault/get/:name` returns `secrets.get(name)`.
async fn deploy_vault(admin: &Api) {
    let (status, body) = admin
        .deploy(
            "vault",
            &[
                (
                    "picloud.toml",
                    &manifest("vault", &[("GET", "/get/:name", "get.lua")]),
                ),
                ("get.lua", GET),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Restarts `node` with these secrets environment variables.
async fn restart_with(node: &mut TestNode, env: &[(&str, String)]) {
    assert!(node.terminate(), "clean stop; log:\n{}", node.log());
    node.extra_env
        .retain(|(name, _)| !name.starts_with("PICLOUD_SECRET_KEY"));
    for (name, value) in env {
        node.extra_env.push((name.to_string(), value.clone()));
    }
    node.start().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_sealed_refuse_a_wrong_key_and_survive_rotation() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_env = vec![
        ("PICLOUD_SECRET_KEY".into(), key_text(0xA1)),
        // Debug logging: the plaintext must not be in even the most verbose output.
        ("PICLOUD_LOG".into(), "debug,sled=warn".into()),
        ("PICLOUD_SNAPSHOT_LOGS_SINCE_LAST".into(), "100".into()),
    ];
    node.start().await;
    let admin = node.client();
    deploy_vault(&admin).await;

    // Set through the CLI, the value on stdin (the trailing newline dropped).
    let out = cli_stdin(
        &node,
        &["secrets", "set", "vault", "STRIPE_KEY"],
        format!("{PLAINTEXT}\n").as_bytes(),
    );
    assert!(out.success, "{out:?}");
    assert!(!out.stdout.contains(PLAINTEXT) && !out.stderr.contains(PLAINTEXT));
    let (status, body) = get_secret(&node, "STRIPE_KEY").await;
    assert_eq!((status, body["value"].as_str()), (200, Some(PLAINTEXT)));
    let (status, body) = get_secret(&node, "NOT_SET").await;
    assert_eq!((status, &body["missing"]), (404, &Value::Bool(true)));

    // The list shows names and times only.
    let listed = node.cli(&["secrets", "list", "vault"]).ok();
    assert!(listed.starts_with("STRIPE_KEY\t20"), "{listed}");
    assert!(!listed.contains(PLAINTEXT));
    let listed: Value =
        serde_json::from_str(&node.cli(&["--json", "secrets", "list", "vault"]).ok())
            .expect("json");
    let items = listed["secrets"].as_array().expect("secrets");
    assert_eq!(items.len(), 1);
    let fields: Vec<&String> = items[0].as_object().expect("object").keys().collect();
    assert_eq!(fields, ["name", "updated_ms"]);

    // Enough entries for a snapshot (and one kv value stored in the clear).
    let (status, _) = admin
        .call(
            "PUT",
            "/_/api/v1/apps/vault/kv/marker",
            Some(format!("\"{KV_MARKER}\"").into_bytes()),
        )
        .await;
    assert_eq!(status, 200);
    for i in 0..150 {
        let (status, body) = admin
            .call(
                "PUT",
                &format!("/_/api/v1/apps/vault/kv/k{i}"),
                Some(b"1".to_vec()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    eventually("a snapshot file", || async { snapshot_files(&node) > 0 }).await;
    assert!(
        !files_containing(&node.data_dir, KV_MARKER.as_bytes(), &[]).is_empty(),
        "the grep finds a value stored in the clear"
    );
    assert!(
        !files_containing(&node.data_dir.join("raft/snapshots"), b"STRIPE_KEY", &[]).is_empty(),
        "the snapshot holds the (sealed) secret"
    );
    assert_eq!(
        files_containing(&node.data_dir, PLAINTEXT.as_bytes(), &[]),
        Vec::<String>::new(),
        "no file of the data dir holds the plaintext"
    );
    assert!(
        !node.log().contains(PLAINTEXT),
        "the node's output never shows it"
    );

    // A restart with another master key: a clear error, never garbage.
    restart_with(&mut node, &[("PICLOUD_SECRET_KEY", key_text(0xB2))]).await;
    let (status, body) = get_secret(&node, "STRIPE_KEY").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "secret_key_mismatch", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(&key_id(0xA1)) && message.contains(&key_id(0xB2)),
        "names the key it needs and the one it has: {message}"
    );
    assert!(!body.to_string().contains(PLAINTEXT));
    assert!(
        node.log().contains("cannot open 1 stored secret(s)"),
        "the start warns about the wrong key"
    );
    // It refuses to seal new values the cluster could not open.
    let out = cli_stdin(&node, &["secrets", "set", "vault", "OTHER"], b"x");
    assert!(
        !out.success && out.stderr.contains("secret_key_mismatch"),
        "{out:?}"
    );
    // And rotation cannot re-encrypt what it cannot open.
    let out = node.cli(&["secrets", "rotate-key"]);
    assert!(
        !out.success && out.stderr.contains("secret_key_mismatch"),
        "{out:?}"
    );

    // Rotation: the new key current, the old one previous.
    restart_with(
        &mut node,
        &[
            ("PICLOUD_SECRET_KEY", key_text(0xB2)),
            ("PICLOUD_SECRET_KEY_PREVIOUS", key_text(0xA1)),
        ],
    )
    .await;
    let (status, body) = get_secret(&node, "STRIPE_KEY").await;
    assert_eq!((status, body["value"].as_str()), (200, Some(PLAINTEXT)));
    let rotated = node.cli(&["secrets", "rotate-key"]).ok();
    assert!(
        rotated.contains(&format!(
            "re-encrypted 1 secret(s) under key {}; 0 already current",
            key_id(0xB2)
        )),
        "{rotated}"
    );
    let again = node.cli(&["secrets", "rotate-key"]).ok();
    assert!(
        again.contains("re-encrypted 0 secret(s)") && again.contains("1 already current"),
        "{again}"
    );
    // The old key dropped: still readable.
    restart_with(&mut node, &[("PICLOUD_SECRET_KEY", key_text(0xB2))]).await;
    let (status, body) = get_secret(&node, "STRIPE_KEY").await;
    assert_eq!((status, body["value"].as_str()), (200, Some(PLAINTEXT)));

    // Delete, then the script sees nil; deleting again is an error.
    node.cli(&["secrets", "delete", "vault", "STRIPE_KEY"]).ok();
    let (status, _) = get_secret(&node, "STRIPE_KEY").await;
    assert_eq!(status, 404);
    let out = node.cli(&["secrets", "delete", "vault", "STRIPE_KEY"]);
    assert!(
        !out.success && out.stderr.contains("secret_not_found"),
        "{out:?}"
    );

    assert_eq!(
        files_containing(&node.data_dir, PLAINTEXT.as_bytes(), &[]),
        Vec::<String>::new()
    );
    assert!(!node.log().contains(PLAINTEXT));
    assert!(node.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secret_input_gets_stable_codes() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = vec!["--dev".into()];
    node.start().await;
    // --dev is loud: at start and in the cluster status.
    assert!(node.log().contains("WARNING: --dev"), "{}", node.log());
    let (status, body) = node.client().get("/_/api/v1/cluster/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["secrets"]["source"], "dev", "{body}");
    assert!(body["secrets"]["warning"].is_string());

    let admin = node.client();
    deploy_vault(&admin).await;

    let too_large = vec![b'x'; 64 * 1024 + 1];
    let cases: &[(&[&str], &[u8], &str)] = &[
        (
            &["secrets", "set", "vault", "bad name"],
            b"v",
            "invalid_secret_name",
        ),
        (
            &["secrets", "set", "vault", "a/b"],
            b"v",
            "invalid_secret_name",
        ),
        (
            &["secrets", "set", "vault", "9LIVES"],
            b"v",
            "invalid_secret_name",
        ),
        (
            &["secrets", "set", "vault", "BIG"],
            &too_large,
            "secret_too_large",
        ),
        (&["secrets", "set", "vault", "EMPTY"], b"\n", "empty_secret"),
        (&["secrets", "set", "nope", "TOKEN"], b"v", "app_not_found"),
        (
            &["secrets", "delete", "vault", "MISSING"],
            b"",
            "secret_not_found",
        ),
        (
            &["secrets", "delete", "nope", "TOKEN"],
            b"",
            "app_not_found",
        ),
        (&["secrets", "list", "nope"], b"", "app_not_found"),
    ];
    for (args, stdin, code) in cases {
        let out = cli_stdin(&node, args, stdin);
        assert!(
            !out.success && out.stderr.contains(code),
            "{args:?}: expected {code}, got {out:?}"
        );
    }
    // The API refuses a too-large body with the same code (the CLI checks first).
    let (status, body) = admin
        .call(
            "PUT",
            "/_/api/v1/apps/vault/secrets/BIG",
            Some(too_large.clone()),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &Value::from("secret_too_large"))
    );
    // Secrets are admin-only.
    let (_, created) = admin
        .post_json(
            "/_/api/v1/keys",
            &serde_json::json!({"scope": "deploy:vault"}),
        )
        .await;
    let deployer = admin.with_key(created["key"].as_str());
    let (status, _) = deployer
        .call(
            "PUT",
            "/_/api/v1/apps/vault/secrets/TOKEN",
            Some(b"v".to_vec()),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = deployer.get("/_/api/v1/apps/vault/secrets").await;
    assert_eq!(status, 403);
    // A script asking for a bad name gets the same code.
    let (status, body) = node
        .client()
        .with_key(None)
        .get("/vault/get/bad!name")
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (500, &Value::from("invalid_secret_name"))
    );
    // Nothing was stored by any of it.
    let listed: Value =
        serde_json::from_str(&node.cli(&["--json", "secrets", "list", "vault"]).ok())
            .expect("json");
    assert_eq!(listed["secrets"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_master_key_stops_the_start_with_a_clear_message() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    let short = STANDARD.encode([7u8; 16]);
    node.extra_env = vec![("PICLOUD_SECRET_KEY".into(), short.clone())];
    node.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let child = node.child.as_mut().expect("child");
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "picloud kept running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    node.child = None;
    assert!(!status.success());
    let log = node.log();
    assert!(
        log.contains(
            "PICLOUD_SECRET_KEY decodes to 16 bytes; a secrets master key is exactly 32 bytes"
        ),
        "{log}"
    );
    assert!(!log.contains(&short), "the key text is never echoed");
}

/// A secret set through one node of a 3-node cluster (all with the same
/// key) reads through another; its plaintext is in no node's data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_set_through_one_node_reads_through_another() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    for node in &mut nodes {
        node.extra_env = vec![("PICLOUD_SECRET_KEY".into(), key_text(0xC3))];
    }
    common::cluster::start_three(&mut nodes).await;
    deploy_vault(&nodes[0].client()).await;
    let out = cli_stdin(
        &nodes[0],
        &["secrets", "set", "vault", "SHARED"],
        PLAINTEXT.as_bytes(),
    );
    assert!(out.success, "{out:?}");
    let reader = Api {
        http: reqwest::Client::new(),
        base: nodes[2].url(),
        key: None,
    };
    eventually("the secret read through node 3", || {
        let reader = reader.clone();
        async move {
            let (status, body) = reader.get("/vault/get/SHARED").await;
            status == 200 && body["value"].as_str() == Some(PLAINTEXT)
        }
    })
    .await;
    for node in &nodes {
        assert_eq!(
            files_containing(&node.data_dir, PLAINTEXT.as_bytes(), &[]),
            Vec::<String>::new()
        );
        assert!(!node.log().contains(PLAINTEXT));
    }
}

/// Opens `/_/realtime/live/news` with `token`; the status (the head only:
/// the stream itself is dropped), and the error body when it is not 200.
async fn stream_status(node: &TestNode, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{}/_/realtime/live/news", node.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("subscribe");
    let status = response.status().as_u16();
    if status == 200 {
        return (status, String::new());
    }
    (status, response.text().await.unwrap_or_default())
}

/// Realtime signing keys are sealed like secrets, so master key rotation
/// re-seals them too: a token signed before the rotation still opens a
/// stream after the old master key is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_reseals_realtime_signing_keys() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_env = vec![("PICLOUD_SECRET_KEY".into(), key_text(0xA1))];
    node.start().await;
    let admin = node.client();
    let toml = format!(
        "{}\n[[topic]]\nname = \"news\"\nauth = \"token\"\n",
        manifest("live", &[("GET", "/token", "token.lua")])
    );
    let (status, body) = admin
        .deploy(
            "live",
            &[
                ("picloud.toml", &toml),
                (
                    "token.lua",
                    "return function() return { json = { token = realtime.token('news') } } end",
                ),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.with_key(None).get("/live/token").await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    assert_eq!(stream_status(&node, &token).await, (200, String::new()));

    // The new master key current, the old one previous: the key still opens.
    restart_with(
        &mut node,
        &[
            ("PICLOUD_SECRET_KEY", key_text(0xB2)),
            ("PICLOUD_SECRET_KEY_PREVIOUS", key_text(0xA1)),
        ],
    )
    .await;
    assert_eq!(stream_status(&node, &token).await, (200, String::new()));
    let rotated = node.cli(&["secrets", "rotate-key"]).ok();
    assert!(
        rotated.contains("re-encrypted 1 realtime signing key(s); 0 already current"),
        "{rotated}"
    );
    let again = node.cli(&["secrets", "rotate-key"]).ok();
    assert!(
        again.contains("re-encrypted 0 realtime signing key(s); 1 already current"),
        "{again}"
    );

    // The old master key dropped: the same signing key, so the token signed
    // before the rotation still works.
    restart_with(&mut node, &[("PICLOUD_SECRET_KEY", key_text(0xB2))]).await;
    assert_eq!(stream_status(&node, &token).await, (200, String::new()));
    assert!(node.terminate());
}
