//! Finding `require("literal")` calls in Lua source without running it.
//!
//! A deploy records which file imports which module, rejects a literal
//! name that does not exist, and rejects cycles among requires that run
//! when a module loads. A small lexer is enough: it skips comments and
//! strings the way Lua does, so `-- require("x")` or `"require('x')"` are
//! not imports, and tracks blocks so a `require` inside a function body
//! (run later, maybe never at load) is told apart from one at the top level.
//! Computed names (`require(prefix .. "x")`) are not seen; at run time they
//! are checked like any other.

/// One `require` call with a literal name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequireCall {
    pub name: String,
    /// 1-based line of the `require`.
    pub line: u32,
    /// Outside any function body: it runs when the file itself runs.
    pub top_level: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    Name(&'a str),
    /// A string literal; `None` when it holds escapes (never a plain module name).
    Text(Option<&'a str>),
    Symbol(&'a str),
}

/// Every `require "x"`, `require("x")`, `require 'x'` and `require [[x]]`
/// in `source`, in order.
pub fn find_requires(source: &str) -> Vec<RequireCall> {
    let tokens = tokenize(source);
    let mut found = Vec::new();
    // Open blocks: true for a function body.
    let mut blocks: Vec<bool> = Vec::new();
    for (index, (token, line)) in tokens.iter().enumerate() {
        match token {
            Token::Name("function") => blocks.push(true),
            Token::Name("if" | "do" | "repeat") => blocks.push(false),
            Token::Name("end" | "until") => {
                blocks.pop();
            }
            Token::Name("require") => {
                let previous = index.checked_sub(1).map(|i| &tokens[i].0);
                if matches!(
                    previous,
                    Some(Token::Symbol("." | ":") | Token::Name("function" | "local"))
                ) {
                    continue;
                }
                let literal = match (
                    tokens.get(index + 1),
                    tokens.get(index + 2),
                    tokens.get(index + 3),
                ) {
                    (Some((Token::Text(Some(name)), _)), _, _) => Some(*name),
                    (
                        Some((Token::Symbol("("), _)),
                        Some((Token::Text(Some(name)), _)),
                        Some((Token::Symbol(")"), _)),
                    ) => Some(*name),
                    _ => None,
                };
                if let Some(name) = literal {
                    found.push(RequireCall {
                        name: name.to_string(),
                        line: *line,
                        top_level: !blocks.contains(&true),
                    });
                }
            }
            _ => {}
        }
    }
    found
}

/// The level of a long bracket starting at `at` (`[[` is 0, `[==[` is 2).
fn long_bracket(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    let level = bytes[at + 1..].iter().take_while(|&&b| b == b'=').count();
    (bytes.get(at + 1 + level) == Some(&b'[')).then_some(level)
}

/// The end (exclusive) of a long bracket body opened at `start` with
/// `level`, and the body's range.
fn long_body(bytes: &[u8], start: usize, level: usize) -> (usize, usize, usize) {
    let open_end = start + level + 2;
    let mut close = vec![b']'];
    close.extend(std::iter::repeat_n(b'=', level));
    close.push(b']');
    match bytes[open_end..]
        .windows(close.len())
        .position(|window| window == close.as_slice())
    {
        Some(offset) => (open_end + offset + close.len(), open_end, open_end + offset),
        None => (bytes.len(), open_end, bytes.len()),
    }
}

fn tokenize(source: &str) -> Vec<(Token<'_>, u32)> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut line = 1u32;
    let mut at = 0;
    let count_lines =
        |from: usize, to: usize| bytes[from..to].iter().filter(|&&b| b == b'\n').count() as u32;
    while at < bytes.len() {
        let byte = bytes[at];
        let start = at;
        match byte {
            b'\n' => {
                line += 1;
                at += 1;
            }
            _ if byte.is_ascii_whitespace() => at += 1,
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                at = match long_bracket(bytes, at + 2) {
                    Some(level) => long_body(bytes, at + 2, level).0,
                    None => bytes[at..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(bytes.len(), |offset| at + offset),
                };
                line += count_lines(start, at);
            }
            b'[' if long_bracket(bytes, at).is_some() => {
                let level = long_bracket(bytes, at).unwrap_or(0);
                let (end, body_start, body_end) = long_body(bytes, at, level);
                // Lua drops a newline right after the opening bracket.
                let body = &source[body_start..body_end];
                let body = body.strip_prefix('\n').unwrap_or(body);
                tokens.push((Token::Text(Some(body)), line));
                line += count_lines(start, end);
                at = end;
            }
            b'"' | b'\'' => {
                let mut escaped = false;
                at += 1;
                while at < bytes.len() && bytes[at] != byte && bytes[at] != b'\n' {
                    if bytes[at] == b'\\' {
                        escaped = true;
                        at += 1;
                    }
                    at += 1;
                }
                let end = at.min(bytes.len());
                let text = (!escaped).then(|| &source[start + 1..end]);
                tokens.push((Token::Text(text), line));
                line += count_lines(start, end);
                at = end + 1;
            }
            _ if byte.is_ascii_alphanumeric() || byte == b'_' => {
                while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
                    at += 1;
                }
                tokens.push((Token::Name(&source[start..at]), line));
            }
            b'.' if bytes.get(at + 1) == Some(&b'.') => {
                at += 2;
                tokens.push((Token::Symbol(".."), line));
            }
            _ => {
                // One symbol; multi-byte UTF-8 characters only occur in
                // strings and comments of valid Lua, but stay on a boundary.
                at += source[at..].chars().next().map_or(1, char::len_utf8);
                tokens.push((Token::Symbol(&source[start..at]), line));
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(source: &str) -> Vec<(String, u32, bool)> {
        find_requires(source)
            .into_iter()
            .map(|call| (call.name, call.line, call.top_level))
            .collect()
    }

    #[test]
    fn finds_every_literal_form_with_its_line() {
        let source = "local a = require(\"util.strings\")\nlocal b = require 'b'\nlocal c = require[[@mathx]]\nlocal d = require \"d\"";
        assert_eq!(
            names(source),
            vec![
                ("util.strings".into(), 1, true),
                ("b".into(), 2, true),
                ("@mathx".into(), 3, true),
                ("d".into(), 4, true),
            ]
        );
    }

    #[test]
    fn ignores_comments_strings_methods_and_computed_names() {
        let source = r#"
-- require("commented")
--[==[ require("long comment") ]==]
local s = "require('in a string')"
local t = [[ require("in a long string") ]]
obj.require("field")
obj:require("method")
require(prefix .. "x")
require("esc\097ped")
local x = "a" .. require("after_concat")
"#;
        assert_eq!(names(source), vec![("after_concat".into(), 10, true)]);
    }

    #[test]
    fn tells_function_bodies_from_the_top_level() {
        let source = "local a = require('a')\nlocal function f()\n  if x then return require('b') end\n  for i = 1, 2 do require('c') end\nend\nrepeat require('d') until true\nreturn function() require('e') end";
        assert_eq!(
            names(source),
            vec![
                ("a".into(), 1, true),
                ("b".into(), 3, false),
                ("c".into(), 4, false),
                ("d".into(), 6, true),
                ("e".into(), 7, false),
            ]
        );
    }
}
