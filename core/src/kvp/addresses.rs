//! Which interfaces and addresses the host is shown: kvp.conf's `exclude_interfaces`
//! and `address_order`, applied to the auto pool's address keys and to GET_IP_INFO.
//!
//! The driver reports what the kernel has, in the kernel's order and unfiltered
//! ([`InterfaceAddr`] in `SystemInfo`, every interface holding the asked MAC for
//! GET_IP_INFO as [`NamedAdapter`]s); every choice is made here, so the simulator and
//! every operating system make the same ones.
//!
//! Facts relied on: FreeBSD's `getifaddrs(3)` lists an interface's addresses in the
//! order they were added, so the first one of a family is the interface's primary
//! address and aliases follow (`ifconfig` shows the same order); an IPv6 link-local
//! address is added when the interface comes up, before any global one. Vagrant and
//! Packer's Hyper-V providers connect to the first address the host lists for the
//! adapter (docs/protocol/kvp.md §4.3), which is why the default puts IPv4 first and a
//! link-local IPv6 address last.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::kvp::ip::{AdapterInfo, IfAddr};
use crate::limits::{MAX_EXCLUDE_PATTERNS, MAX_INTERFACE_NAME, MAX_IP_LIST};

/// One address of one interface, as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct InterfaceAddr {
    /// The interface's name (`hn0`); empty when not known (a recording made before
    /// names were recorded), which only a pattern of `*`s excludes.
    pub interface: String,
    pub addr: IpAddr,
}

/// One interface holding the MAC a GET_IP_INFO asks for: several can (a vlan(4) over
/// `hn0`, a lagg member, an SR-IOV VF beside its `hn`; docs/protocol/kvp.md §7, K4).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NamedAdapter {
    pub interface: String,
    pub info: AdapterInfo,
}

/// kvp.conf's `address_order`: how GET_IP_INFO lists one adapter's addresses (the auto
/// pool has a key per family, so only the order within a family applies to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddressOrder {
    /// IPv4 addresses, then IPv6; within each, the kernel's order with link-local
    /// addresses last.
    #[default]
    Ipv4First,
    /// IPv6, then IPv4, within each as for `Ipv4First`.
    Ipv6First,
    /// The kernel's order, nothing moved.
    Kernel,
}

impl AddressOrder {
    /// The kvp.conf spellings, in the order the man page lists them.
    pub const NAMES: [&'static str; 3] = ["ipv4-first", "ipv6-first", "kernel"];

    pub fn parse(text: &str) -> Option<AddressOrder> {
        match text {
            "ipv4-first" => Some(AddressOrder::Ipv4First),
            "ipv6-first" => Some(AddressOrder::Ipv6First),
            "kernel" => Some(AddressOrder::Kernel),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AddressOrder::Ipv4First => Self::NAMES[0],
            AddressOrder::Ipv6First => Self::NAMES[1],
            AddressOrder::Kernel => Self::NAMES[2],
        }
    }

    /// Where `addr` goes in a stable sort: family first (as ordered), link-local last
    /// within its family. `Kernel` ranks everything alike.
    fn rank(self, addr: &IpAddr) -> (u8, bool) {
        let v6 = addr.is_ipv6();
        match self {
            AddressOrder::Kernel => (0, false),
            AddressOrder::Ipv4First => (u8::from(v6), is_link_local(addr)),
            AddressOrder::Ipv6First => (u8::from(!v6), is_link_local(addr)),
        }
    }
}

/// A pattern may be a little longer than a name (`[0-9]` stands for one byte), but one
/// much longer can only be a mistake.
const MAX_PATTERN_BYTES: usize = 4 * MAX_INTERFACE_NAME;

/// An interface-name pattern of kvp.conf's `exclude_interfaces`: a shell glob (`*`,
/// `?`, `[abc]`, `[a-z]`, `[!a-z]`), matched against the whole name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

/// Why an `exclude_interfaces` pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error(
        "a pattern is {0} bytes long; patterns are at most {max} bytes (interface names \
         at most {MAX_INTERFACE_NAME})",
        max = MAX_PATTERN_BYTES
    )]
    TooLong(usize),
    #[error("`[` opens a set that no `]` closes")]
    OpenSet,
    #[error("more than {MAX_EXCLUDE_PATTERNS} patterns")]
    TooMany,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(GlobError::TooLong(pattern.len()));
        }
        let bytes = pattern.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'[' {
                i = set_end(bytes, i).ok_or(GlobError::OpenSet)?;
            }
            i += 1;
        }
        Ok(Glob(pattern.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the whole of `name` matches. Greedy with one backtrack point (the last
    /// `*`), so linear in practice and never worse than pattern × name steps.
    pub fn matches(&self, name: &str) -> bool {
        let (p, n) = (self.0.as_bytes(), name.as_bytes());
        let (mut pi, mut ni) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                Some(&c) => {
                    if let Some(next) = one_matches(p, pi, c, n[ni]) {
                        pi = next;
                        ni += 1;
                        continue;
                    }
                }
                None => {}
            }
            match star {
                Some((after, from)) => {
                    // Let the last `*` swallow one more byte and try again.
                    star = Some((after, from + 1));
                    pi = after;
                    ni = from + 1;
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The index of the `]` closing the set opened at `open`. A `]` right after `[` or
/// `[!` is a member, as in sh(1).
fn set_end(p: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if matches!(p.get(i), Some(b'!' | b'^')) {
        i += 1;
    }
    if p.get(i) == Some(&b']') {
        i += 1;
    }
    (i..p.len()).find(|&j| p[j] == b']')
}

/// Whether pattern byte `c` at `pi` (not `*`) matches `byte`; if so, where the pattern
/// goes on.
fn one_matches(p: &[u8], pi: usize, c: u8, byte: u8) -> Option<usize> {
    match c {
        b'?' => Some(pi + 1),
        b'[' => {
            // Validated at construction: the set is closed.
            let end = set_end(p, pi)?;
            set_has(&p[pi + 1..end], byte).then_some(end + 1)
        }
        _ => (c == byte).then_some(pi + 1),
    }
}

fn set_has(set: &[u8], byte: u8) -> bool {
    let (negated, members) = match set.first() {
        Some(b'!' | b'^') => (true, &set[1..]),
        _ => (false, set),
    };
    let mut found = false;
    let mut i = 0;
    while i < members.len() {
        let lo = members[i];
        if members.get(i + 1) == Some(&b'-') && i + 2 < members.len() {
            found |= (lo..=members[i + 2]).contains(&byte);
            i += 3;
        } else {
            found |= lo == byte;
            i += 1;
        }
    }
    found != negated
}

/// kvp.conf's `exclude_interfaces` and `address_order`: what the host is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressSelection {
    exclude: Vec<Glob>,
    pub order: AddressOrder,
}

impl Default for AddressSelection {
    /// Loopback interfaces excluded (`lo0` on FreeBSD, `lo` on Linux), IPv4 first.
    fn default() -> Self {
        AddressSelection {
            exclude: vec![Glob("lo*".to_string())],
            order: AddressOrder::default(),
        }
    }
}

impl AddressSelection {
    /// Replaces the excluded patterns (an empty list excludes nothing by name;
    /// loopback addresses are still never shown).
    pub fn set_exclude(&mut self, patterns: Vec<Glob>) -> Result<(), GlobError> {
        if patterns.len() > MAX_EXCLUDE_PATTERNS {
            return Err(GlobError::TooMany);
        }
        self.exclude = patterns;
        Ok(())
    }

    pub fn exclude(&self) -> &[Glob] {
        &self.exclude
    }

    /// Whether the host may see `interface` at all.
    pub fn shows(&self, interface: &str) -> bool {
        !self.exclude.iter().any(|g| g.matches(interface))
    }

    /// The auto pool's NetworkAddressIPv4 and NetworkAddressIPv6 lists: addresses of
    /// shown interfaces that mean something off this machine (no loopback, link-local
    /// or unspecified address), each once, in the kernel's order.
    pub fn auto_addresses(&self, addrs: &[InterfaceAddr]) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
        let mut v4: Vec<Ipv4Addr> = Vec::new();
        let mut v6: Vec<Ipv6Addr> = Vec::new();
        for a in addrs.iter().filter(|a| self.shows(&a.interface)) {
            match a.addr {
                IpAddr::V4(x) if is_reported(&a.addr) && !v4.contains(&x) => v4.push(x),
                IpAddr::V6(x) if is_reported(&a.addr) && !v6.contains(&x) => v6.push(x),
                _ => {}
            }
        }
        (v4, v6)
    }

    /// GET_IP_INFO's answer from every interface holding the MAC (kernel order): the
    /// first shown one that has an address, else the first shown one (K4: a lagg
    /// member or VF without addresses must not hide its `hn`), its addresses in
    /// `order`, the first `MAX_IP_LIST` of them. `None` when no shown interface holds
    /// the MAC.
    pub fn choose(&self, candidates: &[NamedAdapter]) -> Option<AdapterInfo> {
        let mut shown = candidates.iter().filter(|c| self.shows(&c.interface));
        let first = shown.clone().next()?;
        let chosen = shown.find(|c| !c.info.addrs.is_empty()).unwrap_or(first);
        let mut info = chosen.info.clone();
        self.order_addrs(&mut info.addrs);
        info.addrs.truncate(MAX_IP_LIST);
        Some(info)
    }

    /// Sorts one adapter's addresses by `order`, stably (the kernel's order within a
    /// rank).
    pub fn order_addrs(&self, addrs: &mut [IfAddr]) {
        addrs.sort_by_key(|a| self.order.rank(&a.addr));
    }
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(x) => x.is_link_local(),
        // fe80::/10.
        IpAddr::V6(x) => (x.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// An address the host can use: not loopback, link-local or unspecified.
fn is_reported(a: &IpAddr) -> bool {
    !a.is_loopback() && !a.is_unspecified() && !is_link_local(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::new(p).unwrap()
    }

    #[test]
    fn globs_match_whole_names_as_sh_does() {
        let cases: [(&str, &str, bool); 20] = [
            ("lo*", "lo0", true),
            ("lo*", "lo", true),
            ("lo*", "hn0", false),
            ("lo*", "xlo0", false),
            ("hn?", "hn1", true),
            ("hn?", "hn10", false),
            ("hn1", "hn10", false),
            ("*", "", true),
            ("*", "wg0", true),
            ("epair*[ab]", "epair12a", true),
            ("epair*[ab]", "epair12c", false),
            ("tap[0-9]", "tap7", true),
            ("tap[!0-9]", "tap7", false),
            ("tap[!0-9]", "tapx", true),
            ("[]x]y", "]y", true),
            ("*.10", "vlan.10", true),
            ("*.10", "vlan.100", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**", "anything", true),
        ];
        for (p, name, want) in cases {
            assert_eq!(glob(p).matches(name), want, "{p} against {name}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(Glob::new("tap[0-9"), Err(GlobError::OpenSet));
        assert_eq!(Glob::new("[]"), Err(GlobError::OpenSet));
        assert!(matches!(
            Glob::new(&"a".repeat(500)),
            Err(GlobError::TooLong(500))
        ));
        let mut s = AddressSelection::default();
        let many = vec![glob("x"); MAX_EXCLUDE_PATTERNS + 1];
        assert_eq!(s.set_exclude(many), Err(GlobError::TooMany));
    }

    fn at(interface: &str, addr: &str) -> InterfaceAddr {
        InterfaceAddr {
            interface: interface.into(),
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn auto_addresses_skip_excluded_interfaces_and_local_addresses() {
        let addrs = [
            at("lo0", "127.0.0.1"),
            at("hn0", "fe80::1"),
            at("hn0", "10.0.0.4"),
            at("bridge0", "192.168.5.1"),
            at("hn0", "2001:db8::4"),
            at("hn1", "10.0.0.4"),
            at("hn1", "10.1.0.4"),
            at("hn1", "169.254.3.3"),
        ];
        let s = AddressSelection::default();
        let (v4, v6) = s.auto_addresses(&addrs);
        let v4: Vec<String> = v4.iter().map(|a| a.to_string()).collect();
        assert_eq!(v4, ["10.0.0.4", "192.168.5.1", "10.1.0.4"]);
        assert_eq!(v6, ["2001:db8::4".parse::<Ipv6Addr>().unwrap()]);
        let mut s = AddressSelection::default();
        s.set_exclude(vec![glob("bridge*"), glob("hn1")]).unwrap();
        let (v4, _) = s.auto_addresses(&addrs);
        assert_eq!(v4, ["10.0.0.4".parse::<Ipv4Addr>().unwrap()]);
    }

    fn adapter(interface: &str, addrs: &[&str]) -> NamedAdapter {
        NamedAdapter {
            interface: interface.into(),
            info: AdapterInfo {
                addrs: addrs
                    .iter()
                    .map(|a| IfAddr {
                        addr: a.parse().unwrap(),
                        prefix: 24,
                    })
                    .collect(),
                ..Default::default()
            },
        }
    }

    fn addrs_of(info: &AdapterInfo) -> Vec<String> {
        info.addrs.iter().map(|a| a.addr.to_string()).collect()
    }

    #[test]
    fn get_ip_info_orders_by_family_with_link_local_last() {
        let c = [adapter(
            "hn0",
            &[
                "fe80::1",
                "10.0.0.4",
                "2001:db8::4",
                "10.0.0.5",
                "169.254.1.1",
            ],
        )];
        let mut s = AddressSelection::default();
        let want = |order, list: &[&str]| {
            (
                order,
                list.iter().map(|x| x.to_string()).collect::<Vec<String>>(),
            )
        };
        for (order, list) in [
            want(
                AddressOrder::Ipv4First,
                &[
                    "10.0.0.4",
                    "10.0.0.5",
                    "169.254.1.1",
                    "2001:db8::4",
                    "fe80::1",
                ],
            ),
            want(
                AddressOrder::Ipv6First,
                &[
                    "2001:db8::4",
                    "fe80::1",
                    "10.0.0.4",
                    "10.0.0.5",
                    "169.254.1.1",
                ],
            ),
            want(
                AddressOrder::Kernel,
                &[
                    "fe80::1",
                    "10.0.0.4",
                    "2001:db8::4",
                    "10.0.0.5",
                    "169.254.1.1",
                ],
            ),
        ] {
            s.order = order;
            let got: Vec<String> = addrs_of(&s.choose(&c).unwrap());
            assert_eq!(got, list, "{order:?}");
        }
    }

    #[test]
    fn get_ip_info_takes_the_first_shown_interface_with_an_address() {
        let c = [
            adapter("lagg0", &[]),
            adapter("vlan10", &["10.10.0.4"]),
            adapter("hn0", &["10.0.0.4"]),
        ];
        let mut s = AddressSelection::default();
        assert_eq!(addrs_of(&s.choose(&c).unwrap()), ["10.10.0.4"]);
        s.set_exclude(vec![glob("vlan*")]).unwrap();
        assert_eq!(addrs_of(&s.choose(&c).unwrap()), ["10.0.0.4"]);
        s.set_exclude(vec![glob("vlan*"), glob("hn*")]).unwrap();
        assert!(
            s.choose(&c).unwrap().addrs.is_empty(),
            "none with addresses: the first shown"
        );
        s.set_exclude(vec![glob("*")]).unwrap();
        assert_eq!(s.choose(&c), None);
        assert_eq!(AddressSelection::default().choose(&[]), None);
    }

    #[test]
    fn the_list_is_cut_after_ordering() {
        let mut many: Vec<String> = (0..70).map(|i| format!("10.0.{i}.4")).collect();
        many.push("2001:db8::4".into());
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let c = [adapter("hn0", &refs)];
        let s = AddressSelection {
            order: AddressOrder::Ipv6First,
            ..AddressSelection::default()
        };
        let got = addrs_of(&s.choose(&c).unwrap());
        assert_eq!(got.len(), MAX_IP_LIST);
        assert_eq!(got[0], "2001:db8::4", "IPv6 first although listed last");
    }

    #[test]
    fn order_names_round_trip() {
        for name in AddressOrder::NAMES {
            assert_eq!(AddressOrder::parse(name).unwrap().name(), name);
        }
        assert_eq!(AddressOrder::parse("IPv4-first"), None);
    }
}
