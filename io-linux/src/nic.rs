//! SET_IP_INFO on Linux: which interface the host's adapter GUID names, and the
//! NetworkManager keyfile that holds the host's configuration for it.
//!
//! The Linux kernel passes the host's adapter GUID on untouched; the vmbus device of
//! each synthetic NIC shows the same GUID in `/sys/class/net/<if>/device/device_id`
//! (docs/protocol/linux.md §1.7). Everything here only reads sysfs or builds text,
//! so tests run them on a fake tree in a temporary directory.

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use hvguest_core::kvp::ip::{IfAddr, IpConfig, Mac, NicGuid};

/// Where the kernel lists the network interfaces.
pub const SYS_CLASS_NET: &str = "/sys/class/net";
/// NetworkManager's command-line client.
pub const NMCLI: &str = "/usr/bin/nmcli";
/// Where NetworkManager keeps the keyfiles of connections an administrator made.
pub const NM_CONNECTIONS: &str = "/etc/NetworkManager/system-connections";

/// Linux's `IFNAMSIZ` less its terminator: no interface name is longer.
const MAX_IFNAME: usize = 15;

/// Whether `name` is a name the kernel could have given an interface (its own rule in
/// `dev_valid_name`): 1 to 15 bytes, not `.` or `..`, no `/`, `:` or white space. A
/// directory entry of sysfs that is not one is never written into a keyfile or passed
/// to a program.
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
}

/// The interface whose vmbus device has `guid`, looked up under `net_dir` (the real
/// one is [`SYS_CLASS_NET`]): `<net_dir>/<if>/device/device_id` holds the GUID as
/// `{...}` and a line break. Interfaces are tried in name order, so the answer does
/// not depend on the directory's order; entries without a readable `device_id`
/// (loopback, bridges, a NIC on another bus) are no match. `Err` only if `net_dir`
/// itself cannot be listed.
pub fn interface_for_guid(net_dir: &Path, guid: &NicGuid) -> io::Result<Option<String>> {
    let mut names: Vec<String> = std::fs::read_dir(net_dir)?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| valid_interface_name(name))
        .collect();
    names.sort();
    Ok(names.into_iter().find(|name| {
        std::fs::read(net_dir.join(name).join("device/device_id")).is_ok_and(|text| {
            let text = text.strip_suffix(b"\n").unwrap_or(&text);
            NicGuid::parse(text).as_ref() == Some(guid)
        })
    }))
}

/// The interface's Ethernet address from `<net_dir>/<if>/address` (lower case, colons,
/// a line break); `None` if it cannot be read or is not six bytes.
pub fn interface_mac(net_dir: &Path, interface: &str) -> Option<Mac> {
    let text = std::fs::read_to_string(net_dir.join(interface).join("address")).ok()?;
    Mac::parse(text.trim_end().as_bytes())
}

/// The keyfile's name in NetworkManager's directory: one per NIC, named by its GUID,
/// so the host's next SET_IP_INFO for the same NIC replaces it.
pub fn keyfile_name(guid: &NicGuid) -> String {
    format!("hyperv-{}.nmconnection", guid.bare())
}

/// The connection's UUID: the NIC's GUID, which has the UUID's form, so a later
/// SET_IP_INFO for the same NIC replaces the same connection and `nmcli` can name it.
pub fn connection_uuid(guid: &NicGuid) -> String {
    guid.bare()
}

fn family<'a>(items: &'a [IpAddr], v4: bool) -> impl Iterator<Item = &'a IpAddr> + 'a {
    items.iter().filter(move |a| a.is_ipv4() == v4)
}

/// One address family's section: its own addresses, method, first gateway and DNS
/// servers. IPv4: `auto` when the host asked for DHCP, `manual` with addresses,
/// otherwise `disabled`. IPv6: `manual` with addresses, otherwise `auto` (router
/// advertisements).
fn section(out: &mut String, cfg: &IpConfig, v4: bool) {
    let addrs: Vec<&IfAddr> = cfg
        .addrs
        .iter()
        .filter(|a| a.addr.is_ipv4() == v4)
        .collect();
    let method = match (v4, cfg.dhcp, addrs.is_empty()) {
        (true, true, _) => "auto",
        (true, false, false) => "manual",
        (true, false, true) => "disabled",
        (false, _, false) => "manual",
        (false, _, true) => "auto",
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "\n[{}]", if v4 { "ipv4" } else { "ipv6" });
    let _ = writeln!(out, "method={method}");
    for (n, a) in addrs.iter().enumerate() {
        let _ = writeln!(out, "address{}={}/{}", n + 1, a.addr, a.prefix);
    }
    if let Some(gateway) = family(&cfg.gateways, v4).next() {
        let _ = writeln!(out, "gateway={gateway}");
    }
    let dns: Vec<String> = family(&cfg.dns, v4).map(|a| format!("{a};")).collect();
    if !dns.is_empty() {
        let _ = writeln!(out, "dns={}", dns.concat());
    }
}

/// The keyfile for the host's configuration of the NIC `guid`, which is `interface`
/// with Ethernet address `mac` (when known; the connection is then bound to it too).
/// Every value is typed (addresses, prefixes, the GUID) or a checked interface name
/// ([`valid_interface_name`]): no host text reaches the file. Only the first gateway
/// of each family is kept: a keyfile holds one default gateway per family.
pub fn render_keyfile(interface: &str, mac: Option<Mac>, guid: &NicGuid, cfg: &IpConfig) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# Written by hv_kvp_daemon for the Hyper-V host (SET_IP_INFO); the host's next\n\
         # configuration of this network adapter replaces it.\n\
         [connection]\n\
         id=Hyper-V {interface}\n\
         uuid={}\n\
         type=ethernet\n\
         interface-name={interface}\n\
         autoconnect=true",
        connection_uuid(guid)
    );
    if let Some(mac) = mac {
        let _ = writeln!(out, "\n[ethernet]\nmac-address={mac}");
    }
    section(&mut out, cfg, true);
    section(&mut out, cfg, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvguest_core::kvp::ip::Adapter;
    use std::path::PathBuf;

    const GUID: &[u8] = b"{f8615163-df3e-46c5-913f-f2d2f965ed0e}";

    fn guid() -> NicGuid {
        NicGuid::parse(GUID).unwrap()
    }

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("hvguest-nic-{}-{name}", std::process::id()));
            // Test scratch space: it may not exist.
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }

        /// An interface directory as sysfs shows it; `device_id` and `address` as the
        /// kernel prints them when given.
        fn interface(&self, name: &str, device_id: Option<&str>, address: Option<&str>) {
            let dir = self.0.join(name);
            std::fs::create_dir_all(dir.join("device")).unwrap();
            if let Some(id) = device_id {
                std::fs::write(dir.join("device/device_id"), format!("{id}\n")).unwrap();
            }
            if let Some(a) = address {
                std::fs::write(dir.join("address"), format!("{a}\n")).unwrap();
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            // Test scratch space.
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_interface_is_found_by_its_devices_guid() {
        let net = Scratch::new("find");
        net.interface("lo", None, Some("00:00:00:00:00:00"));
        net.interface("eth0", Some("{0a1b2c3d-0000-4000-8000-000000000001}"), None);
        net.interface("eth1", Some("{f8615163-df3e-46c5-913f-f2d2f965ed0e}"), None);
        // A NIC on another bus shows no GUID; a file with garbage is no match.
        net.interface("enp0s1", Some("0x1af4"), None);
        assert_eq!(
            interface_for_guid(&net.0, &guid()).unwrap(),
            Some("eth1".to_string())
        );
        // The host may send it in upper case: sysfs's lower case still matches.
        let upper = NicGuid::parse(b"{F8615163-DF3E-46C5-913F-F2D2F965ED0E}").unwrap();
        assert_eq!(
            interface_for_guid(&net.0, &upper).unwrap(),
            Some("eth1".to_string())
        );
        let other = NicGuid::parse(b"{00000000-0000-4000-8000-000000000000}").unwrap();
        assert_eq!(interface_for_guid(&net.0, &other).unwrap(), None);
        assert!(interface_for_guid(&net.0.join("missing"), &guid()).is_err());
    }

    #[test]
    fn a_name_no_interface_could_have_is_never_a_match() {
        let net = Scratch::new("names");
        // Could only be a planted directory: its GUID matches, its name is unusable.
        net.interface(
            "eth 0",
            Some("{f8615163-df3e-46c5-913f-f2d2f965ed0e}"),
            None,
        );
        net.interface(
            "sixteen-bytes-xx",
            Some("{f8615163-df3e-46c5-913f-f2d2f965ed0e}"),
            None,
        );
        assert_eq!(interface_for_guid(&net.0, &guid()).unwrap(), None);
        for good in ["eth0", "ens3", "hn0", "a", "fifteen-bytes-x"] {
            assert!(valid_interface_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "eth0:1",
            "eth\n0",
            "-\t",
            "sixteen-bytes-xx",
        ] {
            assert!(!valid_interface_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_mac_is_read_from_sysfs() {
        let net = Scratch::new("mac");
        net.interface("eth0", None, Some("00:15:5d:01:02:03"));
        net.interface("ib0", None, Some("80:00:02:08:fe:80:00:00:00:00"));
        assert_eq!(
            interface_mac(&net.0, "eth0"),
            Some(Mac([0, 0x15, 0x5d, 1, 2, 3]))
        );
        assert_eq!(interface_mac(&net.0, "ib0"), None);
        assert_eq!(interface_mac(&net.0, "missing"), None);
    }

    fn config(dhcp: bool, addrs: &[(&str, u8)], gateways: &[&str], dns: &[&str]) -> IpConfig {
        IpConfig {
            adapter: Adapter::Guid(guid()),
            dhcp,
            addrs: addrs
                .iter()
                .map(|(a, p)| IfAddr {
                    addr: a.parse().unwrap(),
                    prefix: *p,
                })
                .collect(),
            gateways: gateways.iter().map(|g| g.parse().unwrap()).collect(),
            dns: dns.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    const HEAD: &str =
        "# Written by hv_kvp_daemon for the Hyper-V host (SET_IP_INFO); the host's next
# configuration of this network adapter replaces it.
[connection]
id=Hyper-V eth0
uuid=f8615163-df3e-46c5-913f-f2d2f965ed0e
type=ethernet
interface-name=eth0
autoconnect=true
";

    /// The SET_IP_INFO request of the Linux fact sheet's test vectors, static IPv4.
    #[test]
    fn static_ipv4_keyfile() {
        let cfg = config(false, &[("10.0.0.5", 24)], &["10.0.0.1"], &["10.0.0.2"]);
        let mac = Some(Mac([0, 0x15, 0x5d, 1, 2, 3]));
        assert_eq!(
            render_keyfile("eth0", mac, &guid(), &cfg),
            format!(
                "{HEAD}
[ethernet]
mac-address=00:15:5D:01:02:03

[ipv4]
method=manual
address1=10.0.0.5/24
gateway=10.0.0.1
dns=10.0.0.2;

[ipv6]
method=auto
"
            )
        );
    }

    #[test]
    fn each_family_gets_its_own_addresses_gateway_and_servers() {
        let cfg = config(
            false,
            &[
                ("2001:db8::5", 64),
                ("10.0.0.5", 24),
                ("10.0.1.5", 16),
                ("2001:db8:1::5", 48),
            ],
            &["2001:db8::1", "10.0.0.1", "10.0.0.254"],
            &["10.0.0.2", "2001:db8::53", "10.0.0.3"],
        );
        assert_eq!(
            render_keyfile("eth0", None, &guid(), &cfg),
            format!(
                "{HEAD}
[ipv4]
method=manual
address1=10.0.0.5/24
address2=10.0.1.5/16
gateway=10.0.0.1
dns=10.0.0.2;10.0.0.3;

[ipv6]
method=manual
address1=2001:db8::5/64
address2=2001:db8:1::5/48
gateway=2001:db8::1
dns=2001:db8::53;
"
            )
        );
    }

    #[test]
    fn dhcp_and_an_ipv6_only_configuration() {
        let dhcp = config(true, &[], &[], &[]);
        assert_eq!(
            render_keyfile("eth0", None, &guid(), &dhcp),
            format!("{HEAD}\n[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n")
        );
        let v6 = config(false, &[("2001:db8::5", 64)], &[], &[]);
        assert_eq!(
            render_keyfile("eth0", None, &guid(), &v6),
            format!(
                "{HEAD}\n[ipv4]\nmethod=disabled\n\n[ipv6]\nmethod=manual\naddress1=2001:db8::5/64\n"
            )
        );
    }

    #[test]
    fn names_come_from_the_guid() {
        assert_eq!(
            keyfile_name(&guid()),
            "hyperv-f8615163-df3e-46c5-913f-f2d2f965ed0e.nmconnection"
        );
        assert_eq!(
            connection_uuid(&guid()),
            "f8615163-df3e-46c5-913f-f2d2f965ed0e"
        );
    }
}
