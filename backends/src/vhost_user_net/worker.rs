//! One queue pair (and, on pair 0 with MQ, the control queue): pops TX and RX chains, hands
//! them to this pair's own engine and posts completions to the used rings. One thread owns a
//! worker; nothing here is shared with the other pairs.
//!
//! Receives go one at a time, so frames reach the guest in the order the engine delivers
//! them. With MRG_RXBUF a receive gathers RX chains until they hold the largest frame the
//! guest negotiated; the chains a frame did not need go back to the pool for the next one.

use std::collections::VecDeque;
use std::sync::Arc;

use iommu::AddressSpace;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_ERR, VIRTIO_NET_OK,
};

use super::config::Limits;
use super::frame::{self, FrameError};
use crate::net::header::{HDR_LEN, NUM_BUFFERS_OFFSET};
use crate::net::{Dir, EngineStats, FrameCompletion, FrameRequest, NetEngine};
use crate::vhost_user::chain::{self, Desc};
pub use crate::vhost_user_blk::queue::Ring;

/// Chains one pass takes from a ring before looking at the others.
const PASS_BUDGET: usize = 64;

/// Cheap event counters (the hot path does not log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub tx_frames: u64,
    pub rx_frames: u64,
    /// Chains that could not be walked (loops, bad indices, tables outside memory).
    pub bad_chains: u64,
    /// TX chains with a device-writable buffer, RX chains with a readable one.
    pub wrong_direction: u64,
    /// Chains too short for a vnet header (and, for TX, an Ethernet header).
    pub too_short: u64,
    /// Buffers outside guest memory.
    pub unmapped: u64,
    /// TX frames over the MTU (or GSO) limit.
    pub tx_oversized: u64,
    /// Received frames larger than the buffers (without MRG_RXBUF: than one RX chain).
    pub rx_oversized: u64,
    /// Transfers the engine failed.
    pub io_errors: u64,
    /// Used-ring entries that could not be written.
    pub lost: u64,
    /// RX chains given back empty when the queue stopped.
    pub rx_returned: u64,
    pub ctrl_commands: u64,
    pub engine: EngineStats,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.tx_frames += o.tx_frames;
        self.rx_frames += o.rx_frames;
        self.bad_chains += o.bad_chains;
        self.wrong_direction += o.wrong_direction;
        self.too_short += o.too_short;
        self.unmapped += o.unmapped;
        self.tx_oversized += o.tx_oversized;
        self.rx_oversized += o.rx_oversized;
        self.io_errors += o.io_errors;
        self.lost += o.lost;
        self.rx_returned += o.rx_returned;
        self.ctrl_commands += o.ctrl_commands;
        self.engine.tx_frames += o.engine.tx_frames;
        self.engine.rx_frames += o.engine.rx_frames;
        self.engine.overflow += o.engine.overflow;
        self.engine.unsegmentable += o.engine.unsegmentable;
    }

    /// Frames or chains dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.bad_chains
            + self.wrong_direction
            + self.too_short
            + self.unmapped
            + self.tx_oversized
            + self.rx_oversized
            + self.io_errors
            + self.engine.overflow
            + self.engine.unsegmentable
    }
}

/// An RX chain waiting for (or holding part of) a frame.
struct RxChain {
    head: u16,
    descs: Vec<Desc>,
    segments: Vec<iommu::DmaSlice>,
    len: usize,
}

enum InFlight {
    Tx { head: u16 },
    Rx { chains: Vec<RxChain> },
}

/// The rings of one pair, as the worker sees them for one pass.
pub struct Rings<'a, R: Ring> {
    pub rx: &'a mut R,
    pub tx: &'a mut R,
    pub ctrl: Option<&'a mut R>,
}

pub struct Worker {
    // Field order matters: the engine drops first, and its `Drop` waits for the kernel to let
    // go of every buffer before `inflight` and `spaces` release the mappings.
    engine: Box<dyn NetEngine>,
    inflight: Vec<Option<(InFlight, Arc<AddressSpace>)>>,
    free_tags: Vec<usize>,
    pool: VecDeque<(RxChain, Arc<AddressSpace>)>,
    receiving: bool,
    space: Arc<AddressSpace>,
    limits: Limits,
    queue_pairs: u16,
    descs: Vec<Desc>,
    done: Vec<FrameCompletion>,
    posted_rx: u32,
    posted_tx: u32,
    stats: Stats,
}

fn count(stats: &mut Stats, e: FrameError) {
    match e {
        FrameError::WritableTx | FrameError::ReadableRx => stats.wrong_direction += 1,
        FrameError::TooShort(_) => stats.too_short += 1,
        FrameError::Oversized { .. } => stats.tx_oversized += 1,
        FrameError::Unmapped { .. } => stats.unmapped += 1,
    }
}

impl Worker {
    pub fn new(engine: Box<dyn NetEngine>, limits: Limits, queue_pairs: u16) -> Self {
        Worker {
            engine,
            inflight: Vec::new(),
            free_tags: Vec::new(),
            pool: VecDeque::new(),
            receiving: false,
            space: Arc::new(AddressSpace::new()),
            limits,
            queue_pairs,
            descs: Vec::new(),
            done: Vec::new(),
            posted_rx: 0,
            posted_tx: 0,
            stats: Stats::default(),
        }
    }

    /// Takes a new memory table; transfers in flight keep the old one.
    pub fn set_space(&mut self, space: Arc<AddressSpace>) {
        self.space = space;
    }

    /// Applies negotiated features: frame limits and the guest's RX offloads.
    pub fn set_limits(&mut self, limits: Limits, offloads: u32) {
        self.limits = limits;
        if let Err(e) = self.engine.set_offloads(offloads) {
            log::warn!("cannot set offloads {offloads:#x}: {e}");
        }
    }

    pub fn completion_fd(&self) -> Option<std::os::fd::RawFd> {
        self.engine.completion_fd()
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

    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.engine = self.engine.stats();
        s
    }

    pub fn in_flight(&self) -> usize {
        self.engine.in_flight()
    }

    /// One pass over the rings and the engine; `true` if anything happened.
    pub fn step<R: Ring>(&mut self, rings: &mut Rings<'_, R>) -> bool {
        let mut progress = self.complete(rings);
        if let Some(ctrl) = rings.ctrl.as_deref_mut() {
            progress |= self.control(ctrl);
        }
        progress |= self.transmit(rings.tx);
        progress |= self.receive(rings.rx);
        if let Err(e) = self.engine.submit() {
            log::warn!("submit failed: {e}");
        }
        progress |= self.complete(rings);
        progress
    }

    /// Runs passes until nothing happens, re-arming notifications at the end (and going again
    /// if chains raced with that); signals the driver. Returns (worked, idle): not idle means
    /// the budget ran out with notifications still off, and the caller must come back.
    pub fn run<R: Ring>(&mut self, rings: &mut Rings<'_, R>, budget: u32) -> (bool, bool) {
        let mut worked = false;
        let mut idle = false;
        for _ in 0..budget {
            rings.rx.disable_notification();
            rings.tx.disable_notification();
            if !self.step(rings) {
                let mut raced = rings.tx.is_live() && rings.tx.enable_notification();
                raced |= rings.rx.is_live() && rings.rx.enable_notification();
                if let Some(ctrl) = rings.ctrl.as_deref_mut() {
                    raced |= ctrl.is_live() && ctrl.enable_notification();
                }
                if !raced {
                    idle = true;
                    break;
                }
            } else {
                worked = true;
            }
        }
        self.signal(rings);
        (worked, idle)
    }

    pub fn signal<R: Ring>(&mut self, rings: &mut Rings<'_, R>) {
        if self.posted_tx > 0 {
            self.posted_tx = 0;
            rings.tx.signal();
        }
        if self.posted_rx > 0 {
            self.posted_rx = 0;
            rings.rx.signal();
        }
    }

    /// Ends pending receives, waits for every transfer and gives the pooled RX chains back
    /// empty (the ring is being stopped, the frontend went away, or the daemon exits).
    pub fn drain<R: Ring>(&mut self, rings: &mut Rings<'_, R>) {
        self.engine.cancel_rx();
        loop {
            let _ = self.engine.submit();
            self.complete(rings);
            if self.engine.in_flight() == 0 {
                break;
            }
            if let Err(e) = self.engine.wait() {
                log::error!("abandoning {} transfers: {e}", self.engine.in_flight());
                break;
            }
        }
        while let Some((chain, _)) = self.pool.pop_front() {
            self.stats.rx_returned += 1;
            self.post(rings.rx, chain.head, 0, Dir::Rx);
        }
        self.signal(rings);
    }

    fn tag(&mut self, entry: InFlight) -> u64 {
        let value = Some((entry, self.space.clone()));
        match self.free_tags.pop() {
            Some(t) => {
                self.inflight[t] = value;
                t as u64
            }
            None => {
                self.inflight.push(value);
                (self.inflight.len() - 1) as u64
            }
        }
    }

    fn untag(&mut self, tag: u64) -> Option<InFlight> {
        let entry = self.inflight.get_mut(tag as usize)?.take()?;
        self.free_tags.push(tag as usize);
        Some(entry.0)
    }

    fn post<R: Ring>(&mut self, ring: &mut R, head: u16, len: u32, dir: Dir) {
        if !ring.add_used(head, len) {
            self.stats.lost += 1;
            return;
        }
        match dir {
            Dir::Tx => self.posted_tx += 1,
            Dir::Rx => self.posted_rx += 1,
        }
    }

    /// Walks the chain at `head` into `self.descs`; a chain that cannot be walked is
    /// answered with length 0.
    fn walk<R: Ring>(&mut self, ring: &mut R, head: u16, dir: Dir) -> bool {
        self.descs.clear();
        match chain::walk(
            &self.space,
            ring.desc_table(),
            ring.size(),
            head,
            &mut self.descs,
        ) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("{dir:?} chain {head}: {e}");
                self.stats.bad_chains += 1;
                if head < ring.size() {
                    self.post(ring, head, 0, dir);
                } else {
                    self.stats.lost += 1;
                }
                false
            }
        }
    }

    fn has_room(&self) -> bool {
        self.engine.in_flight() < self.engine.queue_depth()
    }

    fn transmit<R: Ring>(&mut self, ring: &mut R) -> bool {
        let mut progress = false;
        for _ in 0..PASS_BUDGET {
            if !ring.is_live() || !self.has_room() {
                break;
            }
            let Some(head) = ring.pop_head() else {
                break;
            };
            progress = true;
            if !self.walk(ring, head, Dir::Tx) {
                continue;
            }
            let buffers = match frame::tx(&self.space, &self.descs, self.limits.max_tx) {
                Ok(b) => b,
                Err(e) => {
                    count(&mut self.stats, e);
                    self.post(ring, head, 0, Dir::Tx);
                    continue;
                }
            };
            let tag = self.tag(InFlight::Tx { head });
            let request = FrameRequest {
                dir: Dir::Tx,
                segments: buffers.segments,
                tag,
            };
            // SAFETY: the segments were translated through the address space that the tag's
            // slot in `inflight` keeps alive until this completion is reaped; the engine drops
            // before `inflight` (field order).
            if unsafe { self.engine.push(request) }.is_err() {
                self.untag(tag);
                self.stats.io_errors += 1;
                self.post(ring, head, 0, Dir::Tx);
            }
        }
        progress
    }

    /// Pools RX chains and starts a receive when none is pending.
    fn receive<R: Ring>(&mut self, ring: &mut R) -> bool {
        let mut progress = false;
        if !ring.is_live() {
            return false;
        }
        let want = if self.limits.mergeable {
            self.limits.rx_frame
        } else {
            1
        };
        for _ in 0..PASS_BUDGET {
            let pooled: usize = self.pool.iter().map(|(c, _)| c.len).sum();
            if pooled >= want && !self.pool.is_empty() {
                break;
            }
            let Some(head) = ring.pop_head() else {
                break;
            };
            progress = true;
            if !self.walk(ring, head, Dir::Rx) {
                continue;
            }
            match frame::rx(&self.space, &self.descs) {
                Ok(b) => self.pool.push_back((
                    RxChain {
                        head,
                        descs: self.descs.clone(),
                        segments: b.segments,
                        len: b.len,
                    },
                    self.space.clone(),
                )),
                Err(e) => {
                    count(&mut self.stats, e);
                    self.post(ring, head, 0, Dir::Rx);
                }
            }
        }
        if self.receiving || self.pool.is_empty() || !self.has_room() {
            return progress;
        }
        let mut chains = Vec::new();
        let mut have = 0;
        while let Some((chain, _)) = self.pool.pop_front() {
            have += chain.len;
            chains.push(chain);
            if !self.limits.mergeable || have >= want {
                break;
            }
        }
        let segments = chains
            .iter()
            .flat_map(|c| c.segments.iter().copied())
            .collect();
        let tag = self.tag(InFlight::Rx { chains });
        let request = FrameRequest {
            dir: Dir::Rx,
            segments,
            tag,
        };
        // SAFETY: as in `transmit`; the pooled chains were translated through spaces their
        // pool entries kept alive, and `tag` now holds the current one. A memory table change
        // drains the queue first (stop_vring), so pooled chains never outlive their table.
        match unsafe { self.engine.push(request) } {
            Ok(()) => self.receiving = true,
            Err(_) => {
                if let Some(InFlight::Rx { chains }) = self.untag(tag) {
                    self.repool(chains);
                }
            }
        }
        true
    }

    fn repool(&mut self, chains: Vec<RxChain>) {
        for c in chains.into_iter().rev() {
            self.pool.push_front((c, self.space.clone()));
        }
    }

    fn complete<R: Ring>(&mut self, rings: &mut Rings<'_, R>) -> bool {
        self.engine.reap(&mut self.done);
        if self.done.is_empty() {
            return false;
        }
        let mut done = std::mem::take(&mut self.done);
        for c in done.drain(..) {
            let Some(entry) = self.untag(c.tag) else {
                log::error!("completion for unknown transfer {}", c.tag);
                continue;
            };
            match entry {
                InFlight::Tx { head } => {
                    match c.result {
                        Ok(_) => self.stats.tx_frames += 1,
                        Err(_) => self.stats.io_errors += 1,
                    }
                    self.post(rings.tx, head, 0, Dir::Tx);
                }
                InFlight::Rx { chains } => {
                    self.receiving = false;
                    self.received(rings.rx, chains, c.result);
                }
            }
        }
        self.done = done;
        true
    }

    /// Posts a received frame over as many chains as it fills; the rest go back to the pool.
    fn received<R: Ring>(
        &mut self,
        ring: &mut R,
        chains: Vec<RxChain>,
        result: Result<usize, i32>,
    ) {
        let n = match result {
            Ok(n) => n,
            Err(libc::ECANCELED) => return self.repool(chains),
            Err(e) => {
                log::debug!("receive failed: errno {e}");
                self.stats.io_errors += 1;
                return self.repool(chains);
            }
        };
        let capacity: usize = chains.iter().map(|c| c.len).sum();
        if n > capacity || n < HDR_LEN {
            self.stats.rx_oversized += u64::from(n > capacity);
            self.stats.too_short += u64::from(n < HDR_LEN);
            return self.repool(chains);
        }
        let mut left = n;
        let used = chains
            .iter()
            .position(|c| {
                left = left.saturating_sub(c.len);
                left == 0
            })
            .map_or(chains.len(), |i| i + 1);
        let num_buffers = used as u16;
        if !frame::write_at(
            &self.space,
            &chains[0].descs,
            NUM_BUFFERS_OFFSET,
            &num_buffers.to_le_bytes(),
        ) {
            self.stats.unmapped += 1;
        }
        let mut chains = chains.into_iter();
        let mut left = n;
        for c in chains.by_ref().take(used) {
            let len = left.min(c.len);
            left -= len;
            self.post(ring, c.head, len as u32, Dir::Rx);
        }
        self.stats.rx_frames += 1;
        self.repool(chains.collect());
    }

    /// Answers control commands: MQ pair counts within range are accepted (every pair with
    /// live rings is served), everything else is refused.
    fn control<R: Ring>(&mut self, ring: &mut R) -> bool {
        let mut progress = false;
        for _ in 0..PASS_BUDGET {
            if !ring.is_live() {
                break;
            }
            let Some(head) = ring.pop_head() else {
                break;
            };
            progress = true;
            if !self.walk(ring, head, Dir::Rx) {
                continue;
            }
            self.stats.ctrl_commands += 1;
            let Some(ack) = self.descs.iter().rposition(|d| d.writable && d.len >= 1) else {
                self.stats.wrong_direction += 1;
                self.post(ring, head, 0, Dir::Rx);
                continue;
            };
            let mut command = Vec::new();
            for d in self.descs[..ack].iter().filter(|d| !d.writable) {
                let mut b = vec![0u8; (d.len as usize).min(64)];
                if self.space.read(d.addr, &mut b).is_err() {
                    self.stats.unmapped += 1;
                    command.clear();
                    break;
                }
                command.extend(b);
            }
            let status = match command.as_slice() {
                [class, cmd, lo, hi, ..]
                    if u32::from(*class) == VIRTIO_NET_CTRL_MQ
                        && u32::from(*cmd) == VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET =>
                {
                    let pairs = u16::from_le_bytes([*lo, *hi]);
                    if (1..=self.queue_pairs).contains(&pairs) {
                        VIRTIO_NET_OK
                    } else {
                        VIRTIO_NET_ERR
                    }
                }
                _ => VIRTIO_NET_ERR,
            };
            let at = self.descs[ack].addr;
            if self.space.write(at, &[status as u8]).is_err() {
                self.stats.unmapped += 1;
            }
            // The ack is posted with the TX counter: the control ring is signalled with TX.
            if ring.add_used(head, 1) {
                ring.signal();
            } else {
                self.stats.lost += 1;
            }
        }
        progress
    }
}
