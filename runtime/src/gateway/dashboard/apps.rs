//! The apps page: the apps the caller may read (paged), creating one
//! (admins), and deleting one with a confirmation that works without
//! JavaScript (owners type the app's name again).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use picloud_lua_sdk::Code;
use serde::Deserialize;

use super::app::{record, summary};
use super::layout;
use super::{BASE, PageQuery, PageResult, Posted, Session, may};
use crate::gateway::admin::routes::Need;
use crate::gateway::{ApiError, Gateway, admin};

/// Most apps one page of the list shows.
pub const APPS_PAGE_MAX: usize = 50;

#[derive(Deserialize)]
pub struct ListQuery {
    /// Show the apps after this name (the previous page's last).
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    flash: Option<String>,
}

/// `GET /apps`: the apps the caller may read, [`APPS_PAGE_MAX`] a page.
pub async fn list(
    State(gateway): State<Gateway>,
    session: Session,
    PageQuery(query): PageQuery<ListQuery>,
) -> PageResult {
    let after = query.after.unwrap_or_default();
    let mut page = Vec::with_capacity(APPS_PAGE_MAX + 1);
    // Records come sorted by name; only readable ones count toward a page.
    for record in gateway.node.reader().apps()? {
        if record.name.as_str() <= after.as_str() || !session.caller.may_read(&record.name)? {
            continue;
        }
        page.push(record);
        if page.len() > APPS_PAGE_MAX {
            break;
        }
    }
    let more = page.len() > APPS_PAGE_MAX;
    page.truncate(APPS_PAGE_MAX);
    let mut rows = Vec::with_capacity(page.len());
    for record in &page {
        let summary = summary(&gateway, record)?;
        let domains = gateway.apps.domains().declared(&record.name);
        let owner = may(&session.caller, Need::Owner, &record.name);
        rows.push((record, summary, domains, owner));
    }
    let admin = session.caller.is_admin();
    let flash = query.flash.as_deref().and_then(layout::flash_text);
    let body = html! {
        h1 { "Apps" }
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        @if rows.is_empty() {
            p.muted { "No apps" @if !after.is_empty() { " after " (after) } "." }
        } @else {
            table #apps {
                caption.muted { "Apps you may read" }
                thead {
                    tr {
                        th scope="col" { "Name" } th scope="col" { "Active version" }
                        th scope="col" { "Routes" } th scope="col" { "Domains" }
                        th scope="col" { "Created" } th scope="col" { "Deployed" }
                        th scope="col" { span.visually-hidden { "Actions" } }
                    }
                }
                tbody {
                    @for (record, summary, domains, owner) in &rows {
                        tr data-app=(record.name) {
                            th scope="row" { a href={ (BASE) "/apps/" (record.name) } { (record.name) } }
                            td { @match record.active_version { Some(v) => (v), None => span.muted { "—" } } }
                            td { @match summary { Some(s) => (s.routes.len()), None => span.muted { "—" } } }
                            td { @for domain in domains { code { (domain) } " " } }
                            td { (layout::time(record.created_ms)) }
                            td { @match summary.as_ref().and_then(|s| s.deployed_ms) { Some(ms) => (layout::time(ms)), None => span.muted { "—" } } }
                            td {
                                @if *owner {
                                    a href={ (BASE) "/apps/" (record.name) "/delete" } aria-label={ "Delete " (record.name) } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if more {
            @if let Some((last, ..)) = rows.last() {
                p.pager { a href={ (BASE) "/apps?after=" (last.name) } rel="next" { "Next page" } }
            }
        }
        @if admin {
            section aria-labelledby="create-app" {
                h2 #create-app { "Create an app" }
                (layout::form_post(&format!("{BASE}/apps"), &session, html! {
                    label for="app-name" { "App name" }
                    input #app-name type="text" name="name" required pattern="[a-z0-9][a-z0-9-]*" autocomplete="off";
                    button type="submit" { "Create app" }
                }))
            }
        }
    };
    Ok(layout::ok("Apps", &session, body))
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
}

/// `POST /apps`: admin only (checked by the admin API's own `create`).
pub async fn create(State(gateway): State<Gateway>, posted: Posted<CreateForm>) -> PageResult {
    let name = posted.form.name.trim();
    admin::apps::create(&gateway, &posted.session.caller, name).await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{name}?flash=app-created")).into_response())
}

/// `GET /apps/{app}/delete`: the confirmation page (owner).
pub async fn delete_confirm(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
) -> PageResult {
    session.caller.require_owner(&app)?;
    record(&gateway, &app)?;
    let body = html! {
        h1 { "Delete " (app) "?" }
        p {
            "This deletes the app's versions, data, files and secrets on every node, "
            "and revokes the API keys scoped to it. It cannot be undone."
        }
        (layout::form_post(&format!("{BASE}/apps/{app}/delete"), &session, html! {
            label for="confirm" { "Type the app's name, " code { (app) } ", to confirm" }
            input #confirm type="text" name="confirm" required autocomplete="off";
            button.danger type="submit" { "Delete " (app) }
        }))
        p { a href={ (BASE) "/apps/" (app) } { "Cancel" } }
    };
    Ok(layout::ok(&format!("Delete {app}"), &session, body))
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /apps/{app}/delete`: owner only; the typed name must match.
pub async fn delete(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<DeleteForm>,
) -> PageResult {
    let caller = &posted.session.caller;
    caller.require_owner(&app)?;
    if posted.form.confirm.trim() != app {
        return Err(ApiError::new(
            Code::InvalidField,
            format!("confirm: type the app's name ({app}) to delete it"),
        )
        .into());
    }
    admin::apps::delete(&gateway, caller, &app).await?;
    Ok(Redirect::to(&format!("{BASE}/apps?flash=app-deleted")).into_response())
}
