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
    pub fn new(info: &SystemInfo) -> AutoPool {
        AutoPool::with_overrides(info, &AutoOverrides::default())
    }

    /// The values `info` gives, except where `overrides` sets one.
    pub fn with_overrides(info: &SystemInfo, overrides: &AutoOverrides) -> AutoPool {
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
        let a = AutoPool::with_overrides(&info, &o);
        let get = |k: &str| a.get(&Key::new(k.as_bytes()).unwrap()).unwrap().to_string();
        assert_eq!(get("OSName"), "FreeBSD (web tier)");
        assert_eq!(get("FullyQualifiedDomainName"), "web1.contoso.com");
        assert_eq!(get("ProcessorArchitecture"), "");
        // The same order and keys as without.
        let plain = AutoPool::new(&info);
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
