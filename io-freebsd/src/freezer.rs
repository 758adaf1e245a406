//! The freezer: the process that suspends UFS file systems.
//!
//! UFSSUSPEND fails with EDEADLK if the caller has more than one thread or holds a file
//! open for writing on the target (docs/protocol/vss.md §1.3), and a suspension lasts as long as
//! its `/dev/ufssuspend` descriptor. So the daemon re-executes its own binary with
//! `--freezer`: a fresh single-threaded process, working directory `/`, core dumps off,
//! one descriptor per file system (O_CLOEXEC). It talks over its stdin/stdout, one line
//! each way:
//!
//! ```text
//! suspend <mountpoint> <auto-thaw ms>   ->  ok | err <errno> <text>
//! resume                                ->  ok        (closes every descriptor)
//! ping [<auto-thaw ms>]                ->  ok        (and moves the auto-thaw)
//! ```
//!
//! It resumes everything and exits when its stdin closes (the daemon died or is done)
//! and when its own auto-thaw deadline passes, so not even a hung daemon can leave a
//! file system suspended. In emulation it suspends nothing and writes action lines.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::actions::ActionLog;

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

/// The freezer process's whole life. Returns the exit code.
pub fn freezer_main(mode: Mode) -> i32 {
    // Nothing of ours on a file system we may suspend, and no core file to write there.
    let _ = std::env::set_current_dir("/");
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let mut log = match &mode {
        Mode::Emulated { actions } => ActionLog::open(actions).ok(),
        Mode::Real => None,
    };
    let mut held: Vec<Held> = Vec::new();
    let mut auto_thaw: Option<Instant> = None;
    let mut input = Vec::new();
    let stdin = io::stdin();
    let mut out = io::stdout();
    let resume_all = |held: &mut Vec<Held>, log: &mut Option<ActionLog>| {
        // Later suspensions first: the reverse of how they were taken.
        while let Some(h) = held.pop() {
            drop(h._fd);
            if let Some(l) = log.as_mut() {
                let _ = l.record("resume", &h.mount, "ok");
            }
        }
    };
    loop {
        let timeout = auto_thaw.map(|t| t.saturating_duration_since(Instant::now()));
        let ms = timeout.map_or(PollTimeout::NONE, |d| {
            PollTimeout::from(u16::try_from(d.as_millis().min(60_000)).unwrap_or(60_000))
        });
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
            Ok(0) => {
                if auto_thaw.is_some_and(|t| Instant::now() >= t) {
                    break; // our own watchdog: thaw and go
                }
                continue;
            }
            Ok(_) => {}
        }
        let mut buf = [0u8; 512];
        let n = match stdin.lock().read(&mut buf) {
            Ok(0) | Err(_) => break, // the daemon is gone or done with us
            Ok(n) => n,
        };
        input.extend_from_slice(&buf[..n]);
        while let Some(end) = input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = input.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            let words: Vec<&str> = line.split_whitespace().collect();
            let reply = match words.as_slice() {
                ["suspend", mount, ms] => {
                    let result = match &mode {
                        Mode::Real => suspend_real(mount).map(Some),
                        Mode::Emulated { .. } => Ok(None),
                    };
                    match result {
                        Ok(fd) => {
                            held.push(Held {
                                mount: mount.to_string(),
                                _fd: fd,
                            });
                            let after = ms.parse::<u64>().unwrap_or(0);
                            auto_thaw = Some(Instant::now() + Duration::from_millis(after));
                            if let Some(l) = log.as_mut() {
                                let _ = l.record("suspend", mount, "ok");
                            }
                            "ok".to_string()
                        }
                        Err(e) => format!("err {} {e}", e.raw_os_error().unwrap_or(5)),
                    }
                }
                ["resume"] => {
                    resume_all(&mut held, &mut log);
                    auto_thaw = None;
                    "ok".to_string()
                }
                ["ping"] => "ok".to_string(),
                ["ping", ms] => {
                    // A FREEZE while frozen: our own auto-thaw starts again.
                    if !held.is_empty() {
                        let after = ms.parse::<u64>().unwrap_or(0);
                        auto_thaw = Some(Instant::now() + Duration::from_millis(after));
                    }
                    "ok".to_string()
                }
                _ => format!("err 22 unknown command {line:?}"),
            };
            if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
                resume_all(&mut held, &mut log);
                return 1;
            }
        }
    }
    resume_all(&mut held, &mut log);
    if let Some(l) = log.as_mut() {
        let _ = l.record("freezer-exit", &std::process::id().to_string(), "ok");
    }
    0
}

/// The daemon's side: the running freezer and its pipes.
pub struct FreezerHandle {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    partial: Vec<u8>,
}

impl FreezerHandle {
    /// Starts `exe --freezer [--emulate-actions FILE]`.
    pub fn spawn(exe: &Path, actions: Option<&Path>) -> io::Result<FreezerHandle> {
        let mut cmd = Command::new(exe);
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
            partial: Vec::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_fd(&self) -> std::os::fd::RawFd {
        self.stdout.as_raw_fd()
    }

    pub fn send(&mut self, line: &str) -> io::Result<()> {
        let w = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::EPIPE))?;
        w.write_all(format!("{line}\n").as_bytes())?;
        w.flush()
    }

    /// Complete reply lines available now; `Err` when the freezer has gone (EOF).
    pub fn replies(&mut self) -> io::Result<Vec<String>> {
        let mut buf = [0u8; 512];
        loop {
            match self.stdout.read(&mut buf) {
                Ok(0) => return Err(io::Error::from_raw_os_error(nix::libc::EPIPE)),
                Ok(n) => self.partial.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line).trim().to_string());
        }
        Ok(lines)
    }

    /// Closes its stdin: it resumes everything and exits. Waits for it.
    pub fn close(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }

    /// SIGKILL: the kernel closes its descriptors, resuming everything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
