//! PiCloud's actors: one supervised `AppActor` per app, each owning that app's
//! scripts and a pool of sandboxed Lua VMs; the duty supervisor that keeps
//! every long-running loop of the node running; and the leader's trigger
//! duties with their pure planners.
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
//! - `priority`: the nice value of threads that may wait (scripts, hashes).
//! - `cpu`: `CpuShares`, the script threads one app may occupy at once.
//! - `app_actor`: `AppActor`, owner of an app's current runtime.
//! - `supervisor`: `NodeSupervisor` (restart with backoff) and `Apps`, the
//!   gateway's handle (also the applied-change feed, as a duty).
//! - `duties`: `DutySupervisor`/`Duties`, which run every `cluster::Duty`
//!   (batcher, peers, membership, app_events, http_accept, triggers, cron) as
//!   a ractor actor and restart it with backoff; `ActorRestarts` for metrics.
//! - `host`: `NodeHost`, the `Host` implementation over `cluster::Node`.
//! - `run_host`: `RunHost`, each pooled VM's host: a layer over `NodeHost`
//!   that buffers writes during a trigger run.
//! - `docs`: `docs.*` calls to storage operations and read limits.
//! - `dispatcher`: `plan_claims` and the `triggers` duty (claims, runs in the
//!   app's runtime or mail deliveries, reports).
//! - `scheduler`: `plan_cron` and the `cron` duty.
//! - `membership`: `plan_membership` and the `membership` duty (learners,
//!   promotions, removals, odd voters) over `Node::membership_view`.
//! - `outbound`: outbound HTTP for scripts — `Outbound` (limits, clients),
//!   the pure SSRF `guard` and its allow list, a DNS stub resolver.
//! - `files`: `FileService` (files for scripts, the gateway and the CLI:
//!   upload to blocks then `FilePut`, download, list, delete, signed URLs),
//!   the repair planner and duty, and block GC.
//! - `email`: outbound mail — `Mailer` (the lettre SMTP transport, sends
//!   bounded and timed out, or capture without a relay), the pure `check`
//!   of a script's message, MIME `build`, `message_id` and `classify` (a
//!   reply to retry or bounce), `Mailer::queue` (what `email.send` and the
//!   auth flows' mails go through); the dispatcher delivers `@email` entries.
//! - `users`: `UserService` (end users, argon2id on a bounded pool of
//!   low-priority threads, login tokens; the HTTP auth flows with their rate
//!   limits, mail templates and `auth_mail` duty), and this node's live
//!   sessions as `SessionActor`s under a `SessionSupervisor` for `users.verify`.
//! - `operators`: `OperatorService` (the people who run PiCloud: accounts
//!   as users of a reserved namespace, setup tokens, `pcs_` sessions, the
//!   admin flag and app memberships with roles).
//! - `logs`: `LogBook`, per-app log rings with follow; the cluster-wide
//!   view (`cluster_recent`, `merge_lines`, `follow_member`).
//! - `cron`: cron trigger schedules (parse, next slot in a time zone, misfire).
//! - `realtime`: `Realtime`, this node's topics with subscribers (one
//!   supervised `TopicActor` each), the durable feed into them (`topic_feed`
//!   duty), resumption, and realtime tokens with the apps' signing keys.
//! - `config`: `ActorLimits` (with `RealtimeLimits`), every bound of this layer with its default.
//! - `error`: `AppError`, and the registry codes of storage's typed errors
//!   (`apply_code`, `secret_code`), and the host errors of cluster, apply and
//!   storage failures (`cluster_host_error`, `apply_host_error`).

pub mod app;
pub mod app_actor;
pub mod config;
pub mod cpu;
pub mod cron;
pub mod dispatcher;
pub mod docs;
pub mod duties;
pub mod email;
pub mod error;
pub mod files;
pub mod host;
pub mod logs;
pub mod membership;
pub mod operators;
pub mod outbound;
pub mod pool;
pub mod priority;
pub mod realtime;
pub mod run_host;
pub mod scheduler;
pub mod supervisor;
pub mod users;

pub use config::ActorLimits;
pub use cpu::CpuShares;
pub use duties::{ActorRestarts, Duties};
pub use error::AppError;
pub use host::NodeHost;
pub use logs::{ClusterLogLine, ClusterLogs, FollowEvent, LogBook, LogLimits, LogLine};
pub use pool::{AppRequest, AppRuntime};
pub use supervisor::Apps;
