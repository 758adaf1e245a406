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
        let _ = write!(s, "{now}");
        let width = s.chars().count();
        if width < 11 {
            s.insert_str(0, &"           "[..11 - width]);
        }
        s.push(' ');
        s.push_str(who);
        for _ in who.chars().count()..7 {
            s.push(' ');
        }
        s.push(' ');
        let _ = s.write_fmt(text);
        for b in s.bytes().chain([b'\n']) {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
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

pub use hvguest_core::kvp::describe::{effect, reply, request, result, text};
