//! What `bench/` needs from inside the sandbox and nothing else sees (the
//! `bench` feature): the metered string library alone, so its speed can be
//! set against Lua's C functions in a plain state without the hook.

use std::sync::Arc;

use crate::budget::Budget;
use crate::limits::SandboxLimits;

/// Replaces `lua`'s string functions with the sandbox's metered ports,
/// under a budget that never runs out.
pub fn install_metered_string_library(lua: &mlua::Lua) -> mlua::Result<()> {
    let budget = Arc::new(Budget::new(SandboxLimits {
        instructions_max: u64::MAX,
        memory_bytes_max: usize::MAX,
        timeout: std::time::Duration::from_secs(3600),
    }));
    budget.arm();
    crate::strlib::install(lua, &budget)
}
