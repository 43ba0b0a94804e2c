//! The log's bytes: every command shape encodes exactly as the derived
//! encoding of the old `Command` enum wrote it (the golden bytes below were
//! produced by that code), and every legacy shape decodes to the current
//! one.

use std::borrow::Cow;

use super::super::{Command, DeployParts, DocOp, KvOp, SecretRekey, VersionDeploy};
use crate::codec::{STORED_BYTES_MAX, decode, encode};
use crate::docs::IndexDef;
use crate::files::FileLimits;
use crate::inbound_mail::{
    AttachmentBody, InboundMail, InboundMessage, MailAttachment, MailRecipient,
};
use crate::node::NodeInfo;
use crate::operators::OperatorsCommand;
use crate::triggers::TriggerSet;
use crate::users::UsersCommand;

/// `encode` of each command of [`one_of_each`] by the derived encoding of
/// the `Command` enum before the wire enum existed: the variant index in the
/// first byte is the position in that enum, 0 to 30.
const GOLDEN: [&str; 41] = [
    "00016100016b0131010507",
    "0101610202016e030301630101310008",
    "02016109",
    "030161",
    "04016104636f64650a03",
    "05016101020b",
    "06026b31026369086465706c6f793a61030102030c",
    "07026b31",
    "080200016101016401030162",
    "090d",
    "0a04090909090e",
    "0b030f",
    "0c0463657274036b6579",
    "0d0403683a3103703a32",
    "0e016104636f64651002000464",
    "0f01610174fb60ea11",
    "100161020102030112fb3075",
    "1101610103120100016b0131010513",
    "12016102031204626f6f6d14",
    "1301610215",
    "14016102",
    "150161010001630131027b7d16",
    "16016104636f64651702000464010462795f78016301017801",
    "170161017302070718",
    "1801610173",
    "19010161017301010102",
    "1a036c696201661902",
    "1b0161010312000103016301311a",
    "1c0161",
    "1d026b3202636906726561643a6101041b",
    "1e016104636f64651c02000464010462795f78016301017801",
    "1f016103742f31027b7d051d",
    "200161010901",
    "21016101031200000101740131021e",
    "22016101070108",
    "2301610170fb88130174010101010101010101010101010101010101010101010101010101010101010101020202020202020202020202020202020202020202020202020202020202020200090a0b011f",
    "24016101700220",
    "250001610366407801037440780001036240780001730101740001016101630101030405",
    "26016101057840612e6d0178033c693e0366406d01057840612e6d017301017400010168017602016e016301000107016e01630201017021",
    "27020161017a",
    "280301610175",
];

fn a() -> String {
    "a".to_string()
}

fn set() -> KvOp {
    KvOp::Set {
        key: "k".into(),
        value: b"1".to_vec(),
        expires_at_ms: Some(5),
    }
}

fn triggers() -> TriggerSet {
    TriggerSet {
        triggers: vec![],
        chain_depth_max: 4,
        outbox_max: 100,
    }
}

fn index() -> IndexDef {
    IndexDef {
        name: "by_x".into(),
        collection: "c".into(),
        fields: vec!["x".into()],
        unique: true,
    }
}

fn deploy(now_ms: u64, versions_keep: u32, parts: DeployParts) -> Command {
    Command::Deploy(VersionDeploy {
        app: a(),
        bundle: b"code".to_vec(),
        now_ms,
        versions_keep,
        parts,
    })
}

fn full(create_app: bool) -> DeployParts {
    DeployParts::Full {
        triggers: triggers(),
        indexes: vec![index()],
        create_app,
    }
}

fn complete(ops: Vec<KvOp>, docs: Vec<DocOp>, now_ms: u64) -> Command {
    Command::CompleteRun {
        app: a(),
        id: 1,
        term: 3,
        claim_ms: 18,
        ops,
        docs,
        publishes: Vec::new(),
        now_ms,
    }
}

/// One command per wire variant, in wire order, as the current shape that
/// encodes to it.
fn one_of_each() -> Vec<Command> {
    vec![
        Command::Kv {
            app: a(),
            op: set(),
            now_ms: 7,
        },
        Command::KvAtomic {
            app: a(),
            ops: vec![
                KvOp::Incr {
                    key: "n".into(),
                    by: -2,
                },
                KvOp::Cas {
                    key: "c".into(),
                    expected: Some(b"1".to_vec()),
                    new: None,
                },
            ],
            now_ms: 8,
        },
        Command::AppCreate {
            app: a(),
            now_ms: 9,
        },
        Command::AppDelete {
            app: a(),
            revoke_keys: false,
        },
        deploy(10, 3, DeployParts::Bundle),
        Command::Rollback {
            app: a(),
            to_version: Some(2),
            now_ms: 11,
        },
        Command::KeyCreate {
            id: "k1".into(),
            name: "ci".into(),
            scope: "deploy:a".into(),
            secret_hash: vec![1, 2, 3],
            now_ms: 12,
            scoped_app_must_exist: false,
        },
        Command::KeyRevoke { id: "k1".into() },
        Command::Batch(vec![
            Command::Kv {
                app: a(),
                op: KvOp::Delete { key: "d".into() },
                now_ms: 1,
            },
            Command::AppDelete {
                app: "b".into(),
                revoke_keys: false,
            },
        ]),
        Command::AllocateNodeId { now_ms: 13 },
        Command::SetJoinSecret {
            secret: vec![9; 4],
            now_ms: 14,
        },
        Command::RemoveNode { id: 3, now_ms: 15 },
        Command::SetClusterCa {
            cert_pem: "cert".into(),
            key_pem: "key".into(),
        },
        Command::RegisterNode {
            id: 4,
            node: NodeInfo {
                http: "h:1".into(),
                peer: "p:2".into(),
            },
        },
        deploy(16, 2, DeployParts::WithTriggers(triggers())),
        Command::FireCron {
            app: a(),
            trigger: "t".into(),
            slot_ms: 60_000,
            now_ms: 17,
        },
        Command::ClaimRuns {
            app: a(),
            ids: vec![1, 2],
            term: 3,
            node: 1,
            now_ms: 18,
            reclaim_after_ms: 30_000,
        },
        complete(vec![set()], vec![], 19),
        Command::FailRun {
            app: a(),
            id: 2,
            term: 3,
            claim_ms: 18,
            error: "boom".into(),
            now_ms: 20,
        },
        Command::RetryDeadLetter {
            app: a(),
            id: 2,
            now_ms: 21,
        },
        Command::DeleteDeadLetter { app: a(), id: 2 },
        Command::Docs {
            app: a(),
            ops: vec![DocOp::Insert {
                collection: "c".into(),
                id: "1".into(),
                doc: b"{}".to_vec(),
            }],
            now_ms: 22,
        },
        deploy(23, 2, full(true)),
        Command::SecretSet {
            app: a(),
            name: "s".into(),
            sealed: vec![7, 7],
            now_ms: 24,
        },
        Command::SecretDelete {
            app: a(),
            name: "s".into(),
        },
        Command::SecretsRekey {
            secrets: vec![SecretRekey {
                app: a(),
                name: "s".into(),
                old: vec![1],
                new: vec![2],
            }],
        },
        Command::PublishLib {
            name: "lib".into(),
            files: b"f".to_vec(),
            now_ms: 25,
            versions_keep: 2,
        },
        complete(
            vec![],
            vec![DocOp::Delete {
                collection: "c".into(),
                id: "1".into(),
            }],
            26,
        ),
        Command::AppDelete {
            app: a(),
            revoke_keys: true,
        },
        Command::KeyCreate {
            id: "k2".into(),
            name: "ci".into(),
            scope: "read:a".into(),
            secret_hash: vec![4],
            now_ms: 27,
            scoped_app_must_exist: true,
        },
        deploy(28, 2, full(false)),
        Command::Publish {
            app: a(),
            topic: "t/1".into(),
            message: b"{}".to_vec(),
            retain: 5,
            now_ms: 29,
        },
        Command::RealtimeKeySet {
            app: a(),
            sealed: vec![9],
            only_if_absent: true,
        },
        Command::CompleteRun {
            app: a(),
            id: 1,
            term: 3,
            claim_ms: 18,
            ops: vec![],
            docs: vec![],
            publishes: vec![crate::command::RunPublish {
                topic: "t".into(),
                message: b"1".to_vec(),
                retain: 2,
            }],
            now_ms: 30,
        },
        Command::RealtimeKeyRekey {
            app: a(),
            old: vec![7],
            new: vec![8],
        },
        Command::FilePut {
            app: a(),
            path: "p".into(),
            size: 5000,
            content_type: "t".into(),
            sha256: [1; 32],
            blocks: vec![[2; 32]],
            inline: None,
            limits: FileLimits {
                file_bytes_max: 9,
                app_bytes_max: 10,
                app_files_max: 11,
            },
            depth: 1,
            now_ms: 31,
        },
        Command::FileDelete {
            app: a(),
            path: "p".into(),
            depth: 2,
            now_ms: 32,
        },
        Command::Email(crate::email::tests::send()),
        Command::InboundMail(Box::new(InboundMail {
            app: a(),
            recipients: vec![MailRecipient {
                address: "x@a.m".into(),
                local: "x".into(),
            }],
            message: InboundMessage {
                message_id: "<i>".into(),
                from: "f@m".into(),
                to: vec!["x@a.m".into()],
                subject: "s".into(),
                text: Some("t".into()),
                html: None,
                headers: vec![("h".into(), "v".into())],
                attachments: vec![
                    MailAttachment {
                        filename: "n".into(),
                        content_type: "c".into(),
                        size: 1,
                        body: AttachmentBody::Inline(vec![7]),
                    },
                    MailAttachment {
                        filename: "n".into(),
                        content_type: "c".into(),
                        size: 2,
                        body: AttachmentBody::File { path: "p".into() },
                    },
                ],
            },
            now_ms: 33,
        })),
        Command::Users(UsersCommand::Delete {
            app: a(),
            id: "z".into(),
        }),
        Command::Operators(OperatorsCommand::MemberRemove {
            app: a(),
            id: "u".into(),
        }),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

/// Entries already in logs (legacy shapes included) decode to the current
/// shape that keeps their meaning, and what is written now is byte for byte
/// what was written before the upcast existed.
#[test]
fn every_shape_encodes_and_decodes_as_the_log_always_held_it() {
    for (index, (command, golden)) in one_of_each().into_iter().zip(GOLDEN).enumerate() {
        let bytes = encode(&command).expect("encode");
        assert_eq!(hex(&bytes), golden, "variant {index}: encoding");
        assert_eq!(bytes[0] as usize, index, "variant {index}: index");
        let decoded: Command = decode(&unhex(golden), STORED_BYTES_MAX).expect("decode");
        assert_eq!(decoded, command, "variant {index}: decoding");
    }
}

/// The one shape with two encodings: a run written by `CompleteRunWithDocs`
/// with no documents means what `CompleteRun` means, and is written as
/// `CompleteRun` again.
#[test]
fn a_run_with_an_empty_docs_list_is_a_plain_complete_run() {
    let with_docs = super::Wire::CompleteRunWithDocs {
        app: Cow::Owned(a()),
        id: Cow::Owned(1),
        term: Cow::Owned(3),
        claim_ms: Cow::Owned(18),
        ops: Cow::Owned(vec![set()]),
        docs: Cow::Owned(Vec::new()),
        now_ms: Cow::Owned(19),
    };
    let bytes = encode(&with_docs).expect("encode");
    assert_eq!(bytes[0], 27);
    let decoded: Command = decode(&bytes, STORED_BYTES_MAX).expect("decode");
    assert_eq!(decoded, complete(vec![set()], vec![], 19));
    assert_eq!(hex(&encode(&decoded).expect("encode")), GOLDEN[17]);
}
