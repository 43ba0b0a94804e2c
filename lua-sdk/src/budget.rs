//! The per-invocation budget: instruction count, wall-clock deadline and the
//! kill flag that makes a spent budget stick.
//!
//! A hook that merely returns an error is not enough: `pcall` catches it and
//! the script loops on (LUA-SANDBOX.md, escape A). So the first time a limit
//! is hit the budget records a kill reason, and from then on
//!
//! * the hook raises the kill error every time it runs, and
//! * every Lua-visible way to catch an error (`pcall`, `xpcall`,
//!   `coroutine.resume/wrap/close`, see `sandbox.rs`) passes its result through
//!   [`Budget::settle`], which re-raises the kill instead of returning it.
//!
//! The hook is a *global* hook, so coroutines created by the script inherit it
//! (escape B). Memory errors do not go through the hook: Lua raises them from
//! its allocator, so `settle` recognises them and records the kill there.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mlua::{Lua, VmState};

use crate::error::{ErrorKind, KillError, KillReason};
use crate::limits::{
    CALL_DEPTH_MAX, HOOK_INSTRUCTIONS_INTERVAL, HOOK_INSTRUCTIONS_INTERVAL_MIN,
    HOOK_INTERVAL_MEMORY_PRODUCT, SandboxLimits, YIELD_INSTRUCTIONS_INTERVAL,
};

/// Shared by the VM, its hook and the sandbox wrappers.
///
/// Every field is atomic only so the struct can sit in an `Arc` captured by
/// `Send` closures: all accesses happen with the Lua state locked or between
/// invocations, so `Relaxed` ordering is enough.
#[derive(Debug)]
pub(crate) struct Budget {
    epoch: Instant,
    limits: SandboxLimits,
    /// Whether an invocation (or a script load) is running. Lua code that runs
    /// outside one (a finalizer at close, say) gets no budget at all.
    armed: AtomicBool,
    instructions_used: AtomicU64,
    /// Nanoseconds since `epoch`.
    deadline_ns: AtomicU64,
    /// 0 = alive, else `KillReason::as_u8`. Reset when the next invocation starts.
    kill: AtomicU8,
    /// Set by the first kill and never cleared: the VM may be in a state a
    /// script prepared (half-updated globals), so the pool drops it.
    ever_killed: AtomicBool,
    /// The Lua thread the current invocation's handler runs in (as a pointer,
    /// for identity only; 0 = none). Only that thread is ever yielded by the
    /// hook: yielding a script's own coroutine would hand its resumer a bogus
    /// early `yield`.
    invocation_thread: AtomicUsize,
    /// Instructions run by the invocation when it last gave its thread back to
    /// the async runtime.
    instructions_at_last_yield: AtomicU64,
    /// The count-hook interval last installed (on whichever Lua thread was
    /// running then); see [`hook_interval_for`].
    hook_interval: AtomicU32,
    /// Set when the VM is being dropped: finalizers still run then, but must
    /// not touch the closing state through mlua.
    closing: AtomicBool,
}

impl Budget {
    pub(crate) fn new(limits: SandboxLimits) -> Self {
        Budget {
            epoch: Instant::now(),
            limits,
            armed: AtomicBool::new(false),
            instructions_used: AtomicU64::new(0),
            deadline_ns: AtomicU64::new(0),
            kill: AtomicU8::new(0),
            ever_killed: AtomicBool::new(false),
            invocation_thread: AtomicUsize::new(0),
            instructions_at_last_yield: AtomicU64::new(0),
            hook_interval: AtomicU32::new(HOOK_INSTRUCTIONS_INTERVAL),
            closing: AtomicBool::new(false),
        }
    }

    /// Marks the VM as being dropped.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// The count-hook interval last installed.
    pub(crate) fn hook_interval(&self) -> u32 {
        self.hook_interval.load(Ordering::Relaxed)
    }

    /// Names the Lua thread the next invocation runs in, so the hook may yield
    /// it cooperatively (see [`YIELD_INSTRUCTIONS_INTERVAL`]).
    pub(crate) fn set_invocation_thread(&self, thread: Option<&mlua::Thread>) {
        let pointer = thread.map_or(0, |t| t.to_pointer() as usize);
        self.invocation_thread.store(pointer, Ordering::Relaxed);
        self.instructions_at_last_yield.store(0, Ordering::Relaxed);
    }

    pub(crate) fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// Starts a fresh budget: zero instructions, deadline `timeout` from now,
    /// kill flag cleared.
    pub(crate) fn arm(&self) {
        let deadline = self
            .elapsed_ns()
            .saturating_add(duration_ns(self.limits.timeout));
        self.instructions_used.store(0, Ordering::Relaxed);
        self.deadline_ns.store(deadline, Ordering::Relaxed);
        self.kill.store(0, Ordering::Relaxed);
        self.armed.store(true, Ordering::Relaxed);
    }

    /// Wall-clock time the current invocation has left (zero past its
    /// deadline): what a host call that waits (an outbound request) may use.
    pub(crate) fn time_left(&self) -> Duration {
        let deadline = self.deadline_ns.load(Ordering::Relaxed);
        Duration::from_nanos(deadline.saturating_sub(self.elapsed_ns()))
    }

    pub(crate) fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    pub(crate) fn killed(&self) -> Option<KillReason> {
        KillReason::from_u8(self.kill.load(Ordering::Relaxed))
    }

    /// Records a kill; the first reason wins.
    pub(crate) fn kill(&self, reason: KillReason) -> KillError {
        let _ = self
            .kill
            .compare_exchange(0, reason.as_u8(), Ordering::Relaxed, Ordering::Relaxed);
        self.ever_killed.store(true, Ordering::Relaxed);
        KillError {
            reason: self.killed().unwrap_or(reason),
        }
    }

    pub(crate) fn ever_killed(&self) -> bool {
        self.ever_killed.load(Ordering::Relaxed)
    }

    pub(crate) fn instructions_used(&self) -> u64 {
        self.instructions_used.load(Ordering::Relaxed)
    }

    /// The global hook, run every [`Budget::hook_interval`] instructions in
    /// every Lua thread of the VM. Besides the state for Lua, returns the
    /// interval the hook must be reinstalled with on the running thread, when
    /// it must change (see [`hook_interval_for`]).
    pub(crate) fn on_hook(
        &self,
        lua: &Lua,
        debug: &mlua::debug::Debug,
    ) -> mlua::Result<(VmState, Option<u32>)> {
        let used = self
            .charge(u64::from(self.hook_interval()))
            .map_err(mlua::Error::external)?;
        let reinstall = self.interval_change(lua.used_memory());
        // `lua_getstack` walks the call chain only as deep as it really is, so
        // this costs a few steps for ordinary scripts. A too-deep stack is a
        // plain (catchable) script error, not a kill: unwinding fixes it.
        if lua.inspect_stack(CALL_DEPTH_MAX, |_| ()).is_some() {
            let source = debug.source();
            let place = match (source.short_src, debug.current_line()) {
                (Some(file), Some(line)) => format!("{file}:{line}: "),
                _ => String::new(),
            };
            return Err(mlua::Error::runtime(format!(
                "{place}stack overflow (more than {CALL_DEPTH_MAX} nested calls)"
            )));
        }
        // Cooperative scheduling: a long-running handler hands its worker
        // thread back to tokio every YIELD_INSTRUCTIONS_INTERVAL instructions,
        // so requests queued on the same worker are not stuck behind it. Only
        // the handler's own thread yields, and only where Lua allows it (mlua
        // checks `lua_isyieldable`); the async call resumes it at once.
        let last = self.instructions_at_last_yield.load(Ordering::Relaxed);
        if used.saturating_sub(last) >= YIELD_INSTRUCTIONS_INTERVAL {
            let thread = self.invocation_thread.load(Ordering::Relaxed);
            if thread != 0 && lua.current_thread().to_pointer() as usize == thread {
                self.instructions_at_last_yield
                    .store(used, Ordering::Relaxed);
                return Ok((VmState::Yield, reinstall));
            }
        }
        Ok((VmState::Continue, reinstall))
    }

    /// The interval to reinstall the hook with on the running thread, if it
    /// must change for a VM holding `used_memory_bytes`.
    ///
    /// Reinstalling costs about a microsecond, so a small VM (where every
    /// instruction is cheap) reinstalls only when the interval changes. A big
    /// one reinstalls at every hook: a thread created earlier (a coroutine)
    /// may still run with a long interval its creator had, and there
    /// instructions can be slow.
    fn interval_change(&self, used_memory_bytes: usize) -> Option<u32> {
        let current = self.hook_interval();
        let wanted = hook_interval_for(used_memory_bytes);
        (wanted != current || wanted < HOOK_INSTRUCTIONS_INTERVAL / 8).then(|| {
            self.hook_interval.store(wanted, Ordering::Relaxed);
            wanted
        })
    }

    /// Run by the GC canary (see `sandbox.rs`) after each collection, from
    /// inside whatever instruction allocated. Memory can grow by megabytes
    /// within one hook interval chosen for a small VM (`s = s .. s`), and
    /// every such instruction is slow; the collections that growth causes
    /// bring the interval down at once. Past the deadline, the next
    /// instruction must run the hook (interval 1) to raise the kill: a
    /// finalizer cannot raise errors itself.
    pub(crate) fn on_collection(&self, used_memory_bytes: usize) -> Option<u32> {
        if !self.armed.load(Ordering::Relaxed) {
            return None;
        }
        if self.killed().is_some() || self.elapsed_ns() > self.deadline_ns.load(Ordering::Relaxed) {
            self.hook_interval.store(1, Ordering::Relaxed);
            return Some(1);
        }
        self.interval_change(used_memory_bytes)
    }

    /// Charges `steps` units of work done by Rust code that may also run
    /// outside an invocation (converting a handler's response after the
    /// budget is disarmed, say): charged and checked like [`Budget::charge`]
    /// while armed, free otherwise. Such callers bound their work by their
    /// own limits as well.
    pub(crate) fn charge_if_armed(&self, steps: u64) -> Result<(), KillError> {
        if !self.armed.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.charge(steps).map(|_| ())
    }

    /// Charges `steps` units of work to the invocation, like the hook does
    /// for instructions, and checks the same limits: the kill flag, the
    /// instruction budget and the wall-clock deadline. Returns the
    /// instructions used so far. Library code that loops in Rust (pattern
    /// matching, see `pattern.rs`) calls this, since the hook cannot run
    /// inside it.
    pub(crate) fn charge(&self, steps: u64) -> Result<u64, KillError> {
        if let Some(reason) = self.killed() {
            return Err(KillError { reason });
        }
        if !self.armed.load(Ordering::Relaxed) {
            return Err(self.kill(KillReason::Instructions));
        }
        let used = self
            .instructions_used
            .fetch_add(steps, Ordering::Relaxed)
            .saturating_add(steps);
        if used > self.limits.instructions_max {
            return Err(self.kill(KillReason::Instructions));
        }
        if self.elapsed_ns() > self.deadline_ns.load(Ordering::Relaxed) {
            return Err(self.kill(KillReason::WallClock));
        }
        Ok(used)
    }

    /// Passes through the results of a protected call (`ok, ...`) unless the
    /// invocation is killed or the call failed with a memory error, in which
    /// case the kill is raised again. A caught error value is made readable
    /// for the script: a host error becomes `"<code>: <message>"`, any other
    /// Rust-side error its message.
    pub(crate) fn settle(
        &self,
        lua: &Lua,
        mut results: mlua::MultiValue,
    ) -> mlua::Result<mlua::MultiValue> {
        if let Some(reason) = self.killed() {
            return Err(mlua::Error::external(KillError { reason }));
        }
        if matches!(results.front(), Some(mlua::Value::Boolean(false)))
            && let Some(error) = results.get_mut(1)
        {
            match convert_caught(lua, error)? {
                Caught::Memory => {
                    return Err(mlua::Error::external(self.kill(KillReason::Memory)));
                }
                Caught::Kill(reason) => {
                    return Err(mlua::Error::external(self.kill(reason)));
                }
                Caught::Value(converted) => *error = converted,
            }
        }
        Ok(results)
    }

    /// For `xpcall`'s message handler: converts the error like `settle` and
    /// says whether the user's handler must be skipped (the invocation is
    /// being killed, so no more script code should run).
    pub(crate) fn convert_for_handler(
        &self,
        lua: &Lua,
        error: mlua::Value,
    ) -> mlua::Result<(mlua::Value, bool)> {
        if self.killed().is_some() {
            return Ok((error, true));
        }
        Ok(match convert_caught(lua, &error)? {
            Caught::Memory => {
                self.kill(KillReason::Memory);
                (error, true)
            }
            Caught::Kill(reason) => {
                self.kill(reason);
                (error, true)
            }
            Caught::Value(converted) => (crate::location::relocate_error(lua, converted), false),
        })
    }

    fn elapsed_ns(&self) -> u64 {
        duration_ns(self.epoch.elapsed())
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The count-hook interval for a VM holding `used_memory_bytes`.
///
/// The hook only runs between instructions, and a single instruction or
/// library call can take time proportional to the bytes the VM holds: a
/// concatenation copying a 5 MB string, a call passing 500 000 arguments,
/// `utf8.len` over a long string, a major collection. Ten thousand such
/// instructions between two hooks would let a script overrun its deadline by
/// seconds. The interval therefore shrinks as memory grows, keeping
/// interval × memory near [`HOOK_INTERVAL_MEMORY_PRODUCT`]: small VMs (every
/// ordinary handler) keep the full interval and its low overhead, a VM near
/// its cap is checked every few dozen instructions.
pub(crate) fn hook_interval_for(used_memory_bytes: usize) -> u32 {
    let bytes = u64::try_from(used_memory_bytes.max(1)).unwrap_or(u64::MAX);
    let interval = (HOOK_INTERVAL_MEMORY_PRODUCT / bytes).clamp(
        u64::from(HOOK_INSTRUCTIONS_INTERVAL_MIN),
        u64::from(HOOK_INSTRUCTIONS_INTERVAL),
    );
    u32::try_from(interval).unwrap_or(HOOK_INSTRUCTIONS_INTERVAL)
}

enum Caught {
    Memory,
    Kill(KillReason),
    Value(mlua::Value),
}

/// The message Lua's allocator failure raises (`LUA_ERRMEM`).
const LUA_MEMORY_ERROR_MESSAGE: &[u8] = b"not enough memory";

fn convert_caught(lua: &Lua, error: &mlua::Value) -> mlua::Result<Caught> {
    Ok(match error {
        mlua::Value::String(message) if message.as_bytes().as_ref() == LUA_MEMORY_ERROR_MESSAGE => {
            Caught::Memory
        }
        // Still naming the prelude's line: an error inside a coroutine, seen
        // through `coroutine.resume` after its stack is gone (`pcall`'s
        // handler relocates its own). No position beats a wrong one.
        mlua::Value::String(message) if message.as_bytes().starts_with(b"sandbox:") => {
            match crate::error::relocate_prelude_message(&message.to_string_lossy(), "") {
                Some(stripped) => Caught::Value(mlua::Value::String(lua.create_string(stripped)?)),
                None => Caught::Value(error.clone()),
            }
        }
        mlua::Value::Error(error) => match crate::error::classify(error) {
            ErrorKind::Kill(reason) => Caught::Kill(reason),
            ErrorKind::Memory => Caught::Memory,
            ErrorKind::Host(host) => {
                Caught::Value(mlua::Value::String(lua.create_string(host.to_string())?))
            }
            ErrorKind::Script(message) => {
                Caught::Value(mlua::Value::String(lua.create_string(message)?))
            }
        },
        other => Caught::Value(other.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget::new(SandboxLimits::default())
    }

    #[test]
    fn hook_interval_shrinks_as_memory_grows() {
        assert_eq!(hook_interval_for(0), HOOK_INSTRUCTIONS_INTERVAL);
        assert_eq!(hook_interval_for(4 * 1024), HOOK_INSTRUCTIONS_INTERVAL);
        let at_4_mib = hook_interval_for(4 << 20);
        let at_16_mib = hook_interval_for(16 << 20);
        assert!(at_4_mib < HOOK_INSTRUCTIONS_INTERVAL);
        assert!(at_16_mib < at_4_mib);
        assert!(at_16_mib >= HOOK_INSTRUCTIONS_INTERVAL_MIN);
        assert_eq!(
            hook_interval_for(usize::MAX),
            HOOK_INSTRUCTIONS_INTERVAL_MIN
        );
    }

    #[test]
    fn charge_if_armed_is_free_outside_an_invocation() {
        let budget = budget();
        assert!(budget.charge_if_armed(u64::MAX).is_ok());
        assert_eq!(budget.killed(), None);
        budget.arm();
        assert!(budget.charge_if_armed(u64::MAX).is_err());
    }

    #[test]
    fn first_kill_reason_wins_and_arm_resets_it() {
        let budget = budget();
        budget.arm();
        assert_eq!(budget.kill(KillReason::Memory).reason, KillReason::Memory);
        assert_eq!(
            budget.kill(KillReason::WallClock).reason,
            KillReason::Memory
        );
        assert_eq!(budget.killed(), Some(KillReason::Memory));
        budget.arm();
        assert_eq!(budget.killed(), None);
        // The VM stays retired even though the next invocation may run.
        assert!(budget.ever_killed());
    }

    #[test]
    fn settle_reraises_once_killed_even_after_success() {
        let lua = Lua::new();
        let budget = budget();
        budget.arm();
        let ok = mlua::MultiValue::from_iter([mlua::Value::Boolean(true)]);
        assert!(budget.settle(&lua, ok.clone()).is_ok());
        budget.kill(KillReason::Instructions);
        let error = budget.settle(&lua, ok).expect_err("killed");
        assert!(matches!(
            crate::error::classify(&error),
            ErrorKind::Kill(KillReason::Instructions)
        ));
    }

    #[test]
    fn settle_turns_a_caught_memory_error_into_a_kill() {
        let lua = Lua::new();
        let budget = budget();
        budget.arm();
        let message = lua.create_string("not enough memory").expect("string");
        let caught = mlua::MultiValue::from_iter([
            mlua::Value::Boolean(false),
            mlua::Value::String(message),
        ]);
        assert!(budget.settle(&lua, caught).is_err());
        assert_eq!(budget.killed(), Some(KillReason::Memory));
    }

    #[test]
    fn settle_turns_a_caught_host_error_into_its_message() {
        let lua = Lua::new();
        let budget = budget();
        budget.arm();
        let host =
            mlua::Error::external(crate::host::HostError::new(crate::Code::NoLeader, "later"));
        let caught = mlua::MultiValue::from_iter([
            mlua::Value::Boolean(false),
            mlua::Value::Error(Box::new(host)),
        ]);
        let settled = budget.settle(&lua, caught).expect("not a kill");
        match settled.get(1) {
            Some(mlua::Value::String(s)) => assert_eq!(s.to_string_lossy(), "no_leader: later"),
            other => panic!("expected a string, got {other:?}"),
        }
    }
}
