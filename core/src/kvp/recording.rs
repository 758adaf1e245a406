//! Recorded host traffic: the recording format, its parser and its writer.
//!
//! The production daemon writes this format with `--record FILE`; `cargo xtask replay`
//! reads it (the replay itself lives in `hvguest_sim::recording`, which runs a recording
//! through the real `KvpMachine` and compares every reply with the recorded one).
//! Recordings live in `scenarios/recorded/` and are regression tests.
//!
//! # Format (v1)
//!
//! A UTF-8 text file, one item per line. The first line is exactly
//!
//! ```text
//! # hvguest kvp recording v1
//! ```
//!
//! Any other line starting with `#` is a comment; blank lines are ignored. Tokens are
//! separated by spaces or tabs. The other lines are:
//!
//! ```text
//! layout <freebsd|linux>
//! sysinfo fqdn=<text> os_name=<text> os_release=<text> machine=<text> addrs=<ip%if,..>
//! adapter <MAC> name=<text> addrs=<ip/prefix,..> gateways=<ip,..> dns=<ip,..> dhcp=<0|1>
//! pool <0..4> <bytes>
//! <t_ns> in <bytes>
//! <t_ns> out <bytes>
//! ```
//!
//! * `layout` (at most one; missing means `freebsd`): whose kernel's device the messages
//!   are for (`wire::Layout`): FreeBSD's 7430-byte messages, or Linux's 7432-byte ones
//!   with the kernel's answer to the registration as the first `in`.
//! * `sysinfo` (at most one): what the daemon started with (`SystemInfo`). `<text>` is
//!   percent-encoded: space, `%`, `=`, control bytes and every byte outside printable
//!   ASCII, and `,`, are written `%XX` (two hex digits, the byte of the UTF-8
//!   encoding). `addrs` lists every address of every interface in the kernel's order,
//!   comma-separated, each as the address, `%` and the interface's name as `<text>`
//!   (`10.0.0.4%hn0,fe80::1%lo0`, the zone notation of RFC 4007; possibly empty). The
//!   fields `ipv4=<a,b>` and `ipv6=<a,b>` of older recordings are still read: their
//!   addresses, IPv4 first, with no interface name. A missing field, or a missing
//!   line, means empty.
//! * `adapter` (zero or more): one interface holding a MAC, and what querying it returns
//!   for GET_IP_INFO. Several interfaces may hold one MAC (a vlan(4) over `hn0`); their
//!   lines keep the kernel's order. The MAC is six hex pairs separated by `:` (the
//!   host's form, `00:15:5D:01:02:03`). Missing fields mean an empty name, empty lists
//!   and `dhcp=0`.
//! * `pool N` (zero or more): the bytes of `.kvp_pool_N` when the daemon started. Several
//!   lines for the same pool are concatenated in order (the writer puts one 2560-byte
//!   record per line); a pool with no line started empty (or absent, which is the same
//!   to the daemon: it creates the file on first use).
//! * `<t_ns> sysinfo ...`: the system information changed at that time (the daemon looks
//!   the host name up again in the background); same fields as the `sysinfo` line.
//! * `<t_ns> in <bytes>`: one device read, the request exactly as the kernel delivered
//!   it. `<t_ns> out <bytes>`: one device write, the registration or a reply. `<t_ns>` is
//!   the daemon's monotonic clock in nanoseconds (decimal); times never decrease. The
//!   daemon is taken to start at the time of the first `in` or `out`.
//!
//! `<bytes>` is hex, two digits per byte (either case), where `~N` stands for N zero
//! bytes (N decimal, ended by the first character that is not a digit). Whitespace is
//! ignored, except that it ends a count: the writer puts a space after `~N` when more
//! bytes follow (`6b~511 76`). The registration, a 4 followed by 7429 zero bytes, is
//! `04~7429`.
//!
//! Not recorded (yet): a change of system information while running, signals, and the
//! daemon's own effects; replay runs the effects against a fresh simulated file system
//! and network built from the header lines.
//!
//! # Replay
//!
//! The kernel hands the daemon one request at a time and waits for its write, so the
//! writes split into slots: the ones before the first `in` (the registration), and the
//! ones after each `in` up to the next. Replay builds the world from the header lines,
//! starts the machine, delivers each `in` at its recorded time (later, if the replayed
//! daemon has not answered the previous request by then, as the kernel would) and
//! compares, slot by slot and in order, the replayed writes with the recorded `out`s,
//! byte for byte.

use crate::time::Instant;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use crate::kvp::addresses::{InterfaceAddr, NamedAdapter};
use crate::kvp::auto::SystemInfo;
use crate::kvp::effect::FileId;
use crate::kvp::ip::{AdapterInfo, IfAddr, Mac};
use crate::kvp::wire::{self, Op, PoolId};
use crate::limits::{KVP_KEY_FIELD, MAX_ADAPTER_CANDIDATES, MAX_SYSTEM_ADDRS, POOL_RECORD_SIZE};

/// The first line of every recording.
pub const HEADER: &str = "# hvguest kvp recording v1";

/// Largest device message a recording may hold. The kernel's messages are 7430 bytes; a
/// misbehaving one is still recorded as read, but nothing real is this long.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Largest initial pool file a recording may hold (well above what the daemon accepts).
pub const MAX_POOL_BYTES: usize = 256 << 20;

/// Runs of at least this many zero bytes are written `~N`.
const ZERO_RUN: usize = 3;

/// Which way a device message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Read by the daemon: a request.
    In,
    /// Written by the daemon: the registration or a reply.
    Out,
}

impl Direction {
    fn word(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One device read or write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMessage {
    pub at: Instant,
    pub dir: Direction,
    pub bytes: Vec<u8>,
}

/// A parsed recording: the world the daemon started in, then its device traffic in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recording {
    /// The device's message layout (the `layout` line).
    pub layout: wire::Layout,
    pub info: SystemInfo,
    /// Every interface holding each MAC, in the kernel's order.
    pub adapters: BTreeMap<Mac, Vec<NamedAdapter>>,
    /// Initial bytes of `.kvp_pool_N`, indexed by pool number.
    pub pools: [Vec<u8>; 5],
    pub messages: Vec<DeviceMessage>,
    /// System information handed to the daemon while it ran (the host name is looked
    /// up again in the background), with the time it arrived.
    pub info_changes: Vec<(Instant, SystemInfo)>,
}

/// What is wrong with a line of a recording.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("the first line must be `{HEADER}`")]
    MissingHeader,
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("unknown line kind `{0}`")]
    UnknownLine(String),
    #[error("`{0}` is not a time in nanoseconds")]
    BadTime(String),
    #[error("time {now} is before the previous message's {previous}")]
    TimeWentBack { previous: u64, now: u64 },
    /// A `<t_ns>` not followed by `in` or `out`.
    #[error("expected `in` or `out`, found `{0}`")]
    BadDirection(String),
    #[error("bad message bytes: {0}")]
    BadHex(String),
    #[error("more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("`{0}` is not a pool number 0..=4")]
    BadPool(String),
    #[error("`{0}` is not a MAC like 00:15:5D:01:02:03")]
    BadMac(String),
    #[error("a second sysinfo line")]
    DuplicateSysinfo,
    #[error("a second layout line")]
    DuplicateLayout,
    #[error("`{0}` is not a layout (freebsd or linux)")]
    BadLayout(String),
    #[error("a second adapter line for {0}")]
    DuplicateAdapter(String),
    #[error("more than {MAX_ADAPTER_CANDIDATES} interfaces hold {0}")]
    TooManyAdapters(String),
    /// A `name=value` token whose name the line does not have.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    #[error("field `{0}` given twice")]
    DuplicateField(String),
    /// A token that is not `name=value`.
    #[error("unexpected `{0}`")]
    Unexpected(String),
    #[error("{field}: {reason}")]
    BadValue { field: String, reason: String },
}

/// A recording that cannot be read, and the line (from 1) where it went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub kind: ParseErrorKind,
}

// ---------------------------------------------------------------------------------------
// Message bytes: hex with `~N` zero runs.

/// Writes bytes as hex, zero runs of three or more as `~N` (followed by a space when
/// more bytes follow, which ends the count).
pub fn encode_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().min(4096) * 2);
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|&&b| b == 0).count();
        if run >= ZERO_RUN {
            i += run;
            let sep = if i < bytes.len() { " " } else { "" };
            let _ = write!(out, "~{run}{sep}");
        } else {
            let _ = write!(out, "{:02x}", bytes[i]);
            i += 1;
        }
    }
    out
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Reads bytes written by [`encode_bytes`] (or by hand), appending to `out` but never
/// past `limit` bytes in all. The error is a reason without the line.
pub fn decode_bytes_into(text: &str, out: &mut Vec<u8>, limit: usize) -> Result<(), String> {
    let mut chars = text.bytes().peekable();
    let too_large = || format!("more than {limit} bytes");
    let not_hex = |c: u8| format!("`{}` is not a hex digit", c.escape_ascii());
    while let Some(c) = chars.next() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'~' {
            // The count runs to the first non-digit: whitespace, `~` or a hex letter.
            let mut n: usize = 0;
            let mut digits = 0;
            while let Some(d) = chars.next_if(u8::is_ascii_digit) {
                digits += 1;
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(usize::from(d - b'0')))
                    .filter(|&n| n <= limit)
                    .ok_or_else(too_large)?;
            }
            if digits == 0 {
                return Err(format!("`~` without a count (after byte {})", out.len()));
            }
            if out.len() + n > limit {
                return Err(too_large());
            }
            out.resize(out.len() + n, 0);
            continue;
        }
        let hi = hex_digit(c).ok_or_else(|| not_hex(c))?;
        while chars.next_if(u8::is_ascii_whitespace).is_some() {}
        let lo = match chars.next() {
            Some(d) => hex_digit(d).ok_or_else(|| not_hex(d))?,
            None => return Err("odd number of hex digits".into()),
        };
        if out.len() >= limit {
            return Err(too_large());
        }
        out.push(hi << 4 | lo);
    }
    Ok(())
}

/// Reads one message's bytes.
pub fn decode_bytes(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    decode_bytes_into(text, &mut out, MAX_MESSAGE_BYTES)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Percent-encoded text.

fn needs_escape(b: u8) -> bool {
    b <= b' ' || b >= 0x7f || b == b'%' || b == b'=' || b == b','
}

/// Percent-encodes space, `%`, `=`, `,`, control and non-ASCII bytes.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if needs_escape(b) {
            let _ = write!(out, "%{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// The reverse of [`percent_encode`]; the result must be UTF-8.
pub fn percent_decode(text: &str) -> Result<String, String> {
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_digit);
            let lo = raw.get(i + 2).copied().and_then(hex_digit);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err("`%` must be followed by two hex digits".into()),
            }
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "decodes to bytes that are not UTF-8".into())
}

// ---------------------------------------------------------------------------------------
// Parsing.

fn list<T: std::str::FromStr>(field: &str, text: &str) -> Result<Vec<T>, ParseErrorKind> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| ParseErrorKind::BadValue {
                field: field.into(),
                reason: format!("`{s}` is not an address"),
            })
        })
        .collect()
}

fn if_addrs(text: &str) -> Result<Vec<IfAddr>, ParseErrorKind> {
    let bad = |s: &str| ParseErrorKind::BadValue {
        field: "addrs".into(),
        reason: format!("`{s}` is not address/prefix"),
    };
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (addr, prefix) = s.split_once('/').ok_or_else(|| bad(s))?;
            let addr: IpAddr = addr.parse().map_err(|_| bad(s))?;
            let prefix: u8 = prefix.parse().map_err(|_| bad(s))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return Err(bad(s));
            }
            Ok(IfAddr { addr, prefix })
        })
        .collect()
}

/// Splits `name=value` tokens, refusing names not in `allowed` and repeats.
fn fields<'a>(
    tokens: impl Iterator<Item = &'a str>,
    allowed: &[&str],
) -> Result<BTreeMap<&'a str, &'a str>, ParseErrorKind> {
    let mut out = BTreeMap::new();
    for t in tokens {
        let (name, value) = t
            .split_once('=')
            .ok_or_else(|| ParseErrorKind::Unexpected(t.into()))?;
        if !allowed.contains(&name) {
            return Err(ParseErrorKind::UnknownField(name.into()));
        }
        if out.insert(name, value).is_some() {
            return Err(ParseErrorKind::DuplicateField(name.into()));
        }
    }
    Ok(out)
}

fn sysinfo<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<SystemInfo, ParseErrorKind> {
    let f = fields(
        tokens,
        &[
            "fqdn",
            "os_name",
            "os_release",
            "machine",
            "addrs",
            "ipv4",
            "ipv6",
        ],
    )?;
    let text = |name: &str| -> Result<String, ParseErrorKind> {
        f.get(name)
            .map_or(Ok(String::new()), |v| percent_decode(v))
            .map_err(|reason| ParseErrorKind::BadValue {
                field: name.into(),
                reason,
            })
    };
    Ok(SystemInfo {
        fqdn: text("fqdn")?,
        os_name: text("os_name")?,
        os_release: text("os_release")?,
        machine: text("machine")?,
        addrs: system_addrs(&f)?,
    })
}

/// `addrs=`, then the older `ipv4=` and `ipv6=` (no interface names).
fn system_addrs(f: &BTreeMap<&str, &str>) -> Result<Vec<InterfaceAddr>, ParseErrorKind> {
    let get = |name: &str| f.get(name).copied().unwrap_or("");
    let mut out = Vec::new();
    for item in get("addrs").split(',').filter(|s| !s.is_empty()) {
        let bad = |reason: String| ParseErrorKind::BadValue {
            field: "addrs".into(),
            reason,
        };
        let (addr, interface) = item
            .split_once('%')
            .ok_or_else(|| bad(format!("`{item}` is not address%interface")))?;
        out.push(InterfaceAddr {
            addr: addr
                .parse()
                .map_err(|_| bad(format!("`{addr}` is not an address")))?,
            interface: percent_decode(interface).map_err(bad)?,
        });
    }
    let unnamed = |addr: IpAddr| InterfaceAddr {
        interface: String::new(),
        addr,
    };
    let v4 = list::<Ipv4Addr>("ipv4", get("ipv4"))?;
    let v6 = list::<Ipv6Addr>("ipv6", get("ipv6"))?;
    out.extend(v4.into_iter().map(|a| unnamed(IpAddr::V4(a))));
    out.extend(v6.into_iter().map(|a| unnamed(IpAddr::V6(a))));
    if out.len() > MAX_SYSTEM_ADDRS {
        return Err(ParseErrorKind::BadValue {
            field: "addrs".into(),
            reason: format!("more than {MAX_SYSTEM_ADDRS} addresses"),
        });
    }
    Ok(out)
}

fn adapter<'a>(
    mut tokens: impl Iterator<Item = &'a str>,
) -> Result<(Mac, NamedAdapter), ParseErrorKind> {
    let mac_text = tokens.next().unwrap_or("");
    let mac = Some(mac_text)
        .filter(|m| m.len() == 17 && m.split(':').count() == 6)
        .and_then(|m| Mac::parse(m.as_bytes()))
        .ok_or_else(|| ParseErrorKind::BadMac(mac_text.into()))?;
    let f = fields(tokens, &["name", "addrs", "gateways", "dns", "dhcp"])?;
    let get = |name: &str| f.get(name).copied().unwrap_or("");
    let dhcp = match get("dhcp") {
        "" | "0" => false,
        "1" => true,
        other => {
            return Err(ParseErrorKind::BadValue {
                field: "dhcp".into(),
                reason: format!("`{other}` is not 0 or 1"),
            })
        }
    };
    let interface = percent_decode(get("name")).map_err(|reason| ParseErrorKind::BadValue {
        field: "name".into(),
        reason,
    })?;
    let info = AdapterInfo {
        addrs: if_addrs(get("addrs"))?,
        gateways: list("gateways", get("gateways"))?,
        dns: list("dns", get("dns"))?,
        dhcp,
    };
    Ok((mac, NamedAdapter { interface, info }))
}

fn rest_as_bytes<'a>(
    tokens: impl Iterator<Item = &'a str>,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), ParseErrorKind> {
    let text = tokens.collect::<Vec<_>>().join(" ");
    decode_bytes_into(&text, out, limit).map_err(|why| {
        if why.starts_with("more than") {
            ParseErrorKind::TooLarge { limit }
        } else {
            ParseErrorKind::BadHex(why)
        }
    })
}

impl Recording {
    /// Parses a recording's bytes; text that is not UTF-8 is reported at its line.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Recording, ParseError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Recording::parse(text),
            Err(e) => {
                let good = &bytes[..e.valid_up_to()];
                let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
                // The lines before the bad one are UTF-8; an error among them comes first.
                let before = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let before = std::str::from_utf8(&good[..before]).unwrap_or("");
                Recording::parse(before)?;
                Err(ParseError {
                    line,
                    kind: ParseErrorKind::NotUtf8,
                })
            }
        }
    }

    /// Parses a recording. Never panics; the error names the first bad line.
    pub fn parse(text: &str) -> Result<Recording, ParseError> {
        let mut recording = Recording::default();
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, first)) if first == HEADER => {}
            _ => {
                return Err(ParseError {
                    line: 1,
                    kind: ParseErrorKind::MissingHeader,
                })
            }
        }
        let mut seen_sysinfo = false;
        let mut seen_layout = false;
        let mut last_time: Option<u64> = None;
        for (line, text) in lines {
            let at_line = |kind| ParseError { line, kind };
            let trimmed = text.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut tokens = trimmed.split_ascii_whitespace();
            let first = tokens.next().unwrap_or("");
            match first {
                "layout" => {
                    if seen_layout {
                        return Err(at_line(ParseErrorKind::DuplicateLayout));
                    }
                    seen_layout = true;
                    let name = tokens.next().unwrap_or("");
                    recording.layout = wire::Layout::from_name(name)
                        .ok_or_else(|| at_line(ParseErrorKind::BadLayout(name.into())))?;
                }
                "sysinfo" => {
                    if seen_sysinfo {
                        return Err(at_line(ParseErrorKind::DuplicateSysinfo));
                    }
                    seen_sysinfo = true;
                    recording.info = sysinfo(tokens).map_err(at_line)?;
                }
                "adapter" => {
                    let (mac, named) = adapter(tokens).map_err(at_line)?;
                    let holders = recording.adapters.entry(mac).or_default();
                    if holders.iter().any(|h| h.interface == named.interface) {
                        let what = format!("{mac} named `{}`", named.interface);
                        return Err(at_line(ParseErrorKind::DuplicateAdapter(what)));
                    }
                    if holders.len() == MAX_ADAPTER_CANDIDATES {
                        return Err(at_line(ParseErrorKind::TooManyAdapters(mac.to_string())));
                    }
                    holders.push(named);
                }
                "pool" => {
                    let n = tokens.next().unwrap_or("");
                    let pool = n
                        .parse::<u8>()
                        .ok()
                        .and_then(PoolId::from_u8)
                        .ok_or_else(|| at_line(ParseErrorKind::BadPool(n.into())))?;
                    let bytes = &mut recording.pools[pool.index()];
                    rest_as_bytes(tokens, bytes, MAX_POOL_BYTES).map_err(at_line)?;
                }
                t if t.starts_with(|c: char| c.is_ascii_digit()) => {
                    let ns: u64 = t
                        .parse()
                        .map_err(|_| at_line(ParseErrorKind::BadTime(t.into())))?;
                    if let Some(previous) = last_time.filter(|&p| p > ns) {
                        return Err(at_line(ParseErrorKind::TimeWentBack { previous, now: ns }));
                    }
                    last_time = Some(ns);
                    let mut tokens = tokens.peekable();
                    if tokens.next_if_eq(&"sysinfo").is_some() {
                        let info = sysinfo(tokens).map_err(at_line)?;
                        recording.info_changes.push((Instant(ns), info));
                        continue;
                    }
                    let dir = match tokens.next().unwrap_or("") {
                        "in" => Direction::In,
                        "out" => Direction::Out,
                        other => return Err(at_line(ParseErrorKind::BadDirection(other.into()))),
                    };
                    let mut bytes = Vec::new();
                    rest_as_bytes(tokens, &mut bytes, MAX_MESSAGE_BYTES).map_err(at_line)?;
                    recording.messages.push(DeviceMessage {
                        at: Instant(ns),
                        dir,
                        bytes,
                    });
                }
                other => return Err(at_line(ParseErrorKind::UnknownLine(other.into()))),
            }
        }
        Ok(recording)
    }

    /// The recording text.
    pub fn to_text(&self) -> String {
        self.render(false)
    }

    /// The recording text with a comment before each message saying what it is
    /// (the request decoded, the reply summarised). Parses to the same recording.
    pub fn to_annotated_text(&self) -> String {
        self.render(true)
    }

    fn render(&self, annotate: bool) -> String {
        let mut s = String::new();
        s.push_str(HEADER);
        s.push('\n');
        if self.layout != wire::Layout::FreeBsd {
            let _ = writeln!(s, "layout {}", self.layout.name());
        }
        let join = |items: Vec<String>| items.join(",");
        let _ = writeln!(s, "{}", sysinfo_line(&self.info));
        for (mac, a) in self
            .adapters
            .iter()
            .flat_map(|(m, all)| all.iter().map(move |a| (m, a)))
        {
            let name = percent_encode(&a.interface);
            let a = &a.info;
            let _ = writeln!(
                s,
                "adapter {mac} name={name} addrs={} gateways={} dns={} dhcp={}",
                join(
                    a.addrs
                        .iter()
                        .map(|x| format!("{}/{}", x.addr, x.prefix))
                        .collect()
                ),
                join(a.gateways.iter().map(ToString::to_string).collect()),
                join(a.dns.iter().map(ToString::to_string).collect()),
                u8::from(a.dhcp),
            );
        }
        for (n, bytes) in self.pools.iter().enumerate() {
            for (r, chunk) in bytes.chunks(POOL_RECORD_SIZE).enumerate() {
                if annotate {
                    let _ = writeln!(s, "# {} record {r}: {}", pool_file(n), record_text(chunk));
                }
                let _ = writeln!(s, "pool {n} {}", encode_bytes(chunk));
            }
        }
        let mut op: Option<Op> = None;
        let mut requests = 0usize;
        let mut changes = self.info_changes.iter().peekable();
        for m in &self.messages {
            while let Some((at, info)) = changes.next_if(|c| c.0 <= m.at) {
                let _ = writeln!(s, "{} {}", at.as_nanos(), sysinfo_line(info));
            }
            if annotate {
                match m.dir {
                    Direction::In => {
                        let (o, text) = describe_request(&m.bytes);
                        op = o;
                        let _ = writeln!(s, "# request #{requests}: {text}");
                        requests += 1;
                    }
                    Direction::Out => {
                        let _ = writeln!(s, "# {}", summarize(op, requests == 0, &m.bytes));
                    }
                }
            }
            let _ = write!(s, "{} {}", m.at.as_nanos(), m.dir.word());
            if !m.bytes.is_empty() {
                s.push(' ');
                s.push_str(&encode_bytes(&m.bytes));
            }
            s.push('\n');
        }
        for (at, info) in changes {
            let _ = writeln!(s, "{} {}", at.as_nanos(), sysinfo_line(info));
        }
        s
    }
}

/// The `sysinfo ...` line (without a time) for `i`.
pub fn sysinfo_line(i: &SystemInfo) -> String {
    let join = |items: Vec<String>| items.join(",");
    format!(
        "sysinfo fqdn={} os_name={} os_release={} machine={} addrs={}",
        percent_encode(&i.fqdn),
        percent_encode(&i.os_name),
        percent_encode(&i.os_release),
        percent_encode(&i.machine),
        join(
            i.addrs
                .iter()
                .map(|a| format!("{}%{}", a.addr, percent_encode(&a.interface)))
                .collect()
        ),
    )
}

impl fmt::Display for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

fn pool_file(n: usize) -> String {
    u8::try_from(n)
        .ok()
        .and_then(PoolId::from_u8)
        .map_or_else(|| format!("pool {n}"), |p| FileId::pool(p).file_name())
}

fn record_text(chunk: &[u8]) -> String {
    if chunk.len() != POOL_RECORD_SIZE {
        return format!("partial record of {} bytes", chunk.len());
    }
    let (k, v) = chunk.split_at(KVP_KEY_FIELD);
    let cut = |f: &[u8]| f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())].to_vec();
    format!(
        "{} = {}",
        crate::kvp::describe::text(&cut(k)),
        crate::kvp::describe::text(&cut(v))
    )
}

/// A message's layout, told by its length (Linux's are two bytes longer).
fn layout_of(bytes: &[u8]) -> wire::Layout {
    if bytes.len() == wire::Layout::Linux.message_size() {
        wire::Layout::Linux
    } else {
        wire::Layout::FreeBsd
    }
}

/// The operation a request names (when it names one) and a line describing it.
pub fn describe_request(bytes: &[u8]) -> (Option<Op>, String) {
    match layout_of(bytes).decode_request(bytes) {
        Ok(req) => (Some(req.op()), crate::kvp::describe::request(&req)),
        Err(e) => (e.op(), format!("malformed: {e}")),
    }
}

/// A reply (or the registration) in words.
pub fn summarize(op: Option<Op>, before_first_request: bool, bytes: &[u8]) -> String {
    let layout = layout_of(bytes);
    if bytes.len() != layout.message_size() {
        return format!(
            "{} bytes, not a {}-byte message",
            bytes.len(),
            layout.message_size()
        );
    }
    if before_first_request && matches!(bytes[0], 4 | 100) && bytes[1..].iter().all(|&b| b == 0) {
        return "registration".into();
    }
    if before_first_request {
        if let Some(version) = layout.registration_answer_version(bytes) {
            return format!(
                "the kernel's answer to the registration (driver version {})",
                crate::kvp::describe::text(&version)
            );
        }
    }
    crate::kvp::describe::reply(op, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_line_is_read_once() {
        let text = |body: &str| format!("{HEADER}\n{body}");
        let r = Recording::parse(&text("layout linux\n")).unwrap();
        assert_eq!(r.layout, wire::Layout::Linux);
        assert_eq!(
            Recording::parse(&text("")).unwrap().layout,
            wire::Layout::FreeBsd
        );
        let again = Recording::parse(&text("layout linux\nlayout freebsd\n")).unwrap_err();
        assert_eq!(again.kind, ParseErrorKind::DuplicateLayout);
        let bad = Recording::parse(&text("layout windows\n")).unwrap_err();
        assert_eq!(bad.kind, ParseErrorKind::BadLayout("windows".into()));
        // It round-trips, and is written only when not FreeBSD's.
        assert_eq!(Recording::parse(&r.to_text()).unwrap(), r);
        assert!(!Recording::default().to_text().contains("layout"));
    }
}
