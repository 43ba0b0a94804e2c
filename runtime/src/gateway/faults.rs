//! `POST /_/api/v1/faults/{*name}`: arms one panic at the fault point `name`
//! of a supervised duty or app actor (`picloud_cluster::arm_fault`). The
//! route exists only in builds with the `fault-injection` feature, which the
//! process tests' build turns on and a release build never does; it lets
//! those tests prove that a panicked actor restarts and finishes its work.

use axum::extract::Path;
use axum::http::StatusCode;
use picloud_lua_sdk::Code;

use super::ApiError;
use super::auth::Caller;

pub async fn arm(caller: Caller, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    if !picloud_cluster::arm_fault(&name) {
        return Err(ApiError::new(
            Code::NotFound,
            "this build has no fault switch",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
