//! Issue 15: end users on three real nodes. A user created through node 1
//! logs in through node 2 and is verified through node 3; a logout, a
//! password change and a delete made through node 1 each end the session on
//! every node within a second (polled with that deadline); the password hash
//! never appears in any Lua, API or CLI output; `picloud users
//! list|show|create|delete|roles` round-trips; the app's `[auth] password_min` applies.

mod common;

use std::time::Duration;

use common::cluster::{api, start_three};
use common::{Api, TestNode, install_crypto};
use serde_json::{Value, json};

const MANIFEST: &str = r#"name = "ua"
[auth]
password_min = 10
session_ttl = 3600
[[route]]
method = "POST"
path = "/op"
script = "op.lua"
"#;

/// One route running the `users` op named in the JSON body.
const OP: &str = r#"return function(req)
  local a = req.json
  if a.op == "create" then
    return {json = users.create{email = a.email, password = a.password, roles = a.roles, data = a.data}}
  elseif a.op == "login" then
    local session, code = users.login(a.email, a.password)
    return {json = {session = session, code = code}}
  elseif a.op == "verify" then
    local user = users.verify(a.token)
    return {json = {valid = user ~= nil, user = user}}
  elseif a.op == "logout" then
    return {json = {found = users.logout(a.token)}}
  elseif a.op == "set_password" then
    return {json = {ok = users.set_password(a.id, a.password)}}
  elseif a.op == "delete" then
    return {json = {found = users.delete(a.id)}}
  elseif a.op == "get" then
    return {json = {user = users.get(a.id)}}
  elseif a.op == "find" then
    return {json = {user = users.find{email = a.email}}}
  elseif a.op == "update" then
    return {json = users.update(a.id, {verified = a.verified, data = a.data})}
  elseif a.op == "roles" then
    local added = users.add_role(a.id, "editor")
    local has = users.has_role(a.id, "editor")
    local removed = users.remove_role(a.id, "editor")
    return {json = {added = added, has = has, removed = removed, after = users.has_role(a.id, "editor")}}
  elseif a.op == "list" then
    return {json = users.list{limit = a.limit, cursor = a.cursor}}
  end
  error("unknown op " .. tostring(a.op))
end"#;

async fn op(node: &Api, args: Value) -> (u16, Value) {
    node.call(
        "POST",
        "/ua/op",
        Some(serde_json::to_vec(&args).expect("json")),
    )
    .await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// No output may hold a password hash.
fn assert_no_hash(text: &str) {
    assert!(
        !text.contains("argon2") && !text.contains("password_hash"),
        "a hash leaked: {text}"
    );
}

/// Polls `verify` of `token` through every node until it fails on all of
/// them, and asserts that took at most one second (plus the request time).
async fn revoked_everywhere_within_a_second(nodes: &[Api], token: &str, what: &str) {
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(1_500);
    let mut pending: Vec<usize> = (0..nodes.len()).collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for index in pending {
            let (status, body) = op(&nodes[index], json!({"op": "verify", "token": token})).await;
            assert_eq!(status, 200, "{body}");
            if body["valid"] == true {
                still.push(index);
            }
        }
        pending = still;
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: nodes {pending:?} still accept the session after {:?}",
            started.elapsed()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Verifies `token` on every node, so each caches the session first: the
/// revocation then has to reach a cached session, not a cold read.
async fn verified_everywhere(nodes: &[Api], token: &str) -> Value {
    let mut user = Value::Null;
    for node in nodes {
        let (status, body) = op(node, json!({"op": "verify", "token": token})).await;
        assert_eq!((status, &body["valid"]), (200, &json!(true)), "{body}");
        user = body["user"].clone();
    }
    user
}

async fn login(node: &Api, email: &str, password: &str) -> String {
    let (status, body) = op(
        node,
        json!({"op": "login", "email": email, "password": password}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_no_hash(&body.to_string());
    body["session"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {body}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sessions_and_revocation_across_three_nodes() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    let (key, _) = start_three(&mut nodes).await;
    let admins: Vec<Api> = nodes.iter().map(|node| api(node, &key)).collect();
    let (status, body) = admins[0]
        .deploy("ua", &[("picloud.toml", MANIFEST), ("op.lua", OP)])
        .await;
    assert_eq!(status, 200, "{body}");
    let public: Vec<Api> = admins.iter().map(|admin| admin.with_key(None)).collect();

    // Create through node 1: the email is normalised, the hash never shown.
    let (status, user) = op(
        &public[0],
        json!({"op": "create", "email": "  Ann@Example.ORG ", "password": "correct horse",
               "roles": ["member"], "data": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    assert_no_hash(&user.to_string());
    assert_eq!(user["email"], "ann@example.org");
    assert_eq!(user["roles"], json!(["member"]));
    assert_eq!(user["data"], json!({"plan": "pro"}));
    let id = user["id"].as_str().expect("id").to_string();

    // The rules: a taken email, a weak password, a bad role, a bad email.
    for (args, expected) in [
        (
            json!({"op": "create", "email": "ann@example.org", "password": "another horse"}),
            "email_taken",
        ),
        (
            json!({"op": "create", "email": "bob@example.org", "password": "password123"}),
            "password_weak",
        ),
        (
            json!({"op": "create", "email": "bob@example.org", "password": "short"}),
            "password_weak",
        ),
        // Nine characters: enough for the node, not for this app's `[auth] password_min`.
        (
            json!({"op": "create", "email": "bob@example.org", "password": "horsebatt"}),
            "password_weak",
        ),
        (
            json!({"op": "create", "email": "bob@example.org", "password": "correct horse", "roles": ["Admin"]}),
            "invalid_role",
        ),
        (
            json!({"op": "create", "email": "not-an-email", "password": "correct horse"}),
            "email_invalid",
        ),
    ] {
        let (status, body) = op(&public[0], args.clone()).await;
        assert_eq!(code(&body), expected, "{args}: {status} {body}");
    }

    // A wrong password and an unknown email answer alike: nil, code.
    for (email, password) in [
        ("ann@example.org", "wrong horse"),
        ("nobody@example.org", "correct horse"),
    ] {
        let (status, body) = op(
            &public[1],
            json!({"op": "login", "email": email, "password": password}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"code": "invalid_credentials"}));
    }

    // Login through node 2, verify through node 3 (and every node).
    let token = login(&public[1], "ANN@example.org", "correct horse").await;
    let seen = verified_everywhere(&public, &token).await;
    assert_eq!(seen["id"], id.as_str());
    assert!(seen["last_login_ms"].as_u64().unwrap_or(0) > 0, "{seen}");
    assert_no_hash(&seen.to_string());

    // Get, find, update, roles, list through Lua.
    let (_, got) = op(&public[2], json!({"op": "get", "id": id})).await;
    assert_eq!(got["user"]["email"], "ann@example.org");
    let (_, found) = op(
        &public[2],
        json!({"op": "find", "email": "ANN@example.org"}),
    )
    .await;
    assert_eq!(found["user"]["id"], id.as_str());
    let (_, updated) = op(
        &public[0],
        json!({"op": "update", "id": id, "verified": true, "data": {"plan": "team"}}),
    )
    .await;
    assert_eq!(
        (&updated["verified"], &updated["data"]),
        (&json!(true), &json!({"plan": "team"})),
        "{updated}"
    );
    let (_, roles) = op(&public[1], json!({"op": "roles", "id": id})).await;
    assert_eq!(
        roles,
        json!({"added": true, "has": true, "removed": true, "after": false})
    );
    let (_, list) = op(&public[2], json!({"op": "list", "limit": 10})).await;
    assert_eq!(list["users"].as_array().map(Vec::len), Some(1), "{list}");
    assert_no_hash(&list.to_string());
    let (_, bad) = op(&public[2], json!({"op": "list", "limit": 0})).await;
    assert_eq!(code(&bad), "invalid_limit", "{bad}");

    // Logout through node 1 ends it everywhere within a second.
    let (_, out) = op(&public[0], json!({"op": "logout", "token": token})).await;
    assert_eq!(out["found"], true);
    revoked_everywhere_within_a_second(&public, &token, "logout").await;

    // A password change through node 1 revokes a session served by the others.
    let token = login(&public[2], "ann@example.org", "correct horse").await;
    verified_everywhere(&public, &token).await;
    let (status, body) = op(
        &public[0],
        json!({"op": "set_password", "id": id, "password": "another horse"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    revoked_everywhere_within_a_second(&public, &token, "set_password").await;
    let (_, old) = op(
        &public[1],
        json!({"op": "login", "email": "ann@example.org", "password": "correct horse"}),
    )
    .await;
    assert_eq!(old["code"], "invalid_credentials");

    // A delete through node 1 too.
    let token = login(&public[1], "ann@example.org", "another horse").await;
    verified_everywhere(&public, &token).await;
    let (_, deleted) = op(&public[0], json!({"op": "delete", "id": id})).await;
    assert_eq!(deleted["found"], true);
    revoked_everywhere_within_a_second(&public, &token, "delete").await;
    let (_, gone) = op(&public[2], json!({"op": "get", "id": id})).await;
    assert_eq!(gone["user"], Value::Null, "{gone}");

    // The admin API: create, show, roles, list, delete; never a hash.
    // Its create follows the app's `[auth] password_min` too.
    let (status, weak) = admins[1]
        .post_json(
            "/_/api/v1/apps/ua/users",
            &json!({"email": "cli@example.org", "password": "horsebatt"}),
        )
        .await;
    assert_eq!((status, code(&weak)), (400, "password_weak"), "{weak}");
    let (status, created) = admins[1]
        .post_json(
            "/_/api/v1/apps/ua/users",
            &json!({"email": "cli@example.org", "password": "correct horse", "roles": ["a"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_no_hash(&created.to_string());
    let api_id = created["id"].as_str().expect("id").to_string();
    let (status, roles) = admins[2]
        .post_json(
            &format!("/_/api/v1/apps/ua/users/{api_id}/roles"),
            &json!({"add": ["b"], "remove": ["a"]}),
        )
        .await;
    assert_eq!((status, &roles["roles"]), (200, &json!(["b"])), "{roles}");
    let (status, missing) = admins[0].get("/_/api/v1/apps/ua/users/nope").await;
    assert_eq!(
        (status, code(&missing)),
        (404, "user_not_found"),
        "{missing}"
    );
    let (status, listed) = admins[0].get("/_/api/v1/apps/ua/users?limit=5").await;
    assert_eq!(status, 200, "{listed}");
    assert_no_hash(&listed.to_string());
    let (status, body) = admins[0]
        .with_key(None)
        .get("/_/api/v1/apps/ua/users")
        .await;
    assert_eq!(status, 401, "{body}");

    // The CLI: create (password on stdin), list, show, roles, delete.
    let created = nodes[2].cli_with_key_stdin(
        &key,
        &["users", "create", "ua", "Dee@Example.org", "--role", "x"],
        b"correct horse\n",
    );
    let (ok, out, err) = (created.success, created.stdout, created.stderr);
    assert!(ok, "{err}{out}");
    assert!(out.contains("dee@example.org"), "{out}");
    assert_no_hash(&out);
    let weak = nodes[0].cli_with_key_stdin(
        &key,
        &["users", "create", "ua", "weak@example.org"],
        b"password\n",
    );
    let (ok, out, err) = (weak.success, weak.stdout, weak.stderr);
    assert!(!ok && err.contains("password_weak"), "{err}{out}");
    let listed = nodes[0].cli_with_key(&key, &["users", "list", "ua"]).ok();
    assert!(
        listed.contains("dee@example.org") && listed.contains("cli@example.org"),
        "{listed}"
    );
    assert_no_hash(&listed);
    let json_list = nodes[0]
        .cli_with_key(&key, &["--json", "users", "list", "ua"])
        .ok();
    assert_no_hash(&json_list);
    let parsed: Value = serde_json::from_str(&json_list).expect("json");
    let dee = parsed["users"]
        .as_array()
        .and_then(|users| users.iter().find(|user| user["email"] == "dee@example.org"))
        .expect("dee listed")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let shown = nodes[1]
        .cli_with_key(&key, &["users", "show", "ua", &dee])
        .ok();
    assert!(
        shown.contains("dee@example.org") && shown.contains("roles\tx"),
        "{shown}"
    );
    assert_no_hash(&shown);
    let changed = nodes[1]
        .cli_with_key(
            &key,
            &["users", "roles", "ua", &dee, "--add", "y", "--remove", "x"],
        )
        .ok();
    assert!(changed.contains("roles\ty"), "{changed}");
    let removed = nodes[2]
        .cli_with_key(&key, &["users", "delete", "ua", &dee])
        .ok();
    assert!(removed.contains("deleted user"), "{removed}");
    let missing = nodes[2].cli_with_key(&key, &["users", "show", "ua", &dee]);
    assert!(
        !missing.success && missing.stderr.contains("user_not_found"),
        "{}",
        missing.stderr
    );
}
