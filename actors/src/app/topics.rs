//! `[[topic]]` declarations: which topics an app publishes on, who may
//! subscribe (`auth`), and how much durable history each keeps (`retain`);
//! and the rule for a concrete topic name.
//!
//! ```toml
//! [[topic]]
//! name = "chat/*"     # a pattern: `*` any run of characters, `?` one
//! auth = "token"      # or "public", or "session"; default "token"
//! retain = 1000       # durable messages kept; 0 (default) = ephemeral only
//!
//! [[topic]]
//! name = "staff/*"
//! auth = "session"    # an end user's session token (`users.login`)
//! role = "staff"      # optional, only with "session": the user needs it
//! ```

use picloud_storage::glob::key_matches;
use picloud_storage::topics::TOPIC_RETAIN_MAX;
use picloud_storage::users::valid_role;
use serde::Deserialize;

/// The longest topic name (or pattern), in bytes.
pub const TOPIC_NAME_BYTES_MAX: usize = 200;
/// The most `[[topic]]` entries one app may declare.
pub const TOPICS_DECLARED_MAX: usize = 100;

/// Who may subscribe to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicAuth {
    /// Anyone who can reach the node.
    Public,
    /// A token from `realtime.token` for this topic.
    Token,
    /// A live session of one of the app's end users (and its `role`, if
    /// the topic names one).
    Session,
}

/// One `[[topic]]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub pattern: String,
    pub auth: TopicAuth,
    /// Durable messages kept per matching topic; 0 = ephemeral only.
    pub retain: u64,
    /// With `auth = "session"`: the role the user must hold.
    pub role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopic {
    name: String,
    auth: Option<TopicAuth>,
    retain: Option<u64>,
    role: Option<String>,
}

/// Checks one `[[topic]]`; the error names the field.
pub(super) fn check_topic(raw: RawTopic) -> Result<TopicSpec, String> {
    check_name(&raw.name, true).map_err(|message| format!("name {:?}: {message}", raw.name))?;
    let retain = raw.retain.unwrap_or(0);
    if retain > TOPIC_RETAIN_MAX {
        return Err(format!(
            "retain = {retain} is above the most a topic may keep ({TOPIC_RETAIN_MAX})"
        ));
    }
    let auth = raw.auth.unwrap_or(TopicAuth::Token);
    if let Some(role) = &raw.role {
        if auth != TopicAuth::Session {
            return Err(format!(
                "role = {role:?} needs auth = \"session\" (a role is an end user's)"
            ));
        }
        if !valid_role(role) {
            return Err(format!(
                "role {role:?}: 1 to 64 characters of a-z, 0-9, '_' and '-'"
            ));
        }
    }
    Ok(TopicSpec {
        pattern: raw.name,
        auth,
        retain,
        role: raw.role,
    })
}

/// Checks a concrete topic name (what a script publishes on or a client
/// subscribes to): 1–200 bytes of printable characters, `/`-separated
/// non-empty segments, no `*` or `?` (those make patterns).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    check_name(name, false)
}

fn check_name(name: &str, pattern: bool) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "a topic name is 1-{TOPIC_NAME_BYTES_MAX} bytes, this one is {}",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("a topic name may not contain {bad:?}"));
    }
    if !pattern && name.contains(['*', '?']) {
        return Err("a topic name may not contain `*` or `?` (only patterns do)".into());
    }
    if name.split('/').any(str::is_empty) {
        return Err("a topic name is `/`-separated non-empty segments".into());
    }
    Ok(())
}

/// The first declaration whose pattern matches `topic`.
pub fn find_topic<'a>(topics: &'a [TopicSpec], topic: &str) -> Option<&'a TopicSpec> {
    topics.iter().find(|spec| key_matches(&spec.pattern, topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pattern: &str, retain: u64) -> TopicSpec {
        TopicSpec {
            pattern: pattern.into(),
            auth: TopicAuth::Token,
            retain,
            role: None,
        }
    }

    #[test]
    fn the_first_matching_declaration_wins() {
        let topics = [spec("chat/*", 10), spec("news", 0), spec("*", 1)];
        let cases = [
            ("chat/1", Some(10)),
            ("chat/a/b", Some(10)),
            ("news", Some(0)),
            ("other", Some(1)),
        ];
        for (topic, retain) in cases {
            assert_eq!(
                find_topic(&topics, topic).map(|s| s.retain),
                retain,
                "{topic}"
            );
        }
        assert_eq!(find_topic(&topics[..2], "chat"), None);
        assert_eq!(find_topic(&topics[..2], "newsroom"), None);
    }

    #[test]
    fn topic_names_are_checked() {
        for good in ["a", "chat/1", "a-b_c.d/é", &"x".repeat(200)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a b",
            "a\nb",
            "a*",
            "a?",
            &"x".repeat(201),
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("chat/*", true).is_ok());
    }

    #[test]
    fn a_role_needs_session_auth_and_a_valid_name() {
        let raw = |auth, role: Option<&str>| RawTopic {
            name: "staff/*".into(),
            auth,
            retain: None,
            role: role.map(String::from),
        };
        let spec = check_topic(raw(Some(TopicAuth::Session), Some("staff"))).expect("valid");
        assert_eq!(
            (spec.auth, spec.role.as_deref()),
            (TopicAuth::Session, Some("staff"))
        );
        assert!(check_topic(raw(Some(TopicAuth::Session), None)).is_ok());
        assert!(check_topic(raw(None, Some("staff"))).is_err(), "token auth");
        assert!(check_topic(raw(Some(TopicAuth::Public), Some("staff"))).is_err());
        assert!(check_topic(raw(Some(TopicAuth::Session), Some("Bad Role"))).is_err());
    }
}
