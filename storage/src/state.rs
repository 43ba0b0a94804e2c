//! `StateReader`: the read side of the replicated state on this node.
//!
//! Reads see whatever this node has applied ("stale" reads); the cluster
//! layer makes them linearizable by waiting for a read index first. TTL
//! filtering uses the caller's `now_ms`, so readers agree with `apply` about
//! what counts as expired only as far as their clocks agree.

use std::sync::Arc;

mod operators;

use openraft::{LogId, StoredMembership};
use tokio::sync::broadcast;

use crate::backend::{Backend, Keyspace};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::docs::{self, Explain, FindError, FindOptions, FindPage, IndexDef};
use crate::email::{CaptureSeq, CapturedMail};
use crate::error::StorageError;
use crate::files::{BlockHash, FileRecord, FilesUsage};
use crate::keys::{self, StoredValue};
use crate::query::Query;
use crate::records::{AppRecord, AppliedEvent, DeployRecord, KeyRecord, KvPage, LibRecord};
use crate::secrets::SecretRecord;
use crate::topics::{PublishedEvent, TOPIC_PAGE_MAX, TopicPage};
use crate::triggers::{DeadLetter, OutboxEntry, TriggerSet};
use crate::types::{NodeId, NodeInfo};
use crate::users::{SessionRecord, TokenHash, TokenRecord, UserRecord};

/// The most items one `kv_list` page returns, whatever the caller asks.
pub const KV_LIST_LIMIT_MAX: usize = 1000;

/// Cheap to clone; shares the state database with the state machine.
#[derive(Clone)]
pub struct StateReader {
    backend: Arc<dyn Backend>,
    /// Shared with the state machine: backups' point-in-time views.
    views: Arc<crate::state_view::ViewGate>,
    events: broadcast::Sender<AppliedEvent>,
    /// Every durable pub/sub message applied here (see [`Self::subscribe_published`]).
    published: broadcast::Sender<PublishedEvent>,
}

/// How many durable messages a slow receiver of
/// [`StateReader::subscribe_published`] may fall behind before it sees
/// `Lagged` (and must read what it missed from the state).
pub const PUBLISHED_EVENTS_CAPACITY: usize = 4096;

impl StateReader {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        events: broadcast::Sender<AppliedEvent>,
    ) -> StateReader {
        let (published, _) = broadcast::channel(PUBLISHED_EVENTS_CAPACITY);
        StateReader {
            backend,
            views: Arc::default(),
            events,
            published,
        }
    }

    /// The gate the state machine applies entries under, so that views
    /// open between entries.
    pub(crate) fn view_gate(&self) -> Arc<crate::state_view::ViewGate> {
        self.views.clone()
    }

    /// A point-in-time view of the whole state as of the last entry applied
    /// now, for a backup: see [`crate::state_view`]. Old values the view
    /// keeps for keys written during its scan are capped at `kept_bytes_max`.
    pub fn open_view(
        &self,
        kept_bytes_max: u64,
    ) -> Result<crate::state_view::StateView, crate::state_view::ViewError> {
        crate::state_view::StateView::open(
            self.views.clone(),
            self.backend.clone(),
            kept_bytes_max,
            |backend| {
                let last_applied = read_last_applied(backend)?;
                let membership = read_membership(backend)?;
                Ok((last_applied, membership))
            },
        )
    }

    /// The sender the state machine announces durable messages on.
    pub(crate) fn published_sender(&self) -> broadcast::Sender<PublishedEvent> {
        self.published.clone()
    }

    /// Every durable pub/sub message after it was applied to this node's
    /// state (so a read of the topic made after receiving it finds it). A
    /// receiver that lags (`RecvError::Lagged`) reads what it missed with
    /// [`Self::topic_read`].
    pub fn subscribe_published(&self) -> broadcast::Receiver<PublishedEvent> {
        self.published.subscribe()
    }

    /// Messages of `topic` of `app` with a sequence number above
    /// `after_seq`, oldest first, at most `limit` (capped at
    /// [`TOPIC_PAGE_MAX`]), with the topic's record (its epoch and the
    /// oldest position kept).
    pub fn topic_read(
        &self,
        app: &str,
        topic: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<TopicPage, StorageError> {
        let Some(bytes) = self
            .backend
            .get(Keyspace::Topics, &keys::topic_record_key(app, topic))?
        else {
            return Ok(TopicPage::default());
        };
        let record = crate::apply::decode_topic_record(&bytes)?;
        let limit = limit.min(TOPIC_PAGE_MAX);
        let prefix = keys::topic_messages_prefix(app, topic);
        let start = keys::topic_message_key(app, topic, after_seq.saturating_add(1));
        let mut messages = Vec::new();
        for item in self.backend.scan(Keyspace::Topics, &prefix, &start) {
            if messages.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let Some(seq) = key
                .len()
                .checked_sub(8)
                .and_then(|start| key.get(start..))
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            messages.push((seq, value));
        }
        Ok(TopicPage {
            record: Some(record),
            messages,
        })
    }

    /// `app`'s realtime signing key, sealed (`None` until the first token
    /// or a rotation created it).
    pub fn realtime_key(&self, app: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .backend
            .get(Keyspace::Topics, &keys::realtime_key_key(app))?)
    }

    pub fn kv_get(
        &self,
        app: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(bytes) = self.backend.get(Keyspace::Kv, &keys::kv_key(app, key))? else {
            return Ok(None);
        };
        let stored: StoredValue =
            codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("kv value"))?;
        Ok(stored.is_live(now_ms).then_some(stored.value))
    }

    /// Keys of `app` starting with `prefix`, in byte order, strictly after
    /// `after`, skipping expired ones; at most `limit` (capped at
    /// [`KV_LIST_LIMIT_MAX`]) items whose values add up to at most
    /// `bytes_max` (but always at least one item, so a listing makes
    /// progress). `cursor` is the last key returned when more keys with the
    /// prefix may follow: pass it back as `after`.
    ///
    /// The byte bound is what keeps a page's memory in check: a thousand
    /// 256 KiB values would be 256 MiB as stored and several times that once
    /// decoded for a script.
    pub fn kv_list(
        &self,
        app: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        bytes_max: usize,
        now_ms: u64,
    ) -> Result<KvPage, StorageError> {
        let limit = limit.min(KV_LIST_LIMIT_MAX);
        if limit == 0 {
            return Ok(KvPage::default());
        }
        let app_prefix = keys::app_prefix(app);
        let scan_prefix = keys::kv_key(app, prefix);
        // The smallest key strictly after `after` is `after` followed by 0x00.
        let start = match after {
            Some(after) => {
                let mut start = keys::kv_key(app, after);
                start.push(0);
                start
            }
            None => scan_prefix.clone(),
        };
        let mut page = KvPage::default();
        let mut more = false;
        let mut page_bytes = 0usize;
        for item in self.backend.scan(Keyspace::Kv, &scan_prefix, &start) {
            let (full_key, bytes) = item?;
            if page.items.len() == limit {
                more = true;
                break;
            }
            let stored: StoredValue =
                codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("kv value"))?;
            if !stored.is_live(now_ms) {
                continue;
            }
            page_bytes = page_bytes.saturating_add(stored.value.len());
            if !page.items.is_empty() && page_bytes > bytes_max {
                more = true;
                break;
            }
            let key_bytes = full_key.get(app_prefix.len()..).unwrap_or_default();
            let key = String::from_utf8(key_bytes.to_vec()).map_err(|e| StorageError::Corrupt {
                what: "kv key",
                detail: e.to_string(),
            })?;
            page.items.push((key, stored.value));
        }
        if more {
            page.cursor = page.items.last().map(|(key, _)| key.clone());
        }
        Ok(page)
    }

    /// Document `id` of collection `coll` (JSON text holding `_id`).
    pub fn doc_get(
        &self,
        app: &str,
        coll: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .backend
            .get(Keyspace::Docs, &docs::doc_key(app, coll, id))?)
    }

    /// One page of `coll`'s documents matching `query` (see [`docs`]).
    pub fn docs_find(
        &self,
        app: &str,
        coll: &str,
        query: &Query,
        options: &FindOptions,
    ) -> Result<FindPage, FindError> {
        docs::find(self.backend.as_ref(), app, coll, query, options)
    }

    /// How many of `coll`'s documents match `query`, and how it was counted.
    pub fn docs_count(
        &self,
        app: &str,
        coll: &str,
        query: &Query,
        scan_max: u64,
    ) -> Result<(u64, Explain), FindError> {
        docs::count(self.backend.as_ref(), app, coll, query, scan_max)
    }

    /// The document indexes built for `app` (its active version's).
    pub fn indexes(&self, app: &str) -> Result<Vec<IndexDef>, StorageError> {
        docs::built_indexes(self.backend.as_ref(), app)
    }

    /// The record of the file at `path` of `app`.
    pub fn file(&self, app: &str, path: &str) -> Result<Option<FileRecord>, StorageError> {
        self.decode_one(Keyspace::Files, &keys::file_key(app, path), "file record")
    }

    /// The block list of the file at `path` of `app` (empty for an inline
    /// file or no file).
    pub fn file_blocks(&self, app: &str, path: &str) -> Result<Vec<BlockHash>, StorageError> {
        match self
            .backend
            .get(Keyspace::FileIndex, &keys::file_blocks_key(app, path))?
        {
            Some(bytes) => keys::block_list_of(&bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Up to `limit` files of `app` whose path starts with `prefix`, in path
    /// order, after the path `after`.
    pub fn files_list(
        &self,
        app: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, FileRecord)>, StorageError> {
        let app_prefix = keys::app_prefix(app);
        let scan_prefix = keys::file_key(app, prefix);
        // The smallest key strictly after `after` is `after` followed by 0x00.
        let start = match after {
            Some(after) => {
                let mut start = keys::file_key(app, after);
                start.push(0);
                start
            }
            None => scan_prefix.clone(),
        };
        let mut files = Vec::new();
        for item in self
            .backend
            .scan(Keyspace::Files, &scan_prefix, &start)
            .take(limit)
        {
            let (key, bytes) = item?;
            files.push(keys::file_row(&app_prefix, &key, &bytes)?);
        }
        Ok(files)
    }

    /// What `app`'s files take up.
    pub fn files_usage(&self, app: &str) -> Result<FilesUsage, StorageError> {
        Ok(self
            .decode_one(
                Keyspace::FileIndex,
                &keys::files_usage_key(app),
                "files usage",
            )?
            .unwrap_or_default())
    }

    /// How many file blocks (over every app) reference `hash`.
    pub fn block_refs(&self, hash: &BlockHash) -> Result<u64, StorageError> {
        Ok(self
            .decode_one(
                Keyspace::FileIndex,
                &keys::block_refs_key(hash),
                "block references",
            )?
            .unwrap_or(0))
    }

    /// Up to `limit` referenced block hashes in hash order, after `after`
    /// (the repair duty's page).
    pub fn blocks_page(
        &self,
        after: Option<&BlockHash>,
        limit: usize,
    ) -> Result<Vec<BlockHash>, StorageError> {
        let start = match after {
            Some(after) => {
                let mut start = keys::block_refs_key(after);
                start.push(0);
                start
            }
            None => keys::BLOCK_REFS_PREFIX.to_vec(),
        };
        let mut hashes = Vec::new();
        for item in self
            .backend
            .scan(Keyspace::FileIndex, keys::BLOCK_REFS_PREFIX, &start)
            .take(limit)
        {
            let (key, _) = item?;
            hashes.push(
                keys::hash_of_block_refs_key(&key).ok_or(StorageError::Corrupt {
                    what: "block references key",
                    detail: format!("{} bytes", key.len()),
                })?,
            );
        }
        Ok(hashes)
    }

    pub fn app(&self, name: &str) -> Result<Option<AppRecord>, StorageError> {
        match self.backend.get(Keyspace::Apps, name.as_bytes())? {
            Some(bytes) => Ok(Some(
                codec::decode(&bytes, STORED_BYTES_MAX)
                    .map_err(StorageError::codec("app record"))?,
            )),
            None => Ok(None),
        }
    }

    /// Every app, by name.
    pub fn apps(&self) -> Result<Vec<AppRecord>, StorageError> {
        self.decode_all(Keyspace::Apps, &[], "app record")
    }

    /// The deploys `app` still keeps, ascending by version.
    pub fn deploys(&self, app: &str) -> Result<Vec<DeployRecord>, StorageError> {
        self.decode_all(Keyspace::Deploys, &keys::app_prefix(app), "deploy record")
    }

    /// The trigger set of `app`'s active version, if it has one.
    pub fn trigger_set(&self, app: &str) -> Result<Option<TriggerSet>, StorageError> {
        let Some(version) = self.app(app)?.and_then(|record| record.active_version) else {
            return Ok(None);
        };
        self.decode_one(
            Keyspace::Triggers,
            &keys::trigger_set_key(app, version),
            "trigger set",
        )
    }

    /// The last slot cron trigger `trigger` of `app` fired, if any.
    pub fn last_fired(&self, app: &str, trigger: &str) -> Result<Option<u64>, StorageError> {
        self.decode_one(
            Keyspace::Triggers,
            &keys::fired_key(app, trigger),
            "fired slot",
        )
    }

    /// Up to `limit` pending runs of `app` with ids above `after`, by id.
    pub fn outbox(
        &self,
        app: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        self.runs(Keyspace::Outbox, app, after, limit, "outbox entry")
    }

    /// How many runs of `app` are pending.
    pub fn outbox_len(&self, app: &str) -> Result<u64, StorageError> {
        Ok(self
            .decode_one(
                Keyspace::Triggers,
                &keys::outbox_count_key(app),
                "outbox count",
            )?
            .unwrap_or(0))
    }

    /// Up to `limit` captured mails of `app` (dev mode), newest first, with
    /// ids below `before` (`None`: from the newest).
    pub fn captured_mail(
        &self,
        app: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CapturedMail>, StorageError> {
        let seq: CaptureSeq = self
            .decode_one(Keyspace::Mail, &keys::capture_seq_key(app), "capture seq")?
            .unwrap_or_default();
        let end = before.unwrap_or(seq.next).min(seq.next);
        let mut found = Vec::new();
        for id in (seq.first..end).rev() {
            if found.len() >= limit {
                break;
            }
            if let Some(mail) = self.captured_mail_one(app, id)? {
                found.push(mail);
            }
        }
        Ok(found)
    }

    /// Captured mail `id` of `app`, if still kept.
    pub fn captured_mail_one(
        &self,
        app: &str,
        id: u64,
    ) -> Result<Option<CapturedMail>, StorageError> {
        self.decode_one(
            Keyspace::Mail,
            &keys::captured_mail_key(app, id),
            "captured mail",
        )
    }

    /// Up to `limit` dead letters of `app` with ids above `after`, by id.
    pub fn dead_letters(
        &self,
        app: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StorageError> {
        self.runs(Keyspace::DeadLetters, app, after, limit, "dead letter")
    }

    pub fn dead_letter(&self, app: &str, id: u64) -> Result<Option<DeadLetter>, StorageError> {
        self.decode_one(
            Keyspace::DeadLetters,
            &keys::run_key(app, id),
            "dead letter",
        )
    }

    fn runs<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: Keyspace,
        app: &str,
        after: u64,
        limit: usize,
        what: &'static str,
    ) -> Result<Vec<T>, StorageError> {
        let prefix = keys::app_prefix(app);
        let start = keys::run_key(app, after.saturating_add(1));
        let mut found = Vec::new();
        for item in self.backend.scan(keyspace, &prefix, &start).take(limit) {
            let (_, bytes) = item?;
            found.push(codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec(what))?);
        }
        Ok(found)
    }

    /// Secret `name` of `app` (sealed), if set.
    pub fn secret(&self, app: &str, name: &str) -> Result<Option<SecretRecord>, StorageError> {
        self.decode_one(Keyspace::Secrets, &keys::secret_key(app, name), "secret")
    }

    /// Every secret of `app` with its name, by name (at most
    /// [`crate::secrets::SECRETS_PER_APP_MAX`]).
    pub fn secrets(&self, app: &str) -> Result<Vec<(String, SecretRecord)>, StorageError> {
        let prefix = keys::secrets_prefix(app);
        let mut found = Vec::new();
        for item in self.backend.scan(Keyspace::Secrets, &prefix, &prefix) {
            let (key, bytes) = item?;
            let name = key
                .get(prefix.len()..)
                .and_then(|name| String::from_utf8(name.to_vec()).ok())
                .ok_or_else(|| StorageError::Corrupt {
                    what: "secret key",
                    detail: format!("{} bytes", key.len()),
                })?;
            let record =
                codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("secret"))?;
            found.push((name, record));
        }
        Ok(found)
    }

    pub fn bundle(&self, app: &str, version: u64) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .backend
            .get(Keyspace::Bundles, &keys::deploy_key(app, version))?)
    }

    /// Every shared library, by name.
    pub fn libs(&self) -> Result<Vec<LibRecord>, StorageError> {
        self.decode_all(Keyspace::Libs, &[], "lib record")
    }

    /// The files of version `version` of library `name`, as published
    /// (`None` if it never existed or was pruned).
    pub fn lib_files(&self, name: &str, version: u64) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .backend
            .get(Keyspace::LibFiles, &keys::deploy_key(name, version))?)
    }

    pub fn key(&self, id: &str) -> Result<Option<KeyRecord>, StorageError> {
        match self.backend.get(Keyspace::Keys, id.as_bytes())? {
            Some(bytes) => Ok(Some(
                codec::decode(&bytes, STORED_BYTES_MAX)
                    .map_err(StorageError::codec("key record"))?,
            )),
            None => Ok(None),
        }
    }

    /// Every API key, by id.
    pub fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        self.decode_all(Keyspace::Keys, &[], "key record")
    }

    /// The cluster's join-token secret, once one was set.
    pub fn join_secret(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let record: Option<keys::JoinSecretRecord> =
            self.decode_one(Keyspace::Cluster, keys::CLUSTER_JOIN_SECRET, "join secret")?;
        Ok(record.map(|record| record.secret))
    }

    /// Every node id removed for good, ascending.
    pub fn removed_nodes(&self) -> Result<Vec<NodeId>, StorageError> {
        let mut ids = Vec::new();
        for item in self
            .backend
            .scan(Keyspace::Cluster, keys::CLUSTER_REMOVED_PREFIX, b"")
        {
            let (key, _) = item?;
            let id = keys::node_of_removed_key(&key).ok_or_else(|| StorageError::Corrupt {
                what: "removed node key",
                detail: format!("{} bytes", key.len()),
            })?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Every node admitted through a join (`RegisterNode`) and not removed,
    /// by id, with the addresses it registered.
    pub fn registered_nodes(&self) -> Result<Vec<(NodeId, crate::types::NodeInfo)>, StorageError> {
        let mut nodes = Vec::new();
        for item in self
            .backend
            .scan(Keyspace::Cluster, keys::CLUSTER_REGISTERED_PREFIX, b"")
        {
            let (key, value) = item?;
            let id = key
                .strip_prefix(keys::CLUSTER_REGISTERED_PREFIX)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StorageError::Corrupt {
                    what: "registered node key",
                    detail: format!("{} bytes", key.len()),
                })?;
            let node: crate::types::NodeInfo =
                crate::codec::decode(&value, crate::codec::STORED_BYTES_MAX).map_err(|e| {
                    StorageError::Corrupt {
                        what: "registered node",
                        detail: e.to_string(),
                    }
                })?;
            if !self.is_removed(id)? {
                nodes.push((id, node));
            }
        }
        Ok(nodes)
    }

    /// Whether node `id` was removed for good (it may never rejoin).
    pub fn is_removed(&self, id: NodeId) -> Result<bool, StorageError> {
        Ok(self
            .backend
            .get(Keyspace::Cluster, &keys::removed_node_key(id))?
            .is_some())
    }

    /// The cluster CA as `(cert_pem, key_pem)`, once one was set. The key is
    /// as the cluster layer stored it: sealed (see `Command::SetClusterCa`).
    pub fn cluster_ca(&self) -> Result<Option<(String, String)>, StorageError> {
        let record: Option<keys::ClusterCaRecord> =
            self.decode_one(Keyspace::Cluster, keys::CLUSTER_CA, "cluster ca")?;
        Ok(record.map(|record| (record.cert_pem, record.key_pem)))
    }

    /// The id the next applied `Command::AllocateNodeId` will return (on
    /// this node's applied state): 2 on a new cluster.
    pub fn next_node_id(&self) -> Result<NodeId, StorageError> {
        crate::apply::next_node_id(|key| Ok(self.backend.get(Keyspace::Cluster, key)?))
    }

    /// Events after each applied command that changes an app. A receiver
    /// that lags (`RecvError::Lagged`) must reload every app.
    pub fn subscribe(&self) -> broadcast::Receiver<AppliedEvent> {
        self.events.subscribe()
    }

    /// The index of the last entry applied to this node's state.
    pub fn last_applied_index(&self) -> Result<Option<u64>, StorageError> {
        Ok(read_last_applied(self.backend.as_ref())?.map(|log_id| log_id.index))
    }

    /// Makes all applied state durable. For a clean shutdown: call it after
    /// Raft has shut down (any task may call it; flushes are serialised
    /// inside the backend, and it blocks the calling thread on fsync).
    pub fn flush_state(&self) -> Result<(), StorageError> {
        Ok(self.backend.flush()?)
    }

    /// Bytes the state database takes on disk (sled growth is a known risk).
    pub fn size_on_disk_bytes(&self) -> Result<u64, StorageError> {
        Ok(self.backend.size_on_disk_bytes()?)
    }

    /// User `id` of `app` (with its password hash: the caller, the user
    /// service, never hands that out).
    pub fn user(&self, app: &str, id: &str) -> Result<Option<UserRecord>, StorageError> {
        self.decode_one(Keyspace::Users, &keys::user_key(app, id), "user record")
    }

    /// The id of the user of `app` whose normalised email is `email`.
    pub fn user_id_by_email(&self, app: &str, email: &str) -> Result<Option<String>, StorageError> {
        match self
            .backend
            .get(Keyspace::Users, &keys::user_email_key(app, email))?
        {
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| StorageError::Corrupt {
                    what: "user email index",
                    detail: "the user id is not UTF-8".into(),
                }),
            None => Ok(None),
        }
    }

    /// Up to `limit` users of `app` in id order, after the id `after`.
    pub fn users_list(
        &self,
        app: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, UserRecord)>, StorageError> {
        let prefix = keys::user_key(app, "");
        let start = match after {
            Some(after) => {
                let mut start = keys::user_key(app, after);
                start.push(0);
                start
            }
            None => prefix.clone(),
        };
        let mut users = Vec::new();
        for item in self
            .backend
            .scan(Keyspace::Users, &prefix, &start)
            .take(limit)
        {
            let (key, bytes) = item?;
            let id = key
                .get(prefix.len()..)
                .and_then(|id| std::str::from_utf8(id).ok())
                .ok_or_else(|| StorageError::Corrupt {
                    what: "user key",
                    detail: "the user id is not UTF-8".into(),
                })?;
            let record = codec::decode(&bytes, STORED_BYTES_MAX)
                .map_err(StorageError::codec("user record"))?;
            users.push((id.to_owned(), record));
        }
        Ok(users)
    }

    /// How many users `app` holds.
    pub fn users_count(&self, app: &str) -> Result<u64, StorageError> {
        Ok(self
            .decode_one(Keyspace::Users, &keys::users_count_key(app), "users count")?
            .unwrap_or(0))
    }

    /// The session of `app` whose token hash is `hash`, expired or not (the
    /// caller compares `expires_ms` with its clock).
    pub fn session(
        &self,
        app: &str,
        hash: &TokenHash,
    ) -> Result<Option<SessionRecord>, StorageError> {
        self.decode_one(Keyspace::Sessions, &keys::session_key(app, hash), "session")
    }

    /// The single-use token of `app` whose hash is `hash`, expired or not.
    pub fn user_token(
        &self,
        app: &str,
        hash: &TokenHash,
    ) -> Result<Option<TokenRecord>, StorageError> {
        self.decode_one(
            Keyspace::Users,
            &keys::user_token_key(app, hash),
            "user token",
        )
    }

    fn decode_one<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StorageError> {
        match self.backend.get(keyspace, key)? {
            Some(bytes) => Ok(Some(
                codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec(what))?,
            )),
            None => Ok(None),
        }
    }

    fn decode_all<T: serde::de::DeserializeOwned>(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        what: &'static str,
    ) -> Result<Vec<T>, StorageError> {
        let mut records = Vec::new();
        for item in self.backend.scan(keyspace, prefix, prefix) {
            let (_, bytes) = item?;
            records
                .push(codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec(what))?);
        }
        Ok(records)
    }
}

/// The membership the state holds (the default when none is stored yet).
pub(crate) fn read_membership(
    backend: &dyn Backend,
) -> Result<StoredMembership<NodeId, NodeInfo>, StorageError> {
    match backend.get(Keyspace::Meta, keys::META_MEMBERSHIP)? {
        Some(bytes) => {
            codec::decode(&bytes, STORED_BYTES_MAX).map_err(StorageError::codec("membership"))
        }
        None => Ok(StoredMembership::default()),
    }
}

pub(crate) fn read_last_applied(
    backend: &dyn Backend,
) -> Result<Option<LogId<NodeId>>, StorageError> {
    match backend.get(Keyspace::Meta, keys::META_LAST_APPLIED)? {
        Some(bytes) => Ok(Some(
            codec::decode(&bytes, STORED_BYTES_MAX)
                .map_err(StorageError::codec("last applied log id"))?,
        )),
        None => Ok(None),
    }
}
