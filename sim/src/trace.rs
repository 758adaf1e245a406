//! The trace: one line per event, virtual time first. Every line goes into a running
//! hash (the determinism check compares hashes) and a ring of recent lines (the tail
//! shown on failure); the full trace is kept only when asked for (snapshots, and the
//! re-run that writes a failure's recording).

use std::collections::VecDeque;
use std::fmt::Write as _;

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
        let mut s = String::with_capacity(24 + text.len());
        let _ = write!(s, "{:>11} {:<7} {}", now.to_string(), who, text);
        for b in s.bytes().chain([b'\n']) {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.lines += 1;
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
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
