//! What every path runs: one set of workload parameters, handed unchanged to the guest (through
//! the mailbox), to the native runner and to the peers, so paths differ only in how I/O travels.

use std::time::Duration;

use iopath_mailbox::{BlockDevice, BlockJob, Job, JobKind, Workload};

#[derive(Clone, Debug, PartialEq)]
pub struct BlockWork {
    pub workload: Workload,
    /// Bytes per I/O.
    pub block_size: u32,
    /// I/Os kept in flight.
    pub queue_depth: u16,
    /// Stop after this many I/Os (0: no limit)...
    pub ops: u64,
    /// ... or after this long (zero: no limit). `Verify` needs neither.
    pub duration: Duration,
    /// Bytes of the disk covered from offset 0 (0: all of it).
    pub region_bytes: u64,
    pub seed: u64,
}

impl BlockWork {
    /// The bench guest's job for this work on `device`; the VMM fills in the TSC rate.
    pub fn guest_job(&self, device: BlockDevice) -> Job {
        Job {
            kind: JobKind::Block as u32,
            seed: self.seed,
            block: BlockJob {
                device: device as u32,
                workload: self.workload as u32,
                block_size: self.block_size,
                queue_depth: u32::from(self.queue_depth),
                ops: self.ops,
                duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
                region_bytes: self.region_bytes,
            },
            ..Job::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_job_carries_every_parameter() {
        let w = BlockWork {
            workload: Workload::RandWrite,
            block_size: 8192,
            queue_depth: 16,
            ops: 7,
            duration: Duration::from_millis(1500),
            region_bytes: 1 << 20,
            seed: 42,
        };
        let j = w.guest_job(BlockDevice::VirtioBlk);
        assert_eq!(j.kind, JobKind::Block as u32);
        assert_eq!(j.seed, 42);
        let b = j.block;
        assert_eq!(
            (
                b.device,
                b.workload,
                b.block_size,
                b.queue_depth,
                b.ops,
                b.duration_ms,
                b.region_bytes
            ),
            (
                BlockDevice::VirtioBlk as u32,
                Workload::RandWrite as u32,
                8192,
                16,
                7,
                1500,
                1 << 20
            )
        );
    }
}
