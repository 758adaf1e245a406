//! SET_IP_INFO carried out: the core has parsed and validated the host's configuration
//! and says which adapter it is for; this module finds the interface and applies it.
//!
//! * FreeBSD (`Adapter::Interface`): the kernel already named the hn(4) interface; the
//!   script `hv_set_ifconfig` runs with the values as separate arguments
//!   ([`sysinfo::apply_ip_config`], whose module documents the argument contract).
//! * Linux (`Adapter::Guid`): the interface is the one whose vmbus device has the
//!   host's GUID (`hvguest_io_linux::nic::interface_for_guid`); none has it: the core
//!   answers `GUID_NOT_FOUND`. Where NetworkManager runs (`nmcli -t -f RUNNING general`
//!   prints `running`), the configuration becomes a keyfile in NetworkManager's
//!   directory (mode 0600, replaced atomically, one per NIC, named by its GUID), then
//!   `nmcli connection load FILE` and `nmcli connection up uuid UUID` run, each with
//!   its own argument vector and no shell. Otherwise the same script as on FreeBSD
//!   runs, given the interface's name. Neither: a failure, and a log line saying what
//!   to install (docs/protocol/linux.md §1.7).
//!
//! Every program shares the one deadline the core put in the effect and is killed with
//! its process group there ([`programs::run_split`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hvguest_core::kvp::effect::{EffectResult, IoError};
use hvguest_core::kvp::ip::{Adapter, IpConfig, NicGuid};
use hvguest_core::vss::effect::ExitStatus;
use hvguest_io_linux::nic;
use nix::libc;

use crate::logging::Logger;
use crate::programs::{self, RanSplit};
use crate::sysinfo::{self, PROGRAM_PATH_ENV, SET_IFCONFIG_SCRIPT};

/// Where SET_IP_INFO's programs and files are: the real ones are hv_kvp_daemon's
/// defaults (`hvguest_io_linux::nic`'s constants); tests give their own.
#[derive(Clone, Debug)]
pub struct SetIpPaths {
    /// Where `hv_set_ifconfig` lives.
    pub scripts_dir: PathBuf,
    /// Linux: the interfaces, each with its device's GUID (`/sys/class/net`).
    pub sys_class_net: PathBuf,
    /// Linux: NetworkManager's client (`/usr/bin/nmcli`).
    pub nmcli: PathBuf,
    /// Linux: NetworkManager's keyfile directory
    /// (`/etc/NetworkManager/system-connections`).
    pub nm_connections: PathBuf,
}

/// Applies `cfg` within `deadline`: `Done`, `NoSuchAdapter` (a GUID no interface has),
/// or `Failed` with the program's exit status or the errno, the reason logged.
pub fn apply(cfg: &IpConfig, paths: &SetIpPaths, deadline: Duration, log: &Logger) -> EffectResult {
    match &cfg.adapter {
        Adapter::Interface(name) => {
            match sysinfo::apply_ip_config(name, cfg, &paths.scripts_dir, deadline) {
                Ok(()) => EffectResult::Done,
                Err(e) => EffectResult::Failed(e),
            }
        }
        Adapter::Guid(guid) => apply_for_guid(*guid, cfg, paths, deadline, log),
    }
}

fn errno_of(e: &io::Error) -> IoError {
    IoError(e.raw_os_error().unwrap_or(libc::EIO))
}

/// What a program wrote to stderr, as the end of a log sentence: its first line,
/// shortened, or that it wrote nothing.
fn said(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        None => "it wrote nothing to standard error".to_string(),
        Some(l) => {
            let short: String = l.chars().take(200).collect();
            format!("it said: {short}")
        }
    }
}

/// How a program ended, in words.
fn ended(status: &ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exited with status {c}"),
        ExitStatus::Signal(s) => format!("was killed by signal {s}"),
        ExitStatus::TimedOut => "was killed at the deadline".to_string(),
        ExitStatus::NotStarted(e) => format!("could not be started ({e})"),
    }
}

fn apply_for_guid(
    guid: NicGuid,
    cfg: &IpConfig,
    paths: &SetIpPaths,
    deadline: Duration,
    log: &Logger,
) -> EffectResult {
    let end = Instant::now() + deadline;
    let left = || end.saturating_duration_since(Instant::now());
    let interface = match nic::interface_for_guid(&paths.sys_class_net, &guid) {
        Ok(Some(name)) => name,
        // The core answers GUID_NOT_FOUND and says so in the log.
        Ok(None) => return EffectResult::NoSuchAdapter,
        Err(e) => {
            log.error(&format!(
                "the host's SET_IP_INFO for adapter {guid} failed, nothing was changed: {} \
                 cannot be listed ({e}), so no interface can be matched to the adapter",
                paths.sys_class_net.display()
            ));
            return EffectResult::Failed(errno_of(&e));
        }
    };
    if network_manager_runs(&paths.nmcli, left()) {
        return through_network_manager(guid, &interface, cfg, paths, end, log);
    }
    let script = paths.scripts_dir.join(SET_IFCONFIG_SCRIPT);
    if script.exists() {
        let run = sysinfo::run_set_ifconfig(&interface, cfg, &paths.scripts_dir, left());
        return match run.result {
            Ok(()) => {
                log.info(&format!(
                    "applied the host's SET_IP_INFO to {interface} (adapter {guid}) with {}",
                    script.display()
                ));
                EffectResult::Done
            }
            Err(e) => {
                log.error(&format!(
                    "the host's SET_IP_INFO for {interface} (adapter {guid}) failed: {} {}; \
                     {}",
                    script.display(),
                    ended(&run.status),
                    said(&run.stderr)
                ));
                EffectResult::Failed(e)
            }
        };
    }
    log.error(&format!(
        "the host's SET_IP_INFO for {interface} (adapter {guid}) failed, nothing was \
         changed: NetworkManager is not running (asked through {}) and there is no {}; \
         install and start NetworkManager, or install an executable hv_set_ifconfig \
         there (hv_kvp_daemon(8), LINUX)",
        paths.nmcli.display(),
        script.display()
    ));
    EffectResult::Failed(IoError::ENOENT)
}

/// `nmcli -t -f RUNNING general` prints `running` and exits 0 only while
/// NetworkManager runs; a missing `nmcli`, any other word or status means it does not.
/// (`nmcli` gets no `LANG`, so the word is not translated.)
fn network_manager_runs(nmcli: &Path, deadline: Duration) -> bool {
    if !nmcli.exists() {
        return false;
    }
    let ran = nmcli_run(nmcli, &["-t", "-f", "RUNNING", "general"], deadline);
    matches!(ran.status, ExitStatus::Code(0))
        && String::from_utf8_lossy(&ran.stdout).trim() == "running"
}

fn nmcli_run(nmcli: &Path, args: &[&str], deadline: Duration) -> RanSplit {
    let mut argv = vec![nmcli.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    programs::run_split(&argv, deadline, PROGRAM_PATH_ENV)
}

fn through_network_manager(
    guid: NicGuid,
    interface: &str,
    cfg: &IpConfig,
    paths: &SetIpPaths,
    end: Instant,
    log: &Logger,
) -> EffectResult {
    let mac = nic::interface_mac(&paths.sys_class_net, interface);
    let text = nic::render_keyfile(interface, mac, &guid, cfg);
    let name = nic::keyfile_name(&guid);
    let path = match write_keyfile(&paths.nm_connections, &name, &text) {
        Ok(p) => p,
        Err(e) => {
            log.error(&format!(
                "the host's SET_IP_INFO for {interface} (adapter {guid}) failed, nothing was \
                 changed: the keyfile {} could not be written ({e})",
                paths.nm_connections.join(&name).display()
            ));
            return EffectResult::Failed(errno_of(&e));
        }
    };
    let uuid = nic::connection_uuid(&guid);
    let path_text = path.to_string_lossy().into_owned();
    let steps: [&[&str]; 2] = [
        &["connection", "load", &path_text],
        &["connection", "up", "uuid", &uuid],
    ];
    for args in steps {
        let ran = nmcli_run(
            &paths.nmcli,
            args,
            end.saturating_duration_since(Instant::now()),
        );
        if ran.status != ExitStatus::Code(0) {
            log.error(&format!(
                "the host's SET_IP_INFO for {interface} (adapter {guid}) failed: `nmcli {}` \
                 {}; {}; the keyfile {} stays for NetworkManager to use when it next loads \
                 its connections",
                args.join(" "),
                ended(&ran.status),
                said(&ran.stderr),
                path.display()
            ));
            return EffectResult::Failed(match sysinfo::exit_result(ran.status) {
                Err(e) => e,
                // Not reached: only a zero exit maps to Ok.
                Ok(()) => IoError::EIO,
            });
        }
    }
    log.info(&format!(
        "applied the host's SET_IP_INFO to {interface} (adapter {guid}) through \
         NetworkManager: connection {uuid}, keyfile {}",
        path.display()
    ));
    EffectResult::Done
}

/// Writes `text` as `dir/name`, mode 0600, replacing any earlier file at once: a new
/// temporary file beside it (`O_EXCL`, never following a link), written and synced,
/// renamed over the name, the directory synced. A reader sees the old file or the new
/// one, never a part; a crash leaves at most the temporary file, which the next write
/// removes. NetworkManager ignores keyfiles others may read, and the file holds the
/// network's addresses only for root.
pub(crate) fn write_keyfile(dir: &Path, name: &str, text: &str) -> io::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
    };
    let mut file = match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by a write that did not finish (a crash): ours, and never renamed.
            std::fs::remove_file(&tmp)?;
            open()?
        }
        other => other?,
    };
    let written = (|| {
        // The umask may have taken bits away; none may be added.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        let path = dir.join(name);
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
        Ok(path)
    })();
    if written.is_err() {
        // Whatever is left of it is of no use; a missing one is fine.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs::tests::{TempDir, SPAWN_LOCK};
    use hvguest_core::kvp::ip::IfAddr;
    use std::os::unix::fs::MetadataExt;

    const GUID: &[u8] = b"{f8615163-df3e-46c5-913f-f2d2f965ed0e}";

    fn guid() -> NicGuid {
        NicGuid::parse(GUID).unwrap()
    }

    fn config() -> IpConfig {
        IpConfig {
            adapter: Adapter::Guid(guid()),
            dhcp: false,
            addrs: vec![IfAddr {
                addr: "10.0.0.5".parse().unwrap(),
                prefix: 24,
            }],
            gateways: vec!["10.0.0.1".parse().unwrap()],
            dns: vec!["10.0.0.2".parse().unwrap()],
        }
    }

    /// A fake system: sysfs with `eth0` holding the GUID, a keyfile directory, a
    /// scripts directory, and a place for an `nmcli`.
    struct World {
        dir: TempDir,
        paths: SetIpPaths,
    }

    impl World {
        fn new(name: &str) -> World {
            let dir = TempDir::new(name);
            let root = dir.path().to_path_buf();
            let eth0 = root.join("net/eth0");
            std::fs::create_dir_all(eth0.join("device")).unwrap();
            std::fs::write(
                eth0.join("device/device_id"),
                "{f8615163-df3e-46c5-913f-f2d2f965ed0e}\n",
            )
            .unwrap();
            std::fs::write(eth0.join("address"), "00:15:5d:01:02:03\n").unwrap();
            std::fs::create_dir_all(root.join("nm")).unwrap();
            std::fs::create_dir_all(root.join("scripts")).unwrap();
            let paths = SetIpPaths {
                scripts_dir: root.join("scripts"),
                sys_class_net: root.join("net"),
                nmcli: root.join("nmcli"),
                nm_connections: root.join("nm"),
            };
            World { dir, paths }
        }

        fn log(&self) -> PathBuf {
            self.dir.path().join("calls")
        }

        fn executable(path: &Path, body: &str) {
            std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        /// An `nmcli` that records each call's arguments, one per line, then a blank
        /// line, answers `running` when NetworkManager is asked after, and fails the
        /// step whose first word is `fail`.
        fn nmcli(&self, running: bool, fail: &str) {
            World::executable(
                &self.paths.nmcli,
                &format!(
                    "printf '%s\\n' \"$@\" >> '{log}'\necho >> '{log}'\n\
                     if [ \"$*\" = '-t -f RUNNING general' ]; then echo {word}; exit 0; fi\n\
                     if [ \"$2\" = '{fail}' ]; then echo 'Error: no such connection' >&2; exit 10; fi\n\
                     exit 0",
                    log = self.log().display(),
                    word = if running { "running" } else { "starting" },
                ),
            );
        }

        fn script(&self) {
            World::executable(
                &self.paths.scripts_dir.join(SET_IFCONFIG_SCRIPT),
                &format!(
                    "printf '%s\\n' \"$@\" >> '{}'\nexit 0",
                    self.log().display()
                ),
            );
        }

        fn calls(&self) -> String {
            std::fs::read_to_string(self.log()).unwrap_or_default()
        }

        fn apply(&self) -> EffectResult {
            apply(
                &config(),
                &self.paths,
                Duration::from_secs(10),
                &Logger::new(true, true, c"HV_KVP"),
            )
        }
    }

    #[test]
    fn network_manager_gets_a_private_keyfile_and_two_nmcli_calls() {
        let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let w = World::new("setip-nm");
        w.nmcli(true, "-");
        w.script();
        assert_eq!(w.apply(), EffectResult::Done);
        let keyfile = w
            .paths
            .nm_connections
            .join("hyperv-f8615163-df3e-46c5-913f-f2d2f965ed0e.nmconnection");
        let text = std::fs::read_to_string(&keyfile).unwrap();
        let mac = hvguest_core::kvp::ip::Mac([0, 0x15, 0x5d, 1, 2, 3]);
        assert_eq!(
            text,
            nic::render_keyfile("eth0", Some(mac), &guid(), &config())
        );
        assert!(text.contains("interface-name=eth0\n"), "{text}");
        assert_eq!(std::fs::metadata(&keyfile).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            w.calls(),
            format!(
                "-t\n-f\nRUNNING\ngeneral\n\nconnection\nload\n{}\n\nconnection\nup\nuuid\n\
                 f8615163-df3e-46c5-913f-f2d2f965ed0e\n\n",
                keyfile.display()
            )
        );
        // No temporary file is left beside it, and the script never ran.
        let names: Vec<_> = std::fs::read_dir(&w.paths.nm_connections)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_second_configuration_replaces_the_keyfile() {
        let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let w = World::new("setip-replace");
        w.nmcli(true, "-");
        let name = nic::keyfile_name(&guid());
        // A leftover temporary file of a crashed write, and an earlier keyfile.
        std::fs::write(w.paths.nm_connections.join(format!(".{name}.tmp")), "torn").unwrap();
        std::fs::write(w.paths.nm_connections.join(&name), "old").unwrap();
        assert_eq!(w.apply(), EffectResult::Done);
        let text = std::fs::read_to_string(w.paths.nm_connections.join(&name)).unwrap();
        assert!(text.contains("address1=10.0.0.5/24\n"), "{text}");
        assert_eq!(
            std::fs::read_dir(&w.paths.nm_connections).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_failing_nmcli_step_fails_the_request() {
        let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let w = World::new("setip-nm-fail");
        w.nmcli(true, "up");
        assert_eq!(w.apply(), EffectResult::Failed(IoError(10)));
        // The load ran; the activation was the one that failed.
        assert!(w.calls().contains("connection\nload\n"), "{}", w.calls());
    }

    #[test]
    fn without_network_manager_the_script_gets_the_interface() {
        let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let w = World::new("setip-script");
        // nmcli present but NetworkManager not running.
        w.nmcli(false, "-");
        w.script();
        assert_eq!(w.apply(), EffectResult::Done);
        assert_eq!(
            w.calls(),
            "-t\n-f\nRUNNING\ngeneral\n\n--adapter\neth0\n--static\n--addr\n10.0.0.5/24\n\
             --gateway\n10.0.0.1\n--dns\n10.0.0.2\n"
        );
        assert_eq!(
            std::fs::read_dir(&w.paths.nm_connections).unwrap().count(),
            0
        );
        // No nmcli at all: the same.
        std::fs::remove_file(&w.paths.nmcli).unwrap();
        std::fs::remove_file(w.log()).unwrap();
        assert_eq!(w.apply(), EffectResult::Done);
        assert!(w.calls().starts_with("--adapter\neth0\n"), "{}", w.calls());
    }

    #[test]
    fn a_failing_script_fails_the_request_and_is_worded_for_the_log() {
        let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let w = World::new("setip-script-fail");
        World::executable(
            &w.paths.scripts_dir.join(SET_IFCONFIG_SCRIPT),
            "echo 'no such device' >&2\nexit 3",
        );
        assert_eq!(w.apply(), EffectResult::Failed(IoError(3)));
        assert_eq!(ended(&ExitStatus::Code(3)), "exited with status 3");
        assert_eq!(ended(&ExitStatus::TimedOut), "was killed at the deadline");
        assert_eq!(
            said(b"\n  Error: no such device  \nmore"),
            "it said: Error: no such device"
        );
        assert_eq!(said(b" \n"), "it wrote nothing to standard error");
        assert_eq!(said(&[b'x'; 300]).len(), "it said: ".len() + 200);
    }

    #[test]
    fn neither_network_manager_nor_a_script_is_a_failure() {
        let w = World::new("setip-neither");
        assert_eq!(w.apply(), EffectResult::Failed(IoError::ENOENT));
    }

    #[test]
    fn a_guid_no_interface_has_is_reported_as_such_and_nothing_runs() {
        let _lock = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let w = World::new("setip-unknown");
        w.nmcli(true, "-");
        w.script();
        let mut cfg = config();
        cfg.adapter =
            Adapter::Guid(NicGuid::parse(b"{00000000-0000-4000-8000-000000000000}").unwrap());
        let r = apply(
            &cfg,
            &w.paths,
            Duration::from_secs(10),
            &Logger::new(true, true, c"HV_KVP"),
        );
        assert_eq!(r, EffectResult::NoSuchAdapter);
        assert_eq!(w.calls(), "");
    }
}
