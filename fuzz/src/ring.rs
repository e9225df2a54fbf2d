//! A bare virtio-queue `Queue` as a worker's ring (the daemons use the crate's `VringState`),
//! for the targets that run a blk or net worker over fuzzed split rings.

use backends::vhost_user::ring::Ring;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// A split queue of `size` entries at the given guest addresses, ready, with EVENT_IDX as asked.
pub fn split_queue(size: u16, desc: u16, avail: u16, used: u16, event_idx: bool) -> Queue {
    let mut queue = Queue::new(256).unwrap();
    queue.set_size(size);
    queue.set_desc_table_address(Some(u32::from(desc)), Some(0));
    queue.set_avail_ring_address(Some(u32::from(avail)), Some(0));
    queue.set_used_ring_address(Some(u32::from(used)), Some(0));
    queue.set_event_idx(event_idx);
    queue.set_ready(true);
    queue
}

/// `queue` over guest memory `mem`, as the worker's [`Ring`].
pub struct QueueRing<'a> {
    pub queue: Queue,
    pub mem: &'a GuestMemoryMmap,
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
        let _ = self.queue.needs_notification(self.mem);
    }
}
