//! `RunHost`: the host of every pooled VM, a layer over the node's
//! [`NodeHost`]. Outside a trigger run it passes every call straight through
//! (a request's writes commit as they are made). During a run
//! ([`RunHost::begin_run`] .. [`RunHost::end_run`]) reads go to the node and
//! writes are buffered, so the dispatcher can commit them together with the
//! run's completion in ONE log entry (`Command::CompleteRun`), guarded by
//! the run's claim: a run re-executed after a leader change never applies
//! its writes twice.
//! Outbound HTTP is not a write that can wait: it passes straight through
//! in a run too (a retried run sends its requests again).
//!
//! Files pass straight through as well, writes included: a file's blocks
//! are stored before its `FilePut` is proposed, which cannot wait for the
//! run's completion entry, and a put is idempotent (the same bytes to the
//! same path leave the same file), so a retried run that puts again is
//! harmless. A retried `files.delete` answers `false` the second time; a
//! run is at-least-once for files, as for `http`.
//!
//! Mail (`email.send`) passes straight through too: it is queued in the
//! outbox when the script sends it, so a retried run queues it again (its
//! second copy has a new delivery id). Buffering it into the run's
//! completion entry needs `CompleteRun` to carry mail (not done yet).
//!
//! Durable publishes (`pubsub.publish_durable`) are buffered the same way
//! and committed with the run (their id is only known then: the script
//! gets `nil`); ephemeral ones go out at once (at most once anyway).
//!
//! Within a run, reads see the run's own earlier writes (replayed over the
//! committed value). What a write returns is computed the same way; if the
//! committed state moved on before the run completes, an `incr` still adds
//! to the current value at commit, and a `cas` that no longer matches fails
//! the whole run (it is retried).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use picloud_lua_sdk::{
    AtomicOp, AtomicResult, Code, Consistency, DocsCall, FileData, FileListPage, FileStat,
    FileUrlOptions, Host, HostError, HostFuture, KvListPage, LogLevel, OutboundRequest,
    OutboundResponse, OutgoingEmail, PublishKind, UsersCall,
};
use picloud_storage::{DocOp, DocOpResult, KvOp, RunPublish};
use serde_json::Value;

use crate::app::{TopicSpec, find_topic, validate_topic_name};
use crate::host::{NodeHost, decode_value};
use crate::users::AuthPolicy;

/// Writes one run may buffer.
pub const RUN_WRITES_MAX: usize = 1_000;

/// One VM's host (a VM runs one invocation at a time, so the buffer
/// belongs to the run in progress).
pub struct RunHost {
    inner: Arc<NodeHost>,
    /// Whether a trigger run is in progress (writes are buffered).
    buffering: AtomicBool,
    /// The chain depth of the run in progress (its file writes, which are
    /// not buffered, fire `files` triggers one level deeper).
    run_depth: AtomicU32,
    pending: Mutex<Vec<KvOp>>,
    pending_docs: Mutex<Vec<DocOp>>,
    pending_publishes: Mutex<Vec<RunPublish>>,
    /// The `[[topic]]` declarations of the app version this VM runs.
    topics: Arc<[TopicSpec]>,
    /// The `[auth]` of the app version this VM runs.
    auth: AuthPolicy,
}

/// What a run wrote, to commit with its completion.
#[derive(Debug, Default)]
pub struct RunWrites {
    pub kv: Vec<KvOp>,
    pub docs: Vec<DocOp>,
    /// Durable messages, committed with the run (exactly once).
    pub publishes: Vec<RunPublish>,
}

impl RunHost {
    pub fn new(inner: Arc<NodeHost>, topics: Arc<[TopicSpec]>) -> RunHost {
        RunHost {
            inner,
            topics,
            auth: AuthPolicy::default(),
            buffering: AtomicBool::new(false),
            run_depth: AtomicU32::new(0),
            pending: Mutex::new(Vec::new()),
            pending_docs: Mutex::new(Vec::new()),
            pending_publishes: Mutex::new(Vec::new()),
        }
    }

    /// This host for an app version whose manifest's `[auth]` is `auth`.
    pub fn with_auth(mut self, auth: AuthPolicy) -> RunHost {
        self.auth = auth;
        self
    }

    /// From now on writes are buffered for a trigger run at chain `depth`.
    pub fn begin_run(&self, depth: u32) {
        self.take_writes();
        self.run_depth.store(depth, Ordering::Release);
        self.buffering.store(true, Ordering::Release);
    }

    /// The depth of the run in progress, `None` outside a run.
    fn run_depth(&self) -> Option<u32> {
        self.direct()
            .is_none()
            .then(|| self.run_depth.load(Ordering::Acquire))
    }

    /// Ends the run: calls pass straight through again; returns what the
    /// run wrote, in order.
    pub fn end_run(&self) -> RunWrites {
        self.buffering.store(false, Ordering::Release);
        self.take_writes()
    }

    /// The declaration of `topic` in this version's manifest:
    /// `invalid_topic` for a name no topic may have, `topic_not_found`
    /// when no `[[topic]]` matches.
    fn topic_spec(&self, topic: &str) -> Result<&TopicSpec, HostError> {
        validate_topic_name(topic).map_err(|message| {
            HostError::new(Code::InvalidTopic, format!("topic {topic:?}: {message}"))
        })?;
        find_topic(&self.topics, topic).ok_or_else(|| {
            HostError::new(
                Code::TopicNotFound,
                format!("no [[topic]] of the app's picloud.toml matches {topic:?}"),
            )
        })
    }

    /// The node host when no run is in progress (the call passes through).
    fn direct(&self) -> Option<&NodeHost> {
        (!self.buffering.load(Ordering::Acquire)).then_some(&*self.inner)
    }

    /// The writes buffered since the last call, in order.
    fn take_writes(&self) -> RunWrites {
        RunWrites {
            kv: std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner())),
            docs: std::mem::take(&mut *self.pending_docs.lock().unwrap_or_else(|e| e.into_inner())),
            publishes: std::mem::take(
                &mut *self
                    .pending_publishes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            ),
        }
    }

    fn pending_count(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self
                .pending_docs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
            + self
                .pending_publishes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
    }

    /// Document `id` of `coll` as this run sees it: committed, then the
    /// run's own document writes replayed.
    async fn current_doc(
        &self,
        app: &str,
        coll: &str,
        id: &str,
    ) -> Result<Option<Value>, HostError> {
        let get = DocsCall::Get {
            collection: coll.to_string(),
            id: id.to_string(),
        };
        let mut doc = match self.inner.docs(app, get).await? {
            Value::Null => None,
            doc => Some(doc),
        };
        let pending = self.pending_docs.lock().unwrap_or_else(|e| e.into_inner());
        for op in pending
            .iter()
            .filter(|op| op.collection() == coll && op.id() == id)
        {
            doc = replay_doc(op, doc)?;
        }
        Ok(doc)
    }

    /// Buffers a document write and returns what it returns in this run.
    async fn write_doc(&self, app: &str, op: DocOp) -> Result<Value, HostError> {
        let current = self.current_doc(app, op.collection(), op.id()).await?;
        let result = match (&op, &current) {
            (DocOp::Insert { collection, id, .. }, Some(_)) => {
                return Err(HostError::new(
                    Code::DocExists,
                    format!("collection {collection} already holds a document with id {id}"),
                ));
            }
            (DocOp::Insert { .. }, None) => DocOpResult::Inserted,
            (DocOp::Update { .. }, found) => DocOpResult::Updated {
                found: found.is_some(),
            },
            (DocOp::Replace { .. }, found) => DocOpResult::Replaced {
                found: found.is_some(),
            },
            (DocOp::Delete { .. }, found) => DocOpResult::Deleted {
                existed: found.is_some(),
            },
        };
        if current.is_some() || matches!(op, DocOp::Insert { .. }) {
            if self.pending_count() >= RUN_WRITES_MAX {
                return Err(too_many_writes());
            }
            let value = crate::docs::write_result(&op, &result);
            self.pending_docs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(op);
            return Ok(value);
        }
        Ok(crate::docs::write_result(&op, &result))
    }

    /// The value of `key` as this run sees it: committed (linearizable),
    /// then the run's own writes to it replayed in order.
    async fn current(&self, app: &str, key: &str) -> Result<Option<Value>, HostError> {
        let committed = self
            .inner
            .kv_get(app, key, Consistency::Linearizable)
            .await?;
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut value = committed;
        for op in pending.iter() {
            value = replay(op, key, value)?;
        }
        Ok(value)
    }

    fn push(&self, ops: Vec<KvOp>) -> Result<(), HostError> {
        if self.pending_count() + ops.len() > RUN_WRITES_MAX {
            return Err(too_many_writes());
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(ops);
        Ok(())
    }

    /// Buffers `op` and returns its result as seen by this run.
    async fn write(&self, app: &str, op: AtomicOp) -> Result<AtomicResult, HostError> {
        let op = self.inner.to_kv_op(op, self.inner.now_ms())?;
        if matches!(op, KvOp::Set { .. }) {
            // Nothing to compute: no read (a linearizable read costs the
            // leader a quorum round trip).
            self.push(vec![op])?;
            return Ok(AtomicResult::Set);
        }
        let key = key_of(&op).to_string();
        let before = self.current(app, &key).await?;
        let after = replay(&op, &key, before.clone())?;
        let result = match &op {
            KvOp::Set { .. } => AtomicResult::Set,
            KvOp::Delete { .. } => AtomicResult::Deleted {
                existed: before.is_some(),
            },
            KvOp::Incr { .. } => AtomicResult::Incr {
                value: after.as_ref().and_then(Value::as_i64).unwrap_or(0),
            },
            KvOp::Cas { .. } => AtomicResult::Cas {
                swapped: cas_matches(&op, &before),
            },
        };
        if matches!(result, AtomicResult::Cas { swapped: false }) {
            // A cas that does not match now writes nothing; buffering it
            // would fail the whole run at commit.
            return Ok(result);
        }
        self.push(vec![op])?;
        Ok(result)
    }
}

fn too_many_writes() -> HostError {
    HostError::new(
        Code::TooManyWrites,
        format!("a trigger run may make at most {RUN_WRITES_MAX} writes"),
    )
}

/// Document `doc` after `op` (an op on it).
fn replay_doc(op: &DocOp, doc: Option<Value>) -> Result<Option<Value>, HostError> {
    let parse = |bytes: &[u8]| -> Result<Value, HostError> {
        let mut value = decode_value(bytes)?;
        if let Value::Object(fields) = &mut value {
            fields.insert("_id".into(), Value::String(op.id().to_string()));
        }
        Ok(value)
    };
    Ok(match op {
        DocOp::Insert { doc: new, .. } | DocOp::Replace { doc: new, .. } => {
            if matches!(op, DocOp::Replace { .. }) && doc.is_none() {
                None
            } else {
                Some(parse(new)?)
            }
        }
        DocOp::Update { patch, .. } => match doc {
            Some(mut doc) => {
                picloud_storage::docs::merge_patch(&mut doc, &decode_value(patch)?);
                Some(doc)
            }
            None => None,
        },
        DocOp::Delete { .. } => None,
    })
}

fn key_of(op: &KvOp) -> &str {
    match op {
        KvOp::Set { key, .. }
        | KvOp::Delete { key }
        | KvOp::Incr { key, .. }
        | KvOp::Cas { key, .. } => key,
    }
}

fn cas_matches(op: &KvOp, current: &Option<Value>) -> bool {
    let KvOp::Cas { expected, .. } = op else {
        return false;
    };
    match (expected, current) {
        (None, None) => true,
        (Some(expected), Some(current)) => decode_value(expected)
            .map(|expected| picloud_storage::query::equal(&expected, current))
            .unwrap_or(false),
        _ => false,
    }
}

/// `value` of `key` after `op` (ops on other keys leave it alone).
fn replay(op: &KvOp, key: &str, value: Option<Value>) -> Result<Option<Value>, HostError> {
    if key_of(op) != key {
        return Ok(value);
    }
    Ok(match op {
        KvOp::Set { value: new, .. } => Some(decode_value(new)?),
        KvOp::Delete { .. } => None,
        KvOp::Incr { by, .. } => {
            let current = match &value {
                None => 0,
                Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
                Some(_) => {
                    return Err(HostError::new(
                        Code::NotANumber,
                        format!("key {key} does not hold an integer"),
                    ));
                }
            };
            let sum = current.checked_add(*by).ok_or_else(|| {
                HostError::new(
                    Code::IncrOverflow,
                    format!("incrementing key {key} overflows a 64-bit integer"),
                )
            })?;
            Some(Value::from(sum))
        }
        KvOp::Cas { new, .. } => {
            if cas_matches(op, &value) {
                new.as_deref().map(decode_value).transpose()?
            } else {
                value
            }
        }
    })
}

impl Host for RunHost {
    fn pubsub_publish<'a>(
        &'a self,
        app: &'a str,
        topic: &'a str,
        message: Value,
        kind: PublishKind,
    ) -> HostFuture<'a, Option<String>> {
        Box::pin(async move {
            let spec = self.topic_spec(topic)?;
            if kind == PublishKind::Durable && self.direct().is_none() {
                // Buffered and committed with the run's completion, so a
                // run executed twice publishes once. Its position is only
                // known then: the script gets nil.
                let message = self.inner.encode_message(topic, &message, kind, spec)?;
                if self.pending_count() >= RUN_WRITES_MAX {
                    return Err(too_many_writes());
                }
                self.pending_publishes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(RunPublish {
                        topic: topic.to_string(),
                        message,
                        retain: spec.retain,
                    });
                return Ok(None);
            }
            self.inner.publish(app, topic, &message, kind, spec).await
        })
    }

    fn realtime_token<'a>(
        &'a self,
        app: &'a str,
        topic: &'a str,
        ttl_secs: Option<f64>,
        subject: Option<String>,
    ) -> HostFuture<'a, String> {
        Box::pin(async move {
            self.topic_spec(topic)?;
            self.inner
                .realtime_token(app, topic, ttl_secs, subject)
                .await
        })
    }

    fn kv_get<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        consistency: Consistency,
    ) -> HostFuture<'a, Option<Value>> {
        if let Some(node) = self.direct() {
            return node.kv_get(app, key, consistency);
        }
        Box::pin(async move {
            self.inner.check_key(key)?;
            self.current(app, key).await
        })
    }

    fn kv_set<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        value: Value,
        ttl_secs: Option<f64>,
    ) -> HostFuture<'a, ()> {
        if let Some(node) = self.direct() {
            return node.kv_set(app, key, value, ttl_secs);
        }
        Box::pin(async move {
            let op = AtomicOp::Set {
                key: key.to_string(),
                value,
                ttl_secs,
            };
            self.write(app, op).await.map(|_| ())
        })
    }

    fn kv_delete<'a>(&'a self, app: &'a str, key: &'a str) -> HostFuture<'a, bool> {
        if let Some(node) = self.direct() {
            return node.kv_delete(app, key);
        }
        Box::pin(async move {
            let op = AtomicOp::Delete {
                key: key.to_string(),
            };
            match self.write(app, op).await? {
                AtomicResult::Deleted { existed } => Ok(existed),
                other => Err(HostError::new(Code::Internal, format!("{other:?}"))),
            }
        })
    }

    fn kv_incr<'a>(&'a self, app: &'a str, key: &'a str, by: i64) -> HostFuture<'a, i64> {
        if let Some(node) = self.direct() {
            return node.kv_incr(app, key, by);
        }
        Box::pin(async move {
            let op = AtomicOp::Incr {
                key: key.to_string(),
                by,
            };
            match self.write(app, op).await? {
                AtomicResult::Incr { value } => Ok(value),
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
        if let Some(node) = self.direct() {
            return node.kv_cas(app, key, expected, new);
        }
        Box::pin(async move {
            let op = AtomicOp::Cas {
                key: key.to_string(),
                expected,
                new,
            };
            match self.write(app, op).await? {
                AtomicResult::Cas { swapped } => Ok(swapped),
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
        // Committed keys only: a run's own writes are not listed.
        self.inner.kv_list(app, prefix, limit, cursor)
    }

    fn kv_atomic<'a>(
        &'a self,
        app: &'a str,
        ops: Vec<AtomicOp>,
    ) -> HostFuture<'a, Vec<AtomicResult>> {
        if let Some(node) = self.direct() {
            return node.kv_atomic(app, ops);
        }
        Box::pin(async move {
            // Buffered in order, all or nothing like `kv.atomic` outside a
            // run: a cas that does not match undoes the ops before it.
            let mark = self.pending.lock().unwrap_or_else(|e| e.into_inner()).len();
            let undo = |host: &RunHost| {
                host.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .truncate(mark);
            };
            let mut results = Vec::with_capacity(ops.len());
            for (index, op) in ops.into_iter().enumerate() {
                let key = match &op {
                    AtomicOp::Set { key, .. }
                    | AtomicOp::Delete { key }
                    | AtomicOp::Incr { key, .. }
                    | AtomicOp::Cas { key, .. } => key.clone(),
                };
                match self.write(app, op).await {
                    Ok(AtomicResult::Cas { swapped: false }) => {
                        undo(self);
                        return Err(HostError::new(
                            Code::AtomicCasFailed,
                            format!(
                                "atomic op {index} (cas on {key}) did not match; nothing was written"
                            ),
                        ));
                    }
                    Ok(result) => results.push(result),
                    Err(error) => {
                        undo(self);
                        return Err(error);
                    }
                }
            }
            Ok(results)
        })
    }

    /// Document writes are buffered like kv writes and commit with the
    /// run (`CompleteRun` with its docs). `docs.get` sees the run's own writes;
    /// `docs.find` and `docs.count` see committed documents only.
    fn docs<'a>(&'a self, app: &'a str, call: DocsCall) -> HostFuture<'a, Value> {
        if let Some(node) = self.direct() {
            return node.docs(app, call);
        }
        Box::pin(async move {
            match crate::docs::write_op(&call, self.inner.now_ms())? {
                Some(op) => self.write_doc(app, op).await,
                None => match &call {
                    DocsCall::Get { collection, id } => Ok(self
                        .current_doc(app, collection, id)
                        .await?
                        .unwrap_or(Value::Null)),
                    _ => self.inner.docs(app, call).await,
                },
            }
        })
    }

    fn log(&self, app: &str, level: LogLevel, message: String) {
        self.inner.log(app, level, message);
    }

    fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    fn secret_get<'a>(&'a self, app: &'a str, name: &'a str) -> HostFuture<'a, Option<Vec<u8>>> {
        self.inner.secret_get(app, name)
    }

    /// Passed straight through, in a run too: a request is not a write that
    /// can wait for the run's commit. A retried run sends it again, so
    /// scripts pass `ctx.delivery_id` as an idempotency key.
    fn http_request<'a>(
        &'a self,
        app: &'a str,
        request: OutboundRequest,
    ) -> HostFuture<'a, OutboundResponse> {
        self.inner.http_request(app, request)
    }

    // Mail passes straight through, in a run too: it is queued in the
    // outbox at once (see the module doc).
    fn email_send<'a>(&'a self, app: &'a str, email: OutgoingEmail) -> HostFuture<'a, String> {
        self.inner.email_send(app, email)
    }

    // Files pass straight through, in a run too (see the module doc).

    fn files_put<'a>(
        &'a self,
        app: &'a str,
        path: &'a str,
        data: Vec<u8>,
        content_type: Option<String>,
    ) -> HostFuture<'a, FileStat> {
        Box::pin(
            self.inner
                .put_file(app, path, data, content_type, self.run_depth()),
        )
    }

    fn files_get<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, Option<FileData>> {
        self.inner.files_get(app, path)
    }

    fn files_stat<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, Option<FileStat>> {
        self.inner.files_stat(app, path)
    }

    fn files_delete<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, bool> {
        Box::pin(self.inner.delete_file(app, path, self.run_depth()))
    }

    /// Users are not buffered with the run's writes: a password hash and a
    /// login token only mean something once committed, so a run's user
    /// calls go to the log at once (a retried run may repeat them).
    fn users<'a>(&'a self, app: &'a str, call: UsersCall) -> HostFuture<'a, Value> {
        Box::pin(self.inner.users_call(app, call, self.auth.clone()))
    }

    fn files_list<'a>(
        &'a self,
        app: &'a str,
        prefix: &'a str,
        limit: usize,
        cursor: Option<String>,
    ) -> HostFuture<'a, FileListPage> {
        self.inner.files_list(app, prefix, limit, cursor)
    }

    fn files_url<'a>(
        &'a self,
        app: &'a str,
        path: &'a str,
        options: FileUrlOptions,
    ) -> HostFuture<'a, String> {
        self.inner.files_url(app, path, options)
    }
}
