//! The systemd unit and udev rule for Linux (`packaging/linux/`): verified by
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
fn systemd_analyze_verifies_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed here");
        return;
    };
    assert!(version.status.success());
    let (_, unit) = packaged("hvguest-kvp.service");
    // The binary is not installed in /usr/sbin here: verify with the one just built.
    let unit = unit.replace(
        "ExecStart=/usr/sbin/hv_kvp_daemon",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_hv_kvp_daemon")),
    );
    let dir = std::env::temp_dir().join(format!("hvguest-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hvguest-kvp.service");
    std::fs::write(&path, unit).unwrap();
    // --man=no: the man page is not installed here either.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    // Scratch space; a leftover is harmless.
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
