//! The host: what a server needs from Linux around its drivers.
//!
//! - [`data_dir`]: `--data-dir`: the lock, which journal files make up the
//!   state, atomic snapshots, torn tails truncated, damage moved aside.
//! - [`durability`]: the journal while serving: each loop's log IO
//!   between turns (group commit), the rewrite thread, the figures.
//! - [`journaled`]: the store under `--data-dir`: every write logged with
//!   its sequence number; the snapshot a rewrite writes while serving.
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

pub mod data_dir;
pub mod durability;
pub mod facts;
pub mod journaled;
pub mod loops;
pub mod net;
pub mod observed;
pub mod sharded;
pub mod shutdown;
pub mod tls;
