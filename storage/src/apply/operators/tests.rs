use super::super::tests::Fixture;
use crate::codec::{STORED_BYTES_MAX, decode, encode};
use crate::command::{ApplyError, Command, CommandResult};
use crate::operators::{
    OPERATORS_NAMESPACE, OperatorsCommand, OperatorsError, OperatorsResult, Role,
};
use crate::users::{UsersCommand, UsersLimits};

const LIMITS: UsersLimits = UsersLimits {
    users_per_app_max: 10,
    sessions_per_user_max: 2,
    data_bytes_max: 32,
};

/// Creates the account of operator `id` in the reserved namespace, which
/// is no app: the users command must pass all the same.
fn account(f: &mut Fixture, id: &str) {
    let result = f.run(Command::Users(UsersCommand::Create {
        app: OPERATORS_NAMESPACE.into(),
        id: id.into(),
        email: format!("{id}@example.org"),
        password_hash: "$argon2id$h".into(),
        verified: true,
        roles: Default::default(),
        data_json: "{}".into(),
        limits: LIMITS,
        now_ms: 1,
    }));
    assert!(matches!(result, CommandResult::Users(_)), "{result:?}");
}

fn op(f: &mut Fixture, command: OperatorsCommand) -> CommandResult {
    f.run(Command::Operators(command))
}

fn no(error: OperatorsError) -> CommandResult {
    CommandResult::Rejected(ApplyError::Operators(error))
}

fn set(f: &mut Fixture, app: &str, id: &str, role: Role) -> CommandResult {
    op(
        f,
        OperatorsCommand::MemberSet {
            app: app.into(),
            id: id.into(),
            role,
        },
    )
}

fn remove_member(f: &mut Fixture, app: &str, id: &str) -> CommandResult {
    op(
        f,
        OperatorsCommand::MemberRemove {
            app: app.into(),
            id: id.into(),
        },
    )
}

fn fixture() -> Fixture {
    let mut f = Fixture::new();
    f.create("shop");
    for id in ["ann", "bob"] {
        account(&mut f, id);
        let put = op(
            &mut f,
            OperatorsCommand::Put {
                id: id.into(),
                admin: false,
            },
        );
        assert_eq!(
            put,
            CommandResult::Operators(OperatorsResult::Put { created: true })
        );
    }
    f
}

#[test]
fn only_an_existing_account_becomes_an_operator_or_a_member() {
    let mut f = fixture();
    let ghost = OperatorsCommand::Put {
        id: "ghost".into(),
        admin: true,
    };
    assert_eq!(
        op(&mut f, ghost),
        no(OperatorsError::OperatorNotFound { id: "ghost".into() })
    );
    assert_eq!(
        set(&mut f, "shop", "ghost", Role::Viewer),
        no(OperatorsError::OperatorNotFound { id: "ghost".into() })
    );
    assert_eq!(
        set(&mut f, "nope", "ann", Role::Viewer),
        CommandResult::Rejected(ApplyError::AppNotFound { app: "nope".into() })
    );
    let admin = OperatorsCommand::Put {
        id: "ann".into(),
        admin: true,
    };
    assert_eq!(
        op(&mut f, admin),
        CommandResult::Operators(OperatorsResult::Put { created: false })
    );
    assert!(f.reader.operator("ann").expect("read").expect("ann").admin);
}

#[test]
fn an_app_never_loses_its_last_owner() {
    let mut f = fixture();
    let last = || no(OperatorsError::LastOwner { app: "shop".into() });
    assert_eq!(
        set(&mut f, "shop", "ann", Role::Owner),
        CommandResult::Operators(OperatorsResult::MemberSet)
    );
    // Neither demoting, removing the membership nor removing the operator
    // may take the only owner away.
    assert_eq!(set(&mut f, "shop", "ann", Role::Viewer), last());
    assert_eq!(remove_member(&mut f, "shop", "ann"), last());
    assert_eq!(
        op(&mut f, OperatorsCommand::Remove { id: "ann".into() }),
        last()
    );
    // With a second owner each may go.
    set(&mut f, "shop", "bob", Role::Owner);
    assert_eq!(
        set(&mut f, "shop", "ann", Role::Developer),
        CommandResult::Operators(OperatorsResult::MemberSet)
    );
    assert_eq!(
        f.reader.member_role("shop", "ann").expect("read"),
        Some(Role::Developer)
    );
    assert_eq!(set(&mut f, "shop", "bob", Role::Viewer), last());
    assert_eq!(
        op(&mut f, OperatorsCommand::Remove { id: "ann".into() }),
        CommandResult::Operators(OperatorsResult::Removed { existed: true })
    );
    assert_eq!(f.reader.member_role("shop", "ann").expect("read"), None);
    assert_eq!(f.reader.operator("ann").expect("read"), None);
    let members = f.reader.members("shop", 10).expect("members");
    assert_eq!(members, vec![("bob".to_string(), Role::Owner)]);
}

#[test]
fn deleting_an_app_drops_its_memberships_but_not_the_operators() {
    let mut f = fixture();
    set(&mut f, "shop", "ann", Role::Owner);
    let deleted = f.run(Command::AppDelete {
        app: "shop".into(),
        revoke_keys: true,
    });
    assert!(
        !matches!(deleted, CommandResult::Rejected(_)),
        "{deleted:?}"
    );
    f.create("shop");
    // Whoever re-creates the name does not inherit the old members.
    assert_eq!(f.reader.member_role("shop", "ann").expect("read"), None);
    assert!(f.reader.members("shop", 10).expect("members").is_empty());
    assert!(f.reader.operator("ann").expect("read").is_some());
    // The stale entry in ann's record is harmless: she can be removed and
    // the new app's owner count starts from zero.
    set(&mut f, "shop", "bob", Role::Owner);
    assert_eq!(
        op(&mut f, OperatorsCommand::Remove { id: "ann".into() }),
        CommandResult::Operators(OperatorsResult::Removed { existed: true })
    );
    assert_eq!(
        remove_member(&mut f, "shop", "bob"),
        no(OperatorsError::LastOwner { app: "shop".into() })
    );
}

#[test]
fn operators_list_in_id_order_with_their_flags() {
    let mut f = fixture();
    op(
        &mut f,
        OperatorsCommand::Put {
            id: "bob".into(),
            admin: true,
        },
    );
    let listed: Vec<(String, bool)> = f
        .reader
        .operators(10)
        .expect("list")
        .into_iter()
        .map(|(id, record)| (id, record.admin))
        .collect();
    assert_eq!(listed, vec![("ann".into(), false), ("bob".into(), true)]);
}

/// The inner enum's log bytes: each variant's index is its position, so a
/// new variant goes at the end. Produced by this code when it was written.
#[test]
fn operators_commands_keep_their_bytes() {
    let golden: [(OperatorsCommand, &str); 4] = [
        (
            OperatorsCommand::Put {
                id: "u".into(),
                admin: true,
            },
            "00017501",
        ),
        (OperatorsCommand::Remove { id: "u".into() }, "010175"),
        (
            OperatorsCommand::MemberSet {
                app: "a".into(),
                id: "u".into(),
                role: Role::Viewer,
            },
            "020161017502",
        ),
        (
            OperatorsCommand::MemberRemove {
                app: "a".into(),
                id: "u".into(),
            },
            "0301610175",
        ),
    ];
    for (command, hex) in golden {
        let bytes = encode(&command).expect("encode");
        let text: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(text, hex, "{command:?}");
        let back: OperatorsCommand = decode(&bytes, STORED_BYTES_MAX).expect("decode");
        assert_eq!(back, command);
    }
}
