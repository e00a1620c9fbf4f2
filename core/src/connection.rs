//! The sans-IO connection: bytes in, response bytes out.
//!
//! A frontend reads from its socket (or UART), hands the bytes to
//! [`Connection::receive`], and writes whatever the [`Output`] holds. The
//! connection frames the input, passes each complete request payload to a
//! [`Handler`] (which appends exactly one response frame, so responses come
//! out in request order however requests were pipelined), and on a framing
//! error has the handler append the error frame and tells the frontend to
//! close once it is written.
//!
//! Back-pressure: once the output holds `output_limit` bytes or more, the
//! connection stops taking requests and says [`Outcome::Backpressure`]; the
//! frontend keeps the unconsumed input, stops reading the socket, and calls
//! `receive` again once it has written some output. So the output never holds
//! more than `output_limit` plus one response.

use crate::buffer::{Output, OutputFull, PayloadBuffer};
use crate::frame::{FrameError, FrameParser, Parse};

/// Default back-pressure bound on unsent response bytes: 64 KiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// Turns request payloads into response frames. The payload format is the
/// handler's business (protobuf in `kvio-proto`); the core only frames.
pub trait Handler {
    /// Appends exactly one response frame for `payload` to `out`, or
    /// nothing if `out` has no room.
    fn request<O: Output + ?Sized>(&mut self, payload: &[u8], out: &mut O) -> Result<(), OutputFull>;

    /// Appends the error frame that tells the client why the connection closes.
    fn framing_error<O: Output + ?Sized>(&mut self, error: FrameError, out: &mut O) -> Result<(), OutputFull>;

    /// Appends the error frame that tells a client its host evicted it (all
    /// its connections together held more memory than the host allows).
    /// Nothing by default: a host without such a cap never calls it.
    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        let _ = out;
        Ok(())
    }
}

/// What the frontend should do after [`Connection::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome {
    /// All input was taken: read more when the socket has it.
    NeedMore,
    /// The output is at its limit: write it, and only then push the input
    /// left after `consumed` (and read more).
    Backpressure,
    /// The byte stream broke: the output ends with the error frame; write
    /// it all, then close. Nothing more is taken from this connection.
    Close(FrameError),
    /// The handler could not append a response: the output is smaller than
    /// one response. Close the connection (hosts with growable output never see this).
    OutputFull,
}

/// The result of one [`Connection::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Received {
    /// Input bytes taken; the rest must be pushed again later.
    pub consumed: usize,
    /// Requests answered by this call.
    pub requests: usize,
    /// What to do next.
    pub outcome: Outcome,
}

/// One client's framing state. See the [module docs](self).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Connection {
    parser: FrameParser,
    output_limit: usize,
    requests: u64,
    full: bool,
}

impl Connection {
    /// A connection refusing frames longer than `max_frame_len` and
    /// applying back-pressure at `output_limit` unsent bytes (raised to 1 if
    /// lower: at 0 it would push back with nothing to write, and never read).
    pub const fn new(max_frame_len: u32, output_limit: usize) -> Self {
        let output_limit = if output_limit == 0 { 1 } else { output_limit };
        Connection { parser: FrameParser::new(max_frame_len), output_limit, requests: 0, full: false }
    }

    /// The output room that never makes a handler fail: the limit plus
    /// one frame of the largest size.
    pub const fn output_capacity_needed(&self) -> usize {
        self.output_limit + crate::frame::encoded_len(self.parser.max_frame_len() as usize)
    }

    /// The framing state (for [`FrameParser::buffered_payload`] and friends).
    pub const fn parser(&self) -> &FrameParser {
        &self.parser
    }

    /// Requests answered over the connection's life.
    pub const fn requests(&self) -> u64 {
        self.requests
    }

    /// Whether the frontend should read more now, given the bytes its output holds.
    pub const fn wants_read(&self, pending_output: usize) -> bool {
        !self.full && self.parser.error().is_none() && pending_output < self.output_limit
    }

    /// Takes `input`, answering every complete request into `out`. Partial
    /// payloads are kept in `buf` between calls. See [`Outcome`].
    pub fn receive<H, O, B>(&mut self, input: &[u8], buf: &mut B, handler: &mut H, out: &mut O) -> Received
    where
        H: Handler + ?Sized,
        O: Output + ?Sized,
        B: PayloadBuffer + ?Sized,
    {
        let mut pos = 0;
        let mut requests = 0;
        let outcome = loop {
            if self.full {
                break Outcome::OutputFull;
            }
            if let Some(error) = self.parser.error() {
                break Outcome::Close(error);
            }
            if out.pending() >= self.output_limit {
                break Outcome::Backpressure;
            }
            if pos == input.len() {
                break Outcome::NeedMore;
            }
            match self.parser.push(&input[pos..], buf) {
                Ok((used, Parse::Complete(payload))) => {
                    pos += used;
                    if handler.request(payload, out).is_err() {
                        warn!("response does not fit the output; closing");
                        self.full = true;
                        continue;
                    }
                    requests += 1;
                    self.requests += 1;
                }
                Ok((used, Parse::Partial)) => pos += used,
                Err(error) => {
                    // The stream is broken from here on: nothing after the bad header counts.
                    pos = input.len();
                    if handler.framing_error(error, out).is_err() {
                        self.full = true;
                    }
                }
            }
        };
        trace!("receive: {} bytes, {} requests", pos, requests);
        Received { consumed: pos, requests, outcome }
    }
}

impl Default for Connection {
    fn default() -> Self {
        Connection::new(crate::DEFAULT_MAX_FRAME_LEN, DEFAULT_OUTPUT_LIMIT)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::frame::{encode_frame, write_frame};
    use std::vec::Vec;

    /// Echoes each payload back as its own response; errors as "E" + reason.
    struct Echo;

    impl Handler for Echo {
        fn request<O: Output + ?Sized>(&mut self, payload: &[u8], out: &mut O) -> Result<(), OutputFull> {
            encode_frame(payload, out)
        }

        fn framing_error<O: Output + ?Sized>(&mut self, error: FrameError, out: &mut O) -> Result<(), OutputFull> {
            let reason = error.as_str().as_bytes();
            write_frame(out, 1 + reason.len(), |dst| {
                dst[0] = b'E';
                dst[1..].copy_from_slice(reason);
            })
        }
    }

    fn frame(payload: &[u8]) -> heapless::Vec<u8, 64> {
        let mut v = heapless::Vec::new();
        encode_frame(payload, &mut v).unwrap();
        v
    }

    /// Drives `input` through a connection in chunks, draining output fully
    /// after each call (an always-reading client).
    fn run(input: &[u8], chunk: usize) -> (Vec<u8>, Option<FrameError>) {
        let mut conn = Connection::new(64, 1024);
        let mut buf = [0u8; 64];
        let mut out: heapless::Vec<u8, 4096> = heapless::Vec::new();
        let mut wire = Vec::new();
        for piece in input.chunks(chunk) {
            let r = conn.receive(piece, &mut buf, &mut Echo, &mut out);
            wire.extend_from_slice(&out);
            out.clear();
            match r.outcome {
                Outcome::NeedMore => assert_eq!(r.consumed, piece.len()),
                Outcome::Close(e) => return (wire, Some(e)),
                other => panic!("unexpected {other:?}"),
            }
        }
        (wire, None)
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_however_split() {
        let mut input = Vec::new();
        for p in [&b"one"[..], b"", b"three", b"four!"] {
            input.extend_from_slice(&frame(p));
        }
        let (whole, err) = run(&input, input.len());
        assert_eq!(err, None);
        assert_eq!(whole, input, "echo returns the same frames in order");
        for chunk in 1..input.len() {
            assert_eq!(run(&input, chunk), (whole.clone(), None), "chunk {chunk}");
        }
    }

    #[test]
    fn framing_error_answers_earlier_requests_then_the_error_then_closes() {
        let mut input = Vec::new();
        input.extend_from_slice(&frame(b"a"));
        input.extend_from_slice(&frame(b"b"));
        input.extend_from_slice(&1000u32.to_le_bytes()); // over max 64
        input.extend_from_slice(&frame(b"never"));
        let mut expected = Vec::new();
        expected.extend_from_slice(&frame(b"a"));
        expected.extend_from_slice(&frame(b"b"));
        expected.extend_from_slice(&frame(b"Eframe length over maximum"));
        for chunk in 1..=input.len() {
            assert_eq!(run(&input, chunk), (expected.clone(), Some(FrameError::TooLong)), "chunk {chunk}");
        }
    }

    #[test]
    fn backpressure_stops_taking_requests_until_output_drains() {
        let mut conn = Connection::new(64, 20); // 20 bytes: two 10-byte responses
        let mut out: heapless::Vec<u8, 256> = heapless::Vec::new();
        let mut input = Vec::new();
        for _ in 0..5 {
            input.extend_from_slice(&frame(b"x")); // 10 bytes each
        }
        let r = conn.receive(&input, &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r.consumed, r.requests, r.outcome), (20, 2, Outcome::Backpressure));
        assert!(!conn.wants_read(out.pending()));
        let r2 = conn.receive(&input[20..], &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r2.consumed, r2.outcome), (0, Outcome::Backpressure), "nothing taken while full");
        out.clear();
        assert!(conn.wants_read(out.pending()));
        let r3 = conn.receive(&input[20..], &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r3.consumed, r3.requests, r3.outcome), (20, 2, Outcome::Backpressure));
        out.clear();
        let r4 = conn.receive(&input[40..], &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r4.consumed, r4.requests, r4.outcome), (10, 1, Outcome::NeedMore));
        assert_eq!(conn.requests(), 5);
    }

    #[test]
    fn an_output_limit_of_zero_still_answers_one_request_at_a_time() {
        // Found by the `connection` fuzz target: with a limit of 0 the
        // connection pushed back with an empty output, so it was never read.
        let mut conn = Connection::new(64, 0);
        assert!(conn.wants_read(0));
        let mut out: heapless::Vec<u8, 64> = heapless::Vec::new();
        let mut input = Vec::new();
        input.extend_from_slice(&frame(b"a"));
        input.extend_from_slice(&frame(b"b"));
        let r = conn.receive(&input, &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r.consumed, r.requests, r.outcome), (10, 1, Outcome::Backpressure));
        assert_eq!(&out[..], &frame(b"a")[..]);
        out.clear();
        let r = conn.receive(&input[10..], &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r.consumed, r.requests, r.outcome), (10, 1, Outcome::Backpressure));
        out.clear();
        assert_eq!(conn.receive(&[], &mut [0u8; 64], &mut Echo, &mut out).outcome, Outcome::NeedMore);
    }

    #[test]
    fn output_too_small_for_a_response_closes() {
        let mut conn = Connection::new(64, 1000);
        let mut out: heapless::Vec<u8, 12> = heapless::Vec::new();
        let r = conn.receive(&frame(b"too long for twelve"), &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!(r.outcome, Outcome::OutputFull);
        assert!(out.is_empty());
        assert!(!conn.wants_read(0));
    }
}
