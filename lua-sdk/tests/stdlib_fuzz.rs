//! Property: whatever stdlib calls a script makes, with whatever argument
//! sizes (0, 1, huge, negative, 2^62, NaN, megabyte strings) and metatables
//! (`__len`, `__index`, `__lt`, `__concat`, `__tostring`, `__eq`, ...), an
//! invocation ends (any outcome) within its timeout + 100 ms, and the
//! process survives. Random handler bodies are generated for
//! `STDLIB_FUZZ_SECS` seconds (default 10) from `STDLIB_FUZZ_SEED`
//! (default fixed, so a failure is reproducible).

mod common;

use std::time::{Duration, Instant};

use common::*;
use picloud_lua_sdk::{SandboxLimits, Vm};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TIMEOUT: Duration = Duration::from_millis(200);
const DEADLINE_SLACK: Duration = Duration::from_millis(100);
/// Tries of a body that misses its deadline (the machine is shared).
const DEADLINE_TRIES: usize = 3;

/// Values a call can get; `M` is a table of hostile metatables, `S` of strings.
const SETUP: &str = r#"
local big = string.rep('x', 1e6)
local spaces = string.rep(' ', 1e6) .. '7'
local loop = function() while true do end end
local M = {
  len_huge = {__len = function() return 2^62 end},
  len_neg = {__len = function() return -2^62 end},
  len_nan = {__len = function() return 0/0 end},
  len_str = {__len = function() return '9' end},
  len_loop = {__len = loop},
  index_fn = {__index = function(t, k) return k end},
  index_loop = {__index = loop},
  index_big = {__index = function() return big end},
  newindex_fn = {__newindex = function() end},
  lt = {__lt = function(a, b) return true end, __le = function() return false end},
  lt_loop = {__lt = loop},
  concat = {__concat = function(a, b) return big end},
  tostring_loop = {__tostring = loop},
  tostring_table = {__tostring = function() return {} end},
  eq = {__eq = function() return true end},
  call = {__call = function(self, ...) return ... end},
}
local function hostile(kind, n)
  local t = {}
  for i = 1, n do t[i] = i end
  return setmetatable(t, M[kind])
end
"#;

const FUNCTIONS: &[&str] = &[
    "string.byte",
    "string.char",
    "string.find",
    "string.format",
    "string.gmatch",
    "string.gsub",
    "string.len",
    "string.lower",
    "string.match",
    "string.rep",
    "string.reverse",
    "string.sub",
    "string.upper",
    "string.pack",
    "string.packsize",
    "string.unpack",
    "table.concat",
    "table.insert",
    "table.move",
    "table.pack",
    "table.remove",
    "table.sort",
    "table.unpack",
    "utf8.char",
    "utf8.charpattern",
    "utf8.codes",
    "utf8.codepoint",
    "utf8.len",
    "utf8.offset",
    "math.abs",
    "math.ceil",
    "math.floor",
    "math.fmod",
    "math.max",
    "math.min",
    "math.modf",
    "math.tointeger",
    "math.type",
    "math.ult",
    "math.random",
    "os.time",
    "os.clock",
    "os.date",
    "select",
    "ipairs",
    "pairs",
    "next",
    "tostring",
    "tonumber",
    "rawlen",
    "rawequal",
    "rawget",
    "rawset",
    "setmetatable",
    "getmetatable",
    "type",
    "assert",
    "error",
    "json.encode",
    "json.decode",
    "json.array",
    "coroutine.wrap",
    "coroutine.create",
    "coroutine.resume",
    "coroutine.status",
    "coroutine.close",
    "coroutine.isyieldable",
    "log.info",
    "print",
    "collectgarbage",
];

fn argument(rng: &mut StdRng) -> String {
    const SCALARS: &[&str] = &[
        "0",
        "1",
        "-1",
        "2",
        "3",
        "255",
        "2^31",
        "2^53",
        "2^62",
        "-2^63",
        "math.maxinteger",
        "math.mininteger",
        "math.huge",
        "-math.huge",
        "0/0",
        "0.5",
        "-0.5",
        "1e308",
        "nil",
        "true",
        "false",
        "json.null",
        "''",
        "'a'",
        "'abc'",
        "'%q'",
        "'%s%d'",
        "'%99d'",
        "'i16'",
        "'c1000000000'",
        "'s'",
        "'z'",
        "'!16'",
        "'.-.-.-x'",
        "'(a*)*b'",
        "'%f[%w]'",
        "'\\xff\\xfe'",
        "'\\x80\\x80'",
        "'%c%c%c'",
        "'*t'",
        "big",
        "spaces",
        "loop",
        "function(...) return ... end",
        "function(a, b) return a < b end",
        "coroutine.create(loop)",
        "{}",
        "{1, 2, 3}",
        "{n = 1}",
        "{{}, {}}",
        "string.rep('a', 1e5)",
    ];
    const KINDS: &[&str] = &[
        "len_huge",
        "len_neg",
        "len_nan",
        "len_str",
        "len_loop",
        "index_fn",
        "index_loop",
        "index_big",
        "newindex_fn",
        "lt",
        "lt_loop",
        "concat",
        "tostring_loop",
        "tostring_table",
        "eq",
        "call",
    ];
    if rng.random_range(0..4) == 0 {
        let kind = KINDS[rng.random_range(0..KINDS.len())];
        let n = [0, 1, 3, 100, 10_000][rng.random_range(0..5)];
        format!("hostile('{kind}', {n})")
    } else {
        SCALARS[rng.random_range(0..SCALARS.len())].to_string()
    }
}

fn statement(rng: &mut StdRng) -> String {
    let function = FUNCTIONS[rng.random_range(0..FUNCTIONS.len())];
    let arguments: Vec<String> = (0..rng.random_range(0..5)).map(|_| argument(rng)).collect();
    let listed = arguments.join(", ");
    let protected = if arguments.is_empty() {
        format!("pcall({function})")
    } else {
        format!("pcall({function}, {listed})")
    };
    match rng.random_range(0..4) {
        // Unprotected: the first error ends the invocation.
        0 => format!("local _ = {function}({listed})"),
        // Many results kept in a table.
        1 => format!("local r = table.pack({protected})"),
        _ => protected,
    }
}

fn body(rng: &mut StdRng) -> String {
    let rounds = ["1", "3", "100", "1e9"][rng.random_range(0..4)];
    let statements: Vec<String> = (0..rng.random_range(1..5))
        .map(|_| statement(rng))
        .collect();
    format!(
        "{SETUP}\nfor round = 1, {rounds} do\n{}\nend\nreturn 'done'",
        statements.join("\n")
    )
}

async fn run(host: &std::sync::Arc<FakeHost>, body: &str) -> Result<Duration, String> {
    let limits = SandboxLimits {
        timeout: TIMEOUT,
        ..SandboxLimits::default()
    };
    let list = scripts(&[("main.lua", &returning(body))]);
    let vm = Vm::new(APP, &list, host.clone(), limits).map_err(|e| format!("load: {e}"))?;
    let started = Instant::now();
    let _outcome = call(&vm).await;
    let elapsed = started.elapsed();
    if elapsed > TIMEOUT + DEADLINE_SLACK {
        return Err(format!("took {elapsed:?}"));
    }
    Ok(elapsed)
}

#[tokio::test]
async fn random_stdlib_calls_end_within_the_deadline() {
    let seed: u64 = std::env::var("STDLIB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let seconds: u64 = std::env::var("STDLIB_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut rng = StdRng::seed_from_u64(seed);
    let host = FakeHost::new();
    let started = Instant::now();
    let mut bodies = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(seconds) {
        let body = body(&mut rng);
        let mut result = run(&host, &body).await;
        for _ in 1..DEADLINE_TRIES {
            if result.is_ok() {
                break;
            }
            result = run(&host, &body).await;
        }
        match result {
            Ok(elapsed) => slowest = slowest.max(elapsed),
            Err(failure) => panic!("body {bodies} (seed {seed}): {failure}\n{body}"),
        }
        bodies += 1;
    }
    eprintln!("{bodies} bodies, slowest {slowest:?}");
    assert!(bodies > 0);
}
