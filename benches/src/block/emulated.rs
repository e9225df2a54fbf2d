//! The emulated path: the bench guest's polled NVMe driver against the VMM's NVMe controller
//! model, where every doorbell write is a trapped MMIO exit.

use std::time::Duration;

use backends::engine::BackendSpec;
use iopath_mailbox::histogram::Histogram;
use iopath_mailbox::{BlockDevice, BlockJob, Job, JobKind, Workload};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::disk::{DiskConfig, DiskIface};
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;

use super::sample::{Counts, Sample};
use crate::cpu;

/// Set-up and tear-down time allowed on top of the run time.
const GRACE: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct EmulatedJob {
    pub backend: BackendSpec,
    pub workload: Workload,
    pub block_size: u32,
    pub queue_depth: u16,
    pub ops: u64,
    pub duration: Duration,
    pub region_bytes: u64,
    pub seed: u64,
    /// Guest RAM.
    pub memory: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bench guest run failed")]
    Run(#[source] bench_vm::Error),
    #[error("KVM did not report the TSC frequency; cannot convert ticks to time")]
    NoTsc,
}

impl Error {
    /// The guest's last console lines, if the guest ran.
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Error::Run(e) => e.console_tail(),
            Error::NoTsc => None,
        }
    }
}

pub fn run(job: &EmulatedJob) -> Result<Sample, Error> {
    let guest_job = Job {
        kind: JobKind::Block as u32,
        seed: job.seed,
        block: BlockJob {
            device: BlockDevice::Nvme as u32,
            workload: job.workload as u32,
            block_size: job.block_size,
            queue_depth: u32::from(job.queue_depth),
            ops: job.ops,
            duration_ms: job.duration.as_millis() as u64,
            region_bytes: job.region_bytes,
        },
        ..Job::default()
    };
    let cpu0 = cpu::process_time();
    let run = bench_vm::run(BenchVmConfig {
        ram: RamConfig {
            size: job.memory,
            hugepages: false,
        },
        image: BENCH_GUEST.to_vec(),
        job: guest_job,
        timeout: job.duration + GRACE,
        console: None,
        disks: vec![DiskConfig {
            backend: job.backend.clone().into(),
            iface: DiskIface::Nvme,
        }],
    })
    .map_err(Error::Run)?;
    let cpu_s = (cpu::process_time() - cpu0).as_secs_f64();
    let khz = run.mailbox.job.tsc_khz;
    if khz == 0 {
        return Err(Error::NoTsc);
    }
    let res = run.mailbox.block;
    let ticks_per_us = khz as f64 / 1000.0;
    let counts = Counts {
        ops: res.ops,
        bytes: res.bytes,
        errors: res.errors,
        elapsed_s: res.elapsed_ticks as f64 / (khz as f64 * 1000.0),
    };
    let latency: Histogram = res.latency;
    Ok(Sample::new(
        counts,
        &latency,
        ticks_per_us,
        run.disk_exits.first().copied(),
        cpu_s,
    ))
}
