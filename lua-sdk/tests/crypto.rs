//! `crypto`, `base64` and `hex` as scripts see them: results against known
//! vectors, `invalid_encoding` for bad input, argument errors, and the work
//! charged to the budget and bounded by the memory cap.

mod common;

use std::time::Duration;

use common::*;
use picloud_lua_sdk::{Code, InvokeError, SandboxLimits};

/// Runs `body` as a handler and returns its string result.
async fn run(body: &str) -> String {
    let host = FakeHost::new();
    let vm = vm(&host, &returning(body));
    self::body(&vm).await
}

#[tokio::test]
async fn hashes_match_known_vectors_in_hex_and_raw() {
    assert_eq!(
        run("return crypto.sha256('abc')").await,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        run("return crypto.hmac_sha256('Jefe', 'what do ya want for nothing?')").await,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        run(
            "return tostring(#crypto.sha256('abc', {raw = true})) .. ' ' .. \
             hex.encode(crypto.hmac_sha256('Jefe', 'what do ya want for nothing?', {raw = true}))"
        )
        .await,
        "32 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[tokio::test]
async fn encodings_round_trip_in_both_alphabets() {
    let cases = [
        ("return base64.encode('\\251\\255\\254hi')", "+//+aGk="),
        (
            "return base64.encode('\\251\\255\\254hi', {url = true})",
            "-__-aGk",
        ),
        (
            "return base64.decode('aGk=') .. base64.decode('aGk')",
            "hihi",
        ),
        (
            "return hex.encode(base64.decode('-__-aGk', {url = true}))",
            "fbfffe6869",
        ),
        ("return hex.encode('\\0\\255')", "00ff"),
        ("return hex.decode('4869') .. hex.decode('6A')", "Hij"),
        ("return base64.encode('')", ""),
    ];
    for (script, expected) in cases {
        assert_eq!(run(script).await, expected, "{script}");
    }
}

#[tokio::test]
async fn bad_encodings_raise_invalid_encoding_that_scripts_can_catch() {
    let cases = [
        ("base64.decode('a$b=')", "base64.decode"),
        ("base64.decode('+/+/', {url = true})", "not URL-safe base64"),
        ("hex.decode('abc')", "odd number of hex digits"),
        ("hex.decode('zz')", "not a hex digit"),
    ];
    for (call, expected) in cases {
        let caught = run(&format!(
            "local ok, err = pcall(function() return {call} end) return tostring(ok) .. ' ' .. err"
        ))
        .await;
        assert!(
            caught.starts_with("false invalid_encoding: main.lua:2: ") && caught.contains(expected),
            "{call}: {caught}"
        );
        // Uncaught, the invocation fails with the code.
        let host = FakeHost::new();
        let vm = vm(&host, &returning(&format!("return {call}")));
        let error = call_vm(&vm).await.expect_err(call);
        assert_eq!(error.code(), Code::InvalidEncoding, "{call}: {error:?}");
    }
}

async fn call_vm(vm: &picloud_lua_sdk::Vm) -> Result<picloud_lua_sdk::Response, InvokeError> {
    call(vm).await
}

#[tokio::test]
async fn random_bytes_and_uuids_have_the_promised_shape() {
    let out = run(
        "
        local a, b = crypto.random_bytes(32), crypto.random_bytes(32)
        local v4, v7a, v7b = crypto.uuid(), crypto.uuid{version = 7}, crypto.uuid{version = 7}
        return table.concat({#a, tostring(a ~= b), #crypto.random_bytes(1024), v4, v7a, v7b}, ' ')",
    )
    .await;
    let parts: Vec<&str> = out.split(' ').collect();
    assert_eq!(&parts[..3], ["32", "true", "1024"], "{out}");
    let shape = |id: &str, version: char| {
        id.len() == 36
            && id.chars().nth(14) == Some(version)
            && matches!(id.chars().nth(19), Some('8' | '9' | 'a' | 'b'))
            && id.chars().enumerate().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
                }
            })
    };
    assert!(shape(parts[3], '4'), "{out}");
    assert!(shape(parts[4], '7') && shape(parts[5], '7'), "{out}");
    // Made one after the other, v7 ids sort in that order.
    assert!(parts[4] < parts[5], "{out}");
}

#[tokio::test]
async fn equal_compares_contents() {
    assert_eq!(
        run("return tostring(crypto.equal('abc', 'abc')) .. tostring(crypto.equal('abc', 'abd')) .. tostring(crypto.equal('abc', 'ab'))").await,
        "truefalsefalse"
    );
}

#[tokio::test]
async fn bad_arguments_are_script_errors_naming_the_function() {
    let cases = [
        (
            "crypto.sha256(42)",
            "crypto.sha256: input must be a string, got integer",
        ),
        (
            "crypto.sha256('x', {raw = 1})",
            "option raw must be a boolean",
        ),
        (
            "crypto.hmac_sha256(nil, 'x')",
            "crypto.hmac_sha256: key must be a string",
        ),
        (
            "crypto.random_bytes(0)",
            "n must be an integer from 1 to 1024, got 0",
        ),
        ("crypto.random_bytes(1025)", "got 1025"),
        ("crypto.random_bytes(1.5)", "got 1.5"),
        ("crypto.uuid{version = 1}", "version must be 4 or 7, got 1"),
        ("crypto.uuid('v7')", "options must be a table"),
        (
            "crypto.equal('a')",
            "crypto.equal: b must be a string, got nil",
        ),
        (
            "base64.encode({})",
            "base64.encode: input must be a string, got table",
        ),
    ];
    for (call, expected) in cases {
        let host = FakeHost::new();
        let vm = vm(&host, &returning(&format!("return {call}")));
        match call_vm(&vm).await {
            Err(InvokeError::Script { message }) => {
                assert!(message.contains(expected), "{call}: {message}");
                assert!(message.contains("main.lua:2:"), "{call}: {message}");
            }
            other => panic!("{call}: expected a script error, got {other:?}"),
        }
    }
}

/// Hashing `rounds` MiB must cost instructions in proportion: a budget of
/// 5 M instructions allows 2 MiB of hashing and stops 20 (the loop itself
/// runs a few hundred instructions, so without the charge both would pass).
#[tokio::test]
async fn hashing_and_encoding_are_charged_to_the_budget() {
    let limits = SandboxLimits {
        instructions_max: 5_000_000,
        memory_bytes_max: 16 * 1024 * 1024,
        timeout: Duration::from_secs(30),
    };
    for (rounds, work, passes) in [
        (2, "crypto.sha256(s)", true),
        (20, "crypto.sha256(s)", false),
        (20, "pcall(crypto.hmac_sha256, 'k', s)", false),
        (20, "base64.encode(s)", true),
        (200, "pcall(base64.encode, s)", false),
        (200, "pcall(hex.decode, s)", false),
    ] {
        let host = FakeHost::new();
        let script = returning(&format!(
            "local s = string.rep('a', 1024 * 1024)
             for _ = 1, {rounds} do {work} end
             return 'done'"
        ));
        let vm = vm_with(&host, &script, limits);
        match call_vm(&vm).await {
            Ok(_) => assert!(passes, "{rounds} x {work} passed"),
            Err(error) => {
                assert!(!passes, "{rounds} x {work}: {error:?}");
                assert_eq!(error.code(), Code::ScriptTimeout, "{work}: {error:?}");
            }
        }
    }
}

/// An output the VM could not hold is a memory kill before Rust builds it,
/// and `pcall` cannot keep the script going past it.
#[tokio::test]
async fn outputs_past_the_memory_cap_are_memory_kills() {
    let limits = SandboxLimits {
        instructions_max: u64::MAX,
        memory_bytes_max: 4 * 1024 * 1024,
        timeout: Duration::from_secs(30),
    };
    let host = FakeHost::new();
    let script = returning(
        "local s = string.rep('a', 3 * 1024 * 1024)
         pcall(hex.encode, s)
         return 'survived'",
    );
    let vm = vm_with(&host, &script, limits);
    let error = call_vm(&vm).await.expect_err("memory");
    assert_eq!(error.code(), Code::ScriptMemory, "{error:?}");
}
