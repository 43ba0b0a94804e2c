//! `json.encode`, `json.decode`, `json.null`, `json.array`.

use mlua::{Lua, Table, Value};

use super::script_error;
use crate::convert::{install_array_marker, json_to_lua, lua_to_json, mark_array};

pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    install_array_marker(lua)?;
    let json = lua.create_table()?;
    json.raw_set(
        "encode",
        lua.create_function(|lua, value: Value| {
            let encoded = lua_to_json(lua, &value)
                .map_err(|problem| script_error(lua, format!("json.encode: {problem}")))?;
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
            let parsed: serde_json::Value = serde_json::from_slice(&text.as_bytes())
                .map_err(|e| script_error(lua, format!("json.decode: invalid JSON: {e}")))?;
            json_to_lua(lua, &parsed)
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
