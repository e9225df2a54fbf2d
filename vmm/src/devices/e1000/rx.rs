//! Receive: the address filter, the buffer size RCTL selects, and the delivery of one frame
//! into the RX ring (spread over as many descriptors as its length needs).

use std::sync::atomic::{fence, Ordering};

use iommu::AddressSpace;

use super::regs::*;
use super::ring::Ring;

/// The wire minimum without FCS: shorter frames (a TAP's ARP) are padded, as a MAC would see
/// them.
pub const MIN_FRAME: usize = 60;
/// Frames longer than this, FCS included, need RCTL.LPE.
pub const MAX_STANDARD_FRAME: usize = 1522;
/// The longest frame the 82540EM receives with RCTL.LPE, FCS included.
pub const MAX_LONG_FRAME: usize = 16384;
pub const FCS_BYTES: usize = 4;

/// RX descriptor status (byte 12) and errors (byte 13).
const STA_DD: u8 = 1 << 0;
const STA_EOP: u8 = 1 << 1;
/// "Ignore checksum indication": the model does no receive checksum offload.
const STA_IXSM: u8 = 1 << 2;
const ERR_RXE: u8 = 1 << 7;

/// How a frame passed the filter, for the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cast {
    Unicast,
    Broadcast,
    Multicast,
}

/// Whether the NIC takes a frame for `dst`; `reg` reads a register (RAL/RAH, MTA).
pub fn filter(rctl: u32, dst: [u8; 6], reg: impl Fn(u64) -> u32) -> Option<Cast> {
    if dst == [0xff; 6] {
        return (rctl & (RCTL_BAM | RCTL_MPE | RCTL_UPE) != 0).then_some(Cast::Broadcast);
    }
    if dst[0] & 1 != 0 {
        if rctl & (RCTL_MPE | RCTL_UPE) != 0 || mta_hit(rctl, dst, &reg) {
            return Some(Cast::Multicast);
        }
        return None;
    }
    let exact = (0..RA_ENTRIES).any(|n| {
        let (lo, hi) = (reg(RA + 8 * n), reg(RA + 8 * n + 4));
        hi & RAH_AV != 0 && lo.to_le_bytes() == dst[..4] && (hi as u16).to_le_bytes() == dst[4..]
    });
    (exact || rctl & RCTL_UPE != 0).then_some(Cast::Unicast)
}

/// The 12-bit multicast hash: which destination bits RCTL.MO picks.
fn mta_hit(rctl: u32, dst: [u8; 6], reg: &impl Fn(u64) -> u32) -> bool {
    let shift = [4, 3, 2, 0][((rctl >> RCTL_MO_SHIFT) & 3) as usize];
    let hash = (u32::from(u16::from_le_bytes([dst[4], dst[5]])) >> shift) & 0xfff;
    reg(MTA + 4 * u64::from(hash >> 5)) >> (hash & 31) & 1 != 0
}

/// Bytes per RX buffer that RCTL.BSIZE and BSEX select.
pub fn buffer_size(rctl: u32) -> usize {
    let bsize = (rctl >> RCTL_BSIZE_SHIFT) & 3;
    if rctl & RCTL_BSEX != 0 {
        // BSIZE 0 with BSEX is reserved; read it as the smallest extended size.
        [16384, 16384, 8192, 4096][bsize as usize]
    } else {
        [2048, 1024, 512, 256][bsize as usize]
    }
}

/// Why a frame was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// Fewer descriptors owned by the device than the frame needs.
    NoDescriptor,
    /// A descriptor could not be read or written back: the ring itself is not guest memory.
    Ring,
}

/// What a delivery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub descriptors: u32,
    /// A buffer was not guest memory: the frame went out marked RXE.
    pub buffer_error: bool,
}

/// Writes `frame` (padded, FCS appended or not, as the caller decided) into the buffers of the
/// descriptors from RDH on and writes each descriptor back; advances `ring.head`.
pub fn deliver(
    ring: &mut Ring,
    dma: &AddressSpace,
    frame: &[u8],
    buf_size: usize,
) -> Result<Delivered, RxError> {
    let needed = frame.len().div_ceil(buf_size).max(1) as u32;
    if ring.owned() < needed {
        return Err(RxError::NoDescriptor);
    }
    let mut buffer_error = false;
    let mut head = *ring;
    for (i, chunk) in frame.chunks(buf_size).enumerate() {
        let desc = head.desc_addr(head.head);
        let mut addr = [0u8; 8];
        dma.read(desc, &mut addr).map_err(|_| RxError::Ring)?;
        if dma.write(u64::from_le_bytes(addr), chunk).is_err() {
            buffer_error = true;
        }
        let last = i as u32 + 1 == needed;
        let mut status = STA_DD | STA_IXSM;
        if last {
            status |= STA_EOP;
        }
        let errors = if buffer_error && last { ERR_RXE } else { 0 };
        let len = (chunk.len() as u16).to_le_bytes();
        // The data must be visible before DD is.
        fence(Ordering::Release);
        dma.write(desc + 8, &[len[0], len[1], 0, 0, status, errors, 0, 0])
            .map_err(|_| RxError::Ring)?;
        head.advance();
    }
    *ring = head;
    Ok(Delivered {
        descriptors: needed,
        buffer_error,
    })
}
