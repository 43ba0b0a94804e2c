//! Every example under `examples/` deploys through the CLI and answers.
//! `examples/libs/` holds the shared libraries the examples pin; they are
//! published first.

mod common;

use common::cluster::eventually;
use common::{Api, TestNode, examples_dir, install_crypto};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_deploys_and_answers() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let slug = examples_dir().join("libs/slug");
    let out = node
        .cli(&["libs", "publish", "slug", slug.to_str().expect("utf-8")])
        .ok();
    assert!(out.contains("slug"), "{out}");
    let mut deployed = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.join("picloud.toml").exists() {
            let out = node.cli(&["deploy", path.to_str().expect("utf-8")]).ok();
            assert!(out.contains("version 1"), "{}: {out}", path.display());
            deployed.push(
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    deployed.sort();
    assert_eq!(
        deployed,
        ["hello", "links", "notes", "orders", "todo", "vault"],
        "a new example needs a check below"
    );

    let api = node.client().with_key(None);
    assert_eq!(
        api.get("/hello/plain").await,
        (200, Value::String("hello".into()))
    );
    assert_eq!(
        api.get("/hello/greet/pi").await,
        (200, json!({"hello": "pi", "count": 1}))
    );
    assert_eq!(
        api.get("/hello/greet/zero").await,
        (200, json!({"hello": "zero", "count": 2}))
    );

    // todo: create 25, page through them 10 at a time with the cursor, update, delete.
    for n in 0..25 {
        let (status, body) = api
            .post_json("/todo/todos", &json!({"title": format!("task {n}")}))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["done"], false);
    }
    let (status, body) = api.post_json("/todo/todos", &json!({"title": ""})).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_todo"))
    );
    let mut titles = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/todo/todos?limit=10&cursor={}", c.replace('/', "%2F")),
            None => "/todo/todos?limit=10".to_string(),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for todo in page["todos"].as_array().expect("todos") {
            titles.push(todo["title"].as_str().expect("title").to_string());
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|n| format!("task {n}")).collect();
    assert_eq!(
        titles, expected,
        "creation order, nothing missing or repeated"
    );

    let (status, body) = api
        .call(
            "PATCH",
            "/todo/todos/00000003",
            Some(br#"{"done":true}"#.to_vec()),
        )
        .await;
    assert_eq!((status, body["done"].clone()), (200, json!(true)), "{body}");
    assert_eq!(api.get("/todo/todos/00000003").await.1["done"], true);
    let (status, _) = api.call("DELETE", "/todo/todos/00000003", None).await;
    assert_eq!(status, 200);
    let (status, body) = api.get("/todo/todos/00000003").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("todo_not_found"))
    );
    let (status, body) = api.get("/todo/todos?limit=1000").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_limit"))
    );

    notes(&api).await;
    orders(&api).await;
    vault(&node, &api).await;
    links(&api).await;
}

/// notes: documents found by tag through the index.
async fn notes(api: &Api) {
    for (text, tag) in [
        ("buy milk", "home"),
        ("ship v2", "work"),
        ("review", "work"),
    ] {
        let (status, body) = api
            .post_json("/notes/notes", &json!({"text": text, "tag": tag}))
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(body["id"].is_string(), "{body}");
    }
    assert_eq!(
        api.get("/notes/notes/tag/work").await,
        (
            200,
            json!({"notes": ["ship v2", "review"], "plan": "index"})
        )
    );
    let (status, body) = api.post_json("/notes/notes", &json!({"text": 1})).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_note"))
    );
}

/// orders: a good order gets a receipt from its trigger; a bad one fails
/// twice, is dead-lettered, and the dead_letter trigger records an alert.
async fn orders(api: &Api) {
    let put = |id: &str, qty: Value| {
        let api = api.clone();
        let path = format!("/orders/orders/{id}");
        async move {
            api.call(
                "PUT",
                &path,
                Some(serde_json::to_vec(&json!({"qty": qty})).expect("json")),
            )
            .await
        }
    };
    assert_eq!(put("1", json!(3)).await.0, 202);
    assert_eq!(put("2", json!(0)).await.0, 202);
    eventually("order 1's receipt", || async {
        api.get("/orders/orders/1").await.1["receipt"]["qty"] == json!(3)
    })
    .await;
    eventually("order 2's alert", || async {
        api.get("/orders/alerts").await.1["alerts"]
            .as_array()
            .is_some_and(|alerts| !alerts.is_empty())
    })
    .await;
    let (_, alerts) = api.get("/orders/alerts").await;
    let alert = &alerts["alerts"][0];
    assert_eq!(alert["trigger"], "fulfil", "{alerts}");
    assert!(
        alert["error"]
            .as_str()
            .unwrap_or_default()
            .contains("orders/2: qty must be a positive integer"),
        "{alerts}"
    );
    assert_eq!(api.get("/orders/orders/2").await.1["receipt"], Value::Null);
}

/// vault: the route answers 503 until the secret is set, then checks the
/// caller's bearer token against it.
async fn vault(node: &TestNode, api: &Api) {
    let (status, body) = api.get("/vault/private").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("not_configured"))
    );
    let admin = node.client();
    let response = admin
        .http
        .put(format!(
            "{}/_/api/v1/apps/vault/secrets/API_TOKEN",
            node.url()
        ))
        .bearer_auth(admin.key.as_deref().unwrap_or_default())
        .header("content-type", "application/octet-stream")
        .body("s3cret-token")
        .send()
        .await
        .expect("set the secret");
    assert!(response.status().is_success(), "{}", response.status());
    let call = |token: &'static str| {
        let http = api.http.clone();
        let url = format!("{}/vault/private", node.url());
        async move {
            let response = http
                .get(url)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .expect("call");
            response.status().as_u16()
        }
    };
    assert_eq!(call("wrong").await, 401);
    assert_eq!(call("s3cret-token").await, 200);
}

/// links: an app module on a pinned shared library, and a public/ page.
async fn links(api: &Api) {
    let (status, body) = api
        .post_json(
            "/links/links",
            &json!({"title": "Hello, PiCloud!", "url": "https://example.org"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["slug"], "hello-picloud");
    let (_, list) = api.get("/links/links").await;
    assert_eq!(list["links"][0]["slug"], "hello-picloud", "{list}");
    let (status, page) = api.get("/links/").await;
    assert_eq!(status, 200);
    assert!(
        page.as_str().unwrap_or_default().contains("<h1>links</h1>"),
        "{page}"
    );
}
