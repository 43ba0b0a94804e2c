//! Mail captured in dev mode (no `--smtp-relay`): list an app's captured
//! messages, newest first, and show one with its bodies and attachment
//! names and sizes (`picloud mail list|show`).

use axum::Json;
use axum::extract::{Path, State};
use base64::Engine;
use picloud_lua_sdk::Code;
use picloud_storage::email::CapturedMail;
use serde::Deserialize;
use serde_json::{Value, json};

use super::checks::{page_limit, require_app};
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, ApiQuery, Gateway};

/// Most captured messages one list page returns.
const MAIL_PAGE_MAX: usize = 1_000;

fn summary_json(app: &str, mail: &CapturedMail) -> Value {
    json!({
        "id": mail.id,
        "delivery_id": picloud_storage::triggers::delivery_id(app, mail.id),
        "captured_ms": mail.captured_ms,
        "from": mail.message.from,
        "to": mail.message.to,
        "cc": mail.message.cc,
        "bcc": mail.message.bcc,
        "subject": mail.message.subject,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct MailPage {
    /// Ids below this one (the previous page's cursor).
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/apps/{app}/mail",
    tag = "mail",
    params(("app" = String, Path, description = "The app's name."), MailPage),
    responses((status = 200, description = "A page of captured mail.")),
)]
pub(super) async fn list(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
    ApiQuery(page): ApiQuery<MailPage>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    let limit = page_limit(page.limit, MAIL_PAGE_MAX, "")?;
    gateway.node.read_barrier().await?;
    let mails = gateway
        .node
        .reader()
        .captured_mail(&app, page.before, limit + 1)?;
    let more = mails.len() > limit;
    let items: Vec<Value> = mails
        .iter()
        .take(limit)
        .map(|mail| summary_json(&app, mail))
        .collect();
    let cursor = if more {
        mails.get(limit - 1).map(|mail| mail.id)
    } else {
        None
    };
    Ok(Json(json!({"items": items, "cursor": cursor})))
}

#[utoipa::path(
    get,
    path = "/apps/{app}/mail/{id}",
    tag = "mail",
    params(("app" = String, Path, description = "The app's name."), ("id" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "The message.")),
)]
pub(super) async fn show(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    // `7` or the delivery id `app/7` a script got back.
    let id: u64 = id.rsplit('/').next().unwrap_or(&id).parse().map_err(|_| {
        ApiError::new(
            Code::InvalidField,
            format!("id: expected a captured mail id (a number), got {id:?}"),
        )
    })?;
    caller.require_read(&app)?;
    require_app(&gateway, &app)?;
    gateway.node.read_barrier().await?;
    let mail = gateway
        .node
        .reader()
        .captured_mail_one(&app, id)?
        .ok_or_else(|| {
            ApiError::new(
                Code::EmailNotFound,
                format!("app {app} has no captured mail {id}"),
            )
        })?;
    let mut shown = summary_json(&app, &mail);
    shown["reply_to"] = json!(mail.message.reply_to);
    shown["text"] = json!(mail.message.text);
    shown["html"] = json!(mail.message.html);
    shown["attachments"] = mail
        .message
        .attachments
        .iter()
        .map(|attachment| {
            json!({
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.data.len(),
                "data_base64": base64::engine::general_purpose::STANDARD.encode(&attachment.data),
            })
        })
        .collect();
    Ok(Json(shown))
}
