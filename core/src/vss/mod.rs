//! Volume Shadow Copy (Hyper-V Backup), docs/protocol/vss.md.
//!
//! [`wire`] (the 64-byte message and ioctl codes) → [`policy`] (what each file-system
//! type gets) and [`hooks`] (which hook files run) → [`machine`] (the file-system daemon)
//! and [`app`] (the application-device helper). [`effect`] holds both machines' inputs
//! and effects.

pub mod app;
pub mod effect;
pub mod hooks;
pub mod machine;
pub mod policy;
pub mod wire;
