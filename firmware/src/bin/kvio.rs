//! The kvio firmware: kvio on a device, checked against the golden frames.
//!
//! The store lives in a `static` behind the core's critical-section wrapper;
//! each request frame reaches the sans-IO connection one byte per call, as a
//! UART would deliver it; the protobuf handler answers; every response is
//! compared with the golden response bytes. There is no heap: no
//! `#[global_allocator]` at all (the handler decodes requests in place). One line per check, a summary
//! line, then exit 0 if everything matched and 1 otherwise (a panic also
//! exits 1, through the panic handler).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use kvio_core::frame::FrameError;
use kvio_core::store::ArrayStore;
use kvio_core::{Connection, Handler, KeyValueStore, Outcome, Shared};
use kvio_firmware::{exit, golden, say};
use kvio_proto::KeyValueHandler;

/// Room for the 64 KiB golden put (a 65,560-byte `len`).
const MAX_FRAME_LEN: u32 = 80 * 1024;
/// The device's store: 64 slots and a 96 KiB byte budget (the golden puts take about 67 KiB).
type DeviceStore = ArrayStore<64, { 96 * 1024 }, MAX_FRAME_LEN>;
static STORE: Shared<DeviceStore> = Shared::new(DeviceStore::new());
/// `{kind: 3, status: NotOk, value: "store full"}` (docs/protocol.md: a
/// refused put says why in its `value`).
const PUT_RESPONSE_STORE_FULL: &[u8] = b"\x15\x00\x00\x00\x12\x0astore full\x18\x03\x20\x01@EOF@";
/// A store whose 512-byte budget refuses the 1 KiB golden put.
static SMALL_STORE: Shared<ArrayStore<8, 512, MAX_FRAME_LEN>> = Shared::new(ArrayStore::new());

/// Unsent response bytes before the connection pushes back, and the output's
/// room: the limit plus the largest response these checks provoke.
const OUTPUT_LIMIT: usize = 256;
type Output = heapless::Vec<u8, { OUTPUT_LIMIT + 256 }>;

/// The error frame PROTOCOL.md prescribes for a bad footer (not in the
/// golden set: `{value: "frame footer is not @EOF@", status: NotOk}`).
const BAD_FOOTER_RESPONSE: &[u8] = b"\x22\x00\x00\x00\x12\x19frame footer is not @EOF@\x20\x01@EOF@";

/// One serial link: a connection, its handler, and the bytes it answered.
struct Link<H> {
    connection: Connection,
    handler: H,
    output: Output,
}

impl<H: Handler> Link<H> {
    fn new(handler: H) -> Self {
        Link { connection: Connection::new(MAX_FRAME_LEN, OUTPUT_LIMIT), handler, output: Output::new() }
    }

    /// Delivers `request` one byte per `receive`; returns the first outcome
    /// that is not "need more" (or `NeedMore` once every byte was taken).
    fn send(&mut self, payload: &mut [u8], request: &[u8]) -> Outcome {
        for byte in request.chunks(1) {
            let received = self.connection.receive(byte, 0, payload, &mut self.handler, &mut self.output);
            if received.outcome != Outcome::NeedMore || received.consumed != 1 {
                return received.outcome;
            }
        }
        Outcome::NeedMore
    }

    /// Takes the answered bytes, leaving the output empty for the next exchange.
    fn take(&mut self) -> Output {
        core::mem::take(&mut self.output)
    }
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    fn check(&mut self, what: &str, outcome: Outcome, want_outcome: Outcome, got: &[u8], want: &[u8]) {
        if outcome != want_outcome {
            self.failed += 1;
            say!("FAIL {}: the connection did not end the exchange as expected", what);
        } else if let Some(at) = first_difference(got, want) {
            self.failed += 1;
            let byte = |bytes: &[u8]| bytes.get(at).map_or(-1, |&b| b as i32);
            say!(
                "FAIL {}: {} bytes, want {}; first difference at byte {}: {} (want {})",
                what,
                got.len(),
                want.len(),
                at,
                byte(got),
                byte(want)
            );
        } else {
            self.passed += 1;
            say!("ok {} ({} bytes)", what, got.len());
        }
    }
}

fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(at) => Some(at),
        None if got.len() != want.len() => Some(got.len().min(want.len())),
        None => None,
    }
}

#[entry]
fn main() -> ! {
    // Holds a payload that arrives split: here every payload, up to the 64 KiB one.
    let mut payload = [0u8; MAX_FRAME_LEN as usize];
    let mut tally = Tally::default();
    let need_more = Outcome::NeedMore;

    let mut link = Link::new(KeyValueHandler::new(&STORE));
    for (what, request, want) in [
        ("get_request before the put -> get_response_miss", golden::GET_REQUEST, golden::GET_RESPONSE_MISS),
        ("put_request -> put_response_ok", golden::PUT_REQUEST, golden::PUT_RESPONSE_OK),
        ("get_request after the put -> get_response_hit", golden::GET_REQUEST, golden::GET_RESPONSE_HIT),
        ("put_request_empty_key -> put_response_ok", golden::PUT_REQUEST_EMPTY_KEY, golden::PUT_RESPONSE_OK),
        ("put_request_empty_value -> put_response_ok", golden::PUT_REQUEST_EMPTY_VALUE, golden::PUT_RESPONSE_OK),
        ("put_request_unicode -> put_response_ok", golden::PUT_REQUEST_UNICODE, golden::PUT_RESPONSE_OK),
        ("put_request_value_1kib -> put_response_ok", golden::PUT_REQUEST_VALUE_1KIB, golden::PUT_RESPONSE_OK),
        ("put_request_value_64kib -> put_response_ok", golden::PUT_REQUEST_VALUE_64KIB, golden::PUT_RESPONSE_OK),
        ("get_request after the big puts -> get_response_hit", golden::GET_REQUEST, golden::GET_RESPONSE_HIT),
        ("delete_request -> delete_response_ok", golden::DELETE_REQUEST, golden::DELETE_RESPONSE_OK),
        ("get_request after the delete -> get_response_miss", golden::GET_REQUEST, golden::GET_RESPONSE_MISS),
        ("delete_request again -> delete_response_miss", golden::DELETE_REQUEST, golden::DELETE_RESPONSE_MISS),
        ("put_request again -> put_response_ok", golden::PUT_REQUEST, golden::PUT_RESPONSE_OK),
        ("get_request after the put again -> get_response_hit", golden::GET_REQUEST, golden::GET_RESPONSE_HIT),
    ] {
        let outcome = link.send(&mut payload, request);
        tally.check(what, outcome, need_more, &link.take(), want);
    }

    if cfg!(feature = "panic") {
        // The `panic` build: a failure that no comparison catches.
        let empty: &[u8] = core::hint::black_box(&[]);
        say!("about to index an empty slice");
        let _ = empty[tally.passed];
    }

    // Pipelined: three gets before any answer is taken; answered in order.
    let mut outcome = need_more;
    for _ in 0..3 {
        outcome = link.send(&mut payload, golden::GET_REQUEST);
    }
    let mut want: heapless::Vec<u8, 128> = heapless::Vec::new();
    for _ in 0..3 {
        want.extend_from_slice(golden::GET_RESPONSE_HIT).expect("room for three hits");
    }
    tally.check("3 pipelined get_request -> 3 get_response_hit", outcome, need_more, &link.take(), &want);
    let requests = link.connection.requests();

    // A store too small for the put: refused, and the link goes on.
    let mut small = Link::new(KeyValueHandler::new(&SMALL_STORE));
    let outcome = small.send(&mut payload, golden::PUT_REQUEST_VALUE_1KIB);
    tally.check(
        "put_request_value_1kib into a 512-byte store -> put_response_not_ok with 'store full'",
        outcome,
        need_more,
        &small.take(),
        PUT_RESPONSE_STORE_FULL,
    );
    let outcome = small.send(&mut payload, golden::PUT_REQUEST);
    tally.check("then put_request -> put_response_ok", outcome, need_more, &small.take(), golden::PUT_RESPONSE_OK);

    // A broken footer: the error frame, then the link closes.
    let mut broken = Link::new(KeyValueHandler::new(&STORE));
    let mut request: heapless::Vec<u8, 64> = heapless::Vec::from_slice(golden::PUT_REQUEST).expect("a short frame");
    *request.last_mut().expect("a frame") = b'!';
    let outcome = broken.send(&mut payload, &request);
    tally.check(
        "put_request with a bad footer -> error frame, close",
        outcome,
        Outcome::Close(FrameError::BadFooter),
        &broken.take(),
        BAD_FOOTER_RESPONSE,
    );

    let (entries, bytes) = STORE.with(|store| (store.len(), store.bytes_used()));
    let stored = (&STORE).get(b"value-64KiB", |value| value.map_or(0, <[u8]>::len));
    say!(
        "kvio firmware: {} of {} checks passed; {} requests answered; store: {} entries, {} bytes (64 KiB value: {} bytes); no heap",
        tally.passed,
        tally.passed + tally.failed,
        requests + small.connection.requests() + broken.connection.requests(),
        entries,
        bytes,
        stored
    );
    exit(tally.failed == 0)
}
