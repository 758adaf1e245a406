//! `hvkvp`: reads and writes the Hyper-V key/value (Data Exchange) pools from inside the
//! guest. See hvkvp(1).
//!
//! Every read and write goes through `hvguest_io::pool_access`, which runs the daemon's
//! own persistence jobs with the daemon's own file executor: the same locks, the same
//! journal, the same recovery. So `hvkvp`, `hv_kvp_daemon` and programs that append to
//! the pools (cloud-init, azure-init) can run at the same time without losing a record.
//! Reading never writes: `list`, `get`, `host` and `watch` show a pool file as it is and
//! say what recovery would do; `set`, `delete` and `clear` recover first, and `repair`
//! only does that.
//!
//! Exit status: 0 found or done, 1 key not found (`get`, `delete`, and `host` when the
//! host published nothing), 2 usage, refusal or I/O error.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use hvguest_core::kvp::auto::AutoPool;
use hvguest_core::kvp::describe::pool_label;
use hvguest_core::kvp::effect::FileStamp;
use hvguest_core::kvp::jobs::JobEvent;
use hvguest_core::kvp::machine::KvpConfig;
use hvguest_core::kvp::pool::Pool;
use hvguest_core::kvp::record::{PoolIssue, Record};
use hvguest_core::kvp::text::{Key, TextError, Value};
use hvguest_core::kvp::wire::PoolId;
use hvguest_core::limits::{HOST_SAFE_KEY_UNITS, HOST_SAFE_VALUE_UNITS, MAX_POOL_RECORDS};
use hvguest_io::kvp_config;
use hvguest_io::pool_access::{AccessError, Change, PoolAccess};
use hvguest_io::sysinfo;
use serde::Serialize;

const DEFAULT_POOL_DIR: &str = hvguest_io::system::POOL_DIR;
/// Keys longer than this (in characters) do not widen the key column (the longest key the
/// host publishes in pool 3 has 43).
const KEY_COLUMN_MAX: usize = 48;
/// `--value-file` reads at most this much (a value holds at most 2047 bytes).
const VALUE_FILE_LIMIT: u64 = 1 << 20;

const EXIT_NOT_FOUND: u8 = 1;
const EXIT_TROUBLE: u8 = 2;

/// Reads and writes the Hyper-V key/value (Data Exchange) pools from inside the guest.
#[derive(Parser, Debug)]
#[command(
    name = "hvkvp",
    version,
    about,
    long_about = "Reads and writes the Hyper-V key/value (Data Exchange) pools from inside the \
guest, with the same locks, journal and crash recovery as hv_kvp_daemon, so it is safe to use \
while the daemon and other pool writers (cloud-init, azure-init) run. Reading (list, get, host, \
watch) never writes: a pool left half-changed by an interrupted writer is shown as it is, with a \
note; `repair` (or hv_kvp_daemon) settles it.\n\n\
Pools, by name or number: external (0, pushed by the host's administrator), guest (1, published \
by this VM; the only pool hvkvp writes without --force), auto (2, what hv_kvp_daemon reports \
about this system, computed by the same code; never stored or written), auto-external or parameters (3, what the host publishes about itself and this VM), \
auto-internal (4).\n\n\
Exit status: 0 found or done, 1 key not found, 2 usage, refusal or I/O error.",
    after_help = "Examples:\n  hvkvp host\n  hvkvp list guest\n  hvkvp get parameters VirtualMachineName\n  \
hvkvp set guest Role web-frontend\n  hvkvp delete guest Role\n  hvkvp clear guest\n  hvkvp watch external"
)]
struct Cli {
    /// The configuration file, kvp.conf(5): `set` keeps to its max_records, the auto
    /// pool shows its auto.<Key> values (a missing file means the defaults).
    #[arg(long, global = true, value_name = "FILE", default_value = kvp_config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Where the pool files live.
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_POOL_DIR)]
    pool_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone, Copy)]
struct Format {
    /// Print JSON (UTF-8; bytes that are not UTF-8 show as U+FFFD) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Clone, Copy)]
struct Force {
    /// Also write pools other than guest, and keys or values longer than the host reads
    /// whole (254 and 1022 UTF-16 units) or not UTF-8.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the records of a pool in file order, or of every pool kept in a file.
    List {
        /// The pool, by name or number (default: every pool kept in a file).
        #[arg(value_enum)]
        pool: Option<PoolArg>,
        #[command(flatten)]
        format: Format,
    },
    /// Print the value of a key (its first record, as the host's GET sees it).
    ///
    /// Printed as stored, except on a terminal, where control characters are shown
    /// escaped (`\n`, `\u{1b}`) as `list` shows them.
    Get {
        /// The pool, by name or number.
        #[arg(value_enum)]
        pool: PoolArg,
        /// The key (exact, case-sensitive).
        key: String,
        #[command(flatten)]
        format: Format,
        /// Print the value's bytes as stored even on a terminal.
        #[arg(long, conflicts_with = "json")]
        raw: bool,
    },
    /// Set a key: update its first record in place, or append one. Durable on success.
    Set {
        /// The pool: guest (or 1); others only with --force.
        #[arg(value_enum)]
        pool: PoolArg,
        /// The key (exact, case-sensitive).
        key: String,
        /// The value (put `--` before a value that starts with `-`).
        #[arg(
            allow_negative_numbers = true,
            required_unless_present = "value_file",
            conflicts_with = "value_file"
        )]
        value: Option<String>,
        /// Read the value from FILE, byte for byte (`-`: standard input).
        #[arg(short = 'f', long, value_name = "FILE")]
        value_file: Option<PathBuf>,
        #[command(flatten)]
        force: Force,
    },
    /// Delete a key: every record that holds it. Durable on success.
    Delete {
        /// The pool: guest (or 1); others only with --force.
        #[arg(value_enum)]
        pool: PoolArg,
        /// The key (exact, case-sensitive).
        key: String,
        #[command(flatten)]
        force: Force,
    },
    /// Empty a pool: delete every record it holds, safely while hv_kvp_daemon and other
    /// writers run (for image capture and deprovisioning).
    ///
    /// Each record is removed by a journaled DELETE, as `delete` does: an interrupted
    /// clear leaves whole records, and running it again finishes. Records other programs
    /// add meanwhile stay. Prints how many records were removed.
    Clear {
        /// The pool: guest (or 1, the default); others only with --force.
        #[arg(value_enum)]
        pool: Option<PoolArg>,
        #[command(flatten)]
        force: Force,
    },
    /// Summarize what the host publishes in pool 3: VM name and id, host names, host OS.
    Host {
        #[command(flatten)]
        format: Format,
    },
    /// Print a pool's records, then each change as it happens, until interrupted.
    ///
    /// One line per key: `+ key = value` (added), `- key` (removed), `~ key = value`
    /// (changed). A key's first record counts, as the host's GET sees it. Lines are
    /// prefixed with `[pool]` when every pool is watched.
    Watch {
        /// The pool, by name or number (default: every pool kept in a file).
        #[arg(value_enum)]
        pool: Option<PoolArg>,
        #[command(flatten)]
        format: Format,
        /// Milliseconds between two looks at the files.
        #[arg(long, hide = true, value_name = "MS", default_value_t = 500)]
        interval_ms: u64,
        /// Stop after this many looks.
        #[arg(long, hide = true, value_name = "N")]
        count: Option<u64>,
    },
    /// Repair a pool, or every pool kept in a file, as hv_kvp_daemon does at start.
    ///
    /// Finishes or discards a change an interrupted writer left in the journal, and cuts
    /// a torn trailing record; prints what it did. Reading commands never repair.
    Repair {
        /// The pool, by name or number (default: every pool kept in a file).
        #[arg(value_enum)]
        pool: Option<PoolArg>,
    },
    /// Print a completion script for SHELL on standard output.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// A pool given by name, alias or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PoolArg(PoolId);

impl ValueEnum for PoolArg {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            PoolArg(PoolId::External),
            PoolArg(PoolId::Guest),
            PoolArg(PoolId::Auto),
            PoolArg(PoolId::AutoExternal),
            PoolArg(PoolId::AutoInternal),
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let (number, help) = match self.0 {
            PoolId::External => ("0", "pool 0: pushed by the host's administrator"),
            PoolId::Guest => ("1", "pool 1: published by this VM for the host"),
            PoolId::Auto => ("2", "pool 2: generated by hv_kvp_daemon, not stored"),
            PoolId::AutoExternal => ("3", "pool 3: published by the host (alias: parameters)"),
            PoolId::AutoInternal => ("4", "pool 4: host-internal, usually empty"),
        };
        let mut v = PossibleValue::new(self.0.name()).alias(number).help(help);
        if self.0 == PoolId::AutoExternal {
            v = v.alias("parameters");
        }
        Some(v)
    }
}

/// How a command ends when it does not succeed.
#[derive(Debug)]
struct Fail {
    code: u8,
    /// Printed on standard error after `hvkvp: `; none when there is nothing to say.
    message: Option<String>,
}

impl Fail {
    fn trouble(message: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_TROUBLE,
            message: Some(message.into()),
        }
    }

    fn not_found(message: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_NOT_FOUND,
            message: Some(message.into()),
        }
    }
}

impl From<AccessError> for Fail {
    fn from(e: AccessError) -> Fail {
        let hint = match &e {
            AccessError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                " (hvkvp opens the pool files read-write to lock them, as hv_kvp_daemon does: \
                 run it as root)"
            }
            AccessError::AutoPool => {
                " and keeps them nowhere, so there is nothing to watch: `hvkvp list auto` \
                 computes them now, as the daemon does"
            }
            _ => "",
        };
        Fail::trouble(format!("{e}{hint}"))
    }
}

/// Standard output, written in whole pieces. A reader that went away ends us quietly.
fn emit(text: &str) -> Result<(), Fail> {
    emit_bytes(text.as_bytes())
}

fn emit_bytes(bytes: &[u8]) -> Result<(), Fail> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(Fail {
            code: 0,
            message: None,
        }),
        Err(e) => Err(Fail::trouble(format!("writing to standard output: {e}"))),
    }
}

fn warn(message: &str) {
    // Nowhere left to report a failed write to stderr.
    let _ = writeln!(io::stderr(), "hvkvp: {message}");
}

/// How a command uses the pools: reading them as they are (`list`, `get`, `host`,
/// `watch`: nothing is written), or changing them, which repairs them first (`set`,
/// `delete`, `repair`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    Read,
    Change,
}

/// The sentences worth telling about what the jobs found or did, in order: the core's
/// words for each event (`core::kvp::describe`, the daemon's log says the same), with
/// what a reader of `hvkvp` can do about a change left waiting.
fn findings(events: Vec<JobEvent>, how: Use) -> Vec<String> {
    let mut out = Vec::new();
    for e in events {
        match &e {
            JobEvent::JournalPending { pool, .. } => out.push(format!(
                "{e}; shown as the file holds it now (run `hvkvp repair {}`, or let \
                 hv_kvp_daemon settle it: it does when it starts, and before it next \
                 changes the pool)",
                pool.name()
            )),
            JobEvent::Loaded { pool, issues, .. } => {
                for issue in issues {
                    match issue {
                        // A reader leaves the tail; a writer cuts it (`PartialRecordCut`).
                        PoolIssue::PartialRecord { bytes } if how == Use::Read => {
                            out.push(format!(
                                "{} ends with a torn record ({bytes} bytes): a writer stopped \
                                 in the middle of an append; it is not shown, and recovery \
                                 would cut it (`hvkvp repair {}`, or hv_kvp_daemon)",
                                pool_label(*pool),
                                pool.name()
                            ))
                        }
                        PoolIssue::TooManyRecords { total } => out.push(format!(
                            "{} holds {total} records; only the first {MAX_POOL_RECORDS} are \
                             read and shown, and no new key can be added to it",
                            pool_label(*pool)
                        )),
                        _ => {}
                    }
                }
            }
            _ => out.push(e.to_string()),
        }
    }
    out
}

/// Tells on standard error what the jobs found or repaired on the way (a crashed
/// writer's leftovers).
fn report(access: &mut PoolAccess, how: Use) {
    for note in findings(access.take_events(), how) {
        warn(&format!("note: {note}"));
    }
}

// ---------------------------------------------------------------------------------------
// Text and JSON.

/// A key or value for text output: lossy UTF-8, control characters escaped.
fn shown(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Key/value rows, the key column padded to the longest key of at most
/// `KEY_COLUMN_MAX` characters; longer keys push their value right.
fn table(out: &mut String, rows: &[(String, String)]) {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .filter(|&n| n <= KEY_COLUMN_MAX)
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        if v.is_empty() {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{k}");
        } else {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
    }
}

/// Bytes as JSON text: lossy UTF-8 (a pool holds bytes; JSON holds text).
fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// One record as `{"key":…,"value":…}`.
#[derive(Serialize)]
struct JsonRecord<'a> {
    key: Cow<'a, str>,
    value: Cow<'a, str>,
}

/// Every record of a pool, in file order.
fn json_records(pool: &Pool) -> Vec<JsonRecord<'_>> {
    pool.records()
        .iter()
        .map(|r| JsonRecord {
            key: text(r.key.as_bytes()),
            value: text(r.value.as_bytes()),
        })
        .collect()
}

/// Pools as `{"external":[…],"guest":[…],…}`, in the order given (`serde_json`'s own
/// map would sort them).
struct JsonPools<'a>(&'a [(PoolId, Pool)]);

impl Serialize for JsonPools<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(p, records)| (p.name(), json_records(records))),
        )
    }
}

/// Key/value pairs as one JSON object, in file order (`serde_json`'s own map would sort
/// them).
struct JsonPairs<'a>(&'a [(Vec<u8>, Vec<u8>)]);

impl Serialize for JsonPairs<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (text(k), text(v))))
    }
}

/// `value` as one line of compact JSON.
fn json_line(value: &impl Serialize) -> Result<String, Fail> {
    let mut line =
        serde_json::to_string(value).map_err(|e| Fail::trouble(format!("writing JSON: {e}")))?;
    line.push('\n');
    Ok(line)
}

fn rows(pool: &Pool) -> Vec<(String, String)> {
    pool.records()
        .iter()
        .map(|r| (shown(r.key.as_bytes()), shown(r.value.as_bytes())))
        .collect()
}

/// Each key's first record (the one GET answers), in file order.
fn first_records(pool: &Pool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut seen = HashSet::new();
    pool.records()
        .iter()
        .filter(|r| seen.insert(r.key.as_bytes()))
        .map(|r| (r.key.as_bytes().to_vec(), r.value.as_bytes().to_vec()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Checking what is to be written.

fn text_refusal(what: &str, e: TextError) -> Fail {
    match e {
        TextError::TooLong { len, field } => Fail::trouble(format!(
            "the {what} is {len} bytes long; a pool record's {what} field holds at most {} bytes",
            field - 1
        )),
        TextError::Nul { at } => Fail::trouble(format!(
            "the {what} holds a NUL byte (at byte {at}); pool records end strings at NUL"
        )),
    }
}

/// A key as given: it must fit a record's field (refused otherwise, whatever `--force`).
fn key_arg(key: &str) -> Result<Key, Fail> {
    Key::new(key.as_bytes()).map_err(|e| text_refusal("key", e))
}

fn writable(pool: PoolId, force: bool) -> Result<(), Fail> {
    match pool {
        PoolId::Auto => Err(Fail::trouble(
            "pool 2 (auto) is generated by hv_kvp_daemon from the running system and is not \
             stored anywhere: it cannot be written",
        )),
        PoolId::Guest => Ok(()),
        _ if force => Ok(()),
        _ => Err(Fail::trouble(format!(
            "{} belongs to the host: hvkvp writes only the guest pool (1) unless --force is given",
            pool_label(pool)
        ))),
    }
}

fn key_to_write(key: &str, force: bool) -> Result<Key, Fail> {
    if key.is_empty() {
        return Err(Fail::trouble(
            "the key is empty: the host cannot look it up, and readers that split pool files \
             on NUL bytes lose their place",
        ));
    }
    let k = key_arg(key)?;
    let units = k.utf16_units();
    if units > HOST_SAFE_KEY_UNITS && !force {
        return Err(Fail::trouble(format!(
            "the key is {units} UTF-16 units long; the host reads keys of at most \
             {HOST_SAFE_KEY_UNITS} whole (the kernel cuts longer ones when it converts them for \
             the host). Use --force to write it anyway"
        )));
    }
    Ok(k)
}

fn value_to_write(raw: &[u8], force: bool) -> Result<Value, Fail> {
    let v = Value::new(raw).map_err(|e| text_refusal("value", e))?;
    if std::str::from_utf8(raw).is_err() && !force {
        return Err(Fail::trouble(
            "the value is not UTF-8 text; the kernel converts values from UTF-8 to UTF-16 for \
             the host. Use --force to write it anyway",
        ));
    }
    let units = v.utf16_units();
    if units > HOST_SAFE_VALUE_UNITS && !force {
        return Err(Fail::trouble(format!(
            "the value is {units} UTF-16 units long; the host reads values of at most \
             {HOST_SAFE_VALUE_UNITS} whole (the kernel cuts longer ones when it converts them \
             for the host). Use --force to write it anyway"
        )));
    }
    Ok(v)
}

fn read_value_file(path: &Path) -> Result<Vec<u8>, Fail> {
    let mut buf = Vec::new();
    let r = if path == Path::new("-") {
        io::stdin()
            .lock()
            .take(VALUE_FILE_LIMIT)
            .read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(VALUE_FILE_LIMIT).read_to_end(&mut buf))
    };
    match r {
        Ok(_) => Ok(buf),
        Err(e) => Err(Fail::trouble(format!("reading {}: {e}", path.display()))),
    }
}

// ---------------------------------------------------------------------------------------
// Commands.

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if let Some(m) = &f.message {
                warn(m);
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Fail> {
    let dir = cli.pool_dir.as_path();
    match cli.command {
        Command::List { pool, format } => list(dir, &cli.config, pool.map(|p| p.0), format.json),
        Command::Get {
            pool,
            key,
            format,
            raw,
        } => get(dir, &cli.config, pool.0, &key, format.json, raw),
        Command::Set {
            pool,
            key,
            value,
            value_file,
            force,
        } => {
            let pool = pool.0;
            writable(pool, force.force)?;
            let key = key_to_write(&key, force.force)?;
            let raw = match (value, value_file) {
                (Some(v), _) => v.into_bytes(),
                (None, Some(f)) => read_value_file(&f)?,
                (None, None) => return Err(Fail::trouble("no value given")),
            };
            let value = value_to_write(&raw, force.force)?;
            let conf = load_config(&cli.config)?;
            let mut access = PoolAccess::open(dir)?.within(conf.max_records);
            let r = access.set(pool, &key, &value);
            report(&mut access, Use::Change);
            r?;
            Ok(())
        }
        Command::Delete { pool, key, force } => delete(dir, pool.0, &key, force.force),
        Command::Clear { pool, force } => {
            clear(dir, pool.map_or(PoolId::Guest, |p| p.0), force.force)
        }
        Command::Host { format } => host(dir, format.json),
        Command::Watch {
            pool,
            format,
            interval_ms,
            count,
        } => watch(
            dir,
            pool.map(|p| p.0),
            format.json,
            Duration::from_millis(interval_ms),
            count,
        ),
        Command::Repair { pool } => repair(dir, pool.map(|p| p.0)),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hvkvp", &mut script);
            emit_bytes(&script)
        }
    }
}

/// The pools `list` and `watch` show when none is named: those kept in files.
fn pools_or_all(pool: Option<PoolId>) -> Vec<PoolId> {
    match pool {
        Some(p) => vec![p],
        None => PoolId::FILE_BACKED.to_vec(),
    }
}

fn list(dir: &Path, conf: &Path, pool: Option<PoolId>, json: bool) -> Result<(), Fail> {
    // The auto pool shows kvp.conf's `auto.<Key>` values, as the daemon does.
    // (Listing every pool means the pools kept in files.)
    let config = if pool == Some(PoolId::Auto) {
        load_config(conf)?
    } else {
        KvpConfig::default()
    };
    let mut access = PoolAccess::open_existing(dir)?;
    let mut loaded = Vec::new();
    let mut result = Ok(());
    for p in pools_or_all(pool) {
        match read_pool(&mut access, p, &config) {
            Ok(records) => loaded.push((p, records)),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // What was found on the way is worth telling even if a later pool failed.
    report(&mut access, Use::Read);
    result?;
    if json {
        return emit(&match (pool, &loaded[..]) {
            // One pool named: its records alone.
            (Some(_), [(_, only)]) => json_line(&json_records(only))?,
            _ => json_line(&JsonPools(&loaded))?,
        });
    }
    let mut out = String::new();
    if let (Some(_), [(_, only)]) = (pool, &loaded[..]) {
        table(&mut out, &rows(only));
        return emit(&out);
    }
    for (i, (p, records)) in loaded.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Writing to a String cannot fail.
        let _ = writeln!(out, "[{}]", p.name());
        table(&mut out, &rows(records));
    }
    emit(&out)
}

/// A pool's records: read from its file as it is (nothing repaired, nothing written), or
/// for the auto pool, computed from the running system by the daemon's own code
/// (`sysinfo` and the core's `AutoPool`), so what is shown is what the host's GET and
/// ENUMERATE on pool 2 get (the daemon may hold an older FQDN or address list: it
/// refreshes them in the background), with kvp.conf's `auto.<Key>` values and its
/// choice of interfaces.
fn read_pool(
    access: &mut PoolAccess,
    pool: PoolId,
    config: &KvpConfig,
) -> Result<Pool, AccessError> {
    if pool != PoolId::Auto {
        return access.inspect(pool).map(|(records, _)| records);
    }
    let info = sysinfo::system_info(&sysinfo::lookup_fqdn());
    let auto = AutoPool::new(&info, &config.addresses, &config.auto);
    let records = (0..)
        .map_while(|i| auto.entry(i))
        .map(|(key, value)| Record {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    Ok(Pool::from_records(records))
}

/// kvp.conf, or why it was refused (naming the file and line).
fn load_config(path: &Path) -> Result<KvpConfig, Fail> {
    kvp_config::load(path).map_err(|e| Fail::trouble(e.to_string()))
}

fn get(
    dir: &Path,
    conf: &Path,
    pool: PoolId,
    key: &str,
    json: bool,
    raw: bool,
) -> Result<(), Fail> {
    let config = if pool == PoolId::Auto {
        load_config(conf)?
    } else {
        KvpConfig::default()
    };
    let k = key_arg(key)?;
    let mut access = PoolAccess::open_existing(dir)?;
    let r = read_pool(&mut access, pool, &config);
    report(&mut access, Use::Read);
    let loaded = r?;
    let Some(v) = loaded.get(&k) else {
        return Err(Fail::not_found(format!(
            "{}: no such key in {}",
            shown(k.as_bytes()),
            pool_label(pool)
        )));
    };
    if json {
        #[derive(Serialize)]
        struct Got<'a> {
            pool: &'a str,
            key: Cow<'a, str>,
            value: Cow<'a, str>,
        }
        emit(&json_line(&Got {
            pool: pool.name(),
            key: text(k.as_bytes()),
            value: text(v.as_bytes()),
        })?)
    } else if raw || !io::stdout().is_terminal() {
        // The value exactly as stored, for scripts: no escaping.
        let mut out = v.as_bytes().to_vec();
        out.push(b'\n');
        emit_bytes(&out)
    } else {
        // Anyone who can write a pool (the host, among others) chooses these bytes: on a
        // terminal, control characters could retitle it, clear it or fake other output.
        emit(&format!("{}\n", shown(v.as_bytes())))
    }
}

fn delete(dir: &Path, pool: PoolId, key: &str, force: bool) -> Result<(), Fail> {
    writable(pool, force)?;
    let k = key_arg(key)?;
    let mut access = PoolAccess::open(dir)?;
    let result = (|| {
        let (loaded, _) = access.load(pool)?;
        // Each DELETE removes the first record with the key; duplicates (appenders do
        // not de-duplicate) take one each. Bounded by what the pool held.
        let held = loaded.records().iter().filter(|r| r.key == k).count();
        let mut removed = 0;
        for _ in 0..held.max(1) {
            match access.delete(pool, &k)? {
                Change::Written => removed += 1,
                Change::NotFound | Change::Unchanged => break,
            }
        }
        Ok::<usize, AccessError>(removed)
    })();
    report(&mut access, Use::Change);
    match result? {
        0 => Err(Fail::not_found(format!(
            "{}: no such key in {}",
            shown(k.as_bytes()),
            pool_label(pool)
        ))),
        _ => Ok(()),
    }
}

/// Empties a pool, one journaled DELETE per record, and says how many went.
fn clear(dir: &Path, pool: PoolId, force: bool) -> Result<(), Fail> {
    writable(pool, force)?;
    let mut access = PoolAccess::open(dir)?;
    let result = access.clear(pool);
    report(&mut access, Use::Change);
    let removed = result?;
    emit(&format!(
        "{}: {removed} record{} removed\n",
        pool_label(pool),
        if removed == 1 { "" } else { "s" }
    ))
}

/// Recovers each pool, as the daemon does at start, and says what that did.
fn repair(dir: &Path, pool: Option<PoolId>) -> Result<(), Fail> {
    if pool == Some(PoolId::Auto) {
        return Err(Fail::trouble(
            "pool 2 (auto) is generated by hv_kvp_daemon and kept in no file: there is \
             nothing to repair",
        ));
    }
    let mut access = PoolAccess::open(dir)?;
    let mut out = String::new();
    for p in pools_or_all(pool) {
        let r = access.load(p);
        let done = findings(access.take_events(), Use::Change);
        for line in &done {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{line}");
        }
        if let Err(e) = r {
            // What was repaired before the failure is worth telling.
            emit(&out)?;
            return Err(e.into());
        }
        if done.is_empty() {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{}: nothing to repair", pool_label(p));
        }
    }
    emit(&out)
}

/// `host --json`: the summary's fields (`null` when the host did not publish them),
/// then every record of pool 3 as it is.
#[derive(Serialize)]
struct HostJson<'a> {
    vm_name: Option<Cow<'a, str>>,
    vm_id: Option<Cow<'a, str>>,
    host_name: Option<Cow<'a, str>>,
    physical_host: Option<Cow<'a, str>>,
    physical_host_fqdn: Option<Cow<'a, str>>,
    host_edition_id: Option<Cow<'a, str>>,
    nested_level: Option<Cow<'a, str>>,
    dynamic_memory_balancing: Option<Cow<'a, str>>,
    host_os_version: Option<String>,
    host_service_pack: Option<String>,
    host_processor_architecture: Option<String>,
    records: JsonPairs<'a>,
}

/// Windows' PROCESSOR_ARCHITECTURE_* numbers.
fn architecture(n: &str) -> Option<&'static str> {
    Some(match n {
        "0" => "x86",
        "5" => "ARM",
        "6" => "IA-64",
        "9" => "x64",
        "12" => "ARM64",
        _ => return None,
    })
}

fn host(dir: &Path, json: bool) -> Result<(), Fail> {
    let pool = PoolId::AutoExternal;
    let mut access = PoolAccess::open_existing(dir)?;
    let r = access.inspect(pool);
    report(&mut access, Use::Read);
    let (loaded, _) = r?;
    let records = first_records(&loaded);
    if records.is_empty() {
        return Err(Fail::not_found(format!(
            "the host has published nothing in {} yet: is hv_kvp_daemon running, and the \
             Data Exchange integration service enabled for this VM?",
            pool_label(pool)
        )));
    }
    let map: HashMap<&[u8], &[u8]> = records
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let get = |k: &str| map.get(k.as_bytes()).map(|v| String::from_utf8_lossy(v));
    let os = match (get("HostingSystemOsMajor"), get("HostingSystemOsMinor")) {
        (Some(a), Some(b)) => Some(format!("{a}.{b}")),
        (Some(a), None) => Some(a.into_owned()),
        _ => None,
    };
    let sp = match (get("HostingSystemSpMajor"), get("HostingSystemSpMinor")) {
        (Some(a), Some(b)) if (a.as_ref(), b.as_ref()) != ("0", "0") => Some(format!("{a}.{b}")),
        _ => None,
    };
    let arch = get("HostingSystemProcessorArchitecture").map(|a| a.into_owned());
    if json {
        return emit(&json_line(&HostJson {
            vm_name: get("VirtualMachineName"),
            vm_id: get("VirtualMachineId"),
            host_name: get("HostName"),
            physical_host: get("PhysicalHostName"),
            physical_host_fqdn: get("PhysicalHostNameFullyQualified"),
            host_edition_id: get("HostingSystemEditionId"),
            nested_level: get("HostingSystemNestedLevel"),
            dynamic_memory_balancing: get("VirtualMachineDynamicMemoryBalancingEnabled"),
            host_os_version: os,
            host_service_pack: sp,
            host_processor_architecture: arch,
            records: JsonPairs(&records),
        })?);
    }
    let mut out = String::new();
    // Text: host names first, then the host's system, then this VM's settings.
    let text = |k: &str| map.get(k.as_bytes()).map(|v| shown(v));
    let os = os.map(|os| match sp {
        Some(sp) => format!(
            "{} (service pack {})",
            shown(os.as_bytes()),
            shown(sp.as_bytes())
        ),
        None => shown(os.as_bytes()),
    });
    let arch = arch.map(|a| match architecture(&a) {
        Some(name) => format!("{name} ({a})"),
        None => shown(a.as_bytes()),
    });
    let balancing = text("VirtualMachineDynamicMemoryBalancingEnabled").map(|v| match v.as_str() {
        "1" => "enabled".to_string(),
        "0" => "disabled".to_string(),
        _ => v,
    });
    let lines: Vec<(String, String)> = [
        ("VM name", text("VirtualMachineName")),
        ("VM id", text("VirtualMachineId")),
        ("Host name", text("HostName")),
        ("Physical host", text("PhysicalHostName")),
        ("Physical host FQDN", text("PhysicalHostNameFullyQualified")),
        ("Host OS version", os),
        ("Host processor", arch),
        ("Host edition id", text("HostingSystemEditionId")),
        ("Nesting level", text("HostingSystemNestedLevel")),
        ("Dynamic memory balancing", balancing),
    ]
    .into_iter()
    .filter_map(|(label, v)| v.map(|v| (label.to_string(), v)))
    .collect();
    if lines.is_empty() {
        return Err(Fail::not_found(format!(
            "{} holds {} keys, none of those hvkvp summarizes: see `hvkvp list auto-external`",
            pool_label(pool),
            records.len()
        )));
    }
    table(&mut out, &lines);
    emit(&out)
}

// ---------------------------------------------------------------------------------------
// watch

/// One watched pool: what it showed last and the file's stamp then.
struct Watched {
    pool: PoolId,
    records: Vec<(Vec<u8>, Vec<u8>)>,
    stamp: Option<FileStamp>,
}

enum Diff<'a> {
    Added(&'a [u8], &'a [u8]),
    Removed(&'a [u8]),
    Changed(&'a [u8], &'a [u8]),
}

/// Removals first (in the old file order), then additions and changes (in the new).
fn diff<'a>(old: &'a [(Vec<u8>, Vec<u8>)], new: &'a [(Vec<u8>, Vec<u8>)]) -> Vec<Diff<'a>> {
    let old_map: HashMap<&[u8], &[u8]> = old.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let new_keys: HashSet<&[u8]> = new.iter().map(|(k, _)| &k[..]).collect();
    let mut out: Vec<Diff<'a>> = old
        .iter()
        .filter(|(k, _)| !new_keys.contains(&k[..]))
        .map(|(k, _)| Diff::Removed(k))
        .collect();
    for (k, v) in new {
        match old_map.get(&k[..]) {
            None => out.push(Diff::Added(k, v)),
            Some(old_v) if *old_v != &v[..] => out.push(Diff::Changed(k, v)),
            Some(_) => {}
        }
    }
    out
}

fn write_diff(
    out: &mut String,
    pool: PoolId,
    changes: &[Diff<'_>],
    json: bool,
    prefix: bool,
) -> Result<(), Fail> {
    for d in changes {
        if json {
            #[derive(Serialize)]
            struct Changed<'a> {
                pool: &'a str,
                change: &'a str,
                key: Cow<'a, str>,
                #[serde(skip_serializing_if = "Option::is_none")]
                value: Option<Cow<'a, str>>,
            }
            let (change, key, value) = match d {
                Diff::Added(k, v) => ("added", k, Some(v)),
                Diff::Removed(k) => ("removed", k, None),
                Diff::Changed(k, v) => ("changed", k, Some(v)),
            };
            let line = Changed {
                pool: pool.name(),
                change,
                key: text(key),
                value: value.map(|v| text(v)),
            };
            out.push_str(&json_line(&line)?);
        } else {
            if prefix {
                // Writing to a String cannot fail.
                let _ = write!(out, "[{}] ", pool.name());
            }
            // Writing to a String cannot fail.
            let _ = match d {
                Diff::Added(k, v) => writeln!(out, "+ {} = {}", shown(k), shown(v)),
                Diff::Removed(k) => writeln!(out, "- {}", shown(k)),
                Diff::Changed(k, v) => writeln!(out, "~ {} = {}", shown(k), shown(v)),
            };
        }
    }
    Ok(())
}

fn watch(
    dir: &Path,
    pool: Option<PoolId>,
    json: bool,
    interval: Duration,
    count: Option<u64>,
) -> Result<(), Fail> {
    let pools = pools_or_all(pool);
    let prefix = pools.len() > 1;
    let mut access = PoolAccess::open_existing(dir)?;
    let mut watched = Vec::new();
    let mut out = String::new();
    for p in pools {
        let r = access.inspect(p);
        report(&mut access, Use::Read);
        let (loaded, stamp) = r?;
        let records = first_records(&loaded);
        write_diff(&mut out, p, &diff(&[], &records), json, prefix)?;
        watched.push(Watched {
            pool: p,
            records,
            stamp,
        });
    }
    emit(&out)?;
    let mut polls = 0u64;
    while count.is_none_or(|n| polls < n) {
        std::thread::sleep(interval);
        polls += 1;
        let mut out = String::new();
        for w in &mut watched {
            let r = access.refresh(w.pool, w.stamp);
            report(&mut access, Use::Read);
            let Some((loaded, stamp)) = r? else {
                continue;
            };
            let records = first_records(&loaded);
            write_diff(&mut out, w.pool, &diff(&w.records, &records), json, prefix)?;
            w.records = records;
            w.stamp = stamp;
        }
        emit(&out)?;
    }
    Ok(())
}
