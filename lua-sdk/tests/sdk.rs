//! The script-facing SDK: kv, log, json, time, request/response conversion,
//! loading and `check_syntax`. Driven through `Vm` with an in-memory host.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use picloud_lua_sdk::{
    Code, CompileError, Consistency, HostError, InvokeError, LogLevel, OutboundResponse, Request,
    SandboxLimits, Vm, check_syntax,
};
use serde_json::json;

fn assert_send<T: Send>(_: &T) {}
fn assert_send_sync<T: Send + Sync>() {}

#[tokio::test]
async fn vm_and_invoke_future_are_send() {
    assert_send_sync::<Vm>();
    let host = FakeHost::new();
    let vm = vm(&host, "return function() return 'ok' end");
    let future = vm.invoke("main.lua", get("/"));
    assert_send(&future);
    assert!(future.await.is_ok());
}

#[tokio::test]
async fn string_return_is_200_text() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        "return function(req) return 'hello ' .. req.method end",
    );
    let response = call(&vm).await.expect("invoke");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers,
        vec![(
            "content-type".to_string(),
            "text/plain; charset=utf-8".to_string()
        )]
    );
    assert_eq!(response.body, b"hello GET");
}

#[tokio::test]
async fn table_return_with_status_headers_body() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"return { status = 201, headers = { ["X-Id"] = 7, ["set-cookie"] = {"a=1", "b=2"} }, body = "made" }"#,
        ),
    );
    let response = call(&vm).await.expect("invoke");
    assert_eq!(response.status, 201);
    assert_eq!(
        response.headers,
        vec![
            ("set-cookie".to_string(), "a=1".to_string()),
            ("set-cookie".to_string(), "b=2".to_string()),
            ("x-id".to_string(), "7".to_string()),
        ]
    );
    assert_eq!(response.body, b"made");
}

#[tokio::test]
async fn json_response_is_encoded_with_content_type() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(r#"return { json = { ok = true, items = {1, 2} } }"#),
    );
    let response = call(&vm).await.expect("invoke");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers,
        vec![("content-type".to_string(), "application/json".to_string())]
    );
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json body");
    assert_eq!(parsed, json!({"ok": true, "items": [1, 2]}));
}

#[tokio::test]
async fn empty_table_return_is_empty_200() {
    let host = FakeHost::new();
    let vm = vm(&host, &returning("return {}"));
    let response = call(&vm).await.expect("invoke");
    assert_eq!(
        (response.status, response.body.len(), response.headers.len()),
        (200, 0, 0)
    );
}

#[tokio::test]
async fn bad_return_values_are_invalid_responses() {
    let cases = [
        ("return nil", "got nil"),
        ("return 42", "got integer"),
        ("return { status = 700 }", "from 100 to 599, got 700"),
        ("return { status = 'ok' }", "from 100 to 599, got string"),
        ("return { body = {1} }", "use json= to send a table"),
        ("return { body = 'x', json = {} }", "both body and json"),
        (
            "return { headers = { ['bad name'] = 'x' } }",
            "not a valid HTTP header name",
        ),
        (
            "return { headers = { x = 'a\\r\\nb: c' } }",
            "control character",
        ),
        (
            "return { json = { f = print } }",
            "cannot encode a function",
        ),
        (
            "return { headers = { ['content-length'] = '0' }, body = 'x' }",
            "content-length is set by the server",
        ),
    ];
    let host = FakeHost::new();
    for (body, expected) in cases {
        let vm = vm(&host, &returning(body));
        match call(&vm).await {
            Err(InvokeError::InvalidResponse { message }) => {
                assert!(
                    message.contains(expected),
                    "{body}: message {message:?} lacks {expected:?}"
                );
                assert!(message.starts_with("main.lua: "), "{message}");
            }
            other => panic!("{body}: expected an invalid response, got {other:?}"),
        }
        assert!(
            vm.is_reusable(),
            "a bad return value must not retire the VM"
        );
    }
}

#[tokio::test]
async fn request_fields_reach_the_handler() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"return { json = { method = req.method, path = req.path, id = req.params.id,
                 q = req.query.q, agent = req.headers["user-agent"], body = req.body,
                 name = req.json and req.json.name } }"#,
        ),
    );
    let request = Request {
        method: "POST".to_string(),
        path: "/users/7".to_string(),
        params: BTreeMap::from([("id".to_string(), "7".to_string())]),
        query: BTreeMap::from([("q".to_string(), "x y".to_string())]),
        headers: BTreeMap::from([
            ("user-agent".to_string(), "t".to_string()),
            (
                "content-type".to_string(),
                "application/json; charset=utf-8".to_string(),
            ),
        ]),
        body: br#"{"name":"ann"}"#.to_vec(),
    };
    let response = vm.invoke("main.lua", request).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(
        parsed,
        json!({"method": "POST", "path": "/users/7", "id": "7", "q": "x y", "agent": "t",
               "body": "{\"name\":\"ann\"}", "name": "ann"})
    );
}

#[tokio::test]
async fn request_json_is_decoded_only_when_it_should_be() {
    // (content-type, body, expected req.json type): decoded whenever the
    // body parses, whatever the content type. A JSON content type with a
    // body that does not parse is refused by the gateway (400
    // `invalid_json`); should one reach a VM, req.json is nil.
    let cases: [(Option<&str>, &[u8], &str); 7] = [
        (Some("application/json"), br#"{"a":1}"#, "table"),
        (Some("application/vnd.api+json"), b"[1]", "table"),
        (None, br#"{"a":1}"#, "table"),
        (None, b"not json", "nil"),
        (Some("text/plain"), br#"{"a":1}"#, "table"),
        (Some("text/plain"), b"", "nil"),
        (Some("application/json"), b"{broken", "nil"),
    ];
    let host = FakeHost::new();
    let vm = vm(&host, "return function(req) return type(req.json) end");
    for (content_type, body, expected) in cases {
        let mut request = get("/");
        request.body = body.to_vec();
        if let Some(content_type) = content_type {
            request
                .headers
                .insert("content-type".to_string(), content_type.to_string());
        }
        let response = vm.invoke("main.lua", request).await.expect("invoke");
        assert_eq!(
            String::from_utf8_lossy(&response.body),
            expected,
            "{content_type:?} {body:?}"
        );
    }
}

#[tokio::test]
async fn binary_body_is_passed_through_unchanged() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        "return function(req) return { body = req.body .. '\\0' } end",
    );
    let mut request = get("/");
    request.body = vec![0xff, 0x00, 0x80];
    let response = vm.invoke("main.lua", request).await.expect("invoke");
    assert_eq!(response.body, vec![0xff, 0x00, 0x80, 0x00]);
}

#[tokio::test]
async fn kv_set_get_delete_round_trip() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"
            kv.set("user:1", { name = "ann", tags = {"a", "b"}, age = 30, score = 1.5, admin = false })
            local v = kv.get("user:1")
            local missing = kv.get("nope")
            local existed = kv.delete("user:1")
            local again = kv.delete("user:1")
            return { json = { v = v, missing = missing == nil, existed = existed, again = again,
                              after = kv.get("user:1") == nil } }"#,
        ),
    );
    let response = call(&vm).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(
        parsed,
        json!({"v": {"name": "ann", "tags": ["a", "b"], "age": 30, "score": 1.5, "admin": false},
               "missing": true, "existed": true, "again": false, "after": true})
    );
}

#[tokio::test]
async fn kv_values_are_stored_as_json_per_app() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(r#"kv.set("k", {1, 2, json.null}) kv.set("s", "text") return "ok""#),
    );
    body(&vm).await;
    assert_eq!(host.get(APP, "k"), Some(json!([1, 2, null])));
    assert_eq!(host.get(APP, "s"), Some(json!("text")));
}

#[tokio::test]
async fn kv_get_consistency_option() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"kv.get("a") kv.get("b", {consistency = "stale"}) kv.get("c", {consistency = "linearizable"}) return "ok""#,
        ),
    );
    body(&vm).await;
    let reads = host.reads.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(
        reads,
        vec![
            ("a".to_string(), Consistency::Linearizable),
            ("b".to_string(), Consistency::Stale),
            ("c".to_string(), Consistency::Linearizable),
        ]
    );
}

#[tokio::test]
async fn kv_set_ttl_option() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(r#"kv.set("t", 1, {ttl = 2.5}) return "ok""#),
    );
    body(&vm).await;
    let ttl = host
        .ttls
        .lock()
        .map(|t| t.get(&format!("{APP}/t")).copied())
        .unwrap_or_default();
    assert_eq!(ttl, Some(2.5));
}

#[tokio::test]
async fn kv_incr_defaults_to_one() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"local a = kv.incr("n") local b = kv.incr("n", 5) local c = kv.incr("n", -2.0) return { json = {a, b, c} }"#,
        ),
    );
    let response = call(&vm).await.expect("invoke");
    assert_eq!(response.body, b"[1,6,4]");
}

#[tokio::test]
async fn kv_cas_absent_present_and_delete() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"
            local r = {}
            r[1] = kv.cas("c", nil, "one")      -- absent: swaps
            r[2] = kv.cas("c", nil, "two")      -- present now: fails
            r[3] = kv.cas("c", "one", "two")    -- matches: swaps
            r[4] = kv.cas("c", "two", nil)      -- nil new: deletes
            r[5] = kv.get("c") == nil
            return { json = r }"#,
        ),
    );
    let response = call(&vm).await.expect("invoke");
    assert_eq!(response.body, b"[true,false,true,true,true]");
}

#[tokio::test]
async fn kv_list_pages_with_prefix_limit_and_cursor() {
    let host = FakeHost::new();
    for i in 0..5 {
        host.put(APP, &format!("item:{i}"), json!(i));
    }
    host.put(APP, "other", json!("x"));
    host.put("otherapp", "item:9", json!(9));
    let vm = vm(
        &host,
        &returning(
            r#"
            local keys = {}
            local page = kv.list({prefix = "item:", limit = 2})
            local pages = 0
            while true do
              pages = pages + 1
              for _, item in ipairs(page.items) do keys[#keys + 1] = item.key .. "=" .. item.value end
              if page.cursor == nil then break end
              page = kv.list({prefix = "item:", limit = 2, cursor = page.cursor})
            end
            local all = kv.list()
            return { json = { keys = keys, pages = pages, all = #all.items } }"#,
        ),
    );
    let response = call(&vm).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(
        parsed,
        json!({"keys": ["item:0=0", "item:1=1", "item:2=2", "item:3=3", "item:4=4"], "pages": 3, "all": 6})
    );
}

#[tokio::test]
async fn kv_atomic_runs_every_op_kind() {
    let host = FakeHost::new();
    host.put(APP, "gone", json!(1));
    host.put(APP, "ver", json!(3));
    let vm = vm(
        &host,
        &returning(
            r#"
            local r = kv.atomic({
              { op = "set", key = "a", value = { x = 1 }, ttl = 10 },
              { op = "delete", key = "gone" },
              { op = "incr", key = "n", by = 2 },
              { op = "cas", key = "ver", expected = 3, new = 4 },
            })
            return { json = r }"#,
        ),
    );
    let response = call(&vm).await.expect("invoke");
    assert_eq!(response.body, b"[true,true,2,true]");
    assert_eq!(host.get(APP, "a"), Some(json!({"x": 1})));
    assert_eq!(host.get(APP, "gone"), None);
    assert_eq!(host.get(APP, "ver"), Some(json!(4)));
}

#[tokio::test]
async fn kv_argument_errors_name_the_line_and_problem() {
    let cases = [
        ("kv.set('k', nil)", "kv.set: value is nil; use kv.delete"),
        ("kv.set('k', print)", "kv.set: cannot encode a function"),
        (
            "local t = {} t.self = t kv.set('k', t)",
            "kv.set: cannot encode a cyclic table",
        ),
        (
            "kv.set('k', coroutine.create(print))",
            "cannot encode a coroutine",
        ),
        ("kv.set('k', 0/0)", "NaN and infinity are not JSON"),
        ("kv.set('k', {[true] = 1})", "table key of type boolean"),
        ("kv.get('')", "kv.get: key must not be empty"),
        ("kv.get(5)", "kv.get: key must be a string, got integer"),
        (
            "kv.get('k', {consistency = 'weak'})",
            "consistency must be \"linearizable\" or \"stale\"",
        ),
        (
            "kv.set('k', 1, {ttl = -1})",
            "ttl must be a positive number",
        ),
        (
            "kv.incr('k', 1.5)",
            "kv.incr: by must be an integer, got 1.5",
        ),
        ("kv.list({limit = 0})", "kv.list: limit must be positive"),
        (
            "kv.atomic({ {op = 'nope', key = 'k'} })",
            "kv.atomic: op #1: op must be",
        ),
        (
            "kv.atomic({ {op = 'set', key = 'k'} })",
            "op #1: value is nil",
        ),
        ("kv.atomic('x')", "expected a list of ops"),
    ];
    let host = FakeHost::new();
    for (code, expected) in cases {
        let vm = vm(
            &host,
            &format!("return function(req)\n  {code}\n  return 'unreachable'\nend"),
        );
        match call(&vm).await {
            Err(InvokeError::Script { message }) => {
                assert!(
                    message.contains(expected),
                    "{code}: {message:?} lacks {expected:?}"
                );
                assert!(message.starts_with("main.lua:2: "), "{code}: {message:?}");
            }
            other => panic!("{code}: expected a script error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn uncaught_host_error_comes_back_as_the_original() {
    let host = FakeHost::new();
    let error = HostError::new(Code::NoLeader, "no leader elected yet");
    *host.fail_with.lock().expect("lock") = Some(error.clone());
    let vm = vm(&host, &returning("kv.get('k') return 'unreachable'"));
    match call(&vm).await {
        Err(InvokeError::Host(got)) => assert_eq!(got, error),
        other => panic!("expected a host error, got {other:?}"),
    }
    assert_eq!(InvokeError::Host(error).code().as_str(), "no_leader");
    assert!(vm.is_reusable());
}

#[tokio::test]
async fn secrets_get_returns_the_bytes_or_nil_and_checks_its_argument() {
    let host = FakeHost::new();
    host.secrets
        .lock()
        .expect("lock")
        .insert(format!("{APP}/TOKEN"), b"s3cr\0t".to_vec());
    let script = vm(
        &host,
        &returning(
            r#"local ok, err = pcall(secrets.get, 42)
               return { json = { token = secrets.get("TOKEN"), len = #secrets.get("TOKEN"),
                                 missing = secrets.get("NOPE") == nil, err = err } }"#,
        ),
    );
    let response = call(&script).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(parsed["token"], "s3cr\u{0}t");
    assert_eq!(parsed["len"], 6);
    assert_eq!(parsed["missing"], true);
    let err = parsed["err"].as_str().expect("error message");
    assert!(
        err.contains("secrets.get: name must be a string, got integer"),
        "{err}"
    );

    let mismatch = HostError::new(
        Code::SecretKeyMismatch,
        "sealed with key a, this node has b",
    );
    *host.fail_with.lock().expect("lock") = Some(mismatch.clone());
    let script = vm(&host, &returning("return secrets.get('TOKEN')"));
    match call(&script).await {
        Err(InvokeError::Host(got)) => assert_eq!(got, mismatch),
        other => panic!("expected the key mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn host_error_is_catchable_with_code_and_message() {
    let host = FakeHost::new();
    *host.fail_with.lock().expect("lock") = Some(HostError::new(Code::NotANumber, "n is text"));
    let vm = vm(
        &host,
        &returning(
            r#"local ok, err = pcall(kv.incr, "n")
               local ok2, err2 = xpcall(function() return kv.get("x") end, function(e) return "handled: " .. e end)
               return { json = { ok = ok, err = err, kind = type(err), ok2 = ok2, err2 = err2 } }"#,
        ),
    );
    let response = call(&vm).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(
        parsed,
        json!({"ok": false, "err": "not_a_number: n is text", "kind": "string",
               "ok2": false, "err2": "handled: not_a_number: n is text"})
    );
}

#[tokio::test]
async fn host_error_inside_a_coroutine_is_catchable_by_resume() {
    let host = FakeHost::new();
    *host.fail_with.lock().expect("lock") = Some(HostError::new(Code::Unavailable, "down"));
    // The fake host fails before the call would yield, so the error surfaces
    // through the coroutine like any other.
    let vm = vm(
        &host,
        &returning(
            r#"local co = coroutine.create(function() return kv.get("x") end)
               local ok, err = coroutine.resume(co)
               return tostring(ok) .. " " .. err"#,
        ),
    );
    assert_eq!(body(&vm).await, "false unavailable: down");
}

#[tokio::test]
async fn uncaught_lua_error_is_a_script_error_with_location() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        "return function(req)\n  local x = nil\n  return x.field\nend",
    );
    match call(&vm).await {
        Err(InvokeError::Script { message }) => {
            assert!(
                message.starts_with("main.lua:3: attempt to index"),
                "{message}"
            );
            assert!(!message.contains("stack traceback"), "{message}");
        }
        other => panic!("expected a script error, got {other:?}"),
    }
    // The VM stays usable after an ordinary error.
    assert!(vm.is_reusable());
    let ok = vm_with(
        &host,
        "return function() return 'fine' end",
        SandboxLimits::default(),
    );
    assert_eq!(body(&ok).await, "fine");
}

#[tokio::test]
async fn log_functions_and_print_reach_the_host() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"local t = setmetatable({}, { __tostring = function() return "T!" end })
               log.debug("d", 1, 2.5)
               log.info("i", nil, true, t)
               log.warn("w")
               log.error("e")
               print("p", 3)
               return "ok""#,
        ),
    );
    body(&vm).await;
    let logs = host.logs();
    let expected = [
        (LogLevel::Debug, "d\t1\t2.5"),
        (LogLevel::Info, "i\tnil\ttrue\tT!"),
        (LogLevel::Warn, "w"),
        (LogLevel::Error, "e"),
        (LogLevel::Info, "p\t3"),
    ];
    assert_eq!(logs.len(), expected.len(), "{logs:?}");
    for ((app, level, message), (want_level, want_message)) in logs.iter().zip(expected) {
        assert_eq!(
            (app.as_str(), *level, message.as_str()),
            (APP, want_level, want_message)
        );
    }
}

#[tokio::test]
async fn log_messages_are_truncated() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(r#"log.info(string.rep("x", 100000)) return "ok""#),
    );
    body(&vm).await;
    let logs = host.logs();
    assert_eq!(logs.len(), 1);
    assert!(logs[0].2.len() <= picloud_lua_sdk::LOG_MESSAGE_BYTES_MAX + 4);
    assert!(logs[0].2.ends_with('…'));
}

#[tokio::test]
async fn json_encode_rules() {
    let cases = [
        ("{}", "{}"),
        ("json.array()", "[]"),
        ("{1, 2, 3}", "[1,2,3]"),
        ("{a = 1}", r#"{"a":1}"#),
        ("{[1] = 'a', [3] = 'c'}", r#"{"1":"a","3":"c"}"#),
        ("{1, nil, 3}", r#"{"1":1,"3":3}"#),
        ("{json.null, 2}", "[null,2]"),
        ("json.null", "null"),
        ("'é\"\\n'", r#""é\"\n""#),
        ("1.5", "1.5"),
        ("7", "7"),
        (
            "{nested = {deeper = {true}}}",
            r#"{"nested":{"deeper":[true]}}"#,
        ),
    ];
    let host = FakeHost::new();
    for (lua, expected) in cases {
        let vm = vm(&host, &returning(&format!("return json.encode({lua})")));
        assert_eq!(body(&vm).await, expected, "json.encode({lua})");
    }
}

#[tokio::test]
async fn json_decode_rules_and_round_trip() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"
            local v = json.decode('{"a":[1,2,{"b":null}],"e":[],"o":{},"f":1.25,"s":"x"}')
            local checks = {
              v.a[1] == 1, #v.a == 3, v.a[3].b == json.null, math.type(v.a[1]) == "integer",
              v.f == 1.25, v.s == "x", next(v.e) == nil,
            }
            return { json = { checks = checks, again = json.encode(v.e), obj = json.encode(v.o) } }"#,
        ),
    );
    let response = call(&vm).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(
        parsed,
        json!({"checks": [true, true, true, true, true, true, true], "again": "[]", "obj": "{}"})
    );
}

#[tokio::test]
async fn json_errors() {
    let cases = [
        ("json.decode('{')", "json.decode: invalid JSON"),
        ("json.decode(5)", "json.decode: expected a string"),
        (
            "json.encode(function() end)",
            "json.encode: cannot encode a function",
        ),
        (
            "local t = {} for i = 1, 200 do t = {t} end json.encode(t)",
            "nested more than 128 levels",
        ),
    ];
    let host = FakeHost::new();
    for (code, expected) in cases {
        let vm = vm(&host, &returning(&format!("{code} return 'no'")));
        match call(&vm).await {
            Err(InvokeError::Script { message }) => {
                assert!(message.contains(expected), "{code}: {message:?}");
            }
            other => panic!("{code}: expected a script error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn time_comes_from_the_host_clock() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        &returning(
            r#"return { json = { now = time.now(), ms = time.now_ms(), int = math.type(time.now_ms()) } }"#,
        ),
    );
    let response = call(&vm).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(
        parsed,
        json!({"now": 1_700_000_000.123, "ms": 1_700_000_000_123_u64, "int": "integer"})
    );
}

#[tokio::test]
async fn check_syntax_reports_file_and_line() {
    assert_eq!(check_syntax("ok.lua", "return function() end"), Ok(()));
    let error =
        check_syntax("x.lua", "local a = 1\nlocal b = 2\nlocal = 3\n").expect_err("syntax error");
    assert_eq!(error.file, "x.lua");
    assert_eq!(error.line, Some(3));
    assert!(error.to_string().starts_with("x.lua:3: "), "{error}");
    let nested = check_syntax("api/list.lua", "return function(\n").expect_err("syntax error");
    assert_eq!(
        (nested.file.as_str(), nested.line),
        ("api/list.lua", Some(2))
    );
}

#[tokio::test]
async fn check_syntax_does_not_run_the_code() {
    assert_eq!(check_syntax("loop.lua", "while true do end"), Ok(()));
}

#[test]
fn load_errors_name_the_file() {
    let host = FakeHost::new();
    let cases = [
        (
            "hello.lua",
            "return 42",
            "hello.lua: script must return a function, got integer",
        ),
        (
            "hello.lua",
            "local x = 1",
            "hello.lua: script must return a function, got nil",
        ),
        (
            "a/b.lua",
            "local x = nil\nreturn x.y",
            "a/b.lua:2: attempt to index",
        ),
        ("bad.lua", "return function(", "bad.lua:1: "),
        (
            "io.lua",
            "return io.open('/etc/passwd')",
            "io.lua:1: attempt to index a nil value (global 'io')",
        ),
    ];
    for (name, source, expected) in cases {
        match Vm::new(
            APP,
            &scripts(&[(name, source)]),
            host.clone(),
            SandboxLimits::default(),
        ) {
            Err(error) => assert!(error.to_string().starts_with(expected), "{name}: {error}"),
            Ok(_) => panic!("{name} should not load"),
        }
    }
}

#[test]
fn load_error_keeps_structured_fields() {
    let host = FakeHost::new();
    let error = Vm::new(
        APP,
        &scripts(&[("hello.lua", "return 1")]),
        host,
        SandboxLimits::default(),
    )
    .expect_err("not a function");
    assert_eq!(
        error,
        CompileError {
            file: "hello.lua".to_string(),
            line: None,
            message: "script must return a function, got integer".to_string(),
        }
    );
}

#[tokio::test]
async fn several_scripts_share_one_vm() {
    let host = FakeHost::new();
    let vm = Vm::new(
        APP,
        &scripts(&[
            (
                "greet.lua",
                "return function(req) return 'hi ' .. (req.query.name or '?') end",
            ),
            (
                "api/list.lua",
                "return function() return { json = json.array() } end",
            ),
        ]),
        host,
        SandboxLimits::default(),
    )
    .expect("load");
    let mut request = get("/greet");
    request.query.insert("name".to_string(), "bo".to_string());
    let greet = vm.invoke("greet.lua", request).await.expect("greet");
    assert_eq!(greet.body, b"hi bo");
    let list = vm.invoke("api/list.lua", get("/list")).await.expect("list");
    assert_eq!(list.body, b"[]");
    match vm.invoke("missing.lua", get("/")).await {
        Err(InvokeError::NoSuchScript { script }) => assert_eq!(script, "missing.lua"),
        other => panic!("expected NoSuchScript, got {other:?}"),
    }
    assert!(vm.memory_used_bytes() > 0);
}

#[tokio::test]
async fn apps_do_not_see_each_others_keys() {
    let host = FakeHost::new();
    host.put("other", "secret", json!("s"));
    let vm = vm(&host, &returning(r#"return tostring(kv.get("secret"))"#));
    assert_eq!(body(&vm).await, "nil");
    let _ = Arc::strong_count(&host);
}

#[tokio::test]
async fn docs_calls_are_checked_before_they_reach_the_host() {
    use picloud_lua_sdk::{DocsCall, FindArgs};
    let host = FakeHost::new();
    *host.docs_result.lock().expect("lock") = serde_json::json!({"items": [], "cursor": "c2"});
    let script = vm(
        &host,
        &returning(
            r#"local page = docs.find("users", {age = {["$gt"] = 30}},
                 {sort = {"-age", "name"}, limit = 5, cursor = "c1", fields = {"name"}, explain = true})
               local errors = {}
               for _, bad in ipairs({
                 function() return docs.insert("users", {1, 2}) end,
                 function() return docs.insert(42, {}) end,
                 function() return docs.find("users", nil, {limt = 3}) end,
                 function() return docs.find("users", nil, {limit = 0}) end,
                 function() return docs.find("users", nil, {sort = 5}) end,
                 function() return docs.update("users", "id", "patch") end,
               }) do
                 local ok, err = pcall(bad)
                 errors[#errors + 1] = ok and "no error" or tostring(err)
               end
               return { json = { cursor = page.cursor, errors = errors } }"#,
        ),
    );
    let response = call(&script).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(parsed["cursor"], "c2");
    let errors: Vec<&str> = parsed["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    let expected = [
        "docs.insert: document must be a table with field names, not an array",
        "docs.insert: collection must be a string, got 42",
        "docs.find: unknown option \"limt\"",
        "docs.find: limit must be at least 1, got 0",
        "docs.find: sort must be a field name or a list of them, got 5",
        "docs.update: patch must be a table, got \"patch\"",
    ];
    for (got, want) in errors.iter().zip(expected) {
        assert!(got.contains(want), "{got:?} should contain {want:?}");
        assert!(
            got.contains("main.lua:"),
            "points at the script line: {got}"
        );
    }
    assert_eq!(errors.len(), expected.len());
    // Only the good call reached the host, parsed.
    let calls = host.docs_calls.lock().expect("lock").clone();
    assert_eq!(
        calls,
        vec![DocsCall::Find {
            collection: "users".into(),
            query: serde_json::json!({"age": {"$gt": 30}}),
            options: FindArgs {
                sort: vec![("age".into(), true), ("name".into(), false)],
                limit: Some(5),
                cursor: Some("c1".into()),
                fields: Some(vec!["name".into()]),
                explain: true,
            },
        }]
    );
}

#[tokio::test]
async fn http_calls_become_outbound_requests_and_responses_become_tables() {
    let host = FakeHost::new();
    *host.http_response.lock().expect("lock") = OutboundResponse {
        status: 201,
        headers: vec![
            ("content-type".into(), "application/problem+json".into()),
            ("x-multi".into(), "a".into()),
            ("x-multi".into(), "b".into()),
            (
                "set-cookie".into(),
                "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT".into(),
            ),
            ("set-cookie".into(), "b=2".into()),
        ],
        body: br#"{"id": 7, "list": [1, 2]}"#.to_vec(),
    };
    let script = vm(
        &host,
        &returning(
            r#"local r = http.request{ method = "patch", url = "http://x.test/a",
                   headers = { ["X-One"] = "1", ["x-list"] = {"a", "b"} }, json = { k = "v" },
                   timeout_ms = 1500, redirects = 2 }
               http.get("http://x.test/g")
               http.post("http://x.test/p", "raw", { headers = { ["content-type"] = "text/plain" } })
               http.post("http://x.test/j", { n = 1 })
               return { json = { status = r.status, id = r.json.id, second = r.json.list[2],
                                 multi = r.headers["x-multi"], cookie = r.headers["set-cookie"],
                                 body = r.body } }"#,
        ),
    );
    let response = call(&script).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    assert_eq!(
        parsed,
        json!({"status": 201, "id": 7, "second": 2, "multi": "a, b",
               "cookie": "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\nb=2",
               "body": r#"{"id": 7, "list": [1, 2]}"#})
    );
    let requests = host.http_requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 4);
    let first = &requests[0];
    assert_eq!(
        (first.method.as_str(), first.url.as_str()),
        ("PATCH", "http://x.test/a")
    );
    assert_eq!((first.timeout_ms, first.redirects), (Some(1500), 2));
    assert!(
        first.time_left <= SandboxLimits::default().timeout,
        "{:?}",
        first.time_left
    );
    let mut headers = first.headers.clone();
    headers.sort();
    assert_eq!(
        headers,
        vec![
            ("X-One".to_string(), "1".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
            ("x-list".to_string(), "a".to_string()),
            ("x-list".to_string(), "b".to_string()),
        ]
    );
    assert_eq!(first.body, br#"{"k":"v"}"#);
    assert_eq!(
        (requests[1].method.as_str(), requests[1].body.len()),
        ("GET", 0)
    );
    assert_eq!(
        (requests[2].method.as_str(), requests[2].body.as_slice()),
        ("POST", b"raw".as_slice())
    );
    assert_eq!(requests[3].body, br#"{"n":1}"#);
    assert!(
        requests[3]
            .headers
            .contains(&("content-type".into(), "application/json".into()))
    );
}

#[tokio::test]
async fn http_argument_mistakes_point_at_the_script_line() {
    let host = FakeHost::new();
    for (call_text, says) in [
        (
            "http.request('x')",
            "http.request: expected a table of options, got string",
        ),
        (
            "http.request{}",
            "http.request: url must be a string, got nil",
        ),
        ("http.get(5)", "http.get: url must be a string, got integer"),
        (
            "http.get('http://x.test', { url = 'y' })",
            "http.get: url is an argument here",
        ),
        (
            "http.post('http://x.test', true)",
            "http.post: body must be a string or a table",
        ),
        (
            "http.request{ url = 'u', redirects = 6 }",
            "redirects must be an integer from 0 to 5, got 6",
        ),
        (
            "http.request{ url = 'u', timeout_ms = -1 }",
            "timeout_ms must be a positive number",
        ),
        (
            "http.request{ url = 'u', body = 'a', json = {} }",
            "give body or json, not both",
        ),
        (
            "http.request{ url = 'u', headers = { a = true } }",
            "header a must be a string",
        ),
    ] {
        let script = vm(
            &host,
            &returning(&format!(
                "local ok, err = pcall(function() {call_text} end)\nreturn tostring(err)"
            )),
        );
        let response = call(&script).await.expect("invoke");
        let text = String::from_utf8_lossy(&response.body).to_string();
        assert!(text.contains(says), "{call_text}: {text}");
        assert!(text.contains("main.lua:"), "{call_text}: {text}");
    }
    assert!(host.http_requests.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn pubsub_and_realtime_check_their_arguments_and_default_to_unsupported() {
    let host = FakeHost::new();
    let script = vm(
        &host,
        &returning(
            r#"local function err(f, ...) local ok, e = pcall(f, ...) return tostring(e) end
               return { json = {
                 topic = err(pubsub.publish, 42, {}),
                 nil_message = err(pubsub.publish_durable, "t", nil),
                 options = err(realtime.token, "t", 5),
                 subject = err(realtime.token, "t", { subject = 1 }),
                 ttl = err(realtime.token, "t", { ttl = -1 }),
                 unsupported = err(pubsub.publish, "t", { a = 1 }),
               } }"#,
        ),
    );
    let response = call(&script).await.expect("invoke");
    let parsed: serde_json::Value = serde_json::from_slice(&response.body).expect("json");
    let expect = [
        ("topic", "pubsub.publish: topic must be a string"),
        ("nil_message", "pubsub.publish_durable: message is nil"),
        ("options", "realtime.token: options must be a table"),
        ("subject", "realtime.token: subject must be a string"),
        ("ttl", "realtime.token: ttl must be a positive number"),
        ("unsupported", "unsupported"),
    ];
    for (field, text) in expect {
        let got = parsed[field].as_str().unwrap_or_default();
        assert!(got.contains(text), "{field}: {got}");
    }
}

#[tokio::test]
async fn email_send_reads_the_message_table() {
    let host = FakeHost::new();
    let vm = vm(
        &host,
        r#"return function()
            local id = email.send{
                to = "Ann <ann@example.com>",
                bcc = {"b@example.com", "c@example.com"},
                subject = "Hi", text = "plain", html = "<b>rich</b>",
                reply_to = "r@example.com",
                attachments = {{filename = "a.bin", data = "\0\1\2"}},
            }
            return id
        end"#,
    );
    assert_eq!(body(&vm).await, "testapp/1");
    let sent = host.emails.lock().expect("lock")[0].clone();
    assert_eq!(sent.to, ["Ann <ann@example.com>"]);
    assert_eq!(sent.bcc, ["b@example.com", "c@example.com"]);
    assert_eq!(sent.from, None);
    assert_eq!(sent.html.as_deref(), Some("<b>rich</b>"));
    assert_eq!(sent.attachments[0].data, b"\0\x01\x02");
    assert_eq!(sent.attachments[0].content_type, None);
}

#[tokio::test]
async fn email_send_rejects_wrong_types_at_the_script_line() {
    let host = FakeHost::new();
    for (script, message) in [
        ("email.send('x')", "email.send: expects a table"),
        (
            "email.send{to = 5, text = 'x'}",
            "email.send: to must be an address",
        ),
        (
            "email.send{to = 'a@b.c', attachments = {{filename = 'f'}}}",
            "data must be a string",
        ),
    ] {
        let vm = vm(&host, &format!("return function() {script} end"));
        let error = call(&vm).await.expect_err(script).to_string();
        assert!(error.contains(message), "{script}: {error}");
        assert!(error.contains("main.lua:1"), "{script}: {error}");
    }
    assert!(host.emails.lock().expect("lock").is_empty());
}
