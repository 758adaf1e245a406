//! The freezer's line protocol and decisions, sans-IO.
//!
//! The freezer is a single-threaded process holding one `/dev/ufssuspend` descriptor per
//! suspended file system (docs/protocol/vss.md §1.3). The daemon talks to it over its stdin and
//! stdout, one line each way:
//!
//! ```text
//! suspend <auto-thaw ms> <fsid|-> <mountpoint>  ->  ok | err <errno> <text>
//! resume                                        ->  ok   (closes every descriptor)
//! ping [<auto-thaw ms>]                         ->  ok   (and moves the auto-thaw)
//! ```
//!
//! The fsid is `val0:val1` (the planned file system, which UFSSUSPEND is given), or `-`
//! when the mount table had none (the freezer looks the path up). The mount point is the
//! rest of the line (it may hold spaces); `\`, a newline and a carriage return in it are
//! written `\\`, `\n` and `\r`. Decoding is total: any bytes give a value or a
//! [`LineError`].
//!
//! [`FreezerCore`] is the freezer's whole behaviour: what to answer, when to resume
//! everything (stdin closed, a reply that cannot be written, its own auto-thaw passed),
//! and its auto-thaw deadline, so that not even a hung daemon leaves a file system
//! suspended. However often a ping moves it, the auto-thaw never comes later than
//! [`VSS_MAX_FROZEN`] after the first suspension it still holds. The production freezer (`io/src/freezer.rs`) and the simulated
//! one run it; they only open descriptors and move bytes.

use std::collections::VecDeque;
use std::time::Duration;

use crate::kvp::effect::IoError;
use crate::limits::{FREEZER_MAX_LINE, VSS_MAX_FROZEN};
use crate::time::Instant;
use crate::vss::effect::{VssEffect, VssResult};
use crate::vss::policy::Fsid;

/// EINVAL: the answer to a line we cannot read.
const EINVAL: i32 = 22;

/// Why a line is not a command or a reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("empty line")]
    Empty,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("longer than {FREEZER_MAX_LINE} bytes")]
    TooLong,
    #[error("unknown word {0:?}")]
    Unknown(String),
    #[error("wrong arguments for {0}")]
    Arguments(&'static str),
    #[error("not a number of milliseconds: {0:?}")]
    Number(String),
    #[error("bad escape in the mount point")]
    Escape,
    #[error("not a file system id (`val0:val1` or `-`): {0:?}")]
    Fsid(String),
}

/// ENOENT: UFSSUSPEND's answer when no mounted file system has the fsid given.
pub const ENOENT: i32 = 2;

/// What the daemon asks the freezer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Suspend this mount; resume everything by ourselves `auto_thaw_after` from now.
    Suspend {
        mount: String,
        fsid: Option<Fsid>,
        auto_thaw_after: Duration,
    },
    /// Close every descriptor: the kernel resumes each file system.
    Resume,
    /// Are you there? With a duration, also move the auto-thaw (if anything is held).
    Ping { auto_thaw_after: Option<Duration> },
}

/// What the freezer answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Err { errno: i32, text: String },
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            // A raw CR before the newline is dropped by `text` (CRLF tolerance): a mount
            // point ending in CR must not lose it.
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, LineError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            _ => return Err(LineError::Escape),
        }
    }
    Ok(out)
}

/// At most this many characters of text in an `err` reply: escaped (two bytes at most
/// for one byte) and UTF-8 (four bytes at most), after `err <errno> `, it fits a line.
const REPLY_TEXT_CHARS: usize = 480;
const _: () = assert!(16 + 4 * REPLY_TEXT_CHARS <= FREEZER_MAX_LINE);

fn millis(word: &str) -> Result<Duration, LineError> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::Number(word.chars().take(32).collect()));
    }
    word.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| LineError::Number(word.to_string()))
}

/// The line's text without its newline (and a `\r` before it), or why not.
fn text(line: &[u8]) -> Result<&str, LineError> {
    if line.len() > FREEZER_MAX_LINE {
        return Err(LineError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let s = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    if s.trim().is_empty() {
        return Err(LineError::Empty);
    }
    Ok(s)
}

impl Command {
    /// The command a freezer effect is sent as; `None` for effects that are not lines
    /// to the freezer (`KillFreezer` is a signal).
    pub fn for_effect(effect: &VssEffect) -> Option<Command> {
        match effect {
            VssEffect::Suspend {
                mount,
                fsid,
                auto_thaw_after,
            } => Some(Command::Suspend {
                mount: mount.clone(),
                fsid: *fsid,
                auto_thaw_after: *auto_thaw_after,
            }),
            VssEffect::ResumeAll => Some(Command::Resume),
            VssEffect::PingFreezer { auto_thaw_after } => Some(Command::Ping {
                auto_thaw_after: Some(*auto_thaw_after),
            }),
            _ => None,
        }
    }

    /// One line, with its newline.
    pub fn encode(&self) -> String {
        match self {
            Command::Suspend {
                mount,
                fsid,
                auto_thaw_after,
            } => format!(
                "suspend {} {} {}\n",
                auto_thaw_after.as_millis(),
                fsid.map_or_else(|| "-".to_string(), |f| f.to_string()),
                escape(mount)
            ),
            Command::Resume => "resume\n".into(),
            Command::Ping {
                auto_thaw_after: None,
            } => "ping\n".into(),
            Command::Ping {
                auto_thaw_after: Some(d),
            } => format!("ping {}\n", d.as_millis()),
        }
    }

    /// One line (with or without its newline).
    pub fn decode(line: &[u8]) -> Result<Command, LineError> {
        let s = text(line)?;
        let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
        match word {
            "suspend" => {
                let (ms, rest) = rest
                    .split_once(' ')
                    .ok_or(LineError::Arguments("suspend"))?;
                let (fsid, mount) = rest
                    .split_once(' ')
                    .ok_or(LineError::Arguments("suspend"))?;
                if mount.is_empty() {
                    return Err(LineError::Arguments("suspend"));
                }
                let auto_thaw_after = millis(ms)?;
                let fsid = match fsid {
                    "-" => None,
                    f => Some(
                        f.parse::<Fsid>()
                            .map_err(|()| LineError::Fsid(f.chars().take(32).collect()))?,
                    ),
                };
                Ok(Command::Suspend {
                    mount: unescape(mount)?,
                    fsid,
                    auto_thaw_after,
                })
            }
            "resume" if rest.is_empty() => Ok(Command::Resume),
            "resume" => Err(LineError::Arguments("resume")),
            "ping" if rest.is_empty() => Ok(Command::Ping {
                auto_thaw_after: None,
            }),
            "ping" => Ok(Command::Ping {
                auto_thaw_after: Some(millis(rest)?),
            }),
            other => Err(LineError::Unknown(other.chars().take(32).collect())),
        }
    }
}

impl Reply {
    /// One line, with its newline. A newline in the text becomes a space.
    pub fn encode(&self) -> String {
        match self {
            Reply::Ok => "ok\n".into(),
            Reply::Err { errno, text } => {
                let text: String = text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                format!("err {errno} {text}\n")
            }
        }
    }

    pub fn decode(line: &[u8]) -> Result<Reply, LineError> {
        let s = text(line)?;
        let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
        match word {
            "ok" if rest.is_empty() => Ok(Reply::Ok),
            "ok" => Err(LineError::Arguments("ok")),
            "err" => {
                let (n, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let errno = n
                    .parse::<i32>()
                    .map_err(|_| LineError::Number(n.to_string()))?;
                Ok(Reply::Err {
                    errno,
                    text: text.to_string(),
                })
            }
            other => Err(LineError::Unknown(other.chars().take(32).collect())),
        }
    }

    /// What a reply line means to the machine that sent the command: `Done`, the
    /// freezer's errno, or EIO for a line that is no reply at all.
    pub fn result_of(line: &[u8]) -> VssResult {
        match Reply::decode(line) {
            Ok(Reply::Ok) => VssResult::Done,
            Ok(Reply::Err { errno, .. }) => VssResult::Failed(IoError(errno)),
            Err(_) => VssResult::Failed(IoError::EIO),
        }
    }
}

/// Splits a byte stream into lines of at most [`FREEZER_MAX_LINE`] bytes. A longer line
/// is given as [`LineError::TooLong`] once, and the rest of it up to its newline dropped.
#[derive(Debug, Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
    /// Dropping the rest of an overlong line.
    skipping: bool,
}

impl LineBuffer {
    /// Adds bytes; returns the complete lines (newline included) they finish.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, LineError>> {
        let mut lines = Vec::new();
        for &b in bytes {
            if self.skipping {
                self.skipping = b != b'\n';
                continue;
            }
            self.partial.push(b);
            if b == b'\n' {
                lines.push(Ok(std::mem::take(&mut self.partial)));
            } else if self.partial.len() >= FREEZER_MAX_LINE {
                self.partial.clear();
                self.skipping = true;
                lines.push(Err(LineError::TooLong));
            }
        }
        lines
    }
}

/// What the freezer's driver feeds its core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FreezerInput {
    /// A complete line from stdin, or why it could not be read as one.
    Line(Result<Vec<u8>, LineError>),
    /// The UFSSUSPEND asked for by [`FreezerOutput::Suspend`] ended.
    Suspended(Result<(), IoError>),
    /// [`FreezerCore::poll_timeout`] passed.
    Timer,
    /// Stdin reached EOF or failed: the daemon is gone or done with us.
    InputClosed,
    /// A reply could not be written: nobody is listening any more.
    OutputFailed,
}

/// What the core asks its driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FreezerOutput {
    /// Open `/dev/ufssuspend` and suspend the file system `fsid` (the one planned), or,
    /// without one, the one at `mount`; report with `Suspended`.
    Suspend { mount: String, fsid: Option<Fsid> },
    /// Close this mount's descriptor (later suspensions first).
    Resume(String),
    /// Write this line to stdout.
    Reply(String),
    /// Leave with this exit code (everything is resumed by then).
    Exit(i32),
}

/// Why the freezer resumed everything and left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitWhy {
    InputClosed,
    OutputFailed,
    AutoThaw,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    mount: String,
    since: Instant,
}

/// The freezer's decisions. Contract: `handle`, then drain `poll_output` before the next
/// `handle`; after `Suspend`, the next input is `Suspended`.
#[derive(Debug)]
pub struct FreezerCore {
    now: Instant,
    held: Vec<Held>,
    auto_thaw_at: Option<Instant>,
    /// [`VSS_MAX_FROZEN`] after the first suspension still held: the auto-thaw never
    /// moves past it.
    cap_at: Option<Instant>,
    /// The suspension being made (mount, fsid), and the auto-thaw it asked for.
    suspending: Option<(String, Option<Fsid>, Duration)>,
    exited: Option<ExitWhy>,
    outputs: VecDeque<FreezerOutput>,
}

impl FreezerCore {
    pub fn new(now: Instant) -> FreezerCore {
        FreezerCore {
            now,
            held: Vec::new(),
            auto_thaw_at: None,
            cap_at: None,
            suspending: None,
            exited: None,
            outputs: VecDeque::new(),
        }
    }

    /// Mounts held now, in suspension order, with when each was suspended.
    pub fn held(&self) -> impl Iterator<Item = (&str, Instant)> {
        self.held.iter().map(|h| (h.mount.as_str(), h.since))
    }

    pub fn holds(&self, mount: &str) -> bool {
        self.held.iter().any(|h| h.mount == mount)
    }

    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// A UFSSUSPEND is under way (the driver is inside it).
    pub fn busy(&self) -> bool {
        self.suspending.is_some()
    }

    /// Why it left, once it has.
    pub fn exited(&self) -> Option<ExitWhy> {
        self.exited
    }

    /// When the auto-thaw fires, while anything is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.auto_thaw_at.filter(|_| self.exited.is_none())
    }

    pub fn poll_output(&mut self) -> Option<FreezerOutput> {
        self.outputs.pop_front()
    }

    pub fn handle(&mut self, now: Instant, input: FreezerInput) {
        assert!(
            self.outputs.is_empty(),
            "handle() called with undrained outputs"
        );
        assert!(now >= self.now, "time went backwards");
        assert!(
            self.suspending.is_none() || matches!(input, FreezerInput::Suspended(_)),
            "the freezer is single-threaded: nothing happens inside a UFSSUSPEND"
        );
        self.now = now;
        if self.exited.is_some() {
            return;
        }
        match input {
            FreezerInput::Line(Ok(line)) => self.on_line(&line),
            FreezerInput::Line(Err(e)) => self.reply_err(EINVAL, &e.to_string()),
            FreezerInput::Suspended(result) => self.on_suspended(result),
            FreezerInput::Timer => {
                if self.auto_thaw_at.is_some_and(|t| now >= t) {
                    // Our own watchdog: the daemon did not thaw in time. Thaw and go.
                    self.leave(ExitWhy::AutoThaw, 0);
                }
            }
            FreezerInput::InputClosed => self.leave(ExitWhy::InputClosed, 0),
            FreezerInput::OutputFailed => self.leave(ExitWhy::OutputFailed, 1),
        }
        debug_assert!(self.held.is_empty() || self.auto_thaw_at.is_some());
    }

    fn reply(&mut self, r: Reply) {
        self.outputs.push_back(FreezerOutput::Reply(r.encode()));
    }

    fn reply_err(&mut self, errno: i32, text: &str) {
        // Bounded, so the reply fits one line whatever the text quotes.
        self.reply(Reply::Err {
            errno,
            text: text.chars().take(REPLY_TEXT_CHARS).collect(),
        });
    }

    fn on_line(&mut self, line: &[u8]) {
        match Command::decode(line) {
            Err(e) => self.reply_err(EINVAL, &e.to_string()),
            Ok(Command::Suspend {
                mount,
                fsid,
                auto_thaw_after,
            }) => {
                if self.holds(&mount) {
                    // One descriptor carries one suspension; a second would fail anyway.
                    self.reply_err(EINVAL, "already suspended");
                    return;
                }
                self.suspending = Some((mount.clone(), fsid, auto_thaw_after));
                self.outputs
                    .push_back(FreezerOutput::Suspend { mount, fsid });
            }
            Ok(Command::Resume) => {
                self.resume_all();
                self.reply(Reply::Ok);
            }
            Ok(Command::Ping { auto_thaw_after }) => {
                // A FREEZE while frozen: our own auto-thaw starts again, up to the cap.
                if let (Some(d), true) = (auto_thaw_after, self.is_holding()) {
                    self.auto_thaw_at = Some(self.capped(self.now.saturating_add(d)));
                }
                self.reply(Reply::Ok);
            }
        }
    }

    /// `at`, or the cap if that is sooner.
    fn capped(&self, at: Instant) -> Instant {
        self.cap_at.map_or(at, |cap| at.min(cap))
    }

    fn on_suspended(&mut self, result: Result<(), IoError>) {
        let Some((mount, fsid, after)) = self.suspending.take() else {
            return; // not asked for: nothing to do
        };
        match result {
            Ok(()) => {
                if self.held.is_empty() {
                    self.cap_at = Some(self.now.saturating_add(VSS_MAX_FROZEN));
                }
                self.held.push(Held {
                    mount,
                    since: self.now,
                });
                self.auto_thaw_at = Some(self.capped(self.now.saturating_add(after)));
                self.reply(Reply::Ok);
            }
            Err(e) => {
                let text = match fsid {
                    // What UFSSUSPEND says when no mounted file system has that fsid.
                    Some(f) if e.0 == ENOENT => format!(
                        "the file system planned for {mount} (fsid {f}) is no longer \
                         mounted; not suspended"
                    ),
                    Some(f) => format!("suspending {mount} (fsid {f}): {e}"),
                    None => format!("suspending {mount}: {e}"),
                };
                self.reply_err(e.0, &text);
            }
        }
    }

    fn resume_all(&mut self) {
        // Later suspensions first: the reverse of how they were taken.
        while let Some(h) = self.held.pop() {
            self.outputs.push_back(FreezerOutput::Resume(h.mount));
        }
        self.auto_thaw_at = None;
        self.cap_at = None;
    }

    fn leave(&mut self, why: ExitWhy, code: i32) {
        self.resume_all();
        self.exited = Some(why);
        self.outputs.push_back(FreezerOutput::Exit(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(n: u64) -> Instant {
        Instant::ZERO.saturating_add(ms(n))
    }

    fn drain(f: &mut FreezerCore) -> Vec<FreezerOutput> {
        std::iter::from_fn(|| f.poll_output()).collect()
    }

    fn line(s: &str) -> FreezerInput {
        FreezerInput::Line(Ok(s.as_bytes().to_vec()))
    }

    fn reply(s: &str) -> FreezerOutput {
        FreezerOutput::Reply(s.to_string())
    }

    #[test]
    fn commands_round_trip() {
        for c in [
            Command::Suspend {
                mount: "/".into(),
                fsid: None,
                auto_thaw_after: ms(31_000),
            },
            Command::Suspend {
                mount: "/mnt/with space\\and\nnewline\r".into(),
                fsid: Some(Fsid([-7, i32::MAX])),
                auto_thaw_after: ms(0),
            },
            Command::Suspend {
                mount: "- 1:2 -".into(),
                fsid: Some(Fsid([1, 2])),
                auto_thaw_after: ms(1),
            },
            Command::Resume,
            Command::Ping {
                auto_thaw_after: None,
            },
            Command::Ping {
                auto_thaw_after: Some(ms(5)),
            },
        ] {
            let l = c.encode();
            assert_eq!(l.matches('\n').count(), 1, "{l:?}");
            assert_eq!(Command::decode(l.as_bytes()), Ok(c));
        }
        assert_eq!(
            Command::Suspend {
                mount: "/var".into(),
                fsid: None,
                auto_thaw_after: ms(31_000)
            }
            .encode(),
            "suspend 31000 - /var\n"
        );
        assert_eq!(
            Command::Suspend {
                mount: "/mnt/Backup Disk".into(),
                fsid: Some(Fsid([1_694_829_551, 53])),
                auto_thaw_after: ms(31_000)
            }
            .encode(),
            "suspend 31000 1694829551:53 /mnt/Backup Disk\n"
        );
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::Ok,
            Reply::Err {
                errno: 5,
                text: "Input/output error".into(),
            },
        ] {
            assert_eq!(Reply::decode(r.encode().as_bytes()), Ok(r));
        }
        assert_eq!(Reply::result_of(b"ok\n"), VssResult::Done);
        assert_eq!(
            Reply::result_of(b"err 16 busy\n"),
            VssResult::Failed(IoError(16))
        );
        assert_eq!(
            Reply::result_of(b"\xff\xfe\n"),
            VssResult::Failed(IoError::EIO)
        );
        // A newline inside the text cannot split the reply.
        let r = Reply::Err {
            errno: 1,
            text: "a\nb".into(),
        };
        assert_eq!(r.encode(), "err 1 a b\n");
    }

    #[test]
    fn garbage_is_an_error_value() {
        let cases: &[(&[u8], LineError)] = &[
            (b"\n", LineError::Empty),
            (b"", LineError::Empty),
            (b"\xff\n", LineError::NotUtf8),
            (b"freeze /\n", LineError::Unknown("freeze".into())),
            (b"suspend\n", LineError::Arguments("suspend")),
            (b"suspend 10\n", LineError::Arguments("suspend")),
            (b"suspend 10 /\n", LineError::Arguments("suspend")),
            (b"suspend x - /\n", LineError::Number("x".into())),
            (b"suspend -1 - /\n", LineError::Number("-1".into())),
            (b"suspend 1 1;2 /\n", LineError::Fsid("1;2".into())),
            (b"suspend 1 /mnt /\n", LineError::Fsid("/mnt".into())),
            (
                b"suspend 99999999999999999999999 - /\n",
                LineError::Number("99999999999999999999999".into()),
            ),
            (b"suspend 1 - /a\\\n", LineError::Escape),
            (b"suspend 1 - /a\\x\n", LineError::Escape),
            (b"resume now\n", LineError::Arguments("resume")),
            (b"ping soon\n", LineError::Number("soon".into())),
        ];
        for (bytes, want) in cases {
            assert_eq!(Command::decode(bytes).as_ref(), Err(want), "{bytes:?}");
        }
        assert_eq!(
            Command::decode(&vec![b'a'; FREEZER_MAX_LINE + 1]),
            Err(LineError::TooLong)
        );
        assert!(Reply::decode(b"err x y\n").is_err());
        assert!(Reply::decode(b"ok then\n").is_err());
        assert!(Reply::decode(b"yes\n").is_err());
    }

    #[test]
    fn line_buffer_splits_and_caps() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"susp").is_empty());
        assert_eq!(
            b.push(b"end 1 /\nresume\npi"),
            vec![Ok(b"suspend 1 /\n".to_vec()), Ok(b"resume\n".to_vec())]
        );
        let long = vec![b'x'; FREEZER_MAX_LINE * 2];
        assert_eq!(b.push(&long), vec![Err(LineError::TooLong)]);
        assert_eq!(b.push(b"xx\nping\n"), vec![Ok(b"ping\n".to_vec())]);
    }

    #[test]
    fn suspend_resume_and_answers() {
        let mut f = FreezerCore::new(at(0));
        f.handle(at(1), line("suspend 1000 - /var\n"));
        assert_eq!(
            drain(&mut f),
            vec![FreezerOutput::Suspend {
                mount: "/var".into(),
                fsid: None
            }]
        );
        assert!(f.busy());
        f.handle(at(2), FreezerInput::Suspended(Ok(())));
        assert_eq!(drain(&mut f), vec![reply("ok\n")]);
        assert_eq!(f.poll_timeout(), Some(at(1002)));
        f.handle(at(3), line("suspend 1000 - /\n"));
        drain(&mut f);
        f.handle(at(4), FreezerInput::Suspended(Err(IoError(16))));
        assert_eq!(drain(&mut f), vec![reply("err 16 suspending /: EBUSY\n")]);
        // A failed suspension leaves the auto-thaw where it was.
        assert_eq!(f.poll_timeout(), Some(at(1002)));
        f.handle(at(5), line("suspend 1000 - /var\n"));
        assert_eq!(drain(&mut f), vec![reply("err 22 already suspended\n")]);
        f.handle(at(6), line("resume\n"));
        assert_eq!(
            drain(&mut f),
            vec![FreezerOutput::Resume("/var".into()), reply("ok\n")]
        );
        assert_eq!(f.poll_timeout(), None);
        f.handle(at(7), line("bogus\n"));
        assert_eq!(
            drain(&mut f),
            vec![reply("err 22 unknown word \"bogus\"\n")]
        );
        f.handle(at(8), FreezerInput::Line(Err(LineError::TooLong)));
        assert!(
            matches!(&drain(&mut f)[..], [FreezerOutput::Reply(r)] if r.starts_with("err 22 "))
        );
    }

    #[test]
    fn auto_thaw_resumes_in_reverse_and_exits() {
        let mut f = FreezerCore::new(at(0));
        for (i, m) in ["/var", "/"].iter().enumerate() {
            f.handle(at(i as u64), line(&format!("suspend 100 - {m}\n")));
            drain(&mut f);
            f.handle(at(i as u64), FreezerInput::Suspended(Ok(())));
            drain(&mut f);
        }
        assert_eq!(f.poll_timeout(), Some(at(101)));
        // Early timers do nothing.
        f.handle(at(50), FreezerInput::Timer);
        assert!(drain(&mut f).is_empty());
        // A ping with a duration moves the auto-thaw; one without does not.
        f.handle(at(60), line("ping 100\n"));
        assert_eq!(drain(&mut f), vec![reply("ok\n")]);
        f.handle(at(70), line("ping\n"));
        drain(&mut f);
        assert_eq!(f.poll_timeout(), Some(at(160)));
        f.handle(at(160), FreezerInput::Timer);
        assert_eq!(
            drain(&mut f),
            vec![
                FreezerOutput::Resume("/".into()),
                FreezerOutput::Resume("/var".into()),
                FreezerOutput::Exit(0)
            ]
        );
        assert_eq!(f.exited(), Some(ExitWhy::AutoThaw));
        assert_eq!(f.poll_timeout(), None);
        // Gone: nothing more happens.
        f.handle(at(170), line("resume\n"));
        assert!(drain(&mut f).is_empty());
    }

    /// Issue 11, Low 6: pings (a FREEZE while frozen) move the auto-thaw, but never past
    /// `VSS_MAX_FROZEN` after the first suspension still held.
    #[test]
    fn pings_never_move_the_auto_thaw_past_the_cap() {
        let cap = 60_000;
        let mut f = FreezerCore::new(at(0));
        f.handle(at(10), line("suspend 31000 - /var\n"));
        drain(&mut f);
        f.handle(at(10), FreezerInput::Suspended(Ok(())));
        drain(&mut f);
        for t in [20_000, 40_000, 55_000] {
            f.handle(at(10 + t), line("ping 31000\n"));
            assert_eq!(drain(&mut f), vec![reply("ok\n")]);
            assert!(
                f.poll_timeout() <= Some(at(10 + cap)),
                "{:?}",
                f.poll_timeout()
            );
        }
        // A later suspension (a second FREEZE after a failed one) does not restart it.
        f.handle(at(56_000), line("suspend 31000 - /\n"));
        drain(&mut f);
        f.handle(at(56_000), FreezerInput::Suspended(Ok(())));
        drain(&mut f);
        assert_eq!(f.poll_timeout(), Some(at(10 + cap)));
        f.handle(at(10 + cap), FreezerInput::Timer);
        assert_eq!(
            drain(&mut f),
            vec![
                FreezerOutput::Resume("/".into()),
                FreezerOutput::Resume("/var".into()),
                FreezerOutput::Exit(0)
            ]
        );
        // Everything resumed: a new first suspension starts a new cap.
        let mut f = FreezerCore::new(at(0));
        f.handle(at(1), line("suspend 100 - /\n"));
        drain(&mut f);
        f.handle(at(1), FreezerInput::Suspended(Ok(())));
        drain(&mut f);
        f.handle(at(2), line("resume\n"));
        drain(&mut f);
        f.handle(at(50_000), line("suspend 31000 - /\n"));
        drain(&mut f);
        f.handle(at(50_000), FreezerInput::Suspended(Ok(())));
        drain(&mut f);
        assert_eq!(f.poll_timeout(), Some(at(81_000)));
    }

    #[test]
    fn ping_while_holding_nothing_sets_no_auto_thaw() {
        let mut f = FreezerCore::new(at(0));
        f.handle(at(1), line("ping 100\n"));
        assert_eq!(drain(&mut f), vec![reply("ok\n")]);
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn eof_and_write_failure_resume_everything() {
        for (input, code, why) in [
            (FreezerInput::InputClosed, 0, ExitWhy::InputClosed),
            (FreezerInput::OutputFailed, 1, ExitWhy::OutputFailed),
        ] {
            let mut f = FreezerCore::new(at(0));
            f.handle(at(1), line("suspend 100 - /\n"));
            drain(&mut f);
            f.handle(at(1), FreezerInput::Suspended(Ok(())));
            drain(&mut f);
            f.handle(at(2), input);
            assert_eq!(
                drain(&mut f),
                vec![FreezerOutput::Resume("/".into()), FreezerOutput::Exit(code)]
            );
            assert_eq!(f.exited(), Some(why));
            assert!(!f.is_holding());
        }
    }

    #[test]
    fn effects_map_to_commands() {
        assert_eq!(
            Command::for_effect(&VssEffect::PingFreezer {
                auto_thaw_after: ms(9)
            }),
            Some(Command::Ping {
                auto_thaw_after: Some(ms(9))
            })
        );
        assert_eq!(
            Command::for_effect(&VssEffect::ResumeAll),
            Some(Command::Resume)
        );
        assert_eq!(Command::for_effect(&VssEffect::KillFreezer), None);
        assert_eq!(Command::for_effect(&VssEffect::ListMounts), None);
    }
}
