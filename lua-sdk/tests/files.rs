//! The `files` global: what scripts pass reaches the host checked, and what
//! the host answers comes back as the documented tables. Driven through
//! `Vm` with the in-memory host.

mod common;

use common::*;
use picloud_lua_sdk::{Code, FileUrlOptions, HostError, UrlMethod};
use serde_json::{Value, json};

async fn json_of(host: &std::sync::Arc<FakeHost>, body: &str) -> Value {
    let script = vm(host, &returning(body));
    let response = call(&script).await.expect("invoke");
    serde_json::from_slice(&response.body).expect("json")
}

#[tokio::test]
async fn put_get_stat_delete_round_trip_with_binary_data() {
    let host = FakeHost::new();
    let parsed = json_of(
        &host,
        r#"local data = "\0\1\2 bytes \255"
           local put = files.put("photos/cat.png", data, { content_type = "image/png" })
           local got = files.get("photos/cat.png")
           local stat = files.stat("photos/cat.png")
           return { json = {
             put = put,
             same = got.data == data,
             got_size = got.size, got_type = got.content_type, got_etag = got.etag,
             stat = stat,
             deleted = files.delete("photos/cat.png"),
             again = files.delete("photos/cat.png"),
             gone = files.get("photos/cat.png") == nil and files.stat("photos/cat.png") == nil,
           } }"#,
    )
    .await;
    let stat = json!({
        "path": "photos/cat.png",
        "size": 11,
        "content_type": "image/png",
        "etag": "\"11\"",
        "updated_ms": 1_700_000_000_123u64,
    });
    assert_eq!(parsed["put"], stat);
    assert_eq!(parsed["stat"], stat);
    assert_eq!(parsed["same"], true);
    assert_eq!(
        (
            &parsed["got_size"],
            &parsed["got_type"],
            &parsed["got_etag"]
        ),
        (&json!(11), &json!("image/png"), &json!("\"11\""))
    );
    assert_eq!(
        (&parsed["deleted"], &parsed["again"], &parsed["gone"]),
        (&json!(true), &json!(false), &json!(true))
    );
    // Without options the host picks the content type.
    json_of(&host, r#"files.put("a.bin", "x") return { json = {} }"#).await;
    let stored = host.files.lock().expect("lock");
    assert_eq!(
        stored[&format!("{APP}/a.bin")].0.content_type,
        "application/octet-stream"
    );
}

#[tokio::test]
async fn list_pages_through_a_prefix_with_the_cursor() {
    let host = FakeHost::new();
    let parsed = json_of(
        &host,
        r#"for _, p in ipairs({ "p/c", "p/a", "q/x", "p/b" }) do files.put(p, p) end
           local paths, cursor, pages = {}, nil, 0
           repeat
             local page = files.list{ prefix = "p/", limit = 2, cursor = cursor }
             pages = pages + 1
             for _, stat in ipairs(page.files) do paths[#paths + 1] = stat.path end
             cursor = page.cursor
           until cursor == nil
           local all = files.list()
           return { json = { paths = paths, pages = pages, all = #all.files,
                             last_cursor = all.cursor == nil } }"#,
    )
    .await;
    assert_eq!(
        parsed,
        json!({"paths": ["p/a", "p/b", "p/c"], "pages": 2, "all": 4, "last_cursor": true})
    );
    let calls = host.file_lists.lock().expect("lock").clone();
    assert_eq!(
        calls,
        vec![
            ("p/".to_string(), 2, None),
            ("p/".to_string(), 2, Some("p/b".to_string())),
            (String::new(), 100, None),
        ],
        "the default page is 100 files"
    );
}

#[tokio::test]
async fn url_options_reach_the_host() {
    let host = FakeHost::new();
    let parsed = json_of(
        &host,
        r#"return { json = {
             get = files.url("a/b.txt"),
             put = files.url("up/new.bin", { method = "PUT", ttl = 60, content_type = "image/png", max_bytes = 1048576 }),
           } }"#,
    )
    .await;
    assert_eq!(parsed["get"], format!("/_/files/{APP}/a/b.txt?sig=x"));
    let urls = host.file_urls.lock().expect("lock").clone();
    assert_eq!(
        urls,
        vec![
            ("a/b.txt".to_string(), FileUrlOptions::default()),
            (
                "up/new.bin".to_string(),
                FileUrlOptions {
                    ttl_secs: Some(60.0),
                    method: UrlMethod::Put,
                    content_type: Some("image/png".into()),
                    max_bytes: Some(1_048_576),
                }
            ),
        ]
    );
}

/// Each bad call, caught with `pcall`: what its error says. None reaches the
/// host.
#[tokio::test]
async fn argument_mistakes_fail_at_the_script_line_with_their_code() {
    let host = FakeHost::new();
    let cases: Vec<(String, &str)> = vec![
        // The path rule itself is the node's (tested in storage and through
        // the binary); only a path that is not text fails here.
        ("files.get('\\255\\254')".into(), "invalid_path: "),
        ("files.get(42)".into(), "files.get: path must be a string"),
        (
            "files.put('a', 42)".into(),
            "files.put: data must be a string",
        ),
        (
            "files.put('a', { 1 })".into(),
            "files.put: data must be a string",
        ),
        (
            "files.put('a', 'x', { content_type = 1 })".into(),
            "files.put: content_type must be a string",
        ),
        (
            "files.put('a', 'x', 5)".into(),
            "files.put: options must be a table",
        ),
        ("files.list{ limit = 0 }".into(), "invalid_limit: "),
        ("files.list{ limit = 1001 }".into(), "invalid_limit: "),
        (
            "files.list{ limit = 1.5 }".into(),
            "limit must be an integer",
        ),
        ("files.list{ cursor = 3 }".into(), "cursor must be a string"),
        (
            "files.url('a', { method = 'DELETE' })".into(),
            "files.url: method must be \"GET\" or \"PUT\"",
        ),
        (
            "files.url('a', { ttl = -1 })".into(),
            "ttl must be a positive number",
        ),
        (
            "files.url('a', { method = 'PUT', max_bytes = 0 })".into(),
            "max_bytes must be a positive integer",
        ),
        (
            "files.url('a', { max_bytes = 10 })".into(),
            "apply to method = \"PUT\" only",
        ),
    ];
    for (call_text, says) in cases {
        let script = vm(
            &host,
            &returning(&format!(
                "local ok, err = pcall(function() return {call_text} end)\nreturn tostring(ok) .. ' ' .. tostring(err)"
            )),
        );
        let text = body(&script).await;
        assert!(text.starts_with("false "), "{call_text}: {text}");
        assert!(text.contains(says), "{call_text}: {text}");
        assert!(text.contains("main.lua:"), "{call_text}: {text}");
    }
    assert!(host.files.lock().expect("lock").is_empty());
    assert!(host.file_lists.lock().expect("lock").is_empty());
    assert!(host.file_urls.lock().expect("lock").is_empty());
    // The limit's range ends are allowed.
    json_of(
        &host,
        "files.list{ limit = 1 } files.list{ limit = 1000 } return { json = {} }",
    )
    .await;
}

#[tokio::test]
async fn host_errors_come_back_with_their_code() {
    let host = FakeHost::new();
    *host.fail_with.lock().expect("lock") = Some(HostError::new(
        Code::FileTooLarge,
        "the file is 9 MiB; files.get reads at most 8 MiB",
    ));
    let script = vm(
        &host,
        &returning("local ok, err = pcall(files.get, 'big.bin') return err"),
    );
    assert_eq!(
        body(&script).await,
        "file_too_large: the file is 9 MiB; files.get reads at most 8 MiB"
    );
}
