//! A polled virtio-blk driver (virtio 1.x section 5.2) over the modern PCI transport: one
//! request queue, no interrupts. Every slot owns a preallocated three-descriptor chain
//! (request header, data, status byte), so a submit only rewrites the header and the data
//! descriptor. Chains sit in the ring's own table when three per slot fit, otherwise in an
//! indirect table per slot (VIRTIO_F_INDIRECT_DESC).

use iopath_mailbox::error;

use super::pci::Transport;
use super::ring::{self, Desc, RingMemory, RingState, SplitRing};
use super::ring::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
use super::setup::{self, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, MAX_QUEUE_SIZE};
use crate::block::device::{BlockQueue, Geometry, Op, QueueConfig};
use crate::log;
use crate::pci::PciDevice;
use crate::scratch::Scratch;

// Feature bits.
const F_BLK_SIZE: u64 = 1 << 6;
/// What this driver can use.
const WANTED: u64 = F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC | F_BLK_SIZE;

// struct virtio_blk_config offsets.
const CFG_CAPACITY: u32 = 0;
const CFG_BLK_SIZE: u32 = 20;

// Request types and the OK status (section 5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const S_OK: u8 = 0;
/// Written to a slot's status byte before submission: a device that completes a request
/// without writing its status shows up as a failure.
const STATUS_UNSET: u8 = 0xff;
/// virtio-blk addresses the disk in 512-byte sectors whatever its block size.
const SECTOR_SHIFT: u32 = 9;
/// struct virtio_blk_outhdr: type, reserved, sector.
const HEADER_BYTES: u64 = 16;
const CHAIN: u16 = 3;

pub struct VirtioBlk {
    transport: Transport,
    ring: SplitRing,
    notify: u64,
    depth: u16,
    /// Slot `s`'s chain: descriptor 0 is its header, 1 its data, 2 its status byte, in the
    /// ring's table at 3s (direct) or in its own indirect table.
    indirect: Option<u64>,
    headers: u64,
    statuses: u64,
    geometry: Geometry,
    /// Used entries whose id named no chain in flight.
    bad_ids: u64,
    last_bad_id: u32,
    /// The first failed request: (slot, status byte).
    first_error: Option<(u16, u8)>,
}

impl VirtioBlk {
    /// Resets and initialises the device behind `dev` (section 3.1.1) with one request queue
    /// of chains for `cfg.depth` slots.
    pub fn open(
        dev: &PciDevice,
        scratch: &mut Scratch,
        cfg: &QueueConfig,
    ) -> Result<VirtioBlk, u32> {
        let (t, features) = setup::negotiate(dev, cfg.tsc_khz, WANTED)?;
        let geometry = match read_geometry(&t, features) {
            Ok(g) => g,
            Err(e) => return setup::fail(&t, e),
        };

        let max = t.select_queue(0);
        let Some((size, indirect)) = ring_size(max, cfg.depth, features) else {
            log!(
                "virtio {}: queue_depth {} needs a ring of {} descriptors, or of {} with INDIRECT_DESC (negotiated: {}); queue 0 allows {}",
                dev,
                cfg.depth,
                u32::from(cfg.depth) * u32::from(CHAIN),
                cfg.depth,
                features & F_INDIRECT_DESC != 0,
                max
            );
            return setup::fail(&t, error::BAD_PARAMETER);
        };
        let Some(mem) = Memory::alloc(scratch, size, cfg.depth, indirect) else {
            log!("virtio: the queue does not fit in scratch memory");
            return setup::fail(&t, error::BAD_PARAMETER);
        };
        let (ring, notify) = setup::enable_queue(&t, dev, 0, mem.ring, size, features)?;
        let mut blk = VirtioBlk {
            transport: t,
            ring,
            notify,
            depth: cfg.depth,
            indirect: mem.indirect,
            headers: mem.headers,
            statuses: mem.statuses,
            geometry,
            bad_ids: 0,
            last_bad_id: 0,
            first_error: None,
        };
        blk.build_chains();
        setup::driver_ok(&blk.transport, dev)?;
        log!(
            "virtio {}: virtio-blk, {} sectors, {}-byte blocks, features {:#x}, queue {} entries ({} chains), EVENT_IDX {}",
            dev,
            blk.geometry.capacity_bytes >> SECTOR_SHIFT,
            blk.geometry.lba_bytes,
            features,
            size,
            if indirect { "indirect" } else { "direct" },
            features & F_EVENT_IDX != 0
        );
        Ok(blk)
    }

    /// The parts of every chain that never change: header and status descriptors, links.
    fn build_chains(&mut self) {
        for slot in 0..self.depth {
            let (table, first) = self.chain(slot);
            let header = Desc {
                addr: self.headers + u64::from(slot) * HEADER_BYTES,
                len: HEADER_BYTES as u32,
                flags: DESC_F_NEXT,
                next: first + 1,
            };
            let data = Desc {
                flags: DESC_F_NEXT,
                next: first + 2,
                ..Desc::default()
            };
            let status = Desc {
                addr: self.statuses + u64::from(slot),
                len: 1,
                flags: DESC_F_WRITE,
                next: 0,
            };
            // SAFETY: the chain's table holds `first + 3` descriptors (`Memory::alloc`), and
            // nothing is in flight before DRIVER_OK.
            unsafe {
                SplitRing::write_desc(table, first, header);
                SplitRing::write_desc(table, first + 1, data);
                SplitRing::write_desc(table, first + 2, status);
            }
            if let Some(tables) = self.indirect {
                let entry = Desc {
                    addr: tables + u64::from(slot) * u64::from(CHAIN) * ring::DESC_BYTES,
                    len: (u64::from(CHAIN) * ring::DESC_BYTES) as u32,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                };
                // SAFETY: descriptor `slot` of the ring's table, slot < depth <= size.
                unsafe { SplitRing::write_desc(self.ring.table(), slot, entry) };
            }
        }
    }

    /// The table holding `slot`'s chain and the chain's first index in it.
    fn chain(&self, slot: u16) -> (u64, u16) {
        match self.indirect {
            Some(tables) => (
                tables + u64::from(slot) * u64::from(CHAIN) * ring::DESC_BYTES,
                0,
            ),
            None => (self.ring.table(), slot * CHAIN),
        }
    }

    /// The head a used entry carries for `slot`, and back.
    fn head(&self, slot: u16) -> u16 {
        if self.indirect.is_some() {
            slot
        } else {
            slot * CHAIN
        }
    }
}

/// The slot whose chain starts at used id `id`, if any (the id comes from the device).
fn slot_of(id: u32, depth: u16, indirect: bool) -> Option<u16> {
    let slot = if indirect {
        id
    } else if id.is_multiple_of(u32::from(CHAIN)) {
        id / u32::from(CHAIN)
    } else {
        return None;
    };
    u16::try_from(slot).ok().filter(|&s| s < depth)
}

impl BlockQueue for VirtioBlk {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&mut self, slot: u16, op: Op, offset: u64, len: u32, buf: u64) {
        if slot >= self.depth {
            return;
        }
        let (table, first) = self.chain(slot);
        let (kind, data_flags) = match op {
            Op::Read => (T_IN, DESC_F_NEXT | DESC_F_WRITE),
            Op::Write => (T_OUT, DESC_F_NEXT),
        };
        let header = self.headers + u64::from(slot) * HEADER_BYTES;
        let data = Desc {
            addr: buf,
            len,
            flags: data_flags,
            next: first + 2,
        };
        // SAFETY: the slot's header, status byte and descriptors belong to this driver and the
        // slot has nothing in flight (the job submits on a slot only after it completed).
        unsafe {
            core::ptr::write_volatile(header as *mut u32, kind);
            core::ptr::write_volatile((header + 8) as *mut u64, offset >> SECTOR_SHIFT);
            core::ptr::write_volatile((self.statuses + u64::from(slot)) as *mut u8, STATUS_UNSET);
            SplitRing::write_desc(table, first + 1, data);
        }
        let head = self.head(slot);
        self.ring.push(head);
    }

    fn ring(&mut self) {
        if self.ring.publish() {
            setup::notify(self.notify, 0);
        }
    }

    fn poll<F: FnMut(u16, bool)>(&mut self, mut done: F) -> usize {
        let depth = self.depth;
        let indirect = self.indirect.is_some();
        let statuses = self.statuses;
        let (bad_ids, last_bad, first_error) = (
            &mut self.bad_ids,
            &mut self.last_bad_id,
            &mut self.first_error,
        );
        let mut n = 0;
        self.ring.drain_used(|id| {
            let Some(slot) = slot_of(id, depth, indirect) else {
                // The chain it should have named stays in flight: the job's stall check ends
                // the pass and calls `log_state`.
                if *bad_ids == 0 {
                    log!(
                        "virtio-blk: the device used id {}, which names no chain",
                        id
                    );
                }
                *bad_ids += 1;
                *last_bad = id;
                return;
            };
            // SAFETY: the slot's status byte in this driver's status array (slot < depth);
            // the device wrote it before publishing the used entry.
            let status =
                unsafe { core::ptr::read_volatile((statuses + u64::from(slot)) as *const u8) };
            if status != S_OK && first_error.is_none() {
                *first_error = Some((slot, status));
            }
            n += 1;
            done(slot, status == S_OK);
        });
        n
    }

    fn log_state(&mut self) {
        let RingState {
            avail_idx,
            published,
            used_idx,
            last_used,
            avail_event,
            notifies,
        } = self.ring.state();
        log!(
            "virtio-blk: status {:#x}, avail {} (published {}), used {} (consumed {}), avail_event {}, {} notifies",
            self.transport.status(),
            avail_idx,
            published,
            used_idx,
            last_used,
            avail_event,
            notifies
        );
        if self.bad_ids > 0 {
            log!(
                "virtio-blk: {} used entries named no chain in flight (last id {})",
                self.bad_ids,
                self.last_bad_id
            );
        }
        if let Some((slot, status)) = self.first_error {
            log!(
                "virtio-blk: first failed request: slot {}, status {}",
                slot,
                status
            );
        }
    }
}

/// Capacity and block size from device configuration.
fn read_geometry(t: &Transport, features: u64) -> Result<Geometry, u32> {
    let Some(sectors) = t.config64(CFG_CAPACITY) else {
        log!("virtio-blk: cannot read the capacity");
        return Err(error::DEVICE_ERROR);
    };
    let lba_bytes = if features & F_BLK_SIZE != 0 {
        match t.config32(CFG_BLK_SIZE) {
            Some(b) if b.is_power_of_two() && (512..=65536).contains(&b) => b,
            other => {
                log!("virtio-blk: unusable blk_size {:?}", other);
                return Err(error::DEVICE_ERROR);
            }
        }
    } else {
        512
    };
    let Some(capacity_bytes) = sectors.checked_mul(1 << SECTOR_SHIFT).filter(|&c| c != 0) else {
        log!("virtio-blk: bad capacity of {} sectors", sectors);
        return Err(error::DEVICE_ERROR);
    };
    Ok(Geometry {
        capacity_bytes,
        lba_bytes,
    })
}

/// The ring size for `depth` slots: direct chains when three descriptors per slot fit in the
/// device's maximum, else one indirect descriptor per slot when negotiated.
fn ring_size(max: u16, depth: u16, features: u64) -> Option<(u16, bool)> {
    let max = u32::from(max).min(MAX_QUEUE_SIZE);
    let direct = (u32::from(depth) * u32::from(CHAIN)).next_power_of_two();
    if direct <= max {
        return Some((direct as u16, false));
    }
    let indirect = u32::from(depth).next_power_of_two();
    if features & F_INDIRECT_DESC != 0 && indirect <= max {
        return Some((indirect as u16, true));
    }
    None
}

/// Scratch memory for one queue and its per-slot request data.
struct Memory {
    ring: RingMemory,
    headers: u64,
    statuses: u64,
    indirect: Option<u64>,
}

impl Memory {
    fn alloc(scratch: &mut Scratch, size: u16, depth: u16, indirect: bool) -> Option<Memory> {
        let slots = u64::from(depth);
        Some(Memory {
            ring: setup::alloc_ring(scratch, size)?,
            headers: scratch.alloc_zeroed(slots * HEADER_BYTES, 16)?,
            statuses: scratch.alloc_zeroed(slots, 16)?,
            indirect: if indirect {
                Some(scratch.alloc_zeroed(slots * u64::from(CHAIN) * ring::DESC_BYTES, 16)?)
            } else {
                None
            },
        })
    }
}
