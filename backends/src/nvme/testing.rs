//! Test helpers: page-aligned guest memory behind an address space, an engine wrapper that
//! holds completions or returns them out of order, SQE builders, and a [`Driver`] that plays
//! the host (registers, queues in guest memory, doorbells, phase tags).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use iommu::{AddressSpace, DmaRegion, DmaSlice, Perm};

use super::config::ControllerConfig;
use super::controller::Controller;
use super::regs;
use super::spec::{Cqe, Sqe, CQE_SIZE, SQE_SIZE};
use crate::engine::{
    BlockEngine, BlockRequest, Completion, MemEngine, MemHandle, SubmitError, SubmitErrorKind,
};

pub const PAGE: u64 = 4096;
/// Guest memory layout used by [`Driver`].
pub const ASQ: u64 = 0x1000;
pub const ACQ: u64 = 0x2000;
/// PRP lists.
pub const LISTS: u64 = 0x70000;
/// Data buffers.
pub const DATA: u64 = 0x80000;
pub const GUEST_PAGES: usize = 512;

/// Where I/O queue `qid` lives (room for 64 SQ entries and 256 CQ entries, qid < 48).
pub fn io_sq_addr(qid: u16) -> u64 {
    0x10000 + u64::from(qid) * 0x2000
}

pub fn io_cq_addr(qid: u16) -> u64 {
    io_sq_addr(qid) + 0x1000
}

/// A deterministic byte pattern without zero bytes.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Page-aligned memory in one or more DMA regions.
pub struct GuestMem {
    space: Arc<AddressSpace>,
    /// (iova, host address, length) of each region.
    regions: Vec<(u64, usize, usize)>,
}

impl GuestMem {
    /// `pages` zeroed, read-write pages at IOVA 0.
    pub fn new(pages: usize) -> Self {
        Self::build(&[(0, pages, Perm::RW, 0)])
    }

    /// As `new`, plus `ro_pages` read-only pages filled with `fill` at `ro_iova`.
    pub fn with_ro(pages: usize, ro_iova: u64, ro_pages: usize, fill: u8) -> Self {
        Self::build(&[(0, pages, Perm::RW, 0), (ro_iova, ro_pages, Perm::RO, fill)])
    }

    fn build(spec: &[(u64, usize, Perm, u8)]) -> Self {
        let mut space = AddressSpace::new();
        let mut regions = Vec::new();
        for &(iova, pages, perm, fill) in spec {
            let mut mem = vec![Page([fill; 4096]); pages];
            let host = mem.as_mut_ptr().cast::<u8>();
            let len = pages * 4096;
            // SAFETY: the pages are owned by the region (moving the Vec does not move its
            // heap buffer), so the range stays valid for as long as the region lives.
            let r = unsafe { DmaRegion::new(iova, len as u64, host, perm, Arc::new(mem)) };
            space.map(r).unwrap();
            regions.push((iova, host as usize, len));
        }
        GuestMem {
            space: Arc::new(space),
            regions,
        }
    }

    pub fn space(&self) -> &AddressSpace {
        &self.space
    }

    pub fn arc(&self) -> Arc<AddressSpace> {
        self.space.clone()
    }

    /// The IOVA a translated segment starts at.
    pub fn iova_of(&self, s: &DmaSlice) -> u64 {
        let host = s.as_ptr() as usize;
        let (iova, base, _) = self
            .regions
            .iter()
            .find(|(_, base, len)| (*base..base + len).contains(&host))
            .expect("segment outside guest memory");
        iova + (host - base) as u64
    }

    pub fn write(&self, iova: u64, data: &[u8]) {
        self.space.write(iova, data).unwrap();
    }

    pub fn read(&self, iova: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.space.read(iova, &mut v).unwrap();
        v
    }

    pub fn write_u64s(&self, iova: u64, values: &[u64]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(iova, &bytes);
    }
}

/// What a test controls in a [`Gate`].
#[derive(Debug, Default)]
pub struct GateCtl {
    /// Keep finished requests from being reaped (they stay in flight) until `wait`.
    pub hold: bool,
    /// Return each batch of completions in reverse order.
    pub reverse: bool,
}

/// Wraps [`MemEngine`] (which completes in order, at submit) to hold completions back or
/// reorder them, as io_uring may.
pub struct Gate {
    inner: MemEngine,
    ctl: Arc<Mutex<GateCtl>>,
    held: Vec<Completion>,
}

impl Gate {
    pub fn new(inner: MemEngine) -> (Self, Arc<Mutex<GateCtl>>) {
        let ctl = Arc::new(Mutex::new(GateCtl::default()));
        (
            Gate {
                inner,
                ctl: ctl.clone(),
                held: Vec::new(),
            },
            ctl,
        )
    }
}

impl BlockEngine for Gate {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }

    fn read_only(&self) -> bool {
        self.inner.read_only()
    }

    fn queue_depth(&self) -> usize {
        self.inner.queue_depth()
    }

    unsafe fn push(&mut self, request: BlockRequest) -> Result<(), SubmitError> {
        if self.in_flight() >= self.queue_depth() {
            return Err(SubmitError {
                request,
                reason: SubmitErrorKind::Full,
            });
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.push(request) }
    }

    fn submit(&mut self) -> Result<usize, SubmitErrorKind> {
        self.inner.submit()
    }

    fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        self.inner.reap(&mut self.held);
        let ctl = self.ctl.lock().unwrap();
        if ctl.hold {
            return 0;
        }
        if ctl.reverse {
            self.held.reverse();
        }
        let n = self.held.len();
        out.append(&mut self.held);
        n
    }

    fn wait(&mut self, min: usize) -> Result<(), SubmitErrorKind> {
        self.ctl.lock().unwrap().hold = false;
        self.inner.wait(min)
    }

    fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.held.len()
    }
}

/// Submission queue entries, as a driver builds them (cid is set by [`Driver::push`]).
pub mod cmd {
    use super::super::spec::{admin_opc, io_opc, Sqe, NSID};

    pub fn identify(cns: u8, nsid: u32, buf: u64) -> Sqe {
        Sqe {
            opcode: admin_opc::IDENTIFY,
            nsid,
            prp1: buf,
            cdw10: u32::from(cns),
            ..Default::default()
        }
    }

    /// Create I/O CQ, physically contiguous, interrupts enabled with `vector` if given.
    pub fn create_cq(qid: u16, entries: u32, addr: u64, vector: Option<u16>) -> Sqe {
        let ien = match vector {
            Some(v) => 0x2 | (u32::from(v) << 16),
            None => 0,
        };
        Sqe {
            opcode: admin_opc::CREATE_IO_CQ,
            prp1: addr,
            cdw10: u32::from(qid) | ((entries.wrapping_sub(1)) << 16),
            cdw11: 0x1 | ien,
            ..Default::default()
        }
    }

    pub fn create_sq(qid: u16, entries: u32, addr: u64, cqid: u16) -> Sqe {
        Sqe {
            opcode: admin_opc::CREATE_IO_SQ,
            prp1: addr,
            cdw10: u32::from(qid) | ((entries.wrapping_sub(1)) << 16),
            cdw11: 0x1 | (u32::from(cqid) << 16),
            ..Default::default()
        }
    }

    pub fn delete_sq(qid: u16) -> Sqe {
        Sqe {
            opcode: admin_opc::DELETE_IO_SQ,
            cdw10: u32::from(qid),
            ..Default::default()
        }
    }

    pub fn delete_cq(qid: u16) -> Sqe {
        Sqe {
            opcode: admin_opc::DELETE_IO_CQ,
            cdw10: u32::from(qid),
            ..Default::default()
        }
    }

    pub fn set_features(fid: u8, cdw11: u32) -> Sqe {
        Sqe {
            opcode: admin_opc::SET_FEATURES,
            cdw10: u32::from(fid),
            cdw11,
            ..Default::default()
        }
    }

    pub fn get_features(fid: u8, sel: u32, cdw11: u32) -> Sqe {
        Sqe {
            opcode: admin_opc::GET_FEATURES,
            cdw10: u32::from(fid) | (sel << 8),
            cdw11,
            ..Default::default()
        }
    }

    /// Get Log Page of `dwords` dwords (RAE = 0, offset 0) into `buf`.
    pub fn get_log_page(lid: u8, dwords: u32, buf: u64) -> Sqe {
        let numd = dwords - 1;
        Sqe {
            opcode: admin_opc::GET_LOG_PAGE,
            nsid: 0xffff_ffff,
            prp1: buf,
            cdw10: u32::from(lid) | ((numd & 0xffff) << 16),
            cdw11: numd >> 16,
            ..Default::default()
        }
    }

    pub fn abort(sqid: u16, cid: u16) -> Sqe {
        Sqe {
            opcode: admin_opc::ABORT,
            cdw10: u32::from(sqid) | (u32::from(cid) << 16),
            ..Default::default()
        }
    }

    pub fn async_event_request() -> Sqe {
        Sqe {
            opcode: admin_opc::ASYNC_EVENT_REQUEST,
            ..Default::default()
        }
    }

    pub fn keep_alive() -> Sqe {
        Sqe {
            opcode: admin_opc::KEEP_ALIVE,
            ..Default::default()
        }
    }

    fn rw(opcode: u8, slba: u64, nlb: u32, prp1: u64, prp2: u64) -> Sqe {
        Sqe {
            opcode,
            nsid: NSID,
            prp1,
            prp2,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: nlb.wrapping_sub(1) & 0xffff,
            ..Default::default()
        }
    }

    /// Read `nlb` blocks (1-based) at `slba`.
    pub fn read(slba: u64, nlb: u32, prp1: u64, prp2: u64) -> Sqe {
        rw(io_opc::READ, slba, nlb, prp1, prp2)
    }

    pub fn write(slba: u64, nlb: u32, prp1: u64, prp2: u64) -> Sqe {
        rw(io_opc::WRITE, slba, nlb, prp1, prp2)
    }

    pub fn write_zeroes(slba: u64, nlb: u32) -> Sqe {
        rw(io_opc::WRITE_ZEROES, slba, nlb, 0, 0)
    }

    pub fn flush() -> Sqe {
        Sqe {
            opcode: io_opc::FLUSH,
            nsid: NSID,
            ..Default::default()
        }
    }

    /// Dataset Management, deallocate, `ranges` range entries at `buf`.
    pub fn deallocate(ranges: u32, buf: u64) -> Sqe {
        Sqe {
            opcode: io_opc::DATASET_MANAGEMENT,
            nsid: NSID,
            prp1: buf,
            cdw10: ranges - 1,
            cdw11: 1 << 2,
            ..Default::default()
        }
    }

    /// Dataset Management range entries: (slba, blocks).
    pub fn ranges(ranges: &[(u64, u32)]) -> Vec<u8> {
        ranges
            .iter()
            .flat_map(|&(slba, nlb)| {
                let mut e = [0u8; 16];
                e[4..8].copy_from_slice(&nlb.to_le_bytes());
                e[8..16].copy_from_slice(&slba.to_le_bytes());
                e
            })
            .collect()
    }
}

struct DriverSq {
    base: u64,
    size: u16,
    tail: u16,
    cqid: u16,
}

struct DriverCq {
    base: u64,
    size: u16,
    head: u16,
    phase: bool,
}

/// Plays the host driver against a controller over [`GuestMem`] and a [`MemEngine`].
pub struct Driver {
    pub ctrl: Controller,
    pub mem: GuestMem,
    pub disk: MemHandle,
    gate: Arc<Mutex<GateCtl>>,
    admin_entries: (u16, u16),
    sqs: HashMap<u16, DriverSq>,
    cqs: HashMap<u16, DriverCq>,
    next_cid: u16,
}

impl Driver {
    /// Default configuration, a 1 MiB device with 512-byte blocks, enabled.
    pub fn new() -> Self {
        Self::with_engine(ControllerConfig::default(), MemEngine::new(1 << 20))
    }

    /// Enabled, with 16-entry admin queues.
    pub fn with_engine(cfg: ControllerConfig, engine: MemEngine) -> Self {
        Self::with_admin_size(cfg, engine, 16, 16)
    }

    pub fn with_admin_size(cfg: ControllerConfig, engine: MemEngine, sq: u16, cq: u16) -> Self {
        let mut d = Self::disabled(cfg, engine);
        d.admin_entries = (sq, cq);
        d.enable();
        d
    }

    /// Not enabled yet.
    pub fn disabled(cfg: ControllerConfig, engine: MemEngine) -> Self {
        let mem = GuestMem::new(GUEST_PAGES);
        let disk = engine.handle();
        let (gate, ctl) = Gate::new(engine);
        Driver {
            ctrl: Controller::new(cfg, Box::new(gate), mem.arc()),
            mem,
            disk,
            gate: ctl,
            admin_entries: (16, 16),
            sqs: HashMap::new(),
            cqs: HashMap::new(),
            next_cid: 1,
        }
    }

    pub fn gate(&self) -> MutexGuard<'_, GateCtl> {
        self.gate.lock().unwrap()
    }

    pub fn read32(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.ctrl.bar_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write32(&mut self, off: u64, v: u32) {
        self.ctrl.bar_write(off, &v.to_le_bytes());
    }

    /// Programs the admin queues and sets CC.EN (forgetting all queues the driver knew).
    pub fn enable(&mut self) {
        let (sq, cq) = self.admin_entries;
        self.write32(regs::AQA, u32::from(sq - 1) | (u32::from(cq - 1) << 16));
        self.ctrl.bar_write(regs::ASQ, &ASQ.to_le_bytes());
        self.ctrl.bar_write(regs::ACQ, &ACQ.to_le_bytes());
        self.mem.write(ACQ, &vec![0; usize::from(cq) * CQE_SIZE]);
        self.write32(regs::CC, 1 | (6 << 16) | (4 << 20));
        assert_eq!(self.read32(regs::CSTS) & 3, regs::CSTS_RDY);
        self.sqs.clear();
        self.cqs.clear();
        self.sqs.insert(
            0,
            DriverSq {
                base: ASQ,
                size: sq,
                tail: 0,
                cqid: 0,
            },
        );
        self.cqs.insert(
            0,
            DriverCq {
                base: ACQ,
                size: cq,
                head: 0,
                phase: true,
            },
        );
    }

    /// Writes `sqe` (with a fresh cid) at the tail of SQ `qid` without ringing; returns the cid.
    pub fn push(&mut self, qid: u16, mut sqe: Sqe) -> u16 {
        sqe.cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        let sq = self.sqs.get_mut(&qid).expect("driver knows the SQ");
        let addr = sq.base + u64::from(sq.tail) * SQE_SIZE as u64;
        sq.tail = (sq.tail + 1) % sq.size;
        self.mem.write(addr, &sqe.encode());
        sqe.cid
    }

    /// Writes SQ `qid`'s tail doorbell.
    pub fn ring(&mut self, qid: u16) {
        let tail = self.sqs[&qid].tail;
        self.write32(regs::DOORBELL_BASE + 8 * u64::from(qid), u32::from(tail));
    }

    pub fn submit(&mut self, qid: u16, sqe: Sqe) -> u16 {
        let cid = self.push(qid, sqe);
        self.ring(qid);
        cid
    }

    /// The next entry of CQ `qid` if its phase tag says it is new; advances the local head.
    pub fn reap(&mut self, qid: u16) -> Option<Cqe> {
        let cq = self.cqs.get_mut(&qid).expect("driver knows the CQ");
        let addr = cq.base + u64::from(cq.head) * CQE_SIZE as u64;
        let mut b = [0u8; CQE_SIZE];
        self.mem.space().read(addr, &mut b).unwrap();
        let (cqe, phase) = Cqe::decode(&b);
        if phase != cq.phase {
            return None;
        }
        cq.head += 1;
        if cq.head == cq.size {
            cq.head = 0;
            cq.phase = !cq.phase;
        }
        Some(cqe)
    }

    /// Writes CQ `qid`'s head doorbell.
    pub fn ring_cq(&mut self, qid: u16) {
        let head = self.cqs[&qid].head;
        self.write32(
            regs::DOORBELL_BASE + 8 * u64::from(qid) + 4,
            u32::from(head),
        );
    }

    /// Runs one admin command to completion.
    pub fn admin(&mut self, sqe: Sqe) -> Cqe {
        let cid = self.submit(0, sqe);
        let c = self.reap(0).expect("admin command completed");
        self.ring_cq(0);
        assert_eq!((c.cid, c.sq_id), (cid, 0));
        c
    }

    /// Runs one I/O command to completion.
    pub fn io(&mut self, qid: u16, sqe: Sqe) -> Cqe {
        let cid = self.submit(qid, sqe);
        self.ctrl.process_completions();
        let cqid = self.sqs[&qid].cqid;
        let c = self.reap(cqid).expect("I/O command completed");
        self.ring_cq(cqid);
        assert_eq!((c.cid, c.sq_id), (cid, qid));
        c
    }

    /// Create I/O CQ at its standard address; the driver tracks it if it succeeds.
    pub fn create_cq(&mut self, qid: u16, entries: u16, vector: Option<u16>) -> Cqe {
        let base = io_cq_addr(qid);
        self.mem
            .write(base, &vec![0; usize::from(entries) * CQE_SIZE]);
        let c = self.admin(cmd::create_cq(qid, entries.into(), base, vector));
        if c.status.is_success() {
            let cq = DriverCq {
                base,
                size: entries,
                head: 0,
                phase: true,
            };
            self.cqs.insert(qid, cq);
        }
        c
    }

    pub fn create_sq(&mut self, qid: u16, entries: u16, cqid: u16) -> Cqe {
        let base = io_sq_addr(qid);
        let c = self.admin(cmd::create_sq(qid, entries.into(), base, cqid));
        if c.status.is_success() {
            let sq = DriverSq {
                base,
                size: entries,
                tail: 0,
                cqid,
            };
            self.sqs.insert(qid, sq);
        }
        c
    }

    /// Creates CQ `qid` and SQ `qid` on it, both without interrupts.
    pub fn create_io_queues(&mut self, qid: u16, sq_entries: u16, cq_entries: u16) {
        assert!(self.create_cq(qid, cq_entries, None).status.is_success());
        assert!(self.create_sq(qid, sq_entries, qid).status.is_success());
    }

    /// The driver forgets a queue the controller deleted.
    pub fn forget_sq(&mut self, qid: u16) {
        self.sqs.remove(&qid);
    }

    pub fn forget_cq(&mut self, qid: u16) {
        self.cqs.remove(&qid);
    }
}
