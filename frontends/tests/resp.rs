//! docs/redis-and-memcached.md ("RESP2") against every flavor that serves
//! it, over raw sockets: every command of the doc's table, requests split at
//! every byte, 1,000-deep pipelines, binary keys and values, values up to
//! the value limit and one byte over, expiry, broken streams, the memory cap
//! and the idle timeout, and one store shared with kvio frames and
//! memcached. The blocking flavor refuses `--resp` (its own test).

#[macro_use]
mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::text::{Reply, TextClient, doc_table_commands, multibulk};
use common::*;

per_flavor!([threaded: Threaded, busy_poll: BusyPoll, epoll: Epoll, epoll_threads2: EpollLoops, uring: Uring, uring_threads2: UringLoops] [
    every_command_of_the_doc_is_known,
    connection_commands_clients_send,
    strings_and_keys,
    set_options,
    expiry_commands,
    short_ttls_expire,
    errors_keep_the_connection,
    full_store_answers_oom,
    requests_split_at_every_byte,
    pipeline_1000_deep,
    binary_keys_and_values,
    large_values_and_the_value_limit,
    broken_streams_are_answered_then_closed,
    memory_cap_evicts,
    idle_timeout_closes,
    one_store_across_three_protocols,
    info_counts_what_every_protocol_did,
]);

/// The store's value limit at the default `--max-frame-len` (docs: 1,047,527).
const VALUE_LIMIT: usize = 1_048_576 - 1_049;

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn integer(reply: Reply) -> i64 {
    match reply {
        Reply::Integer(n) => n,
        other => panic!("not an integer reply: {other:?}"),
    }
}

fn every_command_of_the_doc_is_known(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let names = doc_table_commands("RESP2");
    assert_eq!(names.len(), 21, "the doc's table: {names:?}");
    let mut redis = server.resp();
    for name in names.iter().filter(|n| *n != "QUIT") {
        // Alone (most then answer their arity error): never "unknown".
        let reply = redis.cmd(&[name.as_bytes()]);
        assert!(!matches!(&reply, Reply::Error(e) if e.starts_with("ERR unknown command")), "{name}: {reply:?}");
    }
    // COMMAND COUNT is the table's count.
    assert_eq!(redis.cmd_words("COMMAND COUNT"), Reply::Integer(names.len() as i64));
    let mut quits = server.resp();
    assert_eq!(quits.cmd_words("QUIT"), Reply::ok());
    quits.expect_close();
}

fn connection_commands_clients_send(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    assert_eq!(redis.cmd_words("PING"), Reply::simple("PONG"));
    assert_eq!(redis.cmd_words("ping hello"), Reply::bulk("hello"));
    assert_eq!(redis.cmd_words("PING a b"), Reply::error("ERR wrong number of arguments for 'ping' command"));
    assert_eq!(redis.cmd_words("ECHO hi"), Reply::bulk("hi"));
    assert_eq!(redis.cmd_words("SELECT 0"), Reply::ok());
    assert_eq!(redis.cmd_words("SELECT 1"), Reply::error("ERR DB index is out of range"));
    assert_eq!(redis.cmd_words("SELECT x"), Reply::error("ERR value is not an integer or out of range"));

    let hello = Reply::Array(vec![
        Reply::bulk("server"),
        Reply::bulk("redis"),
        Reply::bulk("version"),
        Reply::bulk("7.0.0"),
        Reply::bulk("proto"),
        Reply::Integer(2),
        Reply::bulk("id"),
        Reply::Integer(1),
        Reply::bulk("mode"),
        Reply::bulk("standalone"),
        Reply::bulk("role"),
        Reply::bulk("master"),
        Reply::bulk("modules"),
        Reply::Array(vec![]),
    ]);
    assert_eq!(redis.cmd_words("HELLO"), hello);
    assert_eq!(redis.cmd_words("HELLO 2"), hello);
    assert_eq!(redis.cmd_words("HELLO 2 SETNAME me"), hello);
    // What redis-py sends first; on this answer it falls back to RESP2.
    assert_eq!(redis.cmd_words("HELLO 3"), Reply::error("NOPROTO sorry, this protocol version is not supported"));

    assert_eq!(redis.cmd_words("CLIENT SETINFO LIB-NAME redis-py"), Reply::ok());
    assert_eq!(redis.cmd_words("CLIENT SETNAME me"), Reply::ok());
    assert_eq!(redis.cmd_words("CLIENT GETNAME"), Reply::Nil, "names are not kept");
    assert_eq!(redis.cmd_words("CLIENT ID"), Reply::Integer(1));
    assert!(
        matches!(redis.cmd_words("CLIENT KILL x"), Reply::Error(e) if e.starts_with("ERR unknown subcommand 'KILL'"))
    );

    assert_eq!(redis.cmd_words("COMMAND"), Reply::Array(vec![]));
    assert_eq!(redis.cmd_words("COMMAND DOCS"), Reply::Array(vec![]));
    assert_eq!(redis.cmd_words("COMMAND DOCS get"), Reply::Array(vec![]));
    let pair = |k: &str, v: &str| [Reply::bulk(k), Reply::bulk(v)];
    assert_eq!(redis.cmd_words("CONFIG GET save"), Reply::Array(pair("save", "").to_vec()));
    assert_eq!(redis.cmd_words("CONFIG GET appendonly"), Reply::Array(pair("appendonly", "no").to_vec()));
    assert_eq!(redis.cmd_words("CONFIG GET databases"), Reply::Array(pair("databases", "1").to_vec()));
    let all: Vec<Reply> = [pair("save", ""), pair("appendonly", "no"), pair("databases", "1")].concat();
    assert_eq!(redis.cmd_words("CONFIG GET *"), Reply::Array(all));
    assert_eq!(redis.cmd_words("CONFIG GET maxmemory"), Reply::Array(vec![]));
    assert!(matches!(redis.cmd_words("CONFIG SET save x"), Reply::Error(_)));

    // QUIT: +OK, and nothing after it is read.
    redis.send(&[multibulk(&[b"QUIT"]), multibulk(&[b"PING"])].concat());
    assert_eq!(redis.reply(), Reply::ok());
    redis.expect_close();
}

fn strings_and_keys(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    assert_eq!(redis.cmd_words("GET k"), Reply::Nil);
    assert_eq!(redis.cmd_words("SET k v"), Reply::ok());
    assert_eq!(redis.cmd_words("GET k"), Reply::bulk("v"));
    assert_eq!(redis.cmd_words("SET k w"), Reply::ok());
    assert_eq!(redis.cmd_words("GET k"), Reply::bulk("w"));
    assert_eq!(redis.cmd(&[b"SET", b"empty", b""]), Reply::ok());
    assert_eq!(redis.cmd_words("GET empty"), Reply::bulk(""), "an empty value is not nil");
    assert_eq!(redis.cmd_words("MSET a 1 b 2"), Reply::ok());
    let (one, two): (&[u8], &[u8]) = (b"1", b"2");
    assert_eq!(redis.cmd_words("MGET a nope b"), Reply::bulks(&[Some(one), None, Some(two)]));
    assert_eq!(redis.cmd_words("EXISTS a a nope b"), Reply::Integer(3), "a key named twice counts twice");
    assert_eq!(redis.cmd_words("DBSIZE"), Reply::Integer(4));
    assert_eq!(redis.cmd_words("DEL a b nope"), Reply::Integer(2));
    assert_eq!(redis.cmd_words("EXISTS a b"), Reply::Integer(0));
    assert_eq!(redis.cmd_words("DBSIZE"), Reply::Integer(2));
    assert_eq!(redis.cmd_words("MSET a"), Reply::error("ERR wrong number of arguments for 'mset' command"));
    assert_eq!(redis.cmd_words("MSET a 1 b"), Reply::error("ERR wrong number of arguments for 'mset' command"));
    // Not atomic: the pairs before a refusal are stored, those after it are not.
    let long = vec![b'k'; 1025];
    let reply = redis.cmd(&[b"MSET", b"x", b"1", &long, b"2", b"y", b"3"]);
    assert_eq!(reply, Reply::error("ERR key too long"));
    assert_eq!(redis.cmd_words("EXISTS x y"), Reply::Integer(1));
    assert_eq!(redis.cmd_words("GET x"), Reply::bulk("1"));
    // Command names in any case.
    assert_eq!(redis.cmd_words("gEt x"), Reply::bulk("1"));
    // Inline commands, as telnet sends them: words split on spaces and tabs.
    redis.send(b"SET inline  \t spaced\r\nGET inline\r\n");
    assert_eq!((redis.reply(), redis.reply()), (Reply::ok(), Reply::bulk("spaced")));
}

fn set_options(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    assert_eq!(redis.cmd_words("SET k v NX"), Reply::ok());
    assert_eq!(redis.cmd_words("SET k w NX"), Reply::Nil, "NX not met");
    assert_eq!(redis.cmd_words("GET k"), Reply::bulk("v"));
    assert_eq!(redis.cmd_words("SET nope w XX"), Reply::Nil, "XX not met");
    assert_eq!(redis.cmd_words("EXISTS nope"), Reply::Integer(0));
    assert_eq!(redis.cmd_words("SET k w XX GET"), Reply::bulk("v"), "GET: the old value");
    assert_eq!(redis.cmd_words("SET fresh z GET"), Reply::Nil);
    assert_eq!(redis.cmd_words("GET fresh"), Reply::bulk("z"));
    assert_eq!(redis.cmd_words("SET k x NX GET"), Reply::bulk("w"), "NX not met, GET: the value");
    assert_eq!(redis.cmd_words("GET k"), Reply::bulk("w"));

    // Expiry options, each checked by TTL/PTTL (rounded: 100 s less a few ms is 100).
    assert_eq!(redis.cmd_words("SET k v EX 100"), Reply::ok());
    assert!((99..=100).contains(&integer(redis.cmd_words("TTL k"))));
    assert_eq!(redis.cmd_words("SET k v PX 100000"), Reply::ok());
    assert!((95_000..=100_000).contains(&integer(redis.cmd_words("PTTL k"))));
    assert_eq!(redis.cmd(&[b"SET", b"k", b"v", b"EXAT", (unix_seconds() + 100).to_string().as_bytes()]), Reply::ok());
    assert!((98..=100).contains(&integer(redis.cmd_words("TTL k"))));
    let pxat = (unix_seconds() + 100) * 1000;
    assert_eq!(redis.cmd(&[b"SET", b"k", b"v", b"PXAT", pxat.to_string().as_bytes()]), Reply::ok());
    assert!((98..=100).contains(&integer(redis.cmd_words("TTL k"))));
    assert_eq!(redis.cmd_words("SET k w KEEPTTL"), Reply::ok());
    assert!((98..=100).contains(&integer(redis.cmd_words("TTL k"))), "KEEPTTL keeps it");
    assert_eq!(redis.cmd_words("GET k"), Reply::bulk("w"));
    assert_eq!(redis.cmd_words("SET k v"), Reply::ok());
    assert_eq!(redis.cmd_words("TTL k"), Reply::Integer(-1), "a plain SET drops the expiry");

    let syntax = Reply::error("ERR syntax error");
    assert_eq!(redis.cmd_words("SET k v NX XX"), syntax);
    assert_eq!(redis.cmd_words("SET k v EX 1 PX 1"), syntax);
    assert_eq!(redis.cmd_words("SET k v EX 1 KEEPTTL"), syntax);
    assert_eq!(redis.cmd_words("SET k v EX"), syntax);
    assert_eq!(redis.cmd_words("SET k v BOGUS"), syntax);
    let invalid = Reply::error("ERR invalid expire time in 'set' command");
    assert_eq!(redis.cmd_words("SET k v EX 0"), invalid);
    assert_eq!(redis.cmd_words("SET k v PX -5"), invalid);
    assert_eq!(redis.cmd_words("SET k v EX ten"), Reply::error("ERR value is not an integer or out of range"));
    assert_eq!(redis.cmd_words("SET k"), Reply::error("ERR wrong number of arguments for 'set' command"));
    assert_eq!(redis.cmd_words("GET k"), Reply::bulk("v"), "no refused SET changed it");
}

fn expiry_commands(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    assert_eq!(redis.cmd_words("SET k v"), Reply::ok());
    assert_eq!(redis.cmd_words("TTL k"), Reply::Integer(-1));
    assert_eq!(redis.cmd_words("TTL nope"), Reply::Integer(-2));
    assert_eq!(redis.cmd_words("PTTL nope"), Reply::Integer(-2));
    assert_eq!(redis.cmd_words("EXPIRE k 100"), Reply::Integer(1));
    assert_eq!(redis.cmd_words("EXPIRE nope 100"), Reply::Integer(0));
    assert!((99..=100).contains(&integer(redis.cmd_words("TTL k"))));
    assert_eq!(redis.cmd_words("PEXPIRE k 50000"), Reply::Integer(1));
    assert!((45_000..=50_000).contains(&integer(redis.cmd_words("PTTL k"))));
    assert_eq!(redis.cmd_words("PERSIST k"), Reply::Integer(1));
    assert_eq!(redis.cmd_words("PERSIST k"), Reply::Integer(0), "no expiry left to remove");
    assert_eq!(redis.cmd_words("PERSIST nope"), Reply::Integer(0));
    assert_eq!(redis.cmd_words("TTL k"), Reply::Integer(-1));
    assert_eq!(redis.cmd_words("EXPIRE k x"), Reply::error("ERR value is not an integer or out of range"));
    assert!(matches!(redis.cmd_words("EXPIRE k 10 NX"), Reply::Error(_)), "the options are refused");
    assert_eq!(redis.cmd_words("TTL k"), Reply::Integer(-1), "a refused EXPIRE changed nothing");
    // Zero or less expires it now.
    assert_eq!(redis.cmd_words("EXPIRE k 0"), Reply::Integer(1));
    assert_eq!(redis.cmd_words("GET k"), Reply::Nil);
    assert_eq!(redis.cmd_words("SET k v"), Reply::ok());
    assert_eq!(redis.cmd_words("PEXPIRE k -1"), Reply::Integer(1));
    assert_eq!(redis.cmd_words("EXISTS k"), Reply::Integer(0));
    assert_eq!(redis.cmd_words("TTL k"), Reply::Integer(-2));
}

/// Short TTLs run out: polled against a deadline, not slept through.
fn short_ttls_expire(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    assert_eq!(redis.cmd_words("SET long v EX 100"), Reply::ok());
    assert_eq!(redis.cmd_words("SET px v PX 50"), Reply::ok());
    let left = integer(redis.cmd_words("PTTL px"));
    assert!(left <= 50, "PX is milliseconds: {left}");
    assert_eq!(redis.cmd_words("SET ex v EX 1"), Reply::ok());
    assert_eq!(redis.cmd_words("SET pexpired v"), Reply::ok());
    assert_eq!(redis.cmd_words("PEXPIRE pexpired 30"), Reply::Integer(1));
    let gone = |redis: &mut TextClient, key: &str| {
        poll_until(Duration::from_secs(5), Duration::from_millis(10), || {
            (redis.cmd(&[b"GET", key.as_bytes()]) == Reply::Nil).then_some(())
        })
        .is_some()
    };
    let started = Instant::now();
    for key in ["px", "pexpired", "ex"] {
        assert!(gone(&mut redis, key), "{key} did not expire within 5 s");
        assert_eq!(redis.cmd(&[b"TTL", key.as_bytes()]), Reply::Integer(-2));
        assert_eq!(redis.cmd(&[b"EXISTS", key.as_bytes()]), Reply::Integer(0));
        assert_eq!(redis.cmd(&[b"PERSIST", key.as_bytes()]), Reply::Integer(0));
        assert_eq!(redis.cmd(&[b"EXPIRE", key.as_bytes(), b"100"]), Reply::Integer(0), "an expired key is absent");
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "EX 1 lasted {:?}", started.elapsed());
    assert_eq!(redis.cmd_words("GET long"), Reply::bulk("v"));
    // An expired key can be set again, without its old expiry.
    assert_eq!(redis.cmd_words("SET px again"), Reply::ok());
    assert_eq!(redis.cmd_words("TTL px"), Reply::Integer(-1));
}

fn errors_keep_the_connection(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    assert_eq!(redis.cmd_words("FLUSHALL"), Reply::error("ERR unknown command 'FLUSHALL'"));
    assert_eq!(redis.cmd_words("lpush l x"), Reply::error("ERR unknown command 'lpush'"));
    for (command, lower) in [
        ("GET", "get"),
        ("GET a b", "get"),
        ("DEL", "del"),
        ("EXISTS", "exists"),
        ("MGET", "mget"),
        ("EXPIRE k", "expire"),
        ("PEXPIRE k", "pexpire"),
        ("TTL", "ttl"),
        ("PTTL a b", "pttl"),
        ("PERSIST", "persist"),
        ("DBSIZE x", "dbsize"),
        ("ECHO", "echo"),
        ("SELECT", "select"),
    ] {
        let want = format!("ERR wrong number of arguments for '{lower}' command");
        assert_eq!(redis.cmd_words(command), Reply::Error(want), "{command}");
    }
    // Keys: up to 1,024 bytes.
    let key = vec![b'k'; 1024];
    assert_eq!(redis.cmd(&[b"SET", &key, b"v"]), Reply::ok());
    assert_eq!(redis.cmd(&[b"GET", &key]), Reply::bulk("v"));
    let long = vec![b'k'; 1025];
    assert_eq!(redis.cmd(&[b"SET", &long, b"v"]), Reply::error("ERR key too long"));
    assert_eq!(redis.cmd(&[b"GET", &long]), Reply::Nil);
    // Empty commands are skipped: no reply.
    redis.send(b"\r\n*0\r\n\r\nPING\r\n");
    assert_eq!(redis.reply(), Reply::simple("PONG"));
    assert_eq!(redis.cmd_words("PING"), Reply::simple("PONG"));
}

fn full_store_answers_oom(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &["--store-entries", "64"]);
    let mut redis = server.resp();
    let oom = Reply::error("OOM command not allowed when the store is full (--store-entries, --store-bytes)");
    let mut stored = 0;
    let refused = (0..640).find(|i| match redis.cmd(&[b"SET", format!("k{i}").as_bytes(), b"v"]) {
        Reply::Simple(ok) if ok == "OK" => {
            stored += 1;
            false
        }
        reply => {
            assert_eq!(reply, oom);
            true
        }
    });
    assert!(refused.is_some() && stored >= 32, "the store filled ({stored} stored)");
    assert_eq!(redis.cmd_words("SET k0 new"), Reply::ok(), "an existing key may still be overwritten");
    assert_eq!(redis.cmd_words("GET k0"), Reply::bulk("new"));
    assert_eq!(redis.cmd_words("PING"), Reply::simple("PONG"));
    assert_eq!(redis.cmd_words("DBSIZE"), Reply::Integer(stored));
}

/// Commands covering the parser's paths (multibulk and inline, binary
/// bulks, empty commands), and the replies they get.
fn split_script() -> (Vec<u8>, Vec<Reply>) {
    let mut script = multibulk(&[b"SET", b"split", b"a\r\nb"]);
    script.extend_from_slice(b"GET split\r\n\r\n*0\r\n");
    script.extend_from_slice(&multibulk(&[b"MGET", b"split", b"nope"]));
    script.extend_from_slice(b"PING\n");
    script.extend_from_slice(&multibulk(&[b"ECHO", b""]));
    let want = vec![
        Reply::ok(),
        Reply::bulk("a\r\nb"),
        Reply::bulks(&[Some(b"a\r\nb"), None]),
        Reply::simple("PONG"),
        Reply::bulk(""),
    ];
    (script, want)
}

fn requests_split_at_every_byte(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    let (script, want) = split_script();
    let read_all = |redis: &mut TextClient| (0..want.len()).map(|_| redis.reply()).collect::<Vec<_>>();
    // Every byte a write of its own (the pause lets each reach the server alone).
    for byte in &script {
        redis.send(std::slice::from_ref(byte));
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(read_all(&mut redis), want, "byte by byte");
    // Every split point, one at a time: what comes before whole, then the rest.
    for at in 1..script.len() {
        redis.send(&script[..at]);
        thread::sleep(Duration::from_millis(1));
        redis.send(&script[at..]);
        assert_eq!(read_all(&mut redis), want, "split at byte {at}");
    }
}

fn pipeline_1000_deep(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    let mut pipeline = Vec::new();
    for i in 0..1000 {
        pipeline.extend_from_slice(&multibulk(&[b"SET", format!("p{i}").as_bytes(), format!("v{i}").as_bytes()]));
    }
    for i in 0..1000 {
        pipeline.extend_from_slice(&multibulk(&[b"GET", format!("p{i}").as_bytes()]));
        pipeline.extend_from_slice(format!("EXISTS p{i} nope\r\n").as_bytes());
    }
    let writer = redis.send_in_background(pipeline);
    for i in 0..1000 {
        assert_eq!(redis.reply(), Reply::ok(), "SET {i}");
    }
    for i in 0..1000 {
        assert_eq!(redis.reply(), Reply::bulk(format!("v{i}")), "GET {i}");
        assert_eq!(redis.reply(), Reply::Integer(1), "EXISTS {i}");
    }
    writer.join().unwrap().expect("the pipeline went out");
    assert_eq!(redis.cmd_words("DBSIZE"), Reply::Integer(1000));
}

fn binary_keys_and_values(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    let every_byte: Vec<u8> = (0..=255u8).chain(*b"\r\n\r\n$-1\r\n*2\r\n").chain((0..=255u8).rev()).collect();
    let key: &[u8] = b"k\r\n\0 \xff\t$3";
    assert_eq!(redis.cmd(&[b"SET", key, &every_byte]), Reply::ok());
    assert_eq!(redis.cmd(&[b"GET", key]), Reply::bulk(&every_byte));
    assert_eq!(redis.cmd(&[b"MGET", key, b"nope"]), Reply::bulks(&[Some(&every_byte), None]));
    assert_eq!(redis.cmd(&[b"EXISTS", key]), Reply::Integer(1));
    assert_eq!(redis.cmd(&[b"EXISTS", b"k"]), Reply::Integer(0), "the key is all its bytes");
    // Every byte as a one-byte value, and as a one-byte key.
    for b in 0..=255u8 {
        assert_eq!(redis.cmd(&[b"SET", &[b], &[b]]), Reply::ok(), "byte {b}");
    }
    for b in 0..=255u8 {
        assert_eq!(redis.cmd(&[b"GET", &[b]]), Reply::bulk([b]), "byte {b}");
    }
    assert_eq!(redis.cmd(&[b"DEL", key]), Reply::Integer(1));
    assert_eq!(redis.cmd_words("DBSIZE"), Reply::Integer(256));
}

fn large_values_and_the_value_limit(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    assert_eq!(server.setting("max_frame_len"), "1048576");
    let mut redis = server.resp();
    let value = |len: usize| -> Vec<u8> { (0..len).map(|i| (i * 7 % 251) as u8).collect() };
    let million = value(1_000_000);
    assert_eq!(redis.cmd(&[b"SET", b"million", &million]), Reply::ok());
    assert_eq!(redis.cmd(&[b"GET", b"million"]), Reply::bulk(&million));
    let limit = value(VALUE_LIMIT);
    assert_eq!(redis.cmd(&[b"SET", b"limit", &limit]), Reply::ok(), "exactly the value limit");
    assert_eq!(redis.cmd(&[b"GET", b"limit"]), Reply::bulk(&limit));
    // One byte over: refused by the store; the old value stays, the connection goes on.
    let over = value(VALUE_LIMIT + 1);
    assert_eq!(redis.cmd(&[b"SET", b"limit", &over]), Reply::error("ERR value too long"));
    assert_eq!(redis.cmd(&[b"GET", b"limit"]), Reply::bulk(&limit));
    assert_eq!(redis.cmd(&[b"MGET", b"million", b"limit"]), Reply::bulks(&[Some(&million), Some(&limit)]));
    assert_eq!(redis.cmd_words("PING"), Reply::simple("PONG"));
}

fn broken_streams_are_answered_then_closed(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut bystander = server.resp();
    assert_eq!(bystander.cmd_words("SET kept v"), Reply::ok());
    let inline_too_big = vec![b'a'; 64 * 1024 + 1];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"*x\r\n".to_vec(), "ERR Protocol error: invalid multibulk length"),
        (b"*1048577\r\n".to_vec(), "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$x\r\n".to_vec(), "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$-1\r\n".to_vec(), "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$01\r\n".to_vec(), "ERR Protocol error: invalid bulk length"),
        // Over the frame limit: refused from the `$` line, its bytes never sent.
        (b"*1\r\n$1048577\r\n".to_vec(), "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n:3\r\n".to_vec(), "ERR Protocol error: expected '$', got ':'"),
        (b"*1\r\n$4\r\nPINGxx".to_vec(), "ERR Protocol error: expected CRLF"),
        (inline_too_big, "ERR Protocol error: too big inline request"),
        // Each bulk within the limit, the command over it: refused before the second bulk's bytes.
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048570\r\n".to_vec(),
            "ERR Protocol error: request longer than the server's limit (--max-frame-len)",
        ),
    ];
    for (broken, error) in cases {
        let mut victim = server.resp();
        let mut bytes = multibulk(&[b"PING"]);
        bytes.extend_from_slice(&broken);
        victim.send(&bytes);
        assert_eq!(victim.reply(), Reply::simple("PONG"), "what came before is answered");
        assert_eq!(
            victim.reply(),
            Reply::error(error),
            "{:?}",
            String::from_utf8_lossy(&broken[..broken.len().min(40)])
        );
        victim.expect_close();
        assert_eq!(bystander.cmd_words("GET kept"), Reply::bulk("v"), "others are unaffected");
    }
    assert_eq!(bystander.cmd_words("DBSIZE"), Reply::Integer(1), "nothing of the broken commands was stored");
}

/// Past `--max-client-memory`, the connection holding the most is evicted
/// with an error reply; the others go on.
fn memory_cap_evicts(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &["--max-client-memory", "64K"]);
    let mut bystander = server.resp();
    assert_eq!(bystander.cmd_words("SET kept v"), Reply::ok());
    let mut greedy = server.resp();
    // A command of 200 KB, of which 100 KB come and the rest never do.
    let mut partial = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$200000\r\n".to_vec();
    partial.resize(partial.len() + 100_000, b'x');
    // Evicted mid-write, the writer may see its socket reset.
    let writer = greedy.send_in_background(partial);
    assert_eq!(
        greedy.try_reply(),
        Some(Reply::error("ERR client memory limit reached (--max-client-memory); closing"))
    );
    greedy.expect_close();
    let _ = writer.join().unwrap();
    assert_eq!(bystander.cmd_words("GET kept"), Reply::bulk("v"));
    assert_eq!(bystander.cmd_words("EXISTS k"), Reply::Integer(0));
}

fn idle_timeout_closes(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &["--idle-timeout-ms", "300"]);
    let started = Instant::now();
    let mut redis = server.resp();
    assert_eq!(redis.cmd_words("PING"), Reply::simple("PONG"));
    // Half a command counts as idle too.
    let mut half = server.resp();
    half.send(b"*2\r\n$3\r\nGET\r\n");
    assert!(redis.closed_by_server(), "not closed within {IO_TIMEOUT:?}");
    assert!(half.closed_by_server(), "not closed within {IO_TIMEOUT:?}");
    assert!(started.elapsed() >= Duration::from_millis(300), "closed after {:?}", started.elapsed());
    assert_eq!(server.resp().cmd_words("PING"), Reply::simple("PONG"), "the listener still serves");
}

/// A value put over one protocol is read over the others, and deletes and
/// expiry reach every protocol. With `--threads 2` the connections spread
/// over both loops, which share the one (sharded) store.
fn one_store_across_three_protocols(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut kvio = server.connect();
    let mut redis = server.resp();
    let mut memcache = server.memcache();

    kvio.put_ok("from-kvio", "one");
    assert_eq!(redis.cmd_words("GET from-kvio"), Reply::bulk("one"));
    assert_eq!(memcache.mc_get("from-kvio"), Some((0, b"one".to_vec())));

    assert_eq!(redis.cmd_words("SET from-resp two"), Reply::ok());
    assert_eq!(kvio.get("from-resp").as_deref(), Some("two"));
    assert_eq!(memcache.mc_get("from-resp"), Some((0, b"two".to_vec())));

    assert_eq!(memcache.mc_store("set from-mc 42 0 5", b"three"), "STORED");
    assert_eq!(kvio.get("from-mc").as_deref(), Some("three"));
    assert_eq!(redis.cmd_words("GET from-mc"), Reply::bulk("three"));
    assert_eq!(memcache.mc_get("from-mc"), Some((42, b"three".to_vec())), "the flags stay with the value");

    // Overwrites and deletes, each seen by the other two.
    kvio.put_ok("from-resp", "2");
    assert_eq!(memcache.mc("incr from-resp 5"), "7");
    assert_eq!(redis.cmd_words("GET from-resp"), Reply::bulk("7"));
    assert_eq!(kvio.get("from-resp").as_deref(), Some("7"));
    assert_eq!(redis.cmd_words("DEL from-kvio"), Reply::Integer(1));
    assert_eq!(kvio.get("from-kvio"), None);
    assert_eq!(memcache.mc_get("from-kvio"), None);
    assert!(kvio.delete("from-mc"));
    assert_eq!(redis.cmd_words("EXISTS from-mc"), Reply::Integer(0));
    assert_eq!(memcache.mc("delete from-resp"), "DELETED");
    assert_eq!(kvio.get("from-resp"), None);

    // Expiry set over one protocol is absence over all.
    assert_eq!(memcache.mc_store("set gone 0 -1 1", b"x"), "STORED");
    assert_eq!(redis.cmd_words("EXISTS gone"), Reply::Integer(0));
    assert_eq!(kvio.get("gone"), None);
    assert_eq!(redis.cmd_words("SET ttl v EX 100"), Reply::ok());
    assert!(memcache.mc("mg ttl t").starts_with("HD t"), "memcached sees the expiry");
    kvio.put_ok("ttl", "w");
    assert_eq!(redis.cmd_words("TTL ttl"), Reply::Integer(-1), "a PutOrUpdate stores no expiry");

    // A value that is not UTF-8, stored over RESP: kvio frames answer an
    // error (not a miss), the connection and the entry stay.
    let binary: &[u8] = b"\xff\xfe\0binary";
    assert_eq!(redis.cmd(&[b"SET", b"bin", binary]), Reply::ok());
    let response = kvio.request(&msg(GET, "bin", ""));
    assert_eq!(
        (response.kind, response.status, response.value.as_str()),
        (0, NOT_OK, "value is not valid UTF-8; read it over RESP or memcached"),
        "{response:?}"
    );
    assert_eq!(kvio.get("ttl").as_deref(), Some("w"), "the kvio connection stays open");
    assert_eq!(memcache.mc_get("bin"), Some((0, binary.to_vec())));
    assert_eq!(redis.cmd(&[b"GET", b"bin"]), Reply::bulk(binary));

    // Connections of every protocol, several of each (spread over the loops), see one store.
    let mut more: Vec<TextClient> = (0..4).map(|_| server.resp()).collect();
    for (i, redis) in more.iter_mut().enumerate() {
        assert_eq!(redis.cmd(&[b"SET", format!("spread{i}").as_bytes(), b"v"]), Reply::ok());
    }
    for i in 0..4 {
        let mut memcache = server.memcache();
        let mut kvio = server.connect();
        for j in 0..4 {
            assert_eq!(memcache.mc_get(&format!("spread{j}")), Some((0, b"v".to_vec())), "memcached conn {i}");
            assert_eq!(kvio.get(&format!("spread{j}")).as_deref(), Some("v"), "kvio conn {i}");
        }
    }
    assert_eq!(redis.cmd_words("DBSIZE"), Reply::Integer(6), "ttl, bin, spread0..3");
}

/// INFO and memcached's `stats` read the same counters, whatever protocol
/// the requests came over.
fn info_counts_what_every_protocol_did(flavor: Flavor) {
    let server = Server::start_protocols(flavor, &[]);
    let mut redis = server.resp();
    let mut memcache = server.memcache();
    let mut kvio = server.connect();
    // Each connection served once: all three accepted.
    assert_eq!(kvio.get("nope"), None);
    assert_eq!(memcache.mc_get("nope"), None);
    let info = redis.cmd_words("INFO");
    let Reply::Bulk(info) = info else { panic!("INFO: {info:?}") };
    let info = String::from_utf8(info).unwrap();
    for section in ["# Server", "# Clients", "# Memory", "# Stats", "# Keyspace"] {
        assert!(info.contains(&format!("{section}\r\n")), "{section} in {info}");
    }
    assert!(info.contains("redis_version:7.0.0\r\n"), "{info}");
    assert!(info.contains(&format!("io_model:{}\r\n", flavor.name())), "{info}");
    assert!(info.contains("connected_clients:3\r\n"), "{info}");
    assert!(info.contains("maxclients:10000\r\n"), "{info}");

    assert_eq!(redis.cmd_words("SET a 1"), Reply::ok());
    assert_eq!(memcache.mc_store("set b 0 0 1", b"2"), "STORED");
    kvio.put_ok("c", "3");
    // Hits: 2 over RESP, 1 over memcached, 1 over kvio; misses: 1 each, and the two above.
    assert_eq!(redis.cmd_words("MGET a b nope"), Reply::bulks(&[Some(b"1"), Some(b"2"), None]));
    assert_eq!(memcache.mc_get("c"), Some((0, b"3".to_vec())));
    assert_eq!(memcache.mc_get("nope"), None);
    assert_eq!(kvio.get("a").as_deref(), Some("1"));
    assert_eq!(kvio.get("nope"), None);

    let field = |text: &str, name: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
    };
    // Other loops' counters may come in a moment later: polled.
    let stats = poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let Reply::Bulk(text) = redis.cmd_words("INFO stats") else { return None };
        let text = String::from_utf8(text).unwrap();
        (field(&text, "keyspace_hits") == Some(4) && field(&text, "keyspace_misses") == Some(5)).then_some(text)
    });
    assert!(stats.is_some(), "INFO stats: 4 hits, 5 misses: {:?}", redis.cmd_words("INFO stats"));
    let stats = stats.unwrap();
    assert!(!stats.contains("# Keyspace"), "INFO stats has one section: {stats}");
    memcache.send(b"stats\r\n");
    let lines: Vec<String> = std::iter::from_fn(|| Some(memcache.line())).take_while(|l| l != "END").collect();
    let stat = |name: &str| lines.iter().find_map(|l| l.strip_prefix(&format!("STAT {name} ")).map(str::to_owned));
    assert_eq!(stat("get_hits").as_deref(), Some("4"), "{lines:?}");
    assert_eq!(stat("get_misses").as_deref(), Some("5"), "{lines:?}");
    assert_eq!(stat("curr_items").as_deref(), Some("3"), "{lines:?}");
    assert_eq!(redis.cmd_words("INFO keyspace"), Reply::bulk("# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n"));
    assert_eq!(redis.cmd_words("DBSIZE"), Reply::Integer(3));
}

/// The blocking flavor serves one listener: asked for more, it exits 2
/// and says why (docs/redis-and-memcached.md).
#[test]
fn blocking_refuses_the_other_listeners() {
    for flag in ["--resp", "--memcache"] {
        let child = Command::new(env!("CARGO_BIN_EXE_kvio"))
            .args(["serve", "--flavor", "blocking", "--addr", "127.0.0.1:0", flag, "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvio serve");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || tx.send(child.wait_with_output()));
        let output = rx.recv_timeout(PROCESS_TIMEOUT).unwrap_or_else(|_| {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("kvio serve --flavor blocking {flag} did not exit within {PROCESS_TIMEOUT:?}")
        });
        let output = output.expect("wait for kvio serve");
        let status = output.status;
        assert_eq!(status.code(), Some(2), "{flag}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "", "{flag}: no start-up line");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "kvio serve: flavor blocking serves one listener: --resp and --memcache need another flavor (threaded, \
             busy-poll, epoll, uring).\n",
            "{flag}"
        );
    }
}
