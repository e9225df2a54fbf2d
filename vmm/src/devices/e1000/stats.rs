//! The statistics block the guest reads (64 read-to-clear dwords at 0x4000) and the drop
//! counters the VMM keeps for itself.

use super::regs::{STATS, STATS_END};

const DWORDS: usize = ((STATS_END - STATS) / 4) as usize;

/// The guest-visible statistics registers. Each read returns the count since the last read of
/// that register and clears it, as on the 82540EM; 64-bit counts are a low/high register pair.
pub struct Stats {
    regs: [u32; DWORDS],
}

impl Stats {
    pub fn new() -> Stats {
        Stats { regs: [0; DWORDS] }
    }

    fn index(offset: u64) -> Option<usize> {
        (STATS..STATS_END)
            .contains(&offset)
            .then(|| ((offset - STATS) / 4) as usize)
    }

    /// Adds to a 32-bit counter; it sticks at the maximum rather than wrapping.
    pub fn add(&mut self, offset: u64, n: u32) {
        if let Some(i) = Self::index(offset) {
            self.regs[i] = self.regs[i].saturating_add(n);
        }
    }

    /// Adds to the 64-bit counter whose low half is at `low`.
    pub fn add64(&mut self, low: u64, n: u64) {
        if let (Some(lo), Some(hi)) = (Self::index(low), Self::index(low + 4)) {
            let v = (u64::from(self.regs[hi]) << 32 | u64::from(self.regs[lo])).saturating_add(n);
            self.regs[lo] = v as u32;
            self.regs[hi] = (v >> 32) as u32;
        }
    }

    pub fn read_and_clear(&mut self, offset: u64) -> u32 {
        Self::index(offset).map_or(0, |i| std::mem::take(&mut self.regs[i]))
    }

    pub fn contains(offset: u64) -> bool {
        Self::index(offset).is_some()
    }
}

/// What the model dropped or refused, for the VMM's log and tests (the guest sees only the
/// statistics registers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub tx_frames: u64,
    pub rx_frames: u64,
    /// TX descriptors whose buffer was not guest memory: their frame is dropped.
    pub tx_dma_errors: u64,
    /// Frames longer than the model assembles.
    pub tx_oversized: u64,
    /// Frames asking for TCP segmentation, which the model does not offer.
    pub tx_unsupported: u64,
    /// Frames the backend would not take.
    pub tx_backend_errors: u64,
    /// Frames that found too few RX descriptors.
    pub rx_no_descriptor: u64,
    /// Frames over 1522 bytes without RCTL.LPE, or over the model's limit.
    pub rx_oversized: u64,
    /// RX buffers or descriptors that were not guest memory.
    pub rx_dma_errors: u64,
    /// Frames that arrived while the receiver was off.
    pub rx_disabled: u64,
    /// Frames the address filter refused (not for this NIC).
    pub rx_filtered: u64,
    /// Doorbells on a ring whose registers are inconsistent (head or tail past the end).
    pub ring_errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_clear_on_read() {
        let mut s = Stats::new();
        s.add(0x4074, 3);
        s.add(0x4074, u32::MAX);
        assert_eq!(s.read_and_clear(0x4074), u32::MAX);
        assert_eq!(s.read_and_clear(0x4074), 0);
        s.add64(0x4088, 0x1_0000_0002);
        assert_eq!(s.read_and_clear(0x4088), 2);
        assert_eq!(s.read_and_clear(0x408c), 1);
        assert_eq!(s.read_and_clear(0x4088), 0);
        assert!(!Stats::contains(0x4100));
        s.add(0x4100, 1);
    }
}
