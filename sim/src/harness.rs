//! A synchronous harness: one simulated daemon, its file system and network, and a
//! host that sends one request at a time and waits for the reply. Used by the machine
//! tests, the property tests and the fuzz bodies; the full simulator adds the kernel,
//! a scheduled host and outside writers.

use std::time::Duration;

use hvguest_core::kvp::auto::SystemInfo;
use hvguest_core::kvp::effect::Input;
use hvguest_core::kvp::machine::KvpConfig;
use hvguest_core::kvp::wire::{self, Message, Reply, Request};
use hvguest_core::Instant;

use crate::daemon::{DaemonSetup, Latency, Observed, SimDaemon, SimNet};
use crate::fs::{Owner, SimFs};
use crate::prng::Prng;

pub struct KvpHarness {
    pub fs: SimFs,
    pub net: SimNet,
    pub now: Instant,
    pub daemon: SimDaemon,
    pub log: Vec<Observed>,
    pub info: SystemInfo,
    pub config: KvpConfig,
    generation: u32,
}

pub fn test_info() -> SystemInfo {
    SystemInfo {
        fqdn: "guest.example.net".into(),
        os_name: "FreeBSD".into(),
        os_release: "14.1-RELEASE".into(),
        machine: "amd64".into(),
        addrs: crate::network::Network::fixed().system_addrs(),
    }
}

impl KvpHarness {
    pub fn new(fs: SimFs) -> KvpHarness {
        Self::with_latency(fs, Latency::default())
    }

    pub fn with_latency(fs: SimFs, latency: Latency) -> KvpHarness {
        Self::with_config(fs, latency, KvpConfig::default())
    }

    /// A daemon with a configuration of its own (what kvp.conf gives it).
    pub fn with_config(mut fs: SimFs, latency: Latency, config: KvpConfig) -> KvpHarness {
        let mut net = SimNet::default();
        let mut log = Vec::new();
        let info = test_info();
        let now = Instant::from_millis(1);
        let setup = DaemonSetup {
            config: config.clone(),
            info: info.clone(),
            latency,
            watches: true,
        };
        let daemon = SimDaemon::start(1, now, &setup, &mut fs, &mut net, &mut log);
        let mut h = KvpHarness {
            fs,
            net,
            now,
            daemon,
            log,
            info,
            config,
            generation: 1,
        };
        h.settle();
        h
    }

    /// Runs the daemon until nothing is due but timers of an unanswered request (or
    /// forever-parked effects).
    pub fn settle(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step_once(|_| false) {
                return;
            }
        }
        panic!("daemon did not settle");
    }

    /// Advances to the next wakeup and delivers it. `stop` is checked on the log first.
    fn step_once(&mut self, stop: impl Fn(&[Observed]) -> bool) -> bool {
        if stop(&self.log) {
            return false;
        }
        let Some(t) = self.daemon.next_wakeup() else {
            return false;
        };
        // Only a request deadline may be waiting when the machine has nothing else to do.
        self.now = self.now.max(t);
        self.daemon
            .advance(self.now, &mut self.fs, &mut self.net, &mut self.log);
        true
    }

    /// Sends raw device bytes; returns the daemon's writes caused by it (its reply).
    pub fn send_raw(&mut self, bytes: Vec<u8>) -> Vec<Message> {
        let start = self.log.len();
        self.daemon.handle(
            self.now,
            Input::DeviceRead(bytes),
            &mut self.fs,
            &mut self.net,
            &mut self.log,
        );
        let has_reply = |log: &[Observed]| {
            log[start..]
                .iter()
                .any(|o| matches!(o, Observed::DeviceWrite(_)))
        };
        for _ in 0..1_000_000 {
            if !self.step_once(has_reply) {
                break;
            }
        }
        self.log[start..]
            .iter()
            .filter_map(|o| match o {
                Observed::DeviceWrite(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    /// Sends a request and returns the decoded reply (`None` if none came).
    pub fn request(&mut self, req: &Request) -> Option<Reply> {
        let writes = self.send_raw(wire::encode_request(req).to_vec());
        assert!(writes.len() <= 1, "{} replies to one request", writes.len());
        writes
            .first()
            .map(|w| wire::decode_reply(req.op(), &w[..]).expect("7430-byte reply"))
    }

    pub fn advance(&mut self, d: Duration) {
        let until = self.now.saturating_add(d);
        while let Some(t) = self.daemon.next_wakeup().filter(|&t| t <= until) {
            self.now = self.now.max(t);
            self.daemon
                .advance(self.now, &mut self.fs, &mut self.net, &mut self.log);
        }
        self.now = until;
    }

    /// Power loss (or kill -9 when `power` is false: volatile bytes stay), then the
    /// daemon starts again through recovery.
    pub fn crash_and_restart(&mut self, prng: &mut Prng, power: bool) {
        if power {
            self.fs.crash(prng);
        } else {
            self.fs.release_locks_of(Owner::Daemon(self.generation));
            self.fs.frozen = false;
        }
        self.generation += 1;
        self.now = self.now.saturating_add(Duration::from_millis(10));
        let setup = DaemonSetup {
            config: self.config.clone(),
            info: self.info.clone(),
            latency: Latency::default(),
            watches: true,
        };
        self.daemon = SimDaemon::start(
            self.generation,
            self.now,
            &setup,
            &mut self.fs,
            &mut self.net,
            &mut self.log,
        );
        self.settle();
    }

    pub fn thaw(&mut self) {
        self.fs.frozen = false;
        self.daemon.unpark(self.now, &mut self.fs, &mut self.net);
        self.settle();
    }
}
