//! Bump allocation from the guest's scratch memory (queues, PRP lists, I/O buffers). The guest
//! has no heap and runs one job, so nothing is ever freed. Guest-virtual equals guest-physical,
//! so an address from here is also the DMA address handed to a device.

use iopath_mailbox::layout::{SCRATCH_GPA, SCRATCH_SIZE};

pub const PAGE: u64 = 4096;

pub struct Scratch {
    next: u64,
    end: u64,
}

impl Scratch {
    /// All of the scratch area.
    pub fn all() -> Scratch {
        Scratch {
            next: SCRATCH_GPA,
            end: SCRATCH_GPA + SCRATCH_SIZE,
        }
    }

    /// `bytes` aligned to `align` (a power of two), contents undefined; `None` when scratch
    /// memory is exhausted.
    pub fn alloc(&mut self, bytes: u64, align: u64) -> Option<u64> {
        let start = self.next.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(bytes)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(start)
    }

    /// As [`Scratch::alloc`], zeroed: queue memory must start out zero (e.g. CQ phase tags).
    pub fn alloc_zeroed(&mut self, bytes: u64, align: u64) -> Option<u64> {
        let start = self.alloc(bytes, align)?;
        // SAFETY: `start..start + bytes` lies in scratch RAM, identity mapped, and was just
        // handed out for the first time, so nothing else (CPU or device) refers to it.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, bytes as usize) };
        Some(start)
    }

    /// Bytes left after aligning to `align`.
    pub fn remaining(&self, align: u64) -> u64 {
        let start = (self.next + align - 1) & !(align - 1);
        self.end.saturating_sub(start)
    }
}
