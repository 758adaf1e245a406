//! Scenario files: a readable list of what happens, in time order.
//!
//! ```text
//! # What this scenario shows (comments start with #).
//! seed 7                          # for the crash model's choices (default 1)
//! pool guest a=1 "long key"="x y" # initial records of a pool file
//! fill external 300               # 300 records key0000=value0000 ...
//! tail guest 100                  # a 100-byte partial record at the end of the file
//!
//! at 0ms      set guest k v       # host requests: get, set, delete, enum POOL [INDEX],
//! at 10ms     get guest k         #   getip MAC, setip ADAPTER IPS MASKS GWS DNS [dhcp]
//! at 20ms     enum guest          # a whole ENUMERATE walk
//! at 30ms     raw op=7            # a malformed message: op=, pool=, len=, unterminated
//! at 40ms     append guest k v    # another program appends under the lock
//! at 50ms     truncate guest      # another program empties the file (cloud-init at boot)
//! at 55ms     remove guest k      # hv_kvp_cmd-style delete: later records copied down, cut
//! at 56ms     rewrite guest k v   # an in-place rewrite of the first record with key k
//! at 57ms     torn-append guest k v 600   # dies after writing 600 bytes of a record
//! at 60ms     crash | kill | crash-after N   # power loss, kill -9, power loss after N effects
//! at 70ms     fail fsync [FILE] | enospc write [FILE]
//! at 80ms     freeze | thaw | slow 6000ms | shutdown
//! ```
//!
//! VSS (the world gains the VSS devices, daemon, freezer and hooks when any of these
//! setup lines appears):
//!
//! ```text
//! mount ufs / /dev/da0p2          # TYPE PATH [SOURCE] [ro]
//! mount zfs /home zroot/home
//! hook 10-db exit=0 thaw-exit=0 takes=200ms thaw-takes=1s uid=0 mode=755
//! app exit=0 takes=100ms          # an application helper running one command
//! suspend-fails /var              # UFSSUSPEND of this mount fails
//! sync-takes 5s                   # zpool sync takes this long
//! watchdog 40s                    # the daemon's auto-thaw
//! policy zfs snapshot             # per-type action: suspend sync snapshot ignore veto
//!
//! at 1s  vss check | vss freeze | vss thaw   # after the previous VSS answer
//! at 1s  vss-now freeze           # at once, even while one is pending (the kernel drops it)
//! at 2s  vss-crash | freezer-crash | freezer-hang
//! ```
//!
//! Linux's VSS device and freeze (`linux` first, before any `mount`):
//!
//! ```text
//! linux                              # Layout::Linux, Linux's policy and kernel model
//! mount ext4 / /dev/sda2 dev=8:2     # dev=MAJOR:MINOR, the file system's identity
//! loop-image /dev/loop0 /data/images/disk0.img   # where a loop device's image lies
//! exec-stop-post                     # ExecStopPost=hv_vss_daemon --thaw-recorded
//! at 2s  vss-crash-both              # the daemon and its freezer killed together
//! ```
//!
//! Words are separated by spaces; `"..."` quotes (with `\"`, `\\`, `\n`, `\u{e9}`); an
//! unquoted `x*511` is 511 `x`. Pools: `external guest auto auto-external auto-internal`
//! or `0`..`4`. The expectation is not in the file: it is the scenario's snapshot.

use std::time::Duration;

use hvguest_core::kvp::effect::{FileId, IoError};
use hvguest_core::kvp::record::{encode_pool, Record};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{IpFields, PoolId, Request};
use hvguest_core::limits::{KVP_MSG_SIZE, MAX_POOL_RECORDS, POOL_RECORD_SIZE};
use hvguest_core::Instant;

use crate::fs::{FsCall, SimFs};
use crate::vss::{mount as mk_mount, SimProgram, VssSetup};
use crate::world::{Action, OutsideOp};
use hvguest_core::vss::hooks::HookEntry;
use hvguest_core::vss::policy::FsAction;
use hvguest_core::vss::wire::VssOp;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {what}")]
pub struct ScenarioError {
    pub line: usize,
    pub what: String,
}

/// A parsed scenario: the starting files and the timed actions.
#[derive(Debug)]
pub struct Scenario {
    pub seed: u64,
    pub fs: SimFs,
    pub steps: Vec<(Instant, Action)>,
    /// The VSS side, when any VSS setup line appears.
    pub vss: Option<VssSetup>,
}

fn words(line: &str) -> Result<Vec<(String, bool)>, String> {
    // A word runs to the next unquoted space; quoted parts may hold spaces and escapes,
    // so `"a key"="a value"` is one word.
    let mut out = Vec::new();
    let mut chars = line.chars();
    let mut word: Option<(String, bool)> = None;
    while let Some(c) = chars.next() {
        match c {
            '#' if word.is_none() => break,
            c if c.is_whitespace() => out.extend(word.take()),
            '"' => {
                let w = word.get_or_insert_with(|| (String::new(), false));
                w.1 = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote".into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => w.0.push('\n'),
                            Some('"') => w.0.push('"'),
                            Some('\\') => w.0.push('\\'),
                            Some('u') => {
                                let code: String =
                                    chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                                let ch = u32::from_str_radix(&code, 16)
                                    .ok()
                                    .and_then(char::from_u32)
                                    .ok_or_else(|| format!("bad escape \\u{{{code}}}"))?;
                                w.0.push(ch);
                            }
                            other => return Err(format!("bad escape \\{}", other.unwrap_or(' '))),
                        },
                        Some(c) => w.0.push(c),
                    }
                }
            }
            c => word.get_or_insert_with(|| (String::new(), false)).0.push(c),
        }
    }
    out.extend(word);
    Ok(out)
}

/// The longest word `x*N` may expand to: a whole device message. Anything longer has no
/// use in a scenario, and an unbounded `N` would exhaust memory instead of failing.
const MAX_EXPANDED: usize = KVP_MSG_SIZE;

/// The most a scenario may put in a pool file: one record more than the daemon accepts,
/// so that the over-limit case can still be written.
const MAX_POOL_FILE: usize = (MAX_POOL_RECORDS + 1) * POOL_RECORD_SIZE;

/// Expands `x*511` in unquoted words.
fn expand(w: &(String, bool)) -> Result<String, String> {
    let (text, quoted) = w;
    if !quoted {
        if let Some((body, n)) = text.rsplit_once('*') {
            if let (false, Ok(n)) = (body.is_empty(), n.parse::<usize>()) {
                return match body.len().checked_mul(n) {
                    Some(len) if len <= MAX_EXPANDED => Ok(body.repeat(n)),
                    _ => Err(format!(
                        "{text:?} expands to more than {MAX_EXPANDED} bytes"
                    )),
                };
            }
        }
    }
    Ok(text.clone())
}

pub fn pool(w: &str) -> Result<PoolId, String> {
    Ok(match w {
        "external" | "0" => PoolId::External,
        "guest" | "1" => PoolId::Guest,
        "auto" | "2" => PoolId::Auto,
        "auto-external" | "parameters" | "3" => PoolId::AutoExternal,
        "auto-internal" | "4" => PoolId::AutoInternal,
        _ => return Err(format!("unknown pool {w:?}")),
    })
}

fn key(s: &str) -> Result<Key, String> {
    Key::new(s.as_bytes()).map_err(|e| format!("key {s:?}: {e}"))
}

fn value(s: &str) -> Result<Value, String> {
    Value::new(s.as_bytes()).map_err(|e| format!("value: {e}"))
}

fn time(w: &str) -> Result<Instant, String> {
    let (num, scale) = if let Some(n) = w.strip_suffix("ms") {
        (n, 1_000_000.0)
    } else if let Some(n) = w.strip_suffix('s') {
        (n, 1_000_000_000.0)
    } else {
        return Err(format!("time {w:?} needs a unit: ms or s"));
    };
    let v: f64 = num.parse().map_err(|_| format!("bad time {w:?}"))?;
    if !(0.0..1e6).contains(&v) {
        return Err(format!("time {w:?} out of range"));
    }
    Ok(Instant((v * scale) as u64))
}

fn duration(w: &str) -> Result<Duration, String> {
    Ok(Duration::from_nanos(time(w)?.as_nanos()))
}

fn call(w: &str) -> Result<FsCall, String> {
    Ok(match w {
        "read" => FsCall::Read,
        "write" => FsCall::Write,
        "set-len" | "truncate" => FsCall::SetLen,
        "fsync" => FsCall::Fsync,
        "stat" => FsCall::Stat,
        "lock" => FsCall::Lock,
        _ => return Err(format!("unknown call {w:?}")),
    })
}

fn pair(w: &str) -> Result<Record, String> {
    let (k, v) = w
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {w:?}"))?;
    Ok(Record::new(key(k)?, value(v)?))
}

fn raw(args: &[String]) -> Result<Vec<u8>, String> {
    let mut m = vec![0u8; KVP_MSG_SIZE];
    let mut len = KVP_MSG_SIZE;
    for a in args {
        let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
        let num = || {
            v.parse::<usize>()
                .map_err(|_| format!("bad number in {a:?}"))
        };
        match k {
            "op" => m[0] = num()? as u8,
            "pool" => m[1] = num()? as u8,
            "len" => len = num()?,
            "unterminated" => m[16..16 + 512].fill(b'Z'),
            _ => return Err(format!("unknown raw field {a:?}")),
        }
    }
    m.resize(len, 0);
    Ok(m)
}

fn action(w: &[String]) -> Result<Action, String> {
    let arg = |i: usize| {
        w.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("{}: missing argument {i}", w[0]))
    };
    let host = |r: Request| Ok(Action::Host(r));
    match w[0].as_str() {
        "get" => host(Request::Get {
            pool: pool(arg(1)?)?,
            key: key(arg(2)?)?,
        }),
        "set" => host(Request::Set {
            pool: pool(arg(1)?)?,
            key: key(arg(2)?)?,
            value: value(arg(3)?)?,
        }),
        "delete" => host(Request::Delete {
            pool: pool(arg(1)?)?,
            key: key(arg(2)?)?,
        }),
        "enum" => match w.get(2) {
            None => Ok(Action::Walk(pool(arg(1)?)?)),
            Some(i) => host(Request::Enumerate {
                pool: pool(arg(1)?)?,
                index: i.parse().map_err(|_| format!("bad index {i:?}"))?,
            }),
        },
        "getip" => host(Request::GetIpInfo {
            adapter_id: arg(1)?.as_bytes().to_vec(),
            addr_family: 0,
        }),
        "setip" => host(Request::SetIpInfo(IpFields {
            adapter_id: arg(1)?.as_bytes().to_vec(),
            ip_addr: arg(2)?.as_bytes().to_vec(),
            sub_net: arg(3)?.as_bytes().to_vec(),
            gate_way: arg(4)?.as_bytes().to_vec(),
            dns_addr: arg(5)?.as_bytes().to_vec(),
            dhcp_enabled: u8::from(w.get(6).is_some_and(|d| d == "dhcp")),
            addr_family: 0,
        })),
        "raw" => Ok(Action::HostRaw(raw(&w[1..])?)),
        "append" => Ok(Action::Append {
            pool: pool(arg(1)?)?,
            key: key(arg(2)?)?,
            value: value(arg(3)?)?,
        }),
        "truncate" => Ok(Action::Truncate(pool(arg(1)?)?)),
        "remove" => Ok(Action::Outside(
            pool(arg(1)?)?,
            OutsideOp::Remove { key: key(arg(2)?)? },
        )),
        "rewrite" => Ok(Action::Outside(
            pool(arg(1)?)?,
            OutsideOp::Rewrite {
                key: key(arg(2)?)?,
                value: value(arg(3)?)?,
            },
        )),
        "torn-append" => Ok(Action::Outside(
            pool(arg(1)?)?,
            OutsideOp::TornAppend {
                key: key(arg(2)?)?,
                value: value(arg(3)?)?,
                bytes: arg(4)?.parse().map_err(|_| "bad byte count".to_string())?,
            },
        )),
        "crash" => Ok(Action::Crash),
        "kill" => Ok(Action::Kill),
        "crash-after" => Ok(Action::CrashAfter(
            arg(1)?.parse().map_err(|_| "bad count".to_string())?,
        )),
        "fail" | "enospc" => {
            let error = if w[0] == "fail" {
                IoError::EIO
            } else {
                IoError::ENOSPC
            };
            let file = match w.get(2) {
                None => None,
                Some(p) => Some(match p.strip_suffix(".journal") {
                    Some(j) => FileId::journal(pool(j)?).file_name(),
                    None => FileId::pool(pool(p)?).file_name(),
                }),
            };
            Ok(Action::Fault {
                call: call(arg(1)?)?,
                file,
                error,
            })
        }
        "freeze" => Ok(Action::Freeze),
        "thaw" => Ok(Action::Thaw),
        "slow" => Ok(Action::Slow(duration(arg(1)?)?)),
        "shutdown" => Ok(Action::Shutdown),
        "vss" | "vss-now" => {
            let op = match arg(1)? {
                "check" => VssOp::Check,
                "freeze" => VssOp::Freeze,
                "thaw" => VssOp::Thaw,
                other => return Err(format!("vss {other:?}: check, freeze or thaw")),
            };
            Ok(if w[0] == "vss" {
                Action::Vss(op)
            } else {
                Action::VssNow(op)
            })
        }
        "vss-crash" => Ok(Action::VssCrash),
        "freezer-crash" => Ok(Action::FreezerCrash),
        "vss-crash-both" => Ok(Action::VssCrashBoth),
        "freezer-hang" => Ok(Action::FreezerHang),
        other => Err(format!("unknown step {other:?}")),
    }
}

/// `key=value` options of a setup line.
fn options(words: &[String]) -> Result<Vec<(String, String)>, String> {
    words
        .iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("expected key=value, got {w:?}"))
        })
        .collect()
}

fn vss_setup(v: &mut VssSetup, w: &[String]) -> Result<(), String> {
    let arg = |i: usize| {
        w.get(i)
            .cloned()
            .ok_or_else(|| format!("{}: missing argument", w[0]))
    };
    match w[0].as_str() {
        "mount" => {
            let ro = w.iter().skip(3).any(|x| x == "ro");
            let source = w
                .get(3)
                .filter(|x| *x != "ro" && !x.starts_with("dev="))
                .cloned()
                .unwrap_or_else(|| arg(1).unwrap_or_default());
            let mut m = mk_mount(&arg(1)?, &arg(2)?, &source, ro);
            if let Some(dev) = w.iter().skip(3).find_map(|x| x.strip_prefix("dev=")) {
                let (a, b) = dev.split_once(':').ok_or("dev=MAJOR:MINOR")?;
                let n = |x: &str| x.parse::<i32>().map_err(|_| format!("bad dev {dev:?}"));
                m.fsid = Some(hvguest_core::vss::policy::Fsid([n(a)?, n(b)?]));
            }
            v.mounts.push(m);
        }
        "linux" => {
            use hvguest_core::vss::wire::Layout;
            v.config.layout = Layout::Linux;
            v.config.policy = hvguest_core::vss::policy::Policy::for_layout(Layout::Linux);
        }
        "loop-image" => v.loop_images.push((arg(1)?, arg(2)?)),
        "exec-stop-post" => v.exec_stop_post = true,
        "hook" | "app" => {
            let mut prog = SimProgram::default();
            let mut entry = HookEntry {
                name: String::new(),
                regular_file: true,
                uid: 0,
                mode: 0o755,
            };
            let rest = if w[0] == "hook" {
                w.get(2..).unwrap_or(&[])
            } else {
                &w[1..]
            };
            for (k, val) in options(rest)? {
                let num = |x: &str| x.parse::<i64>().map_err(|_| format!("bad number {x:?}"));
                match k.as_str() {
                    "exit" => prog.exit_freeze = num(&val)? as i32,
                    "thaw-exit" => prog.exit_thaw = num(&val)? as i32,
                    "takes" => prog.takes = duration(&val)?,
                    "thaw-takes" => prog.thaw_takes = Some(duration(&val)?),
                    "uid" => entry.uid = num(&val)? as u32,
                    "mode" => {
                        entry.mode =
                            u32::from_str_radix(&val, 8).map_err(|_| format!("bad mode {val:?}"))?
                    }
                    _ => return Err(format!("unknown option {k:?}")),
                }
            }
            if w[0] == "hook" {
                entry.name = arg(1)?;
                v.hooks.push((entry, prog));
            } else {
                v.app = Some(prog);
            }
        }
        "suspend-fails" => v.suspend_fails = Some(arg(1)?),
        "sync-takes" => v.sync_takes = duration(&arg(1)?)?,
        "watchdog" => v.config.watchdog = duration(&arg(1)?)?,
        _ => {
            let action =
                FsAction::parse(&arg(2)?).ok_or("policy TYPE suspend|sync|snapshot|ignore|veto")?;
            v.set_policy(&arg(1)?, action);
        }
    }
    Ok(())
}

/// Parses a scenario; every error names its line.
pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    let mut sc = Scenario {
        seed: 1,
        fs: SimFs::new(),
        steps: Vec::new(),
        vss: None,
    };
    let mut last = Instant::ZERO;
    for (n, line) in text.lines().enumerate() {
        let err = |what: String| ScenarioError { line: n + 1, what };
        let w: Vec<String> = words(line)
            .map_err(err)?
            .iter()
            .map(expand)
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let Some(first) = w.first() else { continue };
        match first.as_str() {
            "seed" => {
                sc.seed = w
                    .get(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| err("seed needs a number".into()))?
            }
            "pool" | "fill" | "tail" => {
                let p = pool(w.get(1).ok_or_else(|| err("which pool?".into()))?).map_err(err)?;
                let name = FileId::pool(p).file_name();
                let mut bytes = sc.fs.contents(&name).to_vec();
                match first.as_str() {
                    "pool" => {
                        let recs: Vec<Record> = w[2..]
                            .iter()
                            .map(|x| pair(x))
                            .collect::<Result<_, _>>()
                            .map_err(err)?;
                        bytes.extend(encode_pool(&recs));
                    }
                    "fill" => {
                        let count: usize = w
                            .get(2)
                            .and_then(|c| c.parse().ok())
                            .filter(|&c| c <= MAX_POOL_FILE / POOL_RECORD_SIZE)
                            .ok_or_else(|| {
                                err(format!(
                                    "fill needs a count of at most {}",
                                    MAX_POOL_FILE / POOL_RECORD_SIZE
                                ))
                            })?;
                        let recs: Vec<Record> = (0..count)
                            .map(|i| pair(&format!("key{i:04}=value{i:04}")))
                            .collect::<Result<_, _>>()
                            .map_err(err)?;
                        bytes.extend(encode_pool(&recs));
                    }
                    _ => {
                        let count: usize = w
                            .get(2)
                            .and_then(|c| c.parse().ok())
                            .filter(|&c| c <= MAX_POOL_FILE)
                            .ok_or_else(|| {
                                err(format!("tail needs a size of at most {MAX_POOL_FILE}"))
                            })?;
                        bytes.extend(std::iter::repeat_n(0xEE, count));
                    }
                }
                if bytes.len() > MAX_POOL_FILE {
                    return Err(err(format!("pool file over {MAX_POOL_FILE} bytes")));
                }
                sc.fs.set_len(&name, 0).map_err(|e| err(format!("{e:?}")))?;
                sc.fs
                    .write(&name, 0, &bytes)
                    .map_err(|e| err(format!("{e:?}")))?;
            }
            "mount" | "hook" | "app" | "suspend-fails" | "sync-takes" | "watchdog" | "policy"
            | "linux" | "loop-image" | "exec-stop-post" => {
                let v = sc.vss.get_or_insert_with(VssSetup::default);
                vss_setup(v, &w).map_err(err)?;
            }
            "at" => {
                let t =
                    time(w.get(1).ok_or_else(|| err("at needs a time".into()))?).map_err(err)?;
                if t < last {
                    return Err(err("steps must be in time order".into()));
                }
                last = t;
                if w.len() < 3 {
                    return Err(err("at TIME needs a step".into()));
                }
                sc.steps.push((t, action(&w[2..]).map_err(err)?));
            }
            other => return Err(err(format!("unknown line {other:?}"))),
        }
    }
    sc.fs.sync_all();
    Ok(sc)
}

/// Runs a scenario and returns whether every invariant held, with its full trace.
pub fn run(sc: Scenario) -> (Result<crate::world::Stats, crate::world::Failure>, String) {
    use crate::world::{SimOptions, World};
    let opts = SimOptions {
        seed: sc.seed,
        requests: 0,
        faults: false,
        keep_trace: true,
    };
    let mut world = World::new(opts, sc.fs);
    if let Some(v) = sc.vss {
        world = world.with_vss(v);
    }
    let (result, lines) = world.run_scenario(sc.steps);
    let mut text = lines.join("\n");
    text.push('\n');
    (result, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_line() {
        let sc = parse(
            "# comment\nseed 3\npool guest a=1 \"k k\"=\"v \\u{e9}\"\nfill external 2\ntail guest 7\n\
             at 0ms set guest k x*3\nat 1.5s enum guest\nat 2s fail fsync guest.journal\nat 2s raw op=7 len=10\n",
        )
        .unwrap();
        assert_eq!(sc.seed, 3);
        assert_eq!(sc.fs.contents(".kvp_pool_1").len(), 2 * 2560 + 7);
        assert_eq!(sc.fs.contents(".kvp_pool_0").len(), 2 * 2560);
        assert_eq!(
            sc.steps[0],
            (
                Instant::ZERO,
                Action::Host(Request::Set {
                    pool: PoolId::Guest,
                    key: key("k").unwrap(),
                    value: value("xxx").unwrap()
                })
            )
        );
        assert_eq!(
            sc.steps[1],
            (Instant::from_millis(1500), Action::Walk(PoolId::Guest))
        );
        assert!(
            matches!(&sc.steps[2].1, Action::Fault { file: Some(f), .. } if f == ".kvp_pool_1.journal")
        );
        assert!(matches!(&sc.steps[3].1, Action::HostRaw(b) if b.len() == 10 && b[0] == 7));
    }

    #[test]
    fn errors_name_their_line() {
        assert_eq!(parse("seed 1\nat 5 get guest k").unwrap_err().line, 2);
        assert_eq!(
            parse("at 5ms get nowhere k").unwrap_err().what,
            "unknown pool \"nowhere\""
        );
        assert!(parse("at 5ms get guest \"open").is_err());
        assert_eq!(
            parse("at 5ms set guest k v\nat 1ms get guest k")
                .unwrap_err()
                .line,
            2
        );
        assert!(parse(&format!("at 0ms set guest {} v", "k".repeat(512))).is_err());
    }
}
