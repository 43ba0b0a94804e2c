//! `picloud serve`: boot, run, shut down.
//!
//! ```text
//!   config ─▶ secrets master key (none yet on a first start with --join) ─▶ Duties
//!          ─▶ Node::start (storage + raft; one-voter cluster on first start;
//!               a join retries until --join-timeout-ms and may bring the master key)
//!               └─ its duties (batcher, peers, membership) supervised at once
//!          ─▶ admin key (first start only) ─▶ realtime, files (+ files_repair,
//!               files_gc duties), users (+ sessions: the session actors) ─▶ Apps (app supervisor) + app_events
//!          ─▶ HTTP gateway (http_accept) ─▶ SMTP listener (smtp_accept, with
//!               --smtp-listen) ─▶ leader duties (triggers, cron)
//!   SIGINT/SIGTERM, or removed from the cluster (exit non-zero) ─▶ stop accepting ─▶ drain (bounded) ─▶ stop duties and actors ─▶ raft shutdown + flush
//! ```
//!
//! Every long-running loop is a supervised duty (`actors::duties`): a panic
//! is logged with the duty's name, counted in
//! `picloud_actor_restarts_total{actor="..."}`, and the duty restarts with
//! backoff and resumes its pending work.
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
use picloud_actors::email::Mailer;
use picloud_actors::files::FileService;
use picloud_actors::host::now_ms;
use picloud_actors::outbound::Outbound;
use picloud_actors::realtime::Realtime;
use picloud_actors::users::UserService;
use picloud_actors::{ActorRestarts, Apps, CpuShares, Duties, LogBook, NodeHost};
use picloud_cluster::{Duty, Node, NodeInfo};
use picloud_storage::{Command, CommandResult};

use crate::config::{ServeArgs, ServeConfig};
use crate::gateway::{self, Gateway};
use crate::keys;
use crate::secret_key::SecretKeys;

/// The file in a data dir that a serving node holds locked and that names its pid.
const DATA_DIR_PID_FILE: &str = "picloud.pid";

/// Takes the data dir for this process: a second `picloud serve` on the
/// same dir gets one line naming the dir and the pid that holds it, instead
/// of sled's lock error repeated through every layer that opens storage.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(DATA_DIR_PID_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = match pid.trim() {
                "" => "another `picloud serve`".to_string(),
                pid => format!("another `picloud serve` (pid {pid})"),
            };
            anyhow::bail!(
                "data dir {} is in use by {holder}: stop it, or give this node its own --data-dir",
                data_dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

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
        .on_thread_start(move || picloud_actors::priority::lower_this_thread_priority(nice))
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
    // Held until serve returns: the lock is the kernel's, so it ends with the process.
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    // A first start with --join and no key configured receives the
    // cluster's keys in the join (stored in the key file before use).
    let joining = !config.join.is_empty()
        && picloud_cluster::identity::load(&config.data_dir)
            .context("reading the node identity")?
            .is_none();
    let configured = SecretKeys::load(&config.data_dir, config.dev, joining)
        .context("loading the secrets master key")?;
    let key_file = config.data_dir.join(crate::secret_key::KEY_FILE_NAME);
    let join_keys = match &configured {
        Some(keys) => picloud_cluster::JoinKeys::Configured {
            key_id: keys.keyring.current().id_hex(),
        },
        None => picloud_cluster::JoinKeys::Receive {
            store: Arc::new({
                let key_file = key_file.clone();
                move |keyring| {
                    crate::secret_key::store_received(&key_file, keyring)
                        .map_err(|e| format!("{e:#}"))
                }
            }),
        },
    };
    let info = NodeInfo {
        http: config.http.to_string(),
        peer: config.peer.to_string(),
    };
    let limits = Arc::new(config.actor_limits());
    let restarts = Arc::new(ActorRestarts::default());
    let duties = Duties::start(limits.clone(), restarts.clone())
        .await
        .context("starting the duty supervisor")?;
    // The master keys also seal the cluster CA key and the join secret
    // before they enter the log.
    let cluster_config = picloud_cluster::ClusterConfig {
        secret_keys: configured.as_ref().map(|keys| keys.keyring.clone()),
        ..config.cluster_config()
    };
    let (node, node_duties) = Node::start_with(
        &config.data_dir,
        info,
        cluster_config,
        &config.storage_options(),
        config.join_target(join_keys)?,
    )
    .await
    .context("starting the raft node")?;
    let secret_keys = Arc::new(match configured {
        Some(keys) => keys,
        None => SecretKeys::joined(
            node.master_keys()
                .context("the join brought no secrets master key")?,
            key_file,
        ),
    });
    secret_keys.log_at_boot();
    // At once: every write waits for the batcher.
    for duty in node_duties {
        duties.supervise(duty);
    }
    duties.supervise(picloud_actors::membership::duty(node.clone()));
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
    check_cluster_secrets(&node);

    let logs = LogBook::new(limits.logs);
    // Other members ask this node for its lines of an app (`picloud logs`).
    node.serve_logs(Arc::new(logs.clone()));
    let realtime = Realtime::start(
        node.clone(),
        Some(secret_keys.keyring.clone()),
        limits.realtime.clone(),
        restarts.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting realtime: {e}"))?;
    duties.supervise(realtime.feed());
    duties.supervise(realtime.pubsub_in());
    // Files sign their URLs with the app's realtime signing key.
    let files = FileService::new(node.clone(), realtime.clone(), config.files_config()?);
    // Repair acts only while this node leads; GC runs on every node.
    duties.supervise(picloud_actors::files::repair_duty(files.clone()));
    duties.supervise(picloud_actors::files::gc_duty(files.clone()));
    let mailer =
        Arc::new(Mailer::new(config.mail_settings()?).context("setting up the smtp relay")?);
    match &mailer.settings().relay {
        Some(relay) => tracing::info!(
            relay = %format!("{}:{}", relay.host, relay.port),
            tls = ?relay.tls,
            from = %mailer.settings().mail_from,
            "outgoing mail goes through the smtp relay"
        ),
        None => tracing::warn!(
            "no --smtp-relay: outgoing mail is CAPTURED, NOT SENT (see `picloud mail list APP`)"
        ),
    }
    let users = UserService::new(node.clone(), config.users_config()?)
        .context("starting the password hash pool")?
        .with_mail(mailer.clone(), &config.public_url()?);
    duties.supervise(users.sessions_duty(restarts.clone()));
    duties.supervise(users.mail_duty());
    let host = Arc::new(
        NodeHost::new(node.clone(), logs.clone(), limits.clone())
            .with_secret_keys(secret_keys.keyring.clone())
            .with_outbound(Arc::new(Outbound::new(config.outbound_config()?)))
            .with_realtime(realtime.clone())
            .with_files(files.clone())
            .with_mail(mailer.clone())
            .with_users(users.clone()),
    );
    let shares = Arc::new(CpuShares::new(config.app_script_threads()));
    let apps = Apps::start(
        node.reader().clone(),
        host,
        limits.clone(),
        scripts.clone(),
        shares.clone(),
        restarts.clone(),
    )
    .await
    .context("starting the app supervisor")?;
    duties.supervise(apps.change_feed());

    // Bound here (so a busy port fails the start), served on the HTTP runtime.
    let listener = std::net::TcpListener::bind(config.http)
        .with_context(|| format!("binding HTTP on {}", config.http))?;
    listener.set_nonblocking(true)?;
    let triggers = Arc::new(picloud_actors::dispatcher::DispatcherStats::default());
    let smtp_files = files.clone();
    let gateway = Gateway::new(
        node.clone(),
        apps.clone(),
        logs,
        config.clone(),
        limits.clone(),
        gateway::Counters {
            triggers: triggers.clone(),
            restarts,
            realtime: realtime.clone(),
            files: files.clone(),
            operators: picloud_actors::operators::OperatorService::new(
                node.clone(),
                users.clone(),
                config.operators_config()?,
            ),
            users,
            shares: shares.clone(),
        },
        secret_keys,
    );
    duties.supervise(Duty::new("dashboard_sampler", {
        let gateway = gateway.clone();
        move || gateway::dashboard::metrics::run(gateway.clone())
    }));
    let router = gateway::router(gateway);
    tracing::info!(http = %config.http, node_id = node.id(), data_dir = %config.data_dir.display(), "picloud serving");
    println!("picloud listening on http://{}", config.http);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Our own accept loop (gateway/server.rs) rather than `axum::serve`: it
    // caps connections below the file-descriptor limit, raised here first.
    let server_limits =
        gateway::server::ServerLimits::new(&config, gateway::server::raise_fd_limit());
    let server = {
        // The listener registers with the runtime that serves it.
        let _guard = http.enter();
        gateway::server::HttpServer::new(listener, router, server_limits, stop_rx)
            .context("serving HTTP")?
    };
    duties.supervise(
        Duty::new("http_accept", {
            let server = server.clone();
            move || server.clone().accept_loop()
        })
        .on(http.clone()),
    );
    // Inbound mail: bound here (a busy port fails the start) like HTTP. It
    // runs on the main runtime: its work is I/O and a proposal, and MIME
    // parsing goes to the blocking pool.
    if let Some(address) = config.smtp_listen()? {
        let smtp =
            crate::smtp::SmtpServer::bind(address, node.clone(), smtp_files, config.smtp_config()?)
                .await
                .with_context(|| format!("binding SMTP on {address}"))?;
        tracing::info!(smtp = %address, mail_domain = %config.mail_domain, "accepting mail");
        duties.supervise(Duty::new("smtp_accept", move || smtp.clone().accept_loop()));
    }
    // Trigger runs execute scripts, on the script runtime like requests. They
    // resume only now that the admin API serves (see the module comment).
    duties.supervise(
        picloud_actors::dispatcher::duty(
            node.clone(),
            apps.clone(),
            limits,
            config.dispatch_limits(),
            triggers,
            shares,
            Some(mailer),
        )
        .on(scripts.clone()),
    );
    // The scheduler only proposes fires; it runs with Raft, on this runtime.
    duties.supervise(picloud_actors::scheduler::duty(
        node.clone(),
        config.schedule_limits(),
    ));
    // A node removed from the cluster stops on its own: one ERROR saying
    // what to do, then the usual shutdown, and a non-zero exit.
    let removed = tokio::select! {
        () = shutdown_signal() => None,
        reason = node.wait_removed() => Some(reason),
    };
    match &removed {
        Some(reason) => tracing::error!(node_id = node.id(), "{reason}"),
        None => tracing::info!("shutting down"),
    }
    let _ = stop_tx.send(true);
    // Realtime streams never end on their own: end them so the drain can.
    realtime.shutdown().await;
    if tokio::time::timeout(SHUTDOWN_DRAIN, server.drain())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {SHUTDOWN_DRAIN:?}; closing them");
    }
    duties.stop();
    apps.stop();
    node.shutdown().await.context("stopping raft")?;
    if removed.is_some() {
        anyhow::bail!(
            "stopped: this node is no longer a member of the cluster (see the error above)"
        );
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Says at start, naming the key ids, when this node's master key cannot
/// open the cluster's CA key or join secret (it could not admit joiners or
/// print the token). A node that just joined receives them through the log
/// a moment later; it is checked once they arrive.
fn check_cluster_secrets(node: &Node) {
    fn report(outcome: Result<bool, picloud_cluster::ClusterError>) {
        if let Err(error) = outcome {
            let code = match &error {
                picloud_cluster::ClusterError::ClusterSecret(sealed) => {
                    picloud_actors::error::seal_code(sealed)
                }
                _ => picloud_lua_sdk::Code::Internal,
            };
            tracing::error!(
                code = code.as_str(),
                %error,
                "this node cannot open the cluster's secrets: it cannot admit joiners or print the join token until it is started with the cluster's {}",
                crate::secret_key::ENV_CURRENT
            );
        }
    }
    let outcome = node.check_cluster_secrets();
    if matches!(outcome, Ok(false)) {
        let node = node.clone();
        tokio::spawn(async move {
            node.cluster_secrets_replicated().await;
            report(node.check_cluster_secrets());
        });
    } else {
        report(outcome);
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
