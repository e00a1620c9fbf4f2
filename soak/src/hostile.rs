//! The hostile clients. Each kind runs in its own thread, episode after
//! episode, until the run stops; where the protocol says what the answer
//! is (framing errors, odd protobuf), the answer is checked like an honest
//! one, and a wrong one counts as a wrong answer.

use std::io::Read;
use std::time::{Duration, Instant};

use kvio_core::frame::FOOTER;
use kvio_proto::KeyValueMessage;

use crate::honest::show;
use crate::tally::Tally;
use crate::wire::{
    CLIENT_MEMORY, Conn, GET, GET_RESPONSE, MALFORMED, NOT_OK, OK, PUT, Reply, Rng, frame, get_frame, put_frame,
};
use crate::{BIG_KEY, Ctx, FIXED_KEY, FIXED_VALUE};

/// Episodes a hostile thread runs in all (the run's time ends it first).
const MAX_EPISODES: u64 = 1_000_000;

/// The kinds of hostile client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Garbage,
    BadFooter,
    HalfFrame,
    ResetMidResponse,
    OddProtobuf,
    KeepSending,
    Slowloris,
    IdleFlood,
    NonReader,
    PartialFrame,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Garbage,
        Kind::BadFooter,
        Kind::HalfFrame,
        Kind::ResetMidResponse,
        Kind::OddProtobuf,
        Kind::KeepSending,
        Kind::Slowloris,
        Kind::IdleFlood,
        Kind::NonReader,
        Kind::PartialFrame,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Garbage => "garbage",
            Kind::BadFooter => "bad-footer",
            Kind::HalfFrame => "half-frame",
            Kind::ResetMidResponse => "reset-mid-response",
            Kind::OddProtobuf => "odd-protobuf",
            Kind::KeepSending => "keep-sending",
            Kind::Slowloris => "slowloris",
            Kind::IdleFlood => "idle-flood",
            Kind::NonReader => "non-reader",
            Kind::PartialFrame => "partial-frame",
        }
    }
}

/// Runs `kind` until the run stops.
pub fn run(ctx: &Ctx, kind: Kind, mut rng: Rng) {
    let mut episodes = 0;
    while !ctx.tally.stopping() && episodes < MAX_EPISODES {
        episodes += 1;
        Tally::add(&ctx.tally.hostile_episodes[kind as usize], 1);
        match kind {
            Kind::Garbage => garbage(ctx, &mut rng),
            Kind::BadFooter => bad_footer(ctx, &mut rng),
            Kind::HalfFrame => half_frame(ctx, &mut rng),
            Kind::ResetMidResponse => reset_mid_response(ctx, &mut rng),
            Kind::OddProtobuf => odd_protobuf(ctx, &mut rng),
            Kind::KeepSending => keep_sending(ctx, &mut rng),
            Kind::Slowloris => slowloris(ctx, &mut rng),
            Kind::IdleFlood => idle_flood(ctx, &mut rng),
            Kind::NonReader => non_readers(ctx, &mut rng),
            Kind::PartialFrame => partial_frames(ctx, &mut rng),
        }
    }
}

fn connect(ctx: &Ctx) -> Option<Conn> {
    match Conn::connect(ctx.addr, ctx.io_timeout, ctx.max_frame_len) {
        Ok(c) => {
            Tally::add(&ctx.tally.hostile_connections, 1);
            Some(c)
        }
        Err(_) => {
            // Refused or timed out (blocking's backlog, the stop): try again a little later.
            ctx.tally.pause(Duration::from_millis(50));
            None
        }
    }
}

/// Holds what the caller holds for `d`, and from the SIGTERM on until the
/// run ends: a client that holds through the stop is one the stop bound
/// must cope with, so none lets go on its own then.
fn hold(ctx: &Ctx, d: Duration) {
    let until = Instant::now() + d;
    while (Instant::now() < until || ctx.stop_sent()) && ctx.tally.pause(Duration::from_millis(20)) {}
}

fn sent(ctx: &Ctx, n: usize) {
    Tally::add(&ctx.tally.hostile_bytes, n as u64);
}

/// What an answer must be: `value: None` leaves the value unchecked.
struct Want<'a> {
    kind: u32,
    status: i32,
    key: &'a str,
    value: Option<&'a str>,
}

fn error_frame(reason: &str) -> Want<'_> {
    Want { kind: 0, status: NOT_OK, key: "", value: Some(reason) }
}

const FIXED: Want<'static> = Want { kind: GET_RESPONSE, status: OK, key: FIXED_KEY, value: Some(FIXED_VALUE) };

/// Reads the next answer and checks it against `want`; false if the
/// connection gave no answer (closed, timed out: reported unless expected).
fn expect(ctx: &Ctx, conn: &mut Conn, who: &str, want: &Want<'_>) -> bool {
    let t = &ctx.tally;
    match conn.read_reply() {
        Reply::Msg(m) => {
            t.checked();
            if !matches(&m, want) {
                t.wrong(format!(
                    "{who}: want {{kind {}, status {}, key {:?}, value {:?}}}, got {}",
                    want.kind,
                    want.status,
                    want.key,
                    want.value,
                    show(&m)
                ));
            }
            true
        }
        Reply::Violation(v) => {
            t.wrong(format!("{who}: {v}"));
            false
        }
        other => {
            if !ctx.stop_sent() && ctx.serves_concurrently {
                t.fail(format!("{who}: no answer ({other:?}) where one was due"));
            }
            false
        }
    }
}

fn matches(m: &KeyValueMessage, want: &Want<'_>) -> bool {
    m.kind == want.kind
        && m.status == want.status
        && m.key == want.key
        && want.value.is_none_or(|v| m.value == v)
        // A put's answer may carry a reason; a get's or an error's is exact.
        && (want.value.is_some() || want.kind == PUT)
}

/// After an error frame, the server closes: no more frames.
fn expect_close(ctx: &Ctx, conn: &mut Conn, who: &str) {
    match conn.read_reply() {
        Reply::Closed => {}
        Reply::Msg(m) => ctx.tally.wrong(format!("{who}: a frame after the error frame: {}", show(&m))),
        Reply::Violation(v) => ctx.tally.wrong(format!("{who}: {v}")),
        Reply::TimedOut => {
            if !ctx.stop_sent() {
                ctx.tally.fail(format!("{who}: not closed within {:?} after the error frame", ctx.io_timeout));
            }
        }
    }
}

/// Random bytes; a header over the maximum or under 5 gets its documented
/// error frame and a close; anything else must at least be answered in
/// well-formed frames.
fn garbage(ctx: &Ctx, rng: &mut Rng) {
    let Some(mut conn) = connect(ctx) else { return };
    let mut bytes = vec![0u8; rng.range(1, 4096)];
    rng.fill(&mut bytes);
    let variant = rng.below(3);
    if bytes.len() < 4 {
        bytes.resize(4, 0);
    }
    match variant {
        0 => {
            let len = ctx.max_frame_len as u64 + 1 + rng.below(u64::from(u32::MAX - ctx.max_frame_len));
            bytes[..4].copy_from_slice(&(len as u32).to_le_bytes());
        }
        1 => bytes[..4].copy_from_slice(&(rng.below(5) as u32).to_le_bytes()),
        _ => {}
    }
    let _ = conn.send(&bytes);
    sent(ctx, bytes.len());
    conn.shutdown_write();
    match variant {
        0 | 1 => {
            let reason = if variant == 0 { "frame length over maximum" } else { "frame length below 5" };
            if expect(ctx, &mut conn, "garbage", &error_frame(reason)) {
                expect_close(ctx, &mut conn, "garbage");
            }
        }
        _ => {
            for _ in 0..64 {
                match conn.read_reply() {
                    Reply::Msg(_) => {}
                    Reply::Violation(v) => {
                        ctx.tally.wrong(format!("garbage: {v}"));
                        break;
                    }
                    Reply::Closed | Reply::TimedOut => break,
                }
            }
        }
    }
}

/// Good gets, one frame whose footer is wrong, more good gets: the ones
/// before are answered, then the error frame, then the close.
fn bad_footer(ctx: &Ctx, rng: &mut Rng) {
    let Some(mut conn) = connect(ctx) else { return };
    let before = rng.range(0, 5);
    let mut bytes = Vec::new();
    for _ in 0..before {
        bytes.extend(get_frame(FIXED_KEY));
    }
    let mut bad = get_frame(FIXED_KEY);
    let at = bad.len() - FOOTER.len() + rng.range(0, FOOTER.len() - 1);
    let i = at - (bad.len() - FOOTER.len());
    bad[at] = loop {
        let b = rng.next() as u8;
        if b != FOOTER[i] {
            break b;
        }
    };
    bytes.extend(bad);
    for _ in 0..rng.range(0, 3) {
        bytes.extend(get_frame(FIXED_KEY));
    }
    let _ = conn.send(&bytes);
    sent(ctx, bytes.len());
    conn.shutdown_write();
    for _ in 0..before {
        if !expect(ctx, &mut conn, "bad-footer", &FIXED) {
            return;
        }
    }
    if expect(ctx, &mut conn, "bad-footer", &error_frame("frame footer is not @EOF@")) {
        expect_close(ctx, &mut conn, "bad-footer");
    }
}

/// Part of a put, then gone: a FIN or a reset.
fn half_frame(ctx: &Ctx, rng: &mut Rng) {
    let Some(mut conn) = connect(ctx) else { return };
    let value = "h".repeat(rng.range(0, 100 * 1024));
    let bytes = put_frame("half/key", &value);
    let cut = rng.range(1, bytes.len() - 1);
    conn.set_timeouts(ctx.io_timeout, Duration::from_millis(200));
    let n = conn.send_some(&bytes[..cut]);
    sent(ctx, n);
    if rng.chance(500) {
        conn.reset()
    } else {
        drop(conn)
    }
    ctx.tally.pause(Duration::from_millis(rng.range(5, 50) as u64));
}

/// Gets of the big value, part of the answers read, then a reset.
fn reset_mid_response(ctx: &Ctx, rng: &mut Rng) {
    let Some(mut conn) = connect(ctx) else { return };
    let mut bytes = Vec::new();
    for _ in 0..rng.range(1, 16) {
        bytes.extend(get_frame(BIG_KEY));
    }
    let _ = conn.send(&bytes);
    sent(ctx, bytes.len());
    conn.read_raw(rng.range(1, 600 * 1024));
    conn.reset();
}

/// Payloads the official runtimes accept in unusual shapes, or refuse:
/// each has its documented answer, checked in order; the connection stays
/// open throughout (a last plain get proves it).
fn odd_protobuf(ctx: &Ctx, rng: &mut Rng) {
    let Some(mut conn) = connect(ctx) else { return };
    let key = FIXED_KEY.as_bytes();
    let field = |tag: u8, bytes: &[u8]| -> Vec<u8> {
        let mut f = vec![tag, bytes.len() as u8];
        f.extend_from_slice(bytes);
        f
    };
    let get = [0x18, GET as u8];
    // (payload, want)
    let mut cases: Vec<(Vec<u8>, Want<'static>)> = vec![
        // Unknown fields (varint 9, length-delimited 15, fixed64 10) are skipped.
        (
            [
                field(0x0A, key),
                get.to_vec(),
                vec![0x48, 0x96, 0x01],
                field(0x7A, b"xyz"),
                vec![0x51, 1, 2, 3, 4, 5, 6, 7, 8],
            ]
            .concat(),
            FIXED,
        ),
        // `kind` again as fixed32: skipped as an unknown field, the varint kind stands.
        ([field(0x0A, key), get.to_vec(), vec![0x1D, 3, 0, 0, 0]].concat(), FIXED),
        // Only a fixed32 `kind`: skipped, so kind 0: `{status NotOk}`, no value.
        (
            [field(0x0A, key), vec![0x1D, 1, 0, 0, 0]].concat(),
            Want { kind: 0, status: NOT_OK, key: "", value: Some("") },
        ),
        // Duplicates: the last key and the last kind win.
        ([field(0x0A, b"not this key"), vec![0x18, PUT as u8], field(0x0A, key), get.to_vec()].concat(), FIXED),
        // A `status` in a request is ignored.
        ([field(0x0A, key), get.to_vec(), vec![0x20, 1]].concat(), FIXED),
        // `key` as a varint: skipped, so a get of "" (never stored): a miss.
        ([vec![0x08, 7], get.to_vec()].concat(), Want { kind: GET_RESPONSE, status: NOT_OK, key: "", value: Some("") }),
        // Invalid UTF-8 in a key or a value: malformed.
        ([field(0x0A, &[0xFF, 0xFE]), get.to_vec()].concat(), error_frame(MALFORMED)),
        ([field(0x0A, b"odd/k"), field(0x12, &[0xC3, 0x28]), vec![0x18, PUT as u8]].concat(), error_frame(MALFORMED)),
        // A varint cut short, a length past the end: malformed.
        (vec![0x18], error_frame(MALFORMED)),
        (vec![0x0A, 0x10, b'a'], error_frame(MALFORMED)),
        // Other kinds: `{kind, NotOk}`.
        ([field(0x0A, key), vec![0x18, 7]].concat(), Want { kind: 7, status: NOT_OK, key: "", value: Some("") }),
        (
            [field(0x0A, key), vec![0x18, GET_RESPONSE as u8]].concat(),
            Want { kind: 2, status: NOT_OK, key: "", value: Some("") },
        ),
        // The empty payload is kind 0.
        (Vec::new(), Want { kind: 0, status: NOT_OK, key: "", value: Some("") }),
    ];
    // A random order each episode.
    for i in (1..cases.len()).rev() {
        cases.swap(i, rng.below(i as u64 + 1) as usize);
    }
    cases.push((get_frame(FIXED_KEY)[4..get_frame(FIXED_KEY).len() - 5].to_vec(), FIXED));
    let mut bytes = Vec::new();
    for (payload, _) in &cases {
        bytes.extend(frame(payload));
    }
    let _ = conn.send(&bytes);
    sent(ctx, bytes.len());
    for (_, want) in &cases {
        if !expect(ctx, &mut conn, "odd-protobuf", want) {
            return;
        }
    }
    conn.shutdown_write();
    expect_close(ctx, &mut conn, "odd-protobuf");
}

/// Issue 10's first repro: every 50 ms, 10 more gets of the big value,
/// and the answers read at about 2.5 MB/s, so bytes always move both
/// ways; it goes on through the stop. On `blocking`, where an active
/// client holds the one thread, an episode lasts at most 2 s.
fn keep_sending(ctx: &Ctx, rng: &mut Rng) {
    let Some(mut conn) = connect(ctx) else { return };
    conn.set_timeouts(Duration::from_millis(1), Duration::from_millis(200));
    let mut request = Vec::new();
    for _ in 0..10 {
        request.extend(get_frame(BIG_KEY));
    }
    let secs = if ctx.serves_concurrently { rng.range(5, 15) } else { rng.range(1, 2) };
    let episode_end = Instant::now() + Duration::from_secs(secs as u64);
    // 2.5 MB/s is 125 KiB per 50 ms.
    while (Instant::now() < episode_end || ctx.stop_sent()) && ctx.tally.pause(Duration::from_millis(50)) {
        let n = conn.send_some(&request);
        sent(ctx, n);
        let (_, closed) = conn.read_raw(125 * 1024);
        if closed {
            break;
        }
    }
}

/// Connections sending a get one byte every 100 ms; the answer, when the
/// frame is whole, is checked. The blocking flavor closes them at its
/// frame deadline; the others answer.
fn slowloris(ctx: &Ctx, rng: &mut Rng) {
    let request = get_frame(FIXED_KEY);
    let mut conns: Vec<(Conn, usize)> =
        (0..ctx.profile.connections(Kind::Slowloris)).filter_map(|_| connect(ctx).map(|c| (c, 0))).collect();
    for (c, _) in &mut conns {
        c.set_timeouts(Duration::from_millis(1), ctx.io_timeout);
    }
    let episode_end = Instant::now() + Duration::from_secs(rng.range(3, 10) as u64);
    while (Instant::now() < episode_end || ctx.stop_sent())
        && !conns.is_empty()
        && ctx.tally.pause(Duration::from_millis(100))
    {
        conns.retain_mut(|(c, at)| {
            if *at < request.len() {
                if c.send(&request[*at..*at + 1]).is_err() {
                    return false;
                }
                sent(ctx, 1);
                *at += 1;
                return true;
            }
            match c.read_reply() {
                Reply::TimedOut => true,
                Reply::Closed => false,
                Reply::Msg(m) => {
                    ctx.tally.checked();
                    if !matches(&m, &FIXED) {
                        ctx.tally.wrong(format!("slowloris: {}", show(&m)));
                    }
                    *at = 0;
                    true
                }
                Reply::Violation(v) => {
                    ctx.tally.wrong(format!("slowloris: {v}"));
                    false
                }
            }
        });
    }
}

/// Many connections that send nothing, held a while, then closed. The
/// server must never send them a byte.
fn idle_flood(ctx: &Ctx, rng: &mut Rng) {
    let mut conns = Vec::new();
    for _ in 0..ctx.profile.connections(Kind::IdleFlood) {
        if ctx.tally.stopping() {
            break;
        }
        if let Some(c) = connect(ctx) {
            conns.push(c);
        }
    }
    hold(ctx, Duration::from_secs(rng.range(1, 5) as u64));
    for c in &mut conns {
        let _ = c.stream.set_nonblocking(true);
        let mut byte = [0u8; 1];
        if let Ok(n) = c.stream.read(&mut byte)
            && n > 0
        {
            ctx.tally.wrong("idle-flood: the server sent bytes to a silent client".into());
        }
    }
}

/// Connections that pipeline many gets of the big value and never read,
/// held a while, then closed (with the answers unread: a reset).
fn non_readers(ctx: &Ctx, rng: &mut Rng) {
    let mut request = Vec::new();
    for _ in 0..1000 {
        request.extend(get_frame(BIG_KEY));
    }
    let mut conns = Vec::new();
    for _ in 0..ctx.profile.connections(Kind::NonReader) {
        if let Some(mut c) = connect(ctx) {
            c.set_timeouts(ctx.io_timeout, Duration::from_millis(200));
            let n = c.send_some(&request);
            sent(ctx, n);
            conns.push(c);
        }
    }
    hold(ctx, Duration::from_secs(rng.range(1, 4) as u64));
}

/// Connections each sending a header for a frame of the maximum length
/// and most of its body, then holding it: with `--max-client-memory` they
/// drive the total over the cap, and the biggest must be closed, with the
/// error frame `client memory limit reached` (they owe no output).
fn partial_frames(ctx: &Ctx, rng: &mut Rng) {
    let len = ctx.max_frame_len;
    let mut body = vec![0u8; len as usize - 4 - rng.range(5, 4096)];
    body[..4].copy_from_slice(&len.to_le_bytes());
    rng.fill(&mut body[4..]);
    let mut conns = Vec::new();
    for _ in 0..ctx.profile.connections(Kind::PartialFrame) {
        if ctx.tally.stopping() {
            break;
        }
        if let Some(mut c) = connect(ctx) {
            c.set_timeouts(ctx.io_timeout, Duration::from_millis(200));
            let n = c.send_some(&body);
            sent(ctx, n);
            conns.push(c);
        }
    }
    let hold_until = Instant::now() + Duration::from_secs(rng.range(2, 5) as u64);
    for c in &mut conns {
        c.set_timeouts(Duration::from_millis(1), Duration::from_millis(200));
    }
    while (Instant::now() < hold_until || ctx.stop_sent())
        && !conns.is_empty()
        && ctx.tally.pause(Duration::from_millis(250))
    {
        conns.retain_mut(|c| match c.read_reply() {
            Reply::TimedOut => true,
            Reply::Closed => false,
            Reply::Msg(m) => {
                ctx.tally.checked();
                if m.kind == 0 && m.status == NOT_OK && m.key.is_empty() && m.value == CLIENT_MEMORY {
                    Tally::add(&ctx.tally.memory_evictions, 1);
                } else {
                    ctx.tally.wrong(format!("partial-frame: an answer to a frame never finished: {}", show(&m)));
                }
                false
            }
            Reply::Violation(v) => {
                ctx.tally.wrong(format!("partial-frame: {v}"));
                false
            }
        });
    }
}
