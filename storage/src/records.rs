//! What readers get back from the state: plain records, no sled types.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub name: String,
    pub created_ms: u64,
    /// The version requests are served from; `None` until the first deploy.
    pub active_version: Option<u64>,
    /// The highest version ever deployed (versions are never reused).
    pub latest_version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub version: u64,
    pub created_ms: u64,
    pub bundle_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub secret_hash: Vec<u8>,
    pub created_ms: u64,
}

/// The app an API key's scope names: `deploy:<app>` and `read:<app>` name
/// one, `admin` none. The scope format belongs to the runtime (`keys::Scope`);
/// storage reads this much of it because `apply` revokes an app's keys with
/// the app and refuses scoped keys for missing apps.
pub fn scoped_app(scope: &str) -> Option<&str> {
    scope
        .strip_prefix("deploy:")
        .or_else(|| scope.strip_prefix("read:"))
}

/// A shared library: its versions still kept, ascending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LibRecord {
    pub name: String,
    /// The highest version ever published (versions are never reused).
    pub latest_version: u64,
    pub versions: Vec<LibVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LibVersion {
    pub version: u64,
    pub created_ms: u64,
    pub files_bytes: u64,
}

/// One page of `kv_list`. `cursor` is the last key returned when more may follow.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KvPage {
    pub items: Vec<(String, Vec<u8>)>,
    pub cursor: Option<String>,
}

/// Emitted after a command that changes what an app serves has been applied,
/// so each node's actors can reload. Sent on a bounded broadcast channel; a
/// receiver that lags must reload every app.
#[derive(Debug, Clone, PartialEq)]
pub enum AppliedEvent {
    /// Deploy, rollback, create or delete of `app`.
    AppChanged { app: String },
    /// An end user's sessions ended or their cached answer changed: each
    /// node stops the affected live sessions at once.
    SessionsRevoked(crate::users::SessionsRevoked),
}
