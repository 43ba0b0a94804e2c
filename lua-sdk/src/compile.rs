//! Compiling Lua source text: [`check_syntax`] (a deploy's check, without
//! running anything) and `compile`, which every script and module goes
//! through, so only text this crate compiled itself ever becomes a function
//! (precompiled bytecode from outside could break the VM's memory safety).

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, StdLib};

use crate::error::CompileError;
use crate::limits::SYNTAX_CHECK_MEMORY_BYTES_MAX;

/// Compiles `source` without running it.
pub fn check_syntax(name: &str, source: &str) -> Result<(), CompileError> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::new())
        .map_err(|e| CompileError::new(name, None, format!("cannot create a Lua state: {e}")))?;
    // Parsing needs memory proportional to the source; cap it anyway.
    lua.set_memory_limit(SYNTAX_CHECK_MEMORY_BYTES_MAX)
        .map_err(|e| CompileError::new(name, None, format!("cannot set the memory limit: {e}")))?;
    compile(&lua, name, source).map(|_| ())
}

/// Compiles `source` (named `name` in error messages and tracebacks) to a
/// function of `lua`, as text only.
pub(crate) fn compile(lua: &Lua, name: &str, source: &str) -> Result<Function, CompileError> {
    lua.load(source)
        .set_name(format!("@{name}"))
        // Never binary: precompiled bytecode can break the VM's memory safety.
        .set_mode(ChunkMode::Text)
        .into_function()
        .map_err(|error| match error {
            mlua::Error::SyntaxError { message, .. } => {
                CompileError::from_lua_message(name, &message)
            }
            other => CompileError::from_lua_message(name, &other.to_string()),
        })
}
