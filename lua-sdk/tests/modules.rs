//! `require`: modules load once per VM, may call yielding services at their
//! top level, report cycles by name, and nothing outside the module set loads.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use picloud_lua_sdk::{InvokeError, ModuleSet, ModuleSource, SandboxLimits, Vm};
use serde_json::json;

fn modules(list: &[(&str, &str)]) -> Arc<ModuleSet> {
    let sources: Vec<ModuleSource> = list
        .iter()
        .map(|(name, source)| ModuleSource {
            name: name.to_string(),
            file: format!("modules/{}.lua", name.replace('.', "/")),
            source: source.to_string(),
        })
        .collect();
    Arc::new(ModuleSet::compile("modules", BTreeMap::new(), &sources).expect("modules compile"))
}

fn vm_with_modules(host: &Arc<FakeHost>, main: &str, list: &[(&str, &str)]) -> Vm {
    Vm::with_modules(
        APP,
        &scripts(&[("main.lua", main)]),
        modules(list),
        host.clone(),
        SandboxLimits::default(),
    )
    .unwrap_or_else(|error| panic!("does not load: {error}"))
}

async fn script_error(vm: &Vm) -> String {
    match call(vm).await {
        Err(InvokeError::Script { message }) => message,
        other => panic!("expected a script error, got {other:?}"),
    }
}

#[tokio::test]
async fn nested_modules_load_once_per_vm() {
    let host = FakeHost::new();
    let vm = vm_with_modules(
        &host,
        &returning(
            "local s = require('util.strings')\nlocal again = require('util.strings')\nreturn {json={shout=s.shout('hi'), same=(s == again), loads=LOADS}}",
        ),
        &[
            (
                "util.strings",
                "LOADS = (LOADS or 0) + 1\nlocal base = require('util.base')\nreturn {shout = function(x) return base.upper(x) .. '!' end}",
            ),
            ("util.base", "return {upper = string.upper}"),
        ],
    );
    for _ in 0..2 {
        let body: serde_json::Value = serde_json::from_str(&body(&vm).await).expect("json");
        assert_eq!(body, json!({"shout": "HI!", "same": true, "loads": 1}));
    }
}

#[tokio::test]
async fn a_module_top_level_may_call_yielding_services() {
    let host = FakeHost::new();
    host.put(APP, "yield/config", json!({"greeting": "hello"}));
    let vm = vm_with_modules(
        &host,
        &returning("return require('config').greeting"),
        &[(
            "config",
            "local value = kv.get('yield/config')\nkv.incr('config_loads', 1)\nreturn value",
        )],
    );
    assert_eq!(body(&vm).await, "hello");
    assert_eq!(body(&vm).await, "hello");
    assert_eq!(host.get(APP, "config_loads"), Some(json!(1)));
}

#[tokio::test]
async fn cycles_are_named() {
    let host = FakeHost::new();
    let vm = vm_with_modules(
        &host,
        &returning("local n = 'a'\nreturn require(n)"),
        &[
            ("a", "local m = 'b'\nlocal v = require(m)\nreturn v"),
            ("b", "local m = 'c'\nlocal v = require(m)\nreturn v"),
            ("c", "local m = 'a'\nlocal v = require(m)\nreturn v"),
        ],
    );
    let message = script_error(&vm).await;
    assert!(
        message.contains("modules/c.lua:2: require cycle: a -> b -> c -> a"),
        "{message}"
    );
    // The failed load left no module half-loaded: the same error again,
    // not a cycle starting elsewhere.
    assert_eq!(script_error(&vm).await, message);
}

#[tokio::test]
async fn only_the_module_set_loads() {
    let host = FakeHost::new();
    let cases = [
        (
            "os",
            "module \"os\" not found: no modules/os.lua or modules/os/init.lua",
        ),
        ("../x", "invalid module name \"../x\""),
        ("a/b", "invalid module name"),
        ("@mathx", "library mathx is not pinned"),
        ("string", "module \"string\" not found"),
    ];
    for (name, expected) in cases {
        let vm = vm_with_modules(
            &host,
            &returning(&format!("local v = require({name:?})\nreturn v")),
            &[("a", "return 1")],
        );
        let message = script_error(&vm).await;
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            message.contains("main.lua:2: require: "),
            "{name}: {message}"
        );
    }
    let vm = vm_with_modules(&host, &returning("return require(42)"), &[]);
    assert!(
        script_error(&vm)
            .await
            .contains("string expected, got number")
    );
}

#[tokio::test]
async fn a_module_error_propagates_and_can_be_retried() {
    let host = FakeHost::new();
    let vm = vm_with_modules(
        &host,
        &returning(
            "local ok, err = pcall(require, 'flaky')\nif ok then return 'loaded' end\nreturn tostring(err)",
        ),
        &[(
            "flaky",
            "local n = kv.incr('tries', 1)\nif n < 2 then error('not yet') end\nreturn true",
        )],
    );
    assert!(body(&vm).await.contains("modules/flaky.lua:2: not yet"));
    assert_eq!(body(&vm).await, "loaded");
}

#[tokio::test]
async fn scripts_may_require_at_load_and_modules_cannot_escape() {
    let host = FakeHost::new();
    let vm = vm_with_modules(
        &host,
        "local m = require('m')\nreturn function() return tostring(m.io) .. ' ' .. tostring(m.load) end",
        &[("m", "return {io = io, load = load}")],
    );
    assert_eq!(body(&vm).await, "nil nil");
}

#[tokio::test]
async fn runaway_module_is_killed() {
    let host = FakeHost::new();
    let limits = SandboxLimits {
        instructions_max: 1_000_000,
        ..SandboxLimits::default()
    };
    let vm = Vm::with_modules(
        APP,
        &scripts(&[("main.lua", &returning("return require('spin')"))]),
        modules(&[("spin", "while true do end")]),
        host.clone(),
        limits,
    )
    .expect("loads");
    assert!(matches!(call(&vm).await, Err(InvokeError::Timeout { .. })));
    assert!(!vm.is_reusable());
}
