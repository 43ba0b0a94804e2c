//! A node killed with `kill -9` right after acknowledging 1,000 writes restarts
//! with all 1,000 present.

mod common;

use std::sync::Arc;

use common::{TestNode, install_crypto, manifest};
use serde_json::{Value, json};

const WRITES: usize = 1_000;
const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    let put = "return function(req)\n  kv.set('k/' .. req.params.n, tonumber(req.params.n))\n  return {status=201, json={ok=true}}\nend";
    let (status, body) = admin
        .deploy(
            "dur",
            &[
                (
                    "picloud.toml",
                    &manifest("dur", &[("POST", "/put/:n", "put.lua")]),
                ),
                ("put.lua", put),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // 16 clients write 1,000 distinct keys through the script; every 201 is an ack.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let api = admin.with_key(None);
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= WRITES {
                    return acked;
                }
                let (status, body) = api.call("POST", &format!("/dur/put/{n}"), None).await;
                assert_eq!(status, 201, "write {n}: {body}");
                acked.push(n);
            }
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("writer"));
    }
    assert_eq!(acked.len(), WRITES);

    node.kill();
    node.start().await;

    let admin = node.client();
    let mut found = std::collections::BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/_/api/v1/apps/dur/kv?prefix=k/&limit=300".to_string();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", cursor.replace('/', "%2F")));
        }
        let (status, page) = admin.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().expect("items") {
            found.insert(
                item["key"].as_str().expect("key").to_string(),
                item["value"].clone(),
            );
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    for n in acked {
        assert_eq!(
            found.get(&format!("k/{n}")),
            Some(&json!(n)),
            "acknowledged write {n} lost"
        );
    }
    assert_eq!(found.len(), WRITES);
    // And the node keeps taking writes after recovery.
    let (status, _) = admin
        .with_key(None)
        .call("POST", "/dur/put/5000", None)
        .await;
    assert_eq!(status, 201);
    let (status, value) = admin.get("/_/api/v1/apps/dur/kv/k/5000").await;
    assert_eq!((status, value["value"].clone()), (200, Value::from(5000)));
}
