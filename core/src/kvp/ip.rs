//! GET_IP_INFO and SET_IP_INFO: what the host asks for, validated before any effect.
//!
//! The stock daemon wrote host text into a file that `sh` then sourced (problem K5).
//! Here every field is parsed into addresses and prefixes; anything that does not parse
//! is refused with `INVALID_ARG` and no effect is issued. The adapter must be one of
//! Hyper-V's synthetic NICs (`hn<N>`): the host may reconfigure the network it provides,
//! never the loopback or another interface of the guest. The driver receives typed
//! values it can pass to a script as separate arguments.

use core::net::IpAddr;

use crate::kvp::wire::{IpFields, Status};
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

/// A static (or DHCP) configuration the host wants applied (SET_IP_INFO).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IpConfig {
    /// The hn(4) interface the kernel substituted for the host's adapter GUID (only
    /// synthetic NICs pass [`IpConfig::parse`]).
    pub adapter: String,
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

impl IpConfig {
    /// Parses and validates the request fields.
    pub fn parse(f: &IpFields) -> Result<IpConfig, IpConfigError> {
        let adapter = std::str::from_utf8(&f.adapter_id).map_err(|_| IpConfigError::NotUtf8)?;
        if guid_text(adapter) {
            return Err(IpConfigError::UnknownAdapter(adapter.to_string()));
        }
        if !synthetic_nic(adapter) {
            return Err(IpConfigError::NotSyntheticNic(adapter.to_string()));
        }
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
            adapter: adapter.to_string(),
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
        let c = IpConfig::parse(&fields("10.0.0.4;2001:db8::4", "255.255.255.0;64")).unwrap();
        assert_eq!(c.addrs[0].prefix, 24);
        assert_eq!(c.addrs[1].prefix, 64);
        assert_eq!(c.dns.len(), 2);
    }

    #[test]
    fn shell_text_and_bad_masks_are_refused() {
        assert!(matches!(
            IpConfig::parse(&fields("10.0.0.4; reboot", "255.255.255.0;24")),
            Err(IpConfigError::BadAddress { .. })
        ));
        assert!(matches!(
            IpConfig::parse(&fields("10.0.0.4", "255.0.255.0")),
            Err(IpConfigError::BadSubnet(_))
        ));
        assert!(matches!(
            IpConfig::parse(&fields("10.0.0.4;10.0.0.5", "255.0.0.0")),
            Err(IpConfigError::CountMismatch { .. })
        ));
        let mut f = fields("10.0.0.4", "24");
        f.adapter_id = b"hn0;rm -rf /".to_vec();
        assert!(matches!(
            IpConfig::parse(&f),
            Err(IpConfigError::NotSyntheticNic(_))
        ));
    }

    #[test]
    fn only_synthetic_nics_may_be_reconfigured() {
        let with = |adapter: &str| {
            let mut f = fields("10.0.0.4", "24");
            f.adapter_id = adapter.as_bytes().to_vec();
            IpConfig::parse(&f)
        };
        for good in ["hn0", "hn1", "hn12", "hn999999999999"] {
            assert_eq!(with(good).map(|c| c.adapter), Ok(good.to_string()));
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
