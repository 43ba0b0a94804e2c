//! The cluster's own secrets (the CA private key and the join secret) enter
//! the Raft log sealed under the secrets master key: after a snapshot, no
//! file of either member's data dir outside `tls/` (the node's own key
//! files) holds the CA key's PEM body or the join secret, and a 2-node join
//! still works (the joiner opens the replicated secret and prints the same
//! token). A member restarted with another master key says so at start,
//! naming both key ids (a joiner with another key is refused at join:
//! `t170_join_key`).

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::cluster::{api, eventually};
use common::data_dir::{files_containing, key_id, key_text, snapshot_files};
use common::{TestNode, install_crypto, manifest};
use picloud_cluster::transport::JoinToken;

const PUT: &str = "return function(req)\n  kv.set(req.params.key, 1)\n  return {status = 201, json = {ok = true}}\nend";

/// The lines of base64 inside a PEM file (its body, without the armour).
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_secrets_are_sealed_in_the_log_and_a_wrong_key_is_named() {
    install_crypto();
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    for node in &mut nodes {
        node.extra_env = vec![
            ("PICLOUD_SECRET_KEY".into(), key_text(0xD1)),
            ("PICLOUD_SNAPSHOT_LOGS_SINCE_LAST".into(), "100".into()),
        ];
    }
    nodes[0].start().await;
    let admin_key = nodes[0].admin_key();
    let token = nodes[0].cli(&["cluster", "token"]).ok().trim().to_string();
    let secret = JoinToken::parse(&token).expect("token").secret;
    let secret_text = URL_SAFE_NO_PAD.encode(secret);

    // A 2-node join with the same master key works, and the joiner opens
    // the sealed join secret it received through the log.
    let join_args = vec![
        "--join".into(),
        nodes[0].peer_addr(),
        "--join-token".into(),
        token.clone(),
    ];
    nodes[1].extra_args = join_args.clone();
    nodes[1].start().await;
    let joiner = api(&nodes[1], &admin_key);
    eventually("the joiner prints the cluster's token", || {
        let out = nodes[1].cli_with_key(&admin_key, &["cluster", "token"]);
        let printed = out.success && out.stdout.trim() == token;
        async move { printed }
    })
    .await;
    let (status, body) = joiner.get("/_/api/v1/cluster/status").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nodes"].as_array().map(Vec::len), Some(2), "{body}");

    // Enough entries for a snapshot on both members.
    let first = api(&nodes[0], &admin_key);
    let (status, body) = first
        .deploy(
            "fill",
            &[
                (
                    "picloud.toml",
                    &manifest("fill", &[("POST", "/put/:key", "put.lua")]),
                ),
                ("put.lua", PUT),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for i in 0..150 {
        let (status, body) = first
            .with_key(None)
            .call("POST", &format!("/fill/put/k{i}"), None)
            .await;
        assert_eq!(status, 201, "{body}");
    }
    for node in &nodes[..2] {
        eventually("a snapshot file", || async { snapshot_files(node) > 0 }).await;
    }

    let ca_key = std::fs::read_to_string(nodes[0].data_dir.join("tls/ca.key")).expect("ca.key");
    let body_lines = pem_body_lines(&ca_key);
    assert!(!body_lines.is_empty(), "{ca_key}");
    for node in &nodes[..2] {
        // The positive control: the grep finds the key in the node's own key file.
        assert!(
            !files_containing(&node.data_dir, body_lines[0].as_bytes(), &[]).is_empty(),
            "the grep finds the CA key in tls/ca.key"
        );
        for needle in body_lines
            .iter()
            .map(|line| line.as_bytes())
            .chain([&secret[..], secret_text.as_bytes()])
        {
            assert_eq!(
                files_containing(&node.data_dir, needle, &["tls"]),
                Vec::<String>::new(),
                "a cluster secret in the clear outside tls/"
            );
        }
    }

    let mismatch_named = |log: &str| {
        log.contains("secret_key_mismatch")
            && log.contains(&key_id(0xD1))
            && log.contains(&key_id(0xE2))
    };

    // A member restarted with another key says so at start.
    assert!(nodes[1].terminate(), "clean stop; log:\n{}", nodes[1].log());
    assert!(!mismatch_named(&nodes[1].log()));
    nodes[1]
        .extra_env
        .retain(|(name, _)| name != "PICLOUD_SECRET_KEY");
    nodes[1]
        .extra_env
        .push(("PICLOUD_SECRET_KEY".into(), key_text(0xE2)));
    nodes[1].start().await;
    eventually("the wrong key named at restart", || {
        let log = nodes[1].log();
        async move { mismatch_named(&log) }
    })
    .await;
    // It cannot print the token, and says why, naming both keys; cluster
    // status flags the mismatch.
    let out = nodes[1].cli_with_key(&admin_key, &["cluster", "token"]);
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr.contains(&key_id(0xD1)) && out.stderr.contains(&key_id(0xE2)),
        "{out:?}"
    );
    eventually("cluster status flags the mismatch", || {
        let out = nodes[0].cli_with_key(&admin_key, &["cluster", "status"]);
        async move {
            out.success
                && out
                    .stdout
                    .contains("WARNING: the nodes hold different secrets master keys")
        }
    })
    .await;
    for node in &mut nodes {
        node.kill();
    }
}
