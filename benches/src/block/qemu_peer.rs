//! The QEMU peer as a path of the block matrix: the same bench guest and job under QEMU, on
//! QEMU's NVMe or virtio-blk device, measured by the guest exactly as on our VMM.

use super::sample::Sample;
use crate::peer::qemu::{self, QemuBlockJob};

pub fn run(job: &QemuBlockJob) -> Result<Sample, qemu::Error> {
    let run = qemu::run_block(job)?;
    // QEMU's CPU from the guest's first console line on: the job, not the firmware boot
    // (which PVM emulates, slowly).
    let cpu_s = run.qemu_cpu_guest.map_or(0.0, |d| d.as_secs_f64());
    Ok(Sample::from_guest(
        &run.results,
        run.tsc_khz,
        None,
        vec![("qemu".to_string(), cpu_s)],
    ))
}
