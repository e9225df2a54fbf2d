//! A finished VM gives everything back: iopath-bench runs hundreds of VMs in one process.
//! (Its own test binary: counting file descriptors needs no other test running beside it.)

use std::path::Path;
use std::time::Duration;

use backends::engine::BackendSpec;
use iopath_mailbox::{BlockDevice, BlockJob, Job, JobKind, Workload};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::disk::{DiskConfig, DiskIface};
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn run(disk: &Path) {
    let r = bench_vm::run(BenchVmConfig {
        ram: RamConfig {
            size: 128 << 20,
            hugepages: false,
        },
        image: BENCH_GUEST.to_vec(),
        job: Job {
            kind: JobKind::Block as u32,
            block: BlockJob {
                device: BlockDevice::Nvme as u32,
                workload: Workload::RandRead as u32,
                block_size: 4096,
                queue_depth: 2,
                ops: 50,
                duration_ms: 0,
                region_bytes: 0,
            },
            ..Job::default()
        },
        timeout: Duration::from_secs(60),
        console: None,
        disks: vec![DiskConfig {
            backend: BackendSpec::File {
                path: disk.to_path_buf(),
                direct: false,
                read_only: false,
            }
            .into(),
            iface: DiskIface::Nvme,
        }],
        devices: Vec::new(),
        nets: Vec::new(),
    })
    .expect("bench guest run");
    assert_eq!(r.mailbox.block.errors, 0);
}

#[test]
fn a_finished_vm_releases_its_disk_engine_and_fds() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this host");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    // The first run sets up process-wide state (signal handler, logger).
    run(&disk);
    let before = open_fds();
    for _ in 0..3 {
        run(&disk);
    }
    // Each VM opens KVM fds, eventfds, a memfd, an io_uring and the disk file.
    assert_eq!(open_fds(), before, "file descriptors leak across VMs");
}
