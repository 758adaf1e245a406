//! `hv_vss_daemon`: the Hyper-V Volume Shadow Copy (backup) daemon, a drop-in
//! replacement for FreeBSD's and Linux's. See hv_vss_daemon(8) and vss.conf(5).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hvguest_core::layout::Layout;
use hvguest_core::vss::machine::VssMachine;
use hvguest_core::vss::policy::Mount;
use hvguest_io::freezer::{freezer_main, thaw_recorded, Mode};
use hvguest_io::logging::Logger;
use hvguest_io::mounts::{self, MountsError};
use hvguest_io::process::{absolute, close_inherited_descriptors, start_daemon};
use hvguest_io::system;
use hvguest_io::vss_config::{self, LoadedConfig, DEFAULT_CONFIG};
use hvguest_io::vss_daemon::{self, VssPaths};

/// Freezes file systems for the Hyper-V host's backups, on /dev/hv_fsvss_dev (FreeBSD)
/// or /dev/vmbus/hv_vss (Linux).
#[derive(Parser, Debug)]
#[command(
    name = "hv_vss_daemon",
    version,
    about = "Hyper-V backup (VSS) daemon: freezes and thaws the file systems, with hooks, when the host takes a backup"
)]
struct Cli {
    /// Stay in the foreground and log to standard error (the stock daemon's -n).
    #[arg(short = 'n')]
    foreground: bool,
    /// Log debug messages too (the stock daemon's -d).
    #[arg(short = 'd')]
    debug: bool,
    /// The VSS device, or a Unix socket emulating it.
    #[arg(long, value_name = "PATH", default_value = system::VSS_DEVICE)]
    device: PathBuf,
    /// Whose kernel's device messages: `freebsd` or `linux` (default: this system's).
    #[arg(long, value_name = "KERNEL", value_parser = parse_layout)]
    layout: Option<Layout>,
    /// Linux: where the file systems frozen now are recorded (on tmpfs), so that they
    /// are thawed even if the freezer dies (default /run/hvguest/vss-frozen on Linux).
    #[arg(long, value_name = "FILE")]
    frozen_record: Option<PathBuf>,
    /// Thaw every file system the record lists (a freezer that died while frozen) and
    /// exit; for systemd's ExecStopPost=. Exits 1 if one could not be thawed.
    #[arg(long)]
    thaw_recorded: bool,
    /// Prove that freezing works here: make a scratch file system in DIR (Linux: a loop
    /// device and mkfs.ext4; FreeBSD: md(4) and newfs), freeze it through the real
    /// freezer, check that a writer blocks while frozen and goes on after the thaw,
    /// take it down, and report. Touches no other mount. Exits 0 if it all worked.
    #[arg(long, value_name = "DIR")]
    self_test: Option<PathBuf>,
    /// Test mode: the mount table is only what is mounted below DIR, and the freezer
    /// refuses every other mount point.
    #[arg(long, value_name = "DIR")]
    only_under: Option<PathBuf>,
    /// The configuration file (a missing one means the documented defaults).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Emulation: take the mount table from FILE (`<fstype> <mountpoint> <rw|ro> [<source>]`,
    /// a space in a field written `\040`).
    #[arg(long, value_name = "FILE")]
    emulate_mounts: Option<PathBuf>,
    /// Emulation: write every action to FILE instead of doing it.
    #[arg(long, value_name = "FILE")]
    emulate_actions: Option<PathBuf>,
    /// Pidfile (taken when running as a daemon, or when given).
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Check the configuration file, print what CHECK and FREEZE would do to each mount
    /// of the current mount table (or the emulated one), and exit: 0 when the
    /// configuration is valid, 2 when it is not, 1 when the mount table cannot be read.
    #[arg(short = 't', long)]
    check_config: bool,
    /// Internal: run as the freezer child.
    #[arg(long, hide = true)]
    freezer: bool,
}

fn parse_layout(s: &str) -> Result<Layout, String> {
    Layout::from_name(s).ok_or_else(|| format!("{s:?}: expected `freebsd` or `linux`"))
}

/// `--frozen-record`, else this system's (none on FreeBSD).
fn frozen_record(cli: &Cli) -> Option<PathBuf> {
    cli.frozen_record
        .as_deref()
        .map(absolute)
        .or_else(|| system::FROZEN_RECORD.map(PathBuf::from))
}

/// The mount table `--emulate-mounts` names, else the system's.
fn mount_table(cli: &Cli) -> Result<Vec<Mount>, MountsError> {
    match &cli.emulate_mounts {
        Some(f) => mounts::emulated(f),
        None => mounts::system(),
    }
    .map(|t| mounts::only_under(t, cli.only_under.as_deref()))
}

/// `--check-config`: the file was valid on its own; now its `mount.<path>` settings
/// against the mount table, then the plan.
fn check_config(cli: &Cli, config: &LoadedConfig) -> ExitCode {
    let table = match mount_table(cli) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hv_vss_daemon: cannot read the mount table: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(bad) = config.check_mounts(&table) {
        eprintln!(
            "hv_vss_daemon: {}:{}: {}",
            cli.config.display(),
            bad.line,
            bad.problem
        );
        return ExitCode::from(2);
    }
    let origin = if cli.config.exists() {
        "is valid"
    } else {
        "does not exist: the defaults apply"
    };
    print!(
        "{} {origin}.\n{}",
        cli.config.display(),
        vss_config::plan_report(config, &table)
    );
    ExitCode::SUCCESS
}

/// At start-up, a `mount.<path>` setting that does not fit what is mounted there now
/// is worth a warning: every CHECK would veto until it is fixed (or the mount changes).
fn warn_about_mount_settings(cli: &Cli, config: &LoadedConfig, log: &Logger) {
    if config.vss.policy.by_mount.is_empty() {
        return;
    }
    match mount_table(cli) {
        Ok(table) => {
            if let Err(bad) = config.check_mounts(&table) {
                log.warn(&format!(
                    "{}:{}: {}; every backup fails while this is mounted so.",
                    cli.config.display(),
                    bad.line,
                    bad.problem
                ));
            }
        }
        Err(e) => log.warn(&format!(
            "Cannot read the mount table to check the mount.<path> settings of {}: {e}.",
            cli.config.display()
        )),
    }
}

fn main() -> ExitCode {
    // Before anything is opened: what the parent left open must not reach our hooks
    // and scripts.
    if let Err(e) = close_inherited_descriptors() {
        eprintln!("hv_vss_daemon: {e}");
        return ExitCode::from(1);
    }
    let cli = Cli::parse();
    if cli.freezer {
        let mode = match &cli.emulate_actions {
            Some(a) => Mode::Emulated {
                actions: a.clone(),
                mounts: cli.emulate_mounts.clone(),
            },
            None => Mode::Real {
                record: cli.frozen_record.clone(),
                only_under: cli.only_under.clone(),
            },
        };
        return ExitCode::from(u8::try_from(freezer_main(mode)).unwrap_or(1));
    }
    if let Some(dir) = &cli.self_test {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("hv_vss_daemon: --self-test: cannot find this program: {e}");
                return ExitCode::from(1);
            }
        };
        let mut say = |line: String| {
            let mut c = line.chars();
            let first: String = c
                .next()
                .map(|f| f.to_uppercase().collect())
                .unwrap_or_default();
            println!("{first}{}.", c.as_str());
        };
        return match hvguest_io::self_test::self_test(
            &exe,
            &absolute(dir),
            frozen_record(&cli),
            &mut say,
        ) {
            Ok(()) => {
                println!("Freezing works on this system.");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hv_vss_daemon: --self-test: {e}.");
                ExitCode::from(1)
            }
        };
    }
    if cli.thaw_recorded {
        let Some(record) = frozen_record(&cli) else {
            return ExitCode::SUCCESS;
        };
        let lines = thaw_recorded(&record);
        for l in &lines {
            eprintln!("hv_vss_daemon: {l}.");
        }
        // What is still recorded is what could not be thawed.
        return if record.exists() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }
    let layout = cli.layout.unwrap_or(system::VSS_LAYOUT);
    let config = match vss_config::load_for(&cli.config, layout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hv_vss_daemon: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        return check_config(&cli, &config);
    }
    let paths = VssPaths {
        device: absolute(&cli.device),
        hook_dir: config.vss.hook_dir.as_deref().map(PathBuf::from),
        zpool: config.zpool.clone(),
        zfs: config.zfs.clone(),
        path: config.path.clone(),
        emulate_mounts: cli.emulate_mounts.as_deref().map(absolute),
        emulate_actions: cli.emulate_actions.as_deref().map(absolute),
        frozen_record: frozen_record(&cli).filter(|_| cli.emulate_actions.is_none()),
        only_under: cli.only_under.as_deref().map(absolute),
        reopens: layout.reopens_after_error(),
    };
    let pidfile = match (&cli.pidfile, cli.foreground) {
        (Some(p), _) => Some(absolute(p)),
        (None, false) => Some(PathBuf::from(system::VSS_PIDFILE)),
        (None, true) => None,
    };
    let lock = match start_daemon(pidfile.as_deref(), cli.foreground) {
        Ok(l) => l,
        Err(e) => {
            // Once detached, standard error is /dev/null: only the status tells.
            eprintln!("hv_vss_daemon: {e}");
            return ExitCode::from(1);
        }
    };
    let log = Logger::new(cli.foreground, cli.debug, c"HV_VSS");
    warn_about_mount_settings(&cli, &config, &log);
    let machine = VssMachine::new(config.vss, hvguest_io::clock::now());
    let result = vss_daemon::run(machine, &paths, &log);
    drop(lock);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log.error(&e.to_string());
            ExitCode::from(1)
        }
    }
}
