//! PiCloud's actors: one supervised `AppActor` per app, each owning that app's
//! scripts and a pool of sandboxed Lua VMs.
//!
//! This crate sits between the gateway (`runtime`) and the cluster: it turns an
//! HTTP request for an app into a script invocation, and every service call of
//! that script into cluster reads and writes (through [`host::NodeHost`]).
//!
//! # Layout
//!
//! - `app`: app names (`AppName`), manifests, route tables and deploy bundles
//!   (parse + validate).
//! - `pool`: `AppRuntime`, one app version with its VM pool.
//! - `cpu`: `CpuShares`, the script threads one app may occupy at once.
//! - `app_actor`: `AppActor`, owner of an app's current runtime.
//! - `supervisor`: `NodeSupervisor` (restart with backoff) and `Apps`, the
//!   gateway's handle.
//! - `host`: `NodeHost`, the `Host` implementation over `cluster::Node`.
//! - `logs`: `LogBook`, per-app log rings with follow.
//! - `cron`: cron trigger schedules (parse, next slot in a time zone, misfire).
//! - `config`: `ActorLimits`, every bound of this layer with its default.
//! - `error`: `AppError`, and the registry codes of storage's typed errors
//!   (`apply_code`, `secret_code`).

pub mod app;
pub mod app_actor;
pub mod config;
pub mod cpu;
pub mod cron;
pub mod dispatcher;
pub mod docs;
pub mod error;
pub mod host;
pub mod logs;
pub mod pool;
pub mod run_host;
pub mod scheduler;
pub mod supervisor;

pub use config::ActorLimits;
pub use cpu::CpuShares;
pub use error::AppError;
pub use host::NodeHost;
pub use logs::{LogBook, LogLimits, LogLine};
pub use pool::{AppRequest, AppRuntime};
pub use supervisor::Apps;
