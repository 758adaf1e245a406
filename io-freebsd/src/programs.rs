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

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hvguest_core::kvp::effect::IoError;
use hvguest_core::vss::effect::ExitStatus;
use hvguest_core::vss::hooks::HookEntry;
use nix::fcntl::OFlag;

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
    let start = Instant::now();
    let (read, write) = match pipe() {
        Ok(p) => p,
        Err(e) => return not_started_merged(e, start),
    };
    let second = match write.try_clone() {
        Ok(w) => w,
        Err(e) => return not_started_merged(errno_of(&e), start),
    };
    let spawned = spawn(argv, env_path, Stdio::from(write), Stdio::from(second));
    // The command (and with it our copies of the write end) is gone by now: the reader
    // sees the end of the pipe when the child and its descendants close it.
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return not_started_merged(e, start),
    };
    let (tx, rx) = mpsc::channel();
    let readers = usize::from(spawn_reader(File::from(read), 0, tx));
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
    let start = Instant::now();
    let mut child = match spawn(argv, env_path, Stdio::piped(), Stdio::piped()) {
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
        readers += usize::from(spawn_reader(out, 0, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers += usize::from(spawn_reader(err, 1, tx.clone()));
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
/// the descriptors handed to it.
fn spawn(argv: &[String], env_path: &str, stdout: Stdio, stderr: Stdio) -> Result<Child, IoError> {
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
    Command::new(program)
        .args(&argv[1..])
        .env_clear()
        .env("PATH", env_path)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| errno_of(&e))
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
                        let room = OUTPUT_LIMIT - kept.len();
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

/// The entries of a hook directory, for the core's hook rules (`core::vss::hooks`).
///
/// Symbolic links are followed, as `exec` would follow them (qemu-guest-agent users
/// link hooks into the directory): `regular_file`, `uid` and `mode` describe the file a
/// link points to, so a link to a root-owned, non-writable executable runs and a link
/// to anything else is skipped. A dangling link, or anything that is not a regular file
/// after following (directory, FIFO, device, socket), has `regular_file: false` (its
/// owner and mode are then the link's own). A name that is not UTF-8 cannot be run by
/// name; it is reported (lossily) with `regular_file: false`, so it is skipped and
/// logged. An entry that vanishes while we look is left out.
///
/// A missing directory has no hooks: `Ok(vec![])`. Any other error reading the
/// directory (permission, I/O) is returned.
pub fn list_dir_entries(dir: &Path) -> io::Result<Vec<HookEntry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry?;
        let raw = entry.file_name();
        let utf8 = raw.to_str().is_some();
        let name = raw.to_string_lossy().into_owned();
        let path = entry.path();
        let (meta, followed) = match std::fs::metadata(&path) {
            Ok(m) => (m, true),
            Err(_) => match std::fs::symlink_metadata(&path) {
                Ok(m) => (m, false),
                // Removed since read_dir listed it.
                Err(_) => continue,
            },
        };
        entries.push(HookEntry {
            name,
            regular_file: utf8 && followed && meta.file_type().is_file(),
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

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

    #[test]
    fn dir_listing() {
        use std::os::unix::fs::symlink;
        let dir = TempDir::new("hooks");
        let d = dir.path();
        std::fs::write(d.join("10-file"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(d.join("10-file"), std::fs::Permissions::from_mode(0o4750))
            .unwrap();
        std::fs::create_dir(d.join("20-dir")).unwrap();
        std::fs::set_permissions(d.join("20-dir"), std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(d.join("10-file"), d.join("30-link")).unwrap();
        symlink(d.join("20-dir"), d.join("40-link-to-dir")).unwrap();
        symlink(d.join("missing"), d.join("50-dangling")).unwrap();
        let uid = std::fs::metadata(d.join("10-file")).unwrap().uid();
        let got = list_dir_entries(d).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "10-file",
                "20-dir",
                "30-link",
                "40-link-to-dir",
                "50-dangling"
            ]
        );
        let e = |name: &str, regular_file: bool, mode: u32| HookEntry {
            name: name.into(),
            regular_file,
            uid,
            mode,
        };
        assert_eq!(got[0], e("10-file", true, 0o4750));
        assert_eq!(got[1], e("20-dir", false, 0o755));
        // A link describes its target.
        assert_eq!(got[2], e("30-link", true, 0o4750));
        assert_eq!(got[3], e("40-link-to-dir", false, 0o755));
        assert!(!got[4].regular_file);
        assert_eq!(got[4].name, "50-dangling");

        assert_eq!(list_dir_entries(&d.join("missing")).unwrap(), vec![]);
        // A file where the directory should be is an error, not "no hooks".
        assert!(list_dir_entries(&d.join("10-file")).is_err());
        let empty = TempDir::new("empty");
        assert_eq!(list_dir_entries(empty.path()).unwrap(), vec![]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn non_utf8_names_are_not_runnable() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = TempDir::new("utf8");
        let name = OsStr::from_bytes(b"10-\xff");
        std::fs::write(dir.path().join(name), "").unwrap();
        let got = list_dir_entries(dir.path()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "10-\u{fffd}");
        assert!(!got[0].regular_file);
    }
}
