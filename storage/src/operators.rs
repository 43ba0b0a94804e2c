//! Operators as stored: the people who run PiCloud, their cluster-admin
//! flag and their memberships of apps with a [`Role`]; the one log command
//! that changes them ([`OperatorsCommand`]), its results and rejections.
//!
//! An operator's account (email, password hash, sessions, setup tokens) is
//! an end user of the reserved namespace [`OPERATORS_NAMESPACE`], which can
//! never be an app name (app names start with a letter or a digit), so the
//! users rows, sessions and tokens are reused as they are. This module only
//! adds what users lack: the admin flag and the memberships.
//!
//! ```text
//!  Operators  prefix(OPERATORS_NAMESPACE) + id  → OperatorRecord
//!             prefix(app) + 'm' + id            → Role (a membership)
//!             prefix(app) + 'o'                 → u64, the app's owners
//! ```
//!
//! Memberships are keyed by app first, so deleting an app drops them with
//! its other rows; the flag rows sit under the reserved namespace's prefix,
//! which no app's prefix can match. An operator's record lists the apps it
//! is a member of, so removing the operator needs no scan (an entry for an
//! app deleted since is harmless: its membership row is already gone).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::keys::app_prefix;

/// The users namespace operator accounts live in. Not a valid app name
/// (the leading `_`), so no app, key scope or script can reach it.
pub const OPERATORS_NAMESPACE: &str = "_operators";

/// What a member may do in one app.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A developer, and may manage the app's members and delete the app.
    Owner,
    /// What a `deploy:<app>` key may do.
    Developer,
    /// What a `read:<app>` key may do.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Developer, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `owner`, `developer` or `viewer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown member role {0:?}: owner, developer or viewer")]
pub struct RoleError(pub String);

impl FromStr for Role {
    type Err = RoleError;

    fn from_str(text: &str) -> Result<Role, RoleError> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| RoleError(text.to_string()))
    }
}

/// One operator's flag and memberships, under the reserved namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct OperatorRecord {
    /// A cluster admin: may do what an `admin` key may.
    pub admin: bool,
    /// The apps the operator was made a member of (the membership rows
    /// hold the roles; see the module comment for stale entries).
    pub apps: BTreeSet<String>,
}

/// Every change to operators: the inner enum of `Command::Operators`.
/// Append new variants at the end (bincode encodes the variant by
/// position; golden bytes in `apply/operators/tests.rs`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum OperatorsCommand {
    /// Makes the user `id` of [`OPERATORS_NAMESPACE`] an operator, or sets
    /// the flag of an existing one. Rejected with `UserNotFound` when no
    /// such user exists.
    Put { id: String, admin: bool },
    /// Drops the operator's record and memberships (its account is deleted
    /// by a users command). Rejected with `LastOwner` when it is the only
    /// owner of an app; result `Removed { existed }`.
    Remove { id: String },
    /// Makes the operator a member of `app` with `role` (or changes its
    /// role). Rejected with `AppNotFound`, `UserNotFound` (not an
    /// operator) or `LastOwner` (demoting the only owner).
    MemberSet { app: String, id: String, role: Role },
    /// Rejected with `LastOwner` when the member is the app's only owner.
    MemberRemove { app: String, id: String },
}

/// What an applied [`OperatorsCommand`] did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum OperatorsResult {
    Put { created: bool },
    Removed { existed: bool },
    MemberSet,
    MemberRemoved { existed: bool },
}

/// Deterministic rejections of an [`OperatorsCommand`] (the codes are
/// mapped in `picloud_actors::error`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperatorsError {
    #[error("operator {id} not found")]
    OperatorNotFound { id: String },
    #[error("this would leave app {app} with no owner; make another member owner first")]
    LastOwner { app: String },
}

/// `Operators` key of operator `id`'s record.
pub(crate) fn operator_key(id: &str) -> Vec<u8> {
    let mut key = app_prefix(OPERATORS_NAMESPACE);
    key.extend_from_slice(id.as_bytes());
    key
}

/// `Operators` key of operator `id`'s membership of `app`.
pub(crate) fn member_key(app: &str, id: &str) -> Vec<u8> {
    let mut key = app_prefix(app);
    key.push(b'm');
    key.extend_from_slice(id.as_bytes());
    key
}

/// `Operators` key of how many owners `app` has (a `u64`).
pub(crate) fn owners_key(app: &str) -> Vec<u8> {
    let mut key = app_prefix(app);
    key.push(b'o');
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print_the_same_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("admin".parse::<Role>().is_err());
        assert!("Owner".parse::<Role>().is_err());
    }

    /// No app can be named like the namespace, so no app prefix is a prefix
    /// of a flag row.
    #[test]
    fn flag_rows_sit_outside_every_app_prefix() {
        let flag = operator_key("abc");
        for app in ["a", "_", "operators", "o"] {
            assert!(!flag.starts_with(&app_prefix(app)), "{app}");
        }
        assert!(member_key("shop", "x").starts_with(&app_prefix("shop")));
        assert!(owners_key("shop").starts_with(&app_prefix("shop")));
    }
}
