//! Issue 14: an upload that breaks off leaves nothing visible, and its
//! blocks are collected once the grace has passed. A client sends 20 of the
//! 40 MiB it announced, waits until the node has stored blocks of it, and
//! closes the connection: `files ls` and a HEAD of the path show no file;
//! with a short `--files-gc-grace-ms` every orphan block leaves the blocks
//! dir, while the blocks of a file committed before stay and it still
//! downloads intact.

mod common;

use common::cluster::eventually;
use common::files::{
    MIB, blocks_in, file_url, put_file, random_bytes, sha256_hex, sha256_of_download,
};
use common::{TestNode, install_crypto};
use tokio::io::AsyncWriteExt;

const APP: &str = "media";
const MANIFEST: &str =
    "name = \"media\"\n[[route]]\nmethod = \"GET\"\npath = \"/ping\"\nscript = \"ping.lua\"\n";
const PING: &str = "return function(req)\n  return {status=200, json={ok=true}}\nend";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_upload_leaves_no_file_and_its_blocks_are_collected() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = [
        "--files-gc-grace-ms",
        "3000",
        "--files-upload-duration-max-ms",
        "1500",
        "--files-gc-interval-ms",
        "10",
    ]
    .map(String::from)
    .to_vec();
    node.start().await;
    let api = node.client();
    let (status, body) = api
        .deploy(APP, &[("picloud.toml", MANIFEST), ("ping.lua", PING)])
        .await;
    assert_eq!(status, 200, "{body}");

    // A committed file whose blocks GC must keep.
    let kept = random_bytes(3 * MIB as usize, 245);
    let (status, body) = put_file(&api, APP, "kept.bin", kept.clone()).await;
    assert_eq!(status, 200, "{body}");
    let kept_blocks = blocks_in(&node);
    assert_eq!(kept_blocks.len(), 3, "{kept_blocks:?}");

    // Half of a 40 MiB upload, then the connection closes. The upload may
    // take no longer than 1.5 s (--files-upload-duration-max-ms), so the
    // half is sent at once.
    let total = 40 * MIB;
    let half = random_bytes((total / 2) as usize, 7);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", node.http_port))
        .await
        .expect("connect");
    let head = format!(
        "PUT /_/api/v1/apps/{APP}/files/orphan.bin HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\ncontent-length: {total}\r\n\r\n",
        node.admin_key()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&half).await.expect("half the body");
    stream.flush().await.expect("flush");
    let kept_count = kept_blocks.len();
    eventually("blocks of the half upload are stored", || {
        let stored = blocks_in(&node).len();
        async move { stored >= kept_count + 10 }
    })
    .await;
    drop(stream);

    // Nothing is visible: not listed, not there.
    eventually("the broken upload has ended", || {
        let api = api.clone();
        async move {
            let (status, page) = api.get(&format!("/_/api/v1/apps/{APP}/files")).await;
            assert_eq!(status, 200, "{page}");
            let paths: Vec<&str> = page["files"]
                .as_array()
                .expect("files")
                .iter()
                .filter_map(|file| file["path"].as_str())
                .collect();
            assert_eq!(paths, ["kept.bin"], "{page}");
            true
        }
    })
    .await;
    let listed = node.cli(&["files", "ls", APP]).ok();
    assert!(!listed.contains("orphan.bin"), "{listed}");
    let head = api
        .http
        .head(file_url(&node, APP, "orphan.bin"))
        .bearer_auth(node.admin_key())
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status().as_u16(), 404);

    // After the grace, GC leaves exactly the committed file's blocks.
    eventually("the orphan blocks are collected", || {
        let now = blocks_in(&node);
        let kept_blocks = kept_blocks.clone();
        async move { now == kept_blocks }
    })
    .await;
    let (status, _, sha, length) =
        sha256_of_download(&api, &file_url(&node, APP, "kept.bin"), &[]).await;
    assert_eq!((status, length), (200, kept.len() as u64));
    assert_eq!(sha, sha256_hex(&kept));
    // The operator sees it in the metrics.
    let metrics = api
        .http
        .get(format!("{}/_/metrics", node.url()))
        .bearer_auth(node.admin_key())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let removed: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("picloud_files_gc_removed_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("picloud_files_gc_removed_total");
    assert!(removed > 0, "{metrics}");
    assert!(
        metrics.contains("picloud_files_repair_pending 0"),
        "{metrics}"
    );
}
