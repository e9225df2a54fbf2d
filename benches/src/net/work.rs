//! What every path runs: one set of parameters, handed unchanged to the guest (through the
//! mailbox), to the native runner and to the peers.

use std::time::Duration;

use iopath_mailbox::net::{NetDevice, NetJob, NetWorkload};
use iopath_mailbox::{Job, JobKind};

#[derive(Clone, Debug, PartialEq)]
pub struct NetWork {
    pub workload: NetWorkload,
    /// Bytes per frame, no FCS.
    pub frame_bytes: u32,
    /// Round trip: frames in flight. Tx: frames queued per notification (native: in flight).
    pub depth: u16,
    /// Stop after this many frames sent (0: no limit)...
    pub ops: u64,
    /// ... or after this long (zero: no limit).
    pub duration: Duration,
    /// Round trip: a frame not back after this long is lost.
    pub timeout: Duration,
    pub seed: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl NetWork {
    /// The bench guest's job for this work on `device`; the VMM fills in the TSC rate. Frames
    /// go to the broadcast MAC: every far end answers it.
    pub fn guest_job(&self, device: NetDevice) -> Job {
        Job {
            kind: JobKind::Net as u32,
            seed: self.seed,
            net: NetJob {
                device: device as u32,
                workload: self.workload as u32,
                frame_bytes: self.frame_bytes,
                depth: u32::from(self.depth),
                ops: self.ops,
                duration_ms: millis(self.duration),
                dst_mac: 0,
                timeout_ms: millis(self.timeout).max(1),
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
        let w = NetWork {
            workload: NetWorkload::RoundTrip,
            frame_bytes: 1514,
            depth: 8,
            ops: 5,
            duration: Duration::from_millis(2500),
            timeout: Duration::from_millis(40),
            seed: 9,
        };
        let j = w.guest_job(NetDevice::VirtioNet);
        assert_eq!((j.kind, j.seed), (JobKind::Net as u32, 9));
        assert_eq!(
            j.net,
            NetJob {
                device: NetDevice::VirtioNet as u32,
                workload: NetWorkload::RoundTrip as u32,
                frame_bytes: 1514,
                depth: 8,
                ops: 5,
                duration_ms: 2500,
                dst_mac: 0,
                timeout_ms: 40,
            }
        );
    }
}
