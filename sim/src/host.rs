//! `SimHost`: sends requests (from a scenario or a seeded random workload), keeps a
//! reference model of what it stored, and checks every reply against it.
//!
//! The model holds, per (pool, key), the set of values a reply may show: one value when
//! the outcome is known, several after a request that failed (a failure means "not
//! known": it may or may not have been applied). A later reply that shows one of them
//! settles it. `None` stands for "absent".

use std::collections::BTreeMap;

use hvguest_core::kvp::auto::{SystemInfo, INTEGRATION_VERSION};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{IpFields, PoolId, Reply, Request, Status};

use crate::network::Network;
use crate::prng::Prng;

/// Keys the host owns never start with this; outside writers' keys always do.
pub const OUTSIDE_PREFIX: &str = "CLOUD_INIT|";

#[derive(Clone, Debug, Default)]
pub struct Model {
    cells: BTreeMap<(PoolId, Key), Vec<Option<Value>>>,
    /// Mutations answered E_FAIL that the daemon may still be carrying out (a write
    /// stuck on a suspended file system finishes after its failure reply): until the
    /// daemon is idle, a read may see the state before them and a later read after.
    in_flight: Vec<(PoolId, Key, Option<Value>)>,
    /// Later duplicates of a key in a pool file (other programs' doing), in file order:
    /// a DELETE of the first match reveals the next.
    dups: BTreeMap<(PoolId, Key), Vec<Value>>,
    /// Keys whose duplicates a failed DELETE may or may not have uncovered: `dups`
    /// still lists them (enumeration may show them), but which is first is not known
    /// until a read settles it.
    dups_unsure: std::collections::BTreeSet<(PoolId, Key)>,
}

impl Model {
    pub fn possible(&self, p: PoolId, k: &Key) -> &[Option<Value>] {
        const ABSENT: &[Option<Value>] = &[None];
        self.cells
            .get(&(p, k.clone()))
            .map_or(ABSENT, |v| v.as_slice())
    }

    pub fn settle(&mut self, p: PoolId, k: &Key, v: Option<Value>) {
        self.cells.insert((p, k.clone()), vec![v]);
    }

    pub fn doubt(&mut self, p: PoolId, k: &Key, v: Option<Value>) {
        let cell = self
            .cells
            .entry((p, k.clone()))
            .or_insert_with(|| vec![None]);
        if !cell.contains(&v) {
            cell.push(v.clone());
        }
        self.in_flight.push((p, k.clone(), v));
    }

    /// Keeps `v` possible for a key while another writer's change to it may land (the
    /// tool's, in progress or not yet settled by a recovery); idempotent.
    pub fn hold(&mut self, p: PoolId, k: &Key, v: Option<Value>) {
        let cell = self
            .cells
            .entry((p, k.clone()))
            .or_insert_with(|| vec![None]);
        if !cell.contains(&v) {
            cell.push(v.clone());
        }
        let held = (p, k.clone(), v);
        if !self.in_flight.contains(&held) {
            self.in_flight.push(held);
        }
    }

    /// Another writer's change to `v` is known not to have happened (the tool said so):
    /// `v` is no longer possible for the key, unless `before` (what was possible when
    /// the change began) had it. If nothing else is left, `before` is.
    pub fn release(&mut self, p: PoolId, k: &Key, v: &Option<Value>, before: &[Option<Value>]) {
        if before.contains(v) {
            return;
        }
        self.in_flight
            .retain(|(fp, fk, fv)| !(*fp == p && fk == k && fv == v));
        let cell = self
            .cells
            .entry((p, k.clone()))
            .or_insert_with(|| vec![None]);
        cell.retain(|x| x != v);
        if cell.is_empty() {
            cell.extend(before.iter().cloned());
        }
    }

    /// A read saw `v`: that is the value now, but a failed mutation still in flight may
    /// yet land.
    pub fn observe(&mut self, p: PoolId, k: &Key, v: Option<Value>) {
        if v.is_none() && self.dups_unsure.remove(&(p, k.clone())) {
            // Absent: the failed DELETEs removed the duplicates too.
            self.dups.remove(&(p, k.clone()));
        }
        let mut cell = vec![v];
        for (fp, fk, fv) in &self.in_flight {
            if *fp == p && fk == k && !cell.contains(fv) {
                cell.push(fv.clone());
            }
        }
        self.cells.insert((p, k.clone()), cell);
    }

    /// Another program rewrote the first match of a key the host also writes, in place
    /// and durably: its value is the latest, as if a read had seen it.
    pub fn rewritten(&mut self, p: PoolId, k: &Key, v: Value) {
        if self.cells.contains_key(&(p, k.clone())) {
            self.observe(p, k, Some(v));
        }
    }

    /// Adopts a record found in a file, in file order.
    pub fn adopt(&mut self, p: PoolId, k: &Key, v: Value) {
        if self.cells.contains_key(&(p, k.clone())) {
            self.dups.entry((p, k.clone())).or_default().push(v);
        } else {
            self.settle(p, k, Some(v));
        }
    }

    /// Another program appended a record for `k` (the model knows its one value): a
    /// later duplicate, or the first match if the key was absent.
    pub fn appended(&mut self, p: PoolId, k: &Key, v: Value) {
        if self.dups_unsure.contains(&(p, k.clone())) {
            return;
        }
        if self.possible(p, k) == [None] {
            self.dups.remove(&(p, k.clone()));
            self.settle(p, k, Some(v));
        } else {
            self.dups.entry((p, k.clone())).or_default().push(v);
        }
    }

    /// Whether a failed DELETE left it unknown which duplicate of `k` is first.
    pub fn dups_unsure(&self, p: PoolId, k: &Key) -> bool {
        self.dups_unsure.contains(&(p, k.clone()))
    }

    /// Later duplicates of a key (shown by enumeration, hidden from GET).
    pub fn dup_values(&self, p: PoolId, k: &Key) -> &[Value] {
        self.dups.get(&(p, k.clone())).map_or(&[], Vec::as_slice)
    }

    /// The value a DELETE of the first match leaves visible.
    fn after_delete(&mut self, p: PoolId, k: &Key) -> Option<Value> {
        let next = self
            .dups
            .get_mut(&(p, k.clone()))
            .and_then(|d| (!d.is_empty()).then(|| d.remove(0)));
        if self.dups.get(&(p, k.clone())).is_some_and(Vec::is_empty) {
            self.dups.remove(&(p, k.clone()));
        }
        next
    }

    /// An acknowledged DELETE.
    pub fn deleted(&mut self, p: PoolId, k: &Key) {
        if self.dups_unsure.contains(&(p, k.clone())) {
            // Any duplicate, or none, may be first now.
            self.in_flight.retain(|(fp, fk, _)| !(*fp == p && fk == k));
            let mut cell = vec![None];
            cell.extend(self.dup_values(p, k).iter().cloned().map(Some));
            self.cells.insert((p, k.clone()), cell);
            return;
        }
        let next = self.after_delete(p, k);
        self.acknowledged(p, k, next);
    }

    /// An acknowledged DELETE that a dead daemon may also have carried out.
    pub fn deleted_once_or_twice(&mut self, p: PoolId, k: &Key) {
        self.deleted(p, k);
        let cell = self
            .cells
            .entry((p, k.clone()))
            .or_insert_with(|| vec![None]);
        if !cell.contains(&None) {
            cell.push(None);
        }
    }

    /// A DELETE that failed: with duplicates behind it, any of them may now show.
    pub fn delete_in_doubt(&mut self, p: PoolId, k: &Key) {
        let later = self.dup_values(p, k).to_vec();
        if !later.is_empty() {
            self.dups_unsure.insert((p, k.clone()));
        }
        for v in later {
            self.doubt(p, k, Some(v));
        }
        self.doubt(p, k, None);
    }

    /// An acknowledged mutation: it ran after everything before it on the file lane.
    pub fn acknowledged(&mut self, p: PoolId, k: &Key, v: Option<Value>) {
        self.in_flight.retain(|(fp, fk, _)| !(*fp == p && fk == k));
        self.settle(p, k, v);
    }

    /// Whether a failed mutation may still land.
    pub fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// The daemon is idle (or gone): nothing is in flight any more.
    pub fn quiesce(&mut self) {
        self.in_flight.clear();
    }

    /// Another program emptied the pool file.
    pub fn truncated(&mut self, p: PoolId) {
        for ((pool, _), cell) in self.cells.iter_mut() {
            if *pool == p {
                *cell = vec![None];
            }
        }
        self.dups.retain(|(pool, _), _| *pool != p);
        self.dups_unsure.retain(|(pool, _)| *pool != p);
    }

    pub fn keys(&self, p: PoolId) -> impl Iterator<Item = (&Key, &Vec<Option<Value>>)> {
        self.cells
            .iter()
            .filter(move |((pool, _), _)| *pool == p)
            .map(|((_, k), v)| (k, v))
    }
}

/// A reply that contradicts the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch(pub String);

/// What the host is doing with one request.
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: u64,
    /// `None` for raw (malformed) bytes.
    pub request: Option<Request>,
}

/// An ENUMERATE walk in progress.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub pool: Option<PoolId>,
    pub next: u32,
    pub seen: Vec<(Key, Value)>,
    /// A mutation or failure interleaved: completeness is not checked.
    pub disturbed: bool,
}

fn is_host_key(k: &Key) -> bool {
    !k.as_bytes().starts_with(OUTSIDE_PREFIX.as_bytes())
}

pub fn model_pools() -> [PoolId; 4] {
    PoolId::FILE_BACKED
}

/// Checks one reply and updates the model. Catches: a GET that is not the first match
/// (index or lookup bugs), a DELETE that reveals the wrong duplicate or reports OK for
/// nothing, a wrong status, a mutation visible after it was answered NOT_FOUND, and
/// (through the host's own codec) any field at a wrong offset. `failed_ok`: an E_FAIL on a read is
/// acceptable (an I/O fault was injected, or the kernel timed the request out).
/// `redelivered`: the kernel handed the request to a restarted daemon after its
/// predecessor may already have carried it out, so a DELETE may find nothing.
pub fn check_reply(
    model: &mut Model,
    auto: &ExpectedAuto,
    req: &Request,
    reply: &Reply,
    failed_ok: bool,
    redelivered: bool,
) -> Result<(), Mismatch> {
    let bad = |what: String| Err(Mismatch(what));
    let fail = reply.status() == Status::E_FAIL;
    match (req, reply) {
        // Refused in every pool with exactly INVALID_ARG; nothing is stored.
        (Request::Set { key, .. }, r) if key.is_empty() => match r.status() {
            Status::INVALID_ARG => {}
            Status::E_FAIL if failed_ok => {}
            s => {
                return bad(format!(
                    "SET of an empty key: status {s:?}, want INVALID_ARG"
                ))
            }
        },
        (
            Request::Set {
                pool: PoolId::Auto, ..
            },
            r,
        )
        | (
            Request::Delete {
                pool: PoolId::Auto, ..
            },
            r,
        ) => {
            if r.status() != Status::S_CONT && !fail {
                return bad(format!("auto pool change answered {r:?}"));
            }
        }
        (
            Request::Get {
                pool: PoolId::Auto,
                key,
            },
            r,
        ) => {
            let want = auto.get(key).cloned();
            match r {
                Reply::Value(v) if Some(v) == want.as_ref() => {}
                Reply::Status(Status::S_CONT) if want.is_none() => {}
                _ if fail => {}
                _ => return bad(format!("auto GET {key:?}: {r:?}, want {want:?}")),
            }
        }
        (
            Request::Enumerate {
                pool: PoolId::Auto,
                index,
            },
            r,
        ) => {
            let want = auto.entry(*index);
            match (r, want) {
                (Reply::Entry { key, value }, Some((k, v))) if key == k && value == v => {}
                (Reply::Status(Status::S_CONT), None) => {}
                _ if fail => {}
                _ => return bad(format!("auto ENUMERATE {index}: {r:?}")),
            }
        }
        (Request::Set { pool, key, value }, r) => match r.status() {
            Status::OK => model.acknowledged(*pool, key, Some(value.clone())),
            Status::E_FAIL => model.doubt(*pool, key, Some(value.clone())),
            s => return bad(format!("SET {pool:?} {key:?}: status {s:?}")),
        },
        (Request::Delete { pool, key }, r) => match r.status() {
            Status::OK => {
                if !model.possible(*pool, key).iter().any(Option::is_some) {
                    return bad(format!(
                        "DELETE {pool:?} {key:?}: OK for a key that was never there"
                    ));
                }
                if redelivered {
                    // The daemon that died may have deleted the first match already:
                    // this one then deleted the next.
                    model.deleted_once_or_twice(*pool, key);
                } else {
                    model.deleted(*pool, key);
                }
            }
            Status::S_CONT => {
                if !redelivered && !model.possible(*pool, key).contains(&None) {
                    return bad(format!(
                        "DELETE {pool:?} {key:?}: not found, want {:?}",
                        model.possible(*pool, key)
                    ));
                }
                model.acknowledged(*pool, key, None);
            }
            Status::E_FAIL => model.delete_in_doubt(*pool, key),
            s => return bad(format!("DELETE {pool:?} {key:?}: status {s:?}")),
        },
        (Request::Get { pool, key }, r) => {
            if !is_host_key(key) {
                return Ok(());
            }
            let got = match r {
                Reply::Value(v) => Some(v.clone()),
                Reply::Status(Status::S_CONT) => None,
                Reply::Status(Status::E_FAIL) if failed_ok => return Ok(()),
                other => return bad(format!("GET {pool:?} {key:?}: {other:?}")),
            };
            if !model.possible(*pool, key).contains(&got) {
                return bad(format!(
                    "GET {pool:?} {key:?}: {got:?}, want one of {:?}",
                    model.possible(*pool, key)
                ));
            }
            model.observe(*pool, key, got);
        }
        (Request::Enumerate { pool, .. }, r) => match r {
            Reply::Entry { key, value } => {
                if is_host_key(key)
                    && !model.possible(*pool, key).contains(&Some(value.clone()))
                    && !model.dup_values(*pool, key).contains(value)
                {
                    return bad(format!(
                        "ENUMERATE {pool:?}: {key:?}={value:?}, want one of {:?}",
                        model.possible(*pool, key)
                    ));
                }
            }
            Reply::Status(Status::S_CONT) => {}
            Reply::Status(Status::E_FAIL) if failed_ok => {}
            other => return bad(format!("ENUMERATE {pool:?}: {other:?}")),
        },
        (Request::GetIpInfo { .. }, _) | (Request::SetIpInfo(_), _) => {}
    }
    Ok(())
}

/// Catches enumeration that skips or repeats records (a DELETE that duplicates the
/// record it moves, recovery that finishes a change twice).
/// Checks a finished, undisturbed walk: every key known present was seen with its value
/// and nothing known absent was; settles what it saw.
pub fn check_walk(model: &mut Model, walk: &Walk) -> Result<(), Mismatch> {
    let Some(pool) = walk.pool else { return Ok(()) };
    let mut seen: BTreeMap<&Key, &Value> = BTreeMap::new();
    for (k, v) in &walk.seen {
        if !is_host_key(k) || !model.dup_values(pool, k).is_empty() {
            continue; // duplicates: enumeration shows them all, in an order DELETE may change
        }
        if seen.insert(k, v).is_some() {
            return Err(Mismatch(format!("ENUMERATE {pool:?}: {k:?} twice")));
        }
    }
    let mut settle = Vec::new();
    for (k, cell) in model.keys(pool) {
        if !is_host_key(k) || !model.dup_values(pool, k).is_empty() {
            continue;
        }
        let got = seen.get(k).map(|v| (*v).clone());
        if !cell.contains(&got) {
            return Err(Mismatch(format!(
                "ENUMERATE {pool:?}: {k:?} seen as {got:?}, want one of {cell:?}"
            )));
        }
        settle.push((k.clone(), got));
    }
    for (k, got) in settle {
        model.observe(pool, &k, got);
    }
    Ok(())
}

/// The random workload: biased towards hot keys, long and non-ASCII text, walks that
/// race mutations, and malformed requests.
pub struct Workload {
    prng: Prng,
    /// The device message size of the world's kernel: malformed messages are built at
    /// it (one defect each) or cut short of it.
    pub msg_len: usize,
    /// The world runs on Linux's kernel: SET_IP_INFO names the adapter by its GUID.
    pub linux: bool,
}

pub enum Next {
    Request(Request),
    Raw(Vec<u8>),
    /// Start an ENUMERATE walk of this pool.
    Walk(PoolId),
}

impl Workload {
    pub fn new(prng: Prng) -> Workload {
        Workload {
            prng,
            msg_len: crate::host_wire::MSG_LEN,
            linux: false,
        }
    }

    pub fn think_ms(&mut self) -> u64 {
        if self.prng.chance(1, 10) {
            self.prng.range(50, 500)
        } else {
            self.prng.below(20)
        }
    }

    fn pool(&mut self) -> PoolId {
        *self.prng.choose(&[
            PoolId::External,
            PoolId::External,
            PoolId::Guest,
            PoolId::Guest,
            PoolId::AutoExternal,
            PoolId::AutoInternal,
            PoolId::Auto,
        ])
    }

    pub fn key(&mut self) -> Key {
        let n = self.prng.below(100);
        let text = match n {
            0..=59 => format!("hot{}", self.prng.below(4)),
            60..=84 => format!("key{}", self.prng.below(40)),
            85..=89 => format!("{}{}", "L".repeat(508), self.prng.below(10)),
            90..=94 => format!("ключ{}", self.prng.below(5)),
            _ => format!("鍵😀{}", self.prng.below(5)),
        };
        Key::new(text.as_bytes()).expect("generated keys fit")
    }

    pub fn value(&mut self) -> Value {
        let n = self.prng.below(100);
        let text = match n {
            0..=69 => format!("v{}", self.prng.next_u64() % 100_000),
            70..=79 => String::new(),
            80..=89 => "x".repeat(self.prng.range(1000, 2047) as usize),
            _ => format!("valeur-é-{}-中文", self.prng.below(1000)),
        };
        Value::new(text.as_bytes()).expect("generated values fit")
    }

    pub fn next_action(&mut self) -> Next {
        let n = self.prng.below(1000);
        match n {
            0..=339 => Next::Request(Request::Set {
                pool: self.pool(),
                key: self.key(),
                value: self.value(),
            }),
            // Now and then a SET of an empty key, which must be refused (INVALID_ARG).
            340..=349 => Next::Request(Request::Set {
                pool: self.pool(),
                key: Key::default(),
                value: self.value(),
            }),
            350..=599 => Next::Request(Request::Get {
                pool: self.pool(),
                key: self.key(),
            }),
            600..=769 => Next::Request(Request::Delete {
                pool: self.pool(),
                key: self.key(),
            }),
            770..=849 => Next::Walk(self.pool()),
            850..=899 => Next::Request(Request::Enumerate {
                pool: self.pool(),
                index: self.prng.below(20) as u32,
            }),
            900..=929 => Next::Request(Request::GetIpInfo {
                adapter_id: (*self.prng.choose(&[
                    "00:15:5D:01:02:03",
                    "00:15:5d:aa:bb:cc",
                    "bogus",
                ]))
                .into(),
                addr_family: 0,
            }),
            930..=959 => Next::Request(Request::SetIpInfo(IpFields {
                ip_addr: (*self.prng.choose(&[
                    "10.0.0.9",
                    "10.0.0.9;$(reboot)",
                    "fe80::1;10.0.0.2",
                ]))
                .into(),
                // On Linux the host's GUID (one draw more, Linux worlds only): a NIC
                // the world has, in either case, one it may have, one it never has,
                // or FreeBSD's form, which Linux refuses.
                adapter_id: match self.linux {
                    false => b"hn0".to_vec(),
                    true => match self.prng.below(5) {
                        0 | 1 => crate::network::HN0_GUID.as_bytes().to_vec(),
                        2 => crate::network::HN0_GUID.to_uppercase().into_bytes(),
                        3 => crate::network::HN1_GUID.as_bytes().to_vec(),
                        _ => match self.prng.chance(1, 2) {
                            true => crate::network::STRANGER_GUID.as_bytes().to_vec(),
                            false => b"hn0".to_vec(),
                        },
                    },
                },
                sub_net: b"255.255.255.0".to_vec(),
                gate_way: b"10.0.0.1".to_vec(),
                dns_addr: b"10.0.0.2".to_vec(),
                ..Default::default()
            })),
            _ => Next::Raw(self.malformed()),
        }
    }

    fn malformed(&mut self) -> Vec<u8> {
        // One defect each (the world holds the status to its expectation, see
        // `host_wire::malformed_status`); the fields are otherwise well-formed.
        let mut m = vec![0u8; self.msg_len];
        match self.prng.below(7) {
            0 => m[0] = self.prng.range(6, 255) as u8,
            1 => {
                m[0] = self.prng.below(4) as u8;
                m[1] = self.prng.range(5, 255) as u8;
            }
            2 => {
                // SET, key field full: key @16, 512 bytes.
                m[0] = 1;
                m[16..16 + 512].fill(b'Z');
            }
            3 => {
                // SET of a short key, value field full: value @528, 2048 bytes.
                m[0] = 1;
                m[16] = b'k';
                m[528..528 + 2048].fill(b'V');
            }
            4 => {
                // GET, key field full.
                m[1] = self.prng.below(5) as u8;
                m[16..16 + 512].fill(b'G');
            }
            5 => {
                // DELETE, key field full: key @8, 512 bytes.
                m[0] = 2;
                m[1] = self.prng.below(5) as u8;
                m[8..8 + 512].fill(b'D');
            }
            _ => m.truncate(self.prng.below(self.msg_len as u64) as usize),
        }
        m
    }
}

/// The auto pool the host expects: ten keys in order, each with its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedAuto {
    entries: Vec<(Key, Value)>,
}

impl ExpectedAuto {
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn entry(&self, index: u32) -> Option<(&Key, &Value)> {
        self.entries.get(index as usize).map(|(k, v)| (k, v))
    }
}

/// The auto pool the host expects, from the system information the daemon was given,
/// the world's interfaces (`network`, with kvp.conf's choice among them) and its
/// kvp.conf `auto.<Key>` values (`overrides`, key name and value). Written from the
/// spec's table (docs/protocol/kvp.md §4.1) and kvp.conf(5), not with the core's
/// `AutoPool`; overrides are applied by name: a core that put a value under the wrong
/// key, or kept the system's, disagrees with this.
pub fn expected_auto(
    info: &SystemInfo,
    network: &Network,
    overrides: &[(String, String)],
) -> ExpectedAuto {
    let release = info.os_release.as_str();
    let version = release.split('-').next().unwrap_or_default();
    let mut numbers = version.split('.');
    let (major, minor) = (numbers.next(), numbers.next());
    let (v4, v6) = network.expected_auto_lists();
    let system: [(&str, &str); 10] = [
        ("FullyQualifiedDomainName", &info.fqdn),
        ("IntegrationServicesVersion", INTEGRATION_VERSION),
        ("NetworkAddressIPv4", &v4),
        ("NetworkAddressIPv6", &v6),
        ("OSBuildNumber", version),
        ("OSName", &info.os_name),
        ("OSMajorVersion", major.unwrap_or_default()),
        ("OSMinorVersion", minor.unwrap_or_default()),
        ("OSVersion", version),
        ("ProcessorArchitecture", &info.machine),
    ];
    let entries = system
        .iter()
        .map(|(name, value)| {
            let set = overrides.iter().find(|(k, _)| k == name);
            let text = set.map_or(*value, |(_, v)| v.as_str());
            let key = Key::new(name.as_bytes()).expect("the spec's keys fit");
            (key, Value::truncated(text.as_bytes()))
        })
        .collect();
    ExpectedAuto { entries }
}

/// One kvp.conf `auto.<Key>` setting for a random world: the key, spelled here from
/// the spec's table (docs/protocol/kvp.md §4.1), and a value.
pub fn random_auto_override(prng: &mut Prng) -> (String, String) {
    let key = *prng.choose(&[
        "FullyQualifiedDomainName",
        "IntegrationServicesVersion",
        "NetworkAddressIPv4",
        "NetworkAddressIPv6",
        "OSBuildNumber",
        "OSName",
        "OSMajorVersion",
        "OSMinorVersion",
        "OSVersion",
        "ProcessorArchitecture",
    ]);
    let value = match prng.below(4) {
        0 => "web1.contoso.com".to_string(),
        1 => "FreeBSD (web tier)".to_string(),
        2 => format!("valeur-é-{}-中文", prng.below(1000)),
        // The longest value the host reads back whole.
        _ => "x".repeat(1022),
    };
    (key.to_string(), value)
}
