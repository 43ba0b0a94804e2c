//! `QuicNetwork`: openraft's network over the QUIC transport (the client side
//! of the Raft RPCs; [`super::serve_raft`] is the server side).
//!
//! ```text
//!  openraft ──new_client(target)──▶ QuicClient ──(cached PeerConnection per target)──▶ peer
//!            append_entries ─▶ RaftAppend stream   vote ─▶ RaftVote stream
//!            full_snapshot  ─▶ Snapshot stream: offer, file in chunks, install answer
//! ```
//!
//! openraft calls `new_client` for every vote round and every leader check,
//! so a client is only a handle: connections live in the factory's
//! [`PeerConnections`] pool, one per target, shared by every client of that
//! target (and by the forwarding client, when it is given the same pool). A
//! dial slower than the RPC that started it goes on in the background, while
//! the RPC itself returns `Unreachable` in time for openraft to back off
//! instead of retrying at once.
//!
//! Errors: a failed or pending dial is `Unreachable` (openraft backs off); a
//! stream that fails on a live connection is a `NetworkError` (openraft
//! retries; the next RPC re-dials if the connection died); an error openraft
//! returned on the peer comes back as a `RemoteError`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{ErrorSubject, ErrorVerb, Snapshot, Vote};
use picloud_storage::{NodeId, NodeInfo, TypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::TransportError;
use super::contacts::Contacts;
use super::endpoint::{PeerConnection, PeerEndpoint, StreamKind};
use super::frame::FrameError;
use super::peers::{Exchange, PeerConnections};
use super::raft_rpc::{RaftRpcConfig, RaftRpcError, SnapshotAnswer, SnapshotOffer};

struct Shared {
    connections: PeerConnections,
    config: RaftRpcConfig,
}

/// The openraft network factory over QUIC. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct QuicNetwork {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QuicNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicNetwork")
            .field("node_id", &self.shared.connections.node_id())
            .finish_non_exhaustive()
    }
}

impl QuicNetwork {
    /// A network dialling from `endpoint` (whose certificate names this node),
    /// with a connection pool of its own.
    pub fn new(endpoint: Arc<PeerEndpoint>, config: RaftRpcConfig) -> QuicNetwork {
        QuicNetwork::with_connections(PeerConnections::new(endpoint), config)
    }

    /// A network over an existing connection pool (e.g. one the forwarding
    /// client shares).
    pub fn with_connections(connections: PeerConnections, config: RaftRpcConfig) -> QuicNetwork {
        QuicNetwork {
            shared: Arc::new(Shared {
                connections,
                config,
            }),
        }
    }

    /// The connection pool, to share with other clients of the same peers.
    pub fn connections(&self) -> &PeerConnections {
        &self.shared.connections
    }

    /// When each peer was last heard from (the endpoint's map, which the
    /// server side also updates).
    pub fn contacts(&self) -> &Contacts {
        self.shared.connections.endpoint().contacts()
    }

    /// Closes every cached connection (e.g. at shutdown); later RPCs re-dial.
    /// A dial still in progress is left to finish on its own (closing the
    /// endpoint ends it), so this never waits for a handshake timeout.
    pub fn close_all(&self) {
        self.shared.connections.close_all();
    }
}

impl RaftNetworkFactory<TypeConfig> for QuicNetwork {
    type Network = QuicClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> QuicClient {
        QuicClient {
            target,
            node: node.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// openraft's client to one target. Holds no connection of its own.
pub struct QuicClient {
    target: NodeId,
    node: NodeInfo,
    shared: Arc<Shared>,
}

/// How an RPC failed before an answer arrived.
enum Failure {
    /// Could not connect: back off.
    Unreachable(RaftRpcError),
    /// Connected, but the exchange failed: retry.
    Network(RaftRpcError),
    /// The request does not fit in one frame: openraft should send fewer entries.
    TooLarge,
}

impl Failure {
    fn into_rpc<E: std::error::Error>(self, entries: u64) -> RPCError<NodeId, NodeInfo, E> {
        match self {
            Failure::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Failure::Network(e) => RPCError::Network(NetworkError::new(&e)),
            Failure::TooLarge => {
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1)))
            }
        }
    }
}

fn streaming_unreachable(error: RaftRpcError) -> StreamingError<TypeConfig, Fatal<NodeId>> {
    StreamingError::Unreachable(Unreachable::new(&error))
}

fn streaming_network(error: RaftRpcError) -> StreamingError<TypeConfig, Fatal<NodeId>> {
    StreamingError::Network(NetworkError::new(&error))
}

impl QuicClient {
    fn transport(&self, source: TransportError) -> RaftRpcError {
        RaftRpcError::Transport {
            target: self.target,
            source,
        }
    }

    /// The cached connection to the target, or a new one. Waits at most
    /// `budget` (a dial that takes longer goes on in the background).
    async fn connection(&self, budget: Duration) -> Result<PeerConnection, RaftRpcError> {
        self.shared
            .connections
            .connection(self.target, &self.node.peer, budget)
            .await
    }

    /// One request, one answer, on a fresh stream of `kind`.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: StreamKind,
        request: &Req,
        dial_budget: Duration,
    ) -> Result<Resp, Failure> {
        let connection = self
            .connection(dial_budget)
            .await
            .map_err(Failure::Unreachable)?;
        let stream = connection
            .open(kind)
            .await
            .map_err(|e| Failure::Network(self.transport(e)))?;
        let mut exchange = Exchange::new(stream);
        if let Err(error) = exchange.stream.send(request).await {
            if let TransportError::Frame {
                source: FrameError::TooLarge { .. },
                ..
            } = &error
            {
                // Nothing was written; the stream is abandoned by the drop.
                return Err(Failure::TooLarge);
            }
            return Err(Failure::Network(self.transport(error)));
        }
        exchange
            .stream
            .finish()
            .map_err(|e| Failure::Network(self.transport(e)))?;
        let answer = exchange
            .stream
            .recv::<Resp>()
            .await
            .map_err(|e| Failure::Network(self.transport(e)))?;
        exchange.complete = true;
        answer.ok_or(Failure::Network(RaftRpcError::NoAnswer {
            target: self.target,
            kind,
        }))
    }

    /// Runs an RPC within openraft's deadline. The dial gets the soft part of
    /// it, so an unreachable peer is reported as such (and backed off from)
    /// rather than as a timeout.
    async fn bounded_call<Req: Serialize, Resp, E>(
        &self,
        kind: StreamKind,
        action: RPCTypes,
        request: &Req,
        entries: u64,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Result<Resp, RaftError<NodeId, E>>: DeserializeOwned,
        E: std::error::Error,
    {
        let ttl = option.hard_ttl();
        let attempt = tokio::time::timeout(
            ttl,
            self.call::<Req, Result<Resp, RaftError<NodeId, E>>>(kind, request, option.soft_ttl()),
        )
        .await;
        if matches!(attempt, Ok(Ok(_))) {
            self.shared
                .connections
                .endpoint()
                .contacts()
                .record(self.target);
        }
        match attempt {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(remote))) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))),
            Ok(Err(failure)) => Err(failure.into_rpc(entries)),
            Err(_) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.shared.connections.node_id(),
                target: self.target,
                timeout: ttl,
            })),
        }
    }

    /// Streams the snapshot file and waits for the target to install it.
    // openraft's own error type, returned as `full_snapshot` must return it.
    #[allow(clippy::result_large_err)]
    async fn send_snapshot(
        &self,
        vote: Vote<NodeId>,
        mut snapshot: Snapshot<TypeConfig>,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let config = &self.shared.config;
        let stall = config.snapshot_stall_timeout();
        let stalled = |what: &'static str| {
            streaming_network(RaftRpcError::Stalled {
                target: self.target,
                what,
                waited_ms: config.snapshot_stall_timeout_ms,
            })
        };
        let signature = snapshot.meta.signature();
        let storage_error = |e: std::io::Error| {
            StreamingError::StorageError(openraft::StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(signature.clone())),
                ErrorVerb::Read,
                e,
            ))
        };
        let file = &mut snapshot.snapshot;
        let size_bytes = file
            .seek(std::io::SeekFrom::End(0))
            .await
            .map_err(storage_error)?;
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(storage_error)?;

        let connection = self
            .connection(stall)
            .await
            .map_err(streaming_unreachable)?;
        let stream = tokio::time::timeout(stall, connection.open(StreamKind::Snapshot))
            .await
            .map_err(|_| stalled("opening the snapshot stream"))?
            .map_err(|e| streaming_network(self.transport(e)))?;
        let mut exchange = Exchange::new(stream);
        let network = |e: TransportError| streaming_network(self.transport(e));
        let offer = SnapshotOffer {
            vote,
            meta: snapshot.meta.clone(),
            size_bytes,
        };
        tokio::time::timeout(stall, exchange.stream.send(&offer))
            .await
            .map_err(|_| stalled("sending the snapshot offer"))?
            .map_err(network)?;
        let answer = tokio::time::timeout(stall, exchange.stream.recv::<SnapshotAnswer>())
            .await
            .map_err(|_| stalled("waiting for the snapshot offer's answer"))?
            .map_err(network)?;
        match answer {
            Some(SnapshotAnswer::Send) => {}
            Some(SnapshotAnswer::Done(reply)) => {
                exchange.complete = true;
                let _ = exchange.stream.finish();
                return self.snapshot_reply(reply);
            }
            None => {
                return Err(streaming_network(RaftRpcError::NoAnswer {
                    target: self.target,
                    kind: StreamKind::Snapshot,
                }));
            }
        }

        // One chunk in memory at a time; `take` stops at the size announced
        // in the offer even if the file were to grow.
        let chunk_bytes = config.chunk_bytes();
        let mut chunk = vec![0u8; chunk_bytes];
        let mut reader = (&mut **file).take(size_bytes);
        loop {
            let mut filled = 0;
            while filled < chunk_bytes {
                let read = reader
                    .read(&mut chunk[filled..])
                    .await
                    .map_err(storage_error)?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
            if filled == 0 {
                break;
            }
            tokio::time::timeout(stall, exchange.stream.send_frame(&chunk[..filled]))
                .await
                .map_err(|_| stalled("sending a snapshot chunk"))?
                .map_err(network)?;
            if filled < chunk_bytes {
                break;
            }
        }
        drop(chunk);
        exchange.stream.finish().map_err(network)?;
        // Installing may take long on the receiver (it writes the whole
        // state); the overall snapshot timeout bounds this wait.
        let answer = exchange
            .stream
            .recv::<SnapshotAnswer>()
            .await
            .map_err(network)?;
        exchange.complete = true;
        match answer {
            Some(SnapshotAnswer::Done(reply)) => self.snapshot_reply(reply),
            Some(SnapshotAnswer::Send) => Err(streaming_network(RaftRpcError::UnexpectedAnswer {
                target: self.target,
                answer: "Send after the file".into(),
            })),
            None => Err(streaming_network(RaftRpcError::NoAnswer {
                target: self.target,
                kind: StreamKind::Snapshot,
            })),
        }
    }

    // openraft's own error type, returned as `full_snapshot` must return it.
    #[allow(clippy::result_large_err)]
    fn snapshot_reply(
        &self,
        reply: Result<SnapshotResponse<NodeId>, Fatal<NodeId>>,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        reply.map_err(|fatal| {
            StreamingError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                fatal,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for QuicClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        self.bounded_call::<_, AppendEntriesResponse<NodeId>, openraft::error::Infallible>(
            StreamKind::RaftAppend,
            RPCTypes::AppendEntries,
            &rpc,
            entries,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.bounded_call::<_, VoteResponse<NodeId>, openraft::error::Infallible>(
            StreamKind::RaftVote,
            RPCTypes::Vote,
            &rpc,
            0,
            &option,
        )
        .await
    }

    /// Never called: `full_snapshot` is overridden, and openraft's default
    /// `full_snapshot` is the only caller of this chunked RPC.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Network(NetworkError::new(
            &RaftRpcError::ChunkedSnapshotUnused,
        )))
    }

    /// Streams the snapshot file in chunks of `snapshot_chunk_bytes` and
    /// returns once the target installed it (or refused it for a higher vote).
    /// Bounded by `snapshot_timeout_ms` overall and `snapshot_stall_timeout_ms`
    /// per step, not by `option` (see [`RaftRpcConfig::snapshot_timeout_ms`]).
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let timeout = self.shared.config.snapshot_timeout();
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = tokio::time::timeout(timeout, self.send_snapshot(vote, snapshot)) => match sent {
                Ok(result) => result,
                Err(_) => Err(StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: self.shared.connections.node_id(),
                    target: self.target,
                    timeout,
                })),
            },
        }
    }
}
