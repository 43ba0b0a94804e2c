//! Group commit through a real (one-voter) openraft `Raft`: openraft appends
//! once per client write, so concurrent writers must share log flushes.
//!
//! Grouping only happens when a flush takes longer than openraft takes to
//! hand over the next append. On this kind of VM sled's flush (it uses
//! `sync_file_range`) takes ~0.4 ms, about what a debug-build openraft needs
//! per write, so the log is wrapped in a backend whose flush costs what an SD
//! card's does on a Pi. The delay models the device; nothing waits on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, Raft};
use picloud_storage::backend::{
    Backend, BackendError, KeyValue, Keyspace, ScanItem, SledBackend, SledOptions, WriteBatch,
};
use picloud_storage::{
    Command, CommandResult, KvOp, KvOpResult, LogStore, NodeId, NodeInfo, StorageOptions,
    TypeConfig,
};

/// A flush on a Raspberry Pi's SD card takes several milliseconds.
const SD_CARD_FLUSH: Duration = Duration::from_millis(5);

/// sled with the flush latency of a slow device.
struct SlowDevice {
    inner: SledBackend,
    flush_latency: Duration,
}

impl Backend for SlowDevice {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.inner.get(keyspace, key)
    }

    fn insert(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<(), BackendError> {
        self.inner.insert(keyspace, key, value)
    }

    fn remove(&self, keyspace: Keyspace, key: &[u8]) -> Result<(), BackendError> {
        self.inner.remove(keyspace, key)
    }

    fn scan<'a>(
        &'a self,
        keyspace: Keyspace,
        prefix: &[u8],
        start: &[u8],
    ) -> Box<dyn Iterator<Item = ScanItem> + 'a> {
        self.inner.scan(keyspace, prefix, start)
    }

    fn last(&self, keyspace: Keyspace, prefix: &[u8]) -> Result<Option<KeyValue>, BackendError> {
        self.inner.last(keyspace, prefix)
    }

    fn apply_batch(&self, batch: WriteBatch) -> Result<(), BackendError> {
        self.inner.apply_batch(batch)
    }

    fn flush(&self) -> Result<(), BackendError> {
        std::thread::sleep(self.flush_latency);
        self.inner.flush()
    }

    fn size_on_disk_bytes(&self) -> Result<u64, BackendError> {
        self.inner.size_on_disk_bytes()
    }
}

/// A one-voter cluster never sends an RPC; every call reports the peer unreachable.
struct NoPeers;

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, NodeInfo, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
        "no peers in this test",
    )))
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        Err(unreachable())
    }
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: NodeId, _node: &NodeInfo) -> NoPeers {
        NoPeers
    }
}

const WRITERS: u64 = 64;
const WRITES_EACH: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_client_writes_share_log_flushes_on_a_slow_device() {
    let (writes, flushes) = concurrent_client_writes(Some(SD_CARD_FLUSH)).await;
    eprintln!(
        "raft group commit, {SD_CARD_FLUSH:?} flushes: {writes} client writes, {flushes} log flushes"
    );
    assert!(
        flushes * 4 <= writes,
        "{flushes} log flushes for {writes} writes: appends are not sharing flushes"
    );
}

/// On this machine's own disk: every write is durable and applied, and no
/// append costs more than one flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_client_writes_on_the_local_disk() {
    let (writes, flushes) = concurrent_client_writes(None).await;
    eprintln!("raft group commit, local disk: {writes} client writes, {flushes} log flushes");
    assert!(
        flushes <= writes,
        "{flushes} log flushes for {writes} writes"
    );
}

/// Runs `WRITERS` concurrent writers through one `Raft`; returns (writes, flushes).
async fn concurrent_client_writes(flush_latency: Option<Duration>) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = picloud_storage::open(dir.path(), &StorageOptions::default()).expect("open");
    let log_store = match flush_latency {
        Some(flush_latency) => {
            let inner = SledBackend::open(
                &dir.path().join("slow-log"),
                SledOptions {
                    cache_capacity_bytes: 8 << 20,
                },
            )
            .expect("open slow log");
            LogStore::with_backend(Arc::new(SlowDevice {
                inner,
                flush_latency,
            }))
            .expect("log store")
        }
        None => storage.log_store.clone(),
    };
    let reader = storage.reader.clone();
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    }
    .validate()
    .expect("config");
    let raft = Raft::new(
        1,
        Arc::new(config),
        NoPeers,
        storage.log_store,
        storage.state_machine,
    )
    .await
    .expect("raft");
    raft.initialize(BTreeMap::from([(1, NodeInfo::default())]))
        .await
        .expect("initialize");
    raft.wait(Some(Duration::from_secs(10)))
        .current_leader(1, "single voter leads")
        .await
        .expect("leader");
    let created = raft
        .client_write(Command::AppCreate {
            app: "app".into(),
            now_ms: 1,
        })
        .await
        .expect("create");
    assert_eq!(created.data, CommandResult::Done);

    let flushes_before = log_store.flush_count();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let raft = raft.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..WRITES_EACH {
                let response = raft
                    .client_write(Command::Kv {
                        app: "app".into(),
                        op: KvOp::Incr {
                            key: format!("counter/{}", writer % 4),
                            by: 1,
                        },
                        now_ms: 2,
                    })
                    .await
                    .expect("write");
                assert!(matches!(
                    response.data,
                    CommandResult::Kv(KvOpResult::Incr { .. })
                ));
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let flushes = log_store.flush_count() - flushes_before;
    let writes = WRITERS * WRITES_EACH;

    let mut total = 0;
    for counter in 0..4 {
        let value = reader
            .kv_get("app", &format!("counter/{counter}"), 3)
            .expect("get")
            .expect("counter");
        total += String::from_utf8(value)
            .expect("utf8")
            .parse::<u64>()
            .expect("number");
    }
    assert_eq!(total, writes);

    raft.shutdown().await.expect("shutdown");
    log_store.flush().await.expect("flush log");
    reader.flush_state().expect("flush state");
    (writes, flushes)
}
