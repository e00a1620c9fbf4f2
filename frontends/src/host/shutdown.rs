//! The stop request: SIGINT/SIGTERM (or [`Shutdown::trigger`], for tests and
//! embedders) set a flag that the blocking flavors check on every timeout
//! tick, and make a socket readable that the event loops wait on.
//!
//! However many signals arrive, they are one request: repeated SIGTERMs
//! (GNU `timeout` signals the child and then its process group; systemd,
//! `docker stop` and supervisors repeat too) and a SIGINT after a SIGTERM
//! change nothing. Only a person pressing Ctrl-C again, at least
//! [`FORCE_AFTER`] after the first Ctrl-C, forces the exit (status 130),
//! for a stop that seems to hang; the stop is bounded anyway.
//!
//! What it does not own: how each flavor finishes its connections.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

/// Exit status after a forced exit: 128 + SIGINT, the shell's convention.
pub const FORCED_EXIT_CODE: i32 = 130;
/// What a forced exit prints on stderr.
pub const FORCED_EXIT_LINE: &str = "kvio serve: second Ctrl-C while stopping: exiting at once (status 130)\n";
/// How long after the first SIGINT a second one forces the exit: sooner,
/// it is a duplicate (a group signalled twice), not a person insisting.
pub const FORCE_AFTER: Duration = Duration::from_secs(1);

/// A stop request shared by the signal handlers and the server.
#[derive(Debug, Clone)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    wake_read: Arc<UnixStream>,
    wake_write: Arc<UnixStream>,
}

impl Shutdown {
    /// A request not yet made.
    pub fn new() -> io::Result<Shutdown> {
        // A socket pair rather than a pipe: signal-hook wakes it with
        // send(MSG_DONTWAIT), which cannot block inside a signal handler.
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        Ok(Shutdown {
            requested: Arc::new(AtomicBool::new(false)),
            wake_read: wake_read.into(),
            wake_write: wake_write.into(),
        })
    }

    /// Makes SIGINT and SIGTERM request the stop (one request, however
    /// many arrive). A SIGINT at least [`FORCE_AFTER`] after the first
    /// SIGINT exits at once, saying so on stderr, with status 130 (the
    /// shell's code for an interrupted command), for a stop that hangs.
    pub fn on_signals(&self) -> io::Result<()> {
        let base = Instant::now();
        // Milliseconds after `base` of the first SIGINT, plus one (0: none yet).
        let first_int = Arc::new(AtomicU64::new(0));
        let stderr = io::stderr();
        let force = move || {
            let now = Instant::now().saturating_duration_since(base).as_millis() as u64 + 1;
            let first = match first_int.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return,
                Err(first) => first,
            };
            if now.saturating_sub(first) >= FORCE_AFTER.as_millis() as u64 {
                // One write(2) and _exit(2): both async-signal-safe; no lock, no allocation.
                let _ = rustix::io::write(stderr.as_fd(), FORCED_EXIT_LINE.as_bytes());
                signal_hook::low_level::exit(FORCED_EXIT_CODE);
            }
        };
        // SAFETY: `force` reads the monotonic clock (clock_gettime, in the
        // vDSO), does integer arithmetic on an atomic, and calls write(2)
        // on fd 2 and _exit(2): all async-signal-safe; it allocates and
        // locks nothing (`Stderr::as_fd` only borrows the constant descriptor 2).
        unsafe { signal_hook::low_level::register(SIGINT, force) }?;
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&self.requested))?;
            signal_hook::low_level::pipe::register(signal, self.wake_write.try_clone()?)?;
        }
        Ok(())
    }

    /// Requests the stop.
    pub fn trigger(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // Full means a wake-up is already pending: nothing lost.
        let _ = (&*self.wake_write).write(&[1]);
    }

    /// Whether the stop was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Readable once the stop is requested (for epoll).
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_read.as_fd()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn trigger_sets_the_flag_and_wakes_the_fd() {
        let shutdown = Shutdown::new().unwrap();
        let clone = shutdown.clone();
        assert!(!clone.is_requested());
        let mut buf = [0u8; 4];
        assert!(crate::net::recv(shutdown.wake_fd(), &mut buf, rustix::net::RecvFlags::empty()).is_err());
        shutdown.trigger();
        assert!(clone.is_requested());
        assert_eq!(crate::net::recv(clone.wake_fd(), &mut buf, rustix::net::RecvFlags::empty()).unwrap(), 1);
    }
}
