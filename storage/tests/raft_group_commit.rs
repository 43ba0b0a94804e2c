//! Log flushes through a real (one-voter) openraft `Raft` with 64
//! concurrent writers.
//!
//! What this measures, and why it does not show grouping: openraft 0.9.25's
//! `RaftCore::append_to_log` (core/raft_core.rs, "a temp wrapper to make
//! non-blocking `append_to_log` a blocking") awaits each append's
//! `LogFlushed` callback before it handles the next client write. So the
//! leader never has two appends outstanding and the log store's group commit
//! has nothing to group: one flush per client write, whatever the disk. (The
//! flusher does group when appends overlap: see `log_store`'s unit test.)
//! Leader throughput on 0.9.25 therefore needs several commands per log
//! entry, proposed by the cluster layer. This test pins what the store does
//! itself: every write is applied and durable, and no append costs more than
//! one flush.

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
use picloud_storage::{
    Command, CommandResult, KvOp, KvOpResult, NodeId, NodeInfo, StorageOptions, TypeConfig,
};

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
async fn concurrent_client_writes_cost_at_most_one_flush_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = picloud_storage::open(dir.path(), &StorageOptions::default()).expect("open");
    let log_store = storage.log_store.clone();
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
        log_store.clone(),
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
    eprintln!("raft: {writes} concurrent client writes, {flushes} log flushes");
    assert!(
        flushes <= writes,
        "{flushes} log flushes for {writes} writes"
    );

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
}
