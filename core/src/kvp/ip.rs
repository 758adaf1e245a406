//! GET_IP_INFO and SET_IP_INFO: what the host asks for, validated before any effect.
//!
//! The stock daemon wrote host text into a file that `sh` then sourced (problem K5).
//! Here every field is parsed into addresses and prefixes; anything that does not parse
//! is refused with `INVALID_ARG` and no effect is issued. The adapter must be one of
//! Hyper-V's synthetic NICs: on FreeBSD the `hn<N>` name the kernel put in place of the
//! host's adapter GUID, on Linux the GUID itself, which the driver matches to the
//! interface whose vmbus device has it (docs/protocol/linux.md §1.7). The host may
//! reconfigure the network it provides, never the loopback or another interface of the
//! guest. The driver receives typed values it can pass to a script as separate
//! arguments or render into a file of its own format.

use core::net::IpAddr;

use crate::kvp::wire::{IpFields, Layout, Status};
use crate::limits::MAX_IP_LIST;

/// An Ethernet address, parsed from the host's `00:15:5D:01:02:03` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Accepts six hex pairs separated by `:` or `-`, any case.
    pub fn parse(text: &[u8]) -> Option<Mac> {
        let s = std::str::from_utf8(text).ok()?;
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next()?;
            if p.len() != 2 {
                return None;
            }
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(out))
    }
}

impl std::fmt::Display for Mac {
    /// Upper case with colons, the form the host sends.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// An address with its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// What the driver reports for an adapter (GET_IP_INFO).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AdapterInfo {
    pub addrs: Vec<IfAddr>,
    pub gateways: Vec<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub dhcp: bool,
}

/// A network adapter's instance GUID, as the host names a synthetic NIC and as Linux's
/// vmbus shows it in sysfs (`device_id`). The 16 bytes are the 32 hex digits in the
/// order they are written, so the text comes back exactly as parsed (the Windows
/// byte order of the first three groups plays no part: only text is ever compared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NicGuid(pub [u8; 16]);

/// Where the hyphens of a GUID's text fall, counted in hex digits before them.
const GUID_GROUPS: [usize; 5] = [8, 4, 4, 4, 12];

impl NicGuid {
    /// Accepts `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` in any case, braces and
    /// hyphens required, nothing around it (a trailing newline, as sysfs prints one,
    /// is the caller's to cut).
    pub fn parse(text: &[u8]) -> Option<NicGuid> {
        let inner = text.strip_prefix(b"{")?.strip_suffix(b"}")?;
        let mut groups = inner.split(|&b| b == b'-');
        let mut digits = Vec::with_capacity(32);
        for want in GUID_GROUPS {
            let group = groups.next()?;
            if group.len() != want {
                return None;
            }
            for &b in group {
                digits.push(char::from(b).to_digit(16)? as u8);
            }
        }
        if groups.next().is_some() {
            return None;
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = pair[0] << 4 | pair[1];
        }
        Some(NicGuid(out))
    }

    /// The 36 characters between the braces, lower case: also a UUID as
    /// NetworkManager writes one.
    pub fn bare(&self) -> String {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        let mut out = String::with_capacity(36);
        let mut at = 0;
        for (i, len) in GUID_GROUPS.iter().enumerate() {
            if i > 0 {
                out.push('-');
            }
            out.push_str(&hex[at..at + len]);
            at += len;
        }
        out
    }
}

/// Lower case in braces, the form Linux's sysfs prints (docs/protocol/linux.md §1.7).
impl std::fmt::Display for NicGuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}", self.bare())
    }
}

/// The synthetic NIC a SET_IP_INFO is for, in the form the guest's kernel hands over.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Adapter {
    /// FreeBSD: the hn(4) interface the kernel substituted for the host's GUID.
    Interface(String),
    /// Linux: the host's GUID, left as it came; the driver finds the interface.
    Guid(NicGuid),
}

/// The interface name, or the GUID in sysfs's form.
impl std::fmt::Display for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Adapter::Interface(name) => f.write_str(name),
            Adapter::Guid(guid) => guid.fmt(f),
        }
    }
}

/// A static (or DHCP) configuration the host wants applied (SET_IP_INFO).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IpConfig {
    /// The synthetic NIC (only those pass [`IpConfig::parse`]).
    pub adapter: Adapter,
    pub dhcp: bool,
    pub addrs: Vec<IfAddr>,
    pub gateways: Vec<IpAddr>,
    pub dns: Vec<IpAddr>,
}

pub(crate) const FAMILY_V4: u8 = 1;
pub(crate) const FAMILY_V6: u8 = 2;

fn mask_text(a: &IfAddr) -> String {
    match a.addr {
        IpAddr::V4(_) => {
            let bits = if a.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(a.prefix.min(32)))
            };
            core::net::Ipv4Addr::from(bits).to_string()
        }
        IpAddr::V6(_) => a.prefix.to_string(),
    }
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> Vec<u8> {
    items
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(";")
        .into_bytes()
}

impl AdapterInfo {
    /// The reply fields for GET_IP_INFO: `;`-separated lists, masks dotted for IPv4 and
    /// prefix lengths for IPv6, the family bits of the addresses present.
    pub fn to_fields(&self, mac: Mac) -> IpFields {
        let family = self.addrs.iter().fold(0, |f, a| {
            f | if a.addr.is_ipv4() {
                FAMILY_V4
            } else {
                FAMILY_V6
            }
        });
        IpFields {
            adapter_id: mac.to_string().into_bytes(),
            addr_family: family,
            dhcp_enabled: u8::from(self.dhcp),
            ip_addr: join(self.addrs.iter().map(|a| a.addr)),
            sub_net: join(self.addrs.iter().map(mask_text)),
            gate_way: join(self.gateways.iter()),
            dns_addr: join(self.dns.iter()),
        }
    }
}

/// Why a SET_IP_INFO request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpConfigError {
    #[error(
        "adapter {0:?} is not a Hyper-V synthetic NIC (hn0, hn1, ...), the only interfaces the \
         host may reconfigure"
    )]
    NotSyntheticNic(String),
    #[error(
        "adapter {0:?} is a GUID the kernel matched to no hn(4) interface: the host named a \
         network adapter this guest does not have"
    )]
    UnknownAdapter(String),
    #[error(
        "adapter {0:?} is not a network adapter GUID ({{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}}), \
         the form in which the Linux kernel passes the host's adapter on"
    )]
    NotNicGuid(String),
    #[error("{field}: {text:?} is not an address")]
    BadAddress { field: &'static str, text: String },
    #[error("subnet {0:?} is not a contiguous mask or prefix length for its address")]
    BadSubnet(String),
    #[error("{addrs} addresses but {subnets} subnets")]
    CountMismatch { addrs: usize, subnets: usize },
    #[error("{0}: more than {MAX_IP_LIST} items")]
    TooMany(&'static str),
    #[error("static configuration without an address")]
    NoAddress,
    #[error("text is not UTF-8")]
    NotUtf8,
}

fn items(field: &'static str, raw: &[u8]) -> Result<Vec<String>, IpConfigError> {
    let s = std::str::from_utf8(raw).map_err(|_| IpConfigError::NotUtf8)?;
    let v: Vec<String> = s
        .split([';', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if v.len() > MAX_IP_LIST {
        return Err(IpConfigError::TooMany(field));
    }
    Ok(v)
}

fn addresses(field: &'static str, raw: &[u8]) -> Result<Vec<IpAddr>, IpConfigError> {
    items(field, raw)?
        .into_iter()
        .map(|t| {
            t.parse()
                .map_err(|_| IpConfigError::BadAddress { field, text: t })
        })
        .collect()
}

fn prefix_for(addr: &IpAddr, subnet: &str) -> Option<u8> {
    match addr {
        IpAddr::V4(_) => {
            if let Ok(n) = subnet.trim_start_matches('/').parse::<u8>() {
                return (n <= 32).then_some(n);
            }
            let mask = u32::from(subnet.parse::<core::net::Ipv4Addr>().ok()?);
            let ones = mask.leading_ones();
            (mask.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
        }
        IpAddr::V6(_) => {
            let n = subnet.trim_start_matches('/').parse::<u8>().ok()?;
            (n <= 128).then_some(n)
        }
    }
}

/// FreeBSD's `IFNAMSIZ` less its terminator: no interface name is longer.
const MAX_IFNAME: usize = 15;

/// Whether `a` names one of Hyper-V's synthetic NICs the way the FreeBSD kernel writes it
/// when it finds the host's adapter (docs/protocol/kvp.md §4.4): `hn` and the unit number
/// in decimal digits. Only those may be reconfigured: any other name would let the host
/// rewrite `lo0`, a VPN or a passed-through NIC, and a name starting with `-` would be
/// read as an option by the script's tools.
fn synthetic_nic(a: &str) -> bool {
    a.len() <= MAX_IFNAME
        && a.strip_prefix("hn")
            .is_some_and(|unit| !unit.is_empty() && unit.bytes().all(|b| b.is_ascii_digit()))
}

/// The kernel leaves the host's `{GUID}` text in place when no hn(4) device has it.
fn guid_text(a: &str) -> bool {
    a.len() == 38
        && a.starts_with('{')
        && a.ends_with('}')
        && a.as_bytes()[1..37]
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b'-')
}

impl IpConfigError {
    /// The status the host gets: an adapter the guest does not have is `GUID_NOT_FOUND`
    /// (the Linux daemon's answer for an unknown adapter); everything else is a bad
    /// argument.
    pub fn status(&self) -> Status {
        match self {
            IpConfigError::UnknownAdapter(_) => Status::GUID_NOT_FOUND,
            _ => Status::INVALID_ARG,
        }
    }
}

/// The adapter as `layout`'s kernel hands it over: FreeBSD's substituted `hn<N>` (its
/// GUID text meaning no hn(4) had it), Linux's GUID (docs/protocol/linux.md §1.7).
fn adapter_for(layout: Layout, raw: &[u8]) -> Result<Adapter, IpConfigError> {
    let text = || String::from_utf8_lossy(raw).into_owned();
    match layout {
        Layout::FreeBsd => {
            let adapter = std::str::from_utf8(raw).map_err(|_| IpConfigError::NotUtf8)?;
            if guid_text(adapter) {
                return Err(IpConfigError::UnknownAdapter(adapter.to_string()));
            }
            if !synthetic_nic(adapter) {
                return Err(IpConfigError::NotSyntheticNic(adapter.to_string()));
            }
            Ok(Adapter::Interface(adapter.to_string()))
        }
        Layout::Linux => NicGuid::parse(raw)
            .map(Adapter::Guid)
            .ok_or_else(|| IpConfigError::NotNicGuid(text())),
    }
}

impl IpConfig {
    /// Parses and validates the request fields of a message from `layout`'s kernel.
    pub fn parse(f: &IpFields, layout: Layout) -> Result<IpConfig, IpConfigError> {
        let adapter = adapter_for(layout, &f.adapter_id)?;
        let dhcp = f.dhcp_enabled != 0;
        let ips = addresses("ip_addr", &f.ip_addr)?;
        let subnets = items("sub_net", &f.sub_net)?;
        if ips.len() != subnets.len() && !(dhcp && ips.is_empty()) {
            return Err(IpConfigError::CountMismatch {
                addrs: ips.len(),
                subnets: subnets.len(),
            });
        }
        if !dhcp && ips.is_empty() {
            return Err(IpConfigError::NoAddress);
        }
        let addrs = ips
            .iter()
            .zip(&subnets)
            .map(|(addr, s)| {
                prefix_for(addr, s)
                    .map(|prefix| IfAddr {
                        addr: *addr,
                        prefix,
                    })
                    .ok_or_else(|| IpConfigError::BadSubnet(s.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(IpConfig {
            adapter,
            dhcp,
            addrs,
            gateways: addresses("gate_way", &f.gate_way)?,
            dns: addresses("dns_addr", &f.dns_addr)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            Mac::parse(b"00:15:5D:01:02:0a"),
            Some(Mac([0, 0x15, 0x5d, 1, 2, 0xa]))
        );
        assert_eq!(
            Mac::parse(b"00-15-5d-01-02-03").unwrap().to_string(),
            "00:15:5D:01:02:03"
        );
        assert_eq!(Mac::parse(b"00:15:5D:01:02"), None);
        assert_eq!(Mac::parse(b"00:15:5D:01:02:03:04"), None);
        assert_eq!(Mac::parse(b"0:15:5D:01:02:03"), None);
    }

    fn fields(ip: &str, sub: &str) -> IpFields {
        IpFields {
            adapter_id: b"hn0".to_vec(),
            ip_addr: ip.into(),
            sub_net: sub.into(),
            gate_way: b"10.0.0.1".to_vec(),
            dns_addr: b"10.0.0.2;10.0.0.3".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn valid_static_config() {
        let c = IpConfig::parse(
            &fields("10.0.0.4;2001:db8::4", "255.255.255.0;64"),
            Layout::FreeBsd,
        )
        .unwrap();
        assert_eq!(c.addrs[0].prefix, 24);
        assert_eq!(c.addrs[1].prefix, 64);
        assert_eq!(c.dns.len(), 2);
    }

    #[test]
    fn shell_text_and_bad_masks_are_refused() {
        assert!(matches!(
            IpConfig::parse(
                &fields("10.0.0.4; reboot", "255.255.255.0;24"),
                Layout::FreeBsd
            ),
            Err(IpConfigError::BadAddress { .. })
        ));
        assert!(matches!(
            IpConfig::parse(&fields("10.0.0.4", "255.0.255.0"), Layout::FreeBsd),
            Err(IpConfigError::BadSubnet(_))
        ));
        assert!(matches!(
            IpConfig::parse(&fields("10.0.0.4;10.0.0.5", "255.0.0.0"), Layout::FreeBsd),
            Err(IpConfigError::CountMismatch { .. })
        ));
        let mut f = fields("10.0.0.4", "24");
        f.adapter_id = b"hn0;rm -rf /".to_vec();
        assert!(matches!(
            IpConfig::parse(&f, Layout::FreeBsd),
            Err(IpConfigError::NotSyntheticNic(_))
        ));
    }

    #[test]
    fn only_synthetic_nics_may_be_reconfigured() {
        let with = |adapter: &str| {
            let mut f = fields("10.0.0.4", "24");
            f.adapter_id = adapter.as_bytes().to_vec();
            IpConfig::parse(&f, Layout::FreeBsd)
        };
        for good in ["hn0", "hn1", "hn12", "hn999999999999"] {
            assert_eq!(
                with(good).map(|c| c.adapter),
                Ok(Adapter::Interface(good.to_string()))
            );
        }
        for bad in [
            "lo0",
            "-hn0",
            "hn",
            "hn-1",
            "hn0x",
            "hn 0",
            "hn0;",
            "HN0",
            "xhn0",
            "em0",
            "vtnet0",
            "hn0.100",
            "",
            "hn12345678901234",
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e, IpConfigError::NotSyntheticNic(bad.to_string()));
            assert_eq!(e.status(), Status::INVALID_ARG);
        }
        // Not a GUID, and not a place to cut a string: 38 bytes, braces, non-ASCII inside.
        let odd = format!("{{{}}}", "é".repeat(18));
        assert_eq!(
            with(&odd).unwrap_err(),
            IpConfigError::NotSyntheticNic(odd.clone())
        );
        let guid = "{f6e5d4c3-b2a1-4f0e-9d8c-7b6a59483726}";
        let e = with(guid).unwrap_err();
        assert_eq!(e, IpConfigError::UnknownAdapter(guid.to_string()));
        assert_eq!(e.status(), Status::GUID_NOT_FOUND);
        assert!(e.to_string().contains("no hn(4) interface"), "{e}");
    }

    /// The SET_IP_INFO request of the Linux fact sheet's test vectors, as the Linux
    /// kernel hands it over.
    fn linux_fields(adapter: &[u8]) -> IpFields {
        IpFields {
            adapter_id: adapter.to_vec(),
            addr_family: 1,
            dhcp_enabled: 0,
            ip_addr: b"10.0.0.5".to_vec(),
            sub_net: b"255.255.255.0".to_vec(),
            gate_way: b"10.0.0.1".to_vec(),
            dns_addr: b"10.0.0.2".to_vec(),
        }
    }

    #[test]
    fn on_linux_the_adapter_is_the_hosts_guid() {
        let c = IpConfig::parse(
            &linux_fields(b"{f8615163-df3e-46c5-913f-f2d2f965ed0e}"),
            Layout::Linux,
        )
        .unwrap();
        let Adapter::Guid(guid) = c.adapter else {
            panic!("not a GUID: {:?}", c.adapter);
        };
        assert_eq!(guid.0[0], 0xf8);
        assert_eq!(guid.0[15], 0x0e);
        assert_eq!(guid.to_string(), "{f8615163-df3e-46c5-913f-f2d2f965ed0e}");
        assert_eq!(guid.bare(), "f8615163-df3e-46c5-913f-f2d2f965ed0e");
        assert_eq!(
            c.addrs,
            [IfAddr {
                addr: "10.0.0.5".parse().unwrap(),
                prefix: 24
            }]
        );
        assert_eq!(c.gateways, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.dns, ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        // The host may write it in upper case; sysfs prints lower case: the same NIC.
        let upper = IpConfig::parse(
            &linux_fields(b"{F8615163-DF3E-46C5-913F-F2D2F965ED0E}"),
            Layout::Linux,
        )
        .unwrap();
        assert_eq!(upper.adapter, Adapter::Guid(guid));
        assert_eq!(
            upper.adapter.to_string(),
            "{f8615163-df3e-46c5-913f-f2d2f965ed0e}"
        );
    }

    #[test]
    fn on_linux_anything_but_a_guid_is_an_invalid_argument() {
        for bad in [
            &b"hn0"[..],
            b"eth0",
            b"lo",
            b"",
            b"f8615163-df3e-46c5-913f-f2d2f965ed0e",
            b"{f8615163-df3e-46c5-913f-f2d2f965ed0e",
            b"{f8615163-df3e-46c5-913f-f2d2f965ed0e}\n",
            b"{f8615163df3e-46c5-913f-f2d2f965ed0e0}",
            b"{f8615163-df3e-46c5-913f-f2d2f965ed0g}",
            b"{f8615163-df3e-46c5-913f-f2d2f965ed0e-}",
            b"{+8615163-df3e-46c5-913f-f2d2f965ed0e}",
            b"{f8615163-df3e-46c5-913f-f2d2f965ed\xc3\xa9}",
        ] {
            let e = IpConfig::parse(&linux_fields(bad), Layout::Linux).unwrap_err();
            assert!(matches!(e, IpConfigError::NotNicGuid(_)), "{bad:?}: {e:?}");
            assert_eq!(e.status(), Status::INVALID_ARG, "{bad:?}");
        }
        // The addresses are held to the same rules as on FreeBSD.
        let mut f = linux_fields(b"{f8615163-df3e-46c5-913f-f2d2f965ed0e}");
        f.ip_addr = b"10.0.0.5;$(reboot)".to_vec();
        assert!(matches!(
            IpConfig::parse(&f, Layout::Linux),
            Err(IpConfigError::BadAddress { .. })
        ));
    }

    #[test]
    fn reply_fields_format() {
        let info = AdapterInfo {
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
            gateways: vec!["10.0.0.1".parse().unwrap()],
            dns: vec!["168.63.129.16".parse().unwrap()],
            dhcp: true,
        };
        let f = info.to_fields(Mac([0, 0x15, 0x5d, 1, 2, 3]));
        assert_eq!(f.addr_family, 3);
        assert_eq!(f.ip_addr, b"10.0.0.4;2001:db8::4");
        assert_eq!(f.sub_net, b"255.255.255.0;64");
        assert_eq!(f.adapter_id, b"00:15:5D:01:02:03");
    }
}
