//! `table.insert`, `table.remove` and `table.sort` of the sandbox (Lua ports
//! for tables with a metatable, and a sort comparing through a Lua function,
//! in the prelude, `sandbox.rs`) against the C functions of the same Lua
//! build: generated tables, metatables (`__len`, `__index`, `__newindex`),
//! positions and comparators, compared result for result, element for
//! element and error message for error message. Sizes stay below 100, where
//! the C sort never randomizes its pivot.
//!
//! One known difference: the sandbox's default comparison runs in Lua, so
//! "attempt to compare" errors carry the script's position where the C
//! sort's carry none; [`without_compare_position`] removes it.

mod common;

use common::*;
use picloud_lua_sdk::SandboxLimits;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Cases per run; `TABLE_DIFF_SEED` picks another seed.
const CASES: usize = 600;

const PRELUDE: &str = r#"
local out, log = {}, {}
local function ser(v)
  if type(v) == "table" then return "table" end
  return (math.type(v) or type(v)) .. ":" .. tostring(v)
end
local function dump(t, n)
  local parts = {}
  for i = -1, n do parts[#parts + 1] = ser(rawget(t, i)) end
  return table.concat(parts, ",")
end
local function try(t, n, f)
  local r = table.pack(pcall(f))
  local parts = {}
  for i = 1, r.n do parts[i] = ser(r[i]) end
  out[#out + 1] = table.concat(parts, " ") .. " => " .. dump(t, n) .. " log " .. table.concat(log, ",")
  log = {}
end
local gt = function(a, b) return a > b end
local odd = function(a, b) return (a + b) % 3 == 0 end
local always = function() return true end
local boom = function(a, b) if a == 3 then error("boom") end return a < b end
"#;

fn value(rng: &mut StdRng) -> String {
    rng.random_range(0..12).to_string()
}

fn position(rng: &mut StdRng, n: usize) -> String {
    let n = n as i64;
    match rng.random_range(0..10) {
        0 => "-1".into(),
        1 => "0".into(),
        2 => (n + 1).to_string(),
        3 => (n + 2).to_string(),
        4 => "2.5".into(),
        5 => "'2'".into(),
        6 => "nil".into(),
        7 => "{}".into(),
        _ => rng.random_range(1..=n.max(1)).to_string(),
    }
}

fn metatable(rng: &mut StdRng, n: usize) -> &'static str {
    let _ = n;
    match rng.random_range(0..12) {
        0 => "{__len = function() return 3 end}",
        1 => "{__len = function() return 0 end}",
        2 => "{__len = function() return -2 end}",
        3 => "{__len = function() return 2.5 end}",
        4 => "{__len = function() return '4' end}",
        5 => "{__len = function(t) return rawlen(t) + 2 end}",
        6 => "{__index = function(t, k) log[#log + 1] = 'i' .. tostring(k) return nil end}",
        7 => {
            "{__newindex = function(t, k, v) log[#log + 1] = 'n' .. tostring(k) rawset(t, k, v) end}"
        }
        8 => "{__len = function() return nil end}",
        _ => "nil",
    }
}

fn operation(rng: &mut StdRng, n: usize) -> String {
    match rng.random_range(0..14) {
        0 | 1 => format!("local r = table.insert(t, {}) return r", value(rng)),
        2 | 3 => format!(
            "local r = table.insert(t, {}, {}) return r",
            position(rng, n),
            value(rng)
        ),
        4 => "local r = table.insert(t) return r".into(),
        5 => "local r = table.insert(t, 1, 2, 3) return r".into(),
        6 | 7 => "local r = table.remove(t) return r".into(),
        8 | 9 => format!("local r = table.remove(t, {}) return r", position(rng, n)),
        10 => "local r = table.sort(t) return r".into(),
        11 => {
            let comparator = ["gt", "odd", "always", "boom", "'x'"][rng.random_range(0..5)];
            format!("local r = table.sort(t, {comparator}) return r")
        }
        12 => "local r = table.insert(nil, 1) return r".into(),
        _ => "local r = table.remove('str') return r".into(),
    }
}

fn case(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..40);
    let items: Vec<String> = (0..n).map(|_| value(rng)).collect();
    let mut body = format!(
        "{PRELUDE}\nlocal t = setmetatable({{{}}}, {})\n",
        items.join(", "),
        metatable(rng, n)
    );
    for _ in 0..rng.random_range(1..6) {
        body.push_str(&format!(
            "try(t, {}, function() {} end)\n",
            n + 4,
            operation(rng, n)
        ));
    }
    body.push_str("return table.concat(out, '\\n')");
    body
}

/// What the C functions give: the same handler text in a plain Lua state.
fn with_c_functions(body: &str) -> String {
    let lua = mlua::Lua::new();
    let handler: mlua::Function = match lua.load(returning(body)).set_name("@main.lua").eval() {
        Ok(handler) => handler,
        Err(error) => panic!("{error}\n{body}"),
    };
    match handler.call::<String>(()) {
        Ok(text) => text,
        Err(error) => panic!("{error}\n{body}"),
    }
}

#[tokio::test]
async fn generated_cases_match_the_c_functions() {
    let seed = std::env::var("TABLE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut rng = StdRng::seed_from_u64(seed);
    let host = FakeHost::new();
    for index in 0..CASES {
        let body = case(&mut rng);
        let expected = without_compare_position(&with_c_functions(&body));
        let vm = vm_with(&host, &returning(&body), SandboxLimits::default());
        let got = without_compare_position(&body_of(&vm).await);
        assert_eq!(got, expected, "case {index} (seed {seed}):\n{body}");
    }
}

#[tokio::test]
async fn large_sorts_sort() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            "local t = {} for i = 1, 5000 do t[i] = (i * 7919) % 5003 end table.sort(t) \
             for i = 2, #t do assert(t[i - 1] <= t[i]) end \
             local s = {} for i = 1, 3000 do s[i] = tostring(i) end table.sort(s, function(a, b) return a > b end) \
             for i = 2, #s do assert(s[i - 1] >= s[i]) end return 'sorted'",
        ),
    );
    assert_eq!(body_of(&vm).await, "sorted");
}

/// Drops `main.lua:<line>: ` before "attempt to compare".
fn without_compare_position(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("main.lua:") {
        let after = &rest[start + "main.lua:".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let tail = &after[digits..];
        if digits > 0 && tail.starts_with(": attempt to compare") {
            out.push_str(&rest[..start]);
            rest = &tail[2..];
        } else {
            out.push_str(&rest[..start + "main.lua:".len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

async fn body_of(vm: &picloud_lua_sdk::Vm) -> String {
    body(vm).await
}
