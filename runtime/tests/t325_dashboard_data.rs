//! Issue 16: the dashboard's data browsers (kv, documents, files,
//! secrets, users, members) against a real node, as a scenario table of
//! raw HTTP requests: every bad input is its stable code on the error page
//! (`invalid_key`, `invalid_json`, `invalid_secret_name`, `empty_secret`,
//! `invalid_role`, `bad_body`, `key_not_found`, `user_not_found`), a
//! read-only key sees no write form and its posted forms are 403
//! `forbidden`, secrets are admin-only, and a secret's value never comes
//! back in a page. `clients/typescript/test/dashboard-data.test.mjs`
//! drives the same pages in Chromium.

mod common;

use common::{TestNode, install_crypto};
use serde_json::json;
use sha2::{Digest, Sha256};

const SECRET_VALUE: &str = "hunter2-never-in-a-page";

/// `session.rs`'s CSRF derivation, written out again.
fn csrf(credential: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"picloud-dashboard-csrf\0");
    hash.update(credential.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

struct Row {
    what: &'static str,
    method: &'static str,
    path: String,
    cookie: String,
    form: Vec<(&'static str, String)>,
    status: u16,
    expect: &'static str,
    absent: &'static str,
}

fn get(what: &'static str, path: &str, cookie: &str) -> Row {
    Row {
        what,
        method: "GET",
        path: path.to_string(),
        cookie: cookie.to_string(),
        form: Vec::new(),
        status: 200,
        expect: "",
        absent: "\u{0}",
    }
}

fn post(what: &'static str, path: &str, cookie: &str, fields: &[(&'static str, &str)]) -> Row {
    Row {
        method: "POST",
        form: fields.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        ..get(what, path, cookie)
    }
}

impl Row {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_browsers_check_what_they_are_given() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let api = node.client();
    let (status, body) = api
        .post_json("/_/api/v1/apps", &json!({"name": "shop"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .post_json("/_/api/v1/keys", &json!({"scope": "read:shop"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let reader = body["key"].as_str().expect("key").to_string();
    let admin = node.admin_key();
    let (admin, reader) = (admin.as_str(), reader.as_str());
    let long_key = format!("/_/dashboard/apps/shop/kv/show?key={}", "k".repeat(513));
    let kv = "/_/dashboard/apps/shop/kv";
    // Bigger than other forms (16 KiB), within kv_value_bytes_max.
    let big_value = format!("\"{}\"", "x".repeat(100_000));
    let rows = vec![
        get("an admin sees the add form", kv, admin).answers(200, "Save key"),
        get("a read key sees no write form", kv, reader)
            .answers(200, "Key prefix")
            .without("method=\"post\" action=\"/_/dashboard/apps/shop/kv"),
        post(
            "an empty key",
            &format!("{kv}/set"),
            admin,
            &[("key", ""), ("value", "1")],
        )
        .answers(400, "invalid_key"),
        post(
            "a value that is no JSON",
            &format!("{kv}/set"),
            admin,
            &[("key", "a/b"), ("value", "{nope")],
        )
        .answers(400, "invalid_json"),
        post(
            "a key set",
            &format!("{kv}/set"),
            admin,
            &[("key", "a/b"), ("value", "{\"x\": 41}")],
        )
        .answers(
            303,
            "/_/dashboard/apps/shop/kv/show?key=a%2Fb&flash=kv-saved",
        ),
        post(
            "a value bigger than a plain form",
            &format!("{kv}/set"),
            admin,
            &[("key", "big"), ("value", &big_value)],
        )
        .answers(303, "flash=kv-saved"),
        get("the key shown", &format!("{kv}/show?key=a%2Fb"), reader).answers(200, "41"),
        get("a key too long", &long_key, admin).answers(400, "invalid_key"),
        get("a missing key", &format!("{kv}/show?key=nope"), admin).answers(404, "key_not_found"),
        post(
            "a read key may not set",
            &format!("{kv}/set"),
            reader,
            &[("key", "a/b"), ("value", "1")],
        )
        .answers(403, "<code>forbidden</code>"),
        get(
            "a read key gets no delete page",
            &format!("{kv}/delete?key=a%2Fb"),
            reader,
        )
        .answers(403, "forbidden"),
        post(
            "a key deleted",
            &format!("{kv}/delete"),
            admin,
            &[("key", "a/b")],
        )
        .answers(303, "kv?flash=kv-deleted"),
        get(
            "a query that is no JSON",
            "/_/dashboard/apps/shop/docs?collection=orders&query=%7Bnope",
            admin,
        )
        .answers(400, "invalid_json"),
        get(
            "a query's explain",
            "/_/dashboard/apps/shop/docs?collection=orders&query=%7B%7D",
            reader,
        )
        .answers(200, "collection_scan"),
        get(
            "secrets are for admins",
            "/_/dashboard/apps/shop/secrets",
            reader,
        )
        .answers(403, "forbidden"),
        post(
            "a bad secret name",
            "/_/dashboard/apps/shop/secrets",
            admin,
            &[("name", "bad name"), ("value", "x")],
        )
        .answers(400, "invalid_secret_name"),
        post(
            "an empty secret",
            "/_/dashboard/apps/shop/secrets",
            admin,
            &[("name", "TOKEN"), ("value", "")],
        )
        .answers(400, "empty_secret"),
        post(
            "a read key may not set a secret",
            "/_/dashboard/apps/shop/secrets",
            reader,
            &[("name", "TOKEN"), ("value", "x")],
        )
        .answers(403, "forbidden"),
        post(
            "a secret set",
            "/_/dashboard/apps/shop/secrets",
            admin,
            &[("name", "TOKEN"), ("value", SECRET_VALUE)],
        )
        .answers(303, "secrets?flash=secret-set"),
        get(
            "its name, not its value",
            "/_/dashboard/apps/shop/secrets",
            admin,
        )
        .answers(200, "data-secret=\"TOKEN\"")
        .without(SECRET_VALUE),
        post(
            "an unknown role",
            "/_/dashboard/apps/shop/members/set",
            admin,
            &[("email", "a@example.org"), ("role", "boss")],
        )
        .answers(400, "invalid_role"),
        post(
            "a read key may not add members",
            "/_/dashboard/apps/shop/members/set",
            reader,
            &[("email", "a@example.org"), ("role", "owner")],
        )
        .answers(403, "forbidden"),
        get(
            "a read key sees no upload form",
            "/_/dashboard/apps/shop/files",
            reader,
        )
        .answers(200, "Path prefix")
        .without("multipart/form-data"),
        post(
            "an upload that is no multipart form",
            "/_/dashboard/apps/shop/files/upload",
            admin,
            &[("path", "a.txt")],
        )
        .answers(400, "bad_body"),
        post(
            "roles of an unknown user",
            "/_/dashboard/apps/shop/users/roles",
            admin,
            &[("id", "nope"), ("add", "x")],
        )
        .answers(404, "user_not_found"),
        post(
            "a read key may not invite",
            "/_/dashboard/apps/shop/users/invite",
            reader,
            &[("email", "a@example.org")],
        )
        .answers(403, "forbidden"),
        get("an unknown app's kv", "/_/dashboard/apps/nope/kv", admin)
            .answers(404, "app_not_found"),
    ];
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = node.url();
    for row in rows {
        let mut request = http
            .request(
                reqwest::Method::from_bytes(row.method.as_bytes()).expect("method"),
                format!("{base}{}", row.path),
            )
            .header("cookie", format!("picloud_session={}", row.cookie));
        if row.method == "POST" {
            let mut form = row.form.clone();
            form.push(("csrf", csrf(&row.cookie)));
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string(&form).expect("form"));
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
    // What the table changed, seen through the admin API.
    let (status, body) = api.get("/_/api/v1/apps/shop/kv/a/b").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.get("/_/api/v1/apps/shop/secrets").await;
    assert_eq!(
        (status, body["secrets"][0]["name"].as_str()),
        (200, Some("TOKEN")),
        "{body}"
    );
}
