//! Split queues at fuzzed addresses for the targets that run a blk or net worker over them
//! (through `QueueRing`, a bare virtio-queue `Queue` as the worker's ring).

pub use backends::vhost_user::ring::QueueRing;
use virtio_queue::{Queue, QueueT};

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
