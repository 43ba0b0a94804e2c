//! `picloud secrets set|list|delete|rotate-key`. A value is read from stdin,
//! never from the command line (argv is visible to every user of the
//! machine and lands in shell history), and it is never printed.

use std::io::{IsTerminal, Read};

use clap::Subcommand;
use picloud_storage::secrets::SECRET_VALUE_BYTES_MAX;

use super::client::{CliError, Client};
use super::escape::{escape, field};
use super::print::{format_ms, print_json, report};

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set secret NAME of APP to the value read from stdin (one trailing
    /// newline is dropped unless --raw): `printf %s "$TOKEN" | picloud secrets set shop STRIPE_KEY`.
    Set {
        /// The app's name.
        app: String,
        /// The secret's name.
        name: String,
        /// Keep stdin's bytes exactly, trailing newline included.
        #[arg(long)]
        raw: bool,
    },
    /// Names and update times of APP's secrets (values are never shown).
    List {
        /// The app's name.
        app: String,
    },
    /// Delete secret NAME of APP.
    Delete {
        /// The app's name.
        app: String,
        /// The secret's name.
        name: String,
    },
    /// Re-encrypt every secret of every app under the current master key of
    /// the node you talk to (see README "Rotating the master key").
    #[command(name = "rotate-key")]
    RotateKey,
}

/// A secret name as one URL path segment (`/` included, so the server sees
/// and refuses it instead of routing elsewhere).
fn segment(text: &str) -> String {
    super::client::encode_path(text).replace('/', "%2F")
}

fn read_value(name: &str, raw: bool) -> Result<Vec<u8>, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "Type the value of {}, then Enter and Ctrl-D:",
            super::escape::escape(name)
        );
    }
    let mut value = Vec::new();
    // One byte over the limit is enough to know it is too large.
    stdin
        .lock()
        .take(SECRET_VALUE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut value)?;
    if value.len() > SECRET_VALUE_BYTES_MAX {
        return Err(CliError::new(format!(
            "the value on stdin is over {SECRET_VALUE_BYTES_MAX} bytes (secret_too_large)"
        )));
    }
    if !raw && value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    Ok(value)
}

pub async fn run(client: &Client, command: SecretsCommand, json: bool) -> Result<(), CliError> {
    match command {
        SecretsCommand::Set { app, name, raw } => {
            let value = read_value(&name, raw)?;
            let path = format!("/apps/{}/secrets/{}", segment(&app), segment(&name));
            let request = client
                .request(reqwest::Method::PUT, &path)
                .header("content-type", "application/octet-stream")
                .body(value);
            let body = client.send(request).await?;
            report(json, &body, || {
                format!("set secret {} of {}", escape(&name), escape(&app))
            });
        }
        SecretsCommand::List { app } => {
            let body = client
                .get(&format!("/apps/{}/secrets", segment(&app)))
                .await?;
            if json {
                print_json(&body);
            } else {
                let secrets = body["secrets"].as_array().map_or(&[][..], Vec::as_slice);
                if secrets.is_empty() {
                    println!("no secrets in {}", escape(&app));
                }
                for secret in secrets {
                    println!(
                        "{}\t{}",
                        field(&secret["name"]),
                        format_ms(secret["updated_ms"].as_u64().unwrap_or(0))
                    );
                }
            }
        }
        SecretsCommand::Delete { app, name } => {
            let body = client
                .delete(&format!(
                    "/apps/{}/secrets/{}",
                    segment(&app),
                    segment(&name)
                ))
                .await?;
            report(json, &body, || {
                format!("deleted secret {} of {}", escape(&name), escape(&app))
            });
        }
        SecretsCommand::RotateKey => {
            let body = client
                .send(client.request(reqwest::Method::POST, "/secrets/rotate-key"))
                .await?;
            let count = |field: &str| body[field].as_u64().unwrap_or(0);
            report(json, &body, || {
                format!(
                    "re-encrypted {} secret(s) under key {}; {} already current; {} changed meanwhile (left as set)\n\
                     re-encrypted {} realtime signing key(s); {} already current; {} changed meanwhile",
                    count("rekeyed"),
                    field(&body["key_id"]),
                    count("already_current"),
                    count("changed_meanwhile"),
                    count("realtime_keys_rekeyed"),
                    count("realtime_keys_already_current"),
                    count("realtime_keys_changed_meanwhile")
                )
            });
            let unreadable = body["unreadable"].as_array().cloned().unwrap_or_default();
            if !unreadable.is_empty() {
                for secret in &unreadable {
                    eprintln!(
                        "cannot re-encrypt {}/{}: {}",
                        field(&secret["app"]),
                        field(&secret["name"]),
                        field(&secret["message"])
                    );
                }
                return Err(CliError::new(format!(
                    "{} secret(s) could not be opened with this node's keys (secret_key_mismatch): give it the old key as PICLOUD_SECRET_KEY_PREVIOUS and run rotate-key again",
                    unreadable.len()
                )));
            }
        }
    }
    Ok(())
}
