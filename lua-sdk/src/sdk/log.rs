//! `log.debug/info/warn/error(...)` and `print(...)` (= `log.info`).
//!
//! Arguments are converted like `print` does: each through the VM's original
//! `tostring` (so `__tostring` works), joined by tabs, then truncated to
//! [`LOG_MESSAGE_BYTES_MAX`].

use std::sync::Arc;

use mlua::{Function, Lua, MultiValue, Value};

use crate::host::{Host, LogLevel};
use crate::limits::LOG_MESSAGE_BYTES_MAX;

pub(super) fn install(lua: &Lua, app: Arc<str>, host: Arc<dyn Host>) -> mlua::Result<()> {
    // Captured now, before scripts run, so a script replacing the global
    // `tostring` changes nothing here.
    let tostring: Function = lua.globals().raw_get("tostring")?;
    let log = lua.create_table()?;
    for level in [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ] {
        let function = log_function(lua, level, app.clone(), host.clone(), tostring.clone())?;
        if level == LogLevel::Info {
            lua.globals().raw_set("print", function.clone())?;
        }
        log.raw_set(level.as_str(), function)?;
    }
    lua.globals().raw_set("log", log)
}

fn log_function(
    lua: &Lua,
    level: LogLevel,
    app: Arc<str>,
    host: Arc<dyn Host>,
    tostring: Function,
) -> mlua::Result<Function> {
    lua.create_function(move |_, args: MultiValue| {
        let mut message = String::new();
        for (index, arg) in args.into_iter().enumerate() {
            if index > 0 {
                message.push('\t');
            }
            match arg {
                // Cut before converting: a 10 MB string argument must not be
                // copied whole only to be truncated.
                Value::String(s) => {
                    let bytes = s.as_bytes();
                    let end = bytes.len().min(LOG_MESSAGE_BYTES_MAX + 4);
                    message.push_str(&String::from_utf8_lossy(&bytes[..end]));
                }
                other => {
                    let text: mlua::LuaString = tostring.call(other)?;
                    message.push_str(&text.to_string_lossy());
                }
            }
            if message.len() > LOG_MESSAGE_BYTES_MAX {
                break;
            }
        }
        host.log(&app, level, truncate(message));
        Ok(())
    })
}

fn truncate(mut message: String) -> String {
    if message.len() > LOG_MESSAGE_BYTES_MAX {
        let mut end = LOG_MESSAGE_BYTES_MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_short_messages_and_cuts_on_a_char_boundary() {
        assert_eq!(truncate("hello".to_string()), "hello");
        let long = "é".repeat(LOG_MESSAGE_BYTES_MAX);
        let cut = truncate(long);
        assert!(cut.len() <= LOG_MESSAGE_BYTES_MAX + "…".len());
        assert!(cut.ends_with('…'));
    }
}
