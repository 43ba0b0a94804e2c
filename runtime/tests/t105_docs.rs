//! Documents on a 3-node cluster of real processes: `docs.*` from Lua through
//! every node, a unique index under concurrent inserts through two nodes
//! (exactly one wins), `explain` showing index use, an index added to a live
//! collection, docs triggers, and `picloud docs find` with cursors and errors.

mod common;

use common::cluster::{api, eventually, start_three};
use common::{Api, TestNode, install_crypto};
use serde_json::{Value, json};

const MANIFEST: &str = r#"
name = "people"
# The test reads script errors' text from the responses.
[app]
expose_errors = true

[[route]]
method = "POST"
path = "/users"
script = "insert.lua"

[[route]]
method = "*"
path = "/users/:id"
script = "user.lua"

[[route]]
method = "POST"
path = "/find/:coll"
script = "find.lua"

[[route]]
method = "POST"
path = "/orders"
script = "orders.lua"

[[index]]
collection = "users"
fields = ["email"]
unique = true

[[trigger]]
kind = "docs"
collection = "users"
on = ["insert"]
script = "on_user.lua"
"#;

/// Inserts `req.json`; a taken email is 409 with the error text.
const INSERT: &str = r#"return function(req)
  local ok, result = pcall(docs.insert, "users", req.json)
  if ok then return {status = 201, json = {id = result}} end
  return {status = 409, json = {error = tostring(result)}}
end"#;

/// GET, PATCH (merge), PUT (replace) and DELETE one user.
const USER: &str = r#"return function(req)
  local id = req.params.id
  if req.method == "GET" then
    local doc = docs.get("users", id)
    if doc == nil then return {status = 404, json = {missing = id}} end
    return {json = doc}
  elseif req.method == "PATCH" then
    return {json = {found = docs.update("users", id, req.json)}}
  elseif req.method == "PUT" then
    return {json = {found = docs.replace("users", id, req.json)}}
  elseif req.method == "DELETE" then
    return {json = {existed = docs.delete("users", id)}}
  end
  return {status = 405}
end"#;

/// `{query, options}` → `docs.find`, plus `docs.count` of the same query.
const FIND: &str = r#"return function(req)
  local body = req.json
  local page = docs.find(req.params.coll, body.query, body.options)
  page.count = docs.count(req.params.coll, body.query)
  return {json = page}
end"#;

/// Inserts `req.json.docs` into `orders`.
const ORDERS: &str = r#"return function(req)
  for _, doc in ipairs(req.json.docs) do docs.insert("orders", doc) end
  return {json = {ok = true}}
end"#;

/// Records each new user in kv and in an `audit` document; the run reads
/// its own document write back before it commits.
const ON_USER: &str = r#"return function(event, ctx)
  assert(event.kind == "docs" and event.op == "insert" and event.old == nil)
  kv.set("seen/" .. event.id, event.new.email or "none")
  local id = docs.insert("audit", {_id = "a-" .. event.id, user = event.id})
  assert(docs.get("audit", id).user == event.id, "a run reads its own document write")
  assert(docs.update("audit", id, {checked = true}), "and can update it")
end"#;

async fn deploy(api: &Api, extra_manifest: &str) -> (u16, Value) {
    let manifest = format!("{MANIFEST}{extra_manifest}");
    api.deploy(
        "people",
        &[
            ("picloud.toml", &manifest),
            ("insert.lua", INSERT),
            ("user.lua", USER),
            ("find.lua", FIND),
            ("orders.lua", ORDERS),
            ("on_user.lua", ON_USER),
        ],
    )
    .await
}

async fn find(api: &Api, coll: &str, query: Value, options: Value) -> Value {
    let (status, body) = api
        .post_json(
            &format!("/people/find/{coll}"),
            &json!({"query": query, "options": options}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The `name` of each document of a find page, in order.
fn names(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|doc| doc["name"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_across_a_cluster() {
    install_crypto();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut nodes: Vec<TestNode> = dirs.iter().map(|d| TestNode::new(d.path())).collect();
    let (key, _) = start_three(&mut nodes).await;
    let apis: Vec<Api> = nodes.iter().map(|node| api(node, &key)).collect();
    let (status, body) = deploy(&apis[0], "").await;
    assert_eq!(status, 200, "{body}");

    // ---- the Lua API, each call through a different node ----
    let (status, body) = apis[1]
        .post_json(
            "/people/users",
            &json!({"name": "Ada", "email": "ada@x", "age": 36, "address": {"city": "London"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let ada = body["id"].as_str().expect("id").to_string();
    assert_eq!(ada.len(), 26, "a ULID-style id: {ada}");
    let (status, doc) = apis[2].get(&format!("/people/users/{ada}")).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["_id"], json!(ada));
    assert_eq!(doc["address"]["city"], json!("London"));
    // A merge patch: json.null (sent as null) removes a field.
    let (_, body) = apis[0]
        .call(
            "PATCH",
            &format!("/people/users/{ada}"),
            Some(br#"{"age": null, "address": {"zip": "N1"}}"#.to_vec()),
        )
        .await;
    assert_eq!(body, json!({"found": true}));
    let (_, doc) = apis[1].get(&format!("/people/users/{ada}")).await;
    assert_eq!(doc.get("age"), None, "{doc}");
    assert_eq!(doc["address"], json!({"city": "London", "zip": "N1"}));
    let (_, body) = apis[2]
        .call("PATCH", "/people/users/nobody", Some(b"{}".to_vec()))
        .await;
    assert_eq!(body, json!({"found": false}));

    // ---- a unique index under concurrent inserts through two nodes ----
    let mut inserted = 1;
    for round in 0..15 {
        let email = format!("user{round}@x");
        let doc = json!({"name": format!("u{round}"), "email": email, "age": 20 + round});
        let (first, second) = tokio::join!(
            apis[0].post_json("/people/users", &doc),
            apis[1].post_json("/people/users", &doc),
        );
        let statuses = [first.0, second.0];
        assert!(
            statuses.contains(&201) && statuses.contains(&409),
            "round {round}: exactly one insert wins: {first:?} {second:?}"
        );
        let loser = if first.0 == 409 { &first.1 } else { &second.1 };
        let error = loser["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("unique_violation") && error.contains("users_email"),
            "the error names the index: {error}"
        );
        let found = find(&apis[2], "users", json!({"email": email}), json!({})).await;
        assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
        inserted += 1;
    }

    // ---- explain: an indexed equality reads one document, a range scans ----
    let by_email = find(
        &apis[1],
        "users",
        json!({"email": "user3@x"}),
        json!({"explain": true}),
    )
    .await;
    assert_eq!(by_email["explain"]["plan"], json!("index"), "{by_email}");
    assert_eq!(by_email["explain"]["index"], json!("users_email"));
    assert_eq!(by_email["explain"]["docs_examined"], json!(1));
    assert_eq!(by_email["items"][0]["name"], json!("u3"));
    let older = find(
        &apis[2],
        "users",
        json!({"age": {"$gte": 30}}),
        json!({"explain": true, "sort": "-age", "limit": 2, "fields": ["name"]}),
    )
    .await;
    assert_eq!(older["explain"]["plan"], json!("collection_scan"));
    assert_eq!(older["explain"]["docs_examined"], json!(inserted));
    assert_eq!(older["count"], json!(5), "ages 30..34: {older}");
    assert_eq!(
        older["items"],
        json!([{"_id": older["items"][0]["_id"], "name": "u14"}, {"_id": older["items"][1]["_id"], "name": "u13"}])
    );
    assert!(older["cursor"].is_string(), "more pages: {older}");

    // ---- docs triggers: every insert into users ran once ----
    let admin = apis[0].clone();
    eventually("a trigger run per inserted user", || {
        let admin = admin.clone();
        async move {
            let (_, body) = admin.get("/_/api/v1/apps/people/kv?prefix=seen/").await;
            body["items"].as_array().map(Vec::len) == Some(inserted as usize)
        }
    })
    .await;

    // Document writes inside those runs committed with them, once each.
    let audit = find(
        &apis[1],
        "audit",
        json!({"checked": true}),
        json!({"limit": 100}),
    )
    .await;
    assert_eq!(audit["count"], json!(inserted), "{audit}");

    // ---- an index added to a live collection is built from its documents ----
    let cities = ["Berlin", "Paris", "Rome", "Oslo"];
    for chunk in 0..4 {
        let docs: Vec<Value> = (0..50)
            .map(|i| json!({"n": chunk * 50 + i, "city": cities[i % 4]}))
            .collect();
        let (status, body) = apis[chunk % 3]
            .post_json("/people/orders", &json!({"docs": docs}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let query = json!({"city": "Berlin"});
    let scanned = find(
        &apis[0],
        "orders",
        query.clone(),
        json!({"explain": true, "limit": 100}),
    )
    .await;
    assert_eq!(scanned["explain"]["plan"], json!("collection_scan"));
    let extra = "\n[[index]]\ncollection = \"orders\"\nfields = [\"city\"]\n";
    let (status, body) = deploy(&apis[1], extra).await;
    assert_eq!(status, 200, "{body}");
    let indexed = find(
        &apis[2],
        "orders",
        query.clone(),
        json!({"explain": true, "limit": 100}),
    )
    .await;
    assert_eq!(
        indexed["explain"]["index"],
        json!("orders_city"),
        "{indexed}"
    );
    // 13 of every 50 orders are in Berlin: only those are read.
    assert_eq!(indexed["explain"]["docs_examined"], json!(52));
    assert_eq!(indexed["items"].as_array().map(Vec::len), Some(52));
    assert_eq!(indexed["items"], scanned["items"]);

    // A unique index the documents violate rejects the deploy; nothing changes.
    let unique = "\n[[index]]\ncollection = \"orders\"\nfields = [\"city\"]\nunique = true\nname = \"one_per_city\"\n";
    let (status, body) = deploy(&apis[0], unique).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], json!("unique_violation"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("one_per_city")
    );
    let (_, app) = apis[0].get("/_/api/v1/apps/people").await;
    assert_eq!(app["active_version"], json!(2), "{app}");

    // ---- the CLI: find with a query, sort, cursor, explain; errors ----
    let cli = |args: &[&str]| nodes[2].cli_with_key(&key, args);
    let page: Value = serde_json::from_str(
        &cli(&[
            "docs",
            "find",
            "people",
            "users",
            r#"{"age":{"$gt":30}}"#,
            "--sort",
            "-age",
            "--limit",
            "3",
        ])
        .ok(),
    )
    .expect("json");
    assert_eq!(names(&page), ["u14", "u13", "u12"]);
    let cursor = page["cursor"].as_str().expect("cursor").to_string();
    let next: Value = serde_json::from_str(
        &cli(&[
            "docs",
            "find",
            "people",
            "users",
            r#"{"age":{"$gt":30}}"#,
            "--sort",
            "-age",
            "--limit",
            "3",
            "--cursor",
            &cursor,
        ])
        .ok(),
    )
    .expect("json");
    assert_eq!(names(&next), ["u11"], "ages 31..34 over two pages");
    assert!(next.get("cursor").is_none(), "{next}");
    let explained = cli(&[
        "docs",
        "find",
        "people",
        "orders",
        r#"{"city":"Rome"}"#,
        "--explain",
        "--fields",
        "n",
    ])
    .ok();
    assert!(explained.contains("orders_city"), "{explained}");
    let count = cli(&[
        "docs",
        "count",
        "people",
        "orders",
        r#"{"city":{"$in":["Rome","Oslo"]}}"#,
    ])
    .ok();
    assert_eq!(count.trim(), "96", "12 Rome and 12 Oslo orders in each 50");

    for (query, expected) in [
        (r#"{"age":{"$gt":[1]}}"#, "$gt"),
        (r#"{"age":{"$near":1}}"#, "$near"),
        ("not json", "not JSON"),
    ] {
        let failed = cli(&["docs", "find", "people", "users", query]);
        assert!(!failed.success, "{query} must fail");
        assert!(
            failed.stderr.contains(expected),
            "{query}: {}",
            failed.stderr
        );
        if expected.starts_with('$') {
            assert!(
                failed.stderr.contains("age") && failed.stderr.contains("invalid_query"),
                "{}",
                failed.stderr
            );
        }
    }
    let missing = cli(&["docs", "get", "people", "users", "nobody"]);
    assert!(
        !missing.success && missing.stderr.contains("doc_not_found"),
        "{}",
        missing.stderr
    );
    let bad_collection = cli(&["docs", "find", "people", "no/such"]);
    assert!(!bad_collection.success, "{}", bad_collection.stdout);

    // Bad calls from Lua fail with a clear code, and nothing is written.
    let (status, body) = apis[0]
        .post_json(
            "/people/find/users",
            &json!({"query": {"age": {"$bogus": 1}}, "options": {}}),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], json!("invalid_query"), "{body}");
    let (status, body) = apis[1]
        .post_json(
            "/people/find/users",
            &json!({"query": {}, "options": {"limt": 3}}),
        )
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown option"),
        "{body}"
    );

    // ---- a shared library published through one node, pinned through a
    // second, served through the third (modules travel in the log too) ----
    let lib_dir = dirs[0].path().join("greetlib");
    std::fs::create_dir_all(&lib_dir).expect("lib dir");
    std::fs::write(
        lib_dir.join("init.lua"),
        "return {hello = function(name) return 'hello ' .. name end}",
    )
    .expect("lib file");
    let published = nodes[1]
        .cli_with_key(
            &key,
            &["libs", "publish", "greet", lib_dir.to_str().expect("path")],
        )
        .ok();
    assert!(published.contains('1'), "{published}");
    let (status, body) = apis[2]
        .deploy(
            "greeter",
            &[
                (
                    "picloud.toml",
                    "name = \"greeter\"\n[libs]\ngreet = 1\n[[route]]\nmethod = \"GET\"\npath = \"/hi/:name\"\nscript = \"hi.lua\"\n",
                ),
                (
                    "hi.lua",
                    "local greet = require('@greet')\nreturn function(req) return {json = {text = greet.hello(req.params.name)}} end",
                ),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = apis[0].get("/greeter/hi/pi").await;
    assert_eq!((status, body), (200, json!({"text": "hello pi"})));

    // Delete through one node, gone through another.
    let (_, body) = apis[2]
        .call("DELETE", &format!("/people/users/{ada}"), None)
        .await;
    assert_eq!(body, json!({"existed": true}));
    let (status, _) = apis[0].get(&format!("/people/users/{ada}")).await;
    assert_eq!(status, 404);

    for node in &mut nodes {
        node.terminate();
    }
}
