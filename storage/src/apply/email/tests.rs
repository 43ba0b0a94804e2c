//! `apply` of the mail commands: a send is an outbox entry that retries by
//! its own policy, a bounce is a dead letter at once, captured mail keeps
//! the newest `captured_max`.

use crate::apply::tests::Fixture;
use crate::command::{ApplyError, Command, CommandResult, DeployParts, RunOutcome, VersionDeploy};
use crate::email::{BOUNCED, EMAIL_TRIGGER, EmailCommand, EmailRetry, tests::message};
use crate::triggers::{TriggerDef, TriggerDefKind, TriggerEvent, TriggerSet, dead_code};

const APP: &str = "shop";

fn send(f: &mut Fixture, attempts_max: u32) -> CommandResult {
    f.run(Command::Email(EmailCommand::Send {
        app: APP.into(),
        message: Box::new(message()),
        retry: EmailRetry {
            attempts_max,
            backoff_ms: 100,
        },
        now_ms: 10,
    }))
}

fn claim(f: &mut Fixture, id: u64, term: u64, now_ms: u64) -> u64 {
    match f.run(Command::ClaimRuns {
        app: APP.into(),
        ids: vec![id],
        term,
        node: 1,
        now_ms,
        reclaim_after_ms: 60_000,
    }) {
        CommandResult::RunsClaimed { ids, claim_ms } if ids == [id] => claim_ms,
        other => panic!("claim: {other:?}"),
    }
}

fn fail(f: &mut Fixture, id: u64, claim_ms: u64, now_ms: u64) -> CommandResult {
    f.run(Command::FailRun {
        app: APP.into(),
        id,
        term: 1,
        claim_ms,
        error: "451 try later".into(),
        now_ms,
    })
}

/// A deployed version with a `dead_letter` trigger, so burying mail is seen
/// by the app's alert script like any other dead letter.
fn deploy_with_alert(f: &mut Fixture) {
    let triggers = TriggerSet {
        triggers: vec![TriggerDef {
            name: "alert".into(),
            script: "alert.lua".into(),
            kind: TriggerDefKind::DeadLetter,
            attempts_max: 1,
            backoff_ms: 100,
        }],
        chain_depth_max: 8,
        outbox_max: 100,
    };
    f.run(Command::Deploy(VersionDeploy {
        app: APP.into(),
        bundle: b"code".to_vec(),
        now_ms: 1,
        versions_keep: 5,
        parts: DeployParts::WithTriggers(triggers),
    }));
}

#[test]
fn a_send_is_an_outbox_entry_of_the_reserved_trigger() {
    let mut f = Fixture::new();
    assert_eq!(
        send(&mut f, 3),
        CommandResult::Rejected(ApplyError::AppNotFound { app: APP.into() })
    );
    f.create(APP);
    assert_eq!(send(&mut f, 3), CommandResult::TriggerFired { id: Some(1) });
    let entries = f.reader.outbox(APP, 0, 10).expect("outbox");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].trigger, EMAIL_TRIGGER);
    assert!(matches!(&entries[0].event, TriggerEvent::Email { message: m, .. } if *m == message()));
}

#[test]
fn a_failed_send_retries_by_its_own_policy_then_is_dead_lettered() {
    let mut f = Fixture::new();
    f.create(APP);
    send(&mut f, 2);
    let claim_ms = claim(&mut f, 1, 1, 20);
    assert_eq!(
        fail(&mut f, 1, claim_ms, 21),
        CommandResult::Run(RunOutcome::WillRetry { not_before_ms: 121 })
    );
    let claim_ms = claim(&mut f, 1, 1, 200);
    assert_eq!(
        fail(&mut f, 1, claim_ms, 201),
        CommandResult::Run(RunOutcome::DeadLettered {
            code: dead_code::FAILED.into()
        })
    );
    assert_eq!(f.reader.outbox_len(APP).expect("len"), 0);
    let letter = f.reader.dead_letter(APP, 1).expect("read").expect("letter");
    assert_eq!(letter.entry.attempts.len(), 2);
    // A dead-lettered mail can be sent again: its "trigger" never goes.
    assert_eq!(
        f.run(Command::RetryDeadLetter {
            app: APP.into(),
            id: 1,
            now_ms: 300
        }),
        CommandResult::Rejected(ApplyError::OutboxFull {
            app: APP.into(),
            max: 0
        }),
        "an app with no deployed version has no outbox bound to retry into"
    );
    deploy_with_alert(&mut f);
    assert_eq!(
        f.run(Command::RetryDeadLetter {
            app: APP.into(),
            id: 1,
            now_ms: 300
        }),
        CommandResult::Done
    );
}

#[test]
fn a_bounce_is_dead_lettered_at_once_with_the_reply() {
    let mut f = Fixture::new();
    f.create(APP);
    deploy_with_alert(&mut f);
    send(&mut f, 5);
    let claim_ms = claim(&mut f, 1, 1, 20);
    let bounce = |claim_ms| {
        Command::Email(EmailCommand::Bounce {
            app: APP.into(),
            id: 1,
            term: 1,
            claim_ms,
            reply: "550 5.1.1 no such user".into(),
            now_ms: 30,
        })
    };
    assert_eq!(
        f.run(bounce(claim_ms + 1)),
        CommandResult::Rejected(ApplyError::StaleClaim {
            app: APP.into(),
            id: 1
        })
    );
    assert_eq!(
        f.run(bounce(claim_ms)),
        CommandResult::Run(RunOutcome::DeadLettered {
            code: BOUNCED.into()
        })
    );
    let letter = f.reader.dead_letter(APP, 1).expect("read").expect("letter");
    assert_eq!(letter.code, BOUNCED);
    assert_eq!(letter.error, "550 5.1.1 no such user");
    // The app's dead_letter trigger hears about it (entry 2).
    let pending = f.reader.outbox(APP, 0, 10).expect("outbox");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].trigger, "alert");
}

#[test]
fn capture_keeps_the_newest_captured_max() {
    let mut f = Fixture::new();
    f.create(APP);
    for now_ms in 1..=5 {
        let result = f.run(Command::Email(EmailCommand::Capture {
            app: APP.into(),
            message: Box::new(message()),
            captured_max: 3,
            now_ms,
        }));
        assert_eq!(result, CommandResult::TriggerFired { id: Some(now_ms) });
    }
    let kept: Vec<u64> = f
        .reader
        .captured_mail(APP, None, 10)
        .expect("list")
        .iter()
        .map(|mail| mail.id)
        .collect();
    assert_eq!(kept, [5, 4, 3], "newest first, the two oldest dropped");
    assert_eq!(f.reader.captured_mail_one(APP, 1).expect("read"), None);
    let page: Vec<u64> = f
        .reader
        .captured_mail(APP, Some(5), 1)
        .expect("page")
        .iter()
        .map(|mail| mail.id)
        .collect();
    assert_eq!(page, [4]);
    f.run(Command::AppDelete {
        app: APP.into(),
        revoke_keys: true,
    });
    assert!(f.reader.captured_mail_one(APP, 5).expect("read").is_none());
}
