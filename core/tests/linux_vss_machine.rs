//! The VSS machine on Linux's device (docs/protocol/linux.md §2): the registration it
//! writes first and the answer it waits for, 12-byte answers with the status over bytes
//! 0–3, and a device opened again while a FREEZE runs: the new opening never gets the old
//! answer, and an OK it could not give is undone. The bytes the tests feed and expect are
//! written out literally from the document, not with the core's codec.

use std::time::Duration;

use hvguest_core::kvp::effect::IoError;
use hvguest_core::layout::Layout;
use hvguest_core::time::Instant;
use hvguest_core::vss::effect::{VssEffect, VssInput, VssResult};
use hvguest_core::vss::machine::{VssConfig, VssEvent, VssMachine, VssOutput};
use hvguest_core::vss::policy::{Fsid, Mount, Policy};

const START: Instant = Instant(1_000_000_000);
const REALTIME: u64 = 1_800_000_000_000_000_000;

fn request(op: u8) -> Vec<u8> {
    let mut m = vec![0u8; 12];
    m[0] = op;
    m
}

const OK: [u8; 12] = [0; 12];
const FAIL: [u8; 12] = [0x05, 0x40, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0];

fn ext4_root() -> Vec<Mount> {
    vec![Mount {
        fstype: "ext4".into(),
        path: "/".into(),
        read_only: false,
        source: "/dev/sda1".into(),
        fsid: Some(Fsid([8, 1])),
    }]
}

/// A machine on Linux's device and everything it said, with a world that answers every
/// effect at once: the mount table, a freezer that does what it is told.
struct Run {
    m: VssMachine,
    now: Instant,
    writes: Vec<Vec<u8>>,
    events: Vec<VssEvent>,
    effects: Vec<VssEffect>,
    /// Effects not answered yet, with their ids.
    pending: Vec<(hvguest_core::kvp::effect::EffectId, VssEffect)>,
    /// Answer effects as they come out (else they wait for `answer_pending`).
    auto: bool,
}

impl Run {
    fn new() -> Run {
        let cfg = VssConfig {
            layout: Layout::Linux,
            policy: Policy::for_layout(Layout::Linux),
            ..VssConfig::default()
        };
        let mut r = Run {
            m: VssMachine::new(cfg, START),
            now: START,
            writes: Vec::new(),
            events: Vec::new(),
            effects: Vec::new(),
            pending: Vec::new(),
            auto: true,
        };
        r.drain();
        r
    }

    fn drain(&mut self) {
        while let Some(o) = self.m.poll_output() {
            match o {
                VssOutput::DeviceWrite(b) => self.writes.push(b),
                VssOutput::Event(e) => self.events.push(e),
                VssOutput::Effect { id, effect } => {
                    self.effects.push(effect.clone());
                    self.pending.push((id, effect));
                }
                VssOutput::Exit => {}
            }
        }
        if self.auto {
            self.answer_pending();
        }
    }

    fn answer_pending(&mut self) {
        while !self.pending.is_empty() {
            let (id, effect) = self.pending.remove(0);
            let result = match effect {
                VssEffect::ListMounts => VssResult::Mounts(ext4_root()),
                VssEffect::ListHooks => VssResult::Hooks(Vec::new()),
                _ => VssResult::Done,
            };
            self.input(VssInput::EffectDone { id, result });
        }
    }

    fn input(&mut self, i: VssInput) {
        self.now = self.now.saturating_add(Duration::from_millis(1));
        self.m.handle(self.now, i);
        self.drain();
    }

    fn read(&mut self, bytes: &[u8]) {
        self.input(VssInput::DeviceRead {
            bytes: bytes.to_vec(),
            realtime_ns: REALTIME,
        });
    }
}

#[test]
fn it_registers_first_and_answers_in_twelve_bytes() {
    let mut r = Run::new();
    // Byte 0 = 129, eleven zero bytes, before anything else.
    assert_eq!(
        r.writes,
        vec![[129u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].to_vec()]
    );
    assert!(!r.m.registered());
    r.read(&[129, 0, 0, 0]);
    assert!(r.m.registered());
    assert!(r.events.contains(&VssEvent::Registered));
    // HOT_BACKUP with an ext4 root: OK, 12 zero bytes.
    r.read(&request(2));
    assert_eq!(r.writes.last().unwrap(), &OK.to_vec());
    // FREEZE freezes /, answers OK; THAW thaws, answers OK.
    r.read(&request(5));
    assert!(r
        .effects
        .iter()
        .any(|e| matches!(e, VssEffect::Suspend { mount, .. } if mount == "/")));
    assert_eq!(r.writes.last().unwrap(), &OK.to_vec());
    assert!(r.m.frozen());
    r.read(&request(6));
    assert!(r.effects.contains(&VssEffect::ResumeAll));
    assert_eq!(r.writes.last().unwrap(), &OK.to_vec());
    assert!(!r.m.frozen());
    // GET_DM_INFO is the kernel's to answer: a failure, and nothing done.
    let before = r.effects.len();
    r.read(&request(3));
    assert_eq!(r.writes.last().unwrap(), &FAIL.to_vec());
    assert_eq!(r.effects.len(), before);
    // Another length is no request: nothing written.
    let writes = r.writes.len();
    r.read(&[5, 0, 0]);
    assert_eq!(r.writes.len(), writes);
}

#[test]
fn nfs_vetoes_hot_backup_on_linux() {
    let mut r = Run::new();
    r.auto = false;
    r.read(&[129, 0, 0, 0]);
    r.read(&request(2));
    let (id, effect) = r.pending.remove(0);
    assert_eq!(effect, VssEffect::ListMounts);
    let mut mounts = ext4_root();
    mounts.push(Mount {
        fstype: "nfs4".into(),
        path: "/srv".into(),
        read_only: false,
        source: "server:/export".into(),
        fsid: Some(Fsid([0, 50])),
    });
    r.input(VssInput::EffectDone {
        id,
        result: VssResult::Mounts(mounts),
    });
    assert_eq!(r.writes.last().unwrap(), &FAIL.to_vec());
    assert!(r.events.iter().any(|e| matches!(e, VssEvent::Vetoed(_))));
}

#[test]
fn a_reopen_during_a_freeze_registers_again_and_never_writes_the_old_answer() {
    let mut r = Run::new();
    r.read(&[129, 0, 0, 0]);
    r.auto = false;
    r.read(&request(5));
    // The FREEZE waits for its mount table; the device is reopened meanwhile.
    let writes = r.writes.len();
    r.input(VssInput::DeviceReopened);
    assert_eq!(r.writes.len(), writes + 1, "the registration, again");
    assert_eq!(r.writes.last().unwrap()[0], 129);
    assert!(!r.m.registered());
    r.read(&[129, 0, 0, 0]);
    // The FREEZE goes on and succeeds, but its OK belongs to the closed device: not
    // written, and the freeze is undone.
    let writes = r.writes.len();
    r.auto = true;
    r.answer_pending();
    assert_eq!(r.writes.len(), writes, "no answer to the new opening");
    assert!(r
        .events
        .iter()
        .any(|e| matches!(e, VssEvent::AnswerDropped { .. })));
    assert!(
        r.effects.contains(&VssEffect::ResumeAll),
        "the unseen freeze is thawed"
    );
    assert!(!r.m.frozen());
    // The new opening serves the next request.
    r.read(&request(2));
    assert_eq!(r.writes.last().unwrap(), &OK.to_vec());
}

#[test]
fn a_lost_ok_while_frozen_thaws() {
    let mut r = Run::new();
    r.read(&[129, 0, 0, 0]);
    r.read(&request(5));
    assert!(r.m.frozen());
    // The kernel refused our OK (it had timed the FREEZE out): 12 zero bytes lost.
    r.input(VssInput::AnswerLost {
        bytes: OK.to_vec(),
        error: IoError(22),
    });
    assert!(r.effects.contains(&VssEffect::ResumeAll));
    assert!(!r.m.frozen());
}
