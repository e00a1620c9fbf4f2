//! The sans-IO connection: bytes in, response bytes out, over any
//! [protocol](crate::protocol).
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
use crate::frame::{FrameError, FrameParser};
pub use crate::protocol::Handler;
use crate::protocol::{Next, Parse, Parser};

/// Default back-pressure bound on unsent response bytes: 64 KiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// What the frontend should do after [`Connection::receive`]; `E` is the
/// protocol's error (kvio frames: [`FrameError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Outcome<E = FrameError> {
    /// All input was taken: read more when the socket has it.
    NeedMore,
    /// The output is at its limit: write it, and only then push the input
    /// left after `consumed` (and read more).
    Backpressure,
    /// The byte stream broke: the output ends with the handler's answer to
    /// it; write it all, then close. Nothing more is taken from this connection.
    Close(E),
    /// A request asked to end the connection (RESP `QUIT`): write the
    /// output, then close. Nothing more is taken.
    Quit,
    /// The handler could not append a response: the output is smaller than
    /// one response. Close the connection (hosts with growable output never see this).
    OutputFull,
}

/// The result of one [`Connection::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Received<E = FrameError> {
    /// Input bytes taken; the rest must be pushed again later.
    pub consumed: usize,
    /// Requests answered by this call.
    pub requests: usize,
    /// What to do next.
    pub outcome: Outcome<E>,
}

/// One client's framing state over protocol `P` (kvio frames by default).
/// See the [module docs](self).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Connection<P = FrameParser> {
    parser: P,
    output_limit: usize,
    requests: u64,
    /// The output was too small for a response, or the client quit.
    done: Option<Done>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Done {
    Full,
    Quit,
}

impl Connection<FrameParser> {
    /// A kvio-frame connection refusing frames longer than `max_frame_len`
    /// and applying back-pressure at `output_limit` unsent bytes (raised to
    /// 1 if lower: at 0 it would push back with nothing to write, and never read).
    pub const fn new(max_frame_len: u32, output_limit: usize) -> Self {
        Connection::with_parser(FrameParser::new(max_frame_len), output_limit)
    }

    /// The output room that never makes a handler fail: the limit plus
    /// one frame of the largest size.
    pub const fn output_capacity_needed(&self) -> usize {
        self.output_limit + crate::frame::encoded_len(self.parser.max_frame_len() as usize)
    }
}

impl<P> Connection<P> {
    /// A connection parsing with `parser`, applying back-pressure at
    /// `output_limit` unsent bytes (raised to 1 if lower).
    pub const fn with_parser(parser: P, output_limit: usize) -> Self {
        let output_limit = if output_limit == 0 { 1 } else { output_limit };
        Connection { parser, output_limit, requests: 0, done: None }
    }

    /// The parsing state (for [`Parser::buffered`] and friends).
    pub const fn parser(&self) -> &P {
        &self.parser
    }

    /// Requests answered over the connection's life.
    pub const fn requests(&self) -> u64 {
        self.requests
    }
}

impl<P: Parser> Connection<P> {
    /// Whether the frontend should read more now, given the bytes its output holds.
    pub fn wants_read(&self, pending_output: usize) -> bool {
        self.done.is_none() && self.parser.error().is_none() && pending_output < self.output_limit
    }

    /// Takes `input`, which arrived at `now` (the handler's clock, in
    /// milliseconds), answering every complete request into `out`. Partial
    /// requests are kept in `buf` between calls. See [`Outcome`].
    pub fn receive<H, O, B>(
        &mut self,
        input: &[u8],
        now: u64,
        buf: &mut B,
        handler: &mut H,
        out: &mut O,
    ) -> Received<P::Error>
    where
        H: Handler<P> + ?Sized,
        O: Output + ?Sized,
        B: PayloadBuffer + ?Sized,
    {
        let mut pos = 0;
        let mut requests = 0;
        let outcome = loop {
            match self.done {
                Some(Done::Full) => break Outcome::OutputFull,
                Some(Done::Quit) => break Outcome::Quit,
                None => {}
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
                Ok((used, Parse::Complete(request))) => {
                    pos += used;
                    match handler.request(request, now, out) {
                        Ok(next) => {
                            requests += 1;
                            self.requests += 1;
                            if next == Next::Close {
                                self.done = Some(Done::Quit);
                            }
                        }
                        Err(OutputFull) => {
                            warn!("response does not fit the output; closing");
                            self.done = Some(Done::Full);
                        }
                    }
                }
                Ok((used, Parse::Partial)) => pos += used,
                Err(error) => {
                    // The stream is broken from here on: nothing after the bad bytes counts.
                    pos = input.len();
                    if handler.parse_error(error, out).is_err() {
                        self.done = Some(Done::Full);
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
        fn request<O: Output + ?Sized>(&mut self, payload: &[u8], _now: u64, out: &mut O) -> Result<Next, OutputFull> {
            encode_frame(payload, out).map(|()| Next::Continue)
        }

        fn parse_error<O: Output + ?Sized>(&mut self, error: FrameError, out: &mut O) -> Result<(), OutputFull> {
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
            let r = conn.receive(piece, 0, &mut buf, &mut Echo, &mut out);
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
        let r = conn.receive(&input, 0, &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r.consumed, r.requests, r.outcome), (20, 2, Outcome::Backpressure));
        assert!(!conn.wants_read(out.pending()));
        let r2 = conn.receive(&input[20..], 0, &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r2.consumed, r2.outcome), (0, Outcome::Backpressure), "nothing taken while full");
        out.clear();
        assert!(conn.wants_read(out.pending()));
        let r3 = conn.receive(&input[20..], 0, &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r3.consumed, r3.requests, r3.outcome), (20, 2, Outcome::Backpressure));
        out.clear();
        let r4 = conn.receive(&input[40..], 0, &mut [0u8; 64], &mut Echo, &mut out);
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
        let r = conn.receive(&input, 0, &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r.consumed, r.requests, r.outcome), (10, 1, Outcome::Backpressure));
        assert_eq!(&out[..], &frame(b"a")[..]);
        out.clear();
        let r = conn.receive(&input[10..], 0, &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r.consumed, r.requests, r.outcome), (10, 1, Outcome::Backpressure));
        out.clear();
        assert_eq!(conn.receive(&[], 0, &mut [0u8; 64], &mut Echo, &mut out).outcome, Outcome::NeedMore);
    }

    #[test]
    fn output_too_small_for_a_response_closes() {
        let mut conn = Connection::new(64, 1000);
        let mut out: heapless::Vec<u8, 12> = heapless::Vec::new();
        let r = conn.receive(&frame(b"too long for twelve"), 0, &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!(r.outcome, Outcome::OutputFull);
        assert!(out.is_empty());
        assert!(!conn.wants_read(0));
    }
}
