//! The globals scripts call: `kv`, `docs`, `files`, `log` (and `print`),
//! `json`, `time`, `secrets`, `crypto` (with `base64` and `hex`), `http`
//! (outbound requests), `email` (outbound mail, queued), `pubsub` and
//! `realtime`.
//! (outbound requests), `pubsub`, `realtime` and `users` (end users and
//! their sessions).
//!
//! Service calls are mlua async functions: the script's coroutine yields
//! while the `Host` future runs, so a VM never blocks a runtime thread.
//! Arguments are checked before the future is built, so a bad call fails
//! with `<file>:<line>: kv.set: ...` pointing at the script's line.

mod crypto;
mod docs;
mod email;
mod files;
mod http;
mod json;
mod kv;
mod log;
mod pubsub;
mod secrets;
mod time;
mod users;

use std::sync::Arc;

use mlua::Lua;

use crate::host::Host;

/// Registers every SDK global in `lua`.
pub(crate) fn install(lua: &Lua, app: &str, host: Arc<dyn Host>) -> mlua::Result<()> {
    let app: Arc<str> = Arc::from(app);
    json::install(lua)?;
    kv::install(lua, app.clone(), host.clone())?;
    docs::install(lua, app.clone(), host.clone())?;
    files::install(lua, app.clone(), host.clone())?;
    email::install(lua, app.clone(), host.clone())?;
    log::install(lua, app.clone(), host.clone())?;
    secrets::install(lua, app.clone(), host.clone())?;
    crypto::install(lua, host.clone())?;
    http::install(lua, app.clone(), host.clone())?;
    pubsub::install(lua, app.clone(), host.clone())?;
    users::install(lua, app.clone(), host.clone())?;
    time::install(lua, host)?;
    Ok(())
}
