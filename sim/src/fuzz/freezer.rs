//! The freezer: its line protocol and `FreezerCore`, fed an arbitrary byte stream as the
//! daemon's side of the pipe, with arbitrary UFSSUSPEND results, timers and closes.

use std::time::Duration;

use hvguest_core::kvp::effect::IoError;
use hvguest_core::limits::VSS_MAX_FROZEN;
use hvguest_core::vss::freezer::{
    Command, FreezerCore, FreezerInput, FreezerOutput, LineBuffer, Reply,
};
use hvguest_core::Instant;

/// What one byte of the control stream makes happen (see [`freezer`]).
enum Happening<'a> {
    /// These bytes arrive on stdin.
    Bytes(&'a [u8]),
    /// Time passes by this many 100 ms steps, then the timer is checked.
    Wait(u8),
    InputClosed,
    OutputFailed,
    /// The next UFSSUSPEND fails with EIO.
    FailNextSuspend,
}

/// Splits `data` at `0xff` into happenings: a segment starting with `0xfe` waits (its
/// next byte says how long), `0xfd` closes stdin, `0xfc` fails stdout, `0xfb` makes the
/// next UFSSUSPEND fail; any other segment is bytes on stdin.
fn happenings(data: &[u8]) -> impl Iterator<Item = Happening<'_>> {
    data.split(|&b| b == 0xff).map(|seg| match seg.first() {
        Some(0xfe) => Happening::Wait(seg.get(1).copied().unwrap_or(1)),
        Some(0xfd) => Happening::InputClosed,
        Some(0xfc) => Happening::OutputFailed,
        Some(0xfb) => Happening::FailNextSuspend,
        _ => Happening::Bytes(seg),
    })
}

/// Feeds `input`, answers every `Suspend` (failing it when `fail_next` says so), and
/// checks the outputs: returns how many replies were written.
fn feed(core: &mut FreezerCore, now: Instant, input: FreezerInput, fail_next: &mut bool) -> usize {
    let mut replies = 0;
    let mut next = Some(input);
    while let Some(i) = next.take() {
        core.handle(now, i);
        while let Some(out) = core.poll_output() {
            match out {
                FreezerOutput::Suspend { mount, .. } => {
                    assert!(!core.holds(&mount), "{mount} suspended twice");
                    let result = if std::mem::take(fail_next) {
                        Err(IoError::EIO)
                    } else {
                        Ok(())
                    };
                    next = Some(FreezerInput::Suspended(result));
                }
                FreezerOutput::Reply(line) => {
                    replies += 1;
                    assert!(
                        Reply::decode(line.as_bytes()).is_ok(),
                        "the freezer wrote a reply it cannot read back: {line:?}"
                    );
                }
                FreezerOutput::Resume(_) => {}
                FreezerOutput::Exit(_) => {
                    assert!(!core.is_holding(), "exited while holding a suspension");
                    assert!(core.exited().is_some());
                }
            }
        }
    }
    // Whatever is held has a deadline: nothing stays suspended without an auto-thaw,
    // and none later than the cap after the first suspension still held.
    assert!(!core.is_holding() || core.poll_timeout().is_some());
    if let (Some((_, first)), Some(t)) = (core.held().next(), core.poll_timeout()) {
        assert!(
            t <= first.saturating_add(VSS_MAX_FROZEN),
            "auto-thaw {t:?} past the cap after the first suspension at {first:?}"
        );
    }
    replies
}

/// Properties: never a panic; every complete line gets exactly one reply while the
/// freezer runs; a line that decodes re-encodes to the same command; a reply always
/// decodes; nothing held without an auto-thaw; after any exit nothing is held; the
/// auto-thaw fires no later than its deadline once the timer is checked past it.
pub fn freezer(data: &[u8]) {
    let mut now = Instant::ZERO;
    let mut core = FreezerCore::new(now);
    let mut lines = LineBuffer::default();
    let mut fail_next = false;
    for happening in happenings(data) {
        match happening {
            Happening::Bytes(bytes) => {
                for line in lines.push(bytes) {
                    if let Ok(l) = &line {
                        if let Ok(c) = Command::decode(l) {
                            assert_eq!(Command::decode(c.encode().as_bytes()), Ok(c.clone()));
                        }
                    }
                    let running = core.exited().is_none();
                    let replies = feed(&mut core, now, FreezerInput::Line(line), &mut fail_next);
                    assert_eq!(replies, usize::from(running), "one reply per line");
                }
            }
            Happening::Wait(steps) => {
                now = now.saturating_add(Duration::from_millis(100 * u64::from(steps)));
                let due = core.poll_timeout().is_some_and(|t| t <= now);
                feed(&mut core, now, FreezerInput::Timer, &mut fail_next);
                if due {
                    assert!(core.exited().is_some() && !core.is_holding());
                }
            }
            Happening::InputClosed => {
                feed(&mut core, now, FreezerInput::InputClosed, &mut fail_next);
                assert!(!core.is_holding());
            }
            Happening::FailNextSuspend => fail_next = true,
            Happening::OutputFailed => {
                feed(&mut core, now, FreezerInput::OutputFailed, &mut fail_next);
                assert!(!core.is_holding());
            }
        }
    }
}
