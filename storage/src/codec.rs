//! The one bincode configuration used for everything storage writes.
//!
//! bincode 1.3's `DefaultOptions` (varint integers, little endian, trailing
//! bytes rejected) has a different wire format from `bincode::serialize`, so
//! the two must never be mixed: every encode and decode in PiCloud goes
//! through [`encode`] and [`decode`]. Decoding always takes a size limit.
//!
//! bincode ignores `with_limit` when decoding from a slice (it sets an
//! infinite limit internally and relies on the slice's length, preallocating
//! cautiously), so [`decode`] enforces the limit on the input length itself:
//! a value decoded from `n` bytes never needs much more than `n` bytes.

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The limit for decoding what storage wrote itself (log entries, records,
/// snapshot meta). Large enough for a deploy bundle inside a log entry, small
/// enough that a corrupt length cannot exhaust a Pi's memory.
pub const STORED_BYTES_MAX: u64 = 128 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode: {source}")]
    Encode { source: bincode::Error },
    #[error("{length_bytes} bytes is over the decode limit of {limit_bytes}")]
    TooLarge { length_bytes: u64, limit_bytes: u64 },
    #[error("decode (limit {limit_bytes} bytes): {source}")]
    Decode {
        limit_bytes: u64,
        source: bincode::Error,
    },
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Encodes `value` with the project's bincode configuration.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    options()
        .serialize(value)
        .map_err(|source| CodecError::Encode { source })
}

/// Decodes one whole value from `bytes`, refusing to allocate more than
/// `limit_bytes` and rejecting trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit_bytes: u64) -> Result<T, CodecError> {
    let length_bytes = bytes.len() as u64;
    if length_bytes > limit_bytes {
        return Err(CodecError::TooLarge {
            length_bytes,
            limit_bytes,
        });
    }
    options()
        .with_limit(limit_bytes)
        .deserialize(bytes)
        .map_err(|source| CodecError::Decode {
            limit_bytes,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, DeployParts, KvOp, VersionDeploy};

    #[test]
    fn command_round_trips() {
        let command = Command::KvAtomic {
            app: "a".into(),
            ops: vec![
                KvOp::Set {
                    key: "k".into(),
                    value: b"1".to_vec(),
                    expires_at_ms: Some(5),
                },
                KvOp::Cas {
                    key: "k".into(),
                    expected: None,
                    new: None,
                },
            ],
            now_ms: 7,
        };
        let bytes = encode(&command).expect("encode");
        let back: Command = decode(&bytes, 1024).expect("decode");
        assert_eq!(back, command);
    }

    /// The log on disk holds commands encoded by variant position: existing
    /// variants keep their index (new ones are appended).
    #[test]
    fn variant_indices_are_stable() {
        use crate::command::CommandResult;
        let first_byte = |bytes: Vec<u8>| bytes[0];
        assert_eq!(
            first_byte(encode(&Command::Batch(vec![])).expect("encode")),
            8
        );
        assert_eq!(
            first_byte(encode(&Command::AllocateNodeId { now_ms: 0 }).expect("encode")),
            9
        );
        assert_eq!(
            first_byte(
                encode(&Command::SetClusterCa {
                    cert_pem: String::new(),
                    key_pem: String::new(),
                })
                .expect("encode")
            ),
            12
        );
        assert_eq!(
            first_byte(encode(&CommandResult::Batch(vec![])).expect("encode")),
            6
        );
        assert_eq!(
            first_byte(encode(&CommandResult::NodeIdAllocated { id: 2 }).expect("encode")),
            7
        );
        assert_eq!(
            first_byte(
                encode(&Command::Deploy(VersionDeploy {
                    app: String::new(),
                    bundle: vec![],
                    now_ms: 0,
                    versions_keep: 1,
                    parts: DeployParts::WithTriggers(Default::default())
                }))
                .expect("encode")
            ),
            14
        );
        assert_eq!(
            first_byte(
                encode(&Command::DeleteDeadLetter {
                    app: String::new(),
                    id: 0
                })
                .expect("encode")
            ),
            20
        );
        assert_eq!(
            first_byte(
                encode(&CommandResult::Run(crate::command::RunOutcome::Completed)).expect("encode")
            ),
            10
        );
        assert_eq!(
            first_byte(
                encode(&Command::Docs {
                    app: String::new(),
                    ops: vec![],
                    now_ms: 0
                })
                .expect("encode")
            ),
            21
        );
        assert_eq!(
            first_byte(
                encode(&Command::Deploy(VersionDeploy {
                    app: String::new(),
                    bundle: vec![],
                    now_ms: 0,
                    versions_keep: 1,
                    parts: DeployParts::Full {
                        triggers: Default::default(),
                        indexes: vec![],
                        create_app: true
                    }
                }))
                .expect("encode")
            ),
            22
        );
        assert_eq!(
            first_byte(encode(&CommandResult::Docs(vec![])).expect("encode")),
            11
        );
        // Secrets (issue 5).
        let secret_set = Command::SecretSet {
            app: String::new(),
            name: String::new(),
            sealed: vec![],
            now_ms: 0,
        };
        assert_eq!(first_byte(encode(&secret_set).expect("encode")), 23);
        let secret_delete = Command::SecretDelete {
            app: String::new(),
            name: String::new(),
        };
        assert_eq!(first_byte(encode(&secret_delete).expect("encode")), 24);
        let rekey = Command::SecretsRekey { secrets: vec![] };
        assert_eq!(first_byte(encode(&rekey).expect("encode")), 25);
        let rekeyed = CommandResult::SecretsRekeyed {
            rekeyed: 0,
            changed: 0,
        };
        assert_eq!(first_byte(encode(&rekeyed).expect("encode")), 12);
        let not_found = crate::command::ApplyError::SecretNotFound {
            app: String::new(),
            name: String::new(),
        };
        assert_eq!(first_byte(encode(&not_found).expect("encode")), 19);
        let full = crate::command::ApplyError::SecretsFull {
            app: String::new(),
            max: 0,
        };
        assert_eq!(first_byte(encode(&full).expect("encode")), 20);
        let publish = Command::PublishLib {
            name: String::new(),
            files: vec![],
            now_ms: 0,
            versions_keep: 1,
        };
        assert_eq!(first_byte(encode(&publish).expect("encode")), 26);
        let complete = Command::CompleteRun {
            app: String::new(),
            id: 0,
            term: 0,
            claim_ms: 0,
            ops: vec![],
            docs: vec![crate::command::DocOp::Delete {
                collection: String::new(),
                id: String::new(),
            }],
            publishes: Vec::new(),
            now_ms: 0,
        };
        assert_eq!(first_byte(encode(&complete).expect("encode")), 27);
        let published = CommandResult::LibPublished { version: 1 };
        assert_eq!(first_byte(encode(&published).expect("encode")), 13);
        // Keys bound to their app (issue 10).
        let delete = Command::AppDelete {
            app: String::new(),
            revoke_keys: true,
        };
        assert_eq!(first_byte(encode(&delete).expect("encode")), 28);
        let key = Command::KeyCreate {
            id: String::new(),
            name: String::new(),
            scope: String::new(),
            secret_hash: vec![],
            now_ms: 0,
            scoped_app_must_exist: true,
        };
        assert_eq!(first_byte(encode(&key).expect("encode")), 29);
        let deploy = VersionDeploy {
            app: String::new(),
            bundle: vec![],
            now_ms: 0,
            versions_keep: 1,
            parts: DeployParts::Full {
                triggers: Default::default(),
                indexes: vec![],
                create_app: true,
            },
        };
        let may_create = Command::Deploy(deploy.clone());
        assert_eq!(first_byte(encode(&may_create).expect("encode")), 22);
        let existing = Command::Deploy(VersionDeploy {
            parts: DeployParts::Full {
                triggers: Default::default(),
                indexes: vec![],
                create_app: false,
            },
            ..deploy
        });
        assert_eq!(first_byte(encode(&existing).expect("encode")), 30);
        let deleted = CommandResult::AppDeleted { keys_revoked: 0 };
        assert_eq!(first_byte(encode(&deleted).expect("encode")), 14);
    }

    #[test]
    fn decode_enforces_limit_and_rejects_trailing_bytes() {
        let bytes = encode(&vec![0u8; 1000]).expect("encode");
        assert!(decode::<Vec<u8>>(&bytes, 100).is_err());
        assert!(decode::<Vec<u8>>(&bytes, 1003).is_ok());
        // A length prefix claiming far more than the input fails cleanly.
        let lying = encode(&(u32::MAX as u64)).expect("encode");
        assert!(decode::<Vec<u8>>(&lying, 1 << 20).is_err());
        let mut trailing = encode(&5u64).expect("encode");
        trailing.push(0);
        assert!(decode::<u64>(&trailing, 100).is_err());
    }
}
