//! The controller state machine: registers and CC transitions, doorbells, command fetch,
//! engine submission and completion, completion posting and interrupts.
//!
//! Admin and I/O command handling live in `admin.rs` and `io.rs` as further `impl Controller`
//! blocks; everything here is transport independent (MMIO trap or polled doorbell page).

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use iommu::AddressSpace;
use log::{debug, warn};

use super::aer::{AsyncEvents, ErrorEvent};
use super::config::ControllerConfig;
use super::features::Features;
use super::identify;
use super::inflight::{self, InFlight};
use super::namespace::Namespace;
use super::queue::{CompQueue, SubQueue};
use super::regs::{self, Cc, Doorbell};
use super::spec::{Cqe, Sqe, Status, SQE_SIZE};
use super::stats::ControllerStats;
use crate::engine::{BlockEngine, BlockOp, BlockRequest, Completion, SubmitError, SubmitErrorKind};

/// Called with an interrupt vector when a completion is posted to a queue with interrupts
/// enabled (at most once per vector per call into the controller).
pub type InterruptFn = Box<dyn Fn(u16) + Send>;

/// Engine waits in a row that may return nothing before a drain gives up.
const DRAIN_IDLE_LIMIT: u32 = 1000;

/// How a command ended when it was fetched.
pub(super) enum Outcome {
    /// Complete now with this status and Completion DW0.
    Done(Status, u32),
    /// Completes later: in the engine, or a held Asynchronous Event Request.
    Later,
}

impl From<Result<u32, Status>> for Outcome {
    fn from(r: Result<u32, Status>) -> Self {
        match r {
            Ok(dw0) => Outcome::Done(Status::SUCCESS, dw0),
            Err(s) => Outcome::Done(s, 0),
        }
    }
}

#[derive(Debug, Default)]
struct Registers {
    cc: Cc,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    intms: u32,
}

/// An NVMe controller with one namespace backed by a [`BlockEngine`].
pub struct Controller {
    // Declared first so it is dropped first: requests in flight point into the address spaces
    // below.
    pub(super) engine: Box<dyn BlockEngine>,
    pub(super) dma: Arc<AddressSpace>,
    /// Address spaces replaced while requests were in flight; kept until the engine is idle.
    retired: Vec<Arc<AddressSpace>>,
    pub(super) cfg: ControllerConfig,
    pub(super) ns: Namespace,
    pub(super) nguid: [u8; 16],
    cap: u64,
    regs: Registers,
    /// Indexed by queue id; 0 is the admin queue.
    pub(super) sqs: Vec<Option<SubQueue>>,
    pub(super) cqs: Vec<Option<CompQueue>>,
    /// An I/O queue was created since the last reset (Number of Queues is then fixed).
    pub(super) io_queues_created: bool,
    pub(super) features: Features,
    pub(super) aer: AsyncEvents,
    pub(super) inflight: InFlight,
    /// Requests the engine had no room for, in order.
    backlog: VecDeque<BlockRequest>,
    /// Requests pushed since the last successful submit.
    unsubmitted: bool,
    /// A submission queue stopped fetching (engine or completion queue full).
    stalled: bool,
    reaped: Vec<Completion>,
    interrupt: Option<InterruptFn>,
    irq_pending: Vec<u16>,
    pub(super) stats: ControllerStats,
}

impl Controller {
    /// Bytes of BAR0: registers, then doorbells with a 4-byte stride from 0x1000.
    pub const BAR0_SIZE: u64 = regs::BAR0_SIZE;

    /// A controller in the reset state (CC.EN = 0). Namespace 1 covers the whole engine, with
    /// the engine's block size as its LBA size.
    pub fn new(
        cfg: ControllerConfig,
        engine: Box<dyn BlockEngine>,
        dma: Arc<AddressSpace>,
    ) -> Self {
        let cfg = cfg.normalized();
        let ns = Namespace::new(engine.capacity(), engine.block_size(), engine.read_only());
        let queues = usize::from(cfg.max_io_queues) + 1;
        Controller {
            engine,
            dma,
            retired: Vec::new(),
            nguid: identify::nguid(&cfg.serial),
            cap: regs::cap(cfg.max_queue_entries),
            features: Features::new(cfg.max_io_queues),
            cfg,
            ns,
            regs: Registers::default(),
            sqs: vec![None; queues],
            cqs: (0..queues).map(|_| None).collect(),
            io_queues_created: false,
            aer: AsyncEvents::default(),
            inflight: InFlight::default(),
            backlog: VecDeque::new(),
            unsubmitted: false,
            stalled: false,
            reaped: Vec::new(),
            interrupt: None,
            irq_pending: Vec::new(),
            stats: ControllerStats::default(),
        }
    }

    /// Replaces the address space all DMA goes through (vfio-user maps memory after the
    /// device exists). Requests already in flight keep the old one alive until they finish.
    pub fn set_address_space(&mut self, dma: Arc<AddressSpace>) {
        let old = std::mem::replace(&mut self.dma, dma);
        if self.engine.in_flight() > 0 || !self.backlog.is_empty() {
            self.retired.push(old);
        }
    }

    /// Installs the interrupt hook (the VMM routes the vector to MSI-X).
    pub fn set_interrupt(&mut self, f: InterruptFn) {
        self.interrupt = Some(f);
    }

    /// The engine's completion eventfd, for a thread that calls
    /// [`Controller::process_completions`] when it fires.
    pub fn completion_fd(&self) -> Option<RawFd> {
        self.engine.completion_fd()
    }

    pub fn stats(&self) -> ControllerStats {
        self.stats
    }

    /// A BAR0 read. 4- and 8-byte reads at 4-byte aligned offsets return register values
    /// (doorbells read as 0); anything else reads as 0.
    pub fn bar_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !offset.is_multiple_of(4) {
            return;
        }
        let lo = u64::from(self.read_dword(offset));
        match data.len() {
            4 => data.copy_from_slice(&(lo as u32).to_le_bytes()),
            8 => {
                let hi = offset
                    .checked_add(4)
                    .map_or(0, |o| u64::from(self.read_dword(o)));
                data.copy_from_slice(&(lo | (hi << 32)).to_le_bytes());
            }
            _ => {}
        }
    }

    /// A BAR0 write: registers and doorbells, 4 or 8 bytes (an 8-byte write is two dword
    /// writes, low first) at 4-byte aligned offsets; anything else is ignored.
    pub fn bar_write(&mut self, offset: u64, data: &[u8]) {
        if !offset.is_multiple_of(4) {
            return;
        }
        match *data {
            [a, b, c, d] => self.write_dword(offset, u32::from_le_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => {
                self.write_dword(offset, u32::from_le_bytes([a, b, c, d]));
                if let Some(next) = offset.checked_add(4) {
                    self.write_dword(next, u32::from_le_bytes([e, f, g, h]));
                }
            }
            _ => {}
        }
    }

    /// The guest wrote `tail` to submission queue `qid`'s doorbell: fetch and start commands.
    pub fn sq_doorbell(&mut self, qid: u16, tail: u16) {
        // A poller read the doorbell from shared memory: see the entries written before it.
        fence(Ordering::Acquire);
        self.stats.sq_doorbell_writes += 1;
        if !self.ready() {
            self.stats.invalid_doorbell_writes += 1;
            return;
        }
        let checked = match self.sq_mut(qid) {
            None => Err(ErrorEvent::InvalidDoorbellRegister),
            Some(sq) => match sq.set_tail(tail) {
                true => Ok(()),
                false => Err(ErrorEvent::InvalidDoorbellValue),
            },
        };
        match checked {
            Ok(()) => {
                self.run_sq(qid);
                self.submit_if_needed();
            }
            Err(event) => self.doorbell_error(event, qid, tail),
        }
        self.fire_interrupts();
    }

    /// The guest wrote `head` to completion queue `qid`'s doorbell: entries up to it are free;
    /// post waiting completions and resume fetching.
    pub fn cq_doorbell(&mut self, qid: u16, head: u16) {
        self.stats.cq_doorbell_writes += 1;
        if !self.ready() {
            self.stats.invalid_doorbell_writes += 1;
            return;
        }
        let dma = &self.dma;
        let flushed = match self.cqs.get_mut(usize::from(qid)).and_then(Option::as_mut) {
            None => Err(ErrorEvent::InvalidDoorbellRegister),
            Some(cq) => match cq.set_head(head) {
                true => Ok((cq.flush(dma), cq.ien.then_some(cq.vector))),
                false => Err(ErrorEvent::InvalidDoorbellValue),
            },
        };
        match flushed {
            Err(event) => self.doorbell_error(event, qid, head),
            Ok((Ok(n), irq)) => {
                self.posted(n, irq);
                self.resume();
                self.submit_if_needed();
            }
            Ok((Err(e), _)) => self.fatal(format_args!("CQ {qid}: {e}")),
        }
        self.fire_interrupts();
    }

    /// Reaps engine completions and posts their completion queue entries; restarts fetching
    /// that waited for the engine. Returns the entries posted.
    pub fn process_completions(&mut self) -> usize {
        let before = self.stats.cqes_posted;
        loop {
            let reaped = self.reap_and_complete();
            self.pump_backlog();
            self.resume();
            self.submit_if_needed();
            if reaped == 0 {
                break;
            }
        }
        if self.engine.in_flight() == 0 && self.backlog.is_empty() {
            self.retired.clear();
        }
        self.fire_interrupts();
        (self.stats.cqes_posted - before) as usize
    }

    // ---- registers -------------------------------------------------------------------------

    fn read_dword(&self, offset: u64) -> u32 {
        let r = &self.regs;
        match offset {
            regs::CAP => self.cap as u32,
            o if o == regs::CAP + 4 => (self.cap >> 32) as u32,
            regs::VS => regs::VERSION,
            regs::INTMS | regs::INTMC => r.intms,
            regs::CC => r.cc.0,
            regs::CSTS => r.csts,
            regs::AQA => r.aqa,
            regs::ASQ => r.asq as u32,
            o if o == regs::ASQ + 4 => (r.asq >> 32) as u32,
            regs::ACQ => r.acq as u32,
            o if o == regs::ACQ + 4 => (r.acq >> 32) as u32,
            _ => 0,
        }
    }

    fn write_dword(&mut self, offset: u64, value: u32) {
        let lo = |old: u64| (old & !0xffff_ffff) | u64::from(value);
        let hi = |old: u64| (old & 0xffff_ffff) | (u64::from(value) << 32);
        match offset {
            regs::INTMS => self.regs.intms |= value,
            regs::INTMC => self.regs.intms &= !value,
            regs::CC => self.write_cc(value),
            regs::AQA => self.regs.aqa = value & 0x0fff_0fff,
            regs::ASQ => self.regs.asq = lo(self.regs.asq),
            o if o == regs::ASQ + 4 => self.regs.asq = hi(self.regs.asq),
            regs::ACQ => self.regs.acq = lo(self.regs.acq),
            o if o == regs::ACQ + 4 => self.regs.acq = hi(self.regs.acq),
            o => match regs::doorbell(o) {
                Some(Doorbell::SqTail(qid)) => self.sq_doorbell(qid, value as u16),
                Some(Doorbell::CqHead(qid)) => self.cq_doorbell(qid, value as u16),
                // Read-only, reserved, or NSSR (subsystem reset is not supported).
                None => {}
            },
        }
    }

    pub(super) fn cc(&self) -> Cc {
        self.regs.cc
    }

    fn write_cc(&mut self, value: u32) {
        let (old, new) = (self.regs.cc, Cc(value));
        self.regs.cc = new;
        if !old.en() && new.en() {
            self.enable();
        } else if old.en() && !new.en() {
            self.reset();
        }
        if new.shn() != 0 && old.shn() == 0 {
            self.shutdown();
        } else if new.shn() == 0 && old.shn() != 0 {
            self.regs.csts &= !regs::CSTS_SHST_MASK;
        }
        self.fire_interrupts();
    }

    /// CC.EN 0 -> 1: check the configuration, create the admin queues, set CSTS.RDY.
    fn enable(&mut self) {
        let cc = self.regs.cc;
        if cc.mps() != 0 || cc.css() != 0 || cc.ams() != 0 {
            self.fatal(format_args!("unsupported CC {:#x} (MPS, CSS or AMS)", cc.0));
            return;
        }
        let aqa = self.regs.aqa;
        let (sq_size, cq_size) = regs::aqa_sizes(aqa);
        if sq_size < 2 || cq_size < 2 {
            self.fatal(format_args!("admin queues too small (AQA {aqa:#x})"));
            return;
        }
        let page_mask = regs::PAGE_SIZE - 1;
        let mut acq = CompQueue::new(self.regs.acq & !page_mask, cq_size, true, 0);
        acq.sqs = 1;
        if let (Some(sq), Some(cq)) = (self.sqs.get_mut(0), self.cqs.get_mut(0)) {
            *sq = Some(SubQueue::new(self.regs.asq & !page_mask, sq_size, 0));
            *cq = Some(acq);
        }
        self.regs.csts |= regs::CSTS_RDY;
    }

    /// CC.EN 1 -> 0: wait for in-flight I/O (its completions are dropped), delete all queues,
    /// restore feature defaults, clear CSTS.
    fn reset(&mut self) {
        self.backlog.clear();
        self.drain_engine(false);
        self.inflight.clear();
        self.sqs.iter_mut().for_each(|q| *q = None);
        self.cqs.iter_mut().for_each(|q| *q = None);
        self.io_queues_created = false;
        self.features = Features::new(self.cfg.max_io_queues);
        self.aer = AsyncEvents::default();
        self.stalled = false;
        self.irq_pending.clear();
        if self.engine.in_flight() == 0 {
            self.retired.clear();
        }
        self.regs.csts = 0;
    }

    /// CC.SHN set: finish in-flight I/O (posting its completions), report shutdown complete.
    fn shutdown(&mut self) {
        self.drain_engine(true);
        self.regs.csts = (self.regs.csts & !regs::CSTS_SHST_MASK) | regs::CSTS_SHST_COMPLETE;
    }

    fn ready(&self) -> bool {
        self.regs.csts & (regs::CSTS_RDY | regs::CSTS_CFS) == regs::CSTS_RDY
    }

    /// A guest error the controller cannot report in a completion: CSTS.CFS; the host must
    /// reset the controller.
    pub(super) fn fatal(&mut self, why: fmt::Arguments<'_>) {
        warn!("NVMe controller fatal status: {why}");
        self.regs.csts |= regs::CSTS_CFS;
        self.stats.fatal_errors += 1;
    }

    fn doorbell_error(&mut self, event: ErrorEvent, qid: u16, value: u16) {
        debug!("ignored doorbell write {value} for queue {qid}: {event:?}");
        self.stats.invalid_doorbell_writes += 1;
        if let Some((cid, dw0)) = self.aer.report(event) {
            self.complete(0, 0, cid, Status::SUCCESS, dw0);
        }
    }

    // ---- queues ----------------------------------------------------------------------------

    pub(super) fn sq_mut(&mut self, qid: u16) -> Option<&mut SubQueue> {
        self.sqs.get_mut(usize::from(qid))?.as_mut()
    }

    pub(super) fn cq_mut(&mut self, qid: u16) -> Option<&mut CompQueue> {
        self.cqs.get_mut(usize::from(qid))?.as_mut()
    }

    /// Whether completion queue `qid` exists (a polled doorbell page needs to know which
    /// slots are live).
    pub fn cq_exists(&self, qid: u16) -> bool {
        self.cqs.get(usize::from(qid)).is_some_and(Option::is_some)
    }

    /// Whether submission queue `qid` exists.
    pub fn sq_exists(&self, qid: u16) -> bool {
        self.sqs.get(usize::from(qid)).is_some_and(Option::is_some)
    }

    /// Fetches and executes commands from `qid` until it is empty, or stalls because its
    /// completion queue is full or (I/O queues) the engine is.
    fn run_sq(&mut self, qid: u16) {
        while self.ready() {
            let Some(sq) = self.sqs.get(usize::from(qid)).and_then(Option::as_ref) else {
                return;
            };
            if sq.is_empty() {
                return;
            }
            let cqid = sq.cqid;
            let cq_full = self
                .cqs
                .get(usize::from(cqid))
                .and_then(Option::as_ref)
                .is_none_or(CompQueue::backed_up);
            if cq_full || (qid != 0 && !self.backlog.is_empty()) {
                self.stalled = true;
                return;
            }
            let Some(addr) = self.sq_mut(qid).and_then(SubQueue::pop) else {
                self.fatal(format_args!("SQ {qid} entry address wraps"));
                return;
            };
            let mut raw = [0u8; SQE_SIZE];
            if let Err(e) = self.dma.read(addr, &mut raw) {
                self.fatal(format_args!("SQ {qid} entry at {addr:#x}: {e}"));
                return;
            }
            let sqe = Sqe::parse(&raw);
            let outcome = if qid == 0 {
                self.execute_admin(&sqe)
            } else {
                self.execute_io(qid, cqid, &sqe)
            };
            if let Outcome::Done(status, dw0) = outcome {
                self.complete(cqid, qid, sqe.cid, status, dw0);
            }
        }
    }

    /// Runs queues that stopped fetching, if any.
    fn resume(&mut self) {
        if !std::mem::take(&mut self.stalled) {
            return;
        }
        for qid in 0..self.sqs.len() {
            let pending = self
                .sqs
                .get(qid)
                .and_then(Option::as_ref)
                .is_some_and(|sq| !sq.is_empty());
            if pending {
                // qid < sqs.len() <= MAX_QID + 1.
                self.run_sq(qid as u16);
            }
        }
    }

    /// Builds and posts the completion of command `cid` from `sqid` to `cqid` (or queues it
    /// if the completion queue is full).
    pub(super) fn complete(&mut self, cqid: u16, sqid: u16, cid: u16, status: Status, dw0: u32) {
        if !status.is_success() {
            self.stats.error_completions += 1;
        }
        let sq_head = self
            .sqs
            .get(usize::from(sqid))
            .and_then(Option::as_ref)
            .map_or(0, |sq| sq.head);
        let cqe = Cqe {
            dw0,
            sq_head,
            sq_id: sqid,
            cid,
            status,
        };
        let dma = &self.dma;
        let Some(cq) = self.cqs.get_mut(usize::from(cqid)).and_then(Option::as_mut) else {
            warn!("completion for command {cid} of SQ {sqid}: CQ {cqid} is gone");
            return;
        };
        let irq = cq.ien.then_some(cq.vector);
        match cq.post(dma, cqe) {
            Ok(true) => self.posted(1, irq),
            Ok(false) => self.stats.cq_full_waits += 1,
            Err(e) => self.fatal(format_args!("CQ {cqid}: {e}")),
        }
    }

    fn posted(&mut self, n: usize, irq: Option<u16>) {
        self.stats.cqes_posted += n as u64;
        if let (true, Some(vector)) = (n > 0, irq) {
            if !self.irq_pending.contains(&vector) {
                self.irq_pending.push(vector);
            }
        }
    }

    fn fire_interrupts(&mut self) {
        if let Some(f) = &self.interrupt {
            for &vector in &self.irq_pending {
                f(vector);
            }
        }
        self.irq_pending.clear();
    }

    // ---- engine ----------------------------------------------------------------------------

    /// Hands a request to the engine, or queues it behind others if the engine is full.
    pub(super) fn push_request(&mut self, request: BlockRequest) {
        let request = if self.backlog.is_empty() {
            match self.try_push(request) {
                Ok(()) => return,
                Err(r) => r,
            }
        } else {
            request
        };
        self.stats.engine_backlogged += 1;
        self.backlog.push_back(request);
    }

    /// Pushes, submitting first and retrying once if the engine is full of unsubmitted
    /// requests. Gives the request back if there is still no room.
    fn try_push(&mut self, request: BlockRequest) -> Result<(), BlockRequest> {
        match self.push_once(request) {
            Err(request) if self.unsubmitted => {
                self.submit();
                self.push_once(request)
            }
            r => r,
        }
    }

    fn push_once(&mut self, request: BlockRequest) -> Result<(), BlockRequest> {
        // SAFETY: every segment was translated from `self.dma`, or from an address space that
        // `set_address_space` moved to `self.retired`; both are kept until the engine has no
        // request in flight, and their regions keep the host memory mapped while they live.
        // `engine` is declared before them, so it is dropped first.
        match unsafe { self.engine.push(request) } {
            Ok(()) => {
                self.unsubmitted = true;
                Ok(())
            }
            Err(SubmitError {
                request,
                reason: SubmitErrorKind::Full,
            }) => Err(request),
            Err(SubmitError {
                request,
                reason: SubmitErrorKind::Io(errno),
            }) => {
                self.stats.engine_errors += 1;
                warn!("engine push failed (errno {errno})");
                self.finish_part(inflight::slot_of(request.tag), Err(Status::INTERNAL_ERROR));
                Ok(())
            }
        }
    }

    /// Moves backlogged requests into the engine while it has room.
    fn pump_backlog(&mut self) {
        while let Some(request) = self.backlog.pop_front() {
            if let Err(request) = self.try_push(request) {
                self.backlog.push_front(request);
                break;
            }
        }
    }

    fn submit(&mut self) {
        match self.engine.submit() {
            Ok(_) => self.unsubmitted = false,
            Err(e) => {
                self.stats.engine_errors += 1;
                warn!("engine submit failed: {e}");
            }
        }
    }

    fn submit_if_needed(&mut self) {
        if self.unsubmitted {
            self.submit();
        }
    }

    /// Reaps what the engine has finished and completes it; returns how many.
    fn reap_and_complete(&mut self) -> usize {
        let mut done = std::mem::take(&mut self.reaped);
        let n = self.engine.reap(&mut done);
        for c in done.drain(..) {
            let slot = inflight::slot_of(c.tag);
            let result = match c.result {
                Ok(bytes) => Ok(bytes),
                Err(e) => Err(self
                    .inflight
                    .get(slot)
                    .map_or(Status::INTERNAL_ERROR, |cmd| {
                        super::io::engine_status(e, cmd.op)
                    })),
            };
            self.finish_part(slot, result);
        }
        self.reaped = done;
        n
    }

    /// One request of the command in `slot` finished; completes the command after its last.
    pub(super) fn finish_part(&mut self, slot: u32, result: Result<u64, Status>) {
        let Some(cmd) = self.inflight.get_mut(slot) else {
            warn!("engine completion for unknown slot {slot}");
            return;
        };
        cmd.remaining = cmd.remaining.saturating_sub(1);
        match result {
            Ok(bytes) => cmd.bytes += bytes,
            Err(status) if cmd.status.is_success() => cmd.status = status,
            Err(_) => {}
        }
        if cmd.remaining > 0 {
            return;
        }
        if cmd.flush_after && cmd.status.is_success() {
            cmd.flush_after = false;
            cmd.remaining = 1;
            self.push_request(BlockRequest {
                op: BlockOp::Flush,
                offset: 0,
                len: 0,
                segments: Vec::new(),
                tag: inflight::tag(slot, 0),
            });
            return;
        }
        let Some(cmd) = self.inflight.remove(slot) else {
            return;
        };
        if cmd.status.is_success() {
            match cmd.op {
                BlockOp::Read => self.stats.bytes_read += cmd.bytes,
                BlockOp::Write => self.stats.bytes_written += cmd.bytes,
                _ => {}
            }
        }
        self.complete(cmd.cqid, cmd.sqid, cmd.cid, cmd.status, 0);
    }

    /// Waits for everything in the engine. `post`: complete the commands (and keep feeding
    /// the backlog); otherwise drop the completions.
    fn drain_engine(&mut self, post: bool) {
        let mut idle = 0;
        loop {
            if post {
                self.pump_backlog();
            }
            self.submit_if_needed();
            if self.engine.in_flight() == 0 {
                return;
            }
            if let Err(e) = self.engine.wait(1) {
                self.stats.engine_errors += 1;
                warn!("engine wait failed while draining: {e}");
                return;
            }
            let n = if post {
                self.reap_and_complete()
            } else {
                let mut done = std::mem::take(&mut self.reaped);
                let n = self.engine.reap(&mut done);
                done.clear();
                self.reaped = done;
                n
            };
            idle = if n == 0 { idle + 1 } else { 0 };
            if idle > DRAIN_IDLE_LIMIT {
                warn!("engine reports requests in flight but completes none");
                return;
            }
        }
    }

    /// Finishes every command of submission queue `qid` before it is deleted: requests the
    /// engine has not taken are aborted; the rest are waited for and completed normally.
    pub(super) fn drain_sq(&mut self, qid: u16) {
        let mut aborted = Vec::new();
        for request in std::mem::take(&mut self.backlog) {
            let slot = inflight::slot_of(request.tag);
            if self.inflight.get(slot).is_some_and(|c| c.sqid == qid) {
                aborted.push(slot);
            } else {
                self.backlog.push_back(request);
            }
        }
        for slot in aborted {
            self.finish_part(slot, Err(Status::ABORTED_SQ_DELETION));
        }
        let mut idle = 0;
        while self.inflight.any_for_sq(qid) {
            self.pump_backlog();
            self.submit_if_needed();
            if self.engine.in_flight() == 0 {
                break;
            }
            if let Err(e) = self.engine.wait(1) {
                self.stats.engine_errors += 1;
                warn!("engine wait failed while deleting SQ {qid}: {e}");
                break;
            }
            idle = if self.reap_and_complete() == 0 {
                idle + 1
            } else {
                0
            };
            if idle > DRAIN_IDLE_LIMIT {
                warn!("engine reports requests in flight but completes none");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::MemEngine;
    use crate::nvme::testing::{cmd, Driver, GuestMem, ACQ, ASQ, DATA};

    fn read64(d: &mut Driver, off: u64) -> u64 {
        let mut b = [0u8; 8];
        d.ctrl.bar_read(off, &mut b);
        u64::from_le_bytes(b)
    }

    #[test]
    fn controller_is_send() {
        fn send<T: Send>() {}
        send::<Controller>();
    }

    #[test]
    fn identity_registers() {
        let mut d = Driver::disabled(ControllerConfig::default(), MemEngine::new(1 << 20));
        let cap = read64(&mut d, regs::CAP);
        assert_eq!(cap, regs::cap(1024));
        assert_eq!(d.read32(regs::CAP) as u64, cap & 0xffff_ffff);
        assert_eq!(d.read32(regs::CAP + 4) as u64, cap >> 32);
        assert_eq!(d.read32(regs::VS), 0x0001_0400);
        assert_eq!(d.read32(regs::CSTS), 0);
        // Odd sizes and alignments read as 0.
        let mut b = [0xffu8; 2];
        d.ctrl.bar_read(regs::VS, &mut b);
        assert_eq!(b, [0, 0]);
        let mut b = [0xffu8; 4];
        d.ctrl.bar_read(regs::VS + 1, &mut b);
        assert_eq!(b, [0; 4]);
        d.ctrl.bar_read(Controller::BAR0_SIZE + 8, &mut b);
        assert_eq!(b, [0; 4]);
        d.ctrl.bar_read(u64::MAX - 3, &mut [0; 8]);
        // Doorbells read as 0; CAP and VS ignore writes.
        d.write32(0x1000, 5);
        assert_eq!(d.read32(0x1000), 0);
        d.write32(regs::VS, 0);
        assert_eq!(d.read32(regs::VS), 0x0001_0400);
        d.ctrl.bar_write(regs::CAP, &[0; 8]);
        assert_eq!(read64(&mut d, regs::CAP), cap);
    }

    #[test]
    fn admin_queue_registers_and_enable() {
        let mut d = Driver::disabled(ControllerConfig::default(), MemEngine::new(1 << 20));
        d.ctrl
            .bar_write(regs::ASQ, &0x1234_5678_9abc_d000_u64.to_le_bytes());
        assert_eq!(read64(&mut d, regs::ASQ), 0x1234_5678_9abc_d000);
        d.write32(regs::ACQ + 4, 0x1);
        d.write32(regs::ACQ, 0x2000);
        assert_eq!(read64(&mut d, regs::ACQ), 0x1_0000_2000);
        d.write32(regs::AQA, 0xffff_ffff);
        assert_eq!(d.read32(regs::AQA), 0x0fff_0fff);
        d.write32(regs::INTMS, 0x5);
        d.write32(regs::INTMC, 0x1);
        assert_eq!(d.read32(regs::INTMS), 0x4);
        assert_eq!(d.read32(regs::INTMC), 0x4);

        d.enable();
        assert_eq!(d.read32(regs::CSTS) & 3, regs::CSTS_RDY);
        let c = d.admin(cmd::keep_alive());
        assert!(c.status.is_success());
        // EN 1 -> 0 -> 1 works again (queues rebuilt from AQA/ASQ/ACQ).
        d.write32(regs::CC, 0);
        assert_eq!(d.read32(regs::CSTS), 0);
        d.enable();
        assert!(d.admin(cmd::keep_alive()).status.is_success());
    }

    #[test]
    fn unsupported_page_size_is_fatal() {
        let mut d = Driver::disabled(ControllerConfig::default(), MemEngine::new(1 << 20));
        d.write32(regs::AQA, 0x000f_000f);
        d.ctrl.bar_write(regs::ASQ, &ASQ.to_le_bytes());
        d.ctrl.bar_write(regs::ACQ, &ACQ.to_le_bytes());
        d.write32(regs::CC, 1 | (1 << 7) | (6 << 16) | (4 << 20));
        assert_eq!(d.read32(regs::CSTS) & 3, regs::CSTS_CFS);
        // Doorbells are ignored until the host resets.
        d.write32(0x1000, 1);
        assert_eq!(d.ctrl.stats().admin_commands, 0);
        d.write32(regs::CC, 0);
        assert_eq!(d.read32(regs::CSTS), 0);
        d.enable();
        assert_eq!(d.read32(regs::CSTS) & 3, regs::CSTS_RDY);
        // Other unsupported CC values.
        for cc in [1 | (1 << 4), 1 | (1 << 11)] {
            d.write32(regs::CC, 0);
            d.write32(regs::CC, cc);
            assert_eq!(d.read32(regs::CSTS) & 3, regs::CSTS_CFS, "CC {cc:#x}");
        }
    }

    #[test]
    fn admin_queue_of_one_entry_is_fatal() {
        let mut d = Driver::disabled(ControllerConfig::default(), MemEngine::new(1 << 20));
        d.write32(regs::AQA, 0x000f_0000);
        d.write32(regs::CC, 1 | (6 << 16) | (4 << 20));
        assert_eq!(d.read32(regs::CSTS) & 3, regs::CSTS_CFS);
    }

    #[test]
    fn unmapped_admin_queue_is_fatal_not_a_panic() {
        let mut d = Driver::disabled(ControllerConfig::default(), MemEngine::new(1 << 20));
        d.write32(regs::AQA, 0x000f_000f);
        d.ctrl.bar_write(regs::ASQ, &0x4000_0000_u64.to_le_bytes());
        d.ctrl.bar_write(regs::ACQ, &ACQ.to_le_bytes());
        d.write32(regs::CC, 1 | (6 << 16) | (4 << 20));
        assert_eq!(d.read32(regs::CSTS) & 1, 1);
        d.write32(0x1000, 1);
        assert_eq!(d.read32(regs::CSTS) & 2, 2);
        assert_eq!(d.ctrl.stats().fatal_errors, 1);
    }

    #[test]
    fn shutdown_completes_in_flight_io_and_reports_shst() {
        let mut d = Driver::new();
        d.create_io_queues(1, 16, 16);
        d.gate().hold = true;
        let data = crate::nvme::testing::pattern(1, 512);
        d.mem.write(DATA, &data);
        let cid = d.submit(1, cmd::write(0, 1, DATA, 0));
        assert!(d.reap(1).is_none());
        let cc = d.read32(regs::CC);
        d.write32(regs::CC, cc | (1 << 14));
        assert_eq!(
            d.read32(regs::CSTS) & regs::CSTS_SHST_MASK,
            regs::CSTS_SHST_COMPLETE
        );
        let c = d.reap(1).expect("completion posted during shutdown");
        assert_eq!((c.cid, c.status), (cid, Status::SUCCESS));
        assert_eq!(d.disk.read(0, 512), data);
        // Clearing SHN clears SHST.
        d.write32(regs::CC, cc);
        assert_eq!(d.read32(regs::CSTS) & regs::CSTS_SHST_MASK, 0);
    }

    #[test]
    fn reset_with_io_in_flight_drains_and_forgets_queues() {
        let mut d = Driver::new();
        d.create_io_queues(1, 16, 16);
        d.gate().hold = true;
        d.mem.write(DATA, &[7; 4096]);
        for i in 0..4 {
            d.submit(1, cmd::write(i * 8, 8, DATA, 0));
        }
        assert!(d.ctrl.engine.in_flight() > 0);
        assert_eq!(d.ctrl.inflight.len(), 4);
        d.write32(regs::CC, 0);
        assert_eq!(d.ctrl.engine.in_flight(), 0, "reset waited for the engine");
        assert_eq!(d.ctrl.inflight.len(), 0);
        assert_eq!(d.read32(regs::CSTS), 0);
        assert!(d.reap(1).is_none(), "no completion after reset");
        assert_eq!(d.ctrl.process_completions(), 0);

        d.enable();
        let before = d.ctrl.stats().invalid_doorbell_writes;
        d.write32(0x1008, 1);
        assert_eq!(
            d.ctrl.stats().invalid_doorbell_writes,
            before + 1,
            "queue 1 is gone"
        );
        d.create_io_queues(1, 16, 16);
        let c = d.io(1, cmd::read(0, 1, DATA + 0x1000, 0));
        assert!(c.status.is_success());
    }

    #[test]
    fn doorbell_misuse_is_ignored_and_reported_by_aer() {
        let mut d = Driver::new();
        d.create_io_queues(1, 4, 4);
        let aer_cid = d.submit(0, cmd::async_event_request());
        assert!(d.reap(0).is_none(), "AER is held");

        // SQ tail beyond the queue size.
        d.write32(0x1008, 4);
        let c = d.reap(0).expect("AER completes");
        assert_eq!(c.cid, aer_cid);
        assert_eq!(
            c.dw0, 0x0001_0100,
            "error event, invalid doorbell value, error log"
        );
        d.ring_cq(0);
        assert_eq!(d.ctrl.stats().reads + d.ctrl.stats().writes, 0);

        // Doorbells of queues that do not exist; masked until the error log is read.
        d.write32(0x1000 + 8 * 7, 1);
        d.write32(0x1000 + 8 * 7 + 4, 1);
        d.ctrl.sq_doorbell(u16::MAX, 0);
        d.ctrl.cq_doorbell(u16::MAX, 0);
        // CQ head beyond the tail.
        d.write32(0x100c, 2);
        assert_eq!(d.ctrl.stats().invalid_doorbell_writes, 6);
        assert_eq!(d.read32(regs::CSTS) & 3, regs::CSTS_RDY);

        let c = d.admin(cmd::get_log_page(1, 16, DATA));
        assert!(c.status.is_success());
        d.write32(0x1000 + 8 * 9, 1);
        let aer = d.submit(0, cmd::async_event_request());
        let c = d.reap(0).expect("queued event completes the next AER");
        assert_eq!((c.cid, c.dw0), (aer, 0x0001_0000));
        d.ring_cq(0);

        // The queue still works.
        assert!(d.io(1, cmd::flush()).status.is_success());
    }

    #[test]
    fn doorbells_before_enable_are_ignored() {
        let mut d = Driver::disabled(ControllerConfig::default(), MemEngine::new(1 << 20));
        d.ctrl.sq_doorbell(0, 1);
        d.ctrl.cq_doorbell(0, 1);
        assert_eq!(d.ctrl.stats().invalid_doorbell_writes, 2);
        assert_eq!(d.ctrl.stats().admin_commands, 0);
    }

    #[test]
    fn sq_doorbell_call_equals_bar_write() {
        let mut d = Driver::new();
        d.create_io_queues(1, 8, 8);
        d.push(1, cmd::flush());
        d.push(1, cmd::flush());
        d.ctrl.sq_doorbell(1, 2);
        d.ctrl.process_completions();
        assert!(d.reap(1).is_some());
        assert!(d.reap(1).is_some());
        d.ctrl.cq_doorbell(1, 2);
        assert_eq!(d.ctrl.stats().flushes, 2);
    }

    #[test]
    fn full_cq_defers_completions_until_the_head_moves() {
        let mut d = Driver::new();
        // CQ of 4 entries holds 3 completions.
        d.create_io_queues(1, 8, 4);
        let cids: Vec<u16> = (0..6).map(|_| d.push(1, cmd::flush())).collect();
        d.ring(1);
        assert_eq!(d.ctrl.process_completions(), 3);
        assert_eq!(d.ctrl.stats().cq_full_waits, 3);
        let got: Vec<u16> = std::iter::from_fn(|| d.reap(1)).map(|c| c.cid).collect();
        assert_eq!(got, cids[..3]);
        d.ring_cq(1);
        let got: Vec<u16> = std::iter::from_fn(|| d.reap(1)).map(|c| c.cid).collect();
        assert_eq!(got, cids[3..]);
        d.ring_cq(1);
        assert_eq!(d.ctrl.stats().cqes_posted, 6 + 2);
    }

    #[test]
    fn full_admin_cq_stops_fetching() {
        let mut d =
            Driver::with_admin_size(ControllerConfig::default(), MemEngine::new(1 << 20), 8, 2);
        let cids: Vec<u16> = (0..3).map(|_| d.push(0, cmd::keep_alive())).collect();
        d.ring(0);
        assert_eq!(
            d.ctrl.stats().admin_commands,
            2,
            "stopped fetching when the CQ backed up"
        );
        assert_eq!(d.reap(0).unwrap().cid, cids[0]);
        assert!(d.reap(0).is_none());
        d.ring_cq(0);
        assert_eq!(d.reap(0).unwrap().cid, cids[1]);
        d.ring_cq(0);
        assert_eq!(d.reap(0).unwrap().cid, cids[2]);
        d.ring_cq(0);
        assert_eq!(d.ctrl.stats().admin_commands, 3);
    }

    #[test]
    fn phase_tag_wraps_over_many_laps() {
        let mut d = Driver::new();
        d.create_io_queues(1, 4, 3);
        for _ in 0..20 {
            let cid = d.submit(1, cmd::flush());
            d.ctrl.process_completions();
            // `reap` checks the phase tag the driver expects on this lap.
            let c = d.reap(1).expect("completion with the expected phase");
            assert_eq!(c.cid, cid);
            assert_eq!(c.sq_id, 1);
            d.ring_cq(1);
        }
        assert!(d.reap(1).is_none());
    }

    #[test]
    fn interrupts_fire_for_ien_queues_only() {
        let mut d = Driver::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        d.ctrl
            .set_interrupt(Box::new(move |v| s.lock().unwrap().push(v)));
        d.admin(cmd::keep_alive());
        assert_eq!(*seen.lock().unwrap(), [0], "admin CQ uses vector 0");
        seen.lock().unwrap().clear();

        assert!(d.create_cq(1, 4, Some(5)).status.is_success());
        assert!(d.create_cq(2, 4, None).status.is_success());
        assert!(d.create_sq(1, 4, 1).status.is_success());
        assert!(d.create_sq(2, 4, 2).status.is_success());
        seen.lock().unwrap().clear();
        d.io(1, cmd::flush());
        assert_eq!(*seen.lock().unwrap(), [5]);
        seen.lock().unwrap().clear();
        d.io(2, cmd::flush());
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn address_space_can_be_replaced() {
        let mut d = Driver::new();
        d.create_io_queues(1, 4, 4);
        let other = GuestMem::new(4);
        d.ctrl.set_address_space(other.arc());
        // The queues are now unmapped: fetching is fatal, not a crash.
        d.write32(0x1008, 1);
        assert_eq!(d.read32(regs::CSTS) & 2, 2);
        d.ctrl.set_address_space(d.mem.arc());
        d.write32(regs::CC, 0);
        d.enable();
        assert!(d.admin(cmd::keep_alive()).status.is_success());
    }

    #[test]
    fn replaced_space_stays_alive_while_requests_are_in_flight() {
        let mut d = Driver::new();
        d.create_io_queues(1, 4, 4);
        d.gate().hold = true;
        d.submit(1, cmd::read(0, 8, DATA, 0));
        d.ctrl.set_address_space(Arc::new(AddressSpace::new()));
        assert_eq!(d.ctrl.retired.len(), 1);
        d.gate().hold = false;
        d.ctrl.process_completions();
        assert!(d.ctrl.retired.is_empty());
    }
}
