//! `Node`: one running Raft member and the verbs the upper layers use.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{Raft, SnapshotPolicy};
use picloud_storage::state_view::{StateView, ViewError};
use picloud_storage::{Command, CommandResult, NodeId, NodeInfo, StateReader, TypeConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::batcher::{BatchLimits, Batcher, Proposal};
use crate::boot::{BootPlan, JoinKeys, JoinTarget, TlsFiles, plan_boot};
use crate::config::{ClusterConfig, READY_APPLY_LAG_MAX};
use crate::disk::DiskGuard;
use crate::duty::Duty;
use crate::error::ClusterError;
use crate::files::{Files, MembersFn};
use crate::histogram::{Histogram, HistogramSnapshot};
use crate::identity::{self, Identity};
use crate::proposer::{
    Proposer, leader_changed, pause_before_retry, redirect_unless_leaderless, stopped,
    wait_for_leader,
};
use crate::read_batch::{ReadBatches, ReadLease};
use crate::sealed;
use crate::status::{
    ClusterStatus, NodeStatus, Reachability, Role, apply_key_ids, cluster_status, readiness,
};
use crate::transport::logs::{LogSource, PeerLogs};
use crate::transport::token::SECRET_BYTES;
use crate::transport::{
    BlockService, ClusterCa, ForwardClient, ForwardError, ForwardFuture, ForwardHandler,
    ForwardReply, ForwardRequest, JoinAsk, JoinConnection, JoinHandler, JoinOutcome, JoinToken,
    NodeCertificate, PeerEndpoint, PubSubLinks, QuicNetwork, RaftForwardHandler, RaftRpcConfig,
    answer_join, serve_peers, wait_applied,
};

/// The id the first node of a new cluster takes.
pub const FIRST_NODE_ID: NodeId = 1;

/// What [`Node::member_logs`] asks a member for.
#[derive(Debug, Clone, Copy)]
pub struct MemberLogsRequest<'a> {
    pub app: &'a str,
    /// The first position wanted (0: from the oldest line kept).
    pub from_seq: u64,
    /// At most this many lines, the newest of those asked.
    pub limit: usize,
}

/// How long `cluster_status` waits for the leader's view before answering
/// with this node's own.
const STATUS_FROM_LEADER_WAIT_MS: u64 = 1_000;

/// How long `cluster_status` waits for each member's master key id (asked
/// of all at once); a member silent for longer shows no key id.
const KEY_ID_WAIT_MS: u64 = 1_000;

/// A running Raft member with its storage.
#[derive(Clone)]
pub struct Node {
    id: NodeId,
    raft: Raft<TypeConfig>,
    reader: StateReader,
    config: Arc<ClusterConfig>,
    proposer: Arc<Proposer>,
    proposals: mpsc::Sender<Proposal>,
    endpoint: Arc<PeerEndpoint>,
    network: QuicNetwork,
    ca: Arc<ClusterCa>,
    /// The data disk's free-space reserve, checked before every write is
    /// proposed (here and, on the leader, for forwarded writes).
    disk: Arc<DiskGuard>,
    /// Ephemeral pub/sub to and from the other members.
    pubsub: Arc<PubSubLinks>,
    /// Files' blocks, here and on the other members.
    files: Arc<Files>,
    /// Leadership checks shared by the linearizable reads on this node
    /// while it leads, and the read lease a confirmed check grants.
    read_batches: ReadBatches,
    read_lease: Arc<ReadLease>,
    /// What answers other members' `Logs` requests: the app runtime's log
    /// book, handed over once the runtime made it (after the node started).
    logs: Arc<std::sync::OnceLock<Arc<dyn LogSource>>>,
}

impl Node {
    /// Opens the data dir and starts Raft. On the very first start of a data dir
    /// it initialises a one-voter cluster with this node as its only member.
    ///
    /// The node's long-running loops (write batcher, peer accept loop) come
    /// back as [`Duty`]s: the caller must start them
    /// at once under its supervisor (writes wait for the batcher).
    pub async fn start(
        data_dir: &Path,
        info: NodeInfo,
        config: ClusterConfig,
        storage_options: &picloud_storage::StorageOptions,
    ) -> Result<(Node, Vec<Duty>), ClusterError> {
        Self::start_with(data_dir, info, config, storage_options, None).await
    }

    /// [`Node::start`], joining an existing cluster through `join` when this
    /// data dir has never held a node. A data dir that has (a restart) keeps
    /// its identity and ignores `join`.
    ///
    /// A join with [`JoinKeys::Receive`] receives the cluster's secrets
    /// master keys, has them stored, and runs with them in place of
    /// `config.secret_keys` (see [`Node::master_keys`]).
    pub async fn start_with(
        data_dir: &Path,
        info: NodeInfo,
        mut config: ClusterConfig,
        storage_options: &picloud_storage::StorageOptions,
        join: Option<JoinTarget>,
    ) -> Result<(Node, Vec<Duty>), ClusterError> {
        std::fs::create_dir_all(data_dir).map_err(|e| ClusterError::Identity {
            path: data_dir.display().to_string(),
            message: e.to_string(),
        })?;
        if data_dir
            .join(picloud_storage::restore::RESTORING_MARKER_FILE)
            .exists()
        {
            return Err(ClusterError::Identity {
                path: data_dir.display().to_string(),
                message: "a `picloud restore` into this directory did not finish; delete the directory and run the restore again".to_string(),
            });
        }
        let existing = identity::load(data_dir)?;
        let tls_dir = data_dir.join("tls");
        let tls_error = |e: crate::transport::CaError| ClusterError::Transport {
            message: e.to_string(),
        };
        let load_tls = || -> Result<(ClusterCa, NodeCertificate), ClusterError> {
            Ok((
                ClusterCa::load(&tls_dir).map_err(tls_error)?,
                NodeCertificate::load(&tls_dir).map_err(tls_error)?,
            ))
        };
        let (id, ca, certificate) =
            match plan_boot(existing.as_ref(), join, TlsFiles::in_dir(&tls_dir)) {
                BootPlan::Restart { node_id } => {
                    let (ca, certificate) = load_tls()?;
                    (node_id, ca, certificate)
                }
                BootPlan::FirstStart { create_tls: false } => {
                    let (ca, certificate) = load_tls()?;
                    (FIRST_NODE_ID, ca, certificate)
                }
                BootPlan::FirstStart { create_tls: true } => {
                    let (ca, certificate) = create_tls_identity(&tls_dir, FIRST_NODE_ID, &info)?;
                    (FIRST_NODE_ID, ca, certificate)
                }
                BootPlan::Join(target) => {
                    let mut joined = join_cluster(&target, &info).await?;
                    keep_received_keys(data_dir, &target, &mut joined, &mut config)?;
                    std::fs::create_dir_all(&tls_dir).map_err(|e| ClusterError::Transport {
                        message: format!("{}: {e}", tls_dir.display()),
                    })?;
                    joined.node_cert.store(&tls_dir).map_err(tls_error)?;
                    joined.ca.store(&tls_dir).map_err(tls_error)?;
                    // The id came from the cluster's log: remember it before
                    // anything else, so a restart never asks for another.
                    identity::store(
                        data_dir,
                        &Identity {
                            node_id: joined.node_id,
                        },
                    )?;
                    tracing::info!(
                        node_id = joined.node_id,
                        "joined the cluster; waiting to be added as a learner"
                    );
                    (joined.node_id, joined.ca, joined.node_cert)
                }
                BootPlan::Refuse(refusal) => {
                    return Err(ClusterError::Identity {
                        path: data_dir.display().to_string(),
                        message: refusal.to_string(),
                    });
                }
            };
        let raft_dir = data_dir.join("raft");
        // The first start after `picloud restore`: this node's addresses
        // join the restored one-node membership before Raft reads it.
        if picloud_storage::restore::finish_restore(
            &raft_dir,
            id,
            &info,
            storage_options.cache_capacity_bytes,
        )? {
            tracing::info!(node_id = id, "first start of a restored backup");
        }
        let storage = picloud_storage::open(&raft_dir, storage_options)?;
        let disk = Arc::new(DiskGuard::new(data_dir, config.disk_reserve_bytes));

        let raft_config = openraft::Config {
            cluster_name: "picloud".to_string(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: config.logs_kept_after_snapshot,
            max_payload_entries: config.append_entries_max,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft {
            message: e.to_string(),
        })?;

        // The node's QUIC endpoint (mutual TLS under the cluster CA) carries
        // Raft RPCs and forwarded requests. A one-voter cluster sends none, but
        // binds it so the path is the one a cluster uses.
        let peer_addr: std::net::SocketAddr =
            info.peer.parse().map_err(|e| ClusterError::Transport {
                message: format!("peer address {:?}: {e}", info.peer),
            })?;
        let endpoint = Arc::new(
            PeerEndpoint::bind(peer_addr, &ca, &certificate).map_err(|e| {
                ClusterError::Transport {
                    message: e.to_string(),
                }
            })?,
        );
        let rpc_config = RaftRpcConfig {
            votes_after: Some(
                Instant::now() + Duration::from_millis(config.election_timeout_max_ms),
            ),
            ..RaftRpcConfig::default()
        };
        let network = QuicNetwork::new(endpoint.clone(), rpc_config.clone());

        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            network.clone(),
            storage.log_store,
            storage.state_machine,
        )
        .await
        .map_err(|e| ClusterError::Raft {
            message: e.to_string(),
        })?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Stopped {
                message: e.to_string(),
            })?;
        if initialized {
            hold_elections_after_restart(&raft, id, &config, &network);
            snapshot_a_purged_log(&raft).await?;
        }
        // Only the first node of a new cluster initialises; a joined node waits
        // for the leader to add it.
        if !initialized && id == FIRST_NODE_ID {
            let mut members = BTreeMap::new();
            members.insert(id, info);
            raft.initialize(members)
                .await
                .map_err(|e| ClusterError::Raft {
                    message: format!("initialise one-voter cluster: {e}"),
                })?;
        }
        // The identity is written after the membership entry is durable, so a
        // crash between the two leaves a data dir that initialises again
        // rather than one that claims an id it never registered.
        if existing.is_none() {
            identity::store(data_dir, &Identity { node_id: id })?;
        }

        let config = Arc::new(config);
        let read_lease = Arc::new(ReadLease::new(Duration::from_millis(
            config.election_timeout_max_ms,
        )));
        let forward_client = ForwardClient::new(
            network.connections().clone(),
            Duration::from_millis(config.write_timeout_ms),
        );
        let proposer = Arc::new(Proposer {
            id,
            raft: raft.clone(),
            config: config.clone(),
            forward: forward_client,
            contacts: network.contacts().clone(),
            commit_seconds: Histogram::default(),
        });
        let (proposals, queue) = mpsc::channel(config.write_queue_max.max(1));
        let batcher = Arc::new(Batcher::new(
            proposer.clone(),
            queue,
            BatchLimits {
                commands_max: config.batch_commands_max,
                bytes_max: config.batch_bytes_max,
                inflight_max: config.batches_inflight_max,
            },
        ));
        let pubsub = Arc::new(PubSubLinks::new(network.connections().clone()));
        let files = Files::open(
            data_dir,
            id,
            disk.clone(),
            network.connections().clone(),
            file_members(raft.clone(), storage.reader.clone()),
            config.files.clone(),
        )
        .map_err(|source| ClusterError::BlockStore {
            path: data_dir
                .join(crate::files::store::BLOCKS_DIR)
                .display()
                .to_string(),
            source,
        })?;
        let node = Node {
            id,
            raft,
            reader: storage.reader,
            config,
            proposer,
            proposals,
            endpoint,
            network,
            ca: Arc::new(ca),
            disk,
            pubsub,
            files: Arc::new(files),
            read_batches: ReadBatches::default(),
            read_lease,
            logs: Arc::default(),
        };
        let forward = Arc::new(NodeForwardHandler {
            raft: RaftForwardHandler::new(node.raft.clone()),
            node: node.clone(),
        });
        let joins = Arc::new(NodeJoins {
            node: node.clone(),
            permits: tokio::sync::Semaphore::new(JOINS_IN_FLIGHT_MAX),
        });
        let duties = vec![
            Duty::new("batcher", move || batcher.clone().run()),
            Duty::new("peers", {
                let (endpoint, raft) = (node.endpoint.clone(), node.raft.clone());
                move || {
                    serve_peers(
                        endpoint.clone(),
                        raft.clone(),
                        rpc_config.clone(),
                        Some(forward.clone() as Arc<dyn ForwardHandler>),
                        Some(joins.clone() as Arc<dyn JoinHandler>),
                    )
                }
            }),
        ];
        Ok((node, duties))
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Ephemeral pub/sub links to the other members.
    pub fn pubsub(&self) -> &PubSubLinks {
        &self.pubsub
    }

    /// Files' blocks: upload, read, repair and GC.
    pub fn files(&self) -> &Arc<Files> {
        &self.files
    }

    /// The other members (voters and learners) with their peer addresses,
    /// as this node's Raft membership has them.
    pub fn peer_addresses(&self) -> Vec<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, info)| (*id, info.peer.clone()))
            .collect()
    }

    /// Serves other members' `Logs` requests from `source` from now on;
    /// until then they are refused. Only the first source set counts.
    pub fn serve_logs(&self, source: Arc<dyn LogSource>) {
        let _ = self.logs.set(source);
    }

    /// Asks `member` (at `peer`) for its log lines of `app` from `from_seq`
    /// on (the last `limit`), waiting at most `wait`. `None` when the member
    /// did not answer in time, could not be reached, or refused.
    pub async fn member_logs(
        &self,
        member: NodeId,
        peer: &str,
        request: MemberLogsRequest<'_>,
        wait: Duration,
    ) -> Option<PeerLogs> {
        let request = ForwardRequest::Logs {
            app: request.app.to_string(),
            from_seq: request.from_seq,
            limit: u32::try_from(request.limit).unwrap_or(u32::MAX),
        };
        let asked =
            tokio::time::timeout(wait, self.proposer.forward.call(member, peer, &request)).await;
        match asked {
            Ok(Ok(ForwardReply::Logs(logs))) => Some(logs),
            _ => None,
        }
    }

    /// What the leader's membership duty plans from: `Ok(None)` while this
    /// node does not lead, `Err(Stopped)` once Raft stopped.
    pub fn membership_view(
        &self,
    ) -> Result<Option<crate::membership::MembershipView>, ClusterError> {
        crate::membership::view(&self.raft, &self.reader, self.id)
    }

    /// Makes one membership change; a failure is only logged (the duty
    /// plans again on its next tick).
    pub async fn change_membership(&self, change: crate::membership::MembershipChange) {
        crate::membership::execute(&self.raft, change).await;
    }

    /// The data disk's free-space reserve this node checks writes against.
    pub fn disk(&self) -> &DiskGuard {
        &self.disk
    }

    /// The local replicated state. Reads from it are `stale` unless preceded by
    /// [`Node::read_barrier`].
    pub fn reader(&self) -> &StateReader {
        &self.reader
    }

    /// Proposes `command`, waits until it is committed and applied on this node,
    /// and returns what `apply` produced. Small commands go through the batcher
    /// (many writes, one log entry); large ones are proposed on their own.
    pub async fn write(&self, command: Command) -> Result<CommandResult, ClusterError> {
        let size = crate::batcher::payload_bytes(&command);
        // Refused before it enters the log: past this point the entry must
        // fit in the reserve (see `crate::disk`). The claim on free space
        // lasts until this write is applied here.
        let _admission = self.disk.admit(&command, size as u64)?;
        if matches!(command, Command::Deploy(_) | Command::Batch(_))
            || size > self.config.batch_bytes_max
        {
            return self.proposer.propose(command).await;
        }
        let (reply, result) = oneshot::channel();
        let proposal = Proposal { command, reply };
        match tokio::time::timeout(self.config.write_timeout(), self.proposals.send(proposal)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(ClusterError::Stopped {
                    message: "the write batcher stopped".to_string(),
                });
            }
            Err(_) => return Err(ClusterError::overloaded()),
        }
        result.await.unwrap_or_else(|_| {
            Err(ClusterError::Stopped {
                message: "the write batcher dropped a write".to_string(),
            })
        })
    }

    /// Returns once a read of local state reflects every write acknowledged
    /// before this call (read-index on the leader, then wait for local apply).
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        // While this node leads, a read needs no round under the read lease,
        // and shares one otherwise (one round serves every read that arrived
        // before it began); a failed round sends each read down the full
        // path below.
        if self.leader_may_read().await {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.leader_wait();
        loop {
            self.wait_for_leader(deadline).await?;
            let attempt =
                tokio::time::timeout(self.config.write_timeout(), self.raft.ensure_linearizable())
                    .await;
            match attempt {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                    match (forward.leader_id, forward.leader_node) {
                        (Some(leader), Some(info)) if leader != self.id => {
                            let asked = tokio::select! {
                                result = self.proposer.forward.read_index_via(leader, &info.peer) => result.map_err(|e| e.to_string()),
                                () = leader_changed(&self.raft, leader) => Err("the leader changed".to_string()),
                            };
                            match asked {
                                Ok(index) => {
                                    return wait_applied(
                                        &self.raft,
                                        index,
                                        self.config.write_timeout(),
                                    )
                                    .await;
                                }
                                Err(error) => {
                                    tracing::debug!(%error, "read index from the leader failed; retrying");
                                    pause_before_retry(&self.config, deadline).await?;
                                }
                            }
                        }
                        (leader, _) => redirect_unless_leaderless(self.id, leader)?,
                    }
                }
                Ok(Err(RaftError::Fatal(fatal))) => return Err(stopped(fatal)),
                Ok(Err(other)) => {
                    // Quorum could not be confirmed; treat like a missing leader.
                    if Instant::now() >= deadline {
                        return Err(ClusterError::Raft {
                            message: other.to_string(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(self.config.heartbeat_interval_ms))
                        .await;
                }
                Err(_) => {
                    return Err(ClusterError::Timeout {
                        operation: "linearizable read",
                        waited_ms: self.config.write_timeout_ms,
                    });
                }
            }
        }
    }

    /// A point-in-time view of the whole state that holds every write
    /// acknowledged before this call: a read barrier, then a view of this
    /// node's state as of the entry it applied last (at or after the
    /// barrier's index). Applies go on while it is read; see
    /// `picloud_storage::state_view`. `kept_bytes_max` caps the old values
    /// the view keeps for keys written during its scan.
    pub async fn backup_view(&self, kept_bytes_max: u64) -> Result<StateView, ClusterError> {
        self.read_barrier().await?;
        let reader = self.reader.clone();
        // Opening waits for the entry being applied, if any: off the runtime.
        tokio::task::spawn_blocking(move || reader.open_view(kept_bytes_max))
            .await
            .map_err(|e| ClusterError::Stopped {
                message: format!("opening the backup view: {e}"),
            })?
            .map_err(|error| match error {
                ViewError::Storage(error) => ClusterError::Storage(error),
                ViewError::Busy => ClusterError::BackupBusy,
                ViewError::Broken(message) => ClusterError::Raft { message },
            })
    }

    /// Whether this node leads and its applied state holds every write
    /// acknowledged so far: at once under the read lease, else after a
    /// leadership check shared with the reads arriving meanwhile (which
    /// renews the lease). See `crate::read_batch`.
    async fn leader_may_read(&self) -> bool {
        let term = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.current_leader != Some(self.id) {
                return false;
            }
            metrics.current_term
        };
        if self.read_lease.holds(term, Instant::now()) {
            return true;
        }
        let began = Instant::now();
        let (raft, timeout) = (self.raft.clone(), self.config.write_timeout());
        let confirmed = self
            .read_batches
            .confirm(move || async move {
                matches!(
                    tokio::time::timeout(timeout, raft.ensure_linearizable()).await,
                    Ok(Ok(_))
                )
            })
            .await;
        if confirmed {
            self.read_lease.extend(term, began);
        }
        confirmed
    }

    /// Waits (bounded by `deadline`) until some node is known to lead.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<(), ClusterError> {
        wait_for_leader(
            &self.raft,
            self.id,
            deadline,
            &self.config,
            self.network.contacts(),
        )
        .await
    }

    /// On the first start of a cluster, puts the cluster CA and a fresh join
    /// secret into the replicated state, so every member can admit joiners
    /// and print the token. Both are sealed under the secrets master key
    /// first (see `sealed`): the log holds ciphertext only. Returns whether
    /// anything was created.
    pub async fn ensure_cluster_secrets(&self, now_ms: u64) -> Result<bool, ClusterError> {
        let mut created = false;
        if self.reader.cluster_ca()?.is_none() {
            self.write(Command::SetClusterCa {
                cert_pem: self.ca.cert_pem().to_string(),
                key_pem: sealed::seal_ca_key(self.secret_keys(), &self.ca.key_pem())?,
            })
            .await?;
            created = true;
        }
        if self.reader.join_secret()?.is_none() {
            let token = JoinToken::generate(&self.ca.ca_hash());
            self.write(Command::SetJoinSecret {
                secret: sealed::seal_join_secret(self.secret_keys(), &token.secret)?,
                now_ms,
            })
            .await?;
            created = true;
        }
        Ok(created)
    }

    /// Opens the cluster secrets this node's state holds (the CA key and the
    /// join secret), so a node started with the wrong master key hears so at
    /// start, naming the key ids, rather than at its first join. Returns
    /// whether both were there to check (a new joiner has them only once the
    /// log reached it: see [`Node::cluster_secrets_replicated`]).
    pub fn check_cluster_secrets(&self) -> Result<bool, ClusterError> {
        let ca = self.reader.cluster_ca()?;
        if let Some((_, key_pem)) = &ca {
            sealed::open_ca_key(self.secret_keys(), key_pem)?;
        }
        let secret = self.reader.join_secret()?;
        if let Some(secret) = &secret {
            sealed::open_join_secret(self.secret_keys(), secret)?;
        }
        Ok(ca.is_some() && secret.is_some())
    }

    /// Returns once this node's state holds the cluster's join secret (at
    /// once, but for a node that just joined), or Raft stopped.
    pub async fn cluster_secrets_replicated(&self) {
        let mut metrics = self.raft.metrics();
        loop {
            if matches!(self.reader.join_secret(), Ok(Some(_))) {
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// The master keys the cluster secrets are sealed under, if this node has them.
    fn secret_keys(&self) -> Option<&picloud_storage::secret_box::Keyring> {
        self.config.secret_keys.as_deref()
    }

    /// The secrets master keys this node runs with: the configured ones, or
    /// those a join received.
    pub fn master_keys(&self) -> Option<Arc<picloud_storage::secret_box::Keyring>> {
        self.config.secret_keys.clone()
    }

    /// The id of this node's current master key, if it has one.
    pub fn key_id(&self) -> Option<String> {
        self.secret_keys().map(|keys| keys.current().id_hex())
    }

    /// The join secret from the replicated state, opened; `None` until
    /// [`Node::ensure_cluster_secrets`] ran.
    fn join_secret(&self) -> Result<Option<[u8; SECRET_BYTES]>, ClusterError> {
        match self.reader.join_secret()? {
            Some(stored) => Ok(Some(sealed::open_join_secret(self.secret_keys(), &stored)?)),
            None => Ok(None),
        }
    }

    /// The join token (`pct1.<ca hash>.<secret>`) a new node passes to
    /// `picloud serve --join`, from the replicated secret. `None` until
    /// [`Node::ensure_cluster_secrets`] ran.
    pub fn join_token(&self) -> Result<Option<String>, ClusterError> {
        Ok(self.join_secret()?.map(|secret| {
            JoinToken {
                ca_hash: self.ca.ca_hash(),
                secret,
            }
            .encode()
        }))
    }

    /// Every member as this node sees it (`picloud cluster status`): the
    /// cluster as the leader sees it (asked over QUIC when this node follows;
    /// bounded), or as this node sees it when there is no leader or it does
    /// not answer in time; with each member's master key id as the member
    /// itself reports it (asked of all at once, bounded).
    pub async fn cluster_status(&self) -> ClusterStatus {
        let mut status = self.leader_or_local_status().await;
        let mut asks = tokio::task::JoinSet::new();
        for member in status.nodes.iter().filter(|m| m.id != self.id) {
            let (forward, id, peer) = (
                self.proposer.forward.clone(),
                member.id,
                member.peer.clone(),
            );
            asks.spawn(async move {
                let asked = tokio::time::timeout(
                    Duration::from_millis(KEY_ID_WAIT_MS),
                    forward.call(id, &peer, &ForwardRequest::KeyId),
                )
                .await;
                match asked {
                    Ok(Ok(ForwardReply::KeyId(key_id))) => (id, key_id),
                    _ => (id, None),
                }
            });
        }
        let mut key_ids = BTreeMap::from([(self.id, self.key_id())]);
        while let Some(answer) = asks.join_next().await {
            if let Ok((id, key_id)) = answer {
                key_ids.insert(id, key_id);
            }
        }
        apply_key_ids(&mut status, &key_ids);
        status
    }

    /// The cluster as the leader sees it, or as this node does.
    async fn leader_or_local_status(&self) -> ClusterStatus {
        let (leader, peer) = {
            let metrics = self.raft.metrics().borrow().clone();
            let leader = metrics.current_leader.filter(|leader| *leader != self.id);
            let peer = leader.and_then(|leader| {
                metrics
                    .membership_config
                    .membership()
                    .get_node(&leader)
                    .map(|info| info.peer.clone())
            });
            (leader, peer)
        };
        if let (Some(leader), Some(peer)) = (leader, peer) {
            let asked = tokio::time::timeout(
                Duration::from_millis(STATUS_FROM_LEADER_WAIT_MS),
                self.proposer
                    .forward
                    .call(leader, &peer, &ForwardRequest::Status),
            )
            .await;
            if let Ok(Ok(ForwardReply::Status(status))) = asked {
                return status;
            }
        }
        self.local_cluster_status()
    }

    /// The cluster as this node sees it (full only on the leader).
    pub fn local_cluster_status(&self) -> ClusterStatus {
        let mut status =
            cluster_status(self.id, &self.raft.metrics().borrow(), &self.reachability());
        status.files_repair_pending = self.files.repair_pending();
        status
    }

    /// How this node judges whether a member is reachable.
    fn reachability(&self) -> Reachability<impl Fn(NodeId) -> Option<u64> + '_> {
        let contacts = self.network.contacts();
        Reachability {
            contact_ms: |peer| contacts.since_ms(peer),
            uptime_ms: contacts.uptime_ms(),
            unreachable_after_ms: self.config.unreachable_after_ms(),
        }
    }

    /// Whether this node may take traffic (`/_/ready`): a reachable quorum,
    /// a leader it hears from, and its log applied within
    /// [`READY_APPLY_LAG_MAX`] entries. `Err` says why not. Local only: a
    /// readiness probe must answer even when no other node does.
    pub fn readiness(&self) -> Result<(), String> {
        let metrics = self.raft.metrics().borrow().clone();
        let status = cluster_status(self.id, &metrics, &self.reachability());
        readiness(self.id, &metrics, &status, READY_APPLY_LAG_MAX)
    }

    /// A watch that turns `Some(reason)` once this node learns it was removed
    /// from the cluster: a member refused its connection as removed, or its
    /// own replicated state says so. The node must then stop; serving on
    /// would only disturb the members with votes they refuse.
    pub fn removed(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.endpoint.removed()
    }

    /// Returns the reason once this node is removed from the cluster (see
    /// [`Node::removed`]), also when the removal is applied here while it
    /// runs; never returns if Raft stops first.
    pub async fn wait_removed(&self) -> String {
        let mut removed = self.endpoint.removed();
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(reason) = removed.borrow_and_update().clone() {
                return reason;
            }
            // Every applied entry changes the metrics, the removal among them.
            if matches!(self.reader.is_removed(self.id), Ok(true)) {
                self.endpoint.mark_removed(removed_message(self.id));
                continue;
            }
            tokio::select! {
                changed = removed.changed() => if changed.is_err() { std::future::pending::<()>().await },
                changed = metrics.changed() => if changed.is_err() { std::future::pending::<()>().await },
            }
        }
    }

    /// This node's current view of the cluster.
    /// Raft commit latency on this node: from proposing a write here to it
    /// being applied here (forwarded writes included), successes only.
    pub fn commit_seconds(&self) -> HistogramSnapshot {
        self.proposer.commit_seconds.snapshot()
    }

    /// Entries in this node's Raft log not yet purged (compacted into a
    /// snapshot): `last_log_index - purged_index`.
    pub fn log_entries(&self) -> u64 {
        let metrics = self.raft.metrics().borrow().clone();
        let last = metrics.last_log_index;
        let purged = metrics.purged.map(|log_id| log_id.index);
        match (last, purged) {
            (Some(last), Some(purged)) => last.saturating_sub(purged),
            // Nothing purged yet: the log starts at index 0.
            (Some(last), None) => last + 1,
            (None, _) => 0,
        }
    }

    pub fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let role = Role::from(metrics.state);
        let membership = metrics.membership_config.membership();
        NodeStatus {
            id: self.id,
            role,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|log_id| log_id.index),
            voters: membership.voter_ids().collect(),
            nodes: membership
                .nodes()
                .map(|(id, info)| (*id, info.clone()))
                .collect(),
        }
    }

    /// Stops Raft and flushes local state so the next start replays nothing it
    /// does not have to.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| ClusterError::Stopped {
                message: e.to_string(),
            })?;
        self.network.close_all();
        self.endpoint.close();
        self.reader.flush_state()?;
        Ok(())
    }
}

/// On the first start of a new cluster: creates the cluster CA and a
/// certificate for this node in `dir`.
fn create_tls_identity(
    dir: &Path,
    id: NodeId,
    info: &NodeInfo,
) -> Result<(ClusterCa, NodeCertificate), ClusterError> {
    let tls_error = |e: crate::transport::CaError| ClusterError::Transport {
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| ClusterError::Transport {
        message: format!("{}: {e}", dir.display()),
    })?;
    let ca = ClusterCa::create().map_err(tls_error)?;
    let names = certificate_names(info);
    let certificate = ca.issue_node_cert(id, &names).map_err(tls_error)?;
    // The node certificate first: a crash in between leaves no CA, so the
    // next start makes both again instead of a CA without a node certificate.
    certificate.store(dir).map_err(tls_error)?;
    ca.store(dir).map_err(tls_error)?;
    Ok((ca, certificate))
}

/// Stores the master keys a join received (when this node asked for them)
/// and runs with them. Called before anything else of the join is stored,
/// so a node never runs with keys it would not have after a restart.
fn keep_received_keys(
    data_dir: &Path,
    target: &JoinTarget,
    joined: &mut crate::transport::Joined,
    config: &mut ClusterConfig,
) -> Result<(), ClusterError> {
    let (Some(keys), JoinKeys::Receive { store }) = (joined.master_keys.take(), &target.keys)
    else {
        return Ok(());
    };
    store(&keys).map_err(|message| ClusterError::Identity {
        path: data_dir.display().to_string(),
        message: format!("storing the cluster's secrets master key received at join: {message}"),
    })?;
    tracing::info!(
        key_id = %keys.current().id_hex(),
        "received the cluster's secrets master key at join"
    );
    config.secret_keys = Some(Arc::new(keys));
    Ok(())
}

/// Joins a new node handles at once; more wait for the next try.
const JOINS_IN_FLIGHT_MAX: usize = 4;

/// How long a member gives one join handshake.
const JOIN_TIMEOUT_MS: u64 = 30_000;

/// How long one join attempt waits for the member's QUIC handshake. A member
/// answers in milliseconds; UDP has no "connection refused", so silence this
/// long means nothing answers at that address yet.
const JOIN_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// The pause after the first failed join attempt; it doubles up to
/// [`JOIN_RETRY_PAUSE_MAX_MS`].
const JOIN_RETRY_PAUSE_MIN_MS: u64 = 250;
const JOIN_RETRY_PAUSE_MAX_MS: u64 = 4_000;

/// The joiner's side: proves the token to the member at `target.addr`
/// (checking the cluster CA before the secret is sent) and receives an id,
/// the CA, this node's certificate and, when asked, the master keys.
///
/// Attempts that may succeed later (nothing answers yet, no leader) are
/// retried with a WARN line each, naming the address, until
/// `target.timeout_ms` has passed; a refusal (wrong token, another key) ends
/// the join at once.
async fn join_cluster(
    target: &JoinTarget,
    info: &NodeInfo,
) -> Result<crate::transport::Joined, ClusterError> {
    let token = JoinToken::parse(&target.token).map_err(|e| ClusterError::Transport {
        message: format!("join token: {e}"),
    })?;
    let ask = JoinAsk {
        node: info.clone(),
        names: certificate_names(info),
        key_id: match &target.keys {
            JoinKeys::Configured { key_id } => Some(key_id.clone()),
            JoinKeys::Receive { .. } => None,
        },
    };
    let addr = target.addr;
    let deadline = Instant::now() + Duration::from_millis(target.timeout_ms);
    let left_ms = || {
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64
    };
    let mut pause_ms = JOIN_RETRY_PAUSE_MIN_MS;
    let mut attempt = 1u32;
    loop {
        let budget_ms = left_ms().max(1);
        let tried = crate::transport::join(
            addr,
            &token,
            ask.clone(),
            JOIN_CONNECT_TIMEOUT_MS.min(budget_ms),
            budget_ms,
        )
        .await;
        let error = match tried {
            Ok(joined) => return Ok(joined),
            Err(error) => error,
        };
        if !error.is_retryable() {
            return Err(ClusterError::Transport {
                message: format!("joining through {addr}: {error}"),
            });
        }
        let left = left_ms();
        if left <= pause_ms {
            return Err(ClusterError::Transport {
                message: format!(
                    "gave up joining the cluster through {addr} after {} ms ({attempt} attempt(s); --join-timeout-ms): {error}; check that a member's --peer address is {addr} and that UDP to it is not blocked",
                    target.timeout_ms
                ),
            });
        }
        tracing::warn!(
            %addr,
            attempt,
            "join through {addr} failed (attempt {attempt}): {error}; retrying in {pause_ms} ms ({left} ms left of --join-timeout-ms)"
        );
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        pause_ms = (pause_ms * 2).min(JOIN_RETRY_PAUSE_MAX_MS);
        attempt += 1;
    }
}

/// The member's side of a join: any member admits (the id is allocated and
/// the node registered through the log, forwarded to the leader when this
/// node follows); the leader's membership task then adds it as a learner.
struct NodeJoins {
    node: Node,
    permits: tokio::sync::Semaphore,
}

impl JoinHandler for NodeJoins {
    fn handle(
        &self,
        join: JoinConnection,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let Ok(_permit) = self.permits.try_acquire() else {
                join.connection
                    .close(0u32.into(), b"too many joins at once; retry");
                return;
            };
            let secret = match self.node.join_secret() {
                Ok(Some(secret)) => secret,
                Ok(None) => {
                    tracing::warn!("refusing a join: this cluster has no join secret yet");
                    join.connection
                        .close(0u32.into(), b"no join secret yet; retry");
                    return;
                }
                Err(error) => {
                    // A member started with the wrong master key cannot
                    // check tokens; the joiner hears why and may try another.
                    tracing::error!(%error, "refusing a join: the join secret does not open here");
                    let reason = format!("this member cannot check join tokens: {error}");
                    join.connection.close(0u32.into(), reason.as_bytes());
                    return;
                }
            };
            let node = self.node.clone();
            let keys = self.node.secret_keys();
            let outcome = answer_join(
                join,
                &self.node.ca,
                &secret,
                keys,
                JOIN_TIMEOUT_MS,
                |_request| {
                    let node = node.clone();
                    async move {
                        let now_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(0);
                        match node.write(Command::AllocateNodeId { now_ms }).await {
                            Ok(CommandResult::NodeIdAllocated { id }) => Ok(id),
                            Ok(other) => Err(format!("unexpected result {other:?}")),
                            Err(error) => Err(error.to_string()),
                        }
                    }
                },
            )
            .await;
            match outcome {
                Ok(JoinOutcome::Granted {
                    node_id,
                    node: info,
                }) => {
                    // Recorded in the log; the leader's membership task adds
                    // it as a learner (so any member can admit joiners).
                    let register = Command::RegisterNode {
                        id: node_id,
                        node: info,
                    };
                    if let Err(error) = self.node.write(register).await {
                        tracing::error!(node_id, %error, "admitted a node but could not register it");
                    }
                }
                Ok(JoinOutcome::Refused { .. }) => {}
                Err(error) => tracing::warn!(%error, "join handshake failed"),
            }
        })
    }

    /// A removed node keeps a certificate of this CA; it is never served
    /// again (its votes could otherwise disturb the cluster it left).
    fn refuse_member(&self, peer: NodeId) -> Option<String> {
        match self.node.reader.is_removed(peer) {
            Ok(false) => None,
            Ok(true) => Some(removed_message(peer)),
            Err(error) => Some(format!("cannot check node {peer}'s membership: {error}")),
        }
    }
}

/// A log purged without a snapshot to show for it (a restored backup's
/// state: see `picloud_storage::restore`) could not bring a joining node
/// up to date, so such a node builds its snapshot at once.
async fn snapshot_a_purged_log(raft: &Raft<TypeConfig>) -> Result<(), ClusterError> {
    let (purged, snapshot) = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        (metrics.purged, metrics.snapshot)
    };
    if purged.is_some() && snapshot.is_none() {
        tracing::info!("the log is purged but no snapshot exists: building one");
        raft.trigger().snapshot().await.map_err(stopped)?;
    }
    Ok(())
}

/// A restarted member of a multi-voter cluster does not campaign until it has
/// heard from a leader, or for a grace period (two election timeouts plus a
/// heartbeat). openraft 0.9 has no pre-vote: a node that restarts while the
/// leader is still re-dialling it would otherwise time out, campaign with a
/// higher term and depose a healthy leader; if its log is behind it cannot
/// even win, and the failed candidacy also delays its later campaigns.
///
/// Meanwhile it dials every other member once: a member refuses a removed
/// node's connection (`close_code::REMOVED`), so a node restarted with the
/// data dir of a removed member learns it here and never campaigns (each
/// refused vote request would be one more openraft ERROR in its log).
fn hold_elections_after_restart(
    raft: &Raft<TypeConfig>,
    id: NodeId,
    config: &ClusterConfig,
    network: &QuicNetwork,
) {
    let membership = raft.metrics().borrow().membership_config.clone();
    let voters = membership.membership().voter_ids().count();
    if voters < 2 {
        return;
    }
    raft.runtime_config().elect(false);
    let grace =
        Duration::from_millis(2 * config.election_timeout_max_ms + config.heartbeat_interval_ms);
    let probe_budget = Duration::from_millis(config.election_timeout_max_ms);
    let raft = raft.clone();
    let connections = network.connections().clone();
    tokio::spawn(async move {
        let mut probes = tokio::task::JoinSet::new();
        for (member, info) in membership.membership().nodes() {
            if *member == id {
                continue;
            }
            let (connections, peer, member) = (connections.clone(), info.peer.clone(), *member);
            // A dead member is normal here; only a refusal matters, and
            // the endpoint's `removed` watch records it.
            probes.spawn(async move {
                let _ = connections.connection(member, &peer, probe_budget).await;
            });
        }
        let mut metrics = raft.metrics();
        // The probes and the grace run together: on a LAN a probe takes
        // milliseconds, so this adds no wait unless a member is down.
        let heard_from_leader = async {
            let heard = tokio::time::timeout(
                grace,
                metrics.wait_for(|m| m.current_leader.is_some_and(|leader| leader != id)),
            )
            .await;
            matches!(heard, Ok(Ok(_)))
        };
        let (heard_from_leader, _) = tokio::join!(heard_from_leader, probes.join_all());
        if connections.endpoint().removed().borrow().is_some() {
            tracing::debug!("restarted member was removed from the cluster: elections stay off");
            return;
        }
        tracing::info!(heard_from_leader, "restarted member: elections enabled");
        raft.runtime_config().elect(true);
    });
}

/// The leader side of forwarding for a node: writes and read-index straight
/// over openraft, and the leader's view of the cluster for `cluster status`
/// asked through a follower.
struct NodeForwardHandler {
    raft: RaftForwardHandler,
    node: Node,
}

impl ForwardHandler for NodeForwardHandler {
    fn pubsub(&self) -> Option<&PubSubLinks> {
        Some(&self.node.pubsub)
    }

    fn blocks(&self) -> Option<&dyn BlockService> {
        Some(self.node.files.as_ref())
    }

    fn write(&self, command: Command) -> ForwardFuture<'_, (CommandResult, u64)> {
        // The follower checked its own disk; the leader's is checked here,
        // before the entry reaches any log.
        let size = crate::batcher::payload_bytes(&command) as u64;
        match self.node.disk.admit(&command, size) {
            Ok(admission) => Box::pin(async move {
                let written = self.raft.write(command).await;
                drop(admission);
                written
            }),
            Err(full) => Box::pin(async move {
                Err(ForwardError::DiskFull {
                    available_bytes: full.available_bytes,
                    reserve_bytes: full.reserve_bytes,
                })
            }),
        }
    }

    fn read_index(&self) -> ForwardFuture<'_, u64> {
        Box::pin(async move {
            // Under the lease (or after a shared check) every acknowledged
            // write is applied here: the applied index is the read index.
            if self.node.leader_may_read().await {
                match self.node.reader.last_applied_index() {
                    Ok(index) => return Ok(index.unwrap_or(0)),
                    Err(error) => {
                        tracing::warn!(%error, "applied index unreadable; asking openraft");
                    }
                }
            }
            self.raft.read_index().await
        })
    }

    fn key_id(&self) -> Option<String> {
        self.node.key_id()
    }

    fn logs(&self) -> Option<&dyn LogSource> {
        self.node.logs.get().map(|source| source.as_ref())
    }

    fn status(&self) -> ForwardFuture<'_, ClusterStatus> {
        Box::pin(async move {
            let leader = self.node.raft.metrics().borrow().current_leader;
            if leader == Some(self.node.id) {
                Ok(self.node.local_cluster_status())
            } else {
                Err(ForwardError::NotLeader { leader })
            }
        })
    }
}

/// The members files' blocks are placed over: voters and learners of the
/// Raft membership as this node has it (placement over voters alone would
/// shrink to one copy when a removal leaves one voter and one learner),
/// less nodes removed for good (a removal entry may apply before the
/// membership change that drops the node).
fn file_members(raft: Raft<TypeConfig>, reader: StateReader) -> MembersFn {
    Arc::new(move || {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| !reader.is_removed(**id).unwrap_or(false))
            .map(|(id, info)| (*id, info.peer.clone()))
            .collect()
    })
}

/// What a removed node is told, and logs, when it tries to come back.
pub fn removed_message(node: NodeId) -> String {
    format!("node {node} was removed from the cluster; wipe its data dir and join again")
}

/// The names a node's certificate is issued for: the host of its peer address.
fn certificate_names(info: &NodeInfo) -> Vec<String> {
    info.peer
        .rsplit_once(':')
        .map(|(host, _)| host.trim_matches(|c| c == '[' || c == ']').to_string())
        .filter(|host| !host.is_empty())
        .into_iter()
        .collect()
}
