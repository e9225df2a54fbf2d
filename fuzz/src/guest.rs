//! Page-aligned guest memory behind an `iommu` address space, as the NVMe and virtio-blk unit
//! tests build it (their helpers are `cfg(test)`-private to `backends`, so this is a copy).

use std::sync::Arc;

use iommu::{AddressSpace, DmaRegion, DmaSlice, Perm};

pub const PAGE: usize = 4096;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; PAGE]);

/// A heap allocation only ever touched through its raw pointer, so the harness, the address
/// space and the engine may all alias it (as they do real guest memory).
struct Buf {
    ptr: *mut u8,
    len: usize,
    pages: usize,
}

// SAFETY: a plain heap allocation; concurrent access is the guest's business, as it is for
// real guest memory.
unsafe impl Send for Buf {}
// SAFETY: as for `Send`.
unsafe impl Sync for Buf {}

impl Drop for Buf {
    fn drop(&mut self) {
        let pages = std::ptr::slice_from_raw_parts_mut(self.ptr.cast::<Page>(), self.pages);
        // SAFETY: `ptr`/`pages` came from `Box::into_raw` in `GuestMem::new`, freed once here.
        drop(unsafe { Box::from_raw(pages) });
    }
}

/// Zeroed, page-aligned guest memory at IOVA 0.
#[derive(Clone)]
pub struct GuestMem {
    buf: Arc<Buf>,
}

impl GuestMem {
    pub fn new(pages: usize) -> Self {
        let boxed = vec![Page([0; PAGE]); pages].into_boxed_slice();
        let ptr = Box::into_raw(boxed).cast::<u8>();
        GuestMem {
            buf: Arc::new(Buf {
                ptr,
                len: pages * PAGE,
                pages,
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len == 0
    }

    /// Copies as much of `data` as fits at `addr` (the guest writing its own memory).
    pub fn write(&self, addr: u64, data: &[u8]) {
        let Ok(at) = usize::try_from(addr) else {
            return;
        };
        if at >= self.buf.len {
            return;
        }
        let n = data.len().min(self.buf.len - at);
        // SAFETY: `at + n` is inside the allocation, which lives as long as `self.buf`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.buf.ptr.add(at), n) };
    }

    /// Reads `out.len()` bytes at `addr`; `false` if that is not all inside the memory.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> bool {
        match usize::try_from(addr) {
            Ok(at) if at <= self.buf.len && out.len() <= self.buf.len - at => {
                // SAFETY: bounds checked above.
                unsafe {
                    std::ptr::copy_nonoverlapping(self.buf.ptr.add(at), out.as_mut_ptr(), out.len())
                };
                true
            }
            _ => false,
        }
    }

    /// Whether the host range `[ptr, ptr + len)` lies inside this memory: every slice the code
    /// under test hands out must.
    pub fn contains(&self, ptr: *const u8, len: usize) -> bool {
        let (base, p) = (self.buf.ptr as usize, ptr as usize);
        p >= base && p - base <= self.buf.len && len <= self.buf.len - (p - base)
    }

    /// Fails the run if a slice the code under test handed out leaves this memory.
    pub fn check_inside(&self, slices: &[DmaSlice]) {
        for s in slices {
            assert!(
                self.contains(s.as_ptr(), s.len()),
                "slice outside guest memory"
            );
        }
    }

    /// The memory as read-write regions at IOVA 0, cut at the page offsets `cuts` (sorted,
    /// deduplicated, inside the memory), with the pages in `read_only` mapped read-only.
    pub fn space(&self, cuts: &[usize], read_only: Option<usize>) -> AddressSpace {
        let mut bounds: Vec<usize> = vec![0, self.buf.pages];
        bounds.extend(cuts.iter().map(|c| c % self.buf.pages.max(1)));
        if let Some(p) = read_only {
            let p = p % self.buf.pages.max(1);
            bounds.extend([p, p + 1]);
        }
        bounds.sort_unstable();
        bounds.dedup();
        let mut space = AddressSpace::new();
        for w in bounds.windows(2) {
            let perm = match read_only {
                Some(p) if w[0] == p % self.buf.pages.max(1) => Perm::RO,
                _ => Perm::RW,
            };
            let (start, len) = (w[0] * PAGE, (w[1] - w[0]) * PAGE);
            // SAFETY: the window lies inside the allocation, which the region's owner (a
            // clone of `buf`) keeps alive for as long as the region is mapped.
            let region = unsafe {
                DmaRegion::new(
                    start as u64,
                    len as u64,
                    self.buf.ptr.add(start),
                    perm,
                    self.buf.clone(),
                )
            };
            space.map(region).expect("windows do not overlap");
        }
        space
    }
}
