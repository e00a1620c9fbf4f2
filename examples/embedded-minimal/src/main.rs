//! kvio's key/value protocol served over a UART: the code of
//! docs/embedding.md, which a test holds equal to this file.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use kvio_core::frame::encoded_len;
use kvio_core::store::ArrayStore;
use kvio_core::{SerialLink, Shared};
use kvio_proto::KeyValueHandler;

/// The largest frame `len`: keys up to 499 bytes, values up to 500.
const MAX_FRAME_LEN: u32 = 1024;
/// Slots of the store's table (a power of two): 111 entries (7/8 of it, less one).
const STORE_SLOTS: usize = 128;
/// The store's byte budget: keys, values and a 12-byte header per entry
/// (more for an expiry, flags or cas: docs/store.md).
const STORE_BYTES: usize = 16 * 1024;
/// Unsent response bytes at which the link stops taking requests.
const OUTPUT_LIMIT: usize = 256;
/// The output buffer: the limit plus the largest response, so one always fits.
const OUTPUT_BYTES: usize = OUTPUT_LIMIT + encoded_len(MAX_FRAME_LEN as usize);
/// Line silence after which a partial frame is dropped (milliseconds).
const SILENCE_MS: u64 = 20;

type DeviceStore = ArrayStore<STORE_SLOTS, STORE_BYTES, MAX_FRAME_LEN>;
/// In a `static`: all zeros, so it takes `.bss`, not flash or stack.
static STORE: Shared<DeviceStore> = Shared::new(DeviceStore::new());

#[entry]
fn main() -> ! {
    let mut core = cortex_m::Peripherals::take().unwrap();
    start_clock(&mut core.SYST);
    let mut uart = Uart::enable(0x4000_4000, 115_200);

    let mut link = SerialLink::new(MAX_FRAME_LEN, OUTPUT_LIMIT, SILENCE_MS);
    let mut handler = KeyValueHandler::new(&STORE);
    let mut payload = [0u8; MAX_FRAME_LEN as usize];
    let mut output = heapless::Vec::<u8, OUTPUT_BYTES>::new();
    let mut input = [0u8; 64];
    // input[taken..read]: bytes read and not yet taken by the link.
    let (mut taken, mut read) = (0, 0);
    loop {
        let now = now_ms();
        link.handle_timeout(now);
        if link.wants_read(output.len()) {
            if taken == read {
                (taken, read) = (0, uart.read(&mut input));
            }
            if taken < read {
                let received = link.receive(now, &input[taken..read], &mut payload, &mut handler, &mut output);
                taken += received.consumed;
            }
        }
        let sent = uart.write(&output);
        output.rotate_left(sent);
        output.truncate(output.len() - sent);
    }
}

/// Milliseconds since `start_clock`, counted by SysTick.
static MILLIS: AtomicU32 = AtomicU32::new(0);

fn start_clock(syst: &mut SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

fn now_ms() -> u64 {
    u64::from(MILLIS.load(Ordering::Relaxed))
}

/// The core clock: 25 MHz on this board.
const CORE_HZ: u32 = 25_000_000;

/// An ARM CMSDK UART, polled: replace it with your board's UART driver, or
/// a TCP socket of smoltcp or embassy-net (which do have a close: give
/// each connection a `kvio_core::Connection` instead of a `SerialLink`).
struct Uart {
    base: usize,
}

impl Uart {
    const DATA: usize = 0x00;
    const STATE: usize = 0x04;
    const CTRL: usize = 0x08;
    const BAUDDIV: usize = 0x10;

    fn enable(base: usize, baud: u32) -> Uart {
        let uart = Uart { base };
        uart.set(Self::BAUDDIV, CORE_HZ / baud);
        uart.set(Self::CTRL, 0b11); // transmitter and receiver on
        uart
    }

    /// The bytes waiting, up to `buf.len()`.
    fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() && self.get(Self::STATE) & 0b10 != 0 {
            buf[n] = self.get(Self::DATA) as u8;
            n += 1;
        }
        n
    }

    /// Hands the transmitter what it takes now; returns how many bytes.
    fn write(&mut self, bytes: &[u8]) -> usize {
        let mut n = 0;
        while n < bytes.len() && self.get(Self::STATE) & 0b01 == 0 {
            self.set(Self::DATA, u32::from(bytes[n]));
            n += 1;
        }
        n
    }

    fn get(&self, offset: usize) -> u32 {
        // SAFETY: `base` is the UART's register block, always mapped.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn set(&self, offset: usize, value: u32) {
        // SAFETY: as in `get`.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    cortex_m::asm::udf()
}
