//! The one place where errors become HTTP statuses and stable codes.
//!
//! Every error body is `{"error":{"code":"…","message":"…"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use picloud_actors::AppError;
use picloud_cluster::ClusterError;
use picloud_lua_sdk::InvokeError;
use picloud_storage::ApplyError;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<super::body::BodyError> for ApiError {
    fn from(error: super::body::BodyError) -> Self {
        use super::body::BodyError;
        let (status, code) = match &error {
            BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BodyError::Timeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            BodyError::BufferFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            BodyError::Read { .. } => (StatusCode::BAD_REQUEST, "bad_body"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<super::admission::Refusal> for ApiError {
    fn from(refusal: super::admission::Refusal) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            refusal.to_string(),
        )
    }
}

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> Self {
        let (status, code) = match &error {
            ClusterError::NoLeader { .. } | ClusterError::NotLeader { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_leader")
            }
            ClusterError::Timeout { .. } => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ClusterError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ClusterError::Stopped { .. } => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ClusterError::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<ApplyError> for ApiError {
    fn from(error: ApplyError) -> Self {
        let status = match &error {
            ApplyError::AppNotFound { .. }
            | ApplyError::VersionNotFound { .. }
            | ApplyError::KeyNotFound { .. }
            | ApplyError::TriggerNotFound { .. }
            | ApplyError::DeadLetterNotFound { .. } => StatusCode::NOT_FOUND,
            ApplyError::AppExists { .. }
            | ApplyError::NoEarlierVersion { .. }
            | ApplyError::NotANumber { .. }
            | ApplyError::IncrOverflow { .. }
            | ApplyError::KeyExists { .. }
            | ApplyError::AtomicCasFailed { .. }
            | ApplyError::StaleClaim { .. }
            | ApplyError::DocExists { .. }
            | ApplyError::UniqueViolation { .. } => StatusCode::CONFLICT,
            ApplyError::DocTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApplyError::InvalidDocument { .. } | ApplyError::IndexValueTooLarge { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApplyError::SecretNotFound { .. } => StatusCode::NOT_FOUND,
            ApplyError::SecretsFull { .. } => StatusCode::CONFLICT,
            ApplyError::NestedBatch => StatusCode::INTERNAL_SERVER_ERROR,
            ApplyError::OutboxFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = error.code();
        ApiError::new(status, code, error.to_string())
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
            AppError::AppNotFound { .. } => ApiError::not_found("app_not_found", message),
            AppError::NotDeployed { .. } => ApiError::not_found("app_not_deployed", message),
            AppError::RouteNotFound { .. } => ApiError::not_found("route_not_found", message),
            AppError::MethodNotAllowed { .. } => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                message,
            ),
            AppError::Busy { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "app_busy", message)
            }
            AppError::Unavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "app_unavailable", message)
            }
            AppError::LoadFailed { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "app_load_failed",
                message,
            ),
            AppError::Storage { .. } => ApiError::internal(message),
            AppError::Invoke(invoke) => invoke_error(invoke),
        }
    }
}

fn invoke_error(error: InvokeError) -> ApiError {
    let code = error.code().to_string();
    let message = error.to_string();
    let status = match &error {
        InvokeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        InvokeError::Host(host) => match host.code.as_str() {
            // Back-pressure: the app's trigger outbox is full; retry later.
            "no_leader" | "timeout" | "unavailable" | "overloaded" | "outbox_full" => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The data disk is below its reserve: writes wait for free space.
            "disk_full" => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, code, message)
}
