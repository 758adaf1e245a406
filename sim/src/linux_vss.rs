//! Linux VSS worlds: a random Linux mount table and setup, and Linux's file-system
//! freeze as the simulator plays it (docs/protocol/linux.md §2.5): a freeze belongs to
//! the superblock, not to the process that froze it, so the freezer's death thaws
//! nothing; FIFREEZE of a frozen file system is `EBUSY`, FITHAW of a thawed one `EINVAL`.
//! The simulated driver does what the production one does (io/src/freezer.rs): the
//! freezer records each file system before FIFREEZE and takes it out after FITHAW; a
//! dead freezer's record is thawed by the reaper before the machine hears
//! `FreezerExited`, by the daemon at start-up, and by `--thaw-recorded` as systemd's
//! `ExecStopPost=`.

use std::time::Duration;

use hvguest_core::vss::hooks::HookEntry;
use hvguest_core::vss::machine::VssConfig;
use hvguest_core::vss::policy::{Fsid, Mount, Policy};
use hvguest_core::vss::wire::Layout;
use hvguest_core::Instant;

use crate::prng::Prng;
use crate::vss::{SimProgram, VssSetup, HOOK_DIR};

/// Where the KVP pools live on Linux: a freeze of its file system blocks their writes.
pub const LINUX_POOL_DIR: &str = "/var/lib/hyperv";

/// The superblocks as Linux's kernel holds them, and the freezer's record on tmpfs.
#[derive(Debug, Default, Clone)]
pub struct LinuxFreeze {
    /// Frozen file systems: `major:minor`, the mount point FIFREEZE went through, and
    /// when. A freezer's exit changes nothing here.
    pub frozen: Vec<(Fsid, String, Instant)>,
    /// `/run/hvguest/vss-frozen`: what the freezer wrote before each FIFREEZE and has
    /// not taken out after its FITHAW.
    pub record: Vec<(Fsid, String)>,
    /// The mount points the living freezer froze itself (its `Frozen` holds; an
    /// `EBUSY` freeze is not its to thaw).
    pub ours: Vec<String>,
}

impl LinuxFreeze {
    pub fn is_frozen(&self, fsid: Fsid) -> bool {
        self.frozen.iter().any(|(f, _, _)| *f == fsid)
    }

    /// FITHAW of one file system (`EINVAL`, harmless, when it is not frozen).
    pub fn thaw(&mut self, fsid: Fsid) -> bool {
        let before = self.frozen.len();
        self.frozen.retain(|(f, _, _)| *f != fsid);
        before != self.frozen.len()
    }

    /// The freezer resumes `mount`: FITHAW if it froze it, then the record updated.
    pub fn resume(&mut self, mount: &str) {
        let Some(i) = self.ours.iter().position(|m| m == mount) else {
            return;
        };
        self.ours.remove(i);
        if let Some(j) = self.record.iter().position(|(_, m)| m == mount) {
            let (fsid, _) = self.record.remove(j);
            self.thaw(fsid);
        }
    }

    /// `thaw_recorded`: every recorded file system still mounted where it was (the
    /// same `major:minor`) is thawed; the record is removed. Returns what it did, for
    /// the trace.
    pub fn thaw_recorded(&mut self, mounts: &[Mount]) -> Vec<String> {
        let mut said = Vec::new();
        for (fsid, mount) in std::mem::take(&mut self.record) {
            let there = mounts
                .iter()
                .any(|m| m.path == mount && m.fsid == Some(fsid));
            if !there {
                said.push(format!("{mount} gone"));
            } else if self.thaw(fsid) {
                said.push(format!("{mount} thawed"));
            } else {
                said.push(format!("{mount} not frozen"));
            }
        }
        said
    }
}

fn mount(fstype: &str, path: &str, source: &str, read_only: bool, dev: [i32; 2]) -> Mount {
    Mount {
        fstype: fstype.into(),
        path: path.into(),
        source: source.into(),
        read_only,
        fsid: Some(Fsid(dev)),
    }
}

/// A random Linux mount table: `/` on ext4, xfs or btrfs; `/boot` and the EFI
/// partition; the pseudo file systems; data file systems on nesting mount points
/// (`/var`, `/var/lib`, `/var/lib/hyperv`...) of ext4, xfs or btrfs (some read-only),
/// btrfs subvolumes of `/` (the same `major:minor`), now and then NFS (mostly
/// read-only), ZFS or something unknown (FUSE); bind mounts of any of them (the same
/// `major:minor`, some read-only); loop-backed file systems whose image lies on another
/// one, and a read-only squashfs snap. Returns the table and each loop device's image.
pub fn random_mounts(prng: &mut Prng) -> (Vec<Mount>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut images = Vec::new();
    let root_type = *prng.choose(&["ext4", "xfs", "btrfs"]);
    let root_dev = if root_type == "btrfs" {
        [0, 27]
    } else {
        [8, 2]
    };
    out.push(mount(root_type, "/", "/dev/sda2", false, root_dev));
    if prng.chance(1, 2) {
        out.push(mount("ext4", "/boot", "/dev/sda1", false, [8, 1]));
        if prng.chance(1, 2) {
            out.push(mount("vfat", "/boot/efi", "/dev/sda15", false, [8, 15]));
        }
    }
    let mut anon = 40;
    for (t, p) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("devpts", "/dev/pts"),
        ("tmpfs", "/run"),
        ("tmpfs", "/dev/shm"),
        ("cgroup2", "/sys/fs/cgroup"),
        ("tmpfs", "/tmp"),
    ] {
        if p == "/proc" || p == "/run" || prng.chance(1, 2) {
            anon += 1;
            out.push(mount(t, p, t, false, [0, anon]));
        }
    }
    let points = [
        "/var",
        "/var/lib",
        "/var/lib/hyperv",
        "/var/log",
        "/home",
        "/data",
        "/data/db",
        "/srv",
        "/opt",
    ];
    let mut disk = 16;
    for p in points {
        if !prng.chance(2, 5) {
            continue;
        }
        let ro = prng.chance(1, 8);
        disk += 1;
        let m = match prng.below(24) {
            0..=8 => mount("ext4", p, &format!("/dev/sdb{disk}"), ro, [8, disk]),
            9..=14 => mount("xfs", p, &format!("/dev/sdc{disk}"), ro, [8, disk]),
            15..=17 if root_type == "btrfs" => {
                // A subvolume of the root file system: the same superblock.
                mount("btrfs", p, "/dev/sda2", ro, root_dev)
            }
            15..=18 => mount("btrfs", p, &format!("/dev/sdd{disk}"), ro, [0, 60 + disk]),
            19..=20 => mount(
                "nfs4",
                p,
                &format!("srv:{p}"),
                prng.chance(3, 4) || ro,
                [0, 90 + disk],
            ),
            21 => mount("zfs", p, &format!("tank{p}"), ro, [0, 120 + disk]),
            22 => mount(
                "fuse.sshfs",
                p,
                &format!("me@srv:{p}"),
                prng.chance(3, 4) || ro,
                [0, 150 + disk],
            ),
            _ => mount("ext4", p, &format!("/dev/sde{disk}"), ro, [8, disk]),
        };
        out.push(m);
    }
    // Loop-backed: an image on one of the disk file systems, mounted through a loop
    // device; and a snap, read-only by nature.
    for n in 0..prng.below(3) {
        let holders: Vec<String> = out
            .iter()
            .filter(|m| {
                matches!(m.fstype.as_str(), "ext4" | "xfs" | "btrfs")
                    && !m.read_only
                    && !m.source.starts_with("/dev/loop")
            })
            .map(|m| m.path.clone())
            .collect();
        let holder = prng.choose(&holders).clone();
        let image = format!("{}/images/disk{n}.img", holder.trim_end_matches('/'));
        let dev = format!("/dev/loop{n}");
        let at = format!("/mnt/img{n}");
        let t = *prng.choose(&["ext4", "xfs"]);
        out.push(mount(t, &at, &dev, prng.chance(1, 8), [7, n as i32]));
        images.push((dev, image));
    }
    if prng.chance(1, 3) {
        out.push(mount(
            "squashfs",
            "/snap/core/1",
            "/dev/loop9",
            true,
            [7, 9],
        ));
    }
    // Bind mounts: another mount point of a file system already mounted.
    for n in 0..prng.below(3) {
        let from = prng.choose(&out).clone();
        if from.fstype.starts_with("proc") || from.path == "/proc" {
            continue;
        }
        let ro = from.read_only || prng.chance(1, 5);
        let at = format!("/srv/bind{n}");
        out.push(Mount {
            path: at,
            read_only: ro,
            ..from
        });
    }
    // The order of mounting: `/` first, the rest in any order.
    for i in (2..out.len()).rev() {
        let j = 1 + prng.below(i as u64) as usize;
        out.swap(i, j);
    }
    (out, images)
}

/// A seeded Linux VSS setup: Linux's layout and default policy, a random Linux mount
/// table, some hooks, no application device, now and then a failing FIFREEZE, slow
/// freezes and thaws, another watchdog, and an `ExecStopPost=` half the time.
pub fn random_setup(prng: &mut Prng) -> VssSetup {
    let (mounts, loop_images) = random_mounts(prng);
    let mut s = VssSetup {
        mounts,
        loop_images,
        config: VssConfig {
            layout: Layout::Linux,
            policy: Policy::for_layout(Layout::Linux),
            hook_dir: Some(HOOK_DIR.into()),
            ..VssConfig::default()
        },
        exec_stop_post: prng.chance(1, 2),
        ..VssSetup::default()
    };
    let slow = prng.chance(1, 6);
    for i in 0..prng.below(3) {
        let p = SimProgram {
            exit_freeze: if prng.chance(1, 12) { 1 } else { 0 },
            exit_thaw: 0,
            takes: Duration::from_millis(if slow {
                prng.range(500, 4000)
            } else {
                prng.range(5, 300)
            }),
            thaw_takes: None,
        };
        let entry = HookEntry {
            name: format!("{}0-hook", i + 1),
            regular_file: true,
            uid: 0,
            mode: 0o755,
        };
        s.hooks.push((entry, p));
    }
    if prng.chance(1, 12) {
        let freezable: Vec<String> = s
            .mounts
            .iter()
            .filter(|m| matches!(m.fstype.as_str(), "ext4" | "xfs" | "btrfs") && !m.read_only)
            .map(|m| m.path.clone())
            .collect();
        if !freezable.is_empty() {
            s.suspend_fails = Some(prng.choose(&freezable).clone());
        }
    }
    s.sync_takes = Duration::from_millis(prng.range(10, 400));
    if slow || prng.chance(1, 5) {
        s.kill_lag = Duration::from_millis(prng.range(0, 450));
        s.suspend_takes = Duration::from_millis(prng.range(1, 300));
        s.resume_takes = Duration::from_millis(prng.range(1, 950));
    }
    if prng.chance(1, 4) {
        let max =
            u64::try_from(hvguest_core::vss::rules::max_watchdog().as_millis()).unwrap_or(u64::MAX);
        s.config.watchdog = Duration::from_millis(prng.range(15_001, max));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freeze_outlives_its_freezer_until_the_record_is_thawed() {
        let mounts = vec![
            mount("ext4", "/", "/dev/sda2", false, [8, 2]),
            mount("ext4", "/srv/bind0", "/dev/sda2", false, [8, 2]),
            mount("xfs", "/data", "/dev/sdb1", false, [8, 17]),
        ];
        let mut l = LinuxFreeze::default();
        for (fsid, m) in [(Fsid([8, 17]), "/data"), (Fsid([8, 2]), "/")] {
            l.record.push((fsid, m.into()));
            l.frozen.push((fsid, m.into(), Instant::ZERO));
            l.ours.push(m.into());
        }
        // The freezer dies: nothing changes but its holds.
        l.ours.clear();
        assert_eq!(l.frozen.len(), 2);
        let said = l.thaw_recorded(&mounts);
        assert_eq!(said, vec!["/data thawed", "/ thawed"]);
        assert!(l.frozen.is_empty() && l.record.is_empty());
        // A record naming a file system no longer mounted there is left alone.
        l.record.push((Fsid([8, 99]), "/data".into()));
        l.frozen
            .push((Fsid([8, 99]), "/data".into(), Instant::ZERO));
        assert_eq!(l.thaw_recorded(&mounts), vec!["/data gone"]);
        assert!(l.is_frozen(Fsid([8, 99])));
    }
}
