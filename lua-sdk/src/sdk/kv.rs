//! `kv.get/set/delete/incr/cas/list/atomic`: argument checking and value
//! conversion around the `Host` kv calls.

use std::sync::Arc;

use mlua::{Lua, Table, Value};

use crate::convert::{json_to_lua, lua_to_json};
use crate::host::{AtomicOp, AtomicResult, Consistency, Host, HostError};
use crate::limits::KV_LIST_LIMIT_DEFAULT;
use crate::location::script_error;

type Json = serde_json::Value;

pub(super) fn install(lua: &Lua, app: Arc<str>, host: Arc<dyn Host>) -> mlua::Result<()> {
    let kv = lua.create_table()?;

    let (a, h) = (app.clone(), host.clone());
    kv.raw_set(
        "get",
        lua.create_async_function(move |lua, (key, options): (Value, Value)| {
            let (app, host) = (a.clone(), h.clone());
            let args = (|| -> mlua::Result<_> {
                let key = key_arg(&lua, "kv.get", key)?;
                let options = options_arg(&lua, "kv.get", options)?;
                let consistency = match options
                    .as_ref()
                    .map(|o| o.raw_get::<Value>("consistency"))
                    .transpose()?
                {
                    None | Some(Value::Nil) => Consistency::Linearizable,
                    Some(Value::String(s)) if s.as_bytes().as_ref() == b"linearizable" => {
                        Consistency::Linearizable
                    }
                    Some(Value::String(s)) if s.as_bytes().as_ref() == b"stale" => {
                        Consistency::Stale
                    }
                    Some(other) => {
                        return Err(script_error(
                            &lua,
                            format!(
                                "kv.get: consistency must be \"linearizable\" or \"stale\", got {}",
                                describe(&other)
                            ),
                        ));
                    }
                };
                Ok((key, consistency))
            })();
            async move {
                let (key, consistency) = args?;
                let value = host
                    .kv_get(&app, &key, consistency)
                    .await
                    .map_err(host_error)?;
                match value {
                    Some(value) => json_to_lua(&lua, &value),
                    None => Ok(Value::Nil),
                }
            }
        })?,
    )?;

    let (a, h) = (app.clone(), host.clone());
    kv.raw_set(
        "set",
        lua.create_async_function(move |lua, (key, value, options): (Value, Value, Value)| {
            let (app, host) = (a.clone(), h.clone());
            let args = (|| -> mlua::Result<_> {
                let key = key_arg(&lua, "kv.set", key)?;
                if value.is_nil() {
                    return Err(script_error(
                        &lua,
                        "kv.set: value is nil; use kv.delete to remove a key",
                    ));
                }
                let value = value_arg(&lua, "kv.set", &value)?;
                let options = options_arg(&lua, "kv.set", options)?;
                let ttl = match &options {
                    Some(options) => ttl_arg(&lua, "kv.set", options.raw_get("ttl")?)?,
                    None => None,
                };
                Ok((key, value, ttl))
            })();
            async move {
                let (key, value, ttl) = args?;
                host.kv_set(&app, &key, value, ttl)
                    .await
                    .map_err(host_error)
            }
        })?,
    )?;

    let (a, h) = (app.clone(), host.clone());
    kv.raw_set(
        "delete",
        lua.create_async_function(move |lua, key: Value| {
            let (app, host) = (a.clone(), h.clone());
            let key = key_arg(&lua, "kv.delete", key);
            async move {
                let key = key?;
                host.kv_delete(&app, &key).await.map_err(host_error)
            }
        })?,
    )?;

    let (a, h) = (app.clone(), host.clone());
    kv.raw_set(
        "incr",
        lua.create_async_function(move |lua, (key, by): (Value, Value)| {
            let (app, host) = (a.clone(), h.clone());
            let args = (|| -> mlua::Result<_> {
                let key = key_arg(&lua, "kv.incr", key)?;
                let by = integer_arg(&lua, "kv.incr", "by", &by, 1)?;
                Ok((key, by))
            })();
            async move {
                let (key, by) = args?;
                host.kv_incr(&app, &key, by).await.map_err(host_error)
            }
        })?,
    )?;

    let (a, h) = (app.clone(), host.clone());
    kv.raw_set(
        "cas",
        lua.create_async_function(move |lua, (key, expected, new): (Value, Value, Value)| {
            let (app, host) = (a.clone(), h.clone());
            let args = (|| -> mlua::Result<_> {
                let key = key_arg(&lua, "kv.cas", key)?;
                let expected = optional_value_arg(&lua, "kv.cas", &expected)?;
                let new = optional_value_arg(&lua, "kv.cas", &new)?;
                Ok((key, expected, new))
            })();
            async move {
                let (key, expected, new) = args?;
                host.kv_cas(&app, &key, expected, new)
                    .await
                    .map_err(host_error)
            }
        })?,
    )?;

    let (a, h) = (app.clone(), host.clone());
    kv.raw_set(
        "list",
        lua.create_async_function(move |lua, options: Value| {
            let (app, host) = (a.clone(), h.clone());
            let args = list_args(&lua, options);
            async move {
                let (prefix, limit, cursor) = args?;
                let page = host
                    .kv_list(&app, &prefix, limit, cursor)
                    .await
                    .map_err(host_error)?;
                let items = lua.create_table_with_capacity(page.items.len(), 0)?;
                for (index, (key, value)) in page.items.iter().enumerate() {
                    let item = lua.create_table_with_capacity(0, 2)?;
                    item.raw_set("key", key.as_str())?;
                    item.raw_set("value", json_to_lua(&lua, value)?)?;
                    items.raw_set(index + 1, item)?;
                }
                let result = lua.create_table_with_capacity(0, 2)?;
                result.raw_set("items", items)?;
                result.raw_set("cursor", page.cursor)?;
                Ok(result)
            }
        })?,
    )?;

    let (a, h) = (app, host);
    kv.raw_set(
        "atomic",
        lua.create_async_function(move |lua, ops: Value| {
            let (app, host) = (a.clone(), h.clone());
            let ops = atomic_args(&lua, ops);
            async move {
                let ops = ops?;
                let results = host.kv_atomic(&app, ops).await.map_err(host_error)?;
                let table = lua.create_table_with_capacity(results.len(), 0)?;
                for (index, result) in results.into_iter().enumerate() {
                    let value = match result {
                        AtomicResult::Set => Value::Boolean(true),
                        AtomicResult::Deleted { existed } => Value::Boolean(existed),
                        AtomicResult::Incr { value } => Value::Integer(value),
                        AtomicResult::Cas { swapped } => Value::Boolean(swapped),
                    };
                    table.raw_set(index + 1, value)?;
                }
                Ok(table)
            }
        })?,
    )?;

    lua.globals().raw_set("kv", kv)
}

/// Host errors travel through Lua as external errors so that, uncaught, the
/// VM can hand the original `HostError` back (see `error::classify`).
pub(super) fn host_error(error: HostError) -> mlua::Error {
    mlua::Error::external(error)
}

pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{}\"", s.to_string_lossy()),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => other.type_name().to_string(),
    }
}

fn key_arg(lua: &Lua, function: &str, key: Value) -> mlua::Result<String> {
    match key {
        Value::String(s) if !s.as_bytes().is_empty() => match s.to_str() {
            Ok(text) => Ok(text.to_string()),
            Err(_) => Err(script_error(
                lua,
                format!("{function}: key must be valid UTF-8"),
            )),
        },
        Value::String(_) => Err(script_error(
            lua,
            format!("{function}: key must not be empty"),
        )),
        other => Err(script_error(
            lua,
            format!(
                "{function}: key must be a string, got {}",
                other.type_name()
            ),
        )),
    }
}

pub(super) fn value_arg(lua: &Lua, function: &str, value: &Value) -> mlua::Result<Json> {
    lua_to_json(lua, value)
        .map_err(|error| error.into_lua_error(&crate::error::script_location(lua), function))
}

/// `nil` means "absent" (for `kv.cas`), anything else must be JSON-representable.
fn optional_value_arg(lua: &Lua, function: &str, value: &Value) -> mlua::Result<Option<Json>> {
    match value {
        Value::Nil => Ok(None),
        other => value_arg(lua, function, other).map(Some),
    }
}

pub(super) fn options_arg(
    lua: &Lua,
    function: &str,
    options: Value,
) -> mlua::Result<Option<Table>> {
    match options {
        Value::Nil => Ok(None),
        Value::Table(table) => Ok(Some(table)),
        other => Err(script_error(
            lua,
            format!(
                "{function}: options must be a table, got {}",
                other.type_name()
            ),
        )),
    }
}

pub(super) fn ttl_arg(lua: &Lua, function: &str, ttl: Value) -> mlua::Result<Option<f64>> {
    let seconds = match ttl {
        Value::Nil => return Ok(None),
        Value::Integer(i) => i as f64,
        Value::Number(n) => n,
        other => {
            return Err(script_error(
                lua,
                format!(
                    "{function}: ttl must be a number of seconds, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    if seconds.is_finite() && seconds > 0.0 {
        Ok(Some(seconds))
    } else {
        Err(script_error(
            lua,
            format!("{function}: ttl must be a positive number of seconds, got {seconds}"),
        ))
    }
}

/// An integer argument; a float with an integral value is accepted (`2.0`).
pub(super) fn integer_arg(
    lua: &Lua,
    function: &str,
    name: &str,
    value: &Value,
    default: i64,
) -> mlua::Result<i64> {
    match value {
        Value::Nil => Ok(default),
        Value::Integer(i) => Ok(*i),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Ok(*n as i64),
        other => Err(script_error(
            lua,
            format!(
                "{function}: {name} must be an integer, got {}",
                describe(other)
            ),
        )),
    }
}

fn list_args(lua: &Lua, options: Value) -> mlua::Result<(String, usize, Option<String>)> {
    let Some(options) = options_arg(lua, "kv.list", options)? else {
        return Ok((String::new(), KV_LIST_LIMIT_DEFAULT, None));
    };
    let prefix = match options.raw_get::<Value>("prefix")? {
        Value::Nil => String::new(),
        Value::String(s) => s
            .to_str()
            .map_err(|_| script_error(lua, "kv.list: prefix must be valid UTF-8"))?
            .to_string(),
        other => {
            return Err(script_error(
                lua,
                format!(
                    "kv.list: prefix must be a string, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    let limit = integer_arg(
        lua,
        "kv.list",
        "limit",
        &options.raw_get::<Value>("limit")?,
        KV_LIST_LIMIT_DEFAULT as i64,
    )?;
    // The host enforces the upper bound (it is node config); only nonsense is refused here.
    let limit = usize::try_from(limit)
        .ok()
        .filter(|limit| *limit > 0)
        .ok_or_else(|| {
            script_error(lua, format!("kv.list: limit must be positive, got {limit}"))
        })?;
    let cursor = match options.raw_get::<Value>("cursor")? {
        Value::Nil => None,
        Value::String(s) => Some(
            s.to_str()
                .map_err(|_| script_error(lua, "kv.list: cursor must be valid UTF-8"))?
                .to_string(),
        ),
        other => {
            return Err(script_error(
                lua,
                format!(
                    "kv.list: cursor must be a string, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    Ok((prefix, limit, cursor))
}

fn atomic_args(lua: &Lua, ops: Value) -> mlua::Result<Vec<AtomicOp>> {
    let Value::Table(ops) = ops else {
        return Err(script_error(
            lua,
            format!("kv.atomic: expected a list of ops, got {}", ops.type_name()),
        ));
    };
    let count = ops.raw_len();
    let mut parsed = Vec::with_capacity(count);
    for index in 1..=count {
        let what = format!("kv.atomic: op #{index}");
        let Value::Table(op) = ops.raw_get::<Value>(index)? else {
            return Err(script_error(lua, format!("{what} must be a table")));
        };
        let kind: Value = op.raw_get("op")?;
        let key = key_arg(lua, &what, op.raw_get("key")?)?;
        let parsed_op = match kind {
            Value::String(s) if s.as_bytes().as_ref() == b"set" => {
                let value: Value = op.raw_get("value")?;
                if value.is_nil() {
                    return Err(script_error(
                        lua,
                        format!("{what}: value is nil; use op=\"delete\" to remove a key"),
                    ));
                }
                AtomicOp::Set {
                    key,
                    value: value_arg(lua, &what, &value)?,
                    ttl_secs: ttl_arg(lua, &what, op.raw_get("ttl")?)?,
                }
            }
            Value::String(s) if s.as_bytes().as_ref() == b"delete" => AtomicOp::Delete { key },
            Value::String(s) if s.as_bytes().as_ref() == b"incr" => AtomicOp::Incr {
                key,
                by: integer_arg(lua, &what, "by", &op.raw_get("by")?, 1)?,
            },
            Value::String(s) if s.as_bytes().as_ref() == b"cas" => AtomicOp::Cas {
                key,
                expected: optional_value_arg(lua, &what, &op.raw_get("expected")?)?,
                new: optional_value_arg(lua, &what, &op.raw_get("new")?)?,
            },
            other => {
                return Err(script_error(
                    lua,
                    format!(
                        "{what}: op must be \"set\", \"delete\", \"incr\" or \"cas\", got {}",
                        describe(&other)
                    ),
                ));
            }
        };
        parsed.push(parsed_op);
    }
    Ok(parsed)
}
