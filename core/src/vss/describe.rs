//! The VSS events ([`VssEvent`]) and the values they carry as the sentences the
//! daemons' logs show: what happened, to which mount or hook, what follows. Written
//! once here and shown with `{}` by every driver, so a line reads the same wherever it
//! is printed, and never as a Rust value.

use std::fmt;
use std::time::Duration;

use crate::limits::{VSS_EXIT_LIMIT, VSS_MAX_FROZEN};
use crate::vss::effect::{ExitStatus, VssResult};
use crate::vss::hooks::Skip;
use crate::vss::machine::VssEvent;
use crate::vss::wire::VssOp;

/// Seconds with one decimal: `12.5 s`.
fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A list of names for a sentence: `/, /var` or `none`.
fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// What an effect that did not do its job came back with, for `StepFailed`.
pub fn result_text(result: Option<&VssResult>) -> String {
    match result {
        None => "no result by its deadline".to_string(),
        Some(VssResult::Failed(e)) => e.to_string(),
        Some(VssResult::Exit(status)) => status.to_string(),
        Some(
            VssResult::Mounts(_) | VssResult::Hooks(_) | VssResult::Snapshots(_) | VssResult::Done,
        ) => "a result of the wrong kind (a driver bug)".to_string(),
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(n) => write!(f, "exit status {n}"),
            ExitStatus::Signal(n) => write!(f, "killed by signal {n}"),
            ExitStatus::TimedOut => f.write_str("killed at its deadline"),
            ExitStatus::NotStarted(e) => write!(f, "could not be started ({e})"),
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skip::Hidden => "its name starts with a dot",
            Skip::Leftover => "its name marks a leftover (~, .sample, .bak, .orig ...)",
            Skip::NotAFile => "it is not a regular file",
            Skip::NotExecutable => "it is not executable",
            Skip::NotOwnedByRoot => "it is not owned by root",
            Skip::WritableByOthers => "it is writable by group or others",
        })
    }
}

impl fmt::Display for VssEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VssEvent::Request { op, msgid } => {
                write!(f, "the host sent {} (message {msgid})", op.name())
            }
            VssEvent::Answered { op, msgid, ok } => write!(
                f,
                "answered the host's {} (message {msgid}): {}",
                op.name(),
                match (op, ok) {
                    (VssOp::Check, true) => "a backup may freeze this system",
                    (VssOp::Freeze, true) => "frozen",
                    (VssOp::Thaw, true) => "thawed",
                    (_, false) => "failed",
                }
            ),
            VssEvent::Invalid(m) => write!(
                f,
                "answered failure to a device message we cannot carry out (operation {}, \
                 message {})",
                m.op_code(),
                m.msgid()
            ),
            VssEvent::Registered => {
                write!(
                    f,
                    "registered with the kernel's VSS driver: backups can start"
                )
            }
            VssEvent::DeviceReopened => write!(
                f,
                "the VSS device failed and was opened again; registering again (a request \
                 read before is failed by the kernel, and its answer is not written)"
            ),
            VssEvent::AnswerDropped { op, msgid } => write!(
                f,
                "the answer to the host's {} (message {msgid}) is not written: the device \
                 was reopened since, and the kernel has failed that request",
                op.name()
            ),
            VssEvent::Vetoed(e) => write!(f, "refused the backup: {e}"),
            VssEvent::HookSkipped { name, why } => {
                write!(f, "hook {name} is not run: {why}")
            }
            VssEvent::HookFailed { name, arg, status } => {
                write!(f, "hook {name} failed with argument {arg}: {status}")
            }
            VssEvent::HookFailureTolerated { name, status } => write!(
                f,
                "freeze hook {name} failed ({status}); hook_failure = filesystems, so the \
                 file systems are frozen anyway and this backup is only crash-consistent for \
                 what {name} quiesces (it still gets its thaw)"
            ),
            VssEvent::StepFailed { step, detail } => write!(f, "{step} failed: {detail}"),
            VssEvent::Abandoned { step } => {
                write!(f, "{step} overran its deadline and was given up")
            }
            VssEvent::Suspended { mount } => write!(f, "suspended writes to {mount}"),
            VssEvent::Resumed { mounts } => {
                write!(f, "resumed writes to the file systems: {}", list(mounts))
            }
            VssEvent::ResumeFailed(e) => write!(
                f,
                "resuming the suspended file systems failed ({e}); killing the freezer, \
                 whose exit resumes them"
            ),
            VssEvent::SnapshotTaken { snapshot } => write!(f, "took ZFS snapshot {snapshot}"),
            VssEvent::SnapshotDestroyed { snapshot } => write!(
                f,
                "destroyed the old ZFS snapshot {snapshot} (snapshot_keep keeps only the newest)"
            ),
            VssEvent::PruneInterrupted { by_request } => write!(
                f,
                "stopped destroying old ZFS snapshots {}; the rest are destroyed after the \
                 next successful backup",
                if *by_request {
                    "to serve the host's request"
                } else {
                    "as the daemon is stopping"
                }
            ),
            VssEvent::WatchdogThaw { frozen_for } => write!(
                f,
                "thawing after {} frozen: the host sent no THAW in time",
                seconds(*frozen_for)
            ),
            VssEvent::FreezeCapReached { frozen_for } => write!(
                f,
                "thawing after {} frozen: a freeze lasts at most {} however often the host \
                 repeats FREEZE",
                seconds(*frozen_for),
                seconds(VSS_MAX_FROZEN)
            ),
            VssEvent::ExitLimit {
                unthawed,
                suspended,
            } => write!(
                f,
                "gave up thawing {} after the shutdown began: hooks never run with thaw: {}; \
                 file systems left to the freezer's exit: {}",
                seconds(VSS_EXIT_LIMIT),
                list(unthawed),
                list(suspended)
            ),
            VssEvent::FreezerExited { held } => write!(
                f,
                "the freezer process exited; the kernel resumed what it held: {}",
                list(held)
            ),
            VssEvent::AlreadyFrozen => {
                f.write_str("already frozen: FREEZE answered without suspending again")
            }
            VssEvent::DeviceFailed(e) => write!(
                f,
                "the VSS device failed ({e}): thawing if frozen, then exiting"
            ),
            VssEvent::AnswerLost { msgid, error } => write!(
                f,
                "the answer to message {msgid} could not be written ({error}); the host \
                 never sees it"
            ),
        }
    }
}
