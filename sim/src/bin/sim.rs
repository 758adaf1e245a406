//! `sim`: runs seeded random simulations (and, with `--scenarios`, the scenario files).
//! `cargo xtask sim` builds this in release mode and passes its arguments through.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant as WallClock;

use hvguest_sim::fs::SimFs;
use hvguest_sim::tool;
use hvguest_sim::world::{Failure, SimOptions, Stats, World};

struct Args {
    seeds: u64,
    first_seed: u64,
    one_seed: Option<u64>,
    requests: u64,
    faults: bool,
    determinism: bool,
    jobs: usize,
    out_dir: PathBuf,
    /// Tool operations swept at every crash point, per seed.
    tool_sweep: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: sim [--seeds N] [--seed S] [--first-seed S] [--requests N] [--no-faults]\n\
         \x20          [--check-determinism] [--jobs N] [--out DIR] [--tool-sweep N]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        seeds: 6000,
        first_seed: 1,
        one_seed: None,
        requests: 1000,
        faults: true,
        determinism: false,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        out_dir: PathBuf::from("target/sim-failures"),
        tool_sweep: 1,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>| {
        v.and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| usage())
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seeds" => a.seeds = num(it.next()),
            "--seed" => a.one_seed = Some(num(it.next())),
            "--first-seed" => a.first_seed = num(it.next()),
            "--requests" | "--steps" => a.requests = num(it.next()),
            "--no-faults" => a.faults = false,
            "--check-determinism" => a.determinism = true,
            "--jobs" => a.jobs = num(it.next()).max(1) as usize,
            "--tool-sweep" => a.tool_sweep = num(it.next()),
            "--out" => a.out_dir = it.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    a
}

fn run(seed: u64, a: &Args, keep_trace: bool) -> (Result<Stats, Failure>, Option<Vec<String>>) {
    let opts = SimOptions {
        seed,
        requests: a.requests,
        faults: a.faults,
        keep_trace,
    };
    let world = World::new(opts, SimFs::new());
    // The trace is inside the world; a kept trace is returned through the failure path.
    let (r, trace) = world.run_random_keep(keep_trace);
    // Then the tool's write path, stopped at every crash point of a few operations.
    let r = r.and_then(|mut st| match tool::sweep(seed, a.tool_sweep) {
        Ok(sw) => {
            st.tool_ops += sw.ops;
            st.tool_crash_points += sw.crash_points;
            Ok(st)
        }
        Err(violation) => Err(Failure {
            seed,
            violation,
            at: hvguest_core::Instant::ZERO,
            tail: Vec::new(),
        }),
    });
    (r, trace)
}

fn write_failure(a: &Args, f: &Failure) -> PathBuf {
    let dir = a.out_dir.join(f.seed.to_string());
    let _ = std::fs::create_dir_all(&dir);
    // Re-run the same seed keeping the whole trace: one seed reproduces the run.
    let (_, full) = run(f.seed, a, true);
    let mut text = full.unwrap_or_default().join("\n");
    text.push('\n');
    let _ = std::fs::write(dir.join("trace.log"), text);
    let _ = std::fs::write(
        dir.join("seed.txt"),
        format!(
            "seed {}\nviolation: {}\nat {}\nrerun: cargo xtask sim --seed {} --requests {}\n",
            f.seed, f.violation, f.at, f.seed, a.requests
        ),
    );
    dir
}

fn main() {
    let a = parse();
    let seeds: Vec<u64> = match a.one_seed {
        Some(s) => vec![s],
        None => (a.first_seed..a.first_seed + a.seeds).collect(),
    };
    println!(
        "sim: {} seed(s) from {}, {} requests each, faults {}, {} job(s){}",
        seeds.len(),
        seeds[0],
        a.requests,
        if a.faults { "on" } else { "off" },
        a.jobs,
        if a.determinism {
            ", determinism checked"
        } else {
            ""
        }
    );
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::<Failure>::new());
    let totals = Mutex::new(Stats::default());
    let started = WallClock::now();
    std::thread::scope(|s| {
        for _ in 0..a.jobs.min(seeds.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&seed) = seeds.get(i) else { break };
                println!("seed {seed}");
                let (r, _) = run(seed, &a, false);
                let r = match (r, a.determinism) {
                    (Ok(st), true) => match run(seed, &a, false).0 {
                        Ok(again) if again.trace_hash == st.trace_hash => Ok(st),
                        Ok(again) => Err(Failure {
                            seed,
                            violation: format!(
                                "nondeterministic: trace hash {:016x} then {:016x}",
                                st.trace_hash, again.trace_hash
                            ),
                            at: hvguest_core::Instant::ZERO,
                            tail: Vec::new(),
                        }),
                        Err(f) => Err(f),
                    },
                    (r, _) => r,
                };
                match r {
                    Ok(st) => {
                        let mut t = totals.lock().expect("no panics while held");
                        t.requests += st.requests;
                        t.crashes += st.crashes;
                        t.faults += st.faults;
                        t.freezes += st.freezes;
                        t.appends += st.appends;
                        t.tool_ops += st.tool_ops;
                        t.tool_crash_points += st.tool_crash_points;
                        t.linux_vss.add(&st.linux_vss);
                        t.timeouts += st.timeouts;
                        t.trace_lines += st.trace_lines;
                        t.virtual_ms += st.virtual_ms;
                    }
                    Err(f) => {
                        eprintln!("FAIL seed {}: {} (at {})", f.seed, f.violation, f.at);
                        failures.lock().expect("no panics while held").push(f);
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let t = totals.into_inner().expect("threads joined");
    let failures = failures.into_inner().expect("threads joined");
    println!(
        "sim: {} requests in {:.1} s: {:.0} simulated requests/s; {} crashes, {} I/O faults, {} freezes, {} outside appends, {} kernel timeouts, {:.0} virtual s; tool: {} operations, {} crash points",
        t.requests,
        secs,
        t.requests as f64 / secs.max(1e-9),
        t.crashes,
        t.faults,
        t.freezes,
        t.appends,
        t.timeouts,
        t.virtual_ms as f64 / 1000.0,
        t.tool_ops,
        t.tool_crash_points
    );
    let l = t.linux_vss;
    if l.worlds > 0 {
        println!(
            "sim: Linux VSS: {} worlds, {} FREEZEs answered OK, {} freezer deaths and {} daemon deaths leaving file systems frozen; thawed by the reaper {}, ExecStopPost {}, start-up {}; {} device resets",
            l.worlds,
            l.freezes_ok,
            l.freezer_deaths,
            l.daemon_deaths,
            l.reaper_thaws,
            l.stop_post_thaws,
            l.startup_thaws,
            l.device_resets
        );
    }
    if failures.is_empty() {
        println!("sim: all {} seed(s) passed", seeds.len());
        return;
    }
    for f in &failures {
        eprintln!("\n=== seed {} failed: {}", f.seed, f.violation);
        for l in f.tail.iter().rev().take(40).rev() {
            eprintln!("  {l}");
        }
        let dir = write_failure(&a, f);
        eprintln!("full trace: {}", dir.join("trace.log").display());
    }
    eprintln!("sim: {} of {} seed(s) failed", failures.len(), seeds.len());
    std::process::exit(1);
}
