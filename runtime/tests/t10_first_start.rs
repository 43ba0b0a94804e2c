//! The user story, through the real binary: first start, login, deploy,
//! call, read kv, logs, restart keeps everything, SIGTERM shuts down cleanly.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{TestNode, examples_dir, install_crypto};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_deploy_call_kv_logs_and_restart() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;

    // First start: admin key printed once and kept in admin.key with mode 0600.
    let key = node.admin_key();
    assert!(key.starts_with("pck_"), "admin key {key:?}");
    let mode = std::fs::metadata(node.data_dir.join("admin.key"))
        .expect("admin.key metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        node.log().contains(&key),
        "the key is printed on first start"
    );

    // The QUIC peer endpoint is up on --peer, under a cluster CA made at first start.
    let tls = node.data_dir.join("tls");
    let ca_before = std::fs::read(tls.join("ca.pem")).expect("cluster CA");
    let key_mode = std::fs::metadata(tls.join("ca.key"))
        .expect("CA key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", node.peer_port)).is_err(),
        "the node holds its UDP peer port"
    );

    // picloud login saves url + key; later commands need neither flag.
    let credentials = dir.path().join("credentials.toml");
    let login = std::process::Command::new(common::BIN)
        .args(["login", "--url", &node.url(), "--key", &key])
        .env("PICLOUD_CREDENTIALS", &credentials)
        .env_remove("PICLOUD_URL")
        .env_remove("PICLOUD_KEY")
        .output()
        .expect("login");
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let saved = std::fs::read_to_string(&credentials).expect("credentials saved");
    assert!(saved.contains(&node.url()));
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(common::BIN)
            .args(args)
            .env("PICLOUD_CREDENTIALS", &credentials)
            .env_remove("PICLOUD_URL")
            .env_remove("PICLOUD_KEY")
            .output()
            .expect("cli");
        assert!(
            output.status.success(),
            "picloud {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let hello = examples_dir().join("hello");
    let deployed = cli(&["deploy", hello.to_str().expect("utf-8 path")]);
    assert!(deployed.contains("deployed hello version 1"), "{deployed}");

    let http = reqwest::Client::new();
    let greet = http
        .get(format!("{}/hello/greet/pi", node.url()))
        .send()
        .await
        .expect("greet");
    assert_eq!(greet.status(), 200);
    let body: serde_json::Value = greet.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"hello": "pi", "count": 1}));

    assert_eq!(cli(&["kv", "get", "hello", "greetings"]).trim(), "1");

    // cluster status: a one-voter cluster led by node 1, with its addresses.
    let status: serde_json::Value =
        serde_json::from_str(&cli(&["--json", "cluster", "status"])).expect("status JSON");
    assert_eq!(status["leader"], 1, "{status}");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{status}");
    assert_eq!(nodes[0]["id"], 1);
    assert_eq!(nodes[0]["role"], "leader");
    assert_eq!(nodes[0]["http"], format!("127.0.0.1:{}", node.http_port));
    assert_eq!(nodes[0]["peer"], format!("127.0.0.1:{}", node.peer_port));
    assert!(
        nodes[0]["applied_index"].as_u64().is_some_and(|i| i >= 3),
        "{status}"
    );
    assert!(cli(&["cluster", "status"]).contains("single node: no redundancy"));

    // The join token: printed at first start, and alone on stdout from the CLI.
    let token = cli(&["cluster", "token"]).trim().to_string();
    assert!(
        token.starts_with("pct1.") && !token.contains(char::is_whitespace),
        "{token:?}"
    );
    assert!(
        node.log().contains(&token),
        "the token is printed at first start"
    );

    // Logs: the greeting was logged; --follow streams a new line as it happens.
    let logs = cli(&["logs", "hello"]);
    assert!(logs.contains("greeted pi (#1)"), "{logs}");
    let follow = http
        .get(format!(
            "{}/_/api/v1/apps/hello/logs?follow=true&limit=0",
            node.url()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .expect("follow");
    assert_eq!(follow.status(), 200);
    let mut stream = follow.bytes_stream();
    let again = http
        .get(format!("{}/hello/greet/pi", node.url()))
        .send()
        .await
        .expect("greet again");
    assert_eq!(again.status(), 200);
    let mut seen = String::new();
    let followed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            if seen.contains("greeted pi (#2)") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(followed, Ok(true), "followed stream: {seen}");
    drop(stream);

    // The CLI follow prints lines too (run it, make a request, then stop it).
    let mut follower = std::process::Command::new(common::BIN)
        .args(["logs", "hello", "--follow", "--limit", "5"])
        .env("PICLOUD_CREDENTIALS", &credentials)
        .env_remove("PICLOUD_URL")
        .env_remove("PICLOUD_KEY")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs --follow");
    let stdout = follower.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if line.contains("greeted pi (#2)") {
                return true;
            }
        }
        false
    });
    assert!(
        tokio::task::spawn_blocking(move || reader.join().expect("reader thread"))
            .await
            .expect("join")
    );
    let _ = follower.kill();
    let _ = follower.wait();

    // SIGTERM shuts down cleanly; a restart keeps apps, kv and keys.
    assert!(
        node.terminate(),
        "clean exit on SIGTERM; log:\n{}",
        node.log()
    );
    node.start().await;
    assert_eq!(cli(&["kv", "get", "hello", "greetings"]).trim(), "2");
    let body: serde_json::Value = http
        .get(format!("{}/hello/greet/pi", node.url()))
        .send()
        .await
        .expect("greet after restart")
        .json()
        .await
        .expect("json");
    assert_eq!(body["count"], 3);
    let printed = node.log().matches(&key).count();
    assert_eq!(printed, 1, "the admin key is printed only on first start");
    let ca_after = std::fs::read(node.data_dir.join("tls/ca.pem")).expect("cluster CA");
    assert_eq!(ca_before, ca_after, "a restart keeps the cluster CA");
    assert_eq!(
        cli(&["cluster", "token"]).trim(),
        token,
        "a restart keeps the token"
    );
    assert!(node.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picloud_admin_key_env_sets_the_first_key() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    let chosen = "my-own-admin-key-0123456789";
    node.extra_env
        .push(("PICLOUD_ADMIN_KEY".into(), chosen.into()));
    node.start().await;
    assert_eq!(node.admin_key(), chosen);
    let out = node.cli_with_key(chosen, &["apps", "list"]);
    assert!(out.success, "{}", out.stderr);
    let wrong = node.cli_with_key("not-the-key-at-all-xxxx", &["apps", "list"]);
    assert!(!wrong.success);
    assert!(wrong.stderr.contains("unauthorized"), "{}", wrong.stderr);
}
