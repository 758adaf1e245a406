//! Linux's view of an interface's network configuration: default gateways from
//! `/proc/net/route` and `/proc/net/ipv6_route`, and whether a DHCP client keeps a
//! lease for it. The parsers are pure and compile on every target, so the fuzz bodies
//! and tests run them on any host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// systemd-resolved's stub listener: a resolv.conf naming only it (systemd's
/// `stub-resolv.conf`) says nothing about the network's DNS servers.
const RESOLVED_STUB: &[&str] = &["127.0.0.53", "127.0.0.54"];
/// Where systemd-resolved writes the servers it forwards to (its "uplink" file).
pub const RESOLVED_UPLINK: &str = "/run/systemd/resolve/resolv.conf";

/// Whether these nameservers are only systemd-resolved's stub, so the servers the host
/// should be shown are in [`RESOLVED_UPLINK`] instead.
pub fn only_resolved_stub(servers: &[IpAddr]) -> bool {
    !servers.is_empty()
        && servers
            .iter()
            .all(|s| RESOLVED_STUB.iter().any(|stub| s.to_string() == *stub))
}

/// `RTF_UP` and `RTF_GATEWAY` from Linux's `<linux/route.h>`.
const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

/// Default IPv4 gateways of interface `name` from `/proc/net/route`: destination and
/// mask 0, flags `RTF_UP | RTF_GATEWAY`. The kernel prints the gateway as a host-order
/// `u32` in hex, i.e. the address bytes little-endian on little-endian machines.
pub fn parse_proc_route(text: &str, name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] != name {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dest), Some(gw), Some(flags), Some(mask)) =
            (hex(f[1]), hex(f[2]), hex(f[3]), hex(f[7]))
        else {
            continue;
        };
        if dest == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY {
            let a = IpAddr::V4(Ipv4Addr::from(gw.to_ne_bytes()));
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Default IPv6 gateways of interface `name` from `/proc/net/ipv6_route`: fields are
/// destination, prefix, source, prefix, next hop (32 hex digits, network order), metric,
/// refcount, use, flags, device.
pub fn parse_proc_ipv6_route(text: &str, name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[9] != name || f[0].len() != 32 || f[4].len() != 32 {
            continue;
        }
        let (Ok(dest), Ok(plen), Ok(hop), Ok(flags)) = (
            u128::from_str_radix(f[0], 16),
            u8::from_str_radix(f[1], 16),
            u128::from_str_radix(f[4], 16),
            u32::from_str_radix(f[8], 16),
        ) else {
            continue;
        };
        if dest == 0
            && plen == 0
            && hop != 0
            && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY
        {
            let a = IpAddr::V6(Ipv6Addr::from(hop));
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Whether a DHCP client keeps a lease for the interface: a file in one of
/// `lease_dirs` whose name ends in `.lease`, `.leases` or `.lease6` and contains
/// the interface name delimited by `.`, `-`, `_` or the ends (dhclient
/// `dhclient.eth0.leases`, dhcpcd `eth0.lease`, NetworkManager
/// `dhclient-<uuid>-eth0.lease`), or systemd-networkd's `<leases>/<ifindex>`.
/// A stale lease file left after switching to static reads as DHCP.
pub fn lease_file_exists(
    name: &str,
    index: usize,
    networkd_leases: &Path,
    lease_dirs: &[PathBuf],
) -> bool {
    if networkd_leases.join(index.to_string()).is_file() {
        return true;
    }
    lease_dirs.iter().any(|dir| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|f| lease_name_matches(f, name))
            })
    })
}

pub fn lease_name_matches(file: &str, ifname: &str) -> bool {
    if ifname.is_empty()
        || ![".lease", ".leases", ".lease6"]
            .iter()
            .any(|s| file.ends_with(s))
    {
        return false;
    }
    let delimiter = |c: Option<char>| c.is_none_or(|c| matches!(c, '.' | '-' | '_'));
    file.match_indices(ifname).any(|(i, _)| {
        delimiter(file[..i].chars().next_back())
            && delimiter(file[i + ifname.len()..].chars().next())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_resolved_stub_sends_us_to_its_uplink_file() {
        let stub = ips(&["127.0.0.53"]);
        assert!(only_resolved_stub(&stub));
        assert!(only_resolved_stub(&ips(&["127.0.0.53", "127.0.0.54"])));
        assert!(!only_resolved_stub(&ips(&["127.0.0.53", "10.0.0.2"])));
        assert!(!only_resolved_stub(&ips(&["127.0.0.1"])));
        assert!(!only_resolved_stub(&[]));
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_proc_route_parsing() {
        let text = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t00000000\t0202A8C0\t0001\t0\t0\t100\t00000000\t0\t0\t0
eth0\t00000000\tZZZZZZZZ\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\tgarbage
eth00\t00000000\t090200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
";
        let got = parse_proc_route(text, "eth0");
        if cfg!(target_endian = "little") {
            assert_eq!(got, ips(&["192.0.2.1"]));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(parse_proc_route(text, "eth1").len(), 1);
        assert!(parse_proc_route(text, "eth2").is_empty());
        assert!(parse_proc_route("", "eth0").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_proc_ipv6_route_parsing() {
        let text = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000009 00000400 00000002 00000000 00000003     eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
0000 00 short
garbage line
";
        assert_eq!(parse_proc_ipv6_route(text, "eth0"), ips(&["fe80::1"]));
        assert_eq!(parse_proc_ipv6_route(text, "eth1"), ips(&["fe80::9"]));
        assert!(parse_proc_ipv6_route(text, "lo").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_lease_names() {
        assert!(lease_name_matches("dhclient.eth0.leases", "eth0"));
        assert!(lease_name_matches("eth0.lease", "eth0"));
        assert!(lease_name_matches("eth0.lease6", "eth0"));
        assert!(lease_name_matches("dhclient-4a1b-eth0.lease", "eth0"));
        assert!(lease_name_matches("internal-4a1b_eth0.lease", "eth0"));
        assert!(!lease_name_matches("dhclient.eth00.leases", "eth0"));
        assert!(!lease_name_matches("dhclient.veth0.leases", "eth0"));
        assert!(!lease_name_matches("dhclient.eth0.conf", "eth0"));
        assert!(!lease_name_matches("dhclient.leases", "eth0"));
        assert!(!lease_name_matches("x.lease", ""));
    }

    // ------------------------------------------------------------------ the system
}
