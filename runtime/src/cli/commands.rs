//! The CLI's commands and their output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use futures::StreamExt;
use picloud_lua_sdk::Code;
use serde_json::{Value, json};

use super::client::{
    CliError, Client, Credentials, encode_path, load_credentials, save_credentials,
};
use super::escape::{escape, field, json_text};
use super::print::{format_ms, print_json, report};

/// The ids of [`ClientArgs`], which `picloud serve --help` leaves out.
pub const CLIENT_ARG_IDS: &[&str] = &["api_url", "api_key", "json"];

/// Options every client command shares.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The node(s) to talk to, e.g. http://127.0.0.1:8080; a comma list is
    /// tried in order, the next one when a node cannot be reached
    /// (default: the list saved by `picloud login`).
    #[arg(
        long = "url",
        id = "api_url",
        value_name = "URLS",
        global = true,
        env = "PICLOUD_URL"
    )]
    api_url: Option<String>,
    /// The API key (default: the one saved by `picloud login`).
    #[arg(
        long = "key",
        id = "api_key",
        value_name = "KEY",
        global = true,
        env = "PICLOUD_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Check a node URL and key and save them for later commands; with
    /// `--email`, log in as an operator (password from stdin) and save the
    /// session instead.
    Login {
        /// Log in as this operator.
        #[arg(long)]
        email: Option<String>,
    },
    /// End the saved operator session and forget the saved key or session.
    Logout,
    /// Operators: list, add (prints a setup token), setup, remove.
    #[command(subcommand)]
    Admins(super::operators::AdminsCommand),
    /// An app's members (operators with a role): list, add, remove.
    #[command(subcommand)]
    Members(super::operators::MembersCommand),
    /// List, create or delete apps.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Deploy an app folder (picloud.toml + scripts).
    Deploy {
        /// The app folder (the one holding picloud.toml).
        dir: std::path::PathBuf,
    },
    /// Return an app to an earlier version (default: the one before the active one).
    Rollback {
        /// The app's name.
        app: String,
        /// The version to serve (default: the one before the active one).
        #[arg(long)]
        to: Option<u64>,
    },
    /// List an app's deploys.
    Deploys {
        /// The app's name.
        app: String,
    },
    /// Show an app's recent log lines from every node, merged by time.
    Logs {
        /// The app's name.
        app: String,
        /// Keep printing new lines as they come.
        #[arg(long, short)]
        follow: bool,
        /// How many recent lines to show first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Read and write an app's kv data.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Trigger runs that failed for good: list, show, retry, delete.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// Query and edit an app's documents.
    #[command(subcommand)]
    Docs(DocsCommand),
    /// App secrets: set (value from stdin), list, delete; rotate the master key.
    #[command(subcommand)]
    Secrets(super::secrets::SecretsCommand),
    /// Mail captured in dev mode (no --smtp-relay): list, show.
    #[command(subcommand)]
    Mail(super::mail::MailCommand),
    /// An app's end users: list, show, create (password from stdin), delete, roles.
    #[command(subcommand)]
    Users(super::users::UsersCommand),
    /// Realtime: rotate an app's token signing key.
    #[command(subcommand)]
    Realtime(super::realtime::RealtimeCommand),
    /// Shared Lua libraries apps load with `require("@NAME")`.
    #[command(subcommand)]
    Libs(LibsCommand),
    /// An app's files: put, get, ls, rm, and signed URLs.
    #[command(subcommand)]
    Files(super::files::FilesCommand),
    /// Write a backup of the whole cluster (through any node) to a file.
    Backup {
        /// The file to write (written as FILE.partial, then renamed).
        #[arg(long)]
        out: PathBuf,
        /// Leave files' blocks out (their records stay in the state).
        #[arg(long)]
        no_files: bool,
    },
    /// Restore a backup into an empty data dir as a new one-node cluster (offline).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data dir to create (absent or empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum DocsCommand {
    /// Documents of COLL matching QUERY (JSON, e.g. '{"age":{"$gt":30}}'; default all),
    /// one page at a time. Prints {"items", "cursor", "explain"} as JSON.
    Find {
        /// The app's name.
        app: String,
        /// The collection's name.
        coll: String,
        /// A JSON query, e.g. '{"age":{"$gt":30}}' (default: every document).
        query: Option<String>,
        /// Sort field; `-field` sorts descending. Repeat for more fields.
        #[arg(long, allow_hyphen_values = true)]
        sort: Vec<String>,
        /// Most items on one page.
        #[arg(long)]
        limit: Option<usize>,
        /// The previous page's cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Return only these fields (comma-separated), plus _id.
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        /// Say which index (or a collection scan) served the query.
        #[arg(long)]
        explain: bool,
    },
    /// How many documents of COLL match QUERY.
    Count {
        /// The app's name.
        app: String,
        /// The collection's name.
        coll: String,
        /// A JSON query, e.g. '{"age":{"$gt":30}}' (default: every document).
        query: Option<String>,
    },
    /// Print one document.
    Get {
        /// The app's name.
        app: String,
        /// The collection's name.
        coll: String,
        /// The document's _id.
        id: String,
    },
    /// Insert a document (JSON); prints its id.
    Insert {
        /// The app's name.
        app: String,
        /// The collection's name.
        coll: String,
        /// The document, as JSON.
        doc: String,
    },
    /// Delete a document.
    Delete {
        /// The app's name.
        app: String,
        /// The collection's name.
        coll: String,
        /// The document's _id.
        id: String,
    },
    /// The indexes built for APP (declared in picloud.toml).
    Indexes {
        /// The app's name.
        app: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LibsCommand {
    /// Publish the `.lua` files of DIR as the next version of library NAME (admin).
    Publish {
        /// The library's name (apps load it with require("@NAME")).
        name: String,
        /// The folder holding the library's .lua files.
        dir: std::path::PathBuf,
    },
    /// Every library with its kept versions and their times.
    List,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Dead letters of APP: id, trigger, code, error.
    List {
        /// The app's name.
        app: String,
        /// Only ids above this one (the previous page's cursor).
        #[arg(long)]
        after: Option<u64>,
        /// Most items on one page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One dead letter with its event and every attempt.
    Show {
        /// The app's name.
        app: String,
        /// The dead letter's id (from `picloud dead-letters list`).
        id: u64,
    },
    /// Put it back in the outbox with a fresh attempt budget.
    Retry {
        /// The app's name.
        app: String,
        /// The dead letter's id (from `picloud dead-letters list`).
        id: u64,
    },
    /// Delete it.
    Delete {
        /// The app's name.
        app: String,
        /// The dead letter's id (from `picloud dead-letters list`).
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every node: id, addresses, role, applied index, last contact; and
    /// whether one more failure would stop writes. `--json` for scripts.
    Status,
    /// Print the join token alone on stdout (admin only).
    Token,
    /// Remove a (dead) node for good: it stops counting toward quorum and its
    /// id is never reused. A wiped node rejoins with a new id.
    Remove {
        /// The node's id (from `picloud cluster status`).
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    List,
    Create {
        /// The app's name.
        name: String,
    },
    Delete {
        /// The app's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print a value as JSON.
    Get {
        /// The app's name.
        app: String,
        /// The kv key.
        key: String,
        /// Read this node's state without asking the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Set a value. VALUE is JSON (`42`, `"text"`, `{"a":1}`); text that is not JSON is stored as a string.
    Set {
        /// The app's name.
        app: String,
        /// The kv key.
        key: String,
        /// The value: JSON, or text (stored as a string).
        value: String,
        /// Expire after this many seconds.
        #[arg(long)]
        ttl: Option<f64>,
    },
    /// Delete a key.
    Del {
        /// The app's name.
        app: String,
        /// The kv key.
        key: String,
    },
    /// List keys (and values) by prefix, one page at a time.
    List {
        /// The app's name.
        app: String,
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Most items on one page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The previous page's cursor (printed after a full page).
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once.
    Create {
        /// admin, deploy:<app> or read:<app>
        #[arg(long)]
        scope: String,
        /// A label for people, shown by `picloud keys list`.
        #[arg(long)]
        name: Option<String>,
    },
    List,
    Revoke {
        /// The key's id (from `picloud keys list`).
        id: String,
    },
}

pub fn run(args: ClientArgs, command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(args, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Server messages can carry a script's text (deploy errors).
            eprintln!("error: {}", escape(&error.message));
            if let Some(hint) = error.code.and_then(hint) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What an operator can do about a failure, by its code.
fn hint(code: Code) -> Option<&'static str> {
    match code {
        Code::Unauthorized => Some(
            "the key is missing, wrong or revoked: pass --key, or run `picloud login --url URL --key KEY`",
        ),
        Code::SessionInvalid => Some(
            "the operator session ended (logged out, expired, password changed or removed): run `picloud login --email EMAIL`",
        ),
        Code::OutcomeUnknown => Some("the write may have applied: check before you send it again"),
        code if code.status() == 503 => {
            Some("the cluster is busy or electing a leader; retry shortly")
        }
        _ => None,
    }
}

/// The node URLs: `--url`, else the saved ones, else the local default.
fn client_urls(args: &ClientArgs) -> String {
    args.api_url
        .clone()
        .or(load_credentials().url_list())
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string())
}

fn client(args: &ClientArgs) -> Result<Client, CliError> {
    let saved = load_credentials();
    let url = client_urls(args);
    let key = args.api_key.clone().or(saved.key).ok_or_else(|| {
        CliError::new("no API key: run `picloud login --url URL --key KEY` or set PICLOUD_KEY")
    })?;
    Client::new(&url, &key)
}

async fn execute(args: ClientArgs, command: ClientCommand) -> Result<(), CliError> {
    // The commands that run without saved credentials, or change them.
    match &command {
        ClientCommand::Login { email: None } => return login(&args).await,
        ClientCommand::Login { email: Some(email) } => {
            return super::operators::login(&client_urls(&args), email).await;
        }
        ClientCommand::Admins(super::operators::AdminsCommand::Setup { token }) => {
            return super::operators::setup(&client_urls(&args), token, args.json).await;
        }
        ClientCommand::Restore { file, data_dir } => {
            return super::backup::restore(file, data_dir).await;
        }
        ClientCommand::Logout => {
            let saved = load_credentials();
            let client = client(&args).ok();
            return super::operators::logout(client.as_ref(), saved).await;
        }
        _ => {}
    }
    let client = client(&args)?;
    let json = args.json;
    match command {
        ClientCommand::Login { .. } | ClientCommand::Logout => {
            unreachable!("handled above")
        }
        ClientCommand::Admins(command) => super::operators::admins(&client, command, json).await?,
        ClientCommand::Members(command) => {
            super::operators::members(&client, command, json).await?
        }
        ClientCommand::Apps(AppsCommand::List) => {
            let body = client.get("/apps").await?;
            if json {
                print_json(&body);
            } else {
                let apps = items(&body["apps"]);
                if apps.is_empty() {
                    println!("no apps (create one with `picloud apps create NAME`)");
                }
                for app in apps {
                    let version = app["active_version"]
                        .as_u64()
                        .map_or("-".to_string(), |v| format!("v{v}"));
                    // Domains (validated DNS names) follow when the app has any,
                    // so the lines of apps without them read as before.
                    let domains: Vec<&str> = items(&app["domains"])
                        .iter()
                        .filter_map(|domain| domain.as_str())
                        .collect();
                    if domains.is_empty() {
                        println!("{}\t{}", field(&app["name"]), version);
                    } else {
                        println!(
                            "{}\t{}\t{}",
                            field(&app["name"]),
                            version,
                            domains.join(",")
                        );
                    }
                }
            }
        }
        ClientCommand::Apps(AppsCommand::Create { name }) => {
            let body = client.post("/apps", &json!({"name": name})).await?;
            report(json, &body, || format!("created app {}", escape(&name)));
        }
        ClientCommand::Apps(AppsCommand::Delete { name }) => {
            let body = client
                .delete(&format!("/apps/{}", encode_path(&name)))
                .await?;
            report(json, &body, || {
                format!(
                    "deleted app {} and revoked its {} key(s)",
                    escape(&name),
                    body["keys_revoked"].as_u64().unwrap_or(0)
                )
            });
        }
        ClientCommand::Deploy { dir } => {
            let (app, files) = read_app_dir(&dir)?;
            let body = client
                .post(
                    &format!("/apps/{}/deploys", encode_path(&app)),
                    &json!({"files": files.files, "public": files.public}),
                )
                .await?;
            report(json, &body, || {
                format!(
                    "deployed {} version {}",
                    escape(&app),
                    body["version"].as_u64().unwrap_or(0)
                )
            });
        }
        ClientCommand::Rollback { app, to } => {
            let request = match to {
                Some(version) => json!({"to": version}),
                None => json!({}),
            };
            let body = client
                .post(&format!("/apps/{}/rollback", encode_path(&app)), &request)
                .await?;
            report(json, &body, || {
                format!(
                    "{} now serves version {}",
                    escape(&app),
                    body["version"].as_u64().unwrap_or(0)
                )
            });
        }
        ClientCommand::Deploys { app } => {
            let body = client
                .get(&format!("/apps/{}/deploys", encode_path(&app)))
                .await?;
            if json {
                print_json(&body);
            } else {
                let deploys = items(&body["deploys"]);
                if deploys.is_empty() {
                    println!("no deploys of {}", escape(&app));
                }
                for deploy in deploys {
                    let marker = if deploy["active"].as_bool() == Some(true) {
                        "*"
                    } else {
                        " "
                    };
                    println!(
                        "{marker} v{}\t{}\t{} bytes",
                        field(&deploy["version"]),
                        format_ms(deploy["created_ms"].as_u64().unwrap_or(0)),
                        field(&deploy["bundle_bytes"])
                    );
                    print_imports(deploy);
                }
            }
        }
        ClientCommand::Logs { app, follow, limit } => {
            let path = format!("/apps/{}/logs?limit={limit}", encode_path(&app));
            if follow {
                follow_logs(&client, &format!("{path}&follow=true"), json).await?;
            } else {
                let body = client.get(&path).await?;
                if json {
                    print_json(&body);
                } else {
                    for node in items(&body["unavailable"]) {
                        warn_unavailable(node);
                    }
                    let lines = items(&body["lines"]);
                    if lines.is_empty() {
                        println!("no log lines of {}", escape(&app));
                    }
                    for line in lines {
                        print_log_line(line);
                    }
                }
            }
        }
        ClientCommand::Kv(command) => kv(&client, command, json).await?,
        ClientCommand::Keys(command) => keys(&client, command, json).await?,
        ClientCommand::DeadLetters(command) => dead_letters(&client, command, json).await?,
        ClientCommand::Docs(command) => docs(&client, command, json).await?,
        ClientCommand::Secrets(command) => super::secrets::run(&client, command, json).await?,
        ClientCommand::Users(command) => super::users::run(&client, command, json).await?,
        ClientCommand::Realtime(command) => super::realtime::run(&client, command, json).await?,
        ClientCommand::Mail(command) => super::mail::run(&client, command, json).await?,
        ClientCommand::Libs(command) => libs(&client, command, json).await?,
        ClientCommand::Files(command) => super::files::run(&client, command, json).await?,
        ClientCommand::Backup { out, no_files } => {
            super::backup::backup(&client, &out, !no_files).await?
        }
        ClientCommand::Restore { .. } => unreachable!("handled above"),
        ClientCommand::Cluster(ClusterCommand::Remove { id }) => {
            let body = client.delete(&format!("/cluster/nodes/{id}")).await?;
            report(json, &body, || format!("removed node {id}"));
        }
        ClientCommand::Cluster(ClusterCommand::Token) => {
            let body = client.get("/cluster/token").await?;
            if json {
                print_json(&body);
            } else {
                println!("{}", field(&body["token"]));
            }
        }
        ClientCommand::Cluster(ClusterCommand::Status) => {
            let body = client.get("/cluster/status").await?;
            if json {
                print_json(&body);
            } else {
                print_cluster_status(&body);
            }
        }
    }
    Ok(())
}

async fn login(args: &ClientArgs) -> Result<(), CliError> {
    let url = args
        .api_url
        .clone()
        .ok_or_else(|| CliError::new("login needs --url (or PICLOUD_URL)"))?;
    let key = args
        .api_key
        .clone()
        .ok_or_else(|| CliError::new("login needs --key (or PICLOUD_KEY)"))?;
    let client = Client::new(&url, &key)?;
    let whoami = client.get("/whoami").await?;
    let urls = client.bases().to_vec();
    let path = save_credentials(&Credentials {
        urls: urls.clone(),
        url: None,
        key: Some(key),
    })?;
    println!(
        "logged in to {} as key {} (scope {}); saved to {}",
        escape(&urls.join(", ")),
        field(&whoami["key_id"]),
        field(&whoami["scope"]),
        escape(&path.display().to_string())
    );
    Ok(())
}

/// The most bytes `picloud deploy` sends from one folder.
const DEPLOY_DIR_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Reads an app folder: its name and the files a deploy sends (see `collect.rs`).
fn read_app_dir(dir: &Path) -> Result<(String, super::collect::AppFiles), CliError> {
    let manifest_path = dir.join("picloud.toml");
    if !dir.is_dir() {
        return Err(CliError::new(format!(
            "{} is not a folder: deploy takes an app folder (one holding picloud.toml)",
            dir.display()
        )));
    }
    if !manifest_path.exists() {
        return Err(CliError::new(format!(
            "{} is not an app: no picloud.toml (create one: `name = \"myapp\"` and a [[route]] with method, path and script; see examples/hello)",
            dir.display()
        )));
    }
    let manifest = std::fs::read_to_string(&manifest_path)
        .map_err(|e| CliError::new(format!("{}: {e}", manifest_path.display())))?;
    #[derive(serde::Deserialize)]
    struct NameOnly {
        name: String,
    }
    let name: NameOnly = toml::from_str(&manifest).map_err(|error| {
        CliError::new(crate::config::toml_error_text(
            &manifest_path,
            &manifest,
            &error,
        ))
    })?;
    Ok((
        name.name,
        super::collect::app_files(dir, DEPLOY_DIR_BYTES_MAX)?,
    ))
}

/// Every regular, non-hidden file under `dir`, recursively, as UTF-8, by
/// relative path (`/`-separated).
fn read_dir_files(dir: &Path) -> Result<BTreeMap<String, String>, CliError> {
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
                if total > DEPLOY_DIR_BYTES_MAX {
                    return Err(CliError::new(format!(
                        "{} holds more than {DEPLOY_DIR_BYTES_MAX} bytes",
                        dir.display()
                    )));
                }
                let relative = entry
                    .path()
                    .strip_prefix(dir)
                    .map_err(|e| CliError::new(e.to_string()))?
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = std::fs::read_to_string(entry.path()).map_err(|e| {
                    CliError::new(format!(
                        "{}: {e} (app files must be UTF-8 text)",
                        entry.path().display()
                    ))
                })?;
                files.insert(relative, text);
            }
        }
    }
    Ok(files)
}

/// A deploy's import graph under its line in `picloud deploys`.
fn print_imports(deploy: &Value) {
    for (name, version) in deploy["libs"].as_object().into_iter().flatten() {
        println!("    lib @{} v{}", escape(name), field(version));
    }
    for (file, names) in deploy["imports"].as_object().into_iter().flatten() {
        let names: Vec<String> = names
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|name| escape(name).into_owned())
            .collect();
        println!("    {} -> {}", escape(file), names.join(", "));
    }
}

async fn libs(client: &Client, command: LibsCommand, json: bool) -> Result<(), CliError> {
    match command {
        LibsCommand::Publish { name, dir } => {
            if !dir.is_dir() {
                return Err(CliError::new(format!("{}: not a folder", dir.display())));
            }
            // Only Lua files are library content (a README may sit beside them).
            let files: BTreeMap<String, String> = read_dir_files(&dir)?
                .into_iter()
                .filter(|(path, _)| path.ends_with(".lua"))
                .collect();
            let body = client
                .post(
                    &format!("/libs/{}", encode_path(&name)),
                    &json!({ "files": files }),
                )
                .await?;
            report(json, &body, || {
                let name = escape(&name);
                format!(
                    "published library {name} version {} ({} files); pin it with `[libs] {name} = {}`",
                    body["version"].as_u64().unwrap_or(0),
                    body["files"].as_u64().unwrap_or(0),
                    body["version"].as_u64().unwrap_or(0)
                )
            });
        }
        LibsCommand::List => {
            let body = client.get("/libs").await?;
            if json {
                print_json(&body);
                return Ok(());
            }
            let libs = items(&body["libs"]);
            if libs.is_empty() {
                println!("no libraries (publish one with `picloud libs publish NAME DIR`)");
            }
            for lib in libs {
                for version in lib["versions"].as_array().into_iter().flatten() {
                    println!(
                        "{}\tv{}\t{}\t{} bytes",
                        field(&lib["name"]),
                        field(&version["version"]),
                        format_ms(version["created_ms"].as_u64().unwrap_or(0)),
                        field(&version["bytes"])
                    );
                }
            }
        }
    }
    Ok(())
}

/// One log line as text. The message is a script's: escaped, so that it
/// stays on its one line and cannot drive the terminal.
fn print_log_line(line: &Value) {
    println!(
        "{} node-{} {:5} {}",
        format_ms(line["ts_ms"].as_u64().unwrap_or(0)),
        field(&line["node"]),
        field(&line["level"]),
        field(&line["message"])
    );
}

/// A node whose lines are missing (it did not answer in time), on stderr so
/// the lines on stdout stay lines.
fn warn_unavailable(node: &Value) {
    eprintln!(
        "warning: node {} did not answer; its log lines are missing",
        field(node)
    );
}

async fn follow_logs(client: &Client, path: &str, json: bool) -> Result<(), CliError> {
    use std::io::Write;
    let response = client.stream(path).await?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let mut kind = "message";
            let mut data = String::new();
            for line in event.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    kind = value.trim();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            match kind {
                "log" => {
                    if json {
                        println!("{}", json_text(&data));
                    } else if let Ok(line) = serde_json::from_str::<Value>(&data) {
                        print_log_line(&line);
                    }
                }
                "unavailable" => {
                    if let Ok(event) = serde_json::from_str::<Value>(&data) {
                        warn_unavailable(&event["node"]);
                    }
                }
                "lagged" => {
                    if let Ok(event) = serde_json::from_str::<Value>(&data) {
                        eprintln!(
                            "(skipped {} lines of node {}: this reader fell behind)",
                            field(&event["skipped"]),
                            field(&event["node"])
                        );
                    }
                }
                _ => {}
            }
            let _ = std::io::stdout().flush();
        }
    }
    Ok(())
}

async fn kv(client: &Client, command: KvCommand, json: bool) -> Result<(), CliError> {
    match command {
        KvCommand::Get { app, key, stale } => {
            let mut path = format!("/apps/{}/kv/{}", encode_path(&app), encode_path(&key));
            if stale {
                path.push_str("?consistency=stale");
            }
            let body = client.get(&path).await?;
            if json {
                print_json(&body);
            } else {
                println!(
                    "{}",
                    json_text(&serde_json::to_string(&body["value"]).unwrap_or_default())
                );
            }
        }
        KvCommand::Set {
            app,
            key,
            value,
            ttl,
        } => {
            let parsed: Value =
                serde_json::from_str(&value).unwrap_or_else(|_| Value::String(value.clone()));
            let mut path = format!("/apps/{}/kv/{}", encode_path(&app), encode_path(&key));
            if let Some(ttl) = ttl {
                path.push_str(&format!("?ttl={ttl}"));
            }
            let body = client.put(&path, &parsed).await?;
            report(json, &body, || format!("set {}", escape(&key)));
        }
        KvCommand::Del { app, key } => {
            let body = client
                .delete(&format!(
                    "/apps/{}/kv/{}",
                    encode_path(&app),
                    encode_path(&key)
                ))
                .await?;
            report(json, &body, || {
                let key = escape(&key);
                if body["deleted"].as_bool() == Some(true) {
                    format!("deleted {key}")
                } else {
                    format!("{key} did not exist")
                }
            });
        }
        KvCommand::List {
            app,
            prefix,
            limit,
            cursor,
        } => {
            let mut path = format!(
                "/apps/{}/kv?prefix={}&limit={limit}",
                encode_path(&app),
                encode_path(&prefix).replace('/', "%2F")
            );
            if let Some(cursor) = cursor {
                path.push_str(&format!(
                    "&cursor={}",
                    encode_path(&cursor).replace('/', "%2F")
                ));
            }
            let body = client.get(&path).await?;
            if json {
                print_json(&body);
            } else {
                let entries = items(&body["items"]);
                if entries.is_empty() {
                    println!("no keys");
                }
                for item in entries {
                    println!(
                        "{}\t{}",
                        field(&item["key"]),
                        json_text(&serde_json::to_string(&item["value"]).unwrap_or_default())
                    );
                }
                if let Some(cursor) = body["cursor"].as_str() {
                    println!("-- more: --cursor {}", escape(cursor));
                }
            }
        }
    }
    Ok(())
}

async fn keys(client: &Client, command: KeysCommand, json: bool) -> Result<(), CliError> {
    match command {
        KeysCommand::Create { scope, name } => {
            let body = client
                .post("/keys", &json!({"scope": scope, "name": name}))
                .await?;
            report(json, &body, || {
                format!(
                    "created key {} ({})\n{}",
                    field(&body["id"]),
                    field(&body["scope"]),
                    field(&body["key"])
                )
            });
        }
        KeysCommand::List => {
            let body = client.get("/keys").await?;
            if json {
                print_json(&body);
            } else {
                let keys = items(&body["keys"]);
                if keys.is_empty() {
                    println!("no API keys");
                } else {
                    // Last use is the answering node's own record since it
                    // started: a replicated record would cost a log write
                    // per request.
                    println!("ID\tSCOPE\tNAME\tCREATED\tLAST USED (this node)");
                }
                let time = |value: &Value| value.as_u64().map_or("-".to_string(), format_ms);
                for key in keys {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        field(&key["id"]),
                        field(&key["scope"]),
                        field(&key["name"]),
                        time(&key["created_ms"]),
                        time(&key["last_used_ms"])
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let body = client
                .delete(&format!("/keys/{}", encode_path(&id)))
                .await?;
            report(json, &body, || format!("revoked key {}", escape(&id)));
        }
    }
    Ok(())
}

async fn dead_letters(
    client: &Client,
    command: DeadLettersCommand,
    json: bool,
) -> Result<(), CliError> {
    match command {
        DeadLettersCommand::List { app, after, limit } => {
            let mut path = format!("/apps/{}/dead-letters?limit={limit}", encode_path(&app));
            if let Some(after) = after {
                path.push_str(&format!("&after={after}"));
            }
            let body = client.get(&path).await?;
            if json {
                print_json(&body);
            } else {
                let letters = items(&body["items"]);
                if letters.is_empty() {
                    println!("no dead letters");
                }
                for letter in letters {
                    println!(
                        "{}\t{}\t{}\t{}",
                        field(&letter["id"]),
                        field(&letter["trigger"]),
                        field(&letter["code"]),
                        field(&letter["error"])
                    );
                }
                if let Some(cursor) = body["cursor"].as_u64() {
                    println!("(more: --after {cursor})");
                }
            }
        }
        DeadLettersCommand::Show { app, id } => {
            let body = client
                .get(&format!("/apps/{}/dead-letters/{id}", encode_path(&app)))
                .await?;
            print_json(&body);
        }
        DeadLettersCommand::Retry { app, id } => {
            let body = client
                .post(
                    &format!("/apps/{}/dead-letters/{id}/retry", encode_path(&app)),
                    &json!({}),
                )
                .await?;
            report(json, &body, || {
                format!("dead letter {id} of {} is queued again", escape(&app))
            });
        }
        DeadLettersCommand::Delete { app, id } => {
            let body = client
                .delete(&format!("/apps/{}/dead-letters/{id}", encode_path(&app)))
                .await?;
            report(json, &body, || {
                format!("deleted dead letter {id} of {}", escape(&app))
            });
        }
    }
    Ok(())
}

/// The entries of a list in a server answer (none when it is missing).
fn items(list: &Value) -> &[Value] {
    list.as_array().map_or(&[], Vec::as_slice)
}

fn json_arg(what: &str, text: Option<&str>) -> Result<Value, CliError> {
    match text {
        None => Ok(json!({})),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| CliError::new(format!("{what} is not JSON: {e}"))),
    }
}

async fn docs(client: &Client, command: DocsCommand, json: bool) -> Result<(), CliError> {
    let base =
        |app: &str, coll: &str| format!("/apps/{}/docs/{}", encode_path(app), encode_path(coll));
    match command {
        DocsCommand::Find {
            app,
            coll,
            query,
            sort,
            limit,
            cursor,
            fields,
            explain,
        } => {
            let mut request = json!({
                "query": json_arg("the query", query.as_deref())?,
                "sort": sort,
                "explain": explain,
            });
            if let Some(limit) = limit {
                request["limit"] = json!(limit);
            }
            if let Some(cursor) = cursor {
                request["cursor"] = json!(cursor);
            }
            if let Some(fields) = fields {
                request["fields"] = json!(fields);
            }
            let body = client
                .post(&format!("{}/find", base(&app, &coll)), &request)
                .await?;
            print_json(&body);
        }
        DocsCommand::Count { app, coll, query } => {
            let request = json!({ "query": json_arg("the query", query.as_deref())? });
            let body = client
                .post(&format!("{}/count", base(&app, &coll)), &request)
                .await?;
            report(json, &body, || body["count"].to_string());
        }
        DocsCommand::Get { app, coll, id } => {
            let body = client
                .get(&format!("{}/{}", base(&app, &coll), encode_path(&id)))
                .await?;
            print_json(&body);
        }
        DocsCommand::Insert { app, coll, doc } => {
            let doc = json_arg("the document", Some(&doc))?;
            let body = client
                .post(&base(&app, &coll), &json!({ "docs": [doc] }))
                .await?;
            report(json, &body, || field(&body["ids"][0]));
        }
        DocsCommand::Delete { app, coll, id } => {
            let body = client
                .delete(&format!("{}/{}", base(&app, &coll), encode_path(&id)))
                .await?;
            report(json, &body, || {
                let (coll, id) = (escape(&coll), escape(&id));
                if body["deleted"] == json!(true) {
                    format!("deleted {coll}/{id}")
                } else {
                    format!("{coll}/{id} did not exist")
                }
            });
        }
        DocsCommand::Indexes { app } => {
            let body = client
                .get(&format!("/apps/{}/indexes", encode_path(&app)))
                .await?;
            print_json(&body);
        }
    }
    Ok(())
}

/// Each member's secrets master key id, and a warning when they differ.
fn print_key_ids(nodes: &[Value], mismatch: bool) {
    let ids: Vec<String> = nodes
        .iter()
        .map(|node| {
            let key = node["key_id"].as_str().unwrap_or("?");
            format!("node {} {key}", field(&node["id"]))
        })
        .collect();
    println!("secrets keys: {}", ids.join(", "));
    if mismatch {
        println!(
            "WARNING: the nodes hold different secrets master keys: a secret set through one cannot be read through another (secret_key_mismatch); restart the odd ones with the cluster's key"
        );
    }
}

/// A member more than this many entries behind the leader is "catching up".
const STATUS_LAG_CATCHING_UP: u64 = 1_000;

fn print_cluster_status(body: &Value) {
    let text = |value: &Value| match value {
        Value::Null => "-".to_string(),
        other => field(other),
    };
    println!("leader: {}", text(&body["leader"]));
    let ids = |value: &Value| {
        value
            .as_array()
            .map(|ids| ids.iter().map(field).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    // `quorum` is absent from nodes of older builds: say nothing then.
    match body["quorum"].as_bool() {
        Some(true) => println!("quorum: yes"),
        Some(false) => println!(
            "quorum: NO — {} of {} voters unreachable ({}); writes fail with no_leader until a majority is back",
            body["voters_unreachable"].as_array().map_or(0, Vec::len),
            body["voters"].as_array().map_or(0, Vec::len),
            ids(&body["voters_unreachable"])
        ),
        None => {}
    }
    println!(
        "{:<4} {:<22} {:<22} {:<12} {:>10} {:>8} {:>10}  health",
        "id", "http", "peer", "role", "applied", "lag", "contact"
    );
    let nodes = body["nodes"].as_array().cloned().unwrap_or_default();
    let leader_applied = nodes
        .iter()
        .find(|n| n["role"] == "leader")
        .and_then(|n| n["applied_index"].as_u64());
    for node in &nodes {
        let contact = match node["last_contact_ms"].as_u64() {
            Some(ms) => format!("{ms} ms"),
            None => "-".to_string(),
        };
        // Entries this node has still to apply, against the leader.
        let lag = leader_applied
            .zip(node["applied_index"].as_u64())
            .map(|(leader, applied)| leader.saturating_sub(applied));
        let health = match (node["role"].as_str(), lag) {
            (Some("unreachable"), _) => "down",
            (Some("candidate"), _) => "no leader",
            (_, Some(lag)) if lag > STATUS_LAG_CATCHING_UP => "catching up",
            (_, None) => "unknown",
            _ => "ok",
        };
        println!(
            "{:<4} {:<22} {:<22} {:<12} {:>10} {:>8} {:>10}  {}",
            text(&node["id"]),
            text(&node["http"]),
            text(&node["peer"]),
            text(&node["role"]),
            text(&node["applied_index"]),
            lag.map_or("-".to_string(), |lag| lag.to_string()),
            contact,
            health
        );
    }
    if let Some(backlog) = body["trigger_backlog"].as_u64() {
        println!("trigger backlog: {backlog} run(s) pending");
    }
    // Absent from nodes of older builds: say nothing then.
    if let Some(pending) = body["files_repair_pending"].as_u64() {
        println!("files_repair_pending: {pending} block cop(ies) missing");
    }
    print_key_ids(&nodes, body["key_mismatch"].as_bool() == Some(true));
    // Nodes of older builds do not list the voters: count the non-learners.
    let voters = body["voters"].as_array().map_or_else(
        || nodes.iter().filter(|n| n["role"] != "learner").count(),
        Vec::len,
    );
    match (voters, body["failures_tolerated"].as_u64()) {
        _ if body["quorum"] == false => {
            println!(
                "no quorum: writes and linearizable reads stop until a majority of voters is back"
            )
        }
        (1, _) => println!("single node: no redundancy (add nodes with `picloud serve --join`)"),
        (_, Some(0)) => println!("degraded: one more failure stops writes"),
        (_, Some(n)) => println!("healthy: {n} more failure(s) tolerated"),
        _ => {}
    }
}
