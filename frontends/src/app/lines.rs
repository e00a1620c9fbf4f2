//! The lines `kvio serve` prints on stdout: the start-up line once the
//! socket listens, and the stopped line with the totals. Tests, the bench
//! and the soak read them (the format is part of the contract).

use std::io::{self, Write};
use std::net::SocketAddr;

use crate::app::config::{Config, Flavor};
pub use crate::sansio::stats::Stats;

/// The start-up line: the first line on stdout, flushed, once the socket
/// listens; `threads` is the number of loops (1 for every single-loop
/// flavor, and for `threaded`, whose threads are per connection).
pub fn startup_line(flavor: Flavor, addr: SocketAddr, config: &Config, threads: usize) -> String {
    format!("kvio serve: flavor={flavor} addr={addr} {} threads={threads}", config.describe())
}

/// Under `--when-full evict`, a stopping server's line on its store, on
/// stdout before the final line: `kvio serve: store entries=N evictions=N`
/// (every flavor).
pub fn store_line(config: &Config, entries: usize, evictions: u64) {
    if config.when_full == kvio_core::WhenFull::Evict {
        let _ = announce(&format!("kvio serve: store entries={entries} evictions={evictions}"));
    }
}

/// The final line.
pub fn stopped_line(stats: &Stats) -> String {
    format!("kvio serve: stopped connections={} requests={} errors={}", stats.connections, stats.requests, stats.errors)
}

/// Prints `line` on stdout and flushes (tests and the bench wait for it).
pub fn announce(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn lines_match_the_contract() {
        let config = Config::for_flavor(Flavor::Epoll);
        assert_eq!(
            startup_line(Flavor::BusyPoll, "127.0.0.1:7878".parse().unwrap(), &config, 1),
            "kvio serve: flavor=busy-poll addr=127.0.0.1:7878 max_frame_len=1048576 store_entries=100000 \
             store_bytes=67108864 max_connections=10000 idle_timeout_ms=300000 output_limit=65536 \
             max_client_memory=268435456 threads=1"
        );
        let stats = Stats { connections: 1, requests: 3, errors: 1 };
        assert_eq!(stopped_line(&stats), "kvio serve: stopped connections=1 requests=3 errors=1");
    }
}
