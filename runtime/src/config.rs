//! `picloud serve` configuration: flags, `PICLOUD_<NAME>` environment variables
//! and an optional `--config picloud.toml`, in that order of precedence, then
//! the defaults below. Every limit is validated at boot.
//!
//! Every flag is also a config-file key: the flag's name with underscores
//! (`--data-dir` is `data_dir = "..."`, `--dev` is `dev = true`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use picloud_actors::email::{EmailLimits, MailSettings, SmtpRelay, SmtpTls};
use picloud_actors::{ActorLimits, LogLimits};
use picloud_cluster::ClusterConfig;
use picloud_lua_sdk::SandboxLimits;
use picloud_storage::email::EmailRetry;
use serde::Deserialize;

/// Declares every serve setting once: the clap flag (with its env var), the
/// config-file key, and the default.
macro_rules! settings {
    ($( $(#[$doc:meta])* $name:ident : $ty:ty = $default:expr, $env:literal; )*) => {
        /// Flags of `picloud serve`. Each is also `PICLOUD_<NAME>` and a key of `--config`.
        #[derive(Debug, Clone, Default, Args)]
        pub struct ServeArgs {
            /// A TOML file with any of the settings below (flags and env vars
            /// win); keys are the flag names with underscores, e.g.
            /// `data_dir = "/var/lib/picloud"`, `dev = true`.
            #[arg(long, env = "PICLOUD_CONFIG")]
            pub config: Option<PathBuf>,
            /// Development mode: secrets are sealed with a fixed, publicly
            /// known key (a loud warning at start and in cluster status).
            /// `PICLOUD_DEV_MODE=true` (earlier PiCloud's name) also turns it on.
            #[arg(long, env = "PICLOUD_DEV_MODE")]
            pub dev: bool,
            $( $(#[$doc])* #[arg(long, env = $env)] pub $name: Option<$ty>, )*
        }

        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileSettings {
            dev: Option<bool>,
            $( $name: Option<$ty>, )*
        }

        /// Each setting's flag id and its default as `--help` shows it.
        pub fn serve_defaults() -> Vec<(&'static str, String)> {
            vec![$( (stringify!($name), ShowDefault::show(&$default)), )*]
        }

        /// The resolved settings.
        #[derive(Debug, Clone)]
        pub struct ServeConfig {
            /// `--dev` (see `ServeArgs::dev`).
            pub dev: bool,
            $( $(#[$doc])* pub $name: $ty, )*
        }

        impl ServeConfig {
            fn merge(args: ServeArgs, file: FileSettings) -> ServeConfig {
                ServeConfig {
                    // A bool flag cannot say "false", so any source saying true wins.
                    dev: args.dev || file.dev.unwrap_or(false),
                    $( $name: args.$name.or(file.$name).unwrap_or_else(|| $default), )*
                }
            }
        }
    };
}

settings! {
    /// Where this node keeps its state.
    data_dir: PathBuf = PathBuf::from("./picloud-data"), "PICLOUD_DATA_DIR";
    /// Reverse proxies (comma-separated addresses or CIDR blocks, e.g.
    /// `127.0.0.1,10.0.0.0/8`) whose `X-Forwarded-For`, `-Proto` and `-Host`
    /// are believed: the client is then the right-most untrusted address of
    /// `X-Forwarded-For`, and `X-Forwarded-Host` picks an app's domain.
    /// Empty (the default): no proxy is trusted and those headers are dropped.
    trusted_proxies: String = String::new(), "PICLOUD_TRUSTED_PROXIES";
    /// HTTP gateway address.
    http: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), "PICLOUD_HTTP";
    /// QUIC address other nodes reach this one on.
    peer: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7070)), "PICLOUD_PEER";
    /// Peer address of a cluster member to join through (first start of this data dir only).
    join: String = String::new(), "PICLOUD_JOIN";
    /// The cluster's join token (`picloud cluster token` on a member).
    join_token: String = String::new(), "PICLOUD_JOIN_TOKEN";
    /// How long a first start with `--join` keeps trying to reach the member
    /// (one log line per retry) before it gives up and exits non-zero, in
    /// milliseconds.
    join_timeout_ms: u64 = 30_000, "PICLOUD_JOIN_TIMEOUT_MS";
    /// Largest request body for app routes and the admin API, in bytes.
    http_body_bytes_max: usize = 1024 * 1024, "PICLOUD_HTTP_BODY_BYTES_MAX";
    /// Largest deploy bundle, in bytes.
    deploy_bytes_max: usize = 8 * 1024 * 1024, "PICLOUD_DEPLOY_BYTES_MAX";
    /// Requests served at once; more get 503 `overloaded`. A request takes
    /// its place only once its head and body have arrived.
    http_inflight_max: usize = 1024, "PICLOUD_HTTP_INFLIGHT_MAX";
    /// Requests to one app (the admin API counts as one) served at once; more
    /// get 503 `overloaded`, so one app cannot take every place.
    http_inflight_per_app_max: usize = 512, "PICLOUD_HTTP_INFLIGHT_PER_APP_MAX";
    /// Requests from one client address served at once; more get 503 `overloaded`.
    http_inflight_per_client_max: usize = 256, "PICLOUD_HTTP_INFLIGHT_PER_CLIENT_MAX";
    /// Apps with their own series in `/_/metrics` (requests, latency); an
    /// app's series exist once it served a request and go when it is
    /// deleted. Requests to apps past this many are counted only in
    /// `picloud_http_requests_uncounted_total`.
    metrics_apps_max: usize = 1000, "PICLOUD_METRICS_APPS_MAX";
    /// Old values a backup keeps while it reads the state (bytes of keys
    /// and values written during the backup that it had not read yet);
    /// past it the backup fails and says so. Writes never wait for a backup.
    backup_kept_bytes_max: u64 = 64 * 1024 * 1024, "PICLOUD_BACKUP_KEPT_BYTES_MAX";
    /// Request body bytes buffered at once across all requests; a body that
    /// does not fit gets 503 `overloaded`. At least the largest body allowed.
    http_body_buffered_bytes_max: usize = 64 * 1024 * 1024, "PICLOUD_HTTP_BODY_BUFFERED_BYTES_MAX";
    /// Time a client has to send a request head (HTTP/1) or its first request
    /// (HTTP/1 and HTTP/2) before the connection is closed, in milliseconds.
    http_header_timeout_ms: u64 = 10_000, "PICLOUD_HTTP_HEADER_TIMEOUT_MS";
    /// Time a request body may take in total before 408 `body_timeout`, in milliseconds.
    http_body_timeout_ms: u64 = 60_000, "PICLOUD_HTTP_BODY_TIMEOUT_MS";
    /// Average bytes per second a request body must keep up once it has taken
    /// longer than `http_header_timeout_ms`, or 408 `body_timeout` (0 = off).
    http_body_rate_bytes_min: u64 = 1024, "PICLOUD_HTTP_BODY_RATE_BYTES_MIN";
    /// A connection with no request in flight and no traffic for this long is
    /// closed, and one whose writes make no progress this long (a client that
    /// stopped reading) is dropped, in milliseconds.
    http_idle_timeout_ms: u64 = 30_000, "PICLOUD_HTTP_IDLE_TIMEOUT_MS";
    /// Open HTTP connections; kept below the file-descriptor limit (raised to
    /// its hard limit at start) minus a reserve. More are closed at accept.
    http_connections_max: usize = 4096, "PICLOUD_HTTP_CONNECTIONS_MAX";
    /// Open HTTP connections from one client address; more are closed at accept.
    http_connections_per_client_max: usize = 256, "PICLOUD_HTTP_CONNECTIONS_PER_CLIENT_MAX";
    /// Concurrent streams (requests) one HTTP/2 connection may open.
    http2_max_concurrent_streams: u32 = 100, "PICLOUD_HTTP2_MAX_CONCURRENT_STREAMS";
    /// Lua instructions one invocation may run.
    script_instructions_max: u64 = 100_000_000, "PICLOUD_SCRIPT_INSTRUCTIONS_MAX";
    /// Memory cap of one Lua VM, in bytes.
    script_memory_bytes_max: usize = 16 * 1024 * 1024, "PICLOUD_SCRIPT_MEMORY_BYTES_MAX";
    /// Wall-clock limit of one invocation, in milliseconds.
    script_timeout_ms: u64 = 5_000, "PICLOUD_SCRIPT_TIMEOUT_MS";
    /// Threads that run scripts (requests' handlers, trigger runs, VM
    /// construction) (0 = two per core).
    script_threads: usize = 0, "PICLOUD_SCRIPT_THREADS";
    /// Threads that accept connections and parse HTTP; they never run Lua,
    /// so health and the admin API answer while scripts burn CPU (0 = one
    /// per core, at most 4).
    http_threads: usize = 0, "PICLOUD_HTTP_THREADS";
    /// Script threads one app's invocations may occupy at once, so a heavy
    /// app leaves the others room (0 = one less than the cores, at least 1).
    app_script_threads: usize = 0, "PICLOUD_APP_SCRIPT_THREADS";
    /// Nice value of the script threads (0 to 19): above the HTTP, Raft and
    /// storage threads' 0, so those run first when scripts fill the cores.
    script_threads_nice: i32 = 5, "PICLOUD_SCRIPT_THREADS_NICE";
    /// VMs (concurrent invocations) per app on this node.
    vm_pool_size_max: usize = 64, "PICLOUD_VM_POOL_SIZE_MAX";
    /// Idle VMs kept per app once it goes quiet.
    vm_idle_max: usize = 2, "PICLOUD_VM_IDLE_MAX";
    /// How long an unused VM is kept above `vm_idle_max`, in milliseconds.
    vm_idle_ttl_ms: u64 = 30_000, "PICLOUD_VM_IDLE_TTL_MS";
    /// How long a request waits for a free VM, in milliseconds.
    vm_wait_ms: u64 = 2_000, "PICLOUD_VM_WAIT_MS";
    /// Largest kv value (JSON text), in bytes.
    kv_value_bytes_max: usize = 256 * 1024, "PICLOUD_KV_VALUE_BYTES_MAX";
    /// Largest kv key, in bytes.
    kv_key_bytes_max: usize = 512, "PICLOUD_KV_KEY_BYTES_MAX";
    /// Most items of one kv list page.
    kv_list_limit_max: usize = 1_000, "PICLOUD_KV_LIST_LIMIT_MAX";
    /// Documents one docs query may examine before it fails with `query_too_broad`.
    docs_scan_max: u64 = 200_000, "PICLOUD_DOCS_SCAN_MAX";
    /// Stored bytes one kv list or docs find page may hold (it ends early, with
    /// a cursor, but always holds one item).
    read_page_bytes_max: usize = 1024 * 1024, "PICLOUD_READ_PAGE_BYTES_MAX";
    /// Log lines kept per app on this node.
    log_lines_per_app_max: usize = 1_000, "PICLOUD_LOG_LINES_PER_APP_MAX";
    /// Deploy versions kept per app.
    deploy_versions_kept: u32 = 20, "PICLOUD_DEPLOY_VERSIONS_KEPT";
    /// sled page cache per database, in bytes.
    storage_cache_bytes: u64 = 32 * 1024 * 1024, "PICLOUD_STORAGE_CACHE_BYTES";
    /// Free bytes kept on the data dir's disk: below it, writes fail with
    /// 507 `disk_full` (deletions are allowed down to half of it) so sled
    /// and the Raft log never meet a full disk; 0 turns the check off.
    disk_reserve_bytes: u64 = picloud_cluster::disk::DISK_RESERVE_BYTES_DEFAULT, "PICLOUD_DISK_RESERVE_BYTES";
    /// How long a request waits for a Raft leader before 503 `no_leader`, in
    /// milliseconds; keep it below `script_timeout_ms` so a script's write
    /// fails with `no_leader` (catchable) rather than its own timeout. A
    /// node that cannot reach a majority of voters fails writes at once.
    leader_wait_ms: u64 = picloud_cluster::config::LEADER_WAIT_MS_DEFAULT, "PICLOUD_LEADER_WAIT_MS";
    /// Build a snapshot and compact the log after this many entries.
    snapshot_logs_since_last: u64 = 20_000, "PICLOUD_SNAPSHOT_LOGS_SINCE_LAST";
    /// Log entries kept behind a snapshot for followers that lag a little.
    logs_kept_after_snapshot: u64 = 1_000, "PICLOUD_LOGS_KEPT_AFTER_SNAPSHOT";
    /// Raft leader heartbeat period, in milliseconds.
    heartbeat_interval_ms: u64 = 100, "PICLOUD_HEARTBEAT_INTERVAL_MS";
    /// Raft election timeout range, in milliseconds. A follower campaigns
    /// after hearing nothing for its leader lease (the max) plus a random
    /// timeout in this range, so a dead leader is replaced in about
    /// max + min..max + max.
    election_timeout_min_ms: u64 = 300, "PICLOUD_ELECTION_TIMEOUT_MIN_MS";
    /// The upper end of the Raft election timeout range, in milliseconds
    /// (above `election_timeout_min_ms`).
    election_timeout_max_ms: u64 = 600, "PICLOUD_ELECTION_TIMEOUT_MAX_MS";
    /// Trigger runs executing at once on this node (the leader runs them).
    trigger_runs_inflight_max: usize = 64, "PICLOUD_TRIGGER_RUNS_INFLIGHT_MAX";
    /// A cron slot older than this when the scheduler reaches it is missed
    /// (then `misfire = "skip"` drops it, `"fire_once"` runs one catch-up).
    trigger_misfire_grace_ms: u64 = 1_000, "PICLOUD_TRIGGER_MISFIRE_GRACE_MS";
    /// Timeout of a script's outbound HTTP request that gives no
    /// `timeout_ms`, in milliseconds (never past the script's own timeout).
    http_out_timeout_ms: u64 = picloud_actors::outbound::client::TIMEOUT_MS_DEFAULT, "PICLOUD_HTTP_OUT_TIMEOUT_MS";
    /// Largest `timeout_ms` a script may give an outbound request, in milliseconds.
    http_out_timeout_max_ms: u64 = picloud_actors::outbound::client::TIMEOUT_MS_MAX_DEFAULT, "PICLOUD_HTTP_OUT_TIMEOUT_MAX_MS";
    /// Largest outbound response body a script receives, in bytes (more is
    /// `http_too_large`, read no further).
    http_out_response_bytes_max: usize = picloud_actors::outbound::client::RESPONSE_BYTES_MAX_DEFAULT, "PICLOUD_HTTP_OUT_RESPONSE_BYTES_MAX";
    /// Largest outbound request body a script may send, in bytes.
    http_out_request_bytes_max: usize = picloud_actors::outbound::client::REQUEST_BYTES_MAX_DEFAULT, "PICLOUD_HTTP_OUT_REQUEST_BYTES_MAX";
    /// Outbound requests one app may have in flight on this node; more fail
    /// at once with `http_busy`.
    http_out_per_app_max: usize = picloud_actors::outbound::client::PER_APP_MAX_DEFAULT, "PICLOUD_HTTP_OUT_PER_APP_MAX";
    /// Outbound requests in flight on this node; more fail at once with `http_busy`.
    http_out_per_node_max: usize = picloud_actors::outbound::client::PER_NODE_MAX_DEFAULT, "PICLOUD_HTTP_OUT_PER_NODE_MAX";
    /// Private targets scripts may reach despite the SSRF guard, comma
    /// separated: `ip:port` exactly (`10.0.0.5:9000`, `[fd00::5]:443`) or a
    /// network, any port (`192.168.1.0/24`).
    http_out_allow: String = String::new(), "PICLOUD_HTTP_OUT_ALLOW";
    /// DNS server (`ip:port`, UDP) that resolves outbound requests' host
    /// names; empty = the system resolver.
    http_out_dns: String = String::new(), "PICLOUD_HTTP_OUT_DNS";
    /// The most durable messages a `[[topic]]` may keep (`retain`); a
    /// deploy asking for more is refused with `invalid_deploy`.
    topic_retain_max: u64 = 100_000, "PICLOUD_TOPIC_RETAIN_MAX";
    /// Largest pub/sub message (JSON text), in bytes.
    pubsub_message_bytes_max: usize = 64 * 1024, "PICLOUD_PUBSUB_MESSAGE_BYTES_MAX";
    /// Messages one realtime subscriber may have waiting; a subscriber past
    /// it gets `event: overflow` and is closed.
    realtime_buffer_max: usize = 256, "PICLOUD_REALTIME_BUFFER_MAX";
    /// Realtime (SSE) subscribers on this node, all apps.
    realtime_subscribers_per_node_max: usize = 10_000, "PICLOUD_REALTIME_SUBSCRIBERS_PER_NODE_MAX";
    /// Realtime subscribers of one app on this node.
    realtime_subscribers_per_app_max: usize = 2_000, "PICLOUD_REALTIME_SUBSCRIBERS_PER_APP_MAX";
    /// Topics with subscribers of one app on this node (`topics_full` past it).
    realtime_topics_per_app_max: usize = 1_000, "PICLOUD_REALTIME_TOPICS_PER_APP_MAX";
    /// A comment line on every idle realtime stream this often, in
    /// milliseconds, so proxies and clients see the connection is alive.
    realtime_heartbeat_ms: u64 = 15_000, "PICLOUD_REALTIME_HEARTBEAT_MS";
    /// Largest file, in bytes (more is 413 `file_too_large`).
    file_bytes_max: u64 = picloud_cluster::FilesConfig::default().file_bytes_max, "PICLOUD_FILE_BYTES_MAX";
    /// Most bytes of files one app may hold (more is 413 `quota_exceeded`).
    files_bytes_per_app_max: u64 = picloud_cluster::FilesConfig::default().files_bytes_per_app_max, "PICLOUD_FILES_BYTES_PER_APP_MAX";
    /// Most files one app may hold (more is 413 `quota_exceeded`).
    files_per_app_max: u64 = picloud_cluster::FilesConfig::default().files_per_app_max, "PICLOUD_FILES_PER_APP_MAX";
    /// Largest file a script reads whole with `files.get` or writes with
    /// `files.put`, in bytes; larger ones go through signed URLs.
    file_inline_read_max: u64 = picloud_cluster::FilesConfig::default().file_inline_read_max, "PICLOUD_FILE_INLINE_READ_MAX";
    /// File uploads this node receives at once; more get 503 `overloaded`.
    files_uploads_inflight_max: usize = picloud_cluster::FilesConfig::default().files_uploads_inflight_max, "PICLOUD_FILES_UPLOADS_INFLIGHT_MAX";
    /// File downloads this node serves at once; more get 503 `overloaded`.
    files_downloads_inflight_max: usize = picloud_cluster::FilesConfig::default().files_downloads_inflight_max, "PICLOUD_FILES_DOWNLOADS_INFLIGHT_MAX";
    /// Blocks of one upload waiting for their replicas' acknowledgements
    /// (each holds up to 1 MiB of memory).
    files_upload_blocks_inflight_max: usize = picloud_cluster::FilesConfig::default().files_upload_blocks_inflight_max, "PICLOUD_FILES_UPLOAD_BLOCKS_INFLIGHT_MAX";
    /// Concurrent block streams to (and from) one peer; kept well below the
    /// 32 streams a peer connection allows, so Raft always has room.
    files_block_streams_per_peer_max: usize = picloud_cluster::FilesConfig::default().files_block_streams_per_peer_max, "PICLOUD_FILES_BLOCK_STREAMS_PER_PEER_MAX";
    /// Longest one block operation (send, fetch, copy) may take, in milliseconds.
    files_block_timeout_ms: u64 = picloud_cluster::FilesConfig::default().files_block_timeout_ms, "PICLOUD_FILES_BLOCK_TIMEOUT_MS";
    /// Longest an upload may take from its first byte to its committed
    /// metadata, in milliseconds; `files_gc_grace_ms` must be at least twice it.
    files_upload_duration_max_ms: u64 = picloud_cluster::FilesConfig::default().files_upload_duration_max_ms, "PICLOUD_FILES_UPLOAD_DURATION_MAX_MS";
    /// How long a block no file references is kept before GC removes it, in
    /// milliseconds (at least twice `files_upload_duration_max_ms`, so an
    /// upload still running never loses its blocks).
    files_gc_grace_ms: u64 = picloud_cluster::FilesConfig::default().files_gc_grace_ms, "PICLOUD_FILES_GC_GRACE_MS";
    /// How often GC looks at one of the block store's 256 shards, in milliseconds.
    files_gc_interval_ms: u64 = picloud_cluster::FilesConfig::default().files_gc_interval_ms, "PICLOUD_FILES_GC_INTERVAL_MS";
    /// How often the leader's repair duty starts a pass over the blocks, in milliseconds.
    files_repair_interval_ms: u64 = picloud_cluster::FilesConfig::default().files_repair_interval_ms, "PICLOUD_FILES_REPAIR_INTERVAL_MS";
    /// Block copies the repair duty runs at once.
    files_repair_copies_inflight_max: usize = picloud_cluster::FilesConfig::default().files_repair_copies_inflight_max, "PICLOUD_FILES_REPAIR_COPIES_INFLIGHT_MAX";
    /// Longest a file upload or download body may take on the file routes,
    /// in milliseconds (instead of `http_body_timeout_ms`).
    files_body_timeout_ms: u64 = picloud_cluster::FilesConfig::default().files_body_timeout_ms, "PICLOUD_FILES_BODY_TIMEOUT_MS";
    /// Average bytes per second a file upload body must keep up once it has
    /// taken longer than `http_header_timeout_ms` (0 = off).
    files_body_rate_bytes_min: u64 = picloud_cluster::FilesConfig::default().files_body_rate_bytes_min, "PICLOUD_FILES_BODY_RATE_BYTES_MIN";
    /// The SMTP relay outgoing mail goes through, `host:port`. Without it
    /// mail is captured, not sent (`picloud mail list APP`).
    smtp_relay: String = String::new(), "PICLOUD_SMTP_RELAY";
    /// How the relay connection is protected: `starttls` (required),
    /// `tls` (SMTPS from the first byte) or `none` (loopback or a trusted
    /// network only).
    smtp_tls: String = "starttls".to_string(), "PICLOUD_SMTP_TLS";
    /// The relay login's username (none: no authentication).
    smtp_username: String = String::new(), "PICLOUD_SMTP_USERNAME";
    /// The relay login's password: give it in the environment or the
    /// config file, not as a flag (a flag shows in the process list). Never
    /// printed.
    smtp_password: SecretText = SecretText::default(), "PICLOUD_SMTP_PASSWORD";
    /// The default sender, `addr@domain` or `Name <addr@domain>`; required
    /// with `smtp_relay`. A script's own `from` must be on its domain.
    mail_from: String = String::new(), "PICLOUD_MAIL_FROM";
    /// Longest one send to the relay may take (connect, dialogue, data), in
    /// milliseconds; past it the send is retried later.
    smtp_timeout_ms: u64 = 30_000, "PICLOUD_SMTP_TIMEOUT_MS";
    /// Sends talking to the relay at once on this node.
    smtp_sends_inflight_max: usize = 8, "PICLOUD_SMTP_SENDS_INFLIGHT_MAX";
    /// Largest outgoing message (bodies, attachments and header fields), in
    /// bytes; more is 413 `email_too_large`.
    email_bytes_max: usize = 10 * 1024 * 1024, "PICLOUD_EMAIL_BYTES_MAX";
    /// Most recipients (to, cc and bcc) of one message; more is 413
    /// `email_too_large`.
    email_recipients_max: usize = 50, "PICLOUD_EMAIL_RECIPIENTS_MAX";
    /// Sends of one message, the first included, before it is dead-lettered
    /// (a 5xx reply dead-letters it at once).
    email_attempts_max: u32 = 8, "PICLOUD_EMAIL_ATTEMPTS_MAX";
    /// Wait before a failed send's first retry, doubled for each later one
    /// (capped at an hour), in milliseconds.
    email_backoff_ms: u64 = 30_000, "PICLOUD_EMAIL_BACKOFF_MS";
    /// Captured mails kept per app without a relay; the oldest go first.
    mail_captured_max: u32 = 1000, "PICLOUD_MAIL_CAPTURED_MAX";
    /// Address of this node's SMTP listener for inbound mail (e.g.
    /// `0.0.0.0:2525`); empty = no listener (the default: a node accepts
    /// mail only when the operator says where).
    smtp_listen: String = String::new(), "PICLOUD_SMTP_LISTEN";
    /// The domain under which each app receives mail:
    /// `<anything>@<app>.<mail_domain>`. Required with `smtp_listen`.
    mail_domain: String = String::new(), "PICLOUD_MAIL_DOMAIN";
    /// Largest inbound message, as sent, in bytes (more is 552, refused
    /// while it is read, never buffered past this).
    mail_bytes_max: u64 = 10 * 1024 * 1024, "PICLOUD_MAIL_BYTES_MAX";
    /// Recipients of one inbound message; more get 452.
    smtp_recipients_max: usize = 100, "PICLOUD_SMTP_RECIPIENTS_MAX";
    /// Open SMTP connections on this node; more get 421 at once.
    smtp_connections_max: usize = 256, "PICLOUD_SMTP_CONNECTIONS_MAX";
    /// Open SMTP connections from one client address; more get 421 at
    /// once (one sender cannot take every slot of `smtp_connections_max`).
    smtp_connections_per_ip_max: usize = 16, "PICLOUD_SMTP_CONNECTIONS_PER_IP_MAX";
    /// How long the listener waits for each SMTP command, in milliseconds.
    smtp_command_timeout_ms: u64 = 60_000, "PICLOUD_SMTP_COMMAND_TIMEOUT_MS";
    /// How long a whole message may take after `DATA`, in milliseconds.
    smtp_data_timeout_ms: u64 = 600_000, "PICLOUD_SMTP_DATA_TIMEOUT_MS";
    /// PEM certificate chain for STARTTLS on the SMTP listener; with
    /// `smtp_tls_key`. Empty = STARTTLS not offered.
    smtp_tls_cert: String = String::new(), "PICLOUD_SMTP_TLS_CERT";
    /// PEM private key of `smtp_tls_cert`.
    smtp_tls_key: String = String::new(), "PICLOUD_SMTP_TLS_KEY";
    /// Password hashes (argon2id, ~19 MiB and tens of ms each) this node
    /// runs at once; default the core count, so logins never starve the
    /// other routes of more than that.
    auth_hash_concurrency: usize = picloud_actors::users::UsersConfig::default().hash_concurrency, "PICLOUD_AUTH_HASH_CONCURRENCY";
    /// Password hashes that may wait behind the running ones; more get 503
    /// `auth_busy`.
    auth_hash_queue_max: usize = picloud_actors::users::UsersConfig::default().hash_queue_max, "PICLOUD_AUTH_HASH_QUEUE_MAX";
    /// Nice value of the password hash threads (0 to 19): above the HTTP,
    /// Raft and storage threads' 0, so a login storm leaves other routes
    /// their latency.
    auth_hash_nice: i32 = picloud_actors::users::UsersConfig::default().hash_nice, "PICLOUD_AUTH_HASH_NICE";
    /// Run password hashes under `SCHED_IDLE`: a hash gets a core only
    /// when nothing else on the machine wants it, and any other thread
    /// preempts it at once, so a login storm adds no latency to other
    /// routes (logins then wait while the node is saturated by other work).
    /// `false`: they run at `auth_hash_nice`.
    auth_hash_idle: bool = picloud_actors::users::UsersConfig::default().hash_idle, "PICLOUD_AUTH_HASH_IDLE";
    /// Most end users one app may hold (more is 413 `quota_exceeded`).
    auth_users_per_app_max: u64 = picloud_actors::users::UsersConfig::default().users_per_app_max, "PICLOUD_AUTH_USERS_PER_APP_MAX";
    /// Sessions one user may hold; a login past it ends the oldest.
    auth_sessions_per_user_max: u32 = picloud_actors::users::UsersConfig::default().sessions_per_user_max, "PICLOUD_AUTH_SESSIONS_PER_USER_MAX";
    /// Largest `data` of a user, as JSON text, in bytes (more is 413
    /// `value_too_large`).
    auth_user_data_bytes_max: u32 = picloud_actors::users::UsersConfig::default().user_data_bytes_max, "PICLOUD_AUTH_USER_DATA_BYTES_MAX";
    /// A session's sliding lifetime, in milliseconds: each use extends it.
    auth_session_ttl_ms: u64 = picloud_actors::users::UsersConfig::default().session_ttl_ms, "PICLOUD_AUTH_SESSION_TTL_MS";
    /// How often a used session's extension is written to the log, at most,
    /// in milliseconds (below the TTL).
    auth_session_refresh_ms: u64 = picloud_actors::users::UsersConfig::default().session_refresh_ms, "PICLOUD_AUTH_SESSION_REFRESH_MS";
    /// A session unused this long on a node is dropped from that node's
    /// live sessions (it stays valid), in milliseconds.
    auth_session_idle_ms: u64 = picloud_actors::users::UsersConfig::default().session_idle_ms, "PICLOUD_AUTH_SESSION_IDLE_MS";
    /// Live sessions one node keeps; past it the least recently used are dropped.
    auth_sessions_live_max: usize = picloud_actors::users::UsersConfig::default().sessions_live_max, "PICLOUD_AUTH_SESSIONS_LIVE_MAX";
    /// How long an email verification link works, in milliseconds.
    auth_verify_ttl_ms: u64 = picloud_actors::users::flows::FlowConfig::default().verify_ttl_ms, "PICLOUD_AUTH_VERIFY_TTL_MS";
    /// How long a password-reset link works, in milliseconds.
    auth_reset_ttl_ms: u64 = picloud_actors::users::flows::FlowConfig::default().reset_ttl_ms, "PICLOUD_AUTH_RESET_TTL_MS";
    /// How long an invitation works, in milliseconds.
    auth_invite_ttl_ms: u64 = picloud_actors::users::flows::FlowConfig::default().invite_ttl_ms, "PICLOUD_AUTH_INVITE_TTL_MS";
    /// Failed logins of one account within `auth_limit_window_ms` before
    /// it is locked out for `auth_lockout_ms` (429 `rate_limited`); counted
    /// per node.
    auth_login_failures_max: u32 = picloud_actors::users::flows::FlowConfig::default().login_failures_max, "PICLOUD_AUTH_LOGIN_FAILURES_MAX";
    /// Failed logins from one client address (IPv6: its /64) within the
    /// window before that address is locked out; counted per node.
    auth_ip_failures_max: u32 = picloud_actors::users::flows::FlowConfig::default().ip_failures_max, "PICLOUD_AUTH_IP_FAILURES_MAX";
    /// Sign-ups plus reset requests from one client address within the
    /// window; more wait out the window (429 `rate_limited`).
    auth_ip_requests_max: u32 = picloud_actors::users::flows::FlowConfig::default().ip_requests_max, "PICLOUD_AUTH_IP_REQUESTS_MAX";
    /// The window the auth rate limits count over, in milliseconds.
    auth_limit_window_ms: u64 = picloud_actors::users::flows::FlowConfig::default().limit_window_ms, "PICLOUD_AUTH_LIMIT_WINDOW_MS";
    /// How long a locked-out account or address waits, in milliseconds.
    auth_lockout_ms: u64 = picloud_actors::users::flows::FlowConfig::default().lockout_ms, "PICLOUD_AUTH_LOCKOUT_MS";
    /// Accounts or addresses each auth rate limit tracks at once on a node
    /// (the memory bound; past it the stalest entries are dropped).
    auth_limits_tracked_max: usize = picloud_actors::users::flows::FlowConfig::default().limits_tracked_max, "PICLOUD_AUTH_LIMITS_TRACKED_MAX";
    /// Flow mails (verification, reset) waiting to be sent on a node; past
    /// it sign-ups and reset requests answer 503 `auth_busy`.
    auth_mail_queue_max: usize = picloud_actors::users::flows::FlowConfig::default().mail_queue_max, "PICLOUD_AUTH_MAIL_QUEUE_MAX";
    /// The URL clients reach this node's HTTP at, for the links in auth
    /// mails when an app sets no `[auth] link_base`. Empty: `http://` +
    /// the `http` address (loopback when it binds every interface).
    public_url: String = String::new(), "PICLOUD_PUBLIC_URL";
    /// How long the setup token `picloud admins add` prints stays usable,
    /// in milliseconds.
    operator_setup_ttl_ms: u64 = picloud_actors::operators::OperatorsConfig::default().setup_ttl_ms, "PICLOUD_OPERATOR_SETUP_TTL_MS";
}

/// A setting that is a secret: read like a string, never shown by `Debug`
/// or `--help`.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "none"
        } else {
            "<hidden>"
        })
    }
}

impl std::str::FromStr for SecretText {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(SecretText(text.to_string()))
    }
}

impl ShowDefault for SecretText {
    fn show(&self) -> String {
        format!("{self:?}")
    }
}

/// The sender of captured mail when no `mail_from` is set (dev mode).
const DEV_MAIL_FROM: &str = "PiCloud <picloud@localhost>";

/// How a default reads in `--help`.
trait ShowDefault {
    fn show(&self) -> String;
}

impl ShowDefault for PathBuf {
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl ShowDefault for String {
    fn show(&self) -> String {
        if self.is_empty() {
            "none".to_string()
        } else {
            self.clone()
        }
    }
}

macro_rules! show_by_display {
    ($($ty:ty),*) => {
        $(impl ShowDefault for $ty {
            fn show(&self) -> String {
                self.to_string()
            }
        })*
    };
}
show_by_display!(SocketAddr, usize, u64, u32, i32, bool);

/// A TOML error in a local file as `FILE:LINE:COLUMN: message` (1-based), so
/// an editor or a reader goes straight to the spot.
pub fn toml_error_text(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return format!("{}: {message}", path.display());
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(1, |tail| tail.chars().count() + 1);
    format!("{}:{line}:{column}: {message}", path.display())
}

fn read_file_settings(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).map_err(|error| anyhow::anyhow!(toml_error_text(path, &text, &error)))
}

/// The cores this process may run on (2 when the OS cannot tell).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> anyhow::Result<()> {
    if value < min || value > max {
        bail!("{name} = {value} is out of range ({min} to {max})");
    }
    Ok(())
}

impl ServeConfig {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<ServeConfig> {
        let file = match &args.config {
            Some(path) => read_file_settings(path)?,
            None => FileSettings::default(),
        };
        let config = ServeConfig::merge(args, file);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        const MIB: usize = 1024 * 1024;
        self.validate_smtp()?;
        check_range(
            "http_body_bytes_max",
            self.http_body_bytes_max,
            1024,
            256 * MIB,
        )?;
        check_range("deploy_bytes_max", self.deploy_bytes_max, 1024, 256 * MIB)?;
        check_range("http_inflight_max", self.http_inflight_max, 1, 1_000_000)?;
        check_range(
            "http_inflight_per_app_max",
            self.http_inflight_per_app_max,
            1,
            1_000_000,
        )?;
        check_range("metrics_apps_max", self.metrics_apps_max, 1, 100_000)?;
        check_range(
            "backup_kept_bytes_max",
            self.backup_kept_bytes_max,
            MIB as u64,
            16 * 1024 * MIB as u64,
        )?;
        check_range(
            "http_inflight_per_client_max",
            self.http_inflight_per_client_max,
            1,
            1_000_000,
        )?;
        check_range(
            "http_body_buffered_bytes_max",
            self.http_body_buffered_bytes_max,
            self.http_body_bytes_max.max(self.deploy_bytes_max),
            16 * 1024 * MIB,
        )?;
        check_range(
            "http_header_timeout_ms",
            self.http_header_timeout_ms,
            100,
            600_000,
        )?;
        check_range(
            "http_body_timeout_ms",
            self.http_body_timeout_ms,
            100,
            3_600_000,
        )?;
        check_range(
            "http_body_rate_bytes_min",
            self.http_body_rate_bytes_min,
            0,
            1 << 30,
        )?;
        check_range(
            "http_idle_timeout_ms",
            self.http_idle_timeout_ms,
            100,
            3_600_000,
        )?;
        check_range(
            "http_connections_max",
            self.http_connections_max,
            1,
            1_000_000,
        )?;
        check_range(
            "http_connections_per_client_max",
            self.http_connections_per_client_max,
            1,
            1_000_000,
        )?;
        check_range(
            "http2_max_concurrent_streams",
            self.http2_max_concurrent_streams,
            1,
            10_000,
        )?;
        check_range(
            "script_instructions_max",
            self.script_instructions_max,
            1_000,
            100_000_000_000,
        )?;
        check_range(
            "script_memory_bytes_max",
            self.script_memory_bytes_max,
            MIB,
            1024 * MIB,
        )?;
        check_range("script_timeout_ms", self.script_timeout_ms, 10, 600_000)?;
        check_range("script_threads", self.script_threads, 0, 256)?;
        check_range("http_threads", self.http_threads, 0, 64)?;
        check_range("app_script_threads", self.app_script_threads, 0, 256)?;
        check_range("script_threads_nice", self.script_threads_nice, 0, 19)?;
        check_range("vm_pool_size_max", self.vm_pool_size_max, 1, 1024)?;
        check_range("vm_idle_max", self.vm_idle_max, 0, 1024)?;
        check_range("vm_wait_ms", self.vm_wait_ms, 0, 600_000)?;
        check_range("vm_idle_ttl_ms", self.vm_idle_ttl_ms, 100, 86_400_000)?;
        check_range("kv_value_bytes_max", self.kv_value_bytes_max, 16, 64 * MIB)?;
        check_range("kv_key_bytes_max", self.kv_key_bytes_max, 1, 64 * 1024)?;
        check_range(
            "pubsub_message_bytes_max",
            self.pubsub_message_bytes_max,
            16,
            MIB,
        )?;
        check_range(
            "realtime_buffer_max",
            self.realtime_buffer_max,
            1,
            1_000_000,
        )?;
        check_range(
            "realtime_subscribers_per_node_max",
            self.realtime_subscribers_per_node_max,
            1,
            10_000_000,
        )?;
        check_range(
            "realtime_subscribers_per_app_max",
            self.realtime_subscribers_per_app_max,
            1,
            10_000_000,
        )?;
        check_range(
            "realtime_topics_per_app_max",
            self.realtime_topics_per_app_max,
            1,
            10_000_000,
        )?;
        check_range(
            "realtime_heartbeat_ms",
            self.realtime_heartbeat_ms,
            10,
            3_600_000,
        )?;
        check_range("kv_list_limit_max", self.kv_list_limit_max, 1, 100_000)?;
        check_range("docs_scan_max", self.docs_scan_max, 100, 100_000_000)?;
        check_range(
            "read_page_bytes_max",
            self.read_page_bytes_max,
            1024,
            256 * 1024 * 1024,
        )?;
        check_range(
            "log_lines_per_app_max",
            self.log_lines_per_app_max,
            1,
            1_000_000,
        )?;
        check_range("deploy_versions_kept", self.deploy_versions_kept, 1, 10_000)?;
        check_range(
            "storage_cache_bytes",
            self.storage_cache_bytes,
            1 << 20,
            1 << 40,
        )?;
        check_range("disk_reserve_bytes", self.disk_reserve_bytes, 0, 1 << 50)?;
        check_range(
            "logs_kept_after_snapshot",
            self.logs_kept_after_snapshot,
            0,
            10_000_000,
        )?;
        check_range("leader_wait_ms", self.leader_wait_ms, 10, 600_000)?;
        check_range("join_timeout_ms", self.join_timeout_ms, 100, 86_400_000)?;
        check_range(
            "trigger_runs_inflight_max",
            self.trigger_runs_inflight_max,
            1,
            10_000,
        )?;
        check_range(
            "trigger_misfire_grace_ms",
            self.trigger_misfire_grace_ms,
            0,
            86_400_000,
        )?;
        check_range(
            "heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            10,
            10_000,
        )?;
        check_range(
            "election_timeout_min_ms",
            self.election_timeout_min_ms,
            self.heartbeat_interval_ms * 2,
            60_000,
        )?;
        check_range(
            "election_timeout_max_ms",
            self.election_timeout_max_ms,
            self.election_timeout_min_ms + 1,
            120_000,
        )?;
        check_range(
            "snapshot_logs_since_last",
            self.snapshot_logs_since_last,
            100,
            100_000_000,
        )?;
        self.outbound_config()?;
        self.files_config()?;
        self.mail_settings()?;
        self.users_config()?;
        self.public_url()?;
        self.operators_config()?;
        self.trusted_proxies().context("trusted_proxies")?;
        Ok(())
    }

    /// `--trusted-proxies`, parsed (`gateway/proxy.rs`).
    pub fn trusted_proxies(
        &self,
    ) -> Result<crate::gateway::proxy::TrustedProxies, crate::gateway::proxy::ProxyListError> {
        crate::gateway::proxy::TrustedProxies::parse(&self.trusted_proxies)
    }

    /// The mail settings, checked (also at boot, by `validate`).
    pub fn mail_settings(&self) -> anyhow::Result<MailSettings> {
        const MIB: usize = 1024 * 1024;
        check_range("smtp_timeout_ms", self.smtp_timeout_ms, 100, 600_000)?;
        check_range(
            "smtp_sends_inflight_max",
            self.smtp_sends_inflight_max,
            1,
            1024,
        )?;
        check_range("email_bytes_max", self.email_bytes_max, 1024, 64 * MIB)?;
        check_range("email_recipients_max", self.email_recipients_max, 1, 10_000)?;
        check_range("email_attempts_max", self.email_attempts_max, 1, 100)?;
        check_range("email_backoff_ms", self.email_backoff_ms, 10, 3_600_000)?;
        check_range("mail_captured_max", self.mail_captured_max, 1, 1_000_000)?;
        let tls = match self.smtp_tls.as_str() {
            "starttls" => SmtpTls::Starttls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            other => bail!("smtp_tls = {other:?} must be starttls, tls or none"),
        };
        let relay = if self.smtp_relay.is_empty() {
            None
        } else {
            let (host, port) = self
                .smtp_relay
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .filter(|(host, _)| !host.is_empty())
                .with_context(|| format!("smtp_relay = {:?} must be host:port", self.smtp_relay))?;
            if self.mail_from.is_empty() {
                bail!("mail_from is required with smtp_relay (the default sender)");
            }
            let credentials = (!self.smtp_username.is_empty()).then(|| {
                (
                    self.smtp_username.clone(),
                    self.smtp_password.expose().to_string(),
                )
            });
            Some(SmtpRelay {
                host: host.trim_matches(['[', ']']).to_string(),
                port,
                tls,
                credentials,
            })
        };
        let mail_from = if self.mail_from.is_empty() {
            DEV_MAIL_FROM.to_string()
        } else {
            self.mail_from.clone()
        };
        picloud_actors::email::check_mail_from(&mail_from)
            .map_err(|error| anyhow::anyhow!("mail_from: {}", error.message))?;
        Ok(MailSettings {
            relay,
            mail_from,
            limits: EmailLimits {
                bytes_max: self.email_bytes_max,
                recipients_max: self.email_recipients_max,
            },
            timeout_ms: self.smtp_timeout_ms,
            sends_inflight_max: self.smtp_sends_inflight_max,
            captured_max: self.mail_captured_max,
            retry: EmailRetry {
                attempts_max: self.email_attempts_max,
                backoff_ms: self.email_backoff_ms,
            },
        })
    }

    /// The operator settings, checked (also at boot, by `validate`).
    pub fn operators_config(&self) -> anyhow::Result<picloud_actors::operators::OperatorsConfig> {
        check_range(
            "operator_setup_ttl_ms",
            self.operator_setup_ttl_ms,
            1_000,
            30 * 24 * 3_600_000,
        )?;
        Ok(picloud_actors::operators::OperatorsConfig {
            setup_ttl_ms: self.operator_setup_ttl_ms,
        })
    }

    /// The end-user settings, checked (also at boot, by `validate`).
    pub fn users_config(&self) -> anyhow::Result<picloud_actors::users::UsersConfig> {
        const DAY_MS: u64 = 24 * 3_600_000;
        check_range("auth_hash_concurrency", self.auth_hash_concurrency, 1, 256)?;
        check_range("auth_hash_queue_max", self.auth_hash_queue_max, 0, 100_000)?;
        check_range("auth_hash_nice", self.auth_hash_nice, 0, 19)?;
        check_range(
            "auth_users_per_app_max",
            self.auth_users_per_app_max,
            1,
            1_000_000_000,
        )?;
        check_range(
            "auth_sessions_per_user_max",
            self.auth_sessions_per_user_max,
            1,
            1_000,
        )?;
        check_range(
            "auth_user_data_bytes_max",
            self.auth_user_data_bytes_max,
            2,
            1 << 20,
        )?;
        check_range(
            "auth_session_ttl_ms",
            self.auth_session_ttl_ms,
            60_000,
            365 * DAY_MS,
        )?;
        check_range(
            "auth_session_refresh_ms",
            self.auth_session_refresh_ms,
            1_000,
            self.auth_session_ttl_ms,
        )?;
        check_range(
            "auth_session_idle_ms",
            self.auth_session_idle_ms,
            1_000,
            DAY_MS,
        )?;
        check_range(
            "auth_sessions_live_max",
            self.auth_sessions_live_max,
            1,
            10_000_000,
        )?;
        Ok(picloud_actors::users::UsersConfig {
            hash_concurrency: self.auth_hash_concurrency,
            hash_queue_max: self.auth_hash_queue_max,
            hash_nice: self.auth_hash_nice,
            hash_idle: self.auth_hash_idle,
            users_per_app_max: self.auth_users_per_app_max,
            sessions_per_user_max: self.auth_sessions_per_user_max,
            user_data_bytes_max: self.auth_user_data_bytes_max,
            session_ttl_ms: self.auth_session_ttl_ms,
            session_refresh_ms: self.auth_session_refresh_ms,
            session_idle_ms: self.auth_session_idle_ms,
            sessions_live_max: self.auth_sessions_live_max,
            flows: self.flow_config()?,
            ..picloud_actors::users::UsersConfig::default()
        })
    }

    /// The auth flows' settings, checked (as part of `users_config`).
    fn flow_config(&self) -> anyhow::Result<picloud_actors::users::flows::FlowConfig> {
        const DAY_MS: u64 = 24 * 3_600_000;
        for (name, value) in [
            ("auth_verify_ttl_ms", self.auth_verify_ttl_ms),
            ("auth_reset_ttl_ms", self.auth_reset_ttl_ms),
            ("auth_invite_ttl_ms", self.auth_invite_ttl_ms),
        ] {
            check_range(name, value, 1_000, 90 * DAY_MS)?;
        }
        for (name, value) in [
            ("auth_login_failures_max", self.auth_login_failures_max),
            ("auth_ip_failures_max", self.auth_ip_failures_max),
            ("auth_ip_requests_max", self.auth_ip_requests_max),
        ] {
            check_range(name, value, 1, 1_000_000)?;
        }
        check_range(
            "auth_limit_window_ms",
            self.auth_limit_window_ms,
            1_000,
            DAY_MS,
        )?;
        check_range("auth_lockout_ms", self.auth_lockout_ms, 1_000, DAY_MS)?;
        check_range(
            "auth_limits_tracked_max",
            self.auth_limits_tracked_max,
            1,
            10_000_000,
        )?;
        check_range(
            "auth_mail_queue_max",
            self.auth_mail_queue_max,
            1,
            1_000_000,
        )?;
        Ok(picloud_actors::users::flows::FlowConfig {
            verify_ttl_ms: self.auth_verify_ttl_ms,
            reset_ttl_ms: self.auth_reset_ttl_ms,
            invite_ttl_ms: self.auth_invite_ttl_ms,
            login_failures_max: self.auth_login_failures_max,
            ip_failures_max: self.auth_ip_failures_max,
            ip_requests_max: self.auth_ip_requests_max,
            limit_window_ms: self.auth_limit_window_ms,
            lockout_ms: self.auth_lockout_ms,
            limits_tracked_max: self.auth_limits_tracked_max,
            mail_queue_max: self.auth_mail_queue_max,
        })
    }

    /// The URL links in auth mails start with: `public_url`, or `http://`
    /// + the `http` address (loopback in place of an unspecified address).
    pub fn public_url(&self) -> anyhow::Result<String> {
        if self.public_url.is_empty() {
            let mut address = self.http;
            if address.ip().is_unspecified() {
                address.set_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
            }
            return Ok(format!("http://{address}"));
        }
        let url = self.public_url.trim_end_matches('/');
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.contains(['?', '#']) || url.chars().any(char::is_whitespace) {
            bail!(
                "public_url = {:?} must be an http:// or https:// URL without a query",
                self.public_url
            );
        }
        Ok(url.to_string())
    }

    /// The files settings, checked (also at boot, by `validate`).
    pub fn files_config(&self) -> anyhow::Result<picloud_cluster::FilesConfig> {
        const MIB: u64 = 1024 * 1024;
        const HOUR_MS: u64 = 3_600_000;
        check_range("file_bytes_max", self.file_bytes_max, 1, 1 << 40)?;
        check_range(
            "files_bytes_per_app_max",
            self.files_bytes_per_app_max,
            self.file_bytes_max,
            1 << 50,
        )?;
        check_range(
            "files_per_app_max",
            self.files_per_app_max,
            1,
            1_000_000_000,
        )?;
        // A script holds what it reads whole in its VM: at most the largest
        // VM memory cap (above `file_bytes_max` it simply never bites).
        check_range(
            "file_inline_read_max",
            self.file_inline_read_max,
            0,
            1024 * MIB,
        )?;
        check_range(
            "files_uploads_inflight_max",
            self.files_uploads_inflight_max,
            1,
            10_000,
        )?;
        check_range(
            "files_downloads_inflight_max",
            self.files_downloads_inflight_max,
            1,
            100_000,
        )?;
        check_range(
            "files_upload_blocks_inflight_max",
            self.files_upload_blocks_inflight_max,
            1,
            64,
        )?;
        // The peer connection allows 32 streams, shared with Raft.
        check_range(
            "files_block_streams_per_peer_max",
            self.files_block_streams_per_peer_max,
            1,
            16,
        )?;
        check_range(
            "files_block_timeout_ms",
            self.files_block_timeout_ms,
            100,
            600_000,
        )?;
        check_range(
            "files_upload_duration_max_ms",
            self.files_upload_duration_max_ms,
            100,
            24 * HOUR_MS,
        )?;
        check_range(
            "files_gc_grace_ms",
            self.files_gc_grace_ms,
            self.files_upload_duration_max_ms.saturating_mul(2),
            30 * 24 * HOUR_MS,
        )
        .context("files_gc_grace_ms must be at least twice files_upload_duration_max_ms, so GC never collects the blocks of an upload still running")?;
        check_range(
            "files_gc_interval_ms",
            self.files_gc_interval_ms,
            10,
            24 * HOUR_MS,
        )?;
        check_range(
            "files_repair_interval_ms",
            self.files_repair_interval_ms,
            10,
            24 * HOUR_MS,
        )?;
        check_range(
            "files_repair_copies_inflight_max",
            self.files_repair_copies_inflight_max,
            1,
            64,
        )?;
        check_range(
            "files_body_timeout_ms",
            self.files_body_timeout_ms,
            100,
            7 * 24 * HOUR_MS,
        )?;
        check_range(
            "files_body_rate_bytes_min",
            self.files_body_rate_bytes_min,
            0,
            1 << 30,
        )?;
        Ok(picloud_cluster::FilesConfig {
            file_bytes_max: self.file_bytes_max,
            files_bytes_per_app_max: self.files_bytes_per_app_max,
            files_per_app_max: self.files_per_app_max,
            file_inline_read_max: self.file_inline_read_max,
            files_uploads_inflight_max: self.files_uploads_inflight_max,
            files_downloads_inflight_max: self.files_downloads_inflight_max,
            files_upload_blocks_inflight_max: self.files_upload_blocks_inflight_max,
            files_block_streams_per_peer_max: self.files_block_streams_per_peer_max,
            files_block_timeout_ms: self.files_block_timeout_ms,
            files_upload_duration_max_ms: self.files_upload_duration_max_ms,
            files_gc_grace_ms: self.files_gc_grace_ms,
            files_gc_interval_ms: self.files_gc_interval_ms,
            files_repair_interval_ms: self.files_repair_interval_ms,
            files_repair_copies_inflight_max: self.files_repair_copies_inflight_max,
            files_body_timeout_ms: self.files_body_timeout_ms,
            files_body_rate_bytes_min: self.files_body_rate_bytes_min,
        })
    }

    /// Outbound HTTP's settings, checked (also at boot, by `validate`).
    pub fn outbound_config(&self) -> anyhow::Result<picloud_actors::outbound::OutboundConfig> {
        const MIB: usize = 1024 * 1024;
        check_range(
            "http_out_timeout_max_ms",
            self.http_out_timeout_max_ms,
            1,
            3_600_000,
        )?;
        check_range(
            "http_out_timeout_ms",
            self.http_out_timeout_ms,
            1,
            self.http_out_timeout_max_ms,
        )?;
        check_range(
            "http_out_response_bytes_max",
            self.http_out_response_bytes_max,
            1,
            1024 * MIB,
        )?;
        check_range(
            "http_out_request_bytes_max",
            self.http_out_request_bytes_max,
            0,
            1024 * MIB,
        )?;
        check_range(
            "http_out_per_app_max",
            self.http_out_per_app_max,
            1,
            100_000,
        )?;
        check_range(
            "http_out_per_node_max",
            self.http_out_per_node_max,
            1,
            100_000,
        )?;
        let allow = picloud_actors::outbound::AllowList::parse(&self.http_out_allow)?;
        let dns =
            match self.http_out_dns.trim() {
                "" => None,
                server => Some(server.parse::<SocketAddr>().with_context(|| {
                    format!("--http-out-dns {server:?} is not an ip:port address")
                })?),
            };
        Ok(picloud_actors::outbound::OutboundConfig {
            timeout_ms_default: self.http_out_timeout_ms,
            timeout_ms_max: self.http_out_timeout_max_ms,
            response_bytes_max: self.http_out_response_bytes_max,
            request_bytes_max: self.http_out_request_bytes_max,
            per_app_max: self.http_out_per_app_max,
            per_node_max: self.http_out_per_node_max,
            allow,
            dns,
        })
    }

    /// Where to join, when `--join` is given (with its token); `keys` says
    /// what the joiner brings or how it keeps the cluster's master keys.
    pub fn join_target(
        &self,
        keys: picloud_cluster::JoinKeys,
    ) -> anyhow::Result<Option<picloud_cluster::JoinTarget>> {
        if self.join.is_empty() {
            if !self.join_token.is_empty() {
                bail!("--join-token needs --join <peer address of a member>");
            }
            return Ok(None);
        }
        let addr: SocketAddr = self
            .join
            .parse()
            .with_context(|| format!("--join {:?} is not a host:port address", self.join))?;
        if self.join_token.is_empty() {
            bail!("--join needs --join-token (run `picloud cluster token` on a member)");
        }
        Ok(Some(picloud_cluster::JoinTarget {
            addr,
            token: self.join_token.clone(),
            timeout_ms: self.join_timeout_ms,
            keys,
        }))
    }

    pub fn script_threads(&self) -> usize {
        if self.script_threads > 0 {
            return self.script_threads;
        }
        (cores() * 2).max(2)
    }

    pub fn http_threads(&self) -> usize {
        if self.http_threads > 0 {
            return self.http_threads;
        }
        cores().clamp(1, 4)
    }

    pub fn app_script_threads(&self) -> usize {
        if self.app_script_threads > 0 {
            return self.app_script_threads;
        }
        cores().saturating_sub(1).max(1)
    }

    pub fn actor_limits(&self) -> ActorLimits {
        ActorLimits {
            sandbox: SandboxLimits {
                instructions_max: self.script_instructions_max,
                memory_bytes_max: self.script_memory_bytes_max,
                timeout: std::time::Duration::from_millis(self.script_timeout_ms),
            },
            vm_pool_size_max: self.vm_pool_size_max,
            vm_idle_max: self.vm_idle_max,
            vm_idle_ttl_ms: self.vm_idle_ttl_ms,
            vm_wait_ms: self.vm_wait_ms,
            kv_value_bytes_max: self.kv_value_bytes_max,
            kv_key_bytes_max: self.kv_key_bytes_max,
            kv_list_limit_max: self.kv_list_limit_max,
            docs_scan_max: self.docs_scan_max,
            read_page_bytes_max: self.read_page_bytes_max,
            logs: LogLimits {
                lines_per_app_max: self.log_lines_per_app_max,
                ..LogLimits::default()
            },
            realtime: picloud_actors::realtime::RealtimeLimits {
                buffer_max: self.realtime_buffer_max,
                subscribers_per_node_max: self.realtime_subscribers_per_node_max,
                subscribers_per_app_max: self.realtime_subscribers_per_app_max,
                topics_per_app_max: self.realtime_topics_per_app_max,
                message_bytes_max: self.pubsub_message_bytes_max,
                ..Default::default()
            },
            ..ActorLimits::default()
        }
    }

    pub fn cluster_config(&self) -> ClusterConfig {
        ClusterConfig {
            leader_wait_ms: self.leader_wait_ms,
            snapshot_logs_since_last: self.snapshot_logs_since_last,
            logs_kept_after_snapshot: self.logs_kept_after_snapshot,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            disk_reserve_bytes: self.disk_reserve_bytes,
            // Validated at boot (`validate`), so the defaults never stand in
            // for a setting given.
            files: self.files_config().unwrap_or_default(),
            ..ClusterConfig::default()
        }
    }

    pub fn dispatch_limits(&self) -> picloud_actors::dispatcher::DispatchLimits {
        picloud_actors::dispatcher::DispatchLimits {
            runs_inflight_max: self.trigger_runs_inflight_max,
            ..Default::default()
        }
    }

    pub fn schedule_limits(&self) -> picloud_actors::scheduler::ScheduleLimits {
        picloud_actors::scheduler::ScheduleLimits {
            misfire_grace_ms: self.trigger_misfire_grace_ms,
            ..Default::default()
        }
    }

    pub fn storage_options(&self) -> picloud_storage::StorageOptions {
        picloud_storage::StorageOptions {
            cache_capacity_bytes: self.storage_cache_bytes,
            ..picloud_storage::StorageOptions::default()
        }
    }
}

impl ServeConfig {
    /// The SMTP listener's address, or `None` when it is off.
    pub fn smtp_listen(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.smtp_listen.is_empty() {
            return Ok(None);
        }
        let address = self
            .smtp_listen
            .parse()
            .with_context(|| format!("smtp_listen = {:?} is not an ip:port", self.smtp_listen))?;
        Ok(Some(address))
    }

    fn validate_smtp(&self) -> anyhow::Result<()> {
        let listen = self.smtp_listen()?;
        if listen.is_some() {
            let domain_ok = !self.mail_domain.is_empty()
                && self.mail_domain.len() <= 200
                && self.mail_domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !domain_ok {
                bail!(
                    "smtp_listen needs mail_domain, a domain name such as example.org (got {:?})",
                    self.mail_domain
                );
            }
        }
        if self.smtp_tls_cert.is_empty() != self.smtp_tls_key.is_empty() {
            bail!("smtp_tls_cert and smtp_tls_key go together: set both or neither");
        }
        check_range("mail_bytes_max", self.mail_bytes_max, 1024, 1 << 30)?;
        check_range("smtp_recipients_max", self.smtp_recipients_max, 1, 10_000)?;
        check_range(
            "smtp_connections_max",
            self.smtp_connections_max,
            1,
            100_000,
        )?;
        check_range(
            "smtp_connections_per_ip_max",
            self.smtp_connections_per_ip_max,
            1,
            100_000,
        )?;
        check_range(
            "smtp_command_timeout_ms",
            self.smtp_command_timeout_ms,
            100,
            3_600_000,
        )?;
        check_range(
            "smtp_data_timeout_ms",
            self.smtp_data_timeout_ms,
            100,
            3_600_000,
        )?;
        Ok(())
    }

    /// The SMTP listener's settings (TLS read from its files).
    pub fn smtp_config(&self) -> anyhow::Result<crate::smtp::SmtpConfig> {
        let tls = if self.smtp_tls_cert.is_empty() {
            None
        } else {
            Some(crate::smtp::tls_acceptor(
                Path::new(&self.smtp_tls_cert),
                Path::new(&self.smtp_tls_key),
            )?)
        };
        Ok(crate::smtp::SmtpConfig {
            mail_domain: self.mail_domain.to_ascii_lowercase(),
            host: format!("mx.{}", self.mail_domain.to_ascii_lowercase()),
            limits: crate::smtp::session::SessionLimits {
                recipients_max: self.smtp_recipients_max,
                message_bytes_max: self.mail_bytes_max,
                errors_max: crate::smtp::SESSION_ERRORS_MAX,
            },
            command_timeout: std::time::Duration::from_millis(self.smtp_command_timeout_ms),
            data_timeout: std::time::Duration::from_millis(self.smtp_data_timeout_ms),
            connections_max: self.smtp_connections_max,
            connections_per_ip_max: self.smtp_connections_per_ip_max,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_settings_are_checked_at_boot_and_the_password_never_shows() {
        let resolve = |args: ServeArgs| ServeConfig::resolve(args).map_err(|e| e.to_string());
        let relay = || ServeArgs {
            smtp_relay: Some("127.0.0.1:2525".into()),
            mail_from: Some("Shop <noreply@example.org>".into()),
            smtp_username: Some("user".into()),
            smtp_password: Some("hunter2".parse().expect("text")),
            ..ServeArgs::default()
        };
        let config = resolve(relay()).expect("valid relay settings");
        let mail = config.mail_settings().expect("mail settings");
        let relay_settings = mail.relay.as_ref().expect("a relay");
        assert_eq!(
            (relay_settings.port, relay_settings.tls),
            (2525, SmtpTls::Starttls)
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{mail:?}").contains("hunter2"));
        let defaults = resolve(ServeArgs::default()).expect("defaults");
        let dev = defaults.mail_settings().expect("dev mail");
        assert!(dev.relay.is_none(), "no relay: captured");
        assert_eq!(
            (dev.limits.bytes_max, dev.limits.recipients_max),
            (10 << 20, 50)
        );
        for (args, mentions) in [
            (
                ServeArgs {
                    mail_from: None,
                    ..relay()
                },
                "mail_from is required",
            ),
            (
                ServeArgs {
                    smtp_relay: Some("nohost".into()),
                    ..relay()
                },
                "host:port",
            ),
            (
                ServeArgs {
                    smtp_tls: Some("ssl".into()),
                    ..relay()
                },
                "smtp_tls",
            ),
            (
                ServeArgs {
                    mail_from: Some("not an address".into()),
                    ..relay()
                },
                "mail_from",
            ),
            (
                ServeArgs {
                    email_recipients_max: Some(0),
                    ..relay()
                },
                "email_recipients_max",
            ),
        ] {
            let error = resolve(args).expect_err(mentions);
            assert!(error.contains(mentions), "{mentions}: {error}");
        }
    }

    #[test]
    fn flags_beat_file_beats_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("picloud.toml");
        std::fs::write(
            &path,
            "http = \"127.0.0.1:9000\"\nscript_timeout_ms = 900\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path),
            script_timeout_ms: Some(700),
            ..ServeArgs::default()
        };
        let config = ServeConfig::resolve(args).expect("valid");
        assert_eq!(config.http.port(), 9000);
        assert_eq!(config.script_timeout_ms, 700);
        assert_eq!(config.data_dir, PathBuf::from("./picloud-data"));
    }

    #[test]
    fn http_defaults_bound_slow_clients() {
        let config = ServeConfig::resolve(ServeArgs::default()).expect("defaults are valid");
        // A head gets seconds, not minutes; a 1 MiB body at the minimum rate
        // fits in the body timeout; shares leave room for other apps and clients.
        assert!((1_000..=30_000).contains(&config.http_header_timeout_ms));
        assert!((1..=4096).contains(&config.http_body_rate_bytes_min));
        assert!(config.http_body_timeout_ms >= 30_000);
        assert!(config.http_inflight_per_app_max < config.http_inflight_max);
        assert!(config.http_inflight_per_client_max < config.http_inflight_per_app_max);
        assert!(config.http_connections_per_client_max < config.http_connections_max);
        assert!(config.http_body_buffered_bytes_max >= config.deploy_bytes_max);
        let error = ServeConfig::resolve(ServeArgs {
            http_body_buffered_bytes_max: Some(1024),
            ..ServeArgs::default()
        })
        .expect_err("a budget below the largest body");
        assert!(error.to_string().contains("http_body_buffered_bytes_max"));
    }

    #[test]
    fn every_flag_is_a_file_key_and_errors_have_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("picloud.toml");
        std::fs::write(&path, "dev = true\ndata_dir = \"/tmp/x\"\n").expect("write");
        let config = ServeConfig::resolve(ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })
        .expect("valid");
        assert!(config.dev);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        std::fs::write(&path, "http_threads = 2\n  vm_idle_max = [\n").expect("write");
        let error = ServeConfig::resolve(ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        })
        .expect_err("syntax error");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{}:2:", path.display())),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn files_settings_reach_the_cluster_config_and_gc_outlives_uploads() {
        let config = ServeConfig::resolve(ServeArgs {
            file_bytes_max: Some(5 << 20),
            files_gc_grace_ms: Some(3_000),
            files_upload_duration_max_ms: Some(1_500),
            ..ServeArgs::default()
        })
        .expect("valid");
        let files = config.cluster_config().files;
        assert_eq!(files.file_bytes_max, 5 << 20);
        assert_eq!(files.files_gc_grace_ms, 3_000);
        assert_eq!(files.files_upload_duration_max_ms, 1_500);
        // A grace shorter than two upload durations could collect the
        // blocks of an upload that is still allowed to commit.
        let error = ServeConfig::resolve(ServeArgs {
            files_gc_grace_ms: Some(2_999),
            files_upload_duration_max_ms: Some(1_500),
            ..ServeArgs::default()
        })
        .expect_err("grace below twice the upload duration");
        assert!(
            format!("{error:#}").contains("files_gc_grace_ms"),
            "{error:#}"
        );
        let error = ServeConfig::resolve(ServeArgs {
            files_block_streams_per_peer_max: Some(32),
            ..ServeArgs::default()
        })
        .expect_err("block streams would starve Raft");
        assert!(
            error
                .to_string()
                .contains("files_block_streams_per_peer_max")
        );
        let defaults = ServeConfig::resolve(ServeArgs::default()).expect("defaults are valid");
        assert_eq!(
            defaults.cluster_config().files,
            picloud_cluster::FilesConfig::default()
        );
    }

    #[test]
    fn unknown_keys_and_bad_limits_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("picloud.toml");
        std::fs::write(&path, "htp = \"127.0.0.1:9000\"\n").expect("write");
        let error = ServeConfig::resolve(ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .expect_err("unknown key");
        assert!(format!("{error:#}").contains("htp"));
        let error = ServeConfig::resolve(ServeArgs {
            vm_pool_size_max: Some(0),
            ..ServeArgs::default()
        })
        .expect_err("zero pool");
        assert!(error.to_string().contains("vm_pool_size_max"));
    }

    #[test]
    fn smtp_is_off_by_default_and_needs_a_mail_domain() {
        let defaults = ServeConfig::resolve(ServeArgs::default()).expect("defaults are valid");
        assert_eq!(defaults.smtp_listen().expect("listen"), None);
        assert_eq!(defaults.mail_bytes_max, 10 * 1024 * 1024);
        let refused = [
            (Some("127.0.0.1:2525"), None, None, "needs mail_domain"),
            (Some("nowhere"), Some("example.org"), None, "not an ip:port"),
            (
                Some("127.0.0.1:2525"),
                Some("bad domain"),
                None,
                "needs mail_domain",
            ),
            (None, None, Some("cert.pem"), "go together"),
        ];
        for (listen, domain, cert, expected) in refused {
            let error = ServeConfig::resolve(ServeArgs {
                smtp_listen: listen.map(str::to_string),
                mail_domain: domain.map(str::to_string),
                smtp_tls_cert: cert.map(str::to_string),
                ..ServeArgs::default()
            })
            .expect_err(expected);
            assert!(format!("{error:#}").contains(expected), "{error:#}");
        }
        let on = ServeConfig::resolve(ServeArgs {
            smtp_listen: Some("127.0.0.1:2525".into()),
            mail_domain: Some("Example.org".into()),
            ..ServeArgs::default()
        })
        .expect("valid");
        let smtp = on.smtp_config().expect("smtp config");
        assert_eq!(smtp.mail_domain, "example.org");
        assert!(smtp.tls.is_none());
    }
}
