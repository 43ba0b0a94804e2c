//! `secrets.get(name)`: the app's secret as a Lua string, or nil.
//!
//! Names are checked by the node (one rule for the admin API and scripts);
//! here only the argument's type. A secret is bytes, so it reaches Lua as a
//! string holding exactly those bytes.

use std::sync::Arc;

use mlua::{Lua, Value};

use crate::host::Host;
use crate::location::script_error;

pub(super) fn install(lua: &Lua, app: Arc<str>, host: Arc<dyn Host>) -> mlua::Result<()> {
    let secrets = lua.create_table()?;
    secrets.raw_set(
        "get",
        lua.create_async_function(move |lua, name: Value| {
            let (app, host) = (app.clone(), host.clone());
            let name = match name {
                Value::String(name) => name
                    .to_str()
                    .map(|name| name.to_string())
                    .map_err(|_| script_error(&lua, "secrets.get: name must be valid UTF-8")),
                other => Err(script_error(
                    &lua,
                    format!(
                        "secrets.get: name must be a string, got {}",
                        other.type_name()
                    ),
                )),
            };
            async move {
                let name = name?;
                match host
                    .secret_get(&app, &name)
                    .await
                    .map_err(mlua::Error::external)?
                {
                    Some(bytes) => Ok(Value::String(lua.create_string(bytes)?)),
                    None => Ok(Value::Nil),
                }
            }
        })?,
    )?;
    lua.globals().raw_set("secrets", secrets)
}
