//! Recordings: every file in `scenarios/recorded/` replays with no difference; the
//! trace format round-trips; a changed reply is caught; bad files fail with their line.
//!
//! `cargo test -p hvguest-sim --test replay -- --ignored regenerate` rewrites the
//! committed traces by recording the simulated daemon (do it only on purpose: a trace
//! that stops replaying is a behaviour change to look at).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hvguest_core::kvp::addresses::{InterfaceAddr, NamedAdapter};
use hvguest_core::kvp::auto::SystemInfo;
use hvguest_core::kvp::ip::{AdapterInfo, IfAddr, Mac};
use hvguest_core::kvp::record::{encode_pool, Record};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{self, IpFields, PoolId, Request, Status};
use hvguest_core::limits::KVP_MSG_SIZE;
use hvguest_core::Instant;
use hvguest_sim::daemon::Latency;
use hvguest_sim::recording::{
    decode_bytes, encode_bytes, percent_decode, percent_encode, record, replay, DeviceMessage,
    Direction, ParseErrorKind, Recording, HEADER,
};
use proptest::prelude::*;

fn recorded_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/recorded")
}

fn recorded_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(recorded_dir())
        .expect("scenarios/recorded/ exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Recording {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Recording::parse_bytes(&bytes).unwrap_or_else(|e| panic!("{}:{e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// The committed traces and how they were made.

fn k(s: &str) -> Key {
    Key::new(s.as_bytes()).unwrap()
}
fn v(s: &str) -> Value {
    Value::new(s.as_bytes()).unwrap()
}
fn req(r: Request) -> Vec<u8> {
    wire::encode_request(&r).to_vec()
}
fn set(pool: PoolId, key: &str, value: &str) -> Vec<u8> {
    req(Request::Set {
        pool,
        key: k(key),
        value: v(value),
    })
}
fn get(pool: PoolId, key: &str) -> Vec<u8> {
    req(Request::Get { pool, key: k(key) })
}
fn del(pool: PoolId, key: &str) -> Vec<u8> {
    req(Request::Delete { pool, key: k(key) })
}
fn enumerate(pool: PoolId, index: u32) -> Vec<u8> {
    req(Request::Enumerate { pool, index })
}
fn get_ip(mac: &str) -> Vec<u8> {
    req(Request::GetIpInfo {
        adapter_id: mac.as_bytes().to_vec(),
        addr_family: 0,
    })
}

fn guest_info() -> SystemInfo {
    SystemInfo {
        fqdn: "freebsd-01.contoso.example".into(),
        os_name: "FreeBSD".into(),
        os_release: "14.1-RELEASE-p3".into(),
        machine: "amd64".into(),
        addrs: [
            ("lo0", "127.0.0.1"),
            ("lo0", "::1"),
            ("hn0", "10.0.0.4"),
            ("hn0", "fd00::4"),
        ]
        .iter()
        .map(|(interface, addr)| InterfaceAddr {
            interface: interface.to_string(),
            addr: addr.parse().unwrap(),
        })
        .collect(),
    }
}

fn pool_of(records: &[(&str, &str)]) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .map(|(a, b)| Record::new(k(a), v(b)))
        .collect();
    encode_pool(&records)
}

/// (a) Registration; SET, GET, ENUMERATE and DELETE on pools 0 and 1; the auto pool; the
/// host's pool 3 as it is found at start. The auto pool's IntegrationServicesVersion
/// carries the crate version: after a version bump, regenerate.
fn basic_ops() -> (Recording, Vec<Vec<u8>>) {
    use PoolId::*;
    let mut world = Recording {
        info: guest_info(),
        ..Recording::default()
    };
    world.pools[3] = pool_of(&[
        ("HostName", "HV-HOST-07"),
        ("HostingSystemEditionId", "8"),
        ("PhysicalHostName", "HV-HOST-07"),
        (
            "PhysicalHostNameFullyQualified",
            "hv-host-07.corp.example.com",
        ),
        ("VirtualMachineId", "3F2504E0-4F89-11D3-9A0C-0305E82C3301"),
        ("VirtualMachineName", "freebsd-01"),
    ]);
    let mut r = vec![
        set(External, "foo", "bar"),
        set(External, "color", "blue"),
        get(External, "foo"),
        set(External, "foo", "baz"),
        get(External, "foo"),
        enumerate(External, 0),
        enumerate(External, 1),
        enumerate(External, 2),
        del(External, "foo"),
        get(External, "foo"),
        del(External, "missing"),
        enumerate(External, 0),
        enumerate(External, 1),
        set(Guest, "CloudInitStatus", "done"),
        set(Guest, "key with spaces", "välue ü"),
        get(Guest, "CloudInitStatus"),
        enumerate(Guest, 0),
        enumerate(Guest, 1),
        enumerate(Guest, 2),
        del(Guest, "CloudInitStatus"),
        enumerate(Guest, 0),
        enumerate(Guest, 1),
    ];
    r.extend((0..=10).map(|i| enumerate(Auto, i)));
    r.extend([
        get(Auto, "OSName"),
        set(Auto, "OSName", "Linux"),
        del(Auto, "OSName"),
        get(AutoExternal, "VirtualMachineName"),
        get(AutoExternal, "NoSuchKey"),
    ]);
    r.extend((0..=6).map(|i| enumerate(AutoExternal, i)));
    (world, r)
}

/// (b) Requests the daemon must refuse, and GET/SET_IP_INFO.
fn malformed_and_ip_info() -> (Recording, Vec<Vec<u8>>) {
    let mut world = Recording {
        info: guest_info(),
        ..Recording::default()
    };
    world.adapters.insert(
        Mac([0x00, 0x15, 0x5d, 0x01, 0x02, 0x03]),
        vec![NamedAdapter {
            interface: "hn0".into(),
            info: AdapterInfo {
                addrs: vec![
                    IfAddr {
                        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4)),
                        prefix: 24,
                    },
                    IfAddr {
                        addr: IpAddr::V6("fd00::4".parse().unwrap()),
                        prefix: 64,
                    },
                ],
                gateways: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
                dns: vec![IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16))],
                dhcp: true,
            },
        }],
    );
    let mut unknown_op = vec![0u8; KVP_MSG_SIZE];
    unknown_op[0] = 7;
    let mut bad_pool = get(PoolId::External, "foo");
    bad_pool[1] = 9;
    let mut bad_pool_enum = enumerate(PoolId::External, 0);
    bad_pool_enum[1] = 200;
    let mut unterminated = get(PoolId::External, "x");
    unterminated[16..16 + 512].fill(b'a');
    let short = get(PoolId::External, "foo")[..100].to_vec();
    let ip = |adapter: &str, ip: &str, mask: &str| {
        req(Request::SetIpInfo(IpFields {
            adapter_id: adapter.as_bytes().to_vec(),
            addr_family: 1,
            dhcp_enabled: 0,
            ip_addr: ip.as_bytes().to_vec(),
            sub_net: mask.as_bytes().to_vec(),
            gate_way: b"10.0.0.1".to_vec(),
            dns_addr: b"168.63.129.16".to_vec(),
        }))
    };
    let r = vec![
        unknown_op,
        bad_pool,
        bad_pool_enum,
        unterminated,
        short,
        get_ip("00:15:5D:01:02:03"),
        get_ip("00:15:5d:01:02:03"),
        get_ip("00:15:5D:FF:FF:FF"),
        get_ip("not-a-mac"),
        ip("hn0", "10.0.0.5", "255.255.255.0"),
        ip("hn0", "10.0.0.5; rm -rf /", "255.255.255.0"),
        ip("hn0 && reboot", "10.0.0.5", "255.255.255.0"),
        ip("hn0", "10.0.0.5,10.0.0.6", "255.255.255.0"),
        // The daemon carries on serving.
        set(PoolId::External, "after", "garbage"),
        get(PoolId::External, "after"),
    ];
    (world, r)
}

/// (c) A 200-record pool 1, enumerated to its end.
fn enumerate_200() -> (Recording, Vec<Vec<u8>>) {
    let mut world = Recording {
        info: guest_info(),
        ..Recording::default()
    };
    let records: Vec<(String, String)> = (0..200)
        .map(|i| {
            (
                format!("cloud-init-key-{i:03}"),
                format!("value {i} {}", "x".repeat(i % 37)),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = records
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    world.pools[1] = pool_of(&refs);
    let r = (0..=200).map(|i| enumerate(PoolId::Guest, i)).collect();
    (world, r)
}

type Maker = fn() -> (Recording, Vec<Vec<u8>>);
const TRACES: [(&str, Maker); 3] = [
    ("basic_ops.kvprec", basic_ops),
    ("malformed_and_ip_info.kvprec", malformed_and_ip_info),
    ("enumerate_200.kvprec", enumerate_200),
];

fn make(maker: Maker) -> Recording {
    let (world, requests) = maker();
    record(
        &world,
        &requests,
        Instant::from_millis(1000),
        Duration::from_millis(10),
        Latency::default(),
    )
}

#[test]
#[ignore = "rewrites scenarios/recorded/; run on purpose"]
fn regenerate() {
    std::fs::create_dir_all(recorded_dir()).unwrap();
    for (name, maker) in TRACES {
        let trace = make(maker);
        let text = trace.to_annotated_text();
        assert_eq!(Recording::parse(&text).unwrap(), trace);
        std::fs::write(recorded_dir().join(name), text).unwrap();
    }
}

#[test]
fn every_recorded_trace_replays_without_difference() {
    let files = recorded_files();
    assert!(
        files.len() >= 3,
        "expected at least 3 traces in scenarios/recorded/, found {}",
        files.len()
    );
    for path in files {
        let trace = load(&path);
        let report = replay(&trace);
        assert!(
            report.is_clean() && report.registration_matched,
            "{}:\n{report:#}",
            path.display()
        );
        assert!(!report.requests.is_empty(), "{}", path.display());
        assert!(report.requests.iter().all(|r| r.matched));
    }
}

/// The committed files start from the generators' worlds and carry their requests (the
/// replies and times are the recording's; replay checks the replies).
#[test]
fn committed_traces_come_from_the_generators() {
    for (name, maker) in TRACES {
        let committed = load(&recorded_dir().join(name));
        let (world, requests) = maker();
        assert_eq!(
            (&committed.info, &committed.adapters, &committed.pools),
            (&world.info, &world.adapters, &world.pools),
            "{name}: run the ignored `regenerate` test"
        );
        let reads: Vec<&Vec<u8>> = committed
            .messages
            .iter()
            .filter(|m| m.dir == Direction::In)
            .map(|m| &m.bytes)
            .collect();
        assert_eq!(reads, requests.iter().collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn recorded_traces_cover_what_they_claim() {
    let basic = load(&recorded_dir().join("basic_ops.kvprec"));
    assert_eq!(basic.messages[0].dir, Direction::Out);
    assert_eq!(basic.messages[0].bytes, wire::registration().to_vec());
    assert!(!basic.pools[3].is_empty());

    let malformed = load(&recorded_dir().join("malformed_and_ip_info.kvprec"));
    let statuses: Vec<u32> = malformed
        .messages
        .iter()
        .filter(|m| m.dir == Direction::Out)
        .skip(1)
        .map(|m| u32::from_le_bytes(m.bytes[..4].try_into().unwrap()))
        .collect();
    assert_eq!(statuses[0], Status::NOT_SUPPORTED.0, "unknown op 7");
    assert_eq!(statuses[1], Status::E_FAIL.0, "pool 9");
    assert!(!malformed.adapters.is_empty());

    let big = load(&recorded_dir().join("enumerate_200.kvprec"));
    let report = replay(&big);
    assert_eq!(report.requests.len(), 201);
    let last = big.messages.last().unwrap();
    assert_eq!(last.bytes[..4], Status::S_CONT.0.to_le_bytes());
}

// ---------------------------------------------------------------------------------------
// Replay finds what changed.

fn nth_reply(trace: &Recording, request: usize) -> usize {
    let mut seen = 0;
    let mut after = false;
    for (i, m) in trace.messages.iter().enumerate() {
        match m.dir {
            Direction::In => {
                after = seen == request;
                seen += 1;
            }
            Direction::Out if after => return i,
            Direction::Out => {}
        }
    }
    panic!("no reply to request {request}");
}

#[test]
fn a_flipped_status_byte_is_exactly_one_difference() {
    let mut trace = load(&recorded_dir().join("basic_ops.kvprec"));
    // Request #2 is GET external "foo", answered OK "bar".
    let i = nth_reply(&trace, 2);
    trace.messages[i].bytes[0] ^= 0x03;
    let report = replay(&trace);
    assert!(!report.is_clean());
    assert_eq!(report.differences.len(), 1, "{report:#}");
    assert!(report.missing.is_empty() && report.extra.is_empty());
    let d = &report.differences[0];
    assert_eq!(d.request, Some(2));
    assert_eq!(d.op, Some(wire::Op::Get));
    assert_eq!(d.offset, 0);
    assert!(d.request_text.starts_with("GET external"), "{d:?}");
    assert!(d.recorded.contains("0x00000003"), "{d:?}");
    assert_eq!(d.replayed, "OK \"bar\"");
    assert_eq!(report.requests.iter().filter(|r| !r.matched).count(), 1);
    assert!(!report.requests[2].matched);
    let text = report.to_string();
    assert!(text.contains("request #2"), "{text}");
}

#[test]
fn a_changed_value_names_its_byte() {
    let mut trace = load(&recorded_dir().join("basic_ops.kvprec"));
    let i = nth_reply(&trace, 4); // GET external "foo" = "baz"
    trace.messages[i].bytes[530] = b'r';
    let report = replay(&trace);
    assert_eq!(report.differences.len(), 1, "{report:#}");
    assert_eq!(report.differences[0].offset, 530);
    assert_eq!(report.differences[0].recorded, "OK \"bar\"");
    assert_eq!(report.differences[0].replayed, "OK \"baz\"");
}

#[test]
fn missing_and_extra_writes_are_reported() {
    let trace = load(&recorded_dir().join("basic_ops.kvprec"));

    let mut dropped = trace.clone();
    dropped.messages.remove(nth_reply(&trace, 5));
    let report = replay(&dropped);
    assert!(report.differences.is_empty(), "{report:#}");
    assert!(report.missing.is_empty());
    assert_eq!(report.extra.len(), 1);
    assert_eq!(report.extra[0].request, Some(5));
    assert!(!report.requests[5].matched);

    let mut doubled = trace.clone();
    let i = nth_reply(&trace, 5);
    doubled.messages.insert(i + 1, trace.messages[i].clone());
    let report = replay(&doubled);
    assert_eq!(report.missing.len(), 1, "{report:#}");
    assert_eq!(report.missing[0].request, Some(5));
    assert!(report.extra.is_empty() && report.differences.is_empty());

    let mut no_registration = trace.clone();
    no_registration.messages.remove(0);
    let report = replay(&no_registration);
    assert!(!report.registration_matched);
    assert_eq!(report.extra.len(), 1);
    assert_eq!(report.extra[0].request, None);
    assert_eq!(report.extra[0].summary, "registration");
}

#[test]
fn replay_does_not_depend_on_recorded_latency() {
    // The same requests recorded with slow effects and with none: same replies.
    let (world, requests) = basic_ops();
    let slow = Latency {
        io: Duration::from_millis(3),
        fsync: Duration::from_millis(40),
        system: Duration::from_millis(100),
        scripted: Default::default(),
    };
    let trace = record(
        &world,
        &requests,
        Instant::from_millis(5),
        Duration::from_millis(1),
        slow,
    );
    let report = replay(&trace);
    assert!(report.is_clean(), "{report:#}");
}

#[test]
fn an_empty_trace_replays_to_an_extra_registration() {
    let report = replay(&Recording::default());
    assert!(report.requests.is_empty());
    assert_eq!(report.extra.len(), 1);
    assert_eq!(report.extra[0].summary, "registration");
}

// ---------------------------------------------------------------------------------------
// The file format.

#[test]
fn registration_encodes_as_in_the_docs() {
    assert_eq!(encode_bytes(&wire::registration()[..]), "04~7429");
    assert_eq!(
        decode_bytes("04~7429").unwrap(),
        wire::registration().to_vec()
    );
    assert_eq!(decode_bytes(" 0 4\n~7429\t").unwrap().len(), KVP_MSG_SIZE);
    // Whitespace ends a count; a hex letter or `~` does too.
    assert_eq!(decode_bytes("~74 29").unwrap().len(), 75);
    assert_eq!(decode_bytes("~3ab~1~2").unwrap(), [0, 0, 0, 0xab, 0, 0, 0]);
    assert_eq!(encode_bytes(&[0x6b, 0, 0, 0, 0x76]), "6b~3 76");
    assert_eq!(decode_bytes("AbcD~0").unwrap(), vec![0xab, 0xcd]);
    assert_eq!(encode_bytes(&[0, 0, 1, 0, 0, 0]), "000001~3");
}

#[test]
fn percent_encoding() {
    assert_eq!(percent_encode("a b=c%d\tü"), "a%20b%3Dc%25d%09%C3%BC");
    assert_eq!(
        percent_decode("a%20b%3dc%25d%09%C3%BC").unwrap(),
        "a b=c%d\tü"
    );
    assert!(percent_decode("%4").is_err());
    assert!(percent_decode("%zz").is_err());
    assert!(percent_decode("%FF").is_err());
}

#[test]
fn a_hand_written_trace_parses() {
    let text = "# hvguest kvp recording v1\n\
        # a comment\n\
        \n\
        sysinfo fqdn=my%20host os_name=FreeBSD addrs=10.0.0.4%hn0,fe80::1%lo%2C0 ipv4=10.0.0.5 ipv6=\n\
        adapter 00:15:5d:01:02:03 name=vlan10 dhcp=1\n\
        adapter 00:15:5d:01:02:03 name=hn0 addrs=10.0.0.4/24,fd00::4/64 dhcp=1\n\
        pool 1 6b~511 76~2047\n\
        pool 1 61~2559\n\
        5 out 04~7429\n\
        7 in 03 01 ~7428\n";
    let t = Recording::parse(text).unwrap();
    assert_eq!(t.info.fqdn, "my host");
    assert_eq!(t.info.os_release, "");
    let listed: Vec<(String, String)> = t
        .info
        .addrs
        .iter()
        .map(|a| (a.interface.clone(), a.addr.to_string()))
        .collect();
    let want = [("hn0", "10.0.0.4"), ("lo,0", "fe80::1"), ("", "10.0.0.5")];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(i, a)| (i.to_string(), a.to_string()))
        .collect();
    assert_eq!(listed, want, "addrs= first, then the older ipv4= and ipv6=");
    let holders = &t.adapters[&Mac([0, 0x15, 0x5d, 1, 2, 3])];
    assert_eq!(
        holders[0].interface, "vlan10",
        "the file's order is the kernel's"
    );
    let a = &holders[1].info;
    assert!(a.dhcp && a.addrs.len() == 2 && a.gateways.is_empty());
    assert_eq!(t.pools[1].len(), 2 * 2560);
    assert_eq!(t.messages.len(), 2);
    assert_eq!(t.messages[1].at, Instant(7));
    assert_eq!(t.messages[1].bytes[..2], [3, 1]);
    // The writer's form parses back to the same.
    assert_eq!(Recording::parse(&t.to_text()).unwrap(), t);
    assert_eq!(Recording::parse(&t.to_annotated_text()).unwrap(), t);
}

fn error_of(text: &str) -> (usize, ParseErrorKind) {
    let e = Recording::parse(text).expect_err(text);
    (e.line, e.kind)
}

#[test]
fn parse_errors_carry_their_line() {
    let h = HEADER;
    assert_eq!(error_of("").0, 1);
    assert_eq!(error_of("").1, ParseErrorKind::MissingHeader);
    assert_eq!(
        error_of("# hvguest kvp trace v2\n").1,
        ParseErrorKind::MissingHeader
    );
    let cases: &[(&str, usize)] = &[
        ("\n\n5 out 04~7429\n6 in 0g\n", 4),
        ("\n5 out 0\n", 2),
        ("\n5 out ~\n", 2),
        ("\n5 out ~99999999999999999999999999\n", 2),
        ("\n# ok\n5 sideways 00\n", 3),
        ("\n5 out 00\n4 out 00\n", 3),
        ("\n5x out 00\n", 2),
        ("\npool 5 00\n", 2),
        ("\npool -1 00\n", 2),
        ("\nadapter 00:15:5D:01:02 dhcp=1\n", 2),
        ("\nadapter 00:15:5D:01:02:03 dhcp=2\n", 2),
        ("\nadapter 00:15:5D:01:02:03 addrs=10.0.0.4/33\n", 2),
        ("\nadapter 00:15:5D:01:02:03 addrs=10.0.0.4\n", 2),
        (
            "\nadapter 00:15:5D:01:02:03\nadapter 00:15:5d:01:02:03\n",
            3,
        ),
        ("\nsysinfo\nsysinfo\n", 3),
        ("\nsysinfo fqdn=a fqdn=b\n", 2),
        ("\nsysinfo colour=blue\n", 2),
        ("\nsysinfo fqdn\n", 2),
        ("\nsysinfo fqdn=%G0\n", 2),
        ("\nsysinfo ipv4=10.0.0.300\n", 2),
        ("\nsysinfo ipv6=10.0.0.3\n", 2),
        ("\n\n\nfrobnicate\n", 4),
    ];
    for (body, line) in cases {
        let text = format!("{h}{body}");
        let (got, kind) = error_of(&text);
        assert_eq!(got, *line, "{text:?}: {kind}");
        // The message names the line.
        let shown = Recording::parse(&text).unwrap_err().to_string();
        assert!(shown.starts_with(&format!("line {line}: ")), "{shown}");
    }
    assert!(matches!(
        error_of(&format!("{h}\n1 out ~99999999\n")).1,
        ParseErrorKind::TooLarge { .. }
    ));
    assert!(matches!(
        error_of(&format!("{h}\n1 out 00\n0 in 00\n")).1,
        ParseErrorKind::TimeWentBack {
            previous: 1,
            now: 0
        }
    ));
}

#[test]
fn non_utf8_is_reported_at_its_line() {
    let mut bytes = format!("{HEADER}\n5 out 04~7429\n# ").into_bytes();
    bytes.extend([0xff, b'\n']);
    let e = Recording::parse_bytes(&bytes).unwrap_err();
    assert_eq!((e.line, e.kind), (3, ParseErrorKind::NotUtf8));
    // An earlier error wins.
    let mut bytes = format!("{HEADER}\nnope\n").into_bytes();
    bytes.extend([0xff, b'\n']);
    assert_eq!(Recording::parse_bytes(&bytes).unwrap_err().line, 2);
    assert_eq!(Recording::parse_bytes(&[0xff]).unwrap_err().line, 1);
}

// ---------------------------------------------------------------------------------------
// Properties.

/// Bytes made of random stretches and zero runs, some long.
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (0usize..8).prop_map(|n| vec![0; n]),
        (0usize..9000).prop_map(|n| vec![0; n]),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|ps| ps.concat())
}

fn system_info() -> impl Strategy<Value = SystemInfo> {
    (
        any::<String>(),
        "[ -~]{0,12}",
        any::<String>(),
        "[a-z0-9=% ]{0,8}",
        prop::collection::vec((any::<String>(), ip()), 0..4),
    )
        .prop_map(|(fqdn, os_name, os_release, machine, addrs)| SystemInfo {
            fqdn,
            os_name,
            os_release,
            machine,
            addrs: addrs
                .into_iter()
                .map(|(interface, addr)| InterfaceAddr { interface, addr })
                .collect(),
        })
}

fn if_addr() -> impl Strategy<Value = IfAddr> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, prefix)| IfAddr {
            addr: IpAddr::V4(a.into()),
            prefix
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(a, prefix)| IfAddr {
            addr: IpAddr::V6(a.into()),
            prefix
        }),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
        any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
    ]
}

/// The holders of one MAC: distinct names (a second line for a name is refused).
fn holders() -> impl Strategy<Value = Vec<NamedAdapter>> {
    prop::collection::btree_map(any::<String>(), adapter(), 1..3).prop_map(|m| {
        m.into_iter()
            .map(|(interface, info)| NamedAdapter { interface, info })
            .collect()
    })
}

fn adapter() -> impl Strategy<Value = AdapterInfo> {
    (
        prop::collection::vec(if_addr(), 0..3),
        prop::collection::vec(ip(), 0..3),
        prop::collection::vec(ip(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(addrs, gateways, dns, dhcp)| AdapterInfo {
            addrs,
            gateways,
            dns,
            dhcp,
        })
}

fn trace() -> impl Strategy<Value = Recording> {
    (
        system_info(),
        prop::collection::btree_map(any::<[u8; 6]>().prop_map(Mac), holders(), 0..3),
        prop::collection::vec(message_bytes(), 5),
        prop::collection::vec((0u64..1_000_000, any::<bool>(), message_bytes()), 0..12),
    )
        .prop_map(|(info, adapters, pools, steps)| {
            let mut at = 0u64;
            let messages = steps
                .into_iter()
                .map(|(dt, inward, bytes)| {
                    at += dt;
                    DeviceMessage {
                        at: Instant(at),
                        dir: if inward {
                            Direction::In
                        } else {
                            Direction::Out
                        },
                        bytes,
                    }
                })
                .collect();
            Recording {
                layout: Default::default(),
                info,
                adapters,
                pools: pools.try_into().unwrap(),
                messages,
                info_changes: Vec::new(),
            }
        })
}

/// The longest run of zero bytes written as hex pairs (`~N` runs and spaces are not
/// hex). Counted by byte, not by character: `30000001` is 0x30 0x00 0x00 0x01, two
/// zero bytes, though its text holds six zero digits in a row.
fn longest_hex_zero_run(text: &str) -> usize {
    let b = text.as_bytes();
    let (mut i, mut run, mut longest) = (0, 0, 0);
    while i < b.len() {
        if b[i] == b'~' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            run = 0;
        } else if b[i].is_ascii_hexdigit() && i + 1 < b.len() {
            run = if &b[i..i + 2] == b"00" { run + 1 } else { 0 };
            longest = longest.max(run);
            i += 2;
        } else {
            i += 1;
        }
    }
    longest
}

#[test]
fn zero_runs_are_counted_by_byte() {
    assert_eq!(longest_hex_zero_run("30000001"), 2);
    assert_eq!(longest_hex_zero_run("3000000001"), 3);
    assert_eq!(longest_hex_zero_run("00~5 00"), 1);
}

proptest! {
    #[test]
    fn message_bytes_round_trip(bytes in message_bytes()) {
        let text = encode_bytes(&bytes);
        // Three or more zero bytes are always written `~N`.
        prop_assert!(longest_hex_zero_run(&text) < 3, "a zero run left in hex: {text}");
        prop_assert_eq!(decode_bytes(&text).unwrap(), bytes);
    }

    #[test]
    fn percent_encoding_round_trips(s in any::<String>()) {
        let e = percent_encode(&s);
        prop_assert!(!e.contains([' ', '=', '\n', '\t']));
        prop_assert!(e.is_ascii());
        prop_assert_eq!(percent_decode(&e).unwrap(), s);
    }

    #[test]
    fn traces_round_trip(t in trace()) {
        prop_assert_eq!(&Recording::parse(&t.to_text()).unwrap(), &t);
        prop_assert_eq!(&Recording::parse(&t.to_annotated_text()).unwrap(), &t);
    }

    #[test]
    fn parsing_never_panics(lines in prop::collection::vec(
        prop_oneof![
            "[0-9]{1,3} (in|out) [0-9a-f~ ]{0,20}",
            "pool [0-9] [0-9a-fA-F~]{0,12}",
            "sysinfo( [a-z0-9_]{1,10}=[ -~]{0,10}){0,3}",
            "adapter [0-9A-F:]{0,20}( [a-z]{1,8}=[0-9a-f:./,]{0,20}){0,3}",
            any::<String>(),
        ],
        0..8,
    ), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let text = std::iter::once(HEADER.to_string()).chain(lines).collect::<Vec<_>>().join("\n");
        let _ = Recording::parse(&text);
        let _ = Recording::parse_bytes(&bytes);
        let mut with_header = HEADER.as_bytes().to_vec();
        with_header.push(b'\n');
        with_header.extend(&bytes);
        let _ = Recording::parse_bytes(&with_header);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever the host asks, a recording (with the simulator's latencies) replays
    /// cleanly (with none): replies do not depend on timing inside the deadline.
    #[test]
    fn recordings_of_random_requests_replay_cleanly(
        seed in prop::collection::vec(any::<u8>(), 0..3000),
        garbage in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..3),
    ) {
        use arbitrary::{Arbitrary, Unstructured};
        let mut u = Unstructured::new(&seed);
        let mut requests: Vec<Vec<u8>> = (0..24)
            .filter_map(|_| Request::arbitrary(&mut u).ok())
            .map(req)
            .collect();
        for (i, g) in garbage.into_iter().enumerate() {
            let mut m = vec![0u8; KVP_MSG_SIZE];
            m[..g.len()].copy_from_slice(&g);
            requests.insert(i * 3 % (requests.len() + 1), m);
        }
        let (mut world, _) = malformed_and_ip_info();
        world.pools[0] = pool_of(&[("foo", "bar"), ("a", "b")]);
        let trace = record(
            &world,
            &requests,
            Instant::from_millis(3),
            Duration::from_millis(7),
            Latency::default(),
        );
        prop_assert_eq!(&Recording::parse(&trace.to_text()).unwrap(), &trace);
        let report = replay(&trace);
        prop_assert!(report.is_clean(), "{:#}", report);
        prop_assert_eq!(report.requests.len(), requests.len());
    }
}

// ---------------------------------------------------------------------------------------
// The binary.

fn replay_bin(args: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .output()
        .expect("run replay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_exits_by_outcome() {
    let files = recorded_files();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, stdout, stderr) = replay_bin(&refs);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("no differences"), "{stdout}");

    let dir = std::env::temp_dir().join(format!("hvguest-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut trace = load(&recorded_dir().join("basic_ops.kvprec"));
    let i = nth_reply(&trace, 2);
    trace.messages[i].bytes[0] ^= 1;
    let altered = dir.join("altered.kvprec");
    std::fs::write(&altered, trace.to_text()).unwrap();
    let (code, stdout, _) = replay_bin(&[&altered]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("request #2"), "{stdout}");

    let broken = dir.join("broken.kvprec");
    std::fs::write(&broken, format!("{HEADER}\n\n5 out 0z\n")).unwrap();
    let (code, _, stderr) = replay_bin(&[&altered, &broken]);
    assert_eq!(code, 2);
    assert!(stderr.contains("broken.kvprec:3: "), "{stderr}");
    let (code, _, stderr) = replay_bin(&[&dir.join("absent.kvprec")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("absent.kvprec"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host-name refresh recorded mid-session is applied at its time on replay: the auto
/// pool's first entry changes with it.
#[test]
fn a_recorded_sysinfo_change_is_replayed_at_its_time() {
    use hvguest_core::kvp::auto::{AutoPool, SystemInfo};
    use hvguest_core::kvp::recording::{DeviceMessage, Direction, Recording};
    use hvguest_core::kvp::wire::{
        encode_reply, encode_request, registration, PoolId, Reply, Request,
    };
    use hvguest_core::Instant;

    let before = SystemInfo {
        fqdn: "vm".into(),
        os_name: "FreeBSD".into(),
        ..SystemInfo::default()
    };
    let after = SystemInfo {
        fqdn: "vm.example.net".into(),
        ..before.clone()
    };
    let fqdn_reply = |info: &SystemInfo| {
        let auto = AutoPool::new(info, &Default::default(), &Default::default());
        let (k, v) = auto.entry(0).unwrap();
        encode_reply(&Reply::Entry {
            key: k.clone(),
            value: v.clone(),
        })
        .to_vec()
    };
    let enum0 = encode_request(&Request::Enumerate {
        pool: PoolId::Auto,
        index: 0,
    })
    .to_vec();
    let msg = |ms: u64, dir: Direction, bytes: Vec<u8>| DeviceMessage {
        at: Instant::from_millis(ms),
        dir,
        bytes,
    };
    let mut trace = Recording {
        info: before.clone(),
        ..Recording::default()
    };
    trace.messages = vec![
        msg(0, Direction::Out, registration().to_vec()),
        msg(1000, Direction::In, enum0.clone()),
        msg(1000, Direction::Out, fqdn_reply(&before)),
        msg(3000, Direction::In, enum0),
        msg(3000, Direction::Out, fqdn_reply(&after)),
    ];
    trace.info_changes = vec![(Instant::from_millis(2000), after)];
    // Through the file format and back, then replayed: no difference.
    let parsed = Recording::parse(&trace.to_text()).unwrap();
    assert_eq!(parsed.info_changes, trace.info_changes);
    let report = hvguest_sim::recording::replay(&parsed);
    assert!(report.is_clean(), "{report}");
    // Without the change, the second answer differs.
    let mut without = parsed;
    without.info_changes.clear();
    assert!(!hvguest_sim::recording::replay(&without).is_clean());
}
