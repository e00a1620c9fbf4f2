//! The host: what a server needs from Linux around its drivers.
//!
//! - [`net`]: the listener, accept, socket calls.
//! - [`shutdown`]: the stop request and the signals that make it.
//! - [`sharded`]: the store of a Linux server, and its sharded form for N loops.
//! - [`loops`]: `--threads N`, any single-thread driver run N times.

pub mod loops;
pub mod net;
pub mod sharded;
pub mod shutdown;
