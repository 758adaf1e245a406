//! `check-freebsd`: type-checks the workspace for `x86_64-unknown-freebsd` on this Linux
//! machine, so that code under `#[cfg(target_os = "freebsd")]` is compiled before it
//! reaches a FreeBSD box.
//!
//! Rustup cannot add the FreeBSD target here. Debian bookworm ships `rustc-web` with its
//! standard library source (`rust-web-src`), and that compiler builds std for FreeBSD
//! itself with `-Zbuild-std`; `cargo check` needs no FreeBSD sysroot or linker. The
//! packages conflict with rustup, so they are not installed: `apt-get download` fetches
//! them and `dpkg -x` unpacks them into a prefix in the cache,
//! `~/.cache/hvguest/rustc-web-<version>`, once per version. The version is the one apt
//! offers at run time (the security archive moves on).
//!
//! mio's selector: `.cargo/config.toml` passes `--cfg mio_unsupported_force_poll_poll` to
//! every crate built for FreeBSD through `[target.x86_64-unknown-freebsd] rustflags`.
//! Cargo drops those flags whenever `RUSTFLAGS` or `CARGO_ENCODED_RUSTFLAGS` is set, even
//! to an empty string, so the check runs without both; afterwards it reads mio's dep-info
//! file to confirm that mio was checked with `selector/poll.rs`. The default kqueue
//! selector is not checked as well: that needs a second build of std for FreeBSD (the
//! flags change every unit's fingerprint, std's too), which costs as much as the first.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use super::project_root;

const TARGET: &str = "x86_64-unknown-freebsd";

/// Written last into a complete prefix; a prefix without it is a leftover and is replaced.
const READY_STAMP: &str = ".hvguest-ready";

/// Where the unpacked shared libraries live; bookworm's packages use both.
const LIB_DIRS: [&str; 2] = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"];

/// The packages named outright; their library dependencies are resolved at run time.
/// The standard library for the host, `libstd-rust-web-<MAJOR.MINOR>`, joins them.
const ROOT_PACKAGES: [&str; 4] = [
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "libstd-rust-web-dev",
];

/// `check-freebsd`: makes sure the toolchain is in the cache, then runs
/// `cargo check --workspace --all-targets` for FreeBSD with build-std.
pub fn check() -> Result<(), String> {
    let started = Instant::now();
    let toolchain = toolchain()?;
    let root = project_root();
    let target_dir = root.join("target").join("freebsd-check");

    let mut cmd = toolchain.command("cargo");
    // `--ignore-rust-version`: some dev-dependencies (proptest 1.12 and globset, through
    // insta, want 1.88) declare a newer rust-version than the rustc-web apt may offer
    // (1.85 in bookworm's main archive), yet compile with it; our crates declare 1.85.
    cmd.args([
        "check",
        "--workspace",
        "--all-targets",
        "--ignore-rust-version",
        "-Zbuild-std=std,panic_abort",
        "--target",
        TARGET,
    ])
    .env("CARGO_TARGET_DIR", &target_dir)
    .current_dir(&root);
    for name in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        if env::var_os(name).is_some() {
            say(&format!(
                "ignoring ${name}: it would replace the FreeBSD rustflags of .cargo/config.toml"
            ));
        }
        cmd.env_remove(name);
    }
    say(&format!(
        "type-checking the workspace for {TARGET} into {}",
        target_dir.display()
    ));
    exec(&mut cmd)?;
    check_mio_selector(&target_dir)?;
    say(&format!(
        "passed ({:.1} s in all)",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `check-freebsd --link`: the type-check, then the release programs built and linked
/// for FreeBSD and checked with readelf (`freebsd_link`). Returns their directory.
pub fn link() -> Result<PathBuf, String> {
    check()?;
    let started = Instant::now();
    let toolchain = toolchain()?;
    let release = super::freebsd_link::build(toolchain.command("cargo"), &cache_dir()?, TARGET)?;
    let programs: Vec<&str> = super::dist::programs()?.iter().map(|(p, _)| *p).collect();
    super::freebsd_link::check_programs(&release, &programs)?;
    say(&format!(
        "linked {} programs for FreeBSD 14 and later ({:.1} s)",
        programs.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(release)
}

/// An unpacked rustc-web: `<prefix>/usr/bin/{rustc,cargo}` and their libraries.
struct Toolchain {
    prefix: PathBuf,
}

impl Toolchain {
    /// One of the prefix's programs, with the environment they all need: the unpacked
    /// libraries, this rustc for cargo, and unstable flags (`-Z`) allowed.
    fn command(&self, program: &str) -> Command {
        let bin = self.prefix.join("usr").join("bin");
        let lib_path = env::join_paths(LIB_DIRS.iter().map(|dir| self.prefix.join(dir)))
            .expect("the cache path contains no `:`");
        let mut cmd = Command::new(bin.join(program));
        cmd.env("LD_LIBRARY_PATH", lib_path)
            .env("RUSTC", bin.join("rustc"))
            .env("RUSTC_BOOTSTRAP", "1");
        cmd
    }

    /// Whether both programs start: this catches a missing shared library.
    fn runs(&self) -> bool {
        [("rustc", "-vV"), ("cargo", "-V")]
            .iter()
            .all(|(program, flag)| {
                self.command(program)
                    .arg(flag)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            })
    }

    fn is_ready(&self) -> bool {
        self.prefix.join(READY_STAMP).is_file() && self.runs()
    }

    /// The standard library's workspace, where build-std reads its sources.
    fn library_manifest(&self) -> PathBuf {
        self.prefix
            .join("usr/lib/rustlib/src/rust/library/Cargo.toml")
    }
}

/// Finds or installs the toolchain for the rustc-web version apt offers now.
fn toolchain() -> Result<Toolchain, String> {
    let cache = cache_dir()?;
    let mut updated = false;
    loop {
        let version = match candidate("rustc-web")? {
            Some(version) => version,
            None if !updated => {
                say("apt offers no rustc-web: updating the package lists");
                apt_update()?;
                updated = true;
                continue;
            }
            None => return Err("apt offers no rustc-web, even after apt-get update".into()),
        };
        let toolchain = Toolchain {
            prefix: cache.join(format!("rustc-web-{}", path_safe(&version))),
        };
        if toolchain.is_ready() {
            say(&format!(
                "using rustc-web {version} from {}",
                toolchain.prefix.display()
            ));
            return Ok(toolchain);
        }
        say(&format!(
            "installing rustc-web {version} into {}",
            toolchain.prefix.display()
        ));
        let started = Instant::now();
        let packages = packages(&version)?;
        let downloads = Downloads::create()?;
        if let Err(err) = downloads.fetch(&packages) {
            if updated {
                return Err(err);
            }
            // A candidate that cannot be fetched means stale lists: the archive has moved
            // on. The fresh lists may offer another version, hence the new round.
            say(&format!(
                "{err}; updating the package lists and trying again"
            ));
            apt_update()?;
            updated = true;
            continue;
        }
        install(&cache, &toolchain, &downloads)?;
        say(&format!(
            "installed rustc-web {version} in {:.1} s: {} MiB in {}",
            started.elapsed().as_secs_f64(),
            disk_usage(&toolchain.prefix) >> 20,
            toolchain.prefix.display()
        ));
        return Ok(toolchain);
    }
}

/// `$XDG_CACHE_HOME/hvguest`, or `$HOME/.cache/hvguest`.
fn cache_dir() -> Result<PathBuf, String> {
    let absolute = |name: &str| {
        env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let base = absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .ok_or("neither $XDG_CACHE_HOME nor $HOME is an absolute path: no cache directory")?;
    Ok(base.join("hvguest"))
}

/// A version as a directory name: `1:1.85.0+dfsg3-1~deb12u3` → `1_1.85.0+dfsg3-1_deb12u3`.
fn path_safe(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The version `apt-cache policy` would install, or `None` when it offers none.
fn candidate(package: &str) -> Result<Option<String>, String> {
    let policy = read(apt("apt-cache").args(["policy", package]))?;
    let version = policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|version| !version.is_empty() && *version != "(none)");
    Ok(version.map(String::from))
}

fn apt_update() -> Result<(), String> {
    exec(apt("apt-get").arg("update")).map_err(|err| format!("{err} (apt-get update needs root)"))
}

/// The packages to fetch, each with the reason it is needed: the fixed ones, the host's
/// standard library of this version, and every library they depend on, directly or not,
/// that this machine lacks (`libllvmNN`, and for cargo-web for example `libgit2-1.5` and
/// the mbedtls libraries). Libraries the machine has are left to it.
fn packages(version: &str) -> Result<Vec<(String, String)>, String> {
    // `1.85.0+dfsg3-1~deb12u3` (perhaps with an epoch, `1:`) → `1.85`.
    let upstream = version.rsplit_once(':').map_or(version, |(_, rest)| rest);
    let major_minor: Vec<&str> = upstream.split('.').take(2).collect();
    let libstd = format!("libstd-rust-web-{}", major_minor.join("."));

    let mut wanted: Vec<(String, String)> = ROOT_PACKAGES
        .iter()
        .map(|name| (name.to_string(), "the toolchain".to_string()))
        .collect();
    wanted.push((
        libstd,
        format!("the standard library of rustc-web {version}"),
    ));
    let mut round: Vec<String> = wanted.iter().map(|(name, _)| name.clone()).collect();
    while !round.is_empty() {
        let mut next: Vec<(String, String)> = Vec::new();
        for (parent, dependency) in library_depends(&round)? {
            let known = wanted
                .iter()
                .chain(&next)
                .any(|(name, _)| *name == dependency);
            if !known {
                next.push((dependency, format!("a dependency of {parent}")));
            }
        }
        let names: Vec<&str> = next.iter().map(|(name, _)| name.as_str()).collect();
        let present = installed(&names)?;
        next.retain(|(name, _)| !present.contains(name));
        round = next.iter().map(|(name, _)| name.clone()).collect();
        wanted.extend(next);
    }
    for (name, reason) in &wanted {
        say(&format!("  {name:<24} {reason}"));
    }
    Ok(wanted)
}

/// `(package, library)` for every `Depends`/`PreDepends` of the packages on a library
/// (a real package whose name starts with `lib`).
fn library_depends(packages: &[String]) -> Result<Vec<(String, String)>, String> {
    let listing = read(
        apt("apt-cache")
            .args(["depends", "--important"])
            .args(packages),
    )?;
    let mut found = Vec::new();
    let mut parent = "";
    for line in listing.lines() {
        if !line.starts_with(' ') {
            parent = line.trim();
            continue;
        }
        // `  Depends: libc6`, ` |Depends: gcc` (an alternative), `  PreDepends: x`;
        // a virtual package is `<name>`, followed by its providers, indented, no colon.
        let Some((kind, name)) = line.trim().trim_start_matches('|').split_once(':') else {
            continue;
        };
        // Multi-arch names may carry a qualifier: `libfoo:any`.
        let name = name.trim().split(':').next().unwrap_or_default();
        if matches!(kind, "Depends" | "PreDepends") && name.starts_with("lib") {
            found.push((parent.to_string(), name.to_string()));
        }
    }
    Ok(found)
}

/// Which of the packages are installed on this machine.
fn installed(packages: &[&str]) -> Result<Vec<String>, String> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = apt("dpkg-query");
    cmd.args(["-W", "-f=${Package} ${db:Status-Status}\\n"])
        .args(packages);
    eprintln!("$ {}", shown(&cmd));
    // dpkg-query complains about, and exits 1 for, packages it has never heard of.
    let output = cmd
        .stderr(Stdio::null())
        .output()
        .map_err(|err| format!("could not start dpkg-query: {err}"))?;
    let listing = String::from_utf8_lossy(&output.stdout);
    Ok(listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| *status == "installed")
        .map(|(name, _)| name.to_string())
        .collect())
}

/// A temporary directory for the `.deb` files, removed when dropped.
struct Downloads {
    dir: PathBuf,
}

impl Downloads {
    fn create() -> Result<Self, String> {
        let dir = env::temp_dir().join(format!("hvguest-rustc-web-{}", std::process::id()));
        // A leftover of an earlier process with our id.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .map_err(|err| format!("could not create {}: {err}", dir.display()))?;
        Ok(Downloads { dir })
    }

    fn fetch(&self, packages: &[(String, String)]) -> Result<(), String> {
        let mut cmd = apt("apt-get");
        // apt fetches as the user `_apt`, which may not write here; as root, it would
        // fall back to root with a warning. Ask for root directly.
        let as_root = fs::metadata(&self.dir).is_ok_and(|meta| meta.uid() == 0);
        if as_root {
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd.arg("download")
            .args(packages.iter().map(|(name, _)| name))
            .current_dir(&self.dir);
        exec(&mut cmd)
    }

    /// The downloaded `.deb` files, sorted.
    fn debs(&self) -> Result<Vec<PathBuf>, String> {
        let mut debs: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(|err| format!("could not list {}: {err}", self.dir.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .collect();
        debs.sort();
        Ok(debs)
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Unpacks the downloads into a staging directory next to the prefix, trims the sources
/// build-std does not read, checks the result, and moves it into place.
fn install(cache: &Path, toolchain: &Toolchain, downloads: &Downloads) -> Result<(), String> {
    remove_stale_staging(cache);
    let prefix_name = toolchain
        .prefix
        .file_name()
        .expect("the prefix has a name")
        .to_string_lossy()
        .into_owned();
    let staging = Toolchain {
        prefix: cache.join(format!("{prefix_name}.partial-{}", std::process::id())),
    };
    let result = stage(&staging, downloads).and_then(|()| {
        // A prefix without its stamp is a leftover of an interrupted install.
        if toolchain.prefix.exists() && !toolchain.is_ready() {
            say(&format!(
                "removing the incomplete {}",
                toolchain.prefix.display()
            ));
            fs::remove_dir_all(&toolchain.prefix)
                .map_err(|err| format!("could not remove {}: {err}", toolchain.prefix.display()))?;
        }
        match fs::rename(&staging.prefix, &toolchain.prefix) {
            Ok(()) => Ok(()),
            // Another run finished the same install first.
            Err(_) if toolchain.is_ready() => Ok(()),
            Err(err) => Err(format!(
                "could not move {} to {}: {err}",
                staging.prefix.display(),
                toolchain.prefix.display()
            )),
        }
    });
    if staging.prefix.exists() {
        let _ = fs::remove_dir_all(&staging.prefix);
    }
    result
}

fn stage(staging: &Toolchain, downloads: &Downloads) -> Result<(), String> {
    let prefix = &staging.prefix;
    fs::create_dir_all(prefix)
        .map_err(|err| format!("could not create {}: {err}", prefix.display()))?;
    for deb in downloads.debs()? {
        exec(apt("dpkg").arg("-x").arg(&deb).arg(prefix))?;
    }
    if !staging.runs() {
        exec(staging.command("rustc").arg("-vV"))?;
        exec(staging.command("cargo").arg("-V"))?;
        return Err("the unpacked rustc or cargo does not run".into());
    }
    trim_sources(staging)?;
    fs::write(prefix.join(READY_STAMP), "")
        .map_err(|err| format!("could not write the stamp in {}: {err}", prefix.display()))
}

/// Deletes `usr/src/rustc-*/{src,compiler}` (two thirds of the sources: the compiler and
/// its tools) unless the standard library's workspace stops resolving without them, which
/// is what build-std needs of it; in that case they stay.
fn trim_sources(staging: &Toolchain) -> Result<(), String> {
    let src = staging.prefix.join("usr").join("src");
    let aside = staging.prefix.join(".trimmed");
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    let entries =
        fs::read_dir(&src).map_err(|err| format!("could not list {}: {err}", src.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("rustc-") {
            continue;
        }
        for part in ["src", "compiler"] {
            let from = entry.path().join(part);
            if !from.is_dir() {
                continue;
            }
            let mut to_name = OsString::from(&name);
            to_name.push(format!("-{part}"));
            let to = aside.join(to_name);
            fs::create_dir_all(&aside)
                .and_then(|()| fs::rename(&from, &to))
                .map_err(|err| format!("could not move {} aside: {err}", from.display()))?;
            moved.push((from, to));
        }
    }
    if moved.is_empty() {
        return Ok(());
    }
    let mut cmd = staging.command("cargo");
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--filter-platform",
        TARGET,
    ])
    .arg("--manifest-path")
    .arg(staging.library_manifest())
    .stdout(Stdio::null());
    let names: Vec<String> = moved
        .iter()
        .map(|(from, _)| from.display().to_string())
        .collect();
    if exec(&mut cmd).is_ok() {
        say(&format!(
            "std's workspace resolves without them: deleting {}",
            names.join(" and ")
        ));
        fs::remove_dir_all(&aside)
            .map_err(|err| format!("could not delete {}: {err}", aside.display()))
    } else {
        say(&format!(
            "std's workspace needs them: keeping {}",
            names.join(" and ")
        ));
        for (from, to) in &moved {
            fs::rename(to, from)
                .map_err(|err| format!("could not move {} back: {err}", from.display()))?;
        }
        let _ = fs::remove_dir(&aside);
        Ok(())
    }
}

/// Removes the staging directories of installs whose process is gone (a killed run
/// leaves hundreds of megabytes behind).
fn remove_stale_staging(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.rsplit_once(".partial-") else {
            continue;
        };
        let ours = name.starts_with("rustc-web-") && pid.chars().all(|c| c.is_ascii_digit());
        if !ours || Path::new("/proc").join(pid).exists() {
            continue;
        }
        say(&format!(
            "removing {}, left by an interrupted install",
            entry.path().display()
        ));
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// Confirms from mio's dep-info file (the sources rustc read) that mio was checked with
/// its poll(2) selector, as `.cargo/config.toml` asks for FreeBSD.
fn check_mio_selector(target_dir: &Path) -> Result<(), String> {
    let deps = target_dir.join(TARGET).join("debug").join("deps");
    let newest = fs::read_dir(&deps)
        .map_err(|err| format!("could not list {}: {err}", deps.display()))?
        .filter_map(Result::ok)
        .filter(|entry| is_mio_dep_info(&entry.file_name().to_string_lossy()))
        .max_by_key(|entry| {
            entry
                .metadata()
                .and_then(|meta| meta.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        });
    let Some(entry) = newest else {
        say("mio is not a dependency (yet): no selector to verify");
        return Ok(());
    };
    let path = entry.path();
    let sources = fs::read_to_string(&path)
        .map_err(|err| format!("could not read {}: {err}", path.display()))?;
    if sources.contains("/selector/poll.rs") {
        say("mio was checked with its poll(2) selector (--cfg mio_unsupported_force_poll_poll)");
        Ok(())
    } else {
        Err(format!(
            "mio was not checked with its poll(2) selector ({} lists no selector/poll.rs): \
             the FreeBSD rustflags of .cargo/config.toml did not reach it; \
             delete {} if it was built by hand with other flags",
            path.display(),
            target_dir.display()
        ))
    }
}

/// `mio-<hash>.d`, and not another crate's such as `mio_extras-<hash>.d`.
fn is_mio_dep_info(name: &str) -> bool {
    name.strip_prefix("mio-")
        .and_then(|rest| rest.strip_suffix(".d"))
        .is_some_and(|hash| !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The size on disk of a directory tree, as `du` counts it.
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.filter_map(Result::ok) {
                total += disk_usage(&entry.path());
            }
        }
    }
    total
}

/// An apt or dpkg program with untranslated output, which is parsed here.
fn apt(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LC_ALL", "C");
    cmd
}

/// The command as a shell line that can be pasted: changed variables first, then the
/// program (in full, since two cargos are about) and its arguments.
fn shown(cmd: &Command) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (name, value) in cmd.get_envs() {
        if value.is_none() {
            if parts.is_empty() {
                parts.push("env".into());
            }
            parts.push("-u".into());
            parts.push(name.to_string_lossy().into_owned());
        }
    }
    for (name, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!(
                "{}={}",
                name.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    parts
        .iter()
        .map(|part| quoted(part))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A word as the shell reads it: in single quotes if it holds anything but plain
/// characters.
fn quoted(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c);
    if word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Prints the command, runs it with inherited stdio, and fails unless it exits 0.
fn exec(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {}", shown(cmd));
    // The error names the command briefly: the full line is just above it.
    let brief = super::shown(cmd);
    let status = cmd
        .status()
        .map_err(|err| format!("could not start `{brief}`: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{brief}` failed ({status})"))
    }
}

/// Prints the command, runs it, and returns its standard output; fails unless it exits 0.
fn read(cmd: &mut Command) -> Result<String, String> {
    eprintln!("$ {}", shown(cmd));
    let brief = super::shown(cmd);
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| format!("could not start `{brief}`: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("`{brief}` failed ({})", output.status))
    }
}

fn say(message: &str) {
    eprintln!("xtask check-freebsd: {message}");
}
