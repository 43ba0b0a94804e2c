//! `picloud realtime rotate-key APP`: a new token signing key for an app.

use clap::Subcommand;

use super::client::{CliError, Client};
use super::escape::escape;
use super::print::report;

#[derive(Debug, Subcommand)]
pub enum RealtimeCommand {
    /// Replace APP's realtime token signing key: tokens signed before are
    /// refused (token_invalid) from then on; streams already open go on.
    #[command(name = "rotate-key")]
    RotateKey {
        /// The app's name.
        app: String,
    },
}

pub async fn run(client: &Client, command: RealtimeCommand, json: bool) -> Result<(), CliError> {
    match command {
        RealtimeCommand::RotateKey { app } => {
            let path = format!(
                "/apps/{}/realtime/rotate-key",
                super::client::encode_path(&app).replace('/', "%2F")
            );
            let body = client
                .send(client.request(reqwest::Method::POST, &path))
                .await?;
            report(json, &body, || {
                format!(
                    "rotated the realtime signing key of {}; tokens signed before are refused",
                    escape(&app)
                )
            });
        }
    }
    Ok(())
}
