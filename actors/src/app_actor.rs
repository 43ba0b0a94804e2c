//! `AppActor`: the owner of one app on this node.
//!
//! The actor is the app's control path: it loads the active version's routes
//! and scripts into an [`AppRuntime`] (with its VM pool), swaps it when a
//! deploy or rollback is applied, trims idle VMs on a timer, and is restarted
//! by the supervisor if it crashes. It publishes the current runtime in a
//! [`RuntimeSlot`]; requests read the slot and run on the gateway's own task
//! (the data path), so serving a request costs no mailbox round trip and no
//! thread hop, and one slow invocation never waits behind another.
//!
//! ```text
//!   control: AppliedEvent ─▶ supervisor ─Reload─▶ AppActor ─load─▶ slot.store(runtime)
//!   data:    gateway ─slot.load()─▶ AppRuntime::serve ─▶ VM from the pool
//! ```

use std::sync::{Arc, RwLock};

use picloud_storage::StateReader;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::app::Bundle;
use crate::config::ActorLimits;
use crate::error::AppError;
use crate::host::NodeHost;
use crate::pool::AppRuntime;

/// Where an app's actor publishes the runtime requests are served from.
/// `None` while the app has no deployed version.
#[derive(Clone, Default)]
pub struct RuntimeSlot(Arc<RwLock<Option<Arc<AppRuntime>>>>);

impl RuntimeSlot {
    pub fn load(&self) -> Option<Arc<AppRuntime>> {
        self.0
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    fn store(&self, runtime: Option<Arc<AppRuntime>>) {
        *self.0.write().unwrap_or_else(|poison| poison.into_inner()) = runtime;
    }
}

pub enum AppMsg {
    /// Re-read the app's active version from local state; replies with it
    /// (`None` when the app has no version) once the new runtime is published.
    Reload {
        reply: Option<RpcReplyPort<Option<u64>>>,
    },
    /// Drop VMs that have been idle too long (sent by the actor's own timer).
    Trim,
}

/// What an `AppActor` needs to start.
#[derive(Clone)]
pub struct AppActorArgs {
    pub app: String,
    pub reader: StateReader,
    pub host: Arc<NodeHost>,
    pub limits: Arc<ActorLimits>,
    pub slot: RuntimeSlot,
}

pub struct AppActor;

pub struct AppState {
    args: AppActorArgs,
}

/// Loads the active version of `app` from local state. `Ok(None)`: the app
/// exists but has nothing deployed. `Err(AppNotFound)`: the app is gone.
pub fn load_runtime(args: &AppActorArgs) -> Result<Option<Arc<AppRuntime>>, AppError> {
    let storage = |e: picloud_storage::StorageError| AppError::Storage {
        message: e.to_string(),
    };
    let record = args
        .reader
        .app(&args.app)
        .map_err(storage)?
        .ok_or_else(|| AppError::AppNotFound {
            app: args.app.clone(),
        })?;
    let Some(version) = record.active_version else {
        return Ok(None);
    };
    let load_failed = |message: String| AppError::LoadFailed {
        app: args.app.clone(),
        version,
        message,
    };
    let bytes = args
        .reader
        .bundle(&args.app, version)
        .map_err(storage)?
        .ok_or_else(|| load_failed("bundle missing from state".to_string()))?;
    let checked = Bundle::decode(&bytes)
        .and_then(|bundle| bundle.check())
        .map_err(|e| load_failed(e.message))?;
    Ok(Some(Arc::new(
        AppRuntime::new(
            args.app.clone(),
            version,
            checked.routes,
            checked.scripts,
            checked.modules,
            args.host.clone(),
            args.limits.clone(),
        )
        .with_topics(checked.manifest.topics.clone())
        .with_auth(checked.manifest.auth.clone())
        .with_public(checked.public, checked.manifest.expose_errors)
        .with_cors(checked.manifest.cors),
    )))
}

impl AppState {
    fn version(&self) -> Option<u64> {
        self.args.slot.load().map(|runtime| runtime.version)
    }
}

impl Actor for AppActor {
    type Msg = AppMsg;
    type State = AppState;
    type Arguments = AppActorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AppActorArgs,
    ) -> Result<AppState, ActorProcessingErr> {
        let runtime = load_runtime(&args)?;
        args.slot.store(runtime);
        // The timer stops with the actor.
        myself.send_interval(
            std::time::Duration::from_millis(args.limits.vm_trim_interval_ms.max(10)),
            || AppMsg::Trim,
        );
        Ok(AppState { args })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: AppMsg,
        state: &mut AppState,
    ) -> Result<(), ActorProcessingErr> {
        // The test-only fault switch (`fault-injection` builds): tests arm
        // `app/NAME` to prove a crashed app actor is restarted.
        #[cfg(feature = "fault-injection")]
        picloud_cluster::fault_point(&format!("app/{}", state.args.app));
        match message {
            AppMsg::Reload { reply } => {
                match load_runtime(&state.args) {
                    Ok(runtime) => {
                        let new_version = runtime.as_ref().map(|r| r.version);
                        // Same version: keep the warm pool.
                        if new_version != state.version() {
                            state.args.slot.store(runtime);
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(state.version());
                        }
                    }
                    Err(AppError::AppNotFound { .. }) => {
                        // The app was deleted: this actor's work is over.
                        state.args.slot.store(None);
                        if let Some(reply) = reply {
                            let _ = reply.send(None);
                        }
                        myself.stop(Some("app deleted".to_string()));
                    }
                    Err(error) => {
                        // Keep serving the version we have; the next reload retries.
                        tracing::error!(app = %state.args.app, %error, "reload failed");
                        if let Some(reply) = reply {
                            let _ = reply.send(state.version());
                        }
                    }
                }
            }
            AppMsg::Trim => {
                if let Some(runtime) = state.args.slot.load() {
                    runtime.trim(tokio::time::Instant::now());
                }
            }
        }
        Ok(())
    }
}
