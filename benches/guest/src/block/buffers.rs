//! One I/O buffer per slot in scratch memory, page aligned so a driver can describe it with
//! whole pages (NVMe PRPs).

use crate::scratch::{Scratch, PAGE};

pub struct Buffers {
    base: u64,
    stride: u64,
    len: u32,
}

impl Buffers {
    /// `count` buffers of `len` bytes, or `None` when they do not fit in what is left of
    /// scratch memory.
    pub fn alloc(scratch: &mut Scratch, count: u16, len: u32) -> Option<Buffers> {
        let base = scratch.alloc(Buffers::bytes_needed(count, len), PAGE)?;
        let stride = u64::from(len).next_multiple_of(PAGE);
        Some(Buffers { base, stride, len })
    }

    /// Bytes `count` buffers of `len` bytes take.
    pub fn bytes_needed(count: u16, len: u32) -> u64 {
        u64::from(len).next_multiple_of(PAGE) * u64::from(count)
    }

    /// Bytes per buffer.
    pub fn size(&self) -> u32 {
        self.len
    }

    /// The guest (and DMA) address of `slot`'s buffer.
    pub fn addr(&self, slot: u16) -> u64 {
        self.base + u64::from(slot) * self.stride
    }

    /// `slot`'s buffer, to check what a read brought in.
    ///
    /// # Safety
    /// `slot` is below the `count` it was allocated with, no I/O is in flight on it (the device
    /// does not write it) and no mutable reference to it is alive.
    pub unsafe fn bytes(&self, slot: u16) -> &[u8] {
        core::slice::from_raw_parts(self.addr(slot) as *const u8, self.len as usize)
    }

    /// `slot`'s buffer, to fill before a write.
    ///
    /// # Safety
    /// As [`Buffers::bytes`], and no other reference to it is alive.
    // The buffers are DMA memory in scratch, not part of `self`: the contract above, not the
    // borrow of `self`, is what makes the reference exclusive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, slot: u16) -> &mut [u8] {
        core::slice::from_raw_parts_mut(self.addr(slot) as *mut u8, self.len as usize)
    }
}
