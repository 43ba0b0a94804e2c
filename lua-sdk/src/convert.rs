//! Lua values ⇄ JSON values, shared by `json.*`, kv values and `req.json` /
//! `{json=...}` responses.
//!
//! Rules (also in `stubs/picloud.lua`):
//! * `nil` and `json.null` encode as `null`; `null` decodes as `json.null`, so
//!   arrays keep their length and object fields stay visible.
//! * A table whose keys are exactly `1..n` (n ≥ 1) is an array. A table
//!   marked with `json.array(t)` is an array even when empty; arrays decoded
//!   from JSON carry that mark, so `[]` round-trips. Any other empty table is `{}`.
//! * Other tables are objects: string keys as they are, integer keys written
//!   in decimal (sparse arrays); any other key type is an error.
//! * Integers stay integers; floats must be finite; strings must be UTF-8.
//! * Functions, coroutines, userdata, cyclic tables and nesting deeper than
//!   [`JSON_DEPTH_MAX`] are errors naming the problem.

use std::ffi::c_void;

use mlua::{Lua, Table, Value};
use serde_json::Value as Json;

use crate::limits::JSON_DEPTH_MAX;

/// The metatable marking a table as a JSON array, kept in the VM's app data.
pub(crate) struct ArrayMarker(pub(crate) Table);

/// Creates the array marker and stores it in the VM. Its `__metatable` field
/// hides it from `getmetatable`, so a script cannot add methods (or `__gc`)
/// to a metatable Rust later attaches to fresh tables.
pub(crate) fn install_array_marker(lua: &Lua) -> mlua::Result<Table> {
    let marker = lua.create_table()?;
    marker.raw_set("__metatable", "json.array")?;
    lua.set_app_data(ArrayMarker(marker.clone()));
    Ok(marker)
}

fn array_marker(lua: &Lua) -> mlua::Result<Table> {
    lua.app_data_ref::<ArrayMarker>()
        .map(|marker| marker.0.clone())
        .ok_or_else(|| mlua::Error::runtime("json array marker missing"))
}

/// Marks `table` as a JSON array.
pub(crate) fn mark_array(lua: &Lua, table: &Table) -> mlua::Result<()> {
    table.set_metatable(Some(array_marker(lua)?))
}

/// Converts a Lua value to JSON. The error is a sentence for the script
/// ("cannot encode a function"); callers add which function failed.
pub(crate) fn lua_to_json(lua: &Lua, value: &Value) -> Result<Json, String> {
    let marker = array_marker(lua).map_err(|e| e.to_string())?;
    let mut encoder = Encoder {
        marker: marker.to_pointer(),
        path: Vec::new(),
    };
    encoder.encode(value)
}

struct Encoder {
    marker: *const c_void,
    /// Tables being encoded, outermost first: finds cycles and bounds depth.
    path: Vec<*const c_void>,
}

impl Encoder {
    fn encode(&mut self, value: &Value) -> Result<Json, String> {
        match value {
            Value::Nil => Ok(Json::Null),
            Value::LightUserData(pointer) if pointer.0.is_null() => Ok(Json::Null),
            Value::Boolean(b) => Ok(Json::Bool(*b)),
            Value::Integer(i) => Ok(Json::from(*i)),
            Value::Number(n) => serde_json::Number::from_f64(*n)
                .map(Json::Number)
                .ok_or_else(|| format!("cannot encode {n} (NaN and infinity are not JSON)")),
            Value::String(s) => match s.to_str() {
                Ok(text) => Ok(Json::String(text.to_string())),
                Err(_) => Err("cannot encode a string that is not valid UTF-8".to_string()),
            },
            Value::Table(table) => self.encode_table(table),
            Value::Function(_) => Err("cannot encode a function".to_string()),
            Value::Thread(_) => Err("cannot encode a coroutine".to_string()),
            Value::Error(_) => Err("cannot encode an error object".to_string()),
            _ => Err("cannot encode a userdata".to_string()),
        }
    }

    fn encode_table(&mut self, table: &Table) -> Result<Json, String> {
        let pointer = table.to_pointer();
        if self.path.contains(&pointer) {
            return Err("cannot encode a cyclic table".to_string());
        }
        if self.path.len() >= JSON_DEPTH_MAX {
            return Err(format!(
                "cannot encode tables nested more than {JSON_DEPTH_MAX} levels"
            ));
        }
        // Collect first: encoding children while iterating would nest Lua
        // stack frames of the iteration, and sorting needs them all anyway.
        let mut pairs: Vec<(Value, Value)> = Vec::new();
        table
            .for_each::<Value, Value>(|key, value| {
                pairs.push((key, value));
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        let marked_array = table
            .metatable()
            .is_some_and(|mt| mt.to_pointer() == self.marker);

        self.path.push(pointer);
        let result = if is_sequence(&pairs) && (!pairs.is_empty() || marked_array) {
            self.encode_array(pairs)
        } else {
            self.encode_object(pairs)
        };
        self.path.pop();
        result
    }

    fn encode_array(&mut self, mut pairs: Vec<(Value, Value)>) -> Result<Json, String> {
        pairs.sort_by_key(|(key, _)| match key {
            Value::Integer(i) => *i,
            _ => 0,
        });
        let mut items = Vec::with_capacity(pairs.len());
        for (_, value) in &pairs {
            items.push(self.encode(value)?);
        }
        Ok(Json::Array(items))
    }

    fn encode_object(&mut self, pairs: Vec<(Value, Value)>) -> Result<Json, String> {
        let mut object = serde_json::Map::new();
        for (key, value) in &pairs {
            let key = match key {
                Value::String(s) => match s.to_str() {
                    Ok(text) => text.to_string(),
                    Err(_) => {
                        return Err("cannot encode a table key that is not valid UTF-8".to_string());
                    }
                },
                Value::Integer(i) => i.to_string(),
                other => {
                    return Err(format!(
                        "cannot encode a table key of type {}",
                        other.type_name()
                    ));
                }
            };
            object.insert(key, self.encode(value)?);
        }
        Ok(Json::Object(object))
    }
}

/// True when the keys are exactly the integers `1..=len` (an empty list counts).
fn is_sequence(pairs: &[(Value, Value)]) -> bool {
    let len = pairs.len() as i64;
    pairs
        .iter()
        .all(|(key, _)| matches!(key, Value::Integer(i) if (1..=len).contains(i)))
}

/// Converts JSON to a Lua value (see the module rules).
pub(crate) fn json_to_lua(lua: &Lua, json: &Json) -> mlua::Result<Value> {
    let marker = array_marker(lua)?;
    to_lua(lua, &marker, json, 0)
}

fn to_lua(lua: &Lua, marker: &Table, json: &Json, depth: usize) -> mlua::Result<Value> {
    // JSON parsed by serde_json is at most 128 deep; values from the host are
    // not guaranteed to be, and this recursion runs on the native stack.
    if depth > JSON_DEPTH_MAX {
        return Err(mlua::Error::runtime(format!(
            "JSON value nested more than {JSON_DEPTH_MAX} levels"
        )));
    }
    Ok(match json {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (index, item) in items.iter().enumerate() {
                table.raw_set(index + 1, to_lua(lua, marker, item, depth + 1)?)?;
            }
            table.set_metatable(Some(marker.clone()))?;
            Value::Table(table)
        }
        Json::Object(fields) => {
            let table = lua.create_table_with_capacity(0, fields.len())?;
            for (key, value) in fields {
                table.raw_set(key.as_str(), to_lua(lua, marker, value, depth + 1)?)?;
            }
            Value::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lua() -> Lua {
        let lua = Lua::new();
        install_array_marker(&lua).expect("marker");
        lua
    }

    fn encode(lua: &Lua, code: &str) -> Result<String, String> {
        let value: Value = lua.load(code).eval().expect("eval");
        lua_to_json(lua, &value).map(|json| json.to_string())
    }

    #[test]
    fn sequences_are_arrays_and_the_rest_objects() {
        let lua = lua();
        assert_eq!(encode(&lua, "{1, 2}"), Ok("[1,2]".to_string()));
        assert_eq!(encode(&lua, "{}"), Ok("{}".to_string()));
        assert_eq!(
            encode(&lua, "{b = 1, a = 2}"),
            Ok(r#"{"a":2,"b":1}"#.to_string())
        );
        assert_eq!(encode(&lua, "{[2] = 'x'}"), Ok(r#"{"2":"x"}"#.to_string()));
    }

    #[test]
    fn shared_subtables_are_not_cycles() {
        let lua = lua();
        assert_eq!(
            encode(&lua, "local s = {1} return {a = s, b = s}"),
            Ok(r#"{"a":[1],"b":[1]}"#.to_string())
        );
        assert_eq!(
            encode(&lua, "local t = {} t[1] = t return t"),
            Err("cannot encode a cyclic table".to_string())
        );
    }

    #[test]
    fn decoded_arrays_keep_their_mark() {
        let lua = lua();
        let value = json_to_lua(&lua, &serde_json::json!({"list": []})).expect("to lua");
        let back = lua_to_json(&lua, &value).expect("to json");
        assert_eq!(back, serde_json::json!({"list": []}));
    }

    #[test]
    fn big_unsigned_numbers_become_floats() {
        let lua = lua();
        let value = json_to_lua(&lua, &serde_json::json!(u64::MAX)).expect("to lua");
        assert!(matches!(value, Value::Number(n) if n > 1.8e19));
    }

    #[test]
    fn overly_deep_host_values_are_refused() {
        let lua = lua();
        let mut deep = serde_json::json!(1);
        for _ in 0..=JSON_DEPTH_MAX + 1 {
            deep = serde_json::json!([deep]);
        }
        assert!(json_to_lua(&lua, &deep).is_err());
    }
}
