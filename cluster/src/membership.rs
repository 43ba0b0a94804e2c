//! Membership upkeep's vocabulary and I/O: what the leader sees when it
//! plans ([`MembershipView`], read by [`Node::membership_view`]) and the
//! changes it can make ([`MembershipChange`], made by
//! [`Node::change_membership`]). The decision, `plan_membership`, and the
//! loop that runs it on the leader are the supervised `membership` duty in
//! `actors` (`actors/src/membership.rs`): removed nodes leave, admitted nodes
//! join as learners, caught-up learners become voters and the voter count
//! stays odd. A dead node is never removed automatically.
//!
//! [`Node::membership_view`]: crate::Node::membership_view
//! [`Node::change_membership`]: crate::Node::change_membership

use std::collections::{BTreeMap, BTreeSet};

use openraft::{ChangeMembers, Raft};
use picloud_storage::{NodeId, NodeInfo, StateReader, TypeConfig};

use crate::error::ClusterError;

/// What the leader knows when it plans a membership change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembershipView {
    /// The node planning (the leader): never removed or demoted.
    pub this_node: NodeId,
    pub voters: BTreeSet<NodeId>,
    /// Each learner and the last log index it is known to hold (`None`: unknown).
    pub learners: BTreeMap<NodeId, Option<u64>>,
    /// Nodes admitted through a join (registered in the log), in id order;
    /// members among them are already in.
    pub registered: Vec<(NodeId, NodeInfo)>,
    /// Nodes removed for good with `cluster remove`.
    pub removed: BTreeSet<NodeId>,
    /// The leader's last log index, against which learners' lag is measured.
    pub leader_last_index: u64,
}

/// One membership change for the leader to propose now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// An admitted node joins as a learner (one at a time).
    AddLearner { id: NodeId, node: NodeInfo },
    /// Removed voters leave (learners among the removed wait for the next
    /// round, once the voters are gone).
    RemoveVoters(BTreeSet<NodeId>),
    /// Removed learners leave.
    RemoveNodes(BTreeSet<NodeId>),
    /// An even voter count: `demote` becomes a learner, `keep` stay voters.
    Demote {
        demote: NodeId,
        keep: BTreeSet<NodeId>,
    },
    /// Caught-up learners become voters, keeping the voter count odd.
    Promote(BTreeSet<NodeId>),
}

/// The leader's view for planning: `Ok(None)` while this node does not
/// lead (or knows no last index yet), `Err(Stopped)` once Raft stopped.
pub(crate) fn view(
    raft: &Raft<TypeConfig>,
    reader: &StateReader,
    this_node: NodeId,
) -> Result<Option<MembershipView>, ClusterError> {
    let metrics = raft.metrics().borrow().clone();
    if let Err(error) = &metrics.running_state {
        return Err(ClusterError::Stopped {
            message: error.to_string(),
        });
    }
    if metrics.current_leader != Some(this_node) {
        return Ok(None);
    }
    let Some(leader_last_index) = metrics.last_log_index else {
        return Ok(None);
    };
    let registered = reader.registered_nodes()?;
    let removed = reader.removed_nodes()?.into_iter().collect();
    let membership = metrics.membership_config.membership();
    let learners = membership
        .learner_ids()
        .map(|id| {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&id).cloned())
                .flatten()
                .map(|log_id| log_id.index);
            (id, matched)
        })
        .collect();
    Ok(Some(MembershipView {
        this_node,
        voters: membership.voter_ids().collect(),
        learners,
        registered,
        removed,
        leader_last_index,
    }))
}

/// Proposes `change`; a failure is only logged, the next tick plans again.
pub(crate) async fn execute(raft: &Raft<TypeConfig>, change: MembershipChange) {
    match change {
        MembershipChange::AddLearner { id, node } => {
            match raft.add_learner(id, node, false).await {
                Ok(_) => tracing::info!(id, "added an admitted node as a learner"),
                Err(error) => tracing::debug!(%error, id, "adding a learner not done yet"),
            }
        }
        MembershipChange::RemoveVoters(ids) => {
            remove(raft, ChangeMembers::RemoveVoters(ids.clone()), &ids).await
        }
        MembershipChange::RemoveNodes(ids) => {
            remove(raft, ChangeMembers::RemoveNodes(ids.clone()), &ids).await
        }
        MembershipChange::Demote { demote, keep } => {
            match raft
                .change_membership(ChangeMembers::ReplaceAllVoters(keep), true)
                .await
            {
                Ok(_) => tracing::info!(demote, "demoted a voter to keep the voter count odd"),
                Err(error) => tracing::debug!(%error, demote, "demotion not done yet"),
            }
        }
        MembershipChange::Promote(promote) => {
            match raft
                .change_membership(ChangeMembers::AddVoterIds(promote.clone()), false)
                .await
            {
                Ok(_) => tracing::info!(?promote, "promoted caught-up learners to voters"),
                Err(error) => tracing::debug!(%error, ?promote, "promotion not done yet"),
            }
        }
    }
}

async fn remove(
    raft: &Raft<TypeConfig>,
    change: ChangeMembers<NodeId, NodeInfo>,
    to_remove: &BTreeSet<NodeId>,
) {
    match raft.change_membership(change, false).await {
        Ok(_) => tracing::info!(?to_remove, "removed nodes from the cluster"),
        Err(error) => tracing::debug!(%error, ?to_remove, "removal not done yet"),
    }
}
