//! A split virtqueue (virtio 1.x section 2.7) in guest memory: the descriptor table, the
//! driver (avail) ring the guest fills, and the device (used) ring the device fills. The device
//! reads and writes these while the guest runs, so every access is volatile.
//!
//! With VIRTIO_F_EVENT_IDX the driver notifies only when the device asked to be told about the
//! new entries (`avail_event`), and keeps the device from signalling completions by holding
//! `used_event` half the index space ahead: the guest polls and takes no interrupts.

use core::sync::atomic::{fence, Ordering};

/// struct virtq_desc.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

pub const DESC_BYTES: u64 = 16;
const _: () = assert!(core::mem::size_of::<Desc>() as u64 == DESC_BYTES);

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
/// Driver ring flag: no used-buffer notifications, please (without EVENT_IDX).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Device ring flag: the device does not need notifications (without EVENT_IDX).
const USED_F_NO_NOTIFY: u16 = 1;

/// Bytes of each part for `size` entries, with the EVENT_IDX fields.
pub fn desc_bytes(size: u16) -> u64 {
    DESC_BYTES * u64::from(size)
}
pub fn driver_bytes(size: u16) -> u64 {
    6 + 2 * u64::from(size)
}
pub fn device_bytes(size: u16) -> u64 {
    6 + 8 * u64::from(size)
}

/// Where the three parts live (zeroed, aligned to 16, 2 and 4 bytes).
#[derive(Clone, Copy, Debug)]
pub struct RingMemory {
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
}

pub struct SplitRing {
    mem: RingMemory,
    size: u16,
    event_idx: bool,
    /// Next free driver ring index (free-running).
    avail_idx: u16,
    /// The avail index the device has been shown.
    published: u16,
    /// Next device ring entry to consume (free-running).
    last_used: u16,
    pub notifies: u64,
}

/// The indices, for the log after a stall.
#[derive(Clone, Copy, Debug)]
pub struct RingState {
    pub avail_idx: u16,
    pub published: u16,
    pub used_idx: u16,
    pub last_used: u16,
    pub avail_event: u16,
    pub notifies: u64,
}

impl SplitRing {
    /// `size` is a power of two; `mem` is zeroed and sized for it.
    pub fn new(mem: RingMemory, size: u16, event_idx: bool) -> SplitRing {
        let ring = SplitRing {
            mem,
            size,
            event_idx,
            avail_idx: 0,
            published: 0,
            last_used: 0,
            notifies: 0,
        };
        if event_idx {
            ring.hold_off_signals();
        } else {
            // SAFETY: the flags field of this ring's driver area (see `write16`).
            unsafe { write16(mem.driver, AVAIL_F_NO_INTERRUPT) };
        }
        ring
    }

    /// Writes descriptor `index` of the table at `table` (this ring's table, or an indirect
    /// table of at least `index + 1` entries).
    ///
    /// # Safety
    /// `table` holds at least `index + 1` descriptors of driver-owned memory, and the device is
    /// not using the descriptor (its chain is not in flight).
    pub unsafe fn write_desc(table: u64, index: u16, d: Desc) {
        core::ptr::write_volatile((table + u64::from(index) * DESC_BYTES) as *mut Desc, d);
    }

    /// The address of this ring's descriptor table.
    pub fn table(&self) -> u64 {
        self.mem.desc
    }

    /// Puts chain `head` in the next driver ring entry, unseen by the device until
    /// [`SplitRing::publish`]. The caller keeps at most `size` chains in flight.
    pub fn push(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx & (self.size - 1));
        // SAFETY: ring[slot] of this ring's driver area, slot < size; the device reads only
        // entries below the published index, and this one is beyond it.
        unsafe { write16(self.mem.driver + 4 + 2 * slot, head) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Shows the device every pushed entry; returns whether it must be notified.
    pub fn publish(&mut self) -> bool {
        if self.avail_idx == self.published {
            return false;
        }
        let (old, new) = (self.published, self.avail_idx);
        // The entries and what they point at must be visible before the index.
        fence(Ordering::Release);
        // SAFETY: the idx field of this ring's driver area.
        unsafe { write16(self.mem.driver + 2, new) };
        self.published = new;
        // The index store must be visible before the device's suppression state is read, or
        // a device that went idle in between would miss the entries (a full barrier: mfence).
        fence(Ordering::SeqCst);
        let notify = if self.event_idx {
            need_event(self.avail_event(), new, old)
        } else {
            // SAFETY: the flags field of this ring's device area.
            let flags = unsafe { read16(self.mem.device) };
            flags & USED_F_NO_NOTIFY == 0
        };
        if notify {
            self.notifies += 1;
        }
        notify
    }

    /// Consumes up to one ring's worth of used entries, handing each id to `f`; returns how
    /// many there were. Ids come from the device: `f` checks them.
    pub fn drain_used(&mut self, mut f: impl FnMut(u32)) -> usize {
        self.drain_used_len(|id, _| f(id))
    }

    /// As [`SplitRing::drain_used`], with the bytes the device wrote into each chain (a
    /// received frame's length); unchecked like the id.
    pub fn drain_used_len(&mut self, mut f: impl FnMut(u32, u32)) -> usize {
        // SAFETY: the idx field of this ring's device area.
        let used_idx = unsafe { read16(self.mem.device + 2) };
        // Entries are read only after the index that covers them.
        fence(Ordering::Acquire);
        // A device index more than a ring ahead is bogus: take one lap, the rest is the
        // caller's stall to notice.
        let pending = used_idx.wrapping_sub(self.last_used).min(self.size);
        for _ in 0..pending {
            let slot = u64::from(self.last_used & (self.size - 1));
            let entry = self.mem.device + 4 + 8 * slot;
            // SAFETY: ring[slot].id and .len of this ring's device area, slot < size.
            let (id, len) = unsafe {
                (
                    core::ptr::read_volatile(entry as *const u32),
                    core::ptr::read_volatile((entry + 4) as *const u32),
                )
            };
            f(id, len);
            self.last_used = self.last_used.wrapping_add(1);
        }
        if pending > 0 && self.event_idx {
            self.hold_off_signals();
        }
        usize::from(pending)
    }

    pub fn state(&self) -> RingState {
        RingState {
            avail_idx: self.avail_idx,
            published: self.published,
            // SAFETY: the idx field of this ring's device area.
            used_idx: unsafe { read16(self.mem.device + 2) },
            last_used: self.last_used,
            avail_event: if self.event_idx {
                self.avail_event()
            } else {
                0
            },
            notifies: self.notifies,
        }
    }

    /// The device ring's avail_event (after its `size` entries).
    fn avail_event(&self) -> u16 {
        // SAFETY: inside this ring's device area (`device_bytes`).
        unsafe { read16(self.mem.device + 4 + 8 * u64::from(self.size)) }
    }

    /// Moves used_event half the index space ahead of what the guest has consumed, so the
    /// device never finds a completion that crosses it.
    fn hold_off_signals(&self) {
        let at = self.mem.driver + 4 + 2 * u64::from(self.size);
        // SAFETY: the used_event field after the driver ring's `size` entries.
        unsafe { write16(at, self.last_used.wrapping_add(0x8000)) };
    }
}

/// vring_need_event: whether moving the index from `old` to `new` passes `event`.
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// # Safety
/// `addr` is a 2-byte aligned field of ring memory this driver owns.
unsafe fn write16(addr: u64, v: u16) {
    core::ptr::write_volatile(addr as *mut u16, v)
}

/// # Safety
/// As [`write16`].
unsafe fn read16(addr: u64) -> u16 {
    core::ptr::read_volatile(addr as *const u16)
}
