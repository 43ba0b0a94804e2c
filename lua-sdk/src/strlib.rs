//! `string.find`, `string.match`, `string.gmatch` and `string.gsub` on the
//! metered matcher of `pattern.rs`, replacing the C functions in the
//! sandbox's `string` table (which is also the string metatable's
//! `__index`, so `("x"):find(...)` reaches them too).
//!
//! They behave like `str_find_aux`, `gmatch`/`gmatch_aux` and `str_gsub` of
//! Lua 5.4's `lstrlib.c`: same argument handling (numbers accepted as
//! strings, `init` clipping, `luaL_argerror` messages including the method
//! form), same results and the same error messages with the same position
//! prefix (`luaL_where(L, 1)`). The differential test in
//! `strlib/differential.rs` checks this against the C functions.
//!
//! One difference cannot be avoided: an error value raised by a `gsub`
//! replacement function crosses a Rust frame, so a non-string error value
//! (a table, say) reaches the catching `pcall` as its string form.
//!
//! Nested `gsub` calls (a replacement function calling `gsub`) stop at
//! [`GSUB_CALLBACK_DEPTH_MAX`] levels with Lua's "C stack overflow" error,
//! where C Lua stops at about 200: each level also holds Rust frames.
//!
//! The `gsub` result is built in a Rust buffer, outside Lua's allocator: it
//! is bounded by the memory the VM has left, and going past that is a
//! memory kill, as the C buffer's failed allocation would be.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mlua::{Function, Lua, LuaString, MultiValue, Table, Value};

use crate::budget::Budget;
use crate::error::KillReason;
use crate::limits::GSUB_CALLBACK_DEPTH_MAX;
use crate::pattern::{Cap, Fail, MatchState, Meter, find_plain, no_specials};

/// Replaces the four pattern functions in `lua`'s `string` table.
pub(crate) fn install(lua: &Lua, budget: &Arc<Budget>) -> mlua::Result<()> {
    let string: Table = lua.globals().raw_get("string")?;
    for (name, function) in functions(lua, budget)? {
        string.raw_set(name, function)?;
    }
    Ok(())
}

/// The four functions, by name, charging `budget`.
pub(crate) fn functions(
    lua: &Lua,
    budget: &Arc<Budget>,
) -> mlua::Result<[(&'static str, Function); 4]> {
    let find_budget = Arc::clone(budget);
    let find = lua.create_function(move |lua, args: MultiValue| {
        str_find_aux(lua, &find_budget, &args, true)
    })?;
    let match_budget = Arc::clone(budget);
    let match_ = lua.create_function(move |lua, args: MultiValue| {
        str_find_aux(lua, &match_budget, &args, false)
    })?;
    let gmatch_budget = Arc::clone(budget);
    let gmatch =
        lua.create_function(move |lua, args: MultiValue| gmatch(lua, &gmatch_budget, &args))?;
    let gsub_budget = Arc::clone(budget);
    let depth = Arc::new(AtomicUsize::new(0));
    let gsub = lua
        .create_function(move |lua, args: MultiValue| str_gsub(lua, &gsub_budget, &depth, &args))?;
    Ok([
        ("find", find),
        ("match", match_),
        ("gmatch", gmatch),
        ("gsub", gsub),
    ])
}

/// `luaL_where(L, 1)`: the position of the code that called the library
/// function, if it is Lua code.
fn where_prefix(lua: &Lua) -> String {
    lua.inspect_stack(1, |debug| {
        let source = debug.source();
        match (source.short_src, debug.current_line()) {
            (Some(file), Some(line)) if line > 0 => format!("{file}:{line}: "),
            _ => String::new(),
        }
    })
    .unwrap_or_default()
}

/// `luaL_error`.
fn lua_error(lua: &Lua, message: &str) -> mlua::Error {
    mlua::Error::runtime(format!("{}{message}", where_prefix(lua)))
}

fn fail_error(lua: &Lua, fail: Fail) -> mlua::Error {
    match fail {
        Fail::Pattern(message) => lua_error(lua, &message),
        Fail::Kill(kill) => mlua::Error::external(kill),
    }
}

/// Argument access with `lauxlib.c`'s checks and messages.
struct Args<'a> {
    lua: &'a Lua,
    args: &'a MultiValue,
    /// The library name, for `pushglobalfuncname`'s `string.<name>`.
    name: &'static str,
}

impl Args<'_> {
    fn get(&self, arg: usize) -> Option<&Value> {
        self.args.get(arg - 1)
    }

    /// `luaL_argerror`.
    fn arg_error(&self, arg: usize, extra: &str) -> mlua::Error {
        let names = self.lua.inspect_stack(0, |debug| {
            let names = debug.names();
            (names.name.map(|n| n.into_owned()), names.name_what)
        });
        let Some((name, what)) = names else {
            return lua_error(self.lua, &format!("bad argument #{arg} ({extra})"));
        };
        let mut arg = arg;
        if what == Some("method") {
            arg -= 1;
            if arg == 0 {
                let name = name.as_deref().unwrap_or("?");
                return lua_error(self.lua, &format!("calling '{name}' on bad self ({extra})"));
            }
        }
        let name = name.unwrap_or_else(|| format!("string.{}", self.name));
        lua_error(
            self.lua,
            &format!("bad argument #{arg} to '{name}' ({extra})"),
        )
    }

    /// `luaL_typeerror`.
    fn type_error(&self, arg: usize, expected: &str) -> mlua::Error {
        let got = type_name_for_error(self.get(arg));
        self.arg_error(arg, &format!("{expected} expected, got {got}"))
    }

    /// `luaL_checklstring`: a string, or a number converted to one.
    fn check_string(&self, arg: usize) -> mlua::Result<LuaString> {
        match self.get(arg) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(number @ (Value::Integer(_) | Value::Number(_))) => {
                match self.lua.coerce_string(number.clone())? {
                    Some(s) => Ok(s),
                    None => Err(self.type_error(arg, "string")),
                }
            }
            _ => Err(self.type_error(arg, "string")),
        }
    }

    /// `luaL_optinteger`.
    fn opt_integer(&self, arg: usize, default: i64) -> mlua::Result<i64> {
        match self.get(arg) {
            None | Some(Value::Nil) => Ok(default),
            Some(Value::Integer(i)) => Ok(*i),
            Some(value) => {
                if let Some(i) = self.lua.coerce_integer(value.clone())? {
                    Ok(i)
                } else if self.lua.coerce_number(value.clone())?.is_some() {
                    Err(self.arg_error(arg, "number has no integer representation"))
                } else {
                    Err(self.type_error(arg, "number"))
                }
            }
        }
    }
}

/// The type name `luaL_typeerror` reports: `__name` from the metatable if
/// it is a string, else the basic type name.
fn type_name_for_error(value: Option<&Value>) -> String {
    let metatable_name = |metatable: Option<Table>| -> Option<String> {
        match metatable?.raw_get::<Value>("__name").ok()? {
            Value::String(name) => Some(name.to_string_lossy()),
            _ => None,
        }
    };
    match value {
        None => "no value".to_string(),
        Some(Value::Table(table)) => {
            metatable_name(table.metatable()).unwrap_or_else(|| "table".to_string())
        }
        Some(Value::UserData(data)) => data
            .metatable()
            .ok()
            .and_then(|mt| match mt.get::<Value>("__name").ok()? {
                Value::String(name) => Some(name.to_string_lossy()),
                _ => None,
            })
            .unwrap_or_else(|| "userdata".to_string()),
        Some(value) => basic_type_name(value).to_string(),
    }
}

/// `lua_typename`, with `luaL_typeerror`'s "light userdata".
fn basic_type_name(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::LightUserData(_) => "light userdata",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        _ => "userdata",
    }
}

/// `posrelatI`: a 1-based start position, negative from the end, clipped
/// to `[1, inf)`.
fn posrelat_start(pos: i64, len: usize) -> usize {
    if pos > 0 {
        usize::try_from(pos).unwrap_or(usize::MAX)
    } else if pos == 0 || pos.unsigned_abs() > len as u64 {
        1
    } else {
        len - pos.unsigned_abs() as usize + 1
    }
}

fn truthy(value: Option<&Value>) -> bool {
    !matches!(value, None | Some(Value::Nil) | Some(Value::Boolean(false)))
}

fn position(index: usize) -> Value {
    Value::Integer(i64::try_from(index).unwrap_or(i64::MAX))
}

/// One capture as a Lua value.
fn capture_value(lua: &Lua, src: &[u8], cap: Cap) -> mlua::Result<Value> {
    Ok(match cap {
        Cap::Bytes(start, end) => Value::String(lua.create_string(&src[start..end])?),
        Cap::Position(pos) => position(pos),
    })
}

/// `push_captures(ms, s, e)`; `s` is `None` for `find`'s "captures only".
fn push_captures(
    lua: &Lua,
    ms: &MatchState<'_>,
    src: &[u8],
    s: Option<usize>,
    e: usize,
    out: &mut MultiValue,
) -> mlua::Result<()> {
    let whole = s.unwrap_or(0);
    for i in 0..ms.capture_count(s.is_some()) {
        let cap = ms
            .get_capture(i, whole, e)
            .map_err(|f| fail_error(lua, f))?;
        out.push_back(capture_value(lua, src, cap)?);
    }
    Ok(())
}

/// `str_find_aux`: `string.find` (`find`) and `string.match`.
fn str_find_aux(
    lua: &Lua,
    budget: &Budget,
    args: &MultiValue,
    find: bool,
) -> mlua::Result<MultiValue> {
    let args = Args {
        lua,
        args,
        name: if find { "find" } else { "match" },
    };
    let subject = args.check_string(1)?;
    let pattern = args.check_string(2)?;
    let init_arg = args.opt_integer(3, 1)?;
    let s = subject.as_bytes();
    let p = pattern.as_bytes();
    let ls = s.len();
    let init = posrelat_start(init_arg, ls) - 1;
    let mut out = MultiValue::new();
    if init > ls {
        out.push_back(Value::Nil);
        return Ok(out);
    }
    if find && (truthy(args.get(4)) || no_specials(&p)) {
        let mut meter = Meter::new(budget);
        let found = find_plain(&s[init..], &p, &mut meter);
        let found = found
            .and_then(|found| meter.flush().map(|()| found))
            .map_err(|f| fail_error(lua, f))?;
        if let Some(offset) = found {
            out.push_back(position(init + offset + 1));
            out.push_back(position(init + offset + p.len()));
            return Ok(out);
        }
    } else {
        let anchor = p.first() == Some(&b'^');
        let pat = if anchor { &p[1..] } else { &p[..] };
        let mut ms = MatchState::new(&s, pat, budget);
        let mut s1 = init;
        loop {
            ms.reprep();
            let matched = ms.do_match(s1, 0).map_err(|f| fail_error(lua, f))?;
            if let Some(end) = matched {
                ms.flush().map_err(|f| fail_error(lua, f))?;
                if find {
                    out.push_back(position(s1 + 1));
                    out.push_back(position(end));
                    push_captures(lua, &ms, &s, None, 0, &mut out)?;
                } else {
                    push_captures(lua, &ms, &s, Some(s1), end, &mut out)?;
                }
                return Ok(out);
            }
            let more = s1 < ls && !anchor;
            s1 += 1;
            if !more {
                break;
            }
        }
        ms.flush().map_err(|f| fail_error(lua, f))?;
    }
    out.push_back(Value::Nil);
    Ok(out)
}

/// `gmatch`: an iterator closure over the subject, starting at `init`.
fn gmatch(lua: &Lua, budget: &Arc<Budget>, args: &MultiValue) -> mlua::Result<Function> {
    let args = Args {
        lua,
        args,
        name: "gmatch",
    };
    let subject = args.check_string(1)?;
    let pattern = args.check_string(2)?;
    let init_arg = args.opt_integer(3, 1)?;
    let ls = subject.as_bytes().len();
    let mut init = posrelat_start(init_arg, ls) - 1;
    if init > ls {
        init = ls + 1;
    }
    let budget = Arc::clone(budget);
    let mut next_start = init;
    let mut last_match: Option<usize> = None;
    // The closure keeps the Lua strings (not copies), so the subject stays
    // accounted to the VM's memory.
    lua.create_function_mut(move |lua, ()| {
        let s = subject.as_bytes();
        let p = pattern.as_bytes();
        let mut ms = MatchState::new(&s, &p, &budget);
        let mut out = MultiValue::new();
        let mut src = next_start;
        while src <= s.len() {
            ms.reprep();
            let matched = ms.do_match(src, 0).map_err(|f| fail_error(lua, f))?;
            if let Some(end) = matched
                && Some(end) != last_match
            {
                ms.flush().map_err(|f| fail_error(lua, f))?;
                next_start = end;
                last_match = Some(end);
                push_captures(lua, &ms, &s, Some(src), end, &mut out)?;
                return Ok(out);
            }
            src += 1;
        }
        ms.flush().map_err(|f| fail_error(lua, f))?;
        Ok(out)
    })
}

/// What `gsub` replaces matches with.
enum Replacement {
    Text(LuaString),
    Table(Table),
    Function(Function),
}

/// `str_gsub`.
fn str_gsub(
    lua: &Lua,
    budget: &Budget,
    depth: &AtomicUsize,
    args: &MultiValue,
) -> mlua::Result<MultiValue> {
    let args = Args {
        lua,
        args,
        name: "gsub",
    };
    let subject = args.check_string(1)?;
    let pattern = args.check_string(2)?;
    let src = subject.as_bytes();
    let p = pattern.as_bytes();
    let srcl = src.len();
    let replacement = args.get(3).cloned();
    let max_s = args.opt_integer(4, i64::try_from(srcl).unwrap_or(i64::MAX - 1) + 1)?;
    let anchor = p.first() == Some(&b'^');
    let replacement = match replacement {
        Some(Value::String(text)) => Replacement::Text(text),
        Some(number @ (Value::Integer(_) | Value::Number(_))) => match lua.coerce_string(number)? {
            Some(text) => Replacement::Text(text),
            None => return Err(args.type_error(3, "string/function/table")),
        },
        Some(Value::Table(table)) => Replacement::Table(table),
        Some(Value::Function(function)) => Replacement::Function(function),
        _ => return Err(args.type_error(3, "string/function/table")),
    };
    let pat = if anchor { &p[1..] } else { &p[..] };
    // On the heap: a replacement function can call `gsub` again, and each
    // level's Rust frames count against the native stack (Lua's C-call
    // limit stops the recursion only after about 200 levels).
    let mut ms = Box::new(MatchState::new(&src, pat, budget));
    let mut buffer = Buffer::new(lua, budget);
    let mut s = 0usize;
    let mut last_match: Option<usize> = None;
    let mut n: i64 = 0;
    let mut changed = false;
    while n < max_s {
        ms.reprep();
        let matched = ms.do_match(s, 0).map_err(|f| fail_error(lua, f))?;
        match matched {
            Some(e) if Some(e) != last_match => {
                n += 1;
                let target = Target {
                    replacement: &replacement,
                    depth,
                };
                changed |= add_value(lua, &mut ms, &mut buffer, &src, s, e, &target)?;
                s = e;
                last_match = Some(e);
            }
            _ if s < srcl => {
                buffer.bytes.push(src[s]);
                s += 1;
            }
            _ => break,
        }
        if anchor {
            break;
        }
    }
    ms.flush().map_err(|f| fail_error(lua, f))?;
    let mut out = MultiValue::new();
    if changed {
        buffer.extend(&src[s..])?;
        out.push_back(Value::String(lua.create_string(&buffer.bytes)?));
    } else {
        out.push_back(Value::String(subject.clone()));
    }
    out.push_back(Value::Integer(n));
    Ok(out)
}

/// Where `add_value` takes replacements from.
struct Target<'a> {
    replacement: &'a Replacement,
    /// Replacement functions and `__index` handlers running in this VM
    /// (nested `gsub` calls), for [`GSUB_CALLBACK_DEPTH_MAX`].
    depth: &'a AtomicUsize,
}

/// Counts one nested replacement call while alive.
struct DepthGuard<'a>(&'a AtomicUsize);

impl<'a> DepthGuard<'a> {
    fn enter(lua: &Lua, depth: &'a AtomicUsize) -> mlua::Result<Self> {
        if depth.fetch_add(1, Ordering::Relaxed) >= GSUB_CALLBACK_DEPTH_MAX {
            depth.fetch_sub(1, Ordering::Relaxed);
            return Err(lua_error(lua, "C stack overflow"));
        }
        Ok(DepthGuard(depth))
    }
}

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `gsub`'s result, bounded by the memory the VM has left.
struct Buffer<'a> {
    lua: &'a Lua,
    budget: &'a Budget,
    bytes: Vec<u8>,
    room: usize,
}

impl<'a> Buffer<'a> {
    fn new(lua: &'a Lua, budget: &'a Budget) -> Self {
        let mut buffer = Buffer {
            lua,
            budget,
            bytes: Vec::new(),
            room: 0,
        };
        buffer.measure_room();
        buffer
    }

    /// Recomputes the room left (after Lua code ran, say).
    fn measure_room(&mut self) {
        self.room = self
            .budget
            .limits()
            .memory_bytes_max
            .saturating_sub(self.lua.used_memory());
    }

    fn extend(&mut self, bytes: &[u8]) -> mlua::Result<()> {
        if self.bytes.len().saturating_add(bytes.len()) > self.room {
            return Err(mlua::Error::external(self.budget.kill(KillReason::Memory)));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
}

/// `add_value`: appends the replacement of the match `src[s..e]`; returns
/// whether the subject changed.
fn add_value(
    lua: &Lua,
    ms: &mut MatchState<'_>,
    buffer: &mut Buffer<'_>,
    src: &[u8],
    s: usize,
    e: usize,
    target: &Target<'_>,
) -> mlua::Result<bool> {
    let value = match target.replacement {
        Replacement::Text(text) => {
            add_s(lua, ms, buffer, src, s, e, &text.as_bytes())?;
            return Ok(true);
        }
        Replacement::Function(function) => {
            let mut captures = MultiValue::new();
            push_captures(lua, ms, src, Some(s), e, &mut captures)?;
            // Charge what matching cost so far before running Lua code.
            ms.flush().map_err(|f| fail_error(lua, f))?;
            let _guard = DepthGuard::enter(lua, target.depth)?;
            let value = function.call::<Value>(captures)?;
            buffer.measure_room();
            value
        }
        Replacement::Table(table) => {
            let key = ms.get_capture(0, s, e).map_err(|f| fail_error(lua, f))?;
            let key = capture_value(lua, src, key)?;
            ms.flush().map_err(|f| fail_error(lua, f))?;
            let _guard = DepthGuard::enter(lua, target.depth)?;
            let value = table.get::<Value>(key)?;
            buffer.measure_room();
            value
        }
    };
    match value {
        Value::Nil | Value::Boolean(false) => {
            buffer.extend(&src[s..e])?;
            Ok(false)
        }
        Value::String(text) => {
            buffer.extend(&text.as_bytes())?;
            Ok(true)
        }
        number @ (Value::Integer(_) | Value::Number(_)) => {
            if let Some(text) = lua.coerce_string(number)? {
                buffer.extend(&text.as_bytes())?;
            }
            Ok(true)
        }
        other => Err(lua_error(
            lua,
            &format!(
                "invalid replacement value (a {})",
                basic_type_name(&other).replace("light userdata", "userdata")
            ),
        )),
    }
}

/// `add_s`: appends a replacement string, expanding `%0`-`%9` and `%%`.
fn add_s(
    lua: &Lua,
    ms: &mut MatchState<'_>,
    buffer: &mut Buffer<'_>,
    src: &[u8],
    s: usize,
    e: usize,
    news: &[u8],
) -> mlua::Result<()> {
    ms.meter()
        .add(news.len() as u64 / 16 + 1)
        .map_err(|f| fail_error(lua, f))?;
    let mut rest = news;
    while let Some(index) = rest.iter().position(|&b| b == b'%') {
        buffer.extend(&rest[..index])?;
        let c = rest.get(index + 1).copied().unwrap_or(0);
        if c == b'%' {
            buffer.extend(b"%")?;
        } else if c == b'0' {
            buffer.extend(&src[s..e])?;
        } else if c.is_ascii_digit() {
            let cap = ms
                .get_capture(usize::from(c - b'1'), s, e)
                .map_err(|f| fail_error(lua, f))?;
            match cap {
                Cap::Bytes(start, end) => buffer.extend(&src[start..end])?,
                Cap::Position(pos) => buffer.extend(pos.to_string().as_bytes())?,
            }
        } else {
            return Err(lua_error(lua, "invalid use of '%' in replacement string"));
        }
        rest = &rest[index + 2..];
    }
    buffer.extend(rest)
}

#[cfg(test)]
mod differential;
