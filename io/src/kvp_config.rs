//! The configuration file of `hv_kvp_daemon` and `hvkvp`, by default
//! [`DEFAULT_CONFIG`] (`/usr/local/etc/hvguest/kvp.conf` on FreeBSD, `/etc/hvguest/kvp.conf` on
//! Linux).
//!
//! A missing file means the defaults ([`defaults`]); [`SAMPLE`], installed as
//! `kvp.conf.sample`, spells every one of them out. A file that cannot be read, or any
//! line that is not understood, is an error naming the file and the line: the daemon
//! refuses to start and `hvkvp` to write rather than guess. The lines are those of
//! every hvguest configuration file ([`crate::conf`]), as in `vss.conf`.
//!
//! This module only reads the file: what each setting does is decided in
//! `hvguest_core::kvp` (`KvpConfig`), which both programs are handed.
//!
//! # Keys
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `auto.<Key>` | none | shown as `<Key>` in the auto pool (pool 2) instead of what the system says; `<Key>` is one of the ten auto-pool keys, exactly (`hvguest_core::kvp::auto::AUTO_KEYS`), another is an unknown key; the value is the rest of the line, at most 1022 UTF-16 units and 2047 bytes |
//! | `max_records` | `10000` | the most records a SET may grow one pool file to, the host's or `hvkvp set`'s; 1 to 32768. The host's own limit is the smaller of this and its budget of 1024 records (`KvpConfig::host_limit`) |
//! | `exclude_interfaces` | `lo*` | interfaces (shell globs against the whole name, space-separated, at most 64; `none`: none) whose addresses never appear in the auto pool and which GET_IP_INFO never answers for (`hvguest_core::kvp::addresses`) |
//! | `address_order` | `ipv4-first` | `ipv4-first`, `ipv6-first` or `kernel`: the order of an adapter's addresses in GET_IP_INFO; within a family the kernel's order (primary address first), link-local last |

use std::path::{Path, PathBuf};

use hvguest_core::kvp::addresses::{AddressOrder, Glob};
use hvguest_core::kvp::auto::AUTO_KEYS;
use hvguest_core::kvp::machine::KvpConfig;
use hvguest_core::limits::MAX_POOL_RECORDS;

use crate::conf::{self, BadLine, Problem};

/// Where the daemon and `hvkvp` look when not told otherwise.
pub const DEFAULT_CONFIG: &str = crate::system::KVP_CONFIG;

/// kvp.conf's `pool_mode`: who may read the pool files (the daemon's files; the core
/// never sees it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// 0600: root only.
    Private,
    /// 0644: every user may read them.
    Readable,
}

impl PoolMode {
    /// The pool files' permission bits.
    pub fn file_bits(self) -> u32 {
        match self {
            PoolMode::Private => 0o600,
            PoolMode::Readable => 0o644,
        }
    }

    /// A new pool directory's permission bits: readers must be able to get in.
    pub fn dir_bits(self) -> u32 {
        match self {
            PoolMode::Private => 0o700,
            PoolMode::Readable => 0o755,
        }
    }
}

/// Everything kvp.conf says: the core's part and the driver's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub kvp: KvpConfig,
    /// `None`: not set; new files 0600, existing ones left as they are.
    pub pool_mode: Option<PoolMode>,
}

/// A complete configuration equal to the defaults, with comments: installed as
/// `kvp.conf.sample`.
pub const SAMPLE: &str = "\
# kvp.conf: configuration of hv_kvp_daemon and hvkvp.
#
# Every setting below is the default; a missing file means the same.
# One `key = value` per line. Lines starting with # are comments; a value
# cannot contain #. Unknown keys and keys set twice are errors.

# The most records a SET may grow one pool file to (1 to 32768), whoever asks:
# the host's SET is refused with a failure status (S_CONT, nothing stored) and
# one log line naming the pool; `hvkvp set` is refused with the reason.
# Changing a key in place and deleting are always allowed. The host may never
# fill a pool past 1024 records (its budget, which bounds the daemon's memory):
# its limit is the smaller of the two, so only a value under 1024 changes what
# the host may store.
max_records = 10000

# Interfaces the host is never shown: their addresses stay out of the auto
# pool's NetworkAddressIPv4/IPv6, and GET_IP_INFO never answers with them (it
# takes the next interface holding the MAC, a vlan(4) over hn0 or a lagg, or
# fails when there is none).
# Shell patterns (* ? [a-z] [!a-z]) matched against the whole name, separated
# by spaces; `none` excludes none. A list replaces the default, so keep lo*
# in it (a cloned loopback such as lo1 for jails matches it; a renamed one
# must be listed by its name). Loopback, link-local and unspecified addresses
# are never shown in the auto pool, whatever this says. For example:
#   exclude_interfaces = lo* bridge* tap* epair* wg*
exclude_interfaces = lo*

# The order of an adapter's addresses in GET_IP_INFO, which is what Hyper-V
# Manager, Get-VMNetworkAdapter and the Vagrant and Packer providers show
# (they connect to the first): ipv4-first, ipv6-first, or kernel (as
# ifconfig lists them). Within a family the interface's primary address
# comes first and link-local addresses last.
address_order = ipv4-first

# The mode of the five pool files the daemon keeps: 0600 (readable by root
# only) or 0644 (readable by every user, for setups whose programs read the
# pools without root). When set, the daemon sets it on the files at start and
# creates new ones with it, and a new pool directory is made 0700 or 0755 to
# match (an existing one is left as it is, and must let such readers in).
# Unset, new files are 0600 and existing ones keep their mode (the stock
# FreeBSD daemon's are 0604, the stock Linux daemon's 0644). Journals are
# always 0600. For example:
#   pool_mode = 0600

# What the auto pool (pool 2) shows the host, key by key, instead of what the
# system says: FullyQualifiedDomainName, IntegrationServicesVersion,
# NetworkAddressIPv4, NetworkAddressIPv6, OSBuildNumber, OSName,
# OSMajorVersion, OSMinorVersion, OSVersion, ProcessorArchitecture (exactly so
# spelled; any other auto.<Key> is an error). The value is the rest of the
# line. None by default, for example:
#   auto.FullyQualifiedDomainName = web1.contoso.com
#   auto.OSName = FreeBSD (web tier)
";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum KvpConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {problem}", path.display())]
    Bad {
        path: PathBuf,
        /// 1-based.
        line: usize,
        problem: Problem,
    },
}

/// The configuration a missing file means.
pub fn defaults() -> KvpConfig {
    KvpConfig::default()
}

/// Reads `path`: the defaults if it does not exist, else [`parse`] of its contents.
pub fn load(path: &Path) -> Result<KvpConfig, KvpConfigError> {
    load_settings(path).map(|s| s.kvp)
}

/// [`load`], with the driver's settings too (the daemon's `pool_mode`).
pub fn load_settings(path: &Path) -> Result<Settings, KvpConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => parse_settings(&bytes).map_err(|b| KvpConfigError::Bad {
            path: path.to_path_buf(),
            line: b.line,
            problem: b.problem,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(source) => Err(KvpConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The core's part of a configuration file, over [`defaults`].
pub fn parse(text: &[u8]) -> Result<KvpConfig, BadLine> {
    parse_settings(text).map(|s| s.kvp)
}

/// The contents of a configuration file, over the defaults.
pub fn parse_settings(text: &[u8]) -> Result<Settings, BadLine> {
    let mut pool_mode = None;
    let mut cfg = defaults();
    for setting in conf::settings(text, is_known)? {
        match setting.key {
            "pool_mode" => {
                pool_mode = Some(match setting.value {
                    "0600" => PoolMode::Private,
                    "0644" => PoolMode::Readable,
                    _ => return Err(setting.bad_value("must be 0600 or 0644".to_string())),
                })
            }
            "max_records" => {
                cfg.max_records =
                    count(setting.value, MAX_POOL_RECORDS).map_err(|why| setting.bad_value(why))?
            }
            "exclude_interfaces" => {
                // A value cannot be empty: `none` spells the empty list.
                let words = match setting.value {
                    "none" => "",
                    list => list,
                };
                let patterns = words
                    .split_ascii_whitespace()
                    .map(Glob::new)
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(|p| cfg.addresses.set_exclude(p));
                patterns.map_err(|e| setting.bad_value(e.to_string()))?
            }
            "address_order" => {
                cfg.addresses.order = AddressOrder::parse(setting.value).ok_or_else(|| {
                    setting.bad_value(format!("must be one of {}", AddressOrder::NAMES.join(", ")))
                })?
            }
            key => {
                let name = key
                    .strip_prefix("auto.")
                    .expect("is_known admits only auto.<Key> besides the keys above");
                cfg.auto
                    .set(name, setting.value)
                    .map_err(|e| setting.bad_value(e.to_string()))?
            }
        }
    }
    Ok(Settings {
        kvp: cfg,
        pool_mode,
    })
}

fn is_known(key: &str) -> bool {
    matches!(
        key,
        "max_records" | "exclude_interfaces" | "address_order" | "pool_mode"
    ) || key
        .strip_prefix("auto.")
        .is_some_and(|k| AUTO_KEYS.contains(&k))
}

/// A whole number from 1 to `max`.
fn count(value: &str, max: usize) -> Result<usize, String> {
    let bad = || format!("must be a whole number from 1 to {max}");
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(text: &str) -> BadLine {
        match parse(text.as_bytes()) {
            Ok(c) => panic!("{text:?} accepted: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn pool_mode_is_0600_or_0644() {
        let mode = |t: &str| parse_settings(t.as_bytes()).map(|s| s.pool_mode);
        assert_eq!(mode(""), Ok(None));
        assert_eq!(mode("pool_mode = 0644\n"), Ok(Some(PoolMode::Readable)));
        assert_eq!(mode("pool_mode = 0600\n"), Ok(Some(PoolMode::Private)));
        for bad in ["0666", "644", "0755", "readable"] {
            let e = mode(&format!("pool_mode = {bad}\n")).unwrap_err();
            assert_eq!(e.line, 1, "{bad}");
        }
        assert_eq!(
            (
                PoolMode::Readable.file_bits(),
                PoolMode::Readable.dir_bits()
            ),
            (0o644, 0o755)
        );
        assert_eq!(
            (PoolMode::Private.file_bits(), PoolMode::Private.dir_bits()),
            (0o600, 0o700)
        );
    }

    #[test]
    fn the_sample_is_the_defaults() {
        assert_eq!(parse(SAMPLE.as_bytes()), Ok(defaults()));
    }

    #[test]
    fn the_sample_is_the_packaged_file() {
        let packaged = include_str!("../../packaging/kvp.conf.sample");
        assert_eq!(
            packaged, SAMPLE,
            "packaging/kvp.conf.sample differs from SAMPLE"
        );
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse(b"\n# nothing\n"), Ok(defaults()));
        assert_eq!(defaults().max_records, 10_000);
    }

    #[test]
    fn a_missing_file_is_the_defaults_and_an_unreadable_one_an_error() {
        let dir = std::env::temp_dir().join(format!("hvguest-kvpconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir.join("absent.conf")).unwrap(), defaults());
        // A directory cannot be read as a file.
        let e = load(&dir).unwrap_err();
        assert!(matches!(e, KvpConfigError::Unreadable { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn max_records() {
        assert_eq!(parse(b"max_records = 50").unwrap().max_records, 50);
        assert_eq!(parse(b"max_records=32768").unwrap().max_records, 32768);
        for v in ["0", "32769", "-1", "+5", "1e3", "10 000", "many"] {
            let e = bad(&format!("# c\nmax_records = {v}"));
            assert_eq!(e.line, 2, "{v}");
            assert_eq!(
                e.to_string(),
                format!("line 2: `max_records = {v}`: must be a whole number from 1 to 32768")
            );
        }
    }

    #[test]
    fn interfaces_and_order() {
        let c =
            parse(b"exclude_interfaces = lo* bridge* tap[0-9]\naddress_order = kernel").unwrap();
        let names: Vec<&str> = c.addresses.exclude().iter().map(Glob::as_str).collect();
        assert_eq!(names, ["lo*", "bridge*", "tap[0-9]"]);
        assert!(!c.addresses.shows("tap3") && c.addresses.shows("hn0"));
        assert_eq!(c.addresses.order, AddressOrder::Kernel);
        let none = parse(b"exclude_interfaces = none").unwrap();
        assert!(none.addresses.exclude().is_empty());
        assert_eq!(
            bad("exclude_interfaces = tap[0-9").to_string(),
            "line 1: `exclude_interfaces = tap[0-9`: `[` opens a set that no `]` closes"
        );
        assert_eq!(
            bad("address_order = ipv6").to_string(),
            "line 1: `address_order = ipv6`: must be one of ipv4-first, ipv6-first, kernel"
        );
    }

    #[test]
    fn auto_keys() {
        let c = parse(
            b"auto.OSName = FreeBSD (web tier)\nauto.FullyQualifiedDomainName=web1.contoso.com",
        )
        .unwrap();
        assert_eq!(
            c.auto.get("OSName").unwrap().to_string(),
            "FreeBSD (web tier)"
        );
        assert_eq!(
            c.auto.get("FullyQualifiedDomainName").unwrap().to_string(),
            "web1.contoso.com"
        );
        assert!(c.auto.get("OSVersion").is_none());
        // Not one of the ten: an unknown key, naming the line.
        for k in ["auto.OSname", "auto.", "auto.Foo", "Auto.OSName"] {
            assert_eq!(
                bad(&format!("\n{k} = x")),
                BadLine {
                    line: 2,
                    problem: Problem::UnknownKey(k.to_string())
                }
            );
        }
        let long = format!("auto.OSName = {}", "x".repeat(1023));
        assert_eq!(
            bad(&long).to_string(),
            format!(
                "line 1: `auto.OSName = {}`: 1023 UTF-16 units long; the host reads at most 1022",
                "x".repeat(1023)
            )
        );
        assert_eq!(
            bad("auto.OSName = a\nauto.OSName = b").problem,
            Problem::Duplicate {
                key: "auto.OSName".into(),
                first: 1
            }
        );
    }

    #[test]
    fn lines_follow_the_shared_syntax() {
        assert_eq!(
            bad("max_record = 5").to_string(),
            "line 1: unknown key `max_record`"
        );
        assert_eq!(
            bad("max_records = 5\nmax_records = 6").to_string(),
            "line 2: `max_records` is set twice (first on line 1)"
        );
        assert_eq!(
            bad("max_records = 5 # five").problem,
            Problem::BadCharacter("max_records".into())
        );
        assert_eq!(bad("\n\nmax_records").problem, Problem::NotKeyValue);
    }
}
