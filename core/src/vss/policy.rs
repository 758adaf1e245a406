//! What to do with each mounted file system on CHECK and FREEZE.
//!
//! The stock daemon vetoes any writable non-UFS mount (so every ZFS guest) and cannot
//! freeze two UFS file systems (docs/protocol/vss.md §3.3, §3.4, §6). Here the action is per
//! file-system type and configurable; the defaults let a ZFS-root guest and a guest with
//! several UFS file systems be backed up.

use std::collections::BTreeMap;

use crate::layout::Layout;

/// What FREEZE does with a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FsAction {
    /// Writes stopped until THAW: `UFSSUSPEND` through its own `/dev/ufssuspend`
    /// descriptor on FreeBSD, FIFREEZE on Linux.
    Suspend,
    /// `zpool sync` of the pool behind it.
    Sync,
    /// `zpool sync`, then `zfs snapshot -r POOL@hvguest-<msgid>`.
    Snapshot,
    /// Nothing: not on a virtual disk, or cannot change.
    Ignore,
    /// CHECK fails: the backup would not be consistent.
    Veto,
}

impl FsAction {
    /// `freeze` is another name of `suspend`: Linux's word for the same thing.
    pub fn parse(s: &str) -> Option<FsAction> {
        Some(match s {
            "suspend" | "freeze" => FsAction::Suspend,
            "sync" => FsAction::Sync,
            "snapshot" => FsAction::Snapshot,
            "ignore" => FsAction::Ignore,
            "veto" => FsAction::Veto,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            FsAction::Suspend => "suspend",
            FsAction::Sync => "sync",
            FsAction::Snapshot => "snapshot",
            FsAction::Ignore => "ignore",
            FsAction::Veto => "veto",
        }
    }
}

/// A file system's identity while it is mounted: `statfs.f_fsid`, two 32-bit words
/// (docs/protocol/vss.md §8.3). UFSSUSPEND takes it, not a path; so the freezer suspends
/// exactly the file system the plan was made for, even if another one was mounted at
/// the same path since the mount table was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Fsid(pub [i32; 2]);

impl std::fmt::Display for Fsid {
    /// `val0:val1`, as the freezer's line protocol writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0[0], self.0[1])
    }
}

impl std::str::FromStr for Fsid {
    type Err = ();

    /// `val0:val1`, each a decimal `i32`.
    fn from_str(s: &str) -> Result<Fsid, ()> {
        let (a, b) = s.split_once(':').ok_or(())?;
        let word = |w: &str| {
            let digits = w.strip_prefix('-').unwrap_or(w);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(());
            }
            w.parse::<i32>().map_err(|_| ())
        };
        Ok(Fsid([word(a)?, word(b)?]))
    }
}

/// One entry of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Mount {
    pub fstype: String,
    pub path: String,
    pub read_only: bool,
    /// `f_mntfromname`: the device, dataset (`zroot/ROOT/default`) or nullfs source.
    pub source: String,
    /// `f_fsid`, where the mount table gives it (FreeBSD's `getmntinfo`; emulation
    /// derives one from the source). Without it the freezer looks the path up itself.
    pub fsid: Option<Fsid>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub by_type: BTreeMap<String, FsAction>,
    /// For types not in the table.
    pub default: FsAction,
    /// Per mount point (`mount.<path>` in `vss.conf`), matched exactly against the
    /// mount table's path: one scratch NFS or fuse mount should not fail every backup
    /// (the Azure backup extension's `MountsToSkip`), and one data mount may need a veto
    /// its type does not have. It replaces the type's action; a read-only mount is still
    /// ignored, and an action that does not fit the mount's type vetoes
    /// ([`PolicyError::Misfit`]), since what the administrator asked cannot be done.
    pub by_mount: BTreeMap<String, FsAction>,
    /// Whose kernel: what `suspend` can be set for (`rules::action_fits`).
    pub layout: Layout,
}

/// Types ignored by default: in memory or synthetic, nothing of theirs is on a disk the
/// host snapshots.
pub const PSEUDO_TYPES: [&str; 9] = [
    "devfs",
    "fdescfs",
    "procfs",
    "linprocfs",
    "linsysfs",
    "tmpfs",
    "mqueuefs",
    "autofs",
    "nullfs",
];

/// Linux's file systems that FIFREEZE freezes (docs/protocol/linux.md §2.5).
pub const LINUX_FREEZE_TYPES: [&str; 9] = [
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "nilfs2",
];

/// Linux's types ignored by default: in memory or synthetic; an overlay, whose upper
/// layer is a directory of another mount that is frozen on its own; read-only by
/// nature (squashfs, iso9660); FAT, which cannot freeze and on a Hyper-V guest is
/// the EFI system partition (the stock daemon skips `vfat` too); and the FUSE views a
/// desktop session or a container runtime mounts over other file systems (`lxcfs`,
/// GNOME's `gvfsd-fuse`, the document portal), which hold nothing of their own.
pub const LINUX_IGNORED_TYPES: [&str; 34] = [
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "ramfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "efivarfs",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
    "overlay",
    "squashfs",
    "iso9660",
    "vfat",
    "msdos",
    "exfat",
    "nfsd",
    "zram",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
];

impl Default for Policy {
    /// FreeBSD's table.
    fn default() -> Policy {
        Policy::for_layout(Layout::FreeBsd)
    }
}

impl Policy {
    /// The built-in table for a kernel: on FreeBSD `ufs` suspended, `zfs` synced, the
    /// [`PSEUDO_TYPES`] ignored; on Linux the [`LINUX_FREEZE_TYPES`] frozen, `zfs`
    /// synced, the [`LINUX_IGNORED_TYPES`] ignored. Any other type (NFS, SMB, FUSE...)
    /// vetoes: nothing we do makes it consistent.
    pub fn for_layout(layout: Layout) -> Policy {
        let mut by_type = BTreeMap::new();
        let (frozen, ignored): (&[&str], &[&str]) = match layout {
            Layout::FreeBsd => (&["ufs"], &PSEUDO_TYPES),
            Layout::Linux => (&LINUX_FREEZE_TYPES, &LINUX_IGNORED_TYPES),
        };
        for t in frozen {
            by_type.insert(t.to_string(), FsAction::Suspend);
        }
        by_type.insert("zfs".to_string(), FsAction::Sync);
        for t in ignored {
            by_type.insert(t.to_string(), FsAction::Ignore);
        }
        Policy {
            by_type,
            default: FsAction::Veto,
            by_mount: BTreeMap::new(),
            layout,
        }
    }
}

/// Why CHECK or FREEZE refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{fstype} file system at {path} is writable and its policy is veto")]
    Veto { fstype: String, path: String },
    #[error("the mount table is empty")]
    NoMounts,
    #[error(
        "`mount.{path} = {}` does not fit the {fstype} file system mounted there: {}",
        action.name(), crate::vss::rules::Misfit { action: *action, layout: *layout }
    )]
    Misfit {
        path: String,
        fstype: String,
        action: FsAction,
        layout: Layout,
    },
}

/// Why a mount gets its action: what `hv_vss_daemon --check-config` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Read-only: cannot change, whatever the policy says.
    ReadOnly,
    /// `mount.<path>`.
    Mount,
    /// `policy.<fstype>` (or the built-in table).
    Type,
    /// `policy.default`: the type is not in the table.
    Default,
    /// A nullfs mount whose source lies on this mount point, which vetoes.
    NullfsSource(String),
}

/// One mount's action and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: FsAction,
    pub reason: Reason,
}

/// What FREEZE will do, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreezePlan {
    /// ZFS pools to `zpool sync`, sorted.
    pub sync_pools: Vec<String>,
    /// Pools to snapshot after the sync, sorted.
    pub snapshot_pools: Vec<String>,
    /// Mount points to suspend, `/` last (deeper mounts first).
    pub suspend: Vec<String>,
    /// The `f_fsid` of each mount point to suspend, where the table gives one: the file
    /// system mounted last at that path, the one a lookup of the path finds.
    pub fsids: BTreeMap<String, Fsid>,
}

impl FreezePlan {
    pub fn is_empty(&self) -> bool {
        self.sync_pools.is_empty() && self.snapshot_pools.is_empty() && self.suspend.is_empty()
    }
}

fn zfs_pool(source: &str) -> String {
    source.split('/').next().unwrap_or(source).to_string()
}

/// The mount holding `path` (longest mount-point prefix).
fn mount_of<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| {
            path == m.path
                || m.path == "/"
                || path.starts_with(&format!("{}/", m.path.trim_end_matches('/')))
        })
        .max_by_key(|m| m.path.len())
}

/// Hops through nullfs mounts before giving up on finding where a nullfs mount's
/// files live (a loop, or absurd nesting).
const NULLFS_HOPS: usize = 8;

/// The file system a nullfs mount's files live on: the mount holding its source,
/// followed through other nullfs mounts (a path inside one lives under that mount's
/// own source). `None` for a loop or nesting deeper than [`NULLFS_HOPS`].
fn nullfs_backing<'a>(mounts: &'a [Mount], m: &Mount) -> Option<&'a Mount> {
    let mut path = m.source.clone();
    for _ in 0..NULLFS_HOPS {
        let holder = mount_of(mounts, &path)?;
        if holder.fstype != "nullfs" {
            return Some(holder);
        }
        let rest = path
            .strip_prefix(holder.path.trim_end_matches('/'))
            .unwrap_or("")
            .to_string();
        path = format!("{}{rest}", holder.source.trim_end_matches('/'));
    }
    None
}

impl Policy {
    pub fn action(&self, fstype: &str) -> FsAction {
        self.by_type.get(fstype).copied().unwrap_or(self.default)
    }

    /// The action for one mount: a `mount.<path>` setting that does not fit its type
    /// is an error (even on a read-only mount: the setting is wrong either way);
    /// read-only mounts cannot change; then the mount's own setting, then its type's;
    /// a nullfs mount its type ignores is as good as the file system its source lives
    /// on (followed through other nullfs mounts). An explicit `mount.<path> = ignore` on a nullfs mount is taken at its word.
    pub fn decide(&self, m: &Mount, all: &[Mount]) -> Result<Decision, PolicyError> {
        let own = self.by_mount.get(&m.path).copied();
        if let Some(action) = own {
            if crate::vss::rules::action_fits(action, &m.fstype, self.layout).is_err() {
                return Err(PolicyError::Misfit {
                    path: m.path.clone(),
                    fstype: m.fstype.clone(),
                    action,
                    layout: self.layout,
                });
            }
        }
        let decision = |action, reason| Ok(Decision { action, reason });
        if m.read_only {
            return decision(FsAction::Ignore, Reason::ReadOnly);
        }
        if let Some(action) = own {
            return decision(action, Reason::Mount);
        }
        let reason = if self.by_type.contains_key(&m.fstype) {
            Reason::Type
        } else {
            Reason::Default
        };
        let a = self.action(&m.fstype);
        if m.fstype == "nullfs" && a == FsAction::Ignore {
            if let Some(src) = nullfs_backing(all, m) {
                if self.action_for(src, all) == FsAction::Veto {
                    return decision(FsAction::Veto, Reason::NullfsSource(src.path.clone()));
                }
            }
        }
        decision(a, reason)
    }

    /// [`Policy::decide`]'s action, a misfit counting as a veto.
    pub fn action_for(&self, m: &Mount, all: &[Mount]) -> FsAction {
        self.decide(m, all).map_or(FsAction::Veto, |d| d.action)
    }

    /// CHECK and FREEZE both start here: a veto, or what to do.
    pub fn plan(&self, mounts: &[Mount]) -> Result<FreezePlan, PolicyError> {
        if mounts.is_empty() {
            return Err(PolicyError::NoMounts);
        }
        let mut plan = FreezePlan::default();
        for m in mounts {
            match self.decide(m, mounts)?.action {
                FsAction::Veto => {
                    return Err(PolicyError::Veto {
                        fstype: m.fstype.clone(),
                        path: m.path.clone(),
                    })
                }
                FsAction::Suspend => {
                    plan.suspend.push(m.path.clone());
                    match m.fsid {
                        Some(f) => plan.fsids.insert(m.path.clone(), f),
                        None => plan.fsids.remove(&m.path),
                    };
                }
                FsAction::Sync => plan.sync_pools.push(zfs_pool(&m.source)),
                FsAction::Snapshot => {
                    plan.sync_pools.push(zfs_pool(&m.source));
                    plan.snapshot_pools.push(zfs_pool(&m.source));
                }
                FsAction::Ignore => {}
            }
        }
        for v in [
            &mut plan.sync_pools,
            &mut plan.snapshot_pools,
            &mut plan.suspend,
        ] {
            v.sort();
            v.dedup();
        }
        // Loop-backed file systems first: freezing one syncs it through its image file,
        // which would wait forever if the file system holding the image were frozen
        // already. Then deeper mounts, `/` last: suspending `/` first could block the
        // lookups the later suspensions need.
        let loop_backed: Vec<&str> = mounts
            .iter()
            .filter(|m| m.source.starts_with("/dev/loop"))
            .map(|m| m.path.as_str())
            .collect();
        plan.suspend.sort_by(|a, b| {
            (a == "/")
                .cmp(&(b == "/"))
                .then(
                    loop_backed
                        .contains(&b.as_str())
                        .cmp(&loop_backed.contains(&a.as_str())),
                )
                .then(b.len().cmp(&a.len()))
                .then(a.cmp(b))
        });
        // One file system is suspended once, however many mount points show it (bind
        // mounts, btrfs subvolumes: a second FIFREEZE of it is EBUSY), at the place of
        // its last mount point in the order, so `/` stays last.
        let mut seen = std::collections::BTreeSet::new();
        let mut keep: Vec<String> = Vec::with_capacity(plan.suspend.len());
        for p in plan.suspend.iter().rev() {
            if plan.fsids.get(p).is_none_or(|f| seen.insert(*f)) {
                keep.push(p.clone());
            }
        }
        keep.reverse();
        plan.fsids.retain(|p, _| keep.contains(p));
        plan.suspend = keep;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(fstype: &str, path: &str, ro: bool, source: &str) -> Mount {
        Mount {
            fstype: fstype.into(),
            path: path.into(),
            read_only: ro,
            source: source.into(),
            fsid: None,
        }
    }

    #[test]
    fn fsids_are_planned_for_the_mounts_to_suspend() {
        let with = |path: &str, source: &str, id: i32| Mount {
            fsid: Some(Fsid([id, 53])),
            ..m("ufs", path, false, source)
        };
        let mounts = [
            with("/", "/dev/da0p2", 1),
            with("/var", "/dev/da0p3", 2),
            // Mounted over the first /var: a lookup of /var finds this one.
            with("/var", "/dev/da1p1", 3),
            m("zfs", "/home", false, "zroot/home"),
        ];
        let p = Policy::default().plan(&mounts).unwrap();
        assert_eq!(p.suspend, vec!["/var", "/"]);
        assert_eq!(p.fsids.get("/var"), Some(&Fsid([3, 53])));
        assert_eq!(p.fsids.get("/"), Some(&Fsid([1, 53])));
        assert_eq!(p.fsids.len(), 2);
        for (text, want) in [
            ("1:53", Ok(Fsid([1, 53]))),
            ("-2147483648:2147483647", Ok(Fsid([i32::MIN, i32::MAX]))),
            ("1:", Err(())),
            ("1", Err(())),
            ("+1:2", Err(())),
            ("1:2:3", Err(())),
            ("2147483648:0", Err(())),
        ] {
            assert_eq!(text.parse::<Fsid>(), want, "{text}");
        }
        assert_eq!(Fsid([-1, 7]).to_string(), "-1:7");
    }

    #[test]
    fn zfs_root_guest_passes_and_syncs_its_pool() {
        let mounts = [
            m("zfs", "/", false, "zroot/ROOT/default"),
            m("devfs", "/dev", false, "devfs"),
            m("zfs", "/home", false, "zroot/home"),
            m("zfs", "/var/log", false, "zroot/var/log"),
            m("tmpfs", "/tmp", false, "tmpfs"),
        ];
        let p = Policy::default().plan(&mounts).unwrap();
        assert_eq!(p.sync_pools, vec!["zroot"]);
        assert!(p.suspend.is_empty());
    }

    #[test]
    fn several_ufs_are_suspended_root_last() {
        let mounts = [
            m("ufs", "/", false, "/dev/da0p2"),
            m("ufs", "/var", false, "/dev/da0p3"),
            m("ufs", "/var/db", false, "/dev/da1p1"),
            m("ufs", "/usr", true, "/dev/da0p4"),
            m("devfs", "/dev", false, "devfs"),
        ];
        let p = Policy::default().plan(&mounts).unwrap();
        assert_eq!(p.suspend, vec!["/var/db", "/var", "/"]);
    }

    #[test]
    fn writable_nfs_vetoes_and_nullfs_follows_its_source() {
        let nfs = [
            m("ufs", "/", false, "/dev/da0p2"),
            m("nfs", "/mnt", false, "srv:/x"),
        ];
        assert!(matches!(
            Policy::default().plan(&nfs),
            Err(PolicyError::Veto { .. })
        ));
        let ro_nfs = [
            m("ufs", "/", false, "/dev/da0p2"),
            m("nfs", "/mnt", true, "srv:/x"),
        ];
        assert!(Policy::default().plan(&ro_nfs).is_ok());
        let jail = [
            m("ufs", "/", false, "d"),
            m("nullfs", "/jail/usr", false, "/usr"),
        ];
        assert!(Policy::default().plan(&jail).is_ok());
        let bad = [
            m("ufs", "/", false, "d"),
            m("nfs", "/mnt", false, "s:/"),
            m("nullfs", "/j", false, "/mnt/x"),
        ];
        assert!(
            matches!(Policy::default().plan(&bad), Err(PolicyError::Veto { fstype, .. }) if fstype == "nfs")
        );
        assert_eq!(Policy::default().plan(&[]), Err(PolicyError::NoMounts));
    }

    #[test]
    fn a_nullfs_source_inside_another_nullfs_mount_is_followed_to_its_file_system() {
        // /jail/1 shows /jail/0/shared, which is /data/shared, on a writable NFS.
        let mounts = vec![
            m("nullfs", "/jail/1", false, "/jail/0/shared"),
            m("nullfs", "/jail/0", false, "/data"),
            m("nfs", "/data", false, "srv:/d"),
            m("ufs", "/", false, "/dev/da0p2"),
        ];
        let p = Policy::default();
        assert_eq!(p.action_for(&mounts[0], &mounts), FsAction::Veto);
        // A loop of nullfs mounts reaches no file system: ignored like any nullfs.
        let looped = vec![
            m("nullfs", "/a", false, "/b/x"),
            m("nullfs", "/b", false, "/a/y"),
            m("ufs", "/", false, "/dev/da0p2"),
        ];
        assert_eq!(p.action_for(&looped[0], &looped), FsAction::Ignore);
    }

    #[test]
    fn a_mount_override_replaces_the_type_exactly_at_its_path() {
        let mounts = [
            m("ufs", "/", false, "/dev/da0p2"),
            m("nfs", "/mnt/scratch", false, "srv:/scratch"),
            m("nfs", "/mnt/scratch2", false, "srv:/scratch2"),
            m("ufs", "/data", false, "/dev/da1p1"),
            m("nullfs", "/jail/a", false, "/mnt/scratch/x"),
        ];
        let mut p = Policy::default();
        p.by_mount.insert("/mnt/scratch".into(), FsAction::Ignore);
        // The exact path only: /mnt/scratch2 still vetoes.
        assert!(
            matches!(p.plan(&mounts), Err(PolicyError::Veto { path, .. }) if path == "/mnt/scratch2")
        );
        p.by_mount.insert("/mnt/scratch2".into(), FsAction::Ignore);
        p.by_mount.insert("/data".into(), FsAction::Ignore);
        let plan = p.plan(&mounts).unwrap();
        assert_eq!(plan.suspend, vec!["/"]);
        // The nullfs mount over an ignored source is ignored too.
        assert_eq!(
            p.decide(&mounts[4], &mounts),
            Ok(Decision {
                action: FsAction::Ignore,
                reason: Reason::Type
            })
        );
        assert_eq!(p.decide(&mounts[1], &mounts).unwrap().reason, Reason::Mount);
        // veto on a UFS mount the type would suspend.
        p.by_mount.insert("/data".into(), FsAction::Veto);
        assert!(matches!(p.plan(&mounts), Err(PolicyError::Veto { path, .. }) if path == "/data"));
        // Read-only wins over the override.
        let ro = [m("ufs", "/", false, "d"), m("ufs", "/data", true, "e")];
        assert_eq!(p.plan(&ro).unwrap().suspend, vec!["/"]);
        assert_eq!(p.decide(&ro[1], &ro).unwrap().reason, Reason::ReadOnly);
    }

    #[test]
    fn an_override_that_does_not_fit_the_mounted_type_vetoes() {
        let mut p = Policy::default();
        p.by_mount.insert("/data".into(), FsAction::Suspend);
        let zfs = [
            m("ufs", "/", false, "d"),
            m("zfs", "/data", true, "tank/data"),
        ];
        // Even read-only: the setting is wrong.
        let e = p.plan(&zfs).unwrap_err();
        assert_eq!(
            e,
            PolicyError::Misfit {
                path: "/data".into(),
                fstype: "zfs".into(),
                action: FsAction::Suspend,
                layout: Layout::FreeBsd,
            }
        );
        assert_eq!(
            e.to_string(),
            "`mount./data = suspend` does not fit the zfs file system mounted there: \
             `suspend` works on `ufs` only"
        );
        let ufs = [m("ufs", "/", false, "d"), m("ufs", "/data", false, "e")];
        assert_eq!(p.plan(&ufs).unwrap().suspend, vec!["/data", "/"]);
        p.by_mount.insert("/data".into(), FsAction::Snapshot);
        assert!(matches!(p.plan(&ufs), Err(PolicyError::Misfit { .. })));
        // A nullfs mount over a misfit is vetoed as over a veto.
        let j = [
            m("ufs", "/", false, "d"),
            m("ufs", "/data", false, "e"),
            m("nullfs", "/j", false, "/data/x"),
        ];
        assert_eq!(p.action_for(&j[2], &j), FsAction::Veto);
    }

    fn with_dev(fstype: &str, path: &str, source: &str, dev: [i32; 2]) -> Mount {
        Mount {
            fsid: Some(Fsid(dev)),
            ..m(fstype, path, false, source)
        }
    }

    #[test]
    fn linux_table_freezes_disks_ignores_pseudo_and_vetoes_network() {
        let p = Policy::for_layout(Layout::Linux);
        let mounts = [
            with_dev("ext4", "/", "/dev/sda1", [8, 1]),
            with_dev("xfs", "/srv", "/dev/sdb1", [8, 17]),
            with_dev("vfat", "/boot/efi", "/dev/sda15", [8, 15]),
            m("proc", "/proc", false, "proc"),
            m("tmpfs", "/run", false, "tmpfs"),
            m("overlay", "/var/lib/docker/x/merged", false, "overlay"),
            m("squashfs", "/snap/core/1", true, "/dev/loop3"),
            m("zfs", "/tank", false, "tank/data"),
        ];
        let plan = p.plan(&mounts).unwrap();
        assert_eq!(plan.suspend, ["/srv", "/"]);
        assert_eq!(plan.sync_pools, ["tank"]);
        for (t, src) in [
            ("nfs4", "srv:/x"),
            ("cifs", "//srv/x"),
            ("fuse.sshfs", "u@h:"),
        ] {
            let mut all = mounts.to_vec();
            all.push(m(t, "/mnt/remote", false, src));
            assert!(
                matches!(p.plan(&all), Err(PolicyError::Veto { ref fstype, .. }) if fstype == t),
                "{t}"
            );
        }
        // FreeBSD's table knows none of Linux's disk file systems.
        assert!(Policy::default().plan(&mounts[..1]).is_err());
    }

    #[test]
    fn linux_freezes_each_file_system_once_and_loop_backed_ones_first() {
        let p = Policy::for_layout(Layout::Linux);
        let mounts = [
            with_dev("ext4", "/", "/dev/sda1", [8, 1]),
            with_dev("btrfs", "/home", "/dev/sdb1", [8, 17]),
            // A subvolume and a bind mount of the same file systems.
            with_dev("btrfs", "/var/lib/containers", "/dev/sdb1", [8, 17]),
            with_dev("ext4", "/mnt/bind", "/dev/sda1", [8, 1]),
            // An image on /home, mounted through a loop device.
            with_dev("ext4", "/mnt/img", "/dev/loop0", [7, 0]),
        ];
        let plan = p.plan(&mounts).unwrap();
        assert_eq!(plan.suspend, ["/mnt/img", "/home", "/"]);
        assert_eq!(plan.fsids.len(), 3);
        assert!(!plan.fsids.contains_key("/mnt/bind"));
    }

    #[test]
    fn freeze_is_suspend_by_another_name() {
        assert_eq!(FsAction::parse("freeze"), Some(FsAction::Suspend));
        let mut p = Policy::for_layout(Layout::Linux);
        // Linux lets the kernel judge: an override may ask to freeze tmpfs.
        p.by_mount.insert("/scratch".into(), FsAction::Suspend);
        let plan = p
            .plan(&[
                m("tmpfs", "/scratch", false, "tmpfs"),
                m("ext4", "/", false, "/dev/sda1"),
            ])
            .unwrap();
        assert_eq!(plan.suspend, ["/scratch", "/"]);
    }
}
