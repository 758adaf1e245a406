//! The core is sans-IO: no file system, network, threads, clocks or randomness of its
//! own. `clippy.toml` bans the common calls; this test bans the modules outright, so a
//! new `use std::fs` fails `cargo test` even without clippy.

use std::path::Path;

const BANNED: &[&str] = &[
    "std::fs",
    "std::net",
    "std::thread",
    "std::process",
    "std::time::Instant",
    "std::time::SystemTime",
    "Instant::now",
    "SystemTime::now",
    "std::env",
    "rand::",
    "HashMap",
    "HashSet",
];

fn visit(dir: &Path, found: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            visit(&p, found);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for b in BANNED {
                    if code.contains(b) {
                        found.push(format!("{}:{}: {b}", p.display(), n + 1));
                    }
                }
            }
        }
    }
}

#[test]
fn core_does_no_io_and_reads_no_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    visit(&src, &mut found);
    assert!(
        found.is_empty(),
        "banned in core/src:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_ban_list_would_catch_a_violation() {
    // The scanner itself works: a line with a banned path is reported.
    let dir = std::env::temp_dir().join(format!("hvguest-tidy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("x.rs"),
        "use std::fs::File; // fine in a comment: std::net\n",
    )
    .unwrap();
    let mut found = Vec::new();
    visit(&dir, &mut found);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
}
