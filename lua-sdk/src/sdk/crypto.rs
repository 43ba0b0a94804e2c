//! `crypto`, `base64` and `hex`: pure byte helpers (no host call) that
//! scripts need around webhooks, tokens and ids.
//!
//! * `crypto.sha256(s [, {raw = true}])`, `crypto.hmac_sha256(key, s [, {raw = true}])`:
//!   lowercase hex by default, the raw 32 bytes with `raw = true`.
//! * `crypto.random_bytes(n)`: `n` bytes (1 to [`RANDOM_BYTES_MAX`]) from the
//!   operating system's CSPRNG.
//! * `crypto.uuid()` (version 4, random) and `crypto.uuid{version = 7}`
//!   (time-ordered: the host clock's milliseconds, then a counter, so ids made
//!   by one VM sort in the order they were made even within a millisecond).
//! * `crypto.equal(a, b)`: constant-time comparison of two strings (the time
//!   depends on their lengths only), for signatures and tokens.
//! * `base64.encode(s [, {url = true}])`, `base64.decode(s [, {url = true}])`:
//!   the standard alphabet with padding, or the URL-safe one without (decoding
//!   accepts either padding), and `hex.encode(s)` (lowercase), `hex.decode(s)`
//!   (either case). Input that is not valid in the encoding raises
//!   `invalid_encoding`.
//!
//! They run in Rust where the instruction hook cannot stop them, so each
//! charges its work to the invocation's budget up front, in proportion to the
//! bytes it reads and writes ([`HASH_BYTES_PER_UNIT`] for hashing and
//! `crypto.equal`, [`CHARGE_BYTES_PER_UNIT`] for encoding), and refuses to build an output
//! larger than the memory the VM has left (a memory kill, as a Lua allocation
//! past the cap would be). Their inputs are Lua strings, so already within the
//! VM's memory cap.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use mlua::{Lua, LuaString, Table, Value};
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::budget::Budget;
use crate::codes::Code;
use crate::error::{KillReason, script_location};
use crate::host::{Host, HostError};
use crate::limits::{
    CHARGE_BYTES_PER_UNIT, CHARGE_FREE_BYTES, HASH_BYTES_PER_UNIT, RANDOM_BYTES_MAX,
};
use crate::location::script_error;

/// The standard alphabet, `=` padding written, either padding read.
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The URL-safe alphabet (`-`, `_`) as JWTs and signed URLs use it: no
/// padding written, either read.
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(super) fn install(lua: &Lua, host: Arc<dyn Host>) -> mlua::Result<()> {
    let crypto = lua.create_table()?;
    crypto.raw_set(
        "sha256",
        lua.create_function(|lua, (input, options): (Value, Value)| {
            let (input, raw) = input_and_flag(lua, input, &options, "crypto.sha256", "raw")?;
            let input = input.as_bytes();
            charge(lua, input.len(), HASH_BYTES_PER_UNIT)?;
            digest_out(lua, &Sha256::digest(&input), raw)
        })?,
    )?;
    crypto.raw_set(
        "hmac_sha256",
        lua.create_function(|lua, (key, input, options): (Value, Value, Value)| {
            let key = string_arg(lua, key, "crypto.hmac_sha256", "key")?;
            let input = string_arg(lua, input, "crypto.hmac_sha256", "message")?;
            let raw = flag(lua, &options, "crypto.hmac_sha256", "raw")?;
            let (key, input) = (key.as_bytes(), input.as_bytes());
            charge(
                lua,
                key.len().saturating_add(input.len()),
                HASH_BYTES_PER_UNIT,
            )?;
            digest_out(lua, &hmac_sha256(&key, &input), raw)
        })?,
    )?;
    crypto.raw_set(
        "random_bytes",
        lua.create_function(|lua, count: Value| {
            let count = match count {
                Value::Integer(count) if (1..=RANDOM_BYTES_MAX).contains(&count) => count,
                other => {
                    return Err(script_error(
                        lua,
                        format!(
                            "crypto.random_bytes: n must be an integer from 1 to {RANDOM_BYTES_MAX}, got {}",
                            describe(&other)
                        ),
                    ));
                }
            };
            let mut bytes = vec![0u8; usize::try_from(count).unwrap_or(0)];
            os_random(&mut bytes)?;
            lua.create_string(bytes)
        })?,
    )?;
    let last_v7 = Mutex::new(V7State::default());
    crypto.raw_set(
        "uuid",
        lua.create_function(move |lua, options: Value| {
            let version = match &options {
                Value::Nil => 4,
                Value::Table(table) => match table.raw_get::<Value>("version")? {
                    Value::Nil => 4,
                    Value::Integer(version @ (4 | 7)) => version,
                    other => {
                        return Err(script_error(
                            lua,
                            format!(
                                "crypto.uuid: version must be 4 or 7, got {}",
                                describe(&other)
                            ),
                        ));
                    }
                },
                other => {
                    return Err(script_error(
                        lua,
                        format!(
                            "crypto.uuid: options must be a table, got {}",
                            other.type_name()
                        ),
                    ));
                }
            };
            let mut random = [0u8; 16];
            os_random(&mut random)?;
            let bytes = if version == 7 {
                let mut state = last_v7.lock().unwrap_or_else(|poison| poison.into_inner());
                uuid_v7(&mut state, host.now_ms(), random)
            } else {
                uuid_v4(random)
            };
            lua.create_string(format_uuid(&bytes))
        })?,
    )?;
    crypto.raw_set(
        "equal",
        lua.create_function(|lua, (a, b): (Value, Value)| {
            let a = string_arg(lua, a, "crypto.equal", "a")?;
            let b = string_arg(lua, b, "crypto.equal", "b")?;
            let (a, b) = (a.as_bytes(), b.as_bytes());
            // `subtle` compares a byte at a time through an optimisation
            // barrier: about as slow as hashing.
            charge(lua, a.len().max(b.len()), HASH_BYTES_PER_UNIT)?;
            // `subtle` answers false at once for different lengths: a
            // signature's length is public, its bytes are not.
            Ok(bool::from(a.ct_eq(&b)))
        })?,
    )?;
    lua.globals().raw_set("crypto", crypto)?;
    install_encodings(lua)
}

/// `base64` and `hex`.
fn install_encodings(lua: &Lua) -> mlua::Result<()> {
    let base64 = lua.create_table()?;
    base64.raw_set(
        "encode",
        lua.create_function(|lua, (input, options): (Value, Value)| {
            let (input, url) = input_and_flag(lua, input, &options, "base64.encode", "url")?;
            let input = input.as_bytes();
            reserve(lua, input.len(), input.len().div_ceil(3).saturating_mul(4))?;
            let engine = if url { &URL_SAFE } else { &STANDARD };
            lua.create_string(engine.encode(&input))
        })?,
    )?;
    base64.raw_set(
        "decode",
        lua.create_function(|lua, (input, options): (Value, Value)| {
            let (input, url) = input_and_flag(lua, input, &options, "base64.decode", "url")?;
            let input = input.as_bytes();
            reserve(lua, input.len(), input.len() / 4 * 3 + 3)?;
            let engine = if url { &URL_SAFE } else { &STANDARD };
            let decoded = engine.decode(&input).map_err(|error| {
                let alphabet = if url { "URL-safe " } else { "" };
                invalid_encoding(
                    lua,
                    "base64.decode",
                    format!("not {alphabet}base64: {error}"),
                )
            })?;
            lua.create_string(decoded)
        })?,
    )?;
    lua.globals().raw_set("base64", base64)?;

    let hex = lua.create_table()?;
    hex.raw_set(
        "encode",
        lua.create_function(|lua, input: Value| {
            let input = string_arg(lua, input, "hex.encode", "input")?;
            let input = input.as_bytes();
            reserve(lua, input.len(), input.len().saturating_mul(2))?;
            lua.create_string(hex_encode(&input))
        })?,
    )?;
    hex.raw_set(
        "decode",
        lua.create_function(|lua, input: Value| {
            let input = string_arg(lua, input, "hex.decode", "input")?;
            let input = input.as_bytes();
            reserve(lua, input.len(), input.len() / 2)?;
            let decoded = hex_decode(&input)
                .map_err(|problem| invalid_encoding(lua, "hex.decode", problem))?;
            lua.create_string(decoded)
        })?,
    )?;
    lua.globals().raw_set("hex", hex)
}

/// HMAC-SHA256 of `message` under `key` (any length: HMAC hashes long keys).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // The error exists only for MACs with fixed key sizes: HMAC takes any.
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The 32-byte digest as the script asked for it.
fn digest_out(lua: &Lua, digest: &[u8], raw: bool) -> mlua::Result<LuaString> {
    if raw {
        lua.create_string(digest)
    } else {
        lua.create_string(hex_encode(digest))
    }
}

/// Fills `bytes` from the operating system's generator. Failing is
/// exceptional (no entropy source), so it is a plain script error.
fn os_random(bytes: &mut [u8]) -> mlua::Result<()> {
    rand::rngs::OsRng
        .try_fill_bytes(bytes)
        .map_err(|error| mlua::Error::runtime(format!("the OS random generator failed: {error}")))
}

/// What the last version 7 id of this VM used, so the next one sorts after it.
#[derive(Debug, Default)]
struct V7State {
    unix_ms: u64,
    counter: u16,
}

/// The 12-bit counter's largest value; past it the id borrows the next
/// millisecond (RFC 9562, section 6.2, method 1).
const V7_COUNTER_MAX: u16 = 0x0fff;

/// A version 7 UUID: 48 bits of Unix milliseconds, then a 12-bit counter that
/// starts at a random value below half its range in each new millisecond and
/// counts up within one (so ids stay ordered if the clock stands still or
/// steps back), then 62 random bits.
fn uuid_v7(state: &mut V7State, now_ms: u64, random: [u8; 16]) -> [u8; 16] {
    let fresh_counter = u16::from_be_bytes([random[0], random[1]]) & (V7_COUNTER_MAX >> 1);
    if now_ms > state.unix_ms {
        *state = V7State {
            unix_ms: now_ms,
            counter: fresh_counter,
        };
    } else if state.counter < V7_COUNTER_MAX {
        state.counter += 1;
    } else {
        state.unix_ms += 1;
        state.counter = fresh_counter;
    }
    let mut bytes = random;
    let unix_ms = (state.unix_ms & 0xffff_ffff_ffff).to_be_bytes();
    bytes[..6].copy_from_slice(&unix_ms[2..]);
    let [high, low] = state.counter.to_be_bytes();
    bytes[6] = 0x70 | (high & 0x0f);
    bytes[7] = low;
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    bytes
}

/// A version 4 (random) UUID.
fn uuid_v4(random: [u8; 16]) -> [u8; 16] {
    let mut bytes = random;
    bytes[6] = 0x40 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    bytes
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase.
fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex = String::from_utf8_lossy(&hex_encode(bytes)).into_owned();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Lowercase hex digits, two per byte (ASCII, so the bytes are a valid `str`).
fn hex_encode(bytes: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
    out
}

/// The value of each byte as a hex digit, or [`NOT_HEX`].
const HEX_VALUES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 10 {
        table[b'0' as usize + digit] = digit as u8;
        digit += 1;
    }
    let mut letter = 0;
    while letter < 6 {
        table[b'a' as usize + letter] = 10 + letter as u8;
        table[b'A' as usize + letter] = 10 + letter as u8;
        letter += 1;
    }
    table
};
const NOT_HEX: u8 = 0xff;

fn hex_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", text.len()));
    }
    let mut out = Vec::with_capacity(text.len() / 2);
    for (pair, digits) in text.chunks_exact(2).enumerate() {
        let (high, low) = (
            HEX_VALUES[usize::from(digits[0])],
            HEX_VALUES[usize::from(digits[1])],
        );
        if high == NOT_HEX || low == NOT_HEX {
            let at = 2 * pair + usize::from(high != NOT_HEX);
            return Err(format!(
                "byte {} (offset {at}) is not a hex digit",
                text[at]
            ));
        }
        out.push(high << 4 | low);
    }
    Ok(out)
}

/// A string argument; anything else is a script error naming it.
fn string_arg(lua: &Lua, value: Value, function: &str, name: &str) -> mlua::Result<LuaString> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(script_error(
            lua,
            format!(
                "{function}: {name} must be a string, got {}",
                other.type_name()
            ),
        )),
    }
}

/// The input string and one boolean option (`f(s [, {raw = true}])`).
fn input_and_flag(
    lua: &Lua,
    input: Value,
    options: &Value,
    function: &str,
    name: &str,
) -> mlua::Result<(LuaString, bool)> {
    let input = string_arg(lua, input, function, "input")?;
    Ok((input, flag(lua, options, function, name)?))
}

/// A boolean option of the optional options table (`{raw = true}`).
fn flag(lua: &Lua, options: &Value, function: &str, name: &str) -> mlua::Result<bool> {
    let table: &Table = match options {
        Value::Nil => return Ok(false),
        Value::Table(table) => table,
        other => {
            return Err(script_error(
                lua,
                format!(
                    "{function}: options must be a table, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    match table.raw_get::<Value>(name)? {
        Value::Nil => Ok(false),
        Value::Boolean(set) => Ok(set),
        other => Err(script_error(
            lua,
            format!(
                "{function}: option {name} must be a boolean, got {}",
                other.type_name()
            ),
        )),
    }
}

/// A value named in an argument error: numbers by value, the rest by type.
fn describe(value: &Value) -> String {
    match value {
        Value::Integer(number) => number.to_string(),
        Value::Number(number) => number.to_string(),
        other => other.type_name().to_string(),
    }
}

/// `invalid_encoding`, raised at the script's line.
fn invalid_encoding(lua: &Lua, function: &str, problem: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::external(HostError::new(
        Code::InvalidEncoding,
        format!("{}{function}: {problem}", script_location(lua)),
    ))
}

/// Charges `bytes` of work at `bytes_per_unit` bytes an instruction, unless
/// the work is small ([`CHARGE_FREE_BYTES`]) or no invocation is running.
fn charge(lua: &Lua, bytes: usize, bytes_per_unit: usize) -> mlua::Result<()> {
    if bytes <= CHARGE_FREE_BYTES {
        return Ok(());
    }
    let Some(budget) = lua.app_data_ref::<Arc<Budget>>() else {
        return Ok(());
    };
    let units = u64::try_from(bytes / bytes_per_unit.max(1)).unwrap_or(u64::MAX);
    budget.charge_if_armed(units).map_err(mlua::Error::external)
}

/// Charges an encoding that reads `read` bytes and writes `written`, and
/// checks the VM has room for what it writes.
fn reserve(lua: &Lua, read: usize, written: usize) -> mlua::Result<()> {
    charge(lua, read.saturating_add(written), CHARGE_BYTES_PER_UNIT)?;
    ensure_room(lua, written)
}

/// Refuses to build an output of `bytes` in Rust when the VM could not hold
/// it anyway: the result is copied into a Lua string under the memory cap,
/// and Rust's own allocation is not covered by that cap.
fn ensure_room(lua: &Lua, bytes: usize) -> mlua::Result<()> {
    let Some(budget) = lua.app_data_ref::<Arc<Budget>>() else {
        return Ok(());
    };
    let room = budget
        .limits()
        .memory_bytes_max
        .saturating_sub(lua.used_memory());
    if bytes > room {
        return Err(mlua::Error::external(budget.kill(KillReason::Memory)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        hex_decode(text.as_bytes()).expect("hex")
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 1, 2 and 6 (a key longer than the block size).
        let cases = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, message, expected) in cases {
            assert_eq!(
                hex_encode(&hmac_sha256(&key, &message)),
                expected.as_bytes()
            );
        }
    }

    #[test]
    fn hex_round_trips_and_refuses_bad_digits() {
        assert_eq!(hex("00ff7Fa0"), vec![0x00, 0xff, 0x7f, 0xa0]);
        assert_eq!(hex_encode(&[0x00, 0xff, 0x7f, 0xa0]), b"00ff7fa0");
        assert!(hex_decode(b"abc").expect_err("odd").contains("odd"));
        assert!(hex_decode(b"zz").expect_err("bad").contains("offset 0"));
        assert!(hex_decode(b"0g").expect_err("bad").contains("offset 1"));
    }

    #[test]
    fn v4_has_its_version_and_variant_bits() {
        let id = format_uuid(&uuid_v4([0xff; 16]));
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = format_uuid(&uuid_v4([0; 16]));
        assert_eq!(id, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn v7_ids_sort_in_creation_order_even_when_the_clock_stalls_or_steps_back() {
        let mut state = V7State::default();
        let times = [1_000, 1_000, 1_000, 999, 2_000, 2_000];
        let ids: Vec<String> = times
            .iter()
            .enumerate()
            .map(|(i, &now)| {
                let random = [u8::try_from(i * 37 % 256).unwrap_or(0); 16];
                format_uuid(&uuid_v7(&mut state, now, random))
            })
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        // The millisecond is readable from the first 48 bits, and the version
        // and variant are right.
        assert!(ids[0].starts_with("00000000-03e8-7"), "{}", ids[0]);
        assert!(ids[4].starts_with("00000000-07d0-7"), "{}", ids[4]);
        for id in &ids {
            assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        }
        // A full counter borrows the next millisecond instead of wrapping.
        let mut full = V7State {
            unix_ms: 5,
            counter: V7_COUNTER_MAX,
        };
        let next = uuid_v7(&mut full, 5, [0; 16]);
        assert_eq!(full.unix_ms, 6);
        assert_eq!(next[5], 6);
    }
}
