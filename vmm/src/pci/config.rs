//! A PCI function's configuration space: register values plus per-bit write masks, so BAR
//! sizing, read-only IDs and write-1-to-clear status bits fall out of one write rule.

/// Extended (ECAM) configuration space.
pub const CONFIG_SIZE: usize = 4096;
const REGS: usize = CONFIG_SIZE / 4;

pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_CAP_LIST: u32 = 1 << 20;
const BAR0_REG: usize = 4;
const CAP_PTR_REG: usize = 13;
const INTERRUPT_REG: usize = 15;
/// Capabilities start after the type-0 header.
const FIRST_CAP: usize = 0x40;

/// Identity of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64 { prefetchable: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub kind: BarKind,
    pub size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("BAR {0} is invalid, taken, or its size is not a power of two of at least 16 bytes")]
    BadBar(usize),
    #[error("no room for a {0}-byte capability")]
    NoCapabilitySpace(usize),
}

pub struct ConfigSpace {
    regs: [u32; REGS],
    wmask: [u32; REGS],
    /// Bits that clear when written with 1 (status errors).
    w1c: [u32; REGS],
    bars: [Option<Bar>; 6],
    /// Offset of the last capability, to chain the next one.
    last_cap: usize,
    next_cap: usize,
}

impl ConfigSpace {
    pub fn new(ids: PciIds) -> ConfigSpace {
        let mut c = ConfigSpace {
            regs: [0; REGS],
            wmask: [0; REGS],
            w1c: [0; REGS],
            bars: [None; 6],
            last_cap: 0,
            next_cap: FIRST_CAP,
        };
        c.regs[0] = u32::from(ids.vendor) | u32::from(ids.device) << 16;
        c.regs[2] = u32::from(ids.revision)
            | u32::from(ids.prog_if) << 8
            | u32::from(ids.subclass) << 16
            | u32::from(ids.class) << 24;
        c.regs[11] = u32::from(ids.subsystem_vendor) | u32::from(ids.subsystem) << 16;
        let command = COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
        c.wmask[1] = u32::from(command);
        // Status error bits (parity, aborts, SERR) are write-1-to-clear.
        c.w1c[1] = 0xf900_0000;
        // Interrupt line is scratch for the OS; pin stays 0 (no INTx).
        c.wmask[INTERRUPT_REG] = 0xff;
        c
    }

    /// Declares an INTx pin (1 = INTA) and the line firmware routed it to.
    pub fn set_interrupt(&mut self, pin: u8, line: u8) {
        self.regs[INTERRUPT_REG] = u32::from(line) | u32::from(pin) << 8;
    }

    /// Declares BAR `index`. A 64-bit BAR also takes `index + 1`.
    pub fn add_bar(&mut self, index: usize, bar: Bar) -> Result<(), Error> {
        let wide = matches!(bar.kind, BarKind::Mem64 { .. });
        let last = index + usize::from(wide);
        let free = |i: usize| i < 6 && self.bars[i].is_none() && (i == 0 || !self.is_upper_half(i));
        if !free(index) || !free(last) || !bar.size.is_power_of_two() || bar.size < 16 {
            return Err(Error::BadBar(index));
        }
        let flags = match bar.kind {
            BarKind::Io => 0x1,
            BarKind::Mem32 => 0x0,
            BarKind::Mem64 { prefetchable } => 0x4 | if prefetchable { 0x8 } else { 0 },
        };
        let mask = !(bar.size - 1);
        self.regs[BAR0_REG + index] = flags;
        self.wmask[BAR0_REG + index] = mask as u32 & !0xf;
        if wide {
            self.wmask[BAR0_REG + index + 1] = (mask >> 32) as u32;
        }
        self.bars[index] = Some(bar);
        Ok(())
    }

    fn is_upper_half(&self, i: usize) -> bool {
        i > 0
            && matches!(
                self.bars[i - 1],
                Some(Bar {
                    kind: BarKind::Mem64 { .. },
                    ..
                })
            )
    }

    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars.get(index).copied().flatten()
    }

    /// The address BAR `index` decodes at (0 until assigned).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self.bar(index)?;
        let lo = u64::from(self.regs[BAR0_REG + index]);
        Some(match bar.kind {
            BarKind::Io => lo & !0x3,
            BarKind::Mem32 => lo & !0xf,
            BarKind::Mem64 { .. } => (lo & !0xf) | u64::from(self.regs[BAR0_REG + index + 1]) << 32,
        })
    }

    /// Assigns an address, as firmware would before the guest starts.
    pub fn set_bar_address(&mut self, index: usize, addr: u64) {
        if let Some(bar) = self.bar(index) {
            let r = BAR0_REG + index;
            let mask = !(bar.size - 1);
            self.regs[r] = (self.regs[r] & 0xf) | (addr & mask) as u32 & !0xf;
            if matches!(bar.kind, BarKind::Mem64 { .. }) {
                self.regs[r + 1] = ((addr & mask) >> 32) as u32;
            }
        }
    }

    pub fn command(&self) -> u16 {
        self.regs[1] as u16
    }

    /// Appends a capability: `body` starts with the ID byte and a placeholder next pointer;
    /// `writable` has the same length and marks bits the guest may change. Returns its offset.
    pub fn add_capability(&mut self, body: &[u8], writable: &[u8]) -> Result<usize, Error> {
        let len = body.len().next_multiple_of(4);
        let at = self.next_cap;
        if body.len() < 2 || writable.len() != body.len() || at + len > 0x100 {
            return Err(Error::NoCapabilitySpace(body.len()));
        }
        for (i, (&b, &w)) in body.iter().zip(writable).enumerate() {
            self.set_byte(at + i, b, w);
        }
        self.set_byte(at + 1, 0, 0);
        if self.last_cap == 0 {
            self.set_byte(CAP_PTR_REG * 4, at as u8, 0);
            self.regs[1] |= STATUS_CAP_LIST;
        } else {
            self.set_byte(self.last_cap + 1, at as u8, 0);
        }
        self.last_cap = at;
        self.next_cap = at + len;
        Ok(at)
    }

    fn set_byte(&mut self, offset: usize, value: u8, writable: u8) {
        let (r, shift) = (offset / 4, (offset % 4) * 8);
        self.regs[r] = (self.regs[r] & !(0xff << shift)) | u32::from(value) << shift;
        self.wmask[r] = (self.wmask[r] & !(0xff << shift)) | u32::from(writable) << shift;
    }

    /// Reads the dword register `reg` (offset / 4). Out of range reads as all ones.
    pub fn read(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(u32::MAX)
    }

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` within register `reg`.
    pub fn write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        if reg >= REGS || offset + data.len() > 4 || data.is_empty() {
            return;
        }
        let mut value = 0u32;
        let mut bytes = 0u32;
        for (i, b) in data.iter().enumerate() {
            let shift = (offset + i) * 8;
            value |= u32::from(*b) << shift;
            bytes |= 0xff << shift;
        }
        let wmask = self.wmask[reg] & bytes;
        let cleared = self.w1c[reg] & bytes & value;
        self.regs[reg] = ((self.regs[reg] & !wmask) | (value & wmask)) & !cleared;
    }

    /// Reads `data.len()` bytes at any byte offset (for ECAM and tests).
    pub fn read_bytes(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset + i;
            *b = (self.read(o / 4) >> ((o % 4) * 8)) as u8;
        }
    }

    /// Whether register `reg` belongs to a BAR (the root then re-checks the mapping).
    pub fn is_bar_reg(reg: usize) -> bool {
        (BAR0_REG..BAR0_REG + 6).contains(&reg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor: 0x1b36,
            device: 0x0010,
            class: 0x01,
            subclass: 0x08,
            prog_if: 0x02,
            revision: 2,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        }
    }

    #[test]
    fn ids_are_read_only() {
        let mut c = ConfigSpace::new(ids());
        c.write(0, 0, &[0xff; 4]);
        c.write(2, 0, &[0xff; 4]);
        assert_eq!(c.read(0), 0x0010_1b36);
        assert_eq!(c.read(2), 0x0108_0202);
    }

    #[test]
    fn command_keeps_only_writable_bits() {
        let mut c = ConfigSpace::new(ids());
        c.write(1, 0, &[0xff, 0xff]);
        assert_eq!(c.command(), 0x0407);
    }

    #[test]
    fn status_error_bits_are_write_one_to_clear() {
        let mut c = ConfigSpace::new(ids());
        c.regs[1] |= 0x2000_0000; // received master abort
        c.write(1, 2, &[0x00, 0x00]);
        assert_ne!(c.read(1) & 0x2000_0000, 0);
        c.write(1, 2, &[0x00, 0x20]);
        assert_eq!(c.read(1) & 0x2000_0000, 0);
    }

    #[test]
    fn sizing_a_64_bit_bar_answers_its_size() {
        let mut c = ConfigSpace::new(ids());
        c.add_bar(
            0,
            Bar {
                kind: BarKind::Mem64 {
                    prefetchable: false,
                },
                size: 0x4000,
            },
        )
        .unwrap();
        c.set_bar_address(0, 0xc000_0000);
        assert_eq!(c.bar_address(0), Some(0xc000_0000));
        c.write(4, 0, &[0xff; 4]);
        c.write(5, 0, &[0xff; 4]);
        assert_eq!(c.read(4), 0xffff_c004);
        assert_eq!(c.read(5), 0xffff_ffff);
        c.write(4, 0, &0xc000_0000u32.to_le_bytes());
        c.write(5, 0, &[0; 4]);
        assert_eq!(c.bar_address(0), Some(0xc000_0000));
    }

    #[test]
    fn bars_must_be_valid_and_free() {
        let mut c = ConfigSpace::new(ids());
        let b = |size| Bar {
            kind: BarKind::Mem32,
            size,
        };
        assert!(c.add_bar(0, b(0x3000)).is_err());
        assert!(c.add_bar(6, b(0x1000)).is_err());
        c.add_bar(
            4,
            Bar {
                kind: BarKind::Mem64 { prefetchable: true },
                size: 0x1000,
            },
        )
        .unwrap();
        assert!(
            c.add_bar(5, b(0x1000)).is_err(),
            "upper half of a 64-bit BAR"
        );
        assert!(c.add_bar(4, b(0x1000)).is_err());
        assert!(c
            .add_bar(
                5,
                Bar {
                    kind: BarKind::Mem64 {
                        prefetchable: false
                    },
                    size: 0x1000
                }
            )
            .is_err());
        assert_eq!(c.read(8) & 0xf, 0xc);
    }

    #[test]
    fn capabilities_chain() {
        let mut c = ConfigSpace::new(ids());
        let a = c
            .add_capability(&[0x11, 0, 1, 2], &[0, 0, 0xff, 0])
            .unwrap();
        let b = c.add_capability(&[0x09, 0, 5], &[0; 3]).unwrap();
        assert_eq!((a, b), (0x40, 0x44));
        assert_ne!(c.read(1) & STATUS_CAP_LIST, 0);
        assert_eq!(c.read(CAP_PTR_REG) & 0xff, 0x40);
        assert_eq!(c.read(0x40 / 4) & 0xffff, 0x4411);
        assert_eq!(c.read(0x44 / 4) & 0xffff, 0x0009);
        c.write(0x40 / 4, 2, &[0xaa, 0xbb]);
        assert_eq!(c.read(0x40 / 4) >> 16, 0x02aa);
    }

    #[test]
    fn out_of_range_access_is_harmless() {
        let mut c = ConfigSpace::new(ids());
        c.write(REGS, 0, &[1]);
        c.write(1, 3, &[1, 2]);
        assert_eq!(c.read(REGS), u32::MAX);
    }
}
