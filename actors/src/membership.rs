//! The `membership` duty: on the leader, keeps the cluster's membership as
//! it should be. Nodes removed with `cluster remove` (a `RemoveNode` command
//! in the log) leave the membership, nodes admitted through a join become
//! learners, learners that have caught up become voters, and the number of
//! voters is kept odd (1, 3, 5, ...): an even count tolerates no more
//! failures than the odd count below it and needs more nodes for every
//! commit. A dead node is never removed automatically.
//!
//! The decision is [`plan_membership`], a pure function of a
//! [`MembershipView`] (voters, learners' progress, admitted and removed
//! nodes, the leader's last index) and [`MembershipLimits`], so tests drive
//! it without a cluster, a clock or a reader; the duty only asks the node
//! for the view ([`Node::membership_view`]), calls it and makes the one
//! change it returns ([`Node::change_membership`]).
//!
//! ```text
//!   every CHECK_INTERVAL, while leading:
//!   Node::membership_view ─▶ plan_membership ─▶ Option<MembershipChange> ─▶ Node::change_membership
//!   (1 admitted → learner, 2 removed leave, 3 even voters → demote one, 4 promote caught-up learners)
//! ```
//!
//! The loop keeps nothing between ticks: a run that panics (the supervisor
//! restarts it) loses no pending change, the next run plans it again from
//! the same state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use picloud_cluster::membership::{MembershipChange, MembershipView};
use picloud_cluster::{Duty, Node, NodeId};

/// A learner within this many entries of the leader's log counts as caught up.
pub const PROMOTION_LAG_ENTRIES_MAX: u64 = 64;

/// How often the leader looks at its learners.
const CHECK_INTERVAL: Duration = Duration::from_millis(300);

/// The bounds [`plan_membership`] works within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipLimits {
    /// A learner within this many entries of the leader's log counts as caught up.
    pub promotion_lag_entries_max: u64,
}

impl Default for MembershipLimits {
    fn default() -> MembershipLimits {
        MembershipLimits {
            promotion_lag_entries_max: PROMOTION_LAG_ENTRIES_MAX,
        }
    }
}

/// The membership change to make now, in order of precedence: an admitted
/// node that is not a member yet joins as a learner; removed members leave
/// (never this node, the leader: the API refuses to remove it); an even
/// voter count demotes the highest voter that is not the leader; caught-up
/// learners are promoted as far as keeps the voter count odd. `None` when
/// the membership is as it should be.
pub fn plan_membership(
    view: &MembershipView,
    limits: &MembershipLimits,
) -> Option<MembershipChange> {
    let is_member = |id: &NodeId| view.voters.contains(id) || view.learners.contains_key(id);
    if let Some((id, node)) = view.registered.iter().find(|(id, _)| !is_member(id)) {
        return Some(MembershipChange::AddLearner {
            id: *id,
            node: node.clone(),
        });
    }
    let to_remove: BTreeSet<NodeId> = view
        .removed
        .iter()
        .copied()
        .filter(|id| *id != view.this_node && is_member(id))
        .collect();
    if !to_remove.is_empty() {
        let voters_to_remove: BTreeSet<NodeId> =
            to_remove.intersection(&view.voters).copied().collect();
        return Some(if voters_to_remove.is_empty() {
            MembershipChange::RemoveNodes(to_remove)
        } else {
            MembershipChange::RemoveVoters(voters_to_remove)
        });
    }
    if let Some(demote) = plan_demotion(&view.voters, view.this_node) {
        let keep = view
            .voters
            .iter()
            .copied()
            .filter(|id| *id != demote)
            .collect();
        return Some(MembershipChange::Demote { demote, keep });
    }
    plan_promotion(
        &view.voters,
        &view.learners,
        view.leader_last_index,
        limits.promotion_lag_entries_max,
    )
    .map(MembershipChange::Promote)
}

/// The learners to promote now, or `None` (part of [`plan_membership`]).
/// Promotes only as many caught-up learners as keep the voter count odd;
/// ties go to the lowest ids.
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

/// The voter to demote when the voter count is even (part of
/// [`plan_membership`]): the highest id that is not the leader. `None` when
/// the count is odd (or there is nobody to demote).
pub fn plan_demotion(voters: &BTreeSet<NodeId>, leader: NodeId) -> Option<NodeId> {
    if voters.len() % 2 == 1 || voters.len() < 2 {
        return None;
    }
    voters.iter().rev().find(|id| **id != leader).copied()
}

/// The membership upkeep as a supervised duty (`membership`). It runs on
/// every node and acts only while the node leads; it ends when Raft stops.
pub fn duty(node: Node) -> Duty {
    Duty::new("membership", move || run(node.clone()))
}

async fn run(node: Node) {
    let limits = MembershipLimits::default();
    let mut interval = tokio::time::interval(CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let view = match node.membership_view() {
            Ok(Some(view)) => view,
            Ok(None) => continue,
            Err(picloud_cluster::ClusterError::Stopped { .. }) => return,
            Err(error) => {
                tracing::error!(%error, "cannot read the membership state");
                continue;
            }
        };
        let Some(change) = plan_membership(&view, &limits) else {
            continue;
        };
        // A change is decided and not yet made: the test-only fault switch
        // panics here to prove the restarted run makes it.
        picloud_cluster::fault_point("membership");
        node.change_membership(change).await;
    }
}

#[cfg(test)]
mod tests {
    use picloud_cluster::NodeInfo;

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

    fn info(id: NodeId) -> NodeInfo {
        NodeInfo {
            http: format!("127.0.0.1:{}", 8000 + id),
            peer: format!("127.0.0.1:{}", 7000 + id),
        }
    }

    /// A view of leader 1 at log index 100: `voters`, learners as (id,
    /// matched index), registered ids, removed ids.
    fn view(
        voters_: &[NodeId],
        learners: &[(NodeId, Option<u64>)],
        registered: &[NodeId],
        removed: &[NodeId],
    ) -> MembershipView {
        MembershipView {
            this_node: 1,
            voters: voters(voters_),
            learners: learners.iter().copied().collect(),
            registered: registered.iter().map(|id| (*id, info(*id))).collect(),
            removed: voters(removed),
            leader_last_index: 100,
        }
    }

    #[test]
    fn the_membership_plan_table() {
        use MembershipChange::*;
        let limits = MembershipLimits::default();
        let cases: Vec<(&str, MembershipView, Option<MembershipChange>)> = vec![
            (
                "a settled one-voter cluster does nothing",
                view(&[1], &[], &[], &[]),
                None,
            ),
            (
                "an admitted node joins as a learner",
                view(&[1], &[], &[2], &[]),
                Some(AddLearner {
                    id: 2,
                    node: info(2),
                }),
            ),
            (
                "admitted nodes join one at a time, lowest id first",
                view(&[1], &[], &[3, 4], &[]),
                Some(AddLearner {
                    id: 3,
                    node: info(3),
                }),
            ),
            (
                "registered members are not added again",
                view(&[1, 2, 3], &[(4, Some(0))], &[2, 3, 4], &[]),
                None,
            ),
            (
                "a registered node is added before anything else is planned",
                view(&[1, 2], &[(3, Some(100))], &[2, 5], &[]),
                Some(AddLearner {
                    id: 5,
                    node: info(5),
                }),
            ),
            (
                "removed voters leave",
                view(&[1, 2, 3], &[], &[], &[3]),
                Some(RemoveVoters(voters(&[3]))),
            ),
            (
                "removed voters leave before removed learners",
                view(&[1, 2, 3], &[(4, Some(100))], &[], &[3, 4]),
                Some(RemoveVoters(voters(&[3]))),
            ),
            (
                "removed learners leave",
                view(&[1, 2, 3], &[(4, Some(100))], &[], &[4]),
                Some(RemoveNodes(voters(&[4]))),
            ),
            (
                "the leader is never removed",
                view(&[1, 2, 3], &[], &[], &[1]),
                None,
            ),
            (
                "a removed node that is no longer a member needs nothing",
                view(&[1, 2, 3], &[], &[], &[7]),
                None,
            ),
            (
                "even voters demote the highest voter that is not the leader",
                view(&[1, 2, 3, 4], &[], &[], &[]),
                Some(Demote {
                    demote: 4,
                    keep: voters(&[1, 2, 3]),
                }),
            ),
            (
                "even voters with the leader highest demote the next one",
                MembershipView {
                    this_node: 2,
                    ..view(&[1, 2], &[], &[], &[])
                },
                Some(Demote {
                    demote: 1,
                    keep: voters(&[2]),
                }),
            ),
            (
                "odd voters are kept while one learner waits for a partner",
                view(&[1, 2, 3], &[(4, Some(100))], &[], &[]),
                None,
            ),
            (
                "odd voters promote two caught-up learners together",
                view(&[1, 2, 3], &[(4, Some(100)), (5, Some(40))], &[], &[]),
                Some(Promote(voters(&[4, 5]))),
            ),
            (
                "a lagging learner is not promoted",
                view(&[1], &[(2, Some(100)), (3, Some(35))], &[], &[]),
                None,
            ),
            (
                "a learner the leader has no progress for is not promoted",
                view(&[1], &[(2, Some(100)), (3, None)], &[], &[]),
                None,
            ),
        ];
        for (name, view, expected) in cases {
            assert_eq!(plan_membership(&view, &limits), expected, "{name}");
        }
    }

    #[test]
    fn the_lag_limit_decides_who_is_caught_up() {
        let learners = view(&[1], &[(2, Some(100)), (3, Some(90))], &[], &[]);
        let strict = MembershipLimits {
            promotion_lag_entries_max: 5,
        };
        assert_eq!(plan_membership(&learners, &strict), None);
        let loose = MembershipLimits {
            promotion_lag_entries_max: 10,
        };
        assert_eq!(
            plan_membership(&learners, &loose),
            Some(MembershipChange::Promote(voters(&[2, 3])))
        );
    }
}
