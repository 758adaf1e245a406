//! The freezer: the process that suspends UFS file systems.
//!
//! UFSSUSPEND fails with EDEADLK if the caller has more than one thread or holds a file
//! open for writing on the target (docs/protocol/vss.md §1.3), and a suspension lasts as long as
//! its `/dev/ufssuspend` descriptor. So the daemon re-executes its own binary with
//! `--freezer`: a fresh single-threaded process, working directory `/`, core dumps off,
//! one descriptor per file system (O_CLOEXEC). It talks over its stdin/stdout, one line
//! each way; the lines, what to answer, when to resume everything (stdin closed, stdout
//! gone, its own auto-thaw) are `hvguest_core::vss::freezer`. This file only opens and
//! closes descriptors and moves bytes. In emulation it suspends nothing and writes
//! action lines; it finds file systems in the emulated mount table, by fsid as the
//! kernel does.
//!
//! UFSSUSPEND is given the fsid the daemon planned (from the mount table it judged),
//! not whatever the path leads to now: if that file system is no longer mounted, the
//! kernel says ENOENT and nothing else is suspended in its place.
//!
//! The daemon's side never waits for the freezer on its event loop: closing its stdin or
//! killing it hands the process to a thread that reaps it ([`FreezerHandle::close`],
//! [`FreezerHandle::kill`]), so a freezer stuck in the kernel cannot stop the daemon.

use hvguest_core::kvp::effect::IoError;
use hvguest_core::vss::effect::VssResult;
use hvguest_core::vss::freezer::{
    Command, FreezerCore, FreezerInput, FreezerOutput, LineBuffer, Reply,
};
use hvguest_core::vss::policy::Fsid;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command as Process, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

use mio::Waker;

use crate::actions::ActionLog;
use crate::clock;

/// How the freezer suspends: for real, or by writing action lines (finding file
/// systems in the emulated mount table, when there is one).
pub enum Mode {
    Real {
        /// Linux: where the file systems frozen now are recorded (`FrozenRecord`).
        record: Option<PathBuf>,
        /// Test mode: refuse any mount point not below this directory.
        only_under: Option<PathBuf>,
    },
    Emulated {
        actions: PathBuf,
        mounts: Option<PathBuf>,
    },
}

struct Held {
    mount: String,
    hold: Hold,
}

/// What carries a suspension.
enum Hold {
    /// Emulation, or a Linux file system another holder had frozen already.
    Nothing,
    /// FreeBSD: the `/dev/ufssuspend` descriptor; closing it resumes.
    #[allow(dead_code)] // Held for its Drop.
    Ufs(OwnedFd),
    /// Linux: thawed by FITHAW on resume (and on drop, should we return early).
    #[cfg(target_os = "linux")]
    Frozen(hvguest_io_linux::freeze::Frozen),
}

/// The real freezer's state: the Linux record and the test mode's limit.
struct Real {
    #[cfg(target_os = "linux")]
    record: Option<hvguest_io_linux::freeze::FrozenRecord>,
    only_under: Option<PathBuf>,
}

impl Real {
    /// UFSSUSPEND on FreeBSD, FIFREEZE on Linux; refused below no `only_under`.
    fn suspend(&mut self, mount: &str, fsid: Option<Fsid>) -> io::Result<Hold> {
        if let Some(dir) = &self.only_under {
            if !Path::new(mount).starts_with(dir) || Path::new(mount) == dir {
                return Err(io::Error::from_raw_os_error(nix::libc::EPERM));
            }
        }
        self.suspend_system(mount, fsid)
    }

    #[cfg(target_os = "linux")]
    fn suspend_system(&mut self, mount: &str, fsid: Option<Fsid>) -> io::Result<Hold> {
        use hvguest_io_linux::freeze::{freeze, Freeze};
        let Some(record) = self.record.as_mut() else {
            // Never freeze what nobody could find again after our death.
            return Err(io::Error::from_raw_os_error(nix::libc::EPERM));
        };
        Ok(match freeze(mount, fsid, record)? {
            Freeze::Frozen(f) => Hold::Frozen(f),
            Freeze::AlreadyFrozen => Hold::Nothing,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn suspend_system(&mut self, mount: &str, fsid: Option<Fsid>) -> io::Result<Hold> {
        hvguest_io_freebsd::ufs::suspend(mount, fsid).map(Hold::Ufs)
    }

    /// Ends one suspension: FITHAW (and the record updated) on Linux, the descriptor
    /// closed on FreeBSD.
    fn resume(&mut self, hold: Hold) -> io::Result<()> {
        match hold {
            Hold::Nothing | Hold::Ufs(_) => Ok(()),
            #[cfg(target_os = "linux")]
            Hold::Frozen(f) => {
                let fsid = f.fsid;
                f.thaw()?;
                match self.record.as_mut() {
                    Some(r) => r.remove(fsid),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The freezer process's whole life: bytes from stdin to [`FreezerCore`], its outputs
/// carried out literally. Returns the exit code.
pub fn freezer_main(mode: Mode) -> i32 {
    // Nothing of ours on a file system we may suspend, and no core file to write there.
    // Both are precautions: a freezer still works from another directory or with core
    // dumps on, so a failure is reported on stderr and we go on.
    if let Err(e) = std::env::set_current_dir("/") {
        eprintln!("freezer: chdir /: {e}");
    }
    if let Err(e) = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0) {
        eprintln!("freezer: RLIMIT_CORE: {e}");
    }
    let mut log = match &mode {
        Mode::Emulated { actions, .. } => match ActionLog::open(actions) {
            Ok(l) => Some(l),
            Err(e) => {
                // Emulation without its log would act unseen: refuse to start. The daemon
                // sees the pipe close and fails the FREEZE.
                eprintln!("freezer: action log {}: {e}", actions.display());
                return 1;
            }
        },
        Mode::Real { .. } => None,
    };
    let mut real = match &mode {
        Mode::Real { record, only_under } => {
            // Only Linux keeps a record: FreeBSD's kernel resumes on a descriptor's close.
            #[cfg(not(target_os = "linux"))]
            let _ = record;
            Real {
                #[cfg(target_os = "linux")]
                record: record
                    .as_deref()
                    .map(hvguest_io_linux::freeze::FrozenRecord::new),
                only_under: only_under.clone(),
            }
        }
        Mode::Emulated { .. } => Real {
            #[cfg(target_os = "linux")]
            record: None,
            only_under: None,
        },
    };
    let mut core = FreezerCore::new(clock::now());
    let mut lines = LineBuffer::default();
    let mut held: Vec<Held> = Vec::new();
    let stdin = io::stdin();
    let mut out = io::stdout();
    let mut inputs: VecDeque<FreezerInput> = VecDeque::new();
    loop {
        while let Some(input) = inputs.pop_front() {
            core.handle(clock::now(), input);
            while let Some(o) = core.poll_output() {
                match o {
                    FreezerOutput::Suspend { mount, fsid } => {
                        let result = match &mode {
                            Mode::Real { .. } => real.suspend(&mount, fsid),
                            Mode::Emulated { mounts, .. } => {
                                suspend_emulated(mounts.as_deref(), &mount, fsid)
                                    .map(|()| Hold::Nothing)
                            }
                        };
                        let result = match result {
                            // Logged before it counts: a suspension the emulation cannot
                            // record is undone (its descriptor closed) and reported failed.
                            Ok(hold) => record(&mut log, "suspend", &mount, "ok").map(|()| {
                                held.push(Held {
                                    mount: mount.clone(),
                                    hold,
                                })
                            }),
                            Err(e) => Err(e),
                        };
                        inputs.push_front(FreezerInput::Suspended(
                            result.map_err(|e| IoError(e.raw_os_error().unwrap_or(IoError::EIO.0))),
                        ));
                    }
                    FreezerOutput::Resume(mount) => {
                        if let Some(i) = held.iter().rposition(|h| h.mount == mount) {
                            if let Err(e) = real.resume(held.remove(i).hold) {
                                // It stays in the record. Exiting hands it to the
                                // daemon's reaper, which thaws what the record lists
                                // (what we still hold is thawed as we drop it).
                                eprintln!("freezer: thawing {mount} failed: {e}; exiting");
                                return 1;
                            }
                        }
                        // Resumed (or left in the record for the daemon to retry),
                        // whatever the log says; a resume cannot be undone for a failed
                        // log line.
                        let _ = record(&mut log, "resume", &mount, "ok");
                    }
                    FreezerOutput::Reply(line) => {
                        if out
                            .write_all(line.as_bytes())
                            .and_then(|_| out.flush())
                            .is_err()
                        {
                            inputs.push_back(FreezerInput::OutputFailed);
                        }
                    }
                    FreezerOutput::Exit(code) => {
                        debug_assert!(held.is_empty(), "the core resumes before it exits");
                        for h in std::mem::take(&mut held) {
                            if let Err(e) = real.resume(h.hold) {
                                eprintln!("freezer: thawing {} failed: {e}", h.mount);
                            }
                        }
                        // Exiting either way; the line only tells the emulation's reader.
                        let _ = record(
                            &mut log,
                            "freezer-exit",
                            &std::process::id().to_string(),
                            "ok",
                        );
                        return code;
                    }
                }
            }
        }
        let timeout = core
            .poll_timeout()
            .map(|t| t.saturating_since(clock::now()));
        let ms = timeout.map_or(PollTimeout::NONE, |d| {
            PollTimeout::from(u16::try_from(d.as_millis().min(60_000)).unwrap_or(60_000))
        });
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Err(nix::errno::Errno::EINTR) => continue,
            // poll(2) on one valid descriptor cannot fail otherwise; if it does, we cannot
            // hear the daemon any more: treat it as the daemon gone.
            Err(_) => inputs.push_back(FreezerInput::InputClosed),
            Ok(0) => inputs.push_back(FreezerInput::Timer),
            Ok(_) => {
                let mut buf = [0u8; 512];
                match stdin.lock().read(&mut buf) {
                    Ok(0) => inputs.push_back(FreezerInput::InputClosed),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => inputs.push_back(FreezerInput::InputClosed),
                    Ok(n) => {
                        inputs.extend(lines.push(&buf[..n]).into_iter().map(FreezerInput::Line))
                    }
                }
            }
        }
    }
}

/// Emulation's UFSSUSPEND: the file system must be in the emulated mount table, found
/// by its fsid when one was planned (ENOENT otherwise, as from the kernel), else by
/// its path. Without a table, everything is there.
fn suspend_emulated(table: Option<&Path>, mount: &str, fsid: Option<Fsid>) -> io::Result<()> {
    let Some(table) = table else {
        return Ok(());
    };
    let mounts = crate::mounts::emulated(table).map_err(io::Error::other)?;
    let found = match fsid {
        Some(f) => mounts.iter().any(|m| m.fsid == Some(f)),
        None => mounts.iter().any(|m| m.path == mount),
    };
    if found {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(nix::libc::ENOENT))
    }
}

/// One action line, in emulation.
fn record(log: &mut Option<ActionLog>, action: &str, target: &str, result: &str) -> io::Result<()> {
    match log.as_mut() {
        Some(l) => l.record(action, target, result),
        None => Ok(()),
    }
}

/// The daemon's side: the running freezer and its pipes.
pub struct FreezerHandle {
    child: Child,
    /// Linux: its record of what it froze, thawed by the reaper once it is gone.
    record: Option<PathBuf>,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    lines: LineBuffer,
}

/// A freezer that has gone (or was sent away), reaped by a background thread.
#[derive(Debug)]
pub struct Reaped {
    pub pid: u32,
    /// How it ended, or why waiting for it failed.
    pub status: io::Result<std::process::ExitStatus>,
    /// It was killed (not left on its own after its stdin closed).
    pub killed: bool,
    /// Linux: what the reaper found still frozen in the freezer's record after it was
    /// gone, and thawed (or could not): one sentence each, for the log.
    pub guardian: Vec<String>,
}

impl FreezerHandle {
    /// Starts `exe --freezer [--emulate-actions FILE [--emulate-mounts FILE]]`, or for
    /// real `exe --freezer [--frozen-record FILE] [--only-under DIR]`.
    pub fn spawn(exe: &Path, how: &FreezerArgs) -> io::Result<FreezerHandle> {
        let mut cmd = Process::new(exe);
        cmd.arg("--freezer");
        if let Some(a) = &how.actions {
            cmd.arg("--emulate-actions").arg(a);
            if let Some(m) = &how.mounts {
                cmd.arg("--emulate-mounts").arg(m);
            }
        } else {
            if let Some(r) = &how.record {
                cmd.arg("--frozen-record").arg(r);
            }
            if let Some(d) = &how.only_under {
                cmd.arg("--only-under").arg(d);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout pipe"))?;
        nix::fcntl::fcntl(
            &stdout,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        Ok(FreezerHandle {
            child,
            record: how.record.clone().filter(|_| how.actions.is_none()),
            stdin,
            stdout,
            lines: LineBuffer::default(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_fd(&self) -> std::os::fd::RawFd {
        self.stdout.as_raw_fd()
    }

    pub fn send(&mut self, command: &Command) -> io::Result<()> {
        let w = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::EPIPE))?;
        w.write_all(command.encode().as_bytes())?;
        w.flush()
    }

    /// What the reply lines available now mean, each with the freezer's words for a
    /// failure (to be logged); `Err` when the freezer has gone (EOF).
    pub fn replies(&mut self) -> io::Result<Vec<(VssResult, Option<String>)>> {
        let mut buf = [0u8; 512];
        let mut results = Vec::new();
        loop {
            match self.stdout.read(&mut buf) {
                Ok(0) => return Err(io::Error::from_raw_os_error(nix::libc::EPIPE)),
                Ok(n) => results.extend(self.lines.push(&buf[..n]).into_iter().map(|l| match l {
                    Ok(line) => {
                        let said = match Reply::decode(&line) {
                            Ok(Reply::Err { text, .. }) => Some(text),
                            Ok(Reply::Ok) => None,
                            Err(e) => Some(format!("a reply that is no reply: {e}")),
                        };
                        (Reply::result_of(&line), said)
                    }
                    // An overlong line is no reply we know.
                    Err(e) => (
                        VssResult::Failed(IoError::EIO),
                        Some(format!("a reply that is no reply: {e}")),
                    ),
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(results)
    }

    /// Closes its stdin: it resumes everything and exits. Returns at once; the process
    /// is reaped by a thread, which reports on the channel (and wakes `waker`).
    pub fn close(mut self, waker: Option<Arc<Waker>>) -> Receiver<Reaped> {
        drop(self.stdin.take());
        reap(self.child, false, waker, self.record)
    }

    /// SIGKILL: the kernel closes its descriptors, resuming everything, once the process
    /// leaves the kernel. Returns at once; the process is reaped by a thread, which
    /// reports on the channel (and wakes `waker`).
    pub fn kill(mut self, waker: Option<Arc<Waker>>) -> Receiver<Reaped> {
        // kill(2) fails only if the child has already exited (been waited for it cannot
        // be: we own it), which is what we want; the reaper collects it either way.
        let _ = self.child.kill();
        reap(self.child, true, waker, self.record)
    }
}

/// Waits for `child` in a thread of its own (a freezer stuck inside UFSSUSPEND or
/// FIFREEZE only dies when the kernel lets it), then, on Linux, thaws what its record
/// still lists (a freeze outlives its freezer), then reports.
fn reap(
    mut child: Child,
    killed: bool,
    waker: Option<Arc<Waker>>,
    record: Option<PathBuf>,
) -> Receiver<Reaped> {
    let (tx, rx) = channel();
    let pid = child.id();
    let spawned = std::thread::Builder::new()
        .name("freezer reaper".into())
        .spawn(move || {
            let status = child.wait();
            let guardian = record.as_deref().map(thaw_recorded).unwrap_or_default();
            // The loop may be gone (the daemon exiting): then nobody needs the report.
            let _ = tx.send(Reaped {
                pid,
                status,
                killed,
                guardian,
            });
            if let Some(w) = waker {
                // A failed wake means the poll is gone, and the loop with it.
                let _ = w.wake();
            }
        });
    if let Err(e) = spawned {
        // No thread: the process stays a zombie until we exit; say so through the
        // channel rather than wait here.
        let (tx, rx) = channel();
        // The receiver is returned just below: the send cannot fail.
        let _ = tx.send(Reaped {
            pid,
            status: Err(e),
            killed,
            guardian: Vec::new(),
        });
        return rx;
    }
    rx
}

/// How the daemon starts its freezers.
#[derive(Clone, Debug, Default)]
pub struct FreezerArgs {
    /// Emulation: the action log...
    pub actions: Option<PathBuf>,
    /// ...and the emulated mount table.
    pub mounts: Option<PathBuf>,
    /// Linux: the record of what is frozen (docs/protocol/linux.md §2.5).
    pub record: Option<PathBuf>,
    /// Test mode: no mount point outside this directory.
    pub only_under: Option<PathBuf>,
}

/// Thaws what a Linux freezer's record still lists: after its death, at the daemon's
/// start, and for `hv_vss_daemon --thaw-recorded` (systemd's `ExecStopPost=`). One
/// sentence per file system found there, for the log; nothing when none was.
pub fn thaw_recorded(record: &Path) -> Vec<String> {
    #[cfg(target_os = "linux")]
    {
        use hvguest_io_linux::freeze::{thaw_recorded, Thawed};
        match thaw_recorded(record) {
            Err(e) => vec![format!(
                "the record of frozen file systems {} cannot be read or rewritten: {e}; \
                 if writes hang, thaw by hand with `fsfreeze -u MOUNTPOINT`",
                record.display()
            )],
            Ok(done) => done
                .into_iter()
                .map(|(mount, outcome)| match outcome {
                    Thawed::Thawed => {
                        format!("{mount} was still frozen by a freezer that is gone; thawed it")
                    }
                    Thawed::Gone => format!(
                        "{mount} was recorded frozen but another file system (or none) is \
                         mounted there now; left it alone"
                    ),
                    Thawed::Failed(e) => format!(
                        "{mount} is still frozen by a freezer that is gone, and FITHAW \
                         failed: {e}; run `fsfreeze -u {mount}`"
                    ),
                })
                .collect(),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // FreeBSD's suspensions end with their descriptors: nothing is ever recorded.
        let _ = record;
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs::tests::{TempDir, SPAWN_LOCK};
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    /// A "freezer" that ignores its stdin and takes `secs` to exit, as one stuck in the
    /// kernel would (the real one leaves as soon as its stdin closes).
    fn stubborn(dir: &TempDir, secs: u32) -> PathBuf {
        let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let exe = dir.path().join("stubborn-freezer");
        std::fs::write(&exe, format!("#!/bin/sh\nexec sleep {secs}\n")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    /// Issue 11, Low 12: closing or killing the freezer never waits on the caller (the
    /// event loop) for a process that does not go away at once; it is reaped in the
    /// background and reported when it has gone.
    #[test]
    fn close_and_kill_do_not_wait_for_a_stuck_freezer() {
        let dir = TempDir::new("freezer-close");
        let exe = stubborn(&dir, 3);
        let h = {
            let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            FreezerHandle::spawn(&exe, &FreezerArgs::default()).unwrap()
        };
        let start = Instant::now();
        let reaped = h.close(None);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "close waited {:?}",
            start.elapsed()
        );
        let gone = reaped
            .recv_timeout(Duration::from_secs(10))
            .expect("reaped in the background");
        assert!(gone.status.is_ok() && !gone.killed, "{gone:?}");
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "it ran to its end"
        );
        // Killing does not wait either; the reaper reports it.
        let h = {
            let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            FreezerHandle::spawn(&exe, &FreezerArgs::default()).unwrap()
        };
        let start = Instant::now();
        let reaped = h.kill(None);
        assert!(start.elapsed() < Duration::from_millis(500));
        let gone = reaped.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(gone.killed, "{gone:?}");
    }
}
