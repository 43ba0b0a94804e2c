//! The per-VM and per-invocation limits a script runs under.

use std::time::Duration;

/// Limits of one sandboxed VM. The node fills these from its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Lua VM instructions one invocation (or the loading of one script) may
    /// execute. Counted in steps of [`HOOK_INSTRUCTIONS_INTERVAL`], so a script
    /// is stopped at most one interval after the budget runs out.
    pub instructions_max: u64,
    /// Bytes the whole VM may hold (code, globals, every live value).
    pub memory_bytes_max: usize,
    /// Wall-clock time of one invocation, including time spent awaiting services.
    pub timeout: Duration,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            instructions_max: 100_000_000,
            memory_bytes_max: 16 * 1024 * 1024,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Most redirects one `http.request` may follow (`redirects = N`); each
/// hop is checked by the node's SSRF guard again.
pub const HTTP_REDIRECTS_MAX: u32 = 5;

/// How many VM instructions run between two calls of the budget hook.
///
/// Lua 5.4 decrements a per-thread counter on every instruction as soon as any
/// count hook is set, whatever the interval, so a larger interval saves only
/// the (cheap) hook calls themselves. 10 000 instructions take about 50–100 µs,
/// which bounds how late a wall-clock deadline or a kill is noticed.
pub const HOOK_INSTRUCTIONS_INTERVAL: u32 = 10_000;

/// The shortest hook interval, used once a VM holds most of its memory cap.
/// Each hook call costs about as much as a few dozen instructions, so going
/// lower would slow big-VM scripts down for little gain.
pub const HOOK_INSTRUCTIONS_INTERVAL_MIN: u32 = 4;

/// Hook interval × VM bytes in use that the hook aims for (see
/// `budget::hook_interval_for`). One instruction can take time proportional to
/// the VM's memory: measured up to about 1 ns a byte in use for a
/// concatenation of megabyte strings (allocation, page faults, collection).
/// At 2^28 a fresh VM (~80 KiB) is checked every ~3 200 instructions, one of
/// 1 MiB every 256 and one of 16 MiB every 16, so no stretch between two
/// checks of the deadline lasts much more than 50 ms; the GC canary
/// (`sandbox.rs`) shortens the interval as soon as memory grows. A hook call
/// costs about a microsecond, so a fresh VM pays about 0.3 ns an instruction.
pub const HOOK_INTERVAL_MEMORY_PRODUCT: u64 = 1 << 28;

/// Pattern-matching steps (see `pattern.rs`) counted before they are charged
/// to the instruction budget and the deadline and kill flag are checked. A
/// step (one character test, one `match` call, 16 bytes scanned in bulk)
/// counts as one instruction.
pub(crate) const PATTERN_STEPS_PER_CHARGE: u64 = 1_000;

/// Most `gsub` calls that may be nested through replacement functions (or
/// `__index` handlers of a replacement table). Each level holds Rust frames
/// as well as Lua's, and Lua's own C-call limit (about 200 levels) would let
/// them outgrow a 2 MiB thread stack in a debug build. Past this depth the
/// call fails with Lua's "C stack overflow" error.
pub(crate) const GSUB_CALLBACK_DEPTH_MAX: usize = 100;

/// A running handler yields its worker thread back to the async runtime after
/// this many instructions (about a millisecond of Lua on a Pi-class core), so
/// CPU-heavy scripts share threads with the requests queued behind them.
pub const YIELD_INSTRUCTIONS_INTERVAL: u64 = 200_000;

/// Deepest Lua call stack a script may build before it gets a `stack overflow`
/// error. Lua's own limit (a million stack slots) is reached only after the
/// memory cap, which would report a memory error for what is a recursion bug.
/// Checked by the hook, so the depth can overshoot by one interval's calls.
pub const CALL_DEPTH_MAX: usize = 20_000;

/// Longest `log.*` / `print` message kept; longer ones are truncated.
pub const LOG_MESSAGE_BYTES_MAX: usize = 16 * 1024;

/// Deepest nesting of tables `json.encode` and kv values accept (and of JSON
/// that `json.decode` turns into tables).
pub const JSON_DEPTH_MAX: usize = 128;

/// Most nodes (values, table entries) one Lua→JSON conversion may visit:
/// `json.encode`, a kv value, a document, a `{json = ...}` response. The
/// JSON value is built in Rust, outside the VM's memory cap, and a table
/// reachable along many paths is visited once per path, so without this a
/// 30-line DAG expands to gigabytes. About 50 MB of Rust memory at most.
pub const JSON_VALUE_NODES_MAX: usize = 1 << 19;

/// Most bytes of JSON text (strings counted unescaped, plus two bytes a
/// node) one Lua→JSON conversion may produce. Past this or
/// [`JSON_VALUE_NODES_MAX`], the conversion fails with `value_too_large`.
pub const JSON_VALUE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Instructions charged for each node a JSON conversion visits (either
/// way), on top of one per [`CHARGE_BYTES_PER_UNIT`] bytes of its text: a
/// node costs about as much Rust work as a few dozen VM instructions.
pub const JSON_NODE_COST_UNITS: u64 = 16;

/// Default page size of `kv.list`.
pub const KV_LIST_LIMIT_DEFAULT: usize = 100;

/// Default page size of `files.list`.
pub const FILES_LIST_LIMIT_DEFAULT: usize = 100;
/// The most files one `files.list` page holds (a fixed bound: a page of
/// stats is small, unlike a page of kv values, so no node setting).
pub const FILES_LIST_LIMIT_MAX: usize = 1000;

/// Memory cap of the throwaway state [`crate::check_syntax`] parses in.
pub const SYNTAX_CHECK_MEMORY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most elements one `table.move` call may copy. It loops in C where the
/// hook cannot stop it; a 16 MiB VM cannot hold more elements than this anyway.
pub const TABLE_MOVE_ELEMENTS_MAX: i64 = 1 << 22;

/// Library calls whose input is at most this many bytes (or elements) are
/// not charged: their C work is a few instructions' worth, and the check is
/// one comparison.
pub const CHARGE_FREE_BYTES: usize = 256;

/// Bytes of C library work (copying, scanning, case mapping) charged as one
/// instruction: a VM instruction takes a few nanoseconds, about as long as
/// copying or scanning 16 bytes.
pub const CHARGE_BYTES_PER_UNIT: usize = 16;

/// Longest format string, and longest string formatted with `%q`, that
/// `string.format` accepts: a conversion costs about a microsecond and `%q`
/// tens of nanoseconds a byte, all inside one C call the hook cannot stop.
pub const STRING_FORMAT_BYTES_MAX: usize = 64 * 1024;

/// Longest numeral (white space trimmed) that `tonumber` and string
/// arithmetic convert; longer strings are no number. Lua's own limit for
/// numerals it rewrites (`L_MAXLENNUM`). C converts at 0.4–2 ns a byte of
/// padding (more for megabytes of digits, which strtod rounds exactly), and
/// a loop can convert a long string cheaply, so long ones are trimmed by the
/// metered matcher first.
pub const NUMERAL_BYTES_MAX: usize = 200;

/// Most bytes one `crypto.random_bytes` call returns: keys and nonces are
/// 16 to 64 bytes; the OS generator is not a bulk data source.
pub const RANDOM_BYTES_MAX: i64 = 1024;

/// Bytes hashed (SHA-256, HMAC) per instruction charged. A CPU without SHA
/// instructions (a Raspberry Pi 4's Cortex-A72) hashes at several
/// nanoseconds a byte, about one VM instruction's time, so a byte costs one
/// unit; with them (the x86 build machine: 0.6 ns a byte against ~4 ns an
/// instruction in a debug build) this overcharges, which is the safe side.
/// A copy is charged per [`CHARGE_BYTES_PER_UNIT`] bytes.
pub const HASH_BYTES_PER_UNIT: usize = 1;
