//! The admin API's documents: `/_/api/v1/apps/{app}/docs/{collection}[...]`.
//!
//! ```text
//! POST   .../docs/{coll}/find    {"query":{..},"sort":["-age"],"limit":n,"cursor":c,"fields":[..],"explain":true}
//! POST   .../docs/{coll}/count   {"query":{..}}
//! POST   .../docs/{coll}         {"docs":[{..}, ..]}   (1 to DOCS_INSERT_MAX, all or none)
//! GET    .../docs/{coll}/{id}
//! DELETE .../docs/{coll}/{id}
//! GET    .../indexes
//! ```
//!
//! The same query language as `docs.find`; reads are linearizable unless
//! `consistency = "stale"`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use picloud_actors::docs as service;
use picloud_actors::host::now_ms;
use picloud_lua_sdk::{Code, DocsCall, FindArgs, HostError};
use picloud_storage::{Command, CommandResult};
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::{barrier, require_app};
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, Gateway, parse_json, read_body};

/// The most documents one admin insert may carry.
pub const DOCS_INSERT_MAX: usize = 1_000;

/// A docs service error as an HTTP error, with its code's status (bad
/// arguments are 400, a query that examines too much is 422).
fn host_error(error: HostError) -> ApiError {
    ApiError::new(error.code, error.message)
}

pub(crate) async fn read(gateway: &Gateway, app: &str, call: DocsCall) -> Result<Value, ApiError> {
    let reader = gateway.node.reader().clone();
    service::read_off_workers(reader, app, call, gateway.limits.as_ref().into())
        .await
        .map_err(host_error)
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FindRequest {
    #[serde(default)]
    query: Option<Value>,
    #[serde(default)]
    sort: Vec<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default)]
    explain: bool,
    #[serde(default)]
    consistency: Option<String>,
}

async fn find_request(
    gateway: &Gateway,
    caller: &Caller,
    app: &str,
    body: Body,
) -> Result<FindRequest, ApiError> {
    caller.require_read(app)?;
    require_app(gateway, app)?;
    let bytes = read_body(body, gateway.config.http_body_bytes_max).await?;
    let request: FindRequest = if bytes.is_empty() {
        FindRequest::default()
    } else {
        parse_json(&bytes)?
    };
    barrier(gateway, request.consistency.as_deref()).await?;
    Ok(request)
}

#[utoipa::path(
    post,
    path = "/apps/{app}/docs/{coll}/find",
    tag = "docs",
    params(("app" = String, Path, description = "The app's name."), ("coll" = String, Path, description = "A document collection.")),
    request_body = FindRequest,
    responses((status = 200, description = "A page of documents (or the query plan).")),
)]
pub(super) async fn find(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, coll)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request = find_request(&gateway, &caller, &app, body).await?;
    let sort = request
        .sort
        .into_iter()
        .map(picloud_lua_sdk::sort_field)
        .collect();
    let call = DocsCall::Find {
        collection: coll,
        query: request.query.unwrap_or_else(|| json!({})),
        options: FindArgs {
            sort,
            limit: request.limit,
            cursor: request.cursor,
            fields: request.fields,
            explain: request.explain,
        },
    };
    Ok(Json(read(&gateway, &app, call).await?))
}

#[utoipa::path(
    post,
    path = "/apps/{app}/docs/{coll}/count",
    tag = "docs",
    params(("app" = String, Path, description = "The app's name."), ("coll" = String, Path, description = "A document collection.")),
    request_body = FindRequest,
    responses((status = 200, description = "`{count}`.")),
)]
pub(super) async fn count(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, coll)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request = find_request(&gateway, &caller, &app, body).await?;
    let call = DocsCall::Count {
        collection: coll,
        query: request.query.unwrap_or_else(|| json!({})),
    };
    let count = read(&gateway, &app, call).await?;
    Ok(Json(json!({ "count": count })))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/docs/{coll}/{id}",
    tag = "docs",
    params(("app" = String, Path, description = "The app's name."), ("coll" = String, Path, description = "A document collection."), ("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The document.")),
)]
pub(super) async fn get_doc(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, coll, id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    barrier(&gateway, None).await?;
    let call = DocsCall::Get {
        collection: coll.clone(),
        id: id.clone(),
    };
    match read(&gateway, &app, call).await? {
        Value::Null => Err(ApiError::new(
            Code::DocNotFound,
            format!("collection {coll} has no document {id}"),
        )),
        doc => Ok(Json(doc)),
    }
}

/// Proposes `calls` as one all-or-nothing `Command::Docs`.
pub(crate) async fn write(
    gateway: &Gateway,
    app: &str,
    calls: Vec<DocsCall>,
) -> Result<Vec<Value>, ApiError> {
    let now = now_ms();
    let ops = calls
        .iter()
        .filter_map(|call| service::write_op(call, now).transpose())
        .collect::<Result<Vec<_>, _>>()
        .map_err(host_error)?;
    let result = gateway
        .node
        .write(Command::Docs {
            app: app.to_string(),
            ops: ops.clone(),
            now_ms: now,
        })
        .await?;
    match result {
        CommandResult::Docs(results) => Ok(ops
            .iter()
            .zip(&results)
            .map(|(op, result)| service::write_result(op, result))
            .collect()),
        CommandResult::Rejected(error) => Err(error.into()),
        other => Err(ApiError::internal(format!(
            "unexpected docs result {other:?}"
        ))),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InsertRequest {
    docs: Vec<Value>,
}

#[utoipa::path(
    post,
    path = "/apps/{app}/docs/{coll}",
    tag = "docs",
    params(("app" = String, Path, description = "The app's name."), ("coll" = String, Path, description = "A document collection.")),
    request_body = InsertRequest,
    responses((status = 200, description = "The inserted documents' ids.")),
)]
pub(super) async fn insert(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, coll)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.require_write(&app)?;
    let bytes = read_body(body, gateway.config.http_body_bytes_max).await?;
    let request: InsertRequest = parse_json(&bytes)?;
    if request.docs.is_empty() || request.docs.len() > DOCS_INSERT_MAX {
        return Err(ApiError::new(
            Code::InvalidField,
            format!("docs: give 1 to {DOCS_INSERT_MAX} documents"),
        ));
    }
    let mut calls = Vec::with_capacity(request.docs.len());
    for (index, doc) in request.docs.into_iter().enumerate() {
        if !doc.is_object() {
            return Err(ApiError::new(
                Code::InvalidDocument,
                format!("docs[{index}]: a document must be a JSON object"),
            ));
        }
        calls.push(DocsCall::Insert {
            collection: coll.clone(),
            doc,
        });
    }
    let ids = write(&gateway, &app, calls).await?;
    Ok(Json(json!({ "ids": ids })))
}

#[utoipa::path(
    delete,
    path = "/apps/{app}/docs/{coll}/{id}",
    tag = "docs",
    params(("app" = String, Path, description = "The app's name."), ("coll" = String, Path, description = "A document collection."), ("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The document is deleted.")),
)]
pub(super) async fn delete(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, coll, id)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write(&app)?;
    let call = DocsCall::Delete {
        collection: coll,
        id,
    };
    let existed = write(&gateway, &app, vec![call]).await?;
    let existed = existed.first().and_then(Value::as_bool).unwrap_or(false);
    Ok(Json(json!({ "deleted": existed })))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/indexes",
    tag = "docs",
    params(("app" = String, Path, description = "The app's name.")),
    responses((status = 200, description = "The app's indexes.")),
)]
pub(super) async fn indexes(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let indexes: Vec<Value> = gateway
        .node
        .reader()
        .indexes(&app)?
        .into_iter()
        .map(|def| {
            json!({
                "name": def.name,
                "collection": def.collection,
                "fields": def.fields,
                "unique": def.unique,
            })
        })
        .collect();
    Ok(Json(json!({ "indexes": indexes })))
}
