//! Operators' flags and app memberships: `Command::Operators`. Every read
//! goes through the [`Txn`] (an operator's record lists its apps, an app
//! keeps its owner count), so these commands batch with the others of an
//! entry and need no scan. Rows and their keys: `crate::operators`.
//!
//! The owner count is what keeps an app from losing its last owner: a
//! change that would take it from one to zero is rejected here, in the
//! log's order, so two concurrent removals cannot both pass.

use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace};
use crate::command::{ApplyError, CommandResult};
use crate::error::StorageError;
use crate::keys;
use crate::operators::{
    OPERATORS_NAMESPACE, OperatorRecord, OperatorsCommand, OperatorsError, OperatorsResult, Role,
    member_key, operator_key, owners_key,
};

type OperatorsOutcome = Result<OperatorsResult, OperatorsError>;

/// Applies one operators command.
pub(super) fn operators<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    command: &OperatorsCommand,
) -> Result<Outcome, StorageError> {
    let result = match command {
        OperatorsCommand::Put { id, admin } => put(txn, id, *admin)?,
        OperatorsCommand::Remove { id } => remove(txn, id)?,
        OperatorsCommand::MemberSet { app, id, role } => {
            if txn.app(app)?.is_none() {
                return Ok(Err(ApplyError::AppNotFound { app: app.clone() }));
            }
            member_set(txn, app, id, *role)?
        }
        OperatorsCommand::MemberRemove { app, id } => member_remove(txn, app, id)?,
    };
    Ok(result
        .map(CommandResult::Operators)
        .map_err(ApplyError::Operators))
}

fn record<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    id: &str,
) -> Result<Option<OperatorRecord>, StorageError> {
    txn.get_decoded(Keyspace::Operators, &operator_key(id), "operator record")
}

fn put_record<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: &str,
    record: &OperatorRecord,
) -> Result<(), StorageError> {
    txn.put_encoded(
        Keyspace::Operators,
        operator_key(id),
        record,
        "operator record",
    )
}

fn role<B: Backend + ?Sized>(
    txn: &Txn<'_, B>,
    app: &str,
    id: &str,
) -> Result<Option<Role>, StorageError> {
    txn.get_decoded(Keyspace::Operators, &member_key(app, id), "membership")
}

/// Adds `delta` (±1) to `app`'s owner count.
fn count_owner<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    delta: i64,
) -> Result<(), StorageError> {
    let key = owners_key(app);
    let owners = txn.u64_at(Keyspace::Operators, &key, "owners count")?;
    let owners = owners.saturating_add_signed(delta);
    txn.put_encoded(Keyspace::Operators, key, &owners, "owners count")
}

/// Whether taking the owner role from one member of `app` leaves none.
fn last_owner<B: Backend + ?Sized>(txn: &Txn<'_, B>, app: &str) -> Result<bool, StorageError> {
    Ok(txn.u64_at(Keyspace::Operators, &owners_key(app), "owners count")? <= 1)
}

fn put<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: &str,
    admin: bool,
) -> Result<OperatorsOutcome, StorageError> {
    let account = keys::user_key(OPERATORS_NAMESPACE, id);
    if txn.get(Keyspace::Users, &account)?.is_none() {
        return Ok(Err(OperatorsError::OperatorNotFound { id: id.into() }));
    }
    let existing = record(txn, id)?;
    let created = existing.is_none();
    let mut record = existing.unwrap_or_default();
    record.admin = admin;
    put_record(txn, id, &record)?;
    Ok(Ok(OperatorsResult::Put { created }))
}

fn remove<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: &str,
) -> Result<OperatorsOutcome, StorageError> {
    let Some(record) = record(txn, id)? else {
        return Ok(Ok(OperatorsResult::Removed { existed: false }));
    };
    for app in &record.apps {
        if role(txn, app, id)? == Some(Role::Owner) && last_owner(txn, app)? {
            return Ok(Err(OperatorsError::LastOwner { app: app.clone() }));
        }
    }
    for app in &record.apps {
        if role(txn, app, id)? == Some(Role::Owner) {
            count_owner(txn, app, -1)?;
        }
        txn.delete(Keyspace::Operators, member_key(app, id));
    }
    txn.delete(Keyspace::Operators, operator_key(id));
    Ok(Ok(OperatorsResult::Removed { existed: true }))
}

fn member_set<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
    new: Role,
) -> Result<OperatorsOutcome, StorageError> {
    let Some(mut record) = record(txn, id)? else {
        return Ok(Err(OperatorsError::OperatorNotFound { id: id.into() }));
    };
    let old = role(txn, app, id)?;
    if old == Some(Role::Owner) && new != Role::Owner {
        if last_owner(txn, app)? {
            return Ok(Err(OperatorsError::LastOwner { app: app.into() }));
        }
        count_owner(txn, app, -1)?;
    }
    if old != Some(Role::Owner) && new == Role::Owner {
        count_owner(txn, app, 1)?;
    }
    txn.put_encoded(Keyspace::Operators, member_key(app, id), &new, "membership")?;
    if record.apps.insert(app.to_string()) {
        put_record(txn, id, &record)?;
    }
    Ok(Ok(OperatorsResult::MemberSet))
}

fn member_remove<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    app: &str,
    id: &str,
) -> Result<OperatorsOutcome, StorageError> {
    let old = role(txn, app, id)?;
    if old == Some(Role::Owner) {
        if last_owner(txn, app)? {
            return Ok(Err(OperatorsError::LastOwner { app: app.into() }));
        }
        count_owner(txn, app, -1)?;
    }
    txn.delete(Keyspace::Operators, member_key(app, id));
    if let Some(mut record) = record(txn, id)?
        && record.apps.remove(app)
    {
        put_record(txn, id, &record)?;
    }
    Ok(Ok(OperatorsResult::MemberRemoved {
        existed: old.is_some(),
    }))
}

#[cfg(test)]
mod tests;
