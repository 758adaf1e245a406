//! `SimLinuxVssKernel`: Linux's `hv_snapshot` driver behind `/dev/vmbus/hv_vss`
//! (docs/protocol/linux.md §2), the simulator's own model of its rules, written from
//! that text with literal bytes and never with the core's codec (`core::vss::wire`):
//!
//! * The daemon opens the device and writes 12 bytes whose byte 0 is 129; the kernel
//!   queues a 4-byte answer, `81 00 00 00`; reading it completes the registration, and
//!   only then are requests handed over. Any other write before that is ignored.
//! * With no daemon registered (never, closed, or registration not read yet), the
//!   host's HOT_BACKUP, FREEZE and THAW fail at once.
//! * A request is 12 bytes, the op in byte 0 (HOT_BACKUP 2, FREEZE 5, THAW 6), the rest
//!   zero. The answer is 12 bytes whose bytes 0–3 are the status, little-endian (0 is
//!   OK); a write of another length is refused (`EINVAL`) and answers nothing.
//! * HOT_BACKUP and THAW wait 30 s, FREEZE 900 s; then the host gets `HV_E_FAIL`, and
//!   the kernel thaws nothing.
//! * A close fails the request held at once. There is no application device.
//! * One request at a time: the host sends no other while one is pending (dropped).

use std::time::Duration;

use hvguest_core::vss::wire::VssOp;
use hvguest_core::Instant;

use crate::vss_kernel::{KOut, Party};

/// HOT_BACKUP and THAW: `HV_UTIL_TIMEOUT`.
pub const LINUX_UTIL_TIMEOUT: Duration = Duration::from_secs(30);
/// FREEZE.
pub const LINUX_FREEZE_TIMEOUT: Duration = Duration::from_secs(900);

/// The host's operation, as byte 0 of the kernel's message.
pub fn op_byte(op: VssOp) -> u8 {
    match op {
        VssOp::Check => 2,
        VssOp::Freeze => 5,
        VssOp::Thaw => 6,
    }
}

/// The host's operation a message's byte 0 names, if it is one of the three.
pub fn op_of_byte(b: u8) -> Option<VssOp> {
    match b {
        2 => Some(VssOp::Check),
        5 => Some(VssOp::Freeze),
        6 => Some(VssOp::Thaw),
        _ => None,
    }
}

/// Whether a 12-byte answer says OK: bytes 0–3, little-endian, are 0.
pub fn answer_ok(bytes: &[u8]) -> bool {
    bytes.len() == 12 && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == 0
}

#[derive(Clone, Copy, Debug)]
struct Held {
    host_id: u64,
    op: VssOp,
    deadline: Instant,
}

#[derive(Debug, Default)]
pub struct SimLinuxVssKernel {
    /// The daemon has the device open.
    open: bool,
    /// It read the answer: requests are handed over.
    registered: bool,
    current: Option<Held>,
    /// Registrations completed (re-registrations count).
    pub registrations: u32,
}

impl SimLinuxVssKernel {
    pub fn registered(&self) -> bool {
        self.registered
    }

    pub fn pending(&self) -> bool {
        self.current.is_some()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.current.map(|c| c.deadline)
    }

    /// Only the daemon ever holds a request.
    pub fn holder(&self) -> Option<Party> {
        self.current.map(|_| Party::Daemon)
    }

    pub fn open_daemon(&mut self) {
        self.open = true;
        self.registered = false;
    }

    /// The daemon closed the device (or died): the request it held fails at once.
    pub fn close_daemon(&mut self, out: &mut Vec<KOut>) {
        self.open = false;
        self.registered = false;
        if let Some(c) = self.current.take() {
            out.push(KOut::HostReply {
                host_id: c.host_id,
                op: c.op,
                ok: false,
                timed_out: false,
            });
        }
    }

    pub fn host(&mut self, now: Instant, host_id: u64, op: VssOp, out: &mut Vec<KOut>) {
        if self.current.is_some() {
            out.push(KOut::Dropped { host_id });
            return;
        }
        if !self.registered {
            out.push(KOut::HostReply {
                host_id,
                op,
                ok: false,
                timed_out: false,
            });
            return;
        }
        let wait = if op == VssOp::Freeze {
            LINUX_FREEZE_TIMEOUT
        } else {
            LINUX_UTIL_TIMEOUT
        };
        self.current = Some(Held {
            host_id,
            op,
            deadline: now.saturating_add(wait),
        });
        let mut m = vec![0u8; 12];
        m[0] = op_byte(op);
        out.push(KOut::ToLinuxDaemon(m));
    }

    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<KOut>) {
        if let Some(c) = self.current.filter(|c| c.deadline <= now) {
            self.current = None;
            out.push(KOut::HostReply {
                host_id: c.host_id,
                op: c.op,
                ok: false,
                timed_out: true,
            });
        }
    }

    /// The daemon writes `bytes`.
    pub fn daemon_write(&mut self, bytes: &[u8], out: &mut Vec<KOut>) {
        if !self.open || bytes.len() != 12 {
            // EINVAL: nothing is answered.
            out.push(KOut::Ignored { from_app: false });
            return;
        }
        if bytes[0] == 129 && !self.registered {
            // The registration: its 4-byte answer is queued, and the simulated daemon
            // reads what the kernel queues at once; the read completes it.
            out.push(KOut::ToLinuxDaemon(vec![129, 0, 0, 0]));
            self.registered = true;
            self.registrations += 1;
            return;
        }
        match self.current.take() {
            Some(c) if self.registered => out.push(KOut::HostReply {
                host_id: c.host_id,
                op: c.op,
                ok: answer_ok(bytes),
                timed_out: false,
            }),
            other => {
                self.current = other;
                out.push(KOut::Ignored { from_app: false });
            }
        }
    }
}

/// The world's VSS kernel: FreeBSD's two devices, or Linux's one.
#[derive(Debug)]
pub enum VssKernel {
    FreeBsd(crate::vss_kernel::SimVssKernel),
    Linux(SimLinuxVssKernel),
}

impl VssKernel {
    pub fn is_linux(&self) -> bool {
        matches!(self, VssKernel::Linux(_))
    }
    pub fn pending(&self) -> bool {
        match self {
            VssKernel::FreeBsd(k) => k.pending(),
            VssKernel::Linux(k) => k.pending(),
        }
    }
    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            VssKernel::FreeBsd(k) => k.next_deadline(),
            VssKernel::Linux(k) => k.next_deadline(),
        }
    }
    pub fn holder(&self) -> Option<Party> {
        match self {
            VssKernel::FreeBsd(k) => k.holder(),
            VssKernel::Linux(k) => k.holder(),
        }
    }
    pub fn open_daemon(&mut self) {
        match self {
            VssKernel::FreeBsd(k) => k.open_daemon(),
            VssKernel::Linux(k) => k.open_daemon(),
        }
    }
    /// The application helper opens its device (FreeBSD only: Linux has none).
    pub fn open_app(&mut self) {
        if let VssKernel::FreeBsd(k) = self {
            k.app_registered = true;
        }
    }
    pub fn close_daemon(&mut self, out: &mut Vec<KOut>) {
        match self {
            VssKernel::FreeBsd(k) => k.close_daemon(),
            VssKernel::Linux(k) => k.close_daemon(out),
        }
    }
    pub fn host(&mut self, now: Instant, host_id: u64, op: VssOp, out: &mut Vec<KOut>) {
        match self {
            VssKernel::FreeBsd(k) => k.host(now, host_id, op, out),
            VssKernel::Linux(k) => k.host(now, host_id, op, out),
        }
    }
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<KOut>) {
        match self {
            VssKernel::FreeBsd(k) => k.on_timer(now, out),
            VssKernel::Linux(k) => k.on_timer(now, out),
        }
    }
    pub fn daemon_write(&mut self, bytes: &[u8], out: &mut Vec<KOut>) {
        match self {
            VssKernel::FreeBsd(k) => k.daemon_write(bytes, out),
            VssKernel::Linux(k) => k.daemon_write(bytes, out),
        }
    }
    pub fn app_write(&mut self, bytes: &[u8], out: &mut Vec<KOut>) {
        match self {
            VssKernel::FreeBsd(k) => k.app_write(bytes, out),
            VssKernel::Linux(_) => out.push(KOut::Ignored { from_app: true }),
        }
    }
    /// Whether the kernel holds a completed registration (always, on FreeBSD, while
    /// the device is open).
    pub fn registered(&self) -> bool {
        match self {
            VssKernel::FreeBsd(k) => k.daemon_registered,
            VssKernel::Linux(k) => k.registered(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_first_then_requests_and_answers() {
        let mut k = SimLinuxVssKernel::default();
        let mut out = Vec::new();
        k.open_daemon();
        // Not registered: fails at once.
        k.host(Instant::ZERO, 1, VssOp::Check, &mut out);
        assert!(matches!(
            out[..],
            [KOut::HostReply {
                ok: false,
                timed_out: false,
                ..
            }]
        ));
        out.clear();
        let mut reg = vec![0u8; 12];
        reg[0] = 0x81;
        k.daemon_write(&reg, &mut out);
        assert!(matches!(&out[..], [KOut::ToLinuxDaemon(b)] if b == &[0x81, 0, 0, 0]));
        assert!(k.registered());
        out.clear();
        k.host(Instant::ZERO, 2, VssOp::Freeze, &mut out);
        assert!(matches!(&out[..], [KOut::ToLinuxDaemon(b)] if b[0] == 5 && b.len() == 12));
        assert_eq!(
            k.next_deadline(),
            Some(Instant::ZERO.saturating_add(Duration::from_secs(900)))
        );
        out.clear();
        k.daemon_write(&[5, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0], &mut out);
        assert!(matches!(out[..], [KOut::HostReply { ok: false, .. }]));
        out.clear();
        k.host(Instant::ZERO, 3, VssOp::Thaw, &mut out);
        out.clear();
        k.daemon_write(&[0u8; 4], &mut out);
        assert!(matches!(out[..], [KOut::Ignored { .. }]), "EINVAL");
        out.clear();
        k.daemon_write(&[0u8; 12], &mut out);
        assert!(matches!(out[..], [KOut::HostReply { ok: true, .. }]));
        // A close fails the request held.
        out.clear();
        k.host(Instant::ZERO, 4, VssOp::Check, &mut out);
        out.clear();
        k.close_daemon(&mut out);
        assert!(matches!(
            out[..],
            [KOut::HostReply {
                host_id: 4,
                ok: false,
                timed_out: false,
                ..
            }]
        ));
    }
}
