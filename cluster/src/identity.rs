//! The node's identity, kept in `<data-dir>/node.json` so a restart is the same node.

use std::path::{Path, PathBuf};

use picloud_storage::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;

/// What a node remembers about itself across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: NodeId,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

fn identity_error(path: &Path, message: impl ToString) -> ClusterError {
    ClusterError::Identity {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads the identity, or `None` when the data dir has never held a node.
pub fn load(data_dir: &Path) -> Result<Option<Identity>, ClusterError> {
    let path = path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| identity_error(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(identity_error(&path, e)),
    }
}

/// Writes the identity durably (write to a temp file, fsync, rename).
pub fn store(data_dir: &Path, identity: &Identity) -> Result<(), ClusterError> {
    let path = path(data_dir);
    let tmp = data_dir.join("node.json.tmp");
    let bytes = serde_json::to_vec_pretty(identity).map_err(|e| identity_error(&path, e))?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| identity_error(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_is_absent_on_a_fresh_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
        store(dir.path(), &Identity { node_id: 7 }).expect("store");
        assert_eq!(
            load(dir.path()).expect("load"),
            Some(Identity { node_id: 7 })
        );
    }

    #[test]
    fn a_corrupt_identity_is_an_error_not_a_new_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("node.json"), b"{not json").expect("write");
        assert!(load(dir.path()).is_err());
    }
}
