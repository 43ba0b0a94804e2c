//! [`DeployError`], the one error of every deploy check (bundle, modules,
//! libraries), kept apart so the checks share it without importing each other.

use picloud_lua_sdk::CompileError;

/// A deploy that cannot be accepted. The message is what the user sees
/// (`greet.lua:3: unexpected symbol near '='`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeployError {
    pub message: String,
}

impl From<CompileError> for DeployError {
    fn from(error: CompileError) -> Self {
        DeployError {
            message: error.to_string(),
        }
    }
}
