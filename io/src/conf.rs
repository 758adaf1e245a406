//! The line syntax every hvguest configuration file shares (`vss.conf`, `kvp.conf`),
//! written once so both files accept and refuse exactly the same lines, with the same
//! words.
//!
//! * One setting per line: `key = value`. Spaces around the key and the value are
//!   ignored; the value is the rest of the line and may contain spaces.
//! * Blank lines, and lines whose first non-blank character is `#`, are ignored.
//!   Comments go on lines of their own: a value containing `#` (or a control
//!   character) is an error, so `watchdog = 30s # half a minute` is refused rather than
//!   misread.
//! * Keys are case-sensitive. An unknown key is an error (a typo must not pass
//!   silently), and so is a key set twice.
//!
//! What a value means is each file's business ([`Problem::BadValue`] carries its
//! reason).

use hvguest_core::vss::rules::RuleError;

/// A bad line, as the parsers report it (without the file's name).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("expected `key = value`")]
    NotKeyValue,
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("unknown key `{0}`")]
    UnknownKey(String),
    #[error("`{key}` is set twice (first on line {first})")]
    Duplicate { key: String, first: usize },
    #[error("`{0}` has no value")]
    Empty(String),
    #[error("the value of `{0}` contains `#` or a control character (comments go on lines of their own)")]
    BadCharacter(String),
    #[error("`{key} = {value}`: {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
    /// A rule between several settings (`hvguest_core::vss::rules`; only vss.conf has
    /// such rules).
    #[error(transparent)]
    Rule(RuleError),
}

/// One `key = value` line that passed the shared checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting<'a> {
    /// 1-based.
    pub line: usize,
    pub key: &'a str,
    pub value: &'a str,
}

impl Setting<'_> {
    /// The line, refused for `why` (what the value must be).
    pub fn bad_value(&self, why: String) -> BadLine {
        BadLine {
            line: self.line,
            problem: Problem::BadValue {
                key: self.key.to_string(),
                value: self.value.to_string(),
                why,
            },
        }
    }
}

/// Every setting of `text`, in file order, or the first line that breaks the shared
/// syntax. `is_known` says which keys the file has.
pub fn settings(text: &[u8], is_known: impl Fn(&str) -> bool) -> Result<Vec<Setting<'_>>, BadLine> {
    let mut out: Vec<Setting<'_>> = Vec::new();
    for (i, raw) in text.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let bad = |problem| BadLine { line, problem };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let s = std::str::from_utf8(raw).map_err(|_| bad(Problem::NotUtf8))?;
        let s = s.trim();
        if s.is_empty() || s.starts_with('#') {
            continue;
        }
        let (key, value) = s.split_once('=').ok_or(bad(Problem::NotKeyValue))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(bad(Problem::NotKeyValue));
        }
        if !is_known(key) {
            return Err(bad(Problem::UnknownKey(key.to_string())));
        }
        if let Some(first) = out.iter().find(|s| s.key == key) {
            return Err(bad(Problem::Duplicate {
                key: key.to_string(),
                first: first.line,
            }));
        }
        if value.is_empty() {
            return Err(bad(Problem::Empty(key.to_string())));
        }
        if value.contains('#') || value.chars().any(char::is_control) {
            return Err(bad(Problem::BadCharacter(key.to_string())));
        }
        out.push(Setting { line, key, value });
    }
    Ok(out)
}
