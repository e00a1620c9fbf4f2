//! kvio served over UART0: the device a client talks to.
//!
//! QEMU bridges UART0 to a loopback TCP port (`ci/uart-server`), so
//! `kvio get --addr 127.0.0.1:PORT` reaches this firmware as it reaches
//! the Linux servers.
//!
//! - **Receive**: the UART0 RX interrupt moves bytes into a fixed
//!   `heapless::spsc` queue. When the queue is full it leaves the byte in the
//!   UART and turns its own interrupt off; QEMU then stops reading the TCP
//!   stream, so the client's writes wait. Nothing is dropped.
//! - **Serve**: the main loop feeds the bytes to the core's sans-IO
//!   [`SerialLink`] (a `Connection` with the line-silence rules of
//!   `firmware/README.md`, "Serial link rules") and [`KeyValueHandler`] over
//!   a `static` store behind `kvio_core::Shared`.
//! - **Transmit**: polled from the main loop, one byte whenever the UART
//!   is free; when the host side blocks, the loop sleeps until the TX
//!   interrupt says the byte went. A full output stops the link taking
//!   input (the core's `Backpressure`), which stops the queue, which stops
//!   the line.
//! - **Time**: TIMER0 runs free at 25 MHz (the clock); SysTick is armed one
//!   shot to wake the loop at the link's next silence deadline. TIMER1 only
//!   serves to nudge QEMU into reading the socket again (see `cmsdk`).
//!
//! No allocator: kvio-proto's handler decodes requests in place. Every size is in [`size`]. Logs (semihosting text, or defmt with the
//! `defmt` feature) say when it starts, and after each burst of traffic the
//! requests served and the CPU time they took ([`Meter`]).
#![no_std]
#![no_main]

use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use cortex_m::interrupt::{self, Mutex};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{NVIC, SYST};
use cortex_m::singleton;
use cortex_m_rt::{entry, exception};
use heapless::spsc::{Consumer, Producer, Queue};
use kvio_core::store::ArrayStore;
use kvio_core::{Output, OutputFull, SerialLink, Shared};
use kvio_firmware::cmsdk::{Irq, PCLK_HZ, Timer, Uart};
use kvio_firmware::say;
use kvio_proto::KeyValueHandler;

/// Every size of the device, in one place.
mod size {
    use kvio_core::frame::encoded_len;
    use kvio_core::store::Limits;

    /// The largest frame `len`: a 64 KiB value and a key of up to 1 KiB
    /// (the store's limits for it: keys 1,024 bytes, values 66,535).
    pub const MAX_FRAME_LEN: u32 = 66 * 1024;
    /// Slots of the store's table: 1,791 entries (it stays under 7/8 full).
    pub const STORE_SLOTS: usize = 2048;
    /// The store's byte budget for keys, values and 12 bytes per entry (the
    /// device's records are plain: no `entry-fields`).
    pub const STORE_BYTES: usize = 256 * 1024;
    /// Unsent response bytes at which the link stops taking requests.
    pub const OUTPUT_LIMIT: usize = 1024;
    /// The output buffer: the limit plus the largest response, so a response always fits.
    pub const OUTPUT_BYTES: usize = OUTPUT_LIMIT + encoded_len(MAX_FRAME_LEN as usize);
    /// The RX queue between the interrupt and the loop (holds one byte less).
    pub const RX_QUEUE: usize = 1024;
    /// Input bytes the loop takes from the queue per `receive`.
    pub const CHUNK: usize = 256;
    /// The line silence that ends discarding and drops a partial frame.
    /// A real 115,200-baud line could use a few ms (Modbus RTU: 3.5
    /// characters); under QEMU on a shared host the emulator and the TCP
    /// client can pause the line for hundreds of ms (firmware/README.md).
    pub const SILENCE_MS: u32 = 500;
    /// UART0's baud rate (QEMU does not simulate it; a real board would).
    pub const BAUD: u32 = 115_200;

    const LIMITS: Limits = Limits::for_frame(MAX_FRAME_LEN, usize::MAX, STORE_BYTES);
    /// Entries the table holds (`ArrayStore::new`'s rule).
    const ENTRIES: usize = STORE_SLOTS - STORE_SLOTS / 8 - 1;
    const _: () = assert!(ENTRIES >= 1024, "at least 1,024 entries");
    const _: () = assert!(LIMITS.max_value_len >= 64 * 1024, "a 64 KiB value fits");
    const _: () = assert!(STORE_BYTES >= 256 * 1024, "at least 256 KiB");
}

/// Clock ticks (TIMER0 at the 25 MHz peripheral clock) per millisecond.
const TICKS_PER_MS: u32 = PCLK_HZ / 1000;
const SILENCE_TICKS: u64 = size::SILENCE_MS as u64 * TICKS_PER_MS as u64;

type DeviceStore = ArrayStore<{ size::STORE_SLOTS }, { size::STORE_BYTES }, { size::MAX_FRAME_LEN }>;
static STORE: Shared<DeviceStore> = Shared::new(DeviceStore::new());

/// The RX interrupt's end of the queue (the loop owns the other end).
static RX_PRODUCER: Mutex<RefCell<Option<Producer<'static, u8>>>> = Mutex::new(RefCell::new(None));
/// The queue was full: the RX interrupt is off and a byte waits in the UART.
static RX_STALLED: AtomicBool = AtomicBool::new(false);
/// TIMER0 wraps so far: the clock's high word.
static CLOCK_WRAPS: AtomicU32 = AtomicU32::new(0);
/// When the oldest byte the loop has not seen yet arrived (set by the RX
/// interrupt when it fills an empty queue): the silence rule is applied up
/// to that moment before the byte is fed, however late the loop wakes.
static FIRST_UNSEEN_AT: Mutex<Cell<Option<u64>>> = Mutex::new(Cell::new(None));

/// Clock ticks since start (TIMER0, extended to 64 bits by its wrap interrupt).
fn now() -> u64 {
    let timer = Timer::TIMER0;
    loop {
        let wraps = CLOCK_WRAPS.load(Ordering::Acquire);
        let elapsed = u32::MAX - timer.value();
        let pending = timer.wrapped();
        if CLOCK_WRAPS.load(Ordering::Acquire) != wraps {
            continue;
        }
        // A wrap whose interrupt could not run yet (interrupts masked) still counts.
        let wraps = wraps as u64 + u64::from(pending && elapsed < u32::MAX / 2);
        return (wraps << 32) | elapsed as u64;
    }
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    match Irq::from_number(irqn) {
        Some(Irq::UART0_RX) => receive_interrupt(),
        Some(Irq::UART0_TX) => {
            // Only wakes the loop, which transmits.
            let uart = Uart::UART0;
            uart.set_tx_interrupt(false);
            uart.clear_tx_interrupt();
        }
        Some(Irq::TIMER0) => {
            Timer::TIMER0.clear_interrupt();
            CLOCK_WRAPS.fetch_add(1, Ordering::AcqRel);
        }
        _ => panic!("unexpected interrupt {}", irqn),
    }
}

/// SysTick only wakes the loop at a deadline; the loop reads the clock.
#[exception]
fn SysTick() {}

/// Moves every waiting byte from UART0 into the queue, or stalls the line if it is full.
fn receive_interrupt() {
    let uart = Uart::UART0;
    // Cleared first: a byte that arrives while draining raises it again.
    uart.clear_rx_interrupt();
    interrupt::free(|cs| {
        let mut producer = RX_PRODUCER.borrow(cs).borrow_mut();
        let Some(producer) = producer.as_mut() else { return };
        while uart.rx_full() {
            if !producer.ready() {
                // Leave the byte in the UART: QEMU stops reading the client until the loop restarts us.
                uart.set_rx_interrupt(false);
                RX_STALLED.store(true, Ordering::Release);
                return;
            }
            if let Some(byte) = uart.try_read() {
                let first = FIRST_UNSEEN_AT.borrow(cs);
                if first.get().is_none() {
                    first.set(Some(now()));
                }
                // Cannot fail: `ready` said there is room, and only this handler enqueues.
                let _ = producer.enqueue(byte);
            }
        }
        // The UART has room again: make QEMU look at the socket now, not at its next timer.
        Timer::TIMER1.nudge();
    });
}

/// The response bytes, drained from the front by the transmitter. Implements
/// the core's [`Output`] over a fixed array: appends go at the end,
/// compacting first when the end is reached.
struct TxBuffer {
    bytes: &'static mut [u8; size::OUTPUT_BYTES],
    start: usize,
    end: usize,
}

impl TxBuffer {
    fn front(&self) -> Option<u8> {
        (self.start < self.end).then(|| self.bytes[self.start])
    }

    fn advance(&mut self) {
        self.start += 1;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

impl Output for TxBuffer {
    fn pending(&self) -> usize {
        self.end - self.start
    }

    fn append(&mut self, len: usize) -> Result<&mut [u8], OutputFull> {
        if self.end.saturating_add(len) > self.bytes.len() && self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end.checked_add(len).filter(|&end| end <= self.bytes.len()).ok_or(OutputFull)?;
        let added = &mut self.bytes[self.end..end];
        self.end = end;
        Ok(added)
    }

    fn truncate_back(&mut self, len: usize) {
        self.end = self.end.saturating_sub(len).max(self.start);
    }
}

/// What a burst of traffic cost, logged once the line went quiet.
#[derive(Default)]
struct Meter {
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Clock ticks in loop passes that moved bytes or changed the link,
    /// interrupts included; passes that only woke and found nothing are
    /// not counted. Under `qemu -icount shift=0` one instruction takes 1 ns
    /// of the guest's time, so ticks x 40 (ns per 25 MHz tick) = instructions.
    busy_ticks: u64,
    /// Of those, the ticks inside `SerialLink::receive`: framing, decoding,
    /// the store and encoding, without the interrupts and the loop around them.
    receive_ticks: u64,
    /// When the burst's last byte came in.
    last_input: u64,
    /// The longest wait between two inputs within the burst.
    max_gap_ticks: u64,
}

impl Meter {
    fn active(&self) -> bool {
        self.bytes_in > 0
    }
}

/// The device's loop state: the link and the buffers it reads and writes.
struct Device {
    uart: Uart,
    rx: Consumer<'static, u8>,
    link: SerialLink,
    handler: KeyValueHandler<&'static Shared<DeviceStore>>,
    payload: &'static mut [u8; size::MAX_FRAME_LEN as usize],
    out: TxBuffer,
    /// Input taken from the queue and not yet consumed by the link.
    chunk: [u8; size::CHUNK],
    chunk_at: usize,
    chunk_len: usize,
    meter: Meter,
}

impl Device {
    /// Moves bytes until nothing moves: transmit, take input, answer.
    /// Returns whether anything moved. Reads the clock for each input
    /// taken: under a steady stream this runs for as long as it lasts.
    fn service(&mut self) -> bool {
        let mut moved = false;
        loop {
            let mut progress = false;
            while let Some(byte) = self.out.front() {
                if !self.uart.try_write(byte) {
                    break;
                }
                self.out.advance();
                self.meter.bytes_out += 1;
                progress = true;
            }
            let wants = self.link.wants_read(self.out.pending());
            if wants && self.chunk_at == self.chunk_len {
                self.chunk_at = 0;
                self.chunk_len = 0;
                while self.chunk_len < size::CHUNK {
                    let Some(byte) = self.rx.dequeue() else { break };
                    self.chunk[self.chunk_len] = byte;
                    self.chunk_len += 1;
                }
                if self.chunk_len > 0 {
                    let t = now();
                    if self.meter.active() {
                        self.meter.max_gap_ticks = self.meter.max_gap_ticks.max(t - self.meter.last_input);
                    }
                    self.meter.last_input = t;
                }
                self.meter.bytes_in += self.chunk_len as u64;
                self.restart_rx_if_room();
            }
            if wants && self.chunk_at < self.chunk_len {
                let input = &self.chunk[self.chunk_at..self.chunk_len];
                let start = now();
                let received = self.link.receive(start, input, self.payload, &mut self.handler, &mut self.out);
                self.meter.receive_ticks += now() - start;
                self.chunk_at += received.consumed;
                self.meter.requests += received.requests as u64;
                progress = true;
            }
            if !progress {
                return moved;
            }
            moved = true;
        }
    }

    /// After the queue stalled the line: once it has room again, turn the
    /// RX interrupt back on and raise it, so the byte waiting in the UART moves.
    fn restart_rx_if_room(&mut self) {
        if RX_STALLED.load(Ordering::Acquire) && self.rx.len() < size::RX_QUEUE / 2 {
            RX_STALLED.store(false, Ordering::Release);
            // Masked: the TX interrupt handler also writes CTRL.
            interrupt::free(|_| self.uart.set_rx_interrupt(true));
            NVIC::pend(Irq::UART0_RX);
        }
    }

    /// True if the loop has something to do right now (checked with
    /// interrupts masked, just before sleeping). Arms the TX interrupt when
    /// output waits for a busy transmitter.
    fn ready(&self, now: u64, deadline: Option<u64>) -> bool {
        let wants = self.link.wants_read(self.out.pending());
        if wants && (self.chunk_at < self.chunk_len || !self.rx.is_empty()) {
            return true;
        }
        if RX_STALLED.load(Ordering::Acquire) && self.rx.len() < size::RX_QUEUE / 2 {
            return true;
        }
        if deadline.is_some_and(|due| now >= due) {
            return true;
        }
        if self.out.pending() > 0 {
            self.uart.set_tx_interrupt(true);
            // Went out meanwhile? Then no interrupt comes for it: go on without sleeping.
            return !self.uart.tx_full();
        }
        false
    }

    /// The next time the loop must wake without a byte: the link's silence
    /// deadline, or the end of a burst (to log the meter).
    fn deadline(&self) -> Option<u64> {
        let report = self.meter.active().then(|| self.meter.last_input + SILENCE_TICKS);
        match (self.link.poll_timeout(), report) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Logs the meter once the line has been quiet for the silence and
    /// everything was answered, then starts a new burst.
    fn report_if_quiet(&mut self, now: u64) -> bool {
        let quiet = self.meter.active()
            && now >= self.meter.last_input + SILENCE_TICKS
            && self.out.pending() == 0
            && self.link.connection().parser().is_at_boundary()
            && self.rx.is_empty();
        if quiet {
            let m = &self.meter;
            say!(
                "kvio-uart: burst: {} requests, {} bytes in, {} bytes out, {} busy ticks ({} in receive), longest gap {} ticks; link: {} requests, {} framing errors, {} partial frames dropped",
                m.requests,
                m.bytes_in,
                m.bytes_out,
                m.busy_ticks,
                m.receive_ticks,
                m.max_gap_ticks,
                self.link.requests(),
                self.link.framing_errors(),
                self.link.dropped_partials()
            );
            self.meter = Meter::default();
        }
        quiet
    }
}

/// Arms SysTick (core clock, 25 MHz like the timer) to fire once `ticks`
/// from now, at most its 24-bit range ahead (the loop re-arms), or stops it.
fn arm_wakeup(syst: &mut SYST, ticks: Option<u64>) {
    syst.disable_counter();
    if let Some(ticks) = ticks {
        syst.set_reload(ticks.clamp(1, 0x00ff_ffff) as u32);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
    }
}

#[entry]
fn main() -> ! {
    let mut core = cortex_m::Peripherals::take().expect("first call");
    let queue = singleton!(: Queue<u8, { size::RX_QUEUE }> = Queue::new()).expect("first call");
    let (producer, rx) = queue.split();
    interrupt::free(|cs| RX_PRODUCER.borrow(cs).replace(Some(producer)));

    let mut device = Device {
        uart: Uart::UART0,
        rx,
        link: SerialLink::new(size::MAX_FRAME_LEN, size::OUTPUT_LIMIT, SILENCE_TICKS),
        handler: KeyValueHandler::new(&STORE),
        payload: singleton!(: [u8; size::MAX_FRAME_LEN as usize] = [0; size::MAX_FRAME_LEN as usize])
            .expect("first call"),
        out: TxBuffer {
            bytes: singleton!(: [u8; size::OUTPUT_BYTES] = [0; size::OUTPUT_BYTES]).expect("first call"),
            start: 0,
            end: 0,
        },
        chunk: [0; size::CHUNK],
        chunk_at: 0,
        chunk_len: 0,
        meter: Meter::default(),
    };

    Timer::TIMER0.start_free_running();
    Timer::TIMER1.start_nudger();
    core.SYST.set_clock_source(SystClkSource::Core);
    device.uart.enable(size::BAUD);
    // SAFETY: unmasking cannot break a critical section here: every shared
    // state is behind `interrupt::free` (PRIMASK), not priority levels, and
    // each handler's state (the producer, the atomics) is set up above.
    unsafe {
        NVIC::unmask(Irq::UART0_RX);
        NVIC::unmask(Irq::UART0_TX);
        NVIC::unmask(Irq::TIMER0);
    }
    say!(
        "kvio-uart: serving on UART0; max frame {} bytes, store {} slots / {} bytes, silence {} ms, no heap",
        size::MAX_FRAME_LEN,
        size::STORE_SLOTS,
        size::STORE_BYTES,
        size::SILENCE_MS
    );

    // Start of the loop pass being measured.
    let mut since = now();
    loop {
        // A byte that came after a silence starts afresh: end the silence at
        // its arrival before feeding it (the loop may wake long after).
        let mut worked = false;
        if let Some(arrived) = interrupt::free(|cs| FIRST_UNSEEN_AT.borrow(cs).take()) {
            worked = device.link.handle_timeout(arrived);
        }
        worked |= device.service();
        let t = now();
        // Silence only if no byte is waiting (a busy host can delay the loop, not the line).
        let waiting = !device.rx.is_empty() || device.uart.rx_full() || RX_STALLED.load(Ordering::Acquire);
        if !waiting && device.link.handle_timeout(t) {
            worked = true;
        }
        device.report_if_quiet(t);
        let deadline = device.deadline();
        arm_wakeup(&mut core.SYST, deadline.map(|due| due.saturating_sub(t)));
        interrupt::free(|_| {
            let t = now();
            if worked {
                device.meter.busy_ticks += t - since;
            }
            since = t;
            if !device.ready(t, deadline) {
                cortex_m::asm::wfi();
                // Before the waking interrupt runs (after this block): it is part of the next pass.
                since = now();
            }
        });
    }
}
