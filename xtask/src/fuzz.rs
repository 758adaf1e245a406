//! `fuzz`: runs the cargo-fuzz targets in `fuzz/` on nightly, one after the other, and
//! prints how many inputs each one ran and any crash it left.
//!
//! Each target runs as `cargo +nightly fuzz run -a -s none TARGET SCRATCH CORPUS --
//! -max_total_time=N [-runs=N]`:
//!
//! * `-a` builds with debug assertions, so integer overflow and `debug_assert!` count as
//!   crashes; `-s none` skips AddressSanitizer, which finds nothing in safe Rust and
//!   costs several times the executions (the bodies call no unsafe code).
//! * New inputs go to `fuzz/target/corpus/TARGET/` (git-ignored, kept between runs), the
//!   first directory named; the committed seeds in `fuzz/corpus/TARGET/` are read but
//!   never written to, so a campaign leaves the tree clean.
//! * One libFuzzer process per target (libFuzzer's default; no `-jobs`, `-workers`):
//!   the machines this runs on are shared.
//!
//! The numbers come from libFuzzer's own report on stderr: the last `#N ... exec/s: R`
//! status line (the `DONE` one when it finishes), and `Test unit written to PATH` when
//! it saved a crash. A crash ends that target's run; the others still run, and the task
//! fails at the end. Arguments after `--` go to libFuzzer unchanged.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use super::{cargo, project_root, shown};

/// What one target's run reported.
struct Outcome {
    target: String,
    runs: Option<u64>,
    exec_per_sec: Option<u64>,
    crash: Option<String>,
    status: String,
}

pub fn fuzz(args: &[String]) -> Result<(), String> {
    let mut seconds: u64 = 60;
    let mut runs: Option<u64> = None;
    let mut targets = Vec::new();
    // Everything after `--` goes to libFuzzer as it is (`-max_len=1024`, `-dict=...`).
    let (args, extra) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => seconds = number(it.next(), "--seconds")?,
            "--runs" => runs = Some(number(it.next(), "--runs")?),
            flag if flag.starts_with('-') => {
                return Err(format!("unknown flag `{flag}` (see `cargo xtask help`)"))
            }
            target => targets.push(target.to_string()),
        }
    }
    let known = all_targets()?;
    if targets.is_empty() {
        targets = known.clone();
    }
    if let Some(unknown) = targets.iter().find(|t| !known.contains(t)) {
        return Err(format!(
            "no target `{unknown}` in fuzz/fuzz_targets/ (there are: {})",
            known.join(", ")
        ));
    }
    ensure_cargo_fuzz()?;
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(run_target(target, seconds, runs, extra)?);
    }
    println!(
        "\n{:<14} {:>14} {:>10}  crash",
        "target", "executions", "exec/s"
    );
    let show = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    for o in &outcomes {
        println!(
            "{:<14} {:>14} {:>10}  {}",
            o.target,
            show(o.runs),
            show(o.exec_per_sec),
            o.crash.as_deref().unwrap_or(&o.status)
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crash.is_some())
        .map(|o| o.target.as_str())
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!("crashes in {}", crashed.join(", ")))
    }
}

fn number(value: Option<&String>, flag: &str) -> Result<u64, String> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{flag} needs a whole number"))
}

/// The targets, from the file names in `fuzz/fuzz_targets/`, sorted.
fn all_targets() -> Result<Vec<String>, String> {
    let dir = project_root().join("fuzz/fuzz_targets");
    let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".rs")?.to_string();
            Some(name)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Installs cargo-fuzz when `cargo +nightly fuzz` is missing (it is a plain cargo
/// subcommand; building it needs no nightly).
fn ensure_cargo_fuzz() -> Result<(), String> {
    let present = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask fuzz: cargo-fuzz not found; installing it");
    super::run(cargo().args(["install", "cargo-fuzz", "--locked"]))
}

fn run_target(
    target: &str,
    seconds: u64,
    runs: Option<u64>,
    extra: &[String],
) -> Result<Outcome, String> {
    let scratch = project_root().join("fuzz/target/corpus").join(target);
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    // `cargo +nightly` goes through rustup's proxy, so not `$CARGO` (a stable toolchain's
    // cargo binary, which would ignore `+nightly`).
    let mut cmd = Command::new("cargo");
    cmd.current_dir(project_root())
        .args(["+nightly", "fuzz", "run", "-a", "-s", "none", target])
        .arg(&scratch)
        .arg(format!("fuzz/corpus/{target}"))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1");
    if let Some(runs) = runs {
        cmd.arg(format!("-runs={runs}"));
    }
    cmd.args(extra);
    cmd.stderr(Stdio::piped());
    eprintln!("$ {}", shown(&cmd));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start `{}`: {e}", shown(&cmd)))?;
    let mut outcome = Outcome {
        target: target.to_string(),
        runs: None,
        exec_per_sec: None,
        crash: None,
        status: String::new(),
    };
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // Status lines go by several a second; the rest (build, crash report) is
            // worth seeing as it comes.
            if !is_status(&line) || line.contains("DONE") {
                eprintln!("{line}");
            }
            read_line(&line, &mut outcome);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("wait for cargo fuzz: {e}"))?;
    outcome.status = if status.success() {
        "-".to_string()
    } else {
        format!("(exited: {status})")
    };
    Ok(outcome)
}

/// `#1234\tNEW    cov: ...`, `#5678\tpulse ...`, `#9999\tDONE   ...`.
fn is_status(line: &str) -> bool {
    line.strip_prefix('#')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Takes what `line` tells about the run: executions and rate from a status line (the
/// last one wins), the crash file from libFuzzer's report.
fn read_line(line: &str, o: &mut Outcome) {
    if is_status(line) {
        let count = line[1..].split(|c: char| !c.is_ascii_digit()).next();
        if let Some(n) = count.and_then(|n| n.parse().ok()) {
            o.runs = Some(n);
        }
        if let Some(rate) = line.split("exec/s: ").nth(1) {
            o.exec_per_sec = rate.split_whitespace().next().and_then(|r| r.parse().ok());
        }
    } else if let Some(n) = line.strip_prefix("stat::number_of_executed_units: ") {
        o.runs = n.trim().parse().ok().or(o.runs);
    } else if let Some(n) = line.strip_prefix("stat::average_exec_per_sec: ") {
        o.exec_per_sec = n.trim().parse().ok().or(o.exec_per_sec);
    } else if let Some(path) = line.split("Test unit written to ").nth(1) {
        o.crash = Some(path.trim().to_string());
    }
}
