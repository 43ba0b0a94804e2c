//! How records are laid out as backend keys.
//!
//! Per-app keyspaces start with the app name's length (`u32`, big endian)
//! followed by the name, so app `a` with key `b/c` and app `a/b` with key `c`
//! can never share a key: the length byte differs before any name byte does.
//! Inside one app, keys keep the byte order of the user's key, which is what
//! `kv_list` pages through.

use serde::{Deserialize, Serialize};

/// `Meta` key of the last applied log id.
pub(crate) const META_LAST_APPLIED: &[u8] = b"last_applied";
/// `Meta` key of the last applied membership.
pub(crate) const META_MEMBERSHIP: &[u8] = b"membership";

/// `Meta` keys of a `Command::Batch` entry being applied (see `apply`):
/// every such key starts with this prefix.
pub(crate) const META_BATCH_PREFIX: &[u8] = b"batch/";
/// `Meta` key of the progress marker of the batch entry being applied.
pub(crate) const META_BATCH_PROGRESS: &[u8] = b"batch/progress";

/// `Meta` key of the result of inner command `index` of the batch entry
/// being applied.
pub(crate) fn batch_result_key(index: u64) -> Vec<u8> {
    let mut key = b"batch/result/".to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// `Cluster` key of the next node id to allocate (a `u64`; absent means
/// [`FIRST_ALLOCATED_NODE_ID`]).
pub(crate) const CLUSTER_NEXT_NODE_ID: &[u8] = b"next_node_id";
/// `Cluster` key of the join secret ([`JoinSecretRecord`]).
pub(crate) const CLUSTER_JOIN_SECRET: &[u8] = b"join_secret";
/// `Cluster` key of the cluster CA ([`ClusterCaRecord`]).
pub(crate) const CLUSTER_CA: &[u8] = b"ca";
/// `Cluster` keys of removed node ids: this prefix, then the id in big
/// endian (so they sort numerically); the value is the removal's `now_ms`.
pub(crate) const CLUSTER_REMOVED_PREFIX: &[u8] = b"removed/";

/// The first id `AllocateNodeId` hands out: node 1 bootstrapped the cluster.
pub(crate) const FIRST_ALLOCATED_NODE_ID: u64 = 2;

/// Prefix of the `Cluster` keys recording admitted nodes (`RegisterNode`).
pub(crate) const CLUSTER_REGISTERED_PREFIX: &[u8] = b"registered/";

/// The `Cluster` key recording node `id` as admitted.
pub(crate) fn registered_node_key(id: u64) -> Vec<u8> {
    let mut key = CLUSTER_REGISTERED_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The `Cluster` key recording node `id` as removed.
pub(crate) fn removed_node_key(id: u64) -> Vec<u8> {
    let mut key = CLUSTER_REMOVED_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The node id of a removed-node key.
pub(crate) fn node_of_removed_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.strip_prefix(CLUSTER_REMOVED_PREFIX)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The join secret as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JoinSecretRecord {
    /// The join-token secret (32 random bytes).
    pub secret: Vec<u8>,
    pub set_ms: u64,
}

/// The cluster CA as stored (PEM). The key is plain text for now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClusterCaRecord {
    pub cert_pem: String,
    pub key_pem: String,
}

/// `LogMeta` keys.
pub(crate) const LOG_META_VOTE: &[u8] = b"vote";
pub(crate) const LOG_META_COMMITTED: &[u8] = b"committed";
pub(crate) const LOG_META_LAST_PURGED: &[u8] = b"last_purged";

/// The prefix every key of `app` starts with in a per-app keyspace.
pub(crate) fn app_prefix(app: &str) -> Vec<u8> {
    // App names are far below 4 GiB; saturating keeps this total anyway.
    let length = u32::try_from(app.len()).unwrap_or(u32::MAX);
    let mut prefix = Vec::with_capacity(4 + app.len());
    prefix.extend_from_slice(&length.to_be_bytes());
    prefix.extend_from_slice(app.as_bytes());
    prefix
}

/// A kv key of `app`.
pub(crate) fn kv_key(app: &str, key: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.extend_from_slice(key.as_bytes());
    full
}

/// A `Deploys`/`Bundles` key: the app, then the version in big endian so
/// versions sort numerically.
pub(crate) fn deploy_key(app: &str, version: u64) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.extend_from_slice(&version.to_be_bytes());
    full
}

/// `Triggers` key of the trigger set of `app`'s `version`.
pub(crate) fn trigger_set_key(app: &str, version: u64) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'v');
    full.extend_from_slice(&version.to_be_bytes());
    full
}

/// `Triggers` key of the last slot cron trigger `trigger` of `app` fired.
pub(crate) fn fired_key(app: &str, trigger: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'f');
    full.extend_from_slice(trigger.as_bytes());
    full
}

/// `Triggers` key of `app`'s next outbox id (a `u64`; absent means 1).
pub(crate) fn outbox_next_id_key(app: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'n');
    full
}

/// `Triggers` key of the number of `app`'s pending runs (a `u64`).
pub(crate) fn outbox_count_key(app: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'c');
    full
}

/// `Mail` key of captured mail `id` of `app`: the app's prefix (so an app
/// delete takes its mail), `m`, then the id in big endian (ids sort
/// numerically, oldest first).
pub(crate) fn captured_mail_key(app: &str, id: u64) -> Vec<u8> {
    let mut full = captured_mail_prefix(app);
    full.extend_from_slice(&id.to_be_bytes());
    full
}

/// `Mail` prefix of `app`'s captured mail.
pub(crate) fn captured_mail_prefix(app: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'm');
    full
}

/// `Mail` key of `app`'s [`crate::email::CaptureSeq`].
pub(crate) fn capture_seq_key(app: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b's');
    full
}

/// `Outbox` / `DeadLetters` key of run `id` of `app` (ids sort numerically).
pub(crate) fn run_key(app: &str, id: u64) -> Vec<u8> {
    deploy_key(app, id)
}

/// `Secrets` key of secret `name` of `app`.
pub(crate) fn secret_key(app: &str, name: &str) -> Vec<u8> {
    let mut full = secrets_prefix(app);
    full.extend_from_slice(name.as_bytes());
    full
}

/// The prefix of every secret of `app` in `Secrets`.
pub(crate) fn secrets_prefix(app: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'n');
    full
}

/// `Secrets` key of the number of `app`'s secrets (a `u32`).
pub(crate) fn secret_count_key(app: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'c');
    full
}

/// `Topics` key of the position record of `topic` of `app`
/// ([`crate::records::TopicRecord`]).
pub(crate) fn topic_record_key(app: &str, topic: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'm');
    full.extend_from_slice(topic.as_bytes());
    full
}

/// The prefix of every retained message of `topic` of `app` in `Topics`:
/// the topic is length-prefixed so one topic's messages never share a
/// prefix with another's.
pub(crate) fn topic_messages_prefix(app: &str, topic: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'd');
    let length = u32::try_from(topic.len()).unwrap_or(u32::MAX);
    full.extend_from_slice(&length.to_be_bytes());
    full.extend_from_slice(topic.as_bytes());
    full
}

/// `Topics` key of message `seq` of `topic` of `app` (sequence numbers
/// sort numerically).
pub(crate) fn topic_message_key(app: &str, topic: &str, seq: u64) -> Vec<u8> {
    let mut full = topic_messages_prefix(app, topic);
    full.extend_from_slice(&seq.to_be_bytes());
    full
}

/// `Topics` key of `app`'s sealed realtime signing key.
pub(crate) fn realtime_key_key(app: &str) -> Vec<u8> {
    let mut full = app_prefix(app);
    full.push(b'k');
    full
}

/// `Cluster` key of the counter that hands out topic epochs (a `u64`;
/// absent means 1). It only grows, so a topic re-created after its app was
/// deleted never shares an epoch with the old history.
pub(crate) const CLUSTER_NEXT_TOPIC_EPOCH: &[u8] = b"next_topic_epoch";

/// `Files` key of the record of the file at `path` of `app`: paths of one
/// app sort in byte order, which is what `files.list` pages through.
pub(crate) fn file_key(app: &str, path: &str) -> Vec<u8> {
    kv_key(app, path)
}

/// The path and record of a `Files` row of the app whose
/// [`app_prefix`] is `app_prefix`.
pub(crate) fn file_row(
    app_prefix: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<(String, crate::files::FileRecord), crate::error::StorageError> {
    let path = key
        .get(app_prefix.len()..)
        .and_then(|path| std::str::from_utf8(path).ok())
        .ok_or(crate::error::StorageError::Corrupt {
            what: "file key",
            detail: format!("{} bytes", key.len()),
        })?;
    let record = crate::codec::decode(value, crate::codec::STORED_BYTES_MAX)
        .map_err(crate::error::StorageError::codec("file record"))?;
    Ok((path.to_string(), record))
}

/// `FileIndex` prefix of the block lists of `app`'s files.
pub(crate) fn file_blocks_prefix(app: &str) -> Vec<u8> {
    let mut full = b"l".to_vec();
    full.extend_from_slice(&app_prefix(app));
    full
}

/// `FileIndex` key of the block list of the file at `path` of `app` (the
/// hashes, concatenated; absent for an inline file).
pub(crate) fn file_blocks_key(app: &str, path: &str) -> Vec<u8> {
    let mut full = file_blocks_prefix(app);
    full.extend_from_slice(path.as_bytes());
    full
}

/// The hashes of a stored block list (its length is a multiple of 32).
pub(crate) fn block_list_of(bytes: &[u8]) -> Result<Vec<[u8; 32]>, crate::error::StorageError> {
    let corrupt = || crate::error::StorageError::Corrupt {
        what: "file block list",
        detail: format!("{} bytes", bytes.len()),
    };
    let chunks = bytes.chunks_exact(32);
    if !chunks.remainder().is_empty() {
        return Err(corrupt());
    }
    chunks
        .map(|chunk| <[u8; 32]>::try_from(chunk).map_err(|_| corrupt()))
        .collect()
}

/// `FileIndex` prefix of the block reference counts (one row per distinct
/// block over every app, in hash order).
pub(crate) const BLOCK_REFS_PREFIX: &[u8] = b"r";

/// `FileIndex` key of the reference count of block `hash` (a `u64`).
pub(crate) fn block_refs_key(hash: &[u8; 32]) -> Vec<u8> {
    let mut full = BLOCK_REFS_PREFIX.to_vec();
    full.extend_from_slice(hash);
    full
}

/// The block hash of a [`block_refs_key`].
pub(crate) fn hash_of_block_refs_key(key: &[u8]) -> Option<[u8; 32]> {
    key.strip_prefix(BLOCK_REFS_PREFIX)?.try_into().ok()
}

/// `FileIndex` key of what `app`'s files take up (`FilesUsage`).
pub(crate) fn files_usage_key(app: &str) -> Vec<u8> {
    let mut full = b"u".to_vec();
    full.extend_from_slice(&app_prefix(app));
    full
}

/// The version from a `Deploys` key (its last eight bytes).
pub(crate) fn version_of_deploy_key(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    let bytes: [u8; 8] = key.get(start..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A `Log` key: the index in big endian so entries sort by index.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn index_of_log_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A kv value as stored: the JSON text and its absolute expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredValue {
    pub value: Vec<u8>,
    pub expires_at_ms: Option<u64>,
}

impl StoredValue {
    /// A value is expired from its `expires_at_ms` on (inclusive).
    pub fn is_live(&self, now_ms: u64) -> bool {
        match self.expires_at_ms {
            Some(expires_at_ms) => now_ms < expires_at_ms,
            None => true,
        }
    }
}

/// `Users` key prefix of every row of `app` tagged `tag` (`u` user, `e`
/// email index, `n` count, `t` single-use token): the app prefix first, so
/// an app delete drops them all with one prefix.
pub(crate) fn users_prefix(app: &str, tag: u8) -> Vec<u8> {
    let mut key = app_prefix(app);
    key.push(tag);
    key
}

/// `Users` key of user `id` of `app` (a `UserRecord`).
pub(crate) fn user_key(app: &str, id: &str) -> Vec<u8> {
    let mut key = users_prefix(app, b'u');
    key.extend_from_slice(id.as_bytes());
    key
}

/// `Users` key of the unique email index row of `email` in `app` (the
/// user id).
pub(crate) fn user_email_key(app: &str, email: &str) -> Vec<u8> {
    let mut key = users_prefix(app, b'e');
    key.extend_from_slice(email.as_bytes());
    key
}

/// `Users` key of how many users `app` holds (a `u64`).
pub(crate) fn users_count_key(app: &str) -> Vec<u8> {
    users_prefix(app, b'n')
}

/// `Users` key of the single-use token whose hash is `hash`.
pub(crate) fn user_token_key(app: &str, hash: &[u8; 32]) -> Vec<u8> {
    let mut key = users_prefix(app, b't');
    key.extend_from_slice(hash);
    key
}

/// `Sessions` key of the session whose token hash is `hash`.
pub(crate) fn session_key(app: &str, hash: &[u8; 32]) -> Vec<u8> {
    let mut key = app_prefix(app);
    key.extend_from_slice(hash);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_namespaces_cannot_collide() {
        assert_ne!(kv_key("a", "b/c"), kv_key("a/b", "c"));
        assert_ne!(kv_key("a", "bc"), kv_key("ab", "c"));
        assert!(!kv_key("ab", "").starts_with(&app_prefix("a")));
    }

    #[test]
    fn removed_node_keys_sort_by_id_and_round_trip() {
        assert!(removed_node_key(2) < removed_node_key(256));
        assert_eq!(node_of_removed_key(&removed_node_key(7)), Some(7));
        assert_eq!(node_of_removed_key(b"removed/x"), None);
        assert_eq!(node_of_removed_key(CLUSTER_NEXT_NODE_ID), None);
    }

    #[test]
    fn file_index_rows_of_one_kind_never_share_a_prefix_with_another() {
        let hash = [7u8; 32];
        assert_eq!(hash_of_block_refs_key(&block_refs_key(&hash)), Some(hash));
        assert_eq!(hash_of_block_refs_key(b"r123"), None);
        assert!(block_refs_key(&[0; 32]) < block_refs_key(&[1; 32]));
        assert!(file_blocks_key("a", "x").starts_with(&file_blocks_prefix("a")));
        assert!(!file_blocks_key("ab", "x").starts_with(&file_blocks_prefix("a")));
        assert!(!files_usage_key("a").starts_with(BLOCK_REFS_PREFIX));
        assert!(!file_blocks_key("a", "x").starts_with(BLOCK_REFS_PREFIX));
    }

    #[test]
    fn deploy_keys_sort_by_version() {
        assert!(deploy_key("a", 2) < deploy_key("a", 10));
        assert_eq!(version_of_deploy_key(&deploy_key("app", 42)), Some(42));
    }
}
