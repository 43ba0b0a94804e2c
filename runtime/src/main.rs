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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PICLOUD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
