//! The honest clients, each checking every answer against a model, and the
//! fresh-client probe.
//!
//! An honest client owns a key space (`h<id>/<n>`) and also reads and
//! writes a few keys shared by all. It pipelines batches of puts and gets
//! and checks, in order:
//!
//! - a put's answer is `{kind 3, status Ok}` with no key;
//! - a put over the store's limits (key or value one byte too long) is
//!   `{kind 3, status NotOk}`, and a later get still returns the old value;
//! - a get of an own key returns the value of this client's last put of it
//!   (or a miss if there was none, or a delete came after it);
//! - a delete of an own key is `{kind 4, status Ok}` if the model holds the
//!   key and `{kind 4, status NotOk}` if not, with no key and no value;
//! - a get of a shared key returns a whole value some client put under that
//!   key, and is a hit once any put of it was acknowledged before the get
//!   was sent.
//!
//! When the server closes a connection with requests unanswered (the
//! memory cap picked it, or an idle timeout on `blocking`), those puts may
//! or may not have happened: the model then allows either value until the
//! next acknowledged put of the key.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use kvio_client::Reply as ClientReply;
use kvio_proto::KeyValueMessage;

use crate::Ctx;
use crate::tally::Tally;
use crate::wire::{
    CLIENT_MEMORY, Conn, DELETE, GET_RESPONSE, NOT_OK, OK, PUT, Reply, Rng, get_frame, msg, msg_frame, put_frame,
};

/// Keys each honest client owns.
const OWN_KEYS: usize = 200;
/// Keys every honest client shares.
pub const SHARED_KEYS: usize = 16;
/// Most requests in one pipelined batch.
const MAX_BATCH: usize = 32;
/// Unread response bytes a client lets build up before it reads: well
/// under the loopback socket buffers, so the client never blocks writing
/// while the server blocks writing to it.
const RESPONSE_WINDOW: usize = 32 * 1024;
/// Batches a client sends in all (the run's time ends it first).
const MAX_BATCHES: u64 = 10_000_000;

/// Which shared keys have had a put acknowledged.
#[derive(Debug, Default)]
pub struct SharedKeys {
    acked: [AtomicBool; SHARED_KEYS],
}

fn shared_key(i: usize) -> String {
    format!("shared/{i}")
}

/// Deterministic filler, so a value can be rebuilt from a few numbers.
fn filler(out: &mut String, seed: u64, len: usize) {
    out.extend((0..len as u64).map(|i| char::from(b'a' + ((seed.wrapping_mul(31).wrapping_add(i)) % 26) as u8)));
}

/// The value client `client` puts as `version` of own key `k`.
fn own_value(client: usize, k: usize, version: u32, len: usize) -> String {
    let mut v = format!("{client}/{k}/{version}/");
    filler(&mut v, u64::from(version), len);
    v
}

/// A value of a shared key: self-describing, so any reader can check it whole.
fn shared_value(i: usize, writer: usize, seq: u64, len: usize) -> String {
    let mut v = format!("s/{i}/{writer}/{seq}/{len}/");
    filler(&mut v, seq ^ writer as u64, len);
    v
}

fn shared_value_ok(i: usize, value: &str) -> bool {
    let mut parts = value.splitn(6, '/');
    let (Some("s"), Some(idx), Some(writer), Some(seq), Some(len), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(idx), Ok(writer), Ok(seq), Ok(len)) =
        (idx.parse::<usize>(), writer.parse::<usize>(), seq.parse::<u64>(), len.parse::<usize>())
    else {
        return false;
    };
    idx == i && rest.len() == len && value == shared_value(i, writer, seq, len)
}

/// One own key's possible states: `None` absent, `Some((version, len))`.
type State = Vec<Option<(u32, usize)>>;
/// A state that admits any value (a key whose put is lost in a stall).
const ANY: Option<(u32, usize)> = Some((u32::MAX, usize::MAX));

#[derive(Debug)]
enum Request {
    PutOwn {
        k: usize,
        version: u32,
        len: usize,
        /// `Some(reason)`: over a limit, to be refused (with that reason or none).
        refused: Option<&'static str>,
        /// The key's state just before this put (kept for a cut batch).
        prior: State,
    },
    GetOwn {
        k: usize,
        allowed: State,
    },
    DeleteOwn {
        k: usize,
        /// The key's possible states before the delete.
        prior: State,
        tainted: bool,
    },
    PutShared {
        i: usize,
    },
    GetShared {
        i: usize,
        must_hit: bool,
    },
    /// A get of a key over the key limit: a miss.
    GetOverlong {
        key: String,
    },
}

/// One honest client until the run stops.
pub fn run(ctx: &Ctx, id: usize, mut rng: Rng) {
    let t = &ctx.tally;
    let mut model: Vec<State> = vec![vec![None]; OWN_KEYS];
    // Keys with a put lost in a stalled connection: no longer checked.
    let mut tainted = [false; OWN_KEYS];
    let mut version = 0u32;
    let mut seq = 0u64;
    let mut batches = 0u64;
    let overlong_key = "k".repeat(ctx.key_limit + 1);
    while !t.stopping() && batches < MAX_BATCHES {
        let mut conn = match Conn::connect(ctx.addr, ctx.io_timeout, ctx.max_frame_len) {
            Ok(c) => c,
            Err(e) => {
                if !ctx.stop_sent() {
                    t.fail(format!("honest client {id}: connect: {e}"));
                }
                t.pause(Duration::from_millis(100));
                continue;
            }
        };
        let session = rng.range(ctx.profile.session_batches.0, ctx.profile.session_batches.1);
        for _ in 0..session {
            if t.stopping() {
                break;
            }
            batches += 1;
            // Build the batch against the state it will leave.
            let n = rng.range(1, MAX_BATCH);
            let mut reqs = Vec::with_capacity(n);
            let mut frames = Vec::with_capacity(n);
            let mut huge_sent = false;
            for _ in 0..n {
                let roll = rng.below(1000);
                let (req, bytes) = if roll < 400 {
                    let k = rng.below(OWN_KEYS as u64) as usize;
                    version += 1;
                    let len = if rng.chance(10) { rng.range(0, 64 * 1024) } else { rng.range(0, 2048) };
                    let prior = std::mem::replace(&mut model[k], vec![Some((version, len))]);
                    let v = own_value(id, k, version, len);
                    (Request::PutOwn { k, version, len, refused: None, prior }, put_frame(&format!("h{id}/{k}"), &v))
                } else if roll < 450 {
                    let k = rng.below(OWN_KEYS as u64) as usize;
                    let prior = std::mem::replace(&mut model[k], vec![None]);
                    let frame = msg_frame(&msg(DELETE, &format!("h{id}/{k}"), ""));
                    (Request::DeleteOwn { k, prior, tainted: tainted[k] }, frame)
                } else if roll < 750 {
                    let k = rng.below(OWN_KEYS as u64) as usize;
                    let allowed = if tainted[k] { vec![ANY] } else { model[k].clone() };
                    (Request::GetOwn { k, allowed }, get_frame(&format!("h{id}/{k}")))
                } else if roll < 850 {
                    let i = rng.below(SHARED_KEYS as u64) as usize;
                    let must_hit = ctx.shared.acked[i].load(Relaxed);
                    (Request::GetShared { i, must_hit }, get_frame(&shared_key(i)))
                } else if roll < 930 {
                    let i = rng.below(SHARED_KEYS as u64) as usize;
                    seq += 1;
                    let v = shared_value(i, id, seq, rng.range(0, 512));
                    (Request::PutShared { i }, put_frame(&shared_key(i), &v))
                } else if roll < 960 {
                    (Request::GetOverlong { key: overlong_key.clone() }, get_frame(&overlong_key))
                } else if roll < 998 || huge_sent {
                    // A key one byte over the limit: refused, nothing stored.
                    let k = rng.below(OWN_KEYS as u64) as usize;
                    version += 1;
                    let mut key = format!("h{id}/{k}/");
                    key.extend(std::iter::repeat_n('k', (ctx.key_limit + 1).saturating_sub(key.len())));
                    (
                        Request::PutOwn { k, version, len: 0, refused: Some("key too long"), prior: State::new() },
                        put_frame(&key, "v"),
                    )
                } else {
                    // A value one byte over the limit on an own key: refused, the old value kept.
                    huge_sent = true;
                    let k = rng.below(OWN_KEYS as u64) as usize;
                    version += 1;
                    let v = "v".repeat(ctx.value_limit + 1);
                    (
                        Request::PutOwn {
                            k,
                            version,
                            len: v.len(),
                            refused: Some("value too long"),
                            prior: State::new(),
                        },
                        put_frame(&format!("h{id}/{k}"), &v),
                    )
                };
                reqs.push(req);
                frames.push(bytes);
            }
            let cut = exchange(ctx, id, &mut conn, &reqs, &frames).err();
            let answered = cut.as_ref().map_or(reqs.len(), |c| c.answered);
            for req in &reqs[..answered] {
                if let Request::PutShared { i } = req {
                    ctx.shared.acked[*i].store(true, Relaxed);
                }
            }
            let Some(cut) = cut else { continue };
            after_cut(&reqs, cut, &mut model, &mut tainted);
            break;
        }
    }
}

/// The connection ended with `reqs[cut.answered..]` unanswered: each own
/// key's state becomes what the answered puts left (or, if none of its
/// puts was answered, what it was before the batch), widened with every
/// unanswered put, which may or may not have happened. After a stall the
/// unanswered puts are still in the server's hands and may land at any
/// later time: their keys are no longer checked.
fn after_cut(reqs: &[Request], cut: Cut, model: &mut [State], tainted: &mut [bool]) {
    let mut rebuilt: Vec<Option<State>> = vec![None; model.len()];
    for (idx, req) in reqs.iter().enumerate() {
        let (k, after, prior) = match req {
            Request::PutOwn { k, version, len, refused: None, prior } => (k, Some((*version, *len)), prior),
            Request::DeleteOwn { k, prior, .. } => (k, None, prior),
            _ => continue,
        };
        let version = after;
        if idx < cut.answered {
            rebuilt[*k] = Some(vec![version]);
        } else if cut.stalled {
            tainted[*k] = true;
        } else {
            // The first put of `k` not answered, with none answered before
            // it: `prior` is the state before the batch.
            rebuilt[*k].get_or_insert_with(|| prior.clone()).push(version);
        }
    }
    for (k, state) in rebuilt.into_iter().enumerate() {
        if let Some(state) = state {
            model[k] = state;
        }
    }
}

/// Response bytes a request's answer takes, roughly (for the window).
fn answer_size(ctx: &Ctx, req: &Request) -> usize {
    match req {
        Request::GetOwn { allowed, .. } => 64 + allowed.iter().flatten().map(|(_, len)| len + 32).max().unwrap_or(0),
        Request::GetShared { .. } => 600,
        Request::GetOverlong { .. } => ctx.key_limit + 32,
        Request::PutOwn { .. } | Request::PutShared { .. } | Request::DeleteOwn { .. } => 16,
    }
}

/// How a batch ended early.
#[derive(Debug)]
struct Cut {
    /// Answers read before the end.
    answered: usize,
    /// No answer within the timeout while the server was up: what was
    /// sent may still be applied later.
    stalled: bool,
}

/// Sends `frames` and checks the answers, reading as it goes so that
/// unread answers stay within [`RESPONSE_WINDOW`].
fn exchange(ctx: &Ctx, id: usize, conn: &mut Conn, reqs: &[Request], frames: &[Vec<u8>]) -> Result<(), Cut> {
    let mut answered = 0;
    let mut owed = 0usize;
    let mut sizes = Vec::with_capacity(reqs.len());
    for (i, bytes) in frames.iter().enumerate() {
        let size = answer_size(ctx, &reqs[i]);
        sizes.push(size);
        // A big request goes alone, so the server reads it with nothing owed.
        let big = bytes.len() > RESPONSE_WINDOW;
        while answered < i && (owed + size > RESPONSE_WINDOW || big) {
            owed -= sizes[answered];
            next(ctx, id, conn, reqs, &mut answered)?;
        }
        if let Err(e) = conn.send(bytes) {
            // The server closed (a reset shows here): the answers it sent may still be readable.
            while answered < i {
                next(ctx, id, conn, reqs, &mut answered)?;
            }
            ended(ctx, id, reqs.len() - answered, Some(&format!("send: {e}")));
            return Err(Cut { answered, stalled: false });
        }
        owed += size;
    }
    while answered < reqs.len() {
        next(ctx, id, conn, reqs, &mut answered)?;
    }
    Ok(())
}

/// Reads and checks the answer to `reqs[*answered]`, and counts it.
fn next(ctx: &Ctx, id: usize, conn: &mut Conn, reqs: &[Request], answered: &mut usize) -> Result<(), Cut> {
    match check_next(ctx, id, conn, &reqs[*answered]) {
        Next::Checked => {
            *answered += 1;
            Ok(())
        }
        Next::Ended(why) => {
            ended(ctx, id, reqs.len() - *answered, Some(&why));
            Err(Cut { answered: *answered, stalled: false })
        }
        Next::Evicted => {
            ended(ctx, id, reqs.len() - *answered, None);
            Err(Cut { answered: *answered, stalled: false })
        }
        Next::Stalled => Err(Cut { answered: *answered, stalled: true }),
    }
}

/// A connection ended early: counted (not a wrong answer). `why: None`:
/// closed by the memory cap, with its error frame, which is no failure.
fn ended(ctx: &Ctx, id: usize, unanswered: usize, why: Option<&str>) {
    let t = &ctx.tally;
    Tally::add(&t.honest_disconnects, 1);
    Tally::add(&t.honest_cut, unanswered as u64);
    if let Some(why) = why
        && !ctx.stop_sent()
        && ctx.profile.report_disconnects
    {
        t.fail(format!("honest client {id}: connection ended with {unanswered} requests unanswered: {why}"));
    }
}

/// What reading the next answer gave.
enum Next {
    /// Read and checked (right or wrong, counted).
    Checked,
    /// The server closed the connection first.
    Ended(String),
    /// No answer within the timeout (counted as a stall).
    Stalled,
    /// The memory cap's error frame came: the close follows.
    Evicted,
}

/// Reads and checks the answer to `req`.
fn check_next(ctx: &Ctx, id: usize, conn: &mut Conn, req: &Request) -> Next {
    let t = &ctx.tally;
    let m = match conn.read_reply() {
        Reply::Msg(m) => m,
        Reply::Closed => return Next::Ended("closed by the server".into()),
        Reply::TimedOut => {
            if !ctx.stop_sent() {
                Tally::add(&t.honest_stalls, 1);
                t.fail(format!("honest client {id}: no answer within {:?} to {req:?}", ctx.io_timeout));
            }
            return Next::Stalled;
        }
        Reply::Violation(v) => {
            t.wrong(format!("honest client {id}: {v}"));
            return Next::Ended(v);
        }
    };
    if m.kind == 0 && m.status == NOT_OK && m.key.is_empty() && m.value == CLIENT_MEMORY {
        // Closed by the memory cap: an error frame, then the close.
        t.checked();
        Tally::add(&t.memory_evictions, 1);
        return Next::Evicted;
    }
    t.checked();
    let wrong = match req {
        Request::PutOwn { refused: None, .. } => {
            (m.kind != PUT || m.status != OK || !m.key.is_empty()).then(|| "want {kind 3, status 0}".to_owned())
        }
        Request::PutOwn { refused: Some(reason), .. } => {
            // Clients may ignore a refusal's reason; the server gives none or the documented one.
            (m.kind != PUT || m.status != NOT_OK || !m.key.is_empty() || !(m.value.is_empty() || m.value == *reason))
                .then(|| format!("want {{kind 3, status 1, value {reason:?} or none}}"))
        }
        Request::PutShared { .. } => {
            (m.kind != PUT || m.status != OK || !m.key.is_empty()).then(|| "want {kind 3, status 0}".to_owned())
        }
        Request::GetOwn { k, allowed } => {
            let key = format!("h{id}/{k}");
            if m.kind != GET_RESPONSE || m.key != key {
                Some(format!("want a get response for {key:?}"))
            } else if allowed.contains(&ANY) {
                None
            } else if m.status == NOT_OK {
                (!m.value.is_empty() || !allowed.contains(&None)).then(|| format!("a miss; the model says {allowed:?}"))
            } else if m.status == OK {
                let right = allowed.iter().flatten().any(|&(v, len)| m.value == own_value(id, *k, v, len));
                (!right).then(|| format!("value {:?}...; the model says {allowed:?}", head(&m.value)))
            } else {
                Some("bad status".to_owned())
            }
        }
        Request::DeleteOwn { prior, tainted, .. } => {
            let may_hit = *tainted || prior.iter().any(Option::is_some);
            let may_miss = *tainted || prior.contains(&None);
            if m.kind != DELETE || !m.key.is_empty() || !m.value.is_empty() {
                Some("want {kind 4} with no key and no value".to_owned())
            } else if m.status == OK {
                (!may_hit).then(|| format!("deleted; the model says it was absent: {prior:?}"))
            } else if m.status == NOT_OK {
                (!may_miss).then(|| format!("absent; the model says it was there: {prior:?}"))
            } else {
                Some("bad status".to_owned())
            }
        }
        Request::GetShared { i, must_hit } => {
            let key = shared_key(*i);
            if m.kind != GET_RESPONSE || m.key != key {
                Some(format!("want a get response for {key:?}"))
            } else if m.status == NOT_OK {
                (*must_hit || !m.value.is_empty()).then(|| "a miss after an acknowledged put".to_owned())
            } else {
                (m.status != OK || !shared_value_ok(*i, &m.value))
                    .then(|| format!("not a value put under {key:?}: {:?}", head(&m.value)))
            }
        }
        Request::GetOverlong { key } => {
            (m.kind != GET_RESPONSE || m.key != *key || m.status != NOT_OK || !m.value.is_empty())
                .then(|| "want a miss for a key over the limit".to_owned())
        }
    };
    if let Some(why) = wrong {
        t.wrong(format!("honest client {id}: {why}; got {}", show(&m)));
    }
    Next::Checked
}

fn head(s: &str) -> &str {
    let mut end = s.len().min(60);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A response in words, its value cut short.
pub fn show(m: &KeyValueMessage) -> String {
    format!(
        "{{kind {}, status {}, key {:?}, value {:?} ({} bytes)}}",
        m.kind,
        m.status,
        head(&m.key),
        head(&m.value),
        m.value.len()
    )
}

/// Every second or so: a fresh connection puts a key and gets it back;
/// the time from connect to the get's answer must be within the bound.
pub fn probe(ctx: &Ctx, mut rng: Rng) {
    let t = &ctx.tally;
    let mut n = 0u64;
    while t.pause(Duration::from_millis(1000)) {
        n += 1;
        let key = format!("probe/{}", n % 16);
        let value = format!("p{}", rng.next());
        let start = Instant::now();
        // The probe is what any user's program does: kvio-client's pipeline.
        let outcome = (|| -> Result<(), String> {
            let mut c = kvio_client::Client::connect(ctx.addr, ctx.probe_bound).map_err(|e| e.to_string())?;
            let replies = c.pipeline().put(&key, &value).get(&key).run().map_err(|e| e.to_string())?;
            t.checked();
            t.checked();
            if replies != [ClientReply::Stored, ClientReply::Found(value.clone())] {
                t.wrong(format!("probe {n}: put then get of {key:?} = {value:?} answered {replies:?}"));
                return Err("wrong answer".into());
            }
            Ok(())
        })();
        let took = start.elapsed();
        if ctx.stop_sent() {
            break;
        }
        Tally::add(&t.probes, 1);
        t.probe_worst_us.fetch_max(took.as_micros() as u64, Relaxed);
        match outcome {
            Ok(()) if took <= ctx.probe_bound => {}
            Ok(()) => {
                Tally::add(&t.probe_failures, 1);
                t.fail(format!("probe {n}: answered in {took:?}, over the bound {:?}", ctx.probe_bound));
            }
            Err(e) => {
                Tally::add(&t.probe_failures, 1);
                t.fail(format!("probe {n}: {e} after {took:?}"));
            }
        }
    }
}

/// Puts `key` = `value` on a fresh connection before the run (setup).
pub fn setup_put(ctx: &Ctx, key: &str, value: &str) -> Result<(), String> {
    let mut c =
        kvio_client::Client::connect(ctx.addr, ctx.io_timeout).map_err(|e| format!("setup put {key:?}: {e}"))?;
    c.put(key, value).map_err(|e| format!("setup put {key:?}: {e}"))
}

pub fn shared_keys() -> Arc<SharedKeys> {
    Arc::default()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_shared_value_is_recognised_whole_and_only_under_its_key() {
        let v = shared_value(3, 1, 42, 100);
        assert!(shared_value_ok(3, &v));
        assert!(!shared_value_ok(4, &v));
        assert!(!shared_value_ok(3, &v[..v.len() - 1]));
        let mut altered = v.clone();
        altered.replace_range(v.len() - 1.., "!");
        assert!(!shared_value_ok(3, &altered));
        assert!(!shared_value_ok(3, ""));
    }

    #[test]
    fn own_values_differ_by_version_and_length() {
        assert_ne!(own_value(0, 1, 2, 10), own_value(0, 1, 3, 10));
        assert_ne!(own_value(0, 1, 2, 10), own_value(0, 1, 2, 11));
        assert_eq!(own_value(0, 1, 2, 10), own_value(0, 1, 2, 10));
    }

    fn put(k: usize, version: u32, prior: State) -> Request {
        Request::PutOwn { k, version, len: 1, refused: None, prior }
    }

    #[test]
    fn a_cut_batch_allows_the_state_before_it_and_every_unanswered_put() {
        // Key 1: v5 before; v6 answered, v7 and v8 not. Key 2: v3 before; v9 not answered.
        // Key 3: v4 before, a refused put only.
        let reqs = [
            put(1, 6, vec![Some((5, 1))]),
            put(2, 9, vec![Some((3, 1))]),
            put(1, 7, vec![Some((6, 1))]),
            Request::PutOwn { k: 3, version: 10, len: 1, refused: Some("key too long"), prior: State::new() },
            put(1, 8, vec![Some((7, 1))]),
        ];
        let mut model = vec![vec![None], vec![Some((8, 1))], vec![Some((9, 1))], vec![Some((4, 1))]];
        let mut tainted = [false; 4];
        after_cut(&reqs, Cut { answered: 1, stalled: false }, &mut model, &mut tainted);
        assert_eq!(model[1], vec![Some((6, 1)), Some((7, 1)), Some((8, 1))]);
        assert_eq!(model[2], vec![Some((3, 1)), Some((9, 1))]);
        assert_eq!(model[3], vec![Some((4, 1))]);
        assert_eq!(tainted, [false; 4]);
    }

    #[test]
    fn a_stalled_batch_stops_checking_the_keys_it_left_in_flight() {
        let reqs = [put(1, 6, vec![None]), put(2, 7, vec![None])];
        let mut model = vec![vec![None], vec![Some((6, 1))], vec![Some((7, 1))]];
        let mut tainted = [false; 3];
        after_cut(&reqs, Cut { answered: 1, stalled: true }, &mut model, &mut tainted);
        assert_eq!(model[1], vec![Some((6, 1))]);
        assert_eq!(tainted, [false, false, true]);
    }
}
