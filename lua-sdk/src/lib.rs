//! The Lua side of PiCloud: sandboxed VMs and the SDK scripts call.
//!
//! This crate imports no other PiCloud crate. It defines [`Host`], the trait
//! through which every service call from Lua reaches the node, and builds
//! sandboxed Lua 5.4 VMs (mlua) that enforce an instruction budget, a memory
//! cap and a wall-clock timeout per invocation.

pub mod host;

pub use host::{
    AtomicOp, AtomicResult, Consistency, Host, HostError, HostFuture, KvListPage, LogLevel,
};
