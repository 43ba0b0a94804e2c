//! Bad input gets a clear error with a stable code, and loses nothing.
//! Scenario tables in the PocketBase style: method, path, key, body → status, code.

mod common;

use common::{TestNode, install_crypto, manifest};
use serde_json::{Value, json};

const GREET: &str = "return function(req) return {status=200, json={hello=req.params.name}} end";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_status_and_code() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = vec!["--http-body-bytes-max".into(), "4096".into()];
    node.start().await;
    let admin = node.client();
    let hello_manifest = manifest(
        "hello",
        &[
            ("GET", "/greet/:name", "greet.lua"),
            ("POST", "/echo", "echo.lua"),
        ],
    );
    let (status, body) = admin
        .deploy(
            "hello",
            &[
                ("picloud.toml", &hello_manifest),
                ("greet.lua", GREET),
                (
                    "echo.lua",
                    "return function(req) return {json={size=#req.body}} end",
                ),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (_, created) = admin
        .post_json(
            "/_/api/v1/keys",
            &json!({"scope": "read:hello", "name": "reader"}),
        )
        .await;
    let reader_key = created["key"].as_str().expect("reader key").to_string();
    // A scoped key needs its app to exist (issue 10).
    let (status, _) = admin
        .post_json("/_/api/v1/apps", &json!({"name": "other"}))
        .await;
    assert_eq!(status, 201);
    let (_, created) = admin
        .post_json("/_/api/v1/keys", &json!({"scope": "deploy:other"}))
        .await;
    let other_key = created["key"].as_str().expect("other key").to_string();

    let big = vec![b'x'; 5000];
    struct Case {
        name: &'static str,
        method: &'static str,
        path: &'static str,
        key: Option<String>,
        body: Option<Vec<u8>>,
        status: u16,
        code: &'static str,
        message_contains: &'static str,
    }
    let admin_key = Some(node.admin_key());
    let cases = vec![
        Case {
            name: "no key",
            method: "GET",
            path: "/_/api/v1/apps",
            key: None,
            body: None,
            status: 401,
            code: "unauthorized",
            message_contains: "Bearer",
        },
        Case {
            name: "wrong key",
            method: "GET",
            path: "/_/api/v1/apps",
            key: Some("pck_000000000001_nope".into()),
            body: None,
            status: 401,
            code: "unauthorized",
            message_contains: "invalid",
        },
        Case {
            name: "garbage key",
            method: "GET",
            path: "/_/api/v1/apps",
            key: Some("garbage".into()),
            body: None,
            status: 401,
            code: "unauthorized",
            message_contains: "",
        },
        Case {
            name: "read key cannot deploy",
            method: "POST",
            path: "/_/api/v1/apps/hello/rollback",
            key: Some(reader_key.clone()),
            body: None,
            status: 403,
            code: "forbidden",
            message_contains: "deploy:hello",
        },
        Case {
            name: "read key cannot create keys",
            method: "POST",
            path: "/_/api/v1/keys",
            key: Some(reader_key.clone()),
            body: Some(br#"{"scope":"admin"}"#.to_vec()),
            status: 403,
            code: "forbidden",
            message_contains: "admin",
        },
        Case {
            name: "other app's key cannot read",
            method: "GET",
            path: "/_/api/v1/apps/hello/kv",
            key: Some(other_key.clone()),
            body: None,
            status: 403,
            code: "forbidden",
            message_contains: "read:hello",
        },
        Case {
            name: "read key cannot see the join token",
            method: "GET",
            path: "/_/api/v1/cluster/token",
            key: Some(reader_key.clone()),
            body: None,
            status: 403,
            code: "forbidden",
            message_contains: "admin",
        },
        Case {
            name: "unknown app",
            method: "GET",
            path: "/nope/greet/pi",
            key: None,
            body: None,
            status: 404,
            code: "app_not_found",
            message_contains: "nope",
        },
        Case {
            name: "unknown route",
            method: "GET",
            path: "/hello/nowhere",
            key: None,
            body: None,
            status: 404,
            code: "route_not_found",
            message_contains: "/nowhere",
        },
        Case {
            name: "wrong method",
            method: "DELETE",
            path: "/hello/greet/pi",
            key: None,
            body: None,
            status: 405,
            code: "method_not_allowed",
            message_contains: "DELETE",
        },
        Case {
            name: "reserved prefix",
            method: "GET",
            path: "/_/nothing",
            key: None,
            body: None,
            status: 404,
            code: "not_found",
            message_contains: "",
        },
        Case {
            name: "unknown admin endpoint",
            method: "GET",
            path: "/_/api/v1/bogus",
            key: admin_key.clone(),
            body: None,
            status: 404,
            code: "not_found",
            message_contains: "bogus",
        },
        Case {
            name: "app body over limit",
            method: "POST",
            path: "/hello/echo",
            key: None,
            body: Some(big.clone()),
            status: 413,
            code: "body_too_large",
            message_contains: "4096",
        },
        Case {
            name: "admin body over limit",
            method: "POST",
            path: "/_/api/v1/apps",
            key: admin_key.clone(),
            body: Some(big.clone()),
            status: 413,
            code: "body_too_large",
            message_contains: "",
        },
        Case {
            name: "invalid JSON",
            method: "POST",
            path: "/_/api/v1/apps",
            key: admin_key.clone(),
            body: Some(b"{not json".to_vec()),
            status: 400,
            code: "invalid_json",
            message_contains: "",
        },
        Case {
            name: "wrong field type",
            method: "POST",
            path: "/_/api/v1/apps",
            key: admin_key.clone(),
            body: Some(br#"{"name": 5}"#.to_vec()),
            status: 400,
            code: "invalid_field",
            message_contains: "name",
        },
        Case {
            name: "missing field",
            method: "POST",
            path: "/_/api/v1/keys",
            key: admin_key.clone(),
            body: Some(b"{}".to_vec()),
            status: 400,
            code: "invalid_field",
            message_contains: "scope",
        },
        Case {
            name: "unknown field",
            method: "POST",
            path: "/_/api/v1/apps",
            key: admin_key.clone(),
            body: Some(br#"{"name":"a","color":"red"}"#.to_vec()),
            status: 400,
            code: "invalid_field",
            message_contains: "color",
        },
        Case {
            name: "bad scope",
            method: "POST",
            path: "/_/api/v1/keys",
            key: admin_key.clone(),
            body: Some(br#"{"scope":"root"}"#.to_vec()),
            status: 400,
            code: "invalid_field",
            message_contains: "scope",
        },
        Case {
            name: "bad app name",
            method: "POST",
            path: "/_/api/v1/apps",
            key: admin_key.clone(),
            body: Some(br#"{"name":"Bad Name"}"#.to_vec()),
            status: 400,
            code: "invalid_app_name",
            message_contains: "Bad Name",
        },
        Case {
            name: "duplicate app",
            method: "POST",
            path: "/_/api/v1/apps",
            key: admin_key.clone(),
            body: Some(br#"{"name":"hello"}"#.to_vec()),
            status: 409,
            code: "app_exists",
            message_contains: "hello",
        },
        Case {
            name: "missing kv key",
            method: "GET",
            path: "/_/api/v1/apps/hello/kv/absent",
            key: admin_key.clone(),
            body: None,
            status: 404,
            code: "key_not_found",
            message_contains: "absent",
        },
        Case {
            name: "kv of unknown app",
            method: "GET",
            path: "/_/api/v1/apps/ghost/kv/x",
            key: admin_key.clone(),
            body: None,
            status: 404,
            code: "app_not_found",
            message_contains: "ghost",
        },
        Case {
            name: "bad kv list limit",
            method: "GET",
            path: "/_/api/v1/apps/hello/kv?limit=0",
            key: admin_key.clone(),
            body: None,
            status: 400,
            code: "invalid_field",
            message_contains: "limit",
        },
        Case {
            name: "bad query type",
            method: "GET",
            path: "/_/api/v1/apps/hello/kv?limit=many",
            key: admin_key.clone(),
            body: None,
            status: 400,
            code: "invalid_query",
            message_contains: "limit",
        },
        Case {
            name: "rollback with no earlier version",
            method: "POST",
            path: "/_/api/v1/apps/hello/rollback",
            key: admin_key.clone(),
            body: None,
            status: 409,
            code: "no_earlier_version",
            message_contains: "",
        },
        Case {
            name: "revoke unknown key",
            method: "DELETE",
            path: "/_/api/v1/keys/abcdefabcdef",
            key: admin_key.clone(),
            body: None,
            status: 404,
            code: "key_not_found",
            message_contains: "",
        },
    ];
    for case in cases {
        let api = admin.with_key(case.key.as_deref());
        let (status, body) = api.call(case.method, case.path, case.body).await;
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{}: empty message", case.name);
        assert!(
            message.contains(case.message_contains),
            "{}: {message}",
            case.name
        );
    }

    // A read key can read what it is scoped to.
    let (status, _) = admin
        .with_key(Some(&reader_key))
        .get("/_/api/v1/apps/hello/deploys")
        .await;
    assert_eq!(status, 200);
    // Nothing was lost along the way: the app still serves.
    let (status, body) = admin.get("/hello/greet/pi").await;
    assert_eq!((status, body), (200, json!({"hello": "pi"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deploys_are_rejected_whole_and_the_running_version_keeps_serving() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    let good = manifest("app", &[("GET", "/greet/:name", "greet.lua")]);
    let (status, body) = admin
        .deploy("app", &[("picloud.toml", &good), ("greet.lua", GREET)])
        .await;
    assert_eq!((status, body["version"].clone()), (200, json!(1)));

    let other = manifest("other", &[]);
    let two_routes = manifest(
        "app",
        &[("GET", "/greet/:name", "greet.lua"), ("GET", "/x", "x.lua")],
    );
    type Files<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Files, &str)> = vec![
        (
            "syntax error",
            vec![
                ("picloud.toml", &good),
                ("greet.lua", "return function(req)\n  local x = = 1\nend"),
            ],
            "greet.lua:2:",
        ),
        (
            "missing script",
            vec![("picloud.toml", &two_routes), ("greet.lua", GREET)],
            "x.lua: script not found",
        ),
        (
            "bad manifest",
            vec![
                ("picloud.toml", "name = \"app\"\n[[route]]\nmethod = 5\n"),
                ("greet.lua", GREET),
            ],
            "picloud.toml:",
        ),
        (
            "no manifest",
            vec![("greet.lua", GREET)],
            "picloud.toml: missing",
        ),
        (
            "name mismatch",
            vec![("picloud.toml", &other), ("greet.lua", GREET)],
            "other",
        ),
        (
            "not a handler",
            vec![("picloud.toml", &good), ("greet.lua", "return 42")],
            "greet.lua",
        ),
        (
            "error at load",
            vec![
                ("picloud.toml", &good),
                ("greet.lua", "error('boom at load')"),
            ],
            "boom at load",
        ),
        (
            "runaway at load",
            vec![("picloud.toml", &good), ("greet.lua", "while true do end")],
            "greet.lua",
        ),
    ];
    for (name, files, expected) in cases {
        let (status, body) = admin.deploy("app", &files).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"]["code"], "invalid_deploy", "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{name}: {message}");
        let (status, served) = admin.get("/app/greet/pi").await;
        assert_eq!(
            (status, served),
            (200, json!({"hello": "pi"})),
            "after {name}"
        );
    }
    let (_, deploys) = admin.get("/_/api/v1/apps/app/deploys").await;
    assert_eq!(
        deploys["deploys"].as_array().map(Vec::len),
        Some(1),
        "{deploys}"
    );

    // Versions, deploys listing and rollback (also through the CLI).
    let v2 = "return function(req) return 'v2 ' .. req.params.name end";
    let (status, body) = admin
        .deploy("app", &[("picloud.toml", &good), ("greet.lua", v2)])
        .await;
    assert_eq!((status, body["version"].clone()), (200, json!(2)));
    assert_eq!(
        admin.get("/app/greet/pi").await,
        (200, Value::String("v2 pi".into()))
    );
    let listing = node.cli(&["deploys", "app"]).ok();
    assert!(
        listing.contains("* v2") && listing.contains("  v1"),
        "{listing}"
    );
    let rolled = node.cli(&["rollback", "app"]).ok();
    assert!(rolled.contains("now serves version 1"), "{rolled}");
    assert_eq!(
        admin.get("/app/greet/pi").await,
        (200, json!({"hello": "pi"}))
    );
    let forward = node.cli(&["rollback", "app", "--to", "2"]).ok();
    assert!(forward.contains("version 2"), "{forward}");
    assert_eq!(
        admin.get("/app/greet/pi").await,
        (200, Value::String("v2 pi".into()))
    );
    let missing = node.cli(&["rollback", "app", "--to", "9"]);
    assert!(!missing.success);
    assert!(
        missing.stderr.contains("version_not_found"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_covers_apps_kv_and_keys() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    node.cli(&["apps", "create", "notes"]).ok();
    assert!(node.cli(&["apps", "list"]).ok().contains("notes"));
    node.cli(&["kv", "set", "notes", "a/1", "{\"n\":1}"]).ok();
    node.cli(&["kv", "set", "notes", "a/2", "plain text"]).ok();
    node.cli(&["kv", "set", "notes", "b/1", "3"]).ok();
    assert_eq!(
        node.cli(&["kv", "get", "notes", "a/2"]).ok().trim(),
        "\"plain text\""
    );
    let page = node
        .cli(&["kv", "list", "notes", "--prefix", "a/", "--limit", "1"])
        .ok();
    assert!(
        page.contains("a/1\t{\"n\":1}") && page.contains("--cursor a/1"),
        "{page}"
    );
    let next = node
        .cli(&[
            "kv", "list", "notes", "--prefix", "a/", "--limit", "1", "--cursor", "a/1",
        ])
        .ok();
    assert!(next.contains("a/2") && !next.contains("a/1\t"), "{next}");
    assert!(
        node.cli(&["kv", "del", "notes", "a/2"])
            .ok()
            .contains("deleted")
    );
    let gone = node.cli(&["kv", "get", "notes", "a/2"]);
    assert!(
        !gone.success && gone.stderr.contains("key_not_found"),
        "{}",
        gone.stderr
    );

    let created = node
        .cli(&[
            "--json",
            "keys",
            "create",
            "--scope",
            "deploy:notes",
            "--name",
            "ci",
        ])
        .ok();
    let created: Value = serde_json::from_str(&created).expect("json output");
    let token = created["key"].as_str().expect("token");
    let id = created["id"].as_str().expect("id");
    assert!(
        node.cli_with_key(token, &["kv", "get", "notes", "b/1"])
            .ok()
            .contains('3')
    );
    let denied = node.cli_with_key(token, &["keys", "list"]);
    assert!(
        !denied.success && denied.stderr.contains("forbidden"),
        "{}",
        denied.stderr
    );
    let listed = node.cli(&["keys", "list"]).ok();
    assert!(
        listed.contains(id) && !listed.contains(token),
        "secrets are never listed: {listed}"
    );
    node.cli(&["keys", "revoke", id]).ok();
    let revoked = node.cli_with_key(token, &["kv", "get", "notes", "b/1"]);
    assert!(
        !revoked.success && revoked.stderr.contains("unauthorized"),
        "{}",
        revoked.stderr
    );

    // The stored key is a hash: the secret does not appear in the data dir.
    // `pck_<id>_<secret>`; the secret is URL-safe base64 and may itself hold
    // `_`, so split off the prefix and id rather than take the last piece
    // (a short last piece matched random bytes of the data dir once).
    let secret = token.splitn(3, '_').nth(2).expect("secret part");
    assert!(
        !grep_dir(&node.data_dir, secret.as_bytes()),
        "secret found in data dir"
    );

    // Apps never see each other's keys.
    node.cli(&["apps", "create", "notes2"]).ok();
    node.cli(&["kv", "set", "notes2", "b/1", "9"]).ok();
    assert_eq!(node.cli(&["kv", "get", "notes", "b/1"]).ok().trim(), "3");
    assert_eq!(node.cli(&["kv", "get", "notes2", "b/1"]).ok().trim(), "9");
    let other = node.cli(&["kv", "list", "notes2"]).ok();
    assert!(!other.contains("a/1"), "{other}");

    // The last admin key cannot be revoked.
    let admin_id = node.admin_key()[4..16].to_string();
    let last = node.cli(&["keys", "revoke", &admin_id]);
    assert!(
        !last.success && last.stderr.contains("last_admin_key"),
        "{}",
        last.stderr
    );

    node.cli(&["apps", "delete", "notes"]).ok();
    let listed = node.cli(&["apps", "list"]).ok();
    assert!(
        !listed.lines().any(|line| line.starts_with("notes\t")),
        "{listed}"
    );
    assert!(
        listed.lines().any(|line| line.starts_with("notes2\t")),
        "{listed}"
    );
    let missing = node.cli(&["kv", "get", "notes", "b/1"]);
    assert!(!missing.success && missing.stderr.contains("app_not_found"));
}

fn grep_dir(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if grep_dir(&path, needle) {
                return true;
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|window| window == needle)
        {
            return true;
        }
    }
    false
}
