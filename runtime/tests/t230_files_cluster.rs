//! Issue 14: files on a 3-node cluster. 50 MiB of random bytes uploaded
//! through node 1 download with the same SHA-256 through nodes 2 and 3
//! after node 1 is killed with SIGKILL; Range requests (the first byte,
//! across the 1 MiB block edge, the last 100 bytes, from an offset to the
//! end) return exactly those bytes, past the end is 416; HEAD and
//! If-None-Match answer as HTTP caches expect. Then the dead node is
//! removed and a fresh one joins: repair brings every block back onto all
//! three members' disks (`files_repair_pending` 0), and with another node
//! killed the file still downloads intact.

mod common;

use std::collections::BTreeSet;

use common::cluster::{api, eventually, node_id, start_three};
use common::files::{
    MIB, blocks_in, file_url, put_file, random_bytes, repair_pending, sha256_hex,
    sha256_of_download,
};
use common::{Api, TestNode, install_crypto};
use serde_json::Value;

const APP: &str = "media";
const PATH: &str = "video/big.bin";
const SIZE: usize = 50 * MIB as usize;

const MANIFEST: &str =
    "name = \"media\"\n[[route]]\nmethod = \"GET\"\npath = \"/ping\"\nscript = \"ping.lua\"\n";
const PING: &str = "return function(req)\n  return {status=200, json={ok=true}}\nend";

/// A GET of the file through `node` with `headers`: status, headers, body.
async fn get(
    api: &Api,
    node: &TestNode,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = api
        .http
        .get(file_url(node, APP, PATH))
        .bearer_auth(api.key.as_deref().unwrap_or_default());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.bytes().await.expect("body").to_vec(),
    )
}

/// Voters (leader or follower) in `cluster status` through `api`.
async fn voters(api: &Api) -> usize {
    let (status, body) = api.get("/_/api/v1/cluster/status").await;
    if status != 200 {
        return 0;
    }
    body["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter(|n| n["role"] == "leader" || n["role"] == "follower")
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_survives_a_dead_node_and_repair_restores_three_replicas() {
    install_crypto();
    let dirs: Vec<tempfile::TempDir> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    // Repair passes often, so the test waits seconds, not the default 10 s
    // (by env: `start_three` sets the join flags itself).
    for node in &mut nodes {
        node.extra_env
            .push(("PICLOUD_FILES_REPAIR_INTERVAL_MS".into(), "500".into()));
    }
    let (key, token) = start_three(&mut nodes[..3]).await;
    let first = api(&nodes[0], &key);
    let (status, body) = first
        .deploy(APP, &[("picloud.toml", MANIFEST), ("ping.lua", PING)])
        .await;
    assert_eq!(status, 200, "{body}");

    let payload = random_bytes(SIZE, 230);
    let expected = sha256_hex(&payload);
    let (status, stored) = put_file(&first, APP, PATH, payload.clone()).await;
    assert_eq!(status, 200, "upload: {stored}");
    assert_eq!(stored["size"], SIZE as u64);
    let etag = stored["etag"].as_str().expect("etag").to_string();

    nodes[0].kill();
    let second = api(&nodes[1], &key);
    let third = api(&nodes[2], &key);
    for (api, node) in [(&second, &nodes[1]), (&third, &nodes[2])] {
        let url = file_url(node, APP, PATH);
        // The first read may meet an election (node 1 may have led).
        eventually("the file downloads after node 1 died", || {
            let (api, url, expected) = (api.clone(), url.clone(), expected.clone());
            async move {
                let (status, _, sha, length) = sha256_of_download(&api, &url, &[]).await;
                if status != 200 {
                    return false;
                }
                assert_eq!((sha.as_str(), length), (expected.as_str(), SIZE as u64));
                true
            }
        })
        .await;
    }

    // Ranges through node 2: exact bytes and headers.
    let size = SIZE as u64;
    let edge = MIB as usize;
    for (range, start, end) in [
        ("bytes=0-0", 0, 1),
        ("bytes=1048575-1048576", edge - 1, edge + 1),
        ("bytes=-100", SIZE - 100, SIZE),
        ("bytes=52428700-", 52_428_700, SIZE),
    ] {
        let (status, headers, bytes) = get(&second, &nodes[1], &[("range", range)]).await;
        assert_eq!(status, 206, "{range}");
        assert_eq!(bytes, payload[start..end], "{range}");
        assert_eq!(
            headers["content-range"],
            format!("bytes {start}-{}/{size}", end - 1).as_str(),
            "{range}"
        );
    }
    let (status, headers, bytes) = get(&second, &nodes[1], &[("range", "bytes=52428800-")]).await;
    assert_eq!(status, 416);
    assert_eq!(headers["content-range"], format!("bytes */{size}").as_str());
    let error: Value = serde_json::from_slice(&bytes).expect("error JSON");
    assert_eq!(error["error"]["code"], "range_not_satisfiable");

    // HEAD: the headers of the whole file, no body.
    let response = second
        .http
        .head(file_url(&nodes[1], APP, PATH))
        .bearer_auth(&key)
        .send()
        .await
        .expect("HEAD");
    assert_eq!(response.status().as_u16(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-length"], size.to_string().as_str());
    assert_eq!(headers["etag"], etag.as_str());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert!(headers.contains_key("last-modified"));
    assert!(headers.contains_key("content-type"));
    // A cache holding this version gets 304 and no body.
    let (status, headers, bytes) = get(&third, &nodes[2], &[("if-none-match", &etag)]).await;
    assert_eq!((status, bytes.len()), (304, 0));
    assert_eq!(headers["etag"], etag.as_str());

    // Replace the dead node: remove it, join a fresh one.
    let dead = node_id(&second, &nodes[0].peer_addr()).await;
    nodes[1]
        .cli_with_key(&key, &["cluster", "remove", &dead.to_string()])
        .ok();
    let join = nodes[1].peer_addr();
    nodes[3].extra_args.extend([
        "--join".to_string(),
        join,
        "--join-token".to_string(),
        token.clone(),
    ]);
    nodes[3].start().await;
    eventually("three voters again", || {
        let second = second.clone();
        async move { voters(&second).await == 3 }
    })
    .await;
    let file_blocks: BTreeSet<String> = blocks_in(&nodes[1])
        .union(&blocks_in(&nodes[2]))
        .cloned()
        .collect();
    assert_eq!(file_blocks.len(), SIZE / MIB as usize, "50 distinct blocks");
    eventually("every block on all three members, repair done", || {
        let (second, file_blocks) = (second.clone(), file_blocks.clone());
        let dirs: Vec<BTreeSet<String>> = nodes[1..].iter().map(blocks_in).collect();
        async move {
            dirs.iter().all(|dir| file_blocks.is_subset(dir))
                && repair_pending(&second).await == Some(0)
        }
    })
    .await;

    // Any one node may now die: the file is whole on the others.
    nodes[1].kill();
    let fourth = api(&nodes[3], &key);
    let url = file_url(&nodes[3], APP, PATH);
    eventually("the file downloads after node 2 died", || {
        let (fourth, url, expected) = (fourth.clone(), url.clone(), expected.clone());
        async move {
            let (status, _, sha, _) = sha256_of_download(&fourth, &url, &[]).await;
            if status != 200 {
                return false;
            }
            assert_eq!(sha, expected);
            true
        }
    })
    .await;
}
