//! The rules a VSS configuration must keep, checked in one place.
//!
//! `io/src/vss_config.rs` calls [`check`] on what `vss.conf` says (and names the
//! line of the setting each error involves); [`VssMachine::new`] and [`AppMachine::new`]
//! assert it. The defaults keep the same rules at compile time (`limits.rs`).
//!
//! * The FREEZE's budgets (`hooks_total + sync + snapshot + suspend`, plus the answer
//!   margin and the rollback reserve) stay under the kernel's 15 s.
//! * The daemon's watchdog comes after the kernel's deadline (a THAW can come no
//!   earlier).
//! * The application helper's auto-thaw comes after the freezer's backstop (watchdog +
//!   [`VSS_FREEZER_BACKSTOP`]), so file systems are resumed before the application, as
//!   the kernel orders a THAW.
//! * The application helper's freeze work fits inside the kernel's deadline.
//! * Every duration has an upper bound ([`RuleError::TooLong`]): the watchdog and its
//!   backstop fit in [`VSS_MAX_FROZEN`], a hook in the kernel's deadline, a thaw hook in
//!   [`VSS_MAX_THAW_HOOK`] (so one still runs within the exit limit), the application's
//!   auto-thaw in [`VSS_MAX_APP_AUTO_THAW`]. No value, however large, reaches the
//!   arithmetic further on.
//! * An action fits the file system it is set for ([`action_fits`]: `suspend` on UFS,
//!   `sync` and `snapshot` on ZFS), and a `mount.<path>` names a mount point as the
//!   mount table writes it ([`check_mount_point`]). For `mount.<path>` the type is known
//!   only with the mount table: `hv_vss_daemon --check-config` checks the current one,
//!   and a CHECK or FREEZE finding a misfit vetoes (`PolicyError::Misfit`).
//!
//! [`VssMachine::new`]: crate::vss::machine::VssMachine::new
//! [`AppMachine::new`]: crate::vss::app::AppMachine::new

use std::time::Duration;

use crate::layout::Layout;
use crate::limits::{
    VSS_EXIT_LIMIT, VSS_FREEZER_BACKSTOP, VSS_MAX_APP_AUTO_THAW, VSS_MAX_FROZEN,
    VSS_MAX_SNAPSHOT_KEEP, VSS_MAX_THAW_HOOK,
};
use crate::vss::app::AppConfig;
use crate::vss::machine::{Budget, VssConfig};
use crate::vss::policy::FsAction;

/// `4s`, `500ms`, `1500ms`.
pub fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A configured value a rule involves (named as in `vss.conf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Watchdog,
    HookTimeout,
    ThawHookTimeout,
    HooksTotal,
    ZpoolSync,
    ZfsSnapshot,
    Suspend,
    AppAutoThaw,
    AppFreezeBudget,
    SnapshotKeep,
}

impl Setting {
    /// Its key in `vss.conf`.
    pub fn key(self) -> &'static str {
        match self {
            Setting::Watchdog => "watchdog",
            Setting::HookTimeout => "hook_timeout",
            Setting::ThawHookTimeout => "thaw_hook_timeout",
            Setting::HooksTotal => "hooks_total",
            Setting::ZpoolSync => "zpool_sync_timeout",
            Setting::ZfsSnapshot => "zfs_snapshot_timeout",
            Setting::Suspend => "suspend_timeout",
            Setting::AppAutoThaw => "app_auto_thaw",
            Setting::AppFreezeBudget => "app_freeze_budget",
            Setting::SnapshotKeep => "snapshot_keep",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "must be more than {} (a THAW can come no earlier than the kernel's deadline)",
        show(*.kernel)
    )]
    WatchdogTooShort {
        watchdog: Duration,
        kernel: Duration,
    },
    #[error(
        "hooks_total + zpool_sync_timeout + zfs_snapshot_timeout + suspend_timeout \
         + {} (answer margin and rollback) = {}, must be under {} (the kernel's deadline)",
        show(*.fixed), show(*.sum), show(*.limit)
    )]
    BudgetTooLong {
        sum: Duration,
        fixed: Duration,
        limit: Duration,
    },
    #[error(
        "app_auto_thaw ({}) must be more than watchdog + {} ({}), so that the file \
         systems are thawed before the application",
        show(*.auto_thaw), show(VSS_FREEZER_BACKSTOP), show(*.backstop)
    )]
    AutoThawTooEarly {
        auto_thaw: Duration,
        backstop: Duration,
    },
    #[error("must be under {} (the kernel's deadline)", show(*.kernel))]
    AppFreezeBudgetTooLong { budget: Duration, kernel: Duration },
    #[error("must be at most {max} (0 keeps every snapshot)")]
    KeepTooMany { keep: u32, max: u32 },
    #[error("must be at most {} ({why})", show(*.max))]
    TooLong {
        setting: Setting,
        max: Duration,
        why: String,
    },
}

impl RuleError {
    /// The settings the rule involves; an error is reported on the last one set.
    pub fn settings(&self) -> &'static [Setting] {
        match self {
            RuleError::WatchdogTooShort { .. } => &[Setting::Watchdog],
            RuleError::BudgetTooLong { .. } => &[
                Setting::HooksTotal,
                Setting::ZpoolSync,
                Setting::ZfsSnapshot,
                Setting::Suspend,
            ],
            RuleError::AutoThawTooEarly { .. } => &[Setting::Watchdog, Setting::AppAutoThaw],
            RuleError::AppFreezeBudgetTooLong { .. } => &[Setting::AppFreezeBudget],
            RuleError::TooLong { setting, .. } => match setting {
                Setting::Watchdog => &[Setting::Watchdog],
                Setting::HookTimeout => &[Setting::HookTimeout],
                Setting::ThawHookTimeout => &[Setting::ThawHookTimeout],
                Setting::HooksTotal => &[Setting::HooksTotal],
                Setting::ZpoolSync => &[Setting::ZpoolSync],
                Setting::ZfsSnapshot => &[Setting::ZfsSnapshot],
                Setting::Suspend => &[Setting::Suspend],
                Setting::AppAutoThaw => &[Setting::AppAutoThaw],
                Setting::AppFreezeBudget => &[Setting::AppFreezeBudget],
                Setting::SnapshotKeep => &[Setting::SnapshotKeep],
            },
            RuleError::KeepTooMany { .. } => &[Setting::SnapshotKeep],
        }
    }
}

/// When the freezer resumes everything by itself: just after the daemon's watchdog,
/// which normally thaws first (and says why).
pub fn freezer_backstop(watchdog: Duration) -> Duration {
    watchdog.saturating_add(VSS_FREEZER_BACKSTOP)
}

/// The longest watchdog: with the freezer's backstop after it, it fits in
/// [`VSS_MAX_FROZEN`].
pub fn max_watchdog() -> Duration {
    VSS_MAX_FROZEN.saturating_sub(VSS_FREEZER_BACKSTOP)
}

fn at_most(
    setting: Setting,
    value: Duration,
    max: Duration,
    why: impl FnOnce() -> String,
) -> Result<(), RuleError> {
    if value > max {
        return Err(RuleError::TooLong {
            setting,
            max,
            why: why(),
        });
    }
    Ok(())
}

/// The daemon's rules alone (what [`VssMachine::new`] asserts).
///
/// [`VssMachine::new`]: crate::vss::machine::VssMachine::new
pub fn check_daemon(cfg: &VssConfig) -> Result<(), RuleError> {
    let b = &cfg.budget;
    if cfg.watchdog <= b.kernel {
        return Err(RuleError::WatchdogTooShort {
            watchdog: cfg.watchdog,
            kernel: b.kernel,
        });
    }
    at_most(Setting::Watchdog, cfg.watchdog, max_watchdog(), || {
        format!(
            "with the freezer's {} backstop after it, file systems stay frozen at most {}",
            show(VSS_FREEZER_BACKSTOP),
            show(VSS_MAX_FROZEN)
        )
    })?;
    if cfg.snapshot_keep > VSS_MAX_SNAPSHOT_KEEP {
        return Err(RuleError::KeepTooMany {
            keep: cfg.snapshot_keep,
            max: VSS_MAX_SNAPSHOT_KEEP,
        });
    }
    check_budget(b)
}

fn check_budget(b: &Budget) -> Result<(), RuleError> {
    at_most(Setting::HookTimeout, b.hook, b.kernel, || {
        "a freeze hook runs inside the kernel's deadline".into()
    })?;
    at_most(
        Setting::ThawHookTimeout,
        b.thaw_hook,
        VSS_MAX_THAW_HOOK,
        || {
            format!(
                "one thaw hook must still fit in the {} a daemon takes at most to exit",
                show(VSS_EXIT_LIMIT)
            )
        },
    )?;
    let fixed = b.margin.saturating_add(b.rollback);
    let sum = [b.hooks_total, b.sync, b.snapshot, b.suspend]
        .into_iter()
        .fold(fixed, Duration::saturating_add);
    if sum >= b.kernel {
        return Err(RuleError::BudgetTooLong {
            sum,
            fixed,
            limit: b.kernel,
        });
    }
    Ok(())
}

/// The application helper's rules alone (what [`AppMachine::new`] asserts).
///
/// [`AppMachine::new`]: crate::vss::app::AppMachine::new
pub fn check_app(app: &AppConfig) -> Result<(), RuleError> {
    if app.freeze_budget >= app.budget.kernel {
        return Err(RuleError::AppFreezeBudgetTooLong {
            budget: app.freeze_budget,
            kernel: app.budget.kernel,
        });
    }
    at_most(
        Setting::AppAutoThaw,
        app.auto_thaw,
        VSS_MAX_APP_AUTO_THAW,
        || "applications stay quiesced at most this long without a THAW".into(),
    )?;
    check_budget(&app.budget)
}

/// An action set for a file system it cannot work on: UFSSUSPEND exists only for UFS,
/// `zpool sync` and `zfs snapshot` only for ZFS, and FIFREEZE cannot stand in for
/// `zpool sync` (ZFS on Linux is synced, never frozen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{}` works on {} only", action.name(), self.fits_on())]
pub struct Misfit {
    pub action: FsAction,
    pub layout: Layout,
}

impl Misfit {
    fn fits_on(&self) -> &'static str {
        match (self.action, self.layout) {
            (FsAction::Suspend, Layout::FreeBsd) => "`ufs`",
            (FsAction::Suspend, Layout::Linux) => "file systems other than `zfs`",
            _ => "`zfs`",
        }
    }
}

/// Whether `action` can be done to a file system of type `fstype` (`policy.<fstype>`,
/// and `mount.<path>` once the mount table says what is mounted there). On Linux the
/// kernel is the judge of what FIFREEZE can freeze: a type that cannot be frozen fails
/// the FREEZE, which rolls back (docs/protocol/linux.md §2.5).
pub fn action_fits(action: FsAction, fstype: &str, layout: Layout) -> Result<(), Misfit> {
    let fits = match action {
        FsAction::Suspend => match layout {
            Layout::FreeBsd => fstype == "ufs",
            Layout::Linux => fstype != "zfs",
        },
        FsAction::Sync | FsAction::Snapshot => fstype == "zfs",
        FsAction::Ignore | FsAction::Veto => true,
    };
    if fits {
        Ok(())
    } else {
        Err(Misfit { action, layout })
    }
}

/// Why a `mount.<path>` key names no mount point it could ever match exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadMountPoint {
    #[error("the mount point must be an absolute path")]
    NotAbsolute,
    #[error(
        "the mount point must be written as the mount table shows it: no trailing `/`, \
         no empty, `.` or `..` component"
    )]
    NotCanonical,
}

/// A mount point as `getmntinfo` reports it: absolute, no trailing `/` (but `/`
/// itself), no `//`, `.` or `..`. Matching is exact, so any other spelling would
/// silently never match.
pub fn check_mount_point(path: &str) -> Result<(), BadMountPoint> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(BadMountPoint::NotAbsolute);
    };
    if rest.is_empty() {
        return Ok(());
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(BadMountPoint::NotCanonical);
    }
    Ok(())
}

/// Every rule, in the order a reader meets the settings: the daemon's, the helper's,
/// then the two together.
pub fn check(vss: &VssConfig, app: &AppConfig) -> Result<(), RuleError> {
    check_daemon(vss)?;
    check_app(app)?;
    let backstop = freezer_backstop(vss.watchdog);
    if app.auto_thaw <= backstop {
        return Err(RuleError::AutoThawTooEarly {
            auto_thaw: app.auto_thaw,
            backstop,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn actions_fit_their_types_and_mount_points_are_canonical() {
        let bsd = Layout::FreeBsd;
        assert_eq!(action_fits(FsAction::Suspend, "ufs", bsd), Ok(()));
        assert_eq!(action_fits(FsAction::Snapshot, "zfs", bsd), Ok(()));
        assert_eq!(action_fits(FsAction::Veto, "nfs", bsd), Ok(()));
        let e = action_fits(FsAction::Suspend, "zfs", bsd).unwrap_err();
        assert_eq!(e.to_string(), "`suspend` works on `ufs` only");
        assert!(action_fits(FsAction::Suspend, "ext4", bsd).is_err());
        let e = action_fits(FsAction::Sync, "nfs", bsd).unwrap_err();
        assert_eq!(e.to_string(), "`sync` works on `zfs` only");
        // Linux: FIFREEZE is tried on anything but ZFS; the kernel says what freezes.
        let linux = Layout::Linux;
        for t in ["ext4", "xfs", "tmpfs", "vfat"] {
            assert_eq!(action_fits(FsAction::Suspend, t, linux), Ok(()), "{t}");
        }
        let e = action_fits(FsAction::Suspend, "zfs", linux).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`suspend` works on file systems other than `zfs` only"
        );
        assert!(action_fits(FsAction::Snapshot, "ext4", linux).is_err());
        for ok in ["/", "/data", "/mnt/scratch dir", "/a/b.c/..d"] {
            assert_eq!(check_mount_point(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_mount_point("data"), Err(BadMountPoint::NotAbsolute));
        assert_eq!(check_mount_point(""), Err(BadMountPoint::NotAbsolute));
        for bad in ["/data/", "//data", "/a//b", "/a/./b", "/a/..", "/."] {
            assert_eq!(
                check_mount_point(bad),
                Err(BadMountPoint::NotCanonical),
                "{bad}"
            );
        }
    }

    #[test]
    fn snapshot_keep_is_bounded() {
        let mut cfg = VssConfig {
            snapshot_keep: VSS_MAX_SNAPSHOT_KEEP,
            ..VssConfig::default()
        };
        assert_eq!(check_daemon(&cfg), Ok(()));
        cfg.snapshot_keep = 0;
        assert_eq!(check_daemon(&cfg), Ok(()));
        cfg.snapshot_keep = VSS_MAX_SNAPSHOT_KEEP + 1;
        let e = check_daemon(&cfg).unwrap_err();
        assert_eq!(e.settings(), &[Setting::SnapshotKeep]);
        assert_eq!(
            e.to_string(),
            "must be at most 1000 (0 keeps every snapshot)"
        );
    }

    #[test]
    fn defaults_pass() {
        assert_eq!(check(&VssConfig::default(), &AppConfig::default()), Ok(()));
    }

    #[test]
    fn each_rule_at_its_edge() {
        let (vss, app) = (VssConfig::default(), AppConfig::default());
        let w = |watchdog| VssConfig {
            watchdog,
            ..vss.clone()
        };
        assert!(matches!(
            check(&w(secs(15)), &app),
            Err(RuleError::WatchdogTooShort { .. })
        ));
        assert_eq!(check_daemon(&w(Duration::from_millis(15_001))), Ok(()));
        let mut b = Budget {
            hooks_total: Duration::from_millis(6999),
            ..Budget::default()
        };
        assert_eq!(check_budget(&b), Ok(()));
        b.hooks_total = secs(7);
        let e = check_budget(&b).unwrap_err();
        assert_eq!(
            e,
            RuleError::BudgetTooLong {
                sum: secs(15),
                fixed: secs(2),
                limit: secs(15)
            }
        );
        assert!(e.to_string().contains("= 15s, must be under 15s"), "{e}");
        assert_eq!(e.settings().len(), 4);
        let late = AppConfig {
            auto_thaw: secs(31),
            ..app.clone()
        };
        let e = check(&vss, &late).unwrap_err();
        assert_eq!(
            e,
            RuleError::AutoThawTooEarly {
                auto_thaw: secs(31),
                backstop: secs(31)
            }
        );
        assert!(e.to_string().contains("watchdog + 1s (31s)"), "{e}");
        let big = AppConfig {
            freeze_budget: secs(15),
            ..app
        };
        assert!(matches!(
            check(&vss, &big),
            Err(RuleError::AppFreezeBudgetTooLong { .. })
        ));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let b = Budget {
            hooks_total: Duration::MAX,
            ..Budget::default()
        };
        assert!(matches!(
            check_budget(&b),
            Err(RuleError::BudgetTooLong { .. })
        ));
        let vss = VssConfig {
            watchdog: Duration::MAX,
            ..VssConfig::default()
        };
        assert!(matches!(
            check(&vss, &AppConfig::default()),
            Err(RuleError::TooLong {
                setting: Setting::Watchdog,
                ..
            })
        ));
    }

    #[test]
    fn upper_bounds() {
        let (vss, app) = (VssConfig::default(), AppConfig::default());
        let w = |watchdog| VssConfig {
            watchdog,
            ..vss.clone()
        };
        assert_eq!(max_watchdog(), secs(59));
        assert_eq!(check_daemon(&w(secs(59))), Ok(()));
        let e = check_daemon(&w(Duration::from_millis(59_001))).unwrap_err();
        assert_eq!(e.settings(), &[Setting::Watchdog]);
        assert!(e.to_string().starts_with("must be at most 59s ("), "{e}");
        let thaw = Budget {
            thaw_hook: VSS_MAX_THAW_HOOK + Duration::from_millis(1),
            ..Budget::default()
        };
        assert!(matches!(
            check_budget(&thaw),
            Err(RuleError::TooLong {
                setting: Setting::ThawHookTimeout,
                ..
            })
        ));
        let hook = Budget {
            hook: secs(16),
            ..Budget::default()
        };
        assert!(matches!(
            check_budget(&hook),
            Err(RuleError::TooLong {
                setting: Setting::HookTimeout,
                ..
            })
        ));
        let late = AppConfig {
            auto_thaw: VSS_MAX_APP_AUTO_THAW + Duration::from_millis(1),
            ..app
        };
        assert!(matches!(
            check_app(&late),
            Err(RuleError::TooLong {
                setting: Setting::AppAutoThaw,
                ..
            })
        ));
    }
}
