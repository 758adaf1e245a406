//! `interop`: cloud-init's real Hyper-V reporting handler against our daemon and `hvkvp`.
//!
//! 1. Makes sure Debian's `cloud-init` package is installed (`apt-get install`, with one
//!    `apt-get update` if the first attempt fails), then creates
//!    `/etc/cloud/cloud-init.disabled` so the package does not act at the next boot. When
//!    it cannot be installed (not Debian, not root, no network, apt refusing), the task
//!    prints `interop skipped: <why>` and succeeds: CI runs it only where its
//!    dependencies install.
//! 2. Finds a Python that imports `cloudinit.reporting.handlers`: Debian's
//!    `/usr/bin/python3`, since the `python3` first on `PATH` may be another one (pyenv)
//!    that does not see Debian's packages. `HVGUEST_CLOUDINIT_PYTHON`, if set, is tried
//!    first.
//! 3. Runs the ignored test `io/tests/cloud_init_interop.rs` with
//!    `HVGUEST_CLOUDINIT_PYTHON` naming that Python. A failing test fails the task.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::{cargo, run};

const PACKAGE: &str = "cloud-init";
const PYTHON_VAR: &str = "HVGUEST_CLOUDINIT_PYTHON";
const CLOUD_DIR: &str = "/etc/cloud";
/// cloud-init's documented switch: while this file exists it does nothing at boot.
const DISABLED_MARK: &str = "/etc/cloud/cloud-init.disabled";
/// Prints cloud-init's version if this Python can load the Hyper-V reporting handler.
const PROBE: &str = "import cloudinit.reporting.handlers as h, cloudinit.version as v; \
h.HyperVKvpReportingHandler; print(v.version_string())";

pub fn interop() -> Result<(), String> {
    let start = Instant::now();
    let package_version = match ensure_installed() {
        Ok(version) => version,
        Err(why) => {
            println!("interop skipped: {why}");
            return Ok(());
        }
    };
    let (python, version) = find_python()?;
    say(&format!(
        "cloud-init {package_version} (the package; {version} to Python), ready after {:.1} s; \
         Python: {}",
        start.elapsed().as_secs_f64(),
        python.to_string_lossy()
    ));
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "hvguest-io",
        "--test",
        "cloud_init_interop",
        "--",
        "--ignored",
        "--nocapture",
    ])
    .env(PYTHON_VAR, &python);
    say(&format!("{PYTHON_VAR}={}", python.to_string_lossy()));
    run(&mut cmd)?;
    say(&format!("passed in {:.1} s", start.elapsed().as_secs_f64()));
    Ok(())
}

/// The installed package's version, installing it first if needed; `Err` says why it is
/// not installed and cannot be (a reason to skip, not a failure).
fn ensure_installed() -> Result<String, String> {
    if let Some(version) = installed_version() {
        return Ok(version);
    }
    if !on_path("apt-get") || !on_path("dpkg-query") {
        return Err(format!(
            "{PACKAGE} is not installed and there is no apt-get here (the test uses Debian's package)"
        ));
    }
    if !is_root() {
        return Err(format!(
            "{PACKAGE} is not installed and installing it needs root \
             (apt-get install --no-install-recommends {PACKAGE})"
        ));
    }
    let started = Instant::now();
    say(&format!("installing Debian's {PACKAGE} package"));
    if let Err(first) = apt_install() {
        say(&format!(
            "{first}; updating the package lists and trying again"
        ));
        if let Err(e) = run(apt("apt-get").args(["update", "-q", "-o", "DPkg::Lock::Timeout=120"]))
        {
            return Err(format!("{e} (no network?)"));
        }
        apt_install().map_err(|e| format!("{e}, even after apt-get update"))?;
    }
    let version = installed_version().ok_or_else(|| {
        format!("apt-get install {PACKAGE} succeeded but dpkg does not list it as installed")
    })?;
    say(&format!(
        "installed {PACKAGE} {version} in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    // We want its Python library, not its boot-time services: on a machine that boots
    // with systemd, an enabled cloud-init would treat the next boot as a new instance
    // and rewrite the host name, SSH host keys and network settings.
    match fs::create_dir_all(CLOUD_DIR).and_then(|()| fs::write(DISABLED_MARK, b"")) {
        Ok(()) => say(&format!(
            "created {DISABLED_MARK}: cloud-init will not run at boot"
        )),
        Err(e) => say(&format!("warning: could not create {DISABLED_MARK}: {e}")),
    }
    Ok(version)
}

fn apt_install() -> Result<(), String> {
    run(apt("apt-get").args([
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        // Wait for another apt or dpkg to finish rather than fail at once.
        "-o",
        "DPkg::Lock::Timeout=120",
        PACKAGE,
    ]))
}

/// `Some(version)` when dpkg has the package fully installed.
fn installed_version() -> Option<String> {
    let out = apt("dpkg-query")
        .args(["-W", "-f", "${Status}\t${Version}", PACKAGE])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_once('\t') {
        Some(("install ok installed", version)) if out.status.success() => {
            Some(version.trim().to_string())
        }
        _ => None,
    }
}

/// The first Python that loads the handler, and the version it reports.
fn find_python() -> Result<(OsString, String), String> {
    let mut candidates: Vec<OsString> = Vec::new();
    if let Some(p) = env::var_os(PYTHON_VAR).filter(|p| !p.is_empty()) {
        candidates.push(p);
    }
    candidates.push("/usr/bin/python3".into());
    candidates.push("python3".into());
    let mut tried = Vec::new();
    for python in candidates {
        let out = Command::new(&python)
            .args(["-c", PROBE])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
                return Ok((python, version));
            }
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let last = err.lines().last().unwrap_or("no message");
                tried.push(format!("{}: {last}", python.to_string_lossy()));
            }
            Err(e) => tried.push(format!("{}: {e}", python.to_string_lossy())),
        }
    }
    Err(format!(
        "{PACKAGE} is installed but no Python imports cloudinit.reporting.handlers ({})",
        tried.join("; ")
    ))
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH").is_some_and(|path| {
        env::split_paths(&path).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// An apt or dpkg program: untranslated output, no questions.
fn apt(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    cmd
}

fn say(message: &str) {
    eprintln!("xtask interop: {message}");
}
