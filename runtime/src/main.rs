//! `picloud`: the node (`picloud serve`) and the operator CLI in one binary.
//!
//! # Layout
//!
//! - `config`: serve settings (flags, `PICLOUD_*` env, `--config` file, defaults).
//! - `serve`: boot and shutdown of a node.
//! - `gateway`: HTTP: the server (accept loop, connection caps, timeouts), app
//!   routes, admin API, health, realtime streams, files (signed URLs and the
//!   streamed admin routes); the one error→status map.
//! - `smtp`: the inbound SMTP listener (`--smtp-listen`): the accept loop,
//!   the pure session planner, recipient routing, MIME parsing.
//! - `keys`: API key format, hashing, scopes.
//! - `secret_key`: the secrets master key(s) (`--dev`, env, key file).
//! - `cli`: the operator commands, talking to the admin API.

mod cli;
mod config;
mod gateway;
mod keys;
mod secret_key;
mod serve;
mod smtp;

use std::io::IsTerminal;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    #[command(after_help = SERVE_ENVIRONMENT)]
    Serve(Box<config::ServeArgs>),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// What `picloud serve` reads from the environment besides its flags' own
/// `PICLOUD_<NAME>` variables.
const SERVE_ENVIRONMENT: &str = "\
Environment (besides each flag's PICLOUD_<NAME>):
  PICLOUD_ADMIN_KEY            the first admin API key, on a first start (default: generated, saved to <data-dir>/admin.key)
  PICLOUD_SECRET_KEY           the secrets master key, base64 of 32 bytes (default: <data-dir>/secret.key, created on first start)
  PICLOUD_SECRET_KEY_PREVIOUS  earlier master keys still accepted for reading, comma-separated
  PICLOUD_LOG                  log filter, e.g. debug or info,picloud_cluster=debug (default: info,openraft=warn,sled=warn)
  PICLOUD_DEV_MODE=true        the same as --dev";

/// The clap command, with what derive cannot say: serve's defaults in its
/// help (its settings are optional so that a config file can fill them), and
/// without the client-only global flags that mean nothing to a node.
fn command() -> clap::Command {
    let command = Cli::command();
    // clap copies a global flag into each subcommand that has no argument of
    // that id yet, so serve gets hidden copies of its own instead.
    let client_args: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|arg| cli::CLIENT_ARG_IDS.contains(&arg.get_id().as_str()))
        .cloned()
        .collect();
    command.mut_subcommand("serve", |mut serve| {
        for (id, default) in config::serve_defaults() {
            serve = serve.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {default}]"))
            });
        }
        for arg in client_args {
            serve = serve.arg(arg.hide(true));
        }
        serve
    })
}

fn main() -> std::process::ExitCode {
    // reqwest is built without a default crypto provider; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
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
        // Colour codes only for a person at a terminal, never into a file or pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_a_description() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let described = arg
                    .get_help()
                    .is_some_and(|help| !help.to_string().is_empty());
                if !described {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &format!("{path} {}", sub.get_name()), missing);
                }
            }
        }
        let mut missing = Vec::new();
        // The derived command: the defaults `command()` appends are no description.
        let mut derived = Cli::command();
        derived.build();
        walk(&derived, "picloud", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without a description: {missing:?}"
        );
    }

    #[test]
    fn serve_help_shows_defaults_and_env_but_not_client_flags() {
        let mut command = command();
        let serve = command.find_subcommand_mut("serve").expect("serve");
        let help = serve.render_long_help().to_string();
        assert!(help.contains("[default: ./picloud-data]"), "{help}");
        assert!(help.contains("PICLOUD_HTTP"), "{help}");
        for env in [
            "PICLOUD_ADMIN_KEY",
            "PICLOUD_SECRET_KEY",
            "PICLOUD_LOG",
            "PICLOUD_DEV_MODE",
        ] {
            assert!(help.contains(env), "{env} missing:\n{help}");
        }
        assert!(!help.contains("--url"), "{help}");
        assert!(!help.contains("--json"), "{help}");
    }
}
