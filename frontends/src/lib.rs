//! kvio's Linux frontends: the four servers of "Many flavors of Networking
//! IO" on rustix, all driving the same `kvio_core::Connection` so that they
//! differ only in how bytes move, plus a blocking client and the `kvio`
//! command line.
//!
//! - [`blocking`], [`threaded`], [`busy_poll`], [`epoll`]: one file per
//!   flavor, one entry point each: `serve(listener, &config, &shutdown) -> io::Result<Stats>`.
//! - Shared by all: [`net`] (listener, accept, socket calls), [`session`]
//!   (the connection adapter), [`config`] (limits, store), [`shutdown`],
//!   [`stats`] (counters and the lines printed).
//! - [`client`] and [`cli`].

pub mod blocking;
pub mod busy_poll;
pub mod cli;
pub mod client;
pub mod config;
pub mod epoll;
pub mod net;
pub mod session;
pub mod shutdown;
pub mod stats;
pub mod threaded;

use std::io;

pub use config::{Config, Flavor};
pub use net::Listener;
pub use shutdown::Shutdown;
pub use stats::Stats;

/// Serves `listener` with `flavor` until `shutdown` is requested; then
/// answers what was received, closes every connection and returns the totals.
pub fn serve(flavor: Flavor, listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    match flavor {
        Flavor::Blocking => blocking::serve(listener, config, shutdown),
        Flavor::Threaded => threaded::serve(listener, config, shutdown),
        Flavor::BusyPoll => busy_poll::serve(listener, config, shutdown),
        Flavor::Epoll => epoll::serve(listener, config, shutdown),
    }
}
