//! `picloud login --email`, `logout`, `admins add|setup|list|remove` and
//! `members list|add|remove APP ...`: operators, the people who run
//! PiCloud, and the apps they are members of. Passwords are read from
//! stdin (or typed at a terminal), never from the command line.
//!
//! A session token (`pcs_...`) is saved where `picloud login --key` saves
//! a key, so every other command uses it the same way.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{CliError, Client, Credentials, save_credentials};
use super::escape::{escape, field};
use super::print::{format_ms, print_json};
use super::users::read_password;

#[derive(Debug, Subcommand)]
pub enum AdminsCommand {
    /// Every operator with its admin flag and memberships.
    List,
    /// Create an operator and print its one-time setup token.
    Add {
        /// The operator's email address.
        email: String,
        /// Make the operator a cluster admin.
        #[arg(long)]
        admin: bool,
    },
    /// Set your password with the setup token `admins add` printed
    /// (password from stdin): `printf %s "$PW" | picloud admins setup TOKEN`.
    Setup {
        /// The setup token.
        token: String,
    },
    /// Remove an operator: its memberships and sessions end.
    Remove {
        /// The operator's email address.
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// APP's members and their roles.
    List {
        /// The app's name.
        app: String,
    },
    /// Make an operator a member of APP, or change its role.
    Add {
        /// The app's name.
        app: String,
        /// The operator's email address.
        email: String,
        /// owner, developer or viewer.
        #[arg(long, default_value = "developer")]
        role: String,
    },
    /// Remove a member of APP (never its last owner).
    Remove {
        /// The app's name.
        app: String,
        /// The operator's email address.
        email: String,
    },
}

fn segment(text: &str) -> String {
    super::client::encode_path(text).replace('/', "%2F")
}

/// `picloud login --email EMAIL`: a session for the operator, saved like
/// a key. Logging in needs no credentials, so the client carries none.
pub async fn login(urls: &str, email: &str) -> Result<(), CliError> {
    let password = read_password()?;
    let client = Client::new(urls, "")?;
    let body = client
        .post("/login", &json!({"email": email, "password": password}))
        .await?;
    let token = body["token"]
        .as_str()
        .ok_or_else(|| CliError::new("the server answered a login without a token"))?;
    let urls = client.bases().to_vec();
    let path = save_credentials(&Credentials {
        urls: urls.clone(),
        url: None,
        key: Some(token.to_string()),
    })?;
    let admin = if body["operator"]["admin"].as_bool() == Some(true) {
        " (admin)"
    } else {
        ""
    };
    println!(
        "logged in to {} as {}{admin}; saved to {}",
        escape(&urls.join(", ")),
        field(&body["operator"]["email"]),
        escape(&path.display().to_string())
    );
    Ok(())
}

/// `picloud logout`: ends the saved session on the server (a key has none)
/// and forgets the saved key or token, keeping the node URLs.
pub async fn logout(client: Option<&Client>, mut saved: Credentials) -> Result<(), CliError> {
    // A session the server already ended (expired, revoked) is forgotten
    // all the same: that is what the user asked for.
    if let Some(client) = client
        && let Err(error) = client.post("/logout", &json!({})).await
    {
        eprintln!(
            "warning: the server did not end the session: {}",
            escape(&error.message)
        );
    }
    saved.key = None;
    let path = save_credentials(&saved)?;
    println!(
        "logged out; removed the saved credentials from {}",
        escape(&path.display().to_string())
    );
    Ok(())
}

fn print_operator(operator: &Value) {
    let apps: Vec<String> = operator["apps"]
        .as_object()
        .map(|apps| {
            apps.iter()
                .map(|(app, role)| format!("{}:{}", escape(app), field(role)))
                .collect()
        })
        .unwrap_or_default();
    let last = match operator["last_login_ms"].as_u64() {
        Some(ms) if ms > 0 => format_ms(ms),
        _ => "never".into(),
    };
    println!(
        "{}\t{}\t{}\tlast login {last}",
        field(&operator["email"]),
        if operator["admin"].as_bool() == Some(true) {
            "admin"
        } else {
            "-"
        },
        if apps.is_empty() {
            "-".to_string()
        } else {
            apps.join(",")
        },
    );
}

/// `admins setup` runs before its operator has any credentials.
pub async fn setup(urls: &str, token: &str, json: bool) -> Result<(), CliError> {
    let password = read_password()?;
    let client = Client::new(urls, "")?;
    let body = client
        .post(
            "/admins/setup",
            &json!({"token": token, "password": password}),
        )
        .await?;
    if json {
        print_json(&body);
    } else {
        println!("password set; log in with `picloud login --email EMAIL`");
    }
    Ok(())
}

pub async fn admins(client: &Client, command: AdminsCommand, json: bool) -> Result<(), CliError> {
    let body = match command {
        AdminsCommand::List => {
            let body = client.get("/admins").await?;
            if !json {
                for operator in body["operators"].as_array().map_or(&[][..], Vec::as_slice) {
                    print_operator(operator);
                }
                return Ok(());
            }
            body
        }
        AdminsCommand::Add { email, admin } => {
            let body = client
                .post("/admins", &json!({"email": email, "admin": admin}))
                .await?;
            if !json {
                println!(
                    "added operator {}{}; the setup token below works once, until {}:",
                    field(&body["email"]),
                    if admin { " (admin)" } else { "" },
                    format_ms(body["expires_ms"].as_u64().unwrap_or(0))
                );
                println!("{}", field(&body["setup_token"]));
                println!(
                    "they set a password with: picloud admins setup --url {} TOKEN",
                    escape(client.bases().first().map_or("URL", String::as_str))
                );
                return Ok(());
            }
            body
        }
        AdminsCommand::Setup { .. } => {
            return Err(CliError::new("admins setup runs without credentials"));
        }
        AdminsCommand::Remove { email } => {
            let body = client
                .delete(&format!("/admins/{}", segment(&email)))
                .await?;
            if !json {
                println!("removed operator {}", escape(&email));
                return Ok(());
            }
            body
        }
    };
    print_json(&body);
    Ok(())
}

pub async fn members(client: &Client, command: MembersCommand, json: bool) -> Result<(), CliError> {
    let body = match command {
        MembersCommand::List { app } => {
            let body = client
                .get(&format!("/apps/{}/members", segment(&app)))
                .await?;
            if !json {
                let members = body["members"].as_array().map_or(&[][..], Vec::as_slice);
                if members.is_empty() {
                    println!("no members in {}", escape(&app));
                }
                for member in members {
                    println!("{}\t{}", field(&member["email"]), field(&member["role"]));
                }
                return Ok(());
            }
            body
        }
        MembersCommand::Add { app, email, role } => {
            let body = client
                .put(
                    &format!("/apps/{}/members/{}", segment(&app), segment(&email)),
                    &json!({ "role": role }),
                )
                .await?;
            if !json {
                println!(
                    "{} is {} of {}",
                    escape(&email),
                    field(&body["role"]),
                    escape(&app)
                );
                return Ok(());
            }
            body
        }
        MembersCommand::Remove { app, email } => {
            let body = client
                .delete(&format!(
                    "/apps/{}/members/{}",
                    segment(&app),
                    segment(&email)
                ))
                .await?;
            if !json {
                match body["removed"].as_bool() {
                    Some(true) => println!("removed {} from {}", escape(&email), escape(&app)),
                    _ => println!("{} was no member of {}", escape(&email), escape(&app)),
                }
                return Ok(());
            }
            body
        }
    };
    print_json(&body);
    Ok(())
}
