//! The trace: one line per event, virtual time first. Every line goes into a running
//! hash (the determinism check compares hashes) and a ring of recent lines (the tail
//! shown on failure); the full trace is kept only when asked for (snapshots, and the
//! re-run that writes a failure's recording).

use std::collections::VecDeque;
use std::fmt::{self, Write as _};

use hvguest_core::Instant;

const TAIL: usize = 200;

pub struct Trace {
    hash: u64,
    tail: VecDeque<String>,
    full: Option<Vec<String>>,
    lines: u64,
}

impl Trace {
    pub fn new(keep_all: bool) -> Trace {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            tail: VecDeque::new(),
            full: keep_all.then(Vec::new),
            lines: 0,
        }
    }

    pub fn line(&mut self, now: Instant, who: &str, text: &str) {
        self.line_args(now, who, format_args!("{text}"));
    }

    /// [`Trace::line`] with the text still unformatted: it is written straight into the
    /// line, with no string of its own. A random run writes millions of lines, most never
    /// read (only hashed, and kept until 200 newer ones push them out), so the line's
    /// buffer is the one the oldest line in the ring gave back. The text is exactly what
    /// `format!("{:>11} {:<7} {}", now.to_string(), who, text)` makes.
    pub fn line_args(&mut self, now: Instant, who: &str, text: fmt::Arguments<'_>) {
        let mut s = if self.tail.len() == TAIL {
            let mut old = self.tail.pop_front().expect("the ring is full");
            old.clear();
            old
        } else {
            String::with_capacity(96)
        };
        push_instant(&mut s, now);
        s.push(' ');
        s.push_str(who);
        let who_width = if who.is_ascii() {
            who.len()
        } else {
            who.chars().count()
        };
        // `who` padded to 7 columns, then the space before the text.
        s.push_str(&"        "[who_width.min(7)..]);
        let _ = s.write_fmt(text);
        self.hash = hash_line(self.hash, s.as_bytes());
        self.lines += 1;
        if let Some(full) = self.full.as_mut() {
            full.push(s.clone());
        }
        self.tail.push_back(s);
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    pub fn full(&self) -> Option<&[String]> {
        self.full.as_deref()
    }
}

/// Folds one line into the running hash, eight bytes per step, then its length (so a
/// line boundary counts too). Each step is a multiply and a rotation: every byte moves
/// the hash. The hash is only ever compared with the same build's second run of a seed
/// (the determinism check), never with a stored value, so it need not be FNV; a byte at
/// a time (FNV-1a, as it was) was a visible part of a random run's time.
fn hash_line(mut h: u64, line: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut words = line.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h ^ u64::from_le_bytes(last))
        .wrapping_mul(K)
        .rotate_left(29);
    (h ^ line.len() as u64).wrapping_mul(K).rotate_left(29)
}

/// Appends `now` as `format!("{:>11}", now.to_string())` would (`12.345678s`, seconds
/// with microseconds, right-aligned in 11 columns), with plain digit arithmetic: every
/// trace line starts with it, and the formatting machinery was a visible part of a
/// random run's time. A test compares the two.
fn push_instant(s: &mut String, now: Instant) {
    let us = now.as_nanos() / 1_000;
    let (mut secs, mut frac) = (us / 1_000_000, us % 1_000_000);
    // Built from the right in a buffer, then appended at once: seconds (at most 14
    // digits for a u64 of nanoseconds), the point, six digits and the `s`; padded on the
    // left to 11 columns.
    let mut buf = [b' '; 24];
    let mut start = buf.len() - 1;
    buf[start] = b's';
    for _ in 0..6 {
        start -= 1;
        buf[start] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    start -= 1;
    buf[start] = b'.';
    loop {
        start -= 1;
        buf[start] = b'0' + (secs % 10) as u8;
        secs /= 10;
        if secs == 0 {
            break;
        }
    }
    let start = start.min(buf.len() - 11);
    s.push_str(std::str::from_utf8(&buf[start..]).expect("ASCII digits"));
}

pub use hvguest_core::kvp::describe::{
    effect, reply, request, result, text, EffectText, RequestText, ResultText,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_and_line_boundary_moves_the_hash() {
        let line = b"  1.000000s daemon  reply OK \"value\"";
        let h = hash_line(1, line);
        for i in 0..line.len() {
            let mut other = line.to_vec();
            other[i] ^= 1;
            assert_ne!(hash_line(1, &other), h, "byte {i}");
        }
        // "ab" + "c" is not "a" + "bc".
        assert_ne!(
            hash_line(hash_line(1, b"ab"), b"c"),
            hash_line(hash_line(1, b"a"), b"bc")
        );
        assert_ne!(hash_line(1, b"x"), hash_line(1, b"x\0"));
    }

    #[test]
    fn instants_are_written_as_display_pads_them() {
        for ns in [
            0,
            999,
            1_000,
            1_500_000_000,
            9_999_999_999,
            10_000_000_000,
            123_456_789_012,
            99_999_999_999_999,
            123_456_789_012_345_678,
            u64::MAX,
        ] {
            let now = Instant(ns);
            let mut s = String::new();
            push_instant(&mut s, now);
            assert_eq!(s, format!("{:>11}", now.to_string()), "{ns} ns");
        }
    }
}
