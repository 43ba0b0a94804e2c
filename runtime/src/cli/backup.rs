//! `picloud backup --out FILE [--no-files]` (through any node) and
//! `picloud restore FILE --data-dir DIR` (offline: no server needed).
//!
//! A backup is written to `FILE.partial`, fsynced and renamed, so a cut
//! stream (the node died, a block no member holds, the disk filled) leaves
//! no `FILE`. A restore reads the file once, writing as it goes, and checks
//! its end: a truncated or damaged backup leaves DIR empty again.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use picloud_cluster::backup;
use tokio::io::AsyncWriteExt;

use super::client::{CliError, Client};
use super::escape::escape;

/// The state database's page cache while a restore writes it (the same
/// default a node runs with).
const RESTORE_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The backup file's write buffer.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Streams a backup from a node into `out`.
pub async fn backup(client: &Client, out: &Path, files: bool) -> Result<(), CliError> {
    let started = std::time::Instant::now();
    let partial = partial_path(out);
    let path = format!("/backup?files={files}");
    let response = client
        .response(client.request(reqwest::Method::GET, &path))
        .await?;
    // The headers come once the node has opened its view of the state: the
    // rest is streaming.
    let view_ms = started.elapsed().as_millis();
    let index = response
        .headers()
        .get("x-picloud-backup-index")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("?")
        .to_string();
    let mut body = response.bytes_stream();
    let written = async {
        // Writes of at least this much: the body arrives in small chunks,
        // and each write is a trip to the blocking pool.
        let mut file = tokio::io::BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            tokio::fs::File::create(&partial).await?,
        );
        let mut trailer = Trailer::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            file.write_all(&chunk).await?;
            trailer.update(&chunk);
        }
        file.flush().await?;
        file.get_ref().sync_all().await?;
        Ok::<Trailer, std::io::Error>(trailer)
    }
    .await;
    // A complete stream ends with the BLAKE3 of everything before it:
    // checked before the rename, so a body cut anywhere leaves no FILE.
    let checked = match written {
        Ok(trailer) => trailer.check(),
        Err(error) => Err(CliError::new(format!("the backup stream broke: {error}"))),
    };
    let size = match checked {
        Ok(size) => size,
        Err(error) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(CliError::new(format!(
                "backup failed, no {} written: {}",
                escape(&out.display().to_string()),
                error.message
            )));
        }
    };
    tokio::fs::rename(&partial, out)
        .await
        .map_err(|e| CliError::new(format!("renaming {}: {e}", partial.display())))?;
    sync_parent(out).await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "wrote {} at log index {index}: {size} bytes, {:.1} MB/s (the node began sending after {view_ms} ms)",
        escape(&out.display().to_string()),
        size as f64 / 1e6 / seconds.max(1e-9)
    );
    Ok(())
}

/// Restores `file` into the empty `data_dir` as a new one-node cluster.
pub async fn restore(file: &Path, data_dir: &Path) -> Result<(), CliError> {
    let started = std::time::Instant::now();
    let report = backup::restore(file, data_dir, RESTORE_CACHE_BYTES)
        .await
        .map_err(|e| CliError::new(format!("restore failed: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    let verified = &report.verified;
    println!(
        "restored {} (log index {}, {} apps, {} file blocks, {} bytes, {:.1} MB/s) into {} as node {} of a new one-node cluster",
        escape(&file.display().to_string()),
        verified.header.last_log_index,
        report.apps,
        verified.blocks,
        verified.bytes,
        verified.bytes as f64 / 1e6 / seconds.max(1e-9),
        escape(&data_dir.display().to_string()),
        report.node_id,
    );
    println!(
        "start it with `picloud serve --data-dir {}` and the old cluster's secrets master key (PICLOUD_SECRET_KEY, or its secret.key copied into that dir) so secrets open",
        escape(&data_dir.display().to_string())
    );
    Ok(())
}

/// The running BLAKE3 of a backup as it arrives, holding back its last
/// 32 bytes (the trailer's hash of everything before them).
#[derive(Default)]
struct Trailer {
    hash: blake3::Hasher,
    size: u64,
    held: Vec<u8>,
    head: Vec<u8>,
}

impl Trailer {
    fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        if self.head.len() < backup::MAGIC.len() {
            let want = (backup::MAGIC.len() - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..want]);
        }
        if chunk.len() >= DIGEST_BYTES {
            // Everything held and all but the chunk's last 32 bytes are
            // before the digest (hashed without copying the chunk).
            let cut = chunk.len() - DIGEST_BYTES;
            self.hash.update(&self.held);
            self.hash.update(&chunk[..cut]);
            self.held.clear();
            self.held.extend_from_slice(&chunk[cut..]);
        } else {
            self.held.extend_from_slice(chunk);
            if self.held.len() > DIGEST_BYTES {
                let cut = self.held.len() - DIGEST_BYTES;
                self.hash.update(&self.held[..cut]);
                self.held.drain(..cut);
            }
        }
    }

    /// The size, if the stream is a whole backup.
    fn check(self) -> Result<u64, CliError> {
        if self.head != backup::MAGIC {
            return Err(CliError::new("the node did not send a PiCloud backup"));
        }
        if self.held.len() < DIGEST_BYTES || self.hash.finalize().as_bytes()[..] != self.held[..] {
            return Err(CliError::new(
                "the stream ended early or was damaged (checksum mismatch)",
            ));
        }
        Ok(self.size)
    }
}

const DIGEST_BYTES: usize = 32;

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Makes the rename durable (best effort: the file itself is synced).
async fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Ok(dir) = tokio::fs::File::open(parent).await {
        let _ = dir.sync_all().await;
    }
}
