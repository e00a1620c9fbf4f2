//! The io_uring itself for the `uring` driver: setting the ring up, the
//! provided-buffer ring every connection receives into, the probe that says
//! whether this kernel runs the flavor, and what a completion's `user_data`
//! says (the operation and the server's [`Handle`]).

use std::alloc::{self, Layout};
use std::io;
use std::mem::{self, offset_of};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use rustix::io_uring::{IoringOp, io_uring_buf, io_uring_ptr};
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};
use rustix_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::sansio::server::Handle;

/// Submission queue entries (the completion queue has [`CQ_ENTRIES`]).
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries: room for a receive and a send completion of
/// 8,000 connections in one turn (more are kept by the kernel,
/// `IORING_FEAT_NODROP`, and posted on the next turn).
const CQ_ENTRIES: u32 = 16384;
/// Completions copied out of the ring and handled at a time.
pub(super) const CQE_BATCH: usize = 1024;
/// Buffers in the provided-buffer ring, shared by every connection.
pub const RECV_BUFFERS: u16 = 1024;
/// Bytes per receive buffer: one page; a request larger than that arrives
/// in several completions, each copied into the session's frame buffer.
pub const RECV_BUFFER_LEN: usize = 4096;
/// The buffer group of the ring.
pub(super) const BUFFER_GROUP: u16 = 0;
/// What a completion is for: the top byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
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

/// `user_data`: the operation in the top 8 bits, the server's [`Handle`]
/// (slot generation and index) in the low 56.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) op: Op,
    pub(super) handle: Handle,
}

impl Token {
    pub(super) fn loop_op(op: Op) -> Token {
        Token { op, handle: Handle::from_bits(0) }
    }

    /// An operation on listener `i` (its index where a connection's handle goes).
    pub(super) fn listener_op(op: Op, i: usize) -> Token {
        Token { op, handle: Handle::from_bits(i as u64) }
    }

    pub(super) fn encode(self) -> u64 {
        (u64::from(self.op as u8) << 56) | self.handle.to_bits()
    }

    pub(super) fn decode(data: u64) -> Option<Token> {
        let op = Op::from_bits((data >> 56) as u8)?;
        Some(Token { op, handle: Handle::from_bits(data & ((1 << 56) - 1)) })
    }

    pub(super) fn with_op(self, op: Op) -> Token {
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
/// before it prints its start-up line; tests call [`runs_here`].
pub fn probe() -> Result<(), Unsupported> {
    Ring::new().map(drop)
}

/// The environment variable that lets a test run (and CI) go on where the
/// kernel refuses io_uring: its value is the reason, and it is printed.
/// On this project's machines io_uring works, so without it a refusal is
/// a failure, never a silent skip.
pub const REFUSED_OPT_OUT: &str = "KVIO_URING_REFUSED";

/// For tests and CI: whether `what` (a test, a step) is to run the uring
/// flavor here. True when this kernel runs it. When it refuses: false if
/// [`REFUSED_OPT_OUT`] gives a reason (printed on stderr with the
/// refusal: `what` is skipped), else a panic that names the refusal and
/// the opt-out: a refused io_uring fails the test.
pub fn runs_here(what: &str) -> bool {
    // Probed on a thread of its own: the probe's ring, torn down, may
    // still run task work on the thread that made it, which would
    // interrupt that thread's blocking calls (EINTR) in the caller's test.
    let probed = std::thread::spawn(probe).join().unwrap_or_else(|_| Err(Unsupported("the probe panicked".into())));
    match verdict(probed, std::env::var(REFUSED_OPT_OUT).ok()) {
        Ok(None) => true,
        Ok(Some(skipped)) => {
            eprintln!("skipped {what}: {skipped}");
            false
        }
        Err(failure) => panic!("{what}: {failure}"),
    }
}

/// [`runs_here`]'s rule, given the probe's result and the opt-out's value:
/// `Ok(None)` run; `Ok(Some(why))` skipped, for that reason; `Err` the failure.
fn verdict(probed: Result<(), Unsupported>, opt_out: Option<String>) -> Result<Option<String>, String> {
    let Err(why) = probed else { return Ok(None) };
    match opt_out.as_deref().map(str::trim) {
        Some(reason) if !reason.is_empty() => Ok(Some(format!("{why} ({REFUSED_OPT_OUT}={reason})"))),
        _ => Err(format!(
            "{why}. io_uring runs on this project's machines, so this is a failure; where the kernel \
             refuses it on purpose, set {REFUSED_OPT_OUT} to the reason to skip the uring flavor"
        )),
    }
}

/// The receive buffers and the ring of free ones the kernel picks from.
#[derive(Debug)]
pub(super) struct BufRing {
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
    pub(super) fn give_back(&mut self, bid: u16) {
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
    pub(super) fn publish(&self) {
        // SAFETY: the ring's tail is the u16 where entry 0's `resv` is
        // (`struct io_uring_buf_ring`), inside the allocation and aligned
        // for a u16; the kernel reads it concurrently, hence the atomic.
        let tail = unsafe {
            AtomicU16::from_ptr(self.entries.as_ptr().cast::<u8>().add(offset_of!(io_uring_buf, resv)).cast::<u16>())
        };
        tail.store(self.tail, Ordering::Release);
    }

    /// The `len` bytes the kernel received into buffer `bid`.
    pub(super) fn data(&self, bid: u16, len: usize) -> &[u8] {
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
        // them is dropped first (field order of `Ring`), with no receive
        // in flight: the loop ends only once every connection has closed,
        // and a loop that fails is leaked whole (see `serve`).
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), Self::entries_layout());
            alloc::dealloc(self.memory.as_ptr(), Self::memory_layout());
        }
    }
}

/// The ring and its buffers.
pub(super) struct Ring {
    /// Declared first: dropped (closed) before the buffers it used.
    ring: IoUring,
    pub(super) bufs: BufRing,
    /// Completions copied out of the ring, up to [`CQE_BATCH`].
    pub(super) cqes: Vec<cqueue::Entry>,
}

impl Ring {
    /// Sets up the ring, registers the buffer ring and tries a multishot receive.
    pub(super) fn new() -> Result<Ring, Unsupported> {
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
        let mut uring = Ring { ring, bufs, cqes: Vec::with_capacity(CQE_BATCH) };
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
    pub(super) unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
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
    pub(super) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
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
    pub(super) fn reap(&mut self) -> bool {
        self.cqes.extend(self.ring.completion().take(CQE_BATCH));
        !self.cqes.is_empty()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Closing the ring unregisters it too; this says it before the buffers go.
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let handle = Handle::from_bits((1 << 56) - 1);
        let token = Token { op: Op::Send, handle };
        assert_eq!(Token::decode(token.encode()), Some(token));
        assert_eq!(Token::decode(0), None, "user_data 0 is no operation of ours");
    }

    /// Fails where io_uring is refused, unless the opt-out says why.
    #[test]
    fn this_kernel_runs_the_uring_flavor() {
        if runs_here("this_kernel_runs_the_uring_flavor") {
            let mut ring = Ring::new().expect("the probe passed");
            ring.try_multishot_recv().expect("and a second multishot receive on the same ring");
        }
    }

    #[test]
    fn a_refusal_fails_unless_the_opt_out_gives_a_reason() {
        let refused = || Err(Unsupported("io_uring_setup was refused (EPERM)".into()));
        assert_eq!(verdict(Ok(()), None), Ok(None));
        assert_eq!(verdict(Ok(()), Some("kernel too old".into())), Ok(None), "io_uring works: it runs anyway");
        let skipped = verdict(refused(), Some(" Docker's default seccomp profile ".into())).expect("skipped");
        assert_eq!(
            skipped.as_deref(),
            Some(
                "--flavor uring: io_uring_setup was refused (EPERM); use --flavor epoll (KVIO_URING_REFUSED=Docker's default seccomp profile)"
            ),
            "the refusal and the reason, said"
        );
        for opt_out in [None, Some(String::new()), Some("  ".into())] {
            let failure = verdict(refused(), opt_out.clone()).expect_err("a refusal fails");
            assert!(
                failure.contains("EPERM") && failure.contains(REFUSED_OPT_OUT),
                "{opt_out:?}: names the refusal and the way out: {failure}"
            );
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
