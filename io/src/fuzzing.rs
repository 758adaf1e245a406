//! Fuzz target bodies for the parsers that live in this crate: `fuzz/` calls them under
//! libFuzzer (nightly), and `tests/fuzz_corpus.rs` runs them over the committed corpus on
//! stable. They are here rather than in `hvguest_sim::fuzz` because the parsers are
//! private to this crate and the simulator does not link it. Each body takes any bytes:
//! bad input must come back as an error or as nothing found, never as a panic.

use std::net::IpAddr;
use std::path::Path;

use hvguest_core::vss::app::AppMachine;
use hvguest_core::vss::machine::VssMachine;
use hvguest_core::Instant;

use crate::{kvp_config, mounts, sysinfo, vss_config};

/// A configuration file's refusal names one of its lines, and can be said in words.
fn names_a_line(data: &[u8], bad: &crate::conf::BadLine) {
    let lines = data.split(|b| *b == b'\n').count();
    assert!(
        (1..=lines).contains(&bad.line),
        "line {} of {lines}",
        bad.line
    );
    let _ = bad.to_string();
}

/// `vss.conf`: a refusal names a line of the file; an accepted configuration is one
/// both VSS machines start with (their constructors assert what they rely on).
pub fn vss_config(data: &[u8]) {
    match vss_config::parse(data) {
        Ok(cfg) => {
            let now = Instant::from_millis(0);
            let _ = VssMachine::new(cfg.vss, now);
            let _ = AppMachine::new(cfg.app, now);
        }
        Err(bad) => names_a_line(data, &bad),
    }
}

/// `kvp.conf`: a refusal names a line of the file; an accepted configuration keeps
/// `max_records` within what the daemon holds, its interface patterns match (or not)
/// without panicking, each matching itself when it has no special byte, and the auto
/// pool it gives has its ten keys.
pub fn kvp_config(data: &[u8]) {
    use hvguest_core::kvp::addresses::InterfaceAddr;
    use hvguest_core::kvp::auto::{AutoPool, SystemInfo};
    match kvp_config::parse(data) {
        Ok(cfg) => {
            assert!((1..=hvguest_core::limits::MAX_POOL_RECORDS).contains(&cfg.max_records));
            let mut info = SystemInfo::default();
            for glob in cfg.addresses.exclude() {
                let text = glob.as_str();
                if !text.contains(['*', '?', '[']) {
                    assert!(glob.matches(text), "{text}");
                }
                info.addrs.push(InterfaceAddr {
                    interface: text.to_string(),
                    addr: core::net::Ipv4Addr::new(10, 0, 0, 4).into(),
                });
            }
            let auto = AutoPool::new(&info, &cfg.addresses, &cfg.auto);
            assert!(auto.entry(9).is_some() && auto.entry(10).is_none());
        }
        Err(bad) => names_a_line(data, &bad),
    }
}

/// Both mount-table formats over the same text (the drivers read them with
/// `read_to_string`, so bytes that are not UTF-8 never reach the parsers). Every mount
/// found has non-empty fields, without white space unless an octal escape (`\040`) put
/// it there, as the fields were split on it.
pub fn mounts(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count();
    let proc_mounts = mounts::parse_proc_mounts(text);
    assert!(proc_mounts.len() <= lines);
    let emulated = match mounts::parse_emulated(Path::new("mounts"), text) {
        Ok(found) => found,
        Err(e) => {
            let _ = e.to_string();
            Vec::new()
        }
    };
    assert!(emulated.len() <= lines);
    let escapes = text.contains('\\');
    for m in proc_mounts.iter().chain(&emulated) {
        for field in [&m.fstype, &m.path, &m.source] {
            assert!(!field.is_empty(), "{m:?}");
            assert!(escapes || !field.contains(char::is_whitespace), "{m:?}");
        }
    }
}

/// `/etc/resolv.conf`: the name servers found are distinct.
pub fn resolv_conf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert_distinct(&sysinfo::parse_resolv_conf(text));
}

/// `/proc/net/route` and `/proc/net/ipv6_route` over the same text, for the interface
/// named on its second line (the first is the IPv4 table's header) and for `eth0`: the
/// gateways found are distinct and of the table's family.
pub fn proc_route(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let named = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    for name in [named, "eth0"] {
        let v4 = hvguest_io_linux::net::parse_proc_route(text, name);
        assert_distinct(&v4);
        assert!(v4.iter().all(IpAddr::is_ipv4), "{v4:?}");
        let v6 = hvguest_io_linux::net::parse_proc_ipv6_route(text, name);
        assert_distinct(&v6);
        assert!(v6.iter().all(IpAddr::is_ipv6), "{v6:?}");
    }
}

/// A FreeBSD `NET_RT_DUMP` buffer in this machine's word size, for the interface of its
/// first record and for interface 2: the gateways found are distinct.
pub fn route_dump(data: &[u8]) {
    let first = data
        .get(4..6)
        .map_or(0, |b| usize::from(u16::from_ne_bytes([b[0], b[1]])));
    for ifindex in [first, 2] {
        assert_distinct(&hvguest_io_freebsd::net::route_dump_gateways(data, ifindex));
    }
}

fn assert_distinct(addrs: &[IpAddr]) {
    for (i, a) in addrs.iter().enumerate() {
        assert!(!addrs[..i].contains(a), "{a} twice in {addrs:?}");
    }
}
