//! Running other programs: VSS hooks, the application helper's command, `zpool sync`,
//! `zfs snapshot` and the SET_IP_INFO script, each with a deadline.
//!
//! The core decides what runs and for how long; this module only executes it. Every
//! program runs the same way:
//!
//! * directly, with `execve`: `argv[0]` is the program and every other element one
//!   argument, exactly as given. No shell sees them, so metacharacters (`;`, `$(..)`,
//!   quotes, `*`) arrive unchanged. A bare name (no `/`) is looked up in `env_path`,
//!   the child's own `PATH`; a relative path with a `/` is made absolute against our
//!   working directory first, since the child starts in `/`;
//! * stdin `/dev/null`; stdout and stderr to pipes drained by reader threads, which keep
//!   the first [`OUTPUT_LIMIT`] bytes and discard the rest, so a chatty program never
//!   blocks on a full pipe;
//! * working directory `/` (it keeps no file system busy and cannot depend on where we
//!   were started);
//! * the environment cleared except `PATH=<env_path>`;
//! * in a process group of its own (`setpgid(0, 0)` in the child), so that at the
//!   deadline the whole group, including anything it started in the background, gets
//!   `SIGKILL`; the result is then [`ExitStatus::TimedOut`];
//! * no other descriptor of ours: Rust opens every descriptor with `O_CLOEXEC` (files,
//!   sockets, pipes, including the ones this module creates), so `exec` closes all of
//!   them except the child's 0, 1 and 2. A device or pool file descriptor never leaks
//!   into a hook.
//!
//! The exit is reported as [`ExitStatus::Code`] (it called `exit`),
//! [`ExitStatus::Signal`] (killed by a signal it did not get from us), `TimedOut` (killed
//! by us at the deadline), or [`ExitStatus::NotStarted`] with the errno of the failed
//! `exec` (`ENOENT`, 2, for a missing program; `EACCES` for one not executable).
//!
//! Once the program itself has exited, we wait at most [`OUTPUT_GRACE`] for its output
//! pipes to close: a process it left running in the background (a daemon a thaw hook
//! restarted) may keep them open; it is not killed, and its later output is dropped.
//!
//! # Hooks
//!
//! A hook runs as root, so nobody else may choose what runs (issue 11: a hook swapped
//! between the check and the exec ran as root):
//!
//! * the hook directory and every directory above it, from `/`, are opened one by one
//!   without following a symbolic link, and each must be owned by root (or by our
//!   effective user) and not writable by group or others; a parent may be writable by
//!   all if its sticky bit is set (`/tmp`), since then nobody else can rename or remove
//!   what root created in it. Anything else refuses the whole directory: no hook runs
//!   and the error names the directory at fault ([`HookError`]);
//! * the directory is listed, and each entry looked at, through that checked
//!   descriptor; an entry must be a regular file in the directory itself (a symbolic
//!   link is not followed, and is skipped with a note);
//! * to run a hook, the chain is checked again, the entry opened without following a
//!   link, and what was opened is judged by the core's rules (`hooks::judge`: a regular
//!   executable owned by root, not writable by group or others). A binary then runs from
//!   that very descriptor (`fexecve`), so what was judged is what runs. A script
//!   (`#!`) runs by its path instead, because its interpreter must open it by a name and
//!   the descriptor's name (`/dev/fd/N`) would need fdescfs(5) on FreeBSD and show as the
//!   script's `$0`; right before the exec the path is checked to still name the file
//!   judged. Only root can change what that path names, since every directory on it
//!   was checked.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;

use hvguest_core::kvp::effect::IoError;
use hvguest_core::vss::effect::ExitStatus;
use hvguest_core::vss::hooks::{self, HookEntry, Skip};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// How much output is kept: of stdout and stderr together for [`run`], of each for
/// [`run_split`].
pub const OUTPUT_LIMIT: usize = 4096;
/// How long to wait for the output pipes to close once the program has exited: inside
/// the slack the core leaves past a program's deadline.
pub use hvguest_core::limits::PROGRAM_OUTPUT_GRACE as OUTPUT_GRACE;
/// How often the child is polled while it runs.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;

/// How a program ran, with its output (stdout and stderr through one pipe, in the order
/// it wrote them, as `2>&1` would give).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    pub status: ExitStatus,
    /// The first [`OUTPUT_LIMIT`] bytes it wrote to stdout or stderr.
    pub output: Vec<u8>,
    /// From the start to the moment it was reaped (not counting the output grace).
    pub took: Duration,
}

/// How a program ran, with stdout and stderr kept apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RanSplit {
    pub status: ExitStatus,
    /// The first [`OUTPUT_LIMIT`] bytes of stdout.
    pub stdout: Vec<u8>,
    /// The first [`OUTPUT_LIMIT`] bytes of stderr.
    pub stderr: Vec<u8>,
    pub took: Duration,
}

/// Runs `argv` as described in the module documentation, waiting at most `deadline`;
/// stdout and stderr share one pipe and one capture.
pub fn run(argv: &[String], deadline: Duration, env_path: &str) -> Ran {
    run_image(argv, deadline, env_path, None)
}

/// [`run`], executing `image` instead of looking `argv[0]` up when given.
fn run_image(argv: &[String], deadline: Duration, env_path: &str, image: Option<Image>) -> Ran {
    let start = Instant::now();
    let (read, write) = match pipe() {
        Ok(p) => p,
        Err(e) => return not_started_merged(e, start),
    };
    let second = match write.try_clone() {
        Ok(w) => w,
        Err(e) => return not_started_merged(errno_of(&e), start),
    };
    let spawned = spawn(
        argv,
        env_path,
        Stdio::from(write),
        Stdio::from(second),
        image,
    );
    // The command (and with it our copies of the write end) is gone by now: the reader
    // sees the end of the pipe when the child and its descendants close it.
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return not_started_merged(e, start),
    };
    let (tx, rx) = mpsc::channel();
    let readers = usize::from(spawn_reader(File::from(read), 0, OUTPUT_LIMIT, tx));
    let status = wait_until(&mut child, start + deadline);
    let took = start.elapsed();
    let [output, _] = collect(&rx, readers);
    Ran {
        status,
        output,
        took,
    }
}

/// [`run`], with stdout and stderr captured separately (each up to [`OUTPUT_LIMIT`]).
pub fn run_split(argv: &[String], deadline: Duration, env_path: &str) -> RanSplit {
    run_split_keeping(argv, deadline, env_path, OUTPUT_LIMIT)
}

/// The most of `zfs list`'s output a prune reads: its longest listing of names (a ZFS
/// name is at most 255 bytes, plus the line break).
pub const SNAPSHOT_LISTING_LIMIT: usize = hvguest_core::limits::VSS_MAX_LISTED_SNAPSHOTS * 256;

/// `zfs list -H -o name -t snapshot -d 1 POOL` (the pool's own snapshots, one name a
/// line, no header), up to [`SNAPSHOT_LISTING_LIMIT`] bytes of it read.
pub fn list_snapshots(zfs: &str, pool: &str, deadline: Duration, env_path: &str) -> RanSplit {
    let argv: Vec<String> = [
        zfs, "list", "-H", "-o", "name", "-t", "snapshot", "-d", "1", pool,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    run_split_keeping(&argv, deadline, env_path, SNAPSHOT_LISTING_LIMIT)
}

/// The names in `zfs list` output: whole lines only (a listing cut at the limit may end
/// in part of a name, which could spell another snapshot's name), at most
/// `VSS_MAX_LISTED_SNAPSHOTS`, lines that are not UTF-8 left out (never ours).
pub fn snapshot_names(stdout: &[u8]) -> Vec<String> {
    let mut lines: Vec<&[u8]> = stdout.split(|b| *b == b'\n').collect();
    // What follows the last line break is an unfinished line (or nothing).
    lines.pop();
    lines
        .into_iter()
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| !l.is_empty())
        .take(hvguest_core::limits::VSS_MAX_LISTED_SNAPSHOTS)
        .map(str::to_string)
        .collect()
}

fn run_split_keeping(
    argv: &[String],
    deadline: Duration,
    env_path: &str,
    limit: usize,
) -> RanSplit {
    let start = Instant::now();
    let mut child = match spawn(argv, env_path, Stdio::piped(), Stdio::piped(), None) {
        Ok(c) => c,
        Err(e) => {
            return RanSplit {
                status: ExitStatus::NotStarted(e),
                stdout: Vec::new(),
                stderr: Vec::new(),
                took: start.elapsed(),
            }
        }
    };
    let (tx, rx) = mpsc::channel();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        readers += usize::from(spawn_reader(out, 0, limit, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers += usize::from(spawn_reader(err, 1, OUTPUT_LIMIT, tx.clone()));
    }
    drop(tx);
    let status = wait_until(&mut child, start + deadline);
    let took = start.elapsed();
    let [stdout, stderr] = collect(&rx, readers);
    RanSplit {
        status,
        stdout,
        stderr,
        took,
    }
}

fn not_started_merged(e: IoError, start: Instant) -> Ran {
    Ran {
        status: ExitStatus::NotStarted(e),
        output: Vec::new(),
        took: start.elapsed(),
    }
}

/// A pipe whose both ends are close-on-exec (the child gets its write end as 1 and 2
/// through `dup2`, which clears the flag on the copies only).
fn pipe() -> Result<(OwnedFd, OwnedFd), IoError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| IoError(e as i32))
}

fn errno_of(e: &io::Error) -> IoError {
    IoError(match e.kind() {
        io::ErrorKind::NotFound => ENOENT,
        _ => e.raw_os_error().unwrap_or(EINVAL),
    })
}

/// Starts the child; the `Command` is dropped before returning, closing our copies of
/// the descriptors handed to it. With an `image`, the child executes that instead, as
/// its last step before the exec.
fn spawn(
    argv: &[String],
    env_path: &str,
    stdout: Stdio,
    stderr: Stdio,
    image: Option<Image>,
) -> Result<Child, IoError> {
    let Some(program) = argv.first() else {
        return Err(IoError(EINVAL));
    };
    let program = Path::new(program);
    // The child starts in `/`: a relative path must be made absolute first. A bare name
    // is left alone: it is looked up in the child's PATH.
    let absolute: PathBuf;
    let program = if program.is_relative() && program.components().count() > 1 {
        match std::env::current_dir() {
            Ok(d) => {
                absolute = d.join(program);
                &absolute
            }
            Err(_) => program,
        }
    } else {
        program
    };
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", env_path)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if let Some(image) = image {
        // SAFETY: the closure runs in the child between fork and exec; `Image::exec`
        // only makes async-signal-safe calls (fexecve, lstat) on data prepared before
        // the fork, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || image.exec());
        }
    }
    cmd.spawn().map_err(|e| errno_of(&e))
}

/// Waits for the child until `end`; at `end` kills its process group and reaps it.
fn wait_until(child: &mut Child, end: Instant) -> ExitStatus {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return exit_status(status),
            Ok(None) => {}
            Err(e) => {
                // Cannot happen for our own unreaped child; if it does, do not leave
                // the program running.
                kill_group(child);
                return match child.wait() {
                    Ok(status) => exit_status(status),
                    Err(_) => ExitStatus::NotStarted(errno_of(&e)),
                };
            }
        }
        let now = Instant::now();
        if now >= end {
            kill_group(child);
            // Reaping after SIGKILL: it can fail only if already reaped, and the answer
            // is TimedOut either way.
            let _ = child.wait();
            return ExitStatus::TimedOut;
        }
        std::thread::sleep(POLL_INTERVAL.min(end - now));
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        // Neither exited nor killed: `wait` never reports that (stops are not asked for).
        (None, None) => ExitStatus::Code(-1),
    }
}

/// `SIGKILL` to the child's process group (it leads its own group and is not reaped
/// yet, so the group id cannot have been reused); the child alone if that fails.
fn kill_group(child: &mut Child) {
    let killed = i32::try_from(child.id()).is_ok_and(|pid| {
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
    });
    if !killed {
        // Fails only if the child has already exited, which is what we want.
        let _ = child.kill();
    }
}

/// Reads `pipe` to its end in a thread, keeping the first [`OUTPUT_LIMIT`] bytes and
/// draining the rest, then sends them tagged `which`. False if the thread could not be
/// started (the pipe is then closed: the program gets EPIPE if it writes).
fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    which: usize,
    limit: usize,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
) -> bool {
    std::thread::Builder::new()
        .name("program output".into())
        .spawn(move || {
            let mut kept = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = limit - kept.len();
                        kept.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            // The receiver gives up after its grace; output that comes later is dropped.
            let _ = tx.send((which, kept));
        })
        .is_ok()
}

/// What the readers captured, indexed by their tag; waits at most [`OUTPUT_GRACE`].
fn collect(rx: &mpsc::Receiver<(usize, Vec<u8>)>, readers: usize) -> [Vec<u8>; 2] {
    let mut got = [Vec::new(), Vec::new()];
    let grace_end = Instant::now() + OUTPUT_GRACE;
    for _ in 0..readers {
        let left = grace_end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((which, bytes)) => got[which] = bytes,
            // A reader still blocked (a background process holds the pipe) finishes on
            // its own when the pipe closes; its output is dropped.
            Err(_) => break,
        }
    }
    got
}

/// Why a hook directory is not used, or a hook not run.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{0} is not an absolute path of plain names (no `.` or `..`)")]
    NotAbsolute(String),
    #[error("{0} is a symbolic link; name the directory it points to instead")]
    Link(String),
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is owned by uid {uid}, not by root")]
    Owner { path: String, uid: u32 },
    #[error("{path} is writable by group or others (mode {mode:04o})")]
    Writable { path: String, mode: u32 },
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("hook {0} is a symbolic link; a hook must be a regular file in the hook directory")]
    HookLink(String),
    #[error("hook {path} is not run: {why} (it changed since the directory was listed)")]
    Refused { path: String, why: Skip },
    #[error("hook {path}: {source}")]
    Hook {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl HookError {
    /// What the core is told: a refusal is EPERM (`HOOK_REFUSED`), anything the system
    /// said keeps its errno.
    pub fn errno(&self) -> IoError {
        match self {
            HookError::Open { source, .. } | HookError::Hook { source, .. } => errno_of(source),
            _ => hvguest_core::vss::effect::HOOK_REFUSED,
        }
    }
}

fn nix_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The permission bits (`st_mode` is 16 bits on FreeBSD, 32 on Linux).
#[allow(clippy::useless_conversion)]
fn mode_bits(st: &FileStat) -> u32 {
    u32::from(st.st_mode) & 0o7777
}

/// Device and inode, which identify a file (their widths differ between systems).
#[allow(clippy::unnecessary_cast)]
fn dev_ino(st: &FileStat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// Who may own a directory on the way to the hooks, or a hook: root, or ourselves.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Checks one directory of the chain (`last`: the hook directory itself).
fn check_dir(path: &Path, st: &FileStat, last: bool) -> Result<(), HookError> {
    let shown = || path.display().to_string();
    if SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return Err(HookError::NotADirectory(shown()));
    }
    if !trusted_owner(st.st_uid) {
        return Err(HookError::Owner {
            path: shown(),
            uid: st.st_uid,
        });
    }
    let mode = mode_bits(st);
    // A sticky directory (`/tmp`) lets others add entries but not rename or remove ours.
    let sticky_parent = !last && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_parent {
        return Err(HookError::Writable {
            path: shown(),
            mode,
        });
    }
    Ok(())
}

/// Opens the hook directory through a checked chain of directories (module
/// documentation). `Ok(None)`: it, or a directory above it, does not exist.
pub fn open_hook_dir(dir: &Path) -> Result<Option<OwnedFd>, HookError> {
    use std::path::Component;
    let shown = || dir.display().to_string();
    if !dir.is_absolute() {
        return Err(HookError::NotAbsolute(shown()));
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root = Path::new("/");
    let mut fd = nix::fcntl::open(root, flags, Mode::empty()).map_err(|e| HookError::Open {
        path: "/".into(),
        source: nix_io(e),
    })?;
    let names: Vec<&OsStr> = dir
        .components()
        .filter_map(|c| match c {
            Component::RootDir => None,
            Component::Normal(n) => Some(Ok(n)),
            _ => Some(Err(())),
        })
        .collect::<Result<_, ()>>()
        .map_err(|()| HookError::NotAbsolute(shown()))?;
    let stat = |fd: &OwnedFd, at: &Path, last: bool| {
        let st = nix::sys::stat::fstat(fd).map_err(|e| HookError::Open {
            path: at.display().to_string(),
            source: nix_io(e),
        })?;
        check_dir(at, &st, last)
    };
    stat(&fd, root, names.is_empty())?;
    let mut at = root.to_path_buf();
    for (i, name) in names.iter().enumerate() {
        at.push(name);
        let next = match nix::fcntl::openat(&fd, *name, flags, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => {
                // A link refused by O_NOFOLLOW (ELOOP on Linux, EMLINK on FreeBSD), or
                // whatever else: look without following to say which.
                let link = nix::sys::stat::fstatat(&fd, *name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| {
                        SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT == SFlag::S_IFLNK
                    });
                return Err(if link {
                    HookError::Link(at.display().to_string())
                } else if e == Errno::ENOTDIR {
                    HookError::NotADirectory(at.display().to_string())
                } else {
                    HookError::Open {
                        path: at.display().to_string(),
                        source: nix_io(e),
                    }
                });
            }
        };
        stat(&next, &at, i + 1 == names.len())?;
        fd = next;
    }
    Ok(Some(fd))
}

/// A hook directory's entries for the core's hook rules, and notes worth a log line.
#[derive(Debug, Default)]
pub struct HookListing {
    pub entries: Vec<HookEntry>,
    /// Entries skipped for a reason the core cannot see (a symbolic link), in words.
    pub notes: Vec<String>,
}

/// The entries of a hook directory (opened with [`open_hook_dir`]), for the core's hook
/// rules (`core::vss::hooks`), in name order.
///
/// Each entry is looked at without following a link: `regular_file`, `uid` and `mode`
/// are the entry's own. A symbolic link is not a regular file (it is skipped, with a
/// note saying why). A name that is not UTF-8 cannot be named to the core; it is
/// reported (lossily) with `regular_file: false`, so it is skipped and logged. An entry
/// that vanishes while we look is left out. A missing directory has no hooks.
pub fn list_dir_entries(dir: &Path) -> Result<HookListing, HookError> {
    let Some(fd) = open_hook_dir(dir)? else {
        return Ok(HookListing::default());
    };
    let failed = |e: Errno| HookError::Open {
        path: dir.display().to_string(),
        source: nix_io(e),
    };
    let listed = fd.try_clone().map_err(|source| HookError::Open {
        path: dir.display().to_string(),
        source,
    })?;
    let mut reader = nix::dir::Dir::from_fd(listed).map_err(failed)?;
    let mut out = HookListing::default();
    for entry in reader.iter() {
        let entry = entry.map_err(failed)?;
        let raw = entry.file_name();
        let bytes = raw.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let utf8 = std::str::from_utf8(bytes).is_ok();
        let name = String::from_utf8_lossy(bytes).into_owned();
        let st = match nix::sys::stat::fstatat(&fd, raw, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed since it was listed.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(failed(e)),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            out.notes.push(format!(
                "{} is a symbolic link; hooks must be regular files in the hook directory \
                 itself, so it is not run",
                dir.join(OsStr::from_bytes(bytes)).display()
            ));
        }
        out.entries.push(HookEntry {
            name,
            regular_file: utf8 && kind == SFlag::S_IFREG,
            uid: st.st_uid,
            mode: mode_bits(&st),
        });
    }
    out.entries.sort_by(|a, b| a.name.cmp(&b.name));
    out.notes.sort();
    Ok(out)
}

/// What the child executes instead of looking `argv[0]` up: a judged hook, from its
/// descriptor (a binary) or by its checked path (a script).
struct Image {
    fd: OwnedFd,
    script: bool,
    /// The path, for a script; compared with the judged file right before the exec.
    path: CString,
    dev: u64,
    ino: u64,
    /// Owners of the strings `argv` and `envp` point into.
    _strings: Vec<CString>,
    argv: Vec<*const nix::libc::c_char>,
    envp: Vec<*const nix::libc::c_char>,
}

// SAFETY: the raw pointers point into `_strings`, which the same value owns and never
// changes (a CString's buffer does not move with it); they are read only, by the child
// after fork.
unsafe impl Send for Image {}
// SAFETY: as above: nothing is ever written through them.
unsafe impl Sync for Image {}

impl Image {
    fn new(
        fd: OwnedFd,
        st: &FileStat,
        script: bool,
        path: &Path,
        argv: &[String],
        env_path: &str,
    ) -> Result<Image, IoError> {
        let cstr = |s: &[u8]| CString::new(s).map_err(|_| IoError(EINVAL));
        let path = cstr(path.as_os_str().as_bytes())?;
        let mut strings = Vec::new();
        for a in argv {
            strings.push(cstr(a.as_bytes())?);
        }
        let env = cstr(format!("PATH={env_path}").as_bytes())?;
        let mut argv: Vec<*const nix::libc::c_char> = strings.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp = vec![env.as_ptr(), std::ptr::null()];
        strings.push(env);
        Ok(Image {
            fd,
            script,
            path,
            dev: dev_ino(st).0,
            ino: dev_ino(st).1,
            _strings: strings,
            argv,
            envp,
        })
    }

    /// In the child, right before the exec: a binary is executed from its descriptor
    /// (this does not return unless that fails); for a script, checks that its path
    /// still names the file judged, and lets the exec of the path go ahead.
    fn exec(&self) -> io::Result<()> {
        if self.script {
            let mut st = std::mem::MaybeUninit::<nix::libc::stat>::uninit();
            // SAFETY: lstat fills `st` for a NUL-terminated path; checked before use.
            if unsafe { nix::libc::lstat(self.path.as_ptr(), st.as_mut_ptr()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: lstat succeeded, so `st` is initialised.
            let st = unsafe { st.assume_init() };
            let same = dev_ino(&st) == (self.dev, self.ino);
            if !same || st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
                return Err(io::Error::from_raw_os_error(nix::libc::ESTALE));
            }
            return Ok(());
        }
        // SAFETY: both arrays are NULL-terminated and point into `_strings`.
        unsafe { nix::libc::fexecve(self.fd.as_raw_fd(), self.argv.as_ptr(), self.envp.as_ptr()) };
        Err(io::Error::last_os_error())
    }
}

/// Runs the hook `name` of `dir` with `arg`, as [`run`] runs a program, after checking
/// the directory again and judging what is opened (module documentation). `Err`: the
/// hook was not started, and why.
pub fn run_hook(
    dir: &Path,
    name: &str,
    arg: &str,
    deadline: Duration,
    env_path: &str,
) -> Result<Ran, HookError> {
    let (argv, image) = open_hook(dir, name, arg, env_path)?;
    Ok(run_image(&argv, deadline, env_path, Some(image)))
}

/// Checks the chain, opens the hook without following a link, judges what was opened:
/// the argv to run it with (its path, then `arg`) and what the child will execute.
fn open_hook(
    dir: &Path,
    name: &str,
    arg: &str,
    env_path: &str,
) -> Result<(Vec<String>, Image), HookError> {
    let path = dir.join(name);
    let shown = || path.display().to_string();
    let hook_io = |e: Errno| HookError::Hook {
        path: shown(),
        source: nix_io(e),
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(HookError::Refused {
            path: shown(),
            why: Skip::NotAFile,
        });
    }
    let Some(dirfd) = open_hook_dir(dir)? else {
        return Err(hook_io(Errno::ENOENT));
    };
    // O_NONBLOCK: a FIFO put there must not block us; it is refused below anyway.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let fd = match nix::fcntl::openat(&dirfd, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            let link = nix::sys::stat::fstatat(&dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| {
                    SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT == SFlag::S_IFLNK
                });
            return Err(if link {
                HookError::HookLink(shown())
            } else {
                hook_io(e)
            });
        }
    };
    let st = nix::sys::stat::fstat(&fd).map_err(hook_io)?;
    let entry = HookEntry {
        name: name.to_string(),
        regular_file: SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT == SFlag::S_IFREG,
        uid: st.st_uid,
        mode: mode_bits(&st),
    };
    hooks::judge(&entry).map_err(|why| HookError::Refused { path: shown(), why })?;
    let mut magic = [0u8; 2];
    let n = nix::sys::uio::pread(fd.as_fd(), &mut magic, 0).map_err(hook_io)?;
    let script = n == 2 && magic == *b"#!";
    let argv = vec![shown(), arg.to_string()];
    let image =
        Image::new(fd, &st, script, &path, &argv, env_path).map_err(|e| HookError::Hook {
            path: shown(),
            source: io::Error::from_raw_os_error(e.0),
        })?;
    Ok((argv, image))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    #[test]
    fn snapshot_names_are_whole_lines_only() {
        assert_eq!(
            snapshot_names(b"zroot@a\nzroot@hvguest-12\n\nzroot@\xff\nzroot@hvguest-1"),
            vec!["zroot@a".to_string(), "zroot@hvguest-12".into()]
        );
        assert!(snapshot_names(b"").is_empty());
        let many = "p@x1\n".repeat(hvguest_core::limits::VSS_MAX_LISTED_SNAPSHOTS + 5);
        assert_eq!(
            snapshot_names(many.as_bytes()).len(),
            hvguest_core::limits::VSS_MAX_LISTED_SNAPSHOTS
        );
    }

    /// Held by every test in this crate that writes an executable and runs it: a file
    /// open for writing while another thread forks can make its exec fail with ETXTBSY.
    pub(crate) static SPAWN_LOCK: Mutex<()> = Mutex::new(());

    const PATH: &str = "/sbin:/bin:/usr/sbin:/usr/bin";

    /// A fresh directory for one test, removed when dropped (shared with the crate's
    /// other unit tests).
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("hvguest-unit-{}-{n}-{tag}", std::process::id()));
            // Test scratch space: it may not exist, and a leftover is harmless.
            let _ = std::fs::remove_dir_all(&dir);
            // A test that cannot make its directory cannot run at all.
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            // Test scratch space: it may not exist, and a leftover is harmless.
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    fn run_sh(script: &str, deadline: Duration) -> Ran {
        run(&sh(script), deadline, PATH)
    }

    #[test]
    fn exit_codes() {
        let r = run_sh("exit 0", Duration::from_secs(5));
        assert_eq!(r.status, ExitStatus::Code(0));
        assert!(r.status.success());
        assert!(r.output.is_empty());
        assert_eq!(
            run_sh("exit 3", Duration::from_secs(5)).status,
            ExitStatus::Code(3)
        );
        assert_eq!(
            run_sh("exit 255", Duration::from_secs(5)).status,
            ExitStatus::Code(255)
        );
        let r = run(&["false".into()], Duration::from_secs(5), PATH);
        assert_eq!(r.status, ExitStatus::Code(1));
        assert!(r.took < Duration::from_secs(5));
    }

    #[test]
    fn killed_by_a_signal() {
        assert_eq!(
            run_sh("kill -9 $$", Duration::from_secs(5)).status,
            ExitStatus::Signal(9)
        );
        assert_eq!(
            run_sh("kill -TERM $$", Duration::from_secs(5)).status,
            ExitStatus::Signal(15)
        );
    }

    #[cfg(target_os = "linux")]
    fn alive(pid: i32) -> bool {
        // Gone, or a zombie waiting for its (new) parent to reap it, counts as dead.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn alive(pid: i32) -> bool {
        // A zombie still accepts signal 0; good enough where there is no /proc: the
        // reaper (init) collects orphans quickly.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
    }

    #[test]
    fn killed_at_the_deadline_with_its_process_group() {
        let dir = TempDir::new("timeout");
        let pids = dir.path().join("pids");
        let script = format!(
            "sleep 30 &\necho \"$$ $!\" > '{}'\necho started\nwait\necho finished",
            pids.display()
        );
        let start = Instant::now();
        let r = run_sh(&script, Duration::from_millis(200));
        let elapsed = start.elapsed();
        assert_eq!(r.status, ExitStatus::TimedOut);
        assert!(r.took >= Duration::from_millis(200), "{:?}", r.took);
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
        assert_eq!(r.output, b"started\n");
        // The script and the sleep it started (same process group) are both gone.
        let text = std::fs::read_to_string(&pids).unwrap();
        let both: Vec<i32> = text
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(both.len(), 2);
        let until = Instant::now() + Duration::from_secs(1);
        while both.iter().any(|p| alive(*p)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!both.iter().any(|p| alive(*p)), "{both:?} still running");
    }

    #[test]
    fn sleep_killed_at_deadline() {
        let start = Instant::now();
        let r = run(
            &["sleep".into(), "10".into()],
            Duration::from_millis(200),
            PATH,
        );
        assert_eq!(r.status, ExitStatus::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn output_is_merged_bounded_and_drained() {
        let r = run_sh("echo one\necho two >&2\necho three", Duration::from_secs(5));
        assert_eq!(r.status, ExitStatus::Code(0));
        assert_eq!(r.output, b"one\ntwo\nthree\n");
        // 512 KiB on each stream: far more than a pipe holds, so the program would
        // block if the pipes were not drained.
        let r = run_sh(
            "dd if=/dev/zero bs=1024 count=512 2>/dev/null\n\
             dd if=/dev/zero bs=1024 count=512 >&2 2>/dev/null\nexit 0",
            Duration::from_secs(10),
        );
        assert_eq!(r.status, ExitStatus::Code(0));
        assert_eq!(r.output.len(), OUTPUT_LIMIT);
        let r = run_split(
            &sh("printf out; printf err >&2; dd if=/dev/zero bs=1024 count=64 2>/dev/null"),
            Duration::from_secs(5),
            PATH,
        );
        assert_eq!(r.status, ExitStatus::Code(0));
        assert_eq!(r.stdout.len(), OUTPUT_LIMIT);
        assert!(r.stdout.starts_with(b"out\0"));
        assert_eq!(r.stderr, b"err");
    }

    #[test]
    fn missing_program_is_not_started() {
        let r = run(
            &["/nonexistent/hvguest-no-such-program".into()],
            Duration::from_secs(1),
            PATH,
        );
        assert_eq!(r.status, ExitStatus::NotStarted(IoError(ENOENT)));
        assert!(r.output.is_empty());
        let r = run(
            &["hvguest-no-such-program".into()],
            Duration::from_secs(1),
            PATH,
        );
        assert_eq!(r.status, ExitStatus::NotStarted(IoError(ENOENT)));
        let r = run(&[], Duration::from_secs(1), PATH);
        assert_eq!(r.status, ExitStatus::NotStarted(IoError(EINVAL)));
        let r = run_split(
            &["hvguest-no-such-program".into()],
            Duration::from_secs(1),
            PATH,
        );
        assert_eq!(r.status, ExitStatus::NotStarted(IoError(ENOENT)));
    }

    #[test]
    fn not_executable_and_bare_names_use_env_path() {
        let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("lookup");
        let prog = dir.path().join("hvguest-test-prog");
        std::fs::write(&prog, "#!/bin/sh\necho found \"$@\"\n").unwrap();
        let r = run(&[prog.display().to_string()], Duration::from_secs(5), PATH);
        assert_eq!(r.status, ExitStatus::NotStarted(IoError(13)), "EACCES");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let argv = vec!["hvguest-test-prog".to_string(), "x".into()];
        let env_path = format!("/nonexistent:{}", dir.path().display());
        let r = run(&argv, Duration::from_secs(5), &env_path);
        assert_eq!(r.status, ExitStatus::Code(0));
        assert_eq!(r.output, b"found x\n");
        // Not in the child's PATH: not found, whatever our own PATH says.
        let r = run(&argv, Duration::from_secs(5), PATH);
        assert_eq!(r.status, ExitStatus::NotStarted(IoError(ENOENT)));
    }

    #[test]
    fn environment_is_only_path_and_cwd_is_root() {
        let r = run(
            &["/usr/bin/env".into()],
            Duration::from_secs(5),
            "/bin:/usr/bin",
        );
        assert_eq!(r.status, ExitStatus::Code(0));
        assert_eq!(r.output, b"PATH=/bin:/usr/bin\n");
        let r = run_sh("pwd; read x; echo \"read=$? x=$x\"", Duration::from_secs(5));
        assert_eq!(r.output, b"/\nread=1 x=\n");
    }

    #[test]
    fn own_process_group_and_no_inherited_descriptors() {
        use std::os::fd::AsRawFd;
        // `kill -0 -PGID` succeeds only if a process group with that id exists: the
        // shell's own pid is a group id only if it leads its group.
        let r = run_sh("kill -0 -$$ && echo leader", Duration::from_secs(5));
        assert_eq!(
            r.status,
            ExitStatus::Code(0),
            "{:?}",
            String::from_utf8_lossy(&r.output)
        );
        assert_eq!(r.output, b"leader\n");
        // A file we hold open is not visible in the child.
        let held = File::open("/dev/null").unwrap();
        let fd = held.as_raw_fd();
        let r = run_sh(
            &format!("if [ -e /dev/fd/{fd} ] || [ -e /proc/self/fd/{fd} ]; then echo leaked; else echo closed; fi"),
            Duration::from_secs(5),
        );
        assert_eq!(r.output, b"closed\n", "fd {fd}");
        drop(held);
    }

    #[test]
    fn argv_is_passed_verbatim() {
        let dir = TempDir::new("argv");
        let marker = dir.path().join("pwned");
        let nasty = [
            format!("; touch {}", marker.display()),
            "$(id) `id` $HOME".to_string(),
            "'\"* | & > <".to_string(),
            "with\nnewline".to_string(),
            String::new(),
            "  spaces  ".to_string(),
        ];
        let mut argv = sh("for a in \"$@\"; do printf '[%s]' \"$a\"; done");
        argv.push("argv0".into());
        argv.extend(nasty.iter().cloned());
        let r = run(&argv, Duration::from_secs(5), PATH);
        assert_eq!(r.status, ExitStatus::Code(0));
        let want: String = nasty.iter().map(|a| format!("[{a}]")).collect();
        assert_eq!(String::from_utf8(r.output).unwrap(), want);
        assert!(!marker.exists());
    }

    #[test]
    fn relative_program_path_is_resolved_against_our_directory() {
        // The child starts in `/`; `./x` must still mean ours.
        let cwd = std::env::current_dir().unwrap();
        let Some(rel) = pathdiff(&cwd, Path::new("/bin/sh")) else {
            return;
        };
        let r = run(
            &[rel.display().to_string(), "-c".into(), "exit 7".into()],
            Duration::from_secs(5),
            PATH,
        );
        assert_eq!(r.status, ExitStatus::Code(7), "{rel:?}");
    }

    /// `target` relative to `from` (both absolute), through `..` components.
    fn pathdiff(from: &Path, target: &Path) -> Option<PathBuf> {
        if !from.is_absolute() {
            return None;
        }
        let mut rel = PathBuf::from(".");
        for _ in from.components().skip(1) {
            rel.push("..");
        }
        Some(rel.join(target.strip_prefix("/").ok()?))
    }

    /// A directory with mode 0755 whatever the umask (the hook rules refuse 0775).
    fn private_dir(tag: &str) -> TempDir {
        let d = TempDir::new(tag);
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    const NOBODY: u32 = 65534;

    fn script(path: &Path, body: &str, mode: u32) {
        let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn dir_listing() {
        use std::os::unix::fs::{symlink, MetadataExt};
        let dir = private_dir("hooks");
        let d = dir.path();
        std::fs::write(d.join("10-file"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(d.join("10-file"), std::fs::Permissions::from_mode(0o4750))
            .unwrap();
        std::fs::create_dir(d.join("20-dir")).unwrap();
        std::fs::set_permissions(d.join("20-dir"), std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(d.join("10-file"), d.join("30-link")).unwrap();
        symlink(d.join("missing"), d.join("50-dangling")).unwrap();
        let uid = std::fs::metadata(d.join("10-file")).unwrap().uid();
        let got = list_dir_entries(d).unwrap();
        let names: Vec<&str> = got.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["10-file", "20-dir", "30-link", "50-dangling"]);
        assert_eq!(
            got.entries[0],
            HookEntry {
                name: "10-file".into(),
                regular_file: true,
                uid,
                mode: 0o4750
            }
        );
        assert!(!got.entries[1].regular_file);
        // A link is not followed: not a regular file, whatever it points to.
        assert!(!got.entries[2].regular_file);
        assert!(!got.entries[3].regular_file);
        assert_eq!(got.notes.len(), 2, "{:?}", got.notes);
        assert!(
            got.notes[0].contains("30-link is a symbolic link"),
            "{:?}",
            got.notes
        );

        let none = list_dir_entries(&d.join("missing")).unwrap();
        assert!(none.entries.is_empty());
        // A file where the directory should be is an error, not "no hooks".
        assert!(matches!(
            list_dir_entries(&d.join("10-file")),
            Err(HookError::NotADirectory(_))
        ));
        let empty = private_dir("empty");
        assert!(list_dir_entries(empty.path()).unwrap().entries.is_empty());
    }

    /// Issue 11, Low 5: only a directory nobody else can change may hold hooks.
    #[test]
    fn unsafe_hook_directories_are_refused() {
        use std::os::unix::fs::symlink;
        let dir = private_dir("chain");
        let d = dir.path();
        let hooks = d.join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&hooks, 0o755);
        assert!(open_hook_dir(&hooks).unwrap().is_some());
        // The hook directory itself writable by others, even with the sticky bit.
        for m in [0o775, 0o757, 0o1777] {
            mode(&hooks, m);
            let e = open_hook_dir(&hooks).unwrap_err();
            assert!(
                matches!(&e, HookError::Writable { path, .. } if path == &hooks.display().to_string()),
                "{m:o}: {e}"
            );
            assert!(
                e.to_string().contains("is writable by group or others"),
                "{e}"
            );
        }
        mode(&hooks, 0o755);
        // A parent writable by others: refused, unless sticky (as /tmp).
        mode(d, 0o777);
        let e = open_hook_dir(&hooks).unwrap_err();
        assert!(
            matches!(&e, HookError::Writable { path, .. } if path == &d.display().to_string()),
            "{e}"
        );
        mode(d, 0o1777);
        assert!(open_hook_dir(&hooks).unwrap().is_some());
        mode(d, 0o755);
        // A symbolic link on the way.
        symlink(&hooks, d.join("link")).unwrap();
        assert!(matches!(
            open_hook_dir(&d.join("link")),
            Err(HookError::Link(p)) if p.ends_with("/link")
        ));
        assert!(matches!(
            open_hook_dir(&d.join("link").join("x")),
            Err(HookError::Link(_))
        ));
        assert!(matches!(
            open_hook_dir(Path::new("hooks.d")),
            Err(HookError::NotAbsolute(_))
        ));
        assert!(matches!(
            open_hook_dir(&hooks.join("..").join("hooks")),
            Err(HookError::NotAbsolute(_))
        ));
        if root() {
            std::os::unix::fs::chown(&hooks, Some(NOBODY), None).unwrap();
            assert!(matches!(
                open_hook_dir(&hooks),
                Err(HookError::Owner { uid: NOBODY, .. })
            ));
        }
    }

    /// A binary hook runs from the descriptor that was judged; a script by its path,
    /// checked to still be the file judged.
    #[test]
    fn hooks_run_what_was_judged() {
        if !root() {
            eprintln!("hooks_run_what_was_judged: skipped: hooks must be owned by root");
            return;
        }
        let dir = private_dir("judged");
        let d = dir.path();
        // A binary: a copy of echo.
        let echo = ["/bin/echo", "/usr/bin/echo"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("an echo binary");
        {
            let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            std::fs::copy(echo, d.join("10-bin")).unwrap();
            std::fs::set_permissions(d.join("10-bin"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let ran = run_hook(d, "10-bin", "freeze", Duration::from_secs(5), PATH).unwrap();
        assert_eq!(ran.status, ExitStatus::Code(0));
        assert_eq!(ran.output, b"freeze\n");
        // Swapped for another file after the judgement: what was judged still runs.
        let (argv, image) = open_hook(d, "10-bin", "freeze", PATH).unwrap();
        script(&d.join("swap"), "echo swapped", 0o755);
        std::fs::rename(d.join("swap"), d.join("10-bin")).unwrap();
        let ran = run_image(&argv, Duration::from_secs(5), PATH, Some(image));
        assert_eq!(ran.output, b"freeze\n");
        // A script runs by its path ($0 is the path).
        script(&d.join("20-sh"), "echo \"$0 $1\"", 0o755);
        let ran = run_hook(d, "20-sh", "thaw", Duration::from_secs(5), PATH).unwrap();
        assert_eq!(ran.status, ExitStatus::Code(0));
        assert_eq!(
            String::from_utf8(ran.output).unwrap(),
            format!("{} thaw\n", d.join("20-sh").display())
        );
        // ...and not if its path names another file by the time it is run.
        let (argv, image) = open_hook(d, "20-sh", "thaw", PATH).unwrap();
        script(&d.join("swap"), "echo swapped", 0o755);
        std::fs::rename(d.join("swap"), d.join("20-sh")).unwrap();
        let ran = run_image(&argv, Duration::from_secs(5), PATH, Some(image));
        assert_eq!(
            ran.status,
            ExitStatus::NotStarted(IoError(nix::libc::ESTALE))
        );
        assert!(ran.output.is_empty());
    }

    #[test]
    fn hooks_that_fail_the_rules_are_refused_when_run() {
        use std::os::unix::fs::symlink;
        if !root() {
            eprintln!("hooks_that_fail_the_rules...: skipped: hooks must be owned by root");
            return;
        }
        let dir = private_dir("refused");
        let d = dir.path();
        script(&d.join("10-nobody"), "exit 0", 0o755);
        std::os::unix::fs::chown(d.join("10-nobody"), Some(NOBODY), None).unwrap();
        script(&d.join("20-open"), "exit 0", 0o775);
        script(&d.join("30-target"), "exit 0", 0o755);
        symlink(d.join("30-target"), d.join("40-link")).unwrap();
        let run = |name: &str| run_hook(d, name, "freeze", Duration::from_secs(5), PATH);
        assert!(matches!(
            run("10-nobody"),
            Err(HookError::Refused {
                why: Skip::NotOwnedByRoot,
                ..
            })
        ));
        assert!(matches!(
            run("20-open"),
            Err(HookError::Refused {
                why: Skip::WritableByOthers,
                ..
            })
        ));
        let e = run("40-link").unwrap_err();
        assert!(matches!(e, HookError::HookLink(_)), "{e}");
        assert_eq!(e.errno(), hvguest_core::vss::effect::HOOK_REFUSED);
        assert!(matches!(run("50-missing"), Err(HookError::Hook { .. })));
        assert!(matches!(run("../x"), Err(HookError::Refused { .. })));
        assert_eq!(run("30-target").unwrap().status, ExitStatus::Code(0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn non_utf8_names_are_not_runnable() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = private_dir("utf8");
        let name = OsStr::from_bytes(b"10-\xff");
        std::fs::write(dir.path().join(name), "").unwrap();
        let got = list_dir_entries(dir.path()).unwrap().entries;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "10-\u{fffd}");
        assert!(!got[0].regular_file);
    }
}
