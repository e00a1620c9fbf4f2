//! kvio's Linux frontends: the four servers of "Many flavors of Networking
//! IO" on rustix and a fifth on io_uring, all driving the same `kvio_core::Connection` so that they
//! differ only in how bytes move, plus a blocking client and the `kvio`
//! command line.
//!
//! - [`blocking`], [`threaded`], [`busy_poll`], [`epoll`] (readiness and
//!   blocking models) and [`uring`] (completions): one file per flavor, one
//!   entry point each: `serve(listener, &config, &shutdown) -> io::Result<Stats>`.
//! - [`loops`]: `--threads N`, N copies of a flavor's loop on SO_REUSEPORT
//!   listeners over the [`sharded`] store (the threaded flavor's store too).
//! - Shared by all: [`session`] (the sans-IO connection state machine:
//!   every rule about time and closing), [`driver`] (moving bytes between
//!   a socket and a session), [`net`] (listener, accept, socket calls),
//!   [`config`] (limits, store), [`shutdown`], [`stats`] (counters and the
//!   lines printed), [`observed`] (the store as the handler sees it: gets,
//!   puts and fill counted).
//! - For operators: [`log`] (levels, the rate limit), [`metrics`] (the
//!   `/metrics` endpoint and what `kvio stats` reads from it).
//! - [`client`] and [`cli`].

pub mod blocking;
pub mod busy_poll;
pub mod cli;
pub mod client;
pub mod config;
pub mod driver;
pub mod epoll;
pub mod log;
pub mod loops;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod observed;
pub mod session;
pub mod sharded;
pub mod shutdown;
pub mod stats;
pub mod stats_command;
pub mod threaded;
pub mod uring;

use std::io;

pub use config::{Config, Flavor};
pub use loops::Loops;
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
        Flavor::Uring => uring::serve(listener, config, shutdown),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::client::{Client, ClientError};
    use std::time::Duration;

    /// Every flavor in-process: client put/get, an error frame, then a stop with the right totals.
    fn serves_then_stops(flavor: Flavor) {
        let config = Config { store_entries: 64, store_bytes: 1 << 16, ..Config::for_flavor(flavor) };
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        let shutdown = Shutdown::new().unwrap();
        let stop = shutdown.clone();
        let server = std::thread::spawn(move || serve(flavor, listener, &config, &shutdown));
        let timeout = Duration::from_secs(5);
        {
            let mut client = Client::connect(addr, timeout).unwrap();
            client.put("DiskType", "NVMe SSD").unwrap();
            assert_eq!(client.get("DiskType").unwrap().as_deref(), Some("NVMe SSD"));
            assert_eq!(client.get("absent").unwrap(), None);
        }
        let mut broken = Client::connect(addr, timeout).unwrap();
        broken.send_raw(&[0, 0, 0, 0]).unwrap();
        match broken.read_response() {
            Ok(m) => assert_eq!((m.kind, m.status, m.value.as_str()), (0, 1, "frame length below 5")),
            Err(e) => panic!("{e}"),
        }
        assert!(matches!(broken.read_frame(), Err(ClientError::Closed)), "closed after the error frame");
        stop.trigger();
        let stats = server.join().unwrap().unwrap();
        assert_eq!(stats, Stats { connections: 2, requests: 3, errors: 1 });
    }

    #[test]
    fn blocking_serves_then_stops() {
        serves_then_stops(Flavor::Blocking);
    }

    #[test]
    fn threaded_serves_then_stops() {
        serves_then_stops(Flavor::Threaded);
    }

    #[test]
    fn busy_poll_serves_then_stops() {
        serves_then_stops(Flavor::BusyPoll);
    }

    #[test]
    fn epoll_serves_then_stops() {
        serves_then_stops(Flavor::Epoll);
    }

    #[test]
    fn uring_serves_then_stops() {
        if let Err(why) = uring::probe() {
            eprintln!("skipped uring_serves_then_stops: {why}");
            return;
        }
        serves_then_stops(Flavor::Uring);
    }
}
