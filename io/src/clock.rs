//! The monotonic clock, in the core's units.
//!
//! The core never reads a clock; the driver reads `CLOCK_MONOTONIC` (which does not jump
//! when the wall clock is set, and on FreeBSD keeps counting across suspend like the
//! kernel's own request timers) and hands the result in as `core::Instant`.

use hvguest_core::Instant;
use nix::time::{clock_gettime, ClockId};

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn now() -> Instant {
    // CLOCK_MONOTONIC exists on every platform we build for; a failure would be a
    // kernel bug, and the daemon cannot keep deadlines without a clock.
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is readable");
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
    Instant(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic_and_advancing() {
        let a = super::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::now();
        assert!(b.saturating_since(a) >= std::time::Duration::from_millis(2));
    }
}
