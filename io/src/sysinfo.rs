//! System information for the KVP machine: the auto pool's values, the state of one
//! adapter (GET_IP_INFO) and applying an IP configuration (SET_IP_INFO).
//!
//! Nothing here spawns a process except [`apply_ip_config`], which runs the one script
//! whose job is to change the system. Queries read the kernel directly (`uname`,
//! `getifaddrs`, the routing table) and a few small files, so they fit the request
//! deadline (docs/protocol/kvp.md §7, K2). The host name lookup ([`lookup_fqdn`]) may
//! wait for DNS; the daemon calls it in a background thread and hands the result to
//! the core.
//!
//! # What each function reads
//!
//! * [`system_info`]: `uname(3)` and `getifaddrs(3)`: every address with its
//!   interface's name, in the kernel's order; the core chooses what the host sees.
//! * [`lookup_fqdn`]: `gethostname(3)`, then `getaddrinfo(3)` with `AI_CANONNAME`.
//! * [`query_adapter`]: `getifaddrs(3)` (link-layer address, addresses, netmasks);
//!   the default routes (FreeBSD: the `net.route` sysctl, `NET_RT_DUMP`; Linux:
//!   `/proc/net/route` and `/proc/net/ipv6_route`); `nameserver` lines of
//!   `/etc/resolv.conf`; whether DHCP is configured (FreeBSD: `ifconfig_<if>` in
//!   `/etc/rc.conf` then `/etc/rc.conf.local`; Linux: a DHCP client's lease file).
//!
//! # The `hv_set_ifconfig` argument convention
//!
//! [`apply_ip_config`] runs `<scripts_dir>/hv_set_ifconfig` directly, without a shell
//! (the file must be executable), with every value as its own argument, in this order:
//!
//! ```text
//! hv_set_ifconfig --adapter NAME (--dhcp | --static)
//!                 [--addr ADDRESS/PREFIX]... [--gateway ADDRESS]... [--dns ADDRESS]...
//! ```
//!
//! * `--adapter NAME`: the interface. On FreeBSD the name the kernel substituted for
//!   the adapter GUID (e.g. `hn0`; the core refuses the request when none was); on
//!   Linux the interface whose vmbus device has the host's GUID (e.g. `eth0`), found
//!   by [`crate::set_ip`] before the script runs, and the script runs there only where
//!   NetworkManager does not. Always first.
//! * `--dhcp` or `--static`: exactly one, second.
//! * `--addr ADDRESS/PREFIX`: one per address, in the host's order; IPv4 as
//!   `10.0.0.4/24`, IPv6 as `2001:db8::4/64`. May also be present with `--dhcp`.
//! * `--gateway ADDRESS`, `--dns ADDRESS`: one per address, in the host's order.
//!
//! Every address was parsed by the core before the script runs, so values are plain
//! addresses and numbers. The script runs with stdin `/dev/null`, the environment
//! reduced to `PATH=/sbin:/bin:/usr/sbin:/usr/bin`, working directory `/`, in a process
//! group of its own; its stdout and stderr are captured (the first 4 KiB of each). At
//! the deadline the whole process group is killed with `SIGKILL` and the result is
//! `ETIMEDOUT`. Exit status 0 means applied; any other status is reported to the host
//! as a failure. An example script is `io-freebsd/scripts/hv_set_ifconfig`.

#[cfg(target_os = "freebsd")]
use hvguest_io_freebsd::net::rc_conf_dhcp;
use hvguest_io_freebsd::net::without_embedded_scope;
#[cfg(target_os = "linux")]
use hvguest_io_linux::net::lease_file_exists;
#[cfg(target_os = "linux")]
use hvguest_io_linux::net::{parse_proc_ipv6_route, parse_proc_route};
use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hvguest_core::kvp::addresses::{InterfaceAddr, NamedAdapter};
use hvguest_core::kvp::auto::SystemInfo;
use hvguest_core::kvp::effect::IoError;
use hvguest_core::kvp::ip::{AdapterInfo, IfAddr, IpConfig, Mac};
use hvguest_core::limits::{
    MAX_ADAPTER_ADDRS, MAX_ADAPTER_CANDIDATES, MAX_IP_LIST, MAX_SYSTEM_ADDRS,
};
use hvguest_core::vss::effect::ExitStatus;
use nix::ifaddrs::{getifaddrs, InterfaceAddress};
use nix::libc;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::SockaddrStorage;

use crate::programs;

// ---------------------------------------------------------------------------------
// The auto pool

/// Operating system names and every address of every interface, for the auto pool.
/// `fqdn` is passed in: it comes from [`lookup_fqdn`], run off the request path. The
/// addresses are the kernel's, in its order and unfiltered (link-local ones without an
/// embedded scope): which of them the host sees is the core's choice
/// (`AddressSelection`).
pub fn system_info(fqdn: &str) -> SystemInfo {
    let (os_name, os_release, machine) = match nix::sys::utsname::uname() {
        Ok(u) => (
            u.sysname().to_string_lossy().into_owned(),
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        Err(_) => Default::default(),
    };
    let mut addrs = Vec::new();
    for ifa in getifaddrs().into_iter().flatten() {
        if addrs.len() == MAX_SYSTEM_ADDRS {
            break;
        }
        if let Some(addr) = ifa.address.as_ref().and_then(ip_of) {
            addrs.push(InterfaceAddr {
                interface: ifa.interface_name.clone(),
                addr,
            });
        }
    }
    SystemInfo {
        fqdn: fqdn.to_string(),
        os_name,
        os_release,
        machine,
        addrs,
    }
}

fn ip_of(sa: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(sin) = sa.as_sockaddr_in() {
        return Some(IpAddr::V4(sin.ip()));
    }
    sa.as_sockaddr_in6()
        .map(|sin6| IpAddr::V6(without_embedded_scope(sin6.ip())))
}

/// The canonical name of this host: `gethostname`, then `getaddrinfo` with
/// `AI_CANONNAME`; the plain host name if the lookup fails, empty if even that fails.
///
/// This may wait for DNS for as long as the resolver's timeouts allow (many seconds),
/// so it must never run on the request path: the daemon calls it in a background
/// thread and passes the result to [`system_info`].
pub fn lookup_fqdn() -> String {
    let host = match nix::unistd::gethostname() {
        Ok(h) => h.to_string_lossy().into_owned(),
        Err(_) => return String::new(),
    };
    canonical_name(&host).unwrap_or(host)
}

fn canonical_name(host: &str) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    let c_host = CString::new(host).ok()?;
    let hints = libc::addrinfo {
        ai_flags: libc::AI_CANONNAME,
        ai_family: libc::AF_UNSPEC,
        ai_socktype: libc::SOCK_STREAM,
        ai_protocol: 0,
        ai_addrlen: 0,
        ai_canonname: std::ptr::null_mut(),
        ai_addr: std::ptr::null_mut(),
        ai_next: std::ptr::null_mut(),
    };
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c_host` is NUL-terminated and outlives the call, `hints` is a valid
    // addrinfo with null pointers, `res` is a valid out pointer. On success the list
    // is freed below, exactly once.
    let rc = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: `res` is the non-null head of the list getaddrinfo returned and has not
    // been freed; `ai_canonname`, when not null, is a NUL-terminated string owned by
    // that list, copied out before `freeaddrinfo`.
    let name = unsafe {
        let c = (*res).ai_canonname;
        let name = (!c.is_null()).then(|| CStr::from_ptr(c).to_string_lossy().into_owned());
        libc::freeaddrinfo(res);
        name
    };
    name.filter(|n| !n.is_empty())
}

// ---------------------------------------------------------------------------------
// GET_IP_INFO

/// The files [`query_adapter_in`] reads; [`Paths::system`] holds the real ones. Each
/// platform reads only the fields it needs.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `nameserver` lines (both platforms).
    pub resolv_conf: PathBuf,
    /// Linux: systemd-resolved's uplink servers, read when `resolv_conf` names only its
    /// stub listener (docs/protocol/linux.md §1.6).
    pub resolved_uplink: PathBuf,
    /// FreeBSD: rc.conf files in the order rc(8) reads them; a later assignment wins.
    pub rc_conf: Vec<PathBuf>,
    /// Linux: IPv4 routes.
    pub proc_route: PathBuf,
    /// Linux: IPv6 routes.
    pub proc_ipv6_route: PathBuf,
    /// Linux: directories holding dhclient, dhcpcd or NetworkManager lease files.
    pub lease_dirs: Vec<PathBuf>,
    /// Linux: systemd-networkd's lease directory (files named by interface index).
    pub networkd_leases: PathBuf,
}

impl Paths {
    pub fn system() -> Paths {
        Paths {
            resolv_conf: "/etc/resolv.conf".into(),
            resolved_uplink: hvguest_io_linux::net::RESOLVED_UPLINK.into(),
            rc_conf: vec!["/etc/rc.conf".into(), "/etc/rc.conf.local".into()],
            proc_route: "/proc/net/route".into(),
            proc_ipv6_route: "/proc/net/ipv6_route".into(),
            lease_dirs: [
                "/var/lib/dhcp",
                "/var/lib/dhclient",
                "/var/lib/dhcpcd",
                "/var/lib/NetworkManager",
                "/run",
                "/run/dhcpcd",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            networkd_leases: "/run/systemd/netif/leases".into(),
        }
    }
}

/// Addresses, gateways, DNS servers and DHCP state of every interface whose
/// link-layer address is `mac`, in `getifaddrs` order; empty if none has it. Reads the
/// real system files.
pub fn query_adapter(mac: Mac) -> Vec<NamedAdapter> {
    query_adapter_in(mac, &Paths::system())
}

/// [`query_adapter`] reading the files named in `paths`.
///
/// Several interfaces may share the MAC (a vlan(4) over `hn0`, lagg members, an SR-IOV
/// VF beside its `hn`; docs/protocol/kvp.md §7, K4): all are reported, at most
/// `MAX_ADAPTER_CANDIDATES`, and the core chooses (`AddressSelection::choose`).
/// Loopback interfaces never match. Every address of an interface is reported,
/// link-local included, in the kernel's order, at most `MAX_ADAPTER_ADDRS` (the core
/// orders them and keeps `MAX_IP_LIST`); gateway and DNS lists stop at `MAX_IP_LIST`.
pub fn query_adapter_in(mac: Mac, paths: &Paths) -> Vec<NamedAdapter> {
    let Ok(list) = getifaddrs() else {
        return Vec::new();
    };
    let list: Vec<InterfaceAddress> = list.collect();
    let mut candidates: Vec<(&str, usize)> = Vec::new();
    for ifa in &list {
        if ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        let Some((found, index)) = ifa.address.as_ref().and_then(link_mac) else {
            continue;
        };
        let new = !candidates.iter().any(|(n, _)| *n == ifa.interface_name);
        if found == mac.0 && new && candidates.len() < MAX_ADAPTER_CANDIDATES {
            candidates.push((ifa.interface_name.as_str(), index));
        }
    }
    let mut dns = match candidates.is_empty() {
        true => Vec::new(),
        false => dns_servers(paths),
    };
    dns.truncate(MAX_IP_LIST);
    candidates
        .into_iter()
        .map(|(name, index)| {
            let mut gateways = gateways(name, index, paths);
            gateways.truncate(MAX_IP_LIST);
            let info = AdapterInfo {
                addrs: addresses_of(&list, name),
                gateways,
                dns: dns.clone(),
                dhcp: dhcp_enabled(name, index, paths),
            };
            NamedAdapter {
                interface: name.to_string(),
                info,
            }
        })
        .collect()
}

/// The MAC and interface index of a link-layer address of Ethernet length.
fn link_mac(sa: &SockaddrStorage) -> Option<([u8; 6], usize)> {
    let link = sa.as_link_addr()?;
    #[cfg(target_os = "linux")]
    if link.halen() != 6 {
        return None;
    }
    #[cfg(target_os = "freebsd")]
    if link.alen() != 6 {
        return None;
    }
    Some((link.addr()?, link.ifindex()))
}

fn addresses_of(list: &[InterfaceAddress], name: &str) -> Vec<IfAddr> {
    let mut out: Vec<IfAddr> = Vec::new();
    for ifa in list.iter().filter(|i| i.interface_name == name) {
        let Some(addr) = ifa.address.as_ref().and_then(ip_of) else {
            continue;
        };
        if out.len() < MAX_ADAPTER_ADDRS && !out.iter().any(|a| a.addr == addr) {
            let prefix = prefix_len(addr, ifa.netmask.as_ref());
            out.push(IfAddr { addr, prefix });
        }
    }
    out
}

/// The number of one bits in the netmask; a host prefix if there is no usable mask.
fn prefix_len(addr: IpAddr, netmask: Option<&SockaddrStorage>) -> u8 {
    match addr {
        IpAddr::V4(_) => netmask
            .and_then(|m| m.as_sockaddr_in())
            .map_or(32, |m| u32::from(m.ip()).count_ones() as u8),
        IpAddr::V6(_) => netmask
            .and_then(|m| m.as_sockaddr_in6())
            .map_or(128, |m| u128::from(m.ip()).count_ones() as u8),
    }
}

/// The DNS servers the host is shown: resolv.conf's, or on Linux, when it names only
/// systemd-resolved's stub, the servers resolved forwards to.
fn dns_servers(paths: &Paths) -> Vec<IpAddr> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default()
    };
    let servers = read(&paths.resolv_conf);
    if cfg!(target_os = "linux") && hvguest_io_linux::net::only_resolved_stub(&servers) {
        return read(&paths.resolved_uplink);
    }
    servers
}

/// The `nameserver` addresses, in file order. A scope suffix (`fe80::1%hn0`) is
/// dropped; lines that are not a `nameserver` keyword and an address are skipped.
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        let addr = word.split('%').next().unwrap_or(word);
        if let Ok(a) = addr.parse::<IpAddr>() {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(target_os = "freebsd")]
fn gateways(_name: &str, index: usize, _paths: &Paths) -> Vec<IpAddr> {
    hvguest_io_freebsd::net::default_gateways(index)
}

#[cfg(target_os = "linux")]
fn gateways(name: &str, _index: usize, paths: &Paths) -> Vec<IpAddr> {
    let mut out = std::fs::read_to_string(&paths.proc_route)
        .map(|t| parse_proc_route(&t, name))
        .unwrap_or_default();
    out.extend(
        std::fs::read_to_string(&paths.proc_ipv6_route)
            .map(|t| parse_proc_ipv6_route(&t, name))
            .unwrap_or_default(),
    );
    out
}

#[cfg(not(any(target_os = "freebsd", target_os = "linux")))]
fn gateways(_name: &str, _index: usize, _paths: &Paths) -> Vec<IpAddr> {
    Vec::new()
}

#[cfg(target_os = "freebsd")]
fn dhcp_enabled(name: &str, _index: usize, paths: &Paths) -> bool {
    let texts: Vec<String> = paths
        .rc_conf
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    rc_conf_dhcp(&texts, name)
}

#[cfg(target_os = "linux")]
fn dhcp_enabled(name: &str, index: usize, paths: &Paths) -> bool {
    lease_file_exists(name, index, &paths.networkd_leases, &paths.lease_dirs)
}

#[cfg(not(any(target_os = "freebsd", target_os = "linux")))]
fn dhcp_enabled(_name: &str, _index: usize, _paths: &Paths) -> bool {
    false
}

// ---------------------------------------------------------------------------------
// SET_IP_INFO

/// The script's file name in the scripts directory.
pub const SET_IFCONFIG_SCRIPT: &str = "hv_set_ifconfig";
/// The only environment the script gets.
const SCRIPT_PATH_ENV: &str = "/sbin:/bin:/usr/sbin:/usr/bin";
/// How much of each of stdout and stderr is kept.
pub const OUTPUT_LIMIT: usize = programs::OUTPUT_LIMIT;
/// The only environment `nmcli` gets: the same as the script's (and so no `LANG`, so
/// its answers are the untranslated words [`crate::set_ip`] reads).
pub(crate) const PROGRAM_PATH_ENV: &str = SCRIPT_PATH_ENV;
const EINVAL: i32 = 22;

/// What a script run produced: its result and the start of its output, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptRun {
    pub result: Result<(), IoError>,
    /// How it ended, for a log line (`result` keeps only a number).
    pub status: ExitStatus,
    /// The first [`OUTPUT_LIMIT`] bytes of stdout.
    pub stdout: Vec<u8>,
    /// The first [`OUTPUT_LIMIT`] bytes of stderr.
    pub stderr: Vec<u8>,
}

/// The script's arguments for `cfg` applied to `interface` (see the module
/// documentation): the hn(4) name the FreeBSD kernel put in the request, or the Linux
/// interface whose device has the request's GUID.
pub fn set_ifconfig_args(interface: &str, cfg: &IpConfig) -> Vec<String> {
    let mut args = vec![
        "--adapter".to_string(),
        interface.to_string(),
        if cfg.dhcp { "--dhcp" } else { "--static" }.to_string(),
    ];
    for a in &cfg.addrs {
        args.push("--addr".into());
        args.push(format!("{}/{}", a.addr, a.prefix));
    }
    for g in &cfg.gateways {
        args.push("--gateway".into());
        args.push(g.to_string());
    }
    for d in &cfg.dns {
        args.push("--dns".into());
        args.push(d.to_string());
    }
    args
}

/// Runs `<scripts_dir>/hv_set_ifconfig` with `cfg` as arguments for `interface` and
/// waits at most `deadline`. `Err(ETIMEDOUT)` if it was killed at the deadline,
/// `Err(IoError(status))` for a non-zero exit (1 if killed by a signal),
/// `Err(IoError(ENOENT))` if the script does not exist, another errno if it could not
/// be started (e.g. not executable).
pub fn apply_ip_config(
    interface: &str,
    cfg: &IpConfig,
    scripts_dir: &Path,
    deadline: Duration,
) -> Result<(), IoError> {
    run_set_ifconfig(interface, cfg, scripts_dir, deadline).result
}

/// [`apply_ip_config`], also returning what the script printed.
pub fn run_set_ifconfig(
    interface: &str,
    cfg: &IpConfig,
    scripts_dir: &Path,
    deadline: Duration,
) -> ScriptRun {
    run_script(
        &scripts_dir.join(SET_IFCONFIG_SCRIPT),
        &set_ifconfig_args(interface, cfg),
        deadline,
    )
}

/// Runs the script through [`programs::run_split`] (stdin `/dev/null`, only `PATH` in
/// the environment, working directory `/`, its own process group killed at the
/// deadline).
fn run_script(path: &Path, args: &[String], deadline: Duration) -> ScriptRun {
    // A relative path stays a path (not a name looked up in PATH).
    let path = if path.is_relative() {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    let Some(program) = path.to_str() else {
        return ScriptRun {
            result: Err(IoError(EINVAL)),
            status: ExitStatus::NotStarted(IoError(EINVAL)),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
    };
    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(program.to_string());
    argv.extend_from_slice(args);
    let ran = programs::run_split(&argv, deadline, SCRIPT_PATH_ENV);
    ScriptRun {
        result: exit_result(ran.status),
        status: ran.status,
        stdout: ran.stdout,
        stderr: ran.stderr,
    }
}

pub(crate) fn exit_result(status: ExitStatus) -> Result<(), IoError> {
    match status {
        ExitStatus::Code(0) => Ok(()),
        ExitStatus::Code(code) => Err(IoError(code)),
        ExitStatus::Signal(_) => Err(IoError(1)),
        ExitStatus::TimedOut => Err(IoError::ETIMEDOUT),
        ExitStatus::NotStarted(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    // ------------------------------------------------------------------ helpers

    use crate::programs::tests::TempDir;

    /// Scripts are written and run under this lock (shared with every test in the crate
    /// that writes an executable): a file open for writing while another thread forks
    /// can make the exec fail with ETXTBSY.
    use crate::programs::tests::SPAWN_LOCK as SCRIPTS;

    fn write_script(dir: &Path, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(SET_IFCONFIG_SCRIPT);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn config(adapter: &str) -> IpConfig {
        IpConfig {
            adapter: hvguest_core::kvp::ip::Adapter::Interface(adapter.to_string()),
            dhcp: false,
            addrs: vec![
                IfAddr {
                    addr: "10.0.0.4".parse().unwrap(),
                    prefix: 24,
                },
                IfAddr {
                    addr: "2001:db8::4".parse().unwrap(),
                    prefix: 64,
                },
            ],
            gateways: vec!["10.0.0.1".parse().unwrap(), "fe80::1".parse().unwrap()],
            dns: vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()],
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    // ------------------------------------------------------------------ parsers

    #[test]
    fn resolv_conf_nameservers() {
        let text = "\
# generated
search example.net
nameserver 10.0.0.2
nameserver\t2001:db8::53
  nameserver   fe80::1%hn0   # link-local
#nameserver 1.1.1.1
; nameserver 9.9.9.9
nameserver
nameserver not-an-address
nameservers 8.8.8.8
nameserver 10.0.0.2
options edns0
\u{0}\u{ff}garbage
";
        assert_eq!(
            parse_resolv_conf(text),
            ips(&["10.0.0.2", "2001:db8::53", "fe80::1"])
        );
        assert!(parse_resolv_conf("").is_empty());
    }

    #[test]
    fn system_info_has_uname_and_every_address() {
        let info = system_info("vm1.example.net");
        assert_eq!(info.fqdn, "vm1.example.net");
        assert!(!info.os_name.is_empty());
        assert!(!info.os_release.is_empty());
        assert!(!info.machine.is_empty());
        // Every machine has a loopback interface, and its addresses are listed with
        // its name: excluding them is the core's choice.
        assert!(
            info.addrs
                .iter()
                .any(|a| a.addr.is_loopback() && !a.interface.is_empty()),
            "{:?}",
            info.addrs
        );
        assert!(info.addrs.len() <= MAX_SYSTEM_ADDRS);
    }

    #[test]
    fn lookup_fqdn_returns_a_name() {
        // Whatever DNS says here, a host name comes back.
        let host = nix::unistd::gethostname().unwrap();
        if !host.is_empty() {
            assert!(!lookup_fqdn().is_empty());
        }
    }

    #[test]
    fn unknown_mac_is_none() {
        assert_eq!(query_adapter(Mac([0xfe, 0xed, 0xfa, 0xce, 0xbe, 0xef])), []);
    }

    /// The one interface holding a MAC no other interface holds.
    fn only(mut found: Vec<NamedAdapter>, name: &str) -> AdapterInfo {
        assert_eq!(found.len(), 1, "{found:?}");
        let one = found.remove(0);
        assert_eq!(one.interface, name);
        one.info
    }

    /// An interface with a MAC and at least one address, with those addresses.
    fn some_real_interface() -> Option<(String, usize, Mac, Vec<IpAddr>)> {
        let list: Vec<InterfaceAddress> = getifaddrs().ok()?.collect();
        for ifa in &list {
            if ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
                continue;
            }
            let Some((mac, index)) = ifa.address.as_ref().and_then(link_mac) else {
                continue;
            };
            if mac == [0; 6] {
                continue;
            }
            // Skip MACs shared by several interfaces: which one wins is tested elsewhere.
            let sharing = list
                .iter()
                .filter(|o| o.address.as_ref().and_then(link_mac).map(|m| m.0) == Some(mac))
                .count();
            let mut addrs: Vec<IpAddr> = Vec::new();
            for o in list
                .iter()
                .filter(|o| o.interface_name == ifa.interface_name)
            {
                match o.address.as_ref().and_then(ip_of) {
                    Some(a) if !addrs.contains(&a) => addrs.push(a),
                    _ => {}
                }
            }
            if sharing == 1 && !addrs.is_empty() {
                return Some((ifa.interface_name.clone(), index, Mac(mac), addrs));
            }
        }
        None
    }

    #[test]
    fn real_interface_reports_its_addresses() {
        let Some((name, _, mac, addrs)) = some_real_interface() else {
            eprintln!("no non-loopback interface with a MAC and an address; skipped");
            return;
        };
        let info = only(query_adapter(mac), &name);
        let got: Vec<IpAddr> = info.addrs.iter().map(|a| a.addr).collect();
        assert_eq!(got, addrs, "addresses of {name}");
        for a in &info.addrs {
            let max = if a.addr.is_ipv4() { 32 } else { 128 };
            assert!(a.prefix <= max && a.prefix > 0, "{a:?}");
        }
    }

    #[test]
    fn real_interface_with_test_files() {
        let Some((name, _index, mac, _)) = some_real_interface() else {
            eprintln!("no non-loopback interface with a MAC and an address; skipped");
            return;
        };
        let dir = TempDir::new("paths");
        let d = dir.path();
        std::fs::write(
            d.join("resolv.conf"),
            "nameserver 10.9.9.9\nnameserver ::9\n",
        )
        .unwrap();
        std::fs::write(d.join("rc.conf"), format!("ifconfig_{name}=\"SYNCDHCP\"\n")).unwrap();
        std::fs::write(d.join("route"), "Iface\tDestination\n").unwrap();
        std::fs::write(d.join("ipv6_route"), "").unwrap();
        let mut paths = Paths {
            resolv_conf: d.join("resolv.conf"),
            resolved_uplink: d.join("uplink.conf"),
            rc_conf: vec![d.join("rc.conf"), d.join("missing.local")],
            proc_route: d.join("route"),
            proc_ipv6_route: d.join("ipv6_route"),
            lease_dirs: vec![d.join("leases"), d.join("missing")],
            networkd_leases: d.join("networkd"),
        };
        let info = only(query_adapter_in(mac, &paths), &name);
        assert_eq!(info.dns, ips(&["10.9.9.9", "::9"]));
        #[cfg(target_os = "linux")]
        {
            assert!(info.gateways.is_empty());
            assert!(!info.dhcp);
            std::fs::create_dir_all(d.join("leases")).unwrap();
            std::fs::write(d.join("leases").join(format!("dhclient.{name}.leases")), "").unwrap();
            let route = format!(
                "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                 {name}\t00000000\t{:08X}\t0003\t0\t0\t0\t00000000\n",
                u32::from_ne_bytes([10, 0, 0, 1])
            );
            std::fs::write(d.join("route"), route).unwrap();
            let info = only(query_adapter_in(mac, &paths), &name);
            assert!(info.dhcp);
            assert_eq!(info.gateways, ips(&["10.0.0.1"]));
        }
        #[cfg(target_os = "freebsd")]
        assert!(info.dhcp);
        // systemd-resolved's stub in resolv.conf: the servers it forwards to instead.
        #[cfg(target_os = "linux")]
        {
            std::fs::write(
                d.join("resolv.conf"),
                "nameserver 127.0.0.53\noptions edns0\n",
            )
            .unwrap();
            std::fs::write(d.join("uplink.conf"), "nameserver 168.63.129.16\n").unwrap();
            let info = only(query_adapter_in(mac, &paths), &name);
            assert_eq!(info.dns, ips(&["168.63.129.16"]));
        }
        paths.resolv_conf = d.join("no-such-file");
        assert!(only(query_adapter_in(mac, &paths), &name).dns.is_empty());
    }

    // ------------------------------------------------------------------ the script

    #[test]
    fn argument_convention() {
        let mut c = config("hn0");
        assert_eq!(
            set_ifconfig_args("hn0", &c),
            [
                "--adapter",
                "hn0",
                "--static",
                "--addr",
                "10.0.0.4/24",
                "--addr",
                "2001:db8::4/64",
                "--gateway",
                "10.0.0.1",
                "--gateway",
                "fe80::1",
                "--dns",
                "10.0.0.2",
                "--dns",
                "10.0.0.3"
            ]
        );
        c.dhcp = true;
        c.addrs.clear();
        c.gateways.clear();
        c.dns.clear();
        assert_eq!(set_ifconfig_args("hn0", &c), ["--adapter", "hn0", "--dhcp"]);
    }

    #[test]
    fn script_gets_exact_argv_without_a_shell() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("argv");
        let out = dir.path().join("args");
        let marker = dir.path().join("pwned");
        write_script(
            dir.path(),
            &format!(
                "printf '%s\\n' \"$@\" > '{}'\necho \"PATH=$PATH HOME=${{HOME-unset}}\"\n\
                 echo to-stderr >&2\nexit 0",
                out.display()
            ),
        );
        // Shell metacharacters arrive verbatim: no shell ever sees them.
        let adapter = format!("hn0; touch {} $(id) `id` '\"* | &", marker.display());
        let cfg = config("hn0");
        let run = run_set_ifconfig(&adapter, &cfg, dir.path(), Duration::from_secs(5));
        assert_eq!(run.result, Ok(()), "{run:?}");
        let got = std::fs::read_to_string(&out).unwrap();
        let got: Vec<&str> = got.lines().collect();
        assert_eq!(got, set_ifconfig_args(&adapter, &cfg));
        assert_eq!(got[1], adapter);
        assert!(!marker.exists());
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            format!("PATH={SCRIPT_PATH_ENV} HOME=unset\n")
        );
        assert_eq!(run.stderr, b"to-stderr\n");
    }

    /// The example script repeats the core's adapter rule: it stops at its argument
    /// check, before running any tool, for anything but a synthetic NIC. The names used
    /// exist on no machine, so an old script that let them through could do no harm.
    #[test]
    fn the_example_script_refuses_every_adapter_but_a_synthetic_nic() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../io-freebsd/scripts/hv_set_ifconfig");
        let run = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            run_script(&script, &args, Duration::from_secs(5))
        };
        for bad in [
            "lo9999", "-hn0", "hn", "hn9x", "xhn9999", "em9999", "hn-1", "hn9.100",
        ] {
            let r = run(&["--adapter", bad, "--static", "--addr", "10.0.0.4/24"]);
            assert_eq!(r.result, Err(IoError(1)), "{bad}: {r:?}");
            let err = String::from_utf8_lossy(&r.stderr);
            assert_eq!(
                err,
                format!("hv_set_ifconfig: not a Hyper-V synthetic NIC (hn0, hn1, ...): {bad}\n")
            );
        }
        // A synthetic NIC passes the check (the script then stops for want of a mode,
        // before touching any interface).
        for good in ["hn0", "hn17"] {
            let r = run(&["--adapter", good]);
            assert_eq!(
                String::from_utf8_lossy(&r.stderr),
                "hv_set_ifconfig: neither --dhcp nor --static\n",
                "{good}"
            );
        }
    }

    #[test]
    fn script_output_is_bounded_and_drained() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("output");
        write_script(
            dir.path(),
            "dd if=/dev/zero bs=1024 count=256 2>/dev/null\n\
             dd if=/dev/zero bs=1024 count=256 >&2 2>/dev/null\nexit 0",
        );
        let run = run_set_ifconfig("hn0", &config("hn0"), dir.path(), Duration::from_secs(5));
        assert_eq!(run.result, Ok(()));
        assert_eq!(run.stdout.len(), OUTPUT_LIMIT);
        assert_eq!(run.stderr.len(), OUTPUT_LIMIT);
    }

    #[test]
    fn script_failure_status() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("fail");
        write_script(dir.path(), "echo no such interface >&2\nexit 3");
        let run = run_set_ifconfig("hn0", &config("hn0"), dir.path(), Duration::from_secs(5));
        assert_eq!(run.result, Err(IoError(3)));
        assert_eq!(run.stderr, b"no such interface\n");
        write_script(dir.path(), "kill -9 $$");
        let r = apply_ip_config("hn0", &config("hn0"), dir.path(), Duration::from_secs(5));
        assert_eq!(r, Err(IoError(1)));
    }

    #[cfg(target_os = "linux")]
    fn alive(pid: i32) -> bool {
        // Gone, or a zombie waiting for its (new) parent to reap it, counts as dead.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    #[test]
    fn script_killed_at_deadline() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("slow");
        let pids = dir.path().join("pids");
        write_script(
            dir.path(),
            &format!(
                "sleep 30 &\necho \"$$ $!\" > '{}'\nwait\necho finished",
                pids.display()
            ),
        );
        let start = Instant::now();
        let run = run_set_ifconfig(
            "hn0",
            &config("hn0"),
            dir.path(),
            Duration::from_millis(200),
        );
        let took = start.elapsed();
        assert_eq!(run.result, Err(IoError::ETIMEDOUT));
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert!(run.stdout.is_empty());
        #[cfg(target_os = "linux")]
        {
            // The script and the sleep it started (same process group) are both gone.
            let text = std::fs::read_to_string(&pids).unwrap();
            let both: Vec<i32> = text
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
            assert_eq!(both.len(), 2);
            let until = Instant::now() + Duration::from_secs(1);
            while both.iter().any(|p| alive(*p)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(!both.iter().any(|p| alive(*p)), "{both:?} still running");
        }
    }

    #[test]
    fn missing_or_unexecutable_script() {
        let _lock = SCRIPTS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new("missing");
        let r = apply_ip_config("hn0", &config("hn0"), dir.path(), Duration::from_secs(1));
        assert_eq!(r, Err(IoError(2)));
        let r = apply_ip_config(
            "hn0",
            &config("hn0"),
            &dir.path().join("nodir"),
            Duration::from_secs(1),
        );
        assert_eq!(r, Err(IoError(2)));
        std::fs::write(dir.path().join(SET_IFCONFIG_SCRIPT), "#!/bin/sh\nexit 0\n").unwrap();
        let r = apply_ip_config("hn0", &config("hn0"), dir.path(), Duration::from_secs(1));
        assert!(matches!(r, Err(IoError(e)) if e != 0), "{r:?}");
    }
}
