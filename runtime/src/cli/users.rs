//! `picloud users list|show|create|delete|roles|invite APP ...`: an app's end
//! users through the admin API. A password is read from stdin, never from
//! the command line (argv is visible to every user of the machine), and no
//! command ever prints a password hash (the API never returns one).

use std::io::{IsTerminal, Read};

use clap::Subcommand;
use picloud_actors::users::password::PASSWORD_BYTES_MAX;
use serde_json::{Value, json};

use super::client::{CliError, Client};
use super::escape::{escape, field};
use super::print::{format_ms, print_json};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// APP's users, one page (`--cursor` from the previous one).
    List {
        /// The app's name.
        app: String,
        /// At most this many (1 to 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// Continue after this cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One user of APP.
    Show {
        /// The app's name.
        app: String,
        /// The user's id.
        id: String,
    },
    /// Create a user of APP with the password read from stdin:
    /// `printf %s "$PW" | picloud users create shop ann@example.org --role admin`.
    Create {
        /// The app's name.
        app: String,
        /// The user's email address.
        email: String,
        /// A role to give (repeat for more).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Delete a user of APP (its sessions end).
    Delete {
        /// The app's name.
        app: String,
        /// The user's id.
        id: String,
    },
    /// Invite EMAIL to APP: an invitation is mailed (the app's invite
    /// template); accepting it creates the user, verified, with the roles.
    Invite {
        /// The app's name.
        app: String,
        /// The invited address.
        email: String,
        /// A role the user gets (repeat for more).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Add or remove roles of a user of APP.
    Roles {
        /// The app's name.
        app: String,
        /// The user's id.
        id: String,
        /// A role to add (repeat for more).
        #[arg(long)]
        add: Vec<String>,
        /// A role to remove (repeat for more).
        #[arg(long)]
        remove: Vec<String>,
    },
}

fn segment(text: &str) -> String {
    super::client::encode_path(text).replace('/', "%2F")
}

pub(super) fn read_password() -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Type the password, then Enter and Ctrl-D:");
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(PASSWORD_BYTES_MAX as u64 + 2)
        .read_to_end(&mut bytes)?;
    let mut password = String::from_utf8(bytes)
        .map_err(|_| CliError::new("the password on stdin is not UTF-8"))?;
    if password.ends_with('\n') {
        password.pop();
        if password.ends_with('\r') {
            password.pop();
        }
    }
    Ok(password)
}

fn print_user(user: &Value) {
    println!("id\t{}", field(&user["id"]));
    println!("email\t{}", field(&user["email"]));
    println!("verified\t{}", user["verified"].as_bool().unwrap_or(false));
    let roles: Vec<String> = user["roles"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(field)
        .collect();
    println!("roles\t{}", roles.join(","));
    println!("data\t{}", escape(&user["data"].to_string()));
    println!(
        "created\t{}",
        format_ms(user["created_ms"].as_u64().unwrap_or(0))
    );
    match user["last_login_ms"].as_u64() {
        Some(ms) if ms > 0 => println!("last login\t{}", format_ms(ms)),
        _ => println!("last login\tnever"),
    }
}

pub async fn run(client: &Client, command: UsersCommand, json: bool) -> Result<(), CliError> {
    let body = match command {
        UsersCommand::List { app, limit, cursor } => {
            let mut path = format!("/apps/{}/users", segment(&app));
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(cursor) = cursor {
                query.push(format!("cursor={}", super::client::encode_path(&cursor)));
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let body = client.get(&path).await?;
            if !json {
                let users = body["users"].as_array().map_or(&[][..], Vec::as_slice);
                if users.is_empty() {
                    println!("no users in {}", escape(&app));
                }
                for user in users {
                    println!("{}\t{}", field(&user["id"]), field(&user["email"]));
                }
                if let Some(cursor) = body["cursor"].as_str() {
                    println!("more: --cursor {}", escape(cursor));
                }
                return Ok(());
            }
            body
        }
        UsersCommand::Show { app, id } => {
            client
                .get(&format!("/apps/{}/users/{}", segment(&app), segment(&id)))
                .await?
        }
        UsersCommand::Create { app, email, roles } => {
            let password = read_password()?;
            let request = json!({ "email": email, "password": password, "roles": roles });
            client
                .post(&format!("/apps/{}/users", segment(&app)), &request)
                .await?
        }
        UsersCommand::Invite { app, email, roles } => {
            let request = json!({ "email": email, "roles": roles });
            let body = client
                .post(&format!("/apps/{}/users/invite", segment(&app)), &request)
                .await?;
            if !json {
                println!("invited {} to {}", field(&body["email"]), escape(&app));
                println!(
                    "expires\t{}",
                    format_ms(body["expires_ms"].as_u64().unwrap_or(0))
                );
                println!("link\t{}", field(&body["link"]));
                return Ok(());
            }
            body
        }
        UsersCommand::Delete { app, id } => {
            let body = client
                .delete(&format!("/apps/{}/users/{}", segment(&app), segment(&id)))
                .await?;
            if !json {
                match body["deleted"].as_bool() {
                    Some(true) => println!("deleted user {} of {}", escape(&id), escape(&app)),
                    _ => println!("no user {} in {}", escape(&id), escape(&app)),
                }
                return Ok(());
            }
            body
        }
        UsersCommand::Roles {
            app,
            id,
            add,
            remove,
        } => {
            let request = json!({ "add": add, "remove": remove });
            client
                .post(
                    &format!("/apps/{}/users/{}/roles", segment(&app), segment(&id)),
                    &request,
                )
                .await?
        }
    };
    if json {
        print_json(&body);
    } else {
        print_user(&body);
    }
    Ok(())
}
