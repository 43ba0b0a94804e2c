//! Issue 16: the dashboard's guards against a real node, as a scenario
//! table of raw HTTP requests (no browser: `clients/typescript/test/
//! dashboard.test.mjs` drives the pages in Chromium). No cookie or a bad
//! one is a redirect to login; a read-only key sees no write forms and its
//! posted forms are refused 403 `forbidden`; a POST without the CSRF token,
//! or with a wrong one, is 403 `csrf_failed`; the login forms need their
//! double-submit token; `next=` stays inside the dashboard; the session
//! cookie is `HttpOnly; SameSite=Strict; Path=/_/dashboard`, and `Secure`
//! only when a trusted proxy says the browser used https; assets carry
//! their content's version and a year's cache; bodies are bounded.

mod common;

use common::{TestNode, install_crypto};
use serde_json::json;
use sha2::{Digest, Sha256};

/// `session.rs`'s derivation, written out again: a form rendered by any node
/// carries this token.
fn csrf(credential: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"picloud-dashboard-csrf\0");
    hash.update(credential.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Copy)]
enum Token {
    Right,
    Wrong,
    Missing,
}

struct Row {
    what: &'static str,
    method: &'static str,
    path: String,
    /// The credential in `picloud_session`, if any.
    cookie: Option<String>,
    /// Form fields besides the CSRF token (a POST).
    form: Vec<(&'static str, String)>,
    token: Token,
    status: u16,
    /// Text the body (or the `Location`) must hold.
    expect: &'static str,
    /// Text the body must not hold.
    absent: &'static str,
}

fn row(what: &'static str, method: &'static str, path: &str, cookie: Option<&str>) -> Row {
    Row {
        what,
        method,
        path: path.to_string(),
        cookie: cookie.map(str::to_string),
        form: Vec::new(),
        token: Token::Right,
        status: 200,
        expect: "",
        absent: "\u{0}",
    }
}

impl Row {
    fn fields(mut self, fields: &[(&'static str, &str)]) -> Row {
        self.form = fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self
    }
    fn token(mut self, token: Token) -> Row {
        self.token = token;
        self
    }
    fn answers(mut self, status: u16, expect: &'static str) -> Row {
        self.status = status;
        self.expect = expect;
        self
    }
    fn without(mut self, absent: &'static str) -> Row {
        self.absent = absent;
        self
    }
}

/// A urlencoded form body (reqwest's `form` feature is not on).
trait Form {
    fn form_body<T: serde::Serialize + ?Sized>(self, fields: &T) -> Self;
}

impl Form for reqwest::RequestBuilder {
    fn form_body<T: serde::Serialize + ?Sized>(self, fields: &T) -> Self {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).expect("form"))
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_refuses_what_it_must() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = vec!["--trusted-proxies".into(), "127.0.0.1".into()];
    node.start().await;
    let api = node.client();
    let admin = node.admin_key();
    assert_eq!(
        api.post_json("/_/api/v1/apps", &json!({"name": "shop"}))
            .await
            .0,
        201
    );
    let (status, body) = api
        .post_json("/_/api/v1/keys", &json!({"scope": "read:shop"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let reader = body["key"].as_str().expect("key").to_string();
    let base = node.url();
    let http = no_redirects();

    let admin = Some(admin.as_str());
    let reader = Some(reader.as_str());
    let rows = vec![
        row(
            "no cookie: to login, next kept",
            "GET",
            "/_/dashboard/apps?x=1",
            None,
        )
        .answers(
            303,
            "/_/dashboard/login?next=%2F_%2Fdashboard%2Fapps%3Fx%3D1",
        ),
        row(
            "an unknown key: to login",
            "GET",
            "/_/dashboard/apps",
            Some("pck_nope_nope"),
        )
        .answers(303, "/_/dashboard/login?next="),
        row(
            "a cookie that is no credential: to login",
            "GET",
            "/_/dashboard/cluster",
            Some("a\"b"),
        )
        .answers(303, "/_/dashboard/login?next="),
        row("the root: to the apps", "GET", "/_/dashboard", None).answers(303, "/_/dashboard/apps"),
        row(
            "an admin key sees the create form",
            "GET",
            "/_/dashboard/apps",
            admin,
        )
        .answers(200, "Create app"),
        row(
            "a read key sees the app, no write forms",
            "GET",
            "/_/dashboard/apps",
            reader,
        )
        .answers(200, "data-app=\"shop\"")
        .without("/delete"),
        row(
            "a read key's overview has no delete",
            "GET",
            "/_/dashboard/apps/shop",
            reader,
        )
        .answers(200, "id=\"active-version\"")
        .without("Delete"),
        row(
            "a read key's cluster page has no token or removal",
            "GET",
            "/_/dashboard/cluster",
            reader,
        )
        .answers(200, "data-node=\"1\"")
        .without("Show join token"),
        row(
            "a malformed query",
            "GET",
            "/_/dashboard/apps?after=a&after=b",
            admin,
        )
        .answers(400, "invalid_query"),
        row("an unknown app", "GET", "/_/dashboard/apps/nope", admin).answers(404, "app_not_found"),
        row("an unknown page", "GET", "/_/dashboard/nowhere", admin)
            .answers(404, "<code>not_found</code>"),
        row("no CSRF token", "POST", "/_/dashboard/apps", admin)
            .fields(&[("name", "blog")])
            .token(Token::Missing)
            .answers(403, "csrf_failed"),
        row("a wrong CSRF token", "POST", "/_/dashboard/apps", admin)
            .fields(&[("name", "blog")])
            .token(Token::Wrong)
            .answers(403, "csrf_failed"),
        row("a POST with no cookie", "POST", "/_/dashboard/apps", None)
            .fields(&[("name", "blog")])
            .answers(403, "csrf_failed"),
        row(
            "a read key may not create",
            "POST",
            "/_/dashboard/apps",
            reader,
        )
        .fields(&[("name", "blog")])
        .answers(403, "<code>forbidden</code>"),
        row("a bad app name", "POST", "/_/dashboard/apps", admin)
            .fields(&[("name", "Bad Name!")])
            .answers(400, "invalid_app_name"),
        row(
            "a read key may not delete",
            "POST",
            "/_/dashboard/apps/shop/delete",
            reader,
        )
        .fields(&[("confirm", "shop")])
        .answers(403, "<code>forbidden</code>"),
        row(
            "a read key gets no confirm page",
            "GET",
            "/_/dashboard/apps/shop/delete",
            reader,
        )
        .answers(403, "forbidden"),
        row(
            "deleting needs the name typed",
            "POST",
            "/_/dashboard/apps/shop/delete",
            admin,
        )
        .fields(&[("confirm", "shoe")])
        .answers(400, "invalid_field"),
        row(
            "a read key may not see the join token",
            "POST",
            "/_/dashboard/cluster/token",
            reader,
        )
        .answers(403, "forbidden"),
        row(
            "a read key may not remove nodes",
            "GET",
            "/_/dashboard/cluster/nodes/1/remove",
            reader,
        )
        .answers(403, "forbidden"),
        row(
            "the leader cannot be removed",
            "POST",
            "/_/dashboard/cluster/nodes/1/remove",
            admin,
        )
        .answers(409, "is_leader"),
        row(
            "an admin shows the join token",
            "POST",
            "/_/dashboard/cluster/token",
            admin,
        )
        .answers(200, "id=\"join-token\""),
        row(
            "an admin creates an app",
            "POST",
            "/_/dashboard/apps",
            admin,
        )
        .fields(&[("name", "blog")])
        .answers(303, "/_/dashboard/apps/blog?flash=app-created"),
        row(
            "a login without its double-submit token",
            "POST",
            "/_/dashboard/login",
            None,
        )
        .fields(&[("email", "a@example.org"), ("password", "x")])
        .answers(403, "csrf_failed"),
        row(
            "a key login without its double-submit token",
            "POST",
            "/_/dashboard/login/key",
            None,
        )
        .fields(&[("key", "pck_x_y")])
        .answers(403, "csrf_failed"),
    ];
    for row in rows {
        let mut request = http.request(
            reqwest::Method::from_bytes(row.method.as_bytes()).expect("method"),
            format!("{base}{}", row.path),
        );
        if let Some(credential) = &row.cookie {
            request = request.header("cookie", format!("picloud_session={credential}"));
        }
        if row.method == "POST" {
            let mut form = row.form.clone();
            match row.token {
                Token::Right => form.push(("csrf", csrf(row.cookie.as_deref().unwrap_or("")))),
                Token::Wrong => form.push(("csrf", csrf("another credential"))),
                Token::Missing => {}
            }
            request = request.form_body(&form);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.text().await.expect("body");
        let seen = format!("{location}\n{body}");
        assert_eq!(status, row.status, "{}: {seen}", row.what);
        assert!(
            seen.contains(row.expect),
            "{}: no {:?} in {seen}",
            row.what,
            row.expect
        );
        assert!(
            !seen.contains(row.absent),
            "{}: {:?} in {seen}",
            row.what,
            row.absent
        );
    }
    assert_eq!(api.get("/_/api/v1/apps/blog").await.0, 200);
    assert_eq!(api.get("/_/api/v1/apps/shop").await.0, 200, "shop survived");

    // Logging in with a key: the login page's double-submit cookie, then the
    // session cookie's attributes, Secure only behind a proxy saying https.
    let page = http
        .get(format!("{base}/_/dashboard/login"))
        .send()
        .await
        .expect("login page");
    let login_cookie = page
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .expect("login csrf cookie")
        .to_string();
    assert!(
        login_cookie.contains("HttpOnly; SameSite=Strict; Path=/_/dashboard"),
        "{login_cookie}"
    );
    let nonce = login_cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(_, value)| value.to_string())
        .expect("nonce");
    let html = page.text().await.expect("page");
    let key = node.admin_key();
    for (proto, secure) in [(None, false), (Some("https"), true), (Some("http"), false)] {
        let mut request = http
            .post(format!("{base}/_/dashboard/login/key"))
            .header("cookie", format!("picloud_login_csrf={nonce}"))
            .form_body(&[
                ("csrf", nonce.as_str()),
                ("key", key.as_str()),
                ("next", "https://evil.example/_/dashboard/apps"),
            ]);
        if let Some(proto) = proto {
            request = request.header("x-forwarded-proto", proto);
        }
        let response = request.send().await.expect("key login");
        assert_eq!(response.status().as_u16(), 303);
        assert_eq!(
            response.headers()["location"],
            "/_/dashboard/apps",
            "next stays local"
        );
        let cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_string))
            .collect();
        let session = cookies
            .iter()
            .find(|cookie| cookie.starts_with("picloud_session="))
            .expect("session cookie");
        let expected = format!(
            "picloud_session={key}; HttpOnly; SameSite=Strict; Path=/_/dashboard{}",
            if secure { "; Secure" } else { "" }
        );
        assert_eq!(session, &expected, "X-Forwarded-Proto {proto:?}");
    }
    let wrong = http
        .post(format!("{base}/_/dashboard/login/key"))
        .header("cookie", format!("picloud_login_csrf={nonce}"))
        .form_body(&[("csrf", nonce.as_str()), ("key", "pck_wrong_key")])
        .send()
        .await
        .expect("wrong key");
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await.expect("body").contains("unauthorized"));

    // Assets: the page names them by version; they are cached for a year.
    let version = html
        .split("/_/dashboard/assets/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("asset version")
        .to_string();
    let css = http
        .get(format!("{base}/_/dashboard/assets/{version}/dashboard.css"))
        .send()
        .await
        .expect("css");
    assert_eq!(css.status().as_u16(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(
        css.headers()["cache-control"]
            .to_str()
            .expect("cc")
            .contains("immutable")
    );
    let stale = http
        .get(format!(
            "{base}/_/dashboard/assets/000000000000/dashboard.css"
        ))
        .send()
        .await
        .expect("stale css");
    assert_eq!(stale.status().as_u16(), 404);

    // A form body past FORM_BYTES_MAX (16 KiB) is refused, not parsed.
    let big = "x".repeat(17 * 1024);
    let response = http
        .post(format!("{base}/_/dashboard/apps"))
        .header("cookie", format!("picloud_session={key}"))
        .form_body(&[("csrf", csrf(&key).as_str()), ("name", big.as_str())])
        .send()
        .await
        .expect("big form");
    assert_eq!(response.status().as_u16(), 413);
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("body_too_large")
    );
}
