//! What a backup needs from storage: the blocks a state's files use, and
//! turning a backed-up state into that of a new one-node cluster.
//!
//! ```text
//!  backup:   state view's records ──▶ BlockCollector ──▶ (block hash, length) of every file block
//!  restore:  Restorer::create(raft dir) ─▶ record* ─▶ finish(applied id)
//!              state/  ◀── records, applied id = the backup's,
//!                          membership = { node_id } (addresses filled at first start),
//!                          cluster CA, join secret, registered and removed nodes cleared
//!              log/    ◀── vote (term, node_id), committed = last purged = the backup's id
//!              restored  (marker: `finish_restore` at the first start)
//! ```
//!
//! The log continues after the backup's index with a higher term, like a
//! node that installed a snapshot and purged its log: outbox claims (by
//! term), topic positions and every other record keep their meaning, and a
//! node that joins gets the state as a snapshot (the log before it is gone).
//! The cluster's CA and join secret are cleared so that the first start
//! makes new ones: the restored node never talks to the old cluster's nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{LogId, Membership, StoredMembership, Vote};

use crate::backend::{Backend, Keyspace, SledBackend, SledOptions, WriteBatch, delete_prefix};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::error::StorageError;
use crate::files::{BLOCK_BYTES, BlockHash, FileRecord};
use crate::keys;
use crate::snapshot;
use crate::types::{NodeId, NodeInfo};

/// The file in a node's data dir (the storage dir's parent) that says a
/// restore into it has not finished: `picloud serve` refuses such a dir.
pub const RESTORING_MARKER_FILE: &str = "restoring";

/// The file in the storage dir that marks a restore not yet started once.
pub const RESTORED_MARKER_FILE: &str = "restored";

/// The `FileIndex` row kind of a file's block list (see `keys::file_blocks_key`).
const BLOCK_LIST_ROW: u8 = b'l';

/// Collects every block the files of a state use, with its length, from
/// the state's records in `Keyspace::STATE_DATA` order (files before their
/// block lists). Holds one entry per file with blocks and one per distinct
/// block in memory.
#[derive(Default)]
pub struct BlockCollector {
    sizes: BTreeMap<Vec<u8>, u64>,
    blocks: BTreeMap<BlockHash, u64>,
}

impl BlockCollector {
    pub fn new() -> BlockCollector {
        BlockCollector::default()
    }

    /// Looks at one record; only files and their block lists matter.
    pub fn record(
        &mut self,
        keyspace: Keyspace,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StorageError> {
        match keyspace {
            Keyspace::Files => {
                let record: FileRecord = codec::decode(value, STORED_BYTES_MAX)
                    .map_err(StorageError::codec("file record"))?;
                if record.blocks > 0 {
                    self.sizes.insert(key.to_vec(), record.size);
                }
            }
            Keyspace::FileIndex if key.first() == Some(&BLOCK_LIST_ROW) => {
                let Some(size) = self.sizes.get(&key[1..]) else {
                    return Err(StorageError::Corrupt {
                        what: "file index",
                        detail: "a block list without its file record".to_string(),
                    });
                };
                let list = keys::block_list_of(value)?;
                let count = list.len() as u64;
                for (at, hash) in list.into_iter().enumerate() {
                    let at = at as u64;
                    let length = if at + 1 < count {
                        BLOCK_BYTES
                    } else {
                        size.saturating_sub(at * BLOCK_BYTES)
                    };
                    self.blocks.insert(hash, length);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Every block seen, with its length, in hash order.
    pub fn finish(self) -> Vec<(BlockHash, u64)> {
        self.blocks.into_iter().collect()
    }
}

/// What [`Restorer::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The state's last applied log id: the new cluster's log starts after it.
    pub last_log_id: Option<LogId<NodeId>>,
    /// How many apps the state holds.
    pub apps: usize,
}

/// The state's records are written in batches of whichever bound comes first.
pub const RESTORE_BATCH_RECORDS: usize = 4096;
pub const RESTORE_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Writes a backed-up state, record by record, as the state of a new
/// one-node cluster whose only member is `node_id`, under the storage dir
/// `raft_dir` (which must hold no storage yet). [`Restorer::finish`] only
/// once every record is in and the backup checked whole: before that the
/// dir is not a node's storage (no applied id, no log, no marker).
/// Blocking.
pub struct Restorer {
    raft_dir: std::path::PathBuf,
    state: SledBackend,
    batch: WriteBatch,
    batch_bytes: usize,
    apps: usize,
    node_id: NodeId,
    cache_capacity_bytes: u64,
}

impl Restorer {
    pub fn create(
        raft_dir: &Path,
        node_id: NodeId,
        cache_capacity_bytes: u64,
    ) -> Result<Restorer, StorageError> {
        std::fs::create_dir_all(raft_dir)
            .map_err(StorageError::io("create storage dir", raft_dir))?;
        let state = SledBackend::open(
            &raft_dir.join("state"),
            SledOptions {
                cache_capacity_bytes,
            },
        )?;
        Ok(Restorer {
            raft_dir: raft_dir.to_path_buf(),
            state,
            batch: WriteBatch::new(),
            batch_bytes: 0,
            apps: 0,
            node_id,
            cache_capacity_bytes,
        })
    }

    /// Adds one record of the state (`keyspace` must be one of
    /// `Keyspace::STATE_DATA`: the caller checks what it read).
    pub fn record(
        &mut self,
        keyspace: Keyspace,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StorageError> {
        if keyspace == Keyspace::Apps {
            self.apps += 1;
        }
        self.batch_bytes += key.len() + value.len();
        self.batch.insert(keyspace, key, value);
        if self.batch.len() >= RESTORE_BATCH_RECORDS || self.batch_bytes >= RESTORE_BATCH_BYTES {
            self.state.apply_batch(std::mem::take(&mut self.batch))?;
            self.batch_bytes = 0;
        }
        Ok(())
    }

    /// Ends the state at `last_log_id`: the one-node membership, the old
    /// cluster's CA, join secret and members cleared, the log's vote and
    /// purged id, then the `restored` marker. Everything is durable on return.
    pub fn finish(mut self, last_log_id: Option<LogId<NodeId>>) -> Result<Restored, StorageError> {
        let state = &self.state;
        state.apply_batch(std::mem::take(&mut self.batch))?;
        // This node alone, addresses filled in by `finish_restore`.
        let membership = one_node_membership(last_log_id, self.node_id, NodeInfo::default());
        let mut batch = WriteBatch::new();
        snapshot::write_applied_meta(&mut batch, last_log_id.as_ref(), &membership)?;
        // A new cluster: its first start makes a new CA and join secret, and
        // the old members are neither registered nor remembered as removed.
        batch.remove(Keyspace::Cluster, keys::CLUSTER_CA.to_vec());
        batch.remove(Keyspace::Cluster, keys::CLUSTER_JOIN_SECRET.to_vec());
        state.apply_batch(batch)?;
        delete_prefix(state, Keyspace::Cluster, keys::CLUSTER_REGISTERED_PREFIX)?;
        delete_prefix(state, Keyspace::Cluster, keys::CLUSTER_REMOVED_PREFIX)?;
        state.flush()?;
        drop(self.state);

        let raft_dir = &self.raft_dir;
        let log = SledBackend::open(
            &raft_dir.join("log"),
            SledOptions {
                cache_capacity_bytes: self.cache_capacity_bytes / 4,
            },
        )?;
        if let Some(log_id) = last_log_id {
            let put = |key: &[u8], bytes: Vec<u8>| log.insert(Keyspace::LogMeta, key, &bytes);
            let encode = |what| StorageError::codec(what);
            // The vote carries the old term: the node's first election is for
            // a later one, so its entries follow the snapshot's in term order.
            let vote = Vote::new(log_id.leader_id.term, self.node_id);
            put(
                keys::LOG_META_VOTE,
                codec::encode(&vote).map_err(encode("vote"))?,
            )?;
            put(
                keys::LOG_META_COMMITTED,
                codec::encode(&Some(log_id)).map_err(encode("committed log id"))?,
            )?;
            put(
                keys::LOG_META_LAST_PURGED,
                codec::encode(&log_id).map_err(encode("last purged log id"))?,
            )?;
        }
        log.flush()?;
        drop(log);

        let marker = raft_dir.join(RESTORED_MARKER_FILE);
        std::fs::write(&marker, b"").map_err(StorageError::io("write restore marker", &marker))?;
        sync_dir(raft_dir)?;
        Ok(Restored {
            last_log_id,
            apps: self.apps,
        })
    }
}

/// At the first start after a restore (the marker is there): records this
/// node's addresses in the one-node membership, then removes the marker.
/// Returns whether it did. Call before `open`: it opens the state itself.
pub fn finish_restore(
    raft_dir: &Path,
    node_id: NodeId,
    info: &NodeInfo,
    cache_capacity_bytes: u64,
) -> Result<bool, StorageError> {
    let marker = raft_dir.join(RESTORED_MARKER_FILE);
    if !marker.exists() {
        return Ok(false);
    }
    let state = SledBackend::open(
        &raft_dir.join("state"),
        SledOptions {
            cache_capacity_bytes,
        },
    )?;
    let last_applied = crate::state::read_last_applied(&state)?;
    let membership = one_node_membership(last_applied, node_id, info.clone());
    let mut batch = WriteBatch::new();
    snapshot::write_applied_meta(&mut batch, last_applied.as_ref(), &membership)?;
    state.apply_batch(batch)?;
    state.flush()?;
    drop(state);
    std::fs::remove_file(&marker).map_err(StorageError::io("remove restore marker", &marker))?;
    sync_dir(raft_dir)?;
    Ok(true)
}

fn one_node_membership(
    log_id: Option<LogId<NodeId>>,
    node_id: NodeId,
    info: NodeInfo,
) -> StoredMembership<NodeId, NodeInfo> {
    let voters = BTreeSet::from([node_id]);
    let nodes = BTreeMap::from([(node_id, info)]);
    StoredMembership::new(log_id, Membership::new(vec![voters], nodes))
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(StorageError::io("sync dir", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sled(path: &Path) -> SledBackend {
        SledBackend::open(
            path,
            SledOptions {
                cache_capacity_bytes: 1 << 20,
            },
        )
        .expect("open")
    }

    fn file_record(size: u64, blocks: u32) -> Vec<u8> {
        codec::encode(&FileRecord {
            size,
            content_type: "application/octet-stream".to_string(),
            sha256: [0; 32],
            created_ms: 1,
            updated_ms: 1,
            inline: None,
            blocks,
        })
        .expect("encode")
    }

    /// The records of an old three-node cluster's state with a kv key and
    /// a file of two blocks, in scan order.
    fn old_cluster_records() -> Vec<(Keyspace, Vec<u8>, Vec<u8>)> {
        let size = BLOCK_BYTES + 10;
        let mut records = vec![
            (Keyspace::Kv, keys::kv_key("shop", "k/1"), b"1".to_vec()),
            (
                Keyspace::Cluster,
                keys::CLUSTER_CA.to_vec(),
                b"old ca".to_vec(),
            ),
            (
                Keyspace::Cluster,
                keys::CLUSTER_JOIN_SECRET.to_vec(),
                b"s".to_vec(),
            ),
            (
                Keyspace::Cluster,
                keys::CLUSTER_NEXT_NODE_ID.to_vec(),
                b"4".to_vec(),
            ),
            (
                Keyspace::Cluster,
                keys::registered_node_key(3),
                b"n3".to_vec(),
            ),
            (Keyspace::Cluster, keys::removed_node_key(2), b"".to_vec()),
            (
                Keyspace::Files,
                keys::file_key("shop", "a.bin"),
                file_record(size, 2),
            ),
            (
                Keyspace::FileIndex,
                keys::file_blocks_key("shop", "a.bin"),
                [[1u8; 32], [2u8; 32]].concat(),
            ),
        ];
        let order = |keyspace: &Keyspace| Keyspace::STATE_DATA.iter().position(|k| k == keyspace);
        records.sort_by(|a, b| (order(&a.0), &a.1).cmp(&(order(&b.0), &b.1)));
        records
    }

    #[test]
    fn a_state_lists_its_files_blocks_with_their_lengths() {
        let mut collector = BlockCollector::new();
        for (keyspace, key, value) in old_cluster_records() {
            collector.record(keyspace, &key, &value).expect("record");
        }
        assert_eq!(
            collector.finish(),
            vec![([1u8; 32], BLOCK_BYTES), ([2u8; 32], 10)]
        );
    }

    #[test]
    fn a_restored_state_is_a_new_one_node_cluster_after_the_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raft_dir = dir.path().join("raft");
        let mut restorer = Restorer::create(&raft_dir, 1, 1 << 20).expect("create");
        for (keyspace, key, value) in old_cluster_records() {
            restorer.record(keyspace, key, value).expect("record");
        }
        assert!(!raft_dir.join(RESTORED_MARKER_FILE).exists());
        let log_id = LogId::new(openraft::CommittedLeaderId::new(7, 1), 500);
        let restored = restorer.finish(Some(log_id)).expect("restore");
        assert_eq!(restored.last_log_id.map(|id| id.index), Some(500));
        assert!(raft_dir.join(RESTORED_MARKER_FILE).exists());

        let info = NodeInfo {
            http: "127.0.0.1:1".to_string(),
            peer: "127.0.0.1:2".to_string(),
        };
        assert!(finish_restore(&raft_dir, 1, &info, 1 << 20).expect("finish"));
        assert!(!finish_restore(&raft_dir, 1, &info, 1 << 20).expect("again"));

        let state = sled(&raft_dir.join("state"));
        let get = |keyspace, key: &[u8]| state.get(keyspace, key).expect("get");
        assert_eq!(
            get(Keyspace::Kv, &keys::kv_key("shop", "k/1")),
            Some(b"1".to_vec())
        );
        assert_eq!(get(Keyspace::Cluster, keys::CLUSTER_CA), None);
        assert_eq!(get(Keyspace::Cluster, keys::CLUSTER_JOIN_SECRET), None);
        assert_eq!(get(Keyspace::Cluster, &keys::registered_node_key(3)), None);
        assert_eq!(get(Keyspace::Cluster, &keys::removed_node_key(2)), None);
        assert!(get(Keyspace::Cluster, keys::CLUSTER_NEXT_NODE_ID).is_some());
        let membership: StoredMembership<NodeId, NodeInfo> = codec::decode(
            &get(Keyspace::Meta, keys::META_MEMBERSHIP).expect("membership"),
            STORED_BYTES_MAX,
        )
        .expect("decode");
        let nodes: Vec<(NodeId, NodeInfo)> = membership
            .membership()
            .nodes()
            .map(|(id, info)| (*id, info.clone()))
            .collect();
        assert_eq!(nodes, vec![(1, info)]);
        assert_eq!(
            crate::state::read_last_applied(&state)
                .expect("applied")
                .map(|id| id.index),
            Some(500)
        );
        drop(state);

        let log = sled(&raft_dir.join("log"));
        let vote: Vote<NodeId> = codec::decode(
            &log.get(Keyspace::LogMeta, keys::LOG_META_VOTE)
                .expect("get")
                .expect("vote"),
            STORED_BYTES_MAX,
        )
        .expect("decode");
        assert_eq!(vote.leader_id().term, 7);
        let purged: LogId<NodeId> = codec::decode(
            &log.get(Keyspace::LogMeta, keys::LOG_META_LAST_PURGED)
                .expect("get")
                .expect("purged"),
            STORED_BYTES_MAX,
        )
        .expect("decode");
        assert_eq!(purged.index, 500);
    }
}
