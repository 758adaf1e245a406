//! The KVP machine driven through the simulated process: every op, crashes at every
//! persistence step, outside writers, a frozen file system, injected I/O errors.

use std::time::Duration;

use hvguest_core::kvp::addresses::{AddressOrder, Glob, NamedAdapter};
use hvguest_core::kvp::effect::{FileId, IoError};
use hvguest_core::kvp::ip::{AdapterInfo, IfAddr, Mac};
use hvguest_core::kvp::machine::KvpConfig;
use hvguest_core::kvp::record::{decode_pool, encode_pool, PoolIssue, Record};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{IpFields, PoolId, Reply, Request, Status};
use hvguest_sim::daemon::{Latency, Observed};
use hvguest_sim::fs::{FsCall, SimFs};
use hvguest_sim::harness::KvpHarness;
use hvguest_sim::prng::Prng;

fn k(s: &str) -> Key {
    Key::new(s.as_bytes()).unwrap()
}
fn v(s: &str) -> Value {
    Value::new(s.as_bytes()).unwrap()
}
fn rec(a: &str, b: &str) -> Record {
    Record::new(k(a), v(b))
}
fn path(p: PoolId) -> String {
    FileId::pool(p).file_name()
}
fn set(p: PoolId, a: &str, b: &str) -> Request {
    Request::Set {
        pool: p,
        key: k(a),
        value: v(b),
    }
}
fn get(p: PoolId, a: &str) -> Request {
    Request::Get { pool: p, key: k(a) }
}
fn del(p: PoolId, a: &str) -> Request {
    Request::Delete { pool: p, key: k(a) }
}
fn ok() -> Option<Reply> {
    Some(Reply::Status(Status::OK))
}
fn status(s: Status) -> Option<Reply> {
    Some(Reply::Status(s))
}

/// Records in the file, asserting it is whole, clean records.
fn file_records(fs: &SimFs, p: PoolId) -> Vec<Record> {
    let d = decode_pool(fs.contents(&path(p)));
    assert_eq!(d.partial_tail, 0, "pool file is not whole records");
    assert!(
        d.issues
            .iter()
            .all(|i| !matches!(i, PoolIssue::Flawed { .. })),
        "torn or unpadded record: {:?}",
        d.issues
    );
    d.records
}

fn fs_with(p: PoolId, records: &[Record]) -> SimFs {
    let mut fs = SimFs::new();
    fs.write(&path(p), 0, &encode_pool(records)).unwrap();
    fs.sync_all();
    fs
}

fn enumerate(h: &mut KvpHarness, p: PoolId) -> Vec<Record> {
    let mut out = Vec::new();
    for index in 0.. {
        match h.request(&Request::Enumerate { pool: p, index }) {
            Some(Reply::Entry { key, value }) => out.push(Record::new(key, value)),
            Some(Reply::Status(Status::S_CONT)) => break,
            other => panic!("enumerate {index}: {other:?}"),
        }
    }
    out
}

#[test]
fn registers_after_recovery_and_serves_every_op_on_every_pool() {
    let mut h = KvpHarness::new(SimFs::new());
    assert!(h.daemon.machine.registered());
    let first_write = h.log.iter().find_map(|o| match o {
        Observed::DeviceWrite(b) => Some(b.clone()),
        _ => None,
    });
    assert_eq!(
        first_write.as_deref().map(|b| &b[..4]),
        Some(&[4u8, 0, 0, 0][..])
    );
    for p in PoolId::FILE_BACKED {
        assert_eq!(h.request(&get(p, "a")), status(Status::S_CONT));
        assert_eq!(h.request(&set(p, "a", "1")), ok());
        assert_eq!(h.request(&set(p, "b", "2")), ok());
        assert_eq!(h.request(&set(p, "a", "3")), ok());
        assert_eq!(h.request(&get(p, "a")), Some(Reply::Value(v("3"))));
        assert_eq!(enumerate(&mut h, p), vec![rec("a", "3"), rec("b", "2")]);
        assert_eq!(h.request(&del(p, "a")), ok());
        assert_eq!(h.request(&del(p, "a")), status(Status::S_CONT));
        assert_eq!(file_records(&h.fs, p), vec![rec("b", "2")]);
        assert!(h.fs.contents(&FileId::journal(p).file_name()).is_empty());
    }
    // The auto pool: generated, read-only.
    assert_eq!(
        h.request(&set(PoolId::Auto, "x", "y")),
        status(Status::S_CONT)
    );
    assert_eq!(
        h.request(&del(PoolId::Auto, "OSName")),
        status(Status::S_CONT)
    );
    assert_eq!(
        h.request(&get(PoolId::Auto, "OSName")),
        Some(Reply::Value(v("FreeBSD")))
    );
    let auto = enumerate(&mut h, PoolId::Auto);
    assert_eq!(auto.len(), 10);
    assert_eq!(
        auto[0],
        rec("FullyQualifiedDomainName", "guest.example.net")
    );
    assert!(!h.fs.exists(&path(PoolId::Auto)));
}

#[test]
fn malformed_requests_get_a_status_and_the_daemon_keeps_serving() {
    let mut h = KvpHarness::new(SimFs::new());
    let mut unknown = vec![0u8; 7430];
    unknown[0] = 7;
    let w = h.send_raw(unknown);
    assert_eq!(&w[0][..4], &0x8007_0032u32.to_le_bytes());
    let mut bad_pool = vec![0u8; 7430];
    bad_pool[1] = 9;
    assert_eq!(&h.send_raw(bad_pool)[0][..4], &0x8000_4005u32.to_le_bytes());
    let mut unterminated = vec![b'x'; 7430];
    unterminated[0] = 0;
    unterminated[1] = 1;
    assert_eq!(
        &h.send_raw(unterminated)[0][..4],
        &0x8007_0057u32.to_le_bytes()
    );
    assert_eq!(
        &h.send_raw(vec![1, 2, 3])[0][..4],
        &0x8000_4005u32.to_le_bytes()
    );
    assert_eq!(h.request(&set(PoolId::Guest, "still", "here")), ok());
}

#[test]
fn outside_appends_are_noticed_by_stat_and_served() {
    let mut h = KvpHarness::new(fs_with(PoolId::Guest, &[rec("a", "1")]));
    assert_eq!(
        h.request(&get(PoolId::Guest, "cloud")),
        status(Status::S_CONT)
    );
    h.fs.append(&path(PoolId::Guest), &rec("cloud", "init").encode())
        .unwrap();
    assert_eq!(
        h.request(&get(PoolId::Guest, "cloud")),
        Some(Reply::Value(v("init")))
    );
    // And truncation behind our back.
    h.fs.set_len(&path(PoolId::Guest), 0).unwrap();
    assert_eq!(enumerate(&mut h, PoolId::Guest), vec![]);
    assert_eq!(h.request(&set(PoolId::Guest, "b", "2")), ok());
    assert_eq!(file_records(&h.fs, PoolId::Guest), vec![rec("b", "2")]);
}

/// The three mutation shapes, each from the same starting pool.
fn mutations() -> Vec<(&'static str, Request, Vec<Record>)> {
    vec![
        (
            "update",
            set(PoolId::Guest, "b", "B"),
            vec![rec("a", "1"), rec("b", "B"), rec("c", "3")],
        ),
        (
            "append",
            set(PoolId::Guest, "d", "4"),
            vec![rec("a", "1"), rec("b", "2"), rec("c", "3"), rec("d", "4")],
        ),
        (
            "delete-middle",
            del(PoolId::Guest, "a"),
            vec![rec("c", "3"), rec("b", "2")],
        ),
        (
            "delete-last",
            del(PoolId::Guest, "c"),
            vec![rec("a", "1"), rec("b", "2")],
        ),
    ]
}

fn start_pool() -> Vec<Record> {
    vec![rec("a", "1"), rec("b", "2"), rec("c", "3")]
}

/// Counts the effects a request needs when nothing goes wrong.
fn effects_needed(req: &Request) -> u64 {
    let mut h = KvpHarness::new(fs_with(PoolId::Guest, &start_pool()));
    let before = h
        .log
        .iter()
        .filter(|o| matches!(o, Observed::Effect(..)))
        .count();
    assert_eq!(h.request(req), ok());
    h.settle();
    (h.log
        .iter()
        .filter(|o| matches!(o, Observed::Effect(..)))
        .count()
        - before) as u64
}

#[test]
fn a_crash_at_any_step_keeps_acknowledged_changes_and_never_tears_a_record() {
    for (name, req, after) in mutations() {
        let total = effects_needed(&req);
        assert!(total >= 8, "{name}: {total} effects");
        for budget in 0..=total {
            for seed in 0..12 {
                let mut h = KvpHarness::new(fs_with(PoolId::Guest, &start_pool()));
                h.daemon.effect_budget = Some(budget);
                let reply = h.request(&req);
                let acked = reply == ok();
                assert!(
                    acked || reply == status(Status::E_FAIL),
                    "{name}@{budget}: {reply:?}"
                );
                assert_eq!(
                    acked,
                    budget == total,
                    "{name}@{budget}: ack before the last effect"
                );
                let mut prng = Prng::new(seed);
                h.crash_and_restart(&mut prng, true);
                let got = file_records(&h.fs, PoolId::Guest);
                if acked {
                    assert_eq!(
                        got, after,
                        "{name}@{budget} seed {seed}: acknowledged change lost"
                    );
                } else {
                    assert!(
                        got == after || got == start_pool(),
                        "{name}@{budget} seed {seed}: half-applied: {got:?}"
                    );
                }
                assert_eq!(
                    h.daemon.machine.pool(PoolId::Guest).records(),
                    &got[..],
                    "memory != disk"
                );
                assert!(h
                    .fs
                    .contents(&FileId::journal(PoolId::Guest).file_name())
                    .is_empty());
            }
        }
    }
}

#[test]
fn records_appended_by_others_after_a_crash_survive_recovery() {
    for (name, req, after) in mutations() {
        let total = effects_needed(&req);
        for budget in 0..total {
            for seed in 0..8 {
                let mut h = KvpHarness::new(fs_with(PoolId::Guest, &start_pool()));
                h.daemon.effect_budget = Some(budget);
                let _ = h.request(&req);
                let mut prng = Prng::new(seed);
                h.fs.crash(&mut prng);
                // cloud-init at boot, before our daemon starts again.
                let theirs = rec("CLOUD_INIT|boot", "event");
                let len = h.fs.contents(&path(PoolId::Guest)).len() as u64;
                h.fs.write(&path(PoolId::Guest), len, &theirs.encode())
                    .unwrap();
                h.crash_and_restart(&mut prng, false);
                let got = file_records(&h.fs, PoolId::Guest);
                assert_eq!(
                    got.iter().filter(|r| **r == theirs).count(),
                    1,
                    "{name}@{budget} seed {seed}: {got:?}"
                );
                let mut ours: Vec<Record> = got.into_iter().filter(|r| *r != theirs).collect();
                ours.sort_by(|a, b| a.key.cmp(&b.key));
                let mut a = after.clone();
                a.sort_by(|x, y| x.key.cmp(&y.key));
                let mut s = start_pool();
                s.sort_by(|x, y| x.key.cmp(&y.key));
                assert!(
                    ours == a || ours == s,
                    "{name}@{budget} seed {seed}: {ours:?}"
                );
            }
        }
    }
}

#[test]
fn a_frozen_file_system_fails_the_write_in_time_and_reads_go_on() {
    let mut h = KvpHarness::new(fs_with(PoolId::Guest, &start_pool()));
    h.fs.frozen = true;
    let t0 = h.now;
    assert_eq!(
        h.request(&set(PoolId::Guest, "a", "new")),
        status(Status::E_FAIL)
    );
    assert!(h.now.saturating_since(t0) <= Duration::from_millis(4500));
    // GET and ENUMERATE are answered at once from memory.
    let t1 = h.now;
    assert_eq!(
        h.request(&get(PoolId::Guest, "a")),
        Some(Reply::Value(v("1")))
    );
    assert_eq!(enumerate(&mut h, PoolId::Guest).len(), 3);
    assert_eq!(h.now, t1);
    // A second mutation waits for the lane, then fails in time.
    assert_eq!(
        h.request(&set(PoolId::Guest, "z", "9")),
        status(Status::E_FAIL)
    );
    h.thaw();
    // The in-doubt write finished after the thaw; memory follows the disk.
    assert!(h.daemon.machine.is_idle());
    assert_eq!(
        file_records(&h.fs, PoolId::Guest),
        vec![rec("a", "new"), rec("b", "2"), rec("c", "3")]
    );
    assert_eq!(
        h.request(&get(PoolId::Guest, "a")),
        Some(Reply::Value(v("new")))
    );
    assert_eq!(h.request(&get(PoolId::Guest, "z")), status(Status::S_CONT));
}

#[test]
fn a_slow_disk_gets_a_failure_status_before_the_kernel_deadline() {
    let mut latency = Latency::default();
    let mut h = KvpHarness::with_latency(fs_with(PoolId::Guest, &start_pool()), Latency::default());
    latency
        .scripted
        .extend([Duration::ZERO, Duration::ZERO, Duration::from_secs(6)]);
    h.daemon.latency = latency;
    let t0 = h.now;
    assert_eq!(
        h.request(&set(PoolId::Guest, "a", "slow")),
        status(Status::E_FAIL)
    );
    let waited = h.now.saturating_since(t0);
    assert!(
        waited < Duration::from_secs(5) && waited >= Duration::from_millis(4500),
        "{waited:?}"
    );
    h.settle();
    assert_eq!(
        h.daemon.machine.pool(PoolId::Guest).records(),
        &file_records(&h.fs, PoolId::Guest)[..]
    );
}

#[test]
fn an_io_error_at_any_call_fails_the_request_and_recovery_restores_agreement() {
    for call in [
        FsCall::Lock,
        FsCall::Stat,
        FsCall::Read,
        FsCall::Write,
        FsCall::SetLen,
        FsCall::Fsync,
    ] {
        for (name, req, after) in mutations() {
            let mut h = KvpHarness::new(fs_with(PoolId::Guest, &start_pool()));
            h.fs.inject(call, None, IoError::EIO);
            let reply = h.request(&req);
            h.settle();
            let got = file_records(&h.fs, PoolId::Guest);
            if reply == ok() {
                assert_eq!(got, after, "{call:?} {name}");
            } else {
                assert_eq!(reply, status(Status::E_FAIL), "{call:?} {name}");
                assert!(
                    got == after || got == start_pool(),
                    "{call:?} {name}: {got:?}"
                );
            }
            assert!(
                h.daemon.machine.pool_ready(PoolId::Guest),
                "{call:?} {name}"
            );
            assert_eq!(
                h.daemon.machine.pool(PoolId::Guest).records(),
                &got[..],
                "{call:?} {name}"
            );
            // And it keeps working.
            assert_eq!(h.request(&set(PoolId::Guest, "after", "x")), ok());
        }
    }
}

#[test]
fn a_persistent_error_fails_the_pool_until_recovery_succeeds() {
    let mut h = KvpHarness::new(fs_with(PoolId::Guest, &start_pool()));
    // The journal is durable, then the pool write fails, and so does recovery's first
    // attempt to read the journal.
    let journal = FileId::journal(PoolId::Guest).file_name();
    h.fs.inject(FsCall::Write, Some(&path(PoolId::Guest)), IoError::EIO);
    h.fs.inject(FsCall::Read, Some(&journal), IoError::EIO);
    assert_eq!(
        h.request(&set(PoolId::Guest, "a", "x")),
        status(Status::E_FAIL)
    );
    assert!(!h.daemon.machine.pool_ready(PoolId::Guest));
    assert_eq!(h.request(&get(PoolId::Guest, "a")), status(Status::E_FAIL));
    // Other pools are unaffected.
    assert_eq!(h.request(&set(PoolId::External, "k", "v")), ok());
    h.advance(Duration::from_secs(2));
    assert!(h.daemon.machine.pool_ready(PoolId::Guest));
    // Recovery found none of the journaled change in the file and left it so (the
    // SET was answered E_FAIL): the disk holds the old value, and so does memory.
    let got = file_records(&h.fs, PoolId::Guest);
    assert_eq!(got, start_pool());
    assert!(h.fs.contents(&journal).is_empty());
    assert_eq!(h.daemon.machine.pool(PoolId::Guest).records(), &got[..]);
}

/// kvp.conf's `exclude_interfaces` and `address_order` reach GET_IP_INFO through the
/// machine: a vlan(4) sharing hn0's MAC and listed first is skipped once excluded, and
/// the addresses come in the configured order with their masks beside them.
#[test]
fn ip_info_follows_the_configured_interfaces_and_order() {
    let holder = |name: &str, addrs: &[(&str, u8)], gw: &str| NamedAdapter {
        interface: name.into(),
        info: AdapterInfo {
            addrs: addrs
                .iter()
                .map(|(a, prefix)| IfAddr {
                    addr: a.parse().unwrap(),
                    prefix: *prefix,
                })
                .collect(),
            gateways: vec![gw.parse().unwrap()],
            dns: vec![],
            dhcp: false,
        },
    };
    let holders = vec![
        holder("vlan10", &[("10.10.0.4", 24)], "10.10.0.1"),
        holder(
            "hn0",
            &[("fe80::1", 64), ("2001:db8::4", 64), ("10.0.0.4", 24)],
            "10.0.0.1",
        ),
    ];
    let ask = Request::GetIpInfo {
        adapter_id: b"00:15:5D:01:02:03".to_vec(),
        addr_family: 0,
    };
    let run = |config: KvpConfig| {
        let mut h = KvpHarness::with_config(SimFs::new(), Latency::default(), config);
        h.net
            .adapters
            .insert(Mac([0, 0x15, 0x5d, 1, 2, 3]), holders.clone());
        match h.request(&ask) {
            Some(Reply::IpInfo(f)) => {
                [f.ip_addr, f.sub_net, f.gate_way].map(|b| String::from_utf8(b).unwrap())
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        run(KvpConfig::default()),
        ["10.10.0.4", "255.255.255.0", "10.10.0.1"]
    );
    let mut config = KvpConfig::default();
    config
        .addresses
        .set_exclude(vec![Glob::new("vlan*").unwrap()])
        .unwrap();
    assert_eq!(
        run(config.clone()),
        [
            "10.0.0.4;2001:db8::4;fe80::1",
            "255.255.255.0;64;64",
            "10.0.0.1"
        ]
    );
    config.addresses.order = AddressOrder::Ipv6First;
    assert_eq!(run(config.clone())[0], "2001:db8::4;fe80::1;10.0.0.4");
    config.addresses.order = AddressOrder::Kernel;
    assert_eq!(run(config)[0], "fe80::1;2001:db8::4;10.0.0.4");
    // Every holder excluded: E_FAIL, and an event naming them.
    let mut config = KvpConfig::default();
    config
        .addresses
        .set_exclude(vec![Glob::new("*").unwrap()])
        .unwrap();
    let mut h = KvpHarness::with_config(SimFs::new(), Latency::default(), config);
    h.net
        .adapters
        .insert(Mac([0, 0x15, 0x5d, 1, 2, 3]), holders.clone());
    assert_eq!(h.request(&ask), Some(Reply::Status(Status::E_FAIL)));
    let named = h.log.iter().find_map(|o| match o {
        Observed::Event(hvguest_core::kvp::Event::AdapterExcluded { interfaces, .. }) => {
            Some(interfaces.clone())
        }
        _ => None,
    });
    assert_eq!(named, Some(vec!["vlan10".to_string(), "hn0".to_string()]));
}

#[test]
fn ip_info_is_answered_from_the_driver_and_bad_config_never_reaches_it() {
    let mut h = KvpHarness::new(SimFs::new());
    let mac = Mac([0, 0x15, 0x5d, 1, 2, 3]);
    h.net.adapters.insert(
        mac,
        vec![NamedAdapter {
            interface: "hn0".into(),
            info: AdapterInfo {
                addrs: vec![IfAddr {
                    addr: "10.0.0.4".parse().unwrap(),
                    prefix: 24,
                }],
                gateways: vec!["10.0.0.1".parse().unwrap()],
                dns: vec!["168.63.129.16".parse().unwrap()],
                dhcp: true,
            },
        }],
    );
    let get_ip = |m: &str| Request::GetIpInfo {
        adapter_id: m.as_bytes().to_vec(),
        addr_family: 0,
    };
    match h.request(&get_ip("00:15:5d:01:02:03")) {
        Some(Reply::IpInfo(f)) => {
            assert_eq!(f.ip_addr, b"10.0.0.4");
            assert_eq!(f.sub_net, b"255.255.255.0");
            assert_eq!(f.gate_way, b"10.0.0.1");
            assert_eq!(f.dns_addr, b"168.63.129.16");
            assert_eq!((f.addr_family, f.dhcp_enabled), (1, 1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.request(&get_ip("00:15:5D:09:09:09")),
        status(Status::E_FAIL)
    );
    assert_eq!(h.request(&get_ip("not a mac")), status(Status::E_FAIL));
    let cfg = |ip: &str| {
        Request::SetIpInfo(IpFields {
            adapter_id: b"hn0".to_vec(),
            ip_addr: ip.as_bytes().to_vec(),
            sub_net: b"255.255.255.0".to_vec(),
            gate_way: b"10.0.0.1".to_vec(),
            dns_addr: b"10.0.0.2".to_vec(),
            ..Default::default()
        })
    };
    assert_eq!(
        h.request(&cfg("10.0.0.9;$(reboot)")),
        status(Status::INVALID_ARG)
    );
    assert!(h.net.applied.is_empty());
    assert_eq!(h.request(&cfg("10.0.0.9")), ok());
    assert_eq!(h.net.applied.len(), 1);
    h.net.apply_fails = true;
    assert_eq!(h.request(&cfg("10.0.0.10")), status(Status::E_FAIL));
    // The machine, not the driver, gives the script its deadline: inside the reply
    // budget, with the margin to kill it and still answer.
    let deadlines: Vec<Duration> = h
        .log
        .iter()
        .filter_map(|o| match o {
            Observed::Effect(
                _,
                hvguest_core::kvp::effect::Effect::ApplyIpConfig { deadline, .. },
            ) => Some(*deadline),
            _ => None,
        })
        .collect();
    assert_eq!(deadlines.len(), 2);
    for d in deadlines {
        assert_eq!(d, hvguest_core::limits::KVP_SET_IP_SCRIPT);
        assert!(
            d + hvguest_core::limits::KVP_EFFECT_MARGIN <= h.config.reply_budget,
            "{d:?}"
        );
    }
}

#[test]
fn a_stale_journal_entry_from_a_failed_write_is_judged_not_blindly_replayed() {
    // Someone rewrote slot 0 after our crash: the entry must be discarded.
    let mut h = KvpHarness::new(fs_with(PoolId::Guest, &start_pool()));
    h.daemon.effect_budget = Some(effects_needed(&set(PoolId::Guest, "a", "ours")) - 6);
    let _ = h.request(&set(PoolId::Guest, "a", "ours"));
    let mut prng = Prng::new(3);
    h.fs.crash(&mut prng);
    h.fs.write(&path(PoolId::Guest), 0, &rec("a", "theirs").encode())
        .unwrap();
    h.crash_and_restart(&mut prng, false);
    assert_eq!(file_records(&h.fs, PoolId::Guest)[0], rec("a", "theirs"));
    assert!(h.log.iter().any(|o| matches!(
        o,
        Observed::Event(hvguest_core::kvp::Event::Job(
            hvguest_core::kvp::jobs::JobEvent::JournalDiscarded { .. }
        ))
    )));
}

#[test]
fn a_journal_entry_left_by_another_writer_is_recovered_not_overwritten() {
    use hvguest_core::kvp::jobs::journal_entry;
    use hvguest_core::kvp::pool::{Plan, Pool};
    use std::collections::BTreeMap;
    let mut h = KvpHarness::new(fs_with(PoolId::Guest, &start_pool()));
    // Another writer (hvkvp) journaled an append of "x" and died before applying it.
    let theirs = Pool::from_records(start_pool());
    let Plan::Write(m) = theirs.plan_set(&k("x"), &v("theirs")) else {
        panic!("a write")
    };
    let entry = journal_entry(PoolId::Guest, &m, &BTreeMap::new());
    h.fs.write(
        &FileId::journal(PoolId::Guest).file_name(),
        0,
        &entry.encode(),
    )
    .unwrap();
    // It had extended the file (the length is synced before any record is written);
    // an append whose extension is gone is discarded, not finished (journal::judge).
    h.fs.set_len(&FileId::pool(PoolId::Guest).file_name(), m.new_len())
        .unwrap();
    h.fs.sync_all();
    // Our SET finds the entry under the lock: it must not write its own over it.
    assert_eq!(
        h.request(&set(PoolId::Guest, "k", "ours")),
        status(Status::E_FAIL)
    );
    h.settle();
    let after_recovery = file_records(&h.fs, PoolId::Guest);
    assert!(
        after_recovery.contains(&rec("x", "theirs")),
        "{after_recovery:?}"
    );
    assert!(h
        .fs
        .contents(&FileId::journal(PoolId::Guest).file_name())
        .is_empty());
    // And the host's retry goes through.
    assert_eq!(h.request(&set(PoolId::Guest, "k", "ours")), ok());
    let got = file_records(&h.fs, PoolId::Guest);
    assert!(
        got.contains(&rec("x", "theirs")) && got.contains(&rec("k", "ours")),
        "{got:?}"
    );
}

/// A writer died half-way through applying its journaled change: the pool file holds a
/// record nobody wrote (new first sector, old rest). A GET must not answer from it.
#[test]
fn a_read_never_answers_from_a_change_another_writer_left_half_made() {
    use hvguest_core::kvp::jobs::journal_entry;
    use hvguest_core::kvp::pool::{Plan, Pool};
    use std::collections::BTreeMap;
    let mut h = KvpHarness::new(fs_with(PoolId::Guest, &start_pool()));
    assert_eq!(
        h.request(&get(PoolId::Guest, "a")),
        Some(Reply::Value(v("1")))
    );
    let long = "y".repeat(1500);
    let theirs = Pool::from_records(start_pool());
    let Plan::Write(m) = theirs.plan_set(&k("a"), &v(&long)) else {
        panic!("a write")
    };
    // A correct writer journals the exact current bytes of the slot it rewrites.
    let mut pre = BTreeMap::new();
    use hvguest_core::limits::POOL_RECORD_SIZE;
    let slot0: [u8; POOL_RECORD_SIZE] = h.fs.contents(&path(PoolId::Guest))[..POOL_RECORD_SIZE]
        .try_into()
        .expect("a whole record");
    pre.insert(0, slot0);
    let entry = journal_entry(PoolId::Guest, &m, &pre);
    let journal = FileId::journal(PoolId::Guest).file_name();
    h.fs.write(&journal, 0, &entry.encode()).unwrap();
    // "a" is record 0: its value starts at byte 512. Only that first value sector landed.
    let post = rec("a", &long).encode();
    h.fs.write(&path(PoolId::Guest), 512, &post[512..1024])
        .unwrap();
    h.fs.sync_all();
    // The file changed, so the GET reloads it; the journal says it may be half made.
    assert_eq!(h.request(&get(PoolId::Guest, "a")), status(Status::E_FAIL));
    h.settle();
    assert!(h.fs.contents(&journal).is_empty());
    // Recovery finished the change: the whole value, never the 512-byte piece.
    assert_eq!(
        h.request(&get(PoolId::Guest, "a")),
        Some(Reply::Value(v(&long)))
    );
    assert_eq!(file_records(&h.fs, PoolId::Guest)[0], rec("a", &long));
}

/// kvp.conf's `max_records` lowers the host's limit below its budget, never raises it.
#[test]
fn max_records_limits_host_sets_and_never_raises_the_budget() {
    use hvguest_core::kvp::machine::KvpConfig;
    use hvguest_core::limits::HOST_POOL_RECORDS;
    let config = |max_records| KvpConfig {
        max_records,
        ..KvpConfig::default()
    };
    assert_eq!(config(2).host_limit(), 2);
    assert_eq!(config(5000).host_limit(), HOST_POOL_RECORDS);
    assert_eq!(KvpConfig::default().host_limit(), HOST_POOL_RECORDS);

    let start = [rec("a", "1")];
    let mut h = KvpHarness::with_config(
        fs_with(PoolId::External, &start),
        Latency::default(),
        config(2),
    );
    assert_eq!(h.request(&set(PoolId::External, "b", "2")), ok());
    assert_eq!(
        h.request(&set(PoolId::External, "c", "3")),
        status(Status::S_CONT)
    );
    assert_eq!(
        file_records(&h.fs, PoolId::External),
        vec![rec("a", "1"), rec("b", "2")]
    );
    assert_eq!(h.request(&set(PoolId::External, "a", "x")), ok());
    assert_eq!(h.request(&del(PoolId::External, "b")), ok());
    assert_eq!(h.request(&set(PoolId::External, "c", "3")), ok());
    // Another pool has its own count.
    assert_eq!(h.request(&set(PoolId::Guest, "c", "3")), ok());
}
