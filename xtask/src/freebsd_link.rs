//! `check-freebsd --link`: builds the real release programs for `x86_64-unknown-freebsd`
//! (build-std, as the type-check does) and links them with `zig cc`, which carries
//! FreeBSD's libc stubs; then holds every program to what a FreeBSD system can run,
//! reading it with `readelf`:
//!
//! * a 64-bit x86-64 ELF program with FreeBSD's ABI note (`NT_FREEBSD_ABI_TAG`, what
//!   the kernel's image activator brands it by);
//! * the interpreter `/libexec/ld-elf.so.1`;
//! * needed libraries only from the base system ([`BASE_LIBRARIES`]);
//! * every versioned libc symbol of a version FreeBSD 14.0 and later provide
//!   (`FBSD_1.0` to `FBSD_1.7`), and none of glibc's. Zig's stubs start programs
//!   through `__libc_start1` (`FBSD_1.7`, FreeBSD 14.0), so these programs need 14.0 or
//!   later; the port builds natively and serves 13.x too. The newest version used is
//!   reported.
//!
//! Zig comes from the `ziglang` package on PyPI (`pip install --target`), into the
//! cache beside the rustc-web prefix, once.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::project_root;

/// Libraries a FreeBSD base system has in `/lib` and `/usr/lib`, whatever is installed.
pub const BASE_LIBRARIES: [&str; 9] = [
    "libc.so.7",
    "libthr.so.3",
    "libm.so.5",
    "libgcc_s.so.1",
    "libutil.so.9",
    "libkvm.so.7",
    "libexecinfo.so.1",
    "librt.so.1",
    "libprocstat.so.1",
];

/// The newest libc symbol version allowed: FreeBSD 14.0's.
const NEWEST_VERSION: (u32, u32) = (1, 7);

/// What one program showed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Elf {
    pub class64_x86_64: bool,
    pub freebsd_note: bool,
    /// The `__FreeBSD_version` the ABI note names, when readelf shows its data.
    pub osrel: Option<u32>,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    /// The `FBSD_x.y` versions the program needs, and any other version names.
    pub versions: Vec<String>,
}

/// Reads `readelf -hlndV -W` output (header, program headers, notes, dynamic section,
/// version sections) into an [`Elf`].
pub fn parse_readelf(text: &str) -> Elf {
    let mut e = Elf::default();
    let mut class64 = false;
    let mut x86_64 = false;
    let mut in_needs = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Class:") && l.contains("ELF64") {
            class64 = true;
        }
        if l.starts_with("Machine:") && l.contains("X86-64") {
            x86_64 = true;
        }
        // Type 1 of owner FreeBSD is the ABI tag; binutils without FreeBSD's names
        // calls it NT_VERSION. Its data is __FreeBSD_version, little-endian.
        if l.starts_with("FreeBSD")
            && (l.contains("NT_FREEBSD_ABI_TAG") || l.contains("NT_VERSION"))
        {
            e.freebsd_note = true;
            e.osrel = l.split("description data:").nth(1).and_then(|d| {
                let b: Vec<u8> = d
                    .split_whitespace()
                    .filter_map(|x| u8::from_str_radix(x, 16).ok())
                    .collect();
                Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
            });
        }
        if l.starts_with("OS/ABI:") && l.contains("FreeBSD") {
            e.freebsd_note = true;
        }
        if let Some(rest) = l.strip_prefix("[Requesting program interpreter: ") {
            e.interpreter = Some(rest.trim_end_matches(']').to_string());
        }
        if l.contains("(NEEDED)") {
            if let Some(lib) = l.split('[').nth(1).map(|s| s.trim_end_matches(']')) {
                e.needed.push(lib.to_string());
            }
        }
        if l.starts_with("Version needs section") {
            in_needs = true;
            continue;
        }
        if in_needs && l.is_empty() {
            in_needs = false;
        }
        if in_needs {
            if let Some(name) = l.split("Name: ").nth(1) {
                let name = name.split_whitespace().next().unwrap_or("");
                if !name.ends_with(".so") && !name.contains(".so.") {
                    e.versions.push(name.to_string());
                }
            }
        }
    }
    e.class64_x86_64 = class64 && x86_64;
    e.needed.sort();
    e.versions.sort();
    e.versions.dedup();
    e
}

fn fbsd_version(name: &str) -> Option<(u32, u32)> {
    let (major, minor) = name.strip_prefix("FBSD_")?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// What is wrong with a program for FreeBSD 14 and later; empty when nothing is.
pub fn problems(e: &Elf) -> Vec<String> {
    let mut out = Vec::new();
    if !e.class64_x86_64 {
        out.push("not a 64-bit x86-64 ELF file".to_string());
    }
    if !e.freebsd_note {
        out.push("no FreeBSD ABI note".to_string());
    }
    if e.interpreter.as_deref() != Some("/libexec/ld-elf.so.1") {
        out.push(format!(
            "interpreter {:?}, not /libexec/ld-elf.so.1",
            e.interpreter
        ));
    }
    for lib in &e.needed {
        if !BASE_LIBRARIES.contains(&lib.as_str()) {
            out.push(format!("needs {lib}, which is not in the base system"));
        }
    }
    for v in &e.versions {
        match fbsd_version(v) {
            Some(ver) if ver <= NEWEST_VERSION => {}
            Some(_) => out.push(format!("needs symbol version {v}, newer than FreeBSD 14's")),
            // libgcc_s's own versions, where it is needed.
            None if v.starts_with("GCC_") && e.needed.iter().any(|l| l == "libgcc_s.so.1") => {}
            None => out.push(format!("needs symbol version {v}, not FreeBSD's")),
        }
    }
    out
}

/// `~/.cache/hvguest/ziglang`: Zig from PyPI, installed there once.
fn zig(cache: &Path) -> Result<PathBuf, String> {
    let dir = cache.join("ziglang");
    let zig = dir.join("ziglang/zig");
    if zig.is_file() {
        return Ok(zig);
    }
    eprintln!(
        "xtask check-freebsd: installing Zig from PyPI (ziglang) into {}",
        dir.display()
    );
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--target"])
        .arg(&dir)
        .arg("ziglang")
        .status()
        .map_err(|e| format!("python3 -m pip: {e}"))?;
    if !status.success() || !zig.is_file() {
        return Err("pip could not install ziglang (Zig), which links for FreeBSD".into());
    }
    Ok(zig)
}

/// Libraries the `libc` crate names for every FreeBSD program (`-lkvm` and the like)
/// that Zig's FreeBSD sysroot has no stubs for.
const STUB_LIBRARIES: [&str; 4] = ["kvm", "memstat", "procstat", "devstat"];

/// Empty shared libraries for [`STUB_LIBRARIES`] in `dir`: they satisfy the linker, and
/// `--as-needed` (which rustc passes) leaves them out of the programs since nothing in
/// them is used. Were a symbol of one used, the link would fail: nothing is hidden.
fn stub_libraries(zig: &Path, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let empty = dir.join("empty.c");
    std::fs::write(&empty, "").map_err(|e| e.to_string())?;
    for name in STUB_LIBRARIES {
        let lib = dir.join(format!("lib{name}.so"));
        if lib.is_file() {
            continue;
        }
        super::run(
            Command::new(zig)
                .args(["cc", "-target", "x86_64-freebsd", "-shared", "-o"])
                .arg(&lib)
                .arg(&empty),
        )?;
    }
    Ok(dir.to_path_buf())
}

/// Builds and links the release programs for FreeBSD; returns their directory.
pub fn build(toolchain_cargo: Command, cache: &Path, target: &str) -> Result<PathBuf, String> {
    let root = project_root();
    let zig = zig(cache)?;
    let dir = root.join("target").join("freebsd-link");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let stubs = stub_libraries(&zig, &dir.join("stubs"))?;
    // cargo gives the linker one program; Zig needs its subcommand and target.
    let wrapper = dir.join("zig-cc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' cc -target x86_64-freebsd -L'{}' \"$@\"\n",
            zig.display(),
            stubs.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let mut cmd = toolchain_cargo;
    cmd.args([
        "build",
        "--release",
        "-p",
        "hvguest-io",
        "--bins",
        "--ignore-rust-version",
        "-Zbuild-std=std,panic_abort",
        "--target",
        target,
    ])
    .env("CARGO_TARGET_DIR", &dir)
    .env("CARGO_TARGET_X86_64_UNKNOWN_FREEBSD_LINKER", &wrapper)
    // What a package ships: no debug information, symbols stripped.
    .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
    .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
    .current_dir(&root);
    for name in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        cmd.env_remove(name);
    }
    super::run(&mut cmd)?;
    Ok(dir.join(target).join("release"))
}

/// Holds each program in `release` to [`problems`]; says what each needs.
pub fn check_programs(release: &Path, programs: &[&str]) -> Result<(), String> {
    let mut failed = Vec::new();
    for p in programs {
        let path = release.join(p);
        let out = Command::new("readelf")
            .args(["-hlndV", "-W"])
            .arg(&path)
            .output()
            .map_err(|e| format!("readelf: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "readelf {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let elf = parse_readelf(&String::from_utf8_lossy(&out.stdout));
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let newest = elf.versions.iter().filter_map(|v| fbsd_version(v)).max();
        eprintln!(
            "xtask check-freebsd: {p}: {} KiB, branded for FreeBSD {}, needs {}, newest libc \
             version {}",
            size >> 10,
            elf.osrel
                .map_or("(version not shown)".into(), |v| v.to_string()),
            elf.needed.join(" "),
            newest.map_or("none".into(), |(a, b)| format!("FBSD_{a}.{b}"))
        );
        for problem in problems(&elf) {
            failed.push(format!("{p}: {problem}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the linked programs would not run on FreeBSD 14: {}",
            failed.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
ELF Header:
  Class:                             ELF64
  OS/ABI:                            UNIX - System V
  Machine:                           Advanced Micro Devices X86-64
      [Requesting program interpreter: /libexec/ld-elf.so.1]
Displaying notes found in: .note.tag
  Owner                Data size 	Description
  FreeBSD              0x00000004	NT_VERSION (version)	   description data: b4 5e 15 00 
  FreeBSD              0x00000004	NT_ARCH (architecture)	   description data: 00 00 00 00 
Dynamic section at offset 0x1 contains 20 entries:
 0x0000000000000001 (NEEDED)             Shared library: [libthr.so.3]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.7]
Version needs section '.gnu.version_r' contains 2 entries:
 Addr: 0x0000000000000000  Offset: 0x000500  Link: 7 (.dynstr)
  000000: Version: 1  File: libc.so.7  Cnt: 2
  0x0010:   Name: FBSD_1.0  Flags: none  Version: 3
  0x0020:   Name: FBSD_1.7  Flags: none  Version: 2
  0x0030: Version: 1  File: libthr.so.3  Cnt: 1
  0x0040:   Name: FBSD_1.0  Flags: none  Version: 4

";

    #[test]
    fn a_freebsd_program_passes() {
        let e = parse_readelf(GOOD);
        assert!(e.class64_x86_64 && e.freebsd_note);
        assert_eq!(e.osrel, Some(1_400_500));
        assert_eq!(e.interpreter.as_deref(), Some("/libexec/ld-elf.so.1"));
        assert_eq!(e.needed, ["libc.so.7", "libthr.so.3"]);
        assert_eq!(e.versions, ["FBSD_1.0", "FBSD_1.7"]);
        assert_eq!(problems(&e), Vec::<String>::new());
    }

    #[test]
    fn a_linux_program_or_a_new_symbol_fails() {
        let linux = GOOD
            .replace("/libexec/ld-elf.so.1", "/lib64/ld-linux-x86-64.so.2")
            .replace(
                "FreeBSD              0x00000004\tNT_VERSION",
                "GNU 0x10 NT_GNU_ABI_TAG",
            )
            .replace("libthr.so.3]", "libpthread.so.0]")
            .replace("FBSD_1.7", "GLIBC_2.34");
        let p = problems(&parse_readelf(&linux));
        assert_eq!(p.len(), 4, "{p:?}");
        let newer = GOOD.replace("FBSD_1.7", "FBSD_1.8");
        let p = problems(&parse_readelf(&newer));
        assert_eq!(
            p,
            ["needs symbol version FBSD_1.8, newer than FreeBSD 14's"]
        );
    }
}
