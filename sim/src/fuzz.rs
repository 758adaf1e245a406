//! Fuzz target bodies. `fuzz/` calls them under libFuzzer (nightly); the stable test
//! `tests/fuzz_corpus.rs` runs them over the committed corpus.

use arbitrary::{Arbitrary, Unstructured};
use hvguest_core::kvp::effect::{EffectResult, Input};
use hvguest_core::kvp::machine::{KvpConfig, KvpMachine, Output};
use hvguest_core::kvp::record::{decode_pool, encode_pool};
use hvguest_core::kvp::wire::{self, Request};
use hvguest_core::limits::{KVP_MSG_SIZE, POOL_RECORD_SIZE};
use hvguest_core::Instant;

use crate::harness::test_info;

/// Any bytes decode to a request or a typed error; a request re-encodes to itself.
pub fn kvp_message(data: &[u8]) {
    let mut msg = [0u8; KVP_MSG_SIZE];
    let n = data.len().min(KVP_MSG_SIZE);
    msg[..n].copy_from_slice(&data[..n]);
    let _ = wire::decode_request(data);
    if let Ok(req) = wire::decode_request(&msg) {
        let again = wire::decode_request(&wire::encode_request(&req)[..])
            .expect("re-encoded request decodes");
        assert_eq!(again, req);
    }
}

/// Any bytes decode as a pool file; records re-encode to a file that decodes the same.
pub fn pool_file(data: &[u8]) {
    let d = decode_pool(data);
    assert_eq!(d.partial_tail, data.len() % POOL_RECORD_SIZE);
    let again = decode_pool(&encode_pool(&d.records));
    assert_eq!(again.records, d.records);
    // Re-encoded records are clean: terminated and zero-padded (an empty key stays
    // empty, and is still reported as such).
    for i in &again.issues {
        if let hvguest_core::kvp::record::PoolIssue::Flawed { flaws, .. } = i {
            assert_eq!(
                flaws.key,
                hvguest_core::kvp::record::FieldFlaw::None,
                "{i:?}"
            );
            assert_eq!(
                flaws.value,
                hvguest_core::kvp::record::FieldFlaw::None,
                "{i:?}"
            );
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Step {
    Read(Request),
    RawRead(Vec<u8>),
    /// Answer the oldest outstanding effect with an arbitrary result.
    Answer(EffectResult),
    AnswerWrongId(u64),
    Advance(u16),
    Timer,
}

/// The machine under arbitrary inputs and arbitrary effect results: it never panics,
/// answers every device read exactly once, and never answers after its deadline.
pub fn kvp_machine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut now = Instant::from_millis(1);
    let mut m = KvpMachine::new(KvpConfig::default(), now, &test_info());
    let mut effects = std::collections::VecDeque::new();
    let mut unanswered: Option<Instant> = None;
    let budget = KvpConfig::default().reply_budget;
    let drain = |m: &mut KvpMachine,
                 effects: &mut std::collections::VecDeque<_>,
                 unanswered: &mut Option<Instant>,
                 now: Instant| {
        while let Some(o) = m.poll_output() {
            match o {
                Output::Effect { id, .. } => effects.push_back(id),
                Output::DeviceWrite(b) => {
                    assert_eq!(b.len(), KVP_MSG_SIZE);
                    if b[0] == 4 && b[1..].iter().all(|&x| x == 0) && !m.registered() {
                        continue;
                    }
                    if let Some(read_at) = unanswered.take() {
                        assert!(
                            now <= read_at.saturating_add(budget),
                            "reply after the deadline"
                        );
                    }
                }
                _ => {}
            }
        }
    };
    drain(&mut m, &mut effects, &mut unanswered, now);
    for _ in 0..256 {
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        match step {
            // The kernel hands over one request at a time.
            Step::Read(_) | Step::RawRead(_) if unanswered.is_some() => continue,
            Step::Read(req) => {
                unanswered = Some(now);
                m.handle(now, Input::DeviceRead(wire::encode_request(&req).to_vec()));
            }
            Step::RawRead(bytes) => {
                unanswered = Some(now);
                m.handle(now, Input::DeviceRead(bytes));
            }
            Step::Answer(result) => {
                let Some(id) = effects.pop_front() else {
                    continue;
                };
                m.handle(now, Input::EffectDone { id, result });
            }
            Step::AnswerWrongId(id) => {
                m.handle(
                    now,
                    Input::EffectDone {
                        id: hvguest_core::kvp::effect::EffectId(id | 1 << 63),
                        result: EffectResult::Done,
                    },
                );
            }
            Step::Advance(ms) => {
                let next = now.saturating_add(std::time::Duration::from_millis(u64::from(ms)));
                // Deliver every timer due before `next` at its instant, as a driver would.
                for _ in 0..8 {
                    let Some(t) = m.poll_timeout().filter(|&t| t <= next) else {
                        break;
                    };
                    now = now.max(t);
                    m.handle(now, Input::Timer);
                    drain(&mut m, &mut effects, &mut unanswered, now);
                }
                now = next;
            }
            Step::Timer => m.handle(now, Input::Timer),
        }
        drain(&mut m, &mut effects, &mut unanswered, now);
    }
}
