//! What `picloud deploy` sends from an app folder.
//!
//! Every regular, non-hidden file, recursively, minus what `.picloudignore`
//! excludes. Files under `public/` are read as bytes and sent base64-encoded
//! (the app's static files); every other file must be UTF-8 text, and a
//! binary one is refused with a message pointing at `public/` and
//! `.picloudignore`.
//!
//! `.picloudignore` uses a documented subset of gitignore syntax (no crate
//! for it is in the tree): one pattern a line; blank lines and `#` comments
//! are skipped; `*` matches within one path segment, `?` one character, `**`
//! any number of segments; a trailing `/` matches directories only; a
//! pattern with a `/` at its start or in its middle is anchored at the app
//! folder, one without matches at any depth; `!` re-includes what an earlier
//! pattern excluded (the last matching line wins). A file inside an ignored
//! directory stays ignored.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;

use super::client::CliError;

/// The ignore file read from the app folder's top.
pub const IGNORE_FILE: &str = ".picloudignore";

/// The folder whose files are sent as bytes (see `actors::app::public`).
const PUBLIC_PREFIX: &str = "public/";

/// The files of an app folder as a deploy sends them.
#[derive(Debug, Default)]
pub struct AppFiles {
    /// Relative path → UTF-8 text.
    pub files: BTreeMap<String, String>,
    /// Path below `public/` → base64 bytes.
    pub public: BTreeMap<String, String>,
}

/// Reads `dir` for a deploy, at most `bytes_max` bytes of files.
pub fn app_files(dir: &Path, bytes_max: u64) -> Result<AppFiles, CliError> {
    let ignore = match std::fs::read_to_string(dir.join(IGNORE_FILE)) {
        Ok(text) => Ignore::parse(&text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(error) => {
            return Err(CliError::new(format!(
                "{}: {error}",
                dir.join(IGNORE_FILE).display()
            )));
        }
    };
    let mut out = AppFiles::default();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let relative = entry
                .path()
                .strip_prefix(dir)
                .map_err(|e| CliError::new(e.to_string()))?
                .to_string_lossy()
                .replace('\\', "/");
            let kind = entry.file_type()?;
            if ignore.is_ignored(&relative, kind.is_dir()) {
                continue;
            }
            if kind.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            total += entry.metadata()?.len();
            if total > bytes_max {
                return Err(CliError::new(format!(
                    "{} holds more than {bytes_max} bytes (list what is not part of the app \
                     in {IGNORE_FILE})",
                    dir.display()
                )));
            }
            let bytes = std::fs::read(entry.path())
                .map_err(|e| CliError::new(format!("{}: {e}", entry.path().display())))?;
            if let Some(below) = relative.strip_prefix(PUBLIC_PREFIX) {
                out.public.insert(
                    below.to_string(),
                    base64::engine::general_purpose::STANDARD.encode(&bytes),
                );
                continue;
            }
            let text = String::from_utf8(bytes).map_err(|_| {
                CliError::new(format!(
                    "{}: not UTF-8 text; app files outside public/ must be text. Put a file \
                     to serve under public/, or list it in {IGNORE_FILE}",
                    entry.path().display()
                ))
            })?;
            out.files.insert(relative, text);
        }
    }
    Ok(out)
}

/// The rules of a `.picloudignore`, in file order.
#[derive(Debug, Default)]
struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    /// The pattern's segments; an unanchored pattern starts with `**`.
    segments: Vec<String>,
    negated: bool,
    directory_only: bool,
}

impl Ignore {
    fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (negated, line) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, line),
                };
                let (directory_only, line) = match line.strip_suffix('/') {
                    Some(rest) => (true, rest),
                    None => (false, line),
                };
                let anchored = line.contains('/');
                let mut segments: Vec<String> = line
                    .trim_start_matches('/')
                    .split('/')
                    .map(str::to_string)
                    .collect();
                if !anchored {
                    segments.insert(0, "**".to_string());
                }
                Rule {
                    segments,
                    negated,
                    directory_only,
                }
            })
            .collect();
        Ignore { rules }
    }

    /// Whether `path` (relative, `/`-separated) is left out. Its parent
    /// directories were checked as the walk went down, so only the path
    /// itself is matched here.
    fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let mut ignored = false;
        for rule in &self.rules {
            if rule.directory_only && !is_dir {
                continue;
            }
            let pattern: Vec<&str> = rule.segments.iter().map(String::as_str).collect();
            if path_matches(&pattern, &parts) {
                ignored = !rule.negated;
            }
        }
        ignored
    }
}

/// Matches pattern segments against path segments; `**` takes any number
/// of segments.
fn path_matches(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| path_matches(rest, &path[skip..])),
        Some((first, rest)) => path.split_first().is_some_and(|(head, tail)| {
            segment_matches(first.as_bytes(), head.as_bytes()) && path_matches(rest, tail)
        }),
    }
}

/// Matches one segment: `*` any run of characters, `?` any one.
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| segment_matches(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && segment_matches(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && segment_matches(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_subset() {
        let ignore = Ignore::parse(
            "# build output\n\n*.psd\nnode_modules/\n/notes.md\ndocs/**/*.txt\n!docs/keep/*.txt\n",
        );
        let cases = [
            ("art.psd", false, true),
            ("public/img/art.psd", false, true),
            ("node_modules", true, true),
            ("node_modules", false, false),
            ("lib/node_modules", true, true),
            ("notes.md", false, true),
            ("sub/notes.md", false, false),
            ("docs/a.txt", false, true),
            ("docs/x/y/a.txt", false, true),
            ("docs/keep/a.txt", false, false),
            ("main.lua", false, false),
        ];
        for (path, is_dir, expected) in cases {
            assert_eq!(ignore.is_ignored(path, is_dir), expected, "{path}");
        }
    }

    #[test]
    fn binary_files_outside_public_are_named_and_public_ones_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("public")).expect("mkdir");
        std::fs::write(root.join("main.lua"), "return function() end").expect("write");
        std::fs::write(root.join("public/logo.png"), [0x89, b'P', 0xff]).expect("write");
        let files = app_files(root, 1 << 20).expect("reads");
        assert_eq!(files.files.keys().collect::<Vec<_>>(), ["main.lua"]);
        assert_eq!(files.public["logo.png"], "iVD/");
        std::fs::write(root.join("raw.bin"), [0xff, 0xfe]).expect("write");
        let error = app_files(root, 1 << 20).expect_err("binary");
        assert!(
            error.message.contains("raw.bin") && error.message.contains("public/"),
            "{}",
            error.message
        );
        std::fs::write(root.join(IGNORE_FILE), "*.bin\n").expect("write");
        assert!(app_files(root, 1 << 20).is_ok());
    }
}
