//! FIFREEZE and FITHAW (docs/protocol/linux.md §2.5), and the record of what is frozen.
//!
//! A Linux freeze belongs to no process: if the freezer dies holding one, every writer
//! of that file system sleeps until someone thaws it. So before it freezes, the freezer
//! writes the file system into a small record on tmpfs ([`FrozenRecord`], under `/run`,
//! never on a file system it may freeze), and removes it after the thaw. Whoever finds
//! the record later (the daemon when its freezer died, the daemon starting, systemd's
//! `ExecStopPost=`) thaws what it lists: [`thaw_recorded`].
//!
//! A file system is named by its device number (`st_dev`, the `major:minor` of
//! `/proc/self/mountinfo`): a freeze or thaw happens only if the mount point still leads
//! to the file system planned, and a recorded one is thawed only if it is still there.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};

use std::path::{Path, PathBuf};

use hvguest_core::vss::policy::Fsid;

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)`.
const FIFREEZE: u32 = 0xC004_5877;
const FITHAW: u32 = 0xC004_5878;

const EBUSY: i32 = 16;
const EINVAL: i32 = 22;
const ENOENT: i32 = 2;

/// The `major:minor` of a device number, as `Fsid([major, minor])`.
pub fn fsid_of_dev(dev: u64) -> Fsid {
    // glibc's gnu_dev_major/minor layout: 12 bits of major, 20 of minor, split.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Fsid([
        i32::try_from(major).unwrap_or(-1),
        i32::try_from(minor).unwrap_or(-1),
    ])
}

/// The device number `/proc/self/mountinfo` gives the mount an open descriptor is on
/// (its `mnt_id` read from `/proc/self/fdinfo`). Not `st_dev`: on btrfs a subvolume's
/// files carry a device number of their own, not the superblock's.
fn mount_device(fd: &File) -> io::Result<Fsid> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    let id = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .map(str::trim)
        .ok_or_else(|| io::Error::other("fdinfo has no mnt_id"))?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    table
        .lines()
        .find(|l| l.split(' ').next() == Some(id))
        .and_then(|l| l.split(' ').nth(2))
        .and_then(|dev| dev.parse::<Fsid>().ok())
        .ok_or_else(|| io::Error::from_raw_os_error(ENOENT))
}

/// Opens the mount point (a directory, read-only) and checks that it is the file system
/// `fsid` names: `ENOENT` when another one is mounted there now. Returns the file
/// system's identity too.
fn open_planned(mount: &str, fsid: Option<Fsid>) -> io::Result<(File, Fsid)> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(mount)?;
    let found =
        mount_device(&dir).or_else(|_| Ok::<_, io::Error>(fsid_of_dev(dir.metadata()?.dev())))?;
    if fsid.is_some_and(|want| want != found) {
        return Err(io::Error::from_raw_os_error(ENOENT));
    }
    Ok((dir, found))
}

fn ioctl(fd: &impl AsRawFd, request: u32) -> io::Result<()> {
    // SAFETY: FIFREEZE and FITHAW take no pointer: their argument is ignored.
    let r = unsafe { nix::libc::ioctl(fd.as_raw_fd(), request as _, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A file system we froze, thawed through the same descriptor.
#[derive(Debug)]
pub struct Frozen {
    dir: Option<OwnedFd>,
    pub fsid: Fsid,
}

impl Frozen {
    /// FITHAW. `EINVAL` (not frozen: someone else thawed it) counts as done.
    pub fn thaw(mut self) -> io::Result<()> {
        match self.dir.take() {
            Some(fd) => thaw_fd(&fd),
            None => Ok(()),
        }
    }
}

impl Drop for Frozen {
    /// A freeze dropped unthawed (an early return) is thawed all the same: nothing of
    /// ours may stay frozen by mistake.
    fn drop(&mut self) {
        if let Some(fd) = self.dir.take() {
            if let Err(e) = thaw_fd(&fd) {
                eprintln!("freezer: thawing {:?} on drop failed: {e}", self.fsid);
            }
        }
    }
}

fn thaw_fd(fd: &impl AsRawFd) -> io::Result<()> {
    match ioctl(fd, FITHAW) {
        Err(e) if e.raw_os_error() == Some(EINVAL) => Ok(()),
        r => r,
    }
}

/// What a FIFREEZE did.
#[derive(Debug)]
pub enum Freeze {
    /// Frozen by us: ours to thaw.
    Frozen(Frozen),
    /// Frozen already by another holder (`EBUSY`): frozen, as the backup needs, but not
    /// ours to thaw.
    AlreadyFrozen,
}

/// Freezes the file system at `mount`, if it is the one planned: recorded in `record`
/// first, so that it is thawed even if we die; the record is taken back when the
/// freeze fails or was not ours.
pub fn freeze(mount: &str, fsid: Option<Fsid>, record: &mut FrozenRecord) -> io::Result<Freeze> {
    let (dir, fsid) = open_planned(mount, fsid)?;
    record.add(fsid, mount)?;
    match ioctl(&dir, FIFREEZE) {
        Ok(()) => Ok(Freeze::Frozen(Frozen {
            dir: Some(dir.into()),
            fsid,
        })),
        Err(e) => {
            record.remove(fsid)?;
            if e.raw_os_error() == Some(EBUSY) {
                Ok(Freeze::AlreadyFrozen)
            } else {
                Err(e)
            }
        }
    }
}

/// The file systems a freezer holds frozen, kept in a file: a first line `pid N` (the
/// freezer's), then one line each, `major:minor` and the mount point (`\\` and `\n`
/// escaped as `\\\\` and `\\n`). Each change replaces the whole file (write a temporary
/// file, rename it over), so a reader sees the old list or the new one. An empty list
/// is no file. The list in memory changes only once the file says so.
#[derive(Debug)]
pub struct FrozenRecord {
    path: PathBuf,
    owner: u32,
    entries: Vec<(Fsid, String)>,
}

impl FrozenRecord {
    /// The record of this process's freezes.
    pub fn new(path: &Path) -> FrozenRecord {
        FrozenRecord {
            path: path.to_path_buf(),
            owner: std::process::id(),
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, fsid: Fsid, mount: &str) -> io::Result<()> {
        let mut next = self.entries.clone();
        next.push((fsid, mount.to_string()));
        self.save(next)
    }

    pub fn remove(&mut self, fsid: Fsid) -> io::Result<()> {
        let next = self
            .entries
            .iter()
            .filter(|(f, _)| *f != fsid)
            .cloned()
            .collect();
        self.save(next)
    }

    fn save(&mut self, entries: Vec<(Fsid, String)>) -> io::Result<()> {
        self.write(&entries)?;
        self.entries = entries;
        Ok(())
    }

    fn write(&self, entries: &[(Fsid, String)]) -> io::Result<()> {
        if entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            };
        }
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let tmp = self.path.with_extension("new");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(encode_record(self.owner, entries).as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, &self.path)
    }
}

/// The record's text.
pub fn encode_record(owner: u32, entries: &[(Fsid, String)]) -> String {
    let mut out = format!("pid {owner}\n");
    for (f, m) in entries {
        out.push_str(&format!(
            "{}:{} {}\n",
            f.0[0],
            f.0[1],
            m.replace('\\', "\\\\").replace('\n', "\\n")
        ));
    }
    out
}

/// Reads a record's text: its freezer's pid, if the first line gives one, and its
/// entries; lines that do not parse are skipped (a torn or foreign line names nothing
/// we can check).
pub fn decode_record(text: &str) -> (Option<u32>, Vec<(Fsid, String)>) {
    let owner = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok());
    let entries = text
        .lines()
        .filter_map(|l| {
            let (dev, mount) = l.split_once(' ')?;
            let fsid = dev.parse::<Fsid>().ok()?;
            let mut out = String::with_capacity(mount.len());
            let mut chars = mount.chars();
            while let Some(c) = chars.next() {
                match (c, c == '\\') {
                    (_, false) => out.push(c),
                    (_, true) => match chars.next()? {
                        '\\' => out.push('\\'),
                        'n' => out.push('\n'),
                        _ => return None,
                    },
                }
            }
            Some((fsid, out))
        })
        .collect();
    (owner, entries)
}

/// How long [`thaw_recorded`] waits for a recorded freezer it killed to be gone.
const FREEZER_GONE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `pid` is a live freezer (`--freezer` in its command line, not a zombie).
fn live_freezer(pid: u32) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    let zombie = std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    !zombie && cmdline.split(|&b| b == 0).any(|arg| arg == b"--freezer")
}

/// A freezer still alive may freeze again after we thaw (it may be inside FIFREEZE):
/// it is killed first, and we wait a moment for it to be gone.
fn stop_recorded_freezer(owner: Option<u32>) {
    let Some(pid) = owner.filter(|&p| p != std::process::id() && live_freezer(p)) else {
        return;
    };
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    // It may be gone already; either way we then wait for it below.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::SIGKILL);
    let until = std::time::Instant::now() + FREEZER_GONE_WAIT;
    while live_freezer(pid) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What [`thaw_recorded`] did to one recorded file system.
#[derive(Debug)]
pub enum Thawed {
    /// FITHAW done (or it was not frozen any more).
    Thawed,
    /// Another file system is mounted there now, or nothing: left alone.
    Gone,
    Failed(io::Error),
}

/// Thaws every file system `path` lists that is still mounted where it was, then
/// removes the record. Returns each mount point with what happened; no file is an
/// empty list. A file system that fails to thaw stays in the record.
pub fn thaw_recorded(path: &Path) -> io::Result<Vec<(String, Thawed)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let (owner, entries) = decode_record(&text);
    stop_recorded_freezer(owner);
    let mut left = Vec::new();
    let mut done = Vec::new();
    for (fsid, mount) in entries {
        let outcome = match open_planned(&mount, Some(fsid)) {
            Ok((dir, _)) => match thaw_fd(&dir) {
                Ok(()) => Thawed::Thawed,
                Err(e) => Thawed::Failed(e),
            },
            // Nothing there, or another file system: not ours to thaw.
            Err(e) if e.raw_os_error() == Some(ENOENT) || e.kind() == io::ErrorKind::NotFound => {
                Thawed::Gone
            }
            // Cannot tell (out of descriptors, no permission): still ours, kept.
            Err(e) => Thawed::Failed(e),
        };
        if matches!(outcome, Thawed::Failed(_)) {
            left.push((fsid, mount.clone()));
        }
        done.push((mount, outcome));
    }
    FrozenRecord::new(path).save(left)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_split_as_glibc_does() {
        assert_eq!(fsid_of_dev(0x0801), Fsid([8, 1]));
        assert_eq!(fsid_of_dev(0x0700), Fsid([7, 0]));
        // major 259 (NVMe), minor 300.
        let dev = (259u64 & 0xfff) << 8 | (300u64 & 0xff) | ((300u64 & !0xff) << 12);
        assert_eq!(fsid_of_dev(dev), Fsid([259, 300]));
    }

    #[test]
    fn record_text_round_trips_and_skips_junk() {
        let entries = vec![
            (Fsid([7, 0]), "/mnt/a b".to_string()),
            (Fsid([8, 17]), "/mnt/odd\\name\nline".to_string()),
        ];
        let text = encode_record(42, &entries);
        assert!(text.starts_with("pid 42\n"));
        assert_eq!(decode_record(&text), (Some(42), entries.clone()));
        let junk = format!("{text}garbage\n7:x /m\n1:2 /bad\\q\n");
        assert_eq!(decode_record(&junk), (Some(42), entries.clone()));
        assert_eq!(decode_record("7:0 /mnt/a b\n").0, None);
    }

    #[test]
    fn the_record_is_a_file_while_not_empty() {
        let dir = std::env::temp_dir().join(format!("hvguest-record-{}", std::process::id()));
        let path = dir.join("sub/frozen");
        let mut r = FrozenRecord::new(&path);
        r.add(Fsid([7, 0]), "/mnt/a").unwrap();
        r.add(Fsid([7, 1]), "/mnt/b").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let me = std::process::id();
        assert_eq!(text, format!("pid {me}\n7:0 /mnt/a\n7:1 /mnt/b\n"));
        r.remove(Fsid([7, 0])).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("pid {me}\n7:1 /mnt/b\n")
        );
        r.remove(Fsid([7, 1])).unwrap();
        assert!(!path.exists());
        // A record naming mount points that are not there any more: nothing thawed,
        // and the record goes.
        let mut r = FrozenRecord::new(&path);
        r.add(Fsid([7, 9]), "/nonexistent/mount").unwrap();
        let done = thaw_recorded(&path).unwrap();
        assert!(matches!(done.as_slice(), [(m, Thawed::Gone)] if m == "/nonexistent/mount"));
        assert!(!path.exists());
        assert!(thaw_recorded(&path).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
