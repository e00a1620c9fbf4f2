//! A [`Connection`] over a byte stream that never closes: a serial line.
//!
//! A UART has no connect and no close, so the rules a socket gets from its
//! end of stream come here from line silence instead, in the style of
//! Modbus RTU's inter-frame gap:
//!
//! - After a framing error the error frame is sent (the connection put it
//!   in the output), then every byte is dropped until the line has been
//!   silent for the link's `silence`; then a fresh frame starts.
//! - A partial frame followed by `silence` without a byte is dropped, so a
//!   client that vanished mid-frame cannot corrupt the next client's first
//!   request.
//!
//! Like [`Connection`] it does no IO and reads no clock: time is a `u64`
//! count of whatever ticks the driver's clock gives, passed in as `now`;
//! [`SerialLink::poll_timeout`] says when the link next wants
//! [`SerialLink::handle_timeout`] (the shape of smoltcp's `poll_at`).
//!
//! Silence is counted from the last [`SerialLink::receive`] that brought
//! bytes. While the driver holds input back for back-pressure the link is
//! not silent (the line is stopped by the device, not by the client), so no
//! timeout runs until the held input was taken.

use crate::buffer::{Output, PayloadBuffer};
use crate::connection::{Connection, Handler, Outcome, Received};

/// What the line is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LineState {
    /// Frames are parsed and answered.
    Serving,
    /// After a framing error: bytes are dropped until the line is silent.
    Discarding,
}

/// One serial line's framing and silence rules. See the [module docs](self).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SerialLink {
    connection: Connection,
    max_frame_len: u32,
    output_limit: usize,
    silence: u64,
    state: LineState,
    /// When the last bytes came in (`None`: never).
    last_input: Option<u64>,
    /// The driver holds input that the connection refused (back-pressure).
    held: bool,
    requests: u64,
    framing_errors: u64,
    dropped_partials: u64,
}

impl SerialLink {
    /// A link whose connections refuse frames over `max_frame_len`, push
    /// back at `output_limit` unsent bytes (see [`Connection::new`]), and
    /// resynchronise after `silence` ticks without a byte.
    pub const fn new(max_frame_len: u32, output_limit: usize, silence: u64) -> Self {
        SerialLink {
            connection: Connection::new(max_frame_len, output_limit),
            max_frame_len,
            output_limit,
            silence,
            state: LineState::Serving,
            last_input: None,
            held: false,
            requests: 0,
            framing_errors: 0,
            dropped_partials: 0,
        }
    }

    /// The current connection (its parser, its request count since the last resynchronisation).
    pub const fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Serving or discarding.
    pub const fn state(&self) -> LineState {
        self.state
    }

    /// Requests answered over the link's life.
    pub const fn requests(&self) -> u64 {
        self.requests
    }

    /// Framing errors over the link's life (each answered by an error frame).
    pub const fn framing_errors(&self) -> u64 {
        self.framing_errors
    }

    /// Partial frames dropped after silence.
    pub const fn dropped_partials(&self) -> u64 {
        self.dropped_partials
    }

    /// Whether the driver should take more input now, given the bytes its
    /// output holds. While discarding, input is always taken (and dropped).
    pub fn wants_read(&self, pending_output: usize) -> bool {
        match self.state {
            LineState::Serving => self.connection.wants_read(pending_output),
            LineState::Discarding => true,
        }
    }

    /// Takes `input` that arrived by `now`. While serving, this is
    /// [`Connection::receive`]; a framing error (or a response that does not
    /// fit the output) turns the link to discarding, and the outcome says
    /// `NeedMore` with all input consumed: the line is never closed. While
    /// discarding, all input is consumed and dropped. On `Backpressure` the
    /// driver keeps `input[consumed..]` and pushes it again once its output
    /// drained; no silence is counted meanwhile.
    pub fn receive<H, O, B>(&mut self, now: u64, input: &[u8], buf: &mut B, handler: &mut H, out: &mut O) -> Received
    where
        H: Handler + ?Sized,
        O: Output + ?Sized,
        B: PayloadBuffer + ?Sized,
    {
        if !input.is_empty() {
            self.last_input = Some(now);
        }
        if self.state == LineState::Discarding {
            self.held = false;
            return Received { consumed: input.len(), requests: 0, outcome: Outcome::NeedMore };
        }
        // The store's clock is not the line's: a link's ticks may be any unit,
        // and a device with no wall clock keeps nothing that expires.
        let mut received = self.connection.receive(input, 0, buf, handler, out);
        self.requests += received.requests as u64;
        self.held = received.outcome == Outcome::Backpressure && received.consumed < input.len();
        if let Outcome::Close(_) | Outcome::Quit | Outcome::OutputFull = received.outcome {
            debug!("serial link: discarding until {} ticks of silence", self.silence);
            self.framing_errors += 1;
            self.state = LineState::Discarding;
            received = Received { consumed: input.len(), outcome: Outcome::NeedMore, ..received };
        }
        received
    }

    /// When the link wants [`handle_timeout`](Self::handle_timeout): the
    /// end of the silence that ends discarding or drops a partial frame;
    /// `None` at a frame boundary, while input is held, or before any input.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.held {
            return None;
        }
        let waiting = match self.state {
            LineState::Discarding => true,
            LineState::Serving => !self.connection.parser().is_at_boundary(),
        };
        match (waiting, self.last_input) {
            (true, Some(last)) => Some(last.saturating_add(self.silence)),
            _ => None,
        }
    }

    /// Applies the silence rules at `now`: a fresh connection after
    /// discarding, or after a partial frame (dropped). Returns true if the
    /// link resynchronised. Calling it early does nothing.
    pub fn handle_timeout(&mut self, now: u64) -> bool {
        match self.poll_timeout() {
            Some(due) if now >= due => {
                if self.state == LineState::Serving {
                    debug!("serial link: partial frame dropped after silence");
                    self.dropped_partials += 1;
                }
                self.connection = Connection::new(self.max_frame_len, self.output_limit);
                self.state = LineState::Serving;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::buffer::OutputFull;
    use crate::frame::{FrameError, encode_frame, write_frame};
    use crate::protocol::Next;
    use std::vec::Vec;

    /// Echoes each payload; errors as "E".
    struct Echo;

    impl Handler for Echo {
        fn request<O: Output + ?Sized>(&mut self, payload: &[u8], _now: u64, out: &mut O) -> Result<Next, OutputFull> {
            encode_frame(payload, out).map(|()| Next::Continue)
        }

        fn parse_error<O: Output + ?Sized>(&mut self, _: FrameError, out: &mut O) -> Result<(), OutputFull> {
            write_frame(out, 1, |dst| dst[0] = b'E')
        }
    }

    const SILENCE: u64 = 50;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v: heapless::Vec<u8, 64> = heapless::Vec::new();
        encode_frame(payload, &mut v).unwrap();
        v.to_vec()
    }

    struct Line {
        link: SerialLink,
        buf: [u8; 64],
        out: heapless::Vec<u8, 1024>,
    }

    impl Line {
        fn new() -> Line {
            Line { link: SerialLink::new(64, 512, SILENCE), buf: [0; 64], out: heapless::Vec::new() }
        }

        fn send(&mut self, now: u64, bytes: &[u8]) -> Received {
            self.link.receive(now, bytes, &mut self.buf, &mut Echo, &mut self.out)
        }

        fn take(&mut self) -> Vec<u8> {
            let v = self.out.to_vec();
            self.out.clear();
            v
        }
    }

    #[test]
    fn frames_split_with_pauses_under_the_silence_are_answered() {
        let mut line = Line::new();
        let f = frame(b"hello");
        for (i, byte) in f.iter().enumerate() {
            let now = i as u64 * (SILENCE - 1);
            assert!(!line.link.handle_timeout(now), "byte {i}: no timeout within the silence");
            assert_eq!(line.send(now, core::slice::from_ref(byte)).outcome, Outcome::NeedMore);
        }
        assert_eq!(line.take(), f);
        assert_eq!(line.link.poll_timeout(), None, "at a boundary nothing is due");
        assert_eq!(line.link.requests(), 1);
    }

    #[test]
    fn a_partial_frame_is_dropped_after_silence_and_the_next_frame_served() {
        let mut line = Line::new();
        let f = frame(b"next");
        line.send(100, &frame(b"vanished")[..7]);
        assert_eq!(line.link.poll_timeout(), Some(100 + SILENCE));
        assert!(!line.link.handle_timeout(100 + SILENCE - 1));
        assert!(line.link.handle_timeout(100 + SILENCE));
        assert_eq!(line.link.dropped_partials(), 1);
        assert_eq!(line.link.poll_timeout(), None);
        assert_eq!(line.send(200, &f).outcome, Outcome::NeedMore);
        assert_eq!(line.take(), f, "the new client's frame is not glued to the old half");
    }

    #[test]
    fn without_silence_a_partial_frame_is_kept() {
        // The reason the rule exists: a new client that speaks within the silence is glued on.
        let mut line = Line::new();
        let f = frame(b"x");
        line.send(0, &f[..3]);
        assert!(!line.link.handle_timeout(SILENCE - 1));
        line.send(SILENCE - 1, &f[3..]);
        assert_eq!(line.take(), f);
    }

    #[test]
    fn after_a_framing_error_input_is_dropped_until_silence() {
        let mut line = Line::new();
        let mut bytes = frame(b"before");
        bytes.extend_from_slice(&1000u32.to_le_bytes()); // over max 64
        let r = line.send(0, &bytes);
        assert_eq!((r.consumed, r.requests, r.outcome), (bytes.len(), 1, Outcome::NeedMore));
        let mut want = frame(b"before");
        want.extend_from_slice(&frame(b"E"));
        assert_eq!(line.take(), want, "earlier request, then the error frame");
        assert_eq!(line.link.state(), LineState::Discarding);
        // Bytes keep coming: each restarts the silence, and nothing is answered.
        for t in [10, 40, 80] {
            assert!(!line.link.handle_timeout(t));
            assert_eq!(line.send(t, &frame(b"ignored")).consumed, frame(b"ignored").len());
        }
        assert!(line.take().is_empty());
        assert_eq!(line.link.poll_timeout(), Some(80 + SILENCE));
        assert!(line.link.handle_timeout(80 + SILENCE));
        assert_eq!(line.link.state(), LineState::Serving);
        line.send(200, &frame(b"after"));
        assert_eq!(line.take(), frame(b"after"));
        assert_eq!((line.link.framing_errors(), line.link.dropped_partials(), line.link.requests()), (1, 0, 2));
    }

    #[test]
    fn no_silence_is_counted_while_input_is_held_for_backpressure() {
        let mut link = SerialLink::new(64, 10, SILENCE);
        let mut out: heapless::Vec<u8, 256> = heapless::Vec::new();
        let mut input = frame(b"a");
        input.extend_from_slice(&frame(b"b"));
        let r = link.receive(0, &input, &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r.consumed, r.outcome), (10, Outcome::Backpressure));
        assert_eq!(link.poll_timeout(), None, "the device stopped the line, not the client");
        assert!(!link.handle_timeout(10 * SILENCE));
        out.clear();
        let r = link.receive(10 * SILENCE, &input[10..], &mut [0u8; 64], &mut Echo, &mut out);
        assert_eq!((r.consumed, r.requests), (10, 1));
        assert_eq!(link.requests(), 2);
    }
}
