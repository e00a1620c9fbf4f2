//! The `differential` target: one sequence of operations, sent over kvio
//! frames, RESP and the memcached protocol to three servers' handlers
//! (each its own store of the same size), must get the same answers and
//! leave the same stores. And the operations only RESP and memcached both
//! have (expiry, time passing) must agree between those two.
//!
//! Each protocol's requests are encoded the way its clients send them, fed
//! to a `Connection` in chunks drawn from the input, and its answers parsed
//! back into one shape ([`Answer`]); keys are letters and digits (valid in
//! all three), values UTF-8 (kvio frames carry proto3 strings). The stores
//! refuse when full, with room for every entry the input can write, so a
//! refusal is the same refusal everywhere (an oversized value).

use kvio::sansio::wire::Protocols;
use kvio_core::frame::{FrameParser, Parse};
use kvio_core::store::{Slot, Store};
use kvio_core::{Connection, Handler, Outcome, Parser, StoreLimits};
use kvio_proto::{KeyValueMessage, Kind, encode_request};
use prost::Message;

use crate::input::{Chunks, Cursor};

type Boxed = Store<Box<[Slot]>, Box<[u8]>>;

const MAX_FRAME_LEN: u32 = 4096;

/// One operation of the sequence.
#[derive(Debug, Clone)]
enum Op {
    Put(String, String),
    Get(String),
    Delete(String),
    /// RESP and memcached only: a put that expires after `secs` seconds.
    PutExpiring(String, String, u8),
    /// Time passes by this many milliseconds.
    Wait(u16),
}

/// What an answer says, whatever the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Stored,
    Refused,
    Value(Option<String>),
    Deleted(bool),
}

fn store() -> Boxed {
    let limits = StoreLimits::for_frame(MAX_FRAME_LEN, 64, 1 << 16);
    let slots = kvio_core::store::slots_for(64);
    Store::with_storage(vec![Slot::EMPTY; slots].into_boxed_slice(), vec![0u8; 1 << 16].into_boxed_slice(), limits)
        .with_cas(true)
}

fn key(c: &mut Cursor<'_>) -> String {
    let n = c.u8();
    format!("k{}", n % 12)
}

fn value(c: &mut Cursor<'_>) -> String {
    let len = match c.u8() % 8 {
        // Sometimes over the store's value limit (3,047 bytes for 4 KiB
        // frames) but within one request: a refusal every protocol gives.
        0 => 3500,
        n => usize::from(n) * usize::from(c.u8() % 64),
    };
    let fill = char::from(b'a' + c.u8() % 26);
    // A multi-byte character now and then: UTF-8, not ASCII.
    (0..len).map(|i| if i % 97 == 3 { 'é' } else { fill }).collect()
}

fn ops(c: &mut Cursor<'_>) -> Vec<Op> {
    let mut ops = Vec::new();
    while !c.is_empty() && ops.len() < 200 {
        ops.push(match c.u8() % 9 {
            0..=2 => Op::Put(key(c), value(c)),
            3..=4 => Op::Get(key(c)),
            5 => Op::Delete(key(c)),
            6 => Op::PutExpiring(key(c), value(c), c.u8() % 4 + 1),
            _ => Op::Wait(c.u16() % 3000),
        });
    }
    ops
}

/// A protocol under test: how to write a request, and read its answer.
trait Wire {
    type P: Parser;
    fn encode(op: &Op, out: &mut Vec<u8>) -> bool;
    /// Parses one answer from the front of `bytes`: it and the bytes it took.
    fn answer(op: &Op, bytes: &[u8]) -> Option<(Answer, usize)>;
}

struct Frames;
struct Resp;
struct Memcache;

impl Wire for Frames {
    type P = FrameParser;

    fn encode(op: &Op, out: &mut Vec<u8>) -> bool {
        let (key, value, kind) = match op {
            Op::Put(k, v) => (k, v.as_str(), Kind::PutOrUpdate),
            Op::Get(k) => (k, "", Kind::Get),
            Op::Delete(k) => (k, "", Kind::Delete),
            Op::PutExpiring(..) | Op::Wait(_) => return false,
        };
        encode_request(out, key.as_bytes(), value.as_bytes(), kind).expect("a Vec has room");
        true
    }

    fn answer(op: &Op, bytes: &[u8]) -> Option<(Answer, usize)> {
        let mut parser = FrameParser::new(1 << 20);
        let mut buf = Vec::new();
        let (used, Parse::Complete(payload)) = parser.push(bytes, &mut buf).ok()? else { return None };
        let msg = KeyValueMessage::decode(payload).expect("the server encodes well");
        let ok = msg.status == 0;
        let answer = match op {
            Op::Put(..) => if ok { Answer::Stored } else { Answer::Refused },
            Op::Get(_) => Answer::Value(ok.then_some(msg.value)),
            Op::Delete(_) => Answer::Deleted(ok),
            _ => unreachable!("not sent"),
        };
        Some((answer, used))
    }
}

impl Wire for Resp {
    type P = kvio_core::resp::RequestParser;

    fn encode(op: &Op, out: &mut Vec<u8>) -> bool {
        let args: Vec<&[u8]> = match op {
            Op::Put(k, v) => vec![b"SET", k.as_bytes(), v.as_bytes()],
            Op::Get(k) => vec![b"GET", k.as_bytes()],
            Op::Delete(k) => vec![b"DEL", k.as_bytes()],
            Op::PutExpiring(k, v, s) => {
                let secs = s.to_string();
                out.extend(format!("*5\r\n$3\r\nSET\r\n${}\r\n", k.len()).as_bytes());
                out.extend(k.as_bytes());
                out.extend(format!("\r\n${}\r\n", v.len()).as_bytes());
                out.extend(v.as_bytes());
                out.extend(format!("\r\n$2\r\nEX\r\n${}\r\n{secs}\r\n", secs.len()).as_bytes());
                return true;
            }
            Op::Wait(_) => return false,
        };
        out.extend(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            out.extend(format!("${}\r\n", arg.len()).as_bytes());
            out.extend(arg);
            out.extend(b"\r\n");
        }
        true
    }

    fn answer(op: &Op, bytes: &[u8]) -> Option<(Answer, usize)> {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let line = &bytes[..line_end];
        let after = line_end + 2;
        let answer = match (op, line.first()?) {
            (Op::Put(..) | Op::PutExpiring(..), b'+') => (Answer::Stored, after),
            (Op::Put(..) | Op::PutExpiring(..), b'-') => (Answer::Refused, after),
            (Op::Get(_), b'$') if line == b"$-1" => (Answer::Value(None), after),
            (Op::Get(_), b'$') => {
                let len: usize = std::str::from_utf8(&line[1..]).ok()?.parse().ok()?;
                let value = bytes.get(after..after + len)?;
                bytes.get(after + len..after + len + 2)?;
                (Answer::Value(Some(String::from_utf8(value.to_vec()).ok()?)), after + len + 2)
            }
            (Op::Delete(_), b':') => (Answer::Deleted(line == b":1"), after),
            _ => panic!("RESP answered {op:?} with {:?}", String::from_utf8_lossy(line)),
        };
        Some(answer)
    }
}

impl Wire for Memcache {
    type P = kvio_core::memcache::RequestParser;

    fn encode(op: &Op, out: &mut Vec<u8>) -> bool {
        match op {
            Op::Put(k, v) => out.extend(format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()).as_bytes()),
            Op::PutExpiring(k, v, s) => out.extend(format!("set {k} 0 {s} {}\r\n{v}\r\n", v.len()).as_bytes()),
            Op::Get(k) => out.extend(format!("get {k}\r\n").as_bytes()),
            Op::Delete(k) => out.extend(format!("delete {k}\r\n").as_bytes()),
            Op::Wait(_) => return false,
        }
        true
    }

    fn answer(op: &Op, bytes: &[u8]) -> Option<(Answer, usize)> {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let line = &bytes[..line_end];
        let after = line_end + 2;
        let answer = match op {
            Op::Put(..) | Op::PutExpiring(..) => match line {
                b"STORED" => (Answer::Stored, after),
                _ if line.starts_with(b"SERVER_ERROR") || line.starts_with(b"CLIENT_ERROR") => (Answer::Refused, after),
                _ => panic!("memcached answered a set with {:?}", String::from_utf8_lossy(line)),
            },
            Op::Get(_) if line == b"END" => (Answer::Value(None), after),
            Op::Get(_) => {
                // VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n
                let len: usize = std::str::from_utf8(line.rsplit(|&b| b == b' ').next()?).ok()?.parse().ok()?;
                let value = bytes.get(after..after + len)?;
                let end = after + len + 2;
                (bytes.get(end..end + 5)? == b"END\r\n").then_some(())?;
                (Answer::Value(Some(String::from_utf8(value.to_vec()).ok()?)), end + 5)
            }
            Op::Delete(_) => (Answer::Deleted(line == b"DELETED"), after),
            Op::Wait(_) => unreachable!("not sent"),
        };
        Some(answer)
    }
}

/// Sends `ops` over protocol `W` to a fresh store, in `chunks`; the answers
/// (one per op sent, `None` for ops the protocol does not have) and the
/// store left.
fn run<W: Wire>(ops: &[Op], mut chunks: Chunks, parser: W::P) -> (Vec<Option<Answer>>, Protocols<Boxed>)
where
    Protocols<Boxed>: Handler<W::P>,
{
    let mut handler = Protocols::new(store());
    let mut conn = Connection::with_parser(parser, 1 << 20);
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut answers = Vec::new();
    let mut now: u64 = 1_000_000;
    for op in ops {
        if let Op::Wait(ms) = op {
            now += u64::from(*ms);
            answers.push(None);
            continue;
        }
        let mut wire = Vec::new();
        if !W::encode(op, &mut wire) {
            answers.push(None);
            continue;
        }
        let mut start = 0;
        while start < wire.len() {
            let end = chunks.next_end(start, wire.len());
            let r = conn.receive(&wire[start..end], now, &mut buf, &mut handler, &mut out);
            assert_eq!(r.outcome, Outcome::NeedMore, "{op:?}: a well-formed request");
            assert_eq!(r.consumed, end - start);
            start = end;
        }
        let (answer, used) = W::answer(op, &out).unwrap_or_else(|| panic!("no whole answer to {op:?}"));
        assert_eq!(used, out.len(), "{op:?}: one answer, whole");
        out.clear();
        answers.push(Some(answer));
    }
    (answers, handler)
}

/// The target: `[n: u8][n+1 chunk sizes][ops...]`.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let n = usize::from(c.u8() % 8) + 1;
    let sizes = c.bytes(n).to_vec();
    let ops = ops(&mut c);
    let (frames, mut frames_store) = run::<Frames>(&ops, Chunks::new(&sizes), FrameParser::new(MAX_FRAME_LEN));
    let resp_parser = kvio_core::resp::RequestParser::new(MAX_FRAME_LEN as usize);
    let (resp, mut resp_store) = run::<Resp>(&ops, Chunks::new(&sizes), resp_parser);
    let max_value = StoreLimits::for_frame(MAX_FRAME_LEN, 0, 0).max_value_len;
    let mc_parser = kvio_core::memcache::RequestParser::new(max_value);
    let (mc, mut mc_store) = run::<Memcache>(&ops, Chunks::new(&sizes), mc_parser);
    // Before the first expiring put, all three agree on everything; after
    // it, kvio frames (which cannot set one) part ways, and RESP and memcached go on agreeing.
    let first_expiring = ops.iter().position(|op| matches!(op, Op::PutExpiring(..))).unwrap_or(ops.len());
    for (i, op) in ops.iter().enumerate() {
        if i < first_expiring && frames[i].is_some() {
            assert_eq!(frames[i], resp[i], "op {i} {op:?}: kvio frames and RESP");
        }
        assert_eq!(resp[i], mc[i], "op {i} {op:?}: RESP and memcached");
    }
    // The stores left: the same values under every key (read without time passing).
    let now = 1_000_000 + ops.iter().map(|op| if let Op::Wait(ms) = op { u64::from(*ms) } else { 0 }).sum::<u64>();
    let read = |store: &mut Protocols<Boxed>, k: &str| {
        use kvio_core::KeyValueStore;
        store.store().get_entry(k.as_bytes(), now, |e| e.map(|e| e.value.to_vec()))
    };
    for k in (0..12).map(|i| format!("k{i}")) {
        let (r, m) = (read(&mut resp_store, &k), read(&mut mc_store, &k));
        assert_eq!(r, m, "{k}: the RESP and memcached stores");
        if first_expiring == ops.len() {
            assert_eq!(read(&mut frames_store, &k), r, "{k}: the kvio-frames and RESP stores");
        }
    }
}
