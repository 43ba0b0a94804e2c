//! Building a sandboxed Lua state: the safe standard libraries, the memory
//! cap, the budget hook, and the replacement of every global that could
//! escape the sandbox (LUA-SANDBOX.md, "Globals").
//!
//! ```text
//! Lua::new_with(safe libs) ─▶ memory cap ─▶ global count hook ─▶ SDK globals
//!        ─▶ remove io/package/debug/load*/require/string.dump/os.* (but time, clock, date)
//!        ─▶ string.find/match/gmatch/gsub replaced by metered Rust ports (strlib.rs)
//!        ─▶ require: the app's modules only (modules.rs)
//!        ─▶ prelude: pcall/xpcall/coroutine.* routed through Budget::settle,
//!           setmetatable refuses __gc, collectgarbage only "count",
//!           table.move bounded, string.rep("", n) answered without looping
//! ```
//!
//! Library calls run in C, where the hook never fires, so none may loop
//! for long. `table.move` is bounded here. Lua's pattern matching
//! (`string.find/match/gmatch/gsub`), whose backtracking patterns such as
//! `".-.-.-x"` or plain finds of a long needle in a long haystack take time
//! polynomial in the subject length, is replaced by a port that charges
//! every matching step to the budget (`pattern.rs`, `strlib.rs`). The other
//! `string` functions stay C; `string.rep("", n)` (empty string and
//! separator), which would loop `n` times in C producing nothing, is answered
//! by the prelude.

use std::sync::Arc;

use mlua::chunk::ChunkMode;
use mlua::{HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value};

use crate::budget::Budget;
use crate::host::Host;
use crate::limits::{HOOK_INSTRUCTIONS_INTERVAL, TABLE_MOVE_ELEMENTS_MAX};

/// Globals removed outright. `io`, `package` and `debug` are never loaded;
/// they are listed too so a future change to the library set cannot bring
/// them back silently.
const REMOVED_GLOBALS: &[&str] = &[
    "io",
    "package",
    "debug",
    "load",
    "loadfile",
    "dofile",
    "loadstring",
    "require",
    "warn",
    "module",
    "newproxy",
    "setfenv",
    "getfenv",
];

/// The `os` functions that stay: they read the clock and nothing else.
const KEPT_OS_FUNCTIONS: &[&str] = &["time", "clock", "date"];

/// Wraps every Lua-visible way to catch an error. Runs once per VM with the
/// original functions as upvalues, so scripts can never reach them.
///
/// * `pcall`, `xpcall`, `coroutine.resume`, `coroutine.close` pass their
///   results through `settle`, which re-raises a kill (and turns caught
///   Rust-side errors into strings).
/// * `coroutine.wrap` is rebuilt on the wrapped `resume`, since the stock one
///   re-raises from C with the message rewritten.
/// * `xpcall`'s handler is skipped once the invocation is being killed.
/// * `setmetatable` refuses `__gc`: finalizers run at arbitrary times,
///   including when the VM is dropped, outside any invocation's budget.
/// * `table.move` refuses ranges over [`TABLE_MOVE_ELEMENTS_MAX`].
/// * `collectgarbage` only answers `"count"`; a script must not be able to
///   stop the collector or force full collections in a loop.
const PRELUDE: &str = r##"
local settle, convert_error, move_elements_max = ...
local raw_pcall, raw_xpcall, raw_error, raw_type, raw_select = pcall, xpcall, error, type, select
local raw_setmetatable, raw_rawget, raw_collectgarbage = setmetatable, rawget, collectgarbage
local co = coroutine
local raw_create, raw_resume, raw_close = co.create, co.resume, co.close

-- Argument errors name the public function and point at the script's line
-- (level 3: the script calling the wrapper), not at this prelude.
local function expect(value, wanted, position, name)
  if raw_type(value) ~= wanted then
    raw_error("bad argument #" .. position .. " to '" .. name .. "' (" .. wanted ..
      " expected, got " .. raw_type(value) .. ")", 3)
  end
end

pcall = function(...)
  if raw_select("#", ...) == 0 then
    raw_error("bad argument #1 to 'pcall' (value expected)", 2)
  end
  return settle(raw_pcall(...))
end

xpcall = function(f, handler, ...)
  expect(handler, "function", 2, "xpcall")
  return settle(raw_xpcall(f, function(e)
    local converted, stop = convert_error(e)
    if stop then return converted end
    return handler(converted)
  end, ...))
end

co.resume = function(c, ...)
  expect(c, "thread", 1, "resume")
  return settle(raw_resume(c, ...))
end

co.close = function(c)
  expect(c, "thread", 1, "close")
  return settle(raw_close(c))
end

local function wrap_results(c, ok, ...)
  if ok then return ... end
  local err = ...
  settle(raw_close(c))
  raw_error(err, 0)
end

co.wrap = function(f)
  expect(f, "function", 1, "wrap")
  local c = raw_create(f)
  return function(...)
    return wrap_results(c, settle(raw_resume(c, ...)))
  end
end

setmetatable = function(t, mt)
  if raw_type(mt) == "table" and raw_rawget(mt, "__gc") ~= nil then
    raw_error("setmetatable: __gc metamethods are not allowed", 2)
  end
  return raw_setmetatable(t, mt)
end

-- `table.move` copies element by element in C, where no hook runs: moving
-- nils across a range of 2^50 would spin a core forever. Bound the count.
local raw_move = table.move
table.move = function(a1, f, e, t, a2)
  if raw_type(f) == "number" and raw_type(e) == "number" and (e + 0.0) - f >= move_elements_max then
    raw_error("table.move: more than " .. move_elements_max .. " elements", 2)
  end
  return raw_move(a1, f, e, t, a2)
end

-- `string.rep` builds its result in C. A non-empty result is bounded by the
-- memory cap (C allocates the whole buffer first), but an empty one ("" with
-- no separator) loops n times producing nothing, where no hook runs.
local raw_rep = string.rep
string.rep = function(s, n, sep)
  if s == "" and (sep == nil or sep == "") and raw_type(n) == "number" then
    return ""
  end
  return raw_rep(s, n, sep)
end

collectgarbage = function(option)
  if option == "count" then
    return raw_collectgarbage("count")
  end
  raw_error("collectgarbage: only \"count\" is allowed", 2)
end
"##;

/// A fresh state for one app, limits and SDK installed. The budget must be
/// armed by the caller before anything here can run Lua code under it; the
/// prelude itself runs while armed.
pub(crate) fn new_state(
    app: &str,
    host: Arc<dyn Host>,
    modules: Arc<crate::modules::ModuleSet>,
    budget: &Arc<Budget>,
) -> mlua::Result<Lua> {
    let libs = StdLib::COROUTINE
        | StdLib::TABLE
        | StdLib::STRING
        | StdLib::UTF8
        | StdLib::MATH
        | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::new())?;
    lua.set_memory_limit(budget.limits().memory_bytes_max)?;
    // Request handlers make mostly short-lived garbage (the request table,
    // strings, the response): Lua 5.4's generational collector frees it in
    // cheap minor collections instead of incremental sweeps of the whole heap.
    lua.gc_set_mode(mlua::state::GcMode::Generational(
        mlua::state::GcGenParams::default(),
    ));

    let mut triggers = HookTriggers::new();
    triggers.every_nth_instruction = Some(HOOK_INSTRUCTIONS_INTERVAL);
    let hook_budget = Arc::clone(budget);
    lua.set_global_hook(triggers, move |lua, debug| hook_budget.on_hook(lua, debug))?;

    // The SDK goes in first: mlua's async functions capture `coroutine.yield`
    // when they are created.
    crate::sdk::install(&lua, app, host)?;
    remove_unsafe_globals(&lua)?;
    crate::strlib::install(&lua, budget)?;
    // The app's own `require` (modules.rs) replaces the removed one; it
    // must see the raw `pcall`, so it goes in before the prelude.
    crate::modules::install_require(&lua, modules)?;
    run_prelude(&lua, budget)?;
    Ok(lua)
}

fn remove_unsafe_globals(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    for name in REMOVED_GLOBALS {
        globals.raw_set(*name, Value::Nil)?;
    }
    let string: Table = globals.raw_get("string")?;
    string.raw_set("dump", Value::Nil)?;

    let os: Table = globals.raw_get("os")?;
    let safe_os = lua.create_table()?;
    for name in KEPT_OS_FUNCTIONS {
        safe_os.raw_set(*name, os.raw_get::<Value>(*name)?)?;
    }
    globals.raw_set("os", safe_os)
}

fn run_prelude(lua: &Lua, budget: &Arc<Budget>) -> mlua::Result<()> {
    let settle_budget = Arc::clone(budget);
    let settle =
        lua.create_function(move |lua, results: MultiValue| settle_budget.settle(lua, results))?;
    let convert_budget = Arc::clone(budget);
    let convert = lua
        .create_function(move |lua, error: Value| convert_budget.convert_for_handler(lua, error))?;
    lua.load(PRELUDE)
        .set_name("=sandbox")
        .set_mode(ChunkMode::Text)
        .call::<()>((settle, convert, TABLE_MOVE_ELEMENTS_MAX))
}
