//! Guest memory for unit tests of the vhost-user devices: a heap buffer mapped at IOVA 0 with
//! helpers to lay out descriptors and data.

use std::sync::Arc;

use iommu::{AddressSpace, DmaRegion, Perm};

/// A heap allocation only ever touched through its raw pointer, so the test, the address
/// space and the engine may all alias it.
struct Buf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: `Buf` is a plain heap allocation; concurrent access is the tests' business, as it is
// the guest's for real guest memory.
unsafe impl Send for Buf {}
// SAFETY: as for `Send`.
unsafe impl Sync for Buf {}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from `Box::into_raw` in `Mem::with_size` and are freed once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

/// Zeroed guest memory at IOVA 0 (64 KiB unless told otherwise).
pub struct Mem {
    buf: Arc<Buf>,
}

impl Mem {
    pub fn new() -> Self {
        Self::with_size(0x10000)
    }

    pub fn with_size(len: usize) -> Self {
        let ptr = Box::into_raw(vec![0u8; len].into_boxed_slice()).cast::<u8>();
        Mem {
            buf: Arc::new(Buf { ptr, len }),
        }
    }

    pub fn len(&self) -> u64 {
        self.buf.len as u64
    }

    /// Writes `data` at `addr`. Panics if it does not fit.
    pub fn write(&self, addr: u64, data: &[u8]) {
        let at = addr as usize;
        assert!(at + data.len() <= self.buf.len);
        // SAFETY: bounds checked above; the allocation lives as long as `self.buf`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.buf.ptr.add(at), data.len()) };
    }

    /// Writes descriptor `index` of the table at `table`.
    pub fn put(&self, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.write(table + u64::from(index) * 16, &d);
    }

    /// The whole buffer as one read-write region at IOVA 0.
    pub fn space(&self) -> AddressSpace {
        self.space_split(&[])
    }

    /// The buffer as several adjacent regions, cut at `cuts` (ascending offsets).
    pub fn space_split(&self, cuts: &[u64]) -> AddressSpace {
        let mut s = AddressSpace::new();
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(self.len());
        for w in bounds.windows(2) {
            // SAFETY: the window lies inside the allocation, which `owner` keeps alive for as
            // long as the region is mapped.
            let r = unsafe {
                DmaRegion::new(
                    w[0],
                    w[1] - w[0],
                    self.buf.ptr.add(w[0] as usize),
                    Perm::RW,
                    self.buf.clone(),
                )
            };
            s.map(r).unwrap();
        }
        s
    }
}
