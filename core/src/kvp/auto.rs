//! The auto pool (pool 2): ten keys generated from system information (docs/protocol/kvp.md §4.1).
//!
//! The OS fields are the stock FreeBSD daemon's: OSName `uname -s`, OSVersion and
//! OSBuildNumber `kern.osrelease` up to its first `-`, ProcessorArchitecture `uname -m`
//! (`hw.machine`). Differences from it, on purpose: OSMajorVersion and OSMinorVersion
//! are the release's two numbers (the stock daemon leaves them empty; they agree with
//! `kern.osreldate`, 1401000 for 14.1); loopback and link-local addresses, and
//! interfaces kvp.conf excludes, are left out, and lists have no trailing `;` (as the
//! Linux daemon); the host name is whatever the driver looked up in the background,
//! never looked up on the request path (problem K2).

use crate::kvp::addresses::{AddressSelection, InterfaceAddr};
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
    /// Every address of every interface, in the kernel's order, unfiltered (at most
    /// `MAX_SYSTEM_ADDRS`): which ones the host sees is the core's choice.
    pub addrs: Vec<InterfaceAddr>,
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

/// The administrator's values for auto-pool keys (kvp.conf's `auto.<Key>`), shown
/// instead of what the system says: the name Hyper-V Manager shows, say, when the
/// host name is not the one the administrators know the VM by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoOverrides {
    /// By position in [`AUTO_KEYS`].
    values: [Option<Value>; AUTO_KEYS.len()],
}

/// Why an `auto.<Key>` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AutoOverrideError {
    #[error("not one of the ten auto-pool keys ({})", AUTO_KEYS.join(", "))]
    UnknownKey,
    /// The host reads back at most this much of a value.
    #[error("{units} UTF-16 units long; the host reads at most {HOST_SAFE_VALUE_UNITS}")]
    TooLong { units: usize },
    #[error("contains a NUL byte, which ends a value on the wire")]
    Nul,
}

impl AutoOverrides {
    /// Shows `value` as `key` (one of [`AUTO_KEYS`], exactly).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), AutoOverrideError> {
        let at = AUTO_KEYS
            .iter()
            .position(|k| *k == key)
            .ok_or(AutoOverrideError::UnknownKey)?;
        let units = value.encode_utf16().count();
        if units > HOST_SAFE_VALUE_UNITS {
            return Err(AutoOverrideError::TooLong { units });
        }
        // At most 1022 units is at most 3066 bytes, which may not fit the field.
        let value = Value::new(value.as_bytes()).map_err(|e| match e {
            crate::kvp::text::TextError::Nul { .. } => AutoOverrideError::Nul,
            _ => AutoOverrideError::TooLong { units },
        })?;
        self.values[at] = Some(value);
        Ok(())
    }

    /// The value set for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let at = AUTO_KEYS.iter().position(|k| *k == key)?;
        self.values[at].as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }
}

/// The ten values, computed once per `SystemInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoPool {
    entries: Vec<(Key, Value)>,
}

impl AutoPool {
    /// The values `info` gives, its addresses as `shown` selects them, except where
    /// `overrides` sets a value.
    pub fn new(info: &SystemInfo, shown: &AddressSelection, overrides: &AutoOverrides) -> AutoPool {
        let build = info.os_release.split('-').next().unwrap_or("").to_string();
        let mut version = build.split('.');
        let major = version.next().unwrap_or("").to_string();
        let minor = version.next().unwrap_or("").to_string();
        let (v4, v6) = shown.auto_addresses(&info.addrs);
        let values = [
            info.fqdn.clone(),
            INTEGRATION_VERSION.to_string(),
            join_bounded(v4.iter().map(ToString::to_string)),
            join_bounded(v6.iter().map(ToString::to_string)),
            build.clone(),
            info.os_name.clone(),
            major,
            minor,
            build,
            info.machine.clone(),
        ];
        let entries = AUTO_KEYS
            .iter()
            .zip(values)
            .zip(&overrides.values)
            .map(|((k, v), set)| {
                let value = match set {
                    Some(set) => set.clone(),
                    None => Value::truncated(v.as_bytes()),
                };
                (Key::truncated(k.as_bytes()), value)
            })
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
    use crate::kvp::addresses::Glob;

    fn at(interface: &str, addr: &str) -> InterfaceAddr {
        InterfaceAddr {
            interface: interface.into(),
            addr: addr.parse().unwrap(),
        }
    }

    fn plain(info: &SystemInfo) -> AutoPool {
        AutoPool::new(
            info,
            &AddressSelection::default(),
            &AutoOverrides::default(),
        )
    }

    #[test]
    fn ten_keys_in_order_with_documented_values() {
        let info = SystemInfo {
            fqdn: "vm1.example.net".into(),
            os_name: "FreeBSD".into(),
            os_release: "14.1-RELEASE-p3".into(),
            machine: "amd64".into(),
            addrs: vec![
                at("lo0", "127.0.0.1"),
                at("lo0", "::1"),
                at("hn0", "fe80::1"),
                at("hn0", "10.0.0.4"),
                at("hn0", "169.254.1.1"),
                at("hn0", "2001:db8::4"),
                at("hn1", "10.1.0.4"),
                at("tap0", "192.168.9.1"),
            ],
        };
        let mut shown = AddressSelection::default();
        shown
            .set_exclude(vec![Glob::new("lo*").unwrap(), Glob::new("tap*").unwrap()])
            .unwrap();
        let a = AutoPool::new(&info, &shown, &AutoOverrides::default());
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
            ("OSBuildNumber", "14.1"),
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
    fn overrides_replace_exactly_their_keys() {
        let info = SystemInfo {
            fqdn: "vm1.example.net".into(),
            os_name: "FreeBSD".into(),
            ..Default::default()
        };
        let mut o = AutoOverrides::default();
        assert!(o.is_empty());
        o.set("OSName", "FreeBSD (web tier)").unwrap();
        o.set("FullyQualifiedDomainName", "web1.contoso.com")
            .unwrap();
        let a = AutoPool::new(&info, &AddressSelection::default(), &o);
        let get = |k: &str| a.get(&Key::new(k.as_bytes()).unwrap()).unwrap().to_string();
        assert_eq!(get("OSName"), "FreeBSD (web tier)");
        assert_eq!(get("FullyQualifiedDomainName"), "web1.contoso.com");
        assert_eq!(get("ProcessorArchitecture"), "");
        // The same order and keys as without.
        let plain = plain(&info);
        for i in 0..10 {
            assert_eq!(a.entry(i).unwrap().0, plain.entry(i).unwrap().0);
        }
        assert_eq!(
            o.set("OSname", "x"),
            Err(AutoOverrideError::UnknownKey),
            "keys are exact"
        );
        assert_eq!(
            o.set("OSName", &"é".repeat(1023)),
            Err(AutoOverrideError::TooLong { units: 1023 })
        );
        // 1022 three-byte characters fit the host's units but not the 2048-byte field.
        assert_eq!(
            o.set("OSName", &"€".repeat(1022)),
            Err(AutoOverrideError::TooLong { units: 1022 })
        );
        assert!(o.set("OSName", &"é".repeat(1022)).is_ok());
        assert_eq!(o.set("OSName", "a\0b"), Err(AutoOverrideError::Nul));
    }

    #[test]
    fn long_address_lists_stay_within_host_limit() {
        let info = SystemInfo {
            addrs: (0..200u16)
                .map(|i| InterfaceAddr {
                    interface: "hn0".into(),
                    addr: core::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xffff, i).into(),
                })
                .collect(),
            ..Default::default()
        };
        let a = plain(&info);
        let v = a.get(&Key::new(b"NetworkAddressIPv6").unwrap()).unwrap();
        assert!(v.len() <= HOST_SAFE_VALUE_UNITS);
        assert!(!v.to_string().ends_with(';'));
    }
}
