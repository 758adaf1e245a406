//! `hv_vss_app`: the application side of Hyper-V backups, on /dev/hv_appvss_dev. It
//! runs a hook directory or one command with `freeze` before the file systems are
//! frozen and `thaw` after, and thaws by itself if no THAW comes. See hv_vss_app(8).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hvguest_core::vss::app::{AppMachine, AppWork};
use hvguest_io::logging::Logger;
use hvguest_io::process::{absolute, close_inherited_descriptors};
use hvguest_io::vss_config::{self, DEFAULT_CONFIG};
use hvguest_io::vss_daemon::{self, VssPaths};

/// Quiesces applications for the Hyper-V host's backups.
#[derive(Parser, Debug)]
#[command(
    name = "hv_vss_app",
    version,
    about = "Hyper-V application backup helper: runs application freeze and thaw hooks when the host takes a backup"
)]
struct Cli {
    /// Log debug messages too.
    #[arg(short = 'd')]
    debug: bool,
    /// Log to syslog instead of standard error.
    #[arg(long)]
    syslog: bool,
    /// The application VSS device, or a Unix socket emulating it.
    #[arg(long, value_name = "PATH", default_value = "/dev/hv_appvss_dev")]
    device: PathBuf,
    /// The configuration file (auto-thaw and freeze budget).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Run the executables in DIR (name order for freeze, reverse for thaw).
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    hooks: Option<PathBuf>,
    /// Run COMMAND with `freeze` or `thaw` appended.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    // Before anything is opened: what the parent left open must not reach our hooks
    // and scripts.
    if let Err(e) = close_inherited_descriptors() {
        eprintln!("hv_vss_app: {e}");
        return ExitCode::from(1);
    }
    let cli = Cli::parse();
    let config = match vss_config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hv_vss_app: {e}");
            return ExitCode::from(2);
        }
    };
    let work = match (&cli.hooks, cli.command.is_empty()) {
        (Some(d), _) => AppWork::HookDir(absolute(d).display().to_string()),
        (None, false) => AppWork::Command(cli.command.clone()),
        (None, true) => {
            eprintln!("hv_vss_app: give --hooks DIR or -- COMMAND...");
            return ExitCode::from(2);
        }
    };
    let paths = VssPaths {
        device: absolute(&cli.device),
        hook_dir: cli.hooks.as_deref().map(absolute),
        zpool: config.zpool.clone(),
        zfs: config.zfs.clone(),
        path: config.path.clone(),
        emulate_mounts: None,
        emulate_actions: None,
        // The application device is FreeBSD's: it freezes no file system.
        frozen_record: None,
        only_under: None,
        reopens: false,
    };
    let log = Logger::new(!cli.syslog, cli.debug, c"HV_VSS_APP");
    let machine = AppMachine::new(
        hvguest_core::vss::app::AppConfig { work, ..config.app },
        hvguest_io::clock::now(),
    );
    match vss_daemon::run(machine, &paths, &log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log.error(&e.to_string());
            ExitCode::from(1)
        }
    }
}
