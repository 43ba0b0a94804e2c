//! `pubsub.publish(topic, msg)`, `pubsub.publish_durable(topic, msg)` and
//! `realtime.token(topic, {ttl=, subject=})`: argument checks around the
//! `Host` pub/sub calls. The node checks the topic against the app's
//! `[[topic]]` declarations and the message's size; here only the types.

use std::sync::Arc;

use mlua::{Lua, Value};

use super::kv::{describe, host_error, options_arg, ttl_arg, value_arg};
use crate::host::{Host, PublishKind};
use crate::location::script_error;

pub(super) fn install(lua: &Lua, app: Arc<str>, host: Arc<dyn Host>) -> mlua::Result<()> {
    let pubsub = lua.create_table()?;
    for (name, kind) in [
        ("publish", PublishKind::Ephemeral),
        ("publish_durable", PublishKind::Durable),
    ] {
        let (a, h) = (app.clone(), host.clone());
        let function = format!("pubsub.{name}");
        pubsub.raw_set(
            name,
            lua.create_async_function(move |lua, (topic, message): (Value, Value)| {
                let (app, host) = (a.clone(), h.clone());
                let args = (|| -> mlua::Result<_> {
                    let topic = topic_arg(&lua, &function, topic)?;
                    if message.is_nil() {
                        return Err(script_error(&lua, format!("{function}: message is nil")));
                    }
                    Ok((topic, value_arg(&lua, &function, &message)?))
                })();
                async move {
                    let (topic, message) = args?;
                    let id = host
                        .pubsub_publish(&app, &topic, message, kind)
                        .await
                        .map_err(host_error)?;
                    Ok(id)
                }
            })?,
        )?;
    }
    lua.globals().raw_set("pubsub", pubsub)?;

    let realtime = lua.create_table()?;
    let (a, h) = (app, host);
    realtime.raw_set(
        "token",
        lua.create_async_function(move |lua, (topic, options): (Value, Value)| {
            let (app, host) = (a.clone(), h.clone());
            let args = (|| -> mlua::Result<_> {
                let topic = topic_arg(&lua, "realtime.token", topic)?;
                let options = options_arg(&lua, "realtime.token", options)?;
                let (ttl, subject) = match options {
                    Some(options) => {
                        let ttl = ttl_arg(&lua, "realtime.token", options.raw_get("ttl")?)?;
                        let subject = match options.raw_get::<Value>("subject")? {
                            Value::Nil => None,
                            Value::String(s) => Some(s.to_str()?.to_string()),
                            other => {
                                return Err(script_error(
                                    &lua,
                                    format!(
                                        "realtime.token: subject must be a string, got {}",
                                        describe(&other)
                                    ),
                                ));
                            }
                        };
                        (ttl, subject)
                    }
                    None => (None, None),
                };
                Ok((topic, ttl, subject))
            })();
            async move {
                let (topic, ttl, subject) = args?;
                host.realtime_token(&app, &topic, ttl, subject)
                    .await
                    .map_err(host_error)
            }
        })?,
    )?;
    lua.globals().raw_set("realtime", realtime)
}

fn topic_arg(lua: &Lua, function: &str, topic: Value) -> mlua::Result<String> {
    match topic {
        Value::String(s) => s
            .to_str()
            .map(|s| s.to_string())
            .map_err(|_| script_error(lua, format!("{function}: topic must be valid UTF-8"))),
        other => Err(script_error(
            lua,
            format!(
                "{function}: topic must be a string, got {}",
                describe(&other)
            ),
        )),
    }
}
