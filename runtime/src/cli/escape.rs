//! Making text from the server safe to print in an operator's terminal.
//!
//! Log messages, kv values, dead-letter errors, document fields and key
//! names are written by scripts and API callers. Printed raw, an ESC or a
//! C1 control starts a terminal escape sequence (OSC 52 writes the
//! clipboard, CSI sequences move the cursor or recolour the screen), and a
//! newline inside one log message forges a second log line. Like
//! `journalctl` and `less -R`, the CLI shows such characters visibly
//! instead: every C0 control (newline and tab included: the CLI's own line
//! and column separators are added outside this function), DEL and every
//! C1 control. Printable text, non-ASCII letters included, is unchanged.
//!
//! `--json` output goes through [`json_text`]: serde_json already escapes
//! C0 controls inside strings, and DEL and C1 controls are escaped the same
//! way (`\u007f`, `\u009b`), so the output stays valid JSON that decodes to
//! the same value.

use std::borrow::Cow;
use std::fmt::Write;

use serde_json::Value;

/// Whether `c` must not reach a terminal as-is.
fn is_control(c: char) -> bool {
    c.is_ascii_control() || ('\u{80}'..='\u{9f}').contains(&c)
}

/// `text` with every control character shown as an escape: `\n`, `\r`,
/// `\t`, `\x1b` (ESC and the other C0 controls, DEL) and `\u{9b}` (C1
/// controls). Borrows when there is nothing to escape, the common case.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => shown.push_str("\\n"),
            '\r' => shown.push_str("\\r"),
            '\t' => shown.push_str("\\t"),
            c if c.is_ascii_control() => {
                // Writing to a String cannot fail.
                let _ = write!(shown, "\\x{:02x}", u32::from(c));
            }
            c if is_control(c) => {
                let _ = write!(shown, "\\u{{{:x}}}", u32::from(c));
            }
            c => shown.push(c),
        }
    }
    Cow::Owned(shown)
}

/// A JSON field as terminal-safe text: a string escaped, `null` or a
/// missing field empty, anything else as compact JSON (escaped the same way).
pub fn field(value: &Value) -> String {
    match value {
        Value::String(text) => escape(text).into_owned(),
        Value::Null => String::new(),
        other => json_text(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// Serialised JSON with DEL and C1 controls written as `\u00XX` escapes.
/// JSON's structure is ASCII, so these characters can only sit inside
/// strings, where the escape means the same character: the result is
/// valid JSON with the same value. serde_json escapes C0 controls itself,
/// so the only raw one it leaves is the pretty printer's newline; any other
/// (from a server that is not serde_json) is escaped too.
pub fn json_text(json: &str) -> String {
    let mut shown = String::with_capacity(json.len());
    for c in json.chars() {
        if is_control(c) && c != '\n' {
            // Writing to a String cannot fail.
            let _ = write!(shown, "\\u{:04x}", u32::from(c));
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Characters that start or are terminal control sequences.
    fn holds_control(text: &str) -> bool {
        text.chars().any(is_control)
    }

    #[test]
    fn hostile_text_is_shown_visibly() {
        let cases = [
            // OSC 52: writes the operator's clipboard, ended by BEL.
            (
                "\u{1b}]52;c;ZWNobyBwd25lZA==\u{7}",
                "\\x1b]52;c;ZWNobyBwd25lZA==\\x07",
            ),
            // A colour change (CSI as ESC [).
            ("\u{1b}[31mred", "\\x1b[31mred"),
            // The 8-bit CSI, a C1 control, and DEL.
            ("\u{9b}2Jgone\u{7f}", "\\u{9b}2Jgone\\x7f"),
            // A forged second log line.
            (
                "ok\n2026-01-01 00:00:00Z ERROR forged",
                "ok\\n2026-01-01 00:00:00Z ERROR forged",
            ),
            ("col\tumn\rback\0nul", "col\\tumn\\rback\\x00nul"),
        ];
        for (raw, expected) in cases {
            let shown = escape(raw);
            assert_eq!(shown, expected, "escaping {raw:?}");
            assert!(!holds_control(&shown), "{shown:?} still holds a control");
        }
    }

    #[test]
    fn printable_text_is_unchanged_and_borrowed() {
        for text in ["plain", "naïve café ✓ 日本", "back\\slash", ""] {
            assert!(matches!(escape(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn json_output_stays_valid_and_equal() {
        let value = json!({
            "message": "\u{1b}]52;c;x\u{7}\n\u{9b}31m\u{7f}\u{85}é",
            "nested": ["\u{9c}", 1, null],
        });
        let pretty = serde_json::to_string_pretty(&value).expect("serialises");
        let shown = json_text(&pretty);
        // Only the pretty printer's own newlines remain.
        assert!(!shown.chars().any(|c| is_control(c) && c != '\n'));
        // Whatever else arrives raw is escaped as well.
        assert_eq!(json_text("\"a\rb\u{1b}\""), "\"a\\u000db\\u001b\"");
        assert!(shown.contains("\\u009b") && shown.contains("\\u007f"));
        let back: Value = serde_json::from_str(&shown).expect("still JSON");
        assert_eq!(back, value);
    }

    #[test]
    fn fields_are_escaped_whatever_their_type() {
        assert_eq!(field(&json!("a\u{1b}b")), "a\\x1bb");
        assert_eq!(field(&Value::Null), "");
        assert_eq!(field(&json!(42)), "42");
        assert_eq!(field(&json!({"k": "\u{9b}"})), "{\"k\":\"\\u009b\"}");
    }
}
