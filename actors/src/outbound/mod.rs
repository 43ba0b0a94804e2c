//! Outbound HTTP for scripts (`http.request`), behind the SSRF guard.
//!
//! - `guard`: pure — the refused address classes, the operator's allow list
//!   (`--http-out-allow`), the target of a URL.
//! - `dns`: a minimal A/AAAA stub resolver for `--http-out-dns`.
//! - `client`: [`Outbound`], limits (timeouts, byte caps, per-app and
//!   per-node slots) and the reqwest clients whose resolver checks every
//!   address before reqwest may connect to it.

pub mod client;
mod dns;
pub mod guard;

pub use client::{Outbound, OutboundConfig};
pub use guard::{AllowList, AllowListError};
