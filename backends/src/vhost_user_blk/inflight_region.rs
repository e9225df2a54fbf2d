//! The vhost-user inflight region (protocol feature INFLIGHT_SHMFD): shared memory in which
//! the backend records which descriptor heads it has taken from a split ring and not yet
//! returned, so that after the backend dies a new one can redo them.
//!
//! The layout is QEMU's and libvhost-user's (`QueueRegionSplit`, `DescStateSplit`), so a
//! region handed out by this daemon can be handed back to libvhost-user backends and the
//! reverse. Per queue, at `queue * queue_region_size(queue_size)`:
//!
//! ```text
//! u64 features | u16 version | u16 desc_num | u16 last_batch_head | u16 used_idx
//! desc_num x { u8 inflight | u8 padding[5] | u16 next | u64 counter }
//! ```
//!
//! The protocol, as libvhost-user runs it (`vu_queue_inflight_get/pre_put/post_put`,
//! `vu_check_queue_inflights`): a popped head is marked inflight with a counter that only grows;
//! before its used entry is written the head becomes `last_batch_head`, and after the used
//! index is published the mark is cleared and `used_idx` updated. A backend that died between
//! publishing the used index and clearing the mark leaves `used_idx` behind the ring's: the
//! check on restart clears `last_batch_head` then. Every head still marked is redone, oldest
//! counter first, and the ring's next-avail index becomes `used_idx + inflight heads`.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// `sizeof(DescStateSplit)`.
pub const DESC_STATE_SIZE: u64 = 16;
/// `sizeof(QueueRegionSplit)` without its descriptors.
pub const QUEUE_HEADER_SIZE: u64 = 16;
/// libvhost-user's `INFLIGHT_ALIGNMENT`.
const ALIGNMENT: u64 = 64;
/// libvhost-user's `INFLIGHT_VERSION`; zero means a region nobody has used yet.
pub const VERSION: u16 = 1;

// Offsets inside a queue region and a descriptor state.
const VERSION_AT: usize = 8;
const LAST_BATCH_HEAD_AT: usize = 12;
const USED_IDX_AT: usize = 14;
const COUNTER_AT: usize = 8;

/// Bytes one queue takes: QEMU's and libvhost-user's `vu_inflight_queue_size`.
pub fn queue_region_size(queue_size: u16) -> u64 {
    (DESC_STATE_SIZE * u64::from(queue_size) + 2).next_multiple_of(ALIGNMENT)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{num_queues} queue(s) of {queue_size}: the device has {max_queues} of at most {max_size}"
    )]
    Geometry {
        num_queues: u16,
        queue_size: u16,
        max_queues: u16,
        max_size: u16,
    },
    #[error("mmap_size {size:#x} is less than the {need:#x} bytes the queues take")]
    TooSmall { size: u64, need: u64 },
    #[error("mmap_offset {0:#x} is not page-aligned")]
    Offset(u64),
    #[error("the region ends past the end of its {0:#x}-byte file")]
    PastEnd(u64),
    #[error("the region's file is not sealed against shrinking")]
    NotSealed,
    #[error("cannot inspect the region's file")]
    Stat(#[source] io::Error),
    #[error("cannot create the region")]
    Create(#[source] io::Error),
    #[error("cannot map the region")]
    Map(#[source] io::Error),
}

/// What the frontend asks for in GET_INFLIGHT_FD and describes in SET_INFLIGHT_FD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub mmap_size: u64,
    pub mmap_offset: u64,
    pub num_queues: u16,
    pub queue_size: u16,
}

impl Geometry {
    /// A device's limits, checked against what the frontend sent.
    fn check(&self, max_queues: u16, max_size: u16) -> Result<(), Error> {
        if self.num_queues == 0
            || self.num_queues > max_queues
            || self.queue_size == 0
            || self.queue_size > max_size
        {
            return Err(Error::Geometry {
                num_queues: self.num_queues,
                queue_size: self.queue_size,
                max_queues,
                max_size,
            });
        }
        Ok(())
    }

    fn needed(&self) -> u64 {
        queue_region_size(self.queue_size) * u64::from(self.num_queues)
    }
}

/// A shared mapping of an inflight region.
pub struct Region {
    ptr: *mut u8,
    len: usize,
    queue_size: u16,
    num_queues: u16,
}

// SAFETY: the mapping is plain shared memory, accessed only through atomics.
unsafe impl Send for Region {}
// SAFETY: as for `Send`.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `map`, unmapped once, here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// GET_INFLIGHT_FD: a zeroed memfd sized for `num_queues` queues of `queue_size`, sealed so
/// that nobody can shrink it under a mapping (which would turn an access into SIGBUS). Returns
/// the file and the geometry to reply with.
pub fn create(
    num_queues: u16,
    queue_size: u16,
    max_queues: u16,
    max_size: u16,
) -> Result<(File, Geometry), Error> {
    let mut geometry = Geometry {
        mmap_size: 0,
        mmap_offset: 0,
        num_queues,
        queue_size,
    };
    geometry.check(max_queues, max_size)?;
    geometry.mmap_size = geometry.needed();
    // SAFETY: plain FFI call with a NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"iopath-vhost-inflight".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(Error::Create(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    // A new memfd reads as zeroes: no need to clear it.
    file.set_len(geometry.mmap_size).map_err(Error::Create)?;
    let seals = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own; the result is checked.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(Error::Create(io::Error::last_os_error()));
    }
    Ok((file, geometry))
}

impl Region {
    /// SET_INFLIGHT_FD: maps the frontend's region after checking every size against the device
    /// and the file, so no access to it can fault.
    pub fn map(
        file: &File,
        geometry: &Geometry,
        max_queues: u16,
        max_size: u16,
    ) -> Result<Region, Error> {
        geometry.check(max_queues, max_size)?;
        let need = geometry.needed();
        if geometry.mmap_size < need {
            return Err(Error::TooSmall {
                size: geometry.mmap_size,
                need,
            });
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        if !geometry.mmap_offset.is_multiple_of(page) {
            return Err(Error::Offset(geometry.mmap_offset));
        }
        let file_len = file.metadata().map_err(Error::Stat)?.len();
        if geometry
            .mmap_offset
            .checked_add(need)
            .is_none_or(|end| end > file_len)
        {
            return Err(Error::PastEnd(file_len));
        }
        // A file that may shrink later could fault under the mapping.
        // SAFETY: fcntl on a descriptor the caller owns; the result is checked.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(Error::NotSealed);
        }
        let len = usize::try_from(need).map_err(|_| Error::TooSmall { size: 0, need })?;
        let offset = libc::off_t::try_from(geometry.mmap_offset)
            .map_err(|_| Error::Offset(geometry.mmap_offset))?;
        // SAFETY: a fresh shared mapping of `len` bytes of the file, which holds at least
        // `offset + len` bytes and cannot shrink (checked above); the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Map(io::Error::last_os_error()));
        }
        let region = Region {
            ptr: ptr.cast(),
            len,
            queue_size: geometry.queue_size,
            num_queues: geometry.num_queues,
        };
        // libvhost-user writes desc_num at SET_INFLIGHT_FD.
        for q in 0..region.num_queues {
            region
                .u16_at(region.queue_base(q) + 10)
                .store(region.queue_size, Ordering::Release);
        }
        Ok(region)
    }

    pub fn num_queues(&self) -> u16 {
        self.num_queues
    }

    fn queue_base(&self, queue: u16) -> usize {
        queue_region_size(self.queue_size) as usize * usize::from(queue)
    }

    fn check_at(&self, at: usize, size: usize) {
        // Offsets are computed from the geometry checked in `map`; a miss is a bug here.
        assert!(
            at.is_multiple_of(size) && at + size <= self.len,
            "inflight offset {at}"
        );
    }

    fn u8_at(&self, at: usize) -> &AtomicU8 {
        self.check_at(at, 1);
        // SAFETY: in bounds (checked); the mapping lives as long as `self`.
        unsafe { &*self.ptr.add(at).cast::<AtomicU8>() }
    }

    fn u16_at(&self, at: usize) -> &AtomicU16 {
        self.check_at(at, 2);
        // SAFETY: in bounds and aligned (checked; the mapping is page-aligned); it lives as
        // long as `self`.
        unsafe { &*self.ptr.add(at).cast::<AtomicU16>() }
    }

    fn u64_at(&self, at: usize) -> &AtomicU64 {
        self.check_at(at, 8);
        // SAFETY: as for `u16_at`.
        unsafe { &*self.ptr.add(at).cast::<AtomicU64>() }
    }
}

/// One queue's part of a region.
#[derive(Clone)]
pub struct QueueRegion {
    region: Arc<Region>,
    base: usize,
}

impl QueueRegion {
    /// Queue `queue` of `region`, if the region has it.
    pub fn new(region: Arc<Region>, queue: u16) -> Option<Self> {
        (queue < region.num_queues).then(|| QueueRegion {
            base: region.queue_base(queue),
            region,
        })
    }

    pub fn desc_num(&self) -> u16 {
        self.region.queue_size
    }

    fn version(&self) -> &AtomicU16 {
        self.region.u16_at(self.base + VERSION_AT)
    }

    fn last_batch_head(&self) -> &AtomicU16 {
        self.region.u16_at(self.base + LAST_BATCH_HEAD_AT)
    }

    fn used_idx(&self) -> &AtomicU16 {
        self.region.u16_at(self.base + USED_IDX_AT)
    }

    fn desc_at(&self, head: u16) -> usize {
        self.base + QUEUE_HEADER_SIZE as usize + DESC_STATE_SIZE as usize * usize::from(head)
    }

    fn inflight(&self, head: u16) -> &AtomicU8 {
        self.region.u8_at(self.desc_at(head))
    }

    fn counter(&self, head: u16) -> &AtomicU64 {
        self.region.u64_at(self.desc_at(head) + COUNTER_AT)
    }
}

/// A worker's use of its queue's region.
pub struct Tracker {
    queue: QueueRegion,
    /// The counter the next popped head gets.
    counter: u64,
    /// The ring was (re)started: check the region before taking chains.
    check_pending: bool,
    /// Heads to redo before popping new ones, oldest first.
    resubmit: VecDeque<u16>,
}

impl Tracker {
    pub fn new(queue: QueueRegion) -> Self {
        Tracker {
            queue,
            counter: 0,
            check_pending: true,
            resubmit: VecDeque::new(),
        }
    }

    /// The ring is starting (again): check the region before the next chain.
    pub fn restart(&mut self) {
        self.check_pending = true;
    }

    pub fn check_pending(&self) -> bool {
        self.check_pending
    }

    /// The restart needs no check (the ring never stopped).
    pub fn check_pending_done(&mut self) {
        self.check_pending = false;
    }

    /// `vu_check_queue_inflights`: repairs a crash between publishing a used entry and clearing
    /// its mark, queues every head still marked (those below `ring_size`) for resubmission in
    /// counter order, and returns the ring's next-avail index: `used_idx` plus the heads redone.
    /// `None` for a region nobody used yet (it is stamped with the version).
    pub fn check(&mut self, used_idx: u16, ring_size: u16) -> Option<u16> {
        self.check_pending = false;
        self.resubmit.clear();
        self.counter = 0;
        let q = &self.queue;
        if q.version().load(Ordering::Acquire) == 0 {
            q.version().store(VERSION, Ordering::Release);
            q.used_idx().store(used_idx, Ordering::Release);
            return None;
        }
        if q.used_idx().load(Ordering::Acquire) != used_idx {
            let last = q.last_batch_head().load(Ordering::Acquire);
            if last < q.desc_num() {
                q.inflight(last).store(0, Ordering::Release);
            }
            q.used_idx().store(used_idx, Ordering::Release);
        }
        let mut marked: Vec<(u64, u16)> = Vec::new();
        for head in 0..q.desc_num() {
            if q.inflight(head).load(Ordering::Acquire) == 0 {
                continue;
            }
            if head >= ring_size {
                // A head the ring cannot have: nothing to redo.
                q.inflight(head).store(0, Ordering::Release);
                continue;
            }
            marked.push((q.counter(head).load(Ordering::Acquire), head));
        }
        marked.sort_unstable();
        self.counter = marked.last().map_or(0, |&(c, _)| c.wrapping_add(1));
        self.resubmit.extend(marked.iter().map(|&(_, head)| head));
        Some(used_idx.wrapping_add(marked.len() as u16))
    }

    /// The next head to redo, oldest first.
    pub fn next_resubmit(&mut self) -> Option<u16> {
        self.resubmit.pop_front()
    }

    /// `vu_queue_inflight_get`: `head` was popped.
    pub fn popped(&mut self, head: u16) {
        if head >= self.queue.desc_num() {
            return;
        }
        self.queue
            .counter(head)
            .store(self.counter, Ordering::Release);
        self.counter = self.counter.wrapping_add(1);
        self.queue.inflight(head).store(1, Ordering::Release);
    }

    /// `vu_queue_inflight_pre_put`: the used entry for `head` is about to be written.
    pub fn before_used(&mut self, head: u16) {
        if head < self.queue.desc_num() {
            self.queue.last_batch_head().store(head, Ordering::Release);
        }
    }

    /// `vu_queue_inflight_post_put`: the used entry for `head` is published and the ring's
    /// used index is now `used_idx`.
    pub fn after_used(&mut self, head: u16, used_idx: u16) {
        if head < self.queue.desc_num() {
            self.queue.inflight(head).store(0, Ordering::Release);
        }
        self.queue.used_idx().store(used_idx, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(num_queues: u16, queue_size: u16) -> (File, Arc<Region>) {
        let (file, geometry) = create(num_queues, queue_size, 64, 32768).unwrap();
        let region = Region::map(&file, &geometry, 64, 32768).unwrap();
        (file, Arc::new(region))
    }

    #[test]
    fn sizes_follow_qemus_formula() {
        // ALIGN_UP(sizeof(DescStateSplit) * queue_size + sizeof(uint16_t), 64)
        assert_eq!(queue_region_size(256), 4160);
        assert_eq!(queue_region_size(128), 2112);
        assert_eq!(queue_region_size(1), 64);
        assert_eq!(queue_region_size(32768), 524352);
        for size in [1u16, 2, 4, 64, 256, 1024, 32768] {
            assert!(
                queue_region_size(size) >= QUEUE_HEADER_SIZE + DESC_STATE_SIZE * u64::from(size)
            );
        }
        let (file, g) = create(2, 256, 4, 1024).unwrap();
        assert_eq!((g.mmap_size, g.mmap_offset), (2 * 4160, 0));
        assert_eq!(file.metadata().unwrap().len(), 2 * 4160);
        // The file cannot shrink (nor grow) under a mapping.
        assert!(file.set_len(100).is_err());
    }

    #[test]
    fn the_layout_is_libvhost_users() {
        let (file, r) = region(2, 8);
        let mut q1 = Tracker::new(QueueRegion::new(r.clone(), 1).unwrap());
        q1.check(0, 8);
        q1.popped(3);
        q1.popped(5);
        q1.before_used(3);
        drop(q1);
        let bytes = std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        let base = 192; // queue_region_size(8)
        assert_eq!(
            u16::from_le_bytes([bytes[base + 8], bytes[base + 9]]),
            VERSION
        );
        assert_eq!(
            u16::from_le_bytes([bytes[base + 10], bytes[base + 11]]),
            8,
            "desc_num"
        );
        assert_eq!(u16::from_le_bytes([bytes[base + 12], bytes[base + 13]]), 3);
        let desc = |i: usize| base + 16 + 16 * i;
        assert_eq!(bytes[desc(3)], 1);
        assert_eq!(bytes[desc(5)], 1);
        assert_eq!(bytes[desc(4)], 0);
        assert_eq!(
            u64::from_le_bytes(bytes[desc(5) + 8..desc(5) + 16].try_into().unwrap()),
            1
        );
        assert!(
            bytes[..base].iter().all(|&b| b == 0 || b == 8),
            "queue 0 untouched"
        );
    }

    #[test]
    fn a_fresh_region_is_stamped_and_redoes_nothing() {
        let (_f, r) = region(1, 16);
        let mut t = Tracker::new(QueueRegion::new(r, 0).unwrap());
        assert!(t.check_pending());
        assert_eq!(t.check(7, 16), None);
        assert!(!t.check_pending());
        assert_eq!(t.next_resubmit(), None);
    }

    #[test]
    fn marked_heads_are_redone_in_counter_order() {
        let (_f, r) = region(1, 16);
        let mut t = Tracker::new(QueueRegion::new(r.clone(), 0).unwrap());
        t.check(0, 16);
        for head in [9, 2, 14, 0] {
            t.popped(head);
        }
        // 2 completes; the others are in flight when the backend dies.
        t.before_used(2);
        t.after_used(2, 1);
        drop(t);

        let mut t = Tracker::new(QueueRegion::new(r, 0).unwrap());
        assert_eq!(t.check(1, 16), Some(4), "used_idx 1 + three heads");
        let redo: Vec<_> = std::iter::from_fn(|| t.next_resubmit()).collect();
        assert_eq!(redo, vec![9, 14, 0]);
        // New heads count on from the newest redone one.
        t.popped(3);
        assert_eq!(t.queue.counter(3).load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_crash_after_the_used_index_and_before_the_clear_is_repaired() {
        let (_f, r) = region(1, 16);
        let mut t = Tracker::new(QueueRegion::new(r.clone(), 0).unwrap());
        t.check(0, 16);
        t.popped(4);
        t.popped(6);
        t.before_used(6);
        // The used entry for 6 is published (ring used idx 1), then the backend dies.
        drop(t);
        let mut t = Tracker::new(QueueRegion::new(r.clone(), 0).unwrap());
        assert_eq!(t.check(1, 16), Some(2), "only 4 is redone");
        assert_eq!(t.next_resubmit(), Some(4));
        assert_eq!(t.next_resubmit(), None);
        // Dying before the used index moved keeps 6 marked: both are redone.
        let mut t2 = Tracker::new(QueueRegion::new(r, 0).unwrap());
        t2.queue.inflight(6).store(1, Ordering::Relaxed);
        t2.queue.last_batch_head().store(6, Ordering::Relaxed);
        assert_eq!(t2.check(1, 16), Some(3));
    }

    #[test]
    fn heads_beyond_the_ring_are_dropped() {
        let (_f, r) = region(1, 16);
        let mut t = Tracker::new(QueueRegion::new(r, 0).unwrap());
        t.check(0, 16);
        t.popped(12);
        t.popped(1);
        assert_eq!(t.check(0, 8), Some(1));
        assert_eq!(t.next_resubmit(), Some(1));
        assert_eq!(t.queue.inflight(12).load(Ordering::Relaxed), 0);
        // Heads the region cannot hold are not tracked.
        t.popped(16);
        t.before_used(40);
        t.after_used(40, 1);
    }

    #[test]
    fn bad_geometry_is_refused() {
        assert!(matches!(
            create(0, 256, 4, 256),
            Err(Error::Geometry { .. })
        ));
        assert!(matches!(
            create(5, 256, 4, 256),
            Err(Error::Geometry { .. })
        ));
        assert!(matches!(
            create(1, 512, 4, 256),
            Err(Error::Geometry { .. })
        ));
        assert!(matches!(create(1, 0, 4, 256), Err(Error::Geometry { .. })));

        let (file, g) = create(2, 256, 4, 256).unwrap();
        let small = Geometry {
            mmap_size: g.mmap_size - 1,
            ..g
        };
        assert!(matches!(
            Region::map(&file, &small, 4, 256),
            Err(Error::TooSmall { .. })
        ));
        let past = Geometry {
            mmap_offset: 4096,
            ..g
        };
        assert!(matches!(
            Region::map(&file, &past, 4, 256),
            Err(Error::PastEnd(_))
        ));
        let odd = Geometry {
            mmap_offset: 100,
            ..g
        };
        assert!(matches!(
            Region::map(&file, &odd, 4, 256),
            Err(Error::Offset(100))
        ));
        let huge = Geometry {
            mmap_offset: u64::MAX - 4095,
            ..g
        };
        assert!(matches!(
            Region::map(&file, &huge, 4, 256),
            Err(Error::PastEnd(_))
        ));
        assert!(Region::map(&file, &g, 4, 256).is_ok());

        // An unsealed file could shrink under the mapping.
        let plain = tempfile::tempfile().unwrap();
        plain.set_len(1 << 20).unwrap();
        assert!(matches!(
            Region::map(&plain, &g, 4, 256),
            Err(Error::NotSealed)
        ));
    }
}
