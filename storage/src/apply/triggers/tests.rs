//! `apply` of the trigger commands: outbox entries from kv writes and cron
//! slots, the claim guard, retries, dead letters, trigger swaps on deploy.

use crate::apply::tests::Fixture;
use crate::command::{
    ApplyError, Command, CommandResult, DeployParts, KvOp, RunOutcome, VersionDeploy,
};
use crate::triggers::{TriggerDef, TriggerDefKind, TriggerEvent, TriggerSet, dead_code};

impl Fixture {
    fn deploy_triggers(&mut self, triggers: TriggerSet) -> CommandResult {
        self.run(Command::Deploy(VersionDeploy {
            app: "shop".into(),
            bundle: b"code".to_vec(),
            now_ms: 1,
            versions_keep: 5,
            parts: DeployParts::WithTriggers(triggers),
        }))
    }

    fn put(&mut self, key: &str, value: &str) -> CommandResult {
        self.run(Command::Kv {
            app: "shop".into(),
            op: set_op(key, value),
            now_ms: 10,
        })
    }

    fn claim(&mut self, ids: &[u64], term: u64, now_ms: u64) -> (Vec<u64>, u64) {
        match self.run(Command::ClaimRuns {
            app: "shop".into(),
            ids: ids.to_vec(),
            term,
            node: 1,
            now_ms,
            reclaim_after_ms: 60_000,
        }) {
            CommandResult::RunsClaimed { ids, claim_ms } => (ids, claim_ms),
            other => panic!("claim: {other:?}"),
        }
    }

    fn complete(&mut self, id: u64, term: u64, claim_ms: u64, ops: Vec<KvOp>) -> CommandResult {
        self.run(Command::CompleteRun {
            app: "shop".into(),
            id,
            term,
            claim_ms,
            ops,
            docs: vec![],
            publishes: Vec::new(),
            now_ms: claim_ms + 5,
        })
    }

    fn fail(&mut self, id: u64, term: u64, claim_ms: u64, now_ms: u64) -> CommandResult {
        self.run(Command::FailRun {
            app: "shop".into(),
            id,
            term,
            claim_ms,
            error: "boom at line 3".into(),
            now_ms,
        })
    }

    fn outbox_ids(&self) -> Vec<u64> {
        let entries = self.reader.outbox("shop", 0, 100).expect("outbox");
        assert_eq!(
            self.reader.outbox_len("shop").expect("len"),
            entries.len() as u64,
            "the outbox count matches its entries"
        );
        entries.iter().map(|entry| entry.id).collect()
    }

    fn value(&self, key: &str) -> Option<String> {
        self.reader
            .kv_get("shop", key, 0)
            .expect("get")
            .map(|value| String::from_utf8(value).expect("utf-8"))
    }
}

fn set_op(key: &str, value: &str) -> KvOp {
    KvOp::Set {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        expires_at_ms: None,
    }
}

fn kv_trigger(name: &str, pattern: &str, on_set: bool, on_delete: bool) -> TriggerDef {
    TriggerDef {
        name: name.into(),
        script: format!("{name}.lua"),
        kind: TriggerDefKind::Kv {
            pattern: pattern.into(),
            on_set,
            on_delete,
        },
        attempts_max: 2,
        backoff_ms: 100,
    }
}

fn cron_trigger(name: &str) -> TriggerDef {
    TriggerDef {
        name: name.into(),
        script: format!("{name}.lua"),
        kind: TriggerDefKind::Cron {
            schedule: "@every 1s".into(),
            timezone: "UTC".into(),
            fire_once: false,
        },
        attempts_max: 2,
        backoff_ms: 100,
    }
}

fn dead_letter_trigger(name: &str) -> TriggerDef {
    TriggerDef {
        name: name.into(),
        script: format!("{name}.lua"),
        kind: TriggerDefKind::DeadLetter,
        attempts_max: 1,
        backoff_ms: 100,
    }
}

fn set_of(triggers: Vec<TriggerDef>) -> TriggerSet {
    TriggerSet {
        triggers,
        chain_depth_max: 8,
        outbox_max: 100,
    }
}

fn rejected(error: ApplyError) -> CommandResult {
    CommandResult::Rejected(error)
}

#[test]
fn matching_committed_writes_queue_runs_with_old_and_new_values() {
    let mut f = Fixture::new();
    f.deploy_triggers(set_of(vec![
        kv_trigger("orders", "orders/*", true, true),
        kv_trigger("deletes", "orders/*", false, true),
    ]));
    f.put("orders/1", "1");
    f.put("orders/1", "2");
    f.put("other/1", "1");
    f.run(Command::Kv {
        app: "shop".into(),
        op: KvOp::Cas {
            key: "orders/1".into(),
            expected: Some(b"7".to_vec()),
            new: Some(b"8".to_vec()),
        },
        now_ms: 10,
    });
    f.run(Command::Kv {
        app: "shop".into(),
        op: KvOp::Delete {
            key: "orders/1".into(),
        },
        now_ms: 10,
    });
    // Deleting what is not there changes nothing: no run.
    f.run(Command::Kv {
        app: "shop".into(),
        op: KvOp::Delete {
            key: "orders/9".into(),
        },
        now_ms: 10,
    });
    let entries = f.reader.outbox("shop", 0, 100).expect("outbox");
    let seen: Vec<(&str, &TriggerEvent)> = entries
        .iter()
        .map(|entry| (entry.trigger.as_str(), &entry.event))
        .collect();
    let event = |old: Option<&str>, new: Option<&str>| TriggerEvent::Kv {
        key: "orders/1".into(),
        old: old.map(|v| v.as_bytes().to_vec()),
        new: new.map(|v| v.as_bytes().to_vec()),
    };
    assert_eq!(
        seen,
        vec![
            ("orders", &event(None, Some("1"))),
            ("orders", &event(Some("1"), Some("2"))),
            ("orders", &event(Some("2"), None)),
            ("deletes", &event(Some("2"), None)),
        ]
    );
    assert!(entries.iter().all(|entry| entry.depth == 1));
    assert_eq!(f.outbox_ids(), vec![1, 2, 3, 4]);
}

#[test]
fn a_cron_slot_fires_once() {
    let mut f = Fixture::new();
    f.deploy_triggers(set_of(vec![cron_trigger("tick")]));
    let fire = |f: &mut Fixture, slot_ms| {
        f.run(Command::FireCron {
            app: "shop".into(),
            trigger: "tick".into(),
            slot_ms,
            now_ms: slot_ms + 3,
        })
    };
    assert_eq!(
        fire(&mut f, 1_000),
        CommandResult::TriggerFired { id: Some(1) }
    );
    // The same slot again (a new leader re-proposing it), or an older one.
    assert_eq!(
        fire(&mut f, 1_000),
        CommandResult::TriggerFired { id: None }
    );
    assert_eq!(fire(&mut f, 500), CommandResult::TriggerFired { id: None });
    assert_eq!(
        fire(&mut f, 2_000),
        CommandResult::TriggerFired { id: Some(2) }
    );
    assert_eq!(
        f.reader.last_fired("shop", "tick").expect("fired"),
        Some(2_000)
    );
    assert_eq!(f.outbox_ids(), vec![1, 2]);
    assert_eq!(
        f.run(Command::FireCron {
            app: "shop".into(),
            trigger: "nope".into(),
            slot_ms: 1,
            now_ms: 1,
        }),
        rejected(ApplyError::TriggerNotFound {
            app: "shop".into(),
            trigger: "nope".into()
        })
    );
}

#[test]
fn only_the_current_claim_completes_a_run_and_its_writes_apply_once() {
    let mut f = Fixture::new();
    f.deploy_triggers(set_of(vec![kv_trigger("orders", "orders/*", true, false)]));
    f.put("orders/1", "1");
    let (ids, old_claim) = f.claim(&[1], 2, 100);
    assert_eq!(ids, vec![1]);
    // Claimed and fresh: the same term does not take it again.
    assert_eq!(f.claim(&[1], 2, 200).0, Vec::<u64>::new());
    // A new leader (term 3) takes it over; the old claimer's report is stale.
    let (ids, claim) = f.claim(&[1], 3, 300);
    assert_eq!(ids, vec![1]);
    let counted = vec![KvOp::Incr {
        key: "runs".into(),
        by: 1,
    }];
    assert_eq!(
        f.complete(1, 2, old_claim, counted.clone()),
        rejected(ApplyError::StaleClaim {
            app: "shop".into(),
            id: 1
        })
    );
    assert_eq!(f.value("runs"), None);
    assert_eq!(
        f.complete(1, 3, claim, counted.clone()),
        CommandResult::Run(RunOutcome::Completed)
    );
    assert_eq!(f.value("runs").as_deref(), Some("1"));
    assert!(f.outbox_ids().is_empty());
    // Reported twice (a retried proposal): the second is stale, no double write.
    assert_eq!(
        f.complete(1, 3, claim, counted),
        rejected(ApplyError::StaleClaim {
            app: "shop".into(),
            id: 1
        })
    );
    assert_eq!(f.value("runs").as_deref(), Some("1"));
}

#[test]
fn a_run_whose_writes_fire_triggers_again_is_stopped_at_the_chain_depth() {
    let mut f = Fixture::new();
    let mut set = set_of(vec![kv_trigger("echo", "loop/*", true, false)]);
    set.chain_depth_max = 3;
    f.deploy_triggers(set);
    f.put("loop/0", "0");
    // Each run writes another loop/ key, which fires the trigger again.
    for depth in 1..=3u64 {
        let id = *f.outbox_ids().first().expect("a pending run");
        let entry = &f.reader.outbox("shop", 0, 1).expect("outbox")[0];
        assert_eq!(u64::from(entry.depth), depth);
        let (_, claim) = f.claim(&[id], 1, 100 * depth);
        let write = vec![set_op(&format!("loop/{depth}"), "1")];
        assert_eq!(
            f.complete(id, 1, claim, write),
            CommandResult::Run(RunOutcome::Completed)
        );
    }
    // The fourth run would be a chain of 4 > 3: dead-lettered, not queued.
    assert!(f.outbox_ids().is_empty());
    let dead = f.reader.dead_letters("shop", 0, 10).expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].code, dead_code::TRIGGER_LOOP);
    assert_eq!(dead[0].entry.depth, 4);
    assert_eq!(f.value("loop/3").as_deref(), Some("1"));
}

#[test]
fn failures_retry_with_backoff_then_dead_letter_and_fire_dead_letter_triggers() {
    let mut f = Fixture::new();
    f.deploy_triggers(set_of(vec![
        kv_trigger("orders", "orders/*", true, false),
        dead_letter_trigger("alert"),
    ]));
    f.put("orders/1", "1");
    let (_, claim) = f.claim(&[1], 1, 1_000);
    assert_eq!(
        f.fail(1, 1, claim, 1_010),
        CommandResult::Run(RunOutcome::WillRetry {
            not_before_ms: 1_110
        })
    );
    // Not due before the backoff has passed.
    assert!(f.claim(&[1], 1, 1_100).0.is_empty());
    let (ids, claim) = f.claim(&[1], 1, 1_110);
    assert_eq!(ids, vec![1]);
    assert_eq!(
        f.fail(1, 1, claim, 1_120),
        CommandResult::Run(RunOutcome::DeadLettered {
            code: dead_code::FAILED.into()
        })
    );
    let letter = f
        .reader
        .dead_letter("shop", 1)
        .expect("read")
        .expect("dead");
    assert_eq!(letter.entry.attempts.len(), 2);
    assert_eq!(letter.error, "boom at line 3");
    assert_eq!(
        letter
            .entry
            .attempts
            .iter()
            .map(|a| a.at_ms)
            .collect::<Vec<_>>(),
        vec![1_010, 1_120]
    );
    // The dead_letter trigger has a run about it.
    let alerts = f.reader.outbox("shop", 0, 10).expect("outbox");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].trigger, "alert");
    assert_eq!(
        alerts[0].event,
        TriggerEvent::DeadLetter {
            trigger: "orders".into(),
            delivery_id: "shop/1".into(),
            code: dead_code::FAILED.into(),
            error: "boom at line 3".into(),
        }
    );
    // A failing alert (attempts_max 1) is buried without alerting about itself.
    let (_, claim) = f.claim(&[alerts[0].id], 1, 2_000);
    f.fail(alerts[0].id, 1, claim, 2_001);
    assert!(f.outbox_ids().is_empty());
    assert_eq!(f.reader.dead_letters("shop", 0, 10).expect("dead").len(), 2);

    // Retry puts it back with a fresh budget; delete removes it.
    assert_eq!(
        f.run(Command::RetryDeadLetter {
            app: "shop".into(),
            id: 1,
            now_ms: 3_000
        }),
        CommandResult::Done
    );
    let back = &f.reader.outbox("shop", 0, 10).expect("outbox")[0];
    assert_eq!(
        (back.id, back.attempts.len(), back.not_before_ms),
        (1, 0, 3_000)
    );
    let (_, claim) = f.claim(&[1], 2, 3_000);
    assert_eq!(
        f.complete(1, 2, claim, vec![set_op("done", "true")]),
        CommandResult::Run(RunOutcome::Completed)
    );
    assert_eq!(
        f.run(Command::DeleteDeadLetter {
            app: "shop".into(),
            id: 2
        }),
        CommandResult::Done
    );
    assert_eq!(
        f.run(Command::DeleteDeadLetter {
            app: "shop".into(),
            id: 2
        }),
        rejected(ApplyError::DeadLetterNotFound {
            app: "shop".into(),
            id: 2
        })
    );
}

#[test]
fn rejected_run_writes_count_as_a_failed_attempt_and_write_nothing() {
    let mut f = Fixture::new();
    f.deploy_triggers(set_of(vec![kv_trigger("orders", "orders/*", true, false)]));
    f.put("orders/1", "1");
    f.put("name", "\"text\"");
    let (_, claim) = f.claim(&[1], 1, 100);
    let ops = vec![
        set_op("partial", "1"),
        KvOp::Incr {
            key: "name".into(),
            by: 1,
        },
    ];
    assert_eq!(
        f.complete(1, 1, claim, ops),
        CommandResult::Run(RunOutcome::WillRetry { not_before_ms: 205 })
    );
    assert_eq!(f.value("partial"), None);
    let entry = &f.reader.outbox("shop", 0, 1).expect("outbox")[0];
    assert!(entry.attempts[0].error.contains("does not hold an integer"));
}

#[test]
fn a_full_outbox_rejects_the_write_that_would_overflow_it() {
    let mut f = Fixture::new();
    let mut set = set_of(vec![kv_trigger("orders", "orders/*", true, false)]);
    set.outbox_max = 2;
    f.deploy_triggers(set);
    f.put("orders/1", "1");
    f.put("orders/2", "1");
    assert_eq!(
        f.put("orders/3", "1"),
        rejected(ApplyError::OutboxFull {
            app: "shop".into(),
            max: 2
        })
    );
    assert_eq!(
        f.value("orders/3"),
        None,
        "the rejected write did not apply"
    );
    assert_eq!(
        f.put("other", "1"),
        CommandResult::Kv(crate::command::KvOpResult::Set)
    );
}

#[test]
fn redeploys_swap_triggers_and_bury_runs_of_removed_ones() {
    let mut f = Fixture::new();
    f.deploy_triggers(set_of(vec![
        kv_trigger("orders", "orders/*", true, false),
        cron_trigger("tick"),
    ]));
    f.put("orders/1", "1");
    f.run(Command::FireCron {
        app: "shop".into(),
        trigger: "tick".into(),
        slot_ms: 1_000,
        now_ms: 1_000,
    });
    assert_eq!(f.outbox_ids(), vec![1, 2]);
    // Version 2 keeps `tick` and drops `orders`.
    f.deploy_triggers(set_of(vec![cron_trigger("tick")]));
    assert_eq!(f.outbox_ids(), vec![2]);
    let dead = f.reader.dead_letters("shop", 0, 10).expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].entry.trigger.as_str(), dead[0].code.as_str()),
        ("orders", dead_code::TRIGGER_REMOVED)
    );
    f.put("orders/2", "1");
    assert_eq!(f.outbox_ids(), vec![2], "no kv trigger in version 2");
    assert_eq!(
        f.reader.last_fired("shop", "tick").expect("fired"),
        Some(1_000)
    );
    // Rolling back to version 1 brings `orders` back.
    f.run(Command::Rollback {
        app: "shop".into(),
        to_version: Some(1),
        now_ms: 5,
    });
    f.put("orders/3", "1");
    assert_eq!(f.outbox_ids(), vec![2, 3]);
    // A plain `Deploy` (no triggers) removes them all.
    f.run(Command::Deploy(VersionDeploy {
        app: "shop".into(),
        bundle: b"v3".to_vec(),
        now_ms: 6,
        versions_keep: 5,
        parts: DeployParts::Bundle,
    }));
    assert!(f.outbox_ids().is_empty());
    assert_eq!(f.reader.dead_letters("shop", 0, 10).expect("dead").len(), 3);
}

#[test]
fn deleting_the_app_removes_its_trigger_state() {
    let mut f = Fixture::new();
    f.deploy_triggers(set_of(vec![kv_trigger("orders", "orders/*", true, false)]));
    f.put("orders/1", "1");
    f.run(Command::AppDelete {
        app: "shop".into(),
        revoke_keys: false,
    });
    assert!(f.reader.outbox("shop", 0, 10).expect("outbox").is_empty());
    assert_eq!(f.reader.outbox_len("shop").expect("len"), 0);
    assert_eq!(f.reader.trigger_set("shop").expect("set"), None);
}
