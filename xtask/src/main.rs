//! `cargo xtask <task>`: the project's own tasks, in Rust instead of shell scripts.
//!
//! The alias lives in `.cargo/config.toml` (`xtask = "run --quiet --package xtask --"`).
//! This crate uses std only so that it compiles in seconds; it never links the project's
//! crates and drives them through `$CARGO` instead.
//!
//! Adding a task: add a row to `TASKS`, an arm to the `match` in `main`, and a function
//! here, or a module (`mod sim;`) once the task grows past a few lines.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

mod bench;
mod deb;
mod dist;
mod freebsd;
mod freebsd_link;
mod fuzz;
mod interop;
mod pkg;
mod port;

/// Every task with a one-line description, in the order `help` prints them.
const TASKS: &[(&str, &str)] = &[
    (
        "test",
        "run every test of the workspace: doctests, then cargo nextest (or cargo test without it)",
    ),
    ("ci", "run the CI script, .ci/run, as CI does"),
    (
        "sim",
        "run the seeded simulator in release; flags pass through: [--seeds N] [--seed S]\n\
         \x20        [--requests N] [--tool-sweep N] [--check-determinism] [--no-faults] (the binary's\n\
         \x20        defaults otherwise; --requests 1 --tool-sweep 5 reaches a million crash points)",
    ),
    (
        "replay",
        "replay KVP recordings through the core in release: replay [-v] FILE...\n\
         \x20        (exit 0: every reply matched, 1: a reply differed, 2: a file is unreadable)",
    ),
    (
        "check-freebsd",
        "type-check for x86_64-unknown-freebsd with Debian's rustc-web (first run ~1-2 min);\n\
         \x20        --link: also build and link the release programs (zig cc) and check them with readelf",
    ),
    (
        "bench",
        "build the release daemon and run kvp-bench against the emulated device (about 5 minutes;\n\
         \x20        system calls counted with /usr/bin/strace if it can attach); flags pass through:\n\
         \x20        [--sizes 10,1000,10000] [--seed S] [--idle-secs S] [--churn-ops N] [--churn-secs S]\n\
         \x20        [--no-pin] [--tmp DIR]",
    ),
    (
        "dist",
        "build the release programs, stage the FreeBSD port's tree in target/dist/stage/usr/local\n\
         \x20        and check it against packaging/freebsd/pkg-plist",
    ),
    (
        "deb",
        "build the Debian package target/deb/hvguest_<version>_<arch>.deb (staged tree checked\n\
         \x20        against packaging/debian/contents); --install-test (root) then installs, checks,\n\
         \x20        removes and purges it on this machine",
    ),
    (
        "interop",
        "install Debian's cloud-init (skipped if it cannot be) and run its Hyper-V reporting handler\n\
         \x20        against hv_kvp_daemon and hvkvp (io/tests/cloud_init_interop.rs)",
    ),
    (
        "fuzz",
        "run the cargo-fuzz targets on nightly (installs cargo-fuzz if missing) and print\n\
         \x20        executions per target and crash files: fuzz [--seconds N] [--runs N] [TARGET...]\n\
         \x20        [-- LIBFUZZER_FLAGS...]",
    ),
    (
        "port",
        "write packaging/freebsd/Makefile.crates and distinfo from Cargo.lock (crate\n\
         \x20        sizes from cargo's own downloads); --check: fail if the committed ones are stale",
    ),
    (
        "pkg",
        "build the FreeBSD package target/pkg/hvguest-VERSION.pkg from the linked FreeBSD\n\
         \x20        programs (check-freebsd --link) and check its manifest against pkg-plist",
    ),
    ("help", "list the tasks"),
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        help();
        return ExitCode::SUCCESS;
    };
    let result = match (task.as_str(), rest) {
        ("help" | "-h" | "--help", _) => {
            help();
            Ok(())
        }
        ("test", []) => test(),
        ("ci", []) => ci(),
        ("check-freebsd", []) => freebsd::check(),
        ("check-freebsd", [flag]) if flag == "--link" => freebsd::link().map(|_| ()),
        ("dist", []) => dist::dist(),
        ("port", args) => port::port(args),
        ("pkg", []) => pkg::pkg(),
        ("deb", []) => deb::deb(false),
        ("deb", [flag]) if flag == "--install-test" => deb::deb(true),
        ("deb", extra) => {
            eprintln!(
                "xtask deb: takes only --install-test (got `{}`)",
                extra.join(" ")
            );
            return ExitCode::from(2);
        }
        // These two exit with the status of the program they run.
        ("sim", args) => return sim(args),
        ("replay", []) => {
            eprintln!("xtask replay: give at least one recording FILE (e.g. scenarios/recorded/*)");
            return ExitCode::from(2);
        }
        ("replay", args) => return replay(args),
        ("bench", args) => return bench::bench(args),
        ("fuzz", args) => fuzz::fuzz(args),
        ("interop", extra) => match extra {
            [] => interop::interop(),
            _ => {
                eprintln!(
                    "xtask interop: takes no arguments (got `{}`)",
                    extra.join(" ")
                );
                return ExitCode::from(2);
            }
        },
        ("test" | "ci" | "check-freebsd" | "dist" | "pkg", extra) => {
            eprintln!(
                "xtask {task}: takes no arguments (got `{}`)",
                extra.join(" ")
            );
            return ExitCode::from(2);
        }
        (other, _) => {
            eprintln!("xtask: unknown task `{other}`; `cargo xtask help` lists the tasks");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {task}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn help() {
    println!("usage: cargo xtask <task> [args]\n\ntasks:");
    for (name, about) in TASKS {
        println!("  {name:<6} {about}");
    }
}

/// `test`: nextest runs the unit and integration tests but skips doctests, so
/// `cargo test --doc` runs those. Doctests go first so that the run ends with the main
/// runner's summary, not with the doctests' (often "0 passed"); a doctest failure still
/// lets the main tests run, and either failure fails the task.
fn test() -> Result<(), String> {
    let doc = run(cargo().args(["test", "--workspace", "--doc"]));
    let main = if has_nextest() {
        run(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]))
    } else {
        eprintln!("xtask: cargo-nextest not found; using cargo test");
        run(cargo().args(["test", "--workspace", "--tests", "--no-fail-fast"]))
    };
    match (doc, main) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(doc), Err(main)) => Err(format!("{doc}; {main}")),
    }
}

/// `sim`: the seeded simulator, built in release (it runs thousands of seeds).
fn sim(args: &[String]) -> ExitCode {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "hvguest-sim",
        "--bin",
        "sim",
        "--",
    ])
    .args(args);
    run_for_status(&mut cmd)
}

/// `replay`: the replayer of recordings. Cargo runs it from the workspace root, so file names
/// are made absolute against the directory `cargo xtask` was run from (our own working
/// directory: `cargo run` does not change it).
fn replay(args: &[String]) -> ExitCode {
    let cwd = env::current_dir().unwrap_or_default();
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "hvguest-sim",
        "--bin",
        "replay",
        "--",
    ]);
    for arg in args {
        if arg.starts_with('-') && arg != "-" {
            cmd.arg(arg);
        } else {
            cmd.arg(cwd.join(arg));
        }
    }
    run_for_status(&mut cmd)
}

/// `ci`: the same script CI runs in a fresh clone.
fn ci() -> Result<(), String> {
    let mut cmd = Command::new("bash");
    cmd.arg(".ci/run").current_dir(project_root());
    run(&mut cmd)
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The workspace root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time too; the compile-time value is the
    // fallback for running the built binary directly.
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask's manifest directory has a parent")
        .to_path_buf()
}

/// The cargo that invoked us (`$CARGO`), run from the workspace root.
fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(program);
    cmd.current_dir(project_root());
    cmd
}

/// The command as a shell line, for the log.
fn shown(cmd: &Command) -> String {
    // `$CARGO` is a full path into the toolchain; its file name reads better.
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the command, runs it with inherited stdio, and exits as it did (1 if it was
/// killed by a signal, 2 if it could not start).
fn run_for_status(cmd: &mut Command) -> ExitCode {
    let shown = shown(cmd);
    eprintln!("$ {shown}");
    match cmd.status() {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!("xtask: `{shown}` ended by a signal ({status})");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("xtask: could not start `{shown}`: {err}");
            ExitCode::from(2)
        }
    }
}

/// Prints the command, runs it with inherited stdio, and fails unless it exits 0.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = shown(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}
