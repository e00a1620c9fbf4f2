//! The RESP command table: what kvio answers to each Redis command it
//! serves, over any [`KeyValueStore`]. Replies are composed straight into
//! the connection's output; a value is copied once, from the store to the
//! output, while the store's borrow lasts. docs/protocol.md ("RESP") lists
//! the commands and how they differ from Redis.
//!
//! What the host knows about itself (INFO) comes through [`Info`]; a host
//! without it (a firmware) answers INFO with the keyspace only.

use crate::buffer::{Output, OutputFull};
use crate::protocol::{Handler, Next};
use crate::store::{Condition, Expiry, KeyValueStore, Millis, PutOptions, StoreError};

use super::reply::{self, Decimal};
use super::{Command, RequestParser, RespError};

/// The Redis version kvio answers to `HELLO` and `INFO` with: the release
/// whose commands (those kvio has) behave as kvio's do, so clients that
/// check a version pick the RESP2 commands they expect.
pub const REDIS_VERSION: &str = "7.0.0";

/// The longest INFO reply (the rest is cut).
pub const INFO_MAX: usize = 4096;

/// What a host tells `INFO` about itself.
pub trait Info {
    /// Writes the text of the INFO sections (`# Server`, `key:value` lines
    /// ending in `\r\n`) that `section` asks for (`None`: the default
    /// ones), by calling `write` with each piece; at most [`INFO_MAX`]
    /// bytes are kept.
    fn info(&mut self, section: Option<&[u8]>, entries: usize, write: &mut dyn FnMut(&[u8]));
}

impl<I: Info + ?Sized> Info for &mut I {
    fn info(&mut self, section: Option<&[u8]>, entries: usize, write: &mut dyn FnMut(&[u8])) {
        (**self).info(section, entries, write)
    }
}

/// A host that tells nothing but the keyspace (and, to memcached's
/// `stats`, the item count).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoInfo;

impl Info for NoInfo {
    fn info(&mut self, section: Option<&[u8]>, entries: usize, write: &mut dyn FnMut(&[u8])) {
        if section.is_none_or(|s| s.eq_ignore_ascii_case(b"keyspace")) {
            keyspace(entries, write);
        }
    }
}

/// The `# Keyspace` section: kvio has one database, db0.
pub fn keyspace(entries: usize, write: &mut dyn FnMut(&[u8])) {
    write(b"# Keyspace\r\n");
    if entries > 0 {
        write(b"db0:keys=");
        write(Decimal::new(entries as u64).as_bytes());
        write(b",expires=0,avg_ttl=0\r\n");
    }
}

/// Answers RESP commands against a store `S`; `I` tells INFO about the host.
#[derive(Debug)]
pub struct RespHandler<S, I = NoInfo> {
    store: S,
    info: I,
}

impl<S: KeyValueStore> RespHandler<S, NoInfo> {
    /// A handler over `store` whose INFO has the keyspace only.
    pub const fn new(store: S) -> Self {
        RespHandler { store, info: NoInfo }
    }
}

impl<S: KeyValueStore, I: Info> RespHandler<S, I> {
    /// A handler over `store` whose INFO the host writes.
    pub const fn with_info(store: S, info: I) -> Self {
        RespHandler { store, info }
    }

    /// The store.
    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }
}

/// `-ERR wrong number of arguments for '<name>' command`, with the name
/// in lower case as Redis writes it.
fn arity<O: Output + ?Sized>(out: &mut O, name: &'static [u8]) -> Result<(), OutputFull> {
    reply::error(out, &[b"ERR wrong number of arguments for '", name, b"' command"])
}

const SYNTAX: &[u8] = b"ERR syntax error";
const NOT_INTEGER: &[u8] = b"ERR value is not an integer or out of range";

/// The reply to a store's refusal.
fn refused<O: Output + ?Sized>(out: &mut O, e: StoreError) -> Result<(), OutputFull> {
    let text: &[u8] = match e {
        StoreError::KeyTooLong => b"ERR key too long",
        StoreError::ValueTooLong => b"ERR value too long",
        StoreError::Full => b"OOM command not allowed when the store is full (--store-entries, --store-bytes)",
        StoreError::NotANumber => NOT_INTEGER,
        StoreError::Unsupported => b"ERR this build keeps no expiry (kvio-core without entry-fields)",
        // Redis's word for a write refused while it cannot persist.
        StoreError::NotPersisted => b"MISCONF not persisted: the server cannot write its journal (--data-dir)",
        _ => b"ERR refused by the store",
    };
    reply::error(out, &[text])
}

/// A signed decimal as Redis's string2ll reads it (no leading zeros, no "+").
fn parse_i64(arg: &[u8]) -> Option<i64> {
    let (negative, digits) = match arg.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, arg),
    };
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && (digits.len() > 1 || negative)) {
        return None;
    }
    let magnitude = digits.iter().try_fold(0i64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    })?;
    Some(if negative { -magnitude } else { magnitude })
}

/// `n` units of `unit` ms after `now` (or at `n` units, `absolute`); None
/// if it does not fit, or is not positive where Redis asks it to be.
fn expiry_at(now: Millis, n: i64, unit: u64, absolute: bool) -> Option<Millis> {
    let ms = u64::try_from(n).ok()?.checked_mul(unit)?;
    if absolute { Some(ms) } else { now.checked_add(ms) }
}

/// Commands kvio answers, for `COMMAND COUNT`.
const COMMANDS: &[&[u8]] = &[
    b"client", b"command", b"config", b"dbsize", b"del", b"echo", b"exists", b"expire", b"get", b"hello", b"info",
    b"mget", b"mset", b"persist", b"pexpire", b"ping", b"pttl", b"quit", b"select", b"set", b"ttl",
];

impl<S: KeyValueStore, I: Info> Handler<RequestParser> for RespHandler<S, I> {
    fn request<O: Output + ?Sized>(&mut self, command: Command<'_>, now: u64, out: &mut O) -> Result<Next, OutputFull> {
        let mut args = command.args();
        let name = args.next().unwrap_or_default();
        let argc = command.argc();
        let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
        if is(b"get") {
            let Some([key]) = take(&mut args, argc) else { return arity(out, b"get").map(|()| Next::Continue) };
            self.store.get_entry(key, now, |entry| match entry {
                Some(entry) => reply::bulk(out, entry.value),
                None => reply::nil(out),
            })?;
        } else if is(b"set") {
            self.set(&command, now, out)?;
        } else if is(b"ping") {
            match argc {
                1 => reply::simple(out, b"PONG")?,
                2 => reply::bulk(out, args.next().unwrap_or_default())?,
                _ => arity(out, b"ping")?,
            }
        } else if is(b"mget") {
            if argc < 2 {
                arity(out, b"mget")?;
            } else {
                reply::array(out, argc - 1)?;
                for key in args {
                    self.store.get_entry(key, now, |entry| match entry {
                        Some(entry) => reply::bulk(out, entry.value),
                        None => reply::nil(out),
                    })?;
                }
            }
        } else if is(b"mset") {
            self.mset(&command, now, out)?;
        } else if is(b"del") {
            if argc < 2 {
                arity(out, b"del")?;
            } else {
                let deleted = args.filter(|key| self.store.delete_at(key, now)).count();
                reply::integer(out, deleted as i64)?;
            }
        } else if is(b"exists") {
            if argc < 2 {
                arity(out, b"exists")?;
            } else {
                let found = args.filter(|key| self.store.get_entry(key, now, |e| e.is_some())).count();
                reply::integer(out, found as i64)?;
            }
        } else if is(b"expire") || is(b"pexpire") {
            let (unit, lower): (u64, &'static [u8]) = if is(b"expire") { (1000, b"expire") } else { (1, b"pexpire") };
            let Some([key, n]) = take(&mut args, argc) else { return arity(out, lower).map(|()| Next::Continue) };
            match parse_i64(n) {
                None => reply::error(out, &[NOT_INTEGER])?,
                Some(n) => {
                    // Zero or less: the key expires now (Redis deletes it).
                    let at = if n <= 0 { Some(now) } else { expiry_at(now, n, unit, false) };
                    match at {
                        None => reply::error(out, &[b"ERR invalid expire time in '", lower, b"' command"])?,
                        Some(at) => {
                            let found = self.store.touch(key, Expiry::At(at), now).is_some();
                            reply::integer(out, i64::from(found))?;
                        }
                    }
                }
            }
        } else if is(b"ttl") || is(b"pttl") {
            let (unit, lower): (u64, &'static [u8]) = if is(b"ttl") { (1000, b"ttl") } else { (1, b"pttl") };
            let Some([key]) = take(&mut args, argc) else { return arity(out, lower).map(|()| Next::Continue) };
            let ttl = self.store.get_entry(key, now, |entry| match entry {
                None => -2,
                Some(entry) => match entry.expires {
                    None => -1,
                    // Rounded to the nearest second, as Redis does.
                    Some(at) => (at.saturating_sub(now).saturating_add(unit / 2) / unit).min(i64::MAX as u64) as i64,
                },
            });
            reply::integer(out, ttl)?;
        } else if is(b"persist") {
            let Some([key]) = take(&mut args, argc) else { return arity(out, b"persist").map(|()| Next::Continue) };
            let had = self.store.touch(key, Expiry::Never, now).is_some_and(|old| old.is_some());
            reply::integer(out, i64::from(had))?;
        } else if is(b"dbsize") {
            if argc != 1 {
                arity(out, b"dbsize")?;
            } else {
                reply::integer(out, self.store.entries() as i64)?;
            }
        } else if is(b"echo") {
            let Some([message]) = take(&mut args, argc) else { return arity(out, b"echo").map(|()| Next::Continue) };
            reply::bulk(out, message)?;
        } else if is(b"quit") {
            reply::ok(out)?;
            return Ok(Next::Close);
        } else if is(b"select") {
            let Some([db]) = take(&mut args, argc) else { return arity(out, b"select").map(|()| Next::Continue) };
            match parse_i64(db) {
                Some(0) => reply::ok(out)?,
                Some(_) => reply::error(out, &[b"ERR DB index is out of range"])?,
                None => reply::error(out, &[NOT_INTEGER])?,
            }
        } else if is(b"hello") {
            self.hello(&command, out)?;
        } else if is(b"client") {
            self.client(&command, out)?;
        } else if is(b"command") {
            match args.next() {
                Some(sub) if sub.eq_ignore_ascii_case(b"count") => reply::integer(out, COMMANDS.len() as i64)?,
                // DOCS, INFO, LIST and the bare COMMAND: nothing to tell (redis-cli's hints go without).
                _ => reply::array(out, 0)?,
            }
        } else if is(b"config") {
            self.config(&command, out)?;
        } else if is(b"info") {
            if argc > 2 {
                reply::error(out, &[SYNTAX])?;
            } else {
                self.info(args.next(), out)?;
            }
        } else {
            reply::error(out, &[b"ERR unknown command '", name, b"'"])?;
        }
        Ok(Next::Continue)
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: RespError, out: &mut O) -> Result<(), OutputFull> {
        reply::protocol_error(out, error)
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        reply::error(out, &[b"ERR client memory limit reached (--max-client-memory); closing"])
    }
}

/// The `N` arguments after the name, if the command has exactly those.
fn take<'a, const N: usize>(args: &mut super::Args<'a>, argc: usize) -> Option<[&'a [u8]; N]> {
    if argc != N + 1 {
        return None;
    }
    let mut taken = [&[][..]; N];
    for slot in &mut taken {
        *slot = args.next()?;
    }
    Some(taken)
}

impl<S: KeyValueStore, I: Info> RespHandler<S, I> {
    /// `INFO [section]`, composed on the stack and sent as one bulk string
    /// (no heap, one pass). Out of line: its buffer stays out of the
    /// request path's stack frame.
    #[inline(never)]
    fn info<O: Output + ?Sized>(&mut self, section: Option<&[u8]>, out: &mut O) -> Result<(), OutputFull> {
        let entries = self.store.entries();
        let mut text = [0u8; INFO_MAX];
        let mut len = 0;
        self.info.info(section, entries, &mut |piece| {
            let n = piece.len().min(INFO_MAX - len);
            text[len..len + n].copy_from_slice(&piece[..n]);
            len += n;
        });
        reply::bulk(out, &text[..len])
    }

    /// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]`.
    fn set<O: Output + ?Sized>(&mut self, command: &Command<'_>, now: Millis, out: &mut O) -> Result<(), OutputFull> {
        let mut args = command.args().skip(1);
        let (Some(key), Some(value)) = (args.next(), args.next()) else { return arity(out, b"set") };
        let mut opts = PutOptions::default();
        let (mut get, mut expiry_given, mut condition_given) = (false, false, false);
        while let Some(option) = args.next() {
            let is = |want: &[u8]| option.eq_ignore_ascii_case(want);
            if is(b"nx") || is(b"xx") {
                if condition_given {
                    return reply::error(out, &[SYNTAX]);
                }
                condition_given = true;
                opts.condition = if is(b"nx") { Condition::Absent } else { Condition::Present };
            } else if is(b"get") {
                get = true;
            } else if is(b"keepttl") {
                if expiry_given {
                    return reply::error(out, &[SYNTAX]);
                }
                expiry_given = true;
                opts.expiry = Expiry::Keep;
            } else if is(b"ex") || is(b"px") || is(b"exat") || is(b"pxat") {
                if expiry_given {
                    return reply::error(out, &[SYNTAX]);
                }
                expiry_given = true;
                let Some(n) = args.next() else { return reply::error(out, &[SYNTAX]) };
                let Some(n) = parse_i64(n) else { return reply::error(out, &[NOT_INTEGER]) };
                let unit = if is(b"ex") || is(b"exat") { 1000 } else { 1 };
                let at = if n > 0 { expiry_at(now, n, unit, is(b"exat") || is(b"pxat")) } else { None };
                let Some(at) = at else { return reply::error(out, &[b"ERR invalid expire time in 'set' command"]) };
                opts.expiry = Expiry::At(at);
            } else {
                return reply::error(out, &[SYNTAX]);
            }
        }
        let start = out.pending();
        let mut written = Ok(());
        let (_, result) = self.store.put_with(key, value, opts, now, |old| {
            if get {
                written = match old {
                    Some(entry) => reply::bulk(out, entry.value),
                    None => reply::nil(out),
                };
            }
        });
        written?;
        match result {
            Ok(_) if get => Ok(()),
            Ok(_) => reply::ok(out),
            // NX or XX not met: nil, or the old value when GET asked for it.
            Err(StoreError::NotStored) if get => Ok(()),
            Err(StoreError::NotStored) => reply::nil(out),
            Err(e) => {
                // The old value GET wrote is replaced by the refusal.
                out.truncate_back(out.pending() - start);
                refused(out, e)
            }
        }
    }

    /// `MSET key value [key value ...]`: each pair in turn (not atomic: a
    /// refusal leaves the pairs before it stored, and is the reply).
    fn mset<O: Output + ?Sized>(&mut self, command: &Command<'_>, now: Millis, out: &mut O) -> Result<(), OutputFull> {
        let argc = command.argc();
        if argc < 3 || argc.is_multiple_of(2) {
            return arity(out, b"mset");
        }
        let mut args = command.args().skip(1);
        while let (Some(key), Some(value)) = (args.next(), args.next()) {
            let (_, result) = self.store.put_with(key, value, PutOptions::default(), now, |_| ());
            if let Err(e) = result {
                return refused(out, e);
            }
        }
        reply::ok(out)
    }

    /// `HELLO [2 [AUTH user pass] [SETNAME name]]`: RESP2 only.
    fn hello<O: Output + ?Sized>(&mut self, command: &Command<'_>, out: &mut O) -> Result<(), OutputFull> {
        let mut args = command.args().skip(1);
        if let Some(version) = args.next() {
            match parse_i64(version) {
                Some(2) => {}
                // redis-py opens with HELLO 3 and falls back to RESP2 on NOPROTO.
                Some(_) => return reply::error(out, &[b"NOPROTO sorry, this protocol version is not supported"]),
                None => return reply::error(out, &[b"ERR Protocol version is not an integer or out of range"]),
            }
        }
        while let Some(option) = args.next() {
            if option.eq_ignore_ascii_case(b"setname") && args.next().is_some() {
                continue;
            }
            if option.eq_ignore_ascii_case(b"auth") && args.next().is_some() && args.next().is_some() {
                return reply::error(
                    out,
                    &[b"ERR AUTH <password> called without any password configured for the default user"],
                );
            }
            return reply::error(out, &[b"ERR Syntax error in HELLO option '", option, b"'"]);
        }
        reply::array(out, 14)?;
        for (key, value) in [(&b"server"[..], &b"redis"[..]), (b"version", REDIS_VERSION.as_bytes())] {
            reply::bulk(out, key)?;
            reply::bulk(out, value)?;
        }
        reply::bulk(out, b"proto")?;
        reply::integer(out, 2)?;
        reply::bulk(out, b"id")?;
        reply::integer(out, 1)?;
        for (key, value) in [(&b"mode"[..], &b"standalone"[..]), (b"role", b"master")] {
            reply::bulk(out, key)?;
            reply::bulk(out, value)?;
        }
        reply::bulk(out, b"modules")?;
        reply::array(out, 0)
    }

    /// `CLIENT SETINFO | SETNAME | GETNAME | ID`: what clients send on connecting.
    fn client<O: Output + ?Sized>(&mut self, command: &Command<'_>, out: &mut O) -> Result<(), OutputFull> {
        let mut args = command.args().skip(1);
        let Some(sub) = args.next() else { return arity(out, b"client") };
        let is = |want: &[u8]| sub.eq_ignore_ascii_case(want);
        if is(b"setinfo") || is(b"setname") {
            reply::ok(out)
        } else if is(b"getname") {
            reply::nil(out)
        } else if is(b"id") {
            reply::integer(out, 1)
        } else {
            reply::error(out, &[b"ERR unknown subcommand '", sub, b"'. Try CLIENT HELP."])
        }
    }

    /// `CONFIG GET parameter [parameter ...]`: the few a client asks
    /// (redis-benchmark asks `save` and `appendonly`); `CONFIG SET` is refused.
    fn config<O: Output + ?Sized>(&mut self, command: &Command<'_>, out: &mut O) -> Result<(), OutputFull> {
        const KNOWN: &[(&[u8], &[u8])] = &[(b"save", b""), (b"appendonly", b"no"), (b"databases", b"1")];
        let mut args = command.args().skip(1);
        let Some(sub) = args.next() else { return arity(out, b"config") };
        if !sub.eq_ignore_ascii_case(b"get") {
            return reply::error(out, &[b"ERR unknown subcommand '", sub, b"'. Try CONFIG HELP."]);
        }
        if command.argc() < 3 {
            return arity(out, b"config|get");
        }
        let wanted = |name: &[u8]| command.args().skip(2).any(|p| p == b"*" || p.eq_ignore_ascii_case(name));
        let found = KNOWN.iter().filter(|(name, _)| wanted(name)).count();
        reply::array(out, 2 * found)?;
        for (name, value) in KNOWN.iter().filter(|(name, _)| wanted(name)) {
            reply::bulk(out, name)?;
            reply::bulk(out, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::connection::{Connection, Outcome};
    use crate::store::ArrayStore;
    use std::string::String;

    /// 64 slots, 4 KiB, frames of 1 KiB: values up to 1024 - 25 - 499 bytes.
    type Small = ArrayStore<64, 4096, 1024>;

    /// Feeds `input` at `now` and returns what was answered, and how the
    /// connection ended.
    fn run(h: &mut RespHandler<Small>, now: u64, input: &[u8]) -> (String, Outcome<RespError>) {
        let mut conn = Connection::with_parser(RequestParser::new(1024), 1 << 16);
        let mut buf = heapless::Vec::<u8, 1024>::new();
        let mut out = heapless::Vec::<u8, 8192>::new();
        let r = conn.receive(input, now, &mut buf, h, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), r.outcome)
    }

    fn answers(h: &mut RespHandler<Small>, now: u64, input: &str) -> String {
        let (out, outcome) = run(h, now, input.as_bytes());
        assert_eq!(outcome, Outcome::NeedMore, "{input:?}");
        out
    }

    #[test]
    fn strings_and_keys() {
        let mut h = RespHandler::new(Small::new());
        let t = 1_000_000;
        assert_eq!(answers(&mut h, t, "PING\r\nping hello\r\nECHO x\r\n"), "+PONG\r\n$5\r\nhello\r\n$1\r\nx\r\n");
        assert_eq!(answers(&mut h, t, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n"), "+OK\r\n");
        assert_eq!(answers(&mut h, t, "GET k\r\nGET nope\r\n"), "$4\r\na\r\nb\r\n$-1\r\n");
        assert_eq!(
            answers(&mut h, t, "MSET a 1 b 2\r\nMGET a nope b\r\n"),
            "+OK\r\n*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"
        );
        assert_eq!(answers(&mut h, t, "EXISTS a a nope\r\nDBSIZE\r\n"), ":2\r\n:3\r\n");
        assert_eq!(answers(&mut h, t, "DEL a b nope\r\nDBSIZE\r\n"), ":2\r\n:1\r\n");
        // Binary-safe: any byte in a value.
        let binary = b"*3\r\n$3\r\nset\r\n$3\r\nbin\r\n$4\r\n\0\xff\r\n\r\n*2\r\n$3\r\nget\r\n$3\r\nbin\r\n";
        let (out, _) = run(&mut h, t, binary);
        assert_eq!(out.as_bytes(), "+OK\r\n$4\r\n\0\u{fffd}\r\n\r\n".as_bytes());
    }

    /// Without `entry-fields` (the firmware's build) plain strings work and an expiry is refused
    /// with a reason.
    #[test]
    #[cfg(not(feature = "entry-fields"))]
    fn a_store_without_entry_fields_says_why_it_refuses() {
        let mut h = RespHandler::new(Small::new());
        assert_eq!(
            answers(&mut h, 1_000, "SET k v\r\nSET k w EX 10\r\nGET k\r\n"),
            "+OK\r\n-ERR this build keeps no expiry (kvio-core without entry-fields)\r\n$1\r\nv\r\n"
        );
    }

    #[test]
    #[cfg(feature = "entry-fields")]
    fn set_options() {
        let mut h = RespHandler::new(Small::new());
        // The store's clock only moves forward: each step is at a later time.
        let t = 1_000_000;
        assert_eq!(answers(&mut h, t, "SET k v NX\r\nSET k w NX\r\nGET k\r\n"), "+OK\r\n$-1\r\n$1\r\nv\r\n");
        assert_eq!(answers(&mut h, t, "SET x v XX\r\nSET k w XX GET\r\n"), "$-1\r\n$1\r\nv\r\n");
        assert_eq!(answers(&mut h, t, "SET k z GET\r\nSET new z GET\r\n"), "$1\r\nw\r\n$-1\r\n");
        assert_eq!(answers(&mut h, t, "SET k v EX 10\r\nTTL k\r\nPTTL k\r\n"), "+OK\r\n:10\r\n:10000\r\n");
        assert_eq!(answers(&mut h, t + 9_400, "TTL k\r\nPTTL k\r\n"), ":1\r\n:600\r\n");
        assert_eq!(answers(&mut h, t + 10_000, "GET k\r\nTTL k\r\n"), "$-1\r\n:-2\r\n");
        let t = t + 10_000;
        assert_eq!(answers(&mut h, t, "SET k v PX 500\r\nSET k w KEEPTTL\r\nPTTL k\r\n"), "+OK\r\n+OK\r\n:500\r\n");
        assert_eq!(answers(&mut h, t, "SET k v\r\nPTTL k\r\n"), "+OK\r\n:-1\r\n");
        assert_eq!(answers(&mut h, t, "SET k v PXAT 1010500\r\nPTTL k\r\n"), "+OK\r\n:500\r\n");
        let syntax = "-ERR syntax error\r\n";
        assert_eq!(answers(&mut h, t, "SET k v NX XX\r\n"), syntax);
        assert_eq!(answers(&mut h, t, "SET k v EX 1 PX 1\r\n"), syntax);
        assert_eq!(answers(&mut h, t, "SET k v BOGUS\r\n"), syntax);
        assert_eq!(answers(&mut h, t, "SET k v EX\r\n"), syntax);
        assert_eq!(answers(&mut h, t, "SET k v EX 0\r\n"), "-ERR invalid expire time in 'set' command\r\n");
        assert_eq!(answers(&mut h, t, "SET k v EX ten\r\n"), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(answers(&mut h, t, "SET k\r\n"), "-ERR wrong number of arguments for 'set' command\r\n");
    }

    #[test]
    #[cfg(feature = "entry-fields")]
    fn expiry_commands() {
        let mut h = RespHandler::new(Small::new());
        let t = 5_000_000;
        assert_eq!(
            answers(&mut h, t, "SET k v\r\nEXPIRE k 2\r\nEXPIRE nope 2\r\nTTL k\r\n"),
            "+OK\r\n:1\r\n:0\r\n:2\r\n"
        );
        assert_eq!(answers(&mut h, t, "PERSIST k\r\nPERSIST k\r\nTTL k\r\n"), ":1\r\n:0\r\n:-1\r\n");
        assert_eq!(answers(&mut h, t, "PEXPIRE k 100\r\nPTTL k\r\n"), ":1\r\n:100\r\n");
        assert_eq!(answers(&mut h, t + 100, "GET k\r\nEXISTS k\r\n"), "$-1\r\n:0\r\n");
        let t = t + 100;
        assert_eq!(answers(&mut h, t, "SET k v\r\nEXPIRE k -1\r\nGET k\r\n"), "+OK\r\n:1\r\n$-1\r\n");
        assert_eq!(answers(&mut h, t, "EXPIRE k x\r\n"), "-ERR value is not an integer or out of range\r\n");
    }

    #[test]
    fn connection_commands_clients_send() {
        let mut h = RespHandler::new(Small::new());
        assert_eq!(answers(&mut h, 0, "HELLO 3\r\n"), "-NOPROTO sorry, this protocol version is not supported\r\n");
        let hello = answers(&mut h, 0, "HELLO 2\r\n");
        assert!(hello.starts_with("*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n"), "{hello}");
        assert!(hello.ends_with("$7\r\nmodules\r\n*0\r\n"), "{hello}");
        assert_eq!(answers(&mut h, 0, "HELLO\r\n"), hello);
        assert_eq!(answers(&mut h, 0, "CLIENT SETINFO LIB-NAME redis-py\r\nCLIENT SETNAME me\r\n"), "+OK\r\n+OK\r\n");
        assert_eq!(answers(&mut h, 0, "COMMAND DOCS\r\nCOMMAND\r\n"), "*0\r\n*0\r\n");
        let config = answers(&mut h, 0, "CONFIG GET save\r\nCONFIG GET appendonly\r\nCONFIG GET nope\r\n");
        assert_eq!(config, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n*0\r\n");
        assert_eq!(answers(&mut h, 0, "SELECT 0\r\nSELECT 1\r\n"), "+OK\r\n-ERR DB index is out of range\r\n");
        assert_eq!(answers(&mut h, 0, "FLUSHALL\r\n"), "-ERR unknown command 'FLUSHALL'\r\n");
        assert_eq!(answers(&mut h, 0, "GET\r\n"), "-ERR wrong number of arguments for 'get' command\r\n");
        assert_eq!(answers(&mut h, 0, "INFO\r\n"), "$12\r\n# Keyspace\r\n\r\n");
        let (out, outcome) = run(&mut h, 0, b"QUIT\r\nPING\r\n");
        assert_eq!((out.as_str(), outcome), ("+OK\r\n", Outcome::Quit), "nothing after QUIT");
    }

    #[test]
    fn refusals_keep_the_connection() {
        let mut h = RespHandler::new(Small::new());
        let long = "x".repeat(600);
        let out = answers(&mut h, 0, &std::format!("SET k {long}\r\nPING\r\n"));
        assert_eq!(out, "-ERR value too long\r\n+PONG\r\n");
        let (out, outcome) = run(&mut h, 0, b"*1\r\n$-5\r\n");
        assert_eq!(out, "-ERR Protocol error: invalid bulk length\r\n");
        assert_eq!(outcome, Outcome::Close(RespError::InvalidBulkLength));
    }
}
