//! `picloud files put|get|ls|rm|url`: an app's files, streamed both ways
//! (never read whole into memory), with a progress line on a terminal.
//!
//! Reads and deletes fail over to the next node like other commands. An
//! upload is sent to the first node that answers `/_/health` and never
//! repeated elsewhere once its body started; `url` names the node it
//! signed through.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Subcommand;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{CliError, Client, encode_path};
use super::escape::{escape, field};
use super::print::{format_ms, print_json, report};

/// Transfers at least this large show a progress line (on a terminal).
const PROGRESS_BYTES_MIN: u64 = 8 * 1024 * 1024;

/// The progress line is rewritten at most this often.
const PROGRESS_PERIOD: Duration = Duration::from_millis(250);

/// Bytes read from a local file per chunk of an upload.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Files one `ls` request asks for (it follows the cursor to the end).
const LS_PAGE_LIMIT: usize = 1_000;

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Upload LOCAL to APP as PATH (default: LOCAL's file name), streamed.
    Put {
        /// The app's name.
        app: String,
        /// The local file to upload.
        local: PathBuf,
        /// The file's path in the app (default: LOCAL's file name).
        path: Option<String>,
        /// The Content-Type to store (default: by extension, else
        /// application/octet-stream).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Download PATH of APP to LOCAL (default: PATH's file name), or to
    /// stdout with `-`.
    Get {
        /// The app's name.
        app: String,
        /// The file's path in the app.
        path: String,
        /// Where to write it; `-` is stdout.
        local: Option<String>,
    },
    /// List APP's files (under PREFIX): size, last change, content type, path.
    Ls {
        /// The app's name.
        app: String,
        /// Only paths starting with this.
        prefix: Option<String>,
    },
    /// Delete PATH of APP.
    Rm {
        /// The app's name.
        app: String,
        /// The file's path in the app.
        path: String,
    },
    /// Print a signed URL of PATH (GET by default) on the node this CLI
    /// talks to.
    Url {
        /// The app's name.
        app: String,
        /// The file's path in the app.
        path: String,
        /// A PUT (upload) URL instead of a GET one.
        #[arg(long)]
        put: bool,
        /// Seconds the URL stays valid (default 1 hour, at most 7 days).
        #[arg(long)]
        ttl: Option<f64>,
        /// A PUT URL accepts at most this many bytes.
        #[arg(long)]
        max_bytes: Option<u64>,
        /// A PUT URL accepts only this Content-Type.
        #[arg(long)]
        content_type: Option<String>,
    },
}

/// `/apps/<app>/files[/<path>]` with both parts encoded.
fn files_path(app: &str, path: Option<&str>) -> String {
    let app = encode_path(app).replace('/', "%2F");
    match path {
        Some(path) => format!("/apps/{app}/files/{}", encode_path(path)),
        None => format!("/apps/{app}/files"),
    }
}

pub async fn run(client: &Client, command: FilesCommand, json: bool) -> Result<(), CliError> {
    match command {
        FilesCommand::Put {
            app,
            local,
            path,
            content_type,
        } => put(client, &app, &local, path, content_type, json).await,
        FilesCommand::Get { app, path, local } => get(client, &app, &path, local).await,
        FilesCommand::Ls { app, prefix } => ls(client, &app, prefix.as_deref(), json).await,
        FilesCommand::Rm { app, path } => {
            let body = client.delete(&files_path(&app, Some(&path))).await?;
            if body["deleted"].as_bool() != Some(true) {
                return Err(CliError::new(format!(
                    "app {} has no file {}",
                    escape(&app),
                    escape(&path)
                )));
            }
            report(json, &body, || format!("deleted {}", escape(&path)));
            Ok(())
        }
        FilesCommand::Url {
            app,
            path,
            put,
            ttl,
            max_bytes,
            content_type,
        } => {
            if !put && (max_bytes.is_some() || content_type.is_some()) {
                return Err(CliError::new(
                    "--max-bytes and --content-type apply to upload URLs: add --put",
                ));
            }
            let base = client.reachable_base().await?;
            let mut request = json!({"path": path, "method": if put { "PUT" } else { "GET" }});
            if let Some(ttl) = ttl {
                request["ttl"] = json!(ttl);
            }
            if let Some(max) = max_bytes {
                request["max_bytes"] = json!(max);
            }
            if let Some(content_type) = content_type {
                request["content_type"] = json!(content_type);
            }
            let path = format!("/apps/{}/file-urls", encode_path(&app).replace('/', "%2F"));
            let response = client
                .response_once(
                    client
                        .request_to(base, reqwest::Method::POST, &path)
                        .json(&request),
                )
                .await?;
            let body: Value = response.json().await?;
            let url = format!("{base}{}", body["url"].as_str().unwrap_or_default());
            report(json, &json!({"url": url}), || escape(&url).into_owned());
            Ok(())
        }
    }
}

/// The content type `put` sends when none is given: by extension, as the
/// gateway serves an app's `public/` files.
fn guess_content_type(path: &str) -> &'static str {
    picloud_actors::app::public::content_type(path)
}

async fn put(
    client: &Client,
    app: &str,
    local: &Path,
    path: Option<String>,
    content_type: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let file = tokio::fs::File::open(local).await.map_err(|error| {
        CliError::new(format!(
            "cannot read {}: {error}",
            escape(&local.display().to_string())
        ))
    })?;
    let size = file.metadata().await?.len();
    let path = match path {
        Some(path) => path,
        None => local
            .file_name()
            .and_then(|name| name.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                CliError::new(format!(
                    "{} has no file name to use as the path: give PATH",
                    escape(&local.display().to_string())
                ))
            })?,
    };
    let content_type = content_type.unwrap_or_else(|| guess_content_type(&path).to_string());
    let mut progress = Progress::new(size);
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buffer = BytesMut::zeroed(READ_CHUNK_BYTES);
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok::<Bytes, std::io::Error>(buffer.freeze()), file))
            }
            Err(error) => Some((Err(error), file)),
        }
    })
    .inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            progress.advance(chunk.len() as u64);
        }
    });
    // One node, chosen before the body starts: a body half sent is never
    // sent again to another node.
    let base = client.reachable_base().await?;
    let request = client
        .request_to(base, reqwest::Method::PUT, &files_path(app, Some(&path)))
        .header(reqwest::header::CONTENT_LENGTH, size)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(reqwest::Body::wrap_stream(chunks));
    let response = client.response_once(request).await;
    Progress::finish(size);
    let body: Value = response?.json().await?;
    report(json, &body, || {
        format!(
            "stored {} ({} bytes, etag {})",
            escape(&path),
            field(&body["size"]),
            field(&body["etag"])
        )
    });
    Ok(())
}

async fn get(
    client: &Client,
    app: &str,
    path: &str,
    local: Option<String>,
) -> Result<(), CliError> {
    let target = match local.as_deref() {
        Some("-") => None,
        Some(local) => Some(PathBuf::from(local)),
        None => Some(PathBuf::from(path.rsplit('/').next().unwrap_or(path))),
    };
    let response = client
        .response(client.request(reqwest::Method::GET, &files_path(app, Some(path))))
        .await?;
    let size = response.content_length().unwrap_or(0);
    let mut progress = Progress::new(size);
    let mut body = response.bytes_stream();
    let result = match &target {
        None => {
            let mut out = tokio::io::stdout();
            let mut result = Ok(());
            while let Some(chunk) = body.next().await {
                let written = match chunk {
                    Ok(chunk) => out.write_all(&chunk).await.map(|()| chunk.len()),
                    Err(error) => Err(std::io::Error::other(error)),
                };
                match written {
                    Ok(length) => progress.advance(length as u64),
                    Err(error) => {
                        result = Err(error);
                        break;
                    }
                }
            }
            match result {
                Ok(()) => out.flush().await,
                error => error,
            }
        }
        Some(target) => {
            // Written beside the target and renamed at the end, so a cut
            // download never leaves a truncated file under the real name.
            let partial = target.with_extension(match target.extension() {
                Some(ext) => format!("{}.part", ext.to_string_lossy()),
                None => "part".to_string(),
            });
            let written = async {
                let mut out = tokio::fs::File::create(&partial).await?;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(std::io::Error::other)?;
                    out.write_all(&chunk).await?;
                    progress.advance(chunk.len() as u64);
                }
                out.flush().await?;
                tokio::fs::rename(&partial, target).await
            }
            .await;
            if written.is_err() {
                let _ = tokio::fs::remove_file(&partial).await;
            }
            written
        }
    };
    Progress::finish(size);
    result.map_err(|error| CliError::new(format!("downloading {}: {error}", escape(path))))?;
    if let Some(target) = target {
        eprintln!("wrote {}", escape(&target.display().to_string()));
    }
    Ok(())
}

async fn ls(client: &Client, app: &str, prefix: Option<&str>, json: bool) -> Result<(), CliError> {
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    loop {
        let mut path = format!("{}?limit={LS_PAGE_LIMIT}", files_path(app, None));
        if let Some(prefix) = prefix {
            path.push_str(&format!("&prefix={}", query_encode(prefix)));
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", query_encode(cursor)));
        }
        let body = client.get(&path).await?;
        let files = body["files"].as_array().cloned().unwrap_or_default();
        if json {
            all.extend(files);
        } else {
            for file in &files {
                println!(
                    "{:>12}  {}  {:<24}  {}",
                    field(&file["size"]),
                    format_ms(file["updated_ms"].as_u64().unwrap_or(0)),
                    field(&file["content_type"]),
                    field(&file["path"])
                );
            }
        }
        match body["cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
            _ => break,
        }
    }
    if json {
        print_json(&json!({"files": all}));
    }
    Ok(())
}

fn query_encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A `\r`-rewritten line on stderr (bytes, MiB/s) for transfers of at least
/// [`PROGRESS_BYTES_MIN`] when stderr is a terminal; nothing otherwise.
struct Progress {
    total: u64,
    done: u64,
    started: Instant,
    shown: Option<Instant>,
    enabled: bool,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            shown: None,
            enabled: total >= PROGRESS_BYTES_MIN && std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .shown
            .is_some_and(|shown| now.duration_since(shown) < PROGRESS_PERIOD)
            && self.done < self.total
        {
            return;
        }
        self.shown = Some(now);
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let seconds = now.duration_since(self.started).as_secs_f64().max(0.001);
        let mut stderr = std::io::stderr();
        let _ = write!(
            stderr,
            "\r{:.1} / {:.1} MiB  {:.1} MiB/s   ",
            mib(self.done),
            mib(self.total),
            mib(self.done) / seconds
        );
        let _ = stderr.flush();
    }

    /// Ends the progress line (when one was shown) so the next output
    /// starts on its own line.
    fn finish(total: u64) {
        if total >= PROGRESS_BYTES_MIN && std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_keep_slashes_and_encode_the_rest() {
        assert_eq!(
            files_path("shop", Some("img/a b.jpg")),
            "/apps/shop/files/img/a%20b.jpg"
        );
        assert_eq!(files_path("shop", None), "/apps/shop/files");
        assert_eq!(query_encode("a b/c&d"), "a+b%2Fc%26d");
    }
}
