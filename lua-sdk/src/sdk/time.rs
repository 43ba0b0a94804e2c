//! `time.now()` and `time.now_ms()`, read from the host's clock so tests can
//! fake it and every node reports the same kind of time.

use std::sync::Arc;

use mlua::Lua;

use crate::host::Host;

pub(super) fn install(lua: &Lua, host: Arc<dyn Host>) -> mlua::Result<()> {
    let time = lua.create_table()?;
    let clock = host.clone();
    time.raw_set(
        "now",
        lua.create_function(move |_, ()| Ok(clock.now_ms() as f64 / 1000.0))?,
    )?;
    let clock = host;
    time.raw_set(
        "now_ms",
        lua.create_function(move |_, ()| Ok(i64::try_from(clock.now_ms()).unwrap_or(i64::MAX)))?,
    )?;
    lua.globals().raw_set("time", time)
}
