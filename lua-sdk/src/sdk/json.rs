//! `json.encode`, `json.decode`, `json.null`, `json.array`.

use mlua::{Lua, Table, Value};

use crate::convert::{decode_json, install_array_marker, lua_to_json, mark_array};
use crate::error::script_location;
use crate::location::script_error;

pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    install_array_marker(lua)?;
    let json = lua.create_table()?;
    json.raw_set(
        "encode",
        lua.create_function(|lua, value: Value| {
            let encoded = lua_to_json(lua, &value)
                .map_err(|error| error.into_lua_error(&script_location(lua), "json.encode"))?;
            lua.create_string(encoded.to_string())
        })?,
    )?;
    json.raw_set(
        "decode",
        lua.create_function(|lua, text: Value| {
            let Value::String(text) = text else {
                return Err(script_error(
                    lua,
                    format!("json.decode: expected a string, got {}", text.type_name()),
                ));
            };
            decode_json(lua, &text.as_bytes()).map_err(|failure| match failure {
                Ok(syntax) => script_error(lua, format!("json.decode: invalid JSON: {syntax}")),
                Err(error) => error,
            })
        })?,
    )?;
    json.raw_set(
        "array",
        lua.create_function(|lua, table: Option<Table>| {
            let table = match table {
                Some(table) => table,
                None => lua.create_table()?,
            };
            mark_array(lua, &table)?;
            Ok(table)
        })?,
    )?;
    json.raw_set("null", Value::NULL)?;
    lua.globals().raw_set("json", json)
}
