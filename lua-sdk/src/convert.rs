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
//!
//! Bounds: Rust builds a Lua→JSON value outside the VM's memory cap, and a
//! table reachable along many paths (a DAG: `t = {t, t}` 25 times) is
//! visited once per path. Every node visited is counted and charged to the
//! invocation's budget, and a value of more than [`JSON_VALUE_NODES_MAX`]
//! nodes or about [`JSON_VALUE_BYTES_MAX`] bytes of JSON text is refused with
//! the code `value_too_large` before it is built. JSON→Lua builds Lua values
//! (inside the cap) and charges every node too; `json.decode` parses straight
//! into Lua values ([`decode_json`]) so no `serde_json::Value` many times the
//! text's size is built outside the cap.

use std::cell::RefCell;
use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;

use mlua::{Lua, Table, Value};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use crate::budget::Budget;
use crate::codes::Code;
use crate::error::KillError;
use crate::host::HostError;
use crate::limits::{
    CHARGE_BYTES_PER_UNIT, JSON_DEPTH_MAX, JSON_NODE_COST_UNITS, JSON_VALUE_BYTES_MAX,
    JSON_VALUE_NODES_MAX,
};

/// The stable code of a value over the conversion limits.
pub(crate) const VALUE_TOO_LARGE: Code = Code::ValueTooLarge;

/// Why a Lua value could not become JSON.
#[derive(Debug)]
pub(crate) enum ConvertError {
    /// Not representable (a function, a cycle, NaN...): a sentence for the script.
    Invalid(String),
    /// Over [`JSON_VALUE_NODES_MAX`] or [`JSON_VALUE_BYTES_MAX`].
    TooLarge(String),
    /// The invocation's budget ran out while converting.
    Kill(KillError),
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Invalid(problem) => f.write_str(problem),
            ConvertError::TooLarge(problem) => write!(f, "{VALUE_TOO_LARGE}: {problem}"),
            ConvertError::Kill(kill) => write!(f, "{kill}"),
        }
    }
}

impl ConvertError {
    /// The Lua error `function` raises: an ordinary script error for an
    /// invalid value (`location` is the script's `"<file>:<line>: "`), a
    /// coded [`HostError`] the gateway maps for a value too large, or the kill.
    pub(crate) fn into_lua_error(self, location: &str, function: &str) -> mlua::Error {
        match self {
            ConvertError::Invalid(problem) => {
                mlua::Error::runtime(format!("{location}{function}: {problem}"))
            }
            ConvertError::TooLarge(problem) => mlua::Error::external(HostError::new(
                VALUE_TOO_LARGE,
                format!("{location}{function}: {problem}"),
            )),
            ConvertError::Kill(kill) => mlua::Error::external(kill),
        }
    }
}

/// Counts the nodes and approximate bytes of one conversion and charges
/// them to the invocation's budget (when the VM has one and it is armed) in
/// batches.
pub(crate) struct Meter {
    budget: Option<Arc<Budget>>,
    nodes: usize,
    bytes: usize,
    uncharged_units: u64,
    /// Whether the node and byte limits apply (Lua→JSON, built outside the
    /// cap) or only the charge (JSON→Lua, built inside it).
    bounded: bool,
}

fn too_many_nodes() -> ConvertError {
    ConvertError::TooLarge(format!(
        "value has more than {JSON_VALUE_NODES_MAX} elements"
    ))
}

/// Units charged at once; a batch is a few microseconds of work.
const METER_BATCH_UNITS: u64 = 4096;

impl Meter {
    pub(crate) fn new(lua: &Lua, bounded: bool) -> Self {
        Meter {
            budget: lua.app_data_ref::<Arc<Budget>>().map(|b| Arc::clone(&b)),
            nodes: 0,
            bytes: 0,
            uncharged_units: 0,
            bounded,
        }
    }

    /// Counts one node carrying `bytes` of text (a string, a key).
    fn node(&mut self, bytes: usize) -> Result<(), ConvertError> {
        self.nodes += 1;
        // Two bytes of punctuation per node (quotes, a comma, brackets).
        self.bytes = self.bytes.saturating_add(bytes).saturating_add(2);
        if self.bounded && self.nodes > JSON_VALUE_NODES_MAX {
            return Err(too_many_nodes());
        }
        if self.bounded && self.bytes > JSON_VALUE_BYTES_MAX {
            return Err(ConvertError::TooLarge(format!(
                "value is larger than {JSON_VALUE_BYTES_MAX} bytes as JSON"
            )));
        }
        let units = JSON_NODE_COST_UNITS + (bytes / CHARGE_BYTES_PER_UNIT) as u64;
        self.uncharged_units += units;
        if self.uncharged_units >= METER_BATCH_UNITS {
            self.flush()?;
        }
        Ok(())
    }

    /// Refuses early when `pending` more nodes (collected, not yet counted)
    /// would pass the node limit.
    fn check_pending(&self, pending: usize) -> Result<(), ConvertError> {
        if self.bounded && self.nodes.saturating_add(pending) > JSON_VALUE_NODES_MAX {
            return Err(too_many_nodes());
        }
        Ok(())
    }

    /// Charges what is counted but not charged yet.
    fn flush(&mut self) -> Result<(), ConvertError> {
        let units = std::mem::take(&mut self.uncharged_units);
        match &self.budget {
            Some(budget) => budget.charge_if_armed(units).map_err(ConvertError::Kill),
            None => Ok(()),
        }
    }
}

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

/// Converts a Lua value to JSON. An invalid value's error is a sentence for
/// the script ("cannot encode a function"); callers add which function failed.
pub(crate) fn lua_to_json(lua: &Lua, value: &Value) -> Result<Json, ConvertError> {
    let marker = array_marker(lua).map_err(|e| ConvertError::Invalid(e.to_string()))?;
    let mut encoder = Encoder {
        marker: marker.to_pointer(),
        path: Vec::new(),
        meter: Meter::new(lua, true),
    };
    let json = encoder.encode(value)?;
    encoder.meter.flush()?;
    Ok(json)
}

struct Encoder {
    marker: *const c_void,
    /// Tables being encoded, outermost first: finds cycles and bounds depth.
    path: Vec<*const c_void>,
    meter: Meter,
}

fn invalid<T>(problem: impl Into<String>) -> Result<T, ConvertError> {
    Err(ConvertError::Invalid(problem.into()))
}

impl Encoder {
    fn encode(&mut self, value: &Value) -> Result<Json, ConvertError> {
        match value {
            Value::Nil => self.leaf(0, Json::Null),
            Value::LightUserData(pointer) if pointer.0.is_null() => self.leaf(0, Json::Null),
            Value::Boolean(b) => self.leaf(0, Json::Bool(*b)),
            Value::Integer(i) => self.leaf(0, Json::from(*i)),
            Value::Number(n) => match serde_json::Number::from_f64(*n) {
                Some(number) => self.leaf(0, Json::Number(number)),
                None => invalid(format!("cannot encode {n} (NaN and infinity are not JSON)")),
            },
            Value::String(s) => {
                let bytes = s.as_bytes();
                // Counted before the copy, so an over-limit string is never copied.
                self.meter.node(bytes.len())?;
                match std::str::from_utf8(&bytes) {
                    Ok(text) => Ok(Json::String(text.to_string())),
                    Err(_) => invalid("cannot encode a string that is not valid UTF-8"),
                }
            }
            Value::Table(table) => {
                self.meter.node(0)?;
                self.encode_table(table)
            }
            Value::Function(_) => invalid("cannot encode a function"),
            Value::Thread(_) => invalid("cannot encode a coroutine"),
            Value::Error(_) => invalid("cannot encode an error object"),
            _ => invalid("cannot encode a userdata"),
        }
    }

    fn leaf(&mut self, bytes: usize, json: Json) -> Result<Json, ConvertError> {
        self.meter.node(bytes)?;
        Ok(json)
    }

    fn encode_table(&mut self, table: &Table) -> Result<Json, ConvertError> {
        let pointer = table.to_pointer();
        if self.path.contains(&pointer) {
            return invalid("cannot encode a cyclic table");
        }
        if self.path.len() >= JSON_DEPTH_MAX {
            return invalid(format!(
                "cannot encode tables nested more than {JSON_DEPTH_MAX} levels"
            ));
        }
        // Collect first: encoding children while iterating would nest Lua
        // stack frames of the iteration, and sorting needs them all anyway.
        // Each pair is counted as it is collected, so a table too large to
        // encode is refused before its pairs fill memory outside the cap.
        let mut pairs: Vec<(Value, Value)> = Vec::new();
        let mut counting: Result<(), ConvertError> = Ok(());
        let iteration = table.for_each::<Value, Value>(|key, value| {
            counting = self.meter.check_pending(pairs.len() + 1);
            if counting.is_err() {
                return Err(mlua::Error::runtime("stop"));
            }
            pairs.push((key, value));
            Ok(())
        });
        counting?;
        iteration.map_err(|e| ConvertError::Invalid(e.to_string()))?;
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

    fn encode_array(&mut self, mut pairs: Vec<(Value, Value)>) -> Result<Json, ConvertError> {
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

    fn encode_object(&mut self, pairs: Vec<(Value, Value)>) -> Result<Json, ConvertError> {
        let mut object = serde_json::Map::new();
        for (key, value) in &pairs {
            let key = match key {
                Value::String(s) => {
                    let bytes = s.as_bytes();
                    self.meter.node(bytes.len())?;
                    match std::str::from_utf8(&bytes) {
                        Ok(text) => text.to_string(),
                        Err(_) => {
                            return invalid("cannot encode a table key that is not valid UTF-8");
                        }
                    }
                }
                Value::Integer(i) => i.to_string(),
                other => {
                    return invalid(format!(
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

/// Converts JSON to a Lua value (see the module rules), charging every
/// node to the invocation's budget.
pub(crate) fn json_to_lua(lua: &Lua, json: &Json) -> mlua::Result<Value> {
    let marker = array_marker(lua)?;
    let mut meter = Meter::new(lua, false);
    let value = to_lua(lua, &marker, &mut meter, json, 0)?;
    meter.flush().map_err(kill_or_runtime)?;
    Ok(value)
}

/// A meter error while building Lua values: only the kill can happen (the
/// meter is unbounded), but map the rest faithfully anyway.
fn kill_or_runtime(error: ConvertError) -> mlua::Error {
    match error {
        ConvertError::Kill(kill) => mlua::Error::external(kill),
        other => mlua::Error::runtime(other.to_string()),
    }
}

fn to_lua(
    lua: &Lua,
    marker: &Table,
    meter: &mut Meter,
    json: &Json,
    depth: usize,
) -> mlua::Result<Value> {
    // JSON parsed by serde_json is at most 128 deep; values from the host are
    // not guaranteed to be, and this recursion runs on the native stack.
    if depth > JSON_DEPTH_MAX {
        return Err(mlua::Error::runtime(format!(
            "JSON value nested more than {JSON_DEPTH_MAX} levels"
        )));
    }
    let text_bytes = match json {
        Json::String(s) => s.len(),
        _ => 0,
    };
    meter.node(text_bytes).map_err(kill_or_runtime)?;
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
                table.raw_set(index + 1, to_lua(lua, marker, meter, item, depth + 1)?)?;
            }
            table.set_metatable(Some(marker.clone()))?;
            Value::Table(table)
        }
        Json::Object(fields) => {
            let table = lua.create_table_with_capacity(0, fields.len())?;
            for (key, value) in fields {
                meter.node(key.len()).map_err(kill_or_runtime)?;
                table.raw_set(key.as_str(), to_lua(lua, marker, meter, value, depth + 1)?)?;
            }
            Value::Table(table)
        }
    })
}

/// Parses JSON text straight into Lua values (see the module rules), every
/// node charged and allocated inside the VM's memory cap. A syntax error is
/// `Err(Ok(message))`; a Lua error while building (the memory cap, a kill)
/// is `Err(Err(error))`, to be raised as it is.
pub(crate) fn decode_json(lua: &Lua, text: &[u8]) -> Result<Value, Result<String, mlua::Error>> {
    let marker = array_marker(lua).map_err(Err)?;
    let builder = Builder {
        lua,
        marker: &marker,
        meter: RefCell::new(Meter::new(lua, false)),
        failure: RefCell::new(None),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let parsed = LuaSeed {
        builder: &builder,
        depth: 0,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    // A Lua failure inside the visitor reaches serde as a custom error; the
    // original (a memory error, a kill) is kept aside and wins.
    if let Some(failure) = builder.failure.take() {
        return Err(Err(failure));
    }
    let value = parsed.map_err(|e| Ok(e.to_string()))?;
    builder
        .meter
        .borrow_mut()
        .flush()
        .map_err(|e| Err(kill_or_runtime(e)))?;
    Ok(value)
}

struct Builder<'a> {
    lua: &'a Lua,
    marker: &'a Table,
    meter: RefCell<Meter>,
    /// The first Lua error met while building.
    failure: RefCell<Option<mlua::Error>>,
}

impl Builder<'_> {
    fn fail<E: serde::de::Error>(&self, error: mlua::Error) -> E {
        let message = error.to_string();
        self.failure.borrow_mut().get_or_insert(error);
        E::custom(message)
    }

    fn count<E: serde::de::Error>(&self, text_bytes: usize) -> Result<(), E> {
        let counted = self.meter.borrow_mut().node(text_bytes);
        counted.map_err(|e| self.fail(kill_or_runtime(e)))
    }

    /// serde_json stops at 128 levels itself; this keeps the documented
    /// limit should the two ever differ.
    fn nest<E: serde::de::Error>(&self, depth: usize) -> Result<(), E> {
        if depth >= JSON_DEPTH_MAX {
            return Err(E::custom(format!(
                "JSON value nested more than {JSON_DEPTH_MAX} levels"
            )));
        }
        Ok(())
    }

    fn string<E: serde::de::Error>(&self, text: &str) -> Result<Value, E> {
        self.count(text.len())?;
        self.lua
            .create_string(text)
            .map(Value::String)
            .map_err(|e| self.fail(e))
    }
}

struct LuaSeed<'a, 'b> {
    builder: &'b Builder<'a>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for LuaSeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LuaSeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.builder.count(0)?;
        Ok(Value::NULL)
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        self.builder.count(0)?;
        Ok(Value::Boolean(b))
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Value, E> {
        self.builder.count(0)?;
        Ok(Value::Integer(i))
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Value, E> {
        self.builder.count(0)?;
        Ok(match i64::try_from(u) {
            Ok(i) => Value::Integer(i),
            // As `json_to_lua` does for numbers beyond i64.
            Err(_) => Value::Number(u as f64),
        })
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
        self.builder.count(0)?;
        Ok(Value::Number(n))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Value, E> {
        self.builder.string(text)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let builder = self.builder;
        builder.nest(self.depth)?;
        builder.count(0)?;
        let table = builder.lua.create_table().map_err(|e| builder.fail(e))?;
        let mut index: i64 = 0;
        while let Some(item) = seq.next_element_seed(LuaSeed {
            builder,
            depth: self.depth + 1,
        })? {
            index += 1;
            table.raw_set(index, item).map_err(|e| builder.fail(e))?;
        }
        table
            .set_metatable(Some(builder.marker.clone()))
            .map_err(|e| builder.fail(e))?;
        Ok(Value::Table(table))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let builder = self.builder;
        builder.nest(self.depth)?;
        builder.count(0)?;
        let table = builder.lua.create_table().map_err(|e| builder.fail(e))?;
        while let Some(key) = map.next_key_seed(KeySeed { builder })? {
            let value = map.next_value_seed(LuaSeed {
                builder,
                depth: self.depth + 1,
            })?;
            table.raw_set(key, value).map_err(|e| builder.fail(e))?;
        }
        Ok(Value::Table(table))
    }
}

/// Object keys, made Lua strings directly.
struct KeySeed<'a, 'b> {
    builder: &'b Builder<'a>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Value, E> {
        self.builder.string(text)
    }
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
        lua_to_json(lua, &value)
            .map(|json| json.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_dag_is_refused_as_too_large_before_it_expands() {
        let lua = lua();
        let started = std::time::Instant::now();
        let result = encode(
            &lua,
            "local t = {1} for i = 1, 25 do t = {t, t} end return t",
        );
        let error = result.expect_err("2^25 leaves");
        assert!(error.starts_with("value_too_large: "), "{error}");
        // Refused after about JSON_VALUE_NODES_MAX visits, not 2^26.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn long_strings_count_against_the_byte_limit() {
        let lua = lua();
        let small = encode(&lua, "return {string.rep('x', 1000)}");
        assert!(small.is_ok());
        let big = encode(
            &lua,
            &format!(
                "local s = string.rep('x', {}) return {{s, s, s}}",
                JSON_VALUE_BYTES_MAX / 2
            ),
        );
        assert!(big.expect_err("3 x 4 MiB").starts_with("value_too_large: "));
    }

    #[test]
    fn a_wide_table_is_refused_while_it_is_collected() {
        let lua = lua();
        let error = encode(
            &lua,
            &format!(
                "local t = {{}} for i = 1, {} do t[i] = true end return t",
                JSON_VALUE_NODES_MAX + 1
            ),
        )
        .expect_err("too many");
        assert!(error.starts_with("value_too_large: "), "{error}");
    }

    #[test]
    fn decode_builds_the_same_values_as_json_to_lua() {
        let lua = lua();
        let text = r#"{"a":[1,2.5,"x",null,true,{"b":[]}],"big":18446744073709551615,"n":-3}"#;
        let direct = decode_json(&lua, text.as_bytes()).expect("decodes");
        let via_value =
            json_to_lua(&lua, &serde_json::from_str(text).expect("json")).expect("converts");
        let back = |value: &Value| lua_to_json(&lua, value).expect("encodes");
        assert_eq!(back(&direct), back(&via_value));
        assert!(matches!(decode_json(&lua, b"[1,"), Err(Ok(_))));
        assert!(matches!(decode_json(&lua, b"[1] x"), Err(Ok(_))));
    }

    #[test]
    fn decode_inside_the_memory_cap_fails_with_a_memory_error() {
        let lua = lua();
        lua.set_memory_limit(lua.used_memory() + 256 * 1024)
            .expect("limit");
        let text = format!("[{}1]", "1,".repeat(200_000));
        match decode_json(&lua, text.as_bytes()) {
            Err(Err(mlua::Error::MemoryError(_))) => {}
            other => panic!("expected a memory error, got {other:?}"),
        }
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
