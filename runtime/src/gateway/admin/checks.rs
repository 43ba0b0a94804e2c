//! Checks every admin resource shares: app names, the app's existence,
//! page sizes, read consistency, and turning a rejected command into its
//! API error.

use picloud_actors::app::AppName;
use picloud_lua_sdk::Code;
use picloud_storage::CommandResult;

use crate::gateway::{ApiError, Gateway};

/// Checks a name a client gives a new app (create, deploy).
pub(super) fn check_app_name(app: &str) -> Result<AppName, ApiError> {
    AppName::parse(app).map_err(|error| ApiError::new(Code::InvalidAppName, error.to_string()))
}

/// The name of an app a command was just accepted for: it exists, so its
/// name passed [`check_app_name`] when it was created. Other routes do not
/// check names up front: an unknown or malformed name is 404 `app_not_found`
/// from the state, after the scope check, as it always was.
pub(super) fn existing_app_name(app: &str) -> Result<AppName, ApiError> {
    AppName::parse(app).map_err(|error| {
        ApiError::internal(format!(
            "app {app:?} exists but its name is invalid: {error}"
        ))
    })
}

/// Turns a deterministic rejection into its API error; passes other results on.
pub(super) fn accepted(result: CommandResult) -> Result<CommandResult, ApiError> {
    match result {
        CommandResult::Rejected(error) => Err(error.into()),
        other => Ok(other),
    }
}

/// The checked name of an app that exists in this node's state. A
/// malformed name names no app: 404 `app_not_found`, as for a missing one.
pub(crate) fn require_app(gateway: &Gateway, app: &str) -> Result<AppName, ApiError> {
    let not_found = || ApiError::new(Code::AppNotFound, format!("app {app} not found"));
    let name = AppName::parse(app).map_err(|_| not_found())?;
    if gateway.node.reader().app(&name)?.is_none() {
        return Err(not_found());
    }
    Ok(name)
}

/// A page size from the query (default 100), checked against `max`.
pub(super) fn page_limit(
    limit: Option<usize>,
    max: usize,
    setting: &str,
) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > max {
        return Err(ApiError::new(
            Code::InvalidField,
            format!("limit: must be 1 to {max}{setting}"),
        ));
    }
    Ok(limit)
}

pub(super) async fn barrier(gateway: &Gateway, consistency: Option<&str>) -> Result<(), ApiError> {
    match consistency {
        None | Some("linearizable") => Ok(gateway.node.read_barrier().await?),
        Some("stale") => Ok(()),
        Some(other) => Err(ApiError::new(
            Code::InvalidField,
            format!("consistency: expected linearizable or stale, got {other:?}"),
        )),
    }
}
