//! Durable pub/sub topics as stored: each topic's position record, the
//! position of a message (`<epoch>-<seq>`), the retention rule, and the
//! event the state machine sends for every durable message it applied.
//!
//! A topic's messages are numbered 1, 2, 3, ... (`seq`, dense per topic),
//! and the topic has an `epoch` handed out by a cluster-wide counter when
//! the topic's first durable message is applied. Deleting an app deletes
//! its topics; a topic re-created later gets a new, larger epoch, so a
//! client resuming with a position from the old history is told to reset
//! instead of silently resuming into a different one.

use serde::{Deserialize, Serialize};

/// The most messages a topic may retain (`retain` of `[[topic]]`), whatever
/// the operator allows (`topic_retain_max`, 100000 by default).
pub const TOPIC_RETAIN_MAX: u64 = 1_000_000;

/// The most old messages one publish deletes past the retention bound.
/// A deploy that lowers `retain` shrinks the history a few messages per
/// publish instead of deleting a huge range in one log entry.
pub const TRIM_PER_PUBLISH_MAX: u64 = 8;

/// The most messages one [`crate::StateReader::topic_read`] page returns.
pub const TOPIC_PAGE_MAX: usize = 1_000;

/// Where a topic's durable history stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Identifies this history of the topic (see the module comment).
    pub epoch: u64,
    /// The sequence number of the newest message (0: none yet).
    pub last_seq: u64,
    /// The sequence number of the oldest message kept (`last_seq + 1` when
    /// none is kept).
    pub oldest_seq: u64,
}

/// The sequence numbers a publish deletes so that at most `retain`
/// messages are kept once message `last_seq` is stored, starting at
/// `oldest_seq`: at most [`TRIM_PER_PUBLISH_MAX`] of them. Pure, so apply
/// stays deterministic and the rule is tested alone.
pub fn trim_range(oldest_seq: u64, last_seq: u64, retain: u64) -> std::ops::Range<u64> {
    // Keep `last_seq - retain + 1 ..= last_seq`.
    let keep_from = last_seq.saturating_sub(retain).saturating_add(1);
    let end = keep_from.min(oldest_seq.saturating_add(TRIM_PER_PUBLISH_MAX));
    oldest_seq..end.max(oldest_seq)
}

/// A durable message's position: the topic's epoch and the message's
/// sequence number, written `<epoch>-<seq>` (the SSE `id:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub epoch: u64,
    pub seq: u64,
}

impl Position {
    /// Parses `<epoch>-<seq>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Position> {
        let (epoch, seq) = text.trim().split_once('-')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(epoch) || !digits(seq) {
            return None;
        }
        Some(Position {
            epoch: epoch.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// Messages of one topic after a position, as read from this node's state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicPage {
    /// The topic's record (`None`: no durable message was ever published).
    pub record: Option<TopicRecord>,
    /// `(seq, message JSON text)` in order.
    pub messages: Vec<(u64, Vec<u8>)>,
}

/// Sent by the state machine after a durable message was applied, so each
/// node's topic actors can deliver it live.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedEvent {
    pub app: String,
    pub topic: String,
    pub position: Position,
    /// The message's JSON text, shared by every receiver.
    pub message: std::sync::Arc<[u8]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_the_newest_retain_messages_a_few_at_a_time() {
        // (oldest, last, retain) -> deleted range
        let cases = [
            ((1, 1, 10), 1..1),
            ((1, 10, 10), 1..1),
            ((1, 11, 10), 1..2),
            ((2, 12, 10), 2..3),
            ((1, 5, 1), 1..5),
            // Lowering retain from 100 to 1 deletes at most 8 per publish.
            ((1, 101, 1), 1..9),
            ((9, 102, 1), 9..17),
            // A topic with nothing kept yet.
            ((1, 0, 10), 1..1),
        ];
        for ((oldest, last, retain), expected) in cases {
            assert_eq!(
                trim_range(oldest, last, retain),
                expected,
                "{oldest} {last} {retain}"
            );
        }
    }

    #[test]
    fn positions_parse_and_print() {
        let position = Position { epoch: 3, seq: 17 };
        assert_eq!(position.to_string(), "3-17");
        assert_eq!(Position::parse("3-17"), Some(position));
        for bad in [
            "",
            "3",
            "3-",
            "-3",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-2",
            "1 -2",
            "99999999999999999999999-1",
        ] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }
}
