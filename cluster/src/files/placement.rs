//! Where a block lives: rendezvous (highest-random-weight) hashing over the
//! members, so every node computes the same replica set from the same
//! membership, and a membership change moves only the blocks it must.

use std::collections::BTreeSet;

use picloud_storage::NodeId;
use picloud_storage::files::BlockHash;
use sha2::{Digest, Sha256};

/// Copies of each block when the cluster has enough members.
pub const REPLICAS_MAX: usize = 3;

/// The nodes that hold `hash`, best first: the `min(copies_max, members)`
/// members with the highest score `SHA-256(hash ‖ id)[..8]` (ties, which
/// need a hash collision, go to the lower id).
pub fn place(hash: &BlockHash, members: &BTreeSet<NodeId>, copies_max: usize) -> Vec<NodeId> {
    let mut scored: Vec<(u64, NodeId)> = members.iter().map(|&id| (score(hash, id), id)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored
        .into_iter()
        .take(copies_max)
        .map(|(_, id)| id)
        .collect()
}

/// Acknowledgements an upload waits for: a majority of the replica set.
pub fn acks_needed(replicas: usize) -> usize {
    replicas / 2 + 1
}

fn score(hash: &BlockHash, id: NodeId) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(hash);
    hasher.update(id.to_be_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn members(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn hash(n: u32) -> BlockHash {
        Sha256::digest(n.to_be_bytes()).into()
    }

    #[test]
    fn small_clusters_place_on_every_member() {
        let cases: &[(&[NodeId], usize, usize)] =
            &[(&[1], 1, 1), (&[1, 2], 2, 2), (&[1, 2, 3], 3, 2)];
        for (ids, replicas, acks) in cases {
            let placed = place(&hash(7), &members(ids), REPLICAS_MAX);
            assert_eq!(placed.len(), *replicas, "{ids:?}");
            assert_eq!(
                placed.iter().copied().collect::<BTreeSet<_>>(),
                members(ids)
            );
            assert_eq!(acks_needed(placed.len()), *acks, "{ids:?}");
        }
        assert!(place(&hash(7), &BTreeSet::new(), REPLICAS_MAX).is_empty());
    }

    #[test]
    fn five_members_get_three_distinct_replicas_spread_evenly() {
        let all = members(&[1, 2, 3, 4, 5]);
        let mut held: BTreeMap<NodeId, usize> = BTreeMap::new();
        for n in 0..1000 {
            let placed = place(&hash(n), &all, REPLICAS_MAX);
            assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 3);
            for id in placed {
                *held.entry(id).or_default() += 1;
            }
        }
        for (id, count) in held {
            assert!(
                (540..=660).contains(&count),
                "node {id} holds {count} of 3000 copies"
            );
        }
    }

    #[test]
    fn membership_changes_move_only_what_they_must() {
        let before = members(&[1, 2, 3, 4, 5]);
        let mut without_5 = before.clone();
        without_5.remove(&5);
        let mut with_6 = before.clone();
        with_6.insert(6);
        for n in 0..1000 {
            let placed = place(&hash(n), &before, REPLICAS_MAX);
            if !placed.contains(&5) {
                assert_eq!(place(&hash(n), &without_5, REPLICAS_MAX), placed);
            }
            let added = place(&hash(n), &with_6, REPLICAS_MAX);
            let kept = added.iter().filter(|id| placed.contains(id)).count();
            assert!(kept >= 2, "adding a node replaced more than one replica");
        }
    }

    #[test]
    fn placement_is_pinned() {
        // Placement decides where bytes are on disk: it must never change
        // between versions. These were computed once.
        let all = members(&[1, 2, 3, 4, 5]);
        let pinned: Vec<Vec<NodeId>> = (0..3)
            .map(|n| place(&hash(n), &all, REPLICAS_MAX))
            .collect();
        assert_eq!(pinned, [[1, 2, 5], [2, 3, 5], [4, 2, 5]]);
    }
}
