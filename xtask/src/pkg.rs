//! `pkg`: a FreeBSD package, `target/pkg/hvguest-<version>.pkg`, that `pkg add` installs
//! on a test VM: the linked FreeBSD programs (`check-freebsd --link`) and everything else
//! the port installs, staged as `dist` stages it, manual pages gzipped as the ports
//! framework does.
//!
//! The format (pkg(8), pkg-create(8)): an archive (here tar compressed with xz, which
//! pkg reads through libarchive) whose first two entries are `+COMPACT_MANIFEST` and
//! `+MANIFEST`, then every file under its absolute path, owned by root. Both manifests
//! are UCL, of which JSON is a subset; the full one adds `files` (path to `1$` and the
//! SHA-256 of the contents), `directories` (the `@dir` entries) and `scripts`: the
//! `@sample` lines of `pkg-plist` become a `post-install` that copies `X.sample` to `X`
//! when `X` does not exist and a `pre-deinstall` that removes `X` when it still equals
//! its sample, which is what pkg's own `@sample` keyword does.
//!
//! Before it is written, the manifest's file list is checked against `pkg-plist` (with
//! the rc.d scripts `USE_RC_SUBR` implies), and after, the archive's listing against the
//! manifest.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::dist::{self, Entry, PORT_DIR, PREFIX};
use super::{project_root, run};

const ORIGIN: &str = "sysutils/hvguest";
const ABI: &str = "FreeBSD:14:amd64";
const ARCH: &str = "freebsd:14:x86:64";

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the manifests say.
pub struct Manifest {
    pub version: String,
    pub comment: String,
    pub desc: String,
    pub www: String,
    pub maintainer: String,
    /// Absolute path and SHA-256 (hex) of every file, sorted.
    pub files: Vec<(String, String, u64)>,
    /// Absolute paths of the `@dir` directories.
    pub dirs: Vec<String>,
    /// Absolute paths of the `@sample` files (`….sample`).
    pub samples: Vec<String>,
}

impl Manifest {
    fn flatsize(&self) -> u64 {
        self.files.iter().map(|f| f.2).sum()
    }

    /// The fields both manifests have.
    fn common(&self) -> String {
        let mut o = String::new();
        let _ = write!(
            o,
            "\"name\":\"hvguest\",\"origin\":{},\"version\":{},\"comment\":{},\
             \"maintainer\":{},\"www\":{},\"abi\":{},\"arch\":{},\"prefix\":\"/{PREFIX}\",\
             \"flatsize\":{},\"licenselogic\":\"single\",\"licenses\":[\"BSD2CLAUSE\"],\
             \"desc\":{},\"categories\":[\"sysutils\"]",
            json(ORIGIN),
            json(&self.version),
            json(&self.comment),
            json(&self.maintainer),
            json(&self.www),
            json(ABI),
            json(ARCH),
            self.flatsize(),
            json(&self.desc),
        );
        o
    }

    pub fn compact(&self) -> String {
        format!("{{{}}}\n", self.common())
    }

    /// The `post-install` and `pre-deinstall` scripts of the `@sample` files.
    fn scripts(&self) -> (String, String) {
        let mut install = String::new();
        let mut deinstall = String::new();
        for sample in &self.samples {
            let target = sample.trim_end_matches(".sample");
            let _ = writeln!(
                install,
                "if [ ! -f '{target}' ]; then cp -p '{sample}' '{target}'; fi"
            );
            let _ = writeln!(
                deinstall,
                "if cmp -s '{target}' '{sample}'; then rm -f '{target}'; fi"
            );
        }
        (install, deinstall)
    }

    pub fn full(&self) -> String {
        let mut o = format!("{{{},\"files\":{{", self.common());
        for (i, (path, sha, _)) in self.files.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(o, "{sep}{}:{}", json(path), json(&format!("1${sha}")));
        }
        o.push_str("},\"directories\":{");
        for (i, d) in self.dirs.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(o, "{sep}{}:\"y\"", json(d));
        }
        let (install, deinstall) = self.scripts();
        let _ = writeln!(
            o,
            "}},\"scripts\":{{\"post-install\":{},\"pre-deinstall\":{}}}}}",
            json(&install),
            json(&deinstall)
        );
        o
    }
}

/// The absolute paths `pkg-plist` and `USE_RC_SUBR` say the package holds, manual
/// pages compressed.
fn expected_files(plist: &dist::Plist, rc_scripts: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = plist
        .files
        .iter()
        .map(|f| {
            if f.starts_with(&format!("{PREFIX}/share/man/")) {
                format!("/{f}.gz")
            } else {
                format!("/{f}")
            }
        })
        .collect();
    for name in rc_scripts {
        out.insert(format!("/{PREFIX}/etc/rc.d/{name}"));
    }
    out
}

/// A variable of the port's Makefile (`NAME=<tabs>value`).
fn make_var(makefile: &str, name: &str) -> Option<String> {
    makefile.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.trim_start();
        Some(rest.strip_prefix('=')?.trim().to_string())
    })
}

/// `cargo xtask pkg`.
pub fn pkg() -> Result<(), String> {
    let root = project_root();
    let release = super::freebsd::link()?;
    let out_dir = dist::target_dir().join("pkg");
    let stage = out_dir.join("stage");
    let rc_scripts = dist::stage_tree(&stage, &release)?;
    // Manual pages gzipped, as the framework installs them.
    for (path, entry) in dist::walk(&stage)? {
        if matches!(entry, Entry::File { .. }) && path.starts_with(&format!("{PREFIX}/share/man/"))
        {
            run(Command::new("gzip").args(["-9n"]).arg(stage.join(&path)))?;
        }
    }
    let port = root.join(PORT_DIR);
    let makefile = std::fs::read_to_string(port.join("Makefile")).map_err(|e| e.to_string())?;
    let var =
        |n: &str| make_var(&makefile, n).ok_or_else(|| format!("the port's Makefile has no {n}"));
    let plist = dist::parse_plist(&port.join("pkg-plist"))?;
    let mut files = Vec::new();
    for (path, entry) in dist::walk(&stage)? {
        if let Entry::File { size, .. } = entry {
            files.push((
                format!("/{path}"),
                super::port::sha256_of(&stage.join(&path))?,
                size,
            ));
        }
    }
    let manifest = Manifest {
        version: var("DISTVERSION")?,
        comment: var("COMMENT")?,
        maintainer: var("MAINTAINER")?,
        www: var("WWW")?,
        desc: std::fs::read_to_string(port.join("pkg-descr")).map_err(|e| e.to_string())?,
        files,
        dirs: plist.dirs.iter().map(|d| format!("/{d}")).collect(),
        samples: plist.samples.iter().map(|s| format!("/{s}")).collect(),
    };
    let have: BTreeSet<String> = manifest.files.iter().map(|f| f.0.clone()).collect();
    let want = expected_files(&plist, &rc_scripts);
    if have != want {
        let extra: Vec<_> = have.difference(&want).collect();
        let missing: Vec<_> = want.difference(&have).collect();
        return Err(format!(
            "the package's files and pkg-plist differ: not listed {extra:?}, not staged {missing:?}"
        ));
    }
    std::fs::write(stage.join("+COMPACT_MANIFEST"), manifest.compact())
        .map_err(|e| e.to_string())?;
    std::fs::write(stage.join("+MANIFEST"), manifest.full()).map_err(|e| e.to_string())?;
    let file = out_dir.join(format!("hvguest-{}.pkg", manifest.version));
    let mut tar = Command::new("tar");
    tar.current_dir(&stage)
        .args([
            "--create",
            "--xz",
            "--format=pax",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .args([
            "--mtime=@0",
            "--absolute-names",
            "--transform",
            "s,^usr/,/usr/,",
        ])
        // Directories as entries of their own, not with what is under them.
        .arg("--no-recursion")
        .arg("--file")
        .arg(&file)
        .args(["+COMPACT_MANIFEST", "+MANIFEST"])
        .args(
            manifest
                .files
                .iter()
                .map(|f| f.0.trim_start_matches('/').to_string()),
        )
        .args(
            manifest
                .dirs
                .iter()
                .map(|d| d.trim_start_matches('/').to_string()),
        );
    run(&mut tar)?;
    check_archive(&file, &manifest)?;
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "xtask pkg: {} ({} KiB; {} files, {} KiB installed; ABI {ABI}); its manifest matches \
         {PORT_DIR}/pkg-plist",
        file.display(),
        size >> 10,
        manifest.files.len(),
        manifest.flatsize() >> 10
    );
    Ok(())
}

/// The archive holds the two manifests first, then exactly the manifest's files.
fn check_archive(file: &Path, m: &Manifest) -> Result<(), String> {
    let out = Command::new("tar")
        .args(["--list", "--xz", "--absolute-names", "--file"])
        .arg(file)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text.lines().collect();
    if names.first() != Some(&"+COMPACT_MANIFEST") || names.get(1) != Some(&"+MANIFEST") {
        return Err("the package does not start with +COMPACT_MANIFEST and +MANIFEST".into());
    }
    let listed: BTreeSet<&str> = names[2..].iter().map(|n| n.trim_end_matches('/')).collect();
    for (path, _, _) in &m.files {
        if !listed.contains(path.as_str()) {
            return Err(format!("the package lacks {path}"));
        }
    }
    if listed.len() != m.files.len() + m.dirs.len() {
        return Err(format!(
            "the package holds {} entries, the manifest {} files and {} directories",
            listed.len(),
            m.files.len(),
            m.dirs.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            version: "0.1.0".into(),
            comment: "Hyper-V guest daemons".into(),
            desc: "Line one\n\"quoted\"\n".into(),
            www: "https://example.org".into(),
            maintainer: "ports@FreeBSD.org".into(),
            files: vec![
                ("/usr/local/sbin/hv_kvp_daemon".into(), "ab".into(), 10),
                (
                    "/usr/local/etc/hvguest/kvp.conf.sample".into(),
                    "cd".into(),
                    5,
                ),
            ],
            dirs: vec!["/usr/local/etc/hvguest/hooks.d".into()],
            samples: vec!["/usr/local/etc/hvguest/kvp.conf.sample".into()],
        }
    }

    #[test]
    fn manifests_carry_files_samples_and_escapes() {
        let m = manifest();
        let compact = m.compact();
        assert!(compact.contains("\"abi\":\"FreeBSD:14:amd64\""));
        assert!(compact.contains("\"flatsize\":15"));
        assert!(compact.contains("\"desc\":\"Line one\\n\\\"quoted\\\"\\n\""));
        assert!(!compact.contains("files"));
        let full = m.full();
        assert!(full.contains("\"/usr/local/sbin/hv_kvp_daemon\":\"1$ab\""));
        assert!(full.contains("\"directories\":{\"/usr/local/etc/hvguest/hooks.d\":\"y\"}"));
        assert!(full.contains(
            "if [ ! -f '/usr/local/etc/hvguest/kvp.conf' ]; then cp -p \
             '/usr/local/etc/hvguest/kvp.conf.sample' '/usr/local/etc/hvguest/kvp.conf'; fi"
        ));
        assert!(full.contains("cmp -s '/usr/local/etc/hvguest/kvp.conf'"));
        assert!(full.ends_with("}\n"));
    }

    #[test]
    fn pkg_plist_gives_compressed_pages_and_rc_scripts() {
        let plist = dist::parse_plist(&project_root().join(PORT_DIR).join("pkg-plist")).unwrap();
        let files = expected_files(&plist, &["hv_kvp_daemon".to_string()]);
        assert!(files.contains("/usr/local/share/man/man8/hv_kvp_daemon.8.gz"));
        assert!(files.contains("/usr/local/etc/rc.d/hv_kvp_daemon"));
        assert!(files.contains("/usr/local/etc/hvguest/kvp.conf.sample"));
        assert!(plist
            .samples
            .contains("usr/local/etc/hvguest/vss.conf.sample"));
    }
}
