//! Lingering close: after a framing error a connection still delivers every
//! response it owed and the error frame, and ends with a FIN, even though the
//! client kept sending (a close with unread input would make Linux send a
//! reset and drop the unsent responses). And the blocking flavor's frame
//! deadline: a client trickling a frame cannot hold the one-connection server.

#[macro_use]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use kvio_core::FrameError;
use kvio_core::FrameParser;
use kvio_core::frame::Parse;
use kvio_proto::KeyValueMessage;
use prost::Message;

per_flavor!([blocking: Blocking, threaded: Threaded, busy_poll: BusyPoll, epoll: Epoll, uring: Uring, uring_threads2: UringLoops, busy_poll_threads2: BusyPollLoops] [
    framing_error_after_pipelined_big_gets_delivers_everything_then_eof,
]);

/// How the server's side of a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Eof,
    Reset,
}

/// Reads until the server closes (bounded by the socket's read timeout per read and `limit` overall).
fn read_to_close(stream: &mut std::net::TcpStream, limit: Duration) -> (Vec<u8>, Ending) {
    let started = Instant::now();
    let mut wire = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        assert!(started.elapsed() < limit, "the server did not close within {limit:?} ({} bytes read)", wire.len());
        match stream.read(&mut chunk) {
            Ok(0) => return (wire, Ending::Eof),
            Ok(n) => wire.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                return (wire, Ending::Reset);
            }
            Err(e) => panic!("reading responses: {e} ({} bytes read)", wire.len()),
        }
    }
}

/// Every whole frame in `wire`, decoded; panics on trailing garbage.
fn decode_all(wire: &[u8]) -> (Vec<KeyValueMessage>, usize) {
    let mut parser = FrameParser::new(u32::MAX);
    let mut buf = Vec::new();
    let mut at = 0;
    let mut out = Vec::new();
    while at < wire.len() {
        let (used, status) = parser.push(&wire[at..], &mut buf).expect("the server sent a bad frame");
        at += used;
        match status {
            Parse::Complete(payload) => out.push(KeyValueMessage::decode(payload).expect("not a KeyValueMessage")),
            Parse::Partial => break,
        }
    }
    (out, wire.len() - at)
}

fn framing_error_after_pipelined_big_gets_delivers_everything_then_eof(flavor: Flavor) {
    const GETS: usize = 40;
    const LATE: usize = 10;
    // The blocking flavor's 200 ms idle timeout is not what is tested: on a
    // loaded machine the 4 MB of answers can take longer than that to go
    // out while the client waits 400 ms before reading, and the session was
    // then (rightly) closed as idle, with a reset instead of the linger.
    let server = Server::start(flavor, &["--idle-timeout-ms", "10000"]);
    let mut client = server.connect();
    let big: String = (0..100_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    client.put_ok("big", &big);

    let mut burst = Vec::new();
    for _ in 0..GETS {
        burst.extend_from_slice(&get_frame("big"));
    }
    let mut bad = put_frame("x", "never stored");
    let at = bad.len() - 2;
    bad[at] = b'X';
    burst.extend_from_slice(&bad);
    let started = Instant::now();
    client.send(&burst);
    // The client does not know yet that its stream broke: it keeps sending.
    thread::sleep(Duration::from_millis(100));
    let mut late = Vec::new();
    for i in 0..LATE {
        late.extend_from_slice(&put_frame(&format!("late-{i}"), "v"));
    }
    // The server may already have closed (and reset): that is not what is tested here.
    let _ = client.stream.write_all(&late);
    // And only starts reading a while later, with 4 MB of responses waiting.
    thread::sleep(Duration::from_millis(400).saturating_sub(started.elapsed()));

    let (wire, ending) = read_to_close(&mut client.stream, Duration::from_secs(20));
    let (responses, trailing) = decode_all(&wire);
    let hits = responses.iter().take_while(|m| m.kind == GET_RESPONSE).count();
    assert_eq!(
        (responses.len(), hits, trailing, &ending),
        (GETS + 1, GETS, 0, &Ending::Eof),
        "{} bytes: responses, of which hits, trailing bytes, ending",
        wire.len()
    );
    for (i, m) in responses[..GETS].iter().enumerate() {
        assert!(m.key == "big" && m.value == big && m.status == OK, "response {i} is not the value");
    }
    let error = &responses[GETS];
    assert_eq!((error.kind, error.status, error.value.as_str()), (0, NOT_OK, FrameError::BadFooter.as_str()));
    // The client closes too, which ends the server's linger (the blocking flavor's only connection).
    drop(client);
    // Nothing after the bad frame was taken as a request.
    assert_eq!(server.connect().get("late-0"), None);
}

/// A client trickling a frame a byte per 50 ms (under the 200 ms idle
/// timeout, so the idle timer alone would never fire) holds the blocking
/// server at most the frame deadline: 10 idle timeouts (2 s).
#[test]
fn blocking_trickled_frame_is_cut_at_the_frame_deadline() {
    // Per-connection closes are logged at debug (not at the default level).
    let server = Server::start(Flavor::Blocking, &["--log-level", "debug"]);
    let mut trickler = server.connect();
    let frame = put_frame("slow", &"v".repeat(200));
    let started = Instant::now();
    // The trickler is served first (blocking: one connection at a time); the other waits in the backlog.
    trickler.send(&frame[..1]);
    let second = thread::spawn({
        let addr = server.addr();
        move || {
            let mut client = Client::connect(addr);
            client.put_ok("fast", "v");
            started.elapsed()
        }
    });
    let mut cut = false;
    for byte in &frame[1..] {
        thread::sleep(Duration::from_millis(50));
        if trickler.stream.write_all(std::slice::from_ref(byte)).is_err() {
            cut = true;
            break;
        }
        if second.is_finished() {
            break;
        }
    }
    let served_after = second.join().expect("the second client was not served");
    assert!(cut || served_after < Duration::from_secs(4), "the trickler was not cut");
    assert!(served_after >= Duration::from_secs(2), "cut before the frame deadline: {served_after:?}");
    assert!(served_after < Duration::from_secs(4), "second client served after {served_after:?}");
    assert_eq!(trickler.try_read_frame(), None, "no response, the connection is closed");
    let logged = poll_until(IO_TIMEOUT, Duration::from_millis(10), || {
        server.stderr_lines().iter().any(|l| l.contains("frame not complete within 2000 ms")).then_some(())
    });
    assert!(logged.is_some(), "no log line: {:?}", server.stderr_lines());
}
