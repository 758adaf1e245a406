//! `deb`: builds the Debian package `target/deb/hvguest_<version>-1_<arch>.deb` by hand:
//! stages the tree under `target/deb/root/`, writes `DEBIAN/` (control, md5sums, the
//! maintainer scripts of `packaging/debian/`), checks the staged files against the
//! explicit list `packaging/debian/contents` (as `dist` holds the FreeBSD tree to
//! `pkg-plist`), and runs `dpkg-deb --build --root-owner-group`. No packaging tool
//! beyond dpkg-deb, binutils and gzip, no network.
//!
//! | installed | from |
//! |---|---|
//! | `/usr/sbin/hv_kvp_daemon`, `/usr/sbin/hv_vss_daemon`, `/usr/bin/hvkvp` | `cargo build --release -p hvguest-io`, stripped as `dh_strip` does |
//! | `/usr/share/man/man{1,5,8}/*.gz` | `packaging/man/`, `gzip -9n` |
//! | `/usr/lib/systemd/system/hvguest-{kvp,vss}.service` | `packaging/linux/` (started by udev, no `[Install]`) |
//! | `/usr/lib/udev/rules.d/70-hvguest-{kvp,vss}.rules` | `packaging/linux/` |
//! | `/usr/share/doc/hvguest/examples/{kvp,vss}.conf.sample` | `packaging/` (nothing in `/etc`: the daemons run with defaults when the files are missing) |
//! | `/usr/share/doc/hvguest/copyright`, `changelog.Debian.gz` | `packaging/debian/copyright`; generated |
//!
//! `hv_vss_app` and its page are left out: the application helper needs FreeBSD's
//! `/dev/hv_appvss_dev`, which Linux does not have (`LEFT_OUT`). Every program of
//! `io/src/bin/`, every page of `packaging/man/` and every file of `packaging/linux/`
//! must be packaged or left out by name, so a new one cannot be forgotten.
//!
//! `Depends` is computed from the staged programs: each `NEEDED` library is mapped to its
//! Debian package and the highest symbol version needed from it (`readelf -d -V`) becomes
//! the lower bound, cross-checked with `dpkg-shlibdeps` where that is installed. Where the
//! distributions' daemons are concerned (the `Conflicts`, the diversions and the masks),
//! see `control_text` and the scripts in `packaging/debian/`.
//!
//! `deb --install-test` (root, dpkg) then runs the maintainer scripts under a stand-in
//! systemd (`scripts_under_systemd`), and installs the package on this machine between
//! stand-ins for Debian's `hyperv-daemons` and Ubuntu's `linux-cloud-tools-common`, checks
//! the installed files, runs the programs and `systemd-analyze verify`, removes and purges
//! it, and checks that nothing of it is left (`install_test`).

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{cargo, project_root, run};

/// The Debian package's name.
const NAME: &str = "hvguest";
/// The Debian revision appended to the workspace's version.
const REVISION: &str = "1";
const MAINTAINER: &str = "hvguest developers <dev@hvguest.invalid>";
/// The workspace package that holds every program.
const BUILD_PACKAGE: &str = "hvguest-io";
/// Every packaged program, with its directory.
const PROGRAMS: [(&str, &str); 3] = [
    ("hv_kvp_daemon", "usr/sbin"),
    ("hv_vss_daemon", "usr/sbin"),
    ("hvkvp", "usr/bin"),
];
/// Packaged manual pages from `packaging/man/`; the section is the last extension.
const MAN_PAGES: [&str; 5] = [
    "hvkvp.1",
    "kvp.conf.5",
    "vss.conf.5",
    "hv_kvp_daemon.8",
    "hv_vss_daemon.8",
];
/// Programs and pages of the workspace that the Linux package does not install.
const LEFT_OUT: [(&str, &str); 2] = [
    (
        "hv_vss_app",
        "FreeBSD only: it serves /dev/hv_appvss_dev, which Linux has no counterpart of",
    ),
    ("hv_vss_app.8", "the page of hv_vss_app"),
];
/// Other files: source (from the workspace root), destination (under the root), mode.
const FILES: [(&str, &str, u32); 7] = [
    (
        "packaging/linux/hvguest-kvp.service",
        "usr/lib/systemd/system/hvguest-kvp.service",
        0o644,
    ),
    (
        "packaging/linux/hvguest-vss.service",
        "usr/lib/systemd/system/hvguest-vss.service",
        0o644,
    ),
    (
        "packaging/linux/70-hvguest-kvp.rules",
        "usr/lib/udev/rules.d/70-hvguest-kvp.rules",
        0o644,
    ),
    (
        "packaging/linux/70-hvguest-vss.rules",
        "usr/lib/udev/rules.d/70-hvguest-vss.rules",
        0o644,
    ),
    (
        "packaging/kvp.conf.sample",
        "usr/share/doc/hvguest/examples/kvp.conf.sample",
        0o644,
    ),
    (
        "packaging/vss.conf.sample",
        "usr/share/doc/hvguest/examples/vss.conf.sample",
        0o644,
    ),
    (
        "packaging/debian/copyright",
        "usr/share/doc/hvguest/copyright",
        0o644,
    ),
];
/// Lines of the staged samples that are FreeBSD's: (staged file, line, Linux's line).
/// `packaging/vss.conf.sample` is `vss_config::SAMPLE`, which names FreeBSD's hook
/// directory; copied to `/etc/hvguest/vss.conf` unchanged it would move a Linux daemon's
/// hooks there. Each line must occur exactly once, so a changed sample fails the build.
const SAMPLE_EDITS: [(&str, &str, &str); 1] = [(
    "usr/share/doc/hvguest/examples/vss.conf.sample",
    "hook_dir = /usr/local/etc/hvguest/hooks.d",
    "hook_dir = /etc/hvguest/hooks.d",
)];
/// Generated: the Debian changelog (`changelog_text`), gzipped.
const CHANGELOG: &str = "usr/share/doc/hvguest/changelog.Debian.gz";
/// Maintainer scripts in `packaging/debian/`, installed in `DEBIAN/` with mode 0755.
const SCRIPTS: [&str; 4] = ["preinst", "postinst", "prerm", "postrm"];
/// The explicit list of installed files.
const CONTENTS: &str = "packaging/debian/contents";
const DEBIAN_DIR: &str = "packaging/debian";
const LINUX_DIR: &str = "packaging/linux";
const MAN_DIR: &str = "packaging/man";
const BIN_DIR: &str = "io/src/bin";

/// The distribution packages this one stands in for. Debian's `hyperv-daemons` ships
/// `/usr/sbin/hv_kvp_daemon`, `hv_vss_daemon` and `hv_fcopy_daemon` and their units, and
/// nothing else depends on it but the cloud images' metapackage: it is conflicted,
/// replaced (dpkg removes it when hvguest is installed) and provided (that metapackage
/// stays installable). Ubuntu's `linux-cloud-tools-common` is not conflicted: the kernel
/// metapackages depend on it; preinst diverts its two daemons instead.
const STANDS_IN_FOR: &str = "hyperv-daemons";
/// Ubuntu's package whose two daemons preinst diverts.
const DIVERTED_FROM: &str = "linux-cloud-tools-common";

pub fn deb(install_test: bool) -> Result<(), String> {
    let started = Instant::now();
    let package = build()?;
    println!(
        "xtask deb: built {} in {:.1} s",
        package.display(),
        started.elapsed().as_secs_f64()
    );
    if install_test {
        let started = Instant::now();
        install_test_run(&package)?;
        println!(
            "xtask deb: install test passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The package's version: the workspace's (this crate's is `version.workspace = true`)
/// and the Debian revision.
fn version() -> String {
    format!("{}-{REVISION}", env!("CARGO_PKG_VERSION"))
}

fn build() -> Result<PathBuf, String> {
    let root = project_root();
    check_sources(&root)?;
    let arch = capture(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();

    let mut cargo_build = cargo();
    cargo_build.args(["build", "--release", "-p", BUILD_PACKAGE]);
    for (name, _) in PROGRAMS {
        cargo_build.args(["--bin", name]);
    }
    run(&mut cargo_build)?;

    let out = target_dir().join("deb");
    let stage = out.join("root");
    if stage.exists() {
        fs::remove_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    }
    let release = target_dir().join("release");
    for (name, dir) in PROGRAMS {
        let dest = stage.join(dir).join(name);
        copy(&release.join(name), &dest, 0o755)?;
        // As dh_strip: the release profile keeps line tables (debug = 1) for backtraces
        // in development; the package does not carry them.
        let mut strip = Command::new("strip");
        strip
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
            ])
            .arg(&dest);
        run(&mut strip)?;
    }
    for page in MAN_PAGES {
        let section = page.rsplit('.').next().unwrap_or_default();
        let dest = stage
            .join("usr/share/man")
            .join(format!("man{section}"))
            .join(format!("{page}.gz"));
        let text = fs::read(root.join(MAN_DIR).join(page))
            .map_err(|e| format!("{MAN_DIR}/{page}: {e}"))?;
        write_bytes(&dest, &gzip(&text)?, 0o644)?;
    }
    for (source, dest, mode) in FILES {
        copy(&root.join(source), &stage.join(dest), mode)?;
    }
    for (file, from, to) in SAMPLE_EDITS {
        let path = stage.join(file);
        let text = edit_line(&read(&path)?, from, to).map_err(|e| format!("{file}: {e}"))?;
        write_bytes(&path, text.as_bytes(), 0o644)?;
    }
    let epoch = source_date_epoch();
    let date = capture(
        Command::new("date")
            .env("LC_ALL", "C")
            .args(["-u", "-R", "-d"])
            .arg(format!("@{epoch}")),
    )?;
    let changelog = changelog_text(&version(), date.trim());
    write_bytes(&stage.join(CHANGELOG), &gzip(changelog.as_bytes())?, 0o644)?;

    // The staged tree against the explicit list.
    let staged = walk(&stage)?;
    let listed = parse_contents(&read(&root.join(CONTENTS))?)?;
    let mut problems = compare(&listed, &staged);
    let planned = planned();
    problems.extend(
        listed
            .symmetric_difference(&planned)
            .map(|p| format!("in only one of {CONTENTS} and deb.rs's constants: {p}")),
    );
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("xtask deb: {p}");
        }
        return Err(format!(
            "the staged tree and {CONTENTS} differ ({} problem(s))",
            problems.len()
        ));
    }
    // dpkg-deb takes the directories' modes as they are; the umask must not decide them.
    for (path, entry) in &staged {
        if *entry == Entry::Dir {
            set_mode(&stage.join(path), 0o755)?;
        }
    }

    // Depends, from what the programs need.
    let mut needs = Vec::new();
    for (name, dir) in PROGRAMS {
        let path = stage.join(dir).join(name);
        let text = capture(Command::new("readelf").args(["-d", "-V", "-W"]).arg(&path))?;
        needs.push(depends_from_readelf(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let depends = merge_depends(&needs);
    let depends_line = depends_text(&depends);
    cross_check_shlibdeps(&stage, &depends_line)?;

    // DEBIAN/.
    let control_dir = stage.join("DEBIAN");
    for script in SCRIPTS {
        copy(
            &root.join(DEBIAN_DIR).join(script),
            &control_dir.join(script),
            0o755,
        )?;
    }
    let files: Vec<&String> = listed.iter().collect();
    let mut md5 = Command::new("md5sum");
    md5.current_dir(&stage)
        .args(files.iter().map(|f| f.trim_start_matches('/')));
    write_bytes(
        &control_dir.join("md5sums"),
        capture(&mut md5)?.as_bytes(),
        0o644,
    )?;
    let control = control_text(
        &version(),
        &arch,
        installed_size_kib(&staged),
        &depends_line,
    );
    write_bytes(&control_dir.join("control"), control.as_bytes(), 0o644)?;
    set_mode(&control_dir, 0o755)?;

    let package = out.join(format!("{NAME}_{}_{arch}.deb", version()));
    let mut dpkg_deb = Command::new("dpkg-deb");
    dpkg_deb
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&stage)
        .arg(&package);
    run(&mut dpkg_deb)?;

    print!("{control}");
    println!("files:");
    for (path, entry) in &staged {
        if let Entry::File { mode, size } = entry {
            println!("  {mode:04o} {size:>9}  /{path}");
        }
    }
    let size = fs::metadata(&package)
        .map_err(|e| format!("{}: {e}", package.display()))?
        .len();
    println!(
        "xtask deb: {} ({size} bytes) matches {CONTENTS} ({} files)",
        package.display(),
        listed.len()
    );
    Ok(package)
}

/// Every program, page and Linux packaging file is packaged or left out by name; every
/// file of `packaging/debian/` is used.
fn check_sources(root: &Path) -> Result<(), String> {
    let left_out: BTreeSet<&str> = LEFT_OUT.iter().map(|(n, _)| *n).collect();
    let mut problems = Vec::new();
    for file in file_names(&root.join(BIN_DIR))? {
        let name = file.strip_suffix(".rs").unwrap_or(&file);
        if !PROGRAMS.iter().any(|(p, _)| *p == name) && !left_out.contains(name) {
            problems.push(format!(
                "{BIN_DIR}/{file}: a program neither packaged (PROGRAMS) nor left out (LEFT_OUT)"
            ));
        }
    }
    for page in file_names(&root.join(MAN_DIR))? {
        if !MAN_PAGES.contains(&page.as_str()) && !left_out.contains(page.as_str()) {
            problems.push(format!(
                "{MAN_DIR}/{page}: a page neither packaged (MAN_PAGES) nor left out (LEFT_OUT)"
            ));
        }
    }
    let sources: BTreeSet<&str> = FILES.iter().map(|(s, _, _)| *s).collect();
    for file in file_names(&root.join(LINUX_DIR))? {
        if !sources.contains(format!("{LINUX_DIR}/{file}").as_str()) {
            problems.push(format!("{LINUX_DIR}/{file}: not packaged (FILES)"));
        }
    }
    for file in file_names(&root.join(DEBIAN_DIR))? {
        let used = SCRIPTS.contains(&file.as_str())
            || format!("{DEBIAN_DIR}/{file}") == CONTENTS
            || sources.contains(format!("{DEBIAN_DIR}/{file}").as_str());
        if !used {
            problems.push(format!("{DEBIAN_DIR}/{file}: not used by xtask deb"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The `DEBIAN/control` text.
///
/// * `Conflicts`/`Replaces`/`Provides: hyperv-daemons` (`STANDS_IN_FOR`): installing
///   hvguest removes Debian's daemons, whose files and units it takes over.
/// * No relation to Ubuntu's `linux-cloud-tools-common` (`DIVERTED_FROM`): see preinst.
/// * `Suggests: network-manager`: SET_IP_INFO writes a NetworkManager keyfile and
///   applies it with nmcli.
fn control_text(version: &str, arch: &str, installed_size: u64, depends: &str) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_size}\n\
         Depends: {depends}\n\
         Suggests: network-manager\n\
         Conflicts: {STANDS_IN_FOR}\n\
         Replaces: {STANDS_IN_FOR}\n\
         Provides: {STANDS_IN_FOR}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: Hyper-V guest daemons (KVP data exchange, VSS backup) in Rust\n \
         hv_kvp_daemon and hv_vss_daemon from hvguest replace the Hyper-V guest\n \
         daemons of the kernel's tools: crash-safe key-value pools, the host's\n \
         requests answered in time, file systems frozen and always thawed for\n \
         host-side backups. hvkvp reads and writes the pools.\n \
         .\n \
         The daemons are started by udev when /dev/vmbus/hv_kvp and\n \
         /dev/vmbus/hv_vss appear. Installing this package removes Debian's\n \
         {STANDS_IN_FOR} (its fcopy daemon is not replaced) and, on Ubuntu,\n \
         diverts the daemons of {DIVERTED_FROM}.\n"
    )
}

/// `text` with its one line equal to `from` replaced by `to`.
fn edit_line(text: &str, from: &str, to: &str) -> Result<String, String> {
    let count = text.lines().filter(|l| *l == from).count();
    if count != 1 {
        return Err(format!(
            "expected the line `{from}` once, found it {count} times"
        ));
    }
    Ok(text
        .split_inclusive('\n')
        .map(|l| {
            if l.trim_end_matches('\n') == from {
                format!("{to}\n")
            } else {
                l.to_string()
            }
        })
        .collect())
}

/// The Debian changelog entry for `version`, dated `date` (RFC 2822).
fn changelog_text(version: &str, date: &str) -> String {
    format!(
        "{NAME} ({version}) unstable; urgency=medium\n\
         \n  * Built from the hvguest workspace by `cargo xtask deb`.\n\
         \n -- {MAINTAINER}  {date}\n"
    )
}

/// The build's date for the changelog and the archive: `$SOURCE_DATE_EPOCH`, else the
/// last commit's, else 0; the package is then the same for the same commit.
fn source_date_epoch() -> u64 {
    if let Some(epoch) = env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|e| e.parse().ok())
    {
        return epoch;
    }
    Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(project_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// A dotted numeric version (`2.34`, `4.2`), compared component by component.
type Version = Vec<u32>;

/// The Debian package of a shared library and the version its symbol-version node
/// (`GLIBC_2.34`, `GCC_4.2.0`) stands for, `None` for nodes that set no bound
/// (`GLIBC_PRIVATE`). An unknown library is an error: a new dependency must be mapped
/// here, not dropped.
fn library_package(library: &str) -> Result<&'static str, String> {
    const LIBC: [&str; 6] = [
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
    ];
    if LIBC.contains(&library) || library.starts_with("ld-linux") {
        Ok("libc6")
    } else if library == "libgcc_s.so.1" {
        Ok("libgcc-s1")
    } else {
        Err(format!(
            "needs {library}, which xtask deb does not know the package of (add it to library_package)"
        ))
    }
}

fn node_version(package: &str, node: &str) -> Option<Version> {
    let digits = match package {
        "libc6" => node.strip_prefix("GLIBC_")?,
        // libgcc-s1's symbols file names GCC_4.2.0 as 4.2 and GCC_3.0 as 3.0.
        "libgcc-s1" => node.strip_prefix("GCC_")?,
        _ => return None,
    };
    let mut version: Version = digits
        .split('.')
        .map(|c| c.parse().ok())
        .collect::<Option<_>>()?;
    while version.len() > 2 && version.last() == Some(&0) {
        version.pop();
    }
    Some(version)
}

/// The packages one program needs, each with the highest version it needs of it (`None`:
/// any), from `readelf -d -V -W`: the `(NEEDED)` lines and the version needs
/// (`File: libc.so.6` followed by its `Name: GLIBC_2.34` lines).
fn depends_from_readelf(text: &str) -> Result<BTreeMap<String, Option<Version>>, String> {
    let mut out: BTreeMap<String, Option<Version>> = BTreeMap::new();
    let mut file: Option<&str> = None;
    let mut needed = 0;
    for line in text.lines() {
        if line.contains("(NEEDED)") {
            let library = line
                .split_once('[')
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(name, _)| name)
                .ok_or_else(|| format!("unexpected readelf line: {line}"))?;
            out.entry(library_package(library)?.to_string())
                .or_insert(None);
            needed += 1;
        } else if let Some((_, rest)) = line.split_once("File: ") {
            file = rest.split_whitespace().next();
        } else if let Some((_, rest)) = line.split_once("Name: ") {
            let (Some(library), Some(node)) = (file, rest.split_whitespace().next()) else {
                continue;
            };
            let package = library_package(library)?;
            if let Some(version) = node_version(package, node) {
                let slot = out.entry(package.to_string()).or_insert(None);
                if slot.as_ref().is_none_or(|have| version > *have) {
                    *slot = Some(version);
                }
            }
        }
    }
    if needed == 0 {
        return Err("readelf shows no NEEDED library (not a dynamic executable?)".into());
    }
    Ok(out)
}

/// The union of several programs' needs, the highest version of each package.
fn merge_depends(needs: &[BTreeMap<String, Option<Version>>]) -> BTreeMap<String, Option<Version>> {
    let mut out: BTreeMap<String, Option<Version>> = BTreeMap::new();
    for need in needs {
        for (package, version) in need {
            let slot = out.entry(package.clone()).or_insert(None);
            if version.as_ref() > slot.as_ref() {
                slot.clone_from(version);
            }
        }
    }
    out
}

/// `libc6 (>= 2.34), libgcc-s1 (>= 4.2)`.
fn depends_text(depends: &BTreeMap<String, Option<Version>>) -> String {
    depends
        .iter()
        .map(|(package, version)| match version {
            Some(v) => {
                let dotted: Vec<String> = v.iter().map(u32::to_string).collect();
                format!("{package} (>= {})", dotted.join("."))
            }
            None => package.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where dpkg-shlibdeps (dpkg-dev) is installed, it must come to the same `Depends`.
fn cross_check_shlibdeps(stage: &Path, ours: &str) -> Result<(), String> {
    if Command::new("dpkg-shlibdeps")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("xtask deb: dpkg-shlibdeps is not installed: Depends not cross-checked");
        return Ok(());
    }
    let work = stage.with_file_name("shlibdeps");
    write_bytes(
        &work.join("debian/control"),
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.current_dir(&work).arg("-O");
    for (name, dir) in PROGRAMS {
        cmd.arg(stage.join(dir).join(name));
    }
    let output = cmd
        .output()
        .map_err(|e| format!("could not run dpkg-shlibdeps: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "dpkg-shlibdeps failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let theirs = stdout
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .unwrap_or("")
        .trim();
    if theirs != ours {
        return Err(format!(
            "Depends differs from dpkg-shlibdeps': ours `{ours}`, theirs `{theirs}`"
        ));
    }
    println!("xtask deb: Depends `{ours}`, the same as dpkg-shlibdeps'");
    Ok(())
}

/// `Installed-Size` as dpkg-gencontrol computes it: each file's size in KiB rounded up,
/// one per directory.
fn installed_size_kib(staged: &BTreeMap<String, Entry>) -> u64 {
    staged
        .values()
        .map(|entry| match entry {
            Entry::Dir => 1,
            Entry::File { size, .. } => size.div_ceil(1024),
        })
        .sum()
}

/// The paths of `packaging/debian/contents`: absolute, one a line, `#` comments.
fn parse_contents(text: &str) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.starts_with('/') || line.split('/').any(|c| c == "..") {
            return Err(format!(
                "{CONTENTS}:{}: not an absolute path: {line}",
                i + 1
            ));
        }
        if !out.insert(line.to_string()) {
            return Err(format!("{CONTENTS}:{}: listed twice: {line}", i + 1));
        }
    }
    Ok(out)
}

/// What the constants above stage, as installed paths: the list `contents` must equal.
fn planned() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, dir) in PROGRAMS {
        out.insert(format!("/{dir}/{name}"));
    }
    for page in MAN_PAGES {
        let section = page.rsplit('.').next().unwrap_or_default();
        out.insert(format!("/usr/share/man/man{section}/{page}.gz"));
    }
    for (_, dest, _) in FILES {
        out.insert(format!("/{dest}"));
    }
    out.insert(format!("/{CHANGELOG}"));
    out
}

/// The differences between the listed files and a staged (or installed) tree.
fn compare(listed: &BTreeSet<String>, staged: &BTreeMap<String, Entry>) -> Vec<String> {
    let mut problems = Vec::new();
    for file in listed {
        match staged.get(file.trim_start_matches('/')) {
            Some(Entry::File { .. }) => {}
            Some(Entry::Dir) => {
                problems.push(format!("listed as a file, staged as a directory: {file}"))
            }
            None => problems.push(format!("listed but not staged: {file}")),
        }
    }
    for (path, entry) in staged {
        if matches!(entry, Entry::File { .. }) && !listed.contains(&format!("/{path}")) {
            problems.push(format!("staged but not listed in {CONTENTS}: /{path}"));
        }
    }
    problems
}

// ---- the install test ----

/// Packages the test installs stand-ins for; it refuses to run where any of them, or
/// hvguest itself, is installed, since it installs and purges those names.
const TEST_NAMES: [&str; 3] = [NAME, STANDS_IN_FOR, DIVERTED_FROM];
/// The units postinst masks.
const STOCK_UNITS: [&str; 2] = ["hv-kvp-daemon.service", "hv-vss-daemon.service"];
const STOCK_OUTPUT: &str = "stock daemon stand-in";

fn install_test_run(package: &Path) -> Result<(), String> {
    if capture(Command::new("id").arg("-u"))?.trim() != "0" {
        return Err("--install-test installs the package with dpkg: run it as root".into());
    }
    for name in TEST_NAMES {
        if let Some(status) = package_status(name)? {
            return Err(format!(
                "{name} is on this machine ({status}): the install test installs and purges \
                 that name, so it runs only where none of {TEST_NAMES:?} is installed"
            ));
        }
    }
    for unit in STOCK_UNITS {
        let link = Path::new("/etc/systemd/system").join(unit);
        if fs::symlink_metadata(&link).is_ok() {
            return Err(format!(
                "{} exists: postinst would leave it alone and the test could not check the mask",
                link.display()
            ));
        }
    }
    let dir = package.with_file_name("install-test");
    let _ = fs::remove_dir_all(&dir);
    scripts_under_systemd(&package.with_file_name("root").join("DEBIAN"), &dir)?;
    // Whatever happens, the names the test installs are purged at the end.
    let _cleanup = Cleanup;

    // Debian: hyperv-daemons is installed; hvguest removes it.
    println!("\n== Debian: installing hvguest over {STANDS_IN_FOR} ==");
    let stock = stand_in(
        &dir,
        STANDS_IN_FOR,
        &["hv_kvp_daemon", "hv_vss_daemon", "hv_fcopy_daemon"],
    )?;
    dpkg(&["-i"], &stock)?;
    dpkg(&["-i"], package)?;
    expect(package_status(STANDS_IN_FOR)?.is_none(), || {
        format!("{STANDS_IN_FOR} is still installed after hvguest was")
    })?;
    expect(!Path::new("/usr/sbin/hv_fcopy_daemon").exists(), || {
        format!("{STANDS_IN_FOR}'s hv_fcopy_daemon is still there")
    })?;
    check_installed()?;
    // Upgrade over itself: preinst and postrm see `upgrade`, postinst `configure` with
    // the old version; diversions and masks stay, and are recorded once.
    dpkg(&["-i"], package)?;
    check_installed()?;
    let masked = read(Path::new("/var/lib/hvguest/masked-units"))?;
    expect(masked == format!("{}\n", STOCK_UNITS.join("\n")), || {
        format!("/var/lib/hvguest/masked-units after an upgrade:\n{masked}")
    })?;
    remove_and_purge()?;

    // Ubuntu: linux-cloud-tools-common stays; its daemons are diverted and come back.
    println!("\n== Ubuntu: installing hvguest beside {DIVERTED_FROM} ==");
    let tools = stand_in(
        &dir,
        DIVERTED_FROM,
        &["hv_kvp_daemon", "hv_vss_daemon", "lsvmbus"],
    )?;
    dpkg(&["-i"], &tools)?;
    dpkg(&["-i"], package)?;
    expect(package_status(DIVERTED_FROM)?.is_some(), || {
        format!("{DIVERTED_FROM} was removed")
    })?;
    for program in ["hv_kvp_daemon", "hv_vss_daemon"] {
        let moved = format!("/usr/sbin/{program}.distrib");
        let text = fs::read_to_string(&moved).map_err(|e| format!("{moved}: {e}"))?;
        expect(text.contains(STOCK_OUTPUT), || {
            format!("{moved} is not {DIVERTED_FROM}'s")
        })?;
    }
    check_installed()?;
    remove_and_purge()?;
    for program in ["hv_kvp_daemon", "hv_vss_daemon"] {
        let path = format!("/usr/sbin/{program}");
        let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        expect(text.contains(STOCK_OUTPUT), || {
            format!("{path} is not {DIVERTED_FROM}'s again after hvguest was purged")
        })?;
    }
    dpkg(&["-P", DIVERTED_FROM], Path::new(""))?;
    Ok(())
}

/// Runs the maintainer scripts where systemd and udev are running, which this machine
/// (systemd installed, not PID 1) cannot show through dpkg: in a mount namespace of its
/// own, with `/run/systemd/system` and `/run/udev` present, a `/dev` holding only
/// `/dev/null` and the KVP device, `/etc/systemd/system` and `/var/lib/hvguest` bound to
/// scratch directories, and `systemctl` and `udevadm` stand-ins that log their
/// arguments. What they are asked to do, and the masks, must be exactly `SYSTEMD_LOG`.
fn scripts_under_systemd(scripts: &Path, dir: &Path) -> Result<(), String> {
    const HARNESS: &str = r#"set -eu
scripts=$1 work=$2
mkdir -p "$work/etc" "$work/state" "$work/bin"
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system /run/udev
mount -t tmpfs tmpfs /dev
mknod -m 666 /dev/null c 1 3
mkdir /dev/vmbus
: >/dev/vmbus/hv_kvp
mount --bind "$work/etc" /etc/systemd/system
mount --bind "$work/state" /var/lib/hvguest
for tool in systemctl udevadm; do
    printf '#!/bin/sh
echo "%s $*" >>"$LOG"
' "$tool" >"$work/bin/$tool"
    chmod 755 "$work/bin/$tool"
done
export LOG="$work/log" PATH="$work/bin:$PATH"
sh "$scripts/postinst" configure
echo "masked: $(cd /etc/systemd/system && for f in *; do printf '%s->%s ' "$f" "$(readlink "$f")"; done)" >>"$LOG"
sh "$scripts/prerm" remove
sh "$scripts/postrm" remove
left=$(ls -A /etc/systemd/system /var/lib/hvguest | grep -v -e '^/' -e '^$' || true)
echo "left:${left:+ $left}" >>"$LOG"
"#;
    const SYSTEMD_LOG: &str = "\
udevadm control --reload
systemctl daemon-reload
systemctl stop hv-kvp-daemon.service hv-vss-daemon.service
systemctl restart hvguest-kvp.service
masked: hv-kvp-daemon.service->/dev/null hv-vss-daemon.service->/dev/null \n\
systemctl stop hvguest-kvp.service hvguest-vss.service
udevadm control --reload
systemctl daemon-reload
systemctl -q is-enabled hv-kvp-daemon.service
systemctl start hv-kvp-daemon.service
systemctl -q is-enabled hv-vss-daemon.service
systemctl start hv-vss-daemon.service
left:\n";
    if !Path::new("/etc/systemd/system").is_dir() {
        println!("no /etc/systemd/system here: the scripts are not run under a stand-in systemd");
        return Ok(());
    }
    let work = dir.join("systemd");
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    // The mount point; left empty, and removed below, as no hvguest is installed here.
    let state = Path::new("/var/lib/hvguest");
    fs::create_dir_all(state).map_err(|e| format!("{}: {e}", state.display()))?;
    let result = capture(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                HARNESS,
                "harness",
            ])
            .arg(scripts)
            .arg(&work),
    );
    let _ = fs::remove_dir(state);
    result?;
    let log = read(&work.join("log"))?;
    expect(log == SYSTEMD_LOG, || {
        format!(
            "under a stand-in systemd the maintainer scripts did:\n{log}\nexpected:\n{SYSTEMD_LOG}"
        )
    })?;
    println!("maintainer scripts under a stand-in systemd (KVP device present, VSS absent):");
    print!("{log}");
    Ok(())
}

/// The checks on an installed hvguest.
fn check_installed() -> Result<(), String> {
    let listed = parse_contents(&read(&project_root().join(CONTENTS))?)?;
    let shown = capture(Command::new("dpkg").args(["-L", NAME]))?;
    let files: BTreeSet<String> = shown
        .lines()
        .filter(|p| Path::new(p).is_file())
        .map(str::to_string)
        .collect();
    expect(files == listed, || {
        format!(
            "dpkg -L {NAME} lists other files than {CONTENTS}: missing {:?}, extra {:?}",
            listed.difference(&files).collect::<Vec<_>>(),
            files.difference(&listed).collect::<Vec<_>>()
        )
    })?;
    println!("dpkg -L {NAME}: the {} files of {CONTENTS}", files.len());
    for path in [
        "/usr/sbin/hv_kvp_daemon",
        "/usr/sbin/hv_vss_daemon",
        "/usr/bin/hvkvp",
    ] {
        let out = capture(Command::new(path).arg("--version"))?;
        let name = path.rsplit('/').next().unwrap_or(path);
        expect(
            out.trim() == format!("{name} {}", env!("CARGO_PKG_VERSION")),
            || format!("{path} --version printed `{}`", out.trim()),
        )?;
        println!("{path} --version: {}", out.trim());
    }
    // The Linux sample is valid for the installed daemon and keeps its hooks where it
    // looks for them.
    // An emulated mount table: this machine's own might veto (NFS) and hide the plan.
    let sample = "/usr/share/doc/hvguest/examples/vss.conf.sample";
    let mounts = env::temp_dir().join(format!("hvguest-deb-mounts-{}", std::process::id()));
    write_bytes(&mounts, b"ext4 / rw /dev/sda1\n", 0o644)?;
    let out = capture(
        Command::new("/usr/sbin/hv_vss_daemon")
            .args(["-t", "--config", sample, "--emulate-mounts"])
            .arg(&mounts),
    );
    let _ = fs::remove_file(&mounts);
    let out = out?;
    expect(
        out.contains("is valid") && out.contains("hooks in /etc/hvguest/hooks.d"),
        || format!("hv_vss_daemon -t --config {sample}:\n{out}"),
    )?;
    println!("hv_vss_daemon -t --config {sample}: valid, hooks in /etc/hvguest/hooks.d");
    for unit in STOCK_UNITS {
        let link = Path::new("/etc/systemd/system").join(unit);
        expect(
            fs::read_link(&link).is_ok_and(|t| t == Path::new("/dev/null")),
            || format!("{} is not masked", link.display()),
        )?;
    }
    let diversions = capture(Command::new("dpkg-divert").args(["--list", "*/hv_*_daemon"]))?;
    expect(
        diversions
            .lines()
            .filter(|l| l.contains(&format!("by {NAME}")))
            .count()
            == 2,
        || format!("expected two diversions by {NAME}, dpkg-divert lists:\n{diversions}"),
    )?;
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let mut verify = Command::new("systemd-analyze");
        verify.arg("verify");
        // The Documentation= pages are checked with man where it is installed.
        if Command::new("man").arg("--version").output().is_err() {
            verify.arg("--man=no");
        }
        verify.args([
            "/usr/lib/systemd/system/hvguest-kvp.service",
            "/usr/lib/systemd/system/hvguest-vss.service",
        ]);
        let out = verify
            .output()
            .map_err(|e| format!("could not run systemd-analyze: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        expect(out.status.success() && stderr.trim().is_empty(), || {
            format!("systemd-analyze verify of the installed units: {stderr}")
        })?;
        println!("systemd-analyze verify: the installed units are clean");
    } else {
        println!("systemd-analyze is not installed: the units are not verified");
    }
    Ok(())
}

/// `dpkg -r`, `dpkg -P`, and nothing of hvguest left.
fn remove_and_purge() -> Result<(), String> {
    let listed = parse_contents(&read(&project_root().join(CONTENTS))?)?;
    dpkg(&["-r", NAME], Path::new(""))?;
    dpkg(&["-P", NAME], Path::new(""))?;
    expect(package_status(NAME)?.is_none(), || {
        format!("dpkg still knows {NAME} after the purge")
    })?;
    let mut left: Vec<String> = listed
        .iter()
        .filter(|p| !p.starts_with("/usr/sbin/hv_") && fs::symlink_metadata(p).is_ok())
        .cloned()
        .collect();
    for path in ["/var/lib/hvguest", "/usr/share/doc/hvguest"] {
        if fs::symlink_metadata(path).is_ok() {
            left.push(path.to_string());
        }
    }
    for unit in STOCK_UNITS {
        let link = format!("/etc/systemd/system/{unit}");
        if fs::symlink_metadata(&link).is_ok() {
            left.push(link);
        }
    }
    let diversions = capture(Command::new("dpkg-divert").arg("--list"))?;
    left.extend(
        diversions
            .lines()
            .filter(|l| l.contains(&format!("by {NAME}")))
            .map(str::to_string),
    );
    expect(left.is_empty(), || {
        format!("left after the purge: {left:?}")
    })?;
    println!("removed and purged: nothing of {NAME} is left, dpkg reports it not installed");
    Ok(())
}

/// A stand-in for a distribution package: `/usr/sbin/<program>` scripts for each name and
/// `/usr/lib/systemd/system/hv-*-daemon.service` units, as the real ones have.
fn stand_in(dir: &Path, name: &str, programs: &[&str]) -> Result<PathBuf, String> {
    let root = dir.join(name);
    for program in programs {
        let script = format!("#!/bin/sh\necho '{STOCK_OUTPUT} {program}'\n");
        write_bytes(
            &root.join("usr/sbin").join(program),
            script.as_bytes(),
            0o755,
        )?;
    }
    for unit in STOCK_UNITS {
        let program = unit
            .replace("hv-", "hv_")
            .replace("-daemon.service", "_daemon");
        let text = format!(
            "[Unit]\nDescription={STOCK_OUTPUT}\n\n[Service]\nExecStart=/usr/sbin/{program} -n\n\n\
             [Install]\nWantedBy=multi-user.target\n"
        );
        write_bytes(
            &root.join("usr/lib/systemd/system").join(unit),
            text.as_bytes(),
            0o644,
        )?;
    }
    let control = format!(
        "Package: {name}\nVersion: 0~hvguest.test\nArchitecture: all\nMaintainer: {MAINTAINER}\n\
         Description: stand-in for {name} in hvguest's install test\n"
    );
    write_bytes(&root.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    let package = dir.join(format!("{name}_test.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&root)
        .arg(&package))?;
    Ok(package)
}

/// Purges what the install test installed, on every way out of it.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in TEST_NAMES {
            if package_status(name).is_ok_and(|s| s.is_some()) {
                let _ = Command::new("dpkg").args(["-P", name]).status();
            }
        }
    }
}

/// `None` when dpkg does not know `name` or knows it only as not installed and purged;
/// otherwise its status (`ii `, `rc `, ...).
fn package_status(name: &str) -> Result<Option<String>, String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", name])
        .output()
        .map_err(|e| format!("could not run dpkg-query: {e}"))?;
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(
        if !out.status.success() || status.is_empty() || status == "un" || status == "pn" {
            None
        } else {
            Some(status)
        },
    )
}

fn dpkg(args: &[&str], package: &Path) -> Result<(), String> {
    let mut cmd = Command::new("dpkg");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    if !package.as_os_str().is_empty() {
        cmd.arg(package);
    }
    run(&mut cmd)
}

fn expect(ok: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(message())
    }
}

// ---- files ----

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File { mode: u32, size: u64 },
}

/// Every directory and file under `root` but `DEBIAN/`, by path relative to it.
fn walk(root: &Path) -> Result<BTreeMap<String, Entry>, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            let meta =
                fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let relative = path
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            if relative == "DEBIAN" {
                continue;
            }
            if meta.is_dir() {
                out.insert(relative, Entry::Dir);
                todo.push(path);
            } else {
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(
                    relative,
                    Entry::File {
                        mode,
                        size: meta.len(),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// Where cargo puts its output: `$CARGO_TARGET_DIR` (relative to the workspace root) or
/// `target/`.
fn target_dir() -> PathBuf {
    let root = project_root();
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

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

/// `gzip -9n`: the most compression, no name or time stamp in the header (Debian policy
/// for man pages and changelogs; the same bytes for the same input).
fn gzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run gzip: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| format!("gzip: {e}"))?;
    writer
        .join()
        .map_err(|_| "gzip: the writer panicked".to_string())?
        .map_err(|e| format!("gzip: {e}"))?;
    if !out.status.success() {
        return Err(format!("gzip failed ({})", out.status));
    }
    Ok(out.stdout)
}

/// Runs the command and returns its stdout; fails unless it exits 0.
fn capture(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    let bytes = fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    write_bytes(to, &bytes, mode)
}

fn write_bytes(to: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", to.display());
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    fs::write(to, bytes).map_err(err)?;
    set_mode(to, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `readelf -d -V -W` of a release hvkvp on Debian 12, amd64 (abridged).
    const READELF: &str = "\
Dynamic section at offset 0x13d5d28 contains 31 entries:
  Tag        Type                         Name/Value
 0x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
 0x0000000000000001 (NEEDED)             Shared library: [ld-linux-x86-64.so.2]
 0x000000000000000c (INIT)               0x8c000

Version needs section '.gnu.version_r' contains 3 entries:
 Addr: 0x0000000000003b98  Offset: 0x003b98  Link: 7 (.dynstr)
  000000: Version: 1  File: libgcc_s.so.1  Cnt: 3
  0x0010:   Name: GCC_3.0  Flags: none  Version: 5
  0x0040:   Name: GCC_3.3  Flags: none  Version: 12
  0x0050:   Name: GCC_4.2.0  Flags: none  Version: 19
  0x0010: Version: 1  File: libc.so.6  Cnt: 14
  0x0060:   Name: GLIBC_2.2.5  Flags: none  Version: 3
  0x00a0:   Name: GLIBC_2.14  Flags: none  Version: 4
  0x0130:   Name: GLIBC_2.34  Flags: none  Version: 2
  0x0120:   Name: GLIBC_2.33  Flags: none  Version: 8
  0x0020: Version: 1  File: ld-linux-x86-64.so.2  Cnt: 1
  0x0140:   Name: GLIBC_2.3  Flags: none  Version: 7
";

    #[test]
    fn depends_takes_the_highest_symbol_version_of_each_library() {
        let needs = depends_from_readelf(READELF).unwrap();
        // 2.34 beats 2.4-style string order (2.14 < 2.34, and 2.33 listed after 2.34).
        assert_eq!(depends_text(&needs), "libc6 (>= 2.34), libgcc-s1 (>= 4.2)");
    }

    #[test]
    fn depends_of_several_programs_is_their_union() {
        let a = depends_from_readelf(READELF).unwrap();
        let b = depends_from_readelf(
            " 0x1 (NEEDED)  Shared library: [libc.so.6]\n  File: libc.so.6  Cnt: 1\n    Name: GLIBC_2.36  Flags: none\n",
        )
        .unwrap();
        assert_eq!(
            depends_text(&merge_depends(&[a, b])),
            "libc6 (>= 2.36), libgcc-s1 (>= 4.2)"
        );
    }

    #[test]
    fn an_unknown_library_is_an_error_not_a_missing_dependency() {
        let err =
            depends_from_readelf(" 0x1 (NEEDED)  Shared library: [libssl.so.3]\n").unwrap_err();
        assert!(err.contains("libssl.so.3"), "{err}");
        assert!(depends_from_readelf("no dynamic section\n").is_err());
    }

    #[test]
    fn private_nodes_set_no_bound() {
        assert_eq!(node_version("libc6", "GLIBC_PRIVATE"), None);
        assert_eq!(node_version("libc6", "GLIBC_2.2.5"), Some(vec![2, 2, 5]));
        assert_eq!(node_version("libgcc-s1", "GCC_4.2.0"), Some(vec![4, 2]));
        assert_eq!(node_version("libgcc-s1", "GCC_3.0"), Some(vec![3, 0]));
    }

    #[test]
    fn the_control_file() {
        let text = control_text("0.1.0-1", "amd64", 4242, "libc6 (>= 2.34)");
        let fields: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(' '))
            .map(|l| l.split_once(": ").expect("a field").0)
            .collect();
        assert_eq!(
            fields,
            [
                "Package",
                "Version",
                "Architecture",
                "Maintainer",
                "Installed-Size",
                "Depends",
                "Suggests",
                "Conflicts",
                "Replaces",
                "Provides",
                "Section",
                "Priority",
                "Description"
            ]
        );
        assert!(text.starts_with("Package: hvguest\nVersion: 0.1.0-1\nArchitecture: amd64\n"));
        assert!(text.contains("\nInstalled-Size: 4242\nDepends: libc6 (>= 2.34)\n"));
        // Debian's daemons are replaced; Ubuntu's package is kept (preinst diverts).
        for field in ["Conflicts", "Replaces", "Provides"] {
            assert!(
                text.contains(&format!("\n{field}: hyperv-daemons\n")),
                "{text}"
            );
        }
        assert!(!text
            .lines()
            .any(|l| l.starts_with("Conflicts") && l.contains(DIVERTED_FROM)));
        // Continuation lines start with one space, a blank one is ` .`, the file ends
        // with a newline and no line is empty (an empty line ends the stanza).
        assert!(text.ends_with('\n') && !text.contains("\n\n"));
        assert!(text.contains("\n .\n"));
        assert!(text.lines().all(|l| l.len() <= 80), "{text}");
    }

    #[test]
    fn the_version_is_the_workspaces_with_a_revision() {
        let cargo_toml = read(&project_root().join("Cargo.toml")).unwrap();
        let workspace_version = cargo_toml
            .lines()
            .skip_while(|l| l.trim() != "[workspace.package]")
            .find_map(|l| l.strip_prefix("version = "))
            .unwrap()
            .trim_matches('"');
        assert_eq!(version(), format!("{workspace_version}-1"));
    }

    #[test]
    fn the_vss_sample_names_the_linux_hook_directory() {
        let root = project_root();
        let sample = read(&root.join("packaging/vss.conf.sample")).unwrap();
        let (_, from, to) = SAMPLE_EDITS[0];
        let linux = edit_line(&sample, from, to).unwrap();
        assert!(!linux.contains("/usr/local/etc"), "{linux}");
        assert_eq!(linux.lines().count(), sample.lines().count());
        // The Linux daemon's default, which the edited line must restate.
        let config = read(&root.join("io/src/vss_config.rs")).unwrap();
        let dir = to.strip_prefix("hook_dir = ").unwrap();
        assert!(
            config.contains(&format!("pub const LINUX_HOOK_DIR: &str = \"{dir}\";")),
            "io/src/vss_config.rs's LINUX_HOOK_DIR is not {dir}"
        );
        assert!(edit_line("a\nb\n", "c", "d").is_err());
        assert!(edit_line("a\na\n", "a", "d").is_err());
        assert_eq!(edit_line("a\nb\nc", "b", "d").unwrap(), "a\nd\nc");
    }

    #[test]
    fn the_changelog_entry() {
        let text = changelog_text("0.1.0-1", "Thu, 01 Jan 1970 00:00:00 +0000");
        assert!(text.starts_with("hvguest (0.1.0-1) unstable; urgency=medium\n\n  * "));
        assert!(text.ends_with(
            "\n -- hvguest developers <dev@hvguest.invalid>  Thu, 01 Jan 1970 00:00:00 +0000\n"
        ));
    }

    #[test]
    fn the_contents_list_is_what_the_constants_stage() {
        let listed = parse_contents(&read(&project_root().join(CONTENTS)).unwrap()).unwrap();
        assert_eq!(listed, planned());
        // What the daemons and units name is where the package puts it.
        assert!(listed.contains("/usr/sbin/hv_kvp_daemon"));
        assert!(listed.contains("/usr/sbin/hv_vss_daemon"));
        assert!(
            !listed.iter().any(|p| p.starts_with("/etc/")),
            "no conffiles"
        );
        assert!(!listed.iter().any(|p| p.contains("hv_vss_app")));
    }

    #[test]
    fn every_source_is_packaged_or_left_out() {
        check_sources(&project_root()).unwrap();
    }

    #[test]
    fn the_units_run_the_packaged_programs() {
        let root = project_root();
        for (source, _, _) in FILES {
            if !source.ends_with(".service") {
                continue;
            }
            let unit = read(&root.join(source)).unwrap();
            for line in unit.lines().filter(|l| l.starts_with("Exec")) {
                let program = line
                    .split_once('=')
                    .unwrap()
                    .1
                    .split_whitespace()
                    .next()
                    .unwrap();
                assert!(planned().contains(program), "{source}: {line}");
            }
        }
    }

    #[test]
    fn compare_reports_both_directions() {
        let listed: BTreeSet<String> = ["/usr/bin/a", "/usr/bin/b"].map(String::from).into();
        let staged: BTreeMap<String, Entry> = [
            ("usr".to_string(), Entry::Dir),
            ("usr/bin".to_string(), Entry::Dir),
            (
                "usr/bin/a".to_string(),
                Entry::File {
                    mode: 0o755,
                    size: 1,
                },
            ),
            (
                "usr/bin/c".to_string(),
                Entry::File {
                    mode: 0o755,
                    size: 2048,
                },
            ),
        ]
        .into();
        assert_eq!(
            compare(&listed, &staged),
            [
                "listed but not staged: /usr/bin/b",
                "staged but not listed in packaging/debian/contents: /usr/bin/c"
            ]
        );
        assert_eq!(installed_size_kib(&staged), 1 + 1 + 1 + 2);
    }

    #[test]
    fn contents_must_be_absolute_and_listed_once() {
        assert!(parse_contents("usr/bin/a\n").is_err());
        assert!(parse_contents("/a\n/a\n").is_err());
        assert!(parse_contents("/a/../b\n").is_err());
        assert_eq!(parse_contents("# c\n\n/a\n").unwrap().len(), 1);
    }

    #[test]
    fn the_maintainer_scripts_parse_and_never_need_systemd_running() {
        let root = project_root();
        for script in SCRIPTS {
            let path = root.join(DEBIAN_DIR).join(script);
            let text = read(&path).unwrap();
            assert!(text.starts_with("#!/bin/sh\n"), "{script}");
            assert!(text.contains("\nset -e\n"), "{script}");
            let status = Command::new("sh").arg("-n").arg(&path).status().unwrap();
            assert!(status.success(), "sh -n {script}");
            // shellcheck where it is installed (Debian: apt-get install shellcheck).
            if let Ok(out) = Command::new("shellcheck")
                .args(["-s", "sh"])
                .arg(&path)
                .output()
            {
                let report = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "shellcheck {script}:\n{report}");
            }
            // systemctl only where systemd is PID 1.
            for (i, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("systemctl") {
                    let before = text.lines().take(i).collect::<Vec<_>>().join("\n");
                    let guard = before.rfind("[ -d /run/systemd/system ]");
                    assert!(guard.is_some(), "{script}:{}: unguarded systemctl", i + 1);
                }
            }
        }
        // What postinst masks is what postrm unmasks and the test checks.
        let postinst = read(&root.join(DEBIAN_DIR).join("postinst")).unwrap();
        assert!(postinst.contains(&format!("STOCK_UNITS=\"{}\"", STOCK_UNITS.join(" "))));
    }
}
