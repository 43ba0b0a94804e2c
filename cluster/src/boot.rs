//! The boot decision: what a node does with its data dir when it starts.
//!
//! [`plan_boot`] is a pure function of what the data dir holds (an identity,
//! TLS files) and whether `--join` was given; `Node::start_with` reads the
//! dir, asks it, and carries the plan out. The table tests below are the
//! whole decision.
//!
//! ```text
//!   identity?  --join?  TLS files      plan
//!   yes        any      CA + node cert Restart (join ignored: the node has an id)
//!   yes        any      missing        Refuse  (never mint a second CA for a known node)
//!   no         yes      any            Join    (a crash mid-join retries the join)
//!   no         no       none           FirstStart { create_tls: true }
//!   no         no       node cert only FirstStart { create_tls: true }  (a crash between the two files)
//!   no         no       CA + node cert FirstStart { create_tls: false } (a crash before the identity was stored)
//!   no         no       CA only        Refuse  (never written in that order)
//! ```

use std::path::Path;
use std::sync::Arc;

use picloud_storage::NodeId;
use picloud_storage::secret_box::Keyring;

use crate::identity::Identity;
use crate::transport::ClusterCa;
use crate::transport::ca::{NODE_CERT_FILE, NODE_KEY_FILE};

/// Where `picloud serve --join` points: any member's peer address, and the
/// cluster's join token.
#[derive(Clone)]
pub struct JoinTarget {
    pub addr: std::net::SocketAddr,
    pub token: String,
    /// How long the join may take, retries included, before the start fails
    /// (`--join-timeout-ms`).
    pub timeout_ms: u64,
    /// The joiner's secrets master key, or how to keep the cluster's.
    pub keys: JoinKeys,
}

/// Writes the master keys a join received (the runtime's key file) before
/// the node uses them; an error fails the start.
pub type StoreReceivedKeys = Arc<dyn Fn(&Keyring) -> Result<(), String> + Send + Sync>;

/// What a joiner says about its secrets master key.
#[derive(Clone)]
pub enum JoinKeys {
    /// Started with a key: the member refuses the join unless it is the
    /// cluster's (`key_id` is the current key's id).
    Configured { key_id: String },
    /// Started with none: the grant carries the cluster's keys, and `store`
    /// keeps them before anything is sealed or opened with them.
    Receive { store: StoreReceivedKeys },
}

impl std::fmt::Debug for JoinTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token: it admits machines to the cluster.
        let key = match &self.keys {
            JoinKeys::Configured { key_id } => key_id.as_str(),
            JoinKeys::Receive { .. } => "(receive)",
        };
        f.debug_struct("JoinTarget")
            .field("addr", &self.addr)
            .field("timeout_ms", &self.timeout_ms)
            .field("key", &key)
            .finish_non_exhaustive()
    }
}

/// Which TLS files the data dir's `tls/` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// `ca.pem` and `ca.key`.
    pub ca: bool,
    /// `node.pem` and `node.key`.
    pub node_cert: bool,
}

impl TlsFiles {
    /// Looks at `dir` (the data dir's `tls/`).
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: ClusterCa::exists(dir),
            node_cert: dir.join(NODE_CERT_FILE).is_file() && dir.join(NODE_KEY_FILE).is_file(),
        }
    }

    fn complete(self) -> bool {
        self.ca && self.node_cert
    }
}

/// What the node does at start.
#[derive(Debug, Clone)]
pub enum BootPlan {
    /// A restart: the data dir holds node `node_id` and its TLS files.
    Restart { node_id: NodeId },
    /// The first start of a new cluster, as its first node: create the
    /// cluster CA and this node's certificate (`create_tls`), or load them
    /// when a start that crashed before storing the identity made them.
    FirstStart { create_tls: bool },
    /// Join the cluster at the target: this data dir has never held a node.
    Join(JoinTarget),
    /// The data dir is in a state no start can use as it is.
    Refuse(BootRefusal),
}

/// Why a data dir cannot start as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootRefusal {
    #[error(
        "this data dir holds node {node_id} but its tls/ directory lacks the {missing}; restore the files from a backup, or wipe the data dir and join the cluster again"
    )]
    MissingTls {
        node_id: NodeId,
        missing: &'static str,
    },
    #[error(
        "tls/ holds the {present} but not the {missing} and no node was ever started here; remove tls/ to start a new cluster"
    )]
    PartialTls {
        present: &'static str,
        missing: &'static str,
    },
}

const CA_FILES: &str = "cluster CA (ca.pem, ca.key)";
const NODE_CERT_FILES: &str = "node certificate (node.pem, node.key)";

/// The boot decision; see the module's table.
pub fn plan_boot(
    identity: Option<&Identity>,
    join: Option<JoinTarget>,
    files: TlsFiles,
) -> BootPlan {
    match (identity, join) {
        (Some(identity), _) if files.complete() => BootPlan::Restart {
            node_id: identity.node_id,
        },
        (Some(identity), _) => BootPlan::Refuse(BootRefusal::MissingTls {
            node_id: identity.node_id,
            missing: if files.ca { NODE_CERT_FILES } else { CA_FILES },
        }),
        (None, Some(target)) => BootPlan::Join(target),
        (None, None) if files.complete() => BootPlan::FirstStart { create_tls: false },
        // The node certificate is written before the CA, so a first start
        // that crashed in between left no CA: it makes both again.
        (None, None) if !files.ca => BootPlan::FirstStart { create_tls: true },
        (None, None) => BootPlan::Refuse(BootRefusal::PartialTls {
            present: CA_FILES,
            missing: NODE_CERT_FILES,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> JoinTarget {
        JoinTarget {
            addr: "127.0.0.1:7071".parse().expect("addr"),
            token: "pct1.x.y".to_string(),
            timeout_ms: 1_000,
            keys: JoinKeys::Configured {
                key_id: "00".to_string(),
            },
        }
    }

    /// The plan, as a short word and the node id or flag it carries.
    fn word(plan: &BootPlan) -> String {
        match plan {
            BootPlan::Restart { node_id } => format!("restart {node_id}"),
            BootPlan::FirstStart { create_tls } => format!("first create_tls={create_tls}"),
            BootPlan::Join(target) => format!("join {}", target.addr),
            BootPlan::Refuse(refusal) => format!("refuse: {refusal}"),
        }
    }

    #[test]
    fn the_boot_table() {
        let node = |id| Some(Identity { node_id: id });
        let none = TlsFiles::default();
        let all = TlsFiles {
            ca: true,
            node_cert: true,
        };
        let only_ca = TlsFiles {
            ca: true,
            node_cert: false,
        };
        let only_node = TlsFiles {
            ca: false,
            node_cert: true,
        };
        let cases: Vec<(&str, Option<Identity>, bool, TlsFiles, &str)> = vec![
            ("a first node restarts", node(1), false, all, "restart 1"),
            ("a joined node restarts", node(4), false, all, "restart 4"),
            ("a restart ignores --join", node(4), true, all, "restart 4"),
            (
                "an identity without TLS files is refused, not given a new CA",
                node(1),
                false,
                none,
                "refuse: this data dir holds node 1 but its tls/ directory lacks the cluster CA",
            ),
            (
                "an identity without its node certificate is refused",
                node(3),
                true,
                only_ca,
                "refuse: this data dir holds node 3 but its tls/ directory lacks the node certificate",
            ),
            ("a fresh dir joins", None, true, none, "join 127.0.0.1:7071"),
            (
                "a join that crashed before the identity was stored joins again",
                None,
                true,
                all,
                "join 127.0.0.1:7071",
            ),
            (
                "a fresh dir starts a cluster",
                None,
                false,
                none,
                "first create_tls=true",
            ),
            (
                "a first start that crashed after making the TLS files reuses them",
                None,
                false,
                all,
                "first create_tls=false",
            ),
            (
                "a CA without a node certificate is refused",
                None,
                false,
                only_ca,
                "refuse: tls/ holds the cluster CA",
            ),
            (
                "a first start that crashed between the node certificate and the CA makes both again",
                None,
                false,
                only_node,
                "first create_tls=true",
            ),
        ];
        for (name, identity, join, files, expected) in cases {
            let plan = plan_boot(identity.as_ref(), join.then(target), files);
            let got = word(&plan);
            assert!(got.starts_with(expected), "{name}: {got}");
        }
    }

    #[test]
    fn tls_files_are_seen_in_the_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(TlsFiles::in_dir(dir.path()), TlsFiles::default());
        let ca = ClusterCa::create().expect("ca");
        ca.store(dir.path()).expect("store");
        assert_eq!(
            TlsFiles::in_dir(dir.path()),
            TlsFiles {
                ca: true,
                node_cert: false
            }
        );
        ca.issue_node_cert(1, &[])
            .expect("issue")
            .store(dir.path())
            .expect("store");
        assert_eq!(
            TlsFiles::in_dir(dir.path()),
            TlsFiles {
                ca: true,
                node_cert: true
            }
        );
    }
}
