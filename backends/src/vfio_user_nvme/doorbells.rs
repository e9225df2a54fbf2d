//! The doorbell page: BAR0 0x1000..0x2000 as shared memory (a memfd the client mmaps as a
//! sparse area), so a guest's doorbell write is a plain store, never an exit or a message.
//!
//! The file's offsets are BAR0 offsets (the region's file offset is 0), so the client maps the
//! page at file offset 0x1000; the first page of the file is never touched. A slot holds the
//! last value the guest wrote: the poller compares it with the last value it acted on.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use iommu::{FdMapping, Perm};

use crate::nvme::DOORBELL_BASE;

/// Bytes of the doorbell area: one page, room for 512 queue pairs.
pub const PAGE_SIZE: u64 = 0x1000;
/// Queue pairs whose doorbells fit in the page.
pub const MAX_PAIRS: usize = (PAGE_SIZE / 8) as usize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the doorbell memfd")]
    Memfd(#[source] io::Error),
    #[error("cannot size the doorbell memfd")]
    Size(#[source] io::Error),
    #[error("cannot map the doorbell page")]
    Map(#[source] iommu::FdMappingError),
}

/// The shared doorbell page and the bookkeeping that lets it be cleared safely.
pub struct DoorbellPage {
    file: File,
    map: FdMapping,
    /// Queue pairs (admin included) the poller scans.
    pairs: usize,
    /// Bumped whenever the page is cleared, so the poller forgets what it had seen.
    epoch: AtomicU64,
}

impl DoorbellPage {
    /// A zeroed page serving `pairs` queue pairs (at most [`MAX_PAIRS`]).
    pub fn new(pairs: usize) -> Result<Self, Error> {
        // SAFETY: a NUL-terminated name; the result is checked before it is owned.
        let fd =
            unsafe { libc::memfd_create(c"iopath-nvme-doorbells".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Memfd(io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(DOORBELL_BASE + PAGE_SIZE)
            .map_err(Error::Size)?;
        let map =
            FdMapping::new(file.as_fd(), DOORBELL_BASE, PAGE_SIZE, Perm::RW).map_err(Error::Map)?;
        Ok(DoorbellPage {
            file,
            map,
            pairs: pairs.clamp(1, MAX_PAIRS),
            epoch: AtomicU64::new(0),
        })
    }

    /// The memfd the client mmaps (at file offset [`DOORBELL_BASE`]).
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Slots to scan: SQ y tail at `2y`, CQ y head at `2y + 1`.
    pub fn slots(&self) -> usize {
        2 * self.pairs
    }

    fn slot(&self, index: usize) -> &AtomicU32 {
        assert!(
            index < MAX_PAIRS * 2,
            "doorbell slot {index} out of the page"
        );
        // SAFETY: `index` is inside the page, which `map` keeps mapped (read-write, 4-byte
        // aligned) for as long as `self` lives. The client writes the same words from another
        // process: atomics are the only sound way to share them.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().cast::<u32>().add(index)) }
    }

    /// The value in slot `index`. Acquire: the queue entries the guest wrote before the
    /// doorbell are visible after it.
    pub fn load(&self, index: usize) -> u32 {
        self.slot(index).load(Ordering::Acquire)
    }

    /// Stores into slot `index` (doorbell writes that arrive as messages, retired slots).
    pub fn store(&self, index: usize, value: u32) {
        self.slot(index).store(value, Ordering::Release);
    }

    /// The slot of a doorbell at BAR0 `offset`, if the page serves it.
    pub fn slot_of(&self, offset: u64) -> Option<usize> {
        let rel = offset.checked_sub(DOORBELL_BASE)?;
        let index = usize::try_from(rel / 4).ok()?;
        (rel % 4 == 0 && index < MAX_PAIRS * 2).then_some(index)
    }

    /// Zeroes every slot and starts a new epoch. Call with the controller lock held, so the
    /// poller sees the clear and the controller state change together.
    pub fn clear(&self) {
        for i in 0..MAX_PAIRS * 2 {
            self.slot(i).store(0, Ordering::Relaxed);
        }
        self.epoch.fetch_add(1, Ordering::Release);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn the_memfd_and_the_page_are_the_same_memory() {
        let p = DoorbellPage::new(65).unwrap();
        assert_eq!(p.slots(), 130);
        // A client's store through its own mapping of the file...
        p.file.write_all_at(&7u32.to_le_bytes(), 0x1008).unwrap();
        // ...is what the poller loads.
        assert_eq!(p.load(2), 7);
        p.store(3, 9);
        let mut b = [0u8; 4];
        p.file.read_exact_at(&mut b, 0x100c).unwrap();
        assert_eq!(u32::from_le_bytes(b), 9);
    }

    #[test]
    fn clear_zeroes_and_starts_an_epoch() {
        let p = DoorbellPage::new(2).unwrap();
        p.store(0, 1);
        p.store(MAX_PAIRS * 2 - 1, 1);
        let e = p.epoch();
        p.clear();
        assert_eq!((p.load(0), p.load(MAX_PAIRS * 2 - 1)), (0, 0));
        assert_eq!(p.epoch(), e + 1);
    }

    #[test]
    fn offsets_map_to_slots() {
        let p = DoorbellPage::new(65).unwrap();
        assert_eq!(p.slot_of(0x1000), Some(0));
        assert_eq!(p.slot_of(0x100c), Some(3));
        assert_eq!(p.slot_of(0x1ffc), Some(1023));
        assert_eq!(p.slot_of(0x2000), None);
        assert_eq!(p.slot_of(0x1002), None);
        assert_eq!(p.slot_of(0xffc), None);
        assert_eq!(DoorbellPage::new(10_000).unwrap().slots(), 1024);
    }
}
