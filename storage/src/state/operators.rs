//! The read side of operators: flags, memberships and an app's members.

use super::StateReader;
use crate::backend::Keyspace;
use crate::codec::{self, STORED_BYTES_MAX};
use crate::error::StorageError;
use crate::keys::app_prefix;
use crate::operators::{OPERATORS_NAMESPACE, OperatorRecord, Role, member_key, operator_key};

/// Splits the UTF-8 id after `prefix` off `key`.
fn id_after(key: &[u8], prefix: usize, what: &'static str) -> Result<String, StorageError> {
    key.get(prefix..)
        .and_then(|id| std::str::from_utf8(id).ok())
        .map(str::to_owned)
        .ok_or_else(|| StorageError::Corrupt {
            what,
            detail: "the operator id is not UTF-8".into(),
        })
}

impl StateReader {
    /// Operator `id`'s flag and apps; `None` when it is no operator.
    pub fn operator(&self, id: &str) -> Result<Option<OperatorRecord>, StorageError> {
        self.decode_one(Keyspace::Operators, &operator_key(id), "operator record")
    }

    /// Up to `limit` operators, in id order (operators are people, not
    /// end users: the admin API lists them in one page).
    pub fn operators(&self, limit: usize) -> Result<Vec<(String, OperatorRecord)>, StorageError> {
        let prefix = app_prefix(OPERATORS_NAMESPACE);
        let mut operators = Vec::new();
        for item in self
            .backend
            .scan(Keyspace::Operators, &prefix, &prefix)
            .take(limit)
        {
            let (key, bytes) = item?;
            let id = id_after(&key, prefix.len(), "operator key")?;
            let record = codec::decode(&bytes, STORED_BYTES_MAX)
                .map_err(StorageError::codec("operator record"))?;
            operators.push((id, record));
        }
        Ok(operators)
    }

    /// Operator `id`'s role in `app`, if it is a member.
    pub fn member_role(&self, app: &str, id: &str) -> Result<Option<Role>, StorageError> {
        self.decode_one(Keyspace::Operators, &member_key(app, id), "membership")
    }

    /// Up to `limit` members of `app` and their roles, in operator id order.
    pub fn members(&self, app: &str, limit: usize) -> Result<Vec<(String, Role)>, StorageError> {
        let prefix = member_key(app, "");
        let mut members = Vec::new();
        for item in self
            .backend
            .scan(Keyspace::Operators, &prefix, &prefix)
            .take(limit)
        {
            let (key, bytes) = item?;
            let id = id_after(&key, prefix.len(), "membership key")?;
            let role = codec::decode(&bytes, STORED_BYTES_MAX)
                .map_err(StorageError::codec("membership"))?;
            members.push((id, role));
        }
        Ok(members)
    }
}
