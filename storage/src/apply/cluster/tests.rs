//! Cluster records: node ids that only grow and survive a reopen, removed
//! and registered nodes, the join secret, the cluster CA, and all of them
//! inside one batch entry.

use std::sync::Arc;

use openraft::{CommittedLeaderId, LogId};

use crate::apply::tests::{Fixture, batch_keys};
use crate::apply::{apply, changed_apps};
use crate::backend::{Backend, Keyspace, SledBackend, SledOptions};
use crate::command::{Command, CommandResult};
use crate::keys;
use crate::state::StateReader;
use crate::types::NodeId;

fn allocate(f: &mut Fixture) -> NodeId {
    match f.run(Command::AllocateNodeId { now_ms: 5 }) {
        CommandResult::NodeIdAllocated { id } => id,
        other => panic!("AllocateNodeId yields an id: {other:?}"),
    }
}

fn remove(id: NodeId) -> Command {
    Command::RemoveNode { id, now_ms: 6 }
}

#[test]
fn node_ids_start_at_two_and_only_grow() {
    let mut f = Fixture::new();
    assert_eq!(f.reader.next_node_id().expect("next"), 2);
    assert_eq!(allocate(&mut f), 2);
    assert_eq!(allocate(&mut f), 3);
    assert_eq!(f.reader.next_node_id().expect("next"), 4);
    // Removing an allocated id never gives it back.
    assert_eq!(f.run(remove(3)), CommandResult::Done);
    assert_eq!(f.run(remove(2)), CommandResult::Done);
    assert_eq!(allocate(&mut f), 4);
    // An id removed before it was allocated is skipped, not handed out.
    assert_eq!(f.run(remove(5)), CommandResult::Done);
    assert_eq!(f.run(remove(6)), CommandResult::Done);
    assert_eq!(f.reader.next_node_id().expect("next"), 7);
    assert_eq!(allocate(&mut f), 7);
    assert_eq!(allocate(&mut f), 8);
    assert!(!f.reader.removed_nodes().expect("removed").contains(&8));
}

#[test]
fn node_id_counter_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    // sled's flusher thread lets go of the file lock a moment after the
    // last handle is dropped: poll (bounded) until a reopen gets it.
    let open = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let options = SledOptions {
                cache_capacity_bytes: 1 << 20,
            };
            match SledBackend::open(&path, options) {
                Ok(backend) => return Arc::new(backend),
                Err(error)
                    if error.message.contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(error) => panic!("open: {error:?}"),
            }
        }
    };
    let log_id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
    let allocate_at = |backend: &SledBackend, index| {
        apply(
            backend,
            &log_id(index),
            &Command::AllocateNodeId { now_ms: 0 },
        )
        .expect("apply")
    };
    let backend = open();
    assert_eq!(
        allocate_at(backend.as_ref(), 1),
        CommandResult::NodeIdAllocated { id: 2 }
    );
    apply(backend.as_ref(), &log_id(2), &remove(2)).expect("apply");
    backend.flush().expect("flush");
    drop(backend);
    let backend = open();
    assert_eq!(
        allocate_at(backend.as_ref(), 3),
        CommandResult::NodeIdAllocated { id: 3 }
    );
    let reader = StateReader::new(backend, tokio::sync::broadcast::channel(1).0);
    assert_eq!(reader.removed_nodes().expect("removed"), [2]);
}

#[test]
fn registered_nodes_exclude_removed_ones() {
    let mut f = Fixture::new();
    let info = |port: u16| crate::types::NodeInfo {
        http: format!("127.0.0.1:{port}"),
        peer: format!("127.0.0.1:{}", port + 1),
    };
    for id in [3, 2] {
        let node = info(8000 + id as u16 * 10);
        assert_eq!(
            f.run(Command::RegisterNode { id, node }),
            CommandResult::Done
        );
    }
    let ids = |f: &Fixture| -> Vec<NodeId> {
        f.reader
            .registered_nodes()
            .expect("registered")
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(ids(&f), [2, 3]);
    assert_eq!(
        f.reader.registered_nodes().expect("registered")[0].1,
        info(8020)
    );
    f.run(remove(3));
    assert_eq!(ids(&f), [2], "a removed node is no longer registered");
    // A late registration of a removed id is ignored.
    f.run(Command::RegisterNode {
        id: 3,
        node: info(9000),
    });
    assert_eq!(ids(&f), [2]);
}

#[test]
fn removed_nodes_are_a_set_ordered_by_id() {
    let mut f = Fixture::new();
    assert_eq!(
        f.reader.removed_nodes().expect("removed"),
        Vec::<NodeId>::new()
    );
    assert!(!f.reader.is_removed(1).expect("is removed"));
    for id in [300, 1, 3, 300] {
        assert_eq!(f.run(remove(id)), CommandResult::Done);
    }
    assert_eq!(f.reader.removed_nodes().expect("removed"), [1, 3, 300]);
    assert!(f.reader.is_removed(1).expect("is removed"));
    assert!(f.reader.is_removed(300).expect("is removed"));
    assert!(!f.reader.is_removed(2).expect("is removed"));
    // Removing again keeps the first removal's record.
    let first = f
        .backend
        .get(Keyspace::Cluster, &keys::removed_node_key(300))
        .expect("get");
    f.run(Command::RemoveNode {
        id: 300,
        now_ms: 99,
    });
    assert_eq!(
        f.backend
            .get(Keyspace::Cluster, &keys::removed_node_key(300))
            .expect("get"),
        first
    );
}

#[test]
fn join_secret_is_set_and_replaced() {
    let mut f = Fixture::new();
    assert_eq!(f.reader.join_secret().expect("secret"), None);
    let set = |hash: u8| Command::SetJoinSecret {
        secret: vec![hash; 32],
        now_ms: 1,
    };
    assert_eq!(f.run(set(1)), CommandResult::Done);
    assert_eq!(f.reader.join_secret().expect("secret"), Some(vec![1; 32]));
    // Rotation: the new hash replaces the old one.
    assert_eq!(f.run(set(2)), CommandResult::Done);
    assert_eq!(f.reader.join_secret().expect("secret"), Some(vec![2; 32]));
}

#[test]
fn cluster_ca_round_trips() {
    let mut f = Fixture::new();
    assert_eq!(f.reader.cluster_ca().expect("ca"), None);
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
    assert_eq!(
        f.run(Command::SetClusterCa {
            cert_pem: cert.into(),
            key_pem: key.into(),
        }),
        CommandResult::Done
    );
    assert_eq!(
        f.reader.cluster_ca().expect("ca"),
        Some((cert.to_string(), key.to_string()))
    );
    f.run(Command::SetClusterCa {
        cert_pem: "cert 2".into(),
        key_pem: "key 2".into(),
    });
    assert_eq!(
        f.reader.cluster_ca().expect("ca"),
        Some(("cert 2".to_string(), "key 2".to_string()))
    );
}

#[test]
fn cluster_commands_work_inside_a_batch() {
    let mut f = Fixture::new();
    let result = f.run(Command::Batch(vec![
        Command::AllocateNodeId { now_ms: 1 },
        remove(3),
        Command::AllocateNodeId { now_ms: 1 },
        Command::SetJoinSecret {
            secret: vec![9; 32],
            now_ms: 1,
        },
        Command::SetClusterCa {
            cert_pem: "cert".into(),
            key_pem: "key".into(),
        },
    ]));
    assert_eq!(
        result,
        CommandResult::Batch(vec![
            CommandResult::NodeIdAllocated { id: 2 },
            CommandResult::Done,
            // 3 was removed by the command before: skipped.
            CommandResult::NodeIdAllocated { id: 4 },
            CommandResult::Done,
            CommandResult::Done,
        ])
    );
    assert_eq!(
        f.run(Command::Batch(vec![
            Command::AllocateNodeId { now_ms: 2 },
            Command::AllocateNodeId { now_ms: 2 },
        ])),
        CommandResult::Batch(vec![
            CommandResult::NodeIdAllocated { id: 5 },
            CommandResult::NodeIdAllocated { id: 6 },
        ])
    );
    assert_eq!(f.reader.removed_nodes().expect("removed"), [3]);
    assert_eq!(f.reader.join_secret().expect("secret"), Some(vec![9; 32]));
    assert_eq!(
        f.reader.cluster_ca().expect("ca"),
        Some(("cert".to_string(), "key".to_string()))
    );
    assert_eq!(batch_keys(f.backend.as_ref()), 0);
    // None of them changes an app.
    let commands = vec![
        Command::AllocateNodeId { now_ms: 0 },
        Command::SetJoinSecret {
            secret: vec![],
            now_ms: 0,
        },
        remove(9),
        Command::SetClusterCa {
            cert_pem: String::new(),
            key_pem: String::new(),
        },
    ];
    let results = vec![CommandResult::Done; commands.len()];
    assert!(changed_apps(&Command::Batch(commands), &CommandResult::Batch(results)).is_empty());
}
