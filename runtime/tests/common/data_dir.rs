//! Looking inside a node's data dir and at its secrets master key: the
//! greps that prove a secret is stored sealed, and key ids as a node
//! reports them.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::TestNode;

/// A master key of 32 `byte`s, as `PICLOUD_SECRET_KEY` takes it.
pub fn key_text(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

/// The public id of [`key_text`]`(byte)`, as the node reports it.
pub fn key_id(byte: u8) -> String {
    Sha256::digest([byte; 32])[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file under `dir` (recursively, not entering directories named in
/// `skip`) whose raw bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8], skip: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !skip.contains(&name) {
                    stack.push(path);
                }
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|window| window == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// How many snapshot files the node's Raft store holds.
pub fn snapshot_files(node: &TestNode) -> usize {
    std::fs::read_dir(node.data_dir.join("raft/snapshots"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.path().is_file())
                .count()
        })
        .unwrap_or(0)
}
