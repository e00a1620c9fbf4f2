//! The application: the `kvio` command and what a server is told at start-up.
//!
//! - [`cli`]: `kvio serve | put | get | cli | bench`.
//! - [`config`]: the flavor, the limits and their defaults.
//! - `size`: the one rule for byte counts; `repl`: what a line of `kvio cli` means.

pub mod cli;
pub mod config;
pub mod lines;
mod repl;
mod size;
