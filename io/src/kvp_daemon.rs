//! The KVP daemon's event loop: one mio `Poll` over the device, the signal pipe and the
//! lanes' waker, with the core's next deadline as the timeout.
//!
//! The loop makes no protocol decision. Per readiness it reads the device exactly once
//! and feeds the bytes to the machine; it hands every effect to its lane and every result
//! back; it writes exactly the bytes the machine emits, once each. On FreeBSD mio is
//! built with its poll(2) backend (the hv devices do not support kqueue) and the device
//! is re-registered after every event so that readiness is reported again.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

use hvguest_core::kvp::auto::SystemInfo;
use hvguest_core::kvp::describe;
use hvguest_core::kvp::effect::{EffectResult, FileId, Input, IoError};
use hvguest_core::kvp::jobs::JobEvent;
use hvguest_core::kvp::machine::{Event, KvpConfig, KvpMachine, Output};
use hvguest_core::kvp::record::PoolIssue;
use hvguest_core::kvp::recording::describe_request;
use hvguest_core::kvp::wire::PoolId;
use hvguest_core::limits::{DEVICE_REOPEN_MAX_PAUSE, HOSTNAME_REFRESH, MAX_POOL_RECORDS};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::clock;
use crate::device::{DeviceError, KvpDevice, ReadOutcome, Reopen};
use crate::files::{PoolFileError, PoolFiles};
use crate::lanes::Lanes;
use crate::logging::{Level, Logger};
use crate::recorder::{RecordError, Recorder};
use crate::set_ip::SetIpPaths;
use crate::signals::SignalPipe;
use crate::sysinfo;

const DEVICE: Token = Token(0);
/// The kernel's answer to a write it expects no message for (both systems).
const EINVAL: i32 = 22;
const SIGNAL: Token = Token(1);
const WAKE: Token = Token(2);

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// What kvp.conf decided (the core acts on it; `stamp_granularity` is set here).
    pub kvp: KvpConfig,
    /// kvp.conf's `pool_mode`: the pool files' mode, set at start when given.
    pub pool_mode: Option<crate::kvp_config::PoolMode>,
    pub device: PathBuf,
    pub pool_dir: PathBuf,
    /// Where SET_IP_INFO's script, and on Linux its interfaces, `nmcli` and keyfiles,
    /// are.
    pub set_ip: SetIpPaths,
    pub record: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    PoolFiles(#[from] PoolFileError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("event loop: {0}")]
    Poll(std::io::Error),
    #[error("signals: {0}")]
    Signals(nix::Error),
    #[error("device read failed: {0}")]
    DeviceRead(std::io::Error),
    #[error("device write failed: {0}")]
    DeviceWrite(std::io::Error),
    #[error("the device was closed by the other side")]
    DeviceClosed,
    #[error(
        "{device} is this system's KVP device, which carries {system} messages, not {asked}: \
         --layout {asked} is for an emulated device"
    )]
    WrongLayout {
        device: String,
        system: &'static str,
        asked: &'static str,
    },
}

/// Keeps the host name fresh off the request path: DNS can take longer than the
/// kernel's 5 s (problem K2), so the machine always answers from the last lookup.
fn spawn_fqdn_refresh(waker: Arc<Waker>) -> std::io::Result<Receiver<SystemInfo>> {
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("kvp-fqdn".into())
        .spawn(move || loop {
            let info = sysinfo::system_info(&sysinfo::lookup_fqdn());
            if tx.send(info).is_err() {
                return;
            }
            // A failed wake means the poll is gone, and the loop with it.
            let _ = waker.wake();
            std::thread::sleep(HOSTNAME_REFRESH);
        })?;
    Ok(rx)
}

struct Loop<'a> {
    machine: KvpMachine,
    /// `None` while the device is closed after an error and not open again yet.
    device: Option<KvpDevice>,
    /// The layout's `reopens_after_error`: a failed write then closes the device too.
    reopens: bool,
    /// A write that failed the way a torn-down device fails, for the loop to handle.
    write_failed: Option<std::io::Error>,
    lanes: Lanes,
    log: &'a Logger,
    recorder: Option<Recorder>,
    exit: bool,
    /// Inputs produced while executing outputs (the result of an effect run here, or
    /// the failure of one no lane could take).
    later: Vec<Input>,
    /// Per pool, the record count of the last warning that its file holds more records
    /// than we read: said again only when it changes, not at every reload.
    over_limit: [Option<usize>; 5],
}

impl Loop<'_> {
    /// One input, then every output it causes, executed in order.
    fn step(&mut self, input: Input) {
        let now = clock::now();
        let recorded = match (self.recorder.as_mut(), &input) {
            (Some(r), Input::DeviceRead(bytes)) => r.message(now, true, bytes),
            (Some(r), Input::SystemInfo(info)) => r.info(now, info),
            _ => Ok(()),
        };
        if let Err(e) = recorded {
            self.log.warn(&format!(
                "recording stopped: {e}; the daemon goes on serving without recording"
            ));
            self.recorder = None;
        }
        if self.log.debug_enabled() {
            if let Input::DeviceRead(bytes) = &input {
                self.log
                    .debug(&format!("request: {}", describe_request(bytes).1));
            }
        }
        self.machine.handle(now, input);
        self.settle();
    }

    /// Executes every queued output, then feeds back the results produced on the way
    /// (an effect run here, or one no lane could take), until none is left.
    fn settle(&mut self) {
        self.drain();
        while !self.later.is_empty() {
            for input in std::mem::take(&mut self.later) {
                self.machine.handle(clock::now(), input);
                self.drain();
            }
        }
    }

    /// Executes every queued output, in order.
    fn drain(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::DeviceWrite(bytes) => {
                    if let Some(r) = self.recorder.as_mut() {
                        if let Err(e) = r.message(clock::now(), false, &bytes[..]) {
                            self.log.warn(&format!(
                "recording stopped: {e}; the daemon goes on serving without recording"
            ));
                            self.recorder = None;
                        }
                    }
                    let Some(device) = self.device.as_ref() else {
                        // The kernel failed what the answer was for when the device
                        // closed; the machine drops it at the reopen.
                        self.log.debug(
                            "an answer was not written: the KVP device is closed until it \
                             opens again",
                        );
                        continue;
                    };
                    match device.write(&bytes[..]) {
                        Ok(()) => {}
                        // EINVAL is the kernel refusing a message it does not expect (a
                        // reply after its timer failed the request, K3): the device is
                        // fine. Anything else on Linux: the device is closed and opened
                        // again, as after a failed read.
                        Err(e) if self.reopens && e.raw_os_error() != Some(EINVAL) => {
                            self.write_failed.get_or_insert(e);
                        }
                        Err(e) => {
                            // Not retried: the kernel already answered the host (K3).
                            self.log.warn(&format!(
                                "writing an answer to the device failed: {e}; it is not \
                                 retried (the kernel answers the host by its deadline)"
                            ));
                        }
                    }
                }
                Output::Effect { id, effect } => {
                    if self.log.debug_enabled() {
                        self.log
                            .debug(&format!("effect #{}: {}", id.0, describe::effect(&effect)));
                    }
                    let here = match effect.never_waits() {
                        // On this thread: no hop to the file lane and back.
                        true => self.lanes.run_here(&effect),
                        false => None,
                    };
                    if let Some(result) = here {
                        self.later.push(Input::EffectDone { id, result });
                    } else if let Err(e) = self.lanes.submit(id, effect) {
                        // The lane's thread is gone: the effect fails, and the machine
                        // decides (a failed pool is recovered and retried).
                        self.log.error(&format!(
                            "effect #{} could not be handed to its worker thread: {e}; it \
                             fails with EIO, and the pool is recovered and retried",
                            id.0
                        ));
                        self.later.push(Input::EffectDone {
                            id,
                            result: EffectResult::Failed(IoError::EIO),
                        });
                    }
                }
                Output::Event(e) => self.event(&e),
                Output::Exit => self.exit = true,
            }
        }
    }

    /// Every event in the core's words (`core::kvp::describe`), at the level its
    /// consequence deserves: failures as errors, refusals and repairs as warnings, the
    /// start as information, loads and findings of no consequence as debug detail.
    fn event(&mut self, e: &Event) {
        let level = match e {
            Event::PoolFailed { .. } | Event::MutationInDoubt { .. } | Event::UnknownEffect(_) => {
                Level::Error
            }
            Event::IpConfigRefused(_)
            | Event::EmptyKeyRefused { .. }
            | Event::Malformed(_)
            | Event::DeadlineReply { .. }
            | Event::PoolFull { .. }
            | Event::AdapterExcluded { .. }
            | Event::AdapterNotFound { .. }
            | Event::RegistrationUnanswered
            | Event::RequestLostToReopen { .. } => Level::Warn,
            Event::Registered | Event::PoolRecovered { .. } => Level::Info,
            Event::RegistrationAnswered { .. } => Level::Debug,
            Event::Job(j) => match j {
                JobEvent::Loaded {
                    pool,
                    records,
                    issues,
                } => {
                    self.warn_over_limit(*pool, *records, issues);
                    Level::Debug
                }
                JobEvent::JournalFinished { .. }
                | JobEvent::JournalDiscarded { .. }
                | JobEvent::JournalFollowUp { .. }
                | JobEvent::PartialRecordCut { .. } => Level::Info,
                JobEvent::JournalTornTail { .. }
                | JobEvent::JournalTooLong { .. }
                | JobEvent::FollowUpSkipped { .. } => Level::Warn,
                JobEvent::StaleMemory { .. } | JobEvent::JournalPending { .. } => Level::Debug,
            },
        };
        self.log.log(level, &e.to_string());
    }
}

impl Loop<'_> {
    /// A pool file with more records than we read is worth a warning (the rest is
    /// neither served nor changed), once per size it has.
    fn warn_over_limit(&mut self, pool: PoolId, held: usize, issues: &[PoolIssue]) {
        let total = issues.iter().find_map(|i| match i {
            PoolIssue::TooManyRecords { total } => Some(*total),
            _ => None,
        });
        let said = &mut self.over_limit[pool.index()];
        if let Some(total) = total {
            if *said != Some(total) {
                self.log.warn(&format!(
                    "pool {} ({}): the file holds {total} records; only the first {held} \
                     ({MAX_POOL_RECORDS}, the most the daemon holds) are read and served, \
                     the rest stay in the file unread, and no new key can be added until \
                     it is smaller",
                    pool.index(),
                    pool.name()
                ));
            }
        }
        *said = total;
    }
}

/// Opens the device at `path` again and puts it in the event loop.
fn open_again(path: &std::path::Path, poll: &Poll) -> Result<KvpDevice, DaemonError> {
    let device = KvpDevice::open(path)?;
    poll.registry()
        .register(&mut SourceFd(&device.raw_fd()), DEVICE, Interest::READABLE)
        .map_err(DaemonError::Poll)?;
    Ok(device)
}

/// Runs the daemon until SIGTERM/SIGINT (Ok) or a fatal device error (on Linux a
/// failed device is opened again, `Layout::reopens_after_error`).
pub fn run(cfg: &DaemonConfig, log: &Logger) -> Result<(), DaemonError> {
    let signals = SignalPipe::install().map_err(DaemonError::Signals)?;
    let mut files = match cfg.pool_mode {
        Some(m) => PoolFiles::create_with_modes(&cfg.pool_dir, m.dir_bits(), Some(m.file_bits()))?,
        None => PoolFiles::create(&cfg.pool_dir)?,
    };
    // Every file now, journals too (recovery opens them before the registration
    // anyway): a refused one stops the start where the administrator sees why.
    files.open_all(
        PoolId::ALL
            .into_iter()
            .map(FileId::pool)
            .chain(PoolId::FILE_BACKED.into_iter().map(FileId::journal)),
    )?;
    // Before the first load: recovery's own take then covers every write since.
    if let Err(e) = files.watch_writes() {
        log.warn(&format!(
            "the pool files cannot be watched for writes ({e}); every read checks the \
             file's stamp instead, and for a second after any write reloads the pool"
        ));
    }
    let device = KvpDevice::open(&cfg.device)?;
    // The real device speaks its kernel's layout only; another would fail at the
    // registration, or misread every message.
    if matches!(device, KvpDevice::Char(_)) && cfg.kvp.layout != crate::system::KVP_LAYOUT {
        return Err(DaemonError::WrongLayout {
            device: cfg.device.display().to_string(),
            system: crate::system::KVP_LAYOUT.name(),
            asked: cfg.kvp.layout.name(),
        });
    }
    // No DNS before the first reply: start with the plain host name.
    let info = sysinfo::system_info(
        &nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let recorder = match &cfg.record {
        Some(p) => Some(Recorder::create(p, cfg.kvp.layout, &info, &mut files)?),
        None => None,
    };
    let mut poll = Poll::new().map_err(DaemonError::Poll)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(DaemonError::Poll)?);
    let lanes = Lanes::start(files, cfg.set_ip.clone(), waker.clone(), log.clone())
        .map_err(DaemonError::Poll)?;
    let infos = spawn_fqdn_refresh(waker).unwrap_or_else(|e| {
        // No fresh host name: the machine keeps the plain one it started with.
        log.warn(&format!(
            "the host name refresh could not be started: {e}; the auto pool keeps the \
             plain host name"
        ));
        channel().1
    });
    let mut device_fd = device.raw_fd();
    poll.registry()
        .register(&mut SourceFd(&device_fd), DEVICE, Interest::READABLE)
        .map_err(DaemonError::Poll)?;
    poll.registry()
        .register(&mut SourceFd(&signals.raw_fd()), SIGNAL, Interest::READABLE)
        .map_err(DaemonError::Poll)?;
    log.info(&format!("starting; pid is {}", std::process::id()));
    let mut lp = Loop {
        machine: KvpMachine::new(
            KvpConfig {
                // Same-size changes within one timestamp tick must not hide.
                stamp_granularity: hvguest_core::limits::STAMP_GRANULARITY,
                ..cfg.kvp.clone()
            },
            clock::now(),
            &info,
        ),
        device: Some(device),
        reopens: cfg.kvp.layout.reopens_after_error(),
        write_failed: None,
        lanes,
        log,
        recorder,
        exit: false,
        later: Vec::new(),
        over_limit: [None; 5],
    };
    lp.settle(); // the machine starts recovery as it is made
    let mut events = Events::with_capacity(16);
    // One byte more than a message, so an oversized datagram shows.
    let mut buf = vec![0u8; cfg.kvp.layout.message_size() + 1];
    let mut result = Ok(());
    // Cleared when the device fails; set again when it is open again (Linux).
    let mut device_live = true;
    // While the device is closed after an error: when to try opening it again.
    let mut reopen: Option<Reopen> = None;
    // Failed reopens since a message was last read from the device.
    let mut failures_since_read: u32 = 0;
    // A read that failed, handled once the events of this round are.
    let mut device_failure: Option<DaemonError> = None;
    while !lp.exit {
        let now = std::time::Instant::now();
        let timeout = lp
            .machine
            .poll_timeout()
            .map(|t| t.saturating_since(clock::now()))
            .into_iter()
            .chain(reopen.as_ref().map(|r| r.at.saturating_duration_since(now)))
            // A write failed after the last look (the registration after a reopen):
            // handled at once, not after the next event.
            .chain(lp.write_failed.as_ref().map(|_| std::time::Duration::ZERO))
            .min();
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            result = Err(DaemonError::Poll(e));
            break;
        }
        for ev in events.iter() {
            match ev.token() {
                DEVICE => {
                    let Some(device) = lp.device.as_ref().filter(|_| device_live) else {
                        continue; // a late event of a failed device
                    };
                    let failed = match device.read(&mut buf) {
                        Ok(ReadOutcome::Message(n)) => {
                            failures_since_read = 0;
                            lp.step(Input::DeviceRead(buf[..n].to_vec()));
                            None
                        }
                        Ok(ReadOutcome::NotReady) => None,
                        Ok(ReadOutcome::Closed) => Some(DaemonError::DeviceClosed),
                        Err(e) => Some(DaemonError::DeviceRead(e)),
                    };
                    // Re-arm: the poll(2) backend and edge-triggered epoll both report
                    // a still-readable device again after this.
                    let failed = failed.or_else(|| {
                        poll.registry()
                            .reregister(&mut SourceFd(&device_fd), DEVICE, Interest::READABLE)
                            .err()
                            .map(DaemonError::Poll)
                    });
                    if let Some(e) = failed {
                        device_live = false;
                        device_failure = Some(e);
                    }
                }
                SIGNAL => {
                    if signals.take() {
                        log.info("asked to stop: finishing what was started, then exiting");
                        lp.step(Input::Shutdown);
                    }
                }
                _ => {
                    while let Ok((id, r)) = lp.lanes.done.try_recv() {
                        lp.step(Input::EffectDone { id, result: r });
                    }
                    while let Ok(info) = infos.try_recv() {
                        lp.step(Input::SystemInfo(info));
                    }
                }
            }
        }
        let failure = device_failure
            .take()
            .or_else(|| lp.write_failed.take().map(DaemonError::DeviceWrite));
        if let Some(e) = failure.filter(|_| lp.device.is_some()) {
            if let Err(d) = poll.registry().deregister(&mut SourceFd(&device_fd)) {
                // Its events are ignored from now on anyway.
                log.warn(&format!(
                    "removing the device from the event loop failed: {d}; its events are \
                     ignored from now on"
                ));
            }
            device_live = false;
            if lp.reopens && !matches!(e, DaemonError::Poll(_)) {
                lp.device = None;
                // Closed now; opened again after a pause, growing while it fails.
                log.warn(&format!(
                    "the KVP device failed: {e}; it is closed and opened again (as after \
                     the Data Exchange service is switched off and on, or the guest \
                     hibernates), first in {} ms, then with pauses growing to {} s while \
                     it cannot be opened; the request the kernel held, if any, was failed \
                     by the kernel",
                    Reopen::after(failures_since_read).pause().as_millis(),
                    DEVICE_REOPEN_MAX_PAUSE.as_secs()
                ));
                reopen = Some(Reopen::after(failures_since_read));
            } else {
                // No request can come any more: the machine finishes what it started (a
                // mutation reaches the disk whole) and exits; the error is returned then.
                log.warn(&format!(
                    "the KVP device failed: {e}; finishing what was started, then exiting"
                ));
                result = Err(e);
                lp.step(Input::Shutdown);
            }
        }
        if let Some(r) = reopen
            .as_mut()
            .filter(|r| r.at <= std::time::Instant::now())
        {
            if lp.exit {
                break;
            }
            match open_again(&cfg.device, &poll) {
                Ok(device) => {
                    device_fd = device.raw_fd();
                    lp.device = Some(device);
                    device_live = true;
                    log.info(&format!(
                        "the KVP device is open again ({} attempt(s)); registering with the \
                         kernel again",
                        r.failures + 1
                    ));
                    // The next failure before anything is read pauses longer.
                    failures_since_read = r.failures.saturating_add(1);
                    reopen = None;
                    lp.step(Input::DeviceReopened);
                }
                Err(e) => {
                    *r = r.again();
                    log.debug(&format!(
                        "opening the KVP device again failed: {e}; next attempt in {} ms",
                        r.pause().as_millis()
                    ));
                }
            }
        }
        if lp.machine.poll_timeout().is_some_and(|t| t <= clock::now()) {
            lp.step(Input::Timer);
        }
    }
    let Loop { lanes, .. } = lp;
    lanes.finish();
    if result.is_ok() {
        log.info("exiting");
    }
    result
}
