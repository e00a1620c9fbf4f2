//! The floor baseline: a single-thread, level-triggered epoll server that
//! finds frame boundaries from the length header alone and answers each
//! frame with one fixed, pre-encoded response, without decoding or storing
//! anything. What it costs per request is the syscalls and the loop: no
//! kvio flavor can do less work, so its CPU per request is the floor.
//!
//! Per wake-up it does at most one read and one write per ready socket,
//! the fewest syscalls a readiness loop can make. Bench-only code.

use std::io::{self, Write as _};
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};

use kvio_core::frame::{HEADER_LEN, MIN_FRAME_LEN};
use kvio_proto::{Kind, Status, encode_response};
use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

/// Listener token (sockets use their fd number, which is never this).
const LISTENER: u64 = u64::MAX;
const READ_CHUNK: usize = 64 * 1024;

/// Frame-skipping state of one connection plus its unsent bytes.
#[derive(Debug)]
struct FloorConn {
    fd: OwnedFd,
    header: [u8; HEADER_LEN],
    header_have: usize,
    /// Body bytes (payload + footer) still to skip in the current frame.
    body_left: usize,
    out: Vec<u8>,
    written: usize,
}

/// A listening, non-blocking TCP socket on `addr` (SO_REUSEADDR set).
pub fn listen(addr: SocketAddrV4) -> io::Result<(OwnedFd, SocketAddrV4)> {
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 4096)?;
    let local = rustix::net::getsockname(&fd)?;
    let local = SocketAddrV4::try_from(local).map_err(|_| io::Error::other("listener is not IPv4"))?;
    Ok((fd, local))
}

/// Serves until killed; prints `kvio bench floor-server: addr=<ip:port>`
/// on stdout once listening.
pub fn serve(addr: SocketAddrV4, max_frame_len: u32) -> io::Result<()> {
    let (listener, local) = listen(addr)?;
    let mut stdout = io::stdout();
    writeln!(stdout, "kvio bench floor-server: addr={local} max_frame_len={max_frame_len}")?;
    stdout.flush()?;
    serve_on(listener, max_frame_len, || false)
}

/// Serves `listener` until `stop()` is true (checked at least every 100 ms).
pub fn serve_on(listener: OwnedFd, max_frame_len: u32, stop: impl Fn() -> bool) -> io::Result<()> {
    let mut fixed = Vec::new();
    let _ = encode_response(&mut fixed, b"", b"", Kind::PutOrUpdate, Status::Ok);
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(&epoll, &listener, epoll::EventData::new_u64(LISTENER), epoll::EventFlags::IN)?;
    let mut conns: Vec<Option<FloorConn>> = Vec::new();
    let mut events = Vec::with_capacity(1024);
    let mut rbuf = vec![0u8; READ_CHUNK];
    let tick = rustix::event::Timespec { tv_sec: 0, tv_nsec: 100_000_000 };
    while !stop() {
        events.clear();
        match epoll::wait(&epoll, spare_capacity(&mut events), Some(&tick)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for ev in &events {
            match ev.data.u64() {
                LISTENER => loop {
                    match rustix::net::accept_with(&listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
                        Ok(fd) => {
                            sockopt::set_tcp_nodelay(&fd, true)?;
                            let slot = fd.as_raw_fd() as usize;
                            epoll::add(&epoll, &fd, epoll::EventData::new_u64(slot as u64), epoll::EventFlags::IN)?;
                            if conns.len() <= slot {
                                conns.resize_with(slot + 1, || None);
                            }
                            let conn = FloorConn {
                                fd,
                                header: [0; HEADER_LEN],
                                header_have: 0,
                                body_left: 0,
                                out: Vec::new(),
                                written: 0,
                            };
                            conns[slot] = Some(conn);
                        }
                        Err(e) if e == Errno::AGAIN || e == Errno::INTR => break,
                        // EMFILE and friends: leave the rest in the backlog for now.
                        Err(_) => break,
                    }
                },
                slot => {
                    let slot = slot as usize;
                    let keep = match conns[slot].as_mut() {
                        Some(c) => serve_ready(&epoll, c, slot, ev.flags, &mut rbuf, &fixed, max_frame_len),
                        None => true,
                    };
                    if !keep && let Some(c) = conns[slot].take() {
                        let _ = epoll::delete(&epoll, &c.fd);
                    }
                }
            }
        }
    }
    Ok(())
}

/// One read and one write; `false` when the connection is done.
fn serve_ready(
    epoll: &OwnedFd,
    c: &mut FloorConn,
    slot: usize,
    flags: epoll::EventFlags,
    rbuf: &mut [u8],
    fixed: &[u8],
    max_frame_len: u32,
) -> bool {
    if c.written == c.out.len() && flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::HUP) {
        let n = match rustix::io::read(&c.fd, &mut *rbuf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e == Errno::AGAIN || e == Errno::INTR => return true,
            Err(_) => return false,
        };
        c.out.clear();
        c.written = 0;
        let mut input = &rbuf[..n];
        while !input.is_empty() {
            if c.body_left > 0 {
                let skip = c.body_left.min(input.len());
                c.body_left -= skip;
                input = &input[skip..];
                if c.body_left == 0 {
                    c.out.extend_from_slice(fixed);
                }
                continue;
            }
            let take = (HEADER_LEN - c.header_have).min(input.len());
            c.header[c.header_have..c.header_have + take].copy_from_slice(&input[..take]);
            c.header_have += take;
            input = &input[take..];
            if c.header_have == HEADER_LEN {
                c.header_have = 0;
                let len = u32::from_le_bytes(c.header);
                if !(MIN_FRAME_LEN..=max_frame_len).contains(&len) {
                    return false;
                }
                c.body_left = len as usize;
            }
        }
    }
    while c.written < c.out.len() {
        match rustix::io::write(&c.fd, &c.out[c.written..]) {
            Ok(n) => c.written += n,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                // Stop reading until the answers are out: back-pressure.
                let flags = epoll::EventFlags::OUT;
                return epoll::modify(epoll, &c.fd, epoll::EventData::new_u64(slot as u64), flags).is_ok();
            }
            Err(_) => return false,
        }
    }
    if flags.contains(epoll::EventFlags::OUT) {
        let flags = epoll::EventFlags::IN;
        return epoll::modify(epoll, &c.fd, epoll::EventData::new_u64(slot as u64), flags).is_ok();
    }
    true
}
