//! The configuration file of `hv_vss_daemon` and `hv_vss_app`, by default
//! [`DEFAULT_CONFIG`] (`/usr/local/etc/hvguest/vss.conf` on FreeBSD, `/etc/hvguest/vss.conf`
//! on Linux).
//!
//! A missing file means the defaults below ([`defaults`]); [`SAMPLE`], installed as
//! `vss.conf.sample`, spells every one of them out. A file that cannot be read, or any
//! line that is not understood, is an error naming the file and the line: the daemons
//! refuse to start rather than guess.
//!
//! # Format
//!
//! The lines are those of every hvguest configuration file ([`crate::conf`]): one
//! `key = value` per line, comments on lines of their own, unknown keys and keys set
//! twice refused.
//!
//! * Durations are a whole number followed by `ms`, `s` or `m`: `500ms`, `4s`, `2m`.
//!   Zero is refused, and so is a value above its setting's bound (below; the rules
//!   are `core::vss::rules`), with the line named.
//!
//! # Keys
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `hook_dir` | `/usr/local/etc/hvguest/hooks.d` | absolute path of the hook directory, or `none` for no hooks; it and every directory above it must be root's and not writable by group or others (checked when hooks are listed and run, `programs.rs`) |
//! | `hook_failure` | `veto` | a freeze hook that exits non-zero or overruns `hook_timeout`: `veto` fails the FREEZE (rolled back, no backup); `filesystems` goes on freezing, answers OK and logs that the backup is only crash-consistent for that hook's application (the hook still gets its `thaw`) |
//! | `path` | `/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin` | `PATH` of hooks and commands (their only environment variable); absolute directories separated by `:` |
//! | `policy.<fstype>` | see below | what FREEZE does with writable mounts of that type: `suspend` (`ufs` only), `sync` or `snapshot` (`zfs` only), `ignore`, `veto` |
//! | `policy.default` | `veto` | for types not listed: `veto` or `ignore` |
//! | `mount.<path>` | none | what FREEZE does with the writable mount at exactly that mount point, instead of its type's policy: `suspend`, `sync`, `snapshot`, `ignore`, `veto` (whether the action fits the type mounted there is checked against the mount table: by `--check-config`, a warning at start-up, and a veto at CHECK/FREEZE) |
//! | `snapshot_prefix` | `hvguest-` | snapshots are named `POOL@<prefix><msgid>`; letters, digits, `.`, `_`, `-`, at most 64 |
//! | `snapshot_keep` | `3` | after a THAW answered OK, keep this many of our own snapshots per pool (`POOL@<prefix>` followed by digits only; nothing else is ever destroyed) and `zfs destroy -r` the older; `0` keeps all; at most 1000 |
//! | `zpool` | `/sbin/zpool` | absolute path of the `zpool` command |
//! | `zfs` | `/sbin/zfs` | absolute path of the `zfs` command |
//! | `watchdog` | `30s` | thaw by ourselves this long after a FREEZE with no THAW; more than 15 s (a THAW can come no earlier), at most 59 s (with the freezer's 1 s backstop, a freeze lasts at most `VSS_MAX_FROZEN`, 60 s, however often FREEZE repeats) |
//! | `hook_timeout` | `4s` | longest single freeze hook; at most 15 s |
//! | `hooks_total` | `5s` | all freeze hooks together |
//! | `zpool_sync_timeout` | `3s` | `zpool sync` |
//! | `zfs_snapshot_timeout` | `2s` | `zfs snapshot` |
//! | `suspend_timeout` | `1s` | all UFS suspensions together |
//! | `thaw_hook_timeout` | `4s` | longest single thaw hook; at most 25 s (one fits in the 30 s exit limit) |
//! | `app_auto_thaw` | `45s` | `hv_vss_app` thaws the application by itself this long after its FREEZE; more than `watchdog` + 1 s, so the file systems are resumed first, and at most 120 s |
//! | `app_freeze_budget` | `10s` | all of `hv_vss_app`'s freeze work; under 15 s |
//!
//! The built-in policy table: `ufs` suspend; `zfs` sync; `devfs`, `fdescfs`, `procfs`,
//! `linprocfs`, `linsysfs`, `tmpfs`, `mqueuefs`, `autofs`, `nullfs` ignore. A
//! `policy.<fstype>` line overrides one entry or adds a type. Read-only mounts are always
//! ignored; a `nullfs` mount whose policy is `ignore` is vetoed if its source lies on a
//! vetoed file system. A `mount.<path>` line replaces the type's action for the mount
//! at exactly that path (as the mount table writes it: no trailing `/`); read-only
//! mounts are still ignored.
//!
//! The kernel fails a FREEZE 15 s after the host asked. So `hooks_total +
//! zpool_sync_timeout + zfs_snapshot_timeout + suspend_timeout`, plus the fixed 1 s kept
//! to answer before the kernel's deadline and 1 s kept for the rollback, must stay under
//! 15 s; the defaults add up to 13 s, leaving the application helper (which gets the
//! FREEZE first) about 2 s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hvguest_core::layout::Layout;
use hvguest_core::vss::app::AppConfig;
use hvguest_core::vss::hooks::HookFailure;
use hvguest_core::vss::machine::{Budget, VssConfig};
use hvguest_core::vss::policy::{FsAction, Mount, Policy, Reason};
use hvguest_core::vss::rules;

use crate::conf;
pub use crate::conf::{BadLine, Problem};

/// Where the daemons look when not told otherwise.
pub const DEFAULT_CONFIG: &str = crate::system::VSS_CONFIG;
pub const DEFAULT_HOOK_DIR: &str = "/usr/local/etc/hvguest/hooks.d";
/// Linux's hook directory (the FHS has no `/usr/local/etc` habit for services).
pub const LINUX_HOOK_DIR: &str = "/etc/hvguest/hooks.d";
pub const DEFAULT_ZPOOL: &str = "/sbin/zpool";
pub const DEFAULT_ZFS: &str = "/sbin/zfs";
pub const DEFAULT_ENV_PATH: &str = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin";
/// The longest `snapshot_prefix` (ZFS names are limited to 255 bytes in all).
pub const MAX_SNAPSHOT_PREFIX: usize = 64;

/// A complete configuration equal to the defaults, with comments: installed as
/// `vss.conf.sample`.
pub const SAMPLE: &str = "\
# vss.conf: configuration of hv_vss_daemon and hv_vss_app.
#
# Every setting below is the default; a missing file means the same.
# One `key = value` per line. Lines starting with # are comments; a value
# cannot contain #. Durations are whole numbers with ms, s or m (500ms, 4s, 2m).
# Unknown keys and keys set twice are errors.

# The hook directory: its executables run with `freeze` (in name order) before
# the file systems are frozen and with `thaw` (in reverse order) after. A hook
# must be a regular file (not a link) owned by root and not writable by group
# or others; the directory and every one above it must be owned by root and
# not writable by group or others. `none` runs no hooks.
hook_dir = /usr/local/etc/hvguest/hooks.d

# A freeze hook that fails (exits non-zero or overruns hook_timeout):
#   veto         the FREEZE fails and is undone: no backup this time
#   filesystems  the file systems are frozen anyway and the backup goes on,
#                crash-consistent for that hook's application (its thaw
#                still runs; the log names the hook)
hook_failure = veto

# PATH of hooks and commands: the only variable in their environment.
path = /sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin

# What FREEZE does with the writable file systems of each type:
#   suspend   UFSSUSPEND until THAW (ufs only)
#   sync      `zpool sync` of its pool (zfs only)
#   snapshot  `zpool sync`, then `zfs snapshot -r POOL@<snapshot_prefix><msgid>`
#             (zfs only)
#   ignore    nothing: in memory, or nothing the backup needs
#   veto      CHECK fails: the backup would not be consistent
# Read-only mounts are always ignored. A nullfs mount set to ignore is vetoed
# when its source lies on a vetoed file system.
policy.ufs = suspend
policy.zfs = sync
policy.devfs = ignore
policy.fdescfs = ignore
policy.procfs = ignore
policy.linprocfs = ignore
policy.linsysfs = ignore
policy.tmpfs = ignore
policy.mqueuefs = ignore
policy.autofs = ignore
policy.nullfs = ignore
# Every type not listed (nfs, msdosfs, fusefs...): veto or ignore.
policy.default = veto

# Per mount point, instead of its type's action: the mount point exactly as
# mount(8) shows it (absolute, no trailing /). None by default, for example:
#   mount./mnt/scratch = ignore
#   mount./data = veto
# Whether the action fits the file system mounted there is checked against
# the mount table by `hv_vss_daemon --check-config` (which also shows what
# CHECK and FREEZE would do to every mount), and a misfit vetoes the backup.

# Snapshot names: letters, digits, `.`, `_`, `-`.
snapshot_prefix = hvguest-
# After a backup ends well (THAW answered OK), keep this many of our own
# snapshots per pool, <snapshot_prefix> followed by digits only, and destroy
# the older ones (`zfs destroy -r`). Snapshots of other programs, and names
# with anything but digits after the prefix, are never touched. 0 keeps all.
snapshot_keep = 3
zpool = /sbin/zpool
zfs = /sbin/zfs

# Thaw by ourselves if no THAW came this long after a FREEZE (more than 15s,
# at most 59s). However often FREEZE repeats, a freeze lasts at most 60s.
watchdog = 30s

# The kernel fails a FREEZE 15s after the host asked. hooks_total +
# zpool_sync_timeout + zfs_snapshot_timeout + suspend_timeout, plus 2s kept to
# roll back and to answer in time, must stay under 15s. hook_timeout is at
# most 15s.
hook_timeout = 4s
hooks_total = 5s
zpool_sync_timeout = 3s
zfs_snapshot_timeout = 2s
suspend_timeout = 1s
# Each thaw hook (thaw hooks run after the answer); at most 25s.
thaw_hook_timeout = 4s

# hv_vss_app: thaw the application by itself this long after its FREEZE if no
# THAW came (more than watchdog + 1s, so file systems are resumed first; at
# most 120s), and the time all its freeze work may take (under 15s).
app_auto_thaw = 45s
app_freeze_budget = 10s
";

/// Everything both daemons read from the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedConfig {
    pub vss: VssConfig,
    /// `work` is always the default here: `hv_vss_app` takes it from its command line.
    pub app: AppConfig,
    pub zpool: PathBuf,
    pub zfs: PathBuf,
    /// `PATH` for hooks and commands.
    pub path: String,
    /// The line of each `mount.<path>` setting, by mount point: whether the action fits
    /// is known only with the mount table ([`LoadedConfig::check_mounts`]), and that
    /// error must name the line too.
    pub mount_lines: BTreeMap<String, usize>,
}

impl LoadedConfig {
    /// The `mount.<path>` settings against a mount table: the first line (in file
    /// order) whose action does not fit the type mounted at its path. A setting for a
    /// path not mounted now is no error (it may be mounted later, by autofs or by
    /// hand).
    pub fn check_mounts(&self, mounts: &[Mount]) -> Result<(), BadLine> {
        let mut worst: Option<BadLine> = None;
        for m in mounts {
            let Some(&action) = self.vss.policy.by_mount.get(&m.path) else {
                continue;
            };
            let Err(misfit) = rules::action_fits(action, &m.fstype, self.vss.policy.layout) else {
                continue;
            };
            let line = self.mount_lines.get(&m.path).copied().unwrap_or(0);
            if worst.as_ref().is_some_and(|w| w.line <= line) {
                continue;
            }
            worst = Some(BadLine {
                line,
                problem: Problem::BadValue {
                    key: format!("mount.{}", m.path),
                    value: action.name().to_string(),
                    why: format!("{} is a `{}` file system, and {misfit}", m.path, m.fstype),
                },
            });
        }
        worst.map_or(Ok(()), Err)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {problem}", path.display())]
    Bad {
        path: PathBuf,
        /// 1-based.
        line: usize,
        problem: Problem,
    },
}

/// The configuration a missing file means, on FreeBSD.
pub fn defaults() -> LoadedConfig {
    defaults_for(Layout::FreeBsd)
}

/// The configuration a missing file means for the daemon of `layout`'s kernel: its
/// built-in policy table (`Policy::for_layout`).
pub fn defaults_for(layout: Layout) -> LoadedConfig {
    LoadedConfig {
        vss: VssConfig {
            layout,
            policy: Policy::for_layout(layout),
            hook_dir: Some(
                match layout {
                    Layout::FreeBsd => DEFAULT_HOOK_DIR,
                    Layout::Linux => LINUX_HOOK_DIR,
                }
                .to_string(),
            ),
            ..VssConfig::default()
        },
        app: AppConfig {
            budget: Budget::default(),
            ..AppConfig::default()
        },
        zpool: PathBuf::from(DEFAULT_ZPOOL),
        zfs: PathBuf::from(DEFAULT_ZFS),
        path: DEFAULT_ENV_PATH.to_string(),
        mount_lines: BTreeMap::new(),
    }
}

/// Reads `path` for FreeBSD's daemons ([`load_for`]).
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    load_for(path, Layout::FreeBsd)
}

/// Reads `path`: the defaults if it does not exist, else [`parse_for`] of its contents.
pub fn load_for(path: &Path, layout: Layout) -> Result<LoadedConfig, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => parse_for(&bytes, layout).map_err(|b| ConfigError::Bad {
            path: path.to_path_buf(),
            line: b.line,
            problem: b.problem,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(defaults_for(layout)),
        Err(source) => Err(ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What `hv_vss_daemon --check-config` prints for a valid configuration and the
/// current mount table: per mount, the action CHECK and FREEZE take and which setting
/// decided it (the core's `Policy::decide`), then what CHECK answers and what FREEZE
/// does, in order (the core's `Policy::plan`).
pub fn plan_report(cfg: &LoadedConfig, mounts: &[Mount]) -> String {
    let policy = &cfg.vss.policy;
    let mut rows = vec![[
        "mount point".to_string(),
        "type".to_string(),
        "action".to_string(),
        "because".to_string(),
    ]];
    for m in mounts {
        let (action, why) = match policy.decide(m, mounts) {
            Ok(d) => (
                d.action.name().to_string(),
                match d.reason {
                    Reason::ReadOnly => "read-only".to_string(),
                    Reason::Mount => match cfg.mount_lines.get(&m.path) {
                        Some(line) => format!("mount.{} (line {line})", m.path),
                        None => format!("mount.{}", m.path),
                    },
                    Reason::Type => format!("policy.{}", m.fstype),
                    Reason::Default => "policy.default".to_string(),
                    Reason::NullfsSource(src) => {
                        format!("nullfs over {src}, which vetoes")
                    }
                },
            ),
            Err(e) => ("veto".to_string(), e.to_string()),
        };
        rows.push([m.path.clone(), m.fstype.clone(), action, why]);
    }
    let mut widths = [0; 3];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        out.push_str(&format!(
            "{:w0$}  {:w1$}  {:w2$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    match policy.plan(mounts) {
        Err(e) => out.push_str(&format!("CHECK and FREEZE fail, nothing is frozen: {e}.\n")),
        Ok(plan) => {
            out.push_str("CHECK succeeds.\n");
            let mut steps = Vec::new();
            if let Some(dir) = &cfg.vss.hook_dir {
                steps.push(format!("run the freeze hooks in {dir}"));
            }
            if !plan.sync_pools.is_empty() {
                steps.push(format!("zpool sync {}", plan.sync_pools.join(" ")));
            }
            for pool in &plan.snapshot_pools {
                steps.push(format!(
                    "zfs snapshot -r {pool}@{}<msgid>",
                    cfg.vss.snapshot_prefix
                ));
            }
            if !plan.suspend.is_empty() {
                steps.push(format!("suspend {}", plan.suspend.join(", ")));
            }
            if plan.is_empty() {
                steps.push("no file system to sync, snapshot or suspend".to_string());
            }
            out.push_str(&format!("FREEZE: {}.\n", steps.join("; then ")));
            if !plan.snapshot_pools.is_empty() {
                out.push_str(&prune_report(
                    &plan.snapshot_pools,
                    &cfg.vss.snapshot_prefix,
                    cfg.vss.snapshot_keep,
                ));
            }
        }
    }
    out
}

/// What a successful THAW does to the snapshots afterwards (`snapshot_keep`).
fn prune_report(pools: &[String], prefix: &str, keep: u32) -> String {
    let ours = pools
        .iter()
        .map(|p| format!("{p}@{prefix}<digits>"))
        .collect::<Vec<_>>()
        .join(", ");
    match keep {
        0 => "After a successful THAW: no snapshot is destroyed (snapshot_keep = 0).\n".to_string(),
        1 => format!(
            "After a successful THAW: keep the newest of {ours} per pool and destroy the older \
             ones.\n"
        ),
        n => format!(
            "After a successful THAW: keep the newest {n} of {ours} per pool and destroy the \
             older ones.\n"
        ),
    }
}

/// The contents of a configuration file, over [`defaults`].
pub fn parse(text: &[u8]) -> Result<LoadedConfig, BadLine> {
    parse_for(text, Layout::FreeBsd)
}

/// [`parse`] for the daemon of `layout`'s kernel: its built-in table under the file's
/// settings, and `suspend` (or `freeze`) allowed where that kernel can do it.
pub fn parse_for(text: &[u8], layout: Layout) -> Result<LoadedConfig, BadLine> {
    let mut cfg = defaults_for(layout);
    // Every key set, with its line.
    let mut seen: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for setting in conf::settings(text, is_known)? {
        let (line, key, value) = (setting.line, setting.key, setting.value);
        if let Some(point) = key.strip_prefix("mount.") {
            cfg.mount_lines.insert(point.to_string(), line);
        }
        set(&mut cfg, key, value).map_err(|why| setting.bad_value(why))?;
        seen.insert(key.to_string(), (line, value.to_string()));
    }
    check_whole(&cfg, &seen)?;
    Ok(cfg)
}

fn is_known(key: &str) -> bool {
    matches!(
        key,
        "hook_dir"
            | "hook_failure"
            | "path"
            | "snapshot_prefix"
            | "snapshot_keep"
            | "zpool"
            | "zfs"
            | "watchdog"
            | "hook_timeout"
            | "hooks_total"
            | "zpool_sync_timeout"
            | "zfs_snapshot_timeout"
            | "suspend_timeout"
            | "thaw_hook_timeout"
            | "app_auto_thaw"
            | "app_freeze_budget"
    ) || key.strip_prefix("policy.").is_some_and(is_fstype)
        || key.strip_prefix("mount.").is_some_and(|p| !p.is_empty())
}

/// A file-system type name as `statfs` reports it (`ufs`, `zfs`, `fusefs.sshfs`).
fn is_fstype(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Applies one setting whose key is known and value non-empty; the error says why the
/// value is refused.
fn set(cfg: &mut LoadedConfig, key: &str, value: &str) -> Result<(), String> {
    let budget = &mut cfg.vss.budget;
    match key {
        "hook_dir" => {
            cfg.vss.hook_dir = if value == "none" {
                None
            } else {
                Some(absolute_path(value)?.to_string())
            }
        }
        "hook_failure" => {
            cfg.vss.hook_failure = HookFailure::parse(value)
                .ok_or_else(|| "must be `veto` or `filesystems`".to_string())?
        }
        "path" => {
            if let Some(dir) = value.split(':').find(|d| !d.starts_with('/')) {
                return Err(format!(
                    "every directory must be an absolute path, `{dir}` is not"
                ));
            }
            cfg.path = value.to_string();
        }
        "snapshot_prefix" => {
            if !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err("only letters, digits, `.`, `_` and `-` are allowed".into());
            }
            if value.len() > MAX_SNAPSHOT_PREFIX {
                return Err(format!("longer than {MAX_SNAPSHOT_PREFIX} characters"));
            }
            cfg.vss.snapshot_prefix = value.to_string();
        }
        "snapshot_keep" => {
            let max = hvguest_core::limits::VSS_MAX_SNAPSHOT_KEEP;
            cfg.vss.snapshot_keep = value
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("must be a whole number from 0 (keep all) to {max}"))?;
        }
        "zpool" => cfg.zpool = PathBuf::from(absolute_path(value)?),
        "zfs" => cfg.zfs = PathBuf::from(absolute_path(value)?),
        "watchdog" => cfg.vss.watchdog = duration(value)?,
        "hook_timeout" => budget.hook = duration(value)?,
        "hooks_total" => budget.hooks_total = duration(value)?,
        "zpool_sync_timeout" => budget.sync = duration(value)?,
        "zfs_snapshot_timeout" => budget.snapshot = duration(value)?,
        "suspend_timeout" => budget.suspend = duration(value)?,
        "thaw_hook_timeout" => budget.thaw_hook = duration(value)?,
        "app_auto_thaw" => cfg.app.auto_thaw = duration(value)?,
        "app_freeze_budget" => cfg.app.freeze_budget = duration(value)?,
        "policy.default" => {
            cfg.vss.policy.default = match FsAction::parse(value) {
                Some(a @ (FsAction::Veto | FsAction::Ignore)) => a,
                _ => return Err("must be `veto` or `ignore`".into()),
            }
        }
        _ => {
            let action = FsAction::parse(value).ok_or_else(|| {
                "must be one of `suspend` (or `freeze`), `sync`, `snapshot`, `ignore`, `veto`"
                    .to_string()
            })?;
            if let Some(point) = key.strip_prefix("mount.") {
                // Its type is known only with the mount table: `check_mounts`.
                rules::check_mount_point(point).map_err(|e| e.to_string())?;
                cfg.vss.policy.by_mount.insert(point.to_string(), action);
            } else {
                let fstype = key
                    .strip_prefix("policy.")
                    .expect("is_known admits only policy.* and mount.* besides the keys above");
                rules::action_fits(action, fstype, cfg.vss.policy.layout)
                    .map_err(|e| e.to_string())?;
                cfg.vss.policy.by_type.insert(fstype.to_string(), action);
            }
        }
    }
    // Both daemons plan with the same budget.
    cfg.app.budget = cfg.vss.budget.clone();
    Ok(())
}

fn absolute_path(value: &str) -> Result<&str, String> {
    if value.starts_with('/') {
        Ok(value)
    } else {
        Err("must be an absolute path".into())
    }
}

/// `500ms`, `4s`, `2m`: a whole number and a unit, more than zero.
fn duration(value: &str) -> Result<Duration, String> {
    let bad = || {
        "not a duration: use a whole number with `ms`, `s` or `m`, like `500ms` or `4s`".to_string()
    };
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

/// The timing rules (one core function decides them), reported on the line of the last
/// setting involved that the file sets. A rule about one setting reads as a bad value
/// of that setting.
fn check_whole(
    cfg: &LoadedConfig,
    seen: &BTreeMap<String, (usize, String)>,
) -> Result<(), BadLine> {
    let Err(e) = rules::check(&cfg.vss, &cfg.app) else {
        return Ok(());
    };
    let keys: Vec<&str> = e.settings().iter().map(|s| s.key()).collect();
    let line = keys
        .iter()
        .filter_map(|k| seen.get(*k).map(|(line, _)| *line))
        .max()
        .unwrap_or(0);
    let problem = match keys.as_slice() {
        [key] => match seen.get(*key) {
            Some((_, value)) => Problem::BadValue {
                key: key.to_string(),
                value: value.clone(),
                why: e.to_string(),
            },
            None => Problem::Rule(e),
        },
        _ => Problem::Rule(e),
    };
    Err(BadLine { line, problem })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvguest_core::vss::policy::PSEUDO_TYPES;
    use hvguest_core::vss::rules::RuleError;

    fn ok(text: &str) -> LoadedConfig {
        match parse(text.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn err(text: &str) -> BadLine {
        match parse(text.as_bytes()) {
            Ok(c) => panic!("{text:?} was accepted: {c:?}"),
            Err(e) => e,
        }
    }

    /// The reason a one-line file is refused, as text.
    fn why(text: &str) -> String {
        let e = err(text);
        assert_eq!(e.line, 1, "{e}");
        e.problem.to_string()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let d = defaults();
        assert_eq!(
            d.vss.hook_dir.as_deref(),
            Some("/usr/local/etc/hvguest/hooks.d")
        );
        assert_eq!(d.vss.policy, hvguest_core::vss::policy::Policy::default());
        assert_eq!(d.vss.budget, Budget::default());
        assert_eq!(d.vss.watchdog, secs(30));
        assert_eq!(d.vss.snapshot_prefix, "hvguest-");
        assert_eq!(d.app.budget, Budget::default());
        assert_eq!(d.app.auto_thaw, secs(45));
        assert_eq!(d.app.freeze_budget, secs(10));
        assert_eq!(d.app.work, AppConfig::default().work);
        assert_eq!(d.zpool, Path::new("/sbin/zpool"));
        assert_eq!(d.zfs, Path::new("/sbin/zfs"));
        assert_eq!(
            d.path,
            "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
        );
        assert_eq!(ok(""), d);
        assert_eq!(ok("\n# only a comment\n   \n\t# indented comment\n"), d);
    }

    #[test]
    fn sample_is_complete_and_equals_the_defaults() {
        assert_eq!(ok(SAMPLE), defaults());
        // Every key appears in the sample, set (not only mentioned in a comment).
        let set: Vec<&str> = SAMPLE
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .collect();
        for key in [
            "hook_dir",
            "path",
            "snapshot_prefix",
            "snapshot_keep",
            "zpool",
            "zfs",
            "watchdog",
            "hook_timeout",
            "hooks_total",
            "zpool_sync_timeout",
            "zfs_snapshot_timeout",
            "suspend_timeout",
            "thaw_hook_timeout",
            "app_auto_thaw",
            "app_freeze_budget",
            "policy.default",
            "hook_failure",
        ] {
            assert!(set.contains(&key), "{key} missing from SAMPLE");
        }
        for t in defaults().vss.policy.by_type.keys() {
            assert!(
                set.contains(&format!("policy.{t}").as_str()),
                "policy.{t} missing from SAMPLE"
            );
        }
        assert_eq!(
            set.len(),
            17 + defaults().vss.policy.by_type.len(),
            "{set:?}"
        );
    }

    #[test]
    fn missing_file_means_defaults_and_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("hvguest-vss-config-{}", std::process::id()));
        // Test scratch space: it may not exist, and a leftover is harmless.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir.join("missing.conf")).unwrap(), defaults());
        let file = dir.join("vss.conf");
        std::fs::write(&file, "watchdog = 40s\napp_auto_thaw = 50s\n").unwrap();
        let c = load(&file).unwrap();
        assert_eq!(c.vss.watchdog, secs(40));
        assert_eq!(c.app.auto_thaw, secs(50));
        std::fs::write(&file, "# fine\n\nwatchdog = 40s\nwatchdgo = 40s\n").unwrap();
        let e = load(&file).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Bad { path, line: 4, problem: Problem::UnknownKey(k) }
                if path == &file && k == "watchdgo"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{}:4: unknown key `watchdgo`", file.display())
        );
        // A directory cannot be read as a file.
        let e = load(&dir).unwrap_err();
        assert!(matches!(&e, ConfigError::Unreadable { path, .. } if path == &dir));
        assert!(e
            .to_string()
            .starts_with(&format!("{}: cannot read", dir.display())));
        // Cleaning up test scratch space; a leftover is harmless.
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hook_dir() {
        assert_eq!(
            ok("hook_dir = /etc/vss hooks").vss.hook_dir.as_deref(),
            Some("/etc/vss hooks")
        );
        assert_eq!(ok("hook_dir = none").vss.hook_dir, None);
        assert!(why("hook_dir = hooks.d").contains("absolute path"));
    }

    #[test]
    fn path_key() {
        assert_eq!(ok("path=/bin:/usr/bin").path, "/bin:/usr/bin");
        assert!(why("path = /bin:bin").contains("`bin` is not"));
        assert!(why("path = /bin::/usr/bin").contains("absolute"));
    }

    #[test]
    fn policy_keys() {
        let c = ok(
            "policy.nfs = ignore\npolicy.zfs = snapshot\npolicy.tmpfs = veto\n\
                    policy.fusefs.sshfs = ignore\npolicy.ufs = ignore\npolicy.default = ignore",
        );
        let p = &c.vss.policy;
        assert_eq!(p.action("nfs"), FsAction::Ignore);
        assert_eq!(p.action("zfs"), FsAction::Snapshot);
        assert_eq!(p.action("tmpfs"), FsAction::Veto);
        assert_eq!(p.action("fusefs.sshfs"), FsAction::Ignore);
        assert_eq!(p.action("ufs"), FsAction::Ignore);
        assert_eq!(p.action("msdosfs"), FsAction::Ignore);
        assert_eq!(p.default, FsAction::Ignore);
        // The rest of the built-in table stays.
        for t in PSEUDO_TYPES.iter().filter(|t| **t != "tmpfs") {
            assert_eq!(p.action(t), FsAction::Ignore, "{t}");
        }
        assert_eq!(
            ok("policy.default = veto").vss.policy.default,
            FsAction::Veto
        );
        assert_eq!(
            ok("policy.ufs = veto").vss.policy.action("ufs"),
            FsAction::Veto
        );
        assert_eq!(
            ok("policy.zfs = sync").vss.policy.action("zfs"),
            FsAction::Sync
        );

        assert!(why("policy.nfs = quiesce").contains("must be one of"));
        assert!(why("policy.nfs = suspend").contains("`ufs` only"));
        assert!(why("policy.ufs = sync").contains("`sync` works on `zfs` only"));
        assert!(why("policy.ufs = snapshot").contains("`snapshot` works on `zfs` only"));
        assert!(why("policy.default = suspend").contains("`veto` or `ignore`"));
        assert!(why("policy.default = sync").contains("`veto` or `ignore`"));
        assert_eq!(
            err("policy. = ignore").problem,
            Problem::UnknownKey("policy.".into())
        );
        assert_eq!(
            err("policy.n/fs = ignore").problem,
            Problem::UnknownKey("policy.n/fs".into())
        );
        assert_eq!(
            err("policy = ignore").problem,
            Problem::UnknownKey("policy".into())
        );
    }

    #[test]
    fn hook_failure() {
        assert_eq!(defaults().vss.hook_failure, HookFailure::Veto);
        assert_eq!(
            ok("hook_failure = filesystems").vss.hook_failure,
            HookFailure::Filesystems
        );
        assert_eq!(
            ok("hook_failure = veto").vss.hook_failure,
            HookFailure::Veto
        );
        assert!(why("hook_failure = ignore").contains("`veto` or `filesystems`"));
    }

    #[test]
    fn mount_keys() {
        let c = ok("# scratch\nmount./mnt/scratch = ignore\nmount./ = veto\nmount./a b = sync");
        let by = &c.vss.policy.by_mount;
        assert_eq!(by.get("/mnt/scratch"), Some(&FsAction::Ignore));
        assert_eq!(by.get("/"), Some(&FsAction::Veto));
        assert_eq!(by.get("/a b"), Some(&FsAction::Sync));
        assert_eq!(c.mount_lines.get("/mnt/scratch"), Some(&2));
        assert_eq!(c.mount_lines.get("/a b"), Some(&4));
        // The type is not known yet: any action passes the file on its own.
        assert_eq!(ok("mount./x = suspend").vss.policy.by_mount.len(), 1);
        assert!(why("mount.x = ignore").contains("must be an absolute path"));
        assert!(why("mount./x/ = ignore").contains("no trailing `/`"));
        assert!(why("mount./x//y = ignore").contains("no trailing `/`"));
        assert!(why("mount./x = quiesce").contains("must be one of"));
        assert_eq!(
            err("mount. = ignore").problem,
            Problem::UnknownKey("mount.".into())
        );
        assert_eq!(
            err("mount./x = ignore\nmount./x = veto").problem,
            Problem::Duplicate {
                key: "mount./x".into(),
                first: 1
            }
        );
    }

    #[test]
    fn mount_keys_against_the_mount_table() {
        let mount = |fstype: &str, path: &str| Mount {
            fstype: fstype.into(),
            path: path.into(),
            read_only: false,
            source: "s".into(),
            fsid: None,
        };
        let table = [mount("ufs", "/"), mount("zfs", "/data"), mount("nfs", "/n")];
        let c = ok("mount./n = ignore\nmount./data = snapshot\nmount./gone = suspend");
        assert_eq!(c.check_mounts(&table), Ok(()));
        let c = ok("mount./n = ignore\n\nmount./n2 = veto\nmount./data = suspend\nmount./ = sync");
        // The first bad line in the file, not in the table.
        let e = c.check_mounts(&table).unwrap_err();
        assert_eq!(e.line, 4);
        assert_eq!(
            e.problem.to_string(),
            "`mount./data = suspend`: /data is a `zfs` file system, and `suspend` works on \
             `ufs` only"
        );
    }

    #[test]
    fn the_plan_report_says_what_decided_each_mount() {
        let mount = |fstype: &str, path: &str, ro: bool, source: &str| Mount {
            fstype: fstype.into(),
            path: path.into(),
            read_only: ro,
            source: source.into(),
            fsid: None,
        };
        let table = [
            mount("zfs", "/", false, "zroot/ROOT/default"),
            mount("nfs", "/mnt", false, "srv:/x"),
            mount("nullfs", "/j", false, "/mnt/a"),
            mount("fusefs.sshfs", "/s", false, "me@host:"),
            mount("ufs", "/u", true, "/dev/da1"),
        ];
        let c = ok("hook_dir = none\npolicy.default = ignore\nmount./mnt = veto");
        assert_eq!(
            plan_report(&c, &table),
            "\
mount point  type          action  because
/            zfs           sync    policy.zfs
/mnt         nfs           veto    mount./mnt (line 3)
/j           nullfs        veto    nullfs over /mnt, which vetoes
/s           fusefs.sshfs  ignore  policy.default
/u           ufs           ignore  read-only
CHECK and FREEZE fail, nothing is frozen: nfs file system at /mnt is writable and its \
policy is veto.
"
        );
        let c = ok("hook_dir = none\npolicy.default = ignore\nmount./ = ignore");
        assert!(plan_report(&c, &table)
            .ends_with("CHECK succeeds.\nFREEZE: no file system to sync, snapshot or suspend.\n"));
        let both = [
            mount("zfs", "/", false, "zroot/ROOT/default"),
            mount("zfs", "/t", false, "tank/t"),
        ];
        let c = ok("hook_dir = none\npolicy.zfs = snapshot\nsnapshot_keep = 2");
        assert!(plan_report(&c, &both).ends_with(
            "After a successful THAW: keep the newest 2 of tank@hvguest-<digits>, \
             zroot@hvguest-<digits> per pool and destroy the older ones.\n"
        ));
        let c = ok("hook_dir = none\npolicy.zfs = snapshot\nsnapshot_keep = 0");
        assert!(plan_report(&c, &both)
            .ends_with("After a successful THAW: no snapshot is destroyed (snapshot_keep = 0).\n"));
        let c = ok("hook_dir = none\nmount./ = suspend");
        assert!(plan_report(&c, &table).contains(
            "/            zfs           veto    `mount./ = suspend` does not fit the zfs file \
             system mounted there: `suspend` works on `ufs` only\n"
        ));
    }

    #[test]
    fn snapshot_keep_is_a_bounded_count() {
        assert_eq!(ok("snapshot_keep = 0").vss.snapshot_keep, 0);
        assert_eq!(ok("snapshot_keep = 1000").vss.snapshot_keep, 1000);
        assert_eq!(defaults().vss.snapshot_keep, 3);
        for bad in ["1001", "-1", "3 snapshots", "x"] {
            assert!(
                why(&format!("snapshot_keep = {bad}")).contains("from 0 (keep all) to 1000"),
                "{bad}"
            );
        }
    }

    #[test]
    fn snapshot_prefix_zpool_zfs() {
        assert_eq!(
            ok("snapshot_prefix = backup.v1_").vss.snapshot_prefix,
            "backup.v1_"
        );
        assert!(why("snapshot_prefix = a@b").contains("only letters"));
        assert!(why("snapshot_prefix = a b").contains("only letters"));
        assert!(why("snapshot_prefix = a/b").contains("only letters"));
        let long = "x".repeat(MAX_SNAPSHOT_PREFIX + 1);
        assert!(why(&format!("snapshot_prefix = {long}")).contains("longer than 64"));
        let c = ok("zpool = /usr/local/sbin/zpool\nzfs = /usr/local/sbin/zfs");
        assert_eq!(c.zpool, Path::new("/usr/local/sbin/zpool"));
        assert_eq!(c.zfs, Path::new("/usr/local/sbin/zfs"));
        assert!(why("zpool = zpool").contains("absolute path"));
        assert!(why("zfs = sbin/zfs").contains("absolute path"));
    }

    #[test]
    fn watchdog() {
        assert_eq!(ok("watchdog = 16s").vss.watchdog, secs(16));
        assert_eq!(
            ok("watchdog = 15001ms").vss.watchdog,
            Duration::from_millis(15001)
        );
        let w = why("watchdog = 15s");
        assert!(w.contains("must be more than 15s"), "{w}");
        assert!(why("watchdog = 10s").contains("more than 15s"));
        // Longer than app_auto_thaw's default allows: that needs app_auto_thaw too.
        assert_eq!(
            ok("watchdog = 59s\napp_auto_thaw = 2m").vss.watchdog,
            secs(59)
        );
    }

    #[test]
    fn budgets() {
        let c = ok(
            "hook_timeout = 2s\nhooks_total = 3s\nzpool_sync_timeout = 4s\n\
                    zfs_snapshot_timeout = 2500ms\nsuspend_timeout = 500ms\n\
                    thaw_hook_timeout = 10s",
        );
        let want = Budget {
            hook: secs(2),
            hooks_total: secs(3),
            sync: secs(4),
            snapshot: Duration::from_millis(2500),
            suspend: Duration::from_millis(500),
            thaw_hook: secs(10),
            ..Budget::default()
        };
        assert_eq!(c.vss.budget, want);
        assert_eq!(c.app.budget, want);
    }

    #[test]
    fn app_keys() {
        let c = ok("app_auto_thaw = 1m\napp_freeze_budget = 8s");
        assert_eq!(c.app.auto_thaw, secs(60));
        assert_eq!(c.app.freeze_budget, secs(8));
        assert!(why("app_freeze_budget = 15s").contains("under 15s"));
        // Before the freezer's backstop (watchdog + 1s): refused on the later line.
        let e = err("watchdog = 30s\napp_auto_thaw = 31s");
        assert_eq!(e.line, 2);
        assert_eq!(
            e.problem,
            Problem::Rule(RuleError::AutoThawTooEarly {
                auto_thaw: secs(31),
                backstop: secs(31)
            })
        );
        assert!(e.problem.to_string().contains("watchdog + 1s (31s)"));
        let e = err("app_auto_thaw = 40s\n\nwatchdog = 40s");
        assert_eq!(e.line, 3);
        assert_eq!(
            ok("app_auto_thaw = 31001ms").app.auto_thaw,
            Duration::from_millis(31001)
        );
    }

    #[test]
    fn durations() {
        for (text, want) in [
            ("1ms", Duration::from_millis(1)),
            ("500ms", Duration::from_millis(500)),
            ("4s", secs(4)),
            ("2m", secs(120)),
            ("0004s", secs(4)),
        ] {
            assert_eq!(duration(text), Ok(want), "{text}");
        }
        for bad in [
            "4",
            "s",
            "4 s",
            "4S",
            "1.5s",
            "-1s",
            "4sec",
            "4h",
            "ms4",
            "+4s",
            "4s4",
            "99999999999999999999s",
            "999999999999999999m",
        ] {
            assert!(
                why(&format!("hook_timeout = {bad}")).contains("not a duration"),
                "{bad}"
            );
        }
        assert!(why("thaw_hook_timeout = 0s").contains("more than zero"));
        assert!(why("suspend_timeout = 0ms").contains("more than zero"));
    }

    /// Issue 11, Low 12: every duration has an upper bound, and a value past it is an
    /// error naming its line (an extreme one used to overflow or wrap further on).
    #[test]
    fn durations_have_upper_bounds() {
        for (text, max) in [
            ("watchdog = 60s", "59s"),
            ("watchdog = 18446744073709551615ms", "59s"),
            ("hook_timeout = 16s", "15s"),
            ("thaw_hook_timeout = 26s", "25s"),
            ("app_auto_thaw = 121s", "120s"),
            ("app_auto_thaw = 999999999999m", "120s"),
        ] {
            let e = err(&format!("# bounds\n{text}"));
            assert_eq!(e.line, 2, "{text}: {e}");
            let why = e.problem.to_string();
            assert!(
                why.contains(&format!("must be at most {max}")),
                "{text}: {why}"
            );
        }
        let c =
            ok("watchdog = 59s\napp_auto_thaw = 2m\nhook_timeout = 15s\nthaw_hook_timeout = 25s");
        assert_eq!(c.vss.watchdog, secs(59));
        assert_eq!(c.app.auto_thaw, secs(120));
        assert_eq!(c.vss.budget.thaw_hook, secs(25));
        // A bound involving two settings is reported on the later line.
        let e = err("app_auto_thaw = 2m\nwatchdog = 59500ms");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn budget_sum_must_stay_under_the_kernel_deadline() {
        // 5 + 3 + 2 + 1 + 2 = 13 by default; 14.999 passes, 15 does not.
        assert_eq!(
            ok("hooks_total = 6999ms").vss.budget.hooks_total,
            Duration::from_millis(6999)
        );
        let e = err("# more hooks\nhooks_total = 6s\nzpool_sync_timeout = 5s\n");
        assert_eq!(e.line, 3);
        assert_eq!(
            e.problem,
            Problem::Rule(RuleError::BudgetTooLong {
                sum: secs(16),
                fixed: secs(2),
                limit: secs(15)
            })
        );
        let text = e.problem.to_string();
        assert!(text.contains("= 16s, must be under 15s"), "{text}");
        assert!(text.contains("+ 2s (answer margin and rollback)"), "{text}");
        let e = err("zfs_snapshot_timeout = 4s\nsuspend_timeout = 1s");
        assert_eq!(e.line, 2);
        assert!(
            matches!(e.problem, Problem::Rule(RuleError::BudgetTooLong { sum, .. }) if sum == secs(15))
        );
        let e = err("suspend_timeout = 3500ms\nhook_timeout = 1s\nhooks_total = 6s");
        assert_eq!(e.line, 3);
        assert!(
            matches!(e.problem, Problem::Rule(RuleError::BudgetTooLong { sum, .. }) if sum == Duration::from_millis(16500)),
            "{e}"
        );
        assert!(e.problem.to_string().contains("= 16500ms"));
        // hook_timeout and thaw_hook_timeout are not part of the sum.
        ok("hook_timeout = 15s\nthaw_hook_timeout = 25s");
    }

    #[test]
    fn syntax_errors_and_line_numbers() {
        assert_eq!(err("# ok\nwatchdog 30s").problem, Problem::NotKeyValue);
        assert_eq!(err("# ok\nwatchdog 30s").line, 2);
        assert_eq!(err("= 30s").problem, Problem::NotKeyValue);
        assert_eq!(
            err("\n\n\nwatchdog =").problem,
            Problem::Empty("watchdog".into())
        );
        assert_eq!(err("\n\n\nwatchdog =").line, 4);
        assert_eq!(
            err("watchdog = 30s # thirty").problem,
            Problem::BadCharacter("watchdog".into())
        );
        assert_eq!(
            err("hook_dir = /a\u{7}b").problem,
            Problem::BadCharacter("hook_dir".into())
        );
        assert_eq!(
            err("Watchdog = 30s").problem,
            Problem::UnknownKey("Watchdog".into())
        );
        let e = parse(b"hook_dir = none\npath = /bin\xff\n").unwrap_err();
        assert_eq!(
            e,
            BadLine {
                line: 2,
                problem: Problem::NotUtf8
            }
        );
        // CRLF line ends, tabs and missing spaces are fine.
        let c = ok("watchdog=40s\r\n\tapp_auto_thaw\t=\t50s\t\r\n");
        assert_eq!((c.vss.watchdog, c.app.auto_thaw), (secs(40), secs(50)));
        // A key set twice, even to the same value.
        let e = err("watchdog = 30s\n# again\nwatchdog = 30s");
        assert_eq!(
            e,
            BadLine {
                line: 3,
                problem: Problem::Duplicate {
                    key: "watchdog".into(),
                    first: 1
                }
            }
        );
        assert_eq!(
            e.problem.to_string(),
            "`watchdog` is set twice (first on line 1)"
        );
        assert_eq!(
            err("policy.nfs = ignore\npolicy.nfs = veto").problem,
            Problem::Duplicate {
                key: "policy.nfs".into(),
                first: 1
            }
        );
        // The first bad line is the one reported.
        assert_eq!(err("hook_dir = none\nbogus = 1\nwatchdog = 1s").line, 2);
        let e = err("watchdog = 3s");
        assert_eq!(
            e.problem.to_string(),
            "`watchdog = 3s`: must be more than 15s (a THAW can come no earlier than the \
             kernel's deadline)"
        );
    }

    #[test]
    fn loaded_config_starts_the_machines() {
        // Whatever passes here must not trip the machines' own assertions.
        let c = ok("watchdog = 16s\napp_auto_thaw = 18s");
        let now = hvguest_core::time::Instant(0);
        // Constructing them is the test: they assert the rules.
        let _ = hvguest_core::vss::machine::VssMachine::new(c.vss.clone(), now);
        let _ = hvguest_core::vss::app::AppMachine::new(c.app.clone(), now);
    }

    #[test]
    fn the_packaged_sample_is_the_sample() {
        // packaging/vss.conf.sample is what the port installs; it must not drift.
        let packaged = include_str!("../../packaging/vss.conf.sample");
        assert_eq!(packaged, SAMPLE);
    }

    #[test]
    fn linux_has_its_own_table_and_freezes_what_its_kernel_can() {
        let linux = |text: &str| parse_for(text.as_bytes(), Layout::Linux);
        let d = linux("").unwrap();
        assert_eq!(d.vss.layout, Layout::Linux);
        assert_eq!(d.vss.hook_dir.as_deref(), Some(LINUX_HOOK_DIR));
        assert_eq!(d.vss.policy.action("ext4"), FsAction::Suspend);
        assert_eq!(d.vss.policy.action("tmpfs"), FsAction::Ignore);
        assert_eq!(d.vss.policy.action("nfs4"), FsAction::Veto);
        let c = linux("policy.jfs = ignore\npolicy.zonefs = freeze\n").unwrap();
        assert_eq!(c.vss.policy.action("jfs"), FsAction::Ignore);
        assert_eq!(c.vss.policy.action("zonefs"), FsAction::Suspend);
        // ZFS is synced on Linux too, never frozen.
        let e = linux("policy.zfs = freeze\n").unwrap_err();
        assert!(e.problem.to_string().contains("other than `zfs`"), "{e:?}");
        // FreeBSD's daemon cannot freeze ext4.
        assert!(parse(b"policy.ext4 = freeze\n").is_err());
    }
}
