//! `files`: the app's stored files, through the `Host`.
//!
//! * `files.put(path, data [, {content_type=}])` → stat table;
//! * `files.get(path)` → `{path, data, size, content_type, etag, updated_ms}`
//!   or nil (the host refuses files over its inline read limit with
//!   `file_too_large`: those are downloaded through a signed URL);
//! * `files.stat(path)` → `{path, size, content_type, etag, updated_ms}` or
//!   nil; `files.delete(path)` → whether it existed;
//! * `files.list{prefix=, limit=, cursor=}` → `{files = {stat, ...}, cursor=}`
//!   (`cursor` nil on the last page);
//! * `files.url(path [, {ttl=, method="GET"|"PUT", content_type=, max_bytes=}])`
//!   → a signed URL path (`/_/files/...`) any node serves.
//!
//! The path rule (`invalid_path`) is the node's (`picloud_storage::files::
//! validate_path`, which the replicated apply also checks): this crate
//! imports no other crate of ours, so a bad path reaches the host and comes
//! back as an `invalid_path` error at the script's line. Sizes, quotas and
//! content types are the host's too (node config).

use std::sync::Arc;

use mlua::{Function, Lua, Table, Value};

use super::kv::{describe, host_error, integer_arg, options_arg, ttl_arg};
use crate::codes::Code;
use crate::error::script_location;
use crate::host::{FileStat, FileUrlOptions, Host, HostError, UrlMethod};
use crate::limits::{FILES_LIST_LIMIT_DEFAULT, FILES_LIST_LIMIT_MAX};
use crate::location::script_error;

pub(super) fn install(lua: &Lua, app: Arc<str>, host: Arc<dyn Host>) -> mlua::Result<()> {
    let files = lua.create_table()?;

    let (a, h) = (app.clone(), host.clone());
    files.raw_set(
        "put",
        lua.create_async_function(move |lua, (path, data, options): (Value, Value, Value)| {
            let (app, host) = (a.clone(), h.clone());
            let args = (|| -> mlua::Result<_> {
                let path = path_arg(&lua, "files.put", path)?;
                let data = match data {
                    Value::String(data) => data.as_bytes().to_vec(),
                    other => {
                        return Err(script_error(
                            &lua,
                            format!("files.put: data must be a string, got {}", describe(&other)),
                        ));
                    }
                };
                let content_type = match options_arg(&lua, "files.put", options)? {
                    Some(options) => string_option(&lua, "files.put", &options, "content_type")?,
                    None => None,
                };
                Ok((path, data, content_type))
            })();
            async move {
                let (path, data, content_type) = args?;
                let stat = host
                    .files_put(&app, &path, data, content_type)
                    .await
                    .map_err(host_error)?;
                stat_table(&lua, &stat)
            }
        })?,
    )?;

    files.raw_set(
        "get",
        path_function(
            lua,
            &app,
            &host,
            "files.get",
            |lua, host, app, path| async move {
                let Some(file) = host.files_get(&app, &path).await.map_err(host_error)? else {
                    return Ok(Value::Nil);
                };
                let table = stat_table(&lua, &file.stat)?;
                table.raw_set("data", lua.create_string(&file.data)?)?;
                Ok(Value::Table(table))
            },
        )?,
    )?;
    files.raw_set(
        "stat",
        path_function(
            lua,
            &app,
            &host,
            "files.stat",
            |lua, host, app, path| async move {
                match host.files_stat(&app, &path).await.map_err(host_error)? {
                    Some(stat) => Ok(Value::Table(stat_table(&lua, &stat)?)),
                    None => Ok(Value::Nil),
                }
            },
        )?,
    )?;
    files.raw_set(
        "delete",
        path_function(
            lua,
            &app,
            &host,
            "files.delete",
            |_, host, app, path| async move {
                let existed = host.files_delete(&app, &path).await.map_err(host_error)?;
                Ok(Value::Boolean(existed))
            },
        )?,
    )?;

    let (a, h) = (app.clone(), host.clone());
    files.raw_set(
        "list",
        lua.create_async_function(move |lua, options: Value| {
            let (app, host) = (a.clone(), h.clone());
            let args = list_args(&lua, options);
            async move {
                let (prefix, limit, cursor) = args?;
                let page = host
                    .files_list(&app, &prefix, limit, cursor)
                    .await
                    .map_err(host_error)?;
                let files = lua.create_table_with_capacity(page.files.len(), 0)?;
                for (index, stat) in page.files.iter().enumerate() {
                    files.raw_set(index + 1, stat_table(&lua, stat)?)?;
                }
                let result = lua.create_table()?;
                result.raw_set("files", files)?;
                result.raw_set("cursor", page.cursor)?;
                Ok(result)
            }
        })?,
    )?;

    let (a, h) = (app, host);
    files.raw_set(
        "url",
        lua.create_async_function(move |lua, (path, options): (Value, Value)| {
            let (app, host) = (a.clone(), h.clone());
            let args = (|| -> mlua::Result<_> {
                let path = path_arg(&lua, "files.url", path)?;
                let options = match options_arg(&lua, "files.url", options)? {
                    Some(options) => url_options(&lua, &options)?,
                    None => FileUrlOptions::default(),
                };
                Ok((path, options))
            })();
            async move {
                let (path, options) = args?;
                host.files_url(&app, &path, options)
                    .await
                    .map_err(host_error)
            }
        })?,
    )?;

    lua.globals().raw_set("files", files)
}

/// A function of one path argument: the path is checked ([`path_arg`])
/// before `call` runs with the host.
fn path_function<F, Fut>(
    lua: &Lua,
    app: &Arc<str>,
    host: &Arc<dyn Host>,
    function: &'static str,
    call: F,
) -> mlua::Result<Function>
where
    F: Fn(Lua, Arc<dyn Host>, Arc<str>, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = mlua::Result<Value>> + Send + 'static,
{
    let (app, host) = (app.clone(), host.clone());
    lua.create_async_function(move |lua, path: Value| {
        let checked = path_arg(&lua, function, path);
        let call = checked.map(|path| call(lua, host.clone(), app.clone(), path));
        async move { call?.await }
    })
}

/// A stat as scripts see it.
fn stat_table(lua: &Lua, stat: &FileStat) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(0, 6)?;
    table.raw_set("path", stat.path.as_str())?;
    table.raw_set("size", stat.size)?;
    table.raw_set("content_type", stat.content_type.as_str())?;
    table.raw_set("etag", stat.etag.as_str())?;
    table.raw_set("updated_ms", stat.updated_ms)?;
    Ok(table)
}

/// An error with `code`, raised at the script's line (catchable like a
/// host error: `pcall` sees `"<code>: <message>"`).
fn coded_error(
    lua: &Lua,
    code: Code,
    function: &str,
    problem: impl std::fmt::Display,
) -> mlua::Error {
    mlua::Error::external(HostError::new(
        code,
        format!("{}{function}: {problem}", script_location(lua)),
    ))
}

/// A file path: a string of UTF-8 (else `invalid_path`); its rule is the
/// host's.
fn path_arg(lua: &Lua, function: &str, path: Value) -> mlua::Result<String> {
    let Value::String(path) = path else {
        return Err(script_error(
            lua,
            format!("{function}: path must be a string, got {}", describe(&path)),
        ));
    };
    let Ok(path) = path.to_str().map(|path| path.to_string()) else {
        return Err(coded_error(
            lua,
            Code::InvalidPath,
            function,
            "the path is not valid UTF-8",
        ));
    };
    Ok(path)
}

/// An optional string field `name` of `options`.
pub(super) fn string_option(
    lua: &Lua,
    function: &str,
    options: &Table,
    name: &str,
) -> mlua::Result<Option<String>> {
    match options.raw_get::<Value>(name)? {
        Value::Nil => Ok(None),
        Value::String(text) => match text.to_str() {
            Ok(text) => Ok(Some(text.to_string())),
            Err(_) => Err(script_error(
                lua,
                format!("{function}: {name} must be valid UTF-8"),
            )),
        },
        other => Err(script_error(
            lua,
            format!(
                "{function}: {name} must be a string, got {}",
                describe(&other)
            ),
        )),
    }
}

fn list_args(lua: &Lua, options: Value) -> mlua::Result<(String, usize, Option<String>)> {
    let Some(options) = options_arg(lua, "files.list", options)? else {
        return Ok((String::new(), FILES_LIST_LIMIT_DEFAULT, None));
    };
    let prefix = string_option(lua, "files.list", &options, "prefix")?.unwrap_or_default();
    let limit = integer_arg(
        lua,
        "files.list",
        "limit",
        &options.raw_get::<Value>("limit")?,
        FILES_LIST_LIMIT_DEFAULT as i64,
    )?;
    let limit = usize::try_from(limit)
        .ok()
        .filter(|limit| (1..=FILES_LIST_LIMIT_MAX).contains(limit))
        .ok_or_else(|| {
            coded_error(
                lua,
                Code::InvalidLimit,
                "files.list",
                format!("limit must be 1 to {FILES_LIST_LIMIT_MAX}, got {limit}"),
            )
        })?;
    let cursor = string_option(lua, "files.list", &options, "cursor")?;
    Ok((prefix, limit, cursor))
}

fn url_options(lua: &Lua, options: &Table) -> mlua::Result<FileUrlOptions> {
    let ttl_secs = ttl_arg(lua, "files.url", options.raw_get("ttl")?)?;
    let method = match string_option(lua, "files.url", options, "method")?.as_deref() {
        None | Some("GET") => UrlMethod::Get,
        Some("PUT") => UrlMethod::Put,
        Some(other) => {
            return Err(script_error(
                lua,
                format!("files.url: method must be \"GET\" or \"PUT\", got {other:?}"),
            ));
        }
    };
    let content_type = string_option(lua, "files.url", options, "content_type")?;
    let max_bytes = match options.raw_get::<Value>("max_bytes")? {
        Value::Nil => None,
        value => {
            let max = integer_arg(lua, "files.url", "max_bytes", &value, 0)?;
            Some(
                u64::try_from(max)
                    .ok()
                    .filter(|max| *max > 0)
                    .ok_or_else(|| {
                        script_error(
                            lua,
                            format!("files.url: max_bytes must be a positive integer, got {max}"),
                        )
                    })?,
            )
        }
    };
    if method == UrlMethod::Get && (content_type.is_some() || max_bytes.is_some()) {
        return Err(script_error(
            lua,
            "files.url: content_type and max_bytes apply to method = \"PUT\" only",
        ));
    }
    Ok(FileUrlOptions {
        ttl_secs,
        method,
        content_type,
        max_bytes,
    })
}
