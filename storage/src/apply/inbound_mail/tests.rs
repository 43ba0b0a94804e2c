use super::super::tests::Fixture;
use crate::command::{ApplyError, Command, CommandResult, DeployParts, VersionDeploy};
use crate::inbound_mail::{InboundMail, InboundMessage, MailRecipient};
use crate::triggers::{TriggerDef, TriggerDefKind, TriggerEvent, TriggerSet};

fn email_trigger(name: &str, pattern: &str) -> TriggerDef {
    TriggerDef {
        name: name.into(),
        script: format!("{name}.lua"),
        kind: TriggerDefKind::Email {
            pattern: pattern.into(),
            aliases: vec!["support@shop.example.org".into()],
        },
        attempts_max: 3,
        backoff_ms: 100,
    }
}

/// Deploys app `a` with `triggers` and an outbox of `outbox_max`.
fn deploy(f: &mut Fixture, triggers: Vec<TriggerDef>, outbox_max: u32) {
    let result = f.run(Command::Deploy(VersionDeploy {
        app: "a".into(),
        bundle: b"code".to_vec(),
        now_ms: 1,
        versions_keep: 5,
        parts: DeployParts::Full {
            triggers: TriggerSet {
                triggers,
                chain_depth_max: 8,
                outbox_max,
            },
            indexes: Vec::new(),
            create_app: true,
        },
    }));
    assert!(
        matches!(result, CommandResult::Deployed { .. }),
        "{result:?}"
    );
}

fn message() -> InboundMessage {
    InboundMessage {
        message_id: "<1@sender>".into(),
        from: "bob@sender.org".into(),
        to: vec!["orders@a.example.org".into()],
        subject: "hi".into(),
        text: Some("hello".into()),
        html: None,
        headers: vec![("Subject".into(), "hi".into())],
        attachments: Vec::new(),
    }
}

fn mail(locals: &[&str]) -> Command {
    Command::InboundMail(Box::new(InboundMail {
        app: "a".into(),
        recipients: locals
            .iter()
            .map(|local| MailRecipient {
                address: format!("{local}@a.example.org"),
                local: (*local).into(),
            })
            .collect(),
        message: message(),
        now_ms: 50,
    }))
}

/// The (trigger, recipient) of every pending run of app `a`.
fn runs(f: &Fixture) -> Vec<(String, String)> {
    f.reader
        .outbox("a", 0, 100)
        .expect("outbox")
        .into_iter()
        .map(|entry| match entry.event {
            TriggerEvent::EmailReceived {
                recipient,
                message: got,
            } => {
                assert_eq!(got, message(), "the run carries the message");
                assert_eq!(entry.depth, 1);
                (entry.trigger, recipient)
            }
            other => panic!("not an email event: {other:?}"),
        })
        .collect()
}

#[test]
fn inbound_mail_fires_the_triggers_matching_each_recipient() {
    let mut f = Fixture::new();
    deploy(
        &mut f,
        vec![
            email_trigger("all", "*"),
            email_trigger("orders", "orders*"),
        ],
        100,
    );
    assert_eq!(
        f.run(mail(&["orders", "info"])),
        CommandResult::MailDelivered { runs: 3 }
    );
    assert_eq!(
        runs(&f),
        vec![
            ("all".to_string(), "orders@a.example.org".to_string()),
            ("orders".to_string(), "orders@a.example.org".to_string()),
            ("all".to_string(), "info@a.example.org".to_string()),
        ]
    );
}

#[test]
fn inbound_mail_without_app_or_matching_trigger_queues_nothing() {
    let mut f = Fixture::new();
    assert_eq!(
        f.run(mail(&["x"])),
        CommandResult::MailDelivered { runs: 0 }
    );
    deploy(&mut f, vec![email_trigger("orders", "orders")], 100);
    assert_eq!(
        f.run(mail(&["info"])),
        CommandResult::MailDelivered { runs: 0 }
    );
    assert!(runs(&f).is_empty());
}

#[test]
fn inbound_mail_to_a_full_outbox_is_rejected_whole() {
    let mut f = Fixture::new();
    deploy(&mut f, vec![email_trigger("all", "*")], 2);
    assert_eq!(
        f.run(mail(&["one"])),
        CommandResult::MailDelivered { runs: 1 }
    );
    // Two more runs would need three slots: the first fits, the second
    // does not, and neither is queued.
    assert_eq!(
        f.run(mail(&["two", "three"])),
        CommandResult::Rejected(ApplyError::OutboxFull {
            app: "a".into(),
            max: 2
        })
    );
    assert_eq!(runs(&f).len(), 1);
    assert_eq!(f.reader.outbox_len("a").expect("len"), 1);
}

#[test]
fn trigger_sets_know_their_mail_aliases() {
    let set = TriggerSet {
        triggers: vec![email_trigger("all", "*")],
        chain_depth_max: 8,
        outbox_max: 10,
    };
    assert!(set.has_mail_alias("support@shop.example.org"));
    assert!(!set.has_mail_alias("sales@shop.example.org"));
}
