//! `picloud serve`: boot, run, shut down.
//!
//! ```text
//!   config ─▶ secrets master key ─▶ Node::start (storage + raft; one-voter cluster on first start)
//!          ─▶ admin key (first start only) ─▶ Apps (supervisor) ─▶ HTTP gateway
//!   SIGINT/SIGTERM ─▶ stop accepting ─▶ drain (bounded) ─▶ stop actors ─▶ raft shutdown + flush
//! ```
//!
//! Three tokio runtimes, so that no Lua ever runs on a thread something
//! else must answer from:
//!
//! * the HTTP runtime (`http_threads`) accepts connections, parses requests
//!   and answers health and the admin API;
//! * the script runtime (`script_threads`) runs every script: request
//!   handlers (one hop per request, see `Apps::invoke`), trigger runs and the
//!   construction of VMs (a script's top level);
//! * the main runtime runs Raft, storage and the actors.
//!
//! A script burning its CPU budget therefore never sits on a thread that
//! Raft's heartbeats or `/_/health` need; the kernel shares the cores between
//! the runtimes' threads.
//!
//! The trigger dispatcher and the cron scheduler start only once the HTTP
//! listener serves, so an operator can always reach the admin API, even when
//! a trigger keeps failing right after every restart.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use picloud_actors::host::now_ms;
use picloud_actors::{Apps, CpuShares, LogBook, NodeHost};
use picloud_cluster::{Node, NodeInfo};
use picloud_storage::{Command, CommandResult};

use crate::config::{ServeArgs, ServeConfig};
use crate::gateway::{self, Gateway};
use crate::keys;
use crate::secret_key::SecretKeys;

/// The id of the node that created the cluster.
const FIRST_NODE_ID: u64 = 1;

/// How long open connections (log followers, slow scripts) may hold shutdown up.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::resolve(args)?;
    let http = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads())
        .thread_name("picloud-http")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let nice = config.script_threads_nice;
    let scripts = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.script_threads())
        .thread_name("picloud-lua")
        .on_thread_start(move || lower_this_thread_priority(nice))
        .enable_all()
        .build()
        .context("starting the script runtime")?;
    let main = tokio::runtime::Builder::new_multi_thread()
        .thread_name("picloud")
        .enable_all()
        .build()
        .context("starting the main runtime")?;
    let result = main.block_on(serve(
        config,
        http.handle().clone(),
        scripts.handle().clone(),
    ));
    http.shutdown_timeout(Duration::from_secs(1));
    scripts.shutdown_timeout(Duration::from_secs(1));
    main.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(
    config: ServeConfig,
    http: tokio::runtime::Handle,
    scripts: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let secret_keys = Arc::new(
        SecretKeys::load(&config.data_dir, config.dev).context("loading the secrets master key")?,
    );
    secret_keys.log_at_boot();
    let info = NodeInfo {
        http: config.http.to_string(),
        peer: config.peer.to_string(),
    };
    let (node, duties) = Node::start_with(
        &config.data_dir,
        info,
        config.cluster_config(),
        &config.storage_options(),
        config.join_target()?,
    )
    .await
    .context("starting the raft node")?;
    // Not supervised yet (the next commit gives them a supervisor).
    for duty in duties {
        duty.detach();
    }
    // Only the node that created the cluster makes the first admin key and
    // the cluster secrets; joined nodes receive them through the log.
    if node.id() == FIRST_NODE_ID {
        bootstrap_admin_key(&node, &config.data_dir).await?;
        if node
            .ensure_cluster_secrets(now_ms())
            .await
            .context("storing the cluster CA and join secret")?
            && let Some(token) = node.join_token()?
        {
            println!(
                "join token (for `picloud serve --join`; also `picloud cluster token`): {token}"
            );
        }
    }

    secret_keys
        .check_stored(node.reader())
        .context("checking stored secrets against the master key")?;

    let limits = Arc::new(config.actor_limits());
    let logs = LogBook::new(limits.logs);
    let host = Arc::new(
        NodeHost::new(node.clone(), logs.clone(), limits.clone())
            .with_secret_keys(secret_keys.keyring.clone()),
    );
    let shares = Arc::new(CpuShares::new(config.app_script_threads()));
    let apps = Apps::start(
        node.reader().clone(),
        host.clone(),
        limits.clone(),
        scripts.clone(),
        shares.clone(),
    )
    .await
    .context("starting the app supervisor")?;

    // Bound here (so a busy port fails the start), served on the HTTP runtime.
    let listener = std::net::TcpListener::bind(config.http)
        .with_context(|| format!("binding HTTP on {}", config.http))?;
    listener.set_nonblocking(true)?;
    let triggers = Arc::new(picloud_actors::dispatcher::DispatcherStats::default());
    let router = gateway::router(Gateway::new(
        node.clone(),
        apps.clone(),
        logs,
        config.clone(),
        limits.clone(),
        triggers.clone(),
        secret_keys,
    ));
    tracing::info!(http = %config.http, node_id = node.id(), data_dir = %config.data_dir.display(), "picloud serving");
    println!("picloud listening on http://{}", config.http);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Our own accept loop (gateway/server.rs) rather than `axum::serve`: it
    // caps connections below the file-descriptor limit, raised here first.
    let server_limits =
        gateway::server::ServerLimits::new(&config, gateway::server::raise_fd_limit());
    let server = http.spawn(gateway::server::run(
        listener,
        router,
        server_limits,
        stop_rx,
    ));
    // Trigger runs execute scripts, on the script runtime like requests. They
    // resume only now that the admin API serves (see the module comment).
    {
        let _guard = scripts.enter();
        picloud_actors::dispatcher::spawn(
            node.clone(),
            host,
            limits,
            config.dispatch_limits(),
            triggers,
            shares,
        );
    }
    // The scheduler only proposes fires; it runs with Raft, on this runtime.
    picloud_actors::scheduler::spawn(node.clone(), config.schedule_limits());
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_DRAIN, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "HTTP server ended with an error"),
        Ok(Err(error)) => tracing::warn!(%error, "HTTP server task failed"),
        Err(_) => tracing::warn!("connections still open after {SHUTDOWN_DRAIN:?}; closing them"),
    }
    apps.stop();
    node.shutdown().await.context("stopping raft")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Gives the calling thread (a script thread) a nice value of `nice`, so that
/// when scripts saturate the cores the kernel still runs the HTTP, Raft and
/// storage threads first: health, the admin API, heartbeats and other apps'
/// request parsing keep their latency while a heavy app burns its share.
/// Raising one's own nice value needs no privilege; failing is only logged.
fn lower_this_thread_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), nice) {
        tracing::warn!(%error, nice, "cannot lower a script thread's priority");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops this node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// On the first start of a cluster: create the admin key, keep it in
/// `<data-dir>/admin.key` (mode 0600) and print it once. `PICLOUD_ADMIN_KEY`
/// chooses the value instead. A crash between writing the file and committing
/// the key is repaired on the next start from the file.
async fn bootstrap_admin_key(node: &Node, data_dir: &Path) -> anyhow::Result<()> {
    if !node.reader().keys()?.is_empty() {
        return Ok(());
    }
    let path = data_dir.join("admin.key");
    let from_env = std::env::var("PICLOUD_ADMIN_KEY")
        .ok()
        .filter(|v| !v.is_empty());
    let from_file = std::fs::read_to_string(&path)
        .ok()
        .map(|t| t.trim().to_string());
    let key = match from_file.as_deref().or(from_env.as_deref()) {
        Some(token) => keys::from_token(token).map_err(anyhow::Error::msg)?,
        None => keys::generate(),
    };
    if from_file.is_none() {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(file, "{}", key.token)?;
        file.sync_all()?;
    }
    let result = node
        .write(Command::KeyCreate {
            id: key.id.clone(),
            name: "admin".to_string(),
            scope: "admin".to_string(),
            secret_hash: key.secret_hash.clone(),
            now_ms: now_ms(),
            // The admin scope names no app: there is nothing to check, and the
            // entry stays the plain `KeyCreate` it always was.
            scoped_app_must_exist: false,
        })
        .await
        .context("storing the admin key")?;
    if let CommandResult::Rejected(error) = result {
        anyhow::bail!("storing the admin key: {error}");
    }
    println!(
        "admin key (shown once; also in {}): {}",
        path.display(),
        key.token
    );
    Ok(())
}
