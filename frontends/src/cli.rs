//! The `kvio` command line: `serve`, `put`, `get` and `bench` (the last
//! handed whole to `kvio_bench::run`). Exit codes: `serve` 0 after a
//! signal-requested stop; `get` 0 found, 1 not found; 2 on any failure.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::{Client, DEFAULT_TIMEOUT};
use crate::config::{
    Config, DEFAULT_ADDR, DEFAULT_MAX_CONNECTIONS, DEFAULT_STORE_BYTES, DEFAULT_STORE_ENTRIES, Flavor,
    MIN_MAX_FRAME_LEN,
};
use crate::net::{self, Listener};
use crate::shutdown::Shutdown;
use crate::stats;

/// Exit code of `kvio get` when the key is absent.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit code of any failure.
pub const EXIT_FAILURE: u8 = 2;

/// kvio: a key/value server over TCP, built five ways.
#[derive(Debug, Parser)]
#[command(name = "kvio", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Store VALUE under KEY.
    Put {
        key: String,
        value: String,
        #[arg(long, default_value = DEFAULT_ADDR)]
        addr: String,
    },
    /// Print the value under KEY (exit 1 if there is none).
    Get {
        key: String,
        #[arg(long, default_value = DEFAULT_ADDR)]
        addr: String,
    },
    /// Load a server, or compare every flavor.
    Bench(kvio_bench::BenchCommand),
}

/// `kvio serve` options (PROTOCOL.md's limits).
#[derive(Debug, Args)]
struct ServeArgs {
    /// The IO model.
    #[arg(long, value_enum, default_value_t = Flavor::Epoll)]
    flavor: Flavor,
    /// Address to listen on (port 0 picks a free one; the start-up line tells which).
    #[arg(long, default_value = DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Largest frame `len` accepted (at least 64, so every error response fits); also sizes the store's key and value limits.
    #[arg(long, default_value_t = kvio_core::DEFAULT_MAX_FRAME_LEN,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_MAX_FRAME_LEN)..))]
    max_frame_len: u32,
    /// Entries the store holds.
    #[arg(long, default_value_t = DEFAULT_STORE_ENTRIES)]
    store_entries: usize,
    /// Bytes of keys and values the store holds (12 bytes of overhead each).
    #[arg(long, default_value_t = DEFAULT_STORE_BYTES)]
    store_bytes: usize,
    /// Connections served at once; more are accepted and closed at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Close a connection silent this long; 0 disables [default: 200 for blocking, 300000 otherwise].
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Unsent response bytes at which a connection stops being read (at least 1).
    #[arg(long, default_value_t = kvio_core::connection::DEFAULT_OUTPUT_LIMIT, value_parser = positive)]
    output_limit: usize,
}

impl ServeArgs {
    fn config(&self) -> Config {
        let idle = self
            .idle_timeout_ms
            .map_or(Some(self.flavor.default_idle_timeout()), |ms| (ms > 0).then(|| Duration::from_millis(ms)));
        Config {
            max_frame_len: self.max_frame_len,
            store_entries: self.store_entries,
            store_bytes: self.store_bytes,
            max_connections: self.max_connections,
            idle_timeout: idle,
            output_limit: self.output_limit,
        }
    }
}

/// A count that must not be 0 (an output limit of 0 would never read).
fn positive(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses the process's arguments, runs the command, and says how it went.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Put { key, value, addr } => put(&addr, &key, &value),
        Command::Get { key, addr } => get(&addr, &key),
        Command::Bench(cmd) => ExitCode::from(kvio_bench::run(cmd).clamp(0, 255) as u8),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = args.config();
    if args.flavor == Flavor::Uring
        && let Err(why) = crate::uring::probe()
    {
        // Before the start-up line: a server that cannot run never says it listens.
        eprintln!("kvio serve: {why}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let run = || -> std::io::Result<stats::Stats> {
        if let Err(e) = net::raise_fd_limit() {
            eprintln!("kvio serve: cannot raise RLIMIT_NOFILE: {e}");
        }
        let listener = Listener::bind(args.addr)?;
        let shutdown = Shutdown::new()?;
        // Before the start-up line: whoever reads it may signal at once.
        shutdown.on_signals()?;
        stats::announce(&stats::startup_line(args.flavor, listener.local_addr(), &config))?;
        crate::serve(args.flavor, listener, &config, &shutdown)
    };
    match run() {
        Ok(stats) => {
            let _ = stats::announce(&stats::stopped_line(&stats));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvio serve: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn put(addr: &str, key: &str, value: &str) -> ExitCode {
    match Client::connect(addr, DEFAULT_TIMEOUT).map_err(Into::into).and_then(|mut c| c.put(key, value)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvio put: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn get(addr: &str, key: &str) -> ExitCode {
    match Client::connect(addr, DEFAULT_TIMEOUT).map_err(Into::into).and_then(|mut c| c.get(key)) {
        Ok(Some(value)) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("kvio get: {key}: not found");
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(e) => {
            eprintln!("kvio get: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["kvio", "serve"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Serve(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn idle_timeout_defaults_per_flavor_and_zero_disables() {
        assert_eq!(serve_args(&[]).flavor, Flavor::Epoll);
        assert_eq!(serve_args(&[]).config().idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(serve_args(&["--flavor", "blocking"]).config().idle_timeout, Some(Duration::from_millis(200)));
        assert_eq!(serve_args(&["--flavor", "busy-poll", "--idle-timeout-ms", "0"]).config().idle_timeout, None);
        assert_eq!(serve_args(&["--idle-timeout-ms", "7"]).config().idle_timeout, Some(Duration::from_millis(7)));
        assert!(Cli::try_parse_from(["kvio", "serve", "--max-frame-len", "4"]).is_err());
        let low = Cli::try_parse_from(["kvio", "serve", "--max-frame-len", "63"]).unwrap_err();
        assert_eq!(low.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(low.to_string().contains("64"), "{low}");
        assert_eq!(serve_args(&["--max-frame-len", "64"]).config().max_frame_len, 64);
        assert!(Cli::try_parse_from(["kvio", "serve", "--output-limit", "0"]).is_err());
        assert_eq!(serve_args(&["--output-limit", "1"]).config().output_limit, 1);
    }
}
