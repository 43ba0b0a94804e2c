//! Where a resumed stream starts: the pure rule behind `Last-Event-ID`.

use picloud_storage::topics::{Position, TopicRecord};

/// What a new subscription reads from the retained history before it
/// takes live messages: sequence numbers `after_seq + 1 ..= until_seq`,
/// preceded by a reset event when `reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub reset: bool,
    pub after_seq: u64,
    pub until_seq: u64,
}

/// Plans a subscription from the client's last position `asked`, the
/// topic's record as stored (`None`: never published durably) and `head`,
/// the last durable position the topic actor had delivered when the
/// subscriber joined (everything after it reaches the subscriber live).
///
/// History covers `(asked, head]` and live covers `(head, ..)`: no gap and
/// no repeat at the seam. A position of another history (epoch) or older
/// than the oldest message kept gets a reset and starts at the oldest kept.
pub fn plan_resume(
    asked: Option<Position>,
    record: Option<TopicRecord>,
    head: Option<Position>,
) -> Resume {
    let live_only = Resume {
        reset: false,
        after_seq: 0,
        until_seq: 0,
    };
    let Some(asked) = asked else {
        return live_only;
    };
    let Some(record) = record else {
        // Nothing was ever kept: whatever the client saw is gone.
        return Resume {
            reset: true,
            ..live_only
        };
    };
    let until_seq = match head {
        Some(head) if head.epoch == record.epoch => head.seq,
        _ => 0,
    };
    let oldest_after = record.oldest_seq.saturating_sub(1);
    if asked.epoch != record.epoch || asked.seq < oldest_after {
        return Resume {
            reset: true,
            after_seq: oldest_after,
            until_seq,
        };
    }
    Resume {
        reset: false,
        after_seq: asked.seq,
        until_seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, seq: u64) -> Option<Position> {
        Some(Position { epoch, seq })
    }

    fn resume(reset: bool, after_seq: u64, until_seq: u64) -> Resume {
        Resume {
            reset,
            after_seq,
            until_seq,
        }
    }

    #[test]
    fn the_seam_between_history_and_live() {
        // Kept: 11..=20 of epoch 5; the actor had delivered up to 18.
        let record = Some(TopicRecord {
            epoch: 5,
            last_seq: 20,
            oldest_seq: 11,
        });
        let cases = [
            // No position: live only.
            (None, record, at(5, 18), resume(false, 0, 0)),
            // Resume inside the kept range: history up to the head.
            (at(5, 15), record, at(5, 18), resume(false, 15, 18)),
            // The oldest kept message's predecessor is not a gap.
            (at(5, 10), record, at(5, 18), resume(false, 10, 18)),
            // Older than that: reset, from the oldest kept.
            (at(5, 9), record, at(5, 18), resume(true, 10, 18)),
            // Another history: reset.
            (at(4, 15), record, at(5, 18), resume(true, 10, 18)),
            // Already past the head: nothing to read, no repeat.
            (at(5, 19), record, at(5, 18), resume(false, 19, 18)),
            // Nothing kept at all.
            (at(5, 3), None, None, resume(true, 0, 0)),
        ];
        for (asked, record, head, expected) in cases {
            assert_eq!(
                plan_resume(asked, record, head),
                expected,
                "{asked:?} {head:?}"
            );
        }
    }
}
