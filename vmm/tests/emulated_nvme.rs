//! The bench guest drives the emulated NVMe controller under /dev/kvm: a verify job writes a
//! pattern to a file-backed disk and reads it back; the host then checks the file itself.

mod common;

use std::fs::File;
use std::time::Duration;

use backends::engine::BackendSpec;
use common::{bench_vm_config, block_job, kvm_or_skip};
use iopath_mailbox::{pattern, BlockDevice, Job, Status, Workload};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::disk::{DiskConfig, DiskIface};

const DISK_BYTES: u64 = 4 << 20;
const SEED: u64 = 0x5eed_1234;

fn run(job: Job, backend: BackendSpec) -> bench_vm::BenchRun {
    bench_vm::run(BenchVmConfig {
        disks: vec![DiskConfig {
            backend: backend.into(),
            iface: DiskIface::Nvme,
        }],
        ..bench_vm_config(job)
    })
    .expect("bench guest run")
}

fn file_backend(dir: &tempfile::TempDir, fill: u8) -> (std::path::PathBuf, BackendSpec) {
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![fill; DISK_BYTES as usize]).unwrap();
    let spec = BackendSpec::File {
        path: path.clone(),
        direct: false,
        read_only: false,
    };
    (path, spec)
}

#[test]
fn verify_through_emulated_nvme_lands_in_the_backing_file() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, backend) = file_backend(&dir, 0xee);
    // 16 KiB I/Os (PRP lists) at depth 8 over the first 2 MiB; the rest must stay untouched.
    let region = 2 << 20;
    let run = run(
        block_job(BlockDevice::Nvme, SEED, Workload::Verify, 16384, 8, region),
        backend,
    );
    assert_eq!(
        run.mailbox.status,
        Status::Done as u32,
        "guest failed: {}",
        run.console
    );
    let res = run.mailbox.block;
    assert_eq!(res.errors, 0, "{}", run.console);
    assert_eq!(res.device_bytes, DISK_BYTES);
    // Every block written once and read once.
    assert_eq!(res.ops, 2 * region / 16384);
    assert_eq!(res.bytes, 2 * region);
    assert!(
        run.disk_exits[0] > 0,
        "register accesses are counted as exits"
    );

    let data = std::fs::read(&path).unwrap();
    assert_eq!(data.len() as u64, DISK_BYTES);
    assert_eq!(
        pattern::check_image(SEED, &data, region as usize, 0xee),
        Ok(())
    );
}

#[test]
fn random_reads_on_a_read_only_disk_complete_and_change_nothing() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = file_backend(&dir, 0x5a);
    File::open(&path).unwrap();
    let backend = BackendSpec::File {
        path: path.clone(),
        direct: false,
        read_only: true,
    };
    let mut job = block_job(BlockDevice::Nvme, SEED, Workload::RandRead, 4096, 4, 0);
    job.block.ops = 500;
    let run = run(job, backend);
    assert_eq!(run.mailbox.status, Status::Done as u32, "{}", run.console);
    assert_eq!(run.mailbox.block.ops, 500);
    assert_eq!(run.mailbox.block.errors, 0);
    let data = std::fs::read(&path).unwrap();
    assert!(data.iter().all(|&b| b == 0x5a));
}

#[test]
fn writes_to_a_read_only_disk_fail_with_errors_counted() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = file_backend(&dir, 0x11);
    let backend = BackendSpec::File {
        path: path.clone(),
        direct: false,
        read_only: true,
    };
    let mut job = block_job(BlockDevice::Nvme, SEED, Workload::RandWrite, 4096, 2, 0);
    job.block.ops = 50;
    let run = run(job, backend);
    assert_eq!(run.mailbox.status, Status::Done as u32, "{}", run.console);
    assert_eq!(run.mailbox.block.errors, 50, "{}", run.console);
    let data = std::fs::read(&path).unwrap();
    assert!(data.iter().all(|&b| b == 0x11), "read-only means read-only");
}

#[test]
fn missing_disk_is_reported_by_the_guest() {
    if !kvm_or_skip() {
        return;
    }
    let mut job = block_job(BlockDevice::Nvme, SEED, Workload::Read, 4096, 1, 0);
    job.block.ops = 10;
    let err = bench_vm::run(BenchVmConfig {
        timeout: Duration::from_secs(60),
        ..bench_vm_config(job)
    })
    .unwrap_err();
    let chain = vmm::error_chain(&err);
    assert!(chain.contains("found no device"), "{chain}");
}
