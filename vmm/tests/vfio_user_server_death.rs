//! A vfio-user server that dies mid-job fails its device, not the VM: the VMM notices the
//! hang-up, the device reads as removed, the guest's driver times its commands out and the run
//! returns with a device error that names the failed device.

mod common;
mod daemons;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{block_job, kvm_or_skip};
use daemons::{bin_or_skip, wait_for, Daemon};
use iopath_mailbox::{error, BlockDevice, Workload};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;
use vmm::vfio::DeviceConfig;

const DISK_BYTES: u64 = 64 << 20;

#[test]
fn a_killed_server_fails_the_device_and_the_vm_runs_on() {
    if !kvm_or_skip() {
        return;
    }
    let Some(bin) = bin_or_skip("iopath-vfio-user-nvme") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    File::create(&disk).unwrap().set_len(DISK_BYTES).unwrap();
    let socket = dir.path().join("nvme.sock");
    let server = Daemon::start(&bin, &socket, &["--path", disk.to_str().unwrap()]);

    // Sequential writes for a minute: far longer than the test waits.
    let mut job = block_job(BlockDevice::Nvme, 7, Workload::Write, 4096, 4, 0);
    job.block.duration_ms = 60_000;
    let device = format!("vfio-user={}", socket.display());
    let cfg = BenchVmConfig {
        ram: RamConfig {
            size: 128 << 20,
            hugepages: false,
        },
        image: BENCH_GUEST.to_vec(),
        job,
        timeout: Duration::from_secs(120),
        console: None,
        disks: Vec::new(),
        devices: vec![device.parse::<DeviceConfig>().unwrap()],
    };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(bench_vm::run(cfg)));

    // The job is under way once its writes reach the file.
    let file = File::open(&disk).unwrap();
    let written = wait_for(Duration::from_secs(60), || {
        let mut block = [0u8; 4096];
        file.read_exact_at(&mut block, 0).unwrap();
        block.iter().any(|&b| b != 0)
    });
    assert!(written, "the guest's writes never reached the file");
    let status = server.kill();
    assert!(!status.success());

    // The guest's driver gives up on its commands after its stall time-out; the bound here
    // only keeps a hung VMM from hanging the test.
    let run = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the VM run did not return after the server died");
    match run {
        Err(bench_vm::Error::GuestFailed {
            code,
            failed_devices,
            log,
            ..
        }) => {
            assert_eq!(code, error::DEVICE_ERROR, "guest log:\n{log}");
            assert_eq!(failed_devices.len(), 1, "{failed_devices:?}");
            assert_eq!(failed_devices[0].device, device);
            assert!(
                failed_devices[0].reason.contains("hung up")
                    || failed_devices[0].reason.contains("closed"),
                "{}",
                failed_devices[0]
            );
            assert!(
                log.contains("CSTS 0xffffffff"),
                "the device reads as removed to the guest:\n{log}"
            );
        }
        Err(e) => panic!(
            "expected a guest device error, got: {}",
            vmm::error_chain(&e)
        ),
        Ok(r) => panic!("the job finished without its device: {:?}", r.mailbox.block),
    }
}
