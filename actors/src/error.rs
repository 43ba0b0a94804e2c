//! Errors of serving a request through an app, and the stable [`Code`] of
//! each error this layer and the ones below it produce. Storage's errors are
//! typed (storage sees no registry); their codes are assigned here, once, for
//! scripts and the gateway alike. The gateway turns a code into a status.

use picloud_cluster::ClusterError;
use picloud_lua_sdk::{Code, HostError, InvokeError};
use picloud_storage::ApplyError;
use picloud_storage::operators::OperatorsError;
use picloud_storage::secret_box::SecretBoxError;
use picloud_storage::users::UsersError;

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

impl AppError {
    /// The stable code clients see.
    pub fn code(&self) -> Code {
        match self {
            AppError::AppNotFound { .. } => Code::AppNotFound,
            AppError::NotDeployed { .. } => Code::AppNotDeployed,
            AppError::RouteNotFound { .. } => Code::RouteNotFound,
            AppError::MethodNotAllowed { .. } => Code::MethodNotAllowed,
            AppError::Busy { .. } => Code::AppBusy,
            AppError::Unavailable { .. } => Code::AppUnavailable,
            AppError::LoadFailed { .. } => Code::AppLoadFailed,
            AppError::Storage { .. } => Code::Internal,
            AppError::Invoke(invoke) => invoke.code(),
        }
    }
}

/// The stable code of a deterministic rejection, as clients and scripts see it.
pub fn apply_code(error: &ApplyError) -> Code {
    match error {
        ApplyError::AppNotFound { .. } => Code::AppNotFound,
        ApplyError::AppExists { .. } => Code::AppExists,
        ApplyError::VersionNotFound { .. } => Code::VersionNotFound,
        ApplyError::NoEarlierVersion { .. } => Code::NoEarlierVersion,
        ApplyError::NotANumber { .. } => Code::NotANumber,
        ApplyError::IncrOverflow { .. } => Code::IncrOverflow,
        ApplyError::KeyNotFound { .. } => Code::KeyNotFound,
        ApplyError::KeyExists { .. } => Code::KeyExists,
        ApplyError::AtomicCasFailed { .. } => Code::AtomicCasFailed,
        ApplyError::NestedBatch => Code::Internal,
        ApplyError::OutboxFull { .. } => Code::OutboxFull,
        ApplyError::TriggerNotFound { .. } => Code::TriggerNotFound,
        ApplyError::StaleClaim { .. } => Code::StaleClaim,
        ApplyError::DeadLetterNotFound { .. } => Code::DeadLetterNotFound,
        ApplyError::DocExists { .. } => Code::DocExists,
        ApplyError::UniqueViolation { .. } => Code::UniqueViolation,
        ApplyError::DocTooLarge { .. } => Code::ValueTooLarge,
        ApplyError::InvalidDocument { .. } => Code::InvalidDocument,
        ApplyError::IndexValueTooLarge { .. } => Code::IndexValueTooLarge,
        ApplyError::SecretNotFound { .. } => Code::SecretNotFound,
        ApplyError::SecretsFull { .. } => Code::SecretsFull,
        ApplyError::InvalidPath { .. } => Code::InvalidPath,
        ApplyError::FileTooLarge { .. } => Code::FileTooLarge,
        ApplyError::QuotaExceeded { .. } => Code::QuotaExceeded,
        // The proposer built the command from the bytes it stored: a
        // mismatch is a bug, not the caller's input.
        ApplyError::InvalidFile { .. } => Code::Internal,
        ApplyError::Users(error) => users_code(error),
        ApplyError::Operators(OperatorsError::OperatorNotFound { .. }) => Code::UserNotFound,
        ApplyError::Operators(OperatorsError::LastOwner { .. }) => Code::LastOwner,
    }
}

/// The stable code of a rejected users command.
fn users_code(error: &UsersError) -> Code {
    match error {
        UsersError::EmailInvalid { .. } => Code::EmailInvalid,
        UsersError::EmailTaken { .. } => Code::EmailTaken,
        UsersError::UserNotFound { .. } => Code::UserNotFound,
        UsersError::InvalidRole { .. } | UsersError::TooManyRoles { .. } => Code::InvalidRole,
        UsersError::DataTooLarge { .. } => Code::ValueTooLarge,
        UsersError::UsersFull { .. } => Code::QuotaExceeded,
        // Ids are minted by the service from 128 random bits: a clash is a bug.
        UsersError::UserExists { .. } => Code::Internal,
    }
}

/// The stable code of a sealed secret that did not open.
pub fn secret_code(error: &SecretBoxError) -> Code {
    match error {
        SecretBoxError::WrongKey { .. } => Code::SecretKeyMismatch,
        SecretBoxError::Corrupt | SecretBoxError::Version(_) => Code::SecretCorrupt,
    }
}

/// The code of a cluster secret (CA key, join secret) that does not open:
/// a wrong master key as for app secrets, anything else `secret_corrupt`.
pub fn seal_code(error: &picloud_cluster::sealed::SealError) -> Code {
    if error.is_wrong_key() {
        Code::SecretKeyMismatch
    } else {
        Code::SecretCorrupt
    }
}

/// Maps a cluster error to the code a script (and the HTTP client) sees.
pub fn cluster_host_error(error: ClusterError) -> HostError {
    let code = match &error {
        ClusterError::NoLeader { .. }
        | ClusterError::NoQuorum { .. }
        | ClusterError::NotLeader { .. } => Code::NoLeader,
        ClusterError::Timeout { .. } => Code::Timeout,
        ClusterError::OutcomeUnknown { .. } => Code::OutcomeUnknown,
        ClusterError::Overloaded => Code::Overloaded,
        ClusterError::DiskFull(_) => Code::DiskFull,
        _ => Code::Unavailable,
    };
    HostError::new(code, error.to_string())
}

/// Maps a deterministic apply rejection to a script-visible error.
pub fn apply_host_error(error: ApplyError) -> HostError {
    HostError::new(apply_code(&error), error.to_string())
}

/// An apply result of another kind than the command's: a bug.
pub(crate) fn unexpected(result: &picloud_storage::CommandResult) -> HostError {
    HostError::new(
        Code::Internal,
        format!("unexpected apply result {result:?}"),
    )
}

/// A storage failure as a script-visible `internal` error.
pub(crate) fn storage_error(error: picloud_storage::StorageError) -> HostError {
    HostError::new(Code::Storage, error.to_string())
}

#[cfg(test)]
mod tests {
    use picloud_storage::triggers::dead_code;

    use super::*;

    /// Dead letters store their code as text (storage sees no registry): the
    /// texts storage writes must be the registry's.
    #[test]
    fn dead_letter_codes_are_registered() {
        for (text, code) in [
            (dead_code::FAILED, Code::Failed),
            (dead_code::TRIGGER_LOOP, Code::TriggerLoop),
            (dead_code::TRIGGER_REMOVED, Code::TriggerRemoved),
        ] {
            assert_eq!(text.parse::<Code>(), Ok(code));
        }
    }

    #[test]
    fn apply_codes_keep_their_text() {
        let cases = [
            (ApplyError::AppNotFound { app: "a".into() }, "app_not_found"),
            (ApplyError::NestedBatch, "internal"),
            (
                ApplyError::DocTooLarge {
                    collection: "c".into(),
                    id: "1".into(),
                    bytes: 1,
                    max: 0,
                },
                "value_too_large",
            ),
            (
                ApplyError::SecretsFull {
                    app: "a".into(),
                    max: 1,
                },
                "secrets_full",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(apply_code(&error).as_str(), text);
        }
        assert_eq!(
            secret_code(&SecretBoxError::Corrupt).as_str(),
            "secret_corrupt"
        );
    }

    /// A script sees a forwarded write whose answer never came as a
    /// catchable `outcome_unknown`, apart from `timeout`.
    #[test]
    fn scripts_tell_an_unknown_outcome_from_a_timeout() {
        use picloud_cluster::ClusterError;

        use super::cluster_host_error;
        let unknown = cluster_host_error(ClusterError::OutcomeUnknown {
            leader: 2,
            reason: "the leader changed before it answered".into(),
        });
        assert_eq!(unknown.code, Code::OutcomeUnknown);
        assert!(unknown.to_string().starts_with("outcome_unknown: "));
        let slow = cluster_host_error(ClusterError::Timeout {
            operation: "write",
            waited_ms: 5,
        });
        assert_eq!(slow.code, Code::Timeout);
    }
}
