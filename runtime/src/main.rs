//! `picloud`: the node (`picloud serve`) and the operator CLI in one binary.
//!
//! # Layout
//!
//! - `config`: serve settings (flags, `PICLOUD_*` env, `--config` file, defaults).
//! - `serve`: boot and shutdown of a node.
//! - `gateway`: HTTP: the server (accept loop, connection caps, timeouts), app
//!   routes, admin API, health; the one error→status map.
//! - `keys`: API key format, hashing, scopes.
//! - `secret_key`: the secrets master key(s) (`--dev`, env, key file).
//! - `cli`: the operator commands, talking to the admin API.

mod cli;
mod config;
mod gateway;
mod keys;
mod secret_key;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "picloud",
    version,
    about = "PiCloud: serverless Lua apps on your Raspberry Pis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: cli::ClientArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(Box<config::ServeArgs>),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> std::process::ExitCode {
    // reqwest is built without a default crypto provider; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_tracing();
            match serve::run(*args) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Client(command) => cli::run(cli.client, command),
    }
}

/// The log filter unless `PICLOUD_LOG` sets one. openraft's own WARNs about
/// messages it drops as stale after an election ("A message will be ignored
/// because vote changed", "membership_log_id changed") and its replication
/// retries to a peer that is down (`cluster status` shows that node as
/// unreachable) mean nothing to an operator: those modules log at error
/// only, and `PICLOUD_LOG=info,openraft=debug` shows everything.
const LOG_FILTER_DEFAULT: &str = "info,openraft=warn,openraft::core::raft_core=error,openraft::engine=error,openraft::replication=error,openraft::raft::responder=error,sled=warn";

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PICLOUD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(LOG_FILTER_DEFAULT));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
