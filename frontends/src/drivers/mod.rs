//! The drivers: each moves bytes between sockets and the sans-IO
//! [`Server`](crate::sansio::server::Server) with one IO model, and owns
//! nothing but its descriptor↔handle map and its syscalls. Every rule
//! (admission, refusals and the pause after a failed accept, client
//! memory and eviction, whether a session is read, the stop's fan-out,
//! deadlines, counting) is the server's: a driver reports what happened
//! and does what the server says.
//!
//! The drivers sit above the host and import it (the listener, the stop,
//! [`Loop`], which the host's loop runner hands each loop); nothing below
//! imports a driver.
//!
//! - [`busy_poll`], [`epoll`] (readiness) and [`uring`] (completions):
//!   single-thread loops behind the one [`Driver`] trait, so the
//!   loop-per-core runner ([`crate::host::loops`]) runs any of them N times.
//! - [`blocking`]: one connection at a time on a blocking socket, over
//!   a [`Server`](crate::sansio::server::Server) too ([`pump::serve_blocking`]);
//!   a [`Driver`] as well, so the application runs it as one loop whose
//!   counters `/metrics` reads (it never runs N times: `--threads` refuses it).
//! - [`threaded`]: a thread per connection, each serving a
//!   [`Server`](crate::sansio::server::Server) of its own
//!   ([`pump::serve_blocking`]) over the places, client memory and
//!   counters they all share; over the cap the victim is picked across
//!   every thread ([`crate::sansio::memory::Elsewhere`]).
//! - [`pump`]: what the readiness and blocking drivers share.

use std::io;

use kvio_core::KeyValueStore;

pub use crate::host::loops::Loop;
use crate::host::loops::Loops;
use crate::host::net::Listener;
use crate::sansio::wire::Protocols;

pub mod blocking;
pub mod busy_poll;
pub mod epoll;
pub mod pump;
pub mod threaded;
pub mod uring;

/// A single-thread IO model: one loop on the calling thread.
pub trait Driver {
    /// Serves `listeners` (one per protocol: each listener says what its
    /// connections speak) over `store` until `run.shutdown` is requested
    /// and the loop's last connection has closed.
    fn serve_loop<S: KeyValueStore>(listeners: Vec<Listener>, run: Loop<'_>, store: S) -> io::Result<()>;
}

/// What a loop's server answers with: every protocol over `store`, and
/// `INFO` and `stats` from every loop's counters.
pub fn handler<'a, S: KeyValueStore>(run: &Loop<'a>, store: S) -> Protocols<S, &'a Loops> {
    Protocols::with_info(store, run.loops)
}
