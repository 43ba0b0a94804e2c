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
//!           table.insert/remove ported to Lua for tables with a metatable,
//!           table.sort comparing through Lua (the hook counts them),
//!           the other C functions charged up front from their input sizes,
//!           long formats refused, long numerals trimmed by the metered matcher
//!        ─▶ GC canary: each collection may shorten the hook interval
//! ```
//!
//! Library calls run in C, where the hook never fires. Each reachable one is
//! bounded (the table of them all is `docs/sandbox.md`): Lua's pattern
//! matching, whose backtracking takes time polynomial in the subject, is a
//! port that charges every step (`pattern.rs`, `strlib.rs`); `table.insert`
//! and `table.remove`, which trusted `__len` and shifted in C, are Lua ports
//! for tables with a metatable; `table.sort` compares through a Lua
//! function; the rest are wrapped to charge their work from their input
//! sizes before calling C, and refuse sizes whose single call would run too
//! long. What remains is work linear in bytes the VM already holds (a
//! `string.sub` of a long string, a concatenation): the hook interval
//! shrinks as the VM's memory grows (`budget::hook_interval_for`), so the
//! deadline is checked every few such calls.

use std::sync::Arc;

use mlua::chunk::ChunkMode;
use mlua::{HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value};

use crate::budget::Budget;
use crate::host::Host;
use crate::limits::{
    CHARGE_BYTES_PER_UNIT, CHARGE_FREE_BYTES, HOOK_INSTRUCTIONS_INTERVAL, NUMERAL_BYTES_MAX,
    STRING_FORMAT_BYTES_MAX, TABLE_MOVE_ELEMENTS_MAX,
};
use crate::location::relocate_error;

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

/// Wraps every Lua-visible way to catch an error and every C library
/// function whose work is not bounded by what the VM holds. Runs once per VM
/// with the original functions as upvalues, so scripts can never reach them.
///
/// * `pcall`, `xpcall`, `coroutine.resume`, `coroutine.close` pass their
///   results through `settle`, which re-raises a kill (and turns caught
///   Rust-side errors into strings). `pcall` runs as `xpcall` with `relocate`
///   as message handler, which (only when an error happens) replaces a
///   `sandbox:<line>:` position with the script's own line.
/// * `coroutine.wrap` is rebuilt on the wrapped `resume`, since the stock one
///   re-raises from C with the message rewritten.
/// * `xpcall`'s handler is skipped once the invocation is being killed.
/// * `setmetatable` refuses `__gc`: finalizers run at arbitrary times,
///   including when the VM is dropped, outside any invocation's budget.
/// * `table.insert` and `table.remove` on a table with a metatable are Lua
///   ports of `ltablib.c` (same checks and messages), so every element they
///   shift runs VM instructions the hook counts: the C ones trust `__len` and
///   shifted up to 2^62 elements where no hook runs. On plain tables `#t` is
///   the real border and the C functions run.
/// * `table.sort` stays C but always compares through a Lua function, so
///   every comparison is counted.
/// * `table.move`, `table.concat`, `table.unpack`, `table.pack`, `string.rep`,
///   `string.byte`, `string.char`, `string.format` (long formats, `%q`),
///   `string.pack`, `string.packsize`, `string.unpack`,
///   `utf8.len/offset/codepoint/char` and `os.date` charge their work up
///   front from their input sizes (one unit per element, or per
///   [`CHARGE_BYTES_PER_UNIT`] bytes, above [`CHARGE_FREE_BYTES`]), then call
///   the C function.
/// * `collectgarbage` only answers `"count"`; a script must not be able to
///   stop the collector or force full collections in a loop.
///
/// Errors raised here use level 2 (the script calling the wrapper) or carry
/// a `sandbox:` position that `relocate` (or, for an uncaught error, the
/// traceback, see `error::relocate_from_traceback`) replaces.
const PRELUDE: &str = r##"
local settle, convert_error, relocate, charge, c_find, move_elements_max, free_bytes,
  bytes_per_unit, string_bytes_max, format_bytes_max, numeral_bytes_max = ...
local raw_pcall, raw_xpcall, raw_error, raw_type, raw_select = pcall, xpcall, error, type, select
local raw_setmetatable, raw_getmetatable, raw_rawget, raw_rawlen, raw_collectgarbage =
  setmetatable, getmetatable, rawget, rawlen, collectgarbage
local raw_tonumber, math_tointeger, math_type, math_ult = tonumber, math.tointeger, math.type, math.ult
local co = coroutine
local raw_create, raw_resume, raw_close = co.create, co.resume, co.close

-- Argument errors name the public function and point at the script's line
-- (level 3: the script calling the wrapper), not at this prelude.
local function argerror(position, name, message)
  raw_error("bad argument #" .. position .. " to '" .. name .. "' (" .. message .. ")", 3)
end

local function typename(value)
  local t = raw_type(value)
  if t == "userdata" then return "light userdata" end
  return t
end

local function expect(value, wanted, position, name)
  if raw_type(value) ~= wanted then
    raw_error("bad argument #" .. position .. " to '" .. name .. "' (" .. wanted ..
      " expected, got " .. typename(value) .. ")", 3)
  end
end

-- Charges `bytes` of C work to the budget, free below `free_bytes` so that
-- ordinary calls pay one comparison.
local function charge_bytes(bytes)
  if bytes > free_bytes then charge(bytes // bytes_per_unit) end
end

local function pcall_relocated(f, ...)
  return settle(raw_xpcall(f, relocate, ...))
end

pcall = function(...)
  if raw_select("#", ...) == 0 then
    raw_error("bad argument #1 to 'pcall' (value expected)", 2)
  end
  return pcall_relocated(...)
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

collectgarbage = function(option)
  if option == "count" then
    return raw_collectgarbage("count")
  end
  raw_error("collectgarbage: only \"count\" is allowed", 2)
end

-- The C functions wrapped below, called as fields of `C` so that their own
-- argument errors name them ("bad argument #1 to 'rep'"), as unwrapped.
local C = {
  insert = table.insert, remove = table.remove, sort = table.sort, move = table.move, concat = table.concat, unpack = table.unpack, pack = table.pack,
  rep = string.rep,
  byte = string.byte, char = string.char, format = string.format, pack_string = string.pack,
  packsize = string.packsize, unpack_string = string.unpack, find = string.find,
  sub = string.sub, len = utf8.len, offset = utf8.offset, codepoint = utf8.codepoint,
  utf8_char = utf8.char, date = os.date, tonumber = tonumber,
}

-- table: ports of ltablib.c (Lua 5.4). `#t` may run `__len` and return
-- anything; every element moved below is a VM instruction the hook counts.

local function checktable(t, name)
  if raw_type(t) ~= "table" then
    argerror(1, name, "table expected, got " .. typename(t))
  end
end

-- luaL_checkinteger: integers, floats with an exact integer value, and
-- strings convertible to one.
local function checkinteger(value, position, name)
  local i = math_tointeger(value)
  if i then return i end
  local t = raw_type(value)
  if t == "string" then
    local n = raw_tonumber(value)
    if n then
      i = math_tointeger(n)
      if i then return i end
      argerror(position, name, "number has no integer representation")
    end
  elseif t == "number" then
    argerror(position, name, "number has no integer representation")
  end
  argerror(position, name, "number expected, got " .. typename(value))
end

-- aux_getn: the length `#t` reports (through `__len`), as an integer.
local function getn(t, name)
  checktable(t, name)
  local n = #t
  local i = math_tointeger(n)
  if i then return i end
  if raw_type(n) == "string" then
    i = math_tointeger(raw_tonumber(n))
    if i then return i end
  end
  raw_error("object length is not an integer", 3)
end

local function insert_port(t, ...)
  local e = getn(t, "insert") + 1
  local nargs = raw_select("#", ...)
  if nargs == 1 then
    t[e] = ...
    return
  end
  if nargs ~= 2 then
    raw_error("wrong number of arguments to 'insert'", 2)
  end
  local pos, value = ...
  pos = checkinteger(pos, 2, "insert")
  if not math_ult(pos - 1, e) then
    argerror(2, "insert", "position out of bounds")
  end
  for i = e, pos + 1, -1 do
    t[i] = t[i - 1]
  end
  t[pos] = value
end

local function remove_port(t, pos)
  local size = getn(t, "remove")
  if pos == nil then
    pos = size
  else
    pos = checkinteger(pos, 2, "remove")
    if pos ~= size and math_ult(size, pos - 1) then
      argerror(2, "remove", "position out of bounds")
    end
  end
  local result = t[pos]
  if pos < size then
    for i = pos, size - 1 do
      t[i] = t[i + 1]
    end
    pos = size
  end
  t[pos] = nil
  return result
end

-- Tables without a metatable have a `#t` that is their real border, so the
-- C functions shift at most the elements the table holds: work linear in
-- held memory, like a concatenation. Only tables with a metatable, whose
-- `__len` may say anything, go through the ports above. (Non-tables without
-- a metatable reach C, which reports them as it always has.)
table.insert = function(t, ...)
  if raw_getmetatable(t) == nil then return C.insert(t, ...) end
  return insert_port(t, ...)
end

table.remove = function(t, pos)
  if raw_getmetatable(t) == nil then return C.remove(t, pos) end
  return remove_port(t, pos)
end

-- `table.sort` stays C, but always compares through a Lua function: every
-- comparison then runs instructions the hook counts, so neither a `__len`
-- near 2^31 nor long strings compared in C can outrun it. (C checks a
-- `less` that is not a function itself, in its own order.)
local function default_less(a, b) return a < b end
table.sort = function(t, less)
  if less == nil then less = default_less end
  return C.sort(t, less)
end

-- `table.move` copies element by element in C, where no hook runs: moving
-- nils across a range of 2^50 would spin a core forever. Bound the count,
-- and charge it.
table.move = function(a1, f, e, t, a2)
  if raw_type(f) == "number" and raw_type(e) == "number" then
    local count = (e + 0.0) - f
    if count >= move_elements_max then
      raw_error("table.move: more than " .. move_elements_max .. " elements", 2)
    end
    if count > free_bytes then charge(count // 1) end
  end
  return C.move(a1, f, e, t, a2)
end

-- These loop over a range whose end `__len` may choose; every element is
-- a real slot (bounded by the memory cap) or comes from an `__index`
-- function (Lua the hook counts), but each still costs C work, charged here.
table.concat = function(t, sep, i, j)
  if raw_type(t) == "table" then
    local n = raw_rawlen(t)
    if n > free_bytes then charge(n) end
  end
  return C.concat(t, sep, i, j)
end

table.unpack = function(t, i, j)
  if raw_type(i) == "number" and raw_type(j) == "number" then
    local count = (j + 0.0) - i
    if count > free_bytes then charge(count // 1) end
  elseif raw_type(t) == "table" then
    local n = raw_rawlen(t)
    if n > free_bytes then charge(n) end
  end
  return C.unpack(t, i, j)
end

table.pack = function(...)
  local n = raw_select("#", ...)
  if n > free_bytes then charge(n) end
  return C.pack(...)
end

-- string: the C functions build results in one buffer the memory cap
-- bounds; the cost is charged from the sizes.
string.rep = function(s, n, sep)
  if raw_type(n) == "number" and (raw_type(s) == "string" or raw_type(s) == "number") then
    local sep_len = 0
    if raw_type(sep) == "string" or raw_type(sep) == "number" then sep_len = #(sep .. "") end
    local s_len = #(s .. "")
    -- An empty result ("" with no separator) loops n times in C producing
    -- nothing; answer it here.
    if s_len + sep_len == 0 then return "" end
    -- A result over the memory cap fails in C's first allocation (a
    -- memory kill), before any copying; only what can be built is charged.
    local total = (n + 0.0) * (s_len + sep_len)
    if total < string_bytes_max then charge_bytes(total // 1) end
  end
  return C.rep(s, n, sep)
end

string.byte = function(s, i, j)
  if j ~= nil and raw_type(s) == "string" then charge_bytes(#s) end
  return C.byte(s, i, j)
end

string.char = function(...)
  local n = raw_select("#", ...)
  if n > free_bytes then charge(n) end
  return C.char(...)
end

-- `string.format` costs about a microsecond a conversion and, for `%q`,
-- tens of nanoseconds a byte (one sprintf per control character): a long
-- format or a `%q` of megabytes runs for a second in one call. Both are
-- refused past `format_bytes_max`; `%s` copies are charged.
-- With `%q`: refuses string arguments over `format_bytes_max`, charges
-- the long ones.
local function check_quoted(...)
  local args = { ... }
  for k = 1, raw_select("#", ...) do
    local v = args[k]
    if raw_type(v) == "string" and #v > free_bytes then
      if #v > format_bytes_max then
        raw_error("bad argument #" .. (k + 1) .. " to 'format' (%q of a string longer than " ..
          format_bytes_max .. " bytes)", 3)
      end
      charge(#v)
    end
  end
end

-- Whether each short format seen contains `%q`, so the common call pays a
-- table lookup, not a search. Reset when full: formats built at run time
-- must not grow it without bound.
local quoting, quoting_count, quoting_max = {}, 0, 256

string.format = function(fmt, ...)
  local quoted = quoting[fmt]
  if quoted == nil and raw_type(fmt) == "string" then
    if #fmt > free_bytes then
      if #fmt > format_bytes_max then
        raw_error("bad argument #1 to 'format' (format longer than " .. format_bytes_max ..
          " bytes)", 2)
      end
      charge(#fmt)
      quoted = c_find(fmt, "%q", 1, true) ~= nil
    else
      -- The C find: `fmt` is short here.
      quoted = c_find(fmt, "%q", 1, true) ~= nil
      if quoting_count >= quoting_max then quoting, quoting_count = {}, 0 end
      quoting[fmt] = quoted
      quoting_count = quoting_count + 1
    end
  end
  if quoted then check_quoted(...) end
  local result = C.format(fmt, ...)
  return result
end

-- Each option of a pack format (and each conversion of an os.date format)
-- is C work of its own; long formats are refused like string.format's.
local function check_format(fmt, name)
  if raw_type(fmt) == "string" and #fmt > 64 then
    if #fmt > format_bytes_max then
      raw_error("bad argument #1 to '" .. name .. "' (format longer than " .. format_bytes_max ..
        " bytes)", 3)
    end
    charge(#fmt)
  end
end

string.pack = function(fmt, ...)
  check_format(fmt, "pack")
  return C.pack_string(fmt, ...)
end

string.packsize = function(fmt)
  check_format(fmt, "packsize")
  return C.packsize(fmt)
end

string.unpack = function(fmt, s, pos)
  check_format(fmt, "unpack")
  return C.unpack_string(fmt, s, pos)
end

-- utf8: each function walks its string (or arguments) in C.
utf8.len = function(s, i, j, lax)
  if raw_type(s) == "string" then charge_bytes(#s) end
  return C.len(s, i, j, lax)
end

utf8.offset = function(s, n, i)
  if raw_type(s) == "string" then charge_bytes(#s) end
  return C.offset(s, n, i)
end

utf8.codepoint = function(s, i, j, lax)
  if raw_type(s) == "string" then charge_bytes(#s) end
  return C.codepoint(s, i, j, lax)
end

utf8.char = function(...)
  local n = raw_select("#", ...)
  if n > free_bytes then charge(n) end
  return C.utf8_char(...)
end

-- os.date expands each conversion of its format in C.
os.date = function(fmt, t)
  check_format(fmt, "date")
  return C.date(fmt, t)
end

-- Converting a string to a number scans its white space in C at up to 2 ns
-- a byte, inside one call a loop can repeat cheaply. For long strings the
-- white space is trimmed here by the metered matcher first; a numeral
-- longer than `numeral_bytes_max` once trimmed is no number.
local function trimmed_numeral(s)
  local first = C.find(s, "%S")
  if first == nil then return nil end
  local last = first
  local from = first
  while true do
    local a, b = C.find(s, "%S+", from)
    if a == nil then break end
    if b - first >= numeral_bytes_max then return nil end
    last = b
    from = b + 1
  end
  return C.sub(s, first, last)
end

tonumber = function(value, base)
  if raw_type(value) == "string" and #value > numeral_bytes_max then
    local numeral = trimmed_numeral(value)
    if numeral == nil then
      if base ~= nil then C.tonumber("0", base) end
      return nil
    end
    return C.tonumber(numeral, base)
  end
  return C.tonumber(value, base)
end

-- Arithmetic on strings goes through the string metatable's metamethods,
-- which convert with the same strtod: long operands are trimmed the same way.
local string_mt = getmetatable("")
for _, event in ipairs({ "__add", "__sub", "__mul", "__div", "__mod", "__pow", "__unm", "__idiv" }) do
  local raw_arith = string_mt[event]
  string_mt[event] = function(a, b)
    -- A string that is no numeral fails the same way as "x" does.
    if raw_type(a) == "string" and #a > numeral_bytes_max then a = trimmed_numeral(a) or "x" end
    if raw_type(b) == "string" and #b > numeral_bytes_max then b = trimmed_numeral(b) or "x" end
    return raw_arith(a, b)
  end
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

    install_hook(&lua, budget, HOOK_INSTRUCTIONS_INTERVAL)?;
    // Rust-side conversions (`convert.rs`) charge their work through it.
    lua.set_app_data(Arc::clone(budget));

    // The SDK goes in first: mlua's async functions capture `coroutine.yield`
    // when they are created.
    crate::sdk::install(&lua, app, host)?;
    remove_unsafe_globals(&lua)?;
    // The prelude keeps the C `string.find` for plain searches in short
    // strings (string.format's `%q` check), where it cannot backtrack.
    let c_find: mlua::Function = lua.globals().raw_get::<Table>("string")?.raw_get("find")?;
    crate::strlib::install(&lua, budget)?;
    // The app's own `require` (modules.rs) replaces the removed one; it
    // must see the raw `pcall`, so it goes in before the prelude.
    crate::modules::install_require(&lua, modules)?;
    run_prelude(&lua, budget, c_find)?;
    // Last: a state dropped after this must be closed through `Vm`'s Drop.
    plant_gc_canary(&lua, budget)?;
    Ok(lua)
}

/// Installs the budget's count hook on the running Lua thread (and, through
/// inheritance, on the threads it creates from now on), every `interval`
/// instructions. The hook reinstalls itself when the budget wants another
/// interval (see `budget::hook_interval_for`).
fn install_hook(lua: &Lua, budget: &Arc<Budget>, interval: u32) -> mlua::Result<()> {
    let mut triggers = HookTriggers::new();
    triggers.every_nth_instruction = Some(interval);
    let hook_budget = Arc::clone(budget);
    lua.set_global_hook(triggers, move |lua, debug| {
        let (state, reinstall) = hook_budget.on_hook(lua, debug)?;
        if let Some(interval) = reinstall {
            install_hook(lua, &hook_budget, interval)?;
        }
        Ok(state)
    })
}

/// Plants an unreachable table whose `__gc` (set from Rust; scripts cannot
/// set `__gc`) runs after the collection that frees it, plants the next one,
/// and lets the budget shorten the hook interval (`Budget::on_collection`).
/// Collections follow allocation, so a script that grows its memory by
/// megabytes gets a short interval within the same instruction, not one
/// stale interval later.
fn plant_gc_canary(lua: &Lua, budget: &Arc<Budget>) -> mlua::Result<()> {
    let canary_budget = Arc::clone(budget);
    let finalizer = lua.create_function(move |lua, ()| {
        if canary_budget.is_closing() {
            return Ok(());
        }
        if let Some(interval) = canary_budget.on_collection(lua.used_memory()) {
            install_hook(lua, &canary_budget, interval)?;
        }
        let metatable: Table = lua.named_registry_value(GC_CANARY_METATABLE)?;
        lua.create_table()?.set_metatable(Some(metatable))
    })?;
    let metatable = lua.create_table()?;
    metatable.raw_set("__gc", finalizer)?;
    metatable.raw_set("__metatable", false)?;
    lua.set_named_registry_value(GC_CANARY_METATABLE, &metatable)?;
    lua.create_table()?.set_metatable(Some(metatable))
}

/// Registry key of the GC canary's metatable.
const GC_CANARY_METATABLE: &str = "picloud.gc_canary";

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

fn run_prelude(lua: &Lua, budget: &Arc<Budget>, c_find: mlua::Function) -> mlua::Result<()> {
    let settle_budget = Arc::clone(budget);
    let settle =
        lua.create_function(move |lua, results: MultiValue| settle_budget.settle(lua, results))?;
    let convert_budget = Arc::clone(budget);
    let convert = lua
        .create_function(move |lua, error: Value| convert_budget.convert_for_handler(lua, error))?;
    let relocate = lua.create_function(|lua, error: Value| Ok(relocate_error(lua, error)))?;
    let charge_budget = Arc::clone(budget);
    let charge = lua.create_function(move |_, units: Value| {
        let units = match units {
            Value::Integer(units) => u64::try_from(units).unwrap_or(0),
            // Saturating: a charge of 2^70 units is a kill, not a wrap.
            Value::Number(units) if units > 0.0 => units as u64,
            _ => 0,
        };
        charge_budget
            .charge(units)
            .map(|_| ())
            .map_err(mlua::Error::external)
    })?;
    let string_bytes_max = budget.limits().memory_bytes_max;
    lua.load(PRELUDE)
        .set_name("=sandbox")
        .set_mode(ChunkMode::Text)
        .call::<()>((
            settle,
            convert,
            relocate,
            charge,
            c_find,
            TABLE_MOVE_ELEMENTS_MAX,
            CHARGE_FREE_BYTES,
            CHARGE_BYTES_PER_UNIT,
            string_bytes_max,
            STRING_FORMAT_BYTES_MAX,
            NUMERAL_BYTES_MAX,
        ))
}
