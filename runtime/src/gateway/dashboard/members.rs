//! An app's members (operators with a role in it): the list for anyone
//! who may read the app; add, change and remove for its owners, through
//! the same `OperatorService` calls as the admin API's members routes (the
//! last owner stays: 409 `last_owner`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde::Deserialize;

use super::kv::query;
use super::layout;
use super::{BASE, PageQuery, PageResult, Posted, Session, may};
use crate::gateway::Gateway;
use crate::gateway::admin::checks::require_app;
use crate::gateway::admin::members::parse_role;
use crate::gateway::admin::routes::Need;

/// The roles a member may have, as the role select lists them.
const ROLES: &[&str] = &["viewer", "developer", "owner"];

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    flash: Option<String>,
}

/// `GET /apps/{app}/members` (read).
pub async fn list(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query_): PageQuery<ListQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let members = gateway.operators.members(&app).await?;
    let rows: Vec<(String, String)> = members["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|member| {
                    let text = |field: &str| member[field].as_str().unwrap_or_default().to_string();
                    (text("email"), text("role"))
                })
                .collect()
        })
        .unwrap_or_default();
    let owner = may(&session.caller, Need::Owner, &app);
    let flash = query_.flash.as_deref().and_then(layout::flash_text);
    let here = format!("{BASE}/apps/{app}/members");
    let role_select = |id: &str, current: &str| {
        html! {
            select id=(id) name="role" {
                @for role in ROLES {
                    option value=(role) selected[*role == current] { (role) }
                }
            }
        }
    };
    let body = html! {
        h1 { (app) ": members" }
        (layout::app_nav(&app, "Members"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        @if rows.is_empty() {
            p.muted { "No members: only admins manage this app." }
        } @else {
            table #members {
                thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } @if owner { th scope="col" { span.visually-hidden { "Actions" } } } } }
                tbody {
                    @for (index, (email, role)) in rows.iter().enumerate() {
                        tr data-member=(email) data-role=(role) {
                            th scope="row" { (email) }
                            td {
                                @if owner {
                                    (layout::form_post(&format!("{here}/set"), &session, html! {
                                        input type="hidden" name="email" value=(email);
                                        label.visually-hidden for={ "role-" (index) } { "Role of " (email) }
                                        (role_select(&format!("role-{index}"), role))
                                        button type="submit" aria-label={ "Change role of " (email) } { "Change" }
                                    }))
                                } @else { (role) }
                            }
                            @if owner {
                                td { a href={ (here) "/remove" (query(&[("email", email)])) } aria-label={ "Remove member " (email) } { "Remove" } }
                            }
                        }
                    }
                }
            }
        }
        @if owner {
            section aria-labelledby="member-add" {
                h2 #member-add { "Add a member" }
                (layout::form_post(&format!("{here}/set"), &session, html! {
                    label for="member-email" { "Operator email" }
                    input #member-email type="email" name="email" required autocomplete="off";
                    label for="member-role" { "Role" }
                    (role_select("member-role", "viewer"))
                    button type="submit" { "Add member" }
                }))
            }
        }
    };
    Ok(layout::ok(&format!("{app} members"), &session, body))
}

#[derive(Deserialize)]
pub struct SetForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

/// `POST /apps/{app}/members/set`: adds a member or changes its role (owner).
pub async fn set(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<SetForm>,
) -> PageResult {
    posted.session.caller.require_owner(&app)?;
    require_app(&gateway, &app)?;
    let role = parse_role(&posted.form.role)?;
    gateway
        .operators
        .member_set(&app, posted.form.email.trim(), role)
        .await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{app}/members?flash=member-set")).into_response())
}

#[derive(Deserialize)]
pub struct EmailQuery {
    #[serde(default)]
    email: String,
}

/// `GET /apps/{app}/members/remove?email=`: the confirmation page (owner).
pub async fn remove_confirm(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query_): PageQuery<EmailQuery>,
) -> PageResult {
    session.caller.require_owner(&app)?;
    require_app(&gateway, &app)?;
    let email = query_.email;
    let here = format!("{BASE}/apps/{app}/members");
    let body = layout::confirm(
        &session,
        layout::Confirm {
            heading: html! { "Remove " (email) " from " (app) "?" },
            warning: None,
            action: format!("{here}/remove"),
            fields: &[("email", &email)],
            button: "Remove member",
            cancel: here.clone(),
        },
    );
    Ok(layout::ok(&format!("Remove {email}"), &session, body))
}

/// `POST /apps/{app}/members/remove` (owner).
pub async fn remove(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<EmailQuery>,
) -> PageResult {
    posted.session.caller.require_owner(&app)?;
    require_app(&gateway, &app)?;
    gateway
        .operators
        .member_remove(&app, posted.form.email.trim())
        .await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{app}/members?flash=member-removed")).into_response())
}
