//! Which files in a hook directory run, and in what order (docs/protocol/vss.md §5).
//!
//! Executables in name order, argument `freeze` before the file systems are frozen and
//! `thaw` (reverse order) after they are resumed, as qemu-guest-agent's fsfreeze hooks.
//! A hook must be a regular executable file owned by root and not writable by group or
//! others (anyone who can write it could run code as root during every backup); editor
//! and package-manager leftovers are skipped, as backup agents do.
//!
//! The driver applies [`judge`] twice: to the listing, which selects the hooks, and to
//! the very file it opens to run one (`VssEffect::RunHook`), so that a file swapped in
//! between is judged too. It also refuses a hook directory that anyone but root could
//! change (it, or a directory above it, writable by group or others, or a symbolic
//! link; io's `programs.rs`), and lists entries without following links: a
//! link reaches [`judge`] as not a regular file.

/// What a freeze hook that fails (exits non-zero or is killed at its deadline) does
/// to the backup (`hook_failure` in `vss.conf`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HookFailure {
    /// The FREEZE fails and is rolled back: the backup is consistent or absent.
    #[default]
    Veto,
    /// The FREEZE goes on (the hook still gets its `thaw`, the file systems are still
    /// frozen) and succeeds: the backup is crash-consistent for that hook's
    /// application rather than absent (the Azure backup extension's
    /// OnFailureDoFsFreeze). A hook the driver cannot even stop still fails it.
    Filesystems,
}

impl HookFailure {
    pub fn parse(s: &str) -> Option<HookFailure> {
        match s {
            "veto" => Some(HookFailure::Veto),
            "filesystems" => Some(HookFailure::Filesystems),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HookFailure::Veto => "veto",
            HookFailure::Filesystems => "filesystems",
        }
    }
}

/// A directory entry as the driver found it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HookEntry {
    pub name: String,
    pub regular_file: bool,
    pub uid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// Why an entry is not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    Hidden,
    Leftover,
    NotAFile,
    NotExecutable,
    NotOwnedByRoot,
    WritableByOthers,
}

const LEFTOVER_SUFFIXES: [&str; 11] = [
    "~",
    ".sample",
    ".bak",
    ".orig",
    ".rej",
    ".swp",
    ".rpmsave",
    ".rpmnew",
    ".dpkg-old",
    ".dpkg-new",
    ".pkgsave",
];

pub fn judge(e: &HookEntry) -> Result<(), Skip> {
    if e.name.starts_with('.') {
        Err(Skip::Hidden)
    } else if LEFTOVER_SUFFIXES.iter().any(|s| e.name.ends_with(s)) || e.name.contains(".dpkg-") {
        Err(Skip::Leftover)
    } else if !e.regular_file {
        Err(Skip::NotAFile)
    } else if e.mode & 0o111 == 0 {
        Err(Skip::NotExecutable)
    } else if e.uid != 0 {
        Err(Skip::NotOwnedByRoot)
    } else if e.mode & 0o022 != 0 {
        Err(Skip::WritableByOthers)
    } else {
        Ok(())
    }
}

/// The hooks to run, in name order, and the entries skipped with why.
pub fn select(entries: &[HookEntry]) -> (Vec<String>, Vec<(String, Skip)>) {
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for e in entries {
        match judge(e) {
            Ok(()) => run.push(e.name.clone()),
            Err(why) => skipped.push((e.name.clone(), why)),
        }
    }
    run.sort();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    (run, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, uid: u32, mode: u32) -> HookEntry {
        HookEntry {
            name: name.into(),
            regular_file: true,
            uid,
            mode,
        }
    }

    #[test]
    fn selection_rules() {
        let (run, skipped) = select(&[
            e("20-db", 0, 0o755),
            e("10-app", 0, 0o700),
            e("30-old~", 0, 0o755),
            e("40.sample", 0, 0o755),
            e("50-user", 1000, 0o755),
            e("60-open", 0, 0o777),
            e("70-plain", 0, 0o644),
            e(".hidden", 0, 0o755),
            HookEntry {
                name: "80-dir".into(),
                regular_file: false,
                uid: 0,
                mode: 0o755,
            },
        ]);
        assert_eq!(run, vec!["10-app", "20-db"]);
        let why: Vec<Skip> = skipped.into_iter().map(|s| s.1).collect();
        assert_eq!(
            why,
            vec![
                Skip::Hidden,
                Skip::Leftover,
                Skip::Leftover,
                Skip::NotOwnedByRoot,
                Skip::WritableByOthers,
                Skip::NotExecutable,
                Skip::NotAFile
            ]
        );
    }
}
