//! The operator CLI. Every command is one or two admin API calls; errors print
//! the server's message and code and exit non-zero.

mod client;
mod commands;
mod secrets;

pub use commands::{ClientArgs, ClientCommand, run};
