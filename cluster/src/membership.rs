//! Membership upkeep on the leader: nodes removed with `cluster remove` (a
//! `RemoveNode` command in the log) leave the membership, learners that have
//! caught up become voters, and the number of voters is kept odd (1, 3, 5,
//! ...): an even count tolerates no more failures than the odd count below it
//! and needs more nodes for every commit. A dead node is never removed
//! automatically.
//!
//! The decision is a pure function of (voters, learners' progress, the
//! leader's last index), so tests drive it without a cluster; the loop only
//! reads metrics and proposes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{ChangeMembers, Raft};
use picloud_storage::{NodeId, StateReader, TypeConfig};

/// A learner within this many entries of the leader's log counts as caught up.
pub const PROMOTION_LAG_ENTRIES_MAX: u64 = 64;

/// How often the leader looks at its learners.
const CHECK_INTERVAL: Duration = Duration::from_millis(300);

/// The learners to promote now, or `None`. Promotes only as many caught-up
/// learners as keep the voter count odd; ties go to the lowest ids.
pub fn plan_promotion(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeMap<NodeId, Option<u64>>,
    leader_last_index: u64,
    lag_max: u64,
) -> Option<BTreeSet<NodeId>> {
    let caught_up: Vec<NodeId> = learners
        .iter()
        .filter(|(_, matched)| {
            matched.is_some_and(|index| index >= leader_last_index.saturating_sub(lag_max))
        })
        .map(|(id, _)| *id)
        .collect();
    let total = voters.len() + caught_up.len();
    let target = if total % 2 == 1 {
        total
    } else {
        total.saturating_sub(1)
    };
    let promote = target.saturating_sub(voters.len());
    (promote > 0).then(|| caught_up.into_iter().take(promote).collect())
}

/// The voter to demote when the voter count is even: the highest id that is
/// not the leader. `None` when the count is odd (or there is nobody to demote).
pub fn plan_demotion(voters: &BTreeSet<NodeId>, leader: NodeId) -> Option<NodeId> {
    if voters.len() % 2 == 1 || voters.len() < 2 {
        return None;
    }
    voters.iter().rev().find(|id| **id != leader).copied()
}

/// Runs on every node; acts only while this node leads. Ends when Raft stops.
pub async fn run(raft: Raft<TypeConfig>, reader: StateReader, this_node: NodeId) {
    let mut interval = tokio::time::interval(CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let metrics = raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        if metrics.current_leader != Some(this_node) {
            continue;
        }
        let Some(last_index) = metrics.last_log_index else {
            continue;
        };
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();

        // 0. Nodes admitted by any member (registered in the log) and not
        //    yet in the membership join as learners, one at a time.
        let members_now: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        match reader.registered_nodes() {
            Ok(registered) => {
                if let Some((id, node)) = registered
                    .into_iter()
                    .find(|(id, _)| !members_now.contains(id))
                {
                    match raft.add_learner(id, node, false).await {
                        Ok(_) => tracing::info!(id, "added an admitted node as a learner"),
                        Err(error) => tracing::debug!(%error, id, "adding a learner not done yet"),
                    }
                    continue;
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot read registered nodes");
                continue;
            }
        }

        // 1. Nodes removed for good leave the membership (never the leader
        //    itself: the API refuses that).
        let removed: BTreeSet<NodeId> = match reader.removed_nodes() {
            Ok(ids) => ids.into_iter().filter(|id| *id != this_node).collect(),
            Err(error) => {
                tracing::error!(%error, "cannot read removed nodes");
                continue;
            }
        };
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let to_remove: BTreeSet<NodeId> = removed.intersection(&members).copied().collect();
        if !to_remove.is_empty() {
            let voters_to_remove: BTreeSet<NodeId> =
                to_remove.intersection(&voters).copied().collect();
            let change = if voters_to_remove.is_empty() {
                ChangeMembers::RemoveNodes(to_remove.clone())
            } else {
                ChangeMembers::RemoveVoters(voters_to_remove)
            };
            match raft.change_membership(change, false).await {
                Ok(_) => tracing::info!(?to_remove, "removed nodes from the cluster"),
                Err(error) => tracing::debug!(%error, ?to_remove, "removal not done yet"),
            }
            continue;
        }

        // 2. An even number of voters: demote one to learner.
        if let Some(demote) = plan_demotion(&voters, this_node) {
            let keep: BTreeSet<NodeId> =
                voters.iter().copied().filter(|id| *id != demote).collect();
            match raft
                .change_membership(ChangeMembers::ReplaceAllVoters(keep), true)
                .await
            {
                Ok(_) => tracing::info!(demote, "demoted a voter to keep the voter count odd"),
                Err(error) => tracing::debug!(%error, demote, "demotion not done yet"),
            }
            continue;
        }
        let learners: BTreeMap<NodeId, Option<u64>> = membership
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
        if let Some(promote) =
            plan_promotion(&voters, &learners, last_index, PROMOTION_LAG_ENTRIES_MAX)
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn promotes_in_pairs_to_keep_voters_odd() {
        let one = voters(&[1]);
        let learner = |entries: &[(NodeId, Option<u64>)]| entries.iter().copied().collect();
        // One caught-up learner: 2 voters would be even, wait.
        assert_eq!(
            plan_promotion(&one, &learner(&[(2, Some(100))]), 100, 64),
            None
        );
        // Two: promote both (3 voters).
        assert_eq!(
            plan_promotion(&one, &learner(&[(2, Some(100)), (3, Some(90))]), 100, 64),
            Some(voters(&[2, 3]))
        );
        // A lagging or unknown learner does not count.
        assert_eq!(
            plan_promotion(&one, &learner(&[(2, Some(100)), (3, Some(10))]), 100, 64),
            None
        );
        assert_eq!(
            plan_promotion(&one, &learner(&[(2, Some(100)), (3, None)]), 100, 64),
            None
        );
        // Three caught up with one voter: promote two, keep one learner.
        assert_eq!(
            plan_promotion(
                &one,
                &learner(&[(2, Some(100)), (3, Some(100)), (4, Some(100))]),
                100,
                64
            ),
            Some(voters(&[2, 3]))
        );
        // Nothing to do with no learners.
        assert_eq!(plan_demotion(&voters(&[1, 2]), 1), Some(2));
        assert_eq!(plan_demotion(&voters(&[1, 2]), 2), Some(1));
        assert_eq!(plan_demotion(&voters(&[1, 2, 3]), 1), None);
        assert_eq!(plan_demotion(&voters(&[1]), 1), None);
        assert_eq!(
            plan_promotion(&voters(&[1, 2, 3]), &BTreeMap::new(), 100, 64),
            None
        );
    }
}
