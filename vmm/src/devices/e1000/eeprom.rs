//! The 64-word Microwire EEPROM: the MAC address, the words Linux's e1000 driver reads while it
//! sets the link up, and a checksum word that makes words 0..=0x3f sum to 0xbaba. Reached by
//! bit-banging EECD (what Linux does on an 82540EM) or through EERD (one register read per
//! word, what the bench guest does).

use super::regs::{EERD_ADDR_SHIFT, EERD_DATA_SHIFT, EERD_DONE, EERD_START};

pub const WORDS: usize = 64;
const CHECKSUM_WORD: usize = WORDS - 1;
/// Words 0..=0x3f must sum to this (the 82540EM manual's EEPROM checksum rule).
pub const CHECKSUM_SUM: u16 = 0xbaba;

/// The 82540EM layout (QEMU's template): compatibility, PCI IDs (8086:100e), initialization
/// control words, PHY and LED settings. Words 0..3 take the MAC, the last word the checksum.
const TEMPLATE: [u16; WORDS] = [
    0x0000, 0x0000, 0x0000, 0x0000, 0xffff, 0x0000, 0x0000, 0x0000, //
    0x3000, 0x1000, 0x6403, 0x100e, 0x8086, 0x100e, 0x8086, 0x3040, //
    0x0008, 0x2000, 0x7e14, 0x0048, 0x1000, 0x00d8, 0x0000, 0x2700, //
    0x6cc9, 0x3150, 0x0722, 0x040b, 0x0984, 0x0000, 0xc000, 0x0706, //
    0x1008, 0x0000, 0x0f04, 0x7fff, 0x4d01, 0xffff, 0xffff, 0xffff, //
    0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, //
    0x0100, 0x4000, 0x121c, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, //
    0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0x0000, //
];

/// EECD bits.
const EECD_SK: u32 = 1 << 0;
const EECD_CS: u32 = 1 << 1;
const EECD_DI: u32 = 1 << 2;
const EECD_DO: u32 = 1 << 3;
const EECD_FWE: u32 = 3 << 4;
const EECD_REQ: u32 = 1 << 6;
const EECD_GNT: u32 = 1 << 7;
const EECD_PRES: u32 = 1 << 8;
/// The bits of EECD the driver owns and reads back.
const EECD_DRIVER: u32 = EECD_SK | EECD_CS | EECD_DI | EECD_FWE | EECD_REQ;
/// Microwire READ: start bit then opcode 10b, followed by a 6-bit word address.
const MICROWIRE_READ: u32 = 0b110;
const COMMAND_BITS: u32 = 9;

pub struct Eeprom {
    words: [u16; WORDS],
    /// Last EECD value the driver wrote (its own bits).
    eecd: u32,
    /// Bits clocked in since chip select rose.
    shift_in: u32,
    bits_in: u32,
    /// The bit of `words` (as one big-endian-per-word bit string) DO shows while reading.
    bit_out: u32,
    reading: bool,
}

impl Eeprom {
    pub fn new(mac: [u8; 6]) -> Eeprom {
        let mut words = TEMPLATE;
        for (i, pair) in mac.chunks_exact(2).enumerate() {
            words[i] = u16::from_le_bytes([pair[0], pair[1]]);
        }
        let sum = words[..CHECKSUM_WORD]
            .iter()
            .fold(0u16, |s, w| s.wrapping_add(*w));
        words[CHECKSUM_WORD] = CHECKSUM_SUM.wrapping_sub(sum);
        Eeprom {
            words,
            eecd: 0,
            shift_in: 0,
            bits_in: 0,
            bit_out: 0,
            reading: false,
        }
    }

    pub fn word(&self, index: usize) -> Option<u16> {
        self.words.get(index).copied()
    }

    /// EERD after the driver wrote `value`: the read completes at once.
    pub fn eerd(&self, value: u32) -> u32 {
        if value & EERD_START == 0 {
            return value & !EERD_DONE;
        }
        let addr = (value >> EERD_ADDR_SHIFT) & 0xff;
        // An address past the EEPROM reads as erased.
        let data = self.word(addr as usize).unwrap_or(0xffff);
        u32::from(data) << EERD_DATA_SHIFT | addr << EERD_ADDR_SHIFT | EERD_DONE | EERD_START
    }

    pub fn read_eecd(&self) -> u32 {
        let mut v = EECD_PRES | EECD_GNT | self.eecd;
        if !self.reading || self.data_bit() {
            v |= EECD_DO;
        }
        v
    }

    /// One EECD write: chip select, clock edges, data in.
    pub fn write_eecd(&mut self, value: u32) {
        let old = self.eecd;
        self.eecd = value & EECD_DRIVER;
        if value & EECD_CS == 0 {
            return;
        }
        if (value ^ old) & EECD_CS != 0 {
            self.shift_in = 0;
            self.bits_in = 0;
            self.bit_out = 0;
            self.reading = false;
        }
        if (value ^ old) & EECD_SK == 0 {
            return;
        }
        if value & EECD_SK == 0 {
            // Falling edge: the next data bit.
            self.bit_out = self.bit_out.wrapping_add(1);
            return;
        }
        self.shift_in = self.shift_in << 1 | u32::from(value & EECD_DI != 0);
        self.bits_in += 1;
        if self.bits_in == COMMAND_BITS && !self.reading {
            // The falling edge of this clock brings the first data bit up.
            self.bit_out = ((self.shift_in & 0x3f) << 4).wrapping_sub(1);
            self.reading = (self.shift_in >> 6) & 7 == MICROWIRE_READ;
        }
    }

    fn data_bit(&self) -> bool {
        let word = self.words[(self.bit_out >> 4) as usize % WORDS];
        word >> (15 - (self.bit_out & 0xf)) & 1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn holds_the_mac_and_a_valid_checksum() {
        let e = Eeprom::new(MAC);
        assert_eq!(e.word(0), Some(0x5452));
        assert_eq!(e.word(2), Some(0x5634));
        let sum = (0..WORDS).fold(0u16, |s, i| s.wrapping_add(e.word(i).unwrap()));
        assert_eq!(sum, CHECKSUM_SUM);
        assert_eq!(e.word(WORDS), None);
    }

    #[test]
    fn eerd_reads_a_word() {
        let e = Eeprom::new(MAC);
        let v = e.eerd(1 << EERD_ADDR_SHIFT | EERD_START);
        assert_ne!(v & EERD_DONE, 0);
        assert_eq!(v >> EERD_DATA_SHIFT, 0x1200);
        assert_eq!(e.eerd(200 << EERD_ADDR_SHIFT | EERD_START) >> 16, 0xffff);
        assert_eq!(e.eerd(1 << EERD_ADDR_SHIFT) & EERD_DONE, 0);
    }

    /// Clocks a word out the way Linux's e1000_shift_out_ee_bits / shift_in_ee_bits do.
    fn microwire_read(e: &mut Eeprom, addr: u32) -> u16 {
        let mut eecd = EECD_REQ;
        e.write_eecd(eecd);
        eecd |= EECD_CS;
        e.write_eecd(eecd);
        let command = MICROWIRE_READ << 6 | addr;
        for bit in (0..COMMAND_BITS).rev() {
            eecd = if command >> bit & 1 != 0 {
                eecd | EECD_DI
            } else {
                eecd & !EECD_DI
            };
            e.write_eecd(eecd);
            e.write_eecd(eecd | EECD_SK);
            e.write_eecd(eecd);
        }
        eecd &= !EECD_DI;
        let mut word = 0u16;
        for _ in 0..16 {
            e.write_eecd(eecd | EECD_SK);
            word = word << 1 | u16::from(e.read_eecd() & EECD_DO != 0);
            e.write_eecd(eecd);
        }
        e.write_eecd(eecd & !EECD_CS);
        word
    }

    #[test]
    fn microwire_bit_bang_reads_words() {
        let mut e = Eeprom::new(MAC);
        assert_ne!(e.read_eecd() & EECD_PRES, 0);
        for addr in [0, 1, 2, 0x0b, 0x3f] {
            assert_eq!(
                microwire_read(&mut e, addr),
                e.word(addr as usize).unwrap(),
                "word {addr:#x}"
            );
        }
    }
}
