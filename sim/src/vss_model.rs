//! An independent reference model of the VSS policy, and a checker that holds the
//! file-system daemon's actions against it.
//!
//! The daemon decides with `hvguest_core::vss::policy::Policy::plan`; if the simulator
//! asked that same function what to expect, every policy bug would be "expected". So this
//! model is written separately and deliberately simply: a fixed table from file-system
//! type to action, read-only mounts ignored, a nullfs mount as bad as the file system its
//! source lives on; a per-mount-point action (`mount.<path>`) replaces the table's for
//! the mounts at exactly that path, and vetoes when it cannot be done to the type
//! mounted there (suspend is for UFS, sync and snapshot for ZFS), read-only or not. It shares only plain data types with the core (`Mount`, `FsAction`,
//! `VssEffect`), never code.
//!
//! What it says about one FREEZE: veto (and so no hook, sync, snapshot or suspension at
//! all), or exactly these steps: the freeze hooks in name order, then one `zpool sync` of
//! every pool behind a writable `sync`/`snapshot` dataset (each pool once, sorted), then
//! one `zfs snapshot -r POOL@<prefix><msgid>` per `snapshot` pool (sorted), then one
//! UFSSUSPEND per writable `suspend` mount, a mount only after every mount nested under
//! it, and `/` last.

use hvguest_core::vss::effect::VssEffect;
use hvguest_core::vss::policy::{FsAction, Fsid, Mount};

/// The default action per file-system type, as ARCHITECTURE.md states the default
/// policy. Types not listed are vetoed when writable.
const DEFAULT_TABLE: [(&str, FsAction); 11] = [
    ("ufs", FsAction::Suspend),
    ("zfs", FsAction::Sync),
    ("devfs", FsAction::Ignore),
    ("fdescfs", FsAction::Ignore),
    ("procfs", FsAction::Ignore),
    ("linprocfs", FsAction::Ignore),
    ("linsysfs", FsAction::Ignore),
    ("tmpfs", FsAction::Ignore),
    ("mqueuefs", FsAction::Ignore),
    ("autofs", FsAction::Ignore),
    // Ignored unless its source is on a vetoed file system (below).
    ("nullfs", FsAction::Ignore),
];

/// What the model expects of CHECK and FREEZE for one mount table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// The mount point that vetoes (`Some("")` for an empty table).
    pub veto: Option<String>,
    /// Pools to `zpool sync`, each once, sorted.
    pub sync_pools: Vec<String>,
    /// Pools to snapshot, each once, sorted.
    pub snapshot_pools: Vec<String>,
    /// Mount points to suspend (as a set, sorted by name; order rules are checked apart).
    /// On Linux: every mount point of a file system to freeze (any one of them may be
    /// the one it is frozen through).
    pub suspend: Vec<String>,
    /// Linux: the file systems to freeze, each once (`None` on FreeBSD).
    pub linux: Option<Vec<LinuxFs>>,
}

/// One Linux file system to freeze: its `major:minor`, every writable mount point it is
/// shown at (bind mounts, btrfs subvolumes), whether it sits on a loop device (it is
/// frozen before any file system that is not), and whether `/` shows it (it is frozen
/// last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxFs {
    pub fsid: Fsid,
    pub mounts: Vec<String>,
    pub loop_backed: bool,
    pub root: bool,
}

/// Linux's default actions, as docs/protocol/linux.md §2.5 and ARCHITECTURE.md state
/// them (FIFREEZE freezes ext2/3/4, xfs, btrfs, f2fs; ZFS is synced; pseudo, in-memory,
/// read-only-by-nature and FAT file systems are ignored). Types not listed veto.
const LINUX_TABLE: [(&str, FsAction); 22] = [
    ("ext2", FsAction::Suspend),
    ("ext3", FsAction::Suspend),
    ("ext4", FsAction::Suspend),
    ("xfs", FsAction::Suspend),
    ("btrfs", FsAction::Suspend),
    ("f2fs", FsAction::Suspend),
    ("zfs", FsAction::Sync),
    ("proc", FsAction::Ignore),
    ("sysfs", FsAction::Ignore),
    ("devtmpfs", FsAction::Ignore),
    ("devpts", FsAction::Ignore),
    ("tmpfs", FsAction::Ignore),
    ("cgroup2", FsAction::Ignore),
    ("securityfs", FsAction::Ignore),
    ("debugfs", FsAction::Ignore),
    ("mqueue", FsAction::Ignore),
    ("overlay", FsAction::Ignore),
    ("squashfs", FsAction::Ignore),
    ("iso9660", FsAction::Ignore),
    ("vfat", FsAction::Ignore),
    ("autofs", FsAction::Ignore),
    ("binfmt_misc", FsAction::Ignore),
];

/// The model's answer for a Linux mount table with the default policy: read-only
/// mounts ignored, the table above, the rest vetoed; the mounts to freeze grouped by
/// `major:minor` (each file system once).
pub fn expect_linux(mounts: &[Mount]) -> Expected {
    let mut e = Expected::default();
    let mut fss: Vec<LinuxFs> = Vec::new();
    if mounts.is_empty() {
        e.veto = Some(String::new());
        e.linux = Some(fss);
        return e;
    }
    for m in mounts {
        let action = if m.read_only {
            FsAction::Ignore
        } else {
            LINUX_TABLE
                .iter()
                .find(|(t, _)| *t == m.fstype)
                .map_or(FsAction::Veto, |(_, a)| *a)
        };
        match action {
            FsAction::Veto => {
                if e.veto.is_none() {
                    e.veto = Some(m.path.clone());
                }
            }
            FsAction::Suspend => {
                add_once(&mut e.suspend, m.path.clone());
                let fsid = m
                    .fsid
                    .expect("the simulated Linux table gives every mount its fsid");
                let loop_backed = m.source.starts_with("/dev/loop");
                match fss.iter_mut().find(|f| f.fsid == fsid) {
                    Some(f) => {
                        add_once(&mut f.mounts, m.path.clone());
                        f.root |= m.path == "/";
                    }
                    None => fss.push(LinuxFs {
                        fsid,
                        mounts: vec![m.path.clone()],
                        loop_backed,
                        root: m.path == "/",
                    }),
                }
            }
            FsAction::Sync | FsAction::Snapshot => add_once(&mut e.sync_pools, pool_of(&m.source)),
            FsAction::Ignore => {}
        }
    }
    e.sync_pools.sort();
    e.suspend.sort();
    e.linux = Some(fss);
    e
}

/// The table lookup: the setup's overrides (last one wins), then the defaults, then veto.
fn table(fstype: &str, overrides: &[(String, FsAction)]) -> FsAction {
    if let Some((_, a)) = overrides.iter().rev().find(|(t, _)| t == fstype) {
        return *a;
    }
    match DEFAULT_TABLE.iter().find(|(t, _)| *t == fstype) {
        Some((_, a)) => *a,
        None => FsAction::Veto,
    }
}

/// Whether `path` is `dir` or below it.
pub fn is_under(path: &str, dir: &str) -> bool {
    if dir == "/" {
        return path.starts_with('/');
    }
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Whether mount point `inner` is strictly below mount point `outer`.
pub fn strictly_under(inner: &str, outer: &str) -> bool {
    inner != outer && is_under(inner, outer)
}

/// The setup's action for this very mount point (last one wins), if any.
fn by_path(m: &Mount, by_mount: &[(String, FsAction)]) -> Option<FsAction> {
    by_mount
        .iter()
        .rev()
        .find(|(p, _)| *p == m.path)
        .map(|(_, a)| *a)
}

/// Whether the action can be carried out on this type at all.
fn possible(a: FsAction, fstype: &str) -> bool {
    match a {
        FsAction::Suspend => fstype == "ufs",
        FsAction::Sync | FsAction::Snapshot => fstype == "zfs",
        FsAction::Ignore | FsAction::Veto => true,
    }
}

/// The action for a mount that is not nullfs (or whose own path has an action).
fn plain_action(
    m: &Mount,
    overrides: &[(String, FsAction)],
    by_mount: &[(String, FsAction)],
) -> FsAction {
    let own = by_path(m, by_mount);
    if own.is_some_and(|a| !possible(a, &m.fstype)) {
        return FsAction::Veto;
    }
    if m.read_only {
        FsAction::Ignore
    } else {
        own.unwrap_or_else(|| table(&m.fstype, overrides))
    }
}

/// The action for any mount.
pub fn action(
    m: &Mount,
    all: &[Mount],
    overrides: &[(String, FsAction)],
    by_mount: &[(String, FsAction)],
) -> FsAction {
    if m.fstype != "nullfs" || m.read_only || by_path(m, by_mount).is_some() {
        return plain_action(m, overrides, by_mount);
    }
    let own = table("nullfs", overrides);
    if own != FsAction::Ignore {
        return own;
    }
    match backing(all, &m.source) {
        Some(h) if plain_action(h, overrides, by_mount) == FsAction::Veto => FsAction::Veto,
        _ => FsAction::Ignore,
    }
}

/// Where the bytes at `path` live: the mount with the longest mount point containing
/// it; when that is a nullfs mount, the same question for the path under its source,
/// at most eight times (a loop of nullfs mounts holds nothing).
fn backing<'a>(all: &'a [Mount], path: &str) -> Option<&'a Mount> {
    let mut at = path.to_string();
    for _ in 0..8 {
        let mut holder: Option<&Mount> = None;
        for cand in all.iter().filter(|c| is_under(&at, &c.path)) {
            if holder.is_none_or(|h| cand.path.len() > h.path.len()) {
                holder = Some(cand);
            }
        }
        let h = holder?;
        if h.fstype != "nullfs" {
            return Some(h);
        }
        let below = if h.path == "/" {
            &at[..]
        } else {
            &at[h.path.len()..]
        };
        at = if below.is_empty() {
            h.source.clone()
        } else {
            format!("{}{below}", h.source.trim_end_matches('/'))
        };
    }
    None
}

fn pool_of(source: &str) -> String {
    match source.find('/') {
        Some(i) => source[..i].to_string(),
        None => source.to_string(),
    }
}

fn add_once(v: &mut Vec<String>, x: String) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// The model's answer for one mount table.
pub fn expect(
    mounts: &[Mount],
    overrides: &[(String, FsAction)],
    by_mount: &[(String, FsAction)],
) -> Expected {
    let mut e = Expected::default();
    if mounts.is_empty() {
        e.veto = Some(String::new());
        return e;
    }
    for m in mounts {
        match action(m, mounts, overrides, by_mount) {
            FsAction::Veto => {
                if e.veto.is_none() {
                    e.veto = Some(m.path.clone());
                }
            }
            FsAction::Suspend => add_once(&mut e.suspend, m.path.clone()),
            FsAction::Sync => add_once(&mut e.sync_pools, pool_of(&m.source)),
            FsAction::Snapshot => {
                add_once(&mut e.sync_pools, pool_of(&m.source));
                add_once(&mut e.snapshot_pools, pool_of(&m.source));
            }
            FsAction::Ignore => {}
        }
    }
    e.sync_pools.sort();
    e.snapshot_pools.sort();
    e.suspend.sort();
    e
}

/// What the daemon did since it was handed one FREEZE.
#[derive(Clone, Debug, Default)]
struct Attempt {
    msgid: u64,
    /// The daemon already held a FREEZE: nothing may be done again.
    was_frozen: bool,
    hooks: Vec<String>,
    /// Freeze hooks of this attempt that failed (as the world ran them).
    hooks_failed: Vec<String>,
    synced: bool,
    snapshots: Vec<String>,
    suspended: Vec<String>,
    /// Linux: the file systems frozen, by `major:minor`.
    frozen: Vec<Fsid>,
}

/// Holds the daemon's FREEZE steps against the model, one effect at a time.
#[derive(Clone, Debug, Default)]
pub struct FreezeChecker {
    pub expected: Expected,
    pub snapshot_prefix: String,
    /// `hook_failure = filesystems`: a failed freeze hook does not end the FREEZE.
    /// Otherwise nothing more may be done after one, and no OK may follow it.
    pub tolerate_hook_failure: bool,
    attempt: Option<Attempt>,
}

impl FreezeChecker {
    pub fn new(expected: Expected, snapshot_prefix: String) -> FreezeChecker {
        FreezeChecker {
            expected,
            snapshot_prefix,
            tolerate_hook_failure: false,
            attempt: None,
        }
    }

    /// The kernel handed the daemon a FREEZE (`Some`) or another request (`None`); a
    /// daemon that dies forgets its attempt (`None` too).
    pub fn begin(&mut self, freeze: Option<(u64, bool)>) {
        self.attempt = freeze.map(|(msgid, was_frozen)| Attempt {
            msgid,
            was_frozen,
            ..Attempt::default()
        });
    }

    /// The same checker, for a daemon with `hook_failure = filesystems` (`yes`).
    pub fn tolerating_hook_failure(mut self, yes: bool) -> FreezeChecker {
        self.tolerate_hook_failure = yes;
        self
    }

    /// A freeze hook of the daemon's FREEZE ended so (`ok` false: non-zero, killed, not
    /// started).
    pub fn hook_ended(&mut self, name: &str, ok: bool) {
        if let (Some(a), false) = (self.attempt.as_mut(), ok) {
            a.hooks_failed.push(name.to_string());
        }
    }

    /// One effect of the daemon: an error says which rule it breaks.
    pub fn effect(&mut self, e: &VssEffect) -> Result<(), String> {
        let exp = &self.expected;
        let freeze_arg = crate::vss::program_argv(e)
            .is_some_and(|argv| argv.last().is_some_and(|a| a == "freeze"));
        let acts = freeze_arg
            || matches!(
                e,
                VssEffect::ZpoolSync { .. }
                    | VssEffect::ZfsSnapshot { .. }
                    | VssEffect::Suspend { .. }
            );
        if !acts {
            return Ok(());
        }
        let Some(a) = self.attempt.as_mut() else {
            return Err(format!("{e:?} outside any FREEZE"));
        };
        if let Some(v) = &exp.veto {
            return Err(format!(
                "{e:?} although the model vetoes (at {v:?}): nothing may be done"
            ));
        }
        if a.was_frozen {
            return Err(format!("{e:?} for a FREEZE while already frozen"));
        }
        if !self.tolerate_hook_failure && !a.hooks_failed.is_empty() {
            return Err(format!(
                "{e:?} after freeze hook {:?} failed (hook_failure = veto)",
                a.hooks_failed
            ));
        }
        match e {
            VssEffect::Run { .. } | VssEffect::RunHook { .. } => {
                let argv = crate::vss::program_argv(e).unwrap_or_default();
                let name = argv.first().cloned().unwrap_or_default();
                if a.synced || !a.snapshots.is_empty() || !a.suspended.is_empty() {
                    return Err(format!(
                        "freeze hook {name} ran after the file systems were touched"
                    ));
                }
                if a.hooks.last().is_some_and(|last| *last >= name) {
                    return Err(format!(
                        "freeze hook {name} ran after {:?}: not in name order",
                        a.hooks
                    ));
                }
                a.hooks.push(name);
            }
            VssEffect::ZpoolSync { pools, .. } => {
                if a.synced {
                    return Err("a second zpool sync in one FREEZE".into());
                }
                if !a.snapshots.is_empty() || !a.suspended.is_empty() {
                    return Err("zpool sync after a snapshot or a suspension".into());
                }
                if *pools != exp.sync_pools {
                    return Err(format!(
                        "zpool sync {pools:?}, the model wants {:?}",
                        exp.sync_pools
                    ));
                }
                a.synced = true;
            }
            VssEffect::ZfsSnapshot { snapshot, .. } => {
                let want_name = format!("{}{}", self.snapshot_prefix, a.msgid);
                let (pool, name) = snapshot.split_once('@').unwrap_or((snapshot, ""));
                if name != want_name {
                    return Err(format!(
                        "snapshot {snapshot}: the name should be {want_name}"
                    ));
                }
                if !a.synced {
                    return Err(format!("snapshot {snapshot} before the zpool sync"));
                }
                if !a.suspended.is_empty() {
                    return Err(format!("snapshot {snapshot} after a suspension"));
                }
                match exp.snapshot_pools.get(a.snapshots.len()) {
                    Some(p) if p == pool => a.snapshots.push(pool.to_string()),
                    other => {
                        return Err(format!(
                            "snapshot of {pool} after {:?}: the model wants {other:?} next of {:?}",
                            a.snapshots, exp.snapshot_pools
                        ))
                    }
                }
            }
            VssEffect::Suspend { mount, fsid, .. } if exp.linux.is_some() => {
                let fss = exp.linux.as_deref().unwrap_or_default();
                let Some(fs) = fss.iter().find(|f| f.mounts.contains(mount)) else {
                    return Err(format!(
                        "freezes {mount}, the model freezes only {:?}",
                        exp.suspend
                    ));
                };
                if *fsid != Some(fs.fsid) {
                    return Err(format!(
                        "freezes {mount} as {fsid:?}, the mount table shows {} there",
                        fs.fsid
                    ));
                }
                if a.frozen.contains(&fs.fsid) {
                    return Err(format!(
                        "freezes {} a second time (at {mount}; it is at {:?})",
                        fs.fsid, fs.mounts
                    ));
                }
                let sync_done = a.synced || exp.sync_pools.is_empty();
                if !sync_done {
                    return Err(format!("freezes {mount} before the zpool sync"));
                }
                // Loop-backed file systems first (freezing one syncs through its image,
                // which waits forever on a frozen file system), `/` last.
                let left = |f: &&LinuxFs| f.fsid != fs.fsid && !a.frozen.contains(&f.fsid);
                if !fs.loop_backed {
                    if let Some(l) = fss.iter().filter(left).find(|f| f.loop_backed) {
                        return Err(format!(
                            "freezes {mount} before the loop-backed {:?}",
                            l.mounts
                        ));
                    }
                }
                if fs.root {
                    if let Some(o) = fss.iter().find(left) {
                        return Err(format!(
                            "freezes {mount} ({}, the file system of /) before {:?}",
                            fs.fsid, o.mounts
                        ));
                    }
                }
                a.frozen.push(fs.fsid);
                a.suspended.push(mount.clone());
            }
            VssEffect::Suspend { mount, .. } => {
                if !exp.suspend.contains(mount) {
                    return Err(format!(
                        "suspends {mount}, the model suspends only {:?}",
                        exp.suspend
                    ));
                }
                if a.suspended.contains(mount) {
                    return Err(format!("suspends {mount} twice"));
                }
                let sync_done = a.synced || exp.sync_pools.is_empty();
                if !sync_done || a.snapshots.len() != exp.snapshot_pools.len() {
                    return Err(format!("suspends {mount} before the ZFS steps are done"));
                }
                // Deepest first: every suspend mount below this one already suspended;
                // `/` after all others.
                if let Some(below) = exp
                    .suspend
                    .iter()
                    .find(|m| strictly_under(m, mount) && !a.suspended.contains(*m))
                {
                    return Err(format!(
                        "suspends {mount} before {below}, which is below it"
                    ));
                }
                a.suspended.push(mount.clone());
            }
            _ => {}
        }
        Ok(())
    }

    /// The daemon answered its FREEZE with OK.
    pub fn answered_ok(&self) -> Result<(), String> {
        let exp = &self.expected;
        if let Some(v) = &exp.veto {
            return Err(format!(
                "FREEZE answered OK although the model vetoes at {v:?}"
            ));
        }
        let Some(a) = self.attempt.as_ref() else {
            return Err("FREEZE answered OK, but the daemon was not handed one".into());
        };
        if a.was_frozen {
            return Ok(());
        }
        if !self.tolerate_hook_failure && !a.hooks_failed.is_empty() {
            return Err(format!(
                "FREEZE answered OK although freeze hook {:?} failed (hook_failure = veto)",
                a.hooks_failed
            ));
        }
        if let Some(fss) = &exp.linux {
            let mut want: Vec<Fsid> = fss.iter().map(|f| f.fsid).collect();
            want.sort();
            let mut done = a.frozen.clone();
            done.sort();
            if done != want {
                return Err(format!(
                    "FREEZE answered OK after freezing {:?}, the model wants {want:?}",
                    a.suspended
                ));
            }
        }
        let mut done = a.suspended.clone();
        done.sort();
        if exp.linux.is_none() && done != exp.suspend {
            return Err(format!(
                "FREEZE answered OK after suspending {:?}, the model wants {:?}",
                a.suspended, exp.suspend
            ));
        }
        if a.synced == exp.sync_pools.is_empty() {
            return Err(format!(
                "FREEZE answered OK, zpool sync run: {}, the model wants pools {:?}",
                a.synced, exp.sync_pools
            ));
        }
        if a.snapshots != exp.snapshot_pools {
            return Err(format!(
                "FREEZE answered OK after snapshots of {:?}, the model wants {:?}",
                a.snapshots, exp.snapshot_pools
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str, p: &str, src: &str, ro: bool) -> Mount {
        Mount {
            fstype: t.into(),
            path: p.into(),
            read_only: ro,
            source: src.into(),
            fsid: None,
        }
    }

    fn lm(t: &str, p: &str, src: &str, ro: bool, dev: [i32; 2]) -> Mount {
        Mount {
            fsid: Some(Fsid(dev)),
            ..m(t, p, src, ro)
        }
    }

    fn suspend(mount: &str, dev: [i32; 2]) -> VssEffect {
        VssEffect::Suspend {
            mount: mount.into(),
            fsid: Some(Fsid(dev)),
            auto_thaw_after: std::time::Duration::from_secs(31),
        }
    }

    #[test]
    fn linux_file_systems_each_once_loop_backed_first_root_last() {
        let mounts = [
            lm("ext4", "/", "/dev/sda2", false, [8, 2]),
            lm("tmpfs", "/run", "tmpfs", false, [0, 41]),
            lm("vfat", "/boot/efi", "/dev/sda15", false, [8, 15]),
            lm("xfs", "/data", "/dev/sdb1", false, [8, 17]),
            lm("xfs", "/srv/bind0", "/dev/sdb1", false, [8, 17]),
            lm("ext4", "/srv/bind1", "/dev/sda2", true, [8, 2]),
            lm("ext4", "/mnt/img0", "/dev/loop0", false, [7, 0]),
            lm("squashfs", "/snap/core/1", "/dev/loop9", true, [7, 9]),
            lm("nfs4", "/home", "srv:/home", true, [0, 99]),
        ];
        let e = expect_linux(&mounts);
        assert_eq!(e.veto, None);
        let fss = e.linux.clone().unwrap();
        assert_eq!(fss.len(), 3);
        assert_eq!(fss[1].mounts, vec!["/data", "/srv/bind0"]);
        assert!(fss[2].loop_backed && fss[0].root);
        let mut rw = mounts.to_vec();
        rw[8].read_only = false;
        assert_eq!(expect_linux(&rw).veto, Some("/home".into()));

        let mut c = FreezeChecker::new(e, "hvguest-".into());
        c.begin(Some((5, false)));
        assert!(c
            .effect(&suspend("/data", [8, 17]))
            .unwrap_err()
            .contains("loop-backed"));
        c.effect(&suspend("/mnt/img0", [7, 0])).unwrap();
        assert!(c
            .effect(&suspend("/", [8, 2]))
            .unwrap_err()
            .contains("before"));
        assert!(c
            .effect(&suspend("/data", [8, 99]))
            .unwrap_err()
            .contains("mount table"));
        c.effect(&suspend("/srv/bind0", [8, 17])).unwrap();
        assert!(c
            .effect(&suspend("/data", [8, 17]))
            .unwrap_err()
            .contains("second time"));
        assert!(
            c.effect(&suspend("/run", [0, 41])).is_err(),
            "tmpfs is ignored"
        );
        assert!(c.answered_ok().is_err(), "/ is not frozen yet");
        c.effect(&suspend("/", [8, 2])).unwrap();
        c.answered_ok().unwrap();
    }

    #[test]
    fn the_table() {
        let mounts = [
            m("ufs", "/", "/dev/da0p2", false),
            m("ufs", "/usr", "/dev/da0p3", true),
            m("zfs", "/data", "tank/data", false),
            m("zfs", "/data/x", "tank/data/x", false),
            m("zfs", "/z", "zroot/z", false),
            m("nfs", "/mnt", "srv:/x", true),
            m("nullfs", "/jail/mnt", "/mnt/a", false),
            m("tmpfs", "/tmp", "tmpfs", false),
        ];
        let e = expect(&mounts, &[], &[]);
        assert_eq!(e.veto, None);
        assert_eq!(e.suspend, vec!["/"]);
        assert_eq!(e.sync_pools, vec!["tank", "zroot"]);
        let mut rw = mounts.to_vec();
        rw[5].read_only = false;
        assert_eq!(expect(&rw, &[], &[]).veto, Some("/mnt".into()));
        // An override for nfs makes it, and the nullfs over it, fine.
        let ov = [("nfs".to_string(), FsAction::Ignore)];
        assert_eq!(expect(&rw, &ov, &[]).veto, None);
        let snap = [("zfs".to_string(), FsAction::Snapshot)];
        assert_eq!(
            expect(&mounts, &snap, &[]).snapshot_pools,
            vec!["tank", "zroot"]
        );
        assert!(strictly_under("/var/db", "/var"));
        assert!(!strictly_under("/variable", "/var"));
        assert!(strictly_under("/var", "/"));
        assert_eq!(expect(&[], &[], &[]).veto, Some(String::new()));

        // Per mount point: exactly that path, over the type's action.
        let by = |p: &str, a| vec![(p.to_string(), a)];
        assert_eq!(
            expect(&rw, &[], &by("/mnt", FsAction::Ignore)).veto,
            None,
            "the NFS mount and the nullfs over it"
        );
        assert_eq!(
            expect(&rw, &[], &by("/mn", FsAction::Ignore)).veto,
            Some("/mnt".into())
        );
        let e = expect(&mounts, &[], &by("/data", FsAction::Snapshot));
        assert_eq!(
            (e.sync_pools, e.snapshot_pools),
            (vec!["tank".into(), "zroot".into()], vec!["tank".into()])
        );
        assert_eq!(
            expect(&mounts, &[], &by("/", FsAction::Veto)).veto,
            Some("/".into())
        );
        assert_eq!(
            expect(&mounts, &[], &by("/", FsAction::Ignore)).suspend,
            Vec::<String>::new()
        );
        // Read-only stays ignored, unless the action cannot be done to that type.
        assert_eq!(expect(&mounts, &[], &by("/usr", FsAction::Veto)).veto, None);
        assert_eq!(
            expect(&mounts, &[], &by("/usr", FsAction::Sync)).veto,
            Some("/usr".into())
        );
        assert_eq!(
            expect(&mounts, &[], &by("/z", FsAction::Suspend)).veto,
            Some("/z".into())
        );
    }
}
