//! What a node reports about itself and the cluster: `NodeStatus` (this
//! node's view, `/_/metrics` and `/_/api/v1/cluster`), `ClusterStatus` and
//! `MemberStatus` (`picloud cluster status`), with their role enums.
//! `cluster_status` builds the cluster view from openraft metrics, and
//! `apply_key_ids` adds each member's secrets master key id (as the members
//! reported it) and flags a mismatch; both are pure, so tests drive them
//! without a cluster.

use std::collections::BTreeMap;

use openraft::ServerState;
use picloud_storage::{NodeId, NodeInfo};

/// This node's Raft role, as openraft's server state names it. Serialised
/// lowercase (`"leader"`), which is what `/_/api/v1/cluster` and
/// `/_/metrics` have always shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
    Learner,
    Candidate,
    Shutdown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Learner => "learner",
            Role::Candidate => "candidate",
            Role::Shutdown => "shutdown",
        }
    }

    /// Whether this node leads: the leader's duties run only then.
    pub fn is_leader(self) -> bool {
        self == Role::Leader
    }
}

impl From<ServerState> for Role {
    fn from(state: ServerState) -> Role {
        match state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Learner => Role::Learner,
            ServerState::Candidate => Role::Candidate,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member's role in `picloud cluster status`: as this node knows it, so a
/// member the leader has not heard from lately is `Unreachable`.
///
/// On the wire (a follower asks the leader for its view, bincode) and in
/// JSON it is the lowercase word, as the `String` it replaced was: nodes of
/// either build still understand each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum MemberRole {
    Leader,
    Follower,
    Learner,
    Unreachable,
}

impl MemberRole {
    pub const ALL: [MemberRole; 4] = [
        MemberRole::Leader,
        MemberRole::Follower,
        MemberRole::Learner,
        MemberRole::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Learner => "learner",
            MemberRole::Unreachable => "unreachable",
        }
    }
}

impl std::fmt::Display for MemberRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<MemberRole> for String {
    fn from(role: MemberRole) -> String {
        role.as_str().to_string()
    }
}

impl TryFrom<String> for MemberRole {
    type Error = String;

    fn try_from(text: String) -> Result<MemberRole, String> {
        MemberRole::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("unknown member role {text:?}"))
    }
}

/// A snapshot of this node's view of the cluster, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub voters: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
}

/// One member as `picloud cluster status --json` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub http: String,
    pub peer: String,
    /// `leader`, `follower`, `learner` or `unreachable` (as far as this node knows).
    pub role: MemberRole,
    /// The last log index known applied (this node) or replicated (others, as
    /// seen by the leader); `None` when unknown.
    pub applied_index: Option<u64>,
    /// On the leader's own row, milliseconds since it last heard a quorum;
    /// on the others, since the member last answered the leader. `None` when
    /// this view is not the leader's.
    pub last_contact_ms: Option<u64>,
    /// The id of the member's secrets master key, as the member reported it
    /// to the node answering; `None` when it did not answer or has no key.
    #[serde(default)]
    pub key_id: Option<String>,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    pub leader: Option<NodeId>,
    pub nodes: Vec<MemberStatus>,
    /// More voters that may fail before writes stop: (voters - 1) / 2, less
    /// the voters already unreachable.
    pub failures_tolerated: usize,
    /// Whether the members that reported a master key id reported more than
    /// one: secrets sealed through one cannot be read through another.
    #[serde(default)]
    pub key_mismatch: bool,
}

/// Puts each member's master key id (as it reported it; absent when it did
/// not answer) into `status` and flags a mismatch among those reported.
pub fn apply_key_ids(status: &mut ClusterStatus, key_ids: &BTreeMap<NodeId, Option<String>>) {
    for member in &mut status.nodes {
        member.key_id = key_ids.get(&member.id).cloned().flatten();
    }
    let mut reported = status.nodes.iter().filter_map(|m| m.key_id.as_deref());
    let first = reported.next();
    status.key_mismatch = reported.any(|id| Some(id) != first);
}

/// Builds the cluster view from openraft metrics and, on the leader, when
/// each member last answered it (`contact_ms`; a member silent for longer
/// than `unreachable_after_ms` is `unreachable`). Pure, so tests can drive it.
pub fn cluster_status(
    this_node: NodeId,
    metrics: &openraft::RaftMetrics<NodeId, NodeInfo>,
    contact_ms: impl Fn(NodeId) -> Option<u64>,
    unreachable_after_ms: u64,
) -> ClusterStatus {
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let is_leader = metrics.current_leader == Some(this_node);
    let nodes = membership
        .nodes()
        .map(|(id, info)| {
            let voter = voters.contains(id);
            let (role, applied_index) = if *id == this_node {
                let role = match metrics.state {
                    ServerState::Leader => MemberRole::Leader,
                    ServerState::Learner => MemberRole::Learner,
                    _ if voter => MemberRole::Follower,
                    _ => MemberRole::Learner,
                };
                (role, metrics.last_applied.map(|log_id| log_id.index))
            } else {
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(id).cloned())
                    .flatten()
                    .map(|log_id| log_id.index);
                let silent = contact_ms(*id).is_none_or(|ms| ms > unreachable_after_ms);
                let role = if Some(*id) == metrics.current_leader {
                    MemberRole::Leader
                } else if is_leader && (matched.is_none() || silent) {
                    MemberRole::Unreachable
                } else if voter {
                    MemberRole::Follower
                } else {
                    MemberRole::Learner
                };
                (role, matched)
            };
            MemberStatus {
                id: *id,
                http: info.http.clone(),
                peer: info.peer.clone(),
                role,
                applied_index,
                last_contact_ms: match (is_leader, *id == this_node) {
                    (true, true) => metrics.millis_since_quorum_ack,
                    (true, false) => contact_ms(*id),
                    (false, _) => None,
                },
                key_id: None,
            }
        })
        .collect::<Vec<MemberStatus>>();
    // A voter already unreachable is a failure that has happened.
    let unreachable_voters = nodes
        .iter()
        .filter(|node| node.role == MemberRole::Unreachable && voters.contains(&node.id))
        .count();
    ClusterStatus {
        leader: metrics.current_leader,
        nodes,
        failures_tolerated: (voters.len().saturating_sub(1) / 2).saturating_sub(unreachable_voters),
        key_mismatch: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_as_the_words_the_api_always_showed() {
        for (role, word) in [
            (Role::Leader, "leader"),
            (Role::Follower, "follower"),
            (Role::Learner, "learner"),
            (Role::Candidate, "candidate"),
            (Role::Shutdown, "shutdown"),
        ] {
            assert_eq!(serde_json::to_value(role).expect("json"), word);
            assert_eq!(role.as_str(), word);
        }
        assert!(Role::Leader.is_leader() && !Role::Follower.is_leader());
        for role in MemberRole::ALL {
            let json = serde_json::to_string(&role).expect("json");
            assert_eq!(json, format!("\"{role}\""));
            assert_eq!(
                serde_json::from_str::<MemberRole>(&json).expect("back"),
                role
            );
        }
        assert!(serde_json::from_str::<MemberRole>("\"boss\"").is_err());
    }

    #[test]
    fn key_ids_are_shown_and_a_mismatch_is_flagged() {
        let member = |id| MemberStatus {
            id,
            http: String::new(),
            peer: String::new(),
            role: MemberRole::Follower,
            applied_index: None,
            last_contact_ms: None,
            key_id: None,
        };
        let mut status = ClusterStatus {
            leader: Some(1),
            nodes: vec![member(1), member(2), member(3)],
            failures_tolerated: 1,
            key_mismatch: false,
        };
        let ids = |entries: &[(NodeId, Option<&str>)]| {
            entries
                .iter()
                .map(|(id, key)| (*id, key.map(str::to_string)))
                .collect::<BTreeMap<_, _>>()
        };
        // A silent member is not a mismatch.
        apply_key_ids(
            &mut status,
            &ids(&[(1, Some("aa")), (2, Some("aa")), (3, None)]),
        );
        assert!(!status.key_mismatch);
        assert_eq!(status.nodes[1].key_id.as_deref(), Some("aa"));
        assert_eq!(status.nodes[2].key_id, None);
        apply_key_ids(&mut status, &ids(&[(1, Some("aa")), (3, Some("bb"))]));
        assert!(status.key_mismatch);
        assert_eq!(status.nodes[1].key_id, None);
    }

    #[test]
    fn a_member_role_is_a_string_on_the_wire_as_before() {
        // Followers ask the leader for `ClusterStatus` over bincode; the
        // field was a `String`, and nodes of the old build must still read it.
        let old = picloud_storage::codec::encode(&"unreachable".to_string()).expect("old");
        let new = picloud_storage::codec::encode(&MemberRole::Unreachable).expect("new");
        assert_eq!(old, new);
        let back: MemberRole = picloud_storage::codec::decode(&new, 64).expect("decode");
        assert_eq!(back, MemberRole::Unreachable);
    }
}
