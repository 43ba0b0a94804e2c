//! `Proposer`: the one path every write takes into Raft. It proposes on
//! this node when it leads, forwards to the leader when another node does,
//! and waits until the entry is applied here (read-your-writes). The write
//! batcher and `Node` both sit on it; it knows neither.
//!
//! Without a reachable quorum (this node knows no leader, or leads, and a
//! majority of the voters has been silent for `unreachable_after_ms`) a
//! write fails at once with `NoQuorum` rather than waiting for a leader that
//! cannot be elected, or for a commit that cannot happen.

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use picloud_storage::{Command, CommandResult, NodeId, TypeConfig};
use tokio::time::Instant;

use crate::config::ClusterConfig;
use crate::disk::DiskFull;
use crate::error::ClusterError;
use crate::histogram::Histogram;
use crate::status::{Reachability, quorum_check};
use crate::transport::{Contacts, ForwardCallError, ForwardClient, ForwardError, wait_applied};

/// Proposes log entries: the one path every write takes into Raft.
pub struct Proposer {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) config: Arc<ClusterConfig>,
    pub(crate) forward: ForwardClient,
    /// When each member was last heard from, to tell a lost quorum.
    pub(crate) contacts: Contacts,
    /// From proposing an entry here to it being applied here, for every
    /// write that succeeded (`picloud_raft_commit_seconds`).
    pub(crate) commit_seconds: Histogram,
}

impl Proposer {
    /// Proposes one log entry and waits until it is applied on this node.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ClusterError> {
        let started = std::time::Instant::now();
        let result = self.propose_once(command).await;
        if result.is_ok() {
            self.commit_seconds.record(started.elapsed());
        }
        result
    }

    async fn propose_once(&self, command: Command) -> Result<CommandResult, ClusterError> {
        let deadline = Instant::now() + self.config.leader_wait();
        loop {
            self.wait_for_leader(deadline).await?;
            let attempt = tokio::time::timeout(
                self.config.write_timeout(),
                self.raft.client_write(command.clone()),
            )
            .await;
            match attempt {
                Ok(Ok(response)) => return Ok(response.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                    match (forward.leader_id, forward.leader_node) {
                        // Another node leads: forward the write there, then
                        // wait until this node has applied it (read-your-writes).
                        (Some(leader), Some(info)) if leader != self.id => {
                            let forwarded = tokio::select! {
                                result = self.forward.write_via(leader, &info.peer, command.clone()) => Some(result),
                                () = leader_changed(&self.raft, leader) => None,
                            };
                            let Some(forwarded) = forwarded else {
                                // The leader we sent to lost office (or died):
                                // the write may or may not have committed.
                                return Err(ClusterError::OutcomeUnknown {
                                    leader,
                                    reason: "the leader changed before it answered".into(),
                                });
                            };
                            match forwarded {
                                Ok((result, index)) => {
                                    wait_applied(&self.raft, index, self.config.write_timeout())
                                        .await?;
                                    return Ok(result);
                                }
                                Err(ForwardCallError::Refused {
                                    error:
                                        ForwardError::DiskFull {
                                            available_bytes,
                                            reserve_bytes,
                                        },
                                    ..
                                }) => {
                                    return Err(ClusterError::DiskFull(DiskFull {
                                        available_bytes,
                                        reserve_bytes,
                                    }));
                                }
                                // Certainly not applied: safe to try again.
                                Err(error) if error.not_applied() => {
                                    tracing::debug!(%error, "forwarded write not applied; retrying");
                                    pause_before_retry(&self.config, deadline).await?;
                                }
                                Err(error) => {
                                    return Err(error.write_error(self.config.write_timeout_ms));
                                }
                            }
                        }
                        // Leadership moved while the write was queued: wait and retry.
                        (leader, _) => redirect_unless_leaderless(self.id, leader)?,
                    }
                }
                Ok(Err(RaftError::Fatal(fatal))) => return Err(stopped(fatal)),
                Ok(Err(other)) => {
                    return Err(ClusterError::Raft {
                        message: other.to_string(),
                    });
                }
                Err(_) => {
                    return Err(ClusterError::Timeout {
                        operation: "write",
                        waited_ms: self.config.write_timeout_ms,
                    });
                }
            }
        }
    }

    /// Waits (bounded by `deadline`) until some node is known to lead.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<(), ClusterError> {
        wait_for_leader(&self.raft, self.id, deadline, &self.config, &self.contacts).await
    }
}

/// Waits (bounded by `deadline`) until some node is known to lead; fails at
/// once with `NoQuorum` when this node leads or knows no leader and cannot
/// reach a majority of the voters (a follower that believes in a leader
/// finds out when the forward fails, or when it starts an election).
pub(crate) async fn wait_for_leader(
    raft: &Raft<TypeConfig>,
    this_node: NodeId,
    deadline: Instant,
    config: &ClusterConfig,
    contacts: &Contacts,
) -> Result<(), ClusterError> {
    let mut metrics = raft.metrics();
    loop {
        {
            let current = metrics.borrow_and_update();
            if let Err(fatal) = &current.running_state {
                return Err(ClusterError::Stopped {
                    message: fatal.to_string(),
                });
            }
            let leader = current.current_leader;
            if leader.is_none() || leader == Some(this_node) {
                let reachability = Reachability {
                    contact_ms: |peer| contacts.since_ms(peer),
                    uptime_ms: contacts.uptime_ms(),
                    unreachable_after_ms: config.unreachable_after_ms(),
                };
                // The cheap half of the status (no member rows): this runs
                // once per proposed batch, under the metrics lock.
                let (quorum, voters, unreachable) =
                    quorum_check(this_node, &current, &reachability);
                if !quorum {
                    return Err(ClusterError::NoQuorum {
                        voters,
                        unreachable,
                    });
                }
            }
            if leader.is_some() {
                return Ok(());
            }
        }
        // Woken by a metrics change, or after a heartbeat to look at the
        // contacts again: members fall silent without any metrics changing.
        let recheck = Instant::now() + Duration::from_millis(config.heartbeat_interval_ms);
        match tokio::time::timeout_at(deadline.min(recheck), metrics.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(ClusterError::Stopped {
                    message: "raft metrics closed".to_string(),
                });
            }
            Err(_) if Instant::now() < deadline => {}
            Err(_) => {
                return Err(ClusterError::NoLeader {
                    waited_ms: config.leader_wait_ms,
                });
            }
        }
    }
}

/// After a `ForwardToLeader` answer: another node leads → `NotLeader` (the
/// caller cannot serve this here); no leader or this node → `Ok`, wait and retry.
pub(crate) fn redirect_unless_leaderless(
    this_node: NodeId,
    leader: Option<NodeId>,
) -> Result<(), ClusterError> {
    match leader {
        Some(leader) if leader != this_node => Err(ClusterError::NotLeader { leader }),
        _ => Ok(()),
    }
}

pub(crate) fn stopped(fatal: impl std::fmt::Display) -> ClusterError {
    ClusterError::Stopped {
        message: fatal.to_string(),
    }
}

/// Waits one heartbeat before a retry, or gives up with `NoLeader` once the
/// leader wait is spent.
pub(crate) async fn pause_before_retry(
    config: &ClusterConfig,
    deadline: Instant,
) -> Result<(), ClusterError> {
    if Instant::now() >= deadline {
        return Err(ClusterError::NoLeader {
            waited_ms: config.leader_wait_ms,
        });
    }
    tokio::time::sleep(Duration::from_millis(config.heartbeat_interval_ms)).await;
    Ok(())
}

/// Returns once this node no longer sees `leader` as the leader (an election
/// started or finished elsewhere), or Raft stopped.
pub(crate) async fn leader_changed(raft: &Raft<TypeConfig>, leader: NodeId) {
    let mut metrics = raft.metrics();
    loop {
        if metrics.borrow_and_update().current_leader != Some(leader) {
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
