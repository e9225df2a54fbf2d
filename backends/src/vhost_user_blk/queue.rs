//! One request queue: pops chains, hands them to this queue's own engine, and posts the
//! completions to the used ring. One thread owns a worker; nothing here is shared with the
//! other queues.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

use iommu::{AddressSpace, DmaSlice};

use super::chain::{self, Desc};
use super::config::Device;
use super::inflight::{Chain, InFlight};
use super::inflight_region::Tracker;
use super::request::{self, Op, Rejected, Request, S_IOERR, S_OK, S_UNSUPP};
use crate::engine::{
    BlockEngine, BlockOp, BlockRequest, Completion, CompletionError, SubmitErrorKind,
};

pub use crate::vhost_user::ring::Ring;

/// Passes one [`Worker::run`] makes before giving the locks back.
pub const RUN_BUDGET: u32 = 64;

/// How a [`Worker::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Nothing left for now; notifications are re-armed (unless the engine is full, when its
    /// completions wake the queue). `worked`: anything happened.
    Idle { worked: bool },
    /// The budget ran out with work left; notifications are still off: call again.
    More,
}

/// Cheap event counters (the hot path does not log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub chains: u64,
    /// Chains that could not be walked or had no status byte (used length 0).
    pub dropped: u64,
    /// Chains answered IOERR/UNSUPP without reaching the engine.
    pub rejected: u64,
    /// Used-ring entries that could not be written.
    pub lost: u64,
    /// Requests that waited for room in the engine.
    pub backlogged: u64,
    /// Chains a previous backend took and did not finish, redone from the inflight region.
    pub resubmitted: u64,
}

pub struct Worker {
    // Field order matters: the engine drops first, and its `Drop` waits for the kernel to let
    // go of every buffer before `backlog` and `inflight` release the mappings they hold.
    engine: Box<dyn BlockEngine>,
    backlog: VecDeque<BlockRequest>,
    inflight: InFlight,
    space: Arc<AddressSpace>,
    device: Arc<Device>,
    descs: Vec<Desc>,
    done: Vec<Completion>,
    /// Used entries added since the driver was last signalled.
    posted: u32,
    /// Where the avail index lives and what we last saw in it, for lock-free polling.
    avail_idx_at: Option<u64>,
    next_avail: u16,
    /// The queue's part of the inflight region, once the frontend handed one over.
    tracker: Option<Tracker>,
    stats: Stats,
}

impl Worker {
    pub fn new(engine: Box<dyn BlockEngine>, device: Arc<Device>) -> Self {
        Worker {
            engine,
            backlog: VecDeque::new(),
            inflight: InFlight::default(),
            space: Arc::new(AddressSpace::new()),
            device,
            descs: Vec::new(),
            done: Vec::new(),
            posted: 0,
            avail_idx_at: None,
            next_avail: 0,
            tracker: None,
            stats: Stats::default(),
        }
    }

    /// Takes a new memory table; chains in flight keep the old one.
    pub fn set_space(&mut self, space: Arc<AddressSpace>) {
        self.space = space;
    }

    /// Tracks chains in `tracker` from now on (`None`: not at all).
    pub fn set_tracker(&mut self, tracker: Option<Tracker>) {
        self.tracker = tracker;
    }

    /// The ring is (re)starting: before the next chain, redo what the region says a previous
    /// backend left unfinished.
    pub fn restart_tracking(&mut self) {
        if let Some(t) = &mut self.tracker {
            t.restart();
        }
    }

    pub fn completion_fd(&self) -> Option<RawFd> {
        self.engine.completion_fd()
    }

    /// Chains handed to the engine and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Consumes the engine's completion eventfd (level-triggered epoll would spin otherwise).
    pub fn clear_completion_fd(&self) {
        if let Some(fd) = self.engine.completion_fd() {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into `count` from the engine's non-blocking eventfd, which
            // stays open while the engine lives; EAGAIN (nothing to read) is fine.
            unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
        }
    }

    /// Handles what the ring and the engine have, then re-arms notifications (checking for
    /// chains that raced with that) and signals the driver. Stops after [`RUN_BUDGET`] passes
    /// so that a guest that never stops submitting cannot keep the locks from the frontend's
    /// control messages: [`Run::More`] asks the caller to come back.
    pub fn run(&mut self, ring: &mut impl Ring) -> Run {
        let mut worked = false;
        let mut passes = 0;
        let mut idle_rounds = 0;
        loop {
            ring.disable_notification();
            let mut progress = false;
            while passes < RUN_BUDGET && self.step(ring) {
                progress = true;
                passes += 1;
            }
            worked |= progress;
            if passes >= RUN_BUDGET {
                self.signal(ring);
                return Run::More;
            }
            idle_rounds = if progress { 0 } else { idle_rounds + 1 };
            // The engine is full: its completions wake us, notifications can stay off.
            if !self.backlog.is_empty() || !ring.is_live() || !ring.enable_notification() {
                break;
            }
            // Chains raced with re-arming, so go again; but a ring that claims chains and
            // yields none (a bogus avail index) must not keep us spinning.
            if idle_rounds >= 2 {
                break;
            }
        }
        self.signal(ring);
        Run::Idle { worked }
    }

    /// One pass without re-arming notifications (the poll loop keeps them off); `true` if
    /// anything happened.
    pub fn step(&mut self, ring: &mut impl Ring) -> bool {
        let mut progress = self.complete(ring);
        progress |= self.retry_backlog();
        if ring.is_live() {
            self.check_inflight(ring);
            while self.backlog.is_empty() {
                let Some(head) = self.next_head(ring) else {
                    break;
                };
                self.start(head, ring);
                progress = true;
            }
        }
        self.submit();
        progress |= self.complete(ring);
        self.avail_idx_at = ring.avail_ring().checked_add(2);
        self.next_avail = ring.next_avail();
        progress
    }

    /// A restarted ring: queues what the inflight region says is unfinished and moves the
    /// ring's next-avail index past it (`vu_check_queue_inflights`). Chains still in flight
    /// here mean the ring never stopped (a new kick descriptor only): nothing to redo.
    fn check_inflight(&mut self, ring: &mut impl Ring) {
        let Some(tracker) = self.tracker.as_mut().filter(|t| t.check_pending()) else {
            return;
        };
        if !self.inflight.is_empty() || !self.backlog.is_empty() {
            tracker.check_pending_done();
            return;
        }
        let Some(used) = ring.used_idx() else {
            return;
        };
        if let Some(next) = tracker.check(used, ring.size()) {
            let redo = next.wrapping_sub(used);
            if redo > 0 {
                log::info!("redoing {redo} request(s) a previous backend left unfinished");
            }
            ring.set_next_avail(next);
        }
    }

    /// The next chain: one to redo, else a new one from the ring (marked in the region).
    fn next_head(&mut self, ring: &mut impl Ring) -> Option<u16> {
        if let Some(head) = self.tracker.as_mut().and_then(Tracker::next_resubmit) {
            self.stats.resubmitted += 1;
            return Some(head);
        }
        let head = ring.pop_head()?;
        if let Some(t) = &mut self.tracker {
            t.popped(head);
        }
        Some(head)
    }

    /// Signals the driver if entries were added since the last signal.
    pub fn signal(&mut self, ring: &mut impl Ring) {
        if self.posted > 0 {
            self.posted = 0;
            ring.signal();
        }
    }

    /// Whether the poll loop has something to do: chains the driver published since the last
    /// pass (read without the ring lock: a hint, the pop re-reads it properly) or finished
    /// engine requests (moved aside for the next pass).
    pub fn has_work(&mut self) -> bool {
        self.engine.reap(&mut self.done);
        if !self.done.is_empty() {
            return true;
        }
        let Some(at) = self.avail_idx_at else {
            return false;
        };
        let mut idx = [0u8; 2];
        self.space.read(at, &mut idx).is_ok() && u16::from_le_bytes(idx) != self.next_avail
    }

    /// Completes every chain in flight without taking new ones (the ring is being stopped,
    /// the frontend went away, or the daemon is exiting).
    pub fn drain(&mut self, ring: &mut impl Ring) {
        loop {
            self.complete(ring);
            self.retry_backlog();
            self.submit();
            self.complete(ring);
            if self.inflight.is_empty() {
                break;
            }
            if let Err(e) = self.engine.wait(1) {
                log::error!("abandoning {} in-flight requests: {e}", self.inflight.len());
                break;
            }
        }
        self.signal(ring);
    }

    /// Walks, checks and starts the chain at `head`.
    fn start(&mut self, head: u16, ring: &mut impl Ring) {
        self.stats.chains += 1;
        let space = self.space.clone();
        self.descs.clear();
        if let Err(e) = chain::walk(
            &space,
            ring.desc_table(),
            ring.size(),
            head,
            &mut self.descs,
        ) {
            log::debug!("chain {head}: {e}");
            self.stats.dropped += 1;
            // A head outside the table cannot be named in the used ring.
            if head < ring.size() {
                self.post(ring, head, 0);
            } else {
                self.stats.lost += 1;
            }
            return;
        }
        match request::parse(&self.descs, &space, &self.device.config) {
            Ok(Request { status, op }) => self.dispatch(head, status, op, space, ring),
            Err(Rejected {
                status: Some(status),
                error,
            }) => {
                log::debug!("chain {head}: {error}");
                self.stats.rejected += 1;
                write_status(status, error.status());
                self.post(ring, head, 1);
            }
            Err(Rejected {
                status: None,
                error,
            }) => {
                log::debug!("chain {head}: {error}");
                self.stats.dropped += 1;
                self.post(ring, head, 0);
            }
        }
    }

    fn dispatch(
        &mut self,
        head: u16,
        status: DmaSlice,
        op: Op,
        space: Arc<AddressSpace>,
        ring: &mut impl Ring,
    ) {
        let written = op.written();
        let single = |op, offset, len, segments| {
            vec![BlockRequest {
                op,
                offset,
                len,
                segments,
                tag: 0,
            }]
        };
        let (requests, durable) = match op {
            Op::GetId { segments } => {
                copy_into(&segments, &self.device.config.id());
                write_status(status, S_OK);
                self.post(ring, head, written + 1);
                return;
            }
            Op::Read { offset, segments } => (single(BlockOp::Read, offset, 0, segments), false),
            Op::Write { offset, segments } => (single(BlockOp::Write, offset, 0, segments), true),
            Op::Flush => (single(BlockOp::Flush, 0, 0, Vec::new()), false),
            Op::Ranges(ranges) => (
                ranges
                    .iter()
                    .map(|r| BlockRequest {
                        op: r.op,
                        offset: r.offset,
                        len: r.len,
                        segments: Vec::new(),
                        tag: 0,
                    })
                    .collect(),
                true,
            ),
        };
        if requests.is_empty() {
            write_status(status, S_OK);
            self.post(ring, head, 1);
            return;
        }
        let mut chain = Chain::new(head, status, space);
        chain.written = written;
        chain.remaining = requests.len() as u32;
        chain.flush_after = durable && !self.device.writeback();
        let tag = self.inflight.insert(chain);
        for mut r in requests {
            r.tag = tag;
            self.push(r);
        }
    }

    /// Hands a request to the engine, or queues it behind earlier ones if the engine is full.
    fn push(&mut self, request: BlockRequest) {
        if !self.backlog.is_empty() {
            self.stats.backlogged += 1;
            self.backlog.push_back(request);
            return;
        }
        // SAFETY: the segments were translated through an address space that the chain's slot
        // in `inflight` keeps alive (`Chain::space`) until this request's completion is
        // reaped; the engine is dropped before `inflight` (field order).
        match unsafe { self.engine.push(request) } {
            Ok(()) => {}
            Err(e) if e.reason == SubmitErrorKind::Full => {
                self.stats.backlogged += 1;
                self.backlog.push_back(e.request);
            }
            Err(e) => self.fail(e.request.tag, e.reason),
        }
    }

    fn retry_backlog(&mut self) -> bool {
        let mut progress = false;
        while let Some(request) = self.backlog.pop_front() {
            // SAFETY: as in `push`.
            match unsafe { self.engine.push(request) } {
                Ok(()) => progress = true,
                Err(e) if e.reason == SubmitErrorKind::Full => {
                    self.backlog.push_front(e.request);
                    break;
                }
                Err(e) => {
                    self.fail(e.request.tag, e.reason);
                    progress = true;
                }
            }
        }
        progress
    }

    /// Records a request the engine refused as failed; `complete` finishes it.
    fn fail(&mut self, tag: u64, reason: SubmitErrorKind) {
        let errno = match reason {
            SubmitErrorKind::Io(errno) => errno,
            SubmitErrorKind::Full => libc::EAGAIN,
        };
        self.done.push(Completion {
            tag,
            result: Err(CompletionError::Io(errno)),
        });
    }

    fn submit(&mut self) {
        // Entries stay queued in the ring on failure and go with the next submit.
        if let Err(e) = self.engine.submit() {
            log::warn!("io_uring submit failed: {e}");
        }
    }

    /// Posts every finished chain; `true` if any request finished.
    fn complete(&mut self, ring: &mut impl Ring) -> bool {
        self.engine.reap(&mut self.done);
        if self.done.is_empty() {
            return false;
        }
        let mut done = std::mem::take(&mut self.done);
        for c in done.drain(..) {
            let Some(chain) = self.inflight.get_mut(c.tag) else {
                log::error!("completion for unknown request {}", c.tag);
                continue;
            };
            chain.remaining -= 1;
            if let Err(e) = c.result {
                if chain.code == S_OK {
                    chain.code = status_of(e);
                }
            }
            if chain.remaining > 0 {
                continue;
            }
            if chain.code == S_OK && chain.flush_after {
                chain.flush_after = false;
                chain.remaining = 1;
                self.push(BlockRequest {
                    op: BlockOp::Flush,
                    offset: 0,
                    len: 0,
                    segments: Vec::new(),
                    tag: c.tag,
                });
                continue;
            }
            if let Some(chain) = self.inflight.remove(c.tag) {
                write_status(chain.status, chain.code);
                let len = if chain.code == S_OK {
                    chain.written.saturating_add(1)
                } else {
                    1
                };
                self.post(ring, chain.head, len);
            }
        }
        // Keep the allocation; failures recorded meanwhile are kept too.
        done.append(&mut self.done);
        self.done = done;
        true
    }

    fn post(&mut self, ring: &mut impl Ring, head: u16, len: u32) {
        if let Some(t) = &mut self.tracker {
            t.before_used(head);
        }
        if ring.add_used(head, len) {
            self.posted += 1;
        } else {
            self.stats.lost += 1;
        }
        // A used entry that could not be written is not redone either: the ring is broken.
        if let Some(t) = &mut self.tracker {
            t.after_used(head, ring.next_used());
        }
    }
}

fn status_of(e: CompletionError) -> u8 {
    match e {
        CompletionError::Unsupported => S_UNSUPP,
        _ => S_IOERR,
    }
}

fn write_status(status: DmaSlice, code: u8) {
    // SAFETY: `status` was translated for a 1-byte write, and the address space it came from is
    // alive: the caller holds it (or the chain's slot does).
    unsafe { status.as_ptr().write_volatile(code) };
}

/// Copies `data` into the guest buffers `segments`, as far as they reach.
fn copy_into(segments: &[DmaSlice], data: &[u8]) {
    let mut at = 0;
    for s in segments {
        let n = s.len().min(data.len() - at);
        // SAFETY: each segment was translated for writing, and its address space is held by
        // the caller; `data[at..at + n]` is in bounds.
        unsafe { std::ptr::copy_nonoverlapping(data[at..].as_ptr(), s.as_ptr(), n) };
        at += n;
        if at == data.len() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::RawFd;
    use std::sync::Arc;

    use virtio_bindings::virtio_blk::{
        VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    };
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::split::Descriptor as SplitDesc;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::super::config::BlkConfig;
    use super::super::memory::address_space;
    use super::super::testing::{header, range};
    use super::*;
    use crate::engine::{MemEngine, MemHandle, MemOp, NullConfig, NullEngine, SubmitError};
    use crate::vhost_user::ring::QueueRing;

    const QSIZE: u16 = 16;

    /// The driver side: lays out chains in the mock queue and reads the used ring.
    struct Driver<'a> {
        q: MockSplitQueue<'a, GuestMemoryMmap>,
        mem: &'a GuestMemoryMmap,
        next_desc: u16,
        avail: u16,
        used_seen: u16,
    }

    impl<'a> Driver<'a> {
        fn new(mem: &'a GuestMemoryMmap) -> Self {
            Driver {
                q: MockSplitQueue::create(mem, GuestAddress(0), QSIZE),
                mem,
                next_desc: 0,
                avail: 0,
                used_seen: 0,
            }
        }

        fn ring(&self) -> QueueRing<'a> {
            QueueRing::new(self.q.create_queue::<Queue>().unwrap(), self.mem)
        }

        /// Writes a chain of (address, length, device-writable) buffers and publishes it.
        fn chain(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
            let head = self.next_desc;
            for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
                let index = (head + i as u16) % QSIZE;
                let mut flags = if writable {
                    VRING_DESC_F_WRITE as u16
                } else {
                    0
                };
                if i + 1 < bufs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                let d = SplitDesc::new(addr, len, flags, (index + 1) % QSIZE);
                self.q
                    .desc_table()
                    .store(index, RawDescriptor::from(d))
                    .unwrap();
            }
            self.next_desc = (head + bufs.len() as u16) % QSIZE;
            self.publish(head);
            head
        }

        fn publish(&mut self, head: u16) {
            let slot = self.avail % QSIZE;
            self.q
                .avail()
                .ring()
                .ref_at(slot as usize)
                .unwrap()
                .store(head);
            self.avail = self.avail.wrapping_add(1);
            self.q.avail().idx().store(self.avail);
        }

        /// Used entries since the last call: (head, length).
        fn used(&mut self) -> Vec<(u32, u32)> {
            let idx = self.q.used().idx().load();
            let mut out = Vec::new();
            while self.used_seen != idx {
                let e = self
                    .q
                    .used()
                    .ring()
                    .ref_at((self.used_seen % QSIZE) as usize)
                    .unwrap()
                    .load();
                out.push((e.id(), e.len()));
                self.used_seen = self.used_seen.wrapping_add(1);
            }
            out
        }
    }

    fn guest() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100000)]).unwrap()
    }

    fn config() -> BlkConfig {
        BlkConfig {
            capacity: 1 << 20,
            block_size: 512,
            read_only: false,
            num_queues: 1,
            queue_size: QSIZE,
            serial: "unit-serial".into(),
        }
    }

    fn worker(mem: &GuestMemoryMmap, engine: impl BlockEngine + 'static) -> Worker {
        let mut w = Worker::new(Box::new(engine), Arc::new(Device::new(config())));
        w.set_space(Arc::new(address_space(Arc::new(mem.clone())).unwrap()));
        w
    }

    fn mem_engine() -> (MemEngine, MemHandle) {
        let e = MemEngine::new(1 << 20);
        let h = e.handle();
        (e, h)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }

    fn write(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) {
        mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    fn status(mem: &GuestMemoryMmap, addr: u64) -> u8 {
        read(mem, addr, 1)[0]
    }

    /// An OUT chain: header at 0x1000, data at `data`, status at 0x2000.
    fn out_chain(d: &mut Driver, mem: &GuestMemoryMmap, sector: u64, data: u64, len: u32) -> u16 {
        write(mem, 0x1000, &header(VIRTIO_BLK_T_OUT, sector));
        write(mem, 0x2000, &[0xff]);
        d.chain(&[(0x1000, 16, false), (data, len, false), (0x2000, 1, true)])
    }

    fn in_chain(d: &mut Driver, mem: &GuestMemoryMmap, sector: u64, data: u64, len: u32) -> u16 {
        write(mem, 0x1100, &header(VIRTIO_BLK_T_IN, sector));
        write(mem, 0x2100, &[0xff]);
        d.chain(&[(0x1100, 16, false), (data, len, true), (0x2100, 1, true)])
    }

    #[test]
    fn data_goes_straight_between_guest_memory_and_the_engine() {
        let mem = guest();
        let (engine, disk) = mem_engine();
        let mut w = worker(&mem, engine);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();

        let data = pattern(4096, 3);
        write(&mem, 0x10000, &data);
        let h = out_chain(&mut d, &mem, 2, 0x10000, 4096);
        w.run(&mut ring);
        assert_eq!(d.used(), vec![(u32::from(h), 1)]);
        assert_eq!(status(&mem, 0x2000), S_OK);
        assert_eq!(disk.read(1024, 4096), data);
        assert_eq!(ring.signals, 1);

        let h = in_chain(&mut d, &mem, 2, 0x20000, 4096);
        w.run(&mut ring);
        assert_eq!(d.used(), vec![(u32::from(h), 4097)]);
        assert_eq!(status(&mem, 0x2100), S_OK);
        assert_eq!(read(&mem, 0x20000, 4096), data);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.stats().chains, 2);
    }

    #[test]
    fn write_through_flushes_before_completing() {
        let mem = guest();
        let (engine, disk) = mem_engine();
        let mut w = worker(&mem, engine);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();
        let ops = |disk: &MemHandle| disk.ops().iter().map(|o| o.op).collect::<Vec<_>>();

        out_chain(&mut d, &mem, 0, 0x10000, 512);
        w.run(&mut ring);
        assert_eq!(ops(&disk), vec![BlockOp::Write]);
        w.device.set_writeback(false);
        out_chain(&mut d, &mem, 0, 0x10000, 512);
        w.run(&mut ring);
        assert_eq!(
            ops(&disk),
            vec![BlockOp::Write, BlockOp::Write, BlockOp::Flush]
        );
        assert_eq!(d.used().len(), 2);
        assert_eq!(status(&mem, 0x2000), S_OK);
    }

    #[test]
    fn engine_failures_become_status_codes() {
        let mem = guest();
        let (engine, disk) = mem_engine();
        let mut w = worker(&mem, engine);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();

        disk.fail_next(CompletionError::Io(libc::EIO));
        let h = in_chain(&mut d, &mem, 0, 0x20000, 512);
        w.run(&mut ring);
        assert_eq!(d.used(), vec![(u32::from(h), 1)], "only the status byte");
        assert_eq!(status(&mem, 0x2100), S_IOERR);

        disk.fail_next(CompletionError::Unsupported);
        in_chain(&mut d, &mem, 0, 0x20000, 512);
        w.run(&mut ring);
        assert_eq!(status(&mem, 0x2100), S_UNSUPP);

        // The next request is unaffected.
        in_chain(&mut d, &mem, 0, 0x20000, 512);
        w.run(&mut ring);
        assert_eq!(status(&mem, 0x2100), S_OK);
    }

    #[test]
    fn multi_range_write_zeroes_completes_once() {
        let mem = guest();
        let (engine, disk) = mem_engine();
        disk.write(0, &[0xaa; 8192]);
        let mut w = worker(&mem, engine);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();
        write(&mem, 0x1000, &header(VIRTIO_BLK_T_WRITE_ZEROES, 0));
        write(&mem, 0x3000, &range(0, 2, 0));
        write(&mem, 0x3010, &range(8, 4, 1));
        let h = d.chain(&[(0x1000, 16, false), (0x3000, 32, false), (0x2000, 1, true)]);
        w.run(&mut ring);
        assert_eq!(d.used(), vec![(u32::from(h), 1)]);
        assert_eq!(status(&mem, 0x2000), S_OK);
        let ops: Vec<_> = disk.ops().iter().map(|o| (o.op, o.offset, o.len)).collect();
        assert_eq!(
            ops,
            vec![
                (BlockOp::WriteZeroes, 0, 1024),
                (BlockOp::Discard, 4096, 2048)
            ]
        );
        assert_eq!(disk.read(0, 1024), vec![0; 1024]);
        assert_eq!(disk.read(1024, 3072), vec![0xaa; 3072]);
        assert_eq!(disk.read(4096, 2048), vec![0; 2048]);
    }

    #[test]
    fn bad_chains_are_answered_and_the_queue_keeps_going() {
        let mem = guest();
        let (engine, disk) = mem_engine();
        let mut w = worker(&mem, engine);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();

        // A descriptor loop: 0 -> 1 -> 0.
        let raw = |addr, next| {
            RawDescriptor::from(SplitDesc::new(addr, 16, VRING_DESC_F_NEXT as u16, next))
        };
        d.q.desc_table().store(0, raw(0x1000, 1)).unwrap();
        d.q.desc_table().store(1, raw(0x1000, 0)).unwrap();
        d.next_desc = 2;
        d.publish(0);
        // Out-of-RAM data buffer.
        write(&mem, 0x1100, &header(VIRTIO_BLK_T_IN, 0));
        write(&mem, 0x2100, &[0xff]);
        let bad = d.chain(&[
            (0x1100, 16, false),
            (0x200000, 512, true),
            (0x2100, 1, true),
        ]);
        w.run(&mut ring);
        assert_eq!(d.used(), vec![(0, 0), (u32::from(bad), 1)]);
        assert_eq!(status(&mem, 0x2100), S_IOERR);
        assert!(disk.ops().is_empty(), "nothing reached the engine");

        let good = in_chain(&mut d, &mem, 0, 0x20000, 512);
        w.run(&mut ring);
        assert_eq!(d.used(), vec![(u32::from(good), 513)]);
        assert_eq!(status(&mem, 0x2100), S_OK);
        let s = w.stats();
        assert_eq!((s.chains, s.dropped, s.rejected), (3, 1, 1));
    }

    #[test]
    fn get_id_writes_the_serial() {
        let mem = guest();
        let mut w = worker(&mem, mem_engine().0);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();
        write(&mem, 0x1000, &header(VIRTIO_BLK_T_GET_ID, 0));
        write(&mem, 0x30000, &[0xee; 32]);
        let h = d.chain(&[(0x1000, 16, false), (0x30000, 32, true), (0x2000, 1, true)]);
        w.run(&mut ring);
        assert_eq!(d.used(), vec![(u32::from(h), 21)]);
        let id = read(&mem, 0x30000, 32);
        assert_eq!(&id[..20], b"unit-serial\0\0\0\0\0\0\0\0\0");
        assert_eq!(&id[20..], &[0xee; 12]);
    }

    #[test]
    fn a_full_engine_backlogs_requests_in_order() {
        let mem = guest();
        let engine = MemEngine::new(1 << 20).with_queue_depth(1);
        let disk = engine.handle();
        let mut w = worker(&mem, engine);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();
        let mut heads = Vec::new();
        for i in 0..4u64 {
            write(&mem, 0x1000 + i * 0x100, &header(VIRTIO_BLK_T_OUT, i));
            heads.push(d.chain(&[
                (0x1000 + i * 0x100, 16, false),
                (0x10000, 512, false),
                (0x2000 + i, 1, true),
            ]));
        }
        w.run(&mut ring);
        let used: Vec<_> = d.used().iter().map(|u| u.0 as u16).collect();
        assert_eq!(used, heads);
        let offsets: Vec<_> = disk.ops().iter().map(|o: &MemOp| o.offset).collect();
        assert_eq!(offsets, vec![0, 512, 1024, 1536]);
        assert!(w.stats().backlogged > 0);
    }

    /// Completes requests only when waited for: requests stay in flight across `run`.
    struct HoldEngine {
        inner: NullEngine,
        released: bool,
    }

    impl BlockEngine for HoldEngine {
        fn capacity(&self) -> u64 {
            self.inner.capacity()
        }
        fn block_size(&self) -> u32 {
            512
        }
        fn read_only(&self) -> bool {
            false
        }
        fn queue_depth(&self) -> usize {
            self.inner.queue_depth()
        }
        unsafe fn push(&mut self, request: BlockRequest) -> Result<(), SubmitError> {
            // SAFETY: forwarded contract.
            unsafe { self.inner.push(request) }
        }
        fn submit(&mut self) -> Result<usize, SubmitErrorKind> {
            self.inner.submit()
        }
        fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
            if self.released {
                self.inner.reap(out)
            } else {
                0
            }
        }
        fn wait(&mut self, _min: usize) -> Result<(), SubmitErrorKind> {
            self.released = true;
            Ok(())
        }
        fn completion_fd(&self) -> Option<RawFd> {
            None
        }
        fn in_flight(&self) -> usize {
            self.inner.in_flight()
        }
    }

    #[test]
    fn drain_completes_in_flight_chains_and_keeps_old_memory_alive_until_then() {
        let mem = guest();
        let engine = HoldEngine {
            inner: NullEngine::new(NullConfig {
                capacity: 1 << 20,
                block_size: 512,
                read_only: false,
                queue_depth: 16,
            }),
            released: false,
        };
        let mut w = worker(&mem, engine);
        let old = Arc::new(address_space(Arc::new(mem.clone())).unwrap());
        let watch = Arc::downgrade(&old);
        w.set_space(old);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();
        let h = in_chain(&mut d, &mem, 0, 0x20000, 512);
        w.run(&mut ring);
        assert!(d.used().is_empty());
        assert_eq!(w.in_flight(), 1);
        assert!(!w.has_work(), "nothing new to poll for");

        // A new memory table arrives while the read is in flight.
        w.set_space(Arc::new(address_space(Arc::new(mem.clone())).unwrap()));
        assert!(
            watch.upgrade().is_some(),
            "the in-flight chain holds the old table"
        );
        w.drain(&mut ring);
        assert_eq!(d.used(), vec![(u32::from(h), 513)]);
        assert_eq!(w.in_flight(), 0);
        assert!(watch.upgrade().is_none());
        assert_eq!(ring.signals, 1);
    }

    #[test]
    fn a_bogus_avail_index_does_not_spin_the_queue() {
        let mem = guest();
        let mut w = worker(&mem, mem_engine().0);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();
        // More chains "available" than the ring holds: virtio-queue refuses to pop any.
        d.q.avail().idx().store(QSIZE + 5);
        assert_eq!(w.run(&mut ring), Run::Idle { worked: false });
        assert!(d.used().is_empty());
    }

    #[test]
    fn the_poll_hint_sees_published_chains() {
        let mem = guest();
        let mut w = worker(&mem, mem_engine().0);
        let mut d = Driver::new(&mem);
        let mut ring = d.ring();
        w.run(&mut ring);
        assert!(!w.has_work());
        in_chain(&mut d, &mem, 0, 0x20000, 512);
        assert!(w.has_work());
        assert!(w.step(&mut ring));
        assert!(!w.has_work());
        assert!(!w.step(&mut ring));
    }
}
