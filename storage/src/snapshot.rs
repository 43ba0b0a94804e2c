//! The snapshot file format, written and read record by record.
//!
//! ```text
//!  "PICSNAP1"  u32 meta_len  meta (codec: SnapshotMeta)
//!  { 0x01  u8 keyspace  u32 key_len  key  u32 value_len  value }*
//!  0x00  u64 record_count  u64 fnv1a64(all record frames)
//! ```
//!
//! All integers are big endian. The trailer lets a reader tell a complete
//! file from a truncated or damaged one before it touches the state. Both
//! directions go through a bounded buffer: a snapshot is never held in memory.
//! These functions block (file I/O, fsync): run them on the blocking pool.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use openraft::{SnapshotMeta, StoredMembership};

use crate::backend::{Backend, Keyspace, WriteBatch};
use crate::codec::{self, STORED_BYTES_MAX};
use crate::error::StorageError;
use crate::keys;
use crate::types::{NodeId, NodeInfo};

pub(crate) type Meta = SnapshotMeta<NodeId, NodeInfo>;

const MAGIC: &[u8; 8] = b"PICSNAP1";
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;
/// The I/O buffer for reading and writing snapshot files.
const IO_BUFFER_BYTES: usize = 256 * 1024;
/// Installing flushes a batch to the backend at whichever bound comes first.
const INSTALL_BATCH_RECORDS: usize = 1024;
const INSTALL_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// FNV-1a, 64 bit: a cheap integrity check against truncation and bit rot
/// (not against tampering; peers are authenticated by the transport).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Writes the state's data keyspaces to a new file at `path`, then fsyncs it.
/// The caller guarantees no apply runs meanwhile (see `StateMachine`).
pub(crate) fn write_file(
    backend: &dyn Backend,
    path: &Path,
    meta: &Meta,
) -> Result<(), StorageError> {
    let file = File::create_new(path).map_err(StorageError::io("create snapshot", path))?;
    let mut out = BufWriter::with_capacity(IO_BUFFER_BYTES, file);
    let write_error = StorageError::io;
    let meta_bytes = codec::encode(meta).map_err(StorageError::codec("snapshot meta"))?;
    let meta_len = frame_length(meta_bytes.len(), "snapshot meta")?;
    out.write_all(MAGIC)
        .and_then(|()| out.write_all(&meta_len.to_be_bytes()))
        .and_then(|()| out.write_all(&meta_bytes))
        .map_err(write_error("write snapshot", path))?;

    let mut hash = Fnv64::new();
    let mut count = 0u64;
    for keyspace in Keyspace::STATE_DATA {
        for item in backend.scan(keyspace, &[], &[]) {
            let (key, value) = item?;
            let key_len = frame_length(key.len(), "snapshot key")?;
            let value_len = frame_length(value.len(), "snapshot value")?;
            let head = [TAG_RECORD, keyspace.id()];
            for part in [
                &head[..],
                &key_len.to_be_bytes(),
                &key,
                &value_len.to_be_bytes(),
                &value,
            ] {
                hash.update(part);
                out.write_all(part)
                    .map_err(write_error("write snapshot", path))?;
            }
            count += 1;
        }
    }
    out.write_all(&[TAG_END])
        .and_then(|()| out.write_all(&count.to_be_bytes()))
        .and_then(|()| out.write_all(&hash.0.to_be_bytes()))
        .map_err(write_error("write snapshot", path))?;
    let file = out.into_inner().map_err(|e| StorageError::Io {
        operation: "write snapshot",
        path: path.into(),
        source: e.into_error(),
    })?;
    file.sync_all()
        .map_err(StorageError::io("sync snapshot", path))
}

fn frame_length(length: usize, what: &'static str) -> Result<u32, StorageError> {
    u32::try_from(length)
        .ok()
        .filter(|length| u64::from(*length) <= STORED_BYTES_MAX)
        .ok_or(StorageError::Corrupt {
            what,
            detail: format!("{length} bytes is over the limit"),
        })
}

/// Reads a snapshot file record by record.
pub(crate) struct Reader<'p> {
    input: BufReader<File>,
    path: &'p Path,
    hash: Fnv64,
    count: u64,
}

pub(crate) enum Frame {
    Record {
        keyspace: Keyspace,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    End,
}

impl<'p> Reader<'p> {
    fn open(path: &'p Path) -> Result<(Reader<'p>, Meta), StorageError> {
        let file = File::open(path).map_err(StorageError::io("open snapshot", path))?;
        let mut reader = Reader {
            input: BufReader::with_capacity(IO_BUFFER_BYTES, file),
            path,
            hash: Fnv64::new(),
            count: 0,
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(reader.corrupt("not a PiCloud snapshot"));
        }
        let meta_len = reader.read_u32()?;
        let meta_bytes = reader.read_bytes(meta_len)?;
        let meta = codec::decode(&meta_bytes, STORED_BYTES_MAX)
            .map_err(StorageError::codec("snapshot meta"))?;
        Ok((reader, meta))
    }

    fn corrupt(&self, detail: &str) -> StorageError {
        StorageError::Corrupt {
            what: "snapshot file",
            detail: format!("{}: {detail}", self.path.display()),
        }
    }

    fn read_exact(&mut self, buffer: &mut [u8]) -> Result<(), StorageError> {
        self.input
            .read_exact(buffer)
            .map_err(StorageError::io("read snapshot", self.path))
    }

    fn read_u32(&mut self) -> Result<u32, StorageError> {
        let mut bytes = [0u8; 4];
        self.read_exact(&mut bytes)?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn read_u64(&mut self) -> Result<u64, StorageError> {
        let mut bytes = [0u8; 8];
        self.read_exact(&mut bytes)?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn read_bytes(&mut self, length: u32) -> Result<Vec<u8>, StorageError> {
        if u64::from(length) > STORED_BYTES_MAX {
            return Err(self.corrupt("record over the size limit"));
        }
        let mut bytes = vec![0u8; length as usize];
        self.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    pub(crate) fn next_frame(&mut self) -> Result<Frame, StorageError> {
        let mut head = [0u8; 1];
        self.read_exact(&mut head)?;
        match head[0] {
            TAG_RECORD => {
                let mut keyspace_id = [0u8; 1];
                self.read_exact(&mut keyspace_id)?;
                let keyspace = Keyspace::from_id(keyspace_id[0])
                    .filter(|keyspace| Keyspace::STATE_DATA.contains(keyspace))
                    .ok_or_else(|| self.corrupt("unknown keyspace"))?;
                let key_len = self.read_u32()?;
                let key = self.read_bytes(key_len)?;
                let value_len = self.read_u32()?;
                let value = self.read_bytes(value_len)?;
                for part in [
                    &[TAG_RECORD, keyspace_id[0]][..],
                    &key_len.to_be_bytes(),
                    &key,
                    &value_len.to_be_bytes(),
                    &value,
                ] {
                    self.hash.update(part);
                }
                self.count += 1;
                Ok(Frame::Record {
                    keyspace,
                    key,
                    value,
                })
            }
            TAG_END => {
                let count = self.read_u64()?;
                let hash = self.read_u64()?;
                if count != self.count || hash != self.hash.0 {
                    return Err(self.corrupt("record count or checksum mismatch"));
                }
                let mut extra = [0u8; 1];
                match self.input.read(&mut extra) {
                    Ok(0) => Ok(Frame::End),
                    Ok(_) => Err(self.corrupt("bytes after the end marker")),
                    Err(e) => Err(StorageError::io("read snapshot", self.path)(e)),
                }
            }
            _ => Err(self.corrupt("unknown frame tag")),
        }
    }
}

/// Reads only the meta at the head of a snapshot file.
pub(crate) fn read_meta(path: &Path) -> Result<Meta, StorageError> {
    Reader::open(path).map(|(_, meta)| meta)
}

/// Reads the whole file and checks its trailer; returns its meta.
pub(crate) fn verify_file(path: &Path) -> Result<Meta, StorageError> {
    let (mut reader, meta) = Reader::open(path)?;
    while let Frame::Record { .. } = reader.next_frame()? {}
    Ok(meta)
}

/// Replaces the state with the snapshot at `path` (which must have been
/// verified), then flushes. Returns the names of apps present before or after,
/// whose served code may have changed.
pub(crate) fn install_file(
    backend: &dyn Backend,
    path: &Path,
) -> Result<Vec<String>, StorageError> {
    let (mut reader, meta) = Reader::open(path)?;
    let mut apps = app_names(backend)?;

    // Drop the applied id first: a crash part-way leaves a state that says it
    // is behind the snapshot, and opening installs the snapshot again.
    backend.remove(Keyspace::Meta, keys::META_LAST_APPLIED)?;
    // A batch entry interrupted before this install is superseded by it.
    crate::apply::clear_batch_progress(backend)?;
    for keyspace in Keyspace::STATE_DATA {
        backend.clear_keyspace(keyspace)?;
    }
    let mut batch = WriteBatch::new();
    let mut batch_bytes = 0usize;
    while let Frame::Record {
        keyspace,
        key,
        value,
    } = reader.next_frame()?
    {
        if keyspace == Keyspace::Apps {
            apps.push(String::from_utf8_lossy(&key).into_owned());
        }
        batch_bytes += key.len() + value.len();
        batch.insert(keyspace, key, value);
        if batch.len() >= INSTALL_BATCH_RECORDS || batch_bytes >= INSTALL_BATCH_BYTES {
            backend.apply_batch(std::mem::take(&mut batch))?;
            batch_bytes = 0;
        }
    }
    write_applied_meta(&mut batch, meta.last_log_id.as_ref(), &meta.last_membership)?;
    backend.apply_batch(batch)?;
    backend.flush()?;
    apps.sort();
    apps.dedup();
    Ok(apps)
}

/// Adds the last applied id (removed when `None`) and membership to `batch`.
pub(crate) fn write_applied_meta(
    batch: &mut WriteBatch,
    last_applied: Option<&openraft::LogId<NodeId>>,
    membership: &StoredMembership<NodeId, NodeInfo>,
) -> Result<(), StorageError> {
    match last_applied {
        Some(log_id) => crate::apply::put_last_applied(batch, log_id)?,
        None => batch.remove(Keyspace::Meta, keys::META_LAST_APPLIED.to_vec()),
    }
    let bytes = codec::encode(membership).map_err(StorageError::codec("membership"))?;
    batch.insert(Keyspace::Meta, keys::META_MEMBERSHIP.to_vec(), bytes);
    Ok(())
}

fn app_names(backend: &dyn Backend) -> Result<Vec<String>, StorageError> {
    let mut names = Vec::new();
    for item in backend.scan(Keyspace::Apps, &[], &[]) {
        let (key, _) = item?;
        names.push(String::from_utf8_lossy(&key).into_owned());
    }
    Ok(names)
}
