//! `replay [-v] FILE...`: replays KVP recordings (`hvguest_sim::recording`) through
//! the real core and reports every reply that differs from the recorded one.
//!
//! Exit status: 0 if every reply matched, 1 if any differed, 2 if a file could not be
//! read or parsed (or on bad usage). `-v` lists every request, not just the problems.
//! `cargo xtask replay FILE...` builds this in release mode and runs it.

use std::process::ExitCode;

use hvguest_sim::recording::{replay, Recording};

fn usage() -> ExitCode {
    eprintln!("usage: replay [-v] FILE...");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut verbose = false;
    let mut files = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("-v" | "--verbose") => verbose = true,
            Some("-h" | "--help") => {
                eprintln!("usage: replay [-v] FILE...");
                return ExitCode::SUCCESS;
            }
            Some(s) if s.starts_with('-') && s != "-" => return usage(),
            _ => files.push(std::path::PathBuf::from(arg)),
        }
    }
    if files.is_empty() {
        return usage();
    }
    let mut unreadable = false;
    let mut differed = false;
    for path in &files {
        let shown = path.display();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{shown}: cannot read: {e}");
                unreadable = true;
                continue;
            }
        };
        let recording = match Recording::parse_bytes(&bytes) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{shown}:{}: {}", e.line, e.kind);
                unreadable = true;
                continue;
            }
        };
        let report = replay(&recording);
        println!("{shown}:");
        if verbose {
            print!("{report:#}");
        } else {
            print!("{report}");
        }
        differed |= !report.is_clean();
    }
    if unreadable {
        ExitCode::from(2)
    } else if differed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
