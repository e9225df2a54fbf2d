//! A polled virtio-net driver (virtio 1.x section 5.1) over the modern PCI transport: one
//! receive and one transmit queue, no interrupts, no offloads. Every descriptor owns a fixed
//! buffer big enough for the 12-byte virtio_net_hdr and the largest frame, so a frame is one
//! descriptor each way (VERSION_1 implies any layout):
//! - receive: every buffer is posted at open; `recv` hands each used buffer's frame on (header
//!   stripped) and posts it again, with one notification per call at most (EVENT_IDX decides).
//! - transmit: the header is zeroed once (no checksum or segmentation asked for); `send`
//!   copies the frame after it and queues the descriptor; `flush` publishes and notifies once;
//!   descriptors come back through the used ring when no free one is left.
//!
//! With MRG_RXBUF the header has num_buffers; a frame spread over more than one buffer
//! (which these buffers never need) is dropped with a counter.

use iopath_mailbox::error;

use super::pci::Transport;
use super::ring::{Desc, RingState, SplitRing, DESC_F_WRITE};
use super::setup::{self, F_EVENT_IDX, F_VERSION_1};
use crate::log;
use crate::net::device::{NetConfig, NetQueue};
use crate::pci::PciDevice;
use crate::scratch::Scratch;

const F_MAC: u64 = 1 << 5;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_STATUS: u64 = 1 << 16;
/// What this driver can use.
const WANTED: u64 = F_VERSION_1 | F_EVENT_IDX | F_MAC | F_MRG_RXBUF | F_STATUS;

/// struct virtio_net_hdr with num_buffers: its size whenever VERSION_1 is negotiated.
const HDR_BYTES: u64 = 12;
/// Offset of num_buffers in the header.
const HDR_NUM_BUFFERS: u64 = 10;
/// One buffer per descriptor: the header and a 1514-byte frame, rounded up.
const BUF_BYTES: u64 = 2048;
/// Ring entries per queue at most; the job keeps at most this many frames in flight.
const MAX_RING: u16 = 256;
const RX: u16 = 0;
const TX: u16 = 1;

// struct virtio_net_config: mac at 0, status at 6.
const CFG_MAC_STATUS: u32 = 4;
const LINK_UP: u32 = 1;
/// The MAC used when the device offers none (locally administered).
const FALLBACK_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// One queue and the buffers its descriptors own (descriptor `i` owns buffer `i`).
struct Queue {
    ring: SplitRing,
    notify: u64,
    index: u16,
    size: u16,
    bufs: u64,
    /// Whether the device owns descriptor `i`: an id it returns that it does not own is bad.
    device_owns: [bool; MAX_RING as usize],
}

impl Queue {
    fn open(
        t: &Transport,
        dev: &PciDevice,
        scratch: &mut Scratch,
        index: u16,
        features: u64,
    ) -> Result<Queue, u32> {
        let max = t.select_queue(index);
        if max == 0 {
            log!("virtio-net {}: queue {} does not exist", dev, index);
            return setup::fail(t, error::DEVICE_ERROR);
        }
        // The largest power of two the device and this driver allow.
        let size = 1u16 << (15 - max.min(MAX_RING).leading_zeros());
        let (Some(mem), Some(bufs)) = (
            setup::alloc_ring(scratch, size),
            scratch.alloc_zeroed(u64::from(size) * BUF_BYTES, BUF_BYTES),
        ) else {
            log!("virtio-net: queue {} does not fit in scratch memory", index);
            return setup::fail(t, error::BAD_PARAMETER);
        };
        let (ring, notify) = setup::enable_queue(t, dev, index, mem, size, features)?;
        Ok(Queue {
            ring,
            notify,
            index,
            size,
            bufs,
            device_owns: [false; MAX_RING as usize],
        })
    }

    fn buf(&self, id: u16) -> u64 {
        self.bufs + u64::from(id) * BUF_BYTES
    }

    /// Hands descriptor `id` (< size, not owned by the device) to the device with `len`
    /// bytes of its buffer.
    fn push(&mut self, id: u16, len: u32, flags: u16) {
        let d = Desc {
            addr: self.buf(id),
            len,
            flags,
            next: 0,
        };
        // SAFETY: descriptor `id` < size of this ring's table; the device does not own it.
        unsafe { SplitRing::write_desc(self.ring.table(), id, d) };
        self.device_owns[usize::from(id)] = true;
        self.ring.push(id);
    }

    /// Publishes what was pushed and notifies when the device asked for it.
    fn kick(&mut self) {
        if self.ring.publish() {
            setup::notify(self.notify, self.index);
        }
    }

    /// Takes back a used id from the device: `None` if it names no descriptor the device
    /// owns.
    fn take(&mut self, id: u32) -> Option<u16> {
        let id = u16::try_from(id).ok().filter(|&i| i < self.size)?;
        let owned = &mut self.device_owns[usize::from(id)];
        if !*owned {
            return None;
        }
        *owned = false;
        Some(id)
    }

    fn log_state(&self, name: &str) {
        let RingState {
            avail_idx,
            published,
            used_idx,
            last_used,
            avail_event,
            notifies,
        } = self.ring.state();
        let owned = self.device_owns[..usize::from(self.size)]
            .iter()
            .filter(|&&o| o)
            .count();
        log!(
            "virtio-net {}: avail {} (published {}), used {} (consumed {}), avail_event {}, {} notifies, {} of {} buffers with the device",
            name,
            avail_idx,
            published,
            used_idx,
            last_used,
            avail_event,
            notifies,
            owned,
            self.size
        );
    }
}

/// Used entries the driver could not take, by kind.
#[derive(Default)]
struct Errors {
    /// Ids naming no descriptor the device owned.
    bad_ids: u64,
    /// Receive lengths shorter than the header or longer than the buffer.
    bad_lengths: u64,
    /// Frames spread over more than one buffer (MRG_RXBUF), dropped.
    merged: u64,
}

pub struct VirtioNet {
    transport: Transport,
    mac: [u8; 6],
    mrg_rxbuf: bool,
    rx: Queue,
    tx: Queue,
    /// Transmit descriptors the driver owns, as a stack.
    tx_free: [u16; MAX_RING as usize],
    tx_free_len: u16,
    /// Receive buffers still to skip: the rest of a dropped multi-buffer frame.
    rx_skip: u16,
    errors: Errors,
}

impl VirtioNet {
    /// Resets and initialises the device behind `dev` (section 5.1.5) with one receive queue,
    /// its buffers all posted, and one transmit queue.
    pub fn open(dev: &PciDevice, scratch: &mut Scratch, cfg: &NetConfig) -> Result<VirtioNet, u32> {
        if u64::from(cfg.max_frame) + HDR_BYTES > BUF_BYTES {
            log!(
                "virtio-net: frames of {} bytes do not fit {}-byte buffers",
                cfg.max_frame,
                BUF_BYTES
            );
            return Err(error::BAD_PARAMETER);
        }
        let (t, features) = setup::negotiate(dev, cfg.tsc_khz, WANTED)?;
        let (mac, link) = match read_mac_status(&t, features) {
            Some(v) => v,
            None => return setup::fail(&t, error::DEVICE_ERROR),
        };
        let rx = Queue::open(&t, dev, scratch, RX, features)?;
        let tx = Queue::open(&t, dev, scratch, TX, features)?;
        if tx.size < cfg.tx_frames {
            log!(
                "virtio-net {}: the job queues {} frames, the transmit ring has {}",
                dev,
                cfg.tx_frames,
                tx.size
            );
            return setup::fail(&t, error::BAD_PARAMETER);
        }
        let mut nic = VirtioNet {
            transport: t,
            mac,
            mrg_rxbuf: features & F_MRG_RXBUF != 0,
            rx,
            tx,
            tx_free: [0; MAX_RING as usize],
            tx_free_len: 0,
            rx_skip: 0,
            errors: Errors::default(),
        };
        for id in (0..nic.tx.size).rev() {
            nic.tx_free[usize::from(nic.tx_free_len)] = id;
            nic.tx_free_len += 1;
        }
        for id in 0..nic.rx.size {
            nic.rx.push(id, BUF_BYTES as u32, DESC_F_WRITE);
        }
        setup::driver_ok(&nic.transport, dev)?;
        // The backend has the rings only from DRIVER_OK on.
        nic.rx.kick();
        log!(
            "virtio {}: virtio-net, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, link {}, features {:#x}, rx {} tx {} entries, EVENT_IDX {}, MRG_RXBUF {}",
            dev,
            mac[0],
            mac[1],
            mac[2],
            mac[3],
            mac[4],
            mac[5],
            match link {
                Some(true) => "up",
                Some(false) => "down",
                None => "unknown",
            },
            features,
            nic.rx.size,
            nic.tx.size,
            features & F_EVENT_IDX != 0,
            nic.mrg_rxbuf
        );
        Ok(nic)
    }

    /// Takes back every transmit descriptor the device has finished with.
    fn reclaim_tx(&mut self) {
        let (tx, free, free_len, errors) = (
            &mut self.tx,
            &mut self.tx_free,
            &mut self.tx_free_len,
            &mut self.errors,
        );
        let mut used = [0u32; MAX_RING as usize];
        let mut n = 0;
        tx.ring.drain_used(|id| {
            used[n] = id;
            n += 1;
        });
        for &id in &used[..n] {
            match tx.take(id) {
                Some(id) => {
                    free[usize::from(*free_len)] = id;
                    *free_len += 1;
                }
                None => errors.bad_ids += 1,
            }
        }
    }
}

/// The MAC (the device's with VIRTIO_NET_F_MAC, else [`FALLBACK_MAC`]) and, with
/// VIRTIO_NET_F_STATUS, whether the link is up.
fn read_mac_status(t: &Transport, features: u64) -> Option<([u8; 6], Option<bool>)> {
    let mut mac = FALLBACK_MAC;
    let mut link = None;
    if features & (F_MAC | F_STATUS) != 0 {
        let lo = t.config32(0)?;
        let hi = t.config32(CFG_MAC_STATUS)?;
        if features & F_MAC != 0 {
            mac[..4].copy_from_slice(&lo.to_le_bytes());
            mac[4..].copy_from_slice(&hi.to_le_bytes()[..2]);
        }
        if features & F_STATUS != 0 {
            link = Some((hi >> 16) & LINK_UP != 0);
        }
    }
    Some((mac, link))
}

impl NetQueue for VirtioNet {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        if frame.len() as u64 + HDR_BYTES > BUF_BYTES {
            return false;
        }
        if self.tx_free_len == 0 {
            self.reclaim_tx();
            if self.tx_free_len == 0 {
                return false;
            }
        }
        self.tx_free_len -= 1;
        let id = self.tx_free[usize::from(self.tx_free_len)];
        let at = self.tx.buf(id) + HDR_BYTES;
        // SAFETY: buffer `id` belongs to the driver (it is on the free stack) and holds
        // BUF_BYTES, checked above to fit the header and the frame.
        unsafe {
            core::ptr::copy_nonoverlapping(frame.as_ptr(), at as *mut u8, frame.len());
        }
        self.tx
            .push(id, (HDR_BYTES as usize + frame.len()) as u32, 0);
        true
    }

    fn flush(&mut self) {
        self.tx.kick();
    }

    fn recv<F: FnMut(&[u8])>(&mut self, mut f: F) -> usize {
        let mut used = [(0u32, 0u32); MAX_RING as usize];
        let mut n = 0;
        self.rx.ring.drain_used_len(|id, len| {
            used[n] = (id, len);
            n += 1;
        });
        let mut frames = 0;
        for &(id, len) in &used[..n] {
            let Some(id) = self.rx.take(id) else {
                self.errors.bad_ids += 1;
                continue;
            };
            let buf = self.rx.buf(id);
            if self.rx_skip > 0 {
                self.rx_skip -= 1;
            } else if u64::from(len) < HDR_BYTES || u64::from(len) > BUF_BYTES {
                self.errors.bad_lengths += 1;
            } else {
                // SAFETY: the device gave buffer `id` back; it holds BUF_BYTES >= len.
                let num_buffers =
                    unsafe { core::ptr::read_volatile((buf + HDR_NUM_BUFFERS) as *const u16) };
                if self.mrg_rxbuf && num_buffers > 1 {
                    self.errors.merged += 1;
                    self.rx_skip = num_buffers - 1;
                } else {
                    // SAFETY: as above; the device wrote `len` bytes, header first.
                    let frame = unsafe {
                        core::slice::from_raw_parts(
                            (buf + HDR_BYTES) as *const u8,
                            (u64::from(len) - HDR_BYTES) as usize,
                        )
                    };
                    f(frame);
                    frames += 1;
                }
            }
            self.rx.push(id, BUF_BYTES as u32, DESC_F_WRITE);
        }
        self.rx.kick();
        frames
    }

    fn log_state(&mut self) {
        log!("virtio-net: status {:#x}", self.transport.status());
        self.rx.log_state("rx");
        self.tx.log_state("tx");
        let e = &self.errors;
        if e.bad_ids + e.bad_lengths + e.merged > 0 {
            log!(
                "virtio-net: {} used ids named no buffer with the device, {} bad receive lengths, {} multi-buffer frames dropped",
                e.bad_ids,
                e.bad_lengths,
                e.merged
            );
        }
    }
}
