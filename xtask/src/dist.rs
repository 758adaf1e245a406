//! `dist`: builds the release programs and stages, under `target/dist/stage/usr/local/`,
//! the tree the FreeBSD port in `packaging/freebsd/` installs, then checks that tree
//! against the port's `pkg-plist`: every listed file must be staged and nothing unlisted
//! may be. The port's layout is thus tested here, on Linux, without a ports tree.
//!
//! What goes where (the port's `cargo install` of `io`, its `post-install` and `USE_RC_SUBR` do the same):
//!
//! | staged under `usr/local/` | from |
//! |---|---|
//! | `sbin/hv_kvp_daemon`, `sbin/hv_vss_daemon`, `sbin/hv_vss_app`, `bin/hvkvp` | `cargo build --release -p hvguest-io` |
//! | `share/man/man{1,5,8}/*` | `packaging/man/` (not compressed; the ports framework gzips them, so `pkg-plist` names them `*.gz`) |
//! | `etc/rc.d/<name>` for each name in the Makefile's `USE_RC_SUBR` | `packaging/rc.d/<name>`, `%%PREFIX%%` replaced as the framework does (these entries are implied, not listed in `pkg-plist`) |
//! | `etc/devd/hvguest.conf` | `packaging/devd/hvguest.conf` |
//! | `etc/hvguest/vss.conf.sample` | `packaging/vss.conf.sample` (a copy of `vss_config::SAMPLE`) |
//! | `etc/hvguest/kvp.conf.sample` | `packaging/kvp.conf.sample` (a copy of `kvp_config::SAMPLE`) |
//! | `etc/hvguest/hooks.d/`, `etc/hvguest/app.d/` (empty, `@dir`) | |
//! | `libexec/hvguest/hv_set_ifconfig` | `io-freebsd/scripts/hv_set_ifconfig` |
//!
//! A missing program is an error. Every file in `packaging/man/` and `packaging/rc.d/`
//! must be staged, so a new page or script cannot be forgotten by the port.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{cargo, project_root, run};

/// The installation prefix, as a path under the staging directory.
pub(crate) const PREFIX: &str = "usr/local";
/// What `%%PREFIX%%` becomes in rc.d scripts.
const PREFIX_ABSOLUTE: &str = "/usr/local";
/// The workspace package that holds every program.
const PACKAGE: &str = "hvguest-io";
/// Every program, with the directory under the prefix it goes to.
const PROGRAMS: [(&str, &str); 4] = [
    ("hv_kvp_daemon", "sbin"),
    ("hv_vss_daemon", "sbin"),
    ("hv_vss_app", "sbin"),
    ("hvkvp", "bin"),
];
/// Manual pages in `packaging/man/`; the section is the file name's last extension.
const MAN_PAGES: [&str; 6] = [
    "hvkvp.1",
    "kvp.conf.5",
    "vss.conf.5",
    "hv_kvp_daemon.8",
    "hv_vss_daemon.8",
    "hv_vss_app.8",
];
/// Other files: source (from the workspace root), destination (under the prefix), mode.
const FILES: [(&str, &str, u32); 4] = [
    (
        "packaging/devd/hvguest.conf",
        "etc/devd/hvguest.conf",
        0o444,
    ),
    (
        "packaging/kvp.conf.sample",
        "etc/hvguest/kvp.conf.sample",
        0o444,
    ),
    (
        "packaging/vss.conf.sample",
        "etc/hvguest/vss.conf.sample",
        0o444,
    ),
    (
        "io-freebsd/scripts/hv_set_ifconfig",
        "libexec/hvguest/hv_set_ifconfig",
        0o555,
    ),
];
/// Empty directories the port creates (`@dir` in `pkg-plist`).
const DIRS: [&str; 2] = ["etc/hvguest/app.d", "etc/hvguest/hooks.d"];

pub(crate) const PORT_DIR: &str = "packaging/freebsd";
const MAN_DIR: &str = "packaging/man";
const RC_DIR: &str = "packaging/rc.d";

pub fn dist() -> Result<(), String> {
    let programs = programs()?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", PACKAGE]);
    for (name, _) in &programs {
        build.args(["--bin", name]);
    }
    run(&mut build)?;
    let target = target_dir();
    let stage = target.join("dist").join("stage");
    let rc_scripts = stage_tree(&stage, &target.join("release"))?;
    check_tree(&stage, &rc_scripts)?;
    Ok(())
}

/// Every program of [`PROGRAMS`], checked to be a program of the package.
pub(crate) fn programs() -> Result<Vec<(&'static str, &'static str)>, String> {
    let have = workspace_bins(PACKAGE)?;
    let mut programs = Vec::new();
    for (name, dir) in PROGRAMS {
        if have.contains(name) {
            programs.push((name, dir));
        } else {
            return Err(format!("package {PACKAGE} has no program `{name}`"));
        }
    }
    Ok(programs)
}

/// Stages the port's tree under `stage` (emptied first), with the programs from
/// `release` (this machine's build for `dist`, the FreeBSD one for `pkg`); returns the
/// rc.d scripts, which `pkg-plist` does not list.
pub(crate) fn stage_tree(stage: &Path, release: &Path) -> Result<Vec<String>, String> {
    let root = project_root();
    let rc_scripts = use_rc_subr(&root.join(PORT_DIR).join("Makefile"))?;
    let programs = programs()?;
    if stage.exists() {
        fs::remove_dir_all(stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    }
    let prefix = stage.join(PREFIX);
    for (name, dir) in &programs {
        copy(&release.join(name), &prefix.join(dir).join(name), 0o555)?;
    }
    for page in MAN_PAGES {
        let section = page.rsplit('.').next().unwrap_or_default();
        let dest = prefix
            .join("share/man")
            .join(format!("man{section}"))
            .join(page);
        copy(&root.join(MAN_DIR).join(page), &dest, 0o444)?;
    }
    for name in &rc_scripts {
        let source = root.join(RC_DIR).join(name);
        let text = fs::read_to_string(&source).map_err(|e| format!("{}: {e}", source.display()))?;
        let dest = prefix.join("etc/rc.d").join(name);
        write(&dest, &text.replace("%%PREFIX%%", PREFIX_ABSOLUTE), 0o555)?;
    }
    for (source, dest, mode) in FILES {
        copy(&root.join(source), &prefix.join(dest), mode)?;
    }
    for dir in DIRS {
        let path = prefix.join(dir);
        fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }

    // Everything the packaging directories hold must have been staged.
    let man_sources = file_names(&root.join(MAN_DIR))?;
    let unstaged: Vec<_> = man_sources
        .iter()
        .filter(|f| !MAN_PAGES.contains(&f.as_str()))
        .collect();
    if !unstaged.is_empty() {
        return Err(format!(
            "{MAN_DIR} has pages dist does not stage (add them to MAN_PAGES in \
             xtask/src/dist.rs, the port's MANPAGES and pkg-plist): {unstaged:?}"
        ));
    }
    let rc_sources = file_names(&root.join(RC_DIR))?;
    let unstaged: Vec<_> = rc_sources
        .iter()
        .filter(|f| !rc_scripts.contains(f))
        .collect();
    if !unstaged.is_empty() {
        return Err(format!(
            "{RC_DIR} has scripts the port's USE_RC_SUBR does not list: {unstaged:?}"
        ));
    }
    Ok(rc_scripts)
}

/// The staged tree against `pkg-plist` (and the rc.d scripts it implies).
fn check_tree(stage: &Path, rc_scripts: &[String]) -> Result<(), String> {
    let root = project_root();
    let staged = walk(stage)?;
    println!("staged under {}:", stage.display());
    for (path, entry) in &staged {
        match entry {
            Entry::Dir => {}
            Entry::File { mode, size } => println!("  {mode:04o} {size:>9}  {path}"),
        }
    }
    for (path, entry) in &staged {
        if *entry == Entry::Dir && !staged.keys().any(|p| p.starts_with(&format!("{path}/"))) {
            println!("  empty dir         {path}/");
        }
    }
    let plist_path = root.join(PORT_DIR).join("pkg-plist");
    let plist = parse_plist(&plist_path)?;
    let mut expected_files = plist.files;
    for name in rc_scripts {
        expected_files.insert(format!("{PREFIX}/etc/rc.d/{name}"));
    }
    let mut problems = Vec::new();
    for file in &expected_files {
        match staged.get(file) {
            Some(Entry::File { .. }) => {}
            Some(Entry::Dir) => problems.push(format!(
                "listed as a file but staged as a directory: {file}"
            )),
            None => problems.push(format!("listed but not staged: {file}")),
        }
    }
    for dir in &plist.dirs {
        if staged.get(dir) != Some(&Entry::Dir) {
            problems.push(format!("@dir listed but not staged: {dir}"));
        }
    }
    for (path, entry) in &staged {
        if matches!(entry, Entry::File { .. }) && !expected_files.contains(path) {
            problems.push(format!("staged but not in pkg-plist: {path}"));
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("xtask dist: {p}");
        }
        return Err(format!(
            "the staged tree and {} differ ({} problem(s))",
            plist_path.display(),
            problems.len()
        ));
    }
    println!(
        "xtask dist: the staged tree matches {PORT_DIR}/pkg-plist ({} files)",
        expected_files.len()
    );
    Ok(())
}

/// Where cargo puts its output: `$CARGO_TARGET_DIR` (relative to the workspace root,
/// where cargo runs) or `target/`.
pub(crate) fn target_dir() -> PathBuf {
    let root = project_root();
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// The names of the binary targets of `package`, from `cargo metadata`. The JSON is
/// read by pattern rather than parsed (this crate has no dependencies): each package
/// object starts with `{"name":"<package>","version":`, and each target object is flat
/// and starts with `{"kind":[...]`.
fn workspace_bins(package: &str) -> Result<BTreeSet<String>, String> {
    let output = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let json = String::from_utf8_lossy(&output.stdout);
    let packages = package_starts(&json);
    let at = packages
        .iter()
        .position(|(_, name)| name == package)
        .ok_or_else(|| format!("cargo metadata does not list package {package}"))?;
    // The package's object ends where the next package begins.
    let end = packages.get(at + 1).map_or(json.len(), |(i, _)| *i);
    let mut bins = BTreeSet::new();
    let mut seg = &json[packages[at].0..end];
    while let Some(i) = seg.find("{\"kind\":[") {
        let target = &seg[i..];
        let close = target.find('}').unwrap_or(target.len());
        let object = &target[..close];
        if object.starts_with("{\"kind\":[\"bin\"]") {
            if let Some(n) = object.find("\"name\":\"") {
                let name = &object[n + 8..];
                if let Some(q) = name.find('"') {
                    bins.insert(name[..q].to_string());
                }
            }
        }
        seg = &target[close..];
    }
    if bins.is_empty() {
        return Err(format!(
            "found no programs of package {package} in cargo metadata's output"
        ));
    }
    Ok(bins)
}

/// Where each package object starts in `cargo metadata` output, with its name: at
/// `{"name":"<name>","version":` (dependency objects also start with `{"name":`, but
/// continue with `"source"`).
fn package_starts(json: &str) -> Vec<(usize, String)> {
    const OPEN: &str = "{\"name\":\"";
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = json[from..].find(OPEN) {
        let at = from + i;
        let after = &json[at + OPEN.len()..];
        if let Some(q) = after.find('"') {
            if after[q..].starts_with("\",\"version\":") {
                out.push((at, after[..q].to_string()));
            }
        }
        from = at + OPEN.len();
    }
    out
}

/// The names in `USE_RC_SUBR=` of the port's Makefile (continuation lines joined).
fn use_rc_subr(makefile: &Path) -> Result<Vec<String>, String> {
    let text = fs::read_to_string(makefile).map_err(|e| format!("{}: {e}", makefile.display()))?;
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find_map(|l| l.strip_prefix("USE_RC_SUBR").map(str::trim_start))
        .and_then(|l| l.strip_prefix('='))
        .ok_or_else(|| format!("{}: no USE_RC_SUBR= line", makefile.display()))?;
    let names: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    if names.is_empty() {
        return Err(format!("{}: USE_RC_SUBR is empty", makefile.display()));
    }
    Ok(names)
}

pub(crate) struct Plist {
    /// Paths under the staging root (`usr/local/...`), man pages without `.gz`.
    pub(crate) files: BTreeSet<String>,
    pub(crate) dirs: BTreeSet<String>,
    /// The `@sample` files (their paths as in `files`).
    pub(crate) samples: BTreeSet<String>,
}

/// Reads `pkg-plist`: plain lines are files relative to the prefix, `@sample FILE` a
/// file too, `@dir DIR` a directory; `@comment` lines are skipped. Manual pages are listed
/// compressed (`.gz`, which the framework adds) and staged uncompressed.
pub(crate) fn parse_plist(path: &Path) -> Result<Plist, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut plist = Plist {
        files: BTreeSet::new(),
        dirs: BTreeSet::new(),
        samples: BTreeSet::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = || format!("{}:{}", path.display(), i + 1);
        if line.is_empty() || line.starts_with("@comment") {
            continue;
        }
        if line.contains("%%") {
            return Err(format!(
                "{}: plist substitutions are not supported by xtask dist: {line}",
                at()
            ));
        }
        let (keyword, rest) = match line.split_once(char::is_whitespace) {
            Some((k, r)) if k.starts_with('@') => (k, r.trim()),
            _ if line.starts_with('@') => (line, ""),
            _ => ("", line),
        };
        let first = rest.split_whitespace().next().unwrap_or("");
        let relative = match keyword {
            "" | "@sample" if !first.is_empty() => first,
            "@dir" if !first.is_empty() => {
                plist.dirs.insert(format!("{PREFIX}/{first}"));
                continue;
            }
            _ => {
                return Err(format!(
                    "{}: xtask dist does not understand this line: {line}",
                    at()
                ))
            }
        };
        if relative.starts_with('/') || relative.split('/').any(|c| c == "..") {
            return Err(format!(
                "{}: expected a path relative to the prefix: {line}",
                at()
            ));
        }
        let staged = match relative.strip_suffix(".gz") {
            Some(page) if relative.starts_with("share/man/") => page,
            _ => relative,
        };
        if keyword == "@sample" {
            plist.samples.insert(format!("{PREFIX}/{staged}"));
        }
        if !plist.files.insert(format!("{PREFIX}/{staged}")) {
            return Err(format!("{}: listed twice: {line}", at()));
        }
    }
    Ok(plist)
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Dir,
    File { mode: u32, size: u64 },
}

/// Every directory and file under `root`, by path relative to it (`/`-separated).
pub(crate) fn walk(root: &Path) -> Result<BTreeMap<String, Entry>, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = entry.path();
            let meta =
                fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let relative = path
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            if meta.is_dir() {
                out.insert(relative, Entry::Dir);
                todo.push(path);
            } else {
                out.insert(
                    relative,
                    Entry::File {
                        mode: meta.permissions().mode() & 0o7777,
                        size: meta.len(),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// The names of the regular files in `dir`.
fn file_names(dir: &Path) -> Result<BTreeSet<String>, String> {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        if entry.path().is_file() {
            names.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    let bytes = fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    write_bytes(to, &bytes, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> Result<(), String> {
    write_bytes(to, text.as_bytes(), mode)
}

fn write_bytes(to: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", to.display());
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    fs::write(to, bytes).map_err(err)?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(err)
}
