//! Counting the daemon's system calls with `strace -f -c` attached to the running daemon,
//! one batch of requests per attachment. Under ptrace every system call costs several
//! times its price, so this runs in a phase of its own after every timed one; the counts,
//! not the times, are what it is for.
//!
//! Attaching may be refused (no strace, a container without `CAP_SYS_PTRACE`, Yama's
//! `ptrace_scope`): the caller then prints why and the run goes on without the counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The strace the counts are taken with.
pub const STRACE: &str = "/usr/bin/strace";
/// How long strace may take to attach to every thread, or to write its summary and exit.
const STRACE_TIMEOUT: Duration = Duration::from_secs(10);

/// System calls over one batch, by name.
#[derive(Clone, Default)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// These counts less `base`'s (never below zero): a batch less the attachment's own.
    pub fn minus(&self, base: &Counts) -> Counts {
        Counts(
            self.0
                .iter()
                .map(|(name, &n)| (name.clone(), n.saturating_sub(base.get(name))))
                .filter(|&(_, n)| n > 0)
                .collect(),
        )
    }

    /// The most frequent calls, most frequent first (ties by name).
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut all: Vec<(&str, u64)> = self.0.iter().map(|(k, &v)| (k.as_str(), v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        all.truncate(n);
        all
    }
}

/// Reads `strace -c`'s table: `% time  seconds  usecs/call  calls  [errors]  syscall`;
/// the calls are the fourth column whether or not the errors column is filled.
pub fn parse(table: &str) -> Result<Counts, String> {
    let mut counts = BTreeMap::new();
    let mut saw_total = false;
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(&name), Some(calls)) = (fields.last(), fields.get(3)) else {
            continue;
        };
        let Ok(calls) = calls.parse::<u64>() else {
            continue; // the header and the rules
        };
        if name == "total" {
            saw_total = true;
        } else {
            *counts.entry(name.to_owned()).or_insert(0) += calls;
        }
    }
    // strace writes nothing at all for a batch of no system call.
    if saw_total || !counts.is_empty() || table.trim().is_empty() {
        Ok(Counts(counts))
    } else {
        Err(format!("no strace -c table in {table:?}"))
    }
}

/// strace attached to every thread of one process, counting, until [`Tracer::finish`].
pub struct Tracer {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Tracer {
    /// Starts strace on `pid` and returns once every thread of it is traced, so that no
    /// request of the batch goes uncounted. The summary goes to `out`.
    pub fn attach(pid: u32, out: &Path) -> Result<Tracer, String> {
        let err = out.with_extension("stderr");
        let stderr = std::fs::File::create(&err).map_err(|e| format!("{}: {e}", err.display()))?;
        let child = Command::new(STRACE)
            .args(["-f", "-c", "-qq", "-o"])
            .arg(out)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {STRACE}: {e}"))?;
        let mut tracer = Tracer {
            child: Some(child),
            out: out.to_owned(),
            err,
        };
        tracer.wait_attached(pid)?;
        Ok(tracer)
    }

    fn wait_attached(&mut self, pid: u32) -> Result<(), String> {
        let start = Instant::now();
        let strace_pid = self.child.as_ref().map_or(0, Child::id);
        loop {
            if all_traced_by(pid, strace_pid) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("strace exited ({status}): {}", self.stderr()));
            }
            if start.elapsed() > STRACE_TIMEOUT {
                return Err(format!("strace had not attached after {STRACE_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Detaches (SIGINT, as an interrupted `strace -c` does) and reads the counts.
    pub fn finish(mut self) -> Result<Counts, String> {
        let Some(mut child) = self.child.take() else {
            return Err("strace is gone".into());
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let start = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > STRACE_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err("strace did not exit after SIGINT".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let table = std::fs::read_to_string(&self.out)
            .map_err(|e| format!("{}: {e} ({})", self.out.display(), self.stderr()))?;
        parse(&table)
    }

    /// strace's own messages, for an error.
    fn stderr(&self) -> String {
        let text = std::fs::read_to_string(&self.err).unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            "no message".into()
        } else {
            text.to_owned()
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether every thread of `pid` is traced by `tracer`.
fn all_traced_by(pid: u32, tracer: u32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for entry in dir.flatten() {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let traced = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .and_then(|v| v.trim().parse::<u32>().ok());
        if traced != Some(tracer) {
            return false;
        }
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 39.71    0.000913         101         9           openat
 33.45    0.000769          85         9           fsync
  1.30    0.000030           3         9         9 ioctl
------ ----------- ----------- --------- --------- ----------------
100.00    0.002299          28        27         9 total
";

    #[test]
    fn reads_calls_with_and_without_errors() {
        let c = parse(TABLE).unwrap();
        assert_eq!(c.get("fsync"), 9);
        assert_eq!(c.get("ioctl"), 9);
        assert_eq!(c.get("fdatasync"), 0);
        assert_eq!(c.total(), 27);
    }

    #[test]
    fn an_empty_batch_is_zero_not_an_error() {
        let empty = "% time     seconds  usecs/call     calls    errors syscall\n\
                     ------ ----------- ----------- --------- --------- ----------------\n\
                     100.00    0.000000           0         0           total\n";
        assert_eq!(parse(empty).unwrap().total(), 0);
        assert_eq!(parse("").unwrap().total(), 0);
        assert!(parse("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted").is_err());
    }

    #[test]
    fn minus_and_top() {
        let c = parse(TABLE).unwrap();
        let base = parse("0 0 0 4 ioctl\n0 0 0 4 total\n").unwrap();
        let d = c.minus(&base);
        assert_eq!(d.get("ioctl"), 5);
        assert_eq!(d.top(2), vec![("fsync", 9), ("openat", 9)]);
    }
}
