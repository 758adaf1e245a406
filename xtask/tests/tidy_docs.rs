//! References to the protocol notes must resolve, and nothing may point outside the
//! repository.
//!
//! * Every `docs/protocol/<file>.md §<n>` in a `*.rs` or `*.md` file names a file that
//!   exists and a heading numbered `<n>` in it (`## 2.`, `### 2.3`, `## 7b.`). Further
//!   `§` numbers on the same line belong to the last file named before them; a line
//!   that starts with bare `§` numbers continues the file named at the end of the line
//!   above (a wrapped comment). Ranges (`§2–3`, `§1.2–1.3`) need both ends.
//! * Inside `docs/protocol/<file>.md` a bare `§<n>` means that same file.
//! * A `§<n>` that names no file is an error: the reader cannot tell kvp from vss.
//! * No text file mentions the old notes that lived outside the repository (the
//!   paths in [`FORBIDDEN`]).
//!
//! Skipped: `target/`, hidden directories, `fuzz/corpus/`, `fuzz/regressions/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DOCS_DIR: &str = "docs/protocol";
/// Built with `concat!` so this file does not match itself.
const FORBIDDEN: &[&str] = &[concat!("..", "/shared/"), concat!("shared", "/spec")];
const SKIP_DIRS: &[&str] = &["target", "fuzz/corpus", "fuzz/regressions"];
/// This file: its examples of bad references are on purpose.
const SELF: &str = "xtask/tests/tidy_docs.rs";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Every file under `dir`, as paths relative to `root`, sorted.
fn files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if name.starts_with('.') || name == "target" || SKIP_DIRS.contains(&rel.as_str()) {
                    continue;
                }
                walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// The heading numbers of a Markdown file: `## 2.`, `### 2.3 Title`, `## 7b. Title`
/// give `2`, `2.3`, `7b`. Fenced code blocks are ignored.
fn headings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let rest = line.trim_start_matches('#');
        if !rest.starts_with(' ') {
            continue;
        }
        let rest = rest.trim_start();
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let id: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        out.push(id.trim_end_matches('.').to_string());
    }
    out
}

/// A section number at the start of `s`: digits, an optional letter (`7b`), then
/// `.digits` groups. Returns the number and the bytes it used.
fn section_number(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if i < b.len()
        && b[i].is_ascii_lowercase()
        && !(i + 1 < b.len() && b[i + 1].is_ascii_alphabetic())
    {
        i += 1;
    }
    while i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        i += 1;
        digits(&mut i);
    }
    Some((s[..i].to_string(), i))
}

/// One `§` reference found on a line: the section numbers it cites (two for a range)
/// and the file it belongs to, if any.
struct Ref {
    text: String,
    sections: Vec<String>,
    file: Option<String>,
}

/// Mentions of `docs/protocol/<name>.md` on a line, with their byte positions.
fn mentions(line: &str) -> Vec<(usize, String)> {
    let prefix = format!("{DOCS_DIR}/");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = line[from..].find(&prefix) {
        let start = from + at;
        let name_start = start + prefix.len();
        let name: String = line[name_start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .collect();
        let name = name.trim_end_matches('.').to_string();
        from = name_start + name.len();
        if name.ends_with(".md") {
            out.push((start, name));
        }
    }
    out
}

/// The `§` references of one line. `carry` is the file a wrapped line continues;
/// `default` the file a bare `§` means (the notes file itself), if any.
fn refs(line: &str, carry: Option<&str>, default: Option<&str>) -> Vec<Ref> {
    let named = mentions(line);
    let mut out = Vec::new();
    for (at, _) in line.match_indices('§') {
        let after = &line[at + '§'.len_utf8()..];
        let Some((first, used)) = section_number(after) else {
            continue; // a `§` that cites nothing (prose about the sign itself)
        };
        let mut sections = vec![first];
        let mut end = used;
        let tail = &after[used..];
        for dash in ['–', '-'] {
            if let Some(rest) = tail.strip_prefix(dash) {
                if let Some((last, n)) = section_number(rest) {
                    sections.push(last);
                    end = used + dash.len_utf8() + n;
                }
                break;
            }
        }
        let file = named
            .iter()
            .rev()
            .find(|(m, _)| *m < at)
            .map(|(_, name)| name.clone())
            .or_else(|| carry.map(str::to_string))
            .or_else(|| default.map(str::to_string));
        out.push(Ref {
            text: format!("§{}", &after[..end]),
            sections,
            file,
        });
    }
    out
}

/// Problems in one file's text. `notes` maps each `docs/protocol/*.md` name to its
/// heading numbers.
fn check_refs(path: &str, text: &str, notes: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    let known: Vec<&str> = notes.keys().map(String::as_str).collect();
    let own = path
        .strip_prefix(&format!("{DOCS_DIR}/"))
        .filter(|name| notes.contains_key(*name));
    let mut carry: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = format!("{path}:{}", n + 1);
        let named = mentions(line);
        for (_, name) in &named {
            if !notes.contains_key(name) {
                problems.push(format!(
                    "{at}: `{DOCS_DIR}/{name}` does not exist (the notes are: {}). Fix the \
                     file name, or add the notes file.",
                    known.join(", ")
                ));
            }
        }
        // A line continues the file named on the line above only if it opens with `§`
        // numbers of its own before naming any file.
        let continues = carry.as_deref();
        for r in refs(line, continues, own) {
            let Some(file) = r.file else {
                problems.push(format!(
                    "{at}: `{}` does not say which notes it cites. Write `{DOCS_DIR}/kvp.md {}` \
                     or `{DOCS_DIR}/vss.md {}` (the file name goes on the same line, before the \
                     `§`, or at the end of the line above when a comment wraps).",
                    r.text, r.text, r.text
                ));
                continue;
            };
            let Some(heads) = notes.get(&file) else {
                continue; // reported above as a missing file
            };
            for s in &r.sections {
                if !heads.contains(s) {
                    problems.push(format!(
                        "{at}: `{DOCS_DIR}/{file} {}` cites section {s}, which {DOCS_DIR}/{file} \
                         does not have (its sections: {}). Cite the section that states the \
                         fact, or add it there under a new heading at the end (never renumber).",
                        r.text,
                        heads.join(", ")
                    ));
                }
            }
        }
        carry = named.last().map(|(_, name)| name.clone());
    }
    problems
}

fn check_forbidden(path: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for f in FORBIDDEN {
            if line.contains(f) {
                problems.push(format!(
                    "{path}:{}: mentions `{f}`, a path outside the repository. Cite \
                     `{DOCS_DIR}/kvp.md §N` or `{DOCS_DIR}/vss.md §N` instead; if the fact is \
                     not there yet, add it to those notes with its public source.",
                    n + 1
                ));
            }
        }
    }
    problems
}

fn load_notes(root: &Path) -> BTreeMap<String, Vec<String>> {
    let dir = root.join(DOCS_DIR);
    let mut notes = BTreeMap::new();
    for e in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
    {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".md") && name != "README.md" {
            let text = std::fs::read_to_string(&p).unwrap();
            notes.insert(name, headings(&text));
        }
    }
    notes
}

fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what} ({} problem(s)):\n{}\n",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn protocol_references_resolve() {
    let root = root();
    let notes = load_notes(&root);
    for must in ["kvp.md", "vss.md"] {
        assert!(notes.contains_key(must), "{DOCS_DIR}/{must} is missing");
    }
    let mut problems = Vec::new();
    for path in files(&root) {
        if !(path.ends_with(".rs") || path.ends_with(".md")) || path == SELF {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&path))
            .unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        problems.extend(check_refs(&path, &text, &notes));
    }
    report("references to docs/protocol that do not resolve", &problems);
}

#[test]
fn nothing_points_outside_the_repository() {
    let root = root();
    let mut problems = Vec::new();
    for path in files(&root) {
        let Ok(bytes) = std::fs::read(root.join(&path)) else {
            continue;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue; // binary
        };
        problems.extend(check_forbidden(&path, &text));
    }
    report("references to notes outside the repository", &problems);
}

// The checker itself, on made-up input.

fn sample_notes() -> BTreeMap<String, Vec<String>> {
    let kvp = "# T\n## 0. Sources\n## 1. A\n### 1.2 B\n### 1.3 C\n## 2. D\n### 2.3 E\n\
               ## 7b. F\n```\n## 9. not a heading\n```\n";
    BTreeMap::from([
        ("kvp.md".to_string(), headings(kvp)),
        (
            "vss.md".to_string(),
            vec!["1".into(), "8".into(), "8.2".into()],
        ),
    ])
}

#[test]
fn headings_are_read_with_their_numbers() {
    assert_eq!(
        sample_notes()["kvp.md"],
        ["0", "1", "1.2", "1.3", "2", "2.3", "7b"]
    );
}

#[test]
fn good_references_pass() {
    let notes = sample_notes();
    let text = "\
/// One message (docs/protocol/kvp.md §1.3).
//! Sizes: docs/protocol/kvp.md §1.2–1.3, §2.3; checklist docs/protocol/kvp.md §7b.
//! Wrapped (docs/protocol/vss.md
//! §8.2, §1). Then docs/protocol/kvp.md §2 and docs/protocol/vss.md §8 on one line.
//! A range docs/protocol/kvp.md §1–2. The sign itself: `§`.
";
    assert_eq!(check_refs("x.rs", text, &notes), Vec::<String>::new());
    // Inside a notes file a bare number means that file.
    assert_eq!(
        check_refs("docs/protocol/kvp.md", "see §2.3 and §1–2\n", &notes),
        Vec::<String>::new()
    );
}

#[test]
fn bad_references_are_reported_with_file_and_line() {
    let notes = sample_notes();
    let text = "\
ok docs/protocol/kvp.md §1.3
bad section docs/protocol/kvp.md §4.1 and range §1.2–1.9

bare spec §2.3
no file docs/protocol/linux.md §1
docs/protocol/vss.md §8.2

later, unrelated: §8.2
";
    let p = check_refs("core/src/x.rs", text, &notes);
    assert_eq!(p.len(), 5, "{p:#?}");
    assert!(
        p[0].starts_with("core/src/x.rs:2: `docs/protocol/kvp.md §4.1`"),
        "{}",
        p[0]
    );
    assert!(p[1].starts_with("core/src/x.rs:2: `docs/protocol/kvp.md §1.2–1.9` cites section 1.9"));
    assert!(p[2].starts_with("core/src/x.rs:4: `§2.3` does not say which notes"));
    assert!(p[3].starts_with("core/src/x.rs:5: `docs/protocol/linux.md` does not exist"));
    assert!(
        p[4].starts_with("core/src/x.rs:8: `§8.2` does not say"),
        "{}",
        p[4]
    );
}

#[test]
fn outside_paths_are_reported() {
    let text = format!("fine\nsee {}kvp.md\n", FORBIDDEN[0]);
    let p = check_forbidden("ARCHITECTURE.md", &text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("ARCHITECTURE.md:2: mentions"));
}
