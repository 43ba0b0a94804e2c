//! Document keys, the value encoding, merge patches and the planner.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::*;
use crate::query::tests::random_scalar;

/// The order the encoding promises: absent < null < false < true < numbers
/// < strings < the rest (by JSON text).
fn reference_cmp(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    fn rank(value: Option<&Value>) -> u8 {
        match value {
            None => 0,
            Some(Value::Null) => 1,
            Some(Value::Bool(false)) => 2,
            Some(Value::Bool(true)) => 3,
            Some(Value::Number(_)) => 4,
            Some(Value::String(_)) => 5,
            Some(_) => 6,
        }
    }
    rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(std::cmp::Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
        (Some(x @ (Value::Array(_) | Value::Object(_))), Some(y)) => {
            x.to_string().as_bytes().cmp(y.to_string().as_bytes())
        }
        _ => std::cmp::Ordering::Equal,
    })
}

fn random_value(rng: &mut StdRng) -> Option<Value> {
    match rng.random_range(0..10) {
        0 => None,
        1 => Some(json!(["a", rng.random_range(0..3)])),
        2 => Some(json!(format!("x\u{0}{}", rng.random_range(0..3)))),
        3 => Some(json!(rng.random_range(-1e12..1e12))),
        _ => Some(random_scalar(rng)),
    }
}

#[test]
fn encodings_sort_like_values_and_concatenate() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let (a1, a2, b1, b2) = (
            random_value(&mut rng),
            random_value(&mut rng),
            random_value(&mut rng),
            random_value(&mut rng),
        );
        let encode_pair = |x: &Option<Value>, y: &Option<Value>| {
            let mut out = Vec::new();
            encode_key_value(x.as_ref(), &mut out);
            encode_key_value(y.as_ref(), &mut out);
            out
        };
        let expected = reference_cmp(a1.as_ref(), b1.as_ref())
            .then_with(|| reference_cmp(a2.as_ref(), b2.as_ref()));
        assert_eq!(
            encode_pair(&a1, &a2).cmp(&encode_pair(&b1, &b2)),
            expected,
            "({a1:?}, {a2:?}) vs ({b1:?}, {b2:?})"
        );
    }
    // 1 and 1.0 are one value; -0.0 and 0.0 too.
    let one = |v: Value| {
        let mut out = Vec::new();
        encode_key_value(Some(&v), &mut out);
        out
    };
    assert_eq!(one(json!(1)), one(json!(1.0)));
    assert_eq!(one(json!(-0.0)), one(json!(0)));
}

#[test]
fn ids_sort_by_time_and_names_are_checked() {
    let early = new_doc_id(1_000, u128::MAX);
    let late = new_doc_id(1_001, 0);
    assert_eq!(early.len(), 26);
    assert!(early < late, "{early} < {late}");
    check_doc_id(&early).expect("generated ids are valid");
    assert!(check_doc_id("").is_err());
    assert!(check_doc_id("a/b").is_err());
    assert!(check_doc_id(&"x".repeat(DOC_ID_BYTES_MAX + 1)).is_err());
    check_collection("users").expect("valid");
    assert!(check_collection("_system").is_err());
    assert!(check_collection("a.b").is_err());
    assert!(check_collection("").is_err());
}

#[test]
fn merge_patch_removes_with_null_and_merges_objects() {
    let mut doc = json!({"name": "Ada", "address": {"city": "Berlin", "zip": "10115"}, "age": 36});
    merge_patch(
        &mut doc,
        &json!({"age": null, "address": {"zip": null, "street": "Unter den Linden"}, "tags": ["a"]}),
    );
    assert_eq!(
        doc,
        json!({"name": "Ada", "address": {"city": "Berlin", "street": "Unter den Linden"}, "tags": ["a"]})
    );
}

fn index(name: &str, fields: &[&str], unique: bool) -> IndexDef {
    IndexDef {
        name: name.into(),
        collection: "users".into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        unique,
    }
}

fn plan_for(query: Value, indexes: &[IndexDef]) -> Plan {
    plan(
        "app",
        "users",
        &Query::parse(&query).expect("query"),
        indexes,
    )
}

#[test]
fn the_planner_prefers_the_index_with_most_pinned_fields() {
    let indexes = [
        index("by_city", &["city"], false),
        index("by_city_age", &["city", "age"], false),
        index("by_email", &["email"], true),
    ];
    let chosen = |query: Value| plan_for(query, &indexes).index.map(|def| def.name);
    assert_eq!(chosen(json!({"email": "a@b"})), Some("by_email".into()));
    assert_eq!(
        chosen(json!({"city": "Berlin", "age": 30})),
        Some("by_city_age".into())
    );
    assert_eq!(
        chosen(json!({"city": "Berlin", "age": {"$gt": 30}})),
        Some("by_city_age".into())
    );
    assert_eq!(
        chosen(json!({"city": {"$prefix": "Ber"}})),
        Some("by_city".into())
    );
    assert_eq!(
        chosen(json!({"$and": [{"city": {"$in": ["A", "B"]}}, {"x": 1}]})),
        Some("by_city".into())
    );
    // Not servable: no constraint on a first field, an `$or`, a `$ne`, an
    // equality on an array.
    assert_eq!(chosen(json!({"age": 30})), None);
    assert_eq!(chosen(json!({"$or": [{"city": "A"}, {"city": "B"}]})), None);
    assert_eq!(chosen(json!({"city": {"$ne": "A"}})), None);
    assert_eq!(chosen(json!({"email": ["a"]})), None);
    assert!(plan_for(json!({"email": "a"}), &indexes).id_ordered);
    assert!(!plan_for(json!({"city": "a"}), &indexes[1..2]).id_ordered);
}

#[test]
fn cursors_round_trip_and_reject_junk() {
    let key = (vec![0x05, b'a', 0, 0], "01ABC".to_string());
    assert_eq!(decode_cursor(&encode_cursor(&key)).expect("decodes"), key);
    for junk in ["", "zz.a", "0.a", "05.", "05.a/b"] {
        assert!(
            matches!(decode_cursor(junk), Err(FindError::BadCursor)),
            "{junk}"
        );
    }
}
