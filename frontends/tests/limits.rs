//! The smallest frame limit: `--max-frame-len` below 64 is refused by the
//! command line, and at 64 every fixed error response still fits (the
//! longest, a malformed payload's, is a 51-byte frame).

#[macro_use]
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

per_flavor!([blocking: Blocking, threaded: Threaded, busy_poll: BusyPoll, epoll: Epoll, uring: Uring, uring_threads2: UringLoops, busy_poll_threads2: BusyPollLoops] [
    smallest_max_frame_len_still_carries_every_error_response,
]);

#[test]
fn max_frame_len_below_64_is_refused_with_a_clear_error() {
    for low in ["0", "5", "63"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvio"))
            .args(["serve", "--addr", "127.0.0.1:0", "--max-frame-len", low])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvio serve");
        // A refused argument exits at once; a server that started would not.
        let exited = poll_until(PROCESS_TIMEOUT, Duration::from_millis(10), || child.try_wait().unwrap());
        let Some(status) = exited else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kvio serve --max-frame-len {low} started instead of refusing");
        };
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(status.code(), Some(2), "--max-frame-len {low}: {stderr}");
        assert!(output.stdout.is_empty(), "--max-frame-len {low}: no start-up line");
        assert!(stderr.contains("--max-frame-len") && stderr.contains("64"), "--max-frame-len {low}: {stderr}");
    }
}

fn smallest_max_frame_len_still_carries_every_error_response(flavor: Flavor) {
    let server = Server::start(flavor, &["--max-frame-len", "64"]);
    assert_eq!(server.setting("max_frame_len"), "64");
    let mut client = server.connect();
    client.send(&frame(&[0x0a, 0x05, b'a']));
    let response = client.read_frame();
    assert_eq!(response.len(), 51, "the malformed-payload error frame");
    client.put_ok("k", "v");
    assert_eq!(client.get("k").as_deref(), Some("v"));
    // One byte over the limit: refused from the header alone, answered, closed.
    client.send(&65u32.to_le_bytes());
    let error = client.read_msg();
    assert_error_response(&error);
    assert_eq!(error.value, "frame length over maximum");
    client.expect_eof();
}
