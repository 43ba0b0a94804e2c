//! `NodeSupervisor`: starts, restarts and stops the `AppActor`s of this node,
//! and `Apps`, the handle the gateway uses to reach them.
//!
//! ```text
//!   gateway ──Apps::invoke──▶ registry (app → actor + runtime slot) ──slot──▶ AppRuntime::serve
//!                   │ miss
//!                   └──Ensure──▶ NodeSupervisor ──spawn_linked──▶ AppActor (publishes the slot)
//!   state apply ──AppliedEvent──▶ NodeSupervisor ──Reload──▶ AppActor
//!   AppActor panics ──ActorFailed──▶ NodeSupervisor ──(backoff)──▶ restart
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use picloud_cluster::Duty;
use picloud_lua_sdk::{InvokeError, Response};
use picloud_storage::{AppliedEvent, StateReader};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::broadcast::error::RecvError;

use crate::app::AppName;
use crate::app::domains::Domains;
use crate::app_actor::{AppActor, AppActorArgs, AppMsg, RuntimeSlot};
use crate::config::ActorLimits;
use crate::cpu::{CpuShareTimeout, CpuShares};
use crate::duties::{ActorRestarts, restart_delay};
use crate::error::AppError;
use crate::host::NodeHost;
use crate::pool::{AppRequest, AppRuntime, log_request_failure};

/// A running app on this node: its actor and the slot it publishes its runtime in.
#[derive(Clone)]
pub struct AppHandle {
    pub actor: ActorRef<AppMsg>,
    pub slot: RuntimeSlot,
}

type Registry = Arc<RwLock<HashMap<String, AppHandle>>>;

pub enum SupervisorMsg {
    /// Make sure `app` has a running actor; reply with it.
    Ensure {
        app: String,
        reply: RpcReplyPort<Result<AppHandle, AppError>>,
    },
    /// An applied command changed `app`: reload its actor if it runs.
    Changed { app: String },
    /// Like `Changed`, and reply once the actor has the new version.
    Reload {
        app: String,
        reply: RpcReplyPort<Option<u64>>,
    },
    /// The change feed lagged: reload every running app.
    ReloadAll,
    /// Restart a crashed app after its backoff.
    Restart { app: String },
}

/// What the supervisor needs.
#[derive(Clone)]
pub struct SupervisorArgs {
    pub reader: StateReader,
    pub host: Arc<NodeHost>,
    pub limits: Arc<ActorLimits>,
    restarts: Arc<ActorRestarts>,
    registry: Registry,
}

pub struct NodeSupervisor;

pub struct SupervisorState {
    args: SupervisorArgs,
    /// Consecutive failures per app, for the restart backoff.
    failures: HashMap<String, u32>,
}

impl SupervisorState {
    fn app_args(&self, app: &str, slot: RuntimeSlot) -> AppActorArgs {
        AppActorArgs {
            app: app.to_string(),
            reader: self.args.reader.clone(),
            host: self.args.host.clone(),
            limits: self.args.limits.clone(),
            slot,
        }
    }

    fn registered(&self, app: &str) -> Option<AppHandle> {
        self.args
            .registry
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(app)
            .cloned()
    }

    fn unregister_actor(&self, actor_id: ractor::ActorId) -> Option<String> {
        let mut registry = self
            .args
            .registry
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let app = registry
            .iter()
            .find(|(_, handle)| handle.actor.get_id() == actor_id)
            .map(|(app, _)| app.clone())?;
        registry.remove(&app);
        Some(app)
    }

    async fn start_app(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        app: &str,
    ) -> Result<AppHandle, AppError> {
        if let Some(handle) = self.registered(app) {
            return Ok(handle);
        }
        let slot = RuntimeSlot::default();
        let (actor, _join) = AppActor::spawn_linked(
            None,
            AppActor,
            self.app_args(app, slot.clone()),
            myself.get_cell(),
        )
        .await
        .map_err(|e| spawn_error(app, e))?;
        let handle = AppHandle { actor, slot };
        self.args
            .registry
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(app.to_string(), handle.clone());
        Ok(handle)
    }
}

/// `pre_start` errors carry the load error's text; turn "not found" back into
/// the typed error the gateway answers 404 to.
fn spawn_error(app: &str, error: ractor::SpawnErr) -> AppError {
    let text = error.to_string();
    if text.contains(
        &AppError::AppNotFound {
            app: app.to_string(),
        }
        .to_string(),
    ) {
        AppError::AppNotFound {
            app: app.to_string(),
        }
    } else {
        AppError::Unavailable {
            app: app.to_string(),
            message: text,
        }
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            args,
            failures: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Ensure { app, reply } => {
                let result = state.start_app(&myself, &app).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Changed { app } => {
                if let Some(handle) = state.registered(&app) {
                    let _ = handle.actor.cast(AppMsg::Reload { reply: None });
                }
            }
            SupervisorMsg::Reload { app, reply } => {
                let version = match state.registered(&app) {
                    Some(handle) => handle
                        .actor
                        .call(|port| AppMsg::Reload { reply: Some(port) }, None)
                        .await
                        .ok()
                        .and_then(|result| result.success_or(()).ok())
                        .flatten(),
                    None => state
                        .args
                        .reader
                        .app(&app)
                        .ok()
                        .flatten()
                        .and_then(|r| r.active_version),
                };
                let _ = reply.send(version);
            }
            SupervisorMsg::ReloadAll => {
                let actors: Vec<_> = state
                    .args
                    .registry
                    .read()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .values()
                    .map(|handle| handle.actor.clone())
                    .collect();
                for actor in actors {
                    let _ = actor.cast(AppMsg::Reload { reply: None });
                }
            }
            SupervisorMsg::Restart { app } => {
                if let Err(error) = state.start_app(&myself, &app).await {
                    tracing::warn!(%app, %error, "app actor restart failed");
                }
            }
        }
        Ok(())
    }

    // The default supervisor stops itself when a child exits; ours restarts the
    // child with exponential backoff and keeps going.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(app) = state.unregister_actor(cell.get_id()) {
                    let failures = state.failures.entry(app.clone()).or_insert(0);
                    *failures = failures.saturating_add(1);
                    let delay = restart_delay(&state.args.limits, *failures);
                    state.args.restarts.record("app");
                    tracing::error!(
                        actor = "app",
                        %app,
                        %error,
                        delay_ms = delay.as_millis() as u64,
                        "app actor crashed; restarting"
                    );
                    myself.send_after(delay, move || SupervisorMsg::Restart { app });
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(app) = state.unregister_actor(cell.get_id()) {
                    state.failures.remove(&app);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The gateway's handle on this node's apps.
#[derive(Clone)]
pub struct Apps {
    supervisor: ActorRef<SupervisorMsg>,
    registry: Registry,
    reader: StateReader,
    /// Where invocations run: the node's script runtime, never the threads
    /// that accept HTTP (see `runtime/src/serve.rs`).
    scripts: tokio::runtime::Handle,
    /// How many script threads one app may occupy (see `cpu.rs`).
    shares: Arc<CpuShares>,
    /// A request's whole deadline (`ActorLimits::invocation_deadline`).
    request_deadline: Duration,
    /// For the app's log: a request that failed outside its runtime (late,
    /// or panicked) is logged here with its request id, as the runtime logs
    /// the failures it sees (clients are pointed at the log).
    host: Arc<NodeHost>,
    /// Domain → app, rebuilt by the change feed (`app/domains.rs`).
    domains: Domains,
}

/// Aborts a spawned invocation when the request that waits for it goes away
/// (the client hung up), as dropping the request's own future used to.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Apps {
    /// Starts the node supervisor. Invocations run on `scripts`, each app on
    /// at most its share of them.
    pub async fn start(
        reader: StateReader,
        host: Arc<NodeHost>,
        limits: Arc<ActorLimits>,
        scripts: tokio::runtime::Handle,
        shares: Arc<CpuShares>,
        restarts: Arc<ActorRestarts>,
    ) -> Result<Apps, ractor::SpawnErr> {
        let registry: Registry = Arc::new(RwLock::new(HashMap::new()));
        let request_deadline = limits.invocation_deadline();
        let args = SupervisorArgs {
            reader: reader.clone(),
            host: host.clone(),
            limits,
            restarts,
            registry: registry.clone(),
        };
        let (supervisor, _join) = NodeSupervisor::spawn(None, NodeSupervisor, args).await?;
        Ok(Apps {
            supervisor,
            registry,
            reader,
            scripts,
            shares,
            request_deadline,
            host,
            domains: Domains::default(),
        })
    }

    /// This node's domain → app map (`domains` in the manifests).
    pub fn domains(&self) -> &Domains {
        &self.domains
    }

    fn unavailable(app: &str, message: impl ToString) -> AppError {
        AppError::Unavailable {
            app: app.to_string(),
            message: message.to_string(),
        }
    }

    /// The running actor of `app`, starting it if needed.
    pub async fn actor(&self, app: &AppName) -> Result<ActorRef<AppMsg>, AppError> {
        self.handle(app).await.map(|handle| handle.actor)
    }

    /// The running app's handle, starting its actor if needed.
    async fn handle(&self, app: &str) -> Result<AppHandle, AppError> {
        let cached = self
            .registry
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(app)
            .cloned();
        if let Some(handle) = cached {
            return Ok(handle);
        }
        self.ask(app, |app, reply| SupervisorMsg::Ensure { app, reply })
            .await?
    }

    /// One request to the supervisor about `app`, answered on a reply port.
    async fn ask<T: Send + 'static>(
        &self,
        app: &str,
        message: impl FnOnce(String, RpcReplyPort<T>) -> SupervisorMsg,
    ) -> Result<T, AppError> {
        self.supervisor
            .call(|reply| message(app.to_string(), reply), None)
            .await
            .map_err(|e| Self::unavailable(app, e))?
            .success_or(())
            .map_err(|_| Self::unavailable(app, "supervisor did not answer"))
    }

    /// The feed of applied changes into the supervisor (a deploy reloads the
    /// app's actor), as a duty (`app_events`) for the node's duty supervisor.
    /// A restarted run first reloads every running app: changes applied
    /// while no run listened are not lost.
    pub fn change_feed(&self) -> Duty {
        let (reader, supervisor) = (self.reader.clone(), self.supervisor.clone());
        let domains = self.domains.clone();
        Duty::new("app_events", move || {
            let mut events = reader.subscribe();
            let (supervisor, domains, reader) =
                (supervisor.clone(), domains.clone(), reader.clone());
            async move {
                let mut message = SupervisorMsg::ReloadAll;
                loop {
                    // The domain map follows the same feed as the app
                    // actors, so a deploy's domains are served on this
                    // node once it has applied the deploy.
                    match &message {
                        SupervisorMsg::Changed { app } => domains.refresh(&reader, Some(app)),
                        _ => domains.refresh(&reader, None),
                    }
                    if supervisor.cast(message).is_err() {
                        return;
                    }
                    picloud_cluster::fault_point("app_events");
                    message = loop {
                        break match events.recv().await {
                            Ok(AppliedEvent::AppChanged { app }) => SupervisorMsg::Changed { app },
                            // The users' own subscriber (`users::session_actor`) acts on these.
                            Ok(AppliedEvent::SessionsRevoked(_)) => continue,
                            Err(RecvError::Lagged(_)) => SupervisorMsg::ReloadAll,
                            Err(RecvError::Closed) => return,
                        };
                    };
                }
            }
        })
    }

    /// The current runtime of `app` (its actor started if needed): where
    /// the app's trigger runs execute, on the same VM pool as its requests.
    pub async fn runtime(&self, app: &str) -> Result<Arc<AppRuntime>, AppError> {
        self.handle(app)
            .await?
            .slot
            .load()
            .ok_or_else(|| self.missing(app))
    }

    /// Serves one request with the app's current runtime, on the script
    /// runtime: the caller's thread (an HTTP worker) only waits.
    pub async fn invoke(&self, app: &AppName, request: AppRequest) -> Result<Response, AppError> {
        let app = app.as_str();
        let runtime = self.runtime(app).await?;
        let (method, path, request_id) = (
            request.method.clone(),
            request.path.clone(),
            request.request_id.clone(),
        );
        let deadline = tokio::time::Instant::now() + self.request_deadline;
        let invocation =
            self.shares
                .run(app, deadline, async move { runtime.serve(request).await });
        let mut task = AbortOnDrop(self.scripts.spawn(invocation));
        let failed = |error: InvokeError| {
            let what = format!("{method} {path}");
            log_request_failure(&self.host, app, &what, &request_id, &error);
            Err(AppError::Invoke(error))
        };
        let late = || {
            failed(InvokeError::Timeout {
                message: format!(
                    "request exceeded its {} ms, most of it waiting for its app's share of \
                     script threads (app_script_threads), taken by the app's other invocations",
                    self.request_deadline.as_millis()
                ),
            })
        };
        // The deadline also covers an invocation that got its permit late and
        // started its own budget then; dropping `task` aborts it at its next
        // yield.
        match tokio::time::timeout_at(deadline, &mut task.0).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(CpuShareTimeout))) | Err(_) => late(),
            // A panic inside an invocation (a bug in a binding, say) becomes
            // this request's error; it never takes the gateway task or the app down.
            Ok(Err(error)) => {
                tracing::error!(%app, %error, "an invocation panicked");
                failed(InvokeError::Script {
                    message: "the invocation ended abnormally".to_string(),
                })
            }
        }
    }

    /// Why an app has no runtime: deleted a moment ago (its actor is still
    /// being removed), or never deployed.
    fn missing(&self, app: &str) -> AppError {
        match self.reader.app(app) {
            Ok(Some(_)) => AppError::NotDeployed {
                app: app.to_string(),
            },
            Ok(None) => AppError::AppNotFound {
                app: app.to_string(),
            },
            Err(error) => AppError::Storage {
                message: error.to_string(),
            },
        }
    }

    /// Reloads `app` now (after a deploy or rollback on this node) and returns
    /// the version it serves.
    pub async fn reload(&self, app: &AppName) -> Result<Option<u64>, AppError> {
        self.ask(app, |app, reply| SupervisorMsg::Reload { app, reply })
            .await
    }

    /// Apps with a running actor on this node.
    pub fn running(&self) -> Vec<String> {
        let mut apps: Vec<String> = self
            .registry
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .keys()
            .cloned()
            .collect();
        apps.sort();
        apps
    }

    /// Stops the supervisor and every app actor.
    pub fn stop(&self) {
        self.supervisor.stop(Some("node shutting down".to_string()));
    }
}
