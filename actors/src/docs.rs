//! The document service behind `docs.*`, the admin API and the CLI: checks
//! calls, turns writes into [`DocOp`]s for `Command::Docs`, and runs reads
//! through the `StateReader` (queries are planned and executed by
//! `picloud_storage::docs`).

use std::sync::Mutex;

use picloud_lua_sdk::{Code, DocsCall, FindArgs, HostError};
use picloud_storage::docs::{
    self, DOC_BYTES_MAX, FIND_LIMIT_DEFAULT, FIND_LIMIT_MAX, FindError, FindOptions,
    SORT_FIELDS_MAX,
};
use picloud_storage::query::Query;
use picloud_storage::{DocOp, DocOpResult, StateReader};
use serde_json::{Value, json};

use crate::config::ActorLimits;

/// The last id handed out, so ids from one node strictly increase.
static LAST_ID: Mutex<(u64, u128)> = Mutex::new((0, 0));

/// A new document id: time-ordered (ULID-style), and strictly increasing on
/// this node even within one millisecond.
pub fn next_doc_id(now_ms: u64) -> String {
    let mut last = LAST_ID
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (ms, random) = if now_ms > last.0 {
        (now_ms, rand::random::<u128>() >> 49)
    } else {
        (last.0, last.1 + 1)
    };
    *last = (ms, random);
    docs::new_doc_id(ms, random)
}

fn invalid(code: Code, message: impl Into<String>) -> HostError {
    HostError::new(code, message)
}

fn check_collection(collection: &str) -> Result<(), HostError> {
    docs::check_collection(collection).map_err(|e| invalid(Code::InvalidCollection, e))
}

fn check_id(id: &str) -> Result<(), HostError> {
    docs::check_doc_id(id).map_err(|e| invalid(Code::InvalidId, e))
}

fn document_bytes(doc: &Value) -> Result<Vec<u8>, HostError> {
    let bytes =
        serde_json::to_vec(doc).map_err(|e| invalid(Code::InvalidDocument, e.to_string()))?;
    if bytes.len() > DOC_BYTES_MAX {
        return Err(invalid(
            Code::ValueTooLarge,
            format!(
                "the document is {} bytes as JSON; the limit is {DOC_BYTES_MAX}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// The op a write call makes (`None` for a read), with a fresh id for an
/// insert without `_id`.
pub fn write_op(call: &DocsCall, now_ms: u64) -> Result<Option<DocOp>, HostError> {
    Ok(Some(match call {
        DocsCall::Insert { collection, doc } => {
            check_collection(collection)?;
            let id = match doc.get("_id") {
                None => next_doc_id(now_ms),
                Some(Value::String(id)) => {
                    check_id(id)?;
                    id.clone()
                }
                Some(other) => {
                    return Err(invalid(
                        Code::InvalidDocument,
                        format!("_id must be a string, got {other}"),
                    ));
                }
            };
            DocOp::Insert {
                collection: collection.clone(),
                id,
                doc: document_bytes(doc)?,
            }
        }
        DocsCall::Update {
            collection,
            id,
            patch,
        } => {
            check_collection(collection)?;
            check_id(id)?;
            DocOp::Update {
                collection: collection.clone(),
                id: id.clone(),
                patch: document_bytes(patch)?,
            }
        }
        DocsCall::Replace {
            collection,
            id,
            doc,
        } => {
            check_collection(collection)?;
            check_id(id)?;
            DocOp::Replace {
                collection: collection.clone(),
                id: id.clone(),
                doc: document_bytes(doc)?,
            }
        }
        DocsCall::Delete { collection, id } => {
            check_collection(collection)?;
            check_id(id)?;
            DocOp::Delete {
                collection: collection.clone(),
                id: id.clone(),
            }
        }
        DocsCall::Get { .. } | DocsCall::Find { .. } | DocsCall::Count { .. } => return Ok(None),
    }))
}

/// What a script sees of an applied write: the id of an insert, else
/// whether the document was there.
pub fn write_result(op: &DocOp, result: &DocOpResult) -> Value {
    match result {
        DocOpResult::Inserted => Value::String(op.id().to_string()),
        DocOpResult::Updated { found } | DocOpResult::Replaced { found } => Value::Bool(*found),
        DocOpResult::Deleted { existed } => Value::Bool(*existed),
    }
}

fn storage_error(error: picloud_storage::StorageError) -> HostError {
    HostError::new(Code::Storage, error.to_string())
}

fn find_error(error: FindError) -> HostError {
    match error {
        FindError::Storage(error) => storage_error(error),
        too_broad @ FindError::TooBroad { .. } => {
            invalid(Code::QueryTooBroad, too_broad.to_string())
        }
        bad @ FindError::BadCursor => invalid(Code::InvalidCursor, bad.to_string()),
    }
}

fn parse_query(query: &Value) -> Result<Query, HostError> {
    Query::parse(query).map_err(|e| invalid(Code::InvalidQuery, e.to_string()))
}

/// The bounds of one documents read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Documents a query may examine (`docs_scan_max`).
    pub scan_max: u64,
    /// Stored bytes one page may hold (`read_page_bytes_max`).
    pub page_bytes_max: usize,
}

impl From<&ActorLimits> for ReadLimits {
    fn from(limits: &ActorLimits) -> ReadLimits {
        ReadLimits {
            scan_max: limits.docs_scan_max,
            page_bytes_max: limits.read_page_bytes_max,
        }
    }
}

/// A read call against this node's applied state (the caller decides how
/// fresh it must be). Blocking: a query may examine up to `scan_max`
/// documents.
pub fn read(
    reader: &StateReader,
    app: &str,
    call: &DocsCall,
    limits: ReadLimits,
) -> Result<Value, HostError> {
    match call {
        DocsCall::Get { collection, id } => {
            check_collection(collection)?;
            check_id(id)?;
            match reader.doc_get(app, collection, id).map_err(storage_error)? {
                Some(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| HostError::new(Code::CorruptValue, e.to_string())),
                None => Ok(Value::Null),
            }
        }
        DocsCall::Find {
            collection,
            query,
            options,
        } => find(reader, app, collection, query, options, limits),
        DocsCall::Count { collection, query } => {
            check_collection(collection)?;
            let query = parse_query(query)?;
            let (count, _) = reader
                .docs_count(app, collection, &query, limits.scan_max)
                .map_err(find_error)?;
            Ok(json!(count))
        }
        write => Err(HostError::new(
            Code::Internal,
            format!("not a read: {write:?}"),
        )),
    }
}

/// [`read`] on a blocking thread, so a long query never holds an async worker.
pub async fn read_off_workers(
    reader: StateReader,
    app: &str,
    call: DocsCall,
    limits: ReadLimits,
) -> Result<Value, HostError> {
    let app = app.to_string();
    tokio::task::spawn_blocking(move || read(&reader, &app, &call, limits))
        .await
        .map_err(|e| HostError::new(Code::Internal, format!("docs read panicked: {e}")))?
}

/// `docs.find`: `{"items": [...], "cursor": ..., "explain": ...}`. A page
/// may hold fewer than `limit` documents (but then has a cursor) when they
/// would exceed `page_bytes_max`.
pub fn find(
    reader: &StateReader,
    app: &str,
    collection: &str,
    query: &Value,
    args: &FindArgs,
    limits: ReadLimits,
) -> Result<Value, HostError> {
    check_collection(collection)?;
    let query = parse_query(query)?;
    let limit = args.limit.unwrap_or(FIND_LIMIT_DEFAULT);
    if !(1..=FIND_LIMIT_MAX).contains(&limit) {
        return Err(invalid(
            Code::InvalidLimit,
            format!("limit must be 1 to {FIND_LIMIT_MAX}, got {limit}"),
        ));
    }
    if args.sort.len() > SORT_FIELDS_MAX {
        return Err(invalid(
            Code::InvalidSort,
            format!("sort by at most {SORT_FIELDS_MAX} fields"),
        ));
    }
    if let Some(bad) = args
        .sort
        .iter()
        .map(|(field, _)| field)
        .chain(args.fields.iter().flatten())
        .find(|field| field.is_empty() || field.split('.').any(str::is_empty))
    {
        return Err(invalid(
            Code::InvalidField,
            format!("{bad:?} is not a field path (such as \"age\" or \"address.city\")"),
        ));
    }
    let options = FindOptions {
        sort: args.sort.clone(),
        limit,
        cursor: args.cursor.clone(),
        fields: args.fields.clone(),
        scan_max: limits.scan_max,
        bytes_max: limits.page_bytes_max,
    };
    let page = reader
        .docs_find(app, collection, &query, &options)
        .map_err(find_error)?;
    let mut result = json!({ "items": page.docs });
    if let Some(cursor) = page.cursor {
        result["cursor"] = Value::String(cursor);
    }
    if args.explain {
        result["explain"] = explain_json(&page.explain);
    }
    Ok(result)
}

fn explain_json(explain: &docs::Explain) -> Value {
    let mut value = json!({
        "plan": if explain.index.is_some() { "index" } else { "collection_scan" },
        "index_keys_examined": explain.index_keys_examined,
        "docs_examined": explain.docs_examined,
        "returned": explain.returned,
    });
    if let Some(index) = &explain.index {
        value["index"] = Value::String(index.clone());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_within_one_millisecond() {
        let ids: Vec<String> = (0..100).map(|_| next_doc_id(5_000)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        assert!(
            next_doc_id(1_000) > ids[99],
            "a clock step back keeps order"
        );
    }

    #[test]
    fn writes_check_names_ids_and_sizes() {
        let insert = |collection: &str, doc: Value| {
            write_op(
                &DocsCall::Insert {
                    collection: collection.into(),
                    doc,
                },
                1,
            )
        };
        let code =
            |result: Result<Option<DocOp>, HostError>| result.expect_err("bad").code.as_str();
        assert_eq!(code(insert("bad name", json!({}))), "invalid_collection");
        assert_eq!(code(insert("users", json!({"_id": 5}))), "invalid_document");
        assert_eq!(code(insert("users", json!({"_id": "a/b"}))), "invalid_id");
        let big = json!({"x": "y".repeat(DOC_BYTES_MAX)});
        assert_eq!(code(insert("users", big)), "value_too_large");
        let op = insert("users", json!({"_id": "ada"}))
            .expect("ok")
            .expect("write");
        assert_eq!(op.id(), "ada");
        assert_eq!(
            write_result(&op, &DocOpResult::Inserted),
            Value::String("ada".into())
        );
    }
}
