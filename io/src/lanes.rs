//! The effect lanes as threads: one executes file effects in order, one executes system
//! effects (interface queries, IP configuration). The event loop hands effects over a
//! channel and is woken through mio's `Waker` when a result is back, so a write stuck
//! on a suspended file system never stops the loop from answering GET and ENUMERATE.
//! A file effect that never waits (a stat) the loop runs itself ([`Lanes::run_here`]).
//! (Only the KVP daemon has threads; the VSS freezer must be single-threaded.)

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hvguest_core::kvp::effect::{Effect, EffectId, EffectResult, IoError, Lane};
use mio::Waker;

use crate::files::PoolFiles;
use crate::logging::Logger;
use crate::set_ip::{self, SetIpPaths};
use crate::sysinfo;

/// A finished effect, on its way back to the loop.
pub type Completion = (EffectId, EffectResult);

pub struct Lanes {
    files: Arc<Mutex<PoolFiles>>,
    file: Sender<(EffectId, Effect)>,
    system: Sender<(EffectId, Effect)>,
    pub done: Receiver<Completion>,
    threads: Vec<JoinHandle<()>>,
}

fn worker(
    name: &str,
    rx: Receiver<(EffectId, Effect)>,
    done: Sender<Completion>,
    waker: Arc<Waker>,
    mut run: impl FnMut(&Effect) -> EffectResult + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for (id, effect) in rx {
                let result = run(&effect);
                if done.send((id, result)).is_err() {
                    break; // the loop has gone
                }
                // A failed wake means the poll is gone too; nothing to do.
                let _ = waker.wake();
            }
        })
}

/// Runs one file effect on the pool files, wherever the caller is (the file lane's
/// thread, or the event loop for an effect that never waits); a refusal found on the
/// way is logged in words, since the machine sees only an errno.
fn run_file_effect(files: &Mutex<PoolFiles>, effect: &Effect, log: &Logger) -> EffectResult {
    let Ok(mut files) = files.lock() else {
        // Only a panic while holding it poisons the lock; what it held may be half
        // done, so nothing more is done with it.
        return EffectResult::Failed(IoError::EIO);
    };
    let result = files.execute(effect);
    if let Some(refusal) = files.take_refusal() {
        log.error(&refusal.to_string());
    }
    result
}

impl Lanes {
    pub fn start(
        files: PoolFiles,
        set_ip_paths: SetIpPaths,
        waker: Arc<Waker>,
        log: Logger,
    ) -> std::io::Result<Lanes> {
        let (file_tx, file_rx) = channel();
        let (sys_tx, sys_rx) = channel();
        let (done_tx, done) = channel();
        // Shared with the event loop, which runs effects that never wait itself; the
        // machine keeps one file effect in flight, so the lock is never contended.
        let files = Arc::new(Mutex::new(files));
        let worker_files = files.clone();
        let system_log = log.clone();
        let file_thread = worker(
            "kvp-files",
            file_rx,
            done_tx.clone(),
            waker.clone(),
            move |e| run_file_effect(&worker_files, e, &log),
        )?;
        let sys_thread = worker("kvp-system", sys_rx, done_tx, waker, move |e| match e {
            Effect::QueryAdapter(mac) => EffectResult::Adapters(sysinfo::query_adapter(*mac)),
            Effect::ApplyIpConfig { config, deadline } => {
                set_ip::apply(config, &set_ip_paths, *deadline, &system_log)
            }
            _ => EffectResult::Failed(IoError::WRONG_RESULT),
        })?;
        Ok(Lanes {
            files,
            file: file_tx,
            system: sys_tx,
            done,
            threads: vec![file_thread, sys_thread],
        })
    }

    /// The result of a file effect that never waits (`Effect::never_waits`), computed
    /// on the caller's thread when that needs nothing that could wait: a GET's news of
    /// writes (a non-blocking drain of the watch) or its `fstatat`, and no thread hop.
    /// `None`: hand it to the lane (a stat's first look at a file, or at one replaced
    /// since, opens a file).
    pub fn run_here(&self, effect: &Effect) -> Option<EffectResult> {
        // A poisoned lock (a panic on the lane) leaves the effect to the lane, which
        // answers it with EIO.
        let mut files = self.files.lock().ok()?;
        match effect {
            Effect::Stat(id) => files.stat_if_held(*id).map(EffectResult::Stamp),
            Effect::TakeWrites(_) => Some(files.execute(effect)),
            _ => None,
        }
    }

    /// Hands the effect to its lane's thread; an error if that thread is gone (it
    /// panicked), and then no result will come for it.
    pub fn submit(&self, id: EffectId, effect: Effect) -> std::io::Result<()> {
        let (tx, lane) = match effect.lane() {
            Lane::File => (&self.file, "file"),
            Lane::System => (&self.system, "system"),
        };
        tx.send((id, effect))
            .map_err(|_| std::io::Error::other(format!("the {lane} lane's thread has gone")))
    }

    /// Closes the channels and waits for the workers to finish what they hold.
    pub fn finish(self) {
        drop(self.file);
        drop(self.system);
        for t in self.threads {
            // Err only if the thread panicked; its panic was already printed, and we
            // are exiting either way.
            let _ = t.join();
        }
    }
}
