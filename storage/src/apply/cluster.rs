//! Cluster records: node ids (allocated, never reused), node registrations
//! and removals, the join secret and the cluster CA. None is ever rejected.

use super::txn::{Outcome, Txn};
use crate::backend::{Backend, Keyspace};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::command::CommandResult;
use crate::error::StorageError;
use crate::keys;
use crate::node::NodeId;

/// The id the next `AllocateNodeId` hands out, reading `Cluster` keys with
/// `get`: the stored counter (at least [`keys::FIRST_ALLOCATED_NODE_ID`]),
/// moved past any id recorded as removed.
pub(crate) fn next_node_id(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, StorageError>,
) -> Result<NodeId, StorageError> {
    let stored: NodeId = match get(keys::CLUSTER_NEXT_NODE_ID)? {
        Some(bytes) => {
            codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("next node id"))?
        }
        None => keys::FIRST_ALLOCATED_NODE_ID,
    };
    let mut id = stored.max(keys::FIRST_ALLOCATED_NODE_ID);
    while get(&keys::removed_node_key(id))?.is_some() {
        id = id.checked_add(1).ok_or_else(node_ids_exhausted)?;
    }
    Ok(id)
}

/// 2^64 ids cannot be allocated one log entry at a time: a counter this
/// high is damage, not use.
pub(super) fn node_ids_exhausted() -> StorageError {
    StorageError::Corrupt {
        what: "next node id",
        detail: "the node id counter is at its maximum".into(),
    }
}

pub(super) fn allocate_node_id<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
) -> Result<Outcome, StorageError> {
    let id = next_node_id(|key| txn.get(Keyspace::Cluster, key))?;
    let next = id.checked_add(1).ok_or_else(node_ids_exhausted)?;
    txn.put_encoded(
        Keyspace::Cluster,
        keys::CLUSTER_NEXT_NODE_ID.to_vec(),
        &next,
        "next node id",
    )?;
    Ok(Ok(CommandResult::NodeIdAllocated { id }))
}

pub(super) fn set_join_secret<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    secret: &[u8],
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let record = keys::JoinSecretRecord {
        secret: secret.to_vec(),
        set_ms: now_ms,
    };
    txn.put_encoded(
        Keyspace::Cluster,
        keys::CLUSTER_JOIN_SECRET.to_vec(),
        &record,
        "join secret",
    )?;
    Ok(Ok(CommandResult::Done))
}

pub(super) fn remove_node<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: NodeId,
    now_ms: u64,
) -> Result<Outcome, StorageError> {
    let key = keys::removed_node_key(id);
    // Removed once is removed for good: the first removal's time stays.
    if txn.get(Keyspace::Cluster, &key)?.is_none() {
        txn.put_encoded(Keyspace::Cluster, key, &now_ms, "removed node")?;
    }
    Ok(Ok(CommandResult::Done))
}

pub(super) fn register_node<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    id: NodeId,
    node: &crate::types::NodeInfo,
) -> Result<Outcome, StorageError> {
    // A removed id stays out for good, even if a late registration arrives.
    if txn
        .get(Keyspace::Cluster, &keys::removed_node_key(id))?
        .is_none()
    {
        txn.put_encoded(
            Keyspace::Cluster,
            keys::registered_node_key(id),
            node,
            "registered node",
        )?;
    }
    Ok(Ok(CommandResult::Done))
}

pub(super) fn set_cluster_ca<B: Backend + ?Sized>(
    txn: &mut Txn<'_, B>,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Outcome, StorageError> {
    let record = keys::ClusterCaRecord {
        cert_pem: cert_pem.into(),
        key_pem: key_pem.into(),
    };
    txn.put_encoded(
        Keyspace::Cluster,
        keys::CLUSTER_CA.to_vec(),
        &record,
        "cluster ca",
    )?;
    Ok(Ok(CommandResult::Done))
}

#[cfg(test)]
mod tests;
