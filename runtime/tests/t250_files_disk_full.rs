//! Issue 14: files fill the data disk. On a small tmpfs, uploads succeed
//! until one is refused with 507 `disk_full`; no upload temp file (`*.part`)
//! is left behind and every block file still holds exactly the bytes its
//! name hashes; a file stored before downloads intact; small kv writes and
//! reads and deleting a file still work. Needs root (`mount -t tmpfs`);
//! skips with a reason otherwise.

mod common;

use common::files::{
    MIB, blocks_in, file_url, part_files, put_file, random_bytes, sha256_hex, sha256_of_download,
};
use common::tmpfs::mount_or_skip;
use common::{TestNode, install_crypto, manifest};
use serde_json::{Value, json};

/// The tmpfs the data dir lives on.
const DISK_BYTES: u64 = 96 * MIB;
/// The node's free-space reserve.
const RESERVE_BYTES: u64 = 16 * MIB;
/// Each upload.
const FILE_BYTES: usize = 4 * MIB as usize;
/// More uploads than the disk can hold.
const UPLOADS_MAX: u64 = DISK_BYTES / FILE_BYTES as u64 + 2;

const SET: &str = "return function(req)\n  kv.set(req.params.k, 1)\n  return {json={ok=true}}\nend";
const GET: &str = "return function(req)\n  return {json={value=kv.get(req.params.k)}}\nend";

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_uploads_cleanly_and_keeps_serving() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(disk) = mount_or_skip(&dir.path().join("disk"), DISK_BYTES, "t250 files disk full")
    else {
        return;
    };
    let mut node = TestNode::new(dir.path());
    node.data_dir = disk.dir.join("data");
    node.extra_args = vec!["--disk-reserve-bytes".into(), RESERVE_BYTES.to_string()];
    node.start().await;
    let admin = node.client();
    let public = admin.with_key(None);
    let manifest_text = manifest(
        "full",
        &[
            ("POST", "/set/:k", "set.lua"),
            ("GET", "/get/:k", "get.lua"),
        ],
    );
    let (status, body) = admin
        .deploy(
            "full",
            &[
                ("picloud.toml", &manifest_text),
                ("set.lua", SET),
                ("get.lua", GET),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let first = random_bytes(FILE_BYTES, 0);
    let (status, body) = put_file(&admin, "full", "first.bin", first.clone()).await;
    assert_eq!(status, 200, "{body}");

    let mut refused = None;
    for seed in 1..=UPLOADS_MAX {
        let (status, body) = put_file(
            &admin,
            "full",
            &format!("fill/{seed}.bin"),
            random_bytes(FILE_BYTES, seed),
        )
        .await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the disk filled up");
    assert_eq!((status, code(&body)), (507, "disk_full"), "{body}");

    // Clean: no temp file, no truncated or corrupt block.
    let parts = part_files(&node.data_dir);
    assert!(parts.is_empty(), "{parts:?}");
    let blocks = blocks_in(&node);
    assert!(!blocks.is_empty());
    for name in &blocks {
        let path = node.data_dir.join("blocks").join(&name[..2]).join(name);
        let bytes = std::fs::read(&path).expect("block file");
        assert_eq!(&sha256_hex(&bytes), name, "{}", path.display());
    }

    // Still serving: the first file, kv, and deletes (which make room).
    let (status, _, sha, length) =
        sha256_of_download(&admin, &file_url(&node, "full", "first.bin"), &[]).await;
    assert_eq!((status, length), (200, FILE_BYTES as u64));
    assert_eq!(sha, sha256_hex(&first));
    let (status, body) = public.post_json("/full/set/small", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = public.get("/full/get/small").await;
    assert_eq!((status, &body["value"]), (200, &json!(1)), "{body}");
    let (status, body) = admin
        .call("DELETE", "/_/api/v1/apps/full/files/fill/1.bin", None)
        .await;
    assert_eq!((status, &body["deleted"]), (200, &json!(true)), "{body}");
}
