//! Write batching: many client commands, one Raft log entry.
//!
//! openraft 0.9's leader waits for each append to be flushed before it takes
//! the next client write, so one proposal per write means one fsync per write
//! (~2k writes/s on an SD card at best). The batcher sits in front of
//! `client_write`: while a batch is being committed, new writes queue; the next
//! proposal takes everything queued (up to a bound) as one `Command::Batch`.
//! An idle node adds no delay: a lone write is proposed at once, on its own.
//!
//! ```text
//!  write() ─▶ [bounded queue] ─▶ batcher task ─▶ Batch(cmds) ─▶ client_write ─▶ results fanned out
//!                                  ≤ batches_inflight_max proposals at a time
//! ```

use std::sync::Arc;

use picloud_storage::{Command, CommandResult};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::ClusterError;
use crate::proposer::Proposer;

/// One queued write and where its result goes.
pub struct Proposal {
    pub command: Command,
    pub reply: oneshot::Sender<Result<CommandResult, ClusterError>>,
}

/// Bounds of the batcher.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most commands in one log entry.
    pub commands_max: usize,
    /// Most encoded-ish bytes (sum of command payload sizes) in one log entry.
    pub bytes_max: usize,
    /// Batches proposed and not yet applied at one time.
    pub inflight_max: usize,
}

/// A rough size of a command's payload, to bound a batch's bytes without
/// encoding it twice, and to claim disk space for it (`crate::disk`).
pub fn payload_bytes(command: &Command) -> usize {
    use picloud_storage::{DocOp, KvOp};
    let op_bytes = |op: &KvOp| match op {
        KvOp::Set { key, value, .. } => key.len() + value.len(),
        KvOp::Delete { key } | KvOp::Incr { key, .. } => key.len(),
        KvOp::Cas { key, expected, new } => {
            key.len() + expected.as_ref().map_or(0, Vec::len) + new.as_ref().map_or(0, Vec::len)
        }
    };
    let doc_bytes = |op: &DocOp| {
        op.collection().len()
            + op.id().len()
            + match op {
                DocOp::Insert { doc, .. } | DocOp::Replace { doc, .. } => doc.len(),
                DocOp::Update { patch, .. } => patch.len(),
                DocOp::Delete { .. } => 0,
            }
    };
    64 + match command {
        Command::Kv { app, op, .. } => app.len() + op_bytes(op),
        Command::KvAtomic { app, ops, .. } => app.len() + ops.iter().map(op_bytes).sum::<usize>(),
        Command::Docs { app, ops, .. } => app.len() + ops.iter().map(doc_bytes).sum::<usize>(),
        Command::CompleteRun {
            app,
            ops,
            docs,
            publishes,
            ..
        } => {
            app.len()
                + ops.iter().map(op_bytes).sum::<usize>()
                + docs.iter().map(doc_bytes).sum::<usize>()
                + publishes
                    .iter()
                    .map(|publish| publish.topic.len() + publish.message.len())
                    .sum::<usize>()
        }
        Command::FailRun { app, error, .. } => app.len() + error.len(),
        Command::Publish {
            app,
            topic,
            message,
            ..
        } => app.len() + topic.len() + message.len(),
        Command::Deploy(picloud_storage::VersionDeploy { bundle, .. }) => bundle.len(),
        Command::PublishLib { files, .. } => files.len(),
        Command::FilePut {
            app,
            path,
            content_type,
            blocks,
            inline,
            ..
        } => {
            app.len()
                + path.len()
                + content_type.len()
                + 32 * blocks.len()
                + inline.as_ref().map_or(0, Vec::len)
        }
        Command::InboundMail(mail) => mail.payload_bytes(),
        Command::Users(picloud_storage::users::UsersCommand::Create {
            data_json,
            password_hash,
            ..
        }) => 256 + data_json.len() + password_hash.len(),
        Command::Users(picloud_storage::users::UsersCommand::Update { patch, .. }) => {
            256 + patch.data_json.as_ref().map_or(0, String::len)
        }
        Command::SecretSet { sealed, .. } => sealed.len(),
        Command::Email(email) => email.payload_bytes(),
        Command::SecretsRekey { secrets } => secrets
            .iter()
            .map(|secret| secret.old.len() + secret.new.len())
            .sum(),
        Command::Batch(commands) => commands.iter().map(payload_bytes).sum(),
        Command::SetClusterCa { cert_pem, key_pem } => cert_pem.len() + key_pem.len(),
        _ => 256,
    }
}

/// The batcher's state, kept outside any one run of its loop so that a run
/// restarted after a panic (it is a supervised [`crate::duty::Duty`]) picks up
/// the queued writes and the one it had taken but not yet proposed.
pub struct Batcher {
    proposer: Arc<Proposer>,
    queue: tokio::sync::Mutex<mpsc::Receiver<Proposal>>,
    /// A proposal taken off the queue and not yet in a batch.
    carry: std::sync::Mutex<Option<Proposal>>,
    inflight: Arc<Semaphore>,
    limits: BatchLimits,
}

impl Batcher {
    pub fn new(
        proposer: Arc<Proposer>,
        queue: mpsc::Receiver<Proposal>,
        limits: BatchLimits,
    ) -> Batcher {
        Batcher {
            proposer,
            queue: tokio::sync::Mutex::new(queue),
            carry: std::sync::Mutex::new(None),
            inflight: Arc::new(Semaphore::new(limits.inflight_max.max(1))),
            limits,
        }
    }

    fn take_carry(&self) -> Option<Proposal> {
        self.carry.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn set_carry(&self, proposal: Proposal) {
        *self.carry.lock().unwrap_or_else(|e| e.into_inner()) = Some(proposal);
    }

    /// Runs until every sender is gone (the node stopped).
    pub async fn run(self: Arc<Self>) {
        // One run at a time holds the receiver; a restarted run waits for the
        // panicked one's guard to drop (it drops while unwinding).
        let mut queue = self.queue.lock().await;
        loop {
            let first = match self.take_carry() {
                Some(proposal) => proposal,
                None => match queue.recv().await {
                    Some(proposal) => proposal,
                    None => return,
                },
            };
            // Kept where a restarted run finds it while this run may panic.
            self.set_carry(first);
            crate::duty::fault_point("batcher");
            // Wait for a proposal slot before draining, so everything that
            // queued while the previous batch was committing joins this one.
            let Ok(permit) = self.inflight.clone().acquire_owned().await else {
                return;
            };
            let Some(first) = self.take_carry() else {
                continue;
            };
            let mut bytes = payload_bytes(&first.command);
            let mut batch = vec![first];
            while batch.len() < self.limits.commands_max {
                let Ok(next) = queue.try_recv() else {
                    break;
                };
                let size = payload_bytes(&next.command);
                if bytes + size > self.limits.bytes_max {
                    self.set_carry(next);
                    break;
                }
                bytes += size;
                batch.push(next);
            }
            let proposer = self.proposer.clone();
            tokio::spawn(async move {
                propose(&proposer, batch).await;
                drop(permit);
            });
        }
    }
}

async fn propose(proposer: &Proposer, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        if let Some(single) = batch.pop() {
            let result = proposer.propose(single.command).await;
            // The writer may have given up (timeout, client gone): fine.
            let _ = single.reply.send(result);
        }
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let count = commands.len();
    match proposer.propose(Command::Batch(commands)).await {
        Ok(CommandResult::Batch(results)) if results.len() == count => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Ok(other) => {
            let message = format!("batch of {count} applied with an unexpected result {other:?}");
            for reply in replies {
                let _ = reply.send(Err(ClusterError::Raft {
                    message: message.clone(),
                }));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.duplicate()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use picloud_storage::{DocOp, KvOp};

    use super::*;

    #[test]
    fn payloads_count_the_bytes_that_will_be_written() {
        let doc = vec![b'd'; 10_000];
        let docs = Command::Docs {
            app: "a".into(),
            ops: vec![DocOp::Insert {
                collection: "c".into(),
                id: "1".into(),
                doc: doc.clone(),
            }],
            now_ms: 0,
        };
        assert!(payload_bytes(&docs) >= doc.len());
        let run = Command::CompleteRun {
            app: "a".into(),
            id: 1,
            term: 1,
            claim_ms: 0,
            ops: vec![KvOp::Set {
                key: "k".into(),
                value: doc.clone(),
                expires_at_ms: None,
            }],
            docs: vec![DocOp::Replace {
                collection: "c".into(),
                id: "1".into(),
                doc: doc.clone(),
            }],
            publishes: Vec::new(),
            now_ms: 0,
        };
        assert!(payload_bytes(&run) >= 2 * doc.len());
        let publish = Command::Publish {
            app: "a".into(),
            topic: "t".into(),
            message: doc.clone(),
            retain: 10,
            now_ms: 0,
        };
        assert!(payload_bytes(&publish) >= doc.len());
        let batch = Command::Batch(vec![docs.clone(), docs]);
        assert!(payload_bytes(&batch) >= 2 * doc.len());
        let revoke = Command::KeyRevoke { id: "k".into() };
        assert!(payload_bytes(&revoke) < 1024);
    }
}
