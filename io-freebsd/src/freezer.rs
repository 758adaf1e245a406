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
//! action lines.

use hvguest_core::kvp::effect::IoError;
use hvguest_core::vss::effect::VssResult;
use hvguest_core::vss::freezer::{
    Command, FreezerCore, FreezerInput, FreezerOutput, LineBuffer, Reply,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command as Process, Stdio};

use crate::actions::ActionLog;
use crate::clock;

/// How the freezer suspends: for real, or by writing action lines.
pub enum Mode {
    Real,
    Emulated { actions: PathBuf },
}

struct Held {
    mount: String,
    /// The `/dev/ufssuspend` descriptor carrying the suspension (none in emulation).
    _fd: Option<OwnedFd>,
}

#[cfg(target_os = "freebsd")]
mod ufs {
    use hvguest_core::vss::wire::UFSSUSPEND;
    nix::ioctl_write_ptr_bad!(suspend, UFSSUSPEND, nix::libc::fsid_t);
}

#[cfg(target_os = "freebsd")]
fn suspend_real(mount: &str) -> io::Result<OwnedFd> {
    use std::ffi::CString;
    use std::os::fd::FromRawFd;
    let path = CString::new(mount).map_err(|_| io::Error::from_raw_os_error(nix::libc::EINVAL))?;
    // SAFETY: statfs fills the zeroed struct for a NUL-terminated path.
    let mut st: nix::libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { nix::libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // One open file per suspension: an open file carries only one (docs/protocol/vss.md §1.3).
    let dev = c"/dev/ufssuspend";
    // SAFETY: open(2) on a constant path; the result is checked.
    let raw = unsafe { nix::libc::open(dev.as_ptr(), nix::libc::O_RDWR | nix::libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: UFSSUSPEND reads one fsid_t.
    unsafe { ufs::suspend(fd.as_raw_fd(), &st.f_fsid) }.map_err(io::Error::from)?;
    Ok(fd)
}

#[cfg(not(target_os = "freebsd"))]
fn suspend_real(_mount: &str) -> io::Result<OwnedFd> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "UFSSUSPEND exists only on FreeBSD",
    ))
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
        Mode::Emulated { actions } => match ActionLog::open(actions) {
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
                    FreezerOutput::Suspend(mount) => {
                        let result = match &mode {
                            Mode::Real => suspend_real(&mount).map(Some),
                            Mode::Emulated { .. } => Ok(None),
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

impl FreezerHandle {
    /// Starts `exe --freezer [--emulate-actions FILE]`.
    pub fn spawn(exe: &Path, actions: Option<&Path>) -> io::Result<FreezerHandle> {
        let mut cmd = Process::new(exe);
        cmd.arg("--freezer");
        if let Some(a) = actions {
            cmd.arg("--emulate-actions").arg(a);
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

    /// What the reply lines available now mean; `Err` when the freezer has gone (EOF).
    pub fn replies(&mut self) -> io::Result<Vec<VssResult>> {
        let mut buf = [0u8; 512];
        let mut results = Vec::new();
        loop {
            match self.stdout.read(&mut buf) {
                Ok(0) => return Err(io::Error::from_raw_os_error(nix::libc::EPIPE)),
                Ok(n) => results.extend(self.lines.push(&buf[..n]).into_iter().map(|l| match l {
                    Ok(line) => Reply::result_of(&line),
                    // An overlong line is no reply we know.
                    Err(_) => VssResult::Failed(IoError::EIO),
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(results)
    }

    /// Closes its stdin: it resumes everything and exits. Waits for it.
    pub fn close(mut self) -> io::Result<()> {
        drop(self.stdin.take());
        self.child.wait().map(drop)
    }

    /// SIGKILL: the kernel closes its descriptors, resuming everything. Waits for it.
    pub fn kill(mut self) -> io::Result<()> {
        // kill(2) fails only if the child has already exited (been waited for it cannot
        // be: we own it), which is what we want; wait reaps it either way.
        let _ = self.child.kill();
        self.child.wait().map(drop)
    }
}
