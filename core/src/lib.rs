//! hvguest-core: the decisions of the Hyper-V guest daemons, with no I/O.
//!
//! Everything here is a pure function of its inputs: no files, sockets, threads, clocks
//! or randomness (`clippy.toml` in this crate bans them). The production daemons in
//! `io` and the simulator in `sim` drive the same machines and execute the same
//! effects, so every decision, the persistence algorithm and its recovery included, is
//! exercised under the simulator's faults. See `ARCHITECTURE.md` at the repository root.

pub mod kvp;
pub mod layout;
pub mod limits;
pub mod time;

pub use time::Instant;
pub mod vss;
