//! Limits of the actor layer, each with a default. The binary fills these from
//! its config and validates them at boot.

use std::time::Duration;

use picloud_lua_sdk::SandboxLimits;

use crate::logs::LogLimits;

#[derive(Debug, Clone)]
pub struct ActorLimits {
    /// Per-invocation instruction budget, memory cap per VM and wall-clock timeout.
    pub sandbox: SandboxLimits,
    /// Most VMs (so concurrent invocations) per app on this node.
    pub vm_pool_size_max: usize,
    /// Idle VMs kept per app once the app goes quiet; the rest are dropped.
    pub vm_idle_max: usize,
    /// How long a VM may sit unused before the trim drops it (down to `vm_idle_max`).
    pub vm_idle_ttl_ms: u64,
    /// How often each app actor trims its pool.
    pub vm_trim_interval_ms: u64,
    /// How long a request waits for a free VM before failing with 503 `app_busy`.
    pub vm_wait_ms: u64,
    /// Largest kv value (JSON text), in bytes.
    pub kv_value_bytes_max: usize,
    /// Largest kv key, in bytes.
    pub kv_key_bytes_max: usize,
    /// Most items one `kv.list` page may return.
    pub kv_list_limit_max: usize,
    /// Most ops in one `kv.atomic`.
    pub kv_atomic_ops_max: usize,
    /// Documents one `docs.find`/`docs.count` may examine before it fails
    /// with `query_too_broad` (an index keeps a query far below it).
    pub docs_scan_max: u64,
    /// Stored bytes one `kv.list` or `docs.find` page may hold; a page ends
    /// early (with a cursor) rather than exceed it, but always holds one item.
    pub read_page_bytes_max: usize,
    /// Log ring and follow bounds.
    pub logs: LogLimits,
    /// Restart backoff of a crashed app actor: first delay, doubled up to the max.
    pub restart_backoff_initial_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// Realtime subscribers, topics and messages on this node.
    pub realtime: RealtimeLimits,
}

impl Default for ActorLimits {
    fn default() -> Self {
        ActorLimits {
            sandbox: SandboxLimits::default(),
            vm_pool_size_max: 64,
            vm_idle_max: 2,
            vm_idle_ttl_ms: 30_000,
            vm_trim_interval_ms: 10_000,
            vm_wait_ms: 2_000,
            kv_value_bytes_max: 256 * 1024,
            kv_key_bytes_max: 512,
            kv_list_limit_max: 1_000,
            kv_atomic_ops_max: 64,
            docs_scan_max: 200_000,
            read_page_bytes_max: 1024 * 1024,
            logs: LogLimits::default(),
            restart_backoff_initial_ms: 50,
            restart_backoff_max_ms: 5_000,
            realtime: RealtimeLimits::default(),
        }
    }
}

/// Bounds of realtime on one node, each with its default.
#[derive(Debug, Clone)]
pub struct RealtimeLimits {
    /// Frames one subscriber may have waiting; past it, `overflow`.
    pub buffer_max: usize,
    /// Subscribers on this node, all apps.
    pub subscribers_per_node_max: usize,
    /// Subscribers of one app on this node.
    pub subscribers_per_app_max: usize,
    /// Topics with subscribers of one app on this node.
    pub topics_per_app_max: usize,
    /// Largest published message (JSON text), in bytes.
    pub message_bytes_max: usize,
    /// A token's lifetime when the script names none, in seconds.
    pub token_ttl_secs_default: u64,
    /// The longest lifetime a script may ask for, in seconds.
    pub token_ttl_secs_max: u64,
}

impl Default for RealtimeLimits {
    fn default() -> Self {
        RealtimeLimits {
            buffer_max: 256,
            subscribers_per_node_max: 10_000,
            subscribers_per_app_max: 2_000,
            topics_per_app_max: 1_000,
            message_bytes_max: 64 * 1024,
            token_ttl_secs_default: 3_600,
            token_ttl_secs_max: 86_400,
        }
    }
}

/// How long past the script timeout an invocation may take in all, waiting
/// for its app's CPU share (`cpu.rs`) included, before it is answered
/// `script_timeout`. An invocation's own budget starts when it first runs;
/// when an app's share is taken by its own slow invocations, the ones queued
/// behind them would otherwise answer after several timeouts. The slack lets
/// an invocation that started at once end with its own, more precise error.
pub const INVOCATION_DEADLINE_SLACK: Duration = Duration::from_millis(50);

impl ActorLimits {
    /// An invocation's whole deadline from when it is asked for: the script
    /// timeout plus [`INVOCATION_DEADLINE_SLACK`].
    pub fn invocation_deadline(&self) -> Duration {
        self.sandbox.timeout + INVOCATION_DEADLINE_SLACK
    }

    pub fn vm_wait(&self) -> Duration {
        Duration::from_millis(self.vm_wait_ms)
    }
}
