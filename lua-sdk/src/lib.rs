//! The Lua side of PiCloud: sandboxed VMs and the SDK scripts call.
//!
//! This crate imports no other PiCloud crate. It defines [`Host`], the trait
//! through which every service call from Lua reaches the node, and builds
//! sandboxed Lua 5.4 VMs (mlua) that enforce an instruction budget, a memory
//! cap and a wall-clock timeout per invocation. A script returns a handler
//! (`return function(req) ... end`); [`Vm::invoke`] calls it with a
//! [`Request`] and converts what it returns into a [`Response`].
//!
//! The threat model is in `shared/design/LUA-SANDBOX.md`: scripts are hostile.
//! Every escape listed there has a test in `tests/sandbox.rs`; the hostile
//! catalogue `tests/hostile.toml` (run by `tests/hostile.rs`), the generated
//! `tests/stdlib_fuzz.rs` and `tests/table_differential.rs` cover issue 10.
//!
//! # Layout
//!
//! * `host.rs` — the [`Host`] trait the node implements, and its types.
//! * `vm.rs` — [`Vm`]: load scripts, invoke a handler.
//! * `compile.rs` — [`check_syntax`], and the text-only compile every
//!   script and module goes through.
//! * `sandbox.rs` — building a locked-down Lua state: libraries, memory cap,
//!   hook, removed globals, the prelude wrapping `pcall` & co. and bounding
//!   every C library function (the table is `docs/sandbox.md`).
//! * `modules.rs` — [`ModuleSet`] (an app's modules, compiled once) and the
//!   sandbox's `require`.
//! * `imports.rs` — [`find_requires`]: literal `require` calls, found without
//!   running the source (the deploy's import graph).
//! * `budget.rs` — instruction/deadline accounting and the sticky kill flag.
//! * `pattern.rs` — Lua pattern matching ported from `lstrlib.c`, every step
//!   charged to the budget (the C matcher cannot be interrupted).
//! * `strlib.rs` — `string.find/match/gmatch/gsub` on that matcher, replacing
//!   the C functions in the sandbox (`strlib/differential.rs`: its test
//!   against the C functions).
//! * `sdk/` — the globals scripts use, one file each: `kv`, `docs`,
//!   `files`, `pubsub` (with `realtime`), `log`/`print`, `json`, `time`, `secrets`,
//!   `crypto` (with `base64` and `hex`: metered byte helpers, no host call),
//!   and `http` (outbound requests; `sdk/http.rs`, not the inbound `http.rs`
//!   below).
//! * `convert.rs` — Lua ⇄ JSON value rules (kv values, `json.*`, bodies),
//!   every node charged, Lua→JSON bounded (`value_too_large`).
//! * `http.rs` — [`Request`]/[`Response`] and their Lua form; a response
//!   cannot set framing headers (`invalid_response`).
//! * `error.rs` — [`CompileError`], [`InvokeError`] and error classification.
//! * `codes.rs` — [`Code`], the one registry of stable error codes with
//!   their HTTP statuses and meanings (`docs/errors.md` is generated from it).
//! * `location.rs` — errors raised at the script's line on its behalf
//!   (`script_error`), and prelude errors moved to that line.
//! * `limits.rs` — [`SandboxLimits`] and the crate's fixed maxima.
//! * `bench_support.rs` — (the `bench` feature only) the metered string
//!   library alone, for `bench/src/lua_speed.rs`.
//! * `stubs/picloud.lua` (outside `src/`) — LuaLS type stubs for editors.
//!
//! Modules import each other without cycles (`use crate::` edges point one
//! way): what several need sits in the lowest module that needs it
//! (`compile` under `vm` and `modules`, `location` under the SDK, the
//! sandbox and the budget).

#[cfg(feature = "bench")]
pub mod bench_support;
mod budget;
pub mod codes;
mod compile;
mod convert;
mod error;
pub mod host;
mod http;
mod imports;
mod limits;
mod location;
mod modules;
mod pattern;
mod sandbox;
mod sdk;
mod strlib;
mod vm;

pub use codes::Code;
pub use compile::check_syntax;
pub use error::{CompileError, InvokeError};
pub use host::{
    AtomicOp, AtomicResult, Consistency, DocsCall, FileData, FileListPage, FileStat,
    FileUrlOptions, FindArgs, Host, HostError, HostFuture, KvListPage, LogLevel, OutboundRequest,
    OutboundResponse, OutgoingAttachment, OutgoingEmail, PublishKind, UrlMethod, UserPatchArgs,
    UsersCall, sort_field,
};
pub use http::{Request, Response, is_json_content_type};
pub use imports::{RequireCall, find_requires};
pub use limits::{
    CALL_DEPTH_MAX, CHARGE_BYTES_PER_UNIT, CHARGE_FREE_BYTES, FILES_LIST_LIMIT_DEFAULT,
    FILES_LIST_LIMIT_MAX, HASH_BYTES_PER_UNIT, HOOK_INSTRUCTIONS_INTERVAL,
    HOOK_INSTRUCTIONS_INTERVAL_MIN, HOOK_INTERVAL_MEMORY_PRODUCT, JSON_DEPTH_MAX,
    JSON_NODE_COST_UNITS, JSON_VALUE_BYTES_MAX, JSON_VALUE_NODES_MAX, KV_LIST_LIMIT_DEFAULT,
    LOG_MESSAGE_BYTES_MAX, NUMERAL_BYTES_MAX, RANDOM_BYTES_MAX, STRING_FORMAT_BYTES_MAX,
    SandboxLimits, TABLE_MOVE_ELEMENTS_MAX, YIELD_INSTRUCTIONS_INTERVAL,
};
pub use modules::{MODULE_NAME_BYTES_MAX, ModuleSet, ModuleSource, validate_module_name};
pub use vm::{ScriptSource, Vm};
