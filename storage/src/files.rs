//! Files as stored: the metadata record the log replicates, the rules for
//! paths, and the limits a `FilePut` carries.
//!
//! A file's content never enters the log. It is split into
//! [`BLOCK_BYTES`] blocks named by their SHA-256 ([`BlockHash`]), stored
//! outside the log by the cluster crate (`<data-dir>/blocks/`); the record
//! holds the block list, or the bytes themselves for a file of at most
//! [`INLINE_BYTES_MAX`].

use serde::{Deserialize, Serialize};

/// The size of a block: every block of a file but the last is this long.
pub const BLOCK_BYTES: u64 = 1 << 20;

/// Files up to this size live inside their record (no blocks).
pub const INLINE_BYTES_MAX: u64 = 4096;

/// The longest path, in bytes of UTF-8.
pub const PATH_BYTES_MAX: usize = 1024;

/// The longest `content_type`, in bytes.
pub const CONTENT_TYPE_BYTES_MAX: usize = 255;

/// The content type of a file stored without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A block's name: the SHA-256 of its bytes.
pub type BlockHash = [u8; 32];

/// One file's metadata, as stored in `Keyspace::Files`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub size: u64,
    pub content_type: String,
    /// SHA-256 of the whole content (the ETag).
    pub sha256: [u8; 32],
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The content of a file of at most [`INLINE_BYTES_MAX`] bytes.
    pub inline: Option<Vec<u8>>,
    /// How many blocks the block list holds (0 when inline).
    pub blocks: u32,
}

impl FileRecord {
    /// The strong entity tag: `"` + hex SHA-256 + `"`.
    pub fn etag(&self) -> String {
        let mut tag = String::with_capacity(66);
        tag.push('"');
        for byte in self.sha256 {
            tag.push_str(&format!("{byte:02x}"));
        }
        tag.push('"');
        tag
    }
}

/// The file limits a `FilePut` is checked against. The proposer reads them
/// from its settings, so apply stays a function of the command.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimits {
    /// `file_bytes_max`.
    pub file_bytes_max: u64,
    /// `files_bytes_per_app_max`.
    pub app_bytes_max: u64,
    /// `files_per_app_max`.
    pub app_files_max: u64,
}

/// What an app's files take up.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilesUsage {
    pub bytes: u64,
    pub files: u64,
}

/// Why a path is refused (`invalid_path`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("the path is {len} bytes; at most {PATH_BYTES_MAX} are allowed")]
    TooLong { len: usize },
    #[error("the path starts with '/'")]
    Absolute,
    #[error("the path holds a NUL or control character")]
    ControlCharacter,
    #[error("the path holds an empty segment ('//' or a trailing '/')")]
    EmptySegment,
    #[error("the path holds a '.' or '..' segment")]
    DotSegment,
}

/// Checks a file path: 1 to [`PATH_BYTES_MAX`] bytes, no leading `/`, no
/// NUL or other control character (C0 and DEL: paths reach logs and
/// terminals), no empty segment, no `.` or `..` segment.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > PATH_BYTES_MAX {
        return Err(PathError::TooLong { len: path.len() });
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(PathError::ControlCharacter);
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

/// How many blocks a file of `size` bytes has (0 when it is inline).
pub fn block_count(size: u64) -> u32 {
    if size <= INLINE_BYTES_MAX {
        0
    } else {
        u32::try_from(size.div_ceil(BLOCK_BYTES)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        let long = "a".repeat(PATH_BYTES_MAX);
        let too_long = "a".repeat(PATH_BYTES_MAX + 1);
        let cases: &[(&str, Result<(), PathError>)] = &[
            ("a", Ok(())),
            ("photos/2026/cat.jpg", Ok(())),
            ("ünïcode/файл.txt", Ok(())),
            ("with space/and..dots.txt", Ok(())),
            (&long, Ok(())),
            ("", Err(PathError::Empty)),
            (
                &too_long,
                Err(PathError::TooLong {
                    len: PATH_BYTES_MAX + 1,
                }),
            ),
            ("/etc/passwd", Err(PathError::Absolute)),
            ("a\0b", Err(PathError::ControlCharacter)),
            ("a\nb", Err(PathError::ControlCharacter)),
            ("a\u{7f}", Err(PathError::ControlCharacter)),
            ("a//b", Err(PathError::EmptySegment)),
            ("a/", Err(PathError::EmptySegment)),
            ("../x", Err(PathError::DotSegment)),
            ("a/../../x", Err(PathError::DotSegment)),
            ("a/./b", Err(PathError::DotSegment)),
            ("..", Err(PathError::DotSegment)),
        ];
        for (path, expected) in cases {
            assert_eq!(&validate_path(path), expected, "{path:?}");
        }
    }

    #[test]
    fn block_counts() {
        assert_eq!(block_count(0), 0);
        assert_eq!(block_count(INLINE_BYTES_MAX), 0);
        assert_eq!(block_count(INLINE_BYTES_MAX + 1), 1);
        assert_eq!(block_count(BLOCK_BYTES), 1);
        assert_eq!(block_count(BLOCK_BYTES + 1), 2);
        assert_eq!(block_count(50 * BLOCK_BYTES), 50);
    }

    #[test]
    fn etag_is_quoted_hex() {
        let record = FileRecord {
            size: 1,
            content_type: DEFAULT_CONTENT_TYPE.into(),
            sha256: [0xab; 32],
            created_ms: 0,
            updated_ms: 0,
            inline: Some(vec![1]),
            blocks: 0,
        };
        assert_eq!(record.etag(), format!("\"{}\"", "ab".repeat(32)));
    }
}
