//! The mapped pieces of a device's BARs: each is an mmap of the device (kept for the device's
//! life) and, while its BAR decodes, a KVM memory slot at the BAR's guest address. The slots
//! follow the BAR: removed when decoding stops or the BAR moves, added at the new address.
//! A slot that cannot be added (a BAR moved over RAM, no slots left) leaves the piece trapped:
//! slower, still correct, since trapped accesses are forwarded to the same bytes.

use std::sync::Arc;

use iommu::{FdMapping, Perm};

use super::plan::Piece;
use super::slots::MemorySlots;
use super::transport::Transport;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("BAR {bar} is mmappable but the device gave no file to map it from")]
    NoSource { bar: usize },
    #[error("BAR {bar}'s file offset {base:#x} plus {offset:#x} overflows")]
    Offset { bar: usize, base: u64, offset: u64 },
    #[error("mapping BAR {bar} {offset:#x}+{len:#x} failed")]
    Mmap {
        bar: usize,
        offset: u64,
        len: u64,
        #[source]
        source: iommu::FdMappingError,
    },
}

struct Mapped {
    bar: usize,
    piece: Piece,
    map: FdMapping,
    /// The slot and guest address it is mapped at now.
    slot: Option<(u32, u64)>,
}

pub struct BarMaps {
    pieces: Vec<Mapped>,
    slots: Arc<dyn MemorySlots>,
}

impl BarMaps {
    /// Maps every planned piece from the device: `plans` holds (BAR, pieces).
    pub fn new(
        t: &dyn Transport,
        plans: &[(usize, Vec<Piece>)],
        slots: Arc<dyn MemorySlots>,
    ) -> Result<BarMaps, Error> {
        let mut pieces = Vec::new();
        for (bar, plan) in plans.iter().filter(|(_, p)| !p.is_empty()) {
            let bar = *bar;
            let (fd, base) = t.mmap_source(bar as u32).ok_or(Error::NoSource { bar })?;
            for &piece in plan {
                // The device chose `base`: an offset past the end of the file space is its
                // error, not a wrap.
                let at = base.checked_add(piece.offset).ok_or(Error::Offset {
                    bar,
                    base,
                    offset: piece.offset,
                })?;
                let map =
                    FdMapping::new(fd, at, piece.len, Perm::RW).map_err(|source| Error::Mmap {
                        bar,
                        offset: piece.offset,
                        len: piece.len,
                        source,
                    })?;
                pieces.push(Mapped {
                    bar,
                    piece,
                    map,
                    slot: None,
                });
            }
        }
        Ok(BarMaps { pieces, slots })
    }

    /// Makes the slots match where each BAR decodes now (`bases[bar]`, `None`: not decoding).
    pub fn follow(&mut self, bases: &[Option<u64>; 6]) {
        for m in &mut self.pieces {
            let want = bases[m.bar]
                .and_then(|b| b.checked_add(m.piece.offset))
                .filter(|gpa| gpa.checked_add(m.piece.len).is_some());
            if m.slot.map(|(_, gpa)| gpa) == want {
                continue;
            }
            if let Some((slot, gpa)) = m.slot.take() {
                if let Err(e) = self.slots.remove(slot) {
                    log::warn!(
                        "passthrough: unmapping BAR {} piece at {gpa:#x}: {e}",
                        m.bar
                    );
                }
            }
            let Some(gpa) = want else {
                continue;
            };
            // SAFETY: `m.map` is a live mapping of `piece.len` bytes, kept until the slot is
            // removed: `unmap_all` removes every slot before the pieces are dropped.
            match unsafe { self.slots.add(gpa, m.piece.len, m.map.as_ptr()) } {
                Ok(slot) => m.slot = Some((slot, gpa)),
                Err(e) => log::warn!(
                    "passthrough: BAR {} {:#x}+{:#x} stays trapped: {e}",
                    m.bar,
                    m.piece.offset,
                    m.piece.len
                ),
            }
        }
    }

    /// Removes every slot (the mmaps stay until the maps are dropped).
    pub fn unmap_all(&mut self) {
        self.follow(&[None; 6]);
    }

    /// The pieces mapped into the guest now: (BAR, guest address, length).
    pub fn mapped(&self) -> Vec<(usize, u64, u64)> {
        self.pieces
            .iter()
            .filter_map(|m| m.slot.map(|(_, gpa)| (m.bar, gpa, m.piece.len)))
            .collect()
    }
}

impl Drop for BarMaps {
    fn drop(&mut self) {
        // The guest must lose the pages before this process unmaps them.
        self.unmap_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::slots::testing::RecordingSlots;
    use crate::vfio::testing::FakeDevice;

    fn doorbells() -> Vec<(usize, Vec<Piece>)> {
        vec![(
            0,
            vec![Piece {
                offset: 0x1000,
                len: 0x1000,
            }],
        )]
    }

    #[test]
    fn slots_follow_decode_and_bar_moves() {
        let dev = FakeDevice::nvme();
        let slots = Arc::new(RecordingSlots::new());
        let mut maps = BarMaps::new(&dev, &doorbells(), slots.clone()).unwrap();
        assert!(slots.mapped().is_empty(), "nothing until the BAR decodes");
        let mut bases = [None; 6];
        bases[0] = Some(0xc000_0000);
        maps.follow(&bases);
        assert_eq!(slots.mapped(), [(0xc000_1000, 0x1000)]);
        maps.follow(&bases);
        assert_eq!(slots.live.lock().unwrap().len(), 1, "no churn");
        bases[0] = Some(0xc800_0000);
        maps.follow(&bases);
        assert_eq!(slots.mapped(), [(0xc800_1000, 0x1000)], "moved");
        maps.follow(&[None; 6]);
        assert!(slots.mapped().is_empty(), "decode off");
        maps.follow(&bases);
        assert_eq!(maps.mapped(), [(0, 0xc800_1000, 0x1000)]);
        drop(maps);
        assert!(slots.mapped().is_empty(), "teardown removes the slots");
    }

    #[test]
    fn the_guest_sees_the_device_memory() {
        let dev = FakeDevice::nvme();
        let slots = Arc::new(RecordingSlots::new());
        let mut maps = BarMaps::new(&dev, &doorbells(), slots.clone()).unwrap();
        let mut bases = [None; 6];
        bases[0] = Some(0xc000_0000);
        maps.follow(&bases);
        let host = slots.live.lock().unwrap()[0].3 as *mut u32;
        // SAFETY: the slot's host pointer is a live, writable page of the device's memfd.
        unsafe { host.add(2).write_volatile(7) };
        assert_eq!(
            dev.bar0_word(0x1008),
            7,
            "a guest store lands in the device"
        );
    }

    #[test]
    fn a_refused_slot_leaves_the_piece_trapped_and_retries_later() {
        let dev = FakeDevice::nvme();
        let slots = Arc::new(RecordingSlots::new());
        slots.refuse.lock().unwrap().push(0xc000_1000);
        let mut maps = BarMaps::new(&dev, &doorbells(), slots.clone()).unwrap();
        let mut bases = [None; 6];
        bases[0] = Some(0xc000_0000);
        maps.follow(&bases);
        assert!(maps.mapped().is_empty());
        bases[0] = Some(0xc001_0000);
        maps.follow(&bases);
        assert_eq!(slots.mapped(), [(0xc001_1000, 0x1000)]);
        // A BAR programmed so high the piece would wrap is not mapped.
        bases[0] = Some(u64::MAX - 0x1000);
        maps.follow(&bases);
        assert!(slots.mapped().is_empty());
    }

    #[test]
    fn a_device_without_a_file_is_an_error() {
        let mut dev = FakeDevice::nvme();
        dev.mmap_file = None;
        assert!(matches!(
            BarMaps::new(&dev, &doorbells(), Arc::new(RecordingSlots::new())),
            Err(Error::NoSource { bar: 0 })
        ));
    }
}
