//! Helpers for the files tests: random payloads, hashes, streamed transfers
//! through the admin API, the blocks on each node's disk, and a process's RSS.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Api, TestNode};

pub const MIB: u64 = 1024 * 1024;

/// `size` bytes from a seeded generator (random content: no dedupe between
/// blocks), without holding a second copy.
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        // xorshift64*: fast and good enough to make every block distinct.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let room = (size - out.len()).min(8);
        out.extend_from_slice(&word[..room]);
    }
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `PUT /_/api/v1/apps/<app>/files/<path>` with `body` (length known):
/// status and JSON.
pub async fn put_file(api: &Api, app: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = api
        .http
        .put(format!("{}/_/api/v1/apps/{app}/files/{path}", api.base))
        .bearer_auth(api.key.as_deref().unwrap_or_default())
        .body(body)
        .send()
        .await
        .expect("PUT file");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A streamed GET of `url` (with the admin key when `api` has one): the
/// status, the headers, and the SHA-256 and length of the body, hashed as
/// it arrives (never held whole).
pub async fn sha256_of_download(
    api: &Api,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String, u64) {
    let mut request = api.http.get(url);
    if let Some(key) = &api.key {
        request = request.bearer_auth(key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("GET file");
    let status = response.status().as_u16();
    let response_headers = response.headers().clone();
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("download body");
        length += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (status, response_headers, hex(&hasher.finalize()), length)
}

/// The admin URL of a file.
pub fn file_url(node: &TestNode, app: &str, path: &str) -> String {
    format!("{}/_/api/v1/apps/{app}/files/{path}", node.url())
}

/// The block files in `<data-dir>/blocks/<hh>/` of `node` (their names:
/// the hex SHA-256 of their content); temp files are not listed.
pub fn blocks_in(node: &TestNode) -> BTreeSet<String> {
    blocks_in_dir(&node.data_dir.join("blocks"))
}

pub fn blocks_in_dir(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(shards) = std::fs::read_dir(root) else {
        return found;
    };
    for shard in shards.flatten() {
        let name = shard.file_name().to_string_lossy().into_owned();
        if name.len() != 2 || !shard.path().is_dir() {
            continue;
        }
        for block in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let block = block.file_name().to_string_lossy().into_owned();
            if block.len() == 64 && block.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                found.insert(block);
            }
        }
    }
    found
}

/// Files under `root` whose names end in `.part` (upload temp files).
pub fn part_files(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".part") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// The resident set of process `pid`, in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `files_repair_pending` of `cluster status` asked through `api`.
pub async fn repair_pending(api: &Api) -> Option<u64> {
    let (status, body) = api.get("/_/api/v1/cluster/status").await;
    if status != 200 {
        return None;
    }
    body["files_repair_pending"].as_u64()
}

/// A signed URL of `path` (absolute, on `node`), made through the admin API.
pub async fn signed_url(api: &Api, node: &TestNode, app: &str, request: Value) -> String {
    let (status, body) = api
        .post_json(&format!("/_/api/v1/apps/{app}/file-urls"), &request)
        .await;
    assert_eq!(status, 200, "signing {request}: {body}");
    format!("{}{}", node.url(), body["url"].as_str().expect("url"))
}

/// A pause between polls of a condition.
pub const POLL: Duration = Duration::from_millis(100);
