//! The NVMe controller model driven by a fuzzed host: register accesses, submission queue
//! entries written into guest memory, doorbells, completions, engine errors and DMA remaps.
//! PRP lists, Dataset Management ranges and queue creation are reached through the commands
//! (their pointers land in the small guest memory).
//!
//! Input: `[prelude: u8]` then operations `[op: u8][operands]` until the input ends (see
//! `step`). Prelude bit 0 enables the controller with admin queues at `ASQ`/`ACQ`, bit 1
//! also creates I/O queue pair 1 (64 entries), so most inputs start past bring-up.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use backends::engine::{CompletionError, MemEngine, MemHandle};
use backends::nvme::{Controller, ControllerConfig, CC};
use iopath_fuzz::guest::GuestMem;
use iopath_fuzz::input::Cursor;
use libfuzzer_sys::fuzz_target;

const PAGES: usize = 64;
const ASQ: u64 = 0x1000;
const ACQ: u64 = 0x2000;
const QUEUES: u16 = 4;
/// Where the harness keeps each queue (admin: `ASQ`/`ACQ`).
fn sq_base(qid: u16) -> u64 {
    match qid {
        0 => ASQ,
        q => 0x4000 + u64::from(q - 1) * 0x2000,
    }
}
fn cq_base(qid: u16) -> u64 {
    match qid {
        0 => ACQ,
        q => sq_base(q) + 0x1000,
    }
}

// Registers the harness can name by index (the rest of BAR0 is reached by raw offset).
const AQA: u64 = 0x24;
const ASQ_REG: u64 = 0x28;
const ACQ_REG: u64 = 0x30;
const REGS: [u64; 12] = [
    0x00, 0x04, 0x08, 0x0c, 0x10, CC, 0x1c, AQA, ASQ_REG, 0x2c, ACQ_REG, 0x34,
];

struct Host {
    ctrl: Controller,
    mem: GuestMem,
    disk: MemHandle,
    next_cid: u16,
}

impl Host {
    fn write32(&mut self, off: u64, v: u32) {
        self.ctrl.bar_write(off, &v.to_le_bytes());
    }

    /// Writes an SQE at `slot` of SQ `qid` with a fresh command identifier.
    fn put_sqe(&mut self, qid: u16, slot: u8, mut sqe: [u8; 64]) {
        sqe[2..4].copy_from_slice(&self.next_cid.to_le_bytes());
        self.next_cid = self.next_cid.wrapping_add(1);
        self.mem
            .write(sq_base(qid) + u64::from(slot % 64) * 64, &sqe);
    }

    fn enable(&mut self, io_queue: bool) {
        self.write32(AQA, 15 | (15 << 16));
        self.ctrl.bar_write(ASQ_REG, &ASQ.to_le_bytes());
        self.ctrl.bar_write(ACQ_REG, &ACQ.to_le_bytes());
        self.write32(CC, 1 | (6 << 16) | (4 << 20));
        if io_queue {
            // Create I/O CQ 1 and SQ 1, 64 entries, physically contiguous, no interrupts.
            let create = |opcode: u8, addr: u64, cdw11: u32| {
                let mut s = [0u8; 64];
                s[0] = opcode;
                s[24..32].copy_from_slice(&addr.to_le_bytes());
                s[40..44].copy_from_slice(&(1 | (63 << 16) as u32).to_le_bytes());
                s[44..48].copy_from_slice(&cdw11.to_le_bytes());
                s
            };
            self.put_sqe(0, 0, create(0x05, cq_base(1), 1));
            self.put_sqe(0, 1, create(0x01, sq_base(1), 1 | (1 << 16)));
            self.ctrl.sq_doorbell(0, 2);
            self.ctrl.cq_doorbell(0, 2);
        }
    }

    /// One operation; `false` once the input is used up.
    fn step(&mut self, c: &mut Cursor<'_>) -> bool {
        if c.is_empty() {
            return false;
        }
        match c.u8() % 12 {
            // A named register, 4 bytes.
            0 => {
                let reg = REGS[usize::from(c.u8()) % REGS.len()];
                let v = c.u32();
                self.write32(reg, v);
            }
            // Any BAR0 offset and width (registers, doorbells, reserved, misaligned).
            1 => {
                let off = u64::from(c.u16()) % (Controller::BAR0_SIZE + 8);
                let len = [1, 2, 4, 8][usize::from(c.u8() % 4)];
                let data = c.bytes(len);
                self.ctrl.bar_write(off, data);
            }
            2 => {
                let off = u64::from(c.u16()) % (Controller::BAR0_SIZE + 8);
                let mut buf = [0u8; 8];
                let len = [1, 2, 4, 8][usize::from(c.u8() % 4)];
                self.ctrl.bar_read(off, &mut buf[..len]);
            }
            // A raw 64-byte SQE into one of the harness's queues.
            3 => {
                let qid = u16::from(c.u8()) % (QUEUES + 1);
                let slot = c.u8();
                let mut sqe = [0u8; 64];
                let b = c.bytes(64);
                sqe[..b.len()].copy_from_slice(b);
                self.put_sqe(qid, slot, sqe);
            }
            // A compact SQE: the fields that matter, PRPs as 32-bit guest addresses.
            4 => {
                let qid = u16::from(c.u8()) % (QUEUES + 1);
                let slot = c.u8();
                let mut sqe = [0u8; 64];
                sqe[0] = c.u8();
                sqe[1] = c.u8(); // fuse, psdt
                sqe[4..8].copy_from_slice(&c.u32().to_le_bytes());
                sqe[24..28].copy_from_slice(&c.u32().to_le_bytes());
                sqe[32..36].copy_from_slice(&c.u32().to_le_bytes());
                for dw in 10..14 {
                    sqe[dw * 4..dw * 4 + 4].copy_from_slice(&c.u32().to_le_bytes());
                }
                self.put_sqe(qid, slot, sqe);
            }
            5 => {
                let (qid, tail) = (c.u16() % 8, c.u16());
                self.ctrl.sq_doorbell(qid, tail);
            }
            6 => {
                let (qid, head) = (c.u16() % 8, c.u16());
                self.ctrl.cq_doorbell(qid, head);
            }
            7 => {
                self.ctrl.process_completions();
            }
            // Guest memory: PRP lists, DSM ranges, data.
            8 => {
                let addr = u64::from(c.u32()) % (self.mem.len() as u64);
                let len = usize::from(c.u8());
                let data = c.bytes(len);
                self.mem.write(addr, data);
            }
            // The next engine request fails.
            9 => {
                let e = match c.u8() % 5 {
                    0 => CompletionError::OutOfRange,
                    1 => CompletionError::ReadOnly,
                    2 => CompletionError::Unsupported,
                    3 => CompletionError::Short { done: 0, want: 1 },
                    _ => CompletionError::Io(libc::EIO),
                };
                self.disk.fail_next(e);
            }
            // Remap DMA (vfio-user replaces the address space after DMA_MAP/UNMAP): split
            // regions, one read-only page, or nothing mapped at all.
            10 => {
                let (cut, ro) = (usize::from(c.u8()), c.u8());
                let space = match ro % 3 {
                    0 => self.mem.space(&[cut], None),
                    1 => self.mem.space(&[cut], Some(usize::from(ro))),
                    _ => iommu::AddressSpace::new(),
                };
                self.ctrl.set_address_space(Arc::new(space));
            }
            // A convenience: ring SQ `qid` up to `n` entries and reap.
            _ => {
                let qid = u16::from(c.u8()) % (QUEUES + 1);
                let tail = u16::from(c.u8());
                self.ctrl.sq_doorbell(qid, tail);
                self.ctrl.process_completions();
            }
        }
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMem::new(PAGES);
    let engine = MemEngine::new(256 << 10).with_queue_depth(16);
    let disk = engine.handle();
    let cfg = ControllerConfig {
        max_io_queues: QUEUES,
        max_queue_entries: 64,
        mdts_pages_shift: 4,
        interrupt_vectors: 4,
        ..ControllerConfig::default()
    };
    let mut ctrl = Controller::new(cfg, Box::new(engine), Arc::new(mem.space(&[], None)));
    let irqs = Arc::new(AtomicU64::new(0));
    let counter = irqs.clone();
    ctrl.set_interrupt(Box::new(move |_vector| {
        counter.fetch_add(1, Ordering::Relaxed);
    }));
    let mut host = Host {
        ctrl,
        mem,
        disk,
        next_cid: 1,
    };
    let mut c = Cursor::new(data);
    let prelude = c.u8();
    if prelude & 1 != 0 {
        host.enable(prelude & 2 != 0);
    }
    let mut ops = 0;
    // Bounded so a long input cannot time out on the MemEngine's copies alone.
    while ops < 512 && host.step(&mut c) {
        ops += 1;
    }
    host.ctrl.process_completions();
    // A reset with whatever is still in flight, as a driver unloading would do.
    host.write32(CC, 0);
    let _ = host.ctrl.stats();
});
