//! The cluster page: every node as this node sees it (the data of
//! `/_/api/v1/cluster/status`), the trigger backlog per app, files repair
//! pending, the join token (admins, behind a button) and removing a node
//! with a confirmation (admins).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout;
use super::session::Empty;
use super::{BASE, PageQuery, PageResult, Posted, Session};
use crate::gateway::{Gateway, admin};

/// Most apps the backlog table lists (those with the most pending first).
pub const BACKLOG_ROWS_MAX: usize = 50;

#[derive(Deserialize)]
pub struct StatusQuery {
    #[serde(default)]
    flash: Option<String>,
}

/// The page, with the join token when an admin asked for it.
async fn render(
    gateway: &Gateway,
    session: &Session,
    token: Option<String>,
    flash: Option<&str>,
) -> PageResult {
    let status = gateway.node.cluster_status().await;
    let mut backlog: Vec<(String, u64)> = admin::triggers::trigger_backlog(gateway)?
        .into_iter()
        .filter(|(_, pending)| *pending > 0)
        .collect();
    backlog.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let backlog_total: u64 = backlog.iter().map(|(_, pending)| pending).sum();
    let newest = status
        .nodes
        .iter()
        .filter_map(|node| node.applied_index)
        .max()
        .unwrap_or(0);
    let admin = session.caller.is_admin();
    let this_node = gateway.node.status().id;
    let body = html! {
        h1 { "Cluster" }
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        @if let Some(why) = status.no_quorum() {
            p.error role="alert" { "No quorum: " (why) ". Writes wait until enough voters are back." }
        }
        p {
            "Leader: " @match status.leader { Some(id) => { "node " (id) }, None => span.down { "none" } }
            " · seen from node " (this_node)
            " · failures tolerated: " (status.failures_tolerated)
        }
        table #nodes {
            caption.muted { "Nodes" }
            thead {
                tr {
                    th scope="col" { "Node" } th scope="col" { "Address" } th scope="col" { "Role" }
                    th scope="col" { "Applied index" } th scope="col" { "Lag" }
                    th scope="col" { "Last contact" } th scope="col" { "Health" }
                    th scope="col" { span.visually-hidden { "Actions" } }
                }
            }
            tbody {
                @for node in &status.nodes {
                    tr data-node=(node.id) data-health=(if node.reachable { "up" } else { "down" }) {
                        th scope="row" { (node.id) }
                        td.mono { (node.http) }
                        td { (node.role.as_str()) }
                        td { @match node.applied_index { Some(i) => (i), None => span.muted { "—" } } }
                        td { @match node.applied_index { Some(i) => (newest.saturating_sub(i)), None => span.muted { "—" } } }
                        td { @match node.last_contact_ms { Some(ms) => { (ms) " ms ago" }, None => span.muted { "—" } } }
                        td {
                            @if node.reachable { span.up { "up" } } @else { span.down { "down" } }
                        }
                        td {
                            @if admin && status.leader != Some(node.id) && node.id != this_node {
                                a href={ (BASE) "/cluster/nodes/" (node.id) "/remove" } aria-label={ "Remove node " (node.id) } { "Remove" }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="backlog" {
            h2 #backlog { "Trigger backlog (" (backlog_total) " pending)" }
            @if backlog.is_empty() {
                p.muted { "No trigger runs pending." }
            } @else {
                table #backlog-table {
                    thead { tr { th scope="col" { "App" } th scope="col" { "Pending runs" } } }
                    tbody {
                        @for (app, pending) in backlog.iter().take(BACKLOG_ROWS_MAX) {
                            tr { th scope="row" { a href={ (BASE) "/apps/" (app) } { (app) } } td { (pending) } }
                        }
                    }
                }
                @if backlog.len() > BACKLOG_ROWS_MAX {
                    p.muted { "and " (backlog.len() - BACKLOG_ROWS_MAX) " more apps" }
                }
            }
        }
        section aria-labelledby="repair" {
            h2 #repair { "Files" }
            p #files-repair { "Block copies waiting for repair: " (status.files_repair_pending)
                span.muted { " (the leader's last repair pass)" } }
        }
        @if admin { (token_section(session, token.as_deref())) }
    };
    Ok(layout::ok("Cluster", session, body))
}

fn token_section(session: &Session, token: Option<&str>) -> Markup {
    html! {
        section aria-labelledby="join" {
            h2 #join { "Join token" }
            p { "A new node joins with " code { "picloud serve --join ADDR --join-token TOKEN" } "." }
            @if let Some(token) = token {
                p.token #join-token { (token) }
            } @else {
                (layout::form_post(&format!("{BASE}/cluster/token"), session, html! {
                    button type="submit" { "Show join token" }
                }))
            }
        }
    }
}

/// `GET /cluster`: any signed-in caller (as `GET /cluster/status`).
pub async fn status(
    State(gateway): State<Gateway>,
    session: Session,
    PageQuery(query): PageQuery<StatusQuery>,
) -> PageResult {
    let flash = query.flash.as_deref().and_then(layout::flash_text);
    render(&gateway, &session, None, flash).await
}

/// `POST /cluster/token`: the page again with the token shown (admin). The
/// answer is the page itself, not a redirect: a secret never goes in a URL.
pub async fn token(State(gateway): State<Gateway>, posted: Posted<Empty>) -> PageResult {
    let token = admin::cluster::join_token(&gateway, &posted.session.caller)?;
    render(&gateway, &posted.session, Some(token), None).await
}

/// `GET /cluster/nodes/{id}/remove`: the confirmation page (admin).
pub async fn remove_confirm(session: Session, Path(id): Path<String>) -> PageResult {
    session.caller.require_admin()?;
    let body = html! {
        h1 { "Remove node " (id) "?" }
        p {
            "The node leaves the membership for good: it no longer counts toward quorum, "
            "and its id is never given out again. Remove only a node that is dead or gone."
        }
        (layout::form_post(&format!("{BASE}/cluster/nodes/{id}/remove"), &session, html! {
            button.danger type="submit" { "Remove node " (id) }
        }))
        p { a href={ (BASE) "/cluster" } { "Cancel" } }
    };
    Ok(layout::ok(&format!("Remove node {id}"), &session, body))
}

/// `POST /cluster/nodes/{id}/remove`: admin only (checked by the admin
/// API's own `remove`, with its leader and membership checks).
pub async fn remove(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    posted: Posted<Empty>,
) -> PageResult {
    admin::cluster::remove(&gateway, &posted.session.caller, &id).await?;
    Ok(Redirect::to(&format!("{BASE}/cluster?flash=node-removed")).into_response())
}
