//! The split ring as a daemon's worker sees it, and its implementation over the
//! vhost-user-backend crate's vring state.

use std::ops::Deref;

use vhost_user_backend::VringState;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// Guest memory as the vhost-user memory table describes it.
pub type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

/// The split ring as a worker sees it: `VringState` in the daemon, a bare `Queue` in tests.
pub trait Ring {
    /// Started (ready) and enabled: chains may be popped.
    fn is_live(&self) -> bool;
    fn desc_table(&self) -> u64;
    fn avail_ring(&self) -> u64;
    fn size(&self) -> u16;
    fn next_avail(&self) -> u16;
    /// Where the next chain is taken from (a restarted ring skips what it redoes).
    fn set_next_avail(&mut self, idx: u16);
    /// The used index this side has published.
    fn next_used(&self) -> u16;
    /// The used index as the guest sees it in the ring; `None` if unreadable.
    fn used_idx(&self) -> Option<u16>;
    /// The head of the next chain the driver made available.
    fn pop_head(&mut self) -> Option<u16>;
    /// `false` if the entry could not be written (bad index or ring address).
    fn add_used(&mut self, head: u16, len: u32) -> bool;
    /// Re-arms driver notifications; `true` if chains arrived in the meantime.
    fn enable_notification(&mut self) -> bool;
    fn disable_notification(&mut self);
    /// Signals the driver if it wants to hear about the entries added since the last call.
    fn signal(&mut self);
}

/// A vring under its lock, as the worker sees it.
pub struct VringRing<'a> {
    pub state: &'a mut VringState<Memory>,
    pub mem: &'a Memory,
}

impl Ring for VringRing<'_> {
    fn is_live(&self) -> bool {
        self.state.get_queue().ready() && self.state.is_enabled()
    }

    fn desc_table(&self) -> u64 {
        self.state.get_queue().desc_table()
    }

    fn avail_ring(&self) -> u64 {
        self.state.get_queue().avail_ring()
    }

    fn size(&self) -> u16 {
        self.state.get_queue().size()
    }

    fn next_avail(&self) -> u16 {
        self.state.get_queue().next_avail()
    }

    fn set_next_avail(&mut self, idx: u16) {
        self.state.get_queue_mut().set_next_avail(idx);
    }

    fn next_used(&self) -> u16 {
        self.state.get_queue().next_used()
    }

    fn used_idx(&self) -> Option<u16> {
        self.state
            .get_queue()
            .used_idx(
                self.mem.memory().deref(),
                std::sync::atomic::Ordering::Acquire,
            )
            .ok()
            .map(|i| i.0)
    }

    fn pop_head(&mut self) -> Option<u16> {
        // Not `pop_descriptor_chain`: it logs an error on every call while the driver's avail
        // index is more than a ring ahead (a frontend tearing its rings down, or a hostile
        // one), and a polling worker calls it in a loop.
        match self.state.get_queue_mut().iter(self.mem.memory()) {
            Ok(mut chains) => chains.next().map(|chain| chain.head_index()),
            Err(e) => {
                log::debug!("no chains from a broken ring: {e}");
                None
            }
        }
    }

    fn add_used(&mut self, head: u16, len: u32) -> bool {
        self.state.add_used(head, len).is_ok()
    }

    fn enable_notification(&mut self) -> bool {
        self.state.enable_notification().unwrap_or(false)
    }

    fn disable_notification(&mut self) {
        let _ = self.state.disable_notification();
    }

    fn signal(&mut self) {
        // Without EVENT_IDX virtio-queue always answers yes; on error, signalling spuriously
        // is harmless and staying silent could hang the driver.
        if self.state.needs_notification().unwrap_or(true) {
            if let Err(e) = self.state.signal_used_queue() {
                log::debug!("cannot signal the driver: {e}");
            }
        }
    }
}

/// A bare virtio-queue `Queue` over plain guest memory as a ring, for unit tests and fuzzing
/// (no frontend sets up a `VringState` there).
pub struct QueueRing<'a> {
    pub queue: Queue,
    pub mem: &'a GuestMemoryMmap,
    /// The times `signal` found the driver wanting a notification.
    pub signals: u32,
}

impl<'a> QueueRing<'a> {
    pub fn new(queue: Queue, mem: &'a GuestMemoryMmap) -> Self {
        QueueRing {
            queue,
            mem,
            signals: 0,
        }
    }
}

impl Ring for QueueRing<'_> {
    fn is_live(&self) -> bool {
        self.queue.ready()
    }
    fn desc_table(&self) -> u64 {
        self.queue.desc_table()
    }
    fn avail_ring(&self) -> u64 {
        self.queue.avail_ring()
    }
    fn size(&self) -> u16 {
        self.queue.size()
    }
    fn next_avail(&self) -> u16 {
        self.queue.next_avail()
    }
    fn set_next_avail(&mut self, idx: u16) {
        self.queue.set_next_avail(idx);
    }
    fn next_used(&self) -> u16 {
        self.queue.next_used()
    }
    fn used_idx(&self) -> Option<u16> {
        self.queue
            .used_idx(self.mem, std::sync::atomic::Ordering::Acquire)
            .ok()
            .map(|i| i.0)
    }
    fn pop_head(&mut self) -> Option<u16> {
        self.queue
            .pop_descriptor_chain(self.mem)
            .map(|c| c.head_index())
    }
    fn add_used(&mut self, head: u16, len: u32) -> bool {
        self.queue.add_used(self.mem, head, len).is_ok()
    }
    fn enable_notification(&mut self) -> bool {
        self.queue.enable_notification(self.mem).unwrap_or(false)
    }
    fn disable_notification(&mut self) {
        let _ = self.queue.disable_notification(self.mem);
    }
    fn signal(&mut self) {
        if self.queue.needs_notification(self.mem).unwrap_or(true) {
            self.signals = self.signals.saturating_add(1);
        }
    }
}
