//! The sans-IO layer: every rule a server has, with no socket, no clock
//! and no thread. Input arrives with the time it arrived; what to send,
//! what to wait for and when to wake come out. Nothing here imports the
//! drivers, the host or the application.
//!
//! - [`session`]: one connection's rules about time and closing.
//! - [`memory`]: what all connections hold together, and the one victim rule.
//! - [`stats`]: the counters, and why a connection ended.

pub mod memory;
pub mod session;
pub mod stats;
