//! The sandbox's costs, measured (they were `#[ignore]`d tests in lua-sdk):
//!
//! - `pattern`: the metered string library (`lua-sdk/src/strlib.rs`, a Rust
//!   port of Lua's matcher) against Lua's own C functions, both in a plain
//!   state with no hook; prints Rust time / C time per workload.
//! - `hook`: a tight loop in the sandbox (count hook, budget) against the
//!   same loop in a plain mlua state.
//! - `metering`: CPU microseconds per invocation of an ordinary handler and
//!   of a 1M-iteration loop, through `Vm::invoke` (what a request pays).
//!
//! Usage (release; prints, asserts nothing):
//! `cargo run --release -p picloud-bench --bin lua-speed -- [pattern|hook|metering|all]`
//! Figures are in `docs/performance.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use picloud_lua_sdk::{
    AtomicOp, AtomicResult, Code, Consistency, Host, HostError, HostFuture, KvListPage, LogLevel,
    Request, SandboxLimits, ScriptSource, Vm,
};
use serde_json::Value;

/// A host with no services: the measured scripts call none.
struct NoServices;

fn none<'a, T: Send + 'a>() -> HostFuture<'a, T> {
    Box::pin(async {
        Err(HostError::new(
            Code::Unavailable,
            "no services in this benchmark",
        ))
    })
}

impl Host for NoServices {
    fn kv_get<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Consistency,
    ) -> HostFuture<'a, Option<Value>> {
        none()
    }
    fn kv_set<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Value,
        _: Option<f64>,
    ) -> HostFuture<'a, ()> {
        none()
    }
    fn kv_delete<'a>(&'a self, _: &'a str, _: &'a str) -> HostFuture<'a, bool> {
        none()
    }
    fn kv_incr<'a>(&'a self, _: &'a str, _: &'a str, _: i64) -> HostFuture<'a, i64> {
        none()
    }
    fn kv_cas<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Option<Value>,
        _: Option<Value>,
    ) -> HostFuture<'a, bool> {
        none()
    }
    fn kv_list<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: usize,
        _: Option<String>,
    ) -> HostFuture<'a, KvListPage> {
        none()
    }
    fn kv_atomic<'a>(&'a self, _: &'a str, _: Vec<AtomicOp>) -> HostFuture<'a, Vec<AtomicResult>> {
        none()
    }
    fn log(&self, _: &str, _: LogLevel, _: String) {}
    fn now_ms(&self) -> u64 {
        0
    }
}

fn vm(source: &str, limits: SandboxLimits) -> Vm {
    let scripts = [ScriptSource {
        name: "main.lua".to_string(),
        source: source.to_string(),
    }];
    match Vm::new("bench", &scripts, Arc::new(NoServices), limits) {
        Ok(vm) => vm,
        Err(error) => panic!("script failed to load: {error}"),
    }
}

fn request() -> Request {
    Request {
        method: "GET".to_string(),
        path: "/".to_string(),
        ..Request::default()
    }
}

/// Metered string functions against Lua's C ones, no hook on either side.
fn pattern() {
    const SETUP: &str = r#"
      local words = {}
      for i = 1, 20000 do words[i] = ({"alpha", "beta  ", "gamma\t", "x=1", "delta"})[i % 5 + 1] end
      text = table.concat(words, " ")   -- about 100 KB
      lines = {}
      for i = 1, 1000 do lines[i] = "key" .. i .. "=value" .. i end
    "#;
    let workloads = [
        (
            "gsub('%s+', ' ') over 100 KB, x20",
            "for _ = 1, 20 do text:gsub('%s+', ' ') end",
        ),
        (
            "match('^(%w+)=(%w+)$'), 200k calls",
            "for _ = 1, 200 do for i = 1, 1000 do lines[i]:match('^(%w+)=(%w+)$') end end",
        ),
        (
            "find('%d+') per line, 200k calls",
            "for _ = 1, 200 do for i = 1, 1000 do lines[i]:find('%d+') end end",
        ),
        (
            "plain find near the end of 100 KB, x200",
            "for _ = 1, 200 do text:find('notthere', 1, true) end",
        ),
        (
            "gmatch('%a+') over 100 KB, x10",
            "for _ = 1, 10 do for w in text:gmatch('%a+') do end end",
        ),
        (
            "gsub('%w+', table) over 100 KB, x5",
            "local t = { alpha = 'A' } for _ = 1, 5 do text:gsub('%w+', t) end",
        ),
    ];
    let c = mlua::Lua::new();
    let rust = mlua::Lua::new();
    picloud_lua_sdk::bench_support::install_metered_string_library(&rust)
        .expect("install the metered string library");
    for lua in [&c, &rust] {
        lua.load(SETUP).exec().expect("setup");
    }
    println!("# pattern: metered string library (Rust) against Lua's C functions");
    for (name, code) in workloads {
        let mut times = Vec::new();
        for lua in [&c, &rust] {
            let chunk = lua.load(code).into_function().expect("load");
            chunk.call::<()>(()).expect("warm up");
            let started = Instant::now();
            chunk.call::<()>(()).expect("run");
            times.push(started.elapsed());
        }
        println!(
            "{name}: C {:?}, Rust {:?} ({:.2}x)",
            times[0],
            times[1],
            times[1].as_secs_f64() / times[0].as_secs_f64()
        );
    }
}

/// A tight loop in the sandbox against a plain state.
async fn hook() {
    const LOOP: &str = "local n = 0 for i = 1, 20000000 do n = n + i % 7 end return n";
    let plain = mlua::Lua::new();
    let started = Instant::now();
    let expected: i64 = plain.load(LOOP).eval().expect("plain");
    let plain_time = started.elapsed();
    let limits = SandboxLimits {
        instructions_max: u64::MAX,
        timeout: Duration::from_secs(60),
        ..SandboxLimits::default()
    };
    let vm = vm(
        &format!("return function() return tostring((function() {LOOP} end)()) end"),
        limits,
    );
    let started = Instant::now();
    let response = vm.invoke("main.lua", request()).await.expect("invoke");
    let hooked_time = started.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&response.body),
        expected.to_string()
    );
    println!("# hook: the sandbox's count hook and budget on a tight loop");
    println!(
        "tight loop, 20M iterations: plain {plain_time:?}, sandboxed {hooked_time:?} ({:.2}x), {} instructions counted",
        hooked_time.as_secs_f64() / plain_time.as_secs_f64(),
        vm.instructions_used()
    );
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`):
/// unlike wall time, not inflated by other processes on a shared machine.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn per_invocation_micros(body: &str, runs: u32) -> f64 {
    let vm = vm(
        &format!("return function(req)\n{body}\nend"),
        SandboxLimits::default(),
    );
    for _ in 0..runs / 10 {
        vm.invoke("main.lua", request()).await.expect("warm-up");
    }
    let started = thread_cpu_ns();
    for _ in 0..runs {
        vm.invoke("main.lua", request()).await.expect("invoke");
    }
    (thread_cpu_ns() - started) as f64 / 1e3 / f64::from(runs)
}

/// CPU per invocation of an ordinary handler and of a CPU-bound one.
async fn metering() {
    // A handler of the usual kind: build a list, format, concatenate, encode.
    const PLAIN: &str = r#"
local items = {}
for i = 1, 20 do
  table.insert(items, {id = i, name = string.format("item-%03d", i), tags = {"a", "b"}})
end
local names = {}
for i = 1, #items do names[#names + 1] = items[i].name:upper() end
local sorted = {}
for i = 1, #items do sorted[i] = items[i].id * 7 % 20 end
table.sort(sorted)
return {json = {count = #items, names = table.concat(names, ","), items = items, first = sorted[1]}}
"#;
    // A CPU-bound handler: the hook's own cost.
    const LOOP: &str = r#"
local n = 0
for i = 1, 1000000 do n = n + i % 7 end
return tostring(n)
"#;
    println!("# metering: CPU per invocation through Vm::invoke");
    for round in 1..=3 {
        let plain = per_invocation_micros(PLAIN, 20_000).await;
        let cpu = per_invocation_micros(LOOP, 50).await;
        println!(
            "round {round}: plain handler {plain:.1} µs/invocation, 1M-iteration loop {cpu:.0} µs"
        );
    }
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match which.as_str() {
        "pattern" => pattern(),
        "hook" => runtime.block_on(hook()),
        "metering" => runtime.block_on(metering()),
        "all" => {
            pattern();
            runtime.block_on(hook());
            runtime.block_on(metering());
        }
        other => {
            eprintln!("usage: lua-speed [pattern|hook|metering|all] (not {other:?})");
            std::process::exit(2);
        }
    }
}
