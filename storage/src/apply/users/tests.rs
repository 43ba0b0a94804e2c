use std::collections::BTreeSet;

use super::super::tests::{Fixture, rejected};
use crate::codec::{STORED_BYTES_MAX, decode, encode};
use crate::command::{ApplyError, Command, CommandResult};
use crate::users::{
    Redemption, SessionRefresh, TokenHash, TokenKind, TokenRecord, UserPatch, UsersCommand,
    UsersError, UsersLimits, UsersResult,
};

const LIMITS: UsersLimits = UsersLimits {
    users_per_app_max: 3,
    sessions_per_user_max: 2,
    data_bytes_max: 32,
};

fn roles(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_string()).collect()
}

fn create_command(id: &str, email: &str) -> Command {
    Command::Users(UsersCommand::Create {
        app: "a".into(),
        id: id.into(),
        email: email.into(),
        password_hash: "$argon2id$h".into(),
        verified: false,
        roles: roles(&["member"]),
        data_json: "{}".into(),
        limits: LIMITS,
        now_ms: 10,
    })
}

fn users(f: &mut Fixture, command: UsersCommand) -> CommandResult {
    f.run(Command::Users(command))
}

fn ok(result: UsersResult) -> CommandResult {
    CommandResult::Users(result)
}

fn no(error: UsersError) -> CommandResult {
    rejected(ApplyError::Users(error))
}

fn login(f: &mut Fixture, id: &str, session: u8, now_ms: u64) -> CommandResult {
    users(
        f,
        UsersCommand::Login {
            app: "a".into(),
            id: id.into(),
            session: [session; 32],
            expires_ms: now_ms + 1000,
            limits: LIMITS,
            now_ms,
        },
    )
}

fn live(f: &Fixture, session: u8) -> bool {
    f.reader
        .session("a", &[session; 32])
        .expect("session")
        .is_some()
}

fn fixture() -> Fixture {
    let mut f = Fixture::new();
    f.create("a");
    f
}

#[test]
fn create_indexes_the_email_and_refuses_a_second_owner() {
    let mut f = fixture();
    assert_eq!(
        f.run(create_command("u1", "ann@example.org")),
        ok(UsersResult::Created)
    );
    let record = f.reader.user("a", "u1").expect("read").expect("user");
    assert_eq!(record.email, "ann@example.org");
    assert_eq!(record.created_ms, 10);
    assert_eq!(
        f.reader
            .user_id_by_email("a", "ann@example.org")
            .expect("read"),
        Some("u1".to_string())
    );
    assert_eq!(
        f.run(create_command("u2", "ann@example.org")),
        no(UsersError::EmailTaken {
            email: "ann@example.org".into()
        })
    );
    assert_eq!(
        f.run(create_command("u1", "bob@example.org")),
        no(UsersError::UserExists { id: "u1".into() })
    );
    assert_eq!(f.reader.users_count("a").expect("count"), 1);
}

#[test]
fn create_checks_email_roles_data_bounds_and_the_app() {
    let mut f = fixture();
    assert!(matches!(
        f.run(create_command("u1", "not-an-email")),
        CommandResult::Rejected(ApplyError::Users(UsersError::EmailInvalid { .. }))
    ));
    let mut bad_role = create_command("u1", "ann@example.org");
    if let Command::Users(UsersCommand::Create { roles: r, .. }) = &mut bad_role {
        *r = roles(&["Admin"]);
    }
    assert_eq!(
        f.run(bad_role),
        no(UsersError::InvalidRole {
            role: "Admin".into()
        })
    );
    let mut big = create_command("u1", "ann@example.org");
    if let Command::Users(UsersCommand::Create { data_json, .. }) = &mut big {
        *data_json = format!("{{\"x\":\"{}\"}}", "y".repeat(40));
    }
    assert!(matches!(
        f.run(big),
        CommandResult::Rejected(ApplyError::Users(UsersError::DataTooLarge { max: 32, .. }))
    ));
    for n in 0..3 {
        assert_eq!(
            f.run(create_command(
                &format!("u{n}"),
                &format!("u{n}@example.org")
            )),
            ok(UsersResult::Created)
        );
    }
    assert_eq!(
        f.run(create_command("u9", "u9@example.org")),
        no(UsersError::UsersFull {
            app: "a".into(),
            max: 3
        })
    );
    let mut other = create_command("u1", "ann@example.org");
    if let Command::Users(UsersCommand::Create { app, .. }) = &mut other {
        *app = "missing".into();
    }
    assert_eq!(
        f.run(other),
        rejected(ApplyError::AppNotFound {
            app: "missing".into()
        })
    );
}

#[test]
fn update_moves_the_email_index_and_keeps_emails_unique() {
    let mut f = fixture();
    f.run(create_command("u1", "ann@example.org"));
    f.run(create_command("u2", "bob@example.org"));
    let patch = |email: &str| UsersCommand::Update {
        app: "a".into(),
        id: "u1".into(),
        patch: UserPatch {
            email: Some(email.into()),
            verified: Some(true),
            roles: Some(roles(&["admin"])),
            data_json: Some("{\"n\":1}".into()),
        },
        limits: LIMITS,
    };
    assert_eq!(
        users(&mut f, patch("bob@example.org")),
        no(UsersError::EmailTaken {
            email: "bob@example.org".into()
        })
    );
    assert_eq!(
        users(&mut f, patch("ann2@example.org")),
        ok(UsersResult::Updated)
    );
    let record = f.reader.user("a", "u1").expect("read").expect("user");
    assert!(record.verified);
    assert_eq!(record.roles, roles(&["admin"]));
    assert_eq!(record.data_json, "{\"n\":1}");
    assert_eq!(
        f.reader
            .user_id_by_email("a", "ann@example.org")
            .expect("read"),
        None
    );
    assert_eq!(
        f.reader
            .user_id_by_email("a", "ann2@example.org")
            .expect("read"),
        Some("u1".into())
    );
    // The freed address can be taken again.
    assert_eq!(
        f.run(create_command("u3", "ann@example.org")),
        ok(UsersResult::Created)
    );
    let missing = UsersCommand::Update {
        app: "a".into(),
        id: "nobody".into(),
        patch: UserPatch::default(),
        limits: LIMITS,
    };
    assert_eq!(
        users(&mut f, missing),
        no(UsersError::UserNotFound {
            id: "nobody".into()
        })
    );
}

#[test]
fn login_bounds_sessions_per_user_evicting_the_oldest_and_collecting_expired() {
    let mut f = fixture();
    f.run(create_command("u1", "ann@example.org"));
    assert_eq!(
        login(&mut f, "u1", 1, 100),
        ok(UsersResult::LoggedIn {
            sessions_evicted: 0
        })
    );
    assert_eq!(
        login(&mut f, "u1", 2, 200),
        ok(UsersResult::LoggedIn {
            sessions_evicted: 0
        })
    );
    assert_eq!(
        login(&mut f, "u1", 3, 300),
        ok(UsersResult::LoggedIn {
            sessions_evicted: 1
        })
    );
    assert!(!live(&f, 1) && live(&f, 2) && live(&f, 3));
    assert_eq!(
        f.reader
            .user("a", "u1")
            .expect("read")
            .expect("user")
            .last_login_ms,
        300
    );
    // Session 2 expired at 1200: the next login drops it, evicting nothing.
    assert_eq!(
        login(&mut f, "u1", 4, 1250),
        ok(UsersResult::LoggedIn {
            sessions_evicted: 0
        })
    );
    assert!(!live(&f, 2) && live(&f, 3) && live(&f, 4));
    let session = f
        .reader
        .session("a", &[4; 32])
        .expect("read")
        .expect("session");
    assert_eq!((session.user_id.as_str(), session.expires_ms), ("u1", 2250));
}

#[test]
fn refresh_only_extends_and_skips_gone_or_expired_sessions() {
    let mut f = fixture();
    f.run(create_command("u1", "ann@example.org"));
    login(&mut f, "u1", 1, 100);
    login(&mut f, "u1", 2, 100);
    let refresh = |session: u8, last_seen_ms: u64, expires_ms: u64| SessionRefresh {
        session: [session; 32],
        last_seen_ms,
        expires_ms,
    };
    let result = users(
        &mut f,
        UsersCommand::Refresh {
            app: "a".into(),
            sessions: vec![
                refresh(1, 500, 1500),
                refresh(9, 500, 1500),
                refresh(2, 50, 60),
            ],
            now_ms: 500,
        },
    );
    assert_eq!(result, ok(UsersResult::Refreshed { sessions: 2 }));
    let one = f
        .reader
        .session("a", &[1; 32])
        .expect("read")
        .expect("session");
    assert_eq!((one.last_seen_ms, one.expires_ms), (500, 1500));
    let two = f
        .reader
        .session("a", &[2; 32])
        .expect("read")
        .expect("session");
    assert_eq!(
        (two.last_seen_ms, two.expires_ms),
        (100, 1100),
        "never shortened"
    );
    let late = users(
        &mut f,
        UsersCommand::Refresh {
            app: "a".into(),
            sessions: vec![refresh(2, 1200, 2200)],
            now_ms: 1200,
        },
    );
    assert_eq!(late, ok(UsersResult::Refreshed { sessions: 0 }));
    assert!(!live(&f, 2), "an expired session is collected, not revived");
}

#[test]
fn logout_logout_all_set_password_and_delete_revoke_sessions() {
    let mut f = fixture();
    f.run(create_command("u1", "ann@example.org"));
    login(&mut f, "u1", 1, 100);
    login(&mut f, "u1", 2, 100);
    let logout = |session: u8| UsersCommand::Logout {
        app: "a".into(),
        session: [session; 32],
    };
    assert_eq!(
        users(&mut f, logout(1)),
        ok(UsersResult::LoggedOut { existed: true })
    );
    assert_eq!(
        users(&mut f, logout(1)),
        ok(UsersResult::LoggedOut { existed: false })
    );
    assert!(!live(&f, 1) && live(&f, 2));
    assert_eq!(
        f.reader
            .user("a", "u1")
            .expect("read")
            .expect("user")
            .sessions,
        vec![[2; 32]]
    );

    let all = UsersCommand::LogoutAll {
        app: "a".into(),
        id: "u1".into(),
    };
    assert_eq!(
        users(&mut f, all),
        ok(UsersResult::LoggedOutAll {
            sessions_revoked: 1
        })
    );
    assert!(!live(&f, 2));

    login(&mut f, "u1", 3, 100);
    let set = UsersCommand::SetPassword {
        app: "a".into(),
        id: "u1".into(),
        password_hash: "$argon2id$new".into(),
    };
    assert_eq!(
        users(&mut f, set),
        ok(UsersResult::PasswordSet {
            sessions_revoked: 1
        })
    );
    assert!(!live(&f, 3));
    let record = f.reader.user("a", "u1").expect("read").expect("user");
    assert_eq!(record.password_hash, "$argon2id$new");

    login(&mut f, "u1", 4, 100);
    let delete = || UsersCommand::Delete {
        app: "a".into(),
        id: "u1".into(),
    };
    assert_eq!(
        users(&mut f, delete()),
        ok(UsersResult::Deleted { existed: true })
    );
    assert_eq!(
        users(&mut f, delete()),
        ok(UsersResult::Deleted { existed: false })
    );
    assert!(!live(&f, 4));
    assert_eq!(f.reader.user("a", "u1").expect("read"), None);
    assert_eq!(
        f.reader
            .user_id_by_email("a", "ann@example.org")
            .expect("read"),
        None
    );
    assert_eq!(f.reader.users_count("a").expect("count"), 0);
}

#[test]
fn a_token_is_single_use_and_expires() {
    let mut f = fixture();
    let record = TokenRecord {
        kind: TokenKind::Reset,
        subject: "u1".into(),
        roles: BTreeSet::new(),
        expires_ms: 1000,
    };
    let hash: TokenHash = [5; 32];
    let create = UsersCommand::TokenCreate {
        app: "a".into(),
        token: hash,
        record: record.clone(),
    };
    assert_eq!(users(&mut f, create.clone()), ok(UsersResult::TokenCreated));
    let consume = |now_ms: u64| UsersCommand::TokenConsume {
        app: "a".into(),
        token: hash,
        now_ms,
    };
    assert_eq!(
        users(&mut f, consume(10)),
        ok(UsersResult::TokenConsumed {
            record: Some(record)
        })
    );
    assert_eq!(
        users(&mut f, consume(10)),
        ok(UsersResult::TokenConsumed { record: None })
    );
    users(&mut f, create);
    assert_eq!(
        users(&mut f, consume(1000)),
        ok(UsersResult::TokenConsumed { record: None })
    );
    assert_eq!(
        f.reader.user_token("a", &hash).expect("read"),
        None,
        "collected"
    );
}

fn token(f: &mut Fixture, hash: u8, kind: TokenKind, subject: &str, expires_ms: u64) {
    let record = TokenRecord {
        kind,
        subject: subject.into(),
        roles: roles(&["editor"]),
        expires_ms,
    };
    users(
        f,
        UsersCommand::TokenCreate {
            app: "a".into(),
            token: [hash; 32],
            record,
        },
    );
}

fn redeem(f: &mut Fixture, hash: u8, redemption: Redemption, now_ms: u64) -> CommandResult {
    users(
        f,
        UsersCommand::Redeem {
            app: "a".into(),
            token: [hash; 32],
            redemption,
            now_ms,
        },
    )
}

fn redeemed(user_id: Option<&str>) -> CommandResult {
    ok(UsersResult::Redeemed {
        user_id: user_id.map(str::to_string),
    })
}

/// Verify and reset tokens change their user once; a token of another
/// kind is refused and left usable; an expired one is refused.
#[test]
fn redeem_applies_a_token_once_and_only_for_its_kind() {
    let mut f = fixture();
    f.run(create_command("u1", "ann@example.org"));
    login(&mut f, "u1", 1, 100);
    token(&mut f, 7, TokenKind::Verify, "u1", 1000);
    let reset = || Redemption::Reset {
        password_hash: "$argon2id$new".into(),
    };
    assert_eq!(redeem(&mut f, 7, reset(), 10), redeemed(None), "wrong kind");
    assert_eq!(
        redeem(&mut f, 7, Redemption::Verify, 10),
        redeemed(Some("u1"))
    );
    assert!(
        f.reader
            .user("a", "u1")
            .expect("read")
            .expect("user")
            .verified
    );
    assert_eq!(
        redeem(&mut f, 7, Redemption::Verify, 10),
        redeemed(None),
        "used"
    );

    token(&mut f, 8, TokenKind::Reset, "u1", 1000);
    assert_eq!(redeem(&mut f, 8, reset(), 1000), redeemed(None), "expired");
    token(&mut f, 8, TokenKind::Reset, "u1", 1000);
    assert_eq!(redeem(&mut f, 8, reset(), 999), redeemed(Some("u1")));
    let user = f.reader.user("a", "u1").expect("read").expect("user");
    assert_eq!(user.password_hash, "$argon2id$new");
    assert!(user.sessions.is_empty());
    assert!(!live(&f, 1), "a reset revokes every session");
    assert_eq!(redeem(&mut f, 8, reset(), 10), redeemed(None));
}

/// An invitation creates the user verified, with its roles, and a first
/// session; one for an email that is taken is refused and stays unused.
#[test]
fn redeem_invite_creates_a_verified_user_with_a_session() {
    let mut f = fixture();
    let invite = |id: &str| Redemption::Invite {
        id: id.into(),
        password_hash: "$argon2id$h".into(),
        session: [3; 32],
        expires_ms: 5000,
        limits: LIMITS,
    };
    token(&mut f, 9, TokenKind::Invite, "bob@example.org", 1000);
    assert_eq!(redeem(&mut f, 9, invite("u2"), 10), redeemed(Some("u2")));
    let user = f.reader.user("a", "u2").expect("read").expect("user");
    assert!(user.verified);
    assert_eq!(user.email, "bob@example.org");
    assert_eq!(user.roles, roles(&["editor"]));
    assert!(live(&f, 3));
    assert_eq!(redeem(&mut f, 9, invite("u3"), 10), redeemed(None));

    token(&mut f, 10, TokenKind::Invite, "bob@example.org", 1000);
    assert_eq!(
        redeem(&mut f, 10, invite("u4"), 10),
        no(UsersError::EmailTaken {
            email: "bob@example.org".into()
        })
    );
    assert!(f.reader.user_token("a", &[10; 32]).expect("read").is_some());
}

#[test]
fn users_list_pages_in_id_order_and_app_delete_drops_everything() {
    let mut f = fixture();
    for id in ["u3", "u1", "u2"] {
        f.run(create_command(id, &format!("{id}@example.org")));
    }
    login(&mut f, "u1", 1, 100);
    let page = f.reader.users_list("a", None, 2).expect("list");
    let ids: Vec<&str> = page.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["u1", "u2"]);
    let rest = f.reader.users_list("a", Some("u2"), 2).expect("list");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0, "u3");
    f.run(Command::AppDelete {
        app: "a".into(),
        revoke_keys: false,
    });
    f.create("a");
    assert!(f.reader.users_list("a", None, 10).expect("list").is_empty());
    assert!(!live(&f, 1));
    assert_eq!(f.reader.users_count("a").expect("count"), 0);
}

#[test]
fn set_role_changes_one_role_against_the_current_roles() {
    let mut f = fixture();
    f.run(create_command("u1", "ann@example.org"));
    let set = |f: &mut Fixture, role: &str, held: bool| {
        users(
            f,
            UsersCommand::SetRole {
                app: "a".into(),
                id: "u1".into(),
                role: role.into(),
                held,
            },
        )
    };
    // Two changes proposed from the same read both land.
    assert_eq!(
        set(&mut f, "admin", true),
        ok(UsersResult::RoleSet { changed: true })
    );
    assert_eq!(
        set(&mut f, "editor", true),
        ok(UsersResult::RoleSet { changed: true })
    );
    assert_eq!(
        set(&mut f, "admin", true),
        ok(UsersResult::RoleSet { changed: false })
    );
    assert_eq!(
        set(&mut f, "member", false),
        ok(UsersResult::RoleSet { changed: true })
    );
    assert_eq!(
        set(&mut f, "member", false),
        ok(UsersResult::RoleSet { changed: false })
    );
    let record = f.reader.user("a", "u1").expect("read").expect("user");
    assert_eq!(record.roles, roles(&["admin", "editor"]));
    assert_eq!(
        set(&mut f, "bad role", true),
        no(UsersError::InvalidRole {
            role: "bad role".into()
        })
    );
    assert_eq!(
        users(
            &mut f,
            UsersCommand::SetRole {
                app: "a".into(),
                id: "nobody".into(),
                role: "r".into(),
                held: true,
            },
        ),
        no(UsersError::UserNotFound {
            id: "nobody".into()
        })
    );
}

/// The inner enum's log bytes: each variant's index is its position, so a
/// new variant goes at the end. Produced by this code when it was written.
#[test]
fn users_commands_keep_their_bytes() {
    let golden: [(UsersCommand, &str); 6] = [
        (
            UsersCommand::Delete {
                app: "a".into(),
                id: "u".into(),
            },
            "0201610175",
        ),
        (
            UsersCommand::Logout {
                app: "a".into(),
                session: [1; 32],
            },
            "0601610101010101010101010101010101010101010101010101010101010101010101",
        ),
        (
            UsersCommand::TokenConsume {
                app: "a".into(),
                token: [2; 32],
                now_ms: 7,
            },
            "090161020202020202020202020202020202020202020202020202020202020202020207",
        ),
        (
            UsersCommand::Redeem {
                app: "a".into(),
                token: [2; 32],
                redemption: Redemption::Verify,
                now_ms: 7,
            },
            "0a016102020202020202020202020202020202020202020202020202020202020202020007",
        ),
        (
            UsersCommand::Redeem {
                app: "a".into(),
                token: [2; 32],
                redemption: Redemption::Reset {
                    password_hash: "h".into(),
                },
                now_ms: 7,
            },
            "0a0161020202020202020202020202020202020202020202020202020202020202020201016807",
        ),
        (
            UsersCommand::SetRole {
                app: "a".into(),
                id: "u".into(),
                role: "r".into(),
                held: true,
            },
            "0b01610175017201",
        ),
    ];
    for (command, hex) in golden {
        let bytes = encode(&command).expect("encode");
        let text: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(text, hex, "{command:?}");
        let back: UsersCommand = decode(&bytes, STORED_BYTES_MAX).expect("decode");
        assert_eq!(back, command);
    }
}

/// Each node's live sessions hear exactly the commands that end sessions
/// or change what a session's user looks like; rejected commands and
/// refreshes revoke nothing; inner commands of a batch count.
#[test]
fn revocations_are_announced_for_the_commands_that_end_sessions() {
    use super::revoked_sessions;
    use crate::users::SessionsRevoked;
    let user = |id: &str| SessionsRevoked::User {
        app: "a".into(),
        id: id.into(),
    };
    let done = CommandResult::Users(UsersResult::Updated);
    let cases: Vec<(UsersCommand, Vec<SessionsRevoked>)> = vec![
        (
            UsersCommand::Logout {
                app: "a".into(),
                session: [7; 32],
            },
            vec![SessionsRevoked::Session {
                app: "a".into(),
                session: [7; 32],
            }],
        ),
        (
            UsersCommand::LogoutAll {
                app: "a".into(),
                id: "u1".into(),
            },
            vec![user("u1")],
        ),
        (
            UsersCommand::SetPassword {
                app: "a".into(),
                id: "u2".into(),
                password_hash: "h".into(),
            },
            vec![user("u2")],
        ),
        (
            UsersCommand::Delete {
                app: "a".into(),
                id: "u3".into(),
            },
            vec![user("u3")],
        ),
        (
            UsersCommand::Refresh {
                app: "a".into(),
                sessions: Vec::new(),
                now_ms: 1,
            },
            vec![],
        ),
    ];
    for (command, expected) in cases {
        let command = Command::Users(command);
        assert_eq!(revoked_sessions(&command, &done), expected, "{command:?}");
        assert!(
            revoked_sessions(
                &command,
                &rejected(ApplyError::AppNotFound { app: "a".into() })
            )
            .is_empty(),
            "a rejected {command:?} revokes nothing"
        );
    }
    let role = Command::Users(UsersCommand::SetRole {
        app: "a".into(),
        id: "u5".into(),
        role: "r".into(),
        held: false,
    });
    assert_eq!(revoked_sessions(&role, &done), vec![user("u5")]);
    // A redeemed reset names its user in the result only.
    let reset = Command::Users(UsersCommand::Redeem {
        app: "a".into(),
        token: [3; 32],
        redemption: Redemption::Reset {
            password_hash: "h".into(),
        },
        now_ms: 1,
    });
    let redeemed = |user_id: Option<&str>| {
        CommandResult::Users(UsersResult::Redeemed {
            user_id: user_id.map(str::to_string),
        })
    };
    assert_eq!(
        revoked_sessions(&reset, &redeemed(Some("u6"))),
        vec![user("u6")]
    );
    assert!(revoked_sessions(&reset, &redeemed(None)).is_empty());
    let batch = Command::Batch(vec![Command::Users(UsersCommand::Delete {
        app: "a".into(),
        id: "u4".into(),
    })]);
    assert_eq!(
        revoked_sessions(&batch, &CommandResult::Batch(vec![done])),
        vec![user("u4")]
    );
}
