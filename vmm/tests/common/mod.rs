//! Helpers shared by the VMM's integration tests (each test crate uses some of them).
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use iopath_mailbox::{BlockDevice, BlockJob, Job, JobKind, Workload};
use vmm::bench_vm::BenchVmConfig;
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;

/// Whether /dev/kvm is here; says so in one line when it is not.
pub fn kvm_or_skip() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    eprintln!("skipped: /dev/kvm is absent on this host");
    false
}

/// A block job on `device` with no op or time limit (set `job.block.ops` or `duration_ms`
/// for workloads other than verify).
pub fn block_job(
    device: BlockDevice,
    seed: u64,
    workload: Workload,
    block_size: u32,
    queue_depth: u32,
    region_bytes: u64,
) -> Job {
    Job {
        kind: JobKind::Block as u32,
        seed,
        block: BlockJob {
            device: device as u32,
            workload: workload as u32,
            block_size,
            queue_depth,
            ops: 0,
            duration_ms: 0,
            region_bytes,
        },
        ..Job::default()
    }
}

/// A bench-guest VM running `job` in 128 MiB of RAM without devices (add `disks`, `devices`
/// or `nets`), with a time limit far above any test's run on a loaded machine.
pub fn bench_vm_config(job: Job) -> BenchVmConfig {
    BenchVmConfig {
        ram: RamConfig {
            size: 128 << 20,
            hugepages: false,
        },
        image: BENCH_GUEST.to_vec(),
        job,
        timeout: Duration::from_secs(120),
        console: None,
        disks: Vec::new(),
        devices: Vec::new(),
        nets: Vec::new(),
    }
}
