//! Per-app log lines kept on this node: a bounded ring for `logs APP` and a
//! broadcast channel for `logs APP --follow`.
//!
//! Logs are node-local and not replicated: they are diagnostics, and putting
//! them on the Raft log would cost an fsync per `log.info`.
//!
//! Cluster-wide views ask the other members for their lines on request
//! (`Node::member_logs`, a `Forward` stream each, bounded by
//! [`MEMBER_LOGS_WAIT_MS`]) and merge them by time ([`merge_lines`]); a
//! member that does not answer in time is reported, not waited for:
//!
//! ```text
//!  GET /apps/{app}/logs ─▶ cluster_recent ─┬─ this node's LogBook
//!                                          ├─ member 2: ForwardRequest::Logs ─▶ its LogBook (LogSource)
//!                                          └─ member 3: no answer in time ─▶ "unavailable": [3]
//!                          merge_lines (time, node, seq; the last `limit`)
//!  follow: this node's broadcast + follow_member per answering member (asks
//!          every FOLLOW_POLL_MS from the position it reached; a failure ends
//!          that member's stream with FollowEvent::Unavailable)
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use picloud_cluster::transport::logs::{LogSource, PEER_LOG_LINES_MAX, PeerLogLine, PeerLogs};
use picloud_cluster::{MemberLogsRequest, Node};
use picloud_lua_sdk::LogLevel;
use picloud_storage::NodeId;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// How long another member may take to send its lines before it is reported
/// unavailable (a down member must not hold up the answer).
pub const MEMBER_LOGS_WAIT_MS: u64 = 1_000;

/// How often a cluster-wide follow asks each other member for its new lines.
pub const FOLLOW_POLL_MS: u64 = 250;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Position in this node's log of the app; increases by one per line.
    pub seq: u64,
    pub ts_ms: u64,
    pub level: &'static str,
    pub message: String,
}

#[derive(Debug)]
struct AppLog {
    next_seq: u64,
    lines: VecDeque<LogLine>,
    follow: broadcast::Sender<LogLine>,
}

/// Bounds of the log book.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Lines kept per app; older lines are dropped.
    pub lines_per_app_max: usize,
    /// Bytes kept of one line; longer messages are cut and marked.
    pub line_bytes_max: usize,
    /// Lines a slow `--follow` reader may fall behind before it skips ahead.
    pub follow_buffer_lines: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            lines_per_app_max: 1_000,
            line_bytes_max: 4_096,
            follow_buffer_lines: 256,
        }
    }
}

/// The log lines of every app on this node.
#[derive(Debug, Clone)]
pub struct LogBook {
    apps: Arc<Mutex<HashMap<String, AppLog>>>,
    limits: LogLimits,
}

impl LogBook {
    pub fn new(limits: LogLimits) -> LogBook {
        LogBook {
            apps: Arc::new(Mutex::new(HashMap::new())),
            limits,
        }
    }

    fn with_app<T>(&self, app: &str, f: impl FnOnce(&mut AppLog) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-push; the ring
        // is still structurally sound, so keep using it.
        let mut apps = self
            .apps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let entry = apps.entry(app.to_string()).or_insert_with(|| AppLog {
            next_seq: 1,
            lines: VecDeque::new(),
            follow: broadcast::channel(self.limits.follow_buffer_lines.max(1)).0,
        });
        f(entry)
    }

    pub fn push(&self, app: &str, level: LogLevel, mut message: String, ts_ms: u64) {
        if message.len() > self.limits.line_bytes_max {
            let mut cut = self.limits.line_bytes_max;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …[truncated]");
        }
        let lines_max = self.limits.lines_per_app_max;
        self.with_app(app, |log| {
            let line = LogLine {
                seq: log.next_seq,
                ts_ms,
                level: level.as_str(),
                message,
            };
            log.next_seq += 1;
            if log.lines.len() >= lines_max {
                log.lines.pop_front();
            }
            log.lines.push_back(line.clone());
            // No follower is not an error.
            let _ = log.follow.send(line);
        });
    }

    /// The last `limit` lines of `app`, oldest first.
    pub fn recent(&self, app: &str, limit: usize) -> Vec<LogLine> {
        self.with_app(app, |log| {
            let skip = log.lines.len().saturating_sub(limit);
            log.lines.iter().skip(skip).cloned().collect()
        })
    }

    /// Recent lines plus a receiver for every later one, taken under one lock so
    /// no line falls between the two.
    pub fn follow(&self, app: &str, limit: usize) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        self.with_app(app, |log| {
            let skip = log.lines.len().saturating_sub(limit);
            (
                log.lines.iter().skip(skip).cloned().collect(),
                log.follow.subscribe(),
            )
        })
    }

    /// Forgets an app's lines (after the app is deleted).
    pub fn forget(&self, app: &str) {
        let mut apps = self
            .apps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        apps.remove(app);
    }
}

impl LogSource for LogBook {
    fn lines(&self, app: &str, from_seq: u64, limit: usize) -> PeerLogs {
        self.with_app(app, |log| {
            let wanted = log.lines.iter().filter(|line| line.seq >= from_seq);
            let skip = wanted.clone().count().saturating_sub(limit);
            PeerLogs {
                lines: wanted.skip(skip).map(peer_line).collect(),
                next_seq: log.next_seq,
            }
        })
    }
}

fn peer_line(line: &LogLine) -> PeerLogLine {
    PeerLogLine {
        seq: line.seq,
        ts_ms: line.ts_ms,
        level: line.level.to_string(),
        message: line.message.clone(),
    }
}

/// One log line with the node it was logged on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterLogLine {
    pub node: NodeId,
    pub seq: u64,
    pub ts_ms: u64,
    pub level: String,
    pub message: String,
}

impl ClusterLogLine {
    fn new(node: NodeId, line: PeerLogLine) -> ClusterLogLine {
        ClusterLogLine {
            node,
            seq: line.seq,
            ts_ms: line.ts_ms,
            level: line.level,
            message: line.message,
        }
    }
}

/// Every node's lines in one list, ordered by time (then node, then
/// position, so equal times keep each node's order), the last `limit` kept.
pub fn merge_lines(batches: Vec<(NodeId, Vec<PeerLogLine>)>, limit: usize) -> Vec<ClusterLogLine> {
    let mut lines: Vec<ClusterLogLine> = batches
        .into_iter()
        .flat_map(|(node, lines)| {
            lines
                .into_iter()
                .map(move |line| ClusterLogLine::new(node, line))
        })
        .collect();
    lines.sort_by_key(|line| (line.ts_ms, line.node, line.seq));
    let skip = lines.len().saturating_sub(limit);
    lines.drain(..skip);
    lines
}

/// An app's recent lines on every member, merged.
#[derive(Debug, Clone, Default)]
pub struct ClusterLogs {
    pub lines: Vec<ClusterLogLine>,
    /// Members that did not answer in time (down, unreachable, or refusing).
    pub unavailable: Vec<NodeId>,
    /// Each member that answered, its peer address and the position its next
    /// line will have: where a follow goes on from.
    pub answered: Vec<(NodeId, String, u64)>,
}

/// `local` (this node's recent lines of `app`) merged with the last `limit`
/// lines of every other member, each asked at once and waited for at most
/// [`MEMBER_LOGS_WAIT_MS`].
pub async fn cluster_recent(
    node: &Node,
    local: Vec<LogLine>,
    app: &str,
    limit: usize,
) -> ClusterLogs {
    let wait = Duration::from_millis(MEMBER_LOGS_WAIT_MS);
    let request = MemberLogsRequest {
        app,
        from_seq: 0,
        limit,
    };
    let asks = node
        .peer_addresses()
        .into_iter()
        .map(|(member, peer)| async move {
            let answer = node.member_logs(member, &peer, request, wait).await;
            (member, peer, answer)
        });
    let mut logs = ClusterLogs::default();
    let mut batches = vec![(node.id(), local.iter().map(peer_line).collect())];
    for (member, peer, answer) in futures::future::join_all(asks).await {
        match answer {
            Some(answer) => {
                logs.answered.push((member, peer, answer.next_seq));
                batches.push((member, answer.lines));
            }
            None => logs.unavailable.push(member),
        }
    }
    logs.unavailable.sort_unstable();
    logs.lines = merge_lines(batches, limit);
    logs
}

/// What a cluster-wide follow sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    Line(ClusterLogLine),
    /// This member stopped answering; its stream ends, the others go on.
    Unavailable(NodeId),
    /// This many lines of the node were skipped (the reader fell behind).
    Lagged {
        node: NodeId,
        skipped: u64,
    },
}

/// This node's new lines, from `receiver` (see [`LogBook::follow`]).
pub fn follow_local(
    node: NodeId,
    receiver: broadcast::Receiver<LogLine>,
) -> impl Stream<Item = FollowEvent> + Send + 'static {
    futures::stream::unfold(receiver, move |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(line) => FollowEvent::Line(ClusterLogLine::new(node, peer_line(&line))),
            Err(RecvError::Lagged(skipped)) => FollowEvent::Lagged { node, skipped },
            Err(RecvError::Closed) => return None,
        };
        Some((event, receiver))
    })
}

/// Where a member's follow stands.
struct MemberFollow {
    node: Node,
    member: NodeId,
    peer: String,
    app: String,
    from_seq: u64,
    pending: VecDeque<FollowEvent>,
    ended: bool,
}

/// `member`'s new lines of `app` from `from_seq` on, asked every
/// [`FOLLOW_POLL_MS`]; the first unanswered ask yields
/// [`FollowEvent::Unavailable`] and ends the stream. The stream owns no task:
/// dropping it (the client went away) stops the asking.
pub fn follow_member(
    node: Node,
    member: NodeId,
    peer: String,
    app: String,
    from_seq: u64,
) -> impl Stream<Item = FollowEvent> + Send + 'static {
    let state = MemberFollow {
        node,
        member,
        peer,
        app,
        from_seq,
        pending: VecDeque::new(),
        ended: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((event, state));
            }
            if state.ended {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(FOLLOW_POLL_MS)).await;
            let request = MemberLogsRequest {
                app: &state.app,
                from_seq: state.from_seq,
                limit: PEER_LOG_LINES_MAX,
            };
            let wait = Duration::from_millis(MEMBER_LOGS_WAIT_MS);
            match state
                .node
                .member_logs(state.member, &state.peer, request, wait)
                .await
            {
                Some(answer) => {
                    state
                        .pending
                        .extend(follow_events(state.member, state.from_seq, &answer));
                    state.from_seq = next_from_seq(state.from_seq, &answer);
                }
                None => {
                    state.ended = true;
                    state
                        .pending
                        .push_back(FollowEvent::Unavailable(state.member));
                }
            }
        }
    })
}

/// The events one answer of a followed member gives: a `Lagged` first when
/// lines between the asked position and the first sent were dropped from
/// its ring, then the lines.
fn follow_events(member: NodeId, from_seq: u64, answer: &PeerLogs) -> Vec<FollowEvent> {
    let mut events = Vec::with_capacity(answer.lines.len() + 1);
    // Position 0 asks for everything kept: nothing counts as skipped.
    if let Some(first) = answer.lines.first()
        && from_seq > 0
        && first.seq > from_seq
    {
        events.push(FollowEvent::Lagged {
            node: member,
            skipped: first.seq - from_seq,
        });
    }
    events.extend(
        answer
            .lines
            .iter()
            .cloned()
            .map(|line| FollowEvent::Line(ClusterLogLine::new(member, line))),
    );
    events
}

/// Where the next ask of a followed member starts: after its last line, or
/// from its first line when it restarted (its positions began again below
/// the one asked).
fn next_from_seq(from_seq: u64, answer: &PeerLogs) -> u64 {
    if answer.next_seq < from_seq {
        0
    } else {
        answer.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, ts_ms: u64) -> PeerLogLine {
        PeerLogLine {
            seq,
            ts_ms,
            level: "info".into(),
            message: format!("line {seq}"),
        }
    }

    #[test]
    fn merge_orders_by_time_tags_nodes_and_keeps_the_newest() {
        let merged = merge_lines(
            vec![
                (1, vec![line(1, 10), line(2, 30)]),
                (2, vec![line(7, 20), line(8, 30)]),
                (3, vec![line(4, 5)]),
            ],
            4,
        );
        let order: Vec<(NodeId, u64)> = merged.iter().map(|l| (l.node, l.seq)).collect();
        // The oldest line (node 3 at 5 ms) is cut by the limit; equal times
        // go by node id.
        assert_eq!(order, vec![(1, 1), (2, 7), (1, 2), (2, 8)]);
        assert!(merge_lines(vec![(1, vec![line(1, 1)])], 0).is_empty());
    }

    #[test]
    fn book_answers_members_from_a_position() {
        let book = LogBook::new(LogLimits {
            lines_per_app_max: 5,
            ..LogLimits::default()
        });
        for n in 0..4 {
            book.push("a", LogLevel::Info, format!("line {n}"), n);
        }
        let answer = book.lines("a", 3, 10);
        assert_eq!(
            answer.lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(answer.next_seq, 5);
        let newest = book.lines("a", 0, 1);
        assert_eq!(
            newest.lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![4]
        );
        assert!(book.lines("a", 5, 10).lines.is_empty());
    }

    #[test]
    fn follow_reports_skipped_lines_and_restarts() {
        let answer = PeerLogs {
            lines: vec![line(9, 1), line(10, 2)],
            next_seq: 11,
        };
        let events = follow_events(2, 6, &answer);
        assert_eq!(
            events[0],
            FollowEvent::Lagged {
                node: 2,
                skipped: 3
            }
        );
        assert_eq!(events.len(), 3);
        assert_eq!(next_from_seq(6, &answer), 11);
        let caught_up = PeerLogs {
            lines: vec![line(6, 1)],
            next_seq: 7,
        };
        assert_eq!(follow_events(2, 6, &caught_up).len(), 1);
        assert_eq!(follow_events(2, 0, &answer).len(), 2);
        // A member that restarted numbers its lines from 1 again.
        let restarted = PeerLogs {
            lines: vec![],
            next_seq: 2,
        };
        assert_eq!(next_from_seq(11, &restarted), 0);
    }

    #[test]
    fn ring_is_bounded_and_follow_sees_new_lines() {
        let book = LogBook::new(LogLimits {
            lines_per_app_max: 3,
            line_bytes_max: 8,
            follow_buffer_lines: 4,
        });
        for n in 0..5 {
            book.push("a", LogLevel::Info, format!("line {n}"), n);
        }
        let recent = book.recent("a", 10);
        assert_eq!(
            recent.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let (backlog, mut rx) = book.follow("a", 1);
        assert_eq!(backlog.len(), 1);
        book.push("a", LogLevel::Warn, "a very long message".into(), 9);
        let line = rx.try_recv().expect("followed line");
        assert_eq!(line.level, "warn");
        assert!(line.message.starts_with("a very l") && line.message.ends_with("[truncated]"));
        assert!(book.recent("b", 10).is_empty());
    }
}
