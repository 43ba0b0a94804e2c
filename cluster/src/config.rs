//! Cluster settings with their defaults.

use std::sync::Arc;
use std::time::Duration;

use picloud_storage::secret_box::Keyring;

/// Raft timings and the bounds on waiting for a leader.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Election timeout range. openraft 0.9 adds a leader lease of the max:
    /// a follower campaigns after hearing nothing for max + (min..max).
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and compact the log) after this many applied entries.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a little.
    pub logs_kept_after_snapshot: u64,
    /// Most log entries in one AppendEntries RPC. Entries are batches of
    /// writes, and openraft gives an append one heartbeat interval: keep it
    /// small enough for a Pi to encode, send and store in that time.
    pub append_entries_max: u64,
    /// How long a request waits for a leader before failing with `no_leader`.
    /// Kept below the scripts' wall-clock timeout (5 s by default), so a
    /// script's write fails with `no_leader`, which it can catch, rather than
    /// with its own timeout. Without a reachable quorum a write fails at once.
    pub leader_wait_ms: u64,
    /// How long a write may take from proposal to apply before failing with `timeout`.
    pub write_timeout_ms: u64,
    /// Writes waiting for the batcher; when full for `write_timeout_ms`, 503 `overloaded`.
    pub write_queue_max: usize,
    /// Most commands in one log entry.
    pub batch_commands_max: usize,
    /// Most payload bytes in one batched log entry; larger commands go alone.
    pub batch_bytes_max: usize,
    /// Batches proposed and not yet applied at one time.
    pub batches_inflight_max: usize,
    /// Free bytes kept on the data dir's disk: below it, writes are refused
    /// with `disk_full` (deletions down to half of it); 0 turns the check off.
    pub disk_reserve_bytes: u64,
    /// The secrets master keys that seal the cluster CA key and the join
    /// secret before they enter the log, and open them (see `sealed`).
    /// `picloud serve` always sets them; without them (`None`, the default,
    /// for tests of lower layers) the node cannot create the cluster
    /// secrets, print the token or admit joiners.
    pub secret_keys: Option<Arc<Keyring>>,
    /// Files: limits, block transfer and repair/GC timings.
    pub files: FilesConfig,
}

/// Files' settings (flags `--file-*`/`--files-*`), shared by the block
/// layer here and the file service above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// Largest file, in bytes (`file_bytes_max`).
    pub file_bytes_max: u64,
    /// Most bytes of files one app may hold.
    pub files_bytes_per_app_max: u64,
    /// Most files one app may hold.
    pub files_per_app_max: u64,
    /// Largest file a script reads whole with `files.get` or writes with
    /// `files.put`; larger ones go through signed URLs.
    pub file_inline_read_max: u64,
    /// Uploads this node receives at once (more: 503 `overloaded`).
    pub files_uploads_inflight_max: usize,
    /// Downloads this node serves at once (more: 503 `overloaded`).
    pub files_downloads_inflight_max: usize,
    /// Blocks of one upload waiting for their replicas' acknowledgements.
    pub files_upload_blocks_inflight_max: usize,
    /// Concurrent block streams to (and from) one peer.
    pub files_block_streams_per_peer_max: usize,
    /// Longest one block operation (send, fetch, pull) may take.
    pub files_block_timeout_ms: u64,
    /// Longest an upload may take from first byte to committed metadata;
    /// GC's grace must be at least twice this.
    pub files_upload_duration_max_ms: u64,
    /// How long an unreferenced block is kept before GC removes it.
    pub files_gc_grace_ms: u64,
    /// How long one GC sweep over the block store's 256 shards takes (one
    /// shard every interval / 256; `actors::files::gc`).
    pub files_gc_interval_ms: u64,
    /// How often the leader's repair duty starts a pass.
    pub files_repair_interval_ms: u64,
    /// Block copies the repair duty runs at once.
    pub files_repair_copies_inflight_max: usize,
    /// Longest a file upload or download body may take (the gateway's body
    /// timeout for file routes).
    pub files_body_timeout_ms: u64,
    /// Slowest a file body may flow, in bytes per second, once started.
    pub files_body_rate_bytes_min: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            file_bytes_max: 1 << 30,
            files_bytes_per_app_max: 10 << 30,
            files_per_app_max: 100_000,
            file_inline_read_max: 8 << 20,
            files_uploads_inflight_max: 4,
            files_downloads_inflight_max: 64,
            files_upload_blocks_inflight_max: 2,
            files_block_streams_per_peer_max: 8,
            files_block_timeout_ms: 10_000,
            files_upload_duration_max_ms: 30 * 60 * 1000,
            files_gc_grace_ms: 2 * 60 * 60 * 1000,
            files_gc_interval_ms: 60_000,
            files_repair_interval_ms: 10_000,
            files_repair_copies_inflight_max: 4,
            files_body_timeout_ms: 60 * 60 * 1000,
            files_body_rate_bytes_min: 16 * 1024,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs_since_last: 20_000,
            logs_kept_after_snapshot: 1_000,
            append_entries_max: 32,
            leader_wait_ms: LEADER_WAIT_MS_DEFAULT,
            write_timeout_ms: 10_000,
            write_queue_max: 4_096,
            batch_commands_max: 512,
            batch_bytes_max: 1024 * 1024,
            batches_inflight_max: 2,
            disk_reserve_bytes: crate::disk::DISK_RESERVE_BYTES_DEFAULT,
            secret_keys: None,
            files: FilesConfig::default(),
        }
    }
}

/// `leader_wait_ms` by default: an election takes about one election
/// timeout (under 1.2 s with the default timings), and a script's wall-clock
/// budget is 5 s.
pub const LEADER_WAIT_MS_DEFAULT: u64 = 2_000;

/// Log entries a node may have received but not applied and still count as
/// ready (`/_/ready`): a few batches in flight, not a node replaying a backlog.
pub const READY_APPLY_LAG_MAX: u64 = 64;

impl ClusterConfig {
    /// A member not heard from for this long counts as unreachable: two
    /// election timeouts, so one lost heartbeat or a slow vote does not flap it.
    pub fn unreachable_after_ms(&self) -> u64 {
        2 * self.election_timeout_max_ms
    }

    pub fn leader_wait(&self) -> Duration {
        Duration::from_millis(self.leader_wait_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}
