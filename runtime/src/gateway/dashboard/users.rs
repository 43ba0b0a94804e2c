//! An app's end users: the list ([`USERS_PAGE_MAX`] a page, the service's
//! cursor) or one found by email, each with its roles; adding and
//! removing a role, deleting a user (confirmation), and inviting by email
//! (the app's `[auth.templates.invite]`, as `users.invite`). Reads need
//! read, changes write, as the admin API's users routes; the changes call
//! the same `UserService` through `admin::users`.
//!
//! Pending invitations are not listed: storage keeps an invitation only
//! as its token's hash under that hash, with no index by app to list.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::kv::query;
use super::layout;
use super::{BASE, PageQuery, PageResult, Posted, Session, may};
use crate::gateway::Gateway;
use crate::gateway::admin::checks::require_app;
use crate::gateway::admin::routes::Need;
use crate::gateway::admin::users::{change_roles, invite_email, user_not_found};

/// Most users one page lists.
pub const USERS_PAGE_MAX: usize = 50;

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    cursor: Option<String>,
    /// An exact email (normalised by the service) to find one user.
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    flash: Option<String>,
}

fn roles_of(user: &Value) -> Vec<String> {
    user["roles"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .filter_map(|role| role.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text(user: &Value, field: &str) -> String {
    user[field].as_str().unwrap_or_default().to_string()
}

/// `GET /apps/{app}/users` (read).
pub async fn list(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(list): PageQuery<ListQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let email = list.email.unwrap_or_default().trim().to_string();
    let (users, cursor) = if email.is_empty() {
        let cursor = list.cursor.filter(|cursor| !cursor.is_empty());
        let page = gateway
            .users
            .list(&app, cursor, Some(USERS_PAGE_MAX))
            .await?;
        let users = page["users"].as_array().cloned().unwrap_or_default();
        (users, page["cursor"].as_str().map(str::to_string))
    } else {
        let found = gateway.users.find(&app, &email).await?;
        (found.into_iter().collect(), None)
    };
    let write = may(&session.caller, Need::Write, &app);
    let flash = list.flash.as_deref().and_then(layout::flash_text);
    let here = format!("{BASE}/apps/{app}/users");
    let body = html! {
        h1 { (app) ": users" }
        (layout::app_nav(&app, "Users"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        form method="get" action=(here) role="search" {
            label for="users-email" { "Find by email" }
            input #users-email type="email" name="email" value=(email) autocomplete="off";
            button type="submit" { "Find" }
        }
        @if users.is_empty() {
            p.muted { @if email.is_empty() { "No users." } @else { "No user with that email." } }
        } @else {
            table #users {
                thead { tr {
                    th scope="col" { "Email" } th scope="col" { "Verified" } th scope="col" { "Roles" }
                    th scope="col" { "Created" }
                } }
                tbody {
                    @for user in &users {
                        @let id = text(user, "id");
                        tr data-user=(text(user, "email")) {
                            th scope="row" { a href={ (here) "/show" (query(&[("id", &id)])) } { (text(user, "email")) } }
                            td { (user["verified"].as_bool().unwrap_or(false)) }
                            td.roles { @for role in roles_of(user) { code { (role) } " " } }
                            td { @if let Some(ms) = user["created_ms"].as_u64() { (layout::time(ms)) } }
                        }
                    }
                }
            }
        }
        @if let Some(cursor) = &cursor {
            p.pager { a href={ (here) (query(&[("cursor", cursor)])) } rel="next" { "Next page" } }
        }
        @if write {
            section aria-labelledby="users-invite" {
                h2 #users-invite { "Invite a user" }
                p.muted { "The invitation is mailed with the app's invite template; it is not listed here once sent." }
                (layout::form_post(&format!("{here}/invite"), &session, html! {
                    label for="invite-email" { "Email" }
                    input #invite-email type="email" name="email" required autocomplete="off";
                    label for="invite-roles" { "Roles (comma-separated)" }
                    input #invite-roles type="text" name="roles" autocomplete="off";
                    button type="submit" { "Send invitation" }
                }))
            }
        }
    };
    Ok(layout::ok(&format!("{app} users"), &session, body))
}

#[derive(Deserialize)]
pub struct IdQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    flash: Option<String>,
}

/// `GET /apps/{app}/users/show?id=`: a user, its roles and actions (read).
pub async fn show(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(show): PageQuery<IdQuery>,
) -> PageResult {
    session.caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let user = gateway
        .users
        .get(&app, &show.id)
        .await?
        .ok_or_else(|| user_not_found(&show.id))?;
    let write = may(&session.caller, Need::Write, &app);
    let flash = show.flash.as_deref().and_then(layout::flash_text);
    let here = format!("{BASE}/apps/{app}/users");
    let id = show.id;
    let roles = roles_of(&user);
    let body = html! {
        h1 { (text(&user, "email")) }
        (layout::app_nav(&app, "Users"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        dl.facts {
            dt { "Id" } dd.mono { (id) }
            dt { "Verified" } dd { (user["verified"].as_bool().unwrap_or(false)) }
            @if let Some(ms) = user["created_ms"].as_u64() { dt { "Created" } dd { (layout::time(ms)) } }
            dt { "Roles" }
            dd #user-roles { @if roles.is_empty() { span.muted { "none" } } @for role in &roles { code { (role) } " " } }
        }
        @if write {
            section aria-labelledby="user-roles-title" {
                h2 #user-roles-title { "Roles" }
                @for role in &roles {
                    (layout::form_post(&format!("{here}/roles"), &session, html! {
                        input type="hidden" name="id" value=(id);
                        input type="hidden" name="remove" value=(role);
                        button.link type="submit" { "Remove role " (role) }
                    }))
                }
                (layout::form_post(&format!("{here}/roles"), &session, html! {
                    input type="hidden" name="id" value=(id);
                    label for="user-add-role" { "Add a role" }
                    input #user-add-role type="text" name="add" required autocomplete="off";
                    button type="submit" { "Add role" }
                }))
            }
            p { a.danger href={ (here) "/delete" (query(&[("id", &id)])) } { "Delete this user…" } }
        }
        p { a href=(here) { "Back to the users" } }
    };
    Ok(layout::ok(&format!("{app} user"), &session, body))
}

#[derive(Deserialize)]
pub struct RolesForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    add: Option<String>,
    #[serde(default)]
    remove: Option<String>,
}

/// `POST /apps/{app}/users/roles`: adds or removes one role (write).
pub async fn roles(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<RolesForm>,
) -> PageResult {
    posted.session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let RolesForm { id, add, remove } = posted.form;
    let one = |role: Option<String>| {
        role.map(|role| role.trim().to_string())
            .filter(|role| !role.is_empty())
            .into_iter()
            .collect::<Vec<_>>()
    };
    change_roles(&gateway, &app, &id, one(add), &one(remove)).await?;
    let to = format!(
        "{BASE}/apps/{app}/users/show{}",
        query(&[("id", &id), ("flash", "user-roles")])
    );
    Ok(Redirect::to(&to).into_response())
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    roles: String,
}

/// `POST /apps/{app}/users/invite` (write).
pub async fn invite(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<InviteForm>,
) -> PageResult {
    posted.session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let roles: Vec<String> = posted
        .form
        .roles
        .split(',')
        .map(str::trim)
        .filter(|role| !role.is_empty())
        .map(str::to_string)
        .collect();
    invite_email(&gateway, &app, posted.form.email.trim(), &roles).await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{app}/users?flash=user-invited")).into_response())
}

/// `GET /apps/{app}/users/delete?id=`: the confirmation page (write).
pub async fn delete_confirm(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(show): PageQuery<IdQuery>,
) -> PageResult {
    session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    let user = gateway
        .users
        .get(&app, &show.id)
        .await?
        .ok_or_else(|| user_not_found(&show.id))?;
    let here = format!("{BASE}/apps/{app}/users");
    let body = layout::confirm(
        &session,
        layout::Confirm {
            heading: html! { "Delete user " (text(&user, "email")) "?" },
            warning: Some("The user and every session it has end. It cannot be undone."),
            action: format!("{here}/delete"),
            fields: &[("id", &show.id)],
            button: "Delete user",
            cancel: format!("{here}/show{}", query(&[("id", &show.id)])),
        },
    );
    Ok(layout::ok("Delete user", &session, body))
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    id: String,
}

/// `POST /apps/{app}/users/delete` (write).
pub async fn delete(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<DeleteForm>,
) -> PageResult {
    posted.session.caller.require_write(&app)?;
    require_app(&gateway, &app)?;
    gateway.users.delete(&app, &posted.form.id).await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{app}/users?flash=user-deleted")).into_response())
}
