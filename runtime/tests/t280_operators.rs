//! Issue 15: operators against a real node. Every row of the scope matrix
//! (`admin/routes.rs`, the table the gateway enforces) is called by an
//! admin operator, an owner, a developer and a viewer of one app, an
//! operator with no membership, and a `read:` key, on their own app and on
//! another: the answer is 403 `forbidden` exactly when the role may not,
//! and never 401/403 otherwise. Plus: setup tokens are single use and
//! expire; `picloud login --email`, a CLI command as that operator,
//! `picloud logout`; a removed operator's session ends; an app keeps its
//! last owner; the operator who creates an app owns it.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Api, CliOutput, TestNode, install_crypto, manifest};
use serde_json::json;

// The table the gateway enforces, mounted so this test walks the very same
// rows (the binary crate has no library to import it from).
#[allow(dead_code)]
#[path = "../src/gateway/admin/routes.rs"]
mod routes;

use routes::{Mount, Need, ROUTES};

const PASSWORD: &str = "a long operator passphrase 42";
const OWN: &str = "own";
const OTHER: &str = "other";
/// Setup tokens' lifetime on the test node: long enough for an add and a
/// setup on a busy machine, short enough to wait out once.
const SETUP_TTL_MS: u64 = 8_000;

/// Who calls, and what the spec says each may do in its own app (the
/// other app grants nothing but to the admin).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    AdminOperator,
    Owner,
    Developer,
    Viewer,
    NoMembership,
    ReadKey,
}

const EVERYONE: [Who; 6] = [
    Who::AdminOperator,
    Who::Owner,
    Who::Developer,
    Who::Viewer,
    Who::NoMembership,
    Who::ReadKey,
];

/// The spec, restated on its own (not the gateway's rule): developer =
/// what a `deploy:` key may do, viewer = `read:`, owner = developer +
/// members + delete; cluster-wide routes need an admin.
fn may(who: Who, need: Need, own_app: bool) -> bool {
    let admin = who == Who::AdminOperator;
    let (read, write, owner) = match (who, own_app) {
        (Who::AdminOperator, _) => (true, true, true),
        (_, false) => (false, false, false),
        (Who::Owner, true) => (true, true, true),
        (Who::Developer, true) => (true, true, false),
        (Who::Viewer | Who::ReadKey, true) => (true, false, false),
        (Who::NoMembership, true) => (false, false, false),
    };
    match need {
        Need::Public | Need::Caller => true,
        Need::Read => read,
        Need::Write => write,
        Need::Owner => owner,
        Need::Admin => admin,
    }
}

fn email(who: Who) -> String {
    format!("{who:?}@example.org").to_lowercase()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A concrete path for a row: placeholders filled, under `/_/api/v1` for
/// the admin router's rows.
fn concrete(path: &str, mount: Mount, app: &str) -> String {
    let path = path
        .replace("{app}", app)
        .replace("{email}", "nobody%40example.org")
        .replace("{*key}", "k")
        .replace("{*path}", "p.txt")
        .replace("{coll}", "c")
        .replace("{name}", "n")
        .replace("{id}", "x");
    match mount {
        Mount::Admin => format!("/_/api/v1{path}"),
        Mount::Outside => path,
    }
}

/// Adds an operator as `admin` and sets its password with the setup token;
/// the token's second use fails. Returns the session token of a login.
async fn operator(api: &Api, email: &str, admin: bool) -> String {
    let (status, added) = api
        .post_json("/_/api/v1/admins", &json!({"email": email, "admin": admin}))
        .await;
    assert_eq!(status, 201, "{added}");
    let token = added["setup_token"].as_str().expect("setup token");
    let public = api.with_key(None);
    let setup = json!({"token": token, "password": PASSWORD});
    let (status, body) = public.post_json("/_/api/v1/admins/setup", &setup).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = public.post_json("/_/api/v1/admins/setup", &setup).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("auth_token_invalid")),
        "a setup token works once: {body}"
    );
    login(api, email).await
}

async fn login(api: &Api, email: &str) -> String {
    let (status, body) = api
        .with_key(None)
        .post_json(
            "/_/api/v1/login",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    assert!(
        token.starts_with("pcs_"),
        "a session is told from a key: {token}"
    );
    token
}

/// One call of a row by `who` on `app`, checked against the spec.
async fn check(api: &Api, who: Who, method: &str, path: &str, need: Need, own: bool) {
    let body = matches!(method, "POST" | "PUT").then(|| b"{}".to_vec());
    let (status, answer) = api.call(method, path, body).await;
    let code = answer["error"]["code"].as_str().unwrap_or("");
    if may(who, need, own) {
        assert!(
            status != 403 && status != 401,
            "{who:?} {method} {path} ({need:?}) must pass the check: {status} {answer}"
        );
    } else {
        assert_eq!(status, 403, "{who:?} {method} {path} ({need:?}): {answer}");
        // A HEAD answer has no body to carry the code.
        if method != "HEAD" {
            assert_eq!(code, "forbidden", "{who:?} {method} {path}: {answer}");
        }
    }
}

/// The CLI with only the saved credentials at `credentials` (no key in
/// the environment), `stdin` piped in.
fn cli_saved(node: &TestNode, credentials: &str, args: &[&str], stdin: &[u8]) -> CliOutput {
    node.cli_stdin(None, Path::new(credentials), args, stdin)
}

/// A node whose setup tokens live [`SETUP_TTL_MS`].
async fn start_node(dir: &Path) -> TestNode {
    let mut node = TestNode::new(dir);
    node.extra_args = vec!["--operator-setup-ttl-ms".into(), SETUP_TTL_MS.to_string()];
    node.start().await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_roles_and_sessions() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let api = node.client();
    for app in [OWN, OTHER] {
        let (status, body) = api
            .post_json("/_/api/v1/apps", &json!({ "name": app }))
            .await;
        assert_eq!(status, 201, "{body}");
    }

    // The principals: five operators and a read key.
    let mut tokens = Vec::new();
    for who in EVERYONE {
        let token = match who {
            Who::ReadKey => {
                let (status, body) = api
                    .post_json("/_/api/v1/keys", &json!({ "scope": format!("read:{OWN}") }))
                    .await;
                assert_eq!(status, 201, "{body}");
                body["key"].as_str().expect("key").to_string()
            }
            _ => operator(&api, &email(who), who == Who::AdminOperator).await,
        };
        tokens.push((who, api.with_key(Some(&token))));
    }
    for (who, role) in [
        (Who::Owner, "owner"),
        (Who::Developer, "developer"),
        (Who::Viewer, "viewer"),
    ] {
        let path = format!("/_/api/v1/apps/{OWN}/members/{}", email(who));
        let body = serde_json::to_vec(&json!({ "role": role })).expect("json");
        let (status, answer) = api.call("PUT", &path, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
    }

    // The matrix. Deleting an app and logging out change what later calls
    // see: they run last, the refused calls of a row before the allowed.
    let destructive =
        |method: &str, path: &str| (method, path) == ("DELETE", "/apps/{app}") || path == "/logout";
    let mut rows: Vec<_> = ROUTES
        .iter()
        .filter(|row| !destructive(row.method, row.path))
        .collect();
    rows.extend(
        ROUTES
            .iter()
            .filter(|row| destructive(row.method, row.path) && row.path != "/logout"),
    );
    rows.extend(ROUTES.iter().filter(|row| row.path == "/logout"));
    let mut calls = 0;
    for row in rows {
        let apps: &[(&str, bool)] = if row.path.contains("{app}") {
            &[(OTHER, false), (OWN, true)]
        } else {
            &[(OWN, true)]
        };
        let mut plan = Vec::new();
        for (app, own) in apps {
            for (who, client) in &tokens {
                plan.push((may(*who, row.need, *own), *who, client, *app, *own));
            }
        }
        // Refused first, then allowed, the admin last (so an owner deletes
        // its app before the admin does; a stable sort keeps the rest).
        plan.sort_by_key(|(allowed, who, ..)| (*allowed, *who == Who::AdminOperator));
        for (_, who, client, app, own) in plan {
            let path = concrete(row.path, row.mount, app);
            check(client, who, row.method, &path, row.need, own).await;
            calls += 1;
        }
        if (row.method, row.path) == ("DELETE", "/apps/{app}") {
            // A `read:own` key is revoked with its app; it takes no part in
            // the rows after.
            let (who, key) = tokens.pop().expect("the read key");
            assert_eq!(who, Who::ReadKey);
            let (status, body) = key.get("/_/api/v1/whoami").await;
            assert_eq!(status, 401, "{body}");
        }
    }
    assert!(calls > 300, "{calls} calls");

    // After logout every operator's session is gone.
    for (who, client) in &tokens {
        let (status, body) = client.get("/_/api/v1/whoami").await;
        assert_eq!(status, 401, "{who:?}: {body}");
        assert_eq!(body["error"]["code"], "session_invalid");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_tokens_logins_cli_and_revocation() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let api = node.client();

    // An admin operator through the CLI: add prints a setup token, setup
    // sets the password from stdin, login --email saves the session.
    let out = node
        .cli(&["admins", "add", "boss@example.org", "--admin"])
        .ok();
    let token = out
        .lines()
        .find(|line| line.starts_with("pcsetup_"))
        .expect("setup token line")
        .to_string();
    let credentials = dir.path().join("boss.toml");
    let credentials = credentials.to_str().expect("path");
    cli_saved(
        &node,
        credentials,
        &["admins", "setup", &token],
        PASSWORD.as_bytes(),
    )
    .ok();
    let again = cli_saved(
        &node,
        credentials,
        &["admins", "setup", &token],
        PASSWORD.as_bytes(),
    );
    assert!(
        !again.success && again.stderr.contains("auth_token_invalid"),
        "{again:?}"
    );
    let wrong = cli_saved(
        &node,
        credentials,
        &["login", "--email", "boss@example.org"],
        b"not the password at all",
    );
    assert!(
        !wrong.success && wrong.stderr.contains("invalid_credentials"),
        "{wrong:?}"
    );
    let out = cli_saved(
        &node,
        credentials,
        &["login", "--email", "boss@example.org"],
        PASSWORD.as_bytes(),
    )
    .ok();
    assert!(out.contains("boss@example.org (admin)"), "{out}");
    let saved = std::fs::read_to_string(credentials).expect("credentials");
    assert!(saved.contains("pcs_"), "the session is saved like a key");

    // As that operator: create an app (the creator owns it) and list it.
    cli_saved(&node, credentials, &["apps", "create", "mine"], b"").ok();
    let members = cli_saved(&node, credentials, &["members", "list", "mine"], b"").ok();
    assert!(members.contains("boss@example.org\towner"), "{members}");
    let boss = login(&api, "boss@example.org").await;
    let boss_api = api.with_key(Some(&boss));
    let script = "return function() return {status = 200} end";
    let files = [
        ("picloud.toml", manifest("fresh", &[("GET", "/", "a.lua")])),
        ("a.lua", script.to_string()),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(path, text)| (*path, text.as_str()))
        .collect();
    let (status, body) = boss_api.deploy("fresh", &files).await;
    assert_eq!(status, 200, "{body}");
    let (_, members) = boss_api.get("/_/api/v1/apps/fresh/members").await;
    assert_eq!(
        members["members"][0]["role"], "owner",
        "a deploy that creates owns: {members}"
    );

    // A developer, added by the owner, may deploy-level things but not
    // manage members; the last owner can neither leave nor be removed.
    let dev = operator(&api, "dev@example.org", false).await;
    cli_saved(
        &node,
        credentials,
        &[
            "members",
            "add",
            "mine",
            "dev@example.org",
            "--role",
            "developer",
        ],
        b"",
    )
    .ok();
    let listed = cli_saved(&node, credentials, &["admins", "list"], b"").ok();
    assert!(
        listed.contains("dev@example.org\t-\tmine:developer"),
        "{listed}"
    );
    assert!(listed.contains("boss@example.org\tadmin\t"), "{listed}");
    let dev_api = api.with_key(Some(&dev));
    let (status, _) = dev_api.get("/_/api/v1/apps/mine").await;
    assert_eq!(status, 200);
    let last = cli_saved(
        &node,
        credentials,
        &["members", "remove", "mine", "boss@example.org"],
        b"",
    );
    assert!(
        !last.success && last.stderr.contains("last_owner"),
        "{last:?}"
    );
    let (status, body) = api
        .call("DELETE", "/_/api/v1/admins/boss%40example.org", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("last_owner")),
        "{body}"
    );

    // Removing an operator ends its session at once.
    cli_saved(
        &node,
        credentials,
        &["admins", "remove", "dev@example.org"],
        b"",
    )
    .ok();
    let (status, body) = dev_api.get("/_/api/v1/apps/mine").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("session_invalid"))
    );
    let (status, _) = api
        .with_key(None)
        .post_json(
            "/_/api/v1/login",
            &json!({"email": "dev@example.org", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 401, "a removed operator cannot log in");

    // Logout ends the saved session on the server and forgets it.
    let boss_token = std::fs::read_to_string(credentials)
        .expect("credentials")
        .lines()
        .find_map(|line| {
            line.strip_prefix("key = \"")
                .map(|rest| rest.trim_end_matches('"').to_string())
        })
        .expect("saved key");
    cli_saved(&node, credentials, &["logout"], b"").ok();
    let (status, _) = api
        .with_key(Some(&boss_token))
        .get("/_/api/v1/whoami")
        .await;
    assert_eq!(status, 401, "the session ended on the server");
    let after = cli_saved(&node, credentials, &["apps", "list"], b"");
    assert!(!after.success, "no credentials are left: {after:?}");

    // Operator logins share the end users' limits: after
    // auth_login_failures_max (5) wrong passwords the account is locked
    // out, even for the right one.
    let anon = api.with_key(None);
    for _ in 0..5 {
        let (status, body) = anon
            .post_json(
                "/_/api/v1/login",
                &json!({"email": "guessed@example.org", "password": "wrong-password-1"}),
            )
            .await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = anon
        .post_json(
            "/_/api/v1/login",
            &json!({"email": "guessed@example.org", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );

    // A setup token expires: wait out its lifetime, then it is refused.
    let (status, added) = api
        .post_json("/_/api/v1/admins", &json!({"email": "late@example.org"}))
        .await;
    assert_eq!(status, 201, "{added}");
    let expires_ms = added["expires_ms"].as_u64().expect("expires_ms");
    while now_ms() <= expires_ms + 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = api
        .with_key(None)
        .post_json(
            "/_/api/v1/admins/setup",
            &json!({"token": added["setup_token"], "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("auth_token_invalid")),
        "{body}"
    );
}
