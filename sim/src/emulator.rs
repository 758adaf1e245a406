//! The emulated `/dev/hv_kvp_dev`, host side: a Unix `SOCK_SEQPACKET` socket on which a
//! real `hv_kvp_daemon --device SOCKET` registers and answers requests. The kernel's rules
//! (registration first, one request at a time, not forwarded while the daemon is busy,
//! `E_FAIL` 5 s after hand-off, late answers dropped) are [`SimKernel`]'s, the model the
//! simulator uses, driven here in real time: this module only moves datagrams between
//! the socket and the model, with the model's next deadline as the poll timeout.
//!
//! Each connection gets its own model: a daemon that goes away ends the link
//! ([`Answer::Gone`]) and the caller abandons the request it was asking, where the kernel
//! would keep the host waiting for its 5 s.
//!
//! Used by the end-to-end tests, `kvp-host` and the benchmark.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use hvguest_core::kvp::wire::Layout;
use hvguest_core::limits::{KVP_MSG_SIZE, LINUX_KVP_MSG_SIZE};
use nix::sys::socket::{self, MsgFlags};

use crate::host_wire::Kernel;
use crate::kernel::{HostRequest, KernelOut, KernelViolation, SimKernel};
use crate::realtime::{to_io, wait_readable, Clock, Listener};

/// The listening side: the "device" daemons connect to.
pub struct EmulatedDevice {
    listener: Listener,
    /// Whose kernel the device plays: FreeBSD's, or Linux's (`Kernel::Linux`: 7432-byte
    /// messages, the registration answered, a 30 s deadline).
    os: Kernel,
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The daemon's reply, and how long it took from hand-off.
    Reply { bytes: Vec<u8>, took: Duration },
    /// The deadline passed: the host got E_FAIL. `forwarded` is false when the kernel
    /// did not hand it over because the daemon was still busy with an earlier one.
    TimedOut { forwarded: bool },
    /// The daemon went away (closed the device).
    Gone,
}

/// One connected daemon, and the kernel model serving it.
pub struct DaemonLink {
    fd: OwnedFd,
    kernel: SimKernel,
    os: Kernel,
    clock: Clock,
    next_id: u64,
    /// Late replies seen and dropped.
    pub dropped_late: u64,
}

fn violation(v: KernelViolation) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the daemon broke the device contract: {v:?}"),
    )
}

impl EmulatedDevice {
    /// Listens on `path` (a stale socket file there is replaced).
    pub fn bind(path: &Path) -> io::Result<EmulatedDevice> {
        EmulatedDevice::bind_as(path, Kernel::FreeBsd)
    }

    /// Listens on `path` as `os`'s KVP device.
    pub fn bind_as(path: &Path, os: Kernel) -> io::Result<EmulatedDevice> {
        Ok(EmulatedDevice {
            listener: Listener::bind(path)?,
            os,
        })
    }

    pub fn path(&self) -> &Path {
        &self.listener.path
    }

    /// Waits for a daemon to open the device, then for its registration (byte 0 = 4;
    /// Linux's: 100, answered by the kernel's message, which is sent at once).
    pub fn accept(&self, timeout: Duration) -> io::Result<DaemonLink> {
        if !self.listener.wait(timeout)? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no daemon connected",
            ));
        }
        let Some(fd) = self.listener.take()? else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection went away before it was accepted",
            ));
        };
        let mut link = DaemonLink {
            fd,
            kernel: SimKernel::of(self.os),
            os: self.os,
            clock: Clock::new(),
            next_id: 0,
            dropped_late: 0,
        };
        let Some(reg) = link.recv(timeout)? else {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no registration"));
        };
        let mut out = Vec::new();
        link.kernel
            .on_daemon_write(link.clock.now(), &reg, &mut out)
            .map_err(|v| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "bad registration ({v:?}): {} bytes, op {}",
                        reg.len(),
                        reg.first().copied().unwrap_or(0)
                    ),
                )
            })?;
        debug_assert!(link.kernel.registered());
        for k in out {
            if let KernelOut::Deliver { bytes, .. } = k {
                socket::send(link.fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL).map_err(to_io)?;
            }
        }
        Ok(link)
    }
}

impl DaemonLink {
    /// The message layout of this device, for encoding requests and reading replies.
    pub fn layout(&self) -> Layout {
        match self.os {
            Kernel::FreeBsd => Layout::FreeBsd,
            Kernel::Linux => Layout::Linux,
        }
    }

    /// How long after hand-off the host gets E_FAIL: the kernel's deadline.
    pub fn deadline(&self) -> Duration {
        self.kernel.deadline()
    }

    /// Plays a shorter kernel deadline for the requests handed off from now on.
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.kernel.set_deadline(deadline);
    }

    /// One datagram within `timeout`; `Ok(None)` on timeout; an error when gone.
    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        if !wait_readable(&self.fd, timeout)? {
            return Ok(None);
        }
        // One byte more than the largest message, so an oversized one shows.
        let mut buf = vec![0u8; KVP_MSG_SIZE.max(LINUX_KVP_MSG_SIZE) + 1];
        let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(to_io)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "daemon closed the device",
            ));
        }
        buf.truncate(n);
        Ok(Some(buf))
    }

    /// Hands one request to the kernel model and plays it until the host's answer.
    pub fn request(&mut self, bytes: &[u8]) -> io::Result<Answer> {
        match self.play(bytes) {
            Ok(answer) => Ok(answer),
            // A closed, reset or broken connection all mean the daemon went away.
            Err(e) => match e.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe => {
                    self.kernel.on_daemon_death(false);
                    Ok(Answer::Gone)
                }
                _ => Err(e),
            },
        }
    }

    fn play(&mut self, bytes: &[u8]) -> io::Result<Answer> {
        let mut out = Vec::new();
        // Whatever the daemon wrote since the last request (a late reply) goes first.
        while let Some(late) = self.recv(Duration::ZERO)? {
            self.kernel
                .on_daemon_write(self.clock.now(), &late, &mut out)
                .map_err(violation)?;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.kernel.submit(HostRequest {
            id,
            bytes: bytes.to_vec(),
        });
        self.kernel.pump(self.clock.now(), &mut out);
        // Hand-off and receipt of the last datagram, on the wall clock, for `took`.
        let mut handed_off = None;
        let mut received = std::time::Instant::now();
        loop {
            for k in out.drain(..) {
                match k {
                    KernelOut::Deliver { bytes, .. } => {
                        handed_off = Some(std::time::Instant::now());
                        socket::send(self.fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL).map_err(
                            |e| io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string()),
                        )?;
                    }
                    KernelOut::HostReply {
                        id: answered,
                        bytes,
                        timed_out,
                    } if answered == id => {
                        return Ok(match (timed_out, handed_off) {
                            (false, Some(at)) => Answer::Reply {
                                bytes,
                                took: received.saturating_duration_since(at),
                            },
                            _ => Answer::TimedOut {
                                forwarded: handed_off.is_some(),
                            },
                        });
                    }
                    KernelOut::HostReply { id: other, .. } => {
                        return Err(io::Error::other(format!(
                            "the kernel model answered request {other} while {id} was asked"
                        )));
                    }
                    KernelOut::LateReplyDropped { .. } => self.dropped_late += 1,
                    KernelOut::NotForwarded { .. } | KernelOut::Registered => {}
                }
            }
            let Some(deadline) = self.kernel.next_deadline() else {
                return Err(io::Error::other("the kernel model holds no request"));
            };
            let left = deadline.saturating_since(self.clock.now());
            match self.recv(left)? {
                Some(reply) => {
                    received = std::time::Instant::now();
                    self.kernel
                        .on_daemon_write(self.clock.now(), &reply, &mut out)
                        .map_err(violation)?;
                }
                None => self.kernel.on_timer(self.clock.now(), &mut out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};

    #[test]
    fn a_fake_daemon_registers_answers_and_a_late_reply_is_dropped() {
        let path = std::env::temp_dir().join(format!("hvguest-emu-{}.sock", std::process::id()));
        let dev = EmulatedDevice::bind(&path).unwrap();
        let p2 = path.clone();
        let daemon = std::thread::spawn(move || {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            socket::connect(fd.as_raw_fd(), &UnixAddr::new(&p2).unwrap()).unwrap();
            let mut reg = vec![0u8; KVP_MSG_SIZE];
            reg[0] = 4;
            socket::send(fd.as_raw_fd(), &reg, MsgFlags::empty()).unwrap();
            let mut buf = vec![0u8; KVP_MSG_SIZE];
            // First request: answered at once. Second: answered late. Third: at once.
            for delay_ms in [0u64, 300, 0] {
                let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
                std::thread::sleep(Duration::from_millis(delay_ms));
                buf[..4].copy_from_slice(&[0; 4]);
                socket::send(fd.as_raw_fd(), &buf[..n], MsgFlags::empty()).unwrap();
            }
        });
        let mut link = dev.accept(Duration::from_secs(5)).unwrap();
        link.set_deadline(Duration::from_millis(100));
        let req = vec![0u8; KVP_MSG_SIZE];
        assert!(matches!(link.request(&req).unwrap(), Answer::Reply { .. }));
        assert_eq!(
            link.request(&req).unwrap(),
            Answer::TimedOut { forwarded: true }
        );
        // The daemon is still busy: not forwarded; its late reply is dropped meanwhile.
        assert_eq!(
            link.request(&req).unwrap(),
            Answer::TimedOut { forwarded: false }
        );
        std::thread::sleep(Duration::from_millis(300));
        assert!(matches!(link.request(&req).unwrap(), Answer::Reply { .. }));
        assert_eq!(link.dropped_late, 1);
        daemon.join().unwrap();
    }
}
