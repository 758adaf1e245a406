//! The trace: one line per event, virtual time first. Every line goes into a running
//! hash (the determinism check compares hashes) and a ring of recent lines (the tail
//! shown on failure); the full trace is kept only when asked for (snapshots, and the
//! re-run that writes a failure's trace file).

use std::collections::VecDeque;
use std::fmt::Write as _;

use hvguest_core::kvp::effect::{Effect, EffectResult};
use hvguest_core::kvp::wire::{self, Op, Reply, Request};
use hvguest_core::Instant;

const TAIL: usize = 200;

pub struct Trace {
    hash: u64,
    tail: VecDeque<String>,
    full: Option<Vec<String>>,
    lines: u64,
}

impl Trace {
    pub fn new(keep_all: bool) -> Trace {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            tail: VecDeque::new(),
            full: keep_all.then(Vec::new),
            lines: 0,
        }
    }

    pub fn line(&mut self, now: Instant, who: &str, text: &str) {
        let mut s = String::with_capacity(24 + text.len());
        let _ = write!(s, "{:>11} {:<7} {}", now.to_string(), who, text);
        for b in s.bytes().chain([b'\n']) {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.lines += 1;
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        if let Some(full) = self.full.as_mut() {
            full.push(s.clone());
        }
        self.tail.push_back(s);
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    pub fn full(&self) -> Option<&[String]> {
        self.full.as_deref()
    }
}

/// Text shown for keys and values: quoted, long ones shortened with their length.
pub fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let n = s.chars().count();
    if n > 24 {
        let head: String = s.chars().take(12).collect();
        format!("{head:?}…({} bytes)", bytes.len())
    } else {
        format!("{s:?}")
    }
}

pub fn request(r: &Request) -> String {
    match r {
        Request::Get { pool, key } => format!("GET {} {}", pool.name(), text(key.as_bytes())),
        Request::Set { pool, key, value } => {
            format!(
                "SET {} {} = {}",
                pool.name(),
                text(key.as_bytes()),
                text(value.as_bytes())
            )
        }
        Request::Delete { pool, key } => format!("DELETE {} {}", pool.name(), text(key.as_bytes())),
        Request::Enumerate { pool, index } => format!("ENUMERATE {} #{index}", pool.name()),
        Request::GetIpInfo { adapter_id, .. } => format!("GET_IP_INFO {}", text(adapter_id)),
        Request::SetIpInfo(f) => format!(
            "SET_IP_INFO {} ip={} mask={} gw={} dns={} dhcp={}",
            text(&f.adapter_id),
            text(&f.ip_addr),
            text(&f.sub_net),
            text(&f.gate_way),
            text(&f.dns_addr),
            f.dhcp_enabled
        ),
    }
}

pub fn reply(op: Option<Op>, bytes: &[u8]) -> String {
    let Some(op) = op else {
        return format!(
            "status {:?}",
            wire::Status(u32::from_le_bytes(bytes[..4].try_into().unwrap_or([0; 4])))
        );
    };
    match wire::decode_reply(op, bytes) {
        Ok(Reply::Status(s)) => format!("{s:?}"),
        Ok(Reply::Value(v)) => format!("OK {}", text(v.as_bytes())),
        Ok(Reply::Entry { key, value }) => {
            format!("OK {} = {}", text(key.as_bytes()), text(value.as_bytes()))
        }
        Ok(Reply::IpInfo(f)) => format!(
            "OK ip={} mask={} gw={} dns={} family={} dhcp={}",
            text(&f.ip_addr),
            text(&f.sub_net),
            text(&f.gate_way),
            text(&f.dns_addr),
            f.addr_family,
            f.dhcp_enabled
        ),
        Err(e) => format!("undecodable: {e}"),
    }
}

pub fn effect(e: &Effect) -> String {
    match e {
        Effect::Lock(f) => format!("lock {}", f.file_name()),
        Effect::Unlock(f) => format!("unlock {}", f.file_name()),
        Effect::Stat(f) => format!("stat {}", f.file_name()),
        Effect::Read { file, offset, len } => format!("read {} @{offset} {len}B", file.file_name()),
        Effect::Write { file, offset, data } => {
            format!("write {} @{offset} {}B", file.file_name(), data.len())
        }
        Effect::SetLen { file, len } => format!("set-len {} {len}", file.file_name()),
        Effect::Fsync(f) => format!("fsync {}", f.file_name()),
        Effect::QueryAdapter(m) => format!("query-adapter {m}"),
        Effect::ApplyIpConfig(c) => format!("apply-ip {} {:?}", c.adapter, c.addrs),
    }
}

pub fn result(r: &EffectResult) -> String {
    match r {
        EffectResult::Done => "done".into(),
        EffectResult::Stamp(s) => format!("len={} v{}", s.len, s.change),
        EffectResult::Data(d) => format!("{}B", d.len()),
        EffectResult::Adapter(a) => {
            (if a.is_some() { "adapter" } else { "no adapter" }).to_string()
        }
        EffectResult::Failed(e) => format!("failed {e}"),
    }
}
