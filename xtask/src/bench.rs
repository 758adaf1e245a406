//! `bench`: builds the release daemon and the benchmark, then runs
//! `kvp-bench --daemon target/release/hv_kvp_daemon [ARGS...]`, which starts the real
//! daemon against the emulated device and prints its tables and the targets of issues 4 and 13.
//!
//! The two binaries are built by two cargo invocations on purpose: built together, cargo
//! would unify features across both packages (the simulator turns on `hvguest-core`'s
//! `arbitrary` feature), and the daemon measured would not be the one that ships.

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use super::{cargo, project_root, run, run_for_status};

/// Where cargo puts its output: `$CARGO_TARGET_DIR` (relative to the workspace root, where
/// cargo runs) or `target/`.
fn target_dir() -> PathBuf {
    let root = project_root();
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

pub fn bench(args: &[String]) -> ExitCode {
    for (package, bin) in [
        ("hvguest-io", "hv_kvp_daemon"),
        ("hvguest-sim", "kvp-bench"),
    ] {
        let built = run(cargo().args(["build", "--release", "-p", package, "--bin", bin]));
        if let Err(message) = built {
            eprintln!("xtask bench: {message}");
            return ExitCode::FAILURE;
        }
    }
    let release = target_dir().join("release");
    let mut cmd = Command::new(release.join("kvp-bench"));
    cmd.arg("--daemon")
        .arg(release.join("hv_kvp_daemon"))
        .args(args)
        .current_dir(project_root());
    // kvp-bench exits 0 whether or not the targets were met: it is a measurement.
    run_for_status(&mut cmd)
}
