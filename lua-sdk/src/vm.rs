//! `Vm`: one sandboxed Lua state holding every handler of one app.
//!
//! ```text
//! invoke(script, request)
//!   budget.arm()                      fresh instructions, deadline, kill flag
//!   req = request_to_lua()            (allocations count against the cap)
//!   timeout(limits.timeout, handler.call_async(req))
//!      │  Lua runs; hook every N instructions checks budget + deadline
//!      │  kv.* yield to the host future (no instructions spent)
//!   budget.disarm()
//!   kill flag set?  → Timeout / Memory (whatever the Lua result was)
//!   else Lua error  → Script / Host / Memory
//!   else            → response_from_lua()
//! ```

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

use mlua::{Function, Lua, Value};
use serde::{Deserialize, Serialize};

use crate::budget::Budget;
use crate::compile::compile;
use crate::convert::{ConvertError, VALUE_TOO_LARGE};
use crate::error::{CompileError, ErrorKind, InvokeError, KillReason, classify, strip_traceback};
use crate::host::Host;
use crate::host::HostError;
use crate::http::{Request, Response, ResponseError, request_to_lua, response_from_lua};
use crate::limits::SandboxLimits;
use crate::modules::ModuleSet;

/// One script of an app bundle.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScriptSource {
    /// Path inside the bundle, e.g. `greet.lua` or `api/list.lua`.
    pub name: String,
    pub source: String,
}

/// A sandboxed Lua VM for one app. One invocation at a time (the pool
/// guarantees it); `Send + Sync` so invocations can hop runtime threads.
pub struct Vm {
    lua: Lua,
    handlers: HashMap<String, Function>,
    budget: Arc<Budget>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("scripts", &self.handlers.keys().collect::<Vec<_>>())
            .field("memory_used_bytes", &self.memory_used_bytes())
            .field("reusable", &self.is_reusable())
            .finish()
    }
}

impl Vm {
    /// A fresh sandboxed VM for `app` with every script loaded. Each chunk runs
    /// once and must return its handler function; building the sandbox and
    /// running every chunk share one invocation's limits (instructions,
    /// memory, wall clock).
    pub fn new(
        app: &str,
        scripts: &[ScriptSource],
        host: Arc<dyn Host>,
        limits: SandboxLimits,
    ) -> Result<Vm, CompileError> {
        Vm::with_modules(app, scripts, Arc::default(), host, limits)
    }

    /// [`Vm::new`] with `modules` loadable through `require`.
    pub fn with_modules(
        app: &str,
        scripts: &[ScriptSource],
        modules: Arc<ModuleSet>,
        host: Arc<dyn Host>,
        limits: SandboxLimits,
    ) -> Result<Vm, CompileError> {
        let budget = Arc::new(Budget::new(limits));
        // One budget and one deadline for the whole construction: the sandbox
        // and every script's top level together get what one invocation gets,
        // so a bundle of many slow scripts cannot hold a thread for N timeouts.
        budget.arm();
        let built = Self::build(app, scripts, modules, host, &budget);
        budget.disarm();
        built
    }

    /// The body of [`Vm::with_modules`], run with the budget armed.
    fn build(
        app: &str,
        scripts: &[ScriptSource],
        modules: Arc<ModuleSet>,
        host: Arc<dyn Host>,
        budget: &Arc<Budget>,
    ) -> Result<Vm, CompileError> {
        let lua = crate::sandbox::new_state(app, host, modules, budget).map_err(|e| {
            CompileError::new("<sandbox>", None, format!("cannot build the sandbox: {e}"))
        })?;
        // Built now so that an early return drops it through `Drop for Vm`.
        let mut vm = Vm {
            lua,
            handlers: HashMap::with_capacity(scripts.len()),
            budget: Arc::clone(budget),
        };
        for script in scripts {
            let chunk = compile(&vm.lua, &script.name, &script.source)?;
            let result = chunk.call::<Value>(());
            let handler = match (vm.budget.killed(), result) {
                (Some(reason), _) => {
                    return Err(CompileError::new(
                        &script.name,
                        None,
                        kill_message(reason, vm.budget.limits()),
                    ));
                }
                (None, Ok(Value::Function(handler))) => handler,
                (None, Ok(other)) => {
                    return Err(CompileError::new(
                        &script.name,
                        None,
                        format!("script must return a function, got {}", other.type_name()),
                    ));
                }
                (None, Err(error)) => {
                    return Err(load_error(&script.name, &error, vm.budget.limits()));
                }
            };
            vm.handlers.insert(script.name.clone(), handler);
        }
        Ok(vm)
    }

    /// Runs handler `script` with `request` under the per-invocation limits.
    pub async fn invoke(&self, script: &str, request: Request) -> Result<Response, InvokeError> {
        let handler = self
            .handlers
            .get(script)
            .ok_or_else(|| InvokeError::NoSuchScript {
                script: script.to_string(),
            })?;
        self.budget.arm();
        // The response is converted while the budget is still armed: a large
        // `json =` costs work that must count against the invocation. After a
        // kill the conversion stops at its first charge; the check below wins.
        let outcome = self
            .run(handler, &request)
            .await
            .map(|value| response_from_lua(&self.lua, value));
        self.budget.disarm();
        // The kill flag decides, not the error value: a kill may have been
        // caught and replaced (by a `__close` handler, say) before unwinding
        // reached us, and a killed run must never count as a success.
        if let Some(reason) = self.budget.killed() {
            return Err(kill_error(reason, self.budget.limits()));
        }
        match outcome {
            Ok(converted) => converted.map_err(|error| match error {
                ResponseError::Invalid(message) => InvokeError::InvalidResponse {
                    message: format!("{script}: {message}"),
                },
                // Too large a `json =` is the same coded error as too large a
                // kv value: `value_too_large`, not a malformed response.
                ResponseError::Json(ConvertError::TooLarge(problem)) => {
                    InvokeError::Host(HostError::new(
                        VALUE_TOO_LARGE,
                        format!("{script}: response json: {problem}"),
                    ))
                }
                ResponseError::Json(ConvertError::Kill(kill)) => {
                    kill_error(kill.reason, self.budget.limits())
                }
                ResponseError::Json(ConvertError::Invalid(problem)) => {
                    InvokeError::InvalidResponse {
                        message: format!("{script}: response json: {problem}"),
                    }
                }
            }),
            Err(error) => Err(self.invoke_error(&error)),
        }
    }

    /// Runs handler `script` as a trigger: `handler(event, ctx)` with both
    /// given as JSON, under the per-invocation limits. What it returns is
    /// ignored; an error, a kill or a host failure is the run's failure.
    pub async fn invoke_event(
        &self,
        script: &str,
        event: &serde_json::Value,
        ctx: &serde_json::Value,
    ) -> Result<(), InvokeError> {
        let handler = self
            .handlers
            .get(script)
            .ok_or_else(|| InvokeError::NoSuchScript {
                script: script.to_string(),
            })?;
        self.budget.arm();
        let args = (|| {
            Ok::<_, mlua::Error>(mlua::MultiValue::from_vec(vec![
                crate::convert::json_to_lua(&self.lua, event)?,
                crate::convert::json_to_lua(&self.lua, ctx)?,
            ]))
        })();
        let outcome = match args {
            Ok(args) => self.call(handler, args).await,
            Err(error) => Err(error),
        };
        self.budget.disarm();
        if let Some(reason) = self.budget.killed() {
            return Err(kill_error(reason, self.budget.limits()));
        }
        outcome
            .map(|_| ())
            .map_err(|error| self.invoke_error(&error))
    }

    async fn run(&self, handler: &Function, request: &Request) -> mlua::Result<Value> {
        let req = request_to_lua(&self.lua, request)?;
        self.call(handler, req).await
    }

    /// Calls `handler(args)` on its own Lua thread, bounded by the wall clock.
    async fn call(&self, handler: &Function, args: impl mlua::IntoLuaMulti) -> mlua::Result<Value> {
        // The hook preempts CPU loops; this timeout covers time spent awaiting
        // host calls, where no instruction runs. The call is pinned here so it
        // is dropped (and its Lua thread reset) only after the kill is recorded.
        // The handler runs in a thread we create, so the hook can tell it apart
        // from the script's own coroutines and yield only it.
        let thread = self.lua.create_thread(handler.clone())?;
        self.budget.set_invocation_thread(Some(&thread));
        let mut call = pin!(thread.into_async::<Value>(args)?);
        let outcome = match tokio::time::timeout(self.budget.limits().timeout, &mut call).await {
            Ok(result) => result,
            Err(_elapsed) => Err(mlua::Error::external(
                self.budget.kill(KillReason::WallClock),
            )),
        };
        self.budget.set_invocation_thread(None);
        outcome
    }

    fn invoke_error(&self, error: &mlua::Error) -> InvokeError {
        match classify(error) {
            ErrorKind::Kill(reason) => {
                kill_error(self.budget.kill(reason).reason, self.budget.limits())
            }
            ErrorKind::Memory => kill_error(
                self.budget.kill(KillReason::Memory).reason,
                self.budget.limits(),
            ),
            ErrorKind::Host(host) => InvokeError::Host(host.clone()),
            ErrorKind::Script(message) => InvokeError::Script { message },
        }
    }

    /// False once an invocation was killed (timeout or memory): the pool must
    /// then drop this VM, whose globals the killed script may have left half-updated.
    pub fn is_reusable(&self) -> bool {
        !self.budget.ever_killed()
    }

    /// Bytes the Lua state holds now (live and not yet collected).
    pub fn memory_used_bytes(&self) -> usize {
        self.lua.used_memory()
    }

    /// Instructions the last (or current) invocation ran, in steps of the hook
    /// interval. For metrics and tests.
    pub fn instructions_used(&self) -> u64 {
        self.budget.instructions_used()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // Closing the state runs pending finalizers, the sandbox's GC canary
        // among them, while mlua's handles are no longer usable.
        self.budget.close();
    }
}

fn kill_message(reason: KillReason, limits: &SandboxLimits) -> String {
    match reason {
        KillReason::Instructions => format!(
            "script exceeded its instruction budget of {} instructions",
            limits.instructions_max
        ),
        KillReason::WallClock => format!(
            "script exceeded its wall-clock timeout of {} ms",
            limits.timeout.as_millis()
        ),
        KillReason::Memory => format!(
            "script exceeded its memory limit of {} bytes",
            limits.memory_bytes_max
        ),
    }
}

fn kill_error(reason: KillReason, limits: &SandboxLimits) -> InvokeError {
    let message = kill_message(reason, limits);
    match reason {
        KillReason::Instructions | KillReason::WallClock => InvokeError::Timeout { message },
        KillReason::Memory => InvokeError::Memory { message },
    }
}

/// An error while a chunk ran at load time, as a `CompileError` of that file.
fn load_error(file: &str, error: &mlua::Error, limits: &SandboxLimits) -> CompileError {
    match classify(error) {
        ErrorKind::Kill(reason) => CompileError::new(file, None, kill_message(reason, limits)),
        ErrorKind::Memory => {
            CompileError::new(file, None, kill_message(KillReason::Memory, limits))
        }
        ErrorKind::Host(host) => CompileError::new(file, None, host.to_string()),
        ErrorKind::Script(message) => {
            CompileError::from_lua_message(file, strip_traceback(&message))
        }
    }
}
