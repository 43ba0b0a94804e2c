//! The Rust pattern functions against the C ones of the same Lua build:
//! thousands of generated cases over a small alphabet and every pattern
//! feature, compared result for result and error message for error message.

use std::sync::Arc;

use mlua::{Function, Lua, Value};

use crate::budget::Budget;
use crate::error::{ErrorKind, classify};
use crate::limits::SandboxLimits;

/// Runs one case in either state and serializes what it returned. The
/// same text in both states, so error positions (`=diff:<line>:`) agree.
const DRIVER: &str = r##"
local function ser(...)
  local n = select('#', ...)
  local t = { tostring(n) }
  for i = 1, n do
    local v = select(i, ...)
    t[#t + 1] = (math.type(v) or type(v)) .. ":" .. tostring(v)
  end
  return table.concat(t, "|")
end
local repls = {
  tbl = { a = "T", ab = false, ["("] = 7, x = 2.5, b = true, [1] = "one" },
  join = function(...) local t = table.pack(...) for i = 1, t.n do t[i] = tostring(t[i]) end return table.concat(t, ",") end,
  none = function() end,
  first = function(c) if c == "a" then return false end return c end,
  count = function(...) return select("#", ...) end,
  tbl_result = function() return {} end,
  boom = function(c) error("boom " .. tostring(c)) end,
  float = function() return 0.5 end,
}
return function(op, s, p, a3, a4, kind)
  if op == "find" then
    return ser(string.find(s, p, a3, a4))
  elseif op == "findm" then
    return ser(s:find(p, a3, a4))
  elseif op == "match" then
    return ser(string.match(s, p, a3))
  elseif op == "matchm" then
    return ser(s:match(p, a3))
  elseif op == "gmatch" then
    local out = {}
    local it = string.gmatch(s, p, a3)
    for _ = 1, 40 do
      local r = ser(it())
      out[#out + 1] = r
      if r == "0" then break end
    end
    return table.concat(out, "/")
  elseif op == "gsub" then
    local repl = a3
    if kind then repl = repls[kind] end
    return ser(string.gsub(s, p, repl, a4))
  elseif op == "gsubm" then
    local repl = a3
    if kind then repl = repls[kind] end
    return ser(s:gsub(p, repl, a4))
  end
  error("unknown op " .. op)
end
"##;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone)]
enum Arg {
    Nil,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Vec<u8>),
}

impl Arg {
    fn to_lua(&self, lua: &Lua) -> Value {
        match self {
            Arg::Nil => Value::Nil,
            Arg::Int(i) => Value::Integer(*i),
            Arg::Float(f) => Value::Number(*f),
            Arg::Bool(b) => Value::Boolean(*b),
            Arg::Str(s) => Value::String(lua.create_string(s).expect("string")),
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    op: &'static str,
    subject: Arg,
    pattern: Arg,
    a3: Arg,
    a4: Arg,
    kind: Option<&'static str>,
}

struct Side {
    lua: Lua,
    driver: Function,
}

impl Side {
    fn new(rust: bool) -> Side {
        let lua = Lua::new();
        if rust {
            let budget = Arc::new(Budget::new(SandboxLimits {
                instructions_max: u64::MAX,
                memory_bytes_max: usize::MAX,
                timeout: std::time::Duration::from_secs(3600),
            }));
            budget.arm();
            super::install(&lua, &budget).expect("install");
        }
        let driver: Function = lua.load(DRIVER).set_name("=diff").eval().expect("driver");
        Side { lua, driver }
    }

    fn run(&self, case: &Case) -> Vec<u8> {
        let lua = &self.lua;
        let result = self.driver.call::<mlua::LuaString>((
            case.op,
            case.subject.to_lua(lua),
            case.pattern.to_lua(lua),
            case.a3.to_lua(lua),
            case.a4.to_lua(lua),
            case.kind,
        ));
        outcome(result)
    }

    fn eval(&self, code: &str) -> Vec<u8> {
        outcome(
            self.lua
                .load(code)
                .set_name("=snippet")
                .eval::<mlua::LuaString>(),
        )
    }
}

/// What a call returned (the driver's serialization) or `error: <message>`.
fn outcome(result: mlua::Result<mlua::LuaString>) -> Vec<u8> {
    match result {
        Ok(text) => text.as_bytes().to_vec(),
        Err(error) => match classify(&error) {
            ErrorKind::Script(message) => format!("error: {message}").into_bytes(),
            _ => format!("error: {error}").into_bytes(),
        },
    }
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SUBJECT_BYTES: &[u8] = b"aaab()x1 A_.%-\0\xe9[]b\n";

const TOKENS: &[&str] = &[
    "a", "b", "x", ".", " ", "%a", "%d", "%s", "%w", "%x", "%p", "%u", "%l", "%c", "%g", "%z",
    "%A", "%S", "%W", "%D", "%.", "%%", "%(", "%]", "[ab]", "[^a]", "[a-c]", "[%a_]", "[]]",
    "[^]]", "[a-]", "[%]]", "[^%s]", "*", "+", "-", "?", "a*", "a+", "a-", "a?", ".-", ".*", "(",
    ")", "()", "(a)", "(.-)", "(a*)", "%1", "%2", "%0", "%b()", "%bab", "%b[]", "%f[%w]", "%f[^a]",
    "%f[%z]", "%f[a]", "^", "$", "\0", "\u{e9}",
];

/// Malformed pieces, added to a few patterns only.
const BAD_TOKENS: &[&str] = &["%", "[", "[a", "%b", "%f", "%fa", "%ba", "%9", ")"];

const REPL_TOKENS: &[&str] = &[
    "%0", "%1", "%2", "%3", "%%", "x", "%", "%a", "%9", "", "-", "\0",
];

const KINDS: &[&str] = &[
    "tbl",
    "join",
    "none",
    "first",
    "count",
    "tbl_result",
    "boom",
    "float",
];

fn subject(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(24);
    (0..len).map(|_| *rng.pick(SUBJECT_BYTES)).collect()
}

fn pattern(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(5) {
        // Raw bytes of pattern syntax: mostly malformed.
        let special = b"^$*+?.([%-])abf0";
        let len = rng.below(9);
        return (0..len).map(|_| *rng.pick(special)).collect();
    }
    let mut p = Vec::new();
    if rng.chance(20) {
        p.push(b'^');
    }
    for _ in 0..rng.below(7) {
        p.extend_from_slice(rng.pick(TOKENS).as_bytes());
    }
    if rng.chance(8) {
        let at = rng.below(p.len() + 1);
        let bad = rng.pick(BAD_TOKENS).as_bytes();
        p.splice(at..at, bad.iter().copied());
    }
    if rng.chance(15) {
        p.push(b'$');
    }
    p
}

fn init(rng: &mut Rng) -> Arg {
    match rng.below(10) {
        0..=3 => Arg::Nil,
        4 => Arg::Int(*rng.pick(&[0, 1, -1, 100, i64::MIN, i64::MAX, -100])),
        5 => Arg::Float(*rng.pick(&[2.0, 2.0, -1.0, 2.5])),
        6 => Arg::Str(rng.pick(&["2", "x", "1.5", " 3 "]).as_bytes().to_vec()),
        _ => Arg::Int(rng.below(60) as i64 - 30),
    }
}

fn case(rng: &mut Rng) -> Case {
    let op = *rng.pick(&[
        "find", "findm", "match", "matchm", "gmatch", "gsub", "gsub", "gsubm",
    ]);
    let subject = if rng.chance(3) && !op.ends_with('m') {
        Arg::Int(rng.below(1000) as i64)
    } else {
        Arg::Str(subject(rng))
    };
    let pattern = if rng.chance(2) {
        Arg::Float(1.5)
    } else {
        Arg::Str(pattern(rng))
    };
    let (a3, a4, kind) = match op {
        "find" | "findm" => {
            let plain = match rng.below(4) {
                0 => Arg::Bool(true),
                1 => Arg::Bool(false),
                2 => Arg::Int(1),
                _ => Arg::Nil,
            };
            (init(rng), plain, None)
        }
        "match" | "matchm" | "gmatch" => (init(rng), Arg::Nil, None),
        _ => {
            let max = match rng.below(20) {
                0..=9 => Arg::Nil,
                10 => Arg::Float(1.5),
                _ => Arg::Int(rng.below(6) as i64 - 1),
            };
            match rng.below(10) {
                0..=2 => (Arg::Nil, max, Some(*rng.pick(KINDS))),
                3 => (Arg::Int(7), max, None),
                4 => (Arg::Bool(true), max, None),
                _ => {
                    let mut repl = Vec::new();
                    for _ in 0..rng.below(4) {
                        repl.extend_from_slice(rng.pick(REPL_TOKENS).as_bytes());
                    }
                    (Arg::Str(repl), max, None)
                }
            }
        }
    };
    Case {
        op,
        subject,
        pattern,
        a3,
        a4,
        kind,
    }
}

#[test]
fn generated_cases_match_the_c_functions() {
    const CASES: usize = 40_000;
    let c = Side::new(false);
    let rust = Side::new(true);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut errors = 0;
    let mut matches = 0;
    for index in 0..CASES {
        let case = case(&mut rng);
        let expected = c.run(&case);
        let actual = rust.run(&case);
        assert_eq!(show(&actual), show(&expected), "case {index}: {case:?}");
        assert_eq!(actual, expected, "case {index}: {case:?}");
        if expected.starts_with(b"error: ") {
            errors += 1;
        } else if !expected.starts_with(b"1|nil") && expected != b"0" {
            matches += 1;
        }
    }
    println!("{CASES} cases: {errors} errors, {matches} with a match");
    // The generator must exercise both outcomes, not only errors.
    assert!(errors > CASES / 20, "{errors} errors");
    assert!(matches > CASES / 5, "{matches} matches");
}

#[test]
fn fixed_cases_match_the_c_functions() {
    let c = Side::new(false);
    let rust = Side::new(true);
    let snippets = [
        // Argument errors, plain and as methods.
        "return string.find()",
        "return string.find('x')",
        "return string.find('x', {})",
        "return ('x'):find({})",
        "return ('x'):match()",
        "return string.match('x', 'x', 1.5)",
        "return string.match('x', 'x', 'a')",
        "return string.match('x', 'x', {})",
        "return select(2, string.find('abc', 'c', '2'))",
        "return string.gsub('x', 'x')",
        "return string.gsub('x', 'x', true)",
        "return ('x'):gsub('x', nil)",
        "return string.gsub('x', 'x', 'y', 'z')",
        "return string.gsub('x', 'x', 'y', 1.5)",
        "return string.gmatch({})",
        "return string.gmatch('x', 'x', 2.5)",
        "return string.gsub('x', {}, {})",
        "return string.find(setmetatable({}, { __name = 'Thing' }), 'x')",
        "return string.find(print, 'x')",
        "return string.find(coroutine.create(print), 'x')",
        // Numbers as strings, and gsub returning the converted subject.
        "return math.type((string.gsub(12, 'x', 'y')))",
        "return (string.gsub(1.5, '%.', ','))",
        "return (string.gsub(2^63, 'e', 'E'))",
        "return (string.gsub('abc', '%w', 3.0))",
        // Depth and capture limits.
        "return tostring(string.match(string.rep('a', 300), string.rep('a?', 300)))",
        "return tostring(string.match(string.rep('a', 150), string.rep('a?', 150)))",
        "return tostring(string.find('x', string.rep('(', 40)))",
        "return tostring(string.find('x', string.rep('()', 32)))",
        "return select('#', string.find('x', string.rep('()', 32)))",
        "return string.find('x', string.rep('()', 33))",
        "return tostring(string.match(string.rep('a', 1000), string.rep('(a)', 32)))",
        // Errors found lazily, during gmatch iteration.
        "for w in string.gmatch('abc', '%') do end return 'x'",
        "local it = string.gmatch('abc', '(') return tostring(it())",
        "local it = string.gmatch('abc', '%1') return tostring(it())",
        // gsub details.
        "return select(2, string.gsub('abc', '', '-'))",
        "return (string.gsub('abc', '', '-'))",
        "return (string.gsub('hello world', '(o)', '[%1%1]', 1))",
        "return (string.gsub('hello', '()', '%1'))",
        "return (string.gsub('hello', 'l+', { ll = 'LL' }))",
        "return (string.gsub('abc', '%w', function(c) return c:upper() .. '.' end))",
        "return (string.gsub('abc', '%w', '%2'))",
        "return (string.gsub('abc', '(%w)', '%2'))",
        "return (string.gsub('abc', '%w', '%'))",
        "return (string.gsub('abc', '.', { a = print }))",
        "return (string.gsub('abc', '^.', 'X'))",
        "return (string.gsub('abc', '^', 'X'))",
        "return (string.gsub('abc', '$', 'X'))",
        "return (string.gsub('abc', 'b*', '-'))",
        "return (string.gsub('a,b,,c', ',', ';', -1))",
        "return (string.gsub('a,b,,c', ',', ';', math.maxinteger))",
        "return (string.gsub('THE (quick) fox', '%f[%a]%a+', 'W'))",
        "return (string.gsub('x = 1, y = 2', '(%w+)%s*=%s*(%w+)', '%2=%1'))",
        // find details.
        "return table.concat({string.find('a.b', '.', 1, true)}, ',')",
        "return table.concat({string.find('abc', '', 10)}, ',')",
        "return table.concat({string.find('abc', '', 4)}, ',')",
        "return table.concat({string.find('abc', '', 5)}, ',')",
        "return table.concat({string.find('abc', 'c', -1)}, ',')",
        "return table.concat({string.find('abc', 'a', -100)}, ',')",
        "return table.concat({string.find('a\\0b', '\\0')}, ',')",
        "return table.concat({string.find('a\\0b', '%z')}, ',')",
        "return table.concat({string.find('a\\0b', '[\\0]')}, ',')",
        "return table.concat({string.find('THE (quick) fox', '%f[%a]%a+%f[%A]')}, ',')",
        "return table.concat({string.find('abc', '%f[%z]')}, ',')",
        "return table.concat({string.find('abc', '%f[^%z]')}, ',')",
        "return table.concat({string.match('  key = value  ', '^%s*(%w+)%s*=%s*(%w+)%s*$')}, ',')",
        "return table.concat({string.match('f(a(b)c)d', '%b()')}, ',')",
        "return table.concat({string.match('hello', '()ll()')}, ',')",
        "return tostring(string.match('hello', '(h)(e)(l)(l)(o)'))",
        "return table.concat({string.find('hello', '(l)(l)')}, ',')",
        "return tostring(string.match('abc', '%f'))",
        "return tostring(string.match('abc', '%b'))",
        "return tostring(string.match('abc', '%ba'))",
        "return tostring(string.match('abc', '[a'))",
        "return tostring(string.match('abc', '[a%'))",
        "return tostring(string.match('abc', '(()'))",
        "return tostring(string.match('abc', 'a)'))",
        "return tostring(string.match('abc', '%0'))",
        // gmatch with init and anchors (no anchor in gmatch).
        "local t = {} for a, b in string.gmatch('k=v, x=y', '(%w+)=(%w+)') do t[#t+1] = a .. b end return table.concat(t, ';')",
        "local t = {} for w in string.gmatch('one two three', '%a+', 5) do t[#t+1] = w end return table.concat(t, ';')",
        "local t = {} for w in string.gmatch('one two three', '%a+', -5) do t[#t+1] = w end return table.concat(t, ';')",
        "local t = {} for w in string.gmatch('^a^a', '^a') do t[#t+1] = w end return table.concat(t, ';')",
        "local t = {} for p in string.gmatch('abc', '()') do t[#t+1] = p end return table.concat(t, ';')",
        "local t = {} for w in ('abc'):gmatch('') do t[#t+1] = '<' .. w .. '>' end return table.concat(t, ';')",
        "local it = string.gmatch('ab', '.') it() it() return tostring(it()) .. tostring(it())",
        // Classes over every byte.
        "local t = {} for _, c in ipairs({'a','c','d','g','l','p','s','u','w','x','z','A','C','D','G','L','P','S','U','W','X','Z'}) do local n = 0 for b = 0, 255 do if string.find(string.char(b), '%' .. c) then n = n + b end end t[#t + 1] = n end return table.concat(t, ',')",
        "local n = 0 for b = 0, 255 do if string.find(string.char(b), '[%w_%-]') then n = n + b end end return tostring(n)",
        // Metamethod table lookups in gsub.
        "return (string.gsub('abc', '%w', setmetatable({}, { __index = function(_, k) return k .. k end })))",
    ];
    for snippet in snippets {
        let expected = c.eval(snippet);
        assert_eq!(show(&rust.eval(snippet)), show(&expected), "{snippet}");
        assert_eq!(rust.eval(snippet), expected, "{snippet}");
    }
}

#[test]
fn the_replacements_are_metered() {
    let lua = Lua::new();
    let budget = Arc::new(Budget::new(SandboxLimits {
        instructions_max: 1_000_000,
        ..SandboxLimits::default()
    }));
    budget.arm();
    super::install(&lua, &budget).expect("install");
    for code in [
        "return string.rep('a', 30000):find('.-.-.-.-b')",
        "return (string.rep('a', 30000):gsub('.-.-.-.-b', ''))",
        "for _ in string.rep('a', 30000):gmatch('.-.-.-.-b') do end",
        "return string.rep('a', 1000000):find(string.rep('a', 100000) .. 'b', 1, true)",
    ] {
        budget.arm();
        let error = lua.load(code).exec().expect_err(code);
        assert!(
            matches!(classify(&error), ErrorKind::Kill(_)),
            "{code}: {error}"
        );
        assert!(budget.killed().is_some(), "{code}");
    }
}

#[test]
fn the_string_metatable_reaches_the_replacements() {
    let rust = Side::new(true);
    let same: bool = rust
        .lua
        .load("return getmetatable('').__index == string and ('x').find == string.find")
        .eval()
        .expect("eval");
    assert!(same);
    let c = Lua::new();
    let c_find: Function = c.load("return string.find").eval().expect("find");
    let rust_find: Function = rust.lua.load("return string.find").eval().expect("find");
    // Not the C function any more: the C one reports itself as a C function
    // in both, so compare behaviour on a pattern only the budget can stop.
    assert_eq!(
        c_find.call::<Option<i64>>(("abc", "b")).expect("c"),
        rust_find.call::<Option<i64>>(("abc", "b")).expect("rust")
    );
}
