//! Polled output on the 8250 UART at COM1: the guest's log.

use core::fmt::{self, Write};

use iopath_mailbox::io::UART_PORT;

use crate::arch;

const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 0x20;

pub struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

fn put(b: u8) {
    while arch::inb(UART_PORT + LSR) & LSR_THR_EMPTY == 0 {}
    arch::outb(UART_PORT, b);
}

pub fn print(args: fmt::Arguments) {
    let _ = Uart.write_fmt(args);
}

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        $crate::uart::print(format_args!($($arg)*));
        $crate::uart::print(format_args!("\n"));
    }};
}
