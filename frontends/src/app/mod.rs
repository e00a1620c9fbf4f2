//! The application: the `kvio` command and what a server is told at start-up.
//!
//! - [`cli`]: `kvio serve | put | get | del | cli | stats | bench`.
//! - [`log`]: the `tracing` set-up (`--log-level`), the non-loopback warning.
//! - [`metrics`]: `--metrics`: the `/metrics` endpoint on its own thread.
//! - [`stats_command`]: `kvio stats`, a reader of that endpoint.
//! - [`config`]: the flavor, the limits and their defaults.
//! - [`security`]: `--auth-file`, `--protected-mode`, the TLS files and their
//!   reload on SIGHUP; the client commands' `--auth-file` and `--tls-ca`.
//! - `size`: the one rule for byte counts; `repl`: what a line of `kvio cli` means.

pub mod cli;
pub mod config;
pub mod lines;
pub mod log;
pub mod metrics;
mod repl;
pub mod security;
mod size;
pub mod stats_command;
