//! Golden bytes for Linux's KVP device (docs/protocol/linux.md §1.2–§1.4), from the
//! test vectors measured on Linux's headers. Requests are assembled byte by byte here,
//! never with `encode_request`, so a layout mistake shared by encoder and decoder
//! cannot hide; replies are compared whole (listed bytes, zero elsewhere).

use hvguest_core::kvp::auto::SystemInfo;
use hvguest_core::kvp::effect::{Effect, EffectResult};
use hvguest_core::kvp::ip::{Adapter, NicGuid};
use hvguest_core::kvp::machine::{Event, KvpConfig, KvpMachine, Output};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{DecodeError, Layout, PoolId, Reply, Request, Status};
use hvguest_core::kvp::Input;
use hvguest_core::limits::{LINUX_KVP_MSG_SIZE, LINUX_KVP_REPLY_BUDGET, LINUX_KVP_SET_IP_PROGRAMS};
use hvguest_core::Instant;

const LINUX: Layout = Layout::Linux;

/// A 7432-byte message, zero except for the given spans.
fn message(spans: &[(usize, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0u8; LINUX_KVP_MSG_SIZE];
    for &(at, bytes) in spans {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
    }
    buf
}

fn key(s: &str) -> Key {
    Key::new(s.as_bytes()).expect("a valid key")
}

fn value(s: &str) -> Value {
    Value::new(s.as_bytes()).expect("a valid value")
}

#[test]
fn the_message_is_7432_bytes_and_the_budget_fits_the_30_second_timer() {
    assert_eq!(LINUX.message_size(), 7432);
    assert_eq!(Layout::FreeBsd.message_size(), 7430);
    assert_eq!(LINUX.reply_budget(), LINUX_KVP_REPLY_BUDGET);
    // A FreeBSD-sized message is not a Linux one, and the other way round.
    let short = vec![0u8; 7430];
    assert_eq!(
        LINUX.decode_request(&short),
        Err(DecodeError::WrongLength(7430))
    );
    assert_eq!(
        Layout::FreeBsd.decode_request(&message(&[])),
        Err(DecodeError::WrongLength(7432))
    );
}

/// Vectors 1–3: registration, the kernel's answer, the legacy op.
#[test]
fn registration_and_the_kernels_answer() {
    assert_eq!(LINUX.registration(), message(&[(0, &[0x64])]));
    let answer = message(&[(0, &[0x64]), (4, b"3.1")]);
    assert_eq!(LINUX.registration_answer(b"3.1"), answer);
    assert_eq!(
        LINUX.registration_answer_version(&answer),
        Some(b"3.1".to_vec())
    );
    // The legacy op's answer would start with 4, GET_IP_INFO's op: we never register
    // with it, and a message starting with 4 is a request.
    let legacy = message(&[(0, &[0x04]), (4, b"3.1")]);
    assert_eq!(LINUX.registration_answer_version(&legacy), None);
    // A request is no answer; FreeBSD's kernel sends none at all.
    let get = message(&[(8, &[4]), (16, b"foo")]);
    assert_eq!(LINUX.registration_answer_version(&get), None);
    assert_eq!(Layout::FreeBsd.registration_answer_version(&answer), None);
}

/// Vector 5: GET pool 0 "foo". Found: status 0 and the value at 532, where Linux's
/// kernel reads it. Not found: S_CONT.
#[test]
fn get_answers_its_value_at_offset_532() {
    let req = message(&[(8, &[4]), (16, b"foo")]);
    assert_eq!(
        LINUX.decode_request(&req),
        Ok(Request::Get {
            pool: PoolId::External,
            key: key("foo")
        })
    );
    let found = LINUX.encode_reply(&Reply::Value(value("bar")));
    assert_eq!(found, message(&[(532, b"bar")]));
    assert_eq!(
        LINUX.decode_reply(hvguest_core::kvp::wire::Op::Get, &found),
        Ok(Reply::Value(value("bar")))
    );
    let missing = LINUX.encode_reply(&Reply::Status(Status::S_CONT));
    assert_eq!(missing, message(&[(0, &[0x03, 0x01, 0x07, 0x80])]));
}

/// Vectors 6 and 7: SET pool 1 "foo"="bar" (value_type 0 from Linux's kernel), DELETE.
#[test]
fn set_and_delete_decode_from_linux_bytes() {
    let set = message(&[
        (0, &[0x01]),
        (1, &[0x01]),
        (8, &[4]),
        (12, &[4]),
        (16, b"foo"),
        (528, b"bar"),
    ]);
    assert_eq!(
        LINUX.decode_request(&set),
        Ok(Request::Set {
            pool: PoolId::Guest,
            key: key("foo"),
            value: value("bar")
        })
    );
    assert_eq!(LINUX.encode_reply(&Reply::Status(Status::OK)), message(&[]));
    let delete = message(&[(0, &[0x02]), (4, &[4]), (8, b"foo")]);
    assert_eq!(
        LINUX.decode_request(&delete),
        Ok(Request::Delete {
            pool: PoolId::External,
            key: key("foo")
        })
    );
}

/// Vector 8: ENUMERATE pool 2 index 9 and the reply layout (key at 20, value at 532).
#[test]
fn enumerate_uses_the_same_offsets() {
    let req = message(&[(0, &[0x03, 0x02]), (4, &[9])]);
    assert_eq!(
        LINUX.decode_request(&req),
        Ok(Request::Enumerate {
            pool: PoolId::Auto,
            index: 9
        })
    );
    let reply = LINUX.encode_reply(&Reply::Entry {
        key: key("ProcessorArchitecture"),
        value: value("x86_64"),
    });
    assert_eq!(
        reply,
        message(&[(20, b"ProcessorArchitecture"), (532, b"x86_64")])
    );
}

/// Vector 9: a GET_IP_INFO reply's fields at FreeBSD's offsets, 7432 bytes long.
#[test]
fn ip_info_reply_fields() {
    let req = message(&[(0, &[0x04]), (4, b"00:15:5D:01:02:03"), (260, &[1])]);
    assert_eq!(
        LINUX.decode_request(&req),
        Ok(Request::GetIpInfo {
            adapter_id: b"00:15:5D:01:02:03".to_vec(),
            addr_family: 1
        })
    );
    let reply = LINUX.encode_reply(&Reply::IpInfo(hvguest_core::kvp::wire::IpFields {
        adapter_id: b"00:15:5D:01:02:03".to_vec(),
        addr_family: 3,
        dhcp_enabled: 1,
        ip_addr: b"10.0.0.4;fe80::1".to_vec(),
        sub_net: b"255.255.255.0;/64".to_vec(),
        gate_way: b"10.0.0.1;".to_vec(),
        dns_addr: b"168.63.129.16;".to_vec(),
    }));
    assert_eq!(
        reply,
        message(&[
            (4, b"00:15:5D:01:02:03"),
            (260, &[3, 1]),
            (262, b"10.0.0.4;fe80::1"),
            (2310, b"255.255.255.0;/64"),
            (4358, b"10.0.0.1;"),
            (5382, b"168.63.129.16;"),
        ])
    );
}

fn drain(m: &mut KvpMachine) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

/// The machine on Linux: registers with op 100, takes the kernel's answer without
/// replying to it, then serves requests with 7432-byte replies; a reopen registers
/// again and drops the request it held.
#[test]
fn the_machine_registers_reads_the_answer_and_serves() {
    let info = SystemInfo::default();
    let mut m = KvpMachine::new(KvpConfig::for_layout(LINUX), Instant(0), &info);
    // No pool files to recover in this test: the machine asks for them; answer that
    // none exists.
    let mut writes = Vec::new();
    let mut events = Vec::new();
    let mut now = 0;
    for _ in 0..200 {
        let outs = drain(&mut m);
        if outs.is_empty() {
            break;
        }
        for o in outs {
            match o {
                Output::DeviceWrite(b) => writes.push(b),
                Output::Event(e) => events.push(e),
                Output::Effect { id, effect } => {
                    now += 1;
                    let result = hvguest_core::kvp::effect::EffectResult::Failed(
                        hvguest_core::kvp::effect::IoError::ENOENT,
                    );
                    let _ = effect;
                    m.handle(Instant(now), Input::EffectDone { id, result });
                }
                Output::Exit => panic!("exit"),
            }
        }
    }
    assert_eq!(writes, vec![message(&[(0, &[100])])], "{events:?}");
    assert!(m.registered());
    // The kernel's answer is read and not replied to.
    m.handle(
        Instant(now + 1),
        Input::DeviceRead(LINUX.registration_answer(b"3.1")),
    );
    let outs = drain(&mut m);
    assert!(
        outs.iter().all(|o| !matches!(o, Output::DeviceWrite(_))),
        "{outs:?}"
    );
    assert!(outs.contains(&Output::Event(Event::RegistrationAnswered {
        version: b"3.1".to_vec()
    })));
    // An auto-pool request is answered at once, 7432 bytes long.
    m.handle(
        Instant(now + 2),
        Input::DeviceRead(message(&[(0, &[0x03, 0x02]), (4, &[10])])),
    );
    let outs = drain(&mut m);
    assert_eq!(
        outs,
        vec![Output::DeviceWrite(message(&[(
            0,
            &[0x03, 0x01, 0x07, 0x80]
        )]))]
    );
    // After a reopen: registration again, and the next answer is consumed again.
    m.handle(Instant(now + 3), Input::DeviceReopened);
    assert_eq!(
        drain(&mut m),
        vec![Output::DeviceWrite(message(&[(0, &[100])]))]
    );
    m.handle(
        Instant(now + 4),
        Input::DeviceRead(LINUX.registration_answer(b"3.1")),
    );
    assert!(drain(&mut m)
        .iter()
        .all(|o| !matches!(o, Output::DeviceWrite(_))));
    // A request the host sends with op 100 later is a request: answered, not swallowed.
    m.handle(
        Instant(now + 5),
        Input::DeviceRead(LINUX.registration_answer(b"3.1")),
    );
    assert_eq!(
        drain(&mut m)
            .into_iter()
            .filter(|o| matches!(o, Output::DeviceWrite(_)))
            .collect::<Vec<_>>(),
        vec![Output::DeviceWrite(message(&[(
            0,
            &[0x32, 0x00, 0x07, 0x80]
        )]))]
    );
    // A reopen while a request is held: the request is dropped (the kernel failed it
    // when the device closed), nothing is written for it, and the registration follows.
    m.handle(
        Instant(now + 6),
        Input::DeviceRead(message(&[(0, &[0x04]), (4, b"00:15:5D:01:02:03")])),
    );
    let held = drain(&mut m);
    assert!(
        held.iter().all(|o| !matches!(o, Output::DeviceWrite(_))),
        "GET_IP_INFO waits for the system lane: {held:?}"
    );
    m.handle(Instant(now + 7), Input::DeviceReopened);
    let outs = drain(&mut m);
    assert!(outs.contains(&Output::Event(Event::RequestLostToReopen {
        op: hvguest_core::kvp::wire::Op::GetIpInfo
    })));
    assert_eq!(
        outs.iter()
            .filter(|o| matches!(o, Output::DeviceWrite(_)))
            .collect::<Vec<_>>(),
        vec![&Output::DeviceWrite(message(&[(0, &[100])]))]
    );
}

/// A Linux machine that has registered and read the kernel's answer, serving.
fn serving_linux_machine() -> (KvpMachine, u64) {
    let mut m = KvpMachine::new(
        KvpConfig::for_layout(LINUX),
        Instant(0),
        &SystemInfo::default(),
    );
    let mut now = 0;
    for _ in 0..200 {
        let outs = drain(&mut m);
        if outs.is_empty() {
            break;
        }
        for o in outs {
            if let Output::Effect { id, .. } = o {
                now += 1;
                let result = EffectResult::Failed(hvguest_core::kvp::effect::IoError::ENOENT);
                m.handle(Instant(now), Input::EffectDone { id, result });
            }
        }
    }
    now += 1;
    m.handle(
        Instant(now),
        Input::DeviceRead(LINUX.registration_answer(b"3.1")),
    );
    drain(&mut m);
    (m, now)
}

/// The SET_IP_INFO request of the Linux test vector: the adapter is the host's GUID.
fn set_ip_vector(ip: &[u8]) -> Vec<u8> {
    message(&[
        (0, &[0x05]),
        (4, b"{f8615163-df3e-46c5-913f-f2d2f965ed0e}"),
        (260, &[0x01]),
        (261, &[0x00]),
        (262, ip),
        (2310, b"255.255.255.0"),
        (4358, b"10.0.0.1"),
        (5382, b"10.0.0.2"),
    ])
}

/// SET_IP_INFO on Linux (docs/protocol/linux.md §1.7): the GUID reaches the driver
/// typed, with the addresses parsed; the driver's three outcomes become OK,
/// GUID_NOT_FOUND and E_FAIL with the vector's bytes; a bad address is refused with
/// INVALID_ARG before anything runs.
#[test]
fn set_ip_info_carries_the_guid_to_the_driver_and_maps_its_outcome() {
    let outcomes = [
        (EffectResult::Done, [0x00, 0x00, 0x00, 0x00]),
        (EffectResult::NoSuchAdapter, [0x02, 0x10, 0x04, 0x80]),
        (
            EffectResult::Failed(hvguest_core::kvp::effect::IoError(1)),
            [0x05, 0x40, 0x00, 0x80],
        ),
    ];
    for (result, status) in outcomes {
        let (mut m, now) = serving_linux_machine();
        m.handle(
            Instant(now + 1),
            Input::DeviceRead(set_ip_vector(b"10.0.0.5")),
        );
        let outs = drain(&mut m);
        let [Output::Effect { id, effect }] = &outs[..] else {
            panic!("one effect expected: {outs:?}");
        };
        let Effect::ApplyIpConfig { config, deadline } = effect else {
            panic!("not ApplyIpConfig: {effect:?}");
        };
        let guid = NicGuid::parse(b"{f8615163-df3e-46c5-913f-f2d2f965ed0e}").unwrap();
        assert_eq!(config.adapter, Adapter::Guid(guid));
        assert!(!config.dhcp);
        assert_eq!(config.addrs.len(), 1);
        assert_eq!(config.addrs[0].prefix, 24);
        assert_eq!(
            config.gateways,
            ["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            config.dns,
            ["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(*deadline, LINUX_KVP_SET_IP_PROGRAMS);
        let not_found = result == EffectResult::NoSuchAdapter;
        m.handle(
            Instant(now + 2),
            Input::EffectDone {
                id: *id,
                result: result.clone(),
            },
        );
        let outs = drain(&mut m);
        assert!(
            outs.contains(&Output::DeviceWrite(message(&[(0, &status)]))),
            "{result:?}: {outs:?}"
        );
        assert_eq!(
            not_found,
            outs.iter()
                .any(|o| matches!(o, Output::Event(Event::AdapterNotFound { .. }))),
            "{outs:?}"
        );
    }
    // A bad address: INVALID_ARG, no effect.
    let (mut m, now) = serving_linux_machine();
    m.handle(
        Instant(now + 1),
        Input::DeviceRead(set_ip_vector(b"10.0.0.5; reboot")),
    );
    let outs = drain(&mut m);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Effect { .. })),
        "{outs:?}"
    );
    assert!(outs.contains(&Output::DeviceWrite(message(&[(
        0,
        &[0x57, 0x00, 0x07, 0x80]
    )]))));
    // An interface name, FreeBSD's form, is no adapter on Linux: INVALID_ARG.
    let (mut m, now) = serving_linux_machine();
    let mut hn0 = set_ip_vector(b"10.0.0.5");
    hn0[4..4 + 38].fill(0);
    hn0[4..7].copy_from_slice(b"hn0");
    m.handle(Instant(now + 1), Input::DeviceRead(hn0));
    let outs = drain(&mut m);
    assert!(outs.contains(&Output::DeviceWrite(message(&[(
        0,
        &[0x57, 0x00, 0x07, 0x80]
    )]))));
}
