//! Flavor `uring`: one thread, an io_uring completion loop.
//!
//! - Model: completions, not readiness. The loop queues operations in the
//!   ring's shared memory and the kernel posts their results: one
//!   multishot accept on the listener, one multishot receive per
//!   connection into a provided-buffer ring shared by every connection,
//!   and one send per connection with responses waiting. Each loop turn is
//!   one `io_uring_enter` that submits everything queued and waits for at
//!   least one completion; then every completion is handed to its
//!   connection's [`Session`], exactly as the readiness drivers hand it
//!   the bytes of a `recv`.
//! - Buffers: received bytes land in one of [`RECV_BUFFERS`] buffers of
//!   [`RECV_BUFFER_LEN`] bytes the kernel picks from the ring; the buffer
//!   goes back to the ring as soon as [`Session::receive`] has copied what
//!   it keeps, so an idle connection holds none. A send hands the kernel
//!   the session's output buffer ([`Session::take_transmit`]), which stays
//!   in the connection, untouched, until its completion gives it back
//!   ([`Session::transmitted`]); a partial send is resubmitted from there.
//! - Back-pressure: while a session does not [want to
//!   read](Session::wants_read) its multishot receive is cancelled (bytes
//!   the kernel posted before the cancel took effect go to the session,
//!   which holds them, or drops them if it reads nothing more); it is
//!   armed again once the session wants to read.
//! - Memory: an idle connection holds its slot and no buffer. The loop
//!   holds the receive buffers (4 MiB, made resident when it starts: the
//!   kernel takes them in turn, so they would all be touched soon anyway)
//!   and the rings. Over `--max-client-memory` the connection holding the
//!   most is evicted, as in the `epoll` flavor.
//! - Time: the wait carries a timeout (`IORING_ENTER_EXT_ARG`) to the
//!   earliest deadline the loop knows of, then every session's
//!   [`Session::handle_timeout`] is swept, as in the `epoll` flavor.
//! - Tokens: a completion's `user_data` holds the operation, the
//!   connection's slab slot and the slot's generation. A slot is freed only
//!   once every operation on its descriptor has completed (the receive and
//!   the send are cancelled first), and the descriptor is closed only then,
//!   so no completion can reach a connection that reused its number.
//! - Threads: 1 (`IORING_SETUP_SINGLE_ISSUER`, `DEFER_TASKRUN`: the
//!   kernel does the deferred work inside this thread's `io_uring_enter`,
//!   not in interrupts or kernel threads).
//! - Limits: `--max-connections` (the next one is accepted and closed at
//!   once); EMFILE ends the multishot accept, the pending connection is
//!   refused with a spare descriptor and the accept re-armed (with no
//!   connection pending, a poll on the listener waits for one: an accept
//!   would fail again at once), or, if even that fails, accepting pauses
//!   for 100 ms. Needs Linux 6.0 (multishot
//!   receive) and an io_uring not disabled by a seccomp profile or
//!   `kernel.io_uring_disabled`: otherwise `kvio serve` refuses to start
//!   and names what is missing ([`probe`]).
//! - Stop: a poll on the shutdown wake-up socket completes; the accept is
//!   cancelled, every session [begins its shutdown](Session::begin_shutdown)
//!   and the loop goes on until the last one has closed.
//! - Syscalls: per loop turn one `io_uring_enter` and one clock read (vDSO),
//!   however many connections moved; `shutdown(SHUT_WR)` for a lingering
//!   close; per new connection `setsockopt(TCP_NODELAY)` and `getpeername`.
//!   Measured figures: `frontends/README.md`.

use std::alloc::{self, Layout};
use std::io;
use std::mem::{self, offset_of};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use kvio_proto::KeyValueHandler;
use rustix::io::Errno;
use rustix::io_uring::{IoringOp, io_uring_buf, io_uring_ptr};
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};
use rustix_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::config::{Config, HostStore};
use crate::driver::{self, Conn, Scratch};
use crate::loops::{self, Loop};
use crate::memory::ClientMemory;
use crate::net::{self, Accepted, Listener};
use crate::observed::Observed;
use crate::session::{OutBuf, Session, Timing};
use crate::shutdown::Shutdown;
use crate::stats::{Counters, Stats};

/// Submission queue entries (the completion queue has [`CQ_ENTRIES`]).
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries: room for a receive and a send completion of
/// 8,000 connections in one turn (more are kept by the kernel,
/// `IORING_FEAT_NODROP`, and posted on the next turn).
const CQ_ENTRIES: u32 = 16384;
/// Completions copied out of the ring and handled at a time.
const CQE_BATCH: usize = 1024;
/// Buffers in the provided-buffer ring, shared by every connection.
pub const RECV_BUFFERS: u16 = 1024;
/// Bytes per receive buffer: one page; a request larger than that arrives
/// in several completions, each copied into the session's frame buffer.
pub const RECV_BUFFER_LEN: usize = 4096;
/// The buffer group of the ring.
const BUFFER_GROUP: u16 = 0;
/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// POLLIN, as a poll operation takes it.
const POLL_IN: u32 = rustix::event::PollFlags::IN.bits() as u32;

/// What a completion is for: the top byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Wake = 2,
    Recv = 3,
    Send = 4,
    Cancel = 5,
    Probe = 6,
    Listen = 7,
}

impl Op {
    fn from_bits(bits: u8) -> Option<Op> {
        [Op::Accept, Op::Wake, Op::Recv, Op::Send, Op::Cancel, Op::Probe, Op::Listen]
            .into_iter()
            .find(|op| *op as u8 == bits)
    }
}

/// `user_data`: the operation in the top 8 bits, the slot's generation in
/// the next 24, the slot index in the low 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    op: Op,
    index: u32,
    generation: u32,
}

impl Token {
    const GENERATION_MASK: u32 = (1 << 24) - 1;

    fn loop_op(op: Op) -> Token {
        Token { op, index: 0, generation: 0 }
    }

    fn encode(self) -> u64 {
        (u64::from(self.op as u8) << 56)
            | (u64::from(self.generation & Self::GENERATION_MASK) << 32)
            | u64::from(self.index)
    }

    fn decode(data: u64) -> Option<Token> {
        let op = Op::from_bits((data >> 56) as u8)?;
        Some(Token { op, index: data as u32, generation: (data >> 32) as u32 & Self::GENERATION_MASK })
    }

    fn with_op(self, op: Op) -> Token {
        Token { op, ..self }
    }
}

/// Why the uring flavor cannot run here.
#[derive(Debug)]
pub struct Unsupported(String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--flavor uring: {}; use --flavor epoll", self.0)
    }
}

impl std::error::Error for Unsupported {}

impl From<Unsupported> for io::Error {
    fn from(e: Unsupported) -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, e)
    }
}

/// What a refused `io_uring_setup` means.
fn setup_refused(e: Errno) -> Unsupported {
    let why = match e {
        Errno::NOSYS => "the kernel has no io_uring (ENOSYS)".to_owned(),
        Errno::PERM | Errno::ACCESS => {
            let name = if e == Errno::PERM { "EPERM" } else { "EACCES" };
            format!(
                "io_uring_setup was refused ({name}: kernel.io_uring_disabled, or a seccomp profile such as Docker's default)"
            )
        }
        e => format!("io_uring_setup failed: {e}"),
    };
    Unsupported(why)
}

/// Checks that this kernel runs the uring flavor: io_uring itself, the
/// opcodes used, a provided-buffer ring (Linux 5.19) and a multishot
/// receive (Linux 6.0, tried on a socket pair). `kvio serve` calls it
/// before it prints its start-up line, and the tests to say why they skip.
pub fn probe() -> Result<(), Unsupported> {
    Uring::new().map(drop)
}

/// The receive buffers and the ring of free ones the kernel picks from.
#[derive(Debug)]
struct BufRing {
    /// [`RECV_BUFFERS`] ring entries, page-aligned (registered with the kernel).
    entries: NonNull<io_uring_buf>,
    /// [`RECV_BUFFERS`] × [`RECV_BUFFER_LEN`] bytes.
    memory: NonNull<u8>,
    /// Entries written; the kernel sees them once [`BufRing::publish`]ed.
    tail: u16,
}

impl BufRing {
    const PAGE: usize = 4096;

    fn entries_layout() -> Layout {
        Layout::from_size_align(usize::from(RECV_BUFFERS) * mem::size_of::<io_uring_buf>(), Self::PAGE)
            .expect("a valid layout")
    }

    fn memory_layout() -> Layout {
        Layout::from_size_align(usize::from(RECV_BUFFERS) * RECV_BUFFER_LEN, Self::PAGE).expect("a valid layout")
    }

    fn new() -> BufRing {
        // SAFETY: both layouts have a non-zero size.
        let (entries, memory) =
            unsafe { (alloc::alloc_zeroed(Self::entries_layout()), alloc::alloc_zeroed(Self::memory_layout())) };
        let (Some(entries), Some(memory)) = (NonNull::new(entries.cast::<io_uring_buf>()), NonNull::new(memory)) else {
            alloc::handle_alloc_error(Self::memory_layout());
        };
        // Resident from the start: the kernel takes the buffers in turn, so
        // a few thousand requests touch them all anyway. A fixed cost of the
        // loop, not of the connections (each page written once, here).
        for page in (0..Self::memory_layout().size()).step_by(Self::PAGE) {
            // SAFETY: inside the allocation, which nothing else uses yet.
            unsafe { memory.as_ptr().add(page).write_volatile(0) };
        }
        let mut ring = BufRing { entries, memory, tail: 0 };
        for bid in 0..RECV_BUFFERS {
            ring.give_back(bid);
        }
        ring.publish();
        ring
    }

    /// Puts buffer `bid` at the ring's tail (the kernel sees it at the next [`BufRing::publish`]).
    fn give_back(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (RECV_BUFFERS - 1));
        // SAFETY: `slot` < RECV_BUFFERS, the entries allocated; the kernel
        // reads only the entries between its head and the published tail,
        // and this one is past the published tail. Fields are written one
        // by one so entry 0's last field, which is the ring's tail, is not
        // touched here.
        unsafe {
            let entry = self.entries.as_ptr().add(slot);
            let addr = self.memory.as_ptr().add(usize::from(bid) * RECV_BUFFER_LEN);
            (*entry).addr = io_uring_ptr::new(addr.cast());
            (*entry).len = RECV_BUFFER_LEN as u32;
            (*entry).bid = bid;
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Lets the kernel take every buffer given back so far.
    fn publish(&self) {
        // SAFETY: the ring's tail is the u16 where entry 0's `resv` is
        // (`struct io_uring_buf_ring`), inside the allocation and aligned
        // for a u16; the kernel reads it concurrently, hence the atomic.
        let tail = unsafe {
            AtomicU16::from_ptr(self.entries.as_ptr().cast::<u8>().add(offset_of!(io_uring_buf, resv)).cast::<u16>())
        };
        tail.store(self.tail, Ordering::Release);
    }

    /// The `len` bytes the kernel received into buffer `bid`.
    fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < RECV_BUFFERS && len <= RECV_BUFFER_LEN, "a completion names buffer {bid} with {len} bytes");
        // SAFETY: inside the allocation (checked above); the kernel wrote
        // this buffer before posting the completion and does not touch it
        // again until it is given back, which takes `&mut self`.
        unsafe { std::slice::from_raw_parts(self.memory.as_ptr().add(usize::from(bid) * RECV_BUFFER_LEN), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts. The ring that used
        // them is dropped first (field order of `Uring`), with no receive
        // in flight: the loop ends only once every connection has closed,
        // and a loop that fails is leaked whole (see `serve`).
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), Self::entries_layout());
            alloc::dealloc(self.memory.as_ptr(), Self::memory_layout());
        }
    }
}

/// The ring and its buffers.
struct Uring {
    /// Declared first: dropped (closed) before the buffers it used.
    ring: IoUring,
    bufs: BufRing,
    /// Completions copied out of the ring, up to [`CQE_BATCH`].
    cqes: Vec<cqueue::Entry>,
}

impl Uring {
    /// Sets up the ring, registers the buffer ring and tries a multishot receive.
    fn new() -> Result<Uring, Unsupported> {
        let build = |deferred: bool| {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(CQ_ENTRIES).setup_clamp();
            if deferred {
                // Linux 6.1: task work runs only inside this thread's io_uring_enter.
                builder.setup_single_issuer().setup_defer_taskrun().setup_coop_taskrun();
            }
            builder.build(SQ_ENTRIES)
        };
        let ring = match build(true) {
            Err(Errno::INVAL) => build(false),
            other => other,
        }
        .map_err(setup_refused)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(Unsupported(
                "this kernel's io_uring has no wait timeout (IORING_FEAT_EXT_ARG, Linux 5.11)".into(),
            ));
        }
        let mut probe = rustix_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| Unsupported(format!("io_uring cannot list its opcodes (Linux 5.6): {e}")))?;
        for (op, name) in [
            (IoringOp::Accept, "accept"),
            (IoringOp::Recv, "recv"),
            (IoringOp::Send, "send"),
            (IoringOp::AsyncCancel, "async cancel"),
            (IoringOp::PollAdd, "poll add"),
        ] {
            if !probe.is_supported(op) {
                return Err(Unsupported(format!("this kernel's io_uring has no {name} operation")));
            }
        }
        let bufs = BufRing::new();
        // SAFETY: the entries stay allocated, at this address, until the
        // ring is dropped (`bufs` is dropped after `ring`).
        unsafe { ring.submitter().register_buf_ring(bufs.entries.as_ptr().cast(), RECV_BUFFERS, BUFFER_GROUP) }
            .map_err(|e| Unsupported(format!("no provided-buffer rings (Linux 5.19): {e}")))?;
        let mut uring = Uring { ring, bufs, cqes: Vec::with_capacity(CQE_BATCH) };
        uring.try_multishot_recv()?;
        Ok(uring)
    }

    /// A multishot receive on a socket pair: one byte, then the end of stream.
    fn try_multishot_recv(&mut self) -> Result<(), Unsupported> {
        let missing = |why: String| Unsupported(format!("no multishot receive (Linux 6.0): {why}"));
        let (a, b) = rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
            .map_err(|e| missing(format!("socketpair: {e}")))?;
        rustix::net::send(&b, b"x", SendFlags::empty()).map_err(|e| missing(format!("send: {e}")))?;
        let recv = opcode::RecvMulti::new(types::Fd(a.as_raw_fd()), BUFFER_GROUP).build();
        // SAFETY: the receive writes only into the buffer ring, registered
        // and alive; it ends (end of stream below) before `a` is closed.
        unsafe { self.push(&recv.user_data(Token::loop_op(Op::Probe).encode())) }
            .map_err(|e| missing(e.to_string()))?;
        let mut peer = Some(b);
        let mut got = Vec::new();
        loop {
            self.wait(None).map_err(|e| missing(e.to_string()))?;
            self.reap();
            let mut ended = false;
            for cqe in &self.cqes {
                if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                    self.bufs.give_back(bid);
                }
                got.push((cqe.result(), cqueue::more(cqe.flags())));
                ended |= !cqueue::more(cqe.flags());
            }
            self.cqes.clear();
            self.bufs.publish();
            match got.first() {
                Some((Err(e), _)) => return Err(missing(format!("{e}"))),
                Some((Ok(_), false)) => return Err(missing("the receive ended after one completion".into())),
                _ => {}
            }
            if ended {
                return Ok(());
            }
            // Armed for more: end it with the end of stream.
            drop(peer.take());
        }
    }

    /// Queues `entry`, submitting what is queued first if the queue is full.
    ///
    /// # Safety
    /// Every buffer `entry` points to must stay valid, and unmoved, until its completion.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's promise.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) | Err(Errno::INTR) | Err(Errno::BUSY) | Err(Errno::AGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Submits everything queued and waits for one completion at least, or `timeout`.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let result = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(timeout) => {
                let ts = types::Timespec::from(timeout);
                self.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts))
            }
        };
        match result {
            // A timeout, a signal, or completions to reap first (a full completion queue).
            Ok(_) | Err(Errno::TIME) | Err(Errno::INTR) | Err(Errno::BUSY) | Err(Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies up to [`CQE_BATCH`] posted completions into `cqes`; false if there were none.
    fn reap(&mut self) -> bool {
        self.cqes.extend(self.ring.completion().take(CQE_BATCH));
        !self.cqes.is_empty()
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Closing the ring unregisters it too; this says it before the buffers go.
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    }
}

/// The state of a connection's multishot receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// Not in the kernel.
    Idle,
    /// In the kernel, posting what arrives.
    Armed,
    /// Cancel submitted; its last completion has not come yet.
    Cancelling,
}

/// What the loop has in the kernel for the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    /// Nothing.
    Idle,
    /// The multishot accept.
    Armed,
    /// A poll for a connection waiting: out of descriptors with an empty
    /// queue, where an accept would fail with EMFILE again at once.
    Polling,
}

/// One connection, and what of it is in the kernel.
#[derive(Debug)]
struct Client {
    conn: Conn,
    recv: Recv,
    /// The buffer of the send in flight: the kernel reads it until the send completes.
    sending: Option<OutBuf>,
    /// Ended and counted: only waiting for its operations to complete.
    closing: bool,
}

impl Client {
    fn new(conn: Conn) -> Client {
        Client { conn, recv: Recv::Idle, sending: None, closing: false }
    }

    fn in_flight(&self) -> bool {
        self.recv != Recv::Idle || self.sending.is_some()
    }
}

/// Connections by slot, each slot with a generation bumped when it is freed.
#[derive(Debug, Default)]
struct Slots {
    slots: Vec<(u32, Option<Client>)>,
    vacant: Vec<u32>,
    len: usize,
}

impl Slots {
    fn get(&mut self, token: Token) -> Option<&mut Client> {
        match self.slots.get_mut(token.index as usize)? {
            (generation, Some(conn)) if *generation == token.generation => Some(conn),
            _ => None,
        }
    }

    /// Stores `client`; returns its token (for `op`).
    fn insert(&mut self, client: Client, op: Op) -> Token {
        let index = self.vacant.pop().unwrap_or_else(|| {
            self.slots.push((0, None));
            (self.slots.len() - 1) as u32
        });
        let (generation, slot) = &mut self.slots[index as usize];
        *slot = Some(client);
        self.len += 1;
        Token { op, index, generation: *generation }
    }

    /// Frees the slot of `token`; later tokens of the old generation find nothing.
    fn free(&mut self, token: Token) -> Option<Client> {
        let (generation, slot) = self.slots.get_mut(token.index as usize)?;
        if *generation != token.generation {
            return None;
        }
        let client = slot.take()?;
        *generation = generation.wrapping_add(1) & Token::GENERATION_MASK;
        self.vacant.push(token.index);
        self.len -= 1;
        Some(client)
    }

    /// The token of slot `index` if a connection lives there.
    fn token_at(&self, index: usize, op: Op) -> Option<Token> {
        match self.slots.get(index)? {
            (generation, Some(_)) => Some(Token { op, index: index as u32, generation: *generation }),
            _ => None,
        }
    }
}

struct Server<'a> {
    config: &'a Config,
    timing: Timing,
    uring: Uring,
    /// `None` once stopped and the accept has ended.
    listener: Option<Listener>,
    accepting: Accepting,
    accept_paused_until: Option<Instant>,
    stopping: bool,
    conns: Slots,
    handler: KeyValueHandler<Observed<'a, HostStore>>,
    scratch: Scratch,
    counters: &'a Counters,
    memory: &'a ClientMemory,
    /// The earliest session deadline seen since the last sweep.
    next_sweep: Option<Instant>,
}

/// Serves until `shutdown` is requested and every connection has closed.
pub fn serve(listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    loops::single(listener, config, shutdown, serve_loop)
}

/// The server as one loop of [`loops`], counting into `run.counters`.
pub fn serve_loop(listener: Listener, run: Loop<'_>) -> io::Result<()> {
    let Loop { config, shutdown, counters, memory, fill, .. } = run;
    let uring = Uring::new()?;
    let mut server = Server {
        config,
        timing: Timing::new(config),
        uring,
        listener: Some(listener),
        accepting: Accepting::Idle,
        accept_paused_until: None,
        stopping: false,
        conns: Slots::default(),
        handler: KeyValueHandler::new(Observed::new(config.store(), counters, fill)),
        // Receives land in the ring's buffers: the loop needs no read buffer of its own.
        scratch: Scratch::new(0),
        counters,
        memory,
        next_sweep: None,
    };
    match server.run(shutdown) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Operations may still be in the kernel, reading send buffers
            // and writing receive buffers: leak them all rather than free
            // memory the kernel may touch.
            mem::forget(server);
            Err(e)
        }
    }
}

impl Server<'_> {
    fn run(&mut self, shutdown: &Shutdown) -> io::Result<()> {
        self.arm_accept()?;
        let wake = opcode::PollAdd::new(types::Fd(shutdown.wake_fd().as_raw_fd()), POLL_IN)
            .build()
            .user_data(Token::loop_op(Op::Wake).encode());
        // SAFETY: a poll points to no buffer; the wake-up socket outlives the loop.
        unsafe { self.uring.push(&wake)? };
        let mut now = Instant::now();
        if shutdown.is_requested() {
            self.begin_shutdown(now)?;
        }
        while self.listener.is_some() || self.conns.len > 0 {
            self.uring.bufs.publish();
            let wake_at = [self.next_sweep, self.accept_paused_until].into_iter().flatten().min();
            // From the clock read after the last wait, as in the epoll flavor.
            self.uring.wait(wake_at.map(|at| at.saturating_duration_since(now)))?;
            now = Instant::now();
            while self.uring.reap() {
                let mut cqes = mem::take(&mut self.uring.cqes);
                for cqe in cqes.drain(..) {
                    self.complete(&cqe, now)?;
                    // At once, not once per batch: a batch could bring every client's first megabyte.
                    if self.memory.is_over() {
                        self.evict_biggest()?;
                    }
                }
                self.uring.cqes = cqes;
            }
            if self.accept_paused_until.is_some_and(|at| now >= at) {
                self.accept_paused_until = None;
                self.arm_accept()?;
            }
            if self.next_sweep.is_some_and(|at| now >= at) {
                self.sweep(now)?;
            }
        }
        Ok(())
    }

    fn complete(&mut self, cqe: &cqueue::Entry, now: Instant) -> io::Result<()> {
        let Some(token) = Token::decode(cqe.user_data_u64()) else { return Ok(()) };
        match token.op {
            Op::Accept => self.accepted(cqe, now),
            Op::Listen => {
                self.accepting = Accepting::Idle;
                self.listener_idle()
            }
            Op::Wake => self.begin_shutdown(now),
            Op::Recv => self.received(token, cqe, now),
            Op::Send => self.sent(token, cqe, now),
            Op::Cancel | Op::Probe => Ok(()),
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let Some(listener) = &self.listener else { return Ok(()) };
        if self.accepting != Accepting::Idle || self.stopping || self.accept_paused_until.is_some() {
            return Ok(());
        }
        let accept = opcode::AcceptMulti::new(types::Fd(listener.as_fd().as_raw_fd()))
            .flags(SocketFlags::CLOEXEC)
            .build()
            .user_data(Token::loop_op(Op::Accept).encode());
        // SAFETY: a multishot accept without an address points to no buffer.
        unsafe { self.uring.push(&accept)? };
        self.accepting = Accepting::Armed;
        Ok(())
    }

    /// Nothing in the kernel for the listener: closes it when stopping, else accepts again.
    fn listener_idle(&mut self) -> io::Result<()> {
        if self.stopping {
            self.listener = None;
            return Ok(());
        }
        self.arm_accept()
    }

    fn accepted(&mut self, cqe: &cqueue::Entry, now: Instant) -> io::Result<()> {
        let ended = !cqueue::more(cqe.flags());
        if ended {
            self.accepting = Accepting::Idle;
        }
        match cqe.result() {
            Ok(fd) => {
                // SAFETY: an accept's result is a new descriptor, installed in
                // this process's table for this completion and owned by no one else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
                self.admit(fd, now)?;
            }
            Err(Errno::CANCELED) => {}
            Err(e) if net::out_of_descriptors(&e.into()) => self.refuse_one(now)?,
            Err(e) => {
                self.counters.error(format_args!("accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}"));
                self.accept_paused_until = Some(now + ACCEPT_PAUSE);
            }
        }
        if ended && self.accepting == Accepting::Idle {
            return self.listener_idle();
        }
        Ok(())
    }

    /// Out of descriptors: the connection waiting is taken off the queue
    /// with the spare descriptor and closed, as the other flavors do.
    fn refuse_one(&mut self, now: Instant) -> io::Result<()> {
        let Some(listener) = &mut self.listener else { return Ok(()) };
        // Non-blocking for this one accept only: the queue may be empty.
        let accepted = net::set_nonblocking(listener.as_fd(), true).and_then(|()| {
            let accepted = listener.accept(false);
            net::set_nonblocking(listener.as_fd(), false).and(accepted)
        });
        match accepted {
            Ok(Accepted::Refused(e)) => self.counters.refused(None, format_args!("out of file descriptors: {e}")),
            Ok(Accepted::Connection(fd, peer)) => {
                drop(fd);
                self.counters.refused(peer, "out of file descriptors");
            }
            Ok(Accepted::Nothing) if !self.stopping => {
                // Linux reserves the descriptor before it looks at the queue:
                // an accept now would fail at once, again and again. Wait for
                // a connection to refuse instead.
                let poll = opcode::PollAdd::new(types::Fd(listener.as_fd().as_raw_fd()), POLL_IN)
                    .build()
                    .user_data(Token::loop_op(Op::Listen).encode());
                // SAFETY: a poll points to no buffer.
                unsafe { self.uring.push(&poll)? };
                self.accepting = Accepting::Polling;
            }
            Ok(Accepted::Nothing) => {}
            Err(e) => {
                self.counters.error(format_args!("accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}"));
                self.accept_paused_until = Some(now + ACCEPT_PAUSE);
            }
        }
        Ok(())
    }

    fn admit(&mut self, fd: OwnedFd, now: Instant) -> io::Result<()> {
        let peer = rustix::net::getpeername(&fd).ok().flatten().and_then(|a| SocketAddr::try_from(a).ok());
        if self.conns.len >= self.config.max_connections {
            self.counters.refused(peer, format_args!("max connections ({}) reached", self.config.max_connections));
            return Ok(());
        }
        // Responses are written whole; Nagle would only delay them.
        if let Err(e) = rustix::net::sockopt::set_tcp_nodelay(&fd, true) {
            self.counters.refused(peer, format_args!("TCP_NODELAY: {e}"));
            return Ok(());
        }
        let mut conn = Conn::new(fd, peer, Session::new(self.config, self.timing, now));
        if self.stopping {
            conn.begin_shutdown(now);
        }
        let token = self.conns.insert(Client::new(conn), Op::Recv);
        self.counters.connection();
        self.settle(token)
    }

    fn received(&mut self, token: Token, cqe: &cqueue::Entry, now: Instant) -> io::Result<()> {
        let flags = cqe.flags();
        let bid = cqueue::buffer_select(flags);
        if let Some(client) = self.conns.get(token) {
            if !cqueue::more(flags) {
                client.recv = Recv::Idle;
            }
            let session = &mut client.conn.session;
            match cqe.result() {
                Ok(0) => session.peer_closed(now),
                Ok(n) => {
                    let bid = bid.expect("a receive of some bytes names its buffer");
                    let data = self.uring.bufs.data(bid, n as usize);
                    session.receive(data, now, &mut self.handler, &mut self.scratch.spare);
                }
                // The ring ran dry, or the receive was cancelled: armed again if the session wants.
                Err(Errno::NOBUFS) | Err(Errno::CANCELED) => {}
                Err(e) => session.io_error(e.into()),
            }
        }
        if let Some(bid) = bid {
            self.uring.bufs.give_back(bid);
        }
        self.settle(token)
    }

    fn sent(&mut self, token: Token, cqe: &cqueue::Entry, now: Instant) -> io::Result<()> {
        if let Some(client) = self.conns.get(token) {
            let buf = client.sending.take().expect("a send completes the buffer it was given");
            let (session, spare, handler) = (&mut client.conn.session, &mut self.scratch.spare, &mut self.handler);
            match cqe.result() {
                Ok(n) => session.transmitted(buf, n as usize, now, handler, spare),
                Err(e) => {
                    session.transmitted(buf, 0, now, handler, spare);
                    if e != Errno::CANCELED {
                        session.io_error(e.into());
                    }
                }
            }
        }
        self.settle(token)
    }

    /// After a session moved on: sends what it has, arms or cancels its
    /// receive, counts it, and once it is closed and nothing of it is in
    /// the kernel, closes it.
    fn settle(&mut self, token: Token) -> io::Result<()> {
        let Some(client) = self.conns.get(token) else { return Ok(()) };
        if client.closing {
            if !client.in_flight() {
                // Nothing of it left in the kernel: its number may be reused now.
                self.conns.free(token);
            }
            return Ok(());
        }
        let fd = client.conn.fd.as_raw_fd();
        if client.sending.is_none()
            && let Some(buf) = client.conn.session.take_transmit(&mut self.scratch.spare)
        {
            let unsent = buf.unsent();
            let len = u32::try_from(unsent.len()).unwrap_or(u32::MAX);
            let send = opcode::Send::new(types::Fd(fd), unsent.as_ptr(), len)
                .flags(SendFlags::NOSIGNAL)
                .build()
                .user_data(token.with_op(Op::Send).encode());
            // The buffer moves into the connection; its heap bytes do not move.
            client.sending = Some(buf);
            // SAFETY: the bytes are `client.sending`'s, which is left alone
            // until this send's completion takes it back (`sent`), and the
            // slot is not freed while it is set.
            unsafe { self.uring.push(&send)? };
        }
        let Some(client) = self.conns.get(token) else { return Ok(()) };
        if client.conn.settle(&mut self.scratch, self.counters, self.memory) {
            client.closing = true;
            return self.retire(token);
        }
        match (client.conn.session.wants_read(), client.recv) {
            (true, Recv::Idle) => {
                let recv = opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
                    .build()
                    .user_data(token.with_op(Op::Recv).encode());
                client.recv = Recv::Armed;
                // SAFETY: it writes only into the registered buffer ring, which outlives the loop.
                unsafe { self.uring.push(&recv)? };
            }
            (false, Recv::Armed) => {
                client.recv = Recv::Cancelling;
                self.cancel(token.with_op(Op::Recv))?;
            }
            _ => {}
        }
        let deadline = self.conns.get(token).and_then(|c| c.conn.session.poll_timeout());
        self.next_sweep = [self.next_sweep, deadline].into_iter().flatten().min();
        Ok(())
    }

    /// A closed connection: cancels what it has in the kernel, and frees it
    /// at once if nothing is (else when the last completion comes).
    fn retire(&mut self, token: Token) -> io::Result<()> {
        let Some(client) = self.conns.get(token) else { return Ok(()) };
        let (recv, sending) = (client.recv == Recv::Armed, client.sending.is_some());
        if recv {
            client.recv = Recv::Cancelling;
            self.cancel(token.with_op(Op::Recv))?;
        }
        if sending {
            // A send to a peer that reads nothing would wait for ever.
            self.cancel(token.with_op(Op::Send))?;
        }
        self.settle(token)
    }

    fn cancel(&mut self, target: Token) -> io::Result<()> {
        let cancel =
            opcode::AsyncCancel::new(target.encode().into()).build().user_data(target.with_op(Op::Cancel).encode());
        // SAFETY: a cancel points to no buffer.
        unsafe { self.uring.push(&cancel) }
    }

    /// Every session acts on its passed deadlines; the next sweep is at the earliest one left.
    fn sweep(&mut self, now: Instant) -> io::Result<()> {
        self.next_sweep = None;
        self.for_every_conn(|conn| conn.session.handle_timeout(now))
    }

    /// Applies `f` to every connection not yet closed, then settles it.
    fn for_every_conn(&mut self, mut f: impl FnMut(&mut Conn)) -> io::Result<()> {
        for index in 0..self.conns.slots.len() {
            let Some(token) = self.conns.token_at(index, Op::Recv) else { continue };
            if let Some(client) = self.conns.get(token)
                && !client.closing
            {
                f(&mut client.conn);
            }
            self.settle(token)?;
        }
        Ok(())
    }

    /// Evicts the connections holding the most until all together are
    /// under the client-memory cap (each at most once).
    fn evict_biggest(&mut self) -> io::Result<()> {
        for _ in 0..self.conns.len {
            if !self.memory.is_over() {
                break;
            }
            let slots = &self.conns.slots;
            let open = slots.iter().enumerate().filter_map(|(index, (generation, client))| match client {
                Some(client) if !client.closing => {
                    Some((Token { op: Op::Recv, index: index as u32, generation: *generation }, &client.conn))
                }
                _ => None,
            });
            let Some(token) = driver::biggest(open) else { break };
            if let Some(client) = self.conns.get(token) {
                client.conn.session.evict(&mut self.scratch.spare);
            }
            self.settle(token)?;
        }
        Ok(())
    }

    /// Stops accepting; every session begins its shutdown.
    fn begin_shutdown(&mut self, now: Instant) -> io::Result<()> {
        if self.stopping {
            return Ok(());
        }
        self.stopping = true;
        self.accept_paused_until = None;
        match self.accepting {
            // The listener closes once the last completion for it has come.
            Accepting::Armed => self.cancel(Token::loop_op(Op::Accept))?,
            Accepting::Polling => self.cancel(Token::loop_op(Op::Listen))?,
            Accepting::Idle => self.listener = None,
        }
        self.for_every_conn(|conn| conn.begin_shutdown(now))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn tokens_round_trip_and_stale_generations_find_nothing() {
        let token = Token { op: Op::Send, index: u32::MAX, generation: Token::GENERATION_MASK };
        assert_eq!(Token::decode(token.encode()), Some(token));
        assert_eq!(Token::decode(0), None, "user_data 0 is no operation of ours");

        let config = Config::for_flavor(crate::config::Flavor::Uring);
        let conn = || {
            let (a, _) = std::os::unix::net::UnixStream::pair().unwrap();
            Client::new(Conn::new(a.into(), None, Session::new(&config, Timing::new(&config), Instant::now())))
        };
        let mut slots = Slots::default();
        let first = slots.insert(conn(), Op::Recv);
        assert!(slots.get(first).is_some());
        assert!(slots.free(first).is_some());
        let second = slots.insert(conn(), Op::Recv);
        assert_eq!((second.index, second.generation), (first.index, 1), "same slot, next generation");
        assert!(slots.get(first).is_none(), "a completion for the old connection finds nothing");
        assert!(slots.free(first).is_none());
        assert_eq!(slots.len, 1);
    }

    #[test]
    fn this_kernel_runs_the_uring_flavor() {
        match probe() {
            Ok(()) => {}
            Err(why) => eprintln!("skipped: {why}"),
        }
    }

    #[test]
    fn refusals_name_what_is_missing_and_the_way_out() {
        let line = setup_refused(Errno::PERM).to_string();
        assert!(line.contains("io_uring_setup was refused (EPERM: ") && line.contains("seccomp"), "{line}");
        assert!(line.ends_with("use --flavor epoll"), "{line}");
        assert!(setup_refused(Errno::NOSYS).to_string().contains("no io_uring (ENOSYS)"));
    }
}
