//! End users of an app as stored: the user record, sessions (kept only by
//! the SHA-256 of their token), single-use tokens (verify, reset, invite),
//! the one log command that changes them ([`UsersCommand`]), its results
//! and rejections, and the pure rules both the service and `apply` check
//! (email and role syntax).
//!
//! Everything random or slow is computed before proposing: user ids, token
//! hashes and argon2 password hashes arrive inside the command, so `apply`
//! stays deterministic. The password hash is stored here and never leaves
//! the actors' user service.
//!
//! ```text
//!  Users     app + 'u' + id     → UserRecord (with its live session hashes)
//!            app + 'e' + email  → user id (the unique email index)
//!            app + 'n'          → u64, how many users the app holds
//!            app + 't' + hash   → TokenRecord
//!  Sessions  app + hash         → SessionRecord
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The SHA-256 of a session or single-use token: all the log ever holds.
pub type TokenHash = [u8; 32];

/// The longest email address (RFC 5321's path limit), in bytes.
pub const EMAIL_BYTES_MAX: usize = 254;

/// The longest role name, in bytes.
pub const ROLE_BYTES_MAX: usize = 64;

/// The most roles one user may hold.
pub const ROLES_PER_USER_MAX: usize = 32;

/// The longest user id, in bytes (ids are minted by the service).
pub const USER_ID_BYTES_MAX: usize = 64;

/// One end user, as stored in `Keyspace::Users`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Normalised (trimmed, lower-cased) and valid ([`validate_email`]).
    pub email: String,
    /// An argon2id PHC string.
    pub password_hash: String,
    pub verified: bool,
    pub roles: BTreeSet<String>,
    /// The user's data: the text of a JSON object (bincode cannot carry a
    /// self-describing JSON value).
    pub data_json: String,
    pub created_ms: u64,
    /// 0 until the first login.
    pub last_login_ms: u64,
    /// The user's sessions, oldest first (bounded by
    /// [`UsersLimits::sessions_per_user_max`]): what a revocation removes.
    pub sessions: Vec<TokenHash>,
}

/// One session, as stored in `Keyspace::Sessions` under its token's hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub app: String,
    pub user_id: String,
    pub created_ms: u64,
    /// Sliding: a refresh moves it to `last_seen_ms + ttl`.
    pub expires_ms: u64,
    pub last_seen_ms: u64,
}

/// What a single-use token is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Verify,
    Reset,
    Invite,
}

/// A single-use token, as stored under its hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub kind: TokenKind,
    /// The user id (verify, reset) or the invited email (invite).
    pub subject: String,
    /// Roles an invitation grants (empty otherwise).
    pub roles: BTreeSet<String>,
    pub expires_ms: u64,
}

/// The bounds a command carries (from the proposer's config), so every
/// replica enforces the same ones.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsersLimits {
    pub users_per_app_max: u64,
    /// Past it, a login evicts the user's oldest session.
    pub sessions_per_user_max: u32,
    pub data_bytes_max: u32,
}

/// The fields an update changes (`None` = unchanged).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct UserPatch {
    pub email: Option<String>,
    pub verified: Option<bool>,
    pub roles: Option<BTreeSet<String>>,
    pub data_json: Option<String>,
}

/// A batched sliding-expiry refresh of one session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionRefresh {
    pub session: TokenHash,
    pub last_seen_ms: u64,
    pub expires_ms: u64,
}

/// What an applied users command revoked (see `AppliedEvent`): one session,
/// or every session of a user (logout_all, a password change, a delete,
/// and an update, whose cached view of the user is now stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionsRevoked {
    Session { app: String, session: TokenHash },
    User { app: String, id: String },
}

/// Every change to users, sessions and single-use tokens: the inner enum of
/// `Command::Users`. Append new variants at the end (bincode encodes the
/// variant by position; golden bytes in `apply/users/tests.rs`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum UsersCommand {
    /// Rejected with `AppNotFound`, `EmailInvalid`, `EmailTaken`,
    /// `InvalidRole`, `DataTooLarge`, `UsersFull` or `UserExists`.
    Create {
        app: String,
        id: String,
        email: String,
        password_hash: String,
        verified: bool,
        roles: BTreeSet<String>,
        data_json: String,
        limits: UsersLimits,
        now_ms: u64,
    },
    /// Result `Updated`; rejected like `Create`, or `UserNotFound`.
    Update {
        app: String,
        id: String,
        patch: UserPatch,
        limits: UsersLimits,
    },
    /// Removes the user, its email index row and all its sessions.
    Delete {
        app: String,
        id: String,
    },
    /// Replaces the hash and revokes every session of the user.
    SetPassword {
        app: String,
        id: String,
        password_hash: String,
    },
    /// A successful login: records `last_login_ms`, stores the session,
    /// drops the user's expired sessions and evicts the oldest past the
    /// bound.
    Login {
        app: String,
        id: String,
        session: TokenHash,
        expires_ms: u64,
        limits: UsersLimits,
        now_ms: u64,
    },
    /// Sliding-expiry refreshes, batched by a node; sessions gone or
    /// already expired at `now_ms` are skipped (expired ones removed).
    Refresh {
        app: String,
        sessions: Vec<SessionRefresh>,
        now_ms: u64,
    },
    Logout {
        app: String,
        session: TokenHash,
    },
    LogoutAll {
        app: String,
        id: String,
    },
    /// Stores a single-use token (the HTTP flows mint them).
    TokenCreate {
        app: String,
        token: TokenHash,
        record: TokenRecord,
    },
    /// Uses up a token: result `TokenConsumed` with its record, or with
    /// `None` when it is unknown, used or expired (an expired one is removed
    /// all the same, which is how expired tokens are collected: on use).
    TokenConsume {
        app: String,
        token: TokenHash,
        now_ms: u64,
    },
    /// Uses up a token of the kind `redemption` needs and does what it
    /// grants in the same entry, so a token works once even when two nodes
    /// present it at once, and a crash never leaves it used but unapplied.
    /// Result `Redeemed`; a rejection (e.g. `EmailTaken` for an invite)
    /// leaves the token unused.
    Redeem {
        app: String,
        token: TokenHash,
        redemption: Redemption,
        now_ms: u64,
    },
    /// Gives the user `role` (`held`) or takes it away, against the roles
    /// as they are when the entry applies (two concurrent changes of
    /// different roles both land). Result `RoleSet`; rejected with
    /// `UserNotFound`, `InvalidRole` or `TooManyRoles`.
    SetRole {
        app: String,
        id: String,
        role: String,
        held: bool,
    },
}

/// What redeeming a single-use token does (see [`UsersCommand::Redeem`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Redemption {
    /// A [`TokenKind::Verify`] token: marks its user verified.
    Verify,
    /// A [`TokenKind::Reset`] token: replaces the password, revokes every
    /// session and marks the user verified (the mail reached the owner).
    Reset { password_hash: String },
    /// A [`TokenKind::Invite`] token: creates the invited user, verified
    /// and with the invitation's roles, and its first session.
    Invite {
        id: String,
        password_hash: String,
        session: TokenHash,
        expires_ms: u64,
        limits: UsersLimits,
    },
}

impl Redemption {
    /// The kind of token this redemption takes.
    pub fn kind(&self) -> TokenKind {
        match self {
            Redemption::Verify => TokenKind::Verify,
            Redemption::Reset { .. } => TokenKind::Reset,
            Redemption::Invite { .. } => TokenKind::Invite,
        }
    }
}

impl UsersCommand {
    /// The app the command changes.
    pub fn app(&self) -> &str {
        match self {
            UsersCommand::Create { app, .. }
            | UsersCommand::Update { app, .. }
            | UsersCommand::Delete { app, .. }
            | UsersCommand::SetPassword { app, .. }
            | UsersCommand::Login { app, .. }
            | UsersCommand::Refresh { app, .. }
            | UsersCommand::Logout { app, .. }
            | UsersCommand::LogoutAll { app, .. }
            | UsersCommand::TokenCreate { app, .. }
            | UsersCommand::TokenConsume { app, .. }
            | UsersCommand::Redeem { app, .. }
            | UsersCommand::SetRole { app, .. } => app,
        }
    }
}

/// What an applied [`UsersCommand`] did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum UsersResult {
    Created,
    Updated,
    Deleted {
        existed: bool,
    },
    PasswordSet {
        sessions_revoked: u32,
    },
    LoggedIn {
        sessions_evicted: u32,
    },
    Refreshed {
        sessions: u32,
    },
    LoggedOut {
        existed: bool,
    },
    LoggedOutAll {
        sessions_revoked: u32,
    },
    TokenCreated,
    /// `None`: unknown, already used or expired (`auth_token_invalid`).
    TokenConsumed {
        record: Option<TokenRecord>,
    },
    /// The user the token was for (an invite: the new user), or `None`:
    /// unknown, used, expired or of another kind (`auth_token_invalid`).
    Redeemed {
        user_id: Option<String>,
    },
    /// `changed`: the role was added (not held before) or removed (held).
    RoleSet {
        changed: bool,
    },
}

/// Deterministic rejections of a [`UsersCommand`] (the codes are mapped in
/// `picloud_actors::error`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    #[error("invalid email address {email:?}: {message}")]
    EmailInvalid { email: String, message: String },
    #[error("email {email} is already taken")]
    EmailTaken { email: String },
    #[error("user {id} not found")]
    UserNotFound { id: String },
    #[error("user {id} already exists")]
    UserExists { id: String },
    #[error("invalid role {role:?}: 1 to 64 characters of a-z, 0-9, '_' and '-'")]
    InvalidRole { role: String },
    #[error("a user holds at most {max} roles")]
    TooManyRoles { max: u32 },
    #[error("user data is {bytes} bytes; at most {max} are allowed")]
    DataTooLarge { bytes: u64, max: u64 },
    #[error("app {app} already holds {max} users")]
    UsersFull { app: String, max: u64 },
}

/// Why an email address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("it is empty or longer than 254 bytes")]
    Length,
    #[error("it needs exactly one '@' with text on both sides")]
    Shape,
    #[error("it holds whitespace, a control character or a character not allowed in an address")]
    Character,
    #[error("its domain needs a dot and labels of letters, digits and '-'")]
    Domain,
}

/// `email` trimmed and lower-cased: the form stored and compared.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether a normalised address is acceptable: `local@domain`, a plain
/// ASCII local part (no quoted forms, which real sign-ups never use) and a
/// dotted domain of letter/digit/hyphen labels.
pub fn validate_email(email: &str) -> Result<(), EmailError> {
    if email.is_empty() || email.len() > EMAIL_BYTES_MAX {
        return Err(EmailError::Length);
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(EmailError::Shape);
    };
    if local.is_empty() || domain.is_empty() || local.len() > 64 {
        return Err(EmailError::Shape);
    }
    let local_ok = local
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&byte));
    if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(EmailError::Character);
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        });
    if !labels_ok {
        return Err(EmailError::Domain);
    }
    Ok(())
}

/// Whether `role` is a valid role name: 1 to [`ROLE_BYTES_MAX`] bytes of
/// `[a-z0-9_-]`.
pub fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= ROLE_BYTES_MAX
        && role.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
        })
}

/// The first problem with a role set, if any.
pub fn check_roles(roles: &BTreeSet<String>) -> Result<(), UsersError> {
    if let Some(role) = roles.iter().find(|role| !valid_role(role)) {
        return Err(UsersError::InvalidRole { role: role.clone() });
    }
    if roles.len() > ROLES_PER_USER_MAX {
        return Err(UsersError::TooManyRoles {
            max: ROLES_PER_USER_MAX as u32,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses users type, and the ones the rules must refuse.
    #[test]
    fn email_rules() {
        let table: &[(&str, Result<(), EmailError>)] = &[
            ("ann@example.org", Ok(())),
            ("a.b+tag@mail.example.co", Ok(())),
            ("", Err(EmailError::Length)),
            ("ann", Err(EmailError::Shape)),
            ("ann@", Err(EmailError::Shape)),
            ("@example.org", Err(EmailError::Shape)),
            ("a@b@example.org", Err(EmailError::Shape)),
            ("a b@example.org", Err(EmailError::Character)),
            ("a..b@example.org", Err(EmailError::Character)),
            ("ann@localhost", Err(EmailError::Domain)),
            ("ann@-x.org", Err(EmailError::Domain)),
            ("ann@exa_mple.org", Err(EmailError::Domain)),
        ];
        for (email, expected) in table {
            assert_eq!(validate_email(email), *expected, "{email:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert_eq!(validate_email(&long), Err(EmailError::Length));
        assert_eq!(normalize_email("  Ann@Example.ORG \n"), "ann@example.org");
    }

    #[test]
    fn role_rules() {
        assert!(valid_role("admin"));
        assert!(valid_role("team_lead-2"));
        assert!(!valid_role(""));
        assert!(!valid_role("Admin"));
        assert!(!valid_role("a b"));
        assert!(!valid_role(&"r".repeat(65)));
        assert!(valid_role(&"r".repeat(64)));
    }
}
