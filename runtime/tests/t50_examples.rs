//! Every example under `examples/` deploys through the CLI and answers.

mod common;

use common::{TestNode, examples_dir, install_crypto};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_deploys_and_answers() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
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
        ["hello", "todo"],
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
}
