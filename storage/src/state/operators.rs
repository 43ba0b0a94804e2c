//! The read side of operators: flags, memberships and an app's members.

use super::StateReader;
use crate::backend::Keyspace;
use crate::codec::{self, STORED_BYTES_MAX};
use crate::error::StorageError;
use crate::keys::app_prefix;
use crate::operators::{OPERATORS_NAMESPACE, OperatorRecord, Role, member_key, operator_key};

impl StateReader {
    /// Up to `limit` rows of `Operators` under `prefix`, each with the
    /// UTF-8 operator id that follows the prefix, decoded.
    fn operator_rows<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        limit: usize,
        what: &'static str,
    ) -> Result<Vec<(String, T)>, StorageError> {
        let mut rows = Vec::new();
        for item in self
            .backend
            .scan(Keyspace::Operators, prefix, prefix)
            .take(limit)
        {
            let (key, bytes) = item?;
            let id = key
                .get(prefix.len()..)
                .and_then(|id| std::str::from_utf8(id).ok())
                .ok_or_else(|| StorageError::Corrupt {
                    what,
                    detail: "the operator id is not UTF-8".into(),
                })?;
            let row = codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec(what))?;
            rows.push((id.to_owned(), row));
        }
        Ok(rows)
    }

    /// Operator `id`'s flag and apps; `None` when it is no operator.
    pub fn operator(&self, id: &str) -> Result<Option<OperatorRecord>, StorageError> {
        self.decode_one(Keyspace::Operators, &operator_key(id), "operator record")
    }

    /// Up to `limit` operators, in id order (operators are people, not
    /// end users: the admin API lists them in one page).
    pub fn operators(&self, limit: usize) -> Result<Vec<(String, OperatorRecord)>, StorageError> {
        self.operator_rows(&app_prefix(OPERATORS_NAMESPACE), limit, "operator record")
    }

    /// Operator `id`'s role in `app`, if it is a member.
    pub fn member_role(&self, app: &str, id: &str) -> Result<Option<Role>, StorageError> {
        self.decode_one(Keyspace::Operators, &member_key(app, id), "membership")
    }

    /// Up to `limit` members of `app` and their roles, in operator id order.
    pub fn members(&self, app: &str, limit: usize) -> Result<Vec<(String, Role)>, StorageError> {
        self.operator_rows(&member_key(app, ""), limit, "membership")
    }
}
