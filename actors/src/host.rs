//! `NodeHost`: the node's implementation of the Lua SDK's `Host` trait.
//!
//! Every service call from a script lands here and becomes either a read of
//! local state (after a read barrier when linearizable) or a command proposed
//! through the cluster. Limits on keys, values and pages are enforced here,
//! before anything reaches the log.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use picloud_cluster::Node;
use picloud_lua_sdk::{
    AtomicOp, AtomicResult, Code, Consistency, DocsCall, FileData, FileListPage, FileStat,
    FileUrlOptions, Host, HostError, HostFuture, KvListPage, LogLevel, OutboundRequest,
    OutboundResponse, OutgoingEmail, PublishKind, UsersCall,
};
use picloud_storage::secret_box::{Keyring, SecretBoxError};
use picloud_storage::secrets::validate_secret_name;
use picloud_storage::topics::Position;
use picloud_storage::{Command, CommandResult, KvOp, KvOpResult};
use serde_json::Value;

use crate::app::TopicSpec;
use crate::config::ActorLimits;
use crate::email::Mailer;
use crate::error::secret_code;
pub(crate) use crate::error::storage_error;
use crate::error::unexpected;
pub use crate::error::{apply_host_error, cluster_host_error};
use crate::files::FileService;
use crate::logs::LogBook;
use crate::outbound::Outbound;
use crate::realtime::{Realtime, token};
use crate::users::{AuthPolicy, UserService};

/// Milliseconds since the Unix epoch on this node's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The services scripts reach, backed by the cluster node.
#[derive(Clone)]
pub struct NodeHost {
    node: Node,
    logs: LogBook,
    limits: Arc<ActorLimits>,
    /// The master keys that open this cluster's secrets (`None`: scripts
    /// get `unavailable` from `secrets.get`).
    secret_keys: Option<Arc<Keyring>>,
    /// Outbound HTTP behind the SSRF guard (`None`: `http.*` answers
    /// `unsupported`).
    outbound: Option<Arc<Outbound>>,
    /// This node's realtime (`None`: pub/sub answers `unavailable`).
    realtime: Option<Realtime>,
    /// This node's file service (`None`: `files.*` answers `unsupported`).
    files: Option<FileService>,
    /// This node's mailer (`None`: `email.send` answers `unsupported`).
    mailer: Option<Arc<Mailer>>,
    /// This node's end users (`None`: `users.*` answers `unsupported`).
    users: Option<UserService>,
}

impl NodeHost {
    pub fn new(node: Node, logs: LogBook, limits: Arc<ActorLimits>) -> NodeHost {
        NodeHost {
            node,
            logs,
            limits,
            secret_keys: None,
            outbound: None,
            realtime: None,
            files: None,
            users: None,
            mailer: None,
        }
    }

    /// This host with the node's mailer, for `email`.
    pub fn with_mail(mut self, mailer: Arc<Mailer>) -> NodeHost {
        self.mailer = Some(mailer);
        self
    }

    /// `email.send`: checks the mail, then queues it (see [`Mailer::queue`]).
    async fn send_email(&self, app: &str, email: OutgoingEmail) -> Result<String, HostError> {
        let mailer = self.mailer.as_ref().ok_or_else(|| {
            HostError::new(Code::Unsupported, "email is not available on this node")
        })?;
        mailer.queue(&self.node, app, email).await
    }

    /// A `users.*` call of an app whose manifest's `[auth]` is `policy`.
    pub(crate) async fn users_call(
        &self,
        app: &str,
        call: UsersCall,
        policy: AuthPolicy,
    ) -> Result<Value, HostError> {
        let users = self.users.as_ref().ok_or_else(|| {
            HostError::new(Code::Unsupported, "users are not available on this node")
        })?;
        users.call(app, call, policy).await
    }

    /// This host with the node's end users, for `users`.
    pub fn with_users(mut self, users: UserService) -> NodeHost {
        self.users = Some(users);
        self
    }

    /// This host with the node's file service, for `files`.
    pub fn with_files(mut self, files: FileService) -> NodeHost {
        self.files = Some(files);
        self
    }

    /// This host with the node's realtime, for `pubsub` and `realtime`.
    pub fn with_realtime(mut self, realtime: Realtime) -> NodeHost {
        self.realtime = Some(realtime);
        self
    }

    /// The file service, or `unsupported` on a host started without it.
    fn files(&self) -> Result<&FileService, HostError> {
        self.files.as_ref().ok_or_else(|| {
            HostError::new(Code::Unsupported, "files are not available on this node")
        })
    }

    /// The file service for a write: the node's, or (`run_depth` of the
    /// trigger run making it) one whose `files` triggers run a level deeper.
    fn files_for_write(&self, run_depth: Option<u32>) -> Result<Cow<'_, FileService>, HostError> {
        let files = self.files()?;
        Ok(match run_depth {
            Some(depth) => Cow::Owned(files.in_chain(depth)),
            None => Cow::Borrowed(files),
        })
    }

    /// `files.put`: a string of at most `file_inline_read_max` bytes
    /// (larger content goes through a signed PUT URL, streamed), made by a
    /// request (`run_depth` `None`) or a trigger run at `run_depth`.
    pub async fn put_file(
        &self,
        app: &str,
        path: &str,
        data: Vec<u8>,
        content_type: Option<String>,
        run_depth: Option<u32>,
    ) -> Result<FileStat, HostError> {
        let files = self.files_for_write(run_depth)?;
        let max = files.config().file_inline_read_max;
        if data.len() as u64 > max {
            return Err(HostError::new(
                Code::FileTooLarge,
                format!(
                    "files.put takes at most {max} bytes (file_inline_read_max), got {}: \
                     upload larger files through files.url(path, {{method=\"PUT\"}})",
                    data.len()
                ),
            ));
        }
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(data))]);
        files.put_stream(app, path, content_type, body, None).await
    }

    /// `files.delete`, by a request or a trigger run (see [`Self::put_file`]).
    pub async fn delete_file(
        &self,
        app: &str,
        path: &str,
        run_depth: Option<u32>,
    ) -> Result<bool, HostError> {
        self.files_for_write(run_depth)?.delete(app, path).await
    }

    pub fn realtime(&self) -> Result<&Realtime, HostError> {
        self.realtime.as_ref().ok_or_else(|| {
            HostError::new(Code::Unavailable, "realtime is not running on this node")
        })
    }

    /// Publishes `message` on `topic` of `app`, declared by `spec` (the
    /// caller found it in the app's current manifest): ephemeral ones to
    /// this node's subscribers, durable ones through the log (their
    /// subscribers everywhere get them from apply).
    pub async fn publish(
        &self,
        app: &str,
        topic: &str,
        message: &Value,
        kind: PublishKind,
        spec: &TopicSpec,
    ) -> Result<Option<String>, HostError> {
        let realtime = self.realtime()?;
        let bytes = self.encode_message(topic, message, kind, spec)?;
        match kind {
            PublishKind::Ephemeral => {
                realtime.publish(app, topic, bytes.into()).await;
                Ok(None)
            }
            PublishKind::Durable => {
                let result = self
                    .node
                    .write(Command::Publish {
                        app: app.to_string(),
                        topic: topic.to_string(),
                        message: bytes,
                        retain: spec.retain,
                        now_ms: now_ms(),
                    })
                    .await
                    .map_err(cluster_host_error)?;
                match result {
                    CommandResult::Published { epoch, seq } => {
                        Ok(Some(Position { epoch, seq }.to_string()))
                    }
                    CommandResult::Rejected(error) => Err(apply_host_error(error)),
                    other => Err(unexpected(&other)),
                }
            }
        }
    }

    /// A message as the JSON text it travels as, checked: its size, and
    /// for a durable one, that its topic keeps history.
    pub fn encode_message(
        &self,
        topic: &str,
        message: &Value,
        kind: PublishKind,
        spec: &TopicSpec,
    ) -> Result<Vec<u8>, HostError> {
        let bytes = serde_json::to_vec(message)
            .map_err(|e| HostError::new(Code::InvalidValue, e.to_string()))?;
        let max = self.realtime()?.limits().message_bytes_max;
        if bytes.len() > max {
            return Err(HostError::new(
                Code::MessageTooLarge,
                format!(
                    "the message is {} bytes as JSON; the limit is {max} (pubsub_message_bytes_max)",
                    bytes.len()
                ),
            ));
        }
        if kind == PublishKind::Durable && spec.retain == 0 {
            return Err(HostError::new(
                Code::InvalidTopic,
                format!(
                    "topic {topic} matches [[topic]] {:?} with retain = 0 (ephemeral only); \
                     set retain to publish durably",
                    spec.pattern
                ),
            ));
        }
        Ok(bytes)
    }

    /// A signed token for `topic` of `app` (the caller checked the topic).
    pub async fn realtime_token(
        &self,
        app: &str,
        topic: &str,
        ttl_secs: Option<f64>,
        subject: Option<String>,
    ) -> Result<String, HostError> {
        let realtime = self.realtime()?;
        let limits = realtime.limits();
        let ttl_ms = match ttl_secs {
            None => limits.token_ttl_secs_default.saturating_mul(1000),
            Some(ttl) if ttl <= limits.token_ttl_secs_max as f64 => (ttl * 1000.0) as u64,
            Some(ttl) => {
                return Err(HostError::new(
                    Code::InvalidTtl,
                    format!(
                        "realtime.token: ttl {ttl} is above the longest a token may live ({} s)",
                        limits.token_ttl_secs_max
                    ),
                ));
            }
        };
        let key = realtime.signing_key(app, true).await?;
        Ok(token::sign(
            &key,
            token::Claims {
                app: app.to_string(),
                topic: topic.to_string(),
                exp: now_ms().saturating_add(ttl_ms),
                sub: subject,
                kid: String::new(),
            },
        ))
    }

    /// This host with the master keys that open the cluster's secrets.
    pub fn with_secret_keys(mut self, keys: Arc<Keyring>) -> NodeHost {
        self.secret_keys = Some(keys);
        self
    }

    /// This host with outbound HTTP for scripts.
    pub fn with_outbound(mut self, outbound: Arc<Outbound>) -> NodeHost {
        self.outbound = Some(outbound);
        self
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub(crate) fn check_key(&self, key: &str) -> Result<(), HostError> {
        if key.is_empty() {
            return Err(HostError::new(
                Code::InvalidKey,
                "kv keys must not be empty",
            ));
        }
        if key.len() > self.limits.kv_key_bytes_max {
            return Err(HostError::new(
                Code::KeyTooLarge,
                format!(
                    "kv key is {} bytes; the limit is {} (kv_key_bytes_max)",
                    key.len(),
                    self.limits.kv_key_bytes_max
                ),
            ));
        }
        Ok(())
    }

    fn encode_value(&self, value: &Value) -> Result<Vec<u8>, HostError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| HostError::new(Code::InvalidValue, e.to_string()))?;
        if bytes.len() > self.limits.kv_value_bytes_max {
            return Err(HostError::new(
                Code::ValueTooLarge,
                format!(
                    "kv value is {} bytes as JSON; the limit is {} (kv_value_bytes_max)",
                    bytes.len(),
                    self.limits.kv_value_bytes_max
                ),
            ));
        }
        Ok(bytes)
    }

    fn expiry(&self, ttl_secs: Option<f64>, now_ms: u64) -> Result<Option<u64>, HostError> {
        match ttl_secs {
            None => Ok(None),
            Some(ttl) if ttl.is_finite() && ttl > 0.0 && ttl <= 10.0 * 365.0 * 86_400.0 => {
                Ok(Some(now_ms.saturating_add((ttl * 1000.0) as u64)))
            }
            Some(ttl) => Err(HostError::new(
                Code::InvalidTtl,
                format!("ttl must be a positive number of seconds up to ten years, got {ttl}"),
            )),
        }
    }

    pub(crate) fn to_kv_op(&self, op: AtomicOp, now_ms: u64) -> Result<KvOp, HostError> {
        Ok(match op {
            AtomicOp::Set {
                key,
                value,
                ttl_secs,
            } => {
                self.check_key(&key)?;
                KvOp::Set {
                    value: self.encode_value(&value)?,
                    expires_at_ms: self.expiry(ttl_secs, now_ms)?,
                    key,
                }
            }
            AtomicOp::Delete { key } => {
                self.check_key(&key)?;
                KvOp::Delete { key }
            }
            AtomicOp::Incr { key, by } => {
                self.check_key(&key)?;
                KvOp::Incr { key, by }
            }
            AtomicOp::Cas { key, expected, new } => {
                self.check_key(&key)?;
                KvOp::Cas {
                    expected: expected.map(|v| self.encode_value(&v)).transpose()?,
                    new: new.map(|v| self.encode_value(&v)).transpose()?,
                    key,
                }
            }
        })
    }

    async fn kv_write(&self, app: &str, op: KvOp, now_ms: u64) -> Result<KvOpResult, HostError> {
        let result = self
            .node
            .write(Command::Kv {
                app: app.to_string(),
                op,
                now_ms,
            })
            .await
            .map_err(cluster_host_error)?;
        match result {
            CommandResult::Kv(result) => Ok(result),
            CommandResult::Rejected(error) => Err(apply_host_error(error)),
            other => Err(unexpected(&other)),
        }
    }

    async fn barrier(&self, consistency: Consistency) -> Result<(), HostError> {
        match consistency {
            Consistency::Linearizable => self.node.read_barrier().await.map_err(cluster_host_error),
            Consistency::Stale => Ok(()),
        }
    }
}

pub(crate) fn decode_value(bytes: &[u8]) -> Result<Value, HostError> {
    serde_json::from_slice(bytes).map_err(|e| HostError::new(Code::CorruptValue, e.to_string()))
}

/// A secret that did not open, as a script sees it: `secret_key_mismatch`
/// naming the key it needs and the keys this node has, or `secret_corrupt`.
pub fn secret_open_error(app: &str, name: &str, error: &SecretBoxError) -> HostError {
    HostError::new(
        secret_code(error),
        format!("secret {name} of app {app}: {error}"),
    )
}

impl Host for NodeHost {
    fn kv_get<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        consistency: Consistency,
    ) -> HostFuture<'a, Option<Value>> {
        Box::pin(async move {
            self.check_key(key)?;
            self.barrier(consistency).await?;
            let bytes = self
                .node
                .reader()
                .kv_get(app, key, now_ms())
                .map_err(storage_error)?;
            bytes.map(|b| decode_value(&b)).transpose()
        })
    }

    fn kv_set<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        value: Value,
        ttl_secs: Option<f64>,
    ) -> HostFuture<'a, ()> {
        Box::pin(async move {
            let now = now_ms();
            let op = self.to_kv_op(
                AtomicOp::Set {
                    key: key.to_string(),
                    value,
                    ttl_secs,
                },
                now,
            )?;
            self.kv_write(app, op, now).await.map(|_| ())
        })
    }

    fn kv_delete<'a>(&'a self, app: &'a str, key: &'a str) -> HostFuture<'a, bool> {
        Box::pin(async move {
            self.check_key(key)?;
            let op = KvOp::Delete {
                key: key.to_string(),
            };
            match self.kv_write(app, op, now_ms()).await? {
                KvOpResult::Deleted { existed } => Ok(existed),
                other => Err(HostError::new(Code::Internal, format!("{other:?}"))),
            }
        })
    }

    fn kv_incr<'a>(&'a self, app: &'a str, key: &'a str, by: i64) -> HostFuture<'a, i64> {
        Box::pin(async move {
            self.check_key(key)?;
            let op = KvOp::Incr {
                key: key.to_string(),
                by,
            };
            match self.kv_write(app, op, now_ms()).await? {
                KvOpResult::Incr { value } => Ok(value),
                other => Err(HostError::new(Code::Internal, format!("{other:?}"))),
            }
        })
    }

    fn kv_cas<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        expected: Option<Value>,
        new: Option<Value>,
    ) -> HostFuture<'a, bool> {
        Box::pin(async move {
            let now = now_ms();
            let op = self.to_kv_op(
                AtomicOp::Cas {
                    key: key.to_string(),
                    expected,
                    new,
                },
                now,
            )?;
            match self.kv_write(app, op, now).await? {
                KvOpResult::Cas { swapped } => Ok(swapped),
                other => Err(HostError::new(Code::Internal, format!("{other:?}"))),
            }
        })
    }

    fn kv_list<'a>(
        &'a self,
        app: &'a str,
        prefix: &'a str,
        limit: usize,
        cursor: Option<String>,
    ) -> HostFuture<'a, KvListPage> {
        Box::pin(async move {
            if limit == 0 || limit > self.limits.kv_list_limit_max {
                return Err(HostError::new(
                    Code::InvalidLimit,
                    format!(
                        "kv.list limit must be 1 to {} (kv_list_limit_max), got {limit}",
                        self.limits.kv_list_limit_max
                    ),
                ));
            }
            self.barrier(Consistency::Linearizable).await?;
            let page = self
                .node
                .reader()
                .kv_list(
                    app,
                    prefix,
                    cursor.as_deref(),
                    limit,
                    self.limits.read_page_bytes_max,
                    now_ms(),
                )
                .map_err(storage_error)?;
            let items = page
                .items
                .into_iter()
                .map(|(key, bytes)| Ok((key, decode_value(&bytes)?)))
                .collect::<Result<Vec<_>, HostError>>()?;
            Ok(KvListPage {
                items,
                cursor: page.cursor,
            })
        })
    }

    fn kv_atomic<'a>(
        &'a self,
        app: &'a str,
        ops: Vec<AtomicOp>,
    ) -> HostFuture<'a, Vec<AtomicResult>> {
        Box::pin(async move {
            if ops.is_empty() || ops.len() > self.limits.kv_atomic_ops_max {
                return Err(HostError::new(
                    Code::InvalidAtomic,
                    format!(
                        "kv.atomic takes 1 to {} ops (kv_atomic_ops_max), got {}",
                        self.limits.kv_atomic_ops_max,
                        ops.len()
                    ),
                ));
            }
            let now = now_ms();
            let ops = ops
                .into_iter()
                .map(|op| self.to_kv_op(op, now))
                .collect::<Result<Vec<_>, _>>()?;
            let result = self
                .node
                .write(Command::KvAtomic {
                    app: app.to_string(),
                    ops,
                    now_ms: now,
                })
                .await
                .map_err(cluster_host_error)?;
            match result {
                CommandResult::KvAtomic(results) => Ok(results
                    .into_iter()
                    .map(|r| match r {
                        KvOpResult::Set => AtomicResult::Set,
                        KvOpResult::Deleted { existed } => AtomicResult::Deleted { existed },
                        KvOpResult::Incr { value } => AtomicResult::Incr { value },
                        KvOpResult::Cas { swapped } => AtomicResult::Cas { swapped },
                    })
                    .collect()),
                CommandResult::Rejected(error) => Err(apply_host_error(error)),
                other => Err(unexpected(&other)),
            }
        })
    }

    fn docs<'a>(&'a self, app: &'a str, call: DocsCall) -> HostFuture<'a, Value> {
        Box::pin(async move {
            let now = now_ms();
            if let Some(op) = crate::docs::write_op(&call, now)? {
                let result = self
                    .node
                    .write(Command::Docs {
                        app: app.to_string(),
                        ops: vec![op.clone()],
                        now_ms: now,
                    })
                    .await
                    .map_err(cluster_host_error)?;
                return match result {
                    CommandResult::Docs(results) if results.len() == 1 => {
                        Ok(crate::docs::write_result(&op, &results[0]))
                    }
                    CommandResult::Rejected(error) => Err(apply_host_error(error)),
                    other => Err(unexpected(&other)),
                };
            }
            self.barrier(Consistency::Linearizable).await?;
            let reader = self.node.reader().clone();
            crate::docs::read_off_workers(reader, app, call, self.limits.as_ref().into()).await
        })
    }

    fn log(&self, app: &str, level: LogLevel, message: String) {
        self.logs.push(app, level, message, now_ms());
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn secret_get<'a>(&'a self, app: &'a str, name: &'a str) -> HostFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            validate_secret_name(name).map_err(|m| HostError::new(Code::InvalidSecretName, m))?;
            let keys = self.secret_keys.as_ref().ok_or_else(|| {
                HostError::new(Code::Unavailable, "this node was started without secrets")
            })?;
            self.barrier(Consistency::Linearizable).await?;
            let Some(record) = self
                .node
                .reader()
                .secret(app, name)
                .map_err(storage_error)?
            else {
                return Ok(None);
            };
            keys.open(app, name, &record.sealed)
                .map(Some)
                .map_err(|error| secret_open_error(app, name, &error))
        })
    }

    fn http_request<'a>(
        &'a self,
        app: &'a str,
        request: OutboundRequest,
    ) -> HostFuture<'a, OutboundResponse> {
        Box::pin(async move {
            let outbound = self.outbound.as_ref().ok_or_else(|| {
                HostError::new(
                    Code::Unsupported,
                    "this node was started without outbound HTTP",
                )
            })?;
            outbound.request(app, request).await
        })
    }

    fn email_send<'a>(&'a self, app: &'a str, email: OutgoingEmail) -> HostFuture<'a, String> {
        Box::pin(self.send_email(app, email))
    }

    fn files_put<'a>(
        &'a self,
        app: &'a str,
        path: &'a str,
        data: Vec<u8>,
        content_type: Option<String>,
    ) -> HostFuture<'a, FileStat> {
        Box::pin(self.put_file(app, path, data, content_type, None))
    }

    fn files_get<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, Option<FileData>> {
        Box::pin(async move {
            let files = self.files()?;
            files
                .get_whole(app, path, files.config().file_inline_read_max)
                .await
        })
    }

    fn files_stat<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, Option<FileStat>> {
        Box::pin(async move { self.files()?.stat(app, path).await })
    }

    fn files_delete<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, bool> {
        Box::pin(self.delete_file(app, path, None))
    }

    /// Outside an app's VM (no manifest at hand): the node's settings.
    fn users<'a>(&'a self, app: &'a str, call: UsersCall) -> HostFuture<'a, Value> {
        Box::pin(self.users_call(app, call, AuthPolicy::default()))
    }

    fn files_list<'a>(
        &'a self,
        app: &'a str,
        prefix: &'a str,
        limit: usize,
        cursor: Option<String>,
    ) -> HostFuture<'a, FileListPage> {
        Box::pin(async move { self.files()?.list(app, prefix, limit, cursor).await })
    }

    fn files_url<'a>(
        &'a self,
        app: &'a str,
        path: &'a str,
        options: FileUrlOptions,
    ) -> HostFuture<'a, String> {
        Box::pin(async move { self.files()?.sign_url(app, path, options).await })
    }
}
