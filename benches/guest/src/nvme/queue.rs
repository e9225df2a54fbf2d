//! One submission/completion queue pair in guest memory and its doorbells (NVMe 1.4 sections
//! 4.1, 4.2 and 4.6). The device reads SQ entries and writes CQ entries while the guest runs,
//! so both are only touched through volatile accesses.

use core::sync::atomic::{fence, Ordering};

use crate::arch;

/// A submission queue entry (figure 105): CDW0 (opcode 7:0, CID 31:16) at byte 0, NSID at 4,
/// metadata pointer at 16, PRP1 at 24, PRP2 at 32, CDW10..CDW15 at 40..64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Command {
    pub cdw0: u32,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub mptr: u64,
    pub prp1: u64,
    pub prp2: u64,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

pub const SQE_BYTES: u64 = 64;
pub const CQE_BYTES: u64 = 16;
const _: () = assert!(core::mem::size_of::<Command>() as u64 == SQE_BYTES);

impl Command {
    pub fn new(opcode: u8, cid: u16, nsid: u32) -> Command {
        Command {
            cdw0: u32::from(opcode) | u32::from(cid) << 16,
            nsid,
            ..Command::default()
        }
    }
}

/// A completion queue entry (figure 124), the fields the guest uses.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// Command specific (DW0).
    pub result: u32,
    pub cid: u16,
    /// The 15-bit status field (DW3 bits 31:17); 0 is success.
    pub status: u16,
}

/// Where a queue pair lives and how it is signalled.
pub struct QueueSetup {
    pub sq: u64,
    pub cq: u64,
    /// Entries in each of the two queues (at least 2).
    pub entries: u16,
    pub sq_doorbell: u64,
    pub cq_doorbell: u64,
}

pub struct QueuePair {
    q: QueueSetup,
    sq_tail: u16,
    /// The tail value last written to the doorbell.
    sq_rung: u16,
    cq_head: u16,
    /// The phase tag of entries not yet consumed: 1 on the first pass over the zeroed CQ.
    phase: u32,
}

impl QueuePair {
    /// `setup.cq` must be zeroed memory.
    pub fn new(setup: QueueSetup) -> QueuePair {
        QueuePair {
            q: setup,
            sq_tail: 0,
            sq_rung: 0,
            cq_head: 0,
            phase: 1,
        }
    }

    /// Writes `cmd` at the SQ tail without telling the device. The caller keeps fewer than
    /// `entries` commands outstanding, so the tail never catches up with the device's head.
    pub fn push(&mut self, cmd: &Command) {
        let slot = self.q.sq + u64::from(self.sq_tail) * SQE_BYTES;
        // SAFETY: the SQ is `entries` entries of scratch memory owned by this queue pair; the
        // device does not read this entry until the doorbell moves past it.
        unsafe { core::ptr::write_volatile(slot as *mut Command, *cmd) };
        self.sq_tail = self.next(self.sq_tail);
    }

    /// Publishes every entry pushed since the last ring with one doorbell write.
    pub fn ring(&mut self) {
        if self.sq_tail == self.sq_rung {
            return;
        }
        // The entries (and the PRP lists and data they point at) must be in memory before the
        // device can see the new tail.
        fence(Ordering::Release);
        // SAFETY: the doorbell lies in BAR0, checked against the identity map at setup.
        unsafe { arch::mmio_write32(self.q.sq_doorbell, u32::from(self.sq_tail)) };
        self.sq_rung = self.sq_tail;
    }

    /// Hands new completions (at most one queue's worth) to `done`, then moves the CQ head
    /// doorbell once; returns how many there were.
    pub fn poll(&mut self, mut done: impl FnMut(Completion)) -> usize {
        let mut n = 0;
        // At most one lap per call, so a device that keeps posting cannot hold the guest here.
        while n < usize::from(self.q.entries) {
            let entry = self.q.cq + u64::from(self.cq_head) * CQE_BYTES;
            // SAFETY: the CQ is `entries` 16-byte entries of scratch memory the device writes;
            // DW3 (CID, phase, status) is read first and the rest only once its phase tag shows
            // the entry is new.
            let dw3 = unsafe { core::ptr::read_volatile((entry + 12) as *const u32) };
            if (dw3 >> 16) & 1 != self.phase {
                break;
            }
            // Read the rest of the entry only after its phase tag.
            fence(Ordering::Acquire);
            // SAFETY: as above.
            let result = unsafe { core::ptr::read_volatile(entry as *const u32) };
            done(Completion {
                result,
                cid: dw3 as u16,
                status: (dw3 >> 17) as u16,
            });
            self.cq_head = self.next(self.cq_head);
            if self.cq_head == 0 {
                self.phase ^= 1;
            }
            n += 1;
        }
        if n > 0 {
            // SAFETY: as in `ring`.
            unsafe { arch::mmio_write32(self.q.cq_doorbell, u32::from(self.cq_head)) };
        }
        n
    }

    fn next(&self, index: u16) -> u16 {
        if index + 1 == self.q.entries {
            0
        } else {
            index + 1
        }
    }
}
