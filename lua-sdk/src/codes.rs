//! The one registry of stable error codes.
//!
//! Every code a client or a script can see is listed here once, with the HTTP
//! status the gateway answers with and a one-line meaning. Scripts see a code
//! in a caught error (`"no_leader: ..."`), API clients in
//! `{"error":{"code","message"}}`, the CLI parses it back with
//! [`Code::from_str`](std::str::FromStr). The list lives in this crate because
//! it is the lowest crate every code-minting layer (actors, runtime) depends
//! on; storage stays below it with typed errors, mapped to codes above it.
//! `docs/errors.md` is generated from [`Code::ALL`] (the test
//! `errors_md_is_current` below fails when it is stale), so the document
//! cannot drift.
//!
//! The gateway answers [`Code::status`] for a code it mints. A code raised by
//! a service inside a script that the script did not catch is the script's
//! failure, not the HTTP client's: the gateway keeps the 5xx statuses
//! (back-pressure such as `no_leader`, `disk_full`) and answers 500 for the
//! rest (see `runtime/src/gateway/error.rs`).

use std::fmt;
use std::str::FromStr;

macro_rules! codes {
    ($($variant:ident = ($code:literal, $status:literal, $meaning:literal),)*) => {
        /// A stable error code. The text of each is part of the API: never
        /// rename one, only add.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $(
                #[doc = $meaning]
                $variant,
            )*
        }

        impl Code {
            /// Every code, in registry order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code's text, as clients and scripts see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// The HTTP status the gateway answers with for this code.
            pub const fn status(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            /// What the code means, in one line.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Code::$variant => $meaning,)*
                }
            }
        }
    };
}

codes! {
    // ---- the request itself ----
    NotFound = ("not_found", 404, "No endpoint or app is at this path."),
    Unauthorized = ("unauthorized", 401, "The admin API needs a valid, unrevoked `Authorization: Bearer <key>` (or an operator's session, `pcs_...`)."),
    Forbidden = ("forbidden", 403, "The key's scope, or the operator's role in the app, does not allow this request."),
    InvalidJson = ("invalid_json", 400, "The request body is not valid JSON."),
    InvalidField = ("invalid_field", 400, "A field of the request has the wrong type or value; the message names it."),
    InvalidQuery = ("invalid_query", 400, "A query-string parameter, or a documents query, is malformed."),
    BadBody = ("bad_body", 400, "The request body could not be read."),
    BodyTooLarge = ("body_too_large", 413, "The request body is larger than the limit (`http_body_bytes_max`, `deploy_bytes_max`)."),
    BodyTimeout = ("body_timeout", 408, "The client sent its body too slowly (`http_body_timeout_ms`, `http_body_rate_bytes_min`)."),
    BadRequest = ("bad_request", 400, "The request is not valid HTTP/1.1, or a realtime stream request (`GET /_/realtime/...`) carries a body or bytes after its head; the message says which."),
    HeadTooLarge = ("head_too_large", 431, "The request head is over the server's limit (64 KiB, or more than 100 header lines)."),
    Overloaded = ("overloaded", 503, "The node sheds load: no in-flight permit, body budget or write-queue slot is free; retry shortly."),
    // ---- apps, deploys and libraries ----
    InvalidAppName = ("invalid_app_name", 400, "App names are 1 to 63 bytes of a-z, 0-9, '-' and '_', starting with a letter or digit."),
    AppNotFound = ("app_not_found", 404, "No app has this name."),
    AppExists = ("app_exists", 409, "An app with this name already exists."),
    AppNotDeployed = ("app_not_deployed", 404, "The app exists but has no deployed version."),
    RouteNotFound = ("route_not_found", 404, "The app has no route for this path."),
    MethodNotAllowed = ("method_not_allowed", 405, "The app's route does not accept this method."),
    AppBusy = ("app_busy", 503, "Every VM of the app is busy and the wait (`vm_wait_ms`) ran out."),
    AppUnavailable = ("app_unavailable", 503, "The app's runtime is restarting; retry shortly."),
    AppLoadFailed = ("app_load_failed", 500, "The app's deployed version did not load on this node."),
    InvalidDeploy = ("invalid_deploy", 400, "The deploy bundle failed a check (manifest, syntax, imports, or a script's top level)."),
    DomainTaken = ("domain_taken", 409, "Another app already declares one of the manifest's `domains`."),
    VersionNotFound = ("version_not_found", 404, "The app has no such version."),
    NoEarlierVersion = ("no_earlier_version", 409, "The app has no earlier version to roll back to."),
    InvalidLibName = ("invalid_lib_name", 400, "Library names follow the rules of app names."),
    InvalidLib = ("invalid_lib", 400, "The library's files failed a check."),
    LibNotFound = ("lib_not_found", 400, "A `[libs]` pin names a library version that is not kept."),
    UnavailableAtLoad = ("unavailable_at_load", 400, "A script called a service while it loaded; services are for handlers."),
    // ---- scripts ----
    ScriptTimeout = ("script_timeout", 504, "The script ran out of its instruction budget or wall-clock time."),
    ScriptMemory = ("script_memory", 500, "The script hit its VM's memory cap."),
    ScriptError = ("script_error", 500, "The script raised an error it did not catch (or overflowed its stack)."),
    InvalidResponse = ("invalid_response", 500, "The handler returned something that is not a valid response."),
    NoSuchScript = ("no_such_script", 500, "The route names a script the deployed version does not hold."),
    Unsupported = ("unsupported", 500, "The service is not available to scripts on this host."),
    Unavailable = ("unavailable", 503, "The service cannot be reached right now; retry shortly."),
    TooManyWrites = ("too_many_writes", 500, "A trigger run tried more writes than one run may make."),
    // ---- outbound HTTP (`http` in scripts) ----
    HttpBlocked = ("http_blocked", 403, "The SSRF guard refused the target: a scheme other than http/https, or an address in a refused class (loopback, private, link-local, ...); the message names the class. Operators open exact targets with `http_out_allow`."),
    HttpTimeout = ("http_timeout", 504, "The outbound request did not finish within its `timeout_ms` (or the script's remaining time)."),
    HttpTooLarge = ("http_too_large", 502, "The outbound request body or the response is over its byte limit (`http_out_request_bytes_max`, `http_out_response_bytes_max`)."),
    HttpBusy = ("http_busy", 503, "Too many outbound requests are in flight for the app or the node (`http_out_per_app_max`, `http_out_per_node_max`)."),
    HttpFailed = ("http_failed", 502, "The outbound request failed: DNS, connect, TLS or protocol; the message says why."),
    // ---- pub/sub and realtime ----
    TopicNotFound = ("topic_not_found", 404, "No `[[topic]]` of the app's manifest matches this topic name."),
    InvalidTopic = ("invalid_topic", 400, "A topic name is empty, too long, or holds a character topics may not."),
    MessageTooLarge = ("message_too_large", 413, "A published message is over `pubsub_message_bytes_max`."),
    TokenExpired = ("token_expired", 401, "The realtime token's expiry has passed; ask the app for a new one."),
    TokenInvalid = ("token_invalid", 401, "The realtime token is missing, malformed, signed with another key, or for another app."),
    TokenWrongTopic = ("token_wrong_topic", 403, "The realtime token was issued for another topic."),
    RealtimeFull = ("realtime_full", 503, "The node or the app holds the most realtime subscribers allowed (`realtime_subscribers_per_node_max`, `realtime_subscribers_per_app_max`)."),
    TopicsFull = ("topics_full", 503, "The app has the most live topics allowed on this node (`realtime_topics_per_app_max`)."),
    // ---- files ----
    InvalidPath = ("invalid_path", 400, "A file path is empty, over 1024 bytes, not UTF-8, holds a NUL or control character, a `..` or empty segment, or starts with `/`."),
    FileNotFound = ("file_not_found", 404, "The app has no file at this path."),
    FileTooLarge = ("file_too_large", 413, "The file is over `file_bytes_max`, or (from a script) over `file_inline_read_max`: stream it through a signed URL instead."),
    QuotaExceeded = ("quota_exceeded", 413, "The app would hold more file bytes or files than allowed (`files_bytes_per_app_max`, `files_per_app_max`)."),
    UrlExpired = ("url_expired", 403, "The signed file URL's expiry has passed; ask the app for a new one."),
    UrlInvalid = ("url_invalid", 403, "The signed file URL is malformed, tampered with, signed with another key, or used with another method or content type than it was signed for."),
    RangeNotSatisfiable = ("range_not_satisfiable", 416, "The `Range` starts past the end of the file."),
    UploadIncomplete = ("upload_incomplete", 400, "The upload ended before the bytes its `Content-Length` announced; nothing was stored."),
    ReplicasUnavailable = ("replicas_unavailable", 503, "Too few of a block's replica nodes acknowledged it durable; nothing was stored. Retry when the cluster is whole."),
    FileUnavailable = ("file_unavailable", 503, "No reachable node holds one of the file's blocks right now."),
    // ---- email ----
    EmailInvalid = ("email_invalid", 400, "An email address, header or message field is malformed; the message names it."),
    EmailTooLarge = ("email_too_large", 413, "An outgoing message (bodies and attachments) is over `email_bytes_max`, or has more recipients than `email_recipients_max`."),
    EmailNotFound = ("email_not_found", 404, "No captured message with this id (dev mode's `picloud mail show`)."),
    // ---- end users and sessions ----
    EmailTaken = ("email_taken", 409, "Another user of the app has this email address."),
    PasswordWeak = ("password_weak", 400, "The password is shorter than the app's minimum, longer than the maximum, or a commonly used one."),
    InvalidCredentials = ("invalid_credentials", 401, "The email and password do not match a user (the answer never says which)."),
    UserNotFound = ("user_not_found", 404, "The app has no user with this id."),
    BackupBusy = ("backup_busy", 503, "Another backup is being written on this node (`picloud backup`, one at a time per node); retry when it ends."),
    AuthBusy = ("auth_busy", 503, "Too many password hashes are queued on this node (`auth_hash_concurrency`); retry shortly."),
    RateLimited = ("rate_limited", 429, "Too many attempts for this account or client address; retry after `Retry-After` seconds."),
    SessionInvalid = ("session_invalid", 401, "The session token is missing, unknown, expired or revoked."),
    CsrfFailed = ("csrf_failed", 403, "A dashboard form was posted without its CSRF token, or with a wrong one; reload the page and submit again."),
    AuthTokenInvalid = ("auth_token_invalid", 400, "A verification, reset or invitation token is unknown, already used or expired."),
    InvalidRole = ("invalid_role", 400, "A role name is empty, too long, or holds a character roles may not."),
    EmailUnverified = ("email_unverified", 403, "The app's `[auth] verify_email` is on and this user has not verified their email yet; follow the link mailed at signup (or request it again)."),
    SignupClosed = ("signup_closed", 403, "The app's `[auth] signup` does not allow this signup (closed, or invite-only without an invitation)."),
    // ---- operators ----
    LastOwner = ("last_owner", 409, "The change would leave an app with no owner; make another member owner first."),
    // ---- crypto helpers ----
    InvalidEncoding = ("invalid_encoding", 400, "A `base64.decode` or `hex.decode` input is not valid in that encoding."),
    // ---- kv ----
    InvalidKey = ("invalid_key", 400, "A kv key is empty or longer than `kv_key_bytes_max`."),
    KeyTooLarge = ("key_too_large", 400, "A kv key is longer than `kv_key_bytes_max`."),
    InvalidValue = ("invalid_value", 400, "A value cannot be stored as JSON."),
    ValueTooLarge = ("value_too_large", 413, "A value, document or JSON conversion is over its byte limit."),
    InvalidTtl = ("invalid_ttl", 400, "A ttl is not a positive number of seconds up to ten years."),
    InvalidLimit = ("invalid_limit", 400, "A page limit is out of range."),
    InvalidAtomic = ("invalid_atomic", 400, "A `kv.atomic` batch is malformed or too long."),
    KeyNotFound = ("key_not_found", 404, "No such kv key, or no such API key."),
    KeyExists = ("key_exists", 409, "An API key with this id already exists."),
    NotANumber = ("not_a_number", 409, "`kv.incr` on a value that is not an integer."),
    IncrOverflow = ("incr_overflow", 409, "`kv.incr` would leave the 64-bit integer range."),
    AtomicCasFailed = ("atomic_cas_failed", 409, "A compare in a `kv.atomic` batch failed; nothing was written."),
    CorruptValue = ("corrupt_value", 500, "A stored value could not be decoded."),
    // ---- documents ----
    InvalidCollection = ("invalid_collection", 400, "A collection name is malformed."),
    InvalidId = ("invalid_id", 400, "A document id is malformed."),
    InvalidDocument = ("invalid_document", 400, "A document is not a JSON object, or breaks the document rules."),
    InvalidSort = ("invalid_sort", 400, "A sort field is malformed."),
    InvalidCursor = ("invalid_cursor", 400, "A page cursor is malformed or from another query."),
    QueryTooBroad = ("query_too_broad", 422, "The query would examine more documents than `docs_scan_max`; add an index."),
    DocNotFound = ("doc_not_found", 404, "The collection has no document with this id."),
    DocExists = ("doc_exists", 409, "The collection already holds a document with this id."),
    UniqueViolation = ("unique_violation", 409, "A unique index already holds this value."),
    IndexValueTooLarge = ("index_value_too_large", 400, "A value of an indexed field is too large to index."),
    // ---- triggers and dead letters ----
    OutboxFull = ("outbox_full", 503, "The app's trigger outbox is full; retry later."),
    TriggerNotFound = ("trigger_not_found", 404, "The app has no such trigger."),
    StaleClaim = ("stale_claim", 409, "A trigger run was reported by a claim that is no longer current."),
    DeadLetterNotFound = ("dead_letter_not_found", 404, "The app has no such dead letter."),
    Failed = ("failed", 500, "Dead letter: the run failed on every attempt."),
    TriggerLoop = ("trigger_loop", 500, "Dead letter: the chain of trigger runs grew past `chain_depth_max`."),
    TriggerRemoved = ("trigger_removed", 500, "Dead letter: the trigger was removed while the run was pending."),
    // ---- secrets ----
    InvalidSecretName = ("invalid_secret_name", 400, "A secret name is malformed."),
    EmptySecret = ("empty_secret", 400, "The secret value is empty."),
    SecretTooLarge = ("secret_too_large", 413, "The secret value is over the size limit."),
    SecretNotFound = ("secret_not_found", 404, "The app has no such secret."),
    SecretsFull = ("secrets_full", 409, "The app holds the most secrets allowed."),
    SecretKeyMismatch = ("secret_key_mismatch", 409, "A secret is sealed with another master key than this node's."),
    SecretCorrupt = ("secret_corrupt", 500, "A sealed secret is damaged or was moved to another app or name."),
    // ---- keys and cluster ----
    LastAdminKey = ("last_admin_key", 409, "Revoking the last admin key would lock every operator out."),
    NodeNotFound = ("node_not_found", 404, "No member of the cluster has this id."),
    IsLeader = ("is_leader", 409, "The leader cannot remove itself; stop it first."),
    NotReady = ("not_ready", 503, "The node cannot serve yet: no quorum, no leader it can reach, still applying the log, or (cluster token) no join secret yet; the message says which. Retry in a moment."),
    NodeRemoved = ("node_removed", 503, "This node was removed from the cluster and is stopping; wipe its data dir and join again."),
    NoLeader = ("no_leader", 503, "No leader is elected or reachable; retry shortly."),
    Timeout = ("timeout", 503, "The write or read did not finish within its time limit (`write_timeout_ms`); a write may still apply."),
    OutcomeUnknown = ("outcome_unknown", 503, "A forwarded write was sent but its answer never came: it may or may not have applied."),
    ShuttingDown = ("shutting_down", 503, "The node is shutting down."),
    DiskFull = ("disk_full", 507, "The data disk is below its free-space reserve; writes wait for space."),
    Storage = ("storage", 500, "The node's storage failed."),
    Internal = ("internal", 500, "A bug or an unexpected state; the message says what."),
}

impl Code {
    /// Whether the status is a server-side one (5xx): back-pressure or a
    /// failure the client did not cause.
    pub const fn is_server_error(self) -> bool {
        self.status() >= 500
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code text that is not in the registry (from a newer server, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownCode(pub String);

impl FromStr for Code {
    type Err = UnknownCode;

    fn from_str(text: &str) -> Result<Code, UnknownCode> {
        Code::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == text)
            .ok_or_else(|| UnknownCode(text.to_string()))
    }
}

/// `docs/errors.md`: every code with its status and meaning, in registry order.
pub fn errors_markdown() -> String {
    let mut text = String::from(
        "# Error codes\n\n\
         Generated from `lua-sdk/src/codes.rs` by `cargo test -p picloud-lua-sdk --lib codes`\n\
         (`PICLOUD_WRITE_ERRORS_MD=1` rewrites this file; the test fails when it is stale).\n\n\
         Every error is `HTTP status + {\"error\":{\"code\",\"message\"}}`. Scripts see the same\n\
         codes in service errors (`\"no_leader: ...\"`); a code a script does not catch is\n\
         answered with its own status when that is a 5xx, and 500 otherwise.\n\n\
         | code | status | meaning |\n|---|---|---|\n",
    );
    for code in Code::ALL {
        text.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.as_str(),
            code.status(),
            code.meaning().replace('|', "\\|")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_round_trip() {
        let mut seen = BTreeSet::new();
        for &code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} is listed twice");
            assert!(
                !text.is_empty()
                    && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && !text.starts_with('_')
                    && !text.ends_with('_'),
                "{text} is not snake_case"
            );
            assert_eq!(text.parse::<Code>(), Ok(code));
            assert!((400..600).contains(&code.status()), "{text}");
            assert!(
                code.meaning().ends_with('.'),
                "{text}: say it in a sentence"
            );
        }
        assert_eq!(
            "no_such_code".parse::<Code>(),
            Err(UnknownCode("no_such_code".into()))
        );
    }

    #[test]
    fn outcome_unknown_is_not_a_timeout() {
        assert_ne!(Code::OutcomeUnknown, Code::Timeout);
        assert_eq!(Code::OutcomeUnknown.status(), 503);
    }

    /// `docs/errors.md` lists every code with its status and meaning. Run
    /// with `PICLOUD_WRITE_ERRORS_MD=1` to rewrite it after changing the
    /// registry.
    #[test]
    fn errors_md_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/errors.md");
        let expected = errors_markdown();
        if std::env::var_os("PICLOUD_WRITE_ERRORS_MD").is_some() {
            std::fs::write(path, &expected).expect("write docs/errors.md");
        }
        let found = std::fs::read_to_string(path).unwrap_or_default();
        for code in Code::ALL {
            let row = format!("| `{}` | {} | ", code.as_str(), code.status());
            assert!(
                found.contains(&row),
                "docs/errors.md does not list {} with status {}; \
                 run PICLOUD_WRITE_ERRORS_MD=1 cargo test -p picloud-lua-sdk --lib codes",
                code.as_str(),
                code.status()
            );
        }
        assert!(
            found == expected,
            "docs/errors.md is stale; run PICLOUD_WRITE_ERRORS_MD=1 cargo test -p picloud-lua-sdk --lib codes"
        );
    }
}
