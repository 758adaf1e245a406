//! hvguest-io: the production drivers for FreeBSD. They own the devices, files, clock
//! and signals, feed the core's machines and execute their effects literally; no
//! protocol decision is made here. The daemons arrive with their issues; so far this
//! crate holds the clock the drivers hand to the core.

pub mod clock;
