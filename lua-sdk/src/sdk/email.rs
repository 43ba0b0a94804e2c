//! `email`: outbound mail, through the `Host`.
//!
//! * `email.send{to=, cc=, bcc=, subject=, text=, html=, from=, reply_to=,
//!   attachments={{filename=, content_type=, data=}, ...}}` → the delivery
//!   id (a string). `to`, `cc` and `bcc` take one address or a list.
//!
//! The mail is queued (never sent inside the call): the node's outbox
//! delivers it, retries it and dead-letters it. This module checks the
//! table's shape and types; addresses, header fields and sizes are the
//! host's (`email_invalid`, `email_too_large`), since parsing addresses is
//! the mailer's business and this crate imports no other crate of ours.

use std::sync::Arc;

use mlua::{Lua, Table, Value};

use super::files::string_option;
use super::kv::{describe, host_error};
use crate::host::{Host, OutgoingAttachment, OutgoingEmail};
use crate::location::script_error;

const SEND: &str = "email.send";

pub(super) fn install(lua: &Lua, app: Arc<str>, host: Arc<dyn Host>) -> mlua::Result<()> {
    let email = lua.create_table()?;
    email.raw_set(
        "send",
        lua.create_async_function(move |lua, message: Value| {
            let (app, host) = (app.clone(), host.clone());
            let email = outgoing(&lua, message);
            async move {
                let email = email?;
                host.email_send(&app, email).await.map_err(host_error)
            }
        })?,
    )?;
    lua.globals().raw_set("email", email)
}

/// The script's table as an [`OutgoingEmail`].
fn outgoing(lua: &Lua, message: Value) -> mlua::Result<OutgoingEmail> {
    let Value::Table(message) = message else {
        return Err(script_error(
            lua,
            format!("{SEND}: expects a table, got {}", describe(&message)),
        ));
    };
    Ok(OutgoingEmail {
        from: string_option(lua, SEND, &message, "from")?,
        to: addresses(lua, &message, "to")?,
        cc: addresses(lua, &message, "cc")?,
        bcc: addresses(lua, &message, "bcc")?,
        reply_to: string_option(lua, SEND, &message, "reply_to")?,
        subject: string_option(lua, SEND, &message, "subject")?.unwrap_or_default(),
        text: string_option(lua, SEND, &message, "text")?,
        html: string_option(lua, SEND, &message, "html")?,
        attachments: attachments(lua, &message)?,
    })
}

/// One address or a list of them.
fn addresses(lua: &Lua, message: &Table, field: &str) -> mlua::Result<Vec<String>> {
    let wrong = |what: &Value| {
        script_error(
            lua,
            format!(
                "{SEND}: {field} must be an address or a list of addresses, got {}",
                describe(what)
            ),
        )
    };
    let text = |value: &Value| match value {
        Value::String(text) => text
            .to_str()
            .map(|text| text.to_string())
            .map_err(|_| script_error(lua, format!("{SEND}: {field} must be valid UTF-8"))),
        other => Err(wrong(other)),
    };
    match message.raw_get::<Value>(field)? {
        Value::Nil => Ok(Vec::new()),
        Value::Table(list) => list
            .sequence_values::<Value>()
            .map(|value| text(&value?))
            .collect(),
        other => Ok(vec![text(&other)?]),
    }
}

fn attachments(lua: &Lua, message: &Table) -> mlua::Result<Vec<OutgoingAttachment>> {
    let list = match message.raw_get::<Value>("attachments")? {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(list) => list,
        other => {
            return Err(script_error(
                lua,
                format!(
                    "{SEND}: attachments must be a list, got {}",
                    describe(&other)
                ),
            ));
        }
    };
    let mut found = Vec::new();
    for item in list.sequence_values::<Value>() {
        let Value::Table(item) = item? else {
            return Err(script_error(
                lua,
                format!("{SEND}: each attachment must be a table {{filename=, data=}}"),
            ));
        };
        let data = match item.raw_get::<Value>("data")? {
            Value::String(data) => data.as_bytes().to_vec(),
            other => {
                return Err(script_error(
                    lua,
                    format!(
                        "{SEND}: an attachment's data must be a string, got {}",
                        describe(&other)
                    ),
                ));
            }
        };
        found.push(OutgoingAttachment {
            filename: string_option(lua, SEND, &item, "filename")?.unwrap_or_default(),
            content_type: string_option(lua, SEND, &item, "content_type")?,
            data,
        });
    }
    Ok(found)
}
