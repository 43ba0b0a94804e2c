//! `picloud mail list|show`: mail captured in dev mode (a node started
//! without `--smtp-relay` keeps what scripts send instead of sending it).

use clap::Subcommand;

use super::client::{CliError, Client, encode_path};
use super::escape::{escape, field};
use super::print::{format_ms, print_json};

/// Captured mails one `list` request asks for.
const LIST_PAGE_LIMIT: usize = 100;

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// APP's captured mail, newest first: id, time, to, subject.
    List {
        /// The app's name.
        app: String,
        /// How many to show.
        #[arg(long, default_value_t = LIST_PAGE_LIMIT)]
        limit: usize,
    },
    /// One captured mail: headers, text, html, attachment names and sizes.
    Show {
        /// The app's name.
        app: String,
        /// The mail's id (as `mail list` shows it, or the delivery id).
        id: String,
    },
}

fn segment(text: &str) -> String {
    encode_path(text).replace('/', "%2F")
}

fn addresses(value: &serde_json::Value) -> String {
    value
        .as_array()
        .map(|list| list.iter().map(field).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

pub async fn run(client: &Client, command: MailCommand, json: bool) -> Result<(), CliError> {
    match command {
        MailCommand::List { app, limit } => {
            let body = client
                .get(&format!("/apps/{}/mail?limit={limit}", segment(&app)))
                .await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            let items = body["items"].as_array().map_or(&[][..], Vec::as_slice);
            if items.is_empty() {
                println!("no captured mail in {}", escape(&app));
            }
            for mail in items {
                println!(
                    "{}\t{}\t{}\t{}",
                    field(&mail["id"]),
                    format_ms(mail["captured_ms"].as_u64().unwrap_or(0)),
                    addresses(&mail["to"]),
                    field(&mail["subject"]),
                );
            }
        }
        MailCommand::Show { app, id } => {
            let body = client
                .get(&format!("/apps/{}/mail/{}", segment(&app), segment(&id)))
                .await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            println!("From: {}", field(&body["from"]));
            for (name, key) in [("To", "to"), ("Cc", "cc"), ("Bcc", "bcc")] {
                let list = addresses(&body[key]);
                if !list.is_empty() {
                    println!("{name}: {list}");
                }
            }
            if !body["reply_to"].is_null() {
                println!("Reply-To: {}", field(&body["reply_to"]));
            }
            println!("Subject: {}", field(&body["subject"]));
            println!(
                "Date: {}",
                format_ms(body["captured_ms"].as_u64().unwrap_or(0))
            );
            for attachment in body["attachments"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
            {
                println!(
                    "Attachment: {} ({}, {} bytes)",
                    field(&attachment["filename"]),
                    field(&attachment["content_type"]),
                    attachment["size"].as_u64().unwrap_or(0)
                );
            }
            if !body["text"].is_null() {
                println!("\n--- text ---\n{}", field(&body["text"]));
            }
            if !body["html"].is_null() {
                println!("\n--- html ---\n{}", field(&body["html"]));
            }
        }
    }
    Ok(())
}
