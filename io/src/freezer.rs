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
    Real,
    Emulated {
        actions: PathBuf,
        mounts: Option<PathBuf>,
    },
}

struct Held {
    mount: String,
    /// The `/dev/ufssuspend` descriptor carrying the suspension (none in emulation).
    _fd: Option<OwnedFd>,
}

/// UFSSUSPEND, or an error off FreeBSD (tests use the emulated freezer).
fn suspend_real(mount: &str, fsid: Option<Fsid>) -> io::Result<OwnedFd> {
    hvguest_io_freebsd::ufs::suspend(mount, fsid)
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
        Mode::Real => None,
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
                            Mode::Real => suspend_real(&mount, fsid).map(Some),
                            Mode::Emulated { mounts, .. } => {
                                suspend_emulated(mounts.as_deref(), &mount, fsid).map(|()| None)
                            }
                        };
                        let result = match result {
                            // Logged before it counts: a suspension the emulation cannot
                            // record is undone (its descriptor closed) and reported failed.
                            Ok(fd) => record(&mut log, "suspend", &mount, "ok").map(|()| {
                                held.push(Held {
                                    mount: mount.clone(),
                                    _fd: fd,
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
                            drop(held.remove(i));
                        }
                        // The descriptor is closed, so the file system is resumed, whatever
                        // the log says; a resume cannot be undone for a failed log line.
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
                        drop(std::mem::take(&mut held));
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
}

impl FreezerHandle {
    /// Starts `exe --freezer [--emulate-actions FILE [--emulate-mounts FILE]]`.
    pub fn spawn(
        exe: &Path,
        actions: Option<&Path>,
        mounts: Option<&Path>,
    ) -> io::Result<FreezerHandle> {
        let mut cmd = Process::new(exe);
        cmd.arg("--freezer");
        if let Some(a) = actions {
            cmd.arg("--emulate-actions").arg(a);
            if let Some(m) = mounts {
                cmd.arg("--emulate-mounts").arg(m);
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
        reap(self.child, false, waker)
    }

    /// SIGKILL: the kernel closes its descriptors, resuming everything, once the process
    /// leaves the kernel. Returns at once; the process is reaped by a thread, which
    /// reports on the channel (and wakes `waker`).
    pub fn kill(mut self, waker: Option<Arc<Waker>>) -> Receiver<Reaped> {
        // kill(2) fails only if the child has already exited (been waited for it cannot
        // be: we own it), which is what we want; the reaper collects it either way.
        let _ = self.child.kill();
        reap(self.child, true, waker)
    }
}

/// Waits for `child` in a thread of its own (a freezer stuck inside UFSSUSPEND only dies
/// when the kernel lets it), then reports.
fn reap(mut child: Child, killed: bool, waker: Option<Arc<Waker>>) -> Receiver<Reaped> {
    let (tx, rx) = channel();
    let pid = child.id();
    let spawned = std::thread::Builder::new()
        .name("freezer reaper".into())
        .spawn(move || {
            let status = child.wait();
            // The loop may be gone (the daemon exiting): then nobody needs the report.
            let _ = tx.send(Reaped {
                pid,
                status,
                killed,
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
        });
        return rx;
    }
    rx
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
            FreezerHandle::spawn(&exe, None, None).unwrap()
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
            FreezerHandle::spawn(&exe, None, None).unwrap()
        };
        let start = Instant::now();
        let reaped = h.kill(None);
        assert!(start.elapsed() < Duration::from_millis(500));
        let gone = reaped.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(gone.killed, "{gone:?}");
    }
}
