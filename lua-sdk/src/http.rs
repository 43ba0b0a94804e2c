//! The request a handler receives and the response it returns, and their
//! conversion to and from Lua.

use std::collections::BTreeMap;

use mlua::{Lua, Table, Value};

use crate::convert::{json_to_lua, lua_to_json};

/// An HTTP request routed to a script.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Route parameters (`/users/{id}` → `id`).
    pub params: BTreeMap<String, String>,
    pub query: BTreeMap<String, String>,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// What a handler answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub status: u16,
    /// In a stable order (sorted by name); a name may repeat (`set-cookie`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub(crate) const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
pub(crate) const CONTENT_TYPE_JSON: &str = "application/json";

/// Builds `req`. `req.json` is the decoded body when the content type says
/// JSON, or when there is no content type and the body parses; a body that
/// does not parse leaves it nil rather than failing the request.
pub(crate) fn request_to_lua(lua: &Lua, request: &Request) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(0, 7)?;
    table.raw_set("method", request.method.as_str())?;
    table.raw_set("path", request.path.as_str())?;
    table.raw_set("params", string_map(lua, &request.params)?)?;
    table.raw_set("query", string_map(lua, &request.query)?)?;
    table.raw_set("headers", string_map(lua, &request.headers)?)?;
    table.raw_set("body", lua.create_string(&request.body)?)?;
    let wants_json = match request.headers.get("content-type") {
        Some(content_type) => content_type.to_ascii_lowercase().contains("json"),
        None => true,
    };
    if wants_json
        && !request.body.is_empty()
        && let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&request.body)
    {
        table.raw_set("json", json_to_lua(lua, &parsed)?)?;
    }
    Ok(table)
}

fn string_map(lua: &Lua, map: &BTreeMap<String, String>) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(0, map.len())?;
    for (key, value) in map {
        table.raw_set(key.as_str(), value.as_str())?;
    }
    Ok(table)
}

/// Turns a handler's return value into a response, or a message for the
/// script author saying what is wrong with it.
pub(crate) fn response_from_lua(lua: &Lua, value: Value) -> Result<Response, String> {
    match value {
        Value::String(body) => Ok(Response {
            status: 200,
            headers: vec![("content-type".to_string(), CONTENT_TYPE_TEXT.to_string())],
            body: body.as_bytes().to_vec(),
        }),
        Value::Table(table) => response_from_table(lua, &table),
        other => Err(format!(
            "handler must return a table {{status=, headers=, body=}} or a string, got {}",
            other.type_name()
        )),
    }
}

fn response_from_table(lua: &Lua, table: &Table) -> Result<Response, String> {
    let get = |field: &str| -> Result<Value, String> {
        table
            .raw_get::<Value>(field)
            .map_err(|e| format!("response.{field}: {e}"))
    };
    let status = match get("status")? {
        Value::Nil => 200,
        Value::Integer(i) => valid_status(i)?,
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1.0e6 => valid_status(n as i64)?,
        other => {
            return Err(format!(
                "response status must be an integer from 100 to 599, got {}",
                other.type_name()
            ));
        }
    };
    let mut headers = headers_from_lua(get("headers")?)?;
    let body = get("body")?;
    let json = get("json")?;
    let body = match (body, json) {
        (Value::Nil, Value::Nil) => Vec::new(),
        (Value::String(body), Value::Nil) => body.as_bytes().to_vec(),
        (Value::Nil, json) => {
            let encoded =
                lua_to_json(lua, &json).map_err(|problem| format!("response json: {problem}"))?;
            if !headers.iter().any(|(name, _)| name == "content-type") {
                headers.push(("content-type".to_string(), CONTENT_TYPE_JSON.to_string()));
                headers.sort();
            }
            encoded.to_string().into_bytes()
        }
        (Value::String(_), _) => return Err("response has both body and json; set one".to_string()),
        (other, _) => {
            return Err(format!(
                "response body must be a string, got {} (use json= to send a table)",
                other.type_name()
            ));
        }
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn valid_status(status: i64) -> Result<u16, String> {
    match u16::try_from(status) {
        Ok(status) if (100..=599).contains(&status) => Ok(status),
        _ => Err(format!(
            "response status must be an integer from 100 to 599, got {status}"
        )),
    }
}

/// `headers = { ["x-a"] = "1", ["set-cookie"] = {"a=1", "b=2"} }`; names are
/// lower-cased. Names must be HTTP tokens and values must not contain control
/// characters, so a script cannot split the response.
fn headers_from_lua(value: Value) -> Result<Vec<(String, String)>, String> {
    let table = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(table) => table,
        other => {
            return Err(format!(
                "response headers must be a table, got {}",
                other.type_name()
            ));
        }
    };
    let mut headers = Vec::new();
    for pair in table.pairs::<Value, Value>() {
        let (name, value) = pair.map_err(|e| format!("response headers: {e}"))?;
        let Value::String(name) = name else {
            return Err(format!(
                "response header names must be strings, got {}",
                name.type_name()
            ));
        };
        let name = name.to_string_lossy().to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!(
                "response header name {name:?} is not a valid HTTP header name"
            ));
        }
        match value {
            Value::Table(values) => {
                for item in values.sequence_values::<Value>() {
                    let item = item.map_err(|e| format!("response header {name}: {e}"))?;
                    headers.push((name.clone(), header_value(&name, item)?));
                }
            }
            other => headers.push((name.clone(), header_value(&name, other)?)),
        }
    }
    headers.sort();
    Ok(headers)
}

fn header_value(name: &str, value: Value) -> Result<String, String> {
    let text = match value {
        Value::String(s) => s
            .to_str()
            .map_err(|_| format!("response header {name} is not valid UTF-8"))?
            .to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(format!(
                "response header {name} must be a string, got {}",
                other.type_name()
            ));
        }
    };
    if text.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "response header {name} contains a control character"
        ));
    }
    Ok(text)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bounds() {
        assert_eq!(valid_status(100), Ok(100));
        assert_eq!(valid_status(599), Ok(599));
        assert!(valid_status(99).is_err());
        assert!(valid_status(600).is_err());
        assert!(valid_status(-1).is_err());
        assert!(valid_status(65_536 + 200).is_err());
    }

    #[test]
    fn header_tokens() {
        assert!("x-request-id".bytes().all(is_token_byte));
        assert!(!"bad name".bytes().all(is_token_byte));
        assert!(!"a:b".bytes().all(is_token_byte));
    }

    #[test]
    fn header_values_reject_line_breaks_but_allow_tabs() {
        let lua = Lua::new();
        let ok = lua.create_string("a\tb").expect("string");
        assert_eq!(header_value("x", Value::String(ok)), Ok("a\tb".to_string()));
        let bad = lua.create_string("a\r\nset-cookie: x").expect("string");
        assert!(header_value("x", Value::String(bad)).is_err());
    }
}
