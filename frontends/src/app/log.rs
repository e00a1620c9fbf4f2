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

/// Sets up the log on stderr: `level` (an `EnvFilter` directive such as
/// `warn` or `kvio=debug`) if given, else `RUST_LOG`, else [`DEFAULT_LEVEL`].
/// Err: the directive is not valid. Once per process; later calls do nothing.
pub fn init(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level {level:?}: {e}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(env) if !env.trim().is_empty() => {
                EnvFilter::try_new(&env).map_err(|e| format!("invalid RUST_LOG {env:?}: {e}"))?
            }
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
        assert!(EnvFilter::try_new("warn").is_ok());
        assert!(init(Some("kvio=debug,warn")).is_ok());
        assert!(init(Some("[bad")).unwrap_err().starts_with("invalid --log-level"));
    }
}
