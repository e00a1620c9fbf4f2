//! The two CMSDK APB peripherals the UART firmware drives, as QEMU's
//! mps2-an386 has them (ARM DDI0479C, "Cortex-M System Design Kit": the
//! APB UART and the APB timer; addresses and interrupt numbers from QEMU's
//! `hw/arm/mps2.c`, checked with `info mtree`).
//!
//! Only register access lives here: no buffering, no policy. Both
//! peripherals run from the 25 MHz peripheral clock.
//!
//! What QEMU's UART model does that a driver must know (`hw/char/cmsdk-apb-uart.c`):
//! - RX holds one byte. While `RXFULL` is set QEMU does not read the host
//!   side at all, so a device that leaves the byte there stops the TCP
//!   stream (back-pressure reaches the client), and nothing is overrun.
//! - The RX interrupt status is set when a byte arrives and stays set until
//!   written to `INTCLEAR`; reading `DATA` does not clear it.
//! - A `DATA` write goes out at once unless the host side would block; then
//!   `TXFULL` stays set until it went, and the TX interrupt status is set
//!   when it clears (only if `TX_INTEN` was on).
//! - The baud rate is not simulated: bytes move as fast as QEMU moves them.
//! - After `DATA` is read the model does not tell QEMU's character backend
//!   that it can take input again (it never calls
//!   `qemu_chr_fe_accept_input`), so the TCP socket is polled again only
//!   when QEMU's main loop next wakes for another reason: input stalls, up
//!   to whatever timer comes next (measured: gaps over 50 ms within one
//!   64 KiB frame). [`Timer::nudge`] is that other reason: re-arming a
//!   running timer earlier than every other wakes QEMU's main loop at once.

use core::ptr::{read_volatile, write_volatile};

/// The APB peripheral clock of mps2-an386 (`SYSCLK_FRQ` in QEMU).
pub const PCLK_HZ: u32 = 25_000_000;

/// A 32-bit register at `base + offset`.
fn reg(base: usize, offset: usize) -> *mut u32 {
    (base + offset) as *mut u32
}

/// One CMSDK APB UART.
#[derive(Debug, Clone, Copy)]
pub struct Uart {
    base: usize,
}

mod uart {
    pub const DATA: usize = 0x00;
    pub const STATE: usize = 0x04;
    pub const CTRL: usize = 0x08;
    /// Read: INTSTATUS; write 1s: INTCLEAR.
    pub const INT: usize = 0x0c;
    pub const BAUDDIV: usize = 0x10;

    pub const STATE_TXFULL: u32 = 1 << 0;
    pub const STATE_RXFULL: u32 = 1 << 1;
    pub const CTRL_TX_EN: u32 = 1 << 0;
    pub const CTRL_RX_EN: u32 = 1 << 1;
    pub const CTRL_TX_INTEN: u32 = 1 << 2;
    pub const CTRL_RX_INTEN: u32 = 1 << 3;
    pub const INT_TX: u32 = 1 << 0;
    pub const INT_RX: u32 = 1 << 1;
}

impl Uart {
    /// UART0: the one QEMU's `-serial` (serial_hd(0)) is wired to.
    pub const UART0: Uart = Uart { base: 0x4000_4000 };

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `base` is one of the UART constants above, a device
        // register block that QEMU maps on this board; offsets are the
        // named registers inside it, aligned, and reads have no side effect
        // other than the documented one (DATA takes the RX byte).
        unsafe { read_volatile(reg(self.base, offset)) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`: a mapped, aligned device register.
        unsafe { write_volatile(reg(self.base, offset), value) }
    }

    /// 8N1 at `baud`, transmitter and receiver on, RX interrupt on.
    pub fn enable(&self, baud: u32) {
        self.write(uart::BAUDDIV, PCLK_HZ / baud);
        self.write(uart::INT, uart::INT_TX | uart::INT_RX);
        self.write(uart::CTRL, uart::CTRL_TX_EN | uart::CTRL_RX_EN | uart::CTRL_RX_INTEN);
    }

    /// The received byte, if one is waiting.
    pub fn try_read(&self) -> Option<u8> {
        (self.read(uart::STATE) & uart::STATE_RXFULL != 0).then(|| self.read(uart::DATA) as u8)
    }

    /// Whether a received byte is waiting.
    pub fn rx_full(&self) -> bool {
        self.read(uart::STATE) & uart::STATE_RXFULL != 0
    }

    /// Hands `byte` to the transmitter, or returns false if it is still busy with the last one.
    pub fn try_write(&self, byte: u8) -> bool {
        if self.read(uart::STATE) & uart::STATE_TXFULL != 0 {
            return false;
        }
        self.write(uart::DATA, byte as u32);
        true
    }

    /// Whether the transmitter still holds a byte the line did not take.
    pub fn tx_full(&self) -> bool {
        self.read(uart::STATE) & uart::STATE_TXFULL != 0
    }

    /// Clears the RX interrupt status (before draining, so a byte that
    /// arrives meanwhile raises it again).
    pub fn clear_rx_interrupt(&self) {
        self.write(uart::INT, uart::INT_RX);
    }

    /// Clears the TX interrupt status.
    pub fn clear_tx_interrupt(&self) {
        self.write(uart::INT, uart::INT_TX);
    }

    /// Turns the RX interrupt on or off.
    pub fn set_rx_interrupt(&self, on: bool) {
        self.set_ctrl(uart::CTRL_RX_INTEN, on);
    }

    /// Turns the TX interrupt (the transmitter became free) on or off.
    pub fn set_tx_interrupt(&self, on: bool) {
        self.set_ctrl(uart::CTRL_TX_INTEN, on);
    }

    fn set_ctrl(&self, bit: u32, on: bool) {
        let ctrl = self.read(uart::CTRL);
        self.write(uart::CTRL, if on { ctrl | bit } else { ctrl & !bit });
    }
}

/// One CMSDK APB timer: a 32-bit down-counter at [`PCLK_HZ`] that reloads
/// at zero and then raises its interrupt.
#[derive(Debug, Clone, Copy)]
pub struct Timer {
    base: usize,
}

mod timer {
    pub const CTRL: usize = 0x00;
    pub const VALUE: usize = 0x04;
    pub const RELOAD: usize = 0x08;
    /// Read: INTSTATUS; write 1: INTCLEAR.
    pub const INT: usize = 0x0c;

    pub const CTRL_EN: u32 = 1 << 0;
    pub const CTRL_IRQ_EN: u32 = 1 << 3;
}

impl Timer {
    /// TIMER0.
    pub const TIMER0: Timer = Timer { base: 0x4000_0000 };
    /// TIMER1.
    pub const TIMER1: Timer = Timer { base: 0x4000_1000 };

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `base` is a timer constant above, a register block QEMU
        // maps on this board; offsets are its aligned registers; reads have no side effect.
        unsafe { read_volatile(reg(self.base, offset)) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile(reg(self.base, offset), value) }
    }

    /// Counts down from `u32::MAX` for ever, interrupting at each wrap
    /// (every 2^32 ticks: 171.8 s at 25 MHz).
    pub fn start_free_running(&self) {
        self.write(timer::CTRL, 0);
        self.write(timer::RELOAD, u32::MAX);
        self.write(timer::VALUE, u32::MAX);
        self.write(timer::INT, 1);
        self.write(timer::CTRL, timer::CTRL_EN | timer::CTRL_IRQ_EN);
    }

    /// Runs free without an interrupt, for [`nudge`](Self::nudge).
    pub fn start_nudger(&self) {
        self.write(timer::CTRL, 0);
        self.write(timer::RELOAD, u32::MAX);
        self.write(timer::VALUE, u32::MAX);
        self.write(timer::CTRL, timer::CTRL_EN);
    }

    /// An emulator-only kick (see the [module docs](self)): moves the
    /// timer's next expiry to a few microseconds from now, which makes QEMU
    /// re-evaluate what its main loop waits for, the UART's socket included.
    /// A real board needs nothing of the sort; this costs one store.
    pub fn nudge(&self) {
        self.write(timer::VALUE, 100);
    }

    /// The counter.
    pub fn value(&self) -> u32 {
        self.read(timer::VALUE)
    }

    /// Whether the wrap interrupt is raised and not yet cleared.
    pub fn wrapped(&self) -> bool {
        self.read(timer::INT) & 1 != 0
    }

    /// Clears the wrap interrupt.
    pub fn clear_interrupt(&self) {
        self.write(timer::INT, 1);
    }
}

/// An interrupt of this board, for the NVIC and for dispatching in `DefaultHandler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Irq(u16);

impl Irq {
    /// UART0 received a byte.
    pub const UART0_RX: Irq = Irq(0);
    /// UART0's transmitter became free.
    pub const UART0_TX: Irq = Irq(1);
    /// TIMER0 wrapped.
    pub const TIMER0: Irq = Irq(8);

    /// The interrupt with number `irqn` (as `DefaultHandler` receives it), if it is one of these.
    pub fn from_number(irqn: i16) -> Option<Irq> {
        [Irq::UART0_RX, Irq::UART0_TX, Irq::TIMER0].into_iter().find(|irq| irq.0 as i16 == irqn)
    }
}

// SAFETY: `number` returns the field, which only the constants above set
// (the field is private), all below the 32 external interrupts QEMU's
// mps2-an386 NVIC has: each is a valid interrupt number.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}
