//! A backup of the whole cluster: `GET /backup?files=false` streams the
//! `PICBACK1` file (`picloud_cluster::backup`) from whichever node the
//! caller asked. Admin only: it holds every app's data (secrets sealed).
//!
//! The state's view is opened before the response starts, so a failure
//! there (no leader, another backup running) is an ordinary error; a
//! failure after the first byte (the writes during the backup outgrew
//! `backup_kept_bytes_max`, a block no member holds) cuts the body, which
//! the CLI reports (and keeps no file).

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use picloud_actors::host::now_ms;
use picloud_cluster::backup;
use picloud_lua_sdk::Code;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::gateway::auth::Caller;
use crate::gateway::{ApiError, ApiQuery, Gateway};

/// Backups one node writes at once (each reads the whole state and keeps
/// old values of what is written meanwhile); one more is refused with
/// `backup_busy`.
pub const BACKUPS_AT_ONCE_MAX: usize = 1;

static BACKUPS: Semaphore = Semaphore::const_new(BACKUPS_AT_ONCE_MAX);

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct BackupQuery {
    /// Include files' blocks (default true).
    files: Option<bool>,
}

/// Streams a backup of the whole cluster.
#[utoipa::path(
    get,
    path = "/backup",
    tag = "cluster",
    params(BackupQuery),
    responses((
        status = 200,
        description = "The `PICBACK1` backup file, streamed; `X-Picloud-Backup-Index` is its log index.",
        content_type = "application/octet-stream",
    )),
)]
pub(super) async fn backup(
    State(gateway): State<Gateway>,
    caller: Caller,
    ApiQuery(query): ApiQuery<BackupQuery>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let permit = BACKUPS.try_acquire().map_err(|_| {
        ApiError::new(
            Code::BackupBusy,
            "another backup is being written on this node; retry when it ends",
        )
    })?;
    let prepared = backup::prepare(
        &gateway.node,
        query.files.unwrap_or(true),
        now_ms(),
        gateway.config.backup_kept_bytes_max,
    )
    .await?;
    let header = prepared.header().clone();
    tracing::info!(
        index = header.last_log_index,
        files = header.files,
        "writing a backup"
    );
    // The permit lives as long as the body is being sent.
    let chunks = tokio_stream::wrappers::ReceiverStream::new(prepared.spawn()).map(move |chunk| {
        let _held = &permit;
        chunk
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static("x-picloud-backup-index"),
                header.last_log_index.to_string(),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}
