//! `SimVssKernel`: the FreeBSD `hv_vss` driver's side of `/dev/hv_fsvss_dev` and
//! `/dev/hv_appvss_dev` (docs/protocol/vss.md §2), the one model of those rules. The simulator
//! drives it in virtual time; [`crate::vss_emulator`] drives it in real time over sockets.
//!
//! * Opening a device registers; a device is exclusive (a second open is refused).
//! * Never registered: a host request is not answered at all. Registered once and
//!   closed (the KILLED state): every request fails at once.
//! * One request at a time: another host request while one is pending is dropped.
//! * msgid is the host message's arrival time; one timer (15 s) for the whole chain, after
//!   which the host gets `E_FAIL`; a write that matches nothing is ignored.
//! * CHECK and FREEZE go to the application helper first, if registered, and to the
//!   daemon only if the helper said OK (its status compared as a `u8`); if no daemon is
//!   there then, only the timer ends the request. THAW goes to the daemon first, then to
//!   the helper if the daemon said OK; the host gets the helper's answer.
//! * A request a party had not read when it closed its device goes to the next process
//!   that opens it in time; one it had read can only time out.

use std::time::Duration;

use hvguest_core::limits::VSS_KERNEL_DEADLINE;
use hvguest_core::vss::wire::{OptMsg, VssOp, VSS_SUCCESS};
use hvguest_core::Instant;

/// The two processes the kernel talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    /// The application helper, on `/dev/hv_appvss_dev`.
    App,
    /// The file-system daemon, on `/dev/hv_fsvss_dev`.
    Daemon,
}

impl Party {
    pub fn name(self) -> &'static str {
        match self {
            Party::App => "the application helper",
            Party::Daemon => "the daemon",
        }
    }
}

/// Which party a request is with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    App,
    Daemon,
    AppAfterDaemon,
    /// The helper said OK and no daemon was there: only the timer ends it.
    Orphaned,
}

#[derive(Clone, Copy, Debug)]
struct KReq {
    host_id: u64,
    op: VssOp,
    msgid: u64,
    deadline: Instant,
    at: At,
    /// The party it is with has read it (it was handed over).
    read: bool,
}

/// What the kernel did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KOut {
    ToDaemon([u8; 64]),
    /// Linux's device (`crate::linux_vss_kernel`): a 12-byte request, or the 4-byte
    /// answer to the registration.
    ToLinuxDaemon(Vec<u8>),
    ToApp([u8; 64]),
    HostReply {
        host_id: u64,
        op: VssOp,
        ok: bool,
        timed_out: bool,
    },
    /// A host request dropped: another was pending, or no daemon ever registered (no
    /// reply at all).
    Dropped {
        host_id: u64,
    },
    /// A write that matched no pending request (late, after the timeout, a wrong msgid,
    /// not a message): ignored.
    Ignored {
        from_app: bool,
    },
}

#[derive(Debug)]
pub struct SimVssKernel {
    pub daemon_registered: bool,
    daemon_ever: bool,
    pub app_registered: bool,
    current: Option<KReq>,
    /// The timer for one request: `VSS_KERNEL_DEADLINE`, shorter only in unit tests.
    timeout: Duration,
}

impl Default for SimVssKernel {
    fn default() -> Self {
        SimVssKernel::with_timeout(VSS_KERNEL_DEADLINE)
    }
}

fn opt_msg(op: VssOp, msgid: u64) -> [u8; 64] {
    OptMsg {
        opt: op as u32,
        status: 0,
        msgid,
    }
    .encode()
}

impl SimVssKernel {
    /// A kernel whose per-request timer is `timeout` instead of the kernel's 15 s.
    pub fn with_timeout(timeout: Duration) -> SimVssKernel {
        SimVssKernel {
            daemon_registered: false,
            daemon_ever: false,
            app_registered: false,
            current: None,
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn pending(&self) -> bool {
        self.current.is_some()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.current.map(|c| c.deadline)
    }

    /// Who the pending request waits for: `None` when nobody can answer it any more
    /// (the helper said OK with no daemon there), or when nothing is pending.
    pub fn holder(&self) -> Option<Party> {
        self.current.and_then(|c| Self::holder_of(c.at))
    }

    /// Whether `party` has its device open.
    pub fn is_open(&self, party: Party) -> bool {
        match party {
            Party::App => self.app_registered,
            Party::Daemon => self.daemon_registered,
        }
    }

    pub fn open_daemon(&mut self) {
        self.daemon_registered = true;
        self.daemon_ever = true;
    }

    pub fn close_daemon(&mut self) {
        self.daemon_registered = false;
        // A request the daemon had read cannot be answered any more: it times out.
    }

    /// `party` opens its device. Refused (false: EBUSY) while it is open already. A
    /// pending request queued for that party and not read yet is handed over.
    pub fn open(&mut self, party: Party, out: &mut Vec<KOut>) -> bool {
        if self.is_open(party) {
            return false;
        }
        match party {
            Party::App => self.app_registered = true,
            Party::Daemon => self.open_daemon(),
        }
        if let Some(c) = self.current.as_mut().filter(|c| !c.read) {
            if Self::holder_of(c.at) == Some(party) {
                c.read = true;
                out.push(Self::to(party, c.op, c.msgid));
            }
        }
        true
    }

    /// `party` closed its device (or died).
    pub fn close(&mut self, party: Party) {
        match party {
            Party::App => self.app_registered = false,
            Party::Daemon => self.close_daemon(),
        }
    }

    /// The request just handed to `party` could not be: it had closed its device. The
    /// request stays queued, unread, for the next process that opens it in time.
    pub fn undelivered(&mut self, party: Party) {
        self.close(party);
        if let Some(c) = self.current.as_mut() {
            if Self::holder_of(c.at) == Some(party) {
                c.read = false;
            }
        }
    }

    fn holder_of(at: At) -> Option<Party> {
        match at {
            At::App | At::AppAfterDaemon => Some(Party::App),
            At::Daemon => Some(Party::Daemon),
            At::Orphaned => None,
        }
    }

    fn to(party: Party, op: VssOp, msgid: u64) -> KOut {
        match party {
            Party::App => KOut::ToApp(opt_msg(op, msgid)),
            Party::Daemon => KOut::ToDaemon(opt_msg(op, msgid)),
        }
    }

    /// A host request at `now`, its msgid the virtual clock.
    pub fn host(&mut self, now: Instant, host_id: u64, op: VssOp, out: &mut Vec<KOut>) {
        self.host_stamped(now, now.as_nanos(), host_id, op, out);
    }

    /// A host request at `now` (the timer's clock); the kernel stamps `stamp_ns` (its
    /// real-time clock in nanoseconds; never 0, which is no request) into msgid.
    pub fn host_stamped(
        &mut self,
        now: Instant,
        stamp_ns: u64,
        host_id: u64,
        op: VssOp,
        out: &mut Vec<KOut>,
    ) {
        if self.current.is_some() {
            out.push(KOut::Dropped { host_id });
            return;
        }
        if !self.daemon_registered {
            // Never registered: the message stays in the ring, unanswered. Registered
            // once and gone (the KILLED state): failed at once.
            if self.daemon_ever {
                out.push(KOut::HostReply {
                    host_id,
                    op,
                    ok: false,
                    timed_out: false,
                });
            } else {
                out.push(KOut::Dropped { host_id });
            }
            return;
        }
        let msgid = stamp_ns.max(1);
        let to_app = self.app_registered && op != VssOp::Thaw;
        let at = if to_app { At::App } else { At::Daemon };
        self.current = Some(KReq {
            host_id,
            op,
            msgid,
            deadline: now.saturating_add(self.timeout),
            at,
            read: true,
        });
        out.push(Self::to(
            if to_app { Party::App } else { Party::Daemon },
            op,
            msgid,
        ));
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

    /// The daemon writes `bytes` (a 64-byte message, or anything else: ignored).
    pub fn daemon_write(&mut self, bytes: &[u8], out: &mut Vec<KOut>) {
        let Some(m) = OptMsg::decode(bytes) else {
            out.push(KOut::Ignored { from_app: false });
            return;
        };
        match self.current {
            Some(c) if c.at == At::Daemon && c.read && c.msgid == m.msgid => {
                let ok = m.status == VSS_SUCCESS;
                if c.op == VssOp::Thaw && ok && self.app_registered {
                    self.current = Some(KReq {
                        at: At::AppAfterDaemon,
                        ..c
                    });
                    out.push(Self::to(Party::App, c.op, c.msgid));
                } else {
                    self.current = None;
                    out.push(KOut::HostReply {
                        host_id: c.host_id,
                        op: c.op,
                        ok,
                        timed_out: false,
                    });
                }
            }
            _ => out.push(KOut::Ignored { from_app: false }),
        }
    }

    /// The application helper writes `bytes` (a 64-byte message, or anything else:
    /// ignored).
    pub fn app_write(&mut self, bytes: &[u8], out: &mut Vec<KOut>) {
        let Some(m) = OptMsg::decode(bytes) else {
            out.push(KOut::Ignored { from_app: true });
            return;
        };
        // The app device compares the status as a u8 (docs/protocol/vss.md §1.2).
        let ok = (m.status & 0xff) as u8 == VSS_SUCCESS as u8;
        match self.current {
            Some(c) if c.at == At::App && c.read && c.msgid == m.msgid => {
                if ok && self.daemon_registered {
                    self.current = Some(KReq {
                        at: At::Daemon,
                        ..c
                    });
                    out.push(Self::to(Party::Daemon, c.op, c.msgid));
                } else if ok {
                    // "vss daemon was killed": the host waits for the timer.
                    self.current = Some(KReq {
                        at: At::Orphaned,
                        ..c
                    });
                } else {
                    self.current = None;
                    out.push(KOut::HostReply {
                        host_id: c.host_id,
                        op: c.op,
                        ok: false,
                        timed_out: false,
                    });
                }
            }
            Some(c) if c.at == At::AppAfterDaemon && c.read && c.msgid == m.msgid => {
                self.current = None;
                out.push(KOut::HostReply {
                    host_id: c.host_id,
                    op: c.op,
                    ok,
                    timed_out: false,
                });
            }
            _ => out.push(KOut::Ignored { from_app: true }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(out: &[KOut]) -> OptMsg {
        match out.last() {
            Some(KOut::ToApp(b) | KOut::ToDaemon(b)) => OptMsg::decode(b).expect("64 bytes"),
            other => panic!("no request handed over: {other:?}"),
        }
    }

    #[test]
    fn a_device_opens_once_and_msgid_is_the_callers_stamp() {
        let mut k = SimVssKernel::default();
        let mut out = Vec::new();
        assert!(k.open(Party::Daemon, &mut out));
        assert!(!k.open(Party::Daemon, &mut out), "exclusive: EBUSY");
        k.host_stamped(Instant::ZERO, 1234, 1, VssOp::Check, &mut out);
        assert_eq!(msg(&out).msgid, 1234);
        assert_eq!(k.holder(), Some(Party::Daemon));
        assert_eq!(
            k.next_deadline(),
            Some(Instant::ZERO.saturating_add(VSS_KERNEL_DEADLINE))
        );
        // A stamp of 0 is no request: the kernel never sends one.
        let mut k = SimVssKernel::default();
        k.open_daemon();
        out.clear();
        k.host_stamped(Instant::ZERO, 0, 1, VssOp::Check, &mut out);
        assert_eq!(msg(&out).msgid, 1);
    }

    #[test]
    fn an_unread_request_goes_to_the_next_opener_a_read_one_only_times_out() {
        let mut k = SimVssKernel::with_timeout(Duration::from_secs(1));
        let mut out = Vec::new();
        k.open(Party::Daemon, &mut out);
        k.host(Instant::ZERO, 1, VssOp::Freeze, &mut out);
        k.undelivered(Party::Daemon);
        assert!(!k.is_open(Party::Daemon));
        out.clear();
        assert!(k.open(Party::Daemon, &mut out));
        let m = msg(&out);
        out.clear();
        k.daemon_write(&m.reply(true).encode(), &mut out);
        assert!(matches!(
            out[..],
            [KOut::HostReply {
                ok: true,
                timed_out: false,
                ..
            }]
        ));
        // Read, then the daemon dies: a new daemon gets nothing; the timer ends it.
        out.clear();
        k.host(Instant::ZERO, 2, VssOp::Freeze, &mut out);
        k.close(Party::Daemon);
        out.clear();
        assert!(k.open(Party::Daemon, &mut out));
        assert!(out.is_empty());
        k.on_timer(Instant::from_millis(1000), &mut out);
        assert!(matches!(
            out[..],
            [KOut::HostReply {
                host_id: 2,
                timed_out: true,
                ..
            }]
        ));
    }

    #[test]
    fn the_app_saying_ok_with_no_daemon_leaves_nobody_holding_it() {
        let mut k = SimVssKernel::default();
        let mut out = Vec::new();
        k.open(Party::Daemon, &mut out);
        k.open(Party::App, &mut out);
        k.host(Instant::ZERO, 1, VssOp::Freeze, &mut out);
        assert_eq!(k.holder(), Some(Party::App));
        let m = msg(&out);
        k.close(Party::Daemon);
        out.clear();
        k.app_write(&m.reply(true).encode(), &mut out);
        assert!(out.is_empty());
        assert!(k.pending());
        assert_eq!(k.holder(), None);
        // A daemon opening now is not handed it.
        assert!(k.open(Party::Daemon, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn a_write_that_is_not_a_message_is_ignored() {
        let mut k = SimVssKernel::default();
        let mut out = Vec::new();
        k.open(Party::Daemon, &mut out);
        k.host(Instant::ZERO, 1, VssOp::Check, &mut out);
        out.clear();
        k.daemon_write(&[0u8; 10], &mut out);
        k.app_write(&[0u8; 65], &mut out);
        assert_eq!(
            out,
            [
                KOut::Ignored { from_app: false },
                KOut::Ignored { from_app: true }
            ]
        );
        assert!(k.pending());
    }
}
