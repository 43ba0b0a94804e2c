//! An app's kv browser: keys by prefix, [`KV_PAGE_MAX`] a page (the
//! store's cursor), a value shown whole, set (add or edit) and delete with
//! a confirmation page. Reads need read, changes write; the changes go
//! through the admin API's own `admin::kv::put` / `remove`, so the same
//! limits (`kv_key_bytes_max`, `kv_value_bytes_max`) and codes apply.
//!
//! Keys travel in the query string (`?key=`), not the path: a key may
//! hold `/` and any other byte a path would have to escape.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use picloud_actors::host::now_ms;
use picloud_lua_sdk::Code;
use serde::Deserialize;
use serde_json::Value;

use super::layout;
use super::session::{FORM_BYTES_MAX, form_up_to};
use super::{BASE, PageQuery, PageResult, Posted, PrefixPage, Session, may};
use crate::gateway::admin::checks::require_app;
use crate::gateway::admin::kv::{check_key, put, remove};
use crate::gateway::admin::routes::Need;
use crate::gateway::{ApiError, Gateway, parse_json};

/// Most keys one page of the browser lists.
pub const KV_PAGE_MAX: usize = 50;
/// Longest value preview in the list, in characters (the value page shows
/// it whole).
pub const PREVIEW_CHARS_MAX: usize = 120;

/// `?a=b&c=d` from pairs, escaped.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    format!("?{}", serializer.finish())
}

fn preview(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= PREVIEW_CHARS_MAX {
        return text;
    }
    let mut cut: String = text.chars().take(PREVIEW_CHARS_MAX).collect();
    cut.push('…');
    cut
}

fn stored_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored value is not JSON: {e}")))
}

/// `GET /apps/{app}/kv`: a page of keys under `prefix` (read).
pub async fn list(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query_): PageQuery<PrefixPage>,
) -> PageResult {
    session.caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let prefix = query_.prefix.unwrap_or_default();
    let page = gateway.node.reader().kv_list(
        &app,
        &prefix,
        query_.cursor.as_deref().filter(|cursor| !cursor.is_empty()),
        KV_PAGE_MAX,
        gateway.limits.read_page_bytes_max,
        now_ms(),
    )?;
    let rows = page
        .items
        .iter()
        .map(|(key, bytes)| Ok((key, preview(&stored_json(bytes)?))))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let write = may(&session.caller, Need::Write, &app);
    let flash = query_.flash.as_deref().and_then(layout::flash_text);
    let here = format!("{BASE}/apps/{app}/kv");
    let body = html! {
        h1 { (app) ": kv" }
        (layout::app_nav(&app, "KV"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        form method="get" action=(here) role="search" {
            label for="kv-prefix" { "Key prefix" }
            input #kv-prefix type="text" name="prefix" value=(prefix) autocomplete="off";
            button type="submit" { "Filter" }
        }
        @if rows.is_empty() {
            p.muted { "No keys" @if !prefix.is_empty() { " under " code { (prefix) } } "." }
        } @else {
            table #kv {
                thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
                tbody {
                    @for (key, value) in &rows {
                        tr data-key=(key) {
                            th scope="row" { a.mono href={ (here) "/show" (query(&[("key", key)])) } { (key) } }
                            td.mono { (value) }
                        }
                    }
                }
            }
        }
        p.pager {
            @if query_.cursor.is_some() {
                a href={ (here) (query(&[("prefix", &prefix)])) } { "First page" }
            }
            @if let Some(cursor) = &page.cursor {
                a href={ (here) (query(&[("prefix", &prefix), ("cursor", cursor)])) } rel="next" { "Next page" }
            }
        }
        @if write {
            section aria-labelledby="kv-add" {
                h2 #kv-add { "Add or replace a key" }
                (layout::form_post(&format!("{here}/set"), &session, html! {
                    label for="kv-new-key" { "Key" }
                    input #kv-new-key type="text" name="key" required autocomplete="off";
                    label for="kv-new-value" { "Value (JSON)" }
                    textarea #kv-new-value name="value" rows="4" cols="60" required {}
                    button type="submit" { "Save key" }
                }))
            }
        }
    };
    Ok(layout::ok(&format!("{app} kv"), &session, body))
}

#[derive(Deserialize)]
pub struct KeyQuery {
    #[serde(default)]
    key: String,
    #[serde(default)]
    flash: Option<String>,
}

/// `GET /apps/{app}/kv/show?key=`: the value, and its edit form (write).
pub async fn show(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query_): PageQuery<KeyQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let key = query_.key;
    check_key(&gateway, &key)?;
    let bytes = gateway
        .node
        .reader()
        .kv_get(&app, &key, now_ms())?
        .ok_or_else(|| ApiError::new(Code::KeyNotFound, format!("app {app} has no key {key:?}")))?;
    let pretty = serde_json::to_string_pretty(&stored_json(&bytes)?)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let write = may(&session.caller, Need::Write, &app);
    let flash = query_.flash.as_deref().and_then(layout::flash_text);
    let here = format!("{BASE}/apps/{app}/kv");
    let body = html! {
        h1 { (app) ": " code { (key) } }
        (layout::app_nav(&app, "KV"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        @if write {
            (layout::form_post(&format!("{here}/set"), &session, html! {
                input type="hidden" name="key" value=(key);
                label for="kv-value" { "Value (JSON)" }
                textarea #kv-value name="value" rows="12" cols="80" required { (pretty) }
                button type="submit" { "Save value" }
            }))
            p { a.danger href={ (here) "/delete" (query(&[("key", &key)])) } { "Delete this key…" } }
        } @else {
            pre #kv-value { (pretty) }
        }
        p { a href=(here) { "Back to the keys" } }
    };
    Ok(layout::ok(&format!("{app} kv {key}"), &session, body))
}

#[derive(Deserialize)]
pub struct SetForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

/// Most bytes of a posted set form: a value of `kv_value_bytes_max`
/// urlencoded (up to 3 bytes a byte), its key and the CSRF token.
pub fn set_form_bytes_max(gateway: &Gateway) -> usize {
    gateway.limits.kv_value_bytes_max * 3 + FORM_BYTES_MAX
}

/// `POST /apps/{app}/kv/set`: stores the JSON value (write). The form may
/// be larger than other forms: a value of up to `kv_value_bytes_max`.
pub async fn set(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    body: Body,
) -> PageResult {
    let form: SetForm = form_up_to(&session, body, set_form_bytes_max(&gateway)).await?;
    session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let key = form.key;
    check_key(&gateway, &key)?;
    let value: Value = parse_json(form.value.as_bytes())?;
    put(&gateway, &app, &key, &value, None).await?;
    let to = format!(
        "{BASE}/apps/{app}/kv/show{}",
        query(&[("key", &key), ("flash", "kv-saved")])
    );
    Ok(Redirect::to(&to).into_response())
}

/// `GET /apps/{app}/kv/delete?key=`: the confirmation page (write).
pub async fn delete_confirm(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query_): PageQuery<KeyQuery>,
) -> PageResult {
    session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let key = query_.key;
    check_key(&gateway, &key)?;
    let here = format!("{BASE}/apps/{app}/kv");
    let body = layout::confirm(
        &session,
        layout::Confirm {
            heading: html! { "Delete key " code { (key) } "?" },
            warning: Some("The key and its value are deleted on every node. It cannot be undone."),
            action: format!("{here}/delete"),
            fields: &[("key", &key)],
            button: "Delete key",
            cancel: format!("{here}/show{}", query(&[("key", &key)])),
        },
    );
    Ok(layout::ok(&format!("Delete {key}"), &session, body))
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    key: String,
}

/// `POST /apps/{app}/kv/delete`: deletes the key (write).
pub async fn delete(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<DeleteForm>,
) -> PageResult {
    posted.session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    check_key(&gateway, &posted.form.key)?;
    remove(&gateway, &app, &posted.form.key).await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{app}/kv?flash=kv-deleted")).into_response())
}
