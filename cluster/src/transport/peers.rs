//! `PeerConnections`: the pool of outgoing member connections, one per target
//! node, shared by everything that sends requests to other members (the Raft
//! network and the forwarding client).
//!
//! ```text
//!  QuicNetwork ──┐
//!                ├─▶ PeerConnections ──(slot per target: cached PeerConnection | dial in flight)──▶ peer
//!  ForwardClient ┘
//! ```
//!
//! A dial runs in its own task, holding that target's slot, so only one dial
//! per target is in flight: a handshake slower than the request that started
//! it still completes and serves the next request, while the request itself
//! gets `DialPending` within its budget. A cached connection is reused while
//! it is open and the target's address has not changed; otherwise the next
//! request re-dials.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use picloud_storage::NodeId;
use tokio::sync::Mutex;

use super::endpoint::{PeerConnection, PeerEndpoint, PeerStream, close_code, stream_code};
use super::raft_rpc::RaftRpcError;

/// One target's cached connection, with the address it was dialled at (a
/// membership change that moves the node makes it stale).
#[derive(Debug, Clone)]
struct Cached {
    peer: String,
    connection: PeerConnection,
}

/// A target's slot: held by whoever is checking or dialling it.
type Slot = Arc<Mutex<Option<Cached>>>;

struct Pool {
    endpoint: Arc<PeerEndpoint>,
    slots: StdMutex<HashMap<NodeId, Slot>>,
}

/// Outgoing connections to other members, one per target. Cheap to clone;
/// clones share the connections.
#[derive(Clone)]
pub struct PeerConnections {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PeerConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnections")
            .field("node_id", &self.pool.endpoint.node_id())
            .finish_non_exhaustive()
    }
}

impl PeerConnections {
    /// A pool dialling from `endpoint` (whose certificate names this node).
    pub fn new(endpoint: Arc<PeerEndpoint>) -> PeerConnections {
        PeerConnections {
            pool: Arc::new(Pool {
                endpoint,
                slots: StdMutex::new(HashMap::new()),
            }),
        }
    }

    /// The endpoint the pool dials from.
    pub fn endpoint(&self) -> &Arc<PeerEndpoint> {
        &self.pool.endpoint
    }

    /// This node's id (from the endpoint's certificate).
    pub fn node_id(&self) -> NodeId {
        self.pool.endpoint.node_id()
    }

    fn slot(&self, target: NodeId) -> Slot {
        // A std mutex: held only to look up or insert, never across an await.
        let mut slots = match self.pool.slots.lock() {
            Ok(slots) => slots,
            // A panic elsewhere while holding it cannot leave the map half-updated.
            Err(poisoned) => poisoned.into_inner(),
        };
        slots.entry(target).or_default().clone()
    }

    /// The cached connection to `target` at `peer` (`host:port`), or a new
    /// one. Waits at most `budget`; a dial that takes longer goes on in the
    /// background and serves a later request.
    pub async fn connection(
        &self,
        target: NodeId,
        peer: &str,
        budget: Duration,
    ) -> Result<PeerConnection, RaftRpcError> {
        let pending = || RaftRpcError::DialPending {
            target,
            peer: peer.to_string(),
            waited_ms: budget.as_millis() as u64,
        };
        let deadline = tokio::time::Instant::now() + budget;
        let slot = self.slot(target);
        let mut guard = tokio::time::timeout_at(deadline, slot.lock_owned())
            .await
            .map_err(|_| pending())?;
        if let Some(cached) = guard.as_ref()
            && cached.peer == peer
            && !cached.connection.is_closed()
        {
            return Ok(cached.connection.clone());
        }
        let endpoint = self.pool.endpoint.clone();
        let address = peer.to_string();
        let dial = tokio::spawn(async move {
            // The guard moves into the task: nobody else dials this target
            // until this dial has settled, and its result is cached.
            let result = dial(&endpoint, target, &address).await;
            *guard = result.as_ref().ok().map(|connection| Cached {
                peer: address.clone(),
                connection: connection.clone(),
            });
            result
        });
        match tokio::time::timeout_at(deadline, dial).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(RaftRpcError::DialTask {
                target,
                reason: join.to_string(),
            }),
            Err(_) => Err(pending()),
        }
    }

    /// Closes every cached connection (e.g. at shutdown); later requests
    /// re-dial. A dial still in progress is left to finish on its own
    /// (closing the endpoint ends it), so this never waits for a handshake timeout.
    pub fn close_all(&self) {
        let slots: Vec<Slot> = match self.pool.slots.lock() {
            Ok(slots) => slots.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        for slot in slots {
            if let Ok(mut cached) = slot.try_lock()
                && let Some(cached) = cached.take()
            {
                cached.connection.close(close_code::DONE, "closing");
            }
        }
    }
}

/// Resolves `peer` and connects, checking the peer's certificate names `target`.
async fn dial(
    endpoint: &PeerEndpoint,
    target: NodeId,
    peer: &str,
) -> Result<PeerConnection, RaftRpcError> {
    let addr = resolve(target, peer).await?;
    endpoint
        .connect_to(addr, target)
        .await
        .map_err(|source| RaftRpcError::Dial {
            target,
            peer: peer.to_string(),
            source,
        })
}

async fn resolve(target: NodeId, peer: &str) -> Result<SocketAddr, RaftRpcError> {
    if let Ok(addr) = peer.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |reason: String| RaftRpcError::BadAddress {
        target,
        peer: peer.to_string(),
        reason,
    };
    tokio::net::lookup_host(peer)
        .await
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("no addresses".into()))
}

/// A request abandoned after at least this long without a single
/// acknowledgement from the peer marks its connection dead.
const SILENT_PEER_MIN: Duration = Duration::from_millis(50);

/// A stream that is reset (not finished) if dropped before its exchange
/// completed: a request cancelled by a timeout drops its future, and a
/// half-written frame must not reach the peer as a cut-off one (which would
/// get this node disconnected for a protocol violation).
///
/// If the peer acknowledged nothing at all while the request ran (no QUIC
/// ACK frame, which any live peer sends within milliseconds), the connection
/// is closed so that the next request re-dials. A peer killed and restarted
/// on the same address otherwise keeps receiving heartbeats on a connection
/// its new process does not know until the idle timeout: seconds in which it
/// hears no leader, campaigns, and deposes a healthy leader.
pub(crate) struct Exchange {
    pub(crate) stream: PeerStream,
    pub(crate) complete: bool,
    started: tokio::time::Instant,
    acks_at_start: u64,
}

impl Exchange {
    pub(crate) fn new(stream: PeerStream) -> Exchange {
        let acks_at_start = stream.connection().acks_received();
        Exchange {
            stream,
            complete: false,
            started: tokio::time::Instant::now(),
            acks_at_start,
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.complete {
            return;
        }
        self.stream.reset(stream_code::CANCELLED);
        let connection = self.stream.connection();
        if self.started.elapsed() >= SILENT_PEER_MIN
            && connection.acks_received() == self.acks_at_start
            && !connection.is_closed()
        {
            tracing::info!(
                peer = connection.peer_node_id(),
                waited_ms = self.started.elapsed().as_millis() as u64,
                "the peer acknowledged nothing during a request: dropping the connection, the next request re-dials"
            );
            connection.close(close_code::DONE, "no acknowledgement; reconnecting");
        }
    }
}
