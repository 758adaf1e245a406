//! The auto pool (pool 2): ten keys generated from system information (docs/protocol/kvp.md §4.1).
//!
//! Differences from the stock FreeBSD daemon, on purpose: loopback and link-local
//! addresses are left out and lists have no trailing `;` (as the Linux daemon); the host
//! name is whatever the driver looked up in the background, never looked up on the
//! request path (problem K2); OSMajorVersion/OSMinorVersion are filled from the release.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::kvp::text::{Key, Value};
use crate::limits::HOST_SAFE_VALUE_UNITS;

/// What the driver knows about the system. Refreshed by `Input::SystemInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SystemInfo {
    /// Canonical host name, looked up off the request path.
    pub fqdn: String,
    /// `uname -s`, e.g. `FreeBSD`.
    pub os_name: String,
    /// `uname -r`, e.g. `14.1-RELEASE-p3`.
    pub os_release: String,
    /// `uname -m`, e.g. `amd64`.
    pub machine: String,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

/// The auto pool's keys, in enumeration order.
pub const AUTO_KEYS: [&str; 10] = [
    "FullyQualifiedDomainName",
    "IntegrationServicesVersion",
    "NetworkAddressIPv4",
    "NetworkAddressIPv6",
    "OSBuildNumber",
    "OSName",
    "OSMajorVersion",
    "OSMinorVersion",
    "OSVersion",
    "ProcessorArchitecture",
];

/// Reported as IntegrationServicesVersion.
pub const INTEGRATION_VERSION: &str = concat!("hvguest ", env!("CARGO_PKG_VERSION"));

fn is_reported_v4(a: &Ipv4Addr) -> bool {
    !a.is_loopback() && !a.is_link_local() && !a.is_unspecified()
}

fn is_reported_v6(a: &Ipv6Addr) -> bool {
    // fe80::/10 is link-local.
    !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80
}

/// Joins with `;`, stopping before the host-safe value length would be passed.
fn join_bounded(items: impl Iterator<Item = String>) -> String {
    let mut out = String::new();
    for item in items {
        let extra = item.len() + usize::from(!out.is_empty());
        if out.len() + extra > HOST_SAFE_VALUE_UNITS {
            break;
        }
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(&item);
    }
    out
}

/// The ten values, computed once per `SystemInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoPool {
    entries: Vec<(Key, Value)>,
}

impl AutoPool {
    pub fn new(info: &SystemInfo) -> AutoPool {
        let build = info.os_release.split('-').next().unwrap_or("").to_string();
        let mut version = build.split('.');
        let major = version.next().unwrap_or("").to_string();
        let minor = version.next().unwrap_or("").to_string();
        let values = [
            info.fqdn.clone(),
            INTEGRATION_VERSION.to_string(),
            join_bounded(
                info.ipv4
                    .iter()
                    .filter(|a| is_reported_v4(a))
                    .map(|a| a.to_string()),
            ),
            join_bounded(
                info.ipv6
                    .iter()
                    .filter(|a| is_reported_v6(a))
                    .map(|a| a.to_string()),
            ),
            info.os_release.clone(),
            info.os_name.clone(),
            major,
            minor,
            build,
            info.machine.clone(),
        ];
        let entries = AUTO_KEYS
            .iter()
            .zip(values)
            .map(|(k, v)| (Key::truncated(k.as_bytes()), Value::truncated(v.as_bytes())))
            .collect();
        AutoPool { entries }
    }

    pub fn entry(&self, index: u32) -> Option<(&Key, &Value)> {
        self.entries.get(index as usize).map(|(k, v)| (k, v))
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_keys_in_order_with_documented_values() {
        let info = SystemInfo {
            fqdn: "vm1.example.net".into(),
            os_name: "FreeBSD".into(),
            os_release: "14.1-RELEASE-p3".into(),
            machine: "amd64".into(),
            ipv4: vec![
                Ipv4Addr::LOCALHOST,
                Ipv4Addr::new(10, 0, 0, 4),
                Ipv4Addr::new(169, 254, 1, 1),
                Ipv4Addr::new(10, 1, 0, 4),
            ],
            ipv6: vec![
                Ipv6Addr::LOCALHOST,
                "fe80::1".parse().unwrap(),
                "2001:db8::4".parse().unwrap(),
            ],
        };
        let a = AutoPool::new(&info);
        let got: Vec<(String, String)> = (0..10)
            .map(|i| {
                a.entry(i)
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .unwrap()
            })
            .collect();
        let want = [
            ("FullyQualifiedDomainName", "vm1.example.net"),
            ("IntegrationServicesVersion", INTEGRATION_VERSION),
            ("NetworkAddressIPv4", "10.0.0.4;10.1.0.4"),
            ("NetworkAddressIPv6", "2001:db8::4"),
            ("OSBuildNumber", "14.1-RELEASE-p3"),
            ("OSName", "FreeBSD"),
            ("OSMajorVersion", "14"),
            ("OSMinorVersion", "1"),
            ("OSVersion", "14.1"),
            ("ProcessorArchitecture", "amd64"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
        assert!(a.entry(10).is_none());
    }

    #[test]
    fn long_address_lists_stay_within_host_limit() {
        let info = SystemInfo {
            ipv6: (0..200u16)
                .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xffff, i))
                .collect(),
            ..Default::default()
        };
        let a = AutoPool::new(&info);
        let v = a.get(&Key::new(b"NetworkAddressIPv6").unwrap()).unwrap();
        assert!(v.len() <= HOST_SAFE_VALUE_UNITS);
        assert!(!v.to_string().ends_with(';'));
    }
}
