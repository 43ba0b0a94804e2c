//! Block repair: the leader brings every referenced block back to the
//! replicas placement names for it, after a node was removed, added or
//! came back.
//!
//! ```text
//!  blocks_page (1024 referenced hashes) ──▶ Has? to every reachable member
//!        ▲                                          │
//!        │ next page                                ▼
//!   pull / drop_block  ◀── plan_repair(page, members, reachable, limits)
//!   (≤ files_repair_copies_inflight_max at once)
//! ```
//!
//! [`plan_repair`] is pure (table-tested); the `files_repair` duty does the
//! I/O. Inventories are learned page by page, on demand: no node ever
//! sends its whole block list. At the end of every full pass the duty
//! stores the number of copies still missing (`files_repair_pending` in
//! `cluster status`, which forwards the leader's). A node that does not
//! lead reports 0: it does not look, and its number would be stale the
//! moment it stopped leading.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use picloud_cluster::files::hex8;
use picloud_cluster::files::placement::{REPLICAS_MAX, place};
use picloud_cluster::{Duty, NodeId};
use picloud_storage::files::BlockHash;

use super::FileService;

/// Hashes per page: one `Has` request per member and page (32 KiB of
/// hashes, a 1 KiB answer).
pub const REPAIR_PAGE_BLOCKS: usize = 1024;

/// The pause between passes while copies are missing, so a replaced node
/// fills at the pace of the copies rather than of the idle interval.
pub const REPAIR_BUSY_INTERVAL_MS: u64 = 1_000;

/// Copies one page may plan onto a single target: a fresh node is filled
/// steadily instead of taking a whole page's copies at once.
pub const REPAIR_COPIES_PER_TARGET_MAX: usize = 256;

/// Which reachable members hold a block (from their `Has` answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHolders {
    pub hash: BlockHash,
    pub holders: BTreeSet<NodeId>,
}

/// Bounds of one planning round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairLimits {
    /// Copies planned per page.
    pub copies_max: usize,
    /// Copies planned per page onto one target.
    pub copies_per_target_max: usize,
    /// Replicas a block has (placement's `copies_max`).
    pub replicas: usize,
}

impl Default for RepairLimits {
    fn default() -> Self {
        RepairLimits {
            copies_max: REPAIR_PAGE_BLOCKS,
            copies_per_target_max: REPAIR_COPIES_PER_TARGET_MAX,
            replicas: REPLICAS_MAX,
        }
    }
}

/// One repair step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairAction {
    /// `to` fetches `hash` from the first of `from` that answers.
    Copy {
        hash: BlockHash,
        from: Vec<NodeId>,
        to: NodeId,
    },
    /// `node` deletes its copy, which placement no longer names.
    Drop { hash: BlockHash, node: NodeId },
}

/// What one page needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepairPlan {
    pub actions: Vec<RepairAction>,
    /// Placed replicas that do not (as far as this node can tell) hold
    /// their block: the unreachable ones count, as their copy is unproven.
    pub missing: u64,
    /// Blocks no reachable member holds.
    pub lost: Vec<BlockHash>,
}

/// Plans one page: a copy to every reachable placed node missing a block
/// (sources: placed holders first, rotated by the hash so the reads spread
/// over the holders), and a drop of every unplaced copy once **every**
/// placed node holds the block and is reachable (so a drop never lowers
/// the copies below the replica count, and never races the copy it waits
/// for).
pub fn plan_repair(
    page: &[BlockHolders],
    members: &BTreeSet<NodeId>,
    reachable: &BTreeSet<NodeId>,
    limits: &RepairLimits,
) -> RepairPlan {
    let mut plan = RepairPlan::default();
    let mut copies = 0usize;
    let mut per_target: BTreeMap<NodeId, usize> = BTreeMap::new();
    for block in page {
        let placed = place(&block.hash, members, limits.replicas);
        let lacking: Vec<NodeId> = placed
            .iter()
            .copied()
            .filter(|node| !block.holders.contains(node))
            .collect();
        plan.missing += lacking.len() as u64;
        if block.holders.is_empty() {
            plan.lost.push(block.hash);
            continue;
        }
        if lacking.is_empty() {
            if placed.iter().all(|node| reachable.contains(node)) {
                for holder in block.holders.iter().filter(|h| !placed.contains(h)) {
                    plan.actions.push(RepairAction::Drop {
                        hash: block.hash,
                        node: *holder,
                    });
                }
            }
            continue;
        }
        let mut sources: Vec<NodeId> = placed
            .iter()
            .copied()
            .filter(|node| block.holders.contains(node))
            .collect();
        if !sources.is_empty() {
            let turn = usize::from(block.hash[0]) % sources.len();
            sources.rotate_left(turn);
        }
        sources.extend(block.holders.iter().filter(|h| !placed.contains(h)));
        for target in lacking {
            let to_target = per_target.entry(target).or_default();
            if !reachable.contains(&target)
                || copies >= limits.copies_max
                || *to_target >= limits.copies_per_target_max
            {
                continue;
            }
            *to_target += 1;
            copies += 1;
            plan.actions.push(RepairAction::Copy {
                hash: block.hash,
                from: sources.clone(),
                to: target,
            });
        }
    }
    plan
}

/// Where a pass stands, kept across a restart of the duty so a new run
/// resumes the pass instead of starting over.
#[derive(Debug, Default)]
struct Pass {
    /// The last hash of the last page done (`None`: at the start).
    after: Option<BlockHash>,
    /// Copies found missing and not made so far this pass.
    missing: u64,
    /// Blocks found lost so far this pass.
    lost: u64,
    /// A lost block of this pass, for the log line.
    lost_example: Option<BlockHash>,
}

/// The leader's repair duty: every `files_repair_interval_ms` (every
/// [`REPAIR_BUSY_INTERVAL_MS`] while copies are missing) a full pass over
/// the referenced blocks; a node that does not lead idles and reports 0.
pub fn repair_duty(service: FileService) -> Duty {
    let pass: Arc<Mutex<Pass>> = Arc::default();
    Duty::new("files_repair", move || run(service.clone(), pass.clone()))
}

async fn run(service: FileService, pass: Arc<Mutex<Pass>>) {
    let idle = Duration::from_millis(service.config().files_repair_interval_ms);
    let busy = idle.min(Duration::from_millis(REPAIR_BUSY_INTERVAL_MS));
    let mut pending = 0u64;
    loop {
        tokio::time::sleep(if pending > 0 { busy } else { idle }).await;
        if !service.node.status().role.is_leader() {
            *lock(&pass) = Pass::default();
            service.node.files().set_repair_pending(0);
            pending = 0;
            continue;
        }
        match repair_pass(&service, &pass).await {
            Some(missing) => pending = missing,
            // The pass stopped early (leadership lost, state unreadable):
            // the next tick resumes it.
            None => continue,
        }
    }
}

fn lock(pass: &Mutex<Pass>) -> std::sync::MutexGuard<'_, Pass> {
    pass.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the pass to its end; returns the copies still missing, or `None`
/// when it stopped before the end.
async fn repair_pass(service: &FileService, pass: &Mutex<Pass>) -> Option<u64> {
    let files = service.node.files();
    let reader = service.node.reader();
    let copies_inflight_max = service.config().files_repair_copies_inflight_max.max(1);
    loop {
        if !service.node.status().role.is_leader() {
            return None;
        }
        let after = lock(pass).after;
        let hashes = match reader.blocks_page(after.as_ref(), REPAIR_PAGE_BLOCKS) {
            Ok(hashes) => hashes,
            Err(error) => {
                tracing::error!(%error, "files repair: cannot read the block index");
                return None;
            }
        };
        let Some(last) = hashes.last().copied() else {
            // The pass is over: publish it and start the next from the top.
            let done = std::mem::take(&mut *lock(pass));
            if done.lost > 0 {
                tracing::error!(
                    lost = done.lost,
                    example = %done.lost_example.as_ref().map(hex8).unwrap_or_default(),
                    "files repair: blocks held by no reachable node; their files answer file_unavailable"
                );
            }
            files.set_repair_pending(done.missing);
            return Some(done.missing);
        };
        let members = files.members();
        let (page, reachable) = holders(service, &members, &hashes).await;
        let plan = plan_repair(
            &page,
            &members,
            &reachable,
            &RepairLimits {
                copies_max: REPAIR_PAGE_BLOCKS,
                copies_per_target_max: REPAIR_COPIES_PER_TARGET_MAX,
                replicas: REPLICAS_MAX,
            },
        );
        let made = futures::stream::iter(plan.actions)
            .map(|action| execute(service, action))
            .buffer_unordered(copies_inflight_max)
            .filter(|copied| std::future::ready(*copied))
            .count()
            .await as u64;
        let mut state = lock(pass);
        state.after = Some(last);
        state.missing += plan.missing.saturating_sub(made);
        state.lost += plan.lost.len() as u64;
        if state.lost_example.is_none() {
            state.lost_example = plan.lost.first().copied();
        }
    }
}

/// Who holds each of `hashes`, asked of every member this node hears from
/// (in parallel); a member that does not answer counts as unreachable.
async fn holders(
    service: &FileService,
    members: &BTreeSet<NodeId>,
    hashes: &[BlockHash],
) -> (Vec<BlockHolders>, BTreeSet<NodeId>) {
    let files = service.node.files();
    let heard: BTreeSet<NodeId> = service
        .node
        .local_cluster_status()
        .nodes
        .iter()
        .filter(|member| member.reachable)
        .map(|member| member.id)
        .collect();
    let asked = futures::future::join_all(
        members
            .iter()
            .filter(|node| heard.contains(node) || **node == service.node.id())
            .map(|node| async move { (*node, files.has(*node, hashes).await) }),
    )
    .await;
    let mut page: Vec<BlockHolders> = hashes
        .iter()
        .map(|hash| BlockHolders {
            hash: *hash,
            holders: BTreeSet::new(),
        })
        .collect();
    let mut reachable = BTreeSet::new();
    for (node, answer) in asked {
        match answer {
            Ok(held) if held.len() == hashes.len() => {
                reachable.insert(node);
                for (block, has) in page.iter_mut().zip(held) {
                    if has {
                        block.holders.insert(node);
                    }
                }
            }
            Ok(held) => tracing::warn!(
                node,
                answered = held.len(),
                asked = hashes.len(),
                "files repair: a member answered Has for the wrong number of blocks"
            ),
            Err(error) => {
                tracing::debug!(node, %error, "files repair: a member did not answer Has")
            }
        }
    }
    (page, reachable)
}

/// Makes one step; returns whether it was a copy that succeeded. A failure
/// is only logged: the block stays missing and the next pass plans again.
async fn execute(service: &FileService, action: RepairAction) -> bool {
    let files = service.node.files();
    match action {
        RepairAction::Copy { hash, from, to } => match files.pull(to, hash, from).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(block = %hex8(&hash), to, %error, "files repair: a copy failed");
                false
            }
        },
        RepairAction::Drop { hash, node } => {
            if let Err(error) = files.drop_block(node, hash).await {
                tracing::debug!(block = %hex8(&hash), node, %error, "files repair: a drop failed");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    /// A block whose placement over `members` is known, held by `holders`.
    fn block(seed: u8, holders: &[NodeId]) -> BlockHolders {
        BlockHolders {
            hash: [seed; 32],
            holders: set(holders),
        }
    }

    /// A hash placed on exactly `wanted` among `members` (3 replicas), and
    /// the member it leaves out.
    fn hash_placed_on(members: &BTreeSet<NodeId>, wanted: &BTreeSet<NodeId>) -> BlockHash {
        (0..=255u8)
            .map(|seed| [seed; 32])
            .find(|hash| place(hash, members, 3).into_iter().collect::<BTreeSet<_>>() == *wanted)
            .unwrap_or_else(|| panic!("no seed places on {wanted:?}"))
    }

    fn copies(plan: &RepairPlan) -> Vec<(NodeId, Vec<NodeId>)> {
        plan.actions
            .iter()
            .filter_map(|action| match action {
                RepairAction::Copy { to, from, .. } => Some((*to, from.clone())),
                RepairAction::Drop { .. } => None,
            })
            .collect()
    }

    fn drops(plan: &RepairPlan) -> Vec<NodeId> {
        plan.actions
            .iter()
            .filter_map(|action| match action {
                RepairAction::Drop { node, .. } => Some(*node),
                RepairAction::Copy { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_removed_node_is_replaced_by_a_copy_to_the_new_third() {
        // Node 1 died and was removed; node 4 joined. Every block was on
        // 1, 2, 3; 2 and 3 still hold it, 4 is placed now and has nothing.
        let members = set(&[2, 3, 4]);
        let page = [block(9, &[2, 3])];
        let plan = plan_repair(&page, &members, &members, &RepairLimits::default());
        assert_eq!(plan.missing, 1);
        let made = copies(&plan);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].0, 4);
        assert_eq!(set(&made[0].1), set(&[2, 3]), "both holders are sources");
        assert!(drops(&plan).is_empty());
        assert!(plan.lost.is_empty());
    }

    #[test]
    fn an_added_node_gets_its_copy_before_the_displaced_one_drops_it() {
        let members = set(&[1, 2, 3, 4]);
        let placed = set(&[1, 2, 4]);
        let hash = hash_placed_on(&members, &placed);
        // Before the copy: 4 lacks it, 3 (displaced) still holds it.
        let before = [BlockHolders {
            hash,
            holders: set(&[1, 2, 3]),
        }];
        let plan = plan_repair(&before, &members, &members, &RepairLimits::default());
        assert_eq!(plan.missing, 1);
        assert_eq!(copies(&plan).iter().map(|c| c.0).collect::<Vec<_>>(), [4]);
        assert!(drops(&plan).is_empty(), "no drop before the copy landed");
        // After: every placed node holds it, so 3 drops its copy.
        let after = [BlockHolders {
            hash,
            holders: set(&[1, 2, 3, 4]),
        }];
        let plan = plan_repair(&after, &members, &members, &RepairLimits::default());
        assert_eq!(plan.missing, 0);
        assert!(copies(&plan).is_empty());
        assert_eq!(drops(&plan), [3]);
        // ...but not while a placed node is unreachable.
        let plan = plan_repair(&after, &members, &set(&[1, 2, 3]), &RepairLimits::default());
        assert!(drops(&plan).is_empty());
    }

    #[test]
    fn an_unreachable_target_stays_missing_and_a_block_without_holders_is_lost() {
        let members = set(&[1, 2, 3]);
        let page = [block(1, &[1, 2]), block(2, &[])];
        let plan = plan_repair(&page, &members, &set(&[1, 2]), &RepairLimits::default());
        assert!(copies(&plan).is_empty(), "no copy to the unreachable 3");
        assert_eq!(plan.missing, 1 + 3);
        assert_eq!(plan.lost, vec![[2; 32]]);
    }

    #[test]
    fn limits_bound_the_copies_of_a_page() {
        let members = set(&[1, 2, 3]);
        let page: Vec<BlockHolders> = (0..10).map(|seed| block(seed, &[1])).collect();
        let limits = RepairLimits {
            copies_max: 5,
            copies_per_target_max: 3,
            replicas: 3,
        };
        let plan = plan_repair(&page, &members, &members, &limits);
        let made = copies(&plan);
        assert_eq!(made.len(), 5);
        for target in [2, 3] {
            assert!(made.iter().filter(|c| c.0 == target).count() <= 3);
        }
        assert_eq!(plan.missing, 20, "what is not copied stays missing");
    }

    #[test]
    fn small_clusters_keep_as_many_replicas_as_members() {
        // One member: nothing to do.
        let one = set(&[1]);
        let plan = plan_repair(&[block(3, &[1])], &one, &one, &RepairLimits::default());
        assert_eq!(plan, RepairPlan::default());
        // Two members: both hold every block.
        let two = set(&[1, 2]);
        let plan = plan_repair(&[block(3, &[2])], &two, &two, &RepairLimits::default());
        assert_eq!(plan.missing, 1);
        assert_eq!(copies(&plan), [(1, vec![2])]);
    }

    #[test]
    fn a_learner_joining_mid_way_is_a_member_like_any_other() {
        // Placement is over voters and learners: the learner 3 of a
        // 2-voter cluster is filled, and an old copy on no-longer-member 5
        // is a source but never dropped while it is not reachable.
        let members = set(&[1, 2, 3]);
        let plan = plan_repair(
            &[block(4, &[1, 2, 5])],
            &members,
            &set(&[1, 2, 3]),
            &RepairLimits::default(),
        );
        assert_eq!(plan.missing, 1);
        let made = copies(&plan);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].0, 3);
        assert_eq!(made[0].1.last(), Some(&5), "unplaced holders come last");
        // Once 3 holds it, the reachable stray copy on 5 is dropped.
        let plan = plan_repair(
            &[block(4, &[1, 2, 3, 5])],
            &members,
            &set(&[1, 2, 3, 5]),
            &RepairLimits::default(),
        );
        assert_eq!(drops(&plan), [5]);
    }

    #[test]
    fn sources_are_spread_over_the_holders() {
        let members = set(&[1, 2, 3, 4]);
        let mut first_sources = BTreeSet::new();
        for seed in 0..=255u8 {
            let hash = [seed; 32];
            let placed = place(&hash, &members, 3);
            // Two placed holders, one placed node lacking the block.
            let holders: BTreeSet<NodeId> = placed[..2].iter().copied().collect();
            let plan = plan_repair(
                &[BlockHolders { hash, holders }],
                &members,
                &members,
                &RepairLimits::default(),
            );
            if let Some((_, from)) = copies(&plan).first() {
                first_sources.insert(from[0]);
            }
        }
        assert!(first_sources.len() >= 3, "{first_sources:?}");
    }
}
