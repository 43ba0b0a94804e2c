//! The hostile catalogue (`tests/hostile.toml`): every case ends the way it
//! says (`script_timeout`, `script_memory`, `script_error`, `value_too_large`
//! or `ok`) within its wall-clock timeout + [`DEADLINE_SLACK`], and the VM's
//! next invocation (or a fresh VM) still serves a normal request.

mod common;

use std::time::{Duration, Instant};

use common::*;
use picloud_lua_sdk::{InvokeError, SandboxLimits, ScriptSource, Vm};
use serde::Deserialize;

/// How far past its timeout an invocation may end (issue 10: "timeout + 100 ms").
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// Tries of a case before a missed deadline fails it: the test machine is
/// shared, and a descheduled thread misses a wall-clock deadline through no
/// fault of the sandbox. A systematic overrun fails every try.
const DEADLINE_TRIES: usize = 3;

/// The timeout of a case that names none.
const TIMEOUT_MS_DEFAULT: u64 = 300;

#[derive(Debug, Deserialize)]
struct Catalogue {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    script: String,
    expect: String,
    message: Option<String>,
    timeout_ms: Option<u64>,
}

fn catalogue() -> Catalogue {
    let text = include_str!("hostile.toml");
    match toml::from_str(text) {
        Ok(catalogue) => catalogue,
        Err(error) => panic!("hostile.toml: {error}"),
    }
}

fn outcome(result: &Result<picloud_lua_sdk::Response, InvokeError>) -> (String, String) {
    match result {
        Ok(_) => ("ok".to_string(), String::new()),
        Err(error) => (error.code().to_string(), error.to_string()),
    }
}

async fn run_case(case: &Case) -> Result<Duration, String> {
    let timeout = Duration::from_millis(case.timeout_ms.unwrap_or(TIMEOUT_MS_DEFAULT));
    let limits = SandboxLimits {
        timeout,
        ..SandboxLimits::default()
    };
    let host = FakeHost::new();
    let list = vec![
        ScriptSource {
            name: "main.lua".to_string(),
            source: returning(&case.script),
        },
        ScriptSource {
            name: "ok.lua".to_string(),
            source: "return function() return 'still alive' end".to_string(),
        },
    ];
    let vm = Vm::new(APP, &list, host.clone(), limits)
        .map_err(|error| format!("{}: does not load: {error}", case.name))?;
    let started = Instant::now();
    let result = call(&vm).await;
    let elapsed = started.elapsed();
    let (code, message) = outcome(&result);
    if code != case.expect {
        return Err(format!(
            "{}: expected {}, got {code} ({message}) after {elapsed:?}",
            case.name, case.expect
        ));
    }
    // The prelude's chunk is named `sandbox`: its lines mean nothing to the
    // script's author, and must be replaced by the script's own or dropped.
    if message.contains("sandbox:") {
        return Err(format!("{}: {message:?} names the prelude", case.name));
    }
    if let Some(expected) = &case.message
        && !message.contains(expected.as_str())
    {
        return Err(format!("{}: {message:?} lacks {expected:?}", case.name));
    }
    if elapsed > timeout + DEADLINE_SLACK {
        return Err(format!(
            "{}: took {elapsed:?}, more than {timeout:?} + {DEADLINE_SLACK:?}",
            case.name
        ));
    }
    let again = vm
        .invoke("ok.lua", get("/"))
        .await
        .map_err(|error| format!("{}: the VM no longer serves: {error}", case.name))?;
    if again.body != b"still alive" {
        return Err(format!("{}: the VM answers {:?}", case.name, again.body));
    }
    Ok(elapsed)
}

#[tokio::test]
async fn every_hostile_case_ends_as_expected_within_its_deadline() {
    let catalogue = catalogue();
    let only = std::env::var("HOSTILE_CASE").ok();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for case in &catalogue.case {
        if only.as_deref().is_some_and(|name| name != case.name) {
            continue;
        }
        let mut result = run_case(case).await;
        for _ in 1..DEADLINE_TRIES {
            match &result {
                Err(failure) if failure.contains(" more than ") => result = run_case(case).await,
                _ => break,
            }
        }
        match result {
            Ok(elapsed) => {
                eprintln!("{:<52} {elapsed:>10.1?}", case.name);
                if elapsed > slowest.0 && case.timeout_ms.is_none() {
                    slowest = (elapsed, case.name.clone());
                }
            }
            Err(failure) => failures.push(failure),
        }
    }
    eprintln!("slowest case at the default timeout: {slowest:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn case_names_are_unique_and_expectations_known() {
    let catalogue = catalogue();
    let mut names = std::collections::BTreeSet::new();
    for case in &catalogue.case {
        assert!(names.insert(case.name.as_str()), "duplicate {}", case.name);
        assert!(
            [
                "script_timeout",
                "script_memory",
                "script_error",
                "value_too_large",
                "ok"
            ]
            .contains(&case.expect.as_str()),
            "{}: unknown expectation {}",
            case.name,
            case.expect
        );
    }
    assert!(catalogue.case.len() >= 50);
}
