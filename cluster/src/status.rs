//! What a node reports about itself and the cluster: `NodeStatus` (this
//! node's view, `/_/metrics` and `/_/api/v1/cluster`), `ClusterStatus` and
//! `MemberStatus` (`picloud cluster status`), with their role enums.
//! `cluster_status` builds the cluster view from openraft metrics and when
//! each member was last heard from, including whether a quorum of voters is
//! reachable; `readiness` says whether the node may serve (`/_/ready`);
//! `apply_key_ids` adds each member's secrets master key id (as the members
//! reported it) and flags a mismatch. All are pure, so tests drive them
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
    /// This node, campaigning: it knows no leader.
    Candidate,
    Unreachable,
}

impl MemberRole {
    pub const ALL: [MemberRole; 5] = [
        MemberRole::Leader,
        MemberRole::Follower,
        MemberRole::Learner,
        MemberRole::Candidate,
        MemberRole::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Learner => "learner",
            MemberRole::Candidate => "candidate",
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
    /// `leader`, `follower`, `learner`, `candidate` (this node, campaigning)
    /// or `unreachable` (as far as this node knows).
    pub role: MemberRole,
    /// The last log index known applied (this node) or replicated (others, as
    /// seen by the leader); `None` when unknown.
    pub applied_index: Option<u64>,
    /// On the leader's own row, milliseconds since it last heard a quorum;
    /// on the others, since this node last heard from the member (`None`:
    /// never, or this is the row of a node that does not lead).
    pub last_contact_ms: Option<u64>,
    /// The id of the member's secrets master key, as the member reported it
    /// to the node answering; `None` when it did not answer or has no key.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Whether this node heard from the member within the unreachable bound
    /// (always true on its own row).
    pub reachable: bool,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    pub leader: Option<NodeId>,
    pub nodes: Vec<MemberStatus>,
    /// More voters that may fail before writes stop: the reachable voters
    /// beyond a majority (0 when there is no quorum).
    pub failures_tolerated: usize,
    /// Whether the members that reported a master key id reported more than
    /// one: secrets sealed through one cannot be read through another.
    #[serde(default)]
    pub key_mismatch: bool,
    /// Whether a majority of the voters is reachable from this node (writes
    /// can commit). True while the membership is still unknown (a joiner).
    pub quorum: bool,
    /// Every voter, and those this node cannot reach.
    pub voters: Vec<NodeId>,
    pub voters_unreachable: Vec<NodeId>,
    /// Block copies the leader's last full repair pass found missing from
    /// a replica (0 when every block has all its copies, and on followers,
    /// which do not repair).
    #[serde(default)]
    pub files_repair_pending: u64,
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

impl ClusterStatus {
    /// Without a quorum, why (`2 of 3 voters unreachable (2, 3)`); `None` with one.
    pub fn no_quorum(&self) -> Option<String> {
        if self.quorum {
            return None;
        }
        Some(describe_unreachable(
            &self.voters_unreachable,
            self.voters.len(),
        ))
    }
}

/// `2 of 3 voters unreachable (2, 3)`.
pub fn describe_unreachable(unreachable: &[NodeId], voters: usize) -> String {
    let ids = unreachable
        .iter()
        .map(NodeId::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} of {voters} voters unreachable ({ids})",
        unreachable.len()
    )
}

/// How this node judges reachability: when it last heard from a member
/// (`contact_ms`, `None` if never), how long it has been listening
/// (`uptime_ms`: a member never heard from counts as silent since then), and
/// the silence after which a member counts as unreachable.
pub struct Reachability<F: Fn(NodeId) -> Option<u64>> {
    pub contact_ms: F,
    pub uptime_ms: u64,
    pub unreachable_after_ms: u64,
}

impl<F: Fn(NodeId) -> Option<u64>> Reachability<F> {
    fn silent(&self, peer: NodeId) -> bool {
        (self.contact_ms)(peer).unwrap_or(self.uptime_ms) > self.unreachable_after_ms
    }
}

/// The last log index `peer` is known to hold (the leader's replication view).
fn matched_index(metrics: &openraft::RaftMetrics<NodeId, NodeInfo>, peer: NodeId) -> Option<u64> {
    metrics
        .replication
        .as_ref()
        .and_then(|replication| replication.get(&peer).cloned())
        .flatten()
        .map(|log_id| log_id.index)
}

/// Whether another member counts as reachable: heard from lately, and on the
/// leader also matched a log index.
fn peer_reachable<F: Fn(NodeId) -> Option<u64>>(
    peer: NodeId,
    is_leader: bool,
    matched: Option<u64>,
    reachability: &Reachability<F>,
) -> bool {
    !reachability.silent(peer) && (!is_leader || matched.is_some())
}

/// The voters this node cannot reach, and whether the reachable ones are a
/// majority: the quorum half of [`cluster_status`] without building the
/// member rows, for the write path (it runs once per proposed batch).
pub fn quorum_check<F: Fn(NodeId) -> Option<u64>>(
    this_node: NodeId,
    metrics: &openraft::RaftMetrics<NodeId, NodeInfo>,
    reachability: &Reachability<F>,
) -> (bool, usize, Vec<NodeId>) {
    let is_leader = metrics.current_leader == Some(this_node);
    let mut voters = 0;
    let mut unreachable = Vec::new();
    for id in metrics.membership_config.membership().voter_ids() {
        voters += 1;
        if id != this_node
            && !peer_reachable(id, is_leader, matched_index(metrics, id), reachability)
        {
            unreachable.push(id);
        }
    }
    let quorum = voters == 0 || voters - unreachable.len() > voters / 2;
    (quorum, voters, unreachable)
}

/// Builds the cluster view from openraft metrics and when each member was
/// last heard from. On the leader a member is reachable when it answered
/// lately and has matched a log index; elsewhere when it was heard from
/// lately (a candidate hears the voters that answer its vote requests, a
/// follower its leader). Pure, so tests can drive it.
pub fn cluster_status<F: Fn(NodeId) -> Option<u64>>(
    this_node: NodeId,
    metrics: &openraft::RaftMetrics<NodeId, NodeInfo>,
    reachability: &Reachability<F>,
) -> ClusterStatus {
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let is_leader = metrics.current_leader == Some(this_node);
    let nodes = membership
        .nodes()
        .map(|(id, info)| {
            let voter = voters.contains(id);
            let (role, applied_index, reachable) = if *id == this_node {
                let role = match metrics.state {
                    ServerState::Leader => MemberRole::Leader,
                    ServerState::Learner => MemberRole::Learner,
                    ServerState::Candidate if voter => MemberRole::Candidate,
                    _ if voter => MemberRole::Follower,
                    _ => MemberRole::Learner,
                };
                (role, metrics.last_applied.map(|log_id| log_id.index), true)
            } else {
                let matched = matched_index(metrics, *id);
                let reachable = peer_reachable(*id, is_leader, matched, reachability);
                let role = if !reachable {
                    MemberRole::Unreachable
                } else if Some(*id) == metrics.current_leader {
                    MemberRole::Leader
                } else if voter {
                    MemberRole::Follower
                } else {
                    MemberRole::Learner
                };
                (role, matched, reachable)
            };
            MemberStatus {
                id: *id,
                http: info.http.clone(),
                peer: info.peer.clone(),
                role,
                applied_index,
                last_contact_ms: match (is_leader, *id == this_node) {
                    (true, true) => metrics.millis_since_quorum_ack,
                    (_, false) => (reachability.contact_ms)(*id),
                    (false, true) => None,
                },
                key_id: None,
                reachable,
            }
        })
        .collect::<Vec<MemberStatus>>();
    let voters_unreachable: Vec<NodeId> = nodes
        .iter()
        .filter(|node| !node.reachable && voters.contains(&node.id))
        .map(|node| node.id)
        .collect();
    let majority = voters.len() / 2 + 1;
    let reachable_voters = voters.len() - voters_unreachable.len();
    ClusterStatus {
        leader: metrics.current_leader,
        nodes,
        key_mismatch: false,
        failures_tolerated: reachable_voters.saturating_sub(majority),
        quorum: voters.is_empty() || reachable_voters >= majority,
        voters,
        voters_unreachable,
        // The files layer fills it in (`Node::local_cluster_status`).
        files_repair_pending: 0,
    }
}

/// Whether this node may take traffic (`/_/ready`): it has a quorum, knows a
/// leader it can reach, and has applied what it received within
/// `apply_lag_max` entries. `Err` says why not, in words for an operator.
pub fn readiness(
    this_node: NodeId,
    metrics: &openraft::RaftMetrics<NodeId, NodeInfo>,
    status: &ClusterStatus,
    apply_lag_max: u64,
) -> Result<(), String> {
    if let Some(why) = status.no_quorum() {
        return Err(format!("no quorum: {why}"));
    }
    let Some(leader) = metrics.current_leader else {
        return Err("no leader is known (an election is under way)".to_string());
    };
    if leader != this_node
        && status
            .nodes
            .iter()
            .any(|node| node.id == leader && !node.reachable)
    {
        return Err(format!(
            "the leader, node {leader}, has not been heard from lately"
        ));
    }
    let received = metrics.last_log_index.unwrap_or(0);
    let applied = metrics.last_applied.map_or(0, |log_id| log_id.index);
    let lag = received.saturating_sub(applied);
    if lag > apply_lag_max {
        return Err(format!(
            "catching up: {lag} log entries received but not applied yet (ready at {apply_lag_max} or fewer)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// [`cluster_status`], checked against the write path's cheap
    /// [`quorum_check`]: both must judge the quorum alike.
    fn checked<F: Fn(NodeId) -> Option<u64>>(
        this_node: NodeId,
        metrics: &openraft::RaftMetrics<NodeId, NodeInfo>,
        reachability: &Reachability<F>,
    ) -> ClusterStatus {
        let status = cluster_status(this_node, metrics, reachability);
        assert_eq!(
            quorum_check(this_node, metrics, reachability),
            (
                status.quorum,
                status.voters.len(),
                status.voters_unreachable.clone()
            )
        );
        status
    }

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
            reachable: true,
        };
        let mut status = ClusterStatus {
            leader: Some(1),
            nodes: vec![member(1), member(2), member(3)],
            failures_tolerated: 1,
            key_mismatch: false,
            quorum: true,
            voters: vec![1, 2, 3],
            voters_unreachable: Vec::new(),
            files_repair_pending: 0,
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

    /// Metrics of `this_node` in a cluster of voters 1, 2 and 3.
    fn three_voters(
        this_node: NodeId,
        state: ServerState,
        leader: Option<NodeId>,
    ) -> openraft::RaftMetrics<NodeId, NodeInfo> {
        let nodes: BTreeMap<NodeId, NodeInfo> = (1..=3)
            .map(|id| {
                (
                    id,
                    NodeInfo {
                        http: format!("127.0.0.1:{id}"),
                        peer: format!("127.0.0.1:{id}"),
                    },
                )
            })
            .collect();
        let membership = openraft::Membership::new(vec![nodes.keys().copied().collect()], nodes);
        let mut metrics = openraft::RaftMetrics::new_initial(this_node);
        metrics.membership_config =
            std::sync::Arc::new(openraft::StoredMembership::new(None, membership));
        metrics.state = state;
        metrics.current_leader = leader;
        metrics
    }

    fn heard(recent: &'static [NodeId]) -> Reachability<impl Fn(NodeId) -> Option<u64>> {
        Reachability {
            contact_ms: move |peer| recent.contains(&peer).then_some(50),
            uptime_ms: 60_000,
            unreachable_after_ms: 1_200,
        }
    }

    #[test]
    fn a_candidate_that_hears_no_voter_reports_no_quorum_and_who_is_unreachable() {
        let metrics = three_voters(1, ServerState::Candidate, None);
        let status = checked(1, &metrics, &heard(&[]));
        assert!(!status.quorum);
        assert_eq!(status.voters_unreachable, vec![2, 3]);
        assert_eq!(status.failures_tolerated, 0);
        assert_eq!(status.nodes[0].role, MemberRole::Candidate);
        assert!(status.nodes[0].reachable && !status.nodes[1].reachable);
        assert_eq!(status.nodes[2].role, MemberRole::Unreachable);
        assert_eq!(
            status.no_quorum().as_deref(),
            Some("2 of 3 voters unreachable (2, 3)")
        );
        let why = readiness(1, &metrics, &status, 100).expect_err("not ready");
        assert!(why.starts_with("no quorum"), "{why}");
    }

    #[test]
    fn a_follower_that_hears_its_leader_has_a_quorum_and_is_ready() {
        let metrics = three_voters(2, ServerState::Follower, Some(1));
        let status = checked(2, &metrics, &heard(&[1, 3]));
        assert!(status.quorum && status.voters_unreachable.is_empty());
        assert_eq!(status.failures_tolerated, 1);
        assert_eq!(readiness(2, &metrics, &status, 100), Ok(()));
        // One voter down: still a quorum, no more failures tolerated.
        let status = checked(2, &metrics, &heard(&[1]));
        assert!(status.quorum);
        assert_eq!(
            (status.failures_tolerated, status.voters_unreachable.clone()),
            (0, vec![3])
        );
        // The leader silent: not ready, though the node still believes in it.
        let status = checked(2, &metrics, &heard(&[3]));
        let why = readiness(2, &metrics, &status, 100).expect_err("leader silent");
        assert!(why.contains("node 1"), "{why}");
    }

    #[test]
    fn a_node_just_started_does_not_call_peers_unreachable_yet() {
        let metrics = three_voters(1, ServerState::Follower, None);
        let starting = Reachability {
            contact_ms: |_| None,
            uptime_ms: 100,
            unreachable_after_ms: 1_200,
        };
        let status = checked(1, &metrics, &starting);
        assert!(status.quorum);
        let why = readiness(1, &metrics, &status, 100).expect_err("no leader yet");
        assert!(why.contains("no leader"), "{why}");
    }

    #[test]
    fn a_node_far_behind_in_applying_is_not_ready() {
        let mut metrics = three_voters(2, ServerState::Follower, Some(1));
        metrics.last_log_index = Some(500);
        metrics.last_applied = Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(1, 1),
            10,
        ));
        let status = checked(2, &metrics, &heard(&[1, 3]));
        let why = readiness(2, &metrics, &status, 100).expect_err("behind");
        assert!(why.contains("490"), "{why}");
    }
}
