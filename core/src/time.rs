//! Time as the core sees it: an integer passed in by whoever drives the machine.
//!
//! The core never reads a clock. The driver converts `CLOCK_MONOTONIC`, the simulator
//! its virtual clock; both hand in nanoseconds, which makes every trace reproducible.

use std::time::Duration;

/// Nanoseconds on a monotonic clock with an arbitrary epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Instant(pub u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub fn from_millis(ms: u64) -> Instant {
        Instant(ms.saturating_mul(1_000_000))
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Saturating: a deadline past the end of time is "never", not a wrap-around.
    pub fn saturating_add(self, d: Duration) -> Instant {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(ns))
    }

    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::fmt::Display for Instant {
    /// `12.345678s`: seconds with microsecond precision, the format traces use.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = self.0 / 1_000;
        write!(f, "{}.{:06}s", us / 1_000_000, us % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_arithmetic() {
        let t = Instant::from_millis(1500);
        assert_eq!(t.to_string(), "1.500000s");
        assert_eq!(
            t.saturating_add(Duration::from_millis(250)),
            Instant::from_millis(1750)
        );
        assert_eq!(
            Instant(u64::MAX - 1).saturating_add(Duration::MAX),
            Instant(u64::MAX)
        );
        assert_eq!(Instant(5).saturating_since(Instant(9)), Duration::ZERO);
    }
}
