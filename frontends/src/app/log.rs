//! The server's log: `tracing` events on stderr, timestamped and levelled,
//! filtered by `--log-level` or `RUST_LOG` ([`init`]), and the rate limit
//! for the conditions an operator must act on ([`Limited`], kept
//! beside the counters that raise them): one line per
//! kind per [`WINDOW`], saying how many like it were not printed.
//!
//! Levels: `error` (the server cannot go on), `warn` (the operator
//! conditions: refused connections, evictions at the memory cap, puts
//! refused because the store is full, accept errors; a bind outside
//! loopback), `info` (the default: start, stopping, suppressed counts at
//! exit), `debug` (one line per connection closed for a reason other than
//! the client's end of stream or the stop), `trace` (nothing more yet).
//!
//! What it does not own: the start-up and stopped lines on stdout, which
//! scripts parse ([`crate::app::lines`]).

use std::io::IsTerminal;
use std::net::IpAddr;
use std::sync::Once;

use tracing_subscriber::EnvFilter;

pub use crate::sansio::warn::{Limited, WINDOW, flush_suppressed};

/// The level used when neither `--log-level` nor `RUST_LOG` says.
pub const DEFAULT_LEVEL: &str = "info";

/// The levels, for the message about a bad one.
pub const LEVELS: &str = "error, warn, info, debug, trace or off";

/// Sets up the log on stderr: `level` (an `EnvFilter` directive such as
/// `warn` or `kvio=debug`) if given, else `RUST_LOG`, else [`DEFAULT_LEVEL`].
/// Err: the directive is not valid. Once per process; later calls do nothing.
pub fn init(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(level) => filter(level).map_err(|e| format!("invalid --log-level {level:?}: {e}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(env) if !env.trim().is_empty() => filter(&env).map_err(|e| format!("invalid RUST_LOG {env:?}: {e}"))?,
            _ => EnvFilter::new(DEFAULT_LEVEL),
        },
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}

/// `directives` as a filter, if each of them names a level: `warn`, or
/// `kvio=debug`. EnvFilter reads a lone word that is not a level as a
/// target with every level (`verbose`: only events of a target named
/// verbose), which turns kvio's log off without a word; a typo must not.
fn filter(directives: &str) -> Result<EnvFilter, String> {
    let mut any = false;
    for directive in directives.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        any = true;
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if level.parse::<tracing_subscriber::filter::LevelFilter>().is_err() {
            return Err(if directive.contains('=') {
                format!("{level:?} in {directive:?} is not a level: expected {LEVELS}")
            } else {
                format!("expected {LEVELS}, or directives such as kvio=debug,warn")
            });
        }
    }
    if !any {
        return Err(format!("no level: expected {LEVELS}"));
    }
    EnvFilter::try_new(directives).map_err(|e| e.to_string())
}

/// Warns once that `ip` is not a loopback address: kvio has no
/// authentication, so anyone who can reach the port can read and write.
pub fn warn_if_exposed(what: &str, ip: IpAddr) {
    if let Some(warning) = exposure(what, ip) {
        tracing::warn!("{warning}");
    }
}

/// The warning for `what` listening on `ip`, if it is outside loopback.
fn exposure(what: &str, ip: IpAddr) -> Option<String> {
    (!ip.is_loopback()).then(|| {
        format!(
            "{what} listens on {ip}, outside loopback: kvio has no authentication, so anyone who can reach \
             this port can read and write every key; keep it behind a firewall or on a private network"
        )
    })
}

/// Says once that the server is stopping: the thread watching for the
/// signal says it at once, and the exit path says it if that thread had
/// not yet been scheduled; either way it comes before the totals. A
/// `Once`: the exit path waits for a line the watcher is still writing,
/// so the suppressed counts and the totals never overtake it.
pub fn stopping() {
    static TOLD: Once = Once::new();
    TOLD.call_once(|| tracing::info!("stopping: answering what was received, then closing every connection"));
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_bind_outside_loopback_is_warned_about() {
        for loopback in ["127.0.0.1", "127.8.9.10", "::1"] {
            assert_eq!(exposure("kvio serve", loopback.parse().unwrap()), None, "{loopback}");
        }
        for exposed in ["0.0.0.0", "::", "10.0.0.7", "192.168.1.2"] {
            let warning = exposure("kvio serve", exposed.parse().unwrap()).unwrap();
            assert!(warning.starts_with(&format!("kvio serve listens on {exposed}, outside loopback")), "{warning}");
            assert!(warning.contains("no authentication") && warning.contains("firewall"), "{warning}");
        }
    }

    #[test]
    fn levels_and_directives_are_checked() {
        for good in ["warn", "INFO", "off", "kvio=debug,warn", " trace ", "kvio::sansio=debug", "2"] {
            assert!(filter(good).is_ok(), "{good}");
        }
        assert!(init(Some("kvio=debug,warn")).is_ok());
        assert!(init(Some("[bad")).unwrap_err().starts_with("invalid --log-level"));
        // A typo is a lone word, which EnvFilter would take as a target: refused.
        assert_eq!(
            init(Some("verbose")).unwrap_err(),
            "invalid --log-level \"verbose\": expected error, warn, info, debug, trace or off, or directives such as \
             kvio=debug,warn"
        );
        assert!(EnvFilter::try_new("verbose").is_ok(), "EnvFilter alone accepts it");
        assert_eq!(
            filter("kvio=loud").unwrap_err(),
            "\"loud\" in \"kvio=loud\" is not a level: expected error, warn, info, debug, trace or off"
        );
        assert!(filter("warn,kvio").is_err(), "a lone target");
        assert!(filter("").unwrap_err().starts_with("no level"));
        assert!(filter(" , ").is_err());
    }
}
