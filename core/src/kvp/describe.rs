//! Human-readable renderings of requests, replies and effects: for the daemon's debug
//! log, the simulator's traces and the comments in recording files. One place, so
//! a trace line reads the same wherever it is printed.

use crate::kvp::effect::{Effect, EffectResult};
use crate::kvp::wire::{self, Op, Reply, Request};

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
        Effect::ApplyIpConfig { config: c, .. } => format!("apply-ip {} {:?}", c.adapter, c.addrs),
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
