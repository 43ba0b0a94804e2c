//! An app's documents browser: pick a collection (those its indexes name,
//! or any typed in), a query box taking the admin API's `find` query
//! (the JSON of `docs.find`), an optional sort, results [`DOCS_PAGE_MAX`]
//! a page with the store's cursor, and the query planner's explain (plan,
//! index, keys and documents examined). A document is shown whole and
//! deleted after a confirmation (write).
//!
//! The browser is a GET form: a query is a link (bookmark it, share it),
//! and reads go through `admin::docs::read`, the admin API's own path (off
//! the async workers, under the same scan and page limits: a query that
//! examines too much is 422, as in the API).

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use picloud_lua_sdk::{Code, DocsCall, FindArgs};
use serde::Deserialize;
use serde_json::{Value, json};

use super::kv::query;
use super::layout;
use super::{BASE, PageQuery, PageResult, Posted, Session, may};
use crate::gateway::admin::checks::require_app;
use crate::gateway::admin::docs::{read, write};
use crate::gateway::admin::routes::Need;
use crate::gateway::{ApiError, Gateway, parse_json};

/// Most documents one page of results shows.
pub const DOCS_PAGE_MAX: usize = 25;
/// Longest document preview in the results, in characters.
pub const PREVIEW_CHARS_MAX: usize = 200;

#[derive(Deserialize)]
pub struct BrowseQuery {
    #[serde(default)]
    collection: Option<String>,
    /// The `find` query as JSON text (empty: every document).
    #[serde(default)]
    query: Option<String>,
    /// Comma-separated fields, `-` first for descending.
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    flash: Option<String>,
}

fn preview(doc: &Value) -> String {
    let text = doc.to_string();
    if text.chars().count() <= PREVIEW_CHARS_MAX {
        return text;
    }
    let mut cut: String = text.chars().take(PREVIEW_CHARS_MAX).collect();
    cut.push('…');
    cut
}

/// `GET /apps/{app}/docs`: the collection picker and, with a collection,
/// the query's results and explain (read).
pub async fn browse(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(browse): PageQuery<BrowseQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let known: BTreeSet<String> = gateway
        .node
        .reader()
        .indexes(&app)?
        .into_iter()
        .map(|def| def.collection)
        .collect();
    let collection = browse.collection.unwrap_or_default().trim().to_string();
    let query_text = browse.query.unwrap_or_default();
    let sort_text = browse.sort.unwrap_or_default();
    let results = if collection.is_empty() {
        None
    } else {
        gateway.node.read_barrier().await?;
        let query_value: Value = if query_text.trim().is_empty() {
            json!({})
        } else {
            parse_json(query_text.as_bytes())?
        };
        let sort = sort_text
            .split(',')
            .map(str::trim)
            .filter(|field| !field.is_empty())
            .map(|field| picloud_lua_sdk::sort_field(field.to_string()))
            .collect();
        let call = DocsCall::Find {
            collection: collection.clone(),
            query: query_value,
            options: FindArgs {
                sort,
                limit: Some(DOCS_PAGE_MAX),
                cursor: browse.cursor.clone().filter(|cursor| !cursor.is_empty()),
                fields: None,
                explain: true,
            },
        };
        Some(read(&gateway, &app, call).await?)
    };
    let flash = browse.flash.as_deref().and_then(layout::flash_text);
    let here = format!("{BASE}/apps/{app}/docs");
    let empty = Vec::new();
    let body = html! {
        h1 { (app) ": documents" }
        (layout::app_nav(&app, "Documents"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        form method="get" action=(here) role="search" {
            label for="docs-collection" { "Collection" }
            input #docs-collection type="text" name="collection" value=(collection) list="docs-collections" required autocomplete="off";
            datalist #docs-collections { @for name in &known { option value=(name) {} } }
            label for="docs-query" { "Query (JSON, as docs.find takes it)" }
            textarea #docs-query name="query" rows="3" cols="60" placeholder="{\"status\": \"open\"}" { (query_text) }
            label for="docs-sort" { "Sort (fields, comma-separated; -field descending)" }
            input #docs-sort type="text" name="sort" value=(sort_text) autocomplete="off";
            button type="submit" { "Run query" }
        }
        @if !known.is_empty() {
            p.muted { "Indexed collections: "
                @for name in &known { a href={ (here) (query(&[("collection", name)])) } { (name) } " " }
            }
        }
        @if let Some(results) = &results {
            @let items = results["items"].as_array().unwrap_or(&empty);
            @let explain = &results["explain"];
            section aria-labelledby="docs-explain-title" {
                h2 #docs-explain-title { "Explain" }
                dl.facts #docs-explain {
                    dt { "Plan" } dd data-plan=(explain["plan"].as_str().unwrap_or_default()) { (explain["plan"].as_str().unwrap_or_default()) }
                    @if let Some(index) = explain["index"].as_str() { dt { "Index" } dd { code { (index) } } }
                    dt { "Index keys examined" } dd { (explain["index_keys_examined"]) }
                    dt { "Documents examined" } dd { (explain["docs_examined"]) }
                    dt { "Returned" } dd { (explain["returned"]) }
                }
            }
            section aria-labelledby="docs-results-title" {
                h2 #docs-results-title { "Results (" (items.len()) " on this page)" }
                @if items.is_empty() {
                    p.muted { "No documents match." }
                } @else {
                    table #docs {
                        thead { tr { th scope="col" { "_id" } th scope="col" { "Document" } } }
                        tbody {
                            @for doc in items {
                                @let id = doc["_id"].as_str().unwrap_or_default();
                                tr data-id=(id) {
                                    th scope="row" { a.mono href={ (here) "/show" (query(&[("collection", &collection), ("id", id)])) } { (id) } }
                                    td.mono { (preview(doc)) }
                                }
                            }
                        }
                    }
                }
                @if let Some(cursor) = results["cursor"].as_str() {
                    p.pager { a href={ (here) (query(&[("collection", &collection), ("query", &query_text), ("sort", &sort_text), ("cursor", cursor)])) } rel="next" { "Next page" } }
                }
            }
        }
    };
    Ok(layout::ok(&format!("{app} documents"), &session, body))
}

#[derive(Deserialize)]
pub struct DocQuery {
    #[serde(default)]
    collection: String,
    #[serde(default)]
    id: String,
}

async fn get_doc(gateway: &Gateway, app: &str, doc: &DocQuery) -> Result<Value, ApiError> {
    gateway.node.read_barrier().await?;
    let call = DocsCall::Get {
        collection: doc.collection.clone(),
        id: doc.id.clone(),
    };
    match read(gateway, app, call).await? {
        Value::Null => Err(ApiError::new(
            Code::DocNotFound,
            format!("collection {} has no document {}", doc.collection, doc.id),
        )),
        found => Ok(found),
    }
}

/// `GET /apps/{app}/docs/show?collection=&id=` (read).
pub async fn show(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(doc): PageQuery<DocQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let found = get_doc(&gateway, &app, &doc).await?;
    let pretty =
        serde_json::to_string_pretty(&found).map_err(|e| ApiError::internal(e.to_string()))?;
    let here = format!("{BASE}/apps/{app}/docs");
    let body = html! {
        h1 { (doc.collection) " / " code { (doc.id) } }
        (layout::app_nav(&app, "Documents"))
        pre #doc { (pretty) }
        @if may(&session.caller, Need::Write, &app) {
            p { a.danger href={ (here) "/delete" (query(&[("collection", &doc.collection), ("id", &doc.id)])) } { "Delete this document…" } }
        }
        p { a href={ (here) (query(&[("collection", &doc.collection)])) } { "Back to " (doc.collection) } }
    };
    Ok(layout::ok(&format!("{app} {}", doc.id), &session, body))
}

/// `GET /apps/{app}/docs/delete?collection=&id=`: the confirmation (write).
pub async fn delete_confirm(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(doc): PageQuery<DocQuery>,
) -> PageResult {
    session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    get_doc(&gateway, &app, &doc).await?;
    let here = format!("{BASE}/apps/{app}/docs");
    let body = layout::confirm(
        &session,
        layout::Confirm {
            heading: html! { "Delete document " code { (doc.id) } " of " (doc.collection) "?" },
            warning: Some(
                "It is deleted on every node (and its docs triggers fire). It cannot be undone.",
            ),
            action: format!("{here}/delete"),
            fields: &[("collection", &doc.collection), ("id", &doc.id)],
            button: "Delete document",
            cancel: format!(
                "{here}/show{}",
                query(&[("collection", &doc.collection), ("id", &doc.id)])
            ),
        },
    );
    Ok(layout::ok(&format!("Delete {}", doc.id), &session, body))
}

/// `POST /apps/{app}/docs/delete` (write), through the admin API's write.
pub async fn delete(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<DocQuery>,
) -> PageResult {
    posted.session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let DocQuery { collection, id } = posted.form;
    let call = DocsCall::Delete {
        collection: collection.clone(),
        id,
    };
    write(&gateway, &app, vec![call]).await?;
    let to = format!(
        "{BASE}/apps/{app}/docs{}",
        query(&[("collection", &collection), ("flash", "doc-deleted")])
    );
    Ok(Redirect::to(&to).into_response())
}
