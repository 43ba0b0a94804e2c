//! `apply` of the secret commands: set and delete with the per-app bound,
//! the rekey guard against concurrent writes, and app deletion.

use crate::apply::tests::Fixture;
use crate::command::{ApplyError, Command, CommandResult, SecretRekey};
use crate::secrets::SECRETS_PER_APP_MAX;

impl Fixture {
    fn secret_set(&mut self, app: &str, name: &str, sealed: &[u8], now_ms: u64) -> CommandResult {
        self.run(Command::SecretSet {
            app: app.into(),
            name: name.into(),
            sealed: sealed.to_vec(),
            now_ms,
        })
    }

    fn secret_delete(&mut self, app: &str, name: &str) -> CommandResult {
        self.run(Command::SecretDelete {
            app: app.into(),
            name: name.into(),
        })
    }

    fn sealed(&self, app: &str, name: &str) -> Option<Vec<u8>> {
        let record = self.reader.secret(app, name).expect("read secret");
        record.map(|record| record.sealed)
    }

    fn rekey(&mut self, secrets: Vec<SecretRekey>) -> CommandResult {
        self.run(Command::SecretsRekey { secrets })
    }

    /// A fixture with app `shop` created.
    fn with_shop() -> Fixture {
        let mut fixture = Fixture::new();
        fixture.run(Command::AppCreate {
            app: "shop".into(),
            now_ms: 1,
        });
        fixture
    }
}

fn rekey(app: &str, name: &str, old: &[u8], new: &[u8]) -> SecretRekey {
    SecretRekey {
        app: app.into(),
        name: name.into(),
        old: old.to_vec(),
        new: new.to_vec(),
    }
}

#[test]
fn set_replaces_and_delete_removes() {
    let mut fixture = Fixture::new();
    assert_eq!(
        fixture.secret_set("shop", "A", b"s1", 5),
        CommandResult::Rejected(ApplyError::AppNotFound { app: "shop".into() })
    );
    fixture.run(Command::AppCreate {
        app: "shop".into(),
        now_ms: 1,
    });
    assert_eq!(
        fixture.secret_set("shop", "A", b"s1", 5),
        CommandResult::Done
    );
    assert_eq!(
        fixture.secret_set("shop", "A", b"s2", 6),
        CommandResult::Done
    );
    assert_eq!(
        fixture.secret_set("shop", "B", b"s3", 7),
        CommandResult::Done
    );
    let listed = fixture.reader.secrets("shop").expect("list");
    let names: Vec<(&str, u64)> = listed
        .iter()
        .map(|(name, record)| (name.as_str(), record.updated_ms))
        .collect();
    assert_eq!(names, [("A", 6), ("B", 7)]);
    assert_eq!(fixture.sealed("shop", "A").as_deref(), Some(&b"s2"[..]));

    assert_eq!(fixture.secret_delete("shop", "A"), CommandResult::Done);
    assert_eq!(fixture.sealed("shop", "A"), None);
    assert_eq!(
        fixture.secret_delete("shop", "A"),
        CommandResult::Rejected(ApplyError::SecretNotFound {
            app: "shop".into(),
            name: "A".into()
        })
    );
    assert_eq!(fixture.reader.secrets("shop").expect("list").len(), 1);
}

#[test]
fn an_app_holds_at_most_the_bound_and_deletes_free_slots() {
    let mut fixture = Fixture::with_shop();
    let names: Vec<String> = (0..SECRETS_PER_APP_MAX).map(|i| format!("S{i}")).collect();
    // One log entry: the bound is counted through the batch's own writes.
    let sets = names
        .iter()
        .map(|name| Command::SecretSet {
            app: "shop".into(),
            name: name.clone(),
            sealed: b"x".to_vec(),
            now_ms: 2,
        })
        .collect();
    let CommandResult::Batch(results) = fixture.run(Command::Batch(sets)) else {
        panic!("batch result");
    };
    assert!(results.iter().all(|result| *result == CommandResult::Done));
    let full = CommandResult::Rejected(ApplyError::SecretsFull {
        app: "shop".into(),
        max: SECRETS_PER_APP_MAX,
    });
    assert_eq!(fixture.secret_set("shop", "ONE_MORE", b"x", 3), full);
    // Replacing an existing one is not a new secret.
    assert_eq!(
        fixture.secret_set("shop", "S0", b"y", 3),
        CommandResult::Done
    );
    assert_eq!(fixture.secret_delete("shop", "S1"), CommandResult::Done);
    assert_eq!(
        fixture.secret_set("shop", "ONE_MORE", b"x", 4),
        CommandResult::Done
    );
    assert_eq!(fixture.secret_set("shop", "TWO_MORE", b"x", 4), full);
}

#[test]
fn rekey_swaps_only_values_unchanged_since_they_were_read() {
    let mut fixture = Fixture::with_shop();
    for name in ["A", "B", "C"] {
        fixture.secret_set("shop", name, b"old", 2);
    }
    // Between the rotation's read and its commit: B is set again, C deleted.
    fixture.secret_set("shop", "B", b"fresh", 3);
    fixture.secret_delete("shop", "C");
    let result = fixture.rekey(vec![
        rekey("shop", "A", b"old", b"new-a"),
        rekey("shop", "B", b"old", b"new-b"),
        rekey("shop", "C", b"old", b"new-c"),
    ]);
    assert_eq!(
        result,
        CommandResult::SecretsRekeyed {
            rekeyed: 1,
            changed: 2
        }
    );
    assert_eq!(fixture.sealed("shop", "A").as_deref(), Some(&b"new-a"[..]));
    assert_eq!(fixture.sealed("shop", "B").as_deref(), Some(&b"fresh"[..]));
    assert_eq!(fixture.sealed("shop", "C"), None, "a rekey never recreates");
    // The update time is the value's, not the rekey's.
    let record = fixture.reader.secret("shop", "A").expect("read");
    assert_eq!(record.map(|record| record.updated_ms), Some(2));
}

#[test]
fn deleting_an_app_deletes_its_secrets_only() {
    let mut fixture = Fixture::new();
    for app in ["shop", "shop2"] {
        fixture.run(Command::AppCreate {
            app: app.into(),
            now_ms: 1,
        });
        fixture.secret_set(app, "A", b"v", 2);
    }
    assert_eq!(
        fixture.run(Command::AppDelete {
            app: "shop".into(),
            revoke_keys: false
        }),
        CommandResult::Done
    );
    assert_eq!(fixture.sealed("shop", "A"), None);
    assert_eq!(fixture.sealed("shop2", "A").as_deref(), Some(&b"v"[..]));
    // A recreated app starts with no secrets and a fresh count.
    fixture.run(Command::AppCreate {
        app: "shop".into(),
        now_ms: 3,
    });
    assert!(fixture.reader.secrets("shop").expect("list").is_empty());
    assert_eq!(
        fixture.secret_delete("shop", "A"),
        CommandResult::Rejected(ApplyError::SecretNotFound {
            app: "shop".into(),
            name: "A".into()
        })
    );
}
