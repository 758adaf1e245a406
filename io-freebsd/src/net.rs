//! FreeBSD's view of an interface's network configuration: default gateways from the
//! routing table (the `net.route` sysctl dump) and whether rc.conf configures DHCP for
//! it. The parsers are pure and compile on every target, so the fuzz bodies and tests
//! run them on any host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `RTF_UP` and `RTF_GATEWAY` from FreeBSD's `<net/route.h>`.
const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

fn is_link_local_v6(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// FreeBSD's kernel (KAME) may hand out link-local addresses with the interface index
/// embedded in the second 16-bit group (`fe80:2::1`); the real address has zeros there.
pub fn without_embedded_scope(a: Ipv6Addr) -> Ipv6Addr {
    if is_link_local_v6(&a) {
        let mut s = a.segments();
        s[1] = 0;
        Ipv6Addr::from(s)
    } else {
        a
    }
}

/// The default gateways of the interface with index `ifindex`, from the routing table
/// (none off FreeBSD).
pub fn default_gateways(ifindex: usize) -> Vec<IpAddr> {
    #[cfg(target_os = "freebsd")]
    {
        system::default_gateways(ifindex)
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        let _ = ifindex;
        Vec::new()
    }
}

/// Whether rc.conf configures DHCP for `ifname`, the way `dhcpif` in
/// `/etc/network.subr` decides: the value of `ifconfig_<name>` (the name with every
/// character other than letters, digits and `_` turned into `_`), or of
/// `ifconfig_DEFAULT` when that is unset, contains the word `DHCP`, `SYNCDHCP` or
/// `NOSYNCDHCP` (any case). `texts` are the files in the order rc(8) reads them; the
/// last assignment wins. Only plain `name=value` lines are understood (optionally
/// quoted with `"` or `'`); anything else is skipped.
pub fn rc_conf_dhcp(texts: &[String], ifname: &str) -> bool {
    let rc_name: String = ifname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let key = format!("ifconfig_{rc_name}");
    let mut value: Option<String> = None;
    let mut default: Option<String> = None;
    for line in texts.iter().flat_map(|t| t.lines()) {
        let Some((k, v)) = rc_assignment(line) else {
            continue;
        };
        if k == key {
            value = Some(v);
        } else if k == "ifconfig_DEFAULT" {
            default = Some(v);
        }
    }
    value.or(default).is_some_and(|v| {
        v.split_whitespace().any(|w| {
            ["DHCP", "SYNCDHCP", "NOSYNCDHCP"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k))
        })
    })
}

/// `name=value`, `name="value"` or `name='value'`, with an optional comment after it.
fn rc_assignment(line: &str) -> Option<(&str, String)> {
    let line = line.trim_start();
    let (name, rest) = line.split_once('=')?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let value = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let body = &rest[1..];
            body[..body.find(q)?].to_string()
        }
        _ => rest
            .split(|c: char| c.is_whitespace() || c == '#')
            .next()
            .unwrap_or("")
            .to_string(),
    };
    Some((name, value))
}

/// FreeBSD `<sys/socket.h>` family numbers, spelled out so the route-dump parser can be
/// tested on any host (Linux's `AF_INET6` is 10).
const BSD_AF_INET: u8 = 2;
const BSD_AF_INET6: u8 = 28;
/// `RTM_VERSION` and `RTM_GET` from FreeBSD's `<net/route.h>`.
const RTM_VERSION: u8 = 5;
const RTM_GET: u8 = 4;

/// `sizeof(struct rt_msghdr)` on this machine's word size: 32 bytes of fixed fields,
/// then `rtm_inits` and 14 `u_long` metrics. The FreeBSD module checks it against its
/// copy of the struct; on Linux it lets the dump parser read FreeBSD-layout bytes of the
/// same word size (amd64 on x86_64).
const RT_MSGHDR_LEN: usize = 32 + 15 * std::mem::size_of::<std::ffi::c_ulong>();

/// Default gateways on interface `ifindex` in the bytes of a `NET_RT_DUMP` sysctl, laid
/// out as this machine's FreeBSD kernel would. Only the sysctl that fetches them is
/// FreeBSD-only; this part runs (and is fuzzed) anywhere.
pub fn route_dump_gateways(buf: &[u8], ifindex: usize) -> Vec<IpAddr> {
    parse_route_dump(
        buf,
        RT_MSGHDR_LEN,
        std::mem::size_of::<std::ffi::c_long>(),
        ifindex,
    )
}

/// Default gateways on interface `ifindex` in a FreeBSD `NET_RT_DUMP` buffer: a
/// sequence of `rt_msghdr` records (`rtm_msglen` u16 at 0, `rtm_version` u8 at 2,
/// `rtm_type` u8 at 3, `rtm_index` u16 at 4, `rtm_flags` i32 at 8, `rtm_addrs` i32 at
/// 12, native byte order), each followed, from `hdr_len`, by one sockaddr per bit set
/// in `rtm_addrs` (RTA_DST, RTA_GATEWAY, RTA_NETMASK, ...), each padded as `SA_SIZE`
/// does to a multiple of `long_size`. A default route has an all-zero destination and
/// an absent or all-zero netmask, `RTF_UP | RTF_GATEWAY`, and an IPv4 or IPv6 gateway.
fn parse_route_dump(buf: &[u8], hdr_len: usize, long_size: usize, ifindex: usize) -> Vec<IpAddr> {
    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut out = Vec::new();
    let mut off = 0;
    while off + 2 <= buf.len() {
        let len = usize::from(u16_at(buf, off));
        if len < 2 || off + len > buf.len() {
            break;
        }
        let rec = &buf[off..off + len];
        off += len;
        if rec.len() < hdr_len.max(16) || rec[2] != RTM_VERSION || rec[3] != RTM_GET {
            continue;
        }
        let flags = u32_at(rec, 8);
        if usize::from(u16_at(rec, 4)) != ifindex
            || flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY
        {
            continue;
        }
        let present = u32_at(rec, 12);
        let mut sockaddrs: [Option<&[u8]>; 3] = [None; 3];
        let mut p = hdr_len;
        for (bit, slot) in sockaddrs.iter_mut().enumerate() {
            if present & (1 << bit) == 0 {
                continue;
            }
            if p >= rec.len() {
                break;
            }
            let sa_len = usize::from(rec[p]);
            *slot = Some(&rec[p..(p + sa_len).min(rec.len())]);
            p += if sa_len == 0 {
                long_size
            } else {
                1 + ((sa_len - 1) | (long_size - 1))
            };
        }
        let [Some(dst), Some(gw), mask] = sockaddrs else {
            continue;
        };
        let family = dst.get(1).copied();
        let zero = |sa: &[u8], from: usize, to: usize| {
            (from..to).all(|i| sa.get(i).copied().unwrap_or(0) == 0)
        };
        let (from, to) = match family {
            Some(BSD_AF_INET) => (4, 8),
            Some(BSD_AF_INET6) => (8, 24),
            _ => continue,
        };
        if !zero(dst, from, to) || !mask.is_none_or(|m| zero(m, from, to)) {
            continue;
        }
        let gateway = match gw.get(1).copied() {
            Some(BSD_AF_INET) if gw.len() >= 8 => {
                IpAddr::V4(Ipv4Addr::new(gw[4], gw[5], gw[6], gw[7]))
            }
            Some(BSD_AF_INET6) if gw.len() >= 24 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(&gw[8..24]);
                IpAddr::V6(without_embedded_scope(Ipv6Addr::from(b)))
            }
            // An interface (AF_LINK) gateway is not a router.
            _ => continue,
        };
        if !out.contains(&gateway) {
            out.push(gateway);
        }
    }
    out
}

/// The FreeBSD routing table, read through the `net.route` sysctl.
#[cfg(target_os = "freebsd")]
mod system {
    use std::net::IpAddr;

    use nix::libc::{self, c_int, c_uchar, c_uint, c_ulong, c_ushort, pid_t};

    /// `struct rt_metrics` from FreeBSD's `<net/route.h>` (libc does not define it).
    #[repr(C)]
    #[allow(dead_code)] // only the size of `RtMsghdr` is used
    struct RtMetrics {
        rmx_locks: c_ulong,
        rmx_mtu: c_ulong,
        rmx_hopcount: c_ulong,
        rmx_expire: c_ulong,
        rmx_recvpipe: c_ulong,
        rmx_sendpipe: c_ulong,
        rmx_ssthresh: c_ulong,
        rmx_rtt: c_ulong,
        rmx_rttvar: c_ulong,
        rmx_pksent: c_ulong,
        rmx_weight: c_ulong,
        rmx_nhidx: c_ulong,
        rmx_filler: [c_ulong; 2],
    }

    /// `struct rt_msghdr` from FreeBSD's `<net/route.h>` (libc does not define it). Its
    /// size is where a record's sockaddrs start; the fields are read by offset in
    /// `parse_route_dump`.
    #[repr(C)]
    #[allow(dead_code)] // only its size is used
    struct RtMsghdr {
        rtm_msglen: c_ushort,
        rtm_version: c_uchar,
        rtm_type: c_uchar,
        rtm_index: c_ushort,
        _rtm_spare1: c_ushort,
        rtm_flags: c_int,
        rtm_addrs: c_int,
        rtm_pid: pid_t,
        rtm_seq: c_int,
        rtm_errno: c_int,
        rtm_fmask: c_int,
        rtm_inits: c_ulong,
        rtm_rmx: RtMetrics,
    }

    // The parser outside this module assumes this layout.
    const _: () = assert!(std::mem::size_of::<RtMsghdr>() == super::RT_MSGHDR_LEN);

    pub fn default_gateways(ifindex: usize) -> Vec<IpAddr> {
        match route_dump() {
            Some(buf) => super::route_dump_gateways(&buf, ifindex),
            None => Vec::new(),
        }
    }

    /// `sysctl net.route.0.0.dump.0`: the routing table of this process's FIB, all
    /// families. Retried when the table grew between sizing and reading.
    fn route_dump() -> Option<Vec<u8>> {
        let mib: [c_int; 6] = [libc::CTL_NET, libc::PF_ROUTE, 0, 0, libc::NET_RT_DUMP, 0];
        for _ in 0..4 {
            let mut needed: libc::size_t = 0;
            // SAFETY: `mib` holds 6 valid ints; a null old pointer asks for the size,
            // written to `needed`; no new value.
            let rc = unsafe {
                libc::sysctl(
                    mib.as_ptr(),
                    mib.len() as c_uint,
                    std::ptr::null_mut(),
                    &mut needed,
                    std::ptr::null(),
                    0,
                )
            };
            if rc != 0 {
                return None;
            }
            let mut buf = vec![0u8; needed + needed / 4 + 4096];
            let mut len: libc::size_t = buf.len();
            // SAFETY: `buf` is writable for `len` bytes; the kernel writes at most
            // `len` bytes and stores the count it wrote in `len`.
            let rc = unsafe {
                libc::sysctl(
                    mib.as_ptr(),
                    mib.len() as c_uint,
                    buf.as_mut_ptr().cast(),
                    &mut len,
                    std::ptr::null(),
                    0,
                )
            };
            if rc == 0 {
                buf.truncate(len.min(buf.len()));
                return Some(buf);
            }
            if nix::errno::Errno::last() != nix::errno::Errno::ENOMEM {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn rc_conf_dhcp_detection() {
        let rc = |s: &str| vec![s.to_string()];
        assert!(rc_conf_dhcp(&rc("ifconfig_hn0=\"DHCP\"\n"), "hn0"));
        assert!(rc_conf_dhcp(&rc("ifconfig_hn0=\"SYNCDHCP\""), "hn0"));
        assert!(rc_conf_dhcp(
            &rc("ifconfig_hn0='up syncdhcp mtu 1400'"),
            "hn0"
        ));
        assert!(rc_conf_dhcp(&rc("  ifconfig_hn0=DHCP # comment"), "hn0"));
        assert!(!rc_conf_dhcp(
            &rc("ifconfig_hn0=\"inet 10.0.0.4/24\""),
            "hn0"
        ));
        assert!(!rc_conf_dhcp(&rc("#ifconfig_hn0=\"DHCP\""), "hn0"));
        // Only the interface's own variable, not _ipv6/_alias or a longer name.
        assert!(!rc_conf_dhcp(&rc("ifconfig_hn0_ipv6=\"DHCP\""), "hn0"));
        assert!(!rc_conf_dhcp(&rc("ifconfig_hn10=\"DHCP\""), "hn1"));
        assert!(!rc_conf_dhcp(&rc("ifconfig_hn1=\"DHCP\""), "hn10"));
        // A word, not a substring.
        assert!(!rc_conf_dhcp(
            &rc("ifconfig_hn0=\"description DHCPish\""),
            "hn0"
        ));
        // The last assignment wins, rc.conf.local after rc.conf.
        let texts = vec![
            "ifconfig_hn0=\"DHCP\"\n".to_string(),
            "ifconfig_hn0=\"inet 10.0.0.4/24\"\n".to_string(),
        ];
        assert!(!rc_conf_dhcp(&texts, "hn0"));
        let texts = vec![
            "ifconfig_hn0=\"inet 10.0.0.4/24\"\nifconfig_hn0=\"SYNCDHCP\"\n".to_string(),
            String::new(),
        ];
        assert!(rc_conf_dhcp(&texts, "hn0"));
        // ifconfig_DEFAULT applies when the interface has no line of its own.
        let d = rc("ifconfig_DEFAULT=\"SYNCDHCP\"\nifconfig_hn1=\"inet 10.1.0.4/24\"");
        assert!(rc_conf_dhcp(&d, "hn0"));
        assert!(!rc_conf_dhcp(&d, "hn1"));
        // rc.conf spells other characters as `_`.
        assert!(rc_conf_dhcp(&rc("ifconfig_vlan0_100=DHCP"), "vlan0.100"));
        // Garbage around it is skipped.
        let g = rc(
            "\u{0}\u{1}\n=DHCP\nifconfig hn0=DHCP\nifconfig_hn0=\"DHCP\nx\ny=\"z\"\n\
                    ifconfig_hn0 = DHCP\n\u{fffd}ifconfig_hn0=DHCP",
        );
        assert!(!rc_conf_dhcp(&g, "hn0"));
        assert!(!rc_conf_dhcp(&[], "hn0"));
    }

    /// One FreeBSD `NET_RT_DUMP` record for 64-bit (header 152 bytes, long 8).
    fn route_record(version: u8, index: u16, flags: u32, sockaddrs: &[Vec<u8>]) -> Vec<u8> {
        let mut addrs = 0u32;
        let mut body = Vec::new();
        for (bit, sa) in sockaddrs.iter().enumerate() {
            if sa.is_empty() {
                continue;
            }
            addrs |= 1 << bit;
            body.extend_from_slice(sa);
            while body.len() % 8 != 0 {
                body.push(0);
            }
        }
        let mut rec = vec![0u8; 152];
        let len = (152 + body.len()) as u16;
        rec[0..2].copy_from_slice(&len.to_ne_bytes());
        rec[2] = version;
        rec[3] = RTM_GET;
        rec[4..6].copy_from_slice(&index.to_ne_bytes());
        rec[8..12].copy_from_slice(&flags.to_ne_bytes());
        rec[12..16].copy_from_slice(&addrs.to_ne_bytes());
        rec.extend_from_slice(&body);
        rec
    }

    fn sin(a: [u8; 4]) -> Vec<u8> {
        let mut s = vec![16, BSD_AF_INET, 0, 0];
        s.extend_from_slice(&a);
        s.resize(16, 0);
        s
    }

    fn sin6(a: &str) -> Vec<u8> {
        let mut s = vec![28, BSD_AF_INET6, 0, 0, 0, 0, 0, 0];
        s.extend_from_slice(&a.parse::<Ipv6Addr>().unwrap().octets());
        s.resize(28, 0);
        s
    }

    #[test]
    fn freebsd_route_dump_parsing() {
        let ug = RTF_UP | RTF_GATEWAY;
        let link_gw = vec![11, 18, 2, 0, 6, 3, 0, 0, b'h', b'n', b'0'];
        let mut buf = Vec::new();
        // Default via 10.0.0.1 on index 2; the netmask's sockaddr shortened to 0 bytes.
        buf.extend(route_record(
            5,
            2,
            ug | 0x800,
            &[sin([0; 4]), sin([10, 0, 0, 1]), vec![0]],
        ));
        // Same gateway again (another FIB entry): reported once.
        buf.extend(route_record(5, 2, ug, &[sin([0; 4]), sin([10, 0, 0, 1])]));
        // Default on another interface.
        buf.extend(route_record(
            5,
            3,
            ug,
            &[sin([0; 4]), sin([10, 9, 0, 1]), sin([0; 4])],
        ));
        // Not a default route: 10.1.0.0/16 via 10.0.0.9.
        buf.extend(route_record(
            5,
            2,
            ug,
            &[
                sin([10, 1, 0, 0]),
                sin([10, 0, 0, 9]),
                sin([255, 255, 0, 0]),
            ],
        ));
        // Default without RTF_GATEWAY, and one with an interface gateway.
        buf.extend(route_record(
            5,
            2,
            RTF_UP,
            &[sin([0; 4]), sin([10, 0, 0, 7])],
        ));
        buf.extend(route_record(5, 2, ug, &[sin([0; 4]), link_gw]));
        // Another message version is skipped.
        buf.extend(route_record(4, 2, ug, &[sin([0; 4]), sin([10, 0, 0, 8])]));
        // IPv6 default via a link-local router with KAME's embedded scope.
        buf.extend(route_record(
            5,
            2,
            ug,
            &[sin6("::"), sin6("fe80:2::1"), sin6("::")],
        ));
        // A truncated last record ends the walk.
        let mut tail = route_record(5, 2, ug, &[sin([0; 4]), sin([10, 0, 0, 6])]);
        tail.truncate(100);
        buf.extend(tail);
        assert_eq!(
            parse_route_dump(&buf, 152, 8, 2),
            ips(&["10.0.0.1", "fe80::1"])
        );
        assert_eq!(parse_route_dump(&buf, 152, 8, 3), ips(&["10.9.0.1"]));
        assert!(parse_route_dump(&buf, 152, 8, 4).is_empty());
        assert!(parse_route_dump(&[], 152, 8, 2).is_empty());
        assert!(parse_route_dump(&[0xff; 7], 152, 8, 2).is_empty());
        assert!(parse_route_dump(&[1, 0, 5, 4], 152, 8, 2).is_empty());
    }
}
