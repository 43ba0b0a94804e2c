//! `Contacts`: when this node last heard from each member, in either
//! direction. The Raft client records a peer when it answers an RPC (the
//! leader hears its followers, a candidate its voters); the Raft server
//! records a peer when it opens a stream here (a follower hears its
//! leader). `cluster status`, `/_/ready` and the write path read it to tell
//! which voters are reachable without asking anyone.
//!
//! The endpoint owns it, so the client and the server side share one map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use picloud_storage::NodeId;
use tokio::time::Instant;

/// When each peer was last heard from, and when this node started listening.
#[derive(Debug, Clone)]
pub struct Contacts {
    last: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// A peer never heard from counts as silent since this instant, so a
    /// node that just started does not call its peers unreachable before it
    /// had a chance to hear them.
    started: Instant,
}

impl Default for Contacts {
    fn default() -> Self {
        Contacts {
            last: Arc::default(),
            started: Instant::now(),
        }
    }
}

impl Contacts {
    /// Notes that `peer` was heard from just now.
    pub fn record(&self, peer: NodeId) {
        if let Ok(mut last) = self.last.lock() {
            last.insert(peer, Instant::now());
        }
    }

    /// Milliseconds since `peer` was last heard from; `None` if it never was.
    pub fn since_ms(&self, peer: NodeId) -> Option<u64> {
        let last = self.last.lock().ok()?;
        last.get(&peer).map(|at| at.elapsed().as_millis() as u64)
    }

    /// Milliseconds since this node started listening.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_heard_from_has_an_age_and_others_none() {
        let contacts = Contacts::default();
        assert_eq!(contacts.since_ms(2), None);
        contacts.record(2);
        assert!(contacts.since_ms(2).is_some_and(|ms| ms < 1_000));
        assert_eq!(contacts.since_ms(3), None);
        assert!(contacts.uptime_ms() < 1_000);
    }
}
