//! Volume Shadow Copy (Hyper-V Backup), docs/protocol/vss.md.
//!
//! [`wire`] (the 64-byte message and ioctl codes) → [`policy`] (what each file-system
//! type gets) and [`hooks`] (which hook files run) → [`machine`] (the file-system daemon)
//! and [`app`] (the application-device helper). [`effect`] holds both machines' inputs
//! and effects; [`freezer`] the freezer process's line protocol and decisions; [`rules`]
//! the timing rules every configuration must keep; [`prune`] which old snapshots of ours
//! a successful THAW destroys.

pub mod app;
pub mod describe;
pub mod effect;
pub mod freezer;
pub mod hooks;
pub mod machine;
pub mod policy;
pub mod prune;
pub mod rules;
pub mod wire;
