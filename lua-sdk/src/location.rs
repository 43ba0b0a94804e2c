//! Where in a script an error happened, for errors that do not come from
//! the script's own `error(...)`: a Rust function called by the script
//! raises [`script_error`] at the script's `file:line:`, and a string error
//! raised inside the prelude (or by a C function it called) is moved to the
//! script's line by [`relocate_error`].
//!
//! It sits below the SDK, the sandbox and the budget, which all raise such
//! errors; the text rules themselves are in `error`.

use std::fmt::Display;

use mlua::{Lua, Value};

/// A script error pointing at the script line that made the call.
pub(crate) fn script_error(lua: &Lua, message: impl Display) -> mlua::Error {
    mlua::Error::runtime(format!("{}{message}", crate::error::script_location(lua)))
}

/// `pcall`'s message handler: a string error raised in the prelude (or by a
/// C function it called) names the prelude's line; while the stack is still
/// there, point it at the script's line instead.
pub(crate) fn relocate_error(lua: &Lua, error: Value) -> Value {
    if let Value::String(message) = &error
        && let Some(relocated) = crate::error::relocate_prelude_message(
            &message.to_string_lossy(),
            &crate::error::script_location(lua),
        )
        && let Ok(relocated) = lua.create_string(relocated)
    {
        return Value::String(relocated);
    }
    error
}
