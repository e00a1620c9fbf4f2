//! docs/protocol.md row by row against every flavor: requests and responses,
//! framing errors, pipelining, split delivery, limits, the golden frames, and
//! the `kvio put`/`kvio get` client.

#[macro_use]
mod common;

use std::io::Write;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;
use kvio_proto::KeyValueMessage;

per_flavor!([blocking: Blocking, threaded: Threaded, busy_poll: BusyPoll, epoll: Epoll, epoll_threads2: EpollLoops, uring: Uring, uring_threads2: UringLoops, busy_poll_threads2: BusyPollLoops] [
    startup_line_reports_the_defaults,
    startup_line_reports_the_flags,
    put_then_get_hit_and_miss,
    put_overwrites,
    delete_then_get_misses,
    golden_delete_frames_byte_for_byte,
    unknown_kinds_are_refused_and_the_connection_stays_open,
    malformed_payload_gets_an_error_and_the_connection_stays_open,
    frame_too_short_is_answered_then_closed,
    frame_too_long_is_refused_from_the_header_alone,
    bad_footer_is_answered_then_closed,
    pipelined_requests_are_answered_in_order,
    byte_by_byte_delivery_with_pauses,
    client_vanishing_mid_frame_leaves_others_served,
    value_over_the_limit_is_refused_without_losing_the_old_one,
    full_store_refuses_new_keys_and_keeps_old_ones,
    full_store_evicts_under_when_full_evict,
    acknowledged_put_is_visible_on_another_connection,
    golden_frames_byte_for_byte,
    large_values_round_trip,
    command_line_client_put_and_get,
]);

fn startup_line_reports_the_defaults(flavor: Flavor) {
    let server = Server::start(flavor, &[]);
    let idle = flavor.default_idle_timeout_ms().to_string();
    let expected = [
        ("max_frame_len", "1048576"),
        ("store_entries", "100000"),
        ("store_bytes", "67108864"),
        ("max_connections", "10000"),
        ("idle_timeout_ms", idle.as_str()),
        ("output_limit", "65536"),
        ("threads", "1"),
    ];
    for (key, value) in expected {
        let value = if key == "threads" { flavor.threads().to_string() } else { value.to_string() };
        assert_eq!(server.setting(key), value, "{key}");
    }
    assert_eq!(server.connect().get("nothing"), None);
}

fn startup_line_reports_the_flags(flavor: Flavor) {
    let args = [
        ("--max-frame-len", "4096", "max_frame_len"),
        ("--store-entries", "64", "store_entries"),
        ("--store-bytes", "65536", "store_bytes"),
        ("--max-connections", "7", "max_connections"),
        ("--idle-timeout-ms", "0", "idle_timeout_ms"),
        ("--output-limit", "8192", "output_limit"),
    ];
    let flags: Vec<&str> = args.iter().flat_map(|(flag, value, _)| [*flag, *value]).collect();
    let server = Server::start(flavor, &flags);
    for (_, value, key) in args {
        assert_eq!(server.setting(key), value, "{key}");
    }
    let mut client = server.connect();
    client.put_ok("k", "v");
    assert_eq!(client.get("k").as_deref(), Some("v"));
}

fn put_then_get_hit_and_miss(flavor: Flavor) {
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    assert_eq!(client.get("DiskType"), None);
    client.put_ok("DiskType", "NVMe SSD");
    assert_eq!(client.get("DiskType").as_deref(), Some("NVMe SSD"));
    assert_eq!(client.get("diskType"), None);
    // Empty keys and values are ordinary keys and values.
    client.put_ok("", "value-for-empty-key");
    client.put_ok("key-with-empty-value", "");
    assert_eq!(client.get("").as_deref(), Some("value-for-empty-key"));
    assert_eq!(client.get("key-with-empty-value").as_deref(), Some(""));
}

fn put_overwrites(flavor: Flavor) {
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    client.put_ok("k", "first");
    client.put_ok("k", "a longer second value");
    assert_eq!(client.get("k").as_deref(), Some("a longer second value"));
    client.put_ok("k", "3");
    assert_eq!(client.get("k").as_deref(), Some("3"));
}

fn delete_then_get_misses(flavor: Flavor) {
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    assert!(!client.delete("k"), "absent");
    client.put_ok("k", "v");
    client.put_ok("other", "stays");
    assert!(client.delete("k"));
    assert_eq!(client.get("k"), None);
    assert!(!client.delete("k"), "already gone");
    assert_eq!(client.get("other").as_deref(), Some("stays"));
    client.put_ok("k", "back");
    assert_eq!(client.get("k").as_deref(), Some("back"));
    // An acknowledged delete is seen on another connection.
    if flavor.serves_concurrently() {
        assert!(client.delete("other"));
        assert_eq!(server.connect().get("other"), None);
    }
}

fn golden_delete_frames_byte_for_byte(flavor: Flavor) {
    let v = vectors();
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    let mut exchange = |request: &str, response: &str| {
        client.send(&v[request]);
        assert_eq!(client.read_frame(), v[response], "{request} -> {response}");
    };
    exchange("delete_request", "delete_response_miss");
    exchange("put_request", "put_response_ok");
    exchange("delete_request", "delete_response_ok");
    exchange("get_request", "get_response_miss");
    exchange("delete_request", "delete_response_miss");
}

fn unknown_kinds_are_refused_and_the_connection_stays_open(flavor: Flavor) {
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    client.put_ok("k", "v");
    for kind in [GET_RESPONSE, 0, 5, 7, u32::MAX] {
        let response = client.request(&msg(kind, "k", "other"));
        assert_eq!(response, KeyValueMessage { kind, status: NOT_OK, ..Default::default() }, "kind {kind}");
        // Nothing was stored by it, and the connection still serves.
        assert_eq!(client.get("k").as_deref(), Some("v"), "after kind {kind}");
    }
}

fn malformed_payload_gets_an_error_and_the_connection_stays_open(flavor: Flavor) {
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    let malformed: [&[u8]; 4] = [
        &[0x0a, 0x05, b'a'],       // key claims 5 bytes, has 1
        &[0x0a, 0x01, 0xff],       // key is not UTF-8
        &[0x1f, 0x00],             // wire type 7 does not exist
        &[0x18, 0xff, 0xff, 0xff], // kind's varint never ends
    ];
    for payload in malformed {
        client.send(&frame(payload));
        assert_error_response(&client.read_msg());
        client.put_ok("after", "malformed");
        assert_eq!(client.get("after").as_deref(), Some("malformed"));
    }
}

/// Earlier requests answered, then `{kind 0, NotOk, reason}`, then a clean
/// close; a second connection is unaffected.
fn framing_error_is_answered_then_closed(flavor: Flavor, bad: &[u8]) {
    let server = Server::start(flavor, &["--max-frame-len", "4096"]);
    // The blocking flavor serves one connection at a time: the bystander can
    // only be served once the failing connection is over.
    let mut bystander = flavor.serves_concurrently().then(|| {
        let mut c = server.connect();
        c.put_ok("bystander", "before");
        c
    });

    let mut client = server.connect();
    let mut bytes = put_frame("k", "v");
    bytes.extend_from_slice(&get_frame("k"));
    bytes.extend_from_slice(bad);
    client.send(&bytes);
    assert_eq!(client.read_msg(), KeyValueMessage { kind: PUT, ..Default::default() });
    assert_eq!(check_get_response(&client.read_msg(), "k").as_deref(), Some("v"));
    assert_error_response(&client.read_msg());
    client.expect_eof();

    let mut bystander = bystander.take().unwrap_or_else(|| server.connect());
    bystander.put_ok("bystander", "after");
    assert_eq!(bystander.get("bystander").as_deref(), Some("after"));
    assert_eq!(bystander.get("k").as_deref(), Some("v"), "the request before the bad frame was applied");
}

fn frame_too_short_is_answered_then_closed(flavor: Flavor) {
    for len in [0u32, 4] {
        framing_error_is_answered_then_closed(flavor, &len.to_le_bytes());
    }
}

fn frame_too_long_is_refused_from_the_header_alone(flavor: Flavor) {
    // Only the 4 header bytes are sent: the error must come without any body.
    framing_error_is_answered_then_closed(flavor, &4097u32.to_le_bytes());
    framing_error_is_answered_then_closed(flavor, &u32::MAX.to_le_bytes());
}

fn bad_footer_is_answered_then_closed(flavor: Flavor) {
    let mut bad = put_frame("x", "never stored");
    let at = bad.len() - 2;
    bad[at] = b'X';
    framing_error_is_answered_then_closed(flavor, &bad);
}

fn pipelined_requests_are_answered_in_order(flavor: Flavor) {
    const N: usize = 1000;
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    let mut bytes = Vec::new();
    for i in 0..N {
        // Every request depends on the one before it: order matters.
        let key = format!("key-{}", i / 2);
        if i % 2 == 0 {
            bytes.extend_from_slice(&put_frame(&key, &format!("value-{i}")));
        } else {
            bytes.extend_from_slice(&get_frame(&key));
        }
    }
    // One write, from another thread so that a server answering while it
    // reads cannot deadlock against a client that has not started reading.
    let mut writer = client.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&bytes));
    for i in 0..N {
        let key = format!("key-{}", i / 2);
        let response = client.read_msg();
        if i % 2 == 0 {
            assert_eq!((response.kind, response.status), (PUT, OK), "response {i}: {response:?}");
        } else {
            let value = format!("value-{}", i - 1);
            assert_eq!(check_get_response(&response, &key), Some(value), "response {i}");
        }
    }
    sender.join().unwrap().expect("pipelined write");
    assert_eq!(client.get("key-0").as_deref(), Some("value-0"));
}

fn byte_by_byte_delivery_with_pauses(flavor: Flavor) {
    // Pauses of 2 ms stay far below the blocking flavor's 200 ms idle timeout.
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    let drip = |client: &mut Client, bytes: &[u8]| {
        for byte in bytes {
            client.send(std::slice::from_ref(byte));
            thread::sleep(Duration::from_millis(2));
        }
    };
    drip(&mut client, &put_frame("slow", "drip by drip"));
    assert_eq!(client.read_msg(), KeyValueMessage { kind: PUT, ..Default::default() });
    // Two requests, split across each other's boundaries.
    let mut both = get_frame("slow");
    both.extend_from_slice(&get_frame("missing"));
    drip(&mut client, &both);
    assert_eq!(check_get_response(&client.read_msg(), "slow").as_deref(), Some("drip by drip"));
    assert_eq!(check_get_response(&client.read_msg(), "missing"), None);
}

fn client_vanishing_mid_frame_leaves_others_served(flavor: Flavor) {
    let mut server = Server::start(flavor, &[]);
    let mut other = flavor.serves_concurrently().then(|| server.connect());
    for cut in [2, 4, 9, 20] {
        let mut vanishing = server.connect();
        vanishing.put_ok("before", "vanishing");
        let partial = put_frame("half", "a frame that never ends");
        vanishing.send(&partial[..cut]);
        drop(vanishing);
    }
    // Also vanish after a whole request whose response is never read.
    let mut vanishing = server.connect();
    vanishing.send(&get_frame("before"));
    drop(vanishing);

    let mut other = other.take().unwrap_or_else(|| server.connect());
    assert_eq!(other.get("before").as_deref(), Some("vanishing"));
    assert_eq!(other.get("half"), None);
    other.put_ok("after", "still serving");
    assert_eq!(server.connect().get("after").as_deref(), Some("still serving"));
    assert!(server.is_running());
}

fn value_over_the_limit_is_refused_without_losing_the_old_one(flavor: Flavor) {
    // A 1024-byte frame leaves the store at most ~500 bytes per value (and
    // per key): these requests fit a frame but not the store's limits.
    let server = Server::start(flavor, &["--max-frame-len", "1024"]);
    let mut client = server.connect();
    let big = "v".repeat(800);
    client.put_ok("k", "old");
    assert_eq!(client.put("k", &big), NOT_OK);
    assert_eq!(client.get("k").as_deref(), Some("old"));
    assert_eq!(client.put("new", &big), NOT_OK);
    assert_eq!(client.get("new"), None);
    let big_key = "k".repeat(800);
    assert_eq!(client.put(&big_key, "v"), NOT_OK);
    assert_eq!(client.get(&big_key), None);
    // The connection is fine, and values within the limits still go in.
    client.put_ok("k", &"w".repeat(200));
    assert_eq!(client.get("k"), Some("w".repeat(200)));
}

fn full_store_refuses_new_keys_and_keeps_old_ones(flavor: Flavor) {
    let server = Server::start(flavor, &["--store-entries", "8", "--store-bytes", "4096"]);
    let mut client = server.connect();
    let mut stored = Vec::new();
    let mut refused = Vec::new();
    for i in 0..64 {
        let (key, value) = (format!("key-{i}"), format!("value-{i}"));
        match client.put(&key, &value) {
            OK => stored.push((key, value)),
            _ => refused.push(key),
        }
    }
    assert!(!stored.is_empty(), "nothing stored");
    assert!(!refused.is_empty(), "a store of 8 entries took 64 keys");
    for (key, value) in &stored {
        assert_eq!(client.get(key).as_ref(), Some(value), "{key} was acknowledged");
    }
    for key in &refused {
        assert_eq!(client.get(key), None, "{key} was refused");
    }
    // Updating a key that is already there needs no new entry.
    let (key, _) = &stored[0];
    client.put_ok(key, "updated");
    assert_eq!(client.get(key).as_deref(), Some("updated"));
}

fn full_store_evicts_under_when_full_evict(flavor: Flavor) {
    let server = Server::start(flavor, &["--store-entries", "8", "--store-bytes", "4096", "--when-full", "evict"]);
    let mut client = server.connect();
    for i in 0..100 {
        client.put_ok(&format!("k{i}"), &format!("v{i}"));
        assert_eq!(client.get(&format!("k{i}")), Some(format!("v{i}")), "a put is read back at once");
    }
    let mut held = 0;
    for i in 0..100 {
        if let Some(value) = client.get(&format!("k{i}")) {
            assert_eq!(value, format!("v{i}"), "k{i}");
            held += 1;
        }
    }
    assert!((1..=8).contains(&held), "{held} entries held of 8");
}

fn acknowledged_put_is_visible_on_another_connection(flavor: Flavor) {
    let server = Server::start(flavor, &[]);
    if flavor.serves_concurrently() {
        let mut readers: Vec<Client> = (0..3).map(|_| server.connect()).collect();
        let mut writer = server.connect();
        for round in 0..20 {
            let value = format!("round-{round}");
            writer.put_ok("shared", &value);
            for reader in &mut readers {
                assert_eq!(reader.get("shared"), Some(value.clone()));
            }
        }
    } else {
        for round in 0..5 {
            let value = format!("round-{round}");
            server.connect().put_ok("shared", &value);
            assert_eq!(server.connect().get("shared"), Some(value));
        }
    }
}

fn golden_frames_byte_for_byte(flavor: Flavor) {
    let v = vectors();
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    let mut exchange = |request: &str, response: &[u8]| {
        client.send(&v[request]);
        assert_eq!(client.read_frame(), response, "{request}");
    };
    exchange("get_request", &v["get_response_miss"]);
    exchange("put_request", &v["put_response_ok"]);
    exchange("get_request", &v["get_response_hit"]);
    for put in ["put_request_empty_key", "put_request_empty_value", "put_request_unicode", "put_request_value_1kib"] {
        exchange(put, &v["put_response_ok"]);
    }
    exchange("put_request_value_64kib", &v["put_response_ok"]);
    // {kind: u32::MAX, NotOk} and {kind: 0, NotOk}, in the official encoding.
    exchange("kind_max_uint32", &frame(&[0x18, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x20, 0x01]));
    exchange("empty_message_all_defaults", &frame(&[0x20, 0x01]));
    let hit = KeyValueMessage { value: "value-for-empty-key".into(), kind: GET_RESPONSE, ..Default::default() };
    exchange("get_request_empty_key", &msg_frame(&hit));
}

fn large_values_round_trip(flavor: Flavor) {
    // Responses far over the 64 KiB output limit, pipelined: partial writes
    // and back-pressure on every one of them.
    const GETS: usize = 8;
    let server = Server::start(flavor, &[]);
    let mut client = server.connect();
    let value: String = (0..1_000_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    client.put_ok("big", &value);
    let mut writer = client.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&get_frame("big").repeat(GETS)));
    for i in 0..GETS {
        let response = client.read_msg();
        assert!(check_get_response(&response, "big").as_deref() == Some(value.as_str()), "get {i}: wrong value");
    }
    sender.join().unwrap().expect("pipelined write");
    client.put_ok("big", "small again");
    assert_eq!(client.get("big").as_deref(), Some("small again"));
}

fn command_line_client_put_and_get(flavor: Flavor) {
    // Values over ~500 bytes are refused by a store behind 1024-byte frames.
    let server = Server::start(flavor, &["--max-frame-len", "1024"]);
    let addr = server.addr().to_string();
    let kvio = |args: &[&str]| {
        // The client has its own timeouts; the server is up, so this returns.
        let out = Command::new(env!("CARGO_BIN_EXE_kvio")).args(args).args(["--addr", &addr]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(kvio(&["put", "city", "Zürich"]).0, Some(0));
    assert_eq!(kvio(&["get", "city"]), (Some(0), "Zürich\n".to_owned()));
    assert_eq!(kvio(&["get", "country"]).0, Some(1));
    assert_eq!(kvio(&["put", "gone", "soon"]).0, Some(0));
    assert_eq!(kvio(&["del", "gone"]).0, Some(0), "deleted");
    assert_eq!(kvio(&["get", "gone"]).0, Some(1));
    assert_eq!(kvio(&["del", "gone"]).0, Some(1), "not found");
    // Over the store's value limit: NotOk is a failure.
    assert_eq!(kvio(&["put", "city", &"x".repeat(800)]).0, Some(2));
    assert_eq!(kvio(&["get", "city"]), (Some(0), "Zürich\n".to_owned()));
    // A connection error: the local port of a live connection has no
    // listener, and cannot be taken by another test's server meanwhile.
    let held = server.connect();
    let refused = held.stream.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_kvio")).args(["get", "city", "--addr", &refused]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!out.stderr.is_empty(), "no message on stderr: {out:?}");
}
