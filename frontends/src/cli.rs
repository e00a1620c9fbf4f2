//! The `kvio` command line: `serve`, `put`, `get`, `cli`, `stats`, and `bench`
//! (which runs the separate `kvio-bench` binary found beside this one, so
//! the server never links the benchmark). Exit codes: `serve` 0 after a
//! signal-requested stop (130 after a second signal forced it); `get` 0
//! found, 1 not found; `cli` 0 at the end of its input; `stats` 0; 2 on
//! any failure (for `stats`: nothing answers), settings refused at
//! start-up included.

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::{Client, ClientError};
use crate::config::{
    Config, DEFAULT_ADDR, DEFAULT_MAX_CONNECTIONS, DEFAULT_STORE_BYTES, DEFAULT_STORE_ENTRIES, Flavor,
    MIN_MAX_FRAME_LEN, check_addr, resolve,
};
use crate::loops::{self, Loops};
use crate::metrics::{self, DEFAULT_METRICS_ADDR};
use crate::net::{self, Listener};
use crate::shutdown::Shutdown;
use crate::{log, stats, stats_command};

/// Exit code of `kvio get` when the key is absent.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit code of any failure.
pub const EXIT_FAILURE: u8 = 2;
/// The environment variable that replaces the default `--addr` of the client commands.
pub const ADDR_ENV: &str = "KVIO_ADDR";
/// The benchmark binary `kvio bench` runs, looked for beside `kvio`.
pub const BENCH_BINARY: &str = "kvio-bench";
/// Smallest `--store-bytes`: one entry with an empty key and an empty value
/// costs its 12-byte record header.
pub const MIN_STORE_BYTES: usize = kvio_core::store::RECORD_HEADER_LEN;

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
    /// Store a value under a key (exit 0 stored, 2 refused or failed).
    Put(PutArgs),
    /// Print the value under a key (exit 0 found, 1 not found, 2 failed).
    Get(GetArgs),
    /// Send many commands over one connection, from stdin or a terminal.
    ///
    /// Commands are read line by line and answered in order, one line each:
    /// `get KEY` prints the value or `(nil)`; `put KEY VALUE` (VALUE is the
    /// rest of the line, spaces included) prints `OK` or `ERR <reason>`.
    /// Blank lines are skipped; an unknown command gets `ERR <what is expected>`.
    /// If the server closed the idle connection, it reconnects once.
    Cli(ConnArgs),
    /// Show what a running server is doing (read from its `--metrics` endpoint).
    ///
    /// Prints the figures as a table; with --watch, one line per interval
    /// with rates (requests/s, hit ratio, connections, store fill, memory).
    /// Exit 2 when nothing answers at the address.
    Stats(StatsArgs),
    /// Load a server, or compare every flavor (runs `kvio-bench`).
    ///
    /// Runs the `kvio-bench` binary that sits beside `kvio` (build it with
    /// `cargo build --release -p kvio-bench`); `kvio bench --help` shows its options.
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments for `kvio-bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// Where the client commands find the server.
#[derive(Debug, Args)]
struct ConnArgs {
    /// Server address, HOST:PORT; a name such as localhost is resolved.
    #[arg(long, value_name = "HOST:PORT", env = ADDR_ENV, hide_env_values = true, default_value = DEFAULT_ADDR, value_parser = check_addr)]
    addr: String,
    /// Seconds to wait for the connection and for each answer (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    timeout: Duration,
}

/// `kvio stats` arguments.
#[derive(Debug, Args)]
struct StatsArgs {
    /// The server's metrics address, as given to `kvio serve --metrics`.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_METRICS_ADDR, value_parser = check_addr)]
    metrics: String,
    /// Print one line every SECONDS, with rates, instead of the table.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    watch: Option<Duration>,
    /// With --watch: stop after N lines (default: until interrupted).
    #[arg(long, value_name = "N", requires = "watch", value_parser = at_least::<1>)]
    count: Option<usize>,
    /// Seconds to wait for the connection and the answer.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    timeout: Duration,
}

/// `kvio put` arguments.
#[derive(Debug, Args)]
struct PutArgs {
    /// The key (UTF-8; at most 1,024 bytes with the default limits).
    key: String,
    /// The value (UTF-8), stored byte for byte. `-` reads it from stdin, to
    /// its end; use `-` or --value-file for values over 128 KiB, the longest
    /// argument Linux passes. A trailing newline is part of the value.
    #[arg(required_unless_present = "value_file", conflicts_with = "value_file")]
    value: Option<String>,
    /// Read the value from FILE instead, byte for byte (it must be UTF-8).
    #[arg(long, value_name = "FILE")]
    value_file: Option<PathBuf>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `kvio get` arguments.
#[derive(Debug, Args)]
struct GetArgs {
    /// The key.
    key: String,
    /// Write the value's bytes alone, without the newline added after it by default.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `kvio serve` options (the protocol's limits; docs/protocol.md).
#[derive(Debug, Args)]
struct ServeArgs {
    /// The IO model.
    #[arg(long, value_enum, default_value_t = Flavor::Epoll)]
    flavor: Flavor,
    /// Address to listen on, HOST:PORT; a name is resolved and the first address bound
    /// (port 0 picks a free one; the start-up line tells which).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_ADDR, value_parser = check_addr)]
    addr: String,
    /// Largest frame `len` accepted (at least 64, so every error response fits); also sizes the store's key and value limits.
    #[arg(long, default_value_t = kvio_core::DEFAULT_MAX_FRAME_LEN,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_MAX_FRAME_LEN)..))]
    max_frame_len: u32,
    /// Entries the store holds (at least 1).
    #[arg(long, default_value_t = DEFAULT_STORE_ENTRIES, value_parser = at_least::<1>)]
    store_entries: usize,
    /// Bytes of keys and values the store holds, 12 bytes of overhead each
    /// (at least 12: room for one empty entry).
    #[arg(long, default_value_t = DEFAULT_STORE_BYTES, value_parser = at_least::<MIN_STORE_BYTES>)]
    store_bytes: usize,
    /// Connections served at once (at least 1); more are accepted and closed at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = at_least::<1>)]
    max_connections: usize,
    /// Close a connection silent this long; 0 disables [default: 200 for blocking, 300000 otherwise].
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Unsent response bytes at which a connection stops being read (at least 1).
    #[arg(long, default_value_t = kvio_core::connection::DEFAULT_OUTPUT_LIMIT, value_parser = at_least::<1>)]
    output_limit: usize,
    /// Bytes all connections may hold together in partial frames and unsent responses (K/M/G, KiB/MiB/GiB suffixes); past it the connection holding the most is closed.
    #[arg(long, default_value = "256MiB", value_parser = bytes)]
    max_client_memory: usize,
    /// Event loops, one thread each, on SO_REUSEPORT listeners over a sharded store; 0: one per CPU (epoll only).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pin loop i to the i-th CPU the process may use (epoll only).
    #[arg(long)]
    pin: bool,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (off by default;
    /// `--metrics` alone: 127.0.0.1:9878). A second stdout line after the
    /// start-up line says where: `kvio serve: metrics=http://HOST:PORT/metrics`.
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = DEFAULT_METRICS_ADDR,
          value_parser = check_addr)]
    metrics: Option<String>,
    /// Log level on stderr: error, warn, info, debug or trace, or an
    /// EnvFilter directive such as `kvio=debug` [default: RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
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
            max_client_memory: self.max_client_memory,
        }
    }
}

/// A count of at least `MIN` (0 connections, entries or bytes would make a
/// server that refuses everything; an output limit of 0 would never read).
fn at_least<const MIN: usize>(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(n) if n < MIN => Err(format!("must be at least {MIN}")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A byte count: digits, then optionally K, M, G (powers of 1024; KiB, MiB, GiB also read).
fn bytes(arg: &str) -> Result<usize, String> {
    let digits = arg.find(|c: char| !c.is_ascii_digit()).unwrap_or(arg.len());
    let (number, unit) = arg.split_at(digits);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => return Err(format!("unknown unit {other:?}: use a byte count, or K, M, G (KiB, MiB, GiB)")),
    };
    let number: usize = number.parse().map_err(|_| format!("{arg:?} is not a byte count such as 67108864 or 64MiB"))?;
    number
        .checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{arg:?} must be above 0 and fit in memory"))
}

/// A timeout in seconds, above 0 (a zero socket timeout would mean "none").
fn seconds(arg: &str) -> Result<Duration, String> {
    match arg.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err("must be above 0 and at most 86400 seconds".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses the process's arguments, runs the command, and says how it went.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Put(args) => put(&args),
        Command::Get(args) => get(&args),
        Command::Cli(args) => cli(&args),
        Command::Stats(args) => stats(&args),
        Command::Bench { args } => bench(args),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = args.config();
    let threads = loops::resolve_threads(args.threads);
    if (args.threads != 1 || args.pin) && !loops::supports_threads(args.flavor) {
        eprintln!(
            "kvio serve: --threads and --pin apply to --flavor epoll only: {} {}",
            args.flavor,
            match args.flavor {
                Flavor::Threaded => "already serves each connection on its own thread",
                Flavor::Uring => "runs one loop (a loop per core is not built for it yet)",
                _ => "is a single-thread model",
            }
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    if args.flavor == Flavor::Uring
        && let Err(why) = crate::uring::probe()
    {
        // Before the start-up line: a server that cannot run never says it listens.
        eprintln!("kvio serve: {why}");
        return ExitCode::from(EXIT_FAILURE);
    }
    if let Err(e) = log::init(args.log_level.as_deref()) {
        eprintln!("kvio serve: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let run = || -> Result<stats::Stats, String> {
        let addrs = resolve(&args.addr)?;
        if let Err(e) = net::raise_fd_limit() {
            tracing::warn!("cannot raise RLIMIT_NOFILE: {e}");
        }
        let listeners = Listener::bind_many(addrs[0], threads)
            .map_err(|e| format!("cannot listen on {}: {e}", named(&args.addr, addrs[0])))?;
        let addr = listeners[0].local_addr();
        log::warn_if_exposed("kvio serve", addr.ip());
        let metrics_listener = match &args.metrics {
            Some(given) => {
                let at = resolve(given)?[0];
                let listener = metrics::bind(at)
                    .map_err(|e| format!("cannot listen on {} for --metrics: {e}", named(given, at)))?;
                log::warn_if_exposed("--metrics", at.ip());
                Some(listener)
            }
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose().map_err(|e| e.to_string())?;
        let shutdown = Shutdown::new().map_err(|e| e.to_string())?;
        // Before the start-up line: whoever reads it may signal at once.
        shutdown.on_signals().map_err(|e| e.to_string())?;
        let loops = std::sync::Arc::new(Loops::new(threads, args.pin));
        let source = metrics::Source { loops: loops.clone(), config, flavor: args.flavor };
        metrics::spawn(metrics_listener, source, shutdown.clone())
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        stats::announce(&stats::startup_line(args.flavor, addr, &config, threads)).map_err(|e| e.to_string())?;
        if let Some(at) = metrics_addr {
            stats::announce(&format!("kvio serve: metrics=http://{at}{}", metrics::PATH)).map_err(|e| e.to_string())?;
        }
        tracing::info!("serving: flavor={} addr={addr} threads={threads}", args.flavor);
        loops::serve(args.flavor, listeners, &config, &shutdown, &loops).map_err(|e| e.to_string())
    };
    match run() {
        Ok(stats) => {
            log::stopping();
            log::flush_suppressed();
            let _ = stats::announce(&stats::stopped_line(&stats));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvio serve: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `localhost:7878 (127.0.0.1:7878)`, or the address alone when it was given as one.
fn named(given: &str, resolved: std::net::SocketAddr) -> String {
    if given == resolved.to_string() { given.to_owned() } else { format!("{given} ({resolved})") }
}

fn connect(conn: &ConnArgs) -> Result<Client, ClientError> {
    Client::connect(conn.addr.as_str(), conn.timeout)
}

/// The value to put: the argument, stdin (`-`) or a file, which must be UTF-8.
fn put_value(args: &PutArgs) -> Result<String, String> {
    let bytes = match (&args.value, &args.value_file) {
        (Some(v), _) if v != "-" => return Ok(v.clone()),
        (Some(_), _) => {
            let mut bytes = Vec::new();
            io::stdin().lock().read_to_end(&mut bytes).map_err(|e| format!("cannot read the value from stdin: {e}"))?;
            bytes
        }
        (None, Some(path)) => {
            std::fs::read(path).map_err(|e| format!("cannot read the value from {}: {e}", path.display()))?
        }
        (None, None) => unreachable!("clap requires a value or --value-file"),
    };
    let from = match &args.value_file {
        Some(path) => path.display().to_string(),
        None => "stdin".to_owned(),
    };
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "the value from {from} is not valid UTF-8 (byte {}); kvio values are protobuf strings, which must be",
            e.utf8_error().valid_up_to()
        )
    })
}

fn put(args: &PutArgs) -> ExitCode {
    let value = match put_value(args) {
        Ok(value) => value,
        Err(e) => {
            eprintln!("kvio put: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match connect(&args.conn).and_then(|mut c| c.put(&args.key, &value)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ClientError::Refused(reason)) => {
            let why = if reason.is_empty() { "no reason given" } else { reason.as_str() };
            eprintln!("kvio put: {} refused to store {}: {why}", args.conn.addr, args.key);
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!("kvio put: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn get(args: &GetArgs) -> ExitCode {
    match connect(&args.conn).and_then(|mut c| c.get(&args.key)) {
        Ok(Some(value)) => {
            let mut out = io::stdout().lock();
            let written = out
                .write_all(value.as_bytes())
                .and_then(|()| if args.raw { Ok(()) } else { out.write_all(b"\n") })
                .and_then(|()| out.flush());
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kvio get: stdout: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Ok(None) => {
            eprintln!("kvio get: {}: not found", args.key);
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(e) => {
            eprintln!("kvio get: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// One line of `kvio cli` input.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Blank,
    Get(&'a str),
    Put(&'a str, &'a str),
    Invalid(&'static str),
}

const CLI_USAGE: &str = "expected `get KEY` or `put KEY VALUE`";

/// `get KEY`, `put KEY VALUE` (VALUE: the rest of the line after one space),
/// commands in any case; the line has no newline left.
fn parse_line(line: &str) -> Line<'_> {
    if line.trim().is_empty() {
        return Line::Blank;
    }
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    if command.eq_ignore_ascii_case("get") {
        match rest {
            "" => Line::Invalid("get needs a KEY"),
            key if key.contains(' ') => Line::Invalid("get takes one KEY (keys have no spaces here)"),
            key => Line::Get(key),
        }
    } else if command.eq_ignore_ascii_case("put") {
        match rest.split_once(' ') {
            Some((key, value)) if !key.is_empty() => Line::Put(key, value),
            _ => Line::Invalid("put needs a KEY and a VALUE"),
        }
    } else {
        Line::Invalid(CLI_USAGE)
    }
}

/// Runs one command; `Err` when the connection failed.
fn answer(client: &mut Client, line: &Line<'_>) -> Result<String, ClientError> {
    match *line {
        Line::Blank => Ok(String::new()),
        Line::Invalid(why) => Ok(format!("ERR {why}")),
        Line::Get(key) => Ok(client.get(key)?.unwrap_or_else(|| "(nil)".to_owned())),
        Line::Put(key, value) => match client.put(key, value) {
            Ok(()) => Ok("OK".to_owned()),
            Err(ClientError::Refused(reason)) if reason.is_empty() => Ok("ERR refused".to_owned()),
            Err(ClientError::Refused(reason)) => Ok(format!("ERR {reason}")),
            Err(e) => Err(e),
        },
    }
}

fn cli(args: &ConnArgs) -> ExitCode {
    let mut client = match connect(args) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("kvio cli: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let stdin = io::stdin();
    let interactive = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut out = io::stdout().lock();
    let mut raw = Vec::new();
    loop {
        if interactive {
            eprint!("kvio {}> ", args.addr);
        }
        raw.clear();
        match input.read_until(b'\n', &mut raw) {
            Ok(0) => {
                if interactive {
                    // Ctrl-D: leave the shell's prompt on a line of its own.
                    eprintln!();
                }
                return ExitCode::SUCCESS;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("kvio cli: stdin: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
        let text = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let line = match std::str::from_utf8(text) {
            Ok(text) => parse_line(text),
            Err(_) => Line::Invalid("the line is not valid UTF-8"),
        };
        if line == Line::Blank {
            continue;
        }
        let reply = match answer(&mut client, &line) {
            Ok(reply) => reply,
            Err(ClientError::Server(reason)) => format!("ERR server error: {reason}"),
            // A server may close a connection that sat idle (the blocking
            // flavor after 200 ms): reconnect once and ask again (a get or
            // the same put twice changes nothing more than once).
            Err(ClientError::Closed | ClientError::Io { .. }) => {
                match connect(args).and_then(|mut c| answer(&mut c, &line).map(|r| (c, r))) {
                    Ok((fresh, reply)) => {
                        client = fresh;
                        reply
                    }
                    Err(e) => {
                        eprintln!("kvio cli: {e}");
                        return ExitCode::from(EXIT_FAILURE);
                    }
                }
            }
            Err(e) => {
                eprintln!("kvio cli: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        if let Err(e) = writeln!(out, "{reply}").and_then(|()| out.flush()) {
            eprintln!("kvio cli: stdout: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
}

fn stats(args: &StatsArgs) -> ExitCode {
    let count = args.count.map(|n| n as u64);
    ExitCode::from(stats_command::run(&args.metrics, args.watch, count, args.timeout))
}

/// Replaces this process with `kvio-bench` from this executable's directory.
fn bench(args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe().map(|exe| exe.with_file_name(BENCH_BINARY));
    let exe = match beside {
        Ok(path) if path.is_file() => path,
        Ok(path) => {
            eprintln!(
                "kvio bench: {} not found: the benchmark is its own binary, so the server does not link it; \
                 build it beside kvio with `cargo build --release -p kvio-bench` (or `cargo build -p kvio-bench` for a debug kvio)",
                path.display()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(e) => {
            eprintln!("kvio bench: cannot find this executable's directory: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // exec returns only on failure.
    let e = std::process::Command::new(&exe).args(args).exec();
    eprintln!("kvio bench: cannot run {}: {e}", exe.display());
    ExitCode::from(EXIT_FAILURE)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::client::DEFAULT_TIMEOUT;

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
        assert_eq!(serve_args(&[]).config().max_client_memory, 256 << 20);
        assert_eq!(serve_args(&["--max-client-memory", "64MiB"]).config().max_client_memory, 64 << 20);
        assert_eq!(serve_args(&["--max-client-memory", "1000"]).config().max_client_memory, 1000);
        assert_eq!(serve_args(&["--max-client-memory", "2K"]).config().max_client_memory, 2048);
        assert!(Cli::try_parse_from(["kvio", "serve", "--max-client-memory", "0"]).is_err());
        assert!(Cli::try_parse_from(["kvio", "serve", "--max-client-memory", "12 parsecs"]).is_err());
    }

    #[test]
    fn threads_default_to_one_loop_unpinned() {
        let args = serve_args(&[]);
        assert_eq!((args.threads, args.pin), (1, false));
        let args = serve_args(&["--threads", "0", "--pin"]);
        assert_eq!((args.threads, args.pin), (0, true));
        assert!(Cli::try_parse_from(["kvio", "serve", "--threads", "-1"]).is_err());
    }

    #[test]
    fn nonsense_limits_are_refused_and_the_smallest_sensible_ones_accepted() {
        for (flag, low, lowest) in [
            ("--max-connections", "0", "1"),
            ("--store-entries", "0", "1"),
            ("--store-bytes", "11", "12"),
            ("--store-bytes", "0", "12"),
        ] {
            let e = Cli::try_parse_from(["kvio", "serve", flag, low]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{flag} {low}");
            assert!(e.to_string().contains(&format!("must be at least {lowest}")), "{e}");
            assert!(Cli::try_parse_from(["kvio", "serve", flag, lowest]).is_ok(), "{flag} {lowest}");
        }
    }

    #[test]
    fn cli_lines() {
        assert_eq!(parse_line(""), Line::Blank);
        assert_eq!(parse_line("  "), Line::Blank);
        assert_eq!(parse_line("get k"), Line::Get("k"));
        assert_eq!(parse_line("GET k"), Line::Get("k"));
        assert_eq!(parse_line("put k v w  x"), Line::Put("k", "v w  x"));
        assert_eq!(parse_line("put k "), Line::Put("k", ""));
        assert!(matches!(parse_line("put k"), Line::Invalid(_)));
        assert!(matches!(parse_line("get"), Line::Invalid(_)));
        assert!(matches!(parse_line("get a b"), Line::Invalid(_)));
        assert_eq!(parse_line("del k"), Line::Invalid(CLI_USAGE));
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(seconds("0").is_err() && seconds("-1").is_err() && seconds("x").is_err());
        assert_eq!(DEFAULT_TIMEOUT, seconds("5").unwrap());
    }
}
