//! An in-memory `Host` for the integration tests, plus helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use picloud_lua_sdk::{
    AtomicOp, AtomicResult, Code, Consistency, DocsCall, FileData, FileListPage, FileStat,
    FileUrlOptions, Host, HostError, HostFuture, InvokeError, KvListPage, LogLevel,
    OutboundRequest, OutboundResponse, OutgoingEmail, Request, Response, SandboxLimits,
    ScriptSource, UsersCall, Vm,
};
use serde_json::Value;

/// Keys are `app/key`, so tests can check apps stay apart.
#[derive(Default)]
pub struct FakeHost {
    pub kv: Mutex<BTreeMap<String, Value>>,
    pub ttls: Mutex<BTreeMap<String, f64>>,
    pub logs: Mutex<Vec<(String, LogLevel, String)>>,
    pub reads: Mutex<Vec<(String, Consistency)>>,
    pub now_ms: AtomicU64,
    /// `kv.get` of this key never completes (a host call that hangs).
    pub hang_key: Mutex<Option<String>>,
    /// Every call fails with this error while set.
    pub fail_with: Mutex<Option<HostError>>,
    /// Secrets as `app/name` → bytes.
    pub secrets: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Every `docs.*` call, in order; each returns `docs_result`.
    pub docs_calls: Mutex<Vec<DocsCall>>,
    pub docs_result: Mutex<Value>,
    /// Every `http.*` call, in order; each answers `http_response`.
    pub http_requests: Mutex<Vec<OutboundRequest>>,
    pub http_response: Mutex<OutboundResponse>,
    /// Files as `app/path` → (stat, bytes).
    pub files: Mutex<BTreeMap<String, (FileStat, Vec<u8>)>>,
    /// Every `files.list` call's (prefix, limit, cursor), in order.
    pub file_lists: Mutex<Vec<(String, usize, Option<String>)>>,
    /// Every `files.url` call's (path, options), in order.
    pub file_urls: Mutex<Vec<(String, FileUrlOptions)>>,
    /// Every `email.send`, in order.
    pub emails: Mutex<Vec<OutgoingEmail>>,
    /// Every `users.*` call, in order; each answers `users_result` (`null`
    /// when unset).
    pub users_calls: Mutex<Vec<UsersCall>>,
    pub users_result: Mutex<Option<Result<Value, HostError>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl FakeHost {
    pub fn new() -> Arc<FakeHost> {
        let host = FakeHost::default();
        host.now_ms.store(1_700_000_000_123, Ordering::Relaxed);
        Arc::new(host)
    }

    pub fn get(&self, app: &str, key: &str) -> Option<Value> {
        lock(&self.kv).get(&format!("{app}/{key}")).cloned()
    }

    pub fn put(&self, app: &str, key: &str, value: Value) {
        lock(&self.kv).insert(format!("{app}/{key}"), value);
    }

    pub fn logs(&self) -> Vec<(String, LogLevel, String)> {
        lock(&self.logs).clone()
    }

    fn failure(&self) -> Result<(), HostError> {
        match lock(&self.fail_with).clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn cas_now(&self, full: &str, expected: Option<Value>, new: Option<Value>) -> bool {
        let mut kv = lock(&self.kv);
        if kv.get(full).cloned() != expected {
            return false;
        }
        match new {
            Some(value) => kv.insert(full.to_string(), value),
            None => kv.remove(full),
        };
        true
    }

    fn incr_now(&self, full: &str, by: i64) -> Result<i64, HostError> {
        let mut kv = lock(&self.kv);
        let current = match kv.get(full) {
            None => 0,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
            Some(_) => {
                return Err(HostError::new(
                    Code::NotANumber,
                    format!("{full} is not an integer"),
                ));
            }
        };
        let next = current + by;
        kv.insert(full.to_string(), Value::from(next));
        Ok(next)
    }
}

impl Host for FakeHost {
    fn users<'a>(&'a self, _app: &'a str, call: UsersCall) -> HostFuture<'a, Value> {
        Box::pin(async move {
            lock(&self.users_calls).push(call);
            lock(&self.users_result).clone().unwrap_or(Ok(Value::Null))
        })
    }

    fn kv_get<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        consistency: Consistency,
    ) -> HostFuture<'a, Option<Value>> {
        Box::pin(async move {
            self.failure()?;
            lock(&self.reads).push((key.to_string(), consistency));
            if lock(&self.hang_key).as_deref() == Some(key) {
                std::future::pending::<()>().await;
            }
            // Keys under `yield/` suspend once, as a real (replicated) read does.
            if key.starts_with("yield/") {
                tokio::task::yield_now().await;
            }
            Ok(self.get(app, key))
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
            self.failure()?;
            self.put(app, key, value);
            if let Some(ttl) = ttl_secs {
                lock(&self.ttls).insert(format!("{app}/{key}"), ttl);
            }
            Ok(())
        })
    }

    fn kv_delete<'a>(&'a self, app: &'a str, key: &'a str) -> HostFuture<'a, bool> {
        Box::pin(async move {
            self.failure()?;
            Ok(lock(&self.kv).remove(&format!("{app}/{key}")).is_some())
        })
    }

    fn kv_incr<'a>(&'a self, app: &'a str, key: &'a str, by: i64) -> HostFuture<'a, i64> {
        Box::pin(async move {
            self.failure()?;
            self.incr_now(&format!("{app}/{key}"), by)
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
            self.failure()?;
            Ok(self.cas_now(&format!("{app}/{key}"), expected, new))
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
            self.failure()?;
            let kv = lock(&self.kv);
            let start = format!("{app}/{prefix}");
            let mut items: Vec<(String, Value)> = kv
                .iter()
                .filter(|(k, _)| k.starts_with(&start))
                .map(|(k, v)| (k[app.len() + 1..].to_string(), v.clone()))
                .filter(|(k, _)| cursor.as_ref().is_none_or(|c| k > c))
                .collect();
            let more = items.len() > limit;
            items.truncate(limit);
            let cursor = if more {
                items.last().map(|(k, _)| k.clone())
            } else {
                None
            };
            Ok(KvListPage { items, cursor })
        })
    }

    fn kv_atomic<'a>(
        &'a self,
        app: &'a str,
        ops: Vec<AtomicOp>,
    ) -> HostFuture<'a, Vec<AtomicResult>> {
        Box::pin(async move {
            self.failure()?;
            // Not really atomic (a test double): checks cas ops first, then applies.
            for op in &ops {
                if let AtomicOp::Cas { key, expected, .. } = op
                    && lock(&self.kv).get(&format!("{app}/{key}")).cloned() != *expected
                {
                    return Err(HostError::new(
                        Code::AtomicCasFailed,
                        format!("cas on {key} failed"),
                    ));
                }
            }
            let mut results = Vec::new();
            for op in ops {
                results.push(match op {
                    AtomicOp::Set { key, value, .. } => {
                        self.put(app, &key, value);
                        AtomicResult::Set
                    }
                    AtomicOp::Delete { key } => AtomicResult::Deleted {
                        existed: lock(&self.kv).remove(&format!("{app}/{key}")).is_some(),
                    },
                    AtomicOp::Incr { key, by } => AtomicResult::Incr {
                        value: self.incr_now(&format!("{app}/{key}"), by)?,
                    },
                    AtomicOp::Cas { key, expected, new } => AtomicResult::Cas {
                        swapped: self.cas_now(&format!("{app}/{key}"), expected, new),
                    },
                });
            }
            Ok(results)
        })
    }

    fn log(&self, app: &str, level: LogLevel, message: String) {
        lock(&self.logs).push((app.to_string(), level, message));
    }

    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    fn docs<'a>(&'a self, _app: &'a str, call: DocsCall) -> HostFuture<'a, Value> {
        Box::pin(async move {
            self.failure()?;
            lock(&self.docs_calls).push(call);
            Ok(lock(&self.docs_result).clone())
        })
    }

    fn secret_get<'a>(&'a self, app: &'a str, name: &'a str) -> HostFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            self.failure()?;
            Ok(lock(&self.secrets).get(&format!("{app}/{name}")).cloned())
        })
    }

    fn http_request<'a>(
        &'a self,
        _app: &'a str,
        request: OutboundRequest,
    ) -> HostFuture<'a, OutboundResponse> {
        Box::pin(async move {
            self.failure()?;
            lock(&self.http_requests).push(request);
            Ok(lock(&self.http_response).clone())
        })
    }

    fn email_send<'a>(&'a self, app: &'a str, email: OutgoingEmail) -> HostFuture<'a, String> {
        Box::pin(async move {
            self.failure()?;
            let mut emails = lock(&self.emails);
            emails.push(email);
            Ok(format!("{app}/{}", emails.len()))
        })
    }

    fn files_put<'a>(
        &'a self,
        app: &'a str,
        path: &'a str,
        data: Vec<u8>,
        content_type: Option<String>,
    ) -> HostFuture<'a, FileStat> {
        Box::pin(async move {
            self.failure()?;
            let stat = FileStat {
                path: path.to_string(),
                size: data.len() as u64,
                content_type: content_type.unwrap_or_else(|| "application/octet-stream".into()),
                etag: format!("\"{}\"", data.len()),
                updated_ms: self.now_ms(),
            };
            lock(&self.files).insert(format!("{app}/{path}"), (stat.clone(), data));
            Ok(stat)
        })
    }

    fn files_get<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, Option<FileData>> {
        Box::pin(async move {
            self.failure()?;
            let files = lock(&self.files);
            Ok(files
                .get(&format!("{app}/{path}"))
                .map(|(stat, data)| FileData {
                    stat: stat.clone(),
                    data: data.clone(),
                }))
        })
    }

    fn files_stat<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, Option<FileStat>> {
        Box::pin(async move {
            self.failure()?;
            let files = lock(&self.files);
            Ok(files
                .get(&format!("{app}/{path}"))
                .map(|(stat, _)| stat.clone()))
        })
    }

    fn files_delete<'a>(&'a self, app: &'a str, path: &'a str) -> HostFuture<'a, bool> {
        Box::pin(async move {
            self.failure()?;
            Ok(lock(&self.files).remove(&format!("{app}/{path}")).is_some())
        })
    }

    fn files_list<'a>(
        &'a self,
        app: &'a str,
        prefix: &'a str,
        limit: usize,
        cursor: Option<String>,
    ) -> HostFuture<'a, FileListPage> {
        Box::pin(async move {
            self.failure()?;
            lock(&self.file_lists).push((prefix.to_string(), limit, cursor.clone()));
            let start = format!("{app}/{prefix}");
            let mut files: Vec<FileStat> = lock(&self.files)
                .iter()
                .filter(|(key, _)| key.starts_with(&start))
                .map(|(_, (stat, _))| stat.clone())
                .filter(|stat| cursor.as_ref().is_none_or(|c| &stat.path > c))
                .collect();
            let more = files.len() > limit;
            files.truncate(limit);
            let cursor = if more {
                files.last().map(|stat| stat.path.clone())
            } else {
                None
            };
            Ok(FileListPage { files, cursor })
        })
    }

    fn files_url<'a>(
        &'a self,
        app: &'a str,
        path: &'a str,
        options: FileUrlOptions,
    ) -> HostFuture<'a, String> {
        Box::pin(async move {
            self.failure()?;
            lock(&self.file_urls).push((path.to_string(), options));
            Ok(format!("/_/files/{app}/{path}?sig=x"))
        })
    }
}

pub const APP: &str = "testapp";

pub fn scripts(list: &[(&str, &str)]) -> Vec<ScriptSource> {
    list.iter()
        .map(|(name, source)| ScriptSource {
            name: name.to_string(),
            source: source.to_string(),
        })
        .collect()
}

/// A VM with one script `main.lua`.
pub fn vm_with(host: &Arc<FakeHost>, source: &str, limits: SandboxLimits) -> Vm {
    match Vm::new(APP, &scripts(&[("main.lua", source)]), host.clone(), limits) {
        Ok(vm) => vm,
        Err(error) => panic!("script failed to load: {error}"),
    }
}

pub fn vm(host: &Arc<FakeHost>, source: &str) -> Vm {
    vm_with(host, source, SandboxLimits::default())
}

pub fn get(path: &str) -> Request {
    Request {
        method: "GET".to_string(),
        path: path.to_string(),
        ..Request::default()
    }
}

pub async fn call(vm: &Vm) -> Result<Response, InvokeError> {
    vm.invoke("main.lua", get("/")).await
}

/// Runs `main.lua` and returns its body as text, failing the test on error.
pub async fn body(vm: &Vm) -> String {
    match call(vm).await {
        Ok(response) => String::from_utf8_lossy(&response.body).into_owned(),
        Err(error) => panic!("invoke failed: {error:?}"),
    }
}

/// A handler that returns the JSON encoding of whatever `expr` evaluates to.
pub fn returning(body: &str) -> String {
    format!("return function(req)\n{body}\nend")
}
