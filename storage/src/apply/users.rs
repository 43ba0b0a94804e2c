//! End users, sessions and single-use tokens: `Command::Users`. Every read
//! goes through the [`Txn`] (a user's sessions are listed in its record, so
//! revoking them needs no scan), so these commands batch with the others of
//! an entry. Rows and their keys: `crate::users`.
//!
//! Expired sessions are collected on access: a login drops the user's
//! expired sessions, a refresh of an expired one removes it, and readers
//! treat an expired row as absent. Expired tokens go when presented.

use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace};
use crate::command::Command;
use crate::command::{ApplyError, CommandResult};
use crate::error::StorageError;
use crate::keys;
use crate::operators::OPERATORS_NAMESPACE;
use crate::users::{
    Redemption, SessionRecord, SessionRefresh, SessionsRevoked, TokenHash, TokenRecord,
    USER_ID_BYTES_MAX, UserPatch, UserRecord, UsersCommand, UsersError, UsersLimits, UsersResult,
    check_roles, validate_email,
};

/// The sessions an applied command revoked (inner commands of a batch
/// included; rejected ones revoke nothing), for every node's live sessions.
pub fn revoked_sessions(command: &Command, result: &CommandResult) -> Vec<SessionsRevoked> {
    match (command, result) {
        (Command::Batch(commands), CommandResult::Batch(results)) => commands
            .iter()
            .zip(results)
            .flat_map(|(command, result)| revoked_sessions(command, result))
            .collect(),
        (_, CommandResult::Rejected(_)) => Vec::new(),
        // A redeemed reset replaced the password (and revoked every
        // session); a verify changed the user's view. The user is known
        // from the token only, so from the result.
        (
            Command::Users(UsersCommand::Redeem {
                app,
                redemption: Redemption::Reset { .. } | Redemption::Verify,
                ..
            }),
            CommandResult::Users(UsersResult::Redeemed { user_id: Some(id) }),
        ) => vec![SessionsRevoked::User {
            app: app.clone(),
            id: id.clone(),
        }],
        (Command::Users(command), _) => revoked_by(command).into_iter().collect(),
        _ => Vec::new(),
    }
}

fn revoked_by(command: &UsersCommand) -> Option<SessionsRevoked> {
    let user = |app: &String, id: &String| SessionsRevoked::User {
        app: app.clone(),
        id: id.clone(),
    };
    match command {
        UsersCommand::Logout { app, session } => Some(SessionsRevoked::Session {
            app: app.clone(),
            session: *session,
        }),
        UsersCommand::LogoutAll { app, id }
        | UsersCommand::SetPassword { app, id, .. }
        | UsersCommand::Delete { app, id }
        | UsersCommand::Update { app, id, .. }
        | UsersCommand::SetRole { app, id, .. } => Some(user(app, id)),
        _ => None,
    }
}

/// Applies one users command.
pub(super) fn users<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    command: &UsersCommand,
) -> Result<Outcome, StorageError> {
    let app = command.app();
    // Operator accounts are users of a namespace that is never an app.
    if app != OPERATORS_NAMESPACE && txn.app(app)?.is_none() {
        return Ok(Err(ApplyError::AppNotFound { app: app.into() }));
    }
    let result = match command {
        UsersCommand::Create {
            app,
            id,
            email,
            password_hash,
            verified,
            roles,
            data_json,
            limits,
            now_ms,
        } => {
            let record = UserRecord {
                email: email.clone(),
                password_hash: password_hash.clone(),
                verified: *verified,
                roles: roles.clone(),
                data_json: data_json.clone(),
                created_ms: *now_ms,
                last_login_ms: 0,
                sessions: Vec::new(),
            };
            create(txn, app, id, record, limits)?
        }
        UsersCommand::Update {
            app,
            id,
            patch,
            limits,
        } => update(txn, app, id, patch, limits)?,
        UsersCommand::Delete { app, id } => delete(txn, app, id)?,
        UsersCommand::SetPassword {
            app,
            id,
            password_hash,
        } => set_password(txn, app, id, password_hash)?,
        UsersCommand::Login {
            app,
            id,
            session,
            expires_ms,
            limits,
            now_ms,
        } => login(txn, app, id, session, *expires_ms, limits, *now_ms)?,
        UsersCommand::Refresh {
            app,
            sessions,
            now_ms,
        } => refresh(txn, app, sessions, *now_ms)?,
        UsersCommand::SetRole {
            app,
            id,
            role,
            held,
        } => set_role(txn, app, id, role, *held)?,
        UsersCommand::Logout { app, session } => logout(txn, app, session)?,
        UsersCommand::LogoutAll { app, id } => logout_all(txn, app, id)?,
        UsersCommand::TokenCreate { app, token, record } => {
            txn.put_encoded(
                Keyspace::Users,
                keys::user_token_key(app, token),
                record,
                "user token",
            )?;
            Ok(crate::users::UsersResult::TokenCreated)
        }
        UsersCommand::TokenConsume { app, token, now_ms } => {
            let key = keys::user_token_key(app, token);
            let record: Option<TokenRecord> =
                txn.get_decoded(Keyspace::Users, &key, "user token")?;
            txn.delete(Keyspace::Users, key);
            let record = record.filter(|record| record.expires_ms > *now_ms);
            Ok(crate::users::UsersResult::TokenConsumed { record })
        }
        UsersCommand::Redeem {
            app,
            token,
            redemption,
            now_ms,
        } => redeem(txn, app, token, redemption, *now_ms)?,
    };
    Ok(result.map(CommandResult::Users).map_err(ApplyError::Users))
}

type UsersOutcome = Result<crate::users::UsersResult, UsersError>;

fn user<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    app: &str,
    id: &str,
) -> Result<Option<UserRecord>, StorageError> {
    txn.get_decoded(Keyspace::Users, &keys::user_key(app, id), "user record")
}

fn put_user<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
    record: &UserRecord,
) -> Result<(), StorageError> {
    txn.put_encoded(
        Keyspace::Users,
        keys::user_key(app, id),
        record,
        "user record",
    )
}

/// The checks a stored user must pass, shared by create and update.
fn check_record(record: &UserRecord, limits: &UsersLimits) -> Result<(), UsersError> {
    validate_email(&record.email).map_err(|error| UsersError::EmailInvalid {
        email: record.email.clone(),
        message: error.to_string(),
    })?;
    check_roles(&record.roles)?;
    let bytes = record.data_json.len() as u64;
    if bytes > u64::from(limits.data_bytes_max) {
        return Err(UsersError::DataTooLarge {
            bytes,
            max: u64::from(limits.data_bytes_max),
        });
    }
    Ok(())
}

/// Whether `email` belongs to a user other than `id`.
fn email_taken<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    app: &str,
    email: &str,
    id: &str,
) -> Result<bool, StorageError> {
    Ok(txn
        .get(Keyspace::Users, &keys::user_email_key(app, email))?
        .is_some_and(|owner| owner != id.as_bytes()))
}

fn create<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
    record: UserRecord,
    limits: &UsersLimits,
) -> Result<UsersOutcome, StorageError> {
    if let Err(rejection) = check_record(&record, limits) {
        return Ok(Err(rejection));
    }
    if id.is_empty() || id.len() > USER_ID_BYTES_MAX || user(txn, app, id)?.is_some() {
        return Ok(Err(UsersError::UserExists { id: id.into() }));
    }
    if email_taken(txn, app, &record.email, id)? {
        return Ok(Err(UsersError::EmailTaken {
            email: record.email,
        }));
    }
    let count_key = keys::users_count_key(app);
    let count = txn.u64_at(Keyspace::Users, &count_key, "users count")?;
    if count >= limits.users_per_app_max {
        return Ok(Err(UsersError::UsersFull {
            app: app.into(),
            max: limits.users_per_app_max,
        }));
    }
    txn.put_encoded(Keyspace::Users, count_key, &(count + 1), "users count")?;
    txn.put(
        Keyspace::Users,
        keys::user_email_key(app, &record.email),
        id.as_bytes().to_vec(),
    );
    put_user(txn, app, id, &record)?;
    Ok(Ok(crate::users::UsersResult::Created))
}

fn update<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
    patch: &UserPatch,
    limits: &UsersLimits,
) -> Result<UsersOutcome, StorageError> {
    let Some(mut record) = user(txn, app, id)? else {
        return Ok(Err(UsersError::UserNotFound { id: id.into() }));
    };
    let old_email = record.email.clone();
    if let Some(email) = &patch.email {
        record.email = email.clone();
    }
    if let Some(verified) = patch.verified {
        record.verified = verified;
    }
    if let Some(roles) = &patch.roles {
        record.roles = roles.clone();
    }
    if let Some(data_json) = &patch.data_json {
        record.data_json = data_json.clone();
    }
    if let Err(rejection) = check_record(&record, limits) {
        return Ok(Err(rejection));
    }
    if record.email != old_email {
        if email_taken(txn, app, &record.email, id)? {
            return Ok(Err(UsersError::EmailTaken {
                email: record.email,
            }));
        }
        txn.delete(Keyspace::Users, keys::user_email_key(app, &old_email));
        txn.put(
            Keyspace::Users,
            keys::user_email_key(app, &record.email),
            id.as_bytes().to_vec(),
        );
    }
    put_user(txn, app, id, &record)?;
    Ok(Ok(crate::users::UsersResult::Updated))
}

fn set_role<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
    role: &str,
    held: bool,
) -> Result<UsersOutcome, StorageError> {
    let Some(mut record) = user(txn, app, id)? else {
        return Ok(Err(UsersError::UserNotFound { id: id.into() }));
    };
    let changed = if held {
        record.roles.insert(role.to_string())
    } else {
        record.roles.remove(role)
    };
    if !changed {
        return Ok(Ok(crate::users::UsersResult::RoleSet { changed }));
    }
    if let Err(rejection) = check_roles(&record.roles) {
        return Ok(Err(rejection));
    }
    put_user(txn, app, id, &record)?;
    Ok(Ok(crate::users::UsersResult::RoleSet { changed }))
}

fn delete<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
) -> Result<UsersOutcome, StorageError> {
    let Some(record) = user(txn, app, id)? else {
        return Ok(Ok(crate::users::UsersResult::Deleted { existed: false }));
    };
    revoke(txn, app, &record.sessions);
    txn.delete(Keyspace::Users, keys::user_email_key(app, &record.email));
    txn.delete(Keyspace::Users, keys::user_key(app, id));
    let count_key = keys::users_count_key(app);
    let count = txn.u64_at(Keyspace::Users, &count_key, "users count")?;
    txn.put_encoded(
        Keyspace::Users,
        count_key,
        &count.saturating_sub(1),
        "users count",
    )?;
    Ok(Ok(crate::users::UsersResult::Deleted { existed: true }))
}

/// Deletes the session rows of `sessions`.
fn revoke<B: Backend + ?Sized>(txn: &mut Txn<'_, B>, app: &str, sessions: &[TokenHash]) {
    for session in sessions {
        txn.delete(Keyspace::Sessions, keys::session_key(app, session));
    }
}

/// How many sessions a revocation of `sessions` removed, as reported.
fn count(sessions: &[TokenHash]) -> u32 {
    u32::try_from(sessions.len()).unwrap_or(u32::MAX)
}

fn set_password<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
    password_hash: &str,
) -> Result<UsersOutcome, StorageError> {
    let Some(mut record) = user(txn, app, id)? else {
        return Ok(Err(UsersError::UserNotFound { id: id.into() }));
    };
    let sessions = std::mem::take(&mut record.sessions);
    revoke(txn, app, &sessions);
    record.password_hash = password_hash.into();
    put_user(txn, app, id, &record)?;
    Ok(Ok(crate::users::UsersResult::PasswordSet {
        sessions_revoked: count(&sessions),
    }))
}

fn logout_all<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
) -> Result<UsersOutcome, StorageError> {
    let Some(mut record) = user(txn, app, id)? else {
        return Ok(Err(UsersError::UserNotFound { id: id.into() }));
    };
    let sessions = std::mem::take(&mut record.sessions);
    revoke(txn, app, &sessions);
    put_user(txn, app, id, &record)?;
    Ok(Ok(crate::users::UsersResult::LoggedOutAll {
        sessions_revoked: count(&sessions),
    }))
}

fn session<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    app: &str,
    hash: &TokenHash,
) -> Result<Option<SessionRecord>, StorageError> {
    txn.get_decoded(Keyspace::Sessions, &keys::session_key(app, hash), "session")
}

#[allow(clippy::too_many_arguments)]
fn login<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
    hash: &TokenHash,
    expires_ms: u64,
    limits: &UsersLimits,
    now_ms: u64,
) -> Result<UsersOutcome, StorageError> {
    let Some(mut record) = user(txn, app, id)? else {
        return Ok(Err(UsersError::UserNotFound { id: id.into() }));
    };
    // Drop the sessions that expired (or whose rows are gone), then make
    // room for the new one by evicting the oldest.
    let mut kept = Vec::with_capacity(record.sessions.len() + 1);
    let mut evicted = 0u32;
    for old in std::mem::take(&mut record.sessions) {
        match session(txn, app, &old)? {
            Some(row) if row.expires_ms > now_ms => kept.push(old),
            _ => txn.delete(Keyspace::Sessions, keys::session_key(app, &old)),
        }
    }
    let keep_max = usize::try_from(limits.sessions_per_user_max.max(1)).unwrap_or(usize::MAX);
    while kept.len() >= keep_max {
        let oldest = kept.remove(0);
        txn.delete(Keyspace::Sessions, keys::session_key(app, &oldest));
        evicted += 1;
    }
    kept.push(*hash);
    record.sessions = kept;
    record.last_login_ms = now_ms;
    put_user(txn, app, id, &record)?;
    let row = SessionRecord {
        app: app.into(),
        user_id: id.into(),
        created_ms: now_ms,
        expires_ms,
        last_seen_ms: now_ms,
    };
    txn.put_encoded(
        Keyspace::Sessions,
        keys::session_key(app, hash),
        &row,
        "session",
    )?;
    Ok(Ok(crate::users::UsersResult::LoggedIn {
        sessions_evicted: evicted,
    }))
}

fn refresh<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    refreshes: &[SessionRefresh],
    now_ms: u64,
) -> Result<UsersOutcome, StorageError> {
    let mut refreshed = 0u32;
    for refresh in refreshes {
        let key = keys::session_key(app, &refresh.session);
        let Some(mut row) = session(txn, app, &refresh.session)? else {
            continue;
        };
        if row.expires_ms <= now_ms {
            // Removed from the user's list at its next login.
            txn.delete(Keyspace::Sessions, key);
            continue;
        }
        // A refresh only ever extends: batches may arrive out of order.
        row.last_seen_ms = row.last_seen_ms.max(refresh.last_seen_ms);
        row.expires_ms = row.expires_ms.max(refresh.expires_ms);
        txn.put_encoded(Keyspace::Sessions, key, &row, "session")?;
        refreshed += 1;
    }
    Ok(Ok(crate::users::UsersResult::Refreshed {
        sessions: refreshed,
    }))
}

fn logout<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    hash: &TokenHash,
) -> Result<UsersOutcome, StorageError> {
    let Some(row) = session(txn, app, hash)? else {
        return Ok(Ok(crate::users::UsersResult::LoggedOut { existed: false }));
    };
    txn.delete(Keyspace::Sessions, keys::session_key(app, hash));
    if let Some(mut record) = user(txn, app, &row.user_id)? {
        record.sessions.retain(|session| session != hash);
        put_user(txn, app, &row.user_id, &record)?;
    }
    Ok(Ok(crate::users::UsersResult::LoggedOut { existed: true }))
}

/// Consumes `token` when it is live and of the kind `redemption` takes,
/// then applies what it grants. A token of another kind is left alone, so
/// presenting a reset token to `verify` does not burn it.
fn redeem<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    token: &TokenHash,
    redemption: &Redemption,
    now_ms: u64,
) -> Result<UsersOutcome, StorageError> {
    let invalid = Ok(Ok(UsersResult::Redeemed { user_id: None }));
    let key = keys::user_token_key(app, token);
    let record: Option<TokenRecord> = txn.get_decoded(Keyspace::Users, &key, "user token")?;
    let Some(record) = record else {
        return invalid;
    };
    if record.expires_ms <= now_ms {
        txn.delete(Keyspace::Users, key);
        return invalid;
    }
    if record.kind != redemption.kind() {
        return invalid;
    }
    txn.delete(Keyspace::Users, key);
    let user_id = match redemption {
        Redemption::Verify | Redemption::Reset { .. } => {
            let Some(mut user) = user(txn, app, &record.subject)? else {
                // The user was deleted after the mail went out.
                return invalid;
            };
            user.verified = true;
            if let Redemption::Reset { password_hash } = redemption {
                user.password_hash = password_hash.clone();
                let sessions = std::mem::take(&mut user.sessions);
                revoke(txn, app, &sessions);
            }
            put_user(txn, app, &record.subject, &user)?;
            record.subject
        }
        Redemption::Invite {
            id,
            password_hash,
            session,
            expires_ms,
            limits,
        } => {
            let user = UserRecord {
                email: record.subject.clone(),
                password_hash: password_hash.clone(),
                verified: true,
                roles: record.roles.clone(),
                data_json: "{}".into(),
                created_ms: now_ms,
                last_login_ms: 0,
                sessions: Vec::new(),
            };
            if let Err(rejection) = create(txn, app, id, user, limits)? {
                return Ok(Err(rejection));
            }
            if let Err(rejection) = login(txn, app, id, session, *expires_ms, limits, now_ms)? {
                return Ok(Err(rejection));
            }
            id.clone()
        }
    };
    Ok(Ok(UsersResult::Redeemed {
        user_id: Some(user_id),
    }))
}

#[cfg(test)]
mod tests;
