//! Key-Value Pair exchange (Hyper-V Data Exchange), docs/protocol/kvp.md.
//!
//! Layers, bottom up: [`text`] (bounded keys and values) → [`wire`] (device messages)
//! and [`record`] (pool files) → [`pool`] (one pool in memory, planning of changes) →
//! [`journal`] (crash safety) → [`jobs`] (the persistence protocol as effects) →
//! [`machine`] (requests, deadlines, lanes); [`tool_write`] runs the same jobs as a
//! tool's (`hvkvp`'s) whole SET/DELETE. [`auto`] and [`ip`] hold the auto pool and
//! IP configuration rules, [`addresses`] which interfaces and addresses the host sees.

pub mod addresses;
pub mod auto;
pub mod describe;
pub mod effect;
pub mod ip;
pub mod jobs;
pub mod journal;
pub mod machine;
pub mod pool;
pub mod record;
pub mod recording;
pub mod text;
pub mod tool_write;
pub mod wire;

pub use auto::SystemInfo;
pub use effect::{
    Effect, EffectId, EffectResult, FileId, FileKind, FileStamp, Input, IoError, Lane,
};
pub use machine::{Event, KvpConfig, KvpMachine, Output};
pub use text::{Key, Value};
pub use wire::{Op, PoolId, Reply, Request, Status};
