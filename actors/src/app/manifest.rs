//! `picloud.toml`: what an app declares.

use serde::Deserialize;

use picloud_storage::docs::{INDEX_FIELDS_MAX, INDEXES_MAX, IndexDef, check_collection};

use super::cors::{CorsPolicy, RawCors};
use super::name::validate_app_name;
use super::topics::{RawTopic, TOPICS_DECLARED_MAX, TopicSpec, check_topic};
use crate::cron::{Misfire, Schedule};
use std::sync::Arc;

use crate::users::AuthPolicy;
use crate::users::flows::{AuthMail, SignupMode};
use crate::users::password::{PASSWORD_BYTES_MAX, PASSWORD_CHARS_MIN};
use crate::users::templates::{self, Template, Templates};

/// The manifest file's name inside an app folder and a deploy bundle.
pub const MANIFEST_FILE: &str = "picloud.toml";

/// The most routes one app may declare.
pub const ROUTES_MAX: usize = 256;

/// The most triggers one app may declare.
pub const TRIGGERS_MAX: usize = 64;
/// The longest kv trigger pattern, in bytes.
pub const TRIGGER_PATTERN_BYTES_MAX: usize = 512;
/// The longest trigger name, in bytes.
pub const TRIGGER_NAME_BYTES_MAX: usize = 64;

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub routes: Vec<RouteSpec>,
    pub triggers: Vec<TriggerSpec>,
    pub trigger_limits: TriggerLimits,
    /// `[[index]]`: document indexes, checked.
    pub indexes: Vec<IndexDef>,
    /// The folder whose `.lua` files are modules (`modules = "..."`,
    /// default [`MODULES_FOLDER_DEFAULT`]); see `app/modules.rs`.
    pub modules_folder: String,
    /// Shared libraries pinned in `[libs]`: name → version.
    pub libs: std::collections::BTreeMap<String, u64>,
    /// `[app] expose_errors`: whether HTTP clients see a failed script's
    /// message (file, line, error text). Unset, the node decides: on only
    /// when it runs `--dev`, because a stack message tells an attacker how
    /// the app is built. The full error is always in the app's log.
    pub expose_errors: Option<bool>,
    /// `[cors]`: the other origins whose pages may call the app (none when
    /// the section is absent: browsers then allow same-origin pages only).
    pub cors: Option<CorsPolicy>,
    /// `[[topic]]`: the topics the app publishes on, checked.
    pub topics: Vec<TopicSpec>,
    /// `[mail] aliases`: full addresses (lower-cased) besides
    /// `<anything>@<app>.<mail-domain>` whose mail reaches the app's
    /// `email` triggers.
    pub mail_aliases: Vec<String>,
    /// `domains`: host names (lower-cased) the app is served on at `/`
    /// (`app/domains.rs`).
    pub domains: Vec<String>,
    /// `[auth]`: the app's choices for its end users (sessions, passwords,
    /// the HTTP flows and their mails).
    pub auth: AuthPolicy,
}

/// The folder of an app's modules unless the manifest names another.
pub const MODULES_FOLDER_DEFAULT: &str = "modules";

/// One `[[trigger]]` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    /// Unique in the app: `name = ...`, or the script's file name without
    /// `.lua`. Redeploys carry a trigger's state (last fired slot, pending
    /// runs) over by name.
    pub name: String,
    pub script: String,
    pub kind: TriggerKind,
    /// Runs of one event, the first included, before it is dead-lettered.
    pub attempts_max: u32,
    /// Wait before the first retry; doubled for each retry after it.
    pub backoff_ms: u64,
}

/// What fires a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKind {
    /// A committed kv write in this app whose key matches `pattern`
    /// (`picloud_storage::glob`).
    Kv {
        pattern: String,
        on_set: bool,
        on_delete: bool,
    },
    /// A schedule (checked with [`crate::cron::Schedule::parse`]).
    Cron {
        schedule: String,
        timezone: String,
        misfire: Misfire,
    },
    /// A run of this app was dead-lettered.
    DeadLetter,
    /// A committed write to a document of `collection`.
    Docs {
        collection: String,
        on_insert: bool,
        on_update: bool,
        on_delete: bool,
    },
    /// A durable pub/sub message on a topic matching `pattern`.
    Pubsub { pattern: String },
    /// A committed file put (`on_put`) or delete (`on_delete`) in this app
    /// whose path matches `pattern` (`picloud_storage::glob`).
    Files {
        pattern: String,
        on_put: bool,
        on_delete: bool,
    },
    /// A message received by the SMTP listener for the app whose
    /// recipient's local part (the whole address for one of the app's
    /// `[mail] aliases`) matches `pattern` (`picloud_storage::glob`;
    /// default `*`, every recipient).
    Email { pattern: String },
}

/// The most `[mail] aliases` one app may declare.
pub const MAIL_ALIASES_MAX: usize = 32;
/// The longest address (RFC 5321's path limit).
pub const MAIL_ADDRESS_BYTES_MAX: usize = 254;

/// App-wide bounds of the trigger machinery (`[triggers]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerLimits {
    /// A trigger run's writes may fire further triggers; a chain longer than
    /// this is dead-lettered with `trigger_loop`.
    pub chain_depth_max: u32,
    /// Pending runs of this app; a write that would add one more fails.
    pub outbox_max: u32,
}

impl Default for TriggerLimits {
    fn default() -> Self {
        TriggerLimits {
            chain_depth_max: 8,
            outbox_max: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    kind: String,
    name: Option<String>,
    script: String,
    #[serde(rename = "match")]
    pattern: Option<String>,
    on: Option<Vec<String>>,
    schedule: Option<String>,
    timezone: Option<String>,
    misfire: Option<String>,
    attempts: Option<u32>,
    backoff_ms: Option<u64>,
    collection: Option<String>,
    /// `kind = "pubsub"`: the topic pattern.
    topic: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    collection: String,
    fields: Vec<String>,
    #[serde(default)]
    unique: bool,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriggerLimits {
    chain_depth_max: Option<u32>,
    outbox_max: Option<u32>,
}

/// One `[[route]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// An HTTP method in upper case, or `*` for any.
    pub method: String,
    /// `/greet/:name`, `/files/*rest`.
    pub path: String,
    /// The script file (relative to the app folder) whose handler serves the route.
    pub script: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default, rename = "route")]
    routes: Vec<RouteSpec>,
    #[serde(default, rename = "trigger")]
    triggers: Vec<RawTrigger>,
    #[serde(default, rename = "triggers")]
    trigger_limits: RawTriggerLimits,
    #[serde(default, rename = "index")]
    indexes: Vec<RawIndex>,
    #[serde(default)]
    modules: Option<String>,
    #[serde(default)]
    libs: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    app: RawAppSection,
    #[serde(default)]
    cors: Option<RawCors>,
    #[serde(default, rename = "topic")]
    topics: Vec<RawTopic>,
    #[serde(default)]
    mail: RawMailSection,
    #[serde(default)]
    auth: RawAuthSection,
}

/// `[mail]`: how mail reaches the app.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailSection {
    #[serde(default)]
    aliases: Vec<String>,
}

/// `[auth]`: `session_ttl` in seconds, `password_min` in characters, the
/// HTTP flows' `signup` mode, `verify_email`, `link_base` and mail
/// templates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthSection {
    session_ttl: Option<u64>,
    password_min: Option<usize>,
    signup: Option<String>,
    verify_email: Option<bool>,
    link_base: Option<String>,
    #[serde(default)]
    templates: RawAuthTemplates,
}

/// `[auth.templates]`: each flow mail, when the app replaces the default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthTemplates {
    verify: Option<RawTemplate>,
    reset: Option<RawTemplate>,
    invite: Option<RawTemplate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    subject: String,
    text: String,
    html: Option<String>,
}

/// The longest `[auth] link_base`, in bytes.
const LINK_BASE_BYTES_MAX: usize = 2_048;

/// `link_base`: an absolute http(s) URL with no query or fragment (the
/// flows append `/<action>?token=…`).
fn check_link_base(base: &str) -> Result<(), ManifestError> {
    let scheme_ok = base.starts_with("https://") || base.starts_with("http://");
    if !scheme_ok
        || base.len() > LINK_BASE_BYTES_MAX
        || base.contains(['?', '#'])
        || base.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(manifest_error(format!(
            "[auth] link_base must be an http:// or https:// URL of at most {LINK_BASE_BYTES_MAX} bytes, without '?' or '#', got {base:?}"
        )));
    }
    Ok(())
}

/// `[auth.templates.<name>]`, checked (unknown placeholders refused), or
/// the default.
fn check_template(
    name: &str,
    raw: Option<RawTemplate>,
    default: Template,
) -> Result<Template, ManifestError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let template = Template {
        subject: raw.subject,
        text: raw.text,
        html: raw.html,
    };
    templates::check(&template)
        .map_err(|error| manifest_error(format!("[auth.templates.{name}] {error}")))?;
    Ok(template)
}

/// The longest `[auth] session_ttl`, in seconds (a year).
const SESSION_TTL_SECS_MAX: u64 = 365 * 24 * 3600;
/// The shortest `[auth] session_ttl`, in seconds.
const SESSION_TTL_SECS_MIN: u64 = 60;

fn check_auth(raw: RawAuthSection) -> Result<AuthPolicy, ManifestError> {
    if let Some(ttl) = raw.session_ttl
        && !(SESSION_TTL_SECS_MIN..=SESSION_TTL_SECS_MAX).contains(&ttl)
    {
        return Err(manifest_error(format!(
            "[auth] session_ttl must be {SESSION_TTL_SECS_MIN} to {SESSION_TTL_SECS_MAX} seconds, got {ttl}"
        )));
    }
    if let Some(min) = raw.password_min
        && !(PASSWORD_CHARS_MIN..=PASSWORD_BYTES_MAX).contains(&min)
    {
        return Err(manifest_error(format!(
            "[auth] password_min must be {PASSWORD_CHARS_MIN} to {PASSWORD_BYTES_MAX}, got {min}"
        )));
    }
    let signup = match raw.signup.as_deref() {
        None | Some("open") => SignupMode::Open,
        Some("invite") => SignupMode::Invite,
        Some("closed") => SignupMode::Closed,
        Some(other) => {
            return Err(manifest_error(format!(
                "[auth] signup must be \"open\", \"invite\" or \"closed\", got {other:?}"
            )));
        }
    };
    if let Some(base) = &raw.link_base {
        check_link_base(base)?;
    }
    let defaults = Templates::default();
    let templates = Templates {
        verify: check_template("verify", raw.templates.verify, defaults.verify)?,
        reset: check_template("reset", raw.templates.reset, defaults.reset)?,
        invite: check_template("invite", raw.templates.invite, defaults.invite)?,
    };
    Ok(AuthPolicy {
        session_ttl_ms: raw.session_ttl.map(|secs| secs * 1000),
        password_chars_min: raw.password_min,
        signup,
        verify_email: raw.verify_email.unwrap_or(false),
        mail: Arc::new(AuthMail {
            link_base: raw.link_base,
            templates,
        }),
    })
}

/// `[app]`: settings of the app as a whole.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppSection {
    expose_errors: Option<bool>,
}

/// Why a manifest was rejected; the message names the file and, when known, the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{MANIFEST_FILE}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ManifestError {
    pub line: Option<usize>,
    pub message: String,
}

fn manifest_error(message: impl Into<String>) -> ManifestError {
    ManifestError {
        line: None,
        message: message.into(),
    }
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*",
];

impl Manifest {
    /// Parses and validates the manifest text. Route paths are checked by
    /// [`crate::app::routes::RouteTable::compile`] as well.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            ManifestError {
                line,
                message: e.message().to_string(),
            }
        })?;
        validate_app_name(&raw.name).map_err(|e| manifest_error(e.to_string()))?;
        if raw.routes.len() > ROUTES_MAX {
            return Err(manifest_error(format!(
                "{} routes declared; at most {ROUTES_MAX} are allowed",
                raw.routes.len()
            )));
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (index, mut route) in raw.routes.into_iter().enumerate() {
            route.method = route.method.to_ascii_uppercase();
            if !METHODS.contains(&route.method.as_str()) {
                return Err(manifest_error(format!(
                    "route {}: method {:?} is not one of {}",
                    index + 1,
                    route.method,
                    METHODS.join(", ")
                )));
            }
            if route.script.is_empty() || !route.script.ends_with(".lua") {
                return Err(manifest_error(format!(
                    "route {}: script {:?} must name a .lua file",
                    index + 1,
                    route.script
                )));
            }
            routes.push(route);
        }
        if raw.triggers.len() > TRIGGERS_MAX {
            return Err(manifest_error(format!(
                "{} triggers declared; at most {TRIGGERS_MAX} are allowed",
                raw.triggers.len()
            )));
        }
        let mut triggers: Vec<TriggerSpec> = Vec::with_capacity(raw.triggers.len());
        for (index, raw) in raw.triggers.into_iter().enumerate() {
            let trigger = check_trigger(raw)
                .map_err(|message| manifest_error(format!("trigger {}: {message}", index + 1)))?;
            if triggers.iter().any(|other| other.name == trigger.name) {
                return Err(manifest_error(format!(
                    "trigger {}: name {:?} is used twice (set `name` to tell them apart)",
                    index + 1,
                    trigger.name
                )));
            }
            triggers.push(trigger);
        }
        let defaults = TriggerLimits::default();
        let trigger_limits = TriggerLimits {
            chain_depth_max: raw
                .trigger_limits
                .chain_depth_max
                .unwrap_or(defaults.chain_depth_max),
            outbox_max: raw.trigger_limits.outbox_max.unwrap_or(defaults.outbox_max),
        };
        if !(1..=64).contains(&trigger_limits.chain_depth_max) {
            return Err(manifest_error("triggers.chain_depth_max must be 1-64"));
        }
        if !(1..=1_000_000).contains(&trigger_limits.outbox_max) {
            return Err(manifest_error("triggers.outbox_max must be 1-1000000"));
        }
        let modules_folder = raw
            .modules
            .unwrap_or_else(|| MODULES_FOLDER_DEFAULT.to_string());
        super::modules::validate_folder(&modules_folder).map_err(manifest_error)?;
        super::libs::validate_pins(&raw.libs).map_err(manifest_error)?;
        let indexes = check_indexes(raw.indexes)?;
        let cors = raw
            .cors
            .map(CorsPolicy::check)
            .transpose()
            .map_err(|message| manifest_error(format!("[cors] {message}")))?;
        if raw.topics.len() > TOPICS_DECLARED_MAX {
            return Err(manifest_error(format!(
                "{} topics declared; at most {TOPICS_DECLARED_MAX} are allowed",
                raw.topics.len()
            )));
        }
        let topics = raw
            .topics
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                check_topic(raw)
                    .map_err(|message| manifest_error(format!("topic {}: {message}", index + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mail_aliases = check_mail_aliases(raw.mail.aliases)
            .map_err(|message| manifest_error(format!("[mail] {message}")))?;
        let auth = check_auth(raw.auth)?;
        let domains = check_domains(raw.domains)
            .map_err(|message| manifest_error(format!("domains: {message}")))?;
        Ok(Manifest {
            name: raw.name,
            routes,
            triggers,
            trigger_limits,
            indexes,
            modules_folder,
            libs: raw.libs,
            expose_errors: raw.app.expose_errors,
            cors,
            topics,
            mail_aliases,
            domains,
            auth,
        })
    }
}

/// The most `domains` one app may declare.
pub const DOMAINS_MAX: usize = 16;
/// The longest domain name (RFC 1035's limit on a name's text form).
pub const DOMAIN_BYTES_MAX: usize = 253;
/// The longest label of a domain name.
pub(crate) const LABEL_BYTES_MAX: usize = 63;

/// Checks `domains`: each a DNS name of letters, digits and hyphens in
/// dot-separated labels (no port, no trailing dot), no repeats; returned
/// lower-cased, as `Host` headers are compared case-insensitively.
pub fn check_domains(raw: Vec<String>) -> Result<Vec<String>, String> {
    if raw.len() > DOMAINS_MAX {
        return Err(format!(
            "{} domains declared; at most {DOMAINS_MAX} are allowed",
            raw.len()
        ));
    }
    let mut domains: Vec<String> = Vec::with_capacity(raw.len());
    for domain in raw {
        let domain = domain.to_ascii_lowercase();
        let well_formed = domain.len() <= DOMAIN_BYTES_MAX
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= LABEL_BYTES_MAX
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !well_formed {
            return Err(format!(
                "domain {domain:?} is not a host name such as \"shop.example.org\""
            ));
        }
        if domains.contains(&domain) {
            return Err(format!("domain {domain:?} is listed twice"));
        }
        domains.push(domain);
    }
    Ok(domains)
}

/// Checks `[mail] aliases`: each a plain `local@domain` address, no
/// repeats; returned lower-cased (the listener lower-cases recipients).
fn check_mail_aliases(raw: Vec<String>) -> Result<Vec<String>, String> {
    if raw.len() > MAIL_ALIASES_MAX {
        return Err(format!(
            "{} aliases declared; at most {MAIL_ALIASES_MAX} are allowed",
            raw.len()
        ));
    }
    let mut aliases: Vec<String> = Vec::with_capacity(raw.len());
    for alias in raw {
        let alias = alias.to_ascii_lowercase();
        let well_formed = alias.len() <= MAIL_ADDRESS_BYTES_MAX
            && alias.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && alias
                        .chars()
                        .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | ','))
            });
        if !well_formed {
            return Err(format!(
                "alias {alias:?} is not an address such as \"support@shop.example.org\""
            ));
        }
        if aliases.contains(&alias) {
            return Err(format!("alias {alias:?} is listed twice"));
        }
        aliases.push(alias);
    }
    Ok(aliases)
}

impl Manifest {
    /// The triggers as the replicated state keeps them (the `Deploy` command's trigger set).
    pub fn trigger_set(&self) -> picloud_storage::triggers::TriggerSet {
        use picloud_storage::triggers::{TriggerDef, TriggerDefKind, TriggerSet};
        TriggerSet {
            triggers: self
                .triggers
                .iter()
                .map(|trigger| TriggerDef {
                    name: trigger.name.clone(),
                    script: trigger.script.clone(),
                    kind: match &trigger.kind {
                        TriggerKind::Kv {
                            pattern,
                            on_set,
                            on_delete,
                        } => TriggerDefKind::Kv {
                            pattern: pattern.clone(),
                            on_set: *on_set,
                            on_delete: *on_delete,
                        },
                        TriggerKind::Cron {
                            schedule,
                            timezone,
                            misfire,
                        } => TriggerDefKind::Cron {
                            schedule: schedule.clone(),
                            timezone: timezone.clone(),
                            fire_once: *misfire == Misfire::FireOnce,
                        },
                        TriggerKind::DeadLetter => TriggerDefKind::DeadLetter,
                        TriggerKind::Docs {
                            collection,
                            on_insert,
                            on_update,
                            on_delete,
                        } => TriggerDefKind::Docs {
                            collection: collection.clone(),
                            on_insert: *on_insert,
                            on_update: *on_update,
                            on_delete: *on_delete,
                        },
                        TriggerKind::Pubsub { pattern } => TriggerDefKind::Pubsub {
                            pattern: pattern.clone(),
                        },
                        TriggerKind::Files {
                            pattern,
                            on_put,
                            on_delete,
                        } => TriggerDefKind::Files {
                            pattern: pattern.clone(),
                            on_put: *on_put,
                            on_delete: *on_delete,
                        },
                        // The app's aliases travel with each email trigger:
                        // the trigger set is what the log keeps per version,
                        // and the listener resolves an alias from it.
                        TriggerKind::Email { pattern } => TriggerDefKind::Email {
                            pattern: pattern.clone(),
                            aliases: self.mail_aliases.clone(),
                        },
                    },
                    attempts_max: trigger.attempts_max,
                    backoff_ms: trigger.backoff_ms,
                })
                .collect(),
            chain_depth_max: self.trigger_limits.chain_depth_max,
            outbox_max: self.trigger_limits.outbox_max,
        }
    }
}

/// Checks the `[[index]]` entries; errors name the entry and the field.
fn check_indexes(raw: Vec<RawIndex>) -> Result<Vec<IndexDef>, ManifestError> {
    if raw.len() > INDEXES_MAX {
        return Err(manifest_error(format!(
            "{} indexes declared; at most {INDEXES_MAX} are allowed",
            raw.len()
        )));
    }
    let mut indexes: Vec<IndexDef> = Vec::with_capacity(raw.len());
    for (number, raw) in raw.into_iter().enumerate() {
        let fail = |message: String| manifest_error(format!("index {}: {message}", number + 1));
        check_collection(&raw.collection).map_err(|e| fail(format!("collection: {e}")))?;
        if raw.fields.is_empty() || raw.fields.len() > INDEX_FIELDS_MAX {
            return Err(fail(format!(
                "fields must list 1 to {INDEX_FIELDS_MAX} field paths"
            )));
        }
        for field in &raw.fields {
            let bad_segment = field
                .split('.')
                .any(|part| part.is_empty() || part.starts_with('$'));
            if field.len() > 256 || bad_segment {
                return Err(fail(format!(
                    "field {field:?} is not a field path (such as \"email\" or \"address.city\")"
                )));
            }
        }
        let name = raw.name.unwrap_or_else(|| {
            format!("{}_{}", raw.collection, raw.fields.join("_")).replace('.', "_")
        });
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(fail(format!(
                "name {name:?} must be 1-64 letters, digits, '-' or '_'"
            )));
        }
        if indexes
            .iter()
            .any(|other| other.collection == raw.collection && other.name == name)
        {
            return Err(fail(format!(
                "name {name:?} is used twice on collection {:?}",
                raw.collection
            )));
        }
        indexes.push(IndexDef {
            name,
            collection: raw.collection,
            fields: raw.fields,
            unique: raw.unique,
        });
    }
    Ok(indexes)
}

/// Checks one `[[trigger]]`; the error names the field.
fn check_trigger(raw: RawTrigger) -> Result<TriggerSpec, String> {
    if raw.script.is_empty() || !raw.script.ends_with(".lua") {
        return Err(format!("script {:?} must name a .lua file", raw.script));
    }
    let name = match raw.name {
        Some(name) => name,
        None => {
            let file = raw.script.rsplit('/').next().unwrap_or(&raw.script);
            file.trim_end_matches(".lua").to_string()
        }
    };
    if name.is_empty()
        || name.len() > TRIGGER_NAME_BYTES_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "name {name:?} must be 1-{TRIGGER_NAME_BYTES_MAX} letters, digits, '-' or '_'"
        ));
    }
    let attempts_max = raw.attempts.unwrap_or(5);
    if !(1..=100).contains(&attempts_max) {
        return Err(format!("attempts = {attempts_max} must be 1-100"));
    }
    let backoff_ms = raw.backoff_ms.unwrap_or(1_000);
    if !(10..=3_600_000).contains(&backoff_ms) {
        return Err(format!("backoff_ms = {backoff_ms} must be 10-3600000"));
    }
    let not_for = |field: &str, present: bool, kind: &str| {
        if present {
            Err(format!("`{field}` does not apply to kind = {kind:?}"))
        } else {
            Ok(())
        }
    };
    let kind = match raw.kind.as_str() {
        "kv" => {
            not_for("schedule", raw.schedule.is_some(), "kv")?;
            not_for("timezone", raw.timezone.is_some(), "kv")?;
            not_for("misfire", raw.misfire.is_some(), "kv")?;
            not_for("collection", raw.collection.is_some(), "kv")?;
            let pattern = raw
                .pattern
                .ok_or("kind = \"kv\" needs `match` (a key pattern such as \"orders/*\")")?;
            if pattern.is_empty() || pattern.len() > TRIGGER_PATTERN_BYTES_MAX {
                return Err(format!("match must be 1-{TRIGGER_PATTERN_BYTES_MAX} bytes"));
            }
            let on = raw
                .on
                .unwrap_or_else(|| vec!["set".into(), "delete".into()]);
            if on.is_empty() {
                return Err("on must list \"set\", \"delete\" or both".into());
            }
            if let Some(bad) = on.iter().find(|op| *op != "set" && *op != "delete") {
                return Err(format!(
                    "on = {bad:?} is not an operation (use \"set\" and/or \"delete\")"
                ));
            }
            TriggerKind::Kv {
                pattern,
                on_set: on.iter().any(|op| op == "set"),
                on_delete: on.iter().any(|op| op == "delete"),
            }
        }
        "cron" => {
            not_for("match", raw.pattern.is_some(), "cron")?;
            not_for("on", raw.on.is_some(), "cron")?;
            not_for("collection", raw.collection.is_some(), "cron")?;
            let schedule = raw.schedule.ok_or(
                "kind = \"cron\" needs `schedule` (e.g. \"*/5 * * * *\" or \"@every 30s\")",
            )?;
            let timezone = raw.timezone.unwrap_or_else(|| "UTC".to_string());
            Schedule::parse(&schedule, &timezone).map_err(|e| e.to_string())?;
            let misfire = match raw.misfire.as_deref() {
                None => Misfire::Skip,
                Some(text) => Misfire::parse(text).ok_or_else(|| {
                    format!("misfire = {text:?} must be \"skip\" or \"fire_once\"")
                })?,
            };
            TriggerKind::Cron {
                schedule,
                timezone,
                misfire,
            }
        }
        "dead_letter" => {
            for (field, present) in [
                ("match", raw.pattern.is_some()),
                ("on", raw.on.is_some()),
                ("schedule", raw.schedule.is_some()),
                ("timezone", raw.timezone.is_some()),
                ("misfire", raw.misfire.is_some()),
                ("collection", raw.collection.is_some()),
            ] {
                not_for(field, present, "dead_letter")?;
            }
            TriggerKind::DeadLetter
        }
        "docs" => {
            for (field, present) in [
                ("match", raw.pattern.is_some()),
                ("schedule", raw.schedule.is_some()),
                ("timezone", raw.timezone.is_some()),
                ("misfire", raw.misfire.is_some()),
            ] {
                not_for(field, present, "docs")?;
            }
            let collection = raw.collection.ok_or("kind = \"docs\" needs `collection`")?;
            check_collection(&collection).map_err(|e| format!("collection: {e}"))?;
            let on = raw
                .on
                .unwrap_or_else(|| vec!["insert".into(), "update".into(), "delete".into()]);
            if on.is_empty() {
                return Err("on must list \"insert\", \"update\" and/or \"delete\"".into());
            }
            if let Some(bad) = on
                .iter()
                .find(|op| !["insert", "update", "delete"].contains(&op.as_str()))
            {
                return Err(format!(
                    "on = {bad:?} is not an operation (use \"insert\", \"update\" and/or \"delete\")"
                ));
            }
            TriggerKind::Docs {
                collection,
                on_insert: on.iter().any(|op| op == "insert"),
                on_update: on.iter().any(|op| op == "update"),
                on_delete: on.iter().any(|op| op == "delete"),
            }
        }
        "pubsub" => {
            for (field, present) in [
                ("match", raw.pattern.is_some()),
                ("on", raw.on.is_some()),
                ("schedule", raw.schedule.is_some()),
                ("timezone", raw.timezone.is_some()),
                ("misfire", raw.misfire.is_some()),
                ("collection", raw.collection.is_some()),
            ] {
                not_for(field, present, "pubsub")?;
            }
            let pattern = raw
                .topic
                .ok_or("kind = \"pubsub\" needs `topic` (a topic pattern such as \"chat/*\")")?;
            if pattern.is_empty() || pattern.len() > TRIGGER_PATTERN_BYTES_MAX {
                return Err(format!("topic must be 1-{TRIGGER_PATTERN_BYTES_MAX} bytes"));
            }
            TriggerKind::Pubsub { pattern }
        }
        "files" => {
            for (field, present) in [
                ("topic", raw.topic.is_some()),
                ("schedule", raw.schedule.is_some()),
                ("timezone", raw.timezone.is_some()),
                ("misfire", raw.misfire.is_some()),
                ("collection", raw.collection.is_some()),
            ] {
                not_for(field, present, "files")?;
            }
            // Without `match`, every path of the app: `*` crosses `/`.
            let pattern = raw.pattern.unwrap_or_else(|| "*".to_string());
            if pattern.is_empty() || pattern.len() > TRIGGER_PATTERN_BYTES_MAX {
                return Err(format!("match must be 1-{TRIGGER_PATTERN_BYTES_MAX} bytes"));
            }
            let on = operations(raw.on, &["put", "delete"])?;
            TriggerKind::Files {
                pattern,
                on_put: on.contains(&"put"),
                on_delete: on.contains(&"delete"),
            }
        }
        "email" => {
            for (field, present) in [
                ("on", raw.on.is_some()),
                ("topic", raw.topic.is_some()),
                ("schedule", raw.schedule.is_some()),
                ("timezone", raw.timezone.is_some()),
                ("misfire", raw.misfire.is_some()),
                ("collection", raw.collection.is_some()),
            ] {
                not_for(field, present, "email")?;
            }
            // Without `match`, every recipient of the app.
            let pattern = raw
                .pattern
                .unwrap_or_else(|| "*".to_string())
                .to_ascii_lowercase();
            if pattern.is_empty() || pattern.len() > TRIGGER_PATTERN_BYTES_MAX {
                return Err(format!("match must be 1-{TRIGGER_PATTERN_BYTES_MAX} bytes"));
            }
            TriggerKind::Email { pattern }
        }
        other => {
            return Err(format!(
                "kind = {other:?} is not one of \"kv\", \"docs\", \"cron\", \"dead_letter\", \"pubsub\", \"files\", \"email\""
            ));
        }
    };
    Ok(TriggerSpec {
        name,
        script: raw.script,
        kind,
        attempts_max,
        backoff_ms,
    })
}

/// The operations a trigger's `on` lists, each one of `allowed` (all of
/// them when `on` is absent).
fn operations(
    on: Option<Vec<String>>,
    allowed: &[&'static str],
) -> Result<Vec<&'static str>, String> {
    let listed = || {
        allowed
            .iter()
            .map(|op| format!("{op:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(on) = on else {
        return Ok(allowed.to_vec());
    };
    if on.is_empty() {
        return Err(format!("on must list one or more of {}", listed()));
    }
    on.iter()
        .map(|op| {
            allowed
                .iter()
                .find(|allowed| *allowed == op)
                .copied()
                .ok_or_else(|| format!("on = {op:?} is not an operation (use {})", listed()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRON_AND_KV: &str = r#"
name = "shop"
[[trigger]]
kind = "kv"
match = "orders/*"
on = ["set"]
script = "on_order.lua"

[[trigger]]
kind = "cron"
schedule = "*/5 * * * *"
timezone = "Europe/Berlin"
misfire = "fire_once"
script = "jobs/cleanup.lua"
attempts = 3

[[trigger]]
kind = "dead_letter"
name = "alert"
script = "alert.lua"

[triggers]
chain_depth_max = 4
"#;

    /// `[auth]` takes the session TTL in seconds and a password minimum,
    /// both bounded; absent, the node's settings apply.
    #[test]
    fn users_auth_section() {
        let parse = |auth: &str| Manifest::parse(&format!("name = \"a\"\n[auth]\n{auth}"));
        assert_eq!(
            Manifest::parse("name = \"a\"").expect("valid").auth,
            AuthPolicy::default()
        );
        assert_eq!(
            parse("session_ttl = 3600\npassword_min = 12")
                .expect("valid")
                .auth,
            AuthPolicy {
                session_ttl_ms: Some(3_600_000),
                password_chars_min: Some(12),
                ..AuthPolicy::default()
            }
        );
        for bad in [
            "session_ttl = 10",
            "password_min = 4",
            "password_min = 300",
            "signup = \"anyone\"",
            "link_base = \"ftp://x.org\"",
            "link_base = \"https://x.org/a?b=1\"",
            "[auth.templates.verify]\nsubject = \"s\"\ntext = \"{{lnik}}\"",
            "[auth.templates.welcome]\nsubject = \"s\"\ntext = \"t\"",
            "[auth.templates.reset]\nsubject = \"s\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// The flow keys: `signup` and `verify_email` with their defaults
    /// (open, off), `link_base`, and templates replacing only the ones given.
    #[test]
    fn auth_flow_keys() {
        let parse = |auth: &str| {
            Manifest::parse(&format!("name = \"a\"\n[auth]\n{auth}"))
                .expect("valid")
                .auth
        };
        let default = parse("");
        assert_eq!(default.signup, SignupMode::Open);
        assert!(!default.verify_email);
        assert_eq!(*default.mail, AuthMail::default());
        let auth = parse(
            "signup = \"invite\"\nverify_email = true\nlink_base = \"https://shop.example/auth\"\n[auth.templates.invite]\nsubject = \"Join {{app}}\"\ntext = \"{{link}}\"\nhtml = \"<a href='{{link}}'>join</a>\"",
        );
        assert_eq!(auth.signup, SignupMode::Invite);
        assert!(auth.verify_email);
        assert_eq!(
            auth.mail.link_base.as_deref(),
            Some("https://shop.example/auth")
        );
        assert_eq!(auth.mail.templates.invite.subject, "Join {{app}}");
        assert_eq!(auth.mail.templates.verify, Templates::default().verify);
        assert_eq!(parse("signup = \"closed\"").signup, SignupMode::Closed);
    }

    #[test]
    fn parses_triggers_with_defaults() {
        let manifest = Manifest::parse(CRON_AND_KV).expect("valid");
        assert_eq!(
            manifest.triggers,
            vec![
                TriggerSpec {
                    name: "on_order".into(),
                    script: "on_order.lua".into(),
                    kind: TriggerKind::Kv {
                        pattern: "orders/*".into(),
                        on_set: true,
                        on_delete: false
                    },
                    attempts_max: 5,
                    backoff_ms: 1_000,
                },
                TriggerSpec {
                    name: "cleanup".into(),
                    script: "jobs/cleanup.lua".into(),
                    kind: TriggerKind::Cron {
                        schedule: "*/5 * * * *".into(),
                        timezone: "Europe/Berlin".into(),
                        misfire: Misfire::FireOnce
                    },
                    attempts_max: 3,
                    backoff_ms: 1_000,
                },
                TriggerSpec {
                    name: "alert".into(),
                    script: "alert.lua".into(),
                    kind: TriggerKind::DeadLetter,
                    attempts_max: 5,
                    backoff_ms: 1_000,
                },
            ]
        );
        assert_eq!(
            manifest.trigger_limits,
            TriggerLimits {
                chain_depth_max: 4,
                outbox_max: 10_000
            }
        );
        let plain = Manifest::parse("name = \"x\"").expect("valid");
        assert!(plain.triggers.is_empty());
        assert_eq!(plain.trigger_limits, TriggerLimits::default());
    }

    #[test]
    fn trigger_rejections_name_the_field() {
        let head = "name = \"x\"\n[[trigger]]\n";
        let cases = [
            (
                "kind = \"kv\"\nscript = \"a.lua\"",
                "trigger 1: kind = \"kv\" needs `match`",
            ),
            (
                "kind = \"kv\"\nmatch = \"a/*\"\non = [\"put\"]\nscript = \"a.lua\"",
                "on = \"put\" is not an operation",
            ),
            (
                "kind = \"kv\"\nmatch = \"a/*\"\nschedule = \"@hourly\"\nscript = \"a.lua\"",
                "`schedule` does not apply to kind = \"kv\"",
            ),
            ("kind = \"cron\"\nscript = \"a.lua\"", "needs `schedule`"),
            (
                "kind = \"cron\"\nschedule = \"61 * * * *\"\nscript = \"a.lua\"",
                "minute field \"61\"",
            ),
            (
                "kind = \"cron\"\nschedule = \"@daily\"\ntimezone = \"Nowhere/City\"\nscript = \"a.lua\"",
                "unknown time zone",
            ),
            (
                "kind = \"cron\"\nschedule = \"@daily\"\nmisfire = \"twice\"\nscript = \"a.lua\"",
                "misfire = \"twice\"",
            ),
            (
                "kind = \"webhook\"\nscript = \"a.lua\"",
                "kind = \"webhook\" is not one of",
            ),
            (
                "kind = \"dead_letter\"\nscript = \"a.txt\"",
                "must name a .lua file",
            ),
            (
                "kind = \"dead_letter\"\nscript = \"a.lua\"\nattempts = 0",
                "attempts = 0 must be 1-100",
            ),
            (
                "kind = \"dead_letter\"\nscript = \"a.lua\"\nname = \"bad name\"",
                "name \"bad name\" must be",
            ),
            (
                "kind = \"dead_letter\"\nscript = \"a.lua\"\ncolour = \"red\"",
                "unknown field `colour`",
            ),
        ];
        for (body, expected) in cases {
            let error = Manifest::parse(&format!("{head}{body}"))
                .expect_err(body)
                .to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
        let twice = format!(
            "{head}kind = \"dead_letter\"\nscript = \"a.lua\"\n[[trigger]]\nkind = \"dead_letter\"\nscript = \"b/a.lua\""
        );
        let error = Manifest::parse(&twice).expect_err("duplicate").to_string();
        assert!(error.contains("name \"a\" is used twice"), "{error}");
        let deep = "name = \"x\"\n[triggers]\nchain_depth_max = 0";
        assert!(
            Manifest::parse(deep)
                .expect_err("depth")
                .to_string()
                .contains("chain_depth_max")
        );
    }

    #[test]
    fn email_triggers_match_local_parts_and_carry_the_app_aliases() {
        let text = "name = \"shop\"\n[mail]\naliases = [\"Support@Shop.Example.org\"]\n\
            [[trigger]]\nkind = \"email\"\nscript = \"inbox.lua\"\n\
            [[trigger]]\nkind = \"email\"\nmatch = \"orders-*\"\nscript = \"orders.lua\"\n";
        let manifest = Manifest::parse(text).expect("parse");
        assert_eq!(manifest.mail_aliases, vec!["support@shop.example.org"]);
        assert_eq!(
            manifest.triggers[0].kind,
            TriggerKind::Email {
                pattern: "*".into()
            }
        );
        let set = manifest.trigger_set();
        assert!(set.has_mail_alias("support@shop.example.org"));
        let fired = |local: &str| {
            set.email_triggers_on(local)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(fired("orders-7"), vec!["inbox", "orders"]);
        assert_eq!(fired("hello"), vec!["inbox"]);

        let head = "name = \"x\"\n[[trigger]]\nkind = \"email\"\nscript = \"m.lua\"\n";
        let rejected = [
            (
                "on = [\"put\"]\n",
                "`on` does not apply to kind = \"email\"",
            ),
            (
                "topic = \"a\"\n",
                "`topic` does not apply to kind = \"email\"",
            ),
            ("match = \"\"\n", "match must be 1-512 bytes"),
            (
                "[mail]\naliases = [\"nobody\"]\n",
                "alias \"nobody\" is not an address",
            ),
            (
                "[mail]\naliases = [\"a@b\", \"A@b\"]\n",
                "alias \"a@b\" is listed twice",
            ),
            ("[mail]\nalias = []\n", "unknown field `alias`"),
        ];
        for (body, expected) in rejected {
            let error = Manifest::parse(&format!("{head}{body}"))
                .expect_err(body)
                .to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn files_triggers_default_to_every_path_and_both_operations() {
        let head = "name = \"x\"\n[[trigger]]\nkind = \"files\"\nscript = \"f.lua\"\n";
        let cases = [
            ("", ("*", true, true)),
            ("match = \"uploads/*\"\n", ("uploads/*", true, true)),
            ("on = [\"put\"]\n", ("*", true, false)),
            (
                "match = \"*.png\"\non = [\"delete\"]\n",
                ("*.png", false, true),
            ),
        ];
        for (body, (pattern, on_put, on_delete)) in cases {
            let manifest = Manifest::parse(&format!("{head}{body}")).expect(body);
            let expected = TriggerKind::Files {
                pattern: pattern.into(),
                on_put,
                on_delete,
            };
            assert_eq!(manifest.triggers[0].kind, expected, "{body}");
            assert_eq!(manifest.triggers[0].name, "f");
            let set = manifest.trigger_set();
            assert_eq!(
                set.files_triggers_on("uploads/a.png", "put").count(),
                usize::from(on_put),
                "{body}"
            );
        }
        let rejected = [
            (
                "on = []\n",
                "on must list one or more of \"put\", \"delete\"",
            ),
            ("on = [\"set\"]\n", "on = \"set\" is not an operation"),
            ("match = \"\"\n", "match must be 1-512 bytes"),
            (
                "topic = \"a\"\n",
                "`topic` does not apply to kind = \"files\"",
            ),
            (
                "collection = \"a\"\n",
                "`collection` does not apply to kind = \"files\"",
            ),
            (
                "schedule = \"@daily\"\n",
                "`schedule` does not apply to kind = \"files\"",
            ),
        ];
        for (body, expected) in rejected {
            let error = Manifest::parse(&format!("{head}{body}"))
                .expect_err(body)
                .to_string();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn parses_the_hello_manifest() {
        let manifest = Manifest::parse(
            "name = \"hello\"\n[[route]]\nmethod = \"get\"\npath = \"/greet/:name\"\nscript = \"greet.lua\"\n",
        )
        .expect("valid manifest");
        assert_eq!(manifest.name, "hello");
        assert_eq!(manifest.routes[0].method, "GET");
    }

    #[test]
    fn expose_errors_is_unset_unless_the_app_says() {
        assert_eq!(
            Manifest::parse("name = \"x\"")
                .expect("valid")
                .expose_errors,
            None
        );
        let open = Manifest::parse("name = \"x\"\n[app]\nexpose_errors = true").expect("valid");
        assert_eq!(open.expose_errors, Some(true));
        let typo = Manifest::parse("name = \"x\"\n[app]\nexpose_error = true").expect_err("typo");
        assert!(typo.to_string().contains("unknown field"), "{typo}");
    }

    #[test]
    fn rejections_name_the_problem() {
        let cases = [
            ("name = \"Hello\"", "may hold only"),
            ("name = \"_\"", "must start with"),
            (
                "name = \"x\"\n[[route]]\nmethod=\"FETCH\"\npath=\"/\"\nscript=\"a.lua\"",
                "FETCH",
            ),
            (
                "name = \"x\"\n[[route]]\nmethod=\"GET\"\npath=\"/\"\nscript=\"a.py\"",
                ".lua",
            ),
            ("name = \"x\"\nbogus = 1", "unknown field"),
            ("name = ", "picloud.toml:1"),
            (
                "name = \"x\"\n[[topic]]\nname = \"chat rooms/*\"",
                "topic 1: name \"chat rooms/*\"",
            ),
            ("name = \"x\"\n[[topic]]\nname = \"a//b\"", "topic 1: name"),
            (
                "name = \"x\"\n[[topic]]\nname = \"a\"\nretain = 1000001",
                "topic 1: retain = 1000001",
            ),
            (
                "name = \"x\"\n[[topic]]\nname = \"a\"\nauth = \"sessions\"",
                "unknown variant",
            ),
            (
                "name = \"x\"\n[[trigger]]\nkind = \"pubsub\"\nscript = \"a.lua\"",
                "needs `topic`",
            ),
        ];
        for (text, expected) in cases {
            let error = Manifest::parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?} gave {error:?}");
        }
    }

    #[test]
    fn topics_default_to_token_auth_and_no_history() {
        let manifest = Manifest::parse(
            "name = \"x\"\n[[topic]]\nname = \"chat/*\"\n[[topic]]\nname = \"news\"\nauth = \"public\"\nretain = 10",
        )
        .expect("valid");
        let topics: Vec<_> = manifest
            .topics
            .iter()
            .map(|t| (t.pattern.as_str(), t.auth, t.retain))
            .collect();
        use super::super::topics::TopicAuth;
        assert_eq!(
            topics,
            vec![
                ("chat/*", TopicAuth::Token, 0),
                ("news", TopicAuth::Public, 10)
            ]
        );
    }
}
