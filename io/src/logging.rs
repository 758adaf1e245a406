//! Log lines: to stderr in the foreground (`-n`), to syslog otherwise, with the stock
//! daemon's ident and facility (`openlog("HV_KVP", 0, LOG_USER)`, docs/protocol/kvp.md §4.5).
//! Debug lines only with `-d`.
//!
//! Every line is a sentence in plain words: the core's events are worded by the core
//! (`Display` in `core::kvp::describe` and `core::vss::describe`), the drivers' own
//! lines here. An errno is shown by name: std words an OS error as `Input/output error
//! (os error 5)`, and [`errno_names`] turns that into `Input/output error (EIO)`, the
//! name administrators look up, wherever in a line (or a chain of errors) it appears.
//! One event is one line: control characters a name brings are escaped ([`one_line`]).

use std::ffi::CString;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

/// Plain settings: a copy logs to the same place (syslog(3) may be called from any
/// thread).
#[derive(Clone)]
pub struct Logger {
    syslog: bool,
    debug: bool,
}

impl Logger {
    /// `ident` must be a static C string (syslog keeps the pointer).
    pub fn new(foreground: bool, debug: bool, ident: &'static std::ffi::CStr) -> Logger {
        if !foreground {
            // SAFETY: `ident` is 'static, as openlog requires.
            unsafe { nix::libc::openlog(ident.as_ptr(), 0, nix::libc::LOG_USER) };
        }
        Logger {
            syslog: !foreground,
            debug,
        }
    }

    pub fn debug_enabled(&self) -> bool {
        self.debug
    }

    pub fn log(&self, level: Level, msg: &str) {
        if level == Level::Debug && !self.debug {
            return;
        }
        let msg = one_line(&errno_names(msg));
        let msg = msg.as_str();
        if self.syslog {
            let prio = match level {
                Level::Error => nix::libc::LOG_ERR,
                Level::Warn => nix::libc::LOG_WARNING,
                Level::Info => nix::libc::LOG_INFO,
                Level::Debug => nix::libc::LOG_DEBUG,
            };
            let text = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
            // SAFETY: a constant "%s" format with one C string argument.
            unsafe { nix::libc::syslog(prio, c"%s".as_ptr(), text.as_ptr()) };
        } else {
            let tag = match level {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
            };
            eprintln!("{tag}: {msg}");
        }
    }

    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg);
    }
    pub fn warn(&self, msg: &str) {
        self.log(Level::Warn, msg);
    }
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg);
    }
    pub fn debug(&self, msg: &str) {
        self.log(Level::Debug, msg);
    }
}

/// `(os error N)`, as std words an OS error, becomes `(NAME)` (`EIO`, `ENOSPC`), the
/// name this system gives errno N; a number it does not know stays as it was.
pub fn errno_names(line: &str) -> String {
    const MARK: &str = "(os error ";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let name = match (
            after[..digits].parse::<i32>(),
            after[digits..].starts_with(')'),
        ) {
            (Ok(n), true) => errno_name(n),
            _ => None,
        };
        match name {
            Some(name) => {
                out.push_str(&rest[..at]);
                out.push('(');
                out.push_str(&name);
                out.push(')');
                rest = &after[digits + 1..];
            }
            None => {
                out.push_str(&rest[..at + MARK.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One event, one line: control characters in a message (a mount point or a hook
/// name may hold a newline) are shown escaped (`\n`, `\u{1b}`), so no line can be
/// split or forged by a name.
pub fn one_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// This system's name for errno `n`, if it has one.
fn errno_name(n: i32) -> Option<String> {
    match nix::errno::Errno::from_raw(n) {
        nix::errno::Errno::UnknownErrno => None,
        // nix's Debug of an errno is its bare name (`EIO`), nothing else.
        e => Some(format!("{e:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_by_name() {
        let e = std::io::Error::from_raw_os_error(nix::libc::EIO);
        assert_eq!(
            errno_names(&format!("writing /x: {e}; then {e}")),
            "writing /x: Input/output error (EIO); then Input/output error (EIO)"
        );
        let e = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        assert!(errno_names(&e.to_string()).ends_with("(ENOSPC)"));
        for kept in [
            "(os error 99999)",
            "(os error )",
            "(os error 5",
            "(os error x)",
        ] {
            assert_eq!(errno_names(kept), kept);
        }
    }

    #[test]
    fn one_event_one_line() {
        assert_eq!(
            one_line("suspended writes to /mnt/a\nb\r\u{1b}[2J\tx"),
            "suspended writes to /mnt/a\\nb\\r\\u{1b}[2J\tx"
        );
    }
}
