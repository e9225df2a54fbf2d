//! Submission and completion queue state: base, size, head/tail, phase tag, and the
//! completions waiting for room in a full completion queue.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use iommu::{Access, AddressSpace};

use super::spec::{Cqe, CQE_SIZE, SQE_SIZE};

/// The IOVA of entry `index` of a queue at `base`, if no byte of the entry wraps.
fn entry_addr(base: u64, index: u16, entry_size: usize) -> Option<u64> {
    let offset = u64::from(index) * entry_size as u64;
    base.checked_add(offset + entry_size as u64 - 1)?;
    Some(base + offset)
}

/// A submission queue: the guest produces at `tail`, the controller consumes at `head`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubQueue {
    pub base: u64,
    /// Entries (2..=65536).
    pub size: u32,
    pub head: u16,
    pub tail: u16,
    pub cqid: u16,
}

impl SubQueue {
    pub fn new(base: u64, size: u32, cqid: u16) -> Self {
        SubQueue {
            base,
            size,
            head: 0,
            tail: 0,
            cqid,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Takes a tail doorbell value; `false` (and no change) if it is not a valid index.
    pub fn set_tail(&mut self, tail: u16) -> bool {
        if u32::from(tail) >= self.size {
            return false;
        }
        self.tail = tail;
        true
    }

    /// Consumes the entry at the head: returns its IOVA (`None` if the queue is empty or the
    /// address wraps).
    pub fn pop(&mut self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        let addr = entry_addr(self.base, self.head, SQE_SIZE);
        self.head = next(self.head, self.size);
        addr
    }
}

fn next(index: u16, size: u32) -> u16 {
    let n = u32::from(index) + 1;
    if n >= size {
        0
    } else {
        n as u16
    }
}

/// A completion queue: the controller produces at `tail`, the guest consumes at `head`.
#[derive(Debug)]
pub struct CompQueue {
    pub base: u64,
    pub size: u32,
    head: u16,
    tail: u16,
    /// The phase tag the next entry is written with; starts at 1.
    phase: bool,
    pub ien: bool,
    pub vector: u16,
    /// Submission queues that complete here.
    pub sqs: u16,
    /// Completions waiting for the guest to free entries, oldest first.
    pending: VecDeque<Cqe>,
}

impl CompQueue {
    pub fn new(base: u64, size: u32, ien: bool, vector: u16) -> Self {
        CompQueue {
            base,
            size,
            head: 0,
            tail: 0,
            phase: true,
            ien,
            vector,
            sqs: 0,
            pending: VecDeque::new(),
        }
    }

    pub fn is_full(&self) -> bool {
        next(self.tail, self.size) == self.head
    }

    /// Completions wait for room: the controller stops fetching commands for this queue.
    pub fn backed_up(&self) -> bool {
        !self.pending.is_empty()
    }

    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn used(&self) -> u32 {
        (u32::from(self.tail) + self.size - u32::from(self.head)) % self.size
    }

    /// Takes a head doorbell value; `false` (and no change) if it is not an index or moves past
    /// entries the controller has not posted.
    pub fn set_head(&mut self, head: u16) -> bool {
        if u32::from(head) >= self.size {
            return false;
        }
        let advance = (u32::from(head) + self.size - u32::from(self.head)) % self.size;
        if advance > self.used() {
            return false;
        }
        self.head = head;
        true
    }

    /// Posts `cqe`, or queues it behind earlier completions if the queue is full. Returns
    /// whether it was written now.
    pub fn post(&mut self, dma: &AddressSpace, cqe: Cqe) -> Result<bool, iommu::Error> {
        if self.backed_up() || self.is_full() {
            self.pending.push_back(cqe);
            return Ok(false);
        }
        self.write(dma, &cqe)?;
        Ok(true)
    }

    /// Posts waiting completions while there is room; returns how many.
    pub fn flush(&mut self, dma: &AddressSpace) -> Result<usize, iommu::Error> {
        let mut n = 0;
        while !self.is_full() {
            let Some(cqe) = self.pending.pop_front() else {
                break;
            };
            self.write(dma, &cqe)?;
            n += 1;
        }
        Ok(n)
    }

    /// Writes one entry at the tail, DW3 (with the phase tag) last, and advances the tail.
    fn write(&mut self, dma: &AddressSpace, cqe: &Cqe) -> Result<(), iommu::Error> {
        let addr = entry_addr(self.base, self.tail, CQE_SIZE).ok_or(iommu::Error::Unmapped {
            iova: self.base,
            len: CQE_SIZE as u64,
        })?;
        let slot = dma.translate(addr, CQE_SIZE, Access::Write)?;
        let (head, dw3) = cqe.encode(self.phase);
        let p = slot.as_ptr();
        // SAFETY: `slot` is a checked, writable 16-byte range of a region that stays mapped
        // while `dma` is borrowed; `head` is 12 bytes.
        unsafe { std::ptr::copy_nonoverlapping(head.as_ptr(), p, head.len()) };
        // SAFETY: bytes 12..16 of the same range.
        let last = unsafe { p.add(12) };
        if (last as usize).is_multiple_of(4) {
            // SAFETY: aligned, in range, and the guest only accesses it concurrently (reads),
            // which an atomic store allows. Release orders the first 12 bytes before it.
            unsafe { AtomicU32::from_ptr(last.cast()) }.store(dw3.to_le(), Ordering::Release);
        } else {
            fence(Ordering::Release);
            // SAFETY: as above; a host mapping without 4-byte alignment cannot be stored to
            // atomically, so copy.
            unsafe { std::ptr::copy_nonoverlapping(dw3.to_le_bytes().as_ptr(), last, 4) };
        }
        self.tail = next(self.tail, self.size);
        if self.tail == 0 {
            self.phase = !self.phase;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::spec::Status;
    use crate::nvme::testing::GuestMem;

    fn cqe(cid: u16) -> Cqe {
        Cqe {
            dw0: 0,
            sq_head: 0,
            sq_id: 1,
            cid,
            status: Status::SUCCESS,
        }
    }

    fn read_cqe(mem: &GuestMem, addr: u64) -> (Cqe, bool) {
        let b: [u8; 16] = mem.read(addr, 16).try_into().unwrap();
        Cqe::decode(&b)
    }

    #[test]
    fn sq_tail_is_checked_and_head_wraps() {
        let mut sq = SubQueue::new(0x1000, 4, 1);
        assert!(!sq.set_tail(4));
        assert!(sq.is_empty());
        assert!(sq.set_tail(3));
        assert_eq!(sq.pop(), Some(0x1000));
        assert_eq!(sq.pop(), Some(0x1040));
        assert_eq!(sq.pop(), Some(0x1080));
        assert_eq!(sq.pop(), None);
        assert!(sq.set_tail(1));
        assert_eq!(sq.pop(), Some(0x10c0));
        assert_eq!(sq.head, 0);
        assert_eq!(sq.pop(), Some(0x1000));
        assert_eq!(sq.pop(), None);
        let mut sq = SubQueue::new(u64::MAX - 0x40, 4, 1);
        sq.set_tail(3);
        assert!(sq.pop().is_some());
        assert_eq!(sq.pop(), None, "an address that wraps is not returned");
    }

    #[test]
    fn cq_phase_flips_on_wrap_and_full_queue_defers() {
        let mem = GuestMem::new(4);
        let mut cq = CompQueue::new(0x1000, 3, true, 0);
        assert!(cq.post(mem.space(), cqe(1)).unwrap());
        assert!(cq.post(mem.space(), cqe(2)).unwrap());
        assert!(cq.is_full());
        assert!(!cq.post(mem.space(), cqe(3)).unwrap());
        assert!(!cq.post(mem.space(), cqe(4)).unwrap());
        assert_eq!(cq.pending(), 2);
        assert_eq!(read_cqe(&mem, 0x1000), (cqe(1), true));
        assert_eq!(read_cqe(&mem, 0x1010), (cqe(2), true));
        assert_eq!(read_cqe(&mem, 0x1020).0.cid, 0);

        // Consuming one entry makes room for one.
        assert!(cq.set_head(1));
        assert_eq!(cq.flush(mem.space()).unwrap(), 1);
        assert_eq!(read_cqe(&mem, 0x1020), (cqe(3), true));
        assert!(cq.set_head(0));
        assert_eq!(cq.flush(mem.space()).unwrap(), 1);
        // Wrapped: phase 0 now.
        assert_eq!(read_cqe(&mem, 0x1000), (cqe(4), false));
        assert!(!cq.backed_up());
        assert!(cq.post(mem.space(), cqe(5)).unwrap());
        assert_eq!(read_cqe(&mem, 0x1010), (cqe(5), false));
    }

    #[test]
    fn cq_head_cannot_pass_the_tail() {
        let mem = GuestMem::new(4);
        let mut cq = CompQueue::new(0x1000, 8, false, 0);
        assert!(!cq.set_head(1), "nothing posted yet");
        for cid in 0..3 {
            cq.post(mem.space(), cqe(cid)).unwrap();
        }
        assert!(!cq.set_head(8));
        assert!(!cq.set_head(4));
        assert!(cq.set_head(3));
        assert!(cq.set_head(3), "no movement is fine");
        assert!(!cq.set_head(2), "moving back is past the tail");
    }

    #[test]
    fn unmapped_cq_fails_without_advancing() {
        let mem = GuestMem::new(4);
        let mut cq = CompQueue::new(0x10_0000, 4, false, 0);
        assert!(cq.post(mem.space(), cqe(1)).is_err());
        assert!(!cq.is_full());
        assert!(!cq.set_head(1));
    }
}
