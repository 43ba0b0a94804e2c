//! File paths (`files.*` in scripts, `FilePut` in the log): one rule,
//! checked by the SDK before a call leaves the VM and by the replicated
//! apply, so both refuse exactly the same paths with `invalid_path`.

/// The longest path, in bytes of UTF-8.
pub const PATH_BYTES_MAX: usize = 1024;

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
}
