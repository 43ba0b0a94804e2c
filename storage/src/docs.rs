//! Documents: JSON objects in named collections of an app, the secondary
//! indexes an app declares in `picloud.toml`, and the query planner and
//! executor behind `docs.find` / `docs.count`.
//!
//! ```text
//! Docs      app | len(coll) coll | id                             → document JSON (holds "_id")
//! DocIndex  app | len(coll) coll | len(index) index | values [| id] → id
//! Triggers  app | 'i' | version → the version's index definitions
//!           app | 'b'           → the definitions built now (the active version's)
//! ```
//!
//! Index values use an order-preserving, prefix-free encoding (see
//! [`encode_key_value`]), so an equality is a prefix scan and a range is a
//! bounded scan. A unique index whose fields are all present and not null
//! keeps no id in the key: a second document with the same values finds the
//! key taken, and the write fails with `unique_violation`. A document whose
//! first indexed field is absent is not in the index (a query the index can
//! serve constrains that field, so it could not match anyway).
//!
//! An index only narrows the candidates: every candidate is checked against
//! the whole query, so a plan can never change a result, only its cost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::{Backend, Keyspace, prefix_successor};
use crate::error::StorageError;
use crate::keys;
use crate::query::{Op, Query, lookup};

/// The longest document, as JSON text, after an update's merge.
pub const DOC_BYTES_MAX: usize = 256 * 1024;
/// The longest document id, in bytes.
pub const DOC_ID_BYTES_MAX: usize = 128;
/// The longest collection name, in bytes.
pub const COLLECTION_BYTES_MAX: usize = 64;
/// The most fields one index may have.
pub const INDEX_FIELDS_MAX: usize = 4;
/// The most indexes one app may declare.
pub const INDEXES_MAX: usize = 32;
/// The longest string an index holds; a longer value in an indexed field
/// fails the write with `index_value_too_large`.
pub const INDEX_STRING_BYTES_MAX: usize = 1024;
/// The most documents one `docs.find` page returns.
pub const FIND_LIMIT_MAX: usize = 1000;
/// The page size when the caller gives none.
pub const FIND_LIMIT_DEFAULT: usize = 100;
/// The most sort fields.
pub const SORT_FIELDS_MAX: usize = 4;
/// The most index scan ranges one plan may use (an `$in` on several index
/// fields multiplies them); beyond it the planner uses fewer fields.
const PLAN_RANGES_MAX: usize = 64;

/// One index, as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Unique per collection; `unique_violation` names it.
    pub name: String,
    pub collection: String,
    /// Field paths (`address.city`), in key order.
    pub fields: Vec<String>,
    pub unique: bool,
}

/// Checks a collection name: 1 to [`COLLECTION_BYTES_MAX`] bytes of
/// `[A-Za-z0-9_-]`, not starting with `_`.
pub fn check_collection(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > COLLECTION_BYTES_MAX {
        return Err(format!(
            "collection names are 1 to {COLLECTION_BYTES_MAX} bytes, got {}",
            name.len()
        ));
    }
    if name.starts_with('_')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "collection name {name:?} may hold only letters, digits, '_' and '-', and may not start with '_'"
        ));
    }
    Ok(())
}

/// Checks a document id: 1 to [`DOC_ID_BYTES_MAX`] bytes of `[A-Za-z0-9_.:-]`.
pub fn check_doc_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > DOC_ID_BYTES_MAX {
        return Err(format!(
            "document ids are 1 to {DOC_ID_BYTES_MAX} bytes, got {}",
            id.len()
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(format!(
            "document id {id:?} may hold only letters, digits, '_', '-', '.' and ':'"
        ));
    }
    Ok(())
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID-style id: 10 characters of milliseconds, then 16 of `random`
/// (80 bits), Crockford base32. Ids sort by creation time.
pub fn new_doc_id(now_ms: u64, random: u128) -> String {
    let mut id = String::with_capacity(26);
    let time = now_ms & ((1 << 48) - 1);
    for shift in (0..10).rev() {
        id.push(CROCKFORD[((time >> (shift * 5)) & 31) as usize] as char);
    }
    let random = random & ((1 << 80) - 1);
    for shift in (0..16).rev() {
        id.push(CROCKFORD[((random >> (shift * 5)) & 31) as usize] as char);
    }
    id
}

// ---------------------------------------------------------------- keys

fn push_len_prefixed(out: &mut Vec<u8>, text: &str) {
    // Collection and index names are at most 64 bytes.
    out.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(text.as_bytes());
}

/// The `Docs` prefix of collection `coll` of `app`.
pub(crate) fn collection_prefix(app: &str, coll: &str) -> Vec<u8> {
    let mut key = keys::app_prefix(app);
    push_len_prefixed(&mut key, coll);
    key
}

/// The `Docs` key of document `id`.
pub(crate) fn doc_key(app: &str, coll: &str, id: &str) -> Vec<u8> {
    let mut key = collection_prefix(app, coll);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The `DocIndex` prefix of index `def` of `app`.
pub(crate) fn index_prefix(app: &str, def: &IndexDef) -> Vec<u8> {
    let mut key = collection_prefix(app, &def.collection);
    push_len_prefixed(&mut key, &def.name);
    key
}

/// `Triggers` key of the index definitions of `app`'s `version`.
pub(crate) fn index_set_key(app: &str, version: u64) -> Vec<u8> {
    let mut key = keys::app_prefix(app);
    key.push(b'i');
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// `Triggers` key of the index definitions built for `app` now.
pub(crate) fn built_indexes_key(app: &str) -> Vec<u8> {
    let mut key = keys::app_prefix(app);
    key.push(b'b');
    key
}

// ---------------------------------------------------------------- value encoding

const TAG_ABSENT: u8 = 0x00;
const TAG_NULL: u8 = 0x01;
const TAG_FALSE: u8 = 0x02;
const TAG_TRUE: u8 = 0x03;
const TAG_NUMBER: u8 = 0x04;
const TAG_STRING: u8 = 0x05;
const TAG_OTHER: u8 = 0x06;

fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
}

fn push_number(out: &mut Vec<u8>, number: &serde_json::Number) {
    let mut value = number.as_f64().unwrap_or(0.0);
    if value == 0.0 {
        value = 0.0; // -0.0 and 0.0 are one value
    }
    let bits = value.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    out.extend_from_slice(&ordered.to_be_bytes());
}

/// Appends the sort encoding of `value` (`None` = absent): byte order is
/// absent < null < false < true < numbers (by value) < strings (by bytes) <
/// arrays and objects (by JSON text), and no encoding is a prefix of
/// another, so encodings can be concatenated and still compare field by
/// field. Numbers go through `f64` (integers beyond 2^53 may share a key;
/// an index only narrows candidates, so results stay exact).
pub fn encode_key_value(value: Option<&Value>, out: &mut Vec<u8>) {
    match value {
        None => out.push(TAG_ABSENT),
        Some(Value::Null) => out.push(TAG_NULL),
        Some(Value::Bool(false)) => out.push(TAG_FALSE),
        Some(Value::Bool(true)) => out.push(TAG_TRUE),
        Some(Value::Number(number)) => {
            out.push(TAG_NUMBER);
            push_number(out, number);
        }
        Some(Value::String(text)) => {
            out.push(TAG_STRING);
            push_escaped(out, text.as_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        Some(other) => {
            out.push(TAG_OTHER);
            push_escaped(out, other.to_string().as_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
}

/// The index encoding: like [`encode_key_value`], but arrays and objects
/// are only tagged (an index never serves an equality on them).
fn encode_index_value(value: Option<&Value>, out: &mut Vec<u8>) {
    match value {
        Some(Value::Array(_) | Value::Object(_)) => out.push(TAG_OTHER),
        other => encode_key_value(other, out),
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// The index entry of `doc` (id `id`) in `def`: its key, and whether the
/// key is unique-constrained. `None` when the first field is absent.
/// `Err(field)` when a string is longer than [`INDEX_STRING_BYTES_MAX`].
pub(crate) fn index_entry(
    prefix: &[u8],
    def: &IndexDef,
    doc: &Value,
    id: &str,
) -> Result<Option<(Vec<u8>, bool)>, String> {
    let first = def.fields.first().map(String::as_str).unwrap_or("_id");
    if lookup(doc, first).is_none() {
        return Ok(None);
    }
    let mut key = prefix.to_vec();
    let mut constrained = def.unique;
    for field in &def.fields {
        let value = lookup(doc, field);
        if let Some(Value::String(text)) = value
            && text.len() > INDEX_STRING_BYTES_MAX
        {
            return Err(field.clone());
        }
        if matches!(value, None | Some(Value::Null)) {
            constrained = false;
        }
        encode_index_value(value, &mut key);
    }
    if !constrained {
        key.extend_from_slice(id.as_bytes());
    }
    Ok(Some((key, constrained)))
}

// ---------------------------------------------------------------- merge patch

/// Applies a JSON merge patch (RFC 7386): `null` removes a field, an object
/// merges into the field's object, anything else replaces the field.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(fields) = target {
        for (name, value) in patch {
            if value.is_null() {
                fields.remove(name);
            } else {
                merge_patch(fields.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

// ---------------------------------------------------------------- planning

/// One index scan: keys with `prefix` from `start` (inclusive) to `end`
/// (exclusive; `None` = to the end of the prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScanRange {
    prefix: Vec<u8>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

/// How a query reads its candidates.
#[derive(Debug, Clone)]
struct Plan {
    /// `None`: the whole collection, in id order.
    index: Option<IndexDef>,
    ranges: Vec<ScanRange>,
    /// The candidates arrive in id order (one range, every field equal).
    id_ordered: bool,
}

fn conjuncts<'q>(query: &'q Query, out: &mut Vec<&'q Query>) {
    match query {
        Query::And(parts) => parts.iter().for_each(|part| conjuncts(part, out)),
        other => out.push(other),
    }
}

fn ops_on<'q>(parts: &[&'q Query], path: &str) -> Vec<&'q Op> {
    parts
        .iter()
        .filter_map(|part| match part {
            Query::Field { path: field, op } if field == path => Some(op),
            _ => None,
        })
        .collect()
}

/// The scalar values an index field must take, if the query pins it.
fn pinned_values<'q>(ops: &[&'q Op]) -> Option<Vec<&'q Value>> {
    ops.iter().find_map(|op| match op {
        Op::Eq(value) if is_scalar(value) => Some(vec![value]),
        Op::In(values) if !values.is_empty() && values.iter().all(is_scalar) => {
            Some(values.iter().collect())
        }
        _ => None,
    })
}

fn encoded(prefix: &[u8], value: &Value) -> Vec<u8> {
    let mut key = prefix.to_vec();
    encode_index_value(Some(value), &mut key);
    key
}

fn successor(key: &[u8]) -> Option<Vec<u8>> {
    prefix_successor(key)
}

/// Bounds a range or `$prefix` on one number or string field puts on keys
/// under `prefix`: (start, end).
fn range_bounds(prefix: &[u8], ops: &[&Op]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    for op in ops {
        if let Op::Prefix(text) = op {
            let mut start = prefix.to_vec();
            start.push(TAG_STRING);
            push_escaped(&mut start, text.as_bytes());
            let end = successor(&start);
            return Some((start, end));
        }
    }
    let tag = ops.iter().find_map(|op| match op {
        Op::Gt(v) | Op::Gte(v) | Op::Lt(v) | Op::Lte(v) => match v {
            Value::Number(_) => Some(TAG_NUMBER),
            Value::String(_) => Some(TAG_STRING),
            _ => None,
        },
        _ => None,
    })?;
    let same_kind = |v: &Value| match v {
        Value::Number(_) => tag == TAG_NUMBER,
        Value::String(_) => tag == TAG_STRING,
        _ => false,
    };
    let mut start = prefix.to_vec();
    start.push(tag);
    let mut end = Some([prefix, &[tag + 1]].concat());
    for op in ops {
        match op {
            Op::Gt(v) if same_kind(v) => {
                if let Some(bound) = successor(&encoded(prefix, v)) {
                    start = start.max(bound);
                }
            }
            Op::Gte(v) if same_kind(v) => start = start.max(encoded(prefix, v)),
            Op::Lt(v) if same_kind(v) => end = end.min(Some(encoded(prefix, v))),
            Op::Lte(v) if same_kind(v) => {
                if let Some(bound) = successor(&encoded(prefix, v)) {
                    end = end.min(Some(bound));
                }
            }
            _ => {}
        }
    }
    Some((start, end))
}

/// What `def` can do for the query: (score, ranges, id_ordered); `None`
/// when the query does not constrain its first field.
fn index_plan(
    app: &str,
    def: &IndexDef,
    parts: &[&Query],
) -> Option<(usize, Vec<ScanRange>, bool)> {
    let mut prefixes = vec![index_prefix(app, def)];
    let mut pinned = 0;
    for field in &def.fields {
        let ops = ops_on(parts, field);
        if let Some(values) = pinned_values(&ops)
            && prefixes.len() * values.len() <= PLAN_RANGES_MAX
        {
            prefixes = prefixes
                .iter()
                .flat_map(|prefix| values.iter().map(move |value| encoded(prefix, value)))
                .collect();
            prefixes.sort();
            prefixes.dedup();
            pinned += 1;
            continue;
        }
        if let Some(first) = prefixes.first()
            && range_bounds(first, &ops).is_some()
        {
            let ranges = prefixes
                .iter()
                .filter_map(|prefix| {
                    let (start, end) = range_bounds(prefix, &ops)?;
                    Some(ScanRange {
                        prefix: prefix.clone(),
                        start,
                        end,
                    })
                })
                .collect();
            return Some((pinned * 2 + 1, ranges, false));
        }
        break;
    }
    if pinned == 0 {
        return None;
    }
    let id_ordered = pinned == def.fields.len() && prefixes.len() == 1;
    let ranges = prefixes
        .into_iter()
        .map(|prefix| ScanRange {
            start: prefix.clone(),
            prefix,
            end: None,
        })
        .collect();
    Some((pinned * 2, ranges, id_ordered))
}

fn plan(app: &str, coll: &str, query: &Query, indexes: &[IndexDef]) -> Plan {
    let mut parts = Vec::new();
    conjuncts(query, &mut parts);
    let mut best: Option<(usize, Plan)> = None;
    for def in indexes.iter().filter(|def| def.collection == coll) {
        if let Some((score, ranges, id_ordered)) = index_plan(app, def, &parts)
            && best.as_ref().is_none_or(|(top, _)| score > *top)
        {
            let plan = Plan {
                index: Some(def.clone()),
                ranges,
                id_ordered,
            };
            best = Some((score, plan));
        }
    }
    best.map(|(_, plan)| plan).unwrap_or(Plan {
        index: None,
        ranges: Vec::new(),
        id_ordered: true,
    })
}

// ---------------------------------------------------------------- execution

/// The options of `docs.find`, checked by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindOptions {
    /// (path, descending). Empty: by `_id`, ascending.
    pub sort: Vec<(String, bool)>,
    pub limit: usize,
    /// A cursor from the previous page.
    pub cursor: Option<String>,
    /// Paths to return (plus `_id`); `None` = whole documents.
    pub fields: Option<Vec<String>>,
    /// Documents one query may examine before it fails with
    /// [`FindError::TooBroad`].
    pub scan_max: u64,
    /// Bytes (as stored JSON) one page may hold: a page ends early, with a
    /// cursor, once its documents add up to more (but always holds at least
    /// one). Without it a page of 1,000 documents of 256 KiB would be 256 MiB
    /// before it even reached a script.
    pub bytes_max: usize,
}

/// How a query ran (`docs.find(..., {explain = true})`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Explain {
    /// The index used, or `None` for a collection scan.
    pub index: Option<String>,
    pub index_keys_examined: u64,
    pub docs_examined: u64,
    pub returned: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FindPage {
    pub docs: Vec<Value>,
    /// Pass back to get the next page; `None` on the last page.
    pub cursor: Option<String>,
    pub explain: Explain,
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "the query examined {examined} documents without finishing (docs_scan_max); declare an index it can use"
    )]
    TooBroad { examined: u64 },
    #[error("the cursor is not one this query returned")]
    BadCursor,
}

/// The position of a document in a sort: the sort fields' encodings (each
/// inverted for a descending field), then the id.
type SortKey = (Vec<u8>, String);

fn sort_key(doc: &Value, id: &str, sort: &[(String, bool)]) -> SortKey {
    let mut bytes = Vec::new();
    for (path, descending) in sort {
        let start = bytes.len();
        encode_key_value(lookup(doc, path), &mut bytes);
        if *descending {
            bytes[start..].iter_mut().for_each(|b| *b = !*b);
        }
    }
    (bytes, id.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn encode_cursor(key: &SortKey) -> String {
    format!("{}.{}", hex(&key.0), key.1)
}

fn decode_cursor(cursor: &str) -> Result<SortKey, FindError> {
    let (bytes, id) = cursor.split_once('.').ok_or(FindError::BadCursor)?;
    let bytes = unhex(bytes).ok_or(FindError::BadCursor)?;
    check_doc_id(id).map_err(|_| FindError::BadCursor)?;
    Ok((bytes, id.to_string()))
}

fn project(doc: &Value, fields: &[String]) -> Value {
    let mut out = Value::Object(Map::new());
    for path in fields.iter().map(String::as_str).chain(["_id"]) {
        let Some(value) = lookup(doc, path) else {
            continue;
        };
        let mut target = &mut out;
        let mut names = path.split('.').peekable();
        while let Some(name) = names.next() {
            let Value::Object(map) = target else { break };
            if names.peek().is_none() {
                map.insert(name.to_string(), value.clone());
                break;
            }
            target = map
                .entry(name.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    out
}

/// Reads candidates of a plan and checks them against the query.
struct Executor<'a> {
    backend: &'a dyn Backend,
    app: &'a str,
    coll: &'a str,
    query: &'a Query,
    scan_max: u64,
    explain: Explain,
}

impl Executor<'_> {
    fn parse(&mut self, bytes: &[u8]) -> Result<Value, FindError> {
        self.explain.docs_examined += 1;
        if self.explain.docs_examined > self.scan_max {
            return Err(FindError::TooBroad {
                examined: self.explain.docs_examined - 1,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| {
            FindError::Storage(StorageError::Corrupt {
                what: "document",
                detail: e.to_string(),
            })
        })
    }

    /// Calls `visit(id, doc, stored_bytes)` for each matching document, in the plan's
    /// order, starting after id `after` when the plan is in id order;
    /// `visit` returns false to stop.
    fn each_match(
        &mut self,
        plan: &Plan,
        after: Option<&str>,
        mut visit: impl FnMut(String, Value, usize) -> bool,
    ) -> Result<(), FindError> {
        if plan.index.is_none() {
            let prefix = collection_prefix(self.app, self.coll);
            let start = match after {
                Some(id) => [doc_key(self.app, self.coll, id), vec![0]].concat(),
                None => prefix.clone(),
            };
            for item in self.backend.scan(Keyspace::Docs, &prefix, &start) {
                let (key, bytes) = item.map_err(StorageError::from)?;
                let doc = self.parse(&bytes)?;
                if self.query.matches(&doc) {
                    let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                    if !visit(id, doc, bytes.len()) {
                        return Ok(());
                    }
                }
            }
            return Ok(());
        }
        for range in &plan.ranges {
            let start = match after {
                Some(id) if plan.id_ordered => {
                    [range.start.as_slice(), id.as_bytes(), &[0]].concat()
                }
                _ => range.start.clone(),
            };
            for item in self.backend.scan(Keyspace::DocIndex, &range.prefix, &start) {
                let (key, id) = item.map_err(StorageError::from)?;
                if range.end.as_ref().is_some_and(|end| key >= *end) {
                    break;
                }
                self.explain.index_keys_examined += 1;
                let id = String::from_utf8_lossy(&id).into_owned();
                let Some(bytes) = self
                    .backend
                    .get(Keyspace::Docs, &doc_key(self.app, self.coll, &id))
                    .map_err(StorageError::from)?
                else {
                    continue;
                };
                let doc = self.parse(&bytes)?;
                if self.query.matches(&doc) && !visit(id, doc, bytes.len()) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The built indexes of `app`.
pub(crate) fn built_indexes(
    backend: &dyn Backend,
    app: &str,
) -> Result<Vec<IndexDef>, StorageError> {
    match backend.get(Keyspace::Triggers, &built_indexes_key(app))? {
        Some(bytes) => crate::codec::decode(&bytes, crate::codec::STORED_BYTES_MAX)
            .map_err(StorageError::codec("index set")),
        None => Ok(Vec::new()),
    }
}

/// One page of the documents of `coll` matching `query`.
pub(crate) fn find(
    backend: &dyn Backend,
    app: &str,
    coll: &str,
    query: &Query,
    options: &FindOptions,
) -> Result<FindPage, FindError> {
    let indexes = built_indexes(backend, app)?;
    let plan = plan(app, coll, query, &indexes);
    let after = options.cursor.as_deref().map(decode_cursor).transpose()?;
    let limit = options.limit.clamp(1, FIND_LIMIT_MAX);
    let mut executor = Executor {
        backend,
        app,
        coll,
        query,
        scan_max: options.scan_max,
        explain: Explain {
            index: plan.index.as_ref().map(|def| def.name.clone()),
            ..Explain::default()
        },
    };
    // The `limit + 1` smallest sort keys after the cursor, cut further to
    // `bytes_max` (see `Best`).
    let mut best = Best::new(limit, options.bytes_max);
    if options.sort.is_empty() && plan.id_ordered {
        // Candidates arrive in sort order: stop after one more than a page.
        let after_id = after.as_ref().map(|key| key.1.as_str());
        executor.each_match(&plan, after_id, |id, doc, bytes| {
            if after_id.is_some_and(|after| id.as_str() <= after) {
                return true;
            }
            best.offer((Vec::new(), id), doc, bytes);
            !best.is_full()
        })?;
    } else {
        executor.each_match(&plan, None, |id, doc, bytes| {
            let key = sort_key(&doc, &id, &options.sort);
            if after.as_ref().is_some_and(|after| key <= *after) {
                return true;
            }
            best.offer(key, doc, bytes);
            true
        })?;
    }
    let (best, more) = best.finish();
    let mut page = FindPage::default();
    let mut last = None;
    for (key, doc) in best.into_iter().take(limit) {
        page.docs.push(match &options.fields {
            Some(fields) => project(&doc, fields),
            None => doc,
        });
        last = Some(key);
    }
    if more {
        page.cursor = last.as_ref().map(encode_cursor);
    }
    executor.explain.returned = page.docs.len() as u64;
    page.explain = executor.explain;
    Ok(page)
}

/// The smallest sort keys seen so far, for one page: at most `limit` of
/// them, plus one to know that more follow, and no more stored bytes than
/// `bytes_max` (but at least one document). Candidates may arrive in any
/// order; dropping the largest keys keeps what is held a prefix of the
/// result, so the page's last key is a correct cursor.
struct Best {
    docs: BTreeMap<SortKey, (Value, usize)>,
    limit: usize,
    bytes: usize,
    bytes_max: usize,
    /// Documents were dropped for bytes: a page follows whatever `limit` says.
    cut: bool,
}

impl Best {
    fn new(limit: usize, bytes_max: usize) -> Best {
        Best {
            docs: BTreeMap::new(),
            limit,
            bytes: 0,
            bytes_max,
            cut: false,
        }
    }

    fn offer(&mut self, key: SortKey, doc: Value, bytes: usize) {
        // Past a cut, only keys before it can still make the page.
        if self.cut
            && self
                .docs
                .last_key_value()
                .is_some_and(|(last, _)| key > *last)
        {
            return;
        }
        self.bytes = self.bytes.saturating_add(bytes);
        self.docs.insert(key, (doc, bytes));
        if self.docs.len() > self.limit + 1 {
            self.pop_last();
        }
        // The (limit + 1)th document only says that more follow: it never
        // reaches the page, so it does not count against the bytes.
        while self.docs.len() > 1 && self.page_bytes() > self.bytes_max {
            self.pop_last();
            self.cut = true;
        }
    }

    fn pop_last(&mut self) {
        if let Some((_, (_, bytes))) = self.docs.pop_last() {
            self.bytes = self.bytes.saturating_sub(bytes);
        }
    }

    /// Bytes of the documents that would be returned.
    fn page_bytes(&self) -> usize {
        if self.docs.len() > self.limit {
            let extra = self
                .docs
                .last_key_value()
                .map_or(0, |(_, (_, bytes))| *bytes);
            self.bytes.saturating_sub(extra)
        } else {
            self.bytes
        }
    }

    /// Enough is known for a full page: scanning in sort order may stop.
    fn is_full(&self) -> bool {
        self.cut || self.docs.len() > self.limit
    }

    /// The page's documents in order, and whether more follow.
    fn finish(self) -> (Vec<(SortKey, Value)>, bool) {
        let more = self.cut || self.docs.len() > self.limit;
        let docs = self
            .docs
            .into_iter()
            .take(self.limit)
            .map(|(key, (doc, _))| (key, doc))
            .collect();
        (docs, more)
    }
}

/// How many documents of `coll` match `query`.
pub(crate) fn count(
    backend: &dyn Backend,
    app: &str,
    coll: &str,
    query: &Query,
    scan_max: u64,
) -> Result<(u64, Explain), FindError> {
    let indexes = built_indexes(backend, app)?;
    let plan = plan(app, coll, query, &indexes);
    let mut executor = Executor {
        backend,
        app,
        coll,
        query,
        scan_max,
        explain: Explain {
            index: plan.index.as_ref().map(|def| def.name.clone()),
            ..Explain::default()
        },
    };
    let mut matches = 0u64;
    executor.each_match(&plan, None, |_, _, _| {
        matches += 1;
        true
    })?;
    executor.explain.returned = matches;
    Ok((matches, executor.explain))
}

#[cfg(test)]
mod tests;
