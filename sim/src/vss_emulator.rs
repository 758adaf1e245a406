//! The emulated VSS devices, host side: two Unix `SOCK_SEQPACKET` sockets standing for
//! `/dev/hv_fsvss_dev` (a real `hv_vss_daemon --device SOCKET` connects) and, if asked,
//! `/dev/hv_appvss_dev` (`hv_vss_app --device SOCKET`). The kernel's rules (docs/protocol/vss.md
//! §2: opening registers and is exclusive, the KILLED state, app before daemon for CHECK
//! and FREEZE and daemon before app for THAW, one 15 s timer for the chain, writes that
//! match nothing dropped, an unread request left for the next opener) are
//! [`SimVssKernel`]'s, the model the simulator uses, driven here in real time: this module
//! only moves 64-byte datagrams and connections between the sockets and the model, stamps
//! msgid with the real-time clock, and polls until the model's next deadline.
//!
//! Requests are synchronous: one at a time, so the kernel's "dropped while another is
//! pending" never arises here. Connections that arrive between requests are taken at
//! the next request (or by [`EmulatedVss::accept_daemon`]/[`EmulatedVss::accept_app`]).
//!
//! Used by the end-to-end tests and `kvp-host`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hvguest_core::vss::wire::{OptMsg, VssOp, VSS_MSG_SIZE};
use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags};

use crate::realtime::{to_io, wait_any, Clock, Listener};
pub use crate::vss_kernel::Party;
use crate::vss_kernel::{KOut, SimVssKernel};
pub use hvguest_core::limits::VSS_KERNEL_DEADLINE;

/// The timer this module plays. Its own unit tests run it short; everyone else gets the
/// kernel's 15 s.
#[cfg(not(test))]
const TIMER: Duration = VSS_KERNEL_DEADLINE;
#[cfg(test)]
const TIMER: Duration = Duration::from_millis(600);

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

/// Nanoseconds since the epoch: what the kernel stamps into msgid.
fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(1)
}

/// What one non-blocking read of a connection gave.
enum Recv {
    Nothing,
    /// One datagram (64 bytes from a well-behaved party; anything else is the model's
    /// to judge).
    Message(Vec<u8>),
    /// The other side closed the device (or died).
    Closed,
}

fn recv_now(fd: &OwnedFd, flags: MsgFlags) -> io::Result<Recv> {
    let mut buf = [0u8; VSS_MSG_SIZE + 1];
    loop {
        return match socket::recv(fd.as_raw_fd(), &mut buf, flags | MsgFlags::MSG_DONTWAIT) {
            Ok(0) => Ok(Recv::Closed),
            Ok(n) => Ok(Recv::Message(buf[..n].to_vec())),
            Err(Errno::EAGAIN) => Ok(Recv::Nothing),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET | Errno::ENOTCONN | Errno::EPIPE) => Ok(Recv::Closed),
            Err(e) => Err(to_io(e)),
        };
    }
}

/// What made the kernel model speak, which says what its host reply means here.
#[derive(Clone, Copy, Debug)]
enum Cause {
    /// The host's request itself: a reply at once is the KILLED state's.
    Host,
    /// A write by this party.
    Write(Party),
    /// The timer, with who held the request when it fired.
    Timer(Option<Party>),
    /// A device opened.
    Open,
}

/// Both devices, as the kernel sees them.
pub struct EmulatedVss {
    fs: Listener,
    app_listener: Option<Listener>,
    /// The connections the model counts as open devices.
    daemon: Option<OwnedFd>,
    app: Option<OwnedFd>,
    kernel: SimVssKernel,
    clock: Clock,
    next_host_id: u64,
    /// When the current request's host message came, on the wall clock, for `took`.
    asked: std::time::Instant,
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
            app: None,
            kernel: SimVssKernel::with_timeout(TIMER),
            clock: Clock::new(),
            next_host_id: 0,
            asked: std::time::Instant::now(),
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

    /// The kernel's timer for one request (15 s).
    pub fn timeout(&self) -> Duration {
        self.kernel.timeout()
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

    /// `party`'s connection is gone: the model hears that its device closed.
    fn closed(&mut self, party: Party) {
        *self.slot(party) = None;
        self.kernel.close(party);
    }

    /// Carries out what the model said; a host reply among it is returned.
    fn settle(&mut self, out: Vec<KOut>, cause: Cause) -> io::Result<Option<VssAnswer>> {
        let mut answer = None;
        for k in out {
            match k {
                KOut::ToDaemon(bytes) => self.hand(Party::Daemon, &bytes)?,
                // Only Linux's kernel model hands these; this one is FreeBSD's.
                KOut::ToLinuxDaemon(_) => self.dropped += 1,
                KOut::ToApp(bytes) => self.hand(Party::App, &bytes)?,
                KOut::Ignored { .. } => self.dropped += 1,
                KOut::Dropped { .. } => answer = Some(VssAnswer::NoDaemon { killed: false }),
                KOut::HostReply { ok, timed_out, .. } => {
                    answer = Some(match (cause, timed_out) {
                        (Cause::Timer(waiting_for), true) => VssAnswer::TimedOut { waiting_for },
                        (Cause::Host, false) => VssAnswer::NoDaemon { killed: true },
                        (Cause::Write(decided_by), false) => VssAnswer::Reply {
                            ok,
                            took: self.asked.elapsed(),
                            decided_by,
                        },
                        (cause, timed_out) => {
                            return Err(io::Error::other(format!(
                                "the kernel model answered the host on {cause:?} \
                                 (timed out: {timed_out})"
                            )))
                        }
                    });
                }
            }
        }
        Ok(answer)
    }

    /// Hands a request to `party`: one datagram. If its connection is gone, the model
    /// keeps the request for whoever opens the device next.
    fn hand(&mut self, party: Party, bytes: &[u8; VSS_MSG_SIZE]) -> io::Result<()> {
        if let Some(m) = OptMsg::decode(bytes) {
            self.last_msgid = m.msgid;
        }
        let sent = self
            .slot(party)
            .as_ref()
            .map(|fd| socket::send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL));
        match sent {
            Some(Ok(_)) => Ok(()),
            Some(Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)) | None => {
                *self.slot(party) = None;
                self.kernel.undelivered(party);
                Ok(())
            }
            Some(Err(e)) => Err(to_io(e)),
        }
    }

    /// Notices whether `party` closed its device, without taking any of its writes.
    fn notice_close(&mut self, party: Party) -> io::Result<()> {
        if let Some(fd) = self.slot(party).as_ref() {
            if let Recv::Closed = recv_now(fd, MsgFlags::MSG_PEEK)? {
                self.closed(party);
            }
        }
        Ok(())
    }

    /// Feeds everything `party` has written to the model, one write at a time, until it
    /// has nothing more or the host got its answer. Notices a closed device.
    fn read(&mut self, party: Party) -> io::Result<Option<VssAnswer>> {
        while let Some(fd) = self.slot(party).as_ref() {
            match recv_now(fd, MsgFlags::empty())? {
                Recv::Nothing => break,
                Recv::Closed => self.closed(party),
                Recv::Message(bytes) => {
                    // The other device's state as of now (the kernel knows at once when
                    // a device closes; we learn it by reading).
                    let other = match party {
                        Party::App => Party::Daemon,
                        Party::Daemon => Party::App,
                    };
                    self.notice_close(other)?;
                    let mut out = Vec::new();
                    match party {
                        Party::App => self.kernel.app_write(&bytes, &mut out),
                        Party::Daemon => self.kernel.daemon_write(&bytes, &mut out),
                    }
                    if let Some(answer) = self.settle(out, Cause::Write(party))? {
                        return Ok(Some(answer));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Takes a pending connection for `party`: the model registers it if the device is
    /// free, else it is refused (EBUSY). Returns whether one was registered.
    fn take_pending(&mut self, party: Party) -> io::Result<bool> {
        let Some(new) = self
            .listener(party)
            .map(Listener::take)
            .transpose()?
            .flatten()
        else {
            return Ok(false);
        };
        self.notice_close(party)?;
        let mut out = Vec::new();
        if !self.kernel.open(party, &mut out) {
            self.refused += 1;
            drop(new);
            return Ok(false);
        }
        *self.slot(party) = Some(new);
        // Opening hands over nothing outside a request; inside one the caller's loop
        // settles it (an unread request going to the newcomer).
        if self.settle(out, Cause::Open)?.is_some() {
            return Err(io::Error::other(
                "the kernel model answered the host on open",
            ));
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

    /// Feeds writes, notices closed devices and takes pending connections. Returns the
    /// host's answer if one came.
    fn poll_devices(&mut self) -> io::Result<Option<VssAnswer>> {
        for party in [Party::Daemon, Party::App] {
            if let Some(answer) = self.read(party)? {
                return Ok(Some(answer));
            }
            self.take_pending(party)?;
        }
        Ok(None)
    }

    /// Between requests: whatever comes is late, and no answer can.
    fn poll_idle(&mut self) -> io::Result<()> {
        match self.poll_devices()? {
            None => Ok(()),
            Some(a) => Err(io::Error::other(format!(
                "the kernel model answered a host that asked nothing: {a:?}"
            ))),
        }
    }

    /// Whether a daemon has the device open now.
    pub fn daemon_connected(&mut self) -> io::Result<bool> {
        self.poll_idle()?;
        Ok(self.kernel.is_open(Party::Daemon))
    }

    /// The device fails under the daemon: its connection is closed from our side (the
    /// daemon reads end-of-file, as from a device that went away) and the model hears
    /// that the daemon's device closed.
    pub fn disconnect_daemon(&mut self) {
        self.closed(Party::Daemon);
    }

    /// Whether the application helper has its device open now.
    pub fn app_connected(&mut self) -> io::Result<bool> {
        self.poll_idle()?;
        Ok(self.kernel.is_open(Party::App))
    }

    /// One host request, played through the kernel model until the host's reply.
    pub fn request(&mut self, op: VssOp) -> io::Result<VssAnswer> {
        self.poll_idle()?;
        self.next_host_id += 1;
        self.asked = std::time::Instant::now();
        let mut out = Vec::new();
        self.kernel.host_stamped(
            self.clock.now(),
            realtime_ns(),
            self.next_host_id,
            op,
            &mut out,
        );
        if let Some(answer) = self.settle(out, Cause::Host)? {
            return Ok(answer);
        }
        loop {
            let now = self.clock.now();
            let holder = self.kernel.holder();
            let mut out = Vec::new();
            self.kernel.on_timer(now, &mut out);
            if let Some(answer) = self.settle(out, Cause::Timer(holder))? {
                return Ok(answer);
            }
            let Some(deadline) = self.kernel.next_deadline() else {
                return Err(io::Error::other("the kernel model holds no request"));
            };
            let fds: Vec<&OwnedFd> = [
                self.daemon.as_ref(),
                self.app.as_ref(),
                Some(&self.fs.fd),
                self.app_listener.as_ref().map(|l| &l.fd),
            ]
            .into_iter()
            .flatten()
            .collect();
            wait_any(&fds, deadline.saturating_since(now))?;
            if let Some(answer) = self.poll_devices()? {
                return Ok(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvguest_core::vss::wire::VSS_SUCCESS;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};
    use std::path::PathBuf;
    use std::sync::mpsc::{channel, Sender};
    use std::time::Instant;

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
        k.kernel.close(Party::Daemon);
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
