//! A deterministic model of the [`Server`], in the spirit of quinn's
//! `Pair`/`drive` tests: a fake clock, fake connections, a fake driver and
//! a reference store, driven by a byte string.
//!
//! # What it runs
//!
//! The input's first byte is the configuration: the store refuses or
//! evicts when full (`--when-full`), holds 3 or 6 entries and 160 or 400
//! budget bytes, and the connections are served either by two loops (two
//! [`Server`]s sharing [`Places`], the [`ClientMemory`] and the store, as
//! `--threads 2` does) or by a server per connection sharing its memory
//! through a small registry (the threaded flavor's [`Elsewhere`]). Every
//! following event takes a few bytes: an accept (onto which loop; a
//! readiness or a completion driver, [`Server::transmit`]/[`Server::advance`]
//! or [`Server::take_transmit`]/[`Server::transmitted`]; released at once
//! or later), whole and pipelined gets, puts and deletes, a request written
//! in parts, a big partial frame, garbage, a peer that stops reading, a
//! peer's close, a socket error, a time jump, the stop, a late release.
//!
//! Every request carries its id in protobuf field 5, which the protocol
//! does not know and the server ignores, and every put a value no other
//! put had. The handler is the real one, wrapped (`Tap`) so that the
//! model sees each request as the store executes it and the answer it
//! gives, and compares that answer with the reference store's.
//!
//! # What it checks
//!
//! After every step, and around every event on a connection:
//!
//! - **Answers.** Each connection's requests execute in the order sent,
//!   each once, none after its connection was evicted or closed, and each
//!   answer is the reference's: a put is stored, or refused `store full`
//!   exactly when the entry count or the byte budget would be passed
//!   (refusing store: docs/protocol.md's rule, counted by the reference);
//!   a get hits with the last value put, or misses; a delete finds the key
//!   or not. The client receives exactly those answers, in order, until
//!   its connection closes (and all of them, when nothing but the client
//!   ended it).
//! - **Evictions from the store.** A refusing store never evicts. An
//!   evicting store never refuses (the model's entries are small), and
//!   only the store says what it evicted, by its count
//!   ([`Store::evictions`]) and its entry count: so after a put that
//!   evicted, every other key present may be gone (the reference allows
//!   the last value put, or a miss, until a get or a delete tells which,
//!   or the entry count says all of them went or none did). A key is
//!   never evicted by its own put, and never comes back with an older
//!   value.
//! - **Client memory.** The total is the sum of every server's charges
//!   once each has published (a server per connection publishes every
//!   change at once). After an event on a connection that is still open,
//!   if all connections together hold more than the cap: a loop has
//!   evicted every holder of its own; a server sharing its memory either
//!   evicted its connection, or asked a bigger one elsewhere to go in
//!   this event, or the connections already asked free enough. Sharing,
//!   once every connection asked to go has acted, the total is within the
//!   cap or nobody not evicted holds anything (a victim whose eviction
//!   freed too little, its answers owed, passes the cap on). An
//!   eviction at the memory cap ends a connection (docs/protocol.md,
//!   "total client memory"): the input not yet taken is dropped
//!   unanswered, and either the error frame follows the answers already
//!   made, or, when the unsent answers stand at the output limit at that
//!   instant, the connection closes at once and those answers are lost
//!   with it. That instant may come while the peer is reading: answering
//!   input held back by back-pressure refills the output to the limit
//!   within the same write event (`fuzz/regressions/server`).
//! - **The victim rule.** The connections an event evicts (or, sharing,
//!   asks to go) held at least as much as every connection left that the
//!   same cap could have taken (the loop's own; every connection, sharing).
//! - **Admission.** No more connections than the limit are served, over
//!   both loops.
//! - **The stop** ends within grace + linger of fake time, and until then
//!   every server with a session open names a deadline no later than that.
//! - **Handles.** No handle's slot is given out while the driver still
//!   holds the descriptor of an earlier connection in it (a completion
//!   driver holds it until its send in flight has completed or been
//!   cancelled), and the server and the driver agree on the handles held.
//! - **Completion sends.** One send in flight per connection: while it is,
//!   nothing more is offered to send.
//! - **Counters.** Once every connection is over, the requests counted
//!   are the requests the store executed.
//!
//! # What it simplifies
//!
//! A completion peer's receive brings at most 96 bytes a completion and is
//! armed or cancelled as the last [`Io`](crate::sansio::server::Io) said,
//! so one chunk may come after the session stopped wanting input (the
//! uring race: bytes the kernel posted before the cancel took effect); a
//! send in flight completes with what the peer's socket takes (at most 256
//! bytes), or waits while it takes nothing, and a slow kernel's completes
//! only when time passes. The registry wakes a connection asked to go
//! before any other event ([`Server::handle_asked`] on every turn). A
//! holding server (over the cap, sharing) is not read from, as
//! [`Server::wants_read`] says. Readiness peers read everything waiting at
//! once and write while their socket has room.
//!
//! [`run`] panics on the first broken rule; with `KVIO_MODEL_TRACE` set it
//! prints every event first, to read a failing input. The unit tests feed
//! it seeded random bytes and every input in `fuzz/corpus/server` and
//! `fuzz/regressions/server` (those are written by `fuzz/seeds.py server`,
//! the input layout's other reader); the `server` fuzz target feeds it
//! libFuzzer's.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kvio_core::frame::{FrameParser, Parse, encode_frame};
use kvio_core::memcache::{self, McError};
use kvio_core::resp::{self, RespError};
use kvio_core::store::{RECORD_HEADER_LEN, Slot};
use kvio_core::{FrameError, Handler, Next, Output, OutputFull, Store, StoreLimits, WhenFull};
use kvio_proto::{KeyValueHandler, KeyValueMessage, Kind, MEMORY_LIMIT_REASON, Status};

use crate::sansio::security::OPEN;
use prost::Message;

use crate::sansio::memory::{self, ClientMemory, Elsewhere, Room, Share};
use crate::sansio::server::{Handle, Limits, Places, Server, Shared};
use crate::sansio::session::{Clock, Framing, OutBuf, Timing};
use crate::sansio::stats::{Close, Counters};
use crate::sansio::wire::Protocol;

/// Connections served at once, over every server.
const MAX_CONNECTIONS: usize = 4;
/// The client-memory cap: two or three big partial frames pass it.
const MEMORY_CAP: usize = 4 * 1024;
/// Unsent answers at which a session stops reading.
const OUTPUT_LIMIT: usize = 1024;
/// Bytes a fake socket holds for a peer that does not read.
const WINDOW: usize = 700;
/// Most bytes one completion of a completion driver's receive brings.
const RECV_CHUNK: usize = 96;
/// Most bytes one send of a completion driver writes.
const SEND_CHUNK: usize = 256;
/// Largest frame accepted.
const MAX_FRAME_LEN: u32 = 4096;
/// Distinct keys.
const KEYS: u8 = 8;
/// Loops of the two-loop configuration.
const LOOPS: usize = 2;
/// Steps at most per run, so a long input cannot run for ever.
const MAX_STEPS: usize = 2000;
const MS: Duration = Duration::from_millis(1);

fn timing() -> Timing {
    Timing {
        idle: Some(1000 * MS),
        frame: None,
        handshake: 2000 * MS,
        grace: 300 * MS,
        linger: 500 * MS,
        linger_bytes: 4096,
        stop_read_budget: 2048,
    }
}

fn limits() -> Limits {
    Limits {
        framing: Framing { max_frame_len: MAX_FRAME_LEN, output_limit: OUTPUT_LIMIT },
        timing: timing(),
        // Nothing the model stores expires.
        clock: Clock::starting(Instant::now(), 0),
        max_connections: MAX_CONNECTIONS,
    }
}

type ModelStore = Store<Box<[Slot]>, Box<[u8]>>;

/// What the input's first byte chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    when_full: WhenFull,
    /// A server per connection, sharing its memory (else two loops).
    threaded: bool,
    entries: usize,
    budget: usize,
}

impl Config {
    fn new(byte: u8) -> Config {
        Config {
            when_full: if byte & 1 == 0 { WhenFull::Refuse } else { WhenFull::Evict },
            threaded: byte & 2 != 0,
            entries: if byte & 4 == 0 { 3 } else { 6 },
            budget: if byte & 8 == 0 { 160 } else { 400 },
        }
    }

    fn store_limits(self) -> StoreLimits {
        StoreLimits::for_frame(MAX_FRAME_LEN, self.entries, self.budget)
    }

    /// The store: its arena is its budget, so a refusing store also takes
    /// the path that compacts a tail packed with live records.
    fn store(self) -> ModelStore {
        let slots = vec![Slot::EMPTY; kvio_core::store::slots_for(self.entries)].into_boxed_slice();
        let store = Store::with_storage(slots, vec![0u8; self.budget].into_boxed_slice(), self.store_limits());
        assert_eq!(store.limits(), self.store_limits(), "the store holds what the reference counts");
        store.when_full(self.when_full)
    }
}

fn key_name(k: u8) -> String {
    format!("key{k}")
}

/// A request as the model writes it: a `KeyValueMessage` with one more
/// field, 5, the request's id, which the server ignores (docs/protocol.md:
/// unknown fields are).
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct Tagged {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
    #[prost(uint32, tag = "3")]
    kind: u32,
    #[prost(uint64, tag = "5")]
    id: u64,
}

/// A request's id: its peer (the model's index) and its place among the peer's requests.
fn request_id(peer: usize, seq: u32) -> u64 {
    ((peer as u64) << 32) | u64::from(seq)
}

fn peer_of(id: u64) -> (usize, u32) {
    ((id >> 32) as usize, id as u32)
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

/// What the reference knows of a key the store may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Stored with this value.
    Present(String),
    /// Stored with this value, or evicted since (an evicting store said it
    /// evicted something, not what).
    Maybe(String),
}

impl Entry {
    fn value(&self) -> &str {
        match self {
            Entry::Present(v) | Entry::Maybe(v) => v,
        }
    }
}

/// What the model knows of one connection's requests.
#[derive(Debug, Default)]
struct Log {
    /// Requests the connection's client has begun to write.
    written: u32,
    /// The next request of the connection to execute.
    next: u32,
    /// Evicted or closed: none of its requests may execute any more.
    finished: bool,
}

/// The reference store, and every request written and answer given.
#[derive(Debug)]
struct Reference {
    config: Config,
    keys: BTreeMap<String, Entry>,
    /// Written (whole or in part), not executed yet.
    requests: HashMap<u64, Tagged>,
    /// Executed, the answer not read by its client yet: what the store answered.
    answers: HashMap<u64, KeyValueMessage>,
    peers: Vec<Log>,
    /// The store's eviction count, as last seen.
    evictions: u64,
    executed: u64,
    /// How often each path the model exists to reach was taken.
    reached: BTreeMap<&'static str, u64>,
}

impl Reference {
    fn new(config: Config) -> Reference {
        Reference {
            config,
            keys: BTreeMap::new(),
            requests: HashMap::new(),
            answers: HashMap::new(),
            peers: Vec::new(),
            evictions: 0,
            executed: 0,
            reached: BTreeMap::new(),
        }
    }

    /// Peer `peer` writes a request of `kind` on key `k`; its id. A put's
    /// value names the request, `pad` bytes longer.
    fn write(&mut self, peer: usize, kind: Kind, k: u8, pad: usize) -> (u64, Vec<u8>) {
        let log = &mut self.peers[peer];
        let (seq, id) = (log.written, request_id(peer, log.written));
        log.written += 1;
        let value = if kind == Kind::PutOrUpdate { format!("{peer}.{seq}.{}", "v".repeat(pad)) } else { String::new() };
        let request = Tagged { key: key_name(k), value, kind: kind.into(), id };
        let mut frame = Vec::new();
        encode_frame(&request.encode_to_vec(), &mut frame).expect("a small frame");
        self.requests.insert(id, request);
        (id, frame)
    }

    fn reach(&mut self, path: &'static str) {
        *self.reached.entry(path).or_default() += 1;
    }

    fn cost(key: &str, value: &str) -> usize {
        RECORD_HEADER_LEN + key.len() + value.len()
    }

    /// The store executed `payload` and answered `answer`; it now counts
    /// `evictions` evictions and holds `len` entries. Panics unless that
    /// is what the reference allows; then follows it.
    fn executed(&mut self, payload: &[u8], answer: &KeyValueMessage, evictions: u64, len: usize) {
        let req = Tagged::decode(payload).expect("the model's requests decode");
        let sent = self.requests.remove(&req.id);
        let sent = sent.unwrap_or_else(|| panic!("executed a request not written, or twice: {req:?}"));
        assert_eq!(sent, req, "executed another request than the one written");
        let (peer, seq) = peer_of(req.id);
        let log = &mut self.peers[peer];
        assert!(!log.finished, "executed a request of connection {peer}, evicted or closed: {req:?}");
        assert_eq!(seq, log.next, "connection {peer}'s requests executed out of order: {req:?}");
        log.next += 1;
        self.executed += 1;
        let key = req.key.as_str();
        let kind = Kind::from(req.kind);
        let answered = |value: &str, status: Status| KeyValueMessage {
            key: if kind == Kind::Get { key.to_owned() } else { String::new() },
            value: value.to_owned(),
            kind: if kind == Kind::Get { Kind::GetResponse.into() } else { req.kind },
            status: status.into(),
        };
        let hit = answer.status == i32::from(Status::Ok);
        let expected = match kind {
            Kind::Get => match self.keys.get(key) {
                Some(Entry::Present(value)) => answered(value, Status::Ok),
                Some(Entry::Maybe(value)) if hit => {
                    let value = value.clone();
                    self.reach("maybe evicted: still there");
                    self.keys.insert(key.to_owned(), Entry::Present(value.clone()));
                    answered(&value, Status::Ok)
                }
                Some(Entry::Maybe(_)) => {
                    self.keys.remove(key);
                    self.reach("maybe evicted: gone");
                    answered("", Status::NotOk)
                }
                None => answered("", Status::NotOk),
            },
            Kind::PutOrUpdate => {
                let refused = match self.config.when_full {
                    WhenFull::Evict => false,
                    _ => {
                        // docs/protocol.md: a new key past the entry count, or any put
                        // past the byte budget (the old entry's bytes given back first).
                        let limits = self.config.store_limits();
                        let used: usize = self.keys.iter().map(|(k, e)| Self::cost(k, e.value())).sum();
                        let old = self.keys.get(key).map_or(0, |e| Self::cost(key, e.value()));
                        let new = !self.keys.contains_key(key) && self.keys.len() >= limits.max_entries;
                        new || used - old + Self::cost(key, &req.value) > limits.byte_budget
                    }
                };
                if refused {
                    answered("store full", Status::NotOk)
                } else {
                    self.keys.insert(key.to_owned(), Entry::Present(req.value.clone()));
                    answered("", Status::Ok)
                }
            }
            Kind::Delete => match self.keys.remove(key) {
                Some(Entry::Present(_)) => answered("", Status::Ok),
                Some(Entry::Maybe(_)) => answered("", if hit { Status::Ok } else { Status::NotOk }),
                None => answered("", Status::NotOk),
            },
            other => panic!("the model wrote a request of kind {other:?}"),
        };
        assert_eq!(answer, &expected, "the store's answer to {req:?} is not the reference's ({:?})", self.keys);
        self.reach(match (kind, hit) {
            (Kind::Get, true) => "get hit",
            (Kind::Get, false) => "get miss",
            (Kind::PutOrUpdate, true) => "put stored",
            (Kind::PutOrUpdate, false) => "put refused: store full",
            (_, true) => "delete found",
            (_, false) => "delete absent",
        });
        let evicted = evictions - self.evictions;
        self.evictions = evictions;
        if evicted > 0 {
            assert!(
                self.config.when_full == WhenFull::Evict && kind == Kind::PutOrUpdate && hit,
                "{evicted} evictions by {req:?}, answered {answer:?}, with --when-full {:?}",
                self.config.when_full
            );
            let others = self.keys.len() - 1;
            assert!(evicted as usize <= others, "{evicted} evictions, {others} other keys stored at most");
            for (_, entry) in self.keys.iter_mut().filter(|(k, _)| k.as_str() != key) {
                *entry = Entry::Maybe(entry.value().to_owned());
            }
            self.reach("store evicted");
        }
        // The entry count settles what it can: all the maybes present, or none.
        let present = self.keys.values().filter(|e| matches!(e, Entry::Present(_))).count();
        let maybe = self.keys.len() - present;
        assert!(
            (present..=present + maybe).contains(&len),
            "the store holds {len} entries; the reference {present}, and {maybe} maybe: {:?}",
            self.keys
        );
        if maybe > 0 && len == present {
            self.keys.retain(|_, e| matches!(e, Entry::Present(_)));
            self.reach("maybe evicted: counted gone");
        } else if maybe > 0 && len == present + maybe {
            self.reach("maybe evicted: counted there");
            for entry in self.keys.values_mut() {
                *entry = Entry::Present(entry.value().to_owned());
            }
        }
        self.answers.insert(req.id, answer.clone());
    }
}

/// The real handler over the one store, wrapped so that the reference
/// sees every request as it executes, and the answer the store gave.
#[derive(Debug)]
struct Tap<'a> {
    store: &'a RefCell<ModelStore>,
    reference: &'a RefCell<Reference>,
    /// Where the real handler writes an answer before it goes to the session's output.
    answer: Vec<u8>,
}

impl Tap<'_> {
    fn with<R>(&mut self, f: impl FnOnce(&mut KeyValueHandler<&mut ModelStore>) -> R) -> R {
        f(&mut KeyValueHandler::new(&mut *self.store.borrow_mut()))
    }
}

impl Handler for Tap<'_> {
    fn request<O: Output + ?Sized>(&mut self, payload: &[u8], now: u64, out: &mut O) -> Result<Next, OutputFull> {
        let mut answer = std::mem::take(&mut self.answer);
        answer.clear();
        self.with(|handler| handler.request(payload, now, &mut answer)).expect("a Vec has room");
        let (evictions, len) = {
            let store = self.store.borrow();
            (store.evictions(), store.len())
        };
        let msg = KeyValueMessage::decode(&answer[4..answer.len() - 5]).expect("the handler encodes well");
        self.reference.borrow_mut().executed(payload, &msg, evictions, len);
        out.append(answer.len())?.copy_from_slice(&answer);
        self.answer = answer;
        Ok(Next::Continue)
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: FrameError, out: &mut O) -> Result<(), OutputFull> {
        self.with(|handler| handler.parse_error(error, out))
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        self.with(|handler| Handler::evicted(handler, out))
    }
}

/// The model's peers speak kvio frames only: its sessions never hand the
/// tap a RESP or memcached request (the protocols' own tests and fuzz
/// targets hold those to their rules).
impl Handler<resp::RequestParser> for Tap<'_> {
    fn request<O: Output + ?Sized>(&mut self, _: resp::Command<'_>, _: u64, _: &mut O) -> Result<Next, OutputFull> {
        unreachable!("the model speaks kvio frames only")
    }

    fn parse_error<O: Output + ?Sized>(&mut self, _: RespError, _: &mut O) -> Result<(), OutputFull> {
        unreachable!("the model speaks kvio frames only")
    }
}

impl Handler<memcache::RequestParser> for Tap<'_> {
    fn request<O: Output + ?Sized>(&mut self, _: memcache::Request<'_>, _: u64, _: &mut O) -> Result<Next, OutputFull> {
        unreachable!("the model speaks kvio frames only")
    }

    fn parse_error<O: Output + ?Sized>(&mut self, _: McError, _: &mut O) -> Result<(), OutputFull> {
        unreachable!("the model speaks kvio frames only")
    }
}

/// The threaded flavor's registry at its smallest: every connection's
/// charge, from which the cap picks a victim across servers with the one
/// rule ([`memory::make_room`]). Its waking is the model's: every turn
/// calls [`Server::handle_asked`].
#[derive(Debug, Default)]
struct Registry {
    live: Mutex<Vec<(usize, Arc<Share>)>>,
}

impl Registry {
    fn live(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Arc<Share>)>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Elsewhere for Registry {
    fn make_room(&self, memory: &ClientMemory, mine: usize) -> bool {
        let live = self.live();
        let room = memory::make_room(memory, mine, live.iter().map(|(peer, share)| (*peer, &**share)));
        !matches!(room, Room::EvictMine)
    }
}

/// A completion driver's multishot receive, as the uring driver keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// Not in the kernel.
    Idle,
    /// In the kernel, posting what arrives.
    Armed,
    /// Cancelled: a chunk posted before the cancel took effect may still
    /// come, then the cancel's completion.
    Cancelling,
}

/// One fake connection: the client, and the driver's side of its socket.
#[derive(Debug)]
struct Peer {
    /// Which server serves it.
    server: usize,
    handle: Handle,
    /// The driver sends with `take_transmit`/`transmitted` (uring's way).
    completion: bool,
    /// Its charge, when the registry shares it (threaded).
    share: Option<Arc<Share>>,
    /// The driver holds its descriptor (not yet released).
    held: bool,
    /// The server closed it.
    closed: bool,
    /// Its release waits for a later step (a completion driver waiting
    /// for operations in the kernel).
    late_release: bool,
    /// A completion driver's send in flight.
    sending: Option<OutBuf>,
    /// That send was cancelled (the session closed): it completes with nothing written.
    cancelled: bool,
    /// A completion driver's receive.
    recv: Recv,
    /// A completion driver's sends complete only when time passes.
    slow: bool,
    /// Written by the client, not yet read by the driver.
    outbox: Vec<u8>,
    /// The rest of a request written in part, and the request.
    rest: Vec<u8>,
    partial: Option<u64>,
    /// Requests written whole, not yet answered.
    sent: VecDeque<u64>,
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
    fn new(server: usize, handle: Handle, completion: bool, late_release: bool, share: Option<Arc<Share>>) -> Peer {
        Peer {
            server,
            handle,
            completion,
            share,
            held: true,
            closed: false,
            late_release,
            sending: None,
            cancelled: false,
            recv: Recv::Idle,
            slow: false,
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

    /// Whether the client may write a whole request now.
    fn writable(&self) -> bool {
        !self.shut && !self.broken && self.rest.is_empty()
    }

    /// The client reads everything the server sent, and checks each answer
    /// against the one the store gave its request, in order.
    fn read_inbox(&mut self, reference: &RefCell<Reference>) {
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
            let id = self.sent.pop_front().unwrap_or_else(|| panic!("an answer to no request: {msg:?}"));
            let answer = reference.borrow_mut().answers.remove(&id);
            let answer = answer.unwrap_or_else(|| panic!("an answer to request {id:#x}, not executed: {msg:?}"));
            assert_eq!(msg, answer, "request {id:#x}: the client got another answer than the store gave");
        }
    }
}

/// A connection's charge as the model sees it around an event.
#[derive(Debug, Clone, Copy)]
struct Charge {
    server: usize,
    handle: Handle,
    held: usize,
    evicted: bool,
    /// Asked to go by another server (threaded).
    asked: bool,
}

impl Charge {
    fn leaving(&self) -> bool {
        self.evicted || self.asked
    }
}

/// The model: the servers, their clients, a fake driver and a fake clock.
struct Model<'a> {
    config: Config,
    /// Two loops, or a server per connection (`None` once released).
    servers: Vec<Option<Server<'a, Tap<'a>>>>,
    places: &'a Places,
    counters: &'a [Counters; LOOPS],
    memory: &'a ClientMemory,
    registry: &'a Registry,
    store: &'a RefCell<ModelStore>,
    reference: &'a RefCell<Reference>,
    peers: Vec<Peer>,
    /// Peers still of interest: held by the driver, or not checked yet.
    live: Vec<usize>,
    /// Print every event (`KVIO_MODEL_TRACE` set), to read a failing input.
    trace: bool,
    t0: Instant,
    /// Time passes: a slow kernel completes its sends.
    kernel_turn: bool,
    now: Instant,
    stopped_at: Option<Instant>,
}

impl<'a> Model<'a> {
    fn server(&mut self, s: usize) -> &mut Server<'a, Tap<'a>> {
        self.servers[s].as_mut().expect("a server still serving")
    }

    fn reach(&self, path: &'static str) {
        self.reference.borrow_mut().reach(path);
    }

    fn tap(&self) -> Tap<'a> {
        Tap { store: self.store, reference: self.reference, answer: Vec::new() }
    }

    /// A live peer the server has not closed, picked by `pick`.
    fn pick(&self, pick: u8) -> Option<usize> {
        let open: Vec<usize> = self.live.iter().copied().filter(|&i| !self.peers[i].closed).collect();
        open.get(usize::from(pick) % open.len().max(1)).copied()
    }

    fn find(&self, server: usize, handle: Handle) -> Option<usize> {
        self.live.iter().copied().find(|&i| {
            let p = &self.peers[i];
            p.held && p.server == server && p.handle == handle
        })
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let op = input.u8();
        let pick = input.u8();
        if self.trace {
            eprintln!("{:?} step: op {} pick {pick}", self.now - self.t0, op % 16);
        }
        // Accepts and big frames twice as likely as the rest, requests four times.
        match op % 16 {
            0 | 11 => self.accept(pick),
            1 | 12 | 14 | 15 => {
                // The peer from the pick's low bits, how many requests from its top two.
                let n = pick / 64 + 1;
                let k = input.u8();
                let kinds: Vec<u8> = (0..n).map(|_| input.u8()).collect();
                if let Some(i) = self.pick(pick).filter(|&i| self.peers[i].writable()) {
                    for (j, &b) in kinds.iter().enumerate() {
                        let (id, frame) = self.write(i, b, k.wrapping_add(j as u8));
                        self.peers[i].outbox.extend(frame);
                        self.peers[i].sent.push_back(id);
                    }
                }
            }
            2 => {
                let (b, k, split) = (input.u8(), input.u8(), input.u8());
                if let Some(i) = self.pick(pick).filter(|&i| !self.peers[i].shut && !self.peers[i].broken) {
                    if self.peers[i].rest.is_empty() {
                        let (id, frame) = self.write(i, b, k);
                        self.peers[i].rest = frame;
                        self.peers[i].partial = Some(id);
                    }
                    let peer = &mut self.peers[i];
                    // `split` bytes more of it; 0: the rest.
                    let n = if split == 0 { peer.rest.len() } else { usize::from(split).min(peer.rest.len()) };
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
                if let Some(i) = self.pick(pick).filter(|&i| self.peers[i].writable()) {
                    let peer = &mut self.peers[i];
                    peer.broken = true;
                    // The frame's `len` counts the payload and the 5-byte footer.
                    peer.outbox.extend((len as u32 + 5).to_le_bytes());
                    peer.outbox.extend(std::iter::repeat_n(7u8, len - 200));
                }
            }
            4 => {
                if let Some(i) = self.pick(pick) {
                    self.peers[i].reads = !self.peers[i].reads;
                }
            }
            5 => {
                if let Some(i) = self.pick(pick) {
                    self.peers[i].shut = true;
                }
            }
            6 => {
                // Mostly short steps; one in eight long enough for idle timeouts and the stop's bounds.
                let ms = input.u16();
                let ms = if pick.is_multiple_of(8) { ms % 1500 } else { ms % 150 };
                self.pass(Duration::from_millis(u64::from(ms)));
            }
            // The stop ends everything: only one in eight of these, so that most runs go on a while.
            7 if pick < 32 => self.stop(),
            7 => {}
            8 => {
                if let Some(i) = self.pick(pick) {
                    self.peers[i].excused = true;
                    let (s, handle) = (self.peers[i].server, self.peers[i].handle);
                    self.event(s, handle, ("socket error", 0), |server| {
                        server.socket_error(handle, std::io::ErrorKind::ConnectionReset.into())
                    });
                    self.apply(s);
                }
            }
            9 => {
                if let Some(i) = self.pick(pick).filter(|&i| self.peers[i].writable()) {
                    let peer = &mut self.peers[i];
                    peer.broken = true;
                    peer.garbage = true;
                    peer.outbox.extend([0, 0, 0, 0]);
                }
            }
            _ => {
                for i in self.live.clone() {
                    let peer = &mut self.peers[i];
                    if peer.late_release {
                        peer.late_release = false;
                        self.release_if_done(i);
                    }
                }
            }
        }
        self.drive();
        self.check();
    }

    /// Peer `i` writes a request: its kind and a put's padding from `b`.
    fn write(&mut self, i: usize, b: u8, k: u8) -> (u64, Vec<u8>) {
        let kind = match b % 8 {
            0..=2 => Kind::Get,
            3..=5 => Kind::PutOrUpdate,
            _ => Kind::Delete,
        };
        self.reference.borrow_mut().write(i, kind, k % KEYS, usize::from(b / 8) * 3)
    }

    /// A connection arrives: on loop `pick & 1`'s server or a server of its
    /// own; a completion driver's if `pick & 2` (its kernel slow if `pick &
    /// 8`); released late if `pick & 4`.
    fn accept(&mut self, pick: u8) {
        // Threaded servers are served by the blocking driver, a readiness one that releases at once.
        let (completion, late_release) =
            (pick & 2 != 0 && !self.config.threaded, pick & 4 != 0 && !self.config.threaded);
        let slow = completion && pick & 8 != 0;
        let i = self.peers.len();
        let (s, handle, share) = if self.config.threaded {
            if self.stopped_at.is_some() {
                // The accepting thread is gone.
                return;
            }
            let shared =
                Shared { places: self.places, memory: self.memory, counters: &self.counters[0], security: &OPEN };
            let mut server = Server::new(limits(), shared, self.tap());
            server.share_memory_with(self.registry);
            let share = Arc::new(Share::default());
            let Ok(handle) = server.accept_with(None, self.now, Protocol::Kvio, Arc::clone(&share)) else { return };
            self.registry.live().push((i, Arc::clone(&share)));
            self.servers.push(Some(server));
            (self.servers.len() - 1, handle, Some(share))
        } else {
            let s = usize::from(pick & 1);
            let now = self.now;
            let Ok(handle) = self.server(s).accept(None, now, Protocol::Kvio) else { return };
            (s, handle, None)
        };
        let reused = self.live.iter().any(|&j| {
            let p = &self.peers[j];
            p.held && p.server == s && p.handle.index() == handle.index()
        });
        assert!(!reused, "handle {handle:?} given out while the driver holds a descriptor in its slot");
        self.reach(match (self.config.threaded, s, completion) {
            (true, ..) => "connection: threaded",
            (false, 0, false) => "connection: loop 0, readiness",
            (false, 0, true) => "connection: loop 0, completion",
            (false, _, false) => "connection: loop 1, readiness",
            (false, _, true) => "connection: loop 1, completion",
        });
        self.peers.push(Peer::new(s, handle, completion, late_release, share));
        self.peers[i].slow = slow;
        self.reference.borrow_mut().peers.push(Log::default());
        self.live.push(i);
        self.apply(s);
    }

    fn stop(&mut self) {
        if self.stopped_at.is_some() {
            return;
        }
        self.stopped_at = Some(self.now);
        for s in 0..self.servers.len() {
            let Some(server) = self.servers[s].as_mut() else { continue };
            let peers = &self.peers;
            let live = &self.live;
            let waiting = |h: Handle| {
                live.iter().any(|&i| {
                    peers[i].held && peers[i].server == s && peers[i].handle == h && !peers[i].outbox.is_empty()
                })
            };
            server.begin_stop(self.now, waiting);
            self.apply(s);
        }
    }

    /// Time passes by `d`; the driver wakes at every deadline a server names on the way.
    fn pass(&mut self, d: Duration) {
        for &i in &self.live {
            if !self.peers[i].reads {
                self.peers[i].excused = true;
            }
        }
        self.kernel_turn = true;
        self.drive();
        self.kernel_turn = false;
        let target = self.now + d;
        loop {
            let next = self.servers.iter().flatten().filter_map(|s| s.poll_timeout()).min();
            let Some(at) = next.filter(|&at| at <= target) else { break };
            self.now = self.now.max(at);
            self.timeouts();
            self.drive();
            self.check();
        }
        self.now = target;
        self.timeouts();
    }

    fn timeouts(&mut self) {
        let now = self.now;
        for s in 0..self.servers.len() {
            if let Some(server) = self.servers[s].as_mut() {
                server.handle_timeout(now);
                self.apply(s);
            }
        }
    }

    /// The fake driver: every server takes turns until nothing moves.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for s in 0..self.servers.len() {
                moved |= self.turn(s);
            }
            if !moved {
                return;
            }
        }
        panic!("the servers and their peers never come to rest");
    }

    /// One server's turn: a woken connection acts on its eviction, every
    /// byte of its peers that can move moves, then it says what follows
    /// (which also publishes its memory charges).
    fn turn(&mut self, s: usize) -> bool {
        let Some(server) = self.servers[s].as_mut() else { return false };
        if self.config.threaded {
            if server.is_holding() {
                self.reference.borrow_mut().reach("threaded: a server holds off its reads");
            }
            let server = self.servers[s].as_mut().expect("serving");
            server.handle_asked();
            for c in self.charges().into_iter().filter(|c| c.evicted) {
                self.finished(c.server, c.handle);
            }
        }
        let mut moved = false;
        let peers: Vec<usize> = self.live.iter().copied().filter(|&i| self.peers[i].server == s).collect();
        for i in peers {
            moved |= self.pump(i);
        }
        moved | self.apply(s)
    }

    /// Does what server `s` says for every handle it names.
    fn apply(&mut self, s: usize) -> bool {
        let mut moved = false;
        while let Some(io) = self.servers[s].as_mut().and_then(|server| server.poll_io()) {
            moved = true;
            if self.trace {
                eprintln!("{:?} server {s} says {io:?}", self.now - self.t0);
            }
            let Some(i) = self.find(s, io.handle) else {
                panic!("server {s} names {:?}, which the driver does not hold", io.handle);
            };
            if io.close {
                if !self.peers[i].closed {
                    let ended = self.server(s).ended(io.handle);
                    let peer = &mut self.peers[i];
                    peer.closed = true;
                    peer.ended = ended;
                    // What is in the kernel is cancelled; the completions still come.
                    peer.cancelled = peer.sending.is_some();
                    if peer.recv == Recv::Armed {
                        peer.recv = Recv::Cancelling;
                    }
                    let mut reference = self.reference.borrow_mut();
                    reference.peers[i].finished = true;
                    if ended == Some(Close::MemoryEviction) {
                        reference.reach(if self.config.threaded {
                            "cap: evicted (threaded)"
                        } else {
                            "cap: evicted (loops)"
                        });
                    }
                }
                self.release_if_done(i);
            } else if self.peers[i].completion {
                let peer = &mut self.peers[i];
                peer.recv = match (io.read, peer.recv) {
                    (true, Recv::Idle) => Recv::Armed,
                    (false, Recv::Armed) => Recv::Cancelling,
                    (_, recv) => recv,
                };
            }
        }
        moved
    }

    /// Lets peer `i`'s descriptor go once the server closed it, nothing of
    /// it is in flight and its release is not held for later.
    fn release_if_done(&mut self, i: usize) {
        let peer = &self.peers[i];
        if !peer.held || !peer.closed || peer.sending.is_some() || peer.recv != Recv::Idle || peer.late_release {
            return;
        }
        let (s, handle) = (peer.server, peer.handle);
        self.peers[i].held = false;
        self.server(s).release(handle);
        if self.config.threaded {
            // The connection's thread ends: unregistered, its server gone.
            self.registry.live().retain(|(peer, _)| *peer != i);
            assert!(self.server(s).is_empty(), "a released server holds nothing");
            self.servers[s] = None;
        }
    }

    /// Marks the connection of `handle` on `s` as done executing requests.
    fn finished(&mut self, s: usize, handle: Handle) {
        if let Some(i) = self.find(s, handle) {
            self.reference.borrow_mut().peers[i].finished = true;
        }
    }

    /// One peer's bytes: the server's output into the socket, the client's into the server.
    fn pump(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut moved = false;
        if self.peers[i].reads && !self.peers[i].inbox.is_empty() {
            self.peers[i].read_inbox(self.reference);
            moved = true;
        }
        if self.peers[i].completion {
            moved |= self.complete(i);
        }
        let peer = &self.peers[i];
        if peer.closed {
            if !peer.checked && peer.inbox.is_empty() {
                let evicted = peer.ended == Some(Close::MemoryEviction);
                let clean = !peer.excused && !peer.error_frame && !evicted && self.stopped_at.is_none();
                if clean && peer.shut && peer.outbox.is_empty() {
                    assert!(peer.sent.is_empty(), "closed with {} requests unanswered: {peer:?}", peer.sent.len());
                }
                self.peers[i].checked = true;
            }
            return moved;
        }
        if peer.completion {
            return moved;
        }
        let (s, handle) = (peer.server, peer.handle);
        while self.server(s).wants_write(handle) && self.peers[i].inbox.len() < WINDOW {
            let room = WINDOW - self.peers[i].inbox.len();
            let out = self.servers[s].as_ref().expect("serving").transmit(handle);
            let n = out.len().min(room);
            self.peers[i].inbox.extend_from_slice(&out[..n]);
            self.event(s, handle, ("advance", n), |server| server.advance(handle, n, now));
            moved = true;
        }
        self.server(s).take_shut_write(handle);
        if self.server(s).wants_read(handle) {
            moved |= self.deliver(i, usize::MAX);
        }
        moved
    }

    /// The client's bytes into the server (at most `chunk` of them), or its end of stream.
    fn deliver(&mut self, i: usize, chunk: usize) -> bool {
        let (s, handle, now) = (self.peers[i].server, self.peers[i].handle, self.now);
        let peer = &mut self.peers[i];
        if !peer.outbox.is_empty() {
            let n = peer.outbox.len().min(chunk);
            let input: Vec<u8> = peer.outbox.drain(..n).collect();
            self.event(s, handle, ("received", input.len()), |server| server.received(handle, &input, now));
        } else if peer.shut && !peer.eof_delivered {
            peer.eof_delivered = true;
            self.event(s, handle, ("peer closed", 0), |server| server.peer_closed(handle, now));
        } else {
            return false;
        }
        true
    }

    /// A completion driver's peer: what its receive brings in (maybe
    /// after the session stopped wanting input: posted before the cancel),
    /// the completion of its send in flight (a slow kernel's only when
    /// time passes, or when cancelled), the next send.
    fn complete(&mut self, i: usize) -> bool {
        let now = self.now;
        let (s, handle) = (self.peers[i].server, self.peers[i].handle);
        let mut moved = false;
        let recv = self.peers[i].recv;
        if recv != Recv::Idle {
            let late = !self.server(s).wants_read(handle) && !self.peers[i].outbox.is_empty();
            let delivered = self.deliver(i, RECV_CHUNK);
            if delivered && late {
                self.reach("completion: input after the session stopped wanting it");
            }
            if recv == Recv::Cancelling {
                self.peers[i].recv = Recv::Idle;
                self.release_if_done(i);
            }
            if delivered || recv == Recv::Cancelling {
                // The completion changed what is in the kernel, maybe not the session.
                self.server(s).touch(handle);
                moved = true;
            }
        }
        let kernel_turn = self.kernel_turn;
        let peer = &mut self.peers[i];
        if let Some(buf) = peer.sending.take() {
            let room = WINDOW.saturating_sub(peer.inbox.len()).min(SEND_CHUNK);
            if peer.cancelled || (room > 0 && (!peer.slow || kernel_turn)) {
                let n = if peer.cancelled { 0 } else { buf.unsent().len().min(room) };
                let path = match n {
                    0 => "completion: send cancelled",
                    n if n < buf.unsent().len() => "completion: send in part",
                    _ => "completion: send whole",
                };
                peer.inbox.extend_from_slice(&buf.unsent()[..n]);
                peer.cancelled = false;
                self.event(s, handle, ("transmitted", n), |server| {
                    server.transmitted(handle, buf, n, now);
                    server.touch(handle);
                });
                self.release_if_done(i);
                self.reach(path);
                moved = true;
            } else {
                // The socket takes nothing, or the kernel is slow: the send waits.
                peer.sending = Some(buf);
                assert!(!self.server(s).wants_write(handle), "more to send offered while a send is in flight");
            }
        }
        if !self.peers[i].closed
            && self.peers[i].sending.is_none()
            && let Some(buf) = self.server(s).take_transmit(handle)
        {
            assert!(!buf.is_empty(), "an empty send taken");
            assert!(self.server(s).take_transmit(handle).is_none(), "a second send taken while one is in flight");
            if self.trace {
                eprintln!("{:?} server {s} {handle:?}: take_transmit {}", self.now - self.t0, buf.unsent().len());
            }
            self.peers[i].sending = Some(buf);
            moved = true;
        }
        moved
    }

    /// Every open session's charge, over every server.
    fn charges(&self) -> Vec<Charge> {
        let mut all = Vec::new();
        for (s, server) in self.servers.iter().enumerate() {
            let Some(server) = server else { continue };
            for (handle, held, evicted) in server.charges() {
                let share = self.find(s, handle).and_then(|i| self.peers[i].share.as_ref());
                let asked = share.is_some_and(|share| share.is_evicting());
                all.push(Charge { server: s, handle, held, evicted, asked });
            }
        }
        all
    }

    /// Calls `event`, an event on `handle` of server `s` that may change
    /// its charge and so evict, and checks the cap's rules after it: the
    /// victim rule (every connection it evicted or asked to go, but
    /// `handle`, whose charge during the call is unseen, held before at
    /// least as much as every other the same cap could take and left),
    /// and what must hold over the cap (see the [module docs](self)).
    fn event(&mut self, s: usize, handle: Handle, what: (&str, usize), event: impl FnOnce(&mut Server<'a, Tap<'a>>)) {
        let before = self.charges();
        event(self.server(s));
        let after = self.charges();
        if self.trace {
            eprintln!("{:?} server {s} {handle:?}: {} {}; charges {after:?}", self.now - self.t0, what.0, what.1);
        }
        let scope = |c: &&Charge| (self.config.threaded || c.server == s) && (c.server, c.handle) != (s, handle);
        let after_of = |c: &Charge| after.iter().find(|a| (a.server, a.handle) == (c.server, c.handle)).copied();
        let (mut victims, mut spared) = (Vec::new(), Vec::new());
        for c in before.iter().filter(scope).filter(|c| !c.leaving()) {
            match after_of(c) {
                Some(a) if a.leaving() => victims.push(c.held),
                Some(_) => spared.push(c.held),
                None => {}
            }
        }
        if !victims.is_empty() {
            self.reach(if self.config.threaded { "cap: asked to go elsewhere" } else { "cap: evicted another" });
        }
        if let (Some(least), Some(most)) = (victims.iter().min(), spared.iter().max()) {
            assert!(least >= most, "evicted a connection holding {least} bytes, spared one holding {most}");
        }
        for c in after.iter().filter(|c| c.evicted) {
            self.finished(c.server, c.handle);
        }
        let total: usize = after.iter().map(|c| c.held).sum();
        let Some(mine) = after.iter().find(|c| (c.server, c.handle) == (s, handle)) else { return };
        if self.config.threaded {
            assert_eq!(self.memory.total(), total, "a server per connection publishes every change at once");
        }
        if total <= MEMORY_CAP {
            return;
        }
        if self.config.threaded {
            let asked: usize = after.iter().filter(|c| c.asked).map(|c| c.held).sum();
            assert!(
                mine.evicted || mine.held == 0 || !victims.is_empty() || total - asked <= MEMORY_CAP,
                "{total} bytes held, over the cap of {MEMORY_CAP}: connection {handle:?} holds {} and nobody was \
                 asked to go ({asked} bytes leaving): {after:?}",
                mine.held
            );
        } else {
            let unevicted = after.iter().filter(|c| c.server == s && c.held > 0 && !c.evicted).count();
            assert!(
                unevicted == 0,
                "{total} bytes held, over the cap of {MEMORY_CAP}, and {unevicted} holders of loop {s} not evicted"
            );
        }
    }

    fn check(&mut self) {
        let charges = self.charges();
        let total: usize = charges.iter().map(|c| c.held).sum();
        assert_eq!(self.memory.total(), total, "the total is the sum of the charges");
        if self.config.threaded {
            // At rest every connection asked to go has acted: over the cap, nobody else holds anything.
            let holders: Vec<&Charge> = charges.iter().filter(|c| c.held > 0 && !c.evicted).collect();
            assert!(
                total <= MEMORY_CAP || holders.is_empty(),
                "{total} bytes held at rest, over the cap of {MEMORY_CAP}, by connections not evicted: {holders:?}"
            );
        }
        assert!(self.places.taken() <= MAX_CONNECTIONS, "{} connections served", self.places.taken());
        let held = self.live.iter().filter(|&&i| self.peers[i].held).count();
        assert!(held <= MAX_CONNECTIONS, "the driver holds {held} connections");
        assert_eq!(self.places.taken(), held, "the places taken are the connections the driver holds");
        for (s, server) in self.servers.iter().enumerate() {
            let Some(server) = server else { continue };
            let held = self.live.iter().filter(|&&i| self.peers[i].held && self.peers[i].server == s).count();
            assert_eq!(server.len(), held, "server {s} and the driver agree on the handles held");
        }
        if let Some(at) = self.stopped_at {
            let bound = at + timing().grace + timing().linger;
            for server in self.servers.iter().flatten() {
                let open = server.open_sessions();
                if self.now >= bound {
                    assert_eq!(open, 0, "{open} sessions open {:?} after the stop", self.now - at);
                } else if open > 0 {
                    let next = server.poll_timeout();
                    assert!(next.is_some_and(|next| next <= bound), "stopping, next deadline {next:?} past {bound:?}");
                }
            }
        }
        let peers = &self.peers;
        self.live.retain(|&i| peers[i].held || !peers[i].checked);
    }

    /// The end of every run: the stop, enough time for it to end, and the count.
    fn finish(&mut self) {
        // A client whose connection is over reads what it was sent (and is checked).
        for &i in &self.live {
            if self.peers[i].closed {
                self.peers[i].reads = true;
            }
        }
        self.drive();
        self.stop();
        self.drive();
        self.check();
        self.pass(timing().grace + timing().linger + MS);
        self.drive();
        // Late releases are done by now: nothing is left in flight.
        for i in self.live.clone() {
            self.peers[i].late_release = false;
            self.release_if_done(i);
        }
        self.drive();
        self.check();
        assert!(self.live.iter().all(|&i| !self.peers[i].held), "every connection released");
        let counted: u64 = self.counters.iter().map(|c| c.snapshot().requests).sum();
        let executed = self.reference.borrow().executed;
        assert_eq!(counted, executed, "the requests counted are the requests the store executed");
    }
}

/// Runs the model on `data` (see the [module docs](self)); panics on a broken rule.
pub fn run(data: &[u8]) {
    run_counting(data);
}

/// [`run`], saying how often it took each path.
fn run_counting(data: &[u8]) -> BTreeMap<&'static str, u64> {
    let mut input = Input(data);
    let config = Config::new(input.u8());
    let places = Places::default();
    let counters = [Counters::default(), Counters::default()];
    let memory = ClientMemory::new(MEMORY_CAP);
    let registry = Registry::default();
    let store = RefCell::new(config.store());
    let reference = RefCell::new(Reference::new(config));
    let t0 = Instant::now();
    let mut model = Model {
        config,
        servers: Vec::new(),
        places: &places,
        counters: &counters,
        memory: &memory,
        registry: &registry,
        store: &store,
        reference: &reference,
        peers: Vec::new(),
        live: Vec::new(),
        trace: std::env::var_os("KVIO_MODEL_TRACE").is_some(),
        t0,
        kernel_turn: false,
        now: t0,
        stopped_at: None,
    };
    if !config.threaded {
        for counters in &counters {
            let shared = Shared { places: &places, memory: &memory, counters, security: &OPEN };
            let tap = model.tap();
            model.servers.push(Some(Server::new(limits(), shared, tap)));
        }
    }
    for _ in 0..MAX_STEPS {
        if input.0.is_empty() {
            break;
        }
        model.step(&mut input);
    }
    model.finish();
    drop(model);
    reference.into_inner().reached
}

#[cfg(test)]
mod test {
    use super::*;

    /// xorshift64*: seeded, so a failure names the seed that reproduces it.
    pub(super) fn bytes(seed: u64, len: usize) -> Vec<u8> {
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

    /// The paths the model exists to reach: seeded runs must reach each.
    const PATHS: [&str; 23] = [
        "get hit",
        "get miss",
        "put stored",
        "put refused: store full",
        "delete found",
        "delete absent",
        "store evicted",
        "maybe evicted: still there",
        "maybe evicted: gone",
        "maybe evicted: counted gone",
        "maybe evicted: counted there",
        "connection: loop 0, readiness",
        "connection: loop 0, completion",
        "connection: loop 1, readiness",
        "connection: loop 1, completion",
        "connection: threaded",
        "completion: input after the session stopped wanting it",
        "completion: send cancelled",
        "completion: send in part",
        "completion: send whole",
        "cap: evicted (loops)",
        "cap: evicted (threaded)",
        "cap: asked to go elsewhere",
    ];

    #[test]
    fn random_interleavings_keep_every_rule_and_reach_every_path() {
        let mut reached = BTreeMap::new();
        for seed in 0..400 {
            let data = bytes(seed, 600);
            match std::panic::catch_unwind(|| run_counting(&data)) {
                Ok(paths) => paths.into_iter().for_each(|(path, n)| *reached.entry(path).or_insert(0) += n),
                Err(panic) => {
                    eprintln!("model failed with seed {seed}");
                    std::panic::resume_unwind(panic);
                }
            }
        }
        for path in PATHS {
            assert!(reached.contains_key(path), "no seeded run reached {path:?}: {reached:#?}");
        }
        eprintln!("{reached:#?}");
    }

    /// What each seed (`fuzz/seeds.py`) is written to reach.
    const SEEDS: [(&str, &[&str]); 11] = [
        ("seed-accept-put-get-delete", &["put stored", "get hit", "get miss", "delete found", "delete absent"]),
        ("seed-close-error-garbage", &["put stored"]),
        ("seed-completion-partial-stop", &["connection: loop 1, completion", "completion: send whole", "get hit"]),
        ("seed-completion-slow-reader", &["completion: send in part", "completion: send cancelled"]),
        ("seed-late-release-reuse", &["connection: loop 0, readiness"]),
        ("seed-loops-big-frames-evict", &["cap: evicted (loops)", "connection: loop 1, readiness"]),
        ("seed-non-reader-stop", &["connection: threaded", "store evicted"]),
        ("seed-store-full-evict", &["store evicted", "maybe evicted: gone", "maybe evicted: counted there"]),
        ("seed-store-full-refuse", &["put refused: store full", "delete found"]),
        ("seed-threaded-asked-to-go", &["cap: asked to go elsewhere", "threaded: a server holds off its reads"]),
        ("seed-two-loops-one-store", &["connection: loop 1, readiness", "get hit", "delete found"]),
    ];

    /// Every seed keeps the rules and reaches what it was written for;
    /// whatever a local fuzzing run added to the corpus keeps the rules.
    #[test]
    fn the_seed_corpus_keeps_every_rule_and_reaches_its_paths() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/server");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("the server target's seed corpus")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let seeds: Vec<&str> = names.iter().map(String::as_str).filter(|n| n.starts_with("seed-")).collect();
        let expected: Vec<&str> = SEEDS.iter().map(|(name, _)| *name).collect();
        assert_eq!(seeds, expected, "the seeds in fuzz/corpus/server are what fuzz/seeds.py writes");
        for name in &names {
            let data = std::fs::read(format!("{dir}/{name}")).unwrap();
            let reached = match std::panic::catch_unwind(|| run_counting(&data)) {
                Ok(reached) => reached,
                Err(panic) => {
                    eprintln!("the model failed on {name}");
                    std::panic::resume_unwind(panic);
                }
            };
            let paths = SEEDS.iter().find(|(seed, _)| seed == name).map_or(&[][..], |(_, paths)| paths);
            for path in paths {
                assert!(reached.contains_key(path), "{name} does not reach {path:?}: {reached:?}");
            }
        }
    }

    /// Every input the `server` fuzz target ever failed on (fuzz/regressions/server).
    #[test]
    fn every_input_the_fuzzer_found_keeps_every_rule() {
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
