//! `AppActor`: the owner of one app on this node.
//!
//! It holds the app's current [`AppRuntime`] (routes, scripts, VM pool) and
//! swaps it when a deploy or rollback is applied. Requests are handed to the
//! script runtime as tasks, so the actor's mailbox only ever does
//! constant-time work and one slow invocation never holds up another.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use picloud_lua_sdk::{Host, InvokeError, Response};
use picloud_storage::StateReader;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::app::Bundle;
use crate::config::ActorLimits;
use crate::error::AppError;
use crate::pool::{AppRequest, AppRuntime};

pub enum AppMsg {
    /// Serve one request; the reply comes from the invocation task.
    Invoke {
        request: AppRequest,
        reply: RpcReplyPort<Result<Response, AppError>>,
    },
    /// Re-read the app's active version from local state; replies with it
    /// (`None` when the app has no version) once the new runtime is in place.
    Reload {
        reply: Option<RpcReplyPort<Option<u64>>>,
    },
    /// Drop VMs that have been idle too long (sent by the actor's own timer).
    Trim,
    /// Panics inside the actor. Exists so tests can prove supervision works;
    /// nothing outside tests sends it.
    CrashForTest,
}

/// What an `AppActor` needs to start.
#[derive(Clone)]
pub struct AppActorArgs {
    pub app: String,
    pub reader: StateReader,
    pub host: Arc<dyn Host>,
    pub limits: Arc<ActorLimits>,
    pub scripts: tokio::runtime::Handle,
}

pub struct AppActor;

pub struct AppState {
    args: AppActorArgs,
    runtime: Option<Arc<AppRuntime>>,
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
    Ok(Some(Arc::new(AppRuntime::new(
        args.app.clone(),
        version,
        checked.routes,
        checked.scripts,
        args.host.clone(),
        args.limits.clone(),
    ))))
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
        // The timer stops with the actor.
        myself.send_interval(
            std::time::Duration::from_millis(args.limits.vm_trim_interval_ms.max(10)),
            || AppMsg::Trim,
        );
        Ok(AppState { args, runtime })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: AppMsg,
        state: &mut AppState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AppMsg::Invoke { request, reply } => {
                let Some(runtime) = state.runtime.clone() else {
                    let _ = reply.send(Err(AppError::NotDeployed {
                        app: state.args.app.clone(),
                    }));
                    return Ok(());
                };
                let app = state.args.app.clone();
                state.args.scripts.spawn(async move {
                    // A panic inside an invocation (a bug in a binding, say)
                    // becomes this request's error; it never takes the actor
                    // down, and a dropped reply port always means "actor gone".
                    let result = AssertUnwindSafe(runtime.serve(request))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            tracing::error!(%app, "an invocation panicked");
                            Err(AppError::Invoke(InvokeError::Script {
                                message: "the invocation ended abnormally".to_string(),
                            }))
                        });
                    // The caller may have given up (client went away): nothing to do.
                    let _ = reply.send(result);
                });
            }
            AppMsg::Reload { reply } => {
                match load_runtime(&state.args) {
                    Ok(runtime) => {
                        let unchanged = match (&state.runtime, &runtime) {
                            (Some(old), Some(new)) => old.version == new.version,
                            (None, None) => true,
                            _ => false,
                        };
                        if !unchanged {
                            state.runtime = runtime;
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(state.runtime.as_ref().map(|r| r.version));
                        }
                    }
                    Err(AppError::AppNotFound { .. }) => {
                        // The app was deleted: this actor's work is over.
                        if let Some(reply) = reply {
                            let _ = reply.send(None);
                        }
                        myself.stop(Some("app deleted".to_string()));
                    }
                    Err(error) => {
                        // Keep serving the version we have; the next reload retries.
                        tracing::error!(app = %state.args.app, %error, "reload failed");
                        if let Some(reply) = reply {
                            let _ = reply.send(state.runtime.as_ref().map(|r| r.version));
                        }
                    }
                }
            }
            AppMsg::Trim => {
                if let Some(runtime) = &state.runtime {
                    runtime.trim(tokio::time::Instant::now());
                }
            }
            AppMsg::CrashForTest => {
                panic!("app actor {} crashed on request", state.args.app);
            }
        }
        Ok(())
    }
}
