//! The sans-IO layer: every rule a server has, with no socket, no clock
//! (but [`warn`]'s rate limit) and no thread. Input arrives with the time it arrived; what to send,
//! what to wait for and when to wake come out. Nothing here imports the
//! drivers, the host or the application.
//!
//! - [`session`]: one connection's rules about time and closing.
//! - [`server`]: the rules about the set of connections: handles,
//!   admission, the memory cap and its eviction, the stop, the timers.
//! - [`log_writer`]: one loop's journal writer: records into a buffer,
//!   epochs for group commit, when a sync is owed (`--fsync`).
//! - [`memory`]: what all connections hold together, and the one victim rule.
//! - [`security`]: protected mode, the shared secret and each connection's
//!   authentication, answered in the client's protocol.
//! - [`tls`]: TLS (rustls) as a byte transform between a session and its socket.
//! - [`recovery`]: from the bytes of journal files (a snapshot and logs)
//!   to the entries a store starts with; torn tails cut, damage refused.
//! - [`stats`]: the counters (closes by reason, gets, puts and deletes by
//!   outcome, bytes), read by the metrics while the loops run.
//! - [`warn`]: the operator warnings the counters raise, rate-limited.
//! - [`wire`]: which protocol a connection speaks (kvio frames, RESP,
//!   memcached), and the one handler that answers them all on one store.
//! - `model` (tests, and the `model` feature): a deterministic simulation
//!   of the server that checks its invariants after every step.

pub mod log_writer;
pub mod memory;
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod outbuf;
pub mod recovery;
pub mod security;
pub mod server;
pub mod session;
pub mod stats;
pub mod tls;
pub mod warn;
pub mod wire;
