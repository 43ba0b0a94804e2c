//! Issue 14: files stream; they never pass whole through memory. Uploading
//! and downloading 500 MiB through one node raises its resident set
//! (VmRSS, sampled every 50 ms during the transfers) by at most 16 MiB over
//! the level after a warm-up transfer.
//!
//! It runs in every test run: SHA-256 builds optimised even in debug
//! (`[profile.dev.package.sha2]`), so the 500 MiB take seconds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::files::{MIB, file_url, random_bytes, rss_kb, sha256_of_download};
use common::{TestNode, install_crypto};
use sha2::{Digest, Sha256};

const TRANSFER_MIB: u64 = 500;
const WARM_UP_MIB: u64 = 8;
const RSS_GROWTH_KB_MAX: u64 = 16 * 1024;
const SAMPLE_PERIOD: Duration = Duration::from_millis(50);

/// `mib` MiB of random bytes as a request body made chunk by chunk (the
/// test never holds the whole payload either), and the SHA-256 it will have.
fn generated_body(mib: u64, seed: u64) -> (reqwest::Body, String) {
    let mut hasher = Sha256::new();
    for index in 0..mib {
        hasher.update(random_bytes(MIB as usize, seed + index));
    }
    let sha = common::files::hex(&hasher.finalize());
    let chunks = futures::stream::iter((0..mib).map(move |index| {
        Ok::<Bytes, std::io::Error>(Bytes::from(random_bytes(MIB as usize, seed + index)))
    }));
    (reqwest::Body::wrap_stream(chunks), sha)
}

async fn upload(node: &TestNode, path: &str, mib: u64, seed: u64) -> String {
    let (body, sha) = generated_body(mib, seed);
    let response = reqwest::Client::new()
        .put(file_url(node, "media", path))
        .bearer_auth(node.admin_key())
        .header("content-length", mib * MIB)
        .body(body)
        .send()
        .await
        .expect("PUT");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{text}");
    sha
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploading_and_downloading_500_mib_raises_rss_by_at_most_16_mib() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let api = node.client();
    let (status, body) = api
        .deploy(
            "media",
            &[(
                "picloud.toml",
                "name = \"media\"\n[[route]]\nmethod = \"GET\"\npath = \"/ping\"\nscript = \"ping.lua\"\n",
            ), ("ping.lua", "return function(req)\n  return {json={ok=true}}\nend")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let pid = node.child.as_ref().expect("running").id();

    // Warm up: buffers, pools and connections the node keeps anyway.
    let sha = upload(&node, "warm.bin", WARM_UP_MIB, 1_000).await;
    let (status, _, got, _) =
        sha256_of_download(&api, &file_url(&node, "media", "warm.bin"), &[]).await;
    assert_eq!((status, got), (200, sha));
    let baseline = rss_kb(pid);
    assert!(baseline > 0, "no VmRSS for pid {pid}");

    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(SAMPLE_PERIOD).await;
            }
        })
    };
    let sha = upload(&node, "big.bin", TRANSFER_MIB, 0).await;
    let (status, _, got, length) =
        sha256_of_download(&api, &file_url(&node, "media", "big.bin"), &[]).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");
    assert_eq!((status, length), (200, TRANSFER_MIB * MIB));
    assert_eq!(got, sha);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("t240: VmRSS baseline {baseline} KiB, peak growth {growth} KiB");
    assert!(
        growth <= RSS_GROWTH_KB_MAX,
        "VmRSS grew {growth} KiB over {baseline} KiB (at most {RSS_GROWTH_KB_MAX})"
    );
}
