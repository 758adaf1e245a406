//! File formats read by the KVP daemon and the simulator: the redo journal, recorded
//! traces and scenarios.

use hvguest_core::kvp::journal::parse_journal;
use hvguest_core::kvp::recording::Recording;

use crate::scenario;

/// Any bytes parse as a journal: the valid entries re-encode to exactly the bytes they
/// came from, and the rest is counted as ignored.
pub fn journal(data: &[u8]) {
    let parsed = parse_journal(data);
    let valid = usize::try_from(parsed.valid_len).expect("no longer than the input");
    assert_eq!(parsed.valid_len + parsed.ignored_bytes, data.len() as u64);
    let again: Vec<u8> = parsed.entries.iter().flat_map(|e| e.encode()).collect();
    assert_eq!(again, data[..valid]);
    assert_eq!(parse_journal(&again).entries, parsed.entries);
}

/// Any bytes parse as a trace or name the line that is wrong; a trace written out again
/// parses to the same trace.
pub fn recording(data: &[u8]) {
    match Recording::parse_bytes(data) {
        Ok(trace) => {
            let text = trace.to_text();
            let again = Recording::parse(&text).unwrap_or_else(|e| panic!("re-parse: {e}\n{text}"));
            assert_eq!(again, trace);
            let _ = trace.to_annotated_text();
        }
        Err(e) => {
            let lines = data.split(|b| *b == b'\n').count();
            assert!((1..=lines.max(1)).contains(&e.line), "{e} of {lines} lines");
        }
    }
}

/// Any text parses as a scenario or names its bad line (the scenario is not run: that
/// is the simulator's job, and the scenario tests').
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = scenario::parse(text) {
        let lines = text.lines().count();
        assert!((1..=lines).contains(&e.line), "{e} of {lines} lines");
    }
}
