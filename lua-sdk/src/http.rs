//! The request a handler receives and the response it returns, and their
//! conversion to and from Lua.
//!
//! A script chooses its status, headers and body, never the response's
//! framing: the server alone writes `content-length`, `transfer-encoding` and
//! the connection-level headers, so a script cannot smuggle a second response
//! onto a keep-alive connection (see [`FRAMING_HEADERS`]). Headers are also
//! bounded in count and bytes so that a table of 100k entries is a clear
//! `invalid_response`, not an allocation the gateway later refuses.

use std::collections::BTreeMap;

use mlua::{Lua, Table, Value};

use crate::convert::{ConvertError, json_to_lua, lua_to_json};

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

/// Most headers (values of a repeated name counted one by one) a response may carry.
pub const RESPONSE_HEADERS_MAX: usize = 100;

/// Most bytes of all response header names and values together.
pub const RESPONSE_HEADER_BYTES_MAX: usize = 64 * 1024;

/// Headers that frame the message or manage the connection. The server owns
/// them: a script-set `content-length` that disagrees with the body would
/// make the rest of the body the next response on a keep-alive connection,
/// and `transfer-encoding` or `connection` would corrupt the framing the same
/// way. Every `proxy-*` name is refused as well (see [`is_framing_header`]).
pub const FRAMING_HEADERS: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// Whether `name` (lower-case) is one only the server may set.
pub fn is_framing_header(name: &str) -> bool {
    FRAMING_HEADERS.contains(&name) || name.starts_with("proxy-")
}

pub(crate) const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
pub(crate) const CONTENT_TYPE_JSON: &str = "application/json";

/// Builds `req`. `req.json` is the decoded body whenever the body parses as
/// JSON, whatever the content type says (clients such as `curl -d` send JSON
/// as a form). A body with a JSON content type that does not parse never gets
/// here: the gateway answers it 400 `invalid_json` (see [`is_json_content_type`]).
pub(crate) fn request_to_lua(lua: &Lua, request: &Request) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(0, 7)?;
    table.raw_set("method", request.method.as_str())?;
    table.raw_set("path", request.path.as_str())?;
    table.raw_set("params", string_map(lua, &request.params)?)?;
    table.raw_set("query", string_map(lua, &request.query)?)?;
    table.raw_set("headers", string_map(lua, &request.headers)?)?;
    table.raw_set("body", lua.create_string(&request.body)?)?;
    if !request.body.is_empty()
        && let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&request.body)
    {
        table.raw_set("json", json_to_lua(lua, &parsed)?)?;
    }
    Ok(table)
}

/// Whether a `content-type` value says JSON: `application/json` or any
/// `+json` type (`application/problem+json`), parameters ignored. Such a body
/// must parse, or the request is refused before its script runs.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn string_map(lua: &Lua, map: &BTreeMap<String, String>) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(0, map.len())?;
    for (key, value) in map {
        table.raw_set(key.as_str(), value.as_str())?;
    }
    Ok(table)
}

/// Why a handler's return value is not a response.
#[derive(Debug)]
pub(crate) enum ResponseError {
    /// Malformed: a message for the script author (`invalid_response`).
    Invalid(String),
    /// `json =` could not be converted: too large (`value_too_large`), not
    /// representable, or the budget ran out while converting.
    Json(ConvertError),
}

impl From<String> for ResponseError {
    fn from(message: String) -> Self {
        ResponseError::Invalid(message)
    }
}

/// Turns a handler's return value into a response, or says what is wrong
/// with it.
pub(crate) fn response_from_lua(lua: &Lua, value: Value) -> Result<Response, ResponseError> {
    match value {
        Value::String(body) => Ok(Response {
            status: 200,
            headers: vec![("content-type".to_string(), CONTENT_TYPE_TEXT.to_string())],
            body: body.as_bytes().to_vec(),
        }),
        Value::Table(table) => response_from_table(lua, &table),
        other => Err(ResponseError::Invalid(format!(
            "handler must return a table {{status=, headers=, body=}} or a string, got {}",
            other.type_name()
        ))),
    }
}

fn response_from_table(lua: &Lua, table: &Table) -> Result<Response, ResponseError> {
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
            return Err(ResponseError::Invalid(format!(
                "response status must be an integer from 100 to 599, got {}",
                other.type_name()
            )));
        }
    };
    let mut headers = headers_from_lua(get("headers")?)?;
    let body = get("body")?;
    let json = get("json")?;
    let body = match (body, json) {
        (Value::Nil, Value::Nil) => Vec::new(),
        (Value::String(body), Value::Nil) => body.as_bytes().to_vec(),
        (Value::Nil, json) => {
            let encoded = lua_to_json(lua, &json).map_err(ResponseError::Json)?;
            if !headers.iter().any(|(name, _)| name == "content-type") {
                headers.push(("content-type".to_string(), CONTENT_TYPE_JSON.to_string()));
                headers.sort();
            }
            encoded.to_string().into_bytes()
        }
        (Value::String(_), _) => {
            return Err(ResponseError::Invalid(
                "response has both body and json; set one".to_string(),
            ));
        }
        (other, _) => {
            return Err(ResponseError::Invalid(format!(
                "response body must be a string, got {} (use json= to send a table)",
                other.type_name()
            )));
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
/// lower-cased. Names must be HTTP tokens other than the framing headers, and
/// values must not contain control characters, so a script cannot split or
/// reframe the response; count and bytes are bounded (see the constants).
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
    let mut headers = HeaderList::default();
    for pair in table.pairs::<Value, Value>() {
        let (name, value) = pair.map_err(|e| format!("response headers: {e}"))?;
        let Value::String(name) = name else {
            return Err(format!(
                "response header names must be strings, got {}",
                name.type_name()
            ));
        };
        let name = header_name(&name.as_bytes())?;
        match value {
            Value::Table(values) => {
                for item in values.sequence_values::<Value>() {
                    let item = item.map_err(|e| format!("response header {name}: {e}"))?;
                    headers.push(&name, header_value(&name, item)?)?;
                }
            }
            other => headers.push(&name, header_value(&name, other)?)?,
        }
    }
    let mut headers = headers.items;
    headers.sort();
    Ok(headers)
}

/// Response headers collected so far, refusing to grow past the limits.
#[derive(Default)]
struct HeaderList {
    items: Vec<(String, String)>,
    bytes: usize,
}

impl HeaderList {
    fn push(&mut self, name: &str, value: String) -> Result<(), String> {
        if self.items.len() >= RESPONSE_HEADERS_MAX {
            return Err(format!(
                "response has more than {RESPONSE_HEADERS_MAX} headers (at {name})"
            ));
        }
        self.bytes += name.len() + value.len();
        if self.bytes > RESPONSE_HEADER_BYTES_MAX {
            return Err(format!(
                "response headers exceed {RESPONSE_HEADER_BYTES_MAX} bytes (at {name})"
            ));
        }
        self.items.push((name.to_string(), value));
        Ok(())
    }
}

/// A valid, lower-cased header name a script may set.
fn header_name(raw: &[u8]) -> Result<String, String> {
    // A name longer than every header's byte budget cannot be valid; the
    // check keeps a huge name out of the error message as well.
    if raw.len() > RESPONSE_HEADER_BYTES_MAX {
        return Err(format!(
            "response header name of {} bytes exceeds {RESPONSE_HEADER_BYTES_MAX} bytes",
            raw.len()
        ));
    }
    let name = String::from_utf8_lossy(raw).to_ascii_lowercase();
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(format!(
            "response header name {name:?} is not a valid HTTP header name"
        ));
    }
    if is_framing_header(&name) {
        return Err(format!(
            "response header {name} is set by the server; scripts cannot set it"
        ));
    }
    Ok(name)
}

fn header_value(name: &str, value: Value) -> Result<String, String> {
    let text = match value {
        // Measured before it is copied: a multi-megabyte value is refused
        // without a second copy of it.
        Value::String(s) if s.as_bytes().len() > RESPONSE_HEADER_BYTES_MAX => {
            return Err(format!(
                "response header {name} exceeds {RESPONSE_HEADER_BYTES_MAX} bytes"
            ));
        }
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
    fn json_content_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json_content_type(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "text/json-ish",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json_content_type(no), "{no}");
        }
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

    /// Runs `return <expr>` and converts the result as a handler's response.
    fn convert(expr: &str) -> Result<Response, String> {
        let lua = Lua::new();
        let value: Value = lua
            .load(format!("return {expr}"))
            .eval()
            .expect("test chunk runs");
        response_from_lua(&lua, value).map_err(|error| match error {
            ResponseError::Invalid(message) => message,
            ResponseError::Json(problem) => format!("response json: {problem}"),
        })
    }

    #[test]
    fn framing_headers_are_refused_and_named() {
        let names = [
            "content-length",
            "Content-Length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "upgrade",
            "te",
            "trailer",
            "proxy-authenticate",
            "Proxy-Connection",
        ];
        for name in names {
            let error =
                convert(&format!("{{ headers = {{ [\"{name}\"] = \"0\" }} }}")).expect_err(name);
            assert!(
                error.contains(&name.to_ascii_lowercase()) && error.contains("set by the server"),
                "{name}: {error}"
            );
            // A list of values is refused the same way.
            let error = convert(&format!("{{ headers = {{ [\"{name}\"] = {{\"1\"}} }} }}"))
                .expect_err(name);
            assert!(error.contains("set by the server"), "{name}: {error}");
        }
    }

    #[test]
    fn ordinary_headers_pass_and_are_sorted() {
        let response = convert(
            "{ headers = { ['X-B'] = 2, ['set-cookie'] = {'a=1', 'b=2'}, ['content-type'] = 'text/html' } }",
        )
        .expect("valid");
        let names: Vec<&str> = response.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "set-cookie", "set-cookie", "x-b"]);
    }

    #[test]
    fn header_count_and_bytes_are_bounded() {
        let at_limit = format!(
            "(function() local h = {{}} for i = 1, {RESPONSE_HEADERS_MAX} do h['x-' .. i] = 'v' end return {{ headers = h }} end)()"
        );
        assert_eq!(
            convert(&at_limit).expect("at the limit").headers.len(),
            RESPONSE_HEADERS_MAX
        );
        let error = convert(
            "(function() local h = {} for i = 1, 100000 do h['x-' .. i] = 'v' end return { headers = h } end)()",
        )
        .expect_err("too many");
        assert!(error.contains("more than 100 headers"), "{error}");
        let error = convert("{ headers = { ['set-cookie'] = (function() local t = {} for i = 1, 1000 do t[i] = 'a' end return t end)() } }")
            .expect_err("too many values");
        assert!(error.contains("set-cookie"), "{error}");
        let error = convert("{ headers = { ['x-big'] = string.rep('v', 70000) } }")
            .expect_err("one huge value");
        assert!(
            error.contains("x-big") && error.contains("bytes"),
            "{error}"
        );
        let error = convert(
            "(function() local h = {} for i = 1, 20 do h['x-' .. i] = string.rep('v', 4000) end return { headers = h } end)()",
        )
        .expect_err("too many bytes");
        assert!(error.contains("exceed 65536 bytes"), "{error}");
        let error =
            convert("{ headers = { [string.rep('n', 70000)] = 'v' } }").expect_err("huge name");
        assert!(error.len() < 200, "the message stays short: {error}");
    }

    #[test]
    fn invalid_names_and_values_are_refused() {
        for (expr, expected) in [
            (
                "{ headers = { [':status'] = '200' } }",
                "not a valid HTTP header name",
            ),
            (
                "{ headers = { [''] = 'x' } }",
                "not a valid HTTP header name",
            ),
            ("{ headers = { ['x-a'] = 'a\\0b' } }", "control character"),
            ("{ headers = { ['x-a'] = 'a\\127' } }", "control character"),
            ("{ headers = { ['x-a'] = true } }", "must be a string"),
        ] {
            let error = convert(expr).expect_err(expr);
            assert!(error.contains(expected), "{expr}: {error}");
        }
    }
}
