//! Becoming a daemon, and the pidfile that keeps a second instance from starting.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("another instance is running (pid {pid}, pidfile {path})")]
    AlreadyRunning { pid: String, path: String },
    #[error("pidfile {path}: {source}")]
    Pidfile { path: String, source: io::Error },
    #[error("cannot become a daemon: {0}")]
    Daemonize(nix::Error),
}

/// A locked pidfile holding our pid; removed when dropped.
pub struct Pidfile {
    path: PathBuf,
    _lock: Flock<File>,
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(err)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut f, _)) => {
                let mut pid = String::new();
                // Only for the message: an unreadable pidfile still means "running".
                let _ = f.read_to_string(&mut pid);
                return Err(ProcessError::AlreadyRunning {
                    pid: pid.trim().to_string(),
                    path: shown,
                });
            }
        };
        lock.set_len(0).map_err(err)?;
        lock.rewind().map_err(err)?;
        writeln!(lock, "{}", std::process::id()).map_err(err)?;
        lock.flush().map_err(err)?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Exiting: a pidfile left behind is harmless (the next start locks it anew).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Relative paths are resolved at start-up: a daemon's working directory becomes `/`.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A daemon's start: takes `pidfile` (if any) while still on the terminal, so a second
/// instance is refused where the administrator sees why; then, unless `foreground`,
/// detaches and takes it again (the parent's copy is released, since dropping it in
/// the exiting parent would remove the file). Call before any thread is started.
pub fn start_daemon(
    pidfile: Option<&Path>,
    foreground: bool,
) -> Result<Option<Pidfile>, ProcessError> {
    let lock = pidfile.map(Pidfile::acquire).transpose()?;
    if foreground {
        return Ok(lock);
    }
    drop(lock);
    daemonize()?;
    pidfile.map(Pidfile::acquire).transpose()
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
}
