//! Triggers in the replicated state: each app version's trigger set, the
//! outbox of pending runs, and the dead-letter table.
//!
//! Everything a trigger does to PiCloud's own state goes through the log:
//!
//! ```text
//!  kv write (apply) ── matches a kv trigger ──▶ outbox entry (depth d+1)
//!  FireCron{slot} (leader's scheduler) ── slot > last fired ──▶ outbox entry
//!  ClaimRuns{ids, term} (dispatcher) ──▶ entry.claim = term
//!  CompleteRun{id, term, ops} ── claim still `term` ──▶ ops applied + entry removed, one entry
//!  FailRun{id, term, error} ── claim still `term` ──▶ retry after backoff | dead letter
//! ```
//!
//! A run whose leader died before `CompleteRun` is claimed again by the next
//! leader (a higher term) and re-run; the old claimer's `CompleteRun`, if it
//! ever arrives, is rejected as stale. So a run's writes apply exactly once.

use serde::{Deserialize, Serialize};

use crate::node::NodeId;

/// An app version's triggers and their app-wide bounds, as deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TriggerSet {
    pub triggers: Vec<TriggerDef>,
    /// A chain of trigger runs (a run's writes firing further triggers)
    /// longer than this is dead-lettered with `trigger_loop`.
    pub chain_depth_max: u32,
    /// Pending runs of the app; a write that would add one more is rejected
    /// with `outbox_full`.
    pub outbox_max: u32,
}

/// One declared trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerDef {
    /// Unique in the app; state (last fired slot, pending runs) follows it
    /// across redeploys.
    pub name: String,
    pub script: String,
    pub kind: TriggerDefKind,
    /// Runs of one event, the first included, before it is dead-lettered.
    pub attempts_max: u32,
    /// Wait before the first retry, doubled for each later one.
    pub backoff_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TriggerDefKind {
    /// A kv write whose key matches `pattern` (see [`crate::glob`]).
    Kv {
        pattern: String,
        on_set: bool,
        on_delete: bool,
    },
    /// A schedule; slots are computed by the leader's scheduler, not here.
    Cron {
        schedule: String,
        timezone: String,
        fire_once: bool,
    },
    /// A run of the app was dead-lettered.
    DeadLetter,
    /// A committed write to a document of `collection`.
    Docs {
        collection: String,
        on_insert: bool,
        on_update: bool,
        on_delete: bool,
    },
    /// A durable pub/sub message on a topic matching `pattern` (see
    /// [`crate::glob`]).
    Pubsub { pattern: String },
    /// A committed `FilePut` (`on_put`) or `FileDelete` (`on_delete`) of a
    /// path matching `pattern` (see [`crate::glob`]).
    Files {
        pattern: String,
        on_put: bool,
        on_delete: bool,
    },
    /// A message to the app accepted by the SMTP listener, whose
    /// recipient's local part (the whole address for an alias) matches
    /// `pattern` (see [`crate::glob`]). `aliases` are the manifest's
    /// `[mail] aliases`, full addresses that also reach the app.
    Email {
        pattern: String,
        aliases: Vec<String>,
    },
}

/// What happened, as the trigger script receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TriggerEvent {
    /// `new = None` is a delete. Values are JSON text.
    Kv {
        key: String,
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    Cron {
        slot_ms: u64,
    },
    DeadLetter {
        trigger: String,
        delivery_id: String,
        code: String,
        error: String,
    },
    /// `op` is `insert`, `update` (an update or a replace) or `delete`;
    /// documents are JSON text.
    Docs {
        collection: String,
        id: String,
        op: String,
        old: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// A durable message (JSON text) at `<epoch>-<seq>` of `topic`.
    Pubsub {
        topic: String,
        message: Vec<u8>,
        epoch: u64,
        seq: u64,
    },
    /// `op` is `put` (a new file or an overwrite) or `delete`; the stat is
    /// the stored file's (the removed one's for a delete). The content is
    /// not carried: the script reads it with `files.get` if it needs it.
    Files {
        path: String,
        op: String,
        size: u64,
        etag: String,
        content_type: String,
    },
    /// A mail to deliver (trigger [`crate::email::EMAIL_TRIGGER`]): the
    /// leader's dispatcher sends it instead of running a script, tried
    /// as `retry` says (there is no declared trigger to read it from).
    Email {
        message: crate::email::EmailMessage,
        retry: crate::email::EmailRetry,
    },
    /// A message received for `recipient` (the envelope address, lower-cased).
    EmailReceived {
        recipient: String,
        message: crate::inbound_mail::InboundMessage,
    },
}

/// Who runs an entry now: the dispatcher of the leader of `term`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub term: u64,
    pub node: NodeId,
    pub at_ms: u64,
}

/// One failed run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: u64,
    pub error: String,
}

/// A pending run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Unique in the app, never reused; `<app>/<id>` is the run's delivery id.
    pub id: u64,
    pub trigger: String,
    pub event: TriggerEvent,
    /// Trigger runs in the chain that produced this entry (1 for a client's
    /// write or a cron slot).
    pub depth: u32,
    pub created_ms: u64,
    /// Failed runs so far.
    pub attempts: Vec<Attempt>,
    /// Not to be claimed before this time (retry backoff).
    pub not_before_ms: u64,
    pub claim: Option<Claim>,
}

/// Why a run was dead-lettered.
pub mod dead_code {
    /// Failed `attempts_max` times.
    pub const FAILED: &str = "failed";
    /// The chain of trigger runs grew past `chain_depth_max`.
    pub const TRIGGER_LOOP: &str = "trigger_loop";
    /// The trigger was removed by a redeploy or rollback while the run was pending.
    pub const TRIGGER_REMOVED: &str = "trigger_removed";
}

/// A run that will not be retried unless asked (`RetryDeadLetter`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub entry: OutboxEntry,
    /// One of [`dead_code`].
    pub code: String,
    pub error: String,
    pub dead_ms: u64,
}

impl TriggerSet {
    /// The kv triggers whose pattern matches `key`: (name, on_set, on_delete).
    pub fn kv_triggers_on<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Iterator<Item = (&'a str, bool, bool)> + 'a {
        self.triggers.iter().filter_map(move |def| match &def.kind {
            TriggerDefKind::Kv {
                pattern,
                on_set,
                on_delete,
            } if crate::glob::key_matches(pattern, key) => {
                Some((def.name.as_str(), *on_set, *on_delete))
            }
            _ => None,
        })
    }
}

impl TriggerSet {
    /// The pub/sub triggers whose pattern matches `topic`.
    pub fn pubsub_triggers_on<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.triggers.iter().filter_map(move |def| match &def.kind {
            TriggerDefKind::Pubsub { pattern } if crate::glob::key_matches(pattern, topic) => {
                Some(def.name.as_str())
            }
            _ => None,
        })
    }

    /// The files triggers whose pattern matches `path` and that fire on `op`
    /// (`put` or `delete`).
    pub fn files_triggers_on<'a>(
        &'a self,
        path: &'a str,
        op: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.triggers.iter().filter_map(move |def| match &def.kind {
            TriggerDefKind::Files {
                pattern,
                on_put,
                on_delete,
            } if (if op == "put" { *on_put } else { *on_delete })
                && crate::glob::key_matches(pattern, path) =>
            {
                Some(def.name.as_str())
            }
            _ => None,
        })
    }

    /// The email triggers whose pattern matches `local` (a recipient's
    /// local part, or the whole address of an alias).
    pub fn email_triggers_on<'a>(&'a self, local: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.triggers.iter().filter_map(move |def| match &def.kind {
            TriggerDefKind::Email { pattern, .. } if crate::glob::key_matches(pattern, local) => {
                Some(def.name.as_str())
            }
            _ => None,
        })
    }

    /// Whether `address` is one of the `[mail] aliases` of the set.
    pub fn has_mail_alias(&self, address: &str) -> bool {
        self.triggers.iter().any(|def| match &def.kind {
            TriggerDefKind::Email { aliases, .. } => aliases.iter().any(|alias| alias == address),
            _ => false,
        })
    }

    /// The docs triggers of `collection` that fire on `op` (`insert`,
    /// `update`, `delete`).
    pub fn docs_triggers_on<'a>(
        &'a self,
        collection: &'a str,
        op: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.triggers.iter().filter_map(move |def| match &def.kind {
            TriggerDefKind::Docs {
                collection: watched,
                on_insert,
                on_update,
                on_delete,
            } if watched == collection
                && match op {
                    "insert" => *on_insert,
                    "update" => *on_update,
                    _ => *on_delete,
                } =>
            {
                Some(def.name.as_str())
            }
            _ => None,
        })
    }
}

/// The delivery id scripts see as `ctx.delivery_id`: stable across retries.
pub fn delivery_id(app: &str, id: u64) -> String {
    format!("{app}/{id}")
}

/// The wait before retry number `failures` (1 = the first retry):
/// `backoff_ms` doubled for each failure after the first, capped at an hour.
pub fn retry_delay_ms(backoff_ms: u64, failures: u32) -> u64 {
    const CAP_MS: u64 = 3_600_000;
    let doublings = failures.saturating_sub(1).min(32);
    backoff_ms.saturating_mul(1u64 << doublings).min(CAP_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trigger sets travel in `Deploy` entries and events in the outbox:
    /// a variant's index is on disk, so new kinds only ever go last.
    #[test]
    fn files_variants_come_last() {
        let kind = TriggerDefKind::Files {
            pattern: "*".into(),
            on_put: true,
            on_delete: true,
        };
        let event = TriggerEvent::Files {
            path: "a".into(),
            op: "put".into(),
            size: 1,
            etag: String::new(),
            content_type: String::new(),
        };
        assert_eq!(crate::codec::encode(&kind).expect("encode")[0], 5);
        assert_eq!(crate::codec::encode(&event).expect("encode")[0], 5);
    }

    /// Like the files variants: the email kind and event are the newest.
    #[test]
    fn email_variants_come_last() {
        let kind = TriggerDefKind::Email {
            pattern: "*".into(),
            aliases: Vec::new(),
        };
        let event = TriggerEvent::EmailReceived {
            recipient: "a@shop.example.org".into(),
            message: crate::inbound_mail::InboundMessage {
                message_id: "<1@x>".into(),
                from: "b@x".into(),
                to: Vec::new(),
                subject: String::new(),
                text: None,
                html: None,
                headers: Vec::new(),
                attachments: Vec::new(),
            },
        };
        assert_eq!(crate::codec::encode(&kind).expect("encode")[0], 6);
        // After the outgoing mail's `Email` (6).
        assert_eq!(crate::codec::encode(&event).expect("encode")[0], 7);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(retry_delay_ms(1_000, 1), 1_000);
        assert_eq!(retry_delay_ms(1_000, 2), 2_000);
        assert_eq!(retry_delay_ms(1_000, 4), 8_000);
        assert_eq!(retry_delay_ms(1_000, 40), 3_600_000);
        assert_eq!(delivery_id("shop", 7), "shop/7");
    }
}
