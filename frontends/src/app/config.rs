//! What a server is told at start-up: the [`Flavor`], the limits of
//! docs/protocol.md ([`Config`], with the contract's defaults in one place), and
//! the store those limits size ([`HostStore`], allocated once).
//!
//! What it does not own: parsing the command line (that is [`crate::cli`]).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use kvio_core::StoreLimits;
use kvio_core::WhenFull;
/// The slot-table rule is the store's own (`kvio_core::store::slots_for`).
pub use kvio_core::store::slots_for;

/// The store of a Linux server (its home is the host layer).
pub use crate::host::sharded::HostStore;
use crate::host::sharded::{ShardedStore, StoreAllocError};
use crate::sansio::server::Limits;
/// How long a stopping server keeps delivering responses (the session's rule).
pub use crate::sansio::session::SHUTDOWN_GRACE;
use crate::sansio::session::{Clock, Framing, Timing};

/// Default `--addr`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";
/// `--resp` given alone: where Redis clients look first.
pub const DEFAULT_RESP_ADDR: &str = "127.0.0.1:6379";
/// `--memcache` given alone: where memcached clients look first.
pub const DEFAULT_MEMCACHE_ADDR: &str = "127.0.0.1:11211";
/// How an address is written, for messages about a malformed one.
pub const ADDR_FORM: &str = "HOST:PORT, such as 127.0.0.1:7878, localhost:7878 or [::1]:7878";

/// Checks that `addr` has the form HOST:PORT (a name or an IP address, and
/// a port number) without resolving it; the error repeats nothing (clap
/// shows the input beside it) and says what form is expected.
pub fn check_addr(addr: &str) -> Result<String, String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(addr.to_owned()),
        _ => Err(format!("expected {ADDR_FORM}")),
    }
}

/// The addresses `addr` (HOST:PORT) resolves to, in the resolver's order.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    check_addr(addr).map_err(|e| format!("invalid address '{addr}': {e}"))?;
    let found: Vec<SocketAddr> = addr.to_socket_addrs().map_err(|e| format!("cannot resolve {addr}: {e}"))?.collect();
    if found.is_empty() {
        return Err(format!("{addr} resolves to no address"));
    }
    Ok(found)
}

/// Smallest `--max-frame-len`: every fixed response must fit in a frame the
/// server itself would accept, the longest being the 51-byte (`len` 47)
/// error frame of a malformed payload; 64 leaves room and is a round number.
pub const MIN_MAX_FRAME_LEN: u32 = 64;
/// Default `--store-entries`.
pub const DEFAULT_STORE_ENTRIES: usize = 100_000;
/// Default `--store-bytes`: 64 MiB.
pub const DEFAULT_STORE_BYTES: usize = 64 << 20;
/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default idle timeout of the blocking flavor: one silent client may hold
/// the single-connection server this long.
pub const BLOCKING_IDLE_TIMEOUT: Duration = Duration::from_millis(200);
/// Default idle timeout of every other flavor: 5 minutes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `--max-client-memory`: 256 MiB. What every connection holds
/// together in partial frames, held-back input and unsent responses. A
/// connection can hold up to a max frame plus the output limit (~1.1 MiB
/// by default), so 256 MiB lets 200-odd clients send maximal frames at the
/// same moment, while 10,000 clients that each send a 1 MiB frame minus
/// one byte cost 256 MiB, not 10 GiB. Four times the default store budget:
/// the server's total stays a few hundred MiB.
pub const DEFAULT_MAX_CLIENT_MEMORY: usize = 256 << 20;

/// The IO model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Flavor {
    /// One thread, one connection at a time, blocking IO.
    Blocking,
    /// A thread per connection, blocking IO.
    Threaded,
    /// One thread, non-blocking sockets polled in a loop.
    BusyPoll,
    /// One thread, non-blocking sockets, epoll.
    Epoll,
    /// One thread, io_uring completions (Linux 6.0).
    Uring,
}

impl Flavor {
    /// Every flavor, in the article's order, then the completion model.
    pub const ALL: [Flavor; 5] = [Flavor::Blocking, Flavor::Threaded, Flavor::BusyPoll, Flavor::Epoll, Flavor::Uring];

    /// The name on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Flavor::Blocking => "blocking",
            Flavor::Threaded => "threaded",
            Flavor::BusyPoll => "busy-poll",
            Flavor::Epoll => "epoll",
            Flavor::Uring => "uring",
        }
    }

    /// The idle timeout used when none is given.
    pub const fn default_idle_timeout(self) -> Duration {
        match self {
            Flavor::Blocking => BLOCKING_IDLE_TIMEOUT,
            _ => IDLE_TIMEOUT,
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits every flavor enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest frame `len` accepted (parser), and what sizes the store's key/value limits.
    pub max_frame_len: u32,
    /// Entries the store must be able to hold.
    pub store_entries: usize,
    /// The store's byte budget for keys and values (12 bytes a record on
    /// top; more for an expiry, flags or cas: docs/store.md).
    pub store_bytes: usize,
    /// Connections served at once; one more is accepted and closed at once.
    pub max_connections: usize,
    /// A connection that moves no byte this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Unsent response bytes at which a connection is no longer read from.
    pub output_limit: usize,
    /// Bytes all connections may hold together (see [`crate::memory`]).
    pub max_client_memory: usize,
    /// What a full store does with a put that does not fit (`--when-full`).
    pub when_full: WhenFull,
    /// Whether every entry carries a cas (memcached's `cas` needs it; 8
    /// bytes an entry). No flag sets it yet: the memcached listener will.
    pub store_cas: bool,
}

/// The store's clock from now on: Unix time in milliseconds, read once
/// here and carried forward by the monotonic clock (see [`Clock`]).
pub fn store_clock() -> Clock {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Clock::starting(std::time::Instant::now(), u64::try_from(unix.as_millis()).unwrap_or(u64::MAX))
}

impl Config {
    /// The contract's defaults for `flavor`.
    pub fn for_flavor(flavor: Flavor) -> Config {
        Config {
            max_frame_len: kvio_core::DEFAULT_MAX_FRAME_LEN,
            store_entries: DEFAULT_STORE_ENTRIES,
            store_bytes: DEFAULT_STORE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Some(flavor.default_idle_timeout()),
            output_limit: kvio_core::connection::DEFAULT_OUTPUT_LIMIT,
            max_client_memory: DEFAULT_MAX_CLIENT_MEMORY,
            when_full: WhenFull::Refuse,
            store_cas: false,
        }
    }

    /// A fresh framing state for one connection.
    pub fn connection(&self) -> kvio_core::Connection {
        kvio_core::Connection::new(self.max_frame_len, self.output_limit)
    }

    /// The sans-IO server's limits: these, with the idle timeout and the
    /// server's grace and linger (and the frame deadline if `flavor` is
    /// `blocking`), and the store's clock from now.
    pub fn limits(&self, flavor: Flavor) -> Limits {
        let timing = Timing::new(self.idle_timeout);
        let timing = if flavor == Flavor::Blocking { timing.with_frame_deadline() } else { timing };
        let framing = Framing { max_frame_len: self.max_frame_len, output_limit: self.output_limit };
        Limits { framing, timing, clock: store_clock(), max_connections: self.max_connections }
    }

    /// The store limits these settings call for.
    pub fn store_limits(&self) -> StoreLimits {
        StoreLimits::for_frame(self.max_frame_len, self.store_entries, self.store_bytes)
    }

    /// The sharded store these limits call for, with shards for `loops`
    /// loops (see [`ShardedStore::shard_count`]); allocated now and never again.
    pub fn sharded_store(&self, loops: usize) -> ShardedStore {
        let limits = self.store_limits();
        ShardedStore::with_policy(limits, ShardedStore::shard_count(limits, loops), self.when_full)
            .with_cas(self.store_cas)
    }

    /// The store these limits call for, allocated now and never again.
    pub fn store(&self) -> HostStore {
        crate::host::sharded::host_store(self.store_limits(), self.store_entries, self.store_bytes)
            .when_full(self.when_full)
            .with_cas(self.store_cas)
    }

    /// Whether the machine gives the memory of the store that `flavor`
    /// with `loops` loops allocates ([`crate::serve_in`] and
    /// [`crate::serve_loops`]: a sharded store for threaded and for more
    /// than one loop, the plain store otherwise): it is allocated and
    /// freed. Pages nobody writes cost nothing, so this is cheap; it lets
    /// `kvio serve` refuse to start, with a sentence, where the allocation
    /// after the start-up line would abort the process.
    pub fn check_store(&self, flavor: Flavor, loops: usize) -> Result<(), String> {
        let tried = match flavor {
            Flavor::Threaded => {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                self.try_sharded_store(cpus).map(drop)
            }
            _ if loops > 1 => self.try_sharded_store(loops).map(drop),
            _ => crate::host::sharded::try_host_store(self.store_limits(), self.store_entries, self.store_bytes)
                .map(drop),
        };
        tried.map_err(|e| self.store_too_big(e, machine_memory()))
    }

    fn try_sharded_store(&self, loops: usize) -> Result<ShardedStore, StoreAllocError> {
        let limits = self.store_limits();
        ShardedStore::try_with_policy(limits, ShardedStore::shard_count(limits, loops), self.when_full)
    }

    /// What `kvio serve` says when the store cannot be allocated: what was
    /// asked, and what the machine has (`(total, available)` bytes, from
    /// /proc/meminfo, when it could be read).
    fn store_too_big(&self, e: StoreAllocError, machine: Option<(u64, u64)>) -> String {
        use crate::app::size::bytes as said;
        let has = match machine {
            Some((total, available)) => {
                format!("this machine has {} of memory, {} of it available", said(total), said(available))
            }
            None => "this machine's memory could not be read from /proc/meminfo".to_owned(),
        };
        format!(
            "cannot allocate the store: --store-bytes {} and --store-entries {} ask for {} at start-up; {has}. \
             Give a smaller --store-bytes",
            said(self.store_bytes as u64),
            self.store_entries,
            said(e.bytes as u64),
        )
    }

    /// The start-up line's fields after the flavor and address.
    pub fn describe(&self) -> String {
        format!(
            "max_frame_len={} store_entries={} store_bytes={} max_connections={} idle_timeout_ms={} output_limit={} \
             max_client_memory={}",
            self.max_frame_len,
            self.store_entries,
            self.store_bytes,
            self.max_connections,
            self.idle_timeout.map_or(0, |d| d.as_millis()),
            self.output_limit,
            self.max_client_memory,
        )
    }
}

/// `(MemTotal, MemAvailable)` of /proc/meminfo, in bytes.
fn machine_memory() -> Option<(u64, u64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

#[cfg(test)]
mod test {
    use super::*;
    use kvio_core::KeyValueStore;

    #[test]
    fn store_holds_exactly_the_entries_asked_for() {
        let config = Config { store_entries: 100, store_bytes: 1 << 16, ..Config::for_flavor(Flavor::Epoll) };
        let mut store = config.store();
        assert_eq!(store.limits().max_entries, 100);
        for i in 0..100 {
            store.put(format!("k{i}").as_bytes(), b"v").unwrap();
        }
        assert!(store.put(b"one too many", b"v").is_err());
        assert_eq!(KeyValueStore::get(&mut store, b"k7", |v| v.map(<[u8]>::to_vec)), Some(b"v".to_vec()));
    }

    #[test]
    fn a_store_the_machine_cannot_give_is_a_sentence_not_an_abort() {
        // Past any machine's address space (128 TiB on x86-64 Linux), whatever the overcommit setting.
        let config = Config { store_bytes: 1 << 50, ..Config::for_flavor(Flavor::Epoll) };
        let e = config.check_store(Flavor::Epoll, 1).unwrap_err();
        assert!(e.starts_with("cannot allocate the store: --store-bytes 1,125,899,906,842,624 bytes ("), "{e}");
        assert!(e.contains("this machine has ") && e.ends_with("Give a smaller --store-bytes"), "{e}");
        let said = config.store_too_big(StoreAllocError { bytes: 3 << 30 }, Some((24 << 30, 20 << 30)));
        assert!(said.contains("ask for 3,221,225,472 bytes (3 GiB) at start-up; this machine has"), "{said}");
        assert!(
            said.contains("has 25,769,803,776 bytes (24 GiB) of memory, 21,474,836,480 bytes (20 GiB) of it"),
            "{said}"
        );
        let (total, available) = machine_memory().expect("/proc/meminfo");
        assert!(total >= available && available > 0);
        // What the defaults ask is had, for every flavor and loop count.
        let config = Config::for_flavor(Flavor::Epoll);
        for (flavor, loops) in [(Flavor::Epoll, 1), (Flavor::Epoll, 4), (Flavor::Threaded, 1), (Flavor::Blocking, 1)] {
            assert_eq!(config.check_store(flavor, loops), Ok(()), "{flavor} {loops}");
        }
    }

    #[test]
    fn every_fixed_response_fits_the_smallest_max_frame_len() {
        use kvio_core::frame::{FrameError, MIN_FRAME_LEN};
        use kvio_proto::{Kind, MALFORMED_REASON, Status, response_payload_len};
        let reasons = [
            MALFORMED_REASON,
            FrameError::TooShort.as_str(),
            FrameError::TooLong.as_str(),
            FrameError::BadFooter.as_str(),
        ];
        let longest =
            reasons.iter().map(|r| response_payload_len(b"", r.as_bytes(), Kind::Error, Status::NotOk)).max().unwrap();
        let longest_len = u32::try_from(longest).unwrap() + MIN_FRAME_LEN;
        assert_eq!(longest_len + 4, 51, "the malformed-payload frame");
        assert!(longest_len <= MIN_MAX_FRAME_LEN);
    }

    #[test]
    fn addresses_are_host_colon_port() {
        for good in ["127.0.0.1:7878", "localhost:0", "[::1]:1", "example.invalid:65535"] {
            assert_eq!(check_addr(good).as_deref(), Ok(good));
        }
        for bad in ["garbage", "127.0.0.1", ":7878", "localhost:", "localhost:65536", "localhost:x"] {
            assert!(check_addr(bad).unwrap_err().contains("HOST:PORT"), "{bad}");
        }
        assert!(resolve("localhost:7878").unwrap().iter().all(|a| a.ip().is_loopback() && a.port() == 7878));
        assert_eq!(resolve("127.0.0.2:9").unwrap(), ["127.0.0.2:9".parse().unwrap()]);
        assert!(resolve("garbage").unwrap_err().starts_with("invalid address 'garbage': expected HOST:PORT"));
    }

    #[test]
    fn describe_matches_the_contract() {
        let config = Config::for_flavor(Flavor::Blocking);
        assert_eq!(
            config.describe(),
            "max_frame_len=1048576 store_entries=100000 store_bytes=67108864 max_connections=10000 \
             idle_timeout_ms=200 output_limit=65536 max_client_memory=268435456"
        );
    }
}
