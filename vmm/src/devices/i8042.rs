//! An i8042 keyboard controller with no keyboard or mouse behind it: enough for Linux's probe,
//! and for its reboot, which pulses the CPU reset line through the controller (command 0xfe on
//! port 0x64). That reset ends the VM.
//!
//! Inserted on the PIO bus at 0x60 with length 5: offset 0 is the data port (0x60), offset 4
//! the status/command port (0x64). Port 0x61 in between belongs to KVM's in-kernel PIT.

use std::collections::VecDeque;

use crate::bus::BusDevice;

pub const I8042_BASE: u64 = 0x60;
pub const I8042_LEN: u64 = 5;
const DATA: u64 = 0;
const COMMAND: u64 = 4;

const STATUS_OUTPUT_FULL: u8 = 1 << 0;
/// Set once the controller passed its power-on self test.
const STATUS_SYSTEM: u8 = 1 << 2;
/// Last write went to the command port.
const STATUS_COMMAND: u8 = 1 << 3;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
/// 0xf0..=0xff pulse output port lines low for the clear bits of the low nibble; bit 0 is the
/// CPU reset line, so 0xfe is "reset the machine".
const CMD_PULSE_BASE: u8 = 0xf0;

const SELF_TEST_OK: u8 = 0x55;
const INTERFACE_TEST_OK: u8 = 0x00;

/// The controller passed its self test (mirrored in the status register).
const CTR_SYSTEM: u8 = 1 << 2;
const CTR_KBD_DISABLED: u8 = 1 << 4;
const CTR_AUX_DISABLED: u8 = 1 << 5;
/// Output port bit 0: the CPU reset line, active low. Bit 1: A20 enabled.
const OUTPUT_PORT_RESET: u8 = 1 << 0;
const OUTPUT_PORT_A20: u8 = 1 << 1;

pub struct I8042 {
    on_reset: Box<dyn Fn() + Send>,
    /// The controller configuration byte ("command byte").
    ctr: u8,
    output_port: u8,
    /// Replies waiting to be read from the data port.
    out: VecDeque<u8>,
    /// A command whose parameter byte comes next on the data port.
    pending: Option<u8>,
    last_was_command: bool,
}

impl I8042 {
    /// `on_reset` runs when the guest resets the machine through the controller.
    pub fn new(on_reset: Box<dyn Fn() + Send>) -> I8042 {
        I8042 {
            on_reset,
            ctr: CTR_SYSTEM,
            output_port: OUTPUT_PORT_RESET | OUTPUT_PORT_A20,
            out: VecDeque::new(),
            pending: None,
            last_was_command: false,
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYSTEM;
        if !self.out.is_empty() {
            s |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            s |= STATUS_COMMAND;
        }
        s
    }

    fn command(&mut self, cmd: u8) {
        self.pending = None;
        match cmd {
            CMD_READ_CTR => self.out.push_back(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTPUT_PORT => self.pending = Some(cmd),
            CMD_DISABLE_AUX => self.ctr |= CTR_AUX_DISABLED,
            CMD_ENABLE_AUX => self.ctr &= !CTR_AUX_DISABLED,
            CMD_DISABLE_KBD => self.ctr |= CTR_KBD_DISABLED,
            CMD_ENABLE_KBD => self.ctr &= !CTR_KBD_DISABLED,
            CMD_SELF_TEST => self.out.push_back(SELF_TEST_OK),
            CMD_KBD_TEST => self.out.push_back(INTERFACE_TEST_OK),
            CMD_READ_OUTPUT_PORT => self.out.push_back(self.output_port),
            c if c >= CMD_PULSE_BASE && c & OUTPUT_PORT_RESET == 0 => (self.on_reset)(),
            // Anything else (aux commands, reading the input port) has no effect here.
            _ => {}
        }
    }

    fn data(&mut self, v: u8) {
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => self.ctr = v,
            Some(CMD_WRITE_OUTPUT_PORT) => {
                self.output_port = v;
                if v & OUTPUT_PORT_RESET == 0 {
                    (self.on_reset)();
                }
            }
            // A byte for the keyboard, which is absent: it never answers.
            _ => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            DATA => self.out.pop_front().unwrap_or(0),
            COMMAND => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else {
            return;
        };
        match offset {
            DATA => {
                self.last_was_command = false;
                self.data(v);
            }
            COMMAND => {
                self.last_was_command = true;
                self.command(v);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    fn dev() -> (I8042, Arc<AtomicU32>) {
        let resets = Arc::new(AtomicU32::new(0));
        let r = resets.clone();
        let d = I8042::new(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        (d, resets)
    }

    fn read(d: &mut I8042, offset: u64) -> u8 {
        let mut b = [0u8; 1];
        d.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_resets_the_machine() {
        let (mut d, resets) = dev();
        assert_eq!(
            read(&mut d, COMMAND) & 0x2,
            0,
            "input buffer empty: Linux's kb_wait"
        );
        d.write(COMMAND, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        // Pulsing other lines does not.
        d.write(COMMAND, &[0xff]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn clearing_the_reset_line_in_the_output_port_resets() {
        let (mut d, resets) = dev();
        d.write(COMMAND, &[CMD_READ_OUTPUT_PORT]);
        let port = read(&mut d, DATA);
        assert_eq!(port & OUTPUT_PORT_RESET, OUTPUT_PORT_RESET);
        d.write(COMMAND, &[CMD_WRITE_OUTPUT_PORT]);
        d.write(DATA, &[port]);
        assert_eq!(resets.load(Ordering::SeqCst), 0);
        d.write(COMMAND, &[CMD_WRITE_OUTPUT_PORT]);
        d.write(DATA, &[port & !OUTPUT_PORT_RESET]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn probe_sees_a_working_controller() {
        let (mut d, resets) = dev();
        d.write(COMMAND, &[CMD_SELF_TEST]);
        assert_eq!(
            read(&mut d, COMMAND) & STATUS_OUTPUT_FULL,
            STATUS_OUTPUT_FULL
        );
        assert_eq!(read(&mut d, DATA), SELF_TEST_OK);
        assert_eq!(read(&mut d, COMMAND) & STATUS_OUTPUT_FULL, 0);
        d.write(COMMAND, &[CMD_WRITE_CTR]);
        d.write(DATA, &[0x61]);
        d.write(COMMAND, &[CMD_READ_CTR]);
        assert_eq!(read(&mut d, DATA), 0x61);
        d.write(COMMAND, &[CMD_DISABLE_KBD]);
        d.write(COMMAND, &[CMD_READ_CTR]);
        assert_eq!(read(&mut d, DATA), 0x61 | CTR_KBD_DISABLED);
        // A keyboard command goes nowhere and leaves nothing to read.
        d.write(DATA, &[0xff]);
        assert_eq!(read(&mut d, COMMAND) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(resets.load(Ordering::SeqCst), 0);
    }
}
