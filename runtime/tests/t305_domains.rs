//! Issue 16: apps on their own domains and trusted proxies, against real
//! nodes. Two apps declare domains; requests whose `Host` is one of them
//! reach that app at `/`, on the node that took the deploy and on a second
//! node; `/_/health` answers on a domain host; a third app claiming a taken
//! domain is refused (409 `domain_taken`); the apps list shows domains. A
//! node started with `--trusted-proxies 127.0.0.1` counts failed logins
//! under the `X-Forwarded-For` address; one without the flag counts them
//! under 127.0.0.1, whatever the header says.

mod common;

use common::cluster::eventually;
use common::{TestNode, install_crypto};
use serde_json::{Value, json};

/// Failed logins from one address before it is locked out (small, so the
/// test reaches the lockout in a few requests).
const IP_FAILURES_MAX: &str = "2";

fn app_files(app: &str, domains: &str) -> Vec<(String, String)> {
    let manifest = format!(
        "name = \"{app}\"\ndomains = [{domains}]\n[[route]]\nmethod = \"GET\"\npath = \"/\"\nscript = \"root.lua\"\n"
    );
    let script = format!(
        "return function(req) return {{ status = 200, json = {{ app = \"{app}\", path = req.path }} }} end\n"
    );
    vec![
        ("picloud.toml".to_string(), manifest),
        ("root.lua".to_string(), script),
    ]
}

/// `GET path` with `Host: host` (and maybe `X-Forwarded-For`): (status, JSON).
async fn get_as(base: &str, host: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("host", host)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A failed operator login from `forwarded_for` (as `X-Forwarded-For`).
async fn bad_login(base: &str, forwarded_for: &str, attempt: usize) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/_/api/v1/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({
            "email": format!("guess{attempt}@example.org"),
            "password": "wrong-password-1",
        }))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_served_on_their_domains_and_proxies_are_trusted_only_when_configured() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["n1", "n2"] {
        std::fs::create_dir_all(dir.path().join(name)).expect("node dir");
    }
    let mut first = TestNode::new(&dir.path().join("n1"));
    first.extra_args = vec![
        "--trusted-proxies".into(),
        "127.0.0.1".into(),
        "--auth-ip-failures-max".into(),
        IP_FAILURES_MAX.into(),
    ];
    first.start().await;
    let api = first.client();
    let token = first.cli(&["cluster", "token"]).ok().trim().to_string();
    let mut second = TestNode::new(&dir.path().join("n2"));
    second.extra_args = vec![
        "--join".into(),
        first.peer_addr(),
        "--join-token".into(),
        token,
        "--auth-ip-failures-max".into(),
        IP_FAILURES_MAX.into(),
    ];
    second.start().await;

    for (app, domains) in [
        ("shop", "\"Shop.Example.org\""),
        ("blog", "\"blog.example.org\", \"www.blog.example.org\""),
    ] {
        let files = app_files(app, domains);
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        let (status, body) = api.deploy(app, &refs).await;
        assert_eq!(status, 200, "deploying {app}: {body}");
    }

    // Each domain reaches its app at `/`, the port and case ignored, on
    // both nodes (the second once it has applied the deploys).
    for node in [&first, &second] {
        let base = node.url();
        for (host, app) in [
            ("shop.example.org", "shop"),
            ("SHOP.example.org:8443", "shop"),
            ("blog.example.org", "blog"),
            ("www.blog.example.org", "blog"),
        ] {
            let base = base.clone();
            eventually(&format!("{host} serves {app} on {base}"), || {
                let base = base.clone();
                async move {
                    let (status, body) = get_as(&base, host, "/").await;
                    status == 200 && body["app"] == app && body["path"] == "/"
                }
            })
            .await;
        }
        // System paths work on a domain host; an unknown host is as before.
        let (status, _) = get_as(&base, "shop.example.org", "/_/health").await;
        assert_eq!(status, 200, "health on a domain host");
        let (status, body) = get_as(&base, "elsewhere.example.org", "/shop/").await;
        assert_eq!((status, &body["app"]), (200, &json!("shop")), "{body}");
    }

    // A third app claiming a taken domain is refused.
    let files = app_files("thief", "\"blog.example.org\"");
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let (status, body) = api.deploy("thief", &refs).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("domain_taken")),
        "{body}"
    );
    let (status, body) = get_as(&first.url(), "blog.example.org", "/").await;
    assert_eq!((status, &body["app"]), (200, &json!("blog")));

    // The apps list shows each app's domains.
    let (status, list) = api.get("/_/api/v1/apps").await;
    assert_eq!(status, 200, "{list}");
    let shop = list["apps"]
        .as_array()
        .and_then(|apps| apps.iter().find(|app| app["name"] == "shop"))
        .expect("shop listed");
    assert_eq!(shop["domains"], json!(["shop.example.org"]));
    let listed = first.cli(&["apps", "list"]).ok();
    assert!(
        listed
            .lines()
            .any(|line| line == "blog\tv1\tblog.example.org,www.blog.example.org"),
        "{listed}"
    );

    // Trusted proxy: failures are counted per forwarded address, so one
    // client's lockout leaves another's logins alone.
    let base = first.url();
    for attempt in 0..2 {
        let (status, body) = bad_login(&base, "203.0.113.1", attempt).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = bad_login(&base, "203.0.113.1", 2).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    let (status, body) = bad_login(&base, "198.51.100.9, 203.0.113.2", 3).await;
    assert_eq!(
        status, 401,
        "another forwarded client is not locked out: {body}"
    );

    // No trusted proxy: the header is not believed, every request counts
    // under 127.0.0.1, and the second "client" is locked out too.
    let base = second.url();
    for attempt in 10..12 {
        let (status, body) = bad_login(&base, "203.0.113.1", attempt).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = bad_login(&base, "203.0.113.2", 12).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
}
