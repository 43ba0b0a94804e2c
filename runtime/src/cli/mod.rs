//! The operator CLI. Every command is one or two admin API calls; errors print
//! the server's message and code and exit non-zero.
//!
//! # Layout
//!
//! - `client`: the HTTP client, saved credentials, path encoding.
//! - `collect`: the files `deploy` sends (`public/` as bytes, `.picloudignore`).
//! - `commands`: the commands and how their output is printed.
//! - `escape`: terminal-safe text; every string from the server that is
//!   printed goes through it (scripts write log lines, kv values, errors).
//! - `print`: JSON or text output, dates.
//! - `secrets`: `picloud secrets ...`.
//! - `users`: `picloud users ...` (an app's end users).
//! - `operators`: `picloud login --email`, `logout`, `admins ...`,
//!   `members ...` (operators and their apps).
//! - `realtime`: `picloud realtime rotate-key`.
//! - `files`: `picloud files put|get|ls|rm|url` (streamed, progress line).
//! - `mail`: `picloud mail list|show` (mail captured without a relay).
//! - `backup`: `picloud backup` (streamed to FILE.partial, checked, renamed)
//!   and `picloud restore` (offline).

mod backup;
mod client;
mod collect;
mod commands;
mod escape;
mod files;
mod mail;
mod operators;
mod print;
mod realtime;
mod secrets;
mod users;

pub use commands::{CLIENT_ARG_IDS, ClientArgs, ClientCommand, run};
