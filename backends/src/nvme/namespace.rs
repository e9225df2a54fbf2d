//! Namespace 1: its geometry, taken from the engine.

use log::warn;

/// The one namespace the controller exposes, covering the whole engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// LBA data size in bytes (a power of two, at least 512).
    pub block_size: u32,
    /// log2 of `block_size` (Identify Namespace LBAF0.LBADS).
    pub lbads: u8,
    /// NSZE = NCAP = NUSE.
    pub blocks: u64,
    pub read_only: bool,
}

impl Namespace {
    pub fn new(capacity: u64, block_size: u32, read_only: bool) -> Self {
        let block_size = if block_size.is_power_of_two() && block_size >= 512 {
            block_size
        } else {
            warn!("engine block size {block_size} is not a power of two >= 512; using 512");
            512
        };
        Namespace {
            block_size,
            lbads: block_size.trailing_zeros() as u8,
            blocks: capacity / u64::from(block_size),
            read_only,
        }
    }

    /// The byte offset and length of `nlb` blocks at `slba`, if they lie inside the namespace.
    pub fn byte_range(&self, slba: u64, nlb: u64) -> Option<(u64, u64)> {
        let end = slba.checked_add(nlb)?;
        if end > self.blocks {
            return None;
        }
        // end <= blocks = capacity / block_size, so neither product overflows.
        Some((slba << self.lbads, nlb << self.lbads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_from_the_engine() {
        let ns = Namespace::new(1 << 20, 4096, false);
        assert_eq!((ns.block_size, ns.lbads, ns.blocks), (4096, 12, 256));
        let ns = Namespace::new((1 << 20) + 100, 512, true);
        assert_eq!((ns.lbads, ns.blocks, ns.read_only), (9, 2048, true));
        assert_eq!(Namespace::new(4096, 0, false).block_size, 512);
        assert_eq!(Namespace::new(4096, 1000, false).block_size, 512);
    }

    #[test]
    fn ranges_are_checked() {
        let ns = Namespace::new(1 << 20, 512, false);
        assert_eq!(ns.byte_range(0, 1), Some((0, 512)));
        assert_eq!(ns.byte_range(2047, 1), Some((2047 * 512, 512)));
        assert_eq!(ns.byte_range(2047, 2), None);
        assert_eq!(ns.byte_range(2048, 1), None);
        assert_eq!(ns.byte_range(u64::MAX, 2), None);
        assert_eq!(ns.byte_range(0, 2048), Some((0, 1 << 20)));
    }
}
