//! Issue 15: the real `hv_vss_daemon` freezing real file systems on Linux's kernel.
//!
//! Each test makes its own loop-mounted file systems (ext4 always; xfs and btrfs where
//! their mkfs is installed; vfat for the one that cannot freeze) under a directory of
//! its own, and runs the daemon with `--only-under` that directory, so the daemon sees
//! no other mount and its freezer refuses any other. The host is the emulated Linux
//! VSS device (`hvguest_sim::linux_vss_emulator`). Nothing else on the machine is
//! frozen, and whatever a test froze is thawed and unmounted when it ends, even when it
//! fails.
//!
//! Needs root, loop devices and `mkfs.ext4`; without them each test says why it is
//! skipped and passes. The times measured are printed (`--nocapture`).

#![cfg(target_os = "linux")]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use hvguest_sim::linux_vss_emulator::{EmulatedLinuxVss, HostOp};

/// How long a writer must stay blocked for the test to call it blocked.
const BLOCKED: Duration = Duration::from_millis(1500);
/// How long anything that should happen promptly may take.
const SOON: Duration = Duration::from_secs(10);

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this machine cannot run these tests, if it cannot.
fn unsupported() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: loop mounts and FIFREEZE need root".into());
    }
    for tool in ["mkfs.ext4", "mount", "umount", "fsfreeze"] {
        if !have(tool) {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control: no loop devices here".into());
    }
    None
}

macro_rules! skip_if_unsupported {
    ($name:expr) => {
        if let Some(why) = unsupported() {
            eprintln!("{}: skipped: {why}", $name);
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A directory of loop-mounted file systems, all made by this test.
struct Scratch {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("hvguest-freeze-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnt")).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        Scratch {
            dir,
            mounts: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes a `size_mb` image with `mkfs` and loop-mounts it at `mnt/<name>`;
    /// `Err` when that file system cannot be made here.
    fn mount(&mut self, name: &str, size_mb: u64, mkfs: &[&str]) -> Result<PathBuf, String> {
        if !have(mkfs[0]) {
            return Err(format!("{} is not installed", mkfs[0]));
        }
        let image = self.path(&format!("{name}.img"));
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(size_mb << 20).map_err(|e| e.to_string())?;
        drop(f);
        let image_s = image.display().to_string();
        let mut args: Vec<&str> = mkfs[1..].to_vec();
        args.push(&image_s);
        run(mkfs[0], &args)?;
        let at = self.path("mnt").join(name);
        std::fs::create_dir_all(&at).map_err(|e| e.to_string())?;
        run(
            "mount",
            &["-o", "loop", &image_s, &at.display().to_string()],
        )?;
        self.mounts.push(at.clone());
        Ok(at)
    }

    /// A tmpfs at `mnt/<name>`.
    fn tmpfs(&mut self, name: &str) -> PathBuf {
        let at = self.path("mnt").join(name);
        std::fs::create_dir_all(&at).unwrap();
        run(
            "mount",
            &["-t", "tmpfs", "tmpfs", &at.display().to_string()],
        )
        .unwrap();
        self.mounts.push(at.clone());
        at
    }

    fn ext4(&mut self) -> PathBuf {
        self.mount("ext4", 64, &["mkfs.ext4", "-q", "-F"])
            .unwrap_or_else(|e| panic!("making the ext4 mount: {e}"))
    }

    /// xfs and btrfs where they can be made, each with its name.
    fn optional(&mut self) -> Vec<(&'static str, PathBuf)> {
        let mut out = Vec::new();
        for (name, size, mkfs) in [
            ("xfs", 320, &["mkfs.xfs", "-q", "-f"][..]),
            ("btrfs", 128, &["mkfs.btrfs", "-q", "-f"][..]),
        ] {
            match self.mount(name, size, mkfs) {
                Ok(p) => out.push((name, p)),
                Err(e) => eprintln!("{name}: not tested here: {e}"),
            }
        }
        out
    }

    fn config(&self, text: &str) -> PathBuf {
        let p = self.path("vss.conf");
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Whatever happened, nothing of ours stays frozen or mounted.
        for m in self.mounts.iter().rev() {
            let m = m.display().to_string();
            let _ = Command::new("fsfreeze")
                .args(["-u", &m])
                .stderr(Stdio::null())
                .status();
            if run("umount", &[&m]).is_err() {
                let _ = run("umount", &["-l", &m]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running daemon and its log.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(s: &Scratch, host: &mut EmulatedLinuxVss, config: &Path) -> Daemon {
        let log = s.path(&format!("daemon-{}.log", host.registrations));
        let child = Command::new(env!("CARGO_BIN_EXE_hv_vss_daemon"))
            .args(["-n", "-d", "--layout", "linux", "--device"])
            .arg(s.path("vss.sock"))
            .arg("--config")
            .arg(config)
            .arg("--only-under")
            .arg(s.path("mnt"))
            .arg("--frozen-record")
            .arg(s.path("run/frozen"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon { child, log };
        if let Err(e) = host.accept_daemon(SOON) {
            panic!("the daemon did not register: {e}\n{}", d.log_text());
        }
        let _ = &mut d;
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// The freezer: the child of ours started with `--freezer`.
    fn freezer_pid(&self) -> Option<i32> {
        for e in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`: comm may hold spaces, so read after its ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(self.pid()) {
                return Some(pid);
            }
        }
        None
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The daemon dies; its freezer is stopped first so that it cannot thaw on seeing
    /// the daemon go, and is left so. Returns its pid.
    fn kill9_leaving_its_freezer_stopped(&mut self) -> i32 {
        use nix::sys::signal::{kill, Signal};
        let pid = self.freezer_pid().expect("a freezer runs");
        kill(nix::unistd::Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
        self.kill9();
        pid
    }

    /// Both die at once (an OOM kill, `systemctl kill -s KILL`): the freezer is stopped
    /// first so that it cannot see the daemon go and thaw, then both are killed.
    fn kill9_with_its_freezer(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let freezer = nix::unistd::Pid::from_raw(self.freezer_pid().expect("a freezer runs"));
        kill(freezer, Signal::SIGSTOP).unwrap();
        self.kill9();
        kill(freezer, Signal::SIGKILL).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
    }
}

/// Starts a writer on `mount`: create, write, fsync a file; reports when done.
fn writer(mount: &Path, name: &str) -> Receiver<Instant> {
    let path = mount.join(name);
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(b"written while frozen\n").unwrap();
        f.sync_all().unwrap();
        let _ = tx.send(Instant::now());
    });
    rx
}

/// `hv_vss_daemon --thaw-recorded` on the test's record, as systemd's ExecStopPost= runs it.
fn thaw_recorded(s: &Scratch) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hv_vss_daemon"))
        .arg("--thaw-recorded")
        .arg("--frozen-record")
        .arg(s.path("run/frozen"))
        .output()
        .unwrap()
}

fn is_frozen(mount: &Path) -> bool {
    // A write that finishes within BLOCKED says not frozen.
    writer(mount, ".probe").recv_timeout(BLOCKED).is_err()
}

fn ok(host: &mut EmulatedLinuxVss, op: HostOp, d: &Daemon) -> Duration {
    match host.ask(op).unwrap() {
        hvguest_sim::linux_vss_emulator::LinuxVssAnswer::Reply { status: 0, took } => took,
        other => panic!("{op:?}: {other:?}\n{}", d.log_text()),
    }
}

#[test]
fn freeze_blocks_writers_on_real_mounts_until_thaw() {
    skip_if_unsupported!("freeze_blocks_writers_on_real_mounts_until_thaw");
    let mut s = Scratch::new("basic");
    let mut mounts = vec![("ext4", s.ext4())];
    mounts.extend(s.optional());
    let config = s.config("hook_dir = none\n");
    let mut host = EmulatedLinuxVss::bind(&s.path("vss.sock")).unwrap();
    let d = Daemon::start(&s, &mut host, &config);
    ok(&mut host, HostOp::HotBackup, &d);
    let took = ok(&mut host, HostOp::Freeze, &d);
    eprintln!(
        "FREEZE of {} real mounts answered in {took:?}",
        mounts.len()
    );
    assert!(
        s.path("run/frozen").exists(),
        "the record lists what is frozen"
    );
    let writers: Vec<_> = mounts
        .iter()
        .map(|(name, m)| (*name, m.clone(), writer(m, "data")))
        .collect();
    std::thread::sleep(BLOCKED);
    for (name, _, rx) in &writers {
        assert!(
            rx.try_recv().is_err(),
            "a writer on {name} finished while frozen"
        );
    }
    let thaw_sent = Instant::now();
    let took = ok(&mut host, HostOp::Thaw, &d);
    eprintln!("THAW answered in {took:?}");
    for (name, m, rx) in writers {
        let done = rx
            .recv_timeout(SOON)
            .unwrap_or_else(|_| panic!("the writer on {name} still blocked after THAW"));
        eprintln!(
            "{name}: the writer was blocked {:?} in all, released {:?} after THAW was sent",
            done.duration_since(thaw_sent) + BLOCKED,
            done.duration_since(thaw_sent)
        );
        assert_eq!(
            std::fs::read_to_string(m.join("data")).unwrap(),
            "written while frozen\n"
        );
    }
    assert!(
        !s.path("run/frozen").exists(),
        "nothing recorded once thawed"
    );
    // Only our mounts were touched: the log names no other mount point.
    let log = d.log_text();
    assert!(log.contains(&s.path("mnt").display().to_string()), "{log}");
}

#[test]
fn a_mount_that_cannot_freeze_fails_the_freeze_and_rolls_back() {
    skip_if_unsupported!("a_mount_that_cannot_freeze_fails_the_freeze_and_rolls_back");
    let mut s = Scratch::new("rollback");
    let ext4 = s.ext4();
    // vfat where this kernel has it, else tmpfs: neither can freeze, and both are
    // ignored by default; an override insists.
    let (kind, cannot) = match s.mount("vfat", 32, &["mkfs.vfat"]) {
        Ok(p) => ("vfat", p),
        Err(e) => {
            eprintln!("vfat: {e}; tmpfs instead");
            ("tmpfs", s.tmpfs("tmpfs"))
        }
    };
    let config = s.config(&format!(
        "hook_dir = none\nmount.{} = freeze\n",
        cannot.display()
    ));
    let mut host = EmulatedLinuxVss::bind(&s.path("vss.sock")).unwrap();
    let d = Daemon::start(&s, &mut host, &config);
    let answer = host.ask(HostOp::Freeze).unwrap();
    assert!(!answer.ok(), "{answer:?}\n{}", d.log_text());
    assert!(
        !is_frozen(&ext4),
        "the ext4 mount frozen first was thawed again"
    );
    assert!(!s.path("run/frozen").exists());
    let log = d.log_text();
    assert!(log.contains(&cannot.display().to_string()), "{kind}: {log}");
    // EOPNOTSUPP (95 on Linux).
    assert!(log.contains("95"), "{log}");
}

#[test]
fn kill9_of_the_daemon_while_frozen_thaws_at_once() {
    skip_if_unsupported!("kill9_of_the_daemon_while_frozen_thaws_at_once");
    let mut s = Scratch::new("kill9");
    let ext4 = s.ext4();
    let config = s.config("hook_dir = none\n");
    let mut host = EmulatedLinuxVss::bind(&s.path("vss.sock")).unwrap();
    let mut d = Daemon::start(&s, &mut host, &config);
    ok(&mut host, HostOp::Freeze, &d);
    let w = writer(&ext4, "data");
    std::thread::sleep(BLOCKED);
    assert!(w.try_recv().is_err(), "frozen");
    let killed = Instant::now();
    d.kill9();
    // The freezer sees its stdin close and thaws everything it holds.
    let done = w
        .recv_timeout(SOON)
        .expect("thawed after the daemon's death");
    eprintln!(
        "kill -9 of the daemon while frozen: the writer went on {:?} later",
        done.duration_since(killed)
    );
    assert!(!s.path("run/frozen").exists());
}

#[test]
fn kill9_of_the_freezer_is_thawed_by_the_daemon_and_of_both_by_the_record() {
    skip_if_unsupported!("kill9_of_the_freezer_is_thawed_by_the_daemon_and_of_both_by_the_record");
    let mut s = Scratch::new("guardian");
    let ext4 = s.ext4();
    let config = s.config("hook_dir = none\n");
    let mut host = EmulatedLinuxVss::bind(&s.path("vss.sock")).unwrap();
    let mut d = Daemon::start(&s, &mut host, &config);

    // The freezer alone dies: the daemon thaws what its record lists.
    ok(&mut host, HostOp::Freeze, &d);
    let freezer = d.freezer_pid().expect("a freezer runs while frozen");
    let w = writer(&ext4, "one");
    std::thread::sleep(BLOCKED);
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(freezer),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let done = w
        .recv_timeout(SOON)
        .unwrap_or_else(|_| panic!("still frozen\n{}", d.log_text()));
    eprintln!(
        "kill -9 of the freezer while frozen: the daemon thawed {:?} later",
        done.duration_since(killed)
    );
    assert!(d.log_text().contains("thawed it"), "{}", d.log_text());

    // The daemon dies and its freezer cannot act (stopped, as one stuck in the kernel
    // would be): systemd runs ExecStopPost= while the freezer still lives.
    // `--thaw-recorded` kills the recorded freezer first (it could freeze again after
    // the thaw), then thaws.
    ok(&mut host, HostOp::Freeze, &d);
    let stuck = d.kill9_leaving_its_freezer_stopped();
    let w = writer(&ext4, "stuck");
    let out = thaw_recorded(&s);
    assert!(out.status.success(), "{out:?}");
    w.recv_timeout(SOON).expect("thawed by --thaw-recorded");
    let stat = std::fs::read_to_string(format!("/proc/{stuck}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty()
            || stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        "the recorded freezer was killed: {stat}"
    );

    // Both die at once: the record stays, and `--thaw-recorded` (systemd's
    // ExecStopPost=) thaws it; a restarted daemon would too.
    let mut d = Daemon::start(&s, &mut host, &config);
    ok(&mut host, HostOp::Freeze, &d);
    d.kill9_with_its_freezer();
    assert!(s.path("run/frozen").exists(), "the record outlives both");
    assert!(is_frozen(&ext4), "nothing thaws a Linux freeze by itself");
    let w = writer(&ext4, "two");
    let out = thaw_recorded(&s);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("thawed it"),
        "{out:?}"
    );
    w.recv_timeout(SOON).expect("thawed by --thaw-recorded");
    assert!(!s.path("run/frozen").exists());

    // Once more, and this time a restarted daemon finds the record.
    let mut d = Daemon::start(&s, &mut host, &config);
    ok(&mut host, HostOp::Freeze, &d);
    d.kill9_with_its_freezer();
    let w = writer(&ext4, "three");
    let d = Daemon::start(&s, &mut host, &config);
    w.recv_timeout(SOON)
        .unwrap_or_else(|_| panic!("the restart did not thaw\n{}", d.log_text()));
    assert!(!s.path("run/frozen").exists());
}

#[test]
fn the_watchdog_thaws_a_real_mount_when_no_thaw_comes() {
    skip_if_unsupported!("the_watchdog_thaws_a_real_mount_when_no_thaw_comes");
    let mut s = Scratch::new("watchdog");
    let ext4 = s.ext4();
    // The shortest watchdog there is: more than the kernel's 15 s.
    let config = s.config("hook_dir = none\nwatchdog = 16s\n");
    let mut host = EmulatedLinuxVss::bind(&s.path("vss.sock")).unwrap();
    let d = Daemon::start(&s, &mut host, &config);
    ok(&mut host, HostOp::Freeze, &d);
    let frozen = Instant::now();
    let w = writer(&ext4, "data");
    let done = w
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the watchdog did not thaw\n{}", d.log_text()));
    let after = done.duration_since(frozen);
    eprintln!("no THAW: the watchdog thawed {after:?} after FREEZE");
    assert!(after >= Duration::from_secs(15), "{after:?}");
    assert!(d.log_text().contains("atchdog"), "{}", d.log_text());
}

#[test]
fn hooks_run_around_a_real_freeze() {
    skip_if_unsupported!("hooks_run_around_a_real_freeze");
    let mut s = Scratch::new("hooks");
    let ext4 = s.ext4();
    let hooks = s.path("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for d in [&s.dir, &hooks] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let trace = s.path("hook.trace");
    // The freeze hook writes to the mount: it runs before the file system freezes.
    let hook = hooks.join("10-app");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}\nif [ \"$1\" = freeze ]; then echo quiesced > {}/app-state; sync; fi\n",
            trace.display(),
            ext4.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = s.config(&format!("hook_dir = {}\n", hooks.display()));
    let mut host = EmulatedLinuxVss::bind(&s.path("vss.sock")).unwrap();
    let d = Daemon::start(&s, &mut host, &config);
    ok(&mut host, HostOp::Freeze, &d);
    assert!(is_frozen(&ext4));
    assert_eq!(
        std::fs::read_to_string(ext4.join("app-state")).unwrap(),
        "quiesced\n"
    );
    ok(&mut host, HostOp::Thaw, &d);
    let t = std::fs::read_to_string(&trace).unwrap();
    // The start-up thaw of every hook, then freeze and thaw.
    assert_eq!(t, "thaw\nfreeze\nthaw\n", "{}", d.log_text());
}

#[test]
fn self_test_proves_freezing_works_here_and_cleans_up() {
    skip_if_unsupported!("self_test_proves_freezing_works_here_and_cleans_up");
    let s = Scratch::new("selftest");
    let out = Command::new(env!("CARGO_BIN_EXE_hv_vss_daemon"))
        .arg("--self-test")
        .arg(&s.dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("{said}");
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("stayed blocked while frozen"), "{said}");
    assert!(said.ends_with("Freezing works on this system.\n"), "{said}");
    // Nothing left behind: no mount, no directory.
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!table.contains("hvguest-self-test"), "{table}");
    assert!(std::fs::read_dir(&s.dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("hvguest-self-test")));
    // A directory that is not there: a clear failure, nothing made.
    let out = Command::new(env!("CARGO_BIN_EXE_hv_vss_daemon"))
        .arg("--self-test")
        .arg(s.path("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a directory we can work in"),
        "{out:?}"
    );
}

#[test]
fn a_failed_device_is_opened_again_and_the_freeze_is_still_thawed() {
    skip_if_unsupported!("a_failed_device_is_opened_again_and_the_freeze_is_still_thawed");
    let mut s = Scratch::new("reopen");
    let ext4 = s.ext4();
    let config = s.config("hook_dir = none\n");
    let mut host = EmulatedLinuxVss::bind(&s.path("vss.sock")).unwrap();
    let d = Daemon::start(&s, &mut host, &config);
    ok(&mut host, HostOp::Freeze, &d);
    // The channel goes down while frozen; the daemon opens the device again.
    let dropped = Instant::now();
    host.drop_daemon();
    host.accept_daemon(SOON)
        .unwrap_or_else(|e| panic!("no new registration: {e}\n{}", d.log_text()));
    eprintln!(
        "the daemon registered again {:?} after its device went away",
        dropped.elapsed()
    );
    assert_eq!(host.registrations, 2);
    assert!(is_frozen(&ext4), "a reopen does not thaw by itself");
    ok(&mut host, HostOp::Thaw, &d);
    assert!(!is_frozen(&ext4));
    ok(&mut host, HostOp::HotBackup, &d);
    let log = d.log_text();
    assert!(log.contains("opening it again"), "{log}");
    assert!(log.contains("registering anew"), "{log}");
}
