//! Helpers shared by the cluster's multi-Raft tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use openraft::{Raft, ServerState};
use picloud_cluster::transport::PeerEndpoint;
use picloud_cluster::{NodeId, TypeConfig};

/// How long one wait for a Raft condition may take.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn addr(endpoint: &PeerEndpoint) -> SocketAddr {
    endpoint.local_addr().expect("local addr")
}

/// Waits until every Raft in `rafts` agrees on one leader other than `not`,
/// and that leader knows it leads; returns its id.
pub async fn wait_for_leader(rafts: &[(NodeId, &Raft<TypeConfig>)], not: Option<NodeId>) -> NodeId {
    let first = rafts[0]
        .1
        .wait(Some(WAIT))
        .metrics(
            |m| m.current_leader.is_some() && m.current_leader != not,
            "a leader is elected",
        )
        .await
        .expect("a leader within the deadline");
    let leader = first.current_leader.expect("leader");
    for (id, raft) in rafts {
        raft.wait(Some(WAIT))
            .metrics(
                |m| m.current_leader == Some(leader),
                format!("node {id} follows {leader}"),
            )
            .await
            .expect("all members know the leader");
    }
    let (_, leading) = rafts
        .iter()
        .find(|(id, _)| *id == leader)
        .expect("the leader is one of the members");
    leading
        .wait(Some(WAIT))
        .state(ServerState::Leader, "the leader knows it leads")
        .await
        .expect("leader state");
    leader
}
