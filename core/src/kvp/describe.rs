//! Human-readable renderings of requests, replies and effects: for the daemon's debug
//! log, the simulator's traces and the comments in recording files; and the KVP events
//! ([`Event`], [`JobEvent`], [`PoolIssue`]) as the sentences logs and `hvkvp` show. One
//! place, so a line reads the same wherever it is printed.

use std::fmt;

use crate::kvp::effect::{Effect, EffectResult, WriteNews};
use crate::kvp::jobs::{JobEvent, Pending};
use crate::kvp::machine::Event;
use crate::kvp::record::{FieldFlaw, PoolIssue};
use crate::kvp::text::Key;
use crate::kvp::wire::{self, Op, PoolId, Reply, Request, Status};
use crate::limits::{HOST_POOL_BYTES, HOST_POOL_RECORDS, MAX_POOL_RECORDS, RECOVERY_RETRY};

/// Text shown for keys and values: quoted, long ones shortened with their length.
pub fn text(bytes: &[u8]) -> String {
    Text(bytes).to_string()
}

/// [`text`] written where it is wanted: a request or reply line with a key and a value
/// then builds one string, not three (the simulator writes millions of them).
pub struct Text<'a>(pub &'a [u8]);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = String::from_utf8_lossy(self.0);
        let n = s.chars().count();
        if n > 24 {
            let head: String = s.chars().take(12).collect();
            write!(f, "{head:?}…({} bytes)", self.0.len())
        } else {
            write!(f, "{s:?}")
        }
    }
}

pub fn request(r: &Request) -> String {
    RequestText(r).to_string()
}

/// [`request`] written where it is wanted, with no string of its own.
pub struct RequestText<'a>(pub &'a Request);

impl fmt::Display for RequestText<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Request::Get { pool, key } => {
                write!(out, "GET {} {}", pool.name(), Text(key.as_bytes()))
            }
            Request::Set { pool, key, value } => {
                write!(
                    out,
                    "SET {} {} = {}",
                    pool.name(),
                    Text(key.as_bytes()),
                    Text(value.as_bytes())
                )
            }
            Request::Delete { pool, key } => {
                write!(out, "DELETE {} {}", pool.name(), Text(key.as_bytes()))
            }
            Request::Enumerate { pool, index } => write!(out, "ENUMERATE {} #{index}", pool.name()),
            Request::GetIpInfo { adapter_id, .. } => {
                write!(out, "GET_IP_INFO {}", Text(adapter_id))
            }
            Request::SetIpInfo(ip) => write!(
                out,
                "SET_IP_INFO {} ip={} mask={} gw={} dns={} dhcp={}",
                Text(&ip.adapter_id),
                Text(&ip.ip_addr),
                Text(&ip.sub_net),
                Text(&ip.gate_way),
                Text(&ip.dns_addr),
                ip.dhcp_enabled
            ),
        }
    }
}

pub fn reply(op: Option<Op>, bytes: &[u8]) -> String {
    let Some(op) = op else {
        return format!(
            "status {:?}",
            wire::Status(u32::from_le_bytes(bytes[..4].try_into().unwrap_or([0; 4])))
        );
    };
    // The length says which kernel's layout the reply is in.
    let layout = if bytes.len() == wire::Layout::Linux.message_size() {
        wire::Layout::Linux
    } else {
        wire::Layout::FreeBsd
    };
    match layout.decode_reply(op, bytes) {
        Ok(Reply::Status(s)) => format!("{s:?}"),
        Ok(Reply::Value(v)) => format!("OK {}", Text(v.as_bytes())),
        Ok(Reply::Entry { key, value }) => {
            format!("OK {} = {}", Text(key.as_bytes()), Text(value.as_bytes()))
        }
        Ok(Reply::IpInfo(f)) => format!(
            "OK ip={} mask={} gw={} dns={} family={} dhcp={}",
            Text(&f.ip_addr),
            Text(&f.sub_net),
            Text(&f.gate_way),
            Text(&f.dns_addr),
            f.addr_family,
            f.dhcp_enabled
        ),
        Err(e) => format!("undecodable: {e}"),
    }
}

pub fn effect(e: &Effect) -> String {
    EffectText(e).to_string()
}

/// [`effect`] written where it is wanted, with no string of its own (a trace line per
/// effect).
pub struct EffectText<'a>(pub &'a Effect);

impl fmt::Display for EffectText<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Effect::Lock(f) => write!(out, "lock {f}"),
            Effect::Unlock(f) => write!(out, "unlock {f}"),
            Effect::Stat(f) => write!(out, "stat {f}"),
            Effect::Read { file, offset, len } => write!(out, "read {file} @{offset} {len}B"),
            Effect::Write { file, offset, data } => {
                write!(out, "write {file} @{offset} {}B", data.len())
            }
            Effect::SetLen { file, len } => write!(out, "set-len {file} {len}"),
            Effect::Fsync(f) => write!(out, "fsync {f}"),
            Effect::TakeWrites(f) => write!(out, "take-writes {f}"),
            Effect::QueryAdapter(m) => write!(out, "query-adapter {m}"),
            Effect::ApplyIpConfig { config: c, .. } => {
                let mut words = vec![c.adapter.to_string()];
                if c.dhcp {
                    words.push("dhcp".to_string());
                }
                words.extend(c.addrs.iter().map(|a| format!("{}/{}", a.addr, a.prefix)));
                write!(out, "apply-ip {}", words.join(" "))
            }
        }
    }
}

pub fn result(r: &EffectResult) -> String {
    ResultText(r).to_string()
}

/// [`result`] written where it is wanted, with no string of its own.
pub struct ResultText<'a>(pub &'a EffectResult);

impl fmt::Display for ResultText<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            EffectResult::Done => out.write_str("done"),
            EffectResult::Stamp(s) => write!(out, "len={} v{}", s.len, s.change),
            EffectResult::Data(d) => write!(out, "{}B", d.len()),
            EffectResult::Adapters(found) if found.is_empty() => out.write_str("no adapter"),
            EffectResult::Adapters(found) => {
                out.write_str("adapters ")?;
                for (i, a) in found.iter().enumerate() {
                    if i > 0 {
                        out.write_str(",")?;
                    }
                    out.write_str(&a.interface)?;
                }
                Ok(())
            }
            EffectResult::NoSuchAdapter => out.write_str("no such adapter"),
            EffectResult::Writes(WriteNews::Quiet) => out.write_str("quiet"),
            EffectResult::Writes(WriteNews::Written) => out.write_str("written"),
            EffectResult::Writes(WriteNews::NotWatched) => out.write_str("not watched"),
            EffectResult::Failed(e) => write!(out, "failed {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Events as log sentences: what happened, to which pool, what follows. Written once here
// and shown with `{}` by every driver (the daemon's log, `hvkvp`'s notes), so an
// administrator reads the same words wherever an event is told.

/// `pool 1 (guest)`.
pub fn pool_label(pool: PoolId) -> String {
    format!("pool {} ({})", pool.index(), pool.name())
}

/// A status by its name (`E_FAIL`), or in hex when it has none.
pub fn status_text(s: Status) -> String {
    match s.name() {
        Some(n) => n.to_string(),
        None => format!("status {:#010x}", s.0),
    }
}

/// A key for a log line: quoted, control characters escaped, long ones shortened.
fn key_text(key: &Key) -> String {
    text(key.as_bytes())
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Job(j) => j.fmt(f),
            Event::Registered => f.write_str(
                "registered with the KVP device: every pool file is recovered (or its \
                 recovery is being retried); answering the host's requests",
            ),
            Event::RegistrationAnswered { version } => write!(
                f,
                "the kernel answered our registration (its KVP driver says version {}); \
                 requests follow",
                text(version)
            ),
            Event::RegistrationUnanswered => f.write_str(
                "the kernel sent a request before answering our registration; serving it \
                 anyway (a kernel that skips the answer is not one documented so far)",
            ),
            Event::RequestLostToReopen { op } => write!(
                f,
                "the KVP device was reopened after an error while a {} request was being \
                 handled: the kernel has already failed it for the host, which may retry",
                op.name()
            ),
            Event::Malformed(e) => write!(
                f,
                "answered a device message that is no request we can carry out with {}: {e}",
                status_text(e.status())
            ),
            Event::IpConfigRefused(why) => write!(
                f,
                "refused the host's SET_IP_INFO, nothing was changed: {why}"
            ),
            Event::EmptyKeyRefused { pool } => write!(
                f,
                "refused the host's SET of an empty key in {} with INVALID_ARG: nothing can \
                 look such a key up, and programs that split pool files at NUL bytes lose \
                 their place on it",
                pool_label(*pool)
            ),
            Event::PoolFull {
                pool,
                key,
                records,
                limit,
            } => write!(
                f,
                "refused the host's SET of a new key {} in {} with S_CONT, nothing was \
                 stored: the pool file holds {records} records, and the host may fill a \
                 pool only up to {limit} ({}); removing records (the host's \
                 RemoveKvpItems, or hvkvp delete --force) makes room",
                key_text(key),
                pool_label(*pool),
                if *limit < HOST_POOL_RECORDS {
                    "max_records in kvp.conf".to_string()
                } else {
                    format!("the host's budget, {HOST_POOL_BYTES} bytes of pool file")
                }
            ),
            Event::AdapterNotFound { adapter } => write!(
                f,
                "answered the host's SET_IP_INFO for adapter {adapter} with GUID_NOT_FOUND, \
                 nothing was changed: no interface's device_id under /sys/class/net holds \
                 that GUID, so this guest has no such network adapter"
            ),
            Event::AdapterExcluded { mac, interfaces } => write!(
                f,
                "answered the host's GET_IP_INFO for {mac} with E_FAIL: every interface \
                 holding it ({}) is excluded by exclude_interfaces in kvp.conf, so the host \
                 shows no address for that adapter",
                interfaces.join(", ")
            ),
            Event::DeadlineReply { op, status } => write!(
                f,
                "the host's {} could not be finished before the kernel's deadline (we \
                 answer half a second before it), answered {}; a change still running goes \
                 on, and memory follows the file when it ends",
                op.name(),
                status_text(*status)
            ),
            Event::PoolFailed { pool, error } => write!(
                f,
                "{} could not be brought to a known state ({error}); the host's requests on \
                 it are answered E_FAIL until its recovery, retried every {} ms, succeeds",
                pool_label(*pool),
                RECOVERY_RETRY.as_millis()
            ),
            Event::PoolRecovered { pool, records } => {
                write!(f, "{} is ready: {records} records", pool_label(*pool))
            }
            Event::MutationInDoubt { pool, error } => write!(
                f,
                "a change to {} failed part-way ({error}); recovering the pool, which \
                 finishes or discards the change (the host was answered E_FAIL or gets it)",
                pool_label(*pool)
            ),
            Event::UnknownEffect(id) => write!(
                f,
                "a result came for effect #{}, which was never started (a driver bug); \
                 ignored",
                id.0
            ),
        }
    }
}

impl fmt::Display for JobEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobEvent::JournalFinished { pool, .. } => write!(
                f,
                "finished a change to {} found in its journal (left by an interrupted \
                 writer, or a finished one whose journal clear a power loss undid: \
                 finishing it again writes the same bytes)",
                pool_label(*pool)
            ),
            JobEvent::JournalDiscarded { pool, reason, .. } => write!(
                f,
                "left {} as it is instead of finishing a change found in its journal \
                 ({reason}): finishing it would overwrite what is there now",
                pool_label(*pool)
            ),
            JobEvent::JournalFollowUp { pool, slot } => write!(
                f,
                "removed record {slot} of {}, the end of an interrupted delete",
                pool_label(*pool)
            ),
            JobEvent::PartialRecordCut { pool, bytes } => write!(
                f,
                "cut a torn record ({bytes} bytes) from the end of {}: a writer stopped in \
                 the middle of an append",
                pool_label(*pool)
            ),
            JobEvent::JournalTornTail { pool, bytes } => write!(
                f,
                "the journal of {} ends with a torn entry ({bytes} bytes), which recovery \
                 ignores",
                pool_label(*pool)
            ),
            JobEvent::JournalTooLong { pool, bytes } => write!(
                f,
                "the journal of {} is {bytes} bytes, longer than any writer makes; only its \
                 start is read",
                pool_label(*pool)
            ),
            JobEvent::FollowUpSkipped { pool, slot, reason } => write!(
                f,
                "left record {slot} of {} in place after an interrupted delete ({reason}); \
                 it may duplicate another record",
                pool_label(*pool)
            ),
            JobEvent::StaleMemory { pool, slot } => write!(
                f,
                "record {slot} of {} changed without a new timestamp; read the file again \
                 before changing it",
                pool_label(*pool)
            ),
            JobEvent::JournalPending { pool, verdict, .. } => {
                write!(f, "{}: ", pool_label(*pool))?;
                match verdict {
                    Pending::Finish => f.write_str(
                        "an interrupted writer left a change in the journal that is not \
                         finished: recovery would finish it",
                    ),
                    Pending::Discard(reason) => write!(
                        f,
                        "the journal holds a change an interrupted writer left that never \
                         took effect ({reason}): recovery would discard it"
                    ),
                    Pending::Undo(reason) => write!(
                        f,
                        "an interrupted writer left a change half made ({reason}): recovery \
                         would put back the records it touched"
                    ),
                }
            }
            JobEvent::Loaded {
                pool,
                records,
                issues,
            } => {
                write!(f, "read {}: {records} records", pool_label(*pool))?;
                for (i, issue) in issues.iter().enumerate() {
                    f.write_str(if i == 0 { "; " } else { ", " })?;
                    issue.fmt(f)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for PoolIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolIssue::PartialRecord { bytes } => write!(
                f,
                "a torn record of {bytes} bytes at the end (a writer stopped in the middle \
                 of an append), not read"
            ),
            PoolIssue::Flawed { index, flaws } => {
                write!(f, "record {index} is flawed:")?;
                let field = |flaw: FieldFlaw| match flaw {
                    FieldFlaw::None => None,
                    FieldFlaw::GarbageAfterTerminator => Some("bytes after its terminator"),
                    FieldFlaw::Unterminated => Some("no terminator"),
                };
                let mut said = Vec::new();
                if let Some(w) = field(flaws.key) {
                    said.push(format!("its key has {w}"));
                }
                if let Some(w) = field(flaws.value) {
                    said.push(format!("its value has {w}"));
                }
                if flaws.empty_key {
                    said.push("its key is empty".to_string());
                }
                write!(f, " {}", said.join(" and "))
            }
            PoolIssue::Duplicate { index, first } => write!(
                f,
                "record {index} repeats the key of record {first} (lookups see the first)"
            ),
            PoolIssue::TooManyRecords { total } => write!(
                f,
                "the file holds {total} records, only the first {MAX_POOL_RECORDS} are read"
            ),
            PoolIssue::NotReported { count } => write!(f, "{count} more issues not listed"),
        }
    }
}
