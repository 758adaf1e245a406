//! `hv_kvp_daemon`: the Hyper-V Key-Value Pair (Data Exchange) daemon, a drop-in
//! replacement for FreeBSD's and Linux's. See hv_kvp_daemon(8).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use hvguest_core::kvp::wire::Layout;
use hvguest_io::kvp_daemon::{self, DaemonConfig};
use hvguest_io::logging::Logger;
use hvguest_io::process::{absolute, close_inherited_descriptors, start_daemon};
use hvguest_io::set_ip::SetIpPaths;
use hvguest_io::{kvp_config, system};
use hvguest_io_linux::nic;

/// Serves the Hyper-V host's key/value pools and IP requests on the KVP device.
#[derive(Parser, Debug)]
#[command(
    name = "hv_kvp_daemon",
    version,
    about = "Hyper-V Data Exchange (KVP) daemon: answers the host's key/value requests from the pool files in the pool directory"
)]
struct Cli {
    /// Stay in the foreground and log to standard error (the stock daemon's -n).
    #[arg(short = 'n')]
    foreground: bool,
    /// Log debug messages too (the stock daemon's -d).
    #[arg(short = 'd')]
    debug: bool,
    /// The configuration file, kvp.conf(5) (a missing one means the documented defaults).
    #[arg(long, value_name = "FILE", default_value = kvp_config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// The KVP device, or a Unix socket emulating it.
    #[arg(long, value_name = "PATH", default_value = system::KVP_DEVICE)]
    device: PathBuf,
    /// Whose kernel's messages the device carries: this system's unless an emulated
    /// device plays the other's.
    #[arg(long, value_enum, default_value_t = LayoutArg::system())]
    layout: LayoutArg,
    /// Where the pool files live (created with its parents).
    #[arg(long, value_name = "DIR", default_value = system::POOL_DIR)]
    pool_dir: PathBuf,
    /// Record the session to FILE (replay it with `cargo xtask replay FILE`).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Where the SET_IP_INFO script hv_set_ifconfig lives.
    #[arg(long, value_name = "DIR", default_value = system::SCRIPTS_DIR)]
    scripts_dir: PathBuf,
    /// Linux: where the network interfaces are listed, each with its device's GUID.
    #[arg(long, value_name = "DIR", default_value = nic::SYS_CLASS_NET)]
    sys_class_net: PathBuf,
    /// Linux: NetworkManager's command-line client.
    #[arg(long, value_name = "FILE", default_value = nic::NMCLI)]
    nmcli: PathBuf,
    /// Linux: where NetworkManager's connection keyfiles are.
    #[arg(long, value_name = "DIR", default_value = nic::NM_CONNECTIONS)]
    nm_connections: PathBuf,
    /// Pidfile (taken when running as a daemon, or when given).
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
}

const DEFAULT_PIDFILE: &str = system::KVP_PIDFILE;

/// `--layout`: FreeBSD's 7430-byte messages or Linux's 7432-byte ones with their
/// two-step registration (docs/protocol/linux.md §1.2, §1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LayoutArg {
    Freebsd,
    Linux,
}

impl LayoutArg {
    fn system() -> LayoutArg {
        match system::KVP_LAYOUT {
            Layout::FreeBsd => LayoutArg::Freebsd,
            Layout::Linux => LayoutArg::Linux,
        }
    }

    fn layout(self) -> Layout {
        match self {
            LayoutArg::Freebsd => Layout::FreeBsd,
            LayoutArg::Linux => Layout::Linux,
        }
    }
}

fn main() -> ExitCode {
    // Before anything is opened: what the parent left open must not reach our hooks
    // and scripts.
    if let Err(e) = close_inherited_descriptors() {
        eprintln!("hv_kvp_daemon: {e}");
        return ExitCode::from(1);
    }
    let cli = Cli::parse();
    // Before detaching, so a bad file is said where the administrator looks.
    let settings = match kvp_config::load_settings(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hv_kvp_daemon: {e}");
            return ExitCode::from(2);
        }
    };
    let layout = cli.layout.layout();
    let mut kvp = settings.kvp;
    kvp.layout = layout;
    kvp.reply_budget = layout.reply_budget();
    let cfg = DaemonConfig {
        kvp,
        pool_mode: settings.pool_mode,
        device: absolute(&cli.device),
        pool_dir: absolute(&cli.pool_dir),
        set_ip: SetIpPaths {
            scripts_dir: absolute(&cli.scripts_dir),
            sys_class_net: absolute(&cli.sys_class_net),
            nmcli: absolute(&cli.nmcli),
            nm_connections: absolute(&cli.nm_connections),
        },
        record: cli.record.as_deref().map(absolute),
    };
    let pidfile = match (&cli.pidfile, cli.foreground) {
        (Some(p), _) => Some(absolute(p)),
        (None, false) => Some(PathBuf::from(DEFAULT_PIDFILE)),
        (None, true) => None,
    };
    let lock = match start_daemon(pidfile.as_deref(), cli.foreground) {
        Ok(l) => l,
        Err(e) => {
            // Once detached, standard error is /dev/null: only the status tells.
            eprintln!("hv_kvp_daemon: {e}");
            return ExitCode::from(1);
        }
    };
    let log = Logger::new(cli.foreground, cli.debug, c"HV_KVP");
    let result = kvp_daemon::run(&cfg, &log);
    drop(lock);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log.error(&e.to_string());
            ExitCode::from(1)
        }
    }
}
