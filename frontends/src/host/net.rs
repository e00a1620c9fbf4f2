//! Socket plumbing shared by every flavor, on rustix: the listening socket
//! (SO_REUSEADDR, bind, listen; SO_REUSEPORT for N loops on one address), accepting (accept4 with CLOEXEC, NONBLOCK
//! where the flavor wants it, TCP_NODELAY, EMFILE answered by closing the
//! connection with a spare descriptor instead of spinning), reads and writes
//! with EINTR retried, and RLIMIT_NOFILE.
//!
//! What it does not own: what is read or written (that is [`crate::session`]),
//! nor what an accept that gave nothing to serve means (counted, a pause):
//! that is the server's ([`AcceptFailure`], [`Server::accept_failed`](crate::sansio::server::Server::accept_failed)).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, sockopt};

pub use crate::sansio::server::AcceptFailure;
use crate::sansio::wire::Protocol;

/// Connections the kernel may queue before `accept` (it clamps this to `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// EAGAIN / EWOULDBLOCK (also what a blocking socket's SO_RCVTIMEO/SO_SNDTIMEO returns).
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// EINTR: the call was interrupted by a signal and should simply be retried.
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// Retries `f` while it fails with EINTR.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Reads what the socket has into `buf`; `Ok(0)` is end of stream.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: RecvFlags) -> io::Result<usize> {
    retry(|| net::recv(fd, &mut *buf, flags).map(|(n, _)| n))
}

/// One blocking read into `buf`, EINTR included: a blocking flavor wants
/// to look at the stop flag when a signal interrupts its wait.
pub fn recv_once(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    Ok(net::recv(fd, buf, RecvFlags::empty()).map(|(n, _)| n)?)
}

/// Whether bytes wait to be read on `fd` (FIONREAD); false if it cannot tell.
pub fn has_unread(fd: BorrowedFd<'_>) -> bool {
    rustix::io::ioctl_fionread(fd).is_ok_and(|n| n > 0)
}

/// Writes some of `data`. MSG_NOSIGNAL: a peer that went away is an EPIPE
/// error for this connection, not a SIGPIPE for the process.
pub fn send(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    retry(|| net::send(fd, data, SendFlags::NOSIGNAL))
}

/// Sets SO_RCVTIMEO and SO_SNDTIMEO (`None`: block forever). On a blocking
/// socket a timeout shows up as EAGAIN, which is how the blocking flavors
/// wake up to check the idle timeout and shutdown.
pub fn set_timeouts(fd: BorrowedFd<'_>, recv: Option<Duration>, send: Option<Duration>) -> io::Result<()> {
    sockopt::set_socket_timeout(fd, sockopt::Timeout::Recv, recv)?;
    sockopt::set_socket_timeout(fd, sockopt::Timeout::Send, send)?;
    Ok(())
}

/// Ends the reading side: a thread blocked in `recv` on `fd` returns, data
/// already queued is still read first, and every later `recv` says end of
/// stream. How a stop wakes a connection thread sleeping in `recv`.
pub fn shutdown_read(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(net::shutdown(fd, net::Shutdown::Read)?)
}

/// Ends the writing side: the peer gets a FIN after every byte already
/// queued, while this side can still read (a lingering close).
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(net::shutdown(fd, net::Shutdown::Write)?)
}

/// Switches O_NONBLOCK on or off.
pub fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    Ok(rustix::io::ioctl_fionbio(fd, nonblocking)?)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (every connection is a
/// descriptor; the default soft limit of 1024 is far below 10,000
/// connections). Returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<Option<u64>> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok(limit.current)
}

/// What one accept gave.
#[derive(Debug)]
pub enum Accepted {
    /// A new connection (TCP_NODELAY on, CLOEXEC, non-blocking if asked).
    Connection(OwnedFd, Option<SocketAddr>),
    /// Nothing waiting (EAGAIN, or the listener's SO_RCVTIMEO expired).
    Nothing,
    /// Nothing to serve, for the server to count (out of descriptors, the
    /// connection taken with the spare descriptor and closed; a socket
    /// that could not be set up, closed; or the accept failed).
    Failed(AcceptFailure),
}

/// Readies `fd`, just accepted (from `peer`), for serving: TCP_NODELAY.
/// On failure it is closed, and the failure is the server's to count.
pub fn set_up(fd: OwnedFd, peer: Option<SocketAddr>) -> Accepted {
    // Responses are written whole; Nagle would only delay them.
    match sockopt::set_tcp_nodelay(&fd, true) {
        Ok(()) => Accepted::Connection(fd, peer),
        Err(e) => Accepted::Failed(AcceptFailure::Setup(peer, e.into())),
    }
}

/// The peer of a connected socket, if it can be told.
pub fn peer_of(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    net::getpeername(fd).ok().flatten().and_then(|a| SocketAddr::try_from(a).ok())
}

/// The listening socket, and a spare descriptor kept for EMFILE.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    addr: SocketAddr,
    spare: Option<OwnedFd>,
    /// What its connections speak.
    protocol: Protocol,
}

impl Listener {
    /// socket + SO_REUSEADDR + bind + listen. `127.0.0.1:0` picks a free port;
    /// [`Listener::local_addr`] tells which.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        Listener::bind_with(addr, false)
    }

    /// `n` listeners on one address, each with SO_REUSEPORT, so that the
    /// kernel spreads incoming connections over them (by a hash of the
    /// connection's addresses). For port 0 the first bind picks the port and
    /// the others bind to it. `n == 1` is [`Listener::bind`].
    pub fn bind_many(addr: SocketAddr, n: usize) -> io::Result<Vec<Listener>> {
        let reuse_port = n > 1;
        let first = Listener::bind_with(addr, reuse_port)?;
        let addr = first.local_addr();
        let mut listeners = vec![first];
        for _ in 1..n {
            listeners.push(Listener::bind_with(addr, reuse_port)?);
        }
        Ok(listeners)
    }

    fn bind_with(addr: SocketAddr, reuse_port: bool) -> io::Result<Listener> {
        let family = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
        let fd = net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
        // A restarted server must not wait for the old one's TIME_WAIT sockets.
        sockopt::set_socket_reuseaddr(&fd, true)?;
        if reuse_port {
            sockopt::set_socket_reuseport(&fd, true)?;
        }
        net::bind(&fd, &addr)?;
        net::listen(&fd, LISTEN_BACKLOG)?;
        let addr = SocketAddr::try_from(net::getsockname(&fd)?).map_err(io::Error::from)?;
        Ok(Listener { fd, addr, spare: open_spare(), protocol: Protocol::Kvio })
    }

    /// The same listener, its connections speaking `protocol` (kvio frames by default).
    pub fn speaking(self, protocol: Protocol) -> Listener {
        Listener { protocol, ..self }
    }

    /// What its connections speak.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts one connection. `nonblocking` sets O_NONBLOCK on the new socket.
    pub fn accept(&mut self, nonblocking: bool) -> Accepted {
        let flags = if nonblocking { SocketFlags::CLOEXEC | SocketFlags::NONBLOCK } else { SocketFlags::CLOEXEC };
        match retry(|| net::acceptfrom_with(&self.fd, flags)) {
            Ok((fd, peer)) => set_up(fd, peer.and_then(|a| SocketAddr::try_from(a).ok())),
            Err(e) if would_block(&e) => Accepted::Nothing,
            Err(e) if out_of_descriptors(&e) => {
                // Free the spare, take the connection off the queue, close it, and take the spare back.
                // Linux reserves the descriptor before looking at the queue, so EMFILE
                // also comes with an empty queue: then there is nobody to refuse.
                match self.spare.take() {
                    Some(spare) => {
                        drop(spare);
                        // The refused connection is closed before the spare is taken back.
                        let refused = match retry(|| net::accept_with(&self.fd, flags)) {
                            Ok(_closed) => Accepted::Failed(AcceptFailure::OutOfDescriptors(e)),
                            Err(e) if would_block(&e) => Accepted::Nothing,
                            Err(e) => Accepted::Failed(AcceptFailure::Failed(e)),
                        };
                        self.spare = open_spare();
                        refused
                    }
                    None => {
                        self.spare = open_spare();
                        Accepted::Failed(AcceptFailure::Failed(e))
                    }
                }
            }
            Err(e) => Accepted::Failed(AcceptFailure::Failed(e)),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// EMFILE / ENFILE: the process or the system has no descriptor left.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(Errno::MFILE.raw_os_error()) || code == Some(Errno::NFILE.raw_os_error())
}

fn open_spare() -> Option<OwnedFd> {
    rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()
}

#[cfg(test)]
mod test {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn listener_binds_a_free_port_and_accepts_with_nodelay() {
        let mut listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        assert_ne!(addr.port(), 0);
        set_timeouts(listener.as_fd(), Some(Duration::from_millis(50)), None).unwrap();
        assert!(matches!(listener.accept(false), Accepted::Nothing), "timeout is EAGAIN");
        let mut client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let Accepted::Connection(fd, peer) = listener.accept(true) else { panic!("no connection") };
        assert_eq!(peer, Some(client.local_addr().unwrap()));
        assert!(sockopt::tcp_nodelay(&fd).unwrap());
        let mut buf = [0u8; 8];
        let e = recv(fd.as_fd(), &mut buf, RecvFlags::empty()).unwrap_err();
        assert!(would_block(&e), "non-blocking socket: {e}");
        client.write_all(b"hi").unwrap();
        set_nonblocking(fd.as_fd(), false).unwrap();
        set_timeouts(fd.as_fd(), Some(Duration::from_secs(5)), None).unwrap();
        let got = recv(fd.as_fd(), &mut buf, RecvFlags::empty()).unwrap();
        assert_eq!(&buf[..got], b"hi");
        assert_eq!(send(fd.as_fd(), b"yo").unwrap(), 2);
        let mut reply = [0u8; 2];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"yo");
    }

    #[test]
    fn many_listeners_share_one_picked_port() {
        let listeners = Listener::bind_many("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = listeners[0].local_addr();
        assert_ne!(addr.port(), 0);
        assert!(listeners.iter().all(|l| l.local_addr() == addr && sockopt::socket_reuseport(l).unwrap()));
        assert!(Listener::bind(addr).is_err(), "a socket without SO_REUSEPORT cannot join them");
        let one = Listener::bind_many("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        assert!(!sockopt::socket_reuseport(&one[0]).unwrap(), "one loop: a plain listener");
    }
}
