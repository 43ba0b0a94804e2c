//! The one place where errors become HTTP statuses and stable codes.
//!
//! Every error body is `{"error":{"code":"…","message":"…"}}`. The code is a
//! [`Code`] of the registry (`lua-sdk/src/codes.rs`) and the status is the
//! registry's for that code: nothing here matches on code text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use picloud_actors::AppError;
use picloud_actors::error::apply_code;
use picloud_cluster::ClusterError;
use picloud_lua_sdk::{Code, HostError, InvokeError};
use picloud_storage::ApplyError;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
}

/// The registry's status of `code` as an HTTP status.
fn status_of(code: Code) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl ApiError {
    /// An error answered with the registry's status for `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status: status_of(code),
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<super::body::BodyError> for ApiError {
    fn from(error: super::body::BodyError) -> Self {
        use super::body::BodyError;
        let code = match &error {
            BodyError::TooLarge { .. } => Code::BodyTooLarge,
            BodyError::Timeout { .. } => Code::BodyTimeout,
            BodyError::BufferFull { .. } => Code::Overloaded,
            BodyError::Read { .. } => Code::BadBody,
        };
        ApiError::new(code, error.to_string())
    }
}

impl From<super::admission::Refusal> for ApiError {
    fn from(refusal: super::admission::Refusal) -> Self {
        ApiError::new(Code::Overloaded, refusal.to_string())
    }
}

impl From<HostError> for ApiError {
    fn from(error: HostError) -> Self {
        ApiError::new(error.code, error.message)
    }
}

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> Self {
        let code = match &error {
            ClusterError::NoLeader { .. }
            | ClusterError::NoQuorum { .. }
            | ClusterError::NotLeader { .. } => Code::NoLeader,
            ClusterError::Timeout { .. } => Code::Timeout,
            ClusterError::OutcomeUnknown { .. } => Code::OutcomeUnknown,
            ClusterError::Overloaded => Code::Overloaded,
            ClusterError::BackupBusy => Code::BackupBusy,
            ClusterError::Stopped { .. } => Code::ShuttingDown,
            ClusterError::DiskFull(_) => Code::DiskFull,
            ClusterError::ClusterSecret(sealed) => picloud_actors::error::seal_code(sealed),
            _ => Code::Internal,
        };
        ApiError::new(code, error.to_string())
    }
}

impl From<picloud_cluster::FilesError> for ApiError {
    fn from(error: picloud_cluster::FilesError) -> Self {
        use picloud_cluster::FilesError;
        let code = match &error {
            FilesError::DiskFull { .. } => Code::DiskFull,
            FilesError::ReplicasUnavailable { .. } => Code::ReplicasUnavailable,
            FilesError::BlockUnavailable { .. } => Code::FileUnavailable,
            FilesError::TooLarge { .. } => Code::FileTooLarge,
            FilesError::Body(_) => Code::UploadIncomplete,
            FilesError::Timeout => Code::Timeout,
            FilesError::Io(_) => Code::Internal,
        };
        ApiError::new(code, error.to_string())
    }
}

impl From<ApplyError> for ApiError {
    fn from(error: ApplyError) -> Self {
        ApiError::new(apply_code(&error), error.to_string())
    }
}

impl From<picloud_storage::StorageError> for ApiError {
    fn from(error: picloud_storage::StorageError) -> Self {
        ApiError::internal(format!("storage: {error}"))
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        let message = error.to_string();
        match error {
            AppError::Invoke(invoke) => invoke_error(invoke),
            other => ApiError::new(other.code(), message),
        }
    }
}

/// A script's failure. A service error the script did not catch keeps its
/// status when that is a 5xx (back-pressure such as `no_leader` or
/// `disk_full`: the client may retry); any other is the script's failure,
/// not the client's, and is answered 500 with the service's code.
fn invoke_error(error: InvokeError) -> ApiError {
    let code = error.code();
    let message = error.to_string();
    match &error {
        InvokeError::Host(_) if !code.is_server_error() => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code,
            message,
        },
        _ => ApiError::new(code, message),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn every_code_has_a_valid_http_status() {
        for &code in Code::ALL {
            assert_eq!(status_of(code).as_u16(), code.status(), "{code}");
        }
    }

    /// The statuses clients relied on before the registry existed.
    #[test]
    fn script_failures_keep_their_statuses() {
        let host = |code| AppError::Invoke(InvokeError::Host(HostError::new(code, "x")));
        for (error, status, code) in [
            (host(Code::NoLeader), 503, "no_leader"),
            (host(Code::OutboxFull), 503, "outbox_full"),
            (host(Code::DiskFull), 507, "disk_full"),
            (host(Code::OutcomeUnknown), 503, "outcome_unknown"),
            (host(Code::NotANumber), 500, "not_a_number"),
            (host(Code::ValueTooLarge), 500, "value_too_large"),
            (
                AppError::Invoke(InvokeError::Timeout {
                    message: "x".into(),
                }),
                504,
                "script_timeout",
            ),
            (
                AppError::Busy {
                    app: "a".into(),
                    pool_size: 1,
                    waited_ms: 1,
                },
                503,
                "app_busy",
            ),
        ] {
            let api = ApiError::from(error);
            assert_eq!((api.status.as_u16(), api.code.as_str()), (status, code));
        }
    }
}
