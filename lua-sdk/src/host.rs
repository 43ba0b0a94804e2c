//! The `Host` trait: every service a script can call goes through it.
//!
//! `lua-sdk` knows nothing about storage or the cluster. The node implements
//! `Host` (in `actors`/`runtime`) and hands an `Arc<dyn Host>` to each VM. Each
//! VM belongs to exactly one app; the app name is passed on every call so one
//! `Host` can serve every app while keeping their keys apart.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use crate::codes::Code;

/// A boxed future, so `Host` stays object-safe.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HostError>> + Send + 'a>>;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started (default).
    #[default]
    Linearizable,
    /// Reads this node's applied state without asking the leader.
    Stale,
}

/// Log levels of `log.debug/info/warn/error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One page of `kv.list`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KvListPage {
    pub items: Vec<(String, Value)>,
    /// Pass back as `cursor` to get the next page; `None` when the listing is done.
    pub cursor: Option<String>,
}

/// One operation inside `kv.atomic({...})`.
#[derive(Debug, Clone, PartialEq)]
pub enum AtomicOp {
    Set {
        key: String,
        value: Value,
        ttl_secs: Option<f64>,
    },
    Delete {
        key: String,
    },
    Incr {
        key: String,
        by: i64,
    },
    Cas {
        key: String,
        expected: Option<Value>,
        new: Option<Value>,
    },
}

/// The result of one op of `kv.atomic`, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum AtomicResult {
    Set,
    Deleted { existed: bool },
    Incr { value: i64 },
    Cas { swapped: bool },
}

/// One `docs.*` call, its arguments checked by the SDK. Documents, patches
/// and queries are JSON objects.
#[derive(Debug, Clone, PartialEq)]
pub enum DocsCall {
    /// Result: the new document's id (a string).
    Insert {
        collection: String,
        doc: Value,
    },
    /// Result: the document, or `null` when absent.
    Get {
        collection: String,
        id: String,
    },
    /// Result: whether the document existed (`true`/`false`).
    Update {
        collection: String,
        id: String,
        patch: Value,
    },
    Replace {
        collection: String,
        id: String,
        doc: Value,
    },
    Delete {
        collection: String,
        id: String,
    },
    /// Result: `{"items": [...], "cursor": "..." (absent on the last page),
    /// "explain": {...} (only when asked)}`.
    Find {
        collection: String,
        query: Value,
        options: FindArgs,
    },
    /// Result: the number of matching documents.
    Count {
        collection: String,
        query: Value,
    },
}

/// The options of `docs.find`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FindArgs {
    /// (field path, descending); empty = by `_id`.
    pub sort: Vec<(String, bool)>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub fields: Option<Vec<String>>,
    pub explain: bool,
}

/// A sort field as scripts, the admin API and the CLI write it: `"age"`
/// ascending, `"-age"` descending.
pub fn sort_field(field: String) -> (String, bool) {
    match field.strip_prefix('-') {
        Some(name) => (name.to_string(), true),
        None => (field, false),
    }
}

/// One `http.request` call, its arguments checked by the SDK. The URL and
/// the header names are checked by the host (the SSRF guard is the node's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// Upper-case method name (`GET`, `POST`, ...).
    pub method: String,
    pub url: String,
    /// In the script's order; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The script's `timeout_ms`, if given (the host applies its default
    /// and its maximum).
    pub timeout_ms: Option<u64>,
    /// What the invocation has left of its wall-clock timeout: the request
    /// never waits longer (it ends with `http_timeout`; the invocation, at
    /// that same deadline, with `script_timeout`).
    pub time_left: Duration,
    /// Redirects to follow (0: a 3xx is returned to the script as it is).
    pub redirects: u32,
}

/// What an outbound request answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboundResponse {
    pub status: u16,
    /// Lower-case names in the order received; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An error from a host service, with a stable [`Code`] (`value_too_large`,
/// `no_leader`, `not_a_number`, `atomic_cas_failed`, `unavailable`, ...).
/// It reaches the script as a Lua error whose message is `"<code>: <message>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HostError {
    pub code: Code,
    pub message: String,
}

impl HostError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        HostError {
            code,
            message: message.into(),
        }
    }
}

/// One `users.*` call, its arguments checked by the SDK (the node checks
/// emails, passwords and roles). Results are JSON: a user is `{id, email,
/// verified, roles, data, created_ms, last_login_ms}` (never the password
/// hash), `null` when absent.
#[derive(Debug, Clone, PartialEq)]
pub enum UsersCall {
    /// Result: the new user.
    Create {
        email: String,
        password: String,
        /// A JSON object (`{}` when not given).
        data: Value,
        roles: Vec<String>,
    },
    /// Result: the user or `null`.
    Get { id: String },
    /// Result: the user or `null`.
    Find { email: String },
    /// Result: the updated user (`user_not_found` when absent).
    Update { id: String, patch: UserPatchArgs },
    /// Result: whether the user existed.
    Delete { id: String },
    /// Result: `{"users": [...], "cursor": "..." (absent on the last page)}`.
    List {
        cursor: Option<String>,
        limit: Option<usize>,
    },
    /// Result: `true`; revokes every session of the user.
    SetPassword { id: String, password: String },
    /// Result: `{"token": "...", "user": {...}}`; a wrong email or password
    /// fails with `invalid_credentials` (the SDK turns it into `nil, code`).
    Login { email: String, password: String },
    /// Result: the session's user, or `null` (unknown, expired, revoked).
    Verify { token: String },
    /// Result: whether the session existed.
    Logout { token: String },
    /// Result: how many sessions were revoked.
    LogoutAll { id: String },
    /// Result: whether the role was added (`false`: already held).
    AddRole { id: String, role: String },
    /// Result: whether the role was removed (`false`: not held).
    RemoveRole { id: String, role: String },
    /// Result: whether the user holds the role (`false` for no user).
    HasRole { id: String, role: String },
    /// Result: `{email, roles, expires_ms, link}`; the invitation is mailed
    /// with the app's invite template (`email_taken` when the address
    /// already has an account).
    Invite { email: String, roles: Vec<String> },
}

/// The fields `users.update` changes (`None`: unchanged).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserPatchArgs {
    pub email: Option<String>,
    pub verified: Option<bool>,
    pub roles: Option<Vec<String>>,
    /// A JSON object replacing the user's data.
    pub data: Option<Value>,
}

/// How `pubsub` delivers a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishKind {
    /// `pubsub.publish`: to the subscribers connected now, at most once.
    Ephemeral,
    /// `pubsub.publish_durable`: through the log, retained and resumable.
    Durable,
}

/// A mail a script sends (`email.send`), as the SDK read it: types are
/// checked, addresses and sizes are the host's to check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingEmail {
    /// `None`: the node's `mail_from`.
    pub from: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<OutgoingAttachment>,
}

/// One attachment of an [`OutgoingEmail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingAttachment {
    pub filename: String,
    /// `None`: `application/octet-stream`.
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// A stored file as scripts see it (`files.stat`, `files.put`, a page of
/// `files.list`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileStat {
    pub path: String,
    pub size: u64,
    pub content_type: String,
    /// The strong entity tag: `"` + hex SHA-256 of the content + `"`.
    pub etag: String,
    pub updated_ms: u64,
}

/// `files.get`: the file and its bytes (only files up to
/// `file_inline_read_max` are read whole).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileData {
    pub stat: FileStat,
    pub data: Vec<u8>,
}

/// One page of `files.list`, in path order; `cursor` continues after it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileListPage {
    pub files: Vec<FileStat>,
    pub cursor: Option<String>,
}

/// What a signed file URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UrlMethod {
    /// `GET` and `HEAD` (download).
    #[default]
    Get,
    /// `PUT` (upload).
    Put,
}

/// `files.url(path, {ttl=, method=, content_type=, max_bytes=})`, checked
/// by the SDK; the host applies its default and maximum ttl.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileUrlOptions {
    pub ttl_secs: Option<f64>,
    pub method: UrlMethod,
    /// A PUT URL only accepts this `Content-Type`.
    pub content_type: Option<String>,
    /// A PUT URL only accepts up to this many bytes.
    pub max_bytes: Option<u64>,
}

/// A host future that fails with `unsupported`: the default of every
/// optional service.
fn unsupported<'a, T: 'a>(what: &'static str) -> HostFuture<'a, T> {
    Box::pin(async move {
        Err(HostError::new(
            Code::Unsupported,
            format!("{what} are not available here"),
        ))
    })
}

/// The services a script can reach. Implemented by the node.
pub trait Host: Send + Sync + 'static {
    fn kv_get<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        consistency: Consistency,
    ) -> HostFuture<'a, Option<Value>>;
    fn kv_set<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        value: Value,
        ttl_secs: Option<f64>,
    ) -> HostFuture<'a, ()>;
    /// Returns whether the key existed.
    fn kv_delete<'a>(&'a self, app: &'a str, key: &'a str) -> HostFuture<'a, bool>;
    /// Returns the new value.
    fn kv_incr<'a>(&'a self, app: &'a str, key: &'a str, by: i64) -> HostFuture<'a, i64>;
    /// Returns whether the swap happened.
    fn kv_cas<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        expected: Option<Value>,
        new: Option<Value>,
    ) -> HostFuture<'a, bool>;
    fn kv_list<'a>(
        &'a self,
        app: &'a str,
        prefix: &'a str,
        limit: usize,
        cursor: Option<String>,
    ) -> HostFuture<'a, KvListPage>;
    fn kv_atomic<'a>(
        &'a self,
        app: &'a str,
        ops: Vec<AtomicOp>,
    ) -> HostFuture<'a, Vec<AtomicResult>>;
    /// A `docs.*` call (see [`DocsCall`] for each result's shape).
    fn docs<'a>(&'a self, app: &'a str, call: DocsCall) -> HostFuture<'a, Value> {
        let _ = (app, call);
        Box::pin(async {
            Err(HostError::new(
                Code::Unsupported,
                "documents are not available here",
            ))
        })
    }
    /// A `users.*` call (see [`UsersCall`] for each result's shape). Hosts
    /// without end users keep this default.
    fn users<'a>(&'a self, app: &'a str, call: UsersCall) -> HostFuture<'a, Value> {
        let _ = (app, call);
        unsupported("users")
    }
    /// Appends a line to the app's log. Must not block.
    fn log(&self, app: &str, level: LogLevel, message: String);
    /// Wall-clock time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// The plaintext of secret `name` of `app`, or `None` when it is not
    /// set. A node that cannot open it fails with `secret_key_mismatch`,
    /// never with garbage. Hosts without secrets keep this default.
    fn secret_get<'a>(&'a self, app: &'a str, name: &'a str) -> HostFuture<'a, Option<Vec<u8>>> {
        let _ = (app, name);
        Box::pin(async {
            Err(HostError::new(
                Code::Unavailable,
                "secrets are not available here",
            ))
        })
    }
    /// An outbound HTTP request (`http.request`), through the node's SSRF
    /// guard and limits. Hosts without outbound HTTP keep this default.
    fn http_request<'a>(
        &'a self,
        app: &'a str,
        request: OutboundRequest,
    ) -> HostFuture<'a, OutboundResponse> {
        let _ = (app, request);
        Box::pin(async {
            Err(HostError::new(
                Code::Unsupported,
                "outbound HTTP is not available here",
            ))
        })
    }
    /// Publishes `message` on `topic` of `app`: the durable message's
    /// position (`<epoch>-<seq>`), `None` for an ephemeral one. Hosts
    /// without pub/sub keep this default.
    fn pubsub_publish<'a>(
        &'a self,
        app: &'a str,
        topic: &'a str,
        message: Value,
        kind: PublishKind,
    ) -> HostFuture<'a, Option<String>> {
        let _ = (app, topic, message, kind);
        Box::pin(async {
            Err(HostError::new(
                Code::Unsupported,
                "pub/sub is not available here",
            ))
        })
    }
    /// A signed token that lets a client subscribe to `topic` of `app`
    /// for `ttl_secs` (the host's default when `None`).
    fn realtime_token<'a>(
        &'a self,
        app: &'a str,
        topic: &'a str,
        ttl_secs: Option<f64>,
        subject: Option<String>,
    ) -> HostFuture<'a, String> {
        let _ = (app, topic, ttl_secs, subject);
        Box::pin(async {
            Err(HostError::new(
                Code::Unsupported,
                "realtime tokens are not available here",
            ))
        })
    }
    /// Queues `email` for delivery (or captures it, without a relay) and
    /// returns its delivery id. The host checks addresses, header fields
    /// and sizes (`email_invalid`, `email_too_large`) before anything is
    /// written. Hosts without mail keep this default.
    fn email_send<'a>(&'a self, app: &'a str, email: OutgoingEmail) -> HostFuture<'a, String> {
        let _ = (app, email);
        unsupported("email")
    }
    /// Stores `data` at `path` of `app` (replacing a file there) and
    /// returns its stat. Hosts without files keep this default.
    fn files_put<'a>(
        &'a self,
        app: &'a str,
        path: &'a str,
        data: Vec<u8>,
        content_type: Option<String>,
    ) -> HostFuture<'a, FileStat> {
        let _ = (app, path, data, content_type);
        unsupported("files")
    }
    /// The file at `path` with its bytes, or `None`; a file over
    /// `file_inline_read_max` fails with `file_too_large` before any block
    /// is read.
    fn files_get<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, Option<FileData>> {
        let _ = (app, path);
        unsupported("files")
    }
    /// The file's stat, or `None`.
    fn files_stat<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, Option<FileStat>> {
        let _ = (app, path);
        unsupported("files")
    }
    /// Deletes the file; returns whether it existed.
    fn files_delete<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, bool> {
        let _ = (app, path);
        unsupported("files")
    }
    /// Up to `limit` files whose path starts with `prefix`, after `cursor`.
    fn files_list<'a>(
        &'a self,
        app: &'a str,
        prefix: &'a str,
        limit: usize,
        cursor: Option<String>,
    ) -> HostFuture<'a, FileListPage> {
        let _ = (app, prefix, limit, cursor);
        unsupported("files")
    }
    /// A signed URL (`/_/files/<app>/<path>?...`, no host) any node serves.
    fn files_url<'a>(
        &'a self,
        app: &'a str,
        path: &'a str,
        options: FileUrlOptions,
    ) -> HostFuture<'a, String> {
        let _ = (app, path, options);
        unsupported("files")
    }
}
