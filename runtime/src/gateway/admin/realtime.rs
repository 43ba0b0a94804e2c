//! Realtime in the admin API (admin key only): rotating an app's token
//! signing key.
//!
//! ```text
//!  POST /apps/{app}/realtime/rotate-key   a new random key, sealed, through the log
//! ```
//!
//! Tokens signed with the old key are refused (`token_invalid`) on every
//! node once the new key is applied there; that is what rotation is for.
//! Open streams keep running until they end.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::checks::require_app;
use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, Gateway};

#[utoipa::path(
    post,
    path = "/apps/{app}/realtime/rotate-key",
    tag = "realtime",
    params(("app" = String, Path, description = "The app's name.")),
    responses((status = 200, description = "The signing key is rotated.")),
)]
pub(super) async fn rotate_key(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    require_app(&gateway, &app)?;
    gateway.realtime.rotate_key(&app).await?;
    Ok(Json(json!({"app": app, "rotated": true})))
}
