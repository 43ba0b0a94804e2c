//! `docs.insert/get/update/replace/delete/find/count`: argument checking and
//! value conversion around `Host::docs`. The node checks what needs state
//! (collection names, ids, queries, sizes); this layer checks shapes.

use std::sync::Arc;

use mlua::{Lua, Table, Value};

use super::kv::{describe, host_error, integer_arg, options_arg, value_arg};
use crate::convert::json_to_lua;
use crate::host::{DocsCall, FindArgs, Host, sort_field};
use crate::location::script_error;

type Json = serde_json::Value;

pub(super) fn install(lua: &Lua, app: Arc<str>, host: Arc<dyn Host>) -> mlua::Result<()> {
    let docs = lua.create_table()?;
    type Parse = fn(&Lua, Value, Value, Value) -> mlua::Result<DocsCall>;
    let functions: [(&str, Parse); 7] = [
        ("insert", |lua, coll, doc, _| {
            Ok(DocsCall::Insert {
                collection: text_arg(lua, "docs.insert", "collection", coll)?,
                doc: object_arg(lua, "docs.insert", "document", &doc)?,
            })
        }),
        ("get", |lua, coll, id, _| {
            Ok(DocsCall::Get {
                collection: text_arg(lua, "docs.get", "collection", coll)?,
                id: text_arg(lua, "docs.get", "id", id)?,
            })
        }),
        ("update", |lua, coll, id, patch| {
            Ok(DocsCall::Update {
                collection: text_arg(lua, "docs.update", "collection", coll)?,
                id: text_arg(lua, "docs.update", "id", id)?,
                patch: object_arg(lua, "docs.update", "patch", &patch)?,
            })
        }),
        ("replace", |lua, coll, id, doc| {
            Ok(DocsCall::Replace {
                collection: text_arg(lua, "docs.replace", "collection", coll)?,
                id: text_arg(lua, "docs.replace", "id", id)?,
                doc: object_arg(lua, "docs.replace", "document", &doc)?,
            })
        }),
        ("delete", |lua, coll, id, _| {
            Ok(DocsCall::Delete {
                collection: text_arg(lua, "docs.delete", "collection", coll)?,
                id: text_arg(lua, "docs.delete", "id", id)?,
            })
        }),
        ("find", |lua, coll, query, options| {
            Ok(DocsCall::Find {
                collection: text_arg(lua, "docs.find", "collection", coll)?,
                query: query_arg(lua, "docs.find", &query)?,
                options: find_options(lua, options)?,
            })
        }),
        ("count", |lua, coll, query, _| {
            Ok(DocsCall::Count {
                collection: text_arg(lua, "docs.count", "collection", coll)?,
                query: query_arg(lua, "docs.count", &query)?,
            })
        }),
    ];
    for (name, parse) in functions {
        let (a, h) = (app.clone(), host.clone());
        docs.raw_set(
            name,
            lua.create_async_function(move |lua, (x, y, z): (Value, Value, Value)| {
                let (app, host) = (a.clone(), h.clone());
                let call = parse(&lua, x, y, z);
                async move {
                    let call = call?;
                    let is_get = matches!(call, DocsCall::Get { .. });
                    let result = host.docs(&app, call).await.map_err(host_error)?;
                    match result {
                        // An absent document is nil, not json.null.
                        Json::Null if is_get => Ok(Value::Nil),
                        other => json_to_lua(&lua, &other),
                    }
                }
            })?,
        )?;
    }
    lua.globals().raw_set("docs", docs)
}

pub(super) fn text_arg(
    lua: &Lua,
    function: &str,
    what: &str,
    value: Value,
) -> mlua::Result<String> {
    match value {
        Value::String(s) => s
            .to_str()
            .map(|s| s.to_string())
            .map_err(|_| script_error(lua, format!("{function}: {what} must be valid UTF-8"))),
        other => Err(script_error(
            lua,
            format!(
                "{function}: {what} must be a string, got {}",
                describe(&other)
            ),
        )),
    }
}

pub(super) fn object_arg(
    lua: &Lua,
    function: &str,
    what: &str,
    value: &Value,
) -> mlua::Result<Json> {
    if !value.is_table() {
        return Err(script_error(
            lua,
            format!(
                "{function}: {what} must be a table, got {}",
                describe(value)
            ),
        ));
    }
    match value_arg(lua, function, value)? {
        object @ Json::Object(_) => Ok(object),
        // An empty table marked as an array is still "no fields".
        Json::Array(items) if items.is_empty() => Ok(Json::Object(Default::default())),
        _ => Err(script_error(
            lua,
            format!("{function}: {what} must be a table with field names, not an array"),
        )),
    }
}

/// `nil` means "every document".
fn query_arg(lua: &Lua, function: &str, value: &Value) -> mlua::Result<Json> {
    match value {
        Value::Nil => Ok(Json::Object(Default::default())),
        other => object_arg(lua, function, "query", other),
    }
}

/// `{sort = "age" | "-age" | {"city", "-age"}, limit = n, cursor = c,
/// fields = {"name", ...}, explain = true}`.
fn find_options(lua: &Lua, options: Value) -> mlua::Result<FindArgs> {
    const F: &str = "docs.find";
    let Some(options) = options_arg(lua, F, options)? else {
        return Ok(FindArgs::default());
    };
    let mut args = FindArgs::default();
    for pair in options.pairs::<Value, Value>() {
        let (key, _) = pair?;
        let known = matches!(&key, Value::String(s)
            if ["sort", "limit", "cursor", "fields", "explain"].contains(&&*s.to_string_lossy()));
        if !known {
            return Err(script_error(
                lua,
                format!(
                    "{F}: unknown option {} (use sort, limit, cursor, fields, explain)",
                    describe(&key)
                ),
            ));
        }
    }
    args.sort = match options.raw_get::<Value>("sort")? {
        Value::Nil => Vec::new(),
        Value::Table(list) => strings(lua, "sort", &list)?
            .into_iter()
            .map(sort_field)
            .collect(),
        single @ Value::String(_) => vec![sort_field(text_arg(lua, F, "sort", single)?)],
        other => {
            return Err(script_error(
                lua,
                format!(
                    "{F}: sort must be a field name or a list of them, got {}",
                    describe(&other)
                ),
            ));
        }
    };
    let limit = integer_arg(lua, F, "limit", &options.raw_get("limit")?, -1)?;
    args.limit = match limit {
        -1 => None,
        n if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        n => {
            return Err(script_error(
                lua,
                format!("{F}: limit must be at least 1, got {n}"),
            ));
        }
    };
    args.cursor = match options.raw_get::<Value>("cursor")? {
        Value::Nil => None,
        other => Some(text_arg(lua, F, "cursor", other)?),
    };
    args.fields = match options.raw_get::<Value>("fields")? {
        Value::Nil => None,
        Value::Table(list) => Some(strings(lua, "fields", &list)?),
        other => {
            return Err(script_error(
                lua,
                format!(
                    "{F}: fields must be a list of field names, got {}",
                    describe(&other)
                ),
            ));
        }
    };
    args.explain = match options.raw_get::<Value>("explain")? {
        Value::Nil => false,
        Value::Boolean(b) => b,
        other => {
            return Err(script_error(
                lua,
                format!("{F}: explain must be a boolean, got {}", describe(&other)),
            ));
        }
    };
    Ok(args)
}

fn strings(lua: &Lua, what: &str, list: &Table) -> mlua::Result<Vec<String>> {
    let mut out = Vec::new();
    for index in 1..=list.raw_len() {
        out.push(text_arg(
            lua,
            "docs.find",
            what,
            list.raw_get::<Value>(index)?,
        )?);
    }
    if out.is_empty() || out.len() != list.pairs::<Value, Value>().count() {
        return Err(script_error(
            lua,
            format!("docs.find: {what} must be a non-empty list of field names"),
        ));
    }
    Ok(out)
}
