//! Log lines: to stderr in the foreground (`-n`), to syslog otherwise, with the stock
//! daemon's ident and facility (`openlog("HV_KVP", 0, LOG_USER)`, docs/protocol/kvp.md §4.5).
//! Debug lines only with `-d`.

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
