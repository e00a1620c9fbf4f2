//! The load generator: one thread, non-blocking sockets on epoll, holding up
//! to tens of thousands of connections, each a closed loop keeping
//! `pipeline` requests outstanding. Every answer is checked (see
//! [`crate::wire`]); latency goes to an HDR histogram; the server's CPU time
//! and RSS are read from `/proc` over the measured window when its PID is
//! known.
//!
//! Every phase is bounded: connecting by `connect_timeout`, the run by
//! warm-up + duration, the final wait for outstanding answers by
//! `drain_timeout` (an answer still missing then is an error).

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kvio_core::FrameParser;
use kvio_core::frame::Parse as Frame;
use kvio_proto::Kind;
use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

use crate::reply::Decoded;
use crate::wire::{Check, Checker, Expect, encode_request, key_of, value_of};
use crate::{memcache, resp, sys};

/// Connections being set up at once: more would overflow the server's
/// accept backlog and stall on SYN retransmits.
const MAX_CONNECTING: usize = 256;
/// Bytes taken from a socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Longest sleep in `epoll_wait`, so phase changes are never late by more.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Histogram range: 1 ns to 100 s at 3 significant digits.
const MAX_LATENCY_NS: u64 = 100_000_000_000;

/// The wire protocol the load generator speaks: kvio's own, or a peer's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// kvio's length-prefixed protobuf frames.
    #[default]
    Kvio,
    /// Redis's RESP (`SET` / `GET`).
    Resp,
    /// memcached's text protocol (`set` / `get`).
    Memcache,
}

impl Protocol {
    fn encode_set(self, out: &mut Vec<u8>, key: &str, value: &str) {
        match self {
            Protocol::Kvio => encode_request(out, Kind::PutOrUpdate, key, value),
            Protocol::Resp => resp::encode_set(out, key.as_bytes(), value.as_bytes()),
            Protocol::Memcache => memcache::encode_set(out, key.as_bytes(), value.as_bytes()),
        }
    }

    fn encode_get(self, out: &mut Vec<u8>, key: &str) {
        match self {
            Protocol::Kvio => encode_request(out, Kind::Get, key, ""),
            Protocol::Resp => resp::encode_get(out, key.as_bytes()),
            Protocol::Memcache => memcache::encode_get(out, key.as_bytes()),
        }
    }

    /// The decoder of a text protocol; `None` for kvio's frames, which go
    /// through `FrameParser`.
    fn decoder(self) -> Option<fn(&[u8]) -> Decoded<'_>> {
        match self {
            Protocol::Kvio => None,
            Protocol::Resp => Some(resp::decode),
            Protocol::Memcache => Some(memcache::decode),
        }
    }
}

/// What one load run does.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Server address (loopback).
    pub addr: SocketAddrV4,
    /// Connections held open.
    pub connections: usize,
    /// Requests outstanding per connection.
    pub pipeline: usize,
    /// Fraction of requests that are puts (the rest are gets).
    pub put_ratio: f64,
    /// Keys in all, shared out between connections (at least one each).
    pub keys: u64,
    /// Bytes per value put.
    pub value_size: usize,
    /// Time before measuring starts.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// How answers are checked.
    pub check: Check,
    /// The server's PID, for its CPU time and RSS.
    pub server_pid: Option<u32>,
    /// Bound on setting up all connections.
    pub connect_timeout: Duration,
    /// Bound on waiting for outstanding answers after the run.
    pub drain_timeout: Duration,
    /// Stop each connection after this many requests (idle-memory runs).
    pub requests_per_connection: Option<u64>,
    /// Longest response frame accepted.
    pub max_frame_len: u32,
    /// Poll epoll without sleeping (the load generator's core stays busy).
    pub spin: bool,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// Fill mode: every request is a put, each connection puts each of its
    /// keys once, in order, then stops (loads a store with exactly `keys`
    /// keys when `connections` divides it).
    pub fill: bool,
}

impl LoadConfig {
    /// The defaults of `kvio bench` against `addr`.
    pub fn new(addr: SocketAddrV4) -> Self {
        LoadConfig {
            addr,
            connections: 16,
            pipeline: 1,
            put_ratio: 0.1,
            keys: 10_000,
            value_size: 64,
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(3),
            check: Check::Full,
            server_pid: None,
            connect_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            requests_per_connection: None,
            max_frame_len: kvio_core::DEFAULT_MAX_FRAME_LEN,
            spin: false,
            protocol: Protocol::Kvio,
            fill: false,
        }
    }
}

/// The figures of one run.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadReport {
    /// Connections held.
    pub connections: usize,
    /// Requests outstanding per connection.
    pub pipeline: usize,
    /// Answers received in the measured window.
    pub requests: u64,
    /// Answers received in the whole run, warm-up and drain included.
    pub total_requests: u64,
    /// Wrong, missing or unreadable answers, failed connections.
    pub errors: u64,
    /// The first error, in words.
    pub first_error: Option<String>,
    /// Length of the measured window.
    pub window_secs: f64,
    /// `requests / window_secs`.
    pub requests_per_sec: f64,
    /// Latency percentiles (microseconds), from request write to answer read.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Server user+system CPU time over the window, per answer (µs).
    pub server_cpu_us_per_request: Option<f64>,
    /// Server CPU use over the window (100 = one core).
    pub server_cpu_percent: Option<f64>,
    /// Server RSS at the end of the window (KiB).
    pub server_rss_kib: Option<u64>,
    /// The load generator's own CPU use over the window (100 = one core):
    /// near 100 means requests/s measured the load generator, not the server.
    pub load_cpu_percent: Option<f64>,
    /// Source addresses used (more than one when ephemeral ports ran short).
    pub source_addrs: u8,
}

struct Conn {
    fd: Option<OwnedFd>,
    id: u32,
    parser: FrameParser,
    payload: Vec<u8>,
    /// Received bytes not yet decoded (text protocols).
    inbuf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    wants_out: bool,
    inflight: VecDeque<(Instant, Expect)>,
    /// Version of each of this connection's keys last put; 0 = not yet.
    versions: Vec<u32>,
    rng: u64,
    left_to_send: u64,
    /// Fill mode: the next key to put.
    next_key: u32,
}

/// A load run in progress: connections, once [`Load::connect`] succeeded,
/// stay open until the value is dropped (idle-memory runs hold them).
pub struct Load {
    cfg: LoadConfig,
    epoll: OwnedFd,
    conns: Vec<Conn>,
    checker: Checker,
    key: String,
    value: String,
    rbuf: Vec<u8>,
    source: u8,
    outstanding: u64,
    /// Open connections with requests left to send.
    unfinished: usize,
    errors: u64,
    first_error: Option<String>,
    put_threshold: u64,
}

impl std::fmt::Debug for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Load").field("cfg", &self.cfg).field("connections", &self.conns.len()).finish()
    }
}

fn would_block(e: Errno) -> bool {
    e == Errno::AGAIN || e == Errno::WOULDBLOCK
}

impl Load {
    /// A run of `cfg`; nothing is connected yet.
    pub fn new(cfg: LoadConfig) -> io::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let put_threshold = (cfg.put_ratio.clamp(0.0, 1.0) * 65536.0) as u64;
        Ok(Load {
            checker: Checker::new(cfg.check, cfg.value_size),
            cfg,
            epoll,
            conns: Vec::new(),
            key: String::new(),
            value: String::new(),
            rbuf: vec![0; READ_CHUNK],
            source: 1,
            outstanding: 0,
            unfinished: 0,
            errors: 0,
            first_error: None,
            put_threshold,
        })
    }

    fn error(&mut self, why: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
    }

    /// A non-blocking socket connecting to the server. When connect or bind
    /// says the ephemeral ports of this source address are used up, the
    /// next source address of 127.0.0.0/8 is bound instead.
    fn open_socket(&mut self) -> io::Result<OwnedFd> {
        loop {
            let fd = rustix::net::socket_with(
                AddressFamily::INET,
                SocketType::STREAM,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            )?;
            sockopt::set_tcp_nodelay(&fd, true)?;
            let next_source = |e: Errno| e == Errno::ADDRNOTAVAIL || e == Errno::ADDRINUSE;
            if self.source > 1 {
                sockopt::set_socket_reuseaddr(&fd, true)?;
                let from = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, self.source), 0);
                match rustix::net::bind(&fd, &from) {
                    Ok(()) => {}
                    Err(e) if next_source(e) && self.source < 254 => {
                        self.source += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match rustix::net::connect(&fd, &self.cfg.addr) {
                Ok(()) | Err(Errno::INPROGRESS) => return Ok(fd),
                Err(e) if next_source(e) && self.source < 254 => self.source += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Opens every connection; fails if one is refused or they are not all
    /// up within `connect_timeout`.
    pub fn connect(&mut self) -> Result<(), String> {
        let n = self.cfg.connections;
        let keys_per_conn = (self.cfg.keys / n.max(1) as u64).max(1) as usize;
        let deadline = Instant::now() + self.cfg.connect_timeout;
        let mut events = Vec::with_capacity(1024);
        let (mut connecting, mut connected) = (0usize, 0usize);
        while connected < n {
            while self.conns.len() < n && connecting < MAX_CONNECTING {
                let i = self.conns.len();
                let fd = self.open_socket().map_err(|e| format!("connection {i}: {e}"))?;
                epoll::add(&self.epoll, &fd, epoll::EventData::new_u64(i as u64), epoll::EventFlags::OUT)
                    .map_err(|e| format!("epoll add: {e}"))?;
                self.conns.push(Conn {
                    fd: Some(fd),
                    id: i as u32,
                    parser: FrameParser::new(self.cfg.max_frame_len),
                    payload: Vec::new(),
                    inbuf: Vec::new(),
                    out: Vec::new(),
                    written: 0,
                    wants_out: false,
                    inflight: VecDeque::with_capacity(self.cfg.pipeline),
                    versions: vec![0; keys_per_conn],
                    rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
                    left_to_send: if self.cfg.fill {
                        keys_per_conn as u64
                    } else {
                        self.cfg.requests_per_connection.unwrap_or(u64::MAX).max(1)
                    },
                    next_key: 0,
                });
                connecting += 1;
                self.unfinished += 1;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("{connected} of {n} connections up after {:?}", self.cfg.connect_timeout));
            }
            let wait = rustix::event::Timespec::try_from((deadline - now).min(MAX_WAIT)).unwrap_or_default();
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), Some(&wait)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(format!("epoll wait: {e}")),
            }
            for ev in &events {
                let i = ev.data.u64() as usize;
                let fd = self.conns[i].fd.as_ref().expect("connecting sockets are open");
                match sockopt::socket_error(fd) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) | Err(e) => return Err(format!("connection {i}: connect: {e}")),
                }
                epoll::modify(&self.epoll, fd, epoll::EventData::new_u64(i as u64), epoll::EventFlags::IN)
                    .map_err(|e| format!("epoll modify: {e}"))?;
                connecting -= 1;
                connected += 1;
            }
        }
        Ok(())
    }

    /// Queues this connection's next request (a put or a get of one of its keys).
    fn queue_request(&mut self, i: usize, now: Instant) {
        let Load { conns, key, value, cfg, put_threshold, outstanding, unfinished, .. } = self;
        let c = &mut conns[i];
        c.rng ^= c.rng << 13;
        c.rng ^= c.rng >> 7;
        c.rng ^= c.rng << 17;
        let k = if cfg.fill {
            c.next_key += 1;
            c.next_key - 1
        } else {
            ((c.rng >> 32) % c.versions.len() as u64) as u32
        };
        key_of(key, c.id, k);
        let expect = if cfg.fill || (c.rng & 0xffff) < *put_threshold {
            let version = c.versions[k as usize].wrapping_add(1).max(1);
            c.versions[k as usize] = version;
            value_of(value, c.id, k, version, cfg.value_size);
            cfg.protocol.encode_set(&mut c.out, key, value);
            Expect::PutAck
        } else {
            cfg.protocol.encode_get(&mut c.out, key);
            Expect::Get { key: k, version: c.versions[k as usize] }
        };
        c.inflight.push_back((now, expect));
        c.left_to_send -= 1;
        if c.left_to_send == 0 {
            *unfinished -= 1;
        }
        *outstanding += 1;
    }

    /// Writes what the connection has queued; asks for write readiness only
    /// while something is left.
    fn flush(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        let Some(fd) = c.fd.as_ref() else { return Ok(()) };
        while c.written < c.out.len() {
            match rustix::io::write(fd, &c.out[c.written..]) {
                Ok(n) => c.written += n,
                Err(Errno::INTR) => {}
                Err(e) if would_block(e) => {
                    if !c.wants_out {
                        c.wants_out = true;
                        let flags = epoll::EventFlags::IN | epoll::EventFlags::OUT;
                        epoll::modify(&self.epoll, fd, epoll::EventData::new_u64(i as u64), flags)?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        c.out.clear();
        c.written = 0;
        if c.wants_out {
            c.wants_out = false;
            epoll::modify(&self.epoll, fd, epoll::EventData::new_u64(i as u64), epoll::EventFlags::IN)?;
        }
        Ok(())
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(fd) = c.fd.take() {
            let _ = epoll::delete(&self.epoll, &fd);
            self.outstanding -= c.inflight.len() as u64;
            c.inflight.clear();
            if c.left_to_send > 0 {
                self.unfinished -= 1;
            }
        }
    }

    /// Reads once from connection `i`, checks the answers, and (while
    /// `sending`) queues one new request per answer.
    fn on_readable(&mut self, i: usize, now: Instant, sending: bool, hist: Option<&mut Histogram<u64>>) -> u64 {
        let Some(fd) = self.conns[i].fd.as_ref() else { return 0 };
        let n = match rustix::io::read(fd, &mut self.rbuf) {
            Ok(0) => {
                let left = self.conns[i].inflight.len();
                if left > 0 || sending {
                    self.error(format!("connection {i}: closed by the server with {left} answers outstanding"));
                }
                self.close(i);
                return 0;
            }
            Ok(n) => n,
            Err(e) if would_block(e) || e == Errno::INTR => return 0,
            Err(e) => {
                self.error(format!("connection {i}: read: {e}"));
                self.close(i);
                return 0;
            }
        };
        let mut answers = 0;
        let mut pos = 0;
        let mut hist = hist;
        let mut failure = None;
        if let Some(decode) = self.cfg.protocol.decoder() {
            (answers, failure) = self.take_replies(i, n, now, hist, decode);
        } else {
            let Load { conns, rbuf, checker, errors, first_error, outstanding, .. } = self;
            let c = &mut conns[i];
            while pos < n {
                match c.parser.push(&rbuf[pos..n], &mut c.payload) {
                    Ok((used, Frame::Complete(payload))) => {
                        pos += used;
                        let Some((sent, expect)) = c.inflight.pop_front() else {
                            failure = Some(format!("connection {i}: an answer nobody asked for"));
                            break;
                        };
                        *outstanding -= 1;
                        answers += 1;
                        if let Err(why) = checker.check(c.id, expect, payload) {
                            *errors += 1;
                            first_error.get_or_insert(why);
                        }
                        if let Some(h) = hist.as_deref_mut() {
                            let ns = now.saturating_duration_since(sent).as_nanos() as u64;
                            h.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
                        }
                    }
                    Ok((used, Frame::Partial)) => pos += used,
                    Err(e) => {
                        failure = Some(format!("connection {i}: bad response frame: {e}"));
                        break;
                    }
                }
            }
        }
        if let Some(why) = failure {
            self.error(why);
            self.close(i);
            return answers;
        }
        if sending {
            for _ in 0..answers {
                if self.conns[i].left_to_send == 0 {
                    break;
                }
                self.queue_request(i, now);
            }
        }
        if let Err(e) = self.flush(i) {
            self.error(format!("connection {i}: write: {e}"));
            self.close(i);
        }
        answers
    }

    /// Decodes and checks the text-protocol replies in the `n` bytes just
    /// read (after any partial reply left from the last read); returns the
    /// answers taken, and why the stream is broken if it is.
    fn take_replies(
        &mut self,
        i: usize,
        n: usize,
        now: Instant,
        mut hist: Option<&mut Histogram<u64>>,
        decode: fn(&[u8]) -> Decoded<'_>,
    ) -> (u64, Option<String>) {
        let Load { conns, rbuf, checker, errors, first_error, outstanding, .. } = self;
        let c = &mut conns[i];
        c.inbuf.extend_from_slice(&rbuf[..n]);
        let (mut pos, mut answers, mut failure) = (0, 0, None);
        loop {
            let (reply, used) = match decode(&c.inbuf[pos..]) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(format!("connection {i}: bad reply: {e}"));
                    break;
                }
            };
            pos += used;
            let Some((sent, expect)) = c.inflight.pop_front() else {
                failure = Some(format!("connection {i}: an answer nobody asked for"));
                break;
            };
            *outstanding -= 1;
            answers += 1;
            if let Err(why) = checker.check_reply(c.id, expect, &reply) {
                *errors += 1;
                first_error.get_or_insert(why);
            }
            if let Some(h) = hist.as_deref_mut() {
                let ns = now.saturating_duration_since(sent).as_nanos() as u64;
                h.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
            }
        }
        c.inbuf.drain(..pos);
        (answers, failure)
    }

    /// Runs the closed loops: warm-up, measured window, drain.
    pub fn run(&mut self) -> LoadReport {
        let cfg = self.cfg.clone();
        let start = Instant::now();
        for i in 0..self.conns.len() {
            for _ in 0..cfg.pipeline {
                if self.conns[i].left_to_send > 0 {
                    self.queue_request(i, start);
                }
            }
            if let Err(e) = self.flush(i) {
                self.error(format!("connection {i}: write: {e}"));
                self.close(i);
            }
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds");
        let warm_end = start + cfg.warmup;
        let end = warm_end + cfg.duration;
        let me = std::process::id();
        let sample = |pid: Option<u32>| (pid.and_then(|p| sys::cpu_seconds(p).ok()), sys::cpu_seconds(me).ok());
        type Sample = (Instant, (Option<f64>, Option<f64>));
        let (mut window_start, mut window_end) = (None::<Sample>, None::<Sample>);
        let mut drain_deadline = None;
        let (mut measured, mut total) = (0u64, 0u64);
        let mut events = Vec::with_capacity(1024);
        loop {
            let now = Instant::now();
            if window_start.is_none() && now >= warm_end {
                window_start = Some((now, sample(cfg.server_pid)));
            }
            let all_sent = self.unfinished == 0;
            if window_end.is_none() && window_start.is_some() && (now >= end || (all_sent && self.outstanding == 0)) {
                window_end = Some((now, sample(cfg.server_pid)));
                drain_deadline = Some(now + cfg.drain_timeout);
            }
            if self.outstanding == 0 && (drain_deadline.is_some() || all_sent) {
                break;
            }
            if let Some(d) = drain_deadline
                && now >= d
            {
                let missing = self.outstanding;
                self.error(format!("{missing} answers still missing {:?} after the run", cfg.drain_timeout));
                self.errors += missing.saturating_sub(1);
                break;
            }
            let next = [Some(warm_end), Some(end), drain_deadline]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .min()
                .map_or(MAX_WAIT, |t| (t - now).min(MAX_WAIT));
            // Spinning keeps the load generator's core awake, so the time a
            // sleeping CPU takes to wake is not added to every round trip.
            let next = if cfg.spin { Duration::ZERO } else { next };
            let wait = rustix::event::Timespec::try_from(next).unwrap_or_default();
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), Some(&wait)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => {
                    self.error(format!("epoll wait: {e}"));
                    break;
                }
            }
            let now = Instant::now();
            let measuring = window_start.is_some() && window_end.is_none();
            let sending = window_end.is_none();
            for ev in &events {
                let (i, flags) = (ev.data.u64() as usize, ev.flags);
                if flags.intersects(epoll::EventFlags::OUT)
                    && let Err(e) = self.flush(i)
                {
                    self.error(format!("connection {i}: write: {e}"));
                    self.close(i);
                }
                if flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::ERR | epoll::EventFlags::HUP) {
                    let got = self.on_readable(i, now, sending, measuring.then_some(&mut hist));
                    total += got;
                    if measuring {
                        measured += got;
                    }
                }
            }
        }
        let (t0, (cpu0, load0)) = window_start.unwrap_or((start, (None, None)));
        let (t1, (cpu1, load1)) = window_end.unwrap_or((Instant::now(), (None, None)));
        let window = (t1 - t0).as_secs_f64().max(1e-9);
        let us = |q: f64| if hist.is_empty() { 0.0 } else { hist.value_at_quantile(q) as f64 / 1000.0 };
        let cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
        LoadReport {
            connections: cfg.connections,
            pipeline: cfg.pipeline,
            requests: measured,
            total_requests: total,
            errors: self.errors,
            first_error: self.first_error.clone(),
            window_secs: window,
            requests_per_sec: measured as f64 / window,
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: if hist.is_empty() { 0.0 } else { hist.max() as f64 / 1000.0 },
            server_cpu_us_per_request: cpu.filter(|_| measured > 0).map(|c| c * 1e6 / measured as f64),
            server_cpu_percent: cpu.map(|c| c * 100.0 / window),
            server_rss_kib: cfg.server_pid.and_then(|p| sys::rss_kib(p).ok()),
            load_cpu_percent: load0.zip(load1).map(|(a, b)| (b - a) * 100.0 / window),
            source_addrs: self.source,
        }
    }

    /// Connections still open.
    pub fn open_connections(&self) -> usize {
        self.conns.iter().filter(|c| c.fd.is_some()).count()
    }
}

/// Connects and runs `cfg`; a connection failure is reported as one error.
pub fn run(cfg: LoadConfig) -> LoadReport {
    sys::raise_nofile_limit();
    let base = LoadReport { connections: cfg.connections, pipeline: cfg.pipeline, ..LoadReport::default() };
    let mut load = match Load::new(cfg) {
        Ok(l) => l,
        Err(e) => return LoadReport { errors: 1, first_error: Some(format!("epoll: {e}")), ..base },
    };
    if let Err(why) = load.connect() {
        return LoadReport { errors: 1, first_error: Some(why), source_addrs: load.source, ..base };
    }
    load.run()
}
