//! The host: what a server needs from Linux around its drivers.
//!
//! - [`net`]: the listener, accept, socket calls.
//! - [`shutdown`]: the stop request and the signals that make it.
//! - [`sharded`]: the store of a Linux server, and its sharded form for N loops.
//! - [`loops`]: `--threads N`, any single-thread driver run N times; what
//!   the loops keep, readable while they run (for `/metrics`).
//! - [`observed`]: the store as the handler sees it: gets, puts and deletes
//!   counted, the fill and evictions kept for `/metrics`.
//! - [`facts`]: what RESP's `INFO` and memcached's `stats` tell, from the
//!   loops' counters.
//! - [`tls`]: the TLS configuration from certificate files, reloadable.

pub mod facts;
pub mod loops;
pub mod net;
pub mod observed;
pub mod sharded;
pub mod shutdown;
pub mod tls;
