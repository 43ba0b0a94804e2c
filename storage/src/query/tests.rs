//! Every operator and combination, table-driven and then against a naive
//! evaluator (written separately, interpreting the JSON query directly) on
//! random documents and random queries.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{Query, QueryError};

fn doc() -> Value {
    json!({
        "name": "Ada",
        "age": 36,
        "score": 4.5,
        "admin": true,
        "nothing": null,
        "tags": ["pi", "rust", 3],
        "address": {"city": "Berlin", "zip": "10115", "geo": {"lat": 52.5}},
    })
}

fn matches(query: Value) -> bool {
    Query::parse(&query)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .matches(&doc())
}

#[test]
fn every_operator_on_every_kind() {
    let cases = [
        (json!({}), true),
        (json!({"name": "Ada"}), true),
        (json!({"name": "Bob"}), false),
        (json!({"age": 36.0}), true),
        (json!({"address.city": "Berlin"}), true),
        (json!({"address.geo.lat": {"$gt": 52}}), true),
        (
            json!({"address": {"city": "Berlin", "zip": "10115", "geo": {"lat": 52.5}}}),
            true,
        ),
        (json!({"address": {"city": "Berlin"}}), false),
        (json!({"tags": ["pi", "rust", 3]}), true),
        (json!({"nothing": null}), true),
        (json!({"missing": null}), false),
        (json!({"name": {"$eq": "Ada"}}), true),
        (json!({"name": {"$ne": "Ada"}}), false),
        (json!({"missing": {"$ne": 1}}), true),
        (json!({"age": {"$gt": 35}}), true),
        (json!({"age": {"$gt": 36}}), false),
        (json!({"age": {"$gte": 36}}), true),
        (json!({"age": {"$lt": 36.5}}), true),
        (json!({"age": {"$lte": 35}}), false),
        (json!({"age": {"$gt": 30, "$lt": 40}}), true),
        (json!({"age": {"$gt": "30"}}), false),
        (json!({"name": {"$gt": "Ab"}}), true),
        (json!({"admin": {"$gt": false}}), true),
        (json!({"missing": {"$lt": 5}}), false),
        (json!({"age": {"$in": [1, 36, "x"]}}), true),
        (json!({"age": {"$in": []}}), false),
        (json!({"age": {"$nin": [1, 2]}}), true),
        (json!({"missing": {"$nin": [1]}}), true),
        (json!({"name": {"$exists": true}}), true),
        (json!({"nothing": {"$exists": true}}), true),
        (json!({"missing": {"$exists": false}}), true),
        (json!({"address.city": {"$prefix": "Ber"}}), true),
        (json!({"age": {"$prefix": "3"}}), false),
        (json!({"tags": {"$contains": "pi"}}), true),
        (json!({"tags": {"$contains": 3.0}}), true),
        (json!({"tags": {"$contains": "go"}}), false),
        (json!({"name": {"$contains": "A"}}), false),
        (
            json!({"$and": [{"name": "Ada"}, {"age": {"$gt": 40}}]}),
            false,
        ),
        (
            json!({"$or": [{"name": "Bob"}, {"age": {"$gt": 30}}]}),
            true,
        ),
        (json!({"$not": {"name": "Ada"}}), false),
        (
            json!({"$not": {"$or": [{"name": "Bob"}, {"admin": false}]}}),
            true,
        ),
        (
            json!({"name": "Ada", "$or": [{"age": 1}, {"score": 4.5}]}),
            true,
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(matches(query.clone()), expected, "{query}");
    }
}

#[test]
fn malformed_queries_name_the_operator_and_path() {
    let cases = [
        (json!({"age": {"$gtt": 3}}), "$gtt", "age"),
        (json!({"age": {"$gt": [1]}}), "$gt", "age"),
        (json!({"age": {"$gt": {"a": 1}}}), "$gt", "age"),
        (json!({"age": {"$in": 3}}), "$in", "age"),
        (json!({"age": {"$nin": "x"}}), "$nin", "age"),
        (json!({"a.b": {"$exists": "yes"}}), "$exists", "a.b"),
        (json!({"name": {"$prefix": 1}}), "$prefix", "name"),
        (json!({"age": {"$gt": 1, "plain": 2}}), "plain", "age"),
        (json!({"age": {"$or": []}}), "$or", "age"),
        (json!({"$and": {}}), "$and", "the top level"),
        (json!({"$or": []}), "$or", "the top level"),
        (json!({"$nor": []}), "$nor", "the top level"),
        (json!({"a..b": 1}), "path", "a..b"),
        (json!([1]), "query", "the top level"),
    ];
    for (query, operator, path) in cases {
        let QueryError {
            operator: got_operator,
            path: got_path,
            message,
        } = Query::parse(&query).expect_err(&query.to_string());
        assert_eq!(
            (got_operator.as_str(), got_path.as_str()),
            (operator, path),
            "{query}: {message}"
        );
    }
    let deep = (0..20).fold(json!({"a": 1}), |inner, _| json!({"$not": inner}));
    assert!(Query::parse(&deep).is_err());
}

#[test]
fn an_index_can_serve_a_required_equality() {
    let query = Query::parse(&json!({"email": "a@b", "age": {"$gt": 1}})).expect("query");
    assert_eq!(query.required_equality("email"), Some(&json!("a@b")));
    assert_eq!(query.required_equality("age"), None);
    let either = Query::parse(&json!({"$or": [{"email": "a"}, {"email": "b"}]})).expect("query");
    assert_eq!(either.required_equality("email"), None);
}

// ---- the naive evaluator -----------------------------------------------------

fn naive_get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = doc;
    for name in path.split('.') {
        match current {
            Value::Object(map) => current = map.get(name)?,
            _ => return None,
        }
    }
    Some(current)
}

fn naive_eq(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) {
        return x == y;
    }
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && (0..x.len()).all(|i| naive_eq(&x[i], &y[i]))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.keys()
                    .all(|k| y.contains_key(k) && naive_eq(&x[k], &y[k]))
        }
        _ => a == b,
    }
}

/// -1, 0, 1 for two values of one comparable kind; None otherwise.
fn naive_cmp(a: &Value, b: &Value) -> Option<i32> {
    let sign = |o: std::cmp::Ordering| o as i32;
    if let (Value::Number(_), Value::Number(_)) = (a, b) {
        return a.as_f64()?.partial_cmp(&b.as_f64()?).map(sign);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(sign(x.cmp(y))),
        (Value::Bool(x), Value::Bool(y)) => Some(sign(x.cmp(y))),
        _ => None,
    }
}

pub(crate) fn naive(query: &Value, doc: &Value) -> bool {
    let map = query.as_object().expect("object");
    map.iter().all(|(key, value)| match key.as_str() {
        "$and" => value
            .as_array()
            .expect("array")
            .iter()
            .all(|q| naive(q, doc)),
        "$or" => value
            .as_array()
            .expect("array")
            .iter()
            .any(|q| naive(q, doc)),
        "$not" => !naive(value, doc),
        path => {
            let field = naive_get(doc, path);
            let is_ops = value
                .as_object()
                .is_some_and(|m| m.keys().any(|k| k.starts_with('$')));
            if !is_ops {
                return field.is_some_and(|f| naive_eq(f, value));
            }
            value.as_object().expect("ops").iter().all(|(op, operand)| {
                let cmp = || field.and_then(|f| naive_cmp(f, operand));
                match op.as_str() {
                    "$eq" => field.is_some_and(|f| naive_eq(f, operand)),
                    "$ne" => !field.is_some_and(|f| naive_eq(f, operand)),
                    "$gt" => cmp() == Some(1),
                    "$gte" => matches!(cmp(), Some(0 | 1)),
                    "$lt" => cmp() == Some(-1),
                    "$lte" => matches!(cmp(), Some(-1 | 0)),
                    "$in" => field.is_some_and(|f| {
                        operand
                            .as_array()
                            .expect("in")
                            .iter()
                            .any(|o| naive_eq(f, o))
                    }),
                    "$nin" => !field.is_some_and(|f| {
                        operand
                            .as_array()
                            .expect("nin")
                            .iter()
                            .any(|o| naive_eq(f, o))
                    }),
                    "$exists" => field.is_some() == operand.as_bool().expect("bool"),
                    "$prefix" => field
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.starts_with(operand.as_str().expect("prefix"))),
                    "$contains" => field
                        .and_then(Value::as_array)
                        .is_some_and(|items| items.iter().any(|i| naive_eq(i, operand))),
                    other => panic!("naive: unknown {other}"),
                }
            })
        }
    })
}

// ---- random documents and queries -------------------------------------------------

const FIELDS: [&str; 6] = ["a", "b", "n", "s", "tags", "o.x"];

pub(crate) fn random_scalar(rng: &mut StdRng) -> Value {
    match rng.random_range(0..6) {
        0 => json!(rng.random_range(-3..4)),
        1 => json!(rng.random_range(-3..4) as f64 + 0.5),
        2 => {
            let text = ["", "a", "ab", "b", "ba"][rng.random_range(0..5)];
            json!(text)
        }
        3 => json!(rng.random_bool(0.5)),
        4 => Value::Null,
        _ => json!(rng.random_range(0..3)),
    }
}

pub(crate) fn random_doc(rng: &mut StdRng) -> Value {
    let mut doc = serde_json::Map::new();
    for field in ["a", "b", "n", "s"] {
        if rng.random_bool(0.8) {
            doc.insert(field.into(), random_scalar(rng));
        }
    }
    if rng.random_bool(0.7) {
        let tags: Vec<Value> = (0..rng.random_range(0..4))
            .map(|_| random_scalar(rng))
            .collect();
        doc.insert("tags".into(), Value::Array(tags));
    }
    if rng.random_bool(0.7) {
        doc.insert("o".into(), json!({"x": random_scalar(rng)}));
    }
    Value::Object(doc)
}

fn random_condition(rng: &mut StdRng) -> Value {
    let field = FIELDS[rng.random_range(0..FIELDS.len())];
    let comparable = |rng: &mut StdRng| loop {
        let value = random_scalar(rng);
        if !value.is_null() {
            return value;
        }
    };
    let condition = match rng.random_range(0..12) {
        0 => random_scalar(rng),
        1 => json!({"$eq": random_scalar(rng)}),
        2 => json!({"$ne": random_scalar(rng)}),
        3 => json!({"$gt": comparable(rng)}),
        4 => json!({"$gte": comparable(rng)}),
        5 => json!({"$lt": comparable(rng)}),
        6 => json!({"$lte": comparable(rng), "$gte": comparable(rng)}),
        7 => {
            json!({"$in": (0..rng.random_range(0..3)).map(|_| random_scalar(rng)).collect::<Vec<_>>()})
        }
        8 => {
            json!({"$nin": (0..rng.random_range(0..3)).map(|_| random_scalar(rng)).collect::<Vec<_>>()})
        }
        9 => json!({"$exists": rng.random_bool(0.5)}),
        10 => {
            let prefix = ["", "a", "b"][rng.random_range(0..3)];
            json!({ "$prefix": prefix })
        }
        _ => json!({"$contains": random_scalar(rng)}),
    };
    json!({ field: condition })
}

pub(crate) fn random_query(rng: &mut StdRng, depth: usize) -> Value {
    if depth == 0 {
        return random_condition(rng);
    }
    match rng.random_range(0..5) {
        0 => {
            json!({"$and": (0..rng.random_range(1..4)).map(|_| random_query(rng, depth - 1)).collect::<Vec<_>>()})
        }
        1 => {
            json!({"$or": (0..rng.random_range(1..4)).map(|_| random_query(rng, depth - 1)).collect::<Vec<_>>()})
        }
        2 => json!({"$not": random_query(rng, depth - 1)}),
        _ => random_condition(rng),
    }
}

#[test]
fn random_queries_agree_with_the_naive_evaluator() {
    let seed = 0x5eed_d0c5;
    let mut rng = StdRng::seed_from_u64(seed);
    let docs: Vec<Value> = (0..200).map(|_| random_doc(&mut rng)).collect();
    let mut matched = 0;
    for case in 0..2_000 {
        let query = random_query(&mut rng, 2);
        let parsed = Query::parse(&query).unwrap_or_else(|e| panic!("case {case}: {query}: {e}"));
        for doc in &docs {
            let expected = naive(&query, doc);
            assert_eq!(
                parsed.matches(doc),
                expected,
                "seed {seed} case {case}: {query} on {doc}"
            );
            matched += usize::from(expected);
        }
    }
    // The generator is not degenerate: both outcomes occur often.
    assert!(
        matched > 40_000 && matched < 360_000,
        "{matched} of 400000 matched"
    );
}
