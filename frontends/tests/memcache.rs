//! docs/redis-and-memcached.md ("memcached") against every flavor that
//! serves it, over raw sockets: every text and meta command of the doc's
//! table with its flags and `noreply`, requests split at every byte,
//! 1,000-deep pipelines, binary values, values up to the value limit and one
//! byte over, expiry, broken streams, the memory cap and the idle timeout,
//! and one store shared with kvio frames and RESP. (`--flavor blocking
//! --memcache` is refused: resp.rs tests it with `--resp`.)

#[macro_use]
mod common;

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::text::{Reply, TextClient, doc_table_commands};
use common::*;

per_flavor!([threaded: Threaded, busy_poll: BusyPoll, epoll: Epoll, epoll_threads2: EpollLoops, uring: Uring, uring_threads2: UringLoops] [
    every_command_of_the_doc_is_known,
    storage_commands,
    retrieval_commands,
    cas_changes_on_every_write,
    incr_decr_and_touch,
    noreply_silences_every_text_command,
    connection_commands,
    meta_get,
    meta_set_delete_and_noop,
    meta_arithmetic,
    errors_keep_the_connection,
    full_store_answers_out_of_memory,
    requests_split_at_every_byte,
    pipeline_1000_deep,
    binary_values,
    large_values_and_the_value_limit,
    expiry,
    broken_streams_are_answered_then_closed,
    memory_cap_evicts,
    idle_timeout_closes,
    one_store_across_three_protocols,
]);

/// The store's value limit at the default `--max-frame-len` (docs: 1,047,527).
const VALUE_LIMIT: usize = 1_048_576 - 1_049;

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Lines up to and including `last`.
fn lines_until(mc: &mut TextClient, last: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = mc.line();
        let done = line == last;
        lines.push(line);
        if done {
            return lines;
        }
    }
}

/// `gets <key>`: the value's cas unique.
fn cas_of(mc: &mut TextClient, key: &str) -> u64 {
    mc.send(format!("gets {key}\r\n").as_bytes());
    let line = mc.line();
    let fields: Vec<&str> = line.split(' ').collect();
    assert!(fields.len() == 5 && fields[0] == "VALUE", "{line:?}");
    mc.block(fields[3].parse().unwrap());
    assert_eq!(mc.line(), "END");
    fields[4].parse().unwrap()
}

/// The number after `flag` in a meta reply line (`HD c12 t5`: `c` is 12).
fn meta_flag(line: &str, flag: char) -> Option<i64> {
    line.split(' ').skip(1).find_map(|f| f.strip_prefix(flag)?.parse().ok())
}

fn every_command_of_the_doc_is_known(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let names = doc_table_commands("memcached");
    assert_eq!(names.len(), 23, "the doc's table: {names:?}");
    let mut mc = server.memcache();
    for name in names.iter().filter(|n| *n != "quit") {
        // Alone (most then answer CLIENT_ERROR), then `mn`: nothing before `MN` is `ERROR`.
        let request = if name == "mn" { "mn\r\n".to_owned() } else { format!("{name}\r\nmn\r\n") };
        mc.send(request.as_bytes());
        let lines = lines_until(&mut mc, "MN");
        assert!(!lines.iter().any(|l| l == "ERROR"), "{name}: {lines:?}");
    }
    assert_eq!(mc.mc("nosuchcommand"), "ERROR", "an unknown command is ERROR");
    let mut quits = server.memcache();
    quits.send(b"quit\r\nversion\r\n");
    quits.expect_close();
}

fn storage_commands(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    assert_eq!(mc.mc_store("set k 5 0 2", b"hi"), "STORED");
    assert_eq!(mc.mc_get("k"), Some((5, b"hi".to_vec())));
    assert_eq!(mc.mc_store("set k 4294967295 0 3", b"big"), "STORED", "flags are 32 bits");
    assert_eq!(mc.mc_get("k"), Some((u32::MAX, b"big".to_vec())));
    assert_eq!(mc.mc_store("set k 0 0 0", b""), "STORED");
    assert_eq!(mc.mc_get("k"), Some((0, Vec::new())), "an empty value is a hit");

    assert_eq!(mc.mc_store("add k 1 0 1", b"x"), "NOT_STORED", "add finds the key");
    assert_eq!(mc.mc_store("add n 1 0 1", b"x"), "STORED");
    assert_eq!(mc.mc_store("replace nope 1 0 1", b"x"), "NOT_STORED", "replace does not find it");
    assert_eq!(mc.mc_store("replace n 2 0 1", b"y"), "STORED");
    assert_eq!(mc.mc_get("n"), Some((2, b"y".to_vec())));
    assert_eq!(mc.mc_get("nope"), None);

    // append and prepend keep the flags and the expiry.
    assert_eq!(mc.mc_store("set a 7 100 2", b"mi"), "STORED");
    assert_eq!(mc.mc_store("append a 0 0 2", b"dd"), "STORED");
    assert_eq!(mc.mc_store("prepend a 9 5 1", b"<"), "STORED");
    assert_eq!(mc.mc_get("a"), Some((7, b"<midd".to_vec())));
    assert!((99..=100).contains(&meta_flag(&mc.mc("mg a t"), 't').unwrap()), "the expiry stayed");
    assert_eq!(mc.mc_store("append nope 0 0 1", b"x"), "NOT_STORED");
    assert_eq!(mc.mc_store("prepend nope 0 0 1", b"x"), "NOT_STORED");
    assert_eq!(mc.mc_get("nope"), None);

    // cas: STORED with the unique, EXISTS with another, NOT_FOUND without the key.
    let cas = cas_of(&mut mc, "a");
    assert_eq!(mc.mc_store(&format!("cas a 3 0 1 {}", cas + 1), b"A"), "EXISTS");
    assert_eq!(mc.mc_store(&format!("cas a 3 0 1 {cas}"), b"A"), "STORED");
    assert_eq!(mc.mc_get("a"), Some((3, b"A".to_vec())));
    assert_eq!(mc.mc_store(&format!("cas a 3 0 1 {cas}"), b"B"), "EXISTS", "the unique changed");
    assert_eq!(mc.mc_store("cas nope 0 0 1 1", b"x"), "NOT_FOUND");

    assert_eq!(mc.mc("delete a"), "DELETED");
    assert_eq!(mc.mc("delete a"), "NOT_FOUND");
    assert_eq!(mc.mc("delete n 0"), "DELETED", "memcached's legacy `delete <key> 0`");
    assert_eq!(mc.mc_get("a"), None);
}

fn retrieval_commands(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    assert_eq!(mc.mc_store("set a 1 0 1", b"1"), "STORED");
    assert_eq!(mc.mc_store("set b 2 0 2", b"22"), "STORED");
    mc.send(b"get a nope b a\r\n");
    assert_eq!(mc.line(), "VALUE a 1 1");
    assert_eq!(mc.block(1), b"1");
    assert_eq!(mc.line(), "VALUE b 2 2");
    assert_eq!(mc.block(2), b"22");
    assert_eq!(mc.line(), "VALUE a 1 1", "a key named twice is answered twice");
    assert_eq!(mc.block(1), b"1");
    assert_eq!(mc.line(), "END");
    // (Two keys' uniques may coincide: a sharded store counts per shard.)
    let (cas_a, cas_b) = (cas_of(&mut mc, "a"), cas_of(&mut mc, "b"));
    mc.send(b"gets a b\r\n");
    assert_eq!(mc.line(), format!("VALUE a 1 1 {cas_a}"));
    assert_eq!(mc.block(1), b"1");
    assert_eq!(mc.line(), format!("VALUE b 2 2 {cas_b}"));
    assert_eq!(mc.block(2), b"22");
    assert_eq!(mc.line(), "END");
    // gat and gats: the same, after setting each key's expiry.
    mc.send(b"gat 100 a nope\r\n");
    assert_eq!(mc.line(), "VALUE a 1 1");
    assert_eq!(mc.block(1), b"1");
    assert_eq!(mc.line(), "END");
    assert!((99..=100).contains(&meta_flag(&mc.mc("mg a t"), 't').unwrap()));
    mc.send(b"gats 0 b\r\n");
    assert_eq!(mc.line(), format!("VALUE b 2 2 {cas_b}"));
    assert_eq!(mc.block(2), b"22");
    assert_eq!(mc.line(), "END");
    assert_eq!(mc.mc("mg b t"), "HD t-1", "exptime 0 is no expiry");
    assert_eq!(mc.mc("gat x a"), "CLIENT_ERROR bad command line format");
    assert_eq!(mc.mc("get"), "CLIENT_ERROR bad command line format");
}

/// One write to key `k`, over whichever connection it holds.
type Write<'a> = Box<dyn FnMut(&mut TextClient) + 'a>;

/// The cas unique changes on every write, whatever protocol wrote.
fn cas_changes_on_every_write(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    let mut redis = server.resp();
    let mut kvio = server.connect();
    assert_eq!(mc.mc_store("set k 0 0 1", b"a"), "STORED");
    let mut seen = vec![cas_of(&mut mc, "k")];
    let mut writes: Vec<Write> = vec![
        Box::new(|mc| assert_eq!(mc.mc_store("set k 0 0 1", b"b"), "STORED")),
        Box::new(|mc| assert_eq!(mc.mc_store("append k 0 0 1", b"c"), "STORED")),
        Box::new(|mc| assert_eq!(mc.mc_store("set k 0 0 1", b"1"), "STORED")),
        Box::new(|mc| assert_eq!(mc.mc("incr k 1"), "2")),
        Box::new(move |_| assert_eq!(redis.cmd_words("SET k 3"), Reply::ok())),
        Box::new(move |_| kvio.put_ok("k", "4")),
    ];
    for write in &mut writes {
        let before = *seen.last().unwrap();
        write(&mut mc);
        assert_eq!(mc.mc_store(&format!("cas k 0 0 1 {before}"), b"x"), "EXISTS");
        seen.push(cas_of(&mut mc, "k"));
    }
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a new unique per write: {seen:?}");
    assert_eq!(mc.mc("touch k 100"), "TOUCHED");
}

fn incr_decr_and_touch(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    assert_eq!(mc.mc_store("set n 3 0 1", b"9"), "STORED");
    assert_eq!(mc.mc("incr n 1"), "10");
    assert_eq!(mc.mc_get("n"), Some((3, b"10".to_vec())), "flags kept");
    assert_eq!(mc.mc("decr n 3"), "7");
    assert_eq!(mc.mc("decr n 100"), "0", "decr stops at 0");
    assert_eq!(mc.mc_store("set n 0 0 20", b"18446744073709551615"), "STORED");
    assert_eq!(mc.mc("incr n 2"), "1", "incr wraps at 2^64");
    assert_eq!(mc.mc("incr nope 1"), "NOT_FOUND");
    assert_eq!(mc.mc("decr nope 1"), "NOT_FOUND");
    assert_eq!(mc.mc_store("set s 0 0 3", b"abc"), "STORED");
    assert_eq!(mc.mc("incr s 1"), "CLIENT_ERROR cannot increment or decrement non-numeric value");
    assert_eq!(mc.mc("incr n x"), "CLIENT_ERROR invalid numeric delta argument");
    assert_eq!(mc.mc("incr n -1"), "CLIENT_ERROR invalid numeric delta argument");
    assert_eq!(mc.mc_get("n"), Some((0, b"1".to_vec())));

    assert_eq!(mc.mc("touch n 100"), "TOUCHED");
    assert!((99..=100).contains(&meta_flag(&mc.mc("mg n t"), 't').unwrap()));
    assert_eq!(mc.mc("touch nope 100"), "NOT_FOUND");
    assert_eq!(mc.mc("touch n 0"), "TOUCHED");
    assert_eq!(mc.mc("mg n t"), "HD t-1");
    assert_eq!(mc.mc("touch n -1"), "TOUCHED", "a negative exptime expires it now");
    assert_eq!(mc.mc_get("n"), None);
}

fn noreply_silences_every_text_command(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    let mut quiet = Vec::new();
    for (line, data) in [
        ("set k 1 0 1 noreply", Some(&b"1"[..])),
        ("add k 0 0 1 noreply", Some(b"x")),
        ("add a 0 0 1 noreply", Some(b"a")),
        ("replace a 2 0 1 noreply", Some(b"b")),
        ("append k 0 0 1 noreply", Some(b"0")),
        ("prepend k 0 0 1 noreply", Some(b"2")),
        ("cas a 0 0 1 1 noreply", Some(b"z")),
        ("incr k 1 noreply", None),
        ("decr k 2 noreply", None),
        ("touch k 100 noreply", None),
        ("delete a noreply", None),
        ("delete a noreply", None),
        ("verbosity 1 noreply", None),
    ] {
        quiet.extend_from_slice(format!("{line}\r\n").as_bytes());
        if let Some(data) = data {
            quiet.extend_from_slice(data);
            quiet.extend_from_slice(b"\r\n");
        }
    }
    quiet.extend_from_slice(b"mn\r\n");
    mc.send(&quiet);
    assert_eq!(mc.line(), "MN", "nothing answered before mn");
    assert_eq!(mc.mc_get("k"), Some((1, b"209".to_vec())));
    assert!((99..=100).contains(&meta_flag(&mc.mc("mg k t"), 't').unwrap()));
    assert_eq!(mc.mc_get("a"), None);
}

fn connection_commands(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    assert_eq!(mc.mc("version"), "VERSION 1.6.21");
    assert_eq!(mc.mc("verbosity 1"), "OK");
    assert_eq!(mc.mc_store("set k 0 0 1", b"v"), "STORED");
    mc.send(b"stats\r\n");
    let lines = lines_until(&mut mc, "END");
    let stat = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")).map(str::to_owned))
            .unwrap_or_else(|| panic!("no STAT {name}: {lines:?}"))
    };
    assert!(lines[..lines.len() - 1].iter().all(|l| l.starts_with("STAT ")), "{lines:?}");
    for name in ["pid", "uptime", "curr_connections", "total_connections", "cmd_get", "evictions", "bytes"] {
        stat(name);
    }
    assert_eq!(stat("version"), "1.6.21");
    assert_eq!(stat("cmd_set"), "1");
    assert_eq!(stat("curr_items"), "1");
    assert_eq!(stat("curr_connections"), "1");
    assert!((unix_seconds().abs_diff(stat("time").parse().unwrap())) <= 2, "time is the Unix time");
    assert_eq!(mc.mc("stats items"), "END", "stats <group> answers an empty END");
    assert_eq!(mc.mc("stats slabs"), "END");
    mc.send(b"quit\r\nversion\r\n");
    mc.expect_close();
}

fn meta_get(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    assert_eq!(mc.mc_store("set k 7 100 2", b"hi"), "STORED");
    let cas = cas_of(&mut mc, "k");
    mc.send(b"mg k v f s k O42\r\n");
    assert_eq!(mc.line(), "VA 2 f7 s2 kk O42");
    assert_eq!(mc.block(2), b"hi");
    let line = mc.mc("mg k t c");
    assert!((99..=100).contains(&meta_flag(&line, 't').unwrap()), "{line}");
    assert_eq!(meta_flag(&line, 'c'), Some(cas as i64), "{line}");
    assert_eq!(mc.mc("mg k"), "HD", "a hit without flags");
    assert_eq!(mc.mc("mg nope v"), "EN");
    // q: no EN on a miss; a hit is still answered.
    mc.send(b"mg nope v q\r\nmg k s q\r\nmn\r\n");
    assert_eq!(mc.line(), "HD s2");
    assert_eq!(mc.line(), "MN");
    // T: touched on the way.
    assert_eq!(mc.mc("mg k T0"), "HD");
    assert_eq!(mc.mc("mg k t"), "HD t-1");
    assert_eq!(mc.mc("mg k T500 t"), "HD t500");
    for unsupported in ["mg k N30", "mg k b", "mg k zz"] {
        assert_eq!(mc.mc(unsupported), "CLIENT_ERROR invalid flag", "{unsupported}");
    }
    assert_eq!(mc.mc("mg k Tx"), "CLIENT_ERROR bad token in command line format");
    assert_eq!(mc.mc(&format!("mg {}", "k".repeat(251))), "CLIENT_ERROR bad command line format");
}

fn meta_set_delete_and_noop(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    assert_eq!(mc.mc_store("ms k 2 T60 F7", b"hi"), "HD");
    mc.send(b"mg k v f t\r\n");
    assert_eq!(mc.line(), "VA 2 f7 t60");
    assert_eq!(mc.block(2), b"hi");
    assert_eq!(mc.mc_store("ms k 2 k O9", b"ho"), "HD kk O9");
    let line = mc.mc_store("ms k 2 c", b"hu");
    let cas = meta_flag(&line, 'c').unwrap_or_else(|| panic!("{line}"));
    assert_eq!(cas_of(&mut mc, "k") as i64, cas, "c returns the new unique");
    // Modes: E add, R replace, A append, P prepend, S set.
    assert_eq!(mc.mc_store("ms k 1 ME", b"x"), "NS");
    assert_eq!(mc.mc_store("ms new 1 ME", b"e"), "HD");
    assert_eq!(mc.mc_store("ms nope 1 MR", b"x"), "NS");
    assert_eq!(mc.mc_store("ms new 1 MR", b"r"), "HD");
    assert_eq!(mc.mc_store("ms new 1 MA", b"a"), "HD");
    assert_eq!(mc.mc_store("ms new 1 MP", b"p"), "HD");
    assert_eq!(mc.mc_store("ms nope 1 MA", b"x"), "NS");
    assert_eq!(mc.mc_store("ms new 3 MS", b"ras"), "HD");
    assert_eq!(mc.mc_get("new"), Some((0, b"ras".to_vec())));
    assert_eq!(mc.mc_get("nope"), None);
    // C: compare and swap.
    let cas = cas_of(&mut mc, "new");
    assert_eq!(mc.mc_store(&format!("ms new 1 C{}", cas + 1), b"x"), "EX");
    assert_eq!(mc.mc_store(&format!("ms new 1 C{cas}"), b"y"), "HD");
    assert_eq!(mc.mc_store("ms nope 1 C5", b"x"), "NF");
    // q: no HD; mn ends the quiet pipeline.
    mc.send(b"ms q 1 q\r\n1\r\nms q 1 q ME\r\n2\r\nmn\r\n");
    assert_eq!(mc.line(), "NS", "q hides HD only");
    assert_eq!(mc.line(), "MN");
    assert_eq!(mc.mc_get("q"), Some((0, b"1".to_vec())));
    for unsupported in ["ms k 1 I", "ms k 1 b"] {
        assert_eq!(mc.mc_store(unsupported, b"x"), "CLIENT_ERROR invalid flag", "{unsupported}");
    }
    assert_eq!(mc.mc_get("k"), Some((0, b"hu".to_vec())), "refused ms changed nothing");

    assert_eq!(mc.mc("md k k O1"), "HD kk O1");
    assert_eq!(mc.mc("md k"), "NF");
    mc.send(b"md q q\r\nmd q q\r\nmn\r\n");
    assert_eq!(mc.line(), "MN", "q hides HD and NF");
    assert_eq!(mc.mc_get("q"), None);
    for unsupported in ["md new C1", "md new I"] {
        assert_eq!(mc.mc(unsupported), "CLIENT_ERROR invalid flag", "{unsupported}");
    }
    assert_eq!(mc.mc("mn"), "MN");
}

fn meta_arithmetic(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    assert_eq!(mc.mc("ma c"), "NF");
    mc.send(b"ma c q\r\nmn\r\n");
    assert_eq!(mc.line(), "MN", "q hides NF");
    // N: created with J (the delta is not applied), and the TTL given.
    mc.send(b"ma c N100 J10 v t\r\n");
    assert_eq!(mc.line(), "VA 2 t100");
    assert_eq!(mc.block(2), b"10");
    assert_eq!(mc.mc("ma c"), "HD");
    mc.send(b"ma c D5 v k O3\r\n");
    assert_eq!(mc.line(), "VA 2 kc O3");
    assert_eq!(mc.block(2), b"16");
    mc.send(b"ma c MD D100 v\r\n");
    assert_eq!(mc.line(), "VA 1");
    assert_eq!(mc.block(1), b"0");
    for mode in ["MI", "M+"] {
        assert_eq!(mc.mc(&format!("ma c {mode} D2")), "HD");
    }
    assert_eq!(mc.mc("ma c M- D1"), "HD");
    let line = mc.mc("ma c c");
    assert_eq!(meta_flag(&line, 'c'), Some(cas_of(&mut mc, "c") as i64), "{line}");
    assert_eq!(mc.mc_get("c"), Some((0, b"4".to_vec())));
    mc.send(b"ma c q\r\nmn\r\n");
    assert_eq!(mc.line(), "MN", "q hides HD");
    assert_eq!(mc.mc_store("set s 0 0 1", b"x"), "STORED");
    assert_eq!(mc.mc("ma s"), "CLIENT_ERROR cannot increment or decrement non-numeric value");
    assert_eq!(mc.mc("ma c Dx"), "CLIENT_ERROR bad token in command line format");
    assert_eq!(mc.mc("ma c Z"), "CLIENT_ERROR invalid flag");
}

fn errors_keep_the_connection(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    assert_eq!(mc.mc("bogus"), "ERROR");
    assert_eq!(mc.mc("flush_all"), "ERROR", "not served");
    assert_eq!(mc.mc(""), "ERROR", "an empty line");
    // Keys: at most 250 bytes, no control characters.
    let key = "k".repeat(250);
    assert_eq!(mc.mc_store(&format!("set {key} 0 0 1"), b"v"), "STORED");
    assert_eq!(mc.mc_get(&key), Some((0, b"v".to_vec())));
    let long = "k".repeat(251);
    let bad = "CLIENT_ERROR bad command line format";
    assert_eq!(mc.mc_store(&format!("set {long} 0 0 1"), b"v"), bad, "the block is read and dropped");
    assert_eq!(mc.mc(&format!("get {long}")), bad);
    assert_eq!(mc.mc_store("set a\x01b 0 0 1", b"v"), bad);
    assert_eq!(mc.mc("get a\x7fb"), bad);
    assert_eq!(mc.mc(&format!("delete {long}")), bad);
    // Bad numbers: flags, exptime; the block is read and dropped.
    assert_eq!(mc.mc_store("set k x 0 1", b"v"), bad);
    assert_eq!(mc.mc_store("set k 4294967296 0 1", b"v"), bad, "flags over 32 bits");
    assert_eq!(mc.mc_store("set k 0 x 1", b"v"), bad);
    assert_eq!(mc.mc_store("cas k 0 0 1 x", b"v"), bad);
    assert_eq!(mc.mc_store("set k 0 0 1 extra", b"v"), bad);
    // A bad length: no block is read; the next line is a command again.
    assert_eq!(mc.mc("set k 0 0 x"), bad);
    assert_eq!(mc.mc("touch k x"), bad);
    assert_eq!(mc.mc_get("k"), None, "nothing refused was stored");
    assert_eq!(mc.mc("version"), "VERSION 1.6.21");
}

fn full_store_answers_out_of_memory(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &["--store-entries", "64"]);
    let mut mc = server.memcache();
    let mut stored = 0;
    let refused = (0..640).find(|i| match mc.mc_store(&format!("set k{i} 0 0 1"), b"v").as_str() {
        "STORED" => {
            stored += 1;
            false
        }
        line => {
            assert_eq!(line, "SERVER_ERROR out of memory storing object");
            true
        }
    });
    assert!(refused.is_some() && stored >= 32, "the store filled ({stored} stored)");
    assert_eq!(mc.mc_store("set k0 0 0 3", b"new"), "STORED", "an existing key may still be overwritten");
    assert_eq!(mc.mc_get("k0"), Some((0, b"new".to_vec())));
    assert_eq!(mc.mc("version"), "VERSION 1.6.21");
}

/// Requests covering the parser's paths (text and meta lines, data blocks
/// with `\r\n` inside, `\n` line ends), and the lines they get.
fn split_script() -> (Vec<u8>, Vec<&'static str>) {
    let script = b"set split 3 0 4\r\na\r\nb\r\nget split nope\r\n\nms m 2 T0\r\n\r\n\r\nmg m v\nmn\r\n".to_vec();
    // The value `\r\n` reads as two empty lines.
    let want = vec!["STORED", "VALUE split 3 4", "a", "b", "END", "ERROR", "HD", "VA 2", "", "", "MN"];
    (script, want)
}

fn requests_split_at_every_byte(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    let (script, want) = split_script();
    let read_all = |mc: &mut TextClient| (0..want.len()).map(|_| mc.line()).collect::<Vec<_>>();
    for byte in &script {
        mc.send(std::slice::from_ref(byte));
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(read_all(&mut mc), want, "byte by byte");
    for at in 1..script.len() {
        mc.send(&script[..at]);
        thread::sleep(Duration::from_millis(1));
        mc.send(&script[at..]);
        assert_eq!(read_all(&mut mc), want, "split at byte {at}");
    }
}

fn pipeline_1000_deep(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    let mut pipeline = Vec::new();
    for i in 0..1000 {
        pipeline.extend_from_slice(format!("set p{i} {i} 0 {}\r\nv{i}\r\n", format!("v{i}").len()).as_bytes());
    }
    for i in 0..1000 {
        pipeline.extend_from_slice(format!("get p{i}\r\nmg p{i} s\r\n").as_bytes());
    }
    let writer = mc.send_in_background(pipeline);
    for i in 0..1000 {
        assert_eq!(mc.line(), "STORED", "set {i}");
    }
    for i in 0..1000 {
        let value = format!("v{i}");
        assert_eq!(mc.line(), format!("VALUE p{i} {i} {}", value.len()));
        assert_eq!(mc.block(value.len()), value.as_bytes());
        assert_eq!(mc.line(), "END");
        assert_eq!(mc.line(), format!("HD s{}", value.len()));
    }
    writer.join().unwrap().expect("the pipeline went out");
}

fn binary_values(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    let every_byte: Vec<u8> = (0..=255u8).chain(*b"\r\nEND\r\nVALUE x 0 1\r\n").chain((0..=255u8).rev()).collect();
    assert_eq!(mc.mc_store(&format!("set bin 0 0 {}", every_byte.len()), &every_byte), "STORED");
    assert_eq!(mc.mc_get("bin"), Some((0, every_byte.clone())));
    assert_eq!(mc.mc_store(&format!("ms meta {}", every_byte.len()), &every_byte), "HD");
    mc.send(b"mg meta v\r\n");
    assert_eq!(mc.line(), format!("VA {}", every_byte.len()));
    assert_eq!(mc.block(every_byte.len()), every_byte);
    assert_eq!(mc.mc_store("append bin 0 0 2", b"\r\n"), "STORED");
    assert_eq!(mc.mc_get("bin").unwrap().1, [&every_byte[..], b"\r\n"].concat());
    // Every byte as a one-byte value.
    for b in 0..=255u8 {
        assert_eq!(mc.mc_store(&format!("set b{b} {b} 0 1"), &[b]), "STORED", "byte {b}");
    }
    for b in 0..=255u8 {
        assert_eq!(mc.mc_get(&format!("b{b}")), Some((u32::from(b), vec![b])), "byte {b}");
    }
    // Keys may hold any byte but spaces and control characters.
    let key = "ключ-\u{1f511}-~!\"#$%";
    assert_eq!(mc.mc_store(&format!("set {key} 0 0 1"), b"k"), "STORED");
    assert_eq!(mc.mc_get(key), Some((0, b"k".to_vec())));
}

fn large_values_and_the_value_limit(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    let value = |len: usize| -> Vec<u8> { (0..len).map(|i| (i * 7 % 251) as u8).collect() };
    let million = value(1_000_000);
    assert_eq!(mc.mc_store("set million 0 0 1000000", &million), "STORED");
    assert_eq!(mc.mc_get("million"), Some((0, million.clone())));
    let limit = value(VALUE_LIMIT);
    assert_eq!(mc.mc_store(&format!("set limit 1 0 {VALUE_LIMIT}"), &limit), "STORED", "exactly the value limit");
    assert_eq!(mc.mc_get("limit"), Some((1, limit.clone())));
    // One byte over: read and dropped; the old value stays, the connection goes on.
    let over = value(VALUE_LIMIT + 1);
    let too_large = "SERVER_ERROR object too large for cache";
    assert_eq!(mc.mc_store(&format!("set limit 2 0 {}", VALUE_LIMIT + 1), &over), too_large);
    assert_eq!(mc.mc_store(&format!("ms limit {}", VALUE_LIMIT + 1), &over), too_large);
    assert_eq!(mc.mc_store("append limit 0 0 1", b"x"), too_large, "append past the limit");
    assert_eq!(mc.mc_get("limit"), Some((1, limit)));
    // Far over (8 MiB): refused the same way, never buffered.
    let far = vec![b'x'; 8 << 20];
    let writer = {
        let mut request = format!("set far 0 0 {}\r\n", far.len()).into_bytes();
        request.extend_from_slice(&far);
        request.extend_from_slice(b"\r\nversion\r\n");
        mc.send_in_background(request)
    };
    assert_eq!(mc.line(), too_large);
    assert_eq!(mc.line(), "VERSION 1.6.21");
    writer.join().unwrap().expect("8 MiB went out");
    assert_eq!(mc.mc_get("far"), None);
}

/// exptime: 0 never, negative already, up to 30 days relative, beyond a
/// Unix time; short ones polled against a deadline, not slept through.
fn expiry(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    assert_eq!(mc.mc_store("set never 0 0 1", b"v"), "STORED");
    assert_eq!(mc.mc_store("set past 0 -1 1", b"v"), "STORED");
    assert_eq!(mc.mc_get("past"), None, "a negative exptime is already expired");
    let month = 60 * 60 * 24 * 30;
    assert_eq!(mc.mc_store(&format!("set month 0 {month} 1"), b"v"), "STORED");
    assert!((month - 1..=month).contains(&meta_flag(&mc.mc("mg month t"), 't').unwrap()), "30 days: relative");
    let at = unix_seconds() + 100;
    assert_eq!(mc.mc_store(&format!("set unix 0 {at} 1"), b"v"), "STORED");
    assert!((98..=100).contains(&meta_flag(&mc.mc("mg unix t"), 't').unwrap()), "beyond 30 days: a Unix time");
    assert_eq!(mc.mc_store(&format!("set old 0 {} 1", month + 1), b"v"), "STORED");
    assert_eq!(mc.mc_get("old"), None, "a Unix time in 1970 is past");

    let started = Instant::now();
    assert_eq!(mc.mc_store("set short 0 1 1", b"v"), "STORED");
    assert_eq!(mc.mc_store("ms meta 1 T1", b"v"), "HD");
    assert_eq!(mc.mc_store("set touched 0 0 1", b"v"), "STORED");
    assert_eq!(mc.mc("touch touched 1"), "TOUCHED");
    for key in ["short", "meta", "touched"] {
        let gone =
            poll_until(Duration::from_secs(5), Duration::from_millis(10), || mc.mc_get(key).is_none().then_some(()));
        assert!(gone.is_some(), "{key} did not expire within 5 s");
        assert_eq!(mc.mc(&format!("mg {key} v")), "EN");
        assert_eq!(mc.mc(&format!("touch {key} 100")), "NOT_FOUND", "an expired key is absent");
        assert_eq!(mc.mc(&format!("incr {key} 1")), "NOT_FOUND");
        assert_eq!(mc.mc_store(&format!("replace {key} 0 0 1"), b"w"), "NOT_STORED");
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "exptime 1 lasted {:?}", started.elapsed());
    assert_eq!(mc.mc_store("add short 0 0 1", b"w"), "STORED", "add finds an expired key absent");
    assert_eq!(mc.mc("mg short v t"), "VA 1 t-1");
    assert_eq!(mc.line(), "w");
    assert_eq!(mc.mc_get("never"), Some((0, b"v".to_vec())));
}

fn broken_streams_are_answered_then_closed(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut bystander = server.memcache();
    assert_eq!(bystander.mc_store("set kept 0 0 1", b"v"), "STORED");
    let mut long_line = b"get ".to_vec();
    long_line.resize(64 * 1024 + 1, b'k');
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"set k 0 0 1\r\nxy\r\n".to_vec(), "CLIENT_ERROR bad data chunk"),
        (b"ms k 2\r\nabc".to_vec(), "CLIENT_ERROR bad data chunk"),
        (long_line, "CLIENT_ERROR line too long"),
    ];
    for (broken, error) in cases {
        let mut victim = server.memcache();
        let mut bytes = b"version\r\n".to_vec();
        bytes.extend_from_slice(&broken);
        victim.send(&bytes);
        assert_eq!(victim.line(), "VERSION 1.6.21", "what came before is answered");
        assert_eq!(victim.line(), error);
        victim.expect_close();
        assert_eq!(bystander.mc_get("kept"), Some((0, b"v".to_vec())), "others are unaffected");
    }
    assert_eq!(bystander.mc_get("k"), None, "nothing of the broken requests was stored");
}

fn memory_cap_evicts(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &["--max-client-memory", "64K"]);
    let mut bystander = server.memcache();
    assert_eq!(bystander.mc_store("set kept 0 0 1", b"v"), "STORED");
    let mut greedy = server.memcache();
    // A data block of 200 KB, of which 100 KB come and the rest never do.
    let mut partial = b"set k 0 0 200000\r\n".to_vec();
    partial.resize(partial.len() + 100_000, b'x');
    let writer = greedy.send_in_background(partial);
    assert_eq!(
        greedy.try_line().map(String::from_utf8),
        Some(Ok("SERVER_ERROR client memory limit reached (--max-client-memory); closing".to_owned()))
    );
    greedy.expect_close();
    let _ = writer.join().unwrap();
    assert_eq!(bystander.mc_get("kept"), Some((0, b"v".to_vec())));
    assert_eq!(bystander.mc_get("k"), None);
}

fn idle_timeout_closes(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &["--idle-timeout-ms", "300"]);
    let started = Instant::now();
    let mut mc = server.memcache();
    assert_eq!(mc.mc("version"), "VERSION 1.6.21");
    // Half a request counts as idle too.
    let mut half = server.memcache();
    half.send(b"set k 0 0 10\r\nabc");
    assert!(mc.closed_by_server(), "not closed within {IO_TIMEOUT:?}");
    assert!(half.closed_by_server(), "not closed within {IO_TIMEOUT:?}");
    assert!(started.elapsed() >= Duration::from_millis(300), "closed after {:?}", started.elapsed());
    assert_eq!(server.memcache().mc("version"), "VERSION 1.6.21", "the listener still serves");
}

/// And back: what memcached stores, kvio frames and RESP read; flags and
/// cas survive only memcached's own writes.
fn one_store_across_three_protocols(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut mc = server.memcache();
    let mut redis = server.resp();
    let mut kvio = server.connect();
    assert_eq!(mc.mc_store("set m 12 0 5", b"hello"), "STORED");
    assert_eq!(kvio.get("m").as_deref(), Some("hello"));
    assert_eq!(redis.cmd_words("GET m"), Reply::bulk("hello"));
    assert_eq!(mc.mc_store("append m 0 0 1", b"!"), "STORED");
    assert_eq!(kvio.get("m").as_deref(), Some("hello!"));
    assert_eq!(redis.cmd_words("SET m resp"), Reply::ok());
    assert_eq!(mc.mc_get("m"), Some((0, b"resp".to_vec())), "a RESP SET stores flags 0");
    kvio.put_ok("m", "kvio");
    assert_eq!(mc.mc_get("m"), Some((0, b"kvio".to_vec())));
    // Numbers written elsewhere count in incr.
    kvio.put_ok("n", "41");
    assert_eq!(mc.mc("incr n 1"), "42");
    assert_eq!(redis.cmd_words("GET n"), Reply::bulk("42"));
    // Expiry set over memcached, read over RESP.
    assert_eq!(mc.mc("touch n 100"), "TOUCHED");
    let ttl = redis.cmd_words("TTL n");
    assert!(matches!(ttl, Reply::Integer(99..=100)), "{ttl:?}");
    // Binary over memcached: RESP reads it; kvio frames answer the documented error.
    assert_eq!(mc.mc_store("set bin 0 0 3", b"\x80\x81\x82"), "STORED");
    assert_eq!(redis.cmd_words("GET bin"), Reply::bulk(b"\x80\x81\x82"));
    let response = kvio.request(&msg(GET, "bin", ""));
    assert_eq!((response.kind, response.status), (0, NOT_OK), "{response:?}");
    // A memcached delete, seen by both.
    assert_eq!(mc.mc("md m"), "HD");
    assert_eq!(kvio.get("m"), None);
    assert_eq!(redis.cmd_words("EXISTS m n bin"), Reply::Integer(2));
}
