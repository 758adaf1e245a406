//! Becoming a daemon, and the pidfile that keeps a second instance from starting.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("another instance is running (pid {pid}, pidfile {path})")]
    AlreadyRunning { pid: String, path: String },
    #[error("pidfile {path}: {source}")]
    Pidfile { path: String, source: io::Error },
    #[error("cannot become a daemon: {0}")]
    Daemonize(nix::Error),
    #[error("cannot close the descriptors inherited from the parent process: {0}")]
    CloseInherited(io::Error),
}

/// How many times a pidfile that another instance removed while we locked it is opened
/// anew before giving up (each time means an instance exited at that very moment).
const PIDFILE_ATTEMPTS: usize = 10;

/// A locked pidfile holding our pid; removed when dropped.
///
/// The lock is `flock(2)`'s, which belongs to the open file, not to the process: a
/// child made by `fork` shares it, so it is held across daemonising with no moment
/// when a second instance could take it (pidfile(3) works the same way).
pub struct Pidfile {
    path: PathBuf,
    lock: Flock<File>,
}

impl Pidfile {
    pub fn acquire(path: &Path) -> Result<Pidfile, ProcessError> {
        let shown = path.display().to_string();
        let err = |source| ProcessError::Pidfile {
            path: shown.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        for _ in 0..PIDFILE_ATTEMPTS {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)
                .map_err(err)?;
            if let Some(lock) = lock_if_current(path, file)? {
                let mut pidfile = Pidfile {
                    path: path.to_path_buf(),
                    lock,
                };
                pidfile.write_pid()?;
                return Ok(pidfile);
            }
        }
        Err(err(io::Error::other(format!(
            "it was removed {PIDFILE_ATTEMPTS} times while being locked; another instance is \
             starting and stopping in a loop"
        ))))
    }

    /// Writes our pid over what the file holds (after daemonising: the child's).
    pub fn write_pid(&mut self) -> Result<(), ProcessError> {
        let err = |source| ProcessError::Pidfile {
            path: self.path.display().to_string(),
            source,
        };
        self.lock.set_len(0).map_err(err)?;
        self.lock.rewind().map_err(err)?;
        writeln!(self.lock, "{}", std::process::id()).map_err(err)?;
        self.lock.flush().map_err(err)
    }
}

/// Locks `file`, opened at `path`, unless another instance holds it. `None` when the
/// file locked is no longer the one at `path`: an exiting instance removes its pidfile
/// while still holding the lock, so a descriptor opened just before that gets the lock
/// of a file no later instance will see, and both would run.
fn lock_if_current(path: &Path, file: File) -> Result<Option<Flock<File>>, ProcessError> {
    let shown = || path.display().to_string();
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut f, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            // Only for the message: an unreadable pidfile still means "running".
            let _ = f.read_to_string(&mut pid);
            return Err(ProcessError::AlreadyRunning {
                pid: pid.trim().to_string(),
                path: shown(),
            });
        }
        Err((_, e)) => {
            return Err(ProcessError::Pidfile {
                path: shown(),
                source: e.into(),
            })
        }
    };
    let held = lock.metadata().map_err(|source| ProcessError::Pidfile {
        path: shown(),
        source,
    })?;
    match std::fs::symlink_metadata(path) {
        Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => Ok(Some(lock)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProcessError::Pidfile {
            path: shown(),
            source,
        }),
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Removed while still locked (the lock goes with the field, after this): an
        // instance that opened it meanwhile sees it gone once it has the lock, and
        // starts over. Exiting: a pidfile left behind is harmless (the next start
        // locks it anew).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Closes every descriptor above standard error, first thing at start-up. Whatever
/// started the daemon (devd, rc, a shell, a service manager) may have left descriptors
/// open without close-on-exec; kept, they would reach every hook and script the daemon
/// runs. Call before anything is opened.
pub fn close_inherited_descriptors() -> Result<(), ProcessError> {
    #[cfg(target_os = "freebsd")]
    {
        // SAFETY: closefrom(3) only closes descriptors, and none of ours is open yet.
        unsafe { nix::libc::closefrom(3) };
        Ok(())
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: close_range(2) only closes descriptors, and none of ours is open
            // yet. The system call, not glibc's wrapper (2.34 and later).
            let r = unsafe { nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, 0) };
            if r == 0 {
                return Ok(());
            }
            // A kernel before 5.9: close them one by one, below.
        }
        close_listed_descriptors().map_err(ProcessError::CloseInherited)
    }
}

/// The descriptors `/proc/self/fd` lists above standard error, closed one by one.
#[cfg(not(target_os = "freebsd"))]
fn close_listed_descriptors() -> io::Result<()> {
    // Listed first, closed after: the listing's own descriptor is among them.
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Ok(fd) = entry?.file_name().to_string_lossy().parse::<i32>() {
            if fd > 2 {
                fds.push(fd);
            }
        }
    }
    for fd in fds {
        // SAFETY: closing a descriptor number; nothing of ours uses it (the listing's
        // own descriptor, closed by now, makes this EBADF, which is right to ignore).
        unsafe { nix::libc::close(fd) };
    }
    Ok(())
}

/// Relative paths are resolved at start-up: a daemon's working directory becomes `/`.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A daemon's start: takes `pidfile` (if any) while still on the terminal, so a second
/// instance is refused where the administrator sees why; then, unless `foreground`,
/// detaches holding it throughout and writes the detached process's pid into it. Call
/// before any thread is started.
pub fn start_daemon(
    pidfile: Option<&Path>,
    foreground: bool,
) -> Result<Option<Pidfile>, ProcessError> {
    let mut lock = pidfile.map(Pidfile::acquire).transpose()?;
    if foreground {
        return Ok(lock);
    }
    // The children share the locked file; the parents leave by `process::exit`, which
    // runs no destructor, so neither the lock nor the file is let go on the way.
    daemonize()?;
    if let Some(p) = lock.as_mut() {
        p.write_pid()?;
    }
    Ok(lock)
}

/// Detaches from the terminal: fork, new session, fork again, `/` as working
/// directory, standard streams on /dev/null. Call before any thread is started.
pub fn daemonize() -> Result<(), ProcessError> {
    use nix::unistd::{chdir, fork, setsid, ForkResult};
    // SAFETY: called while the process has a single thread.
    match unsafe { fork() }.map_err(ProcessError::Daemonize)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().map_err(ProcessError::Daemonize)?;
    // SAFETY: still single-threaded.
    match unsafe { fork() }.map_err(ProcessError::Daemonize)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    chdir("/").map_err(ProcessError::Daemonize)?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| {
            ProcessError::Daemonize(nix::Error::from_raw(
                e.raw_os_error().unwrap_or(nix::libc::EIO),
            ))
        })?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard streams of this process; `null` stays open.
        if unsafe { nix::libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(ProcessError::Daemonize(nix::Error::last()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_pidfile_lock_is_refused_and_names_the_pid() {
        let path = std::env::temp_dir().join(format!("hvguest-pid-{}/x.pid", std::process::id()));
        let first = Pidfile::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        match Pidfile::acquire(&path) {
            Err(ProcessError::AlreadyRunning { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("second lock granted"),
        }
        drop(first);
        assert!(!path.exists());
        // Cleaning up test scratch space; a leftover is harmless.
        let _ = std::fs::remove_dir(path.parent().unwrap());
    }

    #[test]
    fn a_pidfile_removed_while_being_locked_is_not_taken() {
        let path =
            std::env::temp_dir().join(format!("hvguest-pid-stale-{}/x.pid", std::process::id()));
        let first = Pidfile::acquire(&path).unwrap();
        // A second instance opened the file just before the first exited...
        let early = File::open(&path).unwrap();
        drop(first);
        // ...and would get the lock of a file no one else sees.
        assert!(lock_if_current(&path, early).unwrap().is_none());
        // Taken anew, it is the file at the path.
        let second = Pidfile::acquire(&path).unwrap();
        let at_path = std::fs::metadata(&path).unwrap();
        assert_eq!(second.lock.metadata().unwrap().ino(), at_path.ino());
        drop(second);
        // Cleaning up test scratch space; a leftover is harmless.
        let _ = std::fs::remove_dir(path.parent().unwrap());
    }
}
