//! Ephemeral pub/sub between members: one long-lived `PubSub` stream from
//! each node to each peer it has something to tell, carrying publishes
//! (one hop: a receiver delivers locally and never forwards) and interest
//! (which `(app, topic)` the sender has subscribers for).
//!
//! ```text
//!  Realtime ──PubSubLinks::send(target)──▶ per-peer bounded queue ──sender task──▶ PubSub stream
//!                                              (full: dropped, counted)              │
//!  peer: serve_peers ──PubSub stream──▶ serve_pubsub ──inbox (bounded)──▶ Realtime's pubsub_in duty
//! ```
//!
//! A publish never waits for a slow peer: a full queue drops the frame
//! (at most once, counted in [`PubSubLinks::dropped`]). Every (re)connected
//! stream first carries the sender's full interest (the `greeting`), so a
//! peer that restarted, or missed a dropped interest change, is resynced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use picloud_storage::NodeId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::endpoint::{PeerStream, StreamKind};
use super::peers::PeerConnections;

/// Frames waiting for one peer; past it, publishes are dropped.
pub const PUBSUB_PEER_QUEUE_MAX: usize = 1024;
/// Frames received from all peers and not yet delivered; past it,
/// received publishes are dropped.
pub const PUBSUB_INBOX_MAX: usize = 4096;
/// How long a sender waits for a connection to its peer.
const CONNECT_BUDGET: Duration = Duration::from_secs(2);
/// The pause before a sender tries a broken peer again.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// One `(app, topic)`.
pub type TopicKey = (String, String);

/// What travels on a `PubSub` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PubSubFrame {
    /// An ephemeral message for the receiver's local subscribers.
    Publish {
        app: String,
        topic: String,
        message: Vec<u8>,
    },
    /// The sender's interest changed: with `full`, `add` is all of it
    /// (the receiver forgets what it knew of the sender first).
    Interest {
        full: bool,
        add: Vec<TopicKey>,
        remove: Vec<TopicKey>,
    },
}

/// The frame a sender task sends first on every (re)connected stream.
pub type Greeting = Arc<dyn Fn() -> PubSubFrame + Send + Sync>;

struct PeerQueue {
    peer: String,
    tx: mpsc::Sender<Arc<PubSubFrame>>,
    /// Set when an interest change was dropped: the next frame is
    /// preceded by the greeting.
    resync: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

impl PeerQueue {
    /// Whether this queue still carries frames to `peer`. Its sender task
    /// only ends by failing (a panic): the closed channel shows it, and the
    /// next `send` or `ensure` (the `pubsub_in` duty calls `ensure` every
    /// second) links the peer again, so a failed sender heals like a
    /// supervised one instead of dropping every later frame.
    fn serves(&self, peer: &str) -> bool {
        if self.tx.is_closed() {
            tracing::warn!(peer, "the pub/sub sender to a peer ended; linking it again");
            return false;
        }
        self.peer == peer
    }
}

impl Drop for PeerQueue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// This node's pub/sub links to its peers. Cheap to share (`Arc`).
pub struct PubSubLinks {
    connections: PeerConnections,
    inbox_tx: mpsc::Sender<(NodeId, PubSubFrame)>,
    inbox_rx: tokio::sync::Mutex<mpsc::Receiver<(NodeId, PubSubFrame)>>,
    queues: Mutex<HashMap<NodeId, PeerQueue>>,
    greeting: Mutex<Option<Greeting>>,
    dropped: AtomicU64,
}

impl PubSubLinks {
    pub fn new(connections: PeerConnections) -> PubSubLinks {
        let (inbox_tx, inbox_rx) = mpsc::channel(PUBSUB_INBOX_MAX);
        PubSubLinks {
            connections,
            inbox_tx,
            inbox_rx: tokio::sync::Mutex::new(inbox_rx),
            queues: Mutex::default(),
            greeting: Mutex::default(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Sets what every (re)connected stream carries first.
    pub fn set_greeting(&self, greeting: Greeting) {
        *self.greeting.lock().unwrap_or_else(|e| e.into_inner()) = Some(greeting);
    }

    /// Frames dropped so far (full peer queues, a full inbox).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The peers this node has a queue to.
    pub fn linked(&self) -> Vec<NodeId> {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Queues `frame` for `target` at `peer` (`host:port`) without waiting:
    /// a full queue drops it.
    pub fn send(&self, target: NodeId, peer: &str, frame: Arc<PubSubFrame>) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if queues.get(&target).is_none_or(|queue| !queue.serves(peer)) {
            queues.insert(target, self.link(target, peer));
        }
        let Some(queue) = queues.get(&target) else {
            return;
        };
        if queue.tx.try_send(frame.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if matches!(*frame, PubSubFrame::Interest { .. }) {
                queue.resync.store(true, Ordering::Release);
            }
        }
    }

    /// Makes sure `target` at `peer` has a queue (and so a stream that
    /// greets it with this node's interest), without sending anything.
    pub fn ensure(&self, target: NodeId, peer: &str) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if queues.get(&target).is_none_or(|queue| !queue.serves(peer)) {
            queues.insert(target, self.link(target, peer));
        }
    }

    /// Drops the queues of nodes that are no longer peers.
    pub fn retain(&self, peers: &[NodeId]) {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| peers.contains(id));
    }

    fn link(&self, target: NodeId, peer: &str) -> PeerQueue {
        let (tx, rx) = mpsc::channel(PUBSUB_PEER_QUEUE_MAX);
        let resync = Arc::new(AtomicBool::new(true));
        let greeting = self
            .greeting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let task = tokio::spawn(run_sender(
            self.connections.clone(),
            target,
            peer.to_string(),
            rx,
            resync.clone(),
            greeting,
        ));
        PeerQueue {
            peer: peer.to_string(),
            tx,
            resync,
            task: task.abort_handle(),
        }
    }

    /// The frames peers sent, for the one consumer (the realtime layer's
    /// duty; a restarted run takes the lock again).
    pub fn inbox(&self) -> &tokio::sync::Mutex<mpsc::Receiver<(NodeId, PubSubFrame)>> {
        &self.inbox_rx
    }

    /// Receives one peer's `PubSub` stream into the inbox until it ends.
    /// Interest waits for room (it must not be lost); a publish that finds
    /// the inbox full is dropped.
    pub(crate) async fn serve(&self, mut stream: PeerStream) {
        let peer = stream.peer_node_id();
        while let Ok(Some(frame)) = stream.recv::<PubSubFrame>().await {
            match frame {
                PubSubFrame::Publish { .. } => {
                    if self.inbox_tx.try_send((peer, frame)).is_err() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                PubSubFrame::Interest { .. } => {
                    if self.inbox_tx.send((peer, frame)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// One peer's sender: connects, greets, then sends what is queued; on any
/// failure it reconnects after a pause (frames queued meanwhile wait, and
/// past the queue's bound are dropped by [`PubSubLinks::send`]).
async fn run_sender(
    connections: PeerConnections,
    target: NodeId,
    peer: String,
    mut rx: mpsc::Receiver<Arc<PubSubFrame>>,
    resync: Arc<AtomicBool>,
    greeting: Option<Greeting>,
) {
    loop {
        let stream = match connections.connection(target, &peer, CONNECT_BUDGET).await {
            Ok(connection) => connection.open(StreamKind::PubSub).await.ok(),
            Err(_) => None,
        };
        if let Some(mut stream) = stream {
            resync.store(true, Ordering::Release);
            loop {
                if resync.swap(false, Ordering::AcqRel)
                    && let Some(greeting) = &greeting
                    && stream.send(&greeting()).await.is_err()
                {
                    break;
                }
                let Some(frame) = rx.recv().await else {
                    return;
                };
                if stream.send(&*frame).await.is_err() {
                    break;
                }
            }
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}
