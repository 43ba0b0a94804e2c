//! Issue 14: files from Lua through a deployed app, and the CLI. `files.put`,
//! `get`, `stat`, `delete`, `list` (paged) and `url` (a signed URL the node
//! serves) behave as documented; oversize strings are `file_too_large`, bad
//! names `invalid_path`, and an app over its bytes or files quota
//! `quota_exceeded`; a `files` trigger runs once per put and once per
//! delete; `picloud files put/get/ls/rm` round-trips a file (`-` is stdout)
//! and bad input exits non-zero with a message.

mod common;

use common::cluster::eventually;
use common::{Api, TestNode, install_crypto};
use serde_json::{Value, json};

const OPS_MANIFEST: &str = r#"name = "lf"
[[route]]
method = "POST"
path = "/op"
script = "op.lua"
"#;

/// One route running the files op named in the JSON body; `size` makes a
/// string of that many bytes (so large strings need not cross JSON).
const OP: &str = r#"return function(req)
  local a = req.json
  local data = a.data
  if a.size then data = string.rep("x", a.size) end
  if a.op == "put" then
    return {json = files.put(a.path, data, {content_type = a.content_type})}
  elseif a.op == "get" then
    local file = files.get(a.path)
    return {json = {found = file ~= nil, file = file}}
  elseif a.op == "stat" then
    local stat = files.stat(a.path)
    return {json = {found = stat ~= nil, stat = stat}}
  elseif a.op == "delete" then
    return {json = {existed = files.delete(a.path)}}
  elseif a.op == "list" then
    return {json = files.list{prefix = a.prefix, limit = a.limit, cursor = a.cursor}}
  elseif a.op == "url" then
    return {json = {url = files.url(a.path, {ttl = a.ttl, method = a.method})}}
  end
  error("unknown op " .. tostring(a.op))
end"#;

const TRIGGER_MANIFEST: &str = r#"name = "lt"
[[route]]
method = "GET"
path = "/runs"
script = "runs.lua"
[[trigger]]
kind = "files"
match = "t/*"
script = "on_file.lua"
"#;

const ON_FILE: &str = r#"return function(event, ctx)
  assert(event.kind == "files", "kind " .. tostring(event.kind))
  if event.op == "put" then assert(event.size == 3, "size " .. tostring(event.size)) end
  kv.incr("runs/" .. event.op .. "/" .. event.path)
end"#;

const RUNS: &str = r#"return function(req)
  return {json = {
    put_x = kv.get("runs/put/t/x"), delete_x = kv.get("runs/delete/t/x"),
    put_y = kv.get("runs/put/t/y")}}
end"#;

async fn op(api: &Api, args: Value) -> (u16, Value) {
    api.call(
        "POST",
        "/lf/op",
        Some(serde_json::to_vec(&args).expect("json")),
    )
    .await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lua_surface_triggers_and_cli_round_trip() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.extra_args = [
        "--file-bytes-max",
        "100000",
        "--files-bytes-per-app-max",
        "150000",
        "--files-per-app-max",
        "4",
        "--file-inline-read-max",
        "65536",
    ]
    .map(String::from)
    .to_vec();
    node.start().await;
    let admin = node.client();
    let (status, body) = admin
        .deploy("lf", &[("picloud.toml", OPS_MANIFEST), ("op.lua", OP)])
        .await;
    assert_eq!(status, 200, "{body}");
    let api = admin.with_key(None);

    // put / get / stat.
    let (status, stat) = op(
        &api,
        json!({"op": "put", "path": "a/1.txt", "data": "hello", "content_type": "text/plain"}),
    )
    .await;
    assert_eq!(status, 200, "{stat}");
    assert_eq!(
        (stat["path"].as_str(), stat["size"].as_u64()),
        (Some("a/1.txt"), Some(5))
    );
    assert_eq!(stat["content_type"], "text/plain");
    let etag = stat["etag"].as_str().expect("etag").to_string();
    assert!(etag.starts_with('"') && etag.len() == 66, "{etag}");
    let (_, got) = op(&api, json!({"op": "get", "path": "a/1.txt"})).await;
    assert_eq!(got["file"]["data"], "hello", "{got}");
    assert_eq!(got["file"]["etag"], etag.as_str());
    let (_, stat) = op(&api, json!({"op": "stat", "path": "a/1.txt"})).await;
    assert_eq!(stat["stat"]["size"], 5);
    let (_, missing) = op(&api, json!({"op": "stat", "path": "a/none"})).await;
    assert_eq!(missing["found"], false);

    // list pages through a prefix.
    for path in ["a/2.txt", "a/3.txt"] {
        let (status, body) = op(&api, json!({"op": "put", "path": path, "data": "x"})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, page) = op(&api, json!({"op": "list", "prefix": "a/", "limit": 2})).await;
    let names = |page: &Value| -> Vec<String> {
        page["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|file| file["path"].as_str().expect("path").to_string())
            .collect()
    };
    assert_eq!(names(&page), ["a/1.txt", "a/2.txt"], "{page}");
    let cursor = page["cursor"].as_str().expect("a cursor").to_string();
    let (_, page) = op(
        &api,
        json!({"op": "list", "prefix": "a/", "limit": 2, "cursor": cursor}),
    )
    .await;
    assert_eq!(names(&page), ["a/3.txt"], "{page}");
    assert!(page["cursor"].is_null(), "{page}");

    // A signed URL from a script serves the file on this node.
    let (_, url) = op(&api, json!({"op": "url", "path": "a/1.txt"})).await;
    let url = url["url"].as_str().expect("url").to_string();
    assert!(url.starts_with("/_/files/lf/a/1.txt?"), "{url}");
    let served = reqwest::get(format!("{}{url}", node.url()))
        .await
        .expect("GET signed");
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(served.text().await.expect("body"), "hello");

    // Refusals, as a table: (what, args, code).
    let long_path = "x".repeat(1025);
    for (what, args, expected) in [
        (
            "empty path",
            json!({"op": "put", "path": "", "data": "x"}),
            "invalid_path",
        ),
        (
            "leading slash",
            json!({"op": "put", "path": "/a", "data": "x"}),
            "invalid_path",
        ),
        (
            "dot-dot",
            json!({"op": "put", "path": "a/../b", "data": "x"}),
            "invalid_path",
        ),
        (
            "empty segment",
            json!({"op": "put", "path": "a//b", "data": "x"}),
            "invalid_path",
        ),
        (
            "NUL",
            json!({"op": "put", "path": "a\u{0}b", "data": "x"}),
            "invalid_path",
        ),
        (
            "1025 bytes",
            json!({"op": "put", "path": long_path, "data": "x"}),
            "invalid_path",
        ),
        (
            "get with a bad path",
            json!({"op": "get", "path": "../x"}),
            "invalid_path",
        ),
        (
            "over file_inline_read_max",
            json!({"op": "put", "path": "big", "size": 70000}),
            "file_too_large",
        ),
    ] {
        let (status, body) = op(&api, args).await;
        assert_eq!((status, code(&body)), (500, expected), "{what}: {body}");
    }

    // Quotas: 4 files, 150,000 bytes.
    let (status, body) = op(&api, json!({"op": "put", "path": "c1", "size": 60000})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = op(&api, json!({"op": "put", "path": "c2", "size": 10})).await;
    assert_eq!(
        (status, code(&body)),
        (500, "quota_exceeded"),
        "files: {body}"
    );
    let (status, body) = op(&api, json!({"op": "put", "path": "a/2.txt", "size": 60000})).await;
    assert_eq!(status, 200, "an overwrite adds no file: {body}");
    let (status, body) = op(&api, json!({"op": "put", "path": "a/3.txt", "size": 60000})).await;
    assert_eq!(
        (status, code(&body)),
        (500, "quota_exceeded"),
        "bytes: {body}"
    );
    let (_, stat) = op(&api, json!({"op": "stat", "path": "a/3.txt"})).await;
    assert_eq!(stat["stat"]["size"], 1, "a refused put changes nothing");

    // delete: found, then not.
    let (_, deleted) = op(&api, json!({"op": "delete", "path": "a/1.txt"})).await;
    assert_eq!(deleted["existed"], true);
    let (_, deleted) = op(&api, json!({"op": "delete", "path": "a/1.txt"})).await;
    assert_eq!(deleted["existed"], false);
    let (_, got) = op(&api, json!({"op": "get", "path": "a/1.txt"})).await;
    assert_eq!(got["found"], false);

    // files triggers: one run per put and per delete.
    let (status, body) = admin
        .deploy(
            "lt",
            &[
                ("picloud.toml", TRIGGER_MANIFEST),
                ("on_file.lua", ON_FILE),
                ("runs.lua", RUNS),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (method, path, body) in [
        ("PUT", "/_/api/v1/apps/lt/files/t/x", Some(b"abc".to_vec())),
        ("DELETE", "/_/api/v1/apps/lt/files/t/x", None),
        // Not under t/: no run.
        ("PUT", "/_/api/v1/apps/lt/files/u/x", Some(b"abc".to_vec())),
        ("PUT", "/_/api/v1/apps/lt/files/t/y", Some(b"abc".to_vec())),
    ] {
        let (status, answer) = admin.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {answer}");
    }
    eventually("the runs for t/x and t/y", || {
        let api = api.clone();
        async move {
            let (_, runs) = api.get("/lt/runs").await;
            runs["put_y"] == 1
        }
    })
    .await;
    let (_, runs) = api.get("/lt/runs").await;
    assert_eq!(
        (runs["put_x"].as_u64(), runs["delete_x"].as_u64()),
        (Some(1), Some(1)),
        "{runs}"
    );

    // The CLI round trip (app lt: no quota in the way).
    let local = dir.path().join("notes.txt");
    let text: String = (0..5000).map(|n| format!("line {n}\n")).collect();
    std::fs::write(&local, &text).expect("write local");
    let local_text = local.display().to_string();
    node.cli(&["files", "put", "lt", &local_text, "cli/notes.txt"])
        .ok();
    assert_eq!(
        node.cli(&["files", "get", "lt", "cli/notes.txt", "-"]).ok(),
        text
    );
    let copy = dir.path().join("copy.txt");
    node.cli(&[
        "files",
        "get",
        "lt",
        "cli/notes.txt",
        &copy.display().to_string(),
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(&copy).expect("copy"), text);
    let listed = node.cli(&["files", "ls", "lt", "cli/"]).ok();
    assert!(
        listed.contains("cli/notes.txt") && listed.contains(&text.len().to_string()),
        "{listed}"
    );
    // PATH defaults to the local file's name.
    node.cli(&["files", "put", "lt", &local_text]).ok();
    assert!(node.cli(&["files", "ls", "lt"]).ok().contains("notes.txt"));
    node.cli(&["files", "rm", "lt", "cli/notes.txt"]).ok();
    for (what, args, says) in [
        (
            "rm of a missing file",
            vec!["files", "rm", "lt", "cli/notes.txt"],
            "no file",
        ),
        (
            "get of a missing file",
            vec!["files", "get", "lt", "cli/notes.txt", "-"],
            "file_not_found",
        ),
        (
            "put of a missing local file",
            vec!["files", "put", "lt", "/nonexistent/x"],
            "cannot read",
        ),
        (
            "a bad path",
            vec!["files", "put", "lt", &local_text, "a//b"],
            "invalid_path",
        ),
        (
            "--max-bytes on a GET URL",
            vec!["files", "url", "lt", "x", "--max-bytes", "5"],
            "--put",
        ),
    ] {
        let output = node.cli(&args);
        assert!(!output.success, "{what} succeeded: {}", output.stdout);
        assert!(output.stderr.contains(says), "{what}: {}", output.stderr);
    }
    let url = node.cli(&["files", "url", "lt", "notes.txt"]).ok();
    let served = reqwest::get(url.trim()).await.expect("GET CLI url");
    assert_eq!(served.text().await.expect("body"), text);
}

const LOOP_MANIFEST: &str = r#"name = "loop"
[[route]]
method = "GET"
path = "/runs"
script = "runs.lua"
[triggers]
chain_depth_max = 3
[[trigger]]
kind = "files"
match = "l/*"
on = ["put"]
script = "on_put.lua"
"#;

/// Each run writes the next file its own trigger watches: without a chain
/// depth on file writes this would run forever.
const ON_PUT: &str = r#"return function(event, ctx)
  kv.incr("runs")
  files.put(event.path .. "x", "again")
end"#;

const LOOP_RUNS: &str = r#"return function(req)
  return {json = {runs = kv.get("runs")}}
end"#;

/// A `files` trigger whose runs write the files it watches ends at
/// `chain_depth_max`: the run past it is a dead letter (`trigger_loop`),
/// as for kv writes, not an endless chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_trigger_that_writes_what_it_watches_stops_at_the_chain_depth() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::new(dir.path());
    node.start().await;
    let admin = node.client();
    let (status, body) = admin
        .deploy(
            "loop",
            &[
                ("picloud.toml", LOOP_MANIFEST),
                ("on_put.lua", ON_PUT),
                ("runs.lua", LOOP_RUNS),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, answer) = admin
        .call(
            "PUT",
            "/_/api/v1/apps/loop/files/l/a",
            Some(b"start".to_vec()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // Runs at depths 1, 2 and 3 ran (each commits its count with its
    // completion, after its file write); the one at depth 4 is a dead letter.
    eventually("three runs, then a trigger_loop dead letter", || {
        let admin = admin.clone();
        async move {
            let (_, letters) = admin.get("/_/api/v1/apps/loop/dead-letters").await;
            let (_, runs) = admin.with_key(None).get("/loop/runs").await;
            runs["runs"] == 3
                && letters["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|l| l["code"] == "trigger_loop"))
        }
    })
    .await;
    let (_, letters) = admin.get("/_/api/v1/apps/loop/dead-letters").await;
    assert_eq!(
        letters["items"].as_array().map(Vec::len),
        Some(1),
        "{letters}"
    );
    let (_, listed) = admin.get("/_/api/v1/apps/loop/files?prefix=l/").await;
    assert_eq!(
        listed["files"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );
}
