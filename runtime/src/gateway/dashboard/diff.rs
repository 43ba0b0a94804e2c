//! A small line diff for the deploy history: which files two versions
//! added, removed or changed, and for a changed text file the lines that
//! differ. Pure functions of their input; no I/O.
//!
//! The line diff is the longest common subsequence of the two files' lines
//! (after the common head and tail are set aside), computed in a table of
//! `old × new` cells; [`DIFF_CELLS_MAX`] bounds that table, and a larger or
//! binary file is summarised as "changed (N bytes → M bytes)" instead.

use std::collections::BTreeMap;

/// Most cells (`old lines × new lines`, after the common head and tail)
/// the line diff computes: 1 M cells are 4 MiB of `u32` and a few ms.
pub const DIFF_CELLS_MAX: usize = 1_000_000;
/// Most bytes of either side of a file the line diff reads.
pub const DIFF_FILE_BYTES_MAX: usize = 512 * 1024;

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    Same(&'a str),
    Added(&'a str),
    Removed(&'a str),
}

/// How one file differs between two versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange<'a> {
    Added {
        bytes: usize,
    },
    Removed {
        bytes: usize,
    },
    /// A text file's lines.
    Changed {
        lines: Vec<Line<'a>>,
    },
    /// Too large or not text: only the sizes.
    ChangedBytes {
        old_bytes: usize,
        new_bytes: usize,
    },
}

/// Every file that differs between `old` and `new` (by path), in path
/// order; equal files are left out.
pub fn files<'a>(
    old: &'a BTreeMap<String, String>,
    new: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, FileChange<'a>)> {
    let mut changes = Vec::new();
    for (path, text) in old {
        match new.get(path) {
            None => changes.push((path.as_str(), FileChange::Removed { bytes: text.len() })),
            Some(other) if other != text => changes.push((path.as_str(), file(text, other))),
            Some(_) => {}
        }
    }
    for (path, text) in new {
        if !old.contains_key(path) {
            changes.push((path.as_str(), FileChange::Added { bytes: text.len() }));
        }
    }
    changes.sort_by(|a, b| a.0.cmp(b.0));
    changes
}

/// Whether `text` looks like text a person reads line by line.
fn is_text(text: &str) -> bool {
    !text.contains('\0')
}

/// How `old` became `new`: their lines, or their sizes when either is too
/// large or not text.
pub fn file<'a>(old: &'a str, new: &'a str) -> FileChange<'a> {
    let sizes = FileChange::ChangedBytes {
        old_bytes: old.len(),
        new_bytes: new.len(),
    };
    if old.len().max(new.len()) > DIFF_FILE_BYTES_MAX || !is_text(old) || !is_text(new) {
        return sizes;
    }
    match lines(old, new) {
        Some(lines) => FileChange::Changed { lines },
        None => sizes,
    }
}

/// The line diff of `old` and `new`, or `None` when the part that differs
/// is above [`DIFF_CELLS_MAX`] cells.
pub fn lines<'a>(old: &'a str, new: &'a str) -> Option<Vec<Line<'a>>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (mid_a, mid_b) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let (n, m) = (mid_a.len(), mid_b.len());
    if n.saturating_mul(m) > DIFF_CELLS_MAX {
        return None;
    }
    let mut out: Vec<Line<'a>> = a[..head].iter().map(|line| Line::Same(line)).collect();
    // `common[i][j]`: the LCS length of mid_a[i..] and mid_b[j..], in one
    // row-major table of (n + 1) × (m + 1) cells. Lengths fit a u32.
    let width = m + 1;
    let mut common = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i * width + j] = if mid_a[i] == mid_b[j] {
                common[(i + 1) * width + j + 1] + 1
            } else {
                common[(i + 1) * width + j].max(common[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && mid_a[i] == mid_b[j] {
            out.push(Line::Same(mid_a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || common[(i + 1) * width + j] >= common[i * width + j + 1]) {
            // Removed before added, as `diff -u` shows a replaced line.
            out.push(Line::Removed(mid_a[i]));
            i += 1;
        } else {
            out.push(Line::Added(mid_b[j]));
            j += 1;
        }
    }
    out.extend(a[a.len() - tail..].iter().map(|line| Line::Same(line)));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Line::{Added, Removed, Same};

    /// The diff as `" x"`, `"+x"`, `"-x"` lines.
    fn text(old: &str, new: &str) -> Vec<String> {
        lines(old, new)
            .expect("within the bound")
            .into_iter()
            .map(|line| match line {
                Same(l) => format!(" {l}"),
                Added(l) => format!("+{l}"),
                Removed(l) => format!("-{l}"),
            })
            .collect()
    }

    #[test]
    fn line_diffs() {
        for (old, new, expected) in [
            ("", "", vec![]),
            ("a\nb\n", "a\nb\n", vec![" a", " b"]),
            ("", "a\n", vec!["+a"]),
            ("a\n", "", vec!["-a"]),
            ("a\nb\nc\n", "a\nx\nc\n", vec![" a", "-b", "+x", " c"]),
            ("a\nb\nc\n", "a\nc\n", vec![" a", "-b", " c"]),
            ("a\nc\n", "a\nb\nc\n", vec![" a", "+b", " c"]),
            (
                "x\na\nb\nc\ny\n",
                "x\nb\nc\nd\ny\n",
                vec![" x", "-a", " b", " c", "+d", " y"],
            ),
            ("a\nb\n", "b\na\n", vec!["-a", " b", "+a"]),
        ] {
            assert_eq!(text(old, new), expected, "{old:?} → {new:?}");
        }
    }

    /// Applying the diff's kept and added lines gives the new file, and its
    /// kept and removed lines the old one, for many pairs.
    #[test]
    fn diffs_rebuild_both_sides() {
        let words = ["a", "b", "c", "d"];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..300 {
            let old: Vec<&str> = (0..next(9)).map(|_| words[next(4)]).collect();
            let new: Vec<&str> = (0..next(9)).map(|_| words[next(4)]).collect();
            let diff = lines_of(&old, &new);
            let rebuilt_new: Vec<&str> = diff
                .iter()
                .filter_map(|l| match l {
                    Same(x) | Added(x) => Some(*x),
                    Removed(_) => None,
                })
                .collect();
            let rebuilt_old: Vec<&str> = diff
                .iter()
                .filter_map(|l| match l {
                    Same(x) | Removed(x) => Some(*x),
                    Added(_) => None,
                })
                .collect();
            assert_eq!(rebuilt_new, new);
            assert_eq!(rebuilt_old, old);
            // Minimal: the kept lines are a longest common subsequence.
            let kept = diff.iter().filter(|l| matches!(l, Same(_))).count();
            assert_eq!(kept, lcs_len(&old, &new), "{old:?} {new:?}");
        }
    }

    fn lines_of<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Line<'static>> {
        let old = old.join("\n");
        let new = new.join("\n");
        lines(&old, &new)
            .expect("small")
            .into_iter()
            .map(|line| match line {
                Same(l) => Same(leak(l)),
                Added(l) => Added(leak(l)),
                Removed(l) => Removed(leak(l)),
            })
            .collect()
    }

    fn leak(text: &str) -> &'static str {
        Box::leak(text.to_string().into_boxed_str())
    }

    fn lcs_len(a: &[&str], b: &[&str]) -> usize {
        if a.is_empty() || b.is_empty() {
            return 0;
        }
        if a[0] == b[0] {
            return 1 + lcs_len(&a[1..], &b[1..]);
        }
        lcs_len(&a[1..], b).max(lcs_len(a, &b[1..]))
    }

    #[test]
    fn large_or_binary_files_are_sizes_only() {
        let many_old: String = (0..3000).map(|i| format!("old {i}\n")).collect();
        let many_new: String = (0..3000).map(|i| format!("new {i}\n")).collect();
        assert_eq!(
            lines(&many_old, &many_new),
            None,
            "9 M cells are over the bound"
        );
        assert_eq!(
            file(&many_old, &many_new),
            FileChange::ChangedBytes {
                old_bytes: many_old.len(),
                new_bytes: many_new.len()
            }
        );
        // A long file with one changed line is cheap: head and tail are set aside.
        let mut edited = many_old.clone();
        edited.push_str("one more\n");
        let FileChange::Changed { lines } = file(&many_old, &edited) else {
            panic!("a small change of a long file is a line diff");
        };
        assert_eq!(lines.iter().filter(|l| !matches!(l, Same(_))).count(), 1);
        assert_eq!(
            file("a\0b", "a\0c"),
            FileChange::ChangedBytes {
                old_bytes: 3,
                new_bytes: 3
            }
        );
        let huge = "x".repeat(DIFF_FILE_BYTES_MAX + 1);
        assert!(matches!(file(&huge, "x"), FileChange::ChangedBytes { .. }));
    }

    #[test]
    fn file_lists() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let old = map(&[("a.lua", "1\n"), ("b.lua", "same\n"), ("c.lua", "gone\n")]);
        let new = map(&[("a.lua", "2\n"), ("b.lua", "same\n"), ("d.lua", "new!\n")]);
        let changes = files(&old, &new);
        assert_eq!(
            changes,
            vec![
                (
                    "a.lua",
                    FileChange::Changed {
                        lines: vec![Removed("1"), Added("2")]
                    }
                ),
                ("c.lua", FileChange::Removed { bytes: 5 }),
                ("d.lua", FileChange::Added { bytes: 5 }),
            ]
        );
    }
}
