//! `hv_vss_daemon --self-test DIR`: proves on a new host that freezing works, on a file
//! system the test makes itself and nothing else.
//!
//! In `DIR` it makes a scratch image (Linux: a sparse file, `mkfs.ext4`, a loop mount;
//! FreeBSD: a sparse file, an `md(4)` vnode device, `newfs`, a mount), runs the real
//! freezer (this binary with `--freezer`, limited by `--only-under` to the scratch
//! directory, so it refuses any other mount), freezes the scratch file system, checks
//! that a writer (write and fsync) blocks while frozen, thaws, checks that the writer
//! finishes and its data is there, and takes everything down again. It reports each
//! step with its time; the exit status says whether the platform works.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use hvguest_core::vss::freezer::{Command, Reply};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::BorrowedFd;

use crate::freezer::{FreezerArgs, FreezerHandle};

/// How long the writer must stay blocked to count as blocked.
const BLOCKED_FOR: Duration = Duration::from_millis(1000);
/// How long a step may take before the self-test calls it failed.
const STEP: Duration = Duration::from_secs(10);
/// The freezer thaws by itself after this, should the self-test hang.
const AUTO_THAW: Duration = Duration::from_secs(20);
/// The scratch image's size.
const IMAGE_MB: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum SelfTestError {
    #[error("{0} is not a directory we can work in: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("{what} failed: {detail}")]
    Step { what: String, detail: String },
    #[error("the writer finished while the file system was frozen: freezing does not work here")]
    NotBlocked,
    #[error("the writer was still blocked {0:?} after the thaw: thawing does not work here")]
    NotReleased(Duration),
}

fn step(what: &str, detail: impl ToString) -> SelfTestError {
    SelfTestError::Step {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

fn run(what: &str, program: &str, args: &[&str]) -> Result<(), SelfTestError> {
    let out = Process::new(program)
        .args(args)
        .output()
        .map_err(|e| step(what, format!("{program}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(step(
            what,
            format!(
                "{program} {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// The scratch file system, taken down on drop (thawed, unmounted, its device and
/// directory removed), whatever happened.
struct Scratch {
    dir: PathBuf,
    mount: PathBuf,
    mounted: bool,
    #[cfg(target_os = "freebsd")]
    md: Option<String>,
}

impl Scratch {
    fn make(parent: &Path, report: &mut dyn FnMut(String)) -> Result<Scratch, SelfTestError> {
        let dir = parent.join(format!("hvguest-self-test.{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| SelfTestError::Dir(parent.to_path_buf(), e))?;
        let mount = dir.join("mnt");
        let mut s = Scratch {
            dir,
            mount,
            mounted: false,
            #[cfg(target_os = "freebsd")]
            md: None,
        };
        std::fs::create_dir(&s.mount).map_err(|e| step("making the mount point", e))?;
        let image = s.dir.join("image");
        let f = std::fs::File::create(&image).map_err(|e| step("making the image", e))?;
        f.set_len(IMAGE_MB << 20)
            .map_err(|e| step("making the image", e))?;
        drop(f);
        let started = Instant::now();
        s.format_and_mount(&image)?;
        s.mounted = true;
        report(format!(
            "made and mounted a {IMAGE_MB} MB scratch file system at {} ({:?})",
            s.mount.display(),
            started.elapsed()
        ));
        Ok(s)
    }

    #[cfg(not(target_os = "freebsd"))]
    fn format_and_mount(&mut self, image: &Path) -> Result<(), SelfTestError> {
        let image = image.display().to_string();
        run("mkfs", "mkfs.ext4", &["-q", "-F", &image])?;
        run(
            "mounting the image",
            "mount",
            &["-o", "loop", &image, &self.mount.display().to_string()],
        )
    }

    #[cfg(target_os = "freebsd")]
    fn format_and_mount(&mut self, image: &Path) -> Result<(), SelfTestError> {
        let image = image.display().to_string();
        let out = Process::new("mdconfig")
            .args(["-a", "-t", "vnode", "-f", &image])
            .output()
            .map_err(|e| step("mdconfig", e))?;
        if !out.status.success() {
            return Err(step("mdconfig", String::from_utf8_lossy(&out.stderr)));
        }
        let md = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dev = format!("/dev/{md}");
        self.md = Some(md);
        run("newfs", "newfs", &["-U", &dev])?;
        run(
            "mounting the image",
            "mount",
            &[&dev, &self.mount.display().to_string()],
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let m = self.mount.display().to_string();
        if self.mounted {
            #[cfg(not(target_os = "freebsd"))]
            let _ = Process::new("fsfreeze").args(["-u", &m]).output();
            if run("unmounting", "umount", &[&m]).is_err() {
                eprintln!("hv_vss_daemon: --self-test: could not unmount {m}; unmount it by hand");
            }
        }
        #[cfg(target_os = "freebsd")]
        if let Some(md) = &self.md {
            let _ = run("mdconfig", "mdconfig", &["-d", "-u", md]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits up to `limit` for the freezer's reply.
fn reply(h: &mut FreezerHandle, limit: Duration) -> Result<Reply, String> {
    let until = Instant::now() + limit;
    loop {
        match h.replies() {
            Err(e) => return Err(format!("the freezer is gone: {e}")),
            Ok(mut r) if !r.is_empty() => {
                let (result, said) = r.remove(0);
                return Ok(match (result, said) {
                    (hvguest_core::vss::effect::VssResult::Done, _) => Reply::Ok,
                    (_, text) => Reply::Err {
                        errno: 0,
                        text: text.unwrap_or_default(),
                    },
                });
            }
            Ok(_) => {}
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the freezer did not answer".into());
        }
        // SAFETY: the descriptor belongs to `h`, alive for this call.
        let fd = unsafe { BorrowedFd::borrow_raw(h.stdout_fd()) };
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        let _ = poll(
            &mut [PollFd::new(fd, PollFlags::POLLIN)],
            PollTimeout::from(ms),
        );
    }
}

/// Runs the self-test in `parent`; `report` gets one sentence per step.
pub fn self_test(
    exe: &Path,
    parent: &Path,
    record: Option<PathBuf>,
    report: &mut dyn FnMut(String),
) -> Result<(), SelfTestError> {
    let scratch = Scratch::make(parent, report)?;
    let record = record.map(|_| scratch.dir.join("frozen"));
    let args = FreezerArgs {
        record,
        only_under: Some(scratch.dir.clone()),
        ..FreezerArgs::default()
    };
    let mut freezer =
        FreezerHandle::spawn(exe, &args).map_err(|e| step("starting the freezer", e))?;
    let started = Instant::now();
    freezer
        .send(&Command::Suspend {
            mount: scratch.mount.display().to_string(),
            fsid: None,
            auto_thaw_after: AUTO_THAW,
        })
        .map_err(|e| step("asking the freezer to freeze", e))?;
    match reply(&mut freezer, STEP).map_err(|e| step("freezing", e))? {
        Reply::Ok => {}
        Reply::Err { text, .. } => return Err(step("freezing", text)),
    }
    report(format!(
        "froze {} in {:?}",
        scratch.mount.display(),
        started.elapsed()
    ));
    let (tx, rx) = channel();
    let target = scratch.mount.join("written-while-frozen");
    std::thread::spawn(move || {
        let wrote = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&target)
            .and_then(|mut f| f.write_all(b"hvguest\n").and_then(|()| f.sync_all()));
        let _ = tx.send((Instant::now(), wrote));
    });
    let blocked_since = Instant::now();
    if rx.recv_timeout(BLOCKED_FOR).is_ok() {
        return Err(SelfTestError::NotBlocked);
    }
    report(format!(
        "a writer (write and fsync) stayed blocked while frozen ({BLOCKED_FOR:?})"
    ));
    let thawing = Instant::now();
    freezer
        .send(&Command::Resume)
        .map_err(|e| step("asking the freezer to thaw", e))?;
    match reply(&mut freezer, STEP).map_err(|e| step("thawing", e))? {
        Reply::Ok => {}
        Reply::Err { text, .. } => return Err(step("thawing", text)),
    }
    let thawed_in = thawing.elapsed();
    let (done, wrote) = rx
        .recv_timeout(STEP)
        .map_err(|_| SelfTestError::NotReleased(STEP))?;
    wrote.map_err(|e| step("the writer", e))?;
    report(format!(
        "thawed in {thawed_in:?}; the writer finished {:?} after the thaw was asked, \
         blocked {:?} in all",
        done.saturating_duration_since(thawing),
        done.saturating_duration_since(blocked_since)
    ));
    let data = std::fs::read(scratch.mount.join("written-while-frozen"))
        .map_err(|e| step("reading back", e))?;
    if data != b"hvguest\n" {
        return Err(step(
            "reading back",
            "the data written while frozen is not there",
        ));
    }
    report("the data written while frozen is there after the thaw".to_string());
    drop(freezer.close(None));
    drop(scratch);
    report("took the scratch file system down".to_string());
    Ok(())
}
