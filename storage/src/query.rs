//! The document query language (`docs.find`, the admin API, the CLI): a JSON
//! object of field paths and operators, checked once into a [`Query`] and then
//! evaluated against documents.
//!
//! ```text
//! {"age": {"$gt": 30}, "address.city": "Berlin"}            field paths, implicit $eq
//! {"$or": [{"tags": {"$contains": "pi"}}, {"name": {"$prefix": "A"}}]}
//! {"$not": {"deleted": {"$exists": true}}}
//! ```
//!
//! Operators: `$eq $ne $gt $gte $lt $lte $in $nin $exists $prefix $contains`,
//! combined with `$and $or $not`. A malformed query is an error that names the
//! operator and the path — never a silently empty result. Comparisons only
//! hold between values of one kind (numbers by value, strings by bytes,
//! booleans); a document whose field has another kind simply does not match.
//! `{"f": null}` matches a field that is present and null; absence is
//! `{"f": {"$exists": false}}`. `$ne` and `$nin` match absent fields.
//!
//! Planning and executing queries over stored documents (and indexes) is
//! `crate::docs`.

use serde_json::Value;

/// Deepest nesting of `$and`/`$or`/`$not` accepted.
pub const QUERY_DEPTH_MAX: usize = 16;
/// Most conditions (field operators) in one query.
pub const QUERY_CONDITIONS_MAX: usize = 256;
/// Most values in one `$in`/`$nin` list.
pub const QUERY_IN_VALUES_MAX: usize = 1_024;

/// A checked query.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Every document.
    All,
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
    /// One operator on one field path.
    Field {
        path: String,
        op: Op,
    },
}

/// A field operator with its operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Prefix(String),
    Contains(Value),
}

/// Why a query was refused; `path` is the field path (or `$and`...) it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query: {operator} at {path}: {message}")]
pub struct QueryError {
    pub operator: String,
    pub path: String,
    pub message: String,
}

fn error(operator: &str, path: &str, message: impl Into<String>) -> QueryError {
    QueryError {
        operator: operator.to_string(),
        path: if path.is_empty() {
            "the top level".to_string()
        } else {
            path.to_string()
        },
        message: message.into(),
    }
}

impl Query {
    /// Checks a JSON query.
    pub fn parse(json: &Value) -> Result<Query, QueryError> {
        let mut conditions = 0;
        parse_object(json, "", 0, &mut conditions)
    }

    /// Whether `doc` matches.
    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Query::All => true,
            Query::And(parts) => parts.iter().all(|part| part.matches(doc)),
            Query::Or(parts) => parts.iter().any(|part| part.matches(doc)),
            Query::Not(inner) => !inner.matches(doc),
            Query::Field { path, op } => op.holds(lookup(doc, path)),
        }
    }

    /// The value a top-level equality on `path` requires, if the query has
    /// one that every match must satisfy (what an index on `path` can use).
    pub fn required_equality(&self, path: &str) -> Option<&Value> {
        match self {
            Query::Field {
                path: field,
                op: Op::Eq(value),
            } if field == path => Some(value),
            Query::And(parts) => parts.iter().find_map(|part| part.required_equality(path)),
            _ => None,
        }
    }
}

fn parse_object(
    json: &Value,
    path: &str,
    depth: usize,
    conditions: &mut usize,
) -> Result<Query, QueryError> {
    if depth > QUERY_DEPTH_MAX {
        return Err(error(
            "$and/$or/$not",
            path,
            format!("nested deeper than {QUERY_DEPTH_MAX}"),
        ));
    }
    let Value::Object(map) = json else {
        return Err(error(
            "query",
            path,
            format!("must be an object, got {}", kind_of(json)),
        ));
    };
    let mut parts = Vec::with_capacity(map.len());
    for (key, value) in map {
        let part = match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = value else {
                    return Err(error(key, path, "needs an array of queries"));
                };
                if items.is_empty() {
                    return Err(error(key, path, "needs at least one query"));
                }
                let items = items
                    .iter()
                    .map(|item| parse_object(item, path, depth + 1, conditions))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$and" {
                    Query::And(items)
                } else {
                    Query::Or(items)
                }
            }
            "$not" => Query::Not(Box::new(parse_object(value, path, depth + 1, conditions)?)),
            other if other.starts_with('$') => {
                return Err(error(
                    other,
                    path,
                    "unknown operator here (top level takes field paths, $and, $or, $not)",
                ));
            }
            field => {
                check_path(field)?;
                parse_field(field, value, conditions)?
            }
        };
        parts.push(part);
    }
    Ok(match parts.len() {
        0 => Query::All,
        1 => parts.pop().unwrap_or(Query::All),
        _ => Query::And(parts),
    })
}

fn check_path(path: &str) -> Result<(), QueryError> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(error(
            "path",
            path,
            "field paths are dot-separated names, none empty",
        ));
    }
    Ok(())
}

/// `{"path": value}` (equality) or `{"path": {"$op": operand, ...}}`.
fn parse_field(path: &str, value: &Value, conditions: &mut usize) -> Result<Query, QueryError> {
    let operators = match value {
        Value::Object(map) if map.keys().any(|key| key.starts_with('$')) => map,
        // A literal (an object without operators included) means equality.
        literal => return condition(path, Op::Eq(literal.clone()), conditions),
    };
    if let Some(plain) = operators.keys().find(|key| !key.starts_with('$')) {
        return Err(error(
            plain,
            path,
            "cannot mix operators and plain fields in one object",
        ));
    }
    let mut parts = Vec::with_capacity(operators.len());
    for (operator, operand) in operators {
        let op = parse_op(operator, operand, path)?;
        parts.push(condition(path, op, conditions)?);
    }
    Ok(if parts.len() == 1 {
        parts.pop().unwrap_or(Query::All)
    } else {
        Query::And(parts)
    })
}

fn condition(path: &str, op: Op, conditions: &mut usize) -> Result<Query, QueryError> {
    *conditions += 1;
    if *conditions > QUERY_CONDITIONS_MAX {
        return Err(error(
            "query",
            path,
            format!("more than {QUERY_CONDITIONS_MAX} conditions"),
        ));
    }
    Ok(Query::Field {
        path: path.to_string(),
        op,
    })
}

fn parse_op(operator: &str, operand: &Value, path: &str) -> Result<Op, QueryError> {
    let scalar = |operand: &Value| match operand {
        Value::Number(_) | Value::String(_) | Value::Bool(_) => Ok(operand.clone()),
        other => Err(error(
            operator,
            path,
            format!(
                "compares with a number, string or boolean, got {}",
                kind_of(other)
            ),
        )),
    };
    let list = |operand: &Value| match operand {
        Value::Array(items) if items.len() <= QUERY_IN_VALUES_MAX => Ok(items.clone()),
        Value::Array(_) => Err(error(
            operator,
            path,
            format!("takes at most {QUERY_IN_VALUES_MAX} values"),
        )),
        other => Err(error(
            operator,
            path,
            format!("needs an array of values, got {}", kind_of(other)),
        )),
    };
    Ok(match operator {
        "$eq" => Op::Eq(operand.clone()),
        "$ne" => Op::Ne(operand.clone()),
        "$gt" => Op::Gt(scalar(operand)?),
        "$gte" => Op::Gte(scalar(operand)?),
        "$lt" => Op::Lt(scalar(operand)?),
        "$lte" => Op::Lte(scalar(operand)?),
        "$in" => Op::In(list(operand)?),
        "$nin" => Op::Nin(list(operand)?),
        "$exists" => match operand {
            Value::Bool(exists) => Op::Exists(*exists),
            other => {
                return Err(error(
                    operator,
                    path,
                    format!("needs true or false, got {}", kind_of(other)),
                ));
            }
        },
        "$prefix" => match operand {
            Value::String(prefix) => Op::Prefix(prefix.clone()),
            other => {
                return Err(error(
                    operator,
                    path,
                    format!("needs a string, got {}", kind_of(other)),
                ));
            }
        },
        "$contains" => Op::Contains(operand.clone()),
        "$and" | "$or" | "$not" => {
            return Err(error(
                operator,
                path,
                "combines whole queries: use it at the top level or inside $and/$or",
            ));
        }
        other => {
            return Err(error(
                other,
                path,
                "unknown operator (known: $eq $ne $gt $gte $lt $lte $in $nin $exists $prefix $contains)",
            ));
        }
    })
}

impl Op {
    /// Whether the field's value (`None` when absent) satisfies the operator.
    fn holds(&self, value: Option<&Value>) -> bool {
        match self {
            Op::Eq(expected) => value.is_some_and(|v| equal(v, expected)),
            Op::Ne(expected) => !value.is_some_and(|v| equal(v, expected)),
            Op::Gt(bound) => compare(value, bound).is_some_and(|o| o.is_gt()),
            Op::Gte(bound) => compare(value, bound).is_some_and(|o| o.is_ge()),
            Op::Lt(bound) => compare(value, bound).is_some_and(|o| o.is_lt()),
            Op::Lte(bound) => compare(value, bound).is_some_and(|o| o.is_le()),
            Op::In(options) => value.is_some_and(|v| options.iter().any(|o| equal(v, o))),
            Op::Nin(options) => !value.is_some_and(|v| options.iter().any(|o| equal(v, o))),
            Op::Exists(exists) => value.is_some() == *exists,
            Op::Prefix(prefix) => {
                matches!(value, Some(Value::String(text)) if text.starts_with(prefix.as_str()))
            }
            Op::Contains(item) => {
                matches!(value, Some(Value::Array(items)) if items.iter().any(|i| equal(i, item)))
            }
        }
    }
}

/// The value at a dot-separated path through nested objects.
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(doc, |value, name| value.as_object()?.get(name))
}

/// JSON equality with numbers compared by value (`1` equals `1.0`; integers
/// exactly, so large ones do not collide through `f64`). The one definition
/// `apply` (kv `cas`), queries and trigger runs share.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// Orders two values of one kind; `None` across kinds (no match).
fn compare(value: Option<&Value>, bound: &Value) -> Option<std::cmp::Ordering> {
    match (value?, bound) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod tests;
