//! What the embedder chooses about a controller.

use super::regs::MAX_QID;

/// Controller identity and limits. [`ControllerConfig::default`] suits the benchmarks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Identify Controller SN (ASCII, at most 20 bytes are used).
    pub serial: String,
    /// Identify Controller MN (at most 40 bytes).
    pub model: String,
    /// Identify Controller FR (at most 8 bytes).
    pub firmware: String,
    /// I/O submission (and completion) queues the host may create; at most 1535, the doorbell
    /// pairs that fit in BAR0 after the admin pair.
    pub max_io_queues: u16,
    /// Entries per I/O queue (CAP.MQES + 1); at least 2.
    pub max_queue_entries: u16,
    /// Maximum Data Transfer Size: 2^n 4 KiB pages per command; 0 = no limit beyond what one
    /// command can express (65536 blocks). At most 16.
    pub mdts_pages_shift: u8,
    /// MSI-X vectors the transport offers; Create I/O CQ with IEN=1 and IV at or above this
    /// fails with Invalid Interrupt Vector.
    pub interrupt_vectors: u16,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            serial: "IOPATH0001".into(),
            model: "iopath NVMe controller".into(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            max_io_queues: 64,
            max_queue_entries: 1024,
            mdts_pages_shift: 7,
            interrupt_vectors: 65,
        }
    }
}

impl ControllerConfig {
    /// The configuration with every limit clamped into what the controller can implement.
    pub(super) fn normalized(mut self) -> Self {
        self.max_io_queues = self.max_io_queues.clamp(1, MAX_QID);
        self.max_queue_entries = self.max_queue_entries.max(2);
        self.mdts_pages_shift = self.mdts_pages_shift.min(16);
        self
    }

    /// Bytes one command may transfer.
    pub(super) fn max_transfer(&self) -> u64 {
        let pages_shift = match self.mdts_pages_shift {
            0 => 16,
            n => u32::from(n),
        };
        super::regs::PAGE_SIZE << pages_shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_clamped() {
        let c = ControllerConfig {
            max_io_queues: 0,
            max_queue_entries: 1,
            mdts_pages_shift: 40,
            ..Default::default()
        }
        .normalized();
        assert_eq!((c.max_io_queues, c.max_queue_entries), (1, 2));
        assert_eq!(c.max_transfer(), 4096 << 16);
        let c = ControllerConfig {
            max_io_queues: u16::MAX,
            ..Default::default()
        }
        .normalized();
        assert_eq!(c.max_io_queues, 1535);
        assert_eq!(c.max_transfer(), 512 << 10);
    }
}
