//! The stop request: SIGINT/SIGTERM (or [`Shutdown::trigger`], for tests and
//! embedders) set a flag that the blocking flavors check on every timeout
//! tick, and make a socket readable that the epoll flavor waits on.
//!
//! What it does not own: how each flavor finishes its connections.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// Exit status after a second SIGINT/SIGTERM: 128 + SIGINT, the shell's convention.
pub const FORCED_EXIT_CODE: i32 = 130;
/// What a forced exit prints on stderr.
pub const FORCED_EXIT_LINE: &str = "kvio serve: second signal while stopping: exiting at once (status 130)\n";

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

    /// Makes SIGINT and SIGTERM request the stop. A second signal while
    /// stopping exits at once, saying so on stderr, with status 130 (the
    /// shell's code for an interrupted command), for a stop that hangs.
    pub fn on_signals(&self) -> io::Result<()> {
        for signal in [SIGINT, SIGTERM] {
            // Registered before the flag setter, so it sees the flag of an earlier signal only.
            let stopping = Arc::clone(&self.requested);
            let stderr = io::stderr();
            let force = move || {
                if stopping.load(Ordering::SeqCst) {
                    // One write(2) and _exit(2): both async-signal-safe; no lock, no allocation.
                    let _ = rustix::io::write(stderr.as_fd(), FORCED_EXIT_LINE.as_bytes());
                    signal_hook::low_level::exit(FORCED_EXIT_CODE);
                }
            };
            // SAFETY: `force` only loads an atomic, calls write(2) on fd 2 and
            // _exit(2), all async-signal-safe; it allocates and locks nothing
            // (`Stderr::as_fd` only borrows the constant descriptor 2).
            unsafe { signal_hook::low_level::register(signal, force) }?;
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
