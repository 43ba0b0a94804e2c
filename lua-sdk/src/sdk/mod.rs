//! The globals scripts call: `kv`, `docs`, `log` (and `print`), `json`, `time`,
//! `secrets`.
//!
//! Service calls are mlua async functions: the script's coroutine yields
//! while the `Host` future runs, so a VM never blocks a runtime thread.
//! Arguments are checked before the future is built, so a bad call fails
//! with `<file>:<line>: kv.set: ...` pointing at the script's line.

mod docs;
mod json;
mod kv;
mod log;
mod secrets;
mod time;

use std::fmt::Display;
use std::sync::Arc;

use mlua::Lua;

use crate::host::Host;

/// Registers every SDK global in `lua`.
pub(crate) fn install(lua: &Lua, app: &str, host: Arc<dyn Host>) -> mlua::Result<()> {
    let app: Arc<str> = Arc::from(app);
    json::install(lua)?;
    kv::install(lua, app.clone(), host.clone())?;
    docs::install(lua, app.clone(), host.clone())?;
    log::install(lua, app.clone(), host.clone())?;
    secrets::install(lua, app.clone(), host.clone())?;
    time::install(lua, host)?;
    Ok(())
}

/// A script error pointing at the script line that made the call.
pub(crate) fn script_error(lua: &Lua, message: impl Display) -> mlua::Error {
    mlua::Error::runtime(format!("{}{message}", caller_location(lua)))
}

/// `"<file>:<line>: "` of the nearest script frame, or `""` when there is
/// none. Script chunks are named `@<file>`; frames of mlua's async wrapper
/// (`=__mlua_async_poll`) and of the sandbox prelude (`=sandbox`) are skipped.
fn caller_location(lua: &Lua) -> String {
    for level in 1..=6 {
        let found = lua.inspect_stack(level, |debug| {
            let source = debug.source();
            let is_script = source.source.as_deref().is_some_and(|s| s.starts_with('@'));
            if !is_script {
                return None;
            }
            let file = source.short_src.as_deref().unwrap_or("?").to_string();
            Some(match debug.current_line() {
                Some(line) => format!("{file}:{line}: "),
                None => format!("{file}: "),
            })
        });
        match found {
            None => break,
            Some(Some(location)) => return location,
            Some(None) => continue,
        }
    }
    String::new()
}
