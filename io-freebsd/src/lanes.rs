//! The effect lanes as threads: one executes file effects in order, one executes system
//! effects (interface queries, IP configuration). The event loop hands effects over a
//! channel and is woken through mio's `Waker` when a result is back, so a write stuck
//! on a suspended file system never stops the loop from answering GET and ENUMERATE.
//! (Only the KVP daemon has threads; the VSS freezer must be single-threaded.)

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use hvguest_core::kvp::effect::{Effect, EffectId, EffectResult, IoError, Lane};
use mio::Waker;

use crate::files::PoolFiles;
use crate::logging::Logger;
use crate::sysinfo;

/// A finished effect, on its way back to the loop.
pub type Completion = (EffectId, EffectResult);

pub struct Lanes {
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

impl Lanes {
    pub fn start(
        mut files: PoolFiles,
        scripts_dir: PathBuf,
        waker: Arc<Waker>,
        log: Logger,
    ) -> std::io::Result<Lanes> {
        let (file_tx, file_rx) = channel();
        let (sys_tx, sys_rx) = channel();
        let (done_tx, done) = channel();
        let file_thread = worker(
            "kvp-files",
            file_rx,
            done_tx.clone(),
            waker.clone(),
            move |e| {
                let result = files.execute(e);
                // The machine sees only an errno; the administrator is told what was
                // found (a pool file replaced by a link, say).
                if let Some(refusal) = files.take_refusal() {
                    log.error(&refusal.to_string());
                }
                result
            },
        )?;
        let sys_thread = worker("kvp-system", sys_rx, done_tx, waker, move |e| match e {
            Effect::QueryAdapter(mac) => EffectResult::Adapters(sysinfo::query_adapter(*mac)),
            Effect::ApplyIpConfig { config, deadline } => {
                match sysinfo::apply_ip_config(config, &scripts_dir, *deadline) {
                    Ok(()) => EffectResult::Done,
                    Err(e) => EffectResult::Failed(e),
                }
            }
            _ => EffectResult::Failed(IoError::WRONG_RESULT),
        })?;
        Ok(Lanes {
            file: file_tx,
            system: sys_tx,
            done,
            threads: vec![file_thread, sys_thread],
        })
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
