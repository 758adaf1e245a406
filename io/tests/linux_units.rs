//! The systemd units and udev rules for Linux (`packaging/linux/`): verified by
//! `systemd-analyze verify` where systemd is installed, and held to the paths the
//! daemon uses (`hvguest_io_linux`), so the unit starts on the device the daemon opens
//! and waits for the mount its pools live on.

use std::path::{Path, PathBuf};
use std::process::Command;

fn packaged(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/linux")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

#[test]
fn the_unit_names_the_daemons_device_and_pool_directory() {
    let (_, unit) = packaged("hvguest-kvp.service");
    let device = hvguest_io_linux::kvp_device::PATH;
    assert!(unit.contains(&format!("ConditionPathExists={device}\n")));
    // systemd's name for the device's sysfs node: `/` in the misc name is `!`, escaped.
    let sys_name = "sys-devices-virtual-misc-vmbus\\x21hv_kvp.device";
    assert!(unit.contains(&format!("BindsTo={sys_name}\n")), "{unit}");
    assert!(unit.contains(&format!("After={sys_name}\n")), "{unit}");
    let pools = hvguest_io_linux::paths::POOL_DIR;
    assert!(unit.contains(&format!("RequiresMountsFor={pools}\n")));
    assert!(unit.contains("ExecStart=/usr/sbin/hv_kvp_daemon -n\n"));
    // cloud-init's local stage runs before sysinit.target and after us: default
    // dependencies (after sysinit.target) would make a cycle.
    assert!(unit.contains("DefaultDependencies=no\n"));
    assert!(unit.contains("Before=cloud-init-local.service"));
    // Started by udev only: an [Install] section would tie it to a device that may never
    // appear and hold the boot.
    assert!(!unit.contains("[Install]"));
    let (_, rule) = packaged("70-hvguest-kvp.rules");
    assert!(rule.contains("KERNEL==\"vmbus/hv_kvp\""));
    assert!(rule.contains("ENV{SYSTEMD_WANTS}+=\"hvguest-kvp.service\""));
}

#[test]
fn the_vss_unit_names_the_daemons_device_and_thaws_after_it() {
    let (_, unit) = packaged("hvguest-vss.service");
    let device = hvguest_io_linux::vss_device::PATH;
    assert!(unit.contains(&format!("ConditionPathExists={device}\n")));
    let sys_name = "sys-devices-virtual-misc-vmbus\\x21hv_vss.device";
    assert!(unit.contains(&format!("BindsTo={sys_name}\n")), "{unit}");
    assert!(unit.contains(&format!("After={sys_name}\n")), "{unit}");
    assert!(unit.contains("ExecStart=/usr/sbin/hv_vss_daemon -n\n"));
    // Whatever a dead freezer left frozen is thawed once the daemon is gone; the record
    // it thaws from is where the daemon keeps it.
    assert!(unit.contains("ExecStopPost=/usr/sbin/hv_vss_daemon --thaw-recorded\n"));
    assert!(hvguest_io_linux::paths::FROZEN_RECORD.is_some_and(|r| r.starts_with("/run/")));
    // SIGTERM to the daemon only: it thaws through its freezer before anything is killed.
    assert!(unit.contains("KillMode=mixed\n"));
    assert!(!unit.contains("[Install]"));
    let (_, rule) = packaged("70-hvguest-vss.rules");
    assert!(rule.contains("KERNEL==\"vmbus/hv_vss\""));
    assert!(rule.contains("ENV{SYSTEMD_WANTS}+=\"hvguest-vss.service\""));
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed here");
        return;
    };
    assert!(version.status.success());
    let dir = std::env::temp_dir().join(format!("hvguest-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for (name, daemon, built) in [
        (
            "hvguest-kvp.service",
            "/usr/sbin/hv_kvp_daemon",
            env!("CARGO_BIN_EXE_hv_kvp_daemon"),
        ),
        (
            "hvguest-vss.service",
            "/usr/sbin/hv_vss_daemon",
            env!("CARGO_BIN_EXE_hv_vss_daemon"),
        ),
    ] {
        // The binaries are not installed in /usr/sbin here: verify with the ones just
        // built.
        let unit = packaged(name).1.replace(daemon, built);
        let path = dir.join(name);
        std::fs::write(&path, unit).unwrap();
        paths.push(path);
    }
    // --man=no: the man pages are not installed here either.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    // Scratch space; a leftover is harmless.
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
