//! `SimKernel`: the FreeBSD `hv_kvp` driver's side of `/dev/hv_kvp_dev` (docs/protocol/kvp.md
//! §1.7, §2.3). Registration first; one request at a time; a request is not forwarded
//! while the daemon has not answered the previous one; the host gets `E_FAIL` 5 s after
//! hand-off and a late answer is dropped; after a daemon dies with a request posted, its
//! successor may read that request once more (a stale semaphore count).
//!
//! The one model of those rules: the simulator's world drives it in virtual time,
//! [`crate::emulator`] in real time over a socket.

use std::collections::VecDeque;
use std::time::Duration;

use hvguest_core::limits::{KVP_KERNEL_DEADLINE, LINUX_KVP_KERNEL_DEADLINE};
use hvguest_core::Instant;

use crate::host_wire::Kernel;

/// A host request waiting in the ring, or being processed.
#[derive(Clone, Debug)]
pub struct HostRequest {
    pub id: u64,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
struct InProgress {
    id: u64,
    deadline: Instant,
}

/// What the kernel did that the world must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelOut {
    /// Hand these bytes to the daemon (its device became readable).
    Deliver {
        id: Option<u64>,
        bytes: Vec<u8>,
    },
    /// The host's request got this answer (the daemon's bytes, or E_FAIL on timeout).
    HostReply {
        id: u64,
        bytes: Vec<u8>,
        timed_out: bool,
    },
    /// A daemon write arrived after the deadline and was dropped. `stale`: it answered
    /// a request re-delivered after a restart, whose deadline ran from the first hand-off.
    LateReplyDropped {
        id: Option<u64>,
        stale: bool,
    },
    /// A request not forwarded because the daemon was still busy.
    NotForwarded {
        id: u64,
    },
    Registered,
}

/// A breach of the device contract by the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelViolation {
    WriteWithoutRequest,
    WrongWriteSize(usize),
    BadRegistration,
}

#[derive(Debug)]
pub struct SimKernel {
    /// Whose driver this is: FreeBSD's, or Linux's (7432-byte messages, registration op
    /// 100 answered by a message the daemon reads before any request, a 30 s deadline,
    /// a close that fails the request held; docs/protocol/linux.md §1.1–§1.3).
    os: Kernel,
    /// From hand-off to the host's `E_FAIL`: the kernel's deadline, shorter only in
    /// unit tests.
    deadline: Duration,
    registered: bool,
    ring: VecDeque<HostRequest>,
    current: Option<InProgress>,
    /// A request is posted and the daemon has not answered it.
    daemon_busy: bool,
    timed_out: bool,
    /// The request the daemon holds now (the one its write answers), if a host waits.
    posted: Option<(Option<u64>, Vec<u8>)>,
    /// Whether `posted` is a re-delivery to a new daemon.
    posted_stale: bool,
    /// Survives a daemon's death: re-delivered once to the next daemon.
    stale: Option<(Option<u64>, Vec<u8>)>,
}

impl Default for SimKernel {
    fn default() -> Self {
        SimKernel::with_deadline(KVP_KERNEL_DEADLINE)
    }
}

impl SimKernel {
    pub fn new() -> SimKernel {
        SimKernel::default()
    }

    /// The driver of `os`, with its own deadline.
    pub fn of(os: Kernel) -> SimKernel {
        let deadline = match os {
            Kernel::FreeBsd => KVP_KERNEL_DEADLINE,
            Kernel::Linux => LINUX_KVP_KERNEL_DEADLINE,
        };
        SimKernel {
            os,
            ..SimKernel::with_deadline(deadline)
        }
    }

    /// A kernel that fails a request `deadline` after hand-off instead of the kernel's 5 s.
    pub fn with_deadline(deadline: Duration) -> SimKernel {
        SimKernel {
            os: Kernel::FreeBsd,
            deadline,
            registered: false,
            ring: VecDeque::new(),
            current: None,
            daemon_busy: false,
            timed_out: false,
            posted: None,
            posted_stale: false,
            stale: None,
        }
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The deadline for requests handed off from now on.
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.deadline = deadline;
    }

    pub fn submit(&mut self, req: HostRequest) {
        self.ring.push_back(req);
    }

    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Requests waiting or in progress.
    pub fn pending(&self) -> usize {
        self.ring.len() + usize::from(self.current.is_some())
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.current.as_ref().map(|c| c.deadline)
    }

    /// Takes the next request from the ring if the kernel is free to.
    pub fn pump(&mut self, now: Instant, out: &mut Vec<KernelOut>) {
        if !self.registered || self.current.is_some() {
            return;
        }
        let Some(req) = self.ring.pop_front() else {
            return;
        };
        let deadline = now.saturating_add(self.deadline);
        self.current = Some(InProgress {
            id: req.id,
            deadline,
        });
        if self.daemon_busy {
            out.push(KernelOut::NotForwarded { id: req.id });
        } else {
            self.daemon_busy = true;
            self.timed_out = false;
            self.posted = Some((Some(req.id), req.bytes.clone()));
            self.posted_stale = false;
            out.push(KernelOut::Deliver {
                id: Some(req.id),
                bytes: req.bytes,
            });
        }
    }

    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<KernelOut>) {
        if let Some(c) = self.current.as_ref().filter(|c| c.deadline <= now) {
            let id = c.id;
            self.current = None;
            self.timed_out = true;
            let mut fail = vec![0u8; self.os.msg_len()];
            fail[..4].copy_from_slice(&0x8000_4005u32.to_le_bytes());
            out.push(KernelOut::HostReply {
                id,
                bytes: fail,
                timed_out: true,
            });
            self.pump(now, out);
        }
    }

    pub fn on_daemon_write(
        &mut self,
        now: Instant,
        bytes: &[u8],
        out: &mut Vec<KernelOut>,
    ) -> Result<(), KernelViolation> {
        if bytes.len() != self.os.msg_len() {
            return Err(KernelViolation::WrongWriteSize(bytes.len()));
        }
        if !self.registered {
            let op = match self.os {
                Kernel::FreeBsd => 4,
                Kernel::Linux => 100,
            };
            if bytes[0] != op {
                return Err(KernelViolation::BadRegistration);
            }
            self.registered = true;
            out.push(KernelOut::Registered);
            if self.os == Kernel::Linux {
                // The answer comes first; reading it completes the registration, so the
                // requests are delivered after it (a Deliver is the daemon's read).
                let mut answer = vec![0u8; self.os.msg_len()];
                answer[0] = op;
                answer[4..7].copy_from_slice(b"3.1");
                out.push(KernelOut::Deliver {
                    id: None,
                    bytes: answer,
                });
            }
            if let Some((id, bytes)) = self.stale.take() {
                // The host still waits if its 5 s have not run out: then the new
                // daemon's answer reaches it (docs/protocol/kvp.md §2.3); otherwise it is dropped.
                let live =
                    id.is_some() && self.current.as_ref().map(|c| c.id) == id && !self.timed_out;
                self.daemon_busy = true;
                self.timed_out = !live;
                let id = if live { id } else { None };
                self.posted = Some((id, bytes.clone()));
                self.posted_stale = true;
                out.push(KernelOut::Deliver { id, bytes });
            }
            self.pump(now, out);
            return Ok(());
        }
        if !self.daemon_busy {
            return Err(KernelViolation::WriteWithoutRequest);
        }
        self.daemon_busy = false;
        let (id, _) = self.posted.take().unwrap_or((None, Vec::new()));
        match (self.timed_out, self.current.as_ref()) {
            (false, Some(c)) if Some(c.id) == id => {
                let id = c.id;
                self.current = None;
                out.push(KernelOut::HostReply {
                    id,
                    bytes: bytes.to_vec(),
                    timed_out: false,
                });
            }
            _ => out.push(KernelOut::LateReplyDropped {
                id,
                stale: self.posted_stale,
            }),
        }
        self.pump(now, out);
        Ok(())
    }

    /// The daemon died (its descriptor closed). With `keep_stale`, a request it had not
    /// answered is handed to its successor once more.
    pub fn on_daemon_death(&mut self, keep_stale: bool) {
        self.registered = false;
        if self.os == Kernel::Linux {
            // Linux's close fails the request held at once and keeps nothing for the
            // next daemon (docs/protocol/linux.md §1.1): its deadline is now.
            if let Some(c) = self.current.as_mut() {
                c.deadline = Instant(0);
            }
            self.posted = None;
            self.daemon_busy = false;
            return;
        }
        if let Some(posted) = self.posted.take() {
            if keep_stale {
                self.stale = Some(posted);
            }
        }
        // The next open clears the busy flag (docs/protocol/kvp.md §1.7).
        self.daemon_busy = false;
    }
}
