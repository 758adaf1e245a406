//! The guest's network interfaces in a simulated world, and what the host must be shown
//! of them: the auto pool's address lists and GET_IP_INFO's answers under kvp.conf's
//! `exclude_interfaces` and `address_order`.
//!
//! The expectations here are written from the rules in kvp.conf(5) and
//! docs/protocol/kvp.md §4, not with the core's `AddressSelection`: the pattern
//! matcher is a different algorithm (recursive), the order is built by filtering in
//! passes rather than sorted, and MACs are compared as the host's text. A core that
//! shows an excluded interface, picks the wrong holder of a MAC, or orders addresses
//! wrongly disagrees with this model.

use core::net::IpAddr;
use std::collections::BTreeMap;

use hvguest_core::kvp::addresses::{AddressOrder, Glob, InterfaceAddr, NamedAdapter};
use hvguest_core::kvp::ip::{AdapterInfo, IfAddr, Mac, NicGuid};
use hvguest_core::kvp::wire::{IpFields, Status};

use crate::prng::Prng;

/// One interface of the guest.
#[derive(Clone, Debug)]
pub struct SimInterface {
    pub name: String,
    /// `None`: no link-layer address (loopback, a tunnel).
    pub mac: Option<[u8; 6]>,
    /// In the kernel's order.
    pub addrs: Vec<IfAddr>,
    /// Different for every interface, so that a reply shows which one was chosen.
    pub gateway: IpAddr,
}

/// The guest's interfaces and kvp.conf's two settings about them.
#[derive(Clone, Debug)]
pub struct Network {
    /// In the kernel's (`getifaddrs`) order.
    pub interfaces: Vec<SimInterface>,
    /// Every address as the kernel lists them all: (interface index, address). Per
    /// interface (FreeBSD) or all IPv4 first (Linux's netlink dump).
    pub listing: Vec<(usize, IpAddr)>,
    /// kvp.conf's `exclude_interfaces` patterns; `None`: no line (the default, `lo*`).
    pub exclude: Option<Vec<String>>,
    /// kvp.conf's `address_order` word; `None`: no line (`ipv4-first`).
    pub order: Option<&'static str>,
    pub dns: Vec<IpAddr>,
}

/// The MAC every world's `hn0` has, and the one the host's workload asks for first.
pub const HN0_MAC: [u8; 6] = [0x00, 0x15, 0x5d, 0x01, 0x02, 0x03];
/// The second MAC the workload asks for (written in lower case by the host).
pub const HN1_MAC: [u8; 6] = [0x00, 0x15, 0x5d, 0xaa, 0xbb, 0xcc];
/// The host's GUID of `hn0`'s NIC, as Linux's sysfs prints it: the workload of a Linux
/// world names it in SET_IP_INFO (in this case or upper case).
pub const HN0_GUID: &str = "{f8615163-df3e-46c5-913f-f2d2f965ed0e}";
/// `hn1`'s, when the world has one.
pub const HN1_GUID: &str = "{3c9e0a51-7d2b-4f68-a1c4-0e5b8d7f2a96}";
/// A GUID no NIC of any world has.
pub const STRANGER_GUID: &str = "{00000000-0000-4000-8000-00000000beef}";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a literal address")
}

fn addr(text: &str, prefix: u8) -> IfAddr {
    IfAddr {
        addr: ip(text),
        prefix,
    }
}

impl Network {
    /// The world of fixed scenarios: one `hn0` with one IPv4 address, defaults.
    pub fn fixed() -> Network {
        let hn0 = SimInterface {
            name: "hn0".into(),
            mac: Some(HN0_MAC),
            addrs: vec![addr("10.0.0.4", 24)],
            gateway: ip("10.0.0.1"),
        };
        Network::with(vec![hn0], false)
    }

    fn with(interfaces: Vec<SimInterface>, families_grouped: bool) -> Network {
        let mut listing: Vec<(usize, IpAddr)> = Vec::new();
        for (i, itf) in interfaces.iter().enumerate() {
            listing.extend(itf.addrs.iter().map(|a| (i, a.addr)));
        }
        if families_grouped {
            listing.sort_by_key(|(_, a)| a.is_ipv6());
        }
        Network {
            interfaces,
            listing,
            exclude: None,
            order: None,
            dns: vec![ip("168.63.129.16")],
        }
    }

    /// A random set of interfaces from those seen on Hyper-V guests (loopback, `hn`
    /// NICs, a vlan(4) and an SR-IOV VF sharing a MAC with one, a bridge, tap, epair and
    /// WireGuard interfaces), with random kvp.conf settings about them.
    pub fn random(prng: &mut Prng) -> Network {
        let mut all = Vec::new();
        let mut push = |name: &str, mac, addrs: Vec<IfAddr>, gw: &str| {
            all.push(SimInterface {
                name: name.into(),
                mac,
                addrs,
                gateway: ip(gw),
            })
        };
        push(
            "lo0",
            None,
            vec![addr("127.0.0.1", 8), addr("::1", 128), addr("fe80::1", 64)],
            "127.0.0.9",
        );
        // A VF without an address before its hn, as a lagg member would be.
        if prng.chance(1, 3) {
            push("mce0", Some(HN1_MAC), vec![], "10.1.0.254");
        }
        let hn0 = random_addrs(prng, "10.0.0", "2001:db8::", "fe80::215:5dff:fe01:203");
        let hn0_v4 = hn0.iter().find(|a| a.addr.is_ipv4()).copied();
        push("hn0", Some(HN0_MAC), hn0, "10.0.0.1");
        if prng.chance(1, 2) {
            let hn1 = random_addrs(prng, "10.1.0", "2001:db8:1::", "fe80::215:5dff:feaa:bbcc");
            push("hn1", Some(HN1_MAC), hn1, "10.1.0.1");
        }
        if prng.chance(1, 2) {
            let v = random_addrs(prng, "10.10.0", "2001:db8:10::", "fe80::215:5dff:fe01:204");
            push("vlan10", Some(HN0_MAC), v, "10.10.0.1");
        }
        for (name, v4, mac) in [
            ("bridge0", "192.168.5.1", [2, 0, 0, 0, 0, 5]),
            ("tap0", "192.168.6.1", [2, 0, 0, 0, 0, 6]),
            ("epair0a", "192.168.7.1", [2, 0, 0, 0, 0, 7]),
        ] {
            if prng.chance(1, 3) {
                push(name, Some(mac), vec![addr(v4, 24)], v4);
            }
        }
        if prng.chance(1, 3) {
            push("wg0", None, vec![addr("10.99.0.2", 32)], "10.99.0.1");
        }
        // The same address on a second interface (a jail's epair given the host's
        // address, a CARP address): the auto pool lists it once.
        if let Some(a) = hn0_v4.filter(|_| prng.chance(1, 4)) {
            push("epair1b", Some([2, 0, 0, 0, 1, 0xb]), vec![a], "10.0.0.1");
        }
        // Interfaces come and go: the kernel's order is not always creation order.
        if prng.chance(1, 3) {
            let i = prng.below(all.len() as u64) as usize;
            let moved = all.remove(i);
            all.push(moved);
        }
        let mut net = Network::with(all, prng.chance(1, 3));
        net.exclude = random_exclude(prng);
        net.order = (!prng.chance(1, 4)).then(|| *prng.choose(&AddressOrder::NAMES));
        net
    }

    /// The synthetic NICs' GUIDs (Linux's `device_id`) with their interfaces: `hn0`'s
    /// and `hn1`'s, for those the world has. No draw: FreeBSD worlds never ask.
    pub fn nic_guids(&self) -> BTreeMap<NicGuid, String> {
        self.interfaces
            .iter()
            .filter_map(|i| {
                let text = match i.name.as_str() {
                    "hn0" => HN0_GUID,
                    "hn1" => HN1_GUID,
                    _ => return None,
                };
                let guid = NicGuid::parse(text.as_bytes()).expect("a literal GUID");
                Some((guid, i.name.clone()))
            })
            .collect()
    }

    /// The status SET_IP_INFO must get, from the rules of hv_kvp_daemon(8) written
    /// here on their own: on FreeBSD the adapter must be `hn<N>` (GUID text: the
    /// kernel found no NIC, `GUID_NOT_FOUND`); on Linux a GUID in braces, and one of
    /// this world's NICs (checked after the addresses: an unknown NIC is the driver's
    /// finding); every address must parse, one subnet per address.
    pub fn expected_set_ip(&self, f: &IpFields, linux: bool) -> Status {
        let adapter = f.adapter_id.as_slice();
        let guid_like = guid_form(adapter);
        if linux && !guid_like {
            return Status::INVALID_ARG;
        }
        if !linux {
            if guid_like {
                return Status::GUID_NOT_FOUND;
            }
            let unit = adapter.strip_prefix(b"hn").unwrap_or(b"");
            if unit.is_empty() || adapter.len() > 15 || !unit.iter().all(u8::is_ascii_digit) {
                return Status::INVALID_ARG;
            }
        }
        if !config_parses(f) {
            return Status::INVALID_ARG;
        }
        let known = self.interfaces.iter().any(|i| {
            let text = match i.name.as_str() {
                "hn0" => HN0_GUID,
                "hn1" => HN1_GUID,
                _ => return false,
            };
            adapter.eq_ignore_ascii_case(text.as_bytes())
        });
        if linux && !known {
            return Status::GUID_NOT_FOUND;
        }
        Status::OK
    }

    /// Checks the daemon's answer to a SET_IP_INFO (any other request passes) against
    /// [`Network::expected_set_ip`]. `failed_ok`: an E_FAIL is acceptable (the kernel
    /// timed the request out, or another IP request was still running).
    pub fn check_set_ip(
        &self,
        request: &hvguest_core::kvp::Request,
        reply: &hvguest_core::kvp::Reply,
        linux: bool,
        failed_ok: bool,
    ) -> Result<(), String> {
        let hvguest_core::kvp::Request::SetIpInfo(f) = request else {
            return Ok(());
        };
        let want = self.expected_set_ip(f, linux);
        let got = reply.status();
        if got == want || (got == Status::E_FAIL && failed_ok) {
            return Ok(());
        }
        Err(format!(
            "SET_IP_INFO for adapter {:?} with addresses {:?}: status {got:?}, want {want:?}",
            String::from_utf8_lossy(&f.adapter_id),
            String::from_utf8_lossy(&f.ip_addr),
        ))
    }

    /// What the driver reports in `SystemInfo`: every address, in the listing's order.
    pub fn system_addrs(&self) -> Vec<InterfaceAddr> {
        self.listing
            .iter()
            .map(|&(i, addr)| InterfaceAddr {
                interface: self.interfaces[i].name.clone(),
                addr,
            })
            .collect()
    }

    /// What `QueryAdapter` returns, per MAC: every holder, in the kernel's order.
    pub fn adapters(&self) -> BTreeMap<Mac, Vec<NamedAdapter>> {
        let mut out: BTreeMap<Mac, Vec<NamedAdapter>> = BTreeMap::new();
        for itf in &self.interfaces {
            let Some(mac) = itf.mac else { continue };
            out.entry(Mac(mac)).or_default().push(NamedAdapter {
                interface: itf.name.clone(),
                info: AdapterInfo {
                    addrs: itf.addrs.clone(),
                    gateways: vec![itf.gateway],
                    dns: self.dns.clone(),
                    dhcp: true,
                },
            });
        }
        out
    }

    /// kvp.conf's lines for this network, as an administrator would write them.
    pub fn conf_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match &self.exclude {
            Some(p) if p.is_empty() => lines.push("exclude_interfaces = none".into()),
            Some(p) => lines.push(format!("exclude_interfaces = {}", p.join(" "))),
            None => {}
        }
        if let Some(o) = self.order {
            lines.push(format!("address_order = {o}"));
        }
        lines
    }

    /// The core's form of the two settings, or what the core refused.
    pub fn selection(&self) -> Result<hvguest_core::kvp::addresses::AddressSelection, String> {
        let mut s = hvguest_core::kvp::addresses::AddressSelection::default();
        if let Some(patterns) = &self.exclude {
            let globs = patterns
                .iter()
                .map(|p| Glob::new(p).map_err(|e| format!("pattern {p:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            s.set_exclude(globs).map_err(|e| e.to_string())?;
        }
        if let Some(o) = self.order {
            s.order = AddressOrder::parse(o).ok_or(format!("order {o:?}"))?;
        }
        Ok(s)
    }

    fn excluded(&self, name: &str) -> bool {
        match &self.exclude {
            None => glob_matches(b"lo*", name.as_bytes()),
            Some(p) => p
                .iter()
                .any(|p| glob_matches(p.as_bytes(), name.as_bytes())),
        }
    }

    /// The auto pool's NetworkAddressIPv4 and NetworkAddressIPv6 values.
    pub fn expected_auto_lists(&self) -> (String, String) {
        let mut v4: Vec<IpAddr> = Vec::new();
        let mut v6: Vec<IpAddr> = Vec::new();
        for &(i, a) in &self.listing {
            if self.excluded(&self.interfaces[i].name) || local_only(&a) {
                continue;
            }
            let list = if a.is_ipv4() { &mut v4 } else { &mut v6 };
            if !list.contains(&a) {
                list.push(a);
            }
        }
        let text = |l: Vec<IpAddr>| {
            l.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(";")
        };
        (text(v4), text(v6))
    }

    /// GET_IP_INFO for the host's `adapter_id` text: the chosen interface's addresses
    /// in the configured order and its gateway, or `None` (answered E_FAIL).
    pub fn expected_ip_info(&self, adapter_id: &[u8]) -> Option<(Vec<IpAddr>, IpAddr)> {
        let holders: Vec<&SimInterface> = self
            .interfaces
            .iter()
            .filter(|i| i.mac.is_some_and(|m| mac_text_is(adapter_id, &m)))
            .filter(|i| !self.excluded(&i.name))
            .collect();
        let chosen = holders
            .iter()
            .find(|i| !i.addrs.is_empty())
            .or(holders.first())?;
        let addrs: Vec<IpAddr> = chosen.addrs.iter().map(|a| a.addr).collect();
        Some((self.ordered(&addrs), chosen.gateway))
    }

    /// The `sub_net` text GET_IP_INFO must give beside `addrs` (in their order): the
    /// dotted mask of an IPv4 address, the prefix length of an IPv6 one.
    fn expected_masks(&self, adapter_id: &[u8], addrs: &[IpAddr]) -> String {
        let prefix_of = |addr: &IpAddr| {
            self.interfaces
                .iter()
                .filter(|i| i.mac.is_some_and(|m| mac_text_is(adapter_id, &m)))
                .flat_map(|i| i.addrs.iter())
                .find(|a| a.addr == *addr)
                .map_or(0, |a| a.prefix)
        };
        let mask = |addr: &IpAddr| {
            let p = u32::from(prefix_of(addr));
            match addr {
                IpAddr::V4(_) => {
                    let bits: u64 = ((1u64 << p) - 1) << (32 - p);
                    let b = (bits as u32).to_be_bytes();
                    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
                }
                IpAddr::V6(_) => p.to_string(),
            }
        };
        addrs.iter().map(mask).collect::<Vec<_>>().join(";")
    }

    /// Four passes (IPv4 usable, IPv4 link-local, IPv6 usable, IPv6 link-local), or
    /// IPv6's two first, or the kernel's order.
    fn ordered(&self, addrs: &[IpAddr]) -> Vec<IpAddr> {
        let v4_first = match self.order.unwrap_or("ipv4-first") {
            "kernel" => return addrs.to_vec(),
            "ipv6-first" => false,
            _ => true,
        };
        let pass = |v6: bool, ll: bool| {
            addrs
                .iter()
                .copied()
                .filter(move |a| a.is_ipv6() == v6 && link_local(a) == ll)
        };
        let (first, second) = if v4_first {
            (false, true)
        } else {
            (true, false)
        };
        pass(first, false)
            .chain(pass(first, true))
            .chain(pass(second, false))
            .chain(pass(second, true))
            .collect()
    }
}

impl Network {
    /// Checks the daemon's answer to a GET_IP_INFO (any other request passes).
    /// `failed_ok`: an E_FAIL is acceptable (the kernel timed the request out).
    pub fn check_ip_info(
        &self,
        request: &hvguest_core::kvp::Request,
        reply: &hvguest_core::kvp::Reply,
        failed_ok: bool,
    ) -> Result<(), String> {
        use hvguest_core::kvp::{Reply, Request, Status};
        let Request::GetIpInfo { adapter_id, .. } = request else {
            return Ok(());
        };
        let want = self.expected_ip_info(adapter_id);
        let shown = String::from_utf8_lossy(adapter_id);
        match (reply, &want) {
            (Reply::IpInfo(f), Some((addrs, gateway))) => {
                let text = addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(";");
                let masks = self.expected_masks(adapter_id, addrs);
                if f.ip_addr != text.as_bytes()
                    || f.sub_net != masks.as_bytes()
                    || f.gate_way != gateway.to_string().as_bytes()
                {
                    return Err(format!(
                        "GET_IP_INFO {shown}: addresses {:?} masks {:?} via {:?}, want \
                         {text:?} masks {masks:?} via {gateway} (the holder of the MAC, \
                         excluded interfaces skipped, addresses in {} order)",
                        String::from_utf8_lossy(&f.ip_addr),
                        String::from_utf8_lossy(&f.sub_net),
                        String::from_utf8_lossy(&f.gate_way),
                        self.order.unwrap_or("ipv4-first"),
                    ));
                }
                Ok(())
            }
            (Reply::Status(Status::E_FAIL), None) => Ok(()),
            (Reply::Status(Status::E_FAIL), Some(_)) if failed_ok => Ok(()),
            (r, want) => {
                let got = match r {
                    Reply::IpInfo(f) => format!(
                        "addresses {:?} via {:?}",
                        String::from_utf8_lossy(&f.ip_addr),
                        String::from_utf8_lossy(&f.gate_way)
                    ),
                    other => format!("{other:?}"),
                };
                let want = match want {
                    Some((addrs, gateway)) => format!("addresses {addrs:?} via {gateway}"),
                    None => "E_FAIL (no interface not excluded holds the MAC)".into(),
                };
                Err(format!("GET_IP_INFO {shown}: {got}, want {want}"))
            }
        }
    }
}

/// Up to five addresses of one interface in the kernel's order: maybe the IPv6
/// link-local one (added when the interface came up), maybe an IPv4 primary, a global
/// IPv6, an IPv4 alias and an IPv4 link-local one.
fn random_addrs(prng: &mut Prng, v4: &str, v6: &str, ll: &str) -> Vec<IfAddr> {
    let mut out = Vec::new();
    if prng.chance(2, 3) {
        out.push(addr(ll, 64));
    }
    if prng.chance(3, 4) {
        out.push(addr(&format!("{v4}.{}", 4 + prng.below(50)), 24));
    }
    if prng.chance(1, 2) {
        out.push(addr(&format!("{v6}{:x}", 4 + prng.below(50)), 64));
    }
    if prng.chance(1, 3) {
        out.push(addr(&format!("{v4}.{}", 100 + prng.below(50)), 24));
    }
    if prng.chance(1, 6) {
        out.push(addr("169.254.7.7", 16));
    }
    out
}

fn random_exclude(prng: &mut Prng) -> Option<Vec<String>> {
    let sets: [&[&str]; 10] = [
        &[],
        &["lo*"],
        &["lo*", "bridge*", "tap*", "epair*", "wg*"],
        &["vlan*"],
        &["hn?"],
        &["*"],
        &["[bt]*", "lo[0-9]"],
        &["*0"],
        &["hn[!0]", "mce*"],
        &["*a", "l?0"],
    ];
    if prng.chance(1, 3) {
        return None;
    }
    Some(prng.choose(&sets).iter().map(|s| s.to_string()).collect())
}

/// sh(1) patterns, recursively: `*` tries every split.
fn glob_matches(p: &[u8], name: &[u8]) -> bool {
    match p.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|k| glob_matches(&p[1..], &name[k..])),
        Some(b'?') => !name.is_empty() && glob_matches(&p[1..], &name[1..]),
        Some(b'[') => {
            let Some((&c, rest)) = name.split_first() else {
                return false;
            };
            // The model's patterns close their sets; `[]...]` is not among them.
            let close = 2 + p[2..]
                .iter()
                .position(|&b| b == b']')
                .expect("a closed set");
            let body = &p[1..close];
            let (negate, body) = match body.strip_prefix(b"!") {
                Some(b) => (true, b),
                None => (false, body),
            };
            let hit = body
                .windows(3)
                .any(|w| w[1] == b'-' && w[0] <= c && c <= w[2])
                || body.contains(&c);
            hit != negate && glob_matches(&p[close + 1..], rest)
        }
        Some(&lit) => name.first() == Some(&lit) && glob_matches(&p[1..], &name[1..]),
    }
}

fn link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(x) => x.octets()[..2] == [169, 254],
        IpAddr::V6(x) => x.octets()[0] == 0xfe && x.octets()[1] & 0xc0 == 0x80,
    }
}

/// Loopback, link-local and unspecified addresses mean nothing off the guest.
fn local_only(a: &IpAddr) -> bool {
    let loopback = match a {
        IpAddr::V4(x) => x.octets()[0] == 127,
        IpAddr::V6(x) => x.segments() == [0, 0, 0, 0, 0, 0, 0, 1],
    };
    loopback || a.is_unspecified() || link_local(a)
}

/// Whether the host's `adapter_id` text names `mac`: hex pairs joined by `:` (the
/// host's form) or `-` (Windows' own), any case.
fn mac_text_is(adapter_id: &[u8], mac: &[u8; 6]) -> bool {
    let pairs: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    [":", "-"]
        .iter()
        .any(|sep| adapter_id.eq_ignore_ascii_case(pairs.join(sep).as_bytes()))
}

/// `{` 8-4-4-4-12 hex digits `}`, any case.
fn guid_form(text: &[u8]) -> bool {
    let Some(inner) = text.strip_prefix(b"{").and_then(|t| t.strip_suffix(b"}")) else {
        return false;
    };
    let groups: Vec<&[u8]> = inner.split(|b| *b == b'-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.iter().all(u8::is_ascii_hexdigit))
}

/// Whether the request's lists parse: addresses, gateways and servers as addresses,
/// one subnet per address (a dotted contiguous mask or a prefix length for IPv4, a
/// prefix length for IPv6), at least one address unless DHCP is asked for.
fn config_parses(f: &IpFields) -> bool {
    fn items(raw: &[u8]) -> Option<Vec<String>> {
        let text = std::str::from_utf8(raw).ok()?;
        Some(
            text.split([';', ','])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
    fn addrs(raw: &[u8]) -> Option<Vec<IpAddr>> {
        items(raw)?.iter().map(|t| t.parse().ok()).collect()
    }
    let subnet_fits = |a: &IpAddr, s: &str| {
        let len = s.trim_start_matches('/').parse::<u32>().ok();
        match a {
            IpAddr::V4(_) => {
                len.is_some_and(|n| n <= 32)
                    || s.parse::<core::net::Ipv4Addr>().is_ok_and(|m| {
                        let bits = u32::from(m);
                        bits.leading_ones() + bits.trailing_zeros() == 32 || bits == 0
                    })
            }
            IpAddr::V6(_) => len.is_some_and(|n| n <= 128),
        }
    };
    let (Some(ips), Some(subnets)) = (addrs(&f.ip_addr), items(&f.sub_net)) else {
        return false;
    };
    let dhcp = f.dhcp_enabled != 0;
    let counts = ips.len() == subnets.len() || (dhcp && ips.is_empty());
    counts
        && (dhcp || !ips.is_empty())
        && ips.iter().zip(&subnets).all(|(a, s)| subnet_fits(a, s))
        && addrs(&f.gate_way).is_some()
        && addrs(&f.dns_addr).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_matcher_follows_sh() {
        for (p, n, want) in [
            ("lo*", "lo0", true),
            ("hn?", "hn10", false),
            ("[bt]*", "tap0", true),
            ("[bt]*", "hn0", false),
            ("hn[!0]", "hn1", true),
            ("hn[!0]", "hn0", false),
            ("*a", "epair0a", true),
            ("l?0", "lo0", true),
            ("*", "", true),
        ] {
            assert_eq!(glob_matches(p.as_bytes(), n.as_bytes()), want, "{p} {n}");
        }
    }

    #[test]
    fn the_fixed_network_shows_one_address() {
        let n = Network::fixed();
        assert_eq!(n.expected_auto_lists(), ("10.0.0.4".into(), String::new()));
        let (addrs, gw) = n.expected_ip_info(b"00:15:5D:01:02:03").unwrap();
        assert_eq!((addrs, gw), (vec![ip("10.0.0.4")], ip("10.0.0.1")));
        assert_eq!(n.expected_ip_info(b"bogus"), None);
    }

    #[test]
    fn set_ip_expectations() {
        let n = Network::fixed();
        let req = |adapter: &str, ip: &str| IpFields {
            adapter_id: adapter.as_bytes().to_vec(),
            ip_addr: ip.as_bytes().to_vec(),
            sub_net: b"255.255.255.0".to_vec(),
            gate_way: b"10.0.0.1".to_vec(),
            dns_addr: b"10.0.0.2".to_vec(),
            ..Default::default()
        };
        let upper = HN0_GUID.to_uppercase();
        for (adapter, ip, linux, want) in [
            ("hn0", "10.0.0.9", false, Status::OK),
            ("hn0", "10.0.0.9;$(reboot)", false, Status::INVALID_ARG),
            ("hn0", "fe80::1;10.0.0.2", false, Status::INVALID_ARG),
            (HN0_GUID, "10.0.0.9", false, Status::GUID_NOT_FOUND),
            ("hn0", "10.0.0.9", true, Status::INVALID_ARG),
            (HN0_GUID, "10.0.0.9", true, Status::OK),
            (upper.as_str(), "10.0.0.9", true, Status::OK),
            (HN1_GUID, "10.0.0.9", true, Status::GUID_NOT_FOUND),
            (STRANGER_GUID, "10.0.0.9", true, Status::GUID_NOT_FOUND),
            (
                STRANGER_GUID,
                "10.0.0.9;$(reboot)",
                true,
                Status::INVALID_ARG,
            ),
        ] {
            assert_eq!(
                n.expected_set_ip(&req(adapter, ip), linux),
                want,
                "{adapter} {ip} linux={linux}"
            );
        }
        assert_eq!(n.nic_guids().into_values().collect::<Vec<_>>(), ["hn0"]);
    }

    #[test]
    fn local_only_addresses() {
        for a in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "169.254.1.1",
            "0.0.0.0",
            "::",
        ] {
            assert!(local_only(&ip(a)), "{a}");
        }
        for a in ["10.0.0.4", "2001:db8::4", "fec0::1"] {
            assert!(!local_only(&ip(a)), "{a}");
        }
    }
}
