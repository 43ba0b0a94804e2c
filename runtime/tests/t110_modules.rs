//! Modules and shared libraries through the real binary: nested `require`,
//! a module's top level calling kv (a yield), load once per VM, cycles,
//! bad names, deploys rejected for a module's syntax error / a missing
//! literal module / a load-time cycle (the old version keeps serving),
//! redeploy replacing cached modules, and libraries published with the CLI,
//! pinned per app version, and a pin to a missing version rejected.

mod common;

use common::{Api, TestNode, install_crypto};
use serde_json::{Value, json};

const MANIFEST: &str = r#"
name = "mods"
# The test reads script errors' text from the responses.
[app]
expose_errors = true

[[route]]
method = "GET"
path = "/hello"
script = "hello.lua"

[[route]]
method = "GET"
path = "/counter"
script = "counter.lua"

[[route]]
method = "GET"
path = "/cycle"
script = "cycle.lua"

[[route]]
method = "GET"
path = "/require/:which"
script = "names.lua"
"#;

const HELLO: &str = "local s = require(\"util.strings\")\nreturn function(req) return {json={text=s.shout('hi'), version=s.VERSION}} end";
const UTIL_INIT: &str = "return {upper = string.upper}";
const STRINGS_V1: &str = "local base = require('util')\nreturn {\n  VERSION = 1,\n  shout = function(x) return base.upper(x) .. '!' end,\n}";
const STRINGS_V2: &str = "local base = require('util')\nreturn {\n  VERSION = 2,\n  shout = function(x) return base.upper(x) .. '?' end,\n}";
// Required inside the handler, so its top level runs during a request and
// its kv.incr (a replicated write) really suspends the script.
const COUNTER: &str = "return function(req)\n  local state = require('counter_state')\n  return {json={loads=state.loads}}\nend";
const COUNTER_STATE: &str = "local n = kv.incr('module_loads', 1)\nreturn {loads = n}";
// Computed names: only the run-time check can see this cycle.
const CYCLE: &str = "return function(req)\n  local name = 'cyc' .. '_a'\n  local m = require(name)\n  return m\nend";
const CYC_A: &str = "local next = 'cyc' .. '_b'\nlocal m = require(next)\nreturn m";
const CYC_B: &str = "local next = 'cyc' .. '_a'\nlocal m = require(next)\nreturn m";
const NAMES: &str = "local names = {os = 'os', up = '../x', slash = 'util/strings', unknown = 'nope.nothing', lib = '@mathx'}\nreturn function(req)\n  local ok, err = pcall(require, names[req.params.which])\n  return {json={ok=ok, err=tostring(err)}}\nend";

fn files<'a>(strings: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut files = vec![
        ("picloud.toml", MANIFEST),
        ("hello.lua", HELLO),
        ("counter.lua", COUNTER),
        ("cycle.lua", CYCLE),
        ("names.lua", NAMES),
        ("modules/util/init.lua", UTIL_INIT),
        ("modules/util/strings.lua", strings),
        ("modules/counter_state.lua", COUNTER_STATE),
        ("modules/cyc_a.lua", CYC_A),
        ("modules/cyc_b.lua", CYC_B),
    ];
    files.extend_from_slice(extra);
    files
}

async fn app_get(node: &TestNode, path: &str) -> (u16, Value) {
    Api {
        key: None,
        ..node.client()
    }
    .get(path)
    .await
}

/// Deploys `files` and expects a 400 `invalid_deploy` whose message holds `expected`.
async fn rejected(api: &Api, app: &str, files: &[(&str, &str)], code: &str, expected: &str) {
    let (status, body) = api.deploy(app, files).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(expected),
        "expected {expected:?} in {message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_load_fail_clearly_and_follow_redeploys() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let api = node.client();

    let (status, body) = api.deploy("mods", &files(STRINGS_V1, &[])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["imports"]["hello.lua"], json!(["util.strings"]));
    assert_eq!(body["imports"]["modules/util/strings.lua"], json!(["util"]));

    // Nested require: util.strings requires util (modules/util/init.lua).
    let (status, body) = app_get(&node, "/mods/hello").await;
    assert_eq!(
        (status, &body),
        (200, &json!({"text": "HI!", "version": 1}))
    );

    // A module's top level calls kv (a replicated write: the script
    // yields), once per VM: sequential requests reuse the same VM.
    for _ in 0..3 {
        let (status, body) = app_get(&node, "/mods/counter").await;
        assert_eq!((status, &body), (200, &json!({"loads": 1})));
    }
    let (_, stored) = api.get("/_/api/v1/apps/mods/kv/module_loads").await;
    assert_eq!(stored["value"], 1);

    // A cycle of computed names is caught when it happens, and named.
    let (status, body) = app_get(&node, "/mods/cycle").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "script_error");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("modules/cyc_b.lua:2: require cycle: cyc_a -> cyc_b -> cyc_a"),
        "{message}"
    );

    // Nothing outside the app's modules loads.
    for (which, expected) in [
        (
            "os",
            "module \"os\" not found: no modules/os.lua or modules/os/init.lua",
        ),
        ("up", "invalid module name \"../x\""),
        ("slash", "invalid module name \"util/strings\""),
        (
            "unknown",
            "no modules/nope/nothing.lua or modules/nope/nothing/init.lua",
        ),
        ("lib", "library mathx is not pinned in picloud.toml [libs]"),
    ] {
        let (status, body) = app_get(&node, &format!("/mods/require/{which}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ok"], false, "{which}: {body}");
        let err = body["err"].as_str().unwrap_or_default();
        assert!(err.contains(expected), "{which}: {err}");
    }

    // Deploys that break a module are rejected as a whole, with file:line.
    let broken = "local base = require('util')\nreturn {\n  VERSION = = 3,\n}";
    let missing = [(
        "extra.lua",
        "\nlocal m = require('missing.mod')\nreturn function() end",
    )];
    let cycle = [
        ("modules/loop/a.lua", "return require('loop.b')"),
        (
            "modules/loop/b.lua",
            "local a = require('loop.a')\nreturn a",
        ),
    ];
    let cases: [(Vec<(&str, &str)>, &str); 3] = [
        (files(broken, &[]), "modules/util/strings.lua:3:"),
        (
            files(STRINGS_V1, &missing),
            "extra.lua:2: require: module \"missing.mod\" not found",
        ),
        (
            files(STRINGS_V1, &cycle),
            "require cycle: loop.a -> loop.b -> loop.a",
        ),
    ];
    for (bad, expected) in cases {
        rejected(&api, "mods", &bad, "invalid_deploy", expected).await;
    }
    // The old version still serves, and no version was added.
    let (status, body) = app_get(&node, "/mods/hello").await;
    assert_eq!(
        (status, &body),
        (200, &json!({"text": "HI!", "version": 1}))
    );
    let (_, deploys) = api.get("/_/api/v1/apps/mods/deploys").await;
    assert_eq!(deploys["active_version"], 1, "{deploys}");
    assert_eq!(deploys["deploys"].as_array().map(Vec::len), Some(1));

    // A redeploy with a changed module replaces every VM's cached copy.
    let (status, body) = api.deploy("mods", &files(STRINGS_V2, &[])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app_get(&node, "/mods/hello").await;
    assert_eq!(
        (status, &body),
        (200, &json!({"text": "HI?", "version": 2}))
    );
    // The deploy list records the import graph of each version.
    let (_, deploys) = api.get("/_/api/v1/apps/mods/deploys").await;
    let versions = deploys["deploys"].as_array().cloned().unwrap_or_default();
    assert_eq!(versions.len(), 2, "{deploys}");
    for deploy in &versions {
        assert_eq!(
            deploy["imports"]["hello.lua"],
            json!(["util.strings"]),
            "{deploy}"
        );
    }
    let listed = node.cli(&["deploys", "mods"]).ok();
    assert!(listed.contains("hello.lua -> util.strings"), "{listed}");
    // A rollback brings the old module back too.
    let (status, _) = api
        .post_json("/_/api/v1/apps/mods/rollback", &json!({}))
        .await;
    assert_eq!(status, 200);
    let (_, body) = app_get(&node, "/mods/hello").await;
    assert_eq!(body, json!({"text": "HI!", "version": 1}));
}

/// Writes `files` (relative path, text) under `dir`, making folders.
fn write_files(dir: &std::path::Path, files: &[(&str, String)]) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("folder");
        std::fs::write(&path, text).expect("write file");
    }
}

fn write_lib(dir: &std::path::Path, version: u32) {
    write_files(
        dir,
        &[
            (
                "init.lua",
                format!(
                    "local area = require('@mathx.geometry.area')\nreturn {{version = {version}, square = area.square}}"
                ),
            ),
            (
                "geometry/area.lua",
                format!("return {{square = function(x) return x * x * {version} end}}"),
            ),
            ("README.md", "not Lua: not published".to_string()),
        ],
    );
}

fn write_app(dir: &std::path::Path, pin: &str) {
    write_files(
        dir,
        &[
            ("picloud.toml", format!("name = \"libuser\"\n{pin}\n[[route]]\nmethod = \"GET\"\npath = \"/\"\nscript = \"main.lua\"\n")),
            ("main.lua", "local mathx = require('@mathx')\nreturn function(req) return {json={version=mathx.version, nine=mathx.square(3)}} end".to_string()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_libraries_are_versioned_and_pinned() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let lib_dir = dir.path().join("mathx");
    let lib_path = lib_dir.to_str().expect("utf-8 path");

    write_lib(&lib_dir, 1);
    let out = node.cli(&["libs", "publish", "mathx", lib_path]).ok();
    assert!(
        out.contains("published library mathx version 1 (2 files)"),
        "{out}"
    );
    write_lib(&lib_dir, 2);
    let out = node.cli(&["libs", "publish", "mathx", lib_path]).ok();
    assert!(out.contains("version 2"), "{out}");
    let listed = node.cli(&["libs", "list"]).ok();
    assert!(
        listed.contains("mathx\tv1") && listed.contains("mathx\tv2"),
        "{listed}"
    );

    // A library that does not compile is refused, with file:line.
    std::fs::write(lib_dir.join("geometry/area.lua"), "return {\n  = }").expect("broken");
    let failed = node.cli(&["libs", "publish", "mathx", lib_path]);
    assert!(!failed.success);
    assert!(
        failed.stderr.contains("@mathx/geometry/area.lua:2:"),
        "{}",
        failed.stderr
    );
    // Bad names are refused by the API with a stable code.
    let (status, body) = node
        .client()
        .post_json(
            "/_/api/v1/libs/Bad..Name",
            &json!({"files": {"init.lua": "return 1"}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_lib_name"))
    );

    // An app pinned to v1 sees v1; redeployed pinned to v2, it sees v2.
    let app_dir = dir.path().join("libuser");
    let app_path = app_dir.to_str().expect("utf-8 path");
    write_app(&app_dir, "[libs]\nmathx = 1");
    node.cli(&["deploy", app_path]).ok();
    let (status, body) = app_get(&node, "/libuser/").await;
    assert_eq!((status, &body), (200, &json!({"version": 1, "nine": 9})));

    write_app(&app_dir, "[libs]\nmathx = 2");
    node.cli(&["deploy", app_path]).ok();
    let (status, body) = app_get(&node, "/libuser/").await;
    assert_eq!((status, &body), (200, &json!({"version": 2, "nine": 18})));
    let listed = node.cli(&["deploys", "libuser"]).ok();
    assert!(
        listed.contains("lib @mathx v2") && listed.contains("main.lua -> @mathx"),
        "{listed}"
    );

    // A pin to a version that does not exist is rejected; v2 keeps serving.
    write_app(&app_dir, "[libs]\nmathx = 7");
    let failed = node.cli(&["deploy", app_path]);
    assert!(!failed.success);
    assert!(
        failed
            .stderr
            .contains("library mathx has no version 7 (versions kept: 1, 2)"),
        "{}",
        failed.stderr
    );
    let (status, body) = node
        .client()
        .deploy(
            "libuser",
            &[("picloud.toml", "name = \"libuser\"\n[libs]\nnever = 1\n")],
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("lib_not_found")),
        "{body}"
    );
    // Requiring a library the app did not pin is a deploy error.
    write_app(&app_dir, "");
    let failed = node.cli(&["deploy", app_path]);
    assert!(!failed.success);
    assert!(
        failed.stderr.contains(
            "main.lua:1: require: module \"@mathx\" not found: library mathx is not pinned"
        ),
        "{}",
        failed.stderr
    );
    let (_, body) = app_get(&node, "/libuser/").await;
    assert_eq!(body, json!({"version": 2, "nine": 18}));

    // Rolling back to the v1-pinned version brings v1 back exactly.
    let out = node.cli(&["rollback", "libuser"]).ok();
    assert!(out.contains("version 1"), "{out}");
    let (_, body) = app_get(&node, "/libuser/").await;
    assert_eq!(body, json!({"version": 1, "nine": 9}));
}
