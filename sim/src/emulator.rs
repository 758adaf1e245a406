//! The emulated `/dev/hv_kvp_dev`, host side: a Unix `SOCK_SEQPACKET` socket on which a
//! real `hv_kvp_daemon --device SOCKET` registers and answers requests, with the FreeBSD
//! kernel's rules played in real time (docs/protocol/kvp.md §2.3): registration first; one
//! request at a time; `E_FAIL` to the host 5 s after hand-off; a late answer is dropped;
//! while the daemon has not answered, a new request is not forwarded at all.
//!
//! Used by the end-to-end tests, `kvp-host` and the benchmark.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hvguest_core::limits::{KVP_KERNEL_DEADLINE, KVP_MSG_SIZE};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr};

/// The listening side: the "device" daemons connect to.
pub struct EmulatedDevice {
    fd: OwnedFd,
    path: PathBuf,
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

/// One connected daemon.
pub struct DaemonLink {
    fd: OwnedFd,
    /// A request timed out and its (late) reply has not come yet.
    busy: bool,
    pub deadline: Duration,
    /// Late replies seen and dropped.
    pub dropped_late: u64,
}

fn to_io(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

/// Waits until `fd` is readable, or `timeout` passes (false then).
fn wait_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms =
            u16::try_from(left.as_millis().min(u128::from(u16::MAX - 1))).unwrap_or(u16::MAX - 1);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(to_io(e)),
        }
    }
}

impl EmulatedDevice {
    /// Listens on `path` (a stale socket file there is replaced).
    pub fn bind(path: &Path) -> io::Result<EmulatedDevice> {
        let _ = std::fs::remove_file(path);
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(to_io)?;
        let addr = UnixAddr::new(path).map_err(to_io)?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(to_io)?;
        socket::listen(&fd, Backlog::new(4).map_err(to_io)?).map_err(to_io)?;
        Ok(EmulatedDevice {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a daemon to open the device, then for its registration (byte 0 = 4).
    pub fn accept(&self, timeout: Duration) -> io::Result<DaemonLink> {
        if !wait_readable(&self.fd, timeout)? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no daemon connected",
            ));
        }
        let raw = socket::accept(self.fd.as_raw_fd()).map_err(to_io)?;
        // SAFETY: accept returned a new descriptor that we now own.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let mut link = DaemonLink {
            fd,
            busy: false,
            deadline: KVP_KERNEL_DEADLINE,
            dropped_late: 0,
        };
        match link.recv(timeout)? {
            Some(reg) if reg.len() == KVP_MSG_SIZE && reg[0] == 4 => Ok(link),
            Some(other) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "bad registration: {} bytes, op {}",
                    other.len(),
                    other.first().copied().unwrap_or(0)
                ),
            )),
            None => Err(io::Error::new(io::ErrorKind::TimedOut, "no registration")),
        }
    }
}

impl Drop for EmulatedDevice {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl DaemonLink {
    /// One datagram within `timeout`; `Ok(None)` on timeout; an error when gone.
    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        if !wait_readable(&self.fd, timeout)? {
            return Ok(None);
        }
        let mut buf = vec![0u8; KVP_MSG_SIZE + 1];
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

    /// Drops a late reply that has arrived by now.
    fn collect_late(&mut self) -> io::Result<()> {
        if self.busy {
            if let Some(_late) = self.recv(Duration::ZERO)? {
                self.busy = false;
                self.dropped_late += 1;
            }
        }
        Ok(())
    }

    /// Hands one request to the daemon and waits for its reply, as the kernel does.
    pub fn request(&mut self, bytes: &[u8]) -> io::Result<Answer> {
        // A closed, reset or broken connection all mean the daemon went away.
        let gone = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => Ok(Answer::Gone),
            _ => Err(e),
        };
        if let Err(e) = self.collect_late() {
            return gone(e);
        }
        if self.busy {
            // Not forwarded: the host waits out the deadline, meanwhile a late reply
            // may come and free the daemon for the next request.
            let start = Instant::now();
            while start.elapsed() < self.deadline {
                match self.recv(self.deadline.saturating_sub(start.elapsed())) {
                    Ok(Some(_)) => {
                        self.busy = false;
                        self.dropped_late += 1;
                    }
                    Ok(None) => {}
                    Err(e) => return gone(e),
                }
            }
            return Ok(Answer::TimedOut { forwarded: false });
        }
        let start = Instant::now();
        if let Err(e) = socket::send(self.fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            return gone(io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string()));
        }
        match self.recv(self.deadline) {
            Ok(Some(reply)) => Ok(Answer::Reply {
                bytes: reply,
                took: start.elapsed(),
            }),
            Ok(None) => {
                self.busy = true;
                Ok(Answer::TimedOut { forwarded: true })
            }
            Err(e) => gone(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        link.deadline = Duration::from_millis(100);
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
