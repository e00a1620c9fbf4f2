//! The memcached command table, text and meta, over any
//! [`KeyValueStore`]: what kvio answers to each command it serves.
//! docs/protocol.md ("memcached") lists them and how they differ from
//! memcached. Replies are composed straight into the output; a value is
//! copied once, from the store to the output.
//!
//! What the host knows about itself (`stats`) comes through [`Stats`].

use crate::buffer::{Output, OutputFull};
use crate::decimal::Decimal;
use crate::protocol::{Handler, Next};
use crate::store::{Condition, Entry, Expiry, KeyValueStore, Millis, PutOptions, StoreError};

use super::reply::{client_error, line, pieces, server_error};
use super::{Data, MAX_KEY_LEN, McError, Request, RequestParser, Tokens, parse_u64};

/// The version kvio answers `version` with: memcached's, whose text and
/// meta commands (those kvio has) behave as kvio's do.
pub const MEMCACHED_VERSION: &str = "1.6.21";
/// memcached's bound between a relative expiry (seconds from now) and an
/// absolute one (a Unix time): 30 days.
pub const RELATIVE_EXPIRY_MAX: i64 = 60 * 60 * 24 * 30;

/// The longest `stats` reply (the rest is cut).
pub const STATS_MAX: usize = 4096;

/// What a host tells `stats` about itself.
pub trait Stats {
    /// Writes `STAT <name> <value>\r\n` lines by calling `write` with each
    /// piece (`entries`: the store's entries now); at most [`STATS_MAX`]
    /// bytes are kept.
    fn stats(&mut self, entries: usize, write: &mut dyn FnMut(&[u8]));
}

impl<T: Stats + ?Sized> Stats for &mut T {
    fn stats(&mut self, entries: usize, write: &mut dyn FnMut(&[u8])) {
        (**self).stats(entries, write)
    }
}

impl Stats for crate::resp::NoInfo {
    fn stats(&mut self, entries: usize, write: &mut dyn FnMut(&[u8])) {
        NoStats.stats(entries, write)
    }
}

/// A host that tells nothing but the item count.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStats;

impl Stats for NoStats {
    fn stats(&mut self, entries: usize, write: &mut dyn FnMut(&[u8])) {
        write(b"STAT curr_items ");
        write(Decimal::new(entries as u64).as_bytes());
        write(b"\r\n");
    }
}

/// Answers memcached requests against a store `S`; `T` tells `stats` about the host.
#[derive(Debug)]
pub struct McHandler<S, T = NoStats> {
    store: S,
    stats: T,
}

impl<S: KeyValueStore> McHandler<S, NoStats> {
    /// A handler over `store`.
    pub const fn new(store: S) -> Self {
        McHandler { store, stats: NoStats }
    }
}

impl<S: KeyValueStore, T: Stats> McHandler<S, T> {
    /// A handler over `store` whose `stats` the host writes.
    pub const fn with_stats(store: S, stats: T) -> Self {
        McHandler { store, stats }
    }

    /// The store.
    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }
}

const BAD_FORMAT: &[u8] = b"bad command line format";
/// A write refused because the host cannot write its journal (disk full, an IO error).
const NOT_PERSISTED: &[u8] = b"not persisted: the server cannot write its journal";
const TOO_LARGE: &[u8] = b"object too large for cache";
/// What a store built without `entry-fields` answers: it keeps no flags, expiry or cas.
const UNSUPPORTED: &[u8] = b"this build keeps no flags, expiry or cas (kvio-core without entry-fields)";

/// memcached's key rule: 1 to 250 bytes, no control character or space.
fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

/// A signed decimal (memcached's `safe_strtol`).
fn parse_i64(token: &[u8]) -> Option<i64> {
    let (negative, digits) = match token.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, token),
    };
    let n = i64::try_from(parse_u64(digits)?).ok()?;
    Some(if negative { -n } else { n })
}

/// An `exptime` (text protocol) or `T` token (meta): 0 never; negative,
/// already expired; up to 30 days, seconds from now; beyond, a Unix time.
fn expiry(exptime: i64, now: Millis) -> Expiry {
    match exptime {
        0 => Expiry::Never,
        n if n < 0 => Expiry::At(now),
        n if n <= RELATIVE_EXPIRY_MAX => Expiry::At(now.saturating_add(n as u64 * 1000)),
        n => Expiry::At((n as u64).saturating_mul(1000)),
    }
}

/// Seconds an entry has left, rounded up (`-1`: no expiry), as `t` and `mg` report it.
fn ttl_seconds(entry: &Entry<'_>, now: Millis) -> Decimal2 {
    match entry.expires {
        None => Decimal2::Negative(1),
        Some(at) => Decimal2::Positive(at.saturating_sub(now).div_ceil(1000)),
    }
}

/// A number that may be -1.
enum Decimal2 {
    Positive(u64),
    Negative(u64),
}

impl Decimal2 {
    fn write(&self, write: &mut dyn FnMut(&[u8])) {
        match self {
            Decimal2::Positive(n) => write(Decimal::new(*n).as_bytes()),
            Decimal2::Negative(n) => {
                write(b"-");
                write(Decimal::new(*n).as_bytes());
            }
        }
    }
}

/// Writes pieces into a reply whose length was measured first.
struct Measured<'o, O: Output + ?Sized> {
    out: &'o mut O,
}

impl<O: Output + ?Sized> Measured<'_, O> {
    /// Calls `build` once to measure and once to write, as one reply.
    fn reply(&mut self, mut build: impl FnMut(&mut dyn FnMut(&[u8]))) -> Result<(), OutputFull> {
        let mut len = 0;
        build(&mut |piece| len += piece.len());
        let dst = self.out.append(len)?;
        let mut at = 0;
        build(&mut |piece| {
            dst[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        });
        Ok(())
    }
}

impl<S: KeyValueStore, T: Stats> Handler<RequestParser> for McHandler<S, T> {
    fn request<O: Output + ?Sized>(&mut self, request: Request<'_>, now: u64, out: &mut O) -> Result<Next, OutputFull> {
        let mut tokens = request.tokens();
        let Some(name) = tokens.next() else {
            line(out, b"ERROR")?;
            return Ok(Next::Continue);
        };
        match name {
            b"get" | b"gets" => self.get(tokens, None, name == b"gets", now, out)?,
            b"gat" | b"gats" => match tokens.next().and_then(parse_i64) {
                Some(exptime) => self.get(tokens, Some(expiry(exptime, now)), name == b"gats", now, out)?,
                None => client_error(out, BAD_FORMAT)?,
            },
            b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => self.storage(name, &request, now, out)?,
            b"delete" => self.delete(tokens, now, out)?,
            b"incr" | b"decr" => self.incr(name == b"decr", tokens, now, out)?,
            b"touch" => self.touch(tokens, now, out)?,
            b"mg" => self.meta_get(tokens, now, out)?,
            b"ms" => self.meta_set(&request, now, out)?,
            b"md" => self.meta_delete(tokens, now, out)?,
            b"ma" => self.meta_arithmetic(tokens, now, out)?,
            b"mn" => line(out, b"MN")?,
            b"version" => pieces(out, &[b"VERSION ", MEMCACHED_VERSION.as_bytes(), b"\r\n"])?,
            b"verbosity" => {
                if tokens.last() != Some(b"noreply") {
                    line(out, b"OK")?;
                }
            }
            b"stats" => {
                if tokens.next().is_none() {
                    self.stats(out)?;
                } else {
                    // stats items, slabs, settings...: nothing kvio keeps.
                    line(out, b"END")?;
                }
            }
            b"quit" => return Ok(Next::Close),
            _ => line(out, b"ERROR")?,
        }
        Ok(Next::Continue)
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: McError, out: &mut O) -> Result<(), OutputFull> {
        client_error(out, error.as_str().as_bytes())
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        server_error(out, b"client memory limit reached (--max-client-memory); closing")
    }
}

impl<S: KeyValueStore, T: Stats> McHandler<S, T> {
    /// `stats`: the host's lines, then `END`, composed on the stack and
    /// sent whole (no heap, one pass). Out of line: its buffer stays out
    /// of the request path's stack frame.
    #[inline(never)]
    fn stats<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        let entries = self.store.entries();
        let mut text = [0u8; STATS_MAX];
        let mut len = 0;
        self.stats.stats(entries, &mut |piece| {
            let n = piece.len().min(STATS_MAX - len);
            text[len..len + n].copy_from_slice(&piece[..n]);
            len += n;
        });
        pieces(out, &[&text[..len], b"END\r\n"])
    }

    /// `get|gets <key>*` and `gat|gats <exptime> <key>*`: a `VALUE` per hit, then `END`.
    fn get<O: Output + ?Sized>(
        &mut self,
        keys: Tokens<'_>,
        touch: Option<Expiry>,
        cas: bool,
        now: Millis,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        if keys.clone().next().is_none() || keys.clone().any(|k| !valid_key(k)) {
            return client_error(out, BAD_FORMAT);
        }
        for key in keys {
            if let Some(expiry) = touch {
                self.store.touch(key, expiry, now);
            }
            self.store.get_entry(key, now, |entry| {
                let Some(entry) = entry else { return Ok(()) };
                Measured { out: &mut *out }.reply(|write| {
                    write(b"VALUE ");
                    write(key);
                    write(b" ");
                    write(Decimal::new(u64::from(entry.flags)).as_bytes());
                    write(b" ");
                    write(Decimal::new(entry.value.len() as u64).as_bytes());
                    if cas {
                        write(b" ");
                        write(Decimal::new(entry.cas).as_bytes());
                    }
                    write(b"\r\n");
                    write(entry.value);
                    write(b"\r\n");
                })
            })?;
        }
        line(out, b"END")
    }

    /// `set|add|replace|append|prepend <key> <flags> <exptime> <bytes> [noreply]`
    /// and `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]`.
    fn storage<O: Output + ?Sized>(
        &mut self,
        name: &[u8],
        request: &Request<'_>,
        now: Millis,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        let mut tokens = request.tokens().skip(1);
        let key = tokens.next().unwrap_or_default();
        let flags = tokens.next().and_then(parse_u64).and_then(|f| u32::try_from(f).ok());
        let exptime = tokens.next().and_then(parse_i64);
        let _bytes = tokens.next();
        let unique = if name == b"cas" { tokens.next().and_then(parse_u64).map(Some) } else { Some(None) };
        let noreply = match tokens.next() {
            None => false,
            Some(b"noreply") => true,
            Some(_) => return client_error(out, BAD_FORMAT),
        };
        let value = match request.data {
            Data::Bytes(value) => value,
            Data::TooLarge(_) => return server_error(out, TOO_LARGE),
            Data::BadLength | Data::None => return client_error(out, BAD_FORMAT),
        };
        let (Some(flags), Some(exptime), Some(unique)) = (flags, exptime, unique) else {
            return client_error(out, BAD_FORMAT);
        };
        if !valid_key(key) || tokens.next().is_some() {
            return client_error(out, BAD_FORMAT);
        }
        let result = match name {
            b"append" | b"prepend" => self.store.concat(key, value, name == b"prepend", now),
            _ => {
                let condition = match (name, unique) {
                    (_, Some(unique)) => Condition::Cas(unique),
                    (b"add", _) => Condition::Absent,
                    (b"replace", _) => Condition::Present,
                    _ => Condition::Always,
                };
                let opts = PutOptions { flags, expiry: expiry(exptime, now), condition, text: false };
                self.store.put_with(key, value, opts, now, |_| ()).1
            }
        };
        if noreply {
            return Ok(());
        }
        match result {
            Ok(_) => line(out, b"STORED"),
            Err(StoreError::NotStored) => line(out, b"NOT_STORED"),
            Err(StoreError::Exists) => line(out, b"EXISTS"),
            Err(StoreError::NotFound) => line(out, b"NOT_FOUND"),
            Err(StoreError::KeyTooLong) => client_error(out, BAD_FORMAT),
            Err(StoreError::ValueTooLong) => server_error(out, TOO_LARGE),
            Err(StoreError::Unsupported) => server_error(out, UNSUPPORTED),
            Err(StoreError::NotPersisted) => server_error(out, NOT_PERSISTED),
            Err(_) => server_error(out, b"out of memory storing object"),
        }
    }

    /// `delete <key> [noreply]` (and memcached's legacy `delete <key> 0`).
    fn delete<O: Output + ?Sized>(
        &mut self,
        mut tokens: Tokens<'_>,
        now: Millis,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        let key = tokens.next().unwrap_or_default();
        let mut noreply = false;
        for token in tokens {
            match token {
                b"noreply" if !noreply => noreply = true,
                b"0" => {}
                _ => return client_error(out, b"bad command line format.  Usage: delete <key> [noreply]"),
            }
        }
        if !valid_key(key) {
            return client_error(out, BAD_FORMAT);
        }
        let deleted = self.store.delete_at(key, now);
        if noreply {
            return Ok(());
        }
        line(out, if deleted { b"DELETED" } else { b"NOT_FOUND" })
    }

    /// `incr|decr <key> <delta> [noreply]`.
    fn incr<O: Output + ?Sized>(
        &mut self,
        down: bool,
        mut tokens: Tokens<'_>,
        now: Millis,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        let (key, delta, noreply) = (tokens.next().unwrap_or_default(), tokens.next(), tokens.next());
        let noreply = match noreply {
            None => false,
            Some(b"noreply") => true,
            Some(_) => return client_error(out, BAD_FORMAT),
        };
        if !valid_key(key) || tokens.next().is_some() {
            return client_error(out, BAD_FORMAT);
        }
        let Some(delta) = delta.and_then(parse_u64) else {
            return client_error(out, b"invalid numeric delta argument");
        };
        let result = self.store.incr(key, delta, down, now);
        if noreply {
            return Ok(());
        }
        match result {
            Ok(n) => pieces(out, &[Decimal::new(n).as_bytes(), b"\r\n"]),
            Err(StoreError::NotFound) => line(out, b"NOT_FOUND"),
            Err(StoreError::NotANumber) => client_error(out, b"cannot increment or decrement non-numeric value"),
            Err(StoreError::NotPersisted) => server_error(out, NOT_PERSISTED),
            Err(_) => server_error(out, b"out of memory"),
        }
    }

    /// `touch <key> <exptime> [noreply]`.
    fn touch<O: Output + ?Sized>(
        &mut self,
        mut tokens: Tokens<'_>,
        now: Millis,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        let (key, exptime) = (tokens.next().unwrap_or_default(), tokens.next().and_then(parse_i64));
        let noreply = match tokens.next() {
            None => false,
            Some(b"noreply") => true,
            Some(_) => return client_error(out, BAD_FORMAT),
        };
        let Some(exptime) = exptime.filter(|_| valid_key(key)) else { return client_error(out, BAD_FORMAT) };
        let found = self.store.touch(key, expiry(exptime, now), now).is_some();
        if noreply {
            return Ok(());
        }
        line(out, if found { b"TOUCHED" } else { b"NOT_FOUND" })
    }

    /// `mg <key> <flag>*`: flags v f t c k s q O T (see docs/protocol.md).
    fn meta_get<O: Output + ?Sized>(
        &mut self,
        mut tokens: Tokens<'_>,
        now: Millis,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        let key = tokens.next().unwrap_or_default();
        if !valid_key(key) {
            return client_error(out, BAD_FORMAT);
        }
        let (mut value, mut quiet, mut touch) = (false, false, None);
        for flag in tokens.clone() {
            match flag.split_first() {
                Some((b'v', [])) => value = true,
                Some((b'q', [])) => quiet = true,
                Some((b'T', ttl)) => match parse_i64(ttl) {
                    Some(ttl) => touch = Some(expiry(ttl, now)),
                    None => return client_error(out, b"bad token in command line format"),
                },
                Some((b'f' | b't' | b'c' | b'k' | b's', [])) | Some((b'O', _)) => {}
                _ => return client_error(out, b"invalid flag"),
            }
        }
        if let Some(expiry) = touch {
            self.store.touch(key, expiry, now);
        }
        self.store.get_entry(key, now, |entry| {
            let Some(entry) = entry else {
                return if quiet { Ok(()) } else { line(out, b"EN") };
            };
            Measured { out: &mut *out }.reply(|write| {
                if value {
                    write(b"VA ");
                    write(Decimal::new(entry.value.len() as u64).as_bytes());
                } else {
                    write(b"HD");
                }
                for flag in tokens.clone() {
                    let Some((&f, token)) = flag.split_first() else { continue };
                    match f {
                        b'f' => return_flag(write, b'f', Decimal::new(u64::from(entry.flags)).as_bytes()),
                        b'c' => return_flag(write, b'c', Decimal::new(entry.cas).as_bytes()),
                        b'k' => return_flag(write, b'k', key),
                        b's' => return_flag(write, b's', Decimal::new(entry.value.len() as u64).as_bytes()),
                        b'O' => return_flag(write, b'O', token),
                        b't' => {
                            write(b" t");
                            ttl_seconds(&entry, now).write(write);
                        }
                        _ => {}
                    }
                }
                write(b"\r\n");
                if value {
                    write(entry.value);
                    write(b"\r\n");
                }
            })
        })
    }

    /// `ms <key> <datalen> <flag>*`: flags T F C q k O c and M (mode E A P R S).
    fn meta_set<O: Output + ?Sized>(
        &mut self,
        request: &Request<'_>,
        now: Millis,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        let mut tokens = request.tokens().skip(1);
        let key = tokens.next().unwrap_or_default();
        let _datalen = tokens.next();
        let value = match request.data {
            Data::Bytes(value) => value,
            Data::TooLarge(_) => return server_error(out, TOO_LARGE),
            Data::BadLength | Data::None => return client_error(out, b"bad data chunk"),
        };
        if !valid_key(key) {
            return client_error(out, BAD_FORMAT);
        }
        let mut opts = PutOptions::default();
        let (mut quiet, mut mode) = (false, b'S');
        let flags = tokens.clone();
        for flag in tokens {
            match flag.split_first() {
                Some((b'q', [])) => quiet = true,
                Some((b'T', ttl)) => match parse_i64(ttl) {
                    Some(ttl) => opts.expiry = expiry(ttl, now),
                    None => return client_error(out, b"bad token in command line format"),
                },
                Some((b'F', f)) => match parse_u64(f).and_then(|f| u32::try_from(f).ok()) {
                    Some(f) => opts.flags = f,
                    None => return client_error(out, b"bad token in command line format"),
                },
                Some((b'C', cas)) => match parse_u64(cas) {
                    Some(cas) => opts.condition = Condition::Cas(cas),
                    None => return client_error(out, b"bad token in command line format"),
                },
                Some((b'M', [m])) if b"EAPRSeaprs".contains(m) => mode = m.to_ascii_uppercase(),
                Some((b'k' | b'c', [])) | Some((b'O', _)) => {}
                _ => return client_error(out, b"invalid flag"),
            }
        }
        let cas_given = matches!(opts.condition, Condition::Cas(_));
        let result = match mode {
            b'A' | b'P' if !cas_given => self.store.concat(key, value, mode == b'P', now),
            b'A' | b'P' => return client_error(out, b"invalid flag"),
            _ => {
                if !cas_given {
                    opts.condition = match mode {
                        b'E' => Condition::Absent,
                        b'R' => Condition::Present,
                        _ => Condition::Always,
                    };
                }
                self.store.put_with(key, value, opts, now, |_| ()).1
            }
        };
        match result {
            Ok(_) if quiet => Ok(()),
            Ok(cas) => Measured { out }.reply(|write| {
                write(b"HD");
                for flag in flags.clone() {
                    match flag.split_first() {
                        Some((b'k', [])) => return_flag(write, b'k', key),
                        Some((b'c', [])) => return_flag(write, b'c', Decimal::new(cas).as_bytes()),
                        Some((b'O', token)) => return_flag(write, b'O', token),
                        _ => {}
                    }
                }
                write(b"\r\n");
            }),
            Err(StoreError::NotStored) => line(out, b"NS"),
            Err(StoreError::Exists) => line(out, b"EX"),
            Err(StoreError::NotFound) => line(out, b"NF"),
            Err(StoreError::KeyTooLong) => client_error(out, BAD_FORMAT),
            Err(StoreError::ValueTooLong) => server_error(out, TOO_LARGE),
            Err(StoreError::Unsupported) => server_error(out, UNSUPPORTED),
            Err(StoreError::NotPersisted) => server_error(out, NOT_PERSISTED),
            Err(_) => server_error(out, b"out of memory storing object"),
        }
    }

    /// `md <key> <flag>*`: flags q k O.
    fn meta_delete<O: Output + ?Sized>(
        &mut self,
        mut tokens: Tokens<'_>,
        now: Millis,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        let key = tokens.next().unwrap_or_default();
        if !valid_key(key) {
            return client_error(out, BAD_FORMAT);
        }
        let mut quiet = false;
        for flag in tokens.clone() {
            match flag.split_first() {
                Some((b'q', [])) => quiet = true,
                Some((b'k', [])) | Some((b'O', _)) => {}
                _ => return client_error(out, b"invalid flag"),
            }
        }
        let deleted = self.store.delete_at(key, now);
        if quiet {
            return Ok(());
        }
        Measured { out }.reply(|write| {
            write(if deleted { b"HD" } else { b"NF" });
            for flag in tokens.clone() {
                match flag.split_first() {
                    Some((b'k', [])) => return_flag(write, b'k', key),
                    Some((b'O', token)) => return_flag(write, b'O', token),
                    _ => {}
                }
            }
            write(b"\r\n");
        })
    }

    /// `ma <key> <flag>*`: flags D (delta), M (mode I + D -), N (create on
    /// a miss, with the TTL given), J (its initial value), q k O v t c.
    fn meta_arithmetic<O: Output + ?Sized>(
        &mut self,
        mut tokens: Tokens<'_>,
        now: Millis,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        let key = tokens.next().unwrap_or_default();
        if !valid_key(key) {
            return client_error(out, BAD_FORMAT);
        }
        let (mut delta, mut down, mut quiet, mut value) = (1u64, false, false, false);
        let (mut create, mut initial) = (None, 0u64);
        let bad_token = b"bad token in command line format";
        for flag in tokens.clone() {
            match flag.split_first() {
                Some((b'q', [])) => quiet = true,
                Some((b'v', [])) => value = true,
                Some((b'D', d)) => match parse_u64(d) {
                    Some(d) => delta = d,
                    None => return client_error(out, bad_token),
                },
                Some((b'J', j)) => match parse_u64(j) {
                    Some(j) => initial = j,
                    None => return client_error(out, bad_token),
                },
                Some((b'N', ttl)) => match parse_i64(ttl) {
                    Some(ttl) => create = Some(expiry(ttl, now)),
                    None => return client_error(out, bad_token),
                },
                Some((b'M', [m])) if b"I+D-id".contains(m) => down = matches!(m, b'D' | b'd' | b'-'),
                Some((b'k' | b't' | b'c', [])) | Some((b'O', _)) => {}
                _ => return client_error(out, b"invalid flag"),
            }
        }
        let mut result = self.store.incr(key, delta, down, now);
        if let (Err(StoreError::NotFound), Some(expiry)) = (result, create) {
            // Created with its initial value; the delta is not applied (memcached's rule).
            let digits = Decimal::new(initial);
            let opts = PutOptions { expiry, condition: Condition::Absent, text: true, ..PutOptions::default() };
            result = match self.store.put_with(key, digits.as_bytes(), opts, now, |_| ()).1 {
                Ok(_) => Ok(initial),
                // Someone else created it meanwhile: apply the delta to theirs.
                Err(StoreError::NotStored) => self.store.incr(key, delta, down, now),
                Err(e) => Err(e),
            };
        }
        let n = match result {
            Ok(n) => n,
            Err(StoreError::NotFound) => return if quiet { Ok(()) } else { line(out, b"NF") },
            Err(StoreError::NotANumber) => {
                return client_error(out, b"cannot increment or decrement non-numeric value");
            }
            Err(StoreError::NotPersisted) => return server_error(out, NOT_PERSISTED),
            Err(_) => return server_error(out, b"out of memory"),
        };
        if quiet && !value {
            return Ok(());
        }
        // The cas and TTL the entry has now.
        let (cas, ttl) = self.store.get_entry(key, now, |entry| {
            entry.map_or((0, Decimal2::Negative(1)), |entry| (entry.cas, ttl_seconds(&entry, now)))
        });
        let digits = Decimal::new(n);
        Measured { out }.reply(|write| {
            if value {
                write(b"VA ");
                write(Decimal::new(digits.as_bytes().len() as u64).as_bytes());
            } else {
                write(b"HD");
            }
            for flag in tokens.clone() {
                match flag.split_first() {
                    Some((b'k', [])) => return_flag(write, b'k', key),
                    Some((b'c', [])) => return_flag(write, b'c', Decimal::new(cas).as_bytes()),
                    Some((b'O', token)) => return_flag(write, b'O', token),
                    Some((b't', [])) => {
                        write(b" t");
                        ttl.write(write);
                    }
                    _ => {}
                }
            }
            write(b"\r\n");
            if value {
                write(digits.as_bytes());
                write(b"\r\n");
            }
        })
    }
}

/// ` <flag><token>`.
fn return_flag(write: &mut dyn FnMut(&[u8]), flag: u8, token: &[u8]) {
    write(b" ");
    write(&[flag]);
    write(token);
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::connection::{Connection, Outcome};
    use crate::store::ArrayStore;
    use std::string::String;

    type Small = ArrayStore<64, 4096, 1024>;

    fn run(h: &mut McHandler<Small>, now: u64, input: &[u8]) -> (String, Outcome<McError>) {
        let mut conn = Connection::with_parser(RequestParser::new(400), 1 << 16);
        let mut buf = heapless::Vec::<u8, 1024>::new();
        let mut out = heapless::Vec::<u8, 8192>::new();
        let r = conn.receive(input, now, &mut buf, h, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), r.outcome)
    }

    fn answers(h: &mut McHandler<Small>, now: u64, input: &str) -> String {
        let (out, outcome) = run(h, now, input.as_bytes());
        assert_eq!(outcome, Outcome::NeedMore, "{input:?}");
        out
    }

    fn with_cas() -> McHandler<Small> {
        McHandler::new(Small::new().with_cas(true))
    }

    /// Without `entry-fields` (the firmware's build) a plain set works and one with flags or an
    /// expiry is refused with a reason, not as "out of memory".
    #[test]
    #[cfg(not(feature = "entry-fields"))]
    fn a_store_without_entry_fields_says_why_it_refuses() {
        let mut h = with_cas();
        assert_eq!(
            answers(&mut h, 1_000, "set k 0 0 1\r\nv\r\nset k 5 60 1\r\nw\r\nget k\r\n"),
            "STORED\r\nSERVER_ERROR this build keeps no flags, expiry or cas (kvio-core without entry-fields)\r\n\
             VALUE k 0 1\r\nv\r\nEND\r\n"
        );
    }

    #[test]
    #[cfg(feature = "entry-fields")]
    fn storage_and_retrieval() {
        let mut h = with_cas();
        let t = 1_000_000;
        assert_eq!(answers(&mut h, t, "set k 5 0 2\r\nhi\r\nget k nope\r\n"), "STORED\r\nVALUE k 5 2\r\nhi\r\nEND\r\n");
        assert_eq!(answers(&mut h, t, "add k 0 0 1\r\nx\r\nadd n 0 0 1\r\nx\r\n"), "NOT_STORED\r\nSTORED\r\n");
        assert_eq!(
            answers(&mut h, t, "replace nope 0 0 1\r\nx\r\nreplace n 1 0 1\r\ny\r\n"),
            "NOT_STORED\r\nSTORED\r\n"
        );
        assert_eq!(
            answers(&mut h, t, "append k 0 0 2\r\n!!\r\nprepend k 0 0 1\r\n<\r\nget k\r\n"),
            "STORED\r\nSTORED\r\nVALUE k 5 5\r\n<hi!!\r\nEND\r\n"
        );
        assert_eq!(answers(&mut h, t, "append nope 0 0 1\r\nx\r\n"), "NOT_STORED\r\n");
        let gets = answers(&mut h, t, "gets k\r\n");
        let cas: u64 = gets.split_whitespace().nth(4).unwrap().parse().unwrap();
        assert_eq!(answers(&mut h, t, &std::format!("cas k 0 0 1 {}\r\nA\r\n", cas + 1)), "EXISTS\r\n");
        assert_eq!(answers(&mut h, t, &std::format!("cas k 0 0 1 {cas}\r\nA\r\n")), "STORED\r\n");
        assert_eq!(answers(&mut h, t, "cas nope 0 0 1 1\r\nA\r\n"), "NOT_FOUND\r\n");
        assert_eq!(answers(&mut h, t, "set q 0 0 1 noreply\r\nq\r\nget q\r\n"), "VALUE q 0 1\r\nq\r\nEND\r\n");
        assert_eq!(answers(&mut h, t, "delete q\r\ndelete q\r\ndelete k noreply\r\n"), "DELETED\r\nNOT_FOUND\r\n");
        // Binary-safe data blocks.
        let (out, _) = run(&mut h, t, b"set b 0 0 4\r\n\r\n\0\xff\r\nget b\r\n");
        assert_eq!(out.as_bytes(), "STORED\r\nVALUE b 0 4\r\n\r\n\0\u{fffd}\r\nEND\r\n".as_bytes());
    }

    #[test]
    #[cfg(feature = "entry-fields")]
    fn expiry_touch_and_numbers() {
        let mut h = with_cas();
        let t = 1_000_000;
        assert_eq!(answers(&mut h, t, "set k 0 10 1\r\nv\r\nget k\r\n"), "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
        assert_eq!(answers(&mut h, t + 10_000, "get k\r\n"), "END\r\n");
        // The store's clock only moves forward.
        let t = t + 10_000;
        assert_eq!(answers(&mut h, t, "set k 0 -1 1\r\nv\r\nget k\r\n"), "STORED\r\nEND\r\n");
        assert_eq!(
            answers(&mut h, t, "set k 0 0 1\r\nv\r\ntouch k 1\r\ntouch nope 1\r\n"),
            "STORED\r\nTOUCHED\r\nNOT_FOUND\r\n"
        );
        assert_eq!(answers(&mut h, t + 1_000, "get k\r\n"), "END\r\n");
        let t = t + 1_000;
        assert_eq!(answers(&mut h, t, "set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\n"), "STORED\r\n15\r\n0\r\n");
        assert_eq!(
            answers(&mut h, t, "incr nope 1\r\nset s 0 0 1\r\nx\r\nincr s 1\r\n"),
            "NOT_FOUND\r\nSTORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        );
        assert_eq!(answers(&mut h, t, "incr n x\r\n"), "CLIENT_ERROR invalid numeric delta argument\r\n");
        // Absolute Unix times beyond 30 days.
        let at = (t / 1000) + 5;
        assert_eq!(
            answers(&mut h, t, &std::format!("set a 0 {} 1\r\nv\r\nmg a t\r\n", at + RELATIVE_EXPIRY_MAX as u64)),
            "STORED\r\nHD t2592005\r\n"
        );
    }

    #[test]
    #[cfg(feature = "entry-fields")]
    fn meta_commands() {
        let mut h = with_cas();
        let t = 1_000_000;
        assert_eq!(
            answers(&mut h, t, "ms k 2 T60 F7\r\nhi\r\nmg k v f t s k O42\r\n"),
            "HD\r\nVA 2 f7 t60 s2 kk O42\r\nhi\r\n"
        );
        assert_eq!(answers(&mut h, t, "mg nope v\r\nmg nope v q\r\nmn\r\n"), "EN\r\nMN\r\n");
        assert_eq!(
            answers(&mut h, t, "ms k 1 ME\r\nx\r\nms n 1 MR\r\nx\r\nms k 1 q\r\ny\r\nmn\r\n"),
            "NS\r\nNS\r\nMN\r\n"
        );
        let got = answers(&mut h, t, "mg k c\r\n");
        let cas: u64 = got.trim_end()[4..].parse().unwrap();
        assert_eq!(
            answers(&mut h, t, &std::format!("ms k 1 C{}\r\nz\r\nms k 1 C{cas} c\r\nz\r\n", cas + 1)),
            std::format!("EX\r\nHD c{}\r\n", cas + 1)
        );
        assert_eq!(answers(&mut h, t, "ms k 1 MA\r\n!\r\nmg k v\r\n"), "HD\r\nVA 2\r\nz!\r\n");
        assert_eq!(answers(&mut h, t, "md k\r\nmd k\r\nmd k q\r\nmn\r\n"), "HD\r\nNF\r\nMN\r\n");
        assert_eq!(
            answers(&mut h, t, "ma c\r\nma c N0 J10 v\r\nma c D5 v\r\nma c MD D100 v\r\n"),
            "NF\r\nVA 2\r\n10\r\nVA 2\r\n15\r\nVA 1\r\n0\r\n"
        );
        assert_eq!(answers(&mut h, t, "mg k zz\r\n"), "CLIENT_ERROR invalid flag\r\n");
    }

    #[test]
    fn errors_and_connection_commands() {
        let mut h = with_cas();
        assert_eq!(answers(&mut h, 0, "bogus\r\n\r\nversion\r\n"), "ERROR\r\nERROR\r\nVERSION 1.6.21\r\n");
        assert_eq!(answers(&mut h, 0, "set k 0 0 x\r\nget k\r\n"), "CLIENT_ERROR bad command line format\r\nEND\r\n");
        let long_key = "k".repeat(251);
        assert_eq!(answers(&mut h, 0, &std::format!("get {long_key}\r\n")), "CLIENT_ERROR bad command line format\r\n");
        let big = "v".repeat(500);
        let out = answers(&mut h, 0, &std::format!("set k 0 0 500\r\n{big}\r\nget k\r\n"));
        assert_eq!(out, "SERVER_ERROR object too large for cache\r\nEND\r\n");
        assert!(answers(&mut h, 0, "stats\r\n").ends_with("STAT curr_items 0\r\nEND\r\n"));
        assert_eq!(answers(&mut h, 0, "verbosity 1\r\nverbosity 1 noreply\r\n"), "OK\r\n");
        let (out, outcome) = run(&mut h, 0, b"quit\r\nget k\r\n");
        assert_eq!((out.as_str(), outcome), ("", Outcome::Quit));
        let (out, outcome) = run(&mut h, 0, b"set k 0 0 1\r\nxy\r\n");
        assert_eq!((out.as_str(), outcome), ("CLIENT_ERROR bad data chunk\r\n", Outcome::Close(McError::BadDataChunk)));
    }
}
