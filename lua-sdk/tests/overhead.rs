//! The metering's cost on ordinary handlers, in release:
//! `cargo test --release -p picloud-lua-sdk --test overhead -- --ignored --nocapture`.
//! Prints CPU microseconds per invocation; `docs/performance.md` has the numbers
//! before and after issue 10.

mod common;

use common::*;

/// A handler of the usual kind: build a list, format, concatenate, encode.
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

/// A CPU-bound handler: the hook's own cost.
const LOOP: &str = r#"
local n = 0
for i = 1, 1000000 do n = n + i % 7 end
return tostring(n)
"#;

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`):
/// unlike wall time, not inflated by other processes on a shared machine.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn per_invocation_micros(body: &str, runs: u32) -> f64 {
    let host = FakeHost::new();
    let vm = vm(&host, &returning(body));
    for _ in 0..runs / 10 {
        call(&vm).await.expect("warm-up");
    }
    let started = thread_cpu_ns();
    for _ in 0..runs {
        call(&vm).await.expect("invoke");
    }
    (thread_cpu_ns() - started) as f64 / 1e3 / f64::from(runs)
}

#[tokio::test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
async fn metering_overhead() {
    for round in 1..=3 {
        let plain = per_invocation_micros(PLAIN, 20_000).await;
        let cpu = per_invocation_micros(LOOP, 50).await;
        eprintln!(
            "round {round}: plain handler {plain:.1} µs/invocation, 1M-iteration loop {cpu:.0} µs"
        );
    }
}
