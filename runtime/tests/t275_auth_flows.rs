//! Issue 15: the built-in HTTP auth flows (`/_/auth/<app>/…`) on real
//! `picloud` processes. On three nodes: each sign-up mode, sign-up with and
//! without `verify_email` (the mailed link, read from dev capture, followed
//! through another node, works once), login/me/logout across nodes, the
//! same answer for a known and an unknown email in `request-reset`, a reset
//! token presented through two nodes at once working once, and invitations
//! made by the admin API, the CLI and a script, each accepted through
//! another node. On one node with short limits: failed logins, then the
//! lockout (429 with `Retry-After`), then recovery; the per-address limit of
//! reset requests; and an expired reset link.

mod common;

use std::time::Duration;

use common::cluster::{api, eventually, start_three};
use common::{Api, TestNode, install_crypto};
use serde_json::{Value, json};

const OPEN: &str = "name = \"fo\"\n";

const VERIFY: &str = "name = \"fa\"\n[auth]\nverify_email = true\n";

const CLOSED: &str = "name = \"fc\"\n[auth]\nsignup = \"closed\"\n";

const INVITE: &str = r#"name = "fi"
[auth]
signup = "invite"
[auth.templates.invite]
subject = "Join {{app}} now"
text = "Hello {{email}}, accept here: {{link}}"
[[route]]
method = "POST"
path = "/invite"
script = "invite.lua"
"#;

const INVITE_LUA: &str = r#"return function(req)
  return {json = users.invite{email = req.json.email, roles = {"scripted"}}}
end"#;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn flow(node: &Api, app: &str, action: &str, body: Value) -> (u16, Value) {
    node.post_json(&format!("/_/auth/{app}/{action}"), &body)
        .await
}

/// `GET /_/auth/<app>/me` with a session token.
async fn me(node: &Api, app: &str, token: &str) -> (u16, Value) {
    node.with_key(Some(token))
        .get(&format!("/_/auth/{app}/me"))
        .await
}

/// The captured mails of `app` to `email`, newest first.
async fn mail_items(admin: &Api, app: &str, email: &str) -> Vec<Value> {
    let (status, page) = admin.get(&format!("/_/api/v1/apps/{app}/mail")).await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|item| {
                    item["to"]
                        .as_array()
                        .is_some_and(|to| to.contains(&json!(email)))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The subject and text of the newest captured mail of `app` to `email`
/// whose subject holds `subject`, polled until one is there.
async fn mail_to(admin: &Api, app: &str, email: &str, subject: &str) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let item = loop {
        let items = mail_items(admin, app, email).await;
        let found = items.into_iter().find(|item| {
            item["subject"]
                .as_str()
                .is_some_and(|s| s.contains(subject))
        });
        if let Some(item) = found {
            break item;
        }
        assert!(tokio::time::Instant::now() < deadline, "no mail to {email}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, shown) = admin
        .get(&format!("/_/api/v1/apps/{app}/mail/{}", item["id"]))
        .await;
    assert_eq!(status, 200, "{shown}");
    (
        shown["subject"].as_str().unwrap_or("").to_string(),
        shown["text"].as_str().unwrap_or("").to_string(),
    )
}

/// How many captured mails of `app` went to `email`.
async fn mails_to(admin: &Api, app: &str, email: &str) -> usize {
    mail_items(admin, app, email).await.len()
}

/// The `token` of the first link in a mail's text.
fn token_in(text: &str) -> String {
    let at = text
        .find("token=")
        .unwrap_or_else(|| panic!("no link in {text:?}"));
    text[at + "token=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The path and query of the first link in a mail's text (so a test can
/// follow it through any node).
fn link_path(text: &str) -> String {
    let start = text
        .find("/_/auth/")
        .unwrap_or_else(|| panic!("no link in {text:?}"));
    text[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn deploy(admin: &Api, app: &str, files: &[(&str, &str)]) {
    let (status, body) = admin.deploy(app, files).await;
    assert_eq!(status, 200, "{app}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_flows_across_three_nodes() {
    install_crypto();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|dir| TestNode::new(dir.path())).collect();
    let (key, _) = start_three(&mut nodes).await;
    let admins: Vec<Api> = nodes.iter().map(|node| api(node, &key)).collect();
    deploy(&admins[0], "fo", &[("picloud.toml", OPEN)]).await;
    deploy(&admins[0], "fa", &[("picloud.toml", VERIFY)]).await;
    deploy(&admins[0], "fc", &[("picloud.toml", CLOSED)]).await;
    deploy(
        &admins[0],
        "fi",
        &[("picloud.toml", INVITE), ("invite.lua", INVITE_LUA)],
    )
    .await;
    let public: Vec<Api> = admins.iter().map(|admin| admin.with_key(None)).collect();
    let password = "correct horse battery";

    // Open sign-up without verification: a session at once, usable through
    // every node; logout through node 3 ends it everywhere.
    let (status, signed) = flow(
        &public[0],
        "fo",
        "signup",
        json!({"email": "Ann@Example.org", "password": password, "data": {"plan": "free"}}),
    )
    .await;
    assert_eq!(status, 201, "{signed}");
    assert_eq!(signed["user"]["email"], "ann@example.org");
    assert_eq!(signed["user"]["data"], json!({"plan": "free"}));
    let token = signed["token"].as_str().expect("token").to_string();
    let (status, user) = me(&public[1], "fo", &token).await;
    assert_eq!(
        (status, &user["email"]),
        (200, &json!("ann@example.org")),
        "{user}"
    );
    let (status, body) = flow(
        &public[1],
        "fo",
        "signup",
        json!({"email": "ann@example.org", "password": password}),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "email_taken"), "{body}");
    let (status, out) = public[2]
        .with_key(Some(&token))
        .post_json("/_/auth/fo/logout", &json!({}))
        .await;
    assert_eq!((status, &out["logged_out"]), (200, &json!(true)), "{out}");
    eventually("the session ends on every node", || {
        let (public, token) = (public.clone(), token.clone());
        async move {
            let mut ended = true;
            for node in &public {
                let (status, body) = me(node, "fo", &token).await;
                ended &= status == 401 && code(&body) == "session_invalid";
            }
            ended
        }
    })
    .await;
    let (status, session) = flow(
        &public[1],
        "fo",
        "login",
        json!({"email": "ANN@example.org", "password": password}),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let (status, body) = flow(
        &public[1],
        "fo",
        "login",
        json!({"email": "ann@example.org", "password": "wrong horse battery"}),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (401, "invalid_credentials"),
        "{body}"
    );

    // Closed and invite-only apps refuse sign-ups.
    for app in ["fc", "fi"] {
        let (status, body) = flow(
            &public[0],
            app,
            "signup",
            json!({"email": "zed@example.org", "password": password}),
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (403, "signup_closed"),
            "{app}: {body}"
        );
    }

    // verify_email: sign-up through node 1 mails a link; login before it
    // is followed is refused (only with the right password); the link,
    // followed through node 2, works once; login through node 3 then works.
    let (status, fresh) = flow(
        &public[0],
        "fa",
        "signup",
        json!({"email": "bea@example.org", "password": password}),
    )
    .await;
    assert_eq!(status, 201, "{fresh}");
    assert!(fresh.get("token").is_none(), "{fresh}");
    let (status, body) = flow(
        &public[2],
        "fa",
        "login",
        json!({"email": "bea@example.org", "password": password}),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "email_unverified"), "{body}");
    let (status, body) = flow(
        &public[2],
        "fa",
        "login",
        json!({"email": "bea@example.org", "password": "wrong horse battery"}),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (401, "invalid_credentials"),
        "{body}"
    );
    let (subject, text) = mail_to(&admins[1], "fa", "bea@example.org", "Confirm").await;
    assert!(subject.contains("fa"), "{subject}");
    assert!(
        text.contains(&nodes[0].url()),
        "the link points at the node: {text}"
    );
    let link = link_path(&text);
    let (status, verified) = public[1].get(&link).await;
    assert_eq!(
        (status, &verified["verified"]),
        (200, &json!(true)),
        "{verified}"
    );
    let (status, again) = public[2].get(&link).await;
    assert_eq!(
        (status, code(&again)),
        (400, "auth_token_invalid"),
        "{again}"
    );
    let (status, session) = flow(
        &public[2],
        "fa",
        "login",
        json!({"email": "bea@example.org", "password": password}),
    )
    .await;
    assert_eq!(
        (status, &session["user"]["verified"]),
        (200, &json!(true)),
        "{session}"
    );

    // A sign-up with a taken email answers exactly like a fresh one.
    let (status, taken) = flow(
        &public[0],
        "fa",
        "signup",
        json!({"email": "bea@example.org", "password": password}),
    )
    .await;
    assert_eq!(status, 201, "{taken}");
    assert_eq!(taken, fresh, "a taken email is not revealed");

    // request-reset answers the same for a known and an unknown email; only
    // the known one gets a mail. Both go through node 1, unknown first, so
    // once the known one's mail is there the unknown one was handled.
    let (status_unknown, unknown) = flow(
        &public[0],
        "fa",
        "request-reset",
        json!({"email": "nobody@example.org"}),
    )
    .await;
    let (status_known, known) = flow(
        &public[0],
        "fa",
        "request-reset",
        json!({"email": "bea@example.org"}),
    )
    .await;
    assert_eq!(
        (status_unknown, status_known),
        (202, 202),
        "{unknown} {known}"
    );
    assert_eq!(
        unknown["reset"], known["reset"],
        "the same answer: {unknown} {known}"
    );
    assert_eq!(
        unknown
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        known
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
    );
    let (subject, text) = mail_to(&admins[2], "fa", "bea@example.org", "Reset").await;
    assert!(subject.contains("Reset"), "{subject}");
    assert_eq!(mails_to(&admins[2], "fa", "nobody@example.org").await, 0);
    let reset_token = token_in(&text);

    // The reset token, presented through nodes 2 and 3 at once, works once.
    let new_password = "new horse battery staple";
    let attempt = |node: Api, token: String| async move {
        flow(
            &node,
            "fa",
            "reset",
            json!({"token": token, "password": new_password}),
        )
        .await
    };
    let (first, second) = tokio::join!(
        attempt(public[1].clone(), reset_token.clone()),
        attempt(public[2].clone(), reset_token.clone())
    );
    let mut statuses = [first.0, second.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{first:?} {second:?}");
    let refused = if first.0 == 400 { &first.1 } else { &second.1 };
    assert_eq!(code(refused), "auth_token_invalid", "{refused}");
    let (status, body) = flow(
        &public[0],
        "fa",
        "login",
        json!({"email": "bea@example.org", "password": password}),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (401, "invalid_credentials"),
        "{body}"
    );
    let (status, body) = flow(
        &public[0],
        "fa",
        "login",
        json!({"email": "bea@example.org", "password": new_password}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Invitations through the admin API, the CLI and a script; each mailed
    // with the app's template and accepted through another node.
    let (status, invited) = admins[0]
        .post_json(
            "/_/api/v1/apps/fi/users/invite",
            &json!({"email": "cat@example.org", "roles": ["editor"]}),
        )
        .await;
    assert_eq!(status, 201, "{invited}");
    let cli = nodes[1]
        .cli_with_key(
            &key,
            &[
                "users",
                "invite",
                "fi",
                "dan@example.org",
                "--role",
                "viewer",
            ],
        )
        .ok();
    assert!(cli.contains("invited dan@example.org"), "{cli}");
    let (status, scripted) = public[2]
        .post_json("/fi/invite", &json!({"email": "eve@example.org"}))
        .await;
    assert_eq!(status, 200, "{scripted}");
    let (status, twice) = admins[0]
        .post_json(
            "/_/api/v1/apps/fi/users/invite",
            &json!({"email": "ann@example.org"}),
        )
        .await;
    assert_eq!(status, 201, "ann has no account in fi: {twice}");
    for (index, (email, role)) in [
        ("cat@example.org", "editor"),
        ("dan@example.org", "viewer"),
        ("eve@example.org", "scripted"),
    ]
    .into_iter()
    .enumerate()
    {
        let (subject, text) = mail_to(&admins[index], "fi", email, "Join").await;
        assert_eq!(subject, "Join fi now");
        assert!(
            text.starts_with(&format!("Hello {email}, accept here: http")),
            "{text}"
        );
        let token = token_in(&text);
        let through = &public[(index + 1) % 3];
        let (status, session) = flow(
            through,
            "fi",
            "accept-invite",
            json!({"token": token, "password": password}),
        )
        .await;
        assert_eq!(status, 201, "{email}: {session}");
        assert_eq!(session["user"]["email"], email);
        assert_eq!(session["user"]["verified"], true);
        assert_eq!(session["user"]["roles"], json!([role]));
        let token_text = session["token"].as_str().expect("session token");
        let (status, user) = me(&public[index], "fi", token_text).await;
        assert_eq!((status, &user["email"]), (200, &json!(email)), "{user}");
        let (status, again) = flow(
            through,
            "fi",
            "accept-invite",
            json!({"token": token, "password": password}),
        )
        .await;
        assert_eq!(
            (status, code(&again)),
            (400, "auth_token_invalid"),
            "{again}"
        );
    }
    let (status, body) = admins[0]
        .post_json(
            "/_/api/v1/apps/fi/users/invite",
            &json!({"email": "cat@example.org"}),
        )
        .await;
    assert_eq!((status, code(&body)), (409, "email_taken"), "{body}");

    // Bad input: an unknown flow, a missing bearer, a body over the bound,
    // an unknown app, a weak password.
    let (status, body) = flow(&public[0], "fo", "teleport", json!({})).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = public[0].get("/_/auth/fo/me").await;
    assert_eq!((status, code(&body)), (401, "session_invalid"), "{body}");
    let huge = json!({"email": "x@example.org", "password": "p".repeat(64 * 1024)});
    let (status, body) = flow(&public[0], "fo", "signup", huge).await;
    assert_eq!((status, code(&body)), (413, "body_too_large"), "{body}");
    let (status, body) = flow(&public[0], "nope", "login", json!({})).await;
    assert_eq!((status, code(&body)), (404, "app_not_found"), "{body}");
    let (status, body) = flow(
        &public[0],
        "fo",
        "signup",
        json!({"email": "weak@example.org", "password": "password"}),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "password_weak"), "{body}");
}

/// `POST` returning the status, the `Retry-After` header and the body.
async fn post_with_headers(base: &str, path: &str, body: &Value) -> (u16, Option<u64>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("json"))
        .send()
        .await
        .expect("HTTP request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, retry_after, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_lockout_request_limits_and_expiry() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = [
        "--auth-login-failures-max",
        "3",
        "--auth-lockout-ms",
        "3000",
        "--auth-ip-requests-max",
        "4",
        "--auth-reset-ttl-ms",
        "1500",
    ]
    .map(str::to_string)
    .to_vec();
    node.start().await;
    let admin = api(&node, &node.admin_key());
    deploy(&admin, "fo", &[("picloud.toml", OPEN)]).await;
    let public = admin.with_key(None);
    let password = "correct horse battery";
    let (status, body) = flow(
        &public,
        "fo",
        "signup",
        json!({"email": "ann@example.org", "password": password}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let base = node.url();

    // Three failures, then even the right password is refused with 429 and
    // a Retry-After within the lockout; once it is over, the login works.
    for _ in 0..3 {
        let (status, _, body) = post_with_headers(
            &base,
            "/_/auth/fo/login",
            &json!({"email": "ann@example.org", "password": "wrong horse battery"}),
        )
        .await;
        assert_eq!(
            (status, code(&body)),
            (401, "invalid_credentials"),
            "{body}"
        );
    }
    let right = json!({"email": "ann@example.org", "password": password});
    let (status, retry_after, body) = post_with_headers(&base, "/_/auth/fo/login", &right).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    assert!(
        retry_after.is_some_and(|secs| (1..=3).contains(&secs)),
        "Retry-After {retry_after:?}"
    );
    let started = tokio::time::Instant::now();
    eventually("the lockout ends", || {
        let (base, right) = (base.clone(), right.clone());
        async move {
            let (status, _, _) = post_with_headers(&base, "/_/auth/fo/login", &right).await;
            assert!(status == 200 || status == 429, "{status}");
            status == 200
        }
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "the lockout lasted {:?}",
        started.elapsed()
    );

    // An expired reset link is refused. (The sign-up above used one of the
    // address's four requests; this is the second.)
    let (status, _, _) = post_with_headers(
        &base,
        "/_/auth/fo/request-reset",
        &json!({"email": "ann@example.org"}),
    )
    .await;
    assert_eq!(status, 202);
    let (_, text) = mail_to(&admin, "fo", "ann@example.org", "Reset").await;
    let token = token_in(&text);
    // Waiting for time itself to pass (the link's 1.5 s lifetime).
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let (status, body) = flow(
        &public,
        "fo",
        "reset",
        json!({"token": token, "password": "new horse battery staple"}),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "auth_token_invalid"), "{body}");

    // Requests three and four pass; the fifth from this address is limited
    // (whether or not the email exists).
    for email in ["ann@example.org", "nobody@example.org"] {
        let (status, _, body) =
            post_with_headers(&base, "/_/auth/fo/request-reset", &json!({"email": email})).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, retry_after, body) = post_with_headers(
        &base,
        "/_/auth/fo/request-reset",
        &json!({"email": "nobody@example.org"}),
    )
    .await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    assert!(retry_after.is_some(), "Retry-After");
}
