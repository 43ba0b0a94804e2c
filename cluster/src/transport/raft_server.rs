//! `serve_raft`: the server side of the Raft RPCs. Accepts member
//! connections on a [`PeerEndpoint`] and hands each request to the local
//! `openraft::Raft`.
//!
//! ```text
//!  endpoint.accept() ─▶ Peer connection ─▶ task per connection ─▶ task per stream (≤ streams_per_connection_max)
//!                                             RaftAppend ─▶ raft.append_entries
//!                                             RaftVote   ─▶ raft.vote
//!                                             Snapshot   ─▶ begin_receiving_snapshot file ◀─ chunks
//!                                                           ─▶ raft.install_full_snapshot
//!                                             Forward    ─▶ ForwardHandler (write / read_index), if given;
//!                                                           else reset: not supported
//!                                             PubSub     ─▶ PubSubLinks, if the handler has them
//!                                             Blocks     ─▶ BlockService, under a per-connection
//!                                                           permit of its own (not the shared one)
//!                   ─▶ Join connection ─▶ closed: joins are not served yet
//! ```
//!
//! A request must claim to come from the node its certificate names: the
//! vote inside an append, vote request or snapshot offer names its sender
//! (the leader or the candidate). A member that claims another node's vote is
//! disconnected for a protocol violation. Membership itself (is the sender
//! still a member?) is openraft's business, as with any other transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{Raft, Snapshot, Vote};
use picloud_storage::{NodeId, TypeConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use super::blocks::BlockService;
use super::contacts::Contacts;
use super::endpoint::{
    Incoming, JoinConnection, PeerConnection, PeerEndpoint, PeerStream, StreamKind, TransportError,
    close_code, stream_code,
};
use super::forward::{ForwardError, ForwardHandler, ForwardReply, ForwardRequest};
use super::raft_rpc::{AppendReply, RaftRpcConfig, SnapshotAnswer, SnapshotOffer, VoteReply};

/// Serves Raft RPCs from every member that connects to `endpoint`, until the
/// endpoint is closed. Spawn it; it returns when `endpoint.accept()` ends.
/// `Forward` streams are refused; see [`serve_raft_with`].
pub async fn serve_raft(
    endpoint: Arc<PeerEndpoint>,
    raft: Raft<TypeConfig>,
    config: RaftRpcConfig,
) {
    serve_raft_with(endpoint, raft, config, None).await;
}

/// [`serve_raft`], and `Forward` streams (forwarded writes and read-index
/// requests) handed to `forward` when given; without it they are refused.
/// Forward streams share each connection's `streams_per_connection_max`
/// with the Raft RPCs, and each is answered within `forward_timeout_ms`.
pub async fn serve_raft_with(
    endpoint: Arc<PeerEndpoint>,
    raft: Raft<TypeConfig>,
    config: RaftRpcConfig,
    forward: Option<Arc<dyn ForwardHandler>>,
) {
    serve_peers(endpoint, raft, config, forward, None).await;
}

/// Admits (or refuses) a node asking to join, on a connection that arrived
/// without a member certificate. Implemented by the node, which allocates ids
/// through the log and adds the joiner as a learner.
pub trait JoinHandler: Send + Sync + 'static {
    fn handle(&self, join: JoinConnection) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// Why a member connection from `peer` (a certificate of this cluster's
    /// CA) must not be served, e.g. the node was removed for good; `None`
    /// serves it.
    fn refuse_member(&self, _peer: NodeId) -> Option<String> {
        None
    }
}

/// [`serve_raft_with`], and join connections handed to `joins` when given
/// (each on its own task; the handler bounds how many run at once); without
/// it they are closed.
///
/// Restartable (it is the node's `peers` duty): the handshakes and the queue
/// of accepted connections live in the endpoint's own accept task, not in
/// this loop, so a run that panics leaves them waiting and the next run
/// takes them. That task cannot die with this loop, and has nothing in it
/// that panics (a handshake runs on a task of its own).
pub async fn serve_peers(
    endpoint: Arc<PeerEndpoint>,
    raft: Raft<TypeConfig>,
    config: RaftRpcConfig,
    forward: Option<Arc<dyn ForwardHandler>>,
    joins: Option<Arc<dyn JoinHandler>>,
) {
    loop {
        // Before taking the next connection off the queue: the test-only
        // fault switch panics here with connections waiting, and the
        // restarted run must serve them.
        crate::duty::fault_point("peers");
        let Some(incoming) = endpoint.accept().await else {
            break;
        };
        match incoming {
            Incoming::Peer(connection) => {
                let peer = connection.peer_node_id();
                if let Some(reason) = joins.as_ref().and_then(|j| j.refuse_member(peer)) {
                    tracing::warn!(peer, remote = %connection.remote_address(), %reason, "refused a cluster connection");
                    connection.close(close_code::REMOVED, &reason);
                    continue;
                }
                tracing::debug!(peer = connection.peer_node_id(), remote = %connection.remote_address(), "member connected");
                tokio::spawn(serve_connection(
                    connection,
                    endpoint.contacts().clone(),
                    raft.clone(),
                    config.clone(),
                    forward.clone(),
                ));
            }
            Incoming::Join(join) => match &joins {
                Some(handler) => {
                    let handler = handler.clone();
                    tokio::spawn(async move { handler.handle(join).await });
                }
                None => {
                    tracing::info!(remote = %join.remote_address(), "closing a join connection: this node does not serve joins");
                    join.connection
                        .close(close_code::DONE.into(), b"joins are not served here");
                }
            },
        }
    }
    tracing::debug!("raft server stopped: the endpoint is closed");
}

/// Serves one member connection's streams, at most `streams_per_connection_max` at once.
async fn serve_connection(
    connection: PeerConnection,
    contacts: Contacts,
    raft: Raft<TypeConfig>,
    config: RaftRpcConfig,
    forward: Option<Arc<dyn ForwardHandler>>,
) {
    let peer = connection.peer_node_id();
    let streams = Arc::new(Semaphore::new(config.streams_per_connection_max.max(1)));
    // Block streams run under permits of their own, so file transfers can
    // never hold the shared permits Raft's appends and votes need.
    let block_streams = forward
        .as_ref()
        .and_then(|handler| handler.blocks())
        .map(|blocks| Arc::new(Semaphore::new(blocks.streams_per_peer_max().max(1))));
    loop {
        // Take the permit before accepting: while all are taken, the peer's
        // further streams wait in QUIC flow control instead of in our memory.
        let Ok(permit) = streams.clone().acquire_owned().await else {
            return;
        };
        let stream = match connection.accept_stream().await {
            Ok(stream) => stream,
            Err(TransportError::Frame { .. }) => {
                // A stream that ended before its kind byte: a cancelled open. The
                // connection is fine.
                continue;
            }
            Err(error) => {
                tracing::debug!(peer, %error, "member connection ended");
                return;
            }
        };
        // Any stream proves the member reachable: a follower hears its
        // leader only this way.
        contacts.record(peer);
        let raft = raft.clone();
        let config = config.clone();
        let forward = forward.clone();
        if stream.kind() == StreamKind::Blocks {
            // Given back before the block stream waits for its own permit.
            drop(permit);
            let block_streams = block_streams.clone();
            tokio::spawn(async move {
                match forward.as_ref().and_then(|handler| handler.blocks()) {
                    Some(blocks) => serve_blocks(stream, blocks, block_streams).await,
                    None => refuse_stream(stream),
                }
            });
            continue;
        }
        tokio::spawn(async move {
            serve_stream(stream, raft, &config, forward).await;
            drop(permit);
        });
    }
}

async fn serve_stream(
    stream: PeerStream,
    raft: Raft<TypeConfig>,
    config: &RaftRpcConfig,
    forward: Option<Arc<dyn ForwardHandler>>,
) {
    match stream.kind() {
        StreamKind::RaftAppend => {
            serve_request(
                stream,
                config,
                |request: &AppendEntriesRequest<TypeConfig>| request.vote,
                |request| async move {
                    let answer: AppendReply = raft.append_entries(request).await;
                    answer
                },
            )
            .await;
        }
        StreamKind::RaftVote => {
            serve_request(
                stream,
                config,
                |request: &VoteRequest<NodeId>| request.vote,
                |request| async move {
                    if let Some(after) = config.votes_after {
                        tokio::time::sleep_until(after).await;
                    }
                    let answer: VoteReply = raft.vote(request).await;
                    answer
                },
            )
            .await;
        }
        StreamKind::Snapshot => receive_snapshot(stream, raft, config).await,
        StreamKind::Forward => match forward {
            Some(handler) => serve_forward(stream, handler.as_ref(), config).await,
            None => refuse_stream(stream),
        },
        StreamKind::PubSub => match forward.as_ref().and_then(|handler| handler.pubsub()) {
            Some(links) => links.serve(stream).await,
            None => refuse_stream(stream),
        },
        // Served by `serve_connection` under their own permits.
        StreamKind::Blocks => refuse_stream(stream),
    }
}

/// Serves one `Blocks` stream once one of the connection's block permits is
/// free; a stream that waits longer than the service's `busy_wait` is reset
/// with `stream_code::BUSY` (an honest sender holds as many permits per peer
/// as the receiver, so only a misbehaving one waits that long).
async fn serve_blocks(
    mut stream: PeerStream,
    blocks: &dyn BlockService,
    permits: Option<Arc<Semaphore>>,
) {
    let Some(permits) = permits else {
        refuse_stream(stream);
        return;
    };
    match tokio::time::timeout(blocks.busy_wait(), permits.acquire_owned()).await {
        Ok(Ok(permit)) => {
            blocks.serve(stream).await;
            drop(permit);
        }
        _ => {
            tracing::debug!(
                peer = stream.peer_node_id(),
                "refusing a block stream: the peer has too many open"
            );
            stream.reset(stream_code::BUSY);
        }
    }
}

/// Resets a stream of a kind this server does not serve; the connection stays up.
fn refuse_stream(mut stream: PeerStream) {
    tracing::warn!(
        peer = stream.peer_node_id(),
        kind = ?stream.kind(),
        "refusing a stream: not supported here"
    );
    stream.reset(stream_code::UNSUPPORTED);
}

/// Answers one forwarded request with the handler's outcome, or `Timeout`
/// after `forward_timeout_ms` (a write may still apply then).
async fn serve_forward(
    mut stream: PeerStream,
    handler: &dyn ForwardHandler,
    config: &RaftRpcConfig,
) {
    let peer = stream.peer_node_id();
    let Some(request) = receive_request::<ForwardRequest>(&mut stream, config).await else {
        return;
    };
    let handle = async {
        match request {
            ForwardRequest::Write(command) => match handler.write(command).await {
                Ok((result, log_index)) => ForwardReply::Written { result, log_index },
                Err(error) => ForwardReply::Failed(error),
            },
            ForwardRequest::ReadIndex => match handler.read_index().await {
                Ok(index) => ForwardReply::ReadIndex { index },
                Err(error) => ForwardReply::Failed(error),
            },
            ForwardRequest::Status => match handler.status().await {
                Ok(status) => ForwardReply::Status(status),
                Err(error) => ForwardReply::Failed(error),
            },
            ForwardRequest::KeyId => ForwardReply::KeyId(handler.key_id()),
            ForwardRequest::Logs {
                app,
                from_seq,
                limit,
            } => match handler.logs() {
                Some(source) => {
                    let limit = (limit as usize).min(super::logs::PEER_LOG_LINES_MAX);
                    ForwardReply::Logs(source.lines(&app, from_seq, limit))
                }
                None => ForwardReply::Failed(ForwardError::Unavailable {
                    message: "log lines are not served here".into(),
                }),
            },
        }
    };
    let reply = match tokio::time::timeout(config.forward_timeout(), handle).await {
        Ok(reply) => reply,
        Err(_) => {
            tracing::debug!(
                peer,
                waited_ms = config.forward_timeout_ms,
                "forwarded request not finished in time"
            );
            ForwardReply::Failed(ForwardError::Timeout)
        }
    };
    if let Err(error) = stream.send(&reply).await {
        tracing::debug!(peer, %error, "forward answer not delivered");
        return;
    }
    let _ = stream.finish();
}

/// Whether `vote` (from a request) names the stream's peer as its sender;
/// if not, the peer is disconnected for a protocol violation.
fn sender_matches(stream: &PeerStream, vote: &Vote<NodeId>) -> bool {
    let claimed = vote.leader_id().voted_for();
    if claimed == Some(stream.peer_node_id()) {
        return true;
    }
    let reason = format!(
        "node {} sent a {:?} request under the vote of node {claimed:?}",
        stream.peer_node_id(),
        stream.kind()
    );
    stream.connection().close_for_violation(&reason);
    false
}

/// Receives one request (bounded by `request_timeout_ms`), runs `handle`, sends its answer.
async fn serve_request<Req, Resp, Fut>(
    mut stream: PeerStream,
    config: &RaftRpcConfig,
    vote_of: impl FnOnce(&Req) -> Vote<NodeId>,
    handle: impl FnOnce(Req) -> Fut,
) where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: std::future::Future<Output = Resp>,
{
    let peer = stream.peer_node_id();
    let kind = stream.kind();
    let Some(request) = receive_request::<Req>(&mut stream, config).await else {
        return;
    };
    if !sender_matches(&stream, &vote_of(&request)) {
        return;
    }
    let answer = handle(request).await;
    if let Err(error) = stream.send(&answer).await {
        tracing::debug!(peer, ?kind, %error, "raft answer not delivered");
        return;
    }
    let _ = stream.finish();
}

/// The stream's first frame, within `request_timeout_ms`; `None` (logged) if
/// it does not come.
async fn receive_request<Req: DeserializeOwned>(
    stream: &mut PeerStream,
    config: &RaftRpcConfig,
) -> Option<Req> {
    let peer = stream.peer_node_id();
    let kind = stream.kind();
    match tokio::time::timeout(config.request_timeout(), stream.recv::<Req>()).await {
        Ok(Ok(Some(request))) => Some(request),
        Ok(Ok(None)) => {
            tracing::debug!(peer, ?kind, "stream finished without a request");
            None
        }
        Ok(Err(error)) => {
            // A frame violation has already closed the connection (and logged).
            tracing::debug!(peer, ?kind, %error, "raft request not received");
            None
        }
        Err(_) => {
            tracing::debug!(
                peer,
                ?kind,
                waited_ms = config.request_timeout_ms,
                "raft request not received in time"
            );
            stream.reset(stream_code::CANCELLED);
            None
        }
    }
}

/// Receives a snapshot into a file from the state machine and installs it,
/// within `snapshot_timeout_ms` overall.
async fn receive_snapshot(mut stream: PeerStream, raft: Raft<TypeConfig>, config: &RaftRpcConfig) {
    let peer = stream.peer_node_id();
    let Some(offer) = receive_request::<SnapshotOffer>(&mut stream, config).await else {
        return;
    };
    if !sender_matches(&stream, &offer.vote) {
        return;
    }
    let receive = receive_and_install(&mut stream, &raft, config, offer);
    match tokio::time::timeout(config.snapshot_timeout(), receive).await {
        Ok(Ok(())) => {
            let _ = stream.finish();
        }
        Ok(Err(reason)) => {
            tracing::warn!(peer, %reason, "snapshot from the leader not installed");
            stream.reset(stream_code::CANCELLED);
        }
        Err(_) => {
            tracing::warn!(
                peer,
                waited_ms = config.snapshot_timeout_ms,
                "snapshot from the leader not received in time"
            );
            stream.reset(stream_code::CANCELLED);
        }
    }
}

/// Why a snapshot was not received (the sender sees a reset stream and retries).
#[derive(Debug, thiserror::Error)]
enum ReceiveError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("snapshot file: {0}")]
    File(#[from] std::io::Error),
    #[error("received {received_bytes} bytes of a {size_bytes}-byte snapshot")]
    Size {
        received_bytes: u64,
        size_bytes: u64,
    },
    #[error("no chunk for {waited_ms} ms")]
    Stalled { waited_ms: u64 },
}

async fn receive_and_install(
    stream: &mut PeerStream,
    raft: &Raft<TypeConfig>,
    config: &RaftRpcConfig,
    offer: SnapshotOffer,
) -> Result<(), ReceiveError> {
    // A leader whose vote is already superseded gets the higher vote back at
    // once (and steps down), without sending a byte of the file.
    let my_vote = raft.metrics().borrow().vote;
    if offer.vote < my_vote {
        let answer = SnapshotAnswer::Done(Ok(openraft::raft::SnapshotResponse::new(my_vote)));
        stream.send(&answer).await?;
        return Ok(());
    }
    let mut file = match raft.begin_receiving_snapshot().await {
        Ok(file) => file,
        Err(RaftError::Fatal(fatal)) => {
            stream.send(&SnapshotAnswer::Done(Err(fatal))).await?;
            return Ok(());
        }
        Err(RaftError::APIError(never)) => match never {},
    };
    stream.send(&SnapshotAnswer::Send).await?;

    // One frame (≤ the endpoint's frame limit) in memory at a time.
    let mut received_bytes = 0u64;
    let stall = config.snapshot_stall_timeout();
    loop {
        let chunk = tokio::time::timeout(stall, stream.recv_frame())
            .await
            .map_err(|_| ReceiveError::Stalled {
                waited_ms: config.snapshot_stall_timeout_ms,
            })??;
        let Some(chunk) = chunk else {
            break;
        };
        received_bytes += chunk.len() as u64;
        if received_bytes > offer.size_bytes {
            let error = ReceiveError::Size {
                received_bytes,
                size_bytes: offer.size_bytes,
            };
            stream.connection().close_for_violation(&error.to_string());
            return Err(error);
        }
        file.write_all(&chunk).await?;
    }
    if received_bytes != offer.size_bytes {
        return Err(ReceiveError::Size {
            received_bytes,
            size_bytes: offer.size_bytes,
        });
    }
    file.flush().await?;
    let snapshot = Snapshot {
        meta: offer.meta,
        snapshot: file,
    };
    let reply = raft.install_full_snapshot(offer.vote, snapshot).await;
    if let Err(fatal) = &reply {
        tracing::warn!(peer = stream.peer_node_id(), %fatal, "snapshot install failed");
    }
    stream.send(&SnapshotAnswer::Done(reply)).await?;
    Ok(())
}
