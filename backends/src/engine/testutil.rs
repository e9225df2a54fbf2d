//! Test helpers shared by the engines' unit tests: page-aligned "guest" memory behind an
//! [`iommu::AddressSpace`], so tests build segments the way device models do.

use std::sync::Arc;

use iommu::{Access, AddressSpace, DmaRegion, DmaSlice, Perm};

use super::{BlockEngine, BlockOp, BlockRequest, Completion};

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Page-aligned memory mapped at IOVA 0.
pub struct GuestMem {
    space: AddressSpace,
}

impl GuestMem {
    /// `pages` zeroed, 4 KiB-aligned pages.
    pub fn new(pages: usize) -> Self {
        let mut mem = vec![Page([0; 4096]); pages];
        let host = mem.as_mut_ptr().cast::<u8>();
        let len = pages * 4096;
        let mut space = AddressSpace::new();
        // SAFETY: the pages are owned by the region (moving the Vec does not move its heap
        // buffer), so `host..host+len` stays valid for as long as the region lives; nothing
        // else references them.
        let region = unsafe { DmaRegion::new(0, len as u64, host, Perm::RW, Arc::new(mem)) };
        space.map(region).unwrap();
        GuestMem { space }
    }

    pub fn slice(&self, iova: u64, len: usize) -> DmaSlice {
        self.space.translate(iova, len, Access::Write).unwrap()
    }

    pub fn write(&self, iova: u64, data: &[u8]) {
        self.space.write(iova, data).unwrap();
    }

    pub fn read(&self, iova: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.space.read(iova, &mut v).unwrap();
        v
    }
}

/// A deterministic, position-dependent byte pattern (never all zeroes over 2+ bytes).
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

pub fn rw(op: BlockOp, offset: u64, segments: Vec<DmaSlice>, tag: u64) -> BlockRequest {
    BlockRequest {
        op,
        offset,
        len: 0,
        segments,
        tag,
    }
}

pub fn ranged(op: BlockOp, offset: u64, len: u64, tag: u64) -> BlockRequest {
    BlockRequest {
        op,
        offset,
        len,
        segments: Vec::new(),
        tag,
    }
}

/// Pushes, submits and waits for one request; returns its completion.
///
/// # Safety
/// As [`BlockEngine::push`]; the call returns only after the completion has been reaped.
pub unsafe fn run(engine: &mut dyn BlockEngine, request: BlockRequest) -> Completion {
    let tag = request.tag;
    // SAFETY: forwarded from the caller.
    unsafe { engine.push(request) }.unwrap();
    engine.submit().unwrap();
    engine.wait(1).unwrap();
    let mut out = Vec::new();
    assert_eq!(engine.reap(&mut out), 1);
    assert_eq!(out[0].tag, tag);
    assert_eq!(engine.in_flight(), 0);
    out.pop().unwrap()
}
