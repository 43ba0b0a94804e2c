//! `apply` of document writes and index changes, and `find` over what they
//! stored, checked against a naive evaluator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::apply::tests::Fixture;
use crate::backend::Backend;
use crate::command::{
    ApplyError, Command, CommandResult, DeployParts, DocOp, DocOpResult, VersionDeploy,
};
use crate::docs::{FindOptions, IndexDef};
use crate::query::Query;
use crate::query::tests::{naive, random_doc, random_query};
use crate::triggers::{TriggerDef, TriggerDefKind, TriggerEvent, TriggerSet};

const APP: &str = "shop";

fn index(name: &str, coll: &str, fields: &[&str], unique: bool) -> IndexDef {
    IndexDef {
        name: name.into(),
        collection: coll.into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        unique,
    }
}

fn insert(coll: &str, id: &str, doc: Value) -> DocOp {
    DocOp::Insert {
        collection: coll.into(),
        id: id.into(),
        doc: doc.to_string().into_bytes(),
    }
}

impl Fixture {
    fn deploy_indexes(&mut self, indexes: Vec<IndexDef>, triggers: TriggerSet) -> CommandResult {
        self.run(Command::Deploy(VersionDeploy {
            app: APP.into(),
            bundle: b"code".to_vec(),
            now_ms: 1,
            versions_keep: 5,
            parts: DeployParts::Full {
                triggers,
                indexes,
                create_app: true,
            },
        }))
    }

    fn docs(&mut self, ops: Vec<DocOp>) -> CommandResult {
        self.run(Command::Docs {
            app: APP.into(),
            ops,
            now_ms: 10,
        })
    }

    fn doc(&self, coll: &str, id: &str) -> Option<Value> {
        self.reader
            .doc_get(APP, coll, id)
            .expect("get")
            .map(|bytes| serde_json::from_slice(&bytes).expect("json"))
    }

    fn find_all(&self, coll: &str, query: Value, options: FindOptions) -> Vec<Value> {
        let query = Query::parse(&query).expect("query");
        let mut options = options;
        let mut docs = Vec::new();
        loop {
            let page = self
                .reader
                .docs_find(APP, coll, &query, &options)
                .expect("find");
            let bytes: usize = page.docs.iter().map(|doc| doc.to_string().len()).sum();
            assert!(
                page.docs.len() <= 1 || bytes <= options.bytes_max,
                "a page of {} documents holds {bytes} bytes (bytes_max {})",
                page.docs.len(),
                options.bytes_max
            );
            docs.extend(page.docs);
            match page.cursor {
                Some(cursor) => options.cursor = Some(cursor),
                None => return docs,
            }
        }
    }
}

fn options(limit: usize) -> FindOptions {
    FindOptions {
        sort: Vec::new(),
        limit,
        cursor: None,
        fields: None,
        scan_max: 1_000_000,
        bytes_max: usize::MAX,
    }
}

fn rejected(result: CommandResult) -> ApplyError {
    match result {
        CommandResult::Rejected(error) => error,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn writes_insert_merge_replace_and_delete() {
    let mut f = Fixture::new();
    f.deploy_indexes(vec![], TriggerSet::default());
    let result = f.docs(vec![insert(
        "users",
        "u1",
        json!({"name": "Ada", "age": 36}),
    )]);
    assert_eq!(result, CommandResult::Docs(vec![DocOpResult::Inserted]));
    assert_eq!(
        f.doc("users", "u1"),
        Some(json!({"_id": "u1", "name": "Ada", "age": 36}))
    );
    let taken = f.docs(vec![insert("users", "u1", json!({}))]);
    assert!(matches!(rejected(taken), ApplyError::DocExists { .. }));

    let patch = DocOp::Update {
        collection: "users".into(),
        id: "u1".into(),
        patch: br#"{"age": null, "city": "Berlin"}"#.to_vec(),
    };
    assert_eq!(
        f.docs(vec![patch]),
        CommandResult::Docs(vec![DocOpResult::Updated { found: true }])
    );
    assert_eq!(
        f.doc("users", "u1"),
        Some(json!({"_id": "u1", "name": "Ada", "city": "Berlin"}))
    );
    let replace = DocOp::Replace {
        collection: "users".into(),
        id: "u1".into(),
        doc: br#"{"name": "Grace"}"#.to_vec(),
    };
    f.docs(vec![replace]);
    assert_eq!(
        f.doc("users", "u1"),
        Some(json!({"_id": "u1", "name": "Grace"}))
    );
    let missing = DocOp::Update {
        collection: "users".into(),
        id: "nobody".into(),
        patch: b"{}".to_vec(),
    };
    assert_eq!(
        f.docs(vec![missing]),
        CommandResult::Docs(vec![DocOpResult::Updated { found: false }])
    );
    // `_id` cannot change; a document is an object.
    let moved = DocOp::Update {
        collection: "users".into(),
        id: "u1".into(),
        patch: br#"{"_id": "u2"}"#.to_vec(),
    };
    assert!(matches!(
        rejected(f.docs(vec![moved])),
        ApplyError::InvalidDocument { .. }
    ));
    assert!(matches!(
        rejected(f.docs(vec![insert("users", "u3", json!([1, 2]))])),
        ApplyError::InvalidDocument { .. }
    ));
    // All or nothing: the second op fails, so the first is not applied.
    let batch = vec![
        insert("users", "u4", json!({})),
        insert("users", "u1", json!({})),
    ];
    assert!(matches!(
        rejected(f.docs(batch)),
        ApplyError::DocExists { .. }
    ));
    assert_eq!(f.doc("users", "u4"), None);
    let delete = DocOp::Delete {
        collection: "users".into(),
        id: "u1".into(),
    };
    assert_eq!(
        f.docs(vec![delete.clone()]),
        CommandResult::Docs(vec![DocOpResult::Deleted { existed: true }])
    );
    assert_eq!(
        f.docs(vec![delete]),
        CommandResult::Docs(vec![DocOpResult::Deleted { existed: false }])
    );
    let big = json!({"blob": "x".repeat(crate::docs::DOC_BYTES_MAX)});
    assert!(matches!(
        rejected(f.docs(vec![insert("users", "big", big)])),
        ApplyError::DocTooLarge { .. }
    ));
}

#[test]
fn unique_indexes_refuse_a_second_holder_even_within_one_entry() {
    let mut f = Fixture::new();
    let by_email = index("users_email", "users", &["email"], true);
    f.deploy_indexes(vec![by_email], TriggerSet::default());
    f.docs(vec![insert("users", "a", json!({"email": "x@y"}))]);
    let clash = rejected(f.docs(vec![insert("users", "b", json!({"email": "x@y"}))]));
    assert_eq!(
        clash,
        ApplyError::UniqueViolation {
            index: "users_email".into(),
            collection: "users".into(),
            existing: "a".into(),
        }
    );
    // Absent or null values are not constrained.
    f.docs(vec![
        insert("users", "c", json!({})),
        insert("users", "d", json!({"email": null})),
        insert("users", "e", json!({"email": null})),
    ]);
    // Two commands in one batch entry: the second sees the first's entry.
    let batch = f.run(Command::Batch(vec![
        Command::Docs {
            app: APP.into(),
            ops: vec![insert("users", "f", json!({"email": "new@y"}))],
            now_ms: 1,
        },
        Command::Docs {
            app: APP.into(),
            ops: vec![insert("users", "g", json!({"email": "new@y"}))],
            now_ms: 1,
        },
    ]));
    let CommandResult::Batch(results) = batch else {
        panic!("{batch:?}");
    };
    assert_eq!(results[0], CommandResult::Docs(vec![DocOpResult::Inserted]));
    assert!(matches!(
        &results[1],
        CommandResult::Rejected(ApplyError::UniqueViolation { .. })
    ));
    // Freed by an update, then taken by another document.
    let moved = DocOp::Update {
        collection: "users".into(),
        id: "a".into(),
        patch: br#"{"email": "other@y"}"#.to_vec(),
    };
    f.docs(vec![moved]);
    f.docs(vec![insert("users", "b", json!({"email": "x@y"}))]);
    let found = f.find_all("users", json!({"email": "x@y"}), options(10));
    assert_eq!(found, vec![json!({"_id": "b", "email": "x@y"})]);
}

#[test]
fn deploying_an_index_builds_it_and_a_violated_unique_index_rejects_the_deploy() {
    let mut f = Fixture::new();
    f.deploy_indexes(vec![], TriggerSet::default());
    let ops = (0..50)
        .map(|i| {
            insert(
                "users",
                &format!("u{i:02}"),
                json!({"city": i % 5, "email": "dup"}),
            )
        })
        .collect();
    f.docs(ops);
    let query = Query::parse(&json!({"city": 3})).expect("query");
    let scan = f
        .reader
        .docs_find(APP, "users", &query, &options(100))
        .expect("find");
    assert_eq!(scan.explain.index, None);
    assert_eq!(scan.explain.docs_examined, 50);

    let by_city = index("users_city", "users", &["city"], false);
    assert_eq!(
        f.deploy_indexes(vec![by_city.clone()], TriggerSet::default()),
        CommandResult::Deployed { version: 2 }
    );
    let indexed = f
        .reader
        .docs_find(APP, "users", &query, &options(100))
        .expect("find");
    assert_eq!(indexed.explain.index.as_deref(), Some("users_city"));
    assert_eq!(indexed.explain.docs_examined, 10);
    assert_eq!(indexed.docs, scan.docs);

    let unique = index("users_email", "users", &["email"], true);
    let refused = rejected(f.deploy_indexes(vec![by_city, unique], TriggerSet::default()));
    assert!(
        matches!(refused, ApplyError::UniqueViolation { ref index, .. } if index == "users_email")
    );
    assert_eq!(
        f.reader
            .app(APP)
            .expect("app")
            .expect("exists")
            .active_version,
        Some(2),
        "the refused deploy changed nothing"
    );
    assert_eq!(f.reader.indexes(APP).expect("indexes").len(), 1);

    // A rollback to version 1 drops the index; the results stay the same.
    f.run(Command::Rollback {
        app: APP.into(),
        to_version: Some(1),
        now_ms: 5,
    });
    assert!(f.reader.indexes(APP).expect("indexes").is_empty());
    let after = f
        .reader
        .docs_find(APP, "users", &query, &options(100))
        .expect("find");
    assert_eq!(after.explain.index, None);
    assert_eq!(after.docs, scan.docs);
    let leftovers = f
        .backend
        .scan(crate::backend::Keyspace::DocIndex, &[], &[])
        .count();
    assert_eq!(leftovers, 0, "dropped index entries are gone");
}

/// A docs trigger on `users` inserts (and updates when `on_update`).
fn users_trigger(on_update: bool) -> TriggerSet {
    TriggerSet {
        triggers: vec![TriggerDef {
            name: "on_user".into(),
            script: "on_user.lua".into(),
            kind: TriggerDefKind::Docs {
                collection: "users".into(),
                on_insert: true,
                on_update,
                on_delete: false,
            },
            attempts_max: 3,
            backoff_ms: 100,
        }],
        chain_depth_max: 8,
        outbox_max: 100,
    }
}

#[test]
fn docs_triggers_queue_runs_with_old_and_new_documents() {
    let mut f = Fixture::new();
    let triggers = users_trigger(true);
    f.deploy_indexes(vec![], triggers);
    f.docs(vec![insert("users", "u1", json!({"n": 1}))]);
    f.docs(vec![insert("other", "o1", json!({"n": 1}))]);
    f.docs(vec![DocOp::Update {
        collection: "users".into(),
        id: "u1".into(),
        patch: br#"{"n": 2}"#.to_vec(),
    }]);
    f.docs(vec![DocOp::Delete {
        collection: "users".into(),
        id: "u1".into(),
    }]);
    let entries = f.reader.outbox(APP, 0, 100).expect("outbox");
    let events: Vec<(String, Option<Value>, Option<Value>)> = entries
        .into_iter()
        .map(|entry| match entry.event {
            TriggerEvent::Docs { op, old, new, .. } => {
                let parse = |bytes: Option<Vec<u8>>| {
                    bytes.map(|b| serde_json::from_slice::<Value>(&b).expect("json"))
                };
                (op, parse(old), parse(new))
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("insert".into(), None, Some(json!({"_id": "u1", "n": 1}))),
            (
                "update".into(),
                Some(json!({"_id": "u1", "n": 1})),
                Some(json!({"_id": "u1", "n": 2}))
            ),
        ],
        "inserts and updates of users only; deletes are not watched"
    );
}

#[test]
fn deleting_the_app_deletes_its_documents_and_indexes() {
    let mut f = Fixture::new();
    f.deploy_indexes(
        vec![index("by_n", "users", &["n"], false)],
        TriggerSet::default(),
    );
    f.docs(vec![insert("users", "u1", json!({"n": 1}))]);
    f.run(Command::AppDelete {
        app: APP.into(),
        revoke_keys: false,
    });
    for keyspace in [
        crate::backend::Keyspace::Docs,
        crate::backend::Keyspace::DocIndex,
    ] {
        assert_eq!(f.backend.scan(keyspace, &[], &[]).count(), 0);
    }
}

/// `find` through every plan, page by page and sorted, against a naive
/// filter and sort of the same documents.
#[test]
fn find_agrees_with_a_naive_filter_whatever_the_plan() {
    let seed = 0xd0c5_0001;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut f = Fixture::new();
    f.deploy_indexes(
        vec![
            index("by_a", "items", &["a"], false),
            index("by_n_s", "items", &["n", "s"], false),
            index("by_ox", "items", &["o.x"], false),
        ],
        TriggerSet::default(),
    );
    let docs: Vec<Value> = (0..300)
        .map(|i| {
            let mut doc = random_doc(&mut rng);
            doc["_id"] = json!(format!("d{i:03}"));
            doc
        })
        .collect();
    for chunk in docs.chunks(50) {
        let ops = chunk
            .iter()
            .map(|doc| insert("items", doc["_id"].as_str().expect("id"), doc.clone()))
            .collect();
        assert!(matches!(f.docs(ops), CommandResult::Docs(_)));
    }
    let mut used_index = 0;
    for case in 0..600 {
        let query = if case % 3 == 0 {
            // A top-level equality or range that an index can serve.
            let field = ["a", "n", "o.x"][rng.random_range(0..3)];
            let value = crate::query::tests::random_scalar(&mut rng);
            match rng.random_range(0..3) {
                0 => json!({ field: value }),
                1 => {
                    let bound = if value.is_null() { json!(0) } else { value };
                    json!({"$and": [{ field: {"$gte": bound} }, random_query(&mut rng, 1)]})
                }
                _ => json!({ field: {"$in": [value, 1, "a"]}, "s": {"$exists": true} }),
            }
        } else {
            random_query(&mut rng, 2)
        };
        let mut expected: Vec<&Value> = docs.iter().filter(|doc| naive(&query, doc)).collect();
        let parsed = Query::parse(&query).expect("query");
        let (count, explain) = f
            .reader
            .docs_count(APP, "items", &parsed, 1_000_000)
            .expect("count");
        assert_eq!(
            count,
            expected.len() as u64,
            "seed {seed} case {case}: {query}"
        );
        used_index += usize::from(explain.index.is_some());

        let mut opts = options(rng.random_range(1..40));
        if rng.random_bool(0.3) {
            // Pages cut by bytes must still add up to the whole result.
            opts.bytes_max = rng.random_range(1..600);
        }
        if case % 2 == 1 {
            let field = ["a", "n", "s"][rng.random_range(0..3)];
            let descending = rng.random_bool(0.5);
            opts.sort = vec![(field.to_string(), descending)];
            let key = |doc: &Value| {
                let mut bytes = Vec::new();
                crate::docs::encode_key_value(crate::query::lookup(doc, field), &mut bytes);
                bytes
            };
            expected.sort_by(|x, y| {
                let order = key(x).cmp(&key(y));
                let order = if descending { order.reverse() } else { order };
                order.then_with(|| x["_id"].as_str().cmp(&y["_id"].as_str()))
            });
        }
        let found = f.find_all("items", query.clone(), opts);
        let expected: Vec<Value> = expected.into_iter().cloned().collect();
        assert_eq!(found, expected, "seed {seed} case {case}: {query}");
    }
    assert!(
        used_index > 150,
        "indexes served {used_index} of 600 queries"
    );
}

#[test]
fn cursors_are_stable_under_concurrent_inserts() {
    let mut f = Fixture::new();
    f.deploy_indexes(vec![], TriggerSet::default());
    let ops = (0..30)
        .map(|i| insert("log", &format!("e{:03}", i * 2), json!({"i": i})))
        .collect();
    f.docs(ops);
    let query = Query::parse(&json!({})).expect("query");
    let mut opts = options(7);
    let mut seen = Vec::new();
    let mut inserted = 0;
    loop {
        let page = f.reader.docs_find(APP, "log", &query, &opts).expect("find");
        seen.extend(
            page.docs
                .iter()
                .map(|doc| doc["_id"].as_str().expect("id").to_string()),
        );
        // Between pages, documents land before and after the cursor.
        f.docs(vec![
            insert("log", &format!("e{:03}", inserted * 2 + 1), json!({})),
            insert("log", &format!("z{inserted:03}"), json!({})),
        ]);
        inserted += 1;
        match page.cursor {
            Some(cursor) => opts.cursor = Some(cursor),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "in order, never twice");
    for i in 0..30 {
        assert!(
            seen.contains(&format!("e{:03}", i * 2)),
            "every document present before paging started is seen"
        );
    }
}

/// A run's document writes commit with its completion; if they are
/// rejected (a unique index taken meanwhile) nothing of the run applies and
/// the attempt counts as failed.
#[test]
fn a_run_commits_its_document_writes_all_or_nothing() {
    use crate::command::{KvOp, RunOutcome};
    let mut f = Fixture::new();
    let triggers = users_trigger(false);
    f.deploy_indexes(vec![index("by_email", "audit", &["email"], true)], triggers);
    f.docs(vec![insert("users", "u1", json!({"email": "a@x"}))]);
    let claim = |f: &mut Fixture, now_ms: u64| match f.run(Command::ClaimRuns {
        app: APP.into(),
        ids: vec![1],
        term: 1,
        node: 1,
        now_ms,
        reclaim_after_ms: 60_000,
    }) {
        CommandResult::RunsClaimed { ids, claim_ms } if ids == [1] => claim_ms,
        other => panic!("claim: {other:?}"),
    };
    let complete = |f: &mut Fixture, claim_ms: u64, id: &str| {
        f.run(Command::CompleteRun {
            app: APP.into(),
            id: 1,
            term: 1,
            claim_ms,
            ops: vec![KvOp::Set {
                key: "runs".into(),
                value: b"1".to_vec(),
                expires_at_ms: None,
            }],
            docs: vec![insert("audit", id, json!({"email": "a@x"}))],
            publishes: Vec::new(),
            now_ms: claim_ms + 1,
        })
    };
    // Someone else takes the email first: the run's writes are rejected.
    f.docs(vec![insert("audit", "other", json!({"email": "a@x"}))]);
    let claim_ms = claim(&mut f, 20);
    assert!(matches!(
        complete(&mut f, claim_ms, "x1"),
        CommandResult::Run(RunOutcome::WillRetry { .. })
    ));
    assert_eq!(f.doc("audit", "x1"), None);
    assert_eq!(f.reader.kv_get(APP, "runs", 0).expect("get"), None);
    // Freed, the retry commits both writes and the run leaves the outbox.
    f.docs(vec![DocOp::Delete {
        collection: "audit".into(),
        id: "other".into(),
    }]);
    let claim_ms = claim(&mut f, 1_000);
    assert_eq!(
        complete(&mut f, claim_ms, "x1"),
        CommandResult::Run(RunOutcome::Completed)
    );
    assert_eq!(
        f.doc("audit", "x1"),
        Some(json!({"_id": "x1", "email": "a@x"}))
    );
    assert!(f.reader.kv_get(APP, "runs", 0).expect("get").is_some());
    assert!(f.reader.outbox(APP, 0, 10).expect("outbox").is_empty());
}
