//! The `users` global: what scripts pass reaches the host checked and
//! shaped as `UsersCall`s, and what the host answers comes back as the
//! documented values (`nil` for absent, `nil, code` for a failed login).

mod common;

use std::sync::Arc;

use common::*;
use picloud_lua_sdk::{Code, HostError, UserPatchArgs, UsersCall};
use serde_json::{Value, json};

async fn json_of(host: &Arc<FakeHost>, body: &str) -> Value {
    let script = vm(host, &returning(body));
    let response = call(&script).await.expect("invoke");
    serde_json::from_slice(&response.body).expect("json")
}

fn answer(host: &FakeHost, result: Result<Value, HostError>) {
    *host.users_result.lock().expect("lock") = Some(result);
}

fn calls(host: &FakeHost) -> Vec<UsersCall> {
    host.users_calls.lock().expect("lock").clone()
}

#[tokio::test]
async fn calls_reach_the_host_with_their_arguments() {
    let host = FakeHost::new();
    answer(&host, Ok(json!(true)));
    json_of(
        &host,
        r#"users.create{email = "Ann@Example.org", password = "correct horse",
                        data = {plan = "pro"}, roles = {"admin"}}
           users.get("u1")
           users.find{email = "ann@example.org"}
           users.update("u1", {verified = true, data = {n = 1}, roles = {}})
           users.delete("u1")
           users.list{limit = 5, cursor = "c"}
           users.list()
           users.set_password("u1", "another horse")
           users.verify("tok")
           users.logout("tok")
           users.logout_all("u1")
           users.add_role("u1", "editor")
           users.remove_role("u1", "editor")
           users.has_role("u1", "editor")
           users.invite{email = "bob@example.org", roles = {"editor"}}
           users.invite{email = "cat@example.org"}
           return { json = {} }"#,
    )
    .await;
    let expected = vec![
        UsersCall::Create {
            email: "Ann@Example.org".into(),
            password: "correct horse".into(),
            data: json!({"plan": "pro"}),
            roles: vec!["admin".into()],
        },
        UsersCall::Get { id: "u1".into() },
        UsersCall::Find {
            email: "ann@example.org".into(),
        },
        UsersCall::Update {
            id: "u1".into(),
            patch: UserPatchArgs {
                email: None,
                verified: Some(true),
                roles: Some(vec![]),
                data: Some(json!({"n": 1})),
            },
        },
        UsersCall::Delete { id: "u1".into() },
        UsersCall::List {
            cursor: Some("c".into()),
            limit: Some(5),
        },
        UsersCall::List {
            cursor: None,
            limit: None,
        },
        UsersCall::SetPassword {
            id: "u1".into(),
            password: "another horse".into(),
        },
        UsersCall::Verify {
            token: "tok".into(),
        },
        UsersCall::Logout {
            token: "tok".into(),
        },
        UsersCall::LogoutAll { id: "u1".into() },
        UsersCall::AddRole {
            id: "u1".into(),
            role: "editor".into(),
        },
        UsersCall::RemoveRole {
            id: "u1".into(),
            role: "editor".into(),
        },
        UsersCall::HasRole {
            id: "u1".into(),
            role: "editor".into(),
        },
        UsersCall::Invite {
            email: "bob@example.org".into(),
            roles: vec!["editor".into()],
        },
        UsersCall::Invite {
            email: "cat@example.org".into(),
            roles: vec![],
        },
    ];
    assert_eq!(calls(&host), expected);
}

#[tokio::test]
async fn login_failure_is_nil_and_a_code_and_other_errors_raise() {
    let host = FakeHost::new();
    answer(
        &host,
        Err(HostError::new(
            Code::InvalidCredentials,
            "wrong email or password",
        )),
    );
    let parsed = json_of(
        &host,
        r#"local session, code = users.login("ann@example.org", "nope")
           return { json = { is_nil = session == nil, code = code } }"#,
    )
    .await;
    assert_eq!(
        parsed,
        json!({"is_nil": true, "code": "invalid_credentials"})
    );

    answer(&host, Err(HostError::new(Code::AuthBusy, "queue full")));
    let parsed = json_of(
        &host,
        r#"local ok, err = pcall(users.login, "ann@example.org", "correct horse")
           return { json = { ok = ok, err = tostring(err) } }"#,
    )
    .await;
    assert_eq!(parsed["ok"], false);
    assert!(
        parsed["err"].as_str().expect("text").contains("auth_busy"),
        "{parsed}"
    );
}

#[tokio::test]
async fn absent_users_and_sessions_are_nil_and_results_are_tables() {
    let host = FakeHost::new();
    let parsed = json_of(
        &host,
        r#"return { json = { user = users.get("x") == nil, session = users.verify("t") == nil } }"#,
    )
    .await;
    assert_eq!(parsed, json!({"user": true, "session": true}));
    answer(
        &host,
        Ok(json!({"token": "t", "user": {"id": "u1", "roles": ["admin"]}})),
    );
    let parsed = json_of(
        &host,
        r#"local s = users.login("ann@example.org", "correct horse")
           return { json = { token = s.token, id = s.user.id, role = s.user.roles[1] } }"#,
    )
    .await;
    assert_eq!(parsed, json!({"token": "t", "id": "u1", "role": "admin"}));
}

#[tokio::test]
async fn bad_arguments_fail_at_the_scripts_line() {
    let host = FakeHost::new();
    for (script, message) in [
        (
            r#"users.create{email = "a@b.co"}"#,
            "password must be a string",
        ),
        (
            r#"users.create{email = "a@b.co", password = "x", nick = 1}"#,
            "unknown field",
        ),
        (
            r#"users.create{email = "a@b.co", password = "x", roles = {1}}"#,
            "roles must be a list of strings",
        ),
        (
            r#"users.update("u1", {verified = "yes"})"#,
            "verified must be a boolean",
        ),
        (r#"users.get(1)"#, "id must be a string"),
        (r#"users.list{limit = -1}"#, "limit must be positive"),
        (r#"users.find("a@b.co")"#, "options must be a table"),
        (
            r#"users.invite{email = "a@b.co", role = "x"}"#,
            "unknown field",
        ),
        (r#"users.invite{roles = {"x"}}"#, "email must be a string"),
    ] {
        let vm = vm(
            &host,
            &returning(&format!("{script}\nreturn {{ json = {{}} }}")),
        );
        let error = call(&vm).await.expect_err(script).to_string();
        assert!(error.contains(message), "{script}: {error}");
        assert!(error.contains("main.lua:"), "points at the script: {error}");
    }
    assert!(calls(&host).is_empty(), "no bad call reached the host");
}
