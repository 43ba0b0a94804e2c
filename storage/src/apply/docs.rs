//! Applying document writes and index changes (a part of `apply`).
//!
//! A document write reads the stored document, computes the new one, moves
//! its index entries (refusing a taken unique key) and queues runs of the
//! docs triggers it fires, all in the command's `Txn`: point reads only, so
//! `Command::Docs` may share a batch entry with other commands.

use serde_json::Value;

use super::outbox::enqueue_run;
use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::command::{ApplyError, CommandResult, DocOp, DocOpResult};
use crate::docs::{
    self, DOC_BYTES_MAX, INDEX_STRING_BYTES_MAX, IndexDef, built_indexes_key, doc_key, index_entry,
    index_prefix, merge_patch,
};
use crate::error::StorageError;
use crate::triggers::{TriggerEvent, TriggerSet};

impl<B: Backend + ?Sized> Txn<'_, B> {
    fn built_indexes(&self, app: &str) -> Result<Vec<IndexDef>, StorageError> {
        Ok(self
            .get_decoded(Keyspace::Triggers, &built_indexes_key(app), "index set")?
            .unwrap_or_default())
    }
}

/// `Command::Docs`: every op or none.
pub(super) fn docs_write<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    ops: &[DocOp],
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let Some(record) = txn.app(app)? else {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    };
    let triggers = txn.triggers_of(&record)?;
    Ok(doc_ops(txn, app, ops, triggers.as_ref(), 1, now_ms)?.map(CommandResult::Docs))
}

/// `ops` in order, all or nothing (the caller clears the writes on a
/// rejection); docs triggers they fire get runs of chain depth `depth`.
pub(super) fn doc_ops<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    ops: &[DocOp],
    triggers: Option<&TriggerSet>,
    depth: u32,
    now_ms: u64,
) -> Result<Result<Vec<DocOpResult>, ApplyError>, StorageError> {
    let indexes = txn.built_indexes(app)?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match doc_op(txn, app, op, &indexes, triggers, depth, now_ms)? {
            Ok(result) => results.push(result),
            Err(rejection) => return Ok(Err(rejection)),
        }
    }
    Ok(Ok(results))
}

fn invalid(op: &DocOp, message: impl Into<String>) -> ApplyError {
    ApplyError::InvalidDocument {
        collection: op.collection().into(),
        id: op.id().into(),
        message: message.into(),
    }
}

/// A JSON object with `_id` set to `id`, or why not.
fn as_document(op: &DocOp, bytes: &[u8]) -> Result<Value, ApplyError> {
    let mut doc: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(op, format!("not JSON: {e}")))?;
    let Value::Object(fields) = &mut doc else {
        return Err(invalid(op, "a document must be a JSON object"));
    };
    match fields.get("_id") {
        None => {}
        Some(Value::String(id)) if id == op.id() => {}
        Some(other) => {
            return Err(invalid(
                op,
                format!("_id is {other}; a document's _id cannot change"),
            ));
        }
    }
    fields.insert("_id".into(), Value::String(op.id().into()));
    Ok(doc)
}

#[allow(clippy::too_many_arguments)]
fn doc_op<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    op: &DocOp,
    indexes: &[IndexDef],
    triggers: Option<&TriggerSet>,
    depth: u32,
    now_ms: u64,
) -> Result<Result<DocOpResult, ApplyError>, StorageError> {
    let (coll, id) = (op.collection(), op.id());
    let key = doc_key(app, coll, id);
    let old_bytes = txn.get(Keyspace::Docs, &key)?;
    let old: Option<Value> = match &old_bytes {
        Some(bytes) => Some(
            serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
                what: "document",
                detail: e.to_string(),
            })?,
        ),
        None => None,
    };
    let (new, result, trigger_op) = match (op, &old) {
        (DocOp::Insert { .. }, Some(_)) => {
            return Ok(Err(ApplyError::DocExists {
                collection: coll.into(),
                id: id.into(),
            }));
        }
        (DocOp::Insert { doc, .. }, None) => match as_document(op, doc) {
            Ok(doc) => (Some(doc), DocOpResult::Inserted, "insert"),
            Err(rejection) => return Ok(Err(rejection)),
        },
        (DocOp::Update { .. }, None) => return Ok(Ok(DocOpResult::Updated { found: false })),
        (DocOp::Replace { .. }, None) => return Ok(Ok(DocOpResult::Replaced { found: false })),
        (DocOp::Delete { .. }, None) => return Ok(Ok(DocOpResult::Deleted { existed: false })),
        (DocOp::Update { patch, .. }, Some(old)) => {
            let patch: Value = match serde_json::from_slice(patch) {
                Ok(Value::Object(patch)) => Value::Object(patch),
                _ => return Ok(Err(invalid(op, "an update's patch must be a JSON object"))),
            };
            let mut doc = old.clone();
            merge_patch(&mut doc, &patch);
            match as_document(op, doc.to_string().as_bytes()) {
                Ok(doc) => (Some(doc), DocOpResult::Updated { found: true }, "update"),
                Err(rejection) => return Ok(Err(rejection)),
            }
        }
        (DocOp::Replace { doc, .. }, Some(_)) => match as_document(op, doc) {
            Ok(doc) => (Some(doc), DocOpResult::Replaced { found: true }, "update"),
            Err(rejection) => return Ok(Err(rejection)),
        },
        (DocOp::Delete { .. }, Some(_)) => (None, DocOpResult::Deleted { existed: true }, "delete"),
    };
    let new_bytes = match &new {
        Some(doc) => {
            let bytes = doc.to_string().into_bytes();
            if bytes.len() > DOC_BYTES_MAX {
                return Ok(Err(ApplyError::DocTooLarge {
                    collection: coll.into(),
                    id: id.into(),
                    bytes: bytes.len() as u64,
                    max: DOC_BYTES_MAX as u64,
                }));
            }
            Some(bytes)
        }
        None => None,
    };
    for def in indexes.iter().filter(|def| def.collection == coll) {
        if let Err(rejection) = move_index_entry(txn, app, def, id, old.as_ref(), new.as_ref())? {
            return Ok(Err(rejection));
        }
    }
    match &new_bytes {
        Some(bytes) => txn.put(Keyspace::Docs, key, bytes.clone()),
        None => txn.delete(Keyspace::Docs, key),
    }
    if let Some(set) = triggers {
        let fired: Vec<String> = set
            .docs_triggers_on(coll, trigger_op)
            .map(str::to_string)
            .collect();
        for trigger in fired {
            let event = TriggerEvent::Docs {
                collection: coll.into(),
                id: id.into(),
                op: trigger_op.into(),
                old: old_bytes.clone(),
                new: new_bytes.clone(),
            };
            if let Err(rejection) = enqueue_run(txn, app, set, &trigger, event, depth, now_ms)? {
                return Ok(Err(rejection));
            }
        }
    }
    Ok(Ok(result))
}

/// The entry `def` holds for a document, or the rejection of its values.
fn entry_of(
    app: &str,
    def: &IndexDef,
    doc: Option<&Value>,
    id: &str,
) -> Result<Option<(Vec<u8>, bool)>, ApplyError> {
    let Some(doc) = doc else {
        return Ok(None);
    };
    index_entry(&index_prefix(app, def), def, doc, id).map_err(|field| {
        ApplyError::IndexValueTooLarge {
            index: def.name.clone(),
            field,
            max: INDEX_STRING_BYTES_MAX as u64,
        }
    })
}

/// Moves document `id`'s entry in `def` from its `old` to its `new` values.
fn move_index_entry<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    def: &IndexDef,
    id: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<Result<(), ApplyError>, StorageError> {
    // A stored document always fit its indexes when it was written.
    let before = entry_of(app, def, old, id).unwrap_or_default();
    let after = match entry_of(app, def, new, id) {
        Ok(entry) => entry,
        Err(rejection) => return Ok(Err(rejection)),
    };
    if before == after {
        return Ok(Ok(()));
    }
    if let Some((key, _)) = before {
        txn.delete(Keyspace::DocIndex, key);
    }
    if let Some((key, constrained)) = after {
        if constrained
            && let Some(holder) = txn.get(Keyspace::DocIndex, &key)?
            && holder != id.as_bytes()
        {
            return Ok(Err(ApplyError::UniqueViolation {
                index: def.name.clone(),
                collection: def.collection.clone(),
                existing: String::from_utf8_lossy(&holder).into_owned(),
            }));
        }
        txn.put(Keyspace::DocIndex, key, id.as_bytes().to_vec());
    }
    Ok(Ok(()))
}

/// Makes `wanted` the built index set of `app`: drops the built indexes it
/// lacks and builds its new ones from the stored documents (a unique index
/// the documents violate rejects the whole command). Reads the backend, so
/// the command runs alone in its `Txn`.
pub(super) fn switch_indexes<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    wanted: &[IndexDef],
) -> Result<Result<(), ApplyError>, StorageError> {
    let built = txn.built_indexes(app)?;
    if built == wanted {
        return Ok(Ok(()));
    }
    // The backend outlives the borrow of `txn`: scan it while writing.
    let backend = txn.backend;
    for def in built.iter().filter(|def| !wanted.contains(def)) {
        let prefix = index_prefix(app, def);
        for item in backend.scan(Keyspace::DocIndex, &prefix, &prefix) {
            txn.delete(Keyspace::DocIndex, item?.0);
        }
    }
    for def in wanted.iter().filter(|def| !built.contains(def)) {
        let prefix = docs::collection_prefix(app, &def.collection);
        for item in backend.scan(Keyspace::Docs, &prefix, &prefix) {
            let (key, bytes) = item?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let doc: Value = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
                what: "document",
                detail: e.to_string(),
            })?;
            if let Err(rejection) = move_index_entry(txn, app, def, &id, None, Some(&doc))? {
                return Ok(Err(rejection));
            }
        }
    }
    txn.put_encoded(
        Keyspace::Triggers,
        built_indexes_key(app),
        &wanted.to_vec(),
        "index set",
    )?;
    Ok(Ok(()))
}

/// Reads the index set stored with `app`'s `version` (empty when the
/// version was deployed without one).
pub(super) fn version_indexes<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    app: &str,
    version: u64,
) -> Result<Vec<IndexDef>, StorageError> {
    match txn.get(Keyspace::Triggers, &docs::index_set_key(app, version))? {
        Some(bytes) => {
            codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("index set"))
        }
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests;
