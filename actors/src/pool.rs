//! `AppRuntime`: one deployed version of one app on this node, with its pool of
//! sandboxed VMs.
//!
//! VMs are made on demand up to `vm_pool_size_max` and all of them are kept
//! while the app is busy (making a VM per request would cost more than the
//! request). The actor's periodic trim drops VMs unused for `vm_idle_ttl_ms`
//! down to `vm_idle_max`, so an app that went quiet gives its memory back. The
//! pool is a stack: the most recently used VM (warm caches) is taken first, and
//! the least recently used ones age out at the bottom. A VM whose invocation was
//! killed (timeout, memory) is dropped, never reused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use picloud_lua_sdk::{Host, LogLevel, ModuleSet, Request, Response, ScriptSource, Vm};
use serde_json::Value;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::app::TopicSpec;
use crate::app::routes::percent_decode;
use crate::app::{PublicFiles, RouteMiss, RouteTable};
use crate::config::ActorLimits;
use crate::error::AppError;
use crate::host::NodeHost;
use crate::run_host::{RunHost, RunWrites};
use crate::users::AuthPolicy;

/// Runs `build` (a VM's construction: every script's top level, bounded by
/// the sandbox's budget and timeout but synchronous) without holding up the
/// other tasks of this worker thread: on a multi-thread runtime the worker
/// hands its queue to another thread for the duration. On a current-thread
/// runtime (tests) it simply runs.
pub(crate) fn off_workers<T>(build: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(build),
        _ => build(),
    }
}

/// Writes a request's failure into the app's own log, where its author
/// looks, with the request id the client was given (clients are answered
/// without the script's internals and pointed here). `what` names the
/// request: `GET /path (script.lua)`.
pub(crate) fn log_request_failure(
    host: &NodeHost,
    app: &str,
    what: &str,
    request_id: &str,
    error: &picloud_lua_sdk::InvokeError,
) {
    host.log(
        app,
        LogLevel::Error,
        format!(
            "{what} failed: {error} ({}) [request {request_id}]",
            error.code()
        ),
    );
}

/// An HTTP request for an app, as the gateway hands it over.
#[derive(Debug, Clone, Default)]
pub struct AppRequest {
    pub method: String,
    /// The path below `/<app>`, starting with `/`.
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The gateway's id of this request (also its `x-request-id`), written
    /// with a failure into the app's log so a client's report finds the line.
    pub request_id: String,
}

/// A pooled VM and its host: a [`RunHost`] layer over the node host that
/// passes calls straight through for requests and buffers writes while the
/// VM executes a trigger run.
struct PooledVm {
    vm: Vm,
    host: Arc<RunHost>,
}

pub struct AppRuntime {
    pub app: String,
    pub version: u64,
    routes: RouteTable,
    /// `public/`: served when no route matches a GET or HEAD.
    public: Arc<PublicFiles>,
    /// `[app] expose_errors` of the manifest (unset: the node decides).
    pub expose_errors: Option<bool>,
    /// `[cors]` of the manifest, for the gateway (`app::cors::answer`).
    pub cors: Option<Arc<crate::app::cors::CorsPolicy>>,
    /// `[[topic]]` of the manifest: what its scripts may publish on and
    /// clients may subscribe to.
    topics: Arc<[TopicSpec]>,
    /// `[auth]` of the manifest, for `users.*`.
    auth: AuthPolicy,
    scripts: Vec<ScriptSource>,
    modules: Arc<ModuleSet>,
    host: Arc<NodeHost>,
    limits: Arc<ActorLimits>,
    /// Idle VMs with the time each was last used, oldest at the bottom.
    idle: Mutex<Vec<(PooledVm, Instant)>>,
    permits: Semaphore,
}

impl AppRuntime {
    pub fn new(
        app: String,
        version: u64,
        routes: RouteTable,
        scripts: Vec<ScriptSource>,
        modules: Arc<ModuleSet>,
        host: Arc<NodeHost>,
        limits: Arc<ActorLimits>,
    ) -> AppRuntime {
        AppRuntime {
            app,
            version,
            routes,
            public: Arc::default(),
            expose_errors: None,
            cors: None,
            topics: Arc::from(Vec::new()),
            auth: AuthPolicy::default(),
            scripts,
            modules,
            host,
            permits: Semaphore::new(limits.vm_pool_size_max.max(1)),
            limits,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The version's `[auth]`.
    pub fn with_auth(mut self, auth: AuthPolicy) -> Self {
        self.auth = auth;
        self
    }

    /// The version's `[[topic]]` declarations.
    pub fn with_topics(mut self, topics: Vec<TopicSpec>) -> Self {
        self.topics = topics.into();
        self
    }

    /// The version's `[auth]`, for the HTTP auth flows and session-auth
    /// topics.
    pub fn auth(&self) -> &AuthPolicy {
        &self.auth
    }

    /// The version's `[[topic]]` declarations.
    pub fn topics(&self) -> &[TopicSpec] {
        &self.topics
    }

    /// The version's static files and error exposure, from its manifest
    /// and bundle (a runtime without them serves no files and leaves error
    /// exposure to the node).
    pub fn with_public(mut self, public: Arc<PublicFiles>, expose_errors: Option<bool>) -> Self {
        self.public = public;
        self.expose_errors = expose_errors;
        self
    }

    /// The version's `[cors]` section.
    pub fn with_cors(mut self, cors: Option<crate::app::cors::CorsPolicy>) -> Self {
        self.cors = cors.map(Arc::new);
        self
    }

    fn take_idle(&self) -> Option<PooledVm> {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .pop()
            .map(|(vm, _)| vm)
    }

    fn give_back(&self, vm: PooledVm) {
        if !vm.vm.is_reusable() {
            return;
        }
        // Never more than the pool size: permits bound the VMs in use, so this
        // only guards against a bug turning the pool into a leak.
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if idle.len() < self.limits.vm_pool_size_max {
            idle.push((vm, Instant::now()));
        }
    }

    /// Drops VMs idle for longer than `vm_idle_ttl_ms`, keeping at least
    /// `vm_idle_max`. Returns how many were dropped.
    pub fn trim(&self, now: Instant) -> usize {
        let ttl = std::time::Duration::from_millis(self.limits.vm_idle_ttl_ms);
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let excess = idle.len().saturating_sub(self.limits.vm_idle_max);
        let stale = idle
            .iter()
            .take(excess)
            .take_while(|(_, used)| now.saturating_duration_since(*used) >= ttl)
            .count();
        // Dropping Lua states can take a moment; do it after the lock.
        let dropped: Vec<_> = idle.drain(..stale).collect();
        drop(idle);
        dropped.len()
    }

    /// Routes the request, takes a VM (waiting a bounded time) and runs the
    /// handler. A GET or HEAD that no route matches is served from
    /// `public/` when a file has that path.
    pub async fn serve(&self, request: AppRequest) -> Result<Response, AppError> {
        let found = self.routes.find(&request.method, &request.path);
        if found.is_err()
            && matches!(request.method.as_str(), "GET" | "HEAD")
            && let Some(response) = self.public.serve(
                &percent_decode(&request.path),
                request.headers.get("if-none-match").map(String::as_str),
            )
        {
            return Ok(response);
        }
        let route = found.map_err(|miss| match miss {
            RouteMiss::NotFound => AppError::RouteNotFound {
                app: self.app.clone(),
                method: request.method.clone(),
                path: request.path.clone(),
            },
            RouteMiss::MethodNotAllowed => AppError::MethodNotAllowed {
                app: self.app.clone(),
                method: request.method.clone(),
                path: request.path.clone(),
            },
        })?;
        let script = route.script.to_string();
        let params = route.params;
        let _permit = self.permit().await?;
        let pooled = self.vm()?;
        let lua_request = Request {
            method: request.method,
            path: request.path,
            params,
            query: request.query,
            headers: request.headers,
            body: request.body,
        };
        let method = lua_request.method.clone();
        let path = lua_request.path.clone();
        let request_id = request.request_id;
        let result = pooled.vm.invoke(&script, lua_request).await;
        self.give_back(pooled);
        if let Err(error) = &result {
            log_request_failure(
                &self.host,
                &self.app,
                &format!("{method} {path} ({script})"),
                &request_id,
                error,
            );
        }
        result.map_err(AppError::Invoke)
    }

    /// Runs trigger handler `script` with `event` and `ctx` on a VM of this
    /// app's pool (the same VMs and permits as requests), its writes
    /// buffered; returns them for the dispatcher to commit with the run.
    pub async fn run_event(
        &self,
        script: &str,
        event: &Value,
        ctx: &Value,
        depth: u32,
    ) -> Result<RunWrites, AppError> {
        // A run waits for a VM as long as its deadline allows (the
        // dispatcher claims at most a pool's worth of one app's runs), rather
        // than fail after `vm_wait_ms` like a request.
        let _permit = self.permits.acquire().await.map_err(|_| AppError::Busy {
            app: self.app.clone(),
            pool_size: self.limits.vm_pool_size_max,
            waited_ms: 0,
        })?;
        let pooled = self.vm()?;
        pooled.host.begin_run(depth);
        // The test-only fault switch: a panic here is a run whose binding
        // panicked (the dispatcher must fail the run and free its slot).
        // Named per script (`trigger_run/on_order.lua`) so a test hits the
        // run it means, not another trigger's (a cron tick) that comes first.
        #[cfg(feature = "fault-injection")]
        picloud_cluster::fault_point(&format!("trigger_run/{script}"));
        let outcome = pooled.vm.invoke_event(script, event, ctx).await;
        let writes = pooled.host.end_run();
        self.give_back(pooled);
        outcome.map(|()| writes).map_err(AppError::Invoke)
    }

    /// A slot in the pool for a request. The common case takes a free permit at once; only
    /// a full pool pays for a timer.
    async fn permit(&self) -> Result<SemaphorePermit<'_>, AppError> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.limits.vm_wait(), self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(AppError::Busy {
                app: self.app.clone(),
                pool_size: self.limits.vm_pool_size_max,
                waited_ms: self.limits.vm_wait_ms,
            }),
        }
    }

    /// An idle VM, or a new one (with its own host layer).
    fn vm(&self) -> Result<PooledVm, AppError> {
        if let Some(pooled) = self.take_idle() {
            return Ok(pooled);
        }
        let host = Arc::new(
            RunHost::new(self.host.clone(), self.topics.clone()).with_auth(self.auth.clone()),
        );
        let vm = off_workers(|| {
            Vm::with_modules(
                &self.app,
                &self.scripts,
                self.modules.clone(),
                host.clone(),
                self.limits.sandbox,
            )
        })
        .map_err(|e| AppError::LoadFailed {
            app: self.app.clone(),
            version: self.version,
            message: e.to_string(),
        })?;
        Ok(PooledVm { vm, host })
    }

    /// Invocations running now (for metrics and tests).
    pub fn invocations_running(&self) -> usize {
        self.limits
            .vm_pool_size_max
            .max(1)
            .saturating_sub(self.permits.available_permits())
    }

    /// VMs currently idle in the pool (for metrics and tests).
    pub fn idle_vms(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .len()
    }
}
