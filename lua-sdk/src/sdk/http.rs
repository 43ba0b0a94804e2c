//! `http.request{...}`, `http.get(url, opts)`, `http.post(url, body, opts)`:
//! outbound HTTP requests (not to be confused with `crate::http`, the
//! INBOUND request a handler receives).
//!
//! Arguments are checked here; the URL, the SSRF guard, timeouts, byte
//! limits and concurrency are the host's. The call is an async function:
//! the script's coroutine yields while the request runs, so no script
//! thread is held, and the request never outlives the invocation's
//! wall-clock timeout (it is given what the invocation has left).

use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table, Value};

use crate::budget::Budget;
use crate::convert::{decode_json, lua_to_json};
use crate::error::script_location;
use crate::host::{Host, OutboundRequest, OutboundResponse};
use crate::limits::HTTP_REDIRECTS_MAX;
use crate::location::script_error;

pub(super) fn install(lua: &Lua, app: Arc<str>, host: Arc<dyn Host>) -> mlua::Result<()> {
    let http = lua.create_table()?;
    let (a, h) = (app.clone(), host.clone());
    http.raw_set(
        "request",
        lua.create_async_function(move |lua, options: Value| {
            let (app, host) = (a.clone(), h.clone());
            let request = match options {
                Value::Table(options) => request_arg(&lua, "http.request", &options, None),
                other => Err(script_error(
                    &lua,
                    format!(
                        "http.request: expected a table of options, got {}",
                        other.type_name()
                    ),
                )),
            };
            send(lua, app, host, request)
        })?,
    )?;
    let (a, h) = (app.clone(), host.clone());
    http.raw_set(
        "get",
        lua.create_async_function(move |lua, (url, options): (Value, Value)| {
            let (app, host) = (a.clone(), h.clone());
            let request = shorthand(&lua, "http.get", "GET", url, None, options);
            send(lua, app, host, request)
        })?,
    )?;
    http.raw_set(
        "post",
        lua.create_async_function(move |lua, (url, body, options): (Value, Value, Value)| {
            let (app, host) = (app.clone(), host.clone());
            let request = shorthand(&lua, "http.post", "POST", url, Some(body), options);
            send(lua, app, host, request)
        })?,
    )?;
    lua.globals().raw_set("http", http)
}

/// Runs a checked request on the host and converts its answer.
async fn send(
    lua: Lua,
    app: Arc<str>,
    host: Arc<dyn Host>,
    request: mlua::Result<OutboundRequest>,
) -> mlua::Result<Table> {
    let response = host
        .http_request(&app, request?)
        .await
        .map_err(mlua::Error::external)?;
    response_to_lua(&lua, response)
}

/// `http.get(url, opts)` / `http.post(url, body, opts)` as a request.
fn shorthand(
    lua: &Lua,
    function: &str,
    method: &str,
    url: Value,
    body: Option<Value>,
    options: Value,
) -> mlua::Result<OutboundRequest> {
    let url = match url {
        Value::String(url) => url.to_str()?.to_string(),
        other => {
            return Err(script_error(
                lua,
                format!(
                    "{function}: url must be a string, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    let options = match options {
        Value::Nil => lua.create_table()?,
        Value::Table(options) => options,
        other => {
            return Err(script_error(
                lua,
                format!(
                    "{function}: options must be a table, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    for field in ["url", "method", "body", "json"] {
        if !options.raw_get::<Value>(field)?.is_nil() {
            return Err(script_error(
                lua,
                format!("{function}: {field} is an argument here, not an option"),
            ));
        }
    }
    let body = match body {
        None | Some(Value::Nil) => (Value::Nil, Value::Nil),
        Some(body @ Value::String(_)) => (body, Value::Nil),
        Some(json @ Value::Table(_)) => (Value::Nil, json),
        Some(other) => {
            return Err(script_error(
                lua,
                format!(
                    "{function}: body must be a string or a table (sent as JSON), got {}",
                    other.type_name()
                ),
            ));
        }
    };
    let fixed = Fixed {
        method,
        url,
        body: body.0,
        json: body.1,
    };
    request_arg(lua, function, &options, Some(fixed))
}

/// What a shorthand passes as arguments instead of options.
struct Fixed<'a> {
    method: &'a str,
    url: String,
    body: Value,
    json: Value,
}

/// The request `options` describe (with a shorthand's arguments).
fn request_arg(
    lua: &Lua,
    function: &str,
    options: &Table,
    fixed: Option<Fixed>,
) -> mlua::Result<OutboundRequest> {
    let fail = |message: String| script_error(lua, format!("{function}: {message}"));
    let (method, url, body, json) = match fixed {
        Some(fixed) => (Some(fixed.method), Some(fixed.url), fixed.body, fixed.json),
        None => (
            None,
            None,
            options.raw_get::<Value>("body")?,
            options.raw_get::<Value>("json")?,
        ),
    };
    let url = match url {
        Some(url) => url,
        None => match options.raw_get::<Value>("url")? {
            Value::String(url) => url
                .to_str()
                .map_err(|_| fail("url must be valid UTF-8".into()))?
                .to_string(),
            other => {
                return Err(fail(format!(
                    "url must be a string, got {}",
                    other.type_name()
                )));
            }
        },
    };
    let method = match method {
        Some(method) => method.to_string(),
        None => match options.raw_get::<Value>("method")? {
            Value::Nil => "GET".to_string(),
            Value::String(method) => method.to_string_lossy().to_ascii_uppercase(),
            other => {
                return Err(fail(format!(
                    "method must be a string, got {}",
                    other.type_name()
                )));
            }
        },
    };
    let mut headers = headers_arg(options, &fail)?;
    let body = match (body, json) {
        (Value::Nil, Value::Nil) => Vec::new(),
        (Value::String(body), Value::Nil) => body.as_bytes().to_vec(),
        (Value::Nil, json) => {
            let encoded = lua_to_json(lua, &json)
                .map_err(|error| error.into_lua_error(&script_location(lua), function))?;
            if !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("content-type".into(), "application/json".into()));
            }
            encoded.to_string().into_bytes()
        }
        (Value::String(_), _) => return Err(fail("give body or json, not both".into())),
        (other, _) => {
            return Err(fail(format!(
                "body must be a string, got {}",
                other.type_name()
            )));
        }
    };
    let timeout_ms = match options.raw_get::<Value>("timeout_ms")? {
        Value::Nil => None,
        Value::Integer(ms) if ms > 0 => Some(ms.unsigned_abs()),
        Value::Number(ms) if ms.is_finite() && ms >= 1.0 => Some(ms as u64),
        other => {
            return Err(fail(format!(
                "timeout_ms must be a positive number of milliseconds, got {}",
                describe(&other)
            )));
        }
    };
    let redirects = match options.raw_get::<Value>("redirects")? {
        Value::Nil => 0,
        Value::Integer(n) if (0..=i64::from(HTTP_REDIRECTS_MAX)).contains(&n) => n as u32,
        other => {
            return Err(fail(format!(
                "redirects must be an integer from 0 to {HTTP_REDIRECTS_MAX}, got {}",
                describe(&other)
            )));
        }
    };
    Ok(OutboundRequest {
        method,
        url,
        headers,
        body,
        timeout_ms,
        time_left: time_left(lua),
        redirects,
    })
}

/// `headers = {name = "value", other = {"v1", "v2"}}` (a list repeats the header).
fn headers_arg(
    options: &Table,
    fail: &dyn Fn(String) -> mlua::Error,
) -> mlua::Result<Vec<(String, String)>> {
    let table = match options.raw_get::<Value>("headers")? {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(table) => table,
        other => {
            return Err(fail(format!(
                "headers must be a table, got {}",
                other.type_name()
            )));
        }
    };
    let text = |value: &Value, name: &str| match value {
        Value::String(s) => s
            .to_str()
            .map(|s| s.to_string())
            .map_err(|_| fail(format!("header {name} must be valid UTF-8"))),
        Value::Integer(_) | Value::Number(_) => Ok(describe(value)),
        other => Err(fail(format!(
            "header {name} must be a string or a list of strings, got {}",
            other.type_name()
        ))),
    };
    let mut headers = Vec::new();
    for pair in table.pairs::<Value, Value>() {
        let (name, value) = pair?;
        let Value::String(name) = name else {
            return Err(fail("header names must be strings".into()));
        };
        let name = name
            .to_str()
            .map_err(|_| fail("header names must be valid UTF-8".into()))?
            .to_string();
        match &value {
            Value::Table(values) => {
                for value in values.sequence_values::<Value>() {
                    headers.push((name.clone(), text(&value?, &name)?));
                }
            }
            value => headers.push((name.clone(), text(value, &name)?)),
        }
    }
    Ok(headers)
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{}\"", s.to_string_lossy()),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => other.type_name().to_string(),
    }
}

/// What the invocation has left of its wall clock (unbounded outside one).
fn time_left(lua: &Lua) -> Duration {
    lua.app_data_ref::<Arc<Budget>>()
        .map_or(Duration::MAX, |budget| budget.time_left())
}

/// `{status=, headers=, body=, json=}`: header names in lower case, a
/// repeated header's values joined with ", " (`set-cookie`'s with "\n",
/// since cookies hold commas); `json` when the response says it is JSON and
/// parses (decoded inside the VM's memory cap, every node charged).
fn response_to_lua(lua: &Lua, response: OutboundResponse) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    table.raw_set("status", response.status)?;
    let headers = lua.create_table()?;
    let mut is_json = false;
    for (name, value) in &response.headers {
        if name == "content-type" {
            is_json = is_json_media_type(value);
        }
        let joined = match headers.raw_get::<Option<mlua::LuaString>>(name.as_str())? {
            None => value.clone(),
            Some(earlier) => {
                let separator = if name == "set-cookie" { "\n" } else { ", " };
                format!("{}{separator}{value}", earlier.to_string_lossy())
            }
        };
        headers.raw_set(name.as_str(), joined)?;
    }
    table.raw_set("headers", headers)?;
    if is_json {
        match decode_json(lua, &response.body) {
            Ok(json) => table.raw_set("json", json)?,
            // Not JSON after all: the script still has the body.
            Err(Ok(_syntax)) => {}
            Err(Err(error)) => return Err(error),
        }
    }
    table.raw_set("body", lua.create_string(&response.body)?)?;
    Ok(table)
}

/// `application/json` or any `+json` type, parameters ignored.
fn is_json_media_type(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::is_json_media_type;

    #[test]
    fn json_media_types() {
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("text/json", false),
            ("text/plain", false),
            ("", false),
        ] {
            assert_eq!(is_json_media_type(value), json, "{value}");
        }
    }
}
