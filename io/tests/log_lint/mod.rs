//! Shared by the end-to-end tests: finds log lines that show a Rust value instead of
//! a sentence (issue 12: an administrator must be able to act on every line).

/// The lines of a daemon's log that show a Rust value instead of a sentence (issue
/// 12: an administrator must be able to act on every line): a `{` followed by a field
/// name (`StepFailed { step: ...`), `Some(`, `Ok(`, `Err(`, or a capitalised name
/// directly followed by `(` or ` {` (`Failed(IoError(5))`, `Veto {`).
pub fn rust_values(log: &str) -> Vec<&str> {
    fn ident(s: &str) -> usize {
        s.bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count()
    }
    let shows_a_value = |line: &str| {
        if ["Some(", "Ok(", "Err("].iter().any(|w| line.contains(w)) {
            return true;
        }
        let b = line.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if c == b'{' {
                // `{ name:` or `{name:`
                let rest = line[i + 1..].trim_start();
                let n = ident(rest);
                if n > 0 && rest[n..].starts_with(':') && !rest[n..].starts_with("::") {
                    return true;
                }
            }
            if c.is_ascii_uppercase() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
                let n = ident(&line[i..]);
                let rest = &line[i + n..];
                let camel = line[i + 1..i + n].bytes().any(|b| b.is_ascii_lowercase());
                if camel && (rest.starts_with('(') || rest.starts_with(" {")) {
                    return true;
                }
            }
        }
        false
    };
    log.lines().filter(|l| shows_a_value(l)).collect()
}

#[test]
fn rust_values_are_found_and_sentences_pass() {
    for dump in [
        "info: StepFailed { step: \"list mounts\", detail: \"Failed(IoError(5))\" }",
        "error: PoolFailed { pool: Guest, error: IoError(5) }",
        "warning: DeadlineReply {op: Set, status: E_FAIL}",
        "info: Resumed { mounts: [\"/\"] }",
        "debug: Some(3)",
        "warning: Err(Refused)",
        "info: Vetoed(Veto { fstype: \"nfs\", path: \"/mnt\" })",
    ] {
        assert_eq!(rust_values(dump), [dump], "not caught: {dump}");
    }
    let sentences = "info: the host sent FREEZE (message 42)\n\
                     warning: list mounts failed: EIO\n\
                     warning: hook /etc/hooks/10-app failed with argument freeze: exit status 3\n\
                     warning: device: read: Input/output error (EIO); thawing what is frozen\n\
                     info: refused the host's SET of a new key \"over\" in pool 0 (external)\n\
                     debug: effect #3: write .kvp_pool_1 @0 2560B\n";
    assert_eq!(rust_values(sentences), Vec::<&str>::new());
}
