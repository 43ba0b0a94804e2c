//! Every row of LUA-SANDBOX.md: each escape is tried and must end in the
//! right `InvokeError`, after which the same VM (its kill flag reset) and a
//! fresh VM both serve a normal request.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use picloud_lua_sdk::{InvokeError, SandboxLimits, Vm};

/// Small limits so each hostile test ends fast: 5 M instructions, 4 MiB,
/// 10 s (the wall clock must not be what stops instruction-bound loops).
fn tight() -> SandboxLimits {
    SandboxLimits {
        instructions_max: 5_000_000,
        memory_bytes_max: 4 * 1024 * 1024,
        timeout: Duration::from_secs(10),
    }
}

/// A script with a hostile handler `main.lua` and a normal one `ok.lua`.
fn hostile_vm(host: &Arc<FakeHost>, hostile_body: &str, limits: SandboxLimits) -> Vm {
    let hostile = returning(hostile_body);
    let list = scripts(&[
        ("main.lua", hostile.as_str()),
        ("ok.lua", "return function() return 'still alive' end"),
    ]);
    match Vm::new(APP, &list, host.clone(), limits) {
        Ok(vm) => vm,
        Err(error) => panic!("load failed: {error}"),
    }
}

async fn assert_recovers(host: &Arc<FakeHost>, vm: &Vm, limits: SandboxLimits) {
    // The kill flag is per invocation: the same VM serves the next request.
    let again = vm
        .invoke("ok.lua", get("/"))
        .await
        .expect("same VM serves again");
    assert_eq!(again.body, b"still alive");
    let fresh = vm_with(host, "return function() return 'fresh' end", limits);
    assert_eq!(body(&fresh).await, "fresh");
}

async fn expect_timeout(hostile_body: &str) -> String {
    let host = FakeHost::new();
    let vm = hostile_vm(&host, hostile_body, tight());
    let message = match call(&vm).await {
        Err(InvokeError::Timeout { message }) => message,
        other => panic!("{hostile_body}: expected Timeout, got {other:?}"),
    };
    assert!(!vm.is_reusable(), "a killed VM must be retired");
    assert_recovers(&host, &vm, tight()).await;
    message
}

async fn expect_memory(hostile_body: &str) {
    let host = FakeHost::new();
    let vm = hostile_vm(&host, hostile_body, tight());
    match call(&vm).await {
        Err(InvokeError::Memory { message }) => {
            assert!(message.contains("memory limit"), "{message}")
        }
        other => panic!("{hostile_body}: expected Memory, got {other:?}"),
    }
    assert!(!vm.is_reusable());
    assert_recovers(&host, &vm, tight()).await;
}

async fn expect_script_error(hostile_body: &str, expected: &str) {
    let host = FakeHost::new();
    let vm = hostile_vm(&host, hostile_body, tight());
    match call(&vm).await {
        Err(InvokeError::Script { message }) => {
            assert!(
                message.contains(expected),
                "{hostile_body}: {message:?} lacks {expected:?}"
            );
        }
        other => panic!("{hostile_body}: expected Script error, got {other:?}"),
    }
    assert_recovers(&host, &vm, tight()).await;
}

// ---- instruction budget and its escapes --------------------------------

#[tokio::test]
async fn busy_loop_hits_the_instruction_budget() {
    let message = expect_timeout("while true do end").await;
    assert!(
        message.contains("instruction budget of 5000000"),
        "{message}"
    );
}

#[tokio::test]
async fn escape_a_pcall_cannot_swallow_the_kill() {
    expect_timeout("while true do pcall(function() while true do end end) end").await;
}

#[tokio::test]
async fn escape_a_pcall_of_error_cannot_swallow_the_kill() {
    // Many cheap pcalls that each fail: the hook fires inside error handling too.
    expect_timeout("while true do pcall(error, 'x') end").await;
}

#[tokio::test]
async fn escape_a_xpcall_cannot_swallow_the_kill() {
    expect_timeout(
        "while true do xpcall(function() while true do end end, function(e) return e end) end",
    )
    .await;
}

#[tokio::test]
async fn escape_a_xpcall_handler_that_loops() {
    expect_timeout("while true do xpcall(function() while true do end end, function(e) while true do end end) end")
        .await;
}

#[tokio::test]
async fn escape_b_loop_inside_coroutine_wrap_is_counted() {
    expect_timeout("coroutine.wrap(function() while true do end end)()").await;
}

#[tokio::test]
async fn escape_b_loop_inside_coroutine_resume_is_counted() {
    expect_timeout(
        "local co = coroutine.create(function() while true do end end) return coroutine.resume(co)",
    )
    .await;
}

#[tokio::test]
async fn escape_b_resume_in_a_loop_cannot_swallow_the_kill() {
    expect_timeout(
        "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
    )
    .await;
}

#[tokio::test]
async fn escape_b_wrap_inside_pcall_in_a_loop() {
    expect_timeout("while true do pcall(coroutine.wrap(function() while true do end end)) end")
        .await;
}

#[tokio::test]
async fn escape_b_nested_coroutines() {
    expect_timeout(
        "coroutine.wrap(function() coroutine.wrap(function() while true do pcall(function() while true do end end) end end)() end)()",
    )
    .await;
}

#[tokio::test]
async fn escape_close_handler_cannot_mask_the_kill() {
    // A `__close` handler that raises replaces the error being unwound: the
    // kill flag, not the error value, decides.
    expect_timeout(
        r#"while true do
             pcall(function()
               local guard <close> = setmetatable({}, { __close = function() error("masked") end })
               while true do end
             end)
           end"#,
    )
    .await;
}

#[tokio::test]
async fn escape_coroutine_close_cannot_swallow_the_kill() {
    expect_timeout(
        r#"while true do
             local co = coroutine.create(function()
               local guard <close> = setmetatable({}, { __close = function() while true do end end })
               coroutine.yield()
             end)
             coroutine.resume(co)
             coroutine.close(co)
           end"#,
    )
    .await;
}

#[tokio::test]
async fn global_hook_counts_instructions_inside_coroutines() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning("coroutine.wrap(function() for i = 1, 1000000 do end end)() return 'done'"),
    );
    assert_eq!(body(&vm).await, "done");
    // A numeric for loop is 1-2 instructions an iteration; the count is
    // exact to within one hook interval (the interval changes with memory,
    // and a thread's first interval is its creator's).
    assert!(
        vm.instructions_used()
            >= 1_000_000 - u64::from(picloud_lua_sdk::HOOK_INSTRUCTIONS_INTERVAL),
        "{}",
        vm.instructions_used()
    );
}

#[tokio::test]
async fn wall_clock_stops_a_cpu_loop_the_budget_would_allow() {
    let limits = SandboxLimits {
        instructions_max: u64::MAX,
        memory_bytes_max: 4 * 1024 * 1024,
        timeout: Duration::from_millis(200),
    };
    let host = FakeHost::new();
    let vm = hostile_vm(
        &host,
        "while true do pcall(function() while true do end end) end",
        limits,
    );
    match call(&vm).await {
        Err(InvokeError::Timeout { message }) => assert!(
            message.contains("wall-clock timeout of 200 ms"),
            "{message}"
        ),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_recovers(&host, &vm, limits).await;
}

#[tokio::test]
async fn awaiting_a_host_call_that_never_returns_times_out() {
    let limits = SandboxLimits {
        timeout: Duration::from_millis(100),
        ..SandboxLimits::default()
    };
    let host = FakeHost::new();
    *host.hang_key.lock().expect("lock") = Some("slow".to_string());
    let vm = hostile_vm(&host, "return tostring(kv.get('slow'))", limits);
    match call(&vm).await {
        Err(InvokeError::Timeout { message }) => {
            assert!(message.contains("wall-clock"), "{message}")
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(!vm.is_reusable());
    assert_recovers(&host, &vm, limits).await;
}

#[tokio::test]
async fn the_budget_is_reset_for_every_invocation() {
    // Each call uses ~60% of the budget: it must pass every time, which it
    // would not if instructions carried over.
    let host = FakeHost::new();
    let vm = vm_with(
        &host,
        &returning("for i = 1, 1500000 do end return 'ok'"),
        tight(),
    );
    for _ in 0..4 {
        assert_eq!(body(&vm).await, "ok");
    }
    assert!(vm.is_reusable());
}

#[test]
fn loading_a_script_runs_under_the_same_limits() {
    let host = FakeHost::new();
    let looping = scripts(&[(
        "spin.lua",
        "while true do pcall(function() while true do end end) end",
    )]);
    let error = Vm::new(APP, &looping, host.clone(), tight()).expect_err("must not load");
    assert_eq!(error.file, "spin.lua");
    assert!(error.message.contains("instruction budget"), "{error}");

    let hungry = scripts(&[(
        "big.lua",
        "local t = {} for i = 1, 1e8 do t[i] = i end return function() end",
    )]);
    let error = Vm::new(APP, &hungry, host, tight()).expect_err("must not load");
    assert!(
        error
            .to_string()
            .starts_with("big.lua: script exceeded its memory limit"),
        "{error}"
    );
}

// ---- memory ---------------------------------------------------------------

#[tokio::test]
async fn string_rep_bomb_hits_the_memory_cap() {
    expect_memory("return string.rep('x', 1024 * 1024 * 1024)").await;
}

#[tokio::test]
async fn doubling_string_hits_the_memory_cap() {
    expect_memory("local s = 'x' while true do s = s .. s end").await;
}

#[tokio::test]
async fn table_growth_hits_the_memory_cap() {
    expect_memory("local t = {} local i = 0 while true do i = i + 1 t[i] = {i} end").await;
}

#[tokio::test]
async fn memory_bomb_inside_pcall_cannot_be_swallowed() {
    expect_memory("while true do pcall(string.rep, 'x', 1024 * 1024 * 1024) end").await;
}

#[tokio::test]
async fn table_growth_inside_pcall_cannot_be_swallowed() {
    expect_memory(
        "local keep = {} while true do pcall(function() local t = {} keep[#keep + 1] = t for i = 1, 1e9 do t[i] = i end end) end",
    )
    .await;
}

#[tokio::test]
async fn memory_bomb_inside_coroutine_resume_cannot_be_swallowed() {
    expect_memory(
        "while true do coroutine.resume(coroutine.create(function() return string.rep('x', 1e9) end)) end",
    )
    .await;
}

#[tokio::test]
async fn memory_bomb_inside_xpcall_cannot_be_swallowed() {
    expect_memory("while true do xpcall(string.rep, function(e) return e end, 'x', 1e9) end").await;
}

#[tokio::test]
async fn memory_bomb_through_json_decode_hits_the_cap() {
    expect_memory(
        r#"local s = "[" .. string.rep("1,", 2000000) .. "1]" return json.encode(json.decode(s))"#,
    )
    .await;
}

// ---- recursion ------------------------------------------------------------

#[tokio::test]
async fn deep_lua_recursion_is_a_script_error() {
    expect_script_error(
        "local function f() return f() + 1 end return f()",
        "stack overflow",
    )
    .await;
}

#[tokio::test]
async fn deep_recursion_caught_by_pcall_leaves_the_vm_working() {
    let host = FakeHost::new();
    let vm = vm_with(
        &host,
        &returning(
            "local function f() return f() + 1 end local ok, err = pcall(f) return tostring(ok) .. ' ' .. err",
        ),
        tight(),
    );
    let text = body(&vm).await;
    assert!(
        text.starts_with("false ") && text.contains("stack overflow"),
        "{text}"
    );
    assert!(vm.is_reusable());
}

#[tokio::test]
async fn c_stack_overflow_through_gsub_is_a_script_error() {
    expect_script_error(
        "local function f(s) return (string.gsub('x', 'x', f)) end return f('x')",
        "stack overflow",
    )
    .await;
}

#[tokio::test]
async fn c_stack_overflow_through_metamethods_is_a_script_error() {
    expect_script_error(
        "local t = setmetatable({}, { __index = function(t, k) return t[k] end }) return t.x",
        "stack overflow",
    )
    .await;
}

#[tokio::test]
async fn c_stack_overflow_through_rust_callbacks_is_a_script_error() {
    // log.info → tostring → __tostring → log.info ...: every level crosses
    // Rust and C frames; Lua's C-call limit must stop it before the native
    // stack (2 MiB on a tokio worker) runs out.
    expect_script_error(
        "local t t = setmetatable({}, { __tostring = function() log.info(t) return 'x' end }) log.info(t) return 'no'",
        "stack overflow",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_stack_overflow_through_json_and_tostring_on_a_worker_thread() {
    let host = FakeHost::new();
    let vm = hostile_vm(
        &host,
        "local t t = setmetatable({}, { __tostring = function() return tostring(json.encode({ tostring(t) })) end }) return tostring(t)",
        tight(),
    );
    let vm = Arc::new(vm);
    let task = tokio::spawn({
        let vm = vm.clone();
        async move { vm.invoke("main.lua", get("/")).await }
    });
    match task.await.expect("task") {
        Err(InvokeError::Script { message }) => {
            assert!(message.contains("stack overflow"), "{message}")
        }
        other => panic!("expected a script error, got {other:?}"),
    }
}

// ---- pattern matching (runs in Rust, metered) ---------------------------------

/// A pattern that backtracks O(n^4) over a 30 000-byte subject: minutes of
/// work inside one library call if nothing can stop it.
const BACKTRACK: &str = r#"local s = string.rep("a", 30000) local p = ".-.-.-.-b""#;

#[tokio::test]
async fn backtracking_find_hits_the_instruction_budget() {
    let message = expect_timeout(&format!("{BACKTRACK} return tostring(string.find(s, p))")).await;
    assert!(message.contains("instruction budget"), "{message}");
}

#[tokio::test]
async fn backtracking_match_gsub_and_gmatch_hit_the_budget() {
    expect_timeout(&format!("{BACKTRACK} return tostring(string.match(s, p))")).await;
    expect_timeout(&format!("{BACKTRACK} return (string.gsub(s, p, 'x'))")).await;
    expect_timeout(&format!(
        "{BACKTRACK} for m in string.gmatch(s, p) do end return 'no'"
    ))
    .await;
}

#[tokio::test]
async fn backtracking_through_method_syntax_hits_the_budget() {
    expect_timeout(&format!("{BACKTRACK} return tostring(s:find(p))")).await;
    expect_timeout(&format!("{BACKTRACK} return tostring(s:match(p))")).await;
    expect_timeout(&format!("{BACKTRACK} return (s:gsub(p, '%0%0'))")).await;
    expect_timeout(&format!(
        "{BACKTRACK} for m in s:gmatch(p) do end return 'no'"
    ))
    .await;
    expect_timeout(&format!(
        "{BACKTRACK} return (s:gsub('a', function(c) return c:find(p) and 'y' or s:find(p) end))"
    ))
    .await;
}

#[tokio::test]
async fn plain_find_of_a_long_near_miss_hits_the_budget() {
    // 1 MB haystack, 100 KB needle that fails only at its last byte: about
    // 10^11 byte comparisons.
    let setup =
        r#"local hay = string.rep("a", 1000000) local needle = string.rep("a", 100000) .. "b""#;
    expect_timeout(&format!(
        "{setup} return tostring(hay:find(needle, 1, true))"
    ))
    .await;
    // No special characters: `find` searches plainly without being asked.
    expect_timeout(&format!(
        "{setup} return tostring(string.find(hay, needle))"
    ))
    .await;
}

#[tokio::test]
async fn pcall_around_a_backtracking_pattern_cannot_swallow_the_kill() {
    expect_timeout(&format!(
        "{BACKTRACK} while true do pcall(string.find, s, p) end"
    ))
    .await;
    expect_timeout(&format!(
        "{BACKTRACK} while true do pcall(function() return s:gsub(p, '') end) end"
    ))
    .await;
    expect_timeout(&format!(
        "{BACKTRACK} while true do coroutine.resume(coroutine.create(function() return s:match(p) end)) end"
    ))
    .await;
}

#[tokio::test]
async fn wall_clock_stops_a_pattern_the_budget_would_allow() {
    let limits = SandboxLimits {
        instructions_max: u64::MAX,
        memory_bytes_max: 4 * 1024 * 1024,
        timeout: Duration::from_millis(200),
    };
    let host = FakeHost::new();
    let vm = hostile_vm(
        &host,
        &format!("{BACKTRACK} return tostring(s:find(p))"),
        limits,
    );
    let started = std::time::Instant::now();
    match call(&vm).await {
        Err(InvokeError::Timeout { message }) => {
            assert!(message.contains("wall-clock"), "{message}")
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_recovers(&host, &vm, limits).await;
}

#[tokio::test]
async fn gsub_output_is_bounded_by_the_memory_cap() {
    // 100 MB of output from a 1 MB subject: the Rust-side buffer counts
    // against what the VM has left.
    expect_memory("return (string.rep('x', 1000000):gsub('', string.rep('y', 100)))").await;
    expect_memory(
        "while true do pcall(string.gsub, string.rep('x', 1000000), 'x', string.rep('y', 100)) end",
    )
    .await;
}

#[tokio::test]
async fn pattern_errors_read_like_lua_errors() {
    expect_script_error(
        "return string.find('x', '%')",
        "main.lua:2: malformed pattern (ends with '%')",
    )
    .await;
    expect_script_error(
        "return ('x'):gsub('x', {}, 'n')",
        "main.lua:2: bad argument #3 to 'gsub' (number expected, got string)",
    )
    .await;
    expect_script_error(
        "return string.rep('a', 300):match(string.rep('a?', 300))",
        "pattern too complex",
    )
    .await;
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"local ok, err = pcall(string.match, "x", "[a")
               local words = {}
               for k, v in string.gmatch("a=1, b=2", "(%w+)=(%w+)") do words[#words + 1] = k .. v end
               local swapped, n = ("hello world"):gsub("(%w+) (%w+)", "%2 %1")
               return tostring(ok) .. "|" .. err .. "|" .. table.concat(words, ",") .. "|" .. swapped .. n
                 .. "|" .. table.concat({ ("key = val"):find("^(%w+)%s*=%s*(%w+)$") }, ",")"#,
        ),
    );
    assert_eq!(
        body(&vm).await,
        "false|malformed pattern (missing ']')|a1,b2|world hello1|1,9,key,val"
    );
    assert!(vm.is_reusable());
}

// ---- removed globals --------------------------------------------------------

#[tokio::test]
async fn dangerous_globals_are_absent() {
    let probes = [
        "io",
        "debug",
        "package",
        "load",
        "loadfile",
        "dofile",
        "loadstring",
        "string.dump",
        "os.execute",
        "os.exit",
        "os.getenv",
        "os.remove",
        "os.rename",
        "os.tmpname",
        "os.setlocale",
        "warn",
    ];
    let host = FakeHost::new();
    for probe in probes {
        let vm = vm(&host, &returning(&format!("return type({probe})")));
        assert_eq!(body(&vm).await, "nil", "{probe} must be absent");
    }
    // `require` is the sandbox's own (modules only; tests/modules.rs).
    let kept = [
        "require",
        "os.time",
        "os.clock",
        "os.date",
        "string.format",
        "table.concat",
        "math.floor",
        "utf8.char",
    ];
    for probe in kept {
        let vm = vm(&host, &returning(&format!("return type({probe})")));
        assert_eq!(body(&vm).await, "function", "{probe} must be present");
    }
}

#[tokio::test]
async fn string_metatable_does_not_reach_dump() {
    let host = FakeHost::new();
    let vm = vm(&host, &returning("return type(('').dump)"));
    assert_eq!(body(&vm).await, "nil");
}

#[tokio::test]
async fn collectgarbage_only_counts() {
    let host = FakeHost::new();
    let counting = vm(
        &host,
        &returning("return math.type(collectgarbage('count')) or 'x'"),
    );
    assert_eq!(body(&counting).await, "float");
    for option in ["'collect'", "", "'stop'", "'step'", "'incremental'"] {
        let vm = vm(
            &host,
            &returning(&format!("collectgarbage({option}) return 'no'")),
        );
        match call(&vm).await {
            Err(InvokeError::Script { message }) => {
                assert!(message.contains("only \"count\""), "{message}")
            }
            other => panic!("collectgarbage({option}): expected a script error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn gc_metamethods_are_refused() {
    expect_script_error(
        "setmetatable({}, { __gc = function() while true do end end }) return 'no'",
        "__gc metamethods are not allowed",
    )
    .await;
}

#[tokio::test]
async fn json_array_metatable_is_hidden() {
    let host = FakeHost::new();
    let vm = vm(&host, &returning("return getmetatable(json.array())"));
    // `__metatable` makes getmetatable return the marker name, not the table.
    assert_eq!(body(&vm).await, "json.array");
}

#[test]
fn binary_chunks_are_refused() {
    let host = FakeHost::new();
    let error = Vm::new(
        APP,
        &scripts(&[("bin.lua", "\x1bLua\x54\x00")]),
        host,
        SandboxLimits::default(),
    )
    .expect_err("binary chunk must not load");
    assert!(error.message.contains("binary"), "{error}");
    assert!(picloud_lua_sdk::check_syntax("bin.lua", "\x1bLua\x54\x00").is_err());
}

#[tokio::test]
async fn the_original_pcall_is_unreachable() {
    // Scripts can replace globals in their own VM, but never get back the
    // unwrapped functions: a later kill still unwinds.
    expect_timeout(
        r#"local p = pcall
           _G.pcall = nil
           while true do p(function() while true do end end) end"#,
    )
    .await;
}

// ---- the node keeps serving ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_are_served_while_a_hostile_script_spins() {
    let host = FakeHost::new();
    let limits = SandboxLimits {
        instructions_max: u64::MAX,
        memory_bytes_max: 4 * 1024 * 1024,
        timeout: Duration::from_secs(3),
    };
    let hostile = Arc::new(hostile_vm(
        &host,
        "while true do pcall(function() while true do end end) end",
        limits,
    ));
    let spinning = tokio::spawn({
        let hostile = hostile.clone();
        async move { hostile.invoke("main.lua", get("/")).await }
    });
    let normal = vm(
        &host,
        &returning("local n = 0 for i = 1, 1000 do n = n + i end return tostring(n)"),
    );
    for _ in 0..200 {
        assert_eq!(body(&normal).await, "500500");
    }
    // 200 requests were answered while the hostile invocation was still running.
    assert!(
        !spinning.is_finished(),
        "the hostile script should still be spinning"
    );
    match spinning.await.expect("task") {
        Err(InvokeError::Timeout { message }) => {
            assert!(message.contains("wall-clock"), "{message}")
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn wrapped_functions_report_argument_errors_like_the_originals() {
    let cases = [
        (
            "coroutine.resume(nil)",
            "main.lua:2: bad argument #1 to 'resume' (thread expected, got nil)",
        ),
        (
            "coroutine.close(1)",
            "main.lua:2: bad argument #1 to 'close' (thread expected, got number)",
        ),
        (
            "coroutine.wrap('x')",
            "main.lua:2: bad argument #1 to 'wrap' (function expected, got string)",
        ),
        (
            "xpcall(print, 1)",
            "main.lua:2: bad argument #2 to 'xpcall' (function expected, got number)",
        ),
        (
            "pcall()",
            "main.lua:2: bad argument #1 to 'pcall' (value expected)",
        ),
    ];
    let host = FakeHost::new();
    for (code, expected) in cases {
        let vm = vm(
            &host,
            &format!("return function(req)\n  {code}\n  return 'no'\nend"),
        );
        match call(&vm).await {
            Err(InvokeError::Script { message }) => assert_eq!(message, expected, "{code}"),
            other => panic!("{code}: expected a script error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn wrapped_functions_keep_their_normal_behaviour() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"
            local out = {}
            out[#out + 1] = select('#', pcall(function() return 1, 2, 3 end))          -- 4
            out[#out + 1] = select(2, pcall(error, "e", 0))                            -- e
            out[#out + 1] = select(2, xpcall(error, function(m) return "h:" .. m end, "x", 0)) -- h:x
            local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
            out[#out + 1] = gen() + gen() + gen()                                      -- 6
            local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
            local _, first = coroutine.resume(co, 1)
            local _, second = coroutine.resume(co, 10)
            out[#out + 1] = first .. "," .. second .. "," .. coroutine.status(co)      -- 2,20,dead
            local ok, err = pcall(coroutine.wrap(function() error("w", 0) end))
            out[#out + 1] = tostring(ok) .. ":" .. err                                 -- false:w
            return table.concat(out, " ")"#,
        ),
    );
    assert_eq!(body(&vm).await, "4 e h:x 6 2,20,dead false:w");
}

#[tokio::test]
async fn table_move_over_a_huge_range_is_refused() {
    // Without the bound this loops 2^50 times in C, out of the hook's reach.
    expect_script_error(
        "table.move({}, 1, 2^50, 1, {}) return 'no'",
        "table.move: more than",
    )
    .await;
    expect_script_error(
        "table.move({}, math.mininteger, math.maxinteger, 1, {}) return 'no'",
        "table.move: more than",
    )
    .await;
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning("return table.concat(table.move({1, 2, 3}, 1, 3, 2, {0}), ',')"),
    );
    assert_eq!(body(&vm).await, "0,1,2,3");
}

/// A long-running handler gives its worker thread back to the runtime now and
/// then, so other tasks on the same thread are not stuck behind it.
#[tokio::test(flavor = "current_thread")]
async fn a_long_handler_yields_to_other_tasks() {
    let host = FakeHost::new();
    let limits = SandboxLimits {
        instructions_max: 50_000_000,
        ..tight()
    };
    let vm = vm_with(
        &host,
        "return function() local n = 0 for i = 1, 3000000 do n = n + i end return tostring(n) end",
        limits,
    );
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = ticks.clone();
    // On a current-thread runtime this task only runs when the handler yields.
    let ticker = tokio::spawn(async move {
        loop {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    });
    let answer = body(&vm).await;
    ticker.abort();
    assert_eq!(answer, "4500001500000");
    let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        ticks >= 5,
        "the ticker ran only {ticks} times while the handler ran"
    );
}

/// Cooperative yields never leak into a script's own coroutines: a long loop
/// inside a coroutine still hands its resumer exactly what it yielded.
#[tokio::test]
async fn cooperative_yields_do_not_change_coroutine_results() {
    let host = FakeHost::new();
    let limits = SandboxLimits {
        instructions_max: 50_000_000,
        ..tight()
    };
    let vm = vm_with(
        &host,
        "return function()
           local co = coroutine.wrap(function()
             local n = 0
             for i = 1, 2000000 do n = n + 1 end
             coroutine.yield(n)
             return 'done'
           end)
           return tostring(co()) .. ' ' .. tostring(co())
         end",
        limits,
    );
    assert_eq!(body(&vm).await, "2000000 done");
}

/// `string.rep("", n)` would loop n times in C (where no hook runs) producing
/// nothing; the sandbox answers it at once, for every way of calling it.
#[tokio::test]
async fn empty_string_rep_does_not_spin() {
    let host = FakeHost::new();
    let vm = vm_with(
        &host,
        "return function()
           local a = string.rep('', math.maxinteger)
           local b = (''):rep(math.maxinteger, '')
           local c = string.rep('ab', 3, '-')
           return #a .. ' ' .. #b .. ' ' .. c
         end",
        tight(),
    );
    assert_eq!(body(&vm).await, "0 0 ab-ab-ab");
}
