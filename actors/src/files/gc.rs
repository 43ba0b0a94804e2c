//! Block GC, on every node: a block file no file references any more (a
//! deleted or overwritten file's, an aborted upload's, a copy repair moved
//! away from) is removed once it is older than `files_gc_grace_ms`.
//!
//! GC judges from the replicated metadata, never from per-node counts: a
//! block is garbage when `block_refs == 0`, its mtime (touched again when
//! an upload stores the same content) is older than the grace, and this
//! node is ready (its state applied within a few entries of the leader's,
//! so a lagging node never judges from old state). The refs are checked
//! again under the block's lock right before the unlink. An upload older
//! than `files_upload_duration_max_ms` (at most half the grace, checked at
//! boot) is aborted before it proposes, so no commit can reference a block
//! GC has already judged.
//!
//! One sweep covers the 256 shards of the store (`blocks/<hh>/`) in
//! `files_gc_interval_ms`: one shard every interval / 256 (60 s → one shard
//! every 234 ms; the 100 ms of a test → a full sweep in about 0.1 s plus
//! the listing). An orphan is thus gone at most grace + one interval after
//! its last write. Stale `blocks/tmp/*.part` files (a write cut by a
//! crash or a dropped stream) older than the grace go at the start of each
//! sweep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use picloud_cluster::Duty;
use picloud_cluster::files::hex8;

use super::FileService;

/// The store's shards (`blocks/00` .. `blocks/ff`).
const SHARDS: u32 = 256;

/// The shortest pause between two shards, whatever the interval.
const GC_SHARD_PAUSE_MIN: Duration = Duration::from_millis(1);

/// Whether a block file is garbage now, on a node that is ready (the
/// sweep's gate). Pure: the caller reads the refs, the mtime and the clock.
pub fn is_garbage(refs: u64, modified: SystemTime, now: SystemTime, grace: Duration) -> bool {
    // A clock that went backwards (mtime in the future) keeps the block.
    let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
    refs == 0 && age > grace
}

/// This node's GC duty (see the module doc). The next shard is kept across
/// a restart, so a shard that panics is not retried forever.
pub fn gc_duty(service: FileService) -> Duty {
    let next_shard = Arc::new(AtomicU8::new(0));
    Duty::new("files_gc", move || run(service.clone(), next_shard.clone()))
}

async fn run(service: FileService, next_shard: Arc<AtomicU8>) {
    let sweep = Duration::from_millis(service.config().files_gc_interval_ms);
    let pause = (sweep / SHARDS).max(GC_SHARD_PAUSE_MIN);
    let grace = Duration::from_millis(service.config().files_gc_grace_ms);
    let mut ticker = tokio::time::interval(pause);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let shard = next_shard.fetch_add(1, Ordering::Relaxed);
        if shard == 0 {
            match service.node.files().remove_stale_temp(grace) {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "files gc: removed stale upload temp files"),
                Err(error) => tracing::warn!(%error, "files gc: cannot clean blocks/tmp"),
            }
        }
        let removed = sweep_shard(&service, shard, grace).await;
        if removed > 0 {
            service
                .stats
                .gc_removed
                .fetch_add(removed, Ordering::Relaxed);
            tracing::debug!(shard, removed, "files gc: removed unreferenced blocks");
        }
    }
}

/// Removes the garbage of one shard; returns how many blocks went.
async fn sweep_shard(service: &FileService, shard: u8, grace: Duration) -> u64 {
    // A lagging node would judge from old state: it waits until ready.
    if service.node.readiness().is_err() {
        return 0;
    }
    let files = service.node.files().clone();
    // Listing a directory (and stat'ing its files) blocks: off the async
    // workers, awaited here so the work belongs to this duty.
    let listed = tokio::task::spawn_blocking(move || files.local_blocks_shard(shard)).await;
    let blocks = match listed {
        Ok(Ok(blocks)) => blocks,
        Ok(Err(error)) => {
            tracing::warn!(shard, %error, "files gc: cannot list a block shard");
            return 0;
        }
        Err(error) => {
            tracing::error!(shard, %error, "files gc: listing a block shard failed");
            return 0;
        }
    };
    let reader = service.node.reader();
    let mut removed = 0;
    for (hash, modified) in blocks {
        let refs = match reader.block_refs(&hash) {
            Ok(refs) => refs,
            Err(error) => {
                tracing::error!(%error, "files gc: cannot read block references");
                return removed;
            }
        };
        if !is_garbage(refs, modified, SystemTime::now(), grace) {
            continue;
        }
        // Checked again under the block's lock: an upload of the same
        // content may have been committed (or touched the file) meanwhile.
        let node = service.node.clone();
        let still_garbage = move || {
            let refs = node.reader().block_refs(&hash).unwrap_or(1);
            refs == 0 && node.readiness().is_ok()
        };
        match service.node.files().remove_local(hash, still_garbage).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(block = %hex8(&hash), %error, "files gc: cannot remove a block");
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_unreferenced_blocks_are_garbage() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let grace = Duration::from_secs(100);
        let old = now - Duration::from_secs(101);
        let young = now - Duration::from_secs(99);
        let future = now + Duration::from_secs(500);
        let cases = [
            (0, old, true),
            (1, old, false),
            (0, young, false),
            (0, now - grace, false),
            (0, future, false),
        ];
        for (refs, modified, expected) in cases {
            assert_eq!(
                is_garbage(refs, modified, now, grace),
                expected,
                "refs {refs} modified {modified:?}"
            );
        }
    }
}
