//! An app's secrets: names and update times, set and delete, admins only
//! (the admin API's scope matrix). A value goes in once through a
//! password-type field and never comes back: no page holds one, not even
//! in its HTML source; only scripts (`secrets.get`) read values.
//! Setting seals on this node with `admin::secrets::seal_and_set`, as the
//! admin API does.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use picloud_lua_sdk::Code;
use picloud_storage::secrets::SECRET_VALUE_BYTES_MAX;
use serde::Deserialize;

use super::kv::query;
use super::layout;
use super::session::{FORM_BYTES_MAX, form_up_to};
use super::{BASE, PageQuery, PageResult, Posted, Session};
use crate::gateway::admin::checks::require_app;
use crate::gateway::admin::secrets::{check_name, remove, seal_and_set};
use crate::gateway::{ApiError, Gateway};

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    flash: Option<String>,
}

/// `GET /apps/{app}/secrets`: names and times (admin).
pub async fn list(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query_): PageQuery<ListQuery>,
) -> PageResult {
    session.caller.require_admin()?;
    require_app(&gateway, &app)?;
    gateway.node.read_barrier().await?;
    let secrets = gateway.node.reader().secrets(&app)?;
    let flash = query_.flash.as_deref().and_then(layout::flash_text);
    let here = format!("{BASE}/apps/{app}/secrets");
    let body = html! {
        h1 { (app) ": secrets" }
        (layout::app_nav(&app, "Secrets"))
        @if let Some(flash) = flash { (layout::flash_box(flash)) }
        p.muted { "Values are sealed with the cluster's master key and never shown; scripts read them with " code { "secrets.get" } "." }
        @if secrets.is_empty() {
            p.muted { "No secrets." }
        } @else {
            table #secrets {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Updated" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for (name, record) in &secrets {
                        tr data-secret=(name) {
                            th scope="row" { code { (name) } }
                            td { (layout::time(record.updated_ms)) }
                            td { a href={ (here) "/delete" (query(&[("name", name)])) } aria-label={ "Delete secret " (name) } { "Delete" } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="secret-set" {
            h2 #secret-set { "Set a secret" }
            (layout::form_post(&here, &session, html! {
                label for="secret-name" { "Name" }
                input #secret-name type="text" name="name" required autocomplete="off";
                label for="secret-value" { "Value" }
                input #secret-value type="password" name="value" required autocomplete="new-password";
                button type="submit" { "Set secret" }
            }))
        }
    };
    Ok(layout::ok(&format!("{app} secrets"), &session, body))
}

#[derive(Deserialize)]
pub struct SetForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

/// Most bytes of a posted set form: a value of [`SECRET_VALUE_BYTES_MAX`]
/// urlencoded (up to 3 bytes a byte), its name and the CSRF token.
pub const SET_FORM_BYTES_MAX: usize = SECRET_VALUE_BYTES_MAX * 3 + FORM_BYTES_MAX;

/// `POST /apps/{app}/secrets`: seals and sets (admin).
pub async fn set(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    body: Body,
) -> PageResult {
    let form: SetForm = form_up_to(&session, body, SET_FORM_BYTES_MAX).await?;
    session.caller.require_admin()?;
    let name = form.name.trim();
    check_name(name)?;
    require_app(&gateway, &app)?;
    let value = form.value.as_bytes();
    if value.is_empty() {
        return Err(ApiError::new(Code::EmptySecret, "the secret value is empty").into());
    }
    if value.len() > SECRET_VALUE_BYTES_MAX {
        return Err(ApiError::new(
            Code::SecretTooLarge,
            format!("secret values are at most {SECRET_VALUE_BYTES_MAX} bytes"),
        )
        .into());
    }
    seal_and_set(&gateway, &app, name, value).await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{app}/secrets?flash=secret-set")).into_response())
}

#[derive(Deserialize)]
pub struct NameQuery {
    #[serde(default)]
    name: String,
}

/// `GET /apps/{app}/secrets/delete?name=`: the confirmation page (admin).
pub async fn delete_confirm(
    State(gateway): State<Gateway>,
    session: Session,
    Path(app): Path<String>,
    PageQuery(query_): PageQuery<NameQuery>,
) -> PageResult {
    session.caller.require_admin()?;
    require_app(&gateway, &app)?;
    let name = query_.name;
    check_name(&name)?;
    let here = format!("{BASE}/apps/{app}/secrets");
    let body = layout::confirm(
        &session,
        layout::Confirm {
            heading: html! { "Delete secret " code { (name) } "?" },
            warning: Some("Scripts reading it get nothing from then on. It cannot be undone."),
            action: format!("{here}/delete"),
            fields: &[("name", &name)],
            button: "Delete secret",
            cancel: here.clone(),
        },
    );
    Ok(layout::ok(&format!("Delete secret {name}"), &session, body))
}

/// `POST /apps/{app}/secrets/delete`: deletes (admin).
pub async fn delete(
    State(gateway): State<Gateway>,
    Path(app): Path<String>,
    posted: Posted<NameQuery>,
) -> PageResult {
    posted.session.caller.require_admin()?;
    require_app(&gateway, &app)?;
    remove(&gateway, &app, &posted.form.name).await?;
    Ok(Redirect::to(&format!("{BASE}/apps/{app}/secrets?flash=secret-deleted")).into_response())
}
