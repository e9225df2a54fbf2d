//! The 8250 UART at COM1 (vm-superio), writing the guest's console to a sink that keeps the
//! tail of the log for error messages.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Registers the COM1 interrupt with the in-kernel irqchip (IRQ 4) through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// How much of the console the sink remembers.
const TAIL_BYTES: usize = 64 * 1024;

/// Where console bytes go: an optional writer (stdout, a file) and a shared tail buffer.
pub struct ConsoleSink {
    out: Option<Box<dyn Write + Send>>,
    tail: Arc<Mutex<VecDeque<u8>>>,
}

impl ConsoleSink {
    pub fn new(out: Option<Box<dyn Write + Send>>) -> ConsoleSink {
        ConsoleSink {
            out,
            tail: Arc::default(),
        }
    }

    /// A handle on the remembered tail of the console.
    pub fn tail(&self) -> ConsoleTail {
        ConsoleTail(self.tail.clone())
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        {
            let mut t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
            t.extend(buf.iter().copied().filter(|&b| b != b'\r'));
            let excess = t.len().saturating_sub(TAIL_BYTES);
            t.drain(..excess);
        }
        if let Some(out) = self.out.as_mut() {
            // A console that cannot be written (closed pipe) must not stop the guest.
            let _ = out.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

#[derive(Clone)]
pub struct ConsoleTail(Arc<Mutex<VecDeque<u8>>>);

impl ConsoleTail {
    pub fn text(&self) -> String {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&t.iter().copied().collect::<Vec<_>>()).into_owned()
    }

    /// The last `n` lines.
    pub fn last_lines(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

pub struct Serial(vm_superio::Serial<IrqTrigger, NoEvents, ConsoleSink>);

impl Serial {
    pub fn new(irq: IrqTrigger, sink: ConsoleSink) -> Serial {
        Serial(vm_superio::Serial::new(irq, sink))
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = u8::try_from(offset).map_or(0, |o| self.0.read(o));
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(o), Some(&v)) = (u8::try_from(offset), data.first()) {
            if let Err(e) = self.0.write(o, v) {
                log::debug!("serial: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial() -> (Serial, ConsoleTail) {
        let sink = ConsoleSink::new(None);
        let tail = sink.tail();
        let irq = IrqTrigger(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        (Serial::new(irq, sink), tail)
    }

    #[test]
    fn bytes_written_to_thr_reach_the_sink() {
        let (mut s, tail) = serial();
        for b in b"hello\r\nworld\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(tail.text(), "hello\nworld\n");
        assert_eq!(tail.last_lines(1), "world");
    }

    #[test]
    fn line_status_reports_transmitter_empty() {
        let (mut s, _) = serial();
        let mut d = [0u8; 1];
        s.read(5, &mut d);
        assert_ne!(d[0] & 0x20, 0);
    }

    #[test]
    fn tail_is_bounded() {
        let mut sink = ConsoleSink::new(None);
        let tail = sink.tail();
        let chunk = vec![b'x'; 1000];
        for _ in 0..100 {
            sink.write_all(&chunk).unwrap();
        }
        assert_eq!(tail.text().len(), TAIL_BYTES);
    }
}
