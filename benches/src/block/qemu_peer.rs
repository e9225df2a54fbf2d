//! The QEMU peer as a path of the block matrix: the same bench guest and job under QEMU, on
//! QEMU's NVMe or virtio-blk device, measured by the guest exactly as on our VMM.

use backends::engine::BackendSpec;
use iopath_mailbox::Workload;

use super::sample::{Counts, Sample};
use crate::peer::qemu::{self, QemuBlockJob, QemuDisk};

pub struct QemuPoint<'a> {
    pub virtio: bool,
    pub spec: &'a BackendSpec,
    pub workload: Workload,
    pub block_size: u32,
    pub queue_depth: u16,
    pub duration: std::time::Duration,
    pub region_bytes: u64,
    pub seed: u64,
    pub memory: u64,
}

pub fn run(p: &QemuPoint) -> Result<Sample, qemu::Error> {
    let disk = if p.virtio {
        QemuDisk::VirtioBlk(p.spec.clone())
    } else {
        QemuDisk::Nvme(p.spec.clone())
    };
    let run = qemu::run_block(&QemuBlockJob {
        disk,
        workload: p.workload,
        block_size: p.block_size,
        queue_depth: p.queue_depth,
        ops: 0,
        duration: p.duration,
        region_bytes: p.region_bytes,
        seed: p.seed,
        memory: p.memory,
    })?;
    let khz = run.tsc_khz.max(1) as f64;
    let res = run.results;
    let counts = Counts {
        ops: res.ops,
        bytes: res.bytes,
        errors: res.errors,
        elapsed_s: res.elapsed_ticks as f64 / (khz * 1000.0),
    };
    // QEMU's CPU from the guest's first console line on: the job, not the firmware boot
    // (which PVM emulates, slowly).
    let cpu_s = run.qemu_cpu_guest.map_or(0.0, |d| d.as_secs_f64());
    let mut s = Sample::new(counts, &res.latency, khz / 1000.0, None, cpu_s);
    s.cpu_by_process = vec![("qemu".to_string(), cpu_s)];
    Ok(s)
}
