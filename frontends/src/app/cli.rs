//! The `kvio` command line: `serve`, `put`, `get`, `del`, `cli`, `stats`, `bench` (which
//! runs the separate `kvio-bench` binary found beside this one, so the
//! server never links the benchmark), `completions` and `man`. Exit codes:
//! `serve` 0 after a signal-requested stop, however many SIGTERMs arrive
//! (130 when a second Ctrl-C, a second or more after the first, forced it); `get` 0 found, 1 not found; `cli` 0 at the end of its input
//! (1 when piped commands failed); `stats` 0; 2 on any failure (for
//! `stats`: nothing answers), settings refused at start-up included.
//!
//! Environment: `KVIO_ADDR` is the client commands' `--addr`; `kvio serve
//! --addr` reads `KVIO_LISTEN`, so pointing the clients elsewhere never
//! moves where a server listens.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::app::lines as stats;
use crate::app::metrics::{self, DEFAULT_METRICS_ADDR};
use crate::app::repl::{self, Line};
use crate::app::security::{self, ProtectedMode, SecurityArgs};
use crate::app::size::{self, size_at_least};
use crate::app::{log, stats_command};
use crate::config::{
    Config, DEFAULT_ADDR, DEFAULT_MAX_CONNECTIONS, DEFAULT_MEMCACHE_ADDR, DEFAULT_RESP_ADDR, DEFAULT_STORE_ENTRIES,
    Flavor, MIN_MAX_FRAME_LEN, check_addr, resolve,
};
use crate::host::facts::Description;
use crate::loops::{self, Loops};
use crate::net::{self, Listener};
use crate::sansio::wire::Protocol;
use crate::shutdown::Shutdown;
use kvio_client::{Client, Error as ClientError};

/// Exit code of `kvio get` when the key is absent.
pub const EXIT_NOT_FOUND: u8 = 1;
/// Exit code of any failure.
pub const EXIT_FAILURE: u8 = 2;
/// Exit code of `kvio cli` fed from a pipe or file when a command failed.
pub const EXIT_CLI_FAILED: u8 = 1;
/// The environment variable that replaces the default `--addr` of the client commands.
pub const ADDR_ENV: &str = "KVIO_ADDR";
/// The environment variable that replaces the default `--addr` of `kvio serve`.
pub const LISTEN_ENV: &str = "KVIO_LISTEN";
/// How to install the benchmark binary, said wherever it is missing.
pub const BENCH_INSTALL: &str = "cargo install --locked --path bench";
/// The benchmark binary `kvio bench` runs, looked for beside `kvio`.
pub const BENCH_BINARY: &str = "kvio-bench";
/// Smallest `--store-bytes`: one entry with an empty key and an empty value
/// costs its 12-byte record header.
pub const MIN_STORE_BYTES: usize = kvio_core::store::RECORD_HEADER_LEN;

/// kvio: a key/value server over TCP, built five ways.
#[derive(Debug, Parser)]
#[command(
    name = "kvio",
    version,
    propagate_version = true,
    after_help = "Environment: KVIO_ADDR is the default --addr of put, get, del and cli; KVIO_LISTEN is kvio serve's. \
                  Byte counts take K, M, G, KiB, MiB or GiB, all powers of 1024."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server until SIGINT or SIGTERM.
    ///
    /// A stop answers what was received, then closes every connection
    /// (within 2 s of grace and 2 s of linger), and exits 0. Repeated
    /// signals are the same stop: several SIGTERMs, or a SIGINT after a
    /// SIGTERM, still exit 0. A second Ctrl-C (SIGINT) at least 1 s after
    /// the first exits at once, with status 130.
    Serve(ServeArgs),
    /// Store a value under a key (exit 0 stored, 2 refused or failed).
    Put(PutArgs),
    /// Print the value under a key (exit 0 found, 1 not found, 2 failed).
    Get(GetArgs),
    /// Delete a key (exit 0 deleted, 1 not found, 2 failed).
    Del(DelArgs),
    /// Send many commands over one connection, from stdin or a terminal.
    ///
    /// Commands are read line by line and answered in order, one line each:
    /// `get KEY` prints the value or `(nil)`; `put KEY VALUE` prints `OK` or
    /// `ERR <reason>`; `del KEY` prints `OK` (deleted) or `(nil)` (it was not
    /// there); `help` lists the commands; `quit` or `exit` leaves. At a
    /// terminal, lines are edited as in a shell (arrows, Ctrl-R), with a
    /// history kept in ~/.kvio_history. Words are split as a shell
    /// splits them: quote a key or a value with spaces (`put "a key" "a
    /// value"`). Blank lines and lines starting with `#` are skipped. If the
    /// server closed the idle connection, it reconnects once. Exit status:
    /// 0, or 1 when stdin is not a terminal and a command failed (the count
    /// goes to stderr); 2 when the connection failed.
    Cli(ConnArgs),
    /// Show what a running server is doing (read from its `--metrics` endpoint).
    ///
    /// Prints the figures as a table; with --watch, one line per interval
    /// with rates (requests/s, hit ratio, connections, store fill, memory).
    /// Exit 2 when nothing answers at the address.
    Stats(StatsArgs),
    /// Load a server, or compare every flavor (runs `kvio-bench`).
    ///
    /// Runs the `kvio-bench` binary that sits beside `kvio` (install it with
    /// `cargo install --locked --path bench`); `kvio bench --help` shows its options.
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Bench {
        /// Arguments for `kvio-bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Print a shell completion script for kvio.
    ///
    /// bash (with the bash-completion package): `mkdir -p ~/.local/share/bash-completion/completions`, then
    /// `kvio completions bash > ~/.local/share/bash-completion/completions/kvio`;
    /// zsh: `mkdir -p ~/.zfunc`, `kvio completions zsh > ~/.zfunc/_kvio` (with `fpath+=~/.zfunc` before compinit in
    /// ~/.zshrc); fish: `mkdir -p ~/.config/fish/completions`, `kvio completions fish > ~/.config/fish/completions/kvio.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, kvio(1), in roff.
    ///
    /// `mkdir -p ~/.cargo/share/man/man1`, `kvio man > ~/.cargo/share/man/man1/kvio.1`, then `man kvio` (man looks in
    /// ../share/man beside each directory on PATH, and cargo installs kvio in ~/.cargo/bin); or read it at once with
    /// `kvio man | man -l -`.
    Man,
}

/// Where the client commands find the server.
#[derive(Debug, Args)]
struct ConnArgs {
    /// Server address, HOST:PORT; a name such as localhost is resolved (`kvio serve` reads KVIO_LISTEN instead).
    #[arg(long, value_name = "HOST:PORT", env = ADDR_ENV, hide_env_values = true, default_value = DEFAULT_ADDR, value_parser = check_addr)]
    addr: String,
    /// Seconds to wait for the connection and for each answer (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    timeout: Duration,
    /// The server's --max-frame-len: a longer request is refused here, before it is sent (the protocol does not
    /// carry the server's limit; give the same value as `kvio serve` if it is not the default).
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = size_at_least::<u32>(MIN_MAX_FRAME_LEN.into()))]
    max_frame_len: u32,
    /// The server's shared secret (`kvio serve --auth-file`), from this file, shown first on every connection; the
    /// file must not be readable by group or others.
    #[arg(long, value_name = "PATH", env = "KVIO_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// Speak TLS, trusting the server's certificate if one of these CAs (PEM) signed it for the host of --addr.
    #[arg(long, value_name = "FILE", env = "KVIO_TLS_CA")]
    tls_ca: Option<PathBuf>,
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

/// `kvio del` arguments.
#[derive(Debug, Args)]
struct DelArgs {
    /// The key.
    key: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `--when-full`: what a full store does with a put that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WhenFullArg {
    /// Refuse it (`store full`); nothing stored is lost.
    Refuse,
    /// Evict entries not used recently (CLOCK) to make room.
    Evict,
}

/// `kvio serve` options (the protocol's limits; docs/protocol.md). Byte
/// counts take plain numbers or K, M, G, KiB, MiB, GiB (powers of 1024).
#[derive(Debug, Args)]
#[command(after_help = "Byte counts: a plain number (65536) or one with K, M, G, KiB, MiB or GiB, all powers of 1024 \
                        (64K = 64KiB = 65536); KB, MB and GB are refused as ambiguous.")]
struct ServeArgs {
    /// The IO model.
    #[arg(long, value_enum, default_value_t = Flavor::Epoll)]
    flavor: Flavor,
    /// Address to listen on, HOST:PORT; a name is resolved and the first address bound
    /// (port 0 picks a free one; the start-up line tells which). The client commands' KVIO_ADDR is not read here.
    #[arg(long, value_name = "HOST:PORT", env = LISTEN_ENV, default_value = DEFAULT_ADDR, value_parser = check_addr)]
    addr: String,
    /// Largest frame `len` accepted, in bytes (at least 64, so every error response fits); also sizes the store's key
    /// and value limits.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = size_at_least::<u32>(MIN_MAX_FRAME_LEN.into()))]
    max_frame_len: u32,
    /// Entries the store holds (at least 1).
    #[arg(long, default_value_t = DEFAULT_STORE_ENTRIES, value_parser = at_least::<1>)]
    store_entries: usize,
    /// Bytes of keys and values the store holds, 12 bytes of overhead each
    /// (at least 12: room for one empty entry).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = size_at_least::<usize>(MIN_STORE_BYTES as u64))]
    store_bytes: usize,
    /// Connections served at once (at least 1); more are accepted and closed at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = at_least::<1>)]
    max_connections: usize,
    /// Close a connection silent this long; 0 disables [default: 200 for blocking, 300000 otherwise].
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Unsent response bytes at which a connection stops being read (at least 1).
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = size_at_least::<usize>(1))]
    output_limit: usize,
    /// Bytes all connections may hold together in partial frames and unsent responses; past it the connection holding
    /// the most is closed.
    #[arg(long, value_name = "BYTES", default_value = "256MiB", value_parser = size_at_least::<usize>(1))]
    max_client_memory: usize,
    /// Event loops, one thread each, on SO_REUSEPORT listeners over a sharded store; 0: one per CPU (epoll, uring, busy-poll).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pin loop i to the i-th CPU the process may use (epoll, uring, busy-poll).
    #[arg(long)]
    pin: bool,
    /// What a full store does with a put that does not fit: refuse it, or evict entries not used recently.
    #[arg(long, value_enum, default_value = "refuse")]
    when_full: WhenFullArg,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (off by default;
    /// `--metrics` alone: 127.0.0.1:9878). A second stdout line after the
    /// start-up line says where: `kvio serve: metrics=http://HOST:PORT/metrics`.
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = DEFAULT_METRICS_ADDR,
          value_parser = check_addr)]
    metrics: Option<String>,
    /// Also speak RESP2 (what Redis clients speak) on HOST:PORT, over the same store (off by default; `--resp` alone:
    /// 127.0.0.1:6379). A start-up line says where: `kvio serve: resp=HOST:PORT`. docs/redis-and-memcached.md lists
    /// the commands.
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = DEFAULT_RESP_ADDR,
          value_parser = check_addr)]
    resp: Option<String>,
    /// Also speak the memcached text and meta protocols on HOST:PORT, over the same store (off by default;
    /// `--memcache` alone: 127.0.0.1:11211); entries then carry memcached's 8-byte cas. A start-up line says where:
    /// `kvio serve: memcache=HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = DEFAULT_MEMCACHE_ADDR,
          value_parser = check_addr)]
    memcache: Option<String>,
    /// Log level on stderr: error, warn, info, debug or trace, or an
    /// EnvFilter directive such as `kvio=debug` [default: RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Keep the data in DIR: every acknowledged put, delete and expiry change goes to an append-only log there, and a
    /// start loads it back (off by default: memory only). DIR is locked: a second server on it refuses to start.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// With --data-dir: when the log is synced to disk. always: before each answer to a write (one sync covers a whole
    /// loop turn); everysec: once a second (a crash loses at most about the last 2 s); no: when the kernel writes back
    /// (a graceful stop syncs in every mode).
    #[arg(long, value_enum, default_value = "everysec", requires = "data_dir")]
    fsync: FsyncArg,
    /// With --data-dir: start even though a file is damaged before its end, keeping what comes before the damage and
    /// moving the rest aside (DIR/<file>.damaged-<offset>).
    #[arg(long, requires = "data_dir")]
    repair: bool,
    #[command(flatten)]
    security: SecurityArgs,
}

/// `--fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FsyncArg {
    Always,
    Everysec,
    No,
}

impl From<FsyncArg> for crate::sansio::log_writer::Fsync {
    fn from(f: FsyncArg) -> Self {
        match f {
            FsyncArg::Always => Self::Always,
            FsyncArg::Everysec => Self::EverySec,
            FsyncArg::No => Self::No,
        }
    }
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
            when_full: match self.when_full {
                WhenFullArg::Refuse => kvio_core::WhenFull::Refuse,
                WhenFullArg::Evict => kvio_core::WhenFull::Evict,
            },
            // Only memcached's `cas` needs it; kvio frames and RESP never read it.
            store_cas: self.memcache.is_some(),
        }
    }
}

/// A count of at least `MIN` (0 connections, entries or bytes would make a
/// server that refuses everything; an output limit of 0 would never read).
fn at_least<const MIN: usize>(arg: &str) -> Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(n) if n < MIN => Err(format!("must be at least {MIN}.")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number, at least {MIN}.")),
    }
}

/// A timeout in seconds, above 0 (a zero socket timeout would mean "none").
fn seconds(arg: &str) -> Result<Duration, String> {
    match arg.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err("must be above 0 and at most 86400 seconds.".into()),
        Err(_) => Err("expected seconds, such as 5 or 0.5.".into()),
    }
}

/// Parses the process's arguments, runs the command, and says how it went.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(&args),
        Command::Put(args) => put(&args),
        Command::Get(args) => get(&args),
        Command::Del(args) => del(&args),
        Command::Cli(args) => cli(&args),
        Command::Stats(args) => stats_of(&args),
        Command::Bench { args } => bench(args),
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
    }
}

/// `kvio completions SHELL`: the script, generated from the command itself.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    // Into memory first: generate panics on a write error, and a closed pipe is not a bug.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kvio", &mut script);
    write_out("completions", &script)
}

/// Writes `bytes` to stdout; a failure (a closed pipe, a full disk) is reported, not a panic.
fn write_out(command: &str, bytes: &[u8]) -> ExitCode {
    match io::stdout().lock().write_all(bytes).and_then(|()| io::stdout().lock().flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(command, format_args!("stdout: {e}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `kvio man`: kvio(1), one page with a section per subcommand (clap_mangen
/// would make a page each; one file is what `kvio man > kvio.1` installs).
fn man() -> ExitCode {
    let command = Cli::command();
    let mut page = Vec::new();
    let rendered = clap_mangen::Man::new(command.clone()).render(&mut page).and_then(|()| {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut section = format!(".SH \"KVIO {}\"\n", sub.get_name().to_uppercase()).into_bytes();
            let man = clap_mangen::Man::new(sub.clone());
            man.render_description_section(&mut section)?;
            man.render_options_section(&mut section)?;
            // Sub-headings of this section, not sections of their own.
            let section = String::from_utf8_lossy(&section)
                .replace(".SH DESCRIPTION\n", "")
                .replace(".SH OPTIONS\n", ".SS Options\n");
            page.extend_from_slice(section.as_bytes());
        }
        Ok(())
    });
    // The subcommands are sections of this page, not pages of their own:
    // the list names `kvio serve`, not a kvio-serve(1) that does not exist.
    let page: String = String::from_utf8_lossy(&page)
        .lines()
        .map(|line| match line.strip_prefix("kvio\\-").and_then(|l| l.strip_suffix("(1)")) {
            Some(sub) if command.find_subcommand(sub).is_some() || sub == "help" => format!("kvio {sub}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    match rendered {
        Ok(()) => write_out("man", page.as_bytes()),
        Err(e) => {
            report("man", format_args!("cannot render the page: {e}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = args.config();
    let threads = loops::resolve_threads(args.threads);
    if (args.threads != 1 || args.pin) && !crate::supports_threads(args.flavor) {
        eprintln!(
            "kvio serve: --threads and --pin apply to --flavor epoll, uring and busy-poll only: {} {}.",
            args.flavor,
            match args.flavor {
                Flavor::Threaded => "already serves each connection on its own thread",
                _ => "is the one-connection-at-a-time model",
            }
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    if args.flavor == Flavor::Uring
        && let Err(why) = crate::uring::probe()
    {
        // Before the start-up line: a server that cannot run never says it listens.
        report("serve", why);
        return ExitCode::from(EXIT_FAILURE);
    }
    if let Err(e) = log::init(args.log_level.as_deref()) {
        report("serve", e);
        return ExitCode::from(EXIT_FAILURE);
    }
    // Before the start-up line: a store the machine cannot give would
    // otherwise abort the process once it says it listens.
    if let Err(e) = config.check_store(args.flavor, threads) {
        report("serve", e);
        return ExitCode::from(EXIT_FAILURE);
    }
    let others = [(Protocol::Resp, &args.resp), (Protocol::Memcache, &args.memcache)];
    if args.flavor == Flavor::Blocking && others.iter().any(|(_, at)| at.is_some()) {
        report("serve", crate::drivers::blocking::ONE_LISTENER_REASON);
        return ExitCode::from(EXIT_FAILURE);
    }
    let run = || -> Result<stats::Stats, String> {
        let addrs = resolve(&args.addr)?;
        if let Err(e) = net::raise_fd_limit() {
            tracing::warn!("cannot raise RLIMIT_NOFILE: {e}");
        }
        let kvio = Listener::bind_many(addrs[0], threads)
            .map_err(|e| format!("cannot listen on {}: {e}", named(&args.addr, addrs[0])))?;
        let addr = kvio[0].local_addr();
        let mut bound = vec![("kvio serve".to_owned(), addr.ip())];
        // Each loop gets one listener of each protocol (SO_REUSEPORT spreads
        // each protocol's connections over the loops).
        let mut listeners: Vec<Vec<Listener>> = kvio.into_iter().map(|l| vec![l]).collect();
        let mut announced = Vec::new();
        for (protocol, given) in others {
            let Some(given) = given else { continue };
            let at = resolve(given)?[0];
            let more = Listener::bind_many(at, threads)
                .map_err(|e| format!("cannot listen on {} for --{protocol}: {e}", named(given, at)))?;
            let bound_at = more[0].local_addr();
            bound.push((format!("--{protocol}"), bound_at.ip()));
            announced.push(format!("kvio serve: {protocol}={bound_at}"));
            for (mine, listener) in listeners.iter_mut().zip(more) {
                mine.push(listener.speaking(protocol));
            }
        }
        let ips: Vec<_> = bound.iter().map(|(_, ip)| *ip).collect();
        let secured = args.security.load(&ips)?;
        let protected_off = args.security.protected_mode == ProtectedMode::No;
        for (what, ip) in &bound {
            if let Some(warning) = security::exposure(what, *ip, &secured.security, protected_off) {
                tracing::warn!("{warning}");
            }
        }
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
        // Before the start-up line: the data is loaded (or the start refused)
        // before anyone is told the server listens.
        let durable = match &args.data_dir {
            Some(dir) => Some(open_data_dir(dir, args, &config, threads)?),
            None => None,
        };
        let shutdown = Shutdown::new().map_err(|e| e.to_string())?;
        // Before the start-up line: whoever reads it may signal at once.
        shutdown.on_signals().map_err(|e| e.to_string())?;
        let loops = std::sync::Arc::new(Loops::new(threads, args.pin));
        if let Some(certificates) = secured.certificates {
            security::reload_on_sighup(certificates).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
        }
        loops.secure(secured.security);
        loops.describe(Description {
            max_connections: config.max_connections,
            store_entries: config.store_entries,
            store_bytes: config.store_bytes,
            when_full: config.when_full,
            ..Description::now(args.flavor.as_str())
        });
        if let Some((_, durability, _)) = &durable {
            loops.set_journal(durability.shared_figures());
        }
        let source = metrics::Source { loops: loops.clone(), config, flavor: args.flavor };
        metrics::spawn(metrics_listener, source, shutdown.clone())
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        stats::announce(&stats::startup_line(args.flavor, addr, &config, threads)).map_err(|e| e.to_string())?;
        if let Some((_, _, loaded)) = &durable {
            stats::announce(loaded).map_err(|e| e.to_string())?;
        }
        if let Some(at) = metrics_addr {
            stats::announce(&format!("kvio serve: metrics=http://{at}{}", metrics::PATH)).map_err(|e| e.to_string())?;
        }
        for line in &announced {
            stats::announce(line).map_err(|e| e.to_string())?;
        }
        tracing::info!("serving: flavor={} addr={addr} threads={threads}", args.flavor);
        let served = if let Some((store, durability, _)) = &durable {
            crate::serve_durable(args.flavor, listeners, &config, &shutdown, &loops, store, durability)
        } else if threads == 1 && !args.pin {
            crate::serve_in(args.flavor, listeners.remove(0), &config, &shutdown, &loops)
        } else {
            crate::serve_loops(args.flavor, listeners, &config, &shutdown, &loops)
        };
        served.map_err(|e| e.to_string())
    };
    match run() {
        Ok(stats) => {
            log::stopping();
            log::flush_suppressed();
            let _ = stats::announce(&stats::stopped_line(&stats));
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("serve", e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `--data-dir`: the store, with the directory's state loaded into it, the
/// journal ready for `threads` loops, and the line that says what was
/// loaded (stdout, after the start-up line); each cut or repair is logged.
fn open_data_dir(
    dir: &std::path::Path,
    args: &ServeArgs,
    config: &Config,
    threads: usize,
) -> Result<(crate::sharded::ShardedStore, crate::host::durability::Durability, String), String> {
    // The threaded flavor's connection threads share a journal per CPU, as its store has shards per CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loops = if args.flavor == Flavor::Threaded { cpus } else { threads.max(1) };
    let store = config.sharded_store(loops);
    let now_ms = crate::config::store_clock().millis(std::time::Instant::now());
    let (durability, started) =
        crate::host::durability::Durability::open(dir, args.fsync.into(), args.repair, &store, loops, now_ms)
            .map_err(|e| e.to_string())?;
    let report = &started.report;
    for (file, offset, dropped) in &report.torn {
        tracing::warn!(
            "{}: torn tail cut at offset {offset} ({dropped} bytes): a write the crash interrupted",
            file.display()
        );
    }
    for (file, offset, aside) in &report.repaired {
        tracing::warn!("{}: damaged at offset {offset}; the rest is in {}", file.display(), aside.display());
    }
    let loaded = format!(
        "kvio serve: data-dir={} fsync={} loaded {} entries ({} records, {} files, {} bytes) in {} ms{}",
        dir.display(),
        durability.fsync(),
        started.loaded.stored,
        report.records,
        report.files,
        report.bytes,
        started.took.as_millis(),
        if started.loaded.refused > 0 {
            format!("; {} did not fit the store", started.loaded.refused)
        } else {
            String::new()
        },
    );
    Ok((store, durability, loaded))
}

/// `localhost:7878 (127.0.0.1:7878)`, or the address alone when it was given as one.
fn named(given: &str, resolved: std::net::SocketAddr) -> String {
    if given == resolved.to_string() { given.to_owned() } else { format!("{given} ({resolved})") }
}

fn connect(conn: &ConnArgs) -> Result<Client, ClientError> {
    let local = |reason: String| ClientError::Auth { addr: conn.addr.clone(), reason };
    let mut options = kvio_client::Options::default();
    if let Some(path) = &conn.auth_file {
        let secret = security::read_secret(path, false).map_err(local)?;
        options = options.secret(String::from_utf8_lossy(secret.expose()).into_owned());
    }
    if let Some(ca) = &conn.tls_ca {
        let (config, name) = security::client_tls(ca, &conn.addr).map_err(local)?;
        options = options.tls(config, name);
    }
    let mut client = Client::connect_with(conn.addr.as_str(), conn.timeout, options)?;
    client.set_max_frame_len(conn.max_frame_len);
    Ok(client)
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
            "the value from {from} is not valid UTF-8 (byte {} is not); kvio values are protobuf strings, which must be \
             UTF-8.",
            e.utf8_error().valid_up_to()
        )
    })
}

/// A key or value as a message repeats it (cut to 64 characters with its
/// length): the client library's rule, so both say a key the same way.
pub(crate) use kvio_client::shorten;

/// Prints `kvio COMMAND: message`, ending the sentence if it does not end yet.
fn report(command: &str, message: impl std::fmt::Display) {
    let message = message.to_string();
    let stop = if message.ends_with(['.', '?', '!']) { "" } else { "." };
    eprintln!("kvio {command}: {message}{stop}");
}

/// Why a put was refused, with the sizes that matter: `reason` is the
/// server's (docs/protocol.md), the limits those of a server started with
/// `max_frame_len` (`--max-frame-len`: the protocol does not carry the server's).
fn refusal(reason: &str, key: &str, value: &str, max_frame_len: u32) -> String {
    let limits = kvio_core::StoreLimits::for_frame(max_frame_len, 0, 0);
    let frame = if max_frame_len == kvio_core::DEFAULT_MAX_FRAME_LEN {
        format!("the default --max-frame-len ({})", size::bytes(u64::from(max_frame_len)))
    } else {
        format!("--max-frame-len {}", size::bytes(u64::from(max_frame_len)))
    };
    let over = |what: &str, len: usize, limit: usize| {
        format!(
            "the {what} is {}; a server with {frame} takes {what}s up to {}.",
            size::bytes(len as u64),
            size::bytes(limit as u64)
        )
    };
    match reason {
        "" => "no reason given.".to_owned(),
        "key too long" => format!("key too long: {}", over("key", key.len(), limits.max_key_len)),
        "value too long" => format!("value too long: {}", over("value", value.len(), limits.max_value_len)),
        "store full" => "store full: its --store-entries or --store-bytes is used up.".to_owned(),
        other => format!("{other}."),
    }
}

fn put(args: &PutArgs) -> ExitCode {
    let value = match put_value(args) {
        Ok(value) => value,
        Err(e) => {
            report("put", e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match connect(&args.conn).and_then(|mut c| c.put(&args.key, &value)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ClientError::Refused { reason, .. }) => {
            let why = refusal(&reason, &args.key, &value, args.conn.max_frame_len);
            report("put", format_args!("{} refused to store {}: {why}", args.conn.addr, shorten(&args.key)));
            ExitCode::from(EXIT_FAILURE)
        }
        Err(ClientError::TooLong { .. }) => {
            let limits = kvio_core::StoreLimits::for_frame(args.conn.max_frame_len, 0, 0);
            let reason = if args.key.len() > limits.max_key_len { "key too long" } else { "value too long" };
            let why = refusal(reason, &args.key, &value, args.conn.max_frame_len);
            report(
                "put",
                format_args!(
                    "not sent to {}: {why} For a server started with a larger --max-frame-len, give kvio put the \
                     same --max-frame-len",
                    args.conn.addr
                ),
            );
            ExitCode::from(EXIT_FAILURE)
        }
        Err(ClientError::Server { reason, .. }) if reason == kvio_core::frame::FrameError::TooLong.as_str() => {
            let why = refusal("value too long", &args.key, &value, args.conn.max_frame_len);
            report("put", format_args!("{} refused the request as too long ({reason}): {why}", args.conn.addr));
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            report("put", client_error(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// A client error as the commands say it: an unexpected response is
/// described, not dumped (it may hold a megabyte of value).
fn client_error(e: &ClientError) -> String {
    match e {
        ClientError::Unexpected { what, .. } => format!("unexpected response: {}", shorten(what)),
        ClientError::TooLong { addr, key, len, max } => format!(
            "not sent to {addr}: the request for {} is a {}-byte frame, over --max-frame-len {}; for a server \
             started with a larger --max-frame-len, give the same one here",
            shorten(key),
            size::thousands(*len),
            size::bytes(u64::from(*max))
        ),
        other => other.to_string(),
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
                    report("get", format_args!("stdout: {e}"));
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Ok(None) => {
            report("get", format_args!("{} not found", shorten(&args.key)));
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(e) => {
            report("get", client_error(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn del(args: &DelArgs) -> ExitCode {
    match connect(&args.conn).and_then(|mut c| c.delete(&args.key)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            report("del", format_args!("{} not found", shorten(&args.key)));
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Err(e) => {
            report("del", client_error(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Runs one command: the reply line and whether the command failed;
/// `Err` when the connection failed.
fn answer(client: &mut Client, line: &Line) -> Result<(String, bool), ClientError> {
    match line {
        Line::Blank => Ok((String::new(), false)),
        Line::Help => Ok((repl::HELP.to_owned(), false)),
        Line::Invalid(why) => Ok((format!("ERR {why}"), true)),
        Line::Get(key) => Ok((client.get(key)?.unwrap_or_else(|| "(nil)".to_owned()), false)),
        Line::Put(key, value) => match client.put(key, value) {
            Ok(()) => Ok(("OK".to_owned(), false)),
            Err(ClientError::Refused { reason, .. }) if reason.is_empty() => Ok(("ERR refused".to_owned(), true)),
            Err(ClientError::Refused { reason, .. }) => Ok((format!("ERR {reason}"), true)),
            Err(e) => Err(e),
        },
        Line::Quit => Ok((String::new(), false)),
        Line::Del(key) => Ok((if client.delete(key)? { "OK" } else { "(nil)" }.to_owned(), false)),
    }
}

fn stats_of(args: &StatsArgs) -> ExitCode {
    let count = args.count.map(|n| n as u64);
    ExitCode::from(stats_command::run(&args.metrics, args.watch, count, args.timeout))
}

fn cli(args: &ConnArgs) -> ExitCode {
    let mut client = match connect(args) {
        Ok(client) => client,
        Err(e) => {
            report("cli", client_error(&e));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut input = match repl::Input::open(format!("kvio {}> ", args.addr)) {
        Ok(input) => input,
        Err(e) => {
            report("cli", e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let interactive = input.is_terminal();
    let mut out = io::stdout().lock();
    let mut raw = Vec::new();
    let (mut commands, mut failed) = (0u64, 0u64);
    if interactive {
        eprintln!("kvio cli: connected to {}; type help for the commands, quit or Ctrl-D to leave.", args.addr);
    }
    let mut quit = false;
    loop {
        let line = match input.next_line(&mut raw) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                report("cli", e);
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        match line {
            Line::Blank => continue,
            Line::Quit => {
                quit = true;
                break;
            }
            _ => {}
        }
        let reply = match answer(&mut client, &line) {
            Ok(reply) => reply,
            Err(ClientError::Server { reason, .. }) => (format!("ERR server error: {reason}"), true),
            Err(e @ ClientError::TooLong { .. }) => (format!("ERR {}", client_error(&e)), true),
            // A server may close a connection that sat idle (the blocking
            // flavor after 200 ms): the client dropped it, and asking again
            // connects once more (a get or the same put twice changes
            // nothing more than once).
            Err(ClientError::Closed { .. } | ClientError::Io { .. }) => match answer(&mut client, &line) {
                Ok(reply) => reply,
                Err(e) => {
                    report("cli", client_error(&e));
                    return ExitCode::from(EXIT_FAILURE);
                }
            },
            Err(e) => {
                report("cli", client_error(&e));
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        commands += 1;
        failed += u64::from(reply.1);
        if let Err(e) = writeln!(out, "{}", reply.0).and_then(|()| out.flush()) {
            report("cli", format_args!("stdout: {e}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    input.close();
    if interactive {
        if !quit {
            // Ctrl-D: leave the shell's prompt on a line of its own.
            eprintln!();
        }
        return ExitCode::SUCCESS;
    }
    if failed > 0 {
        // As redis-cli in pipe mode: a script learns that something failed.
        report("cli", format_args!("{failed} of {commands} commands failed"));
        return ExitCode::from(EXIT_CLI_FAILED);
    }
    ExitCode::SUCCESS
}

/// Replaces this process with `kvio-bench` from this executable's directory.
fn bench(args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe().map(|exe| exe.with_file_name(BENCH_BINARY));
    let exe = match beside {
        Ok(path) if path.is_file() => path,
        Ok(path) => {
            if args.iter().any(|a| a == "--help" || a == "-h") {
                // Help needs no benchmark: say what it is and how to get it.
                let mut command = Cli::command();
                let help = command.find_subcommand_mut("bench").map(|b| b.render_long_help().to_string());
                println!("{}", help.unwrap_or_default());
                println!(
                    "{} is not installed beside this kvio; for its options, install it: {BENCH_INSTALL}",
                    BENCH_BINARY
                );
                return ExitCode::SUCCESS;
            }
            report(
                "bench",
                format_args!(
                    "{} not found: the benchmark is its own binary, so the server does not link it. Install it \
                     beside kvio with `{BENCH_INSTALL}` from a kvio checkout (or, for a kvio built in the checkout, \
                     `cargo build --release -p kvio-bench`)",
                    path.display()
                ),
            );
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(e) => {
            report("bench", format_args!("cannot find this executable's directory: {e}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // exec returns only on failure.
    let e = std::process::Command::new(&exe).args(args).exec();
    report("bench", format_args!("cannot run {}: {e}", exe.display()));
    ExitCode::from(EXIT_FAILURE)
}

#[cfg(test)]
mod test {
    use super::*;
    use kvio_client::DEFAULT_TIMEOUT;

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
    fn every_byte_count_flag_reads_units_with_the_same_values_as_bytes() {
        for (flag, unit, bytes) in [
            ("--store-bytes", "64MiB", "67108864"),
            ("--output-limit", "64KiB", "65536"),
            ("--max-frame-len", "1MiB", "1048576"),
            ("--max-client-memory", "256M", "268435456"),
        ] {
            let (with_unit, in_bytes) = (serve_args(&[flag, unit]).config(), serve_args(&[flag, bytes]).config());
            assert_eq!(with_unit, in_bytes, "{flag}");
            assert_ne!(with_unit, serve_args(&[flag, "100"]).config(), "{flag} is read at all");
            let e = Cli::try_parse_from(["kvio", "serve", flag, "64XB"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(e.to_string().contains("K, M, G or KiB, MiB, GiB (powers of 1024"), "{e}");
        }
        assert_eq!(serve_args(&[]).config(), Config::for_flavor(Flavor::Epoll), "the defaults, written with units");
    }

    #[test]
    fn every_subcommand_has_version() {
        for sub in ["serve", "put", "get", "del", "cli", "completions", "man"] {
            let e = Cli::try_parse_from(["kvio", sub, "--version"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion, "{sub}");
        }
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(seconds("0").is_err() && seconds("-1").is_err() && seconds("x").is_err());
        assert_eq!(DEFAULT_TIMEOUT, seconds("5").unwrap());
    }
}
