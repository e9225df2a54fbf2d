//! The e820 memory map Linux reads from the zero page: where RAM is, and what it must not touch.

use super::layout::{EBDA_START, HIGH_MEMORY};
use crate::memory::ram_ranges;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("guest RAM of {0:#x} bytes does not reach past the first MiB, where Linux loads")]
    TooLittleRam(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl E820Entry {
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// The map for `ram_size` bytes of guest RAM laid out by `memory::ram_ranges`: base memory up to
/// the EBDA; the EBDA, VGA hole and BIOS area reserved (the MP table lives there, and Linux
/// expects firmware there); RAM from 1 MiB to the MMIO hole or the end of RAM; no entry for the
/// hole, so Linux's e820 gap search puts PCI there; and the rest of RAM above 4 GiB.
pub fn map(ram_size: u64) -> Result<Vec<E820Entry>, Error> {
    if ram_size <= HIGH_MEMORY {
        return Err(Error::TooLittleRam(ram_size));
    }
    let mut map = Vec::new();
    for (gpa, len, _) in ram_ranges(ram_size) {
        if gpa == 0 {
            map.push(ram(0, EBDA_START));
            map.push(E820Entry {
                addr: EBDA_START,
                size: HIGH_MEMORY - EBDA_START,
                kind: E820_RESERVED,
            });
            map.push(ram(HIGH_MEMORY, len - HIGH_MEMORY));
        } else {
            map.push(ram(gpa, len));
        }
    }
    Ok(map)
}

fn ram(addr: u64, size: u64) -> E820Entry {
    E820Entry {
        addr,
        size,
        kind: E820_RAM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MMIO_HOLE_END, MMIO_HOLE_START};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn ram_bytes(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum()
    }

    fn overlaps_hole(e: &E820Entry) -> bool {
        e.addr < MMIO_HOLE_END && e.end() > MMIO_HOLE_START
    }

    #[test]
    fn ram_smaller_than_the_hole_is_one_low_block() {
        let m = map(512 * MIB).unwrap();
        assert_eq!(
            m,
            vec![
                ram(0, 0x9fc00),
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x100000 - 0x9fc00,
                    kind: E820_RESERVED
                },
                ram(MIB, 511 * MIB),
            ]
        );
        // All of RAM but the reserved legacy area is usable.
        assert_eq!(ram_bytes(&m), 512 * MIB - (MIB - 0x9fc00));
    }

    #[test]
    fn ram_bigger_than_the_hole_continues_at_4g() {
        let m = map(6 * GIB).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[2], ram(MIB, 3 * GIB - MIB));
        assert_eq!(m[3], ram(4 * GIB, 3 * GIB));
        assert!(!m.iter().any(overlaps_hole), "{m:x?}");
        assert_eq!(ram_bytes(&m), 6 * GIB - (MIB - 0x9fc00));
    }

    #[test]
    fn ram_exactly_up_to_the_hole_has_nothing_above_4g() {
        let m = map(3 * GIB).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].end(), MMIO_HOLE_START);
    }

    #[test]
    fn entries_are_sorted_and_disjoint() {
        for size in [2 * MIB, 128 * MIB, 3 * GIB + 4096, 8 * GIB] {
            let m = map(size).unwrap();
            for w in m.windows(2) {
                assert!(w[0].end() <= w[1].addr, "{size:#x}: {m:x?}");
            }
        }
    }

    #[test]
    fn ram_within_the_first_mib_is_refused() {
        assert_eq!(map(MIB), Err(Error::TooLittleRam(MIB)));
        assert!(map(MIB + 4096).is_ok());
    }
}
