//! An app's dead letters: trigger runs that failed every attempt (or broke
//! a limit). Listed a page at a time by id (an app may hold thousands:
//! a page reads only its own rows), shown one at a time with its event and
//! attempts, retried or deleted (the admin API's own actions).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use picloud_lua_sdk::Code;
use serde::Deserialize;

use super::app::record;
use super::layout;
use super::session::Empty;
use super::{BASE, PageQuery, PageResult, Posted, Session, may};
use crate::gateway::admin::routes::Need;
use crate::gateway::admin::triggers::{self, dead_letter_id, dead_letter_json};
use crate::gateway::{ApiError, Gateway};

/// Most dead letters one page of the list shows.
pub const DEAD_LETTERS_PAGE_MAX: usize = 50;
/// Longest error text the list shows of each letter (the letter's own
/// page shows all of it).
pub const ERROR_CHARS_SHOWN_MAX: usize = 160;

#[derive(Deserialize)]
pub struct ListQuery {
    /// Show the letters after this id (the previous page's last).
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    flash: Option<String>,
}

fn shortened(text: &str) -> String {
    match text.char_indices().nth(ERROR_CHARS_SHOWN_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// `GET /apps/{app}/dead-letters`: needs read.
pub async fn list(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query): PageQuery<ListQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    record(&gateway, &app)?;
    // As the admin API: what this node shows includes every committed write.
    gateway.node.read_barrier().await?;
    let after = query.after.unwrap_or(0);
    let mut letters = gateway
        .node
        .reader()
        .dead_letters(&app, after, DEAD_LETTERS_PAGE_MAX + 1)?;
    let more = letters.len() > DEAD_LETTERS_PAGE_MAX;
    letters.truncate(DEAD_LETTERS_PAGE_MAX);
    let flash = query.flash.as_deref().and_then(layout::flash_text);
    let body = html! {
        h1 { (app) }
        (layout::app_nav(&app, "Dead letters"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        h2 { "Dead letters" }
        p.muted { "Trigger runs that failed every attempt. Retry one after fixing its script, or delete it." }
        @if letters.is_empty() {
            p.muted #no-dead-letters { "No dead letters" @if after > 0 { " after " (after) } "." }
        } @else {
            table #dead-letters {
                thead {
                    tr {
                        th scope="col" { "Id" } th scope="col" { "Trigger" } th scope="col" { "Why" }
                        th scope="col" { "Error" } th scope="col" { "Attempts" } th scope="col" { "Dead since" }
                    }
                }
                tbody {
                    @for letter in &letters {
                        tr data-id=(letter.entry.id) {
                            th scope="row" {
                                a href={ (BASE) "/apps/" (app) "/dead-letters/" (letter.entry.id) }
                                    aria-label={ "Dead letter " (letter.entry.id) } { (letter.entry.id) }
                            }
                            td.mono { (letter.entry.trigger) }
                            td { code { (letter.code) } }
                            td.mono { (shortened(&letter.error)) }
                            td { (letter.entry.attempts.len()) }
                            td { (layout::time(letter.dead_ms)) }
                        }
                    }
                }
            }
        }
        @if more {
            @if let Some(last) = letters.last() {
                p.pager { a href={ (BASE) "/apps/" (app) "/dead-letters?after=" (last.entry.id) } rel="next" { "Next page" } }
            }
        }
    };
    Ok(layout::ok(&format!("{app} dead letters"), &session, body))
}

/// `GET /apps/{app}/dead-letters/{id}`: needs read.
pub async fn show(
    State(gateway): State<Gateway>,
    session: Session,
    Path((app, id)): Path<(String, String)>,
) -> PageResult {
    let id = dead_letter_id(&id)?;
    session.caller.require_read(&app)?;
    record(&gateway, &app)?;
    gateway.node.read_barrier().await?;
    let letter = gateway
        .node
        .reader()
        .dead_letter(&app, id)?
        .ok_or_else(|| {
            ApiError::new(
                Code::DeadLetterNotFound,
                format!("app {app} has no dead letter {id}"),
            )
        })?;
    let json = dead_letter_json(&app, &letter);
    let event = serde_json::to_string_pretty(&json["event"]).unwrap_or_default();
    let writer = may(&session.caller, Need::Write, &app);
    let body = html! {
        h1 { (app) }
        (layout::app_nav(&app, "Dead letters"))
        h2 { "Dead letter " (id) }
        dl.facts #dead-letter {
            dt { "Trigger" } dd.mono { (letter.entry.trigger) }
            dt { "Delivery id" } dd.mono { (json["delivery_id"].as_str().unwrap_or_default()) }
            dt { "Why" } dd { code { (letter.code) } }
            dt { "Error" } dd.mono #dead-letter-error { (letter.error) }
            dt { "Created" } dd { (layout::time(letter.entry.created_ms)) }
            dt { "Dead since" } dd { (layout::time(letter.dead_ms)) }
            dt { "Chain depth" } dd { (letter.entry.depth) }
        }
        h3 { "Event" }
        pre.payload #dead-letter-event { (event) }
        h3 { "Attempts (" (letter.entry.attempts.len()) ")" }
        table #attempts {
            thead { tr { th scope="col" { "#" } th scope="col" { "At" } th scope="col" { "Error" } } }
            tbody {
                @for (number, attempt) in letter.entry.attempts.iter().enumerate() {
                    tr { th scope="row" { (number + 1) } td { (layout::time(attempt.at_ms)) } td.mono { (attempt.error) } }
                }
            }
        }
        @if writer {
            div.actions {
                (layout::form_post(&format!("{BASE}/apps/{app}/dead-letters/{id}/retry"), &session, html! {
                    button type="submit" { "Retry dead letter " (id) }
                }))
                (layout::form_post(&format!("{BASE}/apps/{app}/dead-letters/{id}/delete"), &session, html! {
                    button.danger type="submit" { "Delete dead letter " (id) }
                }))
            }
        }
        p { a href={ (BASE) "/apps/" (app) "/dead-letters" } { "Back to the dead letters" } }
    };
    Ok(layout::ok(
        &format!("{app} dead letter {id}"),
        &session,
        body,
    ))
}

/// `POST /apps/{app}/dead-letters/{id}/retry`: needs write.
pub async fn retry(
    State(gateway): State<Gateway>,
    Path((app, id)): Path<(String, String)>,
    posted: Posted<Empty>,
) -> PageResult {
    let id = dead_letter_id(&id)?;
    triggers::retry(&gateway, &posted.session.caller, &app, id).await?;
    Ok(Redirect::to(&format!(
        "{BASE}/apps/{app}/dead-letters?flash=dead-letter-retried"
    ))
    .into_response())
}

/// `POST /apps/{app}/dead-letters/{id}/delete`: needs write.
pub async fn delete(
    State(gateway): State<Gateway>,
    Path((app, id)): Path<(String, String)>,
    posted: Posted<Empty>,
) -> PageResult {
    let id = dead_letter_id(&id)?;
    triggers::delete(&gateway, &posted.session.caller, &app, id).await?;
    Ok(Redirect::to(&format!(
        "{BASE}/apps/{app}/dead-letters?flash=dead-letter-deleted"
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_shortened_on_a_char_boundary() {
        assert_eq!(shortened("short"), "short");
        let long = "é".repeat(ERROR_CHARS_SHOWN_MAX + 5);
        let shown = shortened(&long);
        assert_eq!(shown.chars().count(), ERROR_CHARS_SHOWN_MAX + 1);
        assert!(shown.ends_with('…'));
    }
}
