//! API keys: create and revoke; and the commands that bind API keys to
//! their app: deleting an app revokes its scoped keys (and only those),
//! scoped keys need an existing app, and a deploy that may not create an app
//! does not.

use crate::apply::tests::{Fixture, rejected};
use crate::command::{ApplyError, Command, CommandResult, DeployParts, VersionDeploy};

fn app_not_found(app: &str) -> CommandResult {
    rejected(ApplyError::AppNotFound { app: app.into() })
}

impl Fixture {
    fn create_app(&mut self, app: &str) -> CommandResult {
        self.run(Command::AppCreate {
            app: app.into(),
            now_ms: 1,
        })
    }

    fn create_key(&mut self, id: &str, scope: &str) -> CommandResult {
        self.run(Command::KeyCreate {
            id: id.into(),
            name: format!("key {id}"),
            scope: scope.into(),
            secret_hash: vec![7; 32],
            now_ms: 2,
            scoped_app_must_exist: true,
        })
    }

    fn key_ids(&self) -> Vec<String> {
        let keys = self.reader.keys().expect("keys");
        keys.into_iter().map(|key| key.id).collect()
    }

    fn deploy_existing(&mut self, app: &str) -> CommandResult {
        let deploy = VersionDeploy {
            app: app.into(),
            bundle: b"code".to_vec(),
            now_ms: 3,
            versions_keep: 5,
            parts: DeployParts::Full {
                triggers: Default::default(),
                indexes: vec![],
                create_app: false,
            },
        };
        self.run(Command::Deploy(deploy))
    }
}

#[test]
fn deleting_an_app_revokes_its_scoped_keys_and_no_others() {
    let mut f = Fixture::new();
    assert_eq!(f.create_app("shop"), CommandResult::Done);
    assert_eq!(f.create_app("shopfront"), CommandResult::Done);
    for (id, scope) in [
        ("a", "admin"),
        ("d", "deploy:shop"),
        ("r", "read:shop"),
        ("o", "deploy:shopfront"),
    ] {
        assert_eq!(f.create_key(id, scope), CommandResult::Done, "{scope}");
    }
    assert_eq!(
        f.run(Command::AppDelete {
            app: "shop".into(),
            revoke_keys: true
        }),
        CommandResult::AppDeleted { keys_revoked: 2 }
    );
    assert_eq!(f.key_ids(), ["a", "o"]);
    assert_eq!(f.reader.app("shop").expect("read"), None);
    // Re-created by someone else, the app starts with no keys: the old
    // `deploy:shop` key is gone for good.
    assert_eq!(f.create_app("shop"), CommandResult::Done);
    assert_eq!(f.key_ids(), ["a", "o"]);
    assert_eq!(
        f.run(Command::AppDelete {
            app: "shop".into(),
            revoke_keys: true
        }),
        CommandResult::AppDeleted { keys_revoked: 0 }
    );
    assert_eq!(
        f.run(Command::AppDelete {
            app: "shop".into(),
            revoke_keys: true
        }),
        app_not_found("shop")
    );
}

#[test]
fn scoped_keys_need_an_existing_app() {
    let mut f = Fixture::new();
    assert_eq!(f.create_key("g", "deploy:ghost"), app_not_found("ghost"));
    assert_eq!(f.create_key("g", "read:ghost"), app_not_found("ghost"));
    assert_eq!(f.create_key("a", "admin"), CommandResult::Done);
    assert_eq!(f.key_ids(), ["a"]);
    f.create_app("ghost");
    assert_eq!(f.create_key("g", "deploy:ghost"), CommandResult::Done);
    assert_eq!(
        f.create_key("g", "read:ghost"),
        rejected(ApplyError::KeyExists { id: "g".into() })
    );
}

#[test]
fn a_deploy_that_may_not_create_never_does() {
    let mut f = Fixture::new();
    assert_eq!(f.deploy_existing("ghost"), app_not_found("ghost"));
    assert_eq!(f.reader.app("ghost").expect("read"), None);
    f.create_app("ghost");
    assert_eq!(
        f.deploy_existing("ghost"),
        CommandResult::Deployed { version: 1 }
    );
    f.run(Command::AppDelete {
        app: "ghost".into(),
        revoke_keys: true,
    });
    // A deploy queued behind the delete does not bring the app back.
    assert_eq!(f.deploy_existing("ghost"), app_not_found("ghost"));
    assert_eq!(f.reader.app("ghost").expect("read"), None);
}

#[test]
fn the_delete_and_its_revocations_hold_inside_a_batch() {
    let mut f = Fixture::new();
    f.create_app("shop");
    f.create_key("d", "deploy:shop");
    let result = f.run(Command::Batch(vec![
        Command::AppDelete {
            app: "shop".into(),
            revoke_keys: true,
        },
        Command::KeyCreate {
            id: "late".into(),
            name: "late".into(),
            scope: "deploy:shop".into(),
            secret_hash: vec![1],
            now_ms: 4,
            scoped_app_must_exist: true,
        },
    ]));
    assert_eq!(
        result,
        CommandResult::Batch(vec![
            CommandResult::AppDeleted { keys_revoked: 1 },
            app_not_found("shop"),
        ])
    );
    assert!(f.key_ids().is_empty());
}

#[test]
fn api_keys_create_and_revoke() {
    let mut f = Fixture::new();
    let create = |id: &str| Command::KeyCreate {
        id: id.into(),
        name: "ci".into(),
        scope: "deploy".into(),
        secret_hash: vec![1, 2, 3],
        now_ms: 42,
        scoped_app_must_exist: false,
    };
    assert_eq!(f.run(create("k1")), CommandResult::Done);
    assert_eq!(
        f.run(create("k1")),
        rejected(ApplyError::KeyExists { id: "k1".into() })
    );
    assert_eq!(f.run(create("k2")), CommandResult::Done);
    let record = f.reader.key("k1").expect("key").expect("present");
    assert_eq!(
        (
            record.name.as_str(),
            record.scope.as_str(),
            record.created_ms
        ),
        ("ci", "deploy", 42)
    );
    assert_eq!(record.secret_hash, [1, 2, 3]);
    assert_eq!(f.reader.keys().expect("keys").len(), 2);
    assert_eq!(
        f.run(Command::KeyRevoke { id: "k1".into() }),
        CommandResult::Done
    );
    assert_eq!(f.reader.key("k1").expect("key"), None);
    assert_eq!(
        f.run(Command::KeyRevoke { id: "k1".into() }),
        rejected(ApplyError::KeyNotFound { id: "k1".into() })
    );
}
