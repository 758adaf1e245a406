//! The emulated VSS devices, host side: two Unix `SOCK_SEQPACKET` sockets standing for
//! `/dev/hv_fsvss_dev` (a real `hv_vss_daemon --device SOCKET` connects) and, if asked,
//! `/dev/hv_appvss_dev` (`hv_vss_app --device SOCKET`), with the FreeBSD kernel's rules
//! played in real time (docs/protocol/vss.md §2, the same rules as [`crate::vss::SimVssKernel`]):
//!
//! * Opening a device registers; there is no registration message. A device is
//!   exclusive: a second connection while one is open is closed at once (EBUSY).
//! * Each request is one 64-byte `hv_vss_opt_msg` whose msgid is the real-time clock in
//!   nanoseconds when the host asked; the daemon counts its own budget from it.
//! * CHECK and FREEZE go to the application helper first, if one is registered, and to
//!   the daemon only if the helper said OK (its status compared as a `u8`, as the app
//!   device does). THAW goes to the daemon first, then to the helper if the daemon said
//!   OK; the host gets the helper's answer.
//! * One 15 s timer for the whole chain; when it fires the host gets `E_FAIL`. A write
//!   that matches nothing (wrong msgid, or after the timer) is read and dropped.
//! * A daemon that opened the device and closed it (died) leaves the KILLED state: every
//!   request fails at once until a daemon opens the device again. A request a party
//!   had already read when it closed can only time out; one it had not read yet goes to
//!   the next process that opens the device in time.
//!
//! Requests are synchronous: one at a time, so the kernel's "dropped while another is
//! pending" never arises here. Connections that arrive between requests are taken at
//! the next request (or by [`EmulatedVss::accept_daemon`]/[`EmulatedVss::accept_app`]).
//!
//! Used by the end-to-end tests and `kvp-host`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hvguest_core::vss::wire::{OptMsg, VssOp, VSS_MSG_SIZE, VSS_SUCCESS};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr};

/// The kernel's timer for one request, from the host's message to its reply
/// (`TIMEOUT_LIMIT`, docs/protocol/vss.md §2.2).
pub const VSS_KERNEL_TIMEOUT: Duration = Duration::from_secs(15);

/// The timer this module plays. Its own unit tests run it short; everyone else gets the
/// kernel's 15 s.
#[cfg(not(test))]
const TIMER: Duration = VSS_KERNEL_TIMEOUT;
#[cfg(test)]
const TIMER: Duration = Duration::from_millis(600);

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

/// What became of one host request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VssAnswer {
    /// An answer reached the host: S_OK when `ok`, else E_FAIL. `took` runs from the
    /// host's message to the reply. `decided_by` is whose write made the reply: the
    /// helper when it refused a CHECK/FREEZE (the daemon never saw it) and for a THAW
    /// the daemon had already carried out; the daemon otherwise.
    Reply {
        ok: bool,
        took: Duration,
        decided_by: Party,
    },
    /// The 15 s timer fired: E_FAIL. `waiting_for` is who held the request then; `None`
    /// when nobody could answer any more (the helper said OK but no daemon was there
    /// to take it on: the kernel's "vss daemon was killed").
    TimedOut { waiting_for: Option<Party> },
    /// No daemon has the device open. `killed`: one had, and closed it (the KILLED
    /// state): E_FAIL at once. Otherwise (never opened) the kernel leaves the message in
    /// its ring and the host gets no answer at all.
    NoDaemon { killed: bool },
}

impl VssAnswer {
    /// What the host saw: true for S_OK.
    pub fn ok(&self) -> bool {
        matches!(self, VssAnswer::Reply { ok: true, .. })
    }
}

fn to_io(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

/// Nanoseconds since the epoch: what the kernel stamps into msgid.
fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(1)
}

/// `poll`'s timeout, rounded up to whole milliseconds and capped to what it can express.
fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d
        .as_nanos()
        .div_ceil(1_000_000)
        .min(u128::from(u16::MAX - 1));
    PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX - 1))
}

/// A listening socket; its file goes when it is dropped.
struct Listener {
    fd: OwnedFd,
    path: PathBuf,
}

impl Listener {
    fn bind(path: &Path) -> io::Result<Listener> {
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
        Ok(Listener {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Waits up to `timeout` for a connection to be pending.
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, poll_timeout(left)) {
                Ok(0) if left.is_zero() => return Ok(false),
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(to_io(e)),
            }
        }
    }

    /// A pending connection, if any, without waiting.
    fn take(&self) -> io::Result<Option<OwnedFd>> {
        if !self.wait(Duration::ZERO)? {
            return Ok(None);
        }
        match socket::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 returned a new descriptor that we now own.
            Ok(raw) => Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) })),
            Err(Errno::EAGAIN | Errno::ECONNABORTED | Errno::EINTR) => Ok(None),
            Err(e) => Err(to_io(e)),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What one non-blocking read of a connection gave.
enum Recv {
    Nothing,
    /// A 64-byte message, or `None` for a datagram of another size.
    Message(Option<OptMsg>),
    /// The other side closed the device (or died).
    Closed,
}

fn recv_now(fd: &OwnedFd) -> io::Result<Recv> {
    let mut buf = [0u8; VSS_MSG_SIZE + 1];
    loop {
        return match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => Ok(Recv::Closed),
            Ok(n) => Ok(Recv::Message(OptMsg::decode(&buf[..n]))),
            Err(Errno::EAGAIN) => Ok(Recv::Nothing),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET | Errno::ENOTCONN | Errno::EPIPE) => Ok(Recv::Closed),
            Err(e) => Err(to_io(e)),
        };
    }
}

/// Where the current request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Queued for `party`; `delivered` once it has read it (been sent it).
    With { party: Party, delivered: bool },
    /// The helper said OK and no daemon was there: only the timer ends it.
    Orphaned,
}

/// Both devices, as the kernel sees them.
pub struct EmulatedVss {
    fs: Listener,
    app_listener: Option<Listener>,
    daemon: Option<OwnedFd>,
    daemon_ever: bool,
    app: Option<OwnedFd>,
    /// Writes read and dropped: a wrong msgid, after the timer, or not 64 bytes.
    pub dropped: u64,
    /// Connections closed at once because the device was already open (EBUSY).
    pub refused: u64,
    /// The msgid of the last request handed to a party.
    pub last_msgid: u64,
}

impl EmulatedVss {
    /// Listens on `fs_socket` (the daemon's device) and, if given, `app_socket` (the
    /// helper's). Stale socket files there are replaced.
    pub fn bind(fs_socket: &Path, app_socket: Option<&Path>) -> io::Result<EmulatedVss> {
        Ok(EmulatedVss {
            fs: Listener::bind(fs_socket)?,
            app_listener: app_socket.map(Listener::bind).transpose()?,
            daemon: None,
            daemon_ever: false,
            app: None,
            dropped: 0,
            refused: 0,
            last_msgid: 0,
        })
    }

    pub fn fs_path(&self) -> &Path {
        &self.fs.path
    }

    pub fn app_path(&self) -> Option<&Path> {
        self.app_listener.as_ref().map(|l| l.path.as_path())
    }

    fn slot(&mut self, party: Party) -> &mut Option<OwnedFd> {
        match party {
            Party::App => &mut self.app,
            Party::Daemon => &mut self.daemon,
        }
    }

    fn listener(&self, party: Party) -> Option<&Listener> {
        match party {
            Party::App => self.app_listener.as_ref(),
            Party::Daemon => Some(&self.fs),
        }
    }

    /// Reads whatever `party` has written; each write goes to `on_write` (which says
    /// whether it was the awaited answer). Notices a closed device.
    fn read_all(
        &mut self,
        party: Party,
        mut on_write: impl FnMut(Option<OptMsg>) -> bool,
    ) -> io::Result<Vec<OptMsg>> {
        let mut wanted = Vec::new();
        while let Some(fd) = self.slot(party).as_ref() {
            match recv_now(fd)? {
                Recv::Nothing => break,
                Recv::Closed => *self.slot(party) = None,
                Recv::Message(m) => {
                    if on_write(m) {
                        wanted.extend(m);
                    } else {
                        self.dropped += 1;
                    }
                }
            }
        }
        Ok(wanted)
    }

    /// Drops late writes of `party` and notices whether it closed the device.
    fn refresh(&mut self, party: Party) -> io::Result<()> {
        self.read_all(party, |_| false).map(drop)
    }

    /// Takes a pending connection for `party`: registers it if the device is free,
    /// refuses it (EBUSY) if not. Returns whether one was registered.
    fn take_pending(&mut self, party: Party) -> io::Result<bool> {
        let Some(new) = self
            .listener(party)
            .map(Listener::take)
            .transpose()?
            .flatten()
        else {
            return Ok(false);
        };
        self.refresh(party)?;
        if self.slot(party).is_some() {
            self.refused += 1;
            drop(new);
            return Ok(false);
        }
        *self.slot(party) = Some(new);
        if party == Party::Daemon {
            self.daemon_ever = true;
        }
        Ok(true)
    }

    fn accept(&mut self, party: Party, timeout: Duration) -> io::Result<()> {
        let Some(listener) = self.listener(party) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no application device was bound",
            ));
        };
        if !listener.wait(timeout)? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} did not open the device", party.name()),
            ));
        }
        if self.take_pending(party)? {
            Ok(())
        } else {
            // The device was still open: the kernel's EBUSY.
            Err(io::Error::from_raw_os_error(nix::libc::EBUSY))
        }
    }

    /// Waits up to `timeout` for a daemon to open the device (again, after one died).
    /// Fails with EBUSY if the connection came while another daemon still has it open.
    pub fn accept_daemon(&mut self, timeout: Duration) -> io::Result<()> {
        self.accept(Party::Daemon, timeout)
    }

    /// Waits up to `timeout` for the application helper to open its device. Not needed
    /// for a helper that connects later: requests take pending connections themselves.
    pub fn accept_app(&mut self, timeout: Duration) -> io::Result<()> {
        self.accept(Party::App, timeout)
    }

    /// Takes pending connections and notices closed ones.
    fn poll_devices(&mut self) -> io::Result<()> {
        for party in [Party::Daemon, Party::App] {
            self.refresh(party)?;
            self.take_pending(party)?;
        }
        Ok(())
    }

    /// Whether a daemon has the device open now.
    pub fn daemon_connected(&mut self) -> io::Result<bool> {
        self.poll_devices()?;
        Ok(self.daemon.is_some())
    }

    /// Whether the application helper has its device open now.
    pub fn app_connected(&mut self) -> io::Result<bool> {
        self.poll_devices()?;
        Ok(self.app.is_some())
    }

    /// Sleeps until a connection or a listener is readable, at most `timeout`.
    fn wait_any(&self, timeout: Duration) -> io::Result<()> {
        let mut fds: Vec<PollFd> = [
            self.daemon.as_ref(),
            self.app.as_ref(),
            Some(&self.fs.fd),
            self.app_listener.as_ref().map(|l| &l.fd),
        ]
        .into_iter()
        .flatten()
        .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
        .collect();
        match poll(&mut fds, poll_timeout(timeout)) {
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(to_io(e)),
        }
    }

    /// One host request, played through as the kernel does, until the host's reply.
    pub fn request(&mut self, op: VssOp) -> io::Result<VssAnswer> {
        self.poll_devices()?;
        if self.daemon.is_none() {
            return Ok(VssAnswer::NoDaemon {
                killed: self.daemon_ever,
            });
        }
        let start = Instant::now();
        let deadline = start + TIMER;
        let msgid = realtime_ns().max(1);
        self.last_msgid = msgid;
        let msg = OptMsg {
            opt: op as u32,
            status: 0,
            msgid,
        }
        .encode();
        let first = if self.app.is_some() && op != VssOp::Thaw {
            Party::App
        } else {
            Party::Daemon
        };
        let mut stage = Stage::With {
            party: first,
            delivered: false,
        };
        // A THAW the daemon has carried out: the helper's answer goes to the host.
        let mut after_daemon = false;
        loop {
            if let Stage::With {
                party,
                delivered: false,
            } = stage
            {
                if let Some(fd) = self.slot(party).as_ref() {
                    match socket::send(fd.as_raw_fd(), &msg, MsgFlags::MSG_NOSIGNAL) {
                        Ok(_) => {
                            stage = Stage::With {
                                party,
                                delivered: true,
                            }
                        }
                        // Gone: the request stays queued for whoever opens the device next.
                        Err(_) => *self.slot(party) = None,
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(VssAnswer::TimedOut {
                    waiting_for: match stage {
                        Stage::With { party, .. } => Some(party),
                        Stage::Orphaned => None,
                    },
                });
            }
            self.wait_any(deadline - now)?;
            for party in [Party::Daemon, Party::App] {
                let ours = |m: Option<OptMsg>| {
                    stage
                        == Stage::With {
                            party,
                            delivered: true,
                        }
                        && m.is_some_and(|m| m.msgid == msgid)
                };
                let answers = self.read_all(party, ours)?;
                let Some(&m) = answers.first() else {
                    continue;
                };
                // Only the first answer finds the request; the kernel drops the others.
                self.dropped += answers.len() as u64 - 1;
                let took = start.elapsed();
                match party {
                    Party::App => {
                        // The app device keeps only the low byte of the status.
                        let ok = (m.status & 0xff) as u8 == VSS_SUCCESS as u8;
                        if after_daemon || !ok {
                            return Ok(VssAnswer::Reply {
                                ok,
                                took,
                                decided_by: Party::App,
                            });
                        }
                        self.refresh(Party::Daemon)?;
                        stage = if self.daemon.is_some() {
                            Stage::With {
                                party: Party::Daemon,
                                delivered: false,
                            }
                        } else {
                            Stage::Orphaned
                        };
                    }
                    Party::Daemon => {
                        let ok = m.status == VSS_SUCCESS;
                        if op == VssOp::Thaw && ok {
                            self.refresh(Party::App)?;
                            if self.app.is_some() {
                                after_daemon = true;
                                stage = Stage::With {
                                    party: Party::App,
                                    delivered: false,
                                };
                                continue;
                            }
                        }
                        return Ok(VssAnswer::Reply {
                            ok,
                            took,
                            decided_by: Party::Daemon,
                        });
                    }
                }
            }
            // A process that opened a device meanwhile may take a request it holds.
            for party in [Party::Daemon, Party::App] {
                self.take_pending(party)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Sender};

    /// A fake daemon or helper: a connection to the emulated device.
    struct Fake {
        fd: OwnedFd,
    }

    impl Fake {
        fn connect(path: &Path) -> Fake {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            socket::connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
            Fake { fd }
        }

        /// The next request; `None` when the device was closed on us.
        fn read(&self) -> Option<OptMsg> {
            let mut buf = [0u8; VSS_MSG_SIZE];
            let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
            (n != 0).then(|| OptMsg::decode(&buf[..n]).expect("64 bytes"))
        }

        fn write(&self, m: OptMsg) {
            socket::send(self.fd.as_raw_fd(), &m.encode(), MsgFlags::empty()).unwrap();
        }
    }

    /// Serves `n` requests: reports each to `log` as `(who, op)`, waits `delay(op)`,
    /// answers with `status(op)`.
    fn serve(
        who: &'static str,
        fake: Fake,
        n: usize,
        delay: impl Fn(u32) -> Duration + Send + 'static,
        status: impl Fn(u32) -> u32 + Send + 'static,
        log: Sender<(&'static str, u32)>,
    ) -> std::thread::JoinHandle<Fake> {
        std::thread::spawn(move || {
            for _ in 0..n {
                let m = fake.read().expect("a request");
                assert_eq!(m.status, 0);
                log.send((who, m.opt)).unwrap();
                std::thread::sleep(delay(m.opt));
                fake.write(OptMsg {
                    status: status(m.opt),
                    ..m
                });
            }
            fake
        })
    }

    fn paths(name: &str) -> (PathBuf, PathBuf) {
        let base =
            std::env::temp_dir().join(format!("hvguest-vssemu-{}-{name}", std::process::id()));
        (base.with_extension("fs"), base.with_extension("app"))
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn the_daemon_alone_answers_and_msgid_is_the_real_time_clock() {
        let (fs, _) = paths("alone");
        let mut k = EmulatedVss::bind(&fs, None).unwrap();
        assert_eq!(
            k.request(VssOp::Check).unwrap(),
            VssAnswer::NoDaemon { killed: false }
        );
        let fake = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        let before = realtime_ns();
        let t = std::thread::spawn(move || {
            let m = fake.read().unwrap();
            // A wrong msgid first: read and dropped; then the right answer, failing.
            fake.write(OptMsg {
                msgid: m.msgid + 1,
                ..m.reply(true)
            });
            fake.write(m.reply(false));
            (m, fake)
        });
        let a = k.request(VssOp::Freeze).unwrap();
        let (m, _fake) = t.join().unwrap();
        assert!(matches!(
            a,
            VssAnswer::Reply {
                ok: false,
                decided_by: Party::Daemon,
                ..
            }
        ));
        assert_eq!(m.opt, VssOp::Freeze as u32);
        assert_eq!(m.msgid, k.last_msgid);
        assert!(m.msgid >= before && m.msgid <= realtime_ns());
        assert_eq!(k.dropped, 1);
    }

    #[test]
    fn check_and_freeze_go_to_the_app_first_thaw_to_the_daemon_first() {
        let (fs, app) = paths("order");
        let mut k = EmulatedVss::bind(&fs, Some(&app)).unwrap();
        let (tx, rx) = channel();
        let d = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        let a = Fake::connect(&app);
        k.accept_app(WAIT).unwrap();
        let ok = |_| VSS_SUCCESS;
        let dt = serve("daemon", d, 3, |_| Duration::ZERO, ok, tx.clone());
        let at = serve("app", a, 3, |_| Duration::from_millis(20), ok, tx);
        for op in [VssOp::Check, VssOp::Freeze, VssOp::Thaw] {
            let answer = k.request(op).unwrap();
            let decided_by = if op == VssOp::Thaw {
                Party::App
            } else {
                Party::Daemon
            };
            match answer {
                VssAnswer::Reply {
                    ok: true,
                    took,
                    decided_by: d,
                } => {
                    assert_eq!(d, decided_by);
                    assert!(took >= Duration::from_millis(20), "{took:?}");
                }
                other => panic!("{op:?}: {other:?}"),
            }
        }
        dt.join().unwrap();
        at.join().unwrap();
        let seen: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            seen,
            [
                ("app", 1),
                ("daemon", 1),
                ("app", 2),
                ("daemon", 2),
                ("daemon", 3),
                ("app", 3)
            ]
        );
    }

    #[test]
    fn an_app_refusal_never_reaches_the_daemon_and_only_its_low_byte_counts() {
        let (fs, app) = paths("refuse");
        let mut k = EmulatedVss::bind(&fs, Some(&app)).unwrap();
        let (tx, rx) = channel();
        let d = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        let a = Fake::connect(&app);
        k.accept_app(WAIT).unwrap();
        // FREEZE: 0x100 is success on the app device (u8); CHECK: 1 is a refusal.
        let app_status = |op| if op == VssOp::Check as u32 { 1 } else { 0x100 };
        let at = serve("app", a, 2, |_| Duration::ZERO, app_status, tx.clone());
        let dt = serve("daemon", d, 1, |_| Duration::ZERO, |_| VSS_SUCCESS, tx);
        assert!(matches!(
            k.request(VssOp::Check).unwrap(),
            VssAnswer::Reply {
                ok: false,
                decided_by: Party::App,
                ..
            }
        ));
        assert!(k.request(VssOp::Freeze).unwrap().ok());
        at.join().unwrap();
        dt.join().unwrap();
        let seen: Vec<_> = rx.try_iter().collect();
        assert_eq!(seen, [("app", 1), ("app", 2), ("daemon", 2)]);
    }

    #[test]
    fn a_failed_daemon_thaw_is_not_sent_to_the_app() {
        let (fs, app) = paths("thawfail");
        let mut k = EmulatedVss::bind(&fs, Some(&app)).unwrap();
        let d = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        let a = Fake::connect(&app);
        k.accept_app(WAIT).unwrap();
        let (tx, _rx) = channel();
        let dt = serve("daemon", d, 1, |_| Duration::ZERO, |_| 7, tx);
        assert!(matches!(
            k.request(VssOp::Thaw).unwrap(),
            VssAnswer::Reply {
                ok: false,
                decided_by: Party::Daemon,
                ..
            }
        ));
        dt.join().unwrap();
        let mut buf = [0u8; VSS_MSG_SIZE];
        assert_eq!(
            socket::recv(a.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT),
            Err(Errno::EAGAIN),
            "the app was sent nothing"
        );
    }

    #[test]
    fn the_timer_fails_the_whole_chain_and_a_late_answer_is_dropped() {
        let (fs, app) = paths("timer");
        let mut k = EmulatedVss::bind(&fs, Some(&app)).unwrap();
        let (tx, rx) = channel();
        let d = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        let a = Fake::connect(&app);
        k.accept_app(WAIT).unwrap();
        // For the FREEZE, the app takes 60% of the timer and so does the daemon: over,
        // in all, though each alone is within it. The CHECK is answered at once.
        let part = move |op| {
            if op == VssOp::Freeze as u32 {
                TIMER * 6 / 10
            } else {
                Duration::ZERO
            }
        };
        let at = serve("app", a, 2, part, |_| 0, tx.clone());
        let dt = serve("daemon", d, 2, part, |_| 0, tx);
        let start = Instant::now();
        assert_eq!(
            k.request(VssOp::Freeze).unwrap(),
            VssAnswer::TimedOut {
                waiting_for: Some(Party::Daemon)
            }
        );
        assert!(start.elapsed() >= TIMER);
        // The daemon's late answer arrives during the next request and is dropped;
        // the next request is served normally.
        assert!(k.request(VssOp::Check).unwrap().ok());
        at.join().unwrap();
        dt.join().unwrap();
        assert_eq!(k.dropped, 1);
        assert_eq!(rx.try_iter().count(), 4);
    }

    #[test]
    fn a_dead_daemon_fails_requests_at_once_until_another_opens_the_device() {
        let (fs, _) = paths("killed");
        let mut k = EmulatedVss::bind(&fs, None).unwrap();
        let d = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        // A second daemon while the first has the device: refused.
        let second = Fake::connect(&fs);
        let e = k.accept_daemon(WAIT).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EBUSY));
        assert_eq!(second.read(), None);
        assert_eq!(k.refused, 1);
        drop(d);
        let start = Instant::now();
        assert_eq!(
            k.request(VssOp::Freeze).unwrap(),
            VssAnswer::NoDaemon { killed: true }
        );
        assert!(start.elapsed() < Duration::from_millis(100));
        assert!(!k.daemon_connected().unwrap());
        // A restarted daemon is accepted and served.
        let again = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        let (tx, _rx) = channel();
        let t = serve("daemon", again, 1, |_| Duration::ZERO, |_| 0, tx);
        assert!(k.request(VssOp::Check).unwrap().ok());
        t.join().unwrap();
        // One connecting between requests is taken by the next request.
        drop(k.daemon.take());
        let later = Fake::connect(&fs);
        let (tx, _rx) = channel();
        let t = serve("daemon", later, 1, |_| Duration::ZERO, |_| 0, tx);
        assert!(k.request(VssOp::Check).unwrap().ok());
        t.join().unwrap();
    }

    #[test]
    fn a_daemon_dying_with_the_request_read_leaves_only_the_timer() {
        let (fs, _) = paths("dies");
        let mut k = EmulatedVss::bind(&fs, None).unwrap();
        let d = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        let t = std::thread::spawn(move || {
            d.read().unwrap();
            drop(d);
        });
        assert_eq!(
            k.request(VssOp::Freeze).unwrap(),
            VssAnswer::TimedOut {
                waiting_for: Some(Party::Daemon)
            }
        );
        t.join().unwrap();
        assert_eq!(
            k.request(VssOp::Thaw).unwrap(),
            VssAnswer::NoDaemon { killed: true }
        );
    }

    #[test]
    fn the_app_saying_ok_with_no_daemon_waits_for_the_timer() {
        let (fs, app) = paths("orphan");
        let mut k = EmulatedVss::bind(&fs, Some(&app)).unwrap();
        let d = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        let a = Fake::connect(&app);
        k.accept_app(WAIT).unwrap();
        let t = std::thread::spawn(move || {
            let m = a.read().unwrap();
            // The daemon dies while the app works.
            drop(d);
            std::thread::sleep(Duration::from_millis(50));
            a.write(m.reply(true));
            a
        });
        assert_eq!(
            k.request(VssOp::Freeze).unwrap(),
            VssAnswer::TimedOut { waiting_for: None }
        );
        let _a = t.join().unwrap();
    }

    #[test]
    fn a_closed_app_device_is_skipped() {
        let (fs, app) = paths("noapp");
        let mut k = EmulatedVss::bind(&fs, Some(&app)).unwrap();
        let d = Fake::connect(&fs);
        k.accept_daemon(WAIT).unwrap();
        let a = Fake::connect(&app);
        k.accept_app(WAIT).unwrap();
        assert!(k.app_connected().unwrap());
        drop(a);
        let (tx, rx) = channel();
        let t = serve("daemon", d, 3, |_| Duration::ZERO, |_| 0, tx);
        for op in [VssOp::Check, VssOp::Freeze, VssOp::Thaw] {
            assert!(matches!(
                k.request(op).unwrap(),
                VssAnswer::Reply {
                    ok: true,
                    decided_by: Party::Daemon,
                    ..
                }
            ));
        }
        t.join().unwrap();
        assert_eq!(rx.try_iter().count(), 3);
        assert!(!k.app_connected().unwrap());
    }
}
