//! Lua 5.4 pattern matching, ported from `lstrlib.c` so that its work can be
//! metered.
//!
//! The C matcher runs entirely inside one library call, where the budget hook
//! never fires: `string.rep("a", 30000):find(".-.-.-.-b")` backtracks for
//! minutes. This is a line-by-line port of `match`, `max_expand`,
//! `min_expand`, `matchbalance`, `matchbracketclass`, `classend`, the
//! capture bookkeeping and `lmemfind`, with the same limits (`MAXCCALLS`,
//! `LUA_MAXCAPTURES`) and the same error messages. Every step (a call of
//! `match`, a single-character test, a scanned set, a compared block of
//! bytes) is counted by a [`Meter`], which charges the invocation's
//! [`Budget`] in chunks and fails with the budget's kill once it is spent.
//!
//! Positions are byte offsets into the subject; reading one past the end of
//! the subject or pattern yields `0`, like the C code reading the string's
//! terminating NUL (which `%f` at the end of the subject relies on).

use crate::budget::Budget;
use crate::error::KillError;
use crate::limits::PATTERN_STEPS_PER_CHARGE;

/// `MAXCCALLS` of `lstrlib.c`: how deep `match` may recurse.
const MAXCCALLS: usize = 200;
/// `LUA_MAXCAPTURES`.
const MAXCAPTURES: usize = 32;
const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;
const L_ESC: u8 = b'%';
/// Characters that make `find` use the pattern matcher instead of a plain search.
const SPECIALS: &[u8] = b"^$*+?.([%-";
/// Bytes scanned or compared in bulk (plain find, back-references,
/// `matchbalance`) that count as one step.
const BULK_BYTES_PER_STEP: usize = 16;

/// Why matching stopped without an answer.
#[derive(Debug)]
pub(crate) enum Fail {
    /// A Lua error (`luaL_error`) with this message; the caller adds the
    /// position prefix.
    Pattern(String),
    /// The invocation's budget is spent (or it was killed already).
    Kill(KillError),
}

fn pattern_error(message: impl Into<String>) -> Fail {
    Fail::Pattern(message.into())
}

/// Counts matcher steps and charges them to the budget every
/// [`PATTERN_STEPS_PER_CHARGE`] steps. Call [`Meter::flush`] when the library
/// call ends (or before it runs Lua code) so no step goes uncharged.
pub(crate) struct Meter<'b> {
    budget: &'b Budget,
    pending: u64,
}

impl<'b> Meter<'b> {
    pub(crate) fn new(budget: &'b Budget) -> Self {
        Meter { budget, pending: 0 }
    }

    #[inline]
    pub(crate) fn add(&mut self, steps: u64) -> Result<(), Fail> {
        self.pending += steps;
        if self.pending >= PATTERN_STEPS_PER_CHARGE {
            self.flush()
        } else {
            Ok(())
        }
    }

    #[cold]
    pub(crate) fn flush(&mut self) -> Result<(), Fail> {
        let steps = std::mem::take(&mut self.pending);
        if steps == 0 {
            return Ok(());
        }
        self.budget.charge(steps).map(|_| ()).map_err(Fail::Kill)
    }
}

fn bulk_steps(bytes: usize) -> u64 {
    (bytes / BULK_BYTES_PER_STEP) as u64 + 1
}

#[derive(Debug, Clone, Copy)]
struct Capture {
    init: usize,
    len: isize,
}

/// One capture's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    /// `subject[start..end]`.
    Bytes(usize, usize),
    /// A position capture `()`: the 1-based position.
    Position(usize),
}

/// `MatchState` of `lstrlib.c`.
pub(crate) struct MatchState<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    matchdepth: usize,
    capture: [Capture; MAXCAPTURES],
    meter: Meter<'a>,
}

impl<'a> MatchState<'a> {
    /// `pat` is the pattern without a leading anchor `^` (the callers strip it).
    pub(crate) fn new(src: &'a [u8], pat: &'a [u8], budget: &'a Budget) -> Self {
        MatchState {
            src,
            pat,
            level: 0,
            matchdepth: MAXCCALLS,
            capture: [Capture { init: 0, len: 0 }; MAXCAPTURES],
            meter: Meter::new(budget),
        }
    }

    /// `reprepstate`: before each match attempt.
    pub(crate) fn reprep(&mut self) {
        self.matchdepth = MAXCCALLS;
        self.level = 0;
    }

    pub(crate) fn flush(&mut self) -> Result<(), Fail> {
        self.meter.flush()
    }

    pub(crate) fn meter(&mut self) -> &mut Meter<'a> {
        &mut self.meter
    }

    /// The pattern byte at `i`, 0 past the end (C reads the terminating NUL).
    #[inline]
    fn pc(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    #[inline]
    fn sc(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    fn check_capture(&self, l: u8) -> Result<usize, Fail> {
        let l = i32::from(l) - i32::from(b'1');
        match usize::try_from(l) {
            Ok(index) if index < self.level && self.capture[index].len != CAP_UNFINISHED => {
                Ok(index)
            }
            _ => Err(pattern_error(format!("invalid capture index %{}", l + 1))),
        }
    }

    fn capture_to_close(&self) -> Result<usize, Fail> {
        (0..self.level)
            .rev()
            .find(|&level| self.capture[level].len == CAP_UNFINISHED)
            .ok_or_else(|| pattern_error("invalid pattern capture"))
    }

    fn classend(&mut self, p: usize) -> Result<usize, Fail> {
        let plen = self.pat.len();
        let mut p = p;
        let c = self.pc(p);
        p += 1;
        match c {
            L_ESC => {
                if p == plen {
                    return Err(pattern_error("malformed pattern (ends with '%')"));
                }
                Ok(p + 1)
            }
            b'[' => {
                let start = p;
                if self.pc(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p == plen {
                        return Err(pattern_error("malformed pattern (missing ']')"));
                    }
                    let c = self.pc(p);
                    p += 1;
                    if c == L_ESC && p < plen {
                        p += 1;
                    }
                    if self.pc(p) == b']' {
                        break;
                    }
                }
                self.meter.add((p - start) as u64)?;
                Ok(p + 1)
            }
            _ => Ok(p),
        }
    }

    /// `matchbracketclass(c, p, ec)`: `p` at the `[`, `ec` at the closing `]`.
    fn matchbracketclass(&mut self, c: u8, p: usize, ec: usize) -> Result<bool, Fail> {
        self.meter.add(ec.saturating_sub(p) as u64)?;
        let mut p = p;
        let mut sig = true;
        if self.pc(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            if self.pc(p) == L_ESC {
                p += 1;
                if match_class(c, self.pc(p)) {
                    return Ok(sig);
                }
            } else if self.pc(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.pc(p - 2) <= c && c <= self.pc(p) {
                    return Ok(sig);
                }
            } else if self.pc(p) == c {
                return Ok(sig);
            }
        }
        Ok(!sig)
    }

    fn singlematch(&mut self, s: usize, p: usize, ep: usize) -> Result<bool, Fail> {
        self.meter.add(1)?;
        let Some(&c) = self.src.get(s) else {
            return Ok(false);
        };
        Ok(match self.pc(p) {
            b'.' => true,
            L_ESC => match_class(c, self.pc(p + 1)),
            b'[' => self.matchbracketclass(c, p, ep - 1)?,
            other => other == c,
        })
    }

    fn matchbalance(&mut self, s: usize, p: usize) -> Result<Option<usize>, Fail> {
        if p + 1 >= self.pat.len() {
            return Err(pattern_error(
                "malformed pattern (missing arguments to '%b')",
            ));
        }
        if self.sc(s) != self.pc(p) {
            return Ok(None);
        }
        let open = self.pc(p);
        let close = self.pc(p + 1);
        let mut depth = 1usize;
        let mut s = s + 1;
        let mut scanned = 0usize;
        let mut result = None;
        while s < self.src.len() {
            let c = self.src[s];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    result = Some(s + 1);
                    break;
                }
            } else if c == open {
                depth += 1;
            }
            s += 1;
            scanned += 1;
            if scanned == 4096 {
                self.meter.add(bulk_steps(scanned))?;
                scanned = 0;
            }
        }
        self.meter.add(bulk_steps(scanned))?;
        Ok(result)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, Fail> {
        let mut i = 0usize;
        while self.singlematch(s + i, p, ep)? {
            i += 1;
        }
        loop {
            if let Some(res) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(res));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, Fail> {
        let mut s = s;
        loop {
            if let Some(res) = self.do_match(s, ep + 1)? {
                return Ok(Some(res));
            } else if self.singlematch(s, p, ep)? {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Result<Option<usize>, Fail> {
        let level = self.level;
        if level >= MAXCAPTURES {
            return Err(pattern_error("too many captures"));
        }
        self.capture[level] = Capture { init: s, len: what };
        self.level = level + 1;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.level -= 1;
        }
        Ok(res)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, Fail> {
        let l = self.capture_to_close()?;
        self.capture[l].len = (s - self.capture[l].init) as isize;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.capture[l].len = CAP_UNFINISHED;
        }
        Ok(res)
    }

    fn match_capture(&mut self, s: usize, l: u8) -> Result<Option<usize>, Fail> {
        let l = self.check_capture(l)?;
        let Capture { init, len } = self.capture[l];
        // A position capture has a negative length: as `size_t` in C it is
        // huge and never fits, like here.
        let len = len as usize;
        if self.src.len() - s >= len {
            self.meter.add(bulk_steps(len))?;
            if self.src[init..init + len] == self.src[s..s + len] {
                return Ok(Some(s + len));
            }
        }
        Ok(None)
    }

    /// `match(ms, s, p)`: the end of the match of `pat[p..]` at `s`, if any.
    pub(crate) fn do_match(&mut self, s: usize, p: usize) -> Result<Option<usize>, Fail> {
        if self.matchdepth == 0 {
            return Err(pattern_error("pattern too complex"));
        }
        self.matchdepth -= 1;
        self.meter.add(1)?;
        let plen = self.pat.len();
        let mut s = s;
        let mut p = p;
        let result = loop {
            if p == plen {
                break Some(s);
            }
            match self.pc(p) {
                b'(' => {
                    break if self.pc(p + 1) == b')' {
                        self.start_capture(s, p + 2, CAP_POSITION)?
                    } else {
                        self.start_capture(s, p + 1, CAP_UNFINISHED)?
                    };
                }
                b')' => break self.end_capture(s, p + 1)?,
                b'$' if p + 1 == plen => break (s == self.src.len()).then_some(s),
                L_ESC if self.pc(p + 1) == b'b' => match self.matchbalance(s, p + 2)? {
                    Some(end) => {
                        s = end;
                        p += 4;
                    }
                    None => break None,
                },
                L_ESC if self.pc(p + 1) == b'f' => {
                    p += 2;
                    if self.pc(p) != b'[' {
                        return Err(pattern_error("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.classend(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    let current = self.sc(s);
                    if !self.matchbracketclass(previous, p, ep - 1)?
                        && self.matchbracketclass(current, p, ep - 1)?
                    {
                        p = ep;
                    } else {
                        break None;
                    }
                }
                L_ESC if self.pc(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.pc(p + 1))? {
                        Some(end) => {
                            s = end;
                            p += 2;
                        }
                        None => break None,
                    }
                }
                _ => {
                    let ep = self.classend(p)?;
                    if !self.singlematch(s, p, ep)? {
                        if matches!(self.pc(ep), b'*' | b'?' | b'-') {
                            p = ep + 1;
                        } else {
                            break None;
                        }
                    } else {
                        match self.pc(ep) {
                            b'?' => match self.do_match(s + 1, ep + 1)? {
                                Some(res) => break Some(res),
                                None => p = ep + 1,
                            },
                            b'+' => break self.max_expand(s + 1, p, ep)?,
                            b'*' => break self.max_expand(s, p, ep)?,
                            b'-' => break self.min_expand(s, p, ep)?,
                            _ => {
                                s += 1;
                                p = ep;
                            }
                        }
                    }
                }
            }
        };
        self.matchdepth += 1;
        Ok(result)
    }

    /// How many values `push_captures(ms, s, e)` pushes: the captures, or
    /// the whole match when there are none and `whole` is set.
    pub(crate) fn capture_count(&self, whole: bool) -> usize {
        if self.level == 0 && whole {
            1
        } else {
            self.level
        }
    }

    /// `get_onecapture(ms, i, s, e)`.
    pub(crate) fn get_capture(&self, i: usize, s: usize, e: usize) -> Result<Cap, Fail> {
        if i >= self.level {
            if i != 0 {
                return Err(pattern_error(format!("invalid capture index %{}", i + 1)));
            }
            return Ok(Cap::Bytes(s, e));
        }
        let Capture { init, len } = self.capture[i];
        match len {
            CAP_UNFINISHED => Err(pattern_error("unfinished capture")),
            CAP_POSITION => Ok(Cap::Position(init + 1)),
            len => Ok(Cap::Bytes(init, init + len as usize)),
        }
    }
}

/// `match_class(c, cl)` in the "C" locale.
fn match_class(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        // isspace: also '\v', which `is_ascii_whitespace` leaves out.
        b's' => matches!(c, b' ' | b'\t'..=b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_lowercase() { res } else { !res }
}

/// `nospecials`: whether `find` may search for the pattern literally.
pub(crate) fn no_specials(pattern: &[u8]) -> bool {
    !pattern.iter().any(|b| SPECIALS.contains(b))
}

/// `lmemfind`: the first offset of `needle` in `hay`.
pub(crate) fn find_plain(
    hay: &[u8],
    needle: &[u8],
    meter: &mut Meter<'_>,
) -> Result<Option<usize>, Fail> {
    let Some((&first, rest)) = needle.split_first() else {
        return Ok(Some(0));
    };
    if needle.len() > hay.len() {
        return Ok(None);
    }
    let last_start = hay.len() - needle.len();
    let mut pos = 0;
    while pos <= last_start {
        let window = &hay[pos..=last_start];
        let Some(offset) = memchr(first, window, meter)? else {
            return Ok(None);
        };
        let start = pos + offset;
        if blocks_equal(&hay[start + 1..start + needle.len()], rest, meter)? {
            return Ok(Some(start));
        }
        pos = start + 1;
    }
    Ok(None)
}

/// The first `needle` byte in `hay`, eight bytes at a time, charging one
/// step per [`BULK_BYTES_PER_STEP`] bytes scanned.
fn memchr(needle: u8, hay: &[u8], meter: &mut Meter<'_>) -> Result<Option<usize>, Fail> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const BLOCK: usize = 4096;
    let repeated = LO * u64::from(needle);
    for (block_index, block) in hay.chunks(BLOCK).enumerate() {
        let base = block_index * BLOCK;
        let mut words = block.chunks_exact(8);
        let mut offset = 0;
        let mut found = None;
        for word in words.by_ref() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let x = u64::from_le_bytes(bytes) ^ repeated;
            if x.wrapping_sub(LO) & !x & HI != 0 {
                found = word.iter().position(|&b| b == needle).map(|i| offset + i);
                break;
            }
            offset += 8;
        }
        if found.is_none() {
            found = words
                .remainder()
                .iter()
                .position(|&b| b == needle)
                .map(|i| offset + i);
        }
        match found {
            Some(index) => {
                meter.add(bulk_steps(index))?;
                return Ok(Some(base + index));
            }
            None => meter.add(bulk_steps(block.len()))?,
        }
    }
    Ok(None)
}

/// `a == b` (same lengths), compared in blocks so that a long needle that
/// differs only at its end is charged for every byte compared.
fn blocks_equal(a: &[u8], b: &[u8], meter: &mut Meter<'_>) -> Result<bool, Fail> {
    const BLOCK: usize = 64;
    meter.add(1)?;
    for (x, y) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        if x != y {
            return Ok(false);
        }
        meter.add((BLOCK / BULK_BYTES_PER_STEP) as u64)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::SandboxLimits;

    fn budget() -> Budget {
        let budget = Budget::new(SandboxLimits::default());
        budget.arm();
        budget
    }

    #[test]
    fn match_class_follows_the_c_locale() {
        for c in 0..=255u8 {
            assert_eq!(match_class(c, b's'), b" \t\n\x0b\x0c\r".contains(&c), "{c}");
            assert_eq!(
                match_class(c, b'S'),
                !b" \t\n\x0b\x0c\r".contains(&c),
                "{c}"
            );
            assert!(!match_class(c, b'a') || c.is_ascii(), "{c}");
        }
        assert!(match_class(b'.', b'.'));
        assert!(!match_class(b'x', b'.'));
    }

    #[test]
    fn memchr_finds_every_position() {
        let budget = budget();
        let mut meter = Meter::new(&budget);
        let hay: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for needle in [0u8, 1, 7, 128, 250, 255] {
            assert_eq!(
                memchr(needle, &hay, &mut meter).expect("budget"),
                hay.iter().position(|&b| b == needle)
            );
            for start in [1usize, 5, 9, 4095, 4097] {
                assert_eq!(
                    memchr(needle, &hay[start..], &mut meter).expect("budget"),
                    hay[start..].iter().position(|&b| b == needle)
                );
            }
        }
    }

    #[test]
    fn plain_find_matches_a_naive_search() {
        let budget = budget();
        let mut meter = Meter::new(&budget);
        let hay = b"abcabcabdabcabcabdxyz".repeat(7);
        for needle in [&b"abd"[..], b"abcabd", b"xyzabc", b"zz", b"", b"z", b"dxyz"] {
            let naive = if needle.is_empty() {
                Some(0)
            } else {
                hay.windows(needle.len()).position(|w| w == needle)
            };
            assert_eq!(find_plain(&hay, needle, &mut meter).expect("budget"), naive);
        }
    }

    #[test]
    fn a_backtracking_pattern_runs_out_of_budget() {
        let budget = Budget::new(SandboxLimits {
            instructions_max: 1_000_000,
            ..SandboxLimits::default()
        });
        budget.arm();
        let subject = vec![b'a'; 30_000];
        let mut ms = MatchState::new(&subject, b".-.-.-.-b", &budget);
        let mut outcome = Ok(None);
        for start in 0..subject.len() {
            ms.reprep();
            outcome = ms.do_match(start, 0);
            if outcome.is_err() {
                break;
            }
        }
        assert!(matches!(outcome, Err(Fail::Kill(_))), "{outcome:?}");
        assert!(budget.killed().is_some());
    }
}
