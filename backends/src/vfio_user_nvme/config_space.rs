//! The PCI configuration space of the vfio-user NVMe function: the same identity as the VMM's
//! emulated NVMe (`vmm/src/devices/nvme.rs`), BAR0 registers and doorbells, BAR4 MSI-X.
//!
//! Values plus a per-bit write mask, so BAR sizing (write all ones, read the size back) and
//! read-only fields need no special cases.

use super::msix;

/// Conventional configuration space (no extended capabilities).
pub const SIZE: usize = 256;

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const BAR0: usize = 0x10;
const SUBSYSTEM_VENDOR: usize = 0x2c;
const CAP_PTR: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3c;
const MSIX_CAP: usize = 0x40;

const COMMAND_WRITABLE: u16 = 0x0407; // I/O, memory, bus master, INTx disable
const STATUS_CAP_LIST: u16 = 1 << 4;
const BAR_MEM64: u32 = 0x4;

/// Identity: QEMU's NVMe IDs (drivers bind by class; these only name the device).
pub const VENDOR_ID: u16 = 0x1b36;
pub const DEVICE_ID: u16 = 0x0010;
const REVISION: u8 = 2;
/// Mass storage, non-volatile memory, NVM Express.
const CLASS: [u8; 3] = [0x02, 0x08, 0x01];
const SUBSYSTEM_VENDOR_ID: u16 = 0x1af4;
const SUBSYSTEM_ID: u16 = 0x1100;

#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; SIZE],
    writable: [u8; SIZE],
}

impl ConfigSpace {
    /// The function after reset: BAR0 (`bar0_size` bytes) and BAR4 (MSI-X) are 64-bit,
    /// non-prefetchable memory BARs; no INTx (interrupt pin 0); an MSI-X capability with
    /// `vectors` entries.
    pub fn new(bar0_size: u64, vectors: u16) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; SIZE],
            writable: [0; SIZE],
        };
        c.put(0x00, &VENDOR_ID.to_le_bytes(), 0);
        c.put(0x02, &DEVICE_ID.to_le_bytes(), 0);
        c.put(COMMAND, &[0, 0], COMMAND_WRITABLE.into());
        c.put(STATUS, &STATUS_CAP_LIST.to_le_bytes(), 0);
        c.put(0x08, &[REVISION], 0);
        c.put(0x09, &CLASS, 0);
        c.add_bar64(BAR0, bar0_size);
        c.add_bar64(BAR0 + 4 * msix::BAR_INDEX as usize, msix::BAR_SIZE);
        c.put(SUBSYSTEM_VENDOR, &SUBSYSTEM_VENDOR_ID.to_le_bytes(), 0);
        c.put(SUBSYSTEM_VENDOR + 2, &SUBSYSTEM_ID.to_le_bytes(), 0);
        c.put(CAP_PTR, &[MSIX_CAP as u8], 0);
        c.put(INTERRUPT_LINE, &[0], 0xff);
        let (body, writable) = msix::capability(vectors);
        for (i, (b, w)) in body.iter().zip(writable).enumerate() {
            c.put(MSIX_CAP + i, &[*b], u32::from(w));
        }
        c
    }

    /// Sets bytes and the write mask of each (the low byte of `writable` for the first, and
    /// so on).
    fn put(&mut self, offset: usize, bytes: &[u8], writable: u32) {
        for (i, b) in bytes.iter().enumerate() {
            self.bytes[offset + i] = *b;
            self.writable[offset + i] = (writable >> (8 * i)) as u8;
        }
    }

    fn add_bar64(&mut self, offset: usize, size: u64) {
        let mask = !(size - 1);
        self.put(offset, &BAR_MEM64.to_le_bytes(), mask as u32 & !0xf);
        self.put(offset + 4, &[0; 4], (mask >> 32) as u32);
    }

    /// Reads `data.len()` bytes at `offset`; `false` if that is outside the space.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> bool {
        match range(offset, data.len()).and_then(|r| self.bytes.get(r)) {
            Some(src) => {
                data.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    /// Writes the writable bits of `data` at `offset`; `false` if that is outside the space.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some(r) = range(offset, data.len()).filter(|r| r.end <= SIZE) else {
            return false;
        };
        for ((b, w), v) in self.bytes[r.clone()]
            .iter_mut()
            .zip(&self.writable[r])
            .zip(data)
        {
            *b = (*b & !w) | (v & w);
        }
        true
    }
}

fn range(offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    Some(start..start.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dword(c: &ConfigSpace, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        assert!(c.read(offset, &mut b));
        u32::from_le_bytes(b)
    }

    #[test]
    fn identity_matches_the_emulated_nvme() {
        let c = ConfigSpace::new(0x4000, 65);
        assert_eq!(dword(&c, 0), 0x0010_1b36);
        assert_eq!(dword(&c, 8), 0x0108_0202, "class 01:08:02, revision 2");
        assert_eq!(dword(&c, 0x2c), 0x1100_1af4);
        assert_eq!(dword(&c, 0x3c) >> 8 & 0xff, 0, "no INTx pin");
    }

    #[test]
    fn bars_size_like_hardware() {
        let mut c = ConfigSpace::new(0x4000, 65);
        assert_eq!(dword(&c, 0x10), 0x4, "64-bit memory BAR");
        assert!(c.write(0x10, &[0xff; 4]));
        assert!(c.write(0x14, &[0xff; 4]));
        assert_eq!(dword(&c, 0x10), 0xffff_c004, "16 KiB");
        assert_eq!(dword(&c, 0x14), 0xffff_ffff);
        assert!(c.write(0x20, &[0xff; 4]));
        assert_eq!(dword(&c, 0x20), 0xffff_e004, "8 KiB MSI-X BAR");
        assert!(c.write(0x24, &[0xff; 4]));
        assert_eq!(dword(&c, 0x24), 0xffff_ffff, "BAR4's upper half");
        for unused in [0x18, 0x1c] {
            assert!(c.write(unused, &[0xff; 4]));
            assert_eq!(
                dword(&c, unused),
                0,
                "BAR at {unused:#x} is not implemented"
            );
        }
        assert!(c.write(0x10, &0xfebf_0000_u32.to_le_bytes()));
        assert_eq!(dword(&c, 0x10), 0xfebf_0004);
    }

    #[test]
    fn read_only_fields_ignore_writes() {
        let mut c = ConfigSpace::new(0x4000, 65);
        assert!(c.write(0, &[0; 4]));
        assert_eq!(dword(&c, 0), 0x0010_1b36);
        assert!(c.write(4, &[0xff, 0xff]));
        assert_eq!(dword(&c, 4) & 0xffff, 0x0407);
        assert_eq!(dword(&c, 4) >> 16, u32::from(STATUS_CAP_LIST));
    }

    #[test]
    fn msix_capability_is_chained() {
        let mut c = ConfigSpace::new(0x4000, 65);
        assert_eq!(dword(&c, 0x34) & 0xff, 0x40);
        let cap = dword(&c, 0x40);
        assert_eq!(cap & 0xff, 0x11, "MSI-X");
        assert_eq!(cap >> 8 & 0xff, 0, "last capability");
        assert_eq!(cap >> 16 & 0x7ff, 64, "table size is N-1");
        assert_eq!(dword(&c, 0x44), 4, "table in BAR4 at 0");
        assert_eq!(dword(&c, 0x48), 0x1004, "PBA in BAR4 at 0x1000");
        // Enable and function mask are the only writable bits.
        assert!(c.write(0x42, &[0xff, 0xff]));
        assert_eq!(dword(&c, 0x40) >> 16, 0xc000 | 64);
    }

    #[test]
    fn accesses_outside_the_space_fail() {
        let mut c = ConfigSpace::new(0x4000, 65);
        assert!(!c.read(254, &mut [0; 4]));
        assert!(!c.write(256, &[0]));
        assert!(!c.read(u64::MAX, &mut [0; 1]));
        assert!(c.read(252, &mut [0; 4]));
    }
}
