//! A deterministic model of the [`Server`], in the spirit of quinn's
//! `Pair`/`drive` tests: a fake clock, fake connections and a fake driver,
//! driven by a byte string that picks the next event (accept, whole,
//! partial and pipelined requests, a big partial frame, garbage, a peer
//! that stops reading, a peer's close, a socket error, a time jump, the
//! stop, a late release of a closed handle). After every step it checks:
//!
//! - every complete request is answered, in order, until its connection
//!   closes (and all of them, when nothing but the client ended it). An
//!   eviction at the memory cap ends it too (docs/protocol.md, "total
//!   client memory"): the input not yet taken is dropped unanswered, and
//!   either the error frame follows the answers already made, or, when
//!   the unsent answers stand at the output limit at that instant, the
//!   connection closes at once and those answers are lost with it. That
//!   instant may come while the peer is reading: answering input held
//!   back by back-pressure refills the output to the limit within the
//!   same write event (the `server` target's `unanswered-42` input);
//! - the client memory is never above the cap once the eviction step has
//!   run (unless everyone holding any is already evicted), and the total
//!   is the sum of the charges;
//! - the connections evicted by one event held at least as much as every
//!   connection left (the victim is the biggest holder);
//! - no more connections than the limit are served;
//! - a stop ends within grace + linger of fake time, and until then the
//!   server always names a deadline no later than that;
//! - no handle's slot is given out while the driver still holds the
//!   descriptor of an earlier connection in it.
//!
//! [`run`] panics on the first broken invariant. The unit tests feed it
//! seeded random bytes; the `server` fuzz target feeds it libFuzzer's.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kvio_core::frame::{FrameParser, Parse, encode_frame};
use kvio_core::store::Slot;
use kvio_core::{Store, StoreLimits};
use kvio_proto::{KeyValueMessage, Kind, MEMORY_LIMIT_REASON};
use prost::Message;

use crate::sansio::memory::ClientMemory;
use crate::sansio::server::{Handle, Limits, Places, Server, Shared};
use crate::sansio::session::{Clock, Framing, Timing};
use crate::sansio::stats::{Close, Counters};
use crate::sansio::wire::{Handlers, Protocol, Protocols};

/// Connections served at once.
const MAX_CONNECTIONS: usize = 4;
/// The client-memory cap: two or three big partial frames pass it.
const MEMORY_CAP: usize = 4 * 1024;
/// Bytes a fake socket holds for a peer that does not read.
const WINDOW: usize = 700;
/// Largest frame accepted.
const MAX_FRAME_LEN: u32 = 4096;
/// Distinct keys.
const KEYS: u8 = 8;
/// Steps at most per run, so a long input cannot run for ever.
const MAX_STEPS: usize = 2000;
const MS: Duration = Duration::from_millis(1);

fn timing() -> Timing {
    Timing {
        idle: Some(1000 * MS),
        frame: None,
        grace: 300 * MS,
        linger: 500 * MS,
        linger_bytes: 4096,
        stop_read_budget: 2048,
    }
}

type ModelStore = Store<Box<[Slot]>, Box<[u8]>>;

fn store() -> ModelStore {
    let limits = StoreLimits::for_frame(MAX_FRAME_LEN, 64, 1 << 16);
    let slots = kvio_core::store::slots_for(64);
    Store::with_storage(vec![Slot::EMPTY; slots].into_boxed_slice(), vec![0u8; 1 << 16].into_boxed_slice(), limits)
}

fn key(k: u8) -> String {
    format!("key{k}")
}

/// The only value ever put for `key(k)`: a get that finds it must return it.
fn value(k: u8) -> String {
    format!("value-of-{k}-{}", "x".repeat(usize::from(k) * 7))
}

fn request(get: bool, k: u8) -> Vec<u8> {
    let kind = if get { Kind::Get } else { Kind::PutOrUpdate };
    let value = if get { String::new() } else { value(k) };
    let msg = KeyValueMessage { key: key(k), value, kind: kind.into(), status: 0 };
    let mut frame = Vec::new();
    encode_frame(&msg.encode_to_vec(), &mut frame).expect("a small frame");
    frame
}

/// Reads the fuzz input; past its end, zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

/// A request a client wrote whole: what its answer must be.
#[derive(Debug, Clone, Copy)]
struct Sent {
    get: bool,
    key: u8,
}

/// One fake connection: the client, and the driver's side of its socket.
#[derive(Debug)]
struct Peer {
    handle: Handle,
    /// The driver holds its descriptor (not yet released).
    held: bool,
    /// The server closed it.
    closed: bool,
    /// Its release waits for a later step (a completion driver waiting
    /// for operations in the kernel).
    late_release: bool,
    /// Written by the client, not yet read by the driver.
    outbox: Vec<u8>,
    /// The rest of a request written in part, and the request.
    rest: Vec<u8>,
    partial: Option<Sent>,
    /// Requests written whole, not yet answered.
    sent: VecDeque<Sent>,
    /// Sent by the server, not yet read by the client.
    inbox: Vec<u8>,
    parser: FrameParser,
    payload: Vec<u8>,
    reads: bool,
    /// The client shut its sending side.
    shut: bool,
    eof_delivered: bool,
    /// The client wrote garbage or a big partial frame: no more requests.
    broken: bool,
    /// The client wrote garbage: a framing error frame is its due.
    garbage: bool,
    /// An error frame came: nothing may follow it.
    error_frame: bool,
    /// Something besides the client may have ended it: a socket error, a
    /// time jump while it was not reading.
    excused: bool,
    /// Checked that everything was answered.
    checked: bool,
    /// Why the server ended it (read when the driver is told to close).
    ended: Option<Close>,
}

impl Peer {
    fn new(handle: Handle, late_release: bool) -> Peer {
        Peer {
            handle,
            held: true,
            closed: false,
            late_release,
            outbox: Vec::new(),
            rest: Vec::new(),
            partial: None,
            sent: VecDeque::new(),
            inbox: Vec::new(),
            parser: FrameParser::new(1 << 20),
            payload: Vec::new(),
            reads: true,
            shut: false,
            eof_delivered: false,
            broken: false,
            garbage: false,
            error_frame: false,
            excused: false,
            checked: false,
            ended: None,
        }
    }

    /// The client reads everything the server sent, and checks each answer
    /// against the request it wrote, in order.
    fn read_inbox(&mut self) {
        let inbox = std::mem::take(&mut self.inbox);
        let mut at = 0;
        while at < inbox.len() {
            let (used, status) = self.parser.push(&inbox[at..], &mut self.payload).expect("the server frames well");
            at += used;
            let Parse::Complete(payload) = status else { continue };
            let msg = KeyValueMessage::decode(payload).expect("the server encodes well");
            assert!(!self.error_frame, "a frame after the error frame: {msg:?}");
            if msg.kind == u32::from(Kind::Error) {
                let known = msg.value == MEMORY_LIMIT_REASON || (self.garbage && msg.value == "frame length below 5");
                assert!(known, "an unexpected error frame: {msg:?}");
                self.error_frame = true;
                continue;
            }
            let sent = self.sent.pop_front().unwrap_or_else(|| panic!("an answer to no request: {msg:?}"));
            if sent.get {
                assert_eq!((msg.kind, msg.key.as_str()), (u32::from(Kind::GetResponse), key(sent.key).as_str()));
                assert!(msg.status != 0 || msg.value == value(sent.key), "a get found a value never put: {msg:?}");
            } else {
                assert_eq!((msg.kind, msg.status), (u32::from(Kind::PutOrUpdate), 0), "a put's answer: {msg:?}");
            }
        }
    }
}

/// The model: a server, its clients, a fake driver and a fake clock.
struct Model<'a> {
    server: Server<'a, Protocols<ModelStore>>,
    places: &'a Places,
    memory: &'a ClientMemory,
    peers: Vec<Peer>,
    now: Instant,
    stopped_at: Option<Instant>,
}

impl Model<'_> {
    fn limits() -> Limits {
        Limits {
            framing: Framing { max_frame_len: MAX_FRAME_LEN, output_limit: 1024 },
            timing: timing(),
            clock: Clock::starting(Instant::now(), 0),
            max_connections: MAX_CONNECTIONS,
        }
    }

    fn peer(&mut self, pick: u8) -> Option<&mut Peer> {
        let live: Vec<usize> = (0..self.peers.len()).filter(|&i| !self.peers[i].closed).collect();
        let i = *live.get(usize::from(pick) % live.len().max(1))?;
        Some(&mut self.peers[i])
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let op = input.u8();
        let pick = input.u8();
        // Accepts, requests and big frames twice as likely as the rest.
        match op % 14 {
            0 | 11 => self.accept(pick & 1 == 1),
            1 | 12 => {
                let n = pick % 4 + 1;
                let (get, k) = (input.u8(), input.u8());
                if let Some(peer) = self.peer(pick).filter(|p| !p.shut && !p.broken && p.rest.is_empty()) {
                    for i in 0..n {
                        let sent = Sent { get: (get >> i) & 1 == 1, key: k.wrapping_add(i) % KEYS };
                        peer.outbox.extend(request(sent.get, sent.key));
                        peer.sent.push_back(sent);
                    }
                }
            }
            2 => {
                let (get, k, split) = (input.u8(), input.u8(), input.u8());
                if let Some(peer) = self.peer(pick).filter(|p| !p.shut && !p.broken) {
                    if peer.rest.is_empty() {
                        let sent = Sent { get: get & 1 == 1, key: k % KEYS };
                        peer.rest = request(sent.get, sent.key);
                        peer.partial = Some(sent);
                    }
                    let n = usize::from(split) % peer.rest.len() + 1;
                    peer.outbox.extend(peer.rest.drain(..n));
                    if peer.rest.is_empty() {
                        // Whole now: it must be answered.
                        peer.sent.extend(peer.partial.take());
                    }
                }
            }
            3 | 13 => {
                // Most of a big frame: memory held until the rest comes (it never does).
                let len = 900 + usize::from(input.u16() % 2000);
                if let Some(peer) = self.peer(pick).filter(|p| !p.shut && !p.broken && p.rest.is_empty()) {
                    peer.broken = true;
                    // The frame's `len` counts the payload and the 5-byte footer.
                    peer.outbox.extend((len as u32 + 5).to_le_bytes());
                    peer.outbox.extend(std::iter::repeat_n(7u8, len - 200));
                }
            }
            4 => {
                if let Some(peer) = self.peer(pick) {
                    peer.reads = !peer.reads;
                }
            }
            5 => {
                if let Some(peer) = self.peer(pick) {
                    peer.shut = true;
                }
            }
            6 => {
                // Mostly short steps; one in eight long enough for idle timeouts and the stop's bounds.
                let ms = input.u16();
                let ms = if pick.is_multiple_of(8) { ms % 1500 } else { ms % 150 };
                self.pass(Duration::from_millis(u64::from(ms)));
            }
            7 => {
                if self.stopped_at.is_none() {
                    self.stopped_at = Some(self.now);
                    let peers = &self.peers;
                    let waiting = |h: Handle| peers.iter().any(|p| p.held && p.handle == h && !p.outbox.is_empty());
                    self.server.begin_stop(self.now, waiting);
                }
            }
            8 => {
                if let Some(peer) = self.peer(pick) {
                    peer.excused = true;
                    let handle = peer.handle;
                    self.server.socket_error(handle, std::io::ErrorKind::ConnectionReset.into());
                }
            }
            9 => {
                if let Some(peer) = self.peer(pick).filter(|p| !p.shut && !p.broken && p.rest.is_empty()) {
                    peer.broken = true;
                    peer.garbage = true;
                    peer.outbox.extend([0, 0, 0, 0]);
                }
            }
            _ => {
                for peer in self.peers.iter_mut().filter(|p| p.closed && p.held) {
                    peer.held = false;
                    self.server.release(peer.handle);
                }
            }
        }
        self.drive();
        self.check();
    }

    fn accept(&mut self, late_release: bool) {
        let Ok(handle) = self.server.accept(None, self.now, Protocol::Kvio) else { return };
        let reused = self.peers.iter().any(|p| p.held && p.handle.index() == handle.index());
        assert!(!reused, "handle {handle:?} given out while the driver holds a descriptor in its slot");
        self.peers.push(Peer::new(handle, late_release));
    }

    /// Time passes by `d`; the driver wakes at every deadline the server names on the way.
    fn pass(&mut self, d: Duration) {
        for peer in self.peers.iter_mut().filter(|p| !p.reads) {
            peer.excused = true;
        }
        let target = self.now + d;
        while let Some(at) = self.server.poll_timeout().filter(|&at| at <= target) {
            self.now = self.now.max(at);
            self.server.handle_timeout(self.now);
            self.drive();
            self.check();
        }
        self.now = target;
        self.server.handle_timeout(self.now);
    }

    /// The fake driver: moves every byte that can move, then does what the server says.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.peers.len() {
                moved |= self.pump(i);
            }
            while let Some(io) = self.server.poll_io() {
                let Some(peer) = self.peers.iter_mut().find(|p| p.held && p.handle == io.handle) else {
                    panic!("the server names {:?}, which the driver does not hold", io.handle);
                };
                if io.close && !peer.closed {
                    peer.closed = true;
                    peer.ended = self.server.ended(io.handle);
                    if !peer.late_release {
                        peer.held = false;
                        self.server.release(io.handle);
                    }
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// One peer's bytes: the server's output into the socket, the client's into the server.
    fn pump(&mut self, i: usize) -> bool {
        let now = self.now;
        let peer = &mut self.peers[i];
        let mut moved = false;
        if peer.reads && !peer.inbox.is_empty() {
            peer.read_inbox();
            moved = true;
        }
        if peer.closed {
            if !peer.checked && peer.inbox.is_empty() {
                peer.checked = true;
                let evicted = peer.ended == Some(Close::MemoryEviction);
                let clean = !peer.excused && !peer.error_frame && !evicted && self.stopped_at.is_none();
                if clean && peer.shut && peer.outbox.is_empty() {
                    assert!(peer.sent.is_empty(), "closed with {} requests unanswered: {peer:?}", peer.sent.len());
                }
            }
            return moved;
        }
        let handle = peer.handle;
        while self.server.wants_write(handle) && peer.inbox.len() < WINDOW {
            let out = self.server.transmit(handle);
            let n = out.len().min(WINDOW - peer.inbox.len());
            peer.inbox.extend_from_slice(&out[..n]);
            evicting(&mut self.server, handle, |server| server.advance(handle, n, now));
            moved = true;
        }
        self.server.take_shut_write(handle);
        if self.server.wants_read(handle) {
            if !peer.outbox.is_empty() {
                let input = std::mem::take(&mut peer.outbox);
                evicting(&mut self.server, handle, |server| server.received(handle, &input, now));
                moved = true;
            } else if peer.shut && !peer.eof_delivered {
                peer.eof_delivered = true;
                self.server.peer_closed(handle, now);
                moved = true;
            }
        }
        moved
    }

    fn check(&self) {
        let charges: Vec<(Handle, usize, bool)> = self.server.charges().collect();
        let total: usize = charges.iter().map(|c| c.1).sum();
        assert_eq!(self.memory.total(), total, "the total is the sum of the charges");
        let unevicted_holders = charges.iter().filter(|c| c.1 > 0 && !c.2).count();
        assert!(
            total <= MEMORY_CAP || unevicted_holders == 0,
            "{total} bytes held, over the cap of {MEMORY_CAP}, and {unevicted_holders} holders not evicted"
        );
        assert!(self.places.taken() <= MAX_CONNECTIONS, "{} connections served", self.places.taken());
        let held = self.peers.iter().filter(|p| p.held).count();
        assert!(held <= MAX_CONNECTIONS, "the driver holds {held} connections");
        assert_eq!(self.server.len(), held, "the server and the driver agree on the handles held");
        if let Some(at) = self.stopped_at {
            let bound = at + timing().grace + timing().linger;
            let open = self.server.open_sessions();
            if self.now >= bound {
                assert_eq!(open, 0, "{open} sessions open {:?} after the stop", self.now - at);
            } else if open > 0 {
                let next = self.server.poll_timeout();
                assert!(next.is_some_and(|next| next <= bound), "stopping, next deadline {next:?} past {bound:?}");
            }
        }
    }
}

/// Calls `event`, an event on `handle` that may grow its charge and so
/// evict, and checks the victim rule: every connection it evicted (but
/// `handle`, whose charge during the call is unseen) held, before, at
/// least as much as every other connection left unevicted.
fn evicting<H: Handlers>(server: &mut Server<'_, H>, handle: Handle, event: impl FnOnce(&mut Server<'_, H>)) {
    let before: Vec<(Handle, usize, bool)> = server.charges().collect();
    event(server);
    let evicted_now = |h: Handle| server.charges().any(|(c, _, evicted)| c == h && evicted);
    let others = before.iter().filter(|(h, _, evicted)| *h != handle && !evicted);
    let (mut victims, mut spared) = (Vec::new(), Vec::new());
    for &(h, held, _) in others {
        if evicted_now(h) {
            victims.push(held)
        } else if server.charges().any(|(c, ..)| c == h) {
            spared.push(held)
        }
    }
    if let (Some(least), Some(most)) = (victims.iter().min(), spared.iter().max()) {
        assert!(least >= most, "evicted a connection holding {least} bytes, spared one holding {most}");
    }
}

/// Runs the model on `data` (see the [module docs](self)); panics on a broken invariant.
pub fn run(data: &[u8]) {
    let (places, counters) = (Places::default(), Counters::default());
    let memory = ClientMemory::new(MEMORY_CAP);
    let shared = Shared { places: &places, memory: &memory, counters: &counters };
    let t0 = Instant::now();
    let mut model = Model {
        server: Server::new(Model::limits(), shared, Protocols::new(store())),
        places: &places,
        memory: &memory,
        peers: Vec::new(),
        now: t0,
        stopped_at: None,
    };
    let mut input = Input(data);
    for _ in 0..MAX_STEPS {
        if input.0.is_empty() {
            break;
        }
        model.step(&mut input);
    }
    // The end of every run: the stop, and enough time for it to end.
    if model.stopped_at.is_none() {
        model.stopped_at = Some(model.now);
        let peers = &model.peers;
        let waiting = |h: Handle| peers.iter().any(|p| p.held && p.handle == h && !p.outbox.is_empty());
        model.server.begin_stop(model.now, waiting);
        model.drive();
        model.check();
    }
    model.pass(timing().grace + timing().linger + MS);
    model.drive();
    model.check();
}

#[cfg(test)]
mod test {
    use super::*;

    /// xorshift64*: seeded, so a failure names the seed that reproduces it.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn random_interleavings_keep_every_invariant() {
        for seed in 0..300 {
            let data = bytes(seed, 600);
            if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
                eprintln!("model failed with seed {seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }

    #[test]
    fn the_seed_corpus_keeps_every_invariant() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/server");
        let entries = std::fs::read_dir(dir).expect("the server target's seed corpus");
        for entry in entries {
            let path = entry.unwrap().path();
            run(&std::fs::read(&path).unwrap());
        }
    }

    /// Every input the `server` fuzz target ever failed on (fuzz/regressions/server).
    #[test]
    fn every_input_the_fuzzer_found_keeps_every_invariant() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions/server");
        let mut paths: Vec<_> = std::fs::read_dir(dir).expect("the found inputs").map(|e| e.unwrap().path()).collect();
        paths.sort();
        assert!(!paths.is_empty(), "no input in {dir}");
        for path in paths {
            if let Err(panic) = std::panic::catch_unwind(|| run(&std::fs::read(&path).unwrap())) {
                eprintln!("the model failed on {}", path.display());
                std::panic::resume_unwind(panic);
            }
        }
    }
}
