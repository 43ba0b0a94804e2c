//! Errors of serving a request through an app. The gateway maps each to an HTTP
//! status and a stable code in one place.

use picloud_lua_sdk::InvokeError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppError {
    #[error("app {app} not found")]
    AppNotFound { app: String },
    #[error("app {app} has no deployed version")]
    NotDeployed { app: String },
    #[error("no route of app {app} matches {method} {path}")]
    RouteNotFound {
        app: String,
        method: String,
        path: String,
    },
    #[error("app {app} has a route for {path} but not for method {method}")]
    MethodNotAllowed {
        app: String,
        method: String,
        path: String,
    },
    #[error("app {app} is busy: all {pool_size} script VMs stayed in use for {waited_ms} ms")]
    Busy {
        app: String,
        pool_size: usize,
        waited_ms: u64,
    },
    #[error("{0}")]
    Invoke(InvokeError),
    /// The app's actor is restarting or the node is shutting down.
    #[error("app {app} is unavailable: {message}")]
    Unavailable { app: String, message: String },
    /// The stored bundle failed to load (should not happen: deploys are checked).
    #[error("app {app} version {version} failed to load: {message}")]
    LoadFailed {
        app: String,
        version: u64,
        message: String,
    },
    #[error("storage: {message}")]
    Storage { message: String },
}
