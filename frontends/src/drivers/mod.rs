//! The drivers: each moves bytes between sockets and the sans-IO layer
//! with one IO model, and owns nothing but its descriptors and syscalls.
//!
//! - [`blocking`], [`threaded`], [`busy_poll`], [`epoll`] (readiness and
//!   blocking models) and [`uring`] (completions).
//! - [`pump`]: what the readiness and blocking drivers share.

pub mod blocking;
pub mod busy_poll;
pub mod epoll;
pub mod pump;
pub mod threaded;
pub mod uring;
