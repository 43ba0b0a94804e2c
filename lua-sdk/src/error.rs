//! The errors of loading and invoking scripts, and the mapping from mlua's
//! error chain to them.

use crate::codes::Code;
use crate::host::HostError;

/// A script that does not load: a syntax error, an error raised while its
/// chunk ran, or a chunk that does not return a handler function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_compile_error(.file, .line, .message))]
pub struct CompileError {
    pub file: String,
    pub line: Option<u32>,
    pub message: String,
}

fn display_compile_error(file: &str, line: &Option<u32>, message: &str) -> String {
    match line {
        Some(line) => format!("{file}:{line}: {message}"),
        None => format!("{file}: {message}"),
    }
}

impl CompileError {
    pub fn new(file: impl Into<String>, line: Option<u32>, message: impl Into<String>) -> Self {
        CompileError {
            file: file.into(),
            line,
            message: message.into(),
        }
    }

    /// Builds the error from a Lua message such as `greet.lua:3: unexpected
    /// symbol near 'x'`, taking the line out when the message starts with one.
    pub(crate) fn from_lua_message(file: &str, lua_message: &str) -> Self {
        let lua_message = strip_traceback(lua_message);
        // Only a location in this very file becomes `line`: an error raised
        // in a function another script defined keeps its own location in
        // the message. Lua shortens long names to "...<tail>".
        match split_location(lua_message) {
            Some((location, line, rest))
                if location == file
                    || location
                        .strip_prefix("...")
                        .is_some_and(|tail| file.ends_with(tail)) =>
            {
                CompileError::new(file, Some(line), rest)
            }
            _ => CompileError::new(file, None, lua_message),
        }
    }
}

/// Why an invocation failed. `code()` is the stable code the gateway reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvokeError {
    /// The instruction budget or the wall-clock timeout ran out.
    #[error("{message}")]
    Timeout { message: String },
    /// The VM's memory cap was hit.
    #[error("{message}")]
    Memory { message: String },
    /// An uncaught Lua error, a bad return value or a stack overflow.
    #[error("{message}")]
    Script { message: String },
    /// The handler returned something that is not a valid response: a bad
    /// shape or status, a header the server owns (`content-length`, ...), an
    /// invalid header name or value, or too many header bytes.
    #[error("{message}")]
    InvalidResponse { message: String },
    /// A service call failed and the script did not catch it.
    #[error("{0}")]
    Host(HostError),
    #[error("no script named {script}")]
    NoSuchScript { script: String },
}

impl InvokeError {
    pub fn code(&self) -> Code {
        match self {
            InvokeError::Timeout { .. } => Code::ScriptTimeout,
            InvokeError::Memory { .. } => Code::ScriptMemory,
            InvokeError::Script { .. } => Code::ScriptError,
            InvokeError::InvalidResponse { .. } => Code::InvalidResponse,
            InvokeError::Host(error) => error.code,
            InvokeError::NoSuchScript { .. } => Code::NoSuchScript,
        }
    }
}

/// Raised (as an external error) once an invocation is killed, so that the
/// kill unwinds through every Lua frame; see `budget.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", .reason.message_prefix())]
pub(crate) struct KillError {
    pub reason: KillReason,
}

/// What ended an invocation by force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    Instructions,
    WallClock,
    Memory,
}

impl KillReason {
    pub(crate) fn as_u8(self) -> u8 {
        match self {
            KillReason::Instructions => 1,
            KillReason::WallClock => 2,
            KillReason::Memory => 3,
        }
    }

    pub(crate) fn from_u8(value: u8) -> Option<KillReason> {
        match value {
            1 => Some(KillReason::Instructions),
            2 => Some(KillReason::WallClock),
            3 => Some(KillReason::Memory),
            _ => None,
        }
    }

    fn message_prefix(self) -> &'static str {
        match self {
            KillReason::Instructions => "script_timeout: instruction budget exceeded",
            KillReason::WallClock => "script_timeout: wall-clock timeout exceeded",
            KillReason::Memory => "script_memory: memory limit exceeded",
        }
    }
}

/// What a caught-or-uncaught mlua error really is, found by walking its cause chain.
pub(crate) enum ErrorKind<'a> {
    Kill(KillReason),
    Memory,
    Host(&'a HostError),
    /// Anything else: the script's own error, with its message.
    Script(String),
}

pub(crate) fn classify(error: &mlua::Error) -> ErrorKind<'_> {
    if let Some(kill) = error.downcast_ref::<KillError>() {
        return ErrorKind::Kill(kill.reason);
    }
    if let Some(host) = error.downcast_ref::<HostError>() {
        return ErrorKind::Host(host);
    }
    let mut current = error;
    loop {
        match current {
            mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
                current = cause;
            }
            mlua::Error::MemoryError(_) => return ErrorKind::Memory,
            mlua::Error::RuntimeError(message) => {
                return ErrorKind::Script(
                    relocate_from_traceback(message)
                        .unwrap_or_else(|| strip_traceback(message).to_string()),
                );
            }
            mlua::Error::SyntaxError { message, .. } => {
                return ErrorKind::Script(strip_traceback(message).to_string());
            }
            other => return ErrorKind::Script(strip_traceback(&other.to_string()).to_string()),
        }
    }
}

/// mlua appends `stack traceback:` to errors it hands back to Rust; a script
/// error's message is the first part only.
pub(crate) fn strip_traceback(message: &str) -> &str {
    match message.find("\nstack traceback:") {
        Some(index) => &message[..index],
        None => message,
    }
}

/// The chunk name the sandbox prelude runs under (`=sandbox`), as Lua
/// writes it in error positions.
const PRELUDE_SOURCE: &str = "sandbox";

/// How many stack levels [`script_location`] looks through: the prelude's
/// sort recurses about log2(n) levels deep between the script and an error.
const SCRIPT_FRAME_SEARCH_LEVELS: usize = 64;

/// `"<file>:<line>: "` of the nearest script frame on the running stack, or
/// `""` when there is none. Script chunks are named `@<file>`; frames of
/// mlua's async wrapper (`=__mlua_async_poll`), of the sandbox prelude
/// (`=sandbox`) and of C or Rust functions are skipped.
pub(crate) fn script_location(lua: &mlua::Lua) -> String {
    for level in 1..=SCRIPT_FRAME_SEARCH_LEVELS {
        let found = lua.inspect_stack(level, |debug| {
            let source = debug.source();
            let is_script = source.source.as_deref().is_some_and(|s| s.starts_with('@'));
            if !is_script {
                return None;
            }
            let file = source.short_src.as_deref().unwrap_or("?").to_string();
            Some(match debug.current_line() {
                Some(line) => format!("{file}:{line}: "),
                None => format!("{file}: "),
            })
        });
        match found {
            None => break,
            Some(Some(location)) => return location,
            Some(None) => continue,
        }
    }
    String::new()
}

/// `message` with its `sandbox:<line>: ` position replaced by `location`
/// (a script's `"<file>:<line>: "`, or `""` when no script frame is left: a
/// script's tail call replaces its own frame), or `None` when it has no such
/// position.
pub(crate) fn relocate_prelude_message(message: &str, location: &str) -> Option<String> {
    let (file, _, rest) = split_location(message)?;
    (file == PRELUDE_SOURCE).then(|| format!("{location}{rest}"))
}

/// For an uncaught error whose message names the prelude's line: the same
/// message (without the traceback) at the first script frame its traceback
/// lists, the line that called into the prelude.
pub(crate) fn relocate_from_traceback(full_message: &str) -> Option<String> {
    let message = strip_traceback(full_message);
    let (file, _, _) = split_location(message)?;
    if file != PRELUDE_SOURCE {
        return None;
    }
    let traceback = &full_message[message.len()..];
    let location = traceback.lines().find_map(|line| {
        let frame = line.strip_prefix('\t')?;
        let (file, line, _) = split_location(frame.strip_suffix(':').unwrap_or(frame))
            .or_else(|| split_frame(frame))?;
        let is_script =
            file != PRELUDE_SOURCE && !file.starts_with('[') && !file.starts_with("__mlua");
        is_script.then(|| format!("{file}:{line}: "))
    });
    relocate_prelude_message(message, location.as_deref().unwrap_or(""))
}

/// Splits a traceback frame `"<file>:<line>: in ..."` into file and line.
fn split_frame(frame: &str) -> Option<(&str, u32, &str)> {
    let (head, rest) = frame.split_once(": in ")?;
    let (file, line) = head.rsplit_once(':')?;
    Some((file, line.parse().ok()?, rest))
}

/// Splits `"<file>:<line>: <rest>"` into its parts. The file part may be
/// truncated by Lua (`...ng/name.lua`), so it is returned as found.
pub(crate) fn split_location(message: &str) -> Option<(&str, u32, &str)> {
    let mut search_from = 0;
    while let Some(offset) = message[search_from..].find(':') {
        let colon = search_from + offset;
        let after = &message[colon + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(": ") {
            let line = after[..digits].parse().ok()?;
            return Some((&message[..colon], line, &after[digits + 2..]));
        }
        search_from = colon + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_error_display_with_and_without_line() {
        assert_eq!(
            CompileError::new("x.lua", Some(3), "unexpected symbol").to_string(),
            "x.lua:3: unexpected symbol"
        );
        assert_eq!(
            CompileError::new("hello.lua", None, "script must return a function").to_string(),
            "hello.lua: script must return a function"
        );
    }

    #[test]
    fn compile_error_takes_the_line_only_from_its_own_file() {
        let own = CompileError::from_lua_message("a.lua", "a.lua:3: boom");
        assert_eq!((own.line, own.message.as_str()), (Some(3), "boom"));
        let other = CompileError::from_lua_message("a.lua", "lib.lua:9: boom");
        assert_eq!(
            (other.line, other.message.as_str()),
            (None, "lib.lua:9: boom")
        );
        let long =
            CompileError::from_lua_message("some/very/long/path.lua", "...long/path.lua:2: x");
        assert_eq!(long.line, Some(2));
    }

    #[test]
    fn split_location_finds_the_first_line_number() {
        assert_eq!(
            split_location("api/list.lua:12: boom: 3: x"),
            Some(("api/list.lua", 12, "boom: 3: x"))
        );
        assert_eq!(split_location("no location here"), None);
        assert_eq!(split_location("a:b: c"), None);
    }

    #[test]
    fn prelude_positions_are_replaced_by_the_script_line() {
        assert_eq!(
            relocate_prelude_message("sandbox:83: resulting string too large", "main.lua:3: "),
            Some("main.lua:3: resulting string too large".to_string())
        );
        assert_eq!(
            relocate_prelude_message("main.lua:1: x", "main.lua:3: "),
            None
        );
        assert_eq!(
            relocate_prelude_message("sandbox:83: x", ""),
            Some("x".to_string())
        );
        let uncaught = "sandbox:120: invalid order function for sorting\nstack traceback:\n\
                        \t[C]: in function 'error'\n\tsandbox:120: in function <sandbox:100>\n\
                        \tapi/list.lua:7: in function <api/list.lua:1>";
        assert_eq!(
            relocate_from_traceback(uncaught).as_deref(),
            Some("api/list.lua:7: invalid order function for sorting")
        );
        assert_eq!(
            relocate_from_traceback("main.lua:1: boom\nstack traceback:"),
            None
        );
    }

    #[test]
    fn strip_traceback_keeps_the_message() {
        assert_eq!(
            strip_traceback("x.lua:1: boom\nstack traceback:\n\t[C]: in ?"),
            "x.lua:1: boom"
        );
        assert_eq!(strip_traceback("plain"), "plain");
    }

    /// A kill's message starts with the code the invocation fails with, so
    /// a script that sees it (it cannot catch it) and the client agree.
    #[test]
    fn kill_messages_start_with_their_code() {
        for (reason, code) in [
            (KillReason::Instructions, Code::ScriptTimeout),
            (KillReason::WallClock, Code::ScriptTimeout),
            (KillReason::Memory, Code::ScriptMemory),
        ] {
            assert!(
                reason
                    .message_prefix()
                    .starts_with(&format!("{}: ", code.as_str())),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn codes_are_stable() {
        let cases = [
            (
                InvokeError::Timeout {
                    message: String::new(),
                },
                "script_timeout",
            ),
            (
                InvokeError::Memory {
                    message: String::new(),
                },
                "script_memory",
            ),
            (
                InvokeError::Script {
                    message: String::new(),
                },
                "script_error",
            ),
            (
                InvokeError::Host(HostError::new(Code::NoLeader, "x")),
                "no_leader",
            ),
            (
                InvokeError::NoSuchScript {
                    script: "a.lua".into(),
                },
                "no_such_script",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code().as_str(), code);
        }
    }
}
