//! Backups of the whole cluster: the file format, the node's side that
//! streams one (`write`) and the offline side that checks and restores one
//! (`read`).
//!
//! ```text
//!  "PICBACK1"  u32 header_len  header (JSON: BackupHeader, format 2)
//!  'M'  u32 meta_len  meta (codec: StateMeta: applied log id, membership)
//!  { 'R'  u8 keyspace  u32 key_len  key  u32 value_len  value }*      (keyspace, then key order)
//!  { 'B'  [32] block sha256  u32 block_len  <block bytes> }*          (unless --no-files)
//!  'E'  u64 record_count  u64 block_count  [32] blake3(every byte before this hash)
//! ```
//!
//! All integers are big endian. The records are the state as of the entry
//! the node applied last after a read barrier (a point-in-time view read
//! while applies go on: `picloud_storage::state_view`): every write
//! acknowledged before the backup began is in it. Secrets are in it as
//! they are stored, sealed under the master key. The trailing BLAKE3 lets
//! a restore refuse a truncated or damaged file: it reads the file once,
//! writing as it goes, and removes what it wrote if the end does not check.
//! (Format 1 embedded an openraft snapshot file and ended with SHA-256; it
//! was never released.)

mod read;
mod write;

use serde::{Deserialize, Serialize};

pub use read::{RestoreReport, Verified, restore, verify};
pub use write::{BACKUP_CHUNK_BYTES, BACKUP_CHUNKS_IN_FLIGHT, PreparedBackup, prepare};

use openraft::{LogId, StoredMembership};
use picloud_storage::{NodeId, NodeInfo};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"PICBACK1";
/// The header's `format`; a restore refuses any other.
pub const FORMAT_VERSION: u32 = 2;
/// The largest header a restore reads.
pub const HEADER_BYTES_MAX: u32 = 64 * 1024;

const SECTION_META: u8 = b'M';
const SECTION_RECORD: u8 = b'R';
const SECTION_BLOCK: u8 = b'B';
const SECTION_END: u8 = b'E';

/// The largest meta section a restore reads.
pub const META_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// The state's place in the log, in the meta section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, NodeInfo>,
}

/// What a backup says about itself, at its head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    /// When the node began writing it (ms since the Unix epoch).
    pub created_ms: u64,
    /// The node that wrote it.
    pub node_id: NodeId,
    /// The voters of the cluster at the backup's index.
    pub voters: Vec<NodeId>,
    /// The state's last applied log index and its term.
    pub last_log_index: u64,
    pub last_log_term: u64,
    /// Whether files' blocks follow the snapshot.
    pub files: bool,
    /// The `picloud` version that wrote it.
    pub version: String,
}

/// Why a backup could not be written, checked or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The file is not a complete, intact backup: nothing was restored.
    #[error("{path} is not a complete PiCloud backup ({detail}); nothing was restored")]
    Corrupt { path: String, detail: String },
    #[error("{dir} is not empty: restore only into a new or empty directory")]
    NotEmpty { dir: String },
    #[error("storage: {0}")]
    Storage(#[from] picloud_storage::StorageError),
    #[error("block {hash}: {source}")]
    Block {
        hash: String,
        source: crate::files::StoreError,
    },
    #[error("a restore task failed: {0}")]
    Task(String),
}

impl BackupError {
    fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
        move |source| BackupError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
