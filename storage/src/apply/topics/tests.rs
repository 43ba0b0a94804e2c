use super::super::tests::Fixture;
use crate::command::{ApplyError, Command, CommandResult};

fn publish(
    fixture: &mut Fixture,
    app: &str,
    topic: &str,
    message: &str,
    retain: u64,
) -> CommandResult {
    fixture.run(Command::Publish {
        app: app.into(),
        topic: topic.into(),
        message: message.as_bytes().to_vec(),
        retain,
        now_ms: 1,
    })
}

fn seqs(fixture: &Fixture, app: &str, topic: &str) -> Vec<u64> {
    let page = fixture.reader.topic_read(app, topic, 0, 100).expect("read");
    page.messages.iter().map(|(seq, _)| *seq).collect()
}

#[test]
fn messages_are_numbered_per_topic_and_trimmed_to_retain() {
    let mut fixture = Fixture::new();
    fixture.create("a");
    for n in 1..=5u64 {
        let result = publish(&mut fixture, "a", "chat/1", &n.to_string(), 3);
        assert_eq!(result, CommandResult::Published { epoch: 1, seq: n });
    }
    // Another topic has its own numbers and epoch.
    assert_eq!(
        publish(&mut fixture, "a", "chat/2", "x", 3),
        CommandResult::Published { epoch: 2, seq: 1 }
    );
    assert_eq!(seqs(&fixture, "a", "chat/1"), vec![3, 4, 5]);
    let page = fixture
        .reader
        .topic_read("a", "chat/1", 3, 100)
        .expect("read");
    assert_eq!(page.messages, vec![(4, b"4".to_vec()), (5, b"5".to_vec())]);
    let record = page.record.expect("record");
    assert_eq!(
        (record.epoch, record.oldest_seq, record.last_seq),
        (1, 3, 5)
    );
    // A page is bounded by the limit.
    let page = fixture
        .reader
        .topic_read("a", "chat/1", 0, 1)
        .expect("read");
    assert_eq!(page.messages.len(), 1);
}

#[test]
fn a_recreated_app_starts_a_new_history() {
    let mut fixture = Fixture::new();
    fixture.create("a");
    publish(&mut fixture, "a", "t", "1", 10);
    publish(&mut fixture, "a", "t", "2", 10);
    fixture.run(Command::AppDelete {
        app: "a".into(),
        revoke_keys: true,
    });
    assert_eq!(
        fixture
            .reader
            .topic_read("a", "t", 0, 10)
            .expect("read")
            .record,
        None
    );
    assert_eq!(
        publish(&mut fixture, "a", "t", "x", 10),
        CommandResult::Rejected(ApplyError::AppNotFound { app: "a".into() })
    );
    fixture.create("a");
    assert_eq!(
        publish(&mut fixture, "a", "t", "3", 10),
        CommandResult::Published { epoch: 2, seq: 1 }
    );
    assert_eq!(seqs(&fixture, "a", "t"), vec![1]);
}

#[test]
fn the_signing_key_is_created_once_and_replaced_by_rotation() {
    let mut fixture = Fixture::new();
    fixture.create("a");
    let set = |sealed: &str, only_if_absent| Command::RealtimeKeySet {
        app: "a".into(),
        sealed: sealed.as_bytes().to_vec(),
        only_if_absent,
    };
    assert_eq!(fixture.run(set("k1", true)), CommandResult::Done);
    assert_eq!(fixture.run(set("k2", true)), CommandResult::Done);
    assert_eq!(
        fixture.reader.realtime_key("a").expect("key"),
        Some(b"k1".to_vec())
    );
    fixture.run(set("k3", false));
    assert_eq!(
        fixture.reader.realtime_key("a").expect("key"),
        Some(b"k3".to_vec())
    );
    fixture.run(Command::AppDelete {
        app: "a".into(),
        revoke_keys: true,
    });
    assert_eq!(fixture.reader.realtime_key("a").expect("key"), None);
}

#[test]
fn a_rekey_swaps_the_sealed_key_only_while_it_is_unchanged() {
    let mut fixture = Fixture::new();
    fixture.create("a");
    let rekey = |old: &str, new: &str| Command::RealtimeKeyRekey {
        app: "a".into(),
        old: old.as_bytes().to_vec(),
        new: new.as_bytes().to_vec(),
    };
    let key = |fixture: &Fixture| fixture.reader.realtime_key("a").expect("key");
    let outcome = |rekeyed, changed| CommandResult::SecretsRekeyed { rekeyed, changed };
    fixture.run(Command::RealtimeKeySet {
        app: "a".into(),
        sealed: b"under-old".to_vec(),
        only_if_absent: true,
    });
    assert_eq!(fixture.run(rekey("under-old", "under-new")), outcome(1, 0));
    assert_eq!(key(&fixture), Some(b"under-new".to_vec()));
    // A rotation applied after the proposer read the key wins.
    fixture.run(Command::RealtimeKeySet {
        app: "a".into(),
        sealed: b"rotated".to_vec(),
        only_if_absent: false,
    });
    assert_eq!(fixture.run(rekey("under-new", "stale")), outcome(0, 1));
    assert_eq!(key(&fixture), Some(b"rotated".to_vec()));
    // An app without a key (or deleted meanwhile) is left alone.
    fixture.create("b");
    let result = fixture.run(Command::RealtimeKeyRekey {
        app: "b".into(),
        old: b"x".to_vec(),
        new: b"y".to_vec(),
    });
    assert_eq!(result, outcome(0, 1));
    assert_eq!(fixture.reader.realtime_key("b").expect("key"), None);
}
